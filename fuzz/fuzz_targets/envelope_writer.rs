//! Lines inside a shipper's JSON envelope: Envoy's text parser on an envelope it unwraps
//! itself (`message` or `log`), and the `[mapping.writer]` wrapper (JSON pointers into the
//! envelope, a Kafka header naming the writer) around it. The input's first line is the
//! header's value; the rest is read as one line, then as a file. A header that names a
//! service names the source of every record.
#![no_main]

use graywatch_fuzz::{ACCESS_LOG, agree, lines, one_line, split_first_line};
use ingest::envoy::EnvoyTextParser;
use ingest::{Mapping, WriterConfig, WriterParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, data) = split_first_line(data);
    let mut plain = EnvoyTextParser::new(Mapping::default());
    let one = one_line(&mut plain, data, &ACCESS_LOG);
    let file = lines(&mut plain, data, &ACCESS_LOG);
    agree(data, &one, &file);

    let config = WriterConfig {
        message: Some("/message".into()),
        service: Some("/kubernetes/labels/app".into()),
        zone: Some("/kubernetes/node_labels/topology.kubernetes.io~1zone".into()),
        version: Some("/kubernetes/labels/version".into()),
        service_header: Some("graywatch-service".into()),
        zone_header: None,
        version_header: None,
    };
    config.validate().unwrap();
    let mapping = Mapping::default();
    let inner = Box::new(EnvoyTextParser::new(mapping.clone()));
    let mut writer = WriterParser::new(inner, &mapping, config);
    // a plain service name in the header (other bytes are the header's own business)
    let named = !header.is_empty()
        && header.len() <= 32
        && header
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if named {
        writer.set_headers(&[("graywatch-service", header)]);
    }
    let one = one_line(&mut writer, data, &ACCESS_LOG);
    let file = lines(&mut writer, data, &ACCESS_LOG);
    agree(data, &one, &file);
    if named {
        let service = std::str::from_utf8(header).unwrap();
        for r in one.iter().flatten().chain(&file.records) {
            assert_eq!(r.source, service, "the header names the writer");
        }
    }
});
