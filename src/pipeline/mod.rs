//! The runtime that `graywatch replay` (files, stdin) and `graywatch run` (Kafka) both drive.
//!
//! ```text
//!            driver (replay: files/stdin │ run: Kafka partitions) reads clocks, does I/O
//!  lines ──▶ ingest parser ──▶ FlowBatch ──┐                    rejects ──▶ Outputs::dead_letter
//!                                          ▼
//!    stage 1  Aggregate     one PairAggregator per input, each with its own watermark
//!                                          │ Exchange: partial windows + watermark marks
//!                                          │   (Local: in process │ Kafka: repartition topic
//!                                          ▼    keyed by node)
//!    stage 2  Judge         WindowMerger ─▶ NodeDetector ─▶ Actuator
//!                                          │
//!                                          ▼ Outputs: windows, findings, commands, alerts
//!                                   JSON lines (replay) │ Kafka topics (run)
//! ```
//!
//! # The stage contract
//!
//! A [`Stage`] is stage logic: synchronous, no I/O, no clock. A driver owns the loop and calls
//! it, in this order for each input:
//!
//! 1. [`Stage::add_input`] when the input appears (a file opened, a Kafka partition assigned),
//!    with the input's saved state if the driver has one (a checkpoint, or the watermark a
//!    Kafka commit carries);
//! 2. [`Stage::process`] with each item of the input, in input order;
//! 3. [`Stage::input_idle`] when the input had nothing for `idle-timeout` (processing time,
//!    read by the driver): it stops holding the watermark back, and the windows it had open
//!    are handed over; the next [`Stage::process`] wakes it up;
//! 4. [`Stage::remove_input`] when it ends (end of file: what it holds is handed over) or is
//!    revoked (a Kafka rebalance gave it to another instance: what it holds is dropped, the
//!    new owner reads it again from the committed offset).
//!
//! At any time between calls, [`Stage::snapshot`] and [`Stage::snapshot_input`] give state to
//! checkpoint (plain data, serde) and [`Stage::restore`] puts it back.
//!
//! Event time advances with the records: stage 1 moves each input's watermark as its records
//! come, and tells stage 2 through [`Exchange::mark`]; stage 2 takes a mark as an item
//! ([`JudgeItem::Mark`]) and closes what the merged watermark allows (the shape of Arroyo's
//! `handle_watermark`). An input that goes idle marks itself idle.
//!
//! Errors: a stage returns [`StageError`]. [`StageError::Output`] is the output's own error,
//! whole (a closed stdout, a Kafka producer that gave up); [`StageError::Batch`] is a batch
//! that is not a flow-record batch (a driver bug: nothing of it was aggregated, the stage can
//! go on); [`StageError::State`] is saved state that does not fit (another window config).
//!
//! Outputs go through one trait, [`Outputs`], that `replay` implements with JSON-lines files
//! ([`jsonl::JsonLinesOutputs`]) and `run` with Kafka producers. Stage 1 talks to stage 2
//! through an [`Exchange`]: in process ([`local::Local`]) or over the repartition topic.

pub mod aggregate;
pub mod checkpoint;
pub mod jsonl;
pub mod judge;
pub mod local;
pub mod threaded;

use std::fmt;
use std::sync::Arc;

use detect::merge::Mark;
use detect::pair::PartialWindow;
use schemas::{
    Alert, AuditRecord, Finding, FlowRecord, NodeWindow, PairWindow, RemediationCommand, Window,
};
use serde::{Deserialize, Serialize};

pub use aggregate::{Aggregate, AggregateCounters, FlowBatch};
pub use judge::{Judge, JudgeCounters, JudgeItem, Ownership};
pub use local::Pipeline;

/// Names one input of the pipeline: a file (its path, `-` for stdin) or a Kafka partition
/// (`<topic>/<partition>`). Inputs come and go while the pipeline runs (files end, partitions
/// are assigned and revoked); each has its own watermark.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InputId(Arc<str>);

impl InputId {
    /// The input named `name` (a path, `-`).
    pub fn new(name: &str) -> Self {
        InputId(Arc::from(name))
    }

    /// Kafka partition `partition` of `topic`: `<topic>/<partition>`.
    pub fn partition(topic: &str, partition: i32) -> Self {
        InputId(Arc::from(format!("{topic}/{partition}")))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For a Kafka input, its topic and partition.
    pub fn topic_partition(&self) -> Option<(&str, i32)> {
        let (topic, p) = self.0.rsplit_once('/')?;
        Some((topic, p.parse().ok()?))
    }
}

impl fmt::Display for InputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A closed window as Arrow tables, in the schemas of [`detect::tables`]: the pair windows
/// this judge writes (`pairs`, `breakdown`) and the nodes it judges (`nodes`), each with the
/// baselines the window was judged against.
#[derive(Debug, Clone)]
pub struct WindowTables {
    /// The window.
    pub window: Window,
    /// [`detect::tables::pair_schema`].
    pub pairs: arrow::array::RecordBatch,
    /// [`detect::tables::node_schema`].
    pub nodes: arrow::array::RecordBatch,
    /// [`detect::tables::breakdown_schema`].
    pub breakdown: arrow::array::RecordBatch,
}

/// What a dead letter carries.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// The bytes as they arrived (a log line, a Kafka message's value).
    Bytes(&'a [u8]),
    /// A record that was parsed but could not be aggregated (late, or from the far future).
    Record(&'a FlowRecord),
}

/// Input that graywatch could not use: counted, and kept with its origin and reason (the
/// `--rejects` file of replay, the dead-letter topic of run), never dropped silently.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Where it came from.
    pub input: &'a InputId,
    /// Its position there: the 1-based line number (files) or the offset (Kafka).
    pub position: Option<i64>,
    /// Why, as a short kebab-case class (`bad-json`, `malformed`, `late`, `too-large`, …).
    pub reason: &'a str,
    /// What exactly was wrong.
    pub detail: &'a str,
    /// What it was.
    pub payload: Payload<'a>,
    /// The Kafka message's key, as it arrived (`None` for files).
    pub key: Option<&'a [u8]>,
    /// The Kafka message's headers, as they arrived (empty for files).
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Where stage 2 (and the drivers' rejects) send what the pipeline makes. `replay` writes JSON
/// lines; `run` produces to Kafka topics. The sink's own failure is its
/// [`Error`](Outputs::Error), kept whole through the stages.
pub trait Outputs {
    /// What a failing output returns.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The golden signals of one pair in a closed window.
    ///
    /// # Errors
    /// The output's (stops the run).
    fn pair_window(&mut self, w: &PairWindow) -> Result<(), Self::Error>;
    /// The pair windows of one closed window, in order: [`Outputs::pair_window`] for each
    /// unless the output does better with all of them at once (`replay`'s JSON lines
    /// serialize a large window on several threads).
    ///
    /// # Errors
    /// The output's (stops the run).
    fn pair_windows(&mut self, ws: &[&PairWindow]) -> Result<(), Self::Error> {
        ws.iter().try_for_each(|w| self.pair_window(w))
    }
    /// The inflow and outflow of one node in a closed window.
    ///
    /// # Errors
    /// The output's (stops the run).
    fn node_window(&mut self, w: &NodeWindow) -> Result<(), Self::Error>;
    /// A finding.
    ///
    /// # Errors
    /// The output's (stops the run).
    fn finding(&mut self, f: &Finding) -> Result<(), Self::Error>;
    /// A remediation command.
    ///
    /// # Errors
    /// The output's (stops the run).
    fn command(&mut self, c: &RemediationCommand) -> Result<(), Self::Error>;
    /// An alert.
    ///
    /// # Errors
    /// The output's (stops the run).
    fn alert(&mut self, a: &Alert) -> Result<(), Self::Error>;
    /// A decision of the actuator about a command (issued, proposed, approved, renewed,
    /// suppressed by a rail, revoked, expired), for the audit stream.
    ///
    /// # Errors
    /// The output's (stops the run).
    fn audit(&mut self, a: &AuditRecord) -> Result<(), Self::Error>;
    /// Input that could not be used.
    ///
    /// # Errors
    /// The output's (stops the run).
    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), Self::Error>;
    /// Whether this output takes each closed window's tables ([`Outputs::window_tables`]);
    /// they are built only when it does.
    fn wants_tables(&self) -> bool {
        false
    }
    /// Whether a large closed window's pair windows ([`Outputs::pair_windows`], at least
    /// [`judge::BESIDE_PAIR_WINDOWS`]) may be written while another thread judges the window:
    /// the same calls in the same order, with detection running at the same time. For an
    /// output whose writing of window aggregates costs as much as judging them (`replay`'s
    /// JSON lines with more than one thread); the judge then also finishes such a window's
    /// pair states on two threads. Default: no, on one thread the window is finished, judged,
    /// then written.
    fn writes_beside_judging(&self) -> bool {
        false
    }
    /// The closed window as tables, sent before its findings (for the archive and the
    /// golden-signal metrics).
    ///
    /// # Errors
    /// The output's (stops the run).
    fn window_tables(&mut self, _tables: &WindowTables) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Everything about `window` has been sent (a moment to make it visible: flush a file).
    ///
    /// # Errors
    /// The output's (stops the run).
    fn window_closed(&mut self, _window: Window) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Every input has gone idle (called once when they all have, by `replay`'s driver): a
    /// moment to make what is buffered readable (the archive completes its files, so that
    /// a followed stream's windows can be queried while it is quiet).
    ///
    /// # Errors
    /// The output's (stops the run).
    fn idle(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Makes everything sent so far durable or delivered (before offsets are committed).
    ///
    /// # Errors
    /// The output's; nothing may be committed then.
    fn flush(&mut self) -> Result<(), Self::Error>;
}

/// How stage 1 hands its work to stage 2.
pub trait Exchange {
    /// What a failing exchange returns.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A window that closed for input `from`, with its pairs' mergeable aggregates.
    ///
    /// # Errors
    /// The exchange's (stops the run).
    fn partial_window(&mut self, from: &InputId, partial: PartialWindow)
    -> Result<(), Self::Error>;
    /// Input `from`'s progress: its watermark, and whether it is idle.
    ///
    /// # Errors
    /// The exchange's (stops the run).
    fn mark(&mut self, from: &InputId, mark: Mark) -> Result<(), Self::Error>;
    /// A record stage 1 could not aggregate.
    ///
    /// # Errors
    /// The exchange's (stops the run).
    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), Self::Error>;
}

/// Why an input left the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// It ended (end of a file): what it holds is handed over.
    Ended,
    /// It was revoked (a Kafka partition given to another instance): what it holds is
    /// dropped; the new owner reads it again from the committed offset. Stage 2 is not told:
    /// through a repartition topic the new owner speaks for the input; a stage 2 in the same
    /// process goes on waiting for it until its driver releases it (`Judge`'s
    /// `remove_input`), as `run` does when it has not come back within `idle-timeout`.
    Revoked,
}

/// A stage's failure (see the [module docs](self)).
#[derive(Debug, thiserror::Error)]
pub enum StageError<E> {
    /// A batch that is not a flow-record batch (a driver bug; nothing of it was aggregated).
    #[error("batch from {input}: {source}")]
    Batch {
        /// Its input.
        input: InputId,
        /// What is wrong with it.
        #[source]
        source: detect::Error,
    },
    /// Saved state that can't be restored.
    #[error("restoring {what}: {source}")]
    State {
        /// Whose state.
        what: String,
        /// Why not.
        #[source]
        source: detect::Error,
    },
    /// The output (or exchange) failed: its error.
    #[error(transparent)]
    Output(E),
}

impl<E> StageError<StageError<E>> {
    /// One level of stage error: an exchange that is itself a stage's input passes that
    /// stage's errors on.
    pub fn flatten(self) -> StageError<E> {
        match self {
            StageError::Batch { input, source } => StageError::Batch { input, source },
            StageError::State { what, source } => StageError::State { what, source },
            StageError::Output(inner) => inner,
        }
    }
}

/// Stage logic driven by a runtime loop; see the [module docs](self) for who calls what when.
/// `O` is where the stage sends what it makes.
pub trait Stage<O: ?Sized> {
    /// What the stage takes in.
    type Item<'a>;
    /// What a failing call returns.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The state of one input, to checkpoint.
    type InputState: Serialize + for<'de> Deserialize<'de>;
    /// The stage's state not tied to an input, to checkpoint.
    type State: Serialize + for<'de> Deserialize<'de>;

    /// Input `input` appears, with its saved state if any.
    ///
    /// # Errors
    /// [`StageError::State`] when the state can't be restored (the input starts empty then
    /// is *not* done: the driver decides).
    fn add_input(
        &mut self,
        input: &InputId,
        state: Option<Self::InputState>,
    ) -> Result<(), Self::Error>;

    /// One item of input `input`, in input order.
    ///
    /// # Errors
    /// See [`StageError`].
    fn process(
        &mut self,
        input: &InputId,
        item: Self::Item<'_>,
        out: &mut O,
    ) -> Result<(), Self::Error>;

    /// Input `input` has had nothing for a while: it must not hold the watermark back.
    ///
    /// # Errors
    /// The output's.
    fn input_idle(&mut self, _input: &InputId, _out: &mut O) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Input `input` leaves (see [`Removal`]).
    ///
    /// # Errors
    /// The output's.
    fn remove_input(
        &mut self,
        _input: &InputId,
        _why: Removal,
        _out: &mut O,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The state of input `input`, to checkpoint (`None` for an unknown input).
    fn snapshot_input(&self, input: &InputId) -> Option<Self::InputState>;

    /// The state not tied to an input, to checkpoint.
    fn snapshot(&self) -> Self::State;

    /// Puts checkpointed state back (before inputs are added).
    ///
    /// # Errors
    /// [`StageError::State`] when it does not fit.
    fn restore(&mut self, state: Self::State) -> Result<(), Self::Error>;
}
