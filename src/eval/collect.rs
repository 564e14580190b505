//! The whole pipeline over flow-record batches of one input, in memory: what the evaluations
//! run (the same stages as `replay` and `run`, with every finding kept).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use arrow::array::RecordBatch;
use schemas::{Alert, Finding, NodeWindow, PairWindow, RemediationCommand, Window};

use crate::config::Validated;
use crate::pipeline::{DeadLetter, FlowBatch, InputId, Outputs, Pipeline, Removal, Stage};

/// What a run produced.
#[derive(Debug, Default)]
pub struct Collected {
    /// Every finding, in window order.
    pub findings: Vec<Finding>,
    /// Windows closed, in order.
    pub windows: Vec<Window>,
    /// Records not aggregated (late, ahead, malformed), count.
    pub dead_letters: u64,
    /// The call graph: per destination, every source seen calling it.
    pub callers: BTreeMap<String, BTreeSet<String>>,
}

impl Outputs for Collected {
    type Error = Infallible;

    fn pair_window(&mut self, p: &PairWindow) -> Result<(), Infallible> {
        // an allocation per new edge, not per window
        let known = self
            .callers
            .get(&p.destination)
            .is_some_and(|c| c.contains(&p.source));
        if !known {
            self.callers
                .entry(p.destination.clone())
                .or_default()
                .insert(p.source.clone());
        }
        Ok(())
    }

    fn node_window(&mut self, _: &NodeWindow) -> Result<(), Infallible> {
        Ok(())
    }

    fn finding(&mut self, f: &Finding) -> Result<(), Infallible> {
        self.findings.push(f.clone());
        Ok(())
    }

    fn command(&mut self, _: &RemediationCommand) -> Result<(), Infallible> {
        Ok(())
    }

    fn alert(&mut self, _: &Alert) -> Result<(), Infallible> {
        Ok(())
    }

    fn audit(&mut self, _: &schemas::AuditRecord) -> Result<(), Infallible> {
        Ok(())
    }

    fn dead_letter(&mut self, _: &DeadLetter<'_>) -> Result<(), Infallible> {
        self.dead_letters += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    fn window_closed(&mut self, window: Window) -> Result<(), Infallible> {
        self.windows.push(window);
        Ok(())
    }
}

/// Runs `batches` (flow records, roughly in start order) through the pipeline of `config` as
/// one input, to the end.
///
/// # Errors
/// A batch that is not a flow-record batch.
pub fn run_batches(
    config: &Validated,
    batches: impl IntoIterator<Item = RecordBatch>,
) -> anyhow::Result<Collected> {
    let mut pipeline = Pipeline::new(config, i64::MAX);
    let id = InputId::new("eval");
    let mut out = Collected::default();
    Stage::<Collected>::add_input(&mut pipeline, &id, None)?;
    for batch in batches {
        pipeline.process(
            &id,
            FlowBatch {
                batch: &batch,
                positions: None,
            },
            &mut out,
        )?;
    }
    pipeline.remove_input(&id, Removal::Ended, &mut out)?;
    pipeline.flush(&mut out)?;
    Ok(out)
}
