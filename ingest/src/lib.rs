//! graywatch's ingest stage: sources and parsers that turn the access logs proxies already
//! write (Envoy, Istio, NGINX) and trace spans into flow-record Arrow batches.
//!
//! ```text
//!  file / stdin / Kafka ──lines──▶ LineReader ──▶ LineParser (envoy | istio | nginx | spans)
//!                                      │                    │ Mapping: who is on each end
//!                                      ▼                    ▼
//!                              rejects (counted,     FlowBatchBuilder ──▶ RecordBatch ──▶ detect
//!                              with file:line)
//! ```
//!
//! Main types: [`Format`] (what `--format` names), [`LineParser`] (one per format),
//! [`Mapping`] (log fields → services), [`LineReader`] / [`IngestSink`] (the driver).
//!
//! ```
//! use ingest::{Format, Mapping};
//! use schemas::{FlowBatchBuilder, flow_records};
//! let mut parser = "envoy".parse::<Format>()?.parser(&Mapping::default())?;
//! let mut out = FlowBatchBuilder::new();
//! let line = br#"[2019-02-12T18:37:42.921Z] "GET /httpbin/ip HTTP/1.1" 200 - 0 43 217 216 "172.17.0.5" "curl/7.59.0" "c62ec130-6dee-4f3b-a52b-4f0d1312d89d" "httpbin.org" "52.87.35.92:80""#;
//! parser.parse_line(line, &mut out).unwrap();
//! let record = &flow_records(&out.finish())?[0];
//! assert_eq!(record.duration_us, Some(217_000));
//! assert_eq!(record.destination, "httpbin.org");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod envoy;
pub mod error;
pub mod flow_json;
pub mod format;
pub mod istio;
mod json_scan;
pub mod mapping;
pub mod nginx;
pub mod parallel;
pub mod source;
pub mod spans;
mod swar;
pub mod time;
pub mod writer;

pub use error::{Error, Reject, RejectReason, Result, check_name, check_names};
pub use format::Format;
pub use mapping::{Mapping, MappingConfig};
pub use source::{
    IngestSink, IngestStats, LineParser, LineReader, ReadError, ReadStatus, ReaderOptions,
    RejectedLine, read_lines,
};
pub use writer::{WriterConfig, WriterParser};
