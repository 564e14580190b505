//! `flow-json`: one flow record per line (or Kafka message) as the JSON document of
//! `schemas/json/flow-record.schema.json`, the format `graywatch parse` prints and other tools
//! (or graywatch's own simulator) write.
//!
//! Required: `schema_version` (1), `start_us`, `source`, `destination`, `reporter`. The other
//! fields of the schema may be given or left out (left out = `null`, `0` for byte counts, no
//! upstream attempts). A key the schema does not know is rejected (`bad-json`), so that a typo
//! (`start` for `start_us`) is not read as a record without its field. The record names both
//! ends itself: the service mapping does not apply.
//!
//! Parsing: a line is first read by a scanner for the shape graywatch and most tools write
//! (keys in any order, strings without escapes, integers, `null`, upstream attempts as an
//! array of flat objects), without allocating; anything else (an escape, a float, a duplicate
//! or unknown key, a syntax error) is read again by serde_json, which gives the answer and the
//! error message. Both read the same documents the same way (a property test checks it);
//! `cargo bench --bench parse` measures the difference. The scanner expects each line's keys
//! in the order of the line before (a writer keeps its order), so a key costs
//! a comparison of a few bytes rather than reading it and looking it up.

use std::borrow::Cow;

use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter, SCHEMA_VERSION, UpstreamAttemptRef};
use serde::Deserialize;

use crate::error::{Reject, RejectReason};
use crate::json_scan::{KeyOrder, Scanner};
use crate::source::LineParser;

/// A flow record's JSON document; the default is one with nothing read (what the scanner
/// fills in).
#[derive(Deserialize, Default)]
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

/// The bit of `seen` (in [`scan`]) that a key of the flow record sets; `None` for a key the
/// schema does not know.
fn field_of(key: &str) -> Option<u8> {
    Some(match key {
        "schema_version" => 0,
        "start_us" => 1,
        "duration_us" => 2,
        "source" => 4,
        "source_zone" => 5,
        "source_version" => 6,
        "destination" => 7,
        "destination_zone" => 8,
        "destination_version" => 9,
        "protocol" => 10,
        "method" => 11,
        "status" => 12,
        "response_flags" => 13,
        "bytes_received" => 14,
        "bytes_sent" => 15,
        "upstream_host" => 16,
        "upstream_attempts" => 17,
        "request_id" => 18,
        "reporter" => 24,
        _ => return None,
    })
}

/// The fast path: reads a line of the common shape (see the [module docs](self)) into `doc`
/// (a default [`Doc`], which stays in the caller's frame: a document is a few hundred bytes to
/// move for each of millions of lines), or `None` when serde_json must decide. `order` is what
/// the previous lines taught (see [`KeyOrder`]).
#[inline]
fn scan_into<'a>(line: &'a [u8], order: &mut KeyOrder, doc: &mut Doc<'a>) -> Option<()> {
    // validated with SIMD: a line is hundreds of bytes
    let text = simdutf8::basic::from_utf8(line).ok()?;
    let mut s = Scanner::new(text);
    // required: schema_version, start_us, source, destination, reporter
    const REQUIRED: u32 = 0b1_0000_0000_0000_0000_1001_0011;
    let mut seen = 0u32;
    s.byte(b'{')?;
    if s.peek()? == b'}' {
        return None;
    }
    for position in 0.. {
        let bit = order.key(&mut s, position, field_of)??;
        match bit {
            0 => doc.schema_version = u32::try_from(s.int()?).ok()?,
            1 => doc.start_us = s.int()?,
            2 => doc.duration_us = s.opt_uint()?,
            4 => doc.source = Cow::Borrowed(s.string()?),
            5 => doc.source_zone = s.opt_string()?.map(Cow::Borrowed),
            6 => doc.source_version = s.opt_string()?.map(Cow::Borrowed),
            7 => doc.destination = Cow::Borrowed(s.string()?),
            8 => doc.destination_zone = s.opt_string()?.map(Cow::Borrowed),
            9 => doc.destination_version = s.opt_string()?.map(Cow::Borrowed),
            10 => doc.protocol = s.opt_string()?.map(Cow::Borrowed),
            11 => doc.method = s.opt_string()?.map(Cow::Borrowed),
            12 => doc.status = s.opt_uint()?.map(u16::try_from).transpose().ok()?,
            13 => doc.response_flags = s.opt_string()?.map(Cow::Borrowed),
            14 => doc.bytes_received = u64::try_from(s.int()?).ok()?,
            15 => doc.bytes_sent = u64::try_from(s.int()?).ok()?,
            16 => doc.upstream_host = s.opt_string()?.map(Cow::Borrowed),
            17 => doc.upstream_attempts = attempts(&mut s)?,
            18 => doc.request_id = s.opt_string()?.map(Cow::Borrowed),
            24 => doc.reporter = Cow::Borrowed(s.string()?),
            _ => return None,
        }
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    if !s.at_end() || seen & REQUIRED != REQUIRED {
        return None;
    }
    Some(())
}

/// `[]`, or an array of flat attempt objects.
fn attempts<'a>(s: &mut Scanner<'a>) -> Option<Vec<Attempt<'a>>> {
    s.byte(b'[')?;
    let mut out = Vec::new();
    if s.peek()? == b']' {
        s.next();
        return Some(out);
    }
    loop {
        s.byte(b'{')?;
        let mut a = Attempt {
            address: None,
            status: None,
            response_time_us: None,
            group: 0,
        };
        let mut seen = 0u8;
        if s.peek()? != b'}' {
            loop {
                let key = s.string()?;
                s.byte(b':')?;
                let bit = match key {
                    "address" => {
                        a.address = s.opt_string()?.map(Cow::Borrowed);
                        0
                    }
                    "status" => {
                        a.status = s.opt_uint()?.map(u16::try_from).transpose().ok()?;
                        1
                    }
                    "response_time_us" => {
                        a.response_time_us = s.opt_uint()?;
                        2
                    }
                    "group" => {
                        a.group = u16::try_from(s.int()?).ok()?;
                        3
                    }
                    _ => return None,
                };
                if seen & (1 << bit) != 0 {
                    return None;
                }
                seen |= 1 << bit;
                match s.next()? {
                    b',' => continue,
                    b'}' => break,
                    _ => return None,
                }
            }
        } else {
            s.next();
        }
        out.push(a);
        match s.next()? {
            b',' => continue,
            b']' => return Some(out),
            _ => return None,
        }
    }
}

/// Parser of `flow-json` lines (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct FlowJsonParser {
    order: KeyOrder,
}

impl FlowJsonParser {
    /// A parser (it holds no state).
    pub fn new() -> Self {
        FlowJsonParser::default()
    }
}

impl LineParser for FlowJsonParser {
    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        let mut doc = Doc::default();
        if scan_into(line, &mut self.order, &mut doc).is_none() {
            doc = serde_json::from_slice(line)
                .map_err(|e| Reject::new(RejectReason::BadJson, format!("flow record: {e}")))?;
        }
        append(&doc, out)?;
        Ok(1)
    }
}

/// Checks a decoded document (schema version, reporter, named ends) and appends its record.
fn append(doc: &Doc<'_>, out: &mut FlowBatchBuilder) -> Result<(), Reject> {
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
    crate::check_names(&r)?;
    out.append(&r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use schemas::flow_records;

    use super::*;

    fn parse(line: &str) -> Result<schemas::FlowRecord, Reject> {
        let mut out = FlowBatchBuilder::new();
        FlowJsonParser::new().parse_line(line.as_bytes(), &mut out)?;
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

    /// What serde_json alone makes of `line`: the record, or the reject.
    fn by_serde(line: &[u8]) -> Result<schemas::FlowRecord, String> {
        let doc: Doc<'_> = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let mut out = FlowBatchBuilder::new();
        append(&doc, &mut out).map_err(|r| r.to_string())?;
        Ok(flow_records(&out.finish()).unwrap().remove(0))
    }

    fn record() -> impl Strategy<Value = schemas::FlowRecord> {
        let text = prop_oneof![
            "[a-z][a-z0-9-]{0,12}",
            any::<String>().prop_filter("not empty", |s| !s.is_empty()),
        ];
        (
            (
                any::<i64>(),
                proptest::option::of(any::<u64>()),
                text.clone(),
                text.clone(),
            ),
            (
                proptest::option::of(text.clone()),
                proptest::option::of(any::<u16>()),
                any::<u64>(),
                proptest::collection::vec(
                    (
                        proptest::option::of(text.clone()),
                        proptest::option::of(any::<u16>()),
                        any::<u16>(),
                    ),
                    0..3,
                ),
            ),
        )
            .prop_map(
                |((start, duration, source, destination), (zone, status, bytes, attempts))| {
                    schemas::FlowRecord {
                        schema_version: SCHEMA_VERSION,
                        start_us: start,
                        duration_us: duration,
                        source,
                        source_zone: zone.clone(),
                        source_version: None,
                        destination,
                        destination_zone: None,
                        destination_version: zone,
                        protocol: Some("HTTP/1.1".into()),
                        method: None,
                        status,
                        response_flags: None,
                        bytes_received: bytes,
                        bytes_sent: bytes / 3,
                        upstream_host: None,
                        upstream_attempts: attempts
                            .into_iter()
                            .map(|(address, status, group)| schemas::UpstreamAttempt {
                                address,
                                status,
                                response_time_us: None,
                                group,
                            })
                            .collect(),
                        request_id: None,
                        reporter: Reporter::Envoy,
                    }
                },
            )
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The scanner and serde_json read every document alike: any record as graywatch
        /// writes it, its keys shuffled and spaced, and the same line with a byte changed.
        #[test]
        fn the_scanner_reads_what_serde_reads(
            r in record(),
            seed in any::<u64>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut value = serde_json::to_value(&r).unwrap();
            let map = value.as_object_mut().unwrap();
            let mut entries: Vec<(String, serde_json::Value)> = std::mem::take(map).into_iter().collect();
            let mut x = seed | 1;
            for i in (1..entries.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                entries.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let spaced = if seed % 2 == 0 { ", " } else { "," };
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap(), v))
                .collect();
            let line = format!("{{{}}}", body.join(spaced));
            // a parser that expects the keys of the line as written
            let mut taught = FlowJsonParser::new();
            let _ = taught.parse_line(line.as_bytes(), &mut FlowBatchBuilder::new());
            for candidate in [line.clone().into_bytes(), {
                let mut b = line.into_bytes();
                let i = at.index(b.len());
                b[i] = byte;
                b
            }] {
                let slow = by_serde(&candidate);
                for parser in [&mut FlowJsonParser::new(), &mut taught] {
                    let mut out = FlowBatchBuilder::new();
                    let fast = parser
                        .parse_line(&candidate, &mut out)
                        .map(|_| flow_records(&out.finish()).unwrap().remove(0))
                        .map_err(|r| r.to_string());
                    prop_assert_eq!(fast.is_ok(), slow.is_ok(), "{:?} vs {:?}", fast, slow);
                    if let (Ok(f), Ok(s)) = (fast, &slow) {
                        prop_assert_eq!(&f, s);
                    }
                }
            }
        }
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
