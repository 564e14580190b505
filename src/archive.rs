//! The archive: closed windows' tables and findings as Parquet files partitioned by hour, and
//! ad-hoc SQL over them ([`query`], `graywatch query`) with DataFusion, the engine of the SQL
//! rules.
//!
//! Layout under the archive directory, one file per table per hour of window start (UTC):
//!
//! ```text
//! DIR/pairs/date=2026-12-03/hour=14/part-1764770400000000.parquet
//! DIR/nodes/date=2026-12-03/hour=14/part-1764770400000000.parquet
//! DIR/breakdown/…
//! DIR/findings/…
//! ```
//!
//! `pairs`, `nodes` and `breakdown` are [`detect::tables`]' tables, baselines included (the
//! columns a SQL rule sees); `findings` is [`findings_schema`]. The number in a file's name
//! is the start (µs since the epoch) of its first window, so a second run over the same hour
//! writes beside the first instead of over it. A file is written as `.part-….parquet.tmp`
//! and renamed when its hour is over (or the archive is closed), so a reader never sees half
//! a file; an hour still being written is not visible yet, and a crash loses that hour's
//! file (the rest is whole). Row groups: one per window. Compression: zstd.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use schemas::{Finding, Subject};

use crate::pipeline::WindowTables;

/// The tables of the archive, by directory name.
pub const TABLES: [&str; 4] = ["pairs", "nodes", "breakdown", "findings"];

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
    /// The query failed (bad SQL, a table not in the archive, a type error).
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// The archive directory holds none of the tables.
    #[error(
        "{0}: no archive here (expected pairs/, nodes/, breakdown/ or findings/ with .parquet files, as `graywatch replay --archive DIR` writes them)"
    )]
    Empty(PathBuf),
}

static FINDINGS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
        s("id", false),
        s("signature", false),
        s("rule", true),
        s("severity", false),
        Field::new("score", DataType::Float64, false),
        s("confidence", false),
        s("subject_kind", false),
        s("subject", false),
        s("node", true),
        s("source", true),
        s("destination", true),
        s("version", true),
        s("summary", false),
        s("evidence", false),
        s("related", false),
    ]))
});

/// The `findings` table: one row per finding (a finding is written each window its
/// incident is open). Columns: `window_start`, `window_end` (`Timestamp(µs, "UTC")`), `id`,
/// `signature`, `rule` (user rules only), `severity`, `score` (0..1), `confidence`,
/// `subject_kind` (`node`, `pair`, `version`, `zone-pair`, `sources`, `landscape`),
/// `subject` (its key, as in finding ids), then the subject's parts where it has them: `node`
/// (a node, a version's service, the sources' destination), `source`, `destination`,
/// `version`; `summary`; `evidence` and `related` as JSON arrays.
pub fn findings_schema() -> SchemaRef {
    Arc::clone(&FINDINGS_SCHEMA)
}

/// The `findings` table of `findings`.
pub fn findings_table(findings: &[Finding]) -> RecordBatch {
    let n = findings.len();
    let mut start = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut text: [StringBuilder; 14] = std::array::from_fn(|_| StringBuilder::new());
    let mut score = Float64Builder::with_capacity(n);
    for f in findings {
        start.append_value(f.window.start_us);
        end.append_value(f.window.end_us);
        score.append_value(f.score);
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
        let values: [Option<String>; 14] = [
            Some(f.id.clone()),
            Some(f.signature.as_str().to_owned()),
            f.rule.clone(),
            Some(f.severity.as_str().to_owned()),
            Some(
                match f.confidence {
                    schemas::Confidence::Low => "low",
                    schemas::Confidence::Normal => "normal",
                }
                .to_owned(),
            ),
            Some(kind.to_owned()),
            Some(f.subject.key()),
            node.cloned(),
            source.cloned(),
            destination.cloned(),
            version.cloned(),
            Some(f.summary.clone()),
            Some(serde_json::to_string(&f.evidence).expect("plain data serializes")),
            Some(serde_json::to_string(&f.related).expect("plain data serializes")),
        ];
        for (b, v) in text.iter_mut().zip(values) {
            b.append_option(v);
        }
    }
    let [
        id,
        signature,
        rule,
        severity,
        confidence,
        kind,
        subject,
        node,
        source,
        destination,
        version,
        summary,
        evidence,
        related,
    ] = text.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    RecordBatch::try_new(
        findings_schema(),
        vec![
            Arc::new(start.finish()),
            Arc::new(end.finish()),
            id,
            signature,
            rule,
            severity,
            Arc::new(score.finish()),
            confidence,
            kind,
            subject,
            node,
            source,
            destination,
            version,
            summary,
            evidence,
            related,
        ],
    )
    .expect("columns follow the findings schema")
}

/// One table's file of the current hour.
struct HourFile {
    hour: i64,
    tmp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<File>,
}

/// Writes closed windows into an archive directory (see the [module docs](self)).
pub struct Archive {
    dir: PathBuf,
    open: BTreeMap<&'static str, HourFile>,
    findings: Vec<Finding>,
    window: Option<schemas::Window>,
    /// Files made whole so far.
    pub files: u64,
    /// Rows written so far, all tables.
    pub rows: u64,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("dir", &self.dir)
            .field("open", &self.open.keys().collect::<Vec<_>>())
            .field("files", &self.files)
            .field("rows", &self.rows)
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

impl Archive {
    /// An archive writing under `dir` (created if missing).
    ///
    /// # Errors
    /// [`ArchiveError::Io`] when `dir` cannot be created.
    pub fn create(dir: &Path) -> Result<Self, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(|source| ArchiveError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Archive {
            dir: dir.to_owned(),
            open: BTreeMap::new(),
            findings: Vec::new(),
            window: None,
            files: 0,
            rows: 0,
        })
    }

    /// A closed window's tables (its findings follow, then [`Archive::window_closed`]).
    ///
    /// # Errors
    /// Writing a table's file.
    pub fn tables(&mut self, t: &WindowTables) -> Result<(), ArchiveError> {
        self.window = Some(t.window);
        self.findings.clear();
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
        self.findings.push(f.clone());
    }

    /// The window is complete: its findings are written.
    ///
    /// # Errors
    /// Writing the findings' file.
    pub fn window_closed(&mut self) -> Result<(), ArchiveError> {
        if let Some(w) = self.window.take() {
            let batch = findings_table(&std::mem::take(&mut self.findings));
            self.write("findings", w.start_us, &batch)?;
        }
        Ok(())
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
            let name = format!("part-{window_start_us}.parquet");
            let tmp = dir.join(format!(".{name}.tmp"));
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
                HourFile {
                    hour,
                    tmp,
                    path: dir.join(name),
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
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Makes `table`'s file of the current hour whole (footer, rename).
    fn finish(&mut self, table: &str) -> Result<(), ArchiveError> {
        let Some(f) = self.open.remove(table) else {
            return Ok(());
        };
        f.writer.close().map_err(|source| ArchiveError::Parquet {
            path: f.tmp.clone(),
            source,
        })?;
        std::fs::rename(&f.tmp, &f.path).map_err(|source| ArchiveError::Io {
            path: f.path.clone(),
            source,
        })?;
        self.files += 1;
        Ok(())
    }

    /// Makes every open file whole (end of a replay, shutdown of a run).
    ///
    /// # Errors
    /// Writing a file's footer or renaming it.
    pub fn close(&mut self) -> Result<(), ArchiveError> {
        self.window_closed()?;
        for table in TABLES {
            self.finish(table)?;
        }
        Ok(())
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

/// Runs `sql` over the archive under `dir` (tables `pairs`, `nodes`, `breakdown`,
/// `findings`: those with files) and writes the result to `out`.
///
/// # Errors
/// [`ArchiveError::Empty`] when `dir` holds no table; [`ArchiveError::Query`] for SQL that
/// does not parse, plan or run; [`ArchiveError::Io`] writing `out`.
pub fn query(
    dir: &Path,
    sql: &str,
    format: QueryFormat,
    out: &mut dyn std::io::Write,
) -> Result<usize, ArchiveError> {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|source| ArchiveError::Io {
            path: dir.to_owned(),
            source,
        })?;
    let batches = runtime.block_on(async {
        let ctx = SessionContext::new();
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
        let df = ctx.sql(sql).await?;
        Ok(df.collect().await?)
    })?;
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

/// The schemas of [`TABLES`], in order.
fn schemas() -> [SchemaRef; 4] {
    [
        detect::tables::pair_schema(),
        detect::tables::node_schema(),
        detect::tables::breakdown_schema(),
        findings_schema(),
    ]
}

/// Whether `dir` holds a `.parquet` file, at any depth.
fn has_parquet(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_parquet(&p)
        } else {
            p.extension().is_some_and(|x| x == "parquet")
        }
    })
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
