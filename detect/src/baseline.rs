//! Baselines: what is normal for a node, learned from its recent windows.
//!
//! A [`NodeBaseline`] is a ring of the node's last N [`NodeSample`]s (plain data, serde, so it
//! can be checkpointed with the input offsets it covers). Signatures decide which windows go
//! in: the black-hole signature adds only windows in which it did not fire, so a failure is
//! never learned as normal. Medians (robust to one odd window) and means come from `statrs`.
//!
//! State per node: the samples (4 numbers and one (caller id, req/s) pair per caller each) and
//! the names of the callers seen (one copy per distinct caller).

use std::collections::VecDeque;

use schemas::{NodeWindow, Window};
use serde::{Deserialize, Serialize};
use statrs::statistics::{Data, Median, Statistics};

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

/// The last `capacity` samples of one node, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(NodeSample {
            window: node.window,
            inflow_requests: node.inflow_requests,
            ok_ratio: node.ok_responses as f64 / inflow,
            downstream_per_request: node.downstream_requests as f64 / inflow,
            caller_rates,
        });
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

    fn median(&self, f: impl Fn(&NodeSample) -> f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        Data::new(self.samples.iter().map(f).collect::<Vec<f64>>()).median()
    }

    /// Median inflow, requests per window (0 when empty).
    pub fn inflow_requests(&self) -> f64 {
        self.median(|s| s.inflow_requests as f64)
    }

    /// Median ok-response ratio (0 when empty).
    pub fn ok_ratio(&self) -> f64 {
        self.median(|s| s.ok_ratio)
    }

    /// Median downstream calls per inflow request (0 when empty).
    pub fn downstream_per_request(&self) -> f64 {
        self.median(|s| s.downstream_per_request)
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
        let back: NodeBaseline = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }
}
