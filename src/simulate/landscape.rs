//! The simulated landscape: services in tiers, zones, versions, the fixed call graph, and the
//! pod addresses that name each (service, zone, version) in the Envoy and Istio formats.
//!
//! ```text
//!   edge-gateway ─▶ web-frontend | mobile-bff ─▶ auth, catalog-api, search-api, cart-api,
//!                                                account-api, checkout-api
//!   catalog-api ─▶ product, pricing, inventory, recommendation, reviews
//!   search-api ─▶ search-index, product        cart-api ─▶ cart, pricing
//!   checkout-api ─▶ cart, order, payment       account-api ─▶ user, order
//!   business services ─▶ cache, product-db, order-db, user-db, each other
//!   roomN-client-K ─▶ roomN-relay-0 | roomN-relay-1 ─▶ auth        (segments room1..room3)
//!   every service but the sink ─▶ log-collector                    (log shipping)
//! ```
//!
//! Everything here is fixed: no seed changes the services, edges, latencies or addresses, so
//! the mapping rules ([`Landscape::mapping_rules`]) can be written down once
//! (`deploy/examples/simulate.toml`). Every service has two versions, the one it runs and the
//! one a deployment brings; in a clean run both behave the same.

use std::fmt::Write as _;

/// The zones, in address order (`10.<zone index + 1>.…`).
pub const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// Share of the edge's traffic entering each zone.
pub const ZONE_SHARE: [f64; 3] = [0.40, 0.35, 0.25];

/// The log sink every service ships its logs to.
pub const SINK: &str = "log-collector";

/// The segments: services named `roomN-…` belong to segment `roomN`.
pub const ROOMS: [&str; 3] = ["room1", "room2", "room3"];

/// Relays per room (`roomN-relay-0`, `roomN-relay-1`), each in every zone.
pub const RELAYS_PER_ROOM: usize = 2;

/// Clients per room (`roomN-client-0` …), client K in zone K.
pub const CLIENTS_PER_ROOM: usize = 3;

/// The port every service listens on.
pub const PORT: u16 = 8080;

/// Calls a zone's instances may send to another zone: (source, destination, source zone,
/// destination zone, share of the pair's calls from that zone). Database fail-over: the
/// primary of `order-db` is in zone-a, of `user-db` in zone-b.
pub const FAIL_OVER: [(&str, &str, &str, &str, f64); 3] = [
    ("order", "order-db", "zone-b", "zone-a", 0.02),
    ("order", "order-db", "zone-c", "zone-a", 0.02),
    ("user", "user-db", "zone-c", "zone-b", 0.01),
];

/// Which part of the landscape a service is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The edge proxy: where user requests enter (no inflow is recorded).
    Edge,
    /// Web and mobile front ends.
    Frontend,
    /// The API layer.
    Api,
    /// A room's client (segment `roomN`): starts its own requests.
    RoomClient(usize),
    /// A room's relay (segment `roomN`).
    RoomRelay(usize),
    /// Business services.
    Business,
    /// Shared stores: cache, databases, search index.
    Shared,
    /// The log sink.
    Sink,
}

/// One service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Its tier.
    pub tier: Tier,
    /// Bit `z` set when it runs in zone `z`.
    pub zones: u8,
    /// The version it runs, and the version a deployment brings.
    pub versions: [String; 2],
    /// Median of its own processing time (without its calls), µs.
    pub self_us: f64,
    /// Lognormal shape of the processing time (p99/p50 = e^(2.326σ)).
    pub sigma: f64,
    /// Probability that it fails a request by itself (500 or 503).
    pub error_rate: f64,
    /// Probability that it answers a client error (400, 401, 404).
    pub client_error_rate: f64,
    /// Median response body, bytes.
    pub response_bytes: f64,
    /// Utilisation at the landscape's mean load: its capacity is its mean load divided by this.
    pub utilisation: f64,
}

impl Service {
    /// Whether it runs in zone `z`.
    pub fn in_zone(&self, z: usize) -> bool {
        self.zones & (1 << z) != 0
    }

    /// The segment (`roomN`) it belongs to, if any.
    pub fn room(&self) -> Option<usize> {
        match self.tier {
            Tier::RoomClient(r) | Tier::RoomRelay(r) => Some(r),
            _ => None,
        }
    }
}

/// One kind of call a service makes while it handles a request.
#[derive(Debug, Clone)]
pub struct Call {
    /// Destinations (service index) with their weights: each call goes to one of them.
    pub to: Vec<(usize, f64)>,
    /// Calls per handled request (mean; see `Rng::count`).
    pub mean: f64,
    /// Whether the caller fails when this call fails (else it answers without it).
    pub required: bool,
    /// The caller's timeout, µs: a call that takes longer ends `504 UT` at this time.
    pub timeout_us: i64,
    /// Median request body, bytes.
    pub request_bytes: f64,
    /// HTTP method.
    pub method: &'static str,
    /// Capacity units one call uses at its destination (1 for an ordinary call).
    pub cost: f64,
}

/// The landscape: services (callers before callees) and, per service and version, the calls
/// it makes per request.
#[derive(Debug, Clone)]
pub struct Landscape {
    /// Every service, in call order: a call always goes to a later index.
    pub services: Vec<Service>,
    /// `calls[service][version]`: what one request to that version calls.
    pub calls: Vec<[Vec<Call>; 2]>,
    /// Requests per second entering at the edge at scale 1 and mean load.
    pub edge_rps: f64,
    /// Requests per second each room client starts at scale 1 and mean load.
    pub client_rps: f64,
    /// Log batches per second each instance ships at scale 1.
    pub log_rps: f64,
}

/// (name, tier, version, next version, own time ms, p99/p50, 5xx rate, 4xx rate, response
/// bytes, utilisation at mean load); every such service runs in every zone.
type Row = (
    &'static str,
    Tier,
    &'static str,
    &'static str,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
);

const ALL: u8 = 0b111;

/// Services before the rooms'.
const HEAD: [Row; 8] = [
    (
        "edge-gateway",
        Tier::Edge,
        "v1.27.3",
        "v1.28.0",
        0.4,
        6.0,
        0.0005,
        0.0,
        2000.0,
        0.2,
    ),
    (
        "web-frontend",
        Tier::Frontend,
        "v4.12.0",
        "v4.13.0",
        6.0,
        10.0,
        0.002,
        0.005,
        14000.0,
        0.2,
    ),
    (
        "mobile-bff",
        Tier::Frontend,
        "v2.7.1",
        "v2.8.0",
        4.0,
        8.0,
        0.002,
        0.005,
        6000.0,
        0.2,
    ),
    (
        "catalog-api",
        Tier::Api,
        "v3.4.2",
        "v3.5.0",
        2.0,
        8.0,
        0.001,
        0.01,
        8000.0,
        0.2,
    ),
    (
        "search-api",
        Tier::Api,
        "v5.0.3",
        "v5.1.0",
        2.5,
        12.0,
        0.001,
        0.005,
        9000.0,
        0.2,
    ),
    (
        "cart-api",
        Tier::Api,
        "v1.9.0",
        "v1.10.0",
        1.5,
        8.0,
        0.001,
        0.01,
        3000.0,
        0.2,
    ),
    (
        "account-api",
        Tier::Api,
        "v1.3.0",
        "v1.4.0",
        2.0,
        8.0,
        0.001,
        0.02,
        1500.0,
        0.2,
    ),
    (
        "checkout-api",
        Tier::Api,
        "v2.2.5",
        "v2.3.0",
        3.0,
        10.0,
        0.002,
        0.01,
        2000.0,
        0.2,
    ),
];

/// Services after the rooms', callers before callees.
const TAIL: [Row; 19] = [
    (
        "recommendation",
        Tier::Business,
        "v7.3.0",
        "v7.4.0",
        12.0,
        15.0,
        0.003,
        0.0,
        4000.0,
        0.2,
    ),
    (
        "reviews",
        Tier::Business,
        "v2.0.4",
        "v2.1.0",
        5.0,
        10.0,
        0.002,
        0.0,
        6000.0,
        0.2,
    ),
    (
        "order",
        Tier::Business,
        "v6.1.2",
        "v6.2.0",
        8.0,
        10.0,
        0.002,
        0.0,
        1500.0,
        0.2,
    ),
    (
        "payment",
        Tier::Business,
        "v3.8.0",
        "v3.9.0",
        25.0,
        12.0,
        0.004,
        0.0,
        800.0,
        0.2,
    ),
    (
        "fraud-check",
        Tier::Business,
        "v1.14.0",
        "v1.15.0",
        9.0,
        15.0,
        0.002,
        0.0,
        300.0,
        0.2,
    ),
    (
        "cart",
        Tier::Business,
        "v4.4.1",
        "v4.5.0",
        2.0,
        8.0,
        0.001,
        0.0,
        1800.0,
        0.2,
    ),
    (
        "shipping",
        Tier::Business,
        "v1.1.7",
        "v1.2.0",
        6.0,
        10.0,
        0.002,
        0.0,
        900.0,
        0.2,
    ),
    (
        "notification",
        Tier::Business,
        "v0.8.2",
        "v0.9.0",
        3.0,
        12.0,
        0.005,
        0.0,
        200.0,
        0.2,
    ),
    (
        "product",
        Tier::Business,
        "v8.2.0",
        "v8.3.0",
        3.0,
        10.0,
        0.001,
        0.0,
        5000.0,
        0.2,
    ),
    (
        "pricing",
        Tier::Business,
        "v2.5.3",
        "v2.6.0",
        1.5,
        8.0,
        0.001,
        0.0,
        600.0,
        0.2,
    ),
    (
        "inventory",
        Tier::Business,
        "v3.0.1",
        "v3.1.0",
        2.0,
        10.0,
        0.002,
        0.0,
        400.0,
        0.2,
    ),
    (
        "user",
        Tier::Business,
        "v5.6.0",
        "v5.7.0",
        2.0,
        8.0,
        0.001,
        0.0,
        900.0,
        0.2,
    ),
    (
        "auth",
        Tier::Business,
        "v2.9.2",
        "v2.10.0",
        0.8,
        6.0,
        0.0005,
        0.0,
        350.0,
        0.2,
    ),
    (
        "search-index",
        Tier::Shared,
        "v8.11.1",
        "v8.12.0",
        6.0,
        20.0,
        0.002,
        0.0,
        12000.0,
        0.2,
    ),
    (
        "cache",
        Tier::Shared,
        "v7.2.4",
        "v7.2.5",
        0.35,
        8.0,
        0.0005,
        0.0,
        700.0,
        0.3,
    ),
    (
        "product-db",
        Tier::Shared,
        "v15.4",
        "v15.5",
        2.5,
        12.0,
        0.001,
        0.0,
        3000.0,
        0.2,
    ),
    (
        "order-db",
        Tier::Shared,
        "v15.4",
        "v15.5",
        3.0,
        12.0,
        0.001,
        0.0,
        1000.0,
        0.2,
    ),
    (
        "user-db",
        Tier::Shared,
        "v15.4",
        "v15.5",
        2.0,
        12.0,
        0.001,
        0.0,
        800.0,
        0.2,
    ),
    (
        SINK,
        Tier::Sink,
        "v3.7.0",
        "v3.7.1",
        2.0,
        10.0,
        0.001,
        0.0,
        60.0,
        0.1,
    ),
];

/// (caller, [(callee, weight)], calls per request, required, timeout ms, request bytes,
/// method).
type Edge = (
    &'static str,
    &'static [(&'static str, f64)],
    f64,
    bool,
    i64,
    f64,
    &'static str,
);

/// The call graph (rooms' edges are added per room).
const EDGES: [Edge; 44] = [
    (
        "edge-gateway",
        &[("web-frontend", 0.6), ("mobile-bff", 0.4)],
        1.0,
        true,
        15_000,
        600.0,
        "GET",
    ),
    (
        "web-frontend",
        &[("auth", 1.0)],
        1.0,
        true,
        1_000,
        300.0,
        "POST",
    ),
    (
        "web-frontend",
        &[("catalog-api", 1.0)],
        0.7,
        true,
        5_000,
        400.0,
        "GET",
    ),
    (
        "web-frontend",
        &[("search-api", 1.0)],
        0.3,
        false,
        3_000,
        300.0,
        "GET",
    ),
    (
        "web-frontend",
        &[("cart-api", 1.0)],
        0.25,
        true,
        3_000,
        500.0,
        "POST",
    ),
    (
        "web-frontend",
        &[("account-api", 1.0)],
        0.2,
        true,
        3_000,
        300.0,
        "GET",
    ),
    (
        "web-frontend",
        &[("checkout-api", 1.0)],
        0.05,
        true,
        10_000,
        1500.0,
        "POST",
    ),
    (
        "mobile-bff",
        &[("auth", 1.0)],
        1.0,
        true,
        1_000,
        300.0,
        "POST",
    ),
    (
        "mobile-bff",
        &[("catalog-api", 1.0)],
        0.6,
        true,
        5_000,
        400.0,
        "GET",
    ),
    (
        "mobile-bff",
        &[("search-api", 1.0)],
        0.2,
        false,
        3_000,
        300.0,
        "GET",
    ),
    (
        "mobile-bff",
        &[("cart-api", 1.0)],
        0.3,
        true,
        3_000,
        500.0,
        "POST",
    ),
    (
        "mobile-bff",
        &[("account-api", 1.0)],
        0.3,
        true,
        3_000,
        300.0,
        "GET",
    ),
    (
        "mobile-bff",
        &[("checkout-api", 1.0)],
        0.06,
        true,
        10_000,
        1500.0,
        "POST",
    ),
    (
        "catalog-api",
        &[("product", 1.0)],
        1.0,
        true,
        2_000,
        200.0,
        "GET",
    ),
    (
        "catalog-api",
        &[("pricing", 1.0)],
        1.0,
        true,
        1_000,
        200.0,
        "GET",
    ),
    (
        "catalog-api",
        &[("inventory", 1.0)],
        0.5,
        false,
        1_000,
        200.0,
        "GET",
    ),
    (
        "catalog-api",
        &[("recommendation", 1.0)],
        0.4,
        false,
        500,
        200.0,
        "GET",
    ),
    (
        "catalog-api",
        &[("reviews", 1.0)],
        0.3,
        false,
        1_000,
        200.0,
        "GET",
    ),
    (
        "search-api",
        &[("search-index", 1.0)],
        1.0,
        true,
        2_000,
        400.0,
        "POST",
    ),
    (
        "search-api",
        &[("product", 1.0)],
        0.5,
        false,
        1_000,
        200.0,
        "GET",
    ),
    (
        "cart-api",
        &[("cart", 1.0)],
        1.0,
        true,
        1_000,
        400.0,
        "POST",
    ),
    (
        "cart-api",
        &[("pricing", 1.0)],
        0.5,
        false,
        1_000,
        200.0,
        "GET",
    ),
    (
        "account-api",
        &[("user", 1.0)],
        1.0,
        true,
        1_000,
        200.0,
        "GET",
    ),
    (
        "account-api",
        &[("order", 1.0)],
        0.3,
        false,
        2_000,
        200.0,
        "GET",
    ),
    (
        "checkout-api",
        &[("cart", 1.0)],
        1.0,
        true,
        1_000,
        300.0,
        "GET",
    ),
    (
        "checkout-api",
        &[("order", 1.0)],
        1.0,
        true,
        5_000,
        1200.0,
        "POST",
    ),
    (
        "checkout-api",
        &[("payment", 1.0)],
        1.0,
        true,
        8_000,
        900.0,
        "POST",
    ),
    (
        "recommendation",
        &[("product", 1.0)],
        0.5,
        false,
        500,
        200.0,
        "GET",
    ),
    (
        "recommendation",
        &[("cache", 1.0)],
        1.0,
        false,
        200,
        150.0,
        "GET",
    ),
    (
        "reviews",
        &[("product-db", 1.0)],
        1.0,
        true,
        1_000,
        300.0,
        "POST",
    ),
    ("reviews", &[("user", 1.0)], 0.3, false, 500, 200.0, "GET"),
    (
        "order",
        &[("order-db", 1.0)],
        1.0,
        true,
        2_000,
        800.0,
        "POST",
    ),
    (
        "order",
        &[("inventory", 1.0)],
        1.0,
        true,
        1_000,
        300.0,
        "POST",
    ),
    (
        "order",
        &[("shipping", 1.0)],
        0.5,
        false,
        2_000,
        400.0,
        "POST",
    ),
    (
        "order",
        &[("notification", 1.0)],
        1.0,
        false,
        1_000,
        500.0,
        "POST",
    ),
    (
        "payment",
        &[("fraud-check", 1.0)],
        1.0,
        true,
        3_000,
        600.0,
        "POST",
    ),
    (
        "payment",
        &[("order-db", 1.0)],
        0.5,
        true,
        2_000,
        500.0,
        "POST",
    ),
    (
        "fraud-check",
        &[("user", 1.0)],
        1.0,
        true,
        500,
        200.0,
        "GET",
    ),
    ("cart", &[("cache", 1.0)], 1.0, true, 200, 250.0, "GET"),
    (
        "cart",
        &[("inventory", 1.0)],
        0.3,
        false,
        1_000,
        200.0,
        "GET",
    ),
    (
        "shipping",
        &[("order-db", 1.0)],
        0.5,
        true,
        2_000,
        300.0,
        "POST",
    ),
    ("product", &[("cache", 1.0)], 1.0, false, 200, 150.0, "GET"),
    (
        "product",
        &[("product-db", 1.0)],
        0.15,
        true,
        1_000,
        300.0,
        "POST",
    ),
    ("pricing", &[("cache", 1.0)], 1.0, true, 200, 150.0, "GET"),
];

/// Edges of the services listed last (kept apart so that the table above stays one screen).
const MORE_EDGES: [Edge; 5] = [
    (
        "inventory",
        &[("product-db", 1.0)],
        1.0,
        true,
        1_000,
        250.0,
        "POST",
    ),
    ("user", &[("user-db", 1.0)], 1.0, true, 1_000, 250.0, "POST"),
    ("user", &[("cache", 1.0)], 1.0, false, 200, 150.0, "GET"),
    ("auth", &[("cache", 1.0)], 1.0, true, 200, 150.0, "GET"),
    ("auth", &[("user-db", 1.0)], 0.1, true, 1_000, 250.0, "POST"),
];

/// Per room: client → one of the room's relays, relay → auth.
const CLIENT_TIMEOUT_MS: i64 = 2_000;
const RELAY_AUTH_TIMEOUT_MS: i64 = 1_000;

/// Log shipping: a batch of access-log lines, POSTed to the sink.
pub const LOG_TIMEOUT_US: i64 = 5_000_000;

/// Median log batch at mean load, bytes.
pub const LOG_BATCH_BYTES: f64 = 8_000.0;

impl Landscape {
    /// The landscape (always the same).
    pub fn new() -> Self {
        let mut services = Vec::new();
        let row = |r: &Row| {
            let (name, tier, base, next, ms, tail, err, client_err, bytes, util) = *r;
            Service {
                name: name.to_owned(),
                tier,
                zones: ALL,
                versions: [base.to_owned(), next.to_owned()],
                self_us: ms * 1000.0,
                sigma: tail.ln() / 2.326,
                error_rate: err,
                client_error_rate: client_err,
                response_bytes: bytes,
                utilisation: util,
            }
        };
        services.extend(HEAD.iter().map(row));
        for (r, room) in ROOMS.iter().enumerate() {
            for k in 0..CLIENTS_PER_ROOM {
                services.push(Service {
                    name: format!("{room}-client-{k}"),
                    tier: Tier::RoomClient(r),
                    zones: 1 << (k % ZONES.len()),
                    versions: ["v0.9.4".into(), "v0.9.5".into()],
                    self_us: 200.0,
                    sigma: 5f64.ln() / 2.326,
                    error_rate: 0.0,
                    client_error_rate: 0.0,
                    response_bytes: 200.0,
                    utilisation: 0.2,
                });
            }
            for k in 0..RELAYS_PER_ROOM {
                services.push(Service {
                    name: format!("{room}-relay-{k}"),
                    tier: Tier::RoomRelay(r),
                    zones: ALL,
                    versions: ["v3.1.0".into(), "v3.2.0".into()],
                    self_us: 1200.0,
                    sigma: 8f64.ln() / 2.326,
                    error_rate: 0.001,
                    client_error_rate: 0.0,
                    response_bytes: 1200.0,
                    utilisation: 0.15,
                });
            }
        }
        services.extend(TAIL.iter().map(row));
        let index = |name: &str| {
            services
                .iter()
                .position(|s| s.name == name)
                .unwrap_or_else(|| panic!("landscape table names unknown service {name}"))
        };
        let mut calls: Vec<Vec<Call>> = vec![Vec::new(); services.len()];
        for (from, to, mean, required, timeout_ms, bytes, method) in
            EDGES.iter().chain(MORE_EDGES.iter())
        {
            calls[index(from)].push(Call {
                to: to.iter().map(|(t, w)| (index(t), *w)).collect(),
                mean: *mean,
                required: *required,
                timeout_us: timeout_ms * 1000,
                request_bytes: *bytes,
                method,
                cost: 1.0,
            });
        }
        let auth = index("auth");
        for room in ROOMS {
            let relays: Vec<usize> = (0..RELAYS_PER_ROOM)
                .map(|k| index(&format!("{room}-relay-{k}")))
                .collect();
            for k in 0..CLIENTS_PER_ROOM {
                calls[index(&format!("{room}-client-{k}"))].push(Call {
                    to: relays.iter().map(|&r| (r, 1.0)).collect(),
                    mean: 1.0,
                    required: true,
                    timeout_us: CLIENT_TIMEOUT_MS * 1000,
                    request_bytes: 900.0,
                    method: "POST",
                    cost: 1.0,
                });
            }
            for &r in &relays {
                calls[r].push(Call {
                    to: vec![(auth, 1.0)],
                    mean: 1.0,
                    required: true,
                    timeout_us: RELAY_AUTH_TIMEOUT_MS * 1000,
                    request_bytes: 300.0,
                    method: "POST",
                    cost: 1.0,
                });
            }
        }
        Landscape {
            services,
            calls: calls.into_iter().map(|c| [c.clone(), c]).collect(),
            edge_rps: 8.5,
            client_rps: 1.0,
            log_rps: 0.1,
        }
    }

    /// The index of the service named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }

    /// The index of the service named `name`; panics on a name not in the tables (a bug).
    pub(crate) fn idx(&self, name: &str) -> usize {
        self.index(name)
            .unwrap_or_else(|| panic!("no service {name} in the landscape"))
    }

    /// The services of room `r` of a tier: its clients or its relays.
    pub fn room_members(&self, r: usize, relays: bool) -> Vec<usize> {
        (0..self.services.len())
            .filter(|&i| match self.services[i].tier {
                Tier::RoomRelay(x) => relays && x == r,
                Tier::RoomClient(x) => !relays && x == r,
                _ => false,
            })
            .collect()
    }

    /// Expected requests each service handles per request entering at the edge, and per
    /// request a room client starts (summed over the room clients, each starting one),
    /// with every service on its first version.
    pub fn visits(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.services.len();
        let spread = |roots: &[usize]| {
            let mut v = vec![0.0; n];
            for &r in roots {
                v[r] += 1.0;
            }
            for s in 0..n {
                for c in &self.calls[s][0] {
                    let total: f64 = c.to.iter().map(|(_, w)| w).sum();
                    for &(t, w) in &c.to {
                        v[t] += v[s] * c.mean * w / total;
                    }
                }
            }
            v
        };
        let clients: Vec<usize> = (0..n)
            .filter(|&i| matches!(self.services[i].tier, Tier::RoomClient(_)))
            .collect();
        (spread(&[self.idx("edge-gateway")]), spread(&clients))
    }

    /// Requests per second each instance handles at scale 1 and mean load: `[service][zone]`
    /// (room clients: the requests they start). Capacities are these divided by the
    /// service's utilisation.
    pub fn mean_rates(&self) -> Vec<[f64; 3]> {
        let (edge, rooms) = self.visits();
        self.services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut r = [0.0; 3];
                for (z, rate) in r.iter_mut().enumerate() {
                    if s.in_zone(z) {
                        // each zone holds one client of each room, calling in its zone
                        *rate = self.edge_rps * ZONE_SHARE[z] * edge[i]
                            + self.client_rps * rooms[i] / ZONES.len() as f64;
                    }
                }
                if let Tier::RoomClient(_) = s.tier {
                    let z = s.zones.trailing_zeros() as usize;
                    r[z] = self.client_rps;
                }
                r
            })
            .collect()
    }

    /// Pod address of an instance: `10.<zone + 1>.<service index>.<version + 1>`.
    pub fn address(service: usize, zone: usize, version: usize) -> String {
        format!("10.{}.{}.{}", zone + 1, service, version + 1)
    }

    /// The `[mapping]` rules that name every instance from its pod address, as TOML: a
    /// destination rule on `upstream-host` (`10.1.31.1:8080`) and a source rule on
    /// `downstream-address` (`10.1.31.1:*`) per (service, zone, version). With them the
    /// `envoy-json` and `istio` parsers read the simulator's lines into the same services,
    /// zones and versions as its flow-json records.
    pub fn mapping_rules(&self) -> String {
        let mut out = String::from("[mapping]\nrules = [\n");
        for (i, s) in self.services.iter().enumerate() {
            for z in (0..ZONES.len()).filter(|&z| s.in_zone(z)) {
                for (v, version) in s.versions.iter().enumerate() {
                    let ip = Landscape::address(i, z, v);
                    let (name, zone) = (&s.name, ZONES[z]);
                    let _ = writeln!(
                        out,
                        "  {{ field = \"upstream-host\", pattern = \"{ip}:{PORT}\", service = \"{name}\", zone = \"{zone}\", version = \"{version}\" }},"
                    );
                    let _ = writeln!(
                        out,
                        "  {{ field = \"downstream-address\", side = \"source\", pattern = \"{ip}:*\", service = \"{name}\", zone = \"{zone}\", version = \"{version}\" }},"
                    );
                }
            }
        }
        out.push_str("]\n");
        out
    }
}

impl Default for Landscape {
    fn default() -> Self {
        Landscape::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_go_forward_and_stay_in_the_landscape() {
        let l = Landscape::new();
        assert!(
            (30..=45).contains(&l.services.len()),
            "{}",
            l.services.len()
        );
        for (s, by_version) in l.calls.iter().enumerate() {
            for c in &by_version[0] {
                for &(t, _) in &c.to {
                    assert!(
                        t > s,
                        "{} calls {} before it",
                        l.services[s].name,
                        l.services[t].name
                    );
                }
            }
        }
        let names: std::collections::BTreeSet<_> = l.services.iter().map(|s| &s.name).collect();
        assert_eq!(names.len(), l.services.len(), "names are unique");
        let sink = l.idx(SINK);
        assert_eq!(sink, l.services.len() - 1);
        assert!(l.calls[sink][0].is_empty());
    }

    #[test]
    fn visits_follow_calls_per_request() {
        let l = Landscape::new();
        let (edge, rooms) = l.visits();
        let v = |n: &str| edge[l.idx(n)];
        assert_eq!(v("edge-gateway"), 1.0);
        assert!((v("web-frontend") - 0.6).abs() < 1e-12);
        // every front end calls auth once
        assert!((v("auth") - 1.0).abs() < 1e-12);
        // catalog-api: 0.6·0.7 + 0.4·0.6
        assert!((v("catalog-api") - 0.66).abs() < 1e-12);
        assert!(v("cache") > 3.0 && v("cache") < 4.0, "{}", v("cache"));
        // each client's request reaches one relay of its room, which calls auth once
        let relays: f64 = (0..ROOMS.len())
            .flat_map(|r| l.room_members(r, true))
            .map(|i| rooms[i])
            .sum();
        assert!((relays - 9.0).abs() < 1e-12);
        assert!((rooms[l.idx("auth")] - 9.0).abs() < 1e-12);
        assert_eq!(rooms[l.idx("catalog-api")], 0.0);
    }

    #[test]
    fn mapping_rules_parse_as_a_config() {
        let l = Landscape::new();
        let config: crate::config::Config = toml::from_str(&l.mapping_rules()).unwrap();
        let instances: usize = l
            .services
            .iter()
            .map(|s| s.zones.count_ones() as usize)
            .sum();
        assert_eq!(config.mapping.rules.len(), instances * 2 * 2);
        ingest::Mapping::try_from(config.mapping).unwrap();
    }
}
