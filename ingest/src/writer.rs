//! Who wrote a line, from the shipper's metadata.
//!
//! A sidecar's plain-text access log says nothing about its own workload, and one stream (a
//! Kafka topic, a collector's file) carries the logs of many sidecars. Log shippers attach
//! that metadata: Vector's `kubernetes_logs` source and Fluent Bit's `kubernetes` filter wrap
//! each line in a JSON envelope with the pod's labels, and a shipper or producer can put it in
//! Kafka message headers. `[mapping.writer]` says where to find it:
//!
//! ```toml
//! [mapping.writer]
//! message = "/message"                          # the line inside the envelope (Fluent Bit: "/log")
//! service = "/kubernetes/pod_labels/app"        # Fluent Bit: "/kubernetes/labels/app"
//! version = "/kubernetes/pod_labels/version"
//! zone = "/kubernetes/node_labels/topology.kubernetes.io~1zone"
//! service-header = "graywatch-service"          # a Kafka header (wins over the envelope)
//! ```
//!
//! Paths are JSON pointers (RFC 6901: `/` between keys, `~1` for a `/` inside a key, `~0` for
//! `~`). A value that is missing or empty falls back to the configured `[mapping]` service,
//! zone and version. [`WriterParser`] wraps a format's parser: it unwraps the envelope, names
//! the writer in the parser's mapping, and parses the line inside.

use schemas::FlowBatchBuilder;
use serde::Deserialize;

use crate::error::{Error, Reject, RejectReason, Result};
use crate::mapping::Mapping;
use crate::source::LineParser;

/// The `[mapping.writer]` section (also `[[kafka.inputs]] writer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WriterConfig {
    /// JSON pointer to the log line inside the shipper's JSON envelope. When set, every line
    /// (message) must be such an envelope; when not, lines are the proxies' own.
    pub message: Option<String>,
    /// JSON pointer to the writing service's name in the envelope.
    pub service: Option<String>,
    /// JSON pointer to its zone.
    pub zone: Option<String>,
    /// JSON pointer to its version.
    pub version: Option<String>,
    /// Kafka header naming the writing service (wins over the envelope).
    pub service_header: Option<String>,
    /// Kafka header naming its zone.
    pub zone_header: Option<String>,
    /// Kafka header naming its version.
    pub version_header: Option<String>,
}

impl WriterConfig {
    /// True when nothing is configured: lines are parsed as they are.
    pub fn is_empty(&self) -> bool {
        *self == WriterConfig::default()
    }

    /// Checks the pointers.
    ///
    /// # Errors
    /// [`Error::MappingKey`] naming `writer.<key>` for a pointer that does not start with `/`
    /// (or is empty), a field pointer without `message`, or an empty header name.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("writer.message", &self.message),
            ("writer.service", &self.service),
            ("writer.zone", &self.zone),
            ("writer.version", &self.version),
        ] {
            if let Some(v) = value
                && !v.starts_with('/')
            {
                return Err(Error::MappingKey {
                    key,
                    reason: format!(
                        "{v:?} is not a JSON pointer (it starts with `/`, e.g. \"/kubernetes/pod_labels/app\")"
                    ),
                });
            }
        }
        if self.message.is_none()
            && let Some(key) = [
                ("writer.service", &self.service),
                ("writer.zone", &self.zone),
                ("writer.version", &self.version),
            ]
            .into_iter()
            .find_map(|(k, v)| v.as_ref().map(|_| k))
        {
            return Err(Error::MappingKey {
                key,
                reason:
                    "points into an envelope, but writer.message (where the line is) is not set"
                        .into(),
            });
        }
        for (key, value) in [
            ("writer.service-header", &self.service_header),
            ("writer.zone-header", &self.zone_header),
            ("writer.version-header", &self.version_header),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(Error::MappingKey {
                    key,
                    reason: "is empty: name a header or leave the key out".into(),
                });
            }
        }
        Ok(())
    }
}

/// A format's parser behind [`WriterConfig`]: see the [module docs](self).
pub struct WriterParser {
    inner: Box<dyn LineParser>,
    config: WriterConfig,
    /// The configured `[mapping]` service, zone, version: the fallback.
    base: [Option<String>; 3],
    /// Values from the current message's headers.
    from_headers: [Option<String>; 3],
}

impl WriterParser {
    /// Wraps `inner` (built with `mapping`, whose own service is the fallback).
    pub fn new(inner: Box<dyn LineParser>, mapping: &Mapping, config: WriterConfig) -> Self {
        let base = mapping.own_parts().map(|v| v.map(str::to_owned));
        WriterParser {
            inner,
            config,
            base,
            from_headers: [None, None, None],
        }
    }

    /// The headers of the message whose lines come next (Kafka); `(name, value)` pairs.
    pub fn set_headers(&mut self, headers: &[(&str, &[u8])]) {
        let names = [
            &self.config.service_header,
            &self.config.zone_header,
            &self.config.version_header,
        ];
        for (slot, name) in self.from_headers.iter_mut().zip(names) {
            *slot = name.as_deref().and_then(|name| {
                headers
                    .iter()
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, v)| std::str::from_utf8(v).ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            });
        }
    }

    fn name_writer(&mut self, envelope: Option<&serde_json::Value>) {
        let pointers = [
            &self.config.service,
            &self.config.zone,
            &self.config.version,
        ];
        let mut values: [Option<&str>; 3] = [None, None, None];
        for i in 0..3 {
            values[i] = self.from_headers[i]
                .as_deref()
                .or_else(|| {
                    let p = pointers[i].as_deref()?;
                    envelope?.pointer(p)?.as_str().filter(|v| !v.is_empty())
                })
                .or(self.base[i].as_deref());
        }
        if let Some(m) = self.inner.mapping_mut() {
            m.set_own(values[0], values[1], values[2]);
        }
    }
}

impl LineParser for WriterParser {
    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        let Some(message) = self.config.message.clone() else {
            self.name_writer(None);
            return self.inner.parse_line(line, out);
        };
        let envelope: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| Reject::new(RejectReason::BadJson, format!("shipper envelope: {e}")))?;
        let Some(text) = envelope.pointer(&message).and_then(|v| v.as_str()) else {
            return Err(Reject::new(
                RejectReason::BadJson,
                format!("shipper envelope has no string at {message}"),
            ));
        };
        self.name_writer(Some(&envelope));
        let text = text.trim_end_matches(['\n', '\r']);
        self.inner.parse_line(text.as_bytes(), out)
    }

    fn finish(&mut self, out: &mut FlowBatchBuilder) -> usize {
        self.inner.finish(out)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
    }

    fn mapping_mut(&mut self) -> Option<&mut Mapping> {
        self.inner.mapping_mut()
    }
}

#[cfg(test)]
mod tests {
    use schemas::flow_records;

    use super::*;
    use crate::format::Format;
    use crate::mapping::MappingConfig;

    /// Line 3 of deploy/examples/logs/integrations_istio_test-access-logs.log (elastic/
    /// integrations): an inbound line written by the callee's sidecar, which names the callee
    /// only in its server name.
    const ISTIO_INBOUND: &str = r#"[2022-08-22T10:51:35.926Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 437 30 29 "-" "curl/7.79.1" "f5dd9a93-895b-9a0d-a830-44694ed10c4c" "reviews:9080" "10.124.0.12:9080" inbound|9080|| 127.0.0.6:50151 10.124.0.12:9080 10.124.2.6:54438 outbound_.9080_._.reviews.default.svc.cluster.local default"#;

    fn parser(config: WriterConfig, mapping: MappingConfig) -> WriterParser {
        let mapping = Mapping::try_from(mapping).unwrap();
        config.validate().unwrap();
        WriterParser::new(Format::Istio.parser(&mapping).unwrap(), &mapping, config)
    }

    fn one(p: &mut WriterParser, line: &str) -> Result<schemas::FlowRecord, Reject> {
        let mut out = FlowBatchBuilder::new();
        p.parse_line(line.as_bytes(), &mut out)?;
        Ok(flow_records(&out.finish()).unwrap().remove(0))
    }

    #[test]
    fn vector_envelopes_name_each_lines_writer() {
        let mut p = parser(
            WriterConfig {
                message: Some("/message".into()),
                service: Some("/kubernetes/pod_labels/app".into()),
                version: Some("/kubernetes/pod_labels/version".into()),
                zone: Some("/kubernetes/node_labels/topology.kubernetes.io~1zone".into()),
                ..Default::default()
            },
            MappingConfig::default(),
        );
        let envelope = |app: &str, version: &str| {
            serde_json::json!({
                "message": ISTIO_INBOUND,
                "kubernetes": {
                    "pod_name": format!("{app}-v1-7c9f"),
                    "pod_labels": {"app": app, "version": version},
                    "node_labels": {"topology.kubernetes.io/zone": "eu-west-1a"},
                },
            })
            .to_string()
        };
        let r = one(&mut p, &envelope("reviews", "v2")).unwrap();
        assert_eq!(r.destination, "reviews");
        assert_eq!(r.destination_version.as_deref(), Some("v2"));
        assert_eq!(r.destination_zone.as_deref(), Some("eu-west-1a"));
        let r = one(&mut p, &envelope("ratings", "v1")).unwrap();
        assert_eq!(r.destination, "ratings");
        assert_eq!(r.destination_version.as_deref(), Some("v1"));
    }

    #[test]
    fn headers_win_and_the_config_is_the_fallback() {
        let mut p = parser(
            WriterConfig {
                service_header: Some("service".into()),
                ..Default::default()
            },
            MappingConfig {
                service: Some("fallback".into()),
                ..Default::default()
            },
        );
        p.set_headers(&[("service", b"details")]);
        assert_eq!(one(&mut p, ISTIO_INBOUND).unwrap().destination, "details");
        p.set_headers(&[]);
        assert_eq!(one(&mut p, ISTIO_INBOUND).unwrap().destination, "fallback");
    }

    #[test]
    fn a_line_that_is_not_an_envelope_is_rejected() {
        let mut p = parser(
            WriterConfig {
                message: Some("/log".into()),
                ..Default::default()
            },
            MappingConfig::default(),
        );
        let r = one(&mut p, ISTIO_INBOUND).unwrap_err();
        assert_eq!(r.reason, RejectReason::BadJson);
        let r = one(&mut p, r#"{"message": "x"}"#).unwrap_err();
        assert_eq!(r.detail, "shipper envelope has no string at /log");
    }

    #[test]
    fn bad_pointers_name_the_key() {
        let err = WriterConfig {
            message: Some("message".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("[mapping] writer.message \"message\" is not a JSON pointer"),
            "{err}"
        );
        let err = WriterConfig {
            service: Some("/app".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("writer.service points into an envelope"),
            "{err}"
        );
    }
}
