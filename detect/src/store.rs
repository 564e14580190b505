//! The shared baseline store: one [`SignalBaseline`] per (pair or node, golden signal), which
//! every signature reads and the judge teaches with healthy windows only.
//!
//! Signals of a pair ([`PairWindow`]): `rate_rps` (req/s), `error_ratio`, `p50_us` and
//! `p99_us` (µs, only when the window had timed requests), `concurrency_mean` (requests in
//! flight), `bandwidth_in_bps`, `bandwidth_out_bps` (bytes/s). Signals of a node
//! ([`NodeWindow`]): `inflow_rps` (req/s), `ok_ratio`, `downstream_per_request`.
//! A pair with no request in a window gives no value ("no data", not zero latency): its
//! baselines learn nothing from that window. Its rate is the exception: a pair that has a
//! baseline and went silent has rate 0, which is data.

use std::collections::BTreeMap;

use schemas::{NodeWindow, PairWindow};
use serde::{Deserialize, Serialize};

use crate::adaptive::{BaselineSpec, Score, SignalBaseline};

/// One window's values of a pair (`source` set) or a node, held back from learning until
/// it is known whether they belong to an incident (see `NodeDetector`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The pair's source; `None` for a node.
    pub source: Option<String>,
    /// The pair's destination, or the node.
    pub name: String,
    /// The window, µs since the epoch.
    pub start_us: i64,
    /// See `start_us`.
    pub end_us: i64,
    /// The signals that had data, in their units.
    pub values: Vec<(Signal, f64)>,
}

impl Held {
    /// The values of a pair's window, to learn later with [`BaselineStore::learn_held`].
    pub fn of_pair(p: &PairWindow) -> Held {
        Held {
            source: Some(p.source.clone()),
            name: p.destination.clone(),
            start_us: p.window.start_us,
            end_us: p.window.end_us,
            values: Signal::PAIR
                .iter()
                .filter_map(|&s| s.of_pair(p).map(|x| (s, x)))
                .collect(),
        }
    }

    /// The values of a node's window, to learn later with [`BaselineStore::learn_held`].
    pub fn of_node(n: &NodeWindow) -> Held {
        Held {
            source: None,
            name: n.node.clone(),
            start_us: n.window.start_us,
            end_us: n.window.end_us,
            values: Signal::NODE
                .iter()
                .filter_map(|&s| s.of_node(n).map(|x| (s, x)))
                .collect(),
        }
    }
}

/// A golden signal with a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Pair: requests ÷ window length, req/s.
    RateRps,
    /// Pair: errors ÷ requests.
    ErrorRatio,
    /// Pair: median latency, µs.
    P50Us,
    /// Pair: 99th percentile latency, µs.
    P99Us,
    /// Pair: mean requests in flight.
    ConcurrencyMean,
    /// Pair: request bytes/s.
    BandwidthInBps,
    /// Pair: response bytes/s.
    BandwidthOutBps,
    /// Node: requests received ÷ window length, req/s.
    InflowRps,
    /// Node: successful responses ÷ requests received.
    OkRatio,
    /// Node: calls to dependencies ÷ requests received.
    DownstreamPerRequest,
}

impl Signal {
    /// The pair signals.
    pub const PAIR: [Signal; 7] = [
        Signal::RateRps,
        Signal::ErrorRatio,
        Signal::P50Us,
        Signal::P99Us,
        Signal::ConcurrencyMean,
        Signal::BandwidthInBps,
        Signal::BandwidthOutBps,
    ];
    /// The node signals.
    pub const NODE: [Signal; 3] = [
        Signal::InflowRps,
        Signal::OkRatio,
        Signal::DownstreamPerRequest,
    ];

    /// The signal's name (evidence, columns): `rate_rps`, `error_ratio`, `p50_us`, …
    pub fn name(self) -> &'static str {
        match self {
            Signal::RateRps => "rate_rps",
            Signal::ErrorRatio => "error_ratio",
            Signal::P50Us => "p50_us",
            Signal::P99Us => "p99_us",
            Signal::ConcurrencyMean => "concurrency_mean",
            Signal::BandwidthInBps => "bandwidth_in_bps",
            Signal::BandwidthOutBps => "bandwidth_out_bps",
            Signal::InflowRps => "inflow_rps",
            Signal::OkRatio => "ok_ratio",
            Signal::DownstreamPerRequest => "downstream_per_request",
        }
    }

    /// The signal's unit: `req/s`, `ratio`, `µs`, `requests`, `bytes/s`.
    pub fn unit(self) -> &'static str {
        match self {
            Signal::RateRps | Signal::InflowRps => "req/s",
            Signal::ErrorRatio | Signal::OkRatio | Signal::DownstreamPerRequest => "ratio",
            Signal::P50Us | Signal::P99Us => "µs",
            Signal::ConcurrencyMean => "requests",
            Signal::BandwidthInBps | Signal::BandwidthOutBps => "bytes/s",
        }
    }

    /// The least σ worth scoring against, in the signal's unit: changes smaller than this
    /// are never surprising (a pair at 0.1 req/s that never varied, a p99 steady to the µs).
    pub fn min_spread(self) -> f64 {
        match self {
            Signal::RateRps | Signal::InflowRps => 0.5,
            Signal::ErrorRatio | Signal::OkRatio => 0.01,
            Signal::DownstreamPerRequest => 0.05,
            Signal::P50Us | Signal::P99Us => 1_000.0,
            Signal::ConcurrencyMean => 0.5,
            Signal::BandwidthInBps | Signal::BandwidthOutBps => 1_000.0,
        }
    }

    /// The signal's value in a pair window; `None` when the window has no data for it.
    pub fn of_pair(self, p: &PairWindow) -> Option<f64> {
        let any = p.requests > 0;
        match self {
            Signal::RateRps => Some(p.rate_rps),
            Signal::ErrorRatio => any.then_some(p.error_ratio),
            Signal::P50Us => p.latency.map(|l| l.p50_us as f64),
            Signal::P99Us => p.latency.map(|l| l.p99_us as f64),
            Signal::ConcurrencyMean => Some(p.concurrency_mean),
            Signal::BandwidthInBps => Some(p.bandwidth_in_bps),
            Signal::BandwidthOutBps => Some(p.bandwidth_out_bps),
            _ => None,
        }
    }

    /// The signal's value in a node window; `None` when the window has no data for it.
    pub fn of_node(self, n: &NodeWindow) -> Option<f64> {
        let inflow = n.inflow_requests as f64;
        match self {
            Signal::InflowRps => Some(inflow / n.window.len_secs()),
            Signal::OkRatio => (n.inflow_requests > 0).then(|| n.ok_responses as f64 / inflow),
            Signal::DownstreamPerRequest => {
                (n.inflow_requests > 0).then(|| n.downstream_requests as f64 / inflow)
            }
            _ => None,
        }
    }
}

/// The baselines of one pair or node, by signal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    #[serde(with = "by_signal")]
    signals: BySignal,
    /// End of the last window the subject appeared in (learned or not), µs since the epoch.
    last_seen_us: i64,
}

impl Baselines {
    /// The baseline of `signal`, if it learned anything.
    pub fn get(&self, signal: Signal) -> Option<&SignalBaseline> {
        self.signals.get(signal)
    }

    /// End of the last window the subject appeared in, µs since the epoch.
    pub fn last_seen_us(&self) -> i64 {
        self.last_seen_us
    }

    /// Windows learned by the signal learned most.
    pub fn windows(&self) -> u64 {
        self.signals
            .values()
            .map(SignalBaseline::len)
            .max()
            .unwrap_or(0)
    }
}

/// A map by pair `(source, destination)` looked up by borrowed names ([`PairRef`]), without
/// building the key: what is kept per pair is asked for by every pair of every window (100 k
/// pairs at scale).
pub type PairMap<V> = hashbrown::HashMap<(String, String), V, foldhash::fast::FixedState>;

/// A pair's key borrowed, `(source, destination)`: hashes as the owned `(String, String)` does
/// (a tuple hashes its fields in order, a `String` as its `str`), so it finds it in a
/// [`PairMap`] (`get`, `get_mut`, and `entry_ref`, which builds the owned key only to insert).
#[derive(Debug, Clone, Copy, Hash)]
pub struct PairRef<'a>(pub &'a str, pub &'a str);

impl From<&PairRef<'_>> for (String, String) {
    fn from(p: &PairRef<'_>) -> Self {
        (p.0.to_owned(), p.1.to_owned())
    }
}

impl hashbrown::Equivalent<(String, String)> for PairRef<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// A subject's baselines by signal: at most the 7 of a pair, sorted by signal, looked up
/// by a scan (each window asks every pair for several; a map's nodes cost more than the
/// scan).
#[derive(Debug, Clone, Default, PartialEq)]
struct BySignal(Vec<(Signal, SignalBaseline)>);

impl BySignal {
    fn get(&self, signal: Signal) -> Option<&SignalBaseline> {
        self.0.iter().find(|(s, _)| *s == signal).map(|(_, b)| b)
    }

    /// The baseline of `signal`, added empty in its place when missing.
    fn entry(&mut self, signal: Signal) -> &mut SignalBaseline {
        let i = match self.0.iter().position(|(s, _)| *s >= signal) {
            Some(i) if self.0[i].0 == signal => i,
            Some(i) => {
                self.0.insert(i, (signal, SignalBaseline::default()));
                i
            }
            None => {
                self.0.push((signal, SignalBaseline::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    fn values(&self) -> impl Iterator<Item = &SignalBaseline> {
        self.0.iter().map(|(_, b)| b)
    }
}

/// [`BySignal`] encoded as the map by signal it was (older checkpoints decode).
mod by_signal {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::{BySignal, Signal, SignalBaseline};

    pub fn serialize<S: Serializer>(b: &BySignal, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(b.0.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BySignal, D::Error> {
        let map = BTreeMap::<Signal, SignalBaseline>::deserialize(d)?;
        Ok(BySignal(map.into_iter().collect()))
    }
}

/// Every pair's and node's baselines (see the [module docs](self)). Plain data (serde): it is
/// saved with the checkpoint, the pairs sorted (the same store always encodes the same).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineStore {
    spec: BaselineSpec,
    #[serde(with = "sorted_pairs")]
    pairs: PairMap<Baselines>,
    nodes: BTreeMap<String, Baselines>,
}

/// The pairs' map encoded as a map sorted by key, the form it had as a `BTreeMap` (older
/// checkpoints decode).
mod sorted_pairs {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Baselines, PairMap};

    pub fn serialize<S: Serializer>(pairs: &PairMap<Baselines>, s: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<_> = pairs.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        s.collect_map(sorted)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PairMap<Baselines>, D::Error> {
        let sorted = std::collections::BTreeMap::<(String, String), Baselines>::deserialize(d)?;
        Ok(sorted.into_iter().collect())
    }
}

impl BaselineStore {
    /// An empty store whose baselines learn and score with `spec` (each signal's
    /// [`Signal::min_spread`] as its σ floor).
    pub fn new(spec: BaselineSpec) -> Self {
        BaselineStore {
            spec,
            ..BaselineStore::default()
        }
    }

    /// The spec of `signal`'s baselines.
    pub fn spec(&self, signal: Signal) -> BaselineSpec {
        self.spec.with_min_spread(signal.min_spread())
    }

    /// Replaces the spec (a checkpoint restored under an edited config).
    pub fn set_spec(&mut self, spec: BaselineSpec) {
        self.spec = spec;
    }

    /// The baselines of the pair `source → destination`.
    pub fn pair(&self, source: &str, destination: &str) -> Option<&Baselines> {
        self.pairs.get(&PairRef(source, destination))
    }

    /// The baselines of a node.
    pub fn node(&self, node: &str) -> Option<&Baselines> {
        self.nodes.get(node)
    }

    /// Pairs with baselines.
    pub fn pairs(&self) -> usize {
        self.pairs.len()
    }

    /// Nodes with baselines.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// `signal` of a pair window against the pair's baseline (`None`: no data, or warm-up).
    pub fn score_pair(&self, p: &PairWindow, signal: Signal) -> Option<Score> {
        let x = signal.of_pair(p)?;
        let b = self.pair(&p.source, &p.destination)?.get(signal)?;
        b.score(&self.spec(signal), p.window.start_us, x)
    }

    /// `signal` of a node window against the node's baseline (`None`: no data, or warm-up).
    pub fn score_node(&self, n: &NodeWindow, signal: Signal) -> Option<Score> {
        let x = signal.of_node(n)?;
        let b = self.node(&n.node)?.get(signal)?;
        b.score(&self.spec(signal), n.window.start_us, x)
    }

    /// The expected value and σ of a pair's `signal` at `t_us` (µs since the epoch), once
    /// its baseline is warm: the baseline columns of the window tables.
    pub fn expected_pair(
        &self,
        source: &str,
        destination: &str,
        signal: Signal,
        t_us: i64,
    ) -> Option<(f64, f64)> {
        let b = self.pair(source, destination)?.get(signal)?;
        let (expected, sigma, _) = b.z(&self.spec(signal), t_us, 0.0)?;
        Some((expected, sigma))
    }

    /// The expected value and σ of a node's `signal` at `t_us`, once its baseline is warm.
    pub fn expected_node(&self, node: &str, signal: Signal, t_us: i64) -> Option<(f64, f64)> {
        let b = self.node(node)?.get(signal)?;
        let (expected, sigma, _) = b.z(&self.spec(signal), t_us, 0.0)?;
        Some((expected, sigma))
    }

    /// Teaches the pair's baselines every signal of a healthy window that has data.
    pub fn learn_pair(&mut self, p: &PairWindow) {
        let spec = self.spec;
        let b = pair_entry(&mut self.pairs, &p.source, &p.destination);
        for signal in Signal::PAIR {
            if let Some(x) = signal.of_pair(p) {
                let s = spec.with_min_spread(signal.min_spread());
                b.signals.entry(signal).learn(&s, p.window.start_us, x);
            }
        }
        b.last_seen_us = b.last_seen_us.max(p.window.end_us);
    }

    /// Teaches the node's baselines every signal of a healthy window that has data.
    pub fn learn_node(&mut self, n: &NodeWindow) {
        let spec = self.spec;
        let b = self.nodes.entry(n.node.clone()).or_default();
        for signal in Signal::NODE {
            if let Some(x) = signal.of_node(n) {
                let s = spec.with_min_spread(signal.min_spread());
                b.signals.entry(signal).learn(&s, n.window.start_us, x);
            }
        }
        b.last_seen_us = b.last_seen_us.max(n.window.end_us);
    }

    /// Teaches held values, as [`BaselineStore::learn_pair`] or
    /// [`BaselineStore::learn_node`] would have when their window closed.
    pub fn learn_held(&mut self, h: &Held) {
        let spec = self.spec;
        let b = match &h.source {
            Some(source) => pair_entry(&mut self.pairs, source, &h.name),
            None => self.nodes.entry(h.name.clone()).or_default(),
        };
        for &(signal, x) in &h.values {
            let s = spec.with_min_spread(signal.min_spread());
            b.signals.entry(signal).learn(&s, h.start_us, x);
        }
        b.last_seen_us = b.last_seen_us.max(h.end_us);
    }

    /// Marks a pair seen in a window that did not teach it (an unhealthy one), so that a
    /// long failure does not make it forgotten.
    pub fn touch_pair(&mut self, p: &PairWindow) {
        if let Some(b) = self.pairs.get_mut(&PairRef(&p.source, &p.destination)) {
            b.last_seen_us = b.last_seen_us.max(p.window.end_us);
        }
    }

    /// Marks a node seen in a window that did not teach it.
    pub fn touch_node(&mut self, n: &NodeWindow) {
        if let Some(b) = self.nodes.get_mut(&n.node) {
            b.last_seen_us = b.last_seen_us.max(n.window.end_us);
        }
    }

    /// Forgets pairs and nodes not seen since `before_us` (µs since the epoch): a subject
    /// back after a long absence learns a new normal.
    pub fn forget_before(&mut self, before_us: i64) {
        self.pairs.retain(|_, b| b.last_seen_us > before_us);
        self.nodes.retain(|_, b| b.last_seen_us > before_us);
    }
}

/// The baselines of `source → destination`, added empty when missing; the key is built only
/// then.
fn pair_entry<'m>(
    pairs: &'m mut PairMap<Baselines>,
    source: &str,
    destination: &str,
) -> &'m mut Baselines {
    pairs.entry_ref(&PairRef(source, destination)).or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{SCHEMA_VERSION, Window};

    fn window(source: &str, destination: &str, requests: u64, start_us: i64) -> PairWindow {
        PairWindow {
            schema_version: SCHEMA_VERSION,
            kind: "pair-window".into(),
            window: Window {
                start_us,
                end_us: start_us + 10_000_000,
            },
            source: source.into(),
            destination: destination.into(),
            requests,
            rate_rps: requests as f64 / 10.0,
            errors: 0,
            error_ratio: 0.0,
            latency: None,
            concurrency_mean: 0.0,
            concurrency_peak: 0,
            bytes_in: 0,
            bytes_out: 0,
            bandwidth_in_bps: 0.0,
            bandwidth_out_bps: 0.0,
            breakdown: Vec::new(),
            breakdown_overflow: 0,
        }
    }

    /// The store as it was encoded when its pairs were a `BTreeMap`.
    #[derive(Serialize)]
    struct AsBTree<'a> {
        spec: BaselineSpec,
        pairs: BTreeMap<(String, String), Baselines>,
        nodes: &'a BTreeMap<String, Baselines>,
    }

    #[test]
    fn pairs_are_found_by_borrowed_names_and_encode_sorted_as_before() {
        let names = [
            ("web", "cart"),
            ("api", "db"),
            ("web", "api"),
            ("cart", "db"),
        ];
        let mut forward = BaselineStore::new(BaselineSpec::default());
        let mut backward = BaselineStore::new(BaselineSpec::default());
        for (i, &(s, d)) in names.iter().enumerate() {
            forward.learn_pair(&window(s, d, 10 * (i as u64 + 1), 0));
        }
        for (i, &(s, d)) in names.iter().enumerate().rev() {
            backward.learn_pair(&window(s, d, 10 * (i as u64 + 1), 0));
        }
        // "a" + "bc" and "ab" + "c" are different pairs (a tuple hashes each name whole)
        assert!(forward.pair("we", "bcart").is_none());
        let b = forward.pair("api", "db").expect("learned");
        assert_eq!(b.last_seen_us(), 10_000_000);
        assert_eq!(b.windows(), 1);
        let encoded = rmp_serde::to_vec_named(&forward).unwrap();
        assert_eq!(encoded, rmp_serde::to_vec_named(&backward).unwrap());
        let as_btree = AsBTree {
            spec: forward.spec,
            pairs: forward
                .pairs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            nodes: &forward.nodes,
        };
        assert_eq!(encoded, rmp_serde::to_vec_named(&as_btree).unwrap());
        // a pair's baselines encode as the map by signal they were
        #[derive(Serialize)]
        struct MapBySignal {
            signals: BTreeMap<Signal, SignalBaseline>,
            last_seen_us: i64,
        }
        let b = forward.pair("web", "cart").unwrap();
        assert_eq!(
            b.signals.0.len(),
            5,
            "rate, errors, concurrency, bandwidth both ways"
        );
        // a window with latencies adds p50 and p99 between them
        let mut timed = window("web", "cart", 10, 10_000_000);
        timed.latency = Some(schemas::Latency {
            p50_us: 2_000,
            p90_us: 5_000,
            p99_us: 9_000,
            max_us: 9_500,
        });
        forward.learn_pair(&timed);
        let b = forward.pair("web", "cart").unwrap();
        let order: Vec<Signal> = b.signals.0.iter().map(|(s, _)| *s).collect();
        assert_eq!(order, Signal::PAIR);
        assert_eq!(b.get(Signal::P99Us).map(SignalBaseline::len), Some(1));
        assert_eq!(b.get(Signal::RateRps).map(SignalBaseline::len), Some(2));
        let as_map = MapBySignal {
            signals: b.signals.0.iter().cloned().collect(),
            last_seen_us: b.last_seen_us,
        };
        assert_eq!(
            rmp_serde::to_vec_named(b).unwrap(),
            rmp_serde::to_vec_named(&as_map).unwrap()
        );
        let encoded = rmp_serde::to_vec_named(&forward).unwrap();
        let decoded: BaselineStore = rmp_serde::from_slice(&encoded).unwrap();
        assert_eq!(decoded, forward);
        assert_eq!(decoded.pairs(), 4);
    }
}
