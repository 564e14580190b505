//! The ground truth of a simulation: what was injected, where and when, and the benign
//! changes that should produce no finding. Its JSON form is `schemas/json/truth.schema.json`.
//!
//! ```json
//! {"kind":"truth","schema_version":1,"scenario":"black-hole","seed":7,
//!  "start_us":1767571200000000,"end_us":1767578400000000,"scale":1.0,
//!  "incidents":[{"signature":"black-hole","subject":{"kind":"node","node":"pricing"},
//!    "onset_us":1767575100000000,"end_us":1767576000000000,"description":"…",
//!    "injected":{"kind":"black-hole","mode":"hang","callers":["cart-api","catalog-api"]}}],
//!  "benign":[{"kind":"deployment","service":"reviews","from_version":"v2.0.4",
//!    "to_version":"v2.1.0","start_us":…,"end_us":…}],
//!  "landscape":{…}}
//! ```

use schemas::{Signature, Subject};
use serde::{Deserialize, Serialize};

use super::Scenario;

/// Version of the truth document's schema.
pub const TRUTH_VERSION: u32 = 1;

/// What a simulation injected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Truth {
    /// The document type, always [`TruthKind::Truth`] (`"truth"`).
    pub kind: TruthKind,
    /// [`TRUTH_VERSION`].
    pub schema_version: u32,
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// Start of event time, µs since the Unix epoch.
    pub start_us: i64,
    /// End of event time (exclusive: every record starts before it), µs.
    pub end_us: i64,
    /// The rate multiplier.
    pub scale: f64,
    /// The injected incidents (none for `clean`).
    pub incidents: Vec<Incident>,
    /// Changes that must produce no finding.
    pub benign: Vec<BenignChange>,
    /// Facts of the landscape a detector's policy needs (segments, zones, fail-over).
    pub landscape: LandscapeFacts,
}

impl Truth {
    /// The run's deploy history, by start: the incident's deployment (and its rollback) and
    /// the benign ones, as a CD system would report them (what `[detect.deploy] events`
    /// reads).
    pub fn deployments(&self) -> Vec<detect::signatures::deploy::DeploymentEvent> {
        use detect::signatures::deploy::DeploymentEvent;
        let mut v = Vec::new();
        for i in &self.incidents {
            if let (
                Subject::Version { service, version },
                Injected::DeployFanout {
                    from_version,
                    rollback_us,
                    ..
                },
            ) = (&i.subject, &i.injected)
            {
                v.push(DeploymentEvent {
                    service: service.clone(),
                    version: version.clone(),
                    at_us: i.onset_us,
                    previous_version: Some(from_version.clone()),
                });
                v.push(DeploymentEvent {
                    service: service.clone(),
                    version: from_version.clone(),
                    at_us: *rollback_us,
                    previous_version: Some(version.clone()),
                });
            }
        }
        for BenignChange::Deployment {
            service,
            from_version,
            to_version,
            start_us,
            ..
        } in &self.benign
        {
            v.push(DeploymentEvent {
                service: service.clone(),
                version: to_version.clone(),
                at_us: *start_us,
                previous_version: Some(from_version.clone()),
            });
        }
        v.sort_by_key(|e| e.at_us);
        v
    }
}

/// The `kind` of a truth document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TruthKind {
    /// `"truth"`.
    #[default]
    Truth,
}

/// One injected incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// The signature that should find it.
    pub signature: Signature,
    /// What a finding should name.
    pub subject: Subject,
    /// When the cause starts, µs since the Unix epoch.
    pub onset_us: i64,
    /// When the cause ends (exclusive), µs; after it the landscape recovers.
    pub end_us: i64,
    /// One sentence for people.
    pub description: String,
    /// The injection's parameters.
    pub injected: Injected,
}

/// The parameters of an injection, by scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Injected {
    /// `black-hole`.
    BlackHole {
        /// `hang` (callers time out: `504`, flag `UT`, after their timeout) or `reset`
        /// (callers see the connection reset: `503`, flag `UC`).
        mode: String,
        /// The services that call it, sorted.
        callers: Vec<String>,
        /// The services it stops calling, sorted.
        dependencies: Vec<String>,
    },
    /// `deploy-fanout`.
    DeployFanout {
        /// The version before.
        from_version: String,
        /// The shared dependency called more often.
        shared: String,
        /// Calls to it per request before.
        calls_before: f64,
        /// Calls to it per request by the new version.
        calls_after: f64,
        /// Destinations the new version calls and the old one did not.
        added: Vec<String>,
        /// Destinations the old version called and the new one does not.
        removed: Vec<String>,
        /// When every zone runs the new version, µs.
        rollout_end_us: i64,
        /// When the rollback starts (the new version's share falls back to 0 by `end_us`), µs.
        rollback_us: i64,
    },
    /// `logging-storm`.
    LoggingStorm {
        /// When the sink answers again and the flush starts, µs.
        recovery_us: i64,
        /// Sources that do not buffer (they keep sending at their usual rate), sorted.
        not_buffering: Vec<String>,
        /// Length of each source's flush, µs (each instance ±20 %, starting within 4 s).
        flush_us: i64,
    },
    /// `segmentation-dos`.
    SegmentationDos {
        /// The offending clients' segment.
        from_segment: String,
        /// The relays attacked, sorted.
        relays: Vec<String>,
        /// Requests per second each offending client sends to the other room (at this scale).
        rate_rps: f64,
        /// Its usual requests per second at mean load (at this scale).
        usual_rps: f64,
    },
    /// `cross-zone`.
    CrossZone {
        /// Share of the pair's calls from the source zone sent to the other zone.
        share: f64,
    },
}

/// A change that is not an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BenignChange {
    /// A rolling deployment that changes the version and nothing else. Zones update one after
    /// the other between `start_us` and `end_us`, each zone's share of the new version rising
    /// linearly over its third of the interval.
    Deployment {
        /// The service.
        service: String,
        /// The version before.
        from_version: String,
        /// The version after.
        to_version: String,
        /// Start of the rollout, µs.
        start_us: i64,
        /// End of the rollout, µs.
        end_us: i64,
    },
}

/// The landscape's facts a policy needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandscapeFacts {
    /// Every service, in call order.
    pub services: Vec<String>,
    /// The zones.
    pub zones: Vec<String>,
    /// The segments: name (`room1`) and member services (the `room1-` prefix).
    pub segments: Vec<Segment>,
    /// The log sink.
    pub sink: String,
    /// The cross-zone calls allowed, with their usual share.
    pub fail_over: Vec<FailOver>,
}

/// One segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Its name, the prefix of its services' names (without the `-`).
    pub name: String,
    /// Its services.
    pub services: Vec<String>,
}

/// One allowed cross-zone route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailOver {
    /// Calling service.
    pub source: String,
    /// Called service.
    pub destination: String,
    /// The caller's zone.
    pub source_zone: String,
    /// The zone its calls may go to.
    pub destination_zone: String,
    /// The share of the pair's calls from `source_zone` that go there.
    pub share: f64,
}
