//! Istio's default sidecar format: the input as one line, then as a file.
#![no_main]

use graywatch_fuzz::{ACCESS_LOG, agree, lines, one_line};
use ingest::Mapping;
use ingest::istio::IstioParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = IstioParser::new(Mapping::default());
    let one = one_line(&mut parser, data, &ACCESS_LOG);
    assert_eq!(one_line(&mut parser, data, &ACCESS_LOG), one);
    let file = lines(&mut parser, data, &ACCESS_LOG);
    agree(data, &one, &file);
});
