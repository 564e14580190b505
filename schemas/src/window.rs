//! Window aggregates: the golden signals of one pair or one node in one event-time window.
//!
//! These are the serializable hand-off between pair aggregation and node-level detection: a
//! closed window's [`PairWindow`]s are all a node detector needs, so they can be republished on
//! a topic keyed by node when graywatch scales out.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

use crate::time::{Rfc3339, agrees, beside};

/// An event-time window `[start_us, end_us)`, µs since the Unix epoch (UTC).
///
/// In JSON each bound has its RFC 3339 time beside it, for people (`start`, `end`; see
/// [`crate::time`]): `{"start_us":1764770400000000,"start":"2025-12-03T14:00:00Z",
/// "end_us":1764770410000000,"end":"2025-12-03T14:00:10Z"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "WindowDoc")]
pub struct Window {
    /// Inclusive start, µs since the epoch.
    pub start_us: i64,
    /// Exclusive end, µs since the epoch.
    pub end_us: i64,
}

/// How [`Window`] is written: the µs bounds, each followed by its RFC 3339 time when the
/// serializer is human-readable.
#[derive(Serialize)]
struct WindowOut {
    start_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<Rfc3339>,
    end_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<Rfc3339>,
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WindowOut {
            start_us: self.start_us,
            start: beside(&s, self.start_us),
            end_us: self.end_us,
            end: beside(&s, self.end_us),
        }
        .serialize(s)
    }
}

/// How [`Window`] is read: the texts are optional and must agree with the µs bounds. They
/// come last, so that a binary encoding of the bounds alone (a sequence) reads too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowDoc {
    start_us: i64,
    end_us: i64,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
}

impl TryFrom<WindowDoc> for Window {
    type Error = String;

    fn try_from(d: WindowDoc) -> Result<Self, String> {
        agrees("start", d.start.as_deref(), d.start_us)?;
        agrees("end", d.end.as_deref(), d.end_us)?;
        Ok(Window {
            start_us: d.start_us,
            end_us: d.end_us,
        })
    }
}

impl Window {
    /// Length of the window, µs.
    pub fn len_us(&self) -> i64 {
        self.end_us - self.start_us
    }

    /// Length of the window, seconds.
    pub fn len_secs(&self) -> f64 {
        self.len_us() as f64 / 1e6
    }
}

/// Latency distribution of a window, µs, from an HDR histogram (2 significant digits: a reported
/// quantile is within 1 % of the exact value; `max_us` is exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Maximum, µs (exact).
    pub max_us: u64,
}

/// Golden signals of one pair (source service → destination service) in one window.
///
/// JSON: `schemas/json/pair-window.schema.json` (`"kind": "pair-window"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairWindow {
    /// Version of this document's schema.
    pub schema_version: u32,
    /// Always `"pair-window"` (borrowed: no allocation per aggregate).
    pub kind: Cow<'static, str>,
    /// The window.
    pub window: Window,
    /// Calling service.
    pub source: String,
    /// Called service.
    pub destination: String,
    /// Requests that started in the window.
    pub requests: u64,
    /// `requests` ÷ window length, req/s.
    pub rate_rps: f64,
    /// Failed requests among `requests`, failures of the destination only: HTTP 5xx, or an
    /// Envoy response flag that puts the failure on the destination (`UT`, `UF`, `NR`, … with
    /// any status; `DC` only when no response was sent after a wait of at least 1 s); see
    /// `detect::is_error` and `detect::blame` for the list. The caller's own failures (a
    /// client hanging up at once, `DPE`) and policy (`RL`) are not errors.
    pub errors: u64,
    /// `errors` ÷ `requests` (0 when there were none).
    pub error_ratio: f64,
    /// Latency of the requests that started in the window and have a duration; `None` when
    /// none had one (e.g. NGINX `combined`).
    pub latency: Option<Latency>,
    /// Mean requests in flight: Σ of each request's overlap with the window ÷ window length.
    /// A request that spans several windows counts in each.
    pub concurrency_mean: f64,
    /// Peak requests in flight at the window's concurrency resolution: the most requests that
    /// touch one resolution slot (100 ms by default). Requests that share a slot without
    /// overlapping count together, so this is an upper bound of the instantaneous peak,
    /// close to it when requests are long against the slot.
    pub concurrency_peak: u64,
    /// Request bytes sent by the source (bytes received by the destination's proxy), bytes.
    pub bytes_in: u64,
    /// Response bytes sent back to the source, bytes.
    pub bytes_out: u64,
    /// `bytes_in` ÷ window length, bytes/s.
    pub bandwidth_in_bps: f64,
    /// `bytes_out` ÷ window length, bytes/s.
    pub bandwidth_out_bps: f64,
    /// The window's requests broken down by the zones and versions of both ends, one entry
    /// per combination seen, sorted; at most `detect::pair::MAX_BREAKDOWN` (16)
    /// entries, the rest counted in `breakdown_overflow`. Requests whose records carry no
    /// zone and no version are not broken down. Empty (and left out of the JSON) when no
    /// record had one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breakdown: Vec<Breakdown>,
    /// Requests of combinations past the breakdown's cap (in `requests`, not in
    /// `breakdown`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub breakdown_overflow: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A pair's requests in one window from one (zone, version) to one (zone, version): the
/// dimensions cross-zone traffic and deployment regressions are seen in. A dimension the
/// records did not give is `null`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breakdown {
    /// The caller's zone, when the records give it. (The names are shared, `Arc<str>`: a
    /// window has a breakdown for each of its pairs, and a landscape a few zones and
    /// versions.)
    pub source_zone: Option<Arc<str>>,
    /// The caller's version.
    pub source_version: Option<Arc<str>>,
    /// The callee's zone.
    pub destination_zone: Option<Arc<str>>,
    /// The callee's version.
    pub destination_version: Option<Arc<str>>,
    /// Requests that started in the window with these dimensions.
    pub requests: u64,
    /// Of those, errors (as `PairWindow::errors` counts them).
    pub errors: u64,
    /// Of those, the ones with a duration.
    pub timed: u64,
    /// Σ of their durations, µs (mean latency = `duration_sum_us` ÷ `timed`).
    pub duration_sum_us: u64,
    /// Request bytes, bytes.
    pub bytes_in: u64,
    /// Response bytes, bytes.
    pub bytes_out: u64,
}

/// Inflow and outflow of one node (service) in one window, summed from its pairs.
///
/// JSON: `schemas/json/node-window.schema.json` (`"kind": "node-window"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeWindow {
    /// Version of this document's schema.
    pub schema_version: u32,
    /// Always `"node-window"` (borrowed: no allocation per aggregate).
    pub kind: Cow<'static, str>,
    /// The window.
    pub window: Window,
    /// The service.
    pub node: String,
    /// Requests received from callers (inflow).
    pub inflow_requests: u64,
    /// Request bytes received from callers, bytes.
    pub inflow_bytes: u64,
    /// Successful (non-error) responses sent back to callers (outflow).
    pub ok_responses: u64,
    /// Response bytes sent back to callers, bytes.
    pub outflow_bytes: u64,
    /// Requests this node made to its own dependencies (outflow).
    pub downstream_requests: u64,
    /// Number of distinct callers in the window.
    pub callers: u64,
}

/// Pair and node windows written as JSON without serde's generic path: window aggregates are
/// most of what `replay` writes (one per active pair and node and window: 100 k per window at
/// scale), and serde_json escapes every key byte by byte at run time. The bytes are those of
/// `serde_json::to_writer(out, window)` (tests compare them).
pub mod json {
    use serde_json::ser::{CompactFormatter, Formatter};

    use super::{Breakdown, NodeWindow, PairWindow, Window};

    /// Appends `n` as one compact JSON object (no newline) to `out`.
    pub fn write_node_window(out: &mut Vec<u8>, n: &NodeWindow) {
        head(out, n.schema_version, &n.kind, &n.window);
        out.extend_from_slice(b",\"node\":");
        string(out, &n.node);
        out.extend_from_slice(b",\"inflow_requests\":");
        uint(out, n.inflow_requests);
        out.extend_from_slice(b",\"inflow_bytes\":");
        uint(out, n.inflow_bytes);
        out.extend_from_slice(b",\"ok_responses\":");
        uint(out, n.ok_responses);
        out.extend_from_slice(b",\"outflow_bytes\":");
        uint(out, n.outflow_bytes);
        out.extend_from_slice(b",\"downstream_requests\":");
        uint(out, n.downstream_requests);
        out.extend_from_slice(b",\"callers\":");
        uint(out, n.callers);
        out.push(b'}');
    }

    /// Appends `p` as one compact JSON object (no newline) to `out`.
    pub fn write_pair_window(out: &mut Vec<u8>, p: &PairWindow) {
        head(out, p.schema_version, &p.kind, &p.window);
        out.extend_from_slice(b",\"source\":");
        string(out, &p.source);
        out.extend_from_slice(b",\"destination\":");
        string(out, &p.destination);
        out.extend_from_slice(b",\"requests\":");
        uint(out, p.requests);
        out.extend_from_slice(b",\"rate_rps\":");
        float(out, p.rate_rps);
        out.extend_from_slice(b",\"errors\":");
        uint(out, p.errors);
        out.extend_from_slice(b",\"error_ratio\":");
        float(out, p.error_ratio);
        out.extend_from_slice(b",\"latency\":");
        match &p.latency {
            None => out.extend_from_slice(b"null"),
            Some(l) => {
                out.extend_from_slice(b"{\"p50_us\":");
                uint(out, l.p50_us);
                out.extend_from_slice(b",\"p90_us\":");
                uint(out, l.p90_us);
                out.extend_from_slice(b",\"p99_us\":");
                uint(out, l.p99_us);
                out.extend_from_slice(b",\"max_us\":");
                uint(out, l.max_us);
                out.push(b'}');
            }
        }
        out.extend_from_slice(b",\"concurrency_mean\":");
        float(out, p.concurrency_mean);
        out.extend_from_slice(b",\"concurrency_peak\":");
        uint(out, p.concurrency_peak);
        out.extend_from_slice(b",\"bytes_in\":");
        uint(out, p.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        uint(out, p.bytes_out);
        out.extend_from_slice(b",\"bandwidth_in_bps\":");
        float(out, p.bandwidth_in_bps);
        out.extend_from_slice(b",\"bandwidth_out_bps\":");
        float(out, p.bandwidth_out_bps);
        if !p.breakdown.is_empty() {
            out.extend_from_slice(b",\"breakdown\":[");
            for (i, b) in p.breakdown.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                breakdown(out, b);
            }
            out.push(b']');
        }
        if p.breakdown_overflow != 0 {
            out.extend_from_slice(b",\"breakdown_overflow\":");
            uint(out, p.breakdown_overflow);
        }
        out.push(b'}');
    }

    std::thread_local! {
        /// The last window written on this thread, and its JSON: every pair and node window
        /// of one closed window has the same, formatted once (its two RFC 3339 times were a
        /// tenth of an NGINX replay's judging thread, which writes 3 documents per window).
        static LAST_WINDOW: std::cell::RefCell<Option<(Window, Vec<u8>)>> =
            const { std::cell::RefCell::new(None) };
    }

    /// The fields every window document begins with, its object opened.
    fn head(out: &mut Vec<u8>, schema_version: u32, kind: &str, window: &Window) {
        out.extend_from_slice(b"{\"schema_version\":");
        uint(out, u64::from(schema_version));
        out.extend_from_slice(b",\"kind\":");
        string(out, kind);
        out.extend_from_slice(b",\"window\":");
        LAST_WINDOW.with_borrow_mut(|last| match last {
            Some((w, bytes)) if w == window => out.extend_from_slice(bytes),
            _ => {
                let mut bytes = Vec::with_capacity(96);
                write_window(&mut bytes, window);
                out.extend_from_slice(&bytes);
                *last = Some((*window, bytes));
            }
        });
    }

    /// A [`Window`] as its `Serialize` writes it through serde_json (human-readable: each
    /// bound followed by its RFC 3339 text).
    fn write_window(out: &mut Vec<u8>, w: &Window) {
        out.extend_from_slice(b"{\"start_us\":");
        int(out, w.start_us);
        out.extend_from_slice(b",\"start\":");
        crate::time::Rfc3339(w.start_us).write_json(out);
        out.extend_from_slice(b",\"end_us\":");
        int(out, w.end_us);
        out.extend_from_slice(b",\"end\":");
        crate::time::Rfc3339(w.end_us).write_json(out);
        out.push(b'}');
    }

    fn breakdown(out: &mut Vec<u8>, b: &Breakdown) {
        out.extend_from_slice(b"{\"source_zone\":");
        opt_string(out, b.source_zone.as_deref());
        out.extend_from_slice(b",\"source_version\":");
        opt_string(out, b.source_version.as_deref());
        out.extend_from_slice(b",\"destination_zone\":");
        opt_string(out, b.destination_zone.as_deref());
        out.extend_from_slice(b",\"destination_version\":");
        opt_string(out, b.destination_version.as_deref());
        out.extend_from_slice(b",\"requests\":");
        uint(out, b.requests);
        out.extend_from_slice(b",\"errors\":");
        uint(out, b.errors);
        out.extend_from_slice(b",\"timed\":");
        uint(out, b.timed);
        out.extend_from_slice(b",\"duration_sum_us\":");
        uint(out, b.duration_sum_us);
        out.extend_from_slice(b",\"bytes_in\":");
        uint(out, b.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        uint(out, b.bytes_out);
        out.push(b'}');
    }

    fn int(out: &mut Vec<u8>, n: i64) {
        CompactFormatter
            .write_i64(out, n)
            .expect("a Vec takes every write");
    }

    fn uint(out: &mut Vec<u8>, n: u64) {
        CompactFormatter
            .write_u64(out, n)
            .expect("a Vec takes every write");
    }

    /// As serde_json writes an `f64`: shortest round-trip digits, `null` when not finite.
    fn float(out: &mut Vec<u8>, x: f64) {
        if x.is_finite() {
            CompactFormatter
                .write_f64(out, x)
                .expect("a Vec takes every write");
        } else {
            out.extend_from_slice(b"null");
        }
    }

    fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => string(out, s),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// A JSON string: as it is between quotes when nothing in it needs escaping (serde_json
    /// escapes `"`, `\` and the bytes below 0x20, nothing else), else through serde_json.
    fn string(out: &mut Vec<u8>, s: &str) {
        if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            serde_json::to_writer(&mut *out, s).expect("a string serializes");
        } else {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn name() -> impl Strategy<Value = String> {
        // plain names, and names with what JSON escapes (quote, backslash, control bytes)
        // and what it does not (non-ASCII, DEL)
        prop_oneof![
            "[a-z0-9-]{1,12}",
            proptest::collection::vec(
                prop_oneof![
                    Just('"'),
                    Just('\\'),
                    Just('\u{1}'),
                    Just('\n'),
                    Just('é'),
                    Just('\u{7f}'),
                    Just('a')
                ],
                1..6
            )
            .prop_map(|v| v.into_iter().collect())
        ]
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(1e-7),
            Just(1e21),
            any::<f64>(),
            0.0..1e6f64
        ]
    }

    prop_compose! {
        fn breakdown()(
            zones in proptest::option::of(name()),
            version in proptest::option::of(name()),
            n in any::<[u64; 6]>(),
        ) -> Breakdown {
            let (zones, version) = (zones.map(Arc::from), version.map(Arc::from));
            Breakdown {
                source_zone: zones.clone(),
                source_version: version.clone(),
                destination_zone: version,
                destination_version: zones,
                requests: n[0],
                errors: n[1],
                timed: n[2],
                duration_sum_us: n[3],
                bytes_in: n[4],
                bytes_out: n[5],
            }
        }
    }

    prop_compose! {
        fn pair_window()(
            source in name(),
            destination in name(),
            // before year 0 and after 9999 too (written with a sign)
            start_us in -70_000_000_000_000_000i64..4_000_000_000_000_000,
            n in any::<[u64; 6]>(),
            f in proptest::collection::vec(float(), 6),
            latency in proptest::option::of(any::<[u64; 4]>()),
            breakdown in proptest::collection::vec(breakdown(), 0..3),
            overflow in prop_oneof![Just(0u64), any::<u64>()],
        ) -> PairWindow {
            PairWindow {
                schema_version: crate::SCHEMA_VERSION,
                kind: "pair-window".into(),
                window: Window { start_us, end_us: start_us + 10_000_000 },
                source,
                destination,
                requests: n[0],
                rate_rps: f[0],
                errors: n[1],
                error_ratio: f[1],
                latency: latency.map(|l| Latency { p50_us: l[0], p90_us: l[1], p99_us: l[2], max_us: l[3] }),
                concurrency_mean: f[2],
                concurrency_peak: n[2],
                bytes_in: n[3],
                bytes_out: n[4],
                bandwidth_in_bps: f[3],
                bandwidth_out_bps: f[4],
                breakdown,
                breakdown_overflow: overflow,
            }
        }
    }

    /// `p` written by [`json::write_pair_window`] and by serde_json.
    fn both_ways(p: &PairWindow) -> (String, String) {
        let mut fast = Vec::new();
        json::write_pair_window(&mut fast, p);
        let reference = serde_json::to_vec(p).unwrap();
        (
            String::from_utf8(fast).unwrap(),
            String::from_utf8(reference).unwrap(),
        )
    }

    proptest! {
        /// The hand-written writer gives serde_json's bytes, whatever the values.
        #[test]
        fn a_pair_window_is_written_as_serde_json_writes_it(p in pair_window()) {
            let (fast, reference) = both_ways(&p);
            prop_assert_eq!(fast, reference);
        }

        /// The same for node windows.
        #[test]
        fn a_node_window_is_written_as_serde_json_writes_it(
            node in name(),
            // before year 0 and after 9999 too (written with a sign)
            start_us in -70_000_000_000_000_000i64..4_000_000_000_000_000,
            n in any::<[u64; 6]>(),
        ) {
            let w = NodeWindow {
                schema_version: crate::SCHEMA_VERSION,
                kind: "node-window".into(),
                window: Window { start_us, end_us: start_us + 10_000_000 },
                node,
                inflow_requests: n[0],
                inflow_bytes: n[1],
                ok_responses: n[2],
                outflow_bytes: n[3],
                downstream_requests: n[4],
                callers: n[5],
            };
            let mut fast = Vec::new();
            json::write_node_window(&mut fast, &w);
            let reference = serde_json::to_vec(&w).unwrap();
            prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(reference).unwrap());
        }

        /// Windows written one after another, some the same as the one before (its JSON
        /// reused), some not: each as serde_json writes it.
        #[test]
        fn windows_written_in_a_row_are_written_as_serde_json_writes_them(
            pairs in proptest::collection::vec((pair_window(), 0i64..3), 1..8),
        ) {
            for (mut p, start) in pairs {
                p.window = Window { start_us: start * 10_000_000, end_us: (start + 1) * 10_000_000 };
                let (fast, reference) = both_ways(&p);
                prop_assert_eq!(fast, reference);
            }
        }
    }
}
