//! Alerts to pager systems: PagerDuty and webhook sinks against HTTP receivers on loopback
//! (one failing twice then taking the alert, one that never answers), and a real Alertmanager
//! (Debian's `prometheus-alertmanager`, installed by `scripts/test`) on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graywatch::alerting::{AlertingConfig, Dispatcher};
use schemas::{Alert, AlertAction, Severity};
use serde_json::Value;

use crate::util::{self, BASE_SECS, graywatch_ok};

/// How a receiver answers its n-th request.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Never answers (keeps the connection open).
    Hang,
}

/// An HTTP server on 127.0.0.1 that records each request's body and answers as `script`
/// says (its last entry for every request after).
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(script: Vec<Answer>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = Arc::clone(&seen);
                let script = script.clone();
                std::thread::spawn(move || serve(conn, &seen, &script));
            }
        });
        Receiver { url, bodies }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Serves the requests of one connection (keep-alive).
fn serve(conn: TcpStream, seen: &Mutex<Vec<Value>>, script: &[Answer]) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = {
            let mut s = seen.lock().unwrap();
            s.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            s.len() - 1
        };
        match script[n.min(script.len() - 1)] {
            Answer::Hang => {
                std::thread::sleep(Duration::from_secs(600));
                return;
            }
            Answer::Status(code) => {
                let text = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                );
                if conn.write_all(text.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

/// The black-hole landscape (inventory from 120 s on) through `replay` with `alerting`
/// appended to the landscape's config: (documents, summary).
fn replay_with(alerting: &str) -> (Vec<Value>, String) {
    let (dir, logs) = util::temp_path("istio.log");
    util::write(&logs, &util::landscape_logs(200, "inventory", 120, 7));
    let config = dir.path().join("landscape.toml");
    util::write(
        &config,
        &format!("{}\n{alerting}\n", util::landscape_config()),
    );
    graywatch_ok(&[
        "replay",
        "-f",
        "istio",
        "--no-windows",
        "-c",
        config.to_str().unwrap(),
        logs.to_str().unwrap(),
    ])
}

/// A PagerDuty sink whose endpoint fails twice (500, 503) before taking the trigger, and a
/// webhook that never answers: the trigger reaches PagerDuty on the third try with the Events
/// API v2 fields, the hanging webhook times out and is given up, and the replay is not held
/// up by it (its 300 ms timeout × 2 tries).
#[test]
fn alerts_are_retried_and_a_hanging_sink_holds_nothing_up() {
    let pagerduty = Receiver::start(vec![
        Answer::Status(500),
        Answer::Status(503),
        Answer::Status(202),
    ]);
    let hanging = Receiver::start(vec![Answer::Hang]);
    let (dir, key) = util::temp_path("routing.key");
    util::write(&key, "R0UT1NGKEY0123456789abcdef012345\n");
    let started = Instant::now();
    let (docs, summary) = replay_with(&format!(
        "[[alerting.sinks]]\nkind = \"pagerduty\"\nurl = \"{}\"\nrouting-key-file = \"{}\"\n\
         backoff = \"20ms\"\nretries = 3\n\n\
         [[alerting.sinks]]\nkind = \"webhook\"\nname = \"hanging\"\nurl = \"{}\"\n\
         timeout = \"300ms\"\nretries = 1\nbackoff = \"10ms\"\n",
        pagerduty.url,
        key.display(),
        hanging.url
    ));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let alerts = util::of_kind(&docs, "alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let bodies = pagerduty.bodies();
    assert_eq!(bodies.len(), 3, "two failures and a success: {bodies:?}");
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "the same event each try"
    );
    let e = &bodies[0];
    assert_eq!(e["routing_key"], "R0UT1NGKEY0123456789abcdef012345");
    assert_eq!(e["event_action"], "trigger");
    assert_eq!(e["dedup_key"], "black-hole/node/inventory");
    let p = &e["payload"];
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["source"], "graywatch");
    assert_eq!(p["component"], "inventory");
    assert_eq!(p["group"], "node/inventory");
    assert_eq!(p["class"], "black-hole");
    assert_eq!(
        p["custom_details"]["finding"],
        format!(
            "black-hole/node/inventory/{}",
            (BASE_SECS + 120) * 1_000_000
        )
    );
    assert!(
        p["summary"]
            .as_str()
            .unwrap()
            .starts_with("black-hole at node inventory: inventory keeps receiving requests"),
        "{p}"
    );
    assert!(
        summary.contains("sink      pagerduty: 1 delivered, 2 retried, 0 failed, 0 dropped"),
        "{summary}"
    );
    assert!(
        summary.contains("sink      hanging: 0 delivered, 1 retried, 1 failed, 0 dropped"),
        "{summary}"
    );
    assert_eq!(hanging.bodies().len(), 2, "tried twice");
    drop(dir);
}

fn alert(action: AlertAction, at_us: i64) -> Alert {
    Alert {
        schema_version: schemas::SCHEMA_VERSION,
        kind: "alert".into(),
        action,
        dedup_key: "black-hole/node/inventory".into(),
        summary: "black-hole at node inventory: inventory answers nothing".into(),
        severity: Severity::Critical,
        at_us,
        finding: "black-hole/node/inventory/1714521720000000".into(),
    }
}

fn dispatcher(sinks: &str) -> Dispatcher {
    let config: AlertingConfig = toml::from_str(sinks).unwrap();
    Dispatcher::start(&config).unwrap().expect("a sink")
}

/// A trigger and its resolve on a webhook: the alert documents as they are, same dedup key;
/// a queue of one that the webhook's first slow answers fill drops what comes on top, counted.
#[test]
fn a_webhook_gets_the_alert_documents_and_a_full_queue_drops() {
    let hook = Receiver::start(vec![Answer::Status(200)]);
    let d = dispatcher(&format!(
        "[[sinks]]\nkind = \"webhook\"\nurl = \"{}\"\n",
        hook.url
    ));
    d.send(&alert(AlertAction::Trigger, 1_714_521_730_000_000));
    d.send(&alert(AlertAction::Resolve, 1_714_521_760_000_000));
    let counters = d.close(Instant::now() + Duration::from_secs(30));
    assert_eq!(counters["webhook"].delivered, 2);
    let bodies = hook.bodies();
    assert_eq!(bodies[0]["kind"], "alert");
    assert_eq!(bodies[0]["action"], "trigger");
    assert_eq!(bodies[1]["action"], "resolve");
    assert_eq!(bodies[1]["dedup_key"], bodies[0]["dedup_key"]);
    assert_eq!(bodies[1]["at_us"], 1_714_521_760_000_000i64);

    // a sink that never answers, a queue of 1: the first alert is being tried, the second
    // waits, the third finds the queue full
    let hanging = Receiver::start(vec![Answer::Hang]);
    let d = dispatcher(&format!(
        "[[sinks]]\nkind = \"webhook\"\nurl = \"{}\"\nqueue = 1\ntimeout = \"2s\"\nretries = 0\n",
        hanging.url
    ));
    let t = Instant::now();
    for i in 0..3 {
        d.send(&alert(AlertAction::Trigger, 1_714_521_730_000_000 + i));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t.elapsed() < Duration::from_secs(1), "send never blocks");
    assert_eq!(d.counters()["webhook"].dropped, 1);
}

/// A sink with `min-severity = "critical"` hears of an incident that opened as a warning
/// when it turns critical, and of its resolve; a sink without gets all three.
#[test]
fn a_critical_only_sink_hears_an_incident_when_it_turns_critical() {
    let all = Receiver::start(vec![Answer::Status(200)]);
    let pager = Receiver::start(vec![Answer::Status(200)]);
    let d = dispatcher(&format!(
        "[[sinks]]\nname = \"all\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[sinks]]\nname = \"pager\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         min-severity = \"critical\"\n",
        all.url, pager.url
    ));
    let mut warning = alert(AlertAction::Trigger, 1_714_521_730_000_000);
    warning.severity = Severity::Warning;
    d.send(&warning);
    d.send(&alert(AlertAction::Trigger, 1_714_521_740_000_000));
    d.send(&alert(AlertAction::Resolve, 1_714_521_760_000_000));
    let counters = d.close(Instant::now() + Duration::from_secs(30));
    assert_eq!(counters["all"].delivered, 3);
    assert_eq!(counters["pager"].delivered, 2);
    let bodies = pager.bodies();
    let got: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| {
            (
                b["action"].as_str().unwrap_or_default(),
                b["severity"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, [("trigger", "critical"), ("resolve", "critical")]);
}

/// After a restart, the open incidents still fire: an Alertmanager sink re-sends them with
/// their first `startsAt` (Alertmanager resolves an alert it stops hearing about); a webhook,
/// which got the trigger before the restart, is told nothing again.
#[test]
fn alerts_still_firing_after_a_restart_are_re_sent_to_alertmanager_only() {
    let am = Receiver::start(vec![Answer::Status(200)]);
    let hook = Receiver::start(vec![Answer::Status(200)]);
    let d = dispatcher(&format!(
        "[[sinks]]\nkind = \"alertmanager\"\nurl = \"{}\"\nresend-every = \"200ms\"\n\n\
         [[sinks]]\nkind = \"webhook\"\nurl = \"{}\"\n",
        am.url, hook.url
    ));
    d.resume(&[alert(AlertAction::Trigger, 1_714_521_730_000_000)]);
    let start = Instant::now();
    while am.bodies().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "not re-sent");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = &am.bodies()[0][0];
    assert_eq!(body["labels"]["dedup_key"], "black-hole/node/inventory");
    assert_eq!(body["startsAt"], "2024-05-01T00:02:10.000000Z");
    assert!(body.get("endsAt").is_none(), "{body}");
    // its resolve ends it
    d.send(&alert(AlertAction::Resolve, 1_714_521_760_000_000));
    let counters = d.close(Instant::now() + Duration::from_secs(30));
    let last = am.bodies().last().unwrap()[0].clone();
    assert_eq!(last["endsAt"], "2024-05-01T00:02:40.000000Z", "{last}");
    assert_eq!(counters["webhook"].delivered, 1, "the resolve only");
    assert_eq!(hook.bodies()[0]["action"], "resolve");
}

/// `[scale-out]`: a stage-2 partition that moves to another instance takes its open
/// incidents along; this instance's Alertmanager sink stops re-sending them, and resolves
/// nothing (the new owner re-sends them and resolves them when they close).
#[test]
fn an_incident_handed_over_is_no_longer_re_sent_nor_resolved_here() {
    let am = Receiver::start(vec![Answer::Status(200)]);
    let d = dispatcher(&format!(
        "[[sinks]]\nkind = \"alertmanager\"\nurl = \"{}\"\nresend-every = \"200ms\"\n",
        am.url
    ));
    d.send(&alert(AlertAction::Trigger, 1_714_521_730_000_000));
    let start = Instant::now();
    while am.bodies().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "not re-sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.hand_over(&[alert(AlertAction::Trigger, 1_714_521_730_000_000)]);
    // what was queued before the hand-over may still go out; then nothing more
    std::thread::sleep(Duration::from_millis(400));
    let sent = am.bodies().len();
    std::thread::sleep(Duration::from_millis(800));
    let counters = d.close(Instant::now() + Duration::from_secs(10));
    let bodies = am.bodies();
    assert_eq!(
        bodies.len(),
        sent,
        "re-sent after the hand-over: {bodies:?}"
    );
    assert!(
        bodies.iter().all(|b| b[0].get("endsAt").is_none()),
        "resolved here: {bodies:?}"
    );
    assert_eq!(counters["alertmanager"].delivered as usize, sent);
}

/// A running Alertmanager (`prometheus-alertmanager`, on loopback).
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alertmanager_binary() -> PathBuf {
    for p in [
        "/usr/bin/prometheus-alertmanager",
        "/usr/local/bin/alertmanager",
    ] {
        if std::path::Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!(
        "Alertmanager is not installed: run scripts/test (it installs Debian's \
         prometheus-alertmanager) or `apt-get install prometheus-alertmanager`"
    )
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("am.yml");
        util::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
        let child = Command::new(alertmanager_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Alertmanager starts");
        let url = format!("http://127.0.0.1:{port}");
        let am = Alertmanager {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&format!("{}/-/ready", am.url)).is_none() {
            assert!(
                Instant::now() < deadline,
                "Alertmanager did not answer on {} within 30 s: {}",
                am.url,
                std::fs::read_to_string(am._dir.path().join("am.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// Its active alerts.
    fn alerts(&self) -> Vec<Value> {
        let text = get(&format!(
            "{}/api/v2/alerts?active=true&silenced=false&inhibited=false",
            self.url
        ))
        .expect("Alertmanager answers");
        serde_json::from_str::<Vec<Value>>(&text).unwrap()
    }

    /// A dispatcher with this Alertmanager as its one sink (retries after 100 ms).
    fn dispatcher(&self) -> Dispatcher {
        dispatcher(&format!(
            "[[sinks]]\nkind = \"alertmanager\"\nurl = \"{}\"\nbackoff = \"100ms\"\n",
            self.url
        ))
    }

    /// Its active alerts once `want` holds of them, polled for at most 30 s; fails naming
    /// `what` otherwise.
    fn alerts_when(&self, what: &str, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = self.alerts();
            if want(&a) {
                return a;
            }
            assert!(Instant::now() < deadline, "Alertmanager: {what}, has {a:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// GET `url`, its body on a 200.
fn get(url: &str) -> Option<String> {
    let r = reqwest::blocking::get(url).ok()?;
    r.status().is_success().then(|| r.text().ok()).flatten()
}

/// Now, µs since the epoch.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A trigger reaches a real Alertmanager with its labels and annotations and is active; its
/// resolve (`endsAt` at the resolve) ends it.
#[test]
fn alertmanager_gets_the_alert_and_its_resolve() {
    let am = Alertmanager::start();
    let d = am.dispatcher();
    let t0 = now_us();
    d.send(&alert(AlertAction::Trigger, t0));
    let alerts = am.alerts_when("no alert", |a| !a.is_empty());
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["labels"]["alertname"], "black-hole");
    assert_eq!(a["labels"]["dedup_key"], "black-hole/node/inventory");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["subject"], "node/inventory");
    assert_eq!(
        a["annotations"]["finding"],
        "black-hole/node/inventory/1714521720000000"
    );
    assert_eq!(a["status"]["state"], "active");

    d.send(&alert(AlertAction::Resolve, now_us()));
    am.alerts_when("the resolve did not end the alert", <[Value]>::is_empty);
    let c = d.close(Instant::now() + Duration::from_secs(10));
    assert_eq!(c["alertmanager"].delivered, 2);
    assert_eq!(c["alertmanager"].failed, 0);
}

/// An incident that turns critical fires a critical alert at Alertmanager, and the warning
/// alert it fired before (another label set) ends then, not at Alertmanager's
/// `resolve_timeout`.
#[test]
fn alertmanager_ends_the_warning_when_its_incident_turns_critical() {
    let am = Alertmanager::start();
    let d = am.dispatcher();
    let warning = Alert {
        severity: Severity::Warning,
        ..alert(AlertAction::Trigger, now_us())
    };
    d.send(&warning);
    let active = |severity: &str| {
        am.alerts_when(&format!("want one {severity} alert"), |a| {
            a.len() == 1 && a[0]["labels"]["severity"] == severity
        })
    };
    active("warning");
    d.send(&alert(AlertAction::Trigger, now_us()));
    let alerts = active("critical");
    assert_eq!(
        alerts[0]["labels"]["dedup_key"],
        "black-hole/node/inventory"
    );
    let c = d.close(Instant::now() + Duration::from_secs(10));
    // the warning, its end, the critical
    assert_eq!(c["alertmanager"].delivered, 3);
    assert_eq!(c["alertmanager"].failed, 0);
}
