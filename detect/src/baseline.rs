//! Baselines: what is normal for a node, learned from its recent windows.
//!
//! A [`NodeBaseline`] is a ring of the node's last N [`NodeSample`]s (plain data, serde, so it
//! can be checkpointed with the input offsets it covers). Signatures decide which windows go
//! in: the black-hole signature adds only windows in which it did not fire, so a failure is
//! never learned as normal. Medians (robust to one odd window) are kept up to date as samples
//! come and go (a [`RunningMedian`] per signal: O(log N) per window, N = `baseline-windows`),
//! so judging a node costs the same with 6 windows of history as with 10 000; they equal
//! `statrs`'s median of the samples to the bit. Means of caller rates come from `statrs`
//! (computed only for the callers of a finding).
//!
//! State per node: the samples (4 numbers and one (caller id, req/s) pair per caller each), the
//! names of the callers seen (one copy per distinct caller), and three ordered multisets of the
//! samples' signals (rebuilt from the samples when a checkpoint is read, not saved).

use std::collections::{BTreeMap, VecDeque};

use schemas::{NodeWindow, Window};
use serde::{Deserialize, Serialize};
use statrs::statistics::Statistics;

/// The signals of one node in one window that baselines are made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// The window the sample comes from.
    pub window: Window,
    /// Requests received, per window.
    pub inflow_requests: u64,
    /// Successful responses ÷ requests received (ratio in [0, 1]).
    pub ok_ratio: f64,
    /// Requests made to dependencies ÷ requests received (ratio, may exceed 1).
    pub downstream_per_request: f64,
    /// Each caller's request rate to the node in the window, req/s, by caller id (an index
    /// into the baseline's caller names), sorted by id.
    pub caller_rates: Vec<(u32, f64)>,
}

impl NodeSample {
    /// The caller's rate in this sample, req/s (0 when it did not call).
    fn caller_rate(&self, caller: u32) -> f64 {
        self.caller_rates
            .binary_search_by_key(&caller, |&(id, _)| id)
            .map_or(0.0, |i| self.caller_rates[i].1)
    }
}

/// The median of a multiset of numbers that values join and leave one at a time: the lower
/// half and the upper half as ordered multisets (value → count), O(log n) per change, O(log n)
/// per median. The median is the middle value, or the mean of the two middle values
/// (`(a + b) / 2`) for an even count, as `statrs` computes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunningMedian {
    /// The ⌈n ÷ 2⌉ smallest values, by [`order_key`].
    lower: BTreeMap<u64, u32>,
    /// The others.
    upper: BTreeMap<u64, u32>,
    lower_len: usize,
    upper_len: usize,
}

/// `x`'s bits mapped so that integer order is the numbers' total order (IEEE 754
/// `totalOrder`: −0 before +0).
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 { !b } else { b | 1 << 63 }
}

/// [`order_key`] back to the number.
fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

fn put(set: &mut BTreeMap<u64, u32>, k: u64) {
    *set.entry(k).or_insert(0) += 1;
}

/// Takes one `k` out of `set`; false when it holds none.
fn take(set: &mut BTreeMap<u64, u32>, k: u64) -> bool {
    match set.get_mut(&k) {
        Some(1) => {
            set.remove(&k);
            true
        }
        Some(n) => {
            *n -= 1;
            true
        }
        None => false,
    }
}

impl RunningMedian {
    /// Values held.
    pub fn len(&self) -> usize {
        self.lower_len + self.upper_len
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lower_max(&self) -> Option<u64> {
        self.lower.last_key_value().map(|(&k, _)| k)
    }

    /// Adds `x`.
    pub fn insert(&mut self, x: f64) {
        let k = order_key(x);
        if self.lower_max().is_none_or(|m| k <= m) {
            put(&mut self.lower, k);
            self.lower_len += 1;
        } else {
            put(&mut self.upper, k);
            self.upper_len += 1;
        }
        self.rebalance();
    }

    /// Removes one `x` (a value inserted before); does nothing when none is held.
    pub fn remove(&mut self, x: f64) {
        let k = order_key(x);
        // every value of the upper half is >= the lower half's largest
        if self.lower_max().is_some_and(|m| k <= m) && take(&mut self.lower, k) {
            self.lower_len -= 1;
        } else if take(&mut self.upper, k) {
            self.upper_len -= 1;
        }
        self.rebalance();
    }

    fn rebalance(&mut self) {
        while self.lower_len > self.upper_len + 1 {
            let (&k, _) = self
                .lower
                .last_key_value()
                .expect("lower half is not empty");
            take(&mut self.lower, k);
            put(&mut self.upper, k);
            self.lower_len -= 1;
            self.upper_len += 1;
        }
        while self.upper_len > self.lower_len {
            let (&k, _) = self
                .upper
                .first_key_value()
                .expect("upper half is not empty");
            take(&mut self.upper, k);
            put(&mut self.lower, k);
            self.upper_len -= 1;
            self.lower_len += 1;
        }
    }

    /// The median (0 when empty).
    pub fn median(&self) -> f64 {
        let Some(low) = self.lower_max().map(from_order_key) else {
            return 0.0;
        };
        if self.len() % 2 == 1 {
            return low;
        }
        let high = self
            .upper
            .first_key_value()
            .map_or(low, |(&k, _)| from_order_key(k));
        (low + high) / 2.0
    }
}

/// What a [`NodeBaseline`] saves (its medians are rebuilt from the samples).
#[derive(Deserialize)]
struct NodeBaselineData {
    capacity: usize,
    samples: VecDeque<NodeSample>,
    callers: foldhash::HashMap<String, u32>,
    last_order: Vec<u32>,
    names: Vec<String>,
}

impl From<NodeBaselineData> for NodeBaseline {
    fn from(d: NodeBaselineData) -> Self {
        let mut medians: [RunningMedian; 3] = Default::default();
        for s in &d.samples {
            for (m, x) in medians.iter_mut().zip(signals(s)) {
                m.insert(x);
            }
        }
        NodeBaseline {
            capacity: d.capacity.max(1),
            samples: d.samples,
            callers: d.callers,
            last_order: d.last_order,
            names: d.names,
            medians,
        }
    }
}

/// The signals of a sample that baselines take medians of, in [`NodeBaseline::medians`] order:
/// inflow requests, ok ratio, downstream calls per request.
fn signals(s: &NodeSample) -> [f64; 3] {
    [
        s.inflow_requests as f64,
        s.ok_ratio,
        s.downstream_per_request,
    ]
}

/// The last `capacity` samples of one node, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "NodeBaselineData")]
pub struct NodeBaseline {
    capacity: usize,
    samples: VecDeque<NodeSample>,
    /// Caller name → id used in the samples.
    callers: foldhash::HashMap<String, u32>,
    /// Caller ids in the order of the last push: callers usually come in the same order each
    /// window, so a name compare replaces a hash lookup.
    last_order: Vec<u32>,
    /// Caller id → name.
    names: Vec<String>,
    /// Medians of the samples' [`signals`].
    #[serde(skip)]
    medians: [RunningMedian; 3],
}

impl NodeBaseline {
    /// An empty baseline remembering at most `capacity` (>= 1) windows.
    pub fn new(capacity: usize) -> Self {
        NodeBaseline {
            capacity: capacity.max(1),
            samples: VecDeque::with_capacity(capacity.max(1)),
            callers: foldhash::HashMap::default(),
            last_order: Vec::new(),
            names: Vec::new(),
            medians: Default::default(),
        }
    }

    /// Adds the window of `node` with its `callers` (service, req/s), forgetting the oldest
    /// sample when full. A window without inflow is not added (it says nothing about how the
    /// node answers); returns whether it was.
    pub fn push(&mut self, node: &NodeWindow, callers: &[(&str, f64)]) -> bool {
        if node.inflow_requests == 0 {
            return false;
        }
        let inflow = node.inflow_requests as f64;
        let mut caller_rates: Vec<(u32, f64)> = Vec::with_capacity(callers.len());
        for (i, &(name, rate)) in callers.iter().enumerate() {
            let id = match self.last_order.get(i) {
                Some(&id) if self.names[id as usize] == name => id,
                _ => match self.callers.get(name) {
                    Some(&id) => id,
                    None => {
                        let id = self.names.len() as u32;
                        self.callers.insert(name.to_owned(), id);
                        self.names.push(name.to_owned());
                        id
                    }
                },
            };
            caller_rates.push((id, rate));
        }
        self.last_order.clear();
        self.last_order
            .extend(caller_rates.iter().map(|&(id, _)| id));
        if !caller_rates.is_sorted_by_key(|&(id, _)| id) {
            caller_rates.sort_unstable_by_key(|&(id, _)| id);
        }
        if self.samples.len() >= self.capacity
            && let Some(old) = self.samples.pop_front()
        {
            for (m, x) in self.medians.iter_mut().zip(signals(&old)) {
                m.remove(x);
            }
        }
        let sample = NodeSample {
            window: node.window,
            inflow_requests: node.inflow_requests,
            ok_ratio: node.ok_responses as f64 / inflow,
            downstream_per_request: node.downstream_requests as f64 / inflow,
            caller_rates,
        };
        for (m, x) in self.medians.iter_mut().zip(signals(&sample)) {
            m.insert(x);
        }
        self.samples.push_back(sample);
        true
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &NodeSample> {
        self.samples.iter()
    }

    /// Median inflow, requests per window (0 when empty).
    pub fn inflow_requests(&self) -> f64 {
        self.medians[0].median()
    }

    /// Median ok-response ratio (0 when empty).
    pub fn ok_ratio(&self) -> f64 {
        self.medians[1].median()
    }

    /// Median downstream calls per inflow request (0 when empty).
    pub fn downstream_per_request(&self) -> f64 {
        self.medians[2].median()
    }

    /// Mean rate of `caller` over the samples, req/s, a window without calls counting as 0
    /// (0 when empty or never seen).
    pub fn caller_rate(&self, caller: &str) -> f64 {
        let Some(&id) = self.callers.get(caller) else {
            return 0.0;
        };
        self.samples.iter().map(|s| s.caller_rate(id)).mean()
    }
}

#[cfg(test)]
mod tests {
    use schemas::SCHEMA_VERSION;

    use super::*;

    fn node(inflow: u64, ok: u64) -> NodeWindow {
        NodeWindow {
            schema_version: SCHEMA_VERSION,
            kind: "node-window".into(),
            window: Window {
                start_us: 0,
                end_us: 1,
            },
            node: "n".into(),
            inflow_requests: inflow,
            inflow_bytes: 0,
            ok_responses: ok,
            outflow_bytes: 0,
            downstream_requests: inflow,
            callers: 0,
        }
    }

    #[test]
    fn ring_keeps_the_last_samples_and_medians_them() {
        let mut b = NodeBaseline::new(3);
        for inflow in [1000, 10, 20, 40] {
            assert!(b.push(&node(inflow, inflow), &[]));
        }
        assert_eq!(b.len(), 3);
        // 1000 fell out; median of {10, 20, 40} is 20
        assert_eq!(b.inflow_requests(), 20.0);
        b.push(&node(50, 50), &[]);
        // {20, 40, 50}
        assert_eq!(b.inflow_requests(), 40.0);
        assert_eq!(b.downstream_per_request(), 1.0);
    }

    #[test]
    fn windows_without_inflow_are_not_samples() {
        let mut b = NodeBaseline::new(3);
        assert!(!b.push(&node(0, 0), &[]));
        assert!(b.is_empty());
        assert_eq!(b.ok_ratio(), 0.0);
    }

    #[test]
    fn even_count_median_is_the_midpoint() {
        let mut b = NodeBaseline::new(4);
        for ok in [50, 100, 90, 70] {
            b.push(&node(100, ok), &[]);
        }
        // sorted 0.5 0.7 0.9 1.0 -> (0.7 + 0.9) / 2
        assert!((b.ok_ratio() - 0.8).abs() < 1e-12);
    }

    #[test]
    fn caller_rate_counts_absent_windows_as_zero() {
        let mut b = NodeBaseline::new(4);
        b.push(&node(1, 1), &[("b", 1.0), ("a", 3.0)]);
        b.push(&node(1, 1), &[("a", 5.0)]);
        assert_eq!(b.caller_rate("a"), 4.0);
        // b: (1 + 0) / 2
        assert_eq!(b.caller_rate("b"), 0.5);
        assert_eq!(b.caller_rate("nobody"), 0.0);
    }

    #[test]
    fn round_trips_through_serde() {
        let mut b = NodeBaseline::new(2);
        b.push(&node(10, 9), &[("a", 1.0)]);
        b.push(&node(30, 3), &[("a", 1.0)]);
        b.push(&node(20, 20), &[("a", 1.0)]);
        let json = serde_json::to_string(&b).unwrap();
        assert!(!json.contains("medians"), "medians are not saved: {json}");
        let back: NodeBaseline = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b, "medians rebuilt from the samples");
        // {30, 20}
        assert_eq!(back.inflow_requests(), 25.0);
    }

    proptest::proptest! {
        /// The running medians equal statrs's median of the samples held, to the bit, through
        /// any sequence of windows (repeated values, an even and odd number of samples).
        #[test]
        fn running_medians_equal_statrs(
            capacity in 1usize..12,
            windows in proptest::collection::vec((1u64..8, 0u64..8, 0u64..20), 1..60),
        ) {
            use statrs::statistics::{Data, Median};
            let mut b = NodeBaseline::new(capacity);
            for (inflow, ok, down) in windows {
                let mut n = node(inflow, ok.min(inflow));
                n.downstream_requests = down;
                b.push(&n, &[]);
                let median = |f: fn(&NodeSample) -> f64| {
                    Data::new(b.samples().map(f).collect::<Vec<f64>>()).median()
                };
                proptest::prop_assert_eq!(
                    b.inflow_requests().to_bits(),
                    median(|s| s.inflow_requests as f64).to_bits()
                );
                proptest::prop_assert_eq!(
                    b.ok_ratio().to_bits(),
                    median(|s| s.ok_ratio).to_bits()
                );
                proptest::prop_assert_eq!(
                    b.downstream_per_request().to_bits(),
                    median(|s| s.downstream_per_request).to_bits()
                );
            }
        }
    }

    #[test]
    fn running_median_keeps_duplicates_and_orders_negative_values() {
        let mut m = RunningMedian::default();
        assert_eq!(m.median(), 0.0);
        for x in [3.0, -1.0, 3.0, 3.0, -2.5] {
            m.insert(x);
        }
        // -2.5 -1 3 3 3
        assert_eq!(m.median(), 3.0);
        m.remove(3.0);
        // -2.5 -1 3 3
        assert_eq!(m.median(), 1.0);
        m.remove(3.0);
        m.remove(-2.5);
        // -1 3
        assert_eq!((m.len(), m.median()), (2, 1.0));
        m.remove(7.0); // never inserted: nothing changes
        assert_eq!(m.len(), 2);
    }
}
