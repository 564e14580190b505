//! Opening `replay`'s and `parse`'s inputs: regular files are read directly; stdin and other
//! streams (pipes, FIFOs) by a thread each, so that a quiet stream never blocks the run: its
//! partial batches go through, and after `idle-timeout` it stops holding the watermark back.
//!
//! Files are compared by identity (device and inode), not by name: an input given twice
//! (under two names, through a link, or as `-` while stdin is redirected from it) is refused,
//! as each of its records would count twice (or, for a stream, two readers would split its
//! lines); an output that is an input (through a symbolic or hard link too) is refused before
//! any output is created or truncated, as are two outputs that are one file (their lines
//! would interleave). Character devices (`/dev/null`, a terminal) may take several outputs.
//! A stdin that is closed, or `/dev/null` (which is what the Rust runtime puts in place of a
//! closed fd 0 before `main`), is refused as an input: there is nothing to read, and a run
//! reporting 0 records with exit status 0 would hide that the producer was never connected;
//! an empty pipe or an empty file is an empty input.
//!
//! A regular file parsed on several threads, of at least a MiB and not modified for a minute,
//! is mapped in memory rather than read ([`FileInput::map_rest`]): its chunks are parsed where
//! the page cache holds them.
//!
//! At most [`MAX_OPEN_FILES`] regular files are open at once: each is opened when it is read,
//! and the one read least recently is closed (its position kept) when another needs the room,
//! so a run over thousands of files works under a low `ulimit -n`. Streams stay open.

use std::collections::VecDeque;
use std::fs::{File, Metadata};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
/// Regular files open at once (the others are closed, their position kept, and opened again
/// when read).
pub const MAX_OPEN_FILES: usize = 32;
/// Bytes of blank lines read before an input's first line when telling its format: beyond
/// them the format can't be told (an error, never a silently skipped input).
const MAX_BLANK_PREFIX: usize = 16 << 20;
/// A file's read buffer, bytes: the size of the chunk reader's reads, so that they go past
/// the buffer straight into the chunks.
const FILE_BUFFER: usize = ingest::parallel::READ_BYTES;

/// A file's identity: its device and inode (what a symbolic or hard link shares with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    /// A character device (a terminal, `/dev/null`): may take several outputs.
    device: bool,
}

impl FileId {
    fn of(meta: &Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            device: meta.file_type().is_char_device(),
        }
    }
}

/// A regular file input, opened while it is read: its reader is dropped by [`make_room`]
/// when other files need the room, and opened again at the byte it had reached.
pub struct FileInput {
    path: PathBuf,
    id: FileId,
    /// Bytes consumed so far.
    offset: u64,
    reader: Option<BufReader<File>>,
    /// When it was last made ready for reading (a tick of [`make_room`]).
    used: u64,
}

impl FileInput {
    /// Whether its file is open now.
    pub fn is_open(&self) -> bool {
        self.reader.is_some()
    }

    /// Closes its file, keeping the position (it is opened again when read).
    pub fn close(&mut self) {
        self.reader = None;
    }

    fn reader(&mut self) -> io::Result<&mut BufReader<File>> {
        if self.reader.is_none() {
            let mut f = File::open(&self.path)?;
            if FileId::of(&f.metadata()?) != self.id {
                return Err(io::Error::other(
                    "replaced by another file while being read",
                ));
            }
            f.seek(SeekFrom::Start(self.offset))?;
            self.reader = Some(BufReader::with_capacity(FILE_BUFFER, f));
        }
        Ok(self.reader.as_mut().expect("opened above"))
    }
}

/// A file mapped in memory by [`FileInput::map_rest`], read-only.
pub struct MappedFile(memmap2::Mmap);

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Granularity of [`MappedFile::release`], bytes: a multiple of every common page size.
pub const RELEASE_ALIGN: usize = 1 << 16;

impl MappedFile {
    /// Takes the pages of bytes `from..to` out of the process's resident memory, rounded
    /// inwards to [`RELEASE_ALIGN`]: their lines were parsed. The page cache keeps them; a
    /// later read of those bytes maps them again. Without it a mapped file's pages would
    /// count in the resident memory until its end (the 533 MB file of the 100 k-pair
    /// benchmark took `replay`'s peak from 580 MiB to 1,057 MiB). Returns where the pages
    /// released end (`from` when none was).
    #[allow(unsafe_code)] // see SAFETY below
    pub fn release(&self, from: usize, to: usize) -> usize {
        let start = from.next_multiple_of(RELEASE_ALIGN);
        let end = (to / RELEASE_ALIGN) * RELEASE_ALIGN;
        if end <= start {
            return from;
        }
        // SAFETY: `unchecked_advise_range` is unsafe because `MADV_DONTNEED` discards the
        // private changes of a writable mapping and zero-fills anonymous memory. This map is
        // read-only and backed by the file: a later read of the range faults the file's own
        // bytes back in, so every slice of it keeps its contents.
        let released = unsafe {
            self.0
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
        if released.is_ok() { end } else { from }
    }
}

/// Files smaller than this are read, not mapped: their copy costs less than a mapping.
pub const MAP_MIN_BYTES: u64 = 1 << 20;

/// A file modified less than this long ago is read, not mapped: it may still be written, and
/// then rotated by truncation (logrotate's `copytruncate`).
pub const MAP_QUIET: Duration = Duration::from_secs(60);

impl FileInput {
    /// The file mapped in memory, and the position reached in it (bytes), so that its chunks
    /// are parsed where the page cache holds them instead of being copied out of it first
    /// (that copy was 16 % of the CPU time of `replay -j2` on NGINX logs, and its thread's
    /// largest cost). The file is read up to its size now: what is appended later is not read
    /// (as when a read reached its end before the append). Its descriptor is closed.
    ///
    /// Its resident memory stays bounded: parsed pages are released ([`MappedFile::release`]),
    /// and so is the excess of a line longer than `--max-line-bytes` as it is scanned (the
    /// line is rejected all the same).
    ///
    /// `None` (read it instead) for a file under [`MAP_MIN_BYTES`], one modified less than
    /// [`MAP_QUIET`] ago, or one the system does not map: a mapped file truncated while it is
    /// read ends the process (`SIGBUS` on a page past its new end), so a file that may still
    /// be written (and rotated by truncation) is read.
    ///
    /// # Errors
    /// Opening the file again (it was closed to make room) or reading its metadata.
    #[allow(unsafe_code)] // `Mmap::map`, see SAFETY below
    pub fn map_rest(&mut self) -> io::Result<Option<(Arc<MappedFile>, usize)>> {
        let offset = self.offset;
        let file = self.reader()?.get_ref();
        let meta = file.metadata()?;
        let quiet = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= MAP_QUIET);
        if meta.len() < MAP_MIN_BYTES || !quiet || offset > meta.len() {
            return Ok(None);
        }
        // SAFETY: `Mmap::map` is unsafe because the bytes behind the slice change if the file
        // is modified while mapped. Here they are only read, by parsers that check every byte
        // they use and keep no invariant between two reads of one byte; a file quiet for a
        // minute is taken as done (a truncation ends the process, see above).
        let map = match unsafe { memmap2::Mmap::map(file) } {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "not mapped, read");
                return Ok(None);
            }
        };
        if map.len() as u64 != meta.len() {
            return Ok(None);
        }
        let _ = map.advise(memmap2::Advice::Sequential);
        tracing::debug!(path = %self.path.display(), bytes = map.len(), from = offset, "mapped");
        self.close();
        let start = usize::try_from(offset).expect("within a mapped file");
        Ok(Some((Arc::new(MappedFile(map)), start)))
    }
}

impl Read for FileInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader()?.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl BufRead for FileInput {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader()?.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if let Some(r) = &mut self.reader {
            r.consume(n);
            self.offset += n as u64;
        }
    }
}

/// How an input is read.
pub enum Source {
    /// A regular file (never waits), opened while it is read.
    File(FileInput),
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
    /// What it is.
    id: FileId,
}

impl Opened {
    /// Closes a file input (it has been read to its end); streams are left as they are.
    pub fn close(&mut self) {
        if let Source::File(f) = &mut self.source {
            f.close();
        }
    }
}

/// Makes input `index` ready to read: when it is a closed file and [`MAX_OPEN_FILES`] files
/// are open, closes the one read least recently.
pub fn make_room(inputs: &mut [Opened], index: usize) {
    let tick = inputs
        .iter()
        .filter_map(|i| match &i.source {
            Source::File(f) => Some(f.used),
            Source::Stream(_) => None,
        })
        .max()
        .unwrap_or(0)
        + 1;
    let Source::File(f) = &mut inputs[index].source else {
        return;
    };
    f.used = tick;
    if f.is_open() {
        return;
    }
    let open: Vec<usize> = (0..inputs.len())
        .filter(|&i| matches!(&inputs[i].source, Source::File(f) if f.is_open()))
        .collect();
    if open.len() >= MAX_OPEN_FILES
        && let Some(&lru) = open.iter().min_by_key(|&&i| match &inputs[i].source {
            Source::File(f) => f.used,
            Source::Stream(_) => u64::MAX,
        })
    {
        inputs[lru].close();
    }
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

/// A duplicate of fd 0, to know what stdin is (`fstat`) and read it.
///
/// # Errors
/// fd 0 is closed, or is `/dev/null` (what the Rust runtime opens in place of a closed fd 0).
fn stdin_file() -> anyhow::Result<(File, Metadata)> {
    use std::os::fd::AsFd;
    const NOTHING: &str = "stdin (-) is closed or /dev/null: there is nothing to read \
                           (pipe the log in, or name the file)";
    let fd = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(9) => bail!(NOTHING), // EBADF
        Err(e) => return Err(e).context("cannot read stdin (-)"),
    };
    let f = File::from(fd);
    let meta = f.metadata().context("cannot read stdin (-)")?;
    let null = std::fs::metadata("/dev/null").ok();
    if meta.file_type().is_char_device() && null.is_some_and(|n| n.rdev() == meta.rdev()) {
        bail!(NOTHING);
    }
    Ok((f, meta))
}

/// Opens `path` (`-`: stdin) as input `index`; streams get their reading thread, regular
/// files are closed again until they are read.
///
/// # Errors
/// The file can't be opened, or is a directory (named); stdin is closed.
fn open(path: &Path, index: usize, streams: &Streams) -> anyhow::Result<Opened> {
    let name = path.display().to_string();
    if path.as_os_str() == "-" {
        let (f, meta) = stdin_file()?;
        streams.spawn(index, Box::new(f));
        return Ok(Opened {
            name,
            source: Source::Stream(StreamBuf::default()),
            size: None,
            id: FileId::of(&meta),
        });
    }
    let f = File::open(path).with_context(|| format!("cannot read input {name}"))?;
    let meta = f
        .metadata()
        .with_context(|| format!("cannot read input {name}"))?;
    if meta.is_dir() {
        bail!("cannot read input {name}: is a directory");
    }
    let id = FileId::of(&meta);
    if !meta.file_type().is_file() {
        streams.spawn(index, Box::new(f));
        return Ok(Opened {
            name,
            source: Source::Stream(StreamBuf::default()),
            size: None,
            id,
        });
    }
    Ok(Opened {
        name,
        source: Source::File(FileInput {
            path: path.to_path_buf(),
            id,
            offset: 0,
            reader: None,
            used: 0,
        }),
        size: Some(meta.len()),
        id,
    })
}

/// Checks every input, so that a typo in the last path fails before anything is read or any
/// output file is created; starts the streams' threads. Regular files are closed again (see
/// the [module docs](self)).
///
/// # Errors
/// The first input that can't be opened; stdin (`-`) given twice, closed or `/dev/null`; an
/// input that is the same file as another (by identity: another name, a link, `-`
/// redirected from it), naming both.
pub fn open_all(paths: &[PathBuf], streams: &Streams) -> anyhow::Result<Vec<Opened>> {
    let stdin = paths.iter().filter(|i| i.as_os_str() == "-").count();
    if stdin > 1 {
        bail!("stdin (-) is given {stdin} times as an input: give it once");
    }
    let mut opened: Vec<Opened> = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter().enumerate() {
        let input = open(p, i, streams)?;
        if let Some(first) = opened.iter().find(|o| o.id == input.id) {
            bail!(
                "input {} is the same file as input {}: its records would count twice \
                 (or two readers would split its lines); give it once",
                input.name,
                first.name
            );
        }
        opened.push(input);
    }
    Ok(opened)
}

/// Where an output path leads: the file it names (by identity), or, when none exists yet,
/// the path it would be created at (every symbolic link followed, its directory resolved).
#[derive(Debug, PartialEq, Eq)]
enum Target {
    File(FileId),
    New(PathBuf),
}

impl Target {
    fn of(path: &Path) -> Self {
        if let Ok(meta) = std::fs::metadata(path) {
            return Target::File(FileId::of(&meta));
        }
        // a dangling symbolic link creates the file it points to
        let mut p = path.to_path_buf();
        for _ in 0..40 {
            match std::fs::read_link(&p) {
                Ok(to) if to.is_absolute() => p = to,
                Ok(to) => p = p.parent().unwrap_or(Path::new("")).join(to),
                Err(_) => break,
            }
        }
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Target::New(
            dir.canonicalize()
                .map(|d| d.join(p.file_name().unwrap_or_default()))
                .unwrap_or(p),
        )
    }

    /// A character device (`/dev/null`, a terminal) is no file to protect.
    fn is_device(&self) -> bool {
        matches!(self, Target::File(id) if id.device)
    }
}

/// Fails when an output is one of the inputs, or two outputs are one file, compared by
/// identity (device and inode: through symbolic and hard links too) before any output is
/// created or truncated: writing would destroy an input, or interleave two streams in one
/// file. `stdout` says whether stdout is written: a stdout redirected onto an input (`>>`)
/// is refused too.
///
/// # Errors
/// Names the flag, the path, and the input or other output it is.
pub fn check_outputs(
    inputs: &[Opened],
    outputs: &[(&str, &Option<PathBuf>)],
    stdout: bool,
) -> anyhow::Result<()> {
    let input_of = |target: &Target| match target {
        Target::File(id) if !id.device => inputs.iter().find(|i| i.id == *id),
        _ => None,
    };
    if stdout {
        use std::os::fd::AsFd;
        let meta = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| File::from(fd).metadata());
        if let Ok(meta) = meta
            && let Some(input) = input_of(&Target::File(FileId::of(&meta)))
        {
            bail!(
                "stdout is input {}: writing it would overwrite what is being read; \
                 redirect stdout elsewhere",
                input.name
            );
        }
    }
    let mut seen: Vec<(Target, String)> = Vec::new();
    for (flag, path) in outputs {
        let Some(path) = path else { continue };
        if path.as_os_str() == "-" {
            continue;
        }
        let target = Target::of(path);
        if let Some(input) = input_of(&target) {
            bail!(
                "{flag} {}: is also an input ({}): writing it would destroy the input; \
                 name another file",
                path.display(),
                input.name
            );
        }
        if !target.is_device()
            && let Some((_, other)) = seen.iter().find(|(t, _)| *t == target)
        {
            bail!(
                "{flag} {}: the same file as {other}: their lines would interleave; \
                 name another file",
                path.display()
            );
        }
        seen.push((target, format!("{flag} {}", path.display())));
    }
    Ok(())
}

/// Reads up to the first non-blank line of input `index` (at most `max` bytes of it, after
/// any blank lines) and puts those bytes back in front of the rest (a file is read again
/// from its start): `--format auto` looks at a whole line even when a stream delivers it in
/// pieces (waiting for it).
///
/// # Errors
/// Reading fails (named); more than 16 MiB of blank lines come before the first line.
pub fn peek_first_line(
    inputs: &mut [Opened],
    index: usize,
    max: usize,
    streams: &Streams,
) -> anyhow::Result<Vec<u8>> {
    make_room(inputs, index);
    let mut head = Vec::new();
    // where the line being read starts in `head`
    let mut line_start = 0;
    loop {
        let input = &mut inputs[index];
        let name = input.name.clone();
        let limit = max.saturating_sub(head.len() - line_start).max(1) as u64;
        let read = match &mut input.source {
            Source::File(r) => Read::take(&mut *r, limit).read_until(b'\n', &mut head),
            Source::Stream(s) => {
                if !s.ready() {
                    streams.receive(inputs, Duration::from_millis(100));
                    continue;
                }
                Read::take(&mut *s, limit).read_until(b'\n', &mut head)
            }
        };
        let n = match read {
            Ok(n) => n,
            // part of a line arrived (kept in `head`); wait for the rest
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        };
        if n == 0 {
            break;
        }
        let blank = head[line_start..].iter().all(u8::is_ascii_whitespace);
        if !blank && (head.ends_with(b"\n") || head.len() - line_start >= max) {
            break;
        }
        if head.ends_with(b"\n") {
            line_start = head.len();
        }
        if head.len() > MAX_BLANK_PREFIX {
            bail!(
                "{name}: its first {} MiB are blank: cannot tell the log format; pass --format",
                MAX_BLANK_PREFIX >> 20
            );
        }
    }
    match &mut inputs[index].source {
        Source::File(f) => {
            f.close();
            f.offset = 0;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `lines` numbered lines, modified `age` ago, opened as an input.
    fn input_file(dir: &Path, lines: usize, age: Duration) -> (Opened, Vec<u8>) {
        let path = dir.join("in.log");
        let text: Vec<u8> = (0..lines)
            .flat_map(|i| format!("line {i:07} of the mapped file\n").into_bytes())
            .collect();
        std::fs::write(&path, &text).unwrap();
        let f = File::options().append(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
        let input = open(&path, 0, &Streams::default()).unwrap();
        (input, text)
    }

    fn file(input: &mut Opened) -> &mut FileInput {
        match &mut input.source {
            Source::File(f) => f,
            Source::Stream(_) => panic!("{} is a regular file", input.name),
        }
    }

    #[test]
    fn a_quiet_large_file_is_mapped_from_where_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        // 100,000 lines of 32 bytes: 3.2 MB, an hour old
        let (mut input, text) = input_file(dir.path(), 100_000, Duration::from_secs(3600));
        let f = file(&mut input);
        let mut first = [0u8; 32];
        f.read_exact(&mut first).unwrap();
        let (map, at) = f.map_rest().unwrap().expect("mapped");
        assert_eq!(at, 32);
        assert_eq!((*map).as_ref(), text.as_slice());
        assert!(!f.is_open(), "its descriptor is closed");
        // pages released from the resident memory still read as the file's bytes
        let released = map.release(10, 2_000_000);
        assert_eq!(released, 1_966_080, "rounded inwards to 64 KiB");
        assert_eq!((*map).as_ref(), text.as_slice());
        assert_eq!(map.release(70_000, 100_000), 70_000, "no whole page: none");
    }

    #[test]
    fn a_file_written_a_moment_ago_or_small_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut input, _) = input_file(dir.path(), 100_000, Duration::from_secs(5));
        let f = file(&mut input);
        assert!(f.map_rest().unwrap().is_none(), "may still be written");
        let (mut input, _) = input_file(dir.path(), 1_000, Duration::from_secs(3600));
        let f = file(&mut input);
        assert!(f.map_rest().unwrap().is_none(), "32 kB: read");
    }
}
