//! The plan of a run, drawn from the seed before any record: the incident's subject, onset and
//! parameters, and the deployments. The plan alone gives the [`Truth`].

use super::landscape::{Call, FAIL_OVER, Landscape, ROOMS, SINK, Tier, ZONES};
use super::rng::Rng;
use super::truth::{
    BenignChange, FailOver, Incident, Injected, LandscapeFacts, Segment, TRUTH_VERSION, Truth,
    TruthKind,
};
use super::{SECOND_US, Scenario, SimulationConfig};
use schemas::{Signature, Subject};

const MINUTE_US: i64 = 60 * SECOND_US;

/// Target utilisation of the cache once the fan-out version runs everywhere.
const FANOUT_UTILISATION: f64 = 0.85;

/// Requests per second each offending client sends to the other room, at scale 1.
const ATTACK_RPS: f64 = 40.0;

/// The load factor of the day at `t_us`: `1 + 0.45·sin(2π(h − 10)/24)` for the hour of day
/// `h` (UTC), lowest (0.55) at 04:00 and highest (1.45) at 16:00.
pub(crate) fn diurnal(t_us: i64) -> f64 {
    let h = t_us.rem_euclid(86_400 * SECOND_US) as f64 / (3600.0 * SECOND_US as f64);
    1.0 + 0.45 * (std::f64::consts::TAU * (h - 10.0) / 24.0).sin()
}

/// A rolling deployment of one service: zones update one after the other, each over a third
/// of the rollout; a rollback, if any, goes the same way back.
#[derive(Debug, Clone)]
pub(crate) struct Deploy {
    pub service: usize,
    pub start_us: i64,
    pub ramp_us: i64,
    /// Start and length of the rollback.
    pub rollback: Option<(i64, i64)>,
}

/// `0` before zone `z`'s third of `[start, start + ramp)`, `1` after, linear in between.
fn staggered(start: i64, ramp: i64, z: usize, t: i64) -> f64 {
    let part = (ramp / ZONES.len() as i64).max(1);
    let from = start + z as i64 * part;
    ((t - from) as f64 / part as f64).clamp(0.0, 1.0)
}

impl Deploy {
    /// Share of the new version among zone `z`'s instances at `t`.
    pub(crate) fn share(&self, z: usize, t: i64) -> f64 {
        let up = staggered(self.start_us, self.ramp_us, z, t);
        match self.rollback {
            Some((at, ramp)) => up * (1.0 - staggered(at, ramp, z, t)),
            None => up,
        }
    }
}

/// The incident, in the landscape's indices.
#[derive(Debug, Clone)]
pub(crate) enum IncidentPlan {
    BlackHole {
        service: usize,
        reset: bool,
    },
    DeployFanout {
        service: usize,
        factor: f64,
        added: Vec<usize>,
        removed: Vec<usize>,
        rollout_end_us: i64,
        rollback_us: i64,
    },
    LoggingStorm {
        recovery_us: i64,
        /// Per service: whether its shippers buffer while the sink is down.
        buffering: Vec<bool>,
        /// Per service and zone: (flush start, flush length), µs.
        flush: Vec<[(i64, i64); 3]>,
        flush_us: i64,
    },
    SegmentationDos {
        victim: usize,
        attacker: usize,
        clients: Vec<usize>,
        /// The offending call: to the victim room's relays.
        call: Call,
        rate_rps: f64,
    },
    CrossZone {
        source: usize,
        destination: usize,
        from_zone: usize,
        to_zone: usize,
        share: f64,
    },
}

/// What happens in a run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub onset_us: i64,
    pub end_us: i64,
    pub incident: Option<IncidentPlan>,
    /// Every deployment; `benign[i]` tells whether deployment `i` is benign.
    pub deploys: Vec<Deploy>,
    pub benign: Vec<bool>,
    /// Allowed cross-zone routes: (source, destination, source zone, destination zone, share).
    pub fail_over: Vec<(usize, usize, usize, usize, f64)>,
}

fn zone_index(name: &str) -> usize {
    ZONES
        .iter()
        .position(|z| *z == name)
        .expect("fail-over zones are landscape zones")
}

impl Plan {
    /// Draws the plan from the seed (stream 0) and changes the landscape's second version of
    /// the fan-out service.
    pub(crate) fn new(config: &SimulationConfig, land: &mut Landscape) -> Plan {
        let mut rng = Rng::new(config.seed, 0);
        let (start, duration) = (config.start_us, config.duration_us);
        let end = start + duration;
        let second = |us: f64| (us / SECOND_US as f64).round() as i64 * SECOND_US;
        // whole seconds from the start, as the engine's steps
        let onset = start + second(duration as f64 / 2.0 + rng.uniform(0.0, duration as f64 / 8.0));
        let cap = ((end - onset) as f64 * 0.6) as i64 / SECOND_US * SECOND_US;
        let length = |rng: &mut Rng, lo_min: f64, hi_min: f64| {
            second(rng.uniform(lo_min, hi_min) * MINUTE_US as f64).min(cap)
        };
        let fail_over = FAIL_OVER
            .iter()
            .map(|&(s, d, sz, dz, share)| {
                (
                    land.idx(s),
                    land.idx(d),
                    zone_index(sz),
                    zone_index(dz),
                    share,
                )
            })
            .collect();
        let mut plan = Plan {
            onset_us: onset,
            end_us: onset,
            incident: None,
            deploys: Vec::new(),
            benign: Vec::new(),
            fail_over,
        };
        // services the benign deployments leave alone
        let mut busy: Vec<usize> = Vec::new();
        match config.scenario {
            Scenario::Clean => {
                plan.onset_us = end;
                plan.end_us = end;
            }
            Scenario::BlackHole => {
                let candidates = ["inventory", "pricing", "user", "product", "order", "cart"];
                let service = land.idx(candidates[rng.index(candidates.len())]);
                plan.end_us = onset + length(&mut rng, 10.0, 20.0);
                plan.incident = Some(IncidentPlan::BlackHole {
                    service,
                    reset: rng.chance(0.2),
                });
                busy.push(service);
            }
            Scenario::DeployFanout => {
                plan.end_us = onset + length(&mut rng, 20.0, 30.0);
                let len = plan.end_us - onset;
                let ramp = second(rng.uniform(60.0, 180.0) * SECOND_US as f64).min(len / 3);
                let back = (60 * SECOND_US).min(len / 4);
                let factor = [3.0, 4.0, 5.0][rng.index(3)];
                let incident = fanout(land, &mut rng, factor, onset, ramp, plan.end_us - back);
                let IncidentPlan::DeployFanout { service, .. } = incident else {
                    unreachable!("fanout plans a fan-out")
                };
                plan.deploys.push(Deploy {
                    service,
                    start_us: onset,
                    ramp_us: ramp,
                    rollback: Some((plan.end_us - back, back)),
                });
                plan.benign.push(false);
                plan.incident = Some(incident);
                busy.push(service);
            }
            Scenario::LoggingStorm => {
                let outage = length(&mut rng, 3.0, 6.0);
                let recovery = onset + outage;
                let flush_us = second(rng.uniform(30.0, 45.0) * SECOND_US as f64);
                let sink = land.idx(SINK);
                let n = land.services.len();
                let mut buffering: Vec<bool> = (0..n).map(|s| s != sink).collect();
                // about a quarter of the sources drop what they can't send
                let mut dropping = 0;
                for (s, b) in buffering.iter_mut().enumerate() {
                    if s != sink && rng.chance(0.25) {
                        *b = false;
                        dropping += 1;
                    }
                }
                debug_assert!(dropping < n - 10);
                let mut flush = vec![[(0, 0); 3]; n];
                let mut last = recovery;
                for inst in flush.iter_mut() {
                    for f in inst.iter_mut() {
                        let from = recovery + rng.range(0, 4) * SECOND_US;
                        let len = second(flush_us as f64 * rng.uniform(0.8, 1.2));
                        *f = (from, len);
                        last = last.max(from + len);
                    }
                }
                plan.end_us = last;
                plan.incident = Some(IncidentPlan::LoggingStorm {
                    recovery_us: recovery,
                    buffering,
                    flush,
                    flush_us,
                });
                busy.push(sink);
            }
            Scenario::SegmentationDos => {
                let attacker = rng.index(ROOMS.len());
                let victim = (attacker + 1 + rng.index(ROOMS.len() - 1)) % ROOMS.len();
                let mut clients = land.room_members(attacker, false);
                // one or two of the room's clients
                let keep = 1 + rng.index(2);
                while clients.len() > keep {
                    clients.remove(rng.index(clients.len()));
                }
                let relays = land.room_members(victim, true);
                let call = Call {
                    to: relays.iter().map(|&r| (r, 1.0)).collect(),
                    mean: 1.0,
                    required: true,
                    timeout_us: 2 * SECOND_US,
                    request_bytes: 900.0,
                    method: "POST",
                    cost: 1.0,
                };
                plan.end_us = onset + length(&mut rng, 10.0, 20.0);
                busy.extend(&clients);
                busy.extend(&relays);
                plan.incident = Some(IncidentPlan::SegmentationDos {
                    victim,
                    attacker,
                    clients,
                    call,
                    rate_rps: ATTACK_RPS * config.scale,
                });
            }
            Scenario::CrossZone => {
                let candidates = [
                    ("catalog-api", "product"),
                    ("catalog-api", "pricing"),
                    ("cart-api", "cart"),
                    ("checkout-api", "order"),
                    ("account-api", "user"),
                    ("search-api", "search-index"),
                    ("order", "inventory"),
                    ("auth", "cache"),
                ];
                let (s, d) = candidates[rng.index(candidates.len())];
                let from_zone = rng.index(ZONES.len());
                let to_zone = (from_zone + 1 + rng.index(ZONES.len() - 1)) % ZONES.len();
                plan.end_us = onset + length(&mut rng, 15.0, 25.0);
                let (source, destination) = (land.idx(s), land.idx(d));
                busy.extend([source, destination]);
                plan.incident = Some(IncidentPlan::CrossZone {
                    source,
                    destination,
                    from_zone,
                    to_zone,
                    share: (rng.uniform(0.4, 0.7) * 100.0).round() / 100.0,
                });
            }
        }
        plan.plan_benign(&mut rng, land, config, &busy);
        plan
    }

    /// 2 to 4 benign deployments; in an incident scenario the first lands 3 to 15 min before
    /// the onset (an unrelated change close to the incident).
    fn plan_benign(
        &mut self,
        rng: &mut Rng,
        land: &Landscape,
        config: &SimulationConfig,
        busy: &[usize],
    ) {
        let (start, end) = (config.start_us, config.start_us + config.duration_us);
        let duration = config.duration_us;
        let second = |us: f64| (us / SECOND_US as f64).round() as i64 * SECOND_US;
        let mut eligible: Vec<usize> = (0..land.services.len())
            .filter(|s| !busy.contains(s))
            .filter(|&s| !matches!(land.services[s].tier, Tier::RoomClient(_)))
            .collect();
        let count = 2 + rng.index(3);
        for k in 0..count {
            let service = eligible.remove(rng.index(eligible.len()));
            let ramp = (second(rng.uniform(60.0, 180.0) * SECOND_US as f64))
                .min(duration / 20 / SECOND_US * SECOND_US)
                .max(3);
            let at = if k == 0 && self.incident.is_some() {
                let lo = (self.onset_us - 15 * MINUTE_US).max(start);
                let hi = (self.onset_us - 3 * MINUTE_US).max(lo);
                rng.range(lo, hi)
            } else {
                rng.range(start + duration / 20, end - duration / 10 - ramp)
            };
            let at = at / SECOND_US * SECOND_US;
            self.deploys.push(Deploy {
                service,
                start_us: at,
                ramp_us: ramp,
                rollback: None,
            });
            self.benign.push(true);
        }
    }

    /// The version index of `service` in zone `z` for a request at `t`.
    pub(crate) fn version(&self, service: usize, z: usize, t: i64, rng: &mut Rng) -> usize {
        for d in &self.deploys {
            if d.service == service && t >= d.start_us {
                let share = d.share(z, t);
                return if share >= 1.0 {
                    1
                } else if share <= 0.0 {
                    0
                } else {
                    usize::from(rng.chance(share))
                };
            }
        }
        0
    }

    /// Whether the incident is in force at `t`.
    pub(crate) fn active(&self, t: i64) -> bool {
        (self.onset_us..self.end_us).contains(&t)
    }

    /// The truth of this plan.
    pub(crate) fn truth(&self, config: &SimulationConfig, land: &Landscape) -> Truth {
        let name = |i: usize| land.services[i].name.clone();
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v.dedup();
            v
        };
        let callers_of = |target: usize| {
            sorted(
                (0..land.services.len())
                    .filter(|&s| {
                        land.calls[s][0]
                            .iter()
                            .any(|c| c.to.iter().any(|t| t.0 == target))
                    })
                    .map(name)
                    .collect(),
            )
        };
        let callees = |s: usize, v: usize| {
            sorted(
                land.calls[s][v]
                    .iter()
                    .flat_map(|c| c.to.iter().map(|t| name(t.0)))
                    .collect(),
            )
        };
        let incident = self.incident.as_ref().map(|inc| {
            let (signature, subject, description, injected) = match inc {
                IncidentPlan::BlackHole { service, reset } => (
                    Signature::BlackHole,
                    Subject::Node {
                        node: name(*service),
                    },
                    format!(
                        "{} keeps receiving requests but answers none ({}) and stops calling its dependencies",
                        name(*service),
                        if *reset {
                            "its callers see connection resets, 503 UC"
                        } else {
                            "its callers time out, 504 UT"
                        }
                    ),
                    Injected::BlackHole {
                        mode: if *reset { "reset" } else { "hang" }.into(),
                        callers: callers_of(*service),
                        dependencies: callees(*service, 0),
                    },
                ),
                IncidentPlan::DeployFanout {
                    service,
                    factor,
                    added,
                    removed,
                    rollout_end_us,
                    rollback_us,
                } => {
                    let s = &land.services[*service];
                    let mut change = format!("calls cache {factor}x per request instead of once");
                    for &a in added {
                        change += &format!(", starts calling {}", name(a));
                    }
                    for &r in removed {
                        change += &format!(", stops calling {}", name(r));
                    }
                    (
                        Signature::DeployRegression,
                        Subject::Version {
                            service: s.name.clone(),
                            version: s.versions[1].clone(),
                        },
                        format!(
                            "{} {} {change}; the cache slows and latency rises in its callers; rolled back at the end",
                            s.name, s.versions[1]
                        ),
                        Injected::DeployFanout {
                            from_version: s.versions[0].clone(),
                            shared: "cache".into(),
                            calls_before: 1.0,
                            calls_after: *factor,
                            added: sorted(added.iter().map(|&a| name(a)).collect()),
                            removed: sorted(removed.iter().map(|&r| name(r)).collect()),
                            rollout_end_us: *rollout_end_us,
                            rollback_us: *rollback_us,
                        },
                    )
                }
                IncidentPlan::LoggingStorm {
                    recovery_us,
                    buffering,
                    flush_us,
                    ..
                } => {
                    let sink = land.idx(SINK);
                    let (flushing, dropping): (Vec<usize>, Vec<usize>) = (0..land.services.len())
                        .filter(|&s| s != sink)
                        .partition(|&s| buffering[s]);
                    (
                        Signature::SynchronizedBurst,
                        Subject::Sources {
                            destination: SINK.into(),
                            sources: sorted(flushing.iter().map(|&s| name(s)).collect()),
                        },
                        format!(
                            "{SINK} fails for {} s; when it is back, {} buffering sources flush their backlog at once",
                            (recovery_us - self.onset_us) / SECOND_US,
                            flushing.len()
                        ),
                        Injected::LoggingStorm {
                            recovery_us: *recovery_us,
                            not_buffering: sorted(dropping.iter().map(|&s| name(s)).collect()),
                            flush_us: *flush_us,
                        },
                    )
                }
                IncidentPlan::SegmentationDos {
                    victim,
                    attacker,
                    clients,
                    call,
                    rate_rps,
                } => (
                    Signature::SegmentationViolation,
                    Subject::Sources {
                        destination: ROOMS[*victim].into(),
                        sources: sorted(clients.iter().map(|&c| name(c)).collect()),
                    },
                    format!(
                        "{} client(s) of {} call {}'s relays at {rate_rps:.1} req/s each; the relays overflow",
                        clients.len(),
                        ROOMS[*attacker],
                        ROOMS[*victim]
                    ),
                    Injected::SegmentationDos {
                        from_segment: ROOMS[*attacker].into(),
                        relays: sorted(call.to.iter().map(|t| name(t.0)).collect()),
                        rate_rps: *rate_rps,
                        usual_rps: land.client_rps * config.scale,
                    },
                ),
                IncidentPlan::CrossZone {
                    source,
                    destination,
                    from_zone,
                    to_zone,
                    share,
                } => (
                    Signature::CrossZone,
                    Subject::ZonePair {
                        source: name(*source),
                        destination: name(*destination),
                        source_zone: ZONES[*from_zone].into(),
                        destination_zone: ZONES[*to_zone].into(),
                    },
                    format!(
                        "{:.0} % of {} -> {} calls from {} go to {} (a misconfigured locality rule)",
                        share * 100.0,
                        name(*source),
                        name(*destination),
                        ZONES[*from_zone],
                        ZONES[*to_zone]
                    ),
                    Injected::CrossZone { share: *share },
                ),
            };
            Incident {
                signature,
                subject,
                onset_us: self.onset_us,
                end_us: self.end_us,
                description,
                injected,
            }
        });
        let benign = self
            .deploys
            .iter()
            .zip(&self.benign)
            .filter(|(_, b)| **b)
            .map(|(d, _)| {
                let s = &land.services[d.service];
                BenignChange::Deployment {
                    service: s.name.clone(),
                    from_version: s.versions[0].clone(),
                    to_version: s.versions[1].clone(),
                    start_us: d.start_us,
                    end_us: d.start_us + d.ramp_us,
                }
            })
            .collect();
        let segments = (0..ROOMS.len())
            .map(|r| Segment {
                name: ROOMS[r].into(),
                services: land
                    .room_members(r, false)
                    .into_iter()
                    .chain(land.room_members(r, true))
                    .map(name)
                    .collect(),
            })
            .collect();
        Truth {
            kind: TruthKind::Truth,
            schema_version: TRUTH_VERSION,
            scenario: config.scenario,
            seed: config.seed,
            start_us: config.start_us,
            end_us: config.start_us + config.duration_us,
            scale: config.scale,
            incidents: incident.into_iter().collect(),
            benign,
            landscape: LandscapeFacts {
                services: land.services.iter().map(|s| s.name.clone()).collect(),
                zones: ZONES.iter().map(|z| (*z).into()).collect(),
                segments,
                sink: SINK.into(),
                fail_over: FAIL_OVER
                    .iter()
                    .map(|&(s, d, sz, dz, share)| FailOver {
                        source: s.into(),
                        destination: d.into(),
                        source_zone: sz.into(),
                        destination_zone: dz.into(),
                        share,
                    })
                    .collect(),
            },
        }
    }
}

/// A destination a fan-out version adds: (destination, calls per request, required, timeout ms).
type Added = (&'static str, f64, bool, i64);

/// Picks the fan-out service, and changes its second version's calls: `factor`× the calls
/// to `cache`, each heavier (multi-key reads), sized so that the cache runs at
/// [`FANOUT_UTILISATION`] at the onset's hour of the day once every zone runs the new
/// version; one destination dropped and/or one added.
fn fanout(
    land: &mut Landscape,
    rng: &mut Rng,
    factor: f64,
    onset: i64,
    ramp: i64,
    rollback_us: i64,
) -> IncidentPlan {
    // (service, destination removed, destination added)
    let candidates: [(&str, Option<&str>, Option<Added>); 5] = [
        (
            "product",
            Some("product-db"),
            Some(("search-index", 0.5, true, 2_000)),
        ),
        ("pricing", None, Some(("product-db", 0.3, true, 1_000))),
        (
            "cart",
            Some("inventory"),
            Some(("pricing", 0.5, false, 1_000)),
        ),
        (
            "recommendation",
            Some("product"),
            Some(("reviews", 0.5, false, 500)),
        ),
        ("user", None, Some(("auth", 0.5, true, 1_000))),
    ];
    let (name, removed, added) = candidates[rng.index(candidates.len())];
    let service = land.idx(name);
    let cache = land.idx("cache");
    let rates = land.mean_rates();
    let util = land.services[cache].utilisation;
    let (cache_rate, own_rate) = (rates[cache][0], rates[service][0]);
    let load = diurnal(onset);
    // target · capacity = load · (cache rate + own rate · (factor · cost − 1))
    let extra = (FANOUT_UTILISATION * cache_rate / util / load - cache_rate) / own_rate;
    let cost = ((1.0 + extra) / factor).clamp(1.0, 25.0);
    let calls = &mut land.calls[service][1];
    for c in calls.iter_mut() {
        if c.to.iter().any(|t| t.0 == cache) {
            c.mean *= factor;
            c.cost = cost;
        }
    }
    let mut removed_ix = Vec::new();
    if let Some(r) = removed {
        let r = land.idx(r);
        land.calls[service][1].retain(|c| c.to.iter().all(|t| t.0 != r));
        removed_ix.push(r);
    }
    let mut added_ix = Vec::new();
    if let Some((a, mean, required, timeout_ms)) = added {
        let a = land.idx(a);
        land.calls[service][1].push(Call {
            to: vec![(a, 1.0)],
            mean,
            required,
            timeout_us: timeout_ms * 1000,
            request_bytes: 300.0,
            method: "GET",
            cost: 1.0,
        });
        added_ix.push(a);
    }
    IncidentPlan::DeployFanout {
        service,
        factor,
        added: added_ix,
        removed: removed_ix,
        rollout_end_us: onset + ramp,
        rollback_us,
    }
}
