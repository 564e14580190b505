//! The archive: closed windows' tables, findings and what was done about them as Parquet
//! files partitioned by hour, and ad-hoc SQL over them ([`query`], `graywatch query`) with
//! DataFusion, the engine of the SQL rules.
//!
//! Layout under the archive directory, files per table per hour of window start (UTC):
//!
//! ```text
//! DIR/pairs/date=2026-12-03/hour=14/part-<first>-<last>-<writer>.parquet
//! DIR/nodes/…  DIR/breakdown/…  DIR/findings/…  DIR/commands/…  DIR/alerts/…  DIR/audit/…
//! ```
//!
//! `pairs`, `nodes` and `breakdown` are [`detect::tables`]' tables, baselines included (the
//! columns a SQL rule sees); `findings`, `commands`, `alerts` and `audit` are
//! [`findings_schema`], [`commands_schema`], [`alerts_schema`] and [`audit_schema`], each row
//! with the whole document as JSON beside its columns. `<first>` and `<last>` are the starts
//! (µs since the epoch) of the file's first and last windows; `<writer>` names who wrote it
//! (`replay`, or a `run` instance's id).
//!
//! **Whole files only.** A file is written as `.part-<first>-<writer>.parquet.tmp` and
//! renamed when it is complete, so a reader never sees half a file: `replay` completes a
//! file when its hour is over, when every input has gone idle (a followed stream's windows
//! become queryable while it is quiet) or the replay ends; `run` completes its files at every
//! checkpoint, before the checkpoint is saved (as a two-phase-commit file sink does), so the
//! archive holds exactly the windows the checkpoint has closed. A crash leaves `.tmp` files,
//! which the writer removes when it starts again; their windows are closed again from the
//! checkpoint's offsets.
//!
//! **No window twice.** When it opens, a writer reads the window ranges of its own files;
//! a window that starts inside one of them is not written again (counted as
//! [`Archive::skipped`]): a `run` that crashed after completing its files but before saving
//! its checkpoint closes those windows again, and a `replay` run twice into one directory
//! archives its windows once. Row groups: one per window. Compression: zstd.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use schemas::{Alert, AuditRecord, Finding, RemediationCommand, Subject, Window};

use crate::pipeline::WindowTables;

/// The tables of the archive, by directory name.
pub const TABLES: [&str; 7] = [
    "pairs",
    "nodes",
    "breakdown",
    "findings",
    "commands",
    "alerts",
    "audit",
];

/// What can go wrong writing or querying the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file or directory of the archive could not be written or read.
    #[error("archive {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Parquet could not encode a table.
    #[error("archive {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        source: datafusion::parquet::errors::ParquetError,
    },
    /// The query failed (bad SQL, a table not in the archive, a type error, a statement
    /// that would write).
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// A row of a documents table does not hold the document its table says.
    #[error("archive {path}: a row's json is not a {kind}: {source}")]
    Document {
        /// The table.
        path: PathBuf,
        /// The document kind expected.
        kind: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// The archive directory holds none of the tables.
    #[error(
        "{0}: no archive here (expected pairs/, nodes/, findings/… with .parquet files, as `graywatch replay --archive DIR` or `run`'s [archive] write them)"
    )]
    Empty(PathBuf),
}

/// One value of a row being built into a table (see [`table`]).
enum Cell {
    /// `Timestamp(µs, "UTC")`.
    Ts(i64),
    /// `Utf8`, null when `None`.
    Text(Option<String>),
    /// `Float64`.
    F64(f64),
    /// `Int64`.
    I64(i64),
}

fn text(s: impl Into<String>) -> Cell {
    Cell::Text(Some(s.into()))
}

/// An enum's JSON name (`"issue"`, `"trigger"`): the form the documents use.
fn name<T: serde::Serialize>(t: &T) -> Cell {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => Cell::Text(Some(s)),
        other => Cell::Text(other.ok().map(|v| v.to_string())),
    }
}

fn json<T: serde::Serialize>(t: &T) -> Cell {
    text(serde_json::to_string(t).expect("plain data serializes"))
}

/// `rows` as a batch of `schema` (cells in the schema's column order and types).
fn table(schema: &SchemaRef, rows: &[Vec<Cell>]) -> RecordBatch {
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| -> ArrayRef {
            let cells = rows.iter().map(|r| &r[i]);
            match f.data_type() {
                DataType::Timestamp(..) => {
                    let mut b =
                        TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
                    cells.for_each(|c| match c {
                        Cell::Ts(v) => b.append_value(*v),
                        _ => unreachable!("column {} is a timestamp", f.name()),
                    });
                    Arc::new(b.finish())
                }
                DataType::Utf8 => {
                    let mut b = StringBuilder::new();
                    cells.for_each(|c| match c {
                        Cell::Text(v) => b.append_option(v.as_deref()),
                        _ => unreachable!("column {} is text", f.name()),
                    });
                    Arc::new(b.finish())
                }
                DataType::Float64 => {
                    let mut b = Float64Builder::with_capacity(rows.len());
                    cells.for_each(|c| match c {
                        Cell::F64(v) => b.append_value(*v),
                        _ => unreachable!("column {} is a float", f.name()),
                    });
                    Arc::new(b.finish())
                }
                DataType::Int64 => {
                    let mut b = Int64Builder::with_capacity(rows.len());
                    cells.for_each(|c| match c {
                        Cell::I64(v) => b.append_value(*v),
                        _ => unreachable!("column {} is an integer", f.name()),
                    });
                    Arc::new(b.finish())
                }
                other => unreachable!("no {other} column in the archive's own tables"),
            }
        })
        .collect();
    RecordBatch::try_new(Arc::clone(schema), columns).expect("rows follow the schema")
}

fn schema(columns: &[(&str, DataType, bool)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
            .collect::<Vec<_>>(),
    ))
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static FINDINGS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = DataType::Utf8;
    schema(&[
        ("window_start", ts(), false),
        ("window_end", ts(), false),
        ("id", s.clone(), false),
        ("signature", s.clone(), false),
        ("rule", s.clone(), true),
        ("severity", s.clone(), false),
        ("score", DataType::Float64, false),
        ("confidence", s.clone(), false),
        ("subject_kind", s.clone(), false),
        ("subject", s.clone(), false),
        ("node", s.clone(), true),
        ("source", s.clone(), true),
        ("destination", s.clone(), true),
        ("version", s.clone(), true),
        ("summary", s.clone(), false),
        ("evidence", s.clone(), false),
        ("related", s.clone(), false),
        ("json", s, false),
    ])
});

static COMMANDS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = DataType::Utf8;
    schema(&[
        ("window_start", ts(), false),
        ("window_end", ts(), false),
        ("issued_at", ts(), false),
        ("expires_at", ts(), false),
        ("id", s.clone(), false),
        ("action", s.clone(), false),
        ("revision", DataType::Int64, false),
        ("pattern", s.clone(), false),
        ("mode", s.clone(), false),
        ("incident", s.clone(), false),
        ("json", s, false),
    ])
});

static ALERTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = DataType::Utf8;
    schema(&[
        ("window_start", ts(), false),
        ("window_end", ts(), false),
        ("at", ts(), false),
        ("action", s.clone(), false),
        ("dedup_key", s.clone(), false),
        ("severity", s.clone(), false),
        ("finding", s.clone(), false),
        ("summary", s.clone(), false),
        ("json", s, false),
    ])
});

static AUDIT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = DataType::Utf8;
    schema(&[
        ("window_start", ts(), false),
        ("window_end", ts(), false),
        ("at", ts(), false),
        ("decision", s.clone(), false),
        ("command", s.clone(), false),
        ("pattern", s.clone(), false),
        ("revision", DataType::Int64, false),
        ("rail", s.clone(), true),
        ("incident", s.clone(), false),
        ("detail", s.clone(), false),
        ("json", s, false),
    ])
});

/// The `findings` table: one row per finding (a finding is written each window its
/// incident is open). Columns: `window_start`, `window_end` (`Timestamp(µs, "UTC")`), `id`,
/// `signature`, `rule` (user rules only), `severity`, `score` (0..1), `confidence`,
/// `subject_kind` (`node`, `pair`, `version`, `zone-pair`, `sources`, `landscape`),
/// `subject` (its key, as in finding ids), then the subject's parts where it has them: `node`
/// (a node, a version's service, the sources' destination), `source`, `destination`,
/// `version`; `summary`; `evidence` and `related` as JSON arrays; `json`, the finding's
/// document (`schemas/json/finding.schema.json`).
pub fn findings_schema() -> SchemaRef {
    Arc::clone(&FINDINGS_SCHEMA)
}

/// The `commands` table: one row per command message (issue, renew, revoke). Columns:
/// `window_start`, `window_end` of the window whose close sent it (or, for an expiry
/// between windows, the next window), `issued_at`, `expires_at` (`Timestamp(µs, "UTC")`),
/// `id`, `action`, `revision`, `pattern`, `mode`, `incident` (the dedup key of the incident
/// behind it), `json` (`schemas/json/remediation-command.schema.json`).
pub fn commands_schema() -> SchemaRef {
    Arc::clone(&COMMANDS_SCHEMA)
}

/// The `alerts` table: one row per alert (trigger, resolve). Columns: `window_start`,
/// `window_end` (as in [`commands_schema`]), `at`, `action`, `dedup_key`, `severity`,
/// `finding`, `summary`, `json` (the alert's document).
pub fn alerts_schema() -> SchemaRef {
    Arc::clone(&ALERTS_SCHEMA)
}

/// The `audit` table: one row per decision of the actuator (issued, suppressed by a rail,
/// approved, revoked, expired). Columns: `window_start`, `window_end` (as in
/// [`commands_schema`]), `at`, `decision`, `command`, `pattern`, `revision`, `rail` (the
/// rail that suppressed it), `incident`, `detail`, `json` (the audit record's document).
pub fn audit_schema() -> SchemaRef {
    Arc::clone(&AUDIT_SCHEMA)
}

/// The `findings` table of `findings`.
pub fn findings_table(findings: &[Finding]) -> RecordBatch {
    let rows: Vec<Vec<Cell>> = findings
        .iter()
        .map(|f| {
            let (kind, node, source, destination, version) = match &f.subject {
                Subject::Node { node } => ("node", Some(node), None, None, None),
                Subject::Pair {
                    source,
                    destination,
                } => ("pair", None, Some(source), Some(destination), None),
                Subject::Version { service, version } => {
                    ("version", Some(service), None, None, Some(version))
                }
                Subject::ZonePair {
                    source,
                    destination,
                    ..
                } => ("zone-pair", None, Some(source), Some(destination), None),
                Subject::Sources { destination, .. } => {
                    ("sources", Some(destination), None, Some(destination), None)
                }
                Subject::Landscape => ("landscape", None, None, None, None),
            };
            vec![
                Cell::Ts(f.window.start_us),
                Cell::Ts(f.window.end_us),
                text(&f.id),
                text(f.signature.as_str()),
                Cell::Text(f.rule.clone()),
                text(f.severity.as_str()),
                Cell::F64(f.score),
                name(&f.confidence),
                text(kind),
                text(f.subject.key()),
                Cell::Text(node.cloned()),
                Cell::Text(source.cloned()),
                Cell::Text(destination.cloned()),
                Cell::Text(version.cloned()),
                text(&f.summary),
                json(&f.evidence),
                json(&f.related),
                json(f),
            ]
        })
        .collect();
    table(&FINDINGS_SCHEMA, &rows)
}

/// The `commands` table of the messages `commands` sent at the close of `w`.
pub fn commands_table(w: Window, commands: &[RemediationCommand]) -> RecordBatch {
    let rows: Vec<Vec<Cell>> = commands
        .iter()
        .map(|c| {
            vec![
                Cell::Ts(w.start_us),
                Cell::Ts(w.end_us),
                Cell::Ts(c.issued_at_us),
                Cell::Ts(c.expires_at_us),
                text(&c.id),
                text(c.action.as_str()),
                Cell::I64(c.revision.into()),
                text(c.pattern().as_str()),
                text(c.mode.as_str()),
                text(&c.reason.incident),
                json(c),
            ]
        })
        .collect();
    table(&COMMANDS_SCHEMA, &rows)
}

/// The `alerts` table of the alerts sent at the close of `w`.
pub fn alerts_table(w: Window, alerts: &[Alert]) -> RecordBatch {
    let rows: Vec<Vec<Cell>> = alerts
        .iter()
        .map(|a| {
            vec![
                Cell::Ts(w.start_us),
                Cell::Ts(w.end_us),
                Cell::Ts(a.at_us),
                name(&a.action),
                text(&a.dedup_key),
                text(a.severity.as_str()),
                text(&a.finding),
                text(&a.summary),
                json(a),
            ]
        })
        .collect();
    table(&ALERTS_SCHEMA, &rows)
}

/// The `audit` table of the actuator's decisions at the close of `w`.
pub fn audit_table(w: Window, audit: &[AuditRecord]) -> RecordBatch {
    let rows: Vec<Vec<Cell>> = audit
        .iter()
        .map(|a| {
            vec![
                Cell::Ts(w.start_us),
                Cell::Ts(w.end_us),
                Cell::Ts(a.at_us),
                text(a.decision.as_str()),
                text(&a.command),
                text(a.pattern.as_str()),
                Cell::I64(a.revision.into()),
                Cell::Text(a.rail.clone()),
                text(&a.reason.incident),
                text(&a.detail),
                json(a),
            ]
        })
        .collect();
    table(&AUDIT_SCHEMA, &rows)
}

/// One table's file being written.
struct OpenFile {
    /// Start of its hour, µs.
    hour: i64,
    /// Starts of its first and last windows, µs.
    first: i64,
    last: i64,
    /// Its partition directory.
    dir: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
}

/// What happened to the windows of one window close, kept until it is written.
#[derive(Default)]
struct Pending {
    findings: Vec<Finding>,
    commands: Vec<RemediationCommand>,
    alerts: Vec<Alert>,
    audit: Vec<AuditRecord>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.findings.is_empty()
            && self.commands.is_empty()
            && self.alerts.is_empty()
            && self.audit.is_empty()
    }
}

/// Writes closed windows into an archive directory (see the [module docs](self)).
///
/// Per window close, in this order: [`Archive::tables`], then the window's findings,
/// commands, alerts and audit records, then [`Archive::window_closed`]. Records that come
/// between two windows (a command expiring while inputs are idle) are written with the next
/// window. [`Archive::commit`] completes the files written so far.
pub struct Archive {
    dir: PathBuf,
    writer: String,
    open: BTreeMap<&'static str, OpenFile>,
    /// Window ranges (first start, last start, µs) of this writer's complete files.
    covered: Vec<(i64, i64)>,
    pending: Pending,
    /// The window being closed, and whether it is archived already.
    window: Option<(Window, bool)>,
    /// The last window written.
    last: Option<Window>,
    /// Files completed so far.
    pub files: u64,
    /// Rows written so far, all tables.
    pub rows: u64,
    /// Windows not written because this writer's files hold them already.
    pub skipped: u64,
    /// Incomplete files of this writer (a crash's) removed when it opened.
    pub removed: u64,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("dir", &self.dir)
            .field("writer", &self.writer)
            .field("open", &self.open.keys().collect::<Vec<_>>())
            .field("files", &self.files)
            .field("rows", &self.rows)
            .field("skipped", &self.skipped)
            .finish()
    }
}

const HOUR_US: i64 = 3_600_000_000;

/// `date=YYYY-MM-DD/hour=HH` of the hour starting at `hour` (µs since the epoch, UTC).
fn partition(hour: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(hour.max(0).unsigned_abs());
    // 2026-12-03T14:00:00Z
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("date={}/hour={}", &s[..10], &s[11..13])
}

/// What a file name of the archive says: `part-<first>-<last>-<writer>.parquet` (complete)
/// or `.part-<first>-<writer>.parquet.tmp` (being written, or left by a crash).
#[derive(Debug, PartialEq)]
enum FileName<'a> {
    Complete {
        first: i64,
        last: i64,
        writer: &'a str,
    },
    Incomplete {
        writer: &'a str,
    },
}

fn file_name(name: &str) -> Option<FileName<'_>> {
    if let Some(rest) = name
        .strip_prefix(".part-")
        .and_then(|n| n.strip_suffix(".parquet.tmp"))
    {
        let (_, writer) = rest.split_once('-')?;
        return Some(FileName::Incomplete { writer });
    }
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut parts = rest.splitn(3, '-');
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    Some(FileName::Complete {
        first,
        last,
        writer: parts.next()?,
    })
}

/// Every file under `dir`, at any depth.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, found);
        } else {
            found.push(p);
        }
    }
}

impl Archive {
    /// An archive writing under `dir` (created if missing) as `writer` (`replay`, or a
    /// `run` instance's id; characters other than ASCII letters, digits, `_` and `.` become
    /// `_`). Reads the window ranges of `writer`'s complete files, and removes its
    /// incomplete ones (left by a crash).
    ///
    /// # Errors
    /// [`ArchiveError::Io`] when `dir` cannot be created, or an incomplete file removed.
    pub fn open(dir: &Path, writer: &str) -> Result<Self, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(|source| ArchiveError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let writer: String = writer
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut files = Vec::new();
        for table in TABLES {
            walk(&dir.join(table), &mut files);
        }
        let mut covered = Vec::new();
        let mut removed = 0;
        for path in files {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            match file_name(name) {
                Some(FileName::Complete {
                    first,
                    last,
                    writer: w,
                }) if w == writer => {
                    covered.push((first, last));
                }
                Some(FileName::Incomplete { writer: w }) if w == writer => {
                    std::fs::remove_file(&path).map_err(|source| ArchiveError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    removed += 1;
                }
                _ => {}
            }
        }
        Ok(Archive {
            dir: dir.to_owned(),
            writer,
            open: BTreeMap::new(),
            covered,
            pending: Pending::default(),
            window: None,
            last: None,
            files: 0,
            rows: 0,
            skipped: 0,
            removed,
        })
    }

    /// Whether a window starting at `start_us` is in one of this writer's complete files.
    fn is_archived(&self, start_us: i64) -> bool {
        self.covered
            .iter()
            .any(|&(first, last)| first <= start_us && start_us <= last)
    }

    /// A closed window's tables (its findings, commands, alerts and audit records follow,
    /// then [`Archive::window_closed`]).
    ///
    /// # Errors
    /// Writing a table's file.
    pub fn tables(&mut self, t: &WindowTables) -> Result<(), ArchiveError> {
        let archived = self.is_archived(t.window.start_us);
        self.window = Some((t.window, archived));
        if archived {
            self.skipped += 1;
            return Ok(());
        }
        for (name, batch) in [
            ("pairs", &t.pairs),
            ("nodes", &t.nodes),
            ("breakdown", &t.breakdown),
        ] {
            self.write(name, t.window.start_us, batch)?;
        }
        Ok(())
    }

    /// A finding of the window being closed.
    pub fn finding(&mut self, f: &Finding) {
        self.pending.findings.push(f.clone());
    }

    /// A command message (issue, renew, revoke).
    pub fn command(&mut self, c: &RemediationCommand) {
        self.pending.commands.push(c.clone());
    }

    /// An alert (trigger, resolve).
    pub fn alert(&mut self, a: &Alert) {
        self.pending.alerts.push(a.clone());
    }

    /// An actuator decision.
    pub fn audit(&mut self, a: &AuditRecord) {
        self.pending.audit.push(a.clone());
    }

    /// The window is complete: what was found and done at its close is written.
    ///
    /// # Errors
    /// Writing a table's file.
    pub fn window_closed(&mut self) -> Result<(), ArchiveError> {
        let Some((w, archived)) = self.window.take() else {
            return Ok(()); // between windows: kept for the next
        };
        let pending = std::mem::take(&mut self.pending);
        if archived {
            return Ok(());
        }
        self.write_pending(w, &pending)?;
        self.last = Some(w);
        Ok(())
    }

    fn write_pending(&mut self, w: Window, p: &Pending) -> Result<(), ArchiveError> {
        self.write("findings", w.start_us, &findings_table(&p.findings))?;
        self.write("commands", w.start_us, &commands_table(w, &p.commands))?;
        self.write("alerts", w.start_us, &alerts_table(w, &p.alerts))?;
        self.write("audit", w.start_us, &audit_table(w, &p.audit))
    }

    fn write(
        &mut self,
        table: &'static str,
        window_start_us: i64,
        batch: &RecordBatch,
    ) -> Result<(), ArchiveError> {
        let hour = window_start_us.div_euclid(HOUR_US) * HOUR_US;
        if self.open.get(table).is_some_and(|f| f.hour != hour) {
            self.finish(table)?;
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if !self.open.contains_key(table) {
            let dir = self.dir.join(table).join(partition(hour));
            std::fs::create_dir_all(&dir).map_err(|source| ArchiveError::Io {
                path: dir.clone(),
                source,
            })?;
            let tmp = dir.join(format!(
                ".part-{window_start_us}-{}.parquet.tmp",
                self.writer
            ));
            let file = File::create(&tmp).map_err(|source| ArchiveError::Io {
                path: tmp.clone(),
                source,
            })?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let writer =
                ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|source| {
                    ArchiveError::Parquet {
                        path: tmp.clone(),
                        source,
                    }
                })?;
            self.open.insert(
                table,
                OpenFile {
                    hour,
                    first: window_start_us,
                    last: window_start_us,
                    dir,
                    tmp,
                    writer,
                },
            );
        }
        let f = self.open.get_mut(table).expect("opened above");
        let parquet = |source| ArchiveError::Parquet {
            path: f.tmp.clone(),
            source,
        };
        f.writer.write(batch).map_err(parquet)?;
        f.writer.flush().map_err(parquet)?; // a row group per window
        f.last = window_start_us;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Completes `table`'s open file (footer, rename).
    fn finish(&mut self, table: &str) -> Result<(), ArchiveError> {
        let Some(f) = self.open.remove(table) else {
            return Ok(());
        };
        f.writer.close().map_err(|source| ArchiveError::Parquet {
            path: f.tmp.clone(),
            source,
        })?;
        let path = f.dir.join(format!(
            "part-{}-{}-{}.parquet",
            f.first, f.last, self.writer
        ));
        std::fs::rename(&f.tmp, &path).map_err(|source| ArchiveError::Io { path, source })?;
        self.covered.push((f.first, f.last));
        self.files += 1;
        Ok(())
    }

    /// Completes every open file, so that readers see every window written so far (`run`
    /// calls it before saving a checkpoint). The next window starts new files.
    ///
    /// # Errors
    /// Writing a file's footer or renaming it.
    pub fn commit(&mut self) -> Result<(), ArchiveError> {
        for table in TABLES {
            self.finish(table)?;
        }
        Ok(())
    }

    /// Writes what came after the last window with it, and completes every file (end of a
    /// replay, shutdown of a run).
    ///
    /// # Errors
    /// Writing a file's footer or renaming it.
    pub fn close(&mut self) -> Result<(), ArchiveError> {
        self.window_closed()?;
        if !self.pending.is_empty()
            && let Some(w) = self.last
        {
            let pending = std::mem::take(&mut self.pending);
            self.write_pending(w, &pending)?;
        }
        self.commit()
    }
}

/// How [`query`] prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row (RFC 4180 quoting).
    Csv,
}

/// Runs `sql` over the archive under `dir` (tables [`TABLES`]; one no file holds is empty)
/// and writes the result to `out`; gives the number of rows.
///
/// # Errors
/// As [`select`]; [`ArchiveError::Io`] writing `out`.
pub fn query(
    dir: &Path,
    sql: &str,
    format: QueryFormat,
    out: &mut dyn std::io::Write,
) -> Result<usize, ArchiveError> {
    let (schema, mut batches) = select_with_schema(dir, sql)?;
    if batches.is_empty() {
        // no row: the header still says what the columns are
        batches.push(RecordBatch::new_empty(schema));
    }
    let io = |source| ArchiveError::Io {
        path: PathBuf::from("stdout"),
        source,
    };
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    match format {
        QueryFormat::Table => {
            let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .map_err(datafusion::error::DataFusionError::from)?;
            writeln!(out, "{table}").map_err(io)?;
        }
        QueryFormat::Csv => write_csv(&batches, out).map_err(io)?,
    }
    Ok(rows)
}

/// Runs `sql` over the archive under `dir` (tables [`TABLES`]; one no file holds is empty,
/// not unknown) and gives its result. Only queries: a statement that would write (`COPY`,
/// `CREATE`, `INSERT`) or change the session (`SET`) is refused.
///
/// # Errors
/// [`ArchiveError::Empty`] when `dir` holds no table; [`ArchiveError::Query`] for SQL that
/// does not parse, plan or run, or is not a query.
pub fn select(dir: &Path, sql: &str) -> Result<Vec<RecordBatch>, ArchiveError> {
    select_with_schema(dir, sql).map(|(_, batches)| batches)
}

/// [`select`], with the result's schema (known even when no row comes back).
fn select_with_schema(
    dir: &Path,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), ArchiveError> {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|source| ArchiveError::Io {
            path: dir.to_owned(),
            source,
        })?;
    runtime.block_on(async {
        // text as Utf8, the type the tables were written with (not DataFusion's default
        // Utf8View for Parquet)
        let config = datafusion::prelude::SessionConfig::new().set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        );
        let ctx = SessionContext::new_with_config(config);
        let mut any = false;
        let mut missing = Vec::new();
        for (table, schema) in TABLES.into_iter().zip(schemas()) {
            let path = dir.join(table);
            if !has_parquet(&path) {
                missing.push((table, schema));
                continue;
            }
            let url = format!("{}/", path.display());
            ctx.register_parquet(table, &url, ParquetReadOptions::default())
                .await?;
            any = true;
        }
        if !any {
            return Err(ArchiveError::Empty(dir.to_owned()));
        }
        // a table no window had a row of (no finding, no zone or version) is empty, not
        // unknown
        for (table, schema) in missing {
            let empty = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])?;
            ctx.register_table(table, std::sync::Arc::new(empty))?;
        }
        // a query reads: no COPY TO, CREATE EXTERNAL TABLE, INSERT or SET
        let read_only = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx.sql_with_options(sql, read_only).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        Ok((schema, df.collect().await?))
    })
}

/// The schemas of [`TABLES`], in order.
fn schemas() -> [SchemaRef; 7] {
    [
        detect::tables::pair_schema(),
        detect::tables::node_schema(),
        detect::tables::breakdown_schema(),
        findings_schema(),
        commands_schema(),
        alerts_schema(),
        audit_schema(),
    ]
}

/// Whether `dir` holds a `.parquet` file, at any depth.
fn has_parquet(dir: &Path) -> bool {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files
        .iter()
        .any(|p| p.extension().is_some_and(|x| x == "parquet"))
}

/// `batches` as CSV: a header row, then one row per record; a field with a comma, a quote
/// or a line break is quoted, quotes doubled (RFC 4180); nulls are empty.
fn write_csv(batches: &[RecordBatch], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    fn field(out: &mut dyn std::io::Write, s: &str) -> std::io::Result<()> {
        if s.contains([',', '"', '\n', '\r']) {
            write!(out, "\"{}\"", s.replace('"', "\"\""))
        } else {
            out.write_all(s.as_bytes())
        }
    }
    let Some(first) = batches.first() else {
        return Ok(());
    };
    for (i, f) in first.schema().fields().iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        field(out, f.name())?;
    }
    out.write_all(b"\n")?;
    let options = FormatOptions::default().with_null("");
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(std::io::Error::other)?;
        for row in 0..batch.num_rows() {
            for (i, f) in formatters.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                field(out, &f.value(row).to_string())?;
            }
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
