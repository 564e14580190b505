//! Envoy JSON access logs (`json_format` / `typed_json_format`), one object per line.

use std::borrow::Cow;
use std::fmt;

use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{Reject, RejectReason};
use crate::json_scan::{KeyOrder, Scanner};
use crate::mapping::{Mapping, MatchField, Side, UNKNOWN_SERVICE, between};
use crate::source::LineParser;
use crate::time::{parse_rfc3339_us, parse_seconds_us};

use super::scan::{self, MatchFields, show};

/// Parses Envoy access logs written with `json_format` or `typed_json_format` (Envoy docs,
/// `access_log/usage`, "Format dictionaries"): one JSON object per line whose keys name the
/// command operators. See the [module docs](super) for the accepted keys.
#[derive(Debug)]
pub struct EnvoyJsonParser {
    mapping: Mapping,
    order: KeyOrder,
}

impl EnvoyJsonParser {
    /// A parser using `mapping` to name services.
    pub fn new(mapping: Mapping) -> Self {
        EnvoyJsonParser {
            mapping,
            order: KeyOrder::default(),
        }
    }
}

/// Any JSON value, kept as found so that conversion errors can name the key: `json_format`
/// writes every value as a string (`"12"`, `"-"`), `typed_json_format` writes numbers as
/// numbers and absent values as `null`.
#[derive(Debug, Default)]
enum Scalar<'a> {
    /// The key is not in the object.
    #[default]
    Missing,
    Null,
    Str(Cow<'a, str>),
    Uint(u64),
    Neg(i64),
    Float(f64),
    Bool,
    /// An object or array (never a valid value of the keys read here).
    Compound,
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).map_or(Scalar::Neg(v), Scalar::Uint))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Uint(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// A number as found: whole or fractional.
#[derive(Debug, Clone, Copy)]
enum Num {
    Whole(u64),
    Frac(f64),
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Missing => "nothing",
            Scalar::Null => "null",
            Scalar::Str(_) => "a string",
            Scalar::Uint(_) | Scalar::Neg(_) | Scalar::Float(_) => "a number",
            Scalar::Bool => "a boolean",
            Scalar::Compound => "an object or array",
        }
    }

    fn wrong_type(&self, key: &str, expected: &str) -> Reject {
        Reject::new(
            RejectReason::BadJson,
            format!("{key}: expected {expected}, found {}", self.kind()),
        )
    }

    /// Missing, `null`, `"-"` and `""`: Envoy's spellings of "not set".
    fn is_absent(&self) -> bool {
        match self {
            Scalar::Missing | Scalar::Null => true,
            Scalar::Str(s) => s.is_empty() || s == "-",
            _ => false,
        }
    }

    /// Present and spelled `-` or `null` (as opposed to a missing key).
    fn is_dash(&self) -> bool {
        !matches!(self, Scalar::Missing) && self.is_absent()
    }

    fn text(&self, key: &str) -> Result<Option<&str>, Reject> {
        match self {
            _ if self.is_absent() => Ok(None),
            Scalar::Str(s) => Ok(Some(s)),
            other => Err(other.wrong_type(key, "a string")),
        }
    }

    fn num(&self, key: &str) -> Result<Option<Num>, Reject> {
        let bad = |v: &str| Reject::new(RejectReason::BadNumber, format!("invalid {key} {v}"));
        // `shown` is only spelled out for a reject
        let frac = |f: f64, shown: &dyn Fn() -> String| {
            if f.is_finite() && f >= 0.0 {
                Ok(if f.fract() == 0.0 && f < u64::MAX as f64 {
                    Num::Whole(f as u64)
                } else {
                    Num::Frac(f)
                })
            } else {
                Err(bad(&shown()))
            }
        };
        match self {
            _ if self.is_absent() => Ok(None),
            Scalar::Uint(n) => Ok(Some(Num::Whole(*n))),
            Scalar::Neg(n) => Err(bad(&n.to_string())),
            Scalar::Float(f) => frac(*f, &|| f.to_string()).map(Some),
            Scalar::Str(s) => {
                let t = s.trim();
                if let Ok(n) = t.parse::<u64>() {
                    return Ok(Some(Num::Whole(n)));
                }
                let shown = show(s.as_bytes());
                // Only plain decimals: Rust's f64 parser also takes "inf" and "NaN".
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    return Err(bad(&shown));
                }
                let f = t.parse::<f64>().map_err(|_| bad(&shown))?;
                frac(f, &|| shown.clone()).map(Some)
            }
            other => Err(other.wrong_type(key, "a number")),
        }
    }

    /// A whole number (`12`, `"12"`, `12.0`).
    fn whole(&self, key: &str) -> Result<Option<u64>, Reject> {
        match self.num(key)? {
            None => Ok(None),
            Some(Num::Whole(n)) => Ok(Some(n)),
            Some(Num::Frac(f)) => Err(Reject::new(
                RejectReason::BadNumber,
                format!("invalid {key} {f}: not a whole number"),
            )),
        }
    }

    /// Milliseconds (whole or fractional) → µs, rounded to the nearest µs.
    fn millis_to_us(&self, key: &str) -> Result<Option<u64>, Reject> {
        let overflow = || {
            Reject::new(
                RejectReason::BadNumber,
                format!("{key} overflows µs: {}", self.kind()),
            )
        };
        match self.num(key)? {
            None => Ok(None),
            Some(Num::Whole(ms)) => ms.checked_mul(1000).map(Some).ok_or_else(overflow),
            Some(Num::Frac(ms)) => {
                let us = (ms * 1000.0).round();
                if us < 1.8e19 {
                    Ok(Some(us as u64))
                } else {
                    Err(overflow())
                }
            }
        }
    }

    /// `%START_TIME%`: RFC 3339 (the default), or epoch seconds with an optional fraction
    /// (`%START_TIME(%s.%3f)%`, as a string or a number) → µs since the epoch.
    fn start_us(&self, key: &str) -> Result<i64, Reject> {
        let bad = |v: &str| Reject::new(RejectReason::BadTimestamp, format!("invalid {key} {v}"));
        let from_secs = |us: Option<u64>, v: &str| {
            us.and_then(|us| i64::try_from(us).ok())
                .ok_or_else(|| bad(v))
        };
        match self {
            Scalar::Missing => Err(Reject::new(
                RejectReason::Malformed,
                format!("missing {key} (also accepted: START_TIME, timestamp)"),
            )),
            Scalar::Str(s) => parse_rfc3339_us(s.as_bytes()).map_or_else(
                || from_secs(parse_seconds_us(s.as_bytes()), &show(s.as_bytes())),
                Ok,
            ),
            Scalar::Uint(n) => from_secs(n.checked_mul(1_000_000), &n.to_string()),
            Scalar::Float(f) => {
                let s = f.to_string();
                from_secs(parse_seconds_us(s.as_bytes()), &s)
            }
            other => Err(bad(other.kind())),
        }
    }
}

/// The keys read from a line. Unknown keys are ignored; a key given twice (even under two
/// aliases) is a `bad-json` reject.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Line<'a> {
    #[serde(
        borrow,
        alias = "START_TIME",
        alias = "startTime",
        alias = "timestamp",
        alias = "@timestamp"
    )]
    start_time: Scalar<'a>,
    #[serde(borrow, alias = "METHOD", alias = "REQ(:METHOD)", alias = ":method")]
    method: Scalar<'a>,
    #[serde(borrow, alias = "PROTOCOL")]
    protocol: Scalar<'a>,
    #[serde(
        borrow,
        alias = "RESPONSE_CODE",
        alias = "status",
        alias = "status_code"
    )]
    response_code: Scalar<'a>,
    #[serde(borrow, alias = "RESPONSE_FLAGS")]
    response_flags: Scalar<'a>,
    #[serde(borrow, alias = "BYTES_RECEIVED")]
    bytes_received: Scalar<'a>,
    #[serde(borrow, alias = "BYTES_SENT")]
    bytes_sent: Scalar<'a>,
    #[serde(borrow, alias = "DURATION")]
    duration: Scalar<'a>,
    #[serde(borrow, alias = "UPSTREAM_HOST")]
    upstream_host: Scalar<'a>,
    #[serde(borrow, alias = "UPSTREAM_CLUSTER")]
    upstream_cluster: Scalar<'a>,
    #[serde(
        borrow,
        alias = "AUTHORITY",
        alias = "REQ(:AUTHORITY)",
        alias = ":authority",
        alias = "host"
    )]
    authority: Scalar<'a>,
    #[serde(borrow, alias = "REQUEST_ID", alias = "REQ(X-REQUEST-ID)")]
    request_id: Scalar<'a>,
    #[serde(
        borrow,
        rename = "x-request-id",
        alias = "x_request_id",
        alias = "X-REQUEST-ID"
    )]
    x_request_id: Scalar<'a>,
    #[serde(borrow, alias = "DOWNSTREAM_REMOTE_ADDRESS")]
    downstream_remote_address: Scalar<'a>,
}

/// Which field of [`Line`] a key sets (see the aliases on [`Line`]'s fields).
fn field_of(key: &str) -> Option<u8> {
    Some(match key {
        "start_time" | "START_TIME" | "startTime" | "timestamp" | "@timestamp" => 0,
        "method" | "METHOD" | "REQ(:METHOD)" | ":method" => 1,
        "protocol" | "PROTOCOL" => 2,
        "response_code" | "RESPONSE_CODE" | "status" | "status_code" => 3,
        "response_flags" | "RESPONSE_FLAGS" => 4,
        "bytes_received" | "BYTES_RECEIVED" => 5,
        "bytes_sent" | "BYTES_SENT" => 6,
        "duration" | "DURATION" => 7,
        "upstream_host" | "UPSTREAM_HOST" => 8,
        "upstream_cluster" | "UPSTREAM_CLUSTER" => 9,
        "authority" | "AUTHORITY" | "REQ(:AUTHORITY)" | ":authority" | "host" => 10,
        "request_id" | "REQUEST_ID" | "REQ(X-REQUEST-ID)" => 11,
        "x-request-id" | "x_request_id" | "X-REQUEST-ID" => 12,
        "downstream_remote_address" | "DOWNSTREAM_REMOTE_ADDRESS" => 13,
        _ => return None,
    })
}

impl<'a> Line<'a> {
    /// The field [`field_of`] names.
    fn field(&mut self, field: u8) -> &mut Scalar<'a> {
        match field {
            0 => &mut self.start_time,
            1 => &mut self.method,
            2 => &mut self.protocol,
            3 => &mut self.response_code,
            4 => &mut self.response_flags,
            5 => &mut self.bytes_received,
            6 => &mut self.bytes_sent,
            7 => &mut self.duration,
            8 => &mut self.upstream_host,
            9 => &mut self.upstream_cluster,
            10 => &mut self.authority,
            11 => &mut self.request_id,
            12 => &mut self.x_request_id,
            _ => &mut self.downstream_remote_address,
        }
    }
}

/// The fast path: `Some(line)` for a line of the shape Envoy writes (a flat object; strings
/// without escapes; integers and plain decimals), read without allocating; `None` when
/// serde_json must decide (an escape, a nested value, a key given twice, a syntax error).
/// Both read every line alike: a property test checks it, `cargo bench --bench parse`
/// measures the difference. `order` is what the previous lines taught (see [`KeyOrder`]).
#[cfg(test)]
fn scan<'a>(line: &'a [u8], order: &mut KeyOrder) -> Option<Line<'a>> {
    let mut l = Line::default();
    scan_into(line, order, &mut l).map(|()| l)
}

/// [`scan`] into `l` (a default [`Line`]), which stays in the caller's frame: a line is 14
/// values of 32 bytes, too many to move around for each of millions of lines. On `None`, `l`
/// holds what was read before the scanner gave up.
fn scan_into<'a>(line: &'a [u8], order: &mut KeyOrder, l: &mut Line<'a>) -> Option<()> {
    // validated with SIMD: a line is hundreds of bytes
    let text = simdutf8::basic::from_utf8(line).ok()?;
    let mut s = Scanner::new(text);
    s.byte(b'{')?;
    if s.peek()? == b'}' {
        s.next();
        return s.at_end().then_some(());
    }
    let mut seen = 0u16;
    for position in 0.. {
        let field = order.key(&mut s, position, field_of)?;
        let value = scalar(&mut s)?;
        if let Some(f) = field {
            // a key given twice: serde_json names it
            if seen & (1 << f) != 0 {
                return None;
            }
            seen |= 1 << f;
            *l.field(f) = value;
        }
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.at_end().then_some(())
}

/// One scalar value as serde_json's `deserialize_any` would give it to [`ScalarVisitor`].
fn scalar<'a>(s: &mut Scanner<'a>) -> Option<Scalar<'a>> {
    Some(match s.peek()? {
        b'"' => Scalar::Str(Cow::Borrowed(s.string_here()?)),
        b'n' => {
            s.null()?.then_some(())?;
            Scalar::Null
        }
        b't' => {
            s.literal(b"true")?.then_some(())?;
            Scalar::Bool
        }
        b'f' => {
            s.literal(b"false")?.then_some(())?;
            Scalar::Bool
        }
        _ => {
            let n = s.number()?;
            if n.integer {
                match (n.negative, n.digits) {
                    (false, d) => Scalar::Uint(d),
                    // serde_json reads `-0` as a float
                    (true, 0) => Scalar::Float(-0.0),
                    (true, d) => Scalar::Neg(-i64::try_from(d).ok()?),
                }
            } else {
                Scalar::Float(n.to_f64()?)
            }
        }
    })
}

impl LineParser for EnvoyJsonParser {
    fn mapping_mut(&mut self) -> Option<&mut Mapping> {
        Some(&mut self.mapping)
    }

    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        let mut l = Line::default();
        if scan_into(line, &mut self.order, &mut l).is_none() {
            l = serde_json::from_slice(line).map_err(|e| {
                if let Err(u) = std::str::from_utf8(line) {
                    Reject::new(
                        RejectReason::InvalidUtf8,
                        format!("invalid utf-8 at byte {}", u.valid_up_to()),
                    )
                } else {
                    Reject::new(RejectReason::BadJson, format!("{e}"))
                }
            })?;
        }
        let start_us = l.start_time.start_us("start_time")?;
        let method = l.method.text("method")?;
        // `- - -` in the text format: a TCP proxy connection has neither.
        let protocol = if l.method.is_dash() && l.protocol.is_dash() {
            Some("tcp")
        } else {
            l.protocol.text("protocol")?
        };
        let status = match l.response_code.whole("response_code")? {
            None | Some(0) => None,
            Some(n @ 1..=999) => Some(n as u16),
            Some(n) => {
                return Err(Reject::new(
                    RejectReason::BadNumber,
                    format!("response_code {n} out of range 0..=999"),
                ));
            }
        };
        let response_flags = l.response_flags.text("response_flags")?;
        let bytes_received = l.bytes_received.whole("bytes_received")?.unwrap_or(0);
        let bytes_sent = l.bytes_sent.whole("bytes_sent")?.unwrap_or(0);
        let duration_us = l.duration.millis_to_us("duration")?;
        let upstream_host = l.upstream_host.text("upstream_host")?;
        let upstream_cluster = l.upstream_cluster.text("upstream_cluster")?;
        let authority = l.authority.text("authority")?;
        let request_id = match l.request_id.text("request_id")? {
            Some(id) => Some(id),
            None => l.x_request_id.text("x-request-id")?,
        };
        let downstream = l
            .downstream_remote_address
            .text("downstream_remote_address")?;

        let m = &self.mapping;
        let source = m.own().unwrap_or_else(|| {
            MatchFields::new()
                .with(MatchField::DownstreamAddress, downstream)
                .resolve(m, Side::Source)
                .unwrap_or_else(|| m.own_or(UNKNOWN_SERVICE))
        });
        let destination = if scan::unrouted(response_flags, upstream_host, upstream_cluster) {
            scan::unrouted_sink()
        } else {
            MatchFields::new()
                .with(MatchField::Authority, authority)
                .with(MatchField::UpstreamHost, upstream_host)
                .with(MatchField::UpstreamCluster, upstream_cluster)
                .resolve(m, Side::Destination)
                .unwrap_or_else(|| match upstream_cluster.and_then(scan::cluster_service) {
                    Some(service) => scan::named(service),
                    None => scan::first_host(&[authority, upstream_host]),
                })
        };
        let r = FlowRecordRef {
            start_us,
            duration_us,
            protocol,
            method,
            status,
            response_flags,
            bytes_received,
            bytes_sent,
            upstream_host,
            upstream_attempts: &[],
            request_id,
            reporter: Reporter::Envoy,
            ..between(source, destination)
        };
        crate::check_names(&r)?;
        out.append(&r);
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What serde_json alone makes of `line`.
    fn by_serde(line: &[u8]) -> Option<String> {
        serde_json::from_slice::<Line<'_>>(line)
            .ok()
            .map(|l| format!("{l:?}"))
    }

    /// A value as `json_format` or `typed_json_format` writes it, or something odd.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9.:|/-]{0,12}".prop_map(|s| format!("{s:?}")),
            (0u64..u64::MAX).prop_map(|n| n.to_string()),
            (0u32..100_000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
            (-1000i64..0).prop_map(|n| n.to_string()),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("-0".to_owned()),
            Just("1e3".to_owned()),
            Just("0.000001".to_owned()),
            Just(r#""a\"b""#.to_owned()),
            Just("[1]".to_owned()),
            Just(r#"{"a":1}"#.to_owned()),
            Just(r#""2026-01-05T12:00:00.012674Z""#.to_owned()),
        ]
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "start_time",
            "START_TIME",
            "@timestamp",
            "method",
            ":method",
            "protocol",
            "response_code",
            "status",
            "response_flags",
            "bytes_received",
            "bytes_sent",
            "duration",
            "DURATION",
            "upstream_host",
            "upstream_cluster",
            "authority",
            "host",
            "request_id",
            "x-request-id",
            "downstream_remote_address",
            "user_agent",
            "path",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The scanner and serde_json read every line alike: random keys (aliases, unknown
        /// keys, a key twice) with values of every kind, spaced or not, and the same line with
        /// one byte changed.
        #[test]
        fn the_scanner_reads_what_serde_reads(
            entries in prop::collection::vec((key(), value()), 0..12),
            other in prop::collection::vec((key(), value()), 0..12),
            spaced in any::<bool>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let sep = if spaced { ", " } else { "," };
            let object = |entries: &[(&str, String)]| {
                let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", body.join(sep))
            };
            let line = object(&entries);
            // keys learned from another line, which shares a prefix of this one's keys
            let mut learned = KeyOrder::default();
            let mut taught: Vec<(&str, String)> = entries.iter().take(other.len() / 2).cloned().collect();
            taught.extend(other.iter().cloned());
            let _ = scan(object(&taught).as_bytes(), &mut learned);
            let mut changed = line.clone().into_bytes();
            let i = at.index(changed.len());
            changed[i] = byte;
            for candidate in [line.into_bytes(), changed] {
                let slow = by_serde(&candidate);
                // the fast path may leave a line to serde_json, never read it otherwise
                if let Some(fast) = scan(&candidate, &mut KeyOrder::default()) {
                    prop_assert_eq!(Some(format!("{fast:?}")), slow.clone());
                }
                // with the keys of another line expected
                if let Some(fast) = scan(&candidate, &mut learned.clone()) {
                    prop_assert_eq!(Some(format!("{fast:?}")), slow);
                }
            }
        }
    }

    #[test]
    fn the_scanner_reads_the_common_shape_itself() {
        let line = br#"{"start_time":"2026-01-05T12:00:00.012674Z","method":"POST","response_code":200,"bytes_received":2297,"duration":0.777,"upstream_host":"10.2.41.1:8080","user_agent":"fluent-bit/3.1"}"#;
        let mut order = KeyOrder::default();
        let l = scan(line, &mut order).expect("the common shape is read by the scanner");
        assert!(matches!(l.duration, Scalar::Float(f) if f == 0.777));
        assert!(matches!(l.response_code, Scalar::Uint(200)));
        assert_eq!(l.duration.millis_to_us("duration").unwrap(), Some(777));
        assert_eq!(format!("{l:?}"), by_serde(line).unwrap());
    }
}
