//! Stage 2: merge the inputs' partial windows, compute pair and node windows, run the
//! detectors and actuation, and send what comes out to the [`Outputs`].
//!
//! A judge owns a set of nodes ([`Ownership`]): all of them in one process, or those whose
//! name hashes to its repartition partition when graywatch scales out. It judges only the nodes
//! it owns (their pairs all reach it: each pair's partial goes to its source's and its
//! destination's partition), writes the pair windows whose source it owns (so each pair window
//! is written once), and acts on its own findings.

use actuate::{Actuator, ActuatorState};
use detect::merge::{Mark, MergerCounters, MergerSnapshot, WindowMerger};
use detect::node::{NodeDetector, NodeDetectorState};
use detect::pair::{ClosedPairs, PairState, PartialWindow, WindowSpec};
use detect::suite::Suite;
use schemas::Window;
use serde::{Deserialize, Serialize};

use super::{InputId, Outputs, Removal, Stage, StageError, WindowTables};
use crate::rules::{RuleConfig, RuleError, Rules};

/// Which nodes a [`Judge`] owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ownership {
    /// Every node (one process runs both stages).
    All,
    /// The nodes whose name hashes to partition `index` of `count` (see [`partition_of`]).
    Partition {
        /// This judge's partition of the repartition topic.
        index: i32,
        /// The repartition topic's partition count.
        count: i32,
    },
}

impl Ownership {
    /// Whether `node` is this judge's.
    pub fn owns(&self, node: &str) -> bool {
        match *self {
            Ownership::All => true,
            Ownership::Partition { index, count } => partition_of(node.as_bytes(), count) == index,
        }
    }
}

/// The partition of `key` among `count` (> 0) partitions, as Kafka's default partitioner
/// computes it for a keyed record: `(murmur2(key) & 0x7fffffff) % count` (Java client's
/// `Utils.murmur2` and `Utils.toPositive`; librdkafka's `murmur2_random` partitioner), so other
/// Kafka tools agree on which partition holds a node.
pub fn partition_of(key: &[u8], count: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % count.max(1) as u32) as i32
}

/// MurmurHash2, 32-bit, seed `0x9747b28c`, as Kafka's clients compute it.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The tables of a window as `own` writes and judges it: pairs whose source it owns, its
/// nodes.
fn window_tables(view: &detect::signatures::WindowView<'_>, own: Ownership) -> WindowTables {
    let owned: Vec<_>;
    let pairs = if own == Ownership::All {
        view.pairs
    } else {
        owned = view
            .pairs
            .iter()
            .filter(|p| own.owns(&p.source))
            .cloned()
            .collect();
        &owned
    };
    WindowTables {
        window: view.window,
        pairs: detect::tables::pair_table(pairs, view.baselines),
        nodes: detect::tables::node_table(view.nodes, view.baselines),
        breakdown: detect::tables::breakdown_table(pairs),
    }
}

/// Fewest pair windows of a closed window written beside its judging (see
/// [`Outputs::writes_beside_judging`]): below, the thread's start costs more than it saves.
pub const BESIDE_PAIR_WINDOWS: usize = 4096;

/// Threads that finish a large closed window's pair states: 2 when the output writes beside
/// judging (the judging thread is then the one that holds a run back), else 1.
fn finish_threads<O: Outputs + ?Sized>(out: &O) -> usize {
    if out.writes_beside_judging() { 2 } else { 1 }
}

/// What stage 2 takes in.
#[derive(Debug)]
pub enum JudgeItem {
    /// A whole window of one input (in process).
    Partial(PartialWindow),
    /// One pair of one input's window (from the repartition topic).
    Pair {
        /// The window.
        window: Window,
        /// Calling service.
        source: String,
        /// Called service.
        destination: String,
        /// Its aggregates (boxed: a state is several times the size of the other items).
        state: Box<PairState>,
    },
    /// The input's progress.
    Mark(Mark),
}

/// Counters of stage 2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeCounters {
    /// Windows closed.
    pub windows: u64,
    /// Pair windows written.
    pub pair_windows: u64,
    /// Node windows written.
    pub node_windows: u64,
    /// Findings, by signature.
    pub findings: std::collections::BTreeMap<String, u64>,
    /// Remediation commands written.
    pub commands: u64,
    /// Alerts written.
    pub alerts: u64,
    /// The actuator's decisions about commands, by decision (`issued`, `suppressed`, …).
    #[serde(default)]
    pub decisions: std::collections::BTreeMap<String, u64>,
    /// User rules that failed on a window (each failure is logged).
    #[serde(default)]
    pub rule_errors: u64,
    /// Findings of user rules, by rule.
    #[serde(default)]
    pub rules: std::collections::BTreeMap<String, u64>,
}

/// The checkpointed state of a [`Judge`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgeState {
    /// The merger's open windows and producers.
    pub merger: MergerSnapshot,
    /// Baselines, detectors' state and incidents.
    pub nodes: NodeDetectorState,
    /// Commands in force and open incidents.
    pub actuator: ActuatorState,
    /// Counters so far.
    pub counters: JudgeCounters,
}

/// Stage 2 (see the [module docs](self)).
#[derive(Debug)]
pub struct Judge {
    merger: WindowMerger,
    nodes: NodeDetector,
    suite: Suite,
    rules: Option<Rules>,
    actuator: Actuator,
    ownership: Ownership,
    write_windows: bool,
    counters: JudgeCounters,
    /// Counters as of the last [`Judge::new_counts`] (or the restore).
    reported: (JudgeCounters, MergerCounters),
    /// End of the last window closed, µs (not checkpointed: after a restart, known again at
    /// the first window closed).
    last_closed_us: Option<i64>,
}

/// `now − before`, per key (saturating).
fn counts_since(
    now: &std::collections::BTreeMap<String, u64>,
    before: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    now.iter()
        .map(|(k, n)| {
            (
                k.clone(),
                n.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

impl JudgeCounters {
    /// `self − before`, per counter (saturating).
    fn since(&self, before: &JudgeCounters) -> JudgeCounters {
        JudgeCounters {
            windows: self.windows.saturating_sub(before.windows),
            pair_windows: self.pair_windows.saturating_sub(before.pair_windows),
            node_windows: self.node_windows.saturating_sub(before.node_windows),
            findings: counts_since(&self.findings, &before.findings),
            commands: self.commands.saturating_sub(before.commands),
            alerts: self.alerts.saturating_sub(before.alerts),
            decisions: counts_since(&self.decisions, &before.decisions),
            rule_errors: self.rule_errors.saturating_sub(before.rule_errors),
            rules: counts_since(&self.rules, &before.rules),
        }
    }
}

impl Judge {
    /// Adds deployments learned while running (a deployments topic) to the deploy history it
    /// judges with, from the next window it closes; kept across [`Stage::restore`]. Returns
    /// how many were new.
    pub fn add_deployments(
        &mut self,
        events: &[detect::signatures::deploy::DeploymentEvent],
    ) -> usize {
        self.suite.add_deployments(events);
        self.nodes.add_deployments(events)
    }

    /// A judge of windows of `spec`, with the validated detectors and actuator, owning
    /// `ownership`'s nodes. `write_windows`: whether pair and node windows go to the outputs.
    pub fn new(
        spec: WindowSpec,
        suite: Suite,
        actuator: Actuator,
        ownership: Ownership,
        write_windows: bool,
    ) -> Self {
        Judge {
            merger: WindowMerger::new(spec),
            nodes: NodeDetector::new(suite.clone()),
            suite,
            rules: None,
            actuator,
            ownership,
            write_windows,
            counters: JudgeCounters::default(),
            reported: Default::default(),
            last_closed_us: None,
        }
    }

    /// The judge with user rules (`[[rules]]`), run over each closed window after the
    /// signatures (see [`crate::rules`]).
    ///
    /// # Errors
    /// A rule that can't be planned.
    pub fn with_rules(mut self, rules: &[RuleConfig]) -> Result<Self, RuleError> {
        self.rules = if rules.is_empty() {
            None
        } else {
            Some(Rules::new(rules)?)
        };
        Ok(self)
    }

    /// What was counted since the last call (or since the judge was made or restored: counts
    /// restored from another instance's state are not counted again), for metrics.
    pub fn new_counts(&mut self) -> (JudgeCounters, MergerCounters) {
        let m = *self.merger.counters();
        let new = (
            self.counters.since(&self.reported.0),
            MergerCounters {
                windows_closed: m
                    .windows_closed
                    .saturating_sub(self.reported.1.windows_closed),
                duplicate_partials: m
                    .duplicate_partials
                    .saturating_sub(self.reported.1.duplicate_partials),
                late_partials: m
                    .late_partials
                    .saturating_sub(self.reported.1.late_partials),
                overflow_partials: m
                    .overflow_partials
                    .saturating_sub(self.reported.1.overflow_partials),
            },
        );
        self.reported = (self.counters.clone(), m);
        new
    }

    /// Counters so far.
    pub fn counters(&self) -> &JudgeCounters {
        &self.counters
    }

    /// The merger's counters (duplicate and late partials).
    pub fn merger_counters(&self) -> &MergerCounters {
        self.merger.counters()
    }

    /// The merged watermark, µs since the epoch (see `WindowMerger::watermark`).
    pub fn watermark(&self) -> Option<i64> {
        self.merger.watermark()
    }

    /// Windows and pair-windows held.
    pub fn open_state(&self) -> (usize, usize) {
        (self.merger.open_windows(), self.merger.open_pairs())
    }

    /// Nodes with a baseline.
    pub fn baselines(&self) -> usize {
        self.nodes.black_hole().nodes()
    }

    /// Whether every input it waits for is idle (at least one): no window closes until a
    /// record comes, so a driver moves event time on with [`Judge::advance`].
    pub fn all_idle(&self) -> bool {
        let mut any = false;
        self.merger.producers().all(|(_, m)| {
            any = true;
            m.idle
        }) && any
    }

    /// End of the last window closed, µs since the epoch (`None` before the first since the
    /// judge was made or restored).
    pub fn last_closed_us(&self) -> Option<i64> {
        self.last_closed_us
    }

    /// Declares an input whose marks the merged watermark waits for.
    pub fn expect_input(&mut self, input: &InputId) {
        self.merger.add_producer(input.as_str());
    }

    /// The inputs it has heard of or expects (idle or not), by name.
    pub fn inputs(&self) -> impl Iterator<Item = &str> {
        self.merger.producers().map(|(name, _)| name)
    }

    /// Closes what the merged watermark allows and sends it on.
    fn close<O: Outputs + ?Sized>(&mut self, out: &mut O) -> Result<(), StageError<O::Error>> {
        self.merger.set_finish_threads(finish_threads(out));
        for closed in self.merger.close_ready() {
            self.emit(closed, out).map_err(StageError::Output)?;
        }
        Ok(())
    }

    /// End of every input: closes every open window.
    ///
    /// # Errors
    /// The output's.
    pub fn flush<O: Outputs + ?Sized>(&mut self, out: &mut O) -> Result<(), StageError<O::Error>> {
        self.merger.set_finish_threads(finish_threads(out));
        for closed in self.merger.flush() {
            self.emit(closed, out).map_err(StageError::Output)?;
        }
        Ok(())
    }

    fn emit<O: Outputs + ?Sized>(
        &mut self,
        closed: ClosedPairs,
        out: &mut O,
    ) -> Result<(), O::Error> {
        let window = closed.window;
        self.last_closed_us = Some(
            self.last_closed_us
                .map_or(window.end_us, |e| e.max(window.end_us)),
        );
        let own = self.ownership;
        let want_tables = out.wants_tables();
        let owned: Vec<&schemas::PairWindow> = if self.write_windows {
            closed
                .pairs
                .iter()
                .filter(|p| own.owns(&p.source))
                .collect()
        } else {
            Vec::new()
        };
        let (nodes, rules) = (&mut self.nodes, &mut self.rules);
        let mut judge = || {
            let mut failed = Vec::new();
            let mut tables = None;
            let outcome = nodes.detect_with(
                window,
                &closed.pairs,
                |n| own.owns(n),
                |view, raw| {
                    if let Some(r) = rules {
                        failed = r.judge(view, raw);
                    }
                    if want_tables {
                        tables = Some(window_tables(view, own));
                    }
                },
            );
            (outcome, failed, tables)
        };
        let ((outcome, failed, tables), written) =
            if owned.len() >= BESIDE_PAIR_WINDOWS && out.writes_beside_judging() {
                // the window is judged on a thread of its own while its pair windows are
                // written here: the outputs see the same calls in the same order
                std::thread::scope(|scope| {
                    // named, for profilers and `top -H`; failing to start a thread panics,
                    // as `scope.spawn` does
                    let judging = std::thread::Builder::new()
                        .name("detect".into())
                        .spawn_scoped(scope, judge)
                        .expect("the OS starts a thread");
                    let written = out.pair_windows(&owned);
                    match judging.join() {
                        Ok(judged) => (judged, written),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                })
            } else {
                let judged = judge();
                let written = if self.write_windows {
                    out.pair_windows(&owned)
                } else {
                    Ok(())
                };
                (judged, written)
            };
        written?;
        for e in &failed {
            tracing::warn!("{e}");
        }
        self.counters.rule_errors += failed.len() as u64;
        self.counters.windows += 1;
        if self.write_windows {
            self.counters.pair_windows += owned.len() as u64;
            for n in &outcome.nodes {
                out.node_window(n)?;
                self.counters.node_windows += 1;
            }
        }
        if let Some(t) = &tables {
            out.window_tables(t)?;
        }
        for f in &outcome.findings {
            out.finding(f)?;
            *self
                .counters
                .findings
                .entry(f.signature.as_str().to_owned())
                .or_default() += 1;
            if let Some(rule) = &f.rule {
                *self.counters.rules.entry(rule.clone()).or_default() += 1;
            }
        }
        let actions = self
            .actuator
            .on_window(window, &outcome.findings, &closed.pairs);
        self.send(&actions, out)?;
        out.window_closed(window)
    }

    fn send<O: Outputs + ?Sized>(
        &mut self,
        actions: &actuate::Actions,
        out: &mut O,
    ) -> Result<(), O::Error> {
        for a in &actions.audit {
            out.audit(a)?;
            *self
                .counters
                .decisions
                .entry(a.decision.as_str().to_owned())
                .or_default() += 1;
        }
        for c in &actions.commands {
            out.command(c)?;
            self.counters.commands += 1;
        }
        for a in &actions.alerts {
            out.alert(a)?;
            self.counters.alerts += 1;
        }
        Ok(())
    }

    /// Event time goes on without a window to close (every input idle): commands whose expiry
    /// has come expire (audited). `now_us`: the driver's estimate of event time, µs.
    ///
    /// # Errors
    /// The output's.
    pub fn advance<O: Outputs + ?Sized>(
        &mut self,
        now_us: i64,
        out: &mut O,
    ) -> Result<(), O::Error> {
        let actions = self.actuator.advance(now_us);
        if actions.is_empty() {
            return Ok(());
        }
        self.send(&actions, out)?;
        out.flush()
    }

    /// The triggers of the incidents open here ([`actuate::AlertState::firing`]).
    pub fn firing(&self) -> Vec<schemas::Alert> {
        self.actuator.state().alerts.firing()
    }

    /// An operator approves the proposed command `id` (at `revision`, when given) at event
    /// time `now_us`: it goes out again in enforce mode.
    ///
    /// # Errors
    /// [`actuate::ApproveError`] when there is no such proposed command (or it is proposed
    /// at another revision); the output's.
    pub fn approve<O: Outputs + ?Sized>(
        &mut self,
        id: &str,
        revision: Option<u32>,
        now_us: i64,
        out: &mut O,
    ) -> Result<Result<(), actuate::ApproveError>, O::Error> {
        match self.actuator.approve(id, revision, now_us) {
            Ok(actions) => {
                self.send(&actions, out)?;
                out.flush()?;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

impl<O: Outputs + ?Sized> Stage<O> for Judge {
    type Item<'a> = JudgeItem;
    type Error = StageError<O::Error>;
    type InputState = ();
    type State = JudgeState;

    fn add_input(&mut self, input: &InputId, _state: Option<()>) -> Result<(), Self::Error> {
        self.expect_input(input);
        Ok(())
    }

    fn process(
        &mut self,
        input: &InputId,
        item: JudgeItem,
        out: &mut O,
    ) -> Result<(), Self::Error> {
        let from = input.as_str();
        match item {
            JudgeItem::Partial(p) => {
                self.merger.complete(from, p);
            }
            JudgeItem::Pair {
                window,
                source,
                destination,
                state,
            } => {
                self.merger
                    .partial(from, window, &source, &destination, *state);
            }
            JudgeItem::Mark(mark) => {
                self.merger.mark(from, mark);
                self.close(out)?;
            }
        }
        Ok(())
    }

    fn input_idle(&mut self, input: &InputId, out: &mut O) -> Result<(), Self::Error> {
        let watermark_us = self
            .merger
            .producers()
            .find(|(p, _)| *p == input.as_str())
            .and_then(|(_, m)| m.watermark_us);
        self.merger.mark(
            input.as_str(),
            Mark {
                watermark_us,
                idle: true,
            },
        );
        self.close(out)
    }

    /// The input stops holding the merged watermark back, but its watermark is kept: if it
    /// comes back (a partition revoked and assigned again, read again from an older offset),
    /// what it sends again for windows it had handed over is refused as a duplicate.
    fn remove_input(
        &mut self,
        input: &InputId,
        _why: Removal,
        out: &mut O,
    ) -> Result<(), Self::Error> {
        self.input_idle(input, out)
    }

    fn snapshot_input(&self, _input: &InputId) -> Option<()> {
        None
    }

    fn snapshot(&self) -> JudgeState {
        JudgeState {
            merger: self.merger.snapshot(),
            nodes: self.nodes.state(),
            actuator: self.actuator.state(),
            counters: self.counters.clone(),
        }
    }

    fn restore(&mut self, state: JudgeState) -> Result<(), Self::Error> {
        self.merger =
            WindowMerger::restore(*self.merger.spec(), state.merger).map_err(|source| {
                StageError::State {
                    what: "stage 2 (window merger)".into(),
                    source,
                }
            })?;
        self.nodes = NodeDetector::restore(self.suite.clone(), state.nodes).map_err(|e| {
            StageError::State {
                what: "stage 2 (detectors)".into(),
                source: detect::Error::State(e),
            }
        })?;
        self.actuator.restore(state.actuator);
        self.counters = state.counters;
        self.reported = (self.counters.clone(), *self.merger.counters());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2 (Java client), as unsigned 32-bit.
        let cases: [(&[u8], i32); 7] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
            (b"", 275646681),
        ];
        for (key, java) in cases {
            assert_eq!(
                murmur2(key),
                java as u32,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        // "foobar": (-790332482 & 0x7fffffff) % 12 = 1357151166 % 12 = 6
        assert_eq!(partition_of(b"foobar", 12), 6);
    }

    #[test]
    fn ownership_splits_nodes_without_overlap() {
        let names: Vec<String> = (0..200).map(|i| format!("svc-{i}")).collect();
        for n in &names {
            let owners = (0..4)
                .filter(|&i| Ownership::Partition { index: i, count: 4 }.owns(n))
                .count();
            assert_eq!(owners, 1, "{n}");
        }
        assert!(Ownership::All.owns("anything"));
    }
}
