//! Trace spans as CSV: parent and child spans in different services make one flow record.

use schemas::FlowBatchBuilder;

use crate::error::{Reject, RejectReason};
use crate::mapping::Mapping;
use crate::source::LineParser;

/// Span table parser (stub, being written).
#[derive(Debug)]
pub struct SpansCsvParser {
    #[allow(dead_code)]
    mapping: Mapping,
}

impl SpansCsvParser {
    /// A parser using `mapping` to name services.
    pub fn new(mapping: Mapping) -> Self {
        SpansCsvParser { mapping }
    }
}

impl LineParser for SpansCsvParser {
    fn parse_line(&mut self, _line: &[u8], _out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        Err(Reject::new(
            RejectReason::Malformed,
            "spans parser not written yet",
        ))
    }
}
