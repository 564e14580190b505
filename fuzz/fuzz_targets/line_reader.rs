//! [`LineReader`]: the line splitting, length limit, byte order mark, `\r\n`, blank lines,
//! batching and the resumption after a `WouldBlock`, against a model. The input's first bytes
//! choose the limits (longest line, rows per batch, lines per call) and how the reader hands
//! out bytes (chunk sizes, where it blocks); the rest is the input. A test parser makes one
//! record per line naming the line (source = its text), rejects lines starting with `!` and
//! yields nothing for lines starting with `#`. Whatever the chunking, the result is the
//! model's, and the same as [`ingest::read_lines`] over the whole input.
#![no_main]

use std::io::{BufRead, ErrorKind, Read};

use arbitrary::Unstructured;
use graywatch_fuzz::{Collected, Expect, lines_from};
use ingest::{
    IngestSink, IngestStats, LineParser, LineReader, ReadStatus, ReaderOptions, Reject,
    RejectReason, RejectedLine,
};
use libfuzzer_sys::fuzz_target;
use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter, flow_records};

struct Echo;

impl LineParser for Echo {
    fn parse_line(&mut self, line: &[u8], out: &mut FlowBatchBuilder) -> Result<usize, Reject> {
        match line.first() {
            Some(b'!') => Err(Reject::new(RejectReason::Malformed, "starts with !")),
            Some(b'#') => Ok(0),
            _ => {
                let text = String::from_utf8_lossy(line);
                out.append(&FlowRecordRef::new(1, &text, "d", Reporter::Envoy));
                Ok(1)
            }
        }
    }
}

/// Hands out `data` in chunks of the given sizes, blocking (once) where `blocks` says.
struct Chunked<'a> {
    data: &'a [u8],
    at: usize,
    sizes: Vec<usize>,
    turn: usize,
    blocks: Vec<bool>,
    blocked: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let got = self.fill_buf()?;
            let n = got.len().min(buf.len());
            buf[..n].copy_from_slice(&got[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Chunked<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let t = self.turn % self.sizes.len();
        if self.blocks[t] && !self.blocked && self.at < self.data.len() {
            self.blocked = true;
            return Err(ErrorKind::WouldBlock.into());
        }
        let end = (self.at + self.sizes[t]).min(self.data.len());
        Ok(&self.data[self.at..end])
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
        self.turn += 1;
        self.blocked = false;
    }
}

/// What the reader should make of an input.
struct Model {
    /// (line, text) of each record.
    records: Vec<(u64, String)>,
    /// (line, reason) of each reject.
    rejects: Vec<(u64, &'static str)>,
    blank: u64,
    lines: u64,
}

fn model(data: &[u8], max: usize) -> Model {
    let (mut records, mut rejects, mut blank) = (Vec::new(), Vec::new(), 0);
    let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    for (i, raw) in pieces.iter().enumerate() {
        let n = i as u64 + 1;
        if raw.len() > max {
            rejects.push((n, "line-too-long"));
            continue;
        }
        let mut line = *raw;
        if n == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            blank += 1;
        } else if line[0] == b'!' {
            rejects.push((n, "malformed"));
        } else if line[0] != b'#' {
            records.push((n, String::from_utf8_lossy(line).into_owned()));
        }
    }
    Model {
        records,
        rejects,
        blank,
        lines: pieces.len() as u64,
    }
}

struct Sink {
    records: Vec<(u64, String)>,
    rejects: Vec<(u64, &'static str)>,
    batch_rows: usize,
}

impl IngestSink for Sink {
    type Error = std::convert::Infallible;

    fn batch(
        &mut self,
        batch: arrow::array::RecordBatch,
        lines: &[u64],
    ) -> Result<(), Self::Error> {
        assert_eq!(lines.len(), batch.num_rows());
        assert!(
            batch.num_rows() <= self.batch_rows,
            "a batch over batch_rows"
        );
        let records = flow_records(&batch).unwrap();
        self.records
            .extend(lines.iter().zip(records).map(|(&l, r)| (l, r.source)));
        Ok(())
    }

    fn reject(&mut self, rejected: &RejectedLine<'_>) -> Result<(), Self::Error> {
        self.rejects
            .push((rejected.line_no, rejected.reject.reason.as_str()));
        Ok(())
    }
}

fuzz_target!(|input: &[u8]| {
    let mut u = Unstructured::new(input);
    let (Ok(max), Ok(batch_rows), Ok(per_call), Ok(n)) = (
        u.int_in_range(1..=40usize),
        u.int_in_range(1..=4usize),
        u.int_in_range(1..=5u64),
        u.int_in_range(1..=4usize),
    ) else {
        return;
    };
    let mut sizes = Vec::new();
    let mut blocks = Vec::new();
    for _ in 0..n {
        sizes.push(u.int_in_range(1..=17usize).unwrap_or(1));
        blocks.push(u.ratio(1, 3).unwrap_or(false));
    }
    let data = u.take_rest();
    let opts = ReaderOptions {
        batch_rows,
        max_line_bytes: max,
        ..ReaderOptions::default()
    };
    let Model {
        records: want_records,
        rejects: want_rejects,
        blank: want_blank,
        lines: want_lines,
    } = model(data, max);

    let mut reader = Chunked {
        data,
        at: 0,
        sizes,
        turn: 0,
        blocks,
        blocked: false,
    };
    let mut sink = Sink {
        records: Vec::new(),
        rejects: Vec::new(),
        batch_rows,
    };
    let mut stats = IngestStats::default();
    let mut lines = LineReader::new("chunked");
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls <= 4 * data.len() + 8, "the reader makes no progress");
        let before = lines.line_no();
        let status = lines
            .read(
                &mut reader,
                &mut Echo,
                &opts,
                &mut stats,
                &mut sink,
                per_call,
            )
            .unwrap();
        assert!(lines.line_no() - before <= per_call);
        match status {
            ReadStatus::End => break,
            ReadStatus::More => {}
            // what a driver does when its input has nothing right now: hand on what it has
            ReadStatus::Pending => {
                lines.flush(&mut sink).unwrap();
            }
        }
    }
    lines
        .finish_parser(&mut Echo, &mut stats, &mut sink)
        .unwrap();
    assert_eq!(sink.records, want_records);
    assert_eq!(sink.rejects, want_rejects);
    assert_eq!(stats.blank_lines, want_blank);
    assert_eq!(stats.lines, want_lines);
    assert_eq!(lines.line_no(), want_lines);
    assert_eq!(stats.bytes, data.len() as u64);
    assert_eq!(stats.records, want_records.len() as u64);

    // the whole input at once, through the shared checks
    let expect = Expect {
        max_rows: 1,
        start_range: None,
        dash_is_none: false,
    };
    let Collected {
        records, rejects, ..
    } = lines_from(&mut Echo, "whole", data, data, &opts, &expect);
    let sources: Vec<String> = records.into_iter().map(|r| r.source).collect();
    let want: Vec<String> = want_records.into_iter().map(|r| r.1).collect();
    assert_eq!(sources, want);
    assert_eq!(rejects.len(), want_rejects.len());
});
