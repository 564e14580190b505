//! Segmentation violations, never-seen edges, and fan-in/fan-out surges: who talks to whom,
//! against policy and against history.
//!
//! * **`segmentation-violation` by policy**: services belong to segments by name pattern
//!   (`[[detect.segmentation.segments]]`, first match wins); an edge from one segment to
//!   another is forbidden unless `[[detect.segmentation.allow]]` lists it (services in no
//!   segment are unrestricted). Every window with requests on forbidden edges gives one
//!   finding per destination segment: subject `sources/<segment>` naming the offending sources,
//!   evidence the forbidden requests (baseline 0), related the services they reached.
//!   Severity `critical`: policy is broken, whatever the volume.
//! * **`segmentation-violation` by history**: once a source has been seen `new-edge-after`
//!   windows, an edge to a destination it never called, with at least `min-requests` requests
//!   in the window, is reported on the pair (`warning`).
//! * **`fan-in-surge`**: a destination whose distinct callers reach `fan-factor` × their usual
//!   number (an EWMA over the windows it was not surging), with at least `min-requests` from
//!   callers that never called it before: subject `sources/<destination>` naming those new
//!   callers (a DoS from new sources).
//! * **`fan-out-surge`**: a source whose distinct destinations reach `fan-factor` × their
//!   usual number, with at least `min-requests` to destinations it never called (scanning,
//!   a misrouted client): subject the source node.
//!
//! State per service: windows seen, the destinations it called (at most
//! [`MAX_EDGES_PER_SOURCE`]), EWMAs of its distinct callers and destinations; forgotten
//! with the service.
//!
//! What it can't see: an abuser that stays on allowed, known edges at normal volumes (the
//! rate signatures see volume), sources hidden behind one proxy that names itself the source
//! of every client (attribution: see `ingest`), and edges before `new-edge-after`.

use std::collections::{BTreeMap, BTreeSet};

use schemas::{Finding, Severity, Signature, Subject};
use serde::{Deserialize, Serialize};

use crate::config::SegmentationConfig;
use crate::error::{Error, Result};
use crate::node::is_service;
use crate::signatures::{
    NamePattern, Scope, SignatureDetector, WindowView, counted, finding, load_state, related,
    save_state,
};

/// Most destinations remembered per source.
pub const MAX_EDGES_PER_SOURCE: usize = 1_024;

/// EWMA weight of a window in the usual fan-in and fan-out (a half-life of about 35 windows).
const FAN_ALPHA: f64 = 0.02;

/// Windows a service must have been seen before its fan-in or fan-out is judged.
const FAN_WARM_UP: u32 = 30;

/// The validated `[detect.segmentation]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationSpec {
    segments: Vec<(String, Vec<NamePattern>)>,
    allow: Vec<(String, String)>,
    new_edge_after: u32,
    min_requests: u64,
    fan_factor: f64,
}

impl TryFrom<&SegmentationConfig> for SegmentationSpec {
    type Error = Error;

    fn try_from(c: &SegmentationConfig) -> Result<Self> {
        let mut names = BTreeSet::new();
        let mut segments = Vec::new();
        for s in &c.segments {
            if s.name.is_empty() || s.name == "*" || !names.insert(s.name.clone()) {
                return Err(Error::Config {
                    key: "segmentation.segments",
                    reason: format!("segment name {:?} is empty, `*` or used twice", s.name),
                });
            }
            let members = s
                .members
                .iter()
                .map(|m| {
                    NamePattern::try_from(m.clone()).map_err(|reason| Error::Config {
                        key: "segmentation.segments",
                        reason: format!("segment {:?}: {reason}", s.name),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            segments.push((s.name.clone(), members));
        }
        for a in &c.allow {
            for end in [&a.from, &a.to] {
                if end != "*" && !names.contains(end) {
                    return Err(Error::Config {
                        key: "segmentation.allow",
                        reason: format!("{end:?} is no segment (nor `*`)"),
                    });
                }
            }
        }
        if !(c.fan_factor.is_finite() && c.fan_factor > 1.0) {
            return Err(Error::Config {
                key: "segmentation.fan-factor",
                reason: format!("{} is not a factor > 1", c.fan_factor),
            });
        }
        Ok(SegmentationSpec {
            segments,
            allow: c
                .allow
                .iter()
                .map(|a| (a.from.clone(), a.to.clone()))
                .collect(),
            new_edge_after: c.new_edge_after,
            min_requests: c.min_requests.max(1),
            fan_factor: c.fan_factor,
        })
    }
}

impl SegmentationSpec {
    /// The segment of `service`, if any.
    pub fn segment_of(&self, service: &str) -> Option<&str> {
        self.segments
            .iter()
            .find(|(_, members)| members.iter().any(|m| m.matches(service)))
            .map(|(name, _)| name.as_str())
    }

    /// Whether policy allows an edge from segment `from` to segment `to`.
    fn allowed(&self, from: &str, to: &str) -> bool {
        from == to
            || self
                .allow
                .iter()
                .any(|(f, t)| (f == "*" || f == from) && (t == "*" || t == to))
    }
}

/// What is remembered of one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Service {
    /// Windows it appeared in as a source.
    windows: u32,
    /// Windows it appeared in as a destination.
    windows_in: u32,
    /// End of the last window it appeared in, µs.
    last_seen_us: i64,
    /// Destinations it called (hashed: every pair of every window asks; encoded sorted, so
    /// the same history always encodes the same).
    #[serde(with = "sorted_set")]
    called: foldhash::HashSet<String>,
    /// EWMA of its distinct destinations per window.
    fan_out: f64,
    /// EWMA of its distinct callers per window.
    fan_in: f64,
}

/// A set of names encoded as a sorted sequence (the form it had as a `BTreeSet`: older
/// checkpoints decode).
mod sorted_set {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        set: &foldhash::HashSet<String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut names: Vec<&String> = set.iter().collect();
        names.sort_unstable();
        s.collect_seq(names)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<foldhash::HashSet<String>, D::Error> {
        Ok(Vec::<String>::deserialize(d)?.into_iter().collect())
    }
}

/// A destination's window: distinct callers, callers new to it, their requests, and its
/// segment. The new callers are pushed as met (in order and once each when the window's
/// pairs come sorted), and made a sorted set with [`sort_names`] only when a finding names
/// them: the first window of a large landscape has every edge new.
type FanIn<'a> = (usize, Vec<&'a str>, u64, Option<&'a str>);

/// `v` sorted, each name once.
fn sort_names(v: &mut Vec<&str>) {
    if !v.is_sorted_by(|a, b| a < b) {
        v.sort_unstable();
        v.dedup();
    }
}

/// The segmentation detector.
#[derive(Debug, Clone)]
pub struct Segmentation {
    spec: SegmentationSpec,
    services: BTreeMap<String, Service>,
}

impl Segmentation {
    /// A detector with `spec` and no history.
    pub fn new(spec: SegmentationSpec) -> Self {
        Segmentation {
            spec,
            services: BTreeMap::new(),
        }
    }
}

impl SignatureDetector for Segmentation {
    fn name(&self) -> &'static str {
        "segmentation"
    }

    fn scope(&self) -> Scope {
        Scope::Landscape
    }

    fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>) {
        let s = &self.spec;
        let w = view.window;
        // policy
        let mut forbidden: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>, u64)> = BTreeMap::new();
        // by destination, hashed while counting (every pair asks), sorted after
        let mut fan_in: foldhash::HashMap<&str, FanIn<'_>> = foldhash::HashMap::default();
        // by source: distinct destinations, new ones (as in `FanIn`), their requests
        let mut fan_out: BTreeMap<&str, (usize, Vec<&str>, u64)> = BTreeMap::new();
        // pairs come sorted by source: a source's history and segment are looked up once
        for run in view.pairs.chunk_by(|a, b| a.source == b.source) {
            let source = run[0].source.as_str();
            if !is_service(source) {
                continue;
            }
            let known = self.services.get(source);
            let from = s.segment_of(source);
            let mut o: (usize, Vec<&str>, u64) = Default::default();
            for p in run
                .iter()
                .filter(|p| p.requests > 0 && is_service(&p.destination))
            {
                let i = fan_in
                    .entry(&p.destination)
                    .or_insert_with(|| (0, Vec::new(), 0, s.segment_of(&p.destination)));
                if let (Some(a), Some(b)) = (from, i.3)
                    && !s.allowed(a, b)
                {
                    let e = forbidden.entry(b).or_default();
                    e.0.insert(source);
                    e.1.insert(&p.destination);
                    e.2 += p.requests;
                }
                let new = !known.is_some_and(|x| x.called.contains(p.destination.as_str()));
                i.0 += 1;
                o.0 += 1;
                if new {
                    i.1.push(source);
                    i.2 += p.requests;
                    o.1.push(&p.destination);
                    o.2 += p.requests;
                }
                // never-seen edge of a source with history
                if new
                    && s.new_edge_after > 0
                    && p.requests >= s.min_requests
                    && known.is_some_and(|x| x.windows >= s.new_edge_after)
                {
                    out.push(finding(
                        Signature::SegmentationViolation,
                        Subject::Pair {
                            source: p.source.clone(),
                            destination: p.destination.clone(),
                        },
                        w,
                        Severity::Warning,
                        vec![counted(
                            "new_edge_requests",
                            p.requests as f64,
                            0.0,
                            "requests",
                        )],
                        vec![],
                        schemas::Confidence::Normal,
                        format!(
                            "{} called {} for the first time ({} requests in the window)",
                            p.source, p.destination, p.requests
                        ),
                    ));
                }
            }
            if o.0 > 0 {
                // one run per source when pairs are sorted; merged if not
                let e = fan_out.entry(source).or_default();
                e.0 += o.0;
                e.1.extend(o.1);
                e.2 += o.2;
            }
        }
        let mut fan_in: Vec<(&str, FanIn<'_>)> = fan_in.into_iter().collect();
        fan_in.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (segment, (sources, reached, requests)) in &forbidden {
            out.push(finding(
                Signature::SegmentationViolation,
                Subject::Sources {
                    destination: (*segment).to_owned(),
                    sources: sources.iter().map(|x| (*x).to_owned()).collect(),
                },
                w,
                Severity::Critical,
                vec![counted(
                    "forbidden_requests",
                    *requests as f64,
                    0.0,
                    "requests",
                )],
                reached
                    .iter()
                    .map(|d| related("destination", d, None, format!("in segment {segment}")))
                    .collect(),
                schemas::Confidence::Normal,
                format!(
                    "{} source(s) outside segment {segment} sent {requests} requests into it, \
                     which the segmentation policy forbids",
                    sources.len()
                ),
            ));
        }
        let mut surging: BTreeSet<&str> = BTreeSet::new();
        for (dst, (n, new, requests, _)) in &mut fan_in {
            let Some(h) = self.services.get(*dst) else {
                continue;
            };
            if h.windows_in >= FAN_WARM_UP
                && *n as f64 >= s.fan_factor * h.fan_in.max(1.0)
                && *requests >= s.min_requests
                && !new.is_empty()
            {
                surging.insert(*dst);
                sort_names(new);
                out.push(finding(
                    Signature::FanInSurge,
                    Subject::Sources {
                        destination: (*dst).to_owned(),
                        sources: new.iter().map(|x| (*x).to_owned()).collect(),
                    },
                    w,
                    Severity::Critical,
                    vec![
                        counted("distinct_callers", *n as f64, h.fan_in, "callers"),
                        counted("new_caller_requests", *requests as f64, 0.0, "requests"),
                    ],
                    vec![],
                    schemas::Confidence::Normal,
                    format!(
                        "{dst} is called by {n} services (usually {:.1}), {} of them new, with \
                         {requests} requests: a fan-in surge",
                        h.fan_in,
                        new.len()
                    ),
                ));
            }
        }
        for (src, (n, new, requests)) in &mut fan_out {
            let Some(h) = self.services.get(*src) else {
                continue;
            };
            if h.windows >= FAN_WARM_UP
                && *n as f64 >= s.fan_factor * h.fan_out.max(1.0)
                && *requests >= s.min_requests
                && !new.is_empty()
            {
                surging.insert(*src);
                sort_names(new);
                out.push(finding(
                    Signature::FanOutSurge,
                    Subject::Node {
                        node: (*src).to_owned(),
                    },
                    w,
                    Severity::Warning,
                    vec![
                        counted("distinct_destinations", *n as f64, h.fan_out, "services"),
                        counted("new_edge_requests", *requests as f64, 0.0, "requests"),
                    ],
                    new.iter()
                        .map(|d| related("new-destination", d, None, String::new()))
                        .collect(),
                    schemas::Confidence::Normal,
                    format!(
                        "{src} calls {n} services (usually {:.1}), {} of them new",
                        h.fan_out,
                        new.len()
                    ),
                ));
            }
        }
        // learn: edges, windows seen, usual fan-in and fan-out (not while surging)
        for run in view.pairs.chunk_by(|a, b| a.source == b.source) {
            let source = &run[0].source;
            let mut called = run
                .iter()
                .filter(|p| p.requests > 0 && is_service(&p.destination))
                .peekable();
            if !is_service(source) || called.peek().is_none() {
                continue;
            }
            let known = &mut self.services.entry(source.clone()).or_default().called;
            for p in called {
                if known.len() < MAX_EDGES_PER_SOURCE && !known.contains(&p.destination) {
                    known.insert(p.destination.clone());
                }
            }
        }
        for (name, (n, _, _)) in &fan_out {
            let h = self.services.entry((*name).to_owned()).or_default();
            h.windows += 1;
            h.last_seen_us = w.end_us;
            if !surging.contains(name) {
                h.fan_out = if h.windows == 1 {
                    *n as f64
                } else {
                    h.fan_out + FAN_ALPHA.max(1.0 / f64::from(h.windows)) * (*n as f64 - h.fan_out)
                };
            }
        }
        for (name, (n, _, _, _)) in &fan_in {
            let h = self.services.entry((*name).to_owned()).or_default();
            h.windows_in += 1;
            h.last_seen_us = w.end_us;
            if !surging.contains(name) {
                h.fan_in = if h.windows_in == 1 {
                    *n as f64
                } else {
                    h.fan_in + FAN_ALPHA.max(1.0 / f64::from(h.windows_in)) * (*n as f64 - h.fan_in)
                };
            }
        }
    }

    fn forget_before(&mut self, before_us: i64) {
        self.services.retain(|_, s| s.last_seen_us > before_us);
    }

    fn save(&self) -> Vec<u8> {
        save_state(&self.services)
    }

    fn load(&mut self, state: &[u8]) -> std::result::Result<(), String> {
        self.services = load_state(state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SegmentAllow, SegmentConfig};
    use crate::signatures::generic::tests::pw;

    fn config() -> SegmentationConfig {
        SegmentationConfig {
            segments: vec![
                SegmentConfig {
                    name: "room1".into(),
                    members: vec!["room1-*".into()],
                },
                SegmentConfig {
                    name: "room2".into(),
                    members: vec!["room2-*".into()],
                },
                SegmentConfig {
                    name: "shared".into(),
                    members: vec!["auth".into()],
                },
            ],
            allow: vec![SegmentAllow {
                from: "*".into(),
                to: "shared".into(),
            }],
            new_edge_after: 10,
            ..SegmentationConfig::default()
        }
    }

    fn judge(d: &mut Segmentation, pairs: &[schemas::PairWindow]) -> Vec<Finding> {
        crate::signatures::judge_pairs(d, pairs)
    }

    #[test]
    fn edges_across_segments_name_their_sources_and_allowed_ones_do_not() {
        let mut d = Segmentation::new(SegmentationSpec::try_from(&config()).unwrap());
        let normal = |k| {
            vec![
                pw(k, "room1-client-0", "auth", 10, 0, 1),
                pw(k, "room1-client-0", "room1-relay-0", 50, 0, 1),
                pw(k, "room2-client-0", "room2-relay-0", 50, 0, 1),
            ]
        };
        for k in 0..40 {
            assert!(judge(&mut d, &normal(k)).is_empty(), "window {k}");
        }
        let mut breach = normal(40);
        breach.push(pw(40, "room1-client-0", "room2-relay-0", 400, 0, 1));
        breach.push(pw(40, "room1-client-1", "room2-relay-0", 5, 0, 1));
        breach.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
        let f = judge(&mut d, &breach);
        let keys: Vec<(Signature, String)> =
            f.iter().map(|f| (f.signature, f.subject.key())).collect();
        assert!(keys.contains(&(Signature::SegmentationViolation, "sources/room2".into())));
        // room1-client-0 has history: its new edge is reported too; room1-client-1 is new
        assert!(keys.contains(&(
            Signature::SegmentationViolation,
            "pair/room1-client-0/room2-relay-0".into()
        )));
        let policy = f
            .iter()
            .find(|f| f.subject.key() == "sources/room2")
            .unwrap();
        assert_eq!(
            policy.subject,
            Subject::Sources {
                destination: "room2".into(),
                sources: vec!["room1-client-0".into(), "room1-client-1".into()],
            }
        );
        assert_eq!(policy.evidence[0].value, 405.0);
        assert_eq!(policy.severity, Severity::Critical);
    }

    /// The state encodes the same whatever order the edges were learned in (the destinations
    /// a source called are hashed, and encoded sorted), decodes to the same history, and
    /// reads what the sorted set it was before encoded.
    #[test]
    fn the_state_encodes_the_same_history_the_same() {
        let spec = SegmentationSpec::try_from(&config()).unwrap();
        let mut a = Segmentation::new(spec.clone());
        let dests = [
            "auth",
            "room1-relay-0",
            "room1-relay-1",
            "db",
            "cache",
            "search",
        ];
        for (k, d) in dests.iter().enumerate() {
            judge(&mut a, &[pw(k as i64, "room1-client-0", d, 5, 0, 1)]);
        }
        // the same history, each set a new one (its own hasher's seed) filled in the other
        // order
        let mut b = Segmentation::new(spec.clone());
        b.services = a.services.clone();
        for service in b.services.values_mut() {
            let mut names: Vec<String> = service.called.drain().collect();
            names.sort_unstable_by(|x, y| y.cmp(x));
            service.called = names.into_iter().collect();
        }
        assert_eq!(a.save(), b.save());
        let mut c = Segmentation::new(spec.clone());
        c.load(&a.save()).unwrap();
        assert_eq!(c.services, a.services);
        assert_eq!(c.services["room1-client-0"].called.len(), 6);
        // as the BTreeSet encoded it: a sorted sequence of names, fields by name
        #[derive(Serialize)]
        struct Before {
            windows: u32,
            windows_in: u32,
            last_seen_us: i64,
            called: BTreeSet<String>,
            fan_out: f64,
            fan_in: f64,
        }
        let old = BTreeMap::from([(
            "web".to_owned(),
            Before {
                windows: 3,
                windows_in: 0,
                last_seen_us: 30_000_000,
                called: BTreeSet::from(["api".to_owned(), "db".to_owned()]),
                fan_out: 2.0,
                fan_in: 0.0,
            },
        )]);
        let mut d = Segmentation::new(spec);
        d.load(&save_state(&old)).unwrap();
        let web = &d.services["web"];
        assert!(web.called.contains("api") && web.called.contains("db") && web.windows == 3);
    }

    #[test]
    fn bad_policies_name_the_key() {
        let mut c = config();
        c.allow[0].to = "nowhere".into();
        let e = SegmentationSpec::try_from(&c).unwrap_err().to_string();
        assert!(
            e.contains("segmentation.allow") && e.contains("nowhere"),
            "{e}"
        );
    }
}
