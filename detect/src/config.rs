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
    /// Least inflow, requests per window (1..=`min-inflow-requests`), for a node whose
    /// black-hole incident is open to go on being judged (hysteresis: a node whose callers
    /// send about `min-inflow-requests` a window would otherwise drop in and out of judgement
    /// and its incident resolve and open again while the black hole lasts). Default
    /// `min-inflow-requests` ÷ 4, at least 1.
    pub hold_inflow_requests: Option<u64>,
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
            hold_inflow_requests: None,
            inflow_ratio: 0.5,
            collapse_ratio: 0.2,
        }
    }
}

/// Adaptive baselines (`[detect.baseline]`), see [`crate::adaptive`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BaselineConfig {
    /// Healthy windows (count, >= 3) a baseline learns before it scores anything: no finding
    /// on a subject before it has a baseline. Default 12 (2 min at 10 s).
    pub warm_up: u32,
    /// Healthy windows (count) after which findings on a baseline are of normal confidence;
    /// before, they say `"confidence": "low"`. Default 60.
    pub confident_after: u32,
    /// Half-life of a window's weight in the baseline, in windows (>= 1). Default 90 (15 min
    /// at 10 s).
    pub half_life: f64,
    /// `"none"` or `"daily"`: a level offset per hour of the day (UTC), learned once each hour
    /// has `warm-up` windows. Default `"none"`.
    pub seasonality: Seasonality,
}

/// Seasonality of baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Seasonality {
    /// One level.
    None,
    /// One level offset per hour of the day (UTC).
    Daily,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            warm_up: 12,
            confident_after: 60,
            half_life: 90.0,
            seasonality: Seasonality::None,
        }
    }
}

/// When a signature's raw findings become findings (the `debounce` key of every signature
/// section but `black-hole`'s, which fires at once), see [`crate::incident`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DebounceConfig {
    /// Windows with a raw finding (count) among the last `of-windows` that open an incident.
    pub open_after: u32,
    /// Windows looked back on (count, <= 64).
    pub of_windows: u32,
    /// Windows in a row without a raw finding that resolve it.
    pub resolve_after: u32,
}

/// Generic per-signal anomalies of pairs (`[detect.anomaly]`), see
/// [`crate::signatures::generic`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AnomalyConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Largest tail probability (in (0, 0.5)) that is anomalous. Default 1e-6.
    pub max_tail_probability: f64,
    /// Largest tail probability (in [`max-tail-probability`, 0.5)) that keeps an **open**
    /// incident firing (hysteresis: a rate that stays 5× up is still the incident, and its
    /// windows don't teach the baseline a level it would then find "normal"). Default 1e-3.
    pub hold_tail_probability: f64,
    /// Least requests of a pair in the window (count) for its latency and errors to be
    /// judged, and of its baseline rate ×window for its rate. Default 30.
    pub min_requests: u64,
    /// A rate spike must be at least this many times the baseline rate, a drop at most its
    /// inverse (ratio >= 1). Default 3.
    pub rate_factor: f64,
    /// A latency shift must be at least this many times the baseline p50 or p99 (ratio >= 1).
    /// Default 2.
    pub latency_factor: f64,
    /// An error spike must add at least this error ratio to the baseline's (ratio in (0, 1]).
    /// Default 0.05.
    pub min_error_ratio_rise: f64,
    /// Debounce, a table `{ open-after, of-windows, resolve-after }` (all three): raw
    /// findings in `open-after` of `of-windows` windows open an incident; `resolve-after`
    /// quiet ones resolve it. Default 2 of 3, 3.
    pub debounce: DebounceConfig,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            enabled: true,
            max_tail_probability: 1e-6,
            hold_tail_probability: 1e-3,
            min_requests: 30,
            rate_factor: 3.0,
            latency_factor: 2.0,
            min_error_ratio_rise: 0.05,
            debounce: DebounceConfig {
                open_after: 2,
                of_windows: 3,
                resolve_after: 3,
            },
        }
    }
}

/// Deployment regressions (`[detect.deploy]`), see [`crate::signatures::deploy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DeployConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// How long after a new version first appears its service is watched, a duration.
    /// Default 10 min.
    #[serde(with = "humantime_serde")]
    pub watch: Duration,
    /// Least tail probability of a downstream latency or error rise that counts (in (0,
    /// 0.5)). Default 1e-4.
    pub max_tail_probability: f64,
    /// A downstream p99 must be at least this many times its baseline. Default 1.5.
    pub latency_factor: f64,
    /// Calls per request to a destination changed by at least this factor (ratio >= 1), or
    /// a destination appeared or vanished, for the call pattern to have changed. Default 2.
    pub pattern_factor: f64,
    /// Least requests (count) a version must have received for its call pattern (since its
    /// watch began) and its latency (in a window) to be compared (the pattern's change must
    /// also be improbable by its count of calls, so a few requests are enough to see a fan-out
    /// multiplied). Default 5.
    pub min_requests: u64,
    /// Debounce (see `[detect.anomaly]`). Default 1 of 1, 6: the detector keeps its own
    /// evidence over the watch (the call pattern on the calls summed since the rollout began,
    /// a version slower alone in two judged windows in a row), so its first firing opens.
    pub debounce: DebounceConfig,
    /// A deploy history: a JSON-lines file of deployments (see
    /// [`crate::signatures::deploy::DeploymentEvent`]), read once when the config is
    /// validated; a relative path is from the working directory. Default none: versions come
    /// from the records only.
    pub events: Option<std::path::PathBuf>,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            enabled: true,
            watch: Duration::from_secs(600),
            max_tail_probability: 1e-4,
            latency_factor: 1.5,
            pattern_factor: 2.0,
            min_requests: 5,
            debounce: DebounceConfig {
                open_after: 1,
                of_windows: 1,
                resolve_after: 6,
            },
            events: None,
        }
    }
}

/// Synchronized bursts (`[detect.storm]`), see [`crate::signatures::storm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StormConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Least sources (count, >= 2) spiking together. Default 3.
    pub min_sources: usize,
    /// Least share of the destination's callers (ratio in (0, 1]) spiking together.
    /// Default 0.5.
    pub min_source_share: f64,
    /// A source spikes when its rate is at least this many times its baseline (ratio > 1)…
    /// Default 3.
    pub rate_factor: f64,
    /// …and P(its rate this high) is at most this (one source's spike alone is weak
    /// evidence: the synchronization is the signal). Default 0.05.
    pub source_tail_probability: f64,
    /// The most likely the synchronization may be by chance: P(K ≥ spiking sources) for
    /// K ~ Binomial(callers, `source-tail-probability`); also the improbability of the
    /// destination's trouble (its ok ratio or inflow this low). Default 1e-4.
    pub max_tail_probability: f64,
    /// How far back a period of errors or unavailability of the destination may end, a
    /// duration. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub after_trouble: Duration,
    /// Debounce (see `[detect.anomaly]`). Default 1 of 1, 3.
    pub debounce: DebounceConfig,
}

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig {
            enabled: true,
            min_sources: 3,
            min_source_share: 0.5,
            rate_factor: 3.0,
            source_tail_probability: 0.05,
            max_tail_probability: 1e-4,
            after_trouble: Duration::from_secs(600),
            debounce: DebounceConfig {
                open_after: 1,
                of_windows: 1,
                resolve_after: 3,
            },
        }
    }
}

/// A segment of the landscape: services by name pattern (`name`, `prefix*`, `*suffix`,
/// `*infix*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SegmentConfig {
    /// The segment's name (findings name it as the destination).
    pub name: String,
    /// Its members' name patterns; a service is in the first segment that matches it.
    pub members: Vec<String>,
}

/// Edges allowed between two segments (`from`, `to`: segment names or `*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SegmentAllow {
    /// Source segment, or `*`.
    pub from: String,
    /// Destination segment, or `*`.
    pub to: String,
}

/// Segmentation, never-seen edges and fan-in/fan-out surges (`[detect.segmentation]`), see
/// [`crate::signatures::segmentation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SegmentationConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// The segments (none by default: every edge is allowed by policy).
    pub segments: Vec<SegmentConfig>,
    /// Edges allowed between segments (services in no segment may call and be called by
    /// anyone).
    pub allow: Vec<SegmentAllow>,
    /// Report a source's never-seen edge once the source has been seen this many windows
    /// (count; 0: never). Default 360 (1 h at 10 s).
    pub new_edge_after: u32,
    /// Least requests (count) of a never-seen edge, or of a surge's new callers, in one window
    /// to be reported. Default 30.
    pub min_requests: u64,
    /// Fan-in surge: a destination's distinct callers at least this many times its baseline
    /// (ratio > 1), with at least `min-requests` from callers it never had. Default 2.
    pub fan_factor: f64,
    /// Debounce (see `[detect.anomaly]`). Default 1 of 1, 3.
    pub debounce: DebounceConfig,
}

impl Default for SegmentationConfig {
    fn default() -> Self {
        SegmentationConfig {
            enabled: true,
            segments: Vec::new(),
            allow: Vec::new(),
            new_edge_after: 360,
            min_requests: 30,
            fan_factor: 2.0,
            debounce: DebounceConfig {
                open_after: 1,
                of_windows: 1,
                resolve_after: 3,
            },
        }
    }
}

/// A pair allowed to cross zones (critical fail-over), by name patterns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PairAllow {
    /// Source pattern.
    pub source: String,
    /// Destination pattern.
    pub destination: String,
}

/// Cross-zone traffic (`[detect.cross-zone]`), see [`crate::signatures::cross_zone`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CrossZoneConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Share of a pair's zoned requests (ratio in [0, 1)) that may cross zones. Default 0.05.
    pub allowed_share: f64,
    /// Least cross-zone requests (count) from one zone over its run (see `span`) to report;
    /// the tail probability carries the evidence, this keeps a handful of requests from
    /// being a finding. Default 5.
    pub min_requests: u64,
    /// Largest binomial tail probability of the cross-zone count under `allowed-share` that
    /// is reported (in (0, 0.5)). Default 1e-6.
    pub max_tail_probability: f64,
    /// How far back the counts of a run of windows crossing above the allowed share add up,
    /// a duration (at least one window): a quiet pair's misrouting is too few requests in
    /// one window to be sure of, not in a minute. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub span: Duration,
    /// Pairs allowed to cross zones (fail-over paths).
    pub allow: Vec<PairAllow>,
    /// Debounce (see `[detect.anomaly]`). Default 1 of 1, 3.
    pub debounce: DebounceConfig,
}

impl Default for CrossZoneConfig {
    fn default() -> Self {
        CrossZoneConfig {
            enabled: true,
            allowed_share: 0.05,
            min_requests: 5,
            max_tail_probability: 1e-6,
            span: Duration::from_secs(60),
            allow: Vec::new(),
            debounce: DebounceConfig {
                open_after: 1,
                of_windows: 1,
                resolve_after: 3,
            },
        }
    }
}

/// Root-cause hints (`[detect.root-cause]`), see [`crate::signatures::root_cause`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RootCauseConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Least anomalous pairs (count, >= 2) in one window for a degradation to be spreading.
    /// Default 5.
    pub min_pairs: usize,
    /// Largest tail probability of a pair's latency or error rise to count it anomalous.
    /// Default 1e-6.
    pub max_tail_probability: f64,
    /// Candidates listed (count, >= 1). Default 3.
    pub candidates: usize,
    /// Debounce (see `[detect.anomaly]`). Default 2 of 3, 3.
    pub debounce: DebounceConfig,
}

impl Default for RootCauseConfig {
    fn default() -> Self {
        RootCauseConfig {
            enabled: true,
            min_pairs: 5,
            max_tail_probability: 1e-6,
            candidates: 3,
            debounce: DebounceConfig {
                open_after: 2,
                of_windows: 3,
                resolve_after: 3,
            },
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
    /// Adaptive baselines.
    #[serde(default)]
    pub baseline: BaselineConfig,
    /// Black-hole signature thresholds.
    #[serde(default)]
    pub black_hole: BlackHoleConfig,
    /// Generic per-signal anomalies.
    #[serde(default)]
    pub anomaly: AnomalyConfig,
    /// Deployment regressions.
    #[serde(default)]
    pub deploy: DeployConfig,
    /// Synchronized bursts.
    #[serde(default)]
    pub storm: StormConfig,
    /// Segmentation policy and fan-in/fan-out.
    #[serde(default)]
    pub segmentation: SegmentationConfig,
    /// Cross-zone traffic.
    #[serde(default)]
    pub cross_zone: CrossZoneConfig,
    /// Root-cause hints.
    #[serde(default)]
    pub root_cause: RootCauseConfig,
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
