//! The command line: errors, exit codes, the example config, the bundled real logs.

use crate::util::{example_data, graywatch, graywatch_ok, of_kind, root, temp_path, write};

#[test]
fn example_config_validates() {
    let out = graywatch(&["validate", "--config", "deploy/examples/graywatch.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("deploy/examples/graywatch.toml: ok"),
        "{stdout}"
    );
    // Values from the file, not defaults, came through.
    assert!(stdout.contains("service frontend, 2 rule(s)"), "{stdout}");
    assert!(stdout.contains("allowed lateness 15s"), "{stdout}");
}

#[test]
fn unknown_config_key_is_an_error_naming_it() {
    let (_dir, path) = temp_path("bad.toml");
    write(&path, "[detect.window]\nlenght = \"10s\"\n");
    let out = graywatch(&["validate", "-c", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lenght"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
}

/// `simulate --deployments` writes the deploy history `[detect.deploy] events` reads; a bad
/// line in it is a config error naming the file and line.
#[test]
fn a_deploy_history_is_read_and_a_bad_line_named() {
    let (dir, history) = temp_path("deployments.jsonl");
    graywatch_ok(&[
        "simulate",
        "--scenario",
        "deploy-fanout",
        "--seed",
        "1",
        "--duration",
        "10min",
        "-q",
        "-o",
        dir.path().join("sim.jsonl").to_str().unwrap(),
        "--deployments",
        history.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&history).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // seed 1: pricing v2.6.0 from v2.5.3 at +302 s of the 10 min run, rolled back later
    let incident = lines
        .iter()
        .find(|l| l["service"] == "pricing" && l["version"] == "v2.6.0")
        .unwrap_or_else(|| panic!("no pricing v2.6.0 in {text}"));
    assert_eq!(incident["previous_version"], "v2.5.3");
    assert!(
        lines
            .iter()
            .any(|l| l["service"] == "pricing" && l["version"] == "v2.5.3"),
        "no rollback in {text}"
    );

    let config = dir.path().join("graywatch.toml");
    write(
        &config,
        &format!(
            "[detect.deploy]\nevents = {:?}\n",
            history.to_str().unwrap()
        ),
    );
    let out = graywatch(&["validate", "-c", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    write(
        &history,
        &format!("{text}{{\"service\":\"cart\",\"version\":\"v9\",\"at\":\"yesterday\"}}\n"),
    );
    let out = graywatch(&["validate", "-c", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let bad_line = format!("deployments.jsonl:{}", lines.len() + 1);
    assert!(stderr.contains(&bad_line), "{stderr}");
    assert!(stderr.contains("yesterday"), "{stderr}");

    // names never hold control characters: a version that would colour a terminal is refused
    write(
        &history,
        "{\"service\":\"cart\",\"version\":\"v9\\u001b[31m\",\"at\":\"2026-01-05T01:00:00Z\"}\n",
    );
    let out = graywatch(&["validate", "-c", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("deployments.jsonl:1"), "{stderr}");
    assert!(stderr.contains("control character"), "{stderr}");

    // an array holding the fields in order is not a deployment (serde alone would take it)
    write(&history, "[\"cart\",\"v9\",\"2026-01-05T01:00:00Z\"]\n");
    let out = graywatch(&["validate", "-c", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deployments.jsonl:1: not a JSON object"),
        "{stderr}"
    );
}

#[test]
fn unreadable_input_fails_with_its_name() {
    let out = graywatch(&["replay", "--format", "envoy", "no/such/file.log"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no/such/file.log"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_format_flag_fails_with_the_value() {
    let out = graywatch(&[
        "parse",
        "--format",
        "apache",
        "deploy/examples/logs/beats_envoyproxy_envoy.log",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad flag value is a usage error"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown format \"apache\""), "{stderr}");
    // an NGINX log_format that can't compile is a bad --format too (the README: status 2)
    for command in ["parse", "replay"] {
        let out = graywatch(&[
            command,
            "--format",
            "nginx:'$remote_addr \"$request\" $status'",
            "deploy/examples/logs/beats_envoyproxy_envoy.log",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("no time variable ($time_local, $time_iso8601 or $msec)"),
            "{stderr}"
        );
    }
}

/// Every command's `--help` ends with examples, and they work from the binary alone: they
/// name no file of the repository (data comes from `graywatch simulate`, or from a public
/// data set the example says how to get).
#[test]
fn every_command_has_an_example_that_needs_no_repository() {
    for command in [
        &["replay"][..],
        &["parse"],
        &["run"],
        &["validate"],
        &["eval", "nab"],
        &["eval", "trainticket"],
        &["eval", "scenarios"],
        &["simulate"],
        &["approve"],
        &["enforce", "nginx"],
        &["render"],
        &["report"],
        &["query"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = graywatch(&args);
        let help = String::from_utf8_lossy(&out.stdout);
        let Some(at) = help.find("Example") else {
            panic!(
                "graywatch {} --help has no example:\n{help}",
                command.join(" ")
            );
        };
        let examples = help[at..].split("\n\n").next().unwrap();
        for repository_path in ["deploy/", "tests/", "examples/", "cargo "] {
            assert!(
                !examples.contains(repository_path),
                "graywatch {} --help: an example needs the repository ({repository_path}):\n{examples}",
                command.join(" ")
            );
        }
    }
}

/// `eval scenarios` runs without the repository: its default config is built in.
#[test]
fn eval_scenarios_needs_no_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_graywatch"))
        .args([
            "eval",
            "scenarios",
            "--scenarios",
            "black-hole",
            "--seeds",
            "1",
            "--scale",
            "0.3",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("black-hole seed 1: detected Some(true)"),
        "{stderr}"
    );
}

#[test]
fn help_explains_units() {
    let out = graywatch(&["replay", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--format",
        "nginx:'<log_format>'",
        "--config",
        "BYTES",
        "--findings",
    ] {
        assert!(
            help.contains(needle),
            "replay --help lacks {needle}:\n{help}"
        );
    }
}

/// `parse` on Envoy's own fixture (elastic/beats, Elastic License 2.0): line 2 is
/// `[2019-02-12T18:37:42.921Z] "GET /httpbin/ip HTTP/1.1" 200 - 0 43 217 216 ...`.
#[test]
fn parse_prints_flow_records() {
    let (docs, stderr) =
        graywatch_ok(&["parse", "deploy/examples/logs/beats_envoyproxy_envoy.log"]);
    assert_eq!(docs.len(), 2, "{stderr}");
    let http = &docs[1];
    assert_eq!(http["duration_us"], 217_000);
    assert_eq!(http["bytes_sent"], 43);
    assert_eq!(http["status"], 200);
    assert_eq!(http["destination"], "httpbin.org");
    // 2019-02-12T18:37:42.921Z = 1549996662 s (date -u -d ... +%s)
    assert_eq!(http["start_us"], 1_549_996_662_921_000_i64);
}

/// The number after `label` in a summary on stderr (`  records   1,234`).
fn summary_count(stderr: &str, label: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} in summary:\n{stderr}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap()
}

/// Every bundled log replays with its format sniffed; every line is a record or a counted
/// reject, and every record is either aggregated into a pair window or counted as late or
/// ahead.
#[test]
fn bundled_logs_replay_with_auto_format() {
    for (file, lines, rejected) in [
        ("beats_envoyproxy_envoy.log", 2, 0),
        ("integrations_envoyproxy_test-log.log", 7, 0),
        ("integrations_istio_test-access-logs.log", 8, 0),
        ("beats_nginx_access_test.log", 7, 0),
        ("beats_nginx_ingress_controller_test.log", 29, 0),
        // Line 8899 ends inside its user agent: no closing quote.
        ("elastic_examples_apache_logs.log", 10_000, 1),
    ] {
        let path = root().join("deploy/examples/logs").join(file);
        let (docs, stderr) = graywatch_ok(&["replay", path.to_str().unwrap()]);
        let aggregated: u64 = of_kind(&docs, "pair-window")
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum();
        let records = summary_count(&stderr, "records");
        assert_eq!(summary_count(&stderr, "lines"), lines, "{file}\n{stderr}");
        assert_eq!(
            summary_count(&stderr, "rejected"),
            rejected,
            "{file}\n{stderr}"
        );
        assert_eq!(records + rejected, lines, "{file}\n{stderr}");
        // records held back for starting far ahead of the rest and not confirmed
        let ahead = if stderr.contains("  ahead ") {
            summary_count(&stderr, "ahead")
        } else {
            0
        };
        assert_eq!(
            aggregated + summary_count(&stderr, "late") + ahead,
            records,
            "{file}\n{stderr}"
        );
    }
}

#[test]
fn rejects_file_names_position_and_reason() {
    // lnav's bad access log (tstack/lnav, BSD-2-Clause): line 2 lacks the ident/user fields.
    let (_dir, rejects) = temp_path("rejects.jsonl");
    let input = crate::util::example_data("logs/lnav_logfile_bad_access_log.0");
    let (docs, stderr) = graywatch_ok(&[
        "parse",
        "-f",
        "nginx-combined",
        "--rejects",
        rejects.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert_eq!(docs.len(), 2);
    assert!(
        stderr.contains("lnav_logfile_bad_access_log.0:2: malformed"),
        "{stderr}"
    );
    let rejected = crate::util::json_lines(&std::fs::read(&rejects).unwrap());
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["line"], 2);
    assert_eq!(rejected[0]["reason"], "malformed");
}

/// `graywatch parse big.log | head -1`: a closed stdout ends the run quietly with status 0.
#[test]
fn closed_stdout_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_graywatch"))
        .args([
            "parse",
            "deploy/examples/logs/elastic_examples_apache_logs.log",
        ])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // 83.149.9.216 - - [17/May/2015:10:05:03 +0000] ...: 1431857103 s.
    assert!(first.contains("\"start_us\":1431857103000000"), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{stderr}"
    );
}

/// Envoy default-format lines (Envoy docs, access_log usage) for `start` seconds after
/// 2024-05-01T00:00:00Z lasting `ms` milliseconds, frontend's sidecar calling catalog.
fn envoy_line(start_ms: i64, ms: u64) -> String {
    let ts = crate::util::format_rfc3339_ms(crate::util::BASE_SECS * 1000 + start_ms);
    format!(
        "[{ts}] \"GET /items HTTP/1.1\" 200 - 0 120 {ms} {ms} \"-\" \"curl/8\" \"id-{start_ms}\" \"catalog:8080\" \"10.1.0.7:8080\"\n"
    )
}

/// A request slower than the allowed lateness is logged (at its end) after its window closed:
/// counted as late, explained in the summary, and kept in the reject file with its record.
#[test]
fn late_slow_request_is_counted_explained_and_kept() {
    let (dir, log) = temp_path("envoy.log");
    // One 10 ms request a second for 60 s, written at completion; the one starting at 12 s
    // takes 30 s, so its line comes after the 41 s one, when the watermark (41 s − 15 s) has
    // passed the end of its window [10 s, 20 s).
    let mut lines: Vec<(i64, String)> = (0..60)
        .map(|s| {
            let ms = if s == 12 { 30_000 } else { 10 };
            (s * 1000 + ms as i64, envoy_line(s * 1000, ms))
        })
        .collect();
    lines.sort();
    write(&log, &lines.into_iter().map(|(_, l)| l).collect::<String>());
    let rejects = dir.path().join("rejects.jsonl");
    let (docs, stderr) = graywatch_ok(&[
        "replay",
        "--rejects",
        rejects.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("late      1 (beyond the allowed lateness of 15s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 of the late records took 15s or longer"),
        "{stderr}"
    );
    let kept = crate::util::json_lines(&std::fs::read(&rejects).unwrap());
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["reason"], "late");
    assert_eq!(kept[0]["record"]["duration_us"], 30_000_000);
    let aggregated: u64 = of_kind(&docs, "pair-window")
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(aggregated, 59);
}

/// One record from a clock far ahead (2100) must not make everything after it late.
#[test]
fn far_future_record_is_set_aside() {
    let (_dir, log) = temp_path("envoy.log");
    let mut text = String::new();
    for s in 0..30 {
        text += &envoy_line(s * 1000, 10);
        if s == 5 {
            // 2100-01-01T00:00:00Z
            text += &envoy_line((4_102_444_800 - crate::util::BASE_SECS) * 1000, 10);
        }
    }
    write(&log, &text);
    let (docs, stderr) = graywatch_ok(&["replay", log.to_str().unwrap()]);
    assert!(stderr.contains("future    1"), "{stderr}");
    assert!(stderr.contains("late      0"), "{stderr}");
    let aggregated: u64 = of_kind(&docs, "pair-window")
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(aggregated, 30);
}

/// Empty inputs are counted and skipped; the other inputs are still read.
#[test]
fn empty_input_is_skipped() {
    let (dir, empty) = temp_path("empty.log");
    write(&empty, "\n\n");
    let log = dir.path().join("envoy.log");
    write(&log, &envoy_line(0, 10));
    let (docs, stderr) = graywatch_ok(&["replay", empty.to_str().unwrap(), log.to_str().unwrap()]);
    assert!(stderr.contains("format    empty, envoy"), "{stderr}");
    assert!(stderr.contains("blank     2"), "{stderr}");
    assert_eq!(of_kind(&docs, "pair-window").len(), 1);
}

/// A closed stderr must not turn into a panic (exit status 101).
#[test]
fn closed_stderr_is_not_a_panic() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_graywatch"))
        .args([
            "parse",
            "-f",
            "envoy",
            "deploy/examples/logs/elastic_examples_apache_logs.log",
        ])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "panicked");
    assert!(status.success());
}

/// Two logs covering the same minute, given as two inputs: they are read in turns, always
/// from the one furthest behind, so nothing is late and every record counts; the same two
/// logs one after the other in time (rotated) give the same windows too.
#[test]
fn overlapping_inputs_are_read_in_turns() {
    let (dir, a) = temp_path("a.log");
    let b = dir.path().join("b.log");
    let (mut ta, mut tb) = (String::new(), String::new());
    for s in 0..60 {
        ta += &envoy_line(s * 1000, 10);
        tb += &envoy_line(s * 1000 + 500, 10);
    }
    write(&a, &ta);
    write(&b, &tb);
    let (docs, stderr) = graywatch_ok(&["replay", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(stderr.contains("late      0 "), "{stderr}");
    let pairs = of_kind(&docs, "pair-window");
    assert_eq!(pairs.len(), 6);
    assert!(pairs.iter().all(|p| p["requests"] == 20), "{pairs:?}");

    // Rotated: b holds the minute after a's; given in either order, nothing is late.
    let mut tb = String::new();
    for s in 60..120 {
        tb += &envoy_line(s * 1000, 10);
    }
    write(&b, &tb);
    let (docs, stderr) = graywatch_ok(&["replay", b.to_str().unwrap(), a.to_str().unwrap()]);
    assert!(stderr.contains("late      0 "), "{stderr}");
    assert_eq!(of_kind(&docs, "pair-window").len(), 12);
}

/// A pipe that stays open but goes quiet (`kubectl logs -f … | graywatch replay -`): its
/// records go through, and after `idle-timeout` its windows close and are written, while the
/// pipe is still open.
#[test]
fn a_quiet_pipe_is_seen_without_closing_it() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let (dir, config) = temp_path("quiet.toml");
    write(
        &config,
        "[runtime]\nidle-timeout = \"1s\"\nflush-after = \"50ms\"\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_graywatch"))
        .args([
            "replay",
            "-q",
            "-f",
            "envoy",
            "-c",
            config.to_str().unwrap(),
            "-",
        ])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // 12 requests in the first 6 s of a window, then silence
    let lines: String = (0..12).map(|i| envoy_line(i * 500, 10)).collect();
    stdin.write_all(lines.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let window = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("a window is written while the pipe is open");
    let doc: serde_json::Value = serde_json::from_str(&window).unwrap();
    assert_eq!(doc["kind"], "pair-window");
    assert_eq!(doc["requests"], 12);
    assert_eq!(doc["destination"], "catalog");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    drop(dir);
}

/// Several sidecars' files in one run, each credited to its own workload by
/// `[[mapping.inputs]]`: the same Istio inbound line (deploy/examples/logs/
/// integrations_istio_test-access-logs.log, line 3) counts for the workload whose file it is
/// in.
#[test]
fn each_sidecars_file_is_credited_to_its_workload() {
    let fixture = std::fs::read_to_string(
        root().join("deploy/examples/logs/integrations_istio_test-access-logs.log"),
    )
    .unwrap();
    let line3 = fixture.lines().nth(2).unwrap();
    let (dir, config) = temp_path("sidecars.toml");
    write(
        &config,
        "[[mapping.inputs]]\npath = \"*/details-*.log\"\nservice = \"details\"\nversion = \"v1\"\n\n\
         [[mapping.inputs]]\npath = \"*/ratings-*.log\"\nservice = \"ratings\"\nversion = \"v2\"\n",
    );
    let (details, ratings) = (
        dir.path().join("details-1.log"),
        dir.path().join("ratings-7.log"),
    );
    write(&details, &format!("{line3}\n"));
    write(&ratings, &format!("{line3}\n{line3}\n"));
    let (docs, stderr) = graywatch_ok(&[
        "parse",
        "-c",
        config.to_str().unwrap(),
        details.to_str().unwrap(),
        ratings.to_str().unwrap(),
    ]);
    assert_eq!(docs.len(), 3, "{stderr}");
    assert_eq!(docs[0]["destination"], "details");
    assert_eq!(docs[0]["destination_version"], "v1");
    assert_eq!(docs[1]["destination"], "ratings");
    assert_eq!(docs[2]["destination_version"], "v2");
}

/// `parse` prints flow-json; `replay -f flow-json` reads it back to the same windows and
/// findings as replaying the logs themselves.
#[test]
fn flow_json_replays_like_the_logs_it_came_from() {
    let (dir, logs) = temp_path("istio.log");
    write(
        &logs,
        &crate::util::landscape_logs(200, "inventory", 120, 3),
    );
    let config = dir.path().join("landscape.toml");
    write(&config, &crate::util::landscape_config());
    let cfg = config.to_str().unwrap();
    let direct = graywatch(&["replay", "-q", "-c", cfg, logs.to_str().unwrap()]);
    assert!(direct.status.success());
    let parsed = graywatch(&["parse", "-q", "-c", cfg, logs.to_str().unwrap()]);
    let flows = dir.path().join("flows.jsonl");
    std::fs::write(&flows, &parsed.stdout).unwrap();
    let again = graywatch(&["replay", "-q", "-c", cfg, flows.to_str().unwrap()]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&direct.stdout)
    );
    let docs = crate::util::json_lines(&again.stdout);
    assert!(!of_kind(&docs, "finding").is_empty());
}

/// An output that is an input, by its path or through a link (symbolic or hard), is refused
/// before anything is written, as is stdin given twice.
#[test]
fn outputs_over_an_input_are_refused() {
    let (dir, log) = temp_path("envoy.log");
    let line = envoy_line(0, 10);
    write(&log, &line);
    let soft = dir.path().join("soft.jsonl");
    let hard = dir.path().join("hard.jsonl");
    std::os::unix::fs::symlink(&log, &soft).unwrap();
    std::fs::hard_link(&log, &hard).unwrap();
    for output in [&log, &soft, &hard] {
        let out = graywatch(&[
            "replay",
            "--windows",
            output.to_str().unwrap(),
            log.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", output.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is also an input"), "{stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        line,
        "input untouched"
    );
    let out = graywatch(&["replay", "-", "-"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stdin (-) is given 2 times"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A flood of client-chosen `Host` names in one window: past `max-pairs` distinct pairs, new
/// pairs count under `(other)` (bounded state), every request still counted, and the summary
/// says how many.
#[test]
fn a_flood_of_distinct_hosts_is_counted_under_other() {
    let (dir, log) = temp_path("edge.log");
    let mut text = String::new();
    for i in 0..5_000 {
        let ts = crate::util::format_rfc3339_ms(crate::util::BASE_SECS * 1000 + i);
        text += &format!(
            "[{ts}] \"GET / HTTP/1.1\" 200 - 0 10 1 1 \"-\" \"bot\" \"-\" \"host-{i}:80\" \"10.1.0.7:8080\"\n"
        );
    }
    write(&log, &text);
    let config = dir.path().join("c.toml");
    write(
        &config,
        "[mapping]\nservice = \"edge\"\n[detect.window]\nmax-pairs = 100\n",
    );
    let (docs, stderr) = graywatch_ok(&[
        "replay",
        "-c",
        config.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    let pairs = of_kind(&docs, "pair-window");
    // 100 pairs, then 100 ÷ 8 = 12 under (source, other): only (edge, other) here
    assert_eq!(pairs.len(), 101, "{stderr}");
    let other: Vec<_> = pairs
        .iter()
        .filter(|p| p["destination"] == "(other)")
        .collect();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0]["source"], "edge");
    assert_eq!(other[0]["requests"], 4_900);
    let total: u64 = pairs.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 5_000);
    assert!(stderr.contains("overflow  4,900 records"), "{stderr}");
    assert!(of_kind(&docs, "finding").is_empty());
}

/// Runs `graywatch args…` through `sh -c` after `setup` (e.g. `ulimit -n 64`, a
/// redirection: `"$0" "$@"` stands for the command).
fn graywatch_sh(script: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_graywatch"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

/// Two outputs that are one file (a hard link, a symbolic link not yet pointing at a file),
/// an output over the file stdin is redirected from, and a stdout appended to an input: each
/// is refused before anything is written, naming both ends.
#[test]
fn outputs_that_are_one_file_are_refused() {
    let (dir, log) = temp_path("envoy.log");
    let line = envoy_line(0, 10);
    write(&log, &line);
    let log = log.to_str().unwrap();
    let windows = dir.path().join("windows.jsonl");
    let findings = dir.path().join("findings.jsonl");
    write(&windows, "old\n");
    std::fs::hard_link(&windows, &findings).unwrap();
    let dangling = dir.path().join("alerts.jsonl");
    let commands = dir.path().join("commands.jsonl");
    std::os::unix::fs::symlink(&commands, &dangling).unwrap();
    for (a, b, second) in [
        ("--windows", &windows, ("--findings", &findings)),
        ("--commands", &commands, ("--alerts", &dangling)),
    ] {
        let out = graywatch(&[
            "replay",
            a,
            b.to_str().unwrap(),
            second.0,
            second.1.to_str().unwrap(),
            log,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "{} {}: the same file as {a} {}",
                second.0,
                second.1.display(),
                b.display()
            )),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read_to_string(&windows).unwrap(), "old\n");
    assert!(!commands.exists(), "nothing created");
    // several outputs to a device are fine
    let (docs, _) = graywatch_ok(&[
        "replay",
        "--windows",
        "/dev/null",
        "--findings",
        "/dev/null",
        log,
    ]);
    assert!(docs.is_empty());

    // stdin redirected from the input, which is also an output
    let out = graywatch_sh(r#""$0" "$@" < "$3""#, &["replay", "--windows", log, "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--windows {log}: is also an input (-)")),
        "{stderr}"
    );
    // stdout appended to the input
    let out = graywatch_sh(r#""$0" "$@" >> "$2""#, &["parse", log]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("stdout is input {log}")),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(log).unwrap(),
        line,
        "input untouched"
    );
}

/// One file given twice (by name, through a symbolic link, or as `-` redirected from it)
/// would count every record twice: refused, naming both.
#[test]
fn an_input_given_twice_is_refused() {
    let (dir, log) = temp_path("envoy.log");
    write(
        &log,
        &(0..20)
            .map(|s| envoy_line(s * 1000, 10))
            .collect::<String>(),
    );
    let link = dir.path().join("link.log");
    std::os::unix::fs::symlink(&log, &link).unwrap();
    let (log, link) = (log.to_str().unwrap(), link.to_str().unwrap());
    for second in [log, link] {
        let out = graywatch(&["replay", log, second]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("input {second} is the same file as input {log}")),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    let out = graywatch_sh(r#""$0" "$@" < "$2""#, &["parse", log, "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("input - is the same file as input {log}")),
        "{stderr}"
    );
}

/// A closed stdin (`<&-`) or /dev/null (what a closed fd 0 becomes before `main`) has
/// nothing to read: an error, not a run over 0 records; an empty pipe is an empty input.
#[test]
fn a_closed_stdin_is_an_error() {
    for script in [r#""$0" "$@" <&-"#, r#""$0" "$@" < /dev/null"#] {
        let out = graywatch_sh(script, &["replay", "-f", "envoy", "-"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{script}: {stderr}");
        assert!(
            stderr.contains("stdin (-) is closed or /dev/null"),
            "{stderr}"
        );
    }
    let out = graywatch_sh(r#"printf '' | "$0" "$@""#, &["replay", "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("format    empty"), "{stderr}");
    assert_eq!(summary_count(&stderr, "records"), 0);
}

/// `--max-line-bytes` has a floor, and blank lines before the first line (more bytes of them
/// than the limit) don't make `--format auto` skip an input as empty.
#[test]
fn line_limit_never_skips_an_input() {
    let (_dir, log) = temp_path("envoy.log");
    let records: String = (0..20).map(|s| envoy_line(s * 1000, 10)).collect();
    write(&log, &format!("\n{records}"));
    let out = graywatch(&["replay", "--max-line-bytes", "1", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be at least 1024"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(&log, &format!("{}{records}", "\n".repeat(2000)));
    let (_, stderr) = graywatch_ok(&["replay", "--max-line-bytes", "1024", log.to_str().unwrap()]);
    assert!(stderr.contains("format    envoy"), "{stderr}");
    assert_eq!(summary_count(&stderr, "records"), 20);
    assert_eq!(summary_count(&stderr, "blank"), 2000);
}

/// 200 inputs under `ulimit -n 64`: files are opened as they are read, a few at a time.
#[test]
fn many_inputs_under_a_low_open_file_limit() {
    let (dir, _) = temp_path("x");
    let paths: Vec<String> = (0..200)
        .map(|i| {
            let p = dir.path().join(format!("envoy-{i:03}.log"));
            // every file covers the same 2 s: read in turns, all open at once before
            write(
                &p,
                &(0..2)
                    .map(|s| envoy_line(s * 1000 + i, 10))
                    .collect::<String>(),
            );
            p.to_str().unwrap().to_owned()
        })
        .collect();
    for command in ["replay", "parse"] {
        let mut args = vec![command];
        args.extend(paths.iter().map(String::as_str));
        let out = graywatch_sh(r#"ulimit -n 64 && "$0" "$@""#, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{command}: {stderr}");
        assert_eq!(summary_count(&stderr, "records"), 400, "{stderr}");
    }
}

/// A Host header holding NUL is a counted `bad-name` reject naming field and byte, the other
/// lines go on; a request id that is not UTF-8 only loses the id, counted in the summary.
#[test]
fn control_characters_in_names_are_rejects_and_bad_request_ids_are_dropped() {
    let (dir, log) = temp_path("envoy.log");
    let good = envoy_line(0, 10);
    let mut bytes = good.replace("catalog:8080", "cat\0alog:8080").into_bytes();
    bytes.extend(good.replace("id-0", "id-\u{fffd}").into_bytes());
    // U+FFFD (EF BF BD) → a lone 0xFF
    let at = bytes
        .windows(3)
        .position(|w| w == [0xef, 0xbf, 0xbd])
        .unwrap();
    bytes.splice(at..at + 3, [0xff]);
    std::fs::write(&log, &bytes).unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let (docs, stderr) = graywatch_ok(&[
        "replay",
        "--rejects",
        rejects.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    assert!(stderr.contains("rejected  1 (bad-name 1)"), "{stderr}");
    assert!(
        stderr.contains("request ids not UTF-8 (dropped, records kept) 1"),
        "{stderr}"
    );
    let kept = crate::util::json_lines(&std::fs::read(&rejects).unwrap());
    assert_eq!(kept[0]["line"], 1);
    assert_eq!(
        kept[0]["detail"],
        "destination \"cat\\0alog\": control character U+0000 at byte 3"
    );
    let pairs = of_kind(&docs, "pair-window");
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0]["destination"], "catalog");
    assert_eq!(pairs[0]["requests"], 1);
}

/// `--threads`: one thread and three give the same windows, findings, commands and rejects,
/// byte for byte, over inputs read in turns: a simulated black hole as Envoy JSON from two
/// proxies (every other line each) and the bundled NGINX log (elastic/examples, Apache-2.0)
/// with its one bad line (8899) and a line too long added. Three threads again once the files
/// are an hour old: they are mapped in memory instead of read, and the output is the same.
#[test]
fn threads_change_nothing_in_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let (all, map, _) = crate::util::simulated_black_hole(dir.path());
    let text = std::fs::read_to_string(&all).unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let (mut even, mut odd) = (String::new(), String::new());
    for (i, line) in text.lines().enumerate() {
        let half = if i % 2 == 0 { &mut even } else { &mut odd };
        half.push_str(line);
        half.push('\n');
    }
    write(&a, &even);
    write(&b, &odd);
    assert!(
        text.lines().count() > 50_000,
        "enough lines for many chunks"
    );
    let mut log = std::fs::read(example_data("logs/elastic_examples_apache_logs.log")).unwrap();
    log.extend_from_slice(&[b'x'; 70_000]);
    log.push(b'\n');
    let nginx = dir.path().join("nginx.log");
    std::fs::write(&nginx, &log).unwrap();
    let files = [&a, &b, &nginx];
    let run = |threads: &str| {
        let rejects = dir.path().join(format!("rejects-{threads}.jsonl"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_graywatch"))
            .args([
                "replay",
                "-c",
                map.to_str().unwrap(),
                "--threads",
                threads,
                "--rejects",
                rejects.to_str().unwrap(),
                "--max-line-bytes",
                "65536",
            ])
            .args(files)
            .env("RUST_LOG", "graywatch=debug")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mapped = String::from_utf8_lossy(&out.stderr)
            .matches(" mapped")
            .count();
        (out.stdout, std::fs::read(&rejects).unwrap(), mapped)
    };
    let (one, one_rejects, _) = run("1");
    let (three, three_rejects, mapped) = run("3");
    assert_eq!(mapped, 0, "files written just now are read");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in files {
        let f = std::fs::File::options().append(true).open(f).unwrap();
        f.set_modified(hour_ago).unwrap();
    }
    let (old, old_rejects, mapped) = run("3");
    assert_eq!(mapped, 3, "files an hour old are mapped");
    assert!(one == old, "the outputs differ when the files are mapped");
    assert_eq!(one_rejects, old_rejects);
    let docs = crate::util::json_lines(&one);
    let found = of_kind(&docs, "finding");
    assert!(
        found.iter().any(|f| f["signature"] == "black-hole"),
        "the incident is found: {found:?}"
    );
    assert!(one == three, "the outputs differ");
    let rejected = crate::util::json_lines(&one_rejects);
    let bad: Vec<&serde_json::Value> = rejected.iter().filter(|r| r["reason"] != "late").collect();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(bad[0]["line"], 8899);
    assert_eq!(bad[1]["line"], 10_001);
    assert_eq!(bad[1]["reason"], "line-too-long");
    assert!(rejected.len() > 1, "late records are set aside too");
    assert_eq!(one_rejects, three_rejects);
}

/// `--threads` with windows of thousands of pairs, which are judged on one thread while their
/// pair windows are written on others: the same bytes as one thread, pair windows before the
/// node windows and findings of their window. 4,800 pairs (80 sources × 60 destinations) in
/// each of 3 windows, 3 of them crossing zones with 10 requests each (cross-zone findings).
#[test]
fn windows_of_thousands_of_pairs_are_written_as_one_thread_writes_them() {
    const T0: i64 = 1_767_614_400_000_000;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pairs.log");
    let mut text = String::new();
    for w in 0..3i64 {
        let mut t = T0 + w * 10_000_000;
        for s in 0..80 {
            for d in 0..60 {
                let crossing = s == 0 && d < 3;
                for _ in 0..if crossing { 10 } else { 1 } {
                    let zone = if crossing { "zone-b" } else { "zone-a" };
                    text.push_str(&format!(
                        "{{\"schema_version\":1,\"start_us\":{t},\"duration_us\":{},\
                         \"source\":\"src-{s:02}\",\"source_zone\":\"zone-a\",\
                         \"destination\":\"dst-{d:02}\",\"destination_zone\":\"{zone}\",\
                         \"status\":200,\"bytes_received\":300,\"bytes_sent\":4000,\
                         \"reporter\":\"envoy\"}}\n",
                        1000 + (s * 60 + d) * 7,
                    ));
                    t += 1_900;
                }
            }
        }
    }
    write(&log, &text);
    let run = |threads: &str| {
        let out = graywatch(&[
            "replay",
            "-f",
            "flow-json",
            "--threads",
            threads,
            log.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    let one = run("1");
    let two = run("2");
    let docs = crate::util::json_lines(&one);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    let first_window = &docs[..kinds.iter().position(|k| *k != "pair-window").unwrap()];
    assert_eq!(
        first_window.len(),
        4_800,
        "every pair of the first window first"
    );
    let found = of_kind(&docs, "finding");
    let crossing: Vec<&str> = found
        .iter()
        .filter(|f| f["signature"] == "cross-zone")
        .map(|f| f["subject"]["destination"].as_str().unwrap())
        .collect();
    assert!(
        crossing.contains(&"dst-00") && crossing.contains(&"dst-02"),
        "{found:?}"
    );
    assert!(one == two, "the outputs differ");
}

/// `replay --archive` then `query`: the archive holds what replay wrote as JSON lines, on a
/// simulated black hole.
#[test]
fn the_archive_holds_the_windows_and_findings_replay_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (log, map, node) = crate::util::simulated_black_hole(dir.path());
    let archive = dir.path().join("archive");
    let windows = dir.path().join("windows.jsonl");
    let findings = dir.path().join("findings.jsonl");
    let args = vec![
        "replay",
        "-c",
        map.to_str().unwrap(),
        "--windows",
        windows.to_str().unwrap(),
        "--findings",
        findings.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
        log.to_str().unwrap(),
    ];
    let (_, summary) = graywatch_ok(&args);
    assert!(summary.contains("archive "), "{summary}");
    let docs = crate::util::json_lines(&std::fs::read(&windows).unwrap());
    let pairs = of_kind(&docs, "pair-window");
    let worst = pairs
        .iter()
        .filter_map(|p| p["latency"]["p99_us"].as_u64())
        .max()
        .unwrap();
    let requests: u64 = pairs.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    let found = crate::util::json_lines(&std::fs::read(&findings).unwrap());
    assert!(
        found
            .iter()
            .any(|f| f["signature"] == "black-hole" && f["subject"]["node"] == node.as_str()),
        "the black hole on {node} is found: {found:?}"
    );
    let query = |sql: &str| {
        let out = graywatch(&[
            "query",
            "--archive",
            archive.to_str().unwrap(),
            "--format",
            "csv",
            sql,
        ]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        query("SELECT count(*) AS n, max(p99_us) AS worst, sum(requests) AS requests FROM pairs"),
        format!("n,worst,requests\n{},{worst},{requests}\n", pairs.len())
    );
    let subjects = query("SELECT DISTINCT subject FROM findings ORDER BY 1");
    let mut expected: Vec<String> = found
        .iter()
        .map(|f| {
            let id = f["id"].as_str().unwrap();
            // <signature>/<subject key>/<window start>, rule/<name>/… for a user rule's
            let skip = if id.starts_with("rule/") { 2 } else { 1 };
            let rest = id.splitn(skip + 1, '/').last().unwrap();
            rest.rsplit_once('/').unwrap().0.to_owned()
        })
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(subjects, format!("subject\n{}\n", expected.join("\n")));
    // a bad query names the problem and exits 1
    let out = graywatch(&[
        "query",
        "--archive",
        archive.to_str().unwrap(),
        "SELECT nope FROM pairs",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    // a reader that stops early (`| head -1`) ends the query quietly
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_graywatch"))
        .args([
            "query",
            "--archive",
            archive.to_str().unwrap(),
            "--format",
            "csv",
            "SELECT * FROM pairs",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("window_start,"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// `validate` names the deployments topic, and says when nothing would use it.
#[test]
fn validate_names_the_deployments_topic_and_whether_it_is_used() {
    let (_dir, config) = temp_path("run.toml");
    let kafka = "[kafka]\nbootstrap-servers = \"127.0.0.1:9092\"\ndeployments = \"deploys\"\n\
         [[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\"\n\
         [kafka.outputs]\nfindings = \"f\"\ncommands = \"c\"\nalerts = \"a\"\ndead-letters = \"d\"\n";
    let validate = |text: &str| {
        write(&config, text);
        let out = graywatch(&["validate", "-c", config.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stdout = validate(kafka);
    assert!(
        stdout.contains("reading logs (envoy); deployments from deploys\n"),
        "{stdout}"
    );
    let stdout = validate(&format!("{kafka}[detect.deploy]\nenabled = false\n"));
    assert!(
        stdout.contains("deployments from deploys (not used: [detect.deploy] enabled = false)"),
        "{stdout}"
    );
}
