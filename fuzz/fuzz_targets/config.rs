//! The config file's sections that the library crates validate: `[mapping]` (service mapping,
//! rules, writer, per-input mappings), `[detect]` (window geometry, black-hole thresholds) and
//! `[actuate]` (mode, policy, rails, signing, alerts), read from TOML exactly as `graywatch validate` reads
//! them (the same serde types; the root crate's own sections, `[runtime]`, `[kafka]`,
//! `[checkpoint]`, `[http]`, `[scale-out]`, `[alerting]`, are accepted as any TOML, see `scripts/fuzz`).
//! A mapping that validates drives every built-in format's parser over real lines (from
//! `deploy/examples/`) without breaking the record invariants; an accepted window is
//! positive.
#![no_main]

use graywatch_fuzz::{ACCESS_LOG, Expect, one_line};
use ingest::{Format, Mapping, MappingConfig};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// The root crate's `Config`, with its own sections as plain TOML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(dead_code)] // the root crate's sections are read, not used
struct Config {
    #[serde(default)]
    mapping: MappingConfig,
    #[serde(default)]
    detect: detect::DetectConfig,
    #[serde(default)]
    actuate: actuate::ActuateConfig,
    runtime: Option<toml::Table>,
    kafka: Option<toml::Table>,
    checkpoint: Option<toml::Table>,
    http: Option<toml::Table>,
    scale_out: Option<toml::Table>,
    alerting: Option<toml::Table>,
}

/// One line of each format, from `deploy/examples/` (origins in its README).
const LINES: [(&str, &[u8]); 6] = [
    (
        "envoy",
        br#"[2019-04-08T16:16:55.931Z] "GET /service/1 HTTP/1.1" 200 - 0 89 5 4 "-" "curl/7.54.0" "c219f6da-2b7f-483e-9ced-ec323d9330a9" "localhost:8000" "172.27.0.3:80""#,
    ),
    (
        "envoy",
        br#"{"message":"ACCESS [2019-04-10T03:49:34.451Z] \"GET /httpbin/status/501 HTTP/1.1\" 501 - 0 0 180 179 \"172.17.0.3\" \"curl/7.59.0\" \"413bf460\" \"httpbin.org\" \"67.43.156.18:80\"","stream":"stdout","kubernetes":{"container":{"name":"ambassador"},"pod":{"name":"ambassador-76c58d9df4-jwhsg"},"labels":{"service":"ambassador"}}}"#,
    ),
    (
        "istio",
        br#"[2022-08-22T10:51:35.926Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 437 30 29 "-" "curl/7.79.1" "f5dd9a93-895b-9a0d-a830-44694ed10c4c" "reviews:9080" "10.124.0.12:9080" inbound|9080|| 127.0.0.6:50151 10.124.0.12:9080 10.124.2.6:54438 outbound_.9080_._.reviews.default.svc.cluster.local default"#,
    ),
    (
        "nginx-ingress",
        br#"192.168.64.1 - - [07/Feb/2020:11:48:51 +0000] "POST /products HTTP/1.1" 200 59 "-" "curl/7.54.0" 89 0.001 [default-web-8080] [] 172.17.0.5:8080 59 0.000 200 529a007902362a5f51385a5fa7049884"#,
    ),
    (
        "nginx-combined",
        br#"83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /presentations/logstash-monitorama-2013/images/kibana-search.png HTTP/1.1" 200 203023 "-" "Mozilla/5.0""#,
    ),
    (
        "envoy-json",
        br#"{"start_time":"2019-02-12T18:37:42.921Z","method":"GET","protocol":"HTTP/1.1","response_code":"200","bytes_sent":"43","duration":"217","request_id":"c62ec130","authority":"httpbin.org","upstream_host":"52.87.35.92:80","upstream_cluster":"httpbin","downstream_remote_address":"10.0.0.7:4711"}"#,
    ),
];

const SPANS: [&[u8]; 3] = [
    b"TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration",
    b"b0103bb0161ad7fa352fe1828eeb643a,520b067330e3ede5,root,ts-gateway-service-6f6cfc45b-h5m2n,/*,1674981768697000000,1674981769015316530,318316",
    b"b0103bb0161ad7fa352fe1828eeb643a,a4424f20bffee416,520b067330e3ede5,ts-order-service-6f6cfc45b-h5m2n,get,1674981768697763387,1674981769015072039,317308",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<Config>(text) else {
        return;
    };
    if let Ok(window) = detect::pair::WindowSpec::try_from(&config.detect.window) {
        assert!(
            window.length_us() > 0,
            "an accepted window of {} µs",
            window.length_us()
        );
    }
    let _ = detect::suite::Suite::try_from(&config.detect);
    let _ = actuate::Actuator::try_from(config.actuate);
    let Ok(mapping) = Mapping::try_from(config.mapping) else {
        return;
    };
    let writer = mapping.writer().clone();
    for (name, line) in LINES {
        let format: Format = name.parse().unwrap();
        for input in [
            "access.log",
            "/var/log/pods/shop_cart-7d9/istio-proxy/0.log",
        ] {
            let parser = format.parser_for(&mapping, input, None);
            let mut parser = parser.expect("a valid mapping builds every parser");
            let expect = Expect {
                start_range: None,
                ..ACCESS_LOG
            };
            // a writer expects envelopes: the bare line may be rejected, never mangled
            let _ = one_line(parser.as_mut(), line, &expect);
        }
    }
    let mut spans = Format::SpansCsv
        .parser_for(&mapping, "trace.csv", Some(&writer))
        .unwrap();
    let expect = Expect {
        max_rows: usize::MAX,
        start_range: None,
        dash_is_none: false,
    };
    for line in SPANS {
        let _ = one_line(spans.as_mut(), line, &expect);
    }
});
