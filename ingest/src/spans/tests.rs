//! Span parser tests. Fixtures: deploy/examples/trainticket/*.csv, four minutes of
//! TrainTicket traces from IntelligentDDS/Nezha (MIT), origins in deploy/examples/README.md.

use std::collections::HashMap as StdHashMap;

use proptest::prelude::*;
use schemas::{FlowRecord, flow_records};

use super::*;
use crate::mapping::{MappingConfig, RuleConfig};

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/examples/trainticket"
);

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()
}

/// Parses `lines`, then finishes; returns records, rejects (1-based line numbers) and the
/// parser for its counters.
fn run<'a>(
    mut p: SpansCsvParser,
    lines: impl IntoIterator<Item = &'a str>,
) -> (Vec<FlowRecord>, Vec<(usize, Reject)>, SpansCsvParser) {
    let mut out = FlowBatchBuilder::new();
    let mut rejects = Vec::new();
    let mut n = 0;
    for (i, l) in lines.into_iter().enumerate() {
        match p.parse_line(l.as_bytes(), &mut out) {
            Ok(k) => n += k,
            Err(r) => rejects.push((i + 1, r)),
        }
    }
    n += p.finish(&mut out);
    let recs = flow_records(&out.finish()).unwrap();
    assert_eq!(recs.len(), n, "returned counts match appended rows");
    (recs, rejects, p)
}

fn counter(p: &SpansCsvParser, name: &str) -> u64 {
    p.counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap()
}

fn sorted(mut v: Vec<FlowRecord>) -> Vec<FlowRecord> {
    v.sort_by(|a, b| {
        (a.start_us, &a.source, &a.destination, &a.request_id).cmp(&(
            b.start_us,
            &b.source,
            &b.destination,
            &b.request_id,
        ))
    });
    v
}

/// The header and the first 15 spans of 2023-01-29_08_43_trace.csv: one trace,
/// b0103bb0161ad7fa352fe1828eeb643a, with two cross-service calls (computed by hand):
/// - span 5e89765a7f60ff70 (ts-gateway-service, "HTTP POST") → child 7e28bdb6a47af144
///   (ts-auth-service): start 1674981768701000000 ns = 1674981768701000 µs, Duration 311521.
/// - span 7677ee539f158c0a (ts-auth-service, "HTTP GET") → child a6cdfc2765ad0a46
///   (ts-verification-code-service): start 1674981768707000000 ns, Duration 3604.
///
/// Every other parent/child pair is within one service.
fn first_lines() -> Vec<String> {
    read("2023-01-29_08_43_trace.csv")
        .lines()
        .take(16)
        .map(str::to_owned)
        .collect()
}

const TRACE: &str = "b0103bb0161ad7fa352fe1828eeb643a";

#[test]
fn pod_names_lose_their_deployment_suffixes() {
    assert_eq!(
        pod_service("ts-contacts-service-866bd68c97-xcqfx"),
        "ts-contacts-service"
    );
    assert_eq!(pod_service("redis-0"), "redis-0");
    assert_eq!(pod_service("a-b-c"), "a");
    assert_eq!(pod_service("-b-c"), "-b-c");
}

#[test]
fn first_trace_yields_the_two_cross_service_calls() {
    let lines = first_lines();
    let (recs, rejects, p) = run(
        SpansCsvParser::new(Mapping::default()),
        lines.iter().map(String::as_str),
    );
    assert!(rejects.is_empty());
    assert_eq!(recs.len(), 2);
    let r = &recs[0];
    assert_eq!(r.source, "ts-gateway-service");
    assert_eq!(r.destination, "ts-auth-service");
    assert_eq!(r.start_us, 1_674_981_768_701_000);
    assert_eq!(r.duration_us, Some(311_521));
    assert_eq!(r.request_id.as_deref(), Some(TRACE));
    assert_eq!(r.reporter, Reporter::Span);
    assert_eq!(
        (r.status, r.method.as_deref(), r.protocol.as_deref()),
        (None, None, None)
    );
    assert_eq!((r.bytes_sent, r.bytes_received), (0, 0));
    let r = &recs[1];
    assert_eq!(r.source, "ts-auth-service");
    assert_eq!(r.destination, "ts-verification-code-service");
    assert_eq!(r.start_us, 1_674_981_768_707_000);
    assert_eq!(r.duration_us, Some(3_604));
    assert_eq!(counter(&p, counters::WITHOUT_PARENT), 0);
}

#[test]
fn child_before_parent_gives_the_same_records() {
    let lines = first_lines();
    let forward = run(
        SpansCsvParser::new(Mapping::default()),
        lines.iter().map(String::as_str),
    )
    .0;
    let backward = run(
        SpansCsvParser::new(Mapping::default()),
        lines.iter().rev().map(String::as_str),
    )
    .0;
    assert_eq!(sorted(forward), sorted(backward));
}

#[test]
fn pod_rules_override_services() {
    let rule = |side, pattern: &str, service: &str| RuleConfig {
        field: MatchField::Pod,
        pattern: pattern.into(),
        side,
        service: Some(service.into()),
        zone: Some("z1".into()),
        version: None,
    };
    let mapping = Mapping::try_from(MappingConfig {
        rules: vec![
            rule(Side::Destination, "ts-auth-service-*", "auth"),
            rule(Side::Source, "ts-gateway-*", "gateway"),
        ],
        ..Default::default()
    })
    .unwrap();
    let lines = first_lines();
    let (recs, _, _) = run(
        SpansCsvParser::new(mapping),
        lines.iter().map(String::as_str),
    );
    // Still two records: internal auth spans compare equal as callees ("auth" = "auth").
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[0].source.as_str(), recs[0].source_zone.as_deref()),
        ("gateway", Some("z1"))
    );
    assert_eq!(
        (
            recs[0].destination.as_str(),
            recs[0].destination_zone.as_deref()
        ),
        ("auth", Some("z1"))
    );
    // auth as a caller has no source rule: its pod-name service.
    assert_eq!(recs[1].source, "ts-auth-service");
    assert_eq!(recs[1].source_zone, None);
}

/// Independent join: (trace, span) → service, first occurrence wins; one record per first
/// occurrence of a span whose parent is known and whose service differs.
fn independent(lines: &[&str]) -> (usize, u64, u64) {
    let svc = |pod: &str| {
        let parts: Vec<&str> = pod.split('-').collect();
        parts[..parts.len() - 2].join("-")
    };
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .filter(|l| !l.starts_with("TraceID"))
        .map(|l| l.split(',').collect())
        .collect();
    let mut first: StdHashMap<(&str, &str), String> = StdHashMap::new();
    let mut unique = Vec::new();
    let mut dups = 0;
    for r in &rows {
        match first.entry((r[0], r[1])) {
            std::collections::hash_map::Entry::Occupied(_) => dups += 1,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(svc(r[3]));
                unique.push(r);
            }
        }
    }
    let mut records = 0;
    let mut duration_sum = 0;
    for r in unique {
        if r[2] == "root" {
            continue;
        }
        if let Some(parent) = first.get(&(r[0], r[2]))
            && *parent != svc(r[3])
        {
            records += 1;
            duration_sum += r[7].parse::<u64>().unwrap();
        }
    }
    (records, duration_sum, dups)
}

#[test]
fn a_whole_file_matches_an_independent_join() {
    let text = read("2023-01-29_08_43_trace.csv");
    let lines: Vec<&str> = text.lines().collect();
    let (recs, rejects, p) = run(
        SpansCsvParser::new(Mapping::default()),
        lines.iter().copied(),
    );
    assert!(rejects.is_empty(), "{rejects:?}");
    let (n, durations, dups) = independent(&lines);
    // 716 also with a separate Python `csv` join over the same file.
    assert_eq!(n, 716);
    assert_eq!(recs.len(), n);
    assert_eq!(
        recs.iter().map(|r| r.duration_us.unwrap()).sum::<u64>(),
        durations
    );
    assert_eq!(counter(&p, counters::DUPLICATE_SPANS), dups);
    assert!(recs.iter().all(|r| r.source != r.destination));
}

#[test]
fn all_files_in_one_run_with_duplicates_counted() {
    // The files overlap (a trace that spans a minute boundary is in both minutes' files):
    // repeated spans are counted as duplicates and not joined twice.
    let mut names: Vec<_> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    names.sort();
    let texts: Vec<String> = names.iter().map(|n| read(n)).collect();
    let lines: Vec<&str> = texts.iter().flat_map(|t| t.lines()).collect();
    let (recs, rejects, p) = run(
        SpansCsvParser::new(Mapping::default()),
        lines.iter().copied(),
    );
    assert!(rejects.is_empty(), "{:?}", &rejects[..rejects.len().min(3)]);
    let (n, durations, dups) = independent(&lines);
    assert_eq!(recs.len(), n);
    assert_eq!(
        recs.iter().map(|r| r.duration_us.unwrap()).sum::<u64>(),
        durations
    );
    assert_eq!(counter(&p, counters::DUPLICATE_SPANS), dups);
    assert!(dups > 0);
    assert_eq!(counter(&p, counters::EVICTED_SPANS), 0);
}

fn line(trace: &str, span: &str, parent: &str, pod: &str, start_ns: u64, dur: u64) -> String {
    format!(
        "{trace},{span},{parent},{pod},op,{start_ns},{},{dur}",
        start_ns + dur * 1000
    )
}

#[test]
fn bound_evicts_oldest_traces_and_counts_orphans() {
    let lines = [
        line("A", "a1", "root", "x-1-2", 1_000, 5),
        // Parent a9 not seen yet: held as a span and as a waiting child (3 held).
        line("A", "a2", "a9", "y-1-2", 2_000, 4),
        // 4 held > 3: trace A (2 spans, 1 waiting child) is evicted.
        line("B", "b1", "root", "x-1-2", 3_000, 3),
        // a9 arrives too late: a new trace A, its child forgotten, no record.
        line("A", "a9", "root", "x-1-2", 1_500, 9),
    ];
    let p = SpansCsvParser::new(Mapping::default()).with_max_pending_spans(3);
    let (recs, rejects, p) = run(p, lines.iter().map(String::as_str));
    assert!(rejects.is_empty());
    assert!(recs.is_empty());
    assert_eq!(counter(&p, counters::EVICTED_TRACES), 1);
    assert_eq!(counter(&p, counters::EVICTED_SPANS), 2);
    assert_eq!(counter(&p, counters::WITHOUT_PARENT), 1);
    assert_eq!(p.held_spans(), 0, "finish releases everything");

    // Without the bound the late parent is joined: x calls y, start 2 000 ns = 2 µs.
    let (recs, _, p) = run(
        SpansCsvParser::new(Mapping::default()),
        lines.iter().map(String::as_str),
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].source.as_str(), recs[0].destination.as_str()),
        ("x", "y")
    );
    assert_eq!((recs[0].start_us, recs[0].duration_us), (2, Some(4)));
    assert_eq!(counter(&p, counters::WITHOUT_PARENT), 0);
}

#[test]
fn orphans_left_at_the_end_are_counted() {
    let lines = [line("T", "c", "missing", "x-1-2", 1, 1)];
    let (recs, _, p) = run(
        SpansCsvParser::new(Mapping::default()),
        lines.iter().map(String::as_str),
    );
    assert!(recs.is_empty());
    assert_eq!(counter(&p, counters::WITHOUT_PARENT), 1);
}

#[test]
fn commas_in_operation_names_and_bad_lines() {
    let mut p = SpansCsvParser::new(Mapping::default());
    let mut out = FlowBatchBuilder::new();
    assert_eq!(p.parse_line(HEADER.as_bytes(), &mut out), Ok(0));
    assert_eq!(
        p.parse_line(b"T,p,root,a-1-2,GET /x,y,1000,2000,1", &mut out),
        Ok(0)
    );
    assert_eq!(
        p.parse_line(b"T,c,p,b-1-2,op, with, commas,5000,9000,4", &mut out),
        Ok(1)
    );
    let r = flow_records(&out.finish()).unwrap().remove(0);
    assert_eq!((r.source.as_str(), r.destination.as_str()), ("a", "b"));
    assert_eq!((r.start_us, r.duration_us), (5, Some(4)));

    let mut reject = |p: &mut SpansCsvParser, l: &[u8]| p.parse_line(l, &mut out).unwrap_err();
    assert_eq!(
        reject(&mut p, b"T,c,p,b-1-2,op,5x00,9000,4"),
        Reject::new(
            RejectReason::BadNumber,
            r#"invalid StartTimeUnixNano "5x00""#
        )
    );
    assert_eq!(
        reject(&mut p, b"T,c,p,b-1-2,op,5000,9000,-4"),
        Reject::new(RejectReason::BadNumber, r#"invalid Duration "-4""#)
    );
    let r = reject(&mut p, b"T,c,p,b-1-2,5000");
    assert_eq!(r.reason, RejectReason::Malformed);
    assert!(r.detail.ends_with("found 5"), "{r}");
    assert_eq!(
        reject(&mut p, b",c,p,b-1-2,op,5000,9000,4"),
        Reject::new(RejectReason::Malformed, "empty TraceID")
    );
    assert_eq!(
        reject(&mut p, b"T,c,p,b-1-\xff,op,5000,9000,4").reason,
        RejectReason::InvalidUtf8
    );
}

/// The two cross-service calls of [`first_lines`] as (source, destination, start µs, µs).
fn first_calls(recs: &[FlowRecord]) -> Vec<(String, String, i64, Option<u64>)> {
    sorted(recs.to_vec())
        .into_iter()
        .map(|r| (r.source, r.destination, r.start_us, r.duration_us))
        .collect()
}

/// Rewrites CSV `lines` with the columns in the order `order` (indices into the original).
fn reorder(lines: &[String], order: &[usize]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            order.iter().map(|&i| f[i]).collect::<Vec<_>>().join(",")
        })
        .collect()
}

#[test]
fn columns_are_found_by_header_name_in_any_order_with_extra_columns() {
    let lines = first_lines();
    // No operation name in these 16 lines holds a comma (checked: each has 8 fields).
    assert!(lines.iter().all(|l| l.split(',').count() == 8));
    let want = vec![
        (
            "ts-gateway-service".to_owned(),
            "ts-auth-service".to_owned(),
            1_674_981_768_701_000,
            Some(311_521),
        ),
        (
            "ts-auth-service".to_owned(),
            "ts-verification-code-service".to_owned(),
            1_674_981_768_707_000,
            Some(3_604),
        ),
    ];
    // SpanID and ParentID swapped, Duration first.
    let swapped = reorder(&lines, &[7, 0, 2, 1, 3, 4, 5, 6]);
    assert!(swapped[0].starts_with("Duration,TraceID,ParentID,SpanID,"));
    let (recs, rejects, _) = run(
        SpansCsvParser::new(Mapping::default()),
        swapped.iter().map(String::as_str),
    );
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(first_calls(&recs), want);

    // An extra column (here a copy of EndTimeUnixNano named "Extra") in the middle.
    let extra: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.insert(2, if i == 0 { "Extra" } else { f[6] });
            f.join(",")
        })
        .collect();
    let (recs, rejects, _) = run(
        SpansCsvParser::new(Mapping::default()),
        extra.iter().map(String::as_str),
    );
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(first_calls(&recs), want);
}

#[test]
fn each_input_s_header_applies_to_its_own_lines() {
    // The driver feeds one parser several files in a row: a standard file, then one with
    // SpanID and ParentID swapped. The second file's child (c, parent p) must join the first
    // file's parent span p.
    let lines = [
        HEADER.to_owned(),
        line("T", "p", "root", "a-1-2", 1_000, 9),
        "TraceID,ParentID,SpanID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration"
            .to_owned(),
        "T,p,c,b-1-2,op,5000,9000,4".to_owned(),
    ];
    let (recs, rejects, _) = run(
        SpansCsvParser::new(Mapping::default()),
        lines.iter().map(String::as_str),
    );
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].source.as_str(), recs[0].destination.as_str()),
        ("a", "b")
    );
    assert_eq!((recs[0].start_us, recs[0].duration_us), (5, Some(4)));
}

#[test]
fn a_header_without_a_required_column_rejects_its_lines() {
    let lines = [
        "TraceID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration",
        "T,root,a-1-2,op,1000,2000,1",
        "T,p,b-1-2,op,5000,9000,4",
        // A complete header (the next input) makes lines readable again.
        HEADER,
        "T,c,root,a-1-2,op,1000,2000,1",
    ];
    let (recs, rejects, _) = run(SpansCsvParser::new(Mapping::default()), lines);
    assert!(recs.is_empty());
    let lines_rejected: Vec<usize> = rejects.iter().map(|(i, _)| *i).collect();
    assert_eq!(lines_rejected, vec![1, 2, 3]);
    for (_, r) in &rejects {
        assert_eq!(r.reason, RejectReason::Malformed);
        assert!(r.detail.contains(r#"missing column "SpanID""#), "{r}");
    }
}

/// Resident memory of this process, bytes (Linux `/proc/self/statm`, 4 KiB pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split(' ').nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

/// Memory per held span at the default bound, printed; run in release, one scenario per
/// process (freed memory stays resident and would hide the next one's):
/// `GW_SCENARIO=<n> cargo test --release -p graywatch-ingest -- --ignored held_span_memory
/// --nocapture` with n = 0 (the Nezha trace files, trace ids renamed per round, until the
/// bound is reached), 1 (10-span traces, every parent seen), 2 (one-span traces whose parent
/// never comes: each child counts twice).
#[test]
#[ignore = "measures process memory; run alone in release"]
fn held_span_memory() {
    use std::fmt::Write;
    let scenario: u32 = std::env::var("GW_SCENARIO").map_or(0, |v| v.parse().unwrap());
    let mut lines: Vec<String> = Vec::new();
    if scenario == 0 {
        let mut names: Vec<_> = std::fs::read_dir(DIR)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".csv"))
            .collect();
        names.sort();
        for n in names {
            lines.extend(read(&n).lines().skip(1).map(str::to_owned));
        }
    }
    let pods: Vec<String> = (0..40)
        .map(|i| format!("ts-service-{i}-866bd68c97-xcqfx"))
        .collect();
    let before = resident_bytes();
    let mut p = SpansCsvParser::new(Mapping::default());
    let mut out = FlowBatchBuilder::new();
    let mut line = String::new();
    let mut i = 0u64;
    while p.held_spans() < DEFAULT_MAX_PENDING_SPANS {
        line.clear();
        match scenario {
            0 => {
                let round = i / lines.len() as u64;
                let l = &lines[(i % lines.len() as u64) as usize];
                write!(line, "{round:x}{l}").unwrap();
            }
            1 => {
                let parent = if i.is_multiple_of(10) {
                    "root".to_owned()
                } else {
                    format!("{:016x}", i - 1)
                };
                let pod = &pods[(i % 40) as usize];
                write!(line, "{:032x},{i:016x},{parent},{pod},op,1,0,10", i / 10).unwrap();
            }
            _ => {
                let parent = i ^ 0xdead_beef_0000_0000;
                let pod = &pods[(i % 40) as usize];
                write!(line, "{i:032x},{i:016x},{parent:016x},{pod},op,1,0,10").unwrap();
            }
        }
        p.parse_line(line.as_bytes(), &mut out).unwrap();
        if out.len() >= 8192 {
            out.finish();
        }
        i += 1;
    }
    let after = resident_bytes();
    let held = p.held_spans() as u64;
    println!(
        "scenario {scenario}: {i} spans read, {held} held, {} traces, {:.0} MB resident, \
         {:.0} bytes per held span",
        p.traces.len(),
        (after - before) as f64 / 1e6,
        (after - before) as f64 / held as f64
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_order_gives_the_same_records(
        order in Just((0..300usize).collect::<Vec<_>>()).prop_shuffle()
    ) {
        // The first 300 spans of 2023-01-29_08_43_trace.csv (several interleaved traces).
        let text = read("2023-01-29_08_43_trace.csv");
        let lines: Vec<&str> = text.lines().skip(1).take(300).collect();
        let forward = run(SpansCsvParser::new(Mapping::default()), lines.iter().copied()).0;
        let shuffled = run(
            SpansCsvParser::new(Mapping::default()),
            order.iter().map(|&i| lines[i]),
        )
        .0;
        prop_assert!(!forward.is_empty());
        prop_assert_eq!(sorted(forward), sorted(shuffled));
    }

    #[test]
    fn random_bytes_never_panic(lines in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..120), 1..20)
    ) {
        let mut p = SpansCsvParser::new(Mapping::default()).with_max_pending_spans(4);
        let mut out = FlowBatchBuilder::new();
        for l in &lines {
            let _ = p.parse_line(l, &mut out);
        }
        p.finish(&mut out);
    }

    #[test]
    fn random_csv_fields_never_panic(
        rows in proptest::collection::vec(("[a-c]{0,2}", "[a-d]{0,2}", "[a-d]{0,2}|root", "[a-z-]{0,8}", "[0-9]{0,22}", "[0-9x]{0,5}"), 1..40)
    ) {
        let mut p = SpansCsvParser::new(Mapping::default()).with_max_pending_spans(5);
        let mut out = FlowBatchBuilder::new();
        let mut n = 0;
        for (t, s, par, pod, start, dur) in &rows {
            n += p.parse_line(format!("{t},{s},{par},{pod},op,{start},0,{dur}").as_bytes(), &mut out).unwrap_or(0);
            prop_assert!(p.held_spans() <= 5);
        }
        n += p.finish(&mut out);
        prop_assert_eq!(out.len(), n);
    }
}

#[test]
fn ids_longer_than_the_cap_are_rejected_naming_the_column() {
    let max = schemas::flow::MAX_REQUEST_ID_BYTES;
    let long = "t".repeat(max + 1);
    let at_cap = "t".repeat(max);
    let lines = [
        line(&long, "a1", "root", "x-1-2", 1_000, 5),
        line("A", &long, "root", "x-1-2", 1_000, 5),
        line("A", "a2", &long, "y-1-2", 2_000, 4),
        // at the cap: read, and joined (x calls y)
        line(&at_cap, "a1", "root", "x-1-2", 1_000, 5),
        line(&at_cap, "a2", "a1", "y-1-2", 2_000, 4),
    ];
    let (recs, rejects, _) = run(
        SpansCsvParser::new(Mapping::default()),
        lines.iter().map(String::as_str),
    );
    let got: Vec<(usize, String)> = rejects
        .iter()
        .map(|(i, r)| (*i, r.to_string()[..40].to_owned()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "malformed: TraceID of 257 bytes, longer ".into()),
            (2, "malformed: SpanID of 257 bytes, longer t".into()),
            (3, "malformed: ParentID of 257 bytes, longer".into()),
        ]
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].request_id.as_deref(), Some(at_cap.as_str()));
}

#[test]
fn held_spans_are_bounded_by_bytes_when_ids_are_long() {
    // Orphans: one-span traces whose parent never comes, every id 200 bytes of text. Each
    // trace holds 2 spans (the span, the waiting child) and 3 ids: 2 × 370 + 3 × 200 bytes.
    let per_trace = 2 * HELD_SPAN_BYTES + 3 * 200;
    let bound = 1 << 20;
    let fits = bound / per_trace;
    let id = |c: char, i: usize| format!("{c}{i:05}{}", "x".repeat(194));
    let mut p = SpansCsvParser::new(Mapping::default()).with_max_pending_bytes(bound);
    let mut out = FlowBatchBuilder::new();
    let mut most = 0;
    for i in 0..2_000 {
        let l = line(&id('t', i), &id('s', i), &id('p', i), "y-1-2", 1_000, 4);
        assert_eq!(p.parse_line(l.as_bytes(), &mut out), Ok(0));
        assert!(p.held_bytes() <= bound, "{} held bytes", p.held_bytes());
        most = most.max(p.held_spans());
    }
    assert_eq!(most, 2 * fits);
    assert_eq!(p.held_bytes(), fits * per_trace);
    assert_eq!(counter(&p, counters::EVICTED_TRACES), (2_000 - fits) as u64);
    p.finish(&mut out);
    assert_eq!(counter(&p, counters::WITHOUT_PARENT), 2_000);
    assert_eq!(p.held_bytes(), 0);
}

/// A line with too few fields names every column it was expected to have, `Duration` too
/// (the detail once stopped at 80 characters), and says whether they came from a header.
#[test]
fn a_short_line_names_every_expected_column() {
    let (_, rejects, _) = run(SpansCsvParser::new(Mapping::default()), ["a,b,c"]);
    assert_eq!(rejects.len(), 1);
    assert_eq!(
        rejects[0].1.detail,
        "expected 8 comma-separated fields (TraceID,SpanID,ParentID,PodName,OperationName,\
         StartTimeUnixNano,EndTimeUnixNano,Duration, the default layout: no header line came \
         before this line), found 3"
    );
    // a header of the input's own: its columns, whole up to 400 characters
    let header = format!(
        "{HEADER},{}",
        (0..60)
            .map(|i| format!("Extra{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (_, rejects, _) = run(
        SpansCsvParser::new(Mapping::default()),
        [header.as_str(), "a,b"],
    );
    assert_eq!(rejects.len(), 1);
    let detail = &rejects[0].1.detail;
    assert!(
        detail.starts_with(&format!(
            "expected 68 comma-separated fields ({HEADER},Extra0,"
        )),
        "{detail}"
    );
    assert!(detail.ends_with(" more columns), found 2"), "{detail}");
    assert!(!detail.contains("default layout"), "{detail}");
}
