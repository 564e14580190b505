//! Operational patterns: each turns findings into remediation commands for enforcement points.
//!
//! Only backpressure exists so far; circuit breaker, bulkhead, segmentation and quarantine
//! follow the same shape (validated config, plain-data state, `on_window(now_us, findings)`).

pub mod backpressure;
