//! Memory bounds of reading: batches bounded by bytes as well as rows, over-long ids dropped
//! and counted.

use arrow::array::RecordBatch;
use ingest::{Format, IngestSink, IngestStats, Mapping, ReaderOptions, read_lines};
use schemas::flow::{MAX_ADDRESS_BYTES, MAX_REQUEST_ID_BYTES};
use schemas::{DroppedValues, flow_records};

/// The Istio sidecar log bundled in `deploy/examples/logs` (see deploy/examples/README.md).
const ISTIO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/examples/logs/integrations_istio_test-access-logs.log"
);

/// The Envoy log bundled in `deploy/examples/logs`.
const ENVOY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/examples/logs/beats_envoyproxy_envoy.log"
);

#[derive(Default)]
struct Batches {
    rows: Vec<usize>,
    /// Largest batch, bytes of Arrow memory.
    largest: usize,
    request_ids: Vec<Option<String>>,
    destinations: Vec<String>,
}

impl IngestSink for Batches {
    type Error = std::convert::Infallible;
    fn batch(&mut self, batch: RecordBatch, _lines: &[u64]) -> Result<(), Self::Error> {
        self.rows.push(batch.num_rows());
        self.largest = self.largest.max(batch.get_array_memory_size());
        for r in flow_records(&batch).unwrap() {
            self.request_ids.push(r.request_id);
            self.destinations.push(r.destination);
        }
        Ok(())
    }
}

/// The fixture's first line with its request id (`"785918d6-…"`) replaced by `id` and its
/// upstream host (`"10.68.2.10:9080"`) by `host`.
fn istio_line(id: &str, host: &str) -> String {
    let text = std::fs::read_to_string(ISTIO).unwrap();
    let line = text.lines().next().unwrap();
    assert!(line.contains("\"785918d6-06b6-9312-bf77-6d9bd968dc21\""));
    line.replace("785918d6-06b6-9312-bf77-6d9bd968dc21", id)
        .replacen("\"10.68.2.10:9080\"", &format!("\"{host}\""), 1)
}

fn read(data: &str, opts: &ReaderOptions) -> (IngestStats, Batches) {
    read_as(Format::Istio, data, opts)
}

fn read_as(format: Format, data: &str, opts: &ReaderOptions) -> (IngestStats, Batches) {
    let mut parser = format.parser(&Mapping::default()).unwrap();
    let mut stats = IngestStats::default();
    let mut sink = Batches::default();
    read_lines(
        "istio.log",
        data.as_bytes(),
        parser.as_mut(),
        opts,
        &mut stats,
        &mut sink,
    )
    .unwrap();
    (stats, sink)
}

#[test]
fn long_request_ids_are_dropped_counted_and_do_not_grow_batches() {
    // 300 records with 100 kB request ids would make a 30 MB batch; the ids are dropped and
    // the records kept
    let long = "x".repeat(100_000);
    let host = format!("{}:9080", "h".repeat(MAX_ADDRESS_BYTES));
    let mut data = String::new();
    for i in 0..300 {
        let id = if i % 3 == 0 {
            long.as_str()
        } else {
            "785918d6"
        };
        let host = if i % 5 == 0 {
            host.as_str()
        } else {
            "10.68.2.10:9080"
        };
        data += &istio_line(id, host);
        data.push('\n');
    }
    let (stats, sink) = read(&data, &ReaderOptions::default());
    assert_eq!(stats.records, 300);
    assert_eq!(stats.rejected(), 0);
    assert_eq!(
        stats.dropped_values,
        DroppedValues {
            request_ids: 100,
            addresses: 60
        }
    );
    assert_eq!(sink.rows, [300]);
    assert!(sink.largest < 1 << 20, "batch of {} bytes", sink.largest);
    assert_eq!(sink.request_ids[0], None);
    assert_eq!(sink.request_ids[1].as_deref(), Some("785918d6"));
    // an id at the cap is kept whole
    let at_cap = "y".repeat(MAX_REQUEST_ID_BYTES);
    let (stats, sink) = read(
        &istio_line(&at_cap, "10.68.2.10:9080"),
        &ReaderOptions::default(),
    );
    assert!(stats.dropped_values.is_empty());
    assert_eq!(sink.request_ids, [Some(at_cap)]);
}

#[test]
fn a_batch_is_handed_on_by_bytes_before_it_has_its_rows() {
    // An edge Envoy names the destination from the authority: 60 records with distinct 20 kB
    // authorities, 64 KiB per batch: a batch is handed on at its 4th row (each row holds its
    // 20 kB name)
    let text = std::fs::read_to_string(ENVOY).unwrap();
    let line = text.lines().nth(1).unwrap();
    assert!(line.contains("\"httpbin.org\""), "{line}");
    let mut data = String::new();
    for i in 0..60 {
        let authority = format!("\"{i:02}{}\"", "a".repeat(20_000));
        data += &line.replacen("\"httpbin.org\"", &authority, 1);
        data.push('\n');
    }
    let opts = ReaderOptions {
        batch_bytes: 64 << 10,
        ..ReaderOptions::default()
    };
    let (stats, sink) = read_as(Format::Envoy, &data, &opts);
    assert_eq!(stats.records, 60);
    assert_eq!(sink.rows, [4; 15], "{:?}", sink.rows);
    assert!(sink.largest < 256 << 10, "batch of {} bytes", sink.largest);
}

/// A mapping of `extra` rules that don't match the Envoy fixture's line (a third exact names,
/// a third `prefix*`, a third `*suffix`), then the one that names `httpbin.org` `httpbin`.
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
    toml += "[[rules]]\nfield = \"authority\"\npattern = \"httpbin.*\"\nservice = \"httpbin\"\n";
    Mapping::try_from(toml::from_str::<ingest::MappingConfig>(&toml).unwrap()).unwrap()
}

/// 10 000 mapping rules (compiled per field: exact names in a map, prefixes and suffixes in
/// tries) name the same destinations as one rule. Their cost is measured by
/// `cargo bench --bench parse -- "mapping rules"`, not here: timings on shared machines are
/// noisy.
#[test]
fn ten_thousand_rules_name_what_one_does() {
    let text = std::fs::read_to_string(ENVOY).unwrap();
    let line = text.lines().nth(1).unwrap();
    let data = format!("{line}\n").repeat(3_000);
    let names = |m: &Mapping| {
        let mut parser = Format::Envoy.parser(m).unwrap();
        let mut stats = IngestStats::default();
        let mut sink = Batches::default();
        read_lines(
            "envoy.log",
            data.as_bytes(),
            parser.as_mut(),
            &ReaderOptions::default(),
            &mut stats,
            &mut sink,
        )
        .unwrap();
        sink.destinations
    };
    let one = names(&mapping_with_rules(0));
    assert_eq!(one.len(), 3_000);
    assert!(one.iter().all(|n| n == "httpbin"), "{:?}", &one[..3]);
    assert_eq!(names(&mapping_with_rules(9_999)), one);
}
