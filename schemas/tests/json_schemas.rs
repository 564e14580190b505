//! The JSON Schemas in `schemas/json/` against the serde types they describe.
//!
//! Each schema must accept exactly what serde writes for its Rust type: its examples validate
//! and deserialize (and serialize back to the same document), documents serialized from Rust
//! values validate, and unknown keys or another `schema_version` are rejected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use proptest::prelude::*;
use schemas::{
    Alert, AlertAction, AuditRecord, BackpressureParameters, Breakdown, BulkheadParameters, Caller,
    CircuitBreakerParameters, CommandAction, CommandSignature, Confidence, Edge, Evidence, Finding,
    FlowRecord, Latency, Mode, NodeWindow, PairWindow, Parameters, Pattern, QuarantineParameters,
    Reason, Related, RemediationCommand, Reporter, SCHEMA_VERSION, SegmentationParameters,
    Severity, Signature, Subject, Target, UpstreamAttempt, Window,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The schema files, one per document graywatch writes. A new document type needs a new schema
/// here (and an entry in `round_trip_examples`).
const SCHEMA_FILES: [&str; 7] = [
    "alert.schema.json",
    "audit.schema.json",
    "finding.schema.json",
    "flow-record.schema.json",
    "node-window.schema.json",
    "pair-window.schema.json",
    "remediation-command.schema.json",
];

/// Schemas of documents the `graywatch` crate writes (its tests check them against its types):
/// checked here for form only.
const OTHER_SCHEMA_FILES: [&str; 1] = ["truth.schema.json"];

fn json_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json")
}

/// Reads and parses `schemas/json/<file>`.
fn schema(file: &str) -> Value {
    let path = json_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"))
}

fn validator(file: &str) -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema(file))
        .unwrap_or_else(|e| panic!("{file} does not compile: {e}"))
}

/// Panics with every validation error when `doc` does not validate against `file`.
fn assert_valid(file: &str, doc: &Value) {
    let v = validator(file);
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{file} rejects {doc:#}:\n{}",
        errors.join("\n")
    );
}

fn assert_invalid(file: &str, doc: &Value, why: &str) {
    assert!(
        !validator(file).is_valid(doc),
        "{file} accepts a document with {why}: {doc:#}"
    );
}

fn examples(file: &str) -> Vec<Value> {
    schema(file)["examples"]
        .as_array()
        .unwrap_or_else(|| panic!("{file} has no examples array"))
        .clone()
}

/// Deserializes `doc` into `T` and checks that serializing it back gives `doc` again, so the
/// example is exactly what serde writes (every field present, same names and spellings).
fn round_trip<T: DeserializeOwned + Serialize>(file: &str, doc: &Value) {
    let value: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("example of {file} does not deserialize: {e}\n{doc:#}"));
    let back = serde_json::to_value(&value).unwrap();
    assert_eq!(
        &back, doc,
        "example of {file} does not serialize back to itself"
    );
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn schema_folder_holds_exactly_one_schema_per_document_type() {
    let found: BTreeSet<String> = std::fs::read_dir(json_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = SCHEMA_FILES
        .iter()
        .chain(&OTHER_SCHEMA_FILES)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn every_schema_is_draft_2020_12_and_valid_against_its_meta_schema() {
    for file in SCHEMA_FILES.into_iter().chain(OTHER_SCHEMA_FILES) {
        let s = schema(file);
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{file}"
        );
        let id = s["$id"].as_str().unwrap_or_default();
        assert!(
            id.ends_with(&format!("/schemas/json/{file}")),
            "{file}: $id {id}"
        );
        if let Err(e) = jsonschema::meta::validate(&s) {
            panic!("{file} is not a valid JSON Schema: {e}");
        }
        assert_eq!(s["additionalProperties"], false, "{file}");
        assert_eq!(
            s["properties"]["schema_version"]["const"], SCHEMA_VERSION,
            "{file}"
        );
    }
}

#[test]
fn every_property_has_a_description() {
    fn walk(file: &str, path: &str, node: &Value) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let p = format!("{path}/{name}");
                let described = prop.get("description").is_some() || prop.get("$ref").is_some();
                assert!(described, "{file}: property {p} has no description");
                walk(file, &p, prop);
            }
        }
        for key in ["$defs", "oneOf", "allOf"] {
            match node.get(key) {
                Some(Value::Object(m)) => m.values().for_each(|v| walk(file, path, v)),
                Some(Value::Array(a)) => a.iter().for_each(|v| walk(file, path, v)),
                _ => {}
            }
        }
    }
    for file in SCHEMA_FILES.into_iter().chain(OTHER_SCHEMA_FILES) {
        walk(file, "", &schema(file));
    }
}

#[test]
fn kind_is_a_constant_per_document_type() {
    for (file, kind) in [
        ("pair-window.schema.json", "pair-window"),
        ("node-window.schema.json", "node-window"),
        ("finding.schema.json", "finding"),
        ("remediation-command.schema.json", "remediation-command"),
        ("alert.schema.json", "alert"),
        ("audit.schema.json", "audit"),
    ] {
        assert_eq!(schema(file)["properties"]["kind"]["const"], kind);
        let mut doc = examples(file).remove(0);
        doc["kind"] = json!("something-else");
        assert_invalid(file, &doc, "another kind");
    }
    // `schemas::FlowRecord` has no `kind` field, so its schema must not ask for one.
    assert!(
        schema("flow-record.schema.json")["properties"]
            .get("kind")
            .is_none()
    );
}

#[test]
fn the_window_definition_is_the_same_in_every_schema_that_embeds_one() {
    let a = &schema("pair-window.schema.json")["$defs"]["window"];
    assert_eq!(a, &schema("node-window.schema.json")["$defs"]["window"]);
    assert_eq!(a, &schema("finding.schema.json")["$defs"]["window"]);
}

#[test]
fn examples_validate_and_round_trip_through_the_rust_types() {
    let mut checked = 0;
    for file in SCHEMA_FILES {
        let docs = examples(file);
        assert!(!docs.is_empty(), "{file} has no example");
        for doc in &docs {
            assert_valid(file, doc);
            match file {
                "flow-record.schema.json" => round_trip::<FlowRecord>(file, doc),
                "pair-window.schema.json" => round_trip::<PairWindow>(file, doc),
                "node-window.schema.json" => round_trip::<NodeWindow>(file, doc),
                "finding.schema.json" => round_trip::<Finding>(file, doc),
                "remediation-command.schema.json" => round_trip::<RemediationCommand>(file, doc),
                "alert.schema.json" => round_trip::<Alert>(file, doc),
                "audit.schema.json" => round_trip::<AuditRecord>(file, doc),
                other => panic!("no Rust type for {other}"),
            }
            checked += 1;
        }
    }
    // 3 flow records, 2 pair windows, 1 node window, 1 finding, 3 commands, 2 alerts, 2 audit
    // records.
    assert_eq!(checked, 14);
}

#[test]
fn unknown_keys_and_other_schema_versions_are_rejected_everywhere() {
    for file in SCHEMA_FILES {
        for doc in examples(file) {
            let mut extra = doc.clone();
            extra["unexpected"] = json!(1);
            assert_invalid(file, &extra, "an unknown top-level key");
            // The Rust types agree (`deny_unknown_fields`).
            let rust_rejects = match file {
                "flow-record.schema.json" => serde_json::from_value::<FlowRecord>(extra).is_err(),
                "pair-window.schema.json" => serde_json::from_value::<PairWindow>(extra).is_err(),
                "node-window.schema.json" => serde_json::from_value::<NodeWindow>(extra).is_err(),
                "finding.schema.json" => serde_json::from_value::<Finding>(extra).is_err(),
                "remediation-command.schema.json" => {
                    serde_json::from_value::<RemediationCommand>(extra).is_err()
                }
                "alert.schema.json" => serde_json::from_value::<Alert>(extra).is_err(),
                "audit.schema.json" => serde_json::from_value::<AuditRecord>(extra).is_err(),
                other => panic!("no Rust type for {other}"),
            };
            assert!(rust_rejects, "serde accepts an unknown key in {file}");

            for version in [json!(0), json!(2), json!("1"), json!(1.5)] {
                let mut wrong = doc.clone();
                wrong["schema_version"] = version.clone();
                assert_invalid(file, &wrong, &format!("schema_version {version}"));
            }
            let mut missing = doc.clone();
            missing.as_object_mut().unwrap().remove("schema_version");
            assert_invalid(file, &missing, "no schema_version");
        }
    }
}

#[test]
fn unknown_keys_in_nested_objects_are_rejected() {
    let cases: [(&str, &[&str]); 7] = [
        ("pair-window.schema.json", &["window", "latency"]),
        ("node-window.schema.json", &["window"]),
        ("finding.schema.json", &["window", "subject"]),
        (
            "remediation-command.schema.json",
            &["target", "reason", "parameters", "signature"],
        ),
        ("audit.schema.json", &["reason"]),
        ("flow-record.schema.json", &[]),
        ("alert.schema.json", &[]),
    ];
    for (file, nested) in cases {
        let doc = examples(file).remove(0);
        for key in nested {
            let mut bad = doc.clone();
            bad[*key]["unexpected"] = json!(1);
            assert_invalid(file, &bad, &format!("an unknown key in {key}"));
        }
    }
    let mut finding = examples("finding.schema.json").remove(0);
    finding["evidence"][0]["unexpected"] = json!(1);
    assert_invalid(
        "finding.schema.json",
        &finding,
        "an unknown key in evidence",
    );
    let mut finding = examples("finding.schema.json").remove(0);
    finding["callers"][0]["unexpected"] = json!(1);
    assert_invalid(
        "finding.schema.json",
        &finding,
        "an unknown key in a caller",
    );
    let mut flow = examples("flow-record.schema.json").remove(2);
    flow["upstream_attempts"][0]["unexpected"] = json!(1);
    assert_invalid(
        "flow-record.schema.json",
        &flow,
        "an unknown key in an upstream attempt",
    );
}

#[test]
fn every_written_field_is_required_and_absent_values_are_null() {
    // serde writes `null` for `None`, never omits a field: a document missing a nullable field
    // was not written by graywatch.
    let doc = examples("flow-record.schema.json").remove(1);
    for field in ["duration_us", "status", "source_zone", "request_id"] {
        let mut missing = doc.clone();
        missing.as_object_mut().unwrap().remove(field);
        assert_invalid("flow-record.schema.json", &missing, &format!("no {field}"));
    }
    let mut pair = examples("pair-window.schema.json").remove(1);
    assert_eq!(pair["latency"], Value::Null);
    pair.as_object_mut().unwrap().remove("latency");
    assert_invalid("pair-window.schema.json", &pair, "no latency");
    // Non-nullable fields don't take null.
    let mut pair = examples("pair-window.schema.json").remove(0);
    pair["requests"] = Value::Null;
    assert_invalid("pair-window.schema.json", &pair, "requests null");
}

#[test]
fn flow_record_without_upstream_attempts_is_accepted_like_serde_does() {
    // `FlowRecord::upstream_attempts` is `#[serde(default)]`: readers take a missing list as
    // empty, so the schema does too.
    let mut doc = examples("flow-record.schema.json").remove(0);
    doc.as_object_mut().unwrap().remove("upstream_attempts");
    assert_valid("flow-record.schema.json", &doc);
    let r: FlowRecord = serde_json::from_value(doc).unwrap();
    assert!(r.upstream_attempts.is_empty());
}

#[test]
fn enums_are_kebab_case() {
    let mut doc = examples("flow-record.schema.json").remove(0);
    doc["reporter"] = json!("IstioDestination");
    assert_invalid("flow-record.schema.json", &doc, "a CamelCase reporter");
    let mut doc = examples("remediation-command.schema.json").remove(0);
    doc["mode"] = json!("dry_run");
    assert_invalid("remediation-command.schema.json", &doc, "mode dry_run");
    let mut doc = examples("finding.schema.json").remove(0);
    doc["signature"] = json!("black_hole");
    assert_invalid("finding.schema.json", &doc, "signature black_hole");
}

#[test]
fn parameters_have_the_shape_of_their_pattern() {
    let doc = examples("remediation-command.schema.json").remove(0);
    let mut bad = doc.clone();
    bad["parameters"]["rate_limit_rps"]["checkout"] = json!("14.75");
    assert_invalid("remediation-command.schema.json", &bad, "a string rate");
    let mut bad = doc.clone();
    bad["parameters"]["rate_limit_rps"]["checkout"] = json!(0.0);
    assert_invalid(
        "remediation-command.schema.json",
        &bad,
        "a limit of 0 req/s",
    );
    // another pattern's parameters: the schema and serde both refuse them
    let mut bad = doc.clone();
    bad["parameters"] = json!({"status": 403});
    assert_invalid(
        "remediation-command.schema.json",
        &bad,
        "segmentation parameters",
    );
    assert!(serde_json::from_value::<RemediationCommand>(bad).is_err());
    let mut seg = doc.clone();
    seg["pattern"] = json!("segmentation");
    seg["parameters"] = json!({"status": 403});
    assert_valid("remediation-command.schema.json", &seg);
    let c: RemediationCommand = serde_json::from_value(seg).unwrap();
    assert_eq!(
        c.parameters,
        Parameters::Segmentation(SegmentationParameters { status: 403 })
    );
    let mut bad = doc;
    bad["signature"]["hmac_sha256"] = json!("ABC");
    assert_invalid(
        "remediation-command.schema.json",
        &bad,
        "a MAC that is not hex",
    );
}

#[test]
fn the_canonical_json_of_a_command_sorts_keys_and_writes_integral_numbers_bare() {
    let doc = examples("remediation-command.schema.json").remove(1);
    let c: RemediationCommand = serde_json::from_value(doc).unwrap();
    let text = String::from_utf8(c.canonical_json()).unwrap();
    assert_eq!(
        text,
        "{\"action\":\"revoke\",\"expires_at_us\":1767576420000000,\
         \"id\":\"quarantine/version/pricing/v2.6.0/1767575240000000\",\
         \"issued_at_us\":1767576420000000,\"kind\":\"remediation-command\",\"mode\":\"dry-run\",\
         \"parameters\":{\"weight\":0},\"pattern\":\"quarantine\",\
         \"reason\":{\"finding\":\"deploy-regression/version/pricing/v2.6.0/1767575230000000\",\
         \"incident\":\"deploy-regression/version/pricing/v2.6.0\",\"signature\":\"deploy-regression\",\
         \"summary\":\"pricing v2.6.0 calls cache 3x per request; its callers slowed\"},\
         \"revision\":2,\"schema_version\":1,\
         \"target\":{\"destinations\":[\"pricing\"],\"sources\":[],\"version\":\"v2.6.0\"},\"ttl_us\":0}"
    );
    // the signature is not part of it
    let mut signed = examples("remediation-command.schema.json").remove(0);
    let with: RemediationCommand = serde_json::from_value(signed.clone()).unwrap();
    signed.as_object_mut().unwrap().remove("signature");
    let without: RemediationCommand = serde_json::from_value(signed).unwrap();
    assert_eq!(with.canonical_json(), without.canonical_json());
    let text = String::from_utf8(with.canonical_json()).unwrap();
    assert!(
        text.contains("\"rate_limit_rps\":{\"checkout\":14.75,\"frontend\":59.25}"),
        "{text}"
    );
}

/// Every µs timestamp has its RFC 3339 time beside it in JSON; readers take the µs value,
/// read documents without the text, and refuse a text that names another instant.
#[test]
fn timestamps_have_their_rfc3339_time_beside_them() {
    let w = Window {
        start_us: 1_764_770_400_000_000,
        end_us: 1_764_770_410_250_000,
    };
    assert_eq!(
        serde_json::to_string(&w).unwrap(),
        "{\"start_us\":1764770400000000,\"start\":\"2025-12-03T14:00:00Z\",\
         \"end_us\":1764770410250000,\"end\":\"2025-12-03T14:00:10.250000Z\"}"
    );
    let bare: Window =
        serde_json::from_str(r#"{"start_us":1764770400000000,"end_us":1764770410250000}"#).unwrap();
    assert_eq!(bare, w);
    let e = serde_json::from_str::<Window>(
        r#"{"start_us":1764770400000000,"start":"2025-12-03T15:00:00Z","end_us":1764770410250000}"#,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "start \"2025-12-03T15:00:00Z\" is not start_us 1764770400000000 (2025-12-03T14:00:00Z)"
    );

    let command = examples("remediation-command.schema.json").remove(0);
    assert_eq!(command["issued_at"], "2023-01-29T08:50:10Z");
    assert_eq!(command["expires_at"], "2023-01-29T08:55:10Z");
    let alert = examples("alert.schema.json").remove(0);
    assert_eq!(alert["at"], "2023-01-29T08:50:10Z");
    for (file, field) in [
        ("remediation-command.schema.json", "issued_at"),
        ("remediation-command.schema.json", "expires_at"),
        ("alert.schema.json", "at"),
        ("audit.schema.json", "at"),
    ] {
        let doc = examples(file).remove(0);
        let mut wrong = doc.clone();
        wrong[field] = json!("2000-01-01T00:00:00Z");
        let refused = match file {
            "remediation-command.schema.json" => {
                serde_json::from_value::<RemediationCommand>(wrong).is_err()
            }
            "alert.schema.json" => serde_json::from_value::<Alert>(wrong).is_err(),
            _ => serde_json::from_value::<AuditRecord>(wrong).is_err(),
        };
        assert!(refused, "{file}: {field} naming another instant is read");
        let mut without = doc.clone();
        without.as_object_mut().unwrap().remove(field);
        let read_back = match file {
            "remediation-command.schema.json" => {
                to_json(&serde_json::from_value::<RemediationCommand>(without.clone()).unwrap())
            }
            "alert.schema.json" => {
                to_json(&serde_json::from_value::<Alert>(without.clone()).unwrap())
            }
            _ => to_json(&serde_json::from_value::<AuditRecord>(without.clone()).unwrap()),
        };
        assert_eq!(read_back, doc, "{file}: written again with {field}");
        // graywatch writes it, so the schema asks for it
        assert_invalid(file, &without, &format!("no {field}"));
        let mut bad = doc;
        bad[field] = json!("2026-01-05 01:07:20");
        assert_invalid(file, &bad, &format!("{field} not in RFC 3339"));
    }
}

/// The RFC 3339 texts of a command are not signed: its canonical JSON is the one of a command
/// written without them (so signatures made before they existed verify), and a command
/// whose text was altered is refused when read, before any signature check.
#[test]
fn the_rfc3339_texts_of_a_command_are_outside_its_canonical_json() {
    let doc = examples("remediation-command.schema.json").remove(0);
    let c: RemediationCommand = serde_json::from_value(doc.clone()).unwrap();
    let canonical = String::from_utf8(c.canonical_json()).unwrap();
    assert!(
        canonical.contains("\"issued_at_us\":1674982210000000,"),
        "{canonical}"
    );
    assert!(!canonical.contains("issued_at\""), "{canonical}");
    assert!(!canonical.contains("expires_at\""), "{canonical}");
    let mut bare = doc;
    let o = bare.as_object_mut().unwrap();
    o.remove("issued_at");
    o.remove("expires_at");
    let old: RemediationCommand = serde_json::from_value(bare).unwrap();
    assert_eq!(old.canonical_json(), c.canonical_json());
}

fn window() -> Window {
    Window {
        start_us: 1_674_982_200_000_000,
        end_us: 1_674_982_210_000_000,
    }
}

fn flow_record(all_some: bool) -> FlowRecord {
    let some = |s: &str| all_some.then(|| s.to_owned());
    FlowRecord {
        schema_version: SCHEMA_VERSION,
        start_us: 1_674_982_201_250_000,
        duration_us: all_some.then_some(1_203_000),
        source: "frontend".into(),
        source_zone: some("eu-west-1a"),
        source_version: some("v7"),
        destination: "catalog".into(),
        destination_zone: some("eu-west-1b"),
        destination_version: some("v2"),
        protocol: some("HTTP/2"),
        method: some("GET"),
        status: all_some.then_some(503),
        response_flags: some("UF,URX"),
        bytes_received: 12,
        bytes_sent: 89,
        upstream_host: some("10.1.0.8:8080"),
        upstream_attempts: if all_some {
            vec![
                UpstreamAttempt {
                    address: Some("10.1.0.7:8080".into()),
                    status: Some(502),
                    response_time_us: Some(1_000_000),
                    group: 0,
                },
                UpstreamAttempt {
                    address: None,
                    status: None,
                    response_time_us: None,
                    group: 1,
                },
            ]
        } else {
            Vec::new()
        },
        request_id: some("c219f6da"),
        reporter: if all_some {
            Reporter::IstioSource
        } else {
            Reporter::Nginx
        },
    }
}

fn pair_window(latency: Option<Latency>) -> PairWindow {
    PairWindow {
        schema_version: SCHEMA_VERSION,
        kind: "pair-window".into(),
        window: window(),
        source: "frontend".into(),
        destination: "catalog".into(),
        requests: 10,
        rate_rps: 1.0,
        errors: 1,
        error_ratio: 0.1,
        latency,
        concurrency_mean: 0.25,
        concurrency_peak: 2,
        bytes_in: 1_000,
        bytes_out: 50_000,
        bandwidth_in_bps: 100.0,
        bandwidth_out_bps: 5_000.0,
        breakdown: if latency.is_some() {
            vec![Breakdown {
                source_zone: Some("eu-west-1a".into()),
                source_version: None,
                destination_zone: Some("eu-west-1b".into()),
                destination_version: Some("v2".into()),
                requests: 9,
                errors: 1,
                timed: 9,
                duration_sum_us: 45_000,
                bytes_in: 900,
                bytes_out: 45_000,
            }]
        } else {
            Vec::new()
        },
        breakdown_overflow: if latency.is_some() { 1 } else { 0 },
    }
}

fn finding(subject: Subject, callers: Vec<Caller>) -> Finding {
    Finding {
        schema_version: SCHEMA_VERSION,
        kind: "finding".into(),
        id: "black-hole/node/catalog/1674982200000000".into(),
        signature: Signature::BlackHole,
        subject,
        window: window(),
        severity: Severity::Warning,
        evidence: vec![Evidence {
            signal: "ok_response_ratio".into(),
            value: 0.0,
            baseline: 0.99,
            unit: "ratio".into(),
            tail_probability: Some(1e-9),
        }],
        callers,
        summary: "catalog answers nothing".into(),
        score: 1.0 - 1e-9,
        confidence: Confidence::Low,
        related: vec![Related {
            role: "candidate".into(),
            name: "db".into(),
            score: Some(0.8),
            detail: "slow first".into(),
        }],
        rule: None,
    }
}

#[test]
fn documents_serialized_from_rust_values_validate() {
    for all_some in [true, false] {
        assert_valid("flow-record.schema.json", &to_json(&flow_record(all_some)));
    }
    let latency = Latency {
        p50_us: 4_100,
        p90_us: 9_800,
        p99_us: 31_000,
        max_us: 48_213,
    };
    for l in [Some(latency), None] {
        assert_valid("pair-window.schema.json", &to_json(&pair_window(l)));
    }
    let node = NodeWindow {
        schema_version: SCHEMA_VERSION,
        kind: "node-window".into(),
        window: window(),
        node: "catalog".into(),
        inflow_requests: 0,
        inflow_bytes: 0,
        ok_responses: 0,
        outflow_bytes: 0,
        downstream_requests: 0,
        callers: 0,
    };
    assert_valid("node-window.schema.json", &to_json(&node));

    let callers = vec![Caller {
        service: "frontend".into(),
        rate_rps: 120.0,
        baseline_rate_rps: 0.0,
    }];
    let node_subject = Subject::Node {
        node: "catalog".into(),
    };
    let pair_subject = Subject::Pair {
        source: "frontend".into(),
        destination: "catalog".into(),
    };
    assert_valid(
        "finding.schema.json",
        &to_json(&finding(node_subject, callers)),
    );
    assert_valid(
        "finding.schema.json",
        &to_json(&finding(pair_subject, vec![])),
    );
    for subject in [
        Subject::Version {
            service: "catalog".into(),
            version: "v2".into(),
        },
        Subject::ZonePair {
            source: "frontend".into(),
            destination: "catalog".into(),
            source_zone: "a".into(),
            destination_zone: "b".into(),
        },
        Subject::Sources {
            destination: "relay-1".into(),
            sources: vec!["client-7".into(), "client-9".into()],
        },
        Subject::Landscape,
    ] {
        let mut f = finding(subject, vec![]);
        f.signature = Signature::Rule;
        f.rule = Some("slow-checkout".into());
        assert_valid("finding.schema.json", &to_json(&f));
    }

    let reason = Reason {
        finding: "black-hole/node/catalog/1674982200000000".into(),
        signature: Signature::BlackHole,
        incident: "black-hole/node/catalog".into(),
        summary: "catalog answers nothing".into(),
    };
    for (i, (parameters, mode, action)) in [
        (
            Parameters::Backpressure(BackpressureParameters {
                rate_limit_rps: BTreeMap::from([("frontend".to_owned(), 60.0)]),
            }),
            Mode::DryRun,
            CommandAction::Issue,
        ),
        (
            Parameters::CircuitBreaker(CircuitBreakerParameters {
                status: 503,
                tier: Some("batch".into()),
                slower_than_us: Some(2_000_000),
            }),
            Mode::Enforce,
            CommandAction::Renew,
        ),
        (
            Parameters::Bulkhead(BulkheadParameters {
                max_concurrency: None,
                allow: vec![Edge {
                    source: "order".into(),
                    destination: "order-db".into(),
                }],
            }),
            Mode::Proposed,
            CommandAction::Issue,
        ),
        (
            Parameters::Segmentation(SegmentationParameters { status: 403 }),
            Mode::Enforce,
            CommandAction::Revoke,
        ),
        (
            Parameters::Quarantine(QuarantineParameters { weight: 0.05 }),
            Mode::DryRun,
            CommandAction::Issue,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let pattern = parameters.pattern();
        let command = RemediationCommand {
            schema_version: SCHEMA_VERSION,
            kind: "remediation-command".into(),
            id: format!("{}/node/catalog/1674982210000000", pattern.as_str()),
            action,
            revision: i as u32,
            parameters,
            target: Target {
                sources: vec!["frontend".into()],
                destinations: vec!["catalog".into()],
                source_zone: Some("zone-a".into()),
                destination_zone: None,
                version: (pattern == Pattern::Quarantine).then(|| "v2".into()),
            },
            issued_at_us: 1_674_982_210_000_000,
            ttl_us: 300_000_000,
            expires_at_us: 1_674_982_510_000_000,
            reason: reason.clone(),
            mode,
            signature: (i % 2 == 0).then(|| CommandSignature {
                key_id: "k".into(),
                hmac_sha256: "0".repeat(64),
            }),
        };
        let doc = to_json(&command);
        assert_valid("remediation-command.schema.json", &doc);
        let back: RemediationCommand = serde_json::from_value(doc).unwrap();
        assert_eq!(back, command);
    }

    for (action, dedup_key) in [
        (AlertAction::Trigger, "black-hole/node/catalog"),
        (AlertAction::Resolve, "black-hole/pair/frontend/catalog"),
    ] {
        let alert = Alert {
            schema_version: SCHEMA_VERSION,
            kind: "alert".into(),
            action,
            dedup_key: dedup_key.into(),
            summary: "black-hole at node catalog".into(),
            severity: Severity::Critical,
            at_us: 1_674_982_210_000_000,
            finding: "black-hole/node/catalog/1674982200000000".into(),
        };
        assert_valid("alert.schema.json", &to_json(&alert));
    }
}

fn opt_string() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[a-z0-9.:/-]{0,12}")
}

prop_compose! {
    fn arb_attempt()(
        address in opt_string(),
        status in proptest::option::of(100u16..=999),
        response_time_us in proptest::option::of(any::<u64>()),
        group in any::<u16>(),
    ) -> UpstreamAttempt {
        UpstreamAttempt { address, status, response_time_us, group }
    }
}

prop_compose! {
    fn arb_flow_record()(
        start_us in any::<i64>(),
        duration_us in proptest::option::of(any::<u64>()),
        (source, destination) in ("[a-z-]{1,10}", "[a-z-]{1,10}"),
        (source_zone, source_version, destination_zone, destination_version) in
            (opt_string(), opt_string(), opt_string(), opt_string()),
        (protocol, method, response_flags, upstream_host, request_id) in
            (opt_string(), opt_string(), opt_string(), opt_string(), opt_string()),
        status in proptest::option::of(100u16..=999),
        (bytes_received, bytes_sent) in (any::<u64>(), any::<u64>()),
        upstream_attempts in proptest::collection::vec(arb_attempt(), 0..3),
        reporter in proptest::sample::select(vec![
            Reporter::Envoy, Reporter::IstioSource, Reporter::IstioDestination,
            Reporter::Nginx, Reporter::NginxIngress, Reporter::Span,
        ]),
    ) -> FlowRecord {
        FlowRecord {
            schema_version: SCHEMA_VERSION, start_us, duration_us, source, source_zone,
            source_version, destination, destination_zone, destination_version, protocol,
            method, status, response_flags, bytes_received, bytes_sent, upstream_host,
            upstream_attempts, request_id, reporter,
        }
    }
}

proptest! {
    #[test]
    fn any_flow_record_serializes_to_a_valid_document(r in arb_flow_record()) {
        let doc = to_json(&r);
        prop_assert!(validator("flow-record.schema.json").is_valid(&doc), "{doc:#}");
    }

    #[test]
    fn any_pair_window_serializes_to_a_valid_document(
        requests in any::<u64>(),
        errors in any::<u64>(),
        rate_rps in 0.0f64..1e9,
        error_ratio in 0.0f64..=1.0,
        latency in proptest::option::of((any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())),
        start_us in any::<i32>(),
    ) {
        let mut w = pair_window(latency.map(|(p50_us, p90_us, p99_us, max_us)| Latency {
            p50_us, p90_us, p99_us, max_us,
        }));
        w.requests = requests;
        w.errors = errors;
        w.rate_rps = rate_rps;
        w.error_ratio = error_ratio;
        w.window = Window { start_us: i64::from(start_us), end_us: i64::from(start_us) + 10_000_000 };
        let doc = to_json(&w);
        prop_assert!(validator("pair-window.schema.json").is_valid(&doc), "{doc:#}");
    }
}
