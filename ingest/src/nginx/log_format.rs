//! Compiling an NGINX `log_format` string into a line matcher.
//!
//! Format syntax as in the NGINX docs (ngx_http_log_module, `log_format`): literal text and
//! variables `$name` or `${name}`, where a name is ASCII letters, digits and `_`. A format
//! compiles to a leading literal and a list of *steps*, each a variable and the literal that
//! follows it. A line is matched in one pass: each variable's value runs up to the next
//! occurrence of its following literal (found with `memchr::memmem`).

use memchr::memmem;

use crate::error::{Error, Reject, RejectReason, Result};

/// The variables graywatch reads; every other variable is matched and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    RemoteAddr,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    ServerProtocol,
    Status,
    BodyBytesSent,
    BytesSent,
    RequestLength,
    RequestTime,
    RequestId,
    Host,
    HttpHost,
    ServerName,
    ProxyUpstreamName,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamResponseTime,
    UpstreamResponseLength,
    UpstreamConnectTime,
    UpstreamHeaderTime,
    Other,
}

/// Number of [`Var`]s that have a slot in [`Values`] (all but `Other`).
pub(crate) const VAR_SLOTS: usize = Var::Other as usize;

impl Var {
    fn from_name(name: &str) -> Var {
        match name {
            "remote_addr" => Var::RemoteAddr,
            "time_local" => Var::TimeLocal,
            "time_iso8601" => Var::TimeIso8601,
            "msec" => Var::Msec,
            "request" => Var::Request,
            "request_method" => Var::RequestMethod,
            "server_protocol" => Var::ServerProtocol,
            "status" => Var::Status,
            "body_bytes_sent" => Var::BodyBytesSent,
            "bytes_sent" => Var::BytesSent,
            "request_length" => Var::RequestLength,
            "request_time" => Var::RequestTime,
            "request_id" | "req_id" => Var::RequestId,
            "host" => Var::Host,
            "http_host" => Var::HttpHost,
            "server_name" => Var::ServerName,
            "proxy_upstream_name" => Var::ProxyUpstreamName,
            "upstream_addr" => Var::UpstreamAddr,
            "upstream_status" => Var::UpstreamStatus,
            "upstream_response_time" => Var::UpstreamResponseTime,
            "upstream_response_length" => Var::UpstreamResponseLength,
            "upstream_connect_time" => Var::UpstreamConnectTime,
            "upstream_header_time" => Var::UpstreamHeaderTime,
            _ => Var::Other,
        }
    }

    /// Upstream list variables: entries separated by `, ` and groups by ` : `.
    fn is_list(self) -> bool {
        matches!(
            self,
            Var::UpstreamAddr
                | Var::UpstreamStatus
                | Var::UpstreamResponseTime
                | Var::UpstreamResponseLength
                | Var::UpstreamConnectTime
                | Var::UpstreamHeaderTime
        )
    }

    /// True for the variables that give the logged time.
    pub(crate) fn is_time(self) -> bool {
        matches!(self, Var::TimeLocal | Var::TimeIso8601 | Var::Msec)
    }
}

/// Literals this long or shorter are searched without `memmem` ([`Literal::find`]).
const SHORT: usize = 4;

/// A literal of the format and its precompiled searcher.
#[derive(Debug, Clone)]
struct Literal {
    bytes: Vec<u8>,
    finder: memmem::Finder<'static>,
}

impl Literal {
    fn new(bytes: Vec<u8>) -> Self {
        let finder = memmem::Finder::new(&bytes).into_owned();
        Literal { bytes, finder }
    }

    /// First occurrence at or after `from`.
    ///
    /// A literal of up to [`SHORT`] bytes (most are: `" "`, `] "`, ` - `) is found by its first
    /// byte with `memchr`, the rest compared in place: between two variables the haystack is
    /// a short value, and a `memmem` search's set-up costs more than the search (the NGINX
    /// parser bench, combined format: 3.14 → 3.58 M lines/s).
    #[inline]
    fn find(&self, line: &[u8], from: usize) -> Option<usize> {
        let hay = line.get(from..)?;
        let at = match self.bytes.as_slice() {
            [b] => crate::swar::find_byte(*b, hay),
            [first, rest @ ..] if rest.len() < SHORT => {
                let mut i = 0;
                loop {
                    let k = i + crate::swar::find_byte(*first, &hay[i..])?;
                    let after = hay.get(k + 1..k + 1 + rest.len())?;
                    if after.iter().zip(rest).all(|(a, b)| a == b) {
                        break Some(k);
                    }
                    i = k + 1;
                }
            }
            _ => self.finder.find(hay),
        };
        at.map(|i| i + from)
    }
}

/// One variable and the literal after it (empty only for the format's last variable).
#[derive(Debug, Clone)]
struct Step {
    var: Var,
    name: Box<str>,
    next: Literal,
}

/// The values of one line's variables, by [`Var`] (the last occurrence wins).
pub(crate) type Values<'a> = [Option<&'a [u8]>; VAR_SLOTS];

/// A compiled `log_format`.
#[derive(Debug, Clone)]
pub(crate) struct LogFormat {
    prefix: Literal,
    steps: Vec<Step>,
}

fn err(format: &str, reason: impl Into<String>) -> Error {
    Error::LogFormat {
        format: format.to_owned(),
        reason: reason.into(),
    }
}

/// The character an nginx.conf escape `\c` stands for, or `None` when `c` is not one of the
/// escapes nginx undoes (`\"`, `\'`, `\\`, `\t`, `\r`, `\n`: `ngx_conf_read_token` in
/// nginx's `src/core/ngx_conf_file.c`); nginx keeps any other backslash as written.
fn escaped(c: char) -> Option<char> {
    match c {
        '"' | '\'' | '\\' => Some(c),
        't' => Some('\t'),
        'r' => Some('\r'),
        'n' => Some('\n'),
        _ => None,
    }
}

/// Pushes the escape after a backslash (`next`, `None` at the end) onto `out`, as nginx reads it.
fn push_escape(out: &mut String, next: Option<char>) {
    match next.map(|c| (c, escaped(c))) {
        Some((_, Some(e))) => out.push(e),
        Some((c, None)) => {
            out.push('\\');
            out.push(c);
        }
        None => out.push('\\'),
    }
}

/// Turns a format as given into the text nginx would log with: single-quoted pieces
/// (`'…' '…'`, as nginx.conf writes a long format) are joined, and nginx.conf escapes are
/// undone inside and outside quotes. A format that does not start with `'` is verbatim text,
/// except one whose outer quotes were already removed (`a' 'b`, as `--format nginx:'a' 'b'`
/// arrives): when it has a `'`, whitespace, `'` sequence and reads as pieces once re-wrapped
/// in quotes, it is read so.
///
/// # Errors
/// An unbalanced `'`: a quoted piece that is never closed, text between pieces, or an odd
/// number of unescaped `'` in a verbatim format.
fn unquote(format: &str) -> Result<String> {
    let t = format.trim();
    if t.starts_with('\'') {
        return unquote_pieces(format, t);
    }
    let b = t.as_bytes();
    let inner_break = b.windows(2).enumerate().any(|(i, w)| {
        w[0] == b'\'' && w[1].is_ascii_whitespace() && {
            let rest = &b[i + 1..];
            let ws = rest.iter().take_while(|c| c.is_ascii_whitespace()).count();
            rest.get(ws) == Some(&b'\'')
        }
    });
    if inner_break && let Ok(joined) = unquote_pieces(format, &format!("'{t}'")) {
        return Ok(joined);
    }
    let mut out = String::with_capacity(format.len());
    let mut quotes = 0usize;
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => push_escape(&mut out, chars.next()),
            '\'' => {
                quotes += 1;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    if quotes % 2 == 1 {
        return Err(err(
            format,
            format!(
                "unbalanced ': {quotes} unescaped quote(s); quote the whole format as \
                 nginx.conf does ('…' '…') or write a literal quote as \\'"
            ),
        ));
    }
    Ok(out)
}

/// Reads `t`, which starts with `'`, as quoted pieces; `format` is for errors (byte offsets in
/// them count in `format` when `t` is `format` trimmed).
fn unquote_pieces(format: &str, t: &str) -> Result<String> {
    let lead = format.len() - format.trim_start().len();
    let mut out = String::with_capacity(t.len());
    let mut chars = t.char_indices().peekable();
    loop {
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let opened = match chars.next() {
            None => return Ok(out),
            Some((i, '\'')) => i,
            Some((i, c)) => {
                return Err(err(
                    format,
                    format!(
                        "text {c:?} at byte {} is outside the quoted pieces '…'",
                        lead + i
                    ),
                ));
            }
        };
        loop {
            match chars.next() {
                None => {
                    return Err(err(
                        format,
                        format!(
                            "unbalanced ': the quoted piece opened at byte {} is never \
                             closed (write a literal quote as \\')",
                            lead + opened
                        ),
                    ));
                }
                Some((_, '\'')) => break,
                Some((_, '\\')) => push_escape(&mut out, chars.next().map(|(_, c)| c)),
                Some((_, c)) => out.push(c),
            }
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl LogFormat {
    /// Compiles `format` (see the module docs).
    ///
    /// # Errors
    /// [`Error::LogFormat`] for an empty format, a `$` without a name, an unterminated `${`,
    /// two variables with no literal between them, or no time variable (`$time_local`,
    /// `$time_iso8601` or `$msec`).
    pub(crate) fn compile(format: &str) -> Result<Self> {
        let text = unquote(format)?;
        let b = text.as_bytes();
        if b.is_empty() {
            return Err(err(format, "empty format"));
        }
        let mut literal = Vec::new();
        let mut prefix: Option<Literal> = None;
        let mut steps: Vec<Step> = Vec::new();
        let mut pending: Option<(Var, String)> = None;
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' {
                literal.push(b[i]);
                i += 1;
                continue;
            }
            let (name, end) = if b.get(i + 1) == Some(&b'{') {
                let close = b[i + 2..]
                    .iter()
                    .position(|&c| c == b'}')
                    .ok_or_else(|| err(format, format!("unterminated ${{ at byte {i}")))?;
                let name = &text[i + 2..i + 2 + close];
                if name.is_empty() || !name.bytes().all(is_name_byte) {
                    return Err(err(
                        format,
                        format!("invalid variable name {name:?} at byte {i}"),
                    ));
                }
                (name, i + 3 + close)
            } else {
                let len = b[i + 1..].iter().take_while(|&&c| is_name_byte(c)).count();
                if len == 0 {
                    return Err(err(
                        format,
                        format!("\"$\" at byte {i} is not followed by a variable name"),
                    ));
                }
                (&text[i + 1..i + 1 + len], i + 1 + len)
            };
            let lit = Literal::new(std::mem::take(&mut literal));
            match pending.take() {
                None => prefix = Some(lit),
                Some((var, prev)) => {
                    if lit.bytes.is_empty() {
                        return Err(err(
                            format,
                            format!(
                                "variables ${prev} and ${name} have no literal between them, \
                                 so a line cannot be split between them"
                            ),
                        ));
                    }
                    steps.push(Step {
                        var,
                        name: prev.into(),
                        next: lit,
                    });
                }
            }
            pending = Some((Var::from_name(name), name.to_owned()));
            i = end;
        }
        match pending {
            Some((var, name)) => steps.push(Step {
                var,
                name: name.into(),
                next: Literal::new(literal),
            }),
            None => return Err(err(format, "no variables")),
        }
        let prefix = prefix.unwrap_or_else(|| Literal::new(Vec::new()));
        let parsed = LogFormat { prefix, steps };
        if !parsed.steps.iter().any(|s| s.var.is_time()) {
            return Err(err(
                format,
                "no time variable ($time_local, $time_iso8601 or $msec): a flow record needs a start time",
            ));
        }
        Ok(parsed)
    }

    /// True when the format has `var`.
    pub(crate) fn has(&self, var: Var) -> bool {
        self.steps.iter().any(|s| s.var == var)
    }

    /// Splits `line` into the values of its variables. Data after the format's end is
    /// accepted and ignored (people append fields).
    ///
    /// # Errors
    /// A [`RejectReason::Malformed`] reject naming the literal that is missing.
    pub(crate) fn split<'a>(&self, line: &'a [u8], values: &mut Values<'a>) -> Result<(), Reject> {
        if !self.prefix.bytes.is_empty() && !line.starts_with(&self.prefix.bytes) {
            return Err(Reject::new(
                RejectReason::Malformed,
                format!(
                    "line does not start with {:?}",
                    String::from_utf8_lossy(&self.prefix.bytes)
                ),
            ));
        }
        let mut pos = self.prefix.bytes.len();
        for step in &self.steps {
            let end = if step.next.bytes.is_empty() {
                // The last variable: up to the next space (data may be appended after it).
                self.value_end(step, line, pos, &SPACE)
                    .unwrap_or(line.len())
            } else {
                self.value_end(step, line, pos, &step.next).ok_or_else(|| {
                    Reject::new(
                        RejectReason::Malformed,
                        format!(
                            "missing {:?} after ${} (at byte {pos})",
                            String::from_utf8_lossy(&step.next.bytes),
                            step.name
                        ),
                    )
                })?
            };
            if step.var != Var::Other {
                values[step.var as usize] = Some(&line[pos..end]);
            }
            pos = (end + step.next.bytes.len()).min(line.len());
        }
        Ok(())
    }

    /// Where the value of `step`, starting at `pos`, ends: the first occurrence of `next`,
    /// except spaces that belong to a list separator (`, ` or ` : `) of an upstream list
    /// variable, or the space inside `$time_local` (`07/Dec/2016:11:05:07 +0100`).
    #[inline]
    fn value_end(&self, step: &Step, line: &[u8], pos: usize, next: &Literal) -> Option<usize> {
        let starts_with_space = next.bytes.first() == Some(&b' ');
        let mut from = pos;
        if step.var == Var::TimeLocal && starts_with_space {
            from = pos + 21;
        }
        loop {
            let at = next.find(line, from)?;
            if starts_with_space && step.var.is_list() {
                if at > pos && line[at - 1] == b',' {
                    from = at + 1;
                    continue;
                }
                if line[at..].starts_with(b" : ") {
                    from = at + 3;
                    continue;
                }
            }
            return Some(at);
        }
    }
}

static SPACE: std::sync::LazyLock<Literal> = std::sync::LazyLock::new(|| Literal::new(vec![b' ']));

/// Iterates the entries of an upstream list value: `(group, entry)`, group 0 first and +1
/// after each ` : `. Entries are separated by `, `. A value that is empty or a lone `-`
/// (no upstream contacted) has no entries.
pub(crate) struct ListEntries<'a> {
    rest: Option<&'a [u8]>,
    group: u16,
}

impl<'a> ListEntries<'a> {
    pub(crate) fn new(value: &'a [u8]) -> Self {
        let rest = (!value.is_empty() && value != b"-").then_some(value);
        ListEntries { rest, group: 0 }
    }
}

impl<'a> Iterator for ListEntries<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let group = self.group;
        // The next separator: ", " or " : ", whichever comes first.
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b',' => {
                    self.rest = Some(trim_start(&rest[i + 1..]));
                    return Some((group, trim_end(&rest[..i])));
                }
                b' ' if rest[i..].starts_with(b" : ") => {
                    self.rest = Some(trim_start(&rest[i + 3..]));
                    self.group = self.group.saturating_add(1);
                    return Some((group, trim_end(&rest[..i])));
                }
                _ => i += 1,
            }
        }
        self.rest = None;
        Some((group, rest))
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|&&b| b == b' ').count();
    &s[..s.len() - n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values_of(format: &str, line: &str) -> Vec<(Var, String)> {
        let f = LogFormat::compile(format).unwrap();
        let mut v: Values<'_> = [None; VAR_SLOTS];
        f.split(line.as_bytes(), &mut v).unwrap();
        f.steps
            .iter()
            .filter(|s| s.var != Var::Other)
            .map(|s| {
                (
                    s.var,
                    String::from_utf8_lossy(v[s.var as usize].unwrap()).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn braces_and_quoted_pieces() {
        let got = values_of(
            r#"'${remote_addr}x[$time_local] ' '"$status"'"#,
            r#"1.2.3.4x[07/Dec/2016:11:05:07 +0100] "200""#,
        );
        assert_eq!(
            got,
            vec![
                (Var::RemoteAddr, "1.2.3.4".into()),
                (Var::TimeLocal, "07/Dec/2016:11:05:07 +0100".into()),
                (Var::Status, "200".into()),
            ]
        );
    }

    #[test]
    fn unbracketed_time_local_keeps_its_space() {
        let got = values_of(
            "$time_local $status",
            "07/Dec/2016:11:05:07 +0100 200 extra",
        );
        assert_eq!(got[0].1, "07/Dec/2016:11:05:07 +0100");
        // The last variable ends at the next space: appended data is ignored.
        assert_eq!(got[1].1, "200");
    }

    #[test]
    fn list_values_keep_their_separators() {
        let got = values_of(
            "$msec $upstream_addr $upstream_status",
            "1.5 10.0.0.1:80, 10.0.0.2:80 : 10.0.0.3:80 502, 504 : 200",
        );
        assert_eq!(got[1].1, "10.0.0.1:80, 10.0.0.2:80 : 10.0.0.3:80");
        assert_eq!(got[2].1, "502, 504 : 200");
        let entries: Vec<_> = ListEntries::new(got[1].1.as_bytes())
            .map(|(g, e)| (g, String::from_utf8_lossy(e).into_owned()))
            .collect();
        assert_eq!(
            entries,
            vec![
                (0, "10.0.0.1:80".to_owned()),
                (0, "10.0.0.2:80".to_owned()),
                (1, "10.0.0.3:80".to_owned())
            ]
        );
        assert_eq!(ListEntries::new(b"-").count(), 0);
        assert_eq!(ListEntries::new(b"").count(), 0);
    }

    #[test]
    fn compile_errors_name_the_problem() {
        let e = |f: &str| LogFormat::compile(f).unwrap_err().to_string();
        assert_eq!(
            e("$time_local$status"),
            "log_format \"$time_local$status\": variables $time_local and $status have no \
             literal between them, so a line cannot be split between them"
        );
        assert_eq!(
            e("$time_local ${status"),
            "log_format \"$time_local ${status\": unterminated ${ at byte 12"
        );
        assert_eq!(
            e("$time_local $ x"),
            "log_format \"$time_local $ x\": \"$\" at byte 12 is not followed by a variable name"
        );
        assert!(e("$status").contains("no time variable"));
        assert!(e("").contains("empty format"));
        assert!(e("'$time_local' x '$status'").contains("outside the quoted pieces"));
        assert_eq!(
            e("'$time_local ' '"),
            "log_format \"'$time_local ' '\": unbalanced ': the quoted piece opened at byte 15 \
             is never closed (write a literal quote as \\')"
        );
    }

    proptest::proptest! {
        /// Short literals (first byte, then the rest in place) and long ones (`memmem`) are
        /// found where a naive search finds them, from any start.
        #[test]
        fn a_literal_is_found_where_a_naive_search_finds_it(
            needle in proptest::collection::vec(proptest::sample::select(b" \"-[]".to_vec()), 1..7),
            hay in proptest::collection::vec(proptest::sample::select(b" \"-[]a".to_vec()), 0..40),
            from in 0usize..45,
        ) {
            let naive = hay.get(from..).and_then(|h| {
                h.windows(needle.len()).position(|w| w == needle.as_slice()).map(|i| i + from)
            });
            proptest::prop_assert_eq!(Literal::new(needle.clone()).find(&hay, from), naive);
        }
    }
}
