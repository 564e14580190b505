//! The running aggregates of one pair in one window ([`PairState`]): how records go in, how
//! two of them merge, how they become golden signals, and their serializable form
//! ([`PairStateData`]) for checkpoints and the repartition topic.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use std::sync::Arc;

use schemas::{Breakdown, Latency, PairWindow, SCHEMA_VERSION, Window};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Durations kept raw per pair-window before they go into an HDR histogram.
pub const RAW_LATENCY_VALUES: usize = 512;

/// Significant digits of the latency histograms.
const SIGNIFICANT_DIGITS: u8 = 2;

/// Most (zone, version) combinations kept per pair-window in its breakdown; requests of
/// further combinations are counted in `breakdown_overflow`.
pub const MAX_BREAKDOWN: usize = 16;

/// The dimensions of one record: (source zone, source version, destination zone, destination
/// version), shared by every record with the same four values.
pub type Dims = Arc<[Option<Arc<str>>; 4]>;

/// Counts of one combination of dimensions in one pair-window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DimCounts {
    requests: u64,
    errors: u64,
    timed: u64,
    duration_sum_us: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl DimCounts {
    fn add(&mut self, o: &DimCounts) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.timed += o.timed;
        self.duration_sum_us = self.duration_sum_us.saturating_add(o.duration_sum_us);
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
    }
}

/// A pair-window's requests by dimensions: at most [`MAX_BREAKDOWN`] combinations, the rest's
/// requests counted as overflow. The first combination is held inline: a pair's zones and
/// versions rarely change within a window, so most pair-windows allocate nothing for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Breakdowns {
    first: Option<(Dims, DimCounts)>,
    more: Option<Box<MoreBreakdowns>>,
}

/// The combinations after a pair-window's first, and the overflow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MoreBreakdowns {
    /// At most [`MAX_BREAKDOWN`] − 1.
    entries: Vec<(Dims, DimCounts)>,
    overflow: u64,
}

impl Breakdowns {
    #[inline]
    fn add(&mut self, dims: &Dims, c: &DimCounts) {
        let same = |d: &Dims| Arc::ptr_eq(d, dims) || **d == **dims;
        match &mut self.first {
            None => self.first = Some((Arc::clone(dims), c.clone())),
            Some((d, e)) if same(d) => e.add(c),
            Some(_) => {
                let more = self.more.get_or_insert_default();
                if let Some((_, e)) = more.entries.iter_mut().find(|(d, _)| same(d)) {
                    e.add(c);
                } else if more.entries.len() + 1 < MAX_BREAKDOWN {
                    more.entries.push((Arc::clone(dims), c.clone()));
                } else {
                    more.overflow += c.requests;
                }
            }
        }
    }

    /// Requests of combinations past [`MAX_BREAKDOWN`].
    fn overflow(&self) -> u64 {
        self.more.as_ref().map_or(0, |m| m.overflow)
    }

    fn add_overflow(&mut self, requests: u64) {
        if requests > 0 {
            self.more.get_or_insert_default().overflow += requests;
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(Dims, DimCounts)> {
        self.first
            .iter()
            .chain(self.more.iter().flat_map(|m| m.entries.iter()))
    }

    fn merge(&mut self, o: Breakdowns) {
        if self.first.is_none() && self.more.is_none() {
            *self = o;
            return;
        }
        self.add_overflow(o.overflow());
        for (d, c) in o.iter() {
            self.add(d, c);
        }
    }

    /// Combinations held: the first, and the ones after it.
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.as_ref().map_or(0, |m| m.entries.len())
    }

    fn to_data(&self) -> Vec<Breakdown> {
        let mut v: Vec<Breakdown> = Vec::with_capacity(self.len());
        v.extend(self.iter().map(|(d, c)| {
            let [sz, sv, dz, dv] = &**d;
            Breakdown {
                source_zone: sz.clone(),
                source_version: sv.clone(),
                destination_zone: dz.clone(),
                destination_version: dv.clone(),
                requests: c.requests,
                errors: c.errors,
                timed: c.timed,
                duration_sum_us: c.duration_sum_us,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
            }
        }));
        if v.len() > 1 {
            v.sort_unstable();
        }
        v
    }

    fn from_data(data: Vec<Breakdown>, overflow: u64) -> Self {
        let mut b = Breakdowns::default();
        b.add_overflow(overflow);
        for x in data {
            let dims: Dims = Arc::new([
                x.source_zone,
                x.source_version,
                x.destination_zone,
                x.destination_version,
            ]);
            b.add(
                &dims,
                &DimCounts {
                    requests: x.requests,
                    errors: x.errors,
                    timed: x.timed,
                    duration_sum_us: x.duration_sum_us,
                    bytes_in: x.bytes_in,
                    bytes_out: x.bytes_out,
                },
            );
        }
        b
    }
}

/// Durations inline (no allocation) for quiet pairs.
const INLINE_DURATIONS: usize = 4;

/// Intervals of in-flight slots handled inline, before a difference array is allocated.
const INLINE_INTERVALS: usize = 4;

/// Durations of one pair-window: a few inline, then raw in a vector, then an HDR histogram.
#[derive(Debug, Clone)]
enum LatencyState {
    Inline(u8, [u32; INLINE_DURATIONS]),
    Raw(Vec<u64>),
    Hist(Box<Histogram<u32>>),
}

/// A histogram with graywatch's precision (2 significant digits), auto-resizing.
pub(crate) fn new_histogram() -> Histogram<u32> {
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

/// Slots in flight: a few intervals inline (no allocation), then a difference array of
/// `slots + 1` counters.
#[derive(Debug, Clone)]
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

    fn merge(&mut self, other: Slots, slots: usize) {
        match other {
            Slots::Few(n, iv) => {
                for &(f, l) in &iv[..n as usize] {
                    self.add(f as usize, l as usize, slots);
                }
            }
            Slots::Diff(theirs) => match self {
                Slots::Diff(ours) => {
                    for (o, t) in ours.iter_mut().zip(theirs.iter()) {
                        *o = o.wrapping_add(*t);
                    }
                }
                Slots::Few(n, iv) => {
                    let mine = iv[..*n as usize].to_vec();
                    *self = Slots::Diff(theirs);
                    for (f, l) in mine {
                        self.add(f as usize, l as usize, slots);
                    }
                }
            },
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

/// The running aggregates of one pair in one window: counts and sums, durations (raw, then an
/// HDR histogram), and the concurrency slots. Mergeable: the states of one pair and window
/// from several inputs (files, Kafka partitions, instances) [`merge`](PairState::merge) into
/// the state one input holding all their records would have.
#[derive(Debug, Clone)]
pub struct PairState {
    /// Requests in flight during the whole window.
    pub(crate) full_cover: u32,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Σ overlap of requests in flight with the window, µs.
    pub(crate) overlap_us: u64,
    /// Exact largest duration, µs; meaningful when `timed > 0`.
    max_us: u64,
    timed: u64,
    latency: LatencyState,
    slots: Slots,
    /// Requests by zone and version, when records carry them.
    breakdown: Breakdowns,
}

impl Default for PairState {
    fn default() -> Self {
        PairState {
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
            breakdown: Breakdowns::default(),
        }
    }
}

impl PairState {
    /// Requests that started in the window.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    #[inline]
    pub(crate) fn record_latency(&mut self, d: u64) {
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

    /// Counts one request that started in the window under its dimensions (`error`: whether
    /// it was an error; `duration`: µs, if it has one).
    #[inline]
    pub(crate) fn record_dims(
        &mut self,
        dims: &Dims,
        error: bool,
        duration: Option<u64>,
        bytes: (u64, u64),
    ) {
        self.breakdown.add(
            dims,
            &DimCounts {
                requests: 1,
                errors: u64::from(error),
                timed: u64::from(duration.is_some()),
                duration_sum_us: duration.unwrap_or(0),
                bytes_in: bytes.0,
                bytes_out: bytes.1,
            },
        );
    }

    /// Marks slots `first..=last` (0-based, < `slots`) as having one more request in flight.
    #[inline]
    pub(crate) fn add_slots(&mut self, first: usize, last: usize, slots: usize) {
        self.slots.add(first, last, slots);
    }

    /// Adds `other` (the same pair in the same window, from another input) to this state.
    /// `slots` is the windows' concurrency slot count (both states must come from the same
    /// [`crate::pair::WindowSpec`]).
    pub fn merge(&mut self, other: PairState, slots: usize) {
        self.full_cover = self.full_cover.wrapping_add(other.full_cover);
        self.requests += other.requests;
        self.errors += other.errors;
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.overlap_us = self.overlap_us.wrapping_add(other.overlap_us);
        self.slots.merge(other.slots, slots);
        self.breakdown.merge(other.breakdown);
        if other.timed == 0 {
            return;
        }
        if self.timed == 0 {
            self.timed = other.timed;
            self.max_us = other.max_us;
            self.latency = other.latency;
            return;
        }
        match (&mut self.latency, other.latency) {
            (LatencyState::Hist(ours), LatencyState::Hist(theirs)) => {
                self.timed += other.timed;
                self.max_us = self.max_us.max(other.max_us);
                if ours.add(&*theirs).is_err() {
                    for v in theirs.iter_recorded() {
                        ours.saturating_record_n(v.value_iterated_to(), v.count_at_value());
                    }
                }
            }
            (LatencyState::Hist(_), theirs) => {
                for d in values(&theirs) {
                    self.record_latency(d);
                }
            }
            (_, LatencyState::Hist(mut theirs)) => {
                let mine = values(&self.latency);
                theirs.auto(true);
                for d in &mine {
                    record(&mut theirs, *d);
                }
                self.timed += other.timed;
                self.max_us = self.max_us.max(other.max_us);
                self.latency = LatencyState::Hist(theirs);
            }
            (_, theirs) => {
                for d in values(&theirs) {
                    self.record_latency(d);
                }
            }
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

    /// The golden signals of this state: the pair `source → destination` in `window` (see the
    /// [`crate::pair`] module docs for each signal's definition). `scale` is any histogram
    /// of graywatch's precision (see [`PairState::scale`]).
    pub fn finish(
        &mut self,
        window: Window,
        source: &str,
        destination: &str,
        scale: &Histogram<u32>,
    ) -> PairWindow {
        let secs = window.len_secs();
        let len_us = window.len_us().max(1) as f64;
        PairWindow {
            schema_version: SCHEMA_VERSION,
            kind: "pair-window".into(),
            window,
            source: source.to_owned(),
            destination: destination.to_owned(),
            requests: self.requests,
            rate_rps: self.requests as f64 / secs,
            errors: self.errors,
            error_ratio: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            latency: self.latency(scale),
            concurrency_mean: self.overlap_us as f64 / len_us,
            concurrency_peak: u64::from(self.full_cover) + self.slots.peak(),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            bandwidth_in_bps: self.bytes_in as f64 / secs,
            bandwidth_out_bps: self.bytes_out as f64 / secs,
            breakdown: self.breakdown.to_data(),
            breakdown_overflow: self.breakdown.overflow(),
        }
    }

    /// A precision reference for [`PairState::finish`] (never recorded into).
    pub fn scale() -> Histogram<u32> {
        new_histogram()
    }

    /// The serializable form (histograms in hdrhistogram's V2 format).
    pub fn to_data(&self) -> PairStateData {
        let latency = match &self.latency {
            LatencyState::Hist(h) => {
                let mut bytes = Vec::new();
                V2Serializer::new()
                    .serialize(h, &mut bytes)
                    .expect("V2 fails only on counts beyond i64 or I/O errors: u32 counts into a Vec have neither");
                LatencyData::Hdr(bytes)
            }
            other => LatencyData::Values(values(other)),
        };
        let slots = match &self.slots {
            Slots::Few(n, iv) => SlotsData::Intervals(iv[..*n as usize].to_vec()),
            Slots::Diff(d) => SlotsData::Diff(d.to_vec()),
        };
        PairStateData {
            requests: self.requests,
            errors: self.errors,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            overlap_us: self.overlap_us,
            max_us: self.max_us,
            timed: self.timed,
            full_cover: self.full_cover,
            latency,
            slots,
            breakdown: self.breakdown.to_data(),
            breakdown_overflow: self.breakdown.overflow(),
        }
    }

    /// Rebuilds a state from its serializable form, for windows cut into `slots` concurrency
    /// slots.
    ///
    /// # Errors
    /// [`Error::State`] when the data is inconsistent: a histogram that does not decode, a
    /// slot index or difference array that does not fit `slots`, durations that don't match
    /// their count.
    pub fn from_data(data: PairStateData, slots: usize) -> Result<Self> {
        let bad = |what: String| Error::State(what);
        let latency = match data.latency {
            LatencyData::Hdr(bytes) => {
                let mut h: Histogram<u32> = Deserializer::new()
                    .deserialize(&mut &bytes[..])
                    .map_err(|e| bad(format!("latency histogram: {e:?}")))?;
                h.auto(true);
                if h.len() != data.timed {
                    return Err(bad(format!(
                        "latency histogram holds {} values, the state says {}",
                        h.len(),
                        data.timed
                    )));
                }
                LatencyState::Hist(Box::new(h))
            }
            LatencyData::Values(v) => {
                if v.len() as u64 != data.timed {
                    return Err(bad(format!(
                        "{} durations, the state says {}",
                        v.len(),
                        data.timed
                    )));
                }
                let mut s = PairState::default();
                for d in v {
                    s.record_latency(d);
                }
                s.latency
            }
        };
        let state_slots = match data.slots {
            SlotsData::Intervals(iv) => {
                let mut s = Slots::Few(0, [(0, 0); INLINE_INTERVALS]);
                for (f, l) in iv {
                    if f > l || l as usize >= slots {
                        return Err(bad(format!("slot interval {f}..={l} of {slots} slots")));
                    }
                    s.add(f as usize, l as usize, slots);
                }
                s
            }
            SlotsData::Diff(d) => {
                if d.len() != slots + 1 {
                    return Err(bad(format!(
                        "{} concurrency counters for {slots} slots",
                        d.len()
                    )));
                }
                Slots::Diff(d.into_boxed_slice())
            }
        };
        Ok(PairState {
            full_cover: data.full_cover,
            requests: data.requests,
            errors: data.errors,
            bytes_in: data.bytes_in,
            bytes_out: data.bytes_out,
            overlap_us: data.overlap_us,
            max_us: data.max_us,
            timed: data.timed,
            latency,
            slots: state_slots,
            breakdown: Breakdowns::from_data(data.breakdown, data.breakdown_overflow),
        })
    }
}

/// The raw durations of a non-histogram latency state.
fn values(l: &LatencyState) -> Vec<u64> {
    match l {
        LatencyState::Inline(n, a) => a[..*n as usize].iter().map(|&x| u64::from(x)).collect(),
        LatencyState::Raw(v) => v.clone(),
        LatencyState::Hist(_) => Vec::new(),
    }
}

/// The serializable form of a [`PairState`]: what checkpoints and the repartition topic carry.
/// Counts and sums, not quantiles, so that states of one pair and window from several inputs
/// merge exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairStateData {
    /// Requests that started in the window.
    pub requests: u64,
    /// Of those, errors (see [`crate::is_error`]).
    pub errors: u64,
    /// Σ bytes received from the downstream, bytes.
    pub bytes_in: u64,
    /// Σ bytes sent to the downstream, bytes.
    pub bytes_out: u64,
    /// Σ overlap of requests in flight with the window, µs.
    pub overlap_us: u64,
    /// Largest duration, µs (meaningful when `timed` > 0).
    pub max_us: u64,
    /// Requests with a duration.
    pub timed: u64,
    /// Requests in flight during the whole window.
    pub full_cover: u32,
    /// The durations.
    pub latency: LatencyData,
    /// Requests in flight per concurrency slot.
    pub slots: SlotsData,
    /// Requests by zone and version (at most [`MAX_BREAKDOWN`] entries).
    #[serde(default)]
    pub breakdown: Vec<Breakdown>,
    /// Requests of combinations past [`MAX_BREAKDOWN`].
    #[serde(default)]
    pub breakdown_overflow: u64,
}

/// Durations of a pair-window, serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatencyData {
    /// Up to [`RAW_LATENCY_VALUES`] durations, µs, in arrival order.
    Values(Vec<u64>),
    /// An HDR histogram (2 significant digits) in hdrhistogram's V2 format (uncompressed).
    Hdr(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Requests in flight per concurrency slot, serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotsData {
    /// Up to 4 inclusive slot intervals `(first, last)`, one per request.
    Intervals(Vec<(u16, u16)>),
    /// A difference array of `slots + 1` counters: the count in flight in slot `i` is the sum
    /// of the first `i + 1`.
    Diff(Vec<i32>),
}
