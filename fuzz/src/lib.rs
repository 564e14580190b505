//! Checks shared by graywatch's fuzz targets (`fuzz_targets/`): each target feeds bytes to a
//! parser and asserts the invariants below, so a wrong count or a broken record fails the run,
//! not only a panic.
//!
//! - [`one_line`]: one input as one line. `Ok(n)` appends exactly `n` rows (at most
//!   `max_rows`); a reject appends nothing and says what was wrong (a reason and a non-empty
//!   detail).
//! - [`lines`]: the input as a file, through [`ingest::read_lines`]: every line counted once
//!   (lines = the input's `\n`-separated lines, bytes = its length), rows handed on = records
//!   counted, each batch's line numbers one per row and within the input, each reject at a
//!   line in the input, in order, rendered as `INPUT:LINE: REASON: DETAIL`.
//! - [`check_record`]: each record names both ends and, for a proxy log format, starts within
//!   the years its timestamps can say (1970 to 9999).

use std::io::BufRead;

use arrow::array::RecordBatch;
use ingest::{IngestSink, IngestStats, LineParser, ReaderOptions, RejectedLine};
use schemas::{FlowBatchBuilder, FlowRecord, flow_records};

/// 1970-01-01T00:00:00 less the largest UTC offset a log may carry (±99:59), µs.
pub const MIN_LOG_START_US: i64 = -(99 * 3600 + 59 * 60) * 1_000_000;
/// 10000-01-01T00:00:00 plus the largest UTC offset, µs: four-digit years end there.
pub const MAX_LOG_START_US: i64 = 253_402_300_800_000_000 + (99 * 3600 + 59 * 60) * 1_000_000;

/// What the records of a format promise.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Records at most per line (1 for access logs; more for spans, whose held children are
    /// released by their parent's line).
    pub max_rows: usize,
    /// Where every start time lies, µs, when the format bounds it: a calendar timestamp
    /// with a four-digit year from 1970 is within [`MIN_LOG_START_US`]..=[`MAX_LOG_START_US`].
    pub start_range: Option<(i64, i64)>,
    /// `-` means "none" in this format: no optional text field may hold a lone `-`.
    pub dash_is_none: bool,
}

/// An access-log format: one record per line, calendar start times, `-` for none.
pub const ACCESS_LOG: Expect = Expect {
    max_rows: 1,
    start_range: Some((MIN_LOG_START_US, MAX_LOG_START_US)),
    dash_is_none: true,
};

/// Checks one record of a batch (see the [crate docs](crate)).
pub fn check_record(r: &FlowRecord, expect: &Expect) {
    assert!(!r.source.is_empty(), "empty source: {r:?}");
    assert!(!r.destination.is_empty(), "empty destination: {r:?}");
    assert_eq!(r.schema_version, schemas::SCHEMA_VERSION);
    if let Some((min, max)) = expect.start_range {
        assert!(
            (min..=max).contains(&r.start_us),
            "start out of range: {r:?}"
        );
    }
    if expect.dash_is_none {
        for (name, v) in [
            ("method", &r.method),
            ("protocol", &r.protocol),
            ("response_flags", &r.response_flags),
            ("upstream_host", &r.upstream_host),
            ("request_id", &r.request_id),
        ] {
            assert_ne!(v.as_deref(), Some("-"), "{name} is `-`: {r:?}");
        }
    }
}

/// Checks every row of a flow-record batch; returns the records.
pub fn check_batch(batch: &RecordBatch, expect: &Expect) -> Vec<FlowRecord> {
    let records = flow_records(batch).expect("a parser's batch is in the flow-record schema");
    assert_eq!(records.len(), batch.num_rows());
    for r in &records {
        check_record(r, expect);
    }
    records
}

/// Parses `line` as one line; checks the outcome (see the [crate docs](crate)) and returns the
/// records, or the reject's reason.
pub fn one_line(
    parser: &mut dyn LineParser,
    line: &[u8],
    expect: &Expect,
) -> Result<Vec<FlowRecord>, &'static str> {
    let mut out = FlowBatchBuilder::new();
    match parser.parse_line(line, &mut out) {
        Ok(n) => {
            assert_eq!(out.len(), n, "rows appended vs rows reported");
            assert!(n <= expect.max_rows, "{n} rows from one line");
            Ok(check_batch(&out.finish(), expect))
        }
        Err(reject) => {
            assert_eq!(out.len(), 0, "a rejected line appended rows: {reject}");
            assert!(!reject.detail.is_empty(), "a reject without detail");
            assert!(reject.to_string().starts_with(reject.reason.as_str()));
            Err(reject.reason.as_str())
        }
    }
}

/// What [`lines`] saw.
#[derive(Debug, Default)]
pub struct Collected {
    /// Every record, in order.
    pub records: Vec<FlowRecord>,
    /// The line number of each record.
    pub record_lines: Vec<u64>,
    /// Each reject: line number, reason name, the rendered `INPUT:LINE: …`.
    pub rejects: Vec<(u64, &'static str, String)>,
    /// The run's counts.
    pub stats: IngestStats,
}

struct Sink<'a> {
    expect: &'a Expect,
    got: Collected,
}

impl IngestSink for Sink<'_> {
    type Error = std::convert::Infallible;

    fn batch(&mut self, batch: RecordBatch, lines: &[u64]) -> Result<(), Self::Error> {
        assert_eq!(lines.len(), batch.num_rows(), "one line number per row");
        self.got.records.extend(check_batch(&batch, self.expect));
        self.got.record_lines.extend_from_slice(lines);
        Ok(())
    }

    fn reject(&mut self, rejected: &RejectedLine<'_>) -> Result<(), Self::Error> {
        self.got.rejects.push((
            rejected.line_no,
            rejected.reject.reason.as_str(),
            rejected.to_string(),
        ));
        Ok(())
    }
}

/// The input's lines as [`ingest::LineReader`] counts them: split at `\n`, a last line
/// without `\n` counted too.
pub fn count_lines(data: &[u8]) -> u64 {
    let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(!data.is_empty() && data.last() != Some(&b'\n'))
}

/// Reads `reader` (holding `data`) through `parser` as the input `input`, then checks the
/// counts (see the [crate docs](crate)).
pub fn lines_from<R: BufRead>(
    parser: &mut dyn LineParser,
    input: &str,
    data: &[u8],
    reader: R,
    opts: &ReaderOptions,
    expect: &Expect,
) -> Collected {
    let mut sink = Sink {
        expect,
        got: Collected::default(),
    };
    let mut stats = IngestStats::default();
    ingest::read_lines(input, reader, parser, opts, &mut stats, &mut sink)
        .expect("reading from memory fails only if the sink does; this one never does");
    let mut got = sink.got;
    assert_eq!(stats.lines, count_lines(data), "lines counted");
    assert_eq!(stats.bytes, data.len() as u64, "bytes counted");
    assert_eq!(stats.records, got.records.len() as u64, "records handed on");
    assert_eq!(
        stats.rejected(),
        got.rejects.len() as u64,
        "rejects handed on"
    );
    assert!(stats.blank_lines + stats.rejected() <= stats.lines);
    assert!(
        got.record_lines.windows(2).all(|w| w[0] <= w[1]),
        "records out of line order"
    );
    assert!(got.record_lines.iter().all(|&l| l >= 1 && l <= stats.lines));
    let mut last = 0;
    for (line_no, reason, shown) in &got.rejects {
        assert!(
            *line_no > last && *line_no <= stats.lines,
            "reject at line {line_no}"
        );
        last = *line_no;
        assert!(
            shown.starts_with(&format!("{input}:{line_no}: {reason}: ")),
            "{shown}"
        );
    }
    for (reason, n) in &stats.rejects {
        assert_eq!(
            *n,
            got.rejects
                .iter()
                .filter(|r| r.1 == reason.as_str())
                .count() as u64
        );
    }
    got.stats = stats;
    got
}

/// [`lines_from`] over `data` itself, small batches so that several are handed on.
pub fn lines(parser: &mut dyn LineParser, data: &[u8], expect: &Expect) -> Collected {
    let opts = ReaderOptions {
        batch_rows: 3,
        max_line_bytes: 1 << 16,
        ..ReaderOptions::default()
    };
    let got = lines_from(parser, "fuzz.log", data, data, &opts, expect);
    if expect.max_rows == 1 {
        // one record per line at most, and never from a blank or rejected line
        let s = &got.stats;
        assert!(s.records + s.blank_lines + s.rejected() <= s.lines);
        let mut seen = got.record_lines.clone();
        seen.dedup();
        assert_eq!(
            seen.len(),
            got.record_lines.len(),
            "two records from one line"
        );
        assert!(
            got.rejects
                .iter()
                .all(|(l, ..)| got.record_lines.binary_search(l).is_err()),
            "a rejected line gave a record"
        );
    }
    got
}

/// Splits fuzz input at its first `\n`: a header part (a format, a config) and the rest.
pub fn split_first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// When `data` is one plain line (no `\n`, no byte order mark, no trailing `\r`, not blank,
/// within the length limit of [`lines`]), reading it as a file gives what parsing it as a line
/// gave.
pub fn agree(data: &[u8], one: &Result<Vec<FlowRecord>, &'static str>, file: &Collected) {
    let plain = !data.contains(&b'\n')
        && !data.starts_with(b"\xEF\xBB\xBF")
        && data.last() != Some(&b'\r')
        && !data.iter().all(u8::is_ascii_whitespace)
        && data.len() <= 1 << 16;
    if plain {
        match one {
            Ok(records) => {
                assert_eq!(&file.records, records, "the reader changed the line");
                assert!(file.rejects.is_empty());
            }
            Err(reason) => {
                assert!(file.records.is_empty());
                assert_eq!(file.rejects.len(), 1);
                assert_eq!((file.rejects[0].0, file.rejects[0].1), (1, *reason));
            }
        }
    }
}
