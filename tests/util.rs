//! Helpers of the end-to-end tests: running the `graywatch` binary, reading its JSON lines,
//! and a generator of a synthetic landscape's Istio sidecar logs with an injected black hole.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub use crate::generator::*;

/// The workspace root (where `deploy/` and `Cargo.toml` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `deploy/examples/<rel>`: the real inputs bundled with the repository (origins and licences
/// in deploy/examples/README.md).
pub fn example_data(rel: &str) -> PathBuf {
    root().join("deploy/examples").join(rel)
}

/// Runs the built `graywatch` binary with `args`.
pub fn graywatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graywatch"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the graywatch binary runs")
}

/// Runs `graywatch` and fails the test with its stderr unless it exits 0.
pub fn graywatch_ok(args: &[&str]) -> (Vec<Value>, String) {
    let out = graywatch(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "graywatch {args:?} failed:\n{stderr}");
    (json_lines(&out.stdout), stderr)
}

/// Parses JSON lines, failing the test on a line that isn't JSON.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The documents of one `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// A path in a fresh temporary directory that lives as long as the returned guard.
pub fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    (dir, path)
}

/// Writes `text` to `path`.
pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write test input");
}

/// A simulated black hole (`graywatch simulate --scenario black-hole --seed 3`, 40 min at
/// scale 0.4) written under `dir` as one Envoy log: (the log, the mapping that names its pods,
/// the black-holed service as its truth file gives it).
pub fn simulated_black_hole(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (log, map, truth) = (
        dir.join("all.log"),
        dir.join("map.toml"),
        dir.join("truth.json"),
    );
    let out = graywatch(&[
        "simulate",
        "--scenario",
        "black-hole",
        "--seed",
        "3",
        "--duration",
        "40min",
        "--scale",
        "0.4",
        "--format",
        "envoy",
        "--mapping",
        map.to_str().unwrap(),
        "--truth",
        truth.to_str().unwrap(),
        "-o",
        log.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success(), "{out:?}");
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();
    let node = truth["incidents"][0]["subject"]["node"]
        .as_str()
        .expect("a black hole is about a node")
        .to_owned();
    (log, map, node)
}
