//! The report page: HTML with inline CSS, SVG plots and one small script, no network.
//!
//! Elements a reader (or a test) can find: `svg#landscape` with one `g.node[data-node]` per
//! service and one `path.edge[data-source][data-destination]` per pair (class `troubled` when
//! a finding touches it); `ol#timeline` with one `li.incident[data-key]` per incident, each
//! step an `li.step` with `data-step` `evidence`, `finding`, `alert`, `command`, `decision`
//! or `resolved`; `section#pairs` with one `div.pair[id]` per drawn pair holding three
//! `svg.plot` (rate, p99, errors; p99 replaced by a `p.nolatency` note when the input has no
//! durations), each with a `polygon.band` (baseline ± 2σ) per run of windows the pair had a
//! baseline in, and a `polyline.value` per run of windows with data. A window without the
//! pair's requests is rate 0 and no data for p99 and errors; past 280 windows (`MAX_POINTS`),
//! a point stands for a bucket of windows (its highest value, its mean band).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use schemas::{AlertAction, CommandAction, Window};

use super::Report;
use crate::golden::Touched;

/// HTML-escapes text for element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2026-12-03 14:05:00` (UTC) of `us` µs since the epoch.
fn time(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0).unsigned_abs());
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.replace('T', " ").trim_end_matches('Z').to_owned()
}

/// A number with at most 3 significant decimals, no float noise.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// An id-safe form of a pair: `pair-<source>--<destination>` with other bytes as `_`.
fn pair_id(source: &str, destination: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("pair-{}--{}", clean(source), clean(destination))
}

/// Most services drawn in the graph: the busiest, plus every troubled one.
const GRAPH_NODES: usize = 150;

/// The landscape graph as SVG: services in layers by call depth (longest path from a service
/// no one calls, cycles cut), ordered in each layer by the mean position of their callers.
fn graph(report: &Report, troubled: &Touched<'_>) -> String {
    // the busiest services by requests in and out, plus troubled ones
    let mut traffic: HashMap<&str, u64> = HashMap::new();
    for ((s, d), t) in &report.totals {
        *traffic.entry(s).or_default() += t.requests;
        *traffic.entry(d).or_default() += t.requests;
    }
    let mut ranked: Vec<(&str, u64)> = traffic.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: BTreeSet<&str> = ranked
        .iter()
        .enumerate()
        .filter(|(i, (n, _))| *i < GRAPH_NODES || troubled.nodes.contains(n))
        .map(|(_, (n, _))| *n)
        .collect();
    let edges: Vec<(&str, &str, u64, u64)> = report
        .totals
        .iter()
        .filter(|((s, d), _)| shown.contains(s.as_str()) && shown.contains(d.as_str()))
        .map(|((s, d), t)| (s.as_str(), d.as_str(), t.requests, t.errors))
        .collect();
    let nodes: Vec<&str> = shown.into_iter().collect();
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // layers: relax "callee is one deeper than its caller" at most |nodes| times (cuts cycles)
    let mut layer = vec![0usize; nodes.len()];
    for _ in 0..nodes.len() {
        let mut moved = false;
        for &(s, d, _, _) in &edges {
            let (s, d) = (index[s], index[d]);
            if s != d && layer[d] < layer[s] + 1 && layer[s] + 1 < nodes.len() {
                layer[d] = layer[s] + 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let depth = layer.iter().copied().max().unwrap_or(0) + 1;
    let mut columns: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, &l) in layer.iter().enumerate() {
        columns[l].push(i);
    }
    // order each layer by the mean row of its callers in the layer before
    let mut row = vec![0f64; nodes.len()];
    for col in &mut columns {
        let key = |i: &usize| {
            let callers: Vec<f64> = edges
                .iter()
                .filter(|e| index[e.1] == *i && layer[index[e.0]] < layer[*i])
                .map(|e| row[index[e.0]])
                .collect();
            if callers.is_empty() {
                f64::MAX
            } else {
                callers.iter().sum::<f64>() / callers.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = col.iter().map(|i| (key(i), *i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(nodes[a.1].cmp(nodes[b.1])));
        *col = keyed.into_iter().map(|(_, i)| i).collect();
        for (r, &i) in col.iter().enumerate() {
            row[i] = r as f64;
        }
    }
    let (col_w, row_h, pad) = (175.0, 40.0, 24.0);
    let rows = columns.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let width = pad * 2.0 + col_w * depth as f64;
    let height = pad * 2.0 + row_h * rows as f64;
    let pos = |i: usize| {
        (
            pad + 20.0 + col_w * layer[i] as f64,
            pad + row_h * (row[i] + 0.5),
        )
    };
    let max_requests = edges.iter().map(|e| e.2).max().unwrap_or(1).max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="landscape" xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-label="landscape graph">"#
    );
    svg.push_str(r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#8a8a8a"/></marker></defs>"##);
    for &(s, d, requests, errors) in &edges {
        let (a, b) = (pos(index[s]), pos(index[d]));
        let w = 1.0 + 4.0 * ((requests as f64).ln_1p() / max_requests.ln_1p());
        let bad = troubled.pair(s, d);
        let class = if bad { "edge troubled" } else { "edge" };
        let path = if s == d {
            format!("M {:.1} {:.1} c 30 -30 30 30 0 8", a.0 + 8.0, a.1 - 4.0)
        } else if layer[index[d]] > layer[index[s]] {
            let mid = (a.0 + b.0) / 2.0;
            format!(
                "M {:.1} {:.1} C {mid:.1} {:.1}, {mid:.1} {:.1}, {:.1} {:.1}",
                a.0 + 9.0,
                a.1,
                a.1,
                b.1,
                b.0 - 10.0,
                b.1
            )
        } else {
            // a call back to an earlier layer: an arc above
            let lift = 40.0 + (a.0 - b.0).abs() / 6.0;
            format!(
                "M {:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
                a.0,
                a.1 - 9.0,
                a.0,
                a.1 - lift,
                b.0,
                b.1 - lift,
                b.0,
                b.1 - 10.0
            )
        };
        let _ = write!(
            svg,
            r#"<path class="{class}" data-source="{}" data-destination="{}" d="{path}" stroke-width="{w:.1}" marker-end="url(#arrow)"><title>{} → {}: {} requests, {} errors</title></path>"#,
            esc(s),
            esc(d),
            esc(s),
            esc(d),
            requests,
            errors
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = pos(i);
        let class = if troubled.nodes.contains(n) {
            "node troubled"
        } else if edges
            .iter()
            .any(|e| (e.0 == *n || e.1 == *n) && troubled.pair(e.0, e.1))
        {
            "node touched"
        } else {
            "node"
        };
        let _ = write!(
            svg,
            r#"<g class="{class}" data-node="{}"><circle cx="{x:.1}" cy="{y:.1}" r="8"/><text x="{:.1}" y="{:.1}">{}</text><title>{}</title></g>"#,
            esc(n),
            x + 12.0,
            y + 4.0,
            esc(n),
            esc(n)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// (window start µs, value, band (low, high)).
type PlotPoint = (i64, Option<f64>, Option<(f64, f64)>);

/// One plot: `values` over time with an optional band, as SVG of `W`×`H`.
struct Plot<'a> {
    title: &'a str,
    unit: &'a str,
    points: Vec<PlotPoint>,
    /// Windows of findings on the pair (start µs).
    marks: &'a [i64],
    span: (i64, i64),
    /// Window length, µs: points further apart are not joined (no data between them).
    step: i64,
}

const W: f64 = 330.0;
const H: f64 = 120.0;

impl Plot<'_> {
    fn svg(&self, class: &str) -> String {
        let (left, right, top, bottom) = (44.0, 8.0, 18.0, 16.0);
        let (t0, t1) = self.span;
        let dt = (t1 - t0).max(1) as f64;
        let top_value = self
            .points
            .iter()
            .flat_map(|(_, v, b)| v.iter().copied().chain(b.map(|b| b.1)))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let top_value = if top_value > 0.0 {
            top_value * 1.1
        } else {
            1.0
        };
        // a share tops at 100 %
        let top_value = if self.unit == "%" {
            top_value.min(100.0)
        } else {
            top_value
        };
        let x = |t: i64| left + (W - left - right) * (t - t0) as f64 / dt;
        let y = |v: f64| top + (H - top - bottom) * (1.0 - (v / top_value).clamp(0.0, 1.0));
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg class="plot {class}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}"><text class="title" x="{left}" y="12">{} ({})</text>"#,
            esc(self.title),
            esc(self.unit)
        );
        for &m in self.marks {
            let _ = write!(
                s,
                r#"<rect class="finding" x="{:.1}" y="{top}" width="{:.1}" height="{:.1}"/>"#,
                x(m),
                ((W - left - right) / self.points.len().max(1) as f64).max(2.0),
                H - top - bottom
            );
        }
        // the band, one polygon per run of windows with a baseline (highs left to right,
        // lows right to left): no band across windows without one
        let mut bands: Vec<Vec<(i64, (f64, f64))>> = Vec::new();
        let mut last: Option<i64> = None;
        for (t, _, b) in &self.points {
            let Some(b) = b else {
                last = None;
                continue;
            };
            if last.is_none_or(|l| t - l > self.step) || bands.is_empty() {
                bands.push(Vec::new());
            }
            bands.last_mut().expect("pushed above").push((*t, *b));
            last = Some(*t);
        }
        for banded in bands.iter().filter(|b| b.len() >= 2) {
            let mut pts = String::new();
            for (t, (_, hi)) in banded {
                let _ = write!(pts, "{:.1},{:.1} ", x(*t), y(*hi));
            }
            for (t, (lo, _)) in banded.iter().rev() {
                let _ = write!(pts, "{:.1},{:.1} ", x(*t), y(*lo));
            }
            let _ = write!(s, r#"<polygon class="band" points="{}"/>"#, pts.trim_end());
        }
        // one polyline per run of windows with data: a window without requests is no data
        let mut runs: Vec<String> = Vec::new();
        let mut last: Option<i64> = None;
        for (t, v, _) in &self.points {
            let Some(v) = v else {
                last = None;
                continue;
            };
            if last.is_none_or(|l| t - l > self.step) || runs.is_empty() {
                runs.push(String::new());
            }
            let run = runs.last_mut().expect("pushed above");
            let _ = write!(run, "{:.1},{:.1} ", x(*t), y(*v));
            last = Some(*t);
        }
        for run in runs {
            let run = run.trim_end();
            if run.contains(' ') {
                let _ = write!(s, r#"<polyline class="value" points="{run}"/>"#);
            } else {
                // a window alone between gaps: a dot (a zero-length line with round caps)
                let _ = write!(s, r#"<polyline class="value dot" points="{run} {run}"/>"#);
            }
        }
        let _ = write!(
            s,
            r#"<line class="axis" x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">0</text>"#,
            H - bottom,
            W - right,
            H - bottom,
            left - 4.0,
            top + 8.0,
            num(top_value),
            left - 4.0,
            H - bottom
        );
        // time ticks: the first with its date (`01-05 00:00`), the others the time of day,
        // or all with their date when the plot spans days
        let days = t1 - t0 >= 86_400_000_000;
        let ticks = if days { 3 } else { 4 };
        for k in 0..ticks {
            let t = t0 + (t1 - t0) * k / (ticks - 1);
            let at = time(t);
            let label = if k == 0 || days {
                at.get(5..16).unwrap_or_default()
            } else {
                at.get(11..16).unwrap_or_default()
            };
            let anchor = match k {
                0 => "start",
                k if k == ticks - 1 => "end",
                _ => "middle",
            };
            let _ = write!(
                s,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="{anchor}">{label}</text>"#,
                x(t),
                H - 3.0,
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// A band of baseline ± 2σ, not below 0.
fn band(b: Option<(f64, f64)>, scale: f64, most: f64) -> Option<(f64, f64)> {
    b.map(|(m, s)| {
        (
            ((m - 2.0 * s) * scale).clamp(0.0, most),
            ((m + 2.0 * s) * scale).clamp(0.0, most),
        )
    })
}

/// Most points a plot draws: about one per horizontal pixel of its area.
const MAX_POINTS: usize = 280;

/// What a plot shows of a window.
#[derive(Clone, Copy)]
struct WindowPoint {
    start_us: i64,
    /// Whether the pair had requests in the window.
    requests: bool,
    rate_rps: f64,
    rate_baseline: Option<(f64, f64)>,
    p99_us: Option<u64>,
    p99_baseline: Option<(f64, f64)>,
    error_ratio: f64,
    error_baseline: Option<(f64, f64)>,
}

/// A pair's points for every window of the run: a window where the pair had no row had no
/// requests (rate 0; no latency or error ratio: no data).
fn every_window(windows: &[Window], series: &[super::Point]) -> Vec<WindowPoint> {
    let by_start: HashMap<i64, &super::Point> = series.iter().map(|p| (p.start_us, p)).collect();
    // a quiet window leaves the rate baseline where it was
    let mut rate_baseline = None;
    windows
        .iter()
        .map(|w| match by_start.get(&w.start_us) {
            Some(p) => {
                rate_baseline = p.rate_baseline.or(rate_baseline);
                WindowPoint {
                    start_us: w.start_us,
                    requests: true,
                    rate_rps: p.rate_rps,
                    rate_baseline,
                    p99_us: p.p99_us,
                    p99_baseline: p.p99_baseline,
                    error_ratio: p.error_ratio,
                    error_baseline: p.error_baseline,
                }
            }
            None => WindowPoint {
                start_us: w.start_us,
                requests: false,
                rate_rps: 0.0,
                rate_baseline,
                p99_us: None,
                p99_baseline: None,
                error_ratio: 0.0,
                error_baseline: None,
            },
        })
        .collect()
}

/// `points` in buckets of `n` windows: each bucket's highest value (spikes stay visible)
/// and mean band, at its first window's start.
fn downsample(points: impl Iterator<Item = PlotPoint>, n: usize) -> Vec<PlotPoint> {
    let points: Vec<PlotPoint> = points.collect();
    if n <= 1 {
        return points;
    }
    points
        .chunks(n)
        .map(|c| {
            let value = c.iter().filter_map(|p| p.1).reduce(f64::max);
            let bands: Vec<(f64, f64)> = c.iter().filter_map(|p| p.2).collect();
            let band = (!bands.is_empty()).then(|| {
                let k = bands.len() as f64;
                (
                    bands.iter().map(|b| b.0).sum::<f64>() / k,
                    bands.iter().map(|b| b.1).sum::<f64>() / k,
                )
            });
            (c[0].0, value, band)
        })
        .collect()
}

/// The pairs to draw: those of findings first (in incident order), then the busiest.
fn drawn_pairs(report: &Report, troubled: &Touched<'_>, n: usize) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen = HashSet::new();
    let mut by_traffic: Vec<(&(String, String), u64)> =
        report.totals.iter().map(|(k, t)| (k, t.requests)).collect();
    by_traffic.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let first = by_traffic
        .iter()
        .filter(|(k, _)| troubled.pair(&k.0, &k.1) || troubled.nodes.contains(k.0.as_str()));
    for (k, _) in first.chain(by_traffic.iter()) {
        if out.len() >= n {
            break;
        }
        if report.series.contains_key(*k) && seen.insert(*k) {
            out.push((*k).clone());
        }
    }
    out
}

fn pair_section(report: &Report, troubled: &Touched<'_>, n: usize) -> String {
    let span = (
        report.windows.iter().map(|w| w.start_us).min().unwrap_or(0),
        report.windows.iter().map(|w| w.start_us).max().unwrap_or(0),
    );
    // each incident's windows, and what it is about
    let incidents: Vec<(Touched<'_>, Vec<i64>)> = report
        .incidents
        .iter()
        .map(|i| {
            let windows = report
                .windows
                .iter()
                .filter(|w| w.start_us >= i.first.window.start_us && w.start_us <= i.last.start_us)
                .map(|w| w.start_us)
                .collect();
            (Touched::of([&i.first.subject]), windows)
        })
        .collect();
    let step = report
        .windows
        .first()
        .map_or(1, |w| w.end_us - w.start_us)
        .max(1);
    // a plot has a point per window, or per bucket of windows on long runs
    let per_bucket = report.windows.len().div_ceil(MAX_POINTS).max(1);
    let step = step * per_bucket as i64;
    let mut html = String::from(r#"<section id="pairs"><h2>Pairs</h2>"#);
    if per_bucket > 1 {
        let _ = write!(
            html,
            r#"<p class="meta">Each point is the highest value of {per_bucket} windows (the band, their mean baseline), so that {} windows fit.</p>"#,
            report.windows.len()
        );
    }
    for (s, d) in drawn_pairs(report, troubled, n) {
        let points = every_window(&report.windows, &report.series[&(s.clone(), d.clone())]);
        let points = &points;
        let mut m: Vec<i64> = incidents
            .iter()
            .filter(|(t, _)| t.pair(&s, &d))
            .flat_map(|(_, w)| w.iter().copied())
            .collect();
        m.sort_unstable();
        m.dedup();
        let t = &report.totals[&(s.clone(), d.clone())];
        let _ = write!(
            html,
            r#"<div class="pair" id="{}"><h3>{} → {}</h3><p class="totals">{} requests, {} errors{}</p>"#,
            pair_id(&s, &d),
            esc(&s),
            esc(&d),
            t.requests,
            t.errors,
            t.worst_p99_us
                .map(|p| format!(", worst p99 {} ms", num(p as f64 / 1000.0)))
                .unwrap_or_default()
        );
        let has_latency = points.iter().any(|p| p.p99_us.is_some());
        let bucketed =
            |f: &dyn Fn(&WindowPoint) -> PlotPoint| downsample(points.iter().map(f), per_bucket);
        let plots = [
            Plot {
                title: "rate",
                unit: "req/s",
                points: bucketed(&|p| {
                    (
                        p.start_us,
                        Some(p.rate_rps),
                        band(p.rate_baseline, 1.0, f64::INFINITY),
                    )
                }),
                marks: &m,
                span,
                step,
            },
            Plot {
                title: "p99 latency",
                unit: "ms",
                points: bucketed(&|p| {
                    (
                        p.start_us,
                        p.p99_us.map(|v| v as f64 / 1000.0),
                        band(p.p99_baseline, 1e-3, f64::INFINITY),
                    )
                }),
                marks: &m,
                span,
                step,
            },
            Plot {
                title: "errors",
                unit: "%",
                points: bucketed(&|p| {
                    (
                        p.start_us,
                        p.requests.then_some(p.error_ratio * 100.0),
                        band(p.error_baseline, 100.0, 100.0),
                    )
                }),
                marks: &m,
                span,
                step,
            },
        ];
        for (plot, class) in plots.iter().zip(["rate", "p99", "errors"]) {
            if class == "p99" && !has_latency {
                html.push_str(
                    r#"<p class="meta nolatency">No latency: the input's format carries no request durations.</p>"#,
                );
                continue;
            }
            html.push_str(&plot.svg(class));
        }
        html.push_str("</div>");
    }
    html.push_str("</section>");
    html
}

/// A signal's name for people: `p99_us` → `p99 latency`, `ok_response_ratio` → `ok
/// response ratio`.
fn signal_label(signal: &str) -> String {
    let base = signal
        .strip_suffix("_us")
        .map(|s| format!("{s} latency"))
        .or_else(|| signal.strip_suffix("_rps").map(str::to_owned))
        .or_else(|| signal.strip_suffix("_bps").map(str::to_owned))
        .unwrap_or_else(|| signal.to_owned());
    base.replace('_', " ")
}

/// A value in the unit people read it in: µs as ms (or s), ratios of errors and answers as
/// %, bytes/s as kB/s or MB/s.
fn quantity(value: f64, unit: &str, signal: &str) -> String {
    match unit {
        "µs" if value.abs() >= 1e6 => format!("{} s", num(value / 1e6)),
        "µs" => format!("{} ms", num(value / 1e3)),
        "ratio" if signal.contains("error") || signal.starts_with("ok") => {
            format!("{} %", num(value * 100.0))
        }
        "ratio" => num(value),
        "bytes/s" if value.abs() >= 1e6 => format!("{} MB/s", num(value / 1e6)),
        "bytes/s" if value.abs() >= 1e3 => format!("{} kB/s", num(value / 1e3)),
        unit => format!("{} {}", num(value), esc(unit)),
    }
}

/// One piece of evidence as a sentence: `p99 latency 812 ms against a baseline of 95 ms`.
fn evidence(e: &schemas::Evidence) -> String {
    format!(
        "{} {} against a baseline of {}",
        esc(&signal_label(&e.signal)),
        quantity(e.value, &e.unit, &e.signal),
        quantity(e.baseline, &e.unit, &e.signal)
    )
}

fn timeline(report: &Report) -> String {
    let mut html = String::from(r#"<section><h2>Incidents</h2><ol id="timeline">"#);
    if report.windows.is_empty() {
        html.push_str(
            r#"<li class="none">No window closed: no record was read (see the lines not used, above).</li>"#,
        );
    } else if report.incidents.is_empty() {
        html.push_str(
            r#"<li class="none">No finding: every signal stayed within its baseline.</li>"#,
        );
    }
    for i in &report.incidents {
        let f = &i.first;
        let _ = write!(
            html,
            r#"<li class="incident {}" data-key="{}"><h3>{} <span class="subject">{}</span></h3><ol class="steps">"#,
            match f.severity {
                schemas::Severity::Critical => "critical",
                schemas::Severity::Warning => "warning",
            },
            esc(&i.key),
            esc(f.rule.as_deref().unwrap_or(f.signature.as_str())),
            esc(&f.subject.to_string())
        );
        // evidence → finding → alert → command → decisions → resolved, in time order
        let mut steps: Vec<(i64, u8, String, String)> = Vec::new();
        let evidence: Vec<String> = f.evidence.iter().map(evidence).collect();
        steps.push((
            f.window.start_us,
            0,
            "evidence".into(),
            if evidence.is_empty() {
                "(no scored evidence)".into()
            } else {
                evidence.join("; ")
            },
        ));
        steps.push((
            f.window.end_us,
            1,
            "finding".into(),
            format!(
                "{} (score {}, {} window(s) open, last {})",
                esc(&f.summary),
                num(i.peak_score),
                i.windows,
                time(i.last.start_us)
            ),
        ));
        for a in &i.alerts {
            let what = match a.action {
                AlertAction::Trigger => "alert triggered",
                AlertAction::Resolve => "resolved",
            };
            let step = if a.action == AlertAction::Resolve {
                "resolved"
            } else {
                "alert"
            };
            steps.push((a.at_us, 2, step.into(), esc(what)));
        }
        for c in &i.commands {
            let action = match c.action {
                CommandAction::Issue => "issued",
                CommandAction::Renew => "renewed",
                CommandAction::Revoke => "revoked",
            };
            steps.push((
                c.issued_at_us,
                3,
                "command".into(),
                format!(
                    "{} {} <code>{}</code> ({})",
                    esc(c.pattern().as_str()),
                    action,
                    esc(&c.id),
                    esc(c.mode.as_str())
                ),
            ));
        }
        for a in &i.audit {
            if matches!(
                a.decision,
                schemas::Decision::Suppressed
                    | schemas::Decision::Expired
                    | schemas::Decision::Approved
            ) {
                steps.push((
                    a.at_us,
                    4,
                    "decision".into(),
                    format!(
                        "{} {}: {}",
                        esc(a.pattern.as_str()),
                        a.decision.as_str(),
                        esc(&a.detail)
                    ),
                ));
            }
        }
        steps.sort_by_key(|s| (s.0, s.1));
        for (at, _, step, text) in steps {
            let _ = write!(
                html,
                r#"<li class="step" data-step="{step}"><time>{}</time> <b>{step}</b> {text}</li>"#,
                time(at)
            );
        }
        html.push_str("</ol></li>");
    }
    html.push_str("</ol></section>");
    html
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:10px 0 4px}
.meta{color:#555}.graph{overflow:auto;border:1px solid #ddd;border-radius:6px;background:#fcfcfc}
.edge{fill:none;stroke:#9a9a9a;opacity:.75}.edge.troubled{stroke:#d62728;opacity:1}
.node circle{fill:#4c78a8;stroke:#fff;stroke-width:2}.node.touched circle{fill:#f28e2b}.node.troubled circle{fill:#d62728}
.node text{font-size:11px;fill:#222}.node:hover text{font-weight:bold}
.selected circle{stroke:#000}.edge.selected{stroke:#000}
#timeline{padding-left:20px}.incident{margin-bottom:14px}.incident.critical h3{color:#b01e1e}
.steps{list-style:none;padding-left:8px;border-left:3px solid #ddd}.step{margin:3px 0}
.step time{color:#666;font-variant-numeric:tabular-nums}
.step[data-step=evidence] b{color:#6a3d9a}.step[data-step=finding] b{color:#d62728}
.step[data-step=command] b{color:#e67e00}.step[data-step=resolved] b{color:#2ca02c}
.pair{display:inline-block;vertical-align:top;margin:0 18px 18px 0}.totals{margin:0;color:#555}
#landscape{max-width:100%;height:auto}.plot{display:block}.plot .dot{stroke-width:3;stroke-linecap:round}.plot .band{fill:#9ecae1;opacity:.55}.plot .value{fill:none;stroke:#08519c;stroke-width:1.6}
.plot .finding{fill:#d62728;opacity:.15}.plot .axis{stroke:#bbb}.plot .title{font-size:12px;font-weight:600}
.plot .tick{font-size:10px;fill:#666}
"#;

/// Clicking a service or a pair highlights it and, for a pair that is drawn, shows its plots.
const SCRIPT: &str = r#"
(function () {
  var graph = document.getElementById('landscape');
  if (!graph) return;
  graph.addEventListener('click', function (e) {
    var el = e.target.closest('.node, .edge');
    if (!el) return;
    graph.querySelectorAll('.selected').forEach(function (s) { s.classList.remove('selected'); });
    el.classList.add('selected');
    if (el.classList.contains('edge')) {
      var id = el.getAttribute('data-pair-id');
      var target = id && document.getElementById(id);
      if (target) target.scrollIntoView({behavior: 'smooth'});
    }
  });
  document.documentElement.setAttribute('data-ready', 'yes');
})();
"#;

/// The page.
pub fn render(report: &Report, inputs: &[String], pairs: usize) -> String {
    let troubled = Touched::of(report.incidents.iter().map(|i| &i.first.subject));
    let span = match (report.windows.first(), report.windows.last()) {
        (Some(a), Some(b)) => format!("{} to {} UTC", time(a.start_us), time(b.end_us)),
        _ => "no window closed".into(),
    };
    let requests: u64 = report.totals.values().map(|t| t.requests).sum();
    let mut graph = graph(report, &troubled);
    // pairs that are drawn get a link from their edge
    for (s, d) in report.series.keys() {
        let from = format!(r#"data-source="{}" data-destination="{}""#, esc(s), esc(d));
        let to = format!(r#"{from} data-pair-id="{}""#, pair_id(s, d));
        graph = graph.replacen(&from, &to, 1);
    }
    let rejected: BTreeMap<&String, &u64> = report.rejected.iter().collect();
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>graywatch report</title><style>{STYLE}</style></head><body><h1>graywatch report</h1><p class="meta">{} · {} window(s) · {} pair(s) · {} requests · {} incident(s){}</p><p class="meta">Inputs: {}</p><h2>Landscape</h2><p class="meta">Services in layers by call depth; edge width by requests; red: what a finding is about (a service, a pair, the calls into a troubled service); orange: a service with a troubled pair.</p><div class="graph">{graph}</div>"#,
        esc(&span),
        report.windows.len(),
        report.totals.len(),
        requests,
        report.incidents.len(),
        if rejected.is_empty() {
            String::new()
        } else {
            format!(
                " · not used: {}",
                rejected
                    .iter()
                    .map(|(r, n)| format!("{n} {}", esc(r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        esc(&inputs.join(", "))
    );
    html.push_str(&timeline(report));
    html.push_str(&pair_section(report, &troubled, pairs));
    let _ = writeln!(html, "<script>{SCRIPT}</script></body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_numbers_have_no_float_noise() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(num(5.050000000000001), "5.05");
        assert_eq!(num(0.1 + 0.2), "0.3");
        assert_eq!(num(1234.6), "1235");
        assert_eq!(num(0.0), "0");
        assert_eq!(time(1_764_770_400_000_000), "2025-12-03 14:00:00");
        assert_eq!(pair_id("ts-ui", "a/b c"), "pair-ts-ui--a_b_c");
    }

    #[test]
    fn evidence_reads_in_the_units_people_use() {
        let e = |signal: &str, value: f64, baseline: f64, unit: &str| {
            evidence(&schemas::Evidence {
                signal: signal.into(),
                value,
                baseline,
                unit: unit.into(),
                tail_probability: None,
            })
        };
        assert_eq!(
            e("p99_us", 812_400.0, 95_000.0, "µs"),
            "p99 latency 812 ms against a baseline of 95 ms"
        );
        assert_eq!(
            e("p99_us", 2_500_000.0, 95_000.0, "µs"),
            "p99 latency 2.5 s against a baseline of 95 ms"
        );
        assert_eq!(
            e("ok_response_ratio", 0.0, 0.985, "ratio"),
            "ok response ratio 0 % against a baseline of 98.5 %"
        );
        assert_eq!(
            e("downstream_per_request", 0.0, 1.5, "ratio"),
            "downstream per request 0 against a baseline of 1.5"
        );
        assert_eq!(
            e("rate_rps", 5.050000000000001, 12.0, "req/s"),
            "rate 5.05 req/s against a baseline of 12 req/s"
        );
        assert_eq!(
            e("bandwidth_out_bps", 2_300_000.0, 40_000.0, "bytes/s"),
            "bandwidth out 2.3 MB/s against a baseline of 40 kB/s"
        );
    }

    #[test]
    fn long_runs_are_drawn_in_buckets_with_their_peaks() {
        // 5 windows in buckets of 2: the peak of each, the mean band, no band where none
        let points = [
            (0, Some(1.0), Some((0.0, 2.0))),
            (10, Some(9.0), Some((1.0, 3.0))),
            (20, None, None),
            (30, Some(4.0), None),
            (40, Some(2.0), Some((0.0, 1.0))),
        ];
        let got = downsample(points.into_iter(), 2);
        assert_eq!(
            got,
            [
                (0, Some(9.0), Some((0.5, 2.5))),
                (20, Some(4.0), None),
                (40, Some(2.0), Some((0.0, 1.0)))
            ]
        );
    }
}
