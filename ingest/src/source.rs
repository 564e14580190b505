//! Reading inputs line by line into flow-record batches, with every rejected line counted.
//!
//! A [`LineReader`] drives a [`LineParser`] over one input (a file, stdin) and hands batches,
//! rejects and progress to an [`IngestSink`]; [`read_lines`] reads one input whole. Memory is
//! bounded by `max_line_bytes` + one batch: a line longer than the maximum is rejected
//! (`line-too-long`) and its excess bytes are skipped without buffering, and a batch is handed
//! on at `batch_rows` rows or `batch_bytes` bytes, whichever comes first, so long values can't
//! grow one batch past about `batch_bytes` + the records of one line. Request ids and upstream
//! addresses longer than their caps are dropped from their records and counted
//! ([`IngestStats::dropped_values`], see [`schemas::flow::capped`]).

use std::collections::BTreeMap;
use std::io::BufRead;

use arrow::array::RecordBatch;
use schemas::{DroppedValues, FlowBatchBuilder};

use crate::error::{Reject, RejectReason};

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

    /// The service mapping this parser consults, so that a driver can name the writer of the
    /// lines that follow (from a shipper's envelope or a Kafka header) with
    /// [`crate::Mapping::set_own`]. `None` for a parser that maps nothing (records that name both
    /// ends, test parsers).
    fn mapping_mut(&mut self) -> Option<&mut crate::Mapping> {
        None
    }
}

/// Limits of [`read_lines`].
#[derive(Debug, Clone, Copy)]
pub struct ReaderOptions {
    /// Most rows per emitted batch (default 8 192).
    pub batch_rows: usize,
    /// A batch is emitted once it holds this many bytes ([`FlowBatchBuilder::bytes`]), even
    /// with fewer than `batch_rows` rows (default [`DEFAULT_BATCH_BYTES`], 8 MiB).
    pub batch_bytes: usize,
    /// Longest accepted line, bytes (default 1 MiB); longer lines are rejected.
    pub max_line_bytes: usize,
    /// A [`LineReader::read`] call returns once it has read this many bytes (after a whole
    /// line), even before its number of lines (default [`DEFAULT_TURN_BYTES`], 32 MiB): a
    /// driver's turn on an input of long lines stays bounded.
    pub turn_bytes: usize,
}

/// Default [`ReaderOptions::turn_bytes`], 32 MiB.
pub const DEFAULT_TURN_BYTES: usize = 32 << 20;

/// Default [`ReaderOptions::batch_bytes`], 8 MiB: about 50 000 rows of typical access-log
/// records, so `batch_rows` cuts first unless rows carry long values (a batch of 8 192 rows of
/// 250 kB request ids would otherwise hold 2 GB).
pub const DEFAULT_BATCH_BYTES: usize = 8 << 20;

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            batch_rows: 8192,
            batch_bytes: DEFAULT_BATCH_BYTES,
            max_line_bytes: 1 << 20,
            turn_bytes: DEFAULT_TURN_BYTES,
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

/// Where [`LineReader::read`] delivers its output: batches, rejects and progress.
///
/// The sink's own failure (an output that can't be written, a downstream stage that failed)
/// is its [`Error`](IngestSink::Error): reading stops and returns it whole, as
/// [`ReadError::Sink`].
pub trait IngestSink {
    /// What a failing sink returns.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A full batch of flow records (or a partial one, when the reader is flushed).
    /// `lines[i]` is the 1-based number of the line (in its input) that produced row `i`.
    ///
    /// # Errors
    /// Stops reading; the error is returned from [`LineReader::read`].
    fn batch(&mut self, batch: RecordBatch, lines: &[u64]) -> Result<(), Self::Error>;

    /// A rejected line (already counted in [`IngestStats`]).
    ///
    /// # Errors
    /// Stops reading (e.g. the reject file can't be written).
    fn reject(&mut self, _rejected: &RejectedLine<'_>) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Bytes of input consumed so far in this input, for progress indicators.
    fn progress(&mut self, _bytes: u64) {}
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
    /// Request ids and upstream addresses dropped from their records for being longer than
    /// their caps (the records were kept).
    pub dropped_values: DroppedValues,
}

impl IngestStats {
    /// Total rejected lines.
    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &IngestStats) {
        self.lines += other.lines;
        self.bytes += other.bytes;
        self.records += other.records;
        self.blank_lines += other.blank_lines;
        for (reason, n) in &other.rejects {
            *self.rejects.entry(*reason).or_default() += n;
        }
        self.dropped_values.add(other.dropped_values);
    }
}

/// Why reading stopped before the end of the input.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// Reading the input failed (external; retrying may help).
    #[error("reading {input}: {source}")]
    Io {
        /// The input's name.
        input: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The sink failed: its error, whole.
    #[error(transparent)]
    Sink(E),
}

/// What a [`LineReader::read`] call ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// It read the lines it was asked for; there may be more.
    More,
    /// The input has no data right now (its reader returned
    /// [`std::io::ErrorKind::WouldBlock`], e.g. a pipe read with a timeout); a line begun is
    /// kept for the next call.
    Pending,
    /// The input has ended.
    End,
}

/// Reads one input (a file, stdin, any `BufRead`) line by line through a [`LineParser`] into
/// flow-record batches, in as many calls as its driver likes: [`LineReader::read`] reads up to
/// a number of lines, or until the input has nothing right now, keeping a line begun, the
/// line numbers and the byte count from one call to the next.
///
/// Memory is bounded by `max_line_bytes` + one batch: a line longer than the maximum is
/// rejected (`line-too-long`) and its excess bytes are skipped without buffering. A UTF-8 byte
/// order mark at the start of the input is dropped.
#[derive(Debug)]
pub struct LineReader {
    input: String,
    line: Vec<u8>,
    too_long: bool,
    /// Bytes of the current line were read (it exists even if empty so far).
    in_line: bool,
    line_no: u64,
    bytes: u64,
    last_progress: u64,
    builder: FlowBatchBuilder,
    /// The line number of each row in `builder`.
    row_lines: Vec<u64>,
}

impl LineReader {
    /// A reader of the input named `input` (a path, `-` for stdin), at its start.
    pub fn new(input: impl Into<String>) -> Self {
        LineReader {
            input: input.into(),
            line: Vec::with_capacity(4096),
            too_long: false,
            in_line: false,
            line_no: 0,
            bytes: 0,
            last_progress: 0,
            builder: FlowBatchBuilder::new(),
            row_lines: Vec::new(),
        }
    }

    /// A reader of the input named `input` whose first `lines` lines were read elsewhere:
    /// the next line read is number `lines + 1` (a chunk of the input, see
    /// [`crate::parallel`]).
    pub fn starting_after(input: impl Into<String>, lines: u64) -> Self {
        LineReader {
            line_no: lines,
            ..LineReader::new(input)
        }
    }

    /// Lines read so far (the number of the last line read, 1-based).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of the rows parsed but not yet handed to a sink ([`FlowBatchBuilder::bytes`]).
    pub fn buffered_bytes(&self) -> usize {
        self.builder.bytes()
    }

    /// Rows parsed but not yet handed to a sink.
    pub fn buffered_rows(&self) -> usize {
        self.builder.len()
    }

    /// Reads up to `max_lines` lines from `reader` through `parser`, handing full batches
    /// (`opts.batch_rows` rows or `opts.batch_bytes` bytes) and every rejected line to `sink`. Rows of an unfinished batch
    /// stay buffered until the next call fills it or [`LineReader::flush`].
    ///
    /// # Errors
    /// [`ReadError::Io`] naming the input when reading fails; [`ReadError::Sink`] with the
    /// sink's error.
    #[allow(clippy::too_many_arguments)] // the reader's collaborators, passed in rather than owned
    pub fn read<R: BufRead + ?Sized, S: IngestSink + ?Sized>(
        &mut self,
        reader: &mut R,
        parser: &mut dyn LineParser,
        opts: &ReaderOptions,
        stats: &mut IngestStats,
        sink: &mut S,
        max_lines: u64,
    ) -> Result<ReadStatus, ReadError<S::Error>> {
        let start_bytes = self.bytes;
        let mut read = 0u64;
        let status = loop {
            if read >= max_lines || self.bytes - start_bytes >= opts.turn_bytes as u64 {
                break ReadStatus::More;
            }
            // A whole line in the reader's buffer is parsed where it is.
            if !self.in_line {
                let buf = match reader.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        break ReadStatus::Pending;
                    }
                    Err(e) => {
                        stats.bytes += self.bytes - start_bytes;
                        return Err(ReadError::Io {
                            input: self.input.clone(),
                            source: e,
                        });
                    }
                };
                if buf.is_empty() {
                    break ReadStatus::End;
                }
                if let Some(i) = memchr::memchr(b'\n', buf)
                    && i <= opts.max_line_bytes
                {
                    read += 1;
                    self.bytes += i as u64 + 1;
                    let taken = self.take_line(&buf[..i], false, parser, opts, stats, sink);
                    reader.consume(i + 1);
                    if let Err(e) = taken {
                        stats.bytes += self.bytes - start_bytes;
                        return Err(ReadError::Sink(e));
                    }
                    if self.bytes - self.last_progress >= 1 << 20 {
                        self.last_progress = self.bytes;
                        sink.progress(self.bytes);
                    }
                    continue;
                }
            }
            // Assemble one line, keeping at most max_line_bytes of it.
            let mut complete = false;
            let mut pending = false;
            let mut eof = false;
            loop {
                let buf = match reader.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        pending = true;
                        break;
                    }
                    Err(e) => {
                        stats.bytes += self.bytes - start_bytes;
                        return Err(ReadError::Io {
                            input: self.input.clone(),
                            source: e,
                        });
                    }
                };
                if buf.is_empty() {
                    eof = true;
                    break;
                }
                self.in_line = true;
                let (chunk, used, done) = match memchr::memchr(b'\n', buf) {
                    Some(i) => (&buf[..i], i + 1, true),
                    None => (buf, buf.len(), false),
                };
                let room = opts.max_line_bytes.saturating_sub(self.line.len());
                if chunk.len() > room {
                    self.too_long = true;
                }
                self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
                reader.consume(used);
                self.bytes += used as u64;
                if done {
                    complete = true;
                    break;
                }
            }
            if pending && !complete {
                break ReadStatus::Pending;
            }
            if eof && !self.in_line {
                break ReadStatus::End;
            }
            read += 1;
            let line = std::mem::take(&mut self.line);
            let taken = self.take_line(&line, self.too_long, parser, opts, stats, sink);
            self.line = line;
            self.line.clear();
            self.too_long = false;
            self.in_line = false;
            if let Err(e) = taken {
                stats.bytes += self.bytes - start_bytes;
                return Err(ReadError::Sink(e));
            }
            if self.bytes - self.last_progress >= 1 << 20 {
                self.last_progress = self.bytes;
                sink.progress(self.bytes);
            }
            if eof {
                break ReadStatus::End;
            }
        };
        stats.bytes += self.bytes - start_bytes;
        sink.progress(self.bytes);
        Ok(status)
    }

    /// Parses one line (without its `\n`; `too_long`: cut at `max_line_bytes`), counts it,
    /// and hands a full batch on.
    fn take_line<S: IngestSink + ?Sized>(
        &mut self,
        mut line: &[u8],
        too_long: bool,
        parser: &mut dyn LineParser,
        opts: &ReaderOptions,
        stats: &mut IngestStats,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.line_no += 1;
        stats.lines += 1;
        if self.line_no == 1 {
            line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
        }
        line = line.strip_suffix(b"\r").unwrap_or(line);
        let outcome = if too_long {
            Err(Reject::new(
                RejectReason::LineTooLong,
                format!("line longer than {} bytes", opts.max_line_bytes),
            ))
        } else if line.iter().all(u8::is_ascii_whitespace) {
            stats.blank_lines += 1;
            Ok(0)
        } else {
            parser.parse_line(line, &mut self.builder)
        };
        stats.dropped_values.add(self.builder.take_dropped());
        match outcome {
            Ok(n) => {
                stats.records += n as u64;
                self.row_lines.extend(std::iter::repeat_n(self.line_no, n));
            }
            Err(reject) => {
                *stats.rejects.entry(reject.reason).or_default() += 1;
                sink.reject(&RejectedLine {
                    input: &self.input,
                    line_no: self.line_no,
                    reject: &reject,
                    line,
                })?;
            }
        }
        if self.builder.len() >= opts.batch_rows || self.builder.bytes() >= opts.batch_bytes {
            self.flush(sink)?;
        }
        Ok(())
    }

    /// Hands the rows parsed so far, if any, to `sink` as one batch.
    ///
    /// # Errors
    /// The sink's.
    pub fn flush<S: IngestSink + ?Sized>(&mut self, sink: &mut S) -> Result<(), S::Error> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let batch = self.builder.finish();
        let result = sink.batch(batch, &self.row_lines);
        self.row_lines.clear();
        result
    }

    /// End of everything this parser reads: lets it append what it held back (attributed to
    /// this input's last line) and hands the rows on.
    ///
    /// # Errors
    /// The sink's.
    pub fn finish_parser<S: IngestSink + ?Sized>(
        &mut self,
        parser: &mut dyn LineParser,
        stats: &mut IngestStats,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        let n = parser.finish(&mut self.builder);
        stats.records += n as u64;
        stats.dropped_values.add(self.builder.take_dropped());
        self.row_lines.extend(std::iter::repeat_n(self.line_no, n));
        self.flush(sink)
    }
}

/// Reads the whole of `reader` through `parser` into `sink`, then lets the parser finish: one
/// input, start to end (see [`LineReader`] for reading in turns).
///
/// # Errors
/// [`ReadError::Io`] naming `input` when reading fails; [`ReadError::Sink`] with the sink's
/// error.
pub fn read_lines<R: BufRead, S: IngestSink + ?Sized>(
    input: &str,
    mut reader: R,
    parser: &mut dyn LineParser,
    opts: &ReaderOptions,
    stats: &mut IngestStats,
    sink: &mut S,
) -> Result<(), ReadError<S::Error>> {
    let mut lines = LineReader::new(input);
    loop {
        match lines.read(&mut reader, parser, opts, stats, sink, u64::MAX)? {
            ReadStatus::End => break,
            // a plain reader never blocks with a timeout; treat it as more to come
            ReadStatus::More | ReadStatus::Pending => continue,
        }
    }
    lines
        .finish_parser(parser, stats, sink)
        .map_err(ReadError::Sink)
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
        lines: Vec<u64>,
        batches: usize,
        rejects: Vec<String>,
    }
    impl IngestSink for Collect {
        type Error = std::convert::Infallible;
        fn batch(&mut self, batch: RecordBatch, lines: &[u64]) -> Result<(), Self::Error> {
            assert_eq!(lines.len(), batch.num_rows());
            self.rows += batch.num_rows();
            self.batches += 1;
            self.lines.extend_from_slice(lines);
            Ok(())
        }
        fn reject(&mut self, r: &RejectedLine<'_>) -> Result<(), Self::Error> {
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
        let opts = ReaderOptions {
            batch_rows: 2,
            max_line_bytes: 50,
            ..ReaderOptions::default()
        };
        read_lines(
            "t.log",
            &data[..],
            &mut Digits,
            &opts,
            &mut stats,
            &mut sink,
        )
        .unwrap();
        assert_eq!(stats.lines, 7);
        assert_eq!(stats.records, 3);
        assert_eq!(stats.blank_lines, 1);
        assert_eq!(stats.rejected(), 3);
        assert_eq!(stats.rejects[&RejectReason::LineTooLong], 1);
        assert_eq!(sink.rows, 3);
        assert_eq!(sink.batches, 2);
        // rows from lines 1, 2 and 7
        assert_eq!(sink.lines, [1, 2, 7]);
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
        let opts = ReaderOptions::default();
        read_lines(
            "bom.log",
            &data[..],
            &mut Digits,
            &opts,
            &mut stats,
            &mut sink,
        )
        .unwrap();
        assert_eq!(stats.records, 2);
        assert_eq!(sink.rejects, vec!["bom.log:3: bad-number: \"\\u{feff}3\""]);
        assert_eq!(stats.bytes, 12); // BOM 3 + "1\n" 2 + "2\n" 2 + BOM 3 + "3\n" 2

        // A BOM alone on the first line leaves a blank line.
        let mut stats = IngestStats::default();
        read_lines(
            "bom.log",
            &b"\xEF\xBB\xBF\r\n7"[..],
            &mut Digits,
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
        let mut reader = &data[..];
        let mut lines = LineReader::new("t.log");
        let mut calls = 0;
        while lines
            .read(&mut reader, &mut Digits, &opts, &mut stats, &mut sink, 2)
            .unwrap()
            == ReadStatus::More
        {
            calls += 1;
        }
        lines
            .finish_parser(&mut Digits, &mut stats, &mut sink)
            .unwrap();
        // 7 lines in chunks of 2: three calls read 2 lines each; the fourth reads the last line
        // and finds the end.
        assert_eq!(calls, 3);
        assert_eq!((lines.line_no(), lines.bytes()), (7, data.len() as u64));
        assert_eq!((stats.lines, stats.records, stats.blank_lines), (7, 4, 1));
        assert_eq!(stats.bytes, data.len() as u64);
        assert_eq!(sink.lines, [1, 2, 4, 7]);
        assert_eq!(
            sink.rejects,
            vec!["t.log:3: bad-number: \"x3\"", "t.log:6: bad-number: \"y6\""]
        );
    }

    /// Yields its chunks one `fill_buf` at a time, with a `WouldBlock` between them, as a
    /// pipe read with a timeout does.
    struct Trickle {
        chunks: std::collections::VecDeque<Vec<u8>>,
        at: usize,
        blocked: bool,
    }

    impl std::io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = {
                let b = self.fill_buf()?;
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                n
            };
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Trickle {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            if self.blocked {
                self.blocked = false;
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            match self.chunks.front() {
                Some(c) => Ok(&c[self.at..]),
                None => Ok(&[]),
            }
        }
        fn consume(&mut self, n: usize) {
            self.at += n;
            if self.chunks.front().is_some_and(|c| self.at == c.len()) {
                self.chunks.pop_front();
                self.at = 0;
                self.blocked = true;
            }
        }
    }

    #[test]
    fn a_quiet_input_pauses_mid_line_and_goes_on() {
        let mut reader = Trickle {
            chunks: [b"1\n2".to_vec(), b"3\n4".to_vec(), b"5\n".to_vec()].into(),
            at: 0,
            blocked: false,
        };
        let opts = ReaderOptions::default();
        let mut stats = IngestStats::default();
        let mut sink = Collect::default();
        let mut lines = LineReader::new("pipe");
        let mut read = |lines: &mut LineReader, sink: &mut Collect| {
            lines
                .read(&mut reader, &mut Digits, &opts, &mut stats, sink, u64::MAX)
                .unwrap()
        };
        // "1" is complete, "2" is begun when the pipe goes quiet
        assert_eq!(read(&mut lines, &mut sink), ReadStatus::Pending);
        assert_eq!((lines.line_no(), lines.buffered_rows()), (1, 1));
        lines.flush(&mut sink).unwrap();
        assert_eq!(sink.rows, 1, "a partial batch goes through");
        assert_eq!(read(&mut lines, &mut sink), ReadStatus::Pending);
        assert_eq!(read(&mut lines, &mut sink), ReadStatus::Pending);
        assert_eq!(read(&mut lines, &mut sink), ReadStatus::End);
        lines.flush(&mut sink).unwrap();
        assert_eq!(sink.lines, [1, 2, 3]);
        assert!(
            sink.rejects.is_empty(),
            "23 and 45 are whole lines: {:?}",
            sink.rejects
        );
        assert_eq!(stats.records, 3);
    }
}
