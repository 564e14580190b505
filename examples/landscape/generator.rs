//! A synthetic landscape's Istio sidecar logs, with a node that becomes a black hole: the
//! generator behind `cargo run --example landscape` and the end-to-end tests.
//!
//! Deterministic (a seeded SplitMix64), so a test can assert exact findings.

/// SplitMix64: a tiny deterministic generator, so the landscape is the same on every run.
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// Services of the synthetic landscape, with the index that forms their pod IPs (`10.0.<i>.x`).
pub const SERVICES: [(&str, u8); 7] = [
    ("gateway", 1),
    ("frontend", 2),
    ("catalog", 3),
    ("cart", 4),
    ("inventory", 5),
    ("pricing", 6),
    ("db", 7),
];

/// Edges of the landscape: (caller, callee, requests per second).
pub const EDGES: [(&str, &str, u64); 7] = [
    ("gateway", "frontend", 40),
    ("frontend", "catalog", 30),
    ("frontend", "cart", 10),
    ("catalog", "inventory", 20),
    ("catalog", "pricing", 30),
    ("cart", "inventory", 10),
    ("inventory", "db", 30),
];

fn ip_index(service: &str) -> u8 {
    SERVICES
        .iter()
        .find(|(s, _)| *s == service)
        .expect("known service")
        .1
}

/// Epoch of the generated logs: 2024-05-01T00:00:00Z, in seconds.
pub const BASE_SECS: i64 = 1_714_521_600;

/// Generates the Istio inbound sidecar logs of the landscape in [`EDGES`] for `seconds`
/// seconds, as one file sorted by the time each line is written (the request's end, as Envoy
/// writes access logs when a request completes).
///
/// From `black_hole_at` seconds on, `black_hole` becomes a black hole: it keeps accepting
/// requests but never answers (its sidecar logs status 0, flag `DC`, after the callers' 10 s
/// timeout), and it stops calling its own dependencies. Its callers answer their own callers
/// from a fallback, so only the black hole shows the signature.
///
/// Each line is written by the callee's sidecar (`inbound|8080||`): the destination is named by
/// the requested server name (SNI), the source by the downstream address `10.0.<i>.<pod>`,
/// which the config returned by [`landscape_config`] maps to services.
pub fn landscape_logs(seconds: u64, black_hole: &str, black_hole_at: u64, seed: u64) -> String {
    landscape_logs_over(Protocol::Http, seconds, black_hole, black_hole_at, seed)
}

/// What the landscape's services speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 requests (`GET /api/<callee>`); a black hole's callers log `0 DC` after 10 s.
    Http,
    /// TCP connections through the sidecars' TCP proxy (`"- - -"`, no status, no flag): each
    /// sends 1 to 300 bytes and gets an answer; a black hole accepts the connection, reads and
    /// sends nothing back (0 bytes sent) until the caller closes it after 10 s.
    Tcp,
}

/// [`landscape_logs`] with the services speaking `protocol`.
pub fn landscape_logs_over(
    protocol: Protocol,
    seconds: u64,
    black_hole: &str,
    black_hole_at: u64,
    seed: u64,
) -> String {
    let mut rng = SplitMix::new(seed);
    let mut lines: Vec<(i64, String)> = Vec::new();
    for second in 0..seconds {
        let broken = second >= black_hole_at;
        for (caller, callee, rate) in EDGES {
            if broken && caller == black_hole {
                continue; // the black hole makes no downstream calls
            }
            let n = rate + rng.range(0, rate / 5) - rate / 10;
            for _ in 0..n {
                let start_ms = second as i64 * 1000 + rng.range(0, 999) as i64;
                let hung = broken && callee == black_hole;
                let tcp = protocol == Protocol::Tcp;
                let (status, flags, details, duration_ms, sent) = if hung && tcp {
                    (0, "-", "-", 10_000, 0)
                } else if hung {
                    (0, "DC", "downstream_remote_disconnect", 10_000, 0)
                } else {
                    let ok = rng.range(0, 999) >= 2;
                    let status = match (tcp, ok) {
                        (true, _) => 0,
                        (false, true) => 200,
                        (false, false) => 503,
                    };
                    (
                        status,
                        "-",
                        if tcp { "-" } else { "via_upstream" },
                        rng.range(2, 40),
                        rng.range(200, 4000),
                    )
                };
                let (ci, di) = (ip_index(caller), ip_index(callee));
                let pod = rng.range(2, 9);
                let port = rng.range(32768, 60999);
                let ts = format_rfc3339_ms(BASE_SECS * 1000 + start_ms);
                let (request, agent, authority) = if tcp {
                    ("- - -".to_string(), "-", "-".to_string())
                } else {
                    (
                        format!("GET /api/{callee} HTTP/1.1"),
                        "client/1.0",
                        format!("{callee}:8080"),
                    )
                };
                let recv = rng.range(0, 300) + u64::from(tcp);
                // no upstream service time header on a TCP connection, nor from a black hole
                let ust = if hung || tcp {
                    "-".to_string()
                } else {
                    duration_ms.saturating_sub(1).to_string()
                };
                let id = rng.next_u64();
                let id = if tcp {
                    "-".to_string()
                } else {
                    format!("{id:016x}")
                };
                let cpod = rng.range(2, 9);
                let line = format!(
                    "[{ts}] \"{request}\" {status} {flags} {details} - \"-\" {recv} {sent} {duration_ms} {ust} \"-\" \"{agent}\" \"{id}\" \"{authority}\" \"10.0.{di}.{pod}:8080\" inbound|8080|| 127.0.0.6:{port} 10.0.{di}.{pod}:8080 10.0.{ci}.{cpod}:{port} outbound_.8080_._.{callee}.default.svc.cluster.local default"
                );
                lines.push((start_ms + duration_ms as i64, line));
            }
        }
    }
    lines.sort_by_key(|(end, _)| *end);
    let mut out = String::new();
    for (_, l) in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// The config for [`landscape_logs`]: source services from downstream addresses, 10 s windows,
/// 15 s allowed lateness (lines are written at request end, up to the 10 s timeout after start).
pub fn landscape_config() -> String {
    let mut s = String::from(
        "# For the logs of `cargo run --example landscape` (written by its --print-config).\n\
         # Each line is written by the callee's sidecar: the destination comes from the\n\
         # requested server name, the source from these rules on the downstream address.\n\
         [detect.window]\nlength = \"10s\"\nallowed-lateness = \"15s\"\n\n",
    );
    for (service, i) in SERVICES {
        s += &format!(
            "[[mapping.rules]]\nfield = \"downstream-address\"\npattern = \"10.0.{i}.*\"\nside = \"source\"\nservice = \"{service}\"\n\n"
        );
    }
    s
}

/// `2024-05-01T00:00:00.123Z` for a time in ms since the epoch (Envoy's `%START_TIME%`).
pub fn format_rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil_from_days (Howard Hinnant), the inverse of the parser's days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}
