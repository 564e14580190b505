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
