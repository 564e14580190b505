//! `graywatch render envoy|istio`: what a remediation command is in Envoy and in Istio, for
//! operators who enforce with their mesh instead of `graywatch enforce nginx`.
//!
//! **Envoy** (one JSON object per command): the runtime keys to set through the admin
//! endpoint (`POST /runtime_modify?key=value&…`, per Envoy's runtime and admin docs; a revoke
//! sets them to the empty value, which removes the override), and the static config the keys
//! act on where the runtime alone can't express the command:
//! - circuit breaker and segmentation: the HTTP fault filter's abort, per caller
//!   (`fault.http.<downstream-cluster>.abort.abort_percent` and `.http_status`; Envoy matches
//!   the `x-envoy-downstream-service-cluster` header), or for every caller
//!   (`fault.http.abort.*`); a tier needs a `headers` match in the filter's config;
//!   `slower_than_us` is the route's `timeout`;
//! - bulkhead: the destination cluster's circuit-breaker thresholds
//!   (`circuit_breakers.<cluster>.default.max_requests`), deny as a fault abort with 403;
//! - backpressure: a route-level `envoy.filters.http.local_ratelimit` config with one
//!   token-bucket descriptor per caller (Envoy's local rate limit filter), switched by the
//!   runtime key `graywatch.<tag>.enabled`;
//! - quarantine: the weight of the version's cluster (`<service>-<version>`) in the route's
//!   `weighted_clusters`, through their `runtime_key_prefix` (`graywatch.<service>`).
//!
//! **Istio** (a Kubernetes `List` in JSON, which `kubectl apply -f` takes): segmentation and
//! bulkhead deny as an `AuthorizationPolicy` (`DENY`, callers as service-account principals
//! `cluster.local/ns/<namespace>/sa/<service>`), bulkhead caps as a `DestinationRule`
//! connection pool, circuit breaker as a `VirtualService` fault abort (or timeout) with
//! `sourceLabels` per caller, backpressure as an `EnvoyFilter` adding the local rate limit on
//! the destination's inbound sidecar, quarantine as `DestinationRule` subsets by `version`
//! label and `VirtualService` weights (the other versions must be named: `--versions`).
//! A revoke is the same resources, to delete (`kubectl delete -f`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use schemas::{CommandAction, Parameters, RemediationCommand};
use serde_json::{Value, json};

/// `graywatch render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The mesh to render for.
    #[arg(value_enum)]
    pub target: Mesh,
    /// Commands, JSON lines (`-`: stdin); each is rendered.
    #[arg(value_name = "COMMAND|-")]
    pub commands: PathBuf,
    /// Istio: the namespace of the services.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Istio quarantine: the versions a service runs, `SERVICE=V1,V2` (repeatable).
    #[arg(long, value_name = "SERVICE=V1,V2")]
    pub versions: Vec<String>,
}

/// A mesh `graywatch render` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mesh {
    /// Envoy: admin runtime keys plus static config snippets.
    Envoy,
    /// Istio: Kubernetes resources.
    Istio,
}

/// Short, stable name of a command's objects (as in the NGINX rendering).
fn tag(id: &str) -> String {
    format!("gw-{:08x}", crc32fast::hash(id.as_bytes()))
}

fn runtime_modify_path(keys: &BTreeMap<String, String>) -> String {
    let mut q = String::from("/runtime_modify?");
    for (i, (k, v)) in keys.iter().enumerate() {
        if i > 0 {
            q.push('&');
        }
        q.push_str(k);
        q.push('=');
        q.push_str(v);
    }
    q
}

/// `command` for Envoy: `{"command", "action", "runtime": {key: value}, "runtime_modify":
/// "/runtime_modify?…", "config": {…}, "notes": […]}`.
pub fn envoy(c: &RemediationCommand) -> Value {
    let t = &c.target;
    let revoke = c.action == CommandAction::Revoke;
    let mut keys = BTreeMap::new();
    let mut config = serde_json::Map::new();
    let mut notes = Vec::new();
    let mut set = |k: String, v: String| {
        keys.insert(k, if revoke { String::new() } else { v });
    };
    let abort = |set: &mut dyn FnMut(String, String), status: u16| {
        if t.sources.is_empty() {
            set("fault.http.abort.abort_percent".into(), "100".into());
            set("fault.http.abort.http_status".into(), status.to_string());
        }
        for s in &t.sources {
            set(format!("fault.http.{s}.abort.abort_percent"), "100".into());
            set(
                format!("fault.http.{s}.abort.http_status"),
                status.to_string(),
            );
        }
    };
    match &c.parameters {
        Parameters::Segmentation(s) => abort(&mut set, s.status),
        Parameters::CircuitBreaker(cb) => {
            if let Some(us) = cb.slower_than_us {
                config.insert(
                    "route".into(),
                    json!({ "timeout": format!("{}s", us as f64 / 1e6) }),
                );
            } else {
                abort(&mut set, cb.status);
            }
            if let Some(tier) = &cb.tier {
                config.insert(
                    "fault_filter".into(),
                    json!({ "headers": [{ "name": "x-graywatch-tier", "string_match": { "exact": tier } }] }),
                );
                notes.push("the tier is matched in the fault filter's config: deploy it with the headers match".to_owned());
            }
        }
        Parameters::Bulkhead(b) => match b.max_concurrency {
            Some(n) => {
                for d in &t.destinations {
                    set(
                        format!("circuit_breakers.{d}.default.max_requests"),
                        n.to_string(),
                    );
                }
                if !t.sources.is_empty() || !b.allow.is_empty() {
                    notes.push("Envoy's circuit breakers cap the destination cluster for every caller: per-caller caps and the allow-list are not expressible at runtime".to_owned());
                }
            }
            None => abort(&mut set, 403),
        },
        Parameters::Backpressure(b) => {
            let name = tag(&c.id);
            set(format!("graywatch.{name}.enabled"), "100".into());
            let descriptors: Vec<Value> = b
                .rate_limit_rps
                .iter()
                .map(|(caller, rps)| {
                    let (max, tokens, interval_ms) = token_bucket(*rps);
                    json!({
                        "entries": [{ "key": "caller", "value": caller }],
                        "token_bucket": {
                            "max_tokens": max,
                            "tokens_per_fill": tokens,
                            "fill_interval": format!("{}s", interval_ms as f64 / 1e3),
                        },
                    })
                })
                .collect();
            config.insert(
                "route_typed_per_filter_config".into(),
                json!({
                    "envoy.filters.http.local_ratelimit": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                        "stat_prefix": name,
                        "token_bucket": { "max_tokens": 1_000_000, "tokens_per_fill": 1_000_000, "fill_interval": "1s" },
                        "filter_enabled": { "runtime_key": format!("graywatch.{name}.enabled"), "default_value": { "numerator": 0, "denominator": "HUNDRED" } },
                        "filter_enforced": { "runtime_key": format!("graywatch.{name}.enabled"), "default_value": { "numerator": 0, "denominator": "HUNDRED" } },
                        "descriptors": descriptors,
                    }
                }),
            );
            config.insert(
                "route_rate_limits".into(),
                json!([{ "actions": [{ "request_headers": { "header_name": "x-envoy-downstream-service-cluster", "descriptor_key": "caller" } }] }]),
            );
        }
        Parameters::Quarantine(q) => {
            let version = t.version.as_deref().unwrap_or("");
            for d in &t.destinations {
                set(
                    format!("graywatch.{d}.{d}-{version}"),
                    ((q.weight * 100.0).round() as u64).to_string(),
                );
            }
            notes.push("the route's weighted_clusters name one cluster per version (<service>-<version>) with runtime_key_prefix graywatch.<service>; the other versions keep their weights".to_owned());
        }
    }
    if t.source_zone.is_some() || t.destination_zone.is_some() {
        notes.push(
            "the zone scope is not rendered: these keys apply to every zone of the listed services"
                .to_owned(),
        );
    }
    json!({
        "command": c.id,
        "action": c.action.as_str(),
        "runtime": keys,
        "runtime_modify": runtime_modify_path(&keys),
        "config": config,
        "notes": notes,
    })
}

/// A token bucket of `rps` req/s: (max tokens, tokens per fill, fill interval ms). A whole
/// rate fills once a second; another fills one token every 1/rps s, which Envoy allows down
/// to 50 ms (faster, the rate is rounded to whole req/s). The bucket holds one second's worth.
fn token_bucket(rps: f64) -> (u64, u64, u64) {
    let max = (rps.ceil() as u64).max(1);
    if rps.fract() == 0.0 || 1000.0 / rps < 50.0 {
        (max, (rps.round() as u64).max(1), 1000)
    } else {
        (max, 1, (1000.0 / rps).round() as u64)
    }
}

fn metadata(c: &RemediationCommand, name: String, namespace: &str) -> Value {
    json!({
        "name": name,
        "namespace": namespace,
        "labels": { "app.kubernetes.io/managed-by": "graywatch" },
        "annotations": { "graywatch.io/command": c.id, "graywatch.io/revision": c.revision.to_string(), "graywatch.io/expires-at-us": c.expires_at_us.to_string() },
    })
}

/// `command` for Istio: a `v1` `List` of resources (see the module docs).
///
/// # Errors
/// A quarantine whose service's other versions are not in `versions`.
pub fn istio(
    c: &RemediationCommand,
    namespace: &str,
    versions: &BTreeMap<String, Vec<String>>,
) -> anyhow::Result<Value> {
    let t = &c.target;
    let name = tag(&c.id);
    let account = |s: &String| format!("cluster.local/ns/{namespace}/sa/{s}");
    let principals: Vec<String> = t.sources.iter().map(account).collect();
    let mut items = Vec::new();
    let deny = |items: &mut Vec<Value>, d: &str, allow: &[schemas::Edge]| {
        let mut source = if principals.is_empty() {
            json!({ "principals": ["*"] })
        } else {
            json!({ "principals": principals })
        };
        let spared: Vec<String> = allow
            .iter()
            .filter(|e| e.destination == d)
            .map(|e| account(&e.source))
            .collect();
        if !spared.is_empty() {
            source["notPrincipals"] = json!(spared);
        }
        let from = json!([{ "source": source }]);
        items.push(json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": metadata(c, format!("{name}-{d}"), namespace),
            "spec": { "selector": { "matchLabels": { "app": d } }, "action": "DENY", "rules": [{ "from": from }] },
        }));
    };
    for d in &t.destinations {
        match &c.parameters {
            Parameters::Segmentation(_) => deny(&mut items, d, &[]),
            Parameters::Bulkhead(b) => match b.max_concurrency {
                None => deny(&mut items, d, &b.allow),
                Some(n) => items.push(json!({
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "DestinationRule",
                    "metadata": metadata(c, format!("{name}-{d}"), namespace),
                    "spec": { "host": d, "trafficPolicy": { "connectionPool": {
                        "tcp": { "maxConnections": n },
                        "http": { "http2MaxRequests": n, "http1MaxPendingRequests": n },
                    } } },
                })),
            },
            Parameters::CircuitBreaker(cb) => {
                let mut matches: Vec<Value> = t
                    .sources
                    .iter()
                    .map(|s| json!({ "sourceLabels": { "app": s } }))
                    .collect();
                if let Some(tier) = &cb.tier {
                    if matches.is_empty() {
                        matches.push(json!({}));
                    }
                    for m in &mut matches {
                        m["headers"] = json!({ "x-graywatch-tier": { "exact": tier } });
                    }
                }
                let mut route = json!({ "route": [{ "destination": { "host": d } }] });
                if !matches.is_empty() {
                    route["match"] = Value::Array(matches);
                }
                match cb.slower_than_us {
                    Some(us) => route["timeout"] = json!(format!("{}s", us as f64 / 1e6)),
                    None => {
                        route["fault"] = json!({ "abort": { "httpStatus": cb.status, "percentage": { "value": 100.0 } } })
                    }
                }
                items.push(json!({
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "VirtualService",
                    "metadata": metadata(c, format!("{name}-{d}"), namespace),
                    "spec": { "hosts": [d], "http": [route, { "route": [{ "destination": { "host": d } }] }] },
                }));
            }
            Parameters::Backpressure(_) => {
                let mut filter = envoy(c)["config"]["route_typed_per_filter_config"]
                    ["envoy.filters.http.local_ratelimit"]
                    .clone();
                filter["filter_enabled"]["default_value"]["numerator"] = json!(100);
                filter["filter_enforced"]["default_value"]["numerator"] = json!(100);
                items.push(json!({
                    "apiVersion": "networking.istio.io/v1alpha3",
                    "kind": "EnvoyFilter",
                    "metadata": metadata(c, format!("{name}-{d}"), namespace),
                    "spec": {
                        "workloadSelector": { "labels": { "app": d } },
                        "configPatches": [{
                            "applyTo": "HTTP_FILTER",
                            "match": { "context": "SIDECAR_INBOUND", "listener": { "filterChain": { "filter": { "name": "envoy.filters.network.http_connection_manager" } } } },
                            "patch": { "operation": "INSERT_BEFORE", "value": { "name": "envoy.filters.http.local_ratelimit", "typed_config": filter } },
                        }],
                    },
                }));
            }
            Parameters::Quarantine(q) => {
                let version = t.version.as_deref().unwrap_or_default();
                let others: Vec<&String> = versions
                    .get(d)
                    .map(|v| v.iter().filter(|v| *v != version).collect())
                    .unwrap_or_default();
                if others.is_empty() {
                    anyhow::bail!(
                        "{}: quarantining {d} {version} needs the versions that go on serving: --versions {d}=V1,V2",
                        c.id
                    );
                }
                let subsets: Vec<Value> = std::iter::once(&version.to_owned())
                    .chain(others.iter().copied())
                    .map(|v| json!({ "name": v, "labels": { "version": v } }))
                    .collect();
                let kept = (q.weight * 100.0).round() as u64;
                let rest = 100 - kept;
                let n = others.len() as u64;
                let mut route = vec![
                    json!({ "destination": { "host": d, "subset": version }, "weight": kept }),
                ];
                for (i, v) in others.iter().enumerate() {
                    let w = rest / n + u64::from((i as u64) < rest % n);
                    route.push(json!({ "destination": { "host": d, "subset": v }, "weight": w }));
                }
                items.push(json!({
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "DestinationRule",
                    "metadata": metadata(c, format!("{name}-{d}"), namespace),
                    "spec": { "host": d, "subsets": subsets },
                }));
                items.push(json!({
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "VirtualService",
                    "metadata": metadata(c, format!("{name}-{d}"), namespace),
                    "spec": { "hosts": [d], "http": [{ "route": route }] },
                }));
            }
        }
    }
    Ok(json!({ "apiVersion": "v1", "kind": "List", "items": items }))
}

/// `graywatch render`: prints one rendering per command of the input.
///
/// # Errors
/// The input can't be read, a line is not a command (named `FILE:LINE`), or a quarantine
/// lacks `--versions`.
pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let text = if args.commands.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.commands)
            .with_context(|| format!("reading {}", args.commands.display()))?
    };
    let mut versions = BTreeMap::new();
    for v in &args.versions {
        let Some((service, list)) = v.split_once('=') else {
            anyhow::bail!("--versions {v:?}: expected SERVICE=V1,V2");
        };
        versions.insert(
            service.to_owned(),
            list.split(',').map(str::to_owned).collect::<Vec<_>>(),
        );
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c: RemediationCommand = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not a remediation command",
                args.commands.display(),
                i + 1
            )
        })?;
        let value = match args.target {
            Mesh::Envoy => envoy(&c),
            Mesh::Istio => istio(&c, &args.namespace, &versions)?,
        };
        print_json(&value)?;
    }
    Ok(())
}

/// Prints `value` as one JSON document (pretty) on stdout.
fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::tests::command;

    #[test]
    fn envoy_segmentation_is_a_fault_abort_per_caller_and_a_revoke_clears_it() {
        let c = command(
            json!({ "target": { "sources": ["room1-client-0"], "destinations": ["room2-relay-0"] } }),
        );
        let e = envoy(&c);
        assert_eq!(
            e["runtime"]["fault.http.room1-client-0.abort.abort_percent"],
            "100"
        );
        assert_eq!(
            e["runtime"]["fault.http.room1-client-0.abort.http_status"],
            "403"
        );
        assert_eq!(
            e["runtime_modify"],
            "/runtime_modify?fault.http.room1-client-0.abort.abort_percent=100&fault.http.room1-client-0.abort.http_status=403"
        );
        let revoke = command(
            json!({ "action": "revoke", "revision": 1, "target": { "sources": ["room1-client-0"], "destinations": ["room2-relay-0"] } }),
        );
        assert_eq!(
            envoy(&revoke)["runtime"]["fault.http.room1-client-0.abort.abort_percent"],
            ""
        );
    }

    #[test]
    fn envoy_backpressure_is_a_token_bucket_per_caller() {
        let c = command(json!({
            "id": "backpressure/orders/1", "pattern": "backpressure",
            "target": { "sources": ["batch"], "destinations": ["orders"] },
            "parameters": { "rate_limit_rps": { "batch": 0.5 } },
        }));
        let e = envoy(&c);
        let f = &e["config"]["route_typed_per_filter_config"]["envoy.filters.http.local_ratelimit"];
        assert_eq!(f["descriptors"][0]["entries"][0]["value"], "batch");
        assert_eq!(
            f["descriptors"][0]["token_bucket"]["fill_interval"], "2s",
            "0.5 req/s: one token per 2 s"
        );
        let key = f["filter_enabled"]["runtime_key"].as_str().unwrap();
        assert_eq!(e["runtime"][key], "100");
    }

    #[test]
    fn istio_quarantine_needs_the_serving_versions_and_splits_the_rest() {
        let c = command(json!({
            "id": "quarantine/orders/1", "pattern": "quarantine",
            "target": { "sources": [], "destinations": ["orders"], "version": "v2" },
            "parameters": { "weight": 0.1 },
        }));
        let e = istio(&c, "shop", &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("--versions orders=V1,V2"), "{e}");
        let versions = BTreeMap::from([(
            "orders".to_owned(),
            vec!["v1".to_owned(), "v2".to_owned(), "v3".to_owned()],
        )]);
        let list = istio(&c, "shop", &versions).unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items[0]["kind"], "DestinationRule");
        assert_eq!(items[0]["metadata"]["namespace"], "shop");
        let route = items[1]["spec"]["http"][0]["route"].as_array().unwrap();
        let weights: Vec<(&str, u64)> = route
            .iter()
            .map(|r| {
                (
                    r["destination"]["subset"].as_str().unwrap(),
                    r["weight"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(weights, [("v2", 10), ("v1", 45), ("v3", 45)]);
    }

    #[test]
    fn istio_segmentation_denies_the_callers_service_accounts() {
        let c =
            command(json!({ "target": { "sources": ["attacker"], "destinations": ["orders"] } }));
        let list = istio(&c, "shop", &BTreeMap::new()).unwrap();
        let p = &list["items"][0];
        assert_eq!(p["kind"], "AuthorizationPolicy");
        assert_eq!(p["spec"]["action"], "DENY");
        assert_eq!(p["spec"]["selector"]["matchLabels"]["app"], "orders");
        assert_eq!(
            p["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
            "cluster.local/ns/shop/sa/attacker"
        );
    }
}
