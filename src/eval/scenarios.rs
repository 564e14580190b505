//! `graywatch eval scenarios`: detection quality on the simulator's scenarios, with their
//! ground truth.
//!
//! Each (scenario, seed) is simulated in memory (`crate::simulate`) and run through the
//! pipeline of the config (by default `deploy/examples/simulate.toml`: the landscape's
//! segments and fail-over routes). Per run:
//!
//! * **detected**: a finding with the truth's signature and subject (for a set of sources:
//!   same destination and at least half of the truth's sources named) in a window that ends
//!   after the onset and starts before the incident's end plus [`GRACE_US`];
//! * **time to detect**: from the moment the signature can first be seen to the end of the
//!   first such finding's window (event time), and in windows after that moment's window (0:
//!   its own window). That moment is the incident's onset, except for a logging storm: the
//!   burst starts when the sink answers again (its outage before is a black hole on the sink,
//!   a related finding);
//! * **false findings**: findings that are not about the incident (another signature or
//!   subject outside the incident, or any finding outside onset … end + grace), per hour of
//!   event time. Findings during the incident on its services (the truth's subject, the
//!   services its right findings name: the relays a breach reached, the sink's black hole in
//!   its outage, and the services upstream of the truth's subject in the call graph seen,
//!   whose errors and latency are its cascade) are related, not false.

use std::collections::BTreeSet;

use schemas::{FlowBatchBuilder, Subject};

use crate::config::Validated;
use crate::eval::collect::run_batches;
use crate::simulate::{Incident, Injected, Scenario, Simulation, SimulationConfig, Truth};

/// How long after an incident's end findings about it still count, µs.
pub const GRACE_US: i64 = 120_000_000;

/// Where the detectors learn the services' versions from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Versions {
    /// The records, which carry them.
    #[default]
    Records,
    /// The run's deploy history alone: the records' versions are removed, and the truth's
    /// deployments ([`Truth::deployments`]) are the detector's `[detect.deploy] events` (logs
    /// that don't say which version answered, and a CD system that does).
    Events,
}

/// One run's outcome.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// Whether the incident was found with the right subject (`None` for `clean`).
    pub detected: Option<bool>,
    /// Event time from onset to the end of the first right finding's window, µs.
    pub time_to_detect_us: Option<i64>,
    /// Windows after the onset's window.
    pub windows_to_detect: Option<i64>,
    /// Windows after the onset's window to the first right finding that is `critical` (a
    /// deployment's changed call pattern is a warning until its harm shows).
    pub windows_to_critical: Option<i64>,
    /// Findings not about the incident.
    pub false_findings: Vec<String>,
    /// Event time simulated, hours.
    pub hours: f64,
}

/// Whether finding subject `got` names the truth's subject `want`.
fn same_subject(got: &Subject, want: &Subject) -> bool {
    match (got, want) {
        (
            Subject::Sources {
                destination: d1,
                sources: s1,
            },
            Subject::Sources {
                destination: d2,
                sources: s2,
            },
        ) => {
            let named = s2.iter().filter(|s| s1.contains(s)).count();
            d1 == d2 && 2 * named >= s2.len()
        }
        (a, b) => a == b,
    }
}

/// When `incident`'s signature can first be seen, µs: its onset, or the flush of a logging
/// storm.
fn visible_from_us(incident: &Incident) -> i64 {
    match incident.injected {
        Injected::LoggingStorm { recovery_us, .. } => recovery_us,
        _ => incident.onset_us,
    }
}

/// The services a subject is about.
fn entities(s: &Subject) -> BTreeSet<String> {
    match s {
        Subject::Node { node } => [node.clone()].into(),
        Subject::Pair {
            source,
            destination,
        }
        | Subject::ZonePair {
            source,
            destination,
            ..
        } => [source.clone(), destination.clone()].into(),
        Subject::Version { service, .. } => [service.clone()].into(),
        Subject::Sources {
            destination,
            sources,
        } => sources
            .iter()
            .cloned()
            .chain([destination.clone()])
            .collect(),
        Subject::Landscape => BTreeSet::new(),
    }
}

/// The records of one simulation as flow-record batches of 8 192 rows, with its truth.
///
/// # Errors
/// A simulation config out of range.
pub fn simulate_batches(
    config: SimulationConfig,
    versions: Versions,
) -> anyhow::Result<(Truth, Vec<arrow::array::RecordBatch>)> {
    let sim = Simulation::new(config)?;
    let truth = sim.truth().clone();
    let mut builder = FlowBatchBuilder::new();
    let mut batches = Vec::new();
    for mut r in sim {
        if versions == Versions::Events {
            r.source_version = None;
            r.destination_version = None;
        }
        builder.append_owned(&r);
        if builder.len() >= 8_192 {
            batches.push(builder.finish());
        }
    }
    if !builder.is_empty() {
        batches.push(builder.finish());
    }
    Ok((truth, batches))
}

/// Runs one scenario with one seed (`hours`: event time to simulate, `None`: the scenario's
/// default) through `config`.
///
/// # Errors
/// A simulation config out of range, a pipeline failure.
pub fn run_one(
    config: &Validated,
    scenario: Scenario,
    seed: u64,
    scale: f64,
    hours: Option<f64>,
    versions: Versions,
) -> anyhow::Result<RunResult> {
    let mut sc = SimulationConfig::new(scenario, seed);
    sc.scale = scale;
    if let Some(h) = hours {
        sc.duration_us = (h * 3_600e6) as i64;
    }
    let (truth, batches) = simulate_batches(sc, versions)?;
    let collected = if versions == Versions::Events {
        let mut config = config.clone();
        if let Some((spec, _)) = &mut config.suite.deploy {
            spec.set_deployments(&truth.deployments());
        }
        run_batches(&config, batches)?
    } else {
        run_batches(config, batches)?
    };
    let hours = (truth.end_us - truth.start_us) as f64 / 3_600e6;
    let incident = truth.incidents.first();
    let during = |f: &schemas::Finding, inc: &Incident| {
        f.window.end_us > inc.onset_us && f.window.start_us < inc.end_us + GRACE_US
    };
    let right = |f: &schemas::Finding| {
        incident.is_some_and(|inc| {
            during(f, inc) && f.signature == inc.signature && same_subject(&f.subject, &inc.subject)
        })
    };
    // the incident's services: the truth's, and those its right findings name
    let mut involved: BTreeSet<String> = incident.map(|i| entities(&i.subject)).unwrap_or_default();
    // upstream of the truth's subject: who calls it, directly or through others
    let mut todo: Vec<String> = involved.iter().cloned().collect();
    while let Some(s) = todo.pop() {
        for c in collected.callers.get(&s).into_iter().flatten() {
            if involved.insert(c.clone()) {
                todo.push(c.clone());
            }
        }
    }
    for f in collected.findings.iter().filter(|f| right(f)) {
        involved.extend(entities(&f.subject));
        involved.extend(f.related.iter().map(|r| r.name.clone()));
    }
    let mut first: Option<&schemas::Finding> = None;
    let mut first_critical: Option<&schemas::Finding> = None;
    let mut false_findings = Vec::new();
    for f in &collected.findings {
        let Some(inc) = incident else {
            false_findings.push(f.id.clone());
            continue;
        };
        if right(f) {
            if first.is_none_or(|x| f.window.start_us < x.window.start_us) {
                first = Some(f);
            }
            if f.severity == schemas::Severity::Critical
                && first_critical.is_none_or(|x| f.window.start_us < x.window.start_us)
            {
                first_critical = Some(f);
            }
            continue;
        }
        let related = during(f, inc)
            && (entities(&f.subject).iter().any(|e| involved.contains(e))
                || f.related.iter().any(|r| involved.contains(&r.name)));
        if !related {
            false_findings.push(f.id.clone());
        }
    }
    let window_us = config.window.length_us();
    Ok(RunResult {
        scenario,
        seed,
        detected: incident.map(|_| first.is_some()),
        time_to_detect_us: first
            .zip(incident)
            .map(|(f, i)| f.window.end_us - visible_from_us(i)),
        windows_to_detect: first
            .zip(incident)
            .map(|(f, i)| windows_after(f, i, window_us)),
        windows_to_critical: first_critical
            .zip(incident)
            .map(|(f, i)| windows_after(f, i, window_us)),
        false_findings,
        hours,
    })
}

/// Windows from the one `incident` can first be seen in to `finding`'s.
fn windows_after(finding: &schemas::Finding, incident: &Incident, window_us: i64) -> i64 {
    finding.window.start_us.div_euclid(window_us) - visible_from_us(incident).div_euclid(window_us)
}

/// The results as a table, then per scenario: detected runs, median and worst windows to
/// detect, false findings per hour.
pub fn render(results: &[RunResult]) -> String {
    let mut s = String::from(
        "scenario          seed  detected  time to detect  windows  critical  false findings (per hour)\n",
    );
    for r in results {
        s += &format!(
            "{:<17} {:>4}  {:<8}  {:>14}  {:>7}  {:>8}  {} ({:.2})\n",
            r.scenario.as_str(),
            r.seed,
            match r.detected {
                None => "-".to_owned(),
                Some(d) => if d { "yes" } else { "NO" }.to_owned(),
            },
            r.time_to_detect_us
                .map_or("-".to_owned(), |t| format!("{:.0} s", t as f64 / 1e6)),
            r.windows_to_detect
                .map_or("-".to_owned(), |w| w.to_string()),
            r.windows_to_critical
                .map_or("-".to_owned(), |w| w.to_string()),
            r.false_findings.len(),
            r.false_findings.len() as f64 / r.hours.max(1e-9)
        );
    }
    s += "\n";
    for scenario in Scenario::ALL {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.scenario == scenario).collect();
        if runs.is_empty() {
            continue;
        }
        let detected = runs.iter().filter(|r| r.detected == Some(true)).count();
        let within2 = runs
            .iter()
            .filter(|r| r.windows_to_detect.is_some_and(|w| w <= 2))
            .count();
        let false_n: usize = runs.iter().map(|r| r.false_findings.len()).sum();
        let hours: f64 = runs.iter().map(|r| r.hours).sum();
        s += &format!(
            "{:<17} runs {:>2}  detected {:>2}  within 2 windows {:>2}  false findings {:.2}/h\n",
            scenario.as_str(),
            runs.len(),
            detected,
            within2,
            false_n as f64 / hours.max(1e-9)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_of_sources_matches_when_half_of_the_truth_is_named() {
        let truth = Subject::Sources {
            destination: "log-collector".into(),
            sources: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        };
        let got = |d: &str, s: &[&str]| Subject::Sources {
            destination: d.into(),
            sources: s.iter().map(|x| (*x).to_owned()).collect(),
        };
        assert!(same_subject(
            &got("log-collector", &["a", "b", "x"]),
            &truth
        ));
        assert!(!same_subject(&got("log-collector", &["a", "x"]), &truth));
        assert!(!same_subject(&got("cache", &["a", "b", "c", "d"]), &truth));
    }
}
