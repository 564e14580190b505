//! Unit tests of the plan and the engine; the scenario checks are in `tests/simulate.rs`.

use super::*;

fn short(scenario: Scenario, seed: u64) -> SimulationConfig {
    let mut c = SimulationConfig::new(scenario, seed);
    c.duration_us = 20 * 60 * SECOND_US;
    c.scale = 0.05;
    c
}

#[test]
fn scenario_names_round_trip() {
    for s in Scenario::ALL {
        assert_eq!(s.as_str().parse::<Scenario>(), Ok(s));
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            serde_json::json!(s.as_str())
        );
    }
    assert_eq!(
        "blackhole".parse::<Scenario>().unwrap_err().to_string(),
        "unknown scenario \"blackhole\" (expected clean, black-hole, deploy-fanout, logging-storm, segmentation-dos or cross-zone)"
    );
}

#[test]
fn bad_configs_are_refused() {
    let mut c = short(Scenario::BlackHole, 1);
    c.scale = 0.0;
    assert_eq!(c.validate(), Err(SimulateError::Scale(0.0)));
    c.scale = f64::NAN;
    assert!(matches!(c.validate(), Err(SimulateError::Scale(_))));
    c.scale = 1.0;
    c.duration_us = 9 * 60 * SECOND_US;
    assert!(matches!(c.validate(), Err(SimulateError::TooShort { .. })));
    c.duration_us = 10 * 60 * SECOND_US;
    assert_eq!(c.validate(), Ok(()));
    c.start_us = -1;
    assert_eq!(c.validate(), Err(SimulateError::Start(-1)));
}

#[test]
fn records_are_in_start_order_within_the_run() {
    let sim = Simulation::new(short(Scenario::Clean, 3)).unwrap();
    let (start, end) = (sim.truth().start_us, sim.truth().end_us);
    let records: Vec<_> = sim.collect();
    assert!(records.len() > 1000, "{}", records.len());
    assert!(records.windows(2).all(|w| w[0].start_us <= w[1].start_us));
    assert!(records.iter().all(|r| (start..end).contains(&r.start_us)));
}
