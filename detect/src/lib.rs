//! graywatch's detection stage: event-time windows, golden signals per pair and per node,
//! baselines and gray-failure signatures.
//!
//! ```text
//!  ingest ──[flow-record RecordBatch of one input]──▶ pair::PairAggregator   (one per input:
//!                                          │            file, Kafka partition; its own watermark)
//!                                          │  per (window, source, destination): counts, sums,
//!                                          │  latency (HDR), concurrency slots
//!                                          ▼
//!                 PartialWindow (mergeable; serializable as pair::PairStateData)
//!                                          │  in process, or republished keyed by node
//!                      merge::WindowMerger ▼  adds up the inputs' partials; closes a window
//!                                          │  when every busy input's watermark passed it
//!                        ClosedPairs { window, Vec<PairWindow> }   (golden signals)
//!                                          │
//!                      node::NodeDetector  ▼  NodeWindows + signatures vs. baselines
//!                                   ClosedWindow { window, pairs, nodes, findings } ──▶ actuate
//! ```
//!
//! Main types: [`pair::PairAggregator`] (stage 1, per input), [`merge::WindowMerger`] and
//! [`node::NodeDetector`] (stage 2), [`Detector`] (all of it for one input, built from a
//! [`DetectConfig`]), [`ClosedWindow`] (what comes out), [`signatures::BlackHole`],
//! [`is_error`]. Window, watermark and golden-signal semantics are in [`pair`]; merging in
//! [`merge`]; node signals in [`node`]; the black-hole rule in [`signatures::black_hole`].
//!
//! Detection is synchronous, does no I/O and reads no clock: time comes only from the records'
//! event times, so a replay gives the same windows and findings.
//!
//! ```
//! use detect::{DetectConfig, Detector};
//! use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};
//! let mut detector = Detector::try_from(DetectConfig::default())?;
//! let mut b = FlowBatchBuilder::new();
//! for i in 0..4 {
//!     // frontend -> catalog every 2.5 s from t = 0, each taking 4 ms
//!     let mut r = FlowRecordRef::new(i * 2_500_000, "frontend", "catalog", Reporter::Envoy);
//!     r.duration_us = Some(4_000);
//!     r.status = Some(200);
//!     b.append(&r);
//! }
//! assert!(detector.push(&b.finish())?.is_empty()); // watermark 7.5 s − 15 s: window 0 still open
//! let closed = detector.flush();
//! assert_eq!(closed.len(), 1);
//! let pair = &closed[0].pairs[0];
//! assert_eq!((pair.requests, pair.rate_rps), (4, 0.4)); // 4 requests in 10 s
//! assert_eq!(closed[0].nodes.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod adaptive;
pub mod baseline;
pub mod config;
pub mod error;
pub mod flags;
pub mod incident;
mod intern;
pub mod merge;
pub mod node;
pub mod pair;
pub mod signatures;
pub mod store;
pub mod suite;
pub mod tables;

use arrow::array::RecordBatch;
use schemas::{Finding, NodeWindow, PairWindow, Window};
use serde::{Deserialize, Serialize};

pub use config::{BlackHoleConfig, DetectConfig, WindowConfig};
pub use error::{Error, Result};
pub use flags::{ABANDON_WAIT_US, Blame, blame, is_error};

use crate::merge::{Mark, WindowMerger};
use crate::node::NodeDetector;
use crate::pair::{ClosedPairs, PairAggregator, WindowSpec};
use crate::suite::Suite;

/// Everything detection says about one closed window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedWindow {
    /// The window.
    pub window: Window,
    /// Golden signals per pair, sorted by (source, destination).
    pub pairs: Vec<PairWindow>,
    /// Inflow/outflow per node, sorted by node.
    pub nodes: Vec<NodeWindow>,
    /// Signatures that fired in this window.
    pub findings: Vec<Finding>,
}

/// Counters of a [`Detector`] since it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectStats {
    /// Flow records read, late ones included.
    pub records: u64,
    /// Records that arrived after the watermark had passed their window: counted here, not
    /// aggregated.
    pub late_records: u64,
    /// Windows closed and returned.
    pub windows_closed: u64,
    /// Findings returned.
    pub findings: u64,
    /// Most windows open at once.
    pub max_open_windows: u64,
    /// Records whose time in flight spanned more than [`pair::MAX_SPAN_WINDOWS`] windows and
    /// was cut there (they still count in full in their start window's rate, errors, latency).
    pub clamped_records: u64,
    /// Records that started after the bound given to [`Detector::set_not_after`]: counted
    /// here, not aggregated.
    pub future_records: u64,
}

/// All of detection for one input: pair aggregation, then node-level detection, built from a
/// validated [`DetectConfig`] with [`Detector::try_from`]. (Several inputs, each with its own
/// watermark, are the runtime's to wire: one [`PairAggregator`] per input into a
/// [`WindowMerger`], then a [`NodeDetector`].)
#[derive(Debug)]
pub struct Detector {
    pairs: PairAggregator,
    merger: WindowMerger,
    nodes: NodeDetector,
    stats: DetectStats,
}

/// The producer name a [`Detector`] gives its one input in its merger.
const ONE_INPUT: &str = "input";

impl TryFrom<DetectConfig> for Detector {
    type Error = Error;

    /// # Errors
    /// [`Error::Config`] naming the key: a window length that is zero or not whole µs, a
    /// concurrency resolution that does not divide the length (or makes more than
    /// [`pair::MAX_CONCURRENCY_SLOTS`] slots), baseline window counts out of range, ratios
    /// outside (0, 1].
    fn try_from(config: DetectConfig) -> Result<Self> {
        let spec = WindowSpec::try_from(&config.window)?;
        let suite = Suite::try_from(&config)?;
        let mut merger = WindowMerger::new(spec);
        merger.add_producer(ONE_INPUT);
        Ok(Detector {
            pairs: PairAggregator::new(spec),
            merger,
            nodes: NodeDetector::new(suite),
            stats: DetectStats::default(),
        })
    }
}

impl Detector {
    /// Aggregates a flow-record batch, advances the watermark record by record, and returns
    /// the windows that closed, in window order, each with its nodes and findings.
    ///
    /// # Errors
    /// [`Error::Schema`] when the batch is not a flow-record batch; nothing of it is
    /// aggregated and the detector can go on with the next batch.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Vec<ClosedWindow>> {
        let partials = self.pairs.push(batch)?;
        Ok(self.hand_over(partials))
    }

    /// End of input: closes every open window, in window order.
    pub fn flush(&mut self) -> Vec<ClosedWindow> {
        let partials = self.pairs.flush();
        self.hand_over(partials)
    }

    /// Records starting after `not_after_us` (µs since the epoch) are not aggregated but
    /// counted in [`DetectStats::future_records`] and listed by [`Detector::dropped_rows`]:
    /// a clock far ahead must not move the watermark past everything else. The caller passes
    /// the bound in; detection reads no clock.
    pub fn set_not_after(&mut self, not_after_us: i64) {
        self.pairs.set_not_after(not_after_us);
    }

    /// Rows of the batch last given to [`Detector::push`] that were not aggregated (late, or
    /// beyond [`Detector::set_not_after`]), in row order, so the caller can report them.
    pub fn dropped_rows(&self) -> &[(u32, pair::Dropped)] {
        self.pairs.dropped_rows()
    }

    /// Counters so far.
    pub fn stats(&self) -> &DetectStats {
        &self.stats
    }

    /// Current watermark, µs since the epoch (`None` before the first record).
    pub fn watermark(&self) -> Option<i64> {
        self.pairs.watermark()
    }

    fn hand_over(&mut self, partials: Vec<pair::PartialWindow>) -> Vec<ClosedWindow> {
        for p in partials {
            self.merger.complete(ONE_INPUT, p);
        }
        self.merger.mark(
            ONE_INPUT,
            Mark {
                watermark_us: self.pairs.watermark(),
                idle: false,
            },
        );
        let closed = self.merger.close_ready();
        let out: Vec<ClosedWindow> = closed
            .into_iter()
            .map(|c| judge(&mut self.nodes, c))
            .collect();
        let c = self.pairs.counters();
        let s = &mut self.stats;
        s.records = c.records;
        s.late_records = c.late_records;
        s.clamped_records = c.clamped_records;
        s.future_records = c.future_records;
        s.max_open_windows = c.max_open_windows;
        s.windows_closed += out.len() as u64;
        s.findings += out.iter().map(|w| w.findings.len() as u64).sum::<u64>();
        out
    }
}

/// Node-level detection of one closed window's pairs: its node windows and findings.
pub fn judge(nodes: &mut NodeDetector, closed: ClosedPairs) -> ClosedWindow {
    let outcome = nodes.detect(closed.window, &closed.pairs);
    ClosedWindow {
        window: closed.window,
        pairs: closed.pairs,
        nodes: outcome.nodes,
        findings: outcome.findings,
    }
}

#[cfg(test)]
mod tests {
    use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};

    use super::*;

    #[test]
    fn invalid_config_names_the_key() {
        let mut c = DetectConfig::default();
        c.window.length = std::time::Duration::ZERO;
        let e = Detector::try_from(c).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid config window.length: 0ns is shorter than 1s"),
            "{e}"
        );
        let mut c = DetectConfig::default();
        c.black_hole.inflow_ratio = 1.5;
        let e = Detector::try_from(c).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid config black-hole.inflow-ratio: 1.5 is not a ratio in (0, 1]"
        );
    }

    #[test]
    fn invalid_signature_sections_name_the_key() {
        let bad = |f: fn(&mut DetectConfig)| {
            let mut c = DetectConfig::default();
            f(&mut c);
            Detector::try_from(c).unwrap_err().to_string()
        };
        assert_eq!(
            bad(|c| c.cross_zone.allowed_share = 1.0),
            "invalid config cross-zone.allowed-share: 1 is not a share in [0, 1)"
        );
        assert_eq!(
            bad(|c| c.anomaly.max_tail_probability = 0.7),
            "invalid config anomaly.max-tail-probability: 0.7 is not a tail probability in \
             (0, 0.5)"
        );
        assert!(
            bad(|c| c.storm.debounce.open_after = 4).starts_with("invalid config storm.debounce:"),
        );
        assert!(bad(|c| c.baseline.warm_up = 1).starts_with("invalid config baseline.warm-up"));
        // a section turned off is not validated
        let mut c = DetectConfig::default();
        c.cross_zone.enabled = false;
        c.cross_zone.allowed_share = 7.0;
        assert!(Detector::try_from(c).is_ok());
    }

    #[test]
    fn stats_count_records_late_records_and_windows() {
        // every record trusted at once, so that three records move the watermark
        let mut c = DetectConfig::default();
        c.window.ahead_confirm = 1;
        let mut d = Detector::try_from(c).unwrap();
        let mut b = FlowBatchBuilder::new();
        // starts 0 s, 25 s (watermark 20 s), 1 s (window 0 ended at 10 s: late)
        for t in [0, 25_000_000, 1_000_000] {
            b.append(&FlowRecordRef::new(t, "a", "b", Reporter::Envoy));
        }
        let closed = d.push(&b.finish()).unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].window.start_us, 0);
        let flushed = d.flush();
        assert_eq!(flushed[0].window.start_us, 20_000_000);
        assert_eq!(
            d.stats(),
            &DetectStats {
                records: 3,
                late_records: 1,
                windows_closed: 2,
                findings: 0,
                max_open_windows: 2,
                clamped_records: 0,
                future_records: 0,
            }
        );
    }

    #[test]
    fn far_future_records_are_counted_and_do_not_move_the_watermark() {
        let mut d = Detector::try_from(DetectConfig::default()).unwrap();
        d.set_not_after(100_000_000);
        let mut b = FlowBatchBuilder::new();
        // 0 s, then a record in 2100 (4_102_444_800 s), then 3 s and 1 s: all in window 0.
        for t in [0, 4_102_444_800_000_000, 3_000_000, 1_000_000] {
            b.append(&FlowRecordRef::new(t, "a", "b", Reporter::Envoy));
        }
        assert!(d.push(&b.finish()).unwrap().is_empty());
        assert_eq!(d.dropped_rows(), &[(1, pair::Dropped::Future)]);
        assert_eq!(d.stats().future_records, 1);
        assert_eq!(d.stats().late_records, 0);
        let closed = d.flush();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].pairs[0].requests, 3);
    }
}
