//! `graywatch simulate`: determinism, valid documents, each scenario's incident present in the
//! records where and when the truth says, the daily load curve, and the proxy formats read
//! back through the real parsers.

use std::collections::{BTreeMap, BTreeSet};

use graywatch::simulate::format::LineWriter;
use graywatch::simulate::landscape::{FAIL_OVER, SINK};
use graywatch::simulate::{
    BenignChange, Injected, Landscape, OutputFormat, Scenario, Simulation, SimulationConfig, Truth,
};
use schemas::{FlowRecord, Subject};
use serde_json::Value;

use crate::util::{graywatch, graywatch_ok, root, temp_path};

const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;

/// A run of `minutes` of event time at `scale`: its truth and records.
fn run(scenario: Scenario, seed: u64, minutes: i64, scale: f64) -> (Truth, Vec<FlowRecord>) {
    let mut config = SimulationConfig::new(scenario, seed);
    config.duration_us = minutes * MINUTE;
    config.scale = scale;
    let sim = Simulation::new(config).unwrap();
    let truth = sim.truth().clone();
    (truth, sim.collect())
}

/// The records as flow-json lines.
fn flow_json(records: &[FlowRecord]) -> Vec<u8> {
    let w = LineWriter::new(OutputFormat::FlowJson);
    let mut out = Vec::new();
    for r in records {
        w.write(r, &mut out);
    }
    out
}

fn ok(r: &FlowRecord) -> bool {
    r.status.is_some_and(|s| s < 500)
}

fn schema(file: &str) -> Value {
    let text = std::fs::read_to_string(root().join("schemas/json").join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn validator(file: &str) -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema(file)).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, doc: &Value) {
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{doc:#}:\n{}", errors.join("\n"));
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
    let (truth_a, a) = run(Scenario::LoggingStorm, 11, 10, 0.1);
    let (truth_b, b) = run(Scenario::LoggingStorm, 11, 10, 0.1);
    let (truth_c, c) = run(Scenario::LoggingStorm, 12, 10, 0.1);
    assert!(a.len() > 5_000, "{}", a.len());
    assert_eq!(flow_json(&a), flow_json(&b));
    assert_eq!(truth_a, truth_b);
    assert_ne!(flow_json(&a), flow_json(&c));
    assert_ne!(truth_a.incidents[0].onset_us, truth_c.incidents[0].onset_us);
    // the plan does not depend on the scale: a rehearsal at a small scale has the same truth
    let (truth_big, _) = run(Scenario::LoggingStorm, 11, 10, 0.3);
    assert_eq!(truth_a.incidents, truth_big.incidents);
    assert_eq!(truth_a.benign, truth_big.benign);
}

#[test]
fn every_record_is_a_valid_flow_record_document() {
    let v = validator("flow-record.schema.json");
    let (_, records) = run(Scenario::BlackHole, 5, 12, 0.1);
    let mut flags = BTreeSet::new();
    for (i, r) in records.iter().enumerate() {
        // every record of the incident (all its flags), a sample of the rest
        if r.response_flags.is_some() || i % 20 == 0 {
            assert_valid(&v, &serde_json::to_value(r).unwrap());
            flags.insert(r.response_flags.clone());
        }
        assert!(
            r.source_zone.is_some() && r.destination_zone.is_some(),
            "{r:?}"
        );
        assert!(r.source_version.is_some() && r.destination_version.is_some());
        assert!(r.duration_us.is_some() && r.status.is_some() && r.request_id.is_some());
        assert!(r.upstream_host.is_some());
    }
    assert!(flags.contains(&None) && flags.len() >= 2, "{flags:?}");
}

#[test]
fn truths_validate_against_their_schema_and_read_back() {
    let v = validator("truth.schema.json");
    let subject_kinds = [
        (Scenario::Clean, None),
        (Scenario::BlackHole, Some(("black-hole", "node"))),
        (
            Scenario::DeployFanout,
            Some(("deploy-regression", "version")),
        ),
        (
            Scenario::LoggingStorm,
            Some(("synchronized-burst", "sources")),
        ),
        (
            Scenario::SegmentationDos,
            Some(("segmentation-violation", "sources")),
        ),
        (Scenario::CrossZone, Some(("cross-zone", "zone-pair"))),
    ];
    for (scenario, expected) in subject_kinds {
        for seed in [1, 2] {
            let mut config = SimulationConfig::new(scenario, seed);
            config.duration_us = 2 * 3600 * SECOND;
            let truth = Simulation::new(config).unwrap().truth().clone();
            let doc = serde_json::to_value(&truth).unwrap();
            assert_valid(&v, &doc);
            assert_eq!(serde_json::from_value::<Truth>(doc.clone()).unwrap(), truth);
            assert_eq!(doc["kind"], "truth");
            assert!((2..=4).contains(&truth.benign.len()), "{:?}", truth.benign);
            match expected {
                None => assert!(truth.incidents.is_empty()),
                Some((signature, kind)) => {
                    let i = &doc["incidents"][0];
                    assert_eq!(
                        (i["signature"].as_str(), i["subject"]["kind"].as_str()),
                        (Some(signature), Some(kind))
                    );
                    let onset = truth.incidents[0].onset_us - truth.start_us;
                    // warm-up: 60 to 75 min into the default 2 h
                    assert!((60 * MINUTE..=75 * MINUTE).contains(&onset), "{onset}");
                    assert!(truth.incidents[0].end_us > truth.incidents[0].onset_us);
                    assert!(truth.incidents[0].end_us <= truth.end_us);
                }
            }
        }
    }
    // the schema's subject is the finding's
    assert_eq!(
        schema("truth.schema.json")["$defs"]["subject"],
        schema("finding.schema.json")["properties"]["subject"]
    );
    for example in schema("truth.schema.json")["examples"].as_array().unwrap() {
        assert_valid(&v, example);
        let back = serde_json::to_value(serde_json::from_value::<Truth>(example.clone()).unwrap());
        assert_eq!(&back.unwrap(), example);
    }
}

#[test]
fn a_black_hole_answers_nothing_and_calls_nothing_while_its_inflow_goes_on() {
    for seed in [1, 4] {
        let (truth, records) = run(Scenario::BlackHole, seed, 24, 0.2);
        let inc = &truth.incidents[0];
        let Subject::Node { node } = &inc.subject else {
            panic!("{:?}", inc.subject)
        };
        let Injected::BlackHole { dependencies, .. } = &inc.injected else {
            panic!()
        };
        let phase = |t: i64| {
            if t < inc.onset_us {
                0
            } else if t < inc.end_us {
                1
            } else if t >= inc.end_us + MINUTE {
                2
            } else {
                3
            }
        };
        let (mut inflow, mut answered, mut outflow) = ([0f64; 4], [0f64; 4], [0f64; 4]);
        for r in &records {
            let p = phase(r.start_us);
            if &r.destination == node {
                inflow[p] += 1.0;
                answered[p] += f64::from(u8::from(ok(r)));
            }
            if &r.source == node && r.destination != SINK {
                assert!(dependencies.contains(&r.destination), "{r:?}");
                outflow[p] += 1.0;
            }
        }
        let seconds = |p: usize| match p {
            0 => (inc.onset_us - truth.start_us) as f64,
            1 => (inc.end_us - inc.onset_us) as f64,
            _ => (truth.end_us - inc.end_us - MINUTE) as f64,
        } / SECOND as f64;
        assert!(
            answered[0] / inflow[0] > 0.98,
            "{seed}: {answered:?} of {inflow:?}"
        );
        assert!(
            outflow[0] > inflow[0] * 0.5,
            "it calls its dependencies before"
        );
        // during: requests keep coming at a like rate, none answered, no call made
        let (before, during) = (inflow[0] / seconds(0), inflow[1] / seconds(1));
        assert!(
            during > 0.6 * before && during < 1.6 * before,
            "{before} {during}"
        );
        assert_eq!((answered[1], outflow[1]), (0.0, 0.0), "{seed}: {node}");
        // after: answers again
        assert!(answered[2] / inflow[2] > 0.98, "{answered:?} of {inflow:?}");
        assert!(outflow[2] > inflow[2] * 0.5);
    }
}

/// Calls per request from `service` at version `v` to each destination: (inflow, calls).
fn calls_per_request(
    records: &[FlowRecord],
    service: &str,
    version: &str,
) -> (f64, BTreeMap<String, f64>) {
    let mut inflow = 0.0;
    let mut calls = BTreeMap::new();
    for r in records {
        if r.destination == service && r.destination_version.as_deref() == Some(version) {
            inflow += 1.0;
        }
        if r.source == service
            && r.source_version.as_deref() == Some(version)
            && r.destination != SINK
        {
            *calls.entry(r.destination.clone()).or_insert(0.0) += 1.0;
        }
    }
    (inflow, calls)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn a_fan_out_version_calls_the_cache_factor_times_and_slows_it_benign_ones_change_nothing() {
    let (truth, records) = run(Scenario::DeployFanout, 3, 40, 0.3);
    let inc = &truth.incidents[0];
    let Subject::Version { service, version } = &inc.subject else {
        panic!("{:?}", inc.subject)
    };
    let Injected::DeployFanout {
        from_version,
        calls_after,
        added,
        removed,
        rollout_end_us,
        rollback_us,
        ..
    } = &inc.injected
    else {
        panic!()
    };
    let (old_in, old) = calls_per_request(&records, service, from_version);
    let (new_in, new) = calls_per_request(&records, service, version);
    assert!(new_in > 150.0, "{new_in}");
    let per = |calls: &BTreeMap<String, f64>, inflow: f64, d: &str| {
        calls.get(d).copied().unwrap_or(0.0) / inflow
    };
    // a few requests fail before calling anything or are shed: slightly under the factor
    let ratio = per(&new, new_in, "cache");
    assert!(
        ratio > calls_after - 0.1 && ratio <= *calls_after,
        "{ratio} vs {calls_after}"
    );
    assert!((per(&old, old_in, "cache") - 1.0).abs() < 0.05);
    for a in added {
        assert_eq!(per(&old, old_in, a), 0.0, "{a} is new");
        assert!(per(&new, new_in, a) > 0.1, "{a}");
    }
    for r in removed {
        assert!(per(&old, old_in, r) > 0.1, "{r}");
        assert_eq!(per(&new, new_in, r), 0.0, "{r} is gone");
    }
    // the cache slows while the new version runs everywhere
    let cache_p50 = |from: i64, to: i64| {
        median(
            records
                .iter()
                .filter(|r| r.destination == "cache" && (from..to).contains(&r.start_us))
                .map(|r| r.duration_us.unwrap() as f64)
                .collect(),
        )
    };
    let before = cache_p50(truth.start_us, inc.onset_us);
    let during = cache_p50(*rollout_end_us, *rollback_us);
    assert!(during > 1.5 * before, "cache p50 {before} µs → {during} µs");
    // benign deployments: per-destination calls per request unchanged
    for change in &truth.benign {
        let BenignChange::Deployment {
            service,
            from_version,
            to_version,
            ..
        } = change;
        let (old_in, old) = calls_per_request(&records, service, from_version);
        let (new_in, new) = calls_per_request(&records, service, to_version);
        assert_eq!(
            old.keys().collect::<Vec<_>>(),
            new.keys().collect::<Vec<_>>(),
            "{service}"
        );
        if new_in < 200.0 {
            continue;
        }
        for d in old.keys() {
            let (a, b) = (per(&old, old_in, d), per(&new, new_in, d));
            // a binomial's spread, four deviations
            let tolerance = 4.0 * (a.max(0.05) / new_in).sqrt() + 0.02;
            assert!((a - b).abs() < tolerance, "{service} -> {d}: {a} vs {b}");
        }
    }
}

#[test]
fn buffering_sources_flush_into_the_sink_together_after_its_outage() {
    let (truth, records) = run(Scenario::LoggingStorm, 2, 16, 0.5);
    let inc = &truth.incidents[0];
    let Subject::Sources {
        destination,
        sources,
    } = &inc.subject
    else {
        panic!("{:?}", inc.subject)
    };
    let Injected::LoggingStorm {
        recovery_us,
        not_buffering,
        ..
    } = &inc.injected
    else {
        panic!()
    };
    assert_eq!(destination, SINK);
    assert!(sources.len() >= 20, "{sources:?}");
    // 30 s buckets aligned on the recovery
    let bucket = |t: i64| (t - recovery_us).div_euclid(30 * SECOND);
    let mut counts: BTreeMap<&str, BTreeMap<i64, f64>> = BTreeMap::new();
    let (mut down, mut down_failed) = (0, 0);
    for r in records.iter().filter(|r| r.destination == SINK) {
        *counts
            .entry(&r.source)
            .or_default()
            .entry(bucket(r.start_us))
            .or_default() += 1.0;
        if (inc.onset_us..*recovery_us).contains(&r.start_us) {
            down += 1;
            down_failed += usize::from(!ok(r));
        }
    }
    assert!(
        down > 100 && down_failed == down,
        "{down_failed} of {down} failed while down"
    );
    let first = bucket(truth.start_us);
    let onset = bucket(inc.onset_us);
    let spiked = |s: &str| {
        let c = &counts[s];
        let usual = median(
            (first..onset)
                .map(|b| c.get(&b).copied().unwrap_or(0.0))
                .collect(),
        );
        c.get(&0).copied().unwrap_or(0.0) >= 3.0 * usual.max(1.0)
    };
    let flushed = sources.iter().filter(|s| spiked(s)).count();
    assert!(
        flushed * 10 >= sources.len() * 9,
        "{flushed} of {}",
        sources.len()
    );
    for s in not_buffering {
        assert!(!spiked(s), "{s} does not buffer");
    }
}

#[test]
fn cross_room_calls_come_only_from_the_listed_clients_during_the_incident() {
    let (truth, records) = run(Scenario::SegmentationDos, 6, 20, 0.1);
    let inc = &truth.incidents[0];
    let Subject::Sources {
        destination: room,
        sources,
    } = &inc.subject
    else {
        panic!("{:?}", inc.subject)
    };
    let Injected::SegmentationDos {
        relays, rate_rps, ..
    } = &inc.injected
    else {
        panic!()
    };
    let segment = |name: &str| name.split('-').next().unwrap().to_owned();
    let mut crossing = BTreeMap::new();
    let mut victims = [0.0, 0.0]; // relay calls from their own room: before, during
    let mut victims_failed = [0.0, 0.0];
    for r in &records {
        if r.source.starts_with("room") && r.destination.starts_with("room") {
            if segment(&r.source) != segment(&r.destination) {
                assert!(
                    (inc.onset_us..inc.end_us).contains(&r.start_us),
                    "cross-room call outside the incident: {r:?}"
                );
                assert!(sources.contains(&r.source) && relays.contains(&r.destination));
                assert_eq!(&segment(&r.destination), room);
                *crossing.entry(r.source.clone()).or_insert(0.0) += 1.0;
            } else if &segment(&r.destination) == room && r.start_us < inc.end_us {
                let p = usize::from(r.start_us >= inc.onset_us);
                victims[p] += 1.0;
                victims_failed[p] += f64::from(u8::from(!ok(r)));
            }
        }
    }
    let seconds = (inc.end_us - inc.onset_us) as f64 / SECOND as f64;
    assert_eq!(crossing.len(), sources.len());
    for (s, n) in &crossing {
        let rate = n / seconds;
        assert!(
            (rate / rate_rps - 1.0).abs() < 0.2,
            "{s}: {rate} req/s, {rate_rps}"
        );
    }
    // the attacked room's own clients suffer
    assert!(victims_failed[0] / victims[0] < 0.01);
    assert!(
        victims_failed[1] / victims[1] > 0.1,
        "{victims_failed:?} of {victims:?}"
    );
}

#[test]
fn one_pairs_calls_cross_zones_during_the_incident_and_only_fail_over_otherwise() {
    let (truth, records) = run(Scenario::CrossZone, 8, 24, 1.0);
    let inc = &truth.incidents[0];
    let Subject::ZonePair {
        source,
        destination,
        source_zone,
        destination_zone,
    } = &inc.subject
    else {
        panic!("{:?}", inc.subject)
    };
    let Injected::CrossZone { share } = inc.injected else {
        panic!()
    };
    let allowed: BTreeSet<(&str, &str, &str, &str)> = FAIL_OVER
        .iter()
        .map(|&(s, d, sz, dz, _)| (s, d, sz, dz))
        .collect();
    let (mut pair, mut crossed) = ([0.0; 2], [0.0; 2]);
    for r in &records {
        let (sz, dz) = (
            r.source_zone.as_deref().unwrap(),
            r.destination_zone.as_deref().unwrap(),
        );
        let during = (inc.onset_us..inc.end_us).contains(&r.start_us);
        if &r.source == source && &r.destination == destination && sz == source_zone {
            pair[usize::from(during)] += 1.0;
            if dz != sz {
                assert_eq!(dz, destination_zone);
                assert!(during, "{r:?}");
                crossed[1] += 1.0;
            }
        } else if sz != dz {
            let key = (r.source.as_str(), r.destination.as_str(), sz, dz);
            assert!(allowed.contains(&key), "{key:?} crosses zones");
        }
    }
    assert!(pair[1] > 100.0, "{pair:?}");
    // a binomial's spread, four deviations
    let tolerance = 4.0 * (share * (1.0 - share) / pair[1]).sqrt();
    assert!(
        (crossed[1] / pair[1] - share).abs() < tolerance,
        "{crossed:?} of {pair:?}, {share}"
    );
}

#[test]
fn a_clean_day_follows_the_daily_curve_on_the_fixed_call_graph() {
    let (truth, records) = run(Scenario::Clean, 9, 24 * 60, 0.01);
    assert!(truth.incidents.is_empty());
    let land = Landscape::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for (s, calls) in land.calls.iter().enumerate() {
        for c in &calls[0] {
            for &(t, _) in &c.to {
                edges.insert((land.services[s].name.clone(), land.services[t].name.clone()));
            }
        }
        edges.insert((land.services[s].name.clone(), SINK.into()));
    }
    let mut hours = [0f64; 24];
    for r in &records {
        assert!(
            edges.contains(&(r.source.clone(), r.destination.clone())),
            "{r:?}"
        );
        hours[((r.start_us - truth.start_us) / (3600 * SECOND)) as usize] += 1.0;
    }
    let (low, high) = (
        (0..24)
            .min_by(|&a, &b| hours[a].total_cmp(&hours[b]))
            .unwrap(),
        (0..24)
            .max_by(|&a, &b| hours[a].total_cmp(&hours[b]))
            .unwrap(),
    );
    // lowest around 04:00 UTC, highest around 16:00 (slow swings move them an hour or two)
    assert!(
        (1..=7).contains(&low) && (13..=19).contains(&high),
        "{hours:?}"
    );
    assert!(hours[high] > 2.0 * hours[low], "{hours:?}");
}

/// Writes `records` in `format`, parses the lines with the real parser and the mapping of
/// `deploy/examples/simulate.toml`.
fn read_back(format: OutputFormat, records: &[FlowRecord]) -> Vec<FlowRecord> {
    let path = root().join("deploy/examples/simulate.toml");
    let mapping = graywatch::config::Config::load(Some(&path))
        .unwrap()
        .validate(Some(&path))
        .unwrap()
        .mapping;
    let mut parser = format
        .parser()
        .parse::<ingest::Format>()
        .unwrap()
        .parser(&mapping)
        .unwrap();
    let writer = LineWriter::new(format);
    let mut out = schemas::FlowBatchBuilder::new();
    for r in records {
        let mut line = Vec::new();
        writer.write(r, &mut line);
        line.pop(); // the newline
        parser
            .parse_line(&line, &mut out)
            .unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(&line)));
    }
    schemas::flow_records(&out.finish()).unwrap()
}

#[test]
fn envoy_and_istio_lines_read_back_as_the_same_records() {
    let (_, mut records) = run(Scenario::BlackHole, 2, 12, 0.05);
    let (_, storm) = run(Scenario::LoggingStorm, 2, 12, 0.05);
    records.extend(storm);
    let flags: BTreeSet<_> = records
        .iter()
        .filter_map(|r| r.response_flags.clone())
        .collect();
    assert!(flags.contains("UT") && flags.contains("UF"), "{flags:?}");
    for format in [OutputFormat::Envoy, OutputFormat::Istio] {
        let back = read_back(format, &records);
        assert_eq!(back.len(), records.len());
        for (want, got) in records.iter().zip(&back) {
            let mut want = want.clone();
            want.reporter = got.reporter;
            if format == OutputFormat::Istio {
                // Istio's default format: start and duration in whole ms
                want.start_us = want.start_us / 1000 * 1000;
                want.duration_us = want.duration_us.map(|d| d / 1000 * 1000);
            }
            assert_eq!(&want, got, "{format}");
        }
    }
}

#[test]
fn the_example_config_holds_the_landscape_mapping() {
    let path = root().join("deploy/examples/simulate.toml");
    let example = graywatch::config::Config::load(Some(&path)).unwrap();
    let generated: graywatch::config::Config =
        toml::from_str(&Landscape::new().mapping_rules()).unwrap();
    let rules = |c: &graywatch::config::Config| format!("{:?}", c.mapping.rules);
    assert_eq!(rules(&example), rules(&generated));
}

#[test]
fn the_command_writes_records_truth_and_mapping() {
    let (dir, out) = temp_path("sim.log");
    let (truth, mapping) = (
        dir.path().join("truth.json"),
        dir.path().join("mapping.toml"),
    );
    let args = |o: &str| {
        vec![
            "simulate",
            "--scenario",
            "black-hole",
            "--seed",
            "3",
            "--duration",
            "10min",
            "--scale",
            "0.05",
            "--start",
            "2026-02-01T12:00:00Z",
            "--format",
            "istio",
            "--out",
            o,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let mut to_file = args(out.to_str().unwrap());
    to_file.extend([
        "--truth".into(),
        truth.to_str().unwrap().into(),
        "--mapping".into(),
        mapping.to_str().unwrap().into(),
    ]);
    let o = graywatch(&to_file.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("incident: black-hole on node"), "{stderr}");
    let file = std::fs::read(&out).unwrap();
    let o = graywatch(&args("-").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.stdout, file, "stdout and file get the same bytes");
    let t: Truth = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    assert_eq!(t.start_us, 1_769_947_200 * SECOND);
    assert_eq!((t.end_us - t.start_us, t.seed), (10 * MINUTE, 3));
    let lines = file.iter().filter(|&&b| b == b'\n').count();
    let (docs, stderr) = graywatch_ok(&[
        "parse",
        "--format",
        "istio",
        "--config",
        mapping.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(stderr.contains("rejected  0"), "{stderr}");
    assert_eq!(docs.len(), lines);
    assert!(
        docs.iter()
            .all(|d| d["source"] != "unknown" && d["destination_zone"].is_string())
    );

    let o = graywatch(&["simulate", "--scenario", "brown-out"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("brown-out"));
    let o = graywatch(&["simulate", "--scenario", "cross-zone", "--duration", "5min"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("too short for cross-zone"));
    let help = graywatch(&["simulate", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--scenario",
        "--seed",
        "--duration",
        "--start",
        "--scale",
        "--format",
        "--out",
        "--truth",
        "--mapping",
    ] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
}
