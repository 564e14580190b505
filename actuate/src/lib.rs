//! graywatch actuation: findings become remediation commands (operational patterns) and
//! alerts (trigger/resolve incidents).
//!
//! ```text
//!   detect ──(closed window, its findings)──▶ Actuator::on_window ──▶ Actions
//!                                               │                     ├─ commands: Vec<RemediationCommand>
//!                                               ├─ patterns::backpressure   (→ enforcement points)
//!                                               └─ alerts                   └─ alerts: Vec<Alert>
//!                                                                              (→ pager systems)
//! ```
//!
//! The [`Actuator`] is called once per closed window, in window order, with that window's
//! findings. Time is the window's end (event time): there are no clocks here, so a replay of
//! the same input gives the same commands and alerts, ids included. What it remembers between
//! windows (commands in force, open incidents) is plain data, [`ActuatorState`], to be
//! checkpointed with the input offsets.
//!
//! - [`patterns::backpressure`]: a black-hole finding on a node limits each of its callers to a
//!   fraction of its baseline rate, for a TTL; one command per node while it is in force.
//! - [`alerts`]: the first finding of a signature and subject triggers an incident, the first
//!   window without one resolves it (dedup key [`dedup_key`]).
//!
//! This crate does no I/O yet: the caller writes [`Actions`] where it likes (the `graywatch`
//! binary prints JSON lines). Sinks to Kafka, PagerDuty, Alertmanager and webhooks, and the
//! other patterns, come in a later issue.
//!
//! ```
//! use actuate::{ActuateConfig, Actuator};
//! use schemas::{AlertAction, Caller, Finding, Severity, Signature, Subject, Window};
//!
//! let mut actuator = Actuator::try_from(ActuateConfig::default()).unwrap(); // 0.5, 5m, dry-run
//! let window = Window { start_us: 1_674_982_200_000_000, end_us: 1_674_982_210_000_000 };
//! let finding = Finding {
//!     schema_version: schemas::SCHEMA_VERSION,
//!     kind: "finding".into(),
//!     id: "black-hole/node/catalog/1674982200000000".into(),
//!     signature: Signature::BlackHole,
//!     subject: Subject::Node { node: "catalog".into() },
//!     window,
//!     severity: Severity::Critical,
//!     evidence: vec![],
//!     callers: vec![Caller { service: "frontend".into(), rate_rps: 120.0, baseline_rate_rps: 118.5 }],
//!     summary: "catalog answers nothing".into(),
//!     score: 0.999,
//!     confidence: schemas::Confidence::Normal,
//!     related: vec![],
//!     rule: None,
//! };
//! let actions = actuator.on_window(window, &[finding]);
//! let command = &actions.commands[0];
//! assert_eq!(command.id, "backpressure/catalog/1674982210000000");
//! assert_eq!(command.parameters["rate_limit_rps.frontend"], 59.25); // 0.5 × 118.5 req/s
//! assert_eq!(command.expires_at_us, 1_674_982_510_000_000); // + 5 min
//! assert_eq!(actions.alerts[0].action, AlertAction::Trigger);
//! assert_eq!(actions.alerts[0].dedup_key, "black-hole/node/catalog");
//!
//! // Three windows without a finding (the default `resolve-after-windows`): the incident
//! // resolves in the third; the command stays in force until it expires.
//! let mut end = window.end_us;
//! let mut quiet = || {
//!     end += 10_000_000;
//!     actuator.on_window(Window { start_us: end - 10_000_000, end_us: end }, &[])
//! };
//! assert!(quiet().is_empty() && quiet().is_empty());
//! let actions = quiet();
//! assert!(actions.commands.is_empty());
//! assert_eq!(actions.alerts[0].action, AlertAction::Resolve);
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod alerts;
pub mod config;
mod error;
pub mod patterns;

use serde::{Deserialize, Serialize};

pub use alerts::{AlertState, Alerts, Incident, dedup_key, finding_dedup_key};
pub use config::{ActuateConfig, AlertsConfig, BackpressureConfig};
pub use error::{Error, Result};
pub use patterns::backpressure::{Backpressure, BackpressureState};

/// What one window asks for: commands for enforcement points and alerts for pager systems.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    /// Remediation commands, in pattern then destination order.
    pub commands: Vec<schemas::RemediationCommand>,
    /// Alerts: triggers in finding order, then resolves in dedup-key order.
    pub alerts: Vec<schemas::Alert>,
}

impl Actions {
    /// True when the window asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.alerts.is_empty()
    }
}

/// Turns each closed window's findings into [`Actions`]; built from a validated
/// [`ActuateConfig`].
#[derive(Debug, Clone)]
pub struct Actuator {
    backpressure: Backpressure,
    alerts: Alerts,
}

/// Everything an [`Actuator`] remembers between windows, to checkpoint and restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorState {
    /// Backpressure commands in force.
    pub backpressure: BackpressureState,
    /// Open incidents.
    pub alerts: AlertState,
}

impl TryFrom<ActuateConfig> for Actuator {
    type Error = Error;

    /// Validates the config: `backpressure.rate-fraction` in (0, 1], `backpressure.ttl` > 0,
    /// `alerts.resolve-after-windows` >= 1.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first offending key.
    fn try_from(config: ActuateConfig) -> Result<Self> {
        if config.alerts.resolve_after_windows == 0 {
            return Err(Error::Config {
                key: "alerts.resolve-after-windows",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        Ok(Actuator {
            backpressure: Backpressure::try_from(config.backpressure)?,
            alerts: Alerts::new(config.alerts.resolve_after_windows),
        })
    }
}

impl Actuator {
    /// Called once per closed window, in window order, with that window's findings (possibly
    /// none). Commands are issued and alerts raised at `window.end_us` (event time).
    pub fn on_window(&mut self, window: schemas::Window, findings: &[schemas::Finding]) -> Actions {
        let now_us = window.end_us;
        Actions {
            commands: self.backpressure.on_window(now_us, findings),
            alerts: self.alerts.on_window(now_us, findings),
        }
    }

    /// A copy of the state, to checkpoint.
    pub fn state(&self) -> ActuatorState {
        ActuatorState {
            backpressure: self.backpressure.state().clone(),
            alerts: self.alerts.state().clone(),
        }
    }

    /// Replaces the state with a checkpointed one (the config stays as built).
    pub fn restore(&mut self, state: ActuatorState) {
        self.backpressure.restore(state.backpressure);
        self.alerts.restore(state.alerts);
    }
}

#[cfg(test)]
mod tests;
