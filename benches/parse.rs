//! Parsing throughput per format, lines/s: bundled real logs repeated to about 1 M lines, read
//! through `ingest::read_lines` into flow-record Arrow batches (the full ingest path, minus
//! disk I/O: the input is in memory).
//!
//! Run: `cargo bench --bench parse`. Peers measured on the same machine (one core): `mawk`
//! splitting NGINX combined fields and counting statuses and bytes ≈ 1.07 M lines/s; GoAccess
//! 1.7 ≈ 55 k lines/s.

use std::path::PathBuf;

use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::{Format, IngestSink, IngestStats, Mapping, ReaderOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The non-blank lines of `files` that `keep` accepts, repeated until there are at least
/// `target` lines.
fn repeated(files: &[PathBuf], keep: fn(&[u8]) -> bool, target: usize) -> (Vec<u8>, usize) {
    let mut one = Vec::new();
    let mut lines = 0;
    for f in files {
        let text = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for line in text
            .split(|&b| b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty() && keep(l))
        {
            one.extend_from_slice(line);
            one.push(b'\n');
            lines += 1;
        }
    }
    let times = target.div_ceil(lines).max(1);
    (one.repeat(times), lines * times)
}

/// Keeps the records of batches.
struct Records(Vec<schemas::FlowRecord>);

impl IngestSink for Records {
    type Error = std::convert::Infallible;
    fn batch(&mut self, batch: RecordBatch, _lines: &[u64]) -> Result<(), Self::Error> {
        self.0
            .extend(schemas::flow_records(&batch).expect("a flow-record batch"));
        Ok(())
    }
}

struct Count(usize);

impl IngestSink for Count {
    type Error = std::convert::Infallible;
    fn batch(&mut self, batch: RecordBatch, _lines: &[u64]) -> Result<(), Self::Error> {
        self.0 += batch.num_rows();
        Ok(())
    }
}

fn parse_all(format: &Format, input: &[u8]) -> (usize, IngestStats) {
    let mut parser = format.parser(&Mapping::default()).expect("parser");
    let mut stats = IngestStats::default();
    let mut sink = Count(0);
    ingest::read_lines(
        "bench",
        input,
        parser.as_mut(),
        &ReaderOptions::default(),
        &mut stats,
        &mut sink,
    )
    .expect("in-memory input");
    (sink.0, stats)
}

fn bench(c: &mut Criterion) {
    let logs = root().join("deploy/examples/logs");
    let spans: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/examples/trainticket"))
            .expect("trainticket examples")
            .map(|e| e.expect("dir entry").path())
            .collect();
        v.sort();
        v
    };
    let any: fn(&[u8]) -> bool = |_| true;
    let envelope: fn(&[u8]) -> bool = |l| l.starts_with(b"{");
    let bare: fn(&[u8]) -> bool = |l| !l.starts_with(b"{");
    type Case<'a> = (&'a str, Format, Vec<PathBuf>, fn(&[u8]) -> bool, usize);
    let envoy_files = vec![
        logs.join("beats_envoyproxy_envoy.log"),
        logs.join("integrations_envoyproxy_test-log.log"),
    ];
    let cases: Vec<Case<'_>> = vec![
        (
            "nginx-combined elastic_examples_apache_logs.log",
            Format::NginxCombined,
            vec![logs.join("elastic_examples_apache_logs.log")],
            any,
            1_000_000,
        ),
        (
            "envoy text (bare and ACCESS-prefixed lines of the envoy fixtures)",
            Format::Envoy,
            envoy_files.clone(),
            bare,
            1_000_000,
        ),
        (
            "envoy text in container JSON envelopes (envoy fixtures)",
            Format::Envoy,
            envoy_files,
            envelope,
            1_000_000,
        ),
        (
            "istio integrations_istio_test-access-logs.log",
            Format::Istio,
            vec![logs.join("integrations_istio_test-access-logs.log")],
            any,
            1_000_000,
        ),
        (
            "nginx-ingress beats_nginx_ingress_controller_test.log",
            Format::NginxIngress,
            vec![logs.join("beats_nginx_ingress_controller_test.log")],
            any,
            1_000_000,
        ),
        (
            "spans-csv deploy/examples/trainticket/*.csv",
            Format::SpansCsv,
            spans,
            any,
            0,
        ),
    ];
    let mut group = c.benchmark_group("parse");
    group.sample_size(10);
    let mut inputs: Vec<(&str, Format, Vec<u8>, usize)> = cases
        .into_iter()
        .map(|(name, format, files, keep, target)| {
            let (input, lines) = repeated(&files, keep, target);
            (name, format, input, lines)
        })
        .collect();
    // flow-json: the istio fixture's records as `graywatch parse` prints them
    {
        let (istio, _) = repeated(
            &[logs.join("integrations_istio_test-access-logs.log")],
            any,
            0,
        );
        let mut parser = Format::Istio.parser(&Mapping::default()).expect("parser");
        let mut records = Records(Vec::new());
        ingest::read_lines(
            "istio",
            &istio[..],
            parser.as_mut(),
            &ReaderOptions::default(),
            &mut IngestStats::default(),
            &mut records,
        )
        .expect("in-memory input");
        let mut one = Vec::new();
        for r in &records.0 {
            serde_json::to_writer(&mut one, r).expect("records serialize");
            one.push(b'\n');
        }
        let times = 1_000_000usize.div_ceil(records.0.len());
        inputs.push((
            "flow-json (the istio fixture's records as graywatch parse prints them)",
            Format::FlowJson,
            one.repeat(times),
            records.0.len() * times,
        ));
    }
    // envoy-json: json_format lines of the shape `graywatch simulate --format envoy` writes
    // (the envoy-json job of benches/peers.sh), four services' lines in turn
    {
        let mut one = Vec::new();
        for (i, (service, host, code)) in [
            ("log-collector", "10.3.41.1:8080", 200),
            ("web-frontend", "10.2.1.1:8080", 200),
            ("product", "10.1.7.2:8080", 503),
            ("cache", "10.2.9.1:6379", 200),
        ]
        .into_iter()
        .enumerate()
        {
            one.extend_from_slice(
                format!(
                    r#"{{"start_time":"2026-01-05T12:00:0{i}.012674Z","method":"POST","path":"/{service}","protocol":"HTTP/1.1","response_code":{code},"response_flags":"-","bytes_received":2297,"bytes_sent":22,"duration":0.777,"upstream_host":"{host}","upstream_cluster":"outbound|8080|v3.7.0|{service}.default.svc.cluster.local","authority":"{service}:8080","x-request-id":"0325d64d-4e3b-4d26-a9d2-392e3f9c701{i}","downstream_remote_address":"10.2.6.1:55812","user_agent":"fluent-bit/3.1"}}"#
                )
                .as_bytes(),
            );
            one.push(b'\n');
        }
        inputs.push((
            "envoy-json (json_format lines as the simulator writes them)",
            Format::EnvoyJson,
            one.repeat(250_000),
            1_000_000,
        ));
    }
    for (name, format, input, lines) in inputs {
        let (rows, stats) = parse_all(&format, &input);
        println!(
            "input: {name}: {lines} lines, {:.1} MB, {rows} records, {} rejected",
            input.len() as f64 / 1e6,
            stats.rejected()
        );
        group.throughput(Throughput::Elements(lines as u64));
        group.bench_function(name, |b| b.iter(|| parse_all(&format, &input)));
    }
    group.finish();
}

/// A mapping of `extra` rules that don't match the Envoy fixture's authorities (a third exact
/// names, a third `prefix*`, a third `*suffix`), then `*` naming everything `anything`.
fn mapping_with_rules(extra: usize) -> Mapping {
    let mut toml = String::new();
    for i in 0..extra {
        let pattern = match i % 3 {
            0 => format!("svc-{i}.example"),
            1 => format!("10.{i}.*"),
            _ => format!("*.ns-{i}.svc"),
        };
        toml += &format!("[[rules]]\nfield = \"authority\"\npattern = \"{pattern}\"\n");
    }
    toml += "[[rules]]\nfield = \"authority\"\npattern = \"*\"\nservice = \"anything\"\n";
    let config: ingest::MappingConfig = toml::from_str(&toml).expect("rules parse");
    Mapping::try_from(config).expect("rules are valid")
}

/// Mapping rules: the Envoy fixture (about 1 M lines) with 1 rule, and with 10 000 rules before
/// the one that matches: they cost about the same. The fixture's values repeat, so most lines
/// are answered by the mapping's memo of recent values (`Mapping::resolve`); the compiled
/// rules answer its first lines and values that never repeat.
fn bench_rules(c: &mut Criterion) {
    let logs = root().join("deploy/examples/logs");
    let (input, lines) = repeated(
        &[logs.join("beats_envoyproxy_envoy.log")],
        |_| true,
        1_000_000,
    );
    let mut group = c.benchmark_group("mapping rules");
    group.sample_size(10);
    group.throughput(Throughput::Elements(lines as u64));
    for rules in [1, 10_000] {
        let mapping = mapping_with_rules(rules - 1);
        group.bench_function(format!("envoy, {rules} rule(s)"), |b| {
            b.iter(|| {
                let mut parser = Format::Envoy.parser(&mapping).expect("parser");
                let mut sink = Count(0);
                ingest::read_lines(
                    "envoy",
                    &input[..],
                    parser.as_mut(),
                    &ReaderOptions::default(),
                    &mut IngestStats::default(),
                    &mut sink,
                )
                .expect("in-memory input");
                sink.0
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_rules);
criterion_main!(benches);
