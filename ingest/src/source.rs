//! Reading inputs line by line into flow-record batches, with every rejected line counted.
//!
//! [`read_lines`] drives a [`LineParser`] over one input (a file, stdin, a Kafka partition's
//! payloads joined by newlines) and hands full batches, rejects and progress to an
//! [`IngestSink`]. Memory is bounded by `max_line_bytes` + one batch: a line longer than the
//! maximum is rejected (`line-too-long`) and its excess bytes are skipped without buffering.

use std::collections::BTreeMap;
use std::io::BufRead;

use arrow::array::RecordBatch;
use schemas::FlowBatchBuilder;

use crate::error::{Error, Reject, RejectReason, Result};

/// The UTF-8 encoding of U+FEFF, the byte order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A parser for one log format: turns one line into zero or more flow records.
///
/// The driver ([`read_lines`]) calls [`parse_line`](Self::parse_line) once per line, in input
/// order, then [`finish`](Self::finish) once after the last input. A parser never panics,
/// whatever the bytes.
pub trait LineParser: Send {
    /// Parses one line (without its `\n` or `\r\n`) and appends the records it yields to `out`.
    /// Returns how many it appended: usually 1; 0 for a header line or a span held back until
    /// its parent or child is seen.
    ///
    /// # Errors
    /// A [`Reject`] when the line cannot be read; nothing is appended then.
    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject>;

    /// End of all inputs: appends anything held back, returns how many records.
    fn finish(&mut self, _out: &mut FlowBatchBuilder) -> usize {
        0
    }

    /// Counters of this parser for the run's summary, e.g. `("spans without parent", 12)`.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Limits of [`read_lines`].
#[derive(Debug, Clone, Copy)]
pub struct ReaderOptions {
    /// Rows per emitted batch (default 8 192).
    pub batch_rows: usize,
    /// Longest accepted line, bytes (default 1 MiB); longer lines are rejected.
    pub max_line_bytes: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            batch_rows: 8192,
            max_line_bytes: 1 << 20,
        }
    }
}

/// A line that was rejected, with its position.
#[derive(Debug, Clone, Copy)]
pub struct RejectedLine<'a> {
    /// The input's name (path, or `-` for stdin).
    pub input: &'a str,
    /// 1-based line number in the input.
    pub line_no: u64,
    /// Why.
    pub reject: &'a Reject,
    /// The line's bytes (at most `max_line_bytes` of them).
    pub line: &'a [u8],
}

impl std::fmt::Display for RejectedLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.input, self.line_no, self.reject)
    }
}

/// Where [`read_lines`] delivers its output.
pub trait IngestSink {
    /// A full batch of flow records (or the last, partial one).
    ///
    /// # Errors
    /// Stops ingestion; the error is returned from [`read_lines`].
    fn batch(&mut self, batch: RecordBatch) -> Result<()>;
    /// A rejected line (already counted in [`IngestStats`]).
    ///
    /// # Errors
    /// Stops ingestion (e.g. the reject file can't be written).
    fn reject(&mut self, _rejected: &RejectedLine<'_>) -> Result<()> {
        Ok(())
    }
    /// Bytes of input consumed so far in this input, for progress indicators.
    fn progress(&mut self, _bytes: u64) {}

    /// `count` inputs will be read in turns (see [`read_some_lines`]); called once, first.
    fn inputs(&mut self, _count: usize) {}

    /// The batches and rejects that follow come from input `index` (0-based, in the order
    /// given); every batch holds rows of one input only.
    fn switch_input(&mut self, _index: usize) {}

    /// Input `index` has ended.
    ///
    /// # Errors
    /// Stops ingestion.
    fn end_input(&mut self, _index: usize) -> Result<()> {
        Ok(())
    }

    /// How far input `index` has got in event time (e.g. its newest start, µs), if the sink
    /// tracks it. A driver reading several inputs reads next from the one furthest behind
    /// (`None`: not started, first), which interleaves logs that cover the same time and
    /// reads rotated logs one after another. The default knows nothing: inputs are read in
    /// the order given.
    fn input_time(&self, _index: usize) -> Option<i64> {
        None
    }
}

/// What a run read: lines, records, blank lines and rejects per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Flow records produced.
    pub records: u64,
    /// Lines that were empty or only whitespace (no data; counted, not rejected).
    pub blank_lines: u64,
    /// Rejected lines per reason.
    pub rejects: BTreeMap<RejectReason, u64>,
}

impl IngestStats {
    /// Total rejected lines.
    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }
}

/// Reads `reader` line by line through `parser`, emitting batches of `opts.batch_rows` rows
/// to `sink`. The builder keeps rows across inputs; call [`finish`] after the last input.
///
/// # Errors
/// [`Error::Io`] naming `input` when reading fails; any error the sink returns.
pub fn read_lines<R: BufRead>(
    input: &str,
    mut reader: R,
    parser: &mut dyn LineParser,
    builder: &mut FlowBatchBuilder,
    opts: &ReaderOptions,
    stats: &mut IngestStats,
    sink: &mut dyn IngestSink,
) -> Result<()> {
    let mut position = Position::default();
    let done = read_some_lines(
        input,
        &mut reader,
        parser,
        builder,
        opts,
        stats,
        sink,
        &mut position,
        u64::MAX,
    )?;
    debug_assert!(done);
    Ok(())
}

/// Where a [`read_some_lines`] reader is in its input: lines and bytes read so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Lines read so far (the number of the last line read, 1-based).
    pub line_no: u64,
    /// Bytes read so far.
    pub bytes: u64,
}

/// Like [`read_lines`], but stops after `max_lines` lines, so that several inputs can be read
/// in turns (each chunk of lines comes from one input). `position` carries the line numbers
/// and byte count from one call to the next. Returns `true` at the end of the input.
///
/// # Errors
/// [`Error::Io`] naming `input` when reading fails; any error the sink returns.
#[allow(clippy::too_many_arguments)] // the driver's whole state, passed in rather than owned
pub fn read_some_lines<R: BufRead + ?Sized>(
    input: &str,
    reader: &mut R,
    parser: &mut dyn LineParser,
    builder: &mut FlowBatchBuilder,
    opts: &ReaderOptions,
    stats: &mut IngestStats,
    sink: &mut dyn IngestSink,
    position: &mut Position,
    max_lines: u64,
) -> Result<bool> {
    let io = |source| Error::Io {
        input: input.to_owned(),
        source,
    };
    let mut line: Vec<u8> = Vec::with_capacity(4096);
    let mut line_no = position.line_no;
    let mut consumed = position.bytes;
    let mut last_progress = consumed;
    let mut read = 0u64;
    let mut at_end = false;
    while read < max_lines {
        // Assemble one line, keeping at most max_line_bytes of it.
        line.clear();
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let buf = match reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            if buf.is_empty() {
                break;
            }
            saw_any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            let room = opts.max_line_bytes.saturating_sub(line.len());
            if chunk.len() > room {
                too_long = true;
            }
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            reader.consume(used);
            consumed += used as u64;
            if done {
                break;
            }
        }
        if !saw_any {
            at_end = true;
            break;
        }
        read += 1;
        line_no += 1;
        stats.lines += 1;
        if line_no == 1 && line.starts_with(UTF8_BOM) {
            line.drain(..UTF8_BOM.len());
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let outcome = if too_long {
            Err(Reject::new(
                RejectReason::LineTooLong,
                format!("line longer than {} bytes", opts.max_line_bytes),
            ))
        } else if line.iter().all(u8::is_ascii_whitespace) {
            stats.blank_lines += 1;
            Ok(0)
        } else {
            parser.parse_line(&line, builder)
        };
        match outcome {
            Ok(n) => stats.records += n as u64,
            Err(reject) => {
                *stats.rejects.entry(reject.reason).or_default() += 1;
                sink.reject(&RejectedLine {
                    input,
                    line_no,
                    reject: &reject,
                    line: &line,
                })?;
            }
        }
        if builder.len() >= opts.batch_rows {
            sink.batch(builder.finish())?;
        }
        if consumed - last_progress >= 1 << 20 {
            last_progress = consumed;
            sink.progress(consumed);
        }
    }
    stats.bytes += consumed - position.bytes;
    *position = Position {
        line_no,
        bytes: consumed,
    };
    sink.progress(consumed);
    Ok(at_end)
}

/// End of all inputs: lets the parser append what it held back and emits the last batch.
///
/// # Errors
/// Any error the sink returns.
pub fn finish(
    parser: &mut dyn LineParser,
    builder: &mut FlowBatchBuilder,
    stats: &mut IngestStats,
    sink: &mut dyn IngestSink,
) -> Result<()> {
    stats.records += parser.finish(builder) as u64;
    if !builder.is_empty() {
        sink.batch(builder.finish())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{FlowRecordRef, Reporter};

    /// Accepts lines that are a decimal start time, rejects anything else.
    struct Digits;
    impl LineParser for Digits {
        fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
            let s = std::str::from_utf8(line)
                .map_err(|_| Reject::new(RejectReason::InvalidUtf8, "not utf-8"))?;
            let t: i64 = s
                .parse()
                .map_err(|_| Reject::new(RejectReason::BadNumber, format!("{s:?}")))?;
            out.append(&FlowRecordRef::new(t, "a", "b", Reporter::Envoy));
            Ok(1)
        }
    }

    #[derive(Default)]
    struct Collect {
        rows: usize,
        batches: usize,
        rejects: Vec<String>,
    }
    impl IngestSink for Collect {
        fn batch(&mut self, batch: RecordBatch) -> Result<()> {
            self.rows += batch.num_rows();
            self.batches += 1;
            Ok(())
        }
        fn reject(&mut self, r: &RejectedLine<'_>) -> Result<()> {
            self.rejects.push(r.to_string());
            Ok(())
        }
    }

    #[test]
    fn counts_rejects_blank_lines_and_long_lines_with_positions() {
        let input = b"1\r\n2\n\nx7\n\xff\n".to_vec();
        let mut long = vec![b'9'; 100];
        long.push(b'\n');
        let data = [input, long, b"3".to_vec()].concat();
        let mut stats = IngestStats::default();
        let mut sink = Collect::default();
        let mut builder = FlowBatchBuilder::new();
        let opts = ReaderOptions {
            batch_rows: 2,
            max_line_bytes: 50,
        };
        read_lines(
            "t.log",
            &data[..],
            &mut Digits,
            &mut builder,
            &opts,
            &mut stats,
            &mut sink,
        )
        .unwrap();
        finish(&mut Digits, &mut builder, &mut stats, &mut sink).unwrap();
        assert_eq!(stats.lines, 7);
        assert_eq!(stats.records, 3);
        assert_eq!(stats.blank_lines, 1);
        assert_eq!(stats.rejected(), 3);
        assert_eq!(stats.rejects[&RejectReason::LineTooLong], 1);
        assert_eq!(sink.rows, 3);
        assert_eq!(sink.batches, 2);
        assert_eq!(
            sink.rejects,
            vec![
                "t.log:4: bad-number: \"x7\"",
                "t.log:5: invalid-utf8: not utf-8",
                "t.log:6: line-too-long: line longer than 50 bytes",
            ]
        );
        assert_eq!(stats.bytes, data.len() as u64);
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_dropped() {
        // Three lines: "1" after a BOM, "2", and "3" after a BOM that is not at the start.
        let data = b"\xEF\xBB\xBF1\n2\n\xEF\xBB\xBF3\n";
        let mut stats = IngestStats::default();
        let mut sink = Collect::default();
        let mut builder = FlowBatchBuilder::new();
        let opts = ReaderOptions::default();
        read_lines(
            "bom.log",
            &data[..],
            &mut Digits,
            &mut builder,
            &opts,
            &mut stats,
            &mut sink,
        )
        .unwrap();
        finish(&mut Digits, &mut builder, &mut stats, &mut sink).unwrap();
        assert_eq!(stats.records, 2);
        assert_eq!(sink.rejects, vec!["bom.log:3: bad-number: \"\\u{feff}3\""]);
        assert_eq!(stats.bytes, 12); // BOM 3 + "1\n" 2 + "2\n" 2 + BOM 3 + "3\n" 2

        // A BOM alone on the first line leaves a blank line.
        let mut stats = IngestStats::default();
        read_lines(
            "bom.log",
            &b"\xEF\xBB\xBF\r\n7"[..],
            &mut Digits,
            &mut builder,
            &opts,
            &mut stats,
            &mut sink,
        )
        .unwrap();
        assert_eq!((stats.lines, stats.blank_lines, stats.records), (2, 1, 1));
    }

    #[test]
    fn reading_in_chunks_continues_line_numbers_and_counts() {
        let data = b"1\n2\nx3\n4\n\ny6\n7".to_vec();
        let opts = ReaderOptions::default();
        let mut stats = IngestStats::default();
        let mut sink = Collect::default();
        let mut builder = FlowBatchBuilder::new();
        let mut reader = &data[..];
        let mut pos = Position::default();
        let mut calls = 0;
        while !read_some_lines(
            "t.log",
            &mut reader,
            &mut Digits,
            &mut builder,
            &opts,
            &mut stats,
            &mut sink,
            &mut pos,
            2,
        )
        .unwrap()
        {
            calls += 1;
        }
        finish(&mut Digits, &mut builder, &mut stats, &mut sink).unwrap();
        // 7 lines in chunks of 2: three calls read 2 lines each; the fourth reads the last line
        // and finds the end.
        assert_eq!(calls, 3);
        assert_eq!(
            pos,
            Position {
                line_no: 7,
                bytes: data.len() as u64
            }
        );
        assert_eq!((stats.lines, stats.records, stats.blank_lines), (7, 4, 1));
        assert_eq!(stats.bytes, data.len() as u64);
        assert_eq!(
            sink.rejects,
            vec!["t.log:3: bad-number: \"x3\"", "t.log:6: bad-number: \"y6\""]
        );
    }
}
