//! NGINX parser tests. Fixtures are third-party logs in deploy/examples/logs (see
//! deploy/examples/README.md for each file's origin). Expected epoch seconds were computed
//! with `date -u -d '<UTC date>' +%s` from the logged time and offset.

use proptest::prelude::*;
use schemas::{FlowRecord, UpstreamAttempt, flow_records};

use super::*;
use crate::format::Format;
use crate::mapping::{MappingConfig, RuleConfig};

const LOGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/logs");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{LOGS}/{name}")).unwrap()
}

/// Parses every non-blank line; returns the records and the rejects with 1-based line numbers.
fn parse_all(parser: &mut dyn LineParser, text: &str) -> (Vec<FlowRecord>, Vec<(usize, Reject)>) {
    let mut out = FlowBatchBuilder::new();
    let mut rejects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Err(r) = parser.parse_line(line.as_bytes(), &mut out) {
            rejects.push((i + 1, r));
        }
    }
    (flow_records(&out.finish()).unwrap(), rejects)
}

fn combined() -> NginxParser {
    NginxParser::new(COMBINED, Reporter::Nginx, Mapping::default()).unwrap()
}

fn ingress() -> NginxParser {
    NginxParser::new(UPSTREAMINFO, Reporter::NginxIngress, Mapping::default()).unwrap()
}

fn one(parser: &mut NginxParser, line: &str) -> FlowRecord {
    let mut out = FlowBatchBuilder::new();
    assert_eq!(parser.parse_line(line.as_bytes(), &mut out), Ok(1));
    flow_records(&out.finish()).unwrap().remove(0)
}

fn attempt(
    addr: Option<&str>,
    status: Option<u16>,
    rt: Option<u64>,
    group: u16,
) -> UpstreamAttempt {
    UpstreamAttempt {
        address: addr.map(Into::into),
        status,
        response_time_us: rt,
        group,
    }
}

fn rule(field: MatchField, side: Side, pattern: &str, service: Option<&str>) -> RuleConfig {
    RuleConfig {
        field,
        pattern: pattern.into(),
        side,
        service: service.map(Into::into),
        zone: None,
        version: None,
    }
}

#[test]
fn beats_combined_all_lines_with_exact_values() {
    // beats_nginx_access_test.log: 7 combined lines, all valid.
    let (recs, rejects) = parse_all(&mut combined(), &read("beats_nginx_access_test.log"));
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(recs.len(), 7);

    // Line 1: forwarded-for list before ident; 07/Dec/2016:11:05:07 +0100 = 10:05:07Z =
    // 1481105107 s. No $request_time in combined: start = logged time, duration None.
    let r = &recs[0];
    assert_eq!(r.start_us, 1_481_105_107_000_000);
    assert_eq!(r.duration_us, None);
    assert_eq!(r.status, Some(200));
    assert_eq!(r.bytes_sent, 571);
    assert_eq!(r.bytes_received, 0);
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.protocol.as_deref(), Some("HTTP/1.1"));
    // No upstream: an unknown client calling the proxy itself.
    assert_eq!(r.source, UNKNOWN_SERVICE);
    assert_eq!(r.destination, "nginx");
    assert_eq!(r.reporter, Reporter::Nginx);
    assert!(r.upstream_attempts.is_empty());
    assert_eq!(r.upstream_host, None);

    // Line 2: an extra `"-"` appended after the format's end is accepted.
    // 29/May/2017:19:02:48 +0000 = 1496084568 s.
    assert_eq!(recs[1].start_us, 1_496_084_568_000_000);
    assert_eq!((recs[1].status, recs[1].bytes_sent), (Some(404), 612));

    // Line 6: IPv6 in the forwarded list; 30/Dec/2016:06:47:09 +0000 = 1483080429 s.
    assert_eq!(recs[5].start_us, 1_483_080_429_000_000);
    assert_eq!((recs[5].status, recs[5].bytes_sent), (Some(404), 8571));

    // Line 7: empty request `""`: no method, no protocol. 12/Apr/2018:09:48:40 +0200 =
    // 07:48:40Z = 1523519320 s.
    let r = &recs[6];
    assert_eq!(r.start_us, 1_523_519_320_000_000);
    assert_eq!((r.method.as_deref(), r.protocol.as_deref()), (None, None));
    assert_eq!((r.status, r.bytes_sent), (Some(400), 0));
}

#[test]
fn source_rule_matches_the_last_remote_address() {
    // Line 6 of beats_nginx_access_test.log: `2a03:…:8000, 10.225.192.17 10.2.2.121`: the
    // connected peer is the last address, 10.2.2.121.
    let mapping = Mapping::try_from(MappingConfig {
        service: Some("edge".into()),
        rules: vec![rule(
            MatchField::DownstreamAddress,
            Side::Source,
            "10.2.2.*",
            Some("office"),
        )],
        ..Default::default()
    })
    .unwrap();
    let mut p = NginxParser::new(COMBINED, Reporter::Nginx, mapping).unwrap();
    let text = read("beats_nginx_access_test.log");
    let line6 = text.lines().nth(5).unwrap();
    let r = one(&mut p, line6);
    assert_eq!(r.source, "office");
    assert_eq!(r.destination, "edge");
    // Line 1's last address 127.0.0.1 does not match: unknown client.
    let r = one(&mut p, text.lines().next().unwrap());
    assert_eq!(r.source, UNKNOWN_SERVICE);
}

#[test]
fn lnav_logs_and_the_line_missing_ident() {
    // lnav_logfile_access_log.0: 3 valid lines. 20/Jul/2009:22:59:26 +0000 = 1248130766 s.
    let (recs, rejects) = parse_all(&mut combined(), &read("lnav_logfile_access_log.0"));
    assert!(rejects.is_empty());
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].start_us, 1_248_130_766_000_000);
    assert_eq!(recs[0].protocol.as_deref(), Some("HTTP/1.0"));
    assert_eq!((recs[0].status, recs[0].bytes_sent), (Some(200), 134));
    assert_eq!((recs[2].status, recs[2].bytes_sent), (Some(200), 78929));

    // lnav_logfile_bad_access_log.0: line 2 has no ` - ` ident/user fields.
    let (recs, rejects) = parse_all(&mut combined(), &read("lnav_logfile_bad_access_log.0"));
    assert_eq!(recs.len(), 2);
    assert_eq!(rejects.len(), 1);
    let (line_no, reject) = &rejects[0];
    assert_eq!(*line_no, 2);
    assert_eq!(reject.reason, RejectReason::Malformed);
    assert_eq!(
        reject.detail,
        r#"missing " - " after $remote_addr (at byte 0)"#
    );
}

#[test]
fn elastic_apache_logs_all_parse_and_match_an_independent_reading() {
    // elastic_examples_apache_logs.log: 10 000 combined lines, `-` bytes for empty bodies.
    let text = read("elastic_examples_apache_logs.log");
    let (recs, rejects) = parse_all(&mut combined(), &text);
    // Line 8899 is cut short inside the user agent (no closing `"`): the one invalid line.
    assert_eq!(rejects.len(), 1, "{:?}", &rejects[..rejects.len().min(3)]);
    assert_eq!(rejects[0].0, 8899);
    assert_eq!(
        rejects[0].1,
        Reject::new(
            RejectReason::Malformed,
            r#"missing "\"" after $http_user_agent (at byte 111)"#
        )
    );
    assert_eq!(recs.len(), 9_999);
    // Independent reading: the text between the 2nd and 3rd `"` is ` <status> <bytes> `
    // (no line of this file contains an escaped quote).
    let mut expected_bytes = 0u64;
    let mut dashes = 0;
    let valid = text
        .lines()
        .enumerate()
        .filter(|(i, _)| i + 1 != 8899)
        .map(|(_, l)| l);
    for (line, rec) in valid.zip(&recs) {
        let mid: Vec<&str> = line.split('"').nth(2).unwrap().split_whitespace().collect();
        assert_eq!(rec.status, Some(mid[0].parse().unwrap()), "{line}");
        if mid[1] == "-" {
            dashes += 1;
            assert_eq!(rec.bytes_sent, 0);
        } else {
            expected_bytes += mid[1].parse::<u64>().unwrap();
        }
    }
    assert!(dashes > 0);
    assert_eq!(
        recs.iter().map(|r| r.bytes_sent).sum::<u64>(),
        expected_bytes
    );
    // Status histogram, counted with `awk '{print $9}' | sort | uniq -c` (line 8899 is a 200).
    let count = |s: u16| recs.iter().filter(|r| r.status == Some(s)).count();
    assert_eq!(
        [200, 206, 301, 304, 403, 404, 416, 500].map(count),
        [9125, 45, 164, 445, 2, 213, 2, 3]
    );
    // Line 1: 17/May/2015:10:05:03 +0000 = 1431857103 s; 203023 bytes.
    assert_eq!(recs[0].start_us, 1_431_857_103_000_000);
    assert_eq!(recs[0].bytes_sent, 203_023);
}

#[test]
fn ingress_upstreaminfo_with_exact_values() {
    // beats_nginx_ingress_controller_test.log: ingress-nginx `upstreaminfo`, 29 lines.
    let text = read("beats_nginx_ingress_controller_test.log");
    let (recs, rejects) = parse_all(&mut ingress(), &text);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(recs.len(), text.lines().count());

    // Line 1: logged 07/Feb/2020:11:48:51 +0000 = 1581076131 s, request_time 0.001 s:
    // start = 1581076131 s − 1 000 µs.
    let r = &recs[0];
    assert_eq!(r.start_us, 1_581_076_131_000_000 - 1_000);
    assert_eq!(r.duration_us, Some(1_000));
    assert_eq!(r.method.as_deref(), Some("POST"));
    assert_eq!(
        (r.status, r.bytes_sent, r.bytes_received),
        (Some(200), 59, 89)
    );
    assert_eq!(r.source, "nginx-ingress");
    assert_eq!(r.destination, "default-web-8080");
    assert_eq!(r.upstream_host.as_deref(), Some("172.17.0.5:8080"));
    assert_eq!(
        r.upstream_attempts,
        vec![attempt(Some("172.17.0.5:8080"), Some(200), Some(0), 0)]
    );
    assert_eq!(
        r.request_id.as_deref(),
        Some("529a007902362a5f51385a5fa7049884")
    );
    assert_eq!(r.reporter, Reporter::NginxIngress);

    // Line 5: bogus method `PATCHp`, answered 400 without an upstream; 11:49:50 = 1581076190.
    let r = &recs[4];
    assert_eq!(r.method.as_deref(), Some("PATCHp"));
    assert_eq!(recs[5].method.as_deref(), Some("geti"));
    assert_eq!(r.start_us, 1_581_076_190_000_000);
    assert_eq!(r.duration_us, Some(0));
    assert_eq!(
        (r.status, r.bytes_sent, r.bytes_received),
        (Some(400), 163, 0)
    );
    assert_eq!(r.source, UNKNOWN_SERVICE);
    assert_eq!(r.destination, "nginx-ingress");
    assert!(r.upstream_attempts.is_empty());
    assert_eq!(r.upstream_host, None);

    // Line 23: two upstreams `172.17.0.6:8080, 172.17.0.7:8080`, statuses `200, 203`, times
    // `0.100, 0.004`; 12:02:42 = 1581076962 s, request_time 0.001.
    let r = &recs[22];
    assert_eq!(r.start_us, 1_581_076_962_000_000 - 1_000);
    assert_eq!(r.destination, "default-web2-8080");
    assert_eq!(
        r.upstream_attempts,
        vec![
            attempt(Some("172.17.0.6:8080"), Some(200), Some(100_000), 0),
            attempt(Some("172.17.0.7:8080"), Some(203), Some(4_000), 0),
        ]
    );
    assert_eq!(r.upstream_host.as_deref(), Some("172.17.0.7:8080"));

    // Line 25: IPv6 client and upstream, 24/Aug/2022:21:04:17 = 1661375057 s, 0.033 s.
    let r = &recs[24];
    assert_eq!(r.start_us, 1_661_375_057_000_000 - 33_000);
    assert_eq!(r.duration_us, Some(33_000));
    assert_eq!(r.bytes_received, 2057);
    assert_eq!(r.upstream_host.as_deref(), Some("[2a02:cf40::]:9200"));
    assert_eq!(r.destination, "esmon-esmon-es-http-9200");

    // Line 26: two bracketed IPv6 upstreams, both 502, HTTP/2.0.
    let r = &recs[25];
    assert_eq!(r.protocol.as_deref(), Some("HTTP/2.0"));
    assert_eq!(r.status, Some(502));
    assert_eq!(
        r.upstream_attempts,
        vec![
            attempt(Some("[2a02:cf40::7]:5000"), Some(502), Some(0), 0),
            attempt(Some("[2a02:cf40::4e36]:5000"), Some(502), Some(0), 0),
        ]
    );
    // Line 27: a malformed address is kept as logged.
    assert_eq!(
        recs[26].upstream_host.as_deref(),
        Some("[2a02:cf40::::::::4e36]:500000000")
    );
    // Line 28: a unix socket upstream; 11:56:54 = 1581076614 s, 0.002 s.
    let r = &recs[27];
    assert_eq!(
        r.upstream_host.as_deref(),
        Some("unix:/var/run/php-fpm.sock")
    );
    assert_eq!(r.start_us, 1_581_076_614_000_000 - 2_000);

    // Line 29: partial lists: `A, B` with times `0.100, -` and statuses `200, -`.
    let r = &recs[28];
    assert_eq!(
        r.upstream_attempts,
        vec![
            attempt(Some("172.17.0.6:8080"), Some(200), Some(100_000), 0),
            attempt(Some("172.17.0.7:8080"), None, None, 0),
        ]
    );
}

#[test]
fn custom_format_with_groups_msec_and_mapping() {
    // A format written here, given as `nginx:'…'` pieces the way nginx.conf quotes them.
    let format: Format = r#"nginx:'$msec $request_time "$request" $status $bytes_sent $request_length ' '$upstream_addr $upstream_status $upstream_response_time $host $request_id'"#
        .parse()
        .unwrap();
    let mapping = Mapping::try_from(MappingConfig {
        service: Some("edge".into()),
        zone: Some("eu-1a".into()),
        rules: vec![rule(
            MatchField::Authority,
            Side::Destination,
            "shop.*",
            Some("shop"),
        )],
        ..Default::default()
    })
    .unwrap();
    // format.rs removes the outer quotes; the parser reads the rest as pieces again.
    assert!(matches!(&format, Format::Nginx(f) if f.contains("' '")));
    let mut parser = format.parser(&mapping).unwrap();
    let line = "1554531605.972 0.250 \"GET /a?b=c HTTP/2.0\" 502 1234 310 \
                10.0.0.1:80, 10.0.0.2:80 : 10.0.0.3:80 502, 504 : 200 0.010, 0.020 : 0.200 \
                shop.example.com abc123 appended";
    let mut out = FlowBatchBuilder::new();
    assert_eq!(parser.parse_line(line.as_bytes(), &mut out), Ok(1));
    let r = flow_records(&out.finish()).unwrap().remove(0);
    // $msec 1554531605.972 s = 1_554_531_605_972_000 µs, minus $request_time 250 000 µs.
    assert_eq!(r.start_us, 1_554_531_605_722_000);
    assert_eq!(r.duration_us, Some(250_000));
    assert_eq!((r.bytes_sent, r.bytes_received), (1234, 310));
    assert_eq!(r.status, Some(502));
    assert_eq!(r.source, "edge");
    assert_eq!(r.source_zone.as_deref(), Some("eu-1a"));
    assert_eq!(r.destination, "shop");
    assert_eq!(r.request_id.as_deref(), Some("abc123"));
    assert_eq!(
        r.upstream_attempts,
        vec![
            attempt(Some("10.0.0.1:80"), Some(502), Some(10_000), 0),
            attempt(Some("10.0.0.2:80"), Some(504), Some(20_000), 0),
            attempt(Some("10.0.0.3:80"), Some(200), Some(200_000), 1),
        ]
    );
    assert_eq!(r.upstream_host.as_deref(), Some("10.0.0.3:80"));

    // Without an authority rule match the destination is the last upstream less its port.
    let line2 = line.replace("shop.example.com", "other.example.com");
    let mut out = FlowBatchBuilder::new();
    parser.parse_line(line2.as_bytes(), &mut out).unwrap();
    assert_eq!(
        flow_records(&out.finish()).unwrap()[0].destination,
        "10.0.0.3"
    );
}

#[test]
fn time_iso8601_and_request_method_variables() {
    let mut p = NginxParser::new(
        "$time_iso8601|$request_method|$server_protocol|$status|$request_time",
        Reporter::Nginx,
        Mapping::default(),
    )
    .unwrap();
    assert!(p.has_request_time());
    // 2019-04-06T08:20:05+02:00 = 06:20:05Z = 1554531605 s; minus 1.5 s.
    let r = one(&mut p, "2019-04-06T08:20:05+02:00|PUT|HTTP/1.1|201|1.500");
    assert_eq!(r.start_us, 1_554_531_605_000_000 - 1_500_000);
    assert_eq!(r.method.as_deref(), Some("PUT"));
    assert_eq!(r.protocol.as_deref(), Some("HTTP/1.1"));
    assert_eq!(r.status, Some(201));
}

#[test]
fn bad_fields_are_rejected_naming_field_and_value() {
    let mut p = ingress();
    let good = r#"192.168.64.1 - - [07/Feb/2020:11:48:51 +0000] "POST /products HTTP/1.1" 200 59 "-" "curl/7.54.0" 89 0.001 [default-web-8080] [] 172.17.0.5:8080 59 0.000 200 529a"#;
    let mut out = FlowBatchBuilder::new();
    let reject = |p: &mut NginxParser, out: &mut FlowBatchBuilder, from: &str, to: &str| {
        let line = good.replacen(from, to, 1);
        p.parse_line(line.as_bytes(), out).unwrap_err()
    };
    assert_eq!(
        reject(&mut p, &mut out, " 200 59 ", " 2x0 59 "),
        Reject::new(RejectReason::BadNumber, r#"invalid $status "2x0""#)
    );
    assert_eq!(
        reject(&mut p, &mut out, "Feb/2020", "Fev/2020"),
        Reject::new(
            RejectReason::BadTimestamp,
            r#"invalid $time_local "07/Fev/2020:11:48:51 +0000""#
        )
    );
    assert_eq!(
        reject(&mut p, &mut out, " 0.001 ", " 0.0x1 "),
        Reject::new(RejectReason::BadNumber, r#"invalid $request_time "0.0x1""#)
    );
    assert_eq!(
        reject(&mut p, &mut out, "0.000 200", "0.000 20x"),
        Reject::new(
            RejectReason::BadNumber,
            r#"invalid $upstream_status entry "20x""#
        )
    );
    assert_eq!(
        reject(&mut p, &mut out, " 59 \"-\"", " 5a \"-\""),
        Reject::new(RejectReason::BadNumber, r#"invalid $body_bytes_sent "5a""#)
    );
    // (a request id that is not UTF-8 is only dropped: tests/names.rs)
    let mut bytes = good.as_bytes().to_vec();
    let at = bytes.windows(6).position(|w| w == b"web-80").unwrap() + 6;
    bytes.insert(at, 0xff);
    let r = p.parse_line(&bytes, &mut out).unwrap_err();
    assert_eq!(r.reason, RejectReason::InvalidUtf8);
    assert!(
        r.detail
            .starts_with("invalid UTF-8 in $proxy_upstream_name"),
        "{r}"
    );
    assert!(out.is_empty(), "nothing is appended for a rejected line");
}

#[test]
fn compile_errors_via_format() {
    // refused where the format's name is parsed (`--format`, a topic's format in a config)
    let err = |f: &str| f.parse::<Format>().unwrap_err().to_string();
    assert!(
        err("nginx:'$remote_addr$time_local'")
            .contains("variables $remote_addr and $time_local have no literal between them")
    );
    assert!(err("nginx:'[${time_local'").contains("unterminated ${ at byte 1"));
    assert_eq!(
        err("nginx:'$remote_addr $status'"),
        "log_format \"'$remote_addr $status'\": no time variable ($time_local, $time_iso8601 \
         or $msec): a flow record needs a start time"
    );
}

#[test]
fn tab_separated_format_with_nginx_conf_escapes() {
    // As written in nginx.conf: `\t` inside the quotes is a tab (ngx_conf_file.c's token
    // unescaping: \" \' \\ \t \r \n).
    let format = r"'$time_local\t$remote_addr\t$status\t$request_time'";
    let mut p = NginxParser::new(format, Reporter::Nginx, Mapping::default()).unwrap();
    let lines = "07/Dec/2016:11:05:07 +0100\t10.0.0.1\t200\t0.250\n\
                 07/Dec/2016:11:05:08 +0100\t10.0.0.2\t503\t1.000\n";
    let (r, rejects) = parse_all(&mut p, lines);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(r.len(), 2);
    // 11:05:07 +0100 = 10:05:07Z = 1 481 105 107 s; the start is 0.250 s before the log time.
    assert_eq!(r[0].start_us, 1_481_105_107_000_000 - 250_000);
    assert_eq!(r[0].duration_us, Some(250_000));
    assert_eq!(r[0].status, Some(200));
    assert_eq!(r[1].start_us, 1_481_105_108_000_000 - 1_000_000);
    assert_eq!(r[1].status, Some(503));
    // The same format given verbatim (unquoted tokens are unescaped as well).
    let verbatim = r"$time_local\t$remote_addr\t$status\t$request_time";
    let mut p = NginxParser::new(verbatim, Reporter::Nginx, Mapping::default()).unwrap();
    let (r, rejects) = parse_all(&mut p, lines);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(r[1].duration_us, Some(1_000_000));
}

#[test]
fn escaped_quotes_and_backslashes_in_the_format() {
    // `\"` and `\'` are quotes, `\\` one backslash.
    let format = r#"'[$time_local] \"$request\" \'$status\' \\$request_time'"#;
    let mut p = NginxParser::new(format, Reporter::Nginx, Mapping::default()).unwrap();
    let line = r#"[07/Dec/2016:11:05:07 +0100] "GET / HTTP/1.1" '404' \0.002"#;
    let (r, rejects) = parse_all(&mut p, line);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(r[0].status, Some(404));
    assert_eq!(r[0].method.as_deref(), Some("GET"));
    assert_eq!(r[0].duration_us, Some(2_000));
}

#[test]
fn an_unbalanced_quote_is_a_compile_error() {
    let err = |f: &str| {
        NginxParser::new(f, Reporter::Nginx, Mapping::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{f} compiled"))
    };
    let e = err("'$time_local $status");
    assert!(e.contains("unbalanced '"), "{e}");
    let e = err("$time_local $status'");
    assert!(e.contains("unbalanced '"), "{e}");
    let e = err("'$time_local' '$status");
    assert!(e.contains("unbalanced '"), "{e}");
    // Quotes in pairs inside a verbatim format are literal text.
    assert!(NginxParser::new("$time_local '$status'", Reporter::Nginx, Mapping::default()).is_ok());
}

#[test]
fn request_splitting() {
    assert_eq!(
        split_request(b"GET /a HTTP/1.1"),
        (Some("GET"), Some("HTTP/1.1"))
    );
    assert_eq!(split_request(b"GET /"), (Some("GET"), None));
    assert_eq!(split_request(b""), (None, None));
    assert_eq!(split_request(b"\\x16\\x03\\x01"), (None, None));
    assert_eq!(split_request(b"G\"T / HTTP/1.1"), (None, Some("HTTP/1.1")));
    assert_eq!(
        peer_address(b"\"10.5.102.222, 199.96.1.1\" 10.2.1.185"),
        b"10.2.1.185"
    );
    assert_eq!(peer_address(b"10.0.0.2, 10.0.0.1, 127.0.0.1"), b"127.0.0.1");
    assert_eq!(peer_address(b"2a02:cf40::4e36"), b"2a02:cf40::4e36");
}

const SAMPLE: &str = r#"2a02:cf40::4e36 - - [24/Aug/2022:18:05:41 +0000] "GET /favicon.ico HTTP/2.0" 502 552 "https://localhost:8080/" "Mozilla/5.0" 27 0.000 [localhost-8080] [] [2a02:cf40::7]:5000, [2a02:cf40::4e36]:5000 0, 0 0.000, 0.000 502, 502 3db73c6c"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut out = FlowBatchBuilder::new();
        let _ = combined().parse_line(&bytes, &mut out);
        let _ = ingress().parse_line(&bytes, &mut out);
    }

    #[test]
    fn mutated_valid_lines_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8)
    ) {
        let mut line = SAMPLE.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(line.len() + 1);
            match op {
                0 => line.insert(i, byte),
                1 if i < line.len() => { line.remove(i); }
                _ if i < line.len() => line[i] = byte,
                _ => {}
            }
        }
        let mut out = FlowBatchBuilder::new();
        let n = ingress().parse_line(&line, &mut out).unwrap_or(0);
        prop_assert_eq!(out.len(), n);
    }

    #[test]
    fn huge_and_repetitive_lines_never_panic(piece in "[ ,:\\[\\]\"-]{1,4}", reps in 1usize..20_000) {
        let line = format!("{SAMPLE}{}", piece.repeat(reps));
        let mut out = FlowBatchBuilder::new();
        let _ = ingress().parse_line(line.as_bytes(), &mut out);
        let _ = combined().parse_line(piece.repeat(reps).as_bytes(), &mut out);
    }

    #[test]
    fn generated_combined_lines_round_trip(
        status in 100u16..600,
        bytes in 0u64..10_000_000_000,
        secs in 0i64..4_000_000_000,
        method in "[A-Z]{1,10}",
    ) {
        // Builds `$time_local` from epoch seconds via days → civil date by the inverse
        // algorithm, so the expected start is the generated number itself.
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        const MONTHS: [&str; 12] = ["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec"];
        let line = format!(
            "1.2.3.4 - - [{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000] \"{method} /x HTTP/1.1\" {status} {bytes} \"-\" \"ua\"",
            MONTHS[(m - 1) as usize], sod / 3600, sod % 3600 / 60, sod % 60
        );
        let r = one(&mut combined(), &line);
        prop_assert_eq!(r.start_us, secs * 1_000_000);
        prop_assert_eq!(r.status, Some(status));
        prop_assert_eq!(r.bytes_sent, bytes);
        prop_assert_eq!(r.method.as_deref(), Some(method.as_str()));
    }
}

/// Howard Hinnant's `civil_from_days`, the inverse of `crate::time::days_from_civil`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Throughput check (run with `cargo test --release -p graywatch-ingest -- --ignored
/// throughput --nocapture`): elastic_examples_apache_logs.log, 9 999 valid combined lines,
/// parsed 50 times into batches of 8 192 rows. Target: ≥ 1.5 M lines/s per core.
#[test]
#[ignore = "timing; run in release"]
fn throughput_combined() {
    let text = read("elastic_examples_apache_logs.log");
    let lines: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();
    let mut p = combined();
    let mut out = FlowBatchBuilder::new();
    let t = std::time::Instant::now();
    let mut n = 0u64;
    for _ in 0..50 {
        for l in &lines {
            n += p.parse_line(l, &mut out).unwrap_or(0) as u64;
            if out.len() >= 8192 {
                out.finish();
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{n} records in {secs:.3} s: {:.2} M lines/s",
        n as f64 / secs / 1e6
    );
}

/// Splits the same lines without building records, and appends a minimal record alone, to
/// see which part of [`throughput_combined`] costs what.
#[test]
#[ignore = "timing; run in release"]
fn throughput_split_only() {
    let text = read("elastic_examples_apache_logs.log");
    let lines: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();
    let f = LogFormat::compile(COMBINED).unwrap();
    let t = std::time::Instant::now();
    let mut n = 0u64;
    for _ in 0..50 {
        for l in &lines {
            let mut v: Values<'_> = [None; VAR_SLOTS];
            if f.split(l, &mut v).is_ok() {
                n += v[Var::Status as usize].map_or(0, |s| s.len() as u64);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "split: {n} in {secs:.3} s: {:.2} M lines/s",
        500_000.0 / secs / 1e6
    );
    let mut out = FlowBatchBuilder::new();
    let rec = FlowRecordRef::new(1, "unknown", "nginx", Reporter::Nginx);
    let t = std::time::Instant::now();
    for _ in 0..500_000 {
        out.append(&rec);
        if out.len() >= 8192 {
            out.finish();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!("append: {:.2} M rows/s", 500_000.0 / secs / 1e6);
}

#[test]
fn an_upstream_address_without_a_host_does_not_name_an_empty_destination() {
    // Found by the `nginx` fuzz target (fuzz/corpus/nginx/empty-upstream-host): `$upstream_addr`
    // read as `:` (a group separator where an address belongs) gave the record the destination
    // "" (`:` less its port). Such an address names no host: the proxy itself answered, as
    // when there is no address at all; the attempt keeps the address as written.
    let mut parser = NginxParser::new(
        "$msec $request_time \"$request\" $status $upstream_addr $upstream_status",
        Reporter::Nginx,
        Mapping::default(),
    )
    .unwrap();
    for (addr, host) in [(":", ":"), (":8080", ":8080"), ("[]:80", "[]:80")] {
        let line = format!("1549996662.921 0.012 \"GET /cart HTTP/1.1\" 200 {addr} 200");
        let mut out = FlowBatchBuilder::new();
        assert_eq!(
            parser.parse_line(line.as_bytes(), &mut out),
            Ok(1),
            "{line}"
        );
        let r = flow_records(&out.finish()).unwrap().remove(0);
        assert_eq!(r.destination, "nginx", "{line}");
        assert_eq!(r.source, "nginx", "{line}");
        assert_eq!(r.upstream_host.as_deref(), Some(host), "{line}");
    }
}
