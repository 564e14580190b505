//! The engine: one second of event time at a time, it draws the root requests of every
//! process (edge traffic per zone, room clients, log shippers, an attack), follows each
//! request through the call graph, and releases the records that start before the second's
//! end, in start order.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use schemas::{FlowRecord, Reporter, SCHEMA_VERSION};

use super::SECOND_US;
use super::SimulationConfig;
use super::landscape::{Call, LOG_BATCH_BYTES, LOG_TIMEOUT_US, Landscape, PORT, SINK, Tier, ZONES};
use super::plan::{IncidentPlan, Plan, diurnal};
use super::rng::Rng;

/// Slow swings of a zone's load: an Ornstein–Uhlenbeck process on the log of the factor,
/// this standard deviation and time constant (s).
const ZONE_SWING: (f64, f64) = (0.12, 1200.0);
/// The same for each room client.
const CLIENT_SWING: (f64, f64) = (0.25, 600.0);
/// Weight of the newest second in a service's load estimate (an EWMA of about 5 s).
const LOAD_ALPHA: f64 = 0.2;
/// Above this utilisation a service sheds load (`503 UO`) and stops slowing down.
const MAX_UTILISATION: f64 = 0.95;

/// One instance handling a request.
#[derive(Debug, Clone, Copy)]
struct Inst {
    service: usize,
    zone: usize,
    version: usize,
}

/// How a call ended, as the caller saw it.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    duration_us: i64,
    ok: bool,
}

/// A record waiting for its second to end.
struct Pending {
    start_us: i64,
    seq: u64,
    record: FlowRecord,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.start_us, self.seq) == (other.start_us, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.start_us, self.seq).cmp(&(other.start_us, other.seq))
    }
}

/// What starts a request.
#[derive(Debug, Clone, Copy)]
enum Root {
    /// A user request entering at the edge in a zone.
    Edge(usize),
    /// A room client's own request.
    Client(usize),
    /// An offending client's request to the other room.
    Attack(usize),
    /// A log batch from (service, zone).
    Log(usize, usize),
}

pub(crate) struct Engine {
    land: Landscape,
    plan: Plan,
    st: State,
}

struct State {
    rng: Rng,
    start_us: i64,
    end_us: i64,
    scale: f64,
    /// Seconds simulated.
    tick: i64,
    ticks: i64,
    heap: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    ready: VecDeque<FlowRecord>,
    /// Capacity units per second of each (service, zone).
    capacity: Vec<[f64; 3]>,
    /// Load estimate, units per second.
    load: Vec<[f64; 3]>,
    /// Units used in the current second.
    units: Vec<[f64; 3]>,
    zone_swing: [f64; 3],
    client_swing: Vec<f64>,
    /// `upstream_host` of each instance: `[service][zone][version]`.
    hosts: Vec<[[String; 2]; 3]>,
    roots: Vec<(i64, Root)>,
    edge: usize,
    sink: usize,
    clients: Vec<usize>,
    shippers: Vec<(usize, usize)>,
    log_call: Call,
}

/// One step of an Ornstein–Uhlenbeck process of stationary deviation `sigma` and time
/// constant `tau` over `dt` seconds.
fn ou_step(rng: &mut Rng, x: f64, (sigma, tau): (f64, f64), dt: f64) -> f64 {
    let keep = (-dt / tau).exp();
    x * keep + sigma * (1.0 - keep * keep).sqrt() * rng.normal()
}

impl Engine {
    pub(crate) fn new(config: SimulationConfig, land: Landscape, plan: Plan) -> Engine {
        let mut rng = Rng::new(config.seed, 1);
        let n = land.services.len();
        let rates = land.mean_rates();
        let capacity = (0..n)
            .map(|s| {
                let u = land.services[s].utilisation;
                rates[s].map(|r| {
                    if r > 0.0 && !matches!(land.services[s].tier, Tier::RoomClient(_) | Tier::Edge)
                    {
                        r * config.scale / u
                    } else {
                        f64::INFINITY
                    }
                })
            })
            .collect::<Vec<_>>();
        let load0 = diurnal(config.start_us);
        let load = (0..n)
            .map(|s| rates[s].map(|r| r * config.scale * load0))
            .collect();
        let hosts = (0..n)
            .map(|s| {
                std::array::from_fn(|z| {
                    std::array::from_fn(|v| format!("{}:{PORT}", Landscape::address(s, z, v)))
                })
            })
            .collect();
        let sink = land.idx(SINK);
        let shippers = (0..n)
            .filter(|&s| s != sink)
            .flat_map(|s| {
                let svc = &land.services[s];
                (0..ZONES.len())
                    .filter(move |&z| svc.in_zone(z))
                    .map(move |z| (s, z))
            })
            .collect();
        let zone_swing = std::array::from_fn(|_| ZONE_SWING.0 * rng.normal());
        let client_swing = (0..n).map(|_| CLIENT_SWING.0 * rng.normal()).collect();
        let st = State {
            rng,
            start_us: config.start_us,
            end_us: config.start_us + config.duration_us,
            scale: config.scale,
            tick: 0,
            ticks: (config.duration_us + SECOND_US - 1) / SECOND_US,
            heap: BinaryHeap::new(),
            seq: 0,
            ready: VecDeque::new(),
            capacity,
            load,
            units: vec![[0.0; 3]; n],
            zone_swing,
            client_swing,
            hosts,
            roots: Vec::new(),
            edge: land.idx("edge-gateway"),
            sink,
            clients: (0..n)
                .filter(|&s| matches!(land.services[s].tier, Tier::RoomClient(_)))
                .collect(),
            shippers,
            log_call: Call {
                to: vec![(sink, 1.0)],
                mean: 1.0,
                required: false,
                timeout_us: LOG_TIMEOUT_US,
                request_bytes: LOG_BATCH_BYTES,
                method: "POST",
                cost: 1.0,
            },
        };
        Engine { land, plan, st }
    }

    pub(crate) fn seconds_done(&self) -> i64 {
        self.st.tick
    }

    pub(crate) fn next_record(&mut self) -> Option<FlowRecord> {
        loop {
            if let Some(r) = self.st.ready.pop_front() {
                return Some(r);
            }
            if self.st.tick < self.st.ticks {
                self.st.second(&self.land, &self.plan);
            } else {
                let Reverse(p) = self.st.heap.pop()?;
                return Some(p.record);
            }
        }
    }
}

impl State {
    /// Simulates one second of event time.
    fn second(&mut self, land: &Landscape, plan: &Plan) {
        let t0 = self.start_us + self.tick * SECOND_US;
        let t1 = (t0 + SECOND_US).min(self.end_us);
        let dt = (t1 - t0) as f64 / SECOND_US as f64;
        for z in 0..ZONES.len() {
            self.zone_swing[z] = ou_step(&mut self.rng, self.zone_swing[z], ZONE_SWING, dt);
        }
        for i in 0..self.clients.len() {
            let c = self.clients[i];
            self.client_swing[c] = ou_step(&mut self.rng, self.client_swing[c], CLIENT_SWING, dt);
        }
        let day = diurnal(t0);
        let mut roots = std::mem::take(&mut self.roots);
        roots.clear();
        let mut draw = |rng: &mut Rng, rate: f64, root: Root| {
            for _ in 0..rng.poisson(rate * dt) {
                roots.push((rng.range(t0, t1 - 1), root));
            }
        };
        for z in 0..ZONES.len() {
            let rate = land.edge_rps
                * super::landscape::ZONE_SHARE[z]
                * self.scale
                * day
                * self.zone_swing[z].exp();
            draw(&mut self.rng, rate, Root::Edge(z));
        }
        for &c in &self.clients {
            let rate = land.client_rps * self.scale * day * self.client_swing[c].exp();
            draw(&mut self.rng, rate, Root::Client(c));
        }
        if let Some(IncidentPlan::SegmentationDos {
            clients, rate_rps, ..
        }) = &plan.incident
            && plan.active(t0)
        {
            for &c in clients {
                draw(&mut self.rng, *rate_rps, Root::Attack(c));
            }
        }
        for &(s, z) in &self.shippers {
            let mut rate = land.log_rps * self.scale;
            if let Some(IncidentPlan::LoggingStorm {
                recovery_us,
                buffering,
                flush,
                ..
            }) = &plan.incident
                && buffering[s]
            {
                let (from, len) = flush[s][z];
                if (from..from + len).contains(&t0) {
                    // the backlog of the outage, sent over the flush
                    let outage = (recovery_us - plan.onset_us) as f64;
                    rate *= 1.0 + outage / len as f64;
                }
            }
            draw(&mut self.rng, rate, Root::Log(s, z));
        }
        // a stable sort: simultaneous roots keep the order they were drawn in
        roots.sort_by_key(|r| r.0);
        for &(start, root) in &roots {
            self.root(land, plan, start, root, day);
        }
        self.roots = roots;
        for (load, units) in self.load.iter_mut().zip(self.units.iter_mut()) {
            for z in 0..ZONES.len() {
                load[z] = (1.0 - LOAD_ALPHA) * load[z] + LOAD_ALPHA * units[z] / dt;
                units[z] = 0.0;
            }
        }
        while self.heap.peek().is_some_and(|p| p.0.start_us < t1) {
            let Reverse(p) = self.heap.pop().expect("peeked");
            self.ready.push_back(p.record);
        }
        self.tick += 1;
    }

    fn root(&mut self, land: &Landscape, plan: &Plan, start: i64, root: Root, day: f64) {
        let rid = self.rng.uuid();
        let at = |st: &mut State, service: usize, zone: usize| Inst {
            service,
            zone,
            version: plan.version(service, zone, start, &mut st.rng),
        };
        match root {
            Root::Edge(z) => {
                let inst = at(self, self.edge, z);
                self.handle(land, plan, inst, start, &rid);
            }
            Root::Client(c) => {
                let z = land.services[c].zones.trailing_zeros() as usize;
                let inst = at(self, c, z);
                self.handle(land, plan, inst, start, &rid);
            }
            Root::Attack(c) => {
                let Some(IncidentPlan::SegmentationDos { call, .. }) = &plan.incident else {
                    return;
                };
                if !plan.active(start) {
                    return;
                }
                let z = land.services[c].zones.trailing_zeros() as usize;
                let inst = at(self, c, z);
                let to = call.to[self.rng.weighted(call.to.iter().map(|t| t.1))].0;
                self.call(land, plan, inst, call, to, start, &rid, 1.0);
            }
            Root::Log(s, z) => {
                let inst = at(self, s, z);
                let call = self.log_call.clone();
                // batches grow with the traffic they carry
                self.call(land, plan, inst, &call, self.sink, start, &rid, day);
            }
        }
    }

    /// Latency multiplier and shed probability of an instance at its current load
    /// (M/M/1: response time ∝ 1/(1 − ρ), relative to the service's utilisation at mean load).
    fn pressure(&self, land: &Landscape, service: usize, zone: usize) -> (f64, f64) {
        let cap = self.capacity[service][zone];
        if !cap.is_finite() {
            return (1.0, 0.0);
        }
        let rho = self.load[service][zone] / cap;
        let u0 = land.services[service].utilisation;
        let slow = (1.0 - u0) / (1.0 - rho.min(MAX_UTILISATION));
        let shed = if rho > MAX_UTILISATION {
            1.0 - MAX_UTILISATION / rho
        } else {
            0.0
        };
        (slow, shed)
    }

    /// An instance handles a request starting at `start`: its own time and its calls, in
    /// sequence. Returns (duration, whether it failed).
    fn handle(
        &mut self,
        land: &Landscape,
        plan: &Plan,
        inst: Inst,
        start: i64,
        rid: &str,
    ) -> (i64, bool) {
        let svc = &land.services[inst.service];
        let (slow, _) = self.pressure(land, inst.service, inst.zone);
        let mut own = self.rng.lognormal(svc.self_us * slow, svc.sigma);
        if self.rng.chance(0.001) {
            // a pause (garbage collection, a cold connection): the long tail's far end
            own += self.rng.uniform(50_000.0, 300_000.0);
        }
        let own = own.max(20.0) as i64;
        let pre = (own as f64 * self.rng.uniform(0.2, 0.6)) as i64;
        let mut failed = self.rng.chance(svc.error_rate);
        if failed && self.rng.chance(0.5) {
            return (own, true); // failed before calling anything
        }
        let mut t = start + pre;
        for call in &land.calls[inst.service][inst.version] {
            for _ in 0..self.rng.count(call.mean) {
                let to = if call.to.len() == 1 {
                    call.to[0].0
                } else {
                    call.to[self.rng.weighted(call.to.iter().map(|t| t.1))].0
                };
                let out = self.call(land, plan, inst, call, to, t, rid, 1.0);
                t += out.duration_us + self.rng.range(10, 80);
                failed |= call.required && !out.ok;
            }
        }
        (t - start + (own - pre), failed)
    }

    /// The zone a call from `from` to `to` goes to.
    fn route(&mut self, land: &Landscape, plan: &Plan, from: Inst, to: usize, t: i64) -> usize {
        let dest = &land.services[to];
        if !dest.in_zone(from.zone) {
            return dest.zones.trailing_zeros() as usize;
        }
        if let Some(IncidentPlan::CrossZone {
            source,
            destination,
            from_zone,
            to_zone,
            share,
        }) = &plan.incident
            && (*source, *destination, *from_zone) == (from.service, to, from.zone)
            && plan.active(t)
            && self.rng.chance(*share)
        {
            return *to_zone;
        }
        for &(s, d, sz, dz, share) in &plan.fail_over {
            if (s, d, sz) == (from.service, to, from.zone) && self.rng.chance(share) {
                return dz;
            }
        }
        from.zone
    }

    /// One call from `from` to `to`: routes it, lets the callee handle it (or not), and
    /// records it as the caller's sidecar sees it. `bytes_factor` scales the request body.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        land: &Landscape,
        plan: &Plan,
        from: Inst,
        call: &Call,
        to: usize,
        start: i64,
        rid: &str,
        bytes_factor: f64,
    ) -> Outcome {
        let zone = self.route(land, plan, from, to, start);
        let version = plan.version(to, zone, start, &mut self.rng);
        let callee = Inst {
            service: to,
            zone,
            version,
        };
        self.units[to][zone] += call.cost;
        let rtt = if zone == from.zone {
            self.rng.lognormal(250.0, 0.3)
        } else {
            self.rng.lognormal(1_800.0, 0.3)
        } as i64;
        let timeout = call.timeout_us + self.rng.range(0, 2_000);
        let mut request_bytes = self.rng.lognormal(call.request_bytes * bytes_factor, 0.5) as u64;
        let svc = &land.services[to];
        let (status, flags, duration, sent): (u16, Option<&str>, i64, u64) = match &plan.incident {
            Some(IncidentPlan::BlackHole { service, reset })
                if *service == to && plan.active(start) =>
            {
                if *reset {
                    let d = self.rng.range(rtt + 1_000, timeout);
                    (503, Some("UC"), d, 95)
                } else {
                    (504, Some("UT"), timeout, 24)
                }
            }
            Some(IncidentPlan::LoggingStorm { recovery_us, .. })
                if to == self.sink && (plan.onset_us..*recovery_us).contains(&start) =>
            {
                if self.rng.chance(0.6) {
                    let d = rtt + self.rng.lognormal(1_500.0, 0.4) as i64;
                    (503, Some("UF"), d, 91)
                } else {
                    (504, Some("UT"), timeout, 24)
                }
            }
            _ => {
                let (_, shed) = self.pressure(land, to, zone);
                if self.rng.chance(shed) {
                    let d = rtt + self.rng.lognormal(200.0, 0.3) as i64;
                    (503, Some("UO"), d, 81)
                } else {
                    let (took, failed) = self.handle(land, plan, callee, start + rtt / 2, rid);
                    let total = rtt + took;
                    if total > timeout {
                        (504, Some("UT"), timeout, 24)
                    } else if failed {
                        let status = if self.rng.chance(0.7) { 500 } else { 503 };
                        (status, None, total, self.rng.lognormal(120.0, 0.3) as u64)
                    } else if self.rng.chance(svc.client_error_rate) {
                        let status = [404, 404, 404, 400, 401][self.rng.index(5)];
                        (status, None, total, self.rng.lognormal(110.0, 0.3) as u64)
                    } else {
                        let sent = self.rng.lognormal(svc.response_bytes, 0.6) as u64;
                        (200, None, total, sent)
                    }
                }
            }
        };
        if status == 503 && flags == Some("UF") {
            request_bytes = 0; // never connected
        }
        if start < self.end_us {
            let caller = &land.services[from.service];
            let http1 = caller.tier == Tier::Edge || to == self.sink;
            let record = FlowRecord {
                schema_version: SCHEMA_VERSION,
                start_us: start,
                duration_us: Some(duration as u64),
                source: caller.name.clone(),
                source_zone: Some(ZONES[from.zone].to_owned()),
                source_version: Some(caller.versions[from.version].clone()),
                destination: svc.name.clone(),
                destination_zone: Some(ZONES[zone].to_owned()),
                destination_version: Some(svc.versions[version].clone()),
                protocol: Some(if http1 { "HTTP/1.1" } else { "HTTP/2" }.to_owned()),
                method: Some(call.method.to_owned()),
                status: Some(status),
                response_flags: flags.map(str::to_owned),
                bytes_received: request_bytes,
                bytes_sent: sent,
                upstream_host: Some(self.hosts[to][zone][version].clone()),
                upstream_attempts: Vec::new(),
                request_id: Some(rid.to_owned()),
                reporter: Reporter::Envoy,
            };
            self.seq += 1;
            self.heap.push(Reverse(Pending {
                start_us: start,
                seq: self.seq,
                record,
            }));
        }
        Outcome {
            duration_us: duration,
            ok: status < 500,
        }
    }
}
