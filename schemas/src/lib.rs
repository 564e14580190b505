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
pub mod window;

pub use command::{Alert, AlertAction, Mode, Pattern, RemediationCommand, Target};
pub use finding::{Caller, Evidence, Finding, Severity, Signature, Subject};
pub use flow::{
    DroppedValues, FlowBatchBuilder, FlowColumns, FlowRecord, FlowRecordRef, Reporter,
    UpstreamAttempt, UpstreamAttemptRef, flow_record_schema, flow_records,
};
pub use window::{Latency, NodeWindow, PairWindow, Window};

/// Version of every JSON document graywatch writes (`schema_version` field). Bumped on any
/// incompatible change; readers reject versions they don't know.
pub const SCHEMA_VERSION: u32 = 1;

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
