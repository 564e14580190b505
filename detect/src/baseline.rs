//! Baselines: what is normal for a node, learned from its recent windows.
//!
//! A [`NodeBaseline`] is a ring of the node's last N [`NodeSample`]s (plain data, serde, so it
//! can be checkpointed with the input offsets it covers). Signatures decide which windows go
//! in: the black-hole signature adds only windows in which it did not fire, so a failure is
//! never learned as normal. Medians (robust to one odd window) and means come from `statrs`.

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
    /// Each caller's request rate to the node in the window, req/s, sorted by caller.
    pub caller_rates: Vec<(String, f64)>,
}

impl NodeSample {
    /// The sample of `node` with its `callers` (service, req/s); `None` when the node received
    /// nothing (a window without inflow says nothing about how the node answers).
    pub fn new(node: &NodeWindow, callers: &[(&str, f64)]) -> Option<Self> {
        if node.inflow_requests == 0 {
            return None;
        }
        let inflow = node.inflow_requests as f64;
        let mut caller_rates: Vec<(String, f64)> =
            callers.iter().map(|&(s, r)| (s.to_owned(), r)).collect();
        caller_rates.sort_by(|a, b| a.0.cmp(&b.0));
        Some(NodeSample {
            window: node.window,
            inflow_requests: node.inflow_requests,
            ok_ratio: node.ok_responses as f64 / inflow,
            downstream_per_request: node.downstream_requests as f64 / inflow,
            caller_rates,
        })
    }

    /// The caller's rate in this sample, req/s (0 when it did not call).
    pub fn caller_rate(&self, caller: &str) -> f64 {
        self.caller_rates
            .binary_search_by(|(s, _)| s.as_str().cmp(caller))
            .map_or(0.0, |i| self.caller_rates[i].1)
    }
}

/// The last `capacity` samples of one node, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeBaseline {
    capacity: usize,
    samples: VecDeque<NodeSample>,
}

impl NodeBaseline {
    /// An empty baseline remembering at most `capacity` (>= 1) windows.
    pub fn new(capacity: usize) -> Self {
        NodeBaseline {
            capacity: capacity.max(1),
            samples: VecDeque::with_capacity(capacity.max(1)),
        }
    }

    /// Adds a sample, forgetting the oldest when full.
    pub fn push(&mut self, sample: NodeSample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
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
    /// (0 when empty).
    pub fn caller_rate(&self, caller: &str) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.iter().map(|s| s.caller_rate(caller)).mean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(inflow: u64, ok: f64, callers: &[(&str, f64)]) -> NodeSample {
        NodeSample {
            window: Window {
                start_us: 0,
                end_us: 1,
            },
            inflow_requests: inflow,
            ok_ratio: ok,
            downstream_per_request: 1.0,
            caller_rates: callers.iter().map(|&(s, r)| (s.to_owned(), r)).collect(),
        }
    }

    #[test]
    fn ring_keeps_the_last_samples_and_medians_them() {
        let mut b = NodeBaseline::new(3);
        for inflow in [1000, 10, 20, 40] {
            b.push(sample(inflow, 1.0, &[]));
        }
        assert_eq!(b.len(), 3);
        // 1000 fell out; median of {10, 20, 40} is 20
        assert_eq!(b.inflow_requests(), 20.0);
        b.push(sample(50, 1.0, &[]));
        // {20, 40, 50}
        assert_eq!(b.inflow_requests(), 40.0);
    }

    #[test]
    fn even_count_median_is_the_midpoint() {
        let mut b = NodeBaseline::new(4);
        for ok in [0.5, 1.0, 0.9, 0.7] {
            b.push(sample(1, ok, &[]));
        }
        // sorted 0.5 0.7 0.9 1.0 -> (0.7 + 0.9) / 2
        assert!((b.ok_ratio() - 0.8).abs() < 1e-12);
    }

    #[test]
    fn caller_rate_counts_absent_windows_as_zero() {
        let mut b = NodeBaseline::new(4);
        b.push(sample(1, 1.0, &[("a", 3.0), ("b", 1.0)]));
        b.push(sample(1, 1.0, &[("a", 5.0)]));
        assert_eq!(b.caller_rate("a"), 4.0);
        // b: (1 + 0) / 2
        assert_eq!(b.caller_rate("b"), 0.5);
        assert_eq!(b.caller_rate("nobody"), 0.0);
    }
}
