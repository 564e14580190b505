//! Istio sidecar access logs in Istio's default text format (Istio 1.8 and later).
//!
//! Istio docs, "Envoy's access logging" (`meshConfig.accessLogFile` with the default
//! `accessLogFormat`); the format is Envoy's default with Istio's fields inserted:
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
//! %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
//! "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER%
//! %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
//! %REQUESTED_SERVER_NAME% %ROUTE_NAME%
//! ```
//!
//! (one line). Lines may come bare, after `ACCESS `, or in a container-runtime JSON envelope
//! (see [`crate::envoy`]). `%ROUTE_NAME%` may be missing; anything after it is ignored.
//!
//! As for Envoy's format ([`crate::envoy`], "Quotes inside quoted fields"), the quoted
//! `"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` are read from the right,
//! anchored on the line's last `"`, after which only Istio's unquoted fields follow: a
//! `User-Agent` or `X-Forwarded-For` holding quotes cannot forge the request id, authority,
//! upstream host, cluster or addresses.
//!
//! Residual risk: `%REQUESTED_SERVER_NAME%` (the TLS SNI) is unquoted and, where the proxy
//! terminates TLS for an outside client (an ingress gateway), chosen by that client; BoringSSL
//! accepts any byte but NUL in it. A server name holding a `"` moves the line's last quote:
//! most such lines are rejected (the upstream host read up to that quote holds spaces), but a
//! server name that imitates every field from `"%REQ(X-REQUEST-ID)%"` to
//! `%DOWNSTREAM_REMOTE_ADDRESS%` (`a" "id" "host" "10.0.0.1:80" outbound|80||x 1.1.1.1:1 …`)
//! is read as those fields. Client-controlled fields on both sides of the upstream host make
//! that ambiguity unavoidable in this format; a `json_format` access log has none.
//!
//! # Fields
//!
//! The fields Envoy's default format also has map as there (see [`crate::envoy`]): start time
//! → `start_us` (µs, UTC), method, protocol (`-` → none, `"- - -"` → `tcp`), status (`0` →
//! none), response flags (`-` → none), bytes each way, `%DURATION%` ms × 1000 →
//! `duration_us`, request id, upstream host (`-` → none). Response code details, connection
//! termination details, transport failure reason, upstream and downstream local addresses and
//! route name are checked for shape but not kept.
//!
//! # Who wrote the line, and the services
//!
//! A sidecar logs each request twice when both ends are in the mesh: once in the caller's pod
//! (outbound) and once in the callee's (inbound), with the same request id. The upstream
//! cluster says which:
//!
//! - **`outbound|9080||reviews.default.svc.cluster.local`** (also `PassthroughCluster`,
//!   `BlackHoleCluster`, and `-` unless the line is inbound by its server name, below):
//!   written by the caller's sidecar, `reporter` = `istio-source`.
//!   - source: the mapping's own `service` (the workload whose sidecar wrote the file); else
//!     the envelope's workload label; else a `side = "source"` rule on
//!     `downstream-address` (`%DOWNSTREAM_REMOTE_ADDRESS%`); else `unknown`.
//!   - destination: the first destination rule on `upstream-cluster`, `authority` or
//!     `upstream-host`; else the service of the cluster's host part — for a Kubernetes name
//!     (`<svc>.<namespace>.svc…`) its first DNS label (`reviews`), for any other host (a
//!     ServiceEntry such as `api.example.com`) the whole host; else the authority less its
//!     port; else the upstream host less its port; else `unknown`.
//! - **`inbound|9080||`** (also `inbound|9080|http|details.default.svc.cluster.local` before
//!   Istio 1.10, `InboundPassthroughCluster…`, and `-` with a server name
//!   `outbound_.…`): written by the callee's sidecar, `reporter` = `istio-destination`.
//!   - destination: the mapping's own `service`; else the envelope's workload label; else the
//!     first destination rule on `upstream-cluster`, `authority` or `upstream-host`; else the
//!     service in `%REQUESTED_SERVER_NAME%` (`outbound_.9080_._.details.default.svc.cluster.local`
//!     → `details`); else the cluster's host part (older Istio); else the authority less its
//!     port; else `unknown`.
//!   - source: a `side = "source"` rule on `downstream-address`
//!     (`%DOWNSTREAM_REMOTE_ADDRESS%`, the caller's pod `ip:port`); else `unknown`.
//!
//! Either way, a request that reached no service — flags `NR` or `NC`, cluster
//! `BlackHoleCluster`, or neither an upstream host nor a cluster — has the destination
//! [`schemas::UNROUTED`], before any rule or workload: its authority is whatever the caller
//! sent. Rules apply in the order written, whatever field each matches (an authority rule
//! written before a cluster rule wins). The outbound fallbacks put the service that answered
//! (the cluster Envoy routed to) before the authority the caller chose; the authority only
//! names the destination for `PassthroughCluster` (an address outside the mesh: the name the
//! caller dialled is the only one there is) and lines with an upstream host but no cluster.
//!
//! Zones and versions come from the mapping (`zone`/`version` for the own service, a rule's
//! for the service it names); names derived from the line carry none.

use schemas::{FlowBatchBuilder, Reporter};

use crate::envoy::scan::{
    self, Body, Cursor, Head, MatchFields, cluster_host, named, service_of_host,
};
use crate::envoy::{Envelope, is_envelope, strip_access, unwrap_envelope};
use crate::error::Reject;
use crate::mapping::{Endpoint, Mapping, MatchField, Side, UNKNOWN_SERVICE};
use crate::source::LineParser;

#[cfg(test)]
mod tests;

/// Parses Istio's default sidecar access-log format; see the [module docs](self) for how the
/// fields and services map.
#[derive(Debug)]
pub struct IstioParser {
    mapping: Mapping,
    /// Request ids dropped for not being UTF-8.
    dropped_ids: u64,
}

impl IstioParser {
    /// A parser using `mapping` to name services: its `service` is the workload whose sidecar
    /// wrote the input.
    pub fn new(mapping: Mapping) -> Self {
        IstioParser {
            mapping,
            dropped_ids: 0,
        }
    }
}

/// The fields of one Istio line that the flow record uses.
#[derive(Debug, Clone, Copy)]
struct Fields<'a> {
    head: Head<'a>,
    body: Body<'a>,
    upstream_cluster: Option<&'a str>,
    downstream_remote: Option<&'a str>,
    server_name: Option<&'a str>,
}

fn fields(line: &[u8]) -> Result<Fields<'_>, Reject> {
    let mut cur = Cursor::new(line);
    let head = scan::head(&mut cur)?;
    cur.token("response_code_details")?;
    cur.token("connection_termination_details")?;
    cur.quoted("upstream_transport_failure_reason")?;
    let body = scan::body(&mut cur)?;
    let upstream_cluster = cur.token("upstream_cluster")?;
    let upstream_cluster = cur.opt_text("upstream_cluster", upstream_cluster)?;
    cur.token("upstream_local_address")?;
    cur.token("downstream_local_address")?;
    let downstream_remote = cur.token("downstream_remote_address")?;
    let downstream_remote = cur.opt_text("downstream_remote_address", downstream_remote)?;
    let server_name = cur.token("requested_server_name")?;
    let server_name = cur.opt_text("requested_server_name", server_name)?;
    // %ROUTE_NAME%: optional, not kept.
    let _ = cur.opt_token();
    Ok(Fields {
        head,
        body,
        upstream_cluster,
        downstream_remote,
        server_name,
    })
}

/// Which sidecar wrote the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The caller's sidecar (outbound cluster).
    Outbound,
    /// The callee's sidecar (inbound cluster).
    Inbound,
}

fn direction(cluster: Option<&str>, server_name: Option<&str>) -> Direction {
    match cluster {
        Some(c) if c.starts_with("inbound|") || c.starts_with("InboundPassthroughCluster") => {
            Direction::Inbound
        }
        None if server_name.is_some_and(|s| s.starts_with("outbound_.")) => Direction::Inbound,
        _ => Direction::Outbound,
    }
}

/// The service in the SNI Istio uses for mTLS, `outbound_.<port>_.<subset>_.<host>`.
fn server_name_host(sni: &str) -> Option<&str> {
    sni.strip_prefix("outbound_.")?
        .splitn(3, "_.")
        .nth(2)
        .filter(|h| !h.is_empty())
}

impl IstioParser {
    /// The workload whose sidecar wrote the line, when configured or labelled.
    fn workload<'a>(&'a self, env: Option<&'a Envelope>) -> Option<Endpoint<'a>> {
        self.mapping.own().or_else(|| {
            env.and_then(|e| e.workload.as_deref())
                .map(|w| self.mapping.own_or(w))
        })
    }

    fn append(
        &self,
        f: &Fields<'_>,
        env: Option<&Envelope>,
        out: &mut FlowBatchBuilder,
    ) -> Result<usize, Reject> {
        let m = &self.mapping;
        let Fields {
            head,
            body,
            upstream_cluster,
            downstream_remote,
            server_name,
        } = *f;
        let dest_rule = || {
            MatchFields::new()
                .with(MatchField::UpstreamCluster, upstream_cluster)
                .with(MatchField::Authority, body.authority)
                .with(MatchField::UpstreamHost, body.upstream_host)
                .resolve(m, Side::Destination)
        };
        let source_rule = || {
            MatchFields::new()
                .with(MatchField::DownstreamAddress, downstream_remote)
                .resolve(m, Side::Source)
        };
        // only when no rule names the destination
        let cluster_service = || {
            upstream_cluster
                .and_then(cluster_host)
                .and_then(service_of_host)
        };
        let direction = direction(upstream_cluster, server_name);
        let unrouted = scan::unrouted(head.response_flags, body.upstream_host, upstream_cluster);
        let (reporter, source, mut destination) = match direction {
            Direction::Outbound => {
                let source = self
                    .workload(env)
                    .or_else(source_rule)
                    .unwrap_or(named(UNKNOWN_SERVICE));
                let destination = dest_rule().unwrap_or_else(|| match cluster_service() {
                    Some(s) => named(s),
                    None => scan::first_host(&[body.authority, body.upstream_host]),
                });
                (Reporter::IstioSource, source, destination)
            }
            Direction::Inbound => {
                let destination = self.workload(env).or_else(dest_rule).unwrap_or_else(|| {
                    let sni_service = server_name
                        .and_then(server_name_host)
                        .and_then(service_of_host);
                    match sni_service.or_else(cluster_service) {
                        Some(service) => named(service),
                        None => scan::first_host(&[body.authority]),
                    }
                });
                let source = source_rule().unwrap_or(named(UNKNOWN_SERVICE));
                (Reporter::IstioDestination, source, destination)
            }
        };
        if unrouted {
            destination = scan::unrouted_sink();
        }
        scan::append_record(out, &head, &body, source, destination, reporter)?;
        Ok(1)
    }
}

impl LineParser for IstioParser {
    fn mapping_mut(&mut self) -> Option<&mut Mapping> {
        Some(&mut self.mapping)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        crate::error::dropped_ids_counter(self.dropped_ids)
    }

    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        let line = scan::trim(line);
        if is_envelope(line) {
            let env = unwrap_envelope(line)?;
            let f = fields(env.message.as_bytes())?;
            self.append(&f, Some(&env), out)?;
            self.dropped_ids += u64::from(f.body.request_id_dropped);
        } else {
            let f = fields(strip_access(line))?;
            self.append(&f, None, out)?;
            self.dropped_ids += u64::from(f.body.request_id_dropped);
        }
        Ok(1)
    }
}
