//! The `--format` values and the parser each one builds.

use std::str::FromStr;

use schemas::Reporter;

use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::source::LineParser;
use crate::{envoy, istio, nginx, spans};

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
            _ => match s.strip_prefix("nginx:") {
                // Quoting (`'…'` or `'…' '…'` pieces, as in nginx.conf) is the parser's to undo.
                Some(f) => Format::Nginx(f.trim().to_owned()),
                None => return Err(Error::UnknownFormat(s.to_owned())),
            },
        })
    }
}

impl Format {
    /// Guesses the format from the start of an input (its first non-blank line), as
    /// `--format auto` does: `[2019-…T…Z] "` is Envoy, or Istio when the line carries an
    /// `inbound|` / `outbound|` upstream cluster; a JSON envelope with `"message"` holding such
    /// a line is Envoy; another JSON object is Envoy JSON; a `TraceID,` header is spans;
    /// `… [07/Dec/2016:11:05:07 +0100] "` is NGINX, ingress-nginx when `[upstream-name]`
    /// brackets follow the request. `None` when nothing fits.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        let line = head
            .split(|&b| b == b'\n')
            .map(|l| l.trim_ascii())
            .find(|l| !l.is_empty())?;
        let has = |needle: &[u8]| memchr::memmem::find(line, needle).is_some();
        if line.starts_with(b"TraceID,") {
            return Some(Format::SpansCsv);
        }
        let istio = has(b" inbound|") || has(b" outbound|");
        if line.starts_with(b"{") {
            return Some(if has(b"\"message\"") && has(b"] \\\"") {
                if istio { Format::Istio } else { Format::Envoy }
            } else {
                Format::EnvoyJson
            });
        }
        let envoy_start = |l: &[u8]| l.len() > 26 && l[0] == b'[' && l[5] == b'-' && l[11] == b'T';
        let unprefixed = line.strip_prefix(b"ACCESS ").unwrap_or(line);
        if envoy_start(unprefixed) {
            return Some(if istio { Format::Istio } else { Format::Envoy });
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_the_fixture_formats() {
        // First lines of files in ../shared/data/logs (see SOURCES.md there).
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
        assert_eq!(Format::sniff(b"hello world"), None);
        assert_eq!(Format::sniff(b""), None);
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
