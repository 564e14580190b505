//! Istio sidecar access logs (default text format).

use schemas::FlowBatchBuilder;

use crate::error::{Reject, RejectReason};
use crate::mapping::Mapping;
use crate::source::LineParser;

/// Istio default format parser (stub, being written).
#[derive(Debug)]
pub struct IstioParser {
    #[allow(dead_code)]
    mapping: Mapping,
}

impl IstioParser {
    /// A parser using `mapping` to name services.
    pub fn new(mapping: Mapping) -> Self {
        IstioParser { mapping }
    }
}

impl LineParser for IstioParser {
    fn parse_line(&mut self, _line: &[u8], _out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        Err(Reject::new(
            RejectReason::Malformed,
            "istio parser not written yet",
        ))
    }
}
