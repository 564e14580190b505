//! The `--format` values and the parser each one builds.

use std::str::FromStr;

use schemas::Reporter;

use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::source::LineParser;
use crate::{envoy, flow_json, istio, nginx, spans};

/// An input format, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// `envoy`: Envoy's default text access-log format.
    Envoy,
    /// `envoy-json`: Envoy `json_format` / `typed_json_format` access logs.
    EnvoyJson,
    /// `istio`: Istio's default sidecar text format.
    Istio,
    /// `nginx-combined`: NGINX's predefined `combined` format.
    NginxCombined,
    /// `nginx-ingress`: the ingress-nginx controller's `upstreaminfo` format.
    NginxIngress,
    /// `nginx:'<log_format>'`: any NGINX `log_format`, given verbatim.
    Nginx(String),
    /// `spans-csv`: span tables (`TraceID,SpanID,ParentID,PodName,OperationName,…`).
    SpansCsv,
    /// `flow-json`: flow records as JSON (`schemas/json/flow-record.schema.json`), one per line.
    FlowJson,
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "envoy" => Format::Envoy,
            "envoy-json" => Format::EnvoyJson,
            "istio" => Format::Istio,
            "nginx-combined" | "nginx" => Format::NginxCombined,
            "nginx-ingress" => Format::NginxIngress,
            "spans-csv" => Format::SpansCsv,
            "flow-json" => Format::FlowJson,
            _ => match s.strip_prefix("nginx:") {
                // Quoting (`'…'` or `'…' '…'` pieces, as in nginx.conf) is the parser's to undo.
                // A log_format that can't compile is no format: refused here, where the name
                // is read (a usage error of `--format`, a config error of a topic's format),
                // not later when an input is opened.
                Some(f) => {
                    crate::nginx::check_log_format(f.trim())?;
                    Format::Nginx(f.trim().to_owned())
                }
                None => return Err(Error::UnknownFormat(s.to_owned())),
            },
        })
    }
}

impl Format {
    /// Guesses the format from the start of an input (its first non-blank line, after any
    /// UTF-8 byte order mark), as `--format auto` does:
    ///
    /// - `[2019-…T…Z] "` (bare or after `ACCESS `) is Envoy's default format, which ends with
    ///   the quoted `"%UPSTREAM_HOST%"`; it is Istio's when at least five unquoted fields
    ///   follow the line's last `"` (Istio's `%UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS%
    ///   %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME%
    ///   [%ROUTE_NAME%]`), whatever the cluster (`outbound|…`, `PassthroughCluster`, `-`, …);
    /// - a JSON object with `"schema_version"` and `"start_us"` keys: a flow record
    ///   (`flow-json`);
    /// - a JSON envelope whose `"message"` holds such a line: the same rule on the message;
    /// - another JSON object: Envoy JSON;
    /// - a spans header (two or more of `TraceID`, `SpanID`, … in any order): spans;
    /// - `… [07/Dec/2016:11:05:07 +0100] "`: NGINX, ingress-nginx when `[upstream-name]`
    ///   brackets follow the request.
    ///
    /// `None` when nothing fits.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        let line = head
            .split(|&b| b == b'\n')
            .map(|l| l.trim_ascii())
            .find(|l| !l.is_empty())?;
        let has = |needle: &[u8]| memchr::memmem::find(line, needle).is_some();
        if std::str::from_utf8(line).is_ok_and(spans::is_header) {
            return Some(Format::SpansCsv);
        }
        let envoy_or_istio = |l: &[u8]| {
            if has_istio_tail(l) {
                Format::Istio
            } else {
                Format::Envoy
            }
        };
        if line.starts_with(b"{") {
            if has(b"\"schema_version\"") && has(b"\"start_us\"") {
                return Some(Format::FlowJson);
            }
            if !(has(b"\"message\"") && has(b"] \\\"")) {
                return Some(Format::EnvoyJson);
            }
            return Some(match envoy::unwrap_envelope(line) {
                Ok(env) => envoy_or_istio(env.message.as_bytes()),
                Err(_) => Format::Envoy,
            });
        }
        let envoy_start = |l: &[u8]| l.len() > 26 && l[0] == b'[' && l[5] == b'-' && l[11] == b'T';
        let unprefixed = line.strip_prefix(b"ACCESS ").unwrap_or(line);
        if envoy_start(unprefixed) {
            return Some(envoy_or_istio(unprefixed));
        }
        let open = memchr::memchr(b'[', line)?;
        let clf = line.get(open + 1..open + 27)?;
        crate::time::parse_clf_us(clf)?;
        let after_request = memchr::memmem::find(&line[open..], b"\" ")
            .and_then(|i| memchr::memmem::find(&line[open + i..], b"] ["))
            .is_some();
        Some(if after_request {
            Format::NginxIngress
        } else {
            Format::NginxCombined
        })
    }

    /// The name `--format` takes for this format (`nginx:'…'` for a custom `log_format`).
    pub fn name(&self) -> &'static str {
        match self {
            Format::Envoy => "envoy",
            Format::EnvoyJson => "envoy-json",
            Format::Istio => "istio",
            Format::NginxCombined => "nginx-combined",
            Format::NginxIngress => "nginx-ingress",
            Format::Nginx(_) => "nginx:'…'",
            Format::SpansCsv => "spans-csv",
            Format::FlowJson => "flow-json",
        }
    }

    /// Whether the parser holds records back across lines (spans wait for their parent): such
    /// a format can't be read from a Kafka partition, whose records must be settled message by
    /// message for offsets to be committed.
    pub fn holds_records(&self) -> bool {
        matches!(self, Format::SpansCsv)
    }

    /// Builds this format's parser for input `input` (a path, a topic): with the mapping of
    /// that input ([`Mapping::for_input`]), behind a [`crate::WriterParser`] when
    /// `[mapping.writer]` (or `writer`, when given) is configured.
    ///
    /// # Errors
    /// As [`Format::parser`].
    pub fn parser_for(
        &self,
        mapping: &Mapping,
        input: &str,
        writer: Option<&crate::WriterConfig>,
    ) -> Result<Box<dyn LineParser>> {
        let m = mapping.for_input(input);
        let writer = writer.unwrap_or(m.writer());
        let parser = self.parser(&m)?;
        if writer.is_empty() {
            Ok(parser)
        } else {
            Ok(Box::new(crate::WriterParser::new(
                parser,
                &m,
                writer.clone(),
            )))
        }
    }

    /// Builds this format's parser with the given service mapping.
    ///
    /// # Errors
    /// [`Error::LogFormat`] when a user-given NGINX `log_format` cannot be compiled.
    pub fn parser(&self, mapping: &Mapping) -> Result<Box<dyn LineParser>> {
        let m = mapping.clone();
        Ok(match self {
            Format::Envoy => Box::new(envoy::EnvoyTextParser::new(m)),
            Format::EnvoyJson => Box::new(envoy::EnvoyJsonParser::new(m)),
            Format::Istio => Box::new(istio::IstioParser::new(m)),
            Format::NginxCombined => Box::new(nginx::NginxParser::new(
                nginx::COMBINED,
                Reporter::Nginx,
                m,
            )?),
            Format::NginxIngress => Box::new(nginx::NginxParser::new(
                nginx::UPSTREAMINFO,
                Reporter::NginxIngress,
                m,
            )?),
            Format::Nginx(f) => Box::new(nginx::NginxParser::new(f, Reporter::Nginx, m)?),
            Format::SpansCsv => Box::new(spans::SpansCsvParser::new(m)),
            Format::FlowJson => Box::new(flow_json::FlowJsonParser::new()),
        })
    }
}

/// True when at least five space-separated fields follow the last `"` of an Envoy-style
/// line: Istio's unquoted tail after `"%UPSTREAM_HOST%"` (Envoy's default format ends with
/// that quoted field).
fn has_istio_tail(line: &[u8]) -> bool {
    let line = line.trim_ascii_end();
    let tail = match memchr::memrchr(b'"', line) {
        Some(i) => &line[i + 1..],
        None => return false,
    };
    tail.split(|&b| b == b' ').filter(|f| !f.is_empty()).count() >= 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_the_fixture_formats() {
        // First lines of files in deploy/examples/logs (origins in its README).
        let cases: [(&[u8], Format); 6] = [
            (br#"[2019-04-06T06:20:05.972Z] "- - -" 0 UF,URX 0 0 0 - "-" "-" "-" "-" "127.0.0.1:9200""#, Format::Envoy),
            (br#"ACCESS [2024-04-25T17:51:55.294Z] "GET /backend/ HTTP/1.1" 200 - 0 141 0 0 "192.168.0.9" "curl/8.4.0" "b7" "localhost:9001" "192.168.96.113:80""#, Format::Envoy),
            (br#"[2022-08-22T13:08:23.188Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 442 12 12 "-" "curl/7.79.1" "00bc" "reviews:9080" "10.124.1.5:9080" outbound|9080||reviews.default.svc.cluster.local 10.124.2.6:50960 10.0.18.132:9080 10.124.2.6:52930 - default"#, Format::Istio),
            (b"\n127.0.0.1 - - [12/Apr/2018:09:48:40 +0200] \"\" 400 0 \"-\" \"-\"", Format::NginxCombined),
            (br#"192.168.64.1 - - [07/Feb/2020:11:48:51 +0000] "POST /products HTTP/1.1" 200 59 "-" "curl/7.54.0" 89 0.001 [default-web-8080] [] 172.17.0.5:8080 59 0.000 200 529a"#, Format::NginxIngress),
            (b"TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration", Format::SpansCsv),
        ];
        for (line, want) in cases {
            assert_eq!(
                Format::sniff(line),
                Some(want),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            Format::sniff(br#"{"start_time":"2019-04-06T06:20:05.972Z"}"#),
            Some(Format::EnvoyJson)
        );
        assert_eq!(
            Format::sniff(br#"{"schema_version":1,"start_us":5,"source":"a"}"#),
            Some(Format::FlowJson)
        );
        assert_eq!(Format::sniff(b"hello world"), None);
        assert_eq!(Format::sniff(b""), None);
    }

    #[test]
    fn istio_lines_without_an_inbound_or_outbound_cluster_are_istio() {
        // integrations_istio_test-access-logs.log line 4 (deploy/examples/logs, origins in its README)
        // with its cluster replaced by each of Istio's special clusters.
        let line4 = r#"[2022-08-22T13:08:23.188Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 442 12 12 "-" "curl/7.79.1" "00bc" "reviews:9080" "10.124.1.5:9080" outbound|9080||reviews.default.svc.cluster.local 10.124.2.6:50960 10.0.18.132:9080 10.124.2.6:52930 - default"#;
        for cluster in [
            "PassthroughCluster",
            "BlackHoleCluster",
            "InboundPassthroughCluster",
            "InboundPassthroughClusterIpv4",
            "-",
        ] {
            let l = line4.replace("outbound|9080||reviews.default.svc.cluster.local", cluster);
            assert_eq!(Format::sniff(l.as_bytes()), Some(Format::Istio), "{l}");
            // Without the optional %ROUTE_NAME%, too.
            let l = l.strip_suffix(" default").unwrap();
            assert_eq!(Format::sniff(l.as_bytes()), Some(Format::Istio), "{l}");
            // In a container-runtime envelope.
            let env = serde_json::json!({ "message": l, "stream": "stdout" }).to_string();
            assert_eq!(Format::sniff(env.as_bytes()), Some(Format::Istio), "{env}");
        }
        // An Envoy line whose user agent mentions an outbound cluster is still Envoy: it ends
        // with the quoted upstream host.
        let envoy = br#"[2019-02-12T18:37:42.921Z] "GET /ip HTTP/1.1" 200 - 0 43 217 216 "-" "x outbound|80||a b" "c6" "httpbin.org" "52.87.35.92:80""#;
        assert_eq!(Format::sniff(envoy), Some(Format::Envoy));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let line = b"\xEF\xBB\xBF[2019-04-06T06:20:05.972Z] \"- - -\" 0 UF,URX 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"127.0.0.1:9200\"";
        assert_eq!(Format::sniff(line), Some(Format::Envoy));
        let spans = b"\xEF\xBB\xBFTraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration";
        assert_eq!(Format::sniff(spans), Some(Format::SpansCsv));
        // Spans columns in another order.
        let reordered = b"Duration,TraceID,ParentID,SpanID,PodName,StartTimeUnixNano";
        assert_eq!(Format::sniff(reordered), Some(Format::SpansCsv));
    }

    #[test]
    fn every_line_of_the_fixtures_sniffs_as_its_file() {
        // deploy/examples/logs, origins in its README.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/logs");
        for (file, want) in [
            ("beats_envoyproxy_envoy.log", Format::Envoy),
            ("integrations_envoyproxy_test-log.log", Format::Envoy),
            ("integrations_istio_test-access-logs.log", Format::Istio),
            (
                "integrations_istio_test-access_invalid_logs.log",
                Format::Istio,
            ),
            ("beats_nginx_access_test.log", Format::NginxCombined),
            (
                "beats_nginx_ingress_controller_test.log",
                Format::NginxIngress,
            ),
        ] {
            let text = std::fs::read(format!("{dir}/{file}")).unwrap();
            for (i, line) in text.split(|&b| b == b'\n').enumerate() {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                assert_eq!(Format::sniff(line), Some(want.clone()), "{file}:{}", i + 1);
            }
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("envoy".parse::<Format>().unwrap(), Format::Envoy);
        assert_eq!(
            "nginx:'$remote_addr [$time_local]'"
                .parse::<Format>()
                .unwrap(),
            Format::Nginx("'$remote_addr [$time_local]'".into())
        );
        let err = "apache".parse::<Format>().unwrap_err().to_string();
        assert!(err.starts_with("unknown format \"apache\""), "{err}");
    }
}
