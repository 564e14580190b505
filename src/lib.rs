//! graywatch: mission control for microservice landscapes. This library is the runtime that the
//! `graywatch` binary drives: the pipeline of stages ([`pipeline`]), its config ([`config`]),
//! and its two drivers, [`replay`] (files and stdin) and [`kafka`] (`graywatch run`); and
//! [`simulate`], a synthetic landscape with injected incidents and their ground truth.
//!
//! ```text
//!  schemas ◀── ingest, detect, actuate ◀── graywatch (this crate: runtime + drivers) ◀── main
//! ```
//!
//! Replaying a few log lines through the whole pipeline, in process:
//!
//! ```
//! use graywatch::pipeline::{Aggregate, FlowBatch, InputId, Judge, Ownership, Pipeline, Stage};
//! # use graywatch::pipeline::{DeadLetter, Outputs};
//! # #[derive(Default)] struct Count { pairs: Vec<schemas::PairWindow> }
//! # impl Outputs for Count {
//! #     type Error = std::convert::Infallible;
//! #     fn pair_window(&mut self, w: &schemas::PairWindow) -> Result<(), Self::Error> { self.pairs.push(w.clone()); Ok(()) }
//! #     fn node_window(&mut self, _: &schemas::NodeWindow) -> Result<(), Self::Error> { Ok(()) }
//! #     fn finding(&mut self, _: &schemas::Finding) -> Result<(), Self::Error> { Ok(()) }
//! #     fn command(&mut self, _: &schemas::RemediationCommand) -> Result<(), Self::Error> { Ok(()) }
//! #     fn alert(&mut self, _: &schemas::Alert) -> Result<(), Self::Error> { Ok(()) }
//! #     fn audit(&mut self, _: &schemas::AuditRecord) -> Result<(), Self::Error> { Ok(()) }
//! #     fn dead_letter(&mut self, _: &DeadLetter<'_>) -> Result<(), Self::Error> { Ok(()) }
//! #     fn flush(&mut self) -> Result<(), Self::Error> { Ok(()) }
//! # }
//! let config = graywatch::config::Config::default().validate(None)?;
//! let mut pipeline = Pipeline {
//!     aggregate: Aggregate::new(config.window, i64::MAX),
//!     judge: Judge::new(config.window, config.suite, config.actuator, Ownership::All, true),
//! };
//! let mut out = Count::default(); // any `Outputs`: JSON lines, Kafka topics
//! let input = InputId::new("access.log");
//! Stage::<Count>::add_input(&mut pipeline, &input, None)?;
//! let mut b = schemas::FlowBatchBuilder::new();
//! let mut r = schemas::FlowRecordRef::new(1_700_000_000_000_000, "frontend", "catalog", schemas::Reporter::Envoy);
//! r.duration_us = Some(4_000);
//! b.append(&r);
//! pipeline.process(&input, FlowBatch { batch: &b.finish(), positions: None }, &mut out)?;
//! pipeline.remove_input(&input, graywatch::pipeline::Removal::Ended, &mut out)?; // end of file
//! assert_eq!(out.pairs[0].requests, 1);
//! assert_eq!(out.pairs[0].latency.unwrap().max_us, 4_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
// allowed in two functions only: `replay`'s memory map of a file (`replay::input`)
#![deny(unsafe_code)]

pub mod alerting;
pub mod archive;
pub mod config;
pub mod enforce;
pub mod eval;
pub mod golden;
pub mod kafka;
pub mod pipeline;
pub mod replay;
pub mod report;
pub mod rules;
pub mod simulate;

/// Records may start at most this far ahead of the machine's clock, µs (one day): a record
/// further ahead is set aside as `future` rather than moving its input's watermark.
pub const NOT_AFTER_MARGIN_US: i64 = 86_400_000_000;

/// The machine's clock plus [`NOT_AFTER_MARGIN_US`], µs since the epoch: the event-time bound
/// the drivers give stage 1 (they read the clock; stages don't).
pub fn not_after_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| {
            i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
        })
        .saturating_add(NOT_AFTER_MARGIN_US)
}
