//! The `[detect]` section of the config file (TOML), as serde types.
//!
//! ```toml
//! [detect.window]
//! length = "10s"                  # tumbling window length
//! allowed-lateness = "15s"        # how far behind the newest start time a record may arrive
//! concurrency-resolution = "100ms"
//! max-ahead = "5m"                # a record further ahead of its input is held back…
//! ahead-confirm = 8               # …until this many in a row confirm the jump
//! max-pairs = 100000              # distinct pairs per window; more count under `(other)`
//!
//! [detect.black-hole]
//! baseline-windows = 6
//! min-baseline-windows = 3
//! min-inflow-requests = 20
//! inflow-ratio = 0.5
//! collapse-ratio = 0.2
//! ```
//!
//! These are the inputs; [`crate::Detector::try_from`] validates them (naming the offending key)
//! into the runtime types, so detection code never re-checks them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Event-time windows and watermark (`[detect.window]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct WindowConfig {
    /// Length of each tumbling window `[k·length, (k+1)·length)`, a duration written like
    /// `"10s"`; whole µs, at least 1 s ([`crate::pair::MIN_WINDOW_LENGTH_US`]: shorter windows
    /// can't run in bounded memory). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub length: Duration,
    /// Allowed lateness, a duration (`"15s"`): the watermark is the newest request start seen
    /// so far minus this; a record whose window ended at or before the watermark is late
    /// (counted, not aggregated). Whole µs. Default 15 s.
    ///
    /// Proxies write a request's line when it *completes*, so a request that takes longer than
    /// the lateness reaches graywatch after its start window closed. Keep the lateness above
    /// the proxies' request timeout (Envoy's default route timeout is 15 s), or the slowest
    /// requests — timeouts, the ones a gray failure makes — are the ones counted as late.
    /// Findings come one window length plus the lateness after a window starts.
    ///
    /// Memory: each input holds open the windows of the last `lateness ÷ length` (plus the
    /// windows records in flight reach into), each with the state of every pair active in it;
    /// a large lateness (days, to replay archived logs whose lines are out of order) costs
    /// memory in proportion to the records it keeps open, so keep it as small as the proxies'
    /// timeouts allow on a live stream.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Resolution of the concurrency peak, a duration (`"100ms"`): the window is cut into
    /// `length ÷ resolution` slots and the peak is the most requests in flight in one slot.
    /// Must divide `length`, and `length ÷ resolution` must be at most
    /// [`crate::pair::MAX_CONCURRENCY_SLOTS`]. Default 100 ms.
    #[serde(with = "humantime_serde")]
    pub concurrency_resolution: Duration,
    /// How far ahead of its input's newest start a record may start and still be trusted, a
    /// duration (`"5m"`); whole µs. A record further ahead (one bad clock, one corrupt or
    /// crafted timestamp) does not move the input's watermark: it is held back until
    /// `ahead-confirm` such records in a row confirm the jump (an input that resumes after a
    /// gap), and set aside (counted, dead-lettered as `ahead`) when a record within reach
    /// comes first. Taken as at least `length` (a smaller value would set ordinary records
    /// aside). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub max_ahead: Duration,
    /// How many records in a row (count, 1..=1024) starting beyond `max-ahead` confirm that
    /// their input really moved on; also how many of an input's first records are held and
    /// judged against the earliest of them. `1` trusts every record (no protection).
    /// Default 8.
    pub ahead_confirm: usize,
    /// Most distinct (source, destination) pairs per window (count, >= 16), in each input and
    /// in the merged window. Past it, a record of a new pair counts under (its source,
    /// `(other)`), and once those pairs too are an eighth of the bound more, under
    /// (`(other)`, `(other)`): a flood of client-chosen names (a `Host` header per request)
    /// costs bounded memory and is counted (`overflow`), not dropped. Pairs of the previous
    /// window always keep their own place (at most twice the bound), so a flood can't push
    /// the landscape's real pairs out of sight. Default 100 000
    /// (about 30 MB of pair state per window).
    pub max_pairs: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            length: Duration::from_secs(10),
            allowed_lateness: Duration::from_secs(15),
            concurrency_resolution: Duration::from_millis(100),
            max_ahead: Duration::from_secs(300),
            ahead_confirm: 8,
            max_pairs: 100_000,
        }
    }
}

/// Thresholds of the black-hole signature (`[detect.black-hole]`), see
/// [`crate::signatures::black_hole`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BlackHoleConfig {
    /// How many past windows (count, >= 1) of each node the baseline remembers. Default 6.
    pub baseline_windows: usize,
    /// How many past windows (count, 1..=`baseline-windows`) a node needs before it can be
    /// judged. Default 3.
    pub min_baseline_windows: usize,
    /// Least inflow, requests per window (>= 1), for a node to be judged at all. Default 20.
    pub min_inflow_requests: u64,
    /// Inflow must still be at least this fraction (ratio in (0, 1]) of the baseline inflow
    /// (median requests per window): a node whose callers went quiet is not a black hole.
    /// Default 0.5.
    pub inflow_ratio: f64,
    /// The ok-response ratio and (unless the node calls nothing in its baseline) the downstream
    /// calls per inflow request must both have fallen to at most this fraction (ratio in
    /// (0, 1]) of their baselines. Default 0.2.
    pub collapse_ratio: f64,
}

impl Default for BlackHoleConfig {
    fn default() -> Self {
        BlackHoleConfig {
            baseline_windows: 6,
            min_baseline_windows: 3,
            min_inflow_requests: 20,
            inflow_ratio: 0.5,
            collapse_ratio: 0.2,
        }
    }
}

/// The whole `[detect]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DetectConfig {
    /// Windows and watermark.
    #[serde(default)]
    pub window: WindowConfig,
    /// Black-hole signature thresholds.
    #[serde(default)]
    pub black_hole: BlackHoleConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_humantime_and_keys_are_kebab_case() {
        let c: DetectConfig = serde_json::from_str(
            r#"{"window": {"length": "1m", "allowed-lateness": "1500ms"},
                "black-hole": {"collapse-ratio": 0.1}}"#,
        )
        .unwrap();
        assert_eq!(c.window.length, Duration::from_secs(60));
        assert_eq!(c.window.allowed_lateness, Duration::from_millis(1500));
        // unspecified keys keep their defaults
        assert_eq!(c.window.concurrency_resolution, Duration::from_millis(100));
        assert_eq!(c.black_hole.collapse_ratio, 0.1);
        assert_eq!(c.black_hole.baseline_windows, 6);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = serde_json::from_str::<DetectConfig>(r#"{"window": {"lenght": "1s"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lenght"), "{err}");
    }

    #[test]
    fn empty_section_is_all_defaults() {
        let c: DetectConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, DetectConfig::default());
        assert_eq!(c.window.length, Duration::from_secs(10));
        assert_eq!(c.window.allowed_lateness, Duration::from_secs(15));
    }
}
