//! Step 1 of detection: pair aggregation. Flow-record batches in, each closed window's
//! [`PairWindow`]s out.
//!
//! # Windows and watermark
//!
//! Windows are tumbling, `[k·L, (k+1)·L)` µs since the epoch, by the record's `start_us`. The
//! watermark is the newest `start_us` seen so far minus the allowed lateness, advanced record by
//! record in input order, so the result does not depend on where the input was cut into
//! batches. A record whose start window ends at or before the watermark is *late*: it is counted
//! in [`PairAggregator::late_records`] and not aggregated. After each batch, every open window
//! whose end is at or before the watermark closes and is returned, oldest first. A window is
//! open only once some record touched it; windows nobody touched are not reported.
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
//!   state in those windows (with `requests` 0) if needed. Records without a duration add
//!   nothing. At most [`MAX_SPAN_WINDOWS`] windows count a request's time in flight: longer
//!   requests are cut there and counted in [`PairAggregator::clamped_records`].
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
//! State per open pair-window (64-bit target): a 128-byte [`PairState`] (holding up to 4
//! durations and 4 in-flight intervals inline) in a hash-map slot of 137 bytes, 1.1 to 2.3
//! slots per pair depending on the map's load (150–320 bytes), plus
//! * latency: past 4 durations, up to [`RAW_LATENCY_VALUES`] × 8 = 4 KiB of raw durations,
//!   then an HDR histogram of `(b + 1) × 128 × 4` bytes where `b` = ⌈log2(max µs ÷ 256)⌉ + 1
//!   buckets: 7.5 KiB for latencies up to 2 s, 9 KiB up to 10 s, 29 KiB at most (durations
//!   near `u64::MAX`), plus allocator overhead;
//! * concurrency: 4 × (L ÷ resolution + 1) bytes once allocated (404 bytes at the defaults,
//!   40 KiB at most, [`MAX_CONCURRENCY_SLOTS`]).
//!
//! So a pair with up to 4 requests per window costs at most 320 bytes, one with a few hundred
//! up to 4.7 KiB, a busy pair about 10 KiB at the defaults with latencies under 10 s (70 KiB
//! in the worst case of any duration and the finest resolution). Measured: `cargo bench
//! --bench window` prints the resident memory of 100 k pairs in one window. Service names are
//! interned once per process (one copy per distinct name).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::Duration;

use arrow::array::{Array, AsArray, DictionaryArray, RecordBatch};
use arrow::datatypes::Int32Type;
use hdrhistogram::Histogram;
use schemas::{FlowColumns, Latency, PairWindow, SCHEMA_VERSION, Window};
use serde::{Deserialize, Serialize};

use crate::config::WindowConfig;
use crate::error::{Error, Result};
use crate::flags;

/// Most concurrency slots per window (`length ÷ concurrency-resolution`), so that the
/// concurrency state of a pair-window stays at most 40 KiB.
pub const MAX_CONCURRENCY_SLOTS: u64 = 10_000;

/// Most windows (the start window included) in which one request's time in flight counts.
/// Bounds the state a single very long request (or a bogus duration) can create.
pub const MAX_SPAN_WINDOWS: i64 = 1024;

/// Durations kept raw per pair-window before they go into an HDR histogram.
pub const RAW_LATENCY_VALUES: usize = 512;

/// Significant digits of the latency histograms.
const SIGNIFICANT_DIGITS: u8 = 2;

/// The validated `[detect.window]` config, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    length_us: i64,
    lateness_us: i64,
    resolution_us: i64,
    slots: usize,
}

fn whole_us(d: Duration, key: &'static str) -> Result<i64> {
    if d.subsec_nanos() % 1_000 != 0 {
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
        if length_us == 0 {
            return Err(Error::Config {
                key: "window.length",
                reason: "must be > 0".into(),
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
        Ok(WindowSpec {
            length_us,
            lateness_us,
            resolution_us,
            slots: slots as usize,
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
}

/// One closed window's pair aggregates: the serializable hand-off from [`PairAggregator`] to
/// [`crate::node::NodeDetector`] (when graywatch scales out, this is what gets republished
/// keyed by node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedPairs {
    /// The window.
    pub window: Window,
    /// Its pairs, sorted by (source, destination).
    pub pairs: Vec<PairWindow>,
}

/// Service names to dense `u32` ids, so the hot path hashes integers, not strings.
#[derive(Debug, Default)]
struct Interner {
    ids: foldhash::HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    /// `ranks[id]` = position of the name in sorted order, for sorting pairs by name with
    /// integer compares; recomputed when names were added.
    ranks: Vec<u32>,
}

impl Interner {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    fn update_ranks(&mut self) {
        if self.ranks.len() == self.names.len() {
            return;
        }
        let mut order: Vec<u32> = (0..self.names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.names[a as usize].cmp(&self.names[b as usize]));
        self.ranks = vec![0; order.len()];
        for (rank, id) in order.into_iter().enumerate() {
            self.ranks[id as usize] = rank as u32;
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

/// Durations inline (no allocation) for quiet pairs.
const INLINE_DURATIONS: usize = 4;

/// Durations of one pair-window: a few inline, then raw in a vector, then an HDR histogram.
#[derive(Debug)]
enum LatencyState {
    Inline(u8, [u32; INLINE_DURATIONS]),
    Raw(Vec<u64>),
    Hist(Box<Histogram<u32>>),
}

fn new_histogram() -> Histogram<u32> {
    Histogram::new(SIGNIFICANT_DIGITS).expect("2 significant digits is a valid precision")
}

fn record(h: &mut Histogram<u32>, v: u64) {
    // auto-resize only fails when the counts array can't be addressed; clamp then.
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

/// The rank (1-based) of quantile `q` among `n` values, exactly as
/// `Histogram::value_at_quantile` computes it.
fn quantile_rank(q: f64, n: u64) -> u64 {
    ((q * n as f64).ceil() as u64).clamp(1, n)
}

/// p50, p90, p99 of raw durations: the value at rank ⌈q·n⌉ (as `value_at_quantile` ranks)
/// mapped to its histogram bucket's highest equivalent value, capped at `max`.
fn raw_quantiles(v: &mut [u64], scale: &Histogram<u32>, max: u64) -> [u64; 3] {
    let n = v.len() as u64;
    let ranks = [0.5, 0.9, 0.99].map(|q| (quantile_rank(q, n) - 1) as usize);
    let mut at_rank = [0u64; 3];
    if v.len() <= 64 {
        v.sort_unstable();
        at_rank = ranks.map(|at| v[at]);
    } else {
        // select the ranks in increasing order, each among the values at or above the previous
        // one (a later selection may reorder those, so take each value as it is selected):
        // about 1.6 n steps
        let mut from = 0;
        for (x, &at) in at_rank.iter_mut().zip(&ranks) {
            *x = *v[from..].select_nth_unstable(at - from).1;
            from = at;
        }
    }
    at_rank.map(|x| scale.highest_equivalent(x).min(max))
}

/// Intervals of in-flight slots handled inline, before a difference array is allocated.
const INLINE_INTERVALS: usize = 4;

/// Slots in flight: a few intervals inline (no allocation), then a difference array of
/// `slots + 1` counters.
#[derive(Debug)]
enum Slots {
    Few(u8, [(u16, u16); INLINE_INTERVALS]),
    Diff(Box<[i32]>),
}

impl Slots {
    fn add(&mut self, first: usize, last: usize, slots: usize) {
        match self {
            Slots::Few(n, iv) if (*n as usize) < INLINE_INTERVALS => {
                iv[*n as usize] = (first as u16, last as u16);
                *n += 1;
            }
            Slots::Few(_, iv) => {
                let mut d = vec![0i32; slots + 1].into_boxed_slice();
                for &(f, l) in iv.iter() {
                    d[f as usize] += 1;
                    d[l as usize + 1] -= 1;
                }
                d[first] += 1;
                d[last + 1] -= 1;
                *self = Slots::Diff(d);
            }
            Slots::Diff(d) => {
                d[first] = d[first].wrapping_add(1);
                d[last + 1] = d[last + 1].wrapping_sub(1);
            }
        }
    }

    fn peak(&self) -> u64 {
        match self {
            Slots::Few(n, iv) => {
                let iv = &iv[..*n as usize];
                // the most intervals overlap at the start of one of them
                iv.iter()
                    .map(|&(s, _)| iv.iter().filter(|&&(f, l)| f <= s && s <= l).count())
                    .max()
                    .unwrap_or(0) as u64
            }
            Slots::Diff(d) => {
                let mut run = 0i64;
                let mut peak = 0i64;
                for &x in d.iter() {
                    run += x as i64;
                    peak = peak.max(run);
                }
                peak as u64
            }
        }
    }
}

/// The running aggregates of one pair in one open window.
#[derive(Debug)]
pub struct PairState {
    source: u32,
    destination: u32,
    /// Requests in flight during the whole window.
    full_cover: u32,
    requests: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Σ overlap of requests in flight with the window, µs.
    overlap_us: u64,
    /// Exact largest duration, µs; meaningful when `timed > 0`.
    max_us: u64,
    timed: u64,
    latency: LatencyState,
    slots: Slots,
}

impl PairState {
    fn new(source: u32, destination: u32) -> Self {
        PairState {
            source,
            destination,
            full_cover: 0,
            requests: 0,
            errors: 0,
            bytes_in: 0,
            bytes_out: 0,
            overlap_us: 0,
            max_us: 0,
            timed: 0,
            latency: LatencyState::Inline(0, [0; INLINE_DURATIONS]),
            slots: Slots::Few(0, [(0, 0); INLINE_INTERVALS]),
        }
    }

    #[inline]
    fn record_latency(&mut self, d: u64) {
        self.timed += 1;
        self.max_us = self.max_us.max(d);
        match &mut self.latency {
            LatencyState::Inline(n, a)
                if (*n as usize) < INLINE_DURATIONS && d <= u32::MAX as u64 =>
            {
                a[*n as usize] = d as u32;
                *n += 1;
            }
            LatencyState::Inline(n, a) => {
                let mut v = Vec::with_capacity(4 * INLINE_DURATIONS);
                v.extend(a[..*n as usize].iter().map(|&x| u64::from(x)));
                v.push(d);
                self.latency = LatencyState::Raw(v);
            }
            LatencyState::Raw(v) if v.len() < RAW_LATENCY_VALUES => v.push(d),
            LatencyState::Raw(v) => {
                // sized for the largest duration so far: no reallocation while it fills
                let mut h = Histogram::new_with_bounds(1, self.max_us.max(2), SIGNIFICANT_DIGITS)
                    .unwrap_or_else(|_| new_histogram());
                h.auto(true);
                for &x in v.iter() {
                    record(&mut h, x);
                }
                record(&mut h, d);
                self.latency = LatencyState::Hist(Box::new(h));
            }
            LatencyState::Hist(h) => record(h, d),
        }
    }

    /// Quantiles as `Histogram::value_at_quantile` gives them (the highest value equivalent to
    /// the value at rank ⌈q·n⌉), capped at the exact max. For raw durations the value at that
    /// rank is selected directly: same rank, same bucket, same answer, without a histogram.
    /// `scale` is any histogram with the same precision (only its bucket arithmetic is used).
    fn latency(&mut self, scale: &Histogram<u32>) -> Option<Latency> {
        if self.timed == 0 {
            return None;
        }
        let max = self.max_us;
        let [p50_us, p90_us, p99_us] = match &mut self.latency {
            LatencyState::Hist(h) => {
                // one pass for the three quantiles instead of three `value_at_quantile` walks;
                // `value_iterated_to` is the same highest equivalent value it returns
                let n = h.len();
                let ranks = [0.5, 0.9, 0.99].map(|q| quantile_rank(q, n));
                let mut out = [max; 3];
                let (mut seen, mut i) = (0u64, 0);
                for v in h.iter_recorded() {
                    seen += u64::from(v.count_at_value());
                    while i < 3 && seen >= ranks[i] {
                        out[i] = v.value_iterated_to().min(max);
                        i += 1;
                    }
                    if i == 3 {
                        break;
                    }
                }
                out
            }
            LatencyState::Inline(n, a) => {
                let mut v = [0u64; INLINE_DURATIONS];
                for (x, &y) in v.iter_mut().zip(a.iter()) {
                    *x = u64::from(y);
                }
                raw_quantiles(&mut v[..*n as usize], scale, max)
            }
            LatencyState::Raw(v) => raw_quantiles(v, scale, max),
        };
        Some(Latency {
            p50_us,
            p90_us,
            p99_us,
            max_us: max,
        })
    }
}

/// One open window: its pairs, by `(source id, destination id)`.
#[derive(Debug, Default)]
struct OpenWindow {
    pairs: foldhash::HashMap<u64, PairState>,
}

impl OpenWindow {
    #[inline]
    fn pair(&mut self, source: u32, destination: u32) -> &mut PairState {
        let key = (u64::from(source) << 32) | u64::from(destination);
        self.pairs
            .entry(key)
            .or_insert_with(|| PairState::new(source, destination))
    }
}

/// Pair aggregation: takes flow-record batches, keeps one [`PairState`] per pair per open
/// window, and returns windows as the watermark passes them. See the [module docs](self).
///
/// Synchronous, no I/O, no clock: time comes only from the records' `start_us`.
#[derive(Debug)]
pub struct PairAggregator {
    spec: WindowSpec,
    interner: Interner,
    windows: BTreeMap<i64, OpenWindow>,
    /// Newest `start_us` seen, per input (see [`PairAggregator::set_inputs`]).
    input_max_us: Vec<Option<i64>>,
    /// Inputs that ended: they no longer hold the watermark back.
    input_done: Vec<bool>,
    /// The input the next pushed batch comes from.
    current_input: usize,
    /// That input's newest start, kept here on the hot path (its `input_max_us` entry is
    /// stale while it is current).
    current_newest: Option<i64>,
    /// Records whose start window ends at or before this are late: the watermark, or after
    /// [`PairAggregator::flush`] the end of the last closed window if that is later.
    late_before_us: i64,
    /// Precision reference for quantiles of raw durations (never recorded into).
    scale: Histogram<u32>,
    /// Pairs of the last closed window: the initial capacity of a window opened by a request
    /// start or the spill into the next window (not of further windows a long request spans).
    last_window_pairs: usize,
    records: u64,
    late_records: u64,
    clamped_records: u64,
    max_open_windows: u64,
    /// Records starting after this are not aggregated (see [`PairAggregator::set_not_after`]).
    not_after_us: i64,
    future_records: u64,
    /// Rows of the last pushed batch that were not aggregated, and why.
    dropped_rows: Vec<(u32, Dropped)>,
}

/// Why a record was not aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dropped {
    /// Its window was already behind the watermark.
    Late,
    /// It starts after the configured bound on event time (a clock far ahead, a bad year).
    Future,
}

impl PairAggregator {
    /// An aggregator with no open windows and no watermark yet.
    pub fn new(spec: WindowSpec) -> Self {
        PairAggregator {
            spec,
            interner: Interner::default(),
            windows: BTreeMap::new(),
            input_max_us: vec![None],
            input_done: vec![false],
            current_input: 0,
            current_newest: None,
            late_before_us: i64::MIN,
            scale: new_histogram(),
            last_window_pairs: 0,
            records: 0,
            late_records: 0,
            clamped_records: 0,
            max_open_windows: 0,
            not_after_us: i64::MAX,
            future_records: 0,
            dropped_rows: Vec::new(),
        }
    }

    /// Records that start after `not_after_us` (µs since the epoch) are counted in
    /// [`PairAggregator::future_records`] and not aggregated: one record from a broken clock
    /// (year 2100) would otherwise move the watermark so far that everything after it is late.
    /// The caller passes the bound in (e.g. its wall clock plus a margin); detection reads no
    /// clock.
    pub fn set_not_after(&mut self, not_after_us: i64) {
        self.not_after_us = not_after_us;
    }

    /// Records that started after the bound of [`PairAggregator::set_not_after`].
    pub fn future_records(&self) -> u64 {
        self.future_records
    }

    /// Rows (indices into the last batch given to [`PairAggregator::push`]) that were not
    /// aggregated, in row order, with the reason.
    pub fn dropped_rows(&self) -> &[(u32, Dropped)] {
        &self.dropped_rows
    }

    /// The window geometry.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Current watermark, µs since the epoch: the newest start seen minus the allowed lateness
    /// (with several inputs, the oldest of their newest starts); records whose window ends at
    /// or before it are late. `None` before it first moved.
    pub fn watermark(&self) -> Option<i64> {
        (self.late_before_us != i64::MIN).then_some(self.late_before_us)
    }

    /// Declares that batches come from `inputs` (>= 1) sources read in turns, e.g. several
    /// files of proxies that cover the same time. The watermark then follows the input that is
    /// furthest behind: the oldest of the inputs' newest start times, minus the lateness, and
    /// it does not move until every input has given a record (or ended). Call before the
    /// first batch; [`PairAggregator::set_input`] names each batch's input.
    pub fn set_inputs(&mut self, inputs: usize) {
        let n = inputs.max(1);
        self.input_max_us = vec![None; n];
        self.input_done = vec![false; n];
        self.current_input = 0;
        self.current_newest = None;
    }

    /// The batches pushed from now on come from input `input` (< the count given to
    /// [`PairAggregator::set_inputs`]; out of range is taken as the last input).
    pub fn set_input(&mut self, input: usize) {
        self.input_max_us[self.current_input] = self.current_newest;
        self.current_input = input.min(self.input_max_us.len() - 1);
        self.current_newest = self.input_max_us[self.current_input];
    }

    /// The newest start seen from input `input`, µs since the epoch.
    pub fn input_newest(&self, input: usize) -> Option<i64> {
        if input == self.current_input {
            return self.current_newest;
        }
        self.input_max_us.get(input).copied().flatten()
    }

    /// Input `input` has ended: it stops holding the watermark back. Returns the windows that
    /// this closes.
    pub fn end_input(&mut self, input: usize) -> Vec<ClosedPairs> {
        if let Some(done) = self.input_done.get_mut(input) {
            *done = true;
        }
        self.advance_watermark();
        self.close_ready()
    }

    /// Moves the watermark to the oldest newest-start of the inputs still reading, minus the
    /// lateness; stays put while one of them has given no record yet.
    fn advance_watermark(&mut self) {
        self.input_max_us[self.current_input] = self.current_newest;
        let mut oldest: Option<i64> = None;
        for (m, done) in self.input_max_us.iter().zip(&self.input_done) {
            if *done {
                continue;
            }
            match m {
                None => return,
                Some(m) => oldest = Some(oldest.map_or(*m, |o| o.min(*m))),
            }
        }
        if let Some(o) = oldest {
            let wm = o.saturating_sub(self.spec.lateness_us);
            self.late_before_us = self.late_before_us.max(wm);
        }
    }

    /// Records read (late ones included).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Records that arrived after their window was behind the watermark (not aggregated).
    pub fn late_records(&self) -> u64 {
        self.late_records
    }

    /// Records whose time in flight was cut after [`MAX_SPAN_WINDOWS`] windows.
    pub fn clamped_records(&self) -> u64 {
        self.clamped_records
    }

    /// Most windows open at once so far.
    pub fn max_open_windows(&self) -> u64 {
        self.max_open_windows
    }

    /// Windows currently open.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Aggregates `batch` record by record, then closes and returns every window whose end is
    /// at or before the watermark, oldest first.
    ///
    /// # Errors
    /// [`Error::Schema`] when `batch` lacks a flow-record column or has it with the wrong type;
    /// nothing of the batch is aggregated then.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Vec<ClosedPairs>> {
        let cols = FlowColumns::try_new(batch)?;
        let mut sources = DictIds::new(cols.source, schemas::flow::columns::SOURCE)?;
        let mut destinations = DictIds::new(cols.destination, schemas::flow::columns::DESTINATION)?;
        let flag_class = flags::classify_dictionary(cols.response_flags)?;
        let flag_keys = cols.response_flags.keys().values();
        let flag_nulls = cols.response_flags.nulls();
        let starts = cols.start_us.values();
        let durations = cols.duration_us.values();
        let duration_nulls = cols.duration_us.nulls();
        let statuses = cols.status.values();
        let status_nulls = cols.status.nulls();
        let bytes_received = cols.bytes_received.values();
        let bytes_sent = cols.bytes_sent.values();
        let spec = self.spec;
        let l = spec.length_us;
        let slot_of = |t: i64, ws: i64| {
            ((t.saturating_sub(ws).max(0) / spec.resolution_us) as usize).min(spec.slots - 1)
        };

        self.records += batch.num_rows() as u64;
        self.dropped_rows.clear();
        for row in 0..batch.num_rows() {
            let start = starts[row];
            if start > self.not_after_us {
                self.future_records += 1;
                self.dropped_rows.push((row as u32, Dropped::Future));
                continue;
            }
            let k = start.div_euclid(l);
            let ws = k.saturating_mul(l);
            let we = k.saturating_add(1).saturating_mul(l);
            if we <= self.late_before_us {
                self.late_records += 1;
                self.dropped_rows.push((row as u32, Dropped::Late));
                continue;
            }
            if self.current_newest.is_none_or(|m| start > m) {
                self.current_newest = Some(start);
                if self.input_max_us.len() == 1 {
                    let wm = start.saturating_sub(spec.lateness_us);
                    self.late_before_us = self.late_before_us.max(wm);
                } else {
                    self.advance_watermark();
                }
            }
            let src = sources.id(row, &mut self.interner);
            let dst = destinations.id(row, &mut self.interner);
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
            let duration = match duration_nulls {
                Some(n) if n.is_null(row) => None,
                _ => Some(durations[row]),
            };

            let hint = self.last_window_pairs;
            let state = open(&mut self.windows, &mut self.max_open_windows, k, hint).pair(src, dst);
            state.requests += 1;
            state.errors += u64::from(flags::is_error_class(status, class));
            state.bytes_in = state.bytes_in.saturating_add(bytes_received[row]);
            state.bytes_out = state.bytes_out.saturating_add(bytes_sent[row]);
            let Some(d) = duration else { continue };
            state.record_latency(d);
            if d == 0 {
                let s = slot_of(start, ws);
                state.slots.add(s, s, spec.slots);
                continue;
            }
            // in flight [start, end), its share of the start window here, the rest in `spill`
            let end = start.saturating_add(i64::try_from(d).unwrap_or(i64::MAX));
            let hi = end.min(we);
            if hi > start {
                state.overlap_us = state.overlap_us.wrapping_add((hi - start) as u64);
                if start == ws && hi == we {
                    state.full_cover = state.full_cover.wrapping_add(1);
                } else {
                    state
                        .slots
                        .add(slot_of(start, ws), slot_of(hi - 1, ws), spec.slots);
                }
            }
            if end > we {
                self.spill(k, end, src, dst);
            }
        }
        Ok(self.close_ready())
    }

    /// Adds the time in flight of a request that started in window `k` and ends at `end` µs
    /// (exclusive) to windows `k + 1 ..`, at most up to [`MAX_SPAN_WINDOWS`] windows in all.
    fn spill(&mut self, k: i64, mut end: i64, src: u32, dst: u32) {
        let spec = self.spec;
        let mut last_k = spec.index_of(end - 1);
        let max_k = k.saturating_add(MAX_SPAN_WINDOWS - 1);
        if last_k > max_k {
            last_k = max_k;
            end = spec.window(max_k).end_us;
            self.clamped_records += 1;
        }
        for kk in k.saturating_add(1)..=last_k {
            let w = spec.window(kk);
            let hi = end.min(w.end_us);
            if hi <= w.start_us {
                continue;
            }
            // the next window usually opens here, before any request starts in it
            let hint = if kk == k + 1 {
                self.last_window_pairs
            } else {
                0
            };
            let state =
                open(&mut self.windows, &mut self.max_open_windows, kk, hint).pair(src, dst);
            state.overlap_us = state.overlap_us.wrapping_add((hi - w.start_us) as u64);
            if hi == w.end_us {
                state.full_cover = state.full_cover.wrapping_add(1);
            } else {
                let last =
                    (((hi - 1 - w.start_us) / spec.resolution_us) as usize).min(spec.slots - 1);
                state.slots.add(0, last, spec.slots);
            }
        }
    }

    /// Closes every open window whose end is at or before the watermark.
    fn close_ready(&mut self) -> Vec<ClosedPairs> {
        let mut out = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            if self.spec.window(*entry.key()).end_us > self.late_before_us {
                break;
            }
            let (k, w) = entry.remove_entry();
            out.push(self.finish(k, w));
        }
        out
    }

    /// End of input: closes every open window, oldest first. Records that arrive afterwards
    /// for a window that was closed here count as late.
    pub fn flush(&mut self) -> Vec<ClosedPairs> {
        let mut out = Vec::with_capacity(self.windows.len());
        while let Some((k, w)) = self.windows.pop_first() {
            self.late_before_us = self.late_before_us.max(self.spec.window(k).end_us);
            out.push(self.finish(k, w));
        }
        out
    }

    fn finish(&mut self, k: i64, w: OpenWindow) -> ClosedPairs {
        let window = self.spec.window(k);
        let secs = window.len_secs();
        let len_us = window.len_us().max(1) as f64;
        self.last_window_pairs = w.pairs.len();
        let mut states: Vec<PairState> = w.pairs.into_values().collect();
        self.interner.update_ranks();
        let names = &self.interner;
        let ranks = &names.ranks;
        // sort 16-byte keys, not the states
        let mut order: Vec<(u64, u32)> = states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = (u64::from(ranks[s.source as usize]) << 32)
                    | u64::from(ranks[s.destination as usize]);
                (key, i as u32)
            })
            .collect();
        order.sort_unstable_by_key(|&(key, _)| key);
        let scale = &self.scale;
        let pairs = order
            .iter()
            .map(|&(_, i)| {
                let s = &mut states[i as usize];
                PairWindow {
                    schema_version: SCHEMA_VERSION,
                    kind: "pair-window".into(),
                    window,
                    source: names.name(s.source).to_owned(),
                    destination: names.name(s.destination).to_owned(),
                    requests: s.requests,
                    rate_rps: s.requests as f64 / secs,
                    errors: s.errors,
                    error_ratio: if s.requests == 0 {
                        0.0
                    } else {
                        s.errors as f64 / s.requests as f64
                    },
                    latency: s.latency(scale),
                    concurrency_mean: s.overlap_us as f64 / len_us,
                    concurrency_peak: u64::from(s.full_cover) + s.slots.peak(),
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                    bandwidth_in_bps: s.bytes_in as f64 / secs,
                    bandwidth_out_bps: s.bytes_out as f64 / secs,
                }
            })
            .collect();
        ClosedPairs { window, pairs }
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
            v.insert(OpenWindow {
                pairs: foldhash::HashMap::with_capacity_and_hasher(capacity, Default::default()),
            })
        }
    }
}

#[cfg(test)]
mod tests;
