//! From a log line's fields to source and destination services, zones and versions.
//!
//! A log line tells *what* happened; which services were on each end depends on who wrote it.
//! The mapping says so: the service whose proxy wrote the file (`service`, `zone`, `version`),
//! and ordered rules that match one field of the line (authority, upstream host, upstream
//! cluster, …) against a glob pattern and name the peer. The first matching rule in the order
//! written wins, whatever field it matches: a rule on the authority written before a rule on the
//! upstream cluster wins over it (write rules on the fields the proxy fills in — upstream
//! cluster, upstream host — first, since a client chooses its `Host`). When none matches, each
//! parser falls back to a documented default that puts the service that answered (upstream
//! cluster, upstream name) before the authority; a request that reached no service (no route,
//! no upstream) goes to [`schemas::UNROUTED`] before any rule is consulted.
//!
//! Rules are compiled per side and field, so that a line costs about the same with 10 000
//! rules as with one: patterns without `*` go into a hash map, `prefix*` patterns into a
//! byte trie, `*suffix` patterns into a trie of reversed bytes, and `*` alone is remembered;
//! each answers the lowest rule number matching the value in one pass over it. Only patterns
//! with a `*` inside (`10.1.*:8080`, `*.svc.*`) are tried one by one, in rule order, and only
//! those numbered before the best match found so far: each costs one glob match per line that
//! reaches it.
//!
//! ```toml
//! [mapping]
//! service = "frontend"        # this file is written by the sidecar of frontend
//! zone = "eu-west-1a"
//! [[mapping.rules]]
//! field = "upstream-host"
//! pattern = "10.1.*"
//! service = "catalog"
//! zone = "eu-west-1b"
//! ```

use std::cell::RefCell;

use schemas::{FlowRecordRef, Reporter};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Which side of the call a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// The called service (default).
    #[default]
    Destination,
    /// The calling service.
    Source,
}

/// A field of a log line that a rule can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchField {
    /// `:authority` / `Host` header, as logged (may carry a `:port`).
    Authority,
    /// Upstream host `ip:port` (Envoy `%UPSTREAM_HOST%`, NGINX `$upstream_addr`' last entry).
    UpstreamHost,
    /// Envoy/Istio upstream cluster (`outbound|9080||reviews.default.svc.cluster.local`).
    UpstreamCluster,
    /// Address of the downstream peer (Istio `%DOWNSTREAM_REMOTE_ADDRESS%`, NGINX `$remote_addr`).
    DownstreamAddress,
    /// ingress-nginx `$proxy_upstream_name` (`default-web-8080`).
    UpstreamName,
    /// Kubernetes pod name (spans' `PodName`, container-runtime envelope).
    Pod,
}

/// One mapping rule as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleConfig {
    /// The field to look at.
    pub field: MatchField,
    /// Glob pattern: `*` matches any run of characters, everything else itself.
    pub pattern: String,
    /// Which side the rule names (default `destination`).
    #[serde(default)]
    pub side: Side,
    /// The service; when omitted, the matched value less any `:port` suffix.
    pub service: Option<String>,
    /// The zone of that service.
    pub zone: Option<String>,
    /// The version of that service.
    pub version: Option<String>,
}

/// The `[mapping]` section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MappingConfig {
    /// The service whose proxy wrote the input (a sidecar's workload, an edge proxy's name);
    /// when given, not empty (nor are `zone` and `version`).
    pub service: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Rules naming the peer from a field of the line, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Who wrote each line, from a shipper's envelope or Kafka headers (see
    /// [`crate::writer`]).
    #[serde(default)]
    pub writer: crate::writer::WriterConfig,
    /// The writer of each input file of `replay`, by path (several sidecars' files in one
    /// run, each credited to its own workload); the first matching entry wins.
    #[serde(default)]
    pub inputs: Vec<InputMappingConfig>,
}

/// One `[[mapping.inputs]]` entry: the files it matches and who wrote them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InputMappingConfig {
    /// Glob on the input's path as given on the command line (`*` matches any run of
    /// characters, `/` included): `"logs/reviews-*.log"`, `"*/ratings.log"`.
    pub path: String,
    /// The service whose proxy wrote the matching files.
    pub service: String,
    /// Its zone.
    pub zone: Option<String>,
    /// Its version.
    pub version: Option<String>,
}

/// One end of a call as the mapping resolved it, borrowing from the mapping or the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint<'a> {
    /// Service name.
    pub service: &'a str,
    /// Zone, when known.
    pub zone: Option<&'a str>,
    /// Version, when known.
    pub version: Option<&'a str>,
}

#[derive(Debug, Clone)]
struct Rule {
    field: MatchField,
    side: Side,
    pattern: Vec<String>,
    anchored_start: bool,
    anchored_end: bool,
    service: Option<String>,
    zone: Option<String>,
    version: Option<String>,
}

impl Rule {
    fn matches(&self, value: &str) -> bool {
        glob_match(&self.pattern, self.anchored_start, self.anchored_end, value)
    }
}

/// Matches `value` against a glob split at `*` into `parts`.
fn glob_match(parts: &[String], anchored_start: bool, anchored_end: bool, value: &str) -> bool {
    let mut rest = value;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 && anchored_start {
            match rest.strip_prefix(part.as_str()) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 && anchored_end {
            return rest.len() >= part.len() && rest.ends_with(part.as_str());
        } else {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    !anchored_end || rest.is_empty()
}

/// A trie over bytes whose nodes hold the lowest rule number of a pattern ending there.
#[derive(Debug, Clone, Default)]
struct Trie {
    /// Node 0 is the root (once anything is inserted).
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Clone)]
struct TrieNode {
    /// (byte, child node), sorted by byte.
    children: Vec<(u8, u32)>,
    /// The lowest rule number of a pattern ending here, `u32::MAX` for none.
    rule: u32,
}

impl TrieNode {
    fn new() -> Self {
        TrieNode {
            children: Vec::new(),
            rule: u32::MAX,
        }
    }
}

impl Trie {
    fn insert(&mut self, key: impl Iterator<Item = u8>, rule: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::new());
        }
        let mut at = 0usize;
        for b in key {
            let children = &self.nodes[at].children;
            at = match children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => children[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len();
                    self.nodes[at].children.insert(i, (b, next as u32));
                    self.nodes.push(TrieNode::new());
                    next
                }
            };
        }
        let node = &mut self.nodes[at];
        node.rule = node.rule.min(rule);
    }

    /// The lowest rule number of the patterns that are prefixes of `key` (`u32::MAX`: none).
    fn lowest(&self, key: impl Iterator<Item = u8>) -> u32 {
        let Some(root) = self.nodes.first() else {
            return u32::MAX;
        };
        let mut best = root.rule;
        let mut at = root;
        for b in key {
            match at.children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => {
                    at = &self.nodes[at.children[i].1 as usize];
                    best = best.min(at.rule);
                }
                Err(_) => break,
            }
        }
        best
    }
}

/// The rules of one side and one field, compiled (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
struct FieldRules {
    /// Patterns without `*` → the lowest rule number.
    exact: foldhash::HashMap<String, u32>,
    /// `prefix*` patterns.
    prefix: Trie,
    /// `*suffix` patterns, bytes reversed.
    suffix: Trie,
    /// The lowest rule number of a pattern of only `*`s (matches anything), `u32::MAX` for none.
    any: u32,
    /// Rule numbers of the other patterns, ascending.
    other: Vec<u32>,
}

impl FieldRules {
    fn new() -> Self {
        FieldRules {
            any: u32::MAX,
            ..FieldRules::default()
        }
    }

    fn add(&mut self, n: u32, rule: &Rule) {
        match (
            rule.pattern.as_slice(),
            rule.anchored_start,
            rule.anchored_end,
        ) {
            ([], _, _) => self.any = self.any.min(n),
            ([p], true, true) => {
                let e = self.exact.entry(p.clone()).or_insert(n);
                *e = (*e).min(n);
            }
            ([p], true, false) => self.prefix.insert(p.bytes(), n),
            ([p], false, true) => self.suffix.insert(p.bytes().rev(), n),
            _ => self.other.push(n),
        }
    }

    /// The lowest number below `below` of a rule matching `value` (`u32::MAX`: none).
    fn lowest(&self, rules: &[Rule], value: &str, below: u32) -> u32 {
        let mut best = below.min(self.any);
        if let Some(&n) = self.exact.get(value) {
            best = best.min(n);
        }
        best = best.min(self.prefix.lowest(value.bytes()));
        best = best.min(self.suffix.lowest(value.bytes().rev()));
        for &n in &self.other {
            if n >= best {
                break;
            }
            if rules[n as usize].matches(value) {
                best = n;
                break;
            }
        }
        if best < below { best } else { u32::MAX }
    }
}

/// Number of [`MatchField`]s (the compiled rules' index).
const FIELDS: usize = 6;

/// The validated mapping that parsers consult.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    service: Option<String>,
    zone: Option<String>,
    version: Option<String>,
    rules: Vec<Rule>,
    /// `rules` compiled per side (destination, source) and field; empty without rules.
    compiled: Vec<[FieldRules; FIELDS]>,
    writer: crate::writer::WriterConfig,
    inputs: Vec<InputMapping>,
    /// Answers of [`Mapping::resolve`] for values seen lately, per side. A `RefCell`: a
    /// mapping is `Send` but not `Sync`, each parser (and each parsing thread) owns its copy.
    memo: [RefCell<ResolveMemo>; 2],
}

/// What [`Mapping::resolve`] answered for the fields of recent lines: a proxy writes the same
/// few hundred upstream hosts and authorities on millions of lines, so a line's fields are
/// usually looked up whole, in one hash, instead of rule by rule (`cargo bench --bench parse`,
/// `benches/peers.sh`).
///
/// Values that never repeat (a downstream address with its ephemeral port) would only fill it:
/// when fewer than a quarter of [`MEMO_PROBE`] lookups hit, it steps aside for
/// [`MEMO_BYPASS`] lookups and then tries again. It holds at most [`MEMO_CAP`] answers, of
/// fields of at most [`MEMO_KEY_BYTES`] together (a client's long `Host` is looked up by the
/// rules), so that it stays within a few MiB per parser.
#[derive(Debug, Default)]
struct ResolveMemo {
    /// Encoded fields (see [`ResolveMemo::encode`]) → the rule and the index in `fields` of
    /// the value it matched, `None` when no rule matched.
    answers: foldhash::HashMap<Box<[u8]>, Option<(u32, u32)>>,
    /// The key being looked up, reused across lines.
    key: Vec<u8>,
    lookups: u32,
    hits: u32,
    /// Lookups left during which the memo is not consulted.
    bypass: u32,
}

/// At most this many answers are kept per side (about 100 bytes each); the memo starts afresh
/// when full.
const MEMO_CAP: usize = 16_384;
/// Fields longer than this together (encoded) are not remembered.
const MEMO_KEY_BYTES: usize = 256;
/// Lookups between two checks of the memo's hit rate.
const MEMO_PROBE: u32 = 4_096;
/// Lookups during which a memo that missed too often stands aside.
const MEMO_BYPASS: u32 = 65_536;

impl Clone for ResolveMemo {
    /// A clone starts empty: answers are cheap to learn again.
    fn clone(&self) -> Self {
        ResolveMemo::default()
    }
}

impl ResolveMemo {
    /// `fields` as bytes that differ for any two lists: each field's tag, its value's length
    /// and its value.
    fn encode(&mut self, fields: &[(MatchField, &str)]) {
        self.key.clear();
        for &(field, value) in fields {
            self.key.push(field as u8);
            self.key
                .extend_from_slice(&(value.len() as u64).to_le_bytes());
            self.key.extend_from_slice(value.as_bytes());
        }
    }

    /// The rule and field index for `fields`, from the memo or from `compute` (and then
    /// remembered).
    fn answer(
        &mut self,
        fields: &[(MatchField, &str)],
        compute: impl FnOnce() -> Option<(u32, u32)>,
    ) -> Option<(u32, u32)> {
        if self.bypass > 0 {
            self.bypass -= 1;
            return compute();
        }
        self.lookups += 1;
        if self.lookups == MEMO_PROBE {
            let hit_enough = self.hits >= MEMO_PROBE / 4;
            self.lookups = 0;
            self.hits = 0;
            if !hit_enough {
                self.answers = Default::default();
                self.bypass = MEMO_BYPASS;
                return compute();
            }
        }
        // encoded: a tag and an 8-byte length per field, then its value
        if fields.iter().map(|(_, v)| 9 + v.len()).sum::<usize>() > MEMO_KEY_BYTES {
            return compute();
        }
        self.encode(fields);
        if let Some(&answer) = self.answers.get(self.key.as_slice()) {
            self.hits += 1;
            return answer;
        }
        let answer = compute();
        if self.answers.len() >= MEMO_CAP {
            self.answers.clear();
        }
        self.answers.insert(self.key.as_slice().into(), answer);
        answer
    }
}

#[derive(Debug, Clone)]
struct InputMapping {
    pattern: Vec<String>,
    anchored_start: bool,
    anchored_end: bool,
    service: String,
    zone: Option<String>,
    version: Option<String>,
}

/// A glob split at `*`, with whether it is anchored at each end.
fn compile_glob(pattern: &str) -> (Vec<String>, bool, bool) {
    (
        pattern
            .split('*')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        !pattern.starts_with('*'),
        !pattern.ends_with('*'),
    )
}

/// Why a configured name can't be one: it holds a control character
/// ([`schemas::first_control_char`]).
fn control(name: &str) -> Option<String> {
    schemas::first_control_char(name).map(|(at, c)| {
        format!(
            "{name:?} holds control character U+{:04X} at byte {at}: names go into JSON, Kafka \
             keys, metric labels and remediation targets",
            u32::from(c)
        )
    })
}

/// The index of `side` in [`Mapping`]'s compiled rules.
fn side_index(side: Side) -> usize {
    match side {
        Side::Destination => 0,
        Side::Source => 1,
    }
}

/// The service name used when neither the line nor the mapping names one.
pub const UNKNOWN_SERVICE: &str = "unknown";

impl TryFrom<MappingConfig> for Mapping {
    type Error = Error;

    /// # Errors
    /// [`Error::MappingKey`] for an empty or blank `service`, `zone` or `version`;
    /// [`Error::Mapping`] for a rule with an empty pattern, service, zone or version;
    /// [`Error::InputMapping`] likewise for an input entry; any of them when a name holds a
    /// control character.
    fn try_from(c: MappingConfig) -> Result<Self> {
        let blank = |v: &Option<String>| v.as_deref().is_some_and(|v| v.trim().is_empty());
        for (key, value) in [
            ("service", &c.service),
            ("zone", &c.zone),
            ("version", &c.version),
        ] {
            if blank(value) {
                return Err(Error::MappingKey {
                    key,
                    reason: "is empty: give a value or leave the key out".into(),
                });
            }
            if let Some(reason) = value.as_deref().and_then(control) {
                return Err(Error::MappingKey { key, reason });
            }
        }
        let rules = c
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, r)| {
                if r.pattern.is_empty() {
                    return Err(Error::Mapping {
                        index,
                        reason: "empty pattern".into(),
                    });
                }
                for (key, value) in [
                    ("service", &r.service),
                    ("zone", &r.zone),
                    ("version", &r.version),
                ] {
                    if blank(value) {
                        return Err(Error::Mapping {
                            index,
                            reason: format!("empty {key}"),
                        });
                    }
                    if let Some(reason) = value.as_deref().and_then(control) {
                        return Err(Error::Mapping {
                            index,
                            reason: format!("{key} {reason}"),
                        });
                    }
                }
                Ok(Rule {
                    field: r.field,
                    side: r.side,
                    anchored_start: !r.pattern.starts_with('*'),
                    anchored_end: !r.pattern.ends_with('*'),
                    pattern: r
                        .pattern
                        .split('*')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    service: r.service,
                    zone: r.zone,
                    version: r.version,
                })
            })
            .collect::<Result<_>>()?;
        c.writer.validate()?;
        let rules: Vec<Rule> = rules;
        let mut compiled = Vec::new();
        if !rules.is_empty() {
            compiled = vec![
                std::array::from_fn(|_| FieldRules::new()),
                std::array::from_fn(|_| FieldRules::new()),
            ];
            for (n, r) in rules.iter().enumerate() {
                let n = u32::try_from(n).map_err(|_| Error::Mapping {
                    index: n,
                    reason: "more than 2^32 rules".into(),
                })?;
                compiled[side_index(r.side)][r.field as usize].add(n, r);
            }
        }
        let inputs = c
            .inputs
            .into_iter()
            .enumerate()
            .map(|(index, i)| {
                if i.path.is_empty() {
                    return Err(Error::InputMapping {
                        index,
                        reason: "empty path".into(),
                    });
                }
                for (key, value) in [
                    ("service", Some(&i.service)),
                    ("zone", i.zone.as_ref()),
                    ("version", i.version.as_ref()),
                ] {
                    if value.is_some_and(|v| v.trim().is_empty()) {
                        return Err(Error::InputMapping {
                            index,
                            reason: format!("empty {key}"),
                        });
                    }
                    if let Some(reason) = value.map(String::as_str).and_then(control) {
                        return Err(Error::InputMapping {
                            index,
                            reason: format!("{key} {reason}"),
                        });
                    }
                }
                let (pattern, anchored_start, anchored_end) = compile_glob(&i.path);
                Ok(InputMapping {
                    pattern,
                    anchored_start,
                    anchored_end,
                    service: i.service,
                    zone: i.zone,
                    version: i.version,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Mapping {
            service: c.service,
            zone: c.zone,
            version: c.version,
            rules,
            compiled,
            writer: c.writer,
            inputs,
            memo: Default::default(),
        })
    }
}

/// A flow record from `source` to `destination`, with their zones and versions and every
/// other field empty (start time 0, reporter Envoy): parsers fill in the rest with
/// struct-update syntax, `FlowRecordRef { start_us, …, ..between(source, destination) }`.
pub fn between<'a>(source: Endpoint<'a>, destination: Endpoint<'a>) -> FlowRecordRef<'a> {
    FlowRecordRef {
        source_zone: source.zone,
        source_version: source.version,
        destination_zone: destination.zone,
        destination_version: destination.version,
        ..FlowRecordRef::new(0, source.service, destination.service, Reporter::Envoy)
    }
}

/// `host:port` → `host`; `[v6]:port` → `v6`; anything else unchanged.
pub fn strip_port(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match value.rfind(':') {
        Some(i)
            if value[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && value.matches(':').count() == 1 =>
        {
            &value[..i]
        }
        _ => value,
    }
}

impl Mapping {
    /// The service whose proxy wrote the input, if configured.
    pub fn own(&self) -> Option<Endpoint<'_>> {
        self.service.as_deref().map(|service| Endpoint {
            service,
            zone: self.zone.as_deref(),
            version: self.version.as_deref(),
        })
    }

    /// The own service's endpoint, named `fallback` when none is configured (zone and version
    /// from the config still apply).
    pub fn own_or<'a>(&'a self, fallback: &'a str) -> Endpoint<'a> {
        Endpoint {
            service: self.service.as_deref().unwrap_or(fallback),
            zone: self.zone.as_deref(),
            version: self.version.as_deref(),
        }
    }

    /// The first rule for `side` whose field is in `fields` (in rule order) and matches that
    /// field's value; `fields` pairs each field with its value in the line (absent fields are
    /// simply not listed). Returns `None` when no rule matches.
    ///
    /// Rules are compiled (see the [module docs](self)): the cost grows with the length of the
    /// values, not with the number of rules (except rules with a `*` inside a pattern).
    pub fn resolve<'a>(
        &'a self,
        side: Side,
        fields: &[(MatchField, &'a str)],
    ) -> Option<Endpoint<'a>> {
        let compiled = self.compiled.get(side_index(side))?;
        let lowest = || {
            // the lowest rule number over all fields, with the first field (in `fields`
            // order) that this rule matches
            let mut best: Option<(u32, u32)> = None;
            for (i, &(field, value)) in fields.iter().enumerate() {
                let below = best.map_or(u32::MAX, |(n, _)| n);
                let n = compiled[field as usize].lowest(&self.rules, value, below);
                if n < below {
                    best = Some((n, u32::try_from(i).expect("fewer than 2^32 fields")));
                }
            }
            best
        };
        let (n, i) = self.memo[side_index(side)]
            .borrow_mut()
            .answer(fields, lowest)?;
        let r = &self.rules[n as usize];
        Some(Endpoint {
            service: r
                .service
                .as_deref()
                .unwrap_or_else(|| strip_port(fields[i as usize].1)),
            zone: r.zone.as_deref(),
            version: r.version.as_deref(),
        })
    }

    /// The mapping of input `path` (a file given to `replay`): the first `[[mapping.inputs]]`
    /// entry whose glob matches it names the writer; otherwise this mapping as it is.
    pub fn for_input(&self, path: &str) -> Mapping {
        let mut m = self.clone();
        if let Some(i) = self
            .inputs
            .iter()
            .find(|i| glob_match(&i.pattern, i.anchored_start, i.anchored_end, path))
        {
            m.set_own(Some(&i.service), i.zone.as_deref(), i.version.as_deref());
        }
        m
    }

    /// The `[mapping.writer]` section.
    pub fn writer(&self) -> &crate::writer::WriterConfig {
        &self.writer
    }

    /// The configured own `[service, zone, version]`, each if given.
    pub fn own_parts(&self) -> [Option<&str>; 3] {
        [
            self.service.as_deref(),
            self.zone.as_deref(),
            self.version.as_deref(),
        ]
    }

    /// Names the writer of the lines parsed next: the service whose proxy wrote them, its
    /// zone and version (replacing `service`, `zone`, `version` of the config). A shipper's
    /// metadata says who wrote each line when one stream carries many proxies' logs; `None`
    /// clears a value. Allocates only when a value changes.
    pub fn set_own(&mut self, service: Option<&str>, zone: Option<&str>, version: Option<&str>) {
        fn set(slot: &mut Option<String>, value: Option<&str>) {
            if slot.as_deref() != value {
                *slot = value.map(str::to_owned);
            }
        }
        set(&mut self.service, service);
        set(&mut self.zone, zone);
        set(&mut self.version, version);
    }

    /// True when no rule is configured (parsers may skip building field lists).
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(toml_rules: Vec<RuleConfig>) -> Mapping {
        Mapping::try_from(MappingConfig {
            service: Some("frontend".into()),
            zone: Some("a".into()),
            version: None,
            rules: toml_rules,
            ..Default::default()
        })
        .unwrap()
    }

    fn rule(field: MatchField, pattern: &str, service: Option<&str>) -> RuleConfig {
        RuleConfig {
            field,
            pattern: pattern.into(),
            side: Side::Destination,
            service: service.map(Into::into),
            zone: Some("b".into()),
            version: None,
        }
    }

    #[test]
    fn remembered_answers_are_the_rules_answers_and_values_that_never_repeat_bypass_them() {
        let m = mapping(vec![
            rule(MatchField::UpstreamHost, "10.0.0.1:*", Some("cart")),
            rule(MatchField::UpstreamHost, "10.0.0.2:8080", Some("payments")),
            rule(MatchField::Authority, "*.svc", None),
        ]);
        let value = |i: usize| match i % 8 {
            0 => "10.0.0.2:8080".to_owned(),
            // a new ephemeral port on most lines: the memo misses, then stands aside
            _ => format!("10.0.0.{}:{}", 1 + i % 3, 30_000 + i),
        };
        let mut bypassed = false;
        for i in 0..3 * MEMO_BYPASS as usize {
            let host = value(i);
            let fields = [
                (MatchField::Authority, "orders.svc"),
                (MatchField::UpstreamHost, host.as_str()),
            ];
            let answer = m.resolve(Side::Destination, &fields);
            // a clone starts with nothing remembered: it applies the rules
            assert_eq!(
                answer,
                m.clone().resolve(Side::Destination, &fields),
                "{host}"
            );
            let expected = match host.as_str() {
                h if h.starts_with("10.0.0.1:") => "cart",
                "10.0.0.2:8080" => "payments",
                _ => "orders.svc",
            };
            assert_eq!(answer.map(|e| e.service), Some(expected), "{host}");
            bypassed |= m.memo[0].borrow().bypass > 0;
        }
        assert!(bypassed, "7 values in 8 never repeat: the memo stood aside");
        assert!(m.memo[0].borrow().answers.len() <= MEMO_CAP);
    }

    #[test]
    fn long_values_are_looked_up_by_the_rules_and_not_remembered() {
        let m = mapping(vec![rule(MatchField::Authority, "*.svc", None)]);
        for n in [200, 300, 60_000] {
            let host = format!("{}.svc", "a".repeat(n));
            let found = m.resolve(Side::Destination, &[(MatchField::Authority, host.as_str())]);
            assert_eq!(found.map(|e| e.service.len()), Some(n + 4));
        }
        // only the value of 200 bytes (209 encoded) was remembered
        let memo = m.memo[0].borrow();
        assert_eq!(memo.answers.len(), 1);
        assert!(memo.answers.keys().all(|k| k.len() <= MEMO_KEY_BYTES));
    }

    #[test]
    fn a_control_character_in_a_configured_name_is_an_error_naming_the_key() {
        let own = MappingConfig {
            zone: Some("eu\u{1b}[31m".into()),
            ..Default::default()
        };
        let e = Mapping::try_from(own).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "[mapping] zone \"eu\\u{1b}[31m\" holds control character U+001B at byte 2"
            ),
            "{e}"
        );
        let mut r = rule(MatchField::Authority, "pay*", Some("pay\0ments"));
        r.zone = None;
        let e = Mapping::try_from(MappingConfig {
            rules: vec![rule(MatchField::Authority, "*", None), r],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "mapping rule 1: service \"pay\\0ments\" holds control character U+0000 at byte 3"
            ),
            "{e}"
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let m = mapping(vec![
            rule(MatchField::UpstreamHost, "10.1.*", Some("catalog")),
            rule(MatchField::Authority, "*", None),
        ]);
        let hit = m
            .resolve(
                Side::Destination,
                &[(MatchField::UpstreamHost, "10.1.2.3:80")],
            )
            .unwrap();
        assert_eq!(hit.service, "catalog");
        assert_eq!(hit.zone, Some("b"));
        let by_authority = m
            .resolve(
                Side::Destination,
                &[
                    (MatchField::UpstreamHost, "10.2.0.1:80"),
                    (MatchField::Authority, "reviews:9080"),
                ],
            )
            .unwrap();
        assert_eq!(by_authority.service, "reviews");
        assert!(
            m.resolve(Side::Source, &[(MatchField::Authority, "x")])
                .is_none()
        );
    }

    #[test]
    fn glob_anchors() {
        let m = mapping(vec![rule(MatchField::Authority, "*.svc", Some("s"))]);
        assert!(
            m.resolve(Side::Destination, &[(MatchField::Authority, "a.svc")])
                .is_some()
        );
        assert!(
            m.resolve(Side::Destination, &[(MatchField::Authority, "a.svc.x")])
                .is_none()
        );
        let m = mapping(vec![rule(MatchField::Authority, "a*c*e", Some("s"))]);
        assert!(
            m.resolve(Side::Destination, &[(MatchField::Authority, "abcde")])
                .is_some()
        );
        assert!(
            m.resolve(Side::Destination, &[(MatchField::Authority, "abcdef")])
                .is_none()
        );
    }

    #[test]
    fn strip_port_handles_ipv6_and_names() {
        assert_eq!(strip_port("reviews:9080"), "reviews");
        assert_eq!(strip_port("[2a02:cf40::7]:3000"), "2a02:cf40::7");
        assert_eq!(strip_port("httpbin.org"), "httpbin.org");
        assert_eq!(strip_port("2a02:cf40::7"), "2a02:cf40::7");
    }

    #[test]
    fn empty_own_service_zone_or_version_is_an_error_naming_the_key() {
        for key in ["service", "zone", "version"] {
            let mut c = MappingConfig {
                service: Some("frontend".into()),
                zone: Some("a".into()),
                version: Some("v1".into()),
                ..Default::default()
            };
            let field = match key {
                "service" => &mut c.service,
                "zone" => &mut c.zone,
                _ => &mut c.version,
            };
            *field = Some(String::new());
            let err = Mapping::try_from(c.clone()).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("[mapping] {key} is empty: give a value or leave the key out")
            );
            let field = match key {
                "service" => &mut c.service,
                "zone" => &mut c.zone,
                _ => &mut c.version,
            };
            *field = Some(" ".into());
            assert!(Mapping::try_from(c).is_err(), "blank {key}");
        }
        // A rule's empty zone or version names the rule and the key.
        let mut r = rule(MatchField::Authority, "*", None);
        r.version = Some(String::new());
        let err = Mapping::try_from(MappingConfig {
            rules: vec![rule(MatchField::Authority, "a", None), r],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "mapping rule 1: empty version");
    }

    #[test]
    fn each_input_file_is_credited_to_its_own_writer() {
        let c: MappingConfig = toml::from_str(
            r#"
            service = "edge"
            [[inputs]]
            path = "*/reviews-*.log"
            service = "reviews"
            version = "v2"
            [[inputs]]
            path = "*ratings*"
            service = "ratings"
            "#,
        )
        .unwrap();
        let m = Mapping::try_from(c).unwrap();
        let own = |path: &str| {
            m.for_input(path)
                .own()
                .map(|e| (e.service.to_owned(), e.version.map(str::to_owned)))
        };
        assert_eq!(
            own("logs/reviews-1.log"),
            Some(("reviews".into(), Some("v2".into())))
        );
        assert_eq!(own("logs/ratings.log"), Some(("ratings".into(), None)));
        assert_eq!(own("logs/reviews-1.txt"), Some(("edge".into(), None)));
        let err = Mapping::try_from(
            toml::from_str::<MappingConfig>("[[inputs]]\npath = \"a\"\nservice = \" \"\n").unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "mapping input 0: empty service");
    }

    /// The rules' meaning, as written: in rule order, the first rule for `side` whose field is
    /// in `fields` and matches that field's first matching value.
    fn resolve_naive<'a>(
        m: &'a Mapping,
        side: Side,
        fields: &[(MatchField, &'a str)],
    ) -> Option<Endpoint<'a>> {
        m.rules.iter().filter(|r| r.side == side).find_map(|r| {
            let (_, value) = fields.iter().find(|(f, v)| *f == r.field && r.matches(v))?;
            Some(Endpoint {
                service: r.service.as_deref().unwrap_or_else(|| strip_port(value)),
                zone: r.zone.as_deref(),
                version: r.version.as_deref(),
            })
        })
    }

    const FIELDS3: [MatchField; 3] = [
        MatchField::Authority,
        MatchField::UpstreamHost,
        MatchField::Pod,
    ];

    proptest::proptest! {
        /// The compiled rules answer what the rules say, first match wins: random rules
        /// (exact, prefix, suffix, inner and only-`*` patterns over a small alphabet, so that
        /// they overlap) on random lines (a field may appear twice).
        #[test]
        fn compiled_rules_match_like_the_rules_in_order(
            rules in proptest::collection::vec(
                (0usize..3, proptest::bool::ANY, "[ab.*:]{1,5}", proptest::option::of("[xyz]{1,2}")),
                1..40,
            ),
            lines in proptest::collection::vec(
                proptest::collection::vec((0usize..3, "[ab.:]{0,6}"), 0..4),
                1..20,
            ),
        ) {
            let configs: Vec<RuleConfig> = rules
                .iter()
                .map(|(f, source, pattern, service)| RuleConfig {
                    field: FIELDS3[*f],
                    pattern: pattern.clone(),
                    side: if *source { Side::Source } else { Side::Destination },
                    service: service.clone(),
                    zone: Some(format!("z{f}")),
                    version: None,
                })
                .collect();
            let m = mapping(configs);
            for line in &lines {
                let fields: Vec<(MatchField, &str)> =
                    line.iter().map(|(f, v)| (FIELDS3[*f], v.as_str())).collect();
                for side in [Side::Destination, Side::Source] {
                    proptest::prop_assert_eq!(
                        m.resolve(side, &fields),
                        resolve_naive(&m, side, &fields),
                        "{:?} {:?}", side, fields
                    );
                }
            }
        }
    }

    #[test]
    fn compiled_rules_keep_rule_order_across_kinds_of_pattern() {
        let m = mapping(vec![
            rule(MatchField::Authority, "*.internal", Some("by-suffix")),
            rule(MatchField::Authority, "api.*", Some("by-prefix")),
            rule(MatchField::Authority, "api.internal", Some("exact")),
            rule(MatchField::Authority, "a*i*l", Some("inner")),
            rule(MatchField::Authority, "*", Some("any")),
        ]);
        let name = |v: &'static str| {
            m.resolve(Side::Destination, &[(MatchField::Authority, v)])
                .map(|e| e.service.to_owned())
        };
        assert_eq!(name("api.internal").as_deref(), Some("by-suffix"));
        assert_eq!(name("api.external").as_deref(), Some("by-prefix"));
        assert_eq!(name("axil").as_deref(), Some("inner"));
        assert_eq!(name("other").as_deref(), Some("any"));
        // a later field's better (lower) rule wins; an equal rule keeps the first field
        let two = [
            (MatchField::Authority, "other"),
            (MatchField::Authority, "db.internal"),
        ];
        let hit = m.resolve(Side::Destination, &two).unwrap();
        assert_eq!(hit.service, "by-suffix");
    }

    #[test]
    fn empty_pattern_is_an_error_naming_the_rule() {
        let err = Mapping::try_from(MappingConfig {
            rules: vec![rule(MatchField::Authority, "", None)],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "mapping rule 0: empty pattern");
    }
}
