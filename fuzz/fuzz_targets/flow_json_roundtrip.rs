//! `flow-json` from the other end: a record built from the fuzz input (any start, any text,
//! any optional field set or not, upstream attempts), written as JSON with its keys in an
//! order the input picks, with or without spaces, reads back as the same record (through
//! the scanner's fast path when the text needs no escapes, through serde_json when it does),
//! or is rejected as `bad-name` when a name holds a control character.
#![no_main]

use arbitrary::{Result, Unstructured};
use graywatch_fuzz::{Expect, one_line};
use ingest::flow_json::FlowJsonParser;
use libfuzzer_sys::fuzz_target;
use schemas::{FlowRecord, Reporter, SCHEMA_VERSION, UpstreamAttempt};

const FLOW_JSON: Expect = Expect {
    max_rows: 1,
    start_range: None,
    dash_is_none: false,
};

fn text(u: &mut Unstructured<'_>) -> Result<String> {
    // mostly plain names (the fast path), sometimes any text (escapes)
    if u.ratio(3, 4)? {
        let n = u.int_in_range(1..=12)?;
        (0..n)
            .map(|_| Ok(*u.choose(b"abcxyz-.:0123456789")? as char))
            .collect()
    } else {
        let s: String = u.arbitrary()?;
        Ok(if s.is_empty() { "x".into() } else { s })
    }
}

fn opt_text(u: &mut Unstructured<'_>) -> Result<Option<String>> {
    if u.arbitrary()? {
        Ok(Some(text(u)?))
    } else {
        Ok(None)
    }
}

fn record(u: &mut Unstructured<'_>) -> Result<FlowRecord> {
    let reporters = [
        Reporter::Envoy,
        Reporter::IstioSource,
        Reporter::IstioDestination,
        Reporter::Nginx,
        Reporter::NginxIngress,
        Reporter::Span,
    ];
    let n = u.int_in_range(0..=3)?;
    let mut attempts = Vec::new();
    for _ in 0..n {
        attempts.push(UpstreamAttempt {
            address: opt_text(u)?,
            status: u.arbitrary()?,
            response_time_us: u.arbitrary()?,
            group: u.arbitrary()?,
        });
    }
    Ok(FlowRecord {
        schema_version: SCHEMA_VERSION,
        start_us: u.arbitrary()?,
        duration_us: u.arbitrary()?,
        source: text(u)?,
        source_zone: opt_text(u)?,
        source_version: opt_text(u)?,
        destination: text(u)?,
        destination_zone: opt_text(u)?,
        destination_version: opt_text(u)?,
        protocol: opt_text(u)?,
        method: opt_text(u)?,
        status: u.arbitrary()?,
        response_flags: opt_text(u)?,
        bytes_received: u.arbitrary()?,
        bytes_sent: u.arbitrary()?,
        upstream_host: opt_text(u)?,
        upstream_attempts: attempts,
        request_id: opt_text(u)?,
        reporter: *u.choose(&reporters)?,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(r) = record(&mut u) else {
        return;
    };
    let serde_json::Value::Object(map) = serde_json::to_value(&r).unwrap() else {
        unreachable!("a record is a JSON object");
    };
    let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
    // keys in an order of the input's choosing
    for i in (1..entries.len()).rev() {
        let j = u.int_in_range(0..=i).unwrap_or(i);
        entries.swap(i, j);
    }
    let leave_out = u.arbitrary::<bool>().unwrap_or(false);
    let required = [
        "schema_version",
        "start_us",
        "source",
        "destination",
        "reporter",
    ];
    // what may be left out: null options, no attempts, byte counts of 0 (their defaults)
    let counts = ["bytes_received", "bytes_sent"];
    entries.retain(|(k, v)| {
        let default = v.is_null()
            || v == &serde_json::json!([])
            || (counts.contains(&k.as_str()) && v == &serde_json::json!(0));
        !(leave_out && !required.contains(&k.as_str()) && default)
    });
    let sep = if u.arbitrary::<bool>().unwrap_or(false) {
        ", "
    } else {
        ","
    };
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
        .collect();
    let line = format!("{{{}}}", body.join(sep));
    let got = one_line(&mut FlowJsonParser::new(), line.as_bytes(), &FLOW_JSON);
    assert_eq!(got, expected(r), "{line}");
});

/// What reading `r` back gives: a reject when a name holds a control character, else `r`
/// without the request id and addresses longer than the stored caps (dropped whole).
fn expected(mut r: FlowRecord) -> std::result::Result<Vec<FlowRecord>, &'static str> {
    let names = [
        Some(&r.source),
        r.source_zone.as_ref(),
        r.source_version.as_ref(),
        Some(&r.destination),
        r.destination_zone.as_ref(),
        r.destination_version.as_ref(),
    ];
    if names
        .into_iter()
        .flatten()
        .any(|n| schemas::first_control_char(n).is_some())
    {
        return Err("bad-name");
    }
    let cap = |v: &mut Option<String>, max: usize| {
        if v.as_ref().is_some_and(|s| s.len() > max) {
            *v = None;
        }
    };
    cap(&mut r.request_id, schemas::flow::MAX_REQUEST_ID_BYTES);
    cap(&mut r.upstream_host, schemas::flow::MAX_ADDRESS_BYTES);
    for a in &mut r.upstream_attempts {
        cap(&mut a.address, schemas::flow::MAX_ADDRESS_BYTES);
    }
    Ok(vec![r])
}
