//! The golden signals of the last closed window, as Prometheus metrics with bounded
//! cardinality.
//!
//! [`GoldenSignals`] keeps what `/metrics` shows of the landscape. Each closed window's pair
//! and node tables ([`detect::tables`], baselines included) replace the last window's at
//! [`GoldenSignals::publish`], so a pair that stopped calling disappears instead of showing
//! a stale value.
//!
//! **Findings** are those of open incidents (an alert triggered and not yet resolved), each
//! with its latest finding, also in a window where its signature did not fire.
//!
//! **Cardinality.** Series exist for the `top-k` pairs by requests in the window, plus every
//! pair a finding of an open incident is about (its subject pair, or a pair touching its subject
//! node, service or destination), whatever their traffic. The other pairs are summed into one
//! series labelled `source="(other)", destination="(other)"` (the name graywatch gives
//! overflow pairs), for the additive signals only: rate, errors, bandwidth and mean
//! concurrency (percentiles and peaks do not add). Nodes follow the same rule by inflow, with
//! the rest left out. So a landscape of 100,000 pairs costs `top-k` + findings + 1 series per
//! signal.
//!
//! **Metrics** (all gauges; pairs are labelled `source`, `destination`, nodes `node`):
//!
//! | name | extra labels | unit |
//! |---|---|---|
//! | `graywatch_pair_requests_per_second` | | req/s (requests that started in the window ÷ its length) |
//! | `graywatch_pair_error_ratio` | | errors ÷ requests, 0..1 |
//! | `graywatch_pair_latency_seconds` | `quantile` (`0.5`, `0.9`, `0.99`) | seconds (none when no request had a duration) |
//! | `graywatch_pair_concurrency_mean` | | requests in flight, mean over the window |
//! | `graywatch_pair_concurrency_peak` | | requests in flight, peak (at the window's resolution) |
//! | `graywatch_pair_bandwidth_bytes_per_second` | `direction` (`in`: request bytes, `out`: response bytes) | bytes/s |
//! | `graywatch_pair_baseline` | `signal` (`requests_per_second`, `error_ratio`, `latency_p50_seconds`, `latency_p99_seconds`, `concurrency_mean`, `bandwidth_in_bytes_per_second`, `bandwidth_out_bytes_per_second`) | the signal's expected value, in the base unit its name gives |
//! | `graywatch_pair_zscore` | `signal` | (value − baseline) ÷ σ of the baseline |
//! | `graywatch_node_inflow_requests_per_second` | | req/s into the node |
//! | `graywatch_node_ok_ratio` | | answered without a failure of its own ÷ inflow, 0..1 |
//! | `graywatch_node_downstream_per_request` | | downstream calls per inflow request |
//! | `graywatch_node_callers` | | distinct callers |
//! | `graywatch_node_baseline`, `graywatch_node_zscore` | `signal` (`inflow_requests_per_second`, `ok_ratio`, `downstream_per_request`) | as for pairs |
//! | `graywatch_open_findings` | `signature`, `severity`, `subject` | 1 per open incident (its latest finding) |
//! | `graywatch_active_commands` | `pattern`, `mode` | remediation commands in force |
//! | `graywatch_other_pairs` | | pairs summed into the `(other)` series |
//! | `graywatch_window_end_timestamp_seconds` | | end of the window shown, seconds since the epoch |
//!
//! Baselines and z-scores are those the detectors judged the window with (learned from the
//! windows before it); they are absent while a baseline warms up. The `(other)` series has
//! none.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use crate::pipeline::WindowTables;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt64Type};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use schemas::{
    Alert, AlertAction, AuditRecord, CommandAction, Decision, Finding, Mode, Pattern,
    RemediationCommand, Subject,
};

/// Default `top-k`: pairs (and nodes) with series of their own besides those of findings.
pub const DEFAULT_TOP_K: usize = 100;

/// The label value of the pairs summed together.
pub const OTHER: &str = "(other)";

/// Every metric name this module exports (for dashboards and their tests).
pub const NAMES: &[&str] = &[
    "graywatch_pair_requests_per_second",
    "graywatch_pair_error_ratio",
    "graywatch_pair_latency_seconds",
    "graywatch_pair_concurrency_mean",
    "graywatch_pair_concurrency_peak",
    "graywatch_pair_bandwidth_bytes_per_second",
    "graywatch_pair_baseline",
    "graywatch_pair_zscore",
    "graywatch_node_inflow_requests_per_second",
    "graywatch_node_ok_ratio",
    "graywatch_node_downstream_per_request",
    "graywatch_node_callers",
    "graywatch_node_baseline",
    "graywatch_node_zscore",
    "graywatch_open_findings",
    "graywatch_active_commands",
    "graywatch_other_pairs",
    "graywatch_window_end_timestamp_seconds",
];

/// One signal's baseline in a window table's row: the `<signal>_baseline`, `_sigma`, `_z` and
/// `_p` columns (in the signal's unit; null while the baseline warms up).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BaselineCell {
    pub signal: String,
    pub baseline: Option<f64>,
    pub sigma: Option<f64>,
    pub z: Option<f64>,
    pub p: Option<f64>,
}

/// One pair's row of the `pairs` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PairRow {
    pub source: String,
    pub destination: String,
    pub requests: u64,
    pub rate_rps: f64,
    pub errors: u64,
    /// p50, p90, p99, µs.
    pub latency_us: [Option<u64>; 3],
    pub concurrency_mean: f64,
    pub concurrency_peak: u64,
    pub bandwidth_bps: [f64; 2],
    /// Signals with a baseline.
    pub baselines: Vec<BaselineCell>,
}

impl PairRow {
    /// The baseline of `signal`, if it has one.
    pub fn baseline(&self, signal: &str) -> Option<&BaselineCell> {
        self.baselines.iter().find(|b| b.signal == signal)
    }
}

/// One node's row of the `nodes` table.
#[derive(Debug, Clone, Default, PartialEq)]
struct NodeRow {
    node: String,
    inflow_requests: u64,
    inflow_rps: f64,
    ok_ratio: Option<f64>,
    downstream_per_request: Option<f64>,
    callers: u64,
    baselines: Vec<BaselineCell>,
}

/// What one window shows.
#[derive(Debug, Clone, Default, PartialEq)]
struct Board {
    end_us: Option<i64>,
    pairs: Vec<PairRow>,
    nodes: Vec<NodeRow>,
    /// The sum of the pairs not shown one by one (`None` when every pair is).
    other: Option<PairRow>,
    other_pairs: u64,
    /// (signature, severity, subject key, summary).
    findings: Vec<(String, String, String, String)>,
    /// Services the findings are about (a node's, a version's service).
    troubled_nodes: BTreeSet<String>,
    /// Pairs the findings are about, and the calls into troubled services.
    troubled_pairs: BTreeSet<(String, String)>,
}

#[derive(Debug, Default)]
struct State {
    shown: Board,
    /// The window being closed: its tables.
    next: Option<(Vec<PairRow>, Vec<NodeRow>, i64)>,
    /// Incidents open (an alert triggered, not resolved), by dedup key.
    open: BTreeSet<String>,
    /// The latest finding of each incident, by dedup key.
    latest: BTreeMap<String, Finding>,
    /// Commands in force: id → (pattern, mode).
    active: BTreeMap<String, (Pattern, Mode)>,
}

/// The golden-signal metrics: fed by an output (tables, findings, commands), read by the
/// Prometheus registry it is registered in (a [`Collector`]). Cheap to share (`Arc`).
#[derive(Debug)]
pub struct GoldenSignals {
    top_k: usize,
    state: Mutex<State>,
    /// The landscape map's state as JSON ([`GoldenSignals::map`]), replaced each window.
    map: tokio::sync::watch::Sender<Arc<str>>,
}

impl Default for GoldenSignals {
    fn default() -> Self {
        GoldenSignals::new(DEFAULT_TOP_K)
    }
}

impl GoldenSignals {
    /// Shows the `top_k` busiest pairs and nodes of each window besides those of findings.
    pub fn new(top_k: usize) -> Self {
        let (map, _) = tokio::sync::watch::channel(map_json(&Board::default()));
        GoldenSignals {
            top_k,
            state: Mutex::new(State::default()),
            map,
        }
    }

    /// The landscape map of the last closed window, as JSON: `{"window_end_us", "window_end"
    /// (RFC 3339), "pairs": [{"source", "destination", "rate_rps", "error_ratio", "p99_ms",
    /// "worst_z", "worst_p", "worst_signal", "troubled"}], "nodes": [{"node", "inflow_rps",
    /// "ok_ratio", "callers", "troubled"}], "troubled_nodes", "findings": [{"signature",
    /// "severity", "subject", "summary"}], "other_pairs"}` (pairs as on `/metrics`; `worst_z`:
    /// the largest |z| of the pair's signals; `worst_p`: the smallest tail probability of its
    /// signals as the detectors score them, with `worst_signal` its signal; null while its
    /// baseline warms up).
    pub fn map(&self) -> Arc<str> {
        self.map.borrow().clone()
    }

    /// Each new map, as it is published (for `/map/events`).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<str>> {
        self.map.subscribe()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // a panic elsewhere while holding the lock leaves plain data: still readable
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A closed window's tables (in [`detect::tables`]' schemas); shown at
    /// [`GoldenSignals::publish`].
    pub fn tables(&self, t: &WindowTables) {
        let pairs = pair_rows(&t.pairs);
        let nodes = node_rows(&t.nodes);
        self.state().next = Some((pairs, nodes, t.window.end_us));
    }

    /// A finding of the window being closed: the latest of its incident.
    pub fn finding(&self, f: &Finding) {
        self.state()
            .latest
            .insert(crate::report::incident_key(f), f.clone());
    }

    /// An alert: a trigger opens its incident, a resolve closes it. An incident is shown
    /// (with its latest finding) from its trigger to its resolve, also in windows where its
    /// signature did not fire.
    pub fn alert(&self, a: &Alert) {
        let mut s = self.state();
        match a.action {
            AlertAction::Trigger => {
                s.open.insert(a.dedup_key.clone());
            }
            AlertAction::Resolve => {
                s.open.remove(&a.dedup_key);
                s.latest.remove(&a.dedup_key);
            }
        }
    }

    /// A command sent: issued or renewed ones are in force, revoked ones no longer.
    pub fn command(&self, c: &RemediationCommand) {
        let mut s = self.state();
        match c.action {
            CommandAction::Issue | CommandAction::Renew => {
                s.active.insert(c.id.clone(), (c.pattern(), c.mode));
            }
            CommandAction::Revoke => {
                s.active.remove(&c.id);
            }
        }
    }

    /// An audit record: an expired command is no longer in force.
    pub fn audit(&self, a: &AuditRecord) {
        if a.decision == Decision::Expired {
            self.state().active.remove(&a.command);
        }
    }

    /// The window is complete: it replaces the one shown.
    pub fn publish(&self) {
        let mut s = self.state();
        let Some((pairs, nodes, end_us)) = s.next.take() else {
            return;
        };
        let State { open, latest, .. } = &mut *s;
        latest.retain(|key, _| open.contains(key));
        let findings: Vec<Finding> = latest.values().cloned().collect();
        s.shown = if pairs.iter().all(|p| p.requests == 0) && s.shown.end_us.is_some() {
            // no request started in it (only requests in flight from earlier windows, as in
            // the last window an idle input closes): no data, the traffic shown stays, with
            // the incidents open now
            let last = std::mem::take(&mut s.shown);
            let mut b = board(self.top_k, last.pairs, last.nodes, 0, &findings);
            b.end_us = last.end_us;
            b.other = last.other;
            b.other_pairs = last.other_pairs;
            b
        } else {
            board(self.top_k, pairs, nodes, end_us, &findings)
        };
        let json = map_json(&s.shown);
        drop(s);
        self.map.send_replace(json);
    }
}

/// What findings are about, to show them: services (a node, a version's service) and pairs
/// (a pair, a zone pair's, each source of a set to its destination).
#[derive(Debug, Default)]
pub(crate) struct Touched<'a> {
    /// Services.
    pub nodes: HashSet<&'a str>,
    /// Pairs, (source, destination).
    pub pairs: HashSet<(&'a str, &'a str)>,
}

impl<'a> Touched<'a> {
    /// What `subjects` are about.
    pub fn of(subjects: impl IntoIterator<Item = &'a Subject>) -> Self {
        let mut t = Touched::default();
        for subject in subjects {
            match subject {
                Subject::Node { node } => {
                    t.nodes.insert(node);
                }
                Subject::Version { service, .. } => {
                    t.nodes.insert(service);
                }
                Subject::Pair {
                    source,
                    destination,
                }
                | Subject::ZonePair {
                    source,
                    destination,
                    ..
                } => {
                    t.pairs.insert((source, destination));
                }
                Subject::Sources {
                    destination,
                    sources,
                } => {
                    for s in sources {
                        t.pairs.insert((s, destination));
                    }
                }
                Subject::Landscape => {}
            }
        }
        t
    }

    /// Whether the pair is touched: itself, or as a call into a touched service.
    pub fn pair(&self, source: &str, destination: &str) -> bool {
        self.pairs.contains(&(source, destination)) || self.nodes.contains(destination)
    }
}

/// The busiest `top_k` pairs and nodes and those the findings touch; the other pairs summed.
fn board(
    top_k: usize,
    mut pairs: Vec<PairRow>,
    mut nodes: Vec<NodeRow>,
    end_us: i64,
    findings: &[Finding],
) -> Board {
    let touched = Touched::of(findings.iter().map(|f| &f.subject));
    let (touched_nodes, touched_pairs) = (&touched.nodes, &touched.pairs);
    let touches = |p: &PairRow| {
        touched_nodes.contains(p.source.as_str())
            || touched_nodes.contains(p.destination.as_str())
            || touched_pairs.contains(&(p.source.as_str(), p.destination.as_str()))
    };
    // busiest first, then by name: the same window always shows the same series
    pairs.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)))
    });
    let mut shown = Vec::new();
    let mut other = PairRow {
        source: OTHER.into(),
        destination: OTHER.into(),
        ..PairRow::default()
    };
    let mut other_pairs = 0u64;
    for (rank, p) in pairs.into_iter().enumerate() {
        if rank < top_k || touches(&p) {
            shown.push(p);
        } else {
            other_pairs += 1;
            other.requests += p.requests;
            other.errors += p.errors;
            other.rate_rps += p.rate_rps;
            other.concurrency_mean += p.concurrency_mean;
            other.bandwidth_bps[0] += p.bandwidth_bps[0];
            other.bandwidth_bps[1] += p.bandwidth_bps[1];
        }
    }
    // sums of many floats carry noise in their last digits (25.000000000000004): to 1e-9
    let tidy = |v: &mut f64| *v = (*v * 1e9).round() / 1e9;
    tidy(&mut other.rate_rps);
    tidy(&mut other.concurrency_mean);
    other.bandwidth_bps.iter_mut().for_each(tidy);
    let shown_pairs: Vec<(String, String)> = shown
        .iter()
        .map(|p| (p.source.clone(), p.destination.clone()))
        .collect();
    let mut touched_by_pairs: BTreeSet<&str> = BTreeSet::new();
    for (s, d) in touched_pairs {
        touched_by_pairs.insert(s);
        touched_by_pairs.insert(d);
    }
    nodes.sort_by(|a, b| {
        b.inflow_requests
            .cmp(&a.inflow_requests)
            .then_with(|| a.node.cmp(&b.node))
    });
    let nodes = nodes
        .into_iter()
        .enumerate()
        .filter(|(rank, n)| {
            *rank < top_k
                || touched_nodes.contains(n.node.as_str())
                || touched_by_pairs.contains(n.node.as_str())
        })
        .map(|(_, n)| n)
        .collect();
    Board {
        end_us: Some(end_us),
        pairs: shown,
        nodes,
        other: (other_pairs > 0).then_some(other),
        other_pairs,
        findings: findings
            .iter()
            .map(|f| {
                (
                    f.rule
                        .as_ref()
                        .map_or_else(|| f.signature.as_str().to_owned(), |r| format!("rule/{r}")),
                    f.severity.as_str().to_owned(),
                    f.subject.key(),
                    f.summary.clone(),
                )
            })
            .collect(),
        troubled_nodes: touched_nodes.iter().map(|n| (*n).to_owned()).collect(),
        troubled_pairs: shown_pairs
            .into_iter()
            .filter(|(s, d)| touched.pair(s, d))
            .collect(),
    }
}

/// The landscape map of a window, as JSON: what `/map` draws.
///
/// `{"window_end_us", "window_end" (RFC 3339), "pairs": [{"source", "destination",
/// "rate_rps", "error_ratio", "p99_ms" (null without durations), "worst_z" (the largest |z|
/// of its signals, null while its baseline warms up), "worst_p", "worst_signal" (the smallest
/// tail probability of its signals, `_p` of [`detect::tables`], and that signal's name),
/// "troubled"}], "nodes": [{"node",
/// "inflow_rps", "ok_ratio", "callers", "troubled"}], "findings": [{"signature",
/// "severity", "subject", "summary"}], "other_pairs"}`; pairs as on `/metrics` (top-k,
/// findings' pairs, `(other)`).
fn map_json(b: &Board) -> Arc<str> {
    use serde_json::json;
    let worst_z = |cells: &[BaselineCell]| {
        cells
            .iter()
            .filter_map(|c| c.z)
            .filter(|z| z.is_finite())
            .map(f64::abs)
            .reduce(f64::max)
    };
    // the most surprising signal, as the detectors score it
    fn worst_p(cells: &[BaselineCell]) -> Option<(f64, &str)> {
        cells
            .iter()
            .filter_map(|c| Some((c.p.filter(|p| p.is_finite())?, c.signal.as_str())))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }
    let pairs: Vec<_> = b
        .pairs
        .iter()
        .chain(b.other.as_ref())
        .map(|p| {
            json!({
                "source": p.source,
                "destination": p.destination,
                "rate_rps": p.rate_rps,
                "error_ratio": if p.requests == 0 { 0.0 } else { p.errors as f64 / p.requests as f64 },
                "p99_ms": p.latency_us[2].map(|us| us as f64 / 1000.0),
                "worst_z": worst_z(&p.baselines),
                "worst_p": worst_p(&p.baselines).map(|w| w.0),
                "worst_signal": worst_p(&p.baselines).map(|w| w.1),
                "troubled": b.troubled_pairs.contains(&(p.source.clone(), p.destination.clone())),
            })
        })
        .collect();
    let nodes: Vec<_> = b
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node": n.node,
                "inflow_rps": n.inflow_rps,
                "ok_ratio": n.ok_ratio,
                "callers": n.callers,
                "troubled": b.troubled_nodes.contains(&n.node),
            })
        })
        .collect();
    let findings: Vec<_> = b
        .findings
        .iter()
        .map(|(signature, severity, subject, summary)| {
            json!({"signature": signature, "severity": severity, "subject": subject, "summary": summary})
        })
        .collect();
    let end = b.end_us.map(|us| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0).unsigned_abs());
        humantime::format_rfc3339_seconds(t).to_string()
    });
    Arc::from(
        json!({
            "window_end_us": b.end_us,
            "window_end": end,
            "pairs": pairs,
            "nodes": nodes,
            "troubled_nodes": b.troubled_nodes,
            "findings": findings,
            "other_pairs": b.other_pairs,
        })
        .to_string(),
    )
}

fn f64_column<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a arrow::array::Float64Array> {
    b.column_by_name(name)?.as_primitive_opt::<Float64Type>()
}

fn u64_column<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a arrow::array::UInt64Array> {
    b.column_by_name(name)?.as_primitive_opt::<UInt64Type>()
}

fn str_value(b: &RecordBatch, name: &str, row: usize) -> String {
    b.column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .map_or_else(String::new, |c| c.value(row).to_owned())
}

fn opt_f64(a: Option<&arrow::array::Float64Array>, row: usize) -> Option<f64> {
    a.filter(|a| a.is_valid(row)).map(|a| a.value(row))
}

fn opt_u64(a: Option<&arrow::array::UInt64Array>, row: usize) -> Option<u64> {
    a.filter(|a| a.is_valid(row)).map(|a| a.value(row))
}

/// The `(signal, baseline, z)` columns of a table: each `<signal>_baseline` with its `_z`.
fn baseline_columns(b: &RecordBatch) -> Vec<String> {
    b.schema()
        .fields()
        .iter()
        .filter_map(|f| f.name().strip_suffix("_baseline").map(str::to_owned))
        .collect()
}

fn baselines_of(b: &RecordBatch, signals: &[String], row: usize) -> Vec<BaselineCell> {
    signals
        .iter()
        .map(|s| BaselineCell {
            signal: s.clone(),
            baseline: opt_f64(f64_column(b, &format!("{s}_baseline")), row),
            sigma: opt_f64(f64_column(b, &format!("{s}_sigma")), row),
            z: opt_f64(f64_column(b, &format!("{s}_z")), row),
            p: opt_f64(f64_column(b, &format!("{s}_p")), row),
        })
        .filter(|c| c.baseline.is_some())
        .collect()
}

/// The rows of a `pairs` table ([`detect::tables::pair_schema`]).
pub(crate) fn pair_rows(b: &RecordBatch) -> Vec<PairRow> {
    let signals = baseline_columns(b);
    let u = |n| u64_column(b, n);
    let f = |n| f64_column(b, n);
    (0..b.num_rows())
        .map(|row| PairRow {
            source: str_value(b, "source", row),
            destination: str_value(b, "destination", row),
            requests: opt_u64(u("requests"), row).unwrap_or(0),
            rate_rps: opt_f64(f("rate_rps"), row).unwrap_or(0.0),
            errors: opt_u64(u("errors"), row).unwrap_or(0),
            latency_us: ["p50_us", "p90_us", "p99_us"].map(|n| opt_u64(u(n), row)),
            concurrency_mean: opt_f64(f("concurrency_mean"), row).unwrap_or(0.0),
            concurrency_peak: opt_u64(u("concurrency_peak"), row).unwrap_or(0),
            bandwidth_bps: ["bandwidth_in_bps", "bandwidth_out_bps"]
                .map(|n| opt_f64(f(n), row).unwrap_or(0.0)),
            baselines: baselines_of(b, &signals, row),
        })
        .collect()
}

fn node_rows(b: &RecordBatch) -> Vec<NodeRow> {
    let signals = baseline_columns(b);
    (0..b.num_rows())
        .map(|row| NodeRow {
            node: str_value(b, "node", row),
            inflow_requests: opt_u64(u64_column(b, "inflow_requests"), row).unwrap_or(0),
            inflow_rps: opt_f64(f64_column(b, "inflow_rps"), row).unwrap_or(0.0),
            ok_ratio: opt_f64(f64_column(b, "ok_ratio"), row),
            downstream_per_request: opt_f64(f64_column(b, "downstream_per_request"), row),
            callers: opt_u64(u64_column(b, "callers"), row).unwrap_or(0),
            baselines: baselines_of(b, &signals, row),
        })
        .collect()
}

/// Writes one gauge family: `rows` of (labels, value); its `# HELP` and `# TYPE` even with
/// no row, so that every name is listed from the first scrape.
fn gauge<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn pair_labels(p: &PairRow) -> Vec<(&str, &str)> {
    vec![("source", &p.source), ("destination", &p.destination)]
}

fn node_labels(n: &NodeRow) -> Vec<(&str, &str)> {
    vec![("node", n.node.as_str())]
}

/// A signal's `signal` label on `/metrics`, in Prometheus' base units, and the factor from
/// the table's unit to it: `p99_us` → `latency_p99_seconds`, × 1e-6.
fn metric_signal(signal: &str) -> (&str, f64) {
    match signal {
        "rate_rps" => ("requests_per_second", 1.0),
        "p50_us" => ("latency_p50_seconds", 1e-6),
        "p99_us" => ("latency_p99_seconds", 1e-6),
        "bandwidth_in_bps" => ("bandwidth_in_bytes_per_second", 1.0),
        "bandwidth_out_bps" => ("bandwidth_out_bytes_per_second", 1.0),
        "inflow_rps" => ("inflow_requests_per_second", 1.0),
        other => (other, 1.0), // error_ratio, concurrency_mean, ok_ratio, …
    }
}

/// `(signal, baseline)` (in base units) or `(signal, z)` of the cells that have it.
fn baseline_rows(rows: &[BaselineCell], z: bool) -> Vec<(&str, f64)> {
    rows.iter()
        .filter_map(|c| {
            let (label, scale) = metric_signal(&c.signal);
            let v = if z {
                c.z
            } else {
                c.baseline.map(|b| b * scale)
            };
            v.filter(|v| v.is_finite()).map(|v| (label, v))
        })
        .collect()
}

impl Collector for GoldenSignals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.state();
        let b = &s.shown;
        let all: Vec<&PairRow> = b.pairs.iter().chain(b.other.as_ref()).collect();
        let e = &mut encoder;
        gauge(
            e,
            "graywatch_pair_requests_per_second",
            "Requests that started in the last closed window per second, by pair (top-k, findings' pairs, the rest summed as (other))",
            all.iter().map(|p| (pair_labels(p), p.rate_rps)),
        )?;
        gauge(
            e,
            "graywatch_pair_error_ratio",
            "Failed requests / requests of the last closed window, by pair",
            all.iter().map(|p| {
                let ratio = if p.requests == 0 {
                    0.0
                } else {
                    p.errors as f64 / p.requests as f64
                };
                (pair_labels(p), ratio)
            }),
        )?;
        gauge(
            e,
            "graywatch_pair_latency_seconds",
            "Latency percentiles of the last closed window's requests, seconds, by pair",
            b.pairs.iter().flat_map(|p| {
                ["0.5", "0.9", "0.99"]
                    .into_iter()
                    .zip(p.latency_us)
                    .filter_map(move |(q, us)| {
                        let mut l = pair_labels(p);
                        l.push(("quantile", q));
                        us.map(|us| (l, us as f64 / 1e6))
                    })
            }),
        )?;
        gauge(
            e,
            "graywatch_pair_concurrency_mean",
            "Mean requests in flight over the last closed window, by pair",
            all.iter().map(|p| (pair_labels(p), p.concurrency_mean)),
        )?;
        gauge(
            e,
            "graywatch_pair_concurrency_peak",
            "Peak requests in flight in the last closed window (at its resolution), by pair",
            b.pairs
                .iter()
                .map(|p| (pair_labels(p), p.concurrency_peak as f64)),
        )?;
        gauge(
            e,
            "graywatch_pair_bandwidth_bytes_per_second",
            "Bytes per second over the last closed window, by pair and direction (in: requests, out: responses)",
            all.iter().flat_map(|p| {
                ["in", "out"]
                    .into_iter()
                    .zip(p.bandwidth_bps)
                    .map(|(d, v)| {
                        let mut l = pair_labels(p);
                        l.push(("direction", d));
                        (l, v)
                    })
            }),
        )?;
        for (name, help, z) in [
            (
                "graywatch_pair_baseline",
                "Expected value of a pair's signal, in the base unit its label names (latency_p99_seconds: seconds), learned from earlier windows",
                false,
            ),
            (
                "graywatch_pair_zscore",
                "(value - baseline) / sigma of a pair's signal in the last closed window",
                true,
            ),
        ] {
            gauge(
                e,
                name,
                help,
                b.pairs.iter().flat_map(|p| {
                    baseline_rows(&p.baselines, z)
                        .into_iter()
                        .map(|(signal, v)| {
                            let mut l = pair_labels(p);
                            l.push(("signal", signal));
                            (l, v)
                        })
                }),
            )?;
        }
        gauge(
            e,
            "graywatch_node_inflow_requests_per_second",
            "Requests into the node per second over the last closed window",
            b.nodes.iter().map(|n| (node_labels(n), n.inflow_rps)),
        )?;
        gauge(
            e,
            "graywatch_node_ok_ratio",
            "Inflow answered without a failure of the node's own / inflow, last closed window",
            b.nodes
                .iter()
                .filter_map(|n| n.ok_ratio.map(|v| (node_labels(n), v))),
        )?;
        gauge(
            e,
            "graywatch_node_downstream_per_request",
            "Downstream calls per inflow request (fan-out), last closed window",
            b.nodes
                .iter()
                .filter_map(|n| n.downstream_per_request.map(|v| (node_labels(n), v))),
        )?;
        gauge(
            e,
            "graywatch_node_callers",
            "Distinct callers of the node in the last closed window",
            b.nodes.iter().map(|n| (node_labels(n), n.callers as f64)),
        )?;
        for (name, help, z) in [
            (
                "graywatch_node_baseline",
                "Expected value of a node's signal, in the unit its label names, learned from earlier windows",
                false,
            ),
            (
                "graywatch_node_zscore",
                "(value - baseline) / sigma of a node's signal in the last closed window",
                true,
            ),
        ] {
            gauge(
                e,
                name,
                help,
                b.nodes.iter().flat_map(|n| {
                    baseline_rows(&n.baselines, z)
                        .into_iter()
                        .map(|(signal, v)| {
                            let mut l = node_labels(n);
                            l.push(("signal", signal));
                            (l, v)
                        })
                }),
            )?;
        }
        gauge(
            e,
            "graywatch_open_findings",
            "Open incidents, 1 each, labelled with their latest finding",
            b.findings.iter().map(|(signature, severity, subject, _)| {
                (
                    vec![
                        ("signature", signature.as_str()),
                        ("severity", severity.as_str()),
                        ("subject", subject.as_str()),
                    ],
                    1.0,
                )
            }),
        )?;
        let mut active: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (pattern, mode) in s.active.values() {
            *active.entry((pattern.as_str(), mode.as_str())).or_default() += 1;
        }
        gauge(
            e,
            "graywatch_active_commands",
            "Remediation commands in force, by pattern and mode",
            active
                .into_iter()
                .map(|((p, m), n)| (vec![("pattern", p), ("mode", m)], n as f64)),
        )?;
        // no sample before the first window
        gauge(
            e,
            "graywatch_other_pairs",
            "Pairs of the last closed window summed into the (other) series",
            b.end_us.map(|_| (Vec::new(), b.other_pairs as f64)),
        )?;
        gauge(
            e,
            "graywatch_window_end_timestamp_seconds",
            "End of the last closed window, seconds since the epoch",
            b.end_us.map(|end| (Vec::new(), end as f64 / 1e6)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
