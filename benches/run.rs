//! `graywatch run` end to end against a bare consumer, on the same topic of the local broker.
//!
//! Input: 1 000 000 `flow-json` records (a synthetic landscape: 200 services, 2 000 pairs,
//! one record every 50 µs of event time, so ~50 s of traffic in 6 windows) in a topic of 4
//! partitions of a nisshi broker started on loopback (as the tests start it). Two benches,
//! each iteration reading the whole topic with a fresh consumer group:
//!
//! - `bare consumer`: rdkafka's `BaseConsumer` polling every message, doing nothing with it;
//! - `graywatch run`: the run driver (`graywatch::kafka::run::run`) with the same consumer
//!   settings — consume, parse, windows, detection, actuation, outputs to the broker — timed
//!   until stage 1 has taken in every record (`graywatch_records_aggregated_total`).
//!
//! Both read in their own process thread; the broker is a separate process on the same 2
//! cores. The ratio of the two medians is printed at the end. Run:
//! `cargo bench --bench run` (NISSHI=path if nisshi is not on the PATH).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rdkafka::consumer::{BaseConsumer, Consumer};
use schemas::{FlowRecord, Reporter, SCHEMA_VERSION};

#[path = "../tests/broker.rs"]
#[allow(dead_code)] // the tests use more of it
mod broker;

use broker::{Broker, Msg};

const RECORDS: usize = 1_000_000;

/// The allocator the `graywatch` binary uses (`src/main.rs`), so that `run` is measured with
/// what it ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    /// Time from the start of the last iteration to its first record (startup, group join).
    static FIRST: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}
const TOPIC: &str = "bench-flows";
const PARTITIONS: i32 = 4;

/// A deterministic xorshift generator (no dependency for a bench's inputs).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The synthetic landscape's records, as `flow-json` values.
fn records() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = 1_714_521_600_000_000i64;
    (0..RECORDS)
        .map(|i| {
            let pair = rng.next() % 2_000;
            let source = format!("svc-{:03}", pair % 200);
            let destination = format!("svc-{:03}", (pair * 7 + 13) % 200);
            let x = rng.next();
            let r = FlowRecord {
                schema_version: SCHEMA_VERSION,
                start_us: t0 + i as i64 * 50,
                duration_us: Some(1_000 + x % 50_000),
                source,
                source_zone: None,
                source_version: None,
                destination,
                destination_zone: None,
                destination_version: None,
                protocol: Some("HTTP/1.1".into()),
                method: Some("GET".into()),
                status: Some(if x.is_multiple_of(100) { 503 } else { 200 }),
                response_flags: None,
                bytes_received: x % 2_000,
                bytes_sent: x % 20_000,
                upstream_host: None,
                upstream_attempts: vec![],
                request_id: None,
                reporter: Reporter::Envoy,
            };
            serde_json::to_vec(&r).expect("a record serializes")
        })
        .collect()
}

fn consumer_properties(broker: &Broker, group: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "16384");
    c
}

/// Reads the topic with a bare consumer; returns the time to the last record.
fn bare(broker: &Broker, group: &str) -> Duration {
    let consumer: BaseConsumer = consumer_properties(broker, group)
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let started = Instant::now();
    let mut n = 0usize;
    while n < RECORDS {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            if n == 0 {
                FIRST.with(|f| f.set(started.elapsed()));
            }
            n += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "bare consumer stuck at {n}"
        );
    }
    started.elapsed()
}

/// Runs `graywatch run` on the topic; returns the time until stage 1 took in every record.
fn graywatch(broker: &Broker, group: &str) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "[kafka]\nbootstrap-servers = \"{servers}\"\ngroup-id = \"{group}\"\n\
         [[kafka.inputs]]\ntopic = \"{TOPIC}\"\nformat = \"flow-json\"\n\
         [kafka.outputs]\nfindings = \"b.findings\"\ncommands = \"b.commands\"\nalerts = \"b.alerts\"\n\
         dead-letters = \"b.dead\"\n\
         [checkpoint]\ndir = \"{dir}\"\ninterval = \"10s\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
        servers = broker.bootstrap(),
        dir = dir.path().display(),
    );
    let config = toml::from_str::<graywatch::config::Config>(&text)
        .expect("bench config")
        .validate(None)
        .expect("valid bench config");
    let metrics = Arc::new(graywatch::kafka::metrics::Metrics::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let run = {
        let (metrics, shutdown) = (Arc::clone(&metrics), Arc::clone(&shutdown));
        std::thread::spawn(move || {
            // no admin endpoint: approvals never come
            let (_, approvals) = std::sync::mpsc::channel();
            graywatch::kafka::run::run(
                config,
                graywatch::replay::cores(),
                shutdown,
                metrics,
                approvals,
            )
        })
    };
    let mut first = None;
    while metrics.records_aggregated.get() < RECORDS as u64 {
        if first.is_none() && metrics.records_aggregated.get() > 0 {
            first = Some(started.elapsed());
        }
        assert!(!run.is_finished(), "graywatch run stopped");
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "graywatch run stuck at {}",
            metrics.records_aggregated.get()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = started.elapsed();
    FIRST.with(|f| f.set(first.unwrap_or_default()));
    shutdown.store(true, Ordering::SeqCst);
    run.join().expect("run thread").expect("graywatch run");
    took
}

fn bench(c: &mut Criterion) {
    let broker = Broker::start();
    broker.create_topic(TOPIC, PARTITIONS);
    let values = records();
    let bytes: usize = values.iter().map(Vec::len).sum();
    let messages: Vec<Msg> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Msg::to((i % PARTITIONS as usize) as i32, v))
        .collect();
    broker.produce(TOPIC, &messages);
    drop(messages);
    eprintln!(
        "input: {RECORDS} flow-json records ({} MB) in {PARTITIONS} partitions of {TOPIC}",
        bytes / 1_000_000
    );

    let mut g = c.benchmark_group("run");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(RECORDS as u64));
    let mut groups = 0u64;
    let mut bare_times = Vec::new();
    let mut run_times = Vec::new();
    let (mut bare_first, mut run_first) = (Vec::new(), Vec::new());
    g.bench_function("bare consumer", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    groups += 1;
                    let t = bare(&broker, &format!("bare-{groups}"));
                    bare_times.push(t);
                    bare_first.push(FIRST.with(|f| f.get()));
                    t
                })
                .sum()
        })
    });
    g.bench_function("graywatch run", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    groups += 1;
                    let t = graywatch(&broker, &format!("graywatch-{groups}"));
                    run_times.push(t);
                    run_first.push(FIRST.with(|f| f.get()));
                    t
                })
                .sum()
        })
    });
    g.finish();
    if bare_times.is_empty() || run_times.is_empty() {
        // one bench alone (a filter, or `--profile-time`): nothing to compare
        return;
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (b, r) = (median(&mut bare_times), median(&mut run_times));
    let rate = |d: Duration| RECORDS as f64 / d.as_secs_f64();
    eprintln!(
        "median: bare consumer {:.0} records/s, graywatch run {:.0} records/s: graywatch = {:.0} % of the bare consumer",
        rate(b),
        rate(r),
        100.0 * rate(r) / rate(b)
    );
    let (bf, rf) = (median(&mut bare_first), median(&mut run_first));
    eprintln!(
        "from the first record on (startup and group join left out: bare {bf:?}, graywatch {rf:?}): \
         bare consumer {:.0} records/s, graywatch run {:.0} records/s: {:.0} %",
        rate(b - bf),
        rate(r - rf),
        100.0 * rate(r - rf) / rate(b - bf)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
