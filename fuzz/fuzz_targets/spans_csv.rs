//! Span tables (`spans-csv`): the input as a file (a header, then rows), through a parser with
//! the default held-span cap and one with a cap of 3 (so that eviction runs). Records are at
//! most the rows; held spans stay within the cap after every line and are released at the end.
#![no_main]

use graywatch_fuzz::{Expect, lines};
use ingest::spans::SpansCsvParser;
use ingest::{LineParser, Mapping};
use libfuzzer_sys::fuzz_target;
use schemas::FlowBatchBuilder;

/// Start times are ns since the epoch ÷ 1000 (unsigned); a line may release many held spans.
const SPANS: Expect = Expect {
    max_rows: usize::MAX,
    start_range: Some((0, i64::MAX)),
    dash_is_none: false,
};

fuzz_target!(|data: &[u8]| {
    let got = lines(&mut SpansCsvParser::new(Mapping::default()), data, &SPANS);
    assert!(
        got.stats.records <= got.stats.lines,
        "more records than rows"
    );

    let cap = 3;
    let mut parser = SpansCsvParser::new(Mapping::default()).with_max_pending_spans(cap);
    let mut out = FlowBatchBuilder::new();
    for line in data.split(|&b| b == b'\n') {
        let _ = parser.parse_line(line, &mut out);
        assert!(
            parser.held_spans() <= cap,
            "{} spans held",
            parser.held_spans()
        );
    }
    parser.finish(&mut out);
    assert_eq!(parser.held_spans(), 0, "spans held after the end");
    graywatch_fuzz::check_batch(&out.finish(), &SPANS);
});
