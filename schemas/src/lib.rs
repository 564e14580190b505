//! graywatch's data contracts: the flow record, window aggregates, findings, remediation
//! commands and alerts.
//!
//! ```text
//! proxies' logs ─▶ ingest ──[flow-record RecordBatch]──▶ detect ──[PairWindow, NodeWindow,
//!                                                           Finding]──▶ actuate ──▶ RemediationCommand, Alert
//!                  └──────────────── all of them speak the types in this crate ───────────────┘
//! ```
//!
//! Between stages the unit of data is an Arrow [`RecordBatch`](arrow::array::RecordBatch) in
//! [`flow_record_schema`]; at the edges (JSON lines, Kafka topics) each type here is a serde
//! document with a `schema_version`, described by a JSON Schema in `schemas/json/`.
//!
//! ```
//! use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter, flow_records};
//! let mut b = FlowBatchBuilder::new();
//! let mut r = FlowRecordRef::new(1_700_000_000_000_000, "frontend", "catalog", Reporter::Envoy);
//! r.duration_us = Some(4_000);
//! r.status = Some(200);
//! b.append(&r);
//! let batch = b.finish();
//! assert_eq!(flow_records(&batch).unwrap()[0].duration_us, Some(4_000));
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod command;
mod dict;
pub mod finding;
pub mod flow;
pub mod time;
pub mod window;

pub use command::{
    Alert, AlertAction, AuditRecord, BackpressureParameters, BulkheadParameters,
    CircuitBreakerParameters, CommandAction, CommandSignature, Decision, Edge, Mode, Parameters,
    Pattern, QuarantineParameters, Reason, RemediationCommand, SegmentationParameters, Target,
    canonical_json,
};
pub use dict::short_eq;
pub use finding::{
    COLLAPSED_CALLERS, Caller, Confidence, Evidence, Finding, Related, Severity, Signature, Subject,
};
pub use flow::{
    DroppedValues, FlowBatchBuilder, FlowColumns, FlowRecord, FlowRecordRef, Reporter,
    UpstreamAttempt, UpstreamAttemptRef, bad_name, first_control_char, flow_record_schema,
    flow_records,
};
pub use window::{Breakdown, Latency, NodeWindow, PairWindow, Window};

/// Version of every JSON document graywatch writes (`schema_version` field). Bumped on any
/// incompatible change; readers reject versions they don't know.
pub const SCHEMA_VERSION: u32 = 1;

/// The destination of a request that reached no service: the proxy found no route (`NR`),
/// no cluster (`NC`), or logged no upstream host nor cluster, so it answered the request
/// itself (a 404, a direct response, a local reply). The parsers name it so instead of the
/// service the client named in its `Host`/`:authority` (which the client chooses): such a
/// request is not that service's inflow. Pairs `<proxy> → (unrouted)` keep those requests and
/// their errors visible for the caller; node detection never judges `(unrouted)` (no baseline,
/// no finding, no command), and its requests are not counted as the caller's downstream calls.
/// The parentheses make it a name no Kubernetes service or DNS host can have.
pub const UNROUTED: &str = "(unrouted)";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A batch or document does not match the schema (the producer's fault; retrying won't help).
    #[error("schema mismatch: {0}")]
    Schema(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
