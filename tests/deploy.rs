//! The deploy kits: every config file in `deploy/` parses, and the Grafana dashboard queries
//! only metrics graywatch exports.

use graywatch::kafka::metrics::Metrics;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::util::root;

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_yaml_toml_and_json_file_in_deploy_parses() {
    let mut files = Vec::new();
    files_under(&root().join("deploy"), &mut files);
    let mut parsed = BTreeSet::new();
    for path in &files {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let text = || std::fs::read_to_string(path).unwrap();
        let what = path.strip_prefix(root()).unwrap().display().to_string();
        match ext {
            "json" => {
                // one document, or several in a row (`graywatch render` writes one per command)
                let text = text();
                let docs = serde_json::Deserializer::from_str(&text)
                    .into_iter::<Value>()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(!docs.is_empty(), "{what}: no JSON document");
            }
            "jsonl" => {
                for (n, line) in text().lines().enumerate() {
                    serde_json::from_str::<Value>(line)
                        .unwrap_or_else(|e| panic!("{what}:{}: {e}", n + 1));
                }
            }
            "toml" => {
                toml::from_str::<toml::Table>(&text()).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            "yaml" | "yml" => {
                let docs = yaml_rust2::YamlLoader::load_from_str(&text())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(!docs.is_empty(), "{what}: no YAML document");
            }
            _ => continue,
        }
        parsed.insert(what);
    }
    // the kits a user starts from are there (and were parsed above)
    for kit in [
        "deploy/grafana/graywatch.json",
        "deploy/examples/graywatch.toml",
    ] {
        assert!(parsed.contains(kit), "{kit} missing: {parsed:?}");
    }
}

/// The metric names a scrape of `/metrics` lists (`# TYPE` lines, which come before any
/// sample), with counters under their `_total` name: graywatch's own metrics and the golden
/// signals.
fn exported_names() -> BTreeSet<String> {
    use graywatch::kafka::metrics::{
        FieldLabel, KindLabel, PartitionLabels, ReasonLabel, RuleLabel, SignatureLabel, SinkLabels,
        TopicLabel,
    };
    // a labelled family lists its name once it has a series: one each, as a run makes them
    let m = Metrics::default();
    let topic = TopicLabel {
        topic: "access-logs".into(),
    };
    m.messages_in.get_or_create(&topic).inc();
    m.records_in.get_or_create(&topic).inc();
    m.messages_out.get_or_create(&topic).inc();
    m.dead_letters
        .get_or_create(&ReasonLabel {
            reason: "late".into(),
        })
        .inc();
    m.consumer_lag
        .get_or_create(&PartitionLabels {
            topic: "access-logs".into(),
            partition: "0".into(),
        })
        .set(3);
    m.findings
        .get_or_create(&SignatureLabel {
            signature: "black-hole".into(),
        })
        .inc();
    m.rule_findings
        .get_or_create(&RuleLabel {
            rule: "slow".into(),
        })
        .inc();
    m.alert_deliveries
        .get_or_create(&SinkLabels {
            sink: "pagerduty".into(),
            outcome: "delivered".into(),
        })
        .inc();
    m.dropped_values
        .get_or_create(&FieldLabel {
            field: "request_id".into(),
        })
        .inc();
    for family in [&m.dropped_partials, &m.pair_overflow] {
        family
            .get_or_create(&KindLabel {
                kind: "late".into(),
            })
            .inc();
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry()).unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            names.insert(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            });
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let path = root().join("deploy/grafana/graywatch.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(
                t["expr"]
                    .as_str()
                    .expect("a target with a PromQL expr")
                    .to_owned(),
            );
        }
    }
    for a in dashboard["annotations"]["list"].as_array().unwrap() {
        exprs.push(a["expr"].as_str().unwrap().to_owned());
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    let exported = exported_names();
    for name in graywatch::golden::NAMES {
        assert!(
            exported.contains(*name),
            "{name} not in a scrape: {exported:?}"
        );
    }
    let mut used = BTreeSet::new();
    for e in &exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while let Some(at) = e[i..].find("graywatch_") {
            let start = i + at;
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
            used.insert(e[start..end].to_owned());
            i = end;
        }
    }
    assert!(used.len() >= 20, "the dashboard queries {used:?}");
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics graywatch does not export: {missing:?}"
    );
    // the drill-down shows the golden signals with their baselines
    for needed in ["graywatch_pair_baseline", "graywatch_pair_latency_seconds"] {
        assert!(used.contains(needed), "{needed} not on the dashboard");
    }
}

/// The Kubernetes ConfigMap's `graywatch.toml` is a valid config (with the signing key its
/// Deployment takes from a Secret).
#[test]
fn the_kubernetes_config_map_holds_a_valid_config() {
    let path = root().join("deploy/kubernetes/graywatch.yaml");
    let docs =
        yaml_rust2::YamlLoader::load_from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["Deployment", "Service", "ServiceMonitor", "ConfigMap"] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    let map = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let toml = map["data"]["graywatch.toml"]
        .as_str()
        .expect("a graywatch.toml key");
    let (_dir, config) = crate::util::temp_path("graywatch.toml");
    crate::util::write(&config, toml);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_graywatch"))
        .args(["validate", "-c", config.to_str().unwrap()])
        .env("GRAYWATCH_COMMAND_KEY", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the probes ask the port graywatch listens on
    let deployment = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let port = container["readinessProbe"]["httpGet"]["port"].clone();
    let listen: toml::Table = toml::from_str(toml).unwrap();
    let listen = listen["http"]["listen"].as_str().unwrap();
    let named = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port || p["containerPort"] == port)
        .expect("the probe's port is a container port");
    let number = named["containerPort"].as_i64().unwrap();
    assert!(
        listen.ends_with(&format!(":{number}")),
        "probes on {number}, graywatch listens on {listen}"
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
}
