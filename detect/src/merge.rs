//! Step 2 of pair aggregation: merging the partial windows of several inputs.
//!
//! Each input (a file, a Kafka partition) has its own [`crate::pair::PairAggregator`] and its
//! own watermark; when a window closes for an input, its [`PartialWindow`] comes here. The
//! [`WindowMerger`] adds up the partials of each window, and closes the window when every
//! *producer* (input) that is not idle has passed its end:
//!
//! ```text
//!  input a ─ PairAggregator ─┐ partials + watermark marks
//!  input b ─ PairAggregator ─┼──────────────────────────▶ WindowMerger ──▶ ClosedPairs
//!  input c ─ PairAggregator ─┘     (in process, or via the repartition topic)
//! ```
//!
//! - A window closes when its end is at or before the *merged watermark*: the oldest watermark
//!   of the producers that are not idle. A producer that has not marked yet holds it back.
//!   When every producer is idle (or none is known), every open window closes.
//! - A producer's partials for a window count once: a partial arriving after the producer's
//!   watermark passed the window (a producer that restarted and sent a window again) is a
//!   *duplicate*; one arriving after the window closed without that producer (it was idle) is
//!   *late*. Both are counted and dropped.
//! - Partials may come whole ([`WindowMerger::complete`], in process) or pair by pair
//!   ([`WindowMerger::partial`], from a topic): pair by pair they wait, per producer, until the
//!   producer's watermark passes the window, and a pair sent twice replaces itself, so a
//!   producer that died halfway through sending a window and sent it all again counts once.
//!
//! Synchronous, no I/O, no clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemas::Window;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::intern::{Interner, mark_pair, pair_ids, pair_key};
use crate::pair::{
    ClosedPairs, PairData, PairState, PartialWindow, WindowSpec, capped_key, merge_state,
    states_from_data, states_to_data,
};

/// Where a producer of partial windows is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The producer's watermark, µs since the epoch: it has handed over every window ending
    /// at or before it. `None` before its first window.
    pub watermark_us: Option<i64>,
    /// It has had no records for a while: it does not hold the merged watermark back.
    pub idle: bool,
}

/// Counters of a [`WindowMerger`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergerCounters {
    /// Windows closed.
    pub windows_closed: u64,
    /// Pair partials dropped because their producer had already handed that window over.
    pub duplicate_partials: u64,
    /// Pair partials dropped because their window had closed without them (the producer was
    /// idle when it closed).
    pub late_partials: u64,
    /// Pair partials of a new pair merged into a window that already held
    /// [`crate::config::WindowConfig::max_pairs`] pairs, counted under an
    /// [`crate::pair::OTHER`] pair.
    #[serde(default)]
    pub overflow_partials: u64,
}

#[derive(Debug, Clone, Copy)]
enum Refusal {
    Duplicate,
    Late,
}

#[derive(Debug, Default)]
struct MergeWindow {
    merged: foldhash::HashMap<u64, PairState>,
    /// Pairs sent one by one, per producer, until its watermark passes the window.
    pending: BTreeMap<Arc<str>, foldhash::HashMap<u64, PairState>>,
}

/// Merges the partial windows of several producers and closes windows on the merged
/// watermark. See the [module docs](self).
#[derive(Debug)]
pub struct WindowMerger {
    spec: WindowSpec,
    interner: Interner,
    producers: BTreeMap<Arc<str>, Mark>,
    windows: BTreeMap<i64, MergeWindow>,
    /// Windows ending at or before this have closed.
    closed_before_us: i64,
    counters: MergerCounters,
    /// The pairs of the last closed window: never pushed under `(other)`.
    established: foldhash::HashSet<u64>,
    /// Threads that finish a closed window of at least [`PARALLEL_FINISH`] pairs (see
    /// [`WindowMerger::set_finish_threads`]).
    finish_threads: usize,
}

/// Fewest pairs of a closed window finished on several threads: below, starting them costs
/// more than it saves.
pub const PARALLEL_FINISH: usize = 4096;

/// The serializable state of a [`WindowMerger`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergerSnapshot {
    /// The window spec the partials were aggregated under.
    pub spec: WindowSpec,
    /// Each producer's mark.
    pub producers: Vec<(String, Mark)>,
    /// Windows ending at or before this have closed, µs since the epoch.
    pub closed_before_us: i64,
    /// Open windows: index, merged pairs, pending pairs per producer.
    pub windows: Vec<MergeWindowData>,
    /// Counters so far.
    pub counters: MergerCounters,
}

/// One open window of a [`MergerSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeWindowData {
    /// Window index `k` (the window is `[k·L, (k+1)·L)`).
    pub index: i64,
    /// Merged pairs.
    pub merged: Vec<PairData>,
    /// Pairs waiting for their producer's watermark, per producer.
    pub pending: Vec<(String, Vec<PairData>)>,
}

impl WindowMerger {
    /// A merger with no producers and no open window.
    pub fn new(spec: WindowSpec) -> Self {
        WindowMerger {
            spec,
            interner: Interner::default(),
            producers: BTreeMap::new(),
            windows: BTreeMap::new(),
            closed_before_us: i64::MIN,
            counters: MergerCounters::default(),
            established: foldhash::HashSet::default(),
            finish_threads: 1,
        }
    }

    /// Finishes the states of a closed window of at least [`PARALLEL_FINISH`] pairs (their
    /// quantiles, concurrency peaks and documents) on `threads` threads, each a contiguous
    /// share of the window's pairs in order: the same pair windows in the same order as one
    /// thread. 1 (the default) does it on the calling thread. Not part of the state.
    pub fn set_finish_threads(&mut self, threads: usize) {
        self.finish_threads = threads.max(1);
    }

    /// The window geometry.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Counters so far.
    pub fn counters(&self) -> &MergerCounters {
        &self.counters
    }

    /// Windows open.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Pair-windows held (merged and pending).
    pub fn open_pairs(&self) -> usize {
        self.windows
            .values()
            .map(|w| w.merged.len() + w.pending.values().map(|p| p.len()).sum::<usize>())
            .sum()
    }

    /// The producers and their marks.
    pub fn producers(&self) -> impl Iterator<Item = (&str, &Mark)> {
        self.producers.iter().map(|(k, v)| (&**k, v))
    }

    /// Declares a producer: until it marks (or is marked idle) it holds the merged watermark
    /// back. Declaring a known producer changes nothing.
    pub fn add_producer(&mut self, producer: &str) {
        if !self.producers.contains_key(producer) {
            self.producers.insert(Arc::from(producer), Mark::default());
        }
    }

    /// Forgets a producer (its input moved elsewhere, or ended and was marked past every
    /// window): it no longer holds the merged watermark back; its pending pairs are dropped.
    pub fn remove_producer(&mut self, producer: &str) {
        self.producers.remove(producer);
        for w in self.windows.values_mut() {
            w.pending.remove(producer);
        }
    }

    /// The merged watermark, µs since the epoch: the oldest watermark of the producers that
    /// are not idle. `None` while one of them has not marked; `Some(i64::MAX)` when all are
    /// idle (or there are none).
    pub fn watermark(&self) -> Option<i64> {
        let mut oldest = i64::MAX;
        for mark in self.producers.values().filter(|m| !m.idle) {
            oldest = oldest.min(mark.watermark_us?);
        }
        Some(oldest)
    }

    /// Whether a partial of `producer` for `window` is a duplicate or late (see the
    /// [module docs](self)); `None` when it is welcome.
    fn refusal(&self, producer: &str, window: Window) -> Option<Refusal> {
        let handed_over = self
            .producers
            .get(producer)
            .and_then(|m| m.watermark_us)
            .is_some_and(|wm| window.end_us <= wm);
        if handed_over {
            Some(Refusal::Duplicate)
        } else if window.end_us <= self.closed_before_us {
            Some(Refusal::Late)
        } else {
            None
        }
    }

    fn count(&mut self, refusal: Refusal, pairs: usize) {
        let c = match refusal {
            Refusal::Duplicate => &mut self.counters.duplicate_partials,
            Refusal::Late => &mut self.counters.late_partials,
        };
        *c += pairs as u64;
    }

    /// A producer's whole window (all its pairs, as [`crate::pair::PairAggregator`] hands it
    /// over), merged at once. The producer is declared if it was not. Returns how many of its
    /// pairs were dropped (duplicate or late, see the [module docs](self)).
    pub fn complete(&mut self, producer: &str, partial: PartialWindow) -> usize {
        self.add_producer(producer);
        let window = partial.window;
        let n = partial.pairs.len();
        let k = self.spec.index_of(window.start_us);
        if n == 0 {
            return 0;
        }
        if let Some(refusal) = self.refusal(producer, window) {
            self.count(refusal, n);
            return n;
        }
        let slots = self.spec.slots();
        let target = self.windows.entry(k).or_default();
        if target.merged.is_empty() {
            target.merged.reserve(n);
        }
        let max = merged_max(&self.spec);
        for p in partial.pairs {
            let key = pair_key(
                self.interner.intern_arc(&p.source),
                self.interner.intern_arc(&p.destination),
            );
            let (key, overflow) = capped_key(
                &target.merged,
                key,
                max,
                &self.established,
                &mut self.interner,
            );
            self.counters.overflow_partials += u64::from(overflow);
            merge_state(&mut target.merged, key, p.state, slots);
        }
        0
    }

    /// One pair of a producer's window, sent on its own (from the repartition topic): it
    /// waits until the producer's watermark passes the window, and replaces a copy of itself
    /// sent before. Returns false when it was dropped (duplicate or late).
    pub fn partial(
        &mut self,
        producer: &str,
        window: Window,
        source: &str,
        destination: &str,
        state: PairState,
    ) -> bool {
        self.add_producer(producer);
        if let Some(refusal) = self.refusal(producer, window) {
            self.count(refusal, 1);
            return false;
        }
        let k = self.spec.index_of(window.start_us);
        let key = pair_key(
            self.interner.intern(source),
            self.interner.intern(destination),
        );
        let producer = self
            .producers
            .get_key_value(producer)
            .map(|(k, _)| Arc::clone(k))
            .expect("declared above");
        self.windows
            .entry(k)
            .or_default()
            .pending
            .entry(producer)
            .or_default()
            .insert(key, state);
        true
    }

    /// A producer's progress: its watermark (monotone: an older one is ignored) and whether
    /// it is idle. Merges its pending pairs of the windows its watermark passed. The producer
    /// is declared if it was not.
    pub fn mark(&mut self, producer: &str, mark: Mark) {
        self.add_producer(producer);
        let entry = self.producers.get_mut(producer).expect("declared above");
        entry.idle = mark.idle;
        if let Some(wm) = mark.watermark_us {
            entry.watermark_us = Some(entry.watermark_us.map_or(wm, |old| old.max(wm)));
        }
        let Some(wm) = entry.watermark_us else {
            return;
        };
        for (&k, w) in self.windows.iter_mut() {
            if self.spec.window(k).end_us > wm {
                break;
            }
            if let Some(pairs) = w.pending.remove(producer) {
                merge_into(
                    &mut w.merged,
                    pairs,
                    &self.spec,
                    &self.established,
                    &mut self.interner,
                    &mut self.counters,
                );
            }
        }
    }

    /// Closes every open window whose end is at or before the merged watermark (every window
    /// when all producers are idle), oldest first.
    pub fn close_ready(&mut self) -> Vec<ClosedPairs> {
        let Some(wm) = self.watermark() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            let end = self.spec.window(*entry.key()).end_us;
            if end > wm {
                break;
            }
            let (k, w) = entry.remove_entry();
            out.push(self.finish(k, w));
        }
        self.collect_names();
        out
    }

    /// End of every input: closes every open window, oldest first (pending pairs included).
    pub fn flush(&mut self) -> Vec<ClosedPairs> {
        let mut out = Vec::with_capacity(self.windows.len());
        while let Some((k, w)) = self.windows.pop_first() {
            out.push(self.finish(k, w));
        }
        self.collect_names();
        out
    }

    /// Frees the names no open window uses, when enough names were interned since the last
    /// time (O(1) amortized per name).
    fn collect_names(&mut self) {
        if !self.interner.collection_due() {
            return;
        }
        let mut live = vec![false; self.interner.id_bound()];
        for w in self.windows.values() {
            let pending = w.pending.values().flat_map(|p| p.keys());
            for &key in w.merged.keys().chain(pending) {
                mark_pair(&mut live, key);
            }
        }
        for &key in &self.established {
            mark_pair(&mut live, key);
        }
        self.interner.retain(&live);
    }

    /// Distinct service names held (interned) by this merger.
    pub fn names(&self) -> usize {
        self.interner.len()
    }

    fn finish(&mut self, k: i64, mut w: MergeWindow) -> ClosedPairs {
        let window = self.spec.window(k);
        self.closed_before_us = self.closed_before_us.max(window.end_us);
        self.counters.windows_closed += 1;
        for (_, pairs) in std::mem::take(&mut w.pending) {
            merge_into(
                &mut w.merged,
                pairs,
                &self.spec,
                &self.established,
                &mut self.interner,
                &mut self.counters,
            );
        }
        self.established.clear();
        self.established.extend(w.merged.keys());
        // rank the window's names: marked by id (the interner's ids are dense, and it forgets
        // the names no open window holds), then only the window's own names sorted by name
        let names = &self.interner;
        const UNMARKED: u32 = u32::MAX;
        let mut rank_of = vec![UNMARKED; names.id_bound()];
        for &key in w.merged.keys() {
            let (s, d) = pair_ids(key);
            rank_of[s as usize] = 0;
            rank_of[d as usize] = 0;
        }
        let mut ids: Vec<u32> = (0..rank_of.len() as u32)
            .filter(|&id| rank_of[id as usize] != UNMARKED)
            .collect();
        ids.sort_unstable_by(|&a, &b| names.name(a).cmp(names.name(b)));
        for (rank, &id) in ids.iter().enumerate() {
            rank_of[id as usize] = rank as u32;
        }
        // the states stay where they are: their indexes are put in (source, destination) order
        // by two counting sorts on the names' ranks, and the states taken out in that order
        let mut states: Vec<(u64, PairState)> = w.merged.into_iter().collect();
        let ranks: Vec<(u32, u32)> = states
            .iter()
            .map(|(key, _)| {
                let (s, d) = pair_ids(*key);
                (rank_of[s as usize], rank_of[d as usize])
            })
            .collect();
        let by_destination = counting_sort((0..states.len() as u32).collect(), ids.len(), |i| {
            ranks[i as usize].1
        });
        let order = counting_sort(by_destination, ids.len(), |i| ranks[i as usize].0);
        let names = &self.interner;
        let finish_one = |scale: &hdrhistogram::Histogram<u32>, entry: &mut (u64, PairState)| {
            let (s, d) = pair_ids(entry.0);
            // taken, so that its allocations go as it is finished
            std::mem::take(&mut entry.1).finish(window, names.name(s), names.name(d), scale)
        };
        let threads = self.finish_threads;
        if threads <= 1 || order.len() < PARALLEL_FINISH {
            let scale = PairState::scale();
            return ClosedPairs {
                window,
                pairs: order
                    .into_iter()
                    .map(|i| finish_one(&scale, &mut states[i as usize]))
                    .collect(),
            };
        }
        let finish = |part: &mut [(u64, PairState)]| -> Vec<schemas::PairWindow> {
            let scale = PairState::scale();
            part.iter_mut().map(|e| finish_one(&scale, e)).collect()
        };
        let mut ordered: Vec<(u64, PairState)> = order
            .into_iter()
            .map(|i| {
                let (key, state) = &mut states[i as usize];
                (*key, std::mem::take(state))
            })
            .collect();
        drop(states);
        let share = ordered.len().div_ceil(threads);
        let mut parts = ordered.chunks_mut(share);
        let first = parts.next().unwrap_or_default();
        let pairs = std::thread::scope(|scope| {
            let others: Vec<_> = parts
                .map(|part| scope.spawn(move || finish(part)))
                .collect();
            let mut pairs = finish(first);
            for other in others {
                match other.join() {
                    Ok(more) => pairs.extend(more),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            pairs
        });
        ClosedPairs { window, pairs }
    }

    /// The state to checkpoint.
    pub fn snapshot(&self) -> MergerSnapshot {
        MergerSnapshot {
            spec: self.spec,
            producers: self
                .producers
                .iter()
                .map(|(p, m)| (p.to_string(), *m))
                .collect(),
            closed_before_us: self.closed_before_us,
            windows: self
                .windows
                .iter()
                .map(|(&index, w)| MergeWindowData {
                    index,
                    merged: states_to_data(&self.interner, &w.merged),
                    pending: w
                        .pending
                        .iter()
                        .map(|(p, pairs)| (p.to_string(), states_to_data(&self.interner, pairs)))
                        .collect(),
                })
                .collect(),
            counters: self.counters,
        }
    }

    /// A merger holding a checkpointed state, for windows of `spec`.
    ///
    /// # Errors
    /// [`crate::Error::State`] when the snapshot was taken under another window spec or holds
    /// an inconsistent pair state.
    pub fn restore(spec: WindowSpec, snapshot: MergerSnapshot) -> Result<Self> {
        spec.check_same(&snapshot.spec)?;
        let mut m = WindowMerger::new(spec);
        for (p, mark) in snapshot.producers {
            m.producers.insert(Arc::from(p), mark);
        }
        m.closed_before_us = snapshot.closed_before_us;
        m.counters = snapshot.counters;
        let slots = spec.slots();
        for w in snapshot.windows {
            let mut window = MergeWindow {
                merged: states_from_data(&mut m.interner, w.merged, slots)?,
                pending: BTreeMap::new(),
            };
            for (p, pairs) in w.pending {
                let pairs = states_from_data(&mut m.interner, pairs, slots)?;
                window.pending.insert(Arc::from(p), pairs);
            }
            m.windows.insert(w.index, window);
        }
        Ok(m)
    }
}

/// Most pairs of a merged window before new ones count under [`crate::pair::OTHER`]: as many
/// as one input may hand over (`max-pairs`, plus its eighth of (source, other) pairs, plus
/// (other, other)), so that merging one input changes nothing.
fn merged_max(spec: &WindowSpec) -> usize {
    let max = spec.max_pairs();
    max.saturating_add(max / 8).saturating_add(1)
}

/// `items` stably sorted by `key`, each key below `keys`: a counting sort, O(items + keys).
fn counting_sort(items: Vec<u32>, keys: usize, key: impl Fn(u32) -> u32) -> Vec<u32> {
    let mut start = vec![0usize; keys + 1];
    for &i in &items {
        start[key(i) as usize + 1] += 1;
    }
    for k in 1..=keys {
        start[k] += start[k - 1];
    }
    let mut sorted = vec![0u32; items.len()];
    for &i in &items {
        let at = &mut start[key(i) as usize];
        sorted[*at] = i;
        *at += 1;
    }
    sorted
}

/// Merges `pairs` into `merged`, a window of at most [`merged_max`] pairs (the overflow
/// counted in `counters`).
fn merge_into(
    merged: &mut foldhash::HashMap<u64, PairState>,
    pairs: foldhash::HashMap<u64, PairState>,
    spec: &WindowSpec,
    established: &foldhash::HashSet<u64>,
    interner: &mut Interner,
    counters: &mut MergerCounters,
) {
    for (key, state) in pairs {
        let (key, overflow) = capped_key(merged, key, merged_max(spec), established, interner);
        counters.overflow_partials += u64::from(overflow);
        merge_state(merged, key, state, spec.slots());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};

    use super::*;
    use crate::config::WindowConfig;
    use crate::pair::PairAggregator;

    const S: i64 = 1_000_000;

    /// Default windows; every record trusted at once (`ahead-confirm = 1`), so that a few
    /// records move the watermark.
    fn spec() -> WindowSpec {
        WindowSpec::try_from(&WindowConfig {
            ahead_confirm: 1,
            ..WindowConfig::default()
        })
        .unwrap()
    }

    /// (start s, duration ms, status) records of pair a → b.
    fn batch(recs: &[(i64, u64, u16)]) -> arrow::array::RecordBatch {
        let mut b = FlowBatchBuilder::new();
        for &(t, d, status) in recs {
            let mut r = FlowRecordRef::new(t * S, "a", "b", Reporter::Envoy);
            r.duration_us = Some(d * 1000);
            r.status = Some(status);
            b.append(&r);
        }
        b.finish()
    }

    fn all(agg: &mut PairAggregator, recs: &[(i64, u64, u16)]) -> Vec<PartialWindow> {
        let mut out = agg.push(&batch(recs)).unwrap();
        out.extend(agg.flush());
        out
    }

    #[test]
    fn partials_of_two_inputs_merge_into_what_one_input_would_give() {
        let a = [(1, 5, 200), (2, 700, 200), (3, 12_000, 503), (31, 1, 200)];
        let b = [(4, 9, 200), (9, 2_000, 504), (12, 3, 200)];
        let mut whole: Vec<_> = a.iter().chain(&b).copied().collect();
        whole.sort();
        let mut one = PairAggregator::new(spec());
        let expected: Vec<ClosedPairs> = all(&mut one, &whole)
            .into_iter()
            .map(PartialWindow::finish)
            .collect();

        let mut m = WindowMerger::new(spec());
        m.add_producer("a");
        m.add_producer("b");
        for (name, recs) in [("a", &a[..]), ("b", &b[..])] {
            let mut agg = PairAggregator::new(spec());
            for w in all(&mut agg, recs) {
                assert_eq!(m.complete(name, w), 0);
            }
            assert!(m.close_ready().is_empty(), "{name} alone closes nothing");
            m.mark(
                name,
                Mark {
                    watermark_us: agg.watermark(),
                    idle: false,
                },
            );
        }
        // b's watermark (its last window's end, 20 s) holds [30 s, 40 s) until the end
        let mut got = m.close_ready();
        assert_eq!(got.len(), 2);
        got.extend(m.flush());
        assert_eq!(got, expected);
        // window [0, 10 s): 5 requests, 2 errors, p99 from the 12 s request
        assert_eq!(got[0].pairs[0].requests, 5);
        assert_eq!(got[0].pairs[0].errors, 2);
        assert_eq!(got[0].pairs[0].latency.unwrap().max_us, 12_000_000);
    }

    #[test]
    fn the_oldest_busy_producer_holds_windows_and_idle_ones_do_not() {
        let mut m = WindowMerger::new(spec());
        let mut agg = PairAggregator::new(spec());
        for w in agg.push(&batch(&[(1, 1, 200), (40, 1, 200)])).unwrap() {
            m.complete("a", w);
        }
        m.mark(
            "a",
            Mark {
                watermark_us: agg.watermark(),
                idle: false,
            },
        );
        m.add_producer("b");
        assert_eq!(m.watermark(), None, "b has not marked");
        assert!(m.close_ready().is_empty());
        m.mark(
            "b",
            Mark {
                watermark_us: None,
                idle: true,
            },
        );
        // b is idle: a's watermark (40 s − 15 s) closes [0, 10 s)
        assert_eq!(m.watermark(), Some(25 * S));
        let closed = m.close_ready();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].window.start_us, 0);
        // b wakes up with a record of [0, 10 s): its partial comes too late
        let mut b = PairAggregator::new(spec());
        let late = b.push(&batch(&[(5, 1, 200)])).unwrap();
        assert!(late.is_empty());
        for w in b.flush() {
            assert_eq!(m.complete("b", w), 1);
        }
        assert_eq!(m.counters().late_partials, 1);
    }

    #[test]
    fn pairs_sent_twice_count_once() {
        let mut agg = PairAggregator::new(spec());
        let w = all(&mut agg, &[(1, 5, 200), (2, 6, 200)]).remove(0);
        let state = w.pairs[0].state.clone();
        let mut m = WindowMerger::new(spec());
        // sent once halfway, then again in full (a restarted producer)
        assert!(m.partial("p", w.window, "a", "b", state.clone()));
        assert!(m.partial("p", w.window, "a", "b", state.clone()));
        m.mark(
            "p",
            Mark {
                watermark_us: Some(w.window.end_us),
                idle: false,
            },
        );
        // and once more after its watermark passed the window: a duplicate
        assert!(!m.partial("p", w.window, "a", "b", state));
        let closed = m.close_ready();
        assert_eq!(closed[0].pairs[0].requests, 2);
        assert_eq!(m.counters().duplicate_partials, 1);
    }

    #[test]
    fn snapshot_restores_merged_and_pending_pairs() {
        let mut agg = PairAggregator::new(spec());
        let mut ws = all(&mut agg, &[(1, 5, 200), (2, 600, 500), (15, 7, 200)]);
        let mut m = WindowMerger::new(spec());
        m.add_producer("q");
        let second = ws.pop().unwrap();
        m.complete("p", ws.pop().unwrap());
        for p in second.pairs {
            m.partial("q", second.window, &p.source, &p.destination, p.state);
        }
        let snap = m.snapshot();
        let mut back = WindowMerger::restore(spec(), snap.clone()).unwrap();
        assert_eq!(back.snapshot(), snap);
        assert_eq!(back.flush(), m.flush());
        let other = WindowConfig {
            length: std::time::Duration::from_secs(5),
            ..WindowConfig::default()
        };
        let err = WindowMerger::restore(WindowSpec::try_from(&other).unwrap(), snap)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "saved state: window.length is 5s here but 10s in the saved state"
        );
    }

    /// A window of more than [`PARALLEL_FINISH`] pairs finished on 3 threads gives the pair
    /// windows one thread gives, in the same order (by source, then destination).
    #[test]
    fn a_large_window_finished_on_threads_is_the_window_one_thread_finishes() {
        let mut b = FlowBatchBuilder::new();
        let names: Vec<String> = (0..80).map(|i| format!("svc-{i:02}")).collect();
        for (i, (s, d)) in (0..80)
            .flat_map(|s| (0..70).map(move |d| (s, d)))
            .enumerate()
        {
            let i = i as i64;
            let mut r = FlowRecordRef::new(S + i * 100, &names[s], &names[d], Reporter::Envoy);
            r.duration_us = Some(1_000 + (i as u64 * 37) % 5_000);
            r.status = Some(if i % 50 == 0 { 503 } else { 200 });
            b.append(&r);
        }
        let mut agg = PairAggregator::new(spec());
        let mut partials = agg.push(&b.finish()).unwrap();
        partials.extend(agg.flush());
        let closed = |threads: usize| {
            let mut m = WindowMerger::new(spec());
            m.set_finish_threads(threads);
            for p in partials.clone() {
                m.complete("a", p);
            }
            m.flush()
        };
        let (one, three) = (closed(1), closed(3));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].pairs.len(), 5_600);
        assert!(one[0].pairs.len() >= PARALLEL_FINISH);
        assert_eq!(
            (&*one[0].pairs[71].source, &*one[0].pairs[71].destination),
            ("svc-01", "svc-01")
        );
        assert_eq!(one[0].pairs, three[0].pairs);
    }

    proptest! {
        /// The counting sort orders as a stable sort by key does (items of equal keys in
        /// their order), whatever the keys.
        #[test]
        fn counting_sort_is_a_stable_sort_by_key(keys in proptest::collection::vec(0u32..40, 0..300)) {
            let items: Vec<u32> = (0..keys.len() as u32).collect();
            let mut expected = items.clone();
            expected.sort_by_key(|&i| keys[i as usize]);
            prop_assert_eq!(counting_sort(items, 40, |i| keys[i as usize]), expected);
        }
    }
}
