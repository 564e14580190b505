//! Tests of the [`Actuator`] as a whole: a command's life (issue, renew, revoke, expire), the
//! rails, approval, signing, the documents against their JSON Schemas (`schemas/json/`), and
//! properties over random window sequences.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use schemas::{
    AlertAction, AuditRecord, Caller, CommandAction, Decision, Finding, Mode, PairWindow,
    Parameters, RemediationCommand, SCHEMA_VERSION, Severity, Signature, Subject, Target, Window,
};

use super::*;
use crate::sign::{Keys, Verify};

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
        score: 0.999,
        confidence: schemas::Confidence::Normal,
        related: Vec::new(),
        rule: None,
    }
}

fn deploy(service: &str, version: &str, i: i64) -> Finding {
    let mut f = black_hole(service, i, &[]);
    f.signature = Signature::DeployRegression;
    f.subject = Subject::Version {
        service: service.into(),
        version: version.into(),
    };
    f.id = format!(
        "deploy-regression/{}/{}",
        f.subject.key(),
        window(i).start_us
    );
    f.summary = format!("{service} {version} slowed its callers");
    f
}

/// A pair window of `requests` requests.
fn pair(source: &str, destination: &str, requests: u64) -> PairWindow {
    let mut p: PairWindow = serde_json::from_value(serde_json::json!({
        "schema_version": 1, "kind": "pair-window",
        "window": {"start_us": T0, "end_us": T0 + W},
        "source": source, "destination": destination,
        "requests": requests, "rate_rps": requests as f64 / 10.0, "errors": 0, "error_ratio": 0.0,
        "latency": null, "concurrency_mean": 0.0, "concurrency_peak": 0,
        "bytes_in": 0, "bytes_out": 0, "bandwidth_in_bps": 0.0, "bandwidth_out_bps": 0.0
    }))
    .unwrap_or_else(|e| panic!("pair window fixture: {e}"));
    p.kind = Cow::Borrowed("pair-window");
    p
}

fn decisions(audit: &[AuditRecord]) -> Vec<(Decision, &str, u32)> {
    audit
        .iter()
        .map(|a| (a.decision, a.command.as_str(), a.revision))
        .collect()
}

fn config(toml_text: &str) -> ActuateConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
}

fn validator(file: &str) -> jsonschema::Validator {
    let path = format!("{}/../schemas/json/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    jsonschema::draft202012::new(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[test]
fn invalid_config_is_an_error_naming_the_key() {
    for (text, want) in [
        (
            "[[policy]]\nsignature = \"black-hole\"\npattern = \"backpressure\"\nrate-fraction = 0.0\n",
            "policy[0].rate-fraction = 0: must be greater than 0 and at most 1",
        ),
        (
            "[[policy]]\nsignature = \"black-hole\"\npattern = \"backpressure\"\nttl = \"0s\"\n",
            "policy[0].ttl = 0ns: must be at least 1µs and at most 292 years",
        ),
        (
            "approval = true\n",
            "approval = true: approves enforcement: set mode = \"enforce\" too",
        ),
        (
            "[rails]\nmax-active = 0\n",
            "rails.max-active = 0: must be at least 1",
        ),
        (
            "[[policy]]\nsignature = \"black-hole\"\nrule = \"x\"\npattern = \"backpressure\"\n",
            "policy[0].rule = \"x\": names a user rule: only with signature = \"rule\"",
        ),
        (
            "[[policy]]\nsignature = \"black-hole\"\nsubject = \"catalog\"\npattern = \"backpressure\"\n",
            "policy[0].subject = \"catalog\": matches no black-hole finding backpressure acts on, \
             whose subject keys read node/<service> (did you mean \"node/catalog\"?)",
        ),
        (
            "[[policy]]\nsignature = \"rule\"\nsubject = \"node/*\"\npattern = \"quarantine\"\n",
            "policy[0].subject = \"node/*\": matches no rule finding quarantine acts on, whose \
             subject keys read version/<service>/<version>",
        ),
        (
            "[[policy]]\nsignature = \"black-hole\"\npattern = \"segmentation\"\n",
            "policy[0].pattern = \"segmentation\": acts on pair or sources subjects, and \
             black-hole findings are about node: the rule could never act",
        ),
        (
            "[[policy]]\nsignature = \"segmentation-violation\"\nsubject = \"node/*\"\n\
             pattern = \"segmentation\"\n",
            "policy[0].subject = \"node/*\": matches no segmentation-violation finding \
             segmentation acts on, whose subject keys read pair/<source>/<destination> or \
             sources/<destination>",
        ),
    ] {
        let e = Actuator::try_from(config(text)).unwrap_err().to_string();
        assert_eq!(e, want, "{text}");
    }
}

/// A subject glob is checked against the shapes of the signature's subject keys: one that
/// can match none is a config error, one that can match some is taken.
#[test]
fn subject_globs_that_can_match_are_taken() {
    for (signature, glob, ok) in [
        (Signature::BlackHole, "*", true),
        (Signature::BlackHole, "n*", true),
        (Signature::BlackHole, "node/", false),
        (Signature::BlackHole, "node/pay*", true),
        (Signature::BlackHole, "nodes/pay*", false),
        (Signature::BlackHole, "?ode/pay", true),
        (Signature::CrossZone, "zones/zone-a/*", true),
        (Signature::CrossZone, "pair/*", false),
        (Signature::SpreadingDegradation, "landscape", true),
        (Signature::SpreadingDegradation, "land*", true),
        (Signature::SpreadingDegradation, "landscape/x", false),
        (Signature::Rule, "version/pricing/*", true),
        (Signature::Rule, "sources/*", false),
        // keys of the wrong shape: too few segments, or too short
        (Signature::DeployRegression, "version/cart", false),
        (Signature::DeployRegression, "version/cart/*", true),
        (Signature::DeployRegression, "version/*", true),
        (Signature::LatencyShift, "pair/web", false),
        (Signature::LatencyShift, "pair/web/?*", true),
        (Signature::CrossZone, "zones/zone-a/zone-b", false),
        (Signature::CrossZone, "zones/zone-a/zone-b/*/*", true),
        (Signature::CrossZone, "zones/a/b/c/d/e/f", true), // names may hold a /
        (Signature::BlackHole, "node?", false),
        (Signature::BlackHole, "nod?", false),
        (Signature::BlackHole, "node/a/b", true),
        (Signature::BlackHole, "node?x", true),
    ] {
        assert_eq!(
            super::can_match(glob, signature.subject_kinds()),
            ok,
            "{signature} {glob}"
        );
    }
}

#[test]
fn a_black_hole_episode_issue_renew_revoke() {
    // TTL 60 s: renewed once half of it is gone, while the incident goes on
    let mut actuator = Actuator::try_from(config(
        "mode = \"enforce\"\n[[policy]]\nsignature = \"black-hole\"\npattern = \"backpressure\"\n\
         rate-fraction = 0.2\nttl = \"1m\"\n",
    ))
    .unwrap();
    let callers = [("frontend", 50.0, 40.0)];
    let a = actuator.on_window(window(0), &[black_hole("catalog", 0, &callers)], &[]);
    let c = &a.commands[0];
    let id = "backpressure/node/catalog/1674982210000000";
    assert_eq!(
        (c.id.as_str(), c.action, c.revision),
        (id, CommandAction::Issue, 0)
    );
    assert_eq!(c.mode, Mode::Enforce);
    let Parameters::Backpressure(p) = &c.parameters else {
        panic!("{c:?}")
    };
    assert_eq!(p.rate_limit_rps["frontend"], 8.0); // 0.2 × 40 req/s
    assert_eq!(
        (c.issued_at_us, c.expires_at_us),
        (T0 + W, T0 + W + 60_000_000)
    );
    assert_eq!(c.reason.incident, "black-hole/node/catalog");
    assert_eq!(decisions(&a.audit), [(Decision::Issued, id, 0)]);

    // windows 1 and 2 (ends T0 + 30 s): less than half the TTL gone → nothing
    for i in 1..3 {
        let a = actuator.on_window(window(i), &[black_hole("catalog", i, &callers)], &[]);
        assert!(a.commands.is_empty(), "window {i}: {a:?}");
    }
    // window 3 ends at T0 + 40 s: 30 s of 60 gone → renewed for 60 s from now
    let a = actuator.on_window(window(3), &[black_hole("catalog", 3, &callers)], &[]);
    let c = &a.commands[0];
    assert_eq!((c.action, c.revision), (CommandAction::Renew, 1));
    assert_eq!(c.expires_at_us, T0 + 4 * W + 60_000_000);
    assert_eq!(c.reason.finding, "black-hole/node/catalog/1674982230000000");

    // a new caller: renewed at once with both (the first keeps its limit)
    let a = actuator.on_window(
        window(4),
        &[black_hole(
            "catalog",
            4,
            &[("frontend", 50.0, 100.0), ("batch", 5.0, 5.0)],
        )],
        &[],
    );
    let c = &a.commands[0];
    assert_eq!((c.action, c.revision), (CommandAction::Renew, 2));
    assert_eq!(c.target.sources, ["batch", "frontend"]);
    let Parameters::Backpressure(p) = &c.parameters else {
        panic!("{c:?}")
    };
    assert_eq!(p.rate_limit_rps["frontend"], 8.0);
    assert_eq!(p.rate_limit_rps["batch"], 1.0);

    // three quiet windows resolve the incident: the command is revoked in the third
    assert!(actuator.on_window(window(5), &[], &[]).is_empty());
    assert!(actuator.on_window(window(6), &[], &[]).is_empty());
    let a = actuator.on_window(window(7), &[], &[]);
    let c = &a.commands[0];
    assert_eq!(
        (c.action, c.revision, c.ttl_us),
        (CommandAction::Revoke, 3, 0)
    );
    assert_eq!(c.expires_at_us, T0 + 8 * W);
    assert_eq!(a.alerts[0].action, AlertAction::Resolve);
    assert_eq!(decisions(&a.audit), [(Decision::Revoked, id, 3)]);
    assert!(actuator.state().active.is_empty());
}

#[test]
fn commands_expire_as_event_time_passes_without_records() {
    let mut actuator = Actuator::try_from(config(
        "[[policy]]\nsignature = \"deploy-regression\"\npattern = \"quarantine\"\nttl = \"30s\"\n\
         [alerts]\nresolve-after-windows = 1000\n",
    ))
    .unwrap();
    let a = actuator.on_window(window(0), &[deploy("pricing", "v2.6.0", 0)], &[]);
    let c = &a.commands[0];
    assert_eq!(c.id, "quarantine/version/pricing/v2.6.0/1674982210000000");
    assert_eq!(c.target.version.as_deref(), Some("v2.6.0"));
    assert_eq!(c.mode, Mode::DryRun, "dry-run is the default");
    // every input idle: the driver advances event time; at T0 + 39 s it is still in force
    assert!(actuator.advance(T0 + W + 29_000_000).is_empty());
    let a = actuator.advance(T0 + W + 30_000_000);
    assert_eq!(
        decisions(&a.audit),
        [(
            Decision::Expired,
            "quarantine/version/pricing/v2.6.0/1674982210000000",
            0
        )]
    );
    assert!(a.commands.is_empty(), "an expiry needs no message");
    // the same incident asks again later: a new command, a new id
    let a = actuator.on_window(window(5), &[deploy("pricing", "v2.6.0", 5)], &[]);
    assert_eq!(
        a.commands[0].id,
        "quarantine/version/pricing/v2.6.0/1674982260000000"
    );
}

#[test]
fn a_rule_with_min_severity_waits_for_its_incident_to_turn_critical() {
    let warned = |i| {
        let mut f = deploy("pricing", "v2.6.0", i);
        f.severity = Severity::Warning;
        f
    };
    // the default policy, and the same written out
    for text in [
        "",
        "[[policy]]\nsignature = \"deploy-regression\"\nmin-severity = \"critical\"\n\
         pattern = \"quarantine\"\n",
    ] {
        let mut actuator = Actuator::try_from(config(text)).unwrap();
        let a = actuator.on_window(window(0), &[warned(0)], &[]);
        assert!(a.commands.is_empty(), "{text:?}: {:?}", a.commands);
        assert_eq!(a.alerts.len(), 1, "the warning is alerted");
        assert_eq!(a.alerts[0].severity, Severity::Warning);
        let a = actuator.on_window(window(1), &[deploy("pricing", "v2.6.0", 1)], &[]);
        assert_eq!(a.commands.len(), 1, "{text:?}");
        assert_eq!(
            a.commands[0].id,
            "quarantine/version/pricing/v2.6.0/1674982220000000"
        );
        assert_eq!(a.alerts[0].severity, Severity::Critical);
    }
    // a rule written without min-severity waits for critical too (the default for
    // deploy-regression); its incident's later warnings renew the command
    let mut actuator = Actuator::try_from(config(
        "[[policy]]\nsignature = \"deploy-regression\"\npattern = \"quarantine\"\nttl = \"20s\"\n",
    ))
    .unwrap();
    assert!(
        actuator
            .on_window(window(0), &[warned(0)], &[])
            .commands
            .is_empty()
    );
    let a = actuator.on_window(window(1), &[deploy("pricing", "v2.6.0", 1)], &[]);
    assert_eq!(a.commands.len(), 1);
    // at half its TTL, a warning of the incident renews it
    let a = actuator.on_window(window(2), &[warned(2)], &[]);
    assert_eq!(
        decisions(&a.audit),
        [(
            Decision::Renewed,
            "quarantine/version/pricing/v2.6.0/1674982220000000",
            1
        )]
    );
    // min-severity = "warning" acts on warnings
    let mut actuator = Actuator::try_from(config(
        "[[policy]]\nsignature = \"deploy-regression\"\nmin-severity = \"warning\"\n\
         pattern = \"quarantine\"\n",
    ))
    .unwrap();
    assert_eq!(
        actuator
            .on_window(window(0), &[warned(0)], &[])
            .commands
            .len(),
        1
    );
}

#[test]
fn rails_refuse_and_say_which_once_per_incident() {
    let mut actuator = Actuator::try_from(config(
        "[rails]\nmax-active = 2\nmax-new-per-minute = 10\nmax-blast-radius = 0.25\n\
         protected = [\"payment\"]\n",
    ))
    .unwrap();
    // traffic: web → a, b, c 300 requests each, web → payment 100; web's limit to each is
    // half its baseline 30 req/s: 150 requests of a window, so a command may change 150 of each
    // pair's 300
    let pairs = [
        pair("web", "a", 300),
        pair("web", "b", 300),
        pair("web", "c", 300),
        pair("web", "payment", 100),
    ];
    let hole = |n: &str, i| black_hole(n, i, &[("web", 30.0, 30.0)]);
    let a = actuator.on_window(window(0), &[hole("payment", 0), hole("a", 0)], &pairs);
    assert_eq!(a.commands.len(), 1);
    assert_eq!(a.commands[0].target.destinations, ["a"]);
    assert_eq!(a.audit[0].decision, Decision::Suppressed);
    assert_eq!(a.audit[0].rail.as_deref(), Some("protected"));
    assert_eq!(a.audit[1].decision, Decision::Issued);
    // with b, 300 of 1000 requests could change: more than the 25 % allowed
    let a = actuator.on_window(window(1), &[hole("payment", 1), hole("b", 1)], &pairs);
    assert!(a.commands.is_empty());
    assert_eq!(
        a.audit.len(),
        1,
        "payment's refusal is not audited again: {a:?}"
    );
    assert_eq!(a.audit[0].rail.as_deref(), Some("blast-radius"));
    assert!(
        a.audit[0].detail.contains("30.00 %"),
        "{}",
        a.audit[0].detail
    );
    // without traffic numbers b passes; c then finds two commands in force
    let a = actuator.on_window(window(2), &[hole("b", 2), hole("c", 2)], &[]);
    assert_eq!(a.commands.len(), 1);
    assert_eq!(a.audit[1].rail.as_deref(), Some("max-active"));
}

/// A storm's callers send several times their baseline rate: the backpressure that stops it
/// takes from their normal traffic only `baseline − limit`, and that is what the blast radius
/// counts, not the excess the limit sheds (logging-storm seed 3 was refused at 36.8 %).
#[test]
fn a_storms_backpressure_counts_only_what_it_takes_from_normal_traffic() {
    let mut actuator = Actuator::try_from(config("[rails]\nmax-blast-radius = 0.1\n")).unwrap();
    // web and mobile burst at 3× their baselines of 10 req/s toward the collector: 300
    // requests each in the window; the rest of the landscape sends 1400
    let pairs = [
        pair("web", "collector", 300),
        pair("mobile", "collector", 300),
        pair("web", "shop", 1400),
    ];
    let mut storm = black_hole(
        "collector",
        0,
        &[("web", 30.0, 10.0), ("mobile", 30.0, 10.0)],
    );
    storm.signature = Signature::SynchronizedBurst;
    storm.subject = Subject::Sources {
        destination: "collector".into(),
        sources: vec!["mobile".into(), "web".into()],
    };
    storm.id = format!("synchronized-burst/{}/{T0}", storm.subject.key());
    // each limited to 5 req/s (50 requests): 100 − 50 of its normal 100 requests each, 100 of
    // 2000 = 5 %; counting the shed excess would be 500 of 2000 = 25 % and refused
    let a = actuator.on_window(window(0), &[storm], &pairs);
    assert_eq!(
        decisions(&a.audit),
        [(
            Decision::Issued,
            "backpressure/sources/collector/1674982210000000",
            0
        )],
        "{a:?}"
    );
    let reach = |baselines: &BTreeMap<String, f64>, signature| {
        rails::blast_radius(
            std::iter::once(rails::Reach {
                target: &a.commands[0].target,
                parameters: &a.commands[0].parameters,
                signature,
                baseline_rps: baselines,
            }),
            &pairs,
        )
    };
    let known = BTreeMap::from([("mobile".to_owned(), 10.0), ("web".to_owned(), 10.0)]);
    let storm = Signature::SynchronizedBurst;
    assert!((reach(&known, storm) - 0.05).abs() < 1e-12);
    assert!((reach(&BTreeMap::new(), storm) - 0.25).abs() < 1e-12);
    // a rate spike may be a flash crowd of real users: all it sheds counts
    assert!((reach(&known, Signature::RateSpike) - 0.25).abs() < 1e-12);
}

/// Commands that overlap on a pair: backpressure counts with the lowest limit in force on the
/// caller (what enforcement points apply), against the caller's normal traffic when a storm's
/// command says the rest is the storm; a segmentation counts nothing only when it answers a segmentation violation or a
/// fan-in surge (it denies new or forbidden edges), else all the pair's requests.
#[test]
fn overlapping_commands_count_as_enforcement_points_apply_them() {
    let pairs = [pair("web", "cache", 100), pair("api", "shop", 900)];
    let target = Target {
        sources: vec!["web".into()],
        destinations: vec!["cache".into()],
        ..Target::default()
    };
    let bp = |rps: f64| {
        Parameters::Backpressure(schemas::BackpressureParameters {
            rate_limit_rps: BTreeMap::from([("web".to_owned(), rps)]),
        })
    };
    let (hole, storm) = (bp(1.0), bp(2.0));
    let (hole_base, storm_base) = (
        BTreeMap::from([("web".to_owned(), 2.0)]),
        BTreeMap::from([("web".to_owned(), 8.0)]),
    );
    let reach = |parameters, signature, baseline_rps| rails::Reach {
        target: &target,
        parameters,
        signature,
        baseline_rps,
    };
    let both = [
        reach(&hole, Signature::BlackHole, &hole_base),
        reach(&storm, Signature::SynchronizedBurst, &storm_base),
    ];
    // the lowest limit, 1 req/s (10 requests), against the storm's normal 80 of the 100
    assert_eq!(rails::affected(both.iter().copied(), &pairs[0]), 70.0);
    assert!((rails::blast_radius(both.iter().copied(), &pairs) - 0.07).abs() < 1e-12);
    let deny = Parameters::Segmentation(schemas::SegmentationParameters { status: 403 });
    let none = BTreeMap::new();
    let breach = [reach(&deny, Signature::SegmentationViolation, &none)];
    assert_eq!(rails::affected(breach.iter().copied(), &pairs[0]), 0.0);
    let slow = [reach(&deny, Signature::LatencyShift, &none)];
    assert_eq!(rails::affected(slow.iter().copied(), &pairs[0]), 100.0);
    // a pair a breach's segmentation denies counts as it does: the black hole's backpressure
    // on the same edge has nothing left to change (segmentation-dos seed 1 refused it)
    let denied_too = [
        reach(&hole, Signature::BlackHole, &hole_base),
        reach(&deny, Signature::SegmentationViolation, &none),
    ];
    assert_eq!(rails::affected(denied_too.iter().copied(), &pairs[0]), 0.0);
}

/// Scaled out over 4 judges, each gets a quarter of the counts and half the blast radius
/// over what it sees; the judges together stay within the configured rails.
#[test]
fn scaled_out_judges_share_the_rails() {
    let text = "[rails]\nmax-active = 10\nmax-new-per-minute = 4\nmax-blast-radius = 0.3\n";
    let mut judge = Actuator::try_from(config(text)).unwrap();
    judge.share_rails(4);
    let r = judge.rails();
    assert_eq!((r.max_active, r.max_new_per_minute), (2, 1));
    assert!((r.max_blast_radius - 0.15).abs() < 1e-12);
    // one judge: the rails as configured
    let mut alone = Actuator::try_from(config(text)).unwrap();
    alone.share_rails(1);
    assert_eq!(alone.rails().max_active, 10);
    // its second command in the same minute is refused: the other judges may issue theirs
    let holes: Vec<Finding> = ["n1", "n2"]
        .iter()
        .map(|n| black_hole(n, 0, &[("web", 10.0, 10.0)]))
        .collect();
    let a = judge.on_window(window(0), &holes, &[]);
    assert_eq!(a.commands.len(), 1);
    assert_eq!(a.audit[1].rail.as_deref(), Some("max-new-per-minute"));
}

#[test]
fn at_most_so_many_new_commands_a_minute() {
    let mut actuator = Actuator::try_from(config("[rails]\nmax-new-per-minute = 2\n")).unwrap();
    let holes = |i| {
        ["n1", "n2", "n3"]
            .map(|n| black_hole(n, i, &[("web", 10.0, 10.0)]))
            .to_vec()
    };
    let a = actuator.on_window(window(0), &holes(0), &[]);
    assert_eq!(a.commands.len(), 2);
    assert_eq!(a.audit[2].rail.as_deref(), Some("max-new-per-minute"));
    // a minute after the first issues (window 6 ends at T0 + 70 s) n3 gets its command
    for i in 1..6 {
        assert!(
            actuator
                .on_window(window(i), &holes(i), &[])
                .commands
                .is_empty()
        );
    }
    let a = actuator.on_window(window(6), &holes(6), &[]);
    assert_eq!(a.commands.len(), 1);
    assert_eq!(a.commands[0].target.destinations, ["n3"]);
}

#[test]
fn approval_mode_proposes_then_enforces_what_is_approved() {
    let mut actuator = Actuator::try_from(config("mode = \"enforce\"\napproval = true\n")).unwrap();
    let a = actuator.on_window(window(0), &[deploy("pricing", "v2.6.0", 0)], &[]);
    let c = &a.commands[0];
    assert_eq!(c.mode, Mode::Proposed);
    assert_eq!(a.audit[0].decision, Decision::Proposed);
    let id = c.id.clone();
    let e = actuator
        .approve("quarantine/version/x/1", None, T0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no command quarantine/version/x/1 is in force (revoked, expired, or never issued)"
    );
    let e = actuator.approve(&id, Some(3), T0 + 15_000_000).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("command {id} is proposed at revision 0, not 3: look at revision 0 and approve it")
    );
    let a = actuator.approve(&id, Some(0), T0 + 15_000_000).unwrap();
    let c = &a.commands[0];
    assert_eq!(
        (c.action, c.revision, c.mode),
        (CommandAction::Issue, 1, Mode::Enforce)
    );
    assert_eq!(c.expires_at_us, T0 + 15_000_000 + 300_000_000);
    assert_eq!(decisions(&a.audit), [(Decision::Approved, id.as_str(), 1)]);
    let e = actuator.approve(&id, None, T0 + 16_000_000).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("command {id} is enforce, not proposed")
    );
}

/// An incident that resolves and opens again within a TTL (it flapped) gets its command back
/// under the same id and the next revision; an operator's approval stands for a remedy that
/// asks for no more than the approved one, and a wider one is proposed again.
#[test]
fn a_flapping_incident_gets_its_command_back_under_the_same_id() {
    let mut actuator = Actuator::try_from(config(
        "mode = \"enforce\"\napproval = true\n[alerts]\nresolve-after-windows = 2\n",
    ))
    .unwrap();
    let hole = |i, callers: &[(&str, f64, f64)]| black_hole("catalog", i, callers);
    let a = actuator.on_window(window(0), &[hole(0, &[("web", 10.0, 10.0)])], &[]);
    let id = a.commands[0].id.clone();
    assert_eq!(a.commands[0].mode, Mode::Proposed);
    actuator.approve(&id, None, T0 + 15_000_000).unwrap();
    // two quiet windows: resolved, revoked (revision 2)
    assert!(actuator.on_window(window(1), &[], &[]).commands.is_empty());
    let a = actuator.on_window(window(2), &[], &[]);
    assert_eq!(
        (a.commands[0].action, a.commands[0].revision),
        (CommandAction::Revoke, 2)
    );
    // it opens again: the approved command comes back, enforced, without a new approval
    let a = actuator.on_window(window(3), &[hole(3, &[("web", 9.0, 9.5)])], &[]);
    let c = &a.commands[0];
    assert_eq!(
        (c.id.as_str(), c.action, c.revision, c.mode),
        (id.as_str(), CommandAction::Issue, 3, Mode::Enforce)
    );
    let Parameters::Backpressure(p) = &c.parameters else {
        unreachable!()
    };
    assert_eq!(p.rate_limit_rps["web"], 5.0, "the approved limit, not 4.75");
    assert_eq!(decisions(&a.audit), [(Decision::Issued, id.as_str(), 3)]);
    assert!(
        a.audit[0]
            .detail
            .ends_with("the operator's approval stands")
    );
    // it flaps again, now with a caller the operator never approved: proposed, same id
    actuator.on_window(window(4), &[], &[]);
    let a = actuator.on_window(window(5), &[], &[]);
    assert_eq!(a.commands[0].revision, 4);
    let a = actuator.on_window(
        window(6),
        &[hole(6, &[("web", 10.0, 10.0), ("mobile", 4.0, 4.0)])],
        &[],
    );
    let c = &a.commands[0];
    assert_eq!(
        (c.id.as_str(), c.revision, c.mode),
        (id.as_str(), 5, Mode::Proposed)
    );
    assert_eq!(decisions(&a.audit), [(Decision::Proposed, id.as_str(), 5)]);
    // resolved again; a TTL (5 min) after that revoke the subject gets a new command
    actuator.on_window(window(7), &[], &[]);
    let a = actuator.on_window(window(8), &[], &[]);
    assert_eq!(a.commands[0].action, CommandAction::Revoke);
    assert_eq!(actuator.state().revoked.len(), 1);
    let a = actuator.on_window(window(39), &[hole(39, &[("web", 10.0, 10.0)])], &[]);
    assert_eq!(
        (a.commands[0].id.as_str(), a.commands[0].revision),
        ("backpressure/node/catalog/1674982600000000", 0)
    );
    assert!(actuator.state().revoked.is_empty());
}

/// With approval, what an operator approved is what may be enforced: a renewal that widens
/// an approved command (a new caller) goes out proposed again, and its next approval names
/// the new revision.
#[test]
fn a_wider_renewal_of_an_approved_command_is_proposed_again() {
    let mut actuator = Actuator::try_from(config("mode = \"enforce\"\napproval = true\n")).unwrap();
    let hole = |i, callers: &[(&str, f64, f64)]| black_hole("catalog", i, callers);
    let a = actuator.on_window(window(0), &[hole(0, &[("web", 10.0, 10.0)])], &[]);
    let id = a.commands[0].id.clone();
    actuator.approve(&id, Some(0), T0 + 15_000_000).unwrap();
    // the same caller again: nothing to send (half the TTL has not passed)
    assert!(
        actuator
            .on_window(window(1), &[hole(1, &[("web", 10.0, 10.0)])], &[])
            .commands
            .is_empty()
    );
    let a = actuator.on_window(
        window(2),
        &[hole(2, &[("web", 10.0, 10.0), ("mobile", 4.0, 4.0)])],
        &[],
    );
    let c = &a.commands[0];
    assert_eq!(
        (c.action, c.revision, c.mode, c.target.sources.len()),
        (CommandAction::Renew, 2, Mode::Proposed, 2)
    );
    assert_eq!(decisions(&a.audit), [(Decision::Proposed, id.as_str(), 2)]);
    // half its TTL later it is renewed unchanged (revision 3): the proposal stays the same
    let both = [("web", 10.0, 10.0), ("mobile", 4.0, 4.0)];
    let a = actuator.on_window(window(18), &[hole(18, &both)], &[]);
    assert_eq!(
        (a.commands[0].revision, a.commands[0].mode),
        (3, Mode::Proposed)
    );
    // an approval of the revision before the widening is refused; of the wider one, taken
    let at = window(18).end_us + 1_000_000;
    let e = actuator.approve(&id, Some(0), at).unwrap_err();
    assert!(
        matches!(e, ApproveError::Revision { current: 3, .. }),
        "{e}"
    );
    let a = actuator.approve(&id, Some(2), at).unwrap();
    assert_eq!(
        (a.commands[0].revision, a.commands[0].mode),
        (4, Mode::Enforce)
    );
}

/// Checkpoints encode the state as MessagePack with fields by name: an approved quarantine
/// (a target with a version and no zones: by position, the version came back as the source
/// zone), a proposed command with baselines, and a revoked one kept for a flap all come back
/// as they were.
#[test]
fn the_state_round_trips_through_the_checkpoint_encoding() {
    let mut actuator = Actuator::try_from(config(
        "mode = \"enforce\"\napproval = true\n[alerts]\nresolve-after-windows = 1\n",
    ))
    .unwrap();
    let a = actuator.on_window(
        window(0),
        &[
            deploy("pricing", "v2.6.0", 0),
            black_hole("catalog", 0, &[("web", 10.0, 10.0)]),
            black_hole("cart", 0, &[("web", 10.0, 10.0)]),
        ],
        &[],
    );
    let quarantine = a
        .commands
        .iter()
        .find(|c| c.id.starts_with("quarantine/"))
        .unwrap();
    actuator
        .approve(&quarantine.id.clone(), None, T0 + 15_000_000)
        .unwrap();
    // cart's incident resolves: its command is revoked and kept for a flap
    actuator.on_window(
        window(1),
        &[
            deploy("pricing", "v2.6.0", 1),
            black_hole("catalog", 1, &[("web", 10.0, 10.0)]),
        ],
        &[],
    );
    let state = actuator.state();
    assert!(
        state
            .active
            .values()
            .any(|a| a.command.mode == Mode::Enforce && a.baseline_rps.is_empty())
    );
    assert!(
        state
            .active
            .values()
            .any(|a| a.command.mode == Mode::Proposed && !a.baseline_rps.is_empty())
    );
    assert_eq!(state.revoked.len(), 1);
    let bytes = rmp_serde::to_vec_named(&state).unwrap();
    let back: ActuatorState = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, state);
}

#[test]
fn commands_are_signed_and_a_changed_one_fails_verification() {
    let dir = std::env::temp_dir().join(format!("graywatch-actuate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = "k3y-for-tests-0123456789abcdef0123";
    std::fs::write(dir.join("key"), key).unwrap();
    let text = format!(
        "[signing]\nkey-id = \"2026-12\"\nkey-file = \"{}\"\n",
        dir.join("key").display()
    );
    let mut actuator = Actuator::try_from(config(&text)).unwrap();
    let a = actuator.on_window(
        window(0),
        &[black_hole("catalog", 0, &[("web", 1.0, 4.0)])],
        &[],
    );
    let c = &a.commands[0];
    let sig = c.signature.as_ref().unwrap();
    assert_eq!(sig.key_id, "2026-12");
    assert_eq!(sig.hmac_sha256.len(), 64);
    let keys = Keys::from([("2026-12".to_owned(), key.as_bytes().to_vec())]);
    assert_eq!(keys.verify(c), Ok(()));
    // through JSON and back, as an enforcement point gets it
    let text = serde_json::to_string(c).unwrap();
    let back: RemediationCommand = serde_json::from_str(&text).unwrap();
    assert_eq!(keys.verify(&back), Ok(()));
    let mut forged = back.clone();
    forged.mode = Mode::Enforce;
    assert!(keys.verify(&forged).is_err());
    let other = Keys::from([("2026-11".to_owned(), key.as_bytes().to_vec())]);
    assert!(other.verify(&back).is_err());
    // deterministic: the same input signs the same
    let mut again = Actuator::try_from(config(&format!(
        "[signing]\nkey-id = \"2026-12\"\nkey-file = \"{}\"\n",
        dir.join("key").display()
    )))
    .unwrap();
    let b = again.on_window(
        window(0),
        &[black_hole("catalog", 0, &[("web", 1.0, 4.0)])],
        &[],
    );
    assert_eq!(b.commands[0].signature, c.signature);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_policy_matches_signature_subject_and_rule() {
    let mut actuator = Actuator::try_from(config(
        "[[policy]]\nsignature = \"rule\"\nrule = \"slow-pair\"\nsubject = \"pair/*/orders-db\"\n\
         pattern = \"circuit-breaker\"\nslower-than = \"800ms\"\n",
    ))
    .unwrap();
    let rule_finding = |rule: &str, destination: &str| {
        let mut f = black_hole(destination, 0, &[]);
        f.signature = Signature::Rule;
        f.rule = Some(rule.into());
        f.subject = Subject::Pair {
            source: "reports".into(),
            destination: destination.into(),
        };
        f
    };
    let a = actuator.on_window(
        window(0),
        &[
            rule_finding("slow-pair", "orders-db"),
            rule_finding("slow-pair", "users-db"),
            rule_finding("other", "orders-db"),
            black_hole("orders-db", 0, &[("web", 1.0, 1.0)]),
        ],
        &[],
    );
    assert_eq!(a.commands.len(), 1, "{a:?}");
    let c = &a.commands[0];
    assert_eq!(
        c.id,
        "circuit-breaker/pair/reports/orders-db/1674982210000000"
    );
    assert_eq!(c.reason.incident, "rule/slow-pair/pair/reports/orders-db");
}

/// Two user rules on one pair ask for one circuit breaker: it stays while either incident is
/// open, and is revoked when the second resolves.
#[test]
fn a_command_two_incidents_share_goes_with_the_last_of_them() {
    let mut actuator = Actuator::try_from(config(
        "[alerts]\nresolve-after-windows = 1\n\n[[policy]]\nsignature = \"rule\"\nsubject = \"pair/*/orders-db\"\n\
         pattern = \"circuit-breaker\"\nttl = \"10m\"\n",
    ))
    .unwrap();
    let rule_finding = |rule: &str, i: i64| {
        let mut f = black_hole("orders-db", i, &[]);
        f.signature = Signature::Rule;
        f.rule = Some(rule.into());
        f.subject = Subject::Pair {
            source: "reports".into(),
            destination: "orders-db".into(),
        };
        f
    };
    let a = actuator.on_window(
        window(0),
        &[rule_finding("slow-pair", 0), rule_finding("errors", 0)],
        &[],
    );
    assert_eq!(a.commands.len(), 1, "{a:?}");
    assert_eq!(
        a.commands[0].reason.incident,
        "rule/slow-pair/pair/reports/orders-db"
    );
    // the command's own incident, "slow-pair", resolves; "errors" goes on: the command stays
    let a = actuator.on_window(window(1), &[rule_finding("errors", 1)], &[]);
    assert!(
        a.alerts
            .iter()
            .any(|x| x.dedup_key == "rule/slow-pair/pair/reports/orders-db"),
        "{a:?}"
    );
    assert!(
        a.commands.iter().all(|c| c.action != CommandAction::Revoke),
        "{a:?}"
    );
    // "errors" resolves too: now it goes
    let a = actuator.on_window(window(2), &[], &[]);
    let revokes: Vec<&str> = a
        .commands
        .iter()
        .filter(|c| c.action == CommandAction::Revoke)
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(
        revokes,
        ["circuit-breaker/pair/reports/orders-db/1674982210000000"]
    );
}

#[test]
fn written_documents_validate_against_their_json_schemas() {
    let commands = validator("remediation-command.schema.json");
    let audits = validator("audit.schema.json");
    let alerts = validator("alert.schema.json");
    let mut actuator = Actuator::try_from(config(
        "mode = \"enforce\"\n[alerts]\nresolve-after-windows = 1\n\
         [[policy]]\nsignature = \"black-hole\"\npattern = \"backpressure\"\n\
         [[policy]]\nsignature = \"black-hole\"\npattern = \"circuit-breaker\"\ntier = \"batch\"\n\
         [[policy]]\nsignature = \"deploy-regression\"\npattern = \"quarantine\"\n\
         [[policy]]\nsignature = \"cross-zone\"\npattern = \"bulkhead\"\nmax-concurrency = 4\n\
         allow = [{ source = \"order\", destination = \"order-db\" }]\n\
         [[policy]]\nsignature = \"segmentation-violation\"\npattern = \"segmentation\"\n",
    ))
    .unwrap();
    let mut zones = black_hole("x", 0, &[]);
    zones.signature = Signature::CrossZone;
    zones.subject = Subject::ZonePair {
        source: "checkout-api".into(),
        destination: "order".into(),
        source_zone: "zone-b".into(),
        destination_zone: "zone-a".into(),
    };
    let mut breach = black_hole("x", 0, &[]);
    breach.signature = Signature::SegmentationViolation;
    breach.subject = Subject::Sources {
        destination: "room2".into(),
        sources: vec!["room1-client-0".into()],
    };
    let mut all = actuator.on_window(
        window(0),
        &[
            black_hole("catalog", 0, &[("frontend", 120.0, 0.0)]),
            deploy("pricing", "v2.6.0", 0),
            zones,
            breach,
        ],
        &[],
    );
    let later = actuator.on_window(window(1), &[], &[]);
    all.commands.extend(later.commands);
    all.audit.extend(later.audit);
    all.alerts.extend(later.alerts);
    let patterns: Vec<&str> = all.commands.iter().map(|c| c.pattern().as_str()).collect();
    assert_eq!(
        patterns,
        [
            "backpressure",
            "circuit-breaker",
            "quarantine",
            "bulkhead",
            "segmentation",
            "backpressure",
            "bulkhead",
            "circuit-breaker",
            "quarantine",
            "segmentation"
        ]
    );
    for (docs, v) in [
        (
            all.commands
                .iter()
                .map(|c| serde_json::to_value(c).unwrap())
                .collect::<Vec<_>>(),
            &commands,
        ),
        (
            all.audit
                .iter()
                .map(|c| serde_json::to_value(c).unwrap())
                .collect(),
            &audits,
        ),
        (
            all.alerts
                .iter()
                .map(|c| serde_json::to_value(c).unwrap())
                .collect(),
            &alerts,
        ),
    ] {
        for doc in docs {
            let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{doc:#}: {errors:?}");
        }
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
    let mut c = config("[alerts]\nresolve-after-windows = 1\n[rails]\nmax-new-per-minute = 2\n");
    for p in &mut c.policy {
        p.ttl = Duration::from_secs(35);
    }
    c
}

proptest! {
    #[test]
    fn restoring_a_checkpoint_gives_the_same_actions(episode in episode(), cut in 0usize..40) {
        let cut = cut.min(episode.len());
        let mut straight = Actuator::try_from(small_ttl_config()).unwrap();
        let expected: Vec<Actions> = episode
            .iter()
            .enumerate()
            .map(|(i, f)| straight.on_window(window(i as i64), f, &[]))
            .collect();

        let mut first = Actuator::try_from(small_ttl_config()).unwrap();
        let mut got: Vec<Actions> = episode[..cut]
            .iter()
            .enumerate()
            .map(|(i, f)| first.on_window(window(i as i64), f, &[]))
            .collect();
        let saved = serde_json::to_string(&first.state()).unwrap();
        let mut second = Actuator::try_from(small_ttl_config()).unwrap();
        second.restore(serde_json::from_str(&saved).unwrap());
        got.extend(
            episode[cut..]
                .iter()
                .enumerate()
                .map(|(i, f)| second.on_window(window((cut + i) as i64), f, &[])),
        );
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn a_commands_messages_follow_its_life(episode in episode()) {
        let mut actuator = Actuator::try_from(small_ttl_config()).unwrap();
        let mut last_action: BTreeMap<String, AlertAction> = BTreeMap::new();
        // per id: the latest message
        let mut last: BTreeMap<String, RemediationCommand> = BTreeMap::new();
        for (i, findings) in episode.iter().enumerate() {
            let now = window(i as i64).end_us;
            let actions = actuator.on_window(window(i as i64), findings, &[]);
            for a in &actions.alerts {
                let previous = last_action.insert(a.dedup_key.clone(), a.action);
                let expected = match previous {
                    None | Some(AlertAction::Resolve) => AlertAction::Trigger,
                    Some(AlertAction::Trigger) => AlertAction::Resolve,
                };
                prop_assert_eq!(a.action, expected);
            }
            // every message is audited, in the same order
            let audited: Vec<(&str, u32)> = actions
                .audit
                .iter()
                .filter(|a| !matches!(a.decision, Decision::Suppressed | Decision::Expired))
                .map(|a| (a.command.as_str(), a.revision))
                .collect();
            let sent: Vec<(&str, u32)> = actions.commands.iter().map(|c| (c.id.as_str(), c.revision)).collect();
            let (mut a_sorted, mut s_sorted) = (audited.clone(), sent.clone());
            a_sorted.sort();
            s_sorted.sort();
            prop_assert_eq!(a_sorted, s_sorted);
            for c in &actions.commands {
                prop_assert_eq!(c.issued_at_us, now);
                let Parameters::Backpressure(p) = &c.parameters else { panic!("{c:?}") };
                prop_assert_eq!(c.target.sources.len(), p.rate_limit_rps.len());
                for limit in p.rate_limit_rps.values() {
                    prop_assert!(limit.is_finite() && *limit > 0.0 && *limit < 100.0);
                }
                match last.get(&c.id) {
                    None => prop_assert_eq!((c.action, c.revision), (CommandAction::Issue, 0)),
                    Some(before) if before.action == CommandAction::Revoke => {
                        // a flapping incident's command comes back within a TTL of its revoke
                        prop_assert_eq!((c.action, c.revision), (CommandAction::Issue, before.revision + 1));
                        prop_assert!(now < before.issued_at_us + 35_000_000, "back after its hold");
                    }
                    Some(before) => {
                        prop_assert_eq!(c.revision, before.revision + 1);
                        prop_assert!(now < before.expires_at_us, "a message after its expiry");
                        // a renewal keeps every earlier caller
                        for s in &before.target.sources {
                            prop_assert!(c.target.sources.contains(s));
                        }
                    }
                }
                match c.action {
                    CommandAction::Revoke => prop_assert_eq!(c.expires_at_us, now),
                    _ => prop_assert_eq!(c.expires_at_us, now + 35_000_000),
                }
                last.insert(c.id.clone(), c.clone());
            }
            // at most one command in force per node
            let in_force: Vec<&str> = last
                .values()
                .filter(|c| c.action != CommandAction::Revoke && now < c.expires_at_us)
                .flat_map(|c| c.target.destinations.iter().map(String::as_str))
                .collect();
            let mut unique = in_force.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), in_force.len());
        }
    }
}
