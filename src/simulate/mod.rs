//! A synthetic landscape's flow records with one injected incident, and the ground truth of
//! what was injected where and when: what `graywatch simulate` writes, and what
//! `graywatch eval scenarios` scores detection against.
//!
//! ```text
//!  (scenario, seed, start, duration, scale)
//!        │ plan (seed stream 0): onset, the incident's subject, benign deployments
//!        ├──────────────────────────────────────────────▶ Truth (serde JSON)
//!        ▼ engine (seed stream 1), one second of event time at a time
//!  root requests (edge, room clients, log shippers; Poisson, diurnal load, slow swings)
//!        │ each request's calls through the fixed call graph (landscape)
//!        ▼
//!  FlowRecords, in start-time order ──▶ format: flow-json | envoy (JSON) | istio lines
//! ```
//!
//! The landscape ([`landscape`]) has 42 services in tiers (edge, front ends, APIs, business
//! services, shared stores, a log sink and three segments of room clients and relays), three
//! zones and two versions per service. Every record is one call as the caller's sidecar saw
//! it: start, duration (the callee's own lognormal time, p99/p50 between 5 and 20, plus the
//! calls it makes in turn, plus the network), status and Envoy response flags, bytes both
//! ways, the pod address, the request id shared by every call of one user request, and the
//! zone and version of both ends. Load follows a day (±45 % around the mean, lowest at 04:00
//! UTC), slow random swings per zone and per client (a few minutes to tens of minutes), and
//! Poisson noise; services slow down as their load nears their capacity; a few in a thousand
//! calls fail by themselves and failures of required calls propagate to the caller; 2 to 4
//! benign deployments per run change versions and nothing else.
//!
//! Scenarios ([`Scenario`]): `clean` (24 h, no incident) and five incidents, each starting
//! after a warm-up of half the run (60 to 75 min into the default 2 h):
//!
//! | scenario | what happens | truth subject |
//! |---|---|---|
//! | `black-hole` | a business service keeps receiving requests but answers none (its callers time out, `504 UT`, or see resets, `503 UC`) and calls none of its dependencies | `Node` |
//! | `deploy-fanout` | a new version calls `cache` 3–5× per request instead of once, stops calling one destination or starts calling a new one; the cache slows, latency rises in its callers | `Version` (the new one) |
//! | `logging-storm` | the log sink fails for 3–6 min; sources that buffer then flush at once, their rates to the sink several times their usual in the same windows | `Sources` (sink, the flushing sources) |
//! | `segmentation-dos` | one or two clients of one room call another room's relays at 40× their usual rate; the relays overflow | `Sources` (the room, the clients) |
//! | `cross-zone` | 40–70 % of one pair's calls from one zone go to another zone | `ZonePair` |
//!
//! Deterministic: the same configuration gives the same records, byte for byte (the seed
//! drives a ChaCha8 stream; `f64` functions are the platform's, so two platforms could differ
//! in the last bit of a rare value). No I/O: [`Simulation`] is an iterator of
//! [`schemas::FlowRecord`]s; [`format`](mod@format) writes them as lines into a buffer.
//!
//! ```
//! use graywatch::simulate::{Scenario, Simulation, SimulationConfig};
//! let mut config = SimulationConfig::new(Scenario::BlackHole, 7);
//! config.duration_us = 20 * 60 * 1_000_000; // 20 min
//! config.scale = 0.05;
//! let sim = Simulation::new(config)?;
//! let truth = sim.truth().clone();
//! let onset = truth.incidents[0].onset_us;
//! assert!(onset >= truth.start_us + 10 * 60 * 1_000_000);
//! let records: Vec<_> = sim.collect();
//! assert!(records.windows(2).all(|w| w[0].start_us <= w[1].start_us));
//! # Ok::<(), graywatch::simulate::SimulateError>(())
//! ```

mod engine;
pub mod format;
pub mod landscape;
mod plan;
mod rng;
pub mod truth;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use format::OutputFormat;
pub use landscape::Landscape;
pub use truth::{BenignChange, Incident, Injected, Truth, TruthKind};

/// One µs-second.
const SECOND_US: i64 = 1_000_000;

/// What a simulation injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// No incident: 24 h of a healthy landscape with benign deployments.
    Clean,
    /// A service answers nothing and calls nothing (signature `black-hole`).
    BlackHole,
    /// A new version multiplies its calls to the cache (signature `deploy-regression`).
    DeployFanout,
    /// The log sink fails, then every buffering source flushes at once (signature
    /// `synchronized-burst`).
    LoggingStorm,
    /// Clients of one room flood another room's relays (signature `segmentation-violation`).
    SegmentationDos,
    /// A large share of one pair's calls crosses zones (signature `cross-zone`).
    CrossZone,
}

impl Scenario {
    /// Every scenario, `clean` first.
    pub const ALL: [Scenario; 6] = [
        Scenario::Clean,
        Scenario::BlackHole,
        Scenario::DeployFanout,
        Scenario::LoggingStorm,
        Scenario::SegmentationDos,
        Scenario::CrossZone,
    ];

    /// The name on the command line and in the truth file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Clean => "clean",
            Scenario::BlackHole => "black-hole",
            Scenario::DeployFanout => "deploy-fanout",
            Scenario::LoggingStorm => "logging-storm",
            Scenario::SegmentationDos => "segmentation-dos",
            Scenario::CrossZone => "cross-zone",
        }
    }

    /// The default duration, µs: 24 h for `clean`, 2 h for an incident.
    pub fn default_duration_us(self) -> i64 {
        match self {
            Scenario::Clean => 24 * 3600 * SECOND_US,
            _ => 2 * 3600 * SECOND_US,
        }
    }

    /// The shortest duration accepted, µs: 10 min for an incident (5 min of warm-up), 1 s
    /// for `clean`.
    pub fn min_duration_us(self) -> i64 {
        match self {
            Scenario::Clean => SECOND_US,
            _ => 10 * 60 * SECOND_US,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = SimulateError;

    fn from_str(s: &str) -> Result<Self, SimulateError> {
        Scenario::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| SimulateError::UnknownScenario(s.to_owned()))
    }
}

/// Why a simulation could not be set up (all the caller's input).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimulateError {
    /// A scenario name that is not one of [`Scenario::ALL`].
    #[error(
        "unknown scenario {0:?} (expected clean, black-hole, deploy-fanout, logging-storm, segmentation-dos or cross-zone)"
    )]
    UnknownScenario(String),
    /// A scale that is not a finite number in (0, 1000].
    #[error("scale {0} out of range: expected a number > 0 and <= 1000")]
    Scale(f64),
    /// A duration below the scenario's minimum ([`Scenario::min_duration_us`]).
    #[error(
        "duration {} s too short for {scenario}: at least {} s",
        *duration_us as f64 / 1e6,
        min_us / 1_000_000
    )]
    TooShort {
        /// The scenario.
        scenario: Scenario,
        /// The duration asked for, µs.
        duration_us: i64,
        /// The minimum, µs.
        min_us: i64,
    },
    /// A start before the Unix epoch, or a run ending past year 9999.
    #[error("start {0} µs out of range: the run must lie between 1970 and 9999")]
    Start(i64),
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// Seed of every random choice: the incident's subject and onset, the deployments, every
    /// record.
    pub seed: u64,
    /// Start of event time, µs since the Unix epoch.
    pub start_us: i64,
    /// Length of event time, µs.
    pub duration_us: i64,
    /// Multiplies every rate (1: about 150 records/s averaged over a day, 90 at 04:00 UTC and
    /// 210 at 16:00).
    pub scale: f64,
}

impl SimulationConfig {
    /// Start of event time unless told otherwise: 2026-01-05T00:00:00Z (a Monday), µs.
    pub const DEFAULT_START_US: i64 = 1_767_571_200 * SECOND_US;

    /// The defaults for `scenario`: [`Self::DEFAULT_START_US`], the scenario's default
    /// duration, scale 1.
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        SimulationConfig {
            scenario,
            seed,
            start_us: Self::DEFAULT_START_US,
            duration_us: scenario.default_duration_us(),
            scale: 1.0,
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`SimulateError::Scale`], [`SimulateError::TooShort`], [`SimulateError::Start`].
    pub fn validate(&self) -> Result<(), SimulateError> {
        if !(self.scale.is_finite() && self.scale > 0.0 && self.scale <= 1000.0) {
            return Err(SimulateError::Scale(self.scale));
        }
        let min_us = self.scenario.min_duration_us();
        if self.duration_us < min_us {
            return Err(SimulateError::TooShort {
                scenario: self.scenario,
                duration_us: self.duration_us,
                min_us,
            });
        }
        // 9999-12-31T23:59:59Z
        const LAST_US: i64 = 253_402_300_799 * SECOND_US;
        if self.start_us < 0 || self.start_us > LAST_US - self.duration_us {
            return Err(SimulateError::Start(self.start_us));
        }
        Ok(())
    }
}

/// A simulation run: the [`Truth`] of what it injects, and an iterator of its flow records
/// in start-time order (ties in the order the calls were made).
pub struct Simulation {
    truth: Truth,
    engine: engine::Engine,
}

impl Simulation {
    /// Plans the run.
    ///
    /// # Errors
    /// The configuration is out of range ([`SimulationConfig::validate`]).
    pub fn new(config: SimulationConfig) -> Result<Self, SimulateError> {
        config.validate()?;
        let mut landscape = Landscape::new();
        let plan = plan::Plan::new(&config, &mut landscape);
        let truth = plan.truth(&config, &landscape);
        Ok(Simulation {
            truth,
            engine: engine::Engine::new(config, landscape, plan),
        })
    }

    /// What the run injects.
    pub fn truth(&self) -> &Truth {
        &self.truth
    }

    /// Seconds of event time simulated so far (for progress).
    pub fn simulated_seconds(&self) -> i64 {
        self.engine.seconds_done()
    }
}

impl Iterator for Simulation {
    type Item = schemas::FlowRecord;

    fn next(&mut self) -> Option<schemas::FlowRecord> {
        self.engine.next_record()
    }
}

#[cfg(test)]
mod tests;
