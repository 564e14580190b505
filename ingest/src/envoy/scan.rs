//! One-pass scanning of Envoy-style text access-log lines, shared by the Envoy default format
//! and Istio's default sidecar format (which is Envoy's with fields inserted).
//!
//! Every helper borrows from the line and allocates only to build a [`Reject`]'s detail.

use memchr::memrchr;

use crate::error::{Reject, RejectReason};
use crate::mapping::{Endpoint, Mapping, MatchField, Side, UNKNOWN_SERVICE, strip_port};
use crate::swar::find_byte;
use crate::time::parse_rfc3339_us;

/// At most this many bytes of a bad value are quoted in a reject's detail.
const SHOW_MAX: usize = 64;

/// A value quoted for a reject's detail: lossy UTF-8, cut at [`SHOW_MAX`] bytes.
pub(crate) fn show(v: &[u8]) -> String {
    let cut = &v[..v.len().min(SHOW_MAX)];
    let s = String::from_utf8_lossy(cut);
    if v.len() > SHOW_MAX {
        format!("{s:?}… ({} bytes)", v.len())
    } else {
        format!("{s:?}")
    }
}

fn malformed(detail: String) -> Reject {
    Reject::new(RejectReason::Malformed, detail)
}

/// A position in a line, read field by field; fields are separated by one or more spaces.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    line: &'a [u8],
    pos: usize,
    /// The whole line as text, when it is UTF-8 (most are: validated once, not field by
    /// field).
    text: Option<&'a str>,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(line: &'a [u8]) -> Self {
        Cursor {
            line,
            pos: 0,
            text: simdutf8::basic::from_utf8(line).ok(),
        }
    }

    /// `v`, a field of this line, as UTF-8 text ([`text`], without validating again a line
    /// already known to be text), `-` and empty meaning absent.
    pub(crate) fn opt_text(&self, field: &str, v: &'a [u8]) -> Result<Option<&'a str>, Reject> {
        if v.is_empty() || v == b"-" {
            return Ok(None);
        }
        if let Some(text) = self.text {
            // where `v` lies in the line; the pointer check below makes sure it is the line's
            let at = (v.as_ptr() as usize).wrapping_sub(self.line.as_ptr() as usize);
            if let Some(s) = at
                .checked_add(v.len())
                .and_then(|end| text.get(at..end))
                .filter(|s| std::ptr::eq(s.as_ptr(), v.as_ptr()))
            {
                return Ok(Some(s));
            }
        }
        text(field, v).map(Some)
    }

    fn skip_spaces(&mut self) {
        while self.line.get(self.pos) == Some(&b' ') {
            self.pos += 1;
        }
    }

    fn expected(&self, what: &str, field: &str) -> Reject {
        let rest = &self.line[self.pos..];
        if rest.is_empty() {
            malformed(format!(
                "line ends at byte {} where {field} was expected",
                self.pos
            ))
        } else {
            malformed(format!(
                "expected {what} for {field} at byte {}, found {}",
                self.pos,
                show(&rest[..rest.len().min(16)])
            ))
        }
    }

    /// `[value]`, e.g. Envoy's `[%START_TIME%]`.
    pub(crate) fn bracketed(&mut self, field: &str) -> Result<&'a [u8], Reject> {
        self.skip_spaces();
        let rest = &self.line[self.pos..];
        if rest.first() != Some(&b'[') {
            return Err(self.expected("`[`", field));
        }
        let Some(end) = find_byte(b']', &rest[1..]) else {
            return Err(malformed(format!("unterminated `[` of {field}")));
        };
        self.pos += end + 2;
        Ok(&rest[1..1 + end])
    }

    /// `"value"` followed by an unquoted field: the closing quote is the first `"` followed by
    /// a space or the end of the line. Used for the request line and Istio's transport failure
    /// reason; the quoted fields that clients write are read from the right instead (see
    /// [`body`]).
    pub(crate) fn quoted(&mut self, field: &str) -> Result<&'a [u8], Reject> {
        self.skip_spaces();
        if self.line.get(self.pos) != Some(&b'"') {
            return Err(self.expected("`\"`", field));
        }
        let start = self.pos + 1;
        let mut from = start;
        while let Some(i) = find_byte(b'"', &self.line[from..]) {
            let end = from + i;
            if matches!(self.line.get(end + 1), None | Some(b' ')) {
                self.pos = end + 1;
                return Ok(&self.line[start..end]);
            }
            from = end + 1;
        }
        Err(malformed(format!(
            "unterminated quoted {field} starting at byte {}",
            start - 1
        )))
    }

    /// A run of non-space bytes.
    pub(crate) fn token(&mut self, field: &str) -> Result<&'a [u8], Reject> {
        self.opt_token()
            .ok_or_else(|| self.expected("a value", field))
    }

    /// A run of non-space bytes, or `None` at the end of the line.
    pub(crate) fn opt_token(&mut self) -> Option<&'a [u8]> {
        self.skip_spaces();
        let rest = &self.line[self.pos..];
        if rest.is_empty() {
            return None;
        }
        let n = find_byte(b' ', rest).unwrap_or(rest.len());
        self.pos += n;
        Some(&rest[..n])
    }
}

/// Strips ASCII whitespace at both ends.
pub(crate) fn trim(mut line: &[u8]) -> &[u8] {
    while let [b, rest @ ..] = line {
        if !b.is_ascii_whitespace() {
            break;
        }
        line = rest;
    }
    while let [rest @ .., b] = line {
        if !b.is_ascii_whitespace() {
            break;
        }
        line = rest;
    }
    line
}

/// A decimal number that fits a `u64`.
pub(crate) fn number(field: &str, v: &[u8]) -> Result<u64, Reject> {
    let bad = || {
        Reject::new(
            RejectReason::BadNumber,
            format!("invalid {field} {}", show(v)),
        )
    };
    if v.is_empty() || v.len() > 20 {
        return Err(bad());
    }
    let mut n = 0u64;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(bad());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(n)
}

/// A decimal number, `-` meaning absent.
pub(crate) fn opt_number(field: &str, v: &[u8]) -> Result<Option<u64>, Reject> {
    if v == b"-" {
        Ok(None)
    } else {
        number(field, v).map(Some)
    }
}

/// `%RESPONSE_CODE%`: `0` (Envoy: no response was sent, e.g. the downstream disconnected, or
/// a TCP connection) and `-` are `None`; otherwise 1..=999.
pub(crate) fn status(v: &[u8]) -> Result<Option<u16>, Reject> {
    match opt_number("response_code", v)? {
        None | Some(0) => Ok(None),
        Some(n @ 1..=999) => Ok(Some(n as u16)),
        Some(_) => Err(Reject::new(
            RejectReason::BadNumber,
            format!("response_code {} out of range 0..=999", show(v)),
        )),
    }
}

/// `%DURATION%` in ms (`-` absent) → µs.
pub(crate) fn duration_us(v: &[u8]) -> Result<Option<u64>, Reject> {
    match opt_number("duration", v)? {
        None => Ok(None),
        Some(ms) => ms.checked_mul(1000).map(Some).ok_or_else(|| {
            Reject::new(
                RejectReason::BadNumber,
                format!("duration {} ms overflows µs", show(v)),
            )
        }),
    }
}

/// The field as UTF-8 text.
pub(crate) fn text<'a>(field: &str, v: &'a [u8]) -> Result<&'a str, Reject> {
    std::str::from_utf8(v).map_err(|e| {
        Reject::new(
            RejectReason::InvalidUtf8,
            format!(
                "invalid utf-8 in {field} at byte {} of {}",
                e.valid_up_to(),
                show(v)
            ),
        )
    })
}

/// `%START_TIME%` in Envoy's default layout (`2019-02-12T18:37:42.921Z`) → µs since the epoch.
pub(crate) fn start_time(v: &[u8]) -> Result<i64, Reject> {
    parse_rfc3339_us(v).ok_or_else(|| {
        Reject::new(
            RejectReason::BadTimestamp,
            format!("invalid start_time {}", show(v)),
        )
    })
}

/// Method and protocol of `"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestLine<'a> {
    pub(crate) method: Option<&'a str>,
    /// `tcp` for `"- - -"` (a TCP proxy connection), `None` for `-`.
    pub(crate) protocol: Option<&'a str>,
}

/// Splits the quoted request field: method = first word, protocol = last word, the path in
/// between is not kept. `"- - -"` is a TCP connection (Envoy writes `-` for all three).
pub(crate) fn request_line<'a>(cur: &Cursor<'a>, v: &'a [u8]) -> Result<RequestLine<'a>, Reject> {
    let shape = || {
        malformed(format!(
            "request {} is not \"method path protocol\"",
            show(v)
        ))
    };
    let first = find_byte(b' ', v).ok_or_else(shape)?;
    let last = memrchr(b' ', v).ok_or_else(shape)?;
    if last == first {
        return Err(shape());
    }
    let method = &v[..first];
    let protocol = &v[last + 1..];
    if method == b"-" && protocol == b"-" && &v[first + 1..last] == b"-" {
        return Ok(RequestLine {
            method: None,
            protocol: Some("tcp"),
        });
    }
    Ok(RequestLine {
        method: cur.opt_text("method", method)?,
        protocol: cur.opt_text("protocol", protocol)?,
    })
}

/// The fields that open both Envoy's and Istio's default formats:
/// `[%START_TIME%] "%REQ(:METHOD)% … %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    /// µs since the epoch, UTC.
    pub(crate) start_us: i64,
    pub(crate) request: RequestLine<'a>,
    pub(crate) status: Option<u16>,
    pub(crate) response_flags: Option<&'a str>,
}

/// Reads a [`Head`].
pub(crate) fn head<'a>(cur: &mut Cursor<'a>) -> Result<Head<'a>, Reject> {
    let start_us = start_time(cur.bracketed("start_time")?)?;
    let request = cur.quoted("request")?;
    let request = request_line(cur, request)?;
    let status = status(cur.token("response_code")?)?;
    let response_flags = cur.token("response_flags")?;
    let response_flags = cur.opt_text("response_flags", response_flags)?;
    Ok(Head {
        start_us,
        request,
        status,
        response_flags,
    })
}

/// The fields both formats share after the head:
/// `%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
/// "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
/// "%UPSTREAM_HOST%"`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Body<'a> {
    /// Bytes; `-` is read as 0.
    pub(crate) bytes_received: u64,
    /// Bytes; `-` is read as 0.
    pub(crate) bytes_sent: u64,
    /// µs.
    pub(crate) duration_us: Option<u64>,
    /// `None` too when not UTF-8 (dropped, the record kept: see `request_id_dropped`).
    pub(crate) request_id: Option<&'a str>,
    /// The request id was dropped for not being UTF-8 ([`crate::error::request_id`]).
    pub(crate) request_id_dropped: bool,
    pub(crate) authority: Option<&'a str>,
    pub(crate) upstream_host: Option<&'a str>,
}

/// The `"` closing the quoted field that ends right before `open` (the opening quote of the
/// next field), with one or more spaces between; `None` when there is none at or after `from`.
fn close_before(line: &[u8], open: usize, from: usize) -> Option<usize> {
    let mut j = open;
    while j > from && line[j - 1] == b' ' {
        j -= 1;
    }
    (j < open && j > from && line[j - 1] == b'"').then(|| j - 1)
}

/// The opening `"` of the quoted field whose closing `"` is at `close`: the rightmost `"`
/// before it that follows another field's closing quote and spaces (`" "`), so the value
/// itself may hold quotes. `None` when there is none at or after `from`.
fn open_of(line: &[u8], close: usize, from: usize) -> Option<usize> {
    let mut end = close;
    while end > from {
        let i = from + memrchr(b'"', &line[from..end])?;
        if close_before(line, i, from).is_some() {
            return Some(i);
        }
        end = i;
    }
    None
}

/// `"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"`, read from the right: the
/// upstream host is closed by the line's last `"`.
#[derive(Debug, Clone, Copy)]
struct Tail<'a> {
    request_id: &'a [u8],
    authority: &'a [u8],
    upstream_host: &'a [u8],
    /// Just past the `"` closing the user agent: the client-written fields end there.
    client_end: usize,
    /// Just past the `"` closing the upstream host: unquoted fields may follow.
    end: usize,
}

/// Reads the [`Tail`] of `line`, not looking left of `from`.
///
/// Envoy writes header values between quotes without escaping quotes inside them, so a client
/// can send a User-Agent (or X-Forwarded-For) such as `x" "spoofed-id" "payments" "10.9.9.9:80`.
/// Read left to right, that line would name a destination and request id of the client's
/// choosing; read from the right, the last three quoted fields are the ones Envoy wrote after
/// the client's text, whatever it holds.
fn tail(line: &[u8], from: usize) -> Result<Tail<'_>, Reject> {
    let missing = |field: &str, next: &str, at: usize| {
        malformed(format!("missing quoted {field} before {next} at byte {at}"))
    };
    let up_close = memrchr(b'"', line)
        .filter(|&i| i >= from)
        .ok_or_else(|| malformed("missing quoted upstream_host at the end of the line".into()))?;
    let opened = |field: &str, close: usize| {
        open_of(line, close, from).ok_or_else(|| {
            malformed(format!(
                "unterminated quoted {field} ending at byte {close}"
            ))
        })
    };
    let up_open = opened("upstream_host", up_close)?;
    let upstream_host = &line[up_open + 1..up_close];
    // Envoy writes an address or `-` here. A space or quote means the line's last `"` is not
    // the upstream host's: an unquoted field after it (Istio's client-sent server name) holds
    // quotes. Reject rather than read fields out of the client's text.
    if memchr::memchr2(b' ', b'"', upstream_host).is_some() {
        return Err(malformed(format!(
            "upstream_host {} is not an address: a field after it holds a quote",
            show(upstream_host)
        )));
    }
    let auth_close = close_before(line, up_open, from)
        .ok_or_else(|| missing("authority", "upstream_host", up_open))?;
    let auth_open = opened("authority", auth_close)?;
    let id_close = close_before(line, auth_open, from)
        .ok_or_else(|| missing("request_id", "authority", auth_open))?;
    let id_open = opened("request_id", id_close)?;
    let ua_close = close_before(line, id_open, from)
        .ok_or_else(|| missing("user_agent", "request_id", id_open))?;
    Ok(Tail {
        request_id: &line[id_open + 1..id_close],
        authority: &line[auth_open + 1..auth_close],
        upstream_host,
        client_end: ua_close + 1,
        end: up_close + 1,
    })
}

/// Reads a [`Body`] and leaves `cur` after `"%UPSTREAM_HOST%"`, where only unquoted fields
/// may follow (see [`tail`] for why the quoted fields are read from the right).
/// Forwarded-for and user agent are whatever lies between the upstream service time and
/// `"%REQ(X-REQUEST-ID)%"`: not kept, only checked to be two quoted fields. The upstream
/// service time is checked to be a number or `-`.
pub(crate) fn body<'a>(cur: &mut Cursor<'a>) -> Result<Body<'a>, Reject> {
    let line = cur.line;
    let tail = tail(line, cur.pos)?;
    let mut mid = Cursor {
        line: &line[..tail.client_end],
        pos: cur.pos,
        text: None,
    };
    let bytes_received = opt_number("bytes_received", mid.token("bytes_received")?)?.unwrap_or(0);
    let bytes_sent = opt_number("bytes_sent", mid.token("bytes_sent")?)?.unwrap_or(0);
    let duration_us = duration_us(mid.token("duration")?)?;
    opt_number("upstream_service_time", mid.token("upstream_service_time")?)?;
    mid.skip_spaces();
    if mid.line.get(mid.pos) != Some(&b'"') {
        return Err(mid.expected("`\"`", "x_forwarded_for"));
    }
    // The user agent's opening quote, after the forwarded-for's closing one.
    if open_of(line, tail.client_end - 1, mid.pos + 1).is_none() {
        return Err(malformed(
            "missing a quoted field: expected \"x_forwarded_for\" \"user_agent\" \
             \"request_id\" \"authority\" \"upstream_host\" after upstream_service_time"
                .into(),
        ));
    }
    cur.pos = tail.end;
    // as `crate::error::request_id`: an id that is not text is dropped (and counted)
    let (request_id, request_id_dropped) = match cur.opt_text("request_id", tail.request_id) {
        Ok(id) => (id, false),
        Err(_) => (None, true),
    };
    Ok(Body {
        bytes_received,
        bytes_sent,
        duration_us,
        request_id,
        request_id_dropped,
        authority: cur.opt_text("authority", tail.authority)?,
        upstream_host: cur.opt_text("upstream_host", tail.upstream_host)?,
    })
}

/// Up to three `(field, value)` pairs for [`Mapping::resolve`], on the stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatchFields<'a> {
    fields: [(MatchField, &'a str); 3],
    len: usize,
}

impl<'a> MatchFields<'a> {
    pub(crate) fn new() -> Self {
        MatchFields {
            fields: [(MatchField::Authority, ""); 3],
            len: 0,
        }
    }

    /// Adds `field` when `value` is present (silently ignores a fourth field).
    pub(crate) fn with(mut self, field: MatchField, value: Option<&'a str>) -> Self {
        if let Some(v) = value
            && self.len < self.fields.len()
        {
            self.fields[self.len] = (field, v);
            self.len += 1;
        }
        self
    }

    /// The first matching rule for `side`; `None` without rules or fields.
    pub(crate) fn resolve(&self, mapping: &'a Mapping, side: Side) -> Option<Endpoint<'a>> {
        if !mapping.has_rules() || self.len == 0 {
            return None;
        }
        mapping.resolve(side, &self.fields[..self.len])
    }
}

/// An endpoint that only has a name (no zone or version known).
pub(crate) fn named(service: &str) -> Endpoint<'_> {
    Endpoint {
        service,
        zone: None,
        version: None,
    }
}

/// Whether a request reached no service, so that its destination is [`schemas::UNROUTED`]
/// rather than anything the line names: its flags say Envoy found no route (`NR`) or no
/// cluster (`NC`), its cluster is Istio's `BlackHoleCluster` (a host outside the mesh
/// registry, refused), or it names neither an upstream host nor an upstream cluster (Envoy
/// answered it itself: a local reply, a direct response, a client gone before any upstream was
/// chosen). The `Host`/`:authority` such a request carries is whatever the client sent.
pub(crate) fn unrouted(
    response_flags: Option<&str>,
    upstream_host: Option<&str>,
    upstream_cluster: Option<&str>,
) -> bool {
    response_flags.is_some_and(|f| f.split(',').any(|f| matches!(f.trim(), "NR" | "NC")))
        || upstream_cluster == Some("BlackHoleCluster")
        || (upstream_host.is_none() && upstream_cluster.is_none())
}

/// The sink of requests that reached no service (see [`unrouted`]).
pub(crate) fn unrouted_sink() -> Endpoint<'static> {
    named(schemas::UNROUTED)
}

/// The host part of an Istio cluster name `direction|port|subset|host`, when not empty.
pub(crate) fn cluster_host(cluster: &str) -> Option<&str> {
    let b = cluster.as_bytes();
    let mut at = 0;
    for _ in 0..3 {
        at += find_byte(b'|', &b[at..])? + 1;
    }
    // after an ASCII `|`: a char boundary
    cluster.get(at..).filter(|h| !h.is_empty())
}

/// A Kubernetes service host (`<svc>.<namespace>.svc…`) → `<svc>`; any other host unchanged;
/// `None` when that leaves no name (`.default.svc.cluster.local`, an empty host).
pub(crate) fn service_of_host(host: &str) -> Option<&str> {
    let service = if host.contains(".svc.") || host.ends_with(".svc") {
        host.split('.').next().unwrap_or(host)
    } else {
        host
    };
    (!service.is_empty()).then_some(service)
}

/// The service an upstream cluster names: Istio's `outbound|9080||reviews.default.svc.cluster.local`
/// → `reviews` (a Kubernetes host's first label; any other host, e.g. a ServiceEntry's
/// `api.example.com`, whole); a cluster name without `|` as it is (`payments`, the name the
/// Envoy config gave it). `None` for Istio's pseudo-clusters (`PassthroughCluster`,
/// `InboundPassthroughCluster…`, `BlackHoleCluster`: they name no service) and an Istio name
/// with an empty host (`inbound|9080||`).
pub(crate) fn cluster_service(cluster: &str) -> Option<&str> {
    if cluster.contains('|') {
        return cluster_host(cluster).and_then(service_of_host);
    }
    if cluster.is_empty()
        || cluster == "PassthroughCluster"
        || cluster == "BlackHoleCluster"
        || cluster.starts_with("InboundPassthroughCluster")
    {
        return None;
    }
    Some(cluster)
}

/// The first present value, less any `:port`, as a bare endpoint; `unknown` when none is.
pub(crate) fn first_host<'a>(candidates: &[Option<&'a str>]) -> Endpoint<'a> {
    candidates
        .iter()
        .flatten()
        .map(|v| strip_port(v))
        .find(|v| !v.is_empty())
        .map_or(named(UNKNOWN_SERVICE), named)
}

/// Appends the record of one Envoy-style line (Envoy text, Istio): the fields both formats
/// share, between the endpoints the parser resolved.
///
/// # Errors
/// A name holding a control character ([`crate::check_names`]).
pub(crate) fn append_record(
    out: &mut schemas::FlowBatchBuilder,
    head: &Head<'_>,
    body: &Body<'_>,
    source: crate::mapping::Endpoint<'_>,
    destination: crate::mapping::Endpoint<'_>,
    reporter: schemas::Reporter,
) -> Result<(), crate::Reject> {
    let r = schemas::FlowRecordRef {
        start_us: head.start_us,
        duration_us: body.duration_us,
        protocol: head.request.protocol,
        method: head.request.method,
        status: head.status,
        response_flags: head.response_flags,
        bytes_received: body.bytes_received,
        bytes_sent: body.bytes_sent,
        upstream_host: body.upstream_host,
        upstream_attempts: &[],
        request_id: body.request_id,
        reporter,
        ..crate::mapping::between(source, destination)
    };
    crate::check_names(&r)?;
    out.append(&r);
    Ok(())
}
