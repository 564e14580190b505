//! Which flow records count as errors: HTTP 5xx, or an Envoy response flag that means the
//! request failed.
//!
//! Source: Envoy docs, "Access logging" (`configuration/observability/access_log/usage`),
//! `%RESPONSE_FLAGS%`. The flags are written comma separated (`UF,URX`); `-` means none.
//!
//! | flags | meaning (Envoy docs) | counts as an error |
//! |---|---|---|
//! | `UH` `UF` `UO` `URX` `NC` `DF` `DO` | no healthy upstream, upstream connection failure, upstream overflow (circuit breaking), retry / connect-attempt limit reached, no cluster, DNS resolution failed, dropped by drop-overload | yes: the request never reached a working upstream |
//! | `UT` `SI` `UMSDR` | upstream request timeout (504), stream idle timeout (408), upstream max stream duration reached | yes: the upstream did not answer in time; a black hole shows up exactly like this |
//! | `LR` `UR` `UC` `UPE` | local reset, upstream remote reset, upstream connection termination, upstream protocol error | yes: the response was cut or broken |
//! | `LH` `OM` | local service failed health check, overload manager terminated the request | yes: the callee's proxy refused it |
//! | `NR` | no route configured (404) | yes: the call could not be delivered (a misrouted edge is a failure for its caller) |
//! | `FI` | fault injection aborted the request | yes: the caller saw a failure (that is what chaos tests want to see) |
//! | `DC` | downstream connection termination | only with no response status (`0`/absent): the caller gave up before any answer came. With a status, the answer had started and the caller merely closed early |
//! | `RL` `UAEX` `RLSE` | rate limited (429), external authorization denied, rate-limit service error | no: policy decisions (possibly graywatch's own backpressure), not a failure of the callee |
//! | `DI` `IH` `DPE` `DT` | delay injected, invalid header, downstream protocol error, max connection/stream duration reached | no: the request was delayed, the caller's fault, or a configured limit that ends healthy long-lived streams |
//!
//! A status of 0 means "no response was sent" (Envoy docs) and is treated like an absent
//! status. Unknown flags are not errors.

use arrow::array::{Array, AsArray, DictionaryArray};
use arrow::datatypes::Int32Type;

use crate::error::Result;

/// No failure flag.
pub(crate) const NONE: u8 = 0;
/// A flag that makes the request an error whatever its status.
pub(crate) const FAILURE: u8 = 1;
/// `DC`: an error only when no response status was logged.
pub(crate) const NO_RESPONSE: u8 = 2;

const FAILURE_FLAGS: &[&str] = &[
    "UH", "UF", "UO", "URX", "NC", "DF", "DO", "UT", "SI", "UMSDR", "LR", "UR", "UC", "UPE", "LH",
    "OM", "NR", "FI",
];

/// The class bits of an Envoy `%RESPONSE_FLAGS%` value.
pub(crate) fn classify(flags: &str) -> u8 {
    let mut class = NONE;
    for flag in flags.split(',').map(str::trim) {
        if FAILURE_FLAGS.contains(&flag) {
            class |= FAILURE;
        } else if flag == "DC" {
            class |= NO_RESPONSE;
        }
    }
    class
}

/// The class of each value of a `response_flags` dictionary (index = dictionary key).
pub(crate) fn classify_dictionary(dict: &DictionaryArray<Int32Type>) -> Result<Vec<u8>> {
    let values = dict.values().as_string_opt::<i32>().ok_or_else(|| {
        schemas::Error::Schema(
            "flow-record column \"response_flags\" does not have Utf8 dictionary values".into(),
        )
    })?;
    Ok((0..values.len())
        .map(|i| {
            if values.is_null(i) {
                NONE
            } else {
                classify(values.value(i))
            }
        })
        .collect())
}

/// [`is_error`] with the flags already classified.
#[inline]
pub(crate) fn is_error_class(status: Option<u16>, class: u8) -> bool {
    let status = status.filter(|&s| s != 0);
    matches!(status, Some(500..=599))
        || class & FAILURE != 0
        || (class & NO_RESPONSE != 0 && status.is_none())
}

/// Whether a flow record counts as an error: an HTTP 5xx status, or an Envoy response flag that
/// means failure (see the table in this module's source docs: `UH`, `UF`, `UO`, `URX`, `NC`,
/// `DF`, `DO`, `UT`, `SI`, `UMSDR`, `LR`, `UR`, `UC`, `UPE`, `LH`, `OM`, `NR`, `FI` always; `DC`
/// only when no response was sent). Status `0` or `None` means no response was sent.
/// `response_flags` is Envoy's comma-separated `%RESPONSE_FLAGS%` (`None` or `-` for none).
///
/// Rate limiting (`RL`), authorization denials (`UAEX`) and 4xx statuses are not errors: they
/// are decisions, not failures of the callee.
///
/// ```
/// use detect::is_error;
/// assert!(is_error(Some(503), None));
/// assert!(is_error(None, Some("UF,URX")));      // TCP connection that never reached upstream
/// assert!(is_error(Some(404), Some("NR")));     // no route
/// assert!(is_error(Some(0), Some("DC")));       // caller hung up before any answer
/// assert!(!is_error(Some(200), Some("DC")));    // answer started, caller closed early
/// assert!(!is_error(Some(429), Some("RL")));    // rate limited on purpose
/// assert!(!is_error(Some(404), None));
/// assert!(!is_error(None, None));               // TCP connection, no failure
/// ```
pub fn is_error(status: Option<u16>, response_flags: Option<&str>) -> bool {
    is_error_class(status, response_flags.map_or(NONE, classify))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_flag_is_an_error_without_status() {
        for f in FAILURE_FLAGS {
            assert!(is_error(None, Some(f)), "{f}");
            assert!(is_error(Some(0), Some(f)), "{f}");
        }
    }

    #[test]
    fn flags_lists_are_split_on_commas() {
        assert!(is_error(Some(200), Some("DI,UT")));
        assert!(!is_error(Some(200), Some("DI,RL")));
        assert!(is_error(None, Some("RL,DC")));
        assert!(!is_error(None, Some("-")));
    }

    #[test]
    fn status_classes() {
        assert!(is_error(Some(500), None));
        assert!(is_error(Some(599), None));
        assert!(!is_error(Some(499), None));
        assert!(!is_error(Some(600), None));
        assert!(!is_error(Some(0), None));
    }
}
