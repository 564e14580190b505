//! Envoy's default text format (bare, after `ACCESS `, or in a container-runtime envelope):
//! the input as one line, then as a file.
#![no_main]

use graywatch_fuzz::{ACCESS_LOG, agree, lines, one_line};
use ingest::Mapping;
use ingest::envoy::EnvoyTextParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = EnvoyTextParser::new(Mapping::default());
    let one = one_line(&mut parser, data, &ACCESS_LOG);
    // no state across lines: the same line reads the same again
    assert_eq!(one_line(&mut parser, data, &ACCESS_LOG), one);
    let file = lines(&mut parser, data, &ACCESS_LOG);
    agree(data, &one, &file);
});
