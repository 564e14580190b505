//! The simulator's output formats: flow records as the lines graywatch's parsers read.
//!
//! | format | parser (`--format`) | start | duration | zones, versions |
//! |---|---|---|---|---|
//! | `flow-json` | `flow-json` | µs | µs | in the record |
//! | `envoy-json` | `envoy-json` | µs (RFC 3339, 6 digits) | µs (ms with 3 decimals) | by the `[mapping]` rules of [`Landscape::mapping_rules`] |
//! | `istio` | `istio` | ms (Istio's default `%START_TIME%`) | ms, truncated (`%DURATION%`) | by the same rules |
//!
//! Both proxy formats are written by the caller's sidecar (Istio: an `outbound|…` line,
//! `reporter` `istio-source`; Envoy JSON: `reporter` `envoy`). They name the callee's pod
//! (`upstream_host` `10.<zone>.<service>.<version>:8080`), the caller's pod
//! (`downstream_remote_address` `10.<zone>.<service>.<version>:<port>`) and the cluster
//! `outbound|8080|<version>|<service>.default.svc.cluster.local` (the subset is the version,
//! as an Istio `DestinationRule` subset would name it). Without the mapping rules, the
//! parsers name the destination from the cluster (no zone, no version) and the source
//! `unknown`; with them (`deploy/examples/simulate.toml`, or `graywatch simulate --mapping`),
//! every field of the flow-json record survives except the `reporter`, and, in `istio`, the
//! µs of start and duration. Records whose source is not a simulator instance get the
//! source address `10.0.0.1`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::str::FromStr;

use schemas::FlowRecord;

use super::landscape::{Landscape, PORT, ZONES};

/// How `graywatch simulate` writes records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// One flow record per line, `schemas/json/flow-record.schema.json`.
    FlowJson,
    /// Envoy access logs with `typed_json_format` (read with `--format envoy-json`).
    Envoy,
    /// Istio's default sidecar access-log format, outbound lines (read with `--format istio`).
    Istio,
}

impl OutputFormat {
    /// Every format.
    pub const ALL: [OutputFormat; 3] = [
        OutputFormat::FlowJson,
        OutputFormat::Envoy,
        OutputFormat::Istio,
    ];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::FlowJson => "flow-json",
            OutputFormat::Envoy => "envoy-json",
            OutputFormat::Istio => "istio",
        }
    }

    /// The `--format` of `graywatch replay` that reads this output.
    pub fn parser(self) -> &'static str {
        match self {
            OutputFormat::FlowJson => "flow-json",
            OutputFormat::Envoy => "envoy-json",
            OutputFormat::Istio => "istio",
        }
    }

    /// Whether reading it needs the mapping rules.
    pub fn needs_mapping(self) -> bool {
        self != OutputFormat::FlowJson
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputFormat {
    type Err = String;

    /// `flow-json`, `envoy-json` (also `envoy`, its name before it matched the parser's) or
    /// `istio`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flow-json" => Ok(OutputFormat::FlowJson),
            "envoy" | "envoy-json" => Ok(OutputFormat::Envoy),
            "istio" => Ok(OutputFormat::Istio),
            _ => Err(format!(
                "unknown output format {s:?} (expected flow-json, envoy-json or istio)"
            )),
        }
    }
}

/// Writes records as lines of one [`OutputFormat`] into a buffer.
pub struct LineWriter {
    format: OutputFormat,
    /// (service, zone, version) → pod IP of the instance.
    addresses: HashMap<(String, String, String), String>,
}

impl LineWriter {
    /// A writer of `format` for the simulator's landscape.
    pub fn new(format: OutputFormat) -> Self {
        let land = Landscape::new();
        let mut addresses = HashMap::new();
        for (i, s) in land.services.iter().enumerate() {
            for (z, zone) in ZONES.iter().enumerate() {
                for (v, version) in s.versions.iter().enumerate() {
                    addresses.insert(
                        (s.name.clone(), (*zone).to_owned(), version.clone()),
                        Landscape::address(i, z, v),
                    );
                }
            }
        }
        LineWriter { format, addresses }
    }

    /// The format written.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Appends `record` as one line (with its `\n`) to `out`.
    pub fn write(&self, record: &FlowRecord, out: &mut Vec<u8>) {
        match self.format {
            OutputFormat::FlowJson => {
                serde_json::to_writer(&mut *out, record).expect("a flow record serializes");
                out.push(b'\n');
            }
            OutputFormat::Envoy => self.envoy(record, out),
            OutputFormat::Istio => self.istio(record, out),
        }
    }

    fn source_ip(&self, r: &FlowRecord) -> &str {
        let key = (
            r.source.clone(),
            r.source_zone.clone().unwrap_or_default(),
            r.source_version.clone().unwrap_or_default(),
        );
        self.addresses.get(&key).map_or("10.0.0.1", String::as_str)
    }

    fn envoy(&self, r: &FlowRecord, out: &mut Vec<u8>) {
        let s = Fields::of(r, self.source_ip(r));
        out.extend_from_slice(b"{\"start_time\":\"");
        rfc3339(out, r.start_us, 6);
        let duration = r.duration_us.unwrap_or(0);
        let _ = write!(
            out,
            "\",\"method\":\"{}\",\"path\":\"{}\",\"protocol\":\"{}\",\"response_code\":{},\"response_flags\":\"{}\",\"bytes_received\":{},\"bytes_sent\":{},\"duration\":{}.{:03},\"upstream_host\":\"{}\",\"upstream_cluster\":\"{}\",\"authority\":\"{}:{PORT}\",\"x-request-id\":\"{}\",\"downstream_remote_address\":\"{}:{}\",\"user_agent\":\"{}\"}}",
            s.method,
            s.path,
            s.protocol,
            r.status.unwrap_or(0),
            s.flags,
            r.bytes_received,
            r.bytes_sent,
            duration / 1000,
            duration % 1000,
            s.upstream_host,
            s.cluster,
            r.destination,
            s.request_id,
            s.source_ip,
            s.port,
            s.user_agent,
        );
        out.push(b'\n');
    }

    fn istio(&self, r: &FlowRecord, out: &mut Vec<u8>) {
        let s = Fields::of(r, self.source_ip(r));
        out.push(b'[');
        rfc3339(out, r.start_us, 3);
        let ms = r.duration_us.unwrap_or(0) / 1000;
        let service_time = if r.response_flags.is_some() {
            "-".to_owned()
        } else {
            ms.to_string()
        };
        let details = match r.response_flags.as_deref() {
            None => "via_upstream",
            Some("UT") => "response_timeout",
            Some("UO") => "upstream_reset_before_response_started{overflow}",
            Some("UC") => "upstream_reset_before_response_started{connection_termination}",
            Some("UF") => "upstream_reset_before_response_started{connection_failure}",
            Some(_) => "-",
        };
        // the service's cluster IP: 10.96.<service>.<version>
        let vip = s.upstream_host.splitn(3, '.').nth(2).map_or_else(
            || "10.96.0.1:8080".to_owned(),
            |rest| format!("10.96.{rest}"),
        );
        let _ = write!(
            out,
            "] \"{} {} {}\" {} {} {details} - \"-\" {} {} {ms} {service_time} \"-\" \"{}\" \"{}\" \"{}:{PORT}\" \"{}\" {} {}:{} {vip} {}:{} - default",
            s.method,
            s.path,
            s.protocol,
            r.status.unwrap_or(0),
            s.flags,
            r.bytes_received,
            r.bytes_sent,
            s.user_agent,
            s.request_id,
            r.destination,
            s.upstream_host,
            s.cluster,
            s.source_ip,
            s.port.wrapping_add(1).max(32768),
            s.source_ip,
            s.port,
        );
        out.push(b'\n');
    }
}

/// The values both proxy formats write.
struct Fields<'a> {
    method: &'a str,
    path: String,
    protocol: &'a str,
    flags: &'a str,
    upstream_host: &'a str,
    cluster: String,
    request_id: &'a str,
    source_ip: &'a str,
    port: u16,
    user_agent: &'static str,
}

impl<'a> Fields<'a> {
    fn of(r: &'a FlowRecord, source_ip: &'a str) -> Self {
        let version = r.destination_version.as_deref().unwrap_or("");
        // an ephemeral port that depends only on the record
        let port = 32768 + (r.start_us.rem_euclid(28_000)) as u16;
        Fields {
            method: r.method.as_deref().unwrap_or("-"),
            path: format!("/{}", r.destination),
            protocol: r.protocol.as_deref().unwrap_or("-"),
            flags: r.response_flags.as_deref().unwrap_or("-"),
            upstream_host: r.upstream_host.as_deref().unwrap_or("-"),
            cluster: format!(
                "outbound|{PORT}|{version}|{}.default.svc.cluster.local",
                r.destination
            ),
            request_id: r.request_id.as_deref().unwrap_or("-"),
            source_ip,
            port,
            user_agent: if r.protocol.as_deref() == Some("HTTP/2") {
                "grpc-go/1.64.0"
            } else {
                "fluent-bit/3.1"
            },
        }
    }
}

/// Writes `us` (µs since the epoch, not negative) as RFC 3339 UTC with `digits` (3 or 6)
/// fraction digits: `2026-01-05T00:00:00.123Z`.
pub fn rfc3339(out: &mut Vec<u8>, us: i64, digits: u32) {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    match digits {
        3 => {
            let _ = write!(out, ".{:03}Z", frac / 1000);
        }
        _ => {
            let _ = write!(out, ".{frac:06}Z");
        }
    }
}

/// Howard Hinnant's `civil_from_days` (<http://howardhinnant.github.io/date_algorithms.html>):
/// days since 1970-01-01 → (year, month, day), the inverse of
/// `ingest::time::days_from_civil`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format's name is the `--format` that reads it back (`envoy` used to write what
    /// `replay --format envoy`, Envoy's text format, refuses); the old name still parses.
    #[test]
    fn each_format_is_named_as_its_parser() {
        for f in OutputFormat::ALL {
            assert_eq!(f.as_str(), f.parser());
            assert_eq!(f.as_str().parse::<OutputFormat>(), Ok(f));
        }
        assert_eq!("envoy".parse::<OutputFormat>(), Ok(OutputFormat::Envoy));
    }

    #[test]
    fn rfc3339_round_trips_through_the_parser() {
        for us in [
            0,
            951_782_400_123_456,   // 2000-02-29
            1_767_571_200_000_000, // 2026-01-05
            4_107_542_399_999_999, // 2100-02-28T23:59:59.999999
        ] {
            let mut six = Vec::new();
            rfc3339(&mut six, us, 6);
            assert_eq!(ingest::time::parse_rfc3339_us(&six), Some(us), "{six:?}");
            let mut three = Vec::new();
            rfc3339(&mut three, us, 3);
            assert_eq!(
                ingest::time::parse_rfc3339_us(&three),
                Some(us / 1000 * 1000)
            );
        }
        let mut s = Vec::new();
        rfc3339(&mut s, 1_767_571_200_000_000, 3);
        assert_eq!(s, b"2026-01-05T00:00:00.000Z");
    }

    #[test]
    fn format_names_parse() {
        for f in OutputFormat::ALL {
            assert_eq!(f.as_str().parse::<OutputFormat>(), Ok(f));
            assert!(f.parser().parse::<ingest::Format>().is_ok());
        }
        assert_eq!("envoy-json".parse(), Ok(OutputFormat::Envoy));
        assert!("nginx".parse::<OutputFormat>().is_err());
    }
}
