//! Golden cases: `tests/golden/<case>/{input.log, config.toml, expected.jsonl}` (see the
//! README there). Set `GRAYWATCH_BLESS=1` to rewrite the expectations.

use crate::util::{graywatch, root};

#[test]
fn golden_cases() {
    let dir = root().join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 3,
        "golden cases missing in {}",
        dir.display()
    );
    let bless = std::env::var_os("GRAYWATCH_BLESS").is_some();
    let mut failed = Vec::new();
    for case in &cases {
        let (config, input) = (case.join("config.toml"), case.join("input.log"));
        let out = graywatch(&[
            "replay",
            "-q",
            "--config",
            config.to_str().unwrap(),
            input.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", case.display());
        let got = String::from_utf8(out.stdout).unwrap();
        let expected_path = case.join("expected.jsonl");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if got != expected {
            let first = got
                .lines()
                .zip(expected.lines())
                .position(|(g, e)| g != e)
                .unwrap_or_else(|| got.lines().count().min(expected.lines().count()));
            failed.push(format!(
                "{}: line {} differs\n  got:      {}\n  expected: {}",
                case.display(),
                first + 1,
                got.lines().nth(first).unwrap_or("(end)"),
                expected.lines().nth(first).unwrap_or("(end)")
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
