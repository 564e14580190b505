//! Kafka messages parsed on worker threads.
//!
//! `run`'s main loop copies each message of an input partition (value, key, headers, offset)
//! into that partition's open [`Messages`]; a full one goes to a worker thread, which parses
//! it with a parser of its topic into flow batches ([`parse`]). The loop hands the results to
//! stage 1 in the order it handed the messages out, so stage 1 sees each partition's records
//! in offset order, as when the loop parsed them itself. Before a checkpoint, a revocation or
//! an idle input, the loop waits for every result: nothing in flight is ever behind an offset
//! it commits.

use std::ops::Range;

use ingest::{LineParser, Reject, WriterParser};
use schemas::FlowBatchBuilder;
use schemas::flow::DroppedValues;

use crate::pipeline::InputId;

/// Most rows per flow batch handed to the pipeline.
pub const BATCH_ROWS: usize = 8192;
/// A flow batch is handed to the pipeline once it holds this many bytes
/// ([`schemas::FlowBatchBuilder::bytes`]), with fewer than [`BATCH_ROWS`] rows if need be.
pub const BATCH_BYTES: usize = ingest::source::DEFAULT_BATCH_BYTES;
/// A partition's open [`Messages`] goes to a worker once its values hold this many bytes...
pub const HANDOUT_BYTES: usize = 1 << 20;
/// ...or it holds this many messages.
pub const HANDOUT_MESSAGES: usize = BATCH_ROWS;

/// A topic's parser, behind a writer when the shipper names who wrote each message.
pub enum TopicParser {
    /// The format's parser.
    Plain(Box<dyn LineParser>),
    /// The format's parser, crediting records to the writer the message's headers (or JSON
    /// envelope) name.
    Writer(Box<WriterParser>),
}

impl TopicParser {
    /// The parser for a message with `headers`.
    fn get(&mut self, headers: &[(&str, &[u8])]) -> &mut dyn LineParser {
        match self {
            TopicParser::Plain(p) => p.as_mut(),
            TopicParser::Writer(w) => {
                w.set_headers(headers);
                w.as_mut()
            }
        }
    }
}

/// One message of a [`Messages`]: ranges of its bytes and headers.
#[derive(Debug, Clone)]
struct Stored {
    offset: i64,
    value: Range<usize>,
    key: Option<Range<usize>>,
    headers: Range<usize>,
}

/// One message, as read back from a [`Messages`].
#[derive(Debug, PartialEq)]
pub struct MessageRef<'m> {
    /// Its offset in its partition.
    pub offset: i64,
    /// Its value.
    pub value: &'m [u8],
    /// Its key.
    pub key: Option<&'m [u8]>,
    /// Its headers, in order: name and value (an absent value is empty).
    pub headers: Vec<(&'m str, &'m [u8])>,
}

/// Messages of one input partition, in offset order, copied out of the consumer to be parsed
/// on a worker thread (with the flow-batch builder they are parsed into, reused).
pub struct Messages {
    /// The partition's key in the main loop's map: topic and partition.
    pub partition: (String, i32),
    /// The partition as stage 1 knows it.
    pub input: InputId,
    /// Index of its topic among the input topics.
    pub topic: usize,
    /// Values and keys, one after the other, and header values.
    bytes: Vec<u8>,
    /// Header names, one after the other.
    names: String,
    /// Header names and values: ranges of `names` and `bytes`.
    headers: Vec<(Range<usize>, Range<usize>)>,
    messages: Vec<Stored>,
    /// Messages refused whole (empty, too large), in order: index, reason, detail.
    refused: Vec<(usize, &'static str, String)>,
    builder: FlowBatchBuilder,
}

impl Messages {
    /// None yet, of the partition `partition` (`input` to stage 1) of input topic `topic`.
    pub fn new(partition: (String, i32), input: InputId, topic: usize) -> Self {
        Messages {
            partition,
            input,
            topic,
            bytes: Vec::new(),
            names: String::new(),
            headers: Vec::new(),
            messages: Vec::new(),
            refused: Vec::new(),
            builder: FlowBatchBuilder::new(),
        }
    }

    /// Makes these hold none, of another partition (buffers kept).
    pub fn reuse(&mut self, partition: (String, i32), input: InputId, topic: usize) {
        self.partition = partition;
        self.input = input;
        self.topic = topic;
        self.bytes.clear();
        self.names.clear();
        self.headers.clear();
        self.messages.clear();
        self.refused.clear();
    }

    /// Adds a message (after those added before: offsets only grow in a partition).
    pub fn push<'h>(
        &mut self,
        offset: i64,
        value: &[u8],
        key: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    ) {
        let value = self.append(value);
        let key = key.map(|k| self.append(k));
        let first = self.headers.len();
        for (name, v) in headers {
            let at = self.names.len();
            self.names.push_str(name);
            let name = at..self.names.len();
            let v = self.append(v);
            self.headers.push((name, v));
        }
        self.messages.push(Stored {
            offset,
            value,
            key,
            headers: first..self.headers.len(),
        });
    }

    /// Adds a message refused whole (`reason`, e.g. `too-large`, and `detail`): not parsed,
    /// but reported among the rejected lines in its place, so that dead letters keep the
    /// partition's order.
    pub fn refuse<'h>(
        &mut self,
        offset: i64,
        value: &[u8],
        key: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
        reason: &'static str,
        detail: String,
    ) {
        self.refused.push((self.messages.len(), reason, detail));
        self.push(offset, value, key, headers);
    }

    fn append(&mut self, b: &[u8]) -> Range<usize> {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(b);
        at..self.bytes.len()
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// None held.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Bytes held: values, keys and header values.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Whether they are to go to a worker now ([`HANDOUT_BYTES`], [`HANDOUT_MESSAGES`]).
    pub fn full(&self) -> bool {
        self.bytes.len() >= HANDOUT_BYTES || self.messages.len() >= HANDOUT_MESSAGES
    }

    /// The `i`-th message.
    ///
    /// # Panics
    /// When `i` is not below [`Messages::len`].
    pub fn get(&self, i: usize) -> MessageRef<'_> {
        let m = &self.messages[i];
        let mut headers = Vec::new();
        self.headers_of(m, &mut headers);
        MessageRef {
            offset: m.offset,
            value: &self.bytes[m.value.clone()],
            key: m.key.clone().map(|k| &self.bytes[k]),
            headers,
        }
    }

    fn headers_of<'m>(&'m self, m: &Stored, out: &mut Vec<(&'m str, &'m [u8])>) {
        out.clear();
        out.extend(
            self.headers[m.headers.clone()]
                .iter()
                .map(|(n, v)| (&self.names[n.clone()], &self.bytes[v.clone()])),
        );
    }
}

/// A line of a message that its parser rejected, or a message refused whole.
#[derive(Debug, PartialEq)]
pub struct Rejected {
    /// Index of the message in its [`Messages`].
    pub message: usize,
    /// The reason's name (a [`ingest::RejectReason`]'s, or `empty-message`, `too-large`).
    pub reason: &'static str,
    /// What was wrong: `line N of the message: …` for a rejected line.
    pub detail: String,
}

impl Rejected {
    fn line(message: usize, line: usize, r: &Reject) -> Self {
        Rejected {
            message,
            reason: r.reason.as_str(),
            detail: format!("line {line} of the message: {}", r.detail),
        }
    }
}

/// What a worker made of a [`Messages`].
pub struct Parsed {
    /// Flow batches in offset order, each row's offset beside it (one batch per
    /// [`BATCH_ROWS`] rows or [`BATCH_BYTES`] bytes).
    pub batches: Vec<(arrow::array::RecordBatch, Vec<i64>)>,
    /// Rejected lines and refused messages, in offset and line order.
    pub rejects: Vec<Rejected>,
    /// Values the flow-record caps dropped.
    pub dropped: DroppedValues,
    /// The messages parsed (for the rejected ones' dead letters, then reuse).
    pub messages: Messages,
    /// The parser that read them (back to its topic).
    pub parser: TopicParser,
}

impl Parsed {
    /// Flow records parsed.
    pub fn records(&self) -> usize {
        self.batches.iter().map(|(b, _)| b.num_rows()).sum()
    }
}

/// Parses `messages` with `parser`: each message's value cut into lines at `\n` (a `\r`
/// before it dropped; blank lines skipped), each line parsed into flow records.
pub fn parse(mut messages: Messages, mut parser: TopicParser) -> Parsed {
    let mut batches = Vec::new();
    let mut rejects = Vec::new();
    let mut positions = Vec::new();
    let mut headers = Vec::new();
    let mut builder = std::mem::take(&mut messages.builder);
    let mut refused = std::mem::take(&mut messages.refused).into_iter().peekable();
    for (i, m) in messages.messages.iter().enumerate() {
        if let Some((_, reason, detail)) = refused.next_if(|r| r.0 == i) {
            rejects.push(Rejected {
                message: i,
                reason,
                detail,
            });
            continue;
        }
        if matches!(parser, TopicParser::Writer(_)) {
            messages.headers_of(m, &mut headers);
        }
        let p = parser.get(&headers);
        for (n, line) in super::message_lines(&messages.bytes[m.value.clone()]).enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match p.parse_line(line, &mut builder) {
                Ok(k) => positions.extend(std::iter::repeat_n(m.offset, k)),
                Err(reject) => rejects.push(Rejected::line(i, n + 1, &reject)),
            }
        }
        if builder.len() >= BATCH_ROWS || builder.bytes() >= BATCH_BYTES {
            batches.push((builder.finish(), std::mem::take(&mut positions)));
        }
    }
    if !builder.is_empty() {
        batches.push((builder.finish(), positions));
    }
    let dropped = builder.take_dropped();
    drop(headers);
    messages.builder = builder;
    Parsed {
        batches,
        rejects,
        dropped,
        messages,
        parser,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow_parser() -> TopicParser {
        let mapping = ingest::Mapping::default();
        TopicParser::Plain(ingest::Format::FlowJson.parser(&mapping).unwrap())
    }

    /// One flow-json line for `source` → `destination`, `duration_us` long.
    fn line(source: &str, destination: &str, duration_us: u64) -> String {
        format!(
            r#"{{"schema_version":1,"start_us":1767571200019044,"duration_us":{duration_us},"source":"{source}","destination":"{destination}","protocol":"HTTP/1.1","status":200,"bytes_received":10,"bytes_sent":20,"reporter":"envoy"}}"#
        )
    }

    #[test]
    fn messages_keep_their_values_keys_and_headers() {
        let mut m = Messages::new(("logs".into(), 3), InputId::new("logs/3"), 0);
        m.push(
            7,
            b"one",
            Some(b"k1"),
            [("app", b"cart" as &[u8]), ("zone", b"a")],
        );
        m.push(8, b"two\nlines", None, []);
        assert_eq!(m.len(), 2);
        assert_eq!(m.bytes(), 3 + 2 + 4 + 1 + 9);
        assert_eq!(
            m.get(0),
            MessageRef {
                offset: 7,
                value: b"one",
                key: Some(b"k1"),
                headers: vec![("app", b"cart" as &[u8]), ("zone", b"a")],
            }
        );
        assert_eq!(
            m.get(1),
            MessageRef {
                offset: 8,
                value: b"two\nlines",
                key: None,
                headers: vec![],
            }
        );
        m.reuse(("logs".into(), 4), InputId::new("logs/4"), 0);
        assert!(m.is_empty());
        assert_eq!(m.bytes(), 0);
        m.push(1, b"x", None, [("h", b"v" as &[u8])]);
        assert_eq!(m.get(0).headers, vec![("h", b"v" as &[u8])]);
    }

    #[test]
    fn lines_are_parsed_with_their_offsets_and_rejects_name_message_and_line() {
        let mut m = Messages::new(("logs".into(), 0), InputId::new("logs/0"), 0);
        m.push(10, line("a", "b", 1500).as_bytes(), None, []);
        let two = format!(
            "{}\r\n\n{}\nnot json\n",
            line("a", "c", 2),
            line("b", "c", 3)
        );
        m.push(11, two.as_bytes(), None, []);
        m.push(12, b"{\"start_us\":1}", None, []);
        m.refuse(13, b"", Some(b"k"), [], "empty-message", "empty".into());
        m.push(14, line("c", "d", 4).as_bytes(), None, []);
        let parsed = parse(m, flow_parser());
        assert_eq!(parsed.records(), 4);
        assert_eq!(parsed.batches.len(), 1);
        let (batch, positions) = &parsed.batches[0];
        assert_eq!(positions, &[10, 11, 11, 14]);
        let records = schemas::flow_records(batch).unwrap();
        assert_eq!(records[0].duration_us, Some(1500));
        assert_eq!(
            (records[2].source.as_str(), records[2].destination.as_str()),
            ("b", "c")
        );
        let rejects: Vec<(usize, &str)> = parsed
            .rejects
            .iter()
            .map(|r| (r.message, r.detail.split(':').next().unwrap()))
            .collect();
        // the refused message among the rejected lines, in offset order
        assert_eq!(
            rejects,
            [
                (1, "line 4 of the message"),
                (2, "line 1 of the message"),
                (3, "empty")
            ]
        );
        assert_eq!(parsed.rejects[0].reason, "bad-json");
        assert_eq!(parsed.rejects[2].reason, "empty-message");
        assert_eq!(parsed.messages.get(3).key, Some(b"k" as &[u8]));
    }

    #[test]
    fn a_full_batch_is_cut_at_batch_rows() {
        let mut m = Messages::new(("logs".into(), 0), InputId::new("logs/0"), 0);
        let one = line("a", "b", 5);
        for offset in 0..(BATCH_ROWS as i64 + 3) {
            m.push(offset, one.as_bytes(), None, []);
        }
        assert!(m.full());
        let parsed = parse(m, flow_parser());
        let sizes: Vec<usize> = parsed.batches.iter().map(|(b, _)| b.num_rows()).collect();
        assert_eq!(sizes, [BATCH_ROWS, 3]);
        assert_eq!(parsed.batches[1].1, [8192, 8193, 8194]);
    }
}
