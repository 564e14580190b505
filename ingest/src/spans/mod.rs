//! Trace spans as CSV: a parent span and its child span in different services make one flow
//! record (the parent's service calling the child's service).
//!
//! # Input
//!
//! One span per line, comma-separated, after a header line naming the columns, as in the
//! Nezha TrainTicket traces (deploy/examples/README.md):
//! `TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration`
//! ([`HEADER`]). `StartTimeUnixNano` is in ns since the Unix epoch, `Duration` in µs,
//! `ParentID` is `root` (or empty) for a trace's entry span.
//!
//! Columns are found by name (ASCII case-insensitive), in any order. `TraceID`, `SpanID`,
//! `ParentID`, `PodName`, `StartTimeUnixNano` and `Duration` are required; `OperationName`,
//! `EndTimeUnixNano` (not used: `Duration` is) and any other column are optional and ignored.
//! `OperationName` values may hold commas: a line with more fields than its header reads the
//! columns before `OperationName` from the left and those after it from the right.
//!
//! A line naming two or more of those columns is a header. It applies to the lines after it
//! until the next header, so one parser can read several files in a row, each with its own
//! header. A header that lacks a required column, or names one twice, is rejected
//! (`malformed`, the detail naming the column), and so is every data line after it until the
//! next header: nothing is read from columns that cannot be placed. Data lines before any
//! header are read in the default layout, [`HEADER`]. Headers yield no records.
//!
//! # Services
//!
//! A pod's service is its name less its two last `-` parts, the Kubernetes Deployment
//! suffixes (`ts-contacts-service-866bd68c97-xcqfx` → `ts-contacts-service`); a name with
//! fewer than three parts is kept whole. A mapping rule on `pod` overrides it: a
//! `side = "source"` rule names the parent (calling) side, a `destination` rule the child's.
//!
//! # Records
//!
//! For each child span whose parent span was seen in the same trace, when the two services
//! differ (compared as callees, i.e. by `destination` rules or the pod-name default; a `source`
//! rule only renames the caller): source = the parent's service, destination = the child's, `start_us` = the child's
//! start (ns / 1000, truncated), `duration_us` = the child's `Duration`, `request_id` = the
//! trace id, reporter [`Reporter::Span`]. Spans carry no HTTP status, method, protocol or byte
//! counts: those are `None` / 0. Same-service parent and child (internal spans) yield nothing.
//!
//! # Arrival order and the memory bound
//!
//! Spans of a trace arrive in any order and traces interleave. Each trace keeps the pods of
//! its spans (to serve as parents of later children) and the children waiting for a parent not
//! seen yet; a pair is emitted as soon as both ends are known, so the output does not depend
//! on the order. A span whose id was already seen in its trace is a duplicate (the Nezha
//! files overlap) and is counted, not emitted again.
//!
//! Nothing tells when a trace is complete, so traces are held until the number of held spans
//! (a child still waiting for its parent counts twice) exceeds
//! [`max_pending_spans`](SpansCsvParser::with_max_pending_spans) (default
//! [`DEFAULT_MAX_PENDING_SPANS`]); then the oldest traces (by first-seen order) are evicted
//! until it fits. What a held span costs depends on how many traces hold them (each trace
//! has its own maps); measured resident memory at the default bound of 1 000 000 held spans
//! (Linux, glibc malloc, release build; the ignored test `held_span_memory`):
//!
//! | spans held | MB | bytes per held span |
//! |---|---|---|
//! | the Nezha TrainTicket traces, about 73 spans per trace | 45 | 45 |
//! | 10-span traces, every parent seen | 68 | 68 |
//! | one-span traces whose parent never comes (each child counts twice) | 367 | 367 |
//!
//! So plan for up to about 370 bytes per held span (370 MB at the default bound) when many
//! traces are small or lose their parents, and lower the bound with
//! [`with_max_pending_spans`](SpansCsvParser::with_max_pending_spans) where memory is
//! tight.
//!
//! Ids that are not 16 hex digits are held as text, so long ids make held spans cost more:
//! traces are also evicted while the held spans' estimated bytes exceed
//! [`max_pending_bytes`](SpansCsvParser::with_max_pending_bytes) (default
//! [`DEFAULT_MAX_PENDING_BYTES`], 512 MiB), the estimate being [`HELD_SPAN_BYTES`] per held
//! span (the worst case measured above) plus the bytes of every id held as text (trace ids
//! once per trace, span ids once per span, parent ids once per waiting child). And a line
//! whose `TraceID`, `SpanID` or `ParentID` is longer than
//! [`MAX_REQUEST_ID_BYTES`](schemas::flow::MAX_REQUEST_ID_BYTES) (256 bytes; W3C trace ids
//! are 32 hex digits, span ids 16) is rejected (`malformed`): a span joins its parent by id,
//! and an id cut short could join spans of different traces. Children that never found their parent (at
//! eviction or at [`finish`](LineParser::finish)) are counted as `spans without parent`;
//! see [`LineParser::counters`].

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};

use crate::error::{Reject, RejectReason};
use crate::mapping::{Endpoint, Mapping, MatchField, Side};
use crate::source::LineParser;

/// Default bound on held spans (see the module docs): 45–370 MB resident, by trace shape.
pub const DEFAULT_MAX_PENDING_SPANS: usize = 1_000_000;

/// Default bound on the estimated bytes of held spans (see the module docs), 512 MiB: above
/// what [`DEFAULT_MAX_PENDING_SPANS`] spans with short ids are estimated at (370 MB), so it
/// only cuts when ids are long.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 512 << 20;

/// Estimated bytes of one held span besides its text ids: the most measured per held span
/// (one-span traces whose parent never comes; see the module docs).
pub const HELD_SPAN_BYTES: usize = 370;

/// Counter names reported by [`SpansCsvParser`]'s [`LineParser::counters`].
pub mod counters {
    /// Child spans whose parent span was never seen (counted at eviction or at the end).
    pub const WITHOUT_PARENT: &str = "spans without parent";
    /// Distinct spans dropped from memory because the bound was reached (joined or not).
    pub const EVICTED_SPANS: &str = "spans evicted";
    /// Traces dropped from memory because the bound was reached.
    pub const EVICTED_TRACES: &str = "traces evicted";
    /// Spans seen twice in a trace (same span id), not emitted again.
    pub const DUPLICATE_SPANS: &str = "duplicate spans";
}

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A span id: 16 hex digits (W3C / OpenTelemetry) as a number, anything else as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SpanKey {
    Hex(u64),
    Text(Box<str>),
}

impl SpanKey {
    /// Bytes of the id held as text (0 for a hex id held as a number).
    fn text_len(&self) -> usize {
        match self {
            SpanKey::Hex(_) => 0,
            SpanKey::Text(t) => t.len(),
        }
    }

    fn new(id: &str) -> Self {
        if id.len() == 16
            && let Ok(n) = u64::from_str_radix(id, 16)
        {
            return SpanKey::Hex(n);
        }
        SpanKey::Text(id.into())
    }
}

/// A child span waiting for its parent.
#[derive(Debug, Clone, Copy)]
struct Child {
    pod: u32,
    start_us: i64,
    duration_us: u64,
}

#[derive(Debug, Default)]
struct Trace {
    /// Span id → pod index, for every span seen.
    spans: HashMap<SpanKey, u32>,
    /// Parent span id → children seen before it.
    waiting: HashMap<SpanKey, Vec<Child>>,
    /// Number of children in `waiting`.
    waiting_len: usize,
    /// Bytes of the ids this trace holds as text (its own id included).
    id_bytes: usize,
}

#[derive(Debug, Clone)]
struct OwnedEndpoint {
    service: String,
    zone: Option<String>,
    version: Option<String>,
}

impl OwnedEndpoint {
    fn of(e: Option<Endpoint<'_>>, default_service: &str) -> Self {
        match e {
            Some(e) => OwnedEndpoint {
                service: e.service.to_owned(),
                zone: e.zone.map(str::to_owned),
                version: e.version.map(str::to_owned),
            },
            None => OwnedEndpoint {
                service: default_service.to_owned(),
                zone: None,
                version: None,
            },
        }
    }
}

/// A pod and its service on either side of a call.
#[derive(Debug, Clone)]
struct Pod {
    as_source: OwnedEndpoint,
    as_destination: OwnedEndpoint,
}

/// The service of a Deployment pod: the name less its two last `-` parts.
pub fn pod_service(pod: &str) -> &str {
    let mut cut = pod.rsplitn(3, '-');
    match (cut.next(), cut.next(), cut.next()) {
        (Some(_), Some(_), Some(service)) if !service.is_empty() => service,
        _ => pod,
    }
}

/// Joins parent and child spans into flow records; see the module docs.
#[derive(Debug)]
pub struct SpansCsvParser {
    mapping: Mapping,
    /// The columns of the current input, from its last header line (the default layout
    /// before any); `Err` with the detail when that header lacks a required column.
    layout: Result<Layout, String>,
    /// Comma positions of the current line (reused).
    cuts: Vec<usize>,
    max_pending: usize,
    max_pending_bytes: usize,
    pods: Vec<Pod>,
    pod_index: HashMap<Box<str>, u32>,
    traces: HashMap<Arc<str>, Trace>,
    /// Trace ids in first-seen order (eviction order).
    order: VecDeque<Arc<str>>,
    /// Spans held: span entries plus waiting children.
    held: usize,
    /// Bytes of the ids held as text, over every trace.
    id_bytes: usize,
    without_parent: u64,
    evicted_spans: u64,
    evicted_traces: u64,
    duplicates: u64,
}

impl SpansCsvParser {
    /// A parser using `mapping` (rules on `pod`) to name services, holding at most
    /// [`DEFAULT_MAX_PENDING_SPANS`] spans.
    pub fn new(mapping: Mapping) -> Self {
        SpansCsvParser {
            mapping,
            layout: Ok(Layout::default_layout()),
            cuts: Vec::new(),
            max_pending: DEFAULT_MAX_PENDING_SPANS,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            pods: Vec::new(),
            pod_index: HashMap::default(),
            traces: HashMap::default(),
            order: VecDeque::new(),
            held: 0,
            id_bytes: 0,
            without_parent: 0,
            evicted_spans: 0,
            evicted_traces: 0,
            duplicates: 0,
        }
    }

    /// Sets the bound on held spans (at least 1; 45–370 bytes each, see the module docs).
    pub fn with_max_pending_spans(mut self, max: usize) -> Self {
        self.max_pending = max.max(1);
        self
    }

    /// Sets the bound on the estimated bytes of held spans (at least 1; see the module docs).
    pub fn with_max_pending_bytes(mut self, max: usize) -> Self {
        self.max_pending_bytes = max.max(1);
        self
    }

    /// Spans currently held (span entries plus children waiting for a parent).
    pub fn held_spans(&self) -> usize {
        self.held
    }

    /// Estimated bytes of the spans held: [`HELD_SPAN_BYTES`] each plus their text ids.
    pub fn held_bytes(&self) -> usize {
        self.held
            .saturating_mul(HELD_SPAN_BYTES)
            .saturating_add(self.id_bytes)
    }

    fn pod(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.pod_index.get(name) {
            return i;
        }
        let service = pod_service(name);
        let field = [(MatchField::Pod, name)];
        let pod = Pod {
            as_source: OwnedEndpoint::of(self.mapping.resolve(Side::Source, &field), service),
            as_destination: OwnedEndpoint::of(
                self.mapping.resolve(Side::Destination, &field),
                service,
            ),
        };
        let i = u32::try_from(self.pods.len()).unwrap_or(u32::MAX);
        self.pods.push(pod);
        self.pod_index.insert(name.into(), i);
        i
    }

    /// Evicts the oldest traces until at most `max_pending` spans of at most
    /// `max_pending_bytes` estimated bytes are held.
    fn evict(&mut self) {
        while self.held > self.max_pending || self.held_bytes() > self.max_pending_bytes {
            let Some(id) = self.order.pop_front() else {
                break;
            };
            if let Some(t) = self.traces.remove(&id) {
                self.held -= t.spans.len() + t.waiting_len;
                self.id_bytes -= t.id_bytes;
                self.evicted_spans += t.spans.len() as u64;
                self.evicted_traces += 1;
                self.without_parent += t.waiting_len as u64;
            }
        }
    }
}

/// Appends the record of `parent` calling `child`, if their services differ.
fn emit(
    pods: &[Pod],
    parent: u32,
    child: Child,
    trace_id: &str,
    out: &mut FlowBatchBuilder,
) -> usize {
    let (Some(p), Some(c)) = (pods.get(parent as usize), pods.get(child.pod as usize)) else {
        return 0;
    };
    // Internal spans: the same service, named as a callee on both ends (a `source` rule only
    // renames the caller in the record).
    if p.as_destination.service == c.as_destination.service {
        return 0;
    }
    let (src, dst) = (&p.as_source, &c.as_destination);
    let mut r = FlowRecordRef::new(child.start_us, &src.service, &dst.service, Reporter::Span);
    r.source_zone = src.zone.as_deref();
    r.source_version = src.version.as_deref();
    r.destination_zone = dst.zone.as_deref();
    r.destination_version = dst.version.as_deref();
    r.duration_us = Some(child.duration_us);
    r.request_id = Some(trace_id);
    out.append(&r);
    1
}

fn number(field: &str, v: &str) -> Result<u64, Reject> {
    let ok = !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| v.parse::<u64>().ok()).flatten().ok_or_else(|| {
        Reject::new(
            RejectReason::BadNumber,
            format!("invalid {field} {:?}", truncate(v)),
        )
    })
}

/// Rejects an id longer than [`MAX_REQUEST_ID_BYTES`](schemas::flow::MAX_REQUEST_ID_BYTES).
fn check_id(field: &str, v: &str) -> Result<(), Reject> {
    let max = schemas::flow::MAX_REQUEST_ID_BYTES;
    if v.len() > max {
        return Err(Reject::new(
            RejectReason::Malformed,
            format!(
                "{field} of {} bytes, longer than {max}: {:?}…",
                v.len(),
                truncate(v)
            ),
        ));
    }
    Ok(())
}

/// A header's column names for a reject detail, whole unless the header is longer than a
/// detail should be (over [`MAX_HEADER_DETAIL`] characters): then its first columns that fit
/// and how many more there are, never a name cut in two.
fn columns(header: &str) -> String {
    if header.chars().count() <= MAX_HEADER_DETAIL {
        return header.to_owned();
    }
    let names: Vec<&str> = header.split(',').collect();
    let mut out = String::new();
    let mut shown = 0;
    for n in &names {
        if out.chars().count() + n.chars().count() + 1 > MAX_HEADER_DETAIL {
            break;
        }
        if shown > 0 {
            out.push(',');
        }
        out.push_str(n);
        shown += 1;
    }
    format!("{out},… and {} more columns", names.len() - shown)
}

/// Most characters of a header a reject detail shows (a header line can be as long as any
/// line).
const MAX_HEADER_DETAIL: usize = 400;

fn truncate(v: &str) -> &str {
    match v.char_indices().nth(80) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// The documented default layout, assumed for data lines before any header line.
pub const HEADER: &str =
    "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration";

/// Columns the parser reads, by header name; every other column is optional.
const REQUIRED: [&str; 6] = [
    "TraceID",
    "SpanID",
    "ParentID",
    "PodName",
    "StartTimeUnixNano",
    "Duration",
];

/// Every column name the parser knows (a line with two or more of them is a header).
const KNOWN: [&str; 8] = [
    "TraceID",
    "SpanID",
    "ParentID",
    "PodName",
    "OperationName",
    "StartTimeUnixNano",
    "EndTimeUnixNano",
    "Duration",
];

/// Where each read column is in a line, from a header line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    /// Columns in the header.
    columns: usize,
    /// Positions of the [`REQUIRED`] columns, in that order.
    at: [usize; 6],
    /// Position of `OperationName`, the one column whose values may hold commas.
    operation: Option<usize>,
    /// The header as read, for reject details.
    header: Box<str>,
}

impl Layout {
    fn default_layout() -> Self {
        Layout {
            columns: 8,
            at: [0, 1, 2, 3, 5, 7],
            operation: Some(4),
            header: HEADER.into(),
        }
    }

    /// The layout a header line describes; `Err` names what is wrong with it.
    fn from_header(line: &str) -> Result<Self, String> {
        let names: Vec<&str> = line.split(',').map(str::trim).collect();
        let find = |want: &str| -> Result<Option<usize>, String> {
            let mut hits = names
                .iter()
                .enumerate()
                .filter(|(_, n)| n.eq_ignore_ascii_case(want));
            match (hits.next(), hits.next()) {
                (Some((i, _)), None) => Ok(Some(i)),
                (None, _) => Ok(None),
                (Some(_), Some(_)) => Err(format!("header has column {want:?} twice")),
            }
        };
        let mut at = [0; 6];
        let mut missing = Vec::new();
        for (slot, name) in at.iter_mut().zip(REQUIRED) {
            match find(name)? {
                Some(i) => *slot = i,
                None => missing.push(format!("{name:?}")),
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "missing column {} in header {:?}",
                missing.join(", "),
                columns(line)
            ));
        }
        Ok(Layout {
            columns: names.len(),
            at,
            operation: find("OperationName")?,
            header: line.into(),
        })
    }

    /// The required fields of a data line, in [`REQUIRED`] order. A line with more fields
    /// than the header has commas in its `OperationName`: columns before it are counted from
    /// the left, columns after it from the right.
    fn fields<'a>(&self, line: &'a str, cuts: &mut Vec<usize>) -> Result<[&'a str; 6], Reject> {
        cuts.clear();
        cuts.extend(memchr::memchr_iter(b',', line.as_bytes()));
        let n = cuts.len() + 1;
        let shifted = match self.operation {
            Some(op) if n > self.columns => Some(op),
            _ if n == self.columns => None,
            _ => {
                return Err(Reject::new(
                    RejectReason::Malformed,
                    format!(
                        "expected {} comma-separated fields ({}{}), found {n}",
                        self.columns,
                        columns(&self.header),
                        if *self.header == *HEADER {
                            ", the default layout: no header line came before this line"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        };
        let field = |i: usize| {
            let start = if i == 0 { 0 } else { cuts[i - 1] + 1 };
            let end = cuts.get(i).copied().unwrap_or(line.len());
            &line[start..end]
        };
        Ok(self.at.map(|c| match shifted {
            Some(op) if c > op => field(n - (self.columns - c)),
            _ => field(c),
        }))
    }
}

/// True when `line` names two or more known columns: a header, in any column order.
pub(crate) fn is_header(line: &str) -> bool {
    // Runs on every line: compare only fields whose trimmed length is a known name's.
    let known = |f: &str| {
        let f = f.trim();
        matches!(f.len(), 6..=8 | 13 | 15 | 17) && KNOWN.iter().any(|k| f.eq_ignore_ascii_case(k))
    };
    line.split(',').filter(|f| known(f)).nth(1).is_some()
}

impl LineParser for SpansCsvParser {
    fn mapping_mut(&mut self) -> Option<&mut Mapping> {
        Some(&mut self.mapping)
    }

    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        let line = std::str::from_utf8(line)
            .map_err(|e| {
                Reject::new(
                    RejectReason::InvalidUtf8,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                )
            })?
            .trim_end();
        if is_header(line) {
            return match Layout::from_header(line) {
                Ok(layout) => {
                    self.layout = Ok(layout);
                    Ok(0)
                }
                Err(detail) => {
                    self.layout = Err(detail.clone());
                    Err(Reject::new(RejectReason::Malformed, detail))
                }
            };
        }
        let layout = match &self.layout {
            Ok(layout) => layout,
            Err(detail) => {
                return Err(Reject::new(
                    RejectReason::Malformed,
                    format!("no usable header for this line: {detail}"),
                ));
            }
        };
        let [trace_id, span, parent, pod, start, duration] = layout.fields(line, &mut self.cuts)?;
        for (name, v) in [("TraceID", trace_id), ("SpanID", span), ("PodName", pod)] {
            if v.is_empty() {
                return Err(Reject::new(
                    RejectReason::Malformed,
                    format!("empty {name}"),
                ));
            }
        }
        crate::check_name("PodName", pod)?;
        for (name, v) in [
            ("TraceID", trace_id),
            ("SpanID", span),
            ("ParentID", parent),
        ] {
            check_id(name, v)?;
        }
        let start_ns = number("StartTimeUnixNano", start)?;
        let duration_us = number("Duration", duration)?;
        let start_us = i64::try_from(start_ns / 1000).unwrap_or(i64::MAX);

        let pod = self.pod(pod);
        let child = Child {
            pod,
            start_us,
            duration_us,
        };
        let span_key = SpanKey::new(span);
        let (id, new) = match self.traces.get_key_value(trace_id) {
            Some((k, _)) => (k.clone(), false),
            None => {
                let id: Arc<str> = trace_id.into();
                self.order.push_back(id.clone());
                (id, true)
            }
        };
        let trace = self.traces.entry(id.clone()).or_default();
        if new {
            trace.id_bytes += id.len();
            self.id_bytes += id.len();
        }
        if trace.spans.contains_key(&span_key) {
            self.duplicates += 1;
            return Ok(0);
        }
        let mut n = 0;
        if !(parent.is_empty() || parent == "root") {
            let parent_key = SpanKey::new(parent);
            match trace.spans.get(&parent_key) {
                Some(&p) => n += emit(&self.pods, p, child, &id, out),
                None => {
                    let bytes = parent_key.text_len();
                    trace.waiting.entry(parent_key).or_default().push(child);
                    trace.waiting_len += 1;
                    trace.id_bytes += bytes;
                    self.id_bytes += bytes;
                    self.held += 1;
                }
            }
        }
        if let Some(children) = trace.waiting.remove(&span_key) {
            let bytes = children.len() * span_key.text_len();
            trace.waiting_len -= children.len();
            trace.id_bytes -= bytes;
            self.id_bytes -= bytes;
            self.held -= children.len();
            for c in children {
                n += emit(&self.pods, pod, c, &id, out);
            }
        }
        let bytes = span_key.text_len();
        trace.spans.insert(span_key, pod);
        trace.id_bytes += bytes;
        self.id_bytes += bytes;
        self.held += 1;
        self.evict();
        Ok(n)
    }

    fn finish(&mut self, _out: &mut FlowBatchBuilder) -> usize {
        for (_, t) in self.traces.drain() {
            self.without_parent += t.waiting_len as u64;
        }
        self.order.clear();
        self.held = 0;
        self.id_bytes = 0;
        0
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            (counters::WITHOUT_PARENT, self.without_parent),
            (counters::EVICTED_SPANS, self.evicted_spans),
            (counters::EVICTED_TRACES, self.evicted_traces),
            (counters::DUPLICATE_SPANS, self.duplicates),
        ]
    }
}
