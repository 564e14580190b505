//! `flow-json` lines: the input as one line, then as a file. A record read back from its own
//! JSON (as `graywatch parse` prints it) is the same record.
#![no_main]

use graywatch_fuzz::{Expect, agree, lines, one_line};
use ingest::flow_json::FlowJsonParser;
use libfuzzer_sys::fuzz_target;

/// The record names everything itself: any start, any text.
const FLOW_JSON: Expect = Expect {
    max_rows: 1,
    start_range: None,
    dash_is_none: false,
};

fuzz_target!(|data: &[u8]| {
    let mut parser = FlowJsonParser::new();
    let one = one_line(&mut parser, data, &FLOW_JSON);
    for r in one.iter().flatten() {
        let json = serde_json::to_string(r).unwrap();
        let again = one_line(&mut parser, json.as_bytes(), &FLOW_JSON);
        assert_eq!(again, Ok(vec![r.clone()]), "{json}");
    }
    let file = lines(&mut parser, data, &FLOW_JSON);
    agree(data, &one, &file);
});
