//! Findings a client can forge or hide: requests that reached no service, requests another
//! service answered, and requests a client aborts at once must not fake a black hole on a
//! healthy service, nor hide a real one.

use serde_json::Value;

use crate::util::{self, BASE_SECS, format_rfc3339_ms, graywatch_ok, of_kind};

/// 10 s windows, 15 s lateness; an edge Envoy whose lines all name `edge` as their source.
const EDGE_CONFIG: &str = "[mapping]\nservice = \"edge\"\n\n[detect.window]\nlength = \"10s\"\nallowed-lateness = \"15s\"\n";

/// `(start ms since BASE_SECS, line)` of `per_second` requests each second of `[from, to)` s,
/// spread evenly, made by `line(start_ms, i)`.
fn spread(
    from: u64,
    to: u64,
    per_second: u64,
    line: impl Fn(i64, u64) -> (i64, String),
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for second in from..to {
        for i in 0..per_second {
            let start_ms = second as i64 * 1000 + (i * 1000 / per_second) as i64;
            out.push(line(start_ms, second * 1000 + i));
        }
    }
    out
}

/// The lines sorted by the time they are written (`end` ms), one per line.
fn log(mut lines: Vec<(i64, String)>) -> String {
    lines.sort_by_key(|(end, _)| *end);
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

/// How the request was answered: (status, response flags, duration ms).
type Answer<'a> = (u16, &'a str, i64);

fn ts(start_ms: i64) -> String {
    format_rfc3339_ms(BASE_SECS * 1000 + start_ms)
}

/// An edge Envoy line, default text format.
fn envoy_text(
    start_ms: i64,
    authority: &str,
    (status, flags, ms): Answer<'_>,
    upstream: &str,
    id: u64,
) -> (i64, String) {
    (
        start_ms + ms,
        format!(
            "[{}] \"GET /pay HTTP/1.1\" {status} {flags} 120 340 {ms} - \"198.51.100.7\" \"client/1.0\" \"{id:016x}\" \"{authority}\" \"{upstream}\"",
            ts(start_ms)
        ),
    )
}

/// An edge Envoy line, `json_format` with the upstream cluster.
fn envoy_json(
    start_ms: i64,
    authority: &str,
    (status, flags, ms): Answer<'_>,
    upstream: &str,
    cluster: &str,
    id: u64,
) -> (i64, String) {
    let line = serde_json::json!({
        "start_time": ts(start_ms),
        "method": "GET",
        "protocol": "HTTP/1.1",
        "response_code": status.to_string(),
        "response_flags": flags,
        "bytes_received": "120",
        "bytes_sent": "340",
        "duration": ms.to_string(),
        "request_id": format!("{id:016x}"),
        "authority": authority,
        "upstream_host": upstream,
        "upstream_cluster": cluster,
    });
    (start_ms + ms, line.to_string())
}

/// Runs `replay` on `inputs` (file name, contents) with `config`; returns the documents.
fn replay(config: &str, format: &str, inputs: &[(&str, String)]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    util::write(&config_path, config);
    let mut paths = Vec::new();
    for (name, text) in inputs {
        let p = dir.path().join(name);
        util::write(&p, text);
        paths.push(p.to_str().unwrap().to_owned());
    }
    let mut args = vec![
        "replay",
        "--format",
        format,
        "--config",
        config_path.to_str().unwrap(),
    ];
    args.extend(paths.iter().map(String::as_str));
    let (docs, stderr) = graywatch_ok(&args);
    assert!(stderr.contains("rejected  0"), "{stderr}");
    assert!(stderr.contains("late      0"), "{stderr}");
    docs
}

/// The subjects of the findings, one per finding.
fn finding_subjects(docs: &[Value]) -> Vec<String> {
    of_kind(docs, "finding")
        .iter()
        .map(|f| f["subject"]["node"].as_str().unwrap().to_owned())
        .collect()
}

/// The healthy edge traffic: 30 req/s to payments, 20 to catalog, for 200 s.
fn edge_traffic_text() -> Vec<(i64, String)> {
    let mut lines = spread(0, 200, 30, |t, id| {
        envoy_text(t, "payments", (200, "-", 8), "10.0.8.3:8080", id)
    });
    lines.extend(spread(0, 200, 20, |t, id| {
        envoy_text(t, "catalog", (200, "-", 5), "10.0.3.4:8080", id + 1_000_000)
    }));
    lines
}

#[test]
fn forged_hosts_that_reach_no_service_fake_no_black_hole() {
    // From 120 s on, a client sends 150 req/s with `Host: payments:1`: the edge finds no route
    // (404 NR, no upstream host). payments itself answers every request it gets.
    let mut lines = edge_traffic_text();
    lines.extend(spread(120, 200, 150, |t, id| {
        envoy_text(t, "payments:1", (404, "NR", 0), "-", id + 2_000_000)
    }));
    let docs = replay(EDGE_CONFIG, "envoy", &[("edge.log", log(lines))]);

    assert_eq!(finding_subjects(&docs), Vec::<String>::new());
    assert!(of_kind(&docs, "remediation-command").is_empty());
    // payments' inflow is its own: 300 requests per window, all answered.
    let payments: Vec<_> = of_kind(&docs, "node-window")
        .into_iter()
        .filter(|n| n["node"] == "payments" && n["inflow_requests"] != 0)
        .map(|n| {
            (
                n["inflow_requests"].as_u64().unwrap(),
                n["ok_responses"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(payments, vec![(300, 300); 20]);
    // The forged requests stay visible, as the edge's errors to the unrouted sink.
    let unrouted: Vec<_> = of_kind(&docs, "pair-window")
        .into_iter()
        .filter(|p| p["destination"] == schemas::UNROUTED)
        .map(|p| {
            (
                p["source"].as_str().unwrap().to_owned(),
                p["requests"].as_u64().unwrap(),
                p["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(unrouted, vec![("edge".to_owned(), 1_500, 1_500); 8]);
}

/// The edge's JSON logs: 20 req/s to payments, which times out every request (504 UT after
/// 1 s) from 120 s on; `noise` adds 30 req/s with `Host: payments` that the route sends to
/// reviews, which answers them.
fn payments_black_hole_json(noise: bool) -> String {
    let payments = "outbound|8080||payments.default.svc.cluster.local";
    let reviews = "outbound|9080||reviews.default.svc.cluster.local";
    let mut lines = spread(0, 200, 20, |t, id| {
        if t >= 120_000 {
            envoy_json(
                t,
                "payments",
                (504, "UT", 1_000),
                "10.0.8.3:8080",
                payments,
                id,
            )
        } else {
            envoy_json(t, "payments", (200, "-", 8), "10.0.8.3:8080", payments, id)
        }
    });
    lines.extend(spread(0, 200, 20, |t, id| {
        envoy_json(
            t,
            "reviews",
            (200, "-", 6),
            "10.0.2.7:9080",
            reviews,
            id + 1_000_000,
        )
    }));
    if noise {
        lines.extend(spread(120, 200, 30, |t, id| {
            envoy_json(
                t,
                "payments",
                (200, "-", 6),
                "10.0.2.7:9080",
                reviews,
                id + 2_000_000,
            )
        }));
    }
    log(lines)
}

#[test]
fn requests_another_service_answered_do_not_hide_a_black_hole() {
    let clean = replay(
        EDGE_CONFIG,
        "envoy-json",
        &[("edge.log", payments_black_hole_json(false))],
    );
    let noisy = replay(
        EDGE_CONFIG,
        "envoy-json",
        &[("edge.log", payments_black_hole_json(true))],
    );
    // The black hole is found in each of its 8 windows, with or without the noise.
    assert_eq!(finding_subjects(&clean), vec!["payments"; 8]);
    assert_eq!(finding_subjects(&noisy), vec!["payments"; 8]);
    let start = |d: &&Value| d["window"]["start_us"].as_i64().unwrap();
    assert_eq!(
        of_kind(&noisy, "finding").iter().map(start).min(),
        Some((BASE_SECS + 120) * 1_000_000)
    );
    // The noise is reviews' inflow, answered.
    let reviews_inflow = of_kind(&noisy, "node-window")
        .into_iter()
        .find(|n| {
            n["node"] == "reviews" && n["window"]["start_us"] == (BASE_SECS + 150) * 1_000_000
        })
        .map(|n| {
            (
                n["inflow_requests"].as_u64().unwrap(),
                n["ok_responses"].as_u64().unwrap(),
            )
        });
    assert_eq!(reviews_inflow, Some((500, 500)));
}

/// Istio inbound lines of `db`'s sidecar for a client at 10.0.9.5 (no mapping rule names it)
/// that sends 160 req/s from 100 s to 200 s and hangs up each after 1 ms (`0 DC`).
fn aborts_to_db() -> String {
    log(spread(100, 200, 160, |t, id| {
        (
            t + 1,
            format!(
                "[{}] \"GET /api/db HTTP/1.1\" 0 DC downstream_remote_disconnect - \"-\" 0 0 1 - \"-\" \"client/1.0\" \"{id:016x}\" \"db:8080\" \"10.0.7.3:8080\" inbound|8080|| 127.0.0.6:40000 10.0.7.3:8080 10.0.9.5:{port} outbound_.8080_._.db.default.svc.cluster.local default",
                ts(t),
                port = 32768 + id % 20_000,
            ),
        )
    }))
}

#[test]
fn a_client_aborting_its_requests_at_once_fakes_no_black_hole_and_hides_none() {
    let config = util::landscape_config();
    // db, a healthy leaf that inventory calls 30 req/s, and the aborts.
    let healthy = util::landscape_logs(200, "inventory", u64::MAX, 7);
    let docs = replay(
        &config,
        "istio",
        &[("landscape.log", healthy), ("aborts.log", aborts_to_db())],
    );
    assert_eq!(finding_subjects(&docs), Vec::<String>::new());
    assert!(of_kind(&docs, "remediation-command").is_empty());
    let db = of_kind(&docs, "node-window")
        .into_iter()
        .find(|n| n["node"] == "db" && n["window"]["start_us"] == (BASE_SECS + 150) * 1_000_000)
        .map(|n| {
            (
                n["inflow_requests"].as_u64().unwrap() - n["ok_responses"].as_u64().unwrap(),
                n["callers"].as_u64().unwrap(),
            )
        });
    // 1,600 aborts and inventory's calls reach db in that window: none counts against it
    // but inventory's own few 503s (the generator fails 0.2 % of requests)
    let (not_ok, callers) = db.unwrap();
    assert!(not_ok <= 3, "{not_ok}");
    assert_eq!(callers, 2);

    // The same aborts while inventory is a black hole from 120 s: its findings are those of
    // the landscape without them.
    let broken = util::landscape_logs(200, "inventory", 120, 7);
    let clean = replay(&config, "istio", &[("landscape.log", broken.clone())]);
    let noisy = replay(
        &config,
        "istio",
        &[("landscape.log", broken), ("aborts.log", aborts_to_db())],
    );
    let expected = finding_subjects(&clean);
    assert_eq!(expected, vec!["inventory"; 8]);
    assert_eq!(finding_subjects(&noisy), expected);
    assert_eq!(of_kind(&noisy, "remediation-command").len(), 1);
}
