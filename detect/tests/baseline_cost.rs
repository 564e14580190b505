//! Judging a node costs about the same whatever `baseline-windows` is: the baseline's medians
//! are kept up to date, not recomputed over the whole history every window.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use detect::{DetectConfig, Detector};
use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};

const T0: i64 = 1_700_000_000_000_000;
const L: i64 = 10_000_000;
const NODES: usize = 10;
const WINDOWS: i64 = 1_500;

/// One batch per 10 s window: `frontend` calls each of `NODES` services 25 times, each of
/// which calls `db` once per request; all answered 200.
fn batches() -> Vec<RecordBatch> {
    let names: Vec<String> = (0..NODES).map(|i| format!("svc-{i}")).collect();
    (0..WINDOWS)
        .map(|k| {
            let mut b = FlowBatchBuilder::new();
            for i in 0..25 {
                let t = T0 + k * L + i * (L / 25);
                for n in &names {
                    for (src, dst) in [("frontend", n.as_str()), (n.as_str(), "db")] {
                        let mut r = FlowRecordRef::new(t, src, dst, Reporter::Envoy);
                        r.duration_us = Some(1_000);
                        r.status = Some(200);
                        b.append(&r);
                    }
                }
            }
            b.finish()
        })
        .collect()
}

/// Time to detect over `batches` with `baseline_windows`, and the node windows judged.
fn detect(batches: &[RecordBatch], baseline_windows: usize) -> (Duration, usize) {
    let mut c = DetectConfig::default();
    c.black_hole.baseline_windows = baseline_windows;
    let mut d = Detector::try_from(c).unwrap();
    let started = Instant::now();
    let mut nodes = 0;
    for b in batches {
        nodes += d
            .push(b)
            .unwrap()
            .iter()
            .map(|w| w.nodes.len())
            .sum::<usize>();
    }
    nodes += d.flush().iter().map(|w| w.nodes.len()).sum::<usize>();
    (started.elapsed(), nodes)
}

#[test]
fn a_long_baseline_costs_about_what_a_short_one_does() {
    let batches = batches();
    // warm up (allocator, caches), then the best of two runs each
    detect(&batches[..100], 6);
    let best = |n: usize| {
        let (a, nodes) = detect(&batches, n);
        let (b, _) = detect(&batches, n);
        (a.min(b), nodes)
    };
    let (short, nodes) = best(6);
    let (long, nodes_long) = best(10_000);
    // frontend, db and the 10 services in every window
    assert_eq!(nodes, (NODES + 2) * WINDOWS as usize);
    assert_eq!(nodes_long, nodes);
    // recomputing medians over the history made this ~30× slower; kept up to date, the
    // long baseline costs a little more (a deeper tree)
    assert!(
        long < short * 3,
        "baseline-windows 10000: {long:?}, 6: {short:?}"
    );
}
