//! Opening `replay`'s and `parse`'s inputs: regular files are read directly; stdin and other
//! streams (pipes, FIFOs) by a thread each, so that a quiet stream never blocks the run: its
//! partial batches go through, and after `idle-timeout` it stops holding the watermark back.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use anyhow::{Context, bail};

/// Bytes read from a stream at once.
const STREAM_CHUNK: usize = 1 << 16;
/// Chunks in flight from all stream threads (4 MiB).
const STREAM_QUEUE: usize = 64;
/// Bytes buffered for all streams together before the driver stops taking chunks from their
/// threads (which then wait: a stream faster than parsing is slowed down, not buffered).
const STREAM_BUFFER: usize = 16 << 20;

/// How an input is read.
pub enum Source {
    /// A regular file (never waits).
    File(Box<dyn BufRead + Send>),
    /// A stream, fed by its thread through [`Streams`].
    Stream(StreamBuf),
}

/// One opened input.
pub struct Opened {
    /// Its name as given (`-` for stdin).
    pub name: String,
    /// How to read it.
    pub source: Source,
    /// Its size, bytes, when known (regular files).
    pub size: Option<u64>,
}

/// A stream's bytes as its thread delivered them. As a `BufRead` it never blocks: with
/// nothing buffered and the stream not ended it returns [`io::ErrorKind::WouldBlock`].
#[derive(Default)]
pub struct StreamBuf {
    chunks: VecDeque<Vec<u8>>,
    at: usize,
    ended: bool,
    error: Option<io::Error>,
}

impl StreamBuf {
    /// Whether a read would find bytes, the end, or an error (not `WouldBlock`).
    pub fn ready(&self) -> bool {
        !self.chunks.is_empty() || self.ended || self.error.is_some()
    }
}

impl Read for StreamBuf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

impl BufRead for StreamBuf {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.chunks.is_empty() {
            if let Some(e) = self.error.take() {
                self.ended = true;
                return Err(e);
            }
            if self.ended {
                return Ok(&[]);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(&self.chunks[0][self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
        if self.chunks.front().is_some_and(|c| self.at >= c.len()) {
            self.chunks.pop_front();
            self.at = 0;
        }
    }
}

enum Chunk {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// The threads reading stream inputs, and the one channel they all send to.
pub struct Streams {
    tx: SyncSender<(usize, Chunk)>,
    rx: Receiver<(usize, Chunk)>,
}

impl Default for Streams {
    fn default() -> Self {
        let (tx, rx) = sync_channel(STREAM_QUEUE);
        Streams { tx, rx }
    }
}

impl Streams {
    /// Starts a thread reading `reader` as input `index`.
    fn spawn(&self, index: usize, mut reader: Box<dyn Read + Send>) {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            loop {
                let mut buf = vec![0u8; STREAM_CHUNK];
                let chunk = match reader.read(&mut buf) {
                    Ok(0) => Chunk::End,
                    Ok(n) => {
                        buf.truncate(n);
                        Chunk::Data(buf)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Chunk::Failed(e),
                };
                let last = !matches!(chunk, Chunk::Data(_));
                if tx.send((index, chunk)).is_err() || last {
                    break;
                }
            }
        });
    }

    /// Moves what the threads have sent into their inputs' buffers; waits up to `wait` for
    /// the first chunk when none is there. Returns whether anything arrived.
    pub fn receive(&self, inputs: &mut [Opened], wait: Duration) -> bool {
        let buffered = |inputs: &[Opened]| -> usize {
            inputs
                .iter()
                .map(|i| match &i.source {
                    Source::Stream(s) => s.chunks.iter().map(Vec::len).sum::<usize>(),
                    Source::File(_) => 0,
                })
                .sum()
        };
        let mut room = STREAM_BUFFER.saturating_sub(buffered(inputs));
        if room == 0 {
            return false;
        }
        let mut got = false;
        let mut first = if wait.is_zero() {
            None
        } else {
            self.rx.recv_timeout(wait).ok()
        };
        while let Some((index, chunk)) = first
            .take()
            .or_else(|| (room > 0).then(|| self.rx.try_recv().ok()).flatten())
        {
            got = true;
            if let Chunk::Data(d) = &chunk {
                room = room.saturating_sub(d.len());
            }
            if let Some(Opened {
                source: Source::Stream(buf),
                ..
            }) = inputs.get_mut(index)
            {
                match chunk {
                    Chunk::Data(d) => buf.chunks.push_back(d),
                    Chunk::End => buf.ended = true,
                    Chunk::Failed(e) => buf.error = Some(e),
                }
            }
        }
        got
    }
}

/// Opens `path` (`-`: stdin) as input `index`; streams get their reading thread.
///
/// # Errors
/// The file can't be opened, or is a directory (named).
fn open(path: &Path, index: usize, streams: &Streams) -> anyhow::Result<Opened> {
    let name = path.display().to_string();
    if path.as_os_str() == "-" {
        streams.spawn(index, Box::new(io::stdin()));
        return Ok(Opened {
            name,
            source: Source::Stream(StreamBuf::default()),
            size: None,
        });
    }
    let f = File::open(path).with_context(|| format!("cannot read input {name}"))?;
    let meta = f
        .metadata()
        .with_context(|| format!("cannot read input {name}"))?;
    if meta.is_dir() {
        bail!("cannot read input {name}: is a directory");
    }
    if !meta.file_type().is_file() {
        streams.spawn(index, Box::new(f));
        return Ok(Opened {
            name,
            source: Source::Stream(StreamBuf::default()),
            size: None,
        });
    }
    Ok(Opened {
        name,
        source: Source::File(Box::new(BufReader::with_capacity(1 << 18, f))),
        size: Some(meta.len()),
    })
}

/// Opens every input, so that a typo in the last path fails before anything is read or any
/// output file is created.
///
/// # Errors
/// The first input that can't be opened.
pub fn open_all(paths: &[PathBuf], streams: &Streams) -> anyhow::Result<Vec<Opened>> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| open(p, i, streams))
        .collect()
}

/// Fails when an output path is one of the inputs or is given twice: writing would destroy
/// an input, or interleave two streams in one file.
///
/// # Errors
/// Names the flag and the path.
pub fn check_outputs(
    inputs: &[PathBuf],
    outputs: &[(&str, &Option<PathBuf>)],
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // the path with every link resolved (an output that does not exist yet: its directory's)
    let key = |p: &Path| {
        p.canonicalize().unwrap_or_else(|_| {
            let parent = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            parent
                .canonicalize()
                .map(|d| d.join(p.file_name().unwrap_or_default()))
                .unwrap_or_else(|_| p.to_path_buf())
        })
    };
    // the file itself (a hard link is another path to it)
    let file = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let stdin = inputs.iter().filter(|i| i.as_os_str() == "-").count();
    if stdin > 1 {
        bail!("stdin (-) is given {stdin} times as an input: give it once");
    }
    let mut seen: Vec<(PathBuf, &str)> = Vec::new();
    for (flag, path) in outputs {
        let Some(path) = path else { continue };
        if path.as_os_str() == "-" {
            continue;
        }
        let k = key(path);
        let f = file(path);
        if inputs
            .iter()
            .any(|i| i.as_os_str() != "-" && (key(i) == k || (f.is_some() && file(i) == f)))
        {
            bail!("{flag} {}: is also an input", path.display());
        }
        if let Some((_, other)) = seen.iter().find(|(s, _)| *s == k) {
            bail!("{flag} {}: already given to {other}", path.display());
        }
        seen.push((k, flag));
    }
    Ok(())
}

/// Reads up to the first non-blank line of input `index` (at most `max` bytes of it) and
/// puts those bytes back in front of the rest: `--format auto` looks at a whole line even
/// when a stream delivers it in pieces (waiting for it).
///
/// # Errors
/// Reading fails (named).
pub fn peek_first_line(
    inputs: &mut [Opened],
    index: usize,
    max: usize,
    streams: &Streams,
) -> anyhow::Result<Vec<u8>> {
    let mut head = Vec::new();
    // where the line being read starts in `head`
    let mut line_start = 0;
    loop {
        let input = &mut inputs[index];
        let name = input.name.clone();
        let limit = max.saturating_sub(head.len()).max(1) as u64;
        let read = match &mut input.source {
            Source::File(r) => r.take(limit).read_until(b'\n', &mut head),
            Source::Stream(s) => {
                if !s.ready() {
                    streams.receive(inputs, Duration::from_millis(100));
                    continue;
                }
                s.take(limit).read_until(b'\n', &mut head)
            }
        };
        let n = match read {
            Ok(n) => n,
            // part of a line arrived (kept in `head`); wait for the rest
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        };
        if n == 0 || head.len() >= max {
            break;
        }
        if head.ends_with(b"\n") {
            if !head[line_start..].iter().all(u8::is_ascii_whitespace) {
                break;
            }
            line_start = head.len();
        }
    }
    let input = &mut inputs[index];
    match &mut input.source {
        Source::File(r) => {
            let rest = std::mem::replace(r, Box::new(Cursor::new(Vec::new())));
            *r = Box::new(BufReader::with_capacity(
                1 << 18,
                Cursor::new(head.clone()).chain(rest),
            ));
        }
        Source::Stream(s) => {
            if !head.is_empty() {
                // the bytes go back in front of what is buffered
                let rest_of_first = s.chunks.pop_front().map(|c| c[s.at..].to_vec());
                s.at = 0;
                if let Some(r) = rest_of_first {
                    s.chunks.push_front(r);
                }
                s.chunks.push_front(head.clone());
            }
        }
    }
    Ok(head)
}
