//! Tests of the Envoy parsers.
//!
//! File fixtures are third-party logs in deploy/examples/logs (origins in
//! deploy/examples/README.md): `beats_envoyproxy_envoy.log` (elastic/beats) and
//! `integrations_envoyproxy_test-log.log` (elastic/integrations). Expected epoch seconds were
//! computed by hand (days since 1970-01-01 × 86 400 + time of day) and checked with
//! `date -u -d <timestamp> +%s`; the milliseconds of `%START_TIME%` are appended as µs.

use arrow::array::RecordBatch;
use proptest::prelude::*;
use schemas::{FlowBatchBuilder, FlowRecord, Reporter, flow_records};

use crate::error::{Reject, RejectReason};
use crate::mapping::{Mapping, MappingConfig, MatchField, RuleConfig, Side};
use crate::source::{IngestSink, IngestStats, LineParser, ReaderOptions, RejectedLine, read_lines};

use super::{EnvoyJsonParser, EnvoyTextParser};

pub(crate) const LOGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/logs");

/// beats_envoyproxy_envoy.log line 2.
const BEATS_2: &[u8] = br#"[2019-02-12T18:37:42.921Z] "GET /httpbin/ip HTTP/1.1" 200 - 0 43 217 216 "172.17.0.5" "curl/7.59.0" "c62ec130-6dee-4f3b-a52b-4f0d1312d89d" "httpbin.org" "52.87.35.92:80""#;

/// Parses one line that must yield exactly one record.
pub(crate) fn one(p: &mut dyn LineParser, line: &[u8]) -> FlowRecord {
    let mut out = FlowBatchBuilder::new();
    let n = p
        .parse_line(line, &mut out)
        .unwrap_or_else(|r| panic!("{r}: {}", String::from_utf8_lossy(line)));
    assert_eq!(n, 1);
    let mut records = flow_records(&out.finish()).unwrap();
    assert_eq!(records.len(), 1);
    records.remove(0)
}

/// Parses one line that must be rejected, checking nothing was appended.
pub(crate) fn reject(p: &mut dyn LineParser, line: &[u8]) -> Reject {
    let mut out = FlowBatchBuilder::new();
    let r = p.parse_line(line, &mut out).unwrap_err();
    assert!(out.is_empty(), "a rejected line appended rows");
    r
}

/// Collects batches and rejects of [`read_lines`].
#[derive(Default)]
pub(crate) struct Collect {
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) rejects: Vec<String>,
}

impl IngestSink for Collect {
    type Error = std::convert::Infallible;
    fn batch(&mut self, batch: RecordBatch, _lines: &[u64]) -> Result<(), Self::Error> {
        self.batches.push(batch);
        Ok(())
    }
    fn reject(&mut self, r: &RejectedLine<'_>) -> Result<(), Self::Error> {
        self.rejects.push(r.to_string());
        Ok(())
    }
}

/// Reads a whole fixture file through `p`: its records, stats and reject messages.
pub(crate) fn read_fixture(
    p: &mut dyn LineParser,
    file: &str,
) -> (Vec<FlowRecord>, IngestStats, Vec<String>) {
    let path = format!("{LOGS}/{file}");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut stats = IngestStats::default();
    let mut sink = Collect::default();
    read_lines(
        file,
        &data[..],
        p,
        &ReaderOptions::default(),
        &mut stats,
        &mut sink,
    )
    .unwrap();
    let records = sink
        .batches
        .iter()
        .flat_map(|b| flow_records(b).unwrap())
        .collect();
    (records, stats, sink.rejects)
}

pub(crate) fn mapping(
    service: Option<&str>,
    zone: Option<&str>,
    rules: Vec<RuleConfig>,
) -> Mapping {
    Mapping::try_from(MappingConfig {
        service: service.map(Into::into),
        zone: zone.map(Into::into),
        version: None,
        rules,
        ..Default::default()
    })
    .unwrap()
}

pub(crate) fn rule(
    field: MatchField,
    side: Side,
    pattern: &str,
    service: Option<&str>,
    zone: Option<&str>,
) -> RuleConfig {
    RuleConfig {
        field,
        pattern: pattern.into(),
        side,
        service: service.map(Into::into),
        zone: zone.map(Into::into),
        version: None,
    }
}

fn text() -> EnvoyTextParser {
    EnvoyTextParser::new(Mapping::default())
}

#[test]
fn beats_line_2_every_field() {
    let r = one(&mut text(), BEATS_2);
    // 2019-02-12: 49 years since 1970 with 12 leap days = 17 897 days to 2019-01-01, + 31 + 11
    // = 17 939 days → 1 549 929 600 s; 18:37:42 = 67 062 s → 1 549 996 662 s, .921 s.
    assert_eq!(r.start_us, 1_549_996_662_921_000);
    assert_eq!(r.duration_us, Some(217_000)); // %DURATION% 217 ms
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.protocol.as_deref(), Some("HTTP/1.1"));
    assert_eq!(r.status, Some(200));
    assert_eq!(r.response_flags, None);
    assert_eq!((r.bytes_received, r.bytes_sent), (0, 43));
    assert_eq!(r.source, "unknown");
    assert_eq!(r.destination, "httpbin.org");
    assert_eq!(r.upstream_host.as_deref(), Some("52.87.35.92:80"));
    assert_eq!(
        r.request_id.as_deref(),
        Some("c62ec130-6dee-4f3b-a52b-4f0d1312d89d")
    );
    assert_eq!(r.reporter, Reporter::Envoy);
    assert!(r.upstream_attempts.is_empty());
}

#[test]
fn beats_file_tcp_line_and_all_lines() {
    let (records, stats, rejects) = read_fixture(&mut text(), "beats_envoyproxy_envoy.log");
    assert_eq!(rejects, Vec::<String>::new());
    assert_eq!((stats.lines, stats.records), (2, 2));
    let tcp = &records[0];
    // 2019-04-06T06:20:05.972Z = 1 554 531 605 s (date -u), .972 s.
    assert_eq!(tcp.start_us, 1_554_531_605_972_000);
    assert_eq!(tcp.status, None); // response code 0: no response
    assert_eq!(tcp.response_flags.as_deref(), Some("UF,URX"));
    assert_eq!(tcp.protocol.as_deref(), Some("tcp"));
    assert_eq!(tcp.method, None);
    assert_eq!(tcp.duration_us, Some(0));
    assert_eq!(tcp.request_id, None);
    // No authority: the upstream host less its port.
    assert_eq!(tcp.destination, "127.0.0.1");
    assert_eq!(tcp.upstream_host.as_deref(), Some("127.0.0.1:9200"));
    assert_eq!(records[1].destination, "httpbin.org");
}

#[test]
fn integrations_file_every_line_with_prefix_and_envelopes() {
    let (r, stats, rejects) = read_fixture(&mut text(), "integrations_envoyproxy_test-log.log");
    assert_eq!(rejects, Vec::<String>::new());
    assert_eq!((stats.lines, stats.records), (7, 7));

    // Line 1, TCP: 87 bytes in, 254 out, 4 ms.
    assert_eq!(r[0].protocol.as_deref(), Some("tcp"));
    assert_eq!((r[0].bytes_received, r[0].bytes_sent), (87, 254));
    assert_eq!(r[0].duration_us, Some(4_000));
    assert_eq!(r[0].response_flags, None);
    assert_eq!(r[0].destination, "172.27.0.2");

    // Line 2: 2019-04-08T16:16:55.931Z = 1 554 740 215 s; authority localhost:8000.
    assert_eq!(r[1].start_us, 1_554_740_215_931_000);
    assert_eq!(r[1].destination, "localhost");
    assert_eq!((r[1].bytes_received, r[1].bytes_sent), (0, 89));
    assert_eq!(r[1].duration_us, Some(5_000));
    assert_eq!(r[1].upstream_host.as_deref(), Some("172.27.0.3:80"));

    // Line 3: 404 NR (no route) with upstream `-`: it reached no service, whatever its
    // authority (192.168.99.107:30901).
    assert_eq!(r[2].status, Some(404));
    assert_eq!(r[2].response_flags.as_deref(), Some("NR"));
    assert_eq!(r[2].upstream_host, None);
    assert_eq!(r[2].destination, schemas::UNROUTED);

    // Line 5: `ACCESS ` prefix; 2024-04-25T17:51:55.294Z = 1 714 067 515 s.
    assert_eq!(r[4].start_us, 1_714_067_515_294_000);
    assert_eq!(r[4].bytes_sent, 141);
    assert_eq!(r[4].duration_us, Some(0));
    assert_eq!(r[4].destination, "localhost");
    assert_eq!(r[4].source, "unknown");

    // Line 6: envelope; 2019-04-10T03:49:34.451Z = 1 554 868 174 s; source from the label.
    assert_eq!(r[5].start_us, 1_554_868_174_451_000);
    assert_eq!(r[5].source, "ambassador");
    assert_eq!(r[5].status, Some(501));
    assert_eq!(r[5].duration_us, Some(180_000));
    assert_eq!(r[5].destination, "httpbin.org");
    assert_eq!(r[5].upstream_host.as_deref(), Some("67.43.156.18:80"));
    assert_eq!(
        r[5].request_id.as_deref(),
        Some("413bf460-bd56-4515-ada4-2a69c5e78e54")
    );

    // Line 7: enveloped TCP line.
    assert_eq!(r[6].source, "ambassador");
    assert_eq!(r[6].protocol.as_deref(), Some("tcp"));
    assert_eq!(r[6].response_flags.as_deref(), Some("UF,URX"));
    assert_eq!(r[6].status, None);
}

#[test]
fn mapping_names_source_zone_and_destination_by_rule() {
    let m = mapping(
        Some("edge"),
        Some("eu-west-1a"),
        vec![
            rule(
                MatchField::UpstreamHost,
                Side::Destination,
                "52.87.*",
                Some("httpbin"),
                Some("us-east-1"),
            ),
            rule(MatchField::Authority, Side::Destination, "*", None, None),
        ],
    );
    let r = one(&mut EnvoyTextParser::new(m.clone()), BEATS_2);
    assert_eq!(r.source, "edge");
    assert_eq!(r.source_zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(r.destination, "httpbin");
    assert_eq!(r.destination_zone.as_deref(), Some("us-east-1"));
    // The own service wins over the envelope's label.
    let line =
        std::fs::read_to_string(format!("{LOGS}/integrations_envoyproxy_test-log.log")).unwrap();
    let enveloped = line.lines().nth(5).unwrap();
    let r = one(&mut EnvoyTextParser::new(m), enveloped.as_bytes());
    assert_eq!(r.source, "edge");
    // Second rule: `*` on the authority, service = the authority less its port.
    assert_eq!(r.destination, "httpbin.org");
    // Without an own service, a source rule on the envelope's pod name applies.
    let by_pod = mapping(
        None,
        None,
        vec![rule(
            MatchField::Pod,
            Side::Source,
            "ambassador-*",
            Some("gateway"),
            Some("b"),
        )],
    );
    let r = one(&mut EnvoyTextParser::new(by_pod), enveloped.as_bytes());
    assert_eq!(
        (r.source.as_str(), r.source_zone.as_deref()),
        ("gateway", Some("b"))
    );
}

#[test]
fn envelope_fallbacks_and_docker_log_key() {
    // Docker json-file: the line is under "log" with its newline; no labels, container name.
    let line = br#"{"log":"[2019-02-12T18:37:42.921Z] \"GET /httpbin/ip HTTP/1.1\" 200 - 0 43 217 216 \"-\" \"curl\" \"-\" \"httpbin.org\" \"52.87.35.92:80\"\n","stream":"stdout","kubernetes":{"container":{"name":"envoy"},"labels":{"app":"front"}}}"#;
    let r = one(&mut text(), line);
    assert_eq!(r.source, "front"); // label app before container name
    assert_eq!(r.duration_us, Some(217_000));
    let line = br#"{"message":"[2019-02-12T18:37:42.921Z] \"- - -\" 0 - 1 2 3 - \"-\" \"-\" \"-\" \"-\" \"-\""}"#;
    let r = one(&mut text(), line);
    assert_eq!(r.source, "unknown");
    assert_eq!(r.destination, schemas::UNROUTED); // no upstream host: reached no service
}

#[test]
fn rejects_name_field_and_value() {
    let mut p = text();
    let bad_status = String::from_utf8_lossy(BEATS_2).replace(" 200 ", " 2x0 ");
    let r = reject(&mut p, bad_status.as_bytes());
    assert_eq!(r.reason, RejectReason::BadNumber);
    assert_eq!(r.detail, r#"invalid response_code "2x0""#);

    let bad_time =
        String::from_utf8_lossy(BEATS_2).replace("2019-02-12T18:37:42.921Z", "yesterday");
    let r = reject(&mut p, bad_time.as_bytes());
    assert_eq!(r.reason, RejectReason::BadTimestamp);
    assert_eq!(r.detail, r#"invalid start_time "yesterday""#);

    let big = String::from_utf8_lossy(BEATS_2).replace(" 217 216 ", " 18446744073709552 216 ");
    let r = reject(&mut p, big.as_bytes());
    assert_eq!(r.reason, RejectReason::BadNumber);
    assert_eq!(r.detail, r#"duration "18446744073709552" ms overflows µs"#);

    let r = reject(&mut p, &BEATS_2[..BEATS_2.len() - 17]);
    assert_eq!(r.reason, RejectReason::Malformed);
    assert!(r.detail.contains("upstream_host"), "{}", r.detail);

    let mut utf = BEATS_2.to_vec();
    let at = utf
        .windows(13)
        .position(|w| w == b"\"httpbin.org\"")
        .unwrap();
    utf[at + 1] = 0xff;
    let r = reject(&mut p, &utf);
    assert_eq!(r.reason, RejectReason::InvalidUtf8);
    assert!(
        r.detail.starts_with("invalid utf-8 in authority"),
        "{}",
        r.detail
    );

    // Invalid UTF-8 in the path (not kept) does not reject the line.
    let mut path = BEATS_2.to_vec();
    let at = path.windows(3).position(|w| w == b"/ip").unwrap();
    path[at + 1] = 0xff;
    assert_eq!(one(&mut p, &path).destination, "httpbin.org");

    let r = reject(&mut p, br#"[2019-02-12T18:37:42.921Z] "GET" 200"#);
    assert_eq!(r.reason, RejectReason::Malformed);
    assert_eq!(r.detail, r#"request "GET" is not "method path protocol""#);

    let r = reject(&mut p, br#"{"message": 12}"#);
    assert_eq!(r.reason, RejectReason::BadJson);
    let r = reject(&mut p, br#"{"stream":"stdout"}"#);
    assert_eq!(r.reason, RejectReason::BadJson);
    let r = reject(&mut p, b"{\"message\":\"\xff\"}");
    assert_eq!(r.reason, RejectReason::InvalidUtf8);
    let r = reject(&mut p, b"hello");
    assert_eq!(r.reason, RejectReason::Malformed);
    assert_eq!(
        r.detail,
        r#"expected `[` for start_time at byte 0, found "hello""#
    );
}

#[test]
fn quoted_field_may_contain_a_quote_and_trailing_fields_are_ignored() {
    let line = br#"[2019-02-12T18:37:42.921Z] "GET /a HTTP/2" 503 UF 10 20 30 - "-" "agent "x" 1" "id" "api:8080" "10.0.0.1:80" extra fields"#;
    let r = one(&mut text(), line);
    assert_eq!(r.protocol.as_deref(), Some("HTTP/2"));
    assert_eq!(r.status, Some(503));
    assert_eq!(r.request_id.as_deref(), Some("id"));
    assert_eq!(r.destination, "api");
    assert_eq!(r.duration_us, Some(30_000));
    assert_eq!((r.bytes_received, r.bytes_sent), (10, 20));
}

#[test]
fn a_user_agent_with_quotes_cannot_spoof_the_fields_after_it() {
    // BEATS_2 with a client-controlled User-Agent that imitates the three last fields.
    // Envoy writes it unescaped; the real request id, authority and upstream host are the
    // line's three last quoted fields.
    let ua = r#"Mozilla" "spoofed-id" "payments.internal" "10.9.9.9:80"#;
    let line = String::from_utf8_lossy(BEATS_2).replace("curl/7.59.0", ua);
    let r = one(&mut text(), line.as_bytes());
    assert_eq!(r.destination, "httpbin.org");
    assert_eq!(
        r.request_id.as_deref(),
        Some("c62ec130-6dee-4f3b-a52b-4f0d1312d89d")
    );
    assert_eq!(r.upstream_host.as_deref(), Some("52.87.35.92:80"));
    assert_eq!(r.duration_us, Some(217_000));

    // The same through an X-Forwarded-For header, and through both.
    let line = String::from_utf8_lossy(BEATS_2).replace("172.17.0.5", ua);
    let r = one(&mut text(), line.as_bytes());
    assert_eq!(
        (r.destination.as_str(), r.request_id.as_deref()),
        ("httpbin.org", Some("c62ec130-6dee-4f3b-a52b-4f0d1312d89d"))
    );
    let line = line.replace("curl/7.59.0", ua);
    let r = one(&mut text(), line.as_bytes());
    assert_eq!(r.upstream_host.as_deref(), Some("52.87.35.92:80"));

    // In a container-runtime envelope (the message is JSON-unescaped first).
    let line = String::from_utf8_lossy(BEATS_2).replace("curl/7.59.0", ua);
    let env = serde_json::json!({ "message": line, "stream": "stdout" }).to_string();
    let r = one(&mut text(), env.as_bytes());
    assert_eq!(r.destination, "httpbin.org");
}

fn json() -> EnvoyJsonParser {
    EnvoyJsonParser::new(Mapping::default())
}

#[test]
fn json_format_with_strings() {
    // json_format renders every value as a string, unset as "-".
    let line = br#"{"start_time":"2019-02-12T18:37:42.921Z","method":"GET","path":"/httpbin/ip","protocol":"HTTP/1.1","response_code":"200","response_flags":"-","bytes_received":"0","bytes_sent":"43","duration":"217","upstream_service_time":"216","x_forwarded_for":"172.17.0.5","user_agent":"curl/7.59.0","request_id":"c62ec130","authority":"httpbin.org","upstream_host":"52.87.35.92:80","upstream_cluster":"httpbin"}"#;
    let r = one(&mut json(), line);
    assert_eq!(r.start_us, 1_549_996_662_921_000); // as beats line 2
    assert_eq!(r.duration_us, Some(217_000));
    assert_eq!(r.status, Some(200));
    assert_eq!(r.response_flags, None);
    assert_eq!((r.bytes_received, r.bytes_sent), (0, 43));
    // the cluster that answered, before the authority the client sent
    assert_eq!(r.destination, "httpbin");
    assert_eq!(r.upstream_host.as_deref(), Some("52.87.35.92:80"));
    assert_eq!(r.request_id.as_deref(), Some("c62ec130"));
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.protocol.as_deref(), Some("HTTP/1.1"));
    assert_eq!(r.reporter, Reporter::Envoy);
}

#[test]
fn typed_json_format_numbers_nulls_and_upper_case_keys() {
    // typed_json_format: numbers as numbers, unset as null; keys in operator spelling.
    let line = br#"{"START_TIME":"2019-04-06T06:20:05.972Z","METHOD":null,"PROTOCOL":null,"RESPONSE_CODE":0,"RESPONSE_FLAGS":"UF,URX","BYTES_RECEIVED":12.0,"BYTES_SENT":7,"DURATION":1.5,"UPSTREAM_HOST":"127.0.0.1:9200","UPSTREAM_CLUSTER":"elastic","x-request-id":"abc"}"#;
    let r = one(&mut json(), line);
    assert_eq!(r.start_us, 1_554_531_605_972_000);
    assert_eq!(r.protocol.as_deref(), Some("tcp")); // method and protocol null
    assert_eq!(r.method, None);
    assert_eq!(r.status, None); // 0: no response
    assert_eq!(r.response_flags.as_deref(), Some("UF,URX"));
    assert_eq!((r.bytes_received, r.bytes_sent), (12, 7));
    assert_eq!(r.duration_us, Some(1_500)); // 1.5 ms
    assert_eq!(r.request_id.as_deref(), Some("abc"));
    // No authority: the upstream cluster names the destination.
    assert_eq!(r.destination, "elastic");

    // Epoch seconds as a string (%START_TIME(%s.%3f)%), Istio JSON keys.
    let line = br#"{"start_time":"1554531605.972","response_code":503,"duration":"12","authority":"reviews:9080","upstream_host":"-","protocol":"HTTP/2","downstream_remote_address":"10.0.0.7:5000"}"#;
    let m = mapping(
        None,
        None,
        vec![rule(
            MatchField::DownstreamAddress,
            Side::Source,
            "10.0.0.7:*",
            Some("web"),
            None,
        )],
    );
    let r = one(&mut EnvoyJsonParser::new(m), line);
    assert_eq!(r.start_us, 1_554_531_605_972_000);
    assert_eq!(r.status, Some(503));
    assert_eq!(r.duration_us, Some(12_000));
    // neither an upstream host nor a cluster: the request reached no service, whatever its
    // authority says
    assert_eq!(r.destination, schemas::UNROUTED);
    assert_eq!(r.upstream_host, None);
    assert_eq!(r.protocol.as_deref(), Some("HTTP/2"));
    assert_eq!(r.source, "web");
    assert_eq!((r.bytes_received, r.bytes_sent), (0, 0)); // absent → 0
}

#[test]
fn json_rejects_name_the_key() {
    let mut p = json();
    let cases: [(&[u8], RejectReason, &str); 8] = [
        (
            br#"{"start_time":"2019-04-06T06:20:05.972Z","response_code":"2x0"}"#,
            RejectReason::BadNumber,
            r#"invalid response_code "2x0""#,
        ),
        (
            br#"{"start_time":"2019-04-06T06:20:05.972Z","bytes_sent":-4}"#,
            RejectReason::BadNumber,
            "invalid bytes_sent -4",
        ),
        (
            br#"{"start_time":"2019-04-06T06:20:05.972Z","bytes_sent":1.5}"#,
            RejectReason::BadNumber,
            "invalid bytes_sent 1.5: not a whole number",
        ),
        (
            br#"{"start_time":"2019-04-06T06:20:05.972Z","duration":"NaN"}"#,
            RejectReason::BadNumber,
            r#"invalid duration "NaN""#,
        ),
        (
            br#"{"start_time":"noon"}"#,
            RejectReason::BadTimestamp,
            r#"invalid start_time "noon""#,
        ),
        (
            br#"{"method":"GET"}"#,
            RejectReason::Malformed,
            "missing start_time (also accepted: START_TIME, timestamp)",
        ),
        (
            br#"{"start_time":"2019-04-06T06:20:05.972Z","method":{"a":1}}"#,
            RejectReason::BadJson,
            "method: expected a string, found an object or array",
        ),
        (
            br#"{"start_time":"2019-04-06T06:20:05.972Z","response_code":4000}"#,
            RejectReason::BadNumber,
            "response_code 4000 out of range 0..=999",
        ),
    ];
    for (line, reason, detail) in cases {
        let r = reject(&mut p, line);
        assert_eq!((r.reason, r.detail.as_str()), (reason, detail));
    }
    assert_eq!(reject(&mut p, b"[1,2]").reason, RejectReason::BadJson);
    assert_eq!(reject(&mut p, BEATS_2).reason, RejectReason::BadJson);
    assert_eq!(
        reject(&mut p, b"{\"start_time\":\"\xff\"}").reason,
        RejectReason::InvalidUtf8
    );
    let dup =
        br#"{"start_time":"2019-04-06T06:20:05.972Z","START_TIME":"2019-04-06T06:20:05.972Z"}"#;
    assert_eq!(reject(&mut p, dup).reason, RejectReason::BadJson);
}

/// Valid lines the property tests mutate.
const VALID: [&[u8]; 3] = [
    BEATS_2,
    br#"[2019-04-06T06:20:05.972Z] "- - -" 0 UF,URX 0 0 0 - "-" "-" "-" "-" "127.0.0.1:9200""#,
    br#"{"message":"ACCESS [2019-04-10T03:49:34.451Z] \"GET /httpbin/status/501 HTTP/1.1\" 501 - 0 0 180 179 \"172.17.0.3\" \"curl/7.59.0\" \"413b\" \"httpbin.org\" \"67.43.156.18:80\"","kubernetes":{"labels":{"service":"ambassador"}}}"#,
];

const VALID_JSON: &[u8] = br#"{"start_time":"2019-02-12T18:37:42.921Z","method":"GET","protocol":"HTTP/1.1","response_code":200,"response_flags":"-","bytes_received":"0","bytes_sent":43,"duration":217,"authority":"httpbin.org","upstream_host":"52.87.35.92:80","request_id":"c62e"}"#;

/// Parses `line` and checks the contract: one record appended on success, none on a reject,
/// and a reject always has a detail.
pub(crate) fn check_contract(p: &mut dyn LineParser, line: &[u8]) {
    let mut out = FlowBatchBuilder::new();
    match p.parse_line(line, &mut out) {
        Ok(n) => {
            assert_eq!(n, 1);
            assert_eq!(out.len(), 1);
            let r = &flow_records(&out.finish()).unwrap()[0];
            assert!(!r.source.is_empty() && !r.destination.is_empty());
        }
        Err(r) => {
            assert!(out.is_empty());
            assert!(!r.detail.is_empty());
            assert!(r.detail.len() < 1024, "detail too long: {}", r.detail.len());
        }
    }
}

/// A valid line with a few random byte edits (replace, insert, delete).
pub(crate) fn mutated(valid: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(valid),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    )
        .prop_map(|(line, edits)| {
            let mut v = line.to_vec();
            for (at, byte, op) in edits {
                let i = at.index(v.len() + 1);
                match op {
                    0 if i < v.len() => v[i] = byte,
                    1 => v.insert(i, byte),
                    _ if i < v.len() => {
                        v.remove(i);
                    }
                    _ => v.push(byte),
                }
            }
            v
        })
}

proptest! {
    #[test]
    fn text_never_panics_on_arbitrary_bytes(line in prop::collection::vec(any::<u8>(), 0..400)) {
        check_contract(&mut text(), &line);
        check_contract(&mut json(), &line);
    }

    #[test]
    fn text_never_panics_on_mutated_lines(line in mutated(&VALID)) {
        check_contract(&mut text(), &line);
    }

    #[test]
    fn json_never_panics_on_mutated_lines(line in mutated(&[VALID_JSON])) {
        check_contract(&mut json(), &line);
    }

    #[test]
    fn huge_fields_parse_or_reject(n in 0usize..200_000, fill in any::<u8>(), which in 0usize..4) {
        // A huge user agent, path, request id or authority.
        let big = vec![fill; n];
        let targets: [&[u8]; 4] = [b"curl/7.59.0", b"/httpbin/ip", b"c62ec130", b"httpbin.org"];
        let t = targets[which];
        let at = BEATS_2.windows(t.len()).position(|w| w == t).unwrap();
        let line = [&BEATS_2[..at], &big[..], &BEATS_2[at + t.len()..]].concat();
        check_contract(&mut text(), &line);
    }

    /// Any printable forwarded-for and user agent, quotes included (a client may send any),
    /// leave the fields Envoy writes after them intact.
    #[test]
    fn printable_fields_round_trip(
        xff in "[ -~]{0,40}", ua in "[ -~]{0,40}", id in "[a-z0-9][a-z0-9-]{0,35}",
        host in "[a-z][a-z0-9.]{0,20}", port in 1u16.., ms in 0u64..10_000_000,
        status in 100u16..600, sent in any::<u32>(),
    ) {
        let line = format!(
            r#"[2019-02-12T18:37:42.921Z] "GET /x HTTP/1.1" {status} - 1 {sent} {ms} - "{xff}" "{ua}" "{id}" "{host}:{port}" "10.0.0.1:80""#
        );
        let mut p = text();
        let mut out = FlowBatchBuilder::new();
        match p.parse_line(line.as_bytes(), &mut out) {
            Ok(_) => {
                let r = &flow_records(&out.finish()).unwrap()[0];
                prop_assert_eq!(r.duration_us, Some(ms * 1000));
                prop_assert_eq!(r.status, Some(status));
                prop_assert_eq!(r.bytes_sent, u64::from(sent));
                prop_assert_eq!(r.request_id.as_deref(), Some(id.as_str()));
                prop_assert_eq!(r.destination.as_str(), host.as_str());
                prop_assert_eq!(r.upstream_host.as_deref(), Some("10.0.0.1:80"));
            }
            Err(r) => prop_assert!(false, "{}: {}", r, line),
        }
    }
}

/// Throughput of the text parser into a builder (batches of 8 192 rows), printed; run with
/// `cargo test --release -p graywatch-ingest -- --ignored throughput --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn throughput_text() {
    let lines: Vec<Vec<u8>> =
        std::fs::read_to_string(format!("{LOGS}/integrations_envoyproxy_test-log.log"))
            .unwrap()
            .lines()
            .take(5) // the unwrapped lines: the hot path
            .map(|l| l.as_bytes().to_vec())
            .chain([BEATS_2.to_vec()])
            .collect();
    let n = 2_000_000;
    for with_builder in [false, true] {
        let mut p = text();
        let mut out = FlowBatchBuilder::new();
        let t = std::time::Instant::now();
        for i in 0..n {
            let line = &lines[i % lines.len()];
            if with_builder {
                p.parse_line(line, &mut out).unwrap();
                if out.len() == 8192 {
                    std::hint::black_box(out.finish());
                }
            } else {
                let mut cur = super::scan::Cursor::new(super::strip_access(line));
                let h = super::scan::head(&mut cur).unwrap();
                let b = super::scan::body(&mut cur).unwrap();
                std::hint::black_box((h, b));
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "envoy text, {n} lines of {} distinct, builder={with_builder}: {:.2} M lines/s",
            lines.len(),
            n as f64 / secs / 1e6
        );
    }
}

/// An edge Envoy's line for a request with `Host: {authority}`, answered `{status} {flags}`
/// by `{upstream}` (`-`: no upstream host).
fn edge_line(authority: &str, status: u16, flags: &str, upstream: &str) -> String {
    format!(
        "[2024-05-01T00:00:01.000Z] \"GET /pay HTTP/1.1\" {status} {flags} 0 0 1 - \"203.0.113.9\" \"curl/8.4.0\" \"id-1\" \"{authority}\" \"{upstream}\""
    )
}

#[test]
fn a_request_that_reached_no_service_is_not_the_inflow_of_the_host_it_named() {
    // A client sends `Host: payments:1`; the edge finds no route (404 NR, no upstream host).
    let forged = edge_line("payments:1", 404, "NR", "-");
    let r = one(&mut text(), forged.as_bytes());
    assert_eq!(r.destination, schemas::UNROUTED);
    // Not even when a rule maps that authority: rules name the service that answered, and
    // none did.
    let m = mapping(
        Some("edge"),
        None,
        vec![rule(
            MatchField::Authority,
            Side::Destination,
            "payments*",
            Some("payments"),
            None,
        )],
    );
    let mut p = EnvoyTextParser::new(m);
    let r = one(&mut p, forged.as_bytes());
    assert_eq!(
        (r.source.as_str(), r.destination.as_str()),
        ("edge", schemas::UNROUTED)
    );
    // No flag, but no upstream host either (a local reply): the same.
    let r = one(&mut p, edge_line("payments", 503, "-", "-").as_bytes());
    assert_eq!(r.destination, schemas::UNROUTED);
    // A request that reached an upstream keeps the rule's name.
    let r = one(
        &mut p,
        edge_line("payments", 200, "-", "10.0.8.3:8080").as_bytes(),
    );
    assert_eq!(r.destination, "payments");
    // JSON: no route, or no cluster found, whatever the authority.
    for flags in ["NR", "NC"] {
        let line = format!(
            r#"{{"start_time":"2024-05-01T00:00:01Z","response_code":404,"response_flags":"{flags}","authority":"payments","upstream_host":null,"upstream_cluster":null}}"#
        );
        assert_eq!(
            one(&mut json(), line.as_bytes()).destination,
            schemas::UNROUTED
        );
    }
}

#[test]
fn the_service_that_answered_names_the_destination_before_the_authority() {
    // `Host: payments`, routed to and answered by reviews: reviews' inflow, not payments'.
    let line = br#"{"start_time":"2024-05-01T00:00:01Z","response_code":200,"authority":"payments","upstream_host":"10.0.2.7:9080","upstream_cluster":"outbound|9080||reviews.default.svc.cluster.local"}"#;
    assert_eq!(one(&mut json(), line).destination, "reviews");
    // An Envoy cluster name without `|` is taken as it is.
    let line = br#"{"start_time":"2024-05-01T00:00:01Z","response_code":200,"authority":"payments","upstream_host":"10.0.2.7:9080","upstream_cluster":"reviews_v2"}"#;
    assert_eq!(one(&mut json(), line).destination, "reviews_v2");
    // Istio's pseudo-clusters name no service: the authority does (PassthroughCluster), or
    // nothing does (BlackHoleCluster).
    let line = br#"{"start_time":"2024-05-01T00:00:01Z","response_code":200,"authority":"api.example.com:443","upstream_host":"93.184.216.34:443","upstream_cluster":"PassthroughCluster"}"#;
    assert_eq!(one(&mut json(), line).destination, "api.example.com");
    let line = br#"{"start_time":"2024-05-01T00:00:01Z","response_code":502,"authority":"api.example.com","upstream_host":null,"upstream_cluster":"BlackHoleCluster"}"#;
    assert_eq!(one(&mut json(), line).destination, schemas::UNROUTED);
    // Rules come first, in the order written, whatever field each matches: an authority rule
    // written before a cluster rule wins.
    let authority_first = mapping(
        None,
        None,
        vec![
            rule(
                MatchField::Authority,
                Side::Destination,
                "pay*",
                Some("payments"),
                None,
            ),
            rule(
                MatchField::UpstreamCluster,
                Side::Destination,
                "*reviews*",
                Some("reviews"),
                None,
            ),
        ],
    );
    let line = br#"{"start_time":"2024-05-01T00:00:01Z","response_code":200,"authority":"payments","upstream_host":"10.0.2.7:9080","upstream_cluster":"outbound|9080||reviews.default.svc.cluster.local"}"#;
    assert_eq!(
        one(&mut EnvoyJsonParser::new(authority_first), line).destination,
        "payments"
    );
    let cluster_first = mapping(
        None,
        None,
        vec![
            rule(
                MatchField::UpstreamCluster,
                Side::Destination,
                "*reviews*",
                Some("reviews"),
                None,
            ),
            rule(
                MatchField::Authority,
                Side::Destination,
                "pay*",
                Some("payments"),
                None,
            ),
        ],
    );
    assert_eq!(
        one(&mut EnvoyJsonParser::new(cluster_first), line).destination,
        "reviews"
    );
    // The default text format has no cluster: with an upstream host, the authority names the
    // destination unless an upstream-host rule maps the address (see the module docs).
    let edge = edge_line("payments", 200, "-", "10.0.2.7:9080");
    assert_eq!(one(&mut text(), edge.as_bytes()).destination, "payments");
    let by_address = mapping(
        Some("edge"),
        None,
        vec![rule(
            MatchField::UpstreamHost,
            Side::Destination,
            "10.0.2.*",
            Some("reviews"),
            None,
        )],
    );
    assert_eq!(
        one(&mut EnvoyTextParser::new(by_address), edge.as_bytes()).destination,
        "reviews"
    );
}

#[test]
fn a_cluster_names_its_host_after_the_third_bar() {
    use super::scan::cluster_host;
    assert_eq!(
        cluster_host("outbound|9080|v2|reviews.default.svc.cluster.local"),
        Some("reviews.default.svc.cluster.local")
    );
    // a host with a bar in it is kept whole, as `splitn(4, '|')` keeps it
    assert_eq!(cluster_host("outbound|9080||a|b"), Some("a|b"));
    assert_eq!(cluster_host("inbound|9080||"), None);
    assert_eq!(cluster_host("outbound|9080"), None);
    assert_eq!(cluster_host("payments"), None);
}

#[test]
fn a_request_id_that_is_not_utf8_is_dropped_and_counted_and_the_record_kept() {
    let mut p = text();
    // valid line: the id is read from the line validated whole
    assert_eq!(
        one(&mut p, BEATS_2).request_id.as_deref(),
        Some("c62ec130-6dee-4f3b-a52b-4f0d1312d89d")
    );
    let mut bad = BEATS_2.to_vec();
    let at = bad.windows(8).position(|w| w == b"c62ec130").unwrap();
    bad[at + 2] = 0xff;
    let r = one(&mut p, &bad);
    assert_eq!(r.request_id, None);
    assert_eq!(r.destination, "httpbin.org");
    assert_eq!(r.duration_us, Some(217_000));
    assert_eq!(
        p.counters(),
        vec![(crate::error::DROPPED_REQUEST_IDS, 1)],
        "one id dropped"
    );
}
