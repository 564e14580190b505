//! Where JSON lines go: stdout, or one file per document kind.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// Standard output was closed by its reader (`graywatch … | head`): the run ends quietly.
/// Any other output that fails is an error.
#[derive(Debug, thiserror::Error)]
#[error("stdout closed")]
pub struct StdoutClosed;

/// A JSON-lines destination.
pub struct JsonLines {
    name: String,
    is_stdout: bool,
    out: Box<dyn Write>,
}

impl JsonLines {
    /// Writes to `path`, or to stdout when `None` or `-`.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            Some(p) if p != Path::new("-") => {
                let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
                Ok(JsonLines {
                    name: p.display().to_string(),
                    is_stdout: false,
                    out: Box::new(BufWriter::with_capacity(1 << 16, f)),
                })
            }
            _ => Ok(JsonLines {
                name: "stdout".into(),
                is_stdout: true,
                out: Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
            }),
        }
    }

    /// Writes one document as one line.
    pub fn write<T: Serialize>(&mut self, doc: &T) -> anyhow::Result<()> {
        let written = serde_json::to_writer(&mut self.out, doc)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        self.check(written)
    }

    /// Flushes buffered lines.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        let flushed = self.out.flush();
        self.check(flushed)
    }

    fn check(&self, result: io::Result<()>) -> anyhow::Result<()> {
        match result {
            Err(e) if self.is_stdout && e.kind() == io::ErrorKind::BrokenPipe => {
                Err(StdoutClosed.into())
            }
            r => r.with_context(|| format!("writing {}", self.name)),
        }
    }
}

/// Opens `path` for JSON lines when given, else shares `default`.
pub fn open_or(path: &Option<PathBuf>) -> anyhow::Result<Option<JsonLines>> {
    path.as_deref()
        .map(|p| JsonLines::open(Some(p)))
        .transpose()
}

/// The first error of a stage downstream of ingest, kept whole: `ingest::read_lines` only
/// carries its text (`ingest::Error::Downstream`), and the run should end with the real one
/// (e.g. [`StdoutClosed`], which ends it quietly).
#[derive(Default)]
pub struct FirstFailure(Option<anyhow::Error>);

impl FirstFailure {
    /// Keeps `e` if it is the first, and returns the error that stops ingestion.
    pub fn keep(&mut self, e: anyhow::Error) -> ingest::Error {
        let text = format!("{e:#}");
        self.0.get_or_insert(e);
        ingest::Error::Downstream(text)
    }

    /// The kept error, or `e` when there is none.
    pub fn or(&mut self, e: anyhow::Error) -> anyhow::Error {
        self.0.take().unwrap_or(e)
    }
}
