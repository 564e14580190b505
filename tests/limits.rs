//! Limits: what a hostile input or config can't make graywatch spend without bound.

use crate::util::{graywatch, graywatch_ok, temp_path, write};

/// The first line of the bundled Istio sidecar log (deploy/examples/logs, see
/// deploy/examples/README.md) with its request id replaced by `id`.
fn istio_line(id: &str) -> String {
    let path = crate::util::example_data("logs/integrations_istio_test-access-logs.log");
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().next().unwrap();
    line.replace("785918d6-06b6-9312-bf77-6d9bd968dc21", id) + "\n"
}

/// Request ids longer than 256 bytes are dropped from their records, which are kept; the
/// summary says how many.
#[test]
fn long_request_ids_are_dropped_and_counted_in_the_summary() {
    let (_dir, log) = temp_path("istio.log");
    let long = "x".repeat(250_000);
    let mut text = String::new();
    for i in 0..40 {
        text += &istio_line(if i % 4 == 0 { &long } else { "short-id" });
    }
    write(&log, &text);
    let (docs, stderr) = graywatch_ok(&["replay", "--no-windows", log.to_str().unwrap()]);
    assert!(docs.is_empty(), "{docs:?}");
    assert!(stderr.contains("records   40\n"), "{stderr}");
    assert!(
        stderr.contains(
            "dropped   10 request ids longer than 256 bytes, 0 upstream addresses longer than \
             512 bytes (the records kept, without them)"
        ),
        "{stderr}"
    );
    // `parse` prints the records without the long ids
    let (records, _) = graywatch_ok(&["parse", "--format", "istio", log.to_str().unwrap()]);
    assert_eq!(records.len(), 40);
    assert!(records[0]["request_id"].is_null());
    assert_eq!(records[1]["request_id"], "short-id");
}

/// A config `validate` accepts must run: 1 µs windows would eat memory until killed, so they
/// are refused, naming the key and the reason.
#[test]
fn windows_shorter_than_a_second_are_refused_by_validate() {
    let (_dir, config) = temp_path("tiny.toml");
    write(
        &config,
        "[detect.window]\nlength = \"1us\"\nconcurrency-resolution = \"1us\"\n",
    );
    let out = graywatch(&["validate", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("window.length: 1µs is shorter than 1s"),
        "{stderr}"
    );
}
