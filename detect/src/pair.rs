//! Step 1 of detection: pair aggregation of one input. Flow-record batches in, each closed
//! window's mergeable pair aggregates ([`PartialWindow`]) out; [`PartialWindow::finish`] (or
//! [`crate::merge::WindowMerger`], for several inputs) turns them into [`PairWindow`]s.
//!
//! # Windows and watermark
//!
//! Windows are tumbling, `[k·L, (k+1)·L)` µs since the epoch, by the record's `start_us`. Each
//! input (a file, a Kafka partition) has its own watermark: the newest trusted `start_us` seen
//! so far in it minus the allowed lateness, advanced record by record in input order, so the
//! result does not depend on where the input was cut into batches. A record whose start window
//! ends at or before the watermark is *late*: it is counted in
//! [`PairAggregator::late_records`] and not counted in its start window (its time in flight
//! still counts in the later windows that are open). After each batch, every open window whose
//! end is at or before the watermark closes and is handed over, oldest first. A window is open
//! only once some record touched it; windows nobody touched are not reported.
//!
//! The watermark is robust to outliers: a record starting more than `max-ahead` after the
//! newest trusted start is *held back* (not aggregated, not moving the watermark). When
//! `ahead-confirm` such records come in a row, the input really moved on (it resumed after a
//! gap) and they are aggregated; when a record within reach comes first, they were outliers (a
//! writer with a bad clock, a corrupt or crafted timestamp) and are *set aside*: counted in
//! [`AggregatorCounters::ahead_records`] and returned by [`PairAggregator::take_set_aside`] for
//! the dead letters. An input's first `ahead-confirm` records are held too, and those more than
//! `max-ahead` after the earliest of them are treated the same way, so an input's first
//! records cannot be the outliers that make every other record late. At the end of input the
//! held records are aggregated (nothing came to contradict them); an input that goes idle
//! keeps holding them.
//!
//! Positions: given each row's position in its input (a Kafka offset), the aggregator knows
//! the lowest position still held in an open window ([`PairAggregator::low_position`]):
//! reading the input again from there, with the watermark it had, rebuilds exactly the open
//! windows. That is what a Kafka consumer commits, so that a partition that moves to another
//! instance takes no half-window with it.
//!
//! # Golden signals of one pair in one window
//!
//! * `requests`: records that *start* in the window; `rate_rps` = requests ÷ L (s).
//! * `errors`: requests for which [`crate::is_error`] holds; `error_ratio` = errors ÷ requests.
//! * `latency`: p50/p90/p99 of the durations of those requests (records without a duration are
//!   left out) from an HDR histogram (`Histogram<u32>`, 2 significant digits, auto-resize);
//!   a quantile is the histogram's highest value equivalent to the exact one (within 1 %),
//!   capped at `max_us`, which is exact. The first [`RAW_LATENCY_VALUES`] durations of a
//!   pair-window are kept raw (most pairs see few requests per window); their quantiles are the
//!   histogram's highest equivalent of the value at rank ⌈q·n⌉, which is exactly what
//!   `Histogram::value_at_quantile` answers, without a histogram per quiet pair.
//! * `concurrency_mean`: Σ over requests of |[start, start + duration) ∩ window| ÷ L. A request
//!   that spans several windows adds its overlap to every one of them, creating that pair's
//!   state in those windows (with `requests` 0) if needed. Past its start window, such a
//!   request is kept as one *in-flight* entry (pair, end, position) whose share is added to
//!   each window as it closes, so it costs memory once, not once per window it spans. Records
//!   without a duration add nothing. At most [`MAX_SPAN_WINDOWS`] windows count a request's
//!   time in flight: longer requests are cut there and counted in
//!   [`AggregatorCounters::clamped_records`].
//! * `concurrency_peak`: the window is cut into L ÷ resolution slots; a request is in flight in
//!   every slot its interval touches (a zero-duration request touches the slot of its start);
//!   the peak is the largest number of requests in flight in one slot. Kept as a difference
//!   array, allocated only once a pair-window has more than 4 requests that cover the window
//!   partially (requests covering the whole window are a counter).
//! * `bytes_in` = Σ `bytes_received`, `bytes_out` = Σ `bytes_sent` of the requests that start in
//!   the window (bytes are not spread over the request's duration); bandwidth = bytes ÷ L (s).
//!
//! # Memory
//!
//! State per open pair-window (64-bit target): a 184-byte [`PairState`] (holding up to 4
//! durations, 4 in-flight intervals and the first (zone, version) combination of its
//! breakdown inline) in a hash-map slot of 193 bytes, 1.1 to 2.3 slots per pair depending on
//! the map's load (210–445 bytes), plus
//! * latency: past 4 durations, up to [`RAW_LATENCY_VALUES`] × 8 = 4 KiB of raw durations,
//!   then an HDR histogram of `(b + 1) × 128 × 4` bytes where `b` = ⌈log2(max µs ÷ 256)⌉ + 1
//!   buckets: 7.5 KiB for latencies up to 2 s, 9 KiB up to 10 s, 29 KiB at most (durations
//!   near `u64::MAX`), plus allocator overhead;
//! * concurrency: 4 × (L ÷ resolution + 1) bytes once allocated (404 bytes at the defaults,
//!   40 KiB at most, [`MAX_CONCURRENCY_SLOTS`]);
//! * breakdown: past its first combination, a 32-byte box and a vector of 56-byte entries
//!   (at most [`MAX_BREAKDOWN`] − 1 of them: under 1 KiB).
//!
//! A request in flight past its start window costs one 24-byte entry (plus vector slack)
//! until it ends, however many windows it spans; a record held back for starting far ahead
//! costs one [`FlowRecord`] (at most `ahead-confirm` per input).
//!
//! So a pair with up to 4 requests per window costs at most 450 bytes, one with a few hundred
//! up to 4.7 KiB, a busy pair about 10 KiB at the defaults with latencies under 10 s (70 KiB
//! in the worst case of any duration and the finest resolution). Measured: `cargo bench
//! --bench window` prints the resident memory of 100 k pairs in one window. Service names are
//! interned once per process (one copy per distinct name).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, DictionaryArray, RecordBatch};
use arrow::datatypes::Int32Type;
use schemas::{FlowColumns, FlowRecord, PairWindow, Window};
use serde::{Deserialize, Serialize};

use crate::config::WindowConfig;
use crate::error::{Error, Result};
use crate::flags;
use crate::intern::{Interner, mark_pair, pair_ids, pair_key};

mod state;

pub use state::{
    Dims, LatencyData, MAX_BREAKDOWN, PairState, PairStateData, RAW_LATENCY_VALUES, SlotsData,
};

/// Most concurrency slots per window (`length ÷ concurrency-resolution`), so that the
/// concurrency state of a pair-window stays at most 40 KiB.
pub const MAX_CONCURRENCY_SLOTS: u64 = 10_000;

/// Most windows (the start window included) in which one request's time in flight counts.
/// Bounds the state a single very long request (or a bogus duration) can create.
pub const MAX_SPAN_WINDOWS: i64 = 1024;

/// Shortest window length, µs (1 s). What a window costs does not shrink with its length: each
/// open window holds its own state per pair (see the [module docs](self#memory)), a request's
/// time in flight counts in every window it overlaps (up to [`MAX_SPAN_WINDOWS`] of them), and
/// the windows that stay open behind the newest start number `allowed-lateness ÷ length`. At
/// 1 µs, a 15 s lateness keeps 15 million windows open and a request of 1 ms or more fills
/// 1 024 pair-windows: memory grows with every record until the process is killed. At 1 s and
/// more, a pair holds at most `lateness ÷ length + 1 + 1024` windows, and a request is counted
/// whole up to 17 minutes in flight.
pub const MIN_WINDOW_LENGTH_US: i64 = 1_000_000;

/// The validated `[detect.window]` config, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    length_us: i64,
    lateness_us: i64,
    resolution_us: i64,
    slots: usize,
    #[serde(default = "default_max_ahead_us")]
    max_ahead_us: i64,
    #[serde(default = "default_ahead_confirm")]
    ahead_confirm: usize,
    #[serde(default = "default_max_pairs")]
    max_pairs: usize,
}

/// The name under which pairs past [`WindowConfig::max_pairs`] are counted: not a service
/// name a proxy log or a mapping can produce (parentheses), never judged or acted on.
pub const OTHER: &str = "(other)";

/// Least [`WindowConfig::max_pairs`].
pub const MIN_MAX_PAIRS: usize = 16;

fn default_max_pairs() -> usize {
    100_000
}

/// Most records [`WindowConfig::ahead_confirm`] may ask for (they are held, one
/// [`schemas::FlowRecord`] each, per input).
pub const MAX_AHEAD_CONFIRM: usize = 1024;

fn default_max_ahead_us() -> i64 {
    300_000_000
}

fn default_ahead_confirm() -> usize {
    8
}

fn whole_us(d: Duration, key: &'static str) -> Result<i64> {
    if !d.subsec_nanos().is_multiple_of(1_000) {
        return Err(Error::Config {
            key,
            reason: format!("{d:?} is not a whole number of µs"),
        });
    }
    i64::try_from(d.as_micros()).map_err(|_| Error::Config {
        key,
        reason: format!("{d:?} is too long"),
    })
}

impl TryFrom<&WindowConfig> for WindowSpec {
    type Error = Error;

    fn try_from(c: &WindowConfig) -> Result<Self> {
        let length_us = whole_us(c.length, "window.length")?;
        if length_us < MIN_WINDOW_LENGTH_US {
            return Err(Error::Config {
                key: "window.length",
                reason: format!(
                    "{:?} is shorter than {}: windows that short multiply the state per request and \
                     the windows held open for the allowed lateness",
                    c.length,
                    humantime_us(MIN_WINDOW_LENGTH_US)
                ),
            });
        }
        let lateness_us = whole_us(c.allowed_lateness, "window.allowed-lateness")?;
        let resolution_us = whole_us(c.concurrency_resolution, "window.concurrency-resolution")?;
        if resolution_us == 0 || length_us % resolution_us != 0 {
            return Err(Error::Config {
                key: "window.concurrency-resolution",
                reason: format!(
                    "{:?} must be > 0 and divide window.length ({:?})",
                    c.concurrency_resolution, c.length
                ),
            });
        }
        let slots = length_us / resolution_us;
        if slots as u64 > MAX_CONCURRENCY_SLOTS {
            return Err(Error::Config {
                key: "window.concurrency-resolution",
                reason: format!(
                    "{:?} cuts window.length ({:?}) into {slots} slots, more than {MAX_CONCURRENCY_SLOTS}",
                    c.concurrency_resolution, c.length
                ),
            });
        }
        let max_ahead_us = whole_us(c.max_ahead, "window.max-ahead")?;
        // shorter than a window, ordinary records would be set aside
        let max_ahead_us = max_ahead_us.max(length_us);
        if !(1..=MAX_AHEAD_CONFIRM).contains(&c.ahead_confirm) {
            return Err(Error::Config {
                key: "window.ahead-confirm",
                reason: format!(
                    "{} must be 1 to {MAX_AHEAD_CONFIRM} records",
                    c.ahead_confirm
                ),
            });
        }
        if c.max_pairs < MIN_MAX_PAIRS {
            return Err(Error::Config {
                key: "window.max-pairs",
                reason: format!("{} must be at least {MIN_MAX_PAIRS}", c.max_pairs),
            });
        }
        Ok(WindowSpec {
            length_us,
            lateness_us,
            resolution_us,
            slots: slots as usize,
            max_ahead_us,
            ahead_confirm: c.ahead_confirm,
            max_pairs: c.max_pairs,
        })
    }
}

impl WindowSpec {
    /// Window length, µs.
    pub fn length_us(&self) -> i64 {
        self.length_us
    }

    /// Allowed lateness, µs.
    pub fn lateness_us(&self) -> i64 {
        self.lateness_us
    }

    /// Concurrency resolution, µs.
    pub fn resolution_us(&self) -> i64 {
        self.resolution_us
    }

    /// Concurrency slots per window (`length ÷ resolution`).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// How far ahead of its input's newest start a record is still trusted, µs.
    pub fn max_ahead_us(&self) -> i64 {
        self.max_ahead_us
    }

    /// Records in a row beyond [`WindowSpec::max_ahead_us`] that confirm a jump.
    pub fn ahead_confirm(&self) -> usize {
        self.ahead_confirm
    }

    /// Most distinct pairs per window (see [`WindowConfig::max_pairs`]).
    pub fn max_pairs(&self) -> usize {
        self.max_pairs
    }

    /// Index `k` of the window `[k·L, (k+1)·L)` holding `t_us`.
    pub fn index_of(&self, t_us: i64) -> i64 {
        t_us.div_euclid(self.length_us)
    }

    /// Window number `k` (saturating at the ends of the i64 µs range).
    pub fn window(&self, k: i64) -> Window {
        Window {
            start_us: k.saturating_mul(self.length_us),
            end_us: k.saturating_add(1).saturating_mul(self.length_us),
        }
    }

    /// Fails unless `other` has the same length, lateness and resolution: state aggregated
    /// under one spec (a checkpoint, a partial from another instance) can't be merged into
    /// windows of another.
    ///
    /// # Errors
    /// [`Error::State`] naming both values of the first key that differs.
    pub fn check_same(&self, other: &WindowSpec) -> Result<()> {
        let d = |us: i64| humantime_us(us);
        for (key, ours, theirs) in [
            ("window.length", self.length_us, other.length_us),
            (
                "window.allowed-lateness",
                self.lateness_us,
                other.lateness_us,
            ),
            (
                "window.concurrency-resolution",
                self.resolution_us,
                other.resolution_us,
            ),
        ] {
            if ours != theirs {
                return Err(Error::State(format!(
                    "{key} is {} here but {} in the saved state",
                    d(ours),
                    d(theirs)
                )));
            }
        }
        Ok(())
    }
}

/// `1500000` → `1s 500ms`.
fn humantime_us(us: i64) -> String {
    match u64::try_from(us) {
        Ok(us) => humantime::format_duration(Duration::from_micros(us)).to_string(),
        Err(_) => format!("{us}µs"),
    }
}

/// One closed window's golden signals per pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedPairs {
    /// The window.
    pub window: Window,
    /// Its pairs, sorted by (source, destination).
    pub pairs: Vec<PairWindow>,
}

/// One pair's running aggregates in one window, with the pair's names: what an input's
/// [`PairAggregator`] hands over when the window closes for that input.
#[derive(Debug, Clone)]
pub struct PairPartial {
    /// Calling service.
    pub source: Arc<str>,
    /// Called service.
    pub destination: Arc<str>,
    /// The aggregates (mergeable with the same pair's from other inputs).
    pub state: PairState,
}

/// One window as one input saw it: the mergeable aggregates of its pairs. The hand-off from
/// stage 1 (one [`PairAggregator`] per input) to stage 2 ([`crate::merge::WindowMerger`]);
/// republished on the repartition topic when graywatch scales out.
#[derive(Debug, Clone)]
pub struct PartialWindow {
    /// The window.
    pub window: Window,
    /// Its pairs, in no particular order.
    pub pairs: Vec<PairPartial>,
}

impl PartialWindow {
    /// The golden signals of this window's pairs, sorted by (source, destination), as if no
    /// other input had records in it.
    pub fn finish(self) -> ClosedPairs {
        let scale = PairState::scale();
        let mut pairs: Vec<PairPartial> = self.pairs;
        pairs.sort_unstable_by(|a, b| {
            (&*a.source, &*a.destination).cmp(&(&*b.source, &*b.destination))
        });
        ClosedPairs {
            window: self.window,
            pairs: pairs
                .into_iter()
                .map(|mut p| {
                    p.state
                        .finish(self.window, &p.source, &p.destination, &scale)
                })
                .collect(),
        }
    }
}

/// Per-batch map from a dictionary column's keys to interned ids, filled on first use so a
/// large shared dictionary costs nothing for the values a batch does not use.
struct DictIds<'a> {
    keys: &'a [i32],
    nulls: Option<&'a arrow::buffer::NullBuffer>,
    values: &'a arrow::array::StringArray,
    ids: Vec<u32>,
}

const UNMAPPED: u32 = u32::MAX;

impl<'a> DictIds<'a> {
    fn new(dict: &'a DictionaryArray<Int32Type>, column: &str) -> Result<Self> {
        let values = dict.values().as_string_opt::<i32>().ok_or_else(|| {
            schemas::Error::Schema(format!(
                "flow-record column {column:?} does not have Utf8 dictionary values"
            ))
        })?;
        Ok(DictIds {
            keys: dict.keys().values(),
            nulls: dict.nulls(),
            values,
            ids: vec![UNMAPPED; values.len()],
        })
    }

    /// The id of row `row`'s value; a null (which the schema forbids) is the empty name.
    #[inline]
    fn id(&mut self, row: usize, interner: &mut Interner) -> u32 {
        if self.nulls.is_some_and(|n| n.is_null(row)) {
            return interner.intern("");
        }
        let v = self.keys[row] as usize;
        match self.ids.get(v) {
            Some(&id) if id != UNMAPPED => id,
            Some(_) => {
                let name = if self.values.is_null(v) {
                    ""
                } else {
                    self.values.value(v)
                };
                let id = interner.intern(name);
                self.ids[v] = id;
                id
            }
            None => interner.intern(""),
        }
    }
}

/// One open window: its pairs, by `(source id, destination id)`.
#[derive(Debug)]
struct OpenWindow {
    pairs: foldhash::HashMap<u64, PairState>,
    /// The lowest input position (e.g. Kafka offset) of a record that touched this window;
    /// `i64::MAX` when positions are not tracked.
    first_position: i64,
}

impl OpenWindow {
    fn with_capacity(capacity: usize) -> Self {
        OpenWindow {
            pairs: foldhash::HashMap::with_capacity_and_hasher(capacity, Default::default()),
            first_position: i64::MAX,
        }
    }
}

/// A request still in flight after its start window: its time in flight is added to each
/// window it spans when that window closes, so it costs one entry however many windows it
/// spans.
#[derive(Debug, Clone, Copy)]
struct Flight {
    /// `pair_key(source, destination)`.
    key: u64,
    /// End of the request (start + duration, cut after [`MAX_SPAN_WINDOWS`] windows), µs.
    end_us: i64,
    /// Its record's input position (`i64::MAX` when not tracked).
    position: i64,
}

/// The values of one flow record that aggregation reads.
#[derive(Debug, Clone, Copy)]
struct Row {
    start: i64,
    duration: Option<u64>,
    src: u32,
    dst: u32,
    status: Option<u16>,
    class: u8,
    bytes_in: u64,
    bytes_out: u64,
    /// Input position (`i64::MAX` when not tracked).
    position: i64,
    /// The record's zones and versions: an index into the aggregator's [`DimsTable`], or
    /// [`NO_DIMS`].
    dims: u32,
}

/// A record with no zone and no version.
const NO_DIMS: u32 = u32::MAX;

/// Distinct (zone, version) combinations seen, shared by the records that have them.
/// Emptied when it grows past [`DimsTable::MAX`] while no held record refers to it.
#[derive(Debug, Default)]
struct DimsTable {
    ids: foldhash::HashMap<Dims, u32>,
    all: Vec<Dims>,
}

impl DimsTable {
    const MAX: usize = 4_096;

    fn id(&mut self, dims: [Option<&str>; 4]) -> u32 {
        if dims.iter().all(Option::is_none) {
            return NO_DIMS;
        }
        let key: Dims = Arc::new(dims.map(|d| d.map(Arc::<str>::from)));
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.all.len() as u32;
        self.all.push(Arc::clone(&key));
        self.ids.insert(key, id);
        id
    }
}

/// Per-batch map from the four dimension columns' dictionary keys to [`DimsTable`] ids.
struct BatchDims<'a> {
    cols: [&'a DictionaryArray<Int32Type>; 4],
    values: [&'a arrow::array::StringArray; 4],
    /// Whether any of the four columns has a value in the batch.
    any: bool,
    cache: foldhash::HashMap<[i32; 4], u32>,
}

impl<'a> BatchDims<'a> {
    fn new(cols: [&'a DictionaryArray<Int32Type>; 4]) -> Result<Self> {
        let mut values = Vec::with_capacity(4);
        for c in cols {
            values.push(c.values().as_string_opt::<i32>().ok_or_else(|| {
                schemas::Error::Schema(
                    "flow-record zone/version columns do not have Utf8 dictionary values".into(),
                )
            })?);
        }
        let any = cols.iter().any(|c| c.null_count() < c.len());
        Ok(BatchDims {
            cols,
            values: [values[0], values[1], values[2], values[3]],
            any,
            cache: foldhash::HashMap::default(),
        })
    }

    #[inline]
    fn id(&mut self, row: usize, table: &mut DimsTable) -> u32 {
        if !self.any {
            return NO_DIMS;
        }
        let keys = self.cols.map(|c| {
            if c.is_null(row) {
                -1
            } else {
                c.keys().value(row)
            }
        });
        if let Some(&id) = self.cache.get(&keys) {
            return id;
        }
        let mut dims = [None; 4];
        for (i, &k) in keys.iter().enumerate() {
            if k >= 0 && !self.values[i].is_null(k as usize) {
                dims[i] = Some(self.values[i].value(k as usize));
            }
        }
        let id = table.id(dims);
        self.cache.insert(keys, id);
        id
    }
}

/// A record held back because it starts too far ahead of its input (see
/// [`WindowConfig::max_ahead`]).
#[derive(Debug, Clone)]
struct Held {
    row: Row,
    record: HeldRecord,
}

/// A held record's fields beyond what aggregation reads: only needed if it is set aside (a
/// dead letter) or checkpointed, so most held records never build a [`FlowRecord`].
#[derive(Debug, Clone)]
enum HeldRecord {
    /// Row `1` of batch `0` (a shared handle: the batch stays as it was), in the flow-record
    /// schema (checked when the row was held).
    InBatch(RecordBatch, usize),
    /// A record restored from a checkpoint.
    Restored(Box<FlowRecord>),
}

impl HeldRecord {
    fn to_record(&self) -> FlowRecord {
        match self {
            HeldRecord::InBatch(batch, row) => schemas::flow_records(&batch.slice(*row, 1))
                .expect("the batch's schema was checked when the row was held")
                .pop()
                .expect("one row"),
            HeldRecord::Restored(record) => (**record).clone(),
        }
    }
}

/// Pair aggregation of one input (a file, a Kafka partition): takes flow-record batches, keeps
/// one [`PairState`] per pair per open window, and hands each window over as a
/// [`PartialWindow`] when the input's watermark passes it. See the [module docs](self).
///
/// Synchronous, no I/O, no clock: time comes only from the records' `start_us`.
#[derive(Debug)]
pub struct PairAggregator {
    spec: WindowSpec,
    interner: Interner,
    windows: BTreeMap<i64, OpenWindow>,
    /// Requests in flight past their start window, by the index of the next window they
    /// count in.
    flights: BTreeMap<i64, Vec<Flight>>,
    /// Records held back for starting too far ahead, in input order.
    held: Vec<Held>,
    /// Records set aside since the last [`PairAggregator::take_set_aside`].
    set_aside: Vec<SetAside>,
    /// The newest trusted `start_us`.
    newest_us: Option<i64>,
    /// Records whose start window ends at or before this are late: the watermark, or after
    /// [`PairAggregator::flush`] the end of the last closed window if that is later.
    late_before_us: i64,
    /// Pairs of the last closed window: the initial capacity of a window opened by a request
    /// start (not of windows a long request spans).
    last_window_pairs: usize,
    /// The pairs of the last closed window: never pushed under [`OTHER`] (see `capped_key`).
    established: foldhash::HashSet<u64>,
    counters: AggregatorCounters,
    /// Records starting after this are not aggregated (see [`PairAggregator::set_not_after`]).
    not_after_us: i64,
    /// Rows of the last pushed batch that were not aggregated, and why.
    dropped_rows: Vec<(u32, Dropped)>,
    /// The records' (zone, version) combinations.
    dims: DimsTable,
}

/// Counters of a [`PairAggregator`] since it was built (or restored with them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatorCounters {
    /// Records read, late ones included.
    pub records: u64,
    /// Records that arrived after their window was behind the watermark.
    pub late_records: u64,
    /// Records whose time in flight was cut after [`MAX_SPAN_WINDOWS`] windows.
    pub clamped_records: u64,
    /// Records that started after the bound of [`PairAggregator::set_not_after`].
    pub future_records: u64,
    /// Most windows open at once.
    pub max_open_windows: u64,
    /// Records of a new pair in a window that already held [`WindowConfig::max_pairs`]
    /// pairs, counted under an [`OTHER`] pair.
    #[serde(default)]
    pub overflow_records: u64,
    /// Records set aside for starting more than [`WindowConfig::max_ahead`] after their
    /// input's newest start, with no jump confirmed.
    #[serde(default)]
    pub ahead_records: u64,
}

/// Why a record was not aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dropped {
    /// Its window was already behind the watermark.
    Late,
    /// It starts after the configured bound on event time (a clock far ahead, a bad year).
    Future,
    /// It started more than [`WindowConfig::max_ahead`] after its input's newest start and
    /// the records after it did not confirm the jump (see [`PairAggregator::push_at`]).
    Ahead,
}

/// A record of an earlier batch that was held back and then not aggregated: what
/// [`PairAggregator::take_set_aside`] returns, for dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct SetAside {
    /// The record.
    pub record: FlowRecord,
    /// Its input position, when positions are tracked.
    pub position: Option<i64>,
    /// Why it was not aggregated.
    pub why: Dropped,
}

/// The serializable state of a [`PairAggregator`]: its open windows with their pair states,
/// requests in flight, held records, watermark and counters. What a checkpoint keeps per
/// input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatorSnapshot {
    /// The window spec the state was aggregated under.
    pub spec: WindowSpec,
    /// Newest trusted start seen, µs since the epoch.
    pub newest_us: Option<i64>,
    /// Records whose window ends at or before this are late, µs since the epoch.
    pub late_before_us: i64,
    /// Open windows, oldest first.
    pub windows: Vec<OpenWindowData>,
    /// Counters so far.
    pub counters: AggregatorCounters,
    /// Requests in flight past their start window.
    #[serde(default)]
    pub flights: Vec<FlightData>,
    /// Records held back for starting too far ahead, in input order, with their positions
    /// (`i64::MAX` when not tracked).
    #[serde(default)]
    pub held: Vec<(FlowRecord, i64)>,
}

/// A request in flight in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlightData {
    /// Index of the next window its time in flight counts in.
    pub next_window: i64,
    /// Calling service.
    pub source: String,
    /// Called service.
    pub destination: String,
    /// End of the request, µs since the epoch.
    pub end_us: i64,
    /// Its record's input position (`i64::MAX` when not tracked).
    pub position: i64,
}

/// One pair's state in a snapshot: (source, destination, state).
pub type PairData = (String, String, PairStateData);

/// The states of a window's pairs (keyed by interned ids) as [`PairData`], sorted by names:
/// hash order is arbitrary, the same state makes the same snapshot.
pub(crate) fn states_to_data(
    interner: &Interner,
    states: &foldhash::HashMap<u64, PairState>,
) -> Vec<PairData> {
    let mut data: Vec<PairData> = states
        .iter()
        .map(|(&key, state)| {
            let (s, d) = pair_ids(key);
            (
                interner.name(s).to_string(),
                interner.name(d).to_string(),
                state.to_data(),
            )
        })
        .collect();
    data.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    data
}

/// [`states_to_data`] back, for windows of `slots` concurrency slots.
pub(crate) fn states_from_data(
    interner: &mut Interner,
    data: Vec<PairData>,
    slots: usize,
) -> Result<foldhash::HashMap<u64, PairState>> {
    let mut states = foldhash::HashMap::default();
    for (source, destination, state) in data {
        let key = pair_key(interner.intern(&source), interner.intern(&destination));
        states.insert(key, PairState::from_data(state, slots)?);
    }
    Ok(states)
}

/// The key under which pair `key` counts in `pairs`, a window of at most `max` pairs (see
/// [`WindowConfig::max_pairs`]): itself while the window has room or already holds it, else
/// (source, [`OTHER`]), else ([`OTHER`], [`OTHER`]) once the window holds `max + max / 8`
/// pairs. A pair of the previous window (`established`) always keeps its own place, so a
/// flood of new names can't push the landscape's real pairs out of sight. A pair naming
/// [`OTHER`] already (an input's overflow, being merged) stays itself.
/// The flag says whether it was redirected.
#[inline]
pub(crate) fn capped_key(
    pairs: &foldhash::HashMap<u64, PairState>,
    key: u64,
    max: usize,
    established: &foldhash::HashSet<u64>,
    interner: &mut Interner,
) -> (u64, bool) {
    if pairs.len() < max || pairs.contains_key(&key) || established.contains(&key) {
        return (key, false);
    }
    let other = interner.intern(OTHER);
    let (source, destination) = pair_ids(key);
    if source == other || destination == other {
        // an overflow pair already (an input's, being merged): it stays one
        return (key, false);
    }
    let by_source = pair_key(source, other);
    if pairs.len() < max.saturating_add(max / 8) || pairs.contains_key(&by_source) {
        (by_source, true)
    } else {
        (pair_key(other, other), true)
    }
}

/// Adds `state` to the state of `key` in `states` (or puts it there).
pub(crate) fn merge_state(
    states: &mut foldhash::HashMap<u64, PairState>,
    key: u64,
    state: PairState,
    slots: usize,
) {
    match states.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().merge(state, slots),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(state);
        }
    }
}

/// One open window of an [`AggregatorSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenWindowData {
    /// Window index `k` (the window is `[k·L, (k+1)·L)`).
    pub index: i64,
    /// Lowest input position of a record in it (`i64::MAX` when not tracked).
    pub first_position: i64,
    /// Its pairs.
    pub pairs: Vec<PairData>,
}

/// Whether a row was aggregated in its start window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Added {
    Yes,
    Late,
}

impl PairAggregator {
    /// An aggregator with no open windows and no watermark yet.
    pub fn new(spec: WindowSpec) -> Self {
        PairAggregator {
            spec,
            interner: Interner::default(),
            windows: BTreeMap::new(),
            flights: BTreeMap::new(),
            held: Vec::new(),
            set_aside: Vec::new(),
            newest_us: None,
            late_before_us: i64::MIN,
            last_window_pairs: 0,
            established: foldhash::HashSet::default(),
            counters: AggregatorCounters::default(),
            not_after_us: i64::MAX,
            dropped_rows: Vec::new(),
            dims: DimsTable::default(),
        }
    }

    /// An aggregator that resumes an input at a position where `watermark_us` was its
    /// watermark and no window was open (e.g. a Kafka partition read again from its
    /// committed offset by a new owner): records whose window ends at or before it are late,
    /// as they were for the previous owner.
    pub fn resume_at(spec: WindowSpec, watermark_us: Option<i64>) -> Self {
        let mut agg = PairAggregator::new(spec);
        if let Some(wm) = watermark_us {
            agg.late_before_us = wm;
        }
        agg
    }

    /// Records that start after `not_after_us` (µs since the epoch) are counted in
    /// [`AggregatorCounters::future_records`] and not aggregated: one record from a broken
    /// clock (year 2100) would otherwise move the watermark so far that everything after it is
    /// late. The caller passes the bound in (e.g. its wall clock plus a margin); detection
    /// reads no clock.
    pub fn set_not_after(&mut self, not_after_us: i64) {
        self.not_after_us = not_after_us;
    }

    /// Rows (indices into the last batch given to [`PairAggregator::push`]) that were not
    /// aggregated, in row order, with the reason. Records of earlier batches that were held
    /// back and then not aggregated come from [`PairAggregator::take_set_aside`].
    pub fn dropped_rows(&self) -> &[(u32, Dropped)] {
        &self.dropped_rows
    }

    /// Records held back by an earlier batch and not aggregated after all (set aside as
    /// [`Dropped::Ahead`], or [`Dropped::Late`] once released), in input order, since the last
    /// call.
    pub fn take_set_aside(&mut self) -> Vec<SetAside> {
        std::mem::take(&mut self.set_aside)
    }

    /// The window geometry.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Current watermark, µs since the epoch: the newest trusted start seen minus the allowed
    /// lateness; records whose window ends at or before it are late. `None` before it first
    /// moved.
    pub fn watermark(&self) -> Option<i64> {
        (self.late_before_us != i64::MIN).then_some(self.late_before_us)
    }

    /// The newest trusted start seen, µs since the epoch.
    pub fn newest(&self) -> Option<i64> {
        self.newest_us
    }

    /// Counters so far.
    pub fn counters(&self) -> &AggregatorCounters {
        &self.counters
    }

    /// Records read (late ones included).
    pub fn records(&self) -> u64 {
        self.counters.records
    }

    /// Records that arrived after their window was behind the watermark (not aggregated in
    /// their start window).
    pub fn late_records(&self) -> u64 {
        self.counters.late_records
    }

    /// Windows currently open.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Pair-windows currently open (the state's size in pairs).
    pub fn open_pairs(&self) -> usize {
        self.windows.values().map(|w| w.pairs.len()).sum()
    }

    /// Requests in flight past their start window (one entry each, whatever they span).
    pub fn in_flight(&self) -> usize {
        self.flights.values().map(Vec::len).sum()
    }

    /// Records held back for starting too far ahead.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The lowest position (as given to [`PairAggregator::push_at`]) of a record held in an
    /// open window, in flight or held back: reading the input again from there rebuilds
    /// every open window. `None` when nothing is held (or positions were not given).
    pub fn low_position(&self) -> Option<i64> {
        let windows = self.windows.values().map(|w| w.first_position);
        let flights = self.flights.values().flatten().map(|f| f.position);
        let held = self.held.iter().map(|h| h.row.position);
        windows
            .chain(flights)
            .chain(held)
            .min()
            .filter(|&p| p != i64::MAX)
    }

    /// [`PairAggregator::push_at`] without positions.
    ///
    /// # Errors
    /// As [`PairAggregator::push_at`].
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Vec<PartialWindow>> {
        self.push_at(batch, None)
    }

    /// Aggregates `batch` record by record, then closes and returns every window whose end is
    /// at or before the watermark, oldest first. `positions`, when given, holds each row's
    /// position in the input (e.g. its Kafka offset; one per row, non-decreasing), so that
    /// [`PairAggregator::low_position`] can say where to read again from.
    ///
    /// A late record is not counted in its start window (rate, errors, latency, bytes), but
    /// its time in flight still counts in the windows after it that are open.
    ///
    /// A record starting more than [`WindowSpec::max_ahead_us`] after the newest trusted
    /// start is held back: when [`WindowSpec::ahead_confirm`] such records come in a row, the
    /// input really moved on (it resumed after a gap) and they are aggregated; when a record
    /// within reach comes first, they were outliers (a bad clock among the input's writers, a
    /// corrupt or crafted timestamp) and are set aside ([`PairAggregator::take_set_aside`]).
    /// So no single record moves the watermark. An input's first records are held the same
    /// way, and those more than `max-ahead` after the earliest of them are judged as above.
    ///
    /// # Errors
    /// [`Error::Schema`] when `batch` lacks a flow-record column or has it with the wrong type,
    /// or `positions` has another length than the batch; nothing of the batch is aggregated
    /// then.
    pub fn push_at(
        &mut self,
        batch: &RecordBatch,
        positions: Option<&[i64]>,
    ) -> Result<Vec<PartialWindow>> {
        let mut out = Vec::new();
        self.push_at_each(batch, positions, |p| out.push(p))?;
        Ok(out)
    }

    /// [`PairAggregator::push_at`], handing each closed window to `hand` as soon as it is
    /// made, oldest first, so that a jump in time over many windows spanned by requests in
    /// flight never holds all of them at once.
    ///
    /// # Errors
    /// As [`PairAggregator::push_at`].
    pub fn push_at_each(
        &mut self,
        batch: &RecordBatch,
        positions: Option<&[i64]>,
        hand: impl FnMut(PartialWindow),
    ) -> Result<()> {
        let cols = FlowColumns::try_new(batch)?;
        if let Some(p) = positions
            && p.len() != batch.num_rows()
        {
            return Err(Error::Schema(schemas::Error::Schema(format!(
                "{} positions for a batch of {} rows",
                p.len(),
                batch.num_rows()
            ))));
        }
        let mut sources = DictIds::new(cols.source, schemas::flow::columns::SOURCE)?;
        let mut destinations = DictIds::new(cols.destination, schemas::flow::columns::DESTINATION)?;
        if self.dims.all.len() > DimsTable::MAX && self.held.is_empty() {
            self.dims = DimsTable::default();
        }
        let mut dims = BatchDims::new([
            cols.source_zone,
            cols.source_version,
            cols.destination_zone,
            cols.destination_version,
        ])?;
        let flag_class = flags::classify_dictionary(cols.response_flags)?;
        let flag_keys = cols.response_flags.keys().values();
        let flag_nulls = cols.response_flags.nulls();
        let tcp = flags::tcp_dictionary(cols.protocol)?;
        let protocol_keys = cols.protocol.keys().values();
        let protocol_nulls = cols.protocol.nulls();
        let starts = cols.start_us.values();
        let durations = cols.duration_us.values();
        let duration_nulls = cols.duration_us.nulls();
        let statuses = cols.status.values();
        let status_nulls = cols.status.nulls();
        let bytes_received = cols.bytes_received.values();
        let bytes_sent = cols.bytes_sent.values();

        self.counters.records += batch.num_rows() as u64;
        self.dropped_rows.clear();
        // whether the batch is known to be exactly in the flow-record schema (checked at its
        // first held row)
        let mut schema_checked = false;
        for row in 0..batch.num_rows() {
            let start = starts[row];
            if start > self.not_after_us {
                self.counters.future_records += 1;
                self.dropped_rows.push((row as u32, Dropped::Future));
                continue;
            }
            let status = match status_nulls {
                Some(n) if n.is_null(row) => None,
                _ => Some(statuses[row]),
            };
            let class = match flag_nulls {
                Some(n) if n.is_null(row) => flags::NONE,
                _ => flag_class
                    .get(flag_keys[row] as usize)
                    .copied()
                    .unwrap_or(flags::NONE),
            };
            let is_tcp = match protocol_nulls {
                Some(n) if n.is_null(row) => false,
                _ => tcp
                    .get(protocol_keys[row] as usize)
                    .copied()
                    .unwrap_or(false),
            };
            let duration = match duration_nulls {
                Some(n) if n.is_null(row) => None,
                _ => Some(durations[row]),
            };
            let r = Row {
                start,
                duration,
                src: sources.id(row, &mut self.interner),
                dst: destinations.id(row, &mut self.interner),
                status,
                class: flags::unanswered_tcp(
                    class,
                    is_tcp,
                    status,
                    (bytes_received[row], bytes_sent[row]),
                    duration,
                ),
                bytes_in: bytes_received[row],
                bytes_out: bytes_sent[row],
                position: positions.map_or(i64::MAX, |p| p[row]),
                dims: dims.id(row, &mut self.dims),
            };
            if self.is_ahead(start) {
                if !schema_checked {
                    // held rows refer to their batch, read back by flow_records
                    if batch.schema() != schemas::flow_record_schema() {
                        return Err(Error::Schema(schemas::Error::Schema(
                            "batch is not in the flow-record schema".into(),
                        )));
                    }
                    schema_checked = true;
                }
                let record = HeldRecord::InBatch(batch.clone(), row);
                self.hold(Held { row: r, record });
                continue;
            }
            self.release_held(false);
            if self.add(r) == Added::Late {
                self.dropped_rows.push((row as u32, Dropped::Late));
            }
        }
        self.close_ready(hand);
        Ok(())
    }

    /// Whether a record starting at `start` is too far ahead to be trusted yet (an input's
    /// first records are held until its first watermark is known).
    #[inline]
    fn is_ahead(&self, start: i64) -> bool {
        self.newest_us
            .is_none_or(|n| start > n.saturating_add(self.spec.max_ahead_us))
    }

    fn hold(&mut self, h: Held) {
        self.held.push(h);
        if self.held.len() >= self.spec.ahead_confirm {
            self.release_held(true);
        }
    }

    /// Releases the held records: aggregated when `confirmed` (or when they are an input's
    /// first records: then those within reach of the earliest are), set aside otherwise.
    fn release_held(&mut self, confirmed: bool) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        if self.newest_us.is_none() {
            // an input's first records: those within reach of the earliest aggregate, in
            // input order; the rest are held again. The earliest, not the median: a record
            // far behind only keeps one window open a while, records far ahead (even most of
            // the first ones) would make everything after them late
            let earliest = held.iter().map(|h| h.row.start).min().expect("not empty");
            let reach = earliest.saturating_add(self.spec.max_ahead_us);
            for h in held {
                if h.row.start > reach {
                    self.held.push(h);
                } else {
                    self.add_held(h);
                }
            }
            return;
        }
        for h in held {
            if confirmed {
                self.add_held(h);
            } else {
                self.counters.ahead_records += 1;
                self.set_aside.push(SetAside {
                    position: (h.row.position != i64::MAX).then_some(h.row.position),
                    record: h.record.to_record(),
                    why: Dropped::Ahead,
                });
            }
        }
    }

    fn add_held(&mut self, h: Held) {
        if self.add(h.row) == Added::Late {
            self.set_aside.push(SetAside {
                position: (h.row.position != i64::MAX).then_some(h.row.position),
                record: h.record.to_record(),
                why: Dropped::Late,
            });
        }
    }

    /// Moves the newest trusted start (and with it the watermark) to `start` if later.
    #[inline]
    fn trust(&mut self, start: i64) {
        if self.newest_us.is_none_or(|m| start > m) {
            self.newest_us = Some(start);
            let wm = start.saturating_sub(self.spec.lateness_us);
            self.late_before_us = self.late_before_us.max(wm);
        }
    }

    /// Aggregates one trusted record.
    fn add(&mut self, r: Row) -> Added {
        let spec = self.spec;
        let l = spec.length_us;
        let k = r.start.div_euclid(l);
        let ws = k.saturating_mul(l);
        let we = k.saturating_add(1).saturating_mul(l);
        let end = r
            .duration
            .map(|d| r.start.saturating_add(i64::try_from(d).unwrap_or(i64::MAX)));
        if we <= self.late_before_us {
            self.counters.late_records += 1;
            // still in flight in windows that are open: count it there
            if let Some(end) = end
                && end > we
            {
                self.spill(k, end, pair_key(r.src, r.dst), r.position);
            }
            return Added::Late;
        }
        self.trust(r.start);
        let hint = self.last_window_pairs;
        let window = open(
            &mut self.windows,
            &mut self.counters.max_open_windows,
            k,
            hint,
        );
        window.first_position = window.first_position.min(r.position);
        let (key, overflow) = capped_key(
            &window.pairs,
            pair_key(r.src, r.dst),
            spec.max_pairs,
            &self.established,
            &mut self.interner,
        );
        self.counters.overflow_records += u64::from(overflow);
        let state = window.pairs.entry(key).or_default();
        let error = flags::is_error_class(r.status, r.class, r.duration);
        state.requests += 1;
        state.errors += u64::from(error);
        state.bytes_in = state.bytes_in.saturating_add(r.bytes_in);
        state.bytes_out = state.bytes_out.saturating_add(r.bytes_out);
        if r.dims != NO_DIMS {
            state.record_dims(
                &self.dims.all[r.dims as usize],
                error,
                r.duration,
                (r.bytes_in, r.bytes_out),
            );
        }
        let (Some(d), Some(end)) = (r.duration, end) else {
            return Added::Yes;
        };
        state.record_latency(d);
        let slot_of = |t: i64| {
            ((t.saturating_sub(ws).max(0) / spec.resolution_us) as usize).min(spec.slots - 1)
        };
        if d == 0 {
            let s = slot_of(r.start);
            state.add_slots(s, s, spec.slots);
            return Added::Yes;
        }
        // in flight [start, end), its share of the start window here, the rest in `spill`
        let hi = end.min(we);
        if hi > r.start {
            state.overlap_us = state.overlap_us.wrapping_add((hi - r.start) as u64);
            if r.start == ws && hi == we {
                state.full_cover = state.full_cover.wrapping_add(1);
            } else {
                state.add_slots(slot_of(r.start), slot_of(hi - 1), spec.slots);
            }
        }
        if end > we {
            self.spill(k, end, pair_key(r.src, r.dst), r.position);
        }
        Added::Yes
    }

    /// Keeps a request that started in window `k` and ends at `end` µs (exclusive) in flight
    /// for the windows after `k` that are open (not yet closed), at most up to
    /// [`MAX_SPAN_WINDOWS`] windows in all; each gets its share when it closes.
    fn spill(&mut self, k: i64, mut end: i64, key: u64, position: i64) {
        let spec = self.spec;
        let max_k = k.saturating_add(MAX_SPAN_WINDOWS - 1);
        if spec.index_of(end - 1) > max_k {
            end = spec.window(max_k).end_us;
            self.counters.clamped_records += 1;
        }
        // windows that ended at or before the watermark have closed: window kk is open when
        // (kk + 1)·L > watermark, i.e. kk >= ⌊watermark ÷ L⌋
        let first_open = k.saturating_add(1).max(spec.index_of(self.late_before_us));
        if end <= spec.window(first_open).start_us {
            return;
        }
        self.flights.entry(first_open).or_default().push(Flight {
            key,
            end_us: end,
            position,
        });
    }

    /// Adds the share of window `k` of every request in flight there (all flights listed at
    /// `k` or before), keeping those that go on for window `k + 1`.
    fn add_flights(&mut self, k: i64, window: &mut OpenWindow) {
        let spec = self.spec;
        let w = spec.window(k);
        let mut due: Vec<Flight> = Vec::new();
        while let Some(entry) = self.flights.first_entry() {
            if *entry.key() > k {
                break;
            }
            let mut v = entry.remove();
            if due.is_empty() {
                due = v;
            } else {
                due.append(&mut v);
            }
        }
        if due.is_empty() {
            return;
        }
        let interner = &mut self.interner;
        let established = &self.established;
        due.retain(|f| {
            let hi = f.end_us.min(w.end_us);
            if hi > w.start_us {
                let (key, _) =
                    capped_key(&window.pairs, f.key, spec.max_pairs, established, interner);
                let state = window.pairs.entry(key).or_default();
                state.overlap_us = state.overlap_us.wrapping_add((hi - w.start_us) as u64);
                if hi == w.end_us {
                    state.full_cover = state.full_cover.wrapping_add(1);
                } else {
                    let last =
                        (((hi - 1 - w.start_us) / spec.resolution_us) as usize).min(spec.slots - 1);
                    state.add_slots(0, last, spec.slots);
                }
            }
            f.end_us > w.end_us
        });
        if !due.is_empty() {
            self.flights
                .entry(k.saturating_add(1))
                .or_default()
                .append(&mut due);
        }
    }

    /// The next window to close: the oldest open window or the oldest window a request in
    /// flight counts in.
    fn next_to_close(&self) -> Option<i64> {
        let w = self.windows.first_key_value().map(|(&k, _)| k);
        let f = self.flights.first_key_value().map(|(&k, _)| k);
        match (w, f) {
            (Some(w), Some(f)) => Some(w.min(f)),
            (w, f) => w.or(f),
        }
    }

    /// Closes window `k` (open or only spanned by requests in flight) and hands it over.
    fn close(&mut self, k: i64) -> Option<PartialWindow> {
        let mut w = self
            .windows
            .remove(&k)
            .unwrap_or_else(|| OpenWindow::with_capacity(0));
        self.add_flights(k, &mut w);
        (!w.pairs.is_empty()).then(|| self.hand_over(k, w))
    }

    /// Closes every window whose end is at or before the watermark, each handed to `hand`.
    fn close_ready(&mut self, mut hand: impl FnMut(PartialWindow)) {
        while let Some(k) = self.next_to_close() {
            if self.spec.window(k).end_us > self.late_before_us {
                break;
            }
            if let Some(p) = self.close(k) {
                hand(p);
            }
        }
        self.collect_names();
    }

    /// Frees the names no open window, request in flight or held record uses, when enough
    /// names were interned since the last time (O(1) amortized per name).
    fn collect_names(&mut self) {
        if !self.interner.collection_due() {
            return;
        }
        let mut live = vec![false; self.interner.id_bound()];
        for w in self.windows.values() {
            for &key in w.pairs.keys() {
                mark_pair(&mut live, key);
            }
        }
        for f in self.flights.values().flatten() {
            mark_pair(&mut live, f.key);
        }
        for h in &self.held {
            mark_pair(&mut live, pair_key(h.row.src, h.row.dst));
        }
        for &key in &self.established {
            mark_pair(&mut live, key);
        }
        self.interner.retain(&live);
    }

    /// Distinct service names held (interned) by this aggregator.
    pub fn names(&self) -> usize {
        self.interner.len()
    }

    /// End of input: aggregates the records held back (nothing came to contradict them),
    /// then closes every open window and every window a request in flight spans, oldest
    /// first. Records that arrive afterwards for a window that was closed here count as late.
    pub fn flush(&mut self) -> Vec<PartialWindow> {
        let mut out = Vec::with_capacity(self.windows.len());
        self.flush_each(true, |p| out.push(p));
        out
    }

    /// [`PairAggregator::flush`] (`end` true) or the flush of an input that went idle (`end`
    /// false: records held back stay held, since an input that stops right after a record far
    /// ahead has not confirmed the jump), handing each window to `hand` as it is made.
    pub fn flush_each(&mut self, end: bool, mut hand: impl FnMut(PartialWindow)) {
        if end {
            self.release_held(true);
            // an input's first records re-hold those far ahead of the earliest: take them too
            self.release_held(true);
        }
        while let Some(k) = self.next_to_close() {
            self.late_before_us = self.late_before_us.max(self.spec.window(k).end_us);
            if let Some(p) = self.close(k) {
                hand(p);
            }
        }
        self.collect_names();
    }

    fn hand_over(&mut self, k: i64, w: OpenWindow) -> PartialWindow {
        self.last_window_pairs = w.pairs.len();
        self.established.clear();
        self.established.extend(w.pairs.keys());
        let names = &self.interner;
        PartialWindow {
            window: self.spec.window(k),
            pairs: w
                .pairs
                .into_iter()
                .map(|(key, state)| {
                    let (s, d) = pair_ids(key);
                    PairPartial {
                        source: Arc::clone(names.name(s)),
                        destination: Arc::clone(names.name(d)),
                        state,
                    }
                })
                .collect(),
        }
    }

    /// The state to checkpoint: open windows, requests in flight, held records, watermark,
    /// counters.
    pub fn snapshot(&self) -> AggregatorSnapshot {
        let names = &self.interner;
        AggregatorSnapshot {
            spec: self.spec,
            newest_us: self.newest_us,
            late_before_us: self.late_before_us,
            windows: self
                .windows
                .iter()
                .map(|(&index, w)| OpenWindowData {
                    index,
                    first_position: w.first_position,
                    pairs: states_to_data(names, &w.pairs),
                })
                .collect(),
            counters: self.counters,
            flights: self
                .flights
                .iter()
                .flat_map(|(&next_window, v)| {
                    v.iter().map(move |f| {
                        let (s, d) = pair_ids(f.key);
                        FlightData {
                            next_window,
                            source: names.name(s).to_string(),
                            destination: names.name(d).to_string(),
                            end_us: f.end_us,
                            position: f.position,
                        }
                    })
                })
                .collect(),
            held: self
                .held
                .iter()
                .map(|h| (h.record.to_record(), h.row.position))
                .collect(),
        }
    }

    /// An aggregator holding a checkpointed state, for windows of `spec`.
    ///
    /// # Errors
    /// [`Error::State`] when the snapshot was taken under another window spec or holds an
    /// inconsistent pair state.
    pub fn restore(spec: WindowSpec, snapshot: AggregatorSnapshot) -> Result<Self> {
        spec.check_same(&snapshot.spec)?;
        let mut agg = PairAggregator::new(spec);
        agg.newest_us = snapshot.newest_us;
        agg.late_before_us = snapshot.late_before_us;
        agg.counters = snapshot.counters;
        for w in snapshot.windows {
            let pairs = states_from_data(&mut agg.interner, w.pairs, spec.slots)?;
            agg.windows.insert(
                w.index,
                OpenWindow {
                    pairs,
                    first_position: w.first_position,
                },
            );
        }
        for f in snapshot.flights {
            let key = pair_key(
                agg.interner.intern(&f.source),
                agg.interner.intern(&f.destination),
            );
            agg.flights.entry(f.next_window).or_default().push(Flight {
                key,
                end_us: f.end_us,
                position: f.position,
            });
        }
        for (record, position) in snapshot.held {
            let row = Row {
                start: record.start_us,
                duration: record.duration_us,
                src: agg.interner.intern(&record.source),
                dst: agg.interner.intern(&record.destination),
                status: record.status,
                class: flags::unanswered_tcp(
                    record
                        .response_flags
                        .as_deref()
                        .map_or(flags::NONE, flags::classify),
                    record.protocol.as_deref() == Some("tcp"),
                    record.status,
                    (record.bytes_received, record.bytes_sent),
                    record.duration_us,
                ),
                bytes_in: record.bytes_received,
                bytes_out: record.bytes_sent,
                position,
                dims: agg.dims.id([
                    record.source_zone.as_deref(),
                    record.source_version.as_deref(),
                    record.destination_zone.as_deref(),
                    record.destination_version.as_deref(),
                ]),
            };
            agg.held.push(Held {
                row,
                record: HeldRecord::Restored(Box::new(record)),
            });
        }
        Ok(agg)
    }
}

/// The open window `k`, opened with room for `capacity` pairs if needed.
#[inline]
fn open<'a>(
    windows: &'a mut BTreeMap<i64, OpenWindow>,
    max_open: &mut u64,
    k: i64,
    capacity: usize,
) -> &'a mut OpenWindow {
    let len = windows.len();
    match windows.entry(k) {
        Entry::Occupied(o) => o.into_mut(),
        Entry::Vacant(v) => {
            *max_open = (*max_open).max(len as u64 + 1);
            v.insert(OpenWindow::with_capacity(capacity))
        }
    }
}

#[cfg(test)]
mod tests;
