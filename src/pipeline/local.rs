//! Both stages in one process: stage 1's partial windows go straight into stage 2.

use detect::merge::Mark;
use detect::pair::{AggregatorSnapshot, PartialWindow};
use serde::{Deserialize, Serialize};

use super::aggregate::AggregateCounters;
use super::judge::JudgeState;
use super::{
    Aggregate, DeadLetter, Exchange, FlowBatch, InputId, Judge, JudgeItem, Outputs, Removal, Stage,
    StageError,
};

/// An [`Exchange`] that hands stage 1's work to a [`Judge`] in the same process, which sends
/// what it makes to `out`.
pub struct Local<'a, O: ?Sized> {
    /// Stage 2.
    pub judge: &'a mut Judge,
    /// Where stage 2 writes.
    pub out: &'a mut O,
}

impl<O: Outputs + ?Sized> Exchange for Local<'_, O> {
    type Error = StageError<O::Error>;

    fn partial_window(
        &mut self,
        from: &InputId,
        partial: PartialWindow,
    ) -> Result<(), Self::Error> {
        self.judge
            .process(from, JudgeItem::Partial(partial), self.out)
    }

    fn mark(&mut self, from: &InputId, mark: Mark) -> Result<(), Self::Error> {
        self.judge.process(from, JudgeItem::Mark(mark), self.out)
    }

    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), Self::Error> {
        self.out.dead_letter(d).map_err(StageError::Output)
    }
}

/// The whole pipeline in one process: [`Aggregate`] (stage 1, one aggregator per input) wired
/// to a [`Judge`] (stage 2) through [`Local`]. What `replay` drives, and `run` without
/// `[scale-out]`.
#[derive(Debug)]
pub struct Pipeline {
    /// Stage 1.
    pub aggregate: Aggregate,
    /// Stage 2.
    pub judge: Judge,
}

/// The checkpointed state of a [`Pipeline`] not tied to an input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineState {
    /// Stage 1's counters.
    pub aggregate: AggregateCounters,
    /// Stage 2.
    pub judge: JudgeState,
}

impl Pipeline {
    /// Both stages for `config`, stage 2 owning every node and writing window aggregates;
    /// records starting after `not_after_us` (µs since the epoch) are set aside as future.
    pub fn new(config: &crate::config::Validated, not_after_us: i64) -> Self {
        Pipeline {
            aggregate: Aggregate::new(config.window, not_after_us),
            judge: config.judge(super::Ownership::All, true),
        }
    }

    /// Runs `f` with stage 1 and the exchange to stage 2 in this process; one level of error.
    fn local<O: Outputs + ?Sized, R>(
        &mut self,
        out: &mut O,
        f: impl FnOnce(&mut Aggregate, &mut Local<'_, O>) -> Result<R, StageError<StageError<O::Error>>>,
    ) -> Result<R, StageError<O::Error>> {
        let mut local = Local {
            judge: &mut self.judge,
            out,
        };
        f(&mut self.aggregate, &mut local).map_err(StageError::flatten)
    }

    /// End of every input: closes every window still open in stage 2.
    ///
    /// # Errors
    /// The output's.
    pub fn flush<O: Outputs + ?Sized>(&mut self, out: &mut O) -> Result<(), StageError<O::Error>> {
        self.judge.flush(out)
    }
}

impl<O: Outputs + ?Sized> Stage<O> for Pipeline {
    type Item<'a> = FlowBatch<'a>;
    type Error = StageError<O::Error>;
    type InputState = AggregatorSnapshot;
    type State = PipelineState;

    fn add_input(
        &mut self,
        input: &InputId,
        state: Option<AggregatorSnapshot>,
    ) -> Result<(), Self::Error> {
        <Judge as Stage<O>>::add_input(&mut self.judge, input, None)?;
        <Aggregate as Stage<Local<'_, O>>>::add_input(&mut self.aggregate, input, state)
            .map_err(StageError::flatten)
    }

    fn process(
        &mut self,
        input: &InputId,
        item: FlowBatch<'_>,
        out: &mut O,
    ) -> Result<(), Self::Error> {
        self.local(out, |agg, x| agg.process(input, item, x))
    }

    fn input_idle(&mut self, input: &InputId, out: &mut O) -> Result<(), Self::Error> {
        self.local(out, |agg, x| agg.input_idle(input, x))
    }

    fn remove_input(
        &mut self,
        input: &InputId,
        why: Removal,
        out: &mut O,
    ) -> Result<(), Self::Error> {
        self.local(out, |agg, x| agg.remove_input(input, why, x))
    }

    fn snapshot_input(&self, input: &InputId) -> Option<AggregatorSnapshot> {
        <Aggregate as Stage<Local<'_, O>>>::snapshot_input(&self.aggregate, input)
    }

    fn snapshot(&self) -> PipelineState {
        PipelineState {
            aggregate: <Aggregate as Stage<Local<'_, O>>>::snapshot(&self.aggregate),
            judge: <Judge as Stage<O>>::snapshot(&self.judge),
        }
    }

    fn restore(&mut self, state: PipelineState) -> Result<(), Self::Error> {
        <Aggregate as Stage<Local<'_, O>>>::restore(&mut self.aggregate, state.aggregate)
            .map_err(StageError::flatten)?;
        <Judge as Stage<O>>::restore(&mut self.judge, state.judge)
    }
}
