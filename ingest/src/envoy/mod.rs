//! Envoy access logs: the default text format ([`EnvoyTextParser`]) and JSON formats
//! ([`EnvoyJsonParser`]).
//!
//! # Default text format
//!
//! Envoy docs, `configuration/observability/access_log/usage`, "Default format string":
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
//! %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
//! ```
//!
//! (one line). Accepted as is, after an `ACCESS ` prefix (Ambassador/Emissary), or as the
//! `message` (or `log`) of a container-runtime JSON envelope (a line starting with `{`).
//! Unquoted fields after `"%UPSTREAM_HOST%"` are ignored, so a format that appends unquoted
//! operators still parses; an appended *quoted* field is not supported (it would be read as
//! the upstream host).
//!
//! ## Quotes inside quoted fields
//!
//! Envoy writes header values between quotes without escaping quotes in them, and the client
//! chooses its `User-Agent` and `X-Forwarded-For`: `Mozilla" "spoofed-id" "payments" "10.9.9.9:80`
//! would, read left to right, name a destination and a request id of the client's choosing.
//! So the line is read from both ends: the head (`[%START_TIME%]` to
//! `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`) from the left, and `"%REQ(X-REQUEST-ID)%"
//! "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` from the right, the upstream host being closed by the
//! line's last `"` (each field opens at the rightmost `"` that follows another field's
//! closing quote and a space). Forwarded-for and user agent are whatever lies between; they
//! are not kept. An upstream host holding a space or a quote is rejected (`malformed`): the
//! last `"` was not its closing one.
//!
//! Residual risk: the request line is read from the left, so a path holding `" ` followed by
//! text shaped like `200 - 1 2 3 - "` can change the status, flags, byte counts and duration
//! (not the destination, request id or upstream host). A request id or authority holding
//! `" "` is cut at its last such sequence (both are client-chosen values anyway).
//!
//! | operator | flow-record field |
//! |---|---|
//! | `%START_TIME%` (`2019-02-12T18:37:42.921Z`) | `start_us`, µs since the epoch, UTC |
//! | `%REQ(:METHOD)%` | `method` (`-` → none) |
//! | path | not kept |
//! | `%PROTOCOL%` | `protocol` (`HTTP/1.1`; `-` → none); `"- - -"` (TCP proxy) → `tcp` |
//! | `%RESPONSE_CODE%` | `status`; `0` (no response was sent) and `-` → none |
//! | `%RESPONSE_FLAGS%` | `response_flags` as written (`UF,URX`); `-` → none |
//! | `%BYTES_RECEIVED%`, `%BYTES_SENT%` | `bytes_received`, `bytes_sent`, bytes (`-` → 0) |
//! | `%DURATION%`, ms | `duration_us` = ms × 1000 (`-` → none) |
//! | upstream service time, forwarded-for, user agent | checked for shape, not kept (see below) |
//! | `%REQ(X-REQUEST-ID)%` | `request_id` (`-` → none; not UTF-8 → none, the record kept and counted) |
//! | `%REQ(:AUTHORITY)%`, `%UPSTREAM_HOST%` | name the destination; `upstream_host` (`-` → none) |
//!
//! Services (`reporter` = `envoy`):
//! - **source**: the mapping's own `service`; else, for an enveloped line, a `side = "source"`
//!   rule on the `pod` name, else the envelope's `kubernetes.labels.service`, `labels.app`,
//!   `labels."app.kubernetes.io/name"` or `container.name`; else `unknown`. Zone and version
//!   come from the mapping (`zone`, `version`, or the matching rule).
//! - **destination**, in this order:
//!   1. [`schemas::UNROUTED`] when the request reached no service: its flags hold `NR` or
//!      `NC`, or it has no upstream host (`-`). The `Host` of such a request is whatever the
//!      client sent (`Host: payments:1` logged `404 NR`), so it is nobody's inflow; rules are
//!      not consulted (they name the service that answered, and none did). This also covers
//!      `503 UH` (no healthy host): without an upstream cluster in this format, the line
//!      cannot say which service had none.
//!   2. the first destination rule, in the order written, matching `authority` or
//!      `upstream-host` (an authority rule written first wins over an upstream-host rule);
//!   3. the authority less its port (`httpbin.org`, `localhost:8000` → `localhost`);
//!   4. the upstream host less its port.
//!
//!   Zone and version only from a matching rule.
//!
//!   Why the authority before the upstream host, though a client chooses its `Host`: this
//!   format logs no upstream cluster, and the upstream host is an `ip:port` — a pod address,
//!   not a service: naming nodes after it would split each service into its pods and lose
//!   its baseline at every restart. Where Envoy routes on the `Host` (the usual virtual-host
//!   routing, and every sidecar), the authority *is* the service that answered. **Residual
//!   risk**: where a route sends requests to a backend whatever their `Host` (a catch-all
//!   virtual host, routing by path at an edge), a client can name the destination of requests
//!   another service answered (`Host: payments` answered `200` by reviews) and so dilute, or
//!   fake, a service's signals. There, map addresses with `upstream-host` rules (pod CIDRs →
//!   services), or log in JSON with `%UPSTREAM_CLUSTER%`, which this parser puts first.
//!
//! # JSON formats
//!
//! `json_format` (every value a string, `-` when unset) and `typed_json_format` (numbers as
//! numbers, unset as `null`), Envoy docs `access_log/usage`, "Format dictionaries". Keys are
//! those users usually give the operators, also in their UPPER_CASE operator spelling:
//!
//! | key (aliases) | field |
//! |---|---|
//! | `start_time` (`START_TIME`, `startTime`, `timestamp`, `@timestamp`) | `start_us`: RFC 3339, or epoch seconds with a fraction (`%START_TIME(%s.%3f)%`); required |
//! | `method` (`METHOD`, `REQ(:METHOD)`, `:method`) | `method` |
//! | `protocol` (`PROTOCOL`) | `protocol`; `method` and `protocol` both `-`/`null` → `tcp` |
//! | `response_code` (`RESPONSE_CODE`, `status`, `status_code`) | `status`, `0` → none |
//! | `response_flags` (`RESPONSE_FLAGS`) | `response_flags` |
//! | `bytes_received`, `bytes_sent` (UPPER_CASE) | bytes, absent → 0 |
//! | `duration` (`DURATION`), ms | `duration_us`; fractional ms are rounded to µs |
//! | `upstream_host`, `upstream_cluster` (UPPER_CASE) | `upstream_host`; destination |
//! | `authority` (`AUTHORITY`, `REQ(:AUTHORITY)`, `:authority`, `host`) | destination |
//! | `request_id` (`REQUEST_ID`, `REQ(X-REQUEST-ID)`), else `x-request-id` (`x_request_id`) | `request_id` |
//! | `downstream_remote_address` (UPPER_CASE) | source rules |
//!
//! Numbers may be JSON numbers, strings (`"12"`) or `12.0`; `-`, `""` and `null` mean absent.
//! Other keys (`path`, `user_agent`, `x_forwarded_for`, `upstream_service_time`, …) are
//! ignored. Source: own service, else a source rule on `downstream_remote_address`, else
//! `unknown`. Destination, in this order (the service that answered before the authority the
//! client chose):
//! 1. [`schemas::UNROUTED`] when the request reached no service: flags `NR` or `NC`, cluster
//!    `BlackHoleCluster`, or neither an upstream host nor an upstream cluster;
//! 2. the first destination rule, in the order written, on authority, upstream host or
//!    upstream cluster (whatever its field: the operator's word comes first);
//! 3. the service of the upstream cluster: Istio's `outbound|9080||reviews.default.svc.cluster.local`
//!    → `reviews` (a Kubernetes host's first label; another host whole), any other cluster
//!    name as it is; Istio's `PassthroughCluster` and `InboundPassthroughCluster` name none;
//! 4. the authority less its port; 5. the upstream host less its port.
//!
//! # Rejects
//!
//! `malformed` (a field or separator is missing), `bad-timestamp`, `bad-number` (status,
//! bytes, duration), `invalid-utf8` (in a kept field), `bad-json` (envelope or JSON line); the
//! detail names the field and quotes the value (at most 64 bytes of it).

mod envelope;
mod json;
pub(crate) mod scan;
mod text;

#[cfg(test)]
pub(crate) mod tests;

pub use json::EnvoyJsonParser;
pub use text::EnvoyTextParser;

pub(crate) use envelope::{Envelope, is_envelope, strip_access, unwrap as unwrap_envelope};
