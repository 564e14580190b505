//! Stage 1: pair aggregation per input. Each input (a file, a Kafka partition) has its own
//! [`PairAggregator`] and watermark (the Kafka Streams model: an input is a unit of state); a
//! window that closes for an input goes to the [`Exchange`] as a partial window, followed by
//! the input's watermark mark.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use detect::merge::Mark;
use detect::pair::{AggregatorSnapshot, Dropped, PairAggregator, WindowSpec};
use serde::{Deserialize, Serialize};

use super::{DeadLetter, Exchange, InputId, Payload, Removal, Stage, StageError};

/// A batch of flow records from one input, with each row's position there when the driver
/// tracks them (line numbers of a file, Kafka offsets; one per row, non-decreasing).
#[derive(Debug, Clone, Copy)]
pub struct FlowBatch<'a> {
    /// Flow records (`schemas::flow_record_schema`).
    pub batch: &'a RecordBatch,
    /// Position of each row in its input.
    pub positions: Option<&'a [i64]>,
}

/// Counters of stage 1 over every input it has had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateCounters {
    /// Flow records taken in.
    pub records: u64,
    /// Records that arrived after their window had closed for their input.
    pub late_records: u64,
    /// Of the late records, those whose duration was at least the allowed lateness (slow
    /// requests logged at completion, rather than a clock or shipping problem).
    pub late_slow: u64,
    /// Records that started after the event-time bound (far future).
    pub future_records: u64,
    /// Records whose time in flight was cut after `MAX_SPAN_WINDOWS` windows.
    pub clamped_records: u64,
    /// Records set aside for starting more than `[detect.window] max-ahead` after their
    /// input's newest start, with no jump confirmed.
    #[serde(default)]
    pub ahead_records: u64,
    /// Records of new pairs in windows already holding `[detect.window] max-pairs` pairs,
    /// counted under `(other)`.
    #[serde(default)]
    pub overflow_records: u64,
    /// Windows handed over (summed over inputs).
    pub partial_windows: u64,
    /// Of the late records, those without a duration (a format that logs none, as NGINX's
    /// `combined`): how long they took can't be told.
    #[serde(default)]
    pub late_untimed: u64,
}

impl AggregateCounters {
    /// Of the late records, those that took less than the allowed lateness: slowness does
    /// not explain them, their lines came out of time order.
    pub fn late_quick(&self) -> u64 {
        self.late_records
            .saturating_sub(self.late_slow)
            .saturating_sub(self.late_untimed)
    }
}

#[derive(Debug)]
struct Task {
    agg: PairAggregator,
    idle: bool,
    /// The last mark sent.
    marked: Option<Mark>,
    /// Its aggregator's counters when it was added (restored inputs bring theirs).
    base: detect::pair::AggregatorCounters,
}

/// Stage 1: one [`PairAggregator`] per input. See the [module docs](self).
#[derive(Debug)]
pub struct Aggregate {
    spec: WindowSpec,
    not_after_us: i64,
    tasks: BTreeMap<InputId, Task>,
    counters: AggregateCounters,
}

impl Aggregate {
    /// A stage with no inputs, for windows of `spec`; records starting after `not_after_us`
    /// (µs since the epoch, the driver's clock plus a margin) are set aside as future.
    pub fn new(spec: WindowSpec, not_after_us: i64) -> Self {
        Aggregate {
            spec,
            not_after_us,
            tasks: BTreeMap::new(),
            counters: AggregateCounters::default(),
        }
    }

    /// The window geometry.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Counters so far.
    pub fn counters(&self) -> AggregateCounters {
        let mut c = self.counters;
        for t in self.tasks.values() {
            let now = t.agg.counters();
            c.records += now.records - t.base.records;
            c.late_records += now.late_records - t.base.late_records;
            c.future_records += now.future_records - t.base.future_records;
            c.clamped_records += now.clamped_records - t.base.clamped_records;
            c.ahead_records += now.ahead_records - t.base.ahead_records;
            c.overflow_records += now.overflow_records - t.base.overflow_records;
        }
        c
    }

    /// The newest start seen from `input`, µs since the epoch (how far it has got).
    pub fn newest(&self, input: &InputId) -> Option<i64> {
        self.tasks.get(input).and_then(|t| t.agg.newest())
    }

    /// The watermark of `input`, µs since the epoch.
    pub fn watermark(&self, input: &InputId) -> Option<i64> {
        self.tasks.get(input).and_then(|t| t.agg.watermark())
    }

    /// The lowest position of a record of `input` still held in an open window: where to read
    /// the input again from to rebuild its state (see `PairAggregator::low_position`).
    pub fn low_position(&self, input: &InputId) -> Option<i64> {
        self.tasks.get(input).and_then(|t| t.agg.low_position())
    }

    /// Windows and pair-windows open over all inputs.
    pub fn open_state(&self) -> (usize, usize) {
        self.tasks.values().fold((0, 0), |(w, p), t| {
            (w + t.agg.open_windows(), p + t.agg.open_pairs())
        })
    }

    fn task(&mut self, input: &InputId) -> &mut Task {
        if !self.tasks.contains_key(input) {
            self.insert(input, PairAggregator::new(self.spec));
        }
        self.tasks.get_mut(input).expect("inserted above")
    }

    /// Adds `input` with `agg` (its counters so far count as already reported).
    fn insert(&mut self, input: &InputId, mut agg: PairAggregator) {
        agg.set_not_after(self.not_after_us);
        let base = *agg.counters();
        let task = Task {
            agg,
            idle: false,
            marked: None,
            base,
        };
        self.tasks.insert(input.clone(), task);
    }

    /// Counts the windows `streamed` sent and returns its failure; then sends the input's
    /// mark if it changed (or if windows went with marks of their own).
    fn mark<X: Exchange + ?Sized>(
        &mut self,
        input: &InputId,
        streamed: Streamed<StageError<X::Error>>,
        out: &mut X,
    ) -> Result<(), StageError<X::Error>> {
        self.counters.partial_windows += streamed.windows;
        if let Some(e) = streamed.failed {
            return Err(e);
        }
        let task = self.tasks.get_mut(input).expect("a known input");
        let mark = Mark {
            watermark_us: task.agg.watermark(),
            idle: task.idle,
        };
        if streamed.windows > 0 || task.marked != Some(mark) {
            task.marked = Some(mark);
            out.mark(input, mark).map_err(StageError::Output)?;
        }
        Ok(())
    }

    /// Closes every window of `input` (`end`: and takes its held records, see
    /// `PairAggregator::flush_each`), windows streamed as they are made, then its mark.
    fn flush<X: Exchange + ?Sized>(
        &mut self,
        input: &InputId,
        end: bool,
        out: &mut X,
    ) -> Result<(), StageError<X::Error>> {
        let task = self.tasks.get_mut(input).expect("a known input");
        let mut streamed = Streamed::default();
        task.agg.flush_each(end, |p| streamed.send(input, p, out));
        self.report_set_aside(input, out)?;
        self.mark(input, streamed, out)
    }

    /// Reports the records of earlier batches that the input's aggregator held back and then
    /// did not aggregate.
    fn report_set_aside<X: Exchange + ?Sized>(
        &mut self,
        input: &InputId,
        out: &mut X,
    ) -> Result<(), StageError<X::Error>> {
        let task = self.tasks.get_mut(input).expect("a known input");
        for aside in task.agg.take_set_aside() {
            let (reason, detail) = why(aside.why);
            out.dead_letter(&DeadLetter {
                input,
                position: aside.position,
                reason,
                detail,
                payload: Payload::Record(&aside.record),
                key: None,
                headers: &[],
            })
            .map_err(StageError::Output)?;
        }
        Ok(())
    }

    /// Reports the rows of `batch` its aggregator did not aggregate.
    fn report_dropped<X: Exchange + ?Sized>(
        &mut self,
        input: &InputId,
        batch: &FlowBatch<'_>,
        out: &mut X,
    ) -> Result<(), StageError<X::Error>> {
        self.report_set_aside(input, out)?;
        let task = self.tasks.get(input).expect("a known input");
        let dropped = task.agg.dropped_rows();
        if dropped.is_empty() {
            return Ok(());
        }
        let durations = batch
            .batch
            .column_by_name(schemas::flow::columns::DURATION)
            .and_then(|c| {
                c.as_primitive_opt::<arrow::datatypes::UInt64Type>()
                    .cloned()
            });
        let lateness = u64::try_from(self.spec.lateness_us()).unwrap_or(0);
        let records = schemas::flow_records(batch.batch).map_err(|e| StageError::Batch {
            input: input.clone(),
            source: e.into(),
        })?;
        for &(row, why) in dropped {
            let row = row as usize;
            if why == Dropped::Late {
                match durations.as_ref().filter(|d| d.is_valid(row)) {
                    Some(d) if d.value(row) >= lateness => self.counters.late_slow += 1,
                    Some(_) => {}
                    None => self.counters.late_untimed += 1,
                }
            }
            let (reason, detail) = self::why(why);
            out.dead_letter(&DeadLetter {
                input,
                position: batch.positions.map(|p| p[row]),
                reason,
                detail,
                payload: Payload::Record(&records[row]),
                key: None,
                headers: &[],
            })
            .map_err(StageError::Output)?;
        }
        Ok(())
    }
}

/// Closed windows of one input sent to the exchange as its aggregator makes them, each
/// followed by a mark at its end (windows come oldest first), so that stage 2 can close and
/// free one before the next is made. After a failure nothing more is sent.
struct Streamed<E> {
    windows: u64,
    failed: Option<E>,
}

impl<E> Default for Streamed<E> {
    fn default() -> Self {
        Streamed {
            windows: 0,
            failed: None,
        }
    }
}

impl<O: std::error::Error> Streamed<StageError<O>> {
    fn send<X: Exchange<Error = O> + ?Sized>(
        &mut self,
        input: &InputId,
        p: detect::pair::PartialWindow,
        out: &mut X,
    ) {
        if self.failed.is_some() {
            return;
        }
        let end = p.window.end_us;
        let mark = Mark {
            watermark_us: Some(end),
            idle: false,
        };
        match out
            .partial_window(input, p)
            .and_then(|()| out.mark(input, mark))
        {
            Ok(()) => self.windows += 1,
            Err(e) => self.failed = Some(StageError::Output(e)),
        }
    }
}

/// The dead letter's reason and detail for a record not aggregated.
fn why(dropped: Dropped) -> (&'static str, &'static str) {
    match dropped {
        Dropped::Late => (
            "late",
            "its window had closed: the watermark was past its end",
        ),
        Dropped::Future => (
            "future",
            "starts more than a day after this machine's clock",
        ),
        Dropped::Ahead => (
            "ahead",
            "starts more than [detect.window] max-ahead after its input's newest start, and \
             the records after it did not confirm the jump",
        ),
    }
}

impl<X: Exchange + ?Sized> Stage<X> for Aggregate {
    type Item<'a> = FlowBatch<'a>;
    type Error = StageError<X::Error>;
    type InputState = AggregatorSnapshot;
    type State = AggregateCounters;

    fn add_input(
        &mut self,
        input: &InputId,
        state: Option<AggregatorSnapshot>,
    ) -> Result<(), Self::Error> {
        let Some(state) = state else {
            self.task(input);
            return Ok(());
        };
        let agg =
            PairAggregator::restore(self.spec, state).map_err(|source| StageError::State {
                what: format!("input {input}"),
                source,
            })?;
        self.insert(input, agg);
        Ok(())
    }

    fn process(
        &mut self,
        input: &InputId,
        item: FlowBatch<'_>,
        out: &mut X,
    ) -> Result<(), Self::Error> {
        let task = self.task(input);
        task.idle = false;
        let mut streamed = Streamed::default();
        task.agg
            .push_at_each(item.batch, item.positions, |p| streamed.send(input, p, out))
            .map_err(|source| StageError::Batch {
                input: input.clone(),
                source,
            })?;
        self.report_dropped(input, &item, out)?;
        self.mark(input, streamed, out)
    }

    fn input_idle(&mut self, input: &InputId, out: &mut X) -> Result<(), Self::Error> {
        let task = self.task(input);
        if task.idle {
            return Ok(());
        }
        task.idle = true;
        self.flush(input, false, out)
    }

    fn remove_input(
        &mut self,
        input: &InputId,
        why: Removal,
        out: &mut X,
    ) -> Result<(), Self::Error> {
        match why {
            Removal::Ended => {
                let task = self.task(input);
                task.idle = true;
                self.flush(input, true, out)?;
            }
            Removal::Revoked => {}
        }
        if let Some(t) = self.tasks.remove(input) {
            let c = t.agg.counters();
            let k = &mut self.counters;
            k.records += c.records - t.base.records;
            k.late_records += c.late_records - t.base.late_records;
            k.future_records += c.future_records - t.base.future_records;
            k.clamped_records += c.clamped_records - t.base.clamped_records;
            k.ahead_records += c.ahead_records - t.base.ahead_records;
            k.overflow_records += c.overflow_records - t.base.overflow_records;
        }
        Ok(())
    }

    fn snapshot_input(&self, input: &InputId) -> Option<AggregatorSnapshot> {
        self.tasks.get(input).map(|t| t.agg.snapshot())
    }

    fn snapshot(&self) -> AggregateCounters {
        self.counters()
    }

    fn restore(&mut self, state: AggregateCounters) -> Result<(), Self::Error> {
        // inputs restored after this bring their aggregators' counters as their `base`: only
        // what they count from now on is added
        self.counters = state;
        Ok(())
    }
}
