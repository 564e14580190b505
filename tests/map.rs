//! The live landscape map: `graywatch replay --serve` fed a simulated black hole through a
//! pipe, as a proxy's log would arrive, and its `/map` loaded in headless Chromium.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{graywatch_ok, of_kind, simulated_black_hole};

/// Kills the served replay when the test ends, passed or not.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// RFC 3339 with µs, as the simulator writes `start_time` (so strings compare as times).
fn rfc3339(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_micros(us as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

#[test]
fn the_map_shows_the_black_hole_red_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (log, map, node) = simulated_black_hole(dir.path());
    // when graywatch finds the black hole, reading the whole log at once
    let (docs, _) = graywatch_ok(&[
        "replay",
        "-c",
        map.to_str().unwrap(),
        "--no-windows",
        "-q",
        log.to_str().unwrap(),
    ]);
    let first = of_kind(&docs, "finding")
        .into_iter()
        .find(|f| f["signature"] == "black-hole" && f["subject"]["node"] == node.as_str())
        .expect("the black hole is found")
        .clone();
    let (start, end) = (
        first["window"]["start_us"].as_i64().unwrap(),
        first["window"]["end_us"].as_i64().unwrap(),
    );
    let window = end - start;

    // the same log through a pipe, up to one window after that finding's, then silence: the
    // windows close on processing time after idle-timeout
    let config = dir.path().join("serve.toml");
    let archive = dir.path().join("archive");
    let mut text = std::fs::read_to_string(&map).unwrap();
    text.push_str("\n[runtime]\nidle-timeout = \"1s\"\n[http]\ntop-pairs = 5\n");
    std::fs::write(&config, text).unwrap();
    let mut child = Served(
        Command::new(env!("CARGO_BIN_EXE_graywatch"))
            .args([
                "replay",
                "-c",
                config.to_str().unwrap(),
                "--serve",
                "127.0.0.1:0",
                "--no-windows",
                "--archive",
                archive.to_str().unwrap(),
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("graywatch starts"),
    );
    // stderr read on a thread to its end (a full pipe would stall graywatch), its first line
    // (the address) handed over
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("graywatch says where it serves within a minute");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("the address on stderr: {line}"))
        .to_owned();
    assert!(url.ends_with("/map"), "{url}");
    let cutoff = rfc3339(end + window);
    let mut stdin = child.0.stdin.take().unwrap();
    let mut fed = 0;
    for l in std::fs::read_to_string(&log).unwrap().lines() {
        let at = l
            .split("\"start_time\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a start_time");
        if at.as_bytes() >= cutoff.as_bytes() {
            continue;
        }
        writeln!(stdin, "{l}").unwrap();
        fed += 1;
    }
    stdin.flush().unwrap();
    assert!(fed > 10_000, "{fed} lines fed");
    // the pipe stays open: graywatch is waiting for more, its windows closed by idleness
    let state_url = format!("{url}/state");
    // until the windows of what was fed are all closed: past the finding's, and no change
    // for two seconds
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last: Option<(Value, Instant)> = None;
    let state: Value = loop {
        let body = reqwest::blocking::get(&state_url)
            .and_then(|r| r.text())
            .expect("/map/state answers");
        let state: Value = serde_json::from_str(&body).expect("/map/state is JSON");
        let past = state["window_end_us"].as_i64().is_some_and(|e| e >= end);
        match &last {
            Some((before, since))
                if past
                    && before["window_end_us"] == state["window_end_us"]
                    && since.elapsed() > Duration::from_secs(2) =>
            {
                break state;
            }
            Some((before, _)) if before["window_end_us"] == state["window_end_us"] => {}
            _ => last = Some((state.clone(), Instant::now())),
        }
        assert!(Instant::now() < deadline, "no window past {end}: {state}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let shown = state["window_end_us"].as_i64().unwrap();
    assert!(
        shown <= end + 2 * window,
        "the map is at {shown}, two windows after the finding's end ({end}) at most"
    );
    // /metrics shows the 5 busiest pairs, those of the black hole, and the rest summed
    let metrics = reqwest::blocking::get(url.replace("/map", "/metrics"))
        .and_then(|r| r.text())
        .expect("/metrics answers");
    let rates: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("graywatch_pair_requests_per_second{"))
        .collect();
    let into_hole = format!(r#"destination="{node}""#);
    let calls_in = rates.iter().filter(|l| l.contains(&into_hole)).count();
    assert!(calls_in >= 1, "{rates:#?}");
    assert!(
        rates.len() <= 5 + calls_in + 1 && rates.iter().any(|l| l.contains(r#"source="(other)""#)),
        "{rates:#?}"
    );
    // the event stream starts with the window shown
    let mut events = reqwest::blocking::Client::new()
        .get(format!("{url}/events"))
        .send()
        .expect("/map/events answers");
    let mut stream = String::new();
    let mut buf = [0u8; 4096];
    while !stream.contains("\n\n") {
        let n = std::io::Read::read(&mut events, &mut buf).expect("an event");
        assert!(n > 0, "the stream ended: {stream}");
        stream.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(stream.starts_with("event: window\ndata: {"), "{stream}");
    assert!(
        stream.contains(&format!(r#""window_end_us":{shown}"#)),
        "{stream}"
    );
    drop(events);
    let troubled: Vec<&str> = state["troubled_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(troubled.contains(&node.as_str()), "{state}");

    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--timeout=4000",
            "--dump-dom",
            &url,
        ])
        .output()
        .expect("chromium runs (scripts/test installs Debian's chromium)");
    assert!(out.status.success(), "{out:?}");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let drawn: i64 = dom
        .split(r#"data-window-end=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the page drew no window: {dom}"));
    assert_eq!(drawn, shown, "the page drew the window the endpoint shows");
    assert!(
        dom.contains(&format!(r#"<g class="node troubled" data-node="{node}""#)),
        "{node} is red on the map: {}",
        dom.split("<svg").nth(1).unwrap_or(&dom)
    );
    assert!(
        dom.contains(r#"class="edge troubled""#),
        "calls into it are red"
    );
    // and the page's findings name it
    assert!(
        dom.contains("black-hole (critical)"),
        "the finding is listed"
    );

    // ready, and the replay's own counters
    let readyz = reqwest::blocking::get(url.replace("/map", "/readyz")).unwrap();
    assert_eq!(readyz.status().as_u16(), 200);
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    };
    let windows = value(&metrics, "graywatch_windows_closed_total ");
    assert!(windows >= ((end - start) / window) as f64, "{windows}");
    assert!(
        value(
            &metrics,
            r#"graywatch_findings_total{signature="black-hole"} "#
        ) >= 1.0
    );

    // while the pipe is quiet, the archive already holds the windows shown
    let last_archived = |archive: &std::path::Path| {
        let mut out = Vec::new();
        graywatch::archive::query(
            archive,
            "SELECT max(window_end) AS last FROM pairs",
            graywatch::archive::QueryFormat::Csv,
            &mut out,
        )
        .expect("complete files in the archive");
        String::from_utf8(out).unwrap()
    };
    let quiet = last_archived(&archive);
    assert!(
        quiet.lines().nth(1).unwrap() >= rfc3339(end).as_str(),
        "{quiet} {}",
        rfc3339(end)
    );

    // Ctrl-C: the input ends where it is, what it held is written, the archive is complete
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "graywatch did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130), "interrupted");
    let said: Vec<String> = rx.try_iter().collect();
    let said = said.join("\n");
    assert!(said.contains("stopped   by a signal"), "{said}");
    assert!(said.contains("Parquet file(s)"), "{said}");
    let mut out = Vec::new();
    graywatch::archive::query(
        &archive,
        "SELECT count(DISTINCT window_start) AS windows, max(window_end) AS last FROM pairs",
        graywatch::archive::QueryFormat::Csv,
        &mut out,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    let row: Vec<&str> = out.lines().nth(1).unwrap().split(',').collect();
    assert!(row[0].parse::<f64>().unwrap() >= windows, "{out}");
    assert!(row[1] >= rfc3339(end).as_str(), "{out} {}", rfc3339(end));
}
