//! A landscape in which one node becomes a black hole midway (see `util::landscape_logs`).

use crate::util::{self, BASE_SECS, graywatch_ok, of_kind};

/// `graywatch replay` of the landscape's Istio `logs` with its config: (documents, summary).
fn replay_landscape(logs: &str) -> (Vec<serde_json::Value>, String) {
    replay_landscape_with(logs, &util::landscape_config())
}

/// [`replay_landscape`] with the config `config`.
fn replay_landscape_with(logs: &str, config: &str) -> (Vec<serde_json::Value>, String) {
    let (dir, path) = util::temp_path("istio.log");
    util::write(&path, logs);
    let config_path = dir.path().join("landscape.toml");
    util::write(&config_path, config);
    graywatch_ok(&[
        "replay",
        "-f",
        "istio",
        "-c",
        config_path.to_str().unwrap(),
        path.to_str().unwrap(),
    ])
}

/// Start of a document's window, µs.
fn start(d: &serde_json::Value) -> i64 {
    d["window"]["start_us"].as_i64().unwrap()
}

/// The first of `docs`' findings, checking that every finding is on `inventory`, none before
/// `at_us`, and the first a black hole in the window starting at `at_us`.
fn first_black_hole<'a>(
    docs: &'a [serde_json::Value],
    stderr: &str,
    at_us: i64,
) -> &'a serde_json::Value {
    let findings = of_kind(docs, "finding");
    assert!(!findings.is_empty(), "no finding; stderr:\n{stderr}");
    for f in &findings {
        assert_eq!(f["subject"]["node"], "inventory", "unexpected finding {f}");
        assert!(start(f) >= at_us, "finding before the black hole: {f}");
    }
    let first = findings.into_iter().min_by_key(|f| start(f)).unwrap();
    assert_eq!(start(first), at_us, "not in the first bad window: {first}");
    assert_eq!(first["signature"], "black-hole");
    first
}

/// 10 s windows; the black hole starts at 120 s, i.e. with the 13th window.
#[test]
fn black_hole_is_found_in_its_first_window_with_backpressure_on_its_callers() {
    let (docs, stderr) = replay_landscape(&util::landscape_logs(200, "inventory", 120, 7));
    assert!(stderr.contains("rejected  0"), "{stderr}");
    assert!(stderr.contains("late      0"), "{stderr}");

    let black_hole_start_us = (BASE_SECS + 120) * 1_000_000;
    let first = first_black_hole(&docs, &stderr, black_hole_start_us);
    // for people: the window's times in RFC 3339, and the summary names the subject and when
    assert_eq!(first["window"]["start"], "2024-05-01T00:02:00Z");
    assert_eq!(first["window"]["end"], "2024-05-01T00:02:10Z");
    let on_inventory: Vec<_> = of_kind(&docs, "finding")
        .into_iter()
        .filter(|f| {
            f["id"]
                .as_str()
                .unwrap()
                .starts_with("black-hole/node/inventory/")
        })
        .collect();
    let last_end = on_inventory
        .iter()
        .map(|f| f["window"]["end"].as_str().unwrap())
        .max()
        .unwrap();
    let named = format!(
        "    black-hole on node inventory: {} findings, windows from 2024-05-01T00:02:00Z to {last_end}\n",
        on_inventory.len()
    );
    assert!(stderr.contains(&named), "{named}{stderr}");
    let mut callers: Vec<&str> = first["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["service"].as_str().unwrap())
        .collect();
    callers.sort();
    assert_eq!(callers, ["cart", "catalog"]);

    // The node window backs the finding: inflow as before, nothing ok, no downstream calls.
    let nodes = of_kind(&docs, "node-window");
    let inventory = nodes
        .iter()
        .find(|n| n["node"] == "inventory" && start(n) == black_hole_start_us)
        .expect("inventory's node window");
    assert_eq!(inventory["ok_responses"], 0);
    assert_eq!(inventory["downstream_requests"], 0);
    // (20 + 10) req/s ± 10 % over 10 s
    let inflow = inventory["inflow_requests"].as_u64().unwrap();
    assert!((270..=330).contains(&inflow), "inflow {inflow}");

    let commands = of_kind(&docs, "remediation-command");
    assert_eq!(
        commands.len(),
        1,
        "one command while it is in force: {commands:?}"
    );
    let c = commands[0];
    assert_eq!(c["pattern"], "backpressure");
    assert_eq!(c["action"], "issue");
    assert_eq!(c["revision"], 0);
    assert_eq!(c["mode"], "dry-run");
    assert_eq!(
        c["target"]["destinations"],
        serde_json::json!(["inventory"])
    );
    assert_eq!(
        c["target"]["sources"],
        serde_json::json!(["cart", "catalog"])
    );
    assert_eq!(c["reason"]["finding"], first["id"]);
    assert_eq!(c["reason"]["incident"], "black-hole/node/inventory");
    // the decision is audited
    let audit = of_kind(&docs, "audit");
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["decision"], "issued");
    assert_eq!(audit[0]["command"], c["id"]);
    // Half of catalog's baseline 20 req/s (generated with ±10 % jitter).
    let limit = c["parameters"]["rate_limit_rps"]["catalog"]
        .as_f64()
        .unwrap();
    assert!((9.0..=11.0).contains(&limit), "catalog limit {limit}");
    assert_eq!(
        c["expires_at_us"].as_i64().unwrap() - c["issued_at_us"].as_i64().unwrap(),
        300_000_000,
        "default TTL is 5 min"
    );

    // One incident, still open at the end: the black hole lasts to the end of the input, and
    // the two trailing windows without a finding are fewer than resolve-after-windows (3).
    let alerts = of_kind(&docs, "alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["action"], "trigger");
    assert_eq!(alerts[0]["dedup_key"], "black-hole/node/inventory");
    assert_eq!(alerts[0]["finding"], first["id"]);
}

/// Without the black hole, the same landscape gives no finding at all.
#[test]
fn healthy_landscape_has_no_finding() {
    let (docs, _) = replay_landscape(&util::landscape_logs(200, "inventory", u64::MAX, 7));
    assert!(of_kind(&docs, "finding").is_empty());
    assert!(of_kind(&docs, "remediation-command").is_empty());
    // 7 edges × 20 windows with requests, all closed at the end of input. Requests that start
    // just before 200 s and end after it also make pair windows at [200 s, 210 s) that carry
    // only their concurrency (no request starts there).
    let pairs = of_kind(&docs, "pair-window");
    let with_requests = pairs.iter().filter(|p| p["requests"] != 0).count();
    assert_eq!(with_requests, 7 * 20);
    for p in pairs.iter().filter(|p| p["requests"] == 0) {
        assert_eq!(
            p["window"]["start_us"],
            (BASE_SECS + 200) * 1_000_000,
            "{p}"
        );
        assert!(p["concurrency_mean"].as_f64().unwrap() > 0.0, "{p}");
    }
}

/// The same landscape over TCP: no status, no flag; the black hole reads each connection's
/// bytes and sends none back (bytes in, nothing out) and stops connecting to its database.
#[test]
fn a_tcp_black_hole_is_found_by_bytes_in_and_nothing_out() {
    let logs = util::landscape_logs_over(util::Protocol::Tcp, 200, "inventory", 120, 7);
    assert!(
        logs.lines().all(|l| l.contains("\"- - -\" 0 - ")),
        "TCP lines only"
    );
    let (docs, stderr) = replay_landscape(&logs);
    assert!(stderr.contains("rejected  0"), "{stderr}");
    let black_hole_start_us = (BASE_SECS + 120) * 1_000_000;
    first_black_hole(&docs, &stderr, black_hole_start_us);

    // before it, every connection was answered: no errors; in it, none is
    let pairs = of_kind(&docs, "pair-window");
    let into = |at: i64| {
        pairs
            .iter()
            .find(|p| p["source"] == "catalog" && p["destination"] == "inventory" && start(p) == at)
            .expect("catalog → inventory")
    };
    let before = into(black_hole_start_us - 10_000_000);
    assert_eq!(before["errors"], 0, "{before}");
    let during = into(black_hole_start_us);
    assert!(during["requests"].as_u64().unwrap() > 150, "{during}");
    assert_eq!(during["errors"], during["requests"], "{during}");
    assert_eq!(during["bytes_out"], 0, "{during}");
}

/// The config bundled for `cargo run --example landscape` is the generator's.
#[test]
fn bundled_landscape_config_matches_the_generator() {
    let bundled =
        std::fs::read_to_string(util::root().join("deploy/examples/landscape.toml")).unwrap();
    assert_eq!(bundled, util::landscape_config());
}

/// Findings of the landscape's log with `edit` applied to its lines, and replay's summary.
fn findings_of(edit: impl FnOnce(&mut Vec<String>)) -> (Vec<String>, String) {
    let mut lines: Vec<String> = util::landscape_logs(200, "inventory", 120, 7)
        .lines()
        .map(str::to_owned)
        .collect();
    edit(&mut lines);
    let (docs, stderr) = replay_landscape(&(lines.join("\n") + "\n"));
    let ids = of_kind(&docs, "finding")
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, stderr)
}

/// One line dated an hour after its neighbours (a bad clock, a corrupt or crafted
/// timestamp), early in a log with a black hole, is set aside: it moves no watermark, nothing
/// after it is late, and the black hole's findings are those of the clean log.
#[test]
fn one_line_an_hour_ahead_hides_no_finding() {
    let (clean, _) = findings_of(|_| {});
    assert!(clean.len() >= 5, "{clean:?}");
    for at in [0, 3_000] {
        let (got, stderr) = findings_of(|lines| {
            // the whole log lies in 00:00–00:04 UTC: the copy says 01:…, an hour later
            let forged = lines[at].replacen("T00:", "T01:", 1);
            assert_ne!(forged, lines[at]);
            lines.insert(at, forged);
        });
        assert!(stderr.contains("late      0"), "line {at}: {stderr}");
        assert!(stderr.contains("ahead     1"), "line {at}: {stderr}");
        assert_eq!(got, clean, "line {at}");
    }
}

/// A flood of new names at the start of every window (more than `max-pairs` distinct pairs
/// before the window's real traffic) can't push the landscape's real pairs under `(other)`:
/// pairs of the previous window keep their place, and the black hole is found as without it.
#[test]
fn a_flood_of_new_names_hides_no_black_hole() {
    let (clean, _) = findings_of(|_| {});
    let mut lines: Vec<String> = util::landscape_logs(200, "inventory", 120, 7)
        .lines()
        .map(str::to_owned)
        .collect();
    // a copy of an inventory line re-addressed to 40 new names, at the head of each window
    let template = lines
        .iter()
        .find(|l| l.contains("\"inventory:8080\""))
        .unwrap()
        .clone();
    let ts_len = "[2024-05-01T00:00:00.000Z]".len();
    for w in (12..20).rev() {
        let start = util::format_rfc3339_ms((util::BASE_SECS + w * 10) * 1000);
        let at = lines
            .iter()
            .position(|l| l[1..ts_len - 1] >= *start)
            .unwrap_or(lines.len());
        for i in 0..40 {
            let line = format!("[{start}]{}", &template[ts_len..]);
            lines.insert(at, line.replace("inventory", &format!("flood{w}x{i}")));
        }
    }
    let config = util::landscape_config().replace(
        "allowed-lateness = \"15s\"\n",
        "allowed-lateness = \"15s\"\nmax-pairs = 16\n",
    );
    assert!(config.contains("max-pairs = 16"));
    let (docs, stderr) = replay_landscape_with(&(lines.join("\n") + "\n"), &config);
    assert!(stderr.contains("overflow"), "{stderr}");
    let got: Vec<String> = of_kind(&docs, "finding")
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, clean, "{stderr}");
}

/// The black hole's logs piped in up to the end of its first window, the pipe left open and
/// quiet (`kubectl logs -f …`): the window closes when the input goes idle, its backpressure
/// command is issued, and with no window to close, event time still passes for it: it
/// expires at its TTL (20 s here), audited, while the pipe is open.
#[test]
fn a_command_expires_while_the_landscape_is_silent() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let (dir, config) = util::temp_path("landscape.toml");
    util::write(
        &config,
        &format!(
            "{}\n[runtime]\nidle-timeout = \"1s\"\nflush-after = \"50ms\"\n\n\
             [[actuate.policy]]\nsignature = \"black-hole\"\npattern = \"backpressure\"\nttl = \"20s\"\n",
            util::landscape_config()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_graywatch"))
        .args(["replay", "-q", "-f", "istio", "--no-windows", "-c"])
        .arg(&config)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(util::landscape_logs(130, "inventory", 120, 7).as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let doc: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            if tx.send(doc).is_err() {
                break;
            }
        }
    });
    let mut audit = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !audit
        .iter()
        .any(|a: &serde_json::Value| a["decision"] == "expired")
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let doc = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no expiry while the pipe is open; audit: {audit:?}"));
        if doc["kind"] == "audit" {
            audit.push(doc);
        }
    }
    // issued at the end of the black hole's window (130 s); the window [130 s, 140 s) closes
    // too (requests still running at 130 s), with no finding; it expires 20 s of event time
    // after its issue: not at a window's end (none closes after 140 s), when processing time
    // since the input went idle says so
    let decisions: Vec<&str> = audit
        .iter()
        .map(|a| a["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["issued", "expired"], "{audit:?}");
    let issued_at = (BASE_SECS + 130) * 1_000_000;
    let id = format!("backpressure/node/inventory/{issued_at}");
    assert!(
        audit.iter().all(|a| a["command"] == id.as_str()),
        "{audit:?}"
    );
    let expired = audit[1]["at_us"].as_i64().unwrap();
    assert!(
        expired >= issued_at + 20_000_000 && expired < issued_at + 30_000_000,
        "expired at {expired}, issued at {issued_at}"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
    drop(dir);
}
