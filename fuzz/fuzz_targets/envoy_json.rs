//! Envoy `json_format` / `typed_json_format` lines: the input as one line, then as a file.
#![no_main]

use graywatch_fuzz::{ACCESS_LOG, Expect, agree, lines, one_line};
use ingest::Mapping;
use ingest::envoy::EnvoyJsonParser;
use libfuzzer_sys::fuzz_target;

/// Start times may also be epoch seconds (`%START_TIME(%s.%3f)%`), never before 1970.
const ENVOY_JSON: Expect = Expect {
    start_range: Some((0, i64::MAX)),
    ..ACCESS_LOG
};

fuzz_target!(|data: &[u8]| {
    let mut parser = EnvoyJsonParser::new(Mapping::default());
    let one = one_line(&mut parser, data, &ENVOY_JSON);
    assert_eq!(one_line(&mut parser, data, &ENVOY_JSON), one);
    let file = lines(&mut parser, data, &ENVOY_JSON);
    agree(data, &one, &file);
});
