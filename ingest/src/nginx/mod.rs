//! NGINX access logs: `combined`, ingress-nginx `upstreaminfo`, and any `log_format`.

use schemas::{FlowBatchBuilder, Reporter};

use crate::error::{Reject, RejectReason, Result};
use crate::mapping::Mapping;
use crate::source::LineParser;

/// NGINX's predefined `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// The ingress-nginx controller's default `upstreaminfo` format.
pub const UPSTREAMINFO: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id"#;

/// A parser compiled from a `log_format` (stub, being written).
#[derive(Debug)]
pub struct NginxParser {
    #[allow(dead_code)]
    mapping: Mapping,
    #[allow(dead_code)]
    reporter: Reporter,
}

impl NginxParser {
    /// Compiles `log_format`.
    ///
    /// # Errors
    /// [`crate::Error::LogFormat`] when the format cannot be compiled.
    pub fn new(_log_format: &str, reporter: Reporter, mapping: Mapping) -> Result<Self> {
        Ok(NginxParser { mapping, reporter })
    }
}

impl LineParser for NginxParser {
    fn parse_line(&mut self, _line: &[u8], _out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        Err(Reject::new(
            RejectReason::Malformed,
            "nginx parser not written yet",
        ))
    }
}
