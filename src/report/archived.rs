//! `graywatch report --archive DIR`: the page drawn from an archive ([`crate::archive`]) instead
//! of a replay. The archive's tables are read back window by window, in window order, and fed
//! to the [`Report`] as the pipeline fed it: the window's pair table, its findings, then the
//! commands, alerts and audit records its close sent.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use schemas::{Alert, AuditRecord, Finding, RemediationCommand, Window};
use serde::de::DeserializeOwned;

use super::Report;
use crate::archive::{ArchiveError, select};
use crate::pipeline::{Outputs, WindowTables};

/// What one window of the archive holds.
#[derive(Default)]
struct Archived {
    pairs: Vec<RecordBatch>,
    findings: Vec<Finding>,
    commands: Vec<RemediationCommand>,
    alerts: Vec<Alert>,
    audit: Vec<AuditRecord>,
}

/// Event-time bounds on the windows read: window starts in `[since, until)`, µs since the
/// epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    /// First window start read, µs.
    pub since_us: Option<i64>,
    /// Window starts at or after this are not read, µs.
    pub until_us: Option<i64>,
}

impl Range {
    /// The `WHERE` clause of this range on `window_start`.
    fn clause(self) -> String {
        let at = |us: i64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
            humantime::format_rfc3339_micros(t).to_string()
        };
        let mut parts = vec!["TRUE".to_owned()];
        if let Some(s) = self.since_us {
            parts.push(format!("window_start >= '{}'", at(s)));
        }
        if let Some(u) = self.until_us {
            parts.push(format!("window_start < '{}'", at(u)));
        }
        parts.join(" AND ")
    }
}

/// The window columns of `b`'s rows: `(window_start, window_end)` µs.
fn windows(b: &RecordBatch) -> impl Iterator<Item = Window> + '_ {
    let col = |name: &str| {
        b.column_by_name(name)
            .expect("archive tables have window columns")
            .as_primitive::<TimestampMicrosecondType>()
    };
    let (start, end) = (col("window_start"), col("window_end"));
    (0..b.num_rows()).map(move |i| Window {
        start_us: start.value(i),
        end_us: end.value(i),
    })
}

/// The documents of `table`'s `json` column with their windows, in `order`.
fn documents<T: DeserializeOwned>(
    dir: &Path,
    table: &str,
    kind: &'static str,
    range: Range,
    order: &str,
) -> Result<Vec<(Window, T)>, ArchiveError> {
    let batches = select(
        dir,
        &format!(
            "SELECT window_start, window_end, json FROM {table} WHERE {} ORDER BY {order}",
            range.clause()
        ),
    )?;
    let mut out = Vec::new();
    for b in &batches {
        let json = b.column(2).as_string::<i32>();
        for (i, w) in windows(b).enumerate() {
            let doc =
                serde_json::from_str(json.value(i)).map_err(|source| ArchiveError::Document {
                    path: dir.join(table),
                    kind,
                    source,
                })?;
            out.push((w, doc));
        }
    }
    Ok(out)
}

/// Reads the archive under `dir` (windows starting in `range`) into `report`; gives the
/// number of pair rows read.
///
/// # Errors
/// [`ArchiveError::Empty`] when `dir` is no archive; [`ArchiveError::Query`] when a table
/// can't be read; [`ArchiveError::Document`] when a row's `json` is not its table's
/// document.
pub fn read(dir: &Path, range: Range, report: &mut Report) -> anyhow::Result<u64> {
    let mut by_window: BTreeMap<(i64, i64), Archived> = BTreeMap::new();
    let mut rows = 0;
    let pairs = select(
        dir,
        &format!(
            "SELECT * FROM pairs WHERE {} ORDER BY window_start, source, destination",
            range.clause()
        ),
    )?;
    for b in &pairs {
        rows += b.num_rows() as u64;
        // rows come in window order: each run of one window is a slice
        let ws: Vec<Window> = windows(b).collect();
        let mut from = 0;
        for i in 1..=ws.len() {
            if i == ws.len() || ws[i] != ws[from] {
                by_window
                    .entry((ws[from].start_us, ws[from].end_us))
                    .or_default()
                    .pairs
                    .push(b.slice(from, i - from));
                from = i;
            }
        }
    }
    let key = |w: Window| (w.start_us, w.end_us);
    for (w, f) in documents(dir, "findings", "finding", range, "window_start, id")? {
        by_window.entry(key(w)).or_default().findings.push(f);
    }
    let order = "window_start, issued_at, id, revision";
    for (w, c) in documents(dir, "commands", "remediation command", range, order)? {
        by_window.entry(key(w)).or_default().commands.push(c);
    }
    for (w, a) in documents(dir, "alerts", "alert", range, "window_start, at")? {
        by_window.entry(key(w)).or_default().alerts.push(a);
    }
    let order = "window_start, at, command, revision";
    for (w, a) in documents(dir, "audit", "audit record", range, order)? {
        by_window.entry(key(w)).or_default().audit.push(a);
    }
    let empty = |schema| RecordBatch::new_empty(schema);
    for ((start_us, end_us), w) in by_window {
        let window = Window { start_us, end_us };
        let schema = detect::tables::pair_schema();
        let pairs = match w.pairs.as_slice() {
            [one] => one.clone(),
            [] => empty(schema),
            many => arrow::compute::concat_batches(&many[0].schema(), many)
                .map_err(datafusion::error::DataFusionError::from)?,
        };
        report.window_tables(&WindowTables {
            window,
            pairs,
            nodes: empty(detect::tables::node_schema()),
            breakdown: empty(detect::tables::breakdown_schema()),
        })?;
        for f in &w.findings {
            report.finding(f)?;
        }
        for c in &w.commands {
            report.command(c)?;
        }
        for a in &w.alerts {
            report.alert(a)?;
        }
        for a in &w.audit {
            report.audit(a)?;
        }
        report.window_closed(window)?;
    }
    Ok(rows)
}
