//! `flow-json`: one flow record per line (or Kafka message) as the JSON document of
//! `schemas/json/flow-record.schema.json`, the format `graywatch parse` prints and other tools
//! (or graywatch's own simulator) write.
//!
//! Required: `schema_version` (1), `start_us`, `source`, `destination`, `reporter`. The other
//! fields of the schema may be given or left out (left out = `null`, `0` for byte counts, no
//! upstream attempts). A key the schema does not know is rejected (`bad-json`), so that a typo
//! (`start` for `start_us`) is not read as a record without its field. The record names both
//! ends itself: the service mapping does not apply.

use std::borrow::Cow;

use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter, SCHEMA_VERSION, UpstreamAttemptRef};
use serde::Deserialize;

use crate::error::{Reject, RejectReason};
use crate::source::LineParser;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc<'a> {
    schema_version: u32,
    start_us: i64,
    #[serde(default)]
    duration_us: Option<u64>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow, default)]
    source_zone: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    destination: Cow<'a, str>,
    #[serde(borrow, default)]
    destination_zone: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    destination_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    protocol: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(borrow, default)]
    response_flags: Option<Cow<'a, str>>,
    #[serde(default)]
    bytes_received: u64,
    #[serde(default)]
    bytes_sent: u64,
    #[serde(borrow, default)]
    upstream_host: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    upstream_attempts: Vec<Attempt<'a>>,
    #[serde(borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reporter: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attempt<'a> {
    #[serde(borrow, default)]
    address: Option<Cow<'a, str>>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    response_time_us: Option<u64>,
    #[serde(default)]
    group: u16,
}

/// Parser of `flow-json` lines (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct FlowJsonParser;

impl FlowJsonParser {
    /// A parser (it holds no state).
    pub fn new() -> Self {
        FlowJsonParser
    }
}

impl LineParser for FlowJsonParser {
    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        let doc: Doc<'_> = serde_json::from_slice(line)
            .map_err(|e| Reject::new(RejectReason::BadJson, format!("flow record: {e}")))?;
        if doc.schema_version != SCHEMA_VERSION {
            return Err(Reject::new(
                RejectReason::BadJson,
                format!(
                    "flow record: schema_version {} (this graywatch reads {SCHEMA_VERSION})",
                    doc.schema_version
                ),
            ));
        }
        let reporter = Reporter::from_name(&doc.reporter).ok_or_else(|| {
            Reject::new(
                RejectReason::BadJson,
                format!("flow record: unknown reporter {:?}", doc.reporter),
            )
        })?;
        if doc.source.is_empty() || doc.destination.is_empty() {
            return Err(Reject::new(
                RejectReason::Malformed,
                "flow record: empty source or destination",
            ));
        }
        let attempts: Vec<UpstreamAttemptRef<'_>> = doc
            .upstream_attempts
            .iter()
            .map(|a| UpstreamAttemptRef {
                address: a.address.as_deref(),
                status: a.status,
                response_time_us: a.response_time_us,
                group: a.group,
            })
            .collect();
        let r = FlowRecordRef {
            start_us: doc.start_us,
            duration_us: doc.duration_us,
            source: &doc.source,
            source_zone: doc.source_zone.as_deref(),
            source_version: doc.source_version.as_deref(),
            destination: &doc.destination,
            destination_zone: doc.destination_zone.as_deref(),
            destination_version: doc.destination_version.as_deref(),
            protocol: doc.protocol.as_deref(),
            method: doc.method.as_deref(),
            status: doc.status,
            response_flags: doc.response_flags.as_deref(),
            bytes_received: doc.bytes_received,
            bytes_sent: doc.bytes_sent,
            upstream_host: doc.upstream_host.as_deref(),
            upstream_attempts: &attempts,
            request_id: doc.request_id.as_deref(),
            reporter,
        };
        out.append(&r);
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use schemas::flow_records;

    use super::*;

    fn parse(line: &str) -> Result<schemas::FlowRecord, Reject> {
        let mut out = FlowBatchBuilder::new();
        FlowJsonParser.parse_line(line.as_bytes(), &mut out)?;
        Ok(flow_records(&out.finish()).unwrap().remove(0))
    }

    #[test]
    fn reads_what_graywatch_parse_prints() {
        // istio-sidecars golden case, first record as `graywatch parse` prints it
        let line = r#"{"schema_version":1,"start_us":1661173703188000,"duration_us":12000,"source":"productpage","source_zone":null,"source_version":null,"destination":"reviews","destination_zone":null,"destination_version":null,"protocol":"HTTP/1.1","method":"GET","status":200,"response_flags":null,"bytes_received":0,"bytes_sent":442,"upstream_host":"10.124.1.5:9080","upstream_attempts":[],"request_id":"00bc","reporter":"istio-source"}"#;
        let r = parse(line).unwrap();
        assert_eq!(r.start_us, 1_661_173_703_188_000);
        assert_eq!(r.duration_us, Some(12_000));
        assert_eq!(
            (r.source.as_str(), r.destination.as_str()),
            ("productpage", "reviews")
        );
        assert_eq!(r.bytes_sent, 442);
        assert_eq!(r.reporter, Reporter::IstioSource);
        // round trip: the record's own JSON reads back to itself
        assert_eq!(parse(&serde_json::to_string(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn optional_fields_may_be_left_out_and_escapes_are_undone() {
        let r = parse(
            r#"{"schema_version":1,"start_us":5,"source":"a\"b","destination":"c","reporter":"envoy","upstream_attempts":[{"address":"10.0.0.1:80","status":502}]}"#,
        )
        .unwrap();
        assert_eq!(r.source, "a\"b");
        assert_eq!((r.duration_us, r.status, r.bytes_received), (None, None, 0));
        assert_eq!(r.upstream_attempts[0].status, Some(502));
    }

    #[test]
    fn rejects_name_the_problem() {
        let reason = |l: &str| parse(l).unwrap_err();
        let r = reason(
            r#"{"schema_version":1,"start":5,"source":"a","destination":"b","reporter":"envoy"}"#,
        );
        assert_eq!(r.reason, RejectReason::BadJson);
        assert!(r.detail.contains("unknown field `start`"), "{}", r.detail);
        let r = reason(
            r#"{"schema_version":2,"start_us":5,"source":"a","destination":"b","reporter":"envoy"}"#,
        );
        assert_eq!(
            r.detail,
            "flow record: schema_version 2 (this graywatch reads 1)"
        );
        let r = reason(
            r#"{"schema_version":1,"start_us":5,"source":"a","destination":"b","reporter":"haproxy"}"#,
        );
        assert_eq!(r.detail, "flow record: unknown reporter \"haproxy\"");
        let r = reason(
            r#"{"schema_version":1,"start_us":5,"source":"","destination":"b","reporter":"envoy"}"#,
        );
        assert_eq!(r.reason, RejectReason::Malformed);
        assert_eq!(reason("not json").reason, RejectReason::BadJson);
        let r = reason(
            r#"{"schema_version":1,"start_us":-1.5,"source":"a","destination":"b","reporter":"envoy"}"#,
        );
        assert_eq!(r.reason, RejectReason::BadJson);
    }
}
