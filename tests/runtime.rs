//! The runtime (the `graywatch` library's pipeline) driven directly: per-input watermarks,
//! checkpoint and restore.

use arrow::array::RecordBatch;
use graywatch::pipeline::checkpoint;
use graywatch::pipeline::local::PipelineState;
use graywatch::pipeline::{DeadLetter, FlowBatch, InputId, Outputs, Pipeline, Removal, Stage};
use ingest::{Format, IngestSink, IngestStats, ReaderOptions};

use crate::util;

/// Every document the pipeline sends, as JSON, in order.
#[derive(Default)]
struct Collect {
    docs: Vec<String>,
    windows_closed: usize,
}

impl Outputs for Collect {
    type Error = std::convert::Infallible;
    fn pair_window(&mut self, w: &schemas::PairWindow) -> Result<(), Self::Error> {
        self.docs.push(serde_json::to_string(w).unwrap());
        Ok(())
    }
    fn node_window(&mut self, w: &schemas::NodeWindow) -> Result<(), Self::Error> {
        self.docs.push(serde_json::to_string(w).unwrap());
        Ok(())
    }
    fn finding(&mut self, f: &schemas::Finding) -> Result<(), Self::Error> {
        self.docs.push(serde_json::to_string(f).unwrap());
        Ok(())
    }
    fn command(&mut self, c: &schemas::RemediationCommand) -> Result<(), Self::Error> {
        self.docs.push(serde_json::to_string(c).unwrap());
        Ok(())
    }
    fn alert(&mut self, a: &schemas::Alert) -> Result<(), Self::Error> {
        self.docs.push(serde_json::to_string(a).unwrap());
        Ok(())
    }
    fn audit(&mut self, a: &schemas::AuditRecord) -> Result<(), Self::Error> {
        self.docs.push(serde_json::to_string(a).unwrap());
        Ok(())
    }
    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), Self::Error> {
        self.docs.push(format!(
            "dead letter {} {:?} {}",
            d.input, d.position, d.reason
        ));
        Ok(())
    }
    fn window_closed(&mut self, _w: schemas::Window) -> Result<(), Self::Error> {
        self.windows_closed += 1;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A batch of flow records with each row's line number.
type Lines = (RecordBatch, Vec<i64>);

/// Batches of flow records with their line numbers.
#[derive(Default)]
struct Batches(Vec<Lines>);

impl IngestSink for Batches {
    type Error = std::convert::Infallible;
    fn batch(&mut self, batch: RecordBatch, lines: &[u64]) -> Result<(), Self::Error> {
        self.0
            .push((batch, lines.iter().map(|&l| l as i64).collect()));
        Ok(())
    }
}

fn config() -> graywatch::config::Validated {
    toml::from_str::<graywatch::config::Config>(&util::landscape_config())
        .unwrap()
        .validate(None)
        .unwrap()
}

fn pipeline(c: &graywatch::config::Validated) -> Pipeline {
    Pipeline::new(c, i64::MAX)
}

/// The landscape's logs with a black hole at 120 s, split line by line between two inputs (as
/// two Kafka partitions would hold them), parsed into batches of 250 rows.
fn two_inputs() -> Vec<(InputId, Vec<Lines>)> {
    let logs = util::landscape_logs(240, "inventory", 120, 11);
    let mapping = config().mapping;
    let mut halves = [String::new(), String::new()];
    for (i, line) in logs.lines().enumerate() {
        halves[i % 2] += line;
        halves[i % 2].push('\n');
    }
    halves
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut parser = Format::Istio.parser(&mapping).unwrap();
            let mut batches = Batches::default();
            ingest::read_lines(
                "half",
                text.as_bytes(),
                parser.as_mut(),
                &ReaderOptions {
                    batch_rows: 250,
                    ..ReaderOptions::default()
                },
                &mut IngestStats::default(),
                &mut batches,
            )
            .unwrap();
            (InputId::partition("access-logs", i as i32), batches.0)
        })
        .collect()
}

/// Feeds both inputs' batches in turns; `between` runs after each batch.
fn run(
    c: &graywatch::config::Validated,
    mut between: impl FnMut(&mut Pipeline, &Collect, &[InputId]),
) -> Collect {
    let inputs = two_inputs();
    let ids: Vec<InputId> = inputs.iter().map(|(id, _)| id.clone()).collect();
    let mut p = pipeline(c);
    let mut out = Collect::default();
    for id in &ids {
        Stage::<Collect>::add_input(&mut p, id, None).unwrap();
    }
    let longest = inputs.iter().map(|(_, b)| b.len()).max().unwrap();
    for k in 0..longest {
        for (id, batches) in &inputs {
            if let Some((batch, lines)) = batches.get(k) {
                p.process(
                    id,
                    FlowBatch {
                        batch,
                        positions: Some(lines),
                    },
                    &mut out,
                )
                .unwrap();
                between(&mut p, &out, &ids);
            }
        }
    }
    for id in &ids {
        p.remove_input(id, Removal::Ended, &mut out).unwrap();
    }
    p.flush(&mut out).unwrap();
    out
}

/// A checkpoint (encoded to bytes, decoded, restored into a new pipeline) after every window
/// that closes gives exactly the output of an uninterrupted run, findings included.
#[test]
fn checkpoint_and_restore_at_every_window_changes_nothing() {
    let c = config();
    let expected = run(&c, |_, _, _| {});
    assert!(
        expected
            .docs
            .iter()
            .any(|d| d.contains("\"kind\":\"finding\"") && d.contains("\"node\":\"inventory\"")),
        "the uninterrupted run finds the black hole"
    );
    assert!(expected.windows_closed >= 24, "{}", expected.windows_closed);

    let mut closed_at_last_checkpoint = 0;
    let mut checkpoints = 0;
    let got = run(&c, |p, out, ids| {
        if out.windows_closed == closed_at_last_checkpoint {
            return;
        }
        closed_at_last_checkpoint = out.windows_closed;
        checkpoints += 1;
        let state: PipelineState = Stage::<Collect>::snapshot(p);
        let inputs: Vec<_> = ids
            .iter()
            .map(|id| (id.clone(), Stage::<Collect>::snapshot_input(p, id)))
            .collect();
        let bytes = checkpoint::encode(&(state, inputs));
        let (state, inputs): (PipelineState, Vec<(InputId, Option<_>)>) =
            checkpoint::decode(&bytes).unwrap();
        let mut fresh = pipeline(&c);
        Stage::<Collect>::restore(&mut fresh, state).unwrap();
        for (id, snap) in inputs {
            Stage::<Collect>::add_input(&mut fresh, &id, snap).unwrap();
        }
        *p = fresh;
    });
    assert!(checkpoints >= 20, "{checkpoints} checkpoints");
    assert_eq!(got.docs.len(), expected.docs.len());
    for (i, (g, e)) in got.docs.iter().zip(&expected.docs).enumerate() {
        assert_eq!(g, e, "document {i} differs");
    }
}

/// Each input has its own watermark: one input far ahead makes the other's records late
/// only for itself, and a window closes when both inputs have passed it.
#[test]
fn windows_close_when_every_busy_input_has_passed_them() {
    let c = config();
    let inputs = two_inputs();
    let mut p = pipeline(&c);
    let mut out = Collect::default();
    let (a, b) = (&inputs[0], &inputs[1]);
    for (id, _) in [a, b] {
        Stage::<Collect>::add_input(&mut p, id, None).unwrap();
    }
    // a alone, to its end: nothing closes, b has not started
    for (batch, lines) in &a.1 {
        let fb = FlowBatch {
            batch,
            positions: Some(lines),
        };
        p.process(&a.0, fb, &mut out).unwrap();
    }
    assert_eq!(out.windows_closed, 0, "b holds the watermark back");
    // b goes idle: a's watermark alone closes windows, up to a's watermark
    p.input_idle(&b.0, &mut out).unwrap();
    let closed = out.windows_closed;
    assert!(closed >= 20, "{closed}");
    let a_watermark = p.aggregate.watermark(&a.0).unwrap();
    assert_eq!(p.judge.watermark(), Some(a_watermark));
    assert!(
        p.aggregate.low_position(&a.0).is_some(),
        "a's last windows stay open"
    );
    // b wakes up with records of windows that closed without it: its partials for them are
    // late (counted), its later windows count
    for (batch, lines) in &b.1 {
        let fb = FlowBatch {
            batch,
            positions: Some(lines),
        };
        p.process(&b.0, fb, &mut out).unwrap();
    }
    for (id, _) in [a, b] {
        p.remove_input(id, Removal::Ended, &mut out).unwrap();
    }
    p.flush(&mut out).unwrap();
    assert!(p.judge.merger_counters().late_partials > 0);
    assert_eq!(p.judge.merger_counters().duplicate_partials, 0);
}
