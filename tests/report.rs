//! `graywatch report` on a simulated black hole, loaded in headless Chromium.

use std::path::Path;
use std::process::Command;

use crate::util::{graywatch_ok, simulated_black_hole};

/// Runs headless Chromium (Debian's `chromium`, which scripts/test installs) on `page`
/// with `args`; fails loudly when it can't start. Returns (stdout, stderr).
fn chromium(page: &Path, args: &[&str]) -> (String, String) {
    let url = format!("file://{}", page.display());
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox", // the tests may run as root (CI)
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,2400",
        ])
        .args(args)
        .arg(&url)
        .output()
        .expect("chromium runs (scripts/test installs Debian's chromium)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// Pixels of a PNG screenshot: (not white, the red of troubled services and pairs).
fn pixels(png: &Path) -> (usize, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    assert!(step >= 3, "an RGB screenshot: {:?}", info.color_type);
    let (mut ink, mut red) = (0, 0);
    for px in buf[..info.buffer_size()].chunks_exact(step) {
        let (r, g, b) = (px[0], px[1], px[2]);
        if (r, g, b) != (255, 255, 255) {
            ink += 1;
        }
        // #d62728 (214, 39, 40), give or take antialiasing
        if r > 180 && g < 80 && b < 80 {
            red += 1;
        }
    }
    (ink, red)
}

#[test]
fn the_report_draws_the_landscape_the_incident_and_the_plots_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (log, map, node) = simulated_black_hole(dir.path());
    let page = dir.path().join("report.html");
    let args = [
        "report",
        "-c",
        map.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
        log.to_str().unwrap(),
    ];
    let (_, summary) = graywatch_ok(&args);
    assert!(summary.contains("incident(s)"), "{summary}");
    let html = std::fs::read_to_string(&page).unwrap();
    // self-contained: nothing to fetch
    for external in ["src=\"http", "href=\"http", "<link", "@import"] {
        assert!(!html.contains(external), "the page loads {external}");
    }

    let (dom, log) = chromium(&page, &["--dump-dom"]);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(
        dom.contains(r#"data-ready="yes""#),
        "the page's script ran to its end"
    );
    // the landscape: the simulator's 42 services, the black hole and the calls into it red
    let services = dom.matches(r#"<g class="node"#).count();
    assert!((30..=60).contains(&services), "{services} services drawn");
    assert!(
        dom.contains(&format!(r#"<g class="node troubled" data-node="{node}""#)),
        "the black-holed {node} is red"
    );
    assert!(
        dom.contains(r#"class="edge troubled" data-source="#)
            && dom.contains(&format!(r#"data-destination="{node}" data-pair-id="#)),
        "a call into {node} is red and links to its plots"
    );
    // the incident, from its evidence to the command and its revoke
    let key = format!(r#"data-key="black-hole/node/{node}""#);
    let at = dom.find(&key).expect("the black hole in the timeline");
    let incident = &dom[at..];
    let incident = &incident[..incident.find("</ol>").unwrap()];
    for step in ["evidence", "finding", "alert", "command"] {
        assert!(
            incident.contains(&format!(r#"data-step="{step}""#)),
            "step {step} in {incident}"
        );
    }
    let evidence = incident.find(r#"data-step="evidence""#).unwrap();
    let command = incident.find(r#"data-step="command""#).unwrap();
    assert!(evidence < command, "steps in time order");
    assert!(incident.contains("backpressure issued"), "{incident}");
    // plots with their values and baseline bands
    let plots = dom.matches(r#"<svg class="plot"#).count();
    assert!(plots >= 6 && plots % 3 == 0, "{plots} plots");
    assert!(dom.matches(r#"<polyline class="value""#).count() >= plots / 2);

    let shot = dir.path().join("report.png");
    let arg = format!("--screenshot={}", shot.display());
    chromium(&page, &[&arg]);
    let (ink, red) = pixels(&shot);
    assert!(
        ink > 50_000,
        "the screenshot is not blank: {ink} pixels drawn"
    );
    assert!(
        red > 50,
        "red marks what the findings are about: {red} red pixels"
    );
}

/// A report over the archive a replay wrote is the replay's own report: the same graph,
/// incidents and plots (only the line naming the inputs differs); `--since`/`--until` draw a
/// part of it; `-o -` writes the page to stdout.
#[test]
fn a_report_over_an_archive_draws_what_the_replay_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (log, map, node) = simulated_black_hole(dir.path());
    let archive = dir.path().join("archive");
    let (replayed, archived) = (
        dir.path().join("replay.html"),
        dir.path().join("archive.html"),
    );
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    graywatch_ok(&[
        "replay",
        "-q",
        "--no-windows",
        "-c",
        &path(&map),
        "--archive",
        &path(&archive),
        &path(&log),
    ]);
    graywatch_ok(&[
        "report",
        "-c",
        &path(&map),
        "-o",
        &path(&replayed),
        &path(&log),
    ]);
    let (_, summary) = graywatch_ok(&[
        "report",
        "--archive",
        &path(&archive),
        "-o",
        &path(&archived),
    ]);
    assert!(summary.contains("240 window(s)"), "{summary}");
    // the pages without the line naming the inputs
    let drawn = |html: &str| {
        let at = html.find("<p class=\"meta\">Inputs:").unwrap();
        let end = at + html[at..].find("</p>").unwrap();
        format!("{}{}", &html[..at], &html[end..])
    };
    let (a, b) = (
        drawn(&std::fs::read_to_string(&replayed).unwrap()),
        drawn(&std::fs::read_to_string(&archived).unwrap()),
    );
    assert!(b.contains(&format!(r#"data-key="black-hole/node/{node}""#)));
    assert!(b.contains("backpressure issued"));
    if let Some(at) = a.bytes().zip(b.bytes()).position(|(x, y)| x != y) {
        let around = |s: &str| s[at.saturating_sub(200)..(at + 200).min(s.len())].to_owned();
        panic!(
            "the pages differ at byte {at}:\nreplay:  {}\narchive: {}",
            around(&a),
            around(&b)
        );
    }
    assert_eq!(a.len(), b.len());

    // the first ten minutes (the simulation starts 2026-01-05T00:00:00Z; 10 s windows)
    let out = crate::util::graywatch(&[
        "report",
        "--archive",
        &path(&archive),
        "--since",
        "2026-01-05T00:00:00Z",
        "--until",
        "2026-01-05T00:10:00Z",
        "-o",
        "-",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(
        page.contains("2026-01-05 00:00:00 to 2026-01-05 00:10:00 UTC · 60 window(s)"),
        "{}",
        &page[..page.len().min(2000)]
    );
    assert!(!dir.path().join("-").exists());
    // nothing in the range
    let out = crate::util::graywatch(&[
        "report",
        "--archive",
        &path(&archive),
        "--since",
        "2027-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no window in the archive between"));
    // a range picks windows of an archive, not of inputs replayed whole
    let out = crate::util::graywatch(&[
        "report",
        "--since",
        "2026-01-05T00:00:00Z",
        "-o",
        "-",
        &path(&log),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--since and --until pick windows of an archive"),
        "{out:?}"
    );
}

/// Lines graywatch can't read make a page that says so, and a warning, not "no finding".
#[test]
fn a_report_of_unreadable_lines_says_nothing_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("garbage.log");
    std::fs::write(&log, "not a log line\nnor this one\n").unwrap();
    let page = dir.path().join("report.html");
    let out = crate::util::graywatch(&[
        "report",
        "--format",
        "nginx",
        "-o",
        page.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: no record was read (2 line(s) not used"),
        "{stderr}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("No window closed: no record was read"));
    assert!(!html.contains("No finding"));
    assert!(html.contains("not used: 2 "), "the header counts them");
}
