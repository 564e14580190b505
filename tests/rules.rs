//! User rules in SQL (`[[rules]]`): each returned row is a finding; the example rules of
//! `deploy/examples/rules.toml` find the simulator's incidents; a bad rule is a config error
//! that names it.

use std::collections::BTreeMap;

use graywatch::config::{Config, Validated};
use graywatch::eval::collect::run_batches;
use graywatch::eval::scenarios::{Versions, simulate_batches};
use graywatch::simulate::{Scenario, SimulationConfig, Truth};
use schemas::{Finding, Subject};

use crate::util::{example_data, graywatch, graywatch_ok, json_lines, of_kind, temp_path};

/// A config file's text with the example rules appended.
fn with_example_rules(config: &str) -> String {
    let base = std::fs::read_to_string(example_data(config)).unwrap();
    let rules = std::fs::read_to_string(example_data("rules.toml")).unwrap();
    format!("{base}\n{rules}")
}

fn validated(text: &str) -> Validated {
    let config: Config = toml::from_str(text).unwrap();
    config.validate(None).unwrap()
}

/// The findings of `scenario` with `seed` under the simulator's config and the example rules.
fn simulate(scenario: Scenario, seed: u64) -> (Truth, Vec<Finding>) {
    let config = validated(&with_example_rules("simulate.toml"));
    let mut sc = SimulationConfig::new(scenario, seed);
    // 40 min: the incident starts 20 to 25 min in, baselines are warm by then
    sc.duration_us = 40 * 60 * 1_000_000;
    let (truth, batches) = simulate_batches(sc, Versions::Records).unwrap();
    let findings = run_batches(&config, batches).unwrap().findings;
    (truth, findings)
}

fn of_rule<'f>(findings: &'f [Finding], rule: &str) -> Vec<&'f Finding> {
    findings
        .iter()
        .filter(|f| f.rule.as_deref() == Some(rule))
        .collect()
}

#[test]
fn each_row_a_rule_returns_is_one_finding_with_the_rows_values() {
    // TrainTicket spans (deploy/examples/trainticket/), windows of 10 s; the rule keeps pair
    // windows of at least 20 requests: the findings must be exactly those pair windows
    let (_dir, config) = temp_path("rules.toml");
    let base = std::fs::read_to_string(example_data("trainticket.toml")).unwrap();
    std::fs::write(
        &config,
        format!(
            "{base}\n[[rules]]\nname = \"busy-pair\"\nseverity = \"critical\"\nsql = \"\"\"\n\
             SELECT source, destination, 'requests' AS signal, 'requests' AS unit,\n\
             requests AS value, 20 AS baseline\n\
             FROM pairs WHERE requests >= 20\"\"\"\n"
        ),
    )
    .unwrap();
    let (dir, windows) = temp_path("windows.jsonl");
    let findings = dir.path().join("findings.jsonl");
    let mut args = vec![
        "replay".to_owned(),
        "-q".into(),
        "-c".into(),
        config.display().to_string(),
        "--windows".into(),
        windows.display().to_string(),
        "--findings".into(),
        findings.display().to_string(),
    ];
    let traces = example_data("trainticket");
    let mut csv: Vec<_> = std::fs::read_dir(&traces)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    csv.sort();
    args.extend(csv);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    graywatch_ok(&args);

    let docs = json_lines(&std::fs::read(&windows).unwrap());
    let busy: BTreeMap<(i64, String, String), u64> = of_kind(&docs, "pair-window")
        .into_iter()
        .filter(|p| p["requests"].as_u64().unwrap() >= 20)
        .map(|p| {
            (
                (
                    p["window"]["start_us"].as_i64().unwrap(),
                    p["source"].as_str().unwrap().to_owned(),
                    p["destination"].as_str().unwrap().to_owned(),
                ),
                p["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(busy.len() >= 10, "{} busy pair windows", busy.len());
    let found = json_lines(&std::fs::read(&findings).unwrap());
    let mut by_rule = BTreeMap::new();
    for f in &found {
        if f["signature"] != "rule" {
            continue;
        }
        assert_eq!(f["rule"], "busy-pair");
        assert_eq!(f["severity"], "critical");
        assert_eq!(f["subject"]["kind"], "pair");
        let e = &f["evidence"][0];
        assert_eq!(
            (e["signal"].as_str(), e["baseline"].as_f64()),
            (Some("requests"), Some(20.0))
        );
        let start = f["window"]["start_us"].as_i64().unwrap();
        let (s, d) = (
            f["subject"]["source"].as_str().unwrap(),
            f["subject"]["destination"].as_str().unwrap(),
        );
        assert_eq!(
            f["id"].as_str().unwrap(),
            format!("rule/busy-pair/pair/{s}/{d}/{start}")
        );
        by_rule.insert(
            (start, s.to_owned(), d.to_owned()),
            e["value"].as_f64().unwrap() as u64,
        );
    }
    assert_eq!(by_rule, busy);
}

#[test]
fn the_example_rules_find_a_failing_service_and_a_misrouted_zone() {
    let (truth, findings) = simulate(Scenario::BlackHole, 1);
    let incident = &truth.incidents[0];
    let Subject::Node { node } = &incident.subject else {
        panic!("{:?}", incident.subject)
    };
    let failing = of_rule(&findings, "failing-service");
    let on_it: Vec<_> = failing
        .iter()
        .filter(|f| matches!(&f.subject, Subject::Node { node: n } if n == node))
        .collect();
    assert!(!on_it.is_empty(), "{failing:#?}");
    let first = on_it.iter().map(|f| f.window.start_us).min().unwrap();
    assert!(
        first >= incident.onset_us - 10_000_000 && first <= incident.onset_us + 20_000_000,
        "first at {first}, onset {}",
        incident.onset_us
    );
    for f in &on_it {
        let e = &f.evidence[0];
        assert_eq!((e.signal.as_str(), e.unit.as_str()), ("ok_ratio", "ratio"));
        assert!(e.value < 0.5 && e.baseline >= 0.95, "{e:?}");
        assert_eq!(f.severity, schemas::Severity::Critical);
    }
    // nothing else fails outside the incident (its callers may fail during it)
    let outside: Vec<_> = failing
        .iter()
        .filter(|f| {
            f.window.end_us <= incident.onset_us || f.window.start_us > incident.end_us + 60_000_000
        })
        .collect();
    assert!(outside.is_empty(), "{outside:#?}");

    let (truth, findings) = simulate(Scenario::CrossZone, 1);
    let incident = &truth.incidents[0];
    let graywatch::simulate::Injected::CrossZone { share } = incident.injected else {
        panic!("{:?}", incident.injected)
    };
    let crossing = of_rule(&findings, "cross-zone-share");
    let on_it: Vec<_> = crossing
        .iter()
        .filter(|f| f.subject == incident.subject)
        .collect();
    assert!(!on_it.is_empty(), "{:?}: {crossing:#?}", incident.subject);
    // the misrouted share of the zone's requests, as injected (binomial noise per window)
    let inside: Vec<f64> = on_it
        .iter()
        .filter(|f| f.window.start_us >= incident.onset_us && f.window.end_us <= incident.end_us)
        .map(|f| f.evidence[0].value)
        .collect();
    assert!(!inside.is_empty());
    let mean = inside.iter().sum::<f64>() / inside.len() as f64;
    assert!(
        (mean - share).abs() < 0.1,
        "mean share {mean}, injected {share}"
    );
    // the fail-over routes' 1–2 % stay under the rule's 10 %
    assert!(
        crossing.iter().all(|f| f.subject == incident.subject),
        "{crossing:#?}"
    );
}

#[test]
fn a_bad_rule_is_a_config_error_naming_the_rule() {
    let cases = [
        ("SELEC node FROM nodes", "sql parser"),
        ("SELECT node FROM nodez", "nodez"),
        ("SELECT nod FROM nodes", "nod"),
        (
            "SELECT node, inflow_requests FROM nodes",
            "returns column \"inflow_requests\"",
        ),
        ("SELECT requests AS value FROM pairs", "returns no subject"),
        (
            "SELECT node, inflow_rps AS value FROM nodes",
            "value and baseline go together",
        ),
        (
            "SELECT node, 1 AS summary FROM nodes",
            "column \"summary\" is Int64",
        ),
        ("CREATE TABLE t AS SELECT 1", "DDL not supported"),
    ];
    for (sql, says) in cases {
        let (_dir, config) = temp_path("bad.toml");
        std::fs::write(
            &config,
            format!("[[rules]]\nname = \"mine\"\nsql = \"\"\"{sql}\"\"\"\n"),
        )
        .unwrap();
        let out = graywatch(&["validate", "-c", config.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sql}: accepted");
        assert!(
            stderr.contains("rule \"mine\"") && stderr.contains(says),
            "{sql}: {stderr}"
        );
    }
    let (_dir, config) = temp_path("twice.toml");
    let rule = "[[rules]]\nname = \"twice\"\nsql = \"SELECT node FROM nodes\"\n";
    std::fs::write(&config, format!("{rule}{rule}")).unwrap();
    let out = graywatch(&["validate", "-c", config.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("two rules have this name"));
    // the shipped examples are valid as they are
    let (_dir, config) = temp_path("examples.toml");
    std::fs::write(&config, with_example_rules("simulate.toml")).unwrap();
    let out = graywatch(&["validate", "-c", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
