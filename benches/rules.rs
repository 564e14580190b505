//! The per-window cost of user rules (`[[rules]]`, DataFusion): building the window's tables
//! and running the example rules of `deploy/examples/rules.toml` over one window of 1 000 and
//! of 100 000 pairs whose baselines are warm.
//!
//! Run: `cargo bench --bench rules`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use detect::adaptive::BaselineSpec;
use detect::signatures::WindowView;
use detect::store::BaselineStore;
use graywatch::rules::{RuleConfig, Rules};
use schemas::{Latency, NodeWindow, PairWindow, SCHEMA_VERSION, Window};

const T0: i64 = 1_700_000_000_000_000;
const L: i64 = 10_000_000;

/// `n` pairs `svc-i → svc-(i+1)` in window `k`: 100 requests, p50 2 ms (×5 for every 97th
/// pair in window 20: slow pairs for the rule to find, 8 σ above the baseline with the
/// latency spread's floor of 1 ms).
fn pairs(n: usize, k: i64) -> Vec<PairWindow> {
    let window = Window {
        start_us: T0 + k * L,
        end_us: T0 + (k + 1) * L,
    };
    let mut v: Vec<PairWindow> = (0..n)
        .map(|i| {
            let p50 = if k == 20 && i % 97 == 0 {
                10_000
            } else {
                2_000 + (k as u64 % 3) * 10
            };
            PairWindow {
                schema_version: SCHEMA_VERSION,
                kind: "pair-window".into(),
                window,
                source: format!("svc-{i}"),
                destination: format!("svc-{}", i + 1),
                requests: 100,
                rate_rps: 10.0,
                errors: 0,
                error_ratio: 0.0,
                latency: Some(Latency {
                    p50_us: p50,
                    p90_us: p50 * 2,
                    p99_us: p50 * 4,
                    max_us: p50 * 5,
                }),
                concurrency_mean: 0.2,
                concurrency_peak: 2,
                bytes_in: 10_000,
                bytes_out: 50_000,
                bandwidth_in_bps: 1_000.0,
                bandwidth_out_bps: 5_000.0,
                breakdown: vec![],
                breakdown_overflow: 0,
            }
        })
        .collect();
    v.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
    v
}

fn example_rules() -> Vec<RuleConfig> {
    #[derive(serde::Deserialize)]
    struct File {
        rules: Vec<RuleConfig>,
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/rules.toml");
    let text = std::fs::read_to_string(path).expect("deploy/examples/rules.toml");
    toml::from_str::<File>(&text).expect("valid rules").rules
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("rules");
    group.sample_size(10);
    for n in [1_000usize, 100_000] {
        let mut store = BaselineStore::new(BaselineSpec::default());
        for k in 0..20 {
            for p in pairs(n, k) {
                store.learn_pair(&p);
            }
        }
        let window = pairs(n, 20);
        let nodes: Vec<NodeWindow> = detect::node::node_windows(window[0].window, &window);
        let mut rules = Rules::new(&example_rules()).expect("the examples plan");
        let incidents = detect::incident::Incidents::default();
        let view = WindowView::new(window[0].window, &window, &nodes, &[], &store, &incidents);
        let mut out = Vec::new();
        assert!(rules.judge(&view, &mut out).is_empty());
        assert_eq!(out.len(), n.div_ceil(97), "slow pairs found");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("3 example rules, one window of {n} pairs"), |b| {
            b.iter(|| {
                let mut out = Vec::new();
                rules.judge(&view, &mut out);
                out.len()
            })
        });
        group.bench_function(format!("pairs and nodes tables of {n} pairs"), |b| {
            b.iter(|| {
                detect::tables::pair_table(&window, &store).num_rows()
                    + detect::tables::node_table(&nodes, &store).num_rows()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
