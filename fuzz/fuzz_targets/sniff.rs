//! `--format auto`: [`Format::sniff`] decides from the first non-blank line (after a byte
//! order mark) alone, and every format it names builds a parser that reads that line without
//! breaking the line invariants.
#![no_main]

use graywatch_fuzz::{Expect, one_line};
use ingest::{Format, Mapping};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let format = Format::sniff(data);
    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let first = body
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .find(|l| !l.is_empty());
    match first {
        None => assert_eq!(format, None, "a format from blank input"),
        // a mark past the input's start is not one: the line alone would read it as one
        Some(line) if line.starts_with(b"\xEF\xBB\xBF") => {}
        Some(line) => {
            assert_eq!(
                Format::sniff(line),
                format,
                "more than the first line decided"
            );
            let Some(format) = format else { return };
            assert_eq!(format.name().parse::<Format>().ok(), Some(format.clone()));
            let mut parser = format
                .parser(&Mapping::default())
                .expect("a built-in format compiles");
            // a header (spans) yields nothing; records from any sniffed line name both ends
            let expect = Expect {
                max_rows: 1,
                start_range: None,
                dash_is_none: false,
            };
            let _ = one_line(parser.as_mut(), line, &expect);
        }
    }
});
