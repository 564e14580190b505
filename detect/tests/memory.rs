//! Resident memory of pair aggregation: 100 k distinct pairs in one open window must stay
//! under 1 GiB. Its own test binary (one test) so that VmRSS measures this test alone.
//!
//! Input: synthetic flow records (no file), 400 sources × 250 destinations, 2 requests per
//! pair, all in window 0. The busy case (every pair-window holding an HDR histogram) is
//! measured by `cargo bench --bench window` with `WINDOW_BENCH_MEMORY_PER_PAIR=513`.

use detect::{DetectConfig, Detector};
use schemas::{FlowBatchBuilder, FlowRecordRef, Reporter};

/// Resident set size of this process, bytes (`VmRSS` in /proc/self/status).
fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS line")
        * 1024
}

#[test]
fn hundred_thousand_pairs_in_one_window_stay_under_one_gib() {
    const PAIRS: usize = 100_000;
    const PER_PAIR: usize = 2;
    let sources: Vec<String> = (0..400).map(|i| format!("src-{i:03}")).collect();
    let destinations: Vec<String> = (0..250).map(|i| format!("dst-{i:03}")).collect();
    let mut detector = Detector::try_from(DetectConfig::default()).unwrap();
    let before = vm_rss_bytes();
    let mut b = FlowBatchBuilder::new();
    let records = PAIRS * PER_PAIR;
    for i in 0..records {
        let p = i % PAIRS;
        // 0 .. 9 s: window 0 = [0, 10 s) stays open (watermark at most 4 s)
        let t = (i as i64 * 9_000_000) / records as i64;
        let mut r = FlowRecordRef::new(
            t,
            &sources[p / 250],
            &destinations[p % 250],
            Reporter::Envoy,
        );
        r.duration_us = Some(1_000 + (i as u64 * 7_919) % 199_000);
        r.status = Some(200);
        b.append(&r);
        if b.len() == 8192 {
            assert!(detector.push(&b.finish()).unwrap().is_empty());
        }
    }
    assert!(detector.push(&b.finish()).unwrap().is_empty());
    let after = vm_rss_bytes();
    let delta = after.saturating_sub(before);
    println!(
        "{PAIRS} pairs x {PER_PAIR} requests in one open window: VmRSS +{} MiB ({} bytes per pair)",
        delta >> 20,
        delta / PAIRS as u64
    );
    assert!(delta <= 1 << 30, "{delta} bytes for {PAIRS} pairs");
    let closed = detector.flush();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].pairs.len(), PAIRS);
    assert!(
        closed[0]
            .pairs
            .iter()
            .all(|p| p.requests == PER_PAIR as u64)
    );
}
