//! `graywatch`: mission control for microservice landscapes.
//!
//! CLI wiring only: the stages live in the `schemas`, `ingest`, `detect` and `actuate` crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    /// Check a config file and print the settings it resolves to.
    Validate(ValidateArgs),
}

/// Input options shared by `replay` and `parse`.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Log format: auto, envoy, envoy-json, istio, nginx-combined, nginx-ingress,
    /// nginx:'<log_format>' (any NGINX log_format, verbatim), spans-csv.
    /// `auto` looks at the first non-blank line of each input.
    #[arg(long, short = 'f', default_value = "auto", value_name = "FORMAT")]
    pub format: String,
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
    /// Input files, in event-time order; `-` reads stdin.
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
            eprintln!("graywatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let config = config::Config::load(Some(&args.config))?;
    let shown = format!("{config:#?}");
    config.validate()?;
    println!("{}: ok", args.config.display());
    println!("{shown}");
    Ok(())
}
