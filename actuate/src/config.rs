//! The actuate section of the config file: serde in, validated by [`crate::Actuator::try_from`].
//!
//! ```toml
//! [actuate.backpressure]
//! rate-fraction = 0.5   # each caller keeps half of its baseline rate to a black-holed node
//! ttl = "5m"            # commands expire 5 minutes (event time) after they are issued
//! mode = "dry-run"      # or "enforce"
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The backpressure pattern: rate-limit the callers of a node that swallows requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackpressureConfig {
    /// Each caller is limited to this fraction of its baseline rate to the node (its current
    /// rate when it has no baseline yet), a ratio in (0, 1]. Default 0.5.
    pub rate_fraction: f64,
    /// How long a command stays in force after it is issued, event time, written like `"5m"`,
    /// `"90s"` (humantime). Must be > 0. Default 5 minutes.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// `dry-run` (enforcement points only log what they would do) or `enforce`. Default
    /// `dry-run`: nothing changes until an operator opts in.
    pub mode: schemas::Mode,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        BackpressureConfig {
            rate_fraction: 0.5,
            ttl: Duration::from_secs(5 * 60),
            mode: schemas::Mode::DryRun,
        }
    }
}

/// When alerts resolve (`[actuate.alerts]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertsConfig {
    /// An open incident resolves after this many closed windows in a row without a finding
    /// for it (count, >= 1). One quiet window is weak evidence: the node may merely not have
    /// been judged (too little inflow, callers backing off) or the input may have ended.
    /// Default 3.
    pub resolve_after_windows: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            resolve_after_windows: 3,
        }
    }
}

/// The whole `[actuate]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ActuateConfig {
    /// The backpressure pattern (issued on black-hole findings).
    #[serde(default)]
    pub backpressure: BackpressureConfig,
    /// When alerts resolve.
    #[serde(default)]
    pub alerts: AlertsConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_is_all_defaults() {
        let c: ActuateConfig = toml::from_str("").unwrap();
        assert_eq!(c, ActuateConfig::default());
        assert_eq!(c.backpressure.rate_fraction, 0.5);
        assert_eq!(c.backpressure.ttl, Duration::from_secs(300));
        assert_eq!(c.backpressure.mode, schemas::Mode::DryRun);
    }

    #[test]
    fn parses_kebab_case_keys_and_humantime_durations() {
        let c: ActuateConfig = toml::from_str(
            "[backpressure]\nrate-fraction = 0.25\nttl = \"1m 30s\"\nmode = \"enforce\"\n",
        )
        .unwrap();
        assert_eq!(c.backpressure.rate_fraction, 0.25);
        assert_eq!(c.backpressure.ttl, Duration::from_secs(90));
        assert_eq!(c.backpressure.mode, schemas::Mode::Enforce);
        // A partial section keeps the other defaults.
        let c: ActuateConfig = toml::from_str("[backpressure]\nttl = \"10s\"\n").unwrap();
        assert_eq!(c.backpressure.rate_fraction, 0.5);
        assert_eq!(c.backpressure.ttl, Duration::from_secs(10));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = toml::from_str::<ActuateConfig>("[backpressure]\nrate_fraction = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rate_fraction"), "{e}");
        let e = toml::from_str::<ActuateConfig>("[circuit-breaker]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("circuit-breaker"), "{e}");
        let e = toml::from_str::<ActuateConfig>("[backpressure]\nttl = \"5 parsecs\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ttl"), "{e}");
    }

    #[test]
    fn round_trips_through_toml() {
        let c = ActuateConfig {
            backpressure: BackpressureConfig {
                rate_fraction: 0.75,
                ttl: Duration::from_secs(120),
                mode: schemas::Mode::Enforce,
            },
            alerts: AlertsConfig {
                resolve_after_windows: 5,
            },
        };
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("ttl = \"2m\""), "{text}");
        assert_eq!(toml::from_str::<ActuateConfig>(&text).unwrap(), c);
    }
}
