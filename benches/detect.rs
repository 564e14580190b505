//! Detection cost against the length of the baselines: 1 000 windows of 50 nodes (a frontend
//! calling 48 services that each call a database), judged with `baseline-windows` 6 and
//! 10 000. The baselines keep their medians up to date, so the two cost about the same.
//!
//! Run: `cargo bench --bench detect`.

use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use detect::{DetectConfig, Detector};
use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};

const T0: i64 = 1_700_000_000_000_000;
const L: i64 = 10_000_000;
const SERVICES: usize = 48;
const WINDOWS: i64 = 1_000;

/// One batch per 10 s window: `frontend` calls each service 10 times, each service calls
/// `db` once per request; all answered 200.
fn batches() -> Vec<RecordBatch> {
    let names: Vec<String> = (0..SERVICES).map(|i| format!("svc-{i}")).collect();
    (0..WINDOWS)
        .map(|k| {
            let mut b = FlowBatchBuilder::new();
            for i in 0..10 {
                let t = T0 + k * L + i * (L / 10);
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

fn bench(c: &mut Criterion) {
    let batches = batches();
    let mut group = c.benchmark_group("detect");
    group.sample_size(10);
    group.throughput(Throughput::Elements(WINDOWS as u64));
    for baseline_windows in [6, 10_000] {
        group.bench_function(
            format!("{WINDOWS} windows of 50 nodes, baseline-windows {baseline_windows}"),
            |b| {
                b.iter(|| {
                    let mut c = DetectConfig::default();
                    c.black_hole.baseline_windows = baseline_windows;
                    let mut d = Detector::try_from(c).expect("valid config");
                    let mut nodes = 0;
                    for batch in &batches {
                        let closed = d.push(batch).expect("flow-record batch");
                        nodes += closed.iter().map(|w| w.nodes.len()).sum::<usize>();
                    }
                    nodes
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
