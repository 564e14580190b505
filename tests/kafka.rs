//! `graywatch run` against a real broker (see `broker`): the landscape with a black hole
//! produced to input topics, findings, commands and alerts read back from their topics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use ingest::{Format, IngestSink, IngestStats, ReaderOptions};
use schemas::FlowRecord;
use serde_json::Value;

use crate::broker::{Broker, Msg};
use crate::util;

/// The landscape's flow records (black hole on `inventory` at 120 s), in log order (request
/// end), as `graywatch parse` reads them from the generated Istio logs.
pub fn landscape_records(seconds: u64, seed: u64) -> Vec<FlowRecord> {
    struct Records(Vec<FlowRecord>);
    impl IngestSink for Records {
        type Error = std::convert::Infallible;
        fn batch(&mut self, batch: RecordBatch, _: &[u64]) -> Result<(), Self::Error> {
            self.0.extend(schemas::flow_records(&batch).unwrap());
            Ok(())
        }
    }
    let logs = util::landscape_logs(seconds, "inventory", 120, seed);
    let mapping = toml::from_str::<graywatch::config::Config>(&util::landscape_config())
        .unwrap()
        .validate(None)
        .unwrap()
        .mapping;
    let mut parser = Format::Istio.parser(&mapping).unwrap();
    let mut out = Records(Vec::new());
    ingest::read_lines(
        "landscape",
        logs.as_bytes(),
        parser.as_mut(),
        &ReaderOptions::default(),
        &mut IngestStats::default(),
        &mut out,
    )
    .unwrap();
    out.0
}

/// `r` as a line of Envoy's default access-log format (written by the caller's proxy: the
/// callee is in the authority; who the caller is travels in a Kafka header).
pub fn envoy_line(r: &FlowRecord) -> String {
    let ms = r.start_us / 1000;
    format!(
        "[{ts}] \"{method} /api/{dst} HTTP/1.1\" {status} {flags} {rx} {tx} {dur} - \"-\" \"client/1.0\" \"{id}\" \"{dst}:8080\" \"10.0.0.1:8080\"",
        ts = util::format_rfc3339_ms(ms),
        method = r.method.as_deref().unwrap_or("GET"),
        dst = r.destination,
        status = r.status.unwrap_or(0),
        flags = r.response_flags.as_deref().unwrap_or("-"),
        rx = r.bytes_received,
        tx = r.bytes_sent,
        dur = r.duration_us.unwrap_or(0) / 1000,
        id = r.request_id.as_deref().unwrap_or("-"),
    )
}

/// How the landscape goes to Kafka: records alternate between an Envoy-text topic (its
/// caller in a header) and a flow-json topic; each topic has 2 partitions, record `i` of a
/// topic going to partition `(i / 2) % 2`. Returns, per (topic, partition), the records in
/// order: what `replay` gets as one file each.
pub fn produce_landscape(
    broker: &Broker,
    records: &[FlowRecord],
) -> BTreeMap<(String, i32), Vec<FlowRecord>> {
    let split = landscape_topics(broker, records);
    for ((topic, partition), records) in &split {
        broker.produce(topic, &landscape_messages(topic, *partition, records));
    }
    split
}

/// `records` as messages of `topic` to `partition`: on `flows` their flow-json, on
/// `envoy-logs` their Envoy lines with the writing service in a header.
fn landscape_messages(topic: &str, partition: i32, records: &[FlowRecord]) -> Vec<Msg> {
    records
        .iter()
        .map(|r| match topic {
            "flows" => Msg::to(partition, serde_json::to_vec(r).unwrap()),
            _ => Msg {
                headers: vec![("graywatch-service".into(), r.source.clone())],
                ..Msg::to(partition, envoy_line(r))
            },
        })
        .collect()
}

/// How long a test waits for a run's window aggregates, s: a bound, not a timing (the read
/// returns as soon as they are all there); generous because these tests share two cores with
/// the simulator-heavy ones, and a run that catches up after an outage or a restart is slow
/// then.
const OUTPUT_WAIT_SECS: u64 = 300;

/// The `[[kafka.inputs]]` of [`produce_landscape`]'s topics.
pub const LANDSCAPE_INPUTS: &str = "[[kafka.inputs]]\ntopic = \"envoy-logs\"\nformat = \"envoy\"\nwriter = { service-header = \"graywatch-service\" }\n\n\
     [[kafka.inputs]]\ntopic = \"flows\"\nformat = \"flow-json\"\n";

/// Reads `topic` until `n` messages are there (or 60 s pass).
fn read(broker: &Broker, topic: &str, n: usize) -> Vec<Msg> {
    broker.read_until(topic, Duration::from_secs(60), |m| m.len() >= n)
}

/// The ids of documents.
fn ids(msgs: &[Msg]) -> BTreeSet<String> {
    msgs.iter()
        .map(|m| m.json()["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The findings `replay` makes of the same records, one file per partition.
fn replay_findings(dir: &Path, split: &BTreeMap<(String, i32), Vec<FlowRecord>>) -> Vec<Value> {
    let config = dir.join("replay.toml");
    util::write(&config, &util::landscape_config());
    let mut files = Vec::new();
    for ((topic, p), records) in split {
        let f = dir.join(format!("{topic}-{p}.jsonl"));
        let text: String = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        util::write(&f, &text);
        files.push(f.to_str().unwrap().to_owned());
    }
    let mut args = vec![
        "replay",
        "-q",
        "-f",
        "flow-json",
        "--no-windows",
        "-c",
        config.to_str().unwrap(),
    ];
    args.extend(files.iter().map(String::as_str));
    let (docs, _) = util::graywatch_ok(&args);
    docs
}

/// Test 1 (and 6): Envoy lines and flow-json records with a black hole, produced to input
/// topics → the finding, the backpressure command and the alert on their topics, with the
/// expected subject, window, ids and keys; `replay` of the same records finds the same.
#[test]
fn black_hole_on_kafka_gives_finding_command_and_alert() {
    let broker = Broker::start();
    let records = landscape_records(200, 7);
    let split = produce_landscape(&broker, &records);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    util::write(
        &config,
        &run_config(&broker, LANDSCAPE_INPUTS, &dir.path().join("state"), ""),
    );
    // more parse threads than this machine's cores: results come back out of order and are
    // taken in order
    let run = Run::start_with(&config, &dir.path().join("run.log"), &["-j", "3"]);

    let window_start_us = (util::BASE_SECS + 120) * 1_000_000;
    let first_id = format!("black-hole/node/inventory/{window_start_us}");
    let findings = broker.read_until("graywatch.findings", Duration::from_secs(90), |m| {
        m.iter().any(|m| m.json()["id"] == first_id.as_str())
    });
    let logs = run.logs();
    let first = findings
        .iter()
        .find(|m| m.json()["id"] == first_id.as_str())
        .unwrap_or_else(|| panic!("no finding {first_id}; run logs:\n{logs}"));
    assert_eq!(first.key.as_deref(), Some("node/inventory"));
    let f = first.json();
    assert_eq!(f["signature"], "black-hole");
    assert_eq!(f["subject"]["node"], "inventory");
    assert_eq!(f["window"]["end_us"], window_start_us + 10_000_000);

    let commands = read(&broker, "graywatch.commands", 1);
    let c = commands[0].json();
    let command_id = format!(
        "backpressure/node/inventory/{}",
        window_start_us + 10_000_000
    );
    assert_eq!(c["id"], command_id.as_str());
    assert_eq!(commands[0].key.as_deref(), Some(command_id.as_str()));
    assert_eq!(c["reason"]["finding"], first_id.as_str());
    let sources: BTreeSet<&str> = c["target"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(sources, BTreeSet::from(["cart", "catalog"]));
    let alerts = read(&broker, "graywatch.alerts", 1);
    assert_eq!(alerts[0].key.as_deref(), Some("black-hole/node/inventory"));
    assert_eq!(alerts[0].json()["action"], "trigger");

    // every record counted once in the window aggregates
    let windows = broker.read_until(
        "graywatch.windows",
        Duration::from_secs(OUTPUT_WAIT_SECS),
        |m| requests(m) >= records.len() as u64,
    );
    assert_eq!(requests(&windows), records.len() as u64);

    // the same records replayed, one file per partition: the same findings and commands
    let replayed = replay_findings(dir.path(), &split);
    let want: BTreeSet<String> = replayed
        .iter()
        .filter(|d| d["kind"] == "finding")
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let findings = read(&broker, "graywatch.findings", want.len());
    assert_eq!(ids(&findings), want, "run and replay disagree");
    let want_commands: BTreeSet<String> = replayed
        .iter()
        .filter(|d| d["kind"] == "remediation-command")
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids(&read(&broker, "graywatch.commands", want_commands.len())),
        want_commands
    );
    assert_eq!(run.terminate(Duration::from_secs(30)), Some(0));
}

/// Σ requests of the distinct pair windows among `msgs` (a window sent twice counts once).
pub fn requests(msgs: &[Msg]) -> u64 {
    let mut seen = BTreeMap::new();
    for m in msgs {
        let d = m.json();
        if d["kind"] == "pair-window" {
            let key = (
                d["window"]["start_us"].as_i64().unwrap(),
                d["source"].as_str().unwrap().to_owned(),
                d["destination"].as_str().unwrap().to_owned(),
            );
            seen.insert(key, d["requests"].as_u64().unwrap());
        }
    }
    seen.values().sum()
}

/// `GET path` on `addr` (plain HTTP/1.1): the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A metric's value in Prometheus text (the first line starting with `series`).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Test 2: malformed messages land on the dead-letter topic with their bytes, their headers
/// and headers naming reason and origin; the rest is processed; the counts match, in the
/// topics and in /metrics.
#[test]
fn malformed_messages_go_to_the_dead_letter_topic() {
    let broker = Broker::start();
    broker.create_topic("envoy-logs", 1);
    broker.create_topic("flows", 1);
    let records = landscape_records(30, 5);
    let good = &records[..400];
    let mut envoy = landscape_messages("envoy-logs", 0, &good[..200]);
    let mut flows = landscape_messages("flows", 0, &good[200..]);
    // (message, expected reason), inserted among the good ones
    let line = envoy_line(&good[0]);
    let bad_envoy = [
        (Msg::to(0, "this is not an access log line"), "malformed"),
        (
            Msg::to(
                0,
                b"[2024-05-01T00:00:01.000Z] \"GET /\xff\xfe HTTP/1.1\" 200".to_vec(),
            ),
            "malformed",
        ),
        (Msg::to(0, "x".repeat(5000)), "too-large"),
        (Msg::to(0, ""), "empty-message"),
        // two lines in one message, the second bad: one record, one dead letter
        (
            Msg {
                headers: vec![
                    ("graywatch-service".into(), good[0].source.clone()),
                    ("trace".into(), "t-1".into()),
                    ("graywatch-reason".into(), "forged".into()),
                ],
                key: Some("k-7".into()),
                ..Msg::to(0, format!("{line}\nnot a line either"))
            },
            "malformed",
        ),
    ];
    let bad_flows = [
        (Msg::to(0, "{not json"), "bad-json"),
        (
            Msg::to(
                0,
                r#"{"schema_version":1,"start":5,"source":"a","destination":"b","reporter":"envoy"}"#,
            ),
            "bad-json",
        ),
        (
            Msg::to(
                0,
                r#"{"schema_version":9,"start_us":5,"source":"a","destination":"b","reporter":"envoy"}"#,
            ),
            "bad-json",
        ),
    ];
    for (i, (m, _)) in bad_envoy.iter().enumerate() {
        envoy.insert(20 + 30 * i, m.clone());
    }
    for (i, (m, _)) in bad_flows.iter().enumerate() {
        flows.insert(10 + 50 * i, m.clone());
    }
    broker.produce("envoy-logs", &envoy);
    broker.produce("flows", &flows);

    let dir = tempfile::tempdir().unwrap();
    let inputs = LANDSCAPE_INPUTS.replace(
        "format = \"envoy\"\n",
        "format = \"envoy\"\nmax-message-bytes = 4096\n",
    );
    // dead letters cut to 4 kB: the 5 000-byte message's is cut
    let text = run_config(&broker, &inputs, &dir.path().join("state"), "").replace(
        "partitions = 2\n",
        "partitions = 2\nmax-message-bytes = 4096\n",
    );
    let config = dir.path().join("run.toml");
    util::write(&config, &text);
    let run = Run::start(&config, &dir.path().join("run.log"));

    let expected = bad_envoy.len() + bad_flows.len();
    let letters = broker.read_until("graywatch.dead-letters", Duration::from_secs(60), |m| {
        m.len() >= expected
    });
    assert_eq!(letters.len(), expected, "{}", run.logs());
    // each with its reason, origin and original bytes; envoy-logs partition 0 offsets
    for (i, (m, reason)) in bad_envoy.iter().enumerate() {
        let offset = (20 + 30 * i).to_string();
        let l = letters
            .iter()
            .find(|l| {
                l.header("graywatch-source-topic") == Some("envoy-logs")
                    && l.header("graywatch-source-offset") == Some(&offset)
            })
            .unwrap_or_else(|| panic!("no dead letter for envoy-logs offset {offset}"));
        assert_eq!(l.header("graywatch-reason"), Some(*reason), "{offset}");
        assert_eq!(l.header("graywatch-source-partition"), Some("0"));
        if *reason == "too-large" {
            assert_eq!(l.header("graywatch-truncated"), Some("5000"));
            assert!(l.value.len() < 4096 && m.value.starts_with(&l.value));
        } else {
            assert_eq!(l.value, m.value, "original bytes kept");
        }
    }
    let two_lines = letters
        .iter()
        .find(|l| l.header("trace") == Some("t-1"))
        .expect("original headers kept");
    assert_eq!(two_lines.key.as_deref(), Some("k-7"));
    // the input's own "graywatch-reason" comes first; graywatch's, last, is the one read
    assert_eq!(two_lines.header("graywatch-reason"), Some("malformed"));
    assert!(
        two_lines
            .header("graywatch-detail")
            .unwrap()
            .starts_with("line 2 of the message")
    );
    let flow_reasons: Vec<&str> = letters
        .iter()
        .filter(|l| l.header("graywatch-source-topic") == Some("flows"))
        .map(|l| l.header("graywatch-reason").unwrap())
        .collect();
    assert_eq!(flow_reasons, ["bad-json"; 3]);

    // the rest is processed: 400 good records and the good line of the two-line message
    let windows = broker.read_until(
        "graywatch.windows",
        Duration::from_secs(OUTPUT_WAIT_SECS),
        |m| requests(m) >= 401,
    );
    assert_eq!(requests(&windows), 401);
    let (status, body) = http_get(&run.http(), "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&body, "graywatch_dead_letters_total{reason=\"malformed\"}"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "graywatch_dead_letters_total{reason=\"too-large\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&body, "graywatch_dead_letters_total{reason=\"bad-json\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&body, "graywatch_records_in_total{topic=\"flows\"}"),
        Some(200.0)
    );
    assert_eq!(metric(&body, "graywatch_assigned_partitions"), Some(2.0));
    assert_eq!(http_get(&run.http(), "/readyz").0, 200);
    assert_eq!(http_get(&run.http(), "/healthz").0, 200);
    assert_eq!(run.terminate(Duration::from_secs(30)), Some(0));
}

/// Produces the landscape (as [`produce_landscape`] splits it) slowly, in `steps` slices over
/// about `seconds`, from another thread.
fn produce_slowly(
    broker: &Broker,
    split: &BTreeMap<(String, i32), Vec<FlowRecord>>,
    steps: usize,
    seconds: f64,
) -> std::thread::JoinHandle<()> {
    let p = broker.producer();
    let split = split.clone();
    std::thread::spawn(move || {
        use rdkafka::producer::Producer as _;
        for step in 0..steps {
            for ((topic, partition), records) in &split {
                let n = records.len();
                let (from, to) = (n * step / steps, n * (step + 1) / steps);
                let messages = landscape_messages(topic, *partition, &records[from..to]);
                crate::broker::send(&p, topic, &messages);
            }
            p.flush(Duration::from_secs(120)).unwrap();
            std::thread::sleep(Duration::from_secs_f64(seconds / steps as f64));
        }
    })
}

/// Checks the outcome of a run over the whole landscape: every record counted exactly once
/// in the window aggregates (a window written twice is the same both times), and the findings
/// and commands of `replay` on the same records, by id.
fn check_exactly_once(
    broker: &Broker,
    dir: &Path,
    split: &BTreeMap<(String, i32), Vec<FlowRecord>>,
    total: usize,
    diagnosis: &dyn Fn() -> String,
) {
    let windows = broker.read_until(
        "graywatch.windows",
        Duration::from_secs(OUTPUT_WAIT_SECS),
        |m| requests(m) >= total as u64,
    );
    let mut seen: BTreeMap<(i64, String, String), Value> = BTreeMap::new();
    for m in &windows {
        let d = m.json();
        if d["kind"] != "pair-window" {
            continue;
        }
        let key = (
            d["window"]["start_us"].as_i64().unwrap(),
            d["source"].as_str().unwrap().to_owned(),
            d["destination"].as_str().unwrap().to_owned(),
        );
        if let Some(before) = seen.get(&key) {
            assert_eq!(before, &d, "a window written twice differs");
        }
        seen.insert(key, d);
    }
    let got = requests(&windows);
    if got != total as u64 {
        let dead = broker.read_until("graywatch.dead-letters", Duration::from_secs(5), |_| false);
        let shown: String = dead
            .iter()
            .take(20)
            .map(|m| {
                format!(
                    "{:?} {:?} {:?}/{:?}@{:?}: {}\n",
                    m.header("graywatch-reason"),
                    m.header("graywatch-detail"),
                    m.header("graywatch-source-topic"),
                    m.header("graywatch-source-partition"),
                    m.header("graywatch-source-offset"),
                    String::from_utf8_lossy(&m.value[..m.value.len().min(300)])
                )
            })
            .collect();
        panic!(
            "{got} requests in windows, {total} sent; {} dead letters:\n{shown}\n{}",
            dead.len(),
            diagnosis()
        );
    }
    let replayed = replay_findings(dir, split);
    let want = |kind: &str| -> BTreeSet<String> {
        replayed
            .iter()
            .filter(|d| d["kind"] == kind)
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let findings = want("finding");
    assert!(!findings.is_empty());
    let got = broker.read_until("graywatch.findings", Duration::from_secs(60), |m| {
        ids(m) == findings
    });
    assert_eq!(ids(&got), findings);
    let commands = want("remediation-command");
    let got = broker.read_until("graywatch.commands", Duration::from_secs(60), |m| {
        ids(m) == commands
    });
    assert_eq!(ids(&got), commands);
}

/// Test 3: `kill -9` of `graywatch run` mid-stream, three times at random points, restarted
/// each time: every record counted exactly once, the findings and commands of an
/// uninterrupted run.
#[test]
fn kill_9_and_restart_lose_and_double_nothing() {
    let broker = Broker::start();
    let Setup {
        records,
        split,
        dir,
        config,
    } = setup(&broker, 240, 13, |t| t);
    // and an archive, which must hold each window once whatever the kills
    let archive = dir.path().join("archive");
    let text = std::fs::read_to_string(&config).unwrap();
    util::write(
        &config,
        &format!(
            "{text}\n[archive]\ndir = {:?}\n",
            archive.display().to_string()
        ),
    );
    let log = dir.path().join("run.log");
    let producer = produce_slowly(&broker, &split, 24, 12.0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill points seed {seed}");
    let mut rng = util::SplitMix::new(seed);
    for _ in 0..3 {
        let run = Run::start(&config, &log);
        std::thread::sleep(Duration::from_millis(rng.range(1500, 4000)));
        run.kill();
    }
    let run = Run::start(&config, &log);
    producer.join().unwrap();
    check_exactly_once(&broker, dir.path(), &split, records.len(), &|| {
        run.diagnosis()
    });
    assert_eq!(run.terminate(Duration::from_secs(30)), Some(0));
    let sql = |q: &str| {
        let mut out = Vec::new();
        graywatch::archive::query(&archive, q, graywatch::archive::QueryFormat::Csv, &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        sql(
            "SELECT sum(requests) AS r, count(*) - count(DISTINCT (window_start, source, destination)) AS twice FROM pairs"
        ),
        format!("r,twice\n{},0\n", records.len()),
        "every record in the archive's windows once, no window twice"
    );
    let replayed: BTreeSet<String> = replay_findings(dir.path(), &split)
        .iter()
        .filter(|d| d["kind"] == "finding")
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let archived: BTreeSet<String> = sql("SELECT id FROM findings")
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    assert_eq!(archived, replayed);
    assert_eq!(
        sql("SELECT count(*) - count(DISTINCT id) AS twice FROM findings"),
        "twice\n0\n"
    );
}

/// A restart within the killed instance's session (6 s). With static membership (`run`'s
/// default with a checkpoint directory) the restarted instance takes its partitions back at
/// once and restores them; without it (`group.instance.id = ""`) the old membership holds them
/// until it expires, the restart checkpoints meanwhile, and must keep the partitions it
/// restored: the restart after it restores all four. Either way every record counts once.
fn restart_within_the_session(static_membership: bool) {
    let broker = Broker::start();
    let Setup {
        records,
        split,
        dir,
        config,
    } = setup(&broker, 160, 23, |text| {
        if static_membership {
            text
        } else {
            text.replace(
                "[kafka.consumer]\n",
                "[kafka.consumer]\n\"group.instance.id\" = \"\"\n",
            )
        }
    });
    let (first, second) = halves(&split);
    produce_slowly(&broker, &first, 1, 0.0).join().unwrap();
    let logs: Vec<std::path::PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("run{i}.log")))
        .collect();
    let run = Run::start(&config, &logs[0]);
    broker.read_until(
        "graywatch.windows",
        Duration::from_secs(OUTPUT_WAIT_SECS),
        |m| requests(m) > 0,
    );
    std::thread::sleep(Duration::from_millis(2500)); // a checkpoint (every 1 s) with the partitions
    run.kill();
    let run = Run::start(&config, &logs[1]);
    std::thread::sleep(Duration::from_secs(3));
    let logs2 = run.logs();
    let run = if static_membership {
        assert_eq!(logs2.matches("Restore {").count(), 4, "{logs2}");
        run
    } else {
        run.kill();
        assert!(
            logs2.contains("partitions=4") && !logs2.contains("assigned"),
            "the second run was to restore 4 partitions and be assigned none:\n{logs2}"
        );
        // its own membership, in turn, holds partitions for 6 s more: the third run's first
        // assignment may be part of them, the rest comes when it expires
        let run = Run::start(&config, &logs[2]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !run.logs().contains("restored checkpoint") {
            assert!(Instant::now() < deadline, "{}", run.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs3 = run.logs();
        assert!(logs3.contains("partitions=4"), "{logs3}");
        run
    };
    produce_slowly(&broker, &second, 1, 0.0).join().unwrap();
    check_exactly_once(&broker, dir.path(), &split, records.len(), &|| {
        run.diagnosis()
    });
    assert_eq!(run.terminate(Duration::from_secs(30)), Some(0));
}

/// [`restart_within_the_session`] with static membership.
#[test]
fn a_restart_within_the_session_takes_its_partitions_back_at_once() {
    restart_within_the_session(true);
}

/// [`restart_within_the_session`] with dynamic membership.
#[test]
fn a_restart_not_yet_assigned_keeps_the_checkpointed_partitions() {
    restart_within_the_session(false);
}
/// What an exactly-once test starts from (see [`setup`]).
struct Setup {
    records: Vec<FlowRecord>,
    split: Split,
    dir: tempfile::TempDir,
    /// `run.toml` in `dir`.
    config: PathBuf,
}

/// The landscape of `seconds` of event time (`seed`) split over two input topics of 2
/// partitions each, created on `broker` (nothing produced yet), and a run config idle after
/// 8 s with checkpoints in `dir/state`, `edit`ed before it is written.
fn setup(broker: &Broker, seconds: u64, seed: u64, edit: impl FnOnce(String) -> String) -> Setup {
    let records = landscape_records(seconds, seed);
    let split = landscape_topics(broker, &records);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    let state = dir.path().join("state");
    let config_text = edit(run_config_idle(broker, LANDSCAPE_INPUTS, &state, "", "8s"));
    util::write(&config, &config_text);
    Setup {
        records,
        split,
        dir,
        config,
    }
}

/// Each partition's records split in two: the first halves, the second halves.
type Split = BTreeMap<(String, i32), Vec<FlowRecord>>;
fn halves(split: &Split) -> (Split, Split) {
    split
        .iter()
        .map(|(k, v)| {
            let half = v.len() / 2;
            (
                (k.clone(), v[..half].to_vec()),
                (k.clone(), v[half..].to_vec()),
            )
        })
        .unzip()
}

/// [`produce_landscape`]'s split, without producing.
/// Creates the two input topics (2 partitions each) and splits `records` over them, as
/// [`produce_landscape`] produces them.
fn landscape_topics(
    broker: &Broker,
    records: &[FlowRecord],
) -> BTreeMap<(String, i32), Vec<FlowRecord>> {
    broker.create_topic("envoy-logs", 2);
    broker.create_topic("flows", 2);
    split_landscape(records)
}

fn split_landscape(records: &[FlowRecord]) -> BTreeMap<(String, i32), Vec<FlowRecord>> {
    let mut split: BTreeMap<(String, i32), Vec<FlowRecord>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let topic = if i % 2 == 0 { "envoy-logs" } else { "flows" };
        split
            .entry((topic.into(), ((i / 2) % 2) as i32))
            .or_default()
            .push(r.clone());
    }
    split
}

/// Test 4: the broker stopped and restarted mid-stream (its data on disk): graywatch says so,
/// goes on when it is back, and loses nothing.
#[test]
fn broker_outage_loses_nothing() {
    let mut broker = Broker::start_persistent();
    let Setup {
        records,
        split,
        dir,
        config,
    } = setup(&broker, 200, 17, |t| t);
    let (first, second) = halves(&split);
    produce_slowly(&broker, &first, 1, 0.0).join().unwrap();
    let run = Run::start(&config, &dir.path().join("run.log"));
    // some windows of the first half are out
    broker.read_until(
        "graywatch.windows",
        Duration::from_secs(OUTPUT_WAIT_SECS),
        |m| requests(m) > 0,
    );
    broker.stop();
    // librdkafka notices within seconds; a loaded machine may take longer
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let (_, body) = http_get(&run.http(), "/metrics");
        if metric(&body, "graywatch_broker_up") == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "broker still up after 30 s:\n{}",
            run.diagnosis()
        );
    }
    broker.restart();
    produce_slowly(&broker, &second, 1, 0.0).join().unwrap();
    check_exactly_once(&broker, dir.path(), &split, records.len(), &|| {
        run.diagnosis()
    });
    assert_eq!(run.terminate(Duration::from_secs(60)), Some(0));
}

/// Test 5: two instances in one group with `[scale-out]` (stage 2 on a repartition topic
/// keyed by node): the partitions are split between them, the node-level findings are those of
/// `replay` (each id's messages identical), and when one is killed the other takes over its
/// partitions, stage 2 state included, and counts every record once.
#[test]
fn two_instances_share_the_work_and_one_takes_over() {
    let broker = Broker::start();
    let records = landscape_records(240, 19);
    let split = landscape_topics(&broker, &records);
    let dir = tempfile::tempdir().unwrap();
    // each judge measures its half of the blast radius over the pairs it sees (its nodes'
    // traffic): in this 7-service landscape the one judging inventory sees little else, so the
    // rail (tested in `actuate`) is opened here
    let scale_out = "[scale-out]\npartitions = 4\n\n[actuate.rails]\nmax-blast-radius = 1.0\n";
    let configs: Vec<(std::path::PathBuf, String)> = ["a", "b"]
        .iter()
        .map(|name| {
            let state = dir.path().join(name);
            let text = run_config_idle(&broker, LANDSCAPE_INPUTS, &state, scale_out, "8s");
            let path = dir.path().join(format!("{name}.toml"));
            util::write(&path, &text);
            (path, text)
        })
        .collect();
    let a = Run::start(&configs[0].0, &dir.path().join("a.log"));
    let b = Run::start(&configs[1].0, &dir.path().join("b.log"));
    let producer = produce_slowly(&broker, &split, 40, 20.0);
    // both get a share: 4 input and 4 repartition partitions between them
    let assigned = |run: &Run| {
        metric(
            &http_get(&run.http(), "/metrics").1,
            "graywatch_assigned_partitions",
        )
        .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let split_between = || {
        let (x, y) = (assigned(&a), assigned(&b));
        x > 0.0 && y > 0.0 && x + y == 4.0
    };
    while !split_between() {
        assert!(
            std::time::Instant::now() < deadline,
            "partitions not split:\n{}\n{}",
            a.logs(),
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(6));
    b.kill();
    producer.join().unwrap();
    let logs = a.logs();
    check_exactly_once(&broker, dir.path(), &split, records.len(), &|| logs.clone());
    assert_eq!(
        assigned(&a),
        4.0,
        "the survivor holds every input partition"
    );
    // a finding re-sent after the take-over is the same finding
    let findings = broker.read_until("graywatch.findings", Duration::from_secs(10), |_| false);
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for f in &findings {
        let d = f.json();
        let id = d["id"].as_str().unwrap().to_owned();
        if let Some(before) = by_id.get(&id) {
            assert_eq!(before, &d, "finding {id} sent twice with different content");
        }
        by_id.insert(id, d);
    }
    assert!(
        by_id
            .keys()
            .any(|id| id.starts_with("black-hole/node/inventory/"))
    );
    assert_eq!(a.terminate(Duration::from_secs(30)), Some(0));
}

/// A `graywatch run` process.
pub struct Run {
    child: Child,
    /// Its stderr (logs).
    pub log: PathBuf,
    /// How long `log` was before this process started (a restart appends to it).
    from: usize,
}

impl Run {
    /// Starts `graywatch run -c config`, logging to `log`.
    pub fn start(config: &Path, log: &Path) -> Run {
        Run::start_with(config, log, &[])
    }

    /// Starts `graywatch run -c config` with more arguments, logging to `log`.
    pub fn start_with(config: &Path, log: &Path, args: &[&str]) -> Run {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let from = file.metadata().unwrap().len() as usize;
        let child = Command::new(env!("CARGO_BIN_EXE_graywatch"))
            .args(["run", "-c", config.to_str().unwrap()])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("GRAYWATCH_TEST_RUN_LOG")
                    .unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("graywatch runs");
        Run {
            child,
            log: log.to_path_buf(),
            from,
        }
    }

    /// The address its HTTP endpoint bound (the configs listen on port 0, so that no other
    /// process can take a port picked beforehand), from its log; waits at most 30 s for it.
    pub fn http(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = self.logs();
            let listen = logs.get(self.from..).and_then(|ours| {
                ours.lines()
                    .filter(|l| l.contains("http endpoint"))
                    .find_map(|l| l.split_once(" listen=").map(|(_, a)| a))
                    .and_then(|a| a.split_whitespace().next())
                    .map(str::to_owned)
            });
            if let Some(addr) = listen {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "graywatch run did not say where it listens within 30 s:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its logs so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What a failed check shows of it: its logs and its `/metrics` now.
    pub fn diagnosis(&self) -> String {
        let (_, metrics) = http_get(&self.http(), "/metrics");
        let metrics: String = metrics
            .lines()
            .filter(|l| l.starts_with("graywatch_"))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("logs:\n{}\nmetrics:\n{metrics}", self.logs())
    }

    /// SIGTERM, then waits for it to exit (at most `timeout`); returns its exit code.
    pub fn terminate(mut self, timeout: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("graywatch run did not stop on SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (`kill -9`): no checkpoint, no commit.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `graywatch run` config for `broker`: the given `[[kafka.inputs]]` (TOML), the landscape's
/// mapping and windows, short timeouts (idle after 2 s), checkpoints in `dir`.
pub fn run_config(broker: &Broker, inputs: &str, dir: &Path, extra: &str) -> String {
    run_config_idle(broker, inputs, dir, extra, "2s")
}

/// [`run_config`] with inputs idle after `idle_timeout` (`"8s"`). The exactly-once tests use a
/// longer one than 2 s: their producer pauses between slices, and on a loaded machine a pause
/// can outlast 2 s; a caught-up partition silent that long is idle, its windows close, and
/// what comes after for them is late.
pub fn run_config_idle(
    broker: &Broker,
    inputs: &str,
    dir: &Path,
    extra: &str,
    idle_timeout: &str,
) -> String {
    format!(
        "{landscape}\n\
         [runtime]\nidle-timeout = \"{idle_timeout}\"\nflush-after = \"50ms\"\n\n\
         [kafka]\nbootstrap-servers = \"{servers}\"\ngroup-id = \"graywatch-test\"\n\n\
         [kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"fetch.wait.max.ms\" = \"10\"\n\"statistics.interval.ms\" = \"1000\"\n\n\
         {inputs}\n\n\
         [kafka.outputs]\nfindings = \"graywatch.findings\"\ncommands = \"graywatch.commands\"\n\
         alerts = \"graywatch.alerts\"\naudit = \"graywatch.audit\"\ndead-letters = \"graywatch.dead-letters\"\n\
         windows = \"graywatch.windows\"\npartitions = 2\n\n\
         [checkpoint]\ndir = \"{dir}\"\ninterval = \"1s\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n",
        landscape = util::landscape_config(),
        servers = broker.bootstrap(),
        dir = dir.display(),
    )
}

/// The message of command `id` at `revision` on the commands topic, once it is there (30 s
/// at most).
fn command_revision(broker: &Broker, id: &str, revision: u32) -> Option<Value> {
    let is = |c: &Value| c["id"] == id && c["revision"] == revision;
    broker
        .read_until("graywatch.commands", Duration::from_secs(30), |m| {
            m.iter().any(|m| is(&m.json()))
        })
        .iter()
        .map(Msg::json)
        .find(is)
}

/// Approval mode on Kafka: the black hole's backpressure command goes out `proposed`;
/// `graywatch approve ID` (the admin endpoint, its bearer token) has the run send it again in
/// enforce mode (revision 1), audited on the audit topic; a wrong token, a second approval and
/// an unknown id are refused with the reason (exit status 1).
#[test]
fn a_proposed_command_is_enforced_once_approved() {
    let broker = Broker::start();
    let records = landscape_records(200, 7);
    produce_landscape(&broker, &records);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    util::write(&token, "a-test-admin-token-0123456789\n");
    let wrong = dir.path().join("wrong.token");
    util::write(&wrong, "not-the-admin-token-987654321\n");
    let config_with = |name: &str, token: &Path| {
        let path = dir.path().join(name);
        let extra = format!(
            "admin-token-file = \"{}\"\n\n[actuate]\nmode = \"enforce\"\napproval = true\n",
            token.display()
        );
        util::write(
            &path,
            &run_config(&broker, LANDSCAPE_INPUTS, &dir.path().join("state"), &extra),
        );
        path
    };
    let config = config_with("run.toml", &token);
    let run = Run::start(&config, &dir.path().join("run.log"));
    let id = format!(
        "backpressure/node/inventory/{}",
        (util::BASE_SECS + 130) * 1_000_000
    );
    let proposed = broker.read_until("graywatch.commands", Duration::from_secs(90), |m| {
        m.iter().any(|m| m.json()["id"] == id.as_str())
    });
    let first = proposed
        .iter()
        .map(Msg::json)
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no command {id}:\n{}", run.diagnosis()));
    assert_eq!(first["mode"], "proposed");
    assert_eq!(first["revision"], 0);

    let listen = run.http();
    let approve = |config: &Path, id: &str| {
        util::graywatch(&[
            "approve",
            id,
            "-c",
            config.to_str().unwrap(),
            "--listen",
            &listen,
        ])
    };
    let out = approve(&config_with("wrong.toml", &wrong), &id);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401 Unauthorized: missing or wrong bearer token"),
        "{stderr}"
    );

    // an approval of a revision that is not the one proposed is refused
    let out = util::graywatch(&[
        "approve",
        &id,
        "--revision",
        "5",
        "-c",
        config.to_str().unwrap(),
        "--listen",
        &listen,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("409 Conflict") && stderr.contains("is proposed at revision 0, not 5"),
        "{stderr}"
    );

    let out = approve(&config, &id);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("approved {id}: enforced"));
    let c = command_revision(&broker, &id, 1).expect("revision 1");
    assert_eq!(c["mode"], "enforce");
    assert_eq!(c["action"], "issue");
    let audit = broker.read_until("graywatch.audit", Duration::from_secs(30), |m| {
        m.iter().any(|m| m.json()["decision"] == "approved")
    });
    let decisions: Vec<String> = audit
        .iter()
        .map(Msg::json)
        .filter(|a| a["command"] == id.as_str())
        .map(|a| a["decision"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(decisions[..2], ["proposed", "approved"], "{decisions:?}");

    let out = approve(&config, &id);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("409 Conflict"), "{stderr}");
    assert!(stderr.contains("is enforce, not proposed"), "{stderr}");
    let out = approve(&config, "quarantine/version/x/v1/1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("404 Not Found: no command"), "{stderr}");
    assert_eq!(run.terminate(Duration::from_secs(30)), Some(0));
}

/// Approval with `[scale-out]`: the operator approves on the instance that does *not* hold
/// the proposed command (its stage-2 partition is the other's); the approval is forwarded on
/// the repartition topic (answered 202) and the instance holding it enforces it.
#[test]
fn with_scale_out_an_approval_reaches_the_instance_holding_the_command() {
    let broker = Broker::start();
    let records = landscape_records(200, 7);
    let split = landscape_topics(&broker, &records);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    util::write(&token, "a-test-admin-token-0123456789\n");
    let extra = format!(
        "admin-token-file = \"{}\"\n\n[scale-out]\npartitions = 2\n\n[actuate]\n\
         mode = \"enforce\"\napproval = true\n\n[actuate.rails]\nmax-blast-radius = 1.0\n",
        token.display()
    );
    let runs: Vec<(PathBuf, Run)> = ["a", "b"]
        .iter()
        .map(|name| {
            let path = dir.path().join(format!("{name}.toml"));
            util::write(
                &path,
                &run_config(&broker, LANDSCAPE_INPUTS, &dir.path().join(name), &extra),
            );
            let run = Run::start(&path, &dir.path().join(format!("{name}.log")));
            (path, run)
        })
        .collect();
    // inventory's stage-2 partition: held by whichever instance was assigned it last
    let p = graywatch::pipeline::judge::partition_of(b"inventory", 2);
    let holds = |run: &Run| {
        run.logs()
            .lines()
            .rfind(|l| {
                l.contains("stage 2 partition")
                    && (l.contains(&format!("partition={p} "))
                        || l.ends_with(&format!("partition={p}")))
            })
            .is_some_and(|l| l.contains("stage 2 partition assigned"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(holds(&runs[0].1) ^ holds(&runs[1].1)
        && runs
            .iter()
            .all(|(_, r)| r.logs().contains("stage 2 partition assigned")))
    {
        assert!(
            Instant::now() < deadline,
            "stage 2 not split:\n{}\n{}",
            runs[0].1.logs(),
            runs[1].1.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for ((topic, partition), records) in &split {
        broker.produce(topic, &landscape_messages(topic, *partition, records));
    }
    let id = format!(
        "backpressure/node/inventory/{}",
        (util::BASE_SECS + 130) * 1_000_000
    );
    let proposed = broker.read_until("graywatch.commands", Duration::from_secs(90), |m| {
        m.iter().any(|m| m.json()["id"] == id.as_str())
    });
    assert!(
        proposed
            .iter()
            .any(|m| m.json()["id"] == id.as_str() && m.json()["mode"] == "proposed"),
        "no proposed {id}:\n{}\n{}",
        runs[0].1.diagnosis(),
        runs[1].1.diagnosis()
    );
    let (holder, other) = if holds(&runs[0].1) {
        (&runs[0], &runs[1])
    } else {
        (&runs[1], &runs[0])
    };
    let out = util::graywatch(&[
        "approve",
        &id,
        "-c",
        other.0.to_str().unwrap(),
        "--listen",
        &other.1.http(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("forwarded {id} to the 2 stage-2 partitions")),
        "{stdout}"
    );
    let c = command_revision(&broker, &id, 1)
        .unwrap_or_else(|| panic!("not enforced:\n{}\n{}", holder.1.logs(), other.1.logs()));
    assert_eq!(
        (c["mode"].as_str(), c["action"].as_str()),
        (Some("enforce"), Some("issue"))
    );
    assert!(
        holder.1.logs().contains("approval forwarded by instance"),
        "{}",
        holder.1.logs()
    );
    let audit = broker.read_until("graywatch.audit", Duration::from_secs(30), |m| {
        m.iter().any(|m| m.json()["decision"] == "approved")
    });
    assert_eq!(
        audit
            .iter()
            .map(Msg::json)
            .filter(|a| a["command"] == id.as_str() && a["decision"] == "approved")
            .count(),
        1
    );
}

/// An input topic that does not exist is a startup error naming it (exit status 1).
#[test]
fn a_missing_input_topic_is_named() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    let inputs = "[[kafka.inputs]]\ntopic = \"no-such-topic\"\nformat = \"envoy\"\n";
    util::write(
        &config,
        &run_config(&broker, inputs, &dir.path().join("state"), ""),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_graywatch"))
        .args(["run", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("input topic \"no-such-topic\" does not exist"),
        "{stderr}"
    );
}

/// One checkpoint directory, two instances: a second process on the same directory stops at
/// start (the directory is locked); a copy of the directory (a cloned volume) carries the
/// instance id, so the group fences the older member's static membership, and that one stops
/// with an error saying so (exit status 1) while the other reads on.
#[test]
fn two_instances_with_one_instance_id_are_told_apart() {
    let broker = Broker::start();
    broker.create_topic("envoy-logs", 2);
    broker.create_topic("flows", 2);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    let text = run_config(&broker, LANDSCAPE_INPUTS, &dir.path().join("state"), "");
    util::write(&config, &text);
    let mut first = Run::start(&config, &dir.path().join("first.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first.logs().contains("assigned") {
        assert!(Instant::now() < deadline, "{}", first.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let other = |name: &str, state: &Path| {
        let path = dir.path().join(format!("{name}.toml"));
        util::write(&path, &run_config(&broker, LANDSCAPE_INPUTS, state, ""));
        path
    };
    // the same directory: refused at start
    let same = other("same", &dir.path().join("state"));
    let out = util::graywatch(&["run", "-c", same.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is in use by another graywatch process"),
        "{stderr}"
    );
    // a copy of it: the same instance id
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(dir.path().join("state/instance"), copy.join("instance")).unwrap();
    let second = Run::start(&other("copy", &copy), &dir.path().join("second.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the first instance was not fenced:\n{}\n{}",
            first.logs(),
            second.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let logs = first.logs();
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(
        logs.contains("two instances share one [checkpoint] dir's instance id"),
        "{logs}"
    );
    assert_eq!(second.terminate(Duration::from_secs(30)), Some(0));
}

/// Logs that don't name versions, and a deploy history on a topic (`[kafka] deployments`):
/// the simulator's deployment that changed a fan-out (seed 1, scale 0.3, 90 min) is named by
/// service and version, as `eval scenarios --versions events` names it from a file; a line of
/// the topic that is not a deployment is a dead letter; a deployment written while running is
/// read. Without the history the same records name no version.
#[test]
fn a_deploy_history_on_a_topic_names_the_version_the_records_dont() {
    use graywatch::simulate::{Scenario, Simulation, SimulationConfig};

    let broker = Broker::start();
    let mut sc = SimulationConfig::new(Scenario::DeployFanout, 1);
    sc.scale = 0.3;
    sc.duration_us = 90 * 60 * 1_000_000;
    let sim = Simulation::new(sc).unwrap();
    let truth = sim.truth().clone();
    let lines: Vec<String> = sim
        .map(|mut r| {
            r.source_version = None;
            r.destination_version = None;
            serde_json::to_string(&r).unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // the same records replayed without a history: no version to name
    let file = dir.path().join("flows.jsonl");
    util::write(&file, &(lines.join("\n") + "\n"));
    let simulate_toml = util::root().join("deploy/examples/simulate.toml");
    let (docs, _) = util::graywatch_ok(&[
        "replay",
        "-q",
        "--no-windows",
        "-f",
        "flow-json",
        "-c",
        simulate_toml.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(
        !docs.iter().any(|d| d["signature"] == "deploy-regression"),
        "found without a deploy history"
    );

    broker.create_topic("flows", 1);
    let messages: Vec<Msg> = lines
        .chunks(500)
        .map(|c| Msg::to(0, c.join("\n")))
        .collect();
    broker.produce("flows", &messages);
    let mut history: Vec<Msg> = truth
        .deployments()
        .iter()
        .map(|e| Msg::to(0, graywatch::config::deployment_line(e)))
        .collect();
    // a message of three lines: no version, not UTF-8, and a deployment (of a service the
    // records don't have)
    history.insert(
        1,
        Msg::to(
            0,
            [
                &b"{\"service\":\"cart\",\"at\":\"yesterday\"}\n\xff\xfe\n"[..],
                br#"{"service":"ledger","version":"v1.0.1","at":"2026-01-05T00:30:00Z"}"#,
            ]
            .concat(),
        ),
    );
    broker.create_topic("deployments", 1);
    broker.produce("deployments", &history);

    let config = dir.path().join("run.toml");
    let inputs = "[[kafka.inputs]]\ntopic = \"flows\"\nformat = \"flow-json\"\n";
    let text = run_config(&broker, inputs, &dir.path().join("state"), "")
        .replace(
            &util::landscape_config(),
            &std::fs::read_to_string(&simulate_toml).unwrap(),
        )
        .replace(
            "group-id = \"graywatch-test\"\n",
            "group-id = \"graywatch-test\"\ndeployments = \"deployments\"\n",
        );
    util::write(&config, &text);
    let run = Run::start(&config, &dir.path().join("run.log"));

    let incident = &truth.incidents[0];
    let subject = serde_json::to_value(&incident.subject).unwrap();
    assert_eq!(subject["kind"], "version");
    let named = |m: &[Msg]| {
        m.iter()
            .any(|m| m.json()["signature"] == "deploy-regression" && m.json()["subject"] == subject)
    };
    let findings = broker.read_until("graywatch.findings", Duration::from_secs(180), named);
    assert!(
        named(&findings),
        "no deploy-regression finding on {subject}; run logs:\n{}",
        run.logs()
    );
    let first = findings
        .iter()
        .map(Msg::json)
        .filter(|f| f["signature"] == "deploy-regression" && f["subject"] == subject)
        .map(|f| f["window"]["start_us"].as_i64().unwrap())
        .min()
        .unwrap();
    assert!(
        first >= incident.onset_us - 10_000_000 && first < incident.end_us,
        "first finding at {first}, incident {}..{}",
        incident.onset_us,
        incident.end_us
    );

    let bad_deployments = |m: &[Msg]| {
        m.iter()
            .filter(|m| m.header("graywatch-reason") == Some("bad-deployment"))
            .cloned()
            .collect::<Vec<Msg>>()
    };
    let dead = broker.read_until("graywatch.dead-letters", Duration::from_secs(30), |m| {
        bad_deployments(m).len() >= 2
    });
    let bad = bad_deployments(&dead);
    assert_eq!(bad.len(), 2, "one dead letter per bad line");
    for b in &bad {
        assert_eq!(b.header("graywatch-source-topic"), Some("deployments"));
        assert_eq!(b.header("graywatch-source-offset"), Some("1"));
    }
    // a dead letter keeps its message's key (none here): the two may land in different
    // partitions of the dead-letter topic, read in either order
    let mut details: Vec<&str> = bad
        .iter()
        .map(|b| b.header("graywatch-detail").unwrap())
        .collect();
    details.sort_unstable();
    assert!(
        details[0].starts_with("line 1 of the message: missing field `version`"),
        "{details:?}"
    );
    assert_eq!(details[1], "line 2 of the message is not UTF-8");

    // a deployment written while it runs is read (and one written twice counts once)
    let deployments = |run: &Run| {
        metric(
            &http_get(&run.http(), "/metrics").1,
            "graywatch_deployments_total",
        )
    };
    // the truth's and ledger's
    let known = truth.deployments().len() as f64 + 1.0;
    assert_eq!(deployments(&run), Some(known));
    let late = "{\"service\":\"cart\",\"version\":\"v9.9.9\",\"at\":\"2026-01-05T01:40:00Z\"}";
    broker.produce("deployments", &[Msg::to(0, late), Msg::to(0, late)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while deployments(&run) != Some(known + 1.0) {
        assert!(Instant::now() < deadline, "{:?}", deployments(&run));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(run.terminate(Duration::from_secs(30)), Some(0));
}
