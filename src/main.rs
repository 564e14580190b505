//! `graywatch`: mission control for microservice landscapes.
//!
//! CLI wiring only: the stages live in the `schemas`, `ingest`, `detect` and `actuate` crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Writes to stderr, ignoring errors: a closed stderr must not abort the run (`eprintln!`
/// panics then).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod config;
mod input;
mod output;
mod parse;
mod replay;

/// Golden signals, gray-failure detection and runtime remediation from the access logs your
/// proxies already write (Envoy, Istio, NGINX) and from trace spans.
///
/// Start with `graywatch replay FILE…`: it reads logs with no Kafka, computes per-pair golden
/// signals in event-time windows, detects gray failures and prints window aggregates,
/// findings and remediation commands as JSON lines.
#[derive(Debug, Parser)]
#[command(name = "graywatch", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline on files or stdin: windows, golden signals, findings, commands.
    ///
    /// Writes JSON lines (one document per line, each with a "kind": pair-window,
    /// node-window, finding, remediation-command, alert) to stdout, or to the files given by
    /// --windows/--findings/--commands/--alerts; prints a summary on stderr.
    Replay(replay::ReplayArgs),
    /// Print each line's flow record as one JSON line: check that graywatch reads your logs.
    ///
    /// Rejected lines are reported on stderr as FILE:LINE: REASON: DETAIL.
    Parse(parse::ParseArgs),
    /// Check a config file: every key known, every value in range.
    Validate(ValidateArgs),
}

/// Input options shared by `replay` and `parse`.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Log format: auto, envoy, envoy-json, istio, nginx-combined (alias nginx),
    /// nginx-ingress, nginx:'<log_format>' (any NGINX log_format, verbatim, as in
    /// nginx.conf), spans-csv. `auto` looks at the first non-blank line of each input.
    #[arg(long, short = 'f', default_value = "auto", value_name = "FORMAT", value_parser = input::parse_format)]
    pub format: input::FormatArg,
    /// Config file (TOML): service mapping, windows, detector thresholds, patterns.
    /// See deploy/examples/graywatch.toml.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write every rejected line as a JSON line (input, line, reason, detail, text) to FILE.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// Longest accepted line, bytes; longer lines are rejected (line-too-long).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_line_bytes: usize,
    /// Input files; `-` reads stdin. `replay` reads them in turns, always from the one
    /// furthest behind in event time, so logs of several proxies covering the same time and
    /// rotated logs of one proxy can be given together, in any order. `parse` reads them one
    /// after another.
    #[arg(required = true, value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Config file (TOML) to check.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Parse(args) => parse::run(args),
        Command::Validate(args) => validate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`graywatch replay … | head`) ends the run quietly, as in other
        // command-line tools.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            say!("graywatch: error: {e:#}\n");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<output::StdoutClosed>())
}

fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let config = config::Config::load(Some(&args.config))?;
    let rules = config.mapping.rules.len();
    let service = config.mapping.service.clone();
    let valid = config.validate(Some(&args.config))?;
    let w = &valid.detect.window;
    println!("{}: ok", args.config.display());
    println!(
        "  mapping: service {}, {rules} rule(s)",
        service.as_deref().unwrap_or("(none)")
    );
    println!(
        "  windows: {} long, allowed lateness {}",
        humantime::format_duration(w.length),
        humantime::format_duration(w.allowed_lateness)
    );
    Ok(())
}
