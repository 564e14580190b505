//! [`Outputs`] as JSON lines: stdout, or one file per document kind (what `replay` writes).

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;

use schemas::{
    Alert, AuditRecord, Finding, FlowRecord, NodeWindow, PairWindow, RemediationCommand, Window,
};
use serde::Serialize;

use super::{DeadLetter, Outputs, Payload, WindowTables};
use crate::archive::Archive;

/// Fewest pair windows of one closed window that [`JsonLines::write_pair_windows`] serializes
/// on several threads: below, a thread's start costs more than it saves.
const PARALLEL_PAIR_WINDOWS: usize = 4096;

/// Pair windows serialized per round by [`JsonLines::write_pair_windows`]'s threads (about
/// 5 MB of JSON: the buffers stay small whatever a window's size).
const PAIR_WINDOWS_BLOCK: usize = 8192;

/// Why JSON lines could not be written.
#[derive(Debug, thiserror::Error)]
pub enum JsonLinesError {
    /// Standard output was closed by its reader (`graywatch … | head`): the run ends quietly.
    #[error("stdout closed")]
    StdoutClosed,
    /// A file (or stdout) could not be written.
    #[error("writing {name}: {source}")]
    Io {
        /// The file's path, or `stdout`.
        name: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The Parquet archive (`--archive DIR`) could not be written.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
}

/// A JSON-lines destination: a file, or stdout.
pub struct JsonLines {
    name: String,
    is_stdout: bool,
    out: Box<dyn Write + Send>,
    /// The line being written: serde_json writes a document in many small pieces, which go
    /// to a `Vec` without a dynamic call each (measured by `benches/peers.sh`).
    line: Vec<u8>,
}

impl JsonLines {
    /// Writes to `path` (created, or truncated), or to stdout when `None` or `-`.
    ///
    /// # Errors
    /// [`JsonLinesError::Io`] when the file can't be created.
    pub fn open(path: Option<&Path>) -> Result<Self, JsonLinesError> {
        match path {
            Some(p) if p != Path::new("-") => {
                let f = File::create(p).map_err(|source| JsonLinesError::Io {
                    name: format!("{} (creating it)", p.display()),
                    source,
                })?;
                Ok(JsonLines {
                    name: p.display().to_string(),
                    is_stdout: false,
                    out: Box::new(BufWriter::with_capacity(1 << 16, f)),
                    line: Vec::new(),
                })
            }
            _ => Ok(JsonLines {
                name: "stdout".into(),
                is_stdout: true,
                out: Box::new(BufWriter::with_capacity(1 << 16, io::stdout())),
                line: Vec::new(),
            }),
        }
    }

    /// Writes one document as one line.
    ///
    /// # Errors
    /// [`JsonLinesError`]: stdout closed, or an I/O error naming the file.
    pub fn write<T: Serialize + ?Sized>(&mut self, doc: &T) -> Result<(), JsonLinesError> {
        self.write_line(|line| serde_json::to_writer(line, doc).map_err(io::Error::from))
    }

    /// Writes a pair window as one line: [`JsonLines::write`]'s bytes, written by
    /// [`schemas::window::json`] (window aggregates are most of a replay's output).
    ///
    /// # Errors
    /// As [`JsonLines::write`].
    pub fn write_pair_window(&mut self, w: &PairWindow) -> Result<(), JsonLinesError> {
        self.write_line(|line| {
            schemas::window::json::write_pair_window(line, w);
            Ok(())
        })
    }

    /// Writes pair windows, one line each, in order, as [`JsonLines::write_pair_window`]
    /// writes each: on `threads` threads when there are at least 4,096 of them, each
    /// serializing a contiguous share of blocks of 8,192 into a buffer of its own, written in
    /// order (the same bytes as one thread; a window's close at 100 k pairs otherwise writes
    /// its JSON on the judging thread alone).
    ///
    /// # Errors
    /// As [`JsonLines::write`].
    pub fn write_pair_windows(
        &mut self,
        ws: &[&PairWindow],
        threads: usize,
    ) -> Result<(), JsonLinesError> {
        if threads <= 1 || ws.len() < PARALLEL_PAIR_WINDOWS {
            return ws.iter().try_for_each(|w| self.write_pair_window(w));
        }
        let fill = |buffer: &mut Vec<u8>, part: &[&PairWindow]| {
            buffer.clear();
            for w in part {
                schemas::window::json::write_pair_window(buffer, w);
                buffer.push(b'\n');
            }
        };
        let mut buffers = vec![Vec::new(); threads];
        for block in ws.chunks(PAIR_WINDOWS_BLOCK) {
            let share = block.len().div_ceil(threads);
            let (first, others) = buffers.split_first_mut().expect("threads > 1");
            let mut parts = block.chunks(share);
            std::thread::scope(|scope| {
                let first_part = parts.next().unwrap_or_default();
                for (buffer, part) in others.iter_mut().zip(parts.by_ref()) {
                    scope.spawn(move || fill(buffer, part));
                }
                fill(first, first_part);
            });
            for buffer in &buffers[..block.len().div_ceil(share)] {
                let written = self.out.write_all(buffer);
                self.check(written)?;
            }
        }
        Ok(())
    }

    /// Writes a node window as one line, as [`JsonLines::write_pair_window`] does a pair window.
    ///
    /// # Errors
    /// As [`JsonLines::write`].
    pub fn write_node_window(&mut self, w: &NodeWindow) -> Result<(), JsonLinesError> {
        self.write_line(|line| {
            schemas::window::json::write_node_window(line, w);
            Ok(())
        })
    }

    /// Builds one line in the reused buffer with `fill`, then writes it whole (a document
    /// that fails to build leaves nothing behind).
    fn write_line(
        &mut self,
        fill: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
    ) -> Result<(), JsonLinesError> {
        self.line.clear();
        let written = fill(&mut self.line).and_then(|()| {
            self.line.push(b'\n');
            self.out.write_all(&self.line)
        });
        self.check(written)
    }

    /// Writes `bytes` as they are (text for a terminal).
    ///
    /// # Errors
    /// As [`JsonLines::write`].
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), JsonLinesError> {
        let written = self.out.write_all(bytes);
        self.check(written)
    }

    /// Flushes buffered lines.
    ///
    /// # Errors
    /// As [`JsonLines::write`].
    pub fn flush(&mut self) -> Result<(), JsonLinesError> {
        let flushed = self.out.flush();
        self.check(flushed)
    }

    fn check(&self, result: io::Result<()>) -> Result<(), JsonLinesError> {
        match result {
            Err(e) if self.is_stdout && e.kind() == io::ErrorKind::BrokenPipe => {
                Err(JsonLinesError::StdoutClosed)
            }
            Err(source) => Err(JsonLinesError::Io {
                name: self.name.clone(),
                source,
            }),
            Ok(()) => Ok(()),
        }
    }
}

/// A dead letter as a JSON line of the reject file: the line's text, or the record that could
/// not be aggregated.
#[derive(Serialize)]
struct DeadLetterDoc<'a> {
    kind: &'static str,
    input: &'a str,
    /// 1-based line number (files) or offset (Kafka).
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<i64>,
    reason: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<&'a FlowRecord>,
}

/// Where each kind of document goes: a file of its own, or stdout (`None`).
#[derive(Default)]
pub struct JsonLinesConfig<'a> {
    /// Pair and node windows (`None`: stdout).
    pub windows: Option<&'a Path>,
    /// Findings.
    pub findings: Option<&'a Path>,
    /// Remediation commands.
    pub commands: Option<&'a Path>,
    /// Alerts.
    pub alerts: Option<&'a Path>,
    /// Audit records of the actuator's decisions.
    pub audit: Option<&'a Path>,
    /// Dead letters (`None`: not written, only counted).
    pub rejects: Option<&'a Path>,
    /// Whether pair and node windows are written at all.
    pub write_windows: bool,
    /// A directory to archive closed windows and findings in, as Parquet ([`crate::archive`]).
    pub archive: Option<&'a Path>,
    /// Threads that may serialize a large window's pair windows
    /// ([`JsonLines::write_pair_windows`]); 1 keeps them on the calling thread.
    pub threads: usize,
    /// Every input is a regular file: no reader waits for a window as it closes, so files
    /// (and stdout, unless it is a terminal) are written when their buffers fill and at the
    /// end, not flushed at each window's close (a write call per window: 7 % of the judging
    /// thread's time on an NGINX log that closes a window every 20 lines).
    pub batch: bool,
}

/// [`Outputs`] writing JSON lines, each with its `kind` (`pair-window`, `node-window`,
/// `finding`, `remediation-command`, `alert`, `audit`): to stdout, or per kind to files; dead letters
/// to a reject file. Unless every input is a regular file ([`JsonLinesConfig::batch`]), lines
/// reach readers when a window closes, not when a buffer fills, so a reader of
/// `tail -f access.log | graywatch replay -` sees each window as it closes.
pub struct JsonLinesOutputs {
    stdout: JsonLines,
    windows: Option<JsonLines>,
    findings: Option<JsonLines>,
    commands: Option<JsonLines>,
    alerts: Option<JsonLines>,
    audit: Option<JsonLines>,
    rejects: Option<JsonLines>,
    write_windows: bool,
    /// See [`JsonLinesConfig::threads`].
    threads: usize,
    archive: Option<Archive>,
    /// Flushed at each window's close: all outputs, or (batch) only a terminal stdout.
    flush_all_at_close: bool,
    flush_stdout_at_close: bool,
}

impl JsonLinesOutputs {
    /// Opens (creates or truncates) every file `config` names.
    ///
    /// # Errors
    /// [`JsonLinesError::Io`] naming the file that can't be created.
    pub fn open(config: &JsonLinesConfig<'_>) -> Result<Self, JsonLinesError> {
        let open = |p: Option<&Path>| p.map(|p| JsonLines::open(Some(p))).transpose();
        Ok(JsonLinesOutputs {
            stdout: JsonLines::open(None)?,
            windows: open(config.windows)?,
            findings: open(config.findings)?,
            commands: open(config.commands)?,
            alerts: open(config.alerts)?,
            audit: open(config.audit)?,
            rejects: open(config.rejects)?,
            write_windows: config.write_windows,
            threads: config.threads.max(1),
            flush_all_at_close: !config.batch,
            flush_stdout_at_close: !config.batch || io::stdout().is_terminal(),
            archive: config
                .archive
                .map(|dir| Archive::open(dir, "replay"))
                .transpose()?,
        })
    }

    /// Completes the archive's files (their hour may not be over), and gives it back to say
    /// what it wrote. Call once, at the end.
    ///
    /// # Errors
    /// [`JsonLinesError::Archive`].
    pub fn close_archive(&mut self) -> Result<Option<&Archive>, JsonLinesError> {
        let Some(a) = &mut self.archive else {
            return Ok(None);
        };
        a.close()?;
        Ok(Some(a))
    }
}

impl Outputs for JsonLinesOutputs {
    type Error = JsonLinesError;

    fn pair_window(&mut self, w: &PairWindow) -> Result<(), JsonLinesError> {
        if !self.write_windows {
            return Ok(());
        }
        self.windows
            .as_mut()
            .unwrap_or(&mut self.stdout)
            .write_pair_window(w)
    }

    fn pair_windows(&mut self, ws: &[&PairWindow]) -> Result<(), JsonLinesError> {
        if !self.write_windows {
            return Ok(());
        }
        self.windows
            .as_mut()
            .unwrap_or(&mut self.stdout)
            .write_pair_windows(ws, self.threads)
    }

    fn node_window(&mut self, w: &NodeWindow) -> Result<(), JsonLinesError> {
        if !self.write_windows {
            return Ok(());
        }
        self.windows
            .as_mut()
            .unwrap_or(&mut self.stdout)
            .write_node_window(w)
    }

    fn wants_tables(&self) -> bool {
        self.archive.is_some()
    }

    fn writes_beside_judging(&self) -> bool {
        self.write_windows && self.threads > 1
    }

    fn window_tables(&mut self, t: &WindowTables) -> Result<(), JsonLinesError> {
        if let Some(a) = &mut self.archive {
            a.tables(t)?;
        }
        Ok(())
    }

    fn finding(&mut self, f: &Finding) -> Result<(), JsonLinesError> {
        if let Some(a) = &mut self.archive {
            a.finding(f);
        }
        self.findings.as_mut().unwrap_or(&mut self.stdout).write(f)
    }

    fn command(&mut self, c: &RemediationCommand) -> Result<(), JsonLinesError> {
        if let Some(a) = &mut self.archive {
            a.command(c);
        }
        self.commands.as_mut().unwrap_or(&mut self.stdout).write(c)
    }

    fn alert(&mut self, a: &Alert) -> Result<(), JsonLinesError> {
        if let Some(archive) = &mut self.archive {
            archive.alert(a);
        }
        self.alerts.as_mut().unwrap_or(&mut self.stdout).write(a)
    }

    fn audit(&mut self, a: &AuditRecord) -> Result<(), JsonLinesError> {
        if let Some(archive) = &mut self.archive {
            archive.audit(a);
        }
        self.audit.as_mut().unwrap_or(&mut self.stdout).write(a)
    }

    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), JsonLinesError> {
        let Some(out) = &mut self.rejects else {
            return Ok(());
        };
        let (text, record) = match d.payload {
            Payload::Bytes(b) => (Some(String::from_utf8_lossy(b).into_owned()), None),
            Payload::Record(r) => (None, Some(r)),
        };
        out.write(&DeadLetterDoc {
            kind: "dead-letter",
            input: d.input.as_str(),
            line: d.position,
            reason: d.reason,
            detail: d.detail,
            text,
            record,
        })
    }

    fn window_closed(&mut self, _window: Window) -> Result<(), JsonLinesError> {
        if let Some(a) = &mut self.archive {
            a.window_closed()?;
        }
        if self.flush_all_at_close {
            Outputs::flush(self)
        } else if self.flush_stdout_at_close {
            self.stdout.flush()
        } else {
            Ok(())
        }
    }

    fn idle(&mut self) -> Result<(), JsonLinesError> {
        if let Some(a) = &mut self.archive {
            a.commit()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), JsonLinesError> {
        for out in [
            Some(&mut self.stdout),
            self.windows.as_mut(),
            self.findings.as_mut(),
            self.commands.as_mut(),
            self.alerts.as_mut(),
            self.audit.as_mut(),
            self.rejects.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pair windows of one closed window, `n` pairs, each with its own counts.
    fn pair_windows(n: usize) -> Vec<PairWindow> {
        let one: PairWindow = serde_json::from_str(
            r#"{"schema_version":1,"kind":"pair-window","window":{"start_us":1767614400000000,"end_us":1767614410000000},"source":"src-000","destination":"dst-025","requests":1,"rate_rps":0.1,"errors":0,"error_ratio":0.0,"latency":{"p50_us":58407,"p90_us":58407,"p99_us":58407,"max_us":58407},"concurrency_mean":0.0058407,"concurrency_peak":1,"bytes_in":672,"bytes_out":2421,"bandwidth_in_bps":67.2,"bandwidth_out_bps":242.1}"#,
        )
        .unwrap();
        (0..n)
            .map(|i| PairWindow {
                source: format!("src-{:03}", i / 250),
                destination: format!("dst-{:03}", i % 250),
                requests: 1 + i as u64 % 7,
                bytes_in: 200 + i as u64,
                ..one.clone()
            })
            .collect()
    }

    /// What `write_pair_windows` writes with `threads` threads.
    fn written(ws: &[&PairWindow], threads: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("windows.jsonl");
        let mut out = JsonLines::open(Some(&path)).unwrap();
        out.write_pair_windows(ws, threads).unwrap();
        out.flush().unwrap();
        drop(out);
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn pair_windows_written_on_threads_are_those_one_thread_writes() {
        // two blocks and a part of a third, shared unevenly among 3 threads
        let ws = pair_windows(2 * PAIR_WINDOWS_BLOCK + 1001);
        let refs: Vec<&PairWindow> = ws.iter().collect();
        let one = written(&refs, 1);
        assert_eq!(one.lines().count(), ws.len());
        let line = one.lines().nth(PAIR_WINDOWS_BLOCK + 3).unwrap();
        assert!(
            line.contains(r#""source":"src-032","destination":"dst-195","requests":6,"#),
            "{line}"
        );
        for threads in [2, 3] {
            assert_eq!(written(&refs, threads), one, "{threads} threads");
        }
    }
}
