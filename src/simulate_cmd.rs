//! `graywatch simulate`: a synthetic landscape's records with one injected incident, and the
//! truth file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use graywatch::pipeline::jsonl::JsonLines;
use graywatch::replay::{say, thousands};
use graywatch::simulate::format::LineWriter;
use graywatch::simulate::{Landscape, OutputFormat, Scenario, Simulation, SimulationConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// What to inject: clean (no incident; 24 h by default), black-hole, deploy-fanout,
    /// logging-storm, segmentation-dos or cross-zone (2 h by default, the incident starting
    /// 60 to 75 min in).
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(Scenario::ALL.map(Scenario::as_str)))]
    scenario: String,
    /// Seed of every random choice (which service, when, every record): the same seed and
    /// flags give the same output, byte for byte.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Length of event time, e.g. "2h", "30min", "24h". Default: 24h for clean, 2h for an
    /// incident (at least 10min: the incident starts after half the run).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Start of event time, RFC 3339 UTC.
    #[arg(long, value_name = "RFC3339", default_value = "2026-01-05T00:00:00Z", value_parser = humantime::parse_rfc3339_weak)]
    start: std::time::SystemTime,
    /// Multiplies every rate: 1 gives about 150 records/s of event time averaged over a day
    /// (90 at 04:00 UTC, 210 at 16:00; about 250 MB of flow-json per hour), 0.1 a tenth of
    /// that. > 0, at most 1000.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    scale: f64,
    /// Output format: flow-json (every field), envoy-json (Envoy JSON access logs, read with
    /// `--format envoy-json`; `envoy` is taken too) or istio (Istio's default sidecar
    /// format). envoy-json and istio need the [mapping] rules of deploy/examples/simulate.toml
    /// (or --mapping) to name sources, zones and versions; istio keeps start and duration in
    /// ms.
    #[arg(long, value_name = "FORMAT", default_value = "flow-json", value_parser = ["flow-json", "envoy-json", "envoy", "istio"])]
    format: String,
    /// Where the records go: a file, or - for stdout.
    #[arg(long, short = 'o', value_name = "FILE", default_value = "-")]
    out: PathBuf,
    /// Write the ground truth (JSON, schemas/json/truth.schema.json) to this file: the
    /// incident's signature, subject, onset and end, and the benign deployments.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Write the run's deploy history to this file (JSON lines: service, version, at,
    /// previous_version; what `[detect.deploy] events` reads): the incident's deployment and
    /// rollback, and the benign deployments.
    #[arg(long, value_name = "FILE")]
    deployments: Option<PathBuf>,
    /// Write a config file with the [mapping] rules that name every pod address (what
    /// `graywatch replay --config` needs to read --format envoy-json or istio).
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// Print no summary on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let began = Instant::now();
    let scenario: Scenario = args.scenario.parse()?;
    let format: OutputFormat = args.format.parse().map_err(anyhow::Error::msg)?;
    let start_us = args
        .start
        .duration_since(std::time::UNIX_EPOCH)
        .context("--start before 1970")?
        .as_micros();
    let mut config = SimulationConfig::new(scenario, args.seed);
    config.start_us = i64::try_from(start_us).context("--start out of range")?;
    if let Some(d) = args.duration {
        config.duration_us = i64::try_from(d.as_micros()).context("--duration out of range")?;
    }
    config.scale = args.scale;
    let sim = Simulation::new(config.clone())?;
    if let Some(path) = &args.truth {
        let mut text = serde_json::to_string_pretty(sim.truth())?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.deployments {
        let mut text = String::new();
        for e in sim.truth().deployments() {
            text += &graywatch::config::deployment_line(&e);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.mapping {
        let text = format!(
            "# The [mapping] of `graywatch simulate`'s pod addresses (--format envoy-json or istio).\n{}",
            Landscape::new().mapping_rules()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let to_file = args.out.as_os_str() != "-";
    let mut out = JsonLines::open(to_file.then_some(args.out.as_path()))?;
    let total_s = (config.duration_us / 1_000_000) as u64;
    // drawn when stderr is a terminal and not where the records go (stdout on a terminal)
    let stdout_shown = !to_file && std::io::stdout().is_terminal();
    let progress = if !stdout_shown && std::io::stderr().is_terminal() && !args.quiet {
        let bar = ProgressBar::with_draw_target(Some(total_s), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {pos}/{len} s of event time {wide_bar} eta {eta}",
            )
            .expect("valid progress template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let writer = LineWriter::new(format);
    let mut buf = Vec::with_capacity(1 << 20);
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut sim = sim;
    while let Some(r) = sim.next() {
        writer.write(&r, &mut buf);
        records += 1;
        if buf.len() >= 1 << 20 {
            out.write_raw(&buf)?;
            bytes += buf.len() as u64;
            buf.clear();
            progress.set_position(sim.simulated_seconds() as u64);
        }
    }
    out.write_raw(&buf)?;
    bytes += buf.len() as u64;
    out.flush()?;
    progress.finish_and_clear();
    if !args.quiet {
        let truth = sim.truth();
        let hours = config.duration_us as f64 / 3.6e9;
        let mut text = format!(
            "graywatch simulate: {scenario}, seed {}, scale {}: {} records ({:.0}/s of event time), {} bytes of {format} ({:.1} MB per hour) in {:.1} s\n",
            config.seed,
            config.scale,
            thousands(records),
            records as f64 / (config.duration_us as f64 / 1e6),
            thousands(bytes),
            bytes as f64 / 1e6 / hours,
            began.elapsed().as_secs_f64()
        );
        for i in &truth.incidents {
            text += &format!(
                "  incident: {} on {} from +{} s to +{} s: {}\n",
                i.signature,
                i.subject,
                (i.onset_us - truth.start_us) / 1_000_000,
                (i.end_us - truth.start_us) / 1_000_000,
                i.description
            );
        }
        for b in &truth.benign {
            let graywatch::simulate::BenignChange::Deployment {
                service,
                to_version,
                start_us,
                ..
            } = b;
            text += &format!(
                "  benign: {service} deploys {to_version} at +{} s\n",
                (start_us - truth.start_us) / 1_000_000
            );
        }
        if format.needs_mapping() && args.mapping.is_none() {
            text += &format!(
                "  read with: graywatch replay --format {} --config CONFIG FILE, CONFIG with the \
                 [mapping] that --mapping CONFIG writes (or deploy/examples/simulate.toml)\n",
                format.parser()
            );
        }
        say(&text);
    }
    Ok(())
}
