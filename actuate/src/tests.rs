//! Tests of the [`Actuator`] as a whole: config validation, the documents it writes against
//! their JSON Schemas (`schemas/json/`), and properties over random window sequences.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use schemas::{
    AlertAction, Caller, Finding, Mode, RemediationCommand, SCHEMA_VERSION, Severity, Signature,
    Subject, Window,
};

use super::*;

const T0: i64 = 1_674_982_200_000_000; // 2023-01-29T08:50:00Z
const W: i64 = 10_000_000; // 10 s windows

fn window(i: i64) -> Window {
    Window {
        start_us: T0 + i * W,
        end_us: T0 + (i + 1) * W,
    }
}

fn black_hole(node: &str, i: i64, callers: &[(&str, f64, f64)]) -> Finding {
    Finding {
        schema_version: SCHEMA_VERSION,
        kind: "finding".into(),
        id: format!("black-hole/node/{node}/{}", window(i).start_us),
        signature: Signature::BlackHole,
        subject: Subject::Node { node: node.into() },
        window: window(i),
        severity: Severity::Critical,
        // every caller saw it (a finding of the black-hole signature always says how many did)
        evidence: vec![schemas::Evidence {
            signal: schemas::COLLAPSED_CALLERS.into(),
            value: callers.len() as f64,
            baseline: callers.len() as f64,
            unit: "callers".into(),
            tail_probability: None,
        }],
        callers: callers
            .iter()
            .map(|(service, rate_rps, baseline_rate_rps)| Caller {
                service: (*service).into(),
                rate_rps: *rate_rps,
                baseline_rate_rps: *baseline_rate_rps,
            })
            .collect(),
        summary: format!("{node} answers nothing"),
        score: 0.0,
        confidence: schemas::Confidence::Normal,
        related: Vec::new(),
        rule: None,
    }
}

fn validator(file: &str) -> jsonschema::Validator {
    let path = format!("{}/../schemas/json/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    jsonschema::draft202012::new(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[test]
fn invalid_config_is_an_error_naming_the_key() {
    let mut config = ActuateConfig::default();
    config.backpressure.rate_fraction = 0.0;
    let e = Actuator::try_from(config).unwrap_err();
    assert_eq!(
        e.to_string(),
        "backpressure.rate-fraction = 0: must be greater than 0 and at most 1"
    );
    assert!(matches!(
        e,
        Error::Config {
            key: "backpressure.rate-fraction",
            ..
        }
    ));

    let mut config = ActuateConfig::default();
    config.backpressure.ttl = Duration::ZERO;
    let e = Actuator::try_from(config).unwrap_err();
    assert_eq!(
        e.to_string(),
        "backpressure.ttl = 0s: must be at least 1µs and at most 292 years"
    );
}

#[test]
fn mode_and_ttl_come_from_the_config() {
    let config: ActuateConfig =
        toml::from_str("[backpressure]\nrate-fraction = 0.2\nttl = \"1m\"\nmode = \"enforce\"\n")
            .unwrap();
    let mut actuator = Actuator::try_from(config).unwrap();
    let actions = actuator.on_window(
        window(0),
        &[black_hole("catalog", 0, &[("frontend", 50.0, 40.0)])],
    );
    let c = &actions.commands[0];
    assert_eq!(c.mode, Mode::Enforce);
    // 0.2 × 40 = 8 req/s; issued at T0 + 10 s, expires 60 s later.
    assert_eq!(c.parameters["rate_limit_rps.frontend"], 0.2 * 40.0);
    assert_eq!(c.issued_at_us, T0 + 10_000_000);
    assert_eq!(c.expires_at_us, T0 + 70_000_000);
}

#[test]
fn a_black_hole_episode_over_several_windows() {
    // Default config: 0.5 × baseline, TTL 5 min, dry run.
    let mut actuator = Actuator::try_from(ActuateConfig::default()).unwrap();
    let callers = [("frontend", 120.0, 118.5), ("checkout", 30.0, 29.5)];

    let a = actuator.on_window(window(0), &[black_hole("catalog", 0, &callers)]);
    assert_eq!(a.commands.len(), 1);
    assert_eq!(a.commands[0].target.sources, ["checkout", "frontend"]);
    assert_eq!(a.commands[0].mode, Mode::DryRun);
    assert_eq!(a.alerts.len(), 1);
    assert_eq!(a.alerts[0].action, AlertAction::Trigger);

    // Still a black hole: the command is in force and the incident open → nothing.
    let a = actuator.on_window(window(1), &[black_hole("catalog", 1, &callers)]);
    assert!(a.is_empty());

    // Gone: two quiet windows keep the incident open, the third (the default
    // resolve-after-windows) resolves it; the command runs out its TTL on the enforcement points.
    assert!(actuator.on_window(window(2), &[]).is_empty());
    assert!(actuator.on_window(window(3), &[]).is_empty());
    let a = actuator.on_window(window(4), &[]);
    assert!(a.commands.is_empty());
    assert_eq!(a.alerts[0].action, AlertAction::Resolve);
    assert_eq!(a.alerts[0].dedup_key, "black-hole/node/catalog");
    assert_eq!(
        a.alerts[0].finding,
        "black-hole/node/catalog/1674982210000000"
    );

    // Back within the TTL (issued T0 + 10 s, expires T0 + 310 s): a new incident, no new
    // command.
    let a = actuator.on_window(window(5), &[black_hole("catalog", 5, &callers)]);
    assert!(a.commands.is_empty());
    assert_eq!(a.alerts[0].action, AlertAction::Trigger);

    // Window 30 ends at T0 + 310 s: the first command has expired → a new one. The incident
    // opened in window 5 is still open (quiet windows 6..29 were never shown to the actuator).
    let a = actuator.on_window(window(30), &[black_hole("catalog", 30, &callers)]);
    assert_eq!(a.commands.len(), 1);
    assert_eq!(a.commands[0].id, "backpressure/catalog/1674982510000000");
    assert!(a.alerts.is_empty());
}

#[test]
fn written_documents_validate_against_their_json_schemas() {
    let commands = validator("remediation-command.schema.json");
    let alerts = validator("alert.schema.json");
    let mut actuator = Actuator::try_from(ActuateConfig {
        alerts: AlertsConfig {
            resolve_after_windows: 1,
        },
        ..ActuateConfig::default()
    })
    .unwrap();
    let mut pair = black_hole("catalog", 0, &[]);
    pair.subject = Subject::Pair {
        source: "frontend".into(),
        destination: "catalog".into(),
    };
    let mut all = actuator.on_window(
        window(0),
        &[
            black_hole("catalog", 0, &[("frontend", 120.0, 0.0), ("b", 1.0, 2.0)]),
            pair,
        ],
    );
    let resolves = actuator.on_window(window(1), &[]);
    all.alerts.extend(resolves.alerts);
    assert_eq!(all.commands.len(), 1);
    assert_eq!(all.alerts.len(), 4);
    for c in &all.commands {
        let doc = serde_json::to_value(c).unwrap();
        assert!(commands.is_valid(&doc), "{doc:#}");
    }
    for a in &all.alerts {
        let doc = serde_json::to_value(a).unwrap();
        assert!(alerts.is_valid(&doc), "{doc:#}");
    }
}

/// A random episode: per window, black-hole findings on some of 3 nodes with some of 4
/// callers, rates in [0, 200) req/s (0 included to exercise the fallback and the skip).
fn episode() -> impl Strategy<Value = Vec<Vec<Finding>>> {
    let caller = (
        0..4usize,
        prop_oneof![Just(0.0), 0.0..200.0f64],
        prop_oneof![Just(0.0), 0.0..200.0f64],
    );
    let finding = (0..3usize, proptest::collection::vec(caller, 0..4));
    proptest::collection::vec(proptest::collection::vec(finding, 0..3), 1..40).prop_map(|windows| {
        windows
            .into_iter()
            .enumerate()
            .map(|(i, findings)| {
                findings
                    .into_iter()
                    .map(|(node, callers)| {
                        let callers: Vec<(&str, f64, f64)> = callers
                            .into_iter()
                            .map(|(c, rate, base)| (["a", "b", "c", "d"][c], rate, base))
                            .collect();
                        black_hole(["n0", "n1", "n2"][node], i as i64, &callers)
                    })
                    .collect()
            })
            .collect()
    })
}

fn small_ttl_config() -> ActuateConfig {
    ActuateConfig {
        backpressure: BackpressureConfig {
            rate_fraction: 0.5,
            ttl: Duration::from_secs(35),
            mode: Mode::DryRun,
        },
        alerts: AlertsConfig {
            resolve_after_windows: 1,
        },
    }
}

proptest! {
    #[test]
    fn restoring_a_checkpoint_gives_the_same_actions(episode in episode(), cut in 0usize..40) {
        let cut = cut.min(episode.len());
        let mut straight = Actuator::try_from(small_ttl_config()).unwrap();
        let expected: Vec<Actions> = episode
            .iter()
            .enumerate()
            .map(|(i, f)| straight.on_window(window(i as i64), f))
            .collect();

        let mut first = Actuator::try_from(small_ttl_config()).unwrap();
        let mut got: Vec<Actions> = episode[..cut]
            .iter()
            .enumerate()
            .map(|(i, f)| first.on_window(window(i as i64), f))
            .collect();
        let saved = serde_json::to_string(&first.state()).unwrap();
        let mut second = Actuator::try_from(small_ttl_config()).unwrap();
        second.restore(serde_json::from_str(&saved).unwrap());
        got.extend(
            episode[cut..]
                .iter()
                .enumerate()
                .map(|(i, f)| second.on_window(window((cut + i) as i64), f)),
        );
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn alerts_alternate_and_commands_never_overlap_without_new_callers(episode in episode()) {
        let mut actuator = Actuator::try_from(small_ttl_config()).unwrap();
        let mut last_action: BTreeMap<String, AlertAction> = BTreeMap::new();
        let mut last_command: BTreeMap<String, RemediationCommand> = BTreeMap::new();
        for (i, findings) in episode.iter().enumerate() {
            let now = window(i as i64).end_us;
            let actions = actuator.on_window(window(i as i64), findings);
            for a in &actions.alerts {
                let previous = last_action.insert(a.dedup_key.clone(), a.action);
                // The first alert of a key is a trigger, then they alternate.
                let expected = match previous {
                    None | Some(AlertAction::Resolve) => AlertAction::Trigger,
                    Some(AlertAction::Trigger) => AlertAction::Resolve,
                };
                prop_assert_eq!(a.action, expected);
            }
            for c in &actions.commands {
                prop_assert_eq!(c.issued_at_us, now);
                prop_assert_eq!(c.expires_at_us, now + 35_000_000);
                prop_assert_eq!(c.target.sources.len(), c.parameters.len());
                for (name, limit) in &c.parameters {
                    prop_assert!(name.starts_with("rate_limit_rps."));
                    prop_assert!(limit.is_finite() && *limit > 0.0 && *limit < 100.0);
                }
                if let Some(previous) = last_command.get(&c.target.destination) {
                    let in_force = now < previous.expires_at_us;
                    let grew = c.target.sources.iter().any(|s| !previous.target.sources.contains(s));
                    prop_assert!(!in_force || grew, "{:?} issued while {:?} in force", c, previous);
                    if in_force {
                        // Growth keeps every earlier caller.
                        for s in &previous.target.sources {
                            prop_assert!(c.target.sources.contains(s));
                        }
                    }
                }
                last_command.insert(c.target.destination.clone(), c.clone());
            }
        }
    }
}
