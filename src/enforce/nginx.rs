//! NGINX as an enforcement point: the services one NGINX fronts ([`Site`]), and the config
//! that puts a set of remediation commands in force there ([`render`]).
//!
//! graywatch owns one file, included in the `http {}` block of the operator's `nginx.conf`:
//! an `upstream` per service (its servers, with their versions) and a `server` that proxies
//! each service's `location` to it. Each command in force adds, per service it targets
//! (NGINX directives per nginx.org's module docs):
//!
//! | pattern | NGINX |
//! |---|---|
//! | segmentation | a `map` of the caller to a flag, and `if ($flag) { return STATUS; }` |
//! | circuit breaker | the same with the caller's tier, or `proxy_read_timeout` for `slower_than_us` |
//! | backpressure | per caller a `limit_req_zone` keyed by a `map` (empty key: not counted) and `limit_req … burst=R nodelay` |
//! | bulkhead | `limit_conn` on a zone keyed by a `map` (one key: the cap is on all matched requests together), or `return 403`; allow-listed edges map to the empty key |
//! | quarantine | the version's servers `down` in the upstream, or a smaller `weight` |
//!
//! The caller is what the site's `caller` variable holds (a header the callers or their mesh
//! set, e.g. `$http_x_envoy_downstream_service_cluster`); its zone and tier likewise. A map's
//! key is `caller|zone|tier`, matched by an anchored regex.
//!
//! What NGINX can't express is refused, per command, with the reason (and the rest applies):
//! a timeout for one tier only (`proxy_read_timeout` takes no variables), a quarantine that
//! leaves a service no server, a name with characters outside `[A-Za-z0-9._:/-]` (a command
//! must never inject config text).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use schemas::{Parameters, RemediationCommand};
use serde::Deserialize;

/// The services one NGINX fronts: `--site FILE` of `graywatch enforce nginx` (TOML,
/// `deploy/nginx/graywatch-site.toml` documents it key by key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Site {
    /// NGINX `listen` of the proxying server, e.g. `127.0.0.1:8080`.
    pub listen: String,
    /// NGINX variable naming the calling service, e.g. `$http_x_graywatch_caller`.
    pub caller: String,
    /// NGINX variable naming the caller's zone (for zone-scoped commands); absent: none.
    #[serde(default)]
    pub caller_zone: Option<String>,
    /// NGINX variable naming the caller's tier (for tier-scoped circuit breakers).
    #[serde(default)]
    pub caller_tier: Option<String>,
    /// The zone of the servers behind this NGINX: a command for another destination zone is
    /// not for it. Absent: every zone's commands apply.
    #[serde(default)]
    pub zone: Option<String>,
    /// The fronted services.
    pub services: Vec<Service>,
}

/// One service behind the NGINX.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Service {
    /// Its name in graywatch's findings and commands (a destination).
    pub name: String,
    /// The `location` prefix routed to it, e.g. `/orders/`.
    pub location: String,
    /// Its instances.
    pub servers: Vec<Server>,
}

/// One instance of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Server {
    /// `host:port`.
    pub address: String,
    /// The version it runs (what a quarantine names).
    #[serde(default)]
    pub version: Option<String>,
    /// NGINX `weight` (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Whether `s` is safe to write into NGINX config and a regex: `[A-Za-z0-9._:/-]+`.
fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
}

fn variable(s: &str) -> bool {
    s.len() > 1
        && s.starts_with('$')
        && s[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Site {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// Unreadable, not TOML, an unknown key, or a value that can't go into NGINX config
    /// (named with its service).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading site {}", path.display()))?;
        let site: Site =
            toml::from_str(&text).with_context(|| format!("site {}", path.display()))?;
        site.check()
            .with_context(|| format!("site {}", path.display()))?;
        Ok(site)
    }

    fn check(&self) -> anyhow::Result<()> {
        let plain = |s: &str| {
            !s.is_empty()
                && !s
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b";{}\"'$#\\".contains(&b))
        };
        anyhow::ensure!(
            plain(&self.listen),
            "listen {:?}: not an address",
            self.listen
        );
        for (key, v) in [
            ("caller", Some(&self.caller)),
            ("caller-zone", self.caller_zone.as_ref()),
            ("caller-tier", self.caller_tier.as_ref()),
        ] {
            if let Some(v) = v {
                anyhow::ensure!(
                    variable(v),
                    "{key} {v:?}: not an NGINX variable ($name, e.g. $http_x_graywatch_caller)"
                );
            }
        }
        anyhow::ensure!(!self.services.is_empty(), "no [[services]]");
        let (mut names, mut locations, mut upstreams) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for s in &self.services {
            anyhow::ensure!(
                safe_name(&s.name),
                "service {:?}: names are [A-Za-z0-9._:/-]",
                s.name
            );
            anyhow::ensure!(names.insert(&s.name), "service {}: listed twice", s.name);
            anyhow::ensure!(
                upstreams.insert(upstream(s)),
                "service {}: its upstream name {} is another service's (names differing only in . and - are one in NGINX)",
                s.name,
                upstream(s)
            );
            anyhow::ensure!(
                locations.insert(&s.location),
                "service {}: location {} is another service's",
                s.name,
                s.location
            );
            anyhow::ensure!(
                s.location.starts_with('/') && plain(&s.location),
                "service {}: location {:?} is not a path prefix",
                s.name,
                s.location
            );
            anyhow::ensure!(!s.servers.is_empty(), "service {}: no servers", s.name);
            for server in &s.servers {
                anyhow::ensure!(
                    plain(&server.address),
                    "service {}: server {:?} is not host:port",
                    s.name,
                    server.address
                );
                anyhow::ensure!(server.weight > 0, "service {}: weight 0", s.name);
                if let Some(v) = &server.version {
                    anyhow::ensure!(
                        safe_name(v),
                        "service {}: version {v:?}: versions are [A-Za-z0-9._:/-]",
                        s.name
                    );
                }
            }
        }
        Ok(())
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Whether `command` concerns this NGINX: one of its destinations is fronted here, and
    /// its destination zone (if any) is this site's.
    pub fn concerns(&self, command: &RemediationCommand) -> bool {
        let zone_ok = match (&command.target.destination_zone, &self.zone) {
            (Some(want), Some(here)) => want == here,
            _ => true,
        };
        zone_ok
            && command
                .target
                .destinations
                .iter()
                .any(|d| self.service(d).is_some())
    }
}

/// The config [`render`] wrote, and what it did with each command.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// The file's text.
    pub text: String,
    /// Ids of the commands in force in it.
    pub applied: Vec<String>,
    /// Commands left out, with why.
    pub refused: Vec<(String, String)>,
    /// Commands applied less strictly than they say, with how (a rate below NGINX's least,
    /// 1 r/m).
    pub loosened: Vec<(String, String)>,
}

/// What one command adds.
#[derive(Default)]
struct Part {
    http: String,
    /// How the command is applied less strictly than it says.
    loosened: Vec<String>,
    /// Per service: lines of its location.
    location: BTreeMap<String, String>,
    /// Per service: the shortest `proxy_read_timeout`, ms.
    timeout_ms: BTreeMap<String, u64>,
    /// Per service, per version: the weight left to it (0 = down).
    quarantine: BTreeMap<String, BTreeMap<String, f64>>,
}

/// `[|]`-safe regex of one name (already [`safe_name`]): `.` bracketed, the rest literal.
fn literal(name: &str) -> String {
    name.replace('.', "[.]")
}

fn alternatives<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<String> = names.into_iter().map(|n| literal(n)).collect();
    if v.is_empty() {
        ".*".into()
    } else {
        format!("(?:{})", v.join("|"))
    }
}

/// The anchored regex of a map entry on `caller|zone|tier`. A field the command does not
/// narrow matches anything, `|` included (`.*`): the values come from request headers, and a
/// `|` in a zone or tier header must not take a request out of a command on its caller.
fn who_regex(callers: &str, zone: Option<&str>, tier: Option<&str>) -> String {
    let any = ".*".to_string();
    format!(
        "~^{callers}[|]{}[|]{}$",
        zone.map_or(any.clone(), literal),
        tier.map_or(any, literal)
    )
}

/// NGINX's `limit_req` rate for `rps` req/s: whole requests per minute, rounded down (never
/// looser than the command), at least 1 (NGINX's least: looser below 1 r/m).
fn rate_per_minute(rps: f64) -> u64 {
    ((rps * 60.0 + 1e-9).floor() as u64).max(1)
}

/// Short, stable name of a command's NGINX objects (unique in one rendering: see
/// [`render`]).
fn tag(id: &str) -> String {
    format!("gw_{:08x}", crc32fast::hash(id.as_bytes()))
}

/// `id` as it may appear in a config comment: characters outside `[A-Za-z0-9._:/>=@,+-]`
/// (a newline would end the comment and start a directive) become `_`.
fn comment(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:/>=@,+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// HTTP statuses a command may answer with: 200 to 599 (NGINX's `return` takes these).
const STATUSES: std::ops::RangeInclusive<u16> = 200..=599;
/// The highest rate a backpressure command may set, req/s.
const MAX_RPS: f64 = 1e6;
/// The longest `slower_than_us` NGINX gets as `proxy_read_timeout`, µs (a day).
const MAX_TIMEOUT_US: u64 = 86_400_000_000;

fn part(site: &Site, who: &str, base: String, c: &RemediationCommand) -> Result<Part, String> {
    let t = &c.target;
    let status = |s: u16| {
        if STATUSES.contains(&s) {
            Ok(s)
        } else {
            Err(format!("status {s}: NGINX returns 200 to 599"))
        }
    };
    for name in t
        .sources
        .iter()
        .chain(&t.destinations)
        .chain(&t.source_zone)
        .chain(&t.version)
    {
        if !safe_name(name) {
            return Err(format!(
                "{name:?}: names are [A-Za-z0-9._:/-] (refused rather than written into NGINX config)"
            ));
        }
    }
    if t.source_zone.is_some() && site.caller_zone.is_none() {
        return Err("scoped to a source zone, but the site names no caller-zone variable".into());
    }
    let services: Vec<&Service> = t
        .destinations
        .iter()
        .filter_map(|d| site.service(d))
        .collect();
    let zone = t.source_zone.as_deref();
    let mut p = Part::default();
    let flag = |p: &mut Part, name: &str, entries: &[(String, &str)]| {
        let _ = writeln!(p.http, "map \"{who}\" ${name} {{");
        for (regex, value) in entries {
            let _ = writeln!(p.http, "    \"{regex}\" \"{value}\";");
        }
        let _ = writeln!(p.http, "    default \"\";\n}}");
    };
    match &c.parameters {
        Parameters::Segmentation(s) => {
            status(s.status)?;
            let name = base.clone();
            flag(
                &mut p,
                &name,
                &[(who_regex(&alternatives(&t.sources), zone, None), "1")],
            );
            for s2 in &services {
                p.location.insert(
                    s2.name.clone(),
                    format!("if (${name}) {{ return {}; }}\n", s.status),
                );
            }
        }
        Parameters::CircuitBreaker(cb) => {
            status(cb.status)?;
            if let Some(tier) = &cb.tier {
                if !safe_name(tier) {
                    return Err(format!("tier {tier:?}: names are [A-Za-z0-9._:/-]"));
                }
                if site.caller_tier.is_none() {
                    return Err(
                        "scoped to a tier, but the site names no caller-tier variable".into(),
                    );
                }
            }
            if let Some(us) = cb.slower_than_us {
                if !(1..=MAX_TIMEOUT_US).contains(&us) {
                    return Err(format!("slower-than {us} µs: 1 µs to a day"));
                }
                if cb.tier.is_some() || !t.sources.is_empty() || zone.is_some() {
                    return Err("slower-than for some callers only: NGINX's proxy_read_timeout takes no variables, so it would time out every caller".into());
                }
                for s2 in &services {
                    p.timeout_ms
                        .insert(s2.name.clone(), us.div_ceil(1000).max(1));
                }
            } else {
                let name = base.clone();
                flag(
                    &mut p,
                    &name,
                    &[(
                        who_regex(&alternatives(&t.sources), zone, cb.tier.as_deref()),
                        "1",
                    )],
                );
                for s2 in &services {
                    p.location.insert(
                        s2.name.clone(),
                        format!("if (${name}) {{ return {}; }}\n", cb.status),
                    );
                }
            }
        }
        Parameters::Backpressure(b) => {
            let mut lines = String::new();
            for (i, (caller, rps)) in b.rate_limit_rps.iter().enumerate() {
                if !safe_name(caller) {
                    return Err(format!("caller {caller:?}: names are [A-Za-z0-9._:/-]"));
                }
                if !(*rps > 0.0 && *rps <= MAX_RPS) {
                    return Err(format!(
                        "{caller}: {rps} req/s: above 0 and at most {MAX_RPS}"
                    ));
                }
                let name = format!("{base}_{i}");
                flag(
                    &mut p,
                    &name,
                    &[(who_regex(&literal(caller), zone, None), caller.as_str())],
                );
                let per_minute = rate_per_minute(*rps);
                if rps * 60.0 + 1e-9 < 1.0 {
                    p.loosened.push(format!(
                        "{caller}: {rps} req/s is applied as {per_minute} r/m ({:.4} req/s): \
                         NGINX limits by whole requests per minute",
                        per_minute as f64 / 60.0
                    ));
                }
                let burst = (rps.floor() as u64).max(1);
                let _ = writeln!(
                    p.http,
                    "limit_req_zone ${name} zone={name}:1m rate={per_minute}r/m;"
                );
                let _ = writeln!(lines, "limit_req zone={name} burst={burst} nodelay;");
            }
            for s2 in &services {
                p.location.insert(s2.name.clone(), lines.clone());
            }
        }
        Parameters::Bulkhead(b) => {
            if b.max_concurrency
                .is_some_and(|n| !(1..=1_000_000).contains(&n))
            {
                return Err(format!(
                    "max-concurrency {:?}: 1 to 1000000",
                    b.max_concurrency
                ));
            }
            for (i, s2) in services.iter().enumerate() {
                let name = format!("{base}_{i}");
                let allowed: Vec<&String> = b
                    .allow
                    .iter()
                    .filter(|e| e.destination == s2.name)
                    .map(|e| &e.source)
                    .collect();
                for a in &allowed {
                    if !safe_name(a) {
                        return Err(format!("allow {a:?}: names are [A-Za-z0-9._:/-]"));
                    }
                }
                let mut entries = Vec::new();
                if !allowed.is_empty() {
                    entries.push((who_regex(&alternatives(allowed), None, None), ""));
                }
                entries.push((who_regex(&alternatives(&t.sources), zone, None), "1"));
                flag(&mut p, &name, &entries);
                let line = match b.max_concurrency {
                    Some(n) => {
                        let _ = writeln!(p.http, "limit_conn_zone ${name} zone={name}:1m;");
                        format!("limit_conn {name} {n};\n")
                    }
                    None => format!("if (${name}) {{ return 403; }}\n"),
                };
                p.location.insert(s2.name.clone(), line);
            }
        }
        Parameters::Quarantine(q) => {
            let Some(version) = &t.version else {
                return Err("a quarantine names no version".into());
            };
            if !(0.0..1.0).contains(&q.weight) {
                return Err(format!("weight {}: at least 0 and below 1", q.weight));
            }
            for s2 in &services {
                if !s2
                    .servers
                    .iter()
                    .any(|s| s.version.as_deref() == Some(version))
                {
                    continue;
                }
                if q.weight == 0.0
                    && s2
                        .servers
                        .iter()
                        .all(|s| s.version.as_deref() == Some(version))
                {
                    return Err(format!(
                        "{} runs only version {version} here: taking it out would leave no server",
                        s2.name
                    ));
                }
                p.quarantine
                    .entry(s2.name.clone())
                    .or_default()
                    .insert(version.clone(), q.weight);
            }
        }
    }
    Ok(p)
}

/// NGINX weights of `service`'s servers with `quarantine` (version → share of the requests
/// it keeps): `None` is `down`. The kept share `w` of the quarantined servers (`n_q` of them,
/// the rest `n_o`) is reached with weights in the ratio `w·n_o : (1−w)·n_q`, the others at
/// 100× their configured weight.
fn weights(service: &Service, quarantine: Option<&BTreeMap<String, f64>>) -> Vec<Option<u32>> {
    let share =
        |s: &Server| quarantine.and_then(|q| s.version.as_ref().and_then(|v| q.get(v).copied()));
    let n_q = service
        .servers
        .iter()
        .filter(|s| share(s).is_some())
        .count() as f64;
    let n_o = service.servers.len() as f64 - n_q;
    service
        .servers
        .iter()
        .map(|s| match share(s) {
            None => Some(s.weight.saturating_mul(100)),
            Some(w) if w <= 0.0 => None,
            Some(w) => {
                let ratio = if n_o == 0.0 {
                    1.0
                } else {
                    w * n_o / ((1.0 - w) * n_q)
                };
                Some(((100.0 * ratio).round() as u32).max(1))
            }
        })
        .collect()
}

/// Upstream name of a service.
fn upstream(service: &Service) -> String {
    let mut s: String = service
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    s.insert_str(0, "graywatch_");
    s
}

/// The file that puts `commands` (each already verified, in force and in enforce mode) in
/// force on `site`, in `id` order. A command NGINX can't express is left out, in
/// [`Rendered::refused`] with the reason.
pub fn render(site: &Site, commands: &[&RemediationCommand]) -> Rendered {
    let who = format!(
        "{}|{}|{}",
        site.caller,
        site.caller_zone.as_deref().unwrap_or(""),
        site.caller_tier.as_deref().unwrap_or("")
    );
    let mut out = Rendered::default();
    let mut http = String::new();
    let mut locations: BTreeMap<String, String> = BTreeMap::new();
    let mut timeouts: BTreeMap<String, u64> = BTreeMap::new();
    let mut quarantine: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut sorted: Vec<&&RemediationCommand> = commands.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut tags = BTreeSet::new();
    for c in sorted {
        // two ids with one CRC-32 get distinct names
        let mut name = tag(&c.id);
        while !tags.insert(name.clone()) {
            name.push('x');
        }
        let p = part(site, &who, name, c).and_then(|p| {
            // what every quarantine in force together leaves each service
            for (service, versions) in &p.quarantine {
                let mut q = quarantine.get(service).cloned().unwrap_or_default();
                q.extend(versions.iter().map(|(v, w)| (v.clone(), *w)));
                let s = site
                    .service(service)
                    .expect("parts name the site's services");
                if weights(s, Some(&q)).iter().all(Option::is_none) {
                    return Err(format!(
                        "{service}: with the quarantines in force, this one would leave no server"
                    ));
                }
            }
            Ok(p)
        });
        match p {
            Err(reason) => out.refused.push((c.id.clone(), reason)),
            Ok(p) => {
                let _ = writeln!(http, "# {} (revision {})", comment(&c.id), c.revision);
                http.push_str(&p.http);
                out.loosened
                    .extend(p.loosened.iter().map(|l| (c.id.clone(), l.clone())));
                for (service, lines) in p.location {
                    let text = locations.entry(service).or_default();
                    let _ = writeln!(text, "        # {}", comment(&c.id));
                    for l in lines.lines() {
                        let _ = writeln!(text, "        {l}");
                    }
                }
                for (service, ms) in p.timeout_ms {
                    let t = timeouts.entry(service).or_insert(ms);
                    *t = (*t).min(ms);
                }
                for (service, versions) in p.quarantine {
                    let q = quarantine.entry(service).or_default();
                    for (v, w) in versions {
                        let kept = q.entry(v).or_insert(w);
                        *kept = kept.min(w);
                    }
                }
                out.applied.push(c.id.clone());
            }
        }
    }
    let text = &mut out.text;
    let _ = writeln!(
        text,
        "# Written by `graywatch enforce nginx`; rewritten on every change, do not edit.\n\
         # {} command(s) in force.\n",
        out.applied.len()
    );
    // the caller variables, named even when no command uses them: `nginx -t` then refuses
    // one it does not know at once (a map costs nothing until its variable is read)
    let _ = writeln!(
        text,
        "map \"{who}\" $graywatch_site_caller {{\n    default \"\";\n}}"
    );
    text.push_str(&http);
    for s in &site.services {
        let _ = writeln!(text, "\nupstream {} {{", upstream(s));
        for (server, weight) in s.servers.iter().zip(weights(s, quarantine.get(&s.name))) {
            let version = server.version.as_deref().unwrap_or("-");
            match weight {
                Some(w) => {
                    let _ = writeln!(
                        text,
                        "    server {} weight={w}; # {version}",
                        server.address
                    );
                }
                None => {
                    let _ = writeln!(
                        text,
                        "    server {} down; # {version}, quarantined",
                        server.address
                    );
                }
            }
        }
        text.push_str("}\n");
    }
    let _ = writeln!(
        text,
        "\nserver {{\n    listen {};\n    limit_req_status 429;\n    limit_conn_status 503;",
        site.listen
    );
    for s in &site.services {
        let _ = writeln!(text, "    location {} {{", s.location);
        if let Some(lines) = locations.get(&s.name) {
            text.push_str(lines);
        }
        if let Some(ms) = timeouts.get(&s.name) {
            let _ = writeln!(text, "        proxy_read_timeout {ms}ms;");
        }
        let _ = writeln!(text, "        proxy_pass http://{};\n    }}", upstream(s));
    }
    text.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::tests::command;
    use serde_json::json;

    fn site() -> Site {
        let s: Site = toml::from_str(
            r#"
            listen = "127.0.0.1:8080"
            caller = "$http_x_graywatch_caller"
            caller-zone = "$http_x_graywatch_zone"
            zone = "eu-1"
            [[services]]
            name = "orders"
            location = "/orders/"
            servers = [{ address = "10.0.0.1:80", version = "v1" },
                       { address = "10.0.0.2:80", version = "v1" },
                       { address = "10.0.0.3:80", version = "v2" }]
            [[services]]
            name = "ts-auth.service"
            location = "/auth/"
            servers = [{ address = "10.0.0.9:80", version = "v7" }]
            "#,
        )
        .unwrap();
        s.check().unwrap();
        s
    }

    #[test]
    fn bulkhead_caps_matched_callers_together_and_spares_the_allow_list() {
        let c = command(json!({
            "id": "bulkhead/zones/1", "pattern": "bulkhead",
            "target": { "sources": [], "destinations": ["orders", "ts-auth.service"], "source_zone": "us-2" },
            "parameters": { "max_concurrency": 40, "allow": [{ "source": "ts-auth.service", "destination": "orders" }] },
        }));
        let r = render(&site(), &[&c]);
        assert_eq!(r.applied, ["bulkhead/zones/1"]);
        let tag = tag("bulkhead/zones/1");
        let t = &r.text;
        // orders: the allow-listed caller maps to the empty key first, then the zone's callers
        assert!(t.contains(&format!(
            "map \"$http_x_graywatch_caller|$http_x_graywatch_zone|\" ${tag}_0 {{\n    \"~^(?:ts-auth[.]service)[|].*[|].*$\" \"\";\n    \"~^.*[|]us-2[|].*$\" \"1\";"
        )), "{t}");
        assert!(
            t.contains(&format!("limit_conn_zone ${tag}_0 zone={tag}_0:1m;")),
            "{t}"
        );
        assert!(t.contains(&format!("limit_conn {tag}_0 40;")), "{t}");
        assert!(
            t.contains(&format!("limit_conn {tag}_1 40;")),
            "auth capped too: {t}"
        );
    }

    #[test]
    fn backpressure_rates_are_per_minute_and_quarantine_weights_keep_the_share() {
        let bp = command(json!({
            "id": "backpressure/orders/1", "pattern": "backpressure",
            "target": { "sources": ["a", "b"], "destinations": ["orders"] },
            "parameters": { "rate_limit_rps": { "a": 2.5, "b": 0.01 } },
        }));
        let q = command(json!({
            "id": "quarantine/orders/1", "pattern": "quarantine",
            "target": { "sources": [], "destinations": ["orders"], "version": "v2" },
            "parameters": { "weight": 0.2 },
        }));
        let r = render(&site(), &[&q, &bp]);
        let t = &r.text;
        let tag = tag("backpressure/orders/1");
        assert!(
            t.contains(&format!("zone={tag}_0:1m rate=150r/m;")),
            "2.5 req/s: {t}"
        );
        assert!(
            t.contains(&format!("zone={tag}_1:1m rate=1r/m;")),
            "0.01 req/s rounds up to the least NGINX has: {t}"
        );
        // whole requests per minute, rounded down: never looser, but below 1 r/m
        assert_eq!(
            [0.0917, 2.51, 2.5, 1.0 / 60.0, 0.016].map(rate_per_minute),
            [5, 150, 150, 1, 1]
        );
        // and says so; 2.5 req/s (150 r/m) is exact
        assert_eq!(
            r.loosened,
            [(
                "backpressure/orders/1".to_owned(),
                "b: 0.01 req/s is applied as 1 r/m (0.0167 req/s): NGINX limits by whole \
                 requests per minute"
                    .to_owned()
            )]
        );
        assert!(
            t.contains(&format!("limit_req zone={tag}_0 burst=2 nodelay;")),
            "{t}"
        );
        // v2 keeps 20 %: 1 server at weight w against 2 at 100 → w / (w + 200) = 0.2 → w = 50
        assert!(t.contains("server 10.0.0.3:80 weight=50; # v2"), "{t}");
        assert!(t.contains("server 10.0.0.1:80 weight=100; # v1"), "{t}");
        assert_eq!(
            r.applied,
            ["backpressure/orders/1", "quarantine/orders/1"],
            "in id order"
        );
    }

    /// Two backpressure commands on one caller (a black hole's and a storm's) each keep their
    /// zone in the location: NGINX applies every `limit_req` of a location, so the lowest
    /// limit is the one a caller meets, and each command still goes with its own incident.
    #[test]
    fn overlapping_backpressure_commands_leave_the_lowest_limit_in_force() {
        let hole = command(json!({
            "id": "backpressure/node/orders/1", "pattern": "backpressure",
            "target": { "sources": ["a"], "destinations": ["orders"] },
            "parameters": { "rate_limit_rps": { "a": 5.0 } },
        }));
        let storm = command(json!({
            "id": "backpressure/sources/orders/2", "pattern": "backpressure",
            "target": { "sources": ["a", "b"], "destinations": ["orders"] },
            "parameters": { "rate_limit_rps": { "a": 2.0, "b": 1.0 } },
        }));
        let (h, st) = (
            tag("backpressure/node/orders/1"),
            tag("backpressure/sources/orders/2"),
        );
        let r = render(&site(), &[&storm, &hole]);
        assert_eq!(r.refused, []);
        let t = &r.text;
        let orders = &t[t.find("location /orders/").expect("orders' location")..];
        let orders = &orders[..orders.find('}').expect("its end")];
        for zone in [
            format!("{h}_0 burst=5"),
            format!("{st}_0 burst=2"),
            format!("{st}_1 burst=1"),
        ] {
            assert!(
                orders.contains(&format!("limit_req zone={zone} nodelay;")),
                "{zone}: {t}"
            );
        }
        assert!(t.contains(&format!("zone={h}_0:1m rate=300r/m;")), "{t}");
        assert!(t.contains(&format!("zone={st}_0:1m rate=120r/m;")), "{t}");
        // the storm's command revoked: the black hole's limit alone
        let r = render(&site(), &[&hole]);
        assert!(!r.text.contains(&st), "{}", r.text);
        assert!(
            r.text
                .contains(&format!("limit_req zone={h}_0 burst=5 nodelay;"))
        );
    }

    #[test]
    fn what_nginx_cannot_express_is_refused_with_the_reason() {
        let s = site();
        let only_version = command(json!({
            "id": "quarantine/auth/1", "pattern": "quarantine",
            "target": { "sources": [], "destinations": ["ts-auth.service"], "version": "v7" },
            "parameters": { "weight": 0.0 },
        }));
        let injected = command(json!({
            "id": "segmentation/x/1",
            "target": { "sources": ["a\"; } evil {"], "destinations": ["orders"] },
        }));
        let tier_timeout = command(json!({
            "id": "circuit-breaker/orders/1", "pattern": "circuit-breaker",
            "target": { "sources": ["a"], "destinations": ["orders"] },
            "parameters": { "status": 503, "slower_than_us": 2_500_000 },
        }));
        let timeout = command(json!({
            "id": "circuit-breaker/orders/2", "pattern": "circuit-breaker",
            "target": { "sources": [], "destinations": ["orders"] },
            "parameters": { "status": 503, "slower_than_us": 2_500_000 },
        }));
        let r = render(&s, &[&only_version, &injected, &tier_timeout, &timeout]);
        assert_eq!(r.applied, ["circuit-breaker/orders/2"]);
        let why: BTreeMap<&str, &str> = r
            .refused
            .iter()
            .map(|(i, w)| (i.as_str(), w.as_str()))
            .collect();
        assert!(
            why["quarantine/auth/1"].contains("would leave no server"),
            "{why:?}"
        );
        assert!(why["segmentation/x/1"].contains("names are"), "{why:?}");
        assert!(
            why["circuit-breaker/orders/1"].contains("proxy_read_timeout takes no variables"),
            "{why:?}"
        );
        assert!(!r.text.contains("evil"));
        assert!(r.text.contains("proxy_read_timeout 2500ms;"), "{}", r.text);
    }

    #[test]
    fn a_command_for_another_zone_or_service_is_not_for_this_site() {
        let s = site();
        assert!(s.concerns(&command(json!({}))));
        assert!(!s.concerns(&command(
            json!({ "target": { "sources": [], "destinations": ["payments"] } })
        )));
        assert!(!s.concerns(&command(json!({ "target": { "sources": [], "destinations": ["orders"], "destination_zone": "us-2" } }))));
        assert!(s.concerns(&command(json!({ "target": { "sources": [], "destinations": ["orders"], "destination_zone": "eu-1" } }))));
    }

    #[test]
    fn a_site_that_would_inject_config_is_refused() {
        let refused = |text: &str| {
            toml::from_str::<Site>(text)
                .unwrap()
                .check()
                .unwrap_err()
                .to_string()
        };
        let bad = |patch: &str| {
            let text = format!(
                "listen = \"127.0.0.1:8080\"\ncaller = \"$http_x\"\n{patch}\n[[services]]\nname = \"orders\"\nlocation = \"/o/\"\nservers = [{{ address = \"10.0.0.1:80\" }}]\n"
            );
            refused(&text)
        };
        assert!(bad("caller-zone = \"zone; evil\"").contains("caller-zone"));
        let two = |second: &str| {
            let text = format!(
                "listen = \"127.0.0.1:8080\"\ncaller = \"$http_x\"\n[[services]]\nname = \"a.b\"\nlocation = \"/o/\"\nservers = [{{ address = \"10.0.0.1:80\" }}]\n[[services]]\n{second}\nservers = [{{ address = \"10.0.0.2:80\", version = \"v1\" }}]\n"
            );
            refused(&text)
        };
        assert!(two("name = \"a-b\"\nlocation = \"/p/\"").contains("upstream name graywatch_a_b"));
        assert!(
            two("name = \"c\"\nlocation = \"/o/\"").contains("location /o/ is another service's")
        );
        let e = refused(
            "listen = \"127.0.0.1:8080\"\ncaller = \"$http_x\"\n[[services]]\nname = \"c\"\nlocation = \"/o/\"\nservers = [{ address = \"10.0.0.2:80\", version = \"v1\\n}\" }]\n",
        );
        assert!(e.contains("version"), "{e}");
        let e = refused("listen = \"x; y\"\ncaller = \"$a\"\nservices = []\n");
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn ids_never_reach_the_config_as_text_and_colliding_ids_get_distinct_names() {
        let s = site();
        let injected = command(
            json!({ "id": "segmentation/orders/2\nadd_header X-Injected by-id always;\ndeny all;\n#" }),
        );
        // two ids with one CRC-32
        let a = command(json!({ "id": "segmentation/orders/29685295" }));
        let b = command(
            json!({ "id": "segmentation/orders/32060020", "target": { "sources": ["mallory"], "destinations": ["orders"] } }),
        );
        assert_eq!(tag(&a.id), tag(&b.id));
        let r = render(&s, &[&injected, &a, &b]);
        assert_eq!(r.applied.len(), 3);
        assert!(
            !r.text.contains("\nadd_header") && !r.text.contains("\ndeny all"),
            "{}",
            r.text
        );
        assert!(r.text.contains("# segmentation/orders/2_add_header_X-Injected_by-id_always__deny_all___ (revision 0)"), "{}", r.text);
        let t = tag(&a.id);
        assert!(
            r.text.contains(&format!("if (${t}) {{ return 403; }}")),
            "{}",
            r.text
        );
        assert!(
            r.text.contains(&format!("if (${t}x) {{ return 403; }}")),
            "{}",
            r.text
        );
    }

    #[test]
    fn parameters_out_of_nginx_range_are_refused_one_command_at_a_time() {
        let s = site();
        let bad = [
            json!({ "id": "s/1", "parameters": { "status": 1000 } }),
            json!({ "id": "b/1", "pattern": "bulkhead", "parameters": { "max_concurrency": 0 } }),
            json!({ "id": "r/1", "pattern": "backpressure", "parameters": { "rate_limit_rps": { "a": 1e18 } } }),
            json!({ "id": "c/1", "pattern": "circuit-breaker", "target": { "sources": [], "destinations": ["orders"] }, "parameters": { "status": 503, "slower_than_us": 18_446_744_073_709_551_615u64 } }),
            json!({ "id": "q/1", "pattern": "quarantine", "target": { "sources": [], "destinations": ["orders"], "version": "v2" }, "parameters": { "weight": 1.0 } }),
        ];
        let commands: Vec<RemediationCommand> = bad.into_iter().map(command).collect();
        let good = command(json!({ "id": "s/2" }));
        let mut all: Vec<&RemediationCommand> = commands.iter().collect();
        all.push(&good);
        let r = render(&s, &all);
        assert_eq!(r.applied, ["s/2"]);
        assert_eq!(r.refused.len(), 5, "{:?}", r.refused);
    }

    #[test]
    fn quarantines_together_never_leave_a_service_no_server() {
        let q = |id: &str, v: &str| {
            command(json!({
                "id": id, "pattern": "quarantine",
                "target": { "sources": [], "destinations": ["orders"], "version": v },
                "parameters": { "weight": 0.0 },
            }))
        };
        let (v1, v2) = (
            q("quarantine/orders/v1", "v1"),
            q("quarantine/orders/v2", "v2"),
        );
        let r = render(&site(), &[&v1, &v2]);
        assert_eq!(r.applied, ["quarantine/orders/v1"]);
        assert!(
            r.refused[0].1.contains("would leave no server"),
            "{:?}",
            r.refused
        );
        assert!(
            r.text.contains("server 10.0.0.3:80 weight=100; # v2"),
            "{}",
            r.text
        );
    }
}
