//! Whom a flow record's outcome counts against: its destination, its source, or nobody.
//!
//! Only failures of the **destination** count as errors (`errors` of the pair, and so against
//! the destination's ok responses). A failure the caller caused (it hung up at once, sent a
//! malformed request, asked for a name that does not resolve) and a decision of policy (rate
//! limiting, authorization, load shedding) say nothing about the destination: they are not
//! errors of the pair, so one client misbehaving cannot make a healthy service look broken.
//!
//! Source: Envoy docs, "Access logging" (`configuration/observability/access_log/usage`),
//! `%RESPONSE_FLAGS%`, and Envoy's `source/common/stream_info/utility.h`
//! (`ALL_RESPONSE_STRINGS_FLAGS`, every flag Envoy writes). The flags are written comma
//! separated (`UF,URX`); `-` means none. A status of 0 means "no response was sent" (Envoy
//! docs) and is treated like an absent status.
//!
//! | flag | meaning (Envoy docs) | counts against |
//! |---|---|---|
//! | `UH` | no healthy upstream host in the cluster (503) | destination: every host of the chosen service is down |
//! | `UF` | upstream connection failure (503) | destination |
//! | `UO` | upstream overflow, circuit breaking (503) | destination: the breaker opens because the destination is slow or saturated |
//! | `URX` | upstream retry limit or TCP connect-attempt limit reached | destination |
//! | `UT` | upstream request timeout (504) | destination: a black hole shows up exactly like this |
//! | `SI` | stream idle timeout (408) | destination |
//! | `UMSDR` | upstream max stream duration reached | destination |
//! | `LR` | connection local reset | destination: the response was cut |
//! | `UR` | upstream remote reset | destination |
//! | `UC` | upstream connection termination | destination |
//! | `UPE` | upstream protocol error | destination |
//! | `LH` | local service failed its health check (503) | destination: the callee's own proxy refused it |
//! | `OM` | overload manager terminated the request | destination: the proxy of the pod serving it is overloaded |
//! | `FI` | fault injection aborted the request | destination: the caller saw a failure (what a chaos test wants to see) |
//! | `NR` | no route configured (404) | destination, but the parsers attribute such a record to the [`schemas::UNROUTED`] sink, never to a service: the request reached none, whatever its `Host` |
//! | `NC` | upstream cluster not found | as `NR` |
//! | `DC` | downstream connection termination | with no response status: the destination if the caller waited at least [`ABANDON_WAIT_US`] (it got no answer in that time), else the **source** (a client that hangs up at once, or a duration not logged). With a status, the answer had started: the status decides |
//! | `DR` | downstream remote reset (HTTP/2 `RST_STREAM` from the caller; access-log proto `downstream_remote_reset`) | as `DC` |
//! | `IH` | invalid `x-envoy-*` request header (strict header check) | **source**: the caller sent it |
//! | `DPE` | downstream protocol error | **source** |
//! | `DF` | DNS resolution failed (dynamic forward proxy) | **source**: the name the caller asked for does not resolve; no service was reached |
//! | `RL` | rate limited locally (429) | nobody: policy (possibly graywatch's own backpressure) |
//! | `UAEX` | external authorization denied | nobody: policy |
//! | `RLSE` | rate-limit service error (500) | nobody: the policy service failed, not the destination |
//! | `DO` | dropped by the cluster's `drop_overload` (503) | nobody: configured load shedding |
//! | `DI` | delay injected | nobody: the request was only delayed |
//! | `DT` | max connection or stream duration reached | nobody: a configured limit that ends healthy long-lived streams |
//! | `RFCF` | response served by the cache filter | nobody: the cache answered, not the destination |
//! | `NFCF` | no filter config found (500) | nobody: the proxy's configuration, not the destination |
//!
//! Without a flag, or with flags this table does not name, a 5xx status counts against the
//! destination and anything else against nobody (4xx are decisions of the callee). A flag
//! overrides the status: `500 RLSE` is not the destination's failure. When flags disagree, the
//! destination wins over the source, and the source over nobody (`UT,DC` is a timeout).
//!
//! A TCP proxy connection (protocol `tcp`, no status) with no flag this table names counts
//! against the destination when it carried request bytes, got none back and lasted at least
//! [`ABANDON_WAIT_US`]: **bytes in, nothing out** (the aggregation applies this rule, which
//! needs the record's protocol and bytes; [`blame`] sees only status, flags and duration).

use arrow::array::{Array, AsArray, DictionaryArray};
use arrow::datatypes::Int32Type;

use crate::error::Result;

/// Shortest wait, µs, after which a caller that hung up without any response (`DC` or `DR`,
/// no status) counts it against the destination: 1 s. A client that gives up sooner did not
/// give the destination a chance (one client sending requests it aborts at once must not
/// make a healthy service look broken); one that waited a second got no answer in that time,
/// which is what a black hole looks like from the caller's side.
pub const ABANDON_WAIT_US: u64 = 1_000_000;

/// Whom a flow record's outcome counts against (see the [module docs](self) for each flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The destination failed it: an error of the pair.
    Destination,
    /// The source caused it (hung up at once, sent a malformed request): not an error.
    Source,
    /// Nobody: a success, a decision of the callee (4xx) or of policy.
    Nobody,
}

/// No flag this table names.
pub(crate) const NONE: u8 = 0;
/// A flag that puts a failure on the destination whatever the status.
const DESTINATION: u8 = 1;
/// `DC`, `DR`: the caller hung up; whose fault depends on the status and the wait.
const ABANDONED: u8 = 2;
/// A flag that puts the failure on the source.
const SOURCE: u8 = 4;
/// A flag of policy: not a failure of anybody's, whatever the status.
const POLICY: u8 = 8;
/// Not a flag: a TCP connection that carried request bytes and got none back (see
/// [`unanswered_tcp`]).
const UNANSWERED: u8 = 16;

const DESTINATION_FLAGS: &[&str] = &[
    "UH", "UF", "UO", "URX", "UT", "SI", "UMSDR", "LR", "UR", "UC", "UPE", "LH", "OM", "FI", "NR",
    "NC",
];
const ABANDONED_FLAGS: &[&str] = &["DC", "DR"];
const SOURCE_FLAGS: &[&str] = &["IH", "DPE", "DF"];
const POLICY_FLAGS: &[&str] = &["RL", "UAEX", "RLSE", "DO", "DI", "DT", "RFCF", "NFCF"];

/// The class bits of an Envoy `%RESPONSE_FLAGS%` value.
pub(crate) fn classify(flags: &str) -> u8 {
    let mut class = NONE;
    for flag in flags.split(',').map(str::trim) {
        class |= if DESTINATION_FLAGS.contains(&flag) {
            DESTINATION
        } else if ABANDONED_FLAGS.contains(&flag) {
            ABANDONED
        } else if SOURCE_FLAGS.contains(&flag) {
            SOURCE
        } else if POLICY_FLAGS.contains(&flag) {
            POLICY
        } else {
            NONE
        };
    }
    class
}

/// `f` of each value of a dictionary of strings (index = dictionary key; `None` for a null).
///
/// # Errors
/// [`schemas::Error::Schema`] naming `column` when the dictionary's values are not strings.
fn map_dictionary<T>(
    dict: &DictionaryArray<Int32Type>,
    column: &str,
    f: impl Fn(Option<&str>) -> T,
) -> Result<Vec<T>> {
    let values = dict.values().as_string_opt::<i32>().ok_or_else(|| {
        schemas::Error::Schema(format!(
            "flow-record column {column:?} does not have Utf8 dictionary values"
        ))
    })?;
    Ok((0..values.len())
        .map(|i| f((!values.is_null(i)).then(|| values.value(i))))
        .collect())
}

/// The class of each value of a `response_flags` dictionary (index = dictionary key).
pub(crate) fn classify_dictionary(dict: &DictionaryArray<Int32Type>) -> Result<Vec<u8>> {
    map_dictionary(dict, "response_flags", |v| v.map_or(NONE, classify))
}

/// Whether each value of a `protocol` dictionary is `tcp` (index = dictionary key).
///
/// # Errors
/// [`schemas::Error::Schema`] when the dictionary's values are not strings.
pub(crate) fn tcp_dictionary(dict: &DictionaryArray<Int32Type>) -> Result<Vec<bool>> {
    map_dictionary(dict, "protocol", |v| v == Some("tcp"))
}

/// [`blame`] with the flags already classified.
#[inline]
pub(crate) fn blame_class(status: Option<u16>, class: u8, duration_us: Option<u64>) -> Blame {
    let status = status.filter(|&s| s != 0);
    if class & DESTINATION != 0 || (class & UNANSWERED != 0 && status.is_none()) {
        Blame::Destination
    } else if class & SOURCE != 0 {
        Blame::Source
    } else if class & ABANDONED != 0 && status.is_none() {
        if duration_us.is_some_and(|d| d >= ABANDON_WAIT_US) {
            Blame::Destination
        } else {
            Blame::Source
        }
    } else if class & POLICY != 0 {
        Blame::Nobody
    } else if matches!(status, Some(500..=599)) {
        Blame::Destination
    } else {
        Blame::Nobody
    }
}

/// The class of a record whose flags classified as `class`: [`UNANSWERED`] for a TCP proxy
/// connection (`tcp`) with no flag this table names and no status, that carried request bytes
/// (`bytes_received` > 0), got no byte back (`bytes_sent` = 0) and lasted at least
/// [`ABANDON_WAIT_US`]: bytes in, nothing out, what a TCP service that accepts connections and
/// never answers looks like from its callers. The destination's failure, so a TCP black
/// hole's callers see its ok ratio collapse as HTTP callers see timeouts. A connection the
/// client closed sooner (a sender that pushes a few bytes and hangs up, a health check) gave
/// the destination no chance, as for `DC`: not an error. Otherwise `class`.
///
/// What it can't see or tell apart:
/// - a one-way protocol whose connections last (a log or metrics stream): its pair's error
///   ratio is 1 in every window, so nothing about it changes and nothing fires on it;
/// - a server-speaks-first protocol (MySQL, SMTP, FTP): its client sends nothing before the
///   greeting, so a silent server shows as 0 bytes both ways and only its latency changes;
/// - Envoy's intermediate TCP access-log entries (`flush_access_log_on_connected`,
///   `access_log_flush_interval`): without `%ACCESS_LOG_TYPE%` in the format they read as
///   whole connections; log the final entry only;
/// - connections that outlast `allowed-lateness` arrive late (their start is the
///   connection's), as any long request does.
#[inline]
pub(crate) fn unanswered_tcp(
    class: u8,
    tcp: bool,
    status: Option<u16>,
    (bytes_received, bytes_sent): (u64, u64),
    duration_us: Option<u64>,
) -> u8 {
    if class == NONE
        && tcp
        && status.is_none_or(|s| s == 0)
        && bytes_received > 0
        && bytes_sent == 0
        && duration_us.is_some_and(|d| d >= ABANDON_WAIT_US)
    {
        UNANSWERED
    } else {
        class
    }
}

/// [`is_error`] with the flags already classified.
#[inline]
pub(crate) fn is_error_class(status: Option<u16>, class: u8, duration_us: Option<u64>) -> bool {
    blame_class(status, class, duration_us) == Blame::Destination
}

/// Whom a flow record's outcome counts against, from its status (`0` or `None`: no response
/// was sent), Envoy's comma-separated `%RESPONSE_FLAGS%` (`None` or `-` for none) and its
/// duration in µs (`None` when not logged). See the table in the [module docs](self).
///
/// ```
/// use detect::{Blame, blame};
/// assert_eq!(blame(Some(504), Some("UT"), Some(15_000_000)), Blame::Destination);
/// assert_eq!(blame(Some(0), Some("DC"), Some(1_000)), Blame::Source); // hung up after 1 ms
/// assert_eq!(blame(Some(0), Some("DC"), Some(10_000_000)), Blame::Destination); // no answer in 10 s
/// assert_eq!(blame(Some(400), Some("DPE"), Some(1_000)), Blame::Source);
/// assert_eq!(blame(Some(500), Some("RLSE"), None), Blame::Nobody);
/// ```
pub fn blame(status: Option<u16>, response_flags: Option<&str>, duration_us: Option<u64>) -> Blame {
    blame_class(status, response_flags.map_or(NONE, classify), duration_us)
}

/// Whether a flow record counts as an error of its pair: its outcome counts against the
/// destination ([`blame`] is [`Blame::Destination`]): an HTTP 5xx status, or an Envoy
/// response flag that puts the failure on the destination (`UH`, `UF`, `UO`, `URX`, `UT`,
/// `SI`, `UMSDR`, `LR`, `UR`, `UC`, `UPE`, `LH`, `OM`, `FI`, `NR`, `NC`; `DC`/`DR` only when
/// no response was sent and the caller waited at least [`ABANDON_WAIT_US`]).
///
/// Rate limiting (`RL`), authorization denials (`UAEX`), 4xx statuses and the caller's own
/// failures (`DPE`, `IH`, a `DC` after 1 ms) are not errors.
///
/// ```
/// use detect::is_error;
/// assert!(is_error(Some(503), None, None));
/// assert!(is_error(None, Some("UF,URX"), None));              // never reached upstream
/// assert!(is_error(Some(404), Some("NR"), None));             // no route
/// assert!(is_error(Some(0), Some("DC"), Some(10_000_000)));   // no answer in 10 s
/// assert!(!is_error(Some(0), Some("DC"), Some(1_000)));       // the caller hung up at once
/// assert!(!is_error(Some(200), Some("DC"), Some(10_000_000))); // answer started
/// assert!(!is_error(Some(429), Some("RL"), None));            // rate limited on purpose
/// assert!(!is_error(Some(404), None, None));
/// assert!(!is_error(None, None, None));                       // TCP connection, no failure
/// ```
pub fn is_error(
    status: Option<u16>,
    response_flags: Option<&str>,
    duration_us: Option<u64>,
) -> bool {
    blame(status, response_flags, duration_us) == Blame::Destination
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Option<u64> = Some(1_000_000);

    #[test]
    fn a_tcp_connection_is_unanswered_when_bytes_went_in_none_came_out_for_a_second() {
        let unanswered = |tcp, bytes, duration_us| {
            blame_class(
                None,
                unanswered_tcp(NONE, tcp, None, bytes, duration_us),
                duration_us,
            )
        };
        assert_eq!(
            unanswered(true, (120, 0), Some(10_000_000)),
            Blame::Destination
        );
        assert_eq!(unanswered(true, (120, 0), SECOND), Blame::Destination);
        // the client hung up within a second, or sent nothing, or got an answer
        assert_eq!(unanswered(true, (120, 0), Some(999_999)), Blame::Nobody);
        assert_eq!(unanswered(true, (120, 0), None), Blame::Nobody);
        assert_eq!(unanswered(true, (0, 0), Some(10_000_000)), Blame::Nobody);
        assert_eq!(unanswered(true, (120, 1), Some(10_000_000)), Blame::Nobody);
        // HTTP: its status and flags say
        assert_eq!(unanswered(false, (120, 0), Some(10_000_000)), Blame::Nobody);
        // a flag keeps its own verdict
        assert_eq!(
            unanswered_tcp(classify("DC"), true, None, (120, 0), Some(10_000_000)),
            classify("DC")
        );
    }

    #[test]
    fn every_destination_flag_is_an_error_without_status() {
        for f in DESTINATION_FLAGS {
            assert!(is_error(None, Some(f), None), "{f}");
            assert!(is_error(Some(0), Some(f), Some(0)), "{f}");
        }
    }

    #[test]
    fn every_flag_envoy_writes_has_a_class() {
        // Envoy's ALL_RESPONSE_STRINGS_FLAGS (source/common/stream_info/utility.h), plus DR
        // from the access-log proto.
        let envoy = [
            "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "URX", "NR", "DI", "FI", "RL", "UAEX",
            "RLSE", "DC", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM",
            "DF", "DO", "DR",
        ];
        for f in envoy {
            assert_ne!(classify(f), NONE, "{f}");
        }
        assert_eq!(
            DESTINATION_FLAGS.len()
                + ABANDONED_FLAGS.len()
                + SOURCE_FLAGS.len()
                + POLICY_FLAGS.len(),
            envoy.len()
        );
    }

    #[test]
    fn a_client_hanging_up_at_once_is_the_source_not_the_destination() {
        // 0 DC after 1 ms: the client's doing.
        assert_eq!(blame(Some(0), Some("DC"), Some(1_000)), Blame::Source);
        assert!(!is_error(Some(0), Some("DC"), Some(1_000)));
        assert!(!is_error(None, Some("DR"), Some(999_999)));
        // no duration logged: no evidence against the destination
        assert!(!is_error(None, Some("DC"), None));
        // waited a second or more with no answer: the destination's
        assert!(is_error(Some(0), Some("DC"), SECOND));
        assert!(is_error(None, Some("DR"), Some(10_000_000)));
        // the answer had started: the status decides
        assert!(!is_error(Some(200), Some("DC"), SECOND));
        assert!(is_error(Some(503), Some("DC"), Some(1_000)));
    }

    #[test]
    fn source_and_policy_flags_override_the_status() {
        assert_eq!(blame(Some(400), Some("DPE"), None), Blame::Source);
        assert_eq!(blame(Some(503), Some("DF"), None), Blame::Source);
        assert_eq!(blame(Some(500), Some("RLSE"), None), Blame::Nobody);
        assert_eq!(blame(Some(503), Some("DO"), None), Blame::Nobody);
        // the destination wins over the source, the source over policy
        assert_eq!(
            blame(Some(0), Some("UT,DC"), Some(1_000)),
            Blame::Destination
        );
        assert_eq!(blame(Some(0), Some("IH,DC"), SECOND), Blame::Source);
        assert_eq!(blame(Some(429), Some("RL,DPE"), None), Blame::Source);
    }

    #[test]
    fn flags_lists_are_split_on_commas() {
        assert!(is_error(Some(200), Some("DI,UT"), None));
        assert!(!is_error(Some(200), Some("DI,RL"), None));
        assert!(is_error(None, Some("RL,DC"), SECOND));
        assert!(!is_error(None, Some("-"), None));
    }

    #[test]
    fn status_classes() {
        assert!(is_error(Some(500), None, None));
        assert!(is_error(Some(599), None, None));
        assert!(!is_error(Some(499), None, None));
        assert!(!is_error(Some(600), None, None));
        assert!(!is_error(Some(0), None, None));
        assert!(
            is_error(Some(503), Some("XYZ"), None),
            "unknown flags: the status decides"
        );
    }
}
