//! Window aggregation throughput: synthetic flow-record batches through `detect::Detector`
//! (pair aggregation, closing, node windows, black-hole signature), and the resident memory of
//! 100 k distinct pairs in one window.
//!
//! Input (generated deterministically, no file): 1,000,000 flow records in batches of 8192,
//! start times evenly spread over 5 windows of 10 s, pairs drawn with a fixed LCG from either
//! 1,000 pairs (40 sources × 25 destinations) or 100,000 pairs (400 × 250); durations
//! 1–200 ms, 1 % 503s, 200–1200 bytes in, 1–10 kB out.
//!
//! Run: `cargo bench --bench window`. Targets on one core: ≥ 10 M records/s at 1 k pairs,
//! ≥ 2 M records/s at 100 k pairs; ≤ 1 GiB resident for 100 k pairs in one window. Set
//! `WINDOW_BENCH_SKIP_MEMORY=1` to skip the memory report (e.g. under a profiler), or
//! `WINDOW_BENCH_MEMORY_PER_PAIR=N` to give each of the 100 k pairs N requests (default 130;
//! above 512 every pair-window holds an HDR histogram).

use std::hint::black_box;

use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput};
use detect::{DetectConfig, Detector};
use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};

const RECORDS: usize = 1_000_000;
const BATCH: usize = 8192;
const WINDOWS: i64 = 5;
const WINDOW_US: i64 = 10_000_000;
/// A multiple of 10 s, so window boundaries fall on round numbers.
const T0: i64 = 1_700_000_000_000_000;

/// Numerical Recipes' 64-bit LCG: deterministic, no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// `records` flow records over `span_us` from T0 among `sources × destinations` pairs, in
/// batches of [`BATCH`]. `pair_of(i)` picks record i's pair index.
fn batches(
    records: usize,
    sources: usize,
    destinations: usize,
    span_us: i64,
    mut pair_of: impl FnMut(usize, &mut Lcg) -> usize,
    mut sink: impl FnMut(RecordBatch),
) {
    let src: Vec<String> = (0..sources).map(|i| format!("src-{i:03}")).collect();
    let dst: Vec<String> = (0..destinations).map(|i| format!("dst-{i:03}")).collect();
    let mut rng = Lcg(42);
    let mut b = FlowBatchBuilder::new();
    for i in 0..records {
        let p = pair_of(i, &mut rng);
        let t = T0 + (i as i64 * span_us) / records as i64;
        let mut r = FlowRecordRef::new(
            t,
            &src[p / destinations],
            &dst[p % destinations],
            Reporter::Envoy,
        );
        let x = rng.next();
        r.duration_us = Some(1_000 + x % 199_000);
        r.status = Some(if x.is_multiple_of(100) { 503 } else { 200 });
        r.bytes_received = 200 + x % 1_000;
        r.bytes_sent = 1_000 + x % 9_000;
        b.append(&r);
        if b.len() == BATCH {
            sink(b.finish());
        }
    }
    if !b.is_empty() {
        sink(b.finish());
    }
}

fn shape(pairs: usize) -> (usize, usize) {
    match pairs {
        1_000 => (40, 25),
        100_000 => (400, 250),
        _ => unreachable!("bench shapes are 1 k and 100 k pairs"),
    }
}

fn bench_window(c: &mut Criterion) {
    let mut group = c.benchmark_group("window");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for pairs in [1_000usize, 100_000] {
        let (s, d) = shape(pairs);
        let mut input = Vec::new();
        batches(
            RECORDS,
            s,
            d,
            WINDOWS * WINDOW_US,
            |_, rng| rng.next() as usize % pairs,
            |b| input.push(b),
        );
        println!(
            "window/{pairs}_pairs: {RECORDS} synthetic flow records in {} batches of {BATCH}, \
             {pairs} pairs ({s} sources x {d} destinations), {WINDOWS} windows of 10 s",
            input.len()
        );
        group.bench_function(format!("{pairs}_pairs"), |bench| {
            bench.iter(|| {
                let mut det = Detector::try_from(DetectConfig::default()).expect("default config");
                let mut windows = 0;
                for batch in &input {
                    windows += det.push(black_box(batch)).expect("flow-record batch").len();
                }
                windows += det.flush().len();
                // the last requests run into a 6th window
                assert_eq!(windows as i64, WINDOWS + 1);
                black_box(windows)
            })
        });
    }
    group.finish();
}

fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Aggregates 100 k distinct pairs in one window, `per_pair` records each, and prints the
/// resident memory the open window costs (VmRSS after − before, batches dropped as they go).
fn report_memory(per_pair: usize) {
    let pairs = 100_000;
    let (s, d) = shape(pairs);
    let records = pairs * per_pair;
    let mut det = Detector::try_from(DetectConfig::default()).expect("default config");
    let before = vm_rss_bytes();
    let mut closed = 0;
    // every pair once per round, all in window 0 (span 9 s < 10 s, watermark stays below 10 s)
    batches(
        records,
        s,
        d,
        9_000_000,
        |i, _| i % pairs,
        |b| {
            closed += det.push(&b).expect("flow-record batch").len();
        },
    );
    let after = vm_rss_bytes();
    assert_eq!(closed, 0, "the window must still be open when measured");
    let delta = after.saturating_sub(before);
    println!(
        "memory: {pairs} pairs x {per_pair} records in one open window: VmRSS {} -> {} MiB, \
         +{} MiB = {} bytes per pair-window (limit 1024 MiB)",
        before >> 20,
        after >> 20,
        delta >> 20,
        delta / pairs as u64
    );
    let windows = det.flush();
    assert_eq!(windows[0].pairs.len(), pairs);
    assert!(delta <= 1 << 30, "more than 1 GiB for 100 k pairs");
}

fn main() {
    // 130 requests per pair: raw durations; set WINDOW_BENCH_MEMORY_PER_PAIR=513 for the
    // HDR-histogram worst case (51 M records, slow to generate)
    let per_pair = std::env::var("WINDOW_BENCH_MEMORY_PER_PAIR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(130);
    if std::env::var_os("WINDOW_BENCH_SKIP_MEMORY").is_none() {
        report_memory(per_pair);
    }
    let mut c = Criterion::default().configure_from_args();
    bench_window(&mut c);
    c.final_summary();
}
