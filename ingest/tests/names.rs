//! One rule for names in every format: a service, zone or version that would hold a control
//! character rejects its line (`bad-name`, naming the field and the byte); a request id that
//! is not UTF-8 is dropped from a record that is kept, and counted.

use ingest::{Format, Mapping};
use schemas::{FlowBatchBuilder, flow_records};

/// Real lines of the bundled fixtures (deploy/examples/logs/, deploy/examples/trainticket/).
const ENVOY: &str = r#"[2019-02-12T18:37:42.921Z] "GET /httpbin/ip HTTP/1.1" 200 - 0 43 217 216 "172.17.0.5" "curl/7.59.0" "c62ec130-6dee-4f3b-a52b-4f0d1312d89d" "httpbin.org" "52.87.35.92:80""#;
const ISTIO: &str = r#"[2022-08-22T10:51:35.926Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 437 30 29 "-" "curl/7.79.1" "f5dd9a93-895b-9a0d-a830-44694ed10c4c" "reviews:9080" "10.124.0.12:9080" inbound|9080|| 127.0.0.6:50151 10.124.0.12:9080 10.124.2.6:54438 outbound_.9080_._.reviews.default.svc.cluster.local default"#;
const INGRESS: &str = r#"192.168.64.1 - - [07/Feb/2020:11:48:51 +0000] "POST /products HTTP/1.1" 200 59 "-" "curl/7.54.0" 89 0.001 [default-web-8080] [] 172.17.0.5:8080 59 0.000 200 529a007902362a5f51385a5fa7049884"#;
const SPANS_HEADER: &str =
    "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration";
const SPAN: &str = "b0103bb0161ad7fa352fe1828eeb643a,520b067330e3ede5,root,ts-gateway-service-6f6cfc45b-h5m2n,/*,1674981768697000000,1674981769015316530,318316";
const FLOW: &str = r#"{"schema_version":1,"start_us":1661173703188000,"duration_us":12000,"source":"productpage","source_zone":null,"source_version":null,"destination":"reviews","destination_zone":null,"destination_version":null,"protocol":"HTTP/1.1","method":"GET","status":200,"response_flags":null,"bytes_received":0,"bytes_sent":442,"upstream_host":"10.124.1.5:9080","upstream_attempts":[],"request_id":"00bc","reporter":"istio-source"}"#;

/// `line` with the first `from` replaced by `to`, as bytes.
fn with(line: &str, from: &str, to: &[u8]) -> Vec<u8> {
    let at = line.find(from).expect("the fixture holds it");
    let mut out = line.as_bytes()[..at].to_vec();
    out.extend_from_slice(to);
    out.extend_from_slice(&line.as_bytes()[at + from.len()..]);
    out
}

#[test]
fn a_control_character_in_a_name_rejects_the_line_in_every_format() {
    let cases: [(&str, Option<&str>, Vec<u8>, &str); 6] = [
        (
            "envoy",
            None,
            with(ENVOY, "httpbin.org", b"httpbin\0.org"),
            "destination \"httpbin\\0.org\": control character U+0000 at byte 7",
        ),
        (
            "istio",
            None,
            // every field that may name the destination (authority, server name)
            ISTIO.replace("reviews", "rev\x1b[2Jiews").into_bytes(),
            "control character U+001B at byte 3",
        ),
        (
            "envoy-json",
            None,
            br#"{"start_time":"2019-02-12T18:37:42.921Z","authority":"pay\u0000ments","upstream_host":"10.1.0.7:8080","response_code":200}"#
                .to_vec(),
            "destination \"pay\\0ments\": control character U+0000 at byte 3",
        ),
        (
            "nginx-ingress",
            None,
            with(INGRESS, "[default-web-8080]", b"[default-\x07web-8080]"),
            "control character U+0007 at byte 8",
        ),
        (
            "spans-csv",
            Some(SPANS_HEADER),
            with(SPAN, "ts-gateway", b"ts-\x7fgateway"),
            "PodName \"ts-\\u{7f}gateway-service-6f6cfc45b-h5m2n\": control character U+007F at byte 3",
        ),
        (
            "flow-json",
            None,
            with(FLOW, "\"productpage\"", br#""product\npage""#),
            "source \"product\\npage\": control character U+000A at byte 7",
        ),
    ];
    for (format, header, line, detail) in cases {
        let mut parser = format
            .parse::<Format>()
            .unwrap()
            .parser(&Mapping::default())
            .unwrap();
        let mut out = FlowBatchBuilder::new();
        if let Some(h) = header {
            parser.parse_line(h.as_bytes(), &mut out).unwrap();
        }
        let reject = parser
            .parse_line(&line, &mut out)
            .expect_err(&format!("{format}: {}", String::from_utf8_lossy(&line)));
        assert_eq!(reject.reason.as_str(), "bad-name", "{format}: {reject}");
        assert!(
            reject.detail.contains(detail),
            "{format}: {}",
            reject.detail
        );
        assert!(out.is_empty(), "{format}: nothing appended");
    }
}

#[test]
fn a_request_id_that_is_not_utf8_is_dropped_and_the_record_kept() {
    let cases = [
        (
            "envoy",
            with(ENVOY, "c62ec130-6dee", b"c62ec130-\xff\xfe"),
            "httpbin.org",
        ),
        (
            "istio",
            with(ISTIO, "f5dd9a93-895b", b"f5dd9a93-\xc3("),
            "reviews",
        ),
        (
            "nginx-ingress",
            with(INGRESS, "529a0079", b"529a\xe2\x82"),
            "default-web-8080",
        ),
    ];
    for (format, line, destination) in cases {
        let mut parser = format
            .parse::<Format>()
            .unwrap()
            .parser(&Mapping::default())
            .unwrap();
        let mut out = FlowBatchBuilder::new();
        let parsed = parser.parse_line(&line, &mut out);
        assert_eq!(parsed.map_err(|r| r.to_string()), Ok(1), "{format}");
        let records = flow_records(&out.finish()).unwrap();
        assert_eq!(records[0].destination, destination, "{format}");
        assert_eq!(records[0].request_id, None, "{format}");
        assert_eq!(
            parser.counters(),
            vec![("request ids not UTF-8 (dropped, records kept)", 1)],
            "{format}"
        );
    }
}
