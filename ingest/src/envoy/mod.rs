//! Envoy access logs: the default text format and JSON formats.

use schemas::FlowBatchBuilder;

use crate::error::{Reject, RejectReason};
use crate::mapping::Mapping;
use crate::source::LineParser;

/// Envoy default text format parser (stub, being written).
#[derive(Debug)]
pub struct EnvoyTextParser {
    #[allow(dead_code)]
    mapping: Mapping,
}

impl EnvoyTextParser {
    /// A parser using `mapping` to name services.
    pub fn new(mapping: Mapping) -> Self {
        EnvoyTextParser { mapping }
    }
}

impl LineParser for EnvoyTextParser {
    fn parse_line(&mut self, _line: &[u8], _out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        Err(Reject::new(
            RejectReason::Malformed,
            "envoy parser not written yet",
        ))
    }
}

/// Envoy JSON format parser (stub, being written).
#[derive(Debug)]
pub struct EnvoyJsonParser {
    #[allow(dead_code)]
    mapping: Mapping,
}

impl EnvoyJsonParser {
    /// A parser using `mapping` to name services.
    pub fn new(mapping: Mapping) -> Self {
        EnvoyJsonParser { mapping }
    }
}

impl LineParser for EnvoyJsonParser {
    fn parse_line(&mut self, _line: &[u8], _out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        Err(Reject::new(
            RejectReason::Malformed,
            "envoy-json parser not written yet",
        ))
    }
}
