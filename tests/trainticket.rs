//! Replay on real TrainTicket traces (IntelligentDDS/Nezha, MIT; see deploy/examples/README.md):
//! per-pair golden signals of a real ~40-service landscape, checked against an independent
//! computation written here from the CSV.

use std::collections::HashMap;

use crate::util::{graywatch_ok, of_kind, root};

const FILES: [&str; 3] = [
    "deploy/examples/trainticket/2023-01-29_08_43_trace.csv",
    "deploy/examples/trainticket/2023-01-29_08_44_trace.csv",
    "deploy/examples/trainticket/2023-01-29_08_45_trace.csv",
];

/// The service of a pod: its name less the two last `-` parts (ReplicaSet hash, pod suffix).
fn service(pod: &str) -> &str {
    let mut parts = pod.rsplitn(3, '-');
    let (_, _) = (parts.next(), parts.next());
    parts.next().unwrap_or(pod)
}

/// Durations (µs) of the calls from `source` to `destination` that start in the 10 s window
/// beginning at `window_start_us`: child spans whose parent span is in another service.
fn calls(source: &str, destination: &str, window_start_us: i64) -> Vec<u64> {
    let mut spans: HashMap<(String, String), (String, String, i64, u64)> = HashMap::new();
    for file in FILES {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let start_us = f[5].parse::<i64>().unwrap() / 1000;
            let value = (
                f[2].to_owned(),
                service(f[3]).to_owned(),
                start_us,
                f[7].parse().unwrap(),
            );
            spans.insert((f[0].to_owned(), f[1].to_owned()), value);
        }
    }
    let mut out = Vec::new();
    for ((trace, _), (parent, child_service, start_us, duration)) in &spans {
        let Some((_, parent_service, _, _)) = spans.get(&(trace.clone(), parent.clone())) else {
            continue;
        };
        if parent_service == source
            && child_service == destination
            && (window_start_us..window_start_us + 10_000_000).contains(start_us)
        {
            out.push(*duration);
        }
    }
    out.sort_unstable();
    out
}

/// The quantile as an HDR histogram with 2 significant digits reports it (the documented
/// precision of `PairWindow.latency`), never above the exact maximum.
fn hdr_quantile(values: &[u64], q: f64) -> u64 {
    let mut h = hdrhistogram::Histogram::<u64>::new(2).unwrap();
    for &v in values {
        h.record(v).unwrap();
    }
    h.value_at_quantile(q).min(*values.iter().max().unwrap())
}

#[test]
fn trainticket_pair_aggregates_match_an_independent_count() {
    let mut args = vec!["replay", "--config", "deploy/examples/trainticket.toml"];
    args.extend(FILES);
    let (docs, stderr) = graywatch_ok(&args);
    assert!(stderr.contains("rejected  0"), "{stderr}");
    assert!(stderr.contains("late      0"), "{stderr}");
    let pairs = of_kind(&docs, "pair-window");
    // Three busy pairs in windows of 2023-01-29 08:42–08:45 UTC. A span repeated in the files
    // is one call (the HashMap join above keeps one copy, as graywatch does).
    for (source, destination, window_start_us) in [
        ("ts-seat-service", "ts-order-service", 1_674_981_770_000_000),
        (
            "ts-travel-service",
            "ts-seat-service",
            1_674_981_860_000_000,
        ),
        (
            "ts-basic-service",
            "ts-station-service",
            1_674_981_840_000_000,
        ),
    ] {
        let expected = calls(source, destination, window_start_us);
        assert!(
            expected.len() >= 20,
            "{source} -> {destination}: {}",
            expected.len()
        );
        let got = pairs
            .iter()
            .find(|p| {
                p["source"] == source
                    && p["destination"] == destination
                    && p["window"]["start_us"] == window_start_us
            })
            .unwrap_or_else(|| {
                panic!("no pair window {source} -> {destination} at {window_start_us}")
            });
        assert_eq!(got["requests"], expected.len() as u64, "{got}");
        assert_eq!(got["latency"]["max_us"], *expected.last().unwrap(), "{got}");
        // Exactly what an HDR histogram of these durations says (2 significant digits: within
        // 1 % of the nearest-rank value).
        for (key, q) in [("p50_us", 0.5), ("p90_us", 0.9), ("p99_us", 0.99)] {
            assert_eq!(
                got["latency"][key],
                hdr_quantile(&expected, q),
                "{source} -> {destination} {key}"
            );
        }
        let rate = got["rate_rps"].as_f64().unwrap();
        assert!((rate - expected.len() as f64 / 10.0).abs() < 1e-9);
    }
}
