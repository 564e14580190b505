//! A closed window as Arrow tables: what SQL rules query and the archive stores.
//!
//! Three tables, one row per aggregate of the window, each with the columns below in this
//! order (every timestamp is `Timestamp(µs, "UTC")`, counts are `UInt64`, rates and ratios
//! `Float64`; nullable columns say so):
//!
//! **`pairs`** ([`pair_schema`]), one row per [`PairWindow`]:
//! `window_start`, `window_end`, `source`, `destination`, `requests`, `errors`, `rate_rps`
//! (req/s), `error_ratio`, `p50_us`, `p90_us`, `p99_us`, `max_us` (µs, null when no request
//! had a duration), `concurrency_mean`, `concurrency_peak` (requests in flight), `bytes_in`,
//! `bytes_out` (bytes), `bandwidth_in_bps`, `bandwidth_out_bps` (bytes/s), `breakdown_overflow`;
//! then for each pair signal of [`Signal::PAIR`] (`rate_rps`, `error_ratio`, `p50_us`,
//! `p99_us`, `concurrency_mean`, `bandwidth_in_bps`, `bandwidth_out_bps`) four nullable
//! columns: `<signal>_baseline` (the expected value, in the signal's unit), `<signal>_sigma`
//! (the baseline's σ, same unit), `<signal>_z` ((value − baseline) ÷ σ) and `<signal>_p` (the
//! probability under the baseline, its learned tails included, of a value at least this far
//! from it on the side it went: what the detectors score, so that a pair whose p99 often
//! spikes is not surprising at a large z). They are null while the pair's baseline warms up,
//! and `_z` and `_p` also when the window has no value for the signal (no request: no
//! latency).
//!
//! **`nodes`** ([`node_schema`]), one row per [`NodeWindow`] (services only):
//! `window_start`, `window_end`, `node`, `inflow_requests`, `inflow_bytes`, `ok_responses`,
//! `outflow_bytes`, `downstream_requests`, `callers`, `inflow_rps` (req/s), `ok_ratio` and
//! `downstream_per_request` (null without inflow); then `<signal>_baseline`, `_sigma`, `_z`,
//! `_p` for each node signal of [`Signal::NODE`].
//!
//! **`breakdown`** ([`breakdown_schema`]), one row per [`Breakdown`] entry of a pair:
//! `window_start`, `window_end`, `source`, `destination`, `source_zone`, `source_version`,
//! `destination_zone`, `destination_version` (nullable: records may not give them),
//! `requests`, `errors`, `timed`, `duration_sum_us` (µs), `bytes_in`, `bytes_out` (bytes).
//!
//! Baselines are those of the windows before this one (the store learns a window after
//! judging it), so `_z` says how surprising this window is.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayBuilder, ArrayRef, Float64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use schemas::{Breakdown, NodeWindow, PairWindow, Window};

use crate::store::{BaselineStore, Baselines, Signal};

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn window_fields() -> [Field; 2] {
    [
        Field::new("window_start", timestamp(), false),
        Field::new("window_end", timestamp(), false),
    ]
}

fn baseline_fields(signals: &[Signal]) -> Vec<Field> {
    signals
        .iter()
        .flat_map(|s| {
            ["baseline", "sigma", "z", "p"]
                .map(|what| Field::new(format!("{}_{what}", s.name()), DataType::Float64, true))
        })
        .collect()
}

static PAIR_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let u = |n: &str| Field::new(n, DataType::UInt64, false);
    let un = |n: &str| Field::new(n, DataType::UInt64, true);
    let f = |n: &str| Field::new(n, DataType::Float64, false);
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let mut fields: Vec<Field> = window_fields().into();
    fields.extend([
        s("source"),
        s("destination"),
        u("requests"),
        u("errors"),
        f("rate_rps"),
        f("error_ratio"),
        un("p50_us"),
        un("p90_us"),
        un("p99_us"),
        un("max_us"),
        f("concurrency_mean"),
        u("concurrency_peak"),
        u("bytes_in"),
        u("bytes_out"),
        f("bandwidth_in_bps"),
        f("bandwidth_out_bps"),
        u("breakdown_overflow"),
    ]);
    fields.extend(baseline_fields(&Signal::PAIR));
    Arc::new(Schema::new(fields))
});

static NODE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let u = |n: &str| Field::new(n, DataType::UInt64, false);
    let mut fields: Vec<Field> = window_fields().into();
    fields.push(Field::new("node", DataType::Utf8, false));
    fields.extend([
        u("inflow_requests"),
        u("inflow_bytes"),
        u("ok_responses"),
        u("outflow_bytes"),
        u("downstream_requests"),
        u("callers"),
        Field::new("inflow_rps", DataType::Float64, false),
        Field::new("ok_ratio", DataType::Float64, true),
        Field::new("downstream_per_request", DataType::Float64, true),
    ]);
    fields.extend(baseline_fields(&Signal::NODE));
    Arc::new(Schema::new(fields))
});

static BREAKDOWN_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let u = |n: &str| Field::new(n, DataType::UInt64, false);
    let mut fields: Vec<Field> = window_fields().into();
    fields.extend([
        Field::new("source", DataType::Utf8, false),
        Field::new("destination", DataType::Utf8, false),
        Field::new("source_zone", DataType::Utf8, true),
        Field::new("source_version", DataType::Utf8, true),
        Field::new("destination_zone", DataType::Utf8, true),
        Field::new("destination_version", DataType::Utf8, true),
        u("requests"),
        u("errors"),
        u("timed"),
        u("duration_sum_us"),
        u("bytes_in"),
        u("bytes_out"),
    ]);
    Arc::new(Schema::new(fields))
});

/// The schema of the `pairs` table (see the [module docs](self)).
pub fn pair_schema() -> SchemaRef {
    PAIR_SCHEMA.clone()
}

/// The schema of the `nodes` table (see the [module docs](self)).
pub fn node_schema() -> SchemaRef {
    NODE_SCHEMA.clone()
}

/// The schema of the `breakdown` table (see the [module docs](self)).
pub fn breakdown_schema() -> SchemaRef {
    BREAKDOWN_SCHEMA.clone()
}

/// The window columns of `rows` rows.
struct WindowColumns {
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
}

impl WindowColumns {
    fn new(rows: usize) -> Self {
        WindowColumns {
            start: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            end: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
        }
    }

    fn push(&mut self, w: Window) {
        self.start.append_value(w.start_us);
        self.end.append_value(w.end_us);
    }

    fn finish(mut self) -> [ArrayRef; 2] {
        [Arc::new(self.start.finish()), Arc::new(self.end.finish())]
    }
}

/// `<signal>_baseline`, `_sigma`, `_z`, `_p` columns of some signals.
struct BaselineColumns {
    /// Per signal: baseline, σ, z, p.
    columns: Vec<[Float64Builder; 4]>,
}

impl BaselineColumns {
    fn new(signals: usize, rows: usize) -> Self {
        BaselineColumns {
            columns: (0..signals)
                .map(|_| std::array::from_fn(|_| Float64Builder::with_capacity(rows)))
                .collect(),
        }
    }

    /// One row: each signal's value in the window (`None`: no data) against `baselines`.
    fn push(
        &mut self,
        store: &BaselineStore,
        baselines: Option<&Baselines>,
        signals: &[Signal],
        t_us: i64,
        value: impl Fn(Signal) -> Option<f64>,
    ) {
        for (signal, [b, s, z, p]) in signals.iter().zip(&mut self.columns) {
            let spec = store.spec(*signal);
            let x = value(*signal);
            let baseline = baselines.and_then(|bs| bs.get(*signal));
            // `z` of any finite value gives the expected value and σ
            let got = baseline.and_then(|sb| sb.z(&spec, t_us, x.unwrap_or(0.0)));
            match got {
                Some((expected, sigma, zv)) => {
                    b.append_value(expected);
                    s.append_value(sigma);
                    z.append_option(x.is_some().then_some(zv));
                    let score = x.and_then(|x| baseline?.score(&spec, t_us, x));
                    p.append_option(score.map(|sc| if sc.z >= 0.0 { sc.p_high } else { sc.p_low }));
                }
                None => {
                    b.append_null();
                    s.append_null();
                    z.append_null();
                    p.append_null();
                }
            }
        }
    }

    fn finish(self) -> impl Iterator<Item = ArrayRef> {
        self.columns
            .into_iter()
            .flat_map(|cols| finish(cols).into_iter())
    }
}

/// Each builder's array.
fn finish<B: ArrayBuilder, const N: usize>(builders: [B; N]) -> [ArrayRef; N] {
    builders.map(|mut b| b.finish())
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(schema, columns).expect("columns follow the schema")
}

/// The `pairs` table of one window: `pairs` (of one window) with their baselines in
/// `store`.
pub fn pair_table(pairs: &[PairWindow], store: &BaselineStore) -> RecordBatch {
    let n = pairs.len();
    let mut window = WindowColumns::new(n);
    let mut source = StringBuilder::with_capacity(n, n * 16);
    let mut destination = StringBuilder::with_capacity(n, n * 16);
    let mut u: [UInt64Builder; 6] = std::array::from_fn(|_| UInt64Builder::with_capacity(n));
    let [
        requests,
        errors,
        concurrency_peak,
        bytes_in,
        bytes_out,
        overflow,
    ] = &mut u;
    let mut lat: [UInt64Builder; 4] = std::array::from_fn(|_| UInt64Builder::with_capacity(n));
    let mut f: [Float64Builder; 5] = std::array::from_fn(|_| Float64Builder::with_capacity(n));
    let mut baselines = BaselineColumns::new(Signal::PAIR.len(), n);
    for p in pairs {
        window.push(p.window);
        source.append_value(&p.source);
        destination.append_value(&p.destination);
        requests.append_value(p.requests);
        errors.append_value(p.errors);
        concurrency_peak.append_value(p.concurrency_peak);
        bytes_in.append_value(p.bytes_in);
        bytes_out.append_value(p.bytes_out);
        overflow.append_value(p.breakdown_overflow);
        let l = p.latency;
        for (b, v) in lat.iter_mut().zip([
            l.map(|l| l.p50_us),
            l.map(|l| l.p90_us),
            l.map(|l| l.p99_us),
            l.map(|l| l.max_us),
        ]) {
            b.append_option(v);
        }
        for (b, v) in f.iter_mut().zip([
            p.rate_rps,
            p.error_ratio,
            p.concurrency_mean,
            p.bandwidth_in_bps,
            p.bandwidth_out_bps,
        ]) {
            b.append_value(v);
        }
        baselines.push(
            store,
            store.pair(&p.source, &p.destination),
            &Signal::PAIR,
            p.window.start_us,
            |s| s.of_pair(p),
        );
    }
    let [
        requests,
        errors,
        concurrency_peak,
        bytes_in,
        bytes_out,
        overflow,
    ] = finish(u);
    let [p50, p90, p99, max] = finish(lat);
    let [rate, error_ratio, concurrency_mean, bw_in, bw_out] = finish(f);
    let mut columns: Vec<ArrayRef> = window.finish().into();
    columns.extend([
        Arc::new(source.finish()) as ArrayRef,
        Arc::new(destination.finish()),
        requests,
        errors,
        rate,
        error_ratio,
        p50,
        p90,
        p99,
        max,
        concurrency_mean,
        concurrency_peak,
        bytes_in,
        bytes_out,
        bw_in,
        bw_out,
        overflow,
    ]);
    columns.extend(baselines.finish());
    batch(pair_schema(), columns)
}

/// The `nodes` table of one window: `nodes` with their baselines in `store`.
pub fn node_table(nodes: &[NodeWindow], store: &BaselineStore) -> RecordBatch {
    let n = nodes.len();
    let mut window = WindowColumns::new(n);
    let mut node = StringBuilder::with_capacity(n, n * 16);
    let mut u: [UInt64Builder; 6] = std::array::from_fn(|_| UInt64Builder::with_capacity(n));
    let mut f: [Float64Builder; 3] = std::array::from_fn(|_| Float64Builder::with_capacity(n));
    let mut baselines = BaselineColumns::new(Signal::NODE.len(), n);
    for nw in nodes {
        window.push(nw.window);
        node.append_value(&nw.node);
        for (b, v) in u.iter_mut().zip([
            nw.inflow_requests,
            nw.inflow_bytes,
            nw.ok_responses,
            nw.outflow_bytes,
            nw.downstream_requests,
            nw.callers,
        ]) {
            b.append_value(v);
        }
        for (b, s) in f.iter_mut().zip(Signal::NODE) {
            b.append_option(s.of_node(nw));
        }
        baselines.push(
            store,
            store.node(&nw.node),
            &Signal::NODE,
            nw.window.start_us,
            |s| s.of_node(nw),
        );
    }
    let mut columns: Vec<ArrayRef> = window.finish().into();
    columns.push(Arc::new(node.finish()));
    columns.extend(finish(u));
    columns.extend(finish(f));
    columns.extend(baselines.finish());
    batch(node_schema(), columns)
}

/// The `breakdown` table of one window: every breakdown entry of `pairs`.
pub fn breakdown_table(pairs: &[PairWindow]) -> RecordBatch {
    let n: usize = pairs.iter().map(|p| p.breakdown.len()).sum();
    let mut window = WindowColumns::new(n);
    let mut s: [StringBuilder; 6] = std::array::from_fn(|_| StringBuilder::with_capacity(n, n * 8));
    let mut u: [UInt64Builder; 6] = std::array::from_fn(|_| UInt64Builder::with_capacity(n));
    for p in pairs {
        for b in &p.breakdown {
            let Breakdown {
                source_zone,
                source_version,
                destination_zone,
                destination_version,
                requests,
                errors,
                timed,
                duration_sum_us,
                bytes_in,
                bytes_out,
            } = b;
            window.push(p.window);
            s[0].append_value(&p.source);
            s[1].append_value(&p.destination);
            for (col, v) in s[2..].iter_mut().zip([
                source_zone,
                source_version,
                destination_zone,
                destination_version,
            ]) {
                col.append_option(v.as_deref());
            }
            for (col, v) in u.iter_mut().zip([
                requests,
                errors,
                timed,
                duration_sum_us,
                bytes_in,
                bytes_out,
            ]) {
                col.append_value(*v);
            }
        }
    }
    let mut columns: Vec<ArrayRef> = window.finish().into();
    columns.extend(finish(s));
    columns.extend(finish(u));
    batch(breakdown_schema(), columns)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType, UInt64Type};
    use schemas::Breakdown;

    use super::*;
    use crate::adaptive::BaselineSpec;
    use crate::signatures::generic::tests::pw;

    fn f64_at(b: &RecordBatch, column: &str, row: usize) -> Option<f64> {
        let a = b.column_by_name(column).expect(column);
        let a = a.as_primitive::<Float64Type>();
        a.is_valid(row).then(|| a.value(row))
    }

    fn u64_at(b: &RecordBatch, column: &str, row: usize) -> Option<u64> {
        let a = b.column_by_name(column).expect(column);
        let a = a.as_primitive::<UInt64Type>();
        a.is_valid(row).then(|| a.value(row))
    }

    #[test]
    fn the_pairs_table_has_each_pairs_signals_and_its_baselines() {
        let mut store = BaselineStore::new(BaselineSpec::default());
        // ten steady windows: 200 requests (20 req/s), p99 40 ms
        for k in 0..10 {
            store.learn_pair(&pw(k, "web", "api", 200, 2, 40_000));
        }
        let mut slow = pw(10, "web", "api", 300, 3, 52_000);
        slow.breakdown = vec![Breakdown {
            source_zone: Some("a".into()),
            destination_zone: Some("b".into()),
            requests: 300,
            errors: 3,
            ..Breakdown::default()
        }];
        let mut quiet = pw(10, "web", "db", 0, 0, 0);
        quiet.latency = None;
        let t = pair_table(&[slow, quiet], &store);
        assert_eq!(t.schema(), pair_schema());
        assert_eq!(t.num_rows(), 2);
        let start = t.column_by_name("window_start").unwrap();
        assert_eq!(
            start.as_primitive::<TimestampMicrosecondType>().value(0),
            100_000_000
        );
        assert_eq!(
            t.column_by_name("destination")
                .unwrap()
                .as_string::<i32>()
                .value(1),
            "db"
        );
        assert_eq!(u64_at(&t, "requests", 0), Some(300));
        assert_eq!(u64_at(&t, "p99_us", 0), Some(52_000));
        assert_eq!(u64_at(&t, "p90_us", 0), Some(26_000));
        // a steady level keeps MAD 0: σ is the floor, 5 % of the level (2 ms; 1 req/s)
        assert_eq!(f64_at(&t, "p99_us_baseline", 0), Some(40_000.0));
        assert_eq!(f64_at(&t, "p99_us_sigma", 0), Some(2_000.0));
        assert_eq!(f64_at(&t, "p99_us_z", 0), Some(6.0));
        assert_eq!(f64_at(&t, "rate_rps_baseline", 0), Some(20.0));
        assert_eq!(f64_at(&t, "rate_rps_z", 0), Some(10.0));
        // the tail probability on the side the value went: small for the rise, about even
        // for an error ratio at its baseline (1 %)
        let p99_p = f64_at(&t, "p99_us_p", 0).unwrap();
        assert!(p99_p > 0.0 && p99_p < 1e-3, "{p99_p}");
        let rate_p = f64_at(&t, "rate_rps_p", 0).unwrap();
        assert!(rate_p < p99_p, "10σ is rarer than 6σ: {rate_p} vs {p99_p}");
        let errors_p = f64_at(&t, "error_ratio_p", 0).unwrap();
        assert!(errors_p > 0.3, "{errors_p}");
        assert_eq!(f64_at(&t, "p99_us_p", 1), None);
        // a pair without a baseline, and without latency
        assert_eq!(u64_at(&t, "p99_us", 1), None);
        assert_eq!(f64_at(&t, "p99_us_baseline", 1), None);
        assert_eq!(f64_at(&t, "rate_rps_z", 1), None);

        let b = breakdown_table(&[pw(3, "x", "y", 5, 0, 1), {
            let mut p = pw(3, "web", "api", 300, 3, 1);
            p.breakdown = vec![Breakdown {
                source_zone: Some("a".into()),
                destination_version: Some("v2".into()),
                requests: 300,
                errors: 3,
                ..Breakdown::default()
            }];
            p
        }]);
        assert_eq!(b.num_rows(), 1);
        let s = |c: &str| b.column_by_name(c).unwrap().as_string::<i32>().clone();
        assert_eq!(s("source").value(0), "web");
        assert_eq!(s("source_zone").value(0), "a");
        assert!(s("destination_zone").is_null(0));
        assert_eq!(s("destination_version").value(0), "v2");
        assert_eq!(u64_at(&b, "errors", 0), Some(3));
    }

    #[test]
    fn the_nodes_table_gives_no_ratio_without_inflow() {
        let store = BaselineStore::new(BaselineSpec::default());
        let pairs = [
            pw(0, "web", "api", 100, 10, 1_000),
            pw(0, "api", "db", 50, 0, 1_000),
        ];
        let nodes = crate::node::node_windows(pairs[0].window, &pairs);
        let t = node_table(&nodes, &store);
        let names = t.column_by_name("node").unwrap().as_string::<i32>().clone();
        let row = |n: &str| (0..t.num_rows()).find(|&i| names.value(i) == n).unwrap();
        let api = row("api");
        assert_eq!(u64_at(&t, "inflow_requests", api), Some(100));
        assert_eq!(u64_at(&t, "downstream_requests", api), Some(50));
        assert_eq!(f64_at(&t, "ok_ratio", api), Some(0.9));
        assert_eq!(f64_at(&t, "downstream_per_request", api), Some(0.5));
        assert_eq!(f64_at(&t, "inflow_rps", api), Some(10.0));
        assert_eq!(f64_at(&t, "ok_ratio", row("web")), None);
        assert_eq!(f64_at(&t, "ok_ratio_baseline", api), None);
    }
}
