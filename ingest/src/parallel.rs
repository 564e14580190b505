//! Parsing one input on several threads with the same result as one.
//!
//! The driver's thread cuts an input into [`Chunk`]s of whole lines with a [`ChunkReader`]
//! (the same turns a [`LineReader::read`] call takes: up to a number of lines, or
//! [`ReaderOptions::turn_bytes`]), reading them into buffers ([`ChunkReader::read`]) or, for
//! an input held whole in memory (a mapped file), sharing it ([`ChunkReader::cut`]: no
//! copy); a [`ParsePool`] parses chunks on worker threads, each with
//! its own parser, and the driver hands each chunk's [`Parsed`] result to its sink in input
//! order. A worker reads its chunk with a [`LineReader`] started at the chunk's first line,
//! so line numbers, rejects, batch boundaries and counts are those of one thread reading the
//! input whole; [`Parsed::deliver`] repeats the sink calls in the order the worker made them.
//!
//! Only parsers that keep nothing from one line to the next can be spread this way (not
//! trace spans, which are joined across lines: [`crate::Format::holds_records`]).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow::array::RecordBatch;

use crate::error::Reject;
use crate::source::{
    IngestSink, IngestStats, LineParser, LineReader, ReadStatus, ReaderOptions, RejectedLine,
};

/// An input held whole in memory, shared by its chunks instead of copied into them (a
/// memory-mapped file): see [`ChunkReader::cut`].
pub type SharedInput = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Where a chunk's bytes are.
enum ChunkBytes {
    /// A buffer the chunk owns, filled by [`ChunkReader::read`].
    Owned(Vec<u8>),
    /// `input[start..]` without the byte ranges in `skips` (relative to `start`, in order:
    /// the excess of lines too long), cut by [`ChunkReader::cut`].
    Shared {
        input: SharedInput,
        start: usize,
        skips: Vec<(usize, usize)>,
    },
}

impl std::fmt::Debug for ChunkBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkBytes::Owned(b) => write!(f, "Owned({} bytes)", b.len()),
            ChunkBytes::Shared { start, .. } => write!(f, "Shared(from {start})"),
        }
    }
}

/// Whole lines of one input, cut by a [`ChunkReader`].
#[derive(Debug)]
pub struct Chunk {
    /// The lines are the first `len` bytes, each ending with `\n` except maybe the input's
    /// last. A line longer than `max_line_bytes` is cut to `max_line_bytes + 1` bytes (its
    /// excess dropped from a buffer of its own, skipped in a shared input), which is enough
    /// for the parsing thread to reject it as too long. In a buffer of its own, the bytes
    /// after `len` are the buffer's room, kept initialized so that it is read into again
    /// without being cleared.
    bytes: ChunkBytes,
    len: usize,
    /// Lines of the input before this chunk.
    lines_before: u64,
    /// Bytes of the input this chunk stands for (its own, plus dropped excess).
    consumed: u64,
}

/// Bytes asked of the input in one read; `replay` gives its file buffers this capacity, so
/// that these reads go straight into the chunk (a `BufReader` hands a read at least as large
/// as its buffer to the file directly when it holds nothing).
pub const READ_BYTES: usize = 1 << 18;

/// Bytes whose newlines [`ChunkReader::read`] counts in one go when no line in them can be
/// too long and the chunk's limits are not reached there: about 4× faster than finding each
/// line's end on 240-byte lines (NGINX combined).
const COUNT_BLOCK: usize = 4096;

/// Cuts one input into [`Chunk`]s (see the [module docs](self)).
///
/// It reads the input straight into the chunk's buffer, which the parsing thread then reads
/// in place: each byte is copied once from the file, not a second time out of a read buffer
/// (that copy was 6 % of a two-thread replay's CPU). The bytes of the line that a chunk's last
/// read began after the chunk's end are kept for the next chunk (at most one read).
#[derive(Debug)]
pub struct ChunkReader {
    lines: u64,
    /// The line being read is longer than `max_line_bytes`: the rest of it is dropped.
    skipping: bool,
    max_line_bytes: usize,
    /// Bytes read after the end of the last chunk: the start of the next.
    carry: Vec<u8>,
    /// Bytes asked of the input in one read ([`READ_BYTES`]; smaller in tests).
    read_bytes: usize,
    /// Bytes whose newlines are counted at once ([`COUNT_BLOCK`]; smaller in tests).
    count_block: usize,
}

impl Chunk {
    /// The chunk's lines, in pieces read one after the other.
    fn pieces(&self) -> Pieces<'_> {
        let parts = match &self.bytes {
            ChunkBytes::Owned(b) => vec![&b[..self.len]],
            ChunkBytes::Shared {
                input,
                start,
                skips,
            } => {
                let span = &(**input).as_ref()[*start..*start + self.len];
                let mut parts = Vec::with_capacity(skips.len() + 1);
                let mut from = 0;
                for &(a, b) in skips {
                    parts.push(&span[from..a]);
                    from = b;
                }
                parts.push(&span[from..]);
                parts
            }
        };
        Pieces { parts, i: 0 }
    }

    /// Its buffer, to be read into again (empty for a chunk of a shared input).
    fn into_buffer(self) -> Vec<u8> {
        match self.bytes {
            ChunkBytes::Owned(b) => b,
            ChunkBytes::Shared { .. } => Vec::new(),
        }
    }
}

impl ChunkReader {
    /// A reader at the start of an input whose lines are limited to `max_line_bytes`.
    pub fn new(max_line_bytes: usize) -> Self {
        ChunkReader {
            lines: 0,
            skipping: false,
            max_line_bytes,
            carry: Vec::new(),
            read_bytes: READ_BYTES,
            count_block: COUNT_BLOCK,
        }
    }

    /// Reads whole lines from `reader` until `max_lines` lines or `max_bytes` bytes are in the
    /// chunk, or the input ends; returns the chunk (in `buffer`: pass the one a [`Parsed`]
    /// gave back) and whether the input ended.
    ///
    /// # Errors
    /// The reader's (other than `Interrupted`).
    pub fn read<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
        max_lines: u64,
        max_bytes: usize,
        mut buffer: Vec<u8>,
    ) -> std::io::Result<(Chunk, ReadStatus)> {
        let keep = self.max_line_bytes + 1;
        let max_bytes = max_bytes as u64;
        // `buffer[..w]` is the chunk; `buffer[r..end]` was read and is not yet looked at
        let (mut w, mut r) = (0usize, 0usize);
        let mut end = self.carry.len();
        room(&mut buffer, end);
        buffer[..end].copy_from_slice(&self.carry);
        self.carry.clear();
        let mut consumed = 0u64;
        // bytes of the current (unfinished) line in the chunk
        let mut line_len = 0usize;
        let mut lines = 0u64;
        // moves `buffer[from..to]` to the chunk's end (in place unless bytes were dropped)
        let keep_bytes = |buffer: &mut Vec<u8>, w: &mut usize, from: usize, to: usize| {
            if from != *w {
                buffer.copy_within(from..to, *w);
            }
            *w += to - from;
        };
        let status = loop {
            if lines >= max_lines || (line_len == 0 && consumed >= max_bytes) {
                break ReadStatus::More;
            }
            if r == end {
                // the next read goes right after the chunk's bytes
                r = w;
                room(&mut buffer, w + self.read_bytes);
                let n = loop {
                    match reader.read(&mut buffer[w..w + self.read_bytes]) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                };
                if n == 0 {
                    end = r;
                    break ReadStatus::End;
                }
                end = r + n;
            }
            let used = if self.skipping {
                // the excess of a line too long, up to its end
                match memchr::memchr(b'\n', &buffer[r..end]) {
                    Some(i) => {
                        // `w < r + i`: bytes were dropped before this newline
                        buffer[w] = b'\n';
                        w += 1;
                        line_len = 0;
                        lines += 1;
                        self.skipping = false;
                        i + 1
                    }
                    None => end - r,
                }
            } else {
                // whole lines stay where they are; a line too long is cut at `keep` bytes
                let (mut copied, mut from) = (r, r);
                let mut stopped = false;
                let mut at = r;
                // whole blocks in which no line can be too long and no limit is reached:
                // their newlines counted at once (SIMD), not found one by one
                let b = self.count_block;
                while end - at >= b
                    && line_len + (at + b - from) <= keep
                    && consumed + ((at + b - r) as u64) < max_bytes
                {
                    let block = &buffer[at..at + b];
                    let n = bytecount::count(block, b'\n') as u64;
                    if lines + n >= max_lines {
                        break;
                    }
                    if let Some(k) = memchr::memrchr(b'\n', block) {
                        lines += n;
                        line_len = 0;
                        from = at + k + 1;
                    }
                    at += b;
                }
                while let Some(k) = memchr::memchr(b'\n', &buffer[at..end]) {
                    let i = at + k;
                    at = i + 1;
                    if line_len + (i - from) > keep {
                        keep_bytes(&mut buffer, &mut w, copied, from + keep - line_len);
                        buffer[w] = b'\n';
                        w += 1;
                        copied = i + 1;
                    }
                    line_len = 0;
                    lines += 1;
                    from = i + 1;
                    if lines >= max_lines || consumed + (from - r) as u64 >= max_bytes {
                        stopped = true;
                        break;
                    }
                }
                keep_bytes(&mut buffer, &mut w, copied, from);
                if stopped {
                    from - r
                } else {
                    // the rest begins (or goes on with) a line that ends in a later read
                    let rest = end - from;
                    let room = keep - line_len;
                    let take = rest.min(room);
                    keep_bytes(&mut buffer, &mut w, from, from + take);
                    line_len += take;
                    self.skipping = rest > room;
                    end - r
                }
            };
            r += used;
            consumed += used as u64;
        };
        // what was read after the chunk's end begins the next one
        self.carry.extend_from_slice(&buffer[r..end]);
        let chunk = Chunk {
            bytes: ChunkBytes::Owned(buffer),
            len: w,
            lines_before: self.lines,
            consumed,
        };
        // an unfinished last line (the input ends without `\n`) counts as a line
        self.lines += lines + u64::from(line_len > 0 || self.skipping);
        Ok((chunk, status))
    }

    /// Cuts the next chunk from `input[*at..]`, an input held whole in memory, as
    /// [`ChunkReader::read`] would read it from those bytes (the same lines, each cut to
    /// `max_line_bytes + 1` bytes, line numbers and byte counts), without copying them: the
    /// chunk shares `input` and skips the excess of lines too long. Moves `*at` past the
    /// chunk. An input is cut by `cut` or by `read` from start to end, not by both.
    ///
    /// `release(from, to)` is called with byte ranges of `input` no chunk will read (the
    /// excess of a line too long), as they are scanned: the caller may drop their pages, so
    /// that memory stays bounded whatever a line's length.
    ///
    /// # Panics
    /// When `*at` is past the input's end.
    pub fn cut(
        &mut self,
        input: &SharedInput,
        at: &mut usize,
        max_lines: u64,
        max_bytes: usize,
        release: &mut dyn FnMut(usize, usize),
    ) -> (Chunk, ReadStatus) {
        let start = *at;
        let data = &(**input).as_ref()[start..];
        let max_bytes = max_bytes as u64;
        let keep = self.max_line_bytes + 1;
        let mut lines = 0u64;
        // `end`: the end of the chunk's last whole line (the current line's start);
        // `scanned`: how far its newlines were looked for
        let (mut end, mut scanned) = (0usize, 0usize);
        let mut skips: Vec<(usize, usize)> = Vec::new();
        // whole blocks in which no line can be too long, before both limits: their newlines
        // counted at once (SIMD)
        let b = self.count_block;
        while data.len() - scanned >= b
            && scanned + b - end <= keep
            && ((scanned + b) as u64) < max_bytes
        {
            let block = &data[scanned..scanned + b];
            let n = bytecount::count(block, b'\n') as u64;
            if lines + n >= max_lines {
                break;
            }
            if let Some(k) = memchr::memrchr(b'\n', block) {
                lines += n;
                end = scanned + k + 1;
            }
            scanned += b;
        }
        // how far the excess of lines too long was handed to `release` (relative)
        let mut released = 0usize;
        let mut excess = |line: usize, to: usize, released: &mut usize| {
            let from = (line + keep).max(*released);
            if to > from {
                release(start + from, start + to);
                *released = to;
            }
        };
        while lines < max_lines && (end as u64) < max_bytes {
            let stop = (scanned + SCAN_STEP).min(data.len());
            match memchr::memchr(b'\n', &data[scanned..stop]) {
                Some(k) => {
                    let nl = scanned + k;
                    if nl - end > keep {
                        skips.push((end + keep, nl));
                        excess(end, nl, &mut released);
                    }
                    end = nl + 1;
                    scanned = end;
                    lines += 1;
                }
                None if stop == data.len() => break,
                None => {
                    // a line too long so far: its excess goes every `RELEASE_BYTES`
                    scanned = stop;
                    if scanned >= (end + keep).max(released) + RELEASE_BYTES {
                        excess(end, scanned, &mut released);
                    }
                }
            }
        }
        let status = if lines >= max_lines || (end as u64) >= max_bytes {
            ReadStatus::More
        } else {
            if end < data.len() {
                // the input ends without `\n`: its last line counts, cut like the others
                if data.len() - end > keep {
                    skips.push((end + keep, data.len()));
                    excess(end, data.len(), &mut released);
                }
                end = data.len();
                lines += 1;
            }
            ReadStatus::End
        };
        let chunk = Chunk {
            bytes: ChunkBytes::Shared {
                input: Arc::clone(input),
                start,
                skips,
            },
            len: end,
            lines_before: self.lines,
            consumed: end as u64,
        };
        self.lines += lines;
        *at = start + end;
        (chunk, status)
    }
}

/// A chunk's lines as one reader over its pieces.
struct Pieces<'a> {
    parts: Vec<&'a [u8]>,
    i: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let part = std::io::BufRead::fill_buf(self)?;
        let n = part.len().min(buf.len());
        buf[..n].copy_from_slice(&part[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl std::io::BufRead for Pieces<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.parts.get(self.i).is_some_and(|p| p.is_empty()) {
            self.i += 1;
        }
        Ok(self.parts.get(self.i).copied().unwrap_or_default())
    }

    fn consume(&mut self, n: usize) {
        if let Some(p) = self.parts.get_mut(self.i) {
            *p = &p[n..];
        }
    }
}

/// Bytes a line's end is looked for in at once by [`ChunkReader::cut`]: a line too long is
/// scanned in steps of this size, its excess released behind.
const SCAN_STEP: usize = 1 << 20;

/// Bytes of a shared input between two releases of its pages: of a line's excess scanned by
/// [`ChunkReader::cut`] (its `release`), and of the lines parsed (`replay`'s driver).
pub const RELEASE_BYTES: usize = 16 << 20;

/// Makes `buffer` at least `len` bytes long; the bytes it gains are zeros (once: a buffer
/// handed back from a [`Parsed`] keeps its length).
fn room(buffer: &mut Vec<u8>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
}

/// One sink call a worker made, kept for [`Parsed::deliver`].
#[derive(Debug)]
enum Event {
    Batch(RecordBatch, Vec<u64>),
    Reject {
        line_no: u64,
        reject: Reject,
        line: Vec<u8>,
    },
}

/// A chunk's result: the batches and rejects in the order one thread would have handed them
/// to its sink, the counts, and the parser (back to the driver, for the next chunk).
pub struct Parsed {
    events: Vec<Event>,
    /// Lines, records and rejects of the chunk; `bytes` is the input's bytes it stands for.
    pub stats: IngestStats,
    /// The parser that read it.
    pub parser: Box<dyn LineParser>,
    /// The chunk's buffer, for the next [`ChunkReader::read`] (no new pages to fault in).
    pub buffer: Vec<u8>,
}

impl Parsed {
    /// Hands the chunk's batches and rejects to `sink`, in order, naming the input `input`.
    ///
    /// # Errors
    /// The sink's; the calls after the failing one are not made.
    pub fn deliver<S: IngestSink + ?Sized>(
        &mut self,
        input: &str,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        for event in self.events.drain(..) {
            match event {
                Event::Batch(batch, lines) => sink.batch(batch, &lines)?,
                Event::Reject {
                    line_no,
                    reject,
                    line,
                } => sink.reject(&RejectedLine {
                    input,
                    line_no,
                    reject: &reject,
                    line: &line,
                })?,
            }
        }
        Ok(())
    }
}

/// Records a worker's sink calls.
#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
}

impl IngestSink for Recorder {
    type Error = std::convert::Infallible;

    fn batch(&mut self, batch: RecordBatch, lines: &[u64]) -> Result<(), Self::Error> {
        self.events.push(Event::Batch(batch, lines.to_vec()));
        Ok(())
    }

    fn reject(&mut self, r: &RejectedLine<'_>) -> Result<(), Self::Error> {
        self.events.push(Event::Reject {
            line_no: r.line_no,
            reject: r.reject.clone(),
            line: r.line.to_vec(),
        });
        Ok(())
    }
}

/// Parses a chunk as one thread reading the input whole would have parsed those lines.
fn parse(
    input: &str,
    chunk: Chunk,
    mut parser: Box<dyn LineParser>,
    opts: ReaderOptions,
) -> Parsed {
    let mut lines = LineReader::starting_after(input, chunk.lines_before);
    let mut stats = IngestStats::default();
    let mut sink = Recorder::default();
    let mut bytes = chunk.pieces();
    let opts = ReaderOptions {
        turn_bytes: usize::MAX,
        ..opts
    };
    // a slice never fails to read, and the recorder never fails
    let _ = lines.read(
        &mut bytes,
        parser.as_mut(),
        &opts,
        &mut stats,
        &mut sink,
        u64::MAX,
    );
    let _ = lines.flush(&mut sink);
    stats.bytes = chunk.consumed;
    Parsed {
        events: sink.events,
        stats,
        parser,
        buffer: chunk.into_buffer(),
    }
}

/// Worker threads that run jobs; each job's result comes back through its [`Pending`].
/// Dropping the pool lets the workers finish what they hold and joins them.
///
/// `replay -jN` parses file [`Chunk`]s on them ([`ParsePool`]); `run` parses Kafka messages.
pub struct Workers {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

type Job = Box<dyn FnOnce() + Send>;

/// A job's result to come: [`Pending::wait`] waits for it.
pub struct Pending<T>(Receiver<T>);

impl<T> Pending<T> {
    /// Waits for the job's result.
    ///
    /// # Panics
    /// When the worker running it panicked (a bug: parsers never panic, whatever the bytes;
    /// the fuzz targets check it).
    pub fn wait(self) -> T {
        self.0
            .recv()
            .expect("a worker thread panicked (a bug: please report it)")
    }

    /// The job's result if it is done, else `None`.
    ///
    /// # Panics
    /// As [`Pending::wait`].
    pub fn ready(&self) -> Option<T> {
        match self.0.try_recv() {
            Ok(t) => Some(t),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                panic!("a worker thread panicked (a bug: please report it)")
            }
        }
    }
}

impl Workers {
    /// A pool of `threads` workers (at least one), named `{name}-0`, `{name}-1`, ...
    pub fn new(threads: usize, name: &str) -> Self {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads.max(1))
            .map(|i| {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        loop {
                            // the lock is held only to take a job
                            let job = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok(job) = job else {
                                return;
                            };
                            job();
                        }
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        Workers {
            jobs: Some(tx),
            workers,
        }
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Hands `job` to a worker.
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Pending<T> {
        let (reply, rx) = sync_channel(1);
        if let Some(jobs) = &self.jobs {
            // the workers live as long as the pool: a send fails only after one panicked,
            // which `Pending::wait` reports; the driver may have stopped waiting (an error)
            let _ = jobs.send(Box::new(move || {
                let _ = reply.send(job());
            }));
        }
        Pending(rx)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// [`Workers`] that parse [`Chunk`]s.
pub struct ParsePool(Workers);

impl ParsePool {
    /// A pool of `threads` workers (at least one).
    pub fn new(threads: usize) -> Self {
        ParsePool(Workers::new(threads, "parse"))
    }

    /// Hands `chunk` of `input` to a worker, to be parsed by `parser` with `opts`.
    pub fn submit(
        &self,
        input: &Arc<str>,
        chunk: Chunk,
        parser: Box<dyn LineParser>,
        opts: &ReaderOptions,
    ) -> Pending<Parsed> {
        let input = Arc::clone(input);
        let opts = *opts;
        self.0.submit(move || parse(&input, chunk, parser, opts))
    }
}

/// Jobs in flight, oldest first: their results are taken in the order they were submitted.
pub struct InFlight<T>(VecDeque<Pending<T>>);

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight(VecDeque::new())
    }
}

impl<T> InFlight<T> {
    /// Jobs in flight.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// None in flight.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds the newest.
    pub fn push(&mut self, p: Pending<T>) {
        self.0.push_back(p);
    }

    /// Waits for the oldest.
    pub fn wait_oldest(&mut self) -> Option<T> {
        self.0.pop_front().map(Pending::wait)
    }

    /// The oldest's result if it is done (a newer one done first waits for it).
    pub fn oldest_ready(&mut self) -> Option<T> {
        let t = self.0.front()?.ready()?;
        self.0.pop_front();
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::mapping::Mapping;

    /// What a sink saw, in order.
    #[derive(Default, Debug, PartialEq)]
    struct Seen {
        calls: Vec<String>,
        rows: usize,
    }

    impl IngestSink for Seen {
        type Error = std::convert::Infallible;
        fn batch(&mut self, batch: RecordBatch, lines: &[u64]) -> Result<(), Self::Error> {
            self.rows += batch.num_rows();
            let records = schemas::flow_records(&batch).unwrap();
            self.calls.push(format!("batch {lines:?} {records:?}"));
            Ok(())
        }
        fn reject(&mut self, r: &RejectedLine<'_>) -> Result<(), Self::Error> {
            self.calls.push(format!("{r} {}", r.line.len()));
            Ok(())
        }
    }

    /// The NGINX combined log of deploy/examples/logs/elastic_examples_apache_logs.log
    /// (elastic/examples, Apache-2.0), with a BOM, a blank line, a line too long, a bad
    /// line, CRLF and no newline at the end.
    fn input() -> Vec<u8> {
        let log = include_str!("../../deploy/examples/logs/elastic_examples_apache_logs.log");
        let mut text = b"\xEF\xBB\xBF".to_vec();
        for (i, line) in log.lines().take(3000).enumerate() {
            text.extend_from_slice(line.as_bytes());
            match i {
                7 => text.extend_from_slice(b"\r\n\n"),
                // joined with the next line, too long
                100 => text.extend_from_slice(&b"x".repeat(5000)),
                2000 => text.extend_from_slice(b" \"unterminated\n"),
                _ => text.push(b'\n'),
            }
            if i == 1500 {
                text.extend_from_slice(&[b'y'; 3000]);
                text.push(b'\n');
            }
        }
        text.extend_from_slice(b"garbage without newline");
        text
    }

    #[test]
    fn chunks_parsed_on_threads_read_like_one_thread() {
        let text = input();
        let opts = ReaderOptions {
            batch_rows: 100,
            max_line_bytes: 2048,
            ..ReaderOptions::default()
        };
        let mapping = Mapping::default();
        let parser = || Format::NginxCombined.parser(&mapping).unwrap();
        // one thread reading 250 lines a turn, flushing after each, as `replay` does
        let mut one = Seen::default();
        let mut one_stats = IngestStats::default();
        let mut lines = LineReader::new("log");
        let mut src = text.as_slice();
        let mut p = parser();
        loop {
            let status = lines
                .read(&mut src, p.as_mut(), &opts, &mut one_stats, &mut one, 250)
                .unwrap();
            lines.flush(&mut one).unwrap();
            if status == ReadStatus::End {
                break;
            }
        }
        assert!(one_stats.rejected() >= 3, "{one_stats:?}");
        assert_eq!(one_stats.lines, 3002);

        // chunks of 250 lines: the same as one thread reading 250 lines a turn
        let pool = ParsePool::new(3);
        let input: Arc<str> = "log".into();
        // reads of a few bytes (lines split across reads, a line too long dropped over
        // several), of about a line, and of the whole input; buffers handed back for reuse
        for read_bytes in [1, 7, 64, 300, 4096, READ_BYTES] {
            let mut reader = ChunkReader::new(opts.max_line_bytes);
            reader.read_bytes = read_bytes;
            let mut src = Trickle(text.as_slice());
            let mut inflight = InFlight::default();
            let mut buffers: Vec<Vec<u8>> = Vec::new();
            let mut many = Seen::default();
            let mut stats = IngestStats::default();
            loop {
                let buffer = buffers.pop().unwrap_or_default();
                let (chunk, status) = reader.read(&mut src, 250, usize::MAX, buffer).unwrap();
                inflight.push(pool.submit(&input, chunk, parser(), &opts));
                if inflight.len() == 3 {
                    let mut p = inflight.wait_oldest().unwrap();
                    p.deliver("log", &mut many).unwrap();
                    stats.merge(&p.stats);
                    buffers.push(std::mem::take(&mut p.buffer));
                }
                if status == ReadStatus::End {
                    break;
                }
            }
            deliver_all(&mut inflight, &mut many, &mut stats);
            assert_eq!(many, one, "reads of {read_bytes} bytes");
            assert_eq!(stats, one_stats, "reads of {read_bytes} bytes");
            assert_eq!(stats.bytes, text.len() as u64);
        }

        // the input whole in memory, cut without copies: the same again
        let whole: SharedInput = Arc::new(text.clone());
        let mut reader = ChunkReader::new(opts.max_line_bytes);
        let (mut at, mut inflight) = (0, InFlight::default());
        let (mut many, mut stats) = (Seen::default(), IngestStats::default());
        loop {
            let (chunk, status) = reader.cut(&whole, &mut at, 250, usize::MAX, &mut |_, _| {});
            inflight.push(pool.submit(&input, chunk, parser(), &opts));
            if status == ReadStatus::End {
                break;
            }
        }
        deliver_all(&mut inflight, &mut many, &mut stats);
        assert_eq!(many, one, "cut from memory");
        assert_eq!(stats, one_stats, "cut from memory");
    }

    /// Delivers every chunk in flight to `sink`, oldest first, adding up their counts.
    fn deliver_all(inflight: &mut InFlight<Parsed>, sink: &mut Seen, stats: &mut IngestStats) {
        while let Some(mut p) = inflight.wait_oldest() {
            p.deliver("log", sink).unwrap();
            stats.merge(&p.stats);
        }
    }

    /// A reader that gives at most the number of bytes asked, from a slice.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunks_stop_at_their_byte_limit_and_carry_the_rest() {
        let text = b"aaaa\nbbbb\ncccc\ndddd\n";
        let mut reader = ChunkReader::new(100);
        let mut src = Trickle(text);
        // 6 bytes: the chunk ends after the line that reaches them; the rest is carried
        let (c1, s1) = reader.read(&mut src, 100, 6, Vec::new()).unwrap();
        assert_eq!(
            (bytes(&c1), c1.lines_before, c1.consumed, s1),
            (b"aaaa\nbbbb\n".to_vec(), 0, 10, ReadStatus::More)
        );
        let (c2, s2) = reader
            .read(&mut src, 1, usize::MAX, c1.into_buffer())
            .unwrap();
        assert_eq!(
            (bytes(&c2), c2.lines_before, c2.consumed, s2),
            (b"cccc\n".to_vec(), 2, 5, ReadStatus::More)
        );
        let (c3, s3) = reader.read(&mut src, 100, usize::MAX, Vec::new()).unwrap();
        assert_eq!(
            (bytes(&c3), c3.lines_before, c3.consumed, s3),
            (b"dddd\n".to_vec(), 3, 5, ReadStatus::End)
        );
    }

    #[test]
    fn a_line_of_40_mb_is_cut_and_its_excess_released_as_it_is_scanned() {
        let mut input = b"first\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 40 << 20));
        input.extend_from_slice(b"\nlast\n");
        let whole: SharedInput = Arc::new(input.clone());
        let mut cutter = ChunkReader::new(1024);
        let (mut at, mut freed) = (0, Vec::new());
        let (chunk, status) = cutter.cut(&whole, &mut at, 100, usize::MAX, &mut |a, b| {
            freed.push((a, b))
        });
        // as `read` cuts it: the long line's first 1,025 bytes, then its newline
        let mut reader = ChunkReader::new(1024);
        let (want, want_status) = reader
            .read(&mut input.as_slice(), 100, usize::MAX, Vec::new())
            .unwrap();
        assert_eq!(bytes(&chunk), bytes(&want));
        assert_eq!(bytes(&chunk).len(), 6 + 1025 + 1 + 5);
        assert_eq!((status, want_status), (ReadStatus::End, ReadStatus::End));
        assert_eq!((chunk.consumed, cutter.lines), (input.len() as u64, 3));
        // the excess, released in steps while it was scanned, end to end
        assert!(freed.len() >= 2, "{freed:?}");
        assert_eq!(freed[0].0, 6 + 1025);
        assert!(freed.windows(2).all(|w| w[0].1 == w[1].0), "{freed:?}");
        assert_eq!(freed.last().unwrap().1, 6 + (40 << 20));
    }

    /// A chunk's lines, its pieces joined.
    fn bytes(chunk: &Chunk) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut chunk.pieces(), &mut out).unwrap();
        out
    }

    /// What the chunks of `input` must hold together: every line cut to `keep` bytes, the
    /// complete ones with their `\n`; and the number of lines.
    fn cut_lines(input: &[u8], keep: usize) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let last = parts.pop().unwrap_or_default();
        for line in &parts {
            out.extend_from_slice(&line[..line.len().min(keep)]);
            out.push(b'\n');
        }
        out.extend_from_slice(&last[..last.len().min(keep)]);
        (out, parts.len() as u64 + u64::from(!last.is_empty()))
    }

    proptest::proptest! {
        /// Whatever the reads' sizes and the limits, the chunks hold the input's lines in
        /// order, each cut to `max_line_bytes + 1`, end at line ends, stay within their line
        /// limit, number their lines, and stand for every byte of the input.
        #[test]
        fn chunks_hold_the_lines_cut_as_a_line_reader_cuts_them(
            lines in proptest::collection::vec((0usize..40, proptest::bool::ANY), 0..60),
            last in 0usize..30,
            read_bytes in 1usize..100,
            max_line_bytes in 1usize..20,
            max_lines in 1u64..8,
            max_bytes in 1usize..200,
            count_block in 1usize..50,
        ) {
            let mut input = Vec::new();
            for (n, (len, crlf)) in lines.iter().enumerate() {
                input.extend((0..*len).map(|i| b'a' + ((n + i) % 26) as u8));
                input.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            }
            input.extend(std::iter::repeat_n(b'z', last));
            let keep = max_line_bytes + 1;
            let (want, want_lines) = cut_lines(&input, keep);

            let mut reader = ChunkReader::new(max_line_bytes);
            reader.read_bytes = read_bytes;
            reader.count_block = count_block;
            let mut src = Trickle(&input);
            // the same reader finding each line's end: the chunks must be the same
            let mut by_line = ChunkReader::new(max_line_bytes);
            by_line.read_bytes = read_bytes;
            by_line.count_block = usize::MAX;
            let mut by_line_src = Trickle(&input);
            // and cut from the input whole in memory
            let mut shared = ChunkReader::new(max_line_bytes);
            shared.count_block = count_block;
            let whole: SharedInput = Arc::new(input.clone());
            let mut at = 0;
            let (mut got, mut lines_seen, mut consumed) = (Vec::new(), 0u64, 0u64);
            let mut buffer = Vec::new();
            loop {
                let (chunk, status) = reader.read(&mut src, max_lines, max_bytes, buffer).unwrap();
                let (want_chunk, want_status) =
                    by_line.read(&mut by_line_src, max_lines, max_bytes, Vec::new()).unwrap();
                proptest::prop_assert_eq!(
                    (bytes(&chunk), chunk.lines_before, chunk.consumed, status),
                    (bytes(&want_chunk), want_chunk.lines_before, want_chunk.consumed, want_status)
                );
                // cut from the input held in memory: the same, the excess of long lines
                // skipped and released
                let mut freed: Vec<(usize, usize)> = Vec::new();
                let (shared_chunk, shared_status) = shared.cut(
                    &whole, &mut at, max_lines, max_bytes, &mut |a, b| freed.push((a, b)),
                );
                proptest::prop_assert_eq!(
                    (bytes(&shared_chunk), shared_chunk.lines_before, shared_chunk.consumed, shared_status),
                    (bytes(&chunk), chunk.lines_before, chunk.consumed, status)
                );
                let ChunkBytes::Shared { start, skips, .. } = &shared_chunk.bytes else {
                    unreachable!("cut shares its input")
                };
                let skipped: Vec<(usize, usize)> =
                    skips.iter().map(|&(a, b)| (start + a, start + b)).collect();
                proptest::prop_assert_eq!(freed, skipped);
                let bytes = bytes(&chunk);
                let bytes = bytes.as_slice();
                let n = memchr::memchr_iter(b'\n', bytes).count() as u64;
                proptest::prop_assert_eq!(chunk.lines_before, lines_seen);
                proptest::prop_assert!(n <= max_lines);
                if status == ReadStatus::More {
                    proptest::prop_assert!(bytes.is_empty() || bytes.ends_with(b"\n"));
                }
                got.extend_from_slice(bytes);
                consumed += chunk.consumed;
                lines_seen += n + u64::from(status == ReadStatus::End && !bytes.is_empty() && !bytes.ends_with(b"\n"));
                buffer = chunk.into_buffer();
                if status == ReadStatus::End {
                    break;
                }
            }
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(lines_seen, want_lines);
            proptest::prop_assert_eq!(reader.lines, want_lines);
            proptest::prop_assert_eq!(shared.lines, want_lines);
            proptest::prop_assert_eq!(at, input.len());
            proptest::prop_assert_eq!(consumed, input.len() as u64);
        }
    }
}
