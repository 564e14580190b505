//! The flow record: one request (or one TCP connection) from a source service to a
//! destination service, as a serde type and as an Arrow schema.
//!
//! Parsers append borrowed [`FlowRecordRef`]s to a [`FlowBatchBuilder`], which produces Arrow
//! [`RecordBatch`]es with the columns named in [`columns`]; [`flow_records`] reads a batch back
//! into owned [`FlowRecord`]s (for JSON output and tests).

use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, ListBuilder, RecordBatch, StringBuilder,
    StructBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Field, Fields, Int32Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    UInt16Type, UInt64Type,
};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, SCHEMA_VERSION};

/// Longest request id a flow record stores, bytes. Request ids are `x-request-id` UUIDs (36
/// bytes), W3C `traceparent` values (55), trace ids (32 hex digits) or similar; a client may
/// send any header it likes, so a longer value is dropped (the record keeps `None`), not cut:
/// ids are for joining records of one request, and two long ids cut to a common prefix would
/// join requests that have nothing in common. See [`capped`].
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// Longest upstream address (`upstream_host`, an upstream attempt's `address`) a flow record
/// stores, bytes: a DNS name (at most 253 bytes) with a `:port`, a `unix:` socket path (at most
/// 108 bytes) or an NGINX upstream name all fit. A longer value is dropped (`None`), not cut: a
/// cut address names another host, or none. See [`capped`].
pub const MAX_ADDRESS_BYTES: usize = 512;

/// `value` when it is at most `max` bytes long; `None` when it is longer (dropped whole, never
/// cut). The one place where stored id and address lengths are capped
/// ([`MAX_REQUEST_ID_BYTES`], [`MAX_ADDRESS_BYTES`]); [`FlowBatchBuilder::append`] applies it
/// and counts what it drops ([`DroppedValues`]).
pub fn capped(value: Option<&str>, max: usize) -> Option<&str> {
    value.filter(|v| v.len() <= max)
}

/// Values a [`FlowBatchBuilder`] dropped because they were longer than their cap (the records
/// were kept, without the value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedValues {
    /// Request ids longer than [`MAX_REQUEST_ID_BYTES`].
    pub request_ids: u64,
    /// Upstream addresses (`upstream_host` or an attempt's `address`) longer than
    /// [`MAX_ADDRESS_BYTES`].
    pub addresses: u64,
}

impl DroppedValues {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: DroppedValues) {
        self.request_ids += other.request_ids;
        self.addresses += other.addresses;
    }

    /// Whether nothing was dropped.
    pub fn is_empty(&self) -> bool {
        self.request_ids == 0 && self.addresses == 0
    }
}

/// Column names of the flow-record Arrow schema, in schema order.
pub mod columns {
    /// Request start, µs since the Unix epoch, UTC (`Timestamp(µs, "+00:00")`).
    pub const START: &str = "start_us";
    /// Total duration, µs (`UInt64`, null when the format has no latency field).
    pub const DURATION: &str = "duration_us";
    /// Source service (`Dictionary<Int32, Utf8>`).
    pub const SOURCE: &str = "source";
    /// Source zone (`Dictionary<Int32, Utf8>`, nullable).
    pub const SOURCE_ZONE: &str = "source_zone";
    /// Source version (`Dictionary<Int32, Utf8>`, nullable).
    pub const SOURCE_VERSION: &str = "source_version";
    /// Destination service (`Dictionary<Int32, Utf8>`).
    pub const DESTINATION: &str = "destination";
    /// Destination zone (`Dictionary<Int32, Utf8>`, nullable).
    pub const DESTINATION_ZONE: &str = "destination_zone";
    /// Destination version (`Dictionary<Int32, Utf8>`, nullable).
    pub const DESTINATION_VERSION: &str = "destination_version";
    /// Protocol, e.g. `HTTP/1.1`, `HTTP/2`, `tcp` (`Dictionary<Int32, Utf8>`, nullable).
    pub const PROTOCOL: &str = "protocol";
    /// HTTP method (`Dictionary<Int32, Utf8>`, nullable).
    pub const METHOD: &str = "method";
    /// HTTP status (`UInt16`, null for TCP or when the proxy logged none).
    pub const STATUS: &str = "status";
    /// Envoy response flags, comma separated as Envoy writes them (`Dictionary<Int32, Utf8>`).
    pub const RESPONSE_FLAGS: &str = "response_flags";
    /// Bytes received from the downstream (request body), bytes (`UInt64`).
    pub const BYTES_RECEIVED: &str = "bytes_received";
    /// Bytes sent to the downstream (response body), bytes (`UInt64`).
    pub const BYTES_SENT: &str = "bytes_sent";
    /// Upstream host that served the request, `ip:port` (`Utf8`, nullable).
    pub const UPSTREAM_HOST: &str = "upstream_host";
    /// Every upstream attempt, in order (`List<Struct{address, status, response_time_us, group}>`).
    pub const UPSTREAM_ATTEMPTS: &str = "upstream_attempts";
    /// Request id (`Utf8`, nullable).
    pub const REQUEST_ID: &str = "request_id";
    /// Which proxy wrote the record (`Dictionary<Int32, Utf8>`), see [`super::Reporter`].
    pub const REPORTER: &str = "reporter";
}

/// Which proxy (and which side of the call) wrote a flow record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reporter {
    /// An Envoy proxy (edge, gateway or sidecar), Envoy default or JSON access log.
    Envoy,
    /// An Istio sidecar on the caller's side (`outbound|…` upstream cluster).
    IstioSource,
    /// An Istio sidecar on the callee's side (`inbound|…` upstream cluster).
    IstioDestination,
    /// An NGINX server (any `log_format`).
    Nginx,
    /// The ingress-nginx controller (`upstreaminfo` format).
    NginxIngress,
    /// A tracing span pair (parent span's service calling child span's service).
    Span,
}

impl Reporter {
    /// The name as written in JSON and in the Arrow `reporter` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Envoy => "envoy",
            Reporter::IstioSource => "istio-source",
            Reporter::IstioDestination => "istio-destination",
            Reporter::Nginx => "nginx",
            Reporter::NginxIngress => "nginx-ingress",
            Reporter::Span => "span",
        }
    }

    /// Parses [`Reporter::as_str`] back.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "envoy" => Reporter::Envoy,
            "istio-source" => Reporter::IstioSource,
            "istio-destination" => Reporter::IstioDestination,
            "nginx" => Reporter::Nginx,
            "nginx-ingress" => Reporter::NginxIngress,
            "span" => Reporter::Span,
            _ => return None,
        })
    }
}

/// One upstream attempt of a request, as NGINX reports it in `$upstream_addr`,
/// `$upstream_status` and `$upstream_response_time`.
///
/// NGINX writes one entry per upstream server tried, separated by `, `; a ` : ` starts a new
/// upstream *group* (an internal redirect, e.g. `X-Accel-Redirect` or `error_page`). A missing
/// entry is written `-` and kept here as `None`: a retry across upstreams is information
/// (the first server failed), so every attempt is kept in order, and the flow record's
/// `upstream_host` is the last attempt's address (the one whose answer the client got).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAttempt {
    /// Upstream address (`ip:port`, `[v6]:port`, `unix:/path` or an upstream name); at most
    /// [`MAX_ADDRESS_BYTES`] bytes (a longer one is not stored).
    pub address: Option<String>,
    /// HTTP status the upstream answered with.
    pub status: Option<u16>,
    /// Upstream response time, µs (NGINX writes seconds with ms resolution).
    pub response_time_us: Option<u64>,
    /// Upstream group index: 0 for the first group, +1 after each ` : ` separator.
    pub group: u16,
}

/// Borrowed view of an [`UpstreamAttempt`], what parsers produce without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamAttemptRef<'a> {
    /// See [`UpstreamAttempt::address`].
    pub address: Option<&'a str>,
    /// See [`UpstreamAttempt::status`].
    pub status: Option<u16>,
    /// See [`UpstreamAttempt::response_time_us`].
    pub response_time_us: Option<u64>,
    /// See [`UpstreamAttempt::group`].
    pub group: u16,
}

/// One request (or one TCP connection) from a source service to a destination service.
///
/// The JSON form (`schemas/json/flow-record.schema.json`) is what `graywatch parse` prints and
/// what travels on the flow-record Kafka topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRecord {
    /// Version of this document's schema, [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Request start, µs since the Unix epoch (UTC).
    pub start_us: i64,
    /// Total duration (first byte received to last byte sent), µs; `None` when the log format
    /// carries no latency (NGINX `combined`).
    pub duration_us: Option<u64>,
    /// Source (calling) service.
    pub source: String,
    /// Source zone (availability zone or region), when the mapping knows it.
    pub source_zone: Option<String>,
    /// Source version (deployment), when the mapping knows it.
    pub source_version: Option<String>,
    /// Destination (called) service.
    pub destination: String,
    /// Destination zone, when the mapping knows it.
    pub destination_zone: Option<String>,
    /// Destination version, when the mapping knows it.
    pub destination_version: Option<String>,
    /// Protocol: `HTTP/1.1`, `HTTP/2`, … or `tcp` for a TCP proxy connection.
    pub protocol: Option<String>,
    /// HTTP method, as logged.
    pub method: Option<String>,
    /// HTTP status; `None` for TCP, or when the proxy logged `0`/`-` (no response was sent).
    pub status: Option<u16>,
    /// Envoy response flags as logged (`UF,URX`), `None` when `-`.
    pub response_flags: Option<String>,
    /// Bytes received from the downstream (the request body), bytes.
    pub bytes_received: u64,
    /// Bytes sent to the downstream (the response body), bytes.
    pub bytes_sent: u64,
    /// Upstream host that served the request (`ip:port`), the last attempt's for NGINX lists;
    /// at most [`MAX_ADDRESS_BYTES`] bytes (a longer one is not stored).
    pub upstream_host: Option<String>,
    /// Every upstream attempt, in order; empty when the format has no upstream list.
    #[serde(default)]
    pub upstream_attempts: Vec<UpstreamAttempt>,
    /// Request id (`x-request-id`, `$request_id`, or the trace id for spans); at most
    /// [`MAX_REQUEST_ID_BYTES`] bytes (a longer one is not stored).
    pub request_id: Option<String>,
    /// Which proxy wrote the record.
    pub reporter: Reporter,
}

/// Borrowed view of a [`FlowRecord`]: what parsers fill in, pointing into the input line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields mirror `FlowRecord`'s, documented there
pub struct FlowRecordRef<'a> {
    pub start_us: i64,
    pub duration_us: Option<u64>,
    pub source: &'a str,
    pub source_zone: Option<&'a str>,
    pub source_version: Option<&'a str>,
    pub destination: &'a str,
    pub destination_zone: Option<&'a str>,
    pub destination_version: Option<&'a str>,
    pub protocol: Option<&'a str>,
    pub method: Option<&'a str>,
    pub status: Option<u16>,
    pub response_flags: Option<&'a str>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub upstream_host: Option<&'a str>,
    pub upstream_attempts: &'a [UpstreamAttemptRef<'a>],
    pub request_id: Option<&'a str>,
    pub reporter: Reporter,
}

impl<'a> FlowRecordRef<'a> {
    /// A record with the given times and services and everything else empty or zero.
    pub fn new(start_us: i64, source: &'a str, destination: &'a str, reporter: Reporter) -> Self {
        FlowRecordRef {
            start_us,
            duration_us: None,
            source,
            source_zone: None,
            source_version: None,
            destination,
            destination_zone: None,
            destination_version: None,
            protocol: None,
            method: None,
            status: None,
            response_flags: None,
            bytes_received: 0,
            bytes_sent: 0,
            upstream_host: None,
            upstream_attempts: &[],
            request_id: None,
            reporter,
        }
    }

    /// Copies the view into an owned [`FlowRecord`].
    pub fn to_owned_record(&self) -> FlowRecord {
        let s = |v: Option<&str>| v.map(str::to_owned);
        FlowRecord {
            schema_version: SCHEMA_VERSION,
            start_us: self.start_us,
            duration_us: self.duration_us,
            source: self.source.to_owned(),
            source_zone: s(self.source_zone),
            source_version: s(self.source_version),
            destination: self.destination.to_owned(),
            destination_zone: s(self.destination_zone),
            destination_version: s(self.destination_version),
            protocol: s(self.protocol),
            method: s(self.method),
            status: self.status,
            response_flags: s(self.response_flags),
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            upstream_host: s(self.upstream_host),
            upstream_attempts: self
                .upstream_attempts
                .iter()
                .map(|a| UpstreamAttempt {
                    address: s(a.address),
                    status: a.status,
                    response_time_us: a.response_time_us,
                    group: a.group,
                })
                .collect(),
            request_id: s(self.request_id),
            reporter: self.reporter,
        }
    }
}

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The timezone of the `start_us` column.
pub const UTC: &str = "+00:00";

fn attempt_fields() -> Fields {
    Fields::from(vec![
        Field::new("address", DataType::Utf8, true),
        Field::new("status", DataType::UInt16, true),
        Field::new("response_time_us", DataType::UInt64, true),
        Field::new("group", DataType::UInt16, false),
    ])
}

/// The first control character in a name (a service, zone or version): its byte position
/// and the character. Control characters are Unicode's `Cc` category (U+0000–U+001F, U+007F,
/// U+0080–U+009F, [`char::is_control`]): a name is a key of JSON outputs, Kafka messages,
/// Prometheus labels and remediation targets, where NUL, a newline or an escape sequence would
/// forge or break a line, so names holding one are refused where they enter (a config error,
/// a rejected line), never escaped into another name.
pub fn first_control_char(name: &str) -> Option<(usize, char)> {
    // printable ASCII (nearly every name) needs no decoding
    if printable_ascii(name.as_bytes()) {
        return None;
    }
    name.char_indices().find(|(_, c)| c.is_control())
}

/// True when every byte is printable ASCII (0x20 to 0x7e), read 8 bytes at a step: a byte
/// below 0x20, at 0x7f, or at 0x80 and above sets bit 7 of its lane ("hasless", Bit
/// Twiddling Hacks, S. E. Anderson).
fn printable_ascii(bytes: &[u8]) -> bool {
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let n = bytes.len();
    if n < 8 {
        if n < 4 {
            return bytes.iter().all(|b| (0x20..0x7f).contains(b));
        }
        // two 4-byte halves, overlapping when `n` < 8, as one word
        let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        return printable_word(u64::from(half(0)) | u64::from(half(n - 4)) << 32);
    }
    let mut at = 0;
    while at + 8 < n {
        if !printable_word(word(at)) {
            return false;
        }
        at += 8;
    }
    // the last word, overlapping the one before when `n` is not a multiple of 8
    printable_word(word(n - 8))
}

/// [`printable_ascii`] for the 8 bytes of `w`.
#[inline(always)]
fn printable_word(w: u64) -> bool {
    const fn splat(b: u8) -> u64 {
        u64::from_ne_bytes([b; 8])
    }
    let high = splat(0x80);
    let control = w.wrapping_sub(splat(0x20)) & !w & high;
    let del = w ^ splat(0x7f);
    let del = del.wrapping_sub(splat(1)) & !del & high;
    (control | del | (w & high)) == 0
}

/// The first name of `r` (source, destination, and their zones and versions, by their
/// field names) that holds a control character: field, name, byte position, character (see
/// [`first_control_char`]).
pub fn bad_name<'a>(r: &FlowRecordRef<'a>) -> Option<(&'static str, &'a str, usize, char)> {
    [
        ("source", Some(r.source)),
        ("destination", Some(r.destination)),
        ("source_zone", r.source_zone),
        ("destination_zone", r.destination_zone),
        ("source_version", r.source_version),
        ("destination_version", r.destination_version),
    ]
    .into_iter()
    .find_map(|(field, v)| {
        let v = v?;
        first_control_char(v).map(|(at, c)| (field, v, at, c))
    })
}

/// The Arrow schema of a flow-record batch (columns in [`columns`] order). Service, zone,
/// version, protocol, method, flags and reporter are dictionary-encoded strings.
pub fn flow_record_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use columns::*;
            Arc::new(Schema::new(vec![
                Field::new(
                    START,
                    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
                    false,
                ),
                Field::new(DURATION, DataType::UInt64, true),
                Field::new(SOURCE, dict_type(), false),
                Field::new(SOURCE_ZONE, dict_type(), true),
                Field::new(SOURCE_VERSION, dict_type(), true),
                Field::new(DESTINATION, dict_type(), false),
                Field::new(DESTINATION_ZONE, dict_type(), true),
                Field::new(DESTINATION_VERSION, dict_type(), true),
                Field::new(PROTOCOL, dict_type(), true),
                Field::new(METHOD, dict_type(), true),
                Field::new(STATUS, DataType::UInt16, true),
                Field::new(RESPONSE_FLAGS, dict_type(), true),
                Field::new(BYTES_RECEIVED, DataType::UInt64, false),
                Field::new(BYTES_SENT, DataType::UInt64, false),
                Field::new(UPSTREAM_HOST, DataType::Utf8, true),
                Field::new(
                    UPSTREAM_ATTEMPTS,
                    DataType::List(Arc::new(Field::new_struct("item", attempt_fields(), true))),
                    false,
                ),
                Field::new(REQUEST_ID, DataType::Utf8, true),
                Field::new(REPORTER, dict_type(), false),
            ]))
        })
        .clone()
}

use crate::dict::DictColumn as Dict;

/// Builds flow-record [`RecordBatch`]es row by row, in [`flow_record_schema`].
///
/// Appending copies the borrowed strings into Arrow buffers; low-cardinality columns are
/// dictionary-encoded, so a service name is stored once per batch. Request ids and upstream
/// addresses longer than their caps are dropped ([`capped`]) and counted
/// ([`take_dropped`](Self::take_dropped)). [`bytes`](Self::bytes) tells how much a batch
/// holds, so that a driver can hand it on by size as well as by rows.
pub struct FlowBatchBuilder {
    start: TimestampMicrosecondBuilder,
    duration: UInt64Builder,
    source: Dict,
    source_zone: Dict,
    source_version: Dict,
    destination: Dict,
    destination_zone: Dict,
    destination_version: Dict,
    protocol: Dict,
    method: Dict,
    status: UInt16Builder,
    response_flags: Dict,
    bytes_received: UInt64Builder,
    bytes_sent: UInt64Builder,
    upstream_host: StringBuilder,
    upstream_attempts: ListBuilder<StructBuilder>,
    request_id: StringBuilder,
    reporter: Dict,
    rows: usize,
    /// Bytes of the upstream attempts appended since the last finish.
    attempt_bytes: usize,
    dropped: DroppedValues,
}

/// Fixed bytes of one upstream attempt in [`FlowBatchBuilder::bytes`].
const ATTEMPT_BYTES: usize = 24;

impl Default for FlowBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FlowBatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowBatchBuilder")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl FlowBatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        let attempt = StructBuilder::from_fields(attempt_fields(), 0);
        FlowBatchBuilder {
            start: TimestampMicrosecondBuilder::new().with_timezone(UTC),
            duration: UInt64Builder::new(),
            source: Dict::new(),
            source_zone: Dict::new(),
            source_version: Dict::new(),
            destination: Dict::new(),
            destination_zone: Dict::new(),
            destination_version: Dict::new(),
            protocol: Dict::new(),
            method: Dict::new(),
            status: UInt16Builder::new(),
            response_flags: Dict::new(),
            bytes_received: UInt64Builder::new(),
            bytes_sent: UInt64Builder::new(),
            upstream_host: StringBuilder::new(),
            upstream_attempts: ListBuilder::new(attempt).with_field(Arc::new(Field::new_struct(
                "item",
                attempt_fields(),
                true,
            ))),
            request_id: StringBuilder::new(),
            reporter: Dict::new(),
            rows: 0,
            attempt_bytes: 0,
            dropped: DroppedValues::default(),
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no row was appended since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes the rows appended since the last [`finish`](Self::finish) hold, approximately:
    /// [`ROW_BYTES`](Self::ROW_BYTES) per row plus every string byte stored (each distinct
    /// value of a dictionary column once).
    pub fn bytes(&self) -> usize {
        let dicts = [
            &self.source,
            &self.source_zone,
            &self.source_version,
            &self.destination,
            &self.destination_zone,
            &self.destination_version,
            &self.protocol,
            &self.method,
            &self.response_flags,
            &self.reporter,
        ];
        let dict_bytes: usize = dicts.iter().map(|d| d.value_bytes()).sum();
        self.rows * Self::ROW_BYTES
            + dict_bytes
            + self.upstream_host.values_slice().len()
            + self.request_id.values_slice().len()
            + self.attempt_bytes
    }

    /// Fixed bytes of one row in [`bytes`](Self::bytes): its numbers, dictionary keys, string
    /// offsets and null bits (an upstream attempt adds 24 bytes and its address).
    pub const ROW_BYTES: usize = 96;

    /// Values dropped by the caps since the last call (see [`capped`]), and resets the count.
    pub fn take_dropped(&mut self) -> DroppedValues {
        std::mem::take(&mut self.dropped)
    }

    /// Appends one record; a request id or address longer than its cap is stored as `None`
    /// and counted (see [`capped`]).
    pub fn append(&mut self, r: &FlowRecordRef<'_>) {
        fn opt(b: &mut Dict, v: Option<&str>) {
            b.append_option(v);
        }
        fn cap<'v>(v: Option<&'v str>, max: usize, count: &mut u64) -> Option<&'v str> {
            let kept = capped(v, max);
            *count += u64::from(kept.is_none() && v.is_some());
            kept
        }
        self.start.append_value(r.start_us);
        self.duration.append_option(r.duration_us);
        self.source.append(r.source);
        opt(&mut self.source_zone, r.source_zone);
        opt(&mut self.source_version, r.source_version);
        self.destination.append(r.destination);
        opt(&mut self.destination_zone, r.destination_zone);
        opt(&mut self.destination_version, r.destination_version);
        opt(&mut self.protocol, r.protocol);
        opt(&mut self.method, r.method);
        self.status.append_option(r.status);
        opt(&mut self.response_flags, r.response_flags);
        self.bytes_received.append_value(r.bytes_received);
        self.bytes_sent.append_value(r.bytes_sent);
        let dropped = &mut self.dropped;
        self.upstream_host.append_option(cap(
            r.upstream_host,
            MAX_ADDRESS_BYTES,
            &mut dropped.addresses,
        ));
        let list = self.upstream_attempts.values();
        for a in r.upstream_attempts {
            let address = cap(a.address, MAX_ADDRESS_BYTES, &mut dropped.addresses);
            self.attempt_bytes += ATTEMPT_BYTES + address.map_or(0, str::len);
            list.field_builder::<StringBuilder>(0)
                .expect("address builder")
                .append_option(address);
            list.field_builder::<UInt16Builder>(1)
                .expect("status builder")
                .append_option(a.status);
            list.field_builder::<UInt64Builder>(2)
                .expect("response time builder")
                .append_option(a.response_time_us);
            list.field_builder::<UInt16Builder>(3)
                .expect("group builder")
                .append_value(a.group);
            list.append(true);
        }
        self.upstream_attempts.append(true);
        self.request_id.append_option(cap(
            r.request_id,
            MAX_REQUEST_ID_BYTES,
            &mut dropped.request_ids,
        ));
        self.reporter.append(r.reporter.as_str());
        self.rows += 1;
    }

    /// Appends an owned record.
    pub fn append_owned(&mut self, r: &FlowRecord) {
        let attempts: Vec<UpstreamAttemptRef<'_>> = r
            .upstream_attempts
            .iter()
            .map(|a| UpstreamAttemptRef {
                address: a.address.as_deref(),
                status: a.status,
                response_time_us: a.response_time_us,
                group: a.group,
            })
            .collect();
        self.append(&FlowRecordRef {
            start_us: r.start_us,
            duration_us: r.duration_us,
            source: &r.source,
            source_zone: r.source_zone.as_deref(),
            source_version: r.source_version.as_deref(),
            destination: &r.destination,
            destination_zone: r.destination_zone.as_deref(),
            destination_version: r.destination_version.as_deref(),
            protocol: r.protocol.as_deref(),
            method: r.method.as_deref(),
            status: r.status,
            response_flags: r.response_flags.as_deref(),
            bytes_received: r.bytes_received,
            bytes_sent: r.bytes_sent,
            upstream_host: r.upstream_host.as_deref(),
            upstream_attempts: &attempts,
            request_id: r.request_id.as_deref(),
            reporter: r.reporter,
        });
    }

    /// Takes the rows appended so far as one batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        // the next batch's strings are about as long too
        let host_bytes = self.upstream_host.values_slice().len();
        let id_bytes = self.request_id.values_slice().len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.start.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.source_zone.finish()),
            Arc::new(self.source_version.finish()),
            Arc::new(self.destination.finish()),
            Arc::new(self.destination_zone.finish()),
            Arc::new(self.destination_version.finish()),
            Arc::new(self.protocol.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.response_flags.finish()),
            Arc::new(self.bytes_received.finish()),
            Arc::new(self.bytes_sent.finish()),
            Arc::new(self.upstream_host.finish()),
            Arc::new(self.upstream_attempts.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.reporter.finish()),
        ];
        // the next batch is about as long: its columns get their room at once instead of
        // growing by doubling (a copy of each column at each step)
        let rows = std::mem::take(&mut self.rows);
        self.start = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC);
        self.duration = UInt64Builder::with_capacity(rows);
        self.status = UInt16Builder::with_capacity(rows);
        self.bytes_received = UInt64Builder::with_capacity(rows);
        self.bytes_sent = UInt64Builder::with_capacity(rows);
        self.upstream_host = StringBuilder::with_capacity(rows, host_bytes);
        self.request_id = StringBuilder::with_capacity(rows, id_bytes);
        for d in [
            &mut self.source,
            &mut self.source_zone,
            &mut self.source_version,
            &mut self.destination,
            &mut self.destination_zone,
            &mut self.destination_version,
            &mut self.protocol,
            &mut self.method,
            &mut self.response_flags,
            &mut self.reporter,
        ] {
            d.reserve(rows);
        }
        self.attempt_bytes = 0;
        RecordBatch::try_new(flow_record_schema(), columns)
            .expect("builder columns match flow_record_schema")
    }
}

/// Typed access to the columns of a flow-record batch, for operators that read it row by row.
#[derive(Debug)]
#[allow(missing_docs)] // one field per column, see `columns`
pub struct FlowColumns<'a> {
    pub start_us: &'a arrow::array::PrimitiveArray<TimestampMicrosecondType>,
    pub duration_us: &'a arrow::array::PrimitiveArray<UInt64Type>,
    pub source: &'a DictionaryArray<Int32Type>,
    pub source_zone: &'a DictionaryArray<Int32Type>,
    pub source_version: &'a DictionaryArray<Int32Type>,
    pub destination: &'a DictionaryArray<Int32Type>,
    pub destination_zone: &'a DictionaryArray<Int32Type>,
    pub destination_version: &'a DictionaryArray<Int32Type>,
    pub protocol: &'a DictionaryArray<Int32Type>,
    pub status: &'a arrow::array::PrimitiveArray<UInt16Type>,
    pub response_flags: &'a DictionaryArray<Int32Type>,
    pub bytes_received: &'a arrow::array::PrimitiveArray<UInt64Type>,
    pub bytes_sent: &'a arrow::array::PrimitiveArray<UInt64Type>,
}

impl<'a> FlowColumns<'a> {
    /// Checks that `batch` has the flow-record schema's columns and types.
    ///
    /// # Errors
    /// [`Error::Schema`] naming the first missing or mistyped column.
    pub fn try_new(batch: &'a RecordBatch) -> Result<Self> {
        fn col<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::Schema(format!("flow-record batch has no column {name:?}")))
        }
        fn prim<'b, T: arrow::datatypes::ArrowPrimitiveType>(
            batch: &'b RecordBatch,
            name: &str,
        ) -> Result<&'b arrow::array::PrimitiveArray<T>> {
            col(batch, name)?.as_primitive_opt::<T>().ok_or_else(|| {
                Error::Schema(format!("flow-record column {name:?} has the wrong type"))
            })
        }
        fn dict<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b DictionaryArray<Int32Type>> {
            col(batch, name)?
                .as_dictionary_opt::<Int32Type>()
                .ok_or_else(|| {
                    Error::Schema(format!("flow-record column {name:?} is not a dictionary"))
                })
        }
        use columns::*;
        Ok(FlowColumns {
            start_us: prim(batch, START)?,
            duration_us: prim(batch, DURATION)?,
            source: dict(batch, SOURCE)?,
            source_zone: dict(batch, SOURCE_ZONE)?,
            source_version: dict(batch, SOURCE_VERSION)?,
            destination: dict(batch, DESTINATION)?,
            destination_zone: dict(batch, DESTINATION_ZONE)?,
            destination_version: dict(batch, DESTINATION_VERSION)?,
            protocol: dict(batch, PROTOCOL)?,
            status: prim(batch, STATUS)?,
            response_flags: dict(batch, RESPONSE_FLAGS)?,
            bytes_received: prim(batch, BYTES_RECEIVED)?,
            bytes_sent: prim(batch, BYTES_SENT)?,
        })
    }
}

/// Reads a flow-record batch back into owned records.
///
/// # Errors
/// [`Error::Schema`] when the batch is not in [`flow_record_schema`].
pub fn flow_records(batch: &RecordBatch) -> Result<Vec<FlowRecord>> {
    if batch.schema() != flow_record_schema() {
        return Err(Error::Schema(
            "batch is not in the flow-record schema".into(),
        ));
    }
    let c = |i: usize| batch.column(i);
    let dict_str = |i: usize, row: usize| -> Option<String> {
        let d = c(i).as_dictionary::<Int32Type>();
        if d.is_null(row) {
            return None;
        }
        let values = d.values().as_string::<i32>();
        Some(values.value(d.keys().value(row) as usize).to_owned())
    };
    let utf8 = |i: usize, row: usize| -> Option<String> {
        let a = c(i).as_string::<i32>();
        (!a.is_null(row)).then(|| a.value(row).to_owned())
    };
    let u64_at = |i: usize, row: usize| -> Option<u64> {
        let a = c(i).as_primitive::<UInt64Type>();
        (!a.is_null(row)).then(|| a.value(row))
    };
    let u16_at = |i: usize, row: usize| -> Option<u16> {
        let a = c(i).as_primitive::<UInt16Type>();
        (!a.is_null(row)).then(|| a.value(row))
    };
    let starts = c(0).as_primitive::<TimestampMicrosecondType>();
    let attempts = c(15).as_list::<i32>();
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let list = attempts.value(row);
        let s = list.as_struct();
        let (addr, st, rt, gr) = (
            s.column(0).as_string::<i32>(),
            s.column(1).as_primitive::<UInt16Type>(),
            s.column(2).as_primitive::<UInt64Type>(),
            s.column(3).as_primitive::<UInt16Type>(),
        );
        let upstream_attempts = (0..s.len())
            .map(|j| UpstreamAttempt {
                address: (!addr.is_null(j)).then(|| addr.value(j).to_owned()),
                status: (!st.is_null(j)).then(|| st.value(j)),
                response_time_us: (!rt.is_null(j)).then(|| rt.value(j)),
                group: gr.value(j),
            })
            .collect();
        let reporter_name = dict_str(17, row).unwrap_or_default();
        out.push(FlowRecord {
            schema_version: SCHEMA_VERSION,
            start_us: starts.value(row),
            duration_us: u64_at(1, row),
            source: dict_str(2, row).unwrap_or_default(),
            source_zone: dict_str(3, row),
            source_version: dict_str(4, row),
            destination: dict_str(5, row).unwrap_or_default(),
            destination_zone: dict_str(6, row),
            destination_version: dict_str(7, row),
            protocol: dict_str(8, row),
            method: dict_str(9, row),
            status: u16_at(10, row),
            response_flags: dict_str(11, row),
            bytes_received: u64_at(12, row).unwrap_or(0),
            bytes_sent: u64_at(13, row).unwrap_or(0),
            upstream_host: utf8(14, row),
            upstream_attempts,
            request_id: utf8(16, row),
            reporter: Reporter::from_name(&reporter_name).ok_or_else(|| {
                Error::Schema(format!("row {row}: unknown reporter {reporter_name:?}"))
            })?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_ascii_is_told_in_every_lane() {
        for len in 0..40 {
            assert!(super::printable_ascii(&b" ~azAZ09-._".repeat(4)[..len]));
            for bad in [0u8, 0x1f, 0x7f, 0x80, 0xc3, 0xff] {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = bad;
                    assert!(!super::printable_ascii(&s), "{len} {at} {bad:#x}");
                }
            }
        }
    }

    use super::*;

    fn sample() -> FlowRecord {
        FlowRecord {
            schema_version: SCHEMA_VERSION,
            start_us: 1_554_742_255_931_000,
            duration_us: Some(5_000),
            source: "frontend".into(),
            source_zone: Some("eu-west-1a".into()),
            source_version: None,
            destination: "catalog".into(),
            destination_zone: None,
            destination_version: Some("v2".into()),
            protocol: Some("HTTP/1.1".into()),
            method: Some("GET".into()),
            status: Some(503),
            response_flags: Some("UF,URX".into()),
            bytes_received: 12,
            bytes_sent: 89,
            upstream_host: Some("172.17.0.6:8080".into()),
            upstream_attempts: vec![
                UpstreamAttempt {
                    address: Some("172.17.0.5:8080".into()),
                    status: Some(502),
                    response_time_us: Some(1_000),
                    group: 0,
                },
                UpstreamAttempt {
                    address: None,
                    status: None,
                    response_time_us: None,
                    group: 1,
                },
            ],
            request_id: Some("c219f6da".into()),
            reporter: Reporter::IstioSource,
        }
    }

    #[test]
    fn batch_round_trip_keeps_every_field() {
        let mut b = FlowBatchBuilder::new();
        let a = sample();
        let mut c = sample();
        c.upstream_attempts.clear();
        c.status = None;
        c.duration_us = None;
        c.reporter = Reporter::Nginx;
        b.append_owned(&a);
        b.append_owned(&c);
        assert_eq!(b.len(), 2);
        let batch = b.finish();
        assert!(b.is_empty());
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(flow_records(&batch).unwrap(), vec![a, c]);
    }

    #[test]
    fn over_long_request_ids_and_addresses_are_dropped_whole_and_counted() {
        let mut b = FlowBatchBuilder::new();
        let long_id = "r".repeat(MAX_REQUEST_ID_BYTES + 1);
        let long_address = format!("{}:80", "h".repeat(MAX_ADDRESS_BYTES));
        let mut a = sample();
        a.request_id = Some(long_id);
        a.upstream_host = Some(long_address.clone());
        a.upstream_attempts[0].address = Some(long_address);
        let mut at_cap = sample();
        at_cap.request_id = Some("r".repeat(MAX_REQUEST_ID_BYTES));
        b.append_owned(&a);
        b.append_owned(&at_cap);
        assert_eq!(
            b.take_dropped(),
            DroppedValues {
                request_ids: 1,
                addresses: 2
            }
        );
        assert!(b.take_dropped().is_empty(), "taking resets the count");
        let back = flow_records(&b.finish()).unwrap();
        // the record is kept, without the values; the rest of it is intact
        assert_eq!(back[0].request_id, None);
        assert_eq!(back[0].upstream_host, None);
        assert_eq!(back[0].upstream_attempts[0].address, None);
        assert_eq!(back[0].upstream_attempts[0].status, Some(502));
        assert_eq!(back[0].destination, "catalog");
        assert_eq!(back[1], at_cap, "a value at the cap is kept");
    }

    #[test]
    fn bytes_grow_with_the_strings_stored() {
        let mut b = FlowBatchBuilder::new();
        assert_eq!(b.bytes(), 0);
        let mut r = sample();
        r.upstream_attempts.clear();
        r.request_id = Some("x".repeat(200));
        b.append_owned(&r);
        let one = b.bytes();
        // the row, its dictionary values (frontend, eu-west-1a, catalog, v2, HTTP/1.1, GET,
        // UF,URX, istio-source), the upstream host and the id
        let dict = "frontendeu-west-1acatalogv2HTTP/1.1GETUF,URXistio-source".len();
        assert_eq!(one, FlowBatchBuilder::ROW_BYTES + dict + 15 + 200);
        b.append_owned(&r);
        // a repeated dictionary value is stored once
        assert_eq!(b.bytes(), one + FlowBatchBuilder::ROW_BYTES + 15 + 200);
        b.finish();
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn service_columns_are_dictionary_encoded() {
        let mut b = FlowBatchBuilder::new();
        for _ in 0..100 {
            b.append_owned(&sample());
        }
        let batch = b.finish();
        let cols = FlowColumns::try_new(&batch).unwrap();
        assert_eq!(cols.source.values().len(), 1);
        assert_eq!(cols.destination.keys().len(), 100);
    }
}
