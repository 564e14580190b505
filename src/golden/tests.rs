use std::borrow::Cow;
use std::sync::Arc;

use detect::store::BaselineStore;
use prometheus_client::registry::Registry;
use schemas::{
    CommandAction, Confidence, Finding, Latency, PairWindow, RemediationCommand, Severity,
    Signature, Subject, Window,
};

use super::*;

const W: Window = Window {
    start_us: 1_700_000_000_000_000,
    end_us: 1_700_000_010_000_000,
};

/// A 10 s window of `source → destination` with `requests`, `errors` and a p99 of `p99_us`.
fn pair(source: &str, destination: &str, requests: u64, errors: u64, p99_us: u64) -> PairWindow {
    PairWindow {
        schema_version: 1,
        kind: Cow::Borrowed("pair-window"),
        window: W,
        source: source.into(),
        destination: destination.into(),
        requests,
        rate_rps: requests as f64 / 10.0,
        errors,
        error_ratio: errors as f64 / requests as f64,
        latency: Some(Latency {
            p50_us: p99_us / 4,
            p90_us: p99_us / 2,
            p99_us,
            max_us: p99_us * 2,
        }),
        concurrency_mean: requests as f64 / 100.0,
        concurrency_peak: requests / 10,
        bytes_in: requests * 100,
        bytes_out: requests * 1000,
        bandwidth_in_bps: requests as f64 * 10.0,
        bandwidth_out_bps: requests as f64 * 100.0,
        breakdown: Vec::new(),
        breakdown_overflow: 0,
    }
}

fn tables(pairs: &[PairWindow]) -> WindowTables {
    let store = BaselineStore::default();
    WindowTables {
        window: W,
        pairs: detect::tables::pair_table(pairs, &store),
        nodes: detect::tables::node_table(&[], &store),
        breakdown: detect::tables::breakdown_table(pairs),
    }
}

fn black_hole(node: &str) -> Finding {
    Finding {
        schema_version: 1,
        kind: "finding".into(),
        id: format!("black-hole/node/{node}/{}", W.start_us),
        signature: Signature::BlackHole,
        subject: Subject::Node { node: node.into() },
        window: W,
        severity: Severity::Critical,
        evidence: Vec::new(),
        callers: Vec::new(),
        summary: String::new(),
        score: 0.99,
        confidence: Confidence::Normal,
        related: Vec::new(),
        rule: None,
    }
}

/// The alert that opens `f`'s incident.
fn trigger(f: &Finding) -> schemas::Alert {
    schemas::Alert {
        schema_version: 1,
        kind: "alert".into(),
        action: schemas::AlertAction::Trigger,
        dedup_key: crate::report::incident_key(f),
        summary: f.summary.clone(),
        severity: f.severity,
        at_us: f.window.end_us,
        finding: f.id.clone(),
    }
}

/// A finding and the trigger of its incident, as the judge sends them.
fn found(golden: &GoldenSignals, f: &Finding) {
    golden.finding(f);
    golden.alert(&trigger(f));
}

/// `/metrics` as Prometheus scrapes it.
fn scrape(golden: &Arc<GoldenSignals>) -> String {
    let mut r = Registry::default();
    r.register_collector(Box::new(Arc::clone(golden)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
    text
}

/// The value of the series `name{labels}` (labels as written, in order).
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.parse().unwrap())
}

/// The value of the series `name` without labels.
fn unlabelled(text: &str, name: &str) -> Option<f64> {
    let series = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.parse().unwrap())
}

#[test]
fn the_busiest_pairs_and_those_of_findings_have_series_the_rest_is_summed() {
    let golden = Arc::new(GoldenSignals::new(2));
    golden.tables(&tables(&[
        pair("cart", "catalog", 400, 4, 250_000),
        pair("web", "cart", 300, 0, 80_000),
        pair("web", "search", 200, 10, 40_000),
        pair("cart", "payments", 100, 50, 900_000),
        pair("web", "ads", 50, 0, 10_000),
    ]));
    // the quietest pair but one is into a black hole: it keeps its series
    found(&golden, &black_hole("payments"));
    golden.publish();
    let text = scrape(&golden);
    let rate = "graywatch_pair_requests_per_second";
    assert_eq!(
        value(&text, rate, r#"source="cart",destination="catalog""#),
        Some(40.0)
    );
    assert_eq!(
        value(&text, rate, r#"source="web",destination="cart""#),
        Some(30.0)
    );
    assert_eq!(
        value(&text, rate, r#"source="cart",destination="payments""#),
        Some(10.0)
    );
    assert_eq!(
        value(&text, rate, r#"source="web",destination="search""#),
        None
    );
    // web→search (20 req/s, 10 errors) and web→ads (5 req/s) summed
    let other = r#"source="(other)",destination="(other)""#;
    assert_eq!(value(&text, rate, other), Some(25.0));
    assert_eq!(
        value(&text, "graywatch_pair_error_ratio", other),
        Some(10.0 / 250.0)
    );
    assert_eq!(
        value(
            &text,
            "graywatch_pair_bandwidth_bytes_per_second",
            r#"source="(other)",destination="(other)",direction="out""#
        ),
        Some(25_000.0)
    );
    assert_eq!(unlabelled(&text, "graywatch_other_pairs"), Some(2.0));
    // percentiles in seconds, never for the sum
    assert_eq!(
        value(
            &text,
            "graywatch_pair_latency_seconds",
            r#"source="cart",destination="payments",quantile="0.99""#
        ),
        Some(0.9)
    );
    assert!(!text.contains(r#"graywatch_pair_latency_seconds{source="(other)""#));
    assert_eq!(
        value(
            &text,
            "graywatch_pair_error_ratio",
            r#"source="cart",destination="payments""#
        ),
        Some(0.5)
    );
    assert_eq!(
        value(
            &text,
            "graywatch_open_findings",
            r#"signature="black-hole",severity="critical",subject="node/payments""#
        ),
        Some(1.0)
    );
    assert_eq!(
        unlabelled(&text, "graywatch_window_end_timestamp_seconds"),
        Some(1_700_000_010.0)
    );
}

#[test]
fn a_new_window_replaces_the_last_one() {
    let golden = Arc::new(GoldenSignals::new(10));
    golden.tables(&tables(&[
        pair("web", "cart", 300, 0, 80_000),
        pair("web", "search", 200, 10, 40_000),
    ]));
    found(&golden, &black_hole("cart"));
    golden.publish();
    assert!(scrape(&golden).contains(r#"destination="search""#));
    assert!(scrape(&golden).contains(r#"subject="node/cart""#));
    // tables of the next window, not yet complete: the last one is still shown
    golden.tables(&tables(&[pair("web", "cart", 10, 0, 80_000)]));
    assert!(scrape(&golden).contains(r#"destination="search""#));
    golden.publish();
    let text = scrape(&golden);
    assert!(!text.contains(r#"destination="search""#), "{text}");
    // the incident is open until resolved, though nothing fired in this window
    assert!(text.contains(r#"subject="node/cart""#), "{text}");
    let mut resolve = trigger(&black_hole("cart"));
    resolve.action = schemas::AlertAction::Resolve;
    golden.alert(&resolve);
    golden.tables(&tables(&[pair("web", "cart", 10, 0, 80_000)]));
    golden.publish();
    let text = scrape(&golden);
    assert!(!text.contains("graywatch_open_findings{"), "{text}");
    assert_eq!(
        value(
            &text,
            "graywatch_pair_requests_per_second",
            r#"source="web",destination="cart""#
        ),
        Some(1.0)
    );
    assert!(
        !text.contains(r#"source="(other)""#),
        "every pair fits in top-k: {text}"
    );
}

#[test]
fn commands_in_force_are_counted_by_pattern_until_revoked_or_expired() {
    // one command of each pattern, as deploy/examples/commands.jsonl has them
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/commands.jsonl"
    );
    let commands: Vec<RemediationCommand> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(commands.len(), 5);
    let golden = Arc::new(GoldenSignals::default());
    for c in &commands {
        golden.command(c);
    }
    let text = scrape(&golden);
    let count = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("graywatch_active_commands{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    assert_eq!(count(&text), 5.0);
    let mut revoke = commands[0].clone();
    revoke.action = CommandAction::Revoke;
    golden.command(&revoke);
    assert_eq!(count(&scrape(&golden)), 4.0);
    // an issued one renewed stays one
    let mut renew = commands[1].clone();
    renew.action = CommandAction::Renew;
    golden.command(&renew);
    assert_eq!(count(&scrape(&golden)), 4.0);
}

#[test]
fn the_map_colours_a_pair_by_its_most_surprising_signal() {
    // ten steady windows of web → cart (300 requests, p50 20 ms, p99 80 ms), then a window
    // whose p99 alone is 3× its baseline: the most surprising signal
    let mut store = BaselineStore::default();
    for k in 0..10 {
        let mut p = pair("web", "cart", 300, 0, 80_000);
        p.window = schemas::Window {
            start_us: W.start_us - (10 - k) * 10_000_000,
            end_us: W.start_us - (9 - k) * 10_000_000,
        };
        store.learn_pair(&p);
    }
    let mut slow = pair("web", "cart", 300, 0, 240_000);
    slow.latency.as_mut().unwrap().p50_us = 20_000;
    let slow = [slow];
    let golden = Arc::new(GoldenSignals::new(10));
    golden.tables(&WindowTables {
        window: W,
        pairs: detect::tables::pair_table(&slow, &store),
        nodes: detect::tables::node_table(&[], &store),
        breakdown: detect::tables::breakdown_table(&slow),
    });
    golden.publish();
    let map: serde_json::Value = serde_json::from_str(&golden.map()).unwrap();
    let p = &map["pairs"][0];
    assert_eq!(p["source"], "web");
    assert_eq!(p["worst_signal"], "p99_us", "{p}");
    let worst = p["worst_p"].as_f64().unwrap();
    assert!(worst < 1e-6, "red on the map: {p}");
    assert!(p["worst_z"].as_f64().unwrap() > 4.0, "{p}");
    // /metrics gives the baselines in base units: the p99's in seconds
    let text = scrape(&golden);
    let labels = r#"source="web",destination="cart",signal="latency_p99_seconds""#;
    assert_eq!(
        value(&text, "graywatch_pair_baseline", labels),
        Some(0.08),
        "{text}"
    );
    assert!(value(&text, "graywatch_pair_zscore", labels).unwrap() > 4.0);
}

#[test]
fn the_other_sum_has_no_float_noise() {
    let row = |source: &str, rate_rps: f64| PairRow {
        source: source.into(),
        destination: "db".into(),
        requests: 1,
        rate_rps,
        ..PairRow::default()
    };
    assert_ne!(0.1 + 0.2, 0.3);
    let b = board(0, vec![row("a", 0.1), row("b", 0.2)], Vec::new(), 0, &[]);
    let other = b.other.expect("both pairs summed");
    assert_eq!(other.rate_rps, 0.3);
    assert_eq!(other.requests, 2);
}
