//! The `[actuate]` section of the config file: serde in, validated by
//! [`crate::Actuator::try_from`].
//!
//! ```toml
//! [actuate]
//! mode = "dry-run"      # dry-run (the default) | enforce
//! approval = false      # true: enforce-mode commands go out as `proposed` until approved
//!
//! [[actuate.policy]]    # finding → pattern; the first rule matching a finding per pattern acts
//! signature = "black-hole"
//! subject = "*"         # glob on the subject key (`node/payment*`, `pair/web/*`)
//! pattern = "backpressure"
//! rate-fraction = 0.5   # each caller keeps half its baseline rate
//! ttl = "5m"
//!
//! [actuate.rails]
//! max-active = 20
//! max-new-per-minute = 5
//! max-blast-radius = 0.2
//! protected = ["payment", "edge-gateway->auth"]
//!
//! [actuate.signing]
//! key-id = "2026-12"
//! key-file = "/etc/graywatch/command.key"   # or key-env = "GRAYWATCH_COMMAND_KEY"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One policy rule: findings of `signature` whose subject key matches `subject` get
/// `pattern`, with its parameters. Keys a pattern does not use are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyConfig {
    /// A finding signature (`black-hole`, `deploy-regression`, …, `rule`).
    pub signature: schemas::Signature,
    /// With `signature = "rule"`: only this rule's findings. Default: any rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// Glob (`*` any run of characters, `?` one) on the finding's subject key
    /// (`schemas::Subject::key`: `node/<node>`, `pair/<source>/<destination>`,
    /// `version/<service>/<version>`, `zones/<source zone>/<destination zone>/<source>/<destination>`,
    /// `sources/<destination>`). Default `*`. A glob that can match no subject key of the
    /// signature's kinds (`schemas::Signature::subject_kinds`, e.g. `catalog` for a black
    /// hole, whose keys read `node/<service>`) is a config error.
    #[serde(default = "any")]
    pub subject: String,
    /// Only findings whose incident reached at least this severity (`warning`: all,
    /// `critical`). Default: `critical` for `deploy-regression` (a changed call pattern with
    /// no harm yet is a warning, not a reason to take a version out), `warning` for the others.
    #[serde(default)]
    pub min_severity: Option<schemas::Severity>,
    /// The operational pattern.
    pub pattern: schemas::Pattern,
    /// How long a command stays in force unless renewed (event time). Default 5 min.
    #[serde(default = "five_minutes", with = "humantime_serde")]
    pub ttl: Duration,
    /// Backpressure: each caller keeps this fraction of its baseline rate, in (0, 1].
    /// Default 0.5.
    #[serde(default)]
    pub rate_fraction: Option<f64>,
    /// Backpressure: a fixed limit per caller instead, req/s (0.001 to 1e12; not with
    /// `rate-fraction`).
    #[serde(default)]
    pub rate_limit_rps: Option<f64>,
    /// Circuit breaker and segmentation: the HTTP status returned instead (100 to 599).
    /// Defaults 503 and 403.
    #[serde(default)]
    pub status: Option<u16>,
    /// Circuit breaker: only callers with this tier label.
    #[serde(default)]
    pub tier: Option<String>,
    /// Circuit breaker: only requests running longer than this.
    #[serde(default, with = "humantime_serde::option")]
    pub slower_than: Option<Duration>,
    /// Bulkhead: cap the matched traffic at this many requests in flight; absent: deny it.
    #[serde(default)]
    pub max_concurrency: Option<u64>,
    /// Bulkhead: edges never capped or denied (critical fail-over routes).
    #[serde(default)]
    pub allow: Vec<schemas::Edge>,
    /// Quarantine: share of requests the quarantined version keeps, in [0, 1). Default 0.
    #[serde(default)]
    pub weight: Option<f64>,
}

fn any() -> String {
    "*".to_owned()
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

impl PolicyConfig {
    /// A rule with the pattern's defaults.
    pub fn new(signature: schemas::Signature, pattern: schemas::Pattern) -> Self {
        PolicyConfig {
            signature,
            rule: None,
            subject: any(),
            min_severity: None,
            pattern,
            ttl: five_minutes(),
            rate_fraction: None,
            rate_limit_rps: None,
            status: None,
            tier: None,
            slower_than: None,
            max_concurrency: None,
            allow: Vec::new(),
            weight: None,
        }
    }

    /// The policy used when the config gives none: black hole → backpressure on its callers,
    /// synchronized burst → backpressure on the sources, deployment regression → quarantine of
    /// the version (once critical), segmentation violation and fan-in surge (never-seen callers) →
    /// segmentation of the offending edges, cross-zone → bulkhead between the zones. Generic anomalies and user
    /// rules get no command unless a rule asks.
    pub fn defaults() -> Vec<PolicyConfig> {
        use schemas::{Pattern, Signature};
        vec![
            PolicyConfig::new(Signature::BlackHole, Pattern::Backpressure),
            PolicyConfig::new(Signature::SynchronizedBurst, Pattern::Backpressure),
            PolicyConfig::new(Signature::FanInSurge, Pattern::Segmentation),
            PolicyConfig::new(Signature::DeployRegression, Pattern::Quarantine),
            PolicyConfig::new(Signature::SegmentationViolation, Pattern::Segmentation),
            PolicyConfig::new(Signature::CrossZone, Pattern::Bulkhead),
        ]
    }
}

/// Safety rails between the patterns and the outputs (`[actuate.rails]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RailsConfig {
    /// Most commands in force at once (count, >= 1). Default 20.
    pub max_active: usize,
    /// Most new commands per minute of event time (count, >= 1). Default 5.
    pub max_new_per_minute: usize,
    /// Most share of the landscape's requests (in the window that decides) that the
    /// commands in force may match, in (0, 1]. Default 0.2.
    pub max_blast_radius: f64,
    /// Services (`payment`) and edges (`web->payment`) no command may target, globs allowed.
    pub protected: Vec<String>,
}

impl Default for RailsConfig {
    fn default() -> Self {
        RailsConfig {
            max_active: 20,
            max_new_per_minute: 5,
            max_blast_radius: 0.2,
            protected: Vec::new(),
        }
    }
}

/// Where the command signing key is (`[actuate.signing]`): never in the config text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SigningConfig {
    /// Name of the key, written in each command's signature (enforcement points may hold
    /// several while keys rotate).
    pub key_id: Option<String>,
    /// A file holding the key (its bytes, trailing white space ignored; at least 32 bytes).
    pub key_file: Option<PathBuf>,
    /// An environment variable holding the key.
    pub key_env: Option<String>,
}

/// Alerts (trigger/resolve incidents), `[actuate.alerts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertsConfig {
    /// An incident resolves after this many windows in a row without a finding (>= 1).
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ActuateConfig {
    /// `dry-run` (the default: enforcement points only log) or `enforce`.
    pub mode: schemas::Mode,
    /// With `mode = "enforce"`: commands go out as `proposed` and are enforced only once
    /// approved (`graywatch approve ID`). Default false.
    pub approval: bool,
    /// Finding → pattern rules; default [`PolicyConfig::defaults`].
    pub policy: Vec<PolicyConfig>,
    /// Safety rails.
    pub rails: RailsConfig,
    /// The command signing key.
    pub signing: SigningConfig,
    /// Alerts.
    pub alerts: AlertsConfig,
}

impl Default for ActuateConfig {
    fn default() -> Self {
        ActuateConfig {
            mode: schemas::Mode::DryRun,
            approval: false,
            policy: PolicyConfig::defaults(),
            rails: RailsConfig::default(),
            signing: SigningConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use schemas::{Pattern, Signature};

    use super::*;

    #[test]
    fn empty_section_is_all_defaults() {
        let c: ActuateConfig = toml::from_str("").unwrap();
        assert_eq!(c, ActuateConfig::default());
        assert_eq!(c.mode, schemas::Mode::DryRun);
        assert_eq!(c.policy.len(), 6);
        assert_eq!(c.policy[0].signature, Signature::BlackHole);
        assert_eq!(c.policy[0].pattern, Pattern::Backpressure);
        assert_eq!(c.rails.max_active, 20);
    }

    #[test]
    fn a_policy_rule_parses_kebab_case_keys_and_durations() {
        let c: ActuateConfig = toml::from_str(
            "mode = \"enforce\"\n[[policy]]\nsignature = \"latency-shift\"\nsubject = \"pair/*/payment\"\n\
             pattern = \"circuit-breaker\"\nttl = \"1m 30s\"\nslower-than = \"2s\"\ntier = \"batch\"\n",
        )
        .unwrap();
        assert_eq!(c.mode, schemas::Mode::Enforce);
        assert_eq!(c.policy.len(), 1, "a policy given replaces the defaults");
        let p = &c.policy[0];
        assert_eq!(p.pattern, Pattern::CircuitBreaker);
        assert_eq!(p.ttl, Duration::from_secs(90));
        assert_eq!(p.slower_than, Some(Duration::from_secs(2)));
        assert_eq!(p.subject, "pair/*/payment");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = toml::from_str::<ActuateConfig>(
            "[[policy]]\nsignature = \"black-hole\"\npattern = \"backpressure\"\nrate_fraction = 0.5\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rate_fraction"), "{e}");
        let e = toml::from_str::<ActuateConfig>("[backpressure]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backpressure"), "{e}");
    }
}
