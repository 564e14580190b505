//! NGINX `log_format`s. The first byte picks one: `combined`, ingress-nginx `upstreaminfo`,
//! a custom format with `$msec` and upstream lists, or a fuzzed one (the input's first line,
//! as `--format nginx:'…'` takes it; the lines follow). The rest is read as one line, then as
//! a file.
#![no_main]

use graywatch_fuzz::{
    ACCESS_LOG, Expect, MIN_LOG_START_US, agree, lines, one_line, split_first_line,
};
use ingest::Mapping;
use ingest::nginx::{COMBINED, NginxParser, UPSTREAMINFO};
use libfuzzer_sys::fuzz_target;
use schemas::Reporter;

/// A custom format: epoch seconds for the time, upstream lists, the request id.
const CUSTOM: &str = r#"'$msec $request_time "$request" $status $bytes_sent $request_length ' '$upstream_addr $upstream_status $upstream_response_time $host $request_id'"#;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    // NGINX writes `-` for an unset variable into any field it does not read as a number.
    let calendar = Expect {
        dash_is_none: false,
        ..ACCESS_LOG
    };
    let any_time = Expect {
        start_range: Some((MIN_LOG_START_US, i64::MAX)),
        ..calendar
    };
    let (format, reporter, expect, data) = match pick % 4 {
        0 => (COMBINED.to_owned(), Reporter::Nginx, calendar, data),
        1 => (
            UPSTREAMINFO.to_owned(),
            Reporter::NginxIngress,
            calendar,
            data,
        ),
        2 => (CUSTOM.to_owned(), Reporter::Nginx, any_time, data),
        _ => {
            let (format, rest) = split_first_line(data);
            let Ok(format) = std::str::from_utf8(format) else {
                return;
            };
            (format.to_owned(), Reporter::Nginx, any_time, rest)
        }
    };
    let Ok(mut parser) = NginxParser::new(&format, reporter, Mapping::default()) else {
        assert!(pick % 4 == 3, "a built-in format does not compile");
        return;
    };
    let one = one_line(&mut parser, data, &expect);
    assert_eq!(one_line(&mut parser, data, &expect), one);
    let file = lines(&mut parser, data, &expect);
    agree(data, &one, &file);
});
