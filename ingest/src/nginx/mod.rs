//! NGINX access logs: `combined`, ingress-nginx `upstreaminfo`, and any `log_format`.
//!
//! [`NginxParser::new`] compiles a `log_format` string (NGINX docs: ngx_http_log_module,
//! `log_format`; variables from ngx_http_core_module and ngx_http_upstream_module) into
//! literals and variables, then splits each line in one pass without allocating: each
//! variable's value runs up to the next occurrence of the literal that follows it in the
//! format. Data after the format's end is accepted (people append fields); the format's last
//! variable ends at the next space.
//!
//! # The format string
//!
//! Give it verbatim (`$remote_addr - [$time_local] "$request" $status`), or as written in
//! `nginx.conf`, single-quoted pieces separated by whitespace (`'$remote_addr - ' '"$request"'`),
//! whose contents are joined. Either way the escapes nginx undoes in configuration tokens
//! (`ngx_conf_read_token`, `src/core/ngx_conf_file.c`) are undone: `\"` → `"`, `\'` → `'`,
//! `\\` → `\`, `\t` → tab, `\n`, `\r`; any other backslash is kept. So a tab-separated
//! format reads `'$time_local\t$remote_addr\t$status\t$request_time'`. Double-quoted pieces
//! are not supported (a verbatim format's `"` are literal text).
//!
//! It must contain a time variable. It fails to compile ([`crate::Error::LogFormat`]) when
//! two variables have no literal between them (the line could not be split), on an
//! unterminated `${`, on a `$` without a name, and on an unbalanced `'` (a quoted piece never
//! closed, text between pieces, or an odd number of unescaped `'` in a verbatim format).
//!
//! Free-text variables (`$request`, `$http_user_agent`, …) must be followed by a literal that
//! cannot occur inside them; NGINX's own formats quote them (`"$request"`), and NGINX escapes
//! `"` inside values as `\x22`. Upstream list variables may contain `, ` and ` : `, and
//! `$time_local` one space: those spaces are skipped when the following literal is a space.
//!
//! # Fields
//!
//! | flow record | variables |
//! |---|---|
//! | `start_us` | `$time_local`, `$time_iso8601` or `$msec`, **minus `$request_time`** when logged |
//! | `duration_us` | `$request_time` (s, ms resolution → µs); `None` without it (`combined`) |
//! | `method`, `protocol` | `$request` (`GET /path HTTP/1.1`; the path is ignored), or `$request_method` / `$server_protocol` |
//! | `status` | `$status` (`0`/`-` → `None`) |
//! | `bytes_sent` | `$body_bytes_sent` (the response body, as the flow record defines it), else `$bytes_sent` (body + headers); `-` → 0 |
//! | `bytes_received` | `$request_length` (request line + headers + body: NGINX logs no body-only count) |
//! | `request_id` | `$request_id` or `$req_id` (not UTF-8 → none, the record kept and counted) |
//! | `upstream_attempts` | `$upstream_addr`, `$upstream_status`, `$upstream_response_time`, aligned by position |
//! | `upstream_host` | the last attempt's address |
//!
//! NGINX writes the log line when the request *ends*, and its time variables are the end
//! time; the flow record wants the start, so `start_us = logged time − $request_time` when the
//! format has `$request_time`. Without it (`combined`) the logged time is used as the start.
//!
//! An empty request (`""`, a client that closed before sending one) has no method or protocol.
//! A method that is not a valid HTTP token of at most 20 bytes (e.g. TLS handshake bytes sent
//! to a plain-HTTP port) is `None`; an odd but valid one (`PATCHp`, `geti`) is kept, because
//! the server did log and answer that request. Unknown variables are matched and ignored.
//!
//! # Upstream attempts
//!
//! Following `schemas::UpstreamAttempt`: one attempt per entry of the upstream lists, entries
//! separated by `, `, the group index incremented at each ` : `; a `-` entry is `None`. The
//! address, status and response-time lists are aligned by position (`A, B` with `200, -`
//! gives B no status). A list that is a lone `-` means no upstream was contacted: no attempts.
//! Addresses are kept as logged (`unix:/…`, `[v6]:port`, or even a malformed one).
//!
//! # Services
//!
//! The line *has an upstream* when it names one: a non-empty `$proxy_upstream_name` or an
//! `$upstream_addr` entry. The *proxy itself* is `mapping.service`, or else the reporter's
//! name (`nginx`, `nginx-ingress`).
//!
//! - **source**: a `side = "source"` rule on `downstream-address` (the last address in
//!   `$remote_addr`, which some formats prefix with a forwarded-for list); else the proxy
//!   itself when there is an upstream (NGINX made that call); else [`UNKNOWN_SERVICE`]
//!   (a client).
//! - **destination**: a `destination` rule on `upstream-name`, `upstream-host` or `authority`
//!   (`$host`, `$http_host`, `$server_name`), the first in the order written whatever its
//!   field; else `$proxy_upstream_name`; else the last upstream address less its port,
//!   when that leaves a host (not for `:8080`); else the proxy itself (it served the request).
//!
//! So, without rules, the service that answered names the destination, never the `Host` a
//! client sent: the upstream NGINX passed the request to (ingress-nginx's
//! `$proxy_upstream_name`, e.g. `upstream-default-backend` for a host no Ingress serves),
//! else the proxy itself — the counterpart of Envoy's [`schemas::UNROUTED`] sink, a real node
//! here because NGINX serves content itself. NGINX logs no flag, and no failure a client can
//! cause on its own is a 5xx (a client closing early is `499`, not an error). Residual risk:
//! an `authority` rule names the destination from the client's `Host`, also for requests NGINX
//! answered itself; put `upstream-name`/`upstream-host` rules first.

mod log_format;
#[cfg(test)]
mod tests;

use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter, UpstreamAttemptRef};

use crate::error::{Reject, RejectReason, Result};
use crate::mapping::{Endpoint, Mapping, MatchField, Side, UNKNOWN_SERVICE, between, strip_port};
use crate::source::LineParser;
use crate::time::{parse_clf_us, parse_rfc3339_us, parse_seconds_us};
use log_format::{ListEntries, LogFormat, VAR_SLOTS, Values, Var};

/// NGINX's predefined `combined` format (NGINX docs: ngx_http_log_module, `log_format`).
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// The ingress-nginx controller's default `upstreaminfo` format (ingress-nginx docs:
/// user-guide/nginx-configuration/log-format).
pub const UPSTREAMINFO: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id"#;

/// Attempts kept on the stack; longer upstream lists (rare) allocate.
const INLINE_ATTEMPTS: usize = 8;

/// Longest method accepted as such, bytes.
const MAX_METHOD_LEN: usize = 20;

/// A parser compiled from an NGINX `log_format`; see the module docs for the field and
/// service rules.
#[derive(Debug)]
pub struct NginxParser {
    format: LogFormat,
    mapping: Mapping,
    reporter: Reporter,
    /// Request ids dropped for not being UTF-8.
    dropped_ids: u64,
}

/// Checks that `log_format` compiles, as [`NginxParser::new`] will.
///
/// # Errors
/// As [`NginxParser::new`].
pub(crate) fn check_log_format(log_format: &str) -> Result<()> {
    LogFormat::compile(log_format).map(drop)
}

impl NginxParser {
    /// Compiles `log_format` (verbatim, or as `'…' '…'` pieces); records are tagged with
    /// `reporter` and named with `mapping`.
    ///
    /// # Errors
    /// [`crate::Error::LogFormat`] when the format cannot be compiled: no time variable, two
    /// variables with no literal between them, an unterminated `${`, a `$` without a name.
    pub fn new(log_format: &str, reporter: Reporter, mapping: Mapping) -> Result<Self> {
        let format = LogFormat::compile(log_format)?;
        Ok(NginxParser {
            format,
            mapping,
            reporter,
            dropped_ids: 0,
        })
    }

    /// True when the compiled format has `$request_time` (so start = logged time − it).
    pub fn has_request_time(&self) -> bool {
        self.format.has(Var::RequestTime)
    }
}

/// A value for a reject detail: lossy UTF-8, at most 80 characters.
fn show(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{:?}…", &s[..i]),
        None => format!("{s:?}"),
    }
}

fn bad_number(what: &str, v: &[u8]) -> Reject {
    Reject::new(
        RejectReason::BadNumber,
        format!("invalid {what} {}", show(v)),
    )
}

fn text<'a>(what: &str, v: &'a [u8]) -> Result<&'a str, Reject> {
    std::str::from_utf8(v).map_err(|_| {
        Reject::new(
            RejectReason::InvalidUtf8,
            format!("invalid UTF-8 in {what}: {}", show(v)),
        )
    })
}

/// `None` for `-` and empty values.
fn present(v: Option<&[u8]>) -> Option<&[u8]> {
    v.filter(|v| !v.is_empty() && *v != b"-")
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, b| n * 10 + u64::from(b - b'0')))
}

/// An HTTP status: 1–3 digits; `0` means none was sent.
fn parse_status(what: &str, v: &[u8]) -> Result<Option<u16>, Reject> {
    if v == b"-" {
        return Ok(None);
    }
    match parse_u64(v) {
        Some(n) if v.len() <= 3 => Ok((n != 0).then_some(n as u16)),
        _ => Err(bad_number(what, v)),
    }
}

/// Bytes: digits, `-` meaning 0 (Apache/NGINX write `-` for an empty body).
fn parse_bytes(what: &str, v: &[u8]) -> Result<u64, Reject> {
    if v == b"-" {
        return Ok(0);
    }
    parse_u64(v).ok_or_else(|| bad_number(what, v))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The methods and protocols nearly every line names, as text without validating them.
const COMMON_METHODS: [&str; 7] = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"];
const COMMON_PROTOCOLS: [&str; 4] = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/2"];

fn known<'a>(v: &[u8], common: &[&'a str]) -> Option<&'a str> {
    common.iter().copied().find(|c| c.as_bytes() == v)
}

fn as_method(v: &[u8]) -> Option<&str> {
    if let Some(m) = known(v, &COMMON_METHODS) {
        return Some(m);
    }
    if v.is_empty() || v.len() > MAX_METHOD_LEN || !v.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    std::str::from_utf8(v).ok()
}

fn as_protocol(v: &[u8]) -> Option<&str> {
    if let Some(p) = known(v, &COMMON_PROTOCOLS) {
        return Some(p);
    }
    if !v.starts_with(b"HTTP/") || v.len() > 16 || !v.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    std::str::from_utf8(v).ok()
}

/// `$request` → (method, protocol); the path in between is ignored.
fn split_request(r: &[u8]) -> (Option<&str>, Option<&str>) {
    let Some(first) = crate::swar::find_byte(b' ', r) else {
        return (None, None);
    };
    let method = as_method(&r[..first]);
    let last = memchr::memrchr(b' ', r).unwrap_or(first);
    let protocol = if last > first {
        as_protocol(&r[last + 1..])
    } else {
        None
    };
    (method, protocol)
}

/// The last address of `$remote_addr` as some formats write it (`a, b, c` or `"a, b" c`).
fn peer_address(v: &[u8]) -> &[u8] {
    v.rsplit(|&b| b == b' ' || b == b',' || b == b'"')
        .find(|p| !p.is_empty())
        .unwrap_or(v)
}

fn endpoint(service: &str) -> Endpoint<'_> {
    Endpoint {
        service,
        zone: None,
        version: None,
    }
}

/// Fills `attempts` (already sized to the longest list) from the upstream lists.
fn fill_attempts<'a>(
    attempts: &mut [UpstreamAttemptRef<'a>],
    addr: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    time: Option<&'a [u8]>,
) -> Result<(), Reject> {
    // Groups are set by each list in turn; the address list (set last) wins.
    if let Some(l) = time {
        for ((g, e), a) in ListEntries::new(l).zip(attempts.iter_mut()) {
            a.group = g;
            if e != b"-" {
                let t = parse_seconds_us(e)
                    .ok_or_else(|| bad_number("$upstream_response_time entry", e))?;
                a.response_time_us = Some(t);
            }
        }
    }
    if let Some(l) = status {
        for ((g, e), a) in ListEntries::new(l).zip(attempts.iter_mut()) {
            a.group = g;
            a.status = parse_status("$upstream_status entry", e)?;
        }
    }
    if let Some(l) = addr {
        for ((g, e), a) in ListEntries::new(l).zip(attempts.iter_mut()) {
            a.group = g;
            if e != b"-" && !e.is_empty() {
                a.address = Some(text("$upstream_addr", e)?);
            }
        }
    }
    Ok(())
}

impl LineParser for NginxParser {
    fn mapping_mut(&mut self) -> Option<&mut Mapping> {
        Some(&mut self.mapping)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        crate::error::dropped_ids_counter(self.dropped_ids)
    }

    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        let mut v: Values<'_> = [None; VAR_SLOTS];
        self.format.split(line, &mut v)?;
        let get = |var: Var| v[var as usize];

        let bad_time = |what: &str, t: &[u8]| {
            Reject::new(
                RejectReason::BadTimestamp,
                format!("invalid {what} {}", show(t)),
            )
        };
        let logged_us = if let Some(t) = get(Var::TimeLocal) {
            parse_clf_us(t).ok_or_else(|| bad_time("$time_local", t))?
        } else if let Some(t) = get(Var::TimeIso8601) {
            parse_rfc3339_us(t).ok_or_else(|| bad_time("$time_iso8601", t))?
        } else {
            let t = get(Var::Msec).unwrap_or_default();
            parse_seconds_us(t)
                .and_then(|us| i64::try_from(us).ok())
                .ok_or_else(|| bad_time("$msec", t))?
        };
        let duration_us = match present(get(Var::RequestTime)) {
            Some(t) => Some(parse_seconds_us(t).ok_or_else(|| bad_number("$request_time", t))?),
            None => None,
        };
        let start_us =
            logged_us.saturating_sub(duration_us.map_or(0, |d| i64::try_from(d).unwrap_or(0)));

        let status = match get(Var::Status) {
            Some(s) => parse_status("$status", s)?,
            None => None,
        };
        let (mut method, mut protocol) = get(Var::Request).map_or((None, None), split_request);
        if let Some(m) = get(Var::RequestMethod) {
            method = as_method(m);
        }
        if let Some(p) = get(Var::ServerProtocol) {
            protocol = as_protocol(p);
        }
        let bytes_sent = match (get(Var::BodyBytesSent), get(Var::BytesSent)) {
            (Some(b), _) => parse_bytes("$body_bytes_sent", b)?,
            (None, Some(b)) => parse_bytes("$bytes_sent", b)?,
            (None, None) => 0,
        };
        let bytes_received = match get(Var::RequestLength) {
            Some(b) => parse_bytes("$request_length", b)?,
            None => 0,
        };
        let (request_id, dropped) =
            crate::error::request_id(get(Var::RequestId).unwrap_or_default());
        self.dropped_ids += u64::from(dropped);
        let upstream_name = match present(get(Var::ProxyUpstreamName)) {
            Some(n) => Some(text("$proxy_upstream_name", n)?),
            None => None,
        };

        let (addr, ust, urt) = (
            get(Var::UpstreamAddr),
            get(Var::UpstreamStatus),
            get(Var::UpstreamResponseTime),
        );
        let n = [addr, ust, urt]
            .iter()
            .flatten()
            .map(|l| ListEntries::new(l).count())
            .max()
            .unwrap_or(0);
        let mut inline = [UpstreamAttemptRef::default(); INLINE_ATTEMPTS];
        let mut heap = Vec::new();
        let attempts: &mut [UpstreamAttemptRef<'_>] = if n <= INLINE_ATTEMPTS {
            &mut inline[..n]
        } else {
            heap.resize(n, UpstreamAttemptRef::default());
            &mut heap
        };
        fill_attempts(attempts, addr, ust, urt)?;
        let attempts: &[UpstreamAttemptRef<'_>] = attempts;
        let upstream_host = attempts.last().and_then(|a| a.address);
        let last_address = attempts.iter().rev().find_map(|a| a.address);
        let has_upstream = upstream_name.is_some() || last_address.is_some();

        let own = self.mapping.own_or(self.reporter.as_str());
        let mut source = None;
        let mut destination = None;
        if self.mapping.has_rules() {
            if let Some(a) = get(Var::RemoteAddr) {
                let peer = text("$remote_addr", peer_address(a))?;
                source = self
                    .mapping
                    .resolve(Side::Source, &[(MatchField::DownstreamAddress, peer)]);
            }
            let mut fields: [(MatchField, &str); 5] = [(MatchField::Authority, ""); 5];
            let mut k = 0;
            if let Some(n) = upstream_name {
                fields[k] = (MatchField::UpstreamName, n);
                k += 1;
            }
            if let Some(h) = upstream_host {
                fields[k] = (MatchField::UpstreamHost, h);
                k += 1;
            }
            for (var, what) in [
                (Var::Host, "$host"),
                (Var::HttpHost, "$http_host"),
                (Var::ServerName, "$server_name"),
            ] {
                if let Some(h) = present(get(var)) {
                    fields[k] = (MatchField::Authority, text(what, h)?);
                    k += 1;
                }
            }
            destination = self.mapping.resolve(Side::Destination, &fields[..k]);
        }
        let source = source.unwrap_or(if has_upstream {
            own
        } else {
            endpoint(UNKNOWN_SERVICE)
        });
        let destination = destination
            .or_else(|| upstream_name.map(endpoint))
            .or_else(|| {
                last_address
                    .map(strip_port)
                    .filter(|host| !host.is_empty())
                    .map(endpoint)
            })
            .unwrap_or(own);

        let r = FlowRecordRef {
            start_us,
            duration_us,
            protocol,
            method,
            status,
            response_flags: None,
            bytes_received,
            bytes_sent,
            upstream_host,
            upstream_attempts: attempts,
            request_id,
            reporter: self.reporter,
            ..between(source, destination)
        };
        crate::check_names(&r)?;
        out.append(&r);
        Ok(1)
    }
}
