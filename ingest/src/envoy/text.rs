//! Envoy's default text access-log format.

use schemas::{FlowBatchBuilder, Reporter};

use crate::error::Reject;
use crate::mapping::{Endpoint, Mapping, MatchField, Side, UNKNOWN_SERVICE};
use crate::source::LineParser;

use super::envelope::{self, Envelope};
use super::scan::{self, Body, Cursor, Head, MatchFields};

/// Parses Envoy's default text access-log format (Envoy docs, `access_log/usage`, "Default
/// format string"), bare, after an `ACCESS ` prefix, or inside a container-runtime JSON
/// envelope. See the [module docs](super) for how each field maps.
#[derive(Debug)]
pub struct EnvoyTextParser {
    mapping: Mapping,
    /// Request ids dropped for not being UTF-8.
    dropped_ids: u64,
}

impl EnvoyTextParser {
    /// A parser using `mapping` to name services.
    pub fn new(mapping: Mapping) -> Self {
        EnvoyTextParser {
            mapping,
            dropped_ids: 0,
        }
    }
}

/// Reads the default format's fields; anything after `"%UPSTREAM_HOST%"` is ignored (a
/// deployment may append operators to the default format).
fn fields(line: &[u8]) -> Result<(Head<'_>, Body<'_>), Reject> {
    let mut cur = Cursor::new(line);
    let head = scan::head(&mut cur)?;
    let body = scan::body(&mut cur)?;
    Ok((head, body))
}

/// The destination of an Envoy line (see the module docs, "Services"): [`schemas::UNROUTED`]
/// when the request reached no upstream; else the first destination rule matching the
/// authority or the upstream host, else the authority less its port, else the upstream host
/// less its port.
pub(crate) fn destination<'a>(
    mapping: &'a Mapping,
    response_flags: Option<&'a str>,
    authority: Option<&'a str>,
    upstream_host: Option<&'a str>,
) -> Endpoint<'a> {
    if scan::unrouted(response_flags, upstream_host, None) {
        return scan::unrouted_sink();
    }
    MatchFields::new()
        .with(MatchField::Authority, authority)
        .with(MatchField::UpstreamHost, upstream_host)
        .resolve(mapping, Side::Destination)
        .unwrap_or_else(|| scan::first_host(&[authority, upstream_host]))
}

impl LineParser for EnvoyTextParser {
    fn mapping_mut(&mut self) -> Option<&mut Mapping> {
        Some(&mut self.mapping)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        crate::error::dropped_ids_counter(self.dropped_ids)
    }

    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        let line = scan::trim(line);
        let env: Option<Envelope> = if envelope::is_envelope(line) {
            Some(envelope::unwrap(line)?)
        } else {
            None
        };
        let text = match &env {
            Some(e) => e.message.as_bytes(),
            None => envelope::strip_access(line),
        };
        let (head, body) = fields(text)?;
        let source = match &env {
            Some(e) => e.source(&self.mapping),
            None => self.mapping.own_or(UNKNOWN_SERVICE),
        };
        let dest = destination(
            &self.mapping,
            head.response_flags,
            body.authority,
            body.upstream_host,
        );
        scan::append_record(out, &head, &body, source, dest, Reporter::Envoy)?;
        self.dropped_ids += u64::from(body.request_id_dropped);
        Ok(1)
    }
}
