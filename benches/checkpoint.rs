//! Checkpoint save and restore of 100 k active pairs: how long `graywatch run` pauses for a
//! checkpoint, and how long a restart takes to get its state back.
//!
//! State (generated deterministically): one input whose open window holds 100 000 pairs
//! (400 sources × 250 destinations) with 8 requests each (durations kept raw), of which 1 000
//! busy pairs have 600 requests each (durations in an HDR histogram); three closed windows
//! of 2 000 pairs before it gave their nodes baselines. Benches:
//!
//! - `save`: snapshot of the pipeline and the input, MessagePack encoding, write, fsync,
//!   rename (`CheckpointDir::save`);
//! - `restore`: read, CRC check, decoding, rebuilding the aggregator and stage 2.
//!
//! The file's size is printed. Target: ≤ 1 s each on this 2-core machine. Run:
//! `cargo bench --bench checkpoint`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use detect::pair::AggregatorSnapshot;
use graywatch::pipeline::checkpoint::CheckpointDir;
use graywatch::pipeline::local::PipelineState;
use graywatch::pipeline::{DeadLetter, FlowBatch, InputId, Outputs, Pipeline, Stage};
use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};

/// Discards everything.
struct Nowhere;

impl Outputs for Nowhere {
    type Error = std::convert::Infallible;
    fn pair_window(&mut self, _: &schemas::PairWindow) -> Result<(), Self::Error> {
        Ok(())
    }
    fn node_window(&mut self, _: &schemas::NodeWindow) -> Result<(), Self::Error> {
        Ok(())
    }
    fn finding(&mut self, _: &schemas::Finding) -> Result<(), Self::Error> {
        Ok(())
    }
    fn command(&mut self, _: &schemas::RemediationCommand) -> Result<(), Self::Error> {
        Ok(())
    }
    fn alert(&mut self, _: &schemas::Alert) -> Result<(), Self::Error> {
        Ok(())
    }
    fn audit(&mut self, _: &schemas::AuditRecord) -> Result<(), Self::Error> {
        Ok(())
    }
    fn dead_letter(&mut self, _: &DeadLetter<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

type Saved = (PipelineState, Vec<(InputId, Option<AggregatorSnapshot>)>);

const T0: i64 = 1_700_000_000_000_000;
const SOURCES: usize = 400;
const DESTINATIONS: usize = 250;

fn config() -> graywatch::config::Validated {
    graywatch::config::Config::default()
        .validate(None)
        .expect("defaults are valid")
}

fn pipeline(c: &graywatch::config::Validated) -> Pipeline {
    Pipeline::new(c, i64::MAX)
}

/// The state described in the module docs, in a pipeline.
fn state(c: &graywatch::config::Validated) -> (Pipeline, InputId, usize) {
    let mut p = pipeline(c);
    let input = InputId::new("access-logs/0");
    Stage::<Nowhere>::add_input(&mut p, &input, None).expect("add input");
    let src: Vec<String> = (0..SOURCES).map(|i| format!("src-{i:03}")).collect();
    let dst: Vec<String> = (0..DESTINATIONS).map(|i| format!("dst-{i:03}")).collect();
    let push = |p: &mut Pipeline, records: &mut dyn Iterator<Item = (i64, usize, u64)>| {
        let mut b = FlowBatchBuilder::new();
        for (t, pair, d) in records {
            let mut r = FlowRecordRef::new(
                t,
                &src[pair / DESTINATIONS],
                &dst[pair % DESTINATIONS],
                Reporter::Envoy,
            );
            r.duration_us = Some(d);
            r.status = Some(200);
            b.append(&r);
            if b.len() == 8192 {
                let batch = b.finish();
                let fb = FlowBatch {
                    batch: &batch,
                    positions: None,
                };
                p.process(&input, fb, &mut Nowhere).expect("process");
            }
        }
        let batch = b.finish();
        let fb = FlowBatch {
            batch: &batch,
            positions: None,
        };
        p.process(&input, fb, &mut Nowhere).expect("process");
    };
    // three windows of 2 000 pairs: node baselines
    push(
        &mut p,
        &mut (0..60_000).map(|i| (T0 + i as i64 * 500, (i * 37) % 2_000, 5_000)),
    );
    // the open window [40 s, 50 s): 100 k pairs × 8, 1 000 of them × 600
    let start = T0 + 40_000_000;
    let pairs = SOURCES * DESTINATIONS;
    let quiet = (0..pairs * 8).map(|i| {
        (
            start + (i as i64 % 9_000_000),
            i % pairs,
            1_000 + i as u64 % 90_000,
        )
    });
    let busy = (0..1_000 * 600).map(|i| {
        (
            start + 9_000_000 + (i as i64 % 900_000),
            (i % 1_000) * 97,
            2_000 + i as u64 % 400_000,
        )
    });
    push(&mut p, &mut quiet.chain(busy));
    let open = p.aggregate.open_state().1;
    (p, input, open)
}

fn bench(c: &mut Criterion) {
    let config = config();
    let (p, input, open) = state(&config);
    let dir = tempfile::tempdir().expect("temp dir");
    let cp = CheckpointDir::open(dir.path()).expect("checkpoint dir");
    let snapshot = |p: &Pipeline| -> Saved {
        (
            Stage::<Nowhere>::snapshot(p),
            vec![(input.clone(), Stage::<Nowhere>::snapshot_input(p, &input))],
        )
    };
    let saved = cp.save(&snapshot(&p)).expect("save");
    eprintln!(
        "state: {open} open pair-windows, {} nodes with a baseline; checkpoint {} bytes ({:.0} bytes per open pair-window)",
        p.judge.baselines(),
        saved.bytes,
        saved.bytes as f64 / open as f64
    );
    let mut g = c.benchmark_group("checkpoint 100k pairs");
    g.sample_size(10);
    g.bench_function("save", |b| {
        b.iter(|| black_box(cp.save(&snapshot(&p)).expect("save")))
    });
    g.bench_function("restore", |b| {
        b.iter(|| {
            let (state, inputs): Saved = cp.load().expect("load").expect("a checkpoint");
            let mut fresh = pipeline(&config);
            Stage::<Nowhere>::restore(&mut fresh, state).expect("restore");
            for (id, s) in inputs {
                Stage::<Nowhere>::add_input(&mut fresh, &id, s).expect("add input");
            }
            assert_eq!(fresh.aggregate.open_state().1, open);
            black_box(fresh)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
