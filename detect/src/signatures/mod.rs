//! Gray-failure signatures, each one file behind one contract, [`SignatureDetector`].
//!
//! Stage 2 closes a window, computes its node windows, then calls every enabled detector once
//! with a [`WindowView`] of the whole window: its pairs (golden signals and zone/version
//! breakdowns), its nodes with their callers, and the shared [`BaselineStore`] (every pair's
//! and node's adaptive baselines, see [`crate::store`]). A detector returns raw findings for
//! the window; the engine ([`crate::node::NodeDetector`]) then
//!
//! 1. keeps a finding only once its incident (signature, subject key) fired in `open-after`
//!    of the last `of-windows` windows, and closes the incident after `resolve-after` windows
//!    without one (so a finding does not flap; [`crate::incident`]);
//! 2. teaches the baseline store with the window's pairs and nodes that no raw finding
//!    touched (only healthy windows teach a baseline).
//!
//! A detector's [`Scope`] says what it needs to see: a pair, a node (all of its inflow and
//! outflow), or the landscape (the whole window: storms, root-cause walks). When graywatch
//! scales out, stage 2 is split by node, so a landscape detector sees the pairs of the nodes
//! its instance owns; its findings are kept by the instance that owns the subject's anchor
//! node ([`anchor`]).
//!
//! Detectors are synchronous, read no clock and do no I/O: time comes from the windows. Their
//! state is plain data, saved with the checkpoint through [`SignatureDetector::save`].
//!
//! Adding a signature: a file here implementing [`SignatureDetector`], a config section in
//! [`crate::config`], and one line in [`crate::suite::Suite::detectors`].

pub mod black_hole;
pub mod cross_zone;
pub mod deploy;
pub mod generic;
pub mod root_cause;
pub mod segmentation;
pub mod storm;

use schemas::{
    Confidence, Evidence, Finding, NodeWindow, PairWindow, Related, SCHEMA_VERSION, Severity,
    Signature, Subject, Window,
};

pub use black_hole::{BlackHole, BlackHoleSpec};

use crate::adaptive::Score;
use crate::incident::Incidents;
use crate::node::CallerWindow;
use crate::store::{BaselineStore, Baselines, Signal};

/// What a detector needs to see of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One pair at a time.
    Pair,
    /// One node with all its inflow and outflow.
    Node,
    /// The whole window: every pair and node.
    Landscape,
}

/// One closed window as detectors see it: build it with [`WindowView::new`].
#[derive(Debug, Clone)]
pub struct WindowView<'a> {
    /// The window.
    pub window: Window,
    /// Its pairs, sorted by (source, destination).
    pub pairs: &'a [PairWindow],
    /// Its nodes, sorted by node (pseudo-nodes `(unrouted)` and `(other)` left out).
    pub nodes: &'a [NodeWindow],
    /// Each node's callers in the window (same order as `nodes`), sorted by service.
    pub callers: &'a [Vec<CallerWindow<'a>>],
    /// Baselines of every pair and node, as of the windows before this one.
    pub baselines: &'a BaselineStore,
    /// Incidents as of the windows before this one (which are open).
    pub incidents: &'a Incidents,
    /// The baselines of each of `pairs` (same order), looked up once for every detector: at
    /// 100 k pairs a window's lookups by name cost more than judging them.
    pair_baselines: Vec<Option<&'a Baselines>>,
}

impl<'a> WindowView<'a> {
    /// The view of `window`, its pairs sorted by (source, destination), its nodes sorted by
    /// node with their `callers`, against `baselines` and `incidents` as of the windows before.
    pub fn new(
        window: Window,
        pairs: &'a [PairWindow],
        nodes: &'a [NodeWindow],
        callers: &'a [Vec<CallerWindow<'a>>],
        baselines: &'a BaselineStore,
        incidents: &'a Incidents,
    ) -> Self {
        WindowView {
            window,
            pairs,
            nodes,
            callers,
            baselines,
            incidents,
            pair_baselines: pairs
                .iter()
                .map(|p| baselines.pair(&p.source, &p.destination))
                .collect(),
        }
    }

    /// Each pair with its baselines, in the order of `pairs`.
    pub fn pairs_with_baselines(
        &self,
    ) -> impl Iterator<Item = (&'a PairWindow, Option<&'a Baselines>)> + '_ {
        self.pairs.iter().zip(self.pair_baselines.iter().copied())
    }

    /// The pairs whose source is `node` (a contiguous run: pairs are sorted by source).
    pub fn outflow(&self, node: &str) -> &'a [PairWindow] {
        let from = self.pairs.partition_point(|p| p.source.as_str() < node);
        let to = from + self.pairs[from..].partition_point(|p| p.source == node);
        &self.pairs[from..to]
    }

    /// The pairs whose destination is `node`.
    pub fn inflow<'n>(&self, node: &'n str) -> impl Iterator<Item = &'a PairWindow> + use<'a, 'n> {
        self.pairs.iter().filter(move |p| p.destination == node)
    }

    /// The node window of `node`, with its callers.
    pub fn node(&self, node: &str) -> Option<(&'a NodeWindow, &'a [CallerWindow<'a>])> {
        let i = self
            .nodes
            .binary_search_by(|n| n.node.as_str().cmp(node))
            .ok()?;
        Some((&self.nodes[i], &self.callers[i]))
    }
}

/// A gray-failure detector (see the [module docs](self)).
pub trait SignatureDetector: std::fmt::Debug + Send {
    /// The name of its config section and of its state in checkpoints, e.g. `cross-zone`.
    fn name(&self) -> &'static str;

    /// What it needs to see.
    fn scope(&self) -> Scope;

    /// Judges one closed window (windows come in window order), pushing raw findings to
    /// `out`. Findings' ids must be deterministic: [`finding`] builds them.
    fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>);

    /// Deployments learned while running (`run` reading a deployments topic), to add to the
    /// deploy history it was built with; a detector that uses none ignores them.
    fn add_deployments(&mut self, _events: &[deploy::DeploymentEvent]) {}

    /// Forgets what it keeps about subjects last seen before `before_us` (µs since the
    /// epoch): called as event time passes, so state stays bounded when names churn.
    fn forget_before(&mut self, before_us: i64) {
        let _ = before_us;
    }

    /// Its state, as MessagePack (empty for a stateless detector).
    fn save(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Restores a state saved by [`SignatureDetector::save`].
    ///
    /// # Errors
    /// A message saying what does not decode.
    fn load(&mut self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Ok(())
    }
}

/// Encodes a detector's state (for [`SignatureDetector::save`]).
pub(crate) fn save_state<T: serde::Serialize>(state: &T) -> Vec<u8> {
    // by name: see the checkpoint's encoding (a skipped optional field shifts the next one)
    rmp_serde::to_vec_named(state).expect("plain data encodes")
}

/// Decodes a detector's state (for [`SignatureDetector::load`]).
pub(crate) fn load_state<T: serde::de::DeserializeOwned>(state: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(state).map_err(|e| e.to_string())
}

/// The node whose stage-2 owner keeps a finding on `subject` when graywatch scales out: the
/// node, the pair's or zone pair's source, the version's service, the sources' destination,
/// the landscape's first related candidate (else `None`: kept everywhere).
pub fn anchor<'f>(subject: &'f Subject, related: &'f [Related]) -> Option<&'f str> {
    match subject {
        Subject::Node { node } => Some(node),
        Subject::Pair { source, .. } | Subject::ZonePair { source, .. } => Some(source),
        Subject::Version { service, .. } => Some(service),
        Subject::Sources { destination, .. } => Some(destination),
        Subject::Landscape => related
            .iter()
            .find(|r| r.role == "candidate")
            .map(|r| r.name.as_str()),
    }
}

/// A finding with its deterministic id `<signature>/<subject key>/<window start µs>`.
#[allow(clippy::too_many_arguments)]
pub fn finding(
    signature: Signature,
    subject: Subject,
    window: Window,
    severity: Severity,
    evidence: Vec<Evidence>,
    related: Vec<Related>,
    confidence: Confidence,
    summary: String,
) -> Finding {
    debug_assert!(
        signature.subject_kinds().contains(&subject.kind()),
        "{signature} findings are about {:?}, not {}",
        signature.subject_kinds(),
        subject.kind()
    );
    let score = evidence
        .iter()
        .filter_map(|e| e.tail_probability)
        .fold(None::<f64>, |m, p| Some(m.map_or(p, |m| m.min(p))))
        .map_or(0.0, |p| (1.0 - p).clamp(0.0, 1.0));
    Finding {
        schema_version: SCHEMA_VERSION,
        kind: "finding".into(),
        id: format!(
            "{}/{}/{}",
            signature.as_str(),
            subject.key(),
            window.start_us
        ),
        signature,
        subject,
        window,
        severity,
        evidence,
        callers: Vec::new(),
        summary,
        score,
        confidence,
        related,
        rule: None,
    }
}

/// Evidence of a signal scored against its baseline: the value, the expected value, the
/// tail probability in the direction that makes the signature (`high`: a rise).
pub fn scored(signal: Signal, value: f64, score: &Score, high: bool) -> Evidence {
    Evidence {
        signal: signal.name().into(),
        value,
        baseline: score.expected,
        unit: signal.unit().into(),
        tail_probability: Some(if high { score.p_high } else { score.p_low }),
    }
}

/// Evidence of a count or a rate against what is normal, with no tail probability.
pub fn counted(signal: &str, value: f64, baseline: f64, unit: &str) -> Evidence {
    Evidence {
        signal: signal.into(),
        value,
        baseline,
        unit: unit.into(),
        tail_probability: None,
    }
}

/// A related entity.
pub fn related(role: &str, name: &str, score: Option<f64>, detail: String) -> Related {
    Related {
        role: role.into(),
        name: name.into(),
        score,
        detail,
    }
}

/// [`Confidence::Low`] unless every score behind a finding is confident.
pub fn confidence<'s>(scores: impl IntoIterator<Item = &'s Score>) -> Confidence {
    if scores.into_iter().all(|s| s.confident) {
        Confidence::Normal
    } else {
        Confidence::Low
    }
}

/// A service-name pattern of the policy sections: `name` (exact), `prefix*`, `*suffix`,
/// `*infix*` or `*` (every name).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NamePattern {
    text: String,
}

impl TryFrom<String> for NamePattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let inner = text.trim_start_matches('*').trim_end_matches('*');
        if text.is_empty() || inner.contains('*') {
            return Err(format!(
                "{text:?} is not a name pattern (name, prefix*, *suffix, *infix* or *)"
            ));
        }
        Ok(NamePattern { text })
    }
}

impl From<NamePattern> for String {
    fn from(p: NamePattern) -> String {
        p.text
    }
}

impl NamePattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let t = self.text.as_str();
        let (star_start, star_end) = (t.starts_with('*'), t.len() > 1 && t.ends_with('*'));
        let inner = t.trim_start_matches('*').trim_end_matches('*');
        match (star_start, star_end) {
            _ if t == "*" => true,
            (true, true) => name.contains(inner),
            (true, false) => name.ends_with(inner),
            (false, true) => name.starts_with(inner),
            (false, false) => name == t,
        }
    }
}

/// Judges `pairs` (one window's, sorted by source) with `detector`, with no nodes, callers,
/// baselines or incidents: for detectors that need only the pairs.
#[cfg(test)]
pub(crate) fn judge_pairs(
    detector: &mut dyn SignatureDetector,
    pairs: &[PairWindow],
) -> Vec<Finding> {
    let mut out = Vec::new();
    detector.judge(
        &WindowView::new(
            pairs[0].window,
            pairs,
            &[],
            &[],
            &crate::store::BaselineStore::default(),
            &crate::incident::Incidents::default(),
        ),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_patterns_match_as_documented() {
        let p = |s: &str| NamePattern::try_from(s.to_owned()).unwrap();
        assert!(p("room1-*").matches("room1-relay-0"));
        assert!(!p("room1-*").matches("room10-relay-0"));
        assert!(p("*-db").matches("orders-db"));
        assert!(!p("*-db").matches("orders-dbx"));
        assert!(p("*cache*").matches("a-cache-b"));
        assert!(p("*").matches("anything"));
        assert!(p("checkout").matches("checkout"));
        assert!(!p("checkout").matches("checkout-v2"));
        assert!(NamePattern::try_from("a*b".to_owned()).is_err());
        assert!(NamePattern::try_from(String::new()).is_err());
    }
}
