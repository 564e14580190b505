//! Step 2 of detection: node-level detection. One closed window's [`PairWindow`]s in (the
//! hand-off from [`crate::pair::PairAggregator`], which could come from a topic keyed by node),
//! that window's [`NodeWindow`]s and findings out.
//!
//! A node's signals in a window, summed from the window's pairs:
//! * `inflow_requests`, `inflow_bytes`: Σ `requests`, Σ `bytes_in` of the pairs where the node
//!   is the destination;
//! * `ok_responses`: Σ (`requests` − `errors`) of those pairs; `outflow_bytes`: Σ `bytes_out`;
//! * `downstream_requests`: Σ `requests` of the pairs where the node is the source, except
//!   pairs to [`UNROUTED`] (requests no service received are no calls to a dependency);
//! * `callers`: distinct sources of those pairs with at least one request in the window.
//!
//! Every service that appears on either end of a pair gets a `NodeWindow`. The pseudo-nodes
//! [`UNROUTED`] (requests that reached no service) and [`crate::pair::OTHER`] (the overflow
//! past `max-pairs`) get one too, so their inflow stays visible, but they are never judged: no
//! baseline, no finding, no command.

use std::collections::{BTreeMap, VecDeque};

use schemas::{Finding, NodeWindow, PairWindow, SCHEMA_VERSION, UNROUTED, Window};
use serde::{Deserialize, Serialize};

use schemas::Subject;

use crate::incident::Incidents;
use crate::signatures::{BlackHole, SignatureDetector, WindowView};
use crate::store::{BaselineStore, Held};
use crate::suite::Suite;

/// One caller of a node in one window, as the signatures see it: the evidence per source, so
/// that a signature can tell a node's failure from one caller's doing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallerWindow<'a> {
    /// The calling service.
    pub service: &'a str,
    /// Its request rate to the node in the window, req/s.
    pub rate_rps: f64,
    /// Its requests to the node that started in the window.
    pub requests: u64,
    /// Of those, the ones that were not errors (`requests` − `errors` of the pair).
    pub ok_responses: u64,
}

/// What node-level detection makes of one closed window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeOutcome {
    /// One per service seen in the window's pairs, sorted by node.
    pub nodes: Vec<NodeWindow>,
    /// Signatures that fired, in node order.
    pub findings: Vec<Finding>,
}

#[derive(Default)]
struct NodeSums<'a> {
    inflow_requests: u64,
    inflow_bytes: u64,
    ok_responses: u64,
    outflow_bytes: u64,
    downstream_requests: u64,
    /// The callers, in caller order because pairs come sorted by (source, destination).
    callers: Vec<CallerWindow<'a>>,
}

/// Node sums of a window's pairs, sorted by node.
fn sums(pairs: &[PairWindow]) -> Vec<(&str, NodeSums<'_>)> {
    let mut index: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
    let mut nodes: Vec<(&str, NodeSums<'_>)> = Vec::new();
    let mut slot = |name| {
        *index.entry(name).or_insert_with(|| {
            nodes.push((name, NodeSums::default()));
            nodes.len() - 1
        })
    };
    let mut at: Vec<(usize, usize)> = Vec::with_capacity(pairs.len());
    // pairs usually come sorted by source: look each run's source up once
    let mut last_source: Option<(&str, usize)> = None;
    for p in pairs {
        let d = slot(p.destination.as_str());
        let s = match last_source {
            Some((name, s)) if name == p.source => s,
            _ => slot(p.source.as_str()),
        };
        last_source = Some((p.source.as_str(), s));
        at.push((d, s));
    }
    for (p, &(d, s)) in pairs.iter().zip(&at) {
        let d = &mut nodes[d].1;
        d.inflow_requests += p.requests;
        d.inflow_bytes = d.inflow_bytes.saturating_add(p.bytes_in);
        d.ok_responses += p.requests.saturating_sub(p.errors);
        d.outflow_bytes = d.outflow_bytes.saturating_add(p.bytes_out);
        if p.requests > 0 {
            d.callers.push(CallerWindow {
                service: p.source.as_str(),
                rate_rps: p.rate_rps,
                requests: p.requests,
                ok_responses: p.requests.saturating_sub(p.errors),
            });
        }
        if p.destination != UNROUTED {
            nodes[s].1.downstream_requests += p.requests;
        }
    }
    for (_, n) in &mut nodes {
        // pairs usually come sorted by (source, destination): callers are then in order
        if !n.callers.is_sorted_by(|a, b| a.service <= b.service) {
            n.callers.sort_by(|a, b| a.service.cmp(b.service));
        }
    }
    nodes.sort_unstable_by(|a, b| a.0.cmp(b.0));
    nodes
}

/// The [`NodeWindow`]s of one window, sorted by node (see the [module docs](self)).
pub fn node_windows(window: Window, pairs: &[PairWindow]) -> Vec<NodeWindow> {
    sums(pairs)
        .into_iter()
        .map(|(node, s)| node_window(window, node, &s))
        .collect()
}

fn node_window(window: Window, node: &str, s: &NodeSums<'_>) -> NodeWindow {
    NodeWindow {
        schema_version: SCHEMA_VERSION,
        kind: "node-window".into(),
        window,
        node: node.to_owned(),
        inflow_requests: s.inflow_requests,
        inflow_bytes: s.inflow_bytes,
        ok_responses: s.ok_responses,
        outflow_bytes: s.outflow_bytes,
        downstream_requests: s.downstream_requests,
        callers: s.callers.len() as u64,
    }
}

/// Drops the generic anomalies (rate, latency, errors, queueing of one pair) that a
/// signature's finding of the same window already explains: pairs into a node found by a
/// node or sources finding, the pair of a zone-pair finding, pairs out of a version's
/// service; and a spreading degradation naming one of those nodes or services as a
/// candidate. One incident, one finding.
fn subsume(raw: &mut Vec<Finding>) {
    use schemas::Signature as S;
    let generic = |s: S| {
        matches!(
            s,
            S::RateDrop | S::RateSpike | S::LatencyShift | S::ErrorSpike | S::Queueing
        )
    };
    let mut into: Vec<String> = Vec::new();
    let mut from: Vec<String> = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for f in raw.iter().filter(|f| !generic(f.signature)) {
        match &f.subject {
            Subject::Node { node } => into.push(node.clone()),
            Subject::Sources { destination, .. } => into.push(destination.clone()),
            Subject::ZonePair {
                source,
                destination,
                ..
            } => pairs.push((source.clone(), destination.clone())),
            Subject::Version { service, .. } => from.push(service.clone()),
            _ => {}
        }
    }
    if into.is_empty() && from.is_empty() && pairs.is_empty() {
        return;
    }
    raw.retain(|f| match &f.subject {
        // a spreading degradation whose candidates a signature already names
        Subject::Landscape => !f
            .related
            .iter()
            .any(|r| r.role == "candidate" && (into.contains(&r.name) || from.contains(&r.name))),
        Subject::Pair {
            source,
            destination,
        } if generic(f.signature) => {
            !into.contains(destination)
                && !from.contains(source)
                && !pairs.iter().any(|(s, d)| s == source && d == destination)
        }
        _ => true,
    });
}

/// Whether `name` is a service (not one of the pseudo-nodes [`UNROUTED`] and
/// [`crate::pair::OTHER`], which are never judged).
#[inline]
pub fn is_service(name: &str) -> bool {
    const _: () =
        assert!(UNROUTED.as_bytes()[0] == b'(' && crate::pair::OTHER.as_bytes()[0] == b'(');
    // both pseudo-nodes start with '(': one byte decides for nearly every name (a name as
    // long as one of them would otherwise cost a `memcmp` call per pair and detector)
    name.as_bytes().first() != Some(&b'(') || (name != UNROUTED && name != crate::pair::OTHER)
}

/// Stage 2's detection: derives node windows, runs every signature of the [`Suite`] on the
/// window against the shared [`BaselineStore`], keeps raw findings whose incident persists
/// ([`Incidents`]), and teaches the store with the healthy part of the window (see
/// [`crate::signatures`]). No clock; windows must be given in window order.
///
/// A node absent from the last [`IDLE_WINDOWS`] windows that had traffic (no pair touched
/// it: not "no healthy window", a node failing for an hour keeps its baseline) loses its
/// baselines before its next window is judged, so a node back after a gap (a night, a
/// weekend) while the rest of the landscape went on is judged against no stale normal, and
/// learns a new one. Windows without any traffic don't count: when the whole input pauses
/// (a log shipper down for an hour, trace files with gaps between them), every subject is as
/// absent as the others and keeps its baselines, unless the pause outlasts
/// [`STALE_AFTER_US`] (input resumed days later, a replay of last week's logs after today's):
/// a normal from before that is not trusted.
#[derive(Debug)]
pub struct NodeDetector {
    suite: Suite,
    black_hole: BlackHole,
    detectors: Vec<Box<dyn SignatureDetector>>,
    store: BaselineStore,
    incidents: Incidents,
    /// Windows judged.
    windows: u64,
    /// End of the last window each node with a black-hole baseline appeared in, µs.
    last_seen: BTreeMap<String, i64>,
    /// Starts (µs) of the last [`IDLE_WINDOWS`] windows judged that had traffic, oldest first.
    traffic_windows: VecDeque<i64>,
    /// Values held back from learning by raw findings whose incidents had not opened.
    deferred: Vec<Deferred>,
}

/// One window's values of a pair or node that a raw finding kept from learning while its
/// incident could still open: dropped if it opens, learned once it no longer can.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deferred {
    /// The incidents (signature, subject key) that held the values back.
    pub incidents: Vec<(String, String)>,
    /// The last window (count of windows judged) in which one of them can still open.
    pub until: u64,
    /// The values.
    pub held: Held,
}

/// A raw finding of a signature, as the learning gate sees it once the incidents took it.
struct Gate {
    incident: (String, String),
    /// Windows within which it can still open its incident (`of-windows`).
    of_windows: u32,
    subject: Subject,
    /// Root-cause candidates it names.
    candidates: Vec<String>,
}

/// The checkpointed form of a [`NodeDetector`]: plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDetectorState {
    /// The black-hole signature's baselines.
    pub black_hole: BlackHole,
    /// Every other detector's state (MessagePack), by detector name.
    pub detectors: BTreeMap<String, serde_bytes::ByteBuf>,
    /// The shared baselines.
    pub store: BaselineStore,
    /// Open and recent incidents.
    pub incidents: Incidents,
    /// Windows judged.
    pub windows: u64,
    /// See [`NodeDetector`].
    pub last_seen: BTreeMap<String, i64>,
    /// Starts (µs) of the last [`IDLE_WINDOWS`] windows judged that had traffic, oldest
    /// first (see [`NodeDetector`]).
    #[serde(default)]
    pub traffic_windows: VecDeque<i64>,
    /// Values held back from learning, see [`Deferred`].
    #[serde(default)]
    pub deferred: Vec<Deferred>,
}

/// A node absent from this many windows with traffic loses its baselines (60 windows: 10 min
/// at 10 s).
pub const IDLE_WINDOWS: i64 = 60;

/// A node last seen longer ago than this, µs of event time (a day: one daily season), loses
/// its baselines, whether or not any traffic came meanwhile.
pub const STALE_AFTER_US: i64 = 86_400_000_000;

impl NodeDetector {
    /// Adds deployments learned while running to the deploy history of its suite and
    /// detectors (see [`crate::signatures::deploy::DeploySpec::add_deployments`]); returns
    /// how many were new.
    pub fn add_deployments(
        &mut self,
        events: &[crate::signatures::deploy::DeploymentEvent],
    ) -> usize {
        for d in &mut self.detectors {
            d.add_deployments(events);
        }
        self.suite.add_deployments(events)
    }

    /// A detector with empty baselines.
    pub fn new(suite: Suite) -> Self {
        NodeDetector {
            black_hole: BlackHole::new(suite.black_hole.clone()),
            detectors: suite.detectors(),
            store: BaselineStore::new(suite.baseline),
            incidents: Incidents::default(),
            suite,
            windows: 0,
            last_seen: BTreeMap::new(),
            traffic_windows: VecDeque::new(),
            deferred: Vec::new(),
        }
    }

    /// The black-hole signature and its baselines.
    pub fn black_hole(&self) -> &BlackHole {
        &self.black_hole
    }

    /// The shared baselines.
    pub fn baselines(&self) -> &BaselineStore {
        &self.store
    }

    /// Open and recent incidents.
    pub fn incidents(&self) -> &Incidents {
        &self.incidents
    }

    /// The state to checkpoint.
    pub fn state(&self) -> NodeDetectorState {
        NodeDetectorState {
            black_hole: self.black_hole.clone(),
            detectors: self
                .detectors
                .iter()
                .map(|d| (d.name().to_owned(), serde_bytes::ByteBuf::from(d.save())))
                .collect(),
            store: self.store.clone(),
            incidents: self.incidents.clone(),
            windows: self.windows,
            last_seen: self.last_seen.clone(),
            traffic_windows: self.traffic_windows.clone(),
            deferred: self.deferred.clone(),
        }
    }

    /// A detector judging with `suite` from `state` (possibly saved under another config:
    /// baselines and detectors' states are kept, a detector the suite no longer has is
    /// dropped, a new one starts empty).
    ///
    /// # Errors
    /// A message naming the detector whose state does not decode.
    pub fn restore(suite: Suite, state: NodeDetectorState) -> Result<Self, String> {
        let mut d = NodeDetector::new(suite);
        d.black_hole = state.black_hole;
        d.black_hole.set_spec(d.suite.black_hole.clone());
        for det in &mut d.detectors {
            if let Some(bytes) = state.detectors.get(det.name()) {
                det.load(bytes)
                    .map_err(|e| format!("detector {}: {e}", det.name()))?;
            }
        }
        d.store = state.store;
        d.store.set_spec(d.suite.baseline);
        d.incidents = state.incidents;
        d.windows = state.windows;
        d.last_seen = state.last_seen;
        d.traffic_windows = state.traffic_windows;
        d.deferred = state.deferred;
        Ok(d)
    }

    /// Judges one closed window from its pairs (all of them, any order).
    pub fn detect(&mut self, window: Window, pairs: &[PairWindow]) -> NodeOutcome {
        self.detect_owned(window, pairs, |_| true)
    }

    /// Judges the nodes `owns` accepts, from the window's pairs (all pairs touching those
    /// nodes must be among them: a node seen partially is not judged). The others get no
    /// node window, no finding and no baseline here: another instance owns them. Findings
    /// of pair and landscape detectors are kept when `owns` accepts their anchor
    /// ([`crate::signatures::anchor`]).
    pub fn detect_owned(
        &mut self,
        window: Window,
        pairs: &[PairWindow],
        owns: impl Fn(&str) -> bool,
    ) -> NodeOutcome {
        self.detect_with(window, pairs, owns, |_, _| {})
    }

    /// [`NodeDetector::detect_owned`] with `extra` detection run on the same view after the
    /// signatures (user rules, see `graywatch::rules`): its raw findings are kept by their
    /// anchor's owner and debounced like the others (by `rule` name and subject), but they
    /// don't keep baselines from learning: a standing rule is policy, not a sign that the
    /// window was unhealthy.
    pub fn detect_with(
        &mut self,
        window: Window,
        pairs: &[PairWindow],
        owns: impl Fn(&str) -> bool,
        extra: impl FnOnce(&WindowView<'_>, &mut Vec<Finding>),
    ) -> NodeOutcome {
        let sums = sums(pairs);
        let mut nodes = Vec::with_capacity(sums.len());
        let mut judged = Vec::with_capacity(sums.len());
        let mut callers = Vec::with_capacity(sums.len());
        // a node last seen in a window ending at or before this was absent from the last
        // IDLE_WINDOWS windows with traffic, or for longer than STALE_AFTER_US
        let by_traffic = if self.traffic_windows.len() as i64 >= IDLE_WINDOWS {
            self.traffic_windows.front().copied().unwrap_or(i64::MIN)
        } else {
            i64::MIN
        };
        let idle_before = by_traffic.max(window.start_us.saturating_sub(STALE_AFTER_US));
        if !pairs.is_empty() {
            if self.traffic_windows.len() as i64 >= IDLE_WINDOWS {
                self.traffic_windows.pop_front();
            }
            self.traffic_windows.push_back(window.start_us);
        }
        let black_hole = &mut self.black_hole;
        self.last_seen.retain(|node, &mut seen| {
            let keep = seen > idle_before;
            if !keep {
                black_hole.forget(node);
            }
            keep
        });
        self.store.forget_before(idle_before);
        for d in &mut self.detectors {
            d.forget_before(idle_before);
        }
        for (node, s) in sums.iter().filter(|(node, _)| owns(node)) {
            let nw = node_window(window, node, s);
            if is_service(node) {
                judged.push(nw.clone());
                callers.push(s.callers.clone());
            }
            nodes.push(nw);
        }
        let view = WindowView::new(
            window,
            pairs,
            &judged,
            &callers,
            &self.store,
            &self.incidents,
        );
        let mut raw = Vec::new();
        self.black_hole.judge(&view, &mut raw);
        for d in &mut self.detectors {
            d.judge(&view, &mut raw);
        }
        let mut rules = Vec::new();
        extra(&view, &mut rules);
        let kept =
            |f: &Finding| crate::signatures::anchor(&f.subject, &f.related).is_none_or(&owns);
        raw.retain(kept);
        rules.retain(kept);
        subsume(&mut raw);
        // what the signatures' raw findings keep from learning (a user rule's keep nothing:
        // a standing rule is policy, not a sign that the window was unhealthy)
        let gates: Vec<Gate> = raw
            .iter()
            .map(|f| Gate {
                incident: Incidents::key(f),
                of_windows: self.suite.debounce(f.signature).of_windows,
                subject: f.subject.clone(),
                candidates: f
                    .related
                    .iter()
                    .filter(|r| r.role == "candidate")
                    .map(|r| r.name.clone())
                    .collect(),
            })
            .collect();
        raw.append(&mut rules);
        for (node, _) in sums.iter().filter(|(node, _)| owns(node)) {
            // only nodes with a black-hole baseline are remembered: a flood of one-off
            // names costs nothing
            match self.last_seen.get_mut(*node) {
                Some(seen) => *seen = (*seen).max(window.end_us),
                None if self.black_hole.baseline(node).is_some() => {
                    self.last_seen.insert((*node).to_owned(), window.end_us);
                }
                None => {}
            }
        }
        let suite = &self.suite;
        let findings = self.incidents.step(raw, |f| suite.debounce(f.signature));
        self.settle_deferred();
        self.learn(pairs, &judged, &gates, &owns);
        self.windows += 1;
        NodeOutcome { nodes, findings }
    }

    /// Learns the held values whose incidents can no longer open, and drops those whose
    /// incident opened.
    fn settle_deferred(&mut self) {
        let (incidents, store, now) = (&self.incidents, &mut self.store, self.windows);
        self.deferred.retain(|d| {
            if d.incidents.iter().any(|k| incidents.is_open(k)) {
                return false;
            }
            if now >= d.until {
                store.learn_held(&d.held);
                return false;
            }
            true
        });
    }

    /// Teaches the store this window's pairs and nodes, after the incidents took its raw
    /// findings (`gates`):
    /// * the subject of an **open** incident teaches nothing, even in a window where it did
    ///   not fire (a black hole that answered a few requests: a few such windows in a row
    ///   would move the level to the outage's);
    /// * the subject of a raw finding whose incident has not opened is **held back**
    ///   ([`Deferred`]) until it is known: if the incident opens, the values are dropped; if
    ///   it can no longer open (its `of-windows` passed), they are learned then. A spike that
    ///   opens no incident is an excursion of a healthy signal (a pair whose p99 reaches a
    ///   pause every twentieth window learns that tail, instead of being surprised by it
    ///   forever), while an incident's first windows never teach its own baseline;
    /// * everything else is learned now.
    fn learn<'a>(
        &mut self,
        pairs: &[PairWindow],
        nodes: &[NodeWindow],
        gates: &'a [Gate],
        owns: &impl Fn(&str) -> bool,
    ) {
        use foldhash::{HashMap, HashSet};
        let mut bad = Marks::<HashSet<_>, HashSet<_>>::default();
        let mut held = Marks::<HashMap<_, Vec<usize>>, HashMap<_, Vec<usize>>>::default();
        for subject in self.incidents.open_subjects() {
            each_entity(subject, |e| bad.insert(e));
        }
        for (i, g) in gates.iter().enumerate() {
            let open = self.incidents.is_open(&g.incident);
            let mut mark = |e: Entity<'a>| {
                if open {
                    bad.insert(e);
                } else {
                    held.push(e, i);
                }
            };
            each_entity(&g.subject, &mut mark);
            for c in &g.candidates {
                mark(Entity::Node(c));
            }
        }
        let now = self.windows;
        let defer = |at: Vec<usize>, held: Held| Deferred {
            until: at
                .iter()
                .map(|&i| now + u64::from(gates[i].of_windows.max(1)) - 1)
                .max()
                .unwrap_or(now),
            incidents: at.into_iter().map(|i| gates[i].incident.clone()).collect(),
            held,
        };
        for p in pairs {
            if !is_service(&p.source) || !is_service(&p.destination) || !owns(&p.source) {
                continue;
            }
            let key = (p.source.as_str(), p.destination.as_str());
            if bad.nodes.contains(p.destination.as_str())
                || bad.sources.contains(p.source.as_str())
                || bad.pairs.contains(&key)
            {
                self.store.touch_pair(p);
                continue;
            }
            let at = holders([
                held.nodes.get(p.destination.as_str()),
                held.sources.get(p.source.as_str()),
                held.pairs.get(&key),
            ]);
            if at.is_empty() {
                self.store.learn_pair(p);
            } else {
                self.store.touch_pair(p);
                self.deferred.push(defer(at, Held::of_pair(p)));
            }
        }
        for n in nodes {
            let name = n.node.as_str();
            if bad.nodes.contains(name) || bad.sources.contains(name) {
                self.store.touch_node(n);
                continue;
            }
            let at = holders([held.nodes.get(name), held.sources.get(name)]);
            if at.is_empty() {
                self.store.learn_node(n);
            } else {
                self.store.touch_node(n);
                self.deferred.push(defer(at, Held::of_node(n)));
            }
        }
    }
}

/// What a finding's subject keeps from learning: a node (its pairs in and its node window),
/// a service's calls (a version's: its pairs out and its node window), or a pair.
#[derive(Clone, Copy)]
enum Entity<'a> {
    Node(&'a str),
    Source(&'a str),
    Pair(&'a str, &'a str),
}

/// The raw findings (indices) that hold an entity back, from its marks as a node, a source
/// or a pair.
fn holders<'h>(marks: impl IntoIterator<Item = Option<&'h Vec<usize>>>) -> Vec<usize> {
    marks.into_iter().flatten().flatten().copied().collect()
}

/// Calls `f` with each entity `subject` keeps from learning.
fn each_entity<'a>(subject: &'a Subject, mut f: impl FnMut(Entity<'a>)) {
    match subject {
        Subject::Node { node } => f(Entity::Node(node)),
        Subject::Pair {
            source,
            destination,
        }
        | Subject::ZonePair {
            source,
            destination,
            ..
        } => f(Entity::Pair(source, destination)),
        Subject::Version { service, .. } => f(Entity::Source(service)),
        Subject::Sources {
            destination,
            sources,
        } => {
            f(Entity::Node(destination));
            for s in sources {
                f(Entity::Pair(s, destination));
            }
        }
        _ => {}
    }
}

/// Entities marked by findings: a set (kept from learning) or a map to the findings that
/// hold them back.
#[derive(Default)]
struct Marks<N, P> {
    nodes: N,
    sources: N,
    pairs: P,
}

impl<'a> Marks<foldhash::HashSet<&'a str>, foldhash::HashSet<(&'a str, &'a str)>> {
    fn insert(&mut self, e: Entity<'a>) {
        match e {
            Entity::Node(n) => self.nodes.insert(n),
            Entity::Source(s) => self.sources.insert(s),
            Entity::Pair(s, d) => self.pairs.insert((s, d)),
        };
    }
}

impl<'a>
    Marks<foldhash::HashMap<&'a str, Vec<usize>>, foldhash::HashMap<(&'a str, &'a str), Vec<usize>>>
{
    fn push(&mut self, e: Entity<'a>, finding: usize) {
        match e {
            Entity::Node(n) => self.nodes.entry(n).or_default().push(finding),
            Entity::Source(s) => self.sources.entry(s).or_default().push(finding),
            Entity::Pair(s, d) => self.pairs.entry((s, d)).or_default().push(finding),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default suite with only the black-hole signature.
    fn black_hole_only() -> Suite {
        Suite {
            anomaly: None,
            deploy: None,
            storm: None,
            segmentation: None,
            cross_zone: None,
            root_cause: None,
            ..Suite::default()
        }
    }

    /// The `k`-th window of 10 s from the epoch.
    fn w(k: i64) -> Window {
        Window {
            start_us: k * 10_000_000,
            end_us: (k + 1) * 10_000_000,
        }
    }

    fn pair(src: &str, dst: &str, requests: u64, errors: u64, bytes: (u64, u64)) -> PairWindow {
        PairWindow {
            schema_version: SCHEMA_VERSION,
            kind: "pair-window".into(),
            window: W,
            source: src.into(),
            destination: dst.into(),
            requests,
            rate_rps: requests as f64 / 10.0,
            errors,
            error_ratio: 0.0,
            latency: None,
            concurrency_mean: 0.0,
            concurrency_peak: 0,
            bytes_in: bytes.0,
            bytes_out: bytes.1,
            bandwidth_in_bps: 0.0,
            bandwidth_out_bps: 0.0,
            breakdown: Vec::new(),
            breakdown_overflow: 0,
        }
    }

    const W: Window = Window {
        start_us: 0,
        end_us: 10_000_000,
    };

    #[test]
    fn node_windows_sum_inflow_and_outflow_from_pairs() {
        let pairs = [
            pair("api", "cart", 10, 1, (100, 1_000)),
            pair("web", "cart", 5, 5, (50, 0)),
            pair("cart", "db", 30, 0, (3_000, 9_000)),
            // only a long request still in flight: not a caller in this window
            pair("batch", "cart", 0, 0, (0, 0)),
        ];
        let nodes = node_windows(W, &pairs);
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["api", "batch", "cart", "db", "web"]);
        let cart = &nodes[2];
        assert_eq!(cart.inflow_requests, 15); // 10 + 5 + 0
        assert_eq!(cart.inflow_bytes, 150);
        assert_eq!(cart.ok_responses, 9); // (10 - 1) + (5 - 5)
        assert_eq!(cart.outflow_bytes, 1_000);
        assert_eq!(cart.downstream_requests, 30);
        assert_eq!(cart.callers, 2);
        let api = &nodes[0];
        assert_eq!((api.inflow_requests, api.downstream_requests), (0, 10));
        let db = &nodes[3];
        assert_eq!(
            (db.inflow_requests, db.ok_responses, db.callers),
            (30, 30, 1)
        );
    }

    #[test]
    fn baselines_of_nodes_gone_for_long_are_forgotten() {
        let mut d = NodeDetector::new(black_hole_only());
        // "old" is seen in window 0 only; "steady" in every window; "once" has 9 requests, fewer
        // than a baseline starts with (20 × 0.5)
        d.detect(
            w(0),
            &[
                pair("a", "old", 20, 0, (0, 0)),
                pair("a", "once", 9, 0, (0, 0)),
            ],
        );
        assert!(d.black_hole().baseline("once").is_none());
        assert_eq!(
            d.last_seen.len(),
            1,
            "nodes without a baseline are not remembered"
        );
        for k in 1..=IDLE_WINDOWS {
            d.detect(w(k), &[pair("a", "steady", 20, 0, (0, 0))]);
        }
        // absent from windows 1..=59 when window 60 was judged: kept
        assert!(d.black_hole().baseline("old").is_some());
        d.detect(w(IDLE_WINDOWS + 1), &[pair("a", "steady", 20, 0, (0, 0))]);
        assert!(d.black_hole().baseline("old").is_none());
        assert!(d.black_hole().baseline("steady").is_some());
        // The caller "a" receives nothing, so it never had a baseline.
        assert_eq!(d.black_hole().nodes(), 1);
    }

    #[test]
    fn a_pause_of_the_whole_input_forgets_nothing() {
        let mut d = NodeDetector::new(black_hole_only());
        for k in 0..10 {
            d.detect(w(k), &[pair("a", "api", 20, 0, (0, 0))]);
        }
        // an hour without any record (360 windows), then traffic again
        d.detect(w(370), &[pair("a", "api", 20, 0, (0, 0))]);
        assert!(d.black_hole().baseline("api").is_some());
        // ...and an empty window judged meanwhile (every input idle) does not count either
        d.detect(w(400), &[]);
        d.detect(w(800), &[pair("a", "api", 20, 0, (0, 0))]);
        assert!(d.black_hole().baseline("api").is_some());
        // the window count survives a checkpoint: "api" gone from 60 windows with traffic
        let mut d = NodeDetector::restore(black_hole_only(), d.state()).unwrap();
        for k in 801..=860 {
            d.detect(w(k), &[pair("a", "other", 20, 0, (0, 0))]);
        }
        assert!(
            d.black_hole().baseline("api").is_some(),
            "absent from 59 windows: kept"
        );
        d.detect(w(861), &[pair("a", "other", 20, 0, (0, 0))]);
        assert!(d.black_hole().baseline("api").is_none());
    }

    #[test]
    fn healthy_windows_teach_the_nodes_baselines() {
        use crate::store::Signal;

        let mut d =
            NodeDetector::new(Suite::try_from(&crate::config::DetectConfig::default()).unwrap());
        let w = |k: i64| Window {
            start_us: 1_767_571_200_000_000 + k * 10_000_000,
            end_us: 1_767_571_200_000_000 + (k + 1) * 10_000_000,
        };
        for k in 0..20 {
            d.detect(
                w(k),
                &[
                    pair("web", "api", 100, 0, (0, 0)),
                    pair("api", "db", 200, 0, (0, 0)),
                ],
            );
        }
        // 100 requests in 10 s, each answered and making 2 calls
        let at = w(20).start_us;
        let store = d.baselines();
        assert_eq!(
            store.expected_node("api", Signal::InflowRps, at).unwrap().0,
            10.0
        );
        assert_eq!(
            store.expected_node("api", Signal::OkRatio, at).unwrap().0,
            1.0
        );
        assert_eq!(
            store
                .expected_node("api", Signal::DownstreamPerRequest, at)
                .unwrap()
                .0,
            2.0
        );
    }

    /// A raw finding's values are held back while its incident can open: learned once it
    /// can't (a lone spike is an excursion of a healthy pair), dropped if it opens (an
    /// incident's first window never teaches its baseline).
    #[test]
    fn a_lone_spike_teaches_late_and_an_incidents_first_window_never() {
        use crate::store::Signal;

        let w = |k: i64| Window {
            start_us: 1_767_571_200_000_000 + k * 10_000_000,
            end_us: 1_767_571_200_000_000 + (k + 1) * 10_000_000,
        };
        let learned = |d: &NodeDetector| {
            d.baselines()
                .pair("web", "api")
                .and_then(|b| b.get(Signal::RateRps))
                .map_or(0, |b| b.len())
        };
        let at = |k: i64, requests: u64| {
            [("web", "api"), ("api", "db")].map(|(src, dst)| PairWindow {
                window: w(k),
                ..pair(src, dst, requests, 0, (0, 0))
            })
        };
        // 10 req/s, then 100 req/s: a rate spike (debounce 2 of 3 windows), judged once the
        // pair's baseline is confident (60 windows)
        let healthy = |k| at(k, 100);
        let spike = |k| at(k, 1_000);
        let warmed = || {
            let mut d = NodeDetector::new(
                Suite::try_from(&crate::config::DetectConfig::default()).unwrap(),
            );
            for k in 0..70 {
                assert!(
                    d.detect(w(k), &healthy(k)).findings.is_empty(),
                    "window {k}"
                );
            }
            assert_eq!(learned(&d), 70);
            d
        };

        // a lone spike: raw only, held while 2 of 3 windows can still open its incident
        let mut d = warmed();
        assert!(d.detect(w(70), &spike(70)).findings.is_empty());
        assert_eq!(d.incidents().len(), 2, "raw findings on both pairs tracked");
        assert_eq!(learned(&d), 70);
        assert!(d.detect(w(71), &healthy(71)).findings.is_empty());
        assert_eq!(learned(&d), 71, "the healthy window is learned at once");
        assert!(d.detect(w(72), &healthy(72)).findings.is_empty());
        assert_eq!(
            learned(&d),
            73,
            "the spike can no longer open an incident: learned"
        );
        assert!(d.deferred.is_empty(), "{:?}", d.deferred);

        // two spikes in a row open the incident: a finding on web -> api; neither teaches
        let mut d = warmed();
        assert!(d.detect(w(70), &spike(70)).findings.is_empty());
        let f = d.detect(w(71), &spike(71)).findings;
        assert!(
            f.iter()
                .any(|f| f.signature == schemas::Signature::RateSpike
                    && f.subject
                        == Subject::Pair {
                            source: "web".into(),
                            destination: "api".into()
                        }),
            "{f:?}"
        );
        // open (until 3 quiet windows resolve it), it keeps the pair from learning even in
        // healthy windows
        for k in 72..74 {
            d.detect(w(k), &healthy(k));
        }
        assert_eq!(learned(&d), 70);
        d.detect(w(74), &healthy(74));
        assert_eq!(d.incidents().open(), 0, "resolved");
        assert_eq!(learned(&d), 71);
        assert!(d.deferred.is_empty(), "{:?}", d.deferred);
    }

    /// A node back after a pause of the whole input (no window at all in between) is judged
    /// against the normal it had before, unless the pause outlasted [`STALE_AFTER_US`] (the
    /// input resumed days later).
    #[test]
    fn a_node_back_after_a_day_long_gap_is_not_judged_by_its_old_baseline() {
        let healthy = [
            pair("web", "api", 100, 0, (0, 0)),
            pair("api", "db", 100, 0, (0, 0)),
        ];
        // api answers nothing and calls nothing: a black hole against its old normal
        let hung = [pair("web", "api", 100, 100, (0, 0))];
        let findings_after = |gap: i64| {
            let mut d = NodeDetector::new(black_hole_only());
            for k in 0..10 {
                assert!(d.detect(w(k), &healthy).findings.is_empty());
            }
            // windows 10 .. 10 + gap were never touched: the first window after is
            // 10 + gap, `gap` windows after api was last seen
            d.detect(w(10 + gap), &hung).findings
        };
        for gap in [IDLE_WINDOWS, 6 * 360, 24 * 360 - 1] {
            let within = findings_after(gap);
            assert_eq!(within.len(), 1, "{gap} windows later");
            assert_eq!(within[0].subject.key(), "node/api");
        }
        // last seen at the end of window 9; window 10 + gap starts a day after that
        assert!(findings_after(24 * 360).is_empty(), "a day later");
        assert!(findings_after(3 * 24 * 360).is_empty(), "three days later");
    }

    /// Being absent is not failing: a black hole lasting longer than [`IDLE_WINDOWS`] windows
    /// (no healthy window learned meanwhile) is still judged against the normal from before.
    #[test]
    fn a_long_black_hole_keeps_its_baseline() {
        let mut d = NodeDetector::new(black_hole_only());
        for k in 0..10 {
            d.detect(
                w(k),
                &[
                    pair("web", "api", 100, 0, (0, 0)),
                    pair("api", "db", 100, 0, (0, 0)),
                ],
            );
        }
        for k in 10..10 + 2 * IDLE_WINDOWS {
            let out = d.detect(w(k), &[pair("web", "api", 100, 100, (0, 0))]);
            assert_eq!(out.findings.len(), 1, "window {k}");
        }
    }

    #[test]
    fn detector_outcome_lists_every_node() {
        let mut d = NodeDetector::new(black_hole_only());
        let out = d.detect(W, &[pair("a", "b", 1, 0, (0, 0))]);
        assert_eq!(out.nodes.len(), 2);
        assert!(out.findings.is_empty());
        assert!(d.detect(W, &[]).nodes.is_empty());
    }
}
