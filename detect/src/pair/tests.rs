//! Pair aggregation: golden signals computed by hand, windows, lateness, batch-cut and
//! arrival-order independence.

use hdrhistogram::Histogram;
use proptest::prelude::*;
use schemas::{FlowBatchBuilder, FlowRecordRef, Latency, PairWindow, Reporter};

use super::*;

/// 1_700_000_000 s since the epoch: a multiple of 10 s, so window 0 of the tests starts here.
const T0: i64 = 1_700_000_000_000_000;
const S: i64 = 1_000_000;

/// One flow record of the tests: (start offset µs from T0, source, destination, duration µs,
/// status, response flags, bytes received, bytes sent).
type Rec = (
    i64,
    &'static str,
    &'static str,
    Option<u64>,
    Option<u16>,
    Option<&'static str>,
    u64,
    u64,
);

fn batch(recs: &[Rec]) -> RecordBatch {
    let mut b = FlowBatchBuilder::new();
    for &(t, src, dst, dur, status, flags, rx, tx) in recs {
        let mut r = FlowRecordRef::new(T0 + t, src, dst, Reporter::Envoy);
        r.duration_us = dur;
        r.status = status;
        r.response_flags = flags;
        r.bytes_received = rx;
        r.bytes_sent = tx;
        b.append(&r);
    }
    b.finish()
}

/// The golden signals of windows handed over, as if no other input had records in them.
fn fin(partials: Vec<PartialWindow>) -> Vec<ClosedPairs> {
    partials.into_iter().map(PartialWindow::finish).collect()
}

fn ok(t: i64, src: &'static str, dst: &'static str, dur: Option<u64>) -> Rec {
    (t, src, dst, dur, Some(200), None, 0, 0)
}

/// An aggregator that trusts every record at once (`ahead-confirm = 1`: a record far ahead
/// is its own confirmation), as before records far ahead were held back; those are tested
/// with [`holding`].
fn aggregator(length_s: u64, lateness_s: u64) -> PairAggregator {
    holding(length_s, lateness_s, 1)
}

/// An aggregator that holds records more than 5 min ahead until `confirm` come in a row.
fn holding(length_s: u64, lateness_s: u64, confirm: usize) -> PairAggregator {
    PairAggregator::new(
        WindowSpec::try_from(&WindowConfig {
            length: Duration::from_secs(length_s),
            allowed_lateness: Duration::from_secs(lateness_s),
            concurrency_resolution: Duration::from_millis(100),
            max_ahead: Duration::from_secs(300),
            ahead_confirm: confirm,
            ..WindowConfig::default()
        })
        .unwrap(),
    )
}

fn window(k: i64) -> Window {
    Window {
        start_us: T0 + k * 10 * S,
        end_us: T0 + (k + 1) * 10 * S,
    }
}

#[test]
fn golden_signals_of_a_small_batch() {
    let mut agg = aggregator(10, 5);
    let recs = [
        // frontend -> catalog, window 0 = [T0, T0 + 10 s)
        (
            0,
            "frontend",
            "catalog",
            Some(4_000),
            Some(200),
            None,
            100,
            1_000,
        ),
        (
            S,
            "frontend",
            "catalog",
            Some(8_000),
            Some(200),
            None,
            200,
            2_000,
        ),
        (
            S + 2_000,
            "frontend",
            "catalog",
            Some(100_000),
            Some(503),
            Some("UF"),
            300,
            0,
        ),
        (
            5 * S,
            "frontend",
            "catalog",
            None,
            Some(200),
            None,
            400,
            3_000,
        ),
        // 200 ms from 9.95 s: 50 ms in window 0, 150 ms in window 1
        (
            9_950_000,
            "frontend",
            "catalog",
            Some(200_000),
            Some(504),
            Some("UT"),
            0,
            0,
        ),
        // api -> catalog: a zero-duration request at 2 s
        (2 * S, "api", "catalog", Some(0), Some(200), None, 10, 20),
    ];
    // newest start 9.95 s, watermark 4.95 s: nothing closes yet
    assert!(fin(agg.push(&batch(&recs)).unwrap()).is_empty());
    assert_eq!(agg.watermark(), Some(T0 + 4_950_000));
    let closed = fin(agg.flush());
    assert_eq!(closed.len(), 2);
    assert_eq!(closed[0].window, window(0));
    assert_eq!(closed[1].window, window(1));

    let w0 = &closed[0].pairs;
    assert_eq!(w0.len(), 2);
    // sorted by (source, destination): api before frontend
    let api = &w0[0];
    assert_eq!(
        (api.source.as_str(), api.destination.as_str()),
        ("api", "catalog")
    );
    assert_eq!(api.requests, 1);
    assert_eq!(api.concurrency_mean, 0.0);
    // a zero-duration request is in flight in the slot of its start
    assert_eq!(api.concurrency_peak, 1);
    assert_eq!(
        api.latency,
        Some(Latency {
            p50_us: 0,
            p90_us: 0,
            p99_us: 0,
            max_us: 0
        })
    );

    let fc = &w0[1];
    assert_eq!(fc.source, "frontend");
    assert_eq!(fc.requests, 5);
    assert_eq!(fc.rate_rps, 0.5); // 5 requests / 10 s
    assert_eq!(fc.errors, 2); // 503 and 504 UT
    assert_eq!(fc.error_ratio, 0.4);
    // Durations {4000, 8000, 100000, 200000} µs (the 5 s record has none). With 2 significant
    // digits the histogram has 256 sub-buckets: [2048, 4096) has 16 µs resolution, [4096, 8192)
    // 32 µs, [65536, 131072) 512 µs, [131072, 262144) 1024 µs.
    // p50: ceil(0.5 × 4) = 2nd value 8000 -> its bucket [8000, 8031] -> 8031.
    // p90, p99: ceil(0.9 × 4) = ceil(0.99 × 4) = 4th value 200000 -> bucket [199680, 200703],
    // capped at the exact max 200000.
    assert_eq!(
        fc.latency,
        Some(Latency {
            p50_us: 8_031,
            p90_us: 200_000,
            p99_us: 200_000,
            max_us: 200_000
        })
    );
    // overlap with window 0: 4000 + 8000 + 100000 + 50000 = 162000 µs over 10 s
    assert_eq!(fc.concurrency_mean, 0.0162);
    // 100 ms slots: [1.000, 1.008) s and [1.002, 1.102) s share slot 10
    assert_eq!(fc.concurrency_peak, 2);
    // bytes in: 100 + 200 + 300 + 400 = 1000 -> 100 B/s; out: 1000 + 2000 + 3000 -> 600 B/s
    assert_eq!((fc.bytes_in, fc.bytes_out), (1_000, 6_000));
    assert_eq!((fc.bandwidth_in_bps, fc.bandwidth_out_bps), (100.0, 600.0));

    // window 1 only holds the 150 ms tail of the 9.95 s request
    let w1 = &closed[1].pairs;
    assert_eq!(w1.len(), 1);
    let tail = &w1[0];
    assert_eq!((tail.requests, tail.errors, tail.latency), (0, 0, None));
    assert_eq!(tail.concurrency_mean, 0.015); // 150000 µs / 10 s
    assert_eq!(tail.concurrency_peak, 1);
    assert_eq!((tail.bytes_in, tail.bytes_out), (0, 0));
}

#[test]
fn quantiles_of_a_busy_pair_come_from_the_histogram() {
    // 600 requests of 1, 2, …, 600 ms: more than RAW_LATENCY_VALUES, so a real histogram.
    let recs: Vec<Rec> = (1..=600)
        .map(|i| ok(i * 1_000, "a", "b", Some(i as u64 * 1_000)))
        .collect();
    let mut agg = aggregator(10, 5);
    fin(agg.push(&batch(&recs)).unwrap());
    let p = &fin(agg.flush())[0].pairs[0];
    // p50: 300th value 300000 in [262144, 524288) (2048 µs): 146 × 2048 = 299008 .. 301055
    // p90: 540th value 540000 in [524288, 1048576) (4096 µs): 131 × 4096 = 536576 .. 540671
    // p99: 594th value 594000: 145 × 4096 = 593920 .. 598015
    assert_eq!(
        p.latency,
        Some(Latency {
            p50_us: 301_055,
            p90_us: 540_671,
            p99_us: 598_015,
            max_us: 600_000
        })
    );
}

#[test]
fn quantiles_of_raw_durations() {
    // 200 requests of 1, 2, …, 200 ms: kept raw, same answer as a histogram.
    let recs: Vec<Rec> = (1..=200)
        .map(|i| ok(i * 1_000, "a", "b", Some(i as u64 * 1_000)))
        .collect();
    let mut agg = aggregator(10, 5);
    fin(agg.push(&batch(&recs)).unwrap());
    let p = &fin(agg.flush())[0].pairs[0];
    // p50: 100th value 100000 in [65536, 131072) (512 µs): 195 × 512 = 99840 .. 100351
    // p90: 180th value 180000 in [131072, 262144) (1024 µs): 175 × 1024 = 179200 .. 180223
    // p99: 198th value 198000: 193 × 1024 = 197632 .. 198655
    assert_eq!(
        p.latency,
        Some(Latency {
            p50_us: 100_351,
            p90_us: 180_223,
            p99_us: 198_655,
            max_us: 200_000
        })
    );
}

#[test]
fn a_request_spanning_three_windows_adds_overlap_to_each() {
    let mut agg = aggregator(10, 5);
    // [8 s, 23 s): 2 s of window 0, all of window 1, 3 s of window 2
    fin(agg
        .push(&batch(&[ok(8 * S, "a", "b", Some(15_000_000))]))
        .unwrap());
    let closed = fin(agg.flush());
    let got: Vec<(Window, u64, f64, u64)> = closed
        .iter()
        .map(|c| {
            let p = &c.pairs[0];
            (c.window, p.requests, p.concurrency_mean, p.concurrency_peak)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (window(0), 1, 0.2, 1),
            (window(1), 0, 1.0, 1),
            (window(2), 0, 0.3, 1),
        ]
    );
}

#[test]
fn windows_close_when_the_watermark_passes_their_end() {
    let mut agg = aggregator(10, 5);
    assert!(fin(agg.push(&batch(&[ok(S, "a", "b", None)])).unwrap()).is_empty());
    // newest start 14.999999 s: watermark 9.999999 s < 10 s, window 0 stays open
    let b = batch(&[ok(15 * S - 1, "a", "b", None)]);
    assert!(fin(agg.push(&b).unwrap()).is_empty());
    // newest start 15 s: watermark 10 s = end of window 0
    let closed = fin(agg.push(&batch(&[ok(15 * S, "a", "b", None)])).unwrap());
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].window, window(0));
    assert_eq!(closed[0].pairs[0].requests, 1);
    assert_eq!(agg.open_windows(), 1);
}

#[test]
fn late_records_are_counted_not_aggregated() {
    let mut agg = aggregator(10, 5);
    let recs = [
        ok(12 * S, "a", "b", None),    // watermark 7 s
        ok(3 * S, "a", "b", None),     // window 0 ends at 10 s > 7 s: on time
        ok(16 * S, "a", "b", None),    // watermark 11 s
        ok(9_999_999, "a", "b", None), // window 0 ended at 10 s <= 11 s: late
    ];
    let closed = fin(agg.push(&batch(&recs)).unwrap());
    assert_eq!((agg.records(), agg.late_records()), (4, 1));
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].pairs[0].requests, 1);
    // after flush, every closed window is behind us: a record for one is late
    let rest = fin(agg.flush());
    assert_eq!(rest[0].pairs[0].requests, 2);
    fin(agg.push(&batch(&[ok(19 * S, "a", "b", None)])).unwrap());
    assert_eq!(agg.late_records(), 2);
    assert!(fin(agg.flush()).is_empty());
}

#[test]
fn batches_without_flow_record_columns_are_rejected() {
    use arrow::array::{ArrayRef, Int32Array};
    use std::sync::Arc;
    let b = RecordBatch::try_from_iter([("x", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])
        .unwrap();
    let err = aggregator(10, 5).push(&b).unwrap_err().to_string();
    assert!(err.contains("start_us"), "{err}");
}

#[test]
fn invalid_window_configs_name_the_key() {
    let bad = |c: WindowConfig| WindowSpec::try_from(&c).unwrap_err().to_string();
    let d = WindowConfig::default;
    let e = bad(WindowConfig {
        length: Duration::ZERO,
        ..d()
    });
    assert!(e.contains("window.length"), "{e}");
    // too short to run in bounded memory: 1 µs windows (with a resolution that divides them)
    let e = bad(WindowConfig {
        length: Duration::from_micros(1),
        concurrency_resolution: Duration::from_micros(1),
        ..d()
    });
    assert_eq!(
        e,
        "invalid config window.length: 1µs is shorter than 1s: windows that short multiply the \
         state per request and the windows held open for the allowed lateness"
    );
    let e = bad(WindowConfig {
        length: Duration::from_millis(999),
        concurrency_resolution: Duration::from_millis(333),
        ..d()
    });
    assert!(
        e.starts_with("invalid config window.length: 999ms is shorter"),
        "{e}"
    );
    assert!(
        WindowSpec::try_from(&WindowConfig {
            length: Duration::from_secs(1),
            ..d()
        })
        .is_ok(),
        "1 s is the shortest"
    );
    let e = bad(WindowConfig {
        concurrency_resolution: Duration::from_millis(300),
        ..d()
    });
    assert!(
        e.contains("window.concurrency-resolution") && e.contains("300ms"),
        "{e}"
    );
    let e = bad(WindowConfig {
        concurrency_resolution: Duration::from_micros(100),
        ..d()
    });
    assert!(e.contains("100000 slots"), "{e}");
    let e = bad(WindowConfig {
        allowed_lateness: Duration::from_nanos(1_500),
        ..d()
    });
    assert!(e.contains("window.allowed-lateness"), "{e}");
    // a max-ahead shorter than a window would set ordinary records aside: a window it is
    let spec = WindowSpec::try_from(&WindowConfig {
        max_ahead: Duration::from_millis(1),
        ..d()
    })
    .unwrap();
    assert_eq!(spec.max_ahead_us(), 10 * S);
}

/// All closed pair windows, in window then pair order.
fn run(agg: &mut PairAggregator, recs: &[Rec], cuts: &[usize]) -> Vec<PairWindow> {
    let mut out = Vec::new();
    let mut rest = recs;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap()).clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        for c in fin(agg.push(&batch(now)).unwrap()) {
            out.extend(c.pairs);
        }
        rest = later;
    }
    for c in fin(agg.flush()) {
        out.extend(c.pairs);
    }
    out
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const FLAGS: [Option<&str>; 4] = [None, Some("UF"), Some("DC"), Some("RL")];

fn record() -> impl Strategy<Value = (Rec, i64)> {
    (
        0..60 * S,
        0..4usize,
        0..4usize,
        proptest::option::of(0..25_000_000u64),
        proptest::option::of(prop_oneof![Just(0u16), Just(200), Just(404), Just(503)]),
        0..4usize,
        0..10_000u64,
        0..5 * S, // arrival jitter, at most the allowed lateness
    )
        .prop_map(|(t, s, d, dur, st, f, bytes, jitter)| {
            (
                (t, NAMES[s], NAMES[d], dur, st, FLAGS[f], bytes, bytes * 3),
                jitter,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Records delivered in start order in one batch, or shuffled within the allowed lateness
    /// and cut anywhere, give exactly the same closed pair windows, and none is late.
    #[test]
    fn results_do_not_depend_on_batch_cuts_or_order_within_lateness(
        mut recs in proptest::collection::vec(record(), 1..200),
        cuts in proptest::collection::vec(1..50usize, 1..8),
    ) {
        recs.sort_by_key(|(r, _)| r.0);
        let in_order: Vec<Rec> = recs.iter().map(|(r, _)| *r).collect();
        let mut a = aggregator(10, 5);
        let expected = run(&mut a, &in_order, &[usize::MAX]);
        prop_assert_eq!(a.late_records(), 0);

        // arrival time = start + jitter <= start + lateness: never late
        let mut shuffled = recs.clone();
        shuffled.sort_by_key(|(r, jitter)| r.0 + jitter);
        let shuffled: Vec<Rec> = shuffled.into_iter().map(|(r, _)| r).collect();
        let mut b = aggregator(10, 5);
        let got = run(&mut b, &shuffled, &cuts);
        prop_assert_eq!(b.late_records(), 0);
        prop_assert_eq!(got, expected);
    }

    /// Any arrival order, however late: the batch cuts change neither the windows nor which
    /// records are late (the watermark advances per record).
    #[test]
    fn lateness_does_not_depend_on_batch_cuts(
        recs in proptest::collection::vec(record(), 1..200),
        cuts in proptest::collection::vec(1..50usize, 1..8),
    ) {
        let recs: Vec<Rec> = recs.into_iter().map(|(r, _)| r).collect();
        let mut a = aggregator(10, 5);
        let expected = run(&mut a, &recs, &[usize::MAX]);
        let mut b = aggregator(10, 5);
        let got = run(&mut b, &recs, &cuts);
        prop_assert_eq!(a.late_records(), b.late_records());
        prop_assert_eq!(got, expected);
    }

    /// Raw durations (few per pair-window) and busy pairs' histograms give exactly the
    /// quantiles of `Histogram::value_at_quantile`.
    #[test]
    fn quantiles_match_value_at_quantile(
        durations in proptest::collection::vec(
            prop_oneof![0..300u64, 0..100_000u64, 0..u64::MAX / 2], 1..=3 * RAW_LATENCY_VALUES),
    ) {
        let recs: Vec<Rec> = durations
            .iter()
            .enumerate()
            .map(|(i, &d)| ok(i as i64 * 1_000, "a", "b", Some(d)))
            .collect();
        let mut agg = aggregator(10, 5);
        fin(agg.push(&batch(&recs)).unwrap());
        let got = fin(agg.flush())[0].pairs[0].latency.unwrap();
        let mut h = Histogram::<u32>::new(2).unwrap();
        for &d in &durations {
            h.record(d).unwrap();
        }
        let max = *durations.iter().max().unwrap();
        prop_assert_eq!(got.max_us, max);
        prop_assert_eq!(got.p50_us, h.value_at_quantile(0.5).min(max));
        prop_assert_eq!(got.p90_us, h.value_at_quantile(0.9).min(max));
        prop_assert_eq!(got.p99_us, h.value_at_quantile(0.99).min(max));
    }

    /// Concurrency against a brute-force oracle, one pair, starts in order: the mean is Σ of
    /// each request's overlap with the window ÷ its length; the peak is at least the exact
    /// instantaneous peak (a sweep over the intervals) and at most the requests touching the
    /// busiest 100 ms slot.
    #[test]
    fn concurrency_matches_a_brute_force_oracle(
        mut reqs in proptest::collection::vec((0..40 * S, 0..25 * S), 1..60),
    ) {
        reqs.sort_unstable();
        let recs: Vec<Rec> = reqs
            .iter()
            .map(|&(t, d)| ok(t, "a", "b", Some(d as u64)))
            .collect();
        let mut agg = aggregator(10, 60);
        let got = run(&mut agg, &recs, &[usize::MAX]);
        prop_assert_eq!(agg.late_records(), 0);
        for p in &got {
            let (ws, we) = (p.window.start_us - T0, p.window.end_us - T0);
            let overlap: i64 = reqs
                .iter()
                .map(|&(t, d)| ((t + d).min(we) - t.max(ws)).max(0))
                .sum();
            let mean = overlap as f64 / (we - ws) as f64;
            prop_assert!((p.concurrency_mean - mean).abs() < 1e-9, "{} vs {}", p.concurrency_mean, mean);
            // exact peak: most intervals [t, t+d) (or the instant t when d = 0) containing
            // one of the instants where one starts, inside the window
            let inside = |x: i64, t: i64, d: i64| if d == 0 { x == t } else { t <= x && x < t + d };
            let exact = reqs
                .iter()
                .flat_map(|&(t, _)| [t, ws])
                .filter(|&x| ws <= x && x < we)
                .map(|x| reqs.iter().filter(|&&(t, d)| inside(x, t, d)).count())
                .max()
                .unwrap_or(0) as u64;
            let slot = 100_000;
            let slot_bound = (ws / slot..we / slot)
                .map(|k| {
                    let (a, b) = (k * slot, (k + 1) * slot);
                    reqs.iter()
                        .filter(|&&(t, d)| if d == 0 { a <= t && t < b } else { t < b && a < t + d })
                        .count()
                })
                .max()
                .unwrap_or(0) as u64;
            prop_assert!(p.concurrency_peak >= exact, "peak {} < exact {}", p.concurrency_peak, exact);
            prop_assert!(p.concurrency_peak <= slot_bound, "peak {} > slot bound {}", p.concurrency_peak, slot_bound);
        }
    }

    /// Extreme times and durations never panic.
    #[test]
    fn extreme_times_never_panic(
        starts in proptest::collection::vec(any::<i64>(), 1..20),
        durations in proptest::collection::vec(proptest::option::of(any::<u64>()), 1..20),
    ) {
        let mut b = FlowBatchBuilder::new();
        for (t, d) in starts.iter().zip(durations.iter().cycle()) {
            let mut r = FlowRecordRef::new(*t, "a", "b", Reporter::Envoy);
            r.duration_us = *d;
            b.append(&r);
        }
        let mut agg = aggregator(10, 5);
        let _ = fin(agg.push(&b.finish()).unwrap());
        let _ = fin(agg.flush());
    }
}

#[test]
fn pair_state_size_is_as_documented() {
    // the module docs state the per-pair-window memory from this size
    assert_eq!(std::mem::size_of::<PairState>(), 184);
}

/// Pair windows of partial windows, finished one by one (one input).
fn signals(partials: Vec<PartialWindow>) -> Vec<PairWindow> {
    fin(partials).into_iter().flat_map(|c| c.pairs).collect()
}

/// `recs` through one aggregator made by `make` (`whole`), and through one checkpointed after
/// `cut` records and restored (`after`, its snapshot checked to survive the round trip):
/// `(whole, after, whole's pair windows, before's and after's pair windows)`.
fn checkpointed(
    make: impl Fn() -> PairAggregator,
    recs: &[Rec],
    cut: usize,
) -> (
    PairAggregator,
    PairAggregator,
    Vec<PairWindow>,
    Vec<PairWindow>,
) {
    let cut = cut.min(recs.len());
    let mut whole = make();
    let mut expected = signals(whole.push(&batch(recs)).unwrap());
    expected.extend(signals(whole.flush()));
    let mut before = make();
    let mut got = signals(before.push(&batch(&recs[..cut])).unwrap());
    let snap = before.snapshot();
    let mut after = PairAggregator::restore(*before.spec(), snap.clone()).unwrap();
    assert_eq!(after.snapshot(), snap);
    if cut < recs.len() {
        got.extend(signals(after.push(&batch(&recs[cut..])).unwrap()));
    }
    got.extend(signals(after.flush()));
    (whole, after, expected, got)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A consumer that commits (the lowest position held in an open window, the watermark)
    /// after any record, and a new owner that reads again from that position with that
    /// watermark, together emit exactly the windows of an uninterrupted run: nothing lost,
    /// nothing counted twice.
    #[test]
    fn reading_again_from_the_low_position_rebuilds_the_open_windows(
        recs in proptest::collection::vec(record(), 1..150),
        cut in 0..150usize,
    ) {
        // arrival order with jitter, some records later than the lateness
        let mut recs: Vec<(Rec, i64)> = recs;
        recs.sort_by_key(|(r, jitter)| r.0 + 2 * jitter);
        let recs: Vec<Rec> = recs.into_iter().map(|(r, _)| r).collect();
        let positions: Vec<i64> = (0..recs.len() as i64).collect();
        let cut = cut.min(recs.len());

        let mut whole = aggregator(10, 5);
        let mut expected = signals(whole.push_at(&batch(&recs), Some(&positions)).unwrap());
        expected.extend(signals(whole.flush()));

        let mut before = aggregator(10, 5);
        let mut got = signals(before.push_at(&batch(&recs[..cut]), Some(&positions[..cut])).unwrap());
        let from = before.low_position().unwrap_or(cut as i64) as usize;
        prop_assert!(from <= cut);
        let mut after = PairAggregator::resume_at(*before.spec(), before.watermark());
        if from < recs.len() {
            got.extend(signals(
                after.push_at(&batch(&recs[from..]), Some(&positions[from..])).unwrap(),
            ));
        }
        got.extend(signals(after.flush()));
        prop_assert_eq!(got, expected);
    }

    /// A checkpoint (snapshot, restore) after any record changes nothing.
    #[test]
    fn snapshot_and_restore_change_nothing(
        recs in proptest::collection::vec(record(), 1..150),
        cut in 0..150usize,
    ) {
        let recs: Vec<Rec> = recs.into_iter().map(|(r, _)| r).collect();
        let (whole, after, expected, got) = checkpointed(|| aggregator(10, 5), &recs, cut);
        prop_assert_eq!(got, expected);
        prop_assert_eq!(after.late_records(), whole.late_records());
    }

    /// Records split between two inputs, each aggregated on its own and merged, give the
    /// windows of one input holding them all (in start order, so nothing is late).
    #[test]
    fn two_inputs_merged_equal_one(
        mut recs in proptest::collection::vec(record(), 1..150),
        sides in proptest::collection::vec(any::<bool>(), 150),
    ) {
        recs.sort_by_key(|(r, _)| r.0);
        let recs: Vec<Rec> = recs.into_iter().map(|(r, _)| r).collect();
        let mut whole = aggregator(10, 5);
        let mut expected = fin(whole.push(&batch(&recs)).unwrap());
        expected.extend(fin(whole.flush()));

        let mut merger = crate::merge::WindowMerger::new(*whole.spec());
        for side in [false, true] {
            let mine: Vec<Rec> = recs
                .iter()
                .zip(&sides)
                .filter(|(_, s)| **s == side)
                .map(|(r, _)| *r)
                .collect();
            let mut agg = aggregator(10, 5);
            let name = if side { "b" } else { "a" };
            merger.add_producer(name);
            let mut partials = if mine.is_empty() {
                Vec::new()
            } else {
                agg.push(&batch(&mine)).unwrap()
            };
            partials.extend(agg.flush());
            for p in partials {
                merger.complete(name, p);
            }
        }
        let got = merger.flush();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn positions_say_where_to_read_again() {
    let mut agg = aggregator(10, 5);
    // offsets 7, 8, 9: window 0 opened by offset 7, window 1 by offset 9
    let recs = [
        ok(S, "a", "b", None),
        ok(2 * S, "a", "b", None),
        ok(11 * S, "a", "b", None),
    ];
    assert!(
        agg.push_at(&batch(&recs), Some(&[7, 8, 9]))
            .unwrap()
            .is_empty()
    );
    assert_eq!(agg.low_position(), Some(7));
    // 16 s: watermark 11 s closes window 0; window 1 (from offset 9) stays
    let closed = agg
        .push_at(&batch(&[ok(16 * S, "a", "b", None)]), Some(&[10]))
        .unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(agg.low_position(), Some(9));
    // a request from 12 s to 35 s (offset 11) stays in flight for windows 2 and 3: one
    // entry, not two windows
    agg.push_at(
        &batch(&[ok(12 * S, "a", "b", Some(23_000_000))]),
        Some(&[11]),
    )
    .unwrap();
    assert_eq!(agg.low_position(), Some(9));
    assert_eq!((agg.open_windows(), agg.in_flight()), (1, 1));
    let err = agg
        .push_at(&batch(&recs), Some(&[1]))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "schema mismatch: 1 positions for a batch of 3 rows");
    assert_eq!(fin(agg.flush()).len(), 3);
    assert_eq!(agg.low_position(), None);
}

/// Total requests of the windows handed over.
fn requests(closed: &[ClosedPairs]) -> u64 {
    closed
        .iter()
        .flat_map(|c| &c.pairs)
        .map(|p| p.requests)
        .sum()
}

#[test]
fn one_record_far_ahead_moves_no_watermark_and_is_set_aside() {
    // one request a second for 60 s; the 31st line says it started an hour later
    let mut recs: Vec<Rec> = (0..60).map(|i| ok(i * S, "a", "b", Some(1_000))).collect();
    recs.insert(30, ok(3_600 * S, "a", "b", Some(1_000)));
    let positions: Vec<i64> = (0..recs.len() as i64).collect();
    let mut agg = holding(10, 5, 8);
    let mut closed = fin(agg.push_at(&batch(&recs), Some(&positions)).unwrap());
    // the watermark follows the 60 ordinary records: 59 s − 5 s
    assert_eq!(agg.watermark(), Some(T0 + 54 * S));
    closed.extend(fin(agg.flush()));
    assert_eq!(agg.late_records(), 0);
    assert_eq!(agg.counters().ahead_records, 1);
    assert_eq!(requests(&closed), 60);
    assert_eq!(closed.len(), 6, "windows [0, 60 s), none an hour ahead");
    let aside = agg.take_set_aside();
    assert_eq!(aside.len(), 1);
    assert_eq!(aside[0].why, Dropped::Ahead);
    assert_eq!(aside[0].position, Some(30));
    assert_eq!(aside[0].record.start_us, T0 + 3_600 * S);
    assert!(agg.take_set_aside().is_empty(), "taken once");
}

#[test]
fn an_inputs_first_record_far_ahead_is_set_aside_too() {
    let mut recs: Vec<Rec> = vec![ok(3_600 * S, "a", "b", None)];
    recs.extend((0..20).map(|i| ok(i * S, "a", "b", None)));
    let mut agg = holding(10, 5, 8);
    let mut closed = fin(agg.push(&batch(&recs)).unwrap());
    closed.extend(fin(agg.flush()));
    assert_eq!(agg.late_records(), 0);
    assert_eq!(agg.counters().ahead_records, 1);
    assert_eq!(requests(&closed), 20);
    assert_eq!(agg.take_set_aside()[0].record.start_us, T0 + 3_600 * S);
}

#[test]
fn a_jump_confirmed_by_records_in_a_row_is_taken() {
    // 20 s of traffic, two hours of silence, then 20 s more: the input resumed
    let mut recs: Vec<Rec> = (0..20).map(|i| ok(i * S, "a", "b", None)).collect();
    recs.extend((0..20).map(|i| ok((7_200 + i) * S, "a", "b", None)));
    let mut agg = holding(10, 5, 8);
    let mut closed = fin(agg.push(&batch(&recs[..27])).unwrap());
    // 7 records after the gap are held: they neither count nor move the watermark yet
    assert_eq!(agg.held(), 7);
    assert_eq!(agg.watermark(), Some(T0 + 14 * S));
    closed.extend(fin(agg.push(&batch(&recs[27..])).unwrap()));
    assert_eq!(agg.held(), 0);
    assert_eq!(agg.watermark(), Some(T0 + 7_214 * S));
    closed.extend(fin(agg.flush()));
    assert_eq!(requests(&closed), 40);
    assert_eq!((agg.late_records(), agg.counters().ahead_records), (0, 0));
    assert!(agg.take_set_aside().is_empty());
}

#[test]
fn an_input_that_ends_while_records_are_held_aggregates_them() {
    let mut recs: Vec<Rec> = (0..10).map(|i| ok(i * S, "a", "b", None)).collect();
    recs.push(ok(3_600 * S, "a", "b", None));
    let mut agg = holding(10, 5, 8);
    let mut closed = fin(agg.push(&batch(&recs)).unwrap());
    assert_eq!(agg.held(), 1);
    closed.extend(fin(agg.flush()));
    assert_eq!(requests(&closed), 11);
    assert_eq!(closed.last().unwrap().window, window(360));
}

#[test]
fn hours_long_requests_cost_one_entry_each_not_one_per_window() {
    // 1 000 requests of 3 h each (1 080 windows of 10 s, cut at MAX_SPAN_WINDOWS)
    let recs: Vec<Rec> = (0..1_000)
        .map(|i| ok(i * 1_000, "a", "b", Some(3 * 3_600 * S as u64)))
        .collect();
    let mut agg = aggregator(10, 5);
    assert!(fin(agg.push(&batch(&recs)).unwrap()).is_empty());
    assert_eq!((agg.open_windows(), agg.open_pairs()), (1, 1));
    assert_eq!(agg.in_flight(), 1_000);
    assert_eq!(agg.counters().clamped_records, 1_000);
    let closed = fin(agg.flush());
    assert_eq!(closed.len(), MAX_SPAN_WINDOWS as usize);
    // every window after the first is fully covered by all 1 000 requests
    let w5 = &closed[5].pairs[0];
    assert_eq!((w5.requests, w5.concurrency_peak), (0, 1_000));
    assert!((w5.concurrency_mean - 1_000.0).abs() < 1e-9);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With records far ahead held back (some records an hour ahead, some confirmed jumps),
    /// a checkpoint after any record still changes nothing, and every record is either
    /// aggregated, late or set aside.
    #[test]
    fn holding_records_far_ahead_survives_a_checkpoint(
        recs in proptest::collection::vec((record(), 0..10u8), 1..150),
        cut in 0..150usize,
    ) {
        // one record in ten jumps an hour ahead, one in ten after it two hours (a gap)
        let recs: Vec<Rec> = recs
            .into_iter()
            .enumerate()
            .map(|(i, ((mut r, _), roll))| {
                if roll == 0 {
                    r.0 += 3_600 * S;
                } else if roll == 1 && i > 75 {
                    r.0 += 7_200 * S;
                }
                r
            })
            .collect();
        let (whole, after, expected, got) = checkpointed(|| holding(10, 5, 3), &recs, cut);
        let c = whole.counters();
        let aggregated: u64 = expected.iter().map(|p| p.requests).sum();
        prop_assert_eq!(aggregated + c.late_records + c.ahead_records, recs.len() as u64);
        prop_assert_eq!(got, expected);
        prop_assert_eq!(after.counters().ahead_records, c.ahead_records);
    }
}

/// An aggregator of 10 s windows holding at most 16 pairs per window.
fn capped() -> PairAggregator {
    PairAggregator::new(
        WindowSpec::try_from(&WindowConfig {
            ahead_confirm: 1,
            max_pairs: 16,
            ..WindowConfig::default()
        })
        .unwrap(),
    )
}

const HOSTS: [&str; 40] = [
    "h00", "h01", "h02", "h03", "h04", "h05", "h06", "h07", "h08", "h09", "h10", "h11", "h12",
    "h13", "h14", "h15", "h16", "h17", "h18", "h19", "h20", "h21", "h22", "h23", "h24", "h25",
    "h26", "h27", "h28", "h29", "h30", "h31", "h32", "h33", "h34", "h35", "h36", "h37", "h38",
    "h39",
];

#[test]
fn pairs_past_max_pairs_count_under_other() {
    // one client-facing edge, 40 client-chosen hosts, then h00 again
    let mut recs: Vec<Rec> = HOSTS.iter().map(|h| ok(S, "edge", h, Some(10))).collect();
    recs.push(ok(2 * S, "edge", "h00", Some(10)));
    let mut agg = capped();
    agg.push(&batch(&recs)).unwrap();
    let closed = fin(agg.flush());
    let pairs = &closed[0].pairs;
    assert_eq!(pairs.len(), 17);
    assert_eq!(agg.counters().overflow_records, 24);
    let other = pairs.iter().find(|p| p.destination == OTHER).unwrap();
    assert_eq!((other.source.as_str(), other.requests), ("edge", 24));
    let h00 = pairs.iter().find(|p| p.destination == "h00").unwrap();
    assert_eq!(h00.requests, 2, "a pair the window holds keeps counting");
    assert_eq!(requests(&closed), 41);

    // 40 distinct sources too: 16 pairs, 2 more (16 ÷ 8) under (source, other), the rest
    // under (other, other)
    let recs: Vec<Rec> = HOSTS
        .iter()
        .zip(HOSTS.iter().rev())
        .map(|(s, d)| ok(S, s, d, None))
        .collect();
    let mut agg = capped();
    agg.push(&batch(&recs)).unwrap();
    let closed = fin(agg.flush());
    let pairs = &closed[0].pairs;
    assert_eq!(pairs.len(), 19);
    let both = pairs
        .iter()
        .find(|p| p.source == OTHER && p.destination == OTHER)
        .unwrap();
    assert_eq!(both.requests, 22);
    assert_eq!(
        pairs
            .iter()
            .filter(|p| p.source != OTHER && p.destination == OTHER)
            .count(),
        2
    );
    assert_eq!(requests(&closed), 40);
}

#[test]
fn names_that_left_every_window_are_freed() {
    // 2 000 windows of 10 s, each with 50 names seen nowhere else (100 000 names in all)
    let mut agg = aggregator(10, 5);
    let mut merger = crate::merge::WindowMerger::new(*agg.spec());
    let mut most = (0, 0);
    for w in 0..2_000i64 {
        let names: Vec<String> = (0..50).map(|i| format!("pod-{w}-{i}")).collect();
        let mut b = FlowBatchBuilder::new();
        for n in &names {
            b.append(&FlowRecordRef::new(
                T0 + w * 10 * S,
                "caller",
                n,
                Reporter::Envoy,
            ));
        }
        for p in agg.push(&b.finish()).unwrap() {
            merger.complete("a", p);
        }
        merger.mark(
            "a",
            crate::merge::Mark {
                watermark_us: agg.watermark(),
                idle: false,
            },
        );
        merger.close_ready();
        most = (most.0.max(agg.names()), most.1.max(merger.names()));
    }
    // at most twice the collection threshold (4 096) plus a window's names, not 100 000
    assert!(
        most.0 <= 2 * 4_096 + 100,
        "aggregator held {} names",
        most.0
    );
    assert!(most.1 <= 2 * 4_096 + 100, "merger held {} names", most.1);
    assert!(agg.names() < 4_096 * 2);
}

#[test]
fn an_input_that_goes_idle_keeps_holding_a_record_far_ahead() {
    let mut recs: Vec<Rec> = (0..20).map(|i| ok(i * S, "a", "b", None)).collect();
    recs.push(ok(3_600 * S, "a", "b", None));
    let mut agg = holding(10, 5, 8);
    let mut closed = fin(agg.push(&batch(&recs)).unwrap());
    let mut idle = Vec::new();
    agg.flush_each(false, |p| idle.push(p));
    closed.extend(fin(idle));
    // the open windows closed; the record an hour ahead is still held, the watermark at
    // the end of the last window closed, not an hour later
    assert_eq!((agg.held(), agg.watermark()), (1, Some(T0 + 20 * S)));
    // the input wakes up where it was: the held record was an outlier
    let more: Vec<Rec> = (20..40).map(|i| ok(i * S, "a", "b", None)).collect();
    closed.extend(fin(agg.push(&batch(&more)).unwrap()));
    closed.extend(fin(agg.flush()));
    assert_eq!(agg.late_records(), 0);
    assert_eq!(agg.counters().ahead_records, 1);
    assert_eq!(requests(&closed), 40);
}

#[test]
fn most_of_an_inputs_first_records_far_ahead_make_nothing_late() {
    // five of the first eight lines an hour ahead, then the input's real traffic
    let mut recs: Vec<Rec> = (0..5).map(|_| ok(3_600 * S, "a", "b", None)).collect();
    recs.extend((0..30).map(|i| ok(i * S, "a", "b", None)));
    let mut agg = holding(10, 5, 8);
    let mut closed = fin(agg.push(&batch(&recs)).unwrap());
    closed.extend(fin(agg.flush()));
    assert_eq!(agg.late_records(), 0);
    assert_eq!(agg.counters().ahead_records, 5);
    assert_eq!(requests(&closed), 30);
}

/// One record with zones and versions: (start offset µs, source zone, source version,
/// destination zone, destination version, duration µs, status).
type DimsRec<'a> = (
    i64,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    u64,
    u16,
);

fn dims_batch(recs: &[DimsRec<'_>]) -> RecordBatch {
    let mut b = FlowBatchBuilder::new();
    for &(t, sz, sv, dz, dv, dur, status) in recs {
        let mut r = FlowRecordRef::new(T0 + t, "checkout", "payment", Reporter::Envoy);
        r.source_zone = sz;
        r.source_version = sv;
        r.destination_zone = dz;
        r.destination_version = dv;
        r.duration_us = Some(dur);
        r.status = Some(status);
        r.bytes_received = 100;
        r.bytes_sent = 1_000;
        b.append(&r);
    }
    b.finish()
}

#[test]
fn pair_windows_break_requests_down_by_zone_and_version() {
    let a = Some("zone-a");
    let b = Some("zone-b");
    let v1 = Some("v1");
    let v2 = Some("v2");
    let mut agg = aggregator(10, 0);
    let recs = [
        (0, a, v1, a, v1, 4_000, 200),
        (S, a, v1, a, v1, 6_000, 503),
        (2 * S, a, v1, b, v2, 30_000, 200),
        // no zone, no version: in the pair's counts, not in its breakdown
        (3 * S, None, None, None, None, 1_000, 200),
        (4 * S, None, None, b, None, 2_000, 200),
    ];
    let mut got = signals(agg.push(&dims_batch(&recs)).unwrap());
    got.extend(signals(agg.flush()));
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!(p.requests, 5);
    assert_eq!(p.breakdown_overflow, 0);
    let rows: Vec<_> = p
        .breakdown
        .iter()
        .map(|x| {
            (
                x.source_zone.as_deref(),
                x.destination_zone.as_deref(),
                x.destination_version.as_deref(),
                x.requests,
                x.errors,
                x.timed,
                x.duration_sum_us,
                x.bytes_out,
            )
        })
        .collect();
    // sorted: None before Some
    assert_eq!(
        rows,
        [
            (None, b, None, 1, 0, 1, 2_000, 1_000),
            (a, a, v1, 2, 1, 2, 10_000, 2_000),
            (a, b, v2, 1, 0, 1, 30_000, 1_000),
        ]
    );
}

#[test]
fn a_breakdown_keeps_sixteen_combinations_and_counts_the_rest() {
    let versions: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    let recs: Vec<_> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                i as i64 * 1_000,
                Some("a"),
                Some(v.as_str()),
                Some("a"),
                None,
                1_000,
                200,
            )
        })
        .collect();
    // two inputs: the first 12 versions in one, the other 8 (and again the first 4) in the
    // other; merged, the first 16 seen keep their place
    let mut one = aggregator(10, 0);
    let mut two = aggregator(10, 0);
    let mut first = one.push(&dims_batch(&recs[..12])).unwrap();
    first.extend(one.flush());
    let mut second_recs = recs[12..].to_vec();
    second_recs.extend_from_slice(&recs[..4]);
    let mut second = two.push(&dims_batch(&second_recs)).unwrap();
    second.extend(two.flush());
    let mut state = first.pop().unwrap().pairs.pop().unwrap().state;
    state.merge(second.pop().unwrap().pairs.pop().unwrap().state, 100);
    // through the checkpoint's encoding (MessagePack, positional) and back
    let data = state.to_data();
    let bytes = rmp_serde::to_vec(&data).unwrap();
    let back: PairStateData = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, data);
    let mut state = PairState::from_data(back, 100).unwrap();
    let p = state.finish(window(0), "checkout", "payment", &PairState::scale());
    assert_eq!(p.requests, 24);
    assert_eq!(p.breakdown.len(), MAX_BREAKDOWN);
    // v0..v3 were seen twice; v16..v19 did not fit
    assert_eq!(p.breakdown_overflow, 4);
    assert_eq!(p.breakdown.iter().map(|b| b.requests).sum::<u64>(), 20);
    let v0 = p
        .breakdown
        .iter()
        .find(|b| b.source_version.as_deref() == Some("v0"))
        .unwrap();
    assert_eq!((v0.requests, v0.duration_sum_us), (2, 2_000));
    assert!(
        p.breakdown
            .iter()
            .all(|b| b.source_version.as_deref() != Some("v17"))
    );
}
