//! Tests of the Istio parser.
//!
//! File fixtures are third-party logs in deploy/examples/logs (origins in
//! deploy/examples/README.md): `integrations_istio_test-access-logs.log` and
//! `integrations_istio_test-access_invalid_logs.log` (elastic/integrations). Expected epoch
//! seconds were computed by hand and checked with `date -u -d <timestamp> +%s`.

use proptest::prelude::*;
use schemas::{FlowRecord, Reporter};

use crate::envoy::tests::{check_contract, mapping, mutated, one, read_fixture, reject, rule};
use crate::error::RejectReason;
use crate::mapping::{Mapping, MatchField, Side};

use super::IstioParser;

const ACCESS: &str = "integrations_istio_test-access-logs.log";
const INVALID: &str = "integrations_istio_test-access_invalid_logs.log";

fn read(p: &mut IstioParser, file: &str) -> Vec<FlowRecord> {
    let (records, stats, rejects) = read_fixture(p, file);
    assert_eq!(rejects, Vec::<String>::new());
    assert_eq!(stats.records, stats.lines);
    records
}

fn line(file: &str, n: usize) -> String {
    let text = std::fs::read_to_string(format!("{}/{file}", crate::envoy::tests::LOGS)).unwrap();
    text.lines().nth(n - 1).unwrap().to_owned()
}

#[test]
fn every_line_parses_without_mapping() {
    let r = read(&mut IstioParser::new(Mapping::default()), ACCESS);
    assert_eq!(r.len(), 8);

    // Line 1, inbound at details' sidecar: 2022-07-20T09:52:24.955Z = 1 658 310 744 s.
    assert_eq!(r[0].start_us, 1_658_310_744_955_000);
    assert_eq!(r[0].reporter, Reporter::IstioDestination);
    // Service from the SNI outbound_.9080_._.details.default.svc.cluster.local.
    assert_eq!(r[0].destination, "details");
    assert_eq!(r[0].source, "unknown");
    assert_eq!(r[0].duration_us, Some(2_000)); // %DURATION% 2 ms
    assert_eq!((r[0].bytes_received, r[0].bytes_sent), (0, 178));
    assert_eq!(r[0].status, Some(200));
    assert_eq!(r[0].response_flags, None);
    assert_eq!(r[0].upstream_host.as_deref(), Some("10.68.2.10:9080"));
    assert_eq!(
        r[0].request_id.as_deref(),
        Some("785918d6-06b6-9312-bf77-6d9bd968dc21")
    );

    // Line 2: the authority is an IP, the SNI still names productpage.
    assert_eq!(r[1].destination, "productpage");
    assert_eq!(r[1].bytes_sent, 18_028);

    // Line 4, outbound at productpage's sidecar: 2022-08-22T13:08:23.188Z = 1 661 173 703 s.
    assert_eq!(r[3].start_us, 1_661_173_703_188_000);
    assert_eq!(r[3].reporter, Reporter::IstioSource);
    assert_eq!(r[3].source, "unknown"); // no own service configured
    assert_eq!(r[3].destination, "reviews"); // outbound|9080||reviews.default.svc…
    assert_eq!(r[3].duration_us, Some(12_000));
    assert_eq!(r[3].bytes_sent, 442);
    assert_eq!(r[3].upstream_host.as_deref(), Some("10.124.1.5:9080"));

    // Line 6: outbound to details.
    assert_eq!(
        (r[5].reporter, r[5].destination.as_str()),
        (Reporter::IstioSource, "details")
    );

    // Line 8: IPv6 upstream host kept as written.
    assert_eq!(r[7].upstream_host.as_deref(), Some("[2a02:cf40::7]:3000"));
    assert_eq!(r[7].destination, "ratings");
    assert_eq!(r[7].duration_us, Some(1_000));
}

#[test]
fn outbound_reviews_with_configured_workload() {
    let m = mapping(Some("productpage"), Some("us-central1-a"), vec![]);
    let r = one(&mut IstioParser::new(m), line(ACCESS, 4).as_bytes());
    assert_eq!(r.reporter, Reporter::IstioSource);
    assert_eq!(r.source, "productpage");
    assert_eq!(r.source_zone.as_deref(), Some("us-central1-a"));
    assert_eq!(r.destination, "reviews");
    assert_eq!(r.destination_zone, None);
    assert_eq!(r.duration_us, Some(12_000));
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.protocol.as_deref(), Some("HTTP/1.1"));
    assert_eq!(
        r.request_id.as_deref(),
        Some("00bcf1d7-12c4-93b9-b36a-bc0faac8e428")
    );
}

#[test]
fn inbound_details_with_rules_and_configured_workload() {
    // details' sidecar; the caller 10.68.1.7 is productpage by a source rule.
    let m = mapping(
        None,
        None,
        vec![rule(
            MatchField::DownstreamAddress,
            Side::Source,
            "10.68.1.7:*",
            Some("productpage"),
            Some("z1"),
        )],
    );
    let r = one(&mut IstioParser::new(m), line(ACCESS, 1).as_bytes());
    assert_eq!(r.reporter, Reporter::IstioDestination);
    assert_eq!(r.destination, "details");
    assert_eq!(
        (r.source.as_str(), r.source_zone.as_deref()),
        ("productpage", Some("z1"))
    );

    // A configured workload names the destination of inbound lines, with its zone.
    let m = mapping(Some("details-v1"), Some("z2"), vec![]);
    let r = one(&mut IstioParser::new(m), line(ACCESS, 1).as_bytes());
    assert_eq!(r.destination, "details-v1");
    assert_eq!(r.destination_zone.as_deref(), Some("z2"));
    assert_eq!(r.source, "unknown");

    // A destination rule on the upstream cluster wins over the cluster's host.
    let m = mapping(
        None,
        None,
        vec![rule(
            MatchField::UpstreamCluster,
            Side::Destination,
            "outbound|*||reviews.*",
            Some("reviews-v2"),
            Some("z3"),
        )],
    );
    let r = one(&mut IstioParser::new(m), line(ACCESS, 4).as_bytes());
    assert_eq!(
        (r.destination.as_str(), r.destination_zone.as_deref()),
        ("reviews-v2", Some("z3"))
    );
}

#[test]
fn a_user_agent_with_quotes_cannot_spoof_the_fields_after_it() {
    // Line 4 (outbound to reviews, request id 00bcf1d7-…) with client-written User-Agents
    // imitating the fields after them, Istio's unquoted tail included.
    let injections = [
        r#"Mozilla" "spoofed-id" "payments.internal" "10.9.9.9:80"#,
        r#"Mozilla" "spoofed-id" "payments:80" "10.9.9.9:80" outbound|80||payments.default.svc.cluster.local 1.1.1.1:1 2.2.2.2:2 3.3.3.3:3 - default x "x"#,
    ];
    for ua in injections {
        let l = line(ACCESS, 4).replace("curl/7.79.1", ua);
        assert!(l.contains(ua));
        let r = one(&mut IstioParser::new(Mapping::default()), l.as_bytes());
        assert_eq!(r.destination, "reviews", "{l}");
        assert_eq!(
            r.request_id.as_deref(),
            Some("00bcf1d7-12c4-93b9-b36a-bc0faac8e428")
        );
        assert_eq!(r.upstream_host.as_deref(), Some("10.124.1.5:9080"));
        assert_eq!(r.reporter, Reporter::IstioSource);
        assert_eq!(r.duration_us, Some(12_000));
    }
}

#[test]
fn a_quote_in_the_server_name_rejects_the_line() {
    // %REQUESTED_SERVER_NAME% (the TLS SNI, client-sent where the sidecar or gateway terminates
    // TLS) comes after the last quoted field; a quote in it moves the line's last `"`. The
    // upstream host read up to that quote then holds spaces: the line is rejected instead of
    // read with the client's cluster. (A server name that imitates every quoted field as well
    // is not caught: see the module docs, "Residual risk".)
    let sni = r#"evil" outbound|80||payments.default.svc.cluster.local"#;
    let l = line(ACCESS, 4).replace(" - default", &format!(" {sni} default"));
    assert!(l.contains(sni));
    let r = reject(&mut IstioParser::new(Mapping::default()), l.as_bytes());
    assert_eq!(r.reason, RejectReason::Malformed);
    assert!(
        r.detail
            .starts_with(r#"upstream_host "10.124.1.5:9080\" outbound|9080||"#),
        "{}",
        r.detail
    );
}

#[test]
fn invalid_logs_file_503_no_healthy_upstream() {
    let r = read(&mut IstioParser::new(Mapping::default()), INVALID);
    assert_eq!(r.len(), 1);
    let r = &r[0];
    // 2022-06-22T10:17:14.118Z = 1 655 893 034 s.
    assert_eq!(r.start_us, 1_655_893_034_118_000);
    assert_eq!(r.status, Some(503));
    assert_eq!(r.response_flags.as_deref(), Some("UH"));
    assert_eq!(r.upstream_host, None);
    assert_eq!(r.protocol, None); // `-`
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.duration_us, Some(1_000));
    assert_eq!((r.bytes_received, r.bytes_sent), (0, 19));
    assert_eq!(r.reporter, Reporter::IstioSource);
    assert_eq!(r.destination, "httpbin"); // outbound|8000||httpbin.default.svc.cluster.local
}

#[test]
fn outbound_requests_that_reached_no_service_go_to_the_unrouted_sink() {
    let base = line(ACCESS, 4);
    let mut p = IstioParser::new(Mapping::default());
    // Istio's BlackHoleCluster (REGISTRY_ONLY): refused, whatever the authority.
    let blocked = base
        .replace(
            "outbound|9080||reviews.default.svc.cluster.local",
            "BlackHoleCluster",
        )
        .replace(" 200 - ", " 502 - ");
    let r = one(&mut p, blocked.as_bytes());
    assert_eq!(
        (r.reporter, r.destination.as_str()),
        (Reporter::IstioSource, schemas::UNROUTED)
    );
    // No route: no cluster, no upstream host.
    let upstream = base
        .split('"')
        .rev()
        .nth(1)
        .expect("the upstream host field")
        .to_owned();
    let no_route = base
        .replace("outbound|9080||reviews.default.svc.cluster.local", "-")
        .replace(&format!("\"{upstream}\""), "\"-\"")
        .replace(" 200 - ", " 404 NR ");
    let r = one(&mut p, no_route.as_bytes());
    assert_eq!(r.response_flags.as_deref(), Some("NR"));
    assert_eq!(r.destination, schemas::UNROUTED);
}

#[test]
fn cluster_kinds_and_fallbacks() {
    let base = line(ACCESS, 4);
    let with_cluster = |cluster: &str, sni: &str| {
        base.replace("outbound|9080||reviews.default.svc.cluster.local", cluster)
            .replace(" - default", &format!(" {sni} default"))
    };
    let mut p = IstioParser::new(Mapping::default());
    // A ServiceEntry host keeps its full name.
    let r = one(
        &mut p,
        with_cluster("outbound|443||api.example.com", "-").as_bytes(),
    );
    assert_eq!(
        (r.reporter, r.destination.as_str()),
        (Reporter::IstioSource, "api.example.com")
    );
    // PassthroughCluster: the authority less its port.
    let r = one(&mut p, with_cluster("PassthroughCluster", "-").as_bytes());
    assert_eq!(
        (r.reporter, r.destination.as_str()),
        (Reporter::IstioSource, "reviews")
    );
    // Pre-1.10 inbound cluster names the service in its host part.
    let r = one(
        &mut p,
        with_cluster("inbound|9080|http|ratings.default.svc.cluster.local", "-").as_bytes(),
    );
    assert_eq!(
        (r.reporter, r.destination.as_str()),
        (Reporter::IstioDestination, "ratings")
    );
    // No cluster, but an Istio mTLS server name: inbound.
    let r = one(
        &mut p,
        with_cluster("-", "outbound_.9080_.v1_.details.default.svc.cluster.local").as_bytes(),
    );
    assert_eq!(
        (r.reporter, r.destination.as_str()),
        (Reporter::IstioDestination, "details")
    );
    // Without ROUTE_NAME (older Istio) the line still parses.
    let short = base.strip_suffix(" default").unwrap();
    assert_eq!(one(&mut p, short.as_bytes()).destination, "reviews");
    // A TCP connection (Istio docs' MongoDB example shape): no status, protocol tcp.
    let tcp = br#"[2020-11-25T21:26:18.409Z] "- - -" 0 - - - "-" 1169 3003 27 - "-" "-" "-" "-" "10.44.1.23:27017" outbound|27017||mongodb.default.svc.cluster.local 10.44.1.22:37834 10.0.2.4:27017 10.44.1.22:37832 - -"#;
    let r = one(&mut p, tcp);
    assert_eq!(r.protocol.as_deref(), Some("tcp"));
    assert_eq!((r.status, r.method.as_deref()), (None, None));
    assert_eq!((r.bytes_received, r.bytes_sent), (1169, 3003));
    assert_eq!(r.duration_us, Some(27_000));
    assert_eq!(r.destination, "mongodb");
    assert_eq!(r.upstream_host.as_deref(), Some("10.44.1.23:27017"));
    // In an envelope, the pod's app label names the workload.
    let env = format!(
        r#"{{"log":{},"kubernetes":{{"labels":{{"app":"productpage"}},"container":{{"name":"istio-proxy"}}}}}}"#,
        serde_json::to_string(&base).unwrap()
    );
    let r = one(&mut p, env.as_bytes());
    assert_eq!(
        (r.source.as_str(), r.destination.as_str()),
        ("productpage", "reviews")
    );
}

#[test]
fn rejects_name_field_and_value() {
    let mut p = IstioParser::new(Mapping::default());
    let base = line(ACCESS, 4);
    // An Envoy default-format line: bytes_received is where Istio has response code details.
    let envoy = br#"[2019-02-12T18:37:42.921Z] "GET /httpbin/ip HTTP/1.1" 200 - 0 43 217 216 "172.17.0.5" "curl/7.59.0" "c62e" "httpbin.org" "52.87.35.92:80""#;
    let r = reject(&mut p, envoy);
    assert_eq!(r.reason, RejectReason::Malformed);
    let r = reject(&mut p, base.replace(" 0 442 ", " 0 44x2 ").as_bytes());
    assert_eq!(
        (r.reason, r.detail.as_str()),
        (RejectReason::BadNumber, r#"invalid bytes_sent "44x2""#)
    );
    let r = reject(
        &mut p,
        base.replace(" 442 12 12 ", " 442 1.2 12 ").as_bytes(),
    );
    assert_eq!(
        (r.reason, r.detail.as_str()),
        (RejectReason::BadNumber, r#"invalid duration "1.2""#)
    );
    let cut = base.split(" outbound|").next().unwrap();
    let r = reject(&mut p, cut.as_bytes());
    assert_eq!(r.reason, RejectReason::Malformed);
    assert!(r.detail.contains("upstream_cluster"), "{}", r.detail);
    let mut bad = base.into_bytes();
    let at = bad.windows(8).position(|w| w == b"outbound").unwrap();
    bad[at] = 0xc0;
    let r = reject(&mut p, &bad);
    assert_eq!(r.reason, RejectReason::InvalidUtf8);
    assert!(
        r.detail.starts_with("invalid utf-8 in upstream_cluster"),
        "{}",
        r.detail
    );
}

const VALID: [&[u8]; 3] = [
    br#"[2022-07-20T09:52:24.955Z] "GET /details/0 HTTP/1.1" 200 - via_upstream - "-" 0 178 2 1 "-" "Mozilla/5.0" "785918d6" "details:9080" "10.68.2.10:9080" inbound|9080|| 127.0.0.6:47889 10.68.2.10:9080 10.68.1.7:39696 outbound_.9080_._.details.default.svc.cluster.local default"#,
    br#"[2022-08-22T13:08:23.188Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 442 12 12 "-" "curl/7.79.1" "00bcf1d7" "reviews:9080" "10.124.1.5:9080" outbound|9080||reviews.default.svc.cluster.local 10.124.2.6:50960 10.0.18.132:9080 10.124.2.6:52930 - default"#,
    br#"[2022-06-22T10:17:14.118Z] "GET /status/418 -" 503 UH no_healthy_upstream - "-" 0 19 1 - "-" "curl/7.83.1-DEV" "5735b2d0" "httpbin:8000" "-" outbound|8000||httpbin.default.svc.cluster.local - 10.99.37.119:8000 172.17.0.6:44690 - default"#,
];

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(line in prop::collection::vec(any::<u8>(), 0..400)) {
        check_contract(&mut IstioParser::new(Mapping::default()), &line);
    }

    #[test]
    fn never_panics_on_mutated_lines(line in mutated(&VALID)) {
        let m = mapping(Some("p"), None, vec![
            rule(MatchField::DownstreamAddress, Side::Source, "10.*", None, None),
            rule(MatchField::UpstreamCluster, Side::Destination, "*|*|*", None, None),
        ]);
        check_contract(&mut IstioParser::new(m), &line);
        check_contract(&mut IstioParser::new(Mapping::default()), &line);
    }

    #[test]
    fn huge_cluster_or_server_name(n in 0usize..100_000, fill in any::<u8>()) {
        let big = vec![fill; n];
        let base = VALID[0];
        let t = b"outbound_.9080_._.details.default.svc.cluster.local";
        let at = base.windows(t.len()).position(|w| w == t).unwrap();
        let line = [&base[..at], &big[..], &base[at + t.len()..]].concat();
        check_contract(&mut IstioParser::new(Mapping::default()), &line);
    }
}

/// A cluster whose host leaves no service name (`outbound|8000||.default.svc.cluster.local`,
/// as a mutated line had it) names no destination: the authority does. Found by the
/// never-panics property; an empty destination broke the flow-record contract.
#[test]
fn a_cluster_without_a_service_name_names_no_empty_destination() {
    let l = line(INVALID, 1).replace("||httpbin.default", "||.default");
    assert!(l.contains("outbound|8000||.default.svc"));
    let r = one(&mut IstioParser::new(Mapping::default()), l.as_bytes());
    assert_eq!(r.destination, "httpbin");
}
