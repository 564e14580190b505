//! Errors (the run can't go on) and rejects (one line can't be read; the run goes on).

use std::fmt;

/// Why a line was rejected. Counted per reason in the run's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectReason {
    /// The line is not valid UTF-8 where text was expected.
    InvalidUtf8,
    /// The line is longer than the configured maximum; its bytes past the maximum were skipped.
    LineTooLong,
    /// The line does not have the format's shape (a field or separator is missing).
    Malformed,
    /// The timestamp field could not be parsed.
    BadTimestamp,
    /// A numeric field (status, bytes, duration) is not a number in range.
    BadNumber,
    /// A JSON line (Envoy JSON, container envelope) is not valid JSON or has the wrong types.
    BadJson,
    /// A service, zone or version name taken from the line holds a control character
    /// ([`schemas::first_control_char`]).
    BadName,
}

impl RejectReason {
    /// The reason's name in summaries and reject files.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid-utf8",
            RejectReason::LineTooLong => "line-too-long",
            RejectReason::Malformed => "malformed",
            RejectReason::BadTimestamp => "bad-timestamp",
            RejectReason::BadNumber => "bad-number",
            RejectReason::BadJson => "bad-json",
            RejectReason::BadName => "bad-name",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line that could not be turned into a flow record: the reason and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The reason class (counted).
    pub reason: RejectReason,
    /// What exactly was wrong, naming the field and value, e.g. `invalid status "2x0"`.
    pub detail: String,
}

impl Reject {
    /// A reject with the given reason and detail.
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Reject {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// Rejects a record naming a service, zone or version with a control character (the rule
/// is [`schemas::first_control_char`]): every parser checks its record with this before
/// appending it, so a name from a `Host` header, an upstream cluster, a pod, a shipper's
/// envelope, a Kafka header or a flow-json document is held to one rule.
///
/// # Errors
/// [`RejectReason::BadName`] naming the field, the character and its byte position, e.g.
/// `destination "pay\0ments": control character U+0000 at byte 3`.
pub fn check_names(r: &schemas::FlowRecordRef<'_>) -> Result<(), Reject> {
    match schemas::bad_name(r) {
        None => Ok(()),
        Some((field, value, at, c)) => Err(name_reject(field, value, at, c)),
    }
}

/// A field that becomes a name (a pod name in spans) checked on its own, as in
/// [`check_names`].
///
/// # Errors
/// As [`check_names`].
pub fn check_name(field: &str, value: &str) -> Result<(), Reject> {
    match schemas::first_control_char(value) {
        None => Ok(()),
        Some((at, c)) => Err(name_reject(field, value, at, c)),
    }
}

fn name_reject(field: &str, value: &str, at: usize, c: char) -> Reject {
    let shown: String = value.chars().take(80).collect();
    Reject::new(
        RejectReason::BadName,
        format!(
            "{field} {shown:?}: control character U+{:04X} at byte {at}",
            u32::from(c)
        ),
    )
}

/// The summary counter of request ids left out of their records because they are not UTF-8
/// (the client chooses them; the record is kept without one).
pub const DROPPED_REQUEST_IDS: &str = "request ids not UTF-8 (dropped, records kept)";

/// The parser counter of dropped request ids: listed only when some were dropped.
pub(crate) fn dropped_ids_counter(n: u64) -> Vec<(&'static str, u64)> {
    if n == 0 {
        Vec::new()
    } else {
        vec![(DROPPED_REQUEST_IDS, n)]
    }
}

/// A client-chosen request id (`%REQ(X-REQUEST-ID)%`, `$request_id`) as text: `None` when
/// absent (`-` or empty) or not UTF-8; the flag says it was dropped for not being UTF-8
/// (counted as [`DROPPED_REQUEST_IDS`]).
pub fn request_id(v: &[u8]) -> (Option<&str>, bool) {
    if v.is_empty() || v == b"-" {
        return (None, false);
    }
    match std::str::from_utf8(v) {
        Ok(id) => (Some(id), false),
        Err(_) => (None, true),
    }
}

/// Errors that stop ingestion before it starts: bad configuration (the user's fault). Reading
/// errors are [`crate::ReadError`]s.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `--format` value is not one graywatch knows.
    #[error(
        "unknown format {0:?} (expected envoy, envoy-json, istio, nginx-combined, nginx-ingress, nginx:'<log_format>', spans-csv or flow-json)"
    )]
    UnknownFormat(String),
    /// An NGINX `log_format` string could not be compiled into a parser.
    #[error("log_format {format:?}: {reason}")]
    LogFormat {
        /// The format as given.
        format: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key of the `[mapping]` section has an invalid value (the user's fault), e.g. an empty
    /// `service`.
    #[error("[mapping] {key} {reason}")]
    MappingKey {
        /// The key, as written in the config file (`service`, `zone`, `version`).
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A `[[mapping.inputs]]` entry is invalid.
    #[error("mapping input {index}: {reason}")]
    InputMapping {
        /// 0-based index of the entry in the config.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A mapping rule is invalid.
    #[error("mapping rule {index}: {reason}")]
    Mapping {
        /// 0-based index of the rule in the config.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
