use std::borrow::Cow;

use detect::store::BaselineStore;
use schemas::{Confidence, Latency, PairWindow, Severity, Signature, Window};

use super::*;

const HOUR: i64 = 3_600_000_000;
/// 2025-12-03T14:00:00Z, µs.
const T0: i64 = 1_764_770_400_000_000;

fn window(k: i64) -> Window {
    // 10-minute windows from T0
    let len = 600_000_000;
    Window {
        start_us: T0 + k * len,
        end_us: T0 + (k + 1) * len,
    }
}

fn pair(w: Window, source: &str, destination: &str, requests: u64, p99_us: u64) -> PairWindow {
    PairWindow {
        schema_version: 1,
        kind: Cow::Borrowed("pair-window"),
        window: w,
        source: source.into(),
        destination: destination.into(),
        requests,
        rate_rps: requests as f64 / 600.0,
        errors: 0,
        error_ratio: 0.0,
        latency: Some(Latency {
            p50_us: p99_us / 10,
            p90_us: p99_us / 2,
            p99_us,
            max_us: p99_us,
        }),
        concurrency_mean: 1.0,
        concurrency_peak: 2,
        bytes_in: 10,
        bytes_out: 20,
        bandwidth_in_bps: 0.1,
        bandwidth_out_bps: 0.2,
        breakdown: Vec::new(),
        breakdown_overflow: 0,
    }
}

fn tables(w: Window, pairs: &[PairWindow]) -> WindowTables {
    let store = BaselineStore::default();
    WindowTables {
        window: w,
        pairs: detect::tables::pair_table(pairs, &store),
        nodes: detect::tables::node_table(&[], &store),
        breakdown: detect::tables::breakdown_table(pairs),
    }
}

fn finding(w: Window, node: &str) -> Finding {
    Finding {
        schema_version: 1,
        kind: "finding".into(),
        id: format!("black-hole/node/{node}/{}", w.start_us),
        signature: Signature::BlackHole,
        subject: Subject::Node { node: node.into() },
        window: w,
        severity: Severity::Critical,
        evidence: Vec::new(),
        callers: Vec::new(),
        summary: format!("{node} takes requests and answers none, \"a black hole\""),
        score: 0.999,
        confidence: Confidence::Low,
        related: Vec::new(),
        rule: None,
    }
}

fn csv(dir: &Path, sql: &str) -> String {
    let mut out = Vec::new();
    query(dir, sql, QueryFormat::Csv, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The archive's `.parquet` files, relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                all.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    all.sort();
    all
}

#[test]
fn windows_are_archived_by_hour_and_queried_with_sql() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Archive::open(dir.path(), "replay").unwrap();
    // windows 0..=5 are 14:00–15:00, window 6 starts 15:00
    for k in 0..7 {
        let w = window(k);
        a.tables(&tables(
            w,
            &[
                pair(w, "web", "cart", 100 + k as u64, 20_000 + 1000 * k as u64),
                pair(w, "cart", "db", 50, 5_000),
            ],
        ))
        .unwrap();
        if k == 3 {
            a.finding(&finding(w, "db"));
        }
        a.window_closed().unwrap();
        if k == 5 {
            // the 14h files are whole only once the next hour starts
            assert!(files(dir.path()).iter().all(|f| f.ends_with(".tmp")));
        }
    }
    // 14h is done: its files are whole; 15h's are still being written
    let after_14h = files(dir.path());
    assert!(
        after_14h.contains(&format!(
            "pairs/date=2025-12-03/hour=14/part-{T0}-{}-replay.parquet",
            window(5).start_us
        )),
        "{after_14h:?}"
    );
    assert!(after_14h.contains(&format!(
        "findings/date=2025-12-03/hour=14/part-{0}-{0}-replay.parquet",
        window(3).start_us
    )));
    let fifteen = T0 + HOUR;
    assert!(after_14h.contains(&format!(
        "pairs/date=2025-12-03/hour=15/.part-{fifteen}-replay.parquet.tmp"
    )));
    // an hour being written is not read: 6 windows of 14h
    assert_eq!(
        csv(
            dir.path(),
            "SELECT count(*) AS n FROM pairs WHERE source = 'web'"
        ),
        "n\n6\n"
    );
    a.close().unwrap();
    assert!(files(dir.path()).iter().all(|f| !f.ends_with(".tmp")));
    assert_eq!(
        a.rows,
        7 * 2 + 1,
        "14 pairs (no breakdown, no node), one finding"
    );
    assert_eq!(
        csv(
            dir.path(),
            "SELECT source, destination, max(p99_us) AS worst_p99_us, sum(requests) AS requests \
             FROM pairs GROUP BY 1, 2 ORDER BY 3 DESC"
        ),
        "source,destination,worst_p99_us,requests\nweb,cart,26000,721\ncart,db,5000,350\n"
    );
    // findings keep their subject's parts, and text with quotes and commas is quoted
    assert_eq!(
        csv(
            dir.path(),
            "SELECT signature, subject_kind, node, window_start, confidence, summary FROM findings"
        ),
        "signature,subject_kind,node,window_start,confidence,summary\n\
         black-hole,node,db,2025-12-03T14:30:00Z,low,\"db takes requests and answers none, \"\"a black hole\"\"\"\n"
    );
}

#[test]
fn a_query_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let e = query(dir.path(), "SELECT 1", QueryFormat::Table, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, ArchiveError::Empty(_)), "{e}");
    let mut a = Archive::open(dir.path(), "replay").unwrap();
    let w = window(0);
    a.tables(&tables(w, &[pair(w, "web", "cart", 1, 1)]))
        .unwrap();
    a.close().unwrap();
    // no row: the header still names the columns
    assert_eq!(
        csv(
            dir.path(),
            "SELECT source, p99_us FROM pairs WHERE requests > 1000"
        ),
        "source,p99_us\n"
    );
    // no finding was archived: the table is empty, not unknown
    assert_eq!(
        csv(dir.path(), "SELECT count(*) AS n FROM findings"),
        "n\n0\n"
    );
    let e = query(
        dir.path(),
        "SELECT p99 FROM pairs",
        QueryFormat::Table,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("p99"), "{e}");
    let mut out = Vec::new();
    query(
        dir.path(),
        "SELECT source, p99_us FROM pairs",
        QueryFormat::Table,
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("| web    | 1      |"), "{text}");
}

fn commands() -> Vec<RemediationCommand> {
    include_str!("../../deploy/examples/commands.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn alert(w: Window, node: &str, action: schemas::AlertAction) -> Alert {
    Alert {
        schema_version: 1,
        kind: "alert".into(),
        action,
        dedup_key: format!("black-hole/node/{node}"),
        summary: format!("{node} is a black hole"),
        severity: Severity::Critical,
        at_us: w.end_us,
        finding: format!("black-hole/node/{node}/{}", w.start_us),
    }
}

/// One window through the archive as the pipeline sends it: tables, findings, then what was
/// done, then the close.
fn close(a: &mut Archive, k: i64, found: bool) {
    let w = window(k);
    a.tables(&tables(
        w,
        &[pair(w, "web", "cart", 100, 20_000 + k as u64)],
    ))
    .unwrap();
    if found {
        a.finding(&finding(w, "cart"));
    }
    a.window_closed().unwrap();
}

#[test]
fn a_run_that_restarts_from_its_checkpoint_archives_each_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Archive::open(dir.path(), "instance-7").unwrap();
    // windows 0 and 1, then a checkpoint: their files are complete
    close(&mut a, 0, false);
    close(&mut a, 1, true);
    a.commit().unwrap();
    // windows 2 and 3, then a crash before the next checkpoint
    close(&mut a, 2, true);
    close(&mut a, 3, false);
    let written = files(dir.path());
    assert_eq!(
        written,
        [
            format!(
                "findings/date=2025-12-03/hour=14/.part-{}-instance_7.parquet.tmp",
                window(2).start_us
            ),
            format!(
                "findings/date=2025-12-03/hour=14/part-{0}-{0}-instance_7.parquet",
                window(1).start_us
            ),
            format!(
                "pairs/date=2025-12-03/hour=14/.part-{}-instance_7.parquet.tmp",
                window(2).start_us
            ),
            format!(
                "pairs/date=2025-12-03/hour=14/part-{T0}-{}-instance_7.parquet",
                window(1).start_us
            ),
        ]
    );
    drop(a);
    // another writer's files are not its business
    let mut other = Archive::open(dir.path(), "replay").unwrap();
    assert_eq!(other.removed, 0);
    close(&mut other, 4, false);
    other.close().unwrap();

    // the restart removes the crash's files, then the checkpoint (saved before the crash,
    // after window 0) makes windows 1–3 close again: 1 is archived, 2 and 3 are not
    let mut a = Archive::open(dir.path(), "instance-7").unwrap();
    assert_eq!(a.removed, 2, "the two .tmp files");
    for k in 1..=3 {
        close(&mut a, k, k != 3);
    }
    a.close().unwrap();
    assert_eq!(a.skipped, 1);
    assert_eq!(
        csv(
            dir.path(),
            "SELECT count(*) AS n, count(DISTINCT window_start) AS windows, sum(requests) AS r \
             FROM pairs"
        ),
        "n,windows,r\n5,5,500\n",
        "windows 0–4, each once"
    );
    assert_eq!(
        csv(
            dir.path(),
            "SELECT window_start FROM findings ORDER BY window_start"
        ),
        "window_start\n2025-12-03T14:10:00Z\n2025-12-03T14:20:00Z\n"
    );
    assert!(files(dir.path()).iter().all(|f| !f.ends_with(".tmp")));
}

#[test]
fn commands_alerts_and_audit_are_archived_with_the_window_that_sent_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Archive::open(dir.path(), "replay").unwrap();
    let sent = commands();
    let w0 = window(0);
    a.tables(&tables(w0, &[pair(w0, "web", "cart", 1, 1)]))
        .unwrap();
    a.finding(&finding(w0, "cart"));
    a.command(&sent[0]);
    a.alert(&alert(w0, "cart", schemas::AlertAction::Trigger));
    a.window_closed().unwrap();
    // between windows (an expiry while inputs are idle): written with the next window
    a.command(&sent[1]);
    let w1 = window(1);
    a.tables(&tables(w1, &[pair(w1, "web", "cart", 1, 1)]))
        .unwrap();
    a.alert(&alert(w1, "cart", schemas::AlertAction::Resolve));
    a.window_closed().unwrap();
    // after the last window: written with it at close
    a.command(&sent[2]);
    a.close().unwrap();
    let c = &sent[0];
    assert_eq!(
        csv(
            dir.path(),
            &format!(
                "SELECT window_start, action, pattern, mode, revision, incident, issued_at \
                 FROM commands WHERE id = '{}'",
                c.id
            )
        ),
        format!(
            "window_start,action,pattern,mode,revision,incident,issued_at\n\
             2025-12-03T14:00:00Z,issue,backpressure,enforce,0,{},2026-12-04T00:00:00Z\n",
            c.reason.incident
        )
    );
    assert_eq!(
        csv(
            dir.path(),
            "SELECT window_start, count(*) AS n FROM commands GROUP BY 1 ORDER BY 1"
        ),
        "window_start,n\n2025-12-03T14:00:00Z,1\n2025-12-03T14:10:00Z,2\n"
    );
    // the json column is the whole document
    let json = csv(
        dir.path(),
        &format!("SELECT json FROM commands WHERE id = '{}'", sent[2].id),
    );
    let json = json.lines().nth(1).unwrap();
    let json = json.trim_matches('"').replace("\"\"", "\"");
    let back: RemediationCommand = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, &sent[2]);
    assert_eq!(
        csv(
            dir.path(),
            "SELECT window_start, action, dedup_key FROM alerts ORDER BY at"
        ),
        "window_start,action,dedup_key\n\
         2025-12-03T14:00:00Z,trigger,black-hole/node/cart\n\
         2025-12-03T14:10:00Z,resolve,black-hole/node/cart\n"
    );
}

#[test]
fn a_query_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Archive::open(dir.path(), "replay").unwrap();
    close(&mut a, 0, false);
    a.close().unwrap();
    let out = dir.path().join("copy");
    for sql in [
        format!("COPY pairs TO '{}'", out.display()),
        "CREATE TABLE t AS SELECT 1".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
    ] {
        let e = query(dir.path(), &sql, QueryFormat::Csv, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, ArchiveError::Query(_)), "{sql}: {e}");
    }
    assert!(!out.exists());
}
