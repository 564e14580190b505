//! `graywatch`: mission control for microservice landscapes.
//!
//! CLI wiring only: the runtime is the `graywatch` library, the stages live in the `schemas`,
//! `ingest`, `detect` and `actuate` crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use graywatch::pipeline::jsonl::JsonLinesError;
use graywatch::replay::{self, say};

mod parse;
mod simulate_cmd;

/// mimalloc rather than the C library's allocator: closing a window frees and allocates the
/// state of every pair seen in it, which glibc's malloc spends its time consolidating
/// (`benches/peers.sh`, the 100 k-pair job). Built without asking for transparent huge pages
/// (feature `no_thp`): pages freed with a window came back as 2 MB pages the kernel zeroed
/// whole. Hosts whose THP setting is `always` (not the usual `madvise`) still get them;
/// `MIMALLOC_ALLOW_THP=0` in the environment turns them off there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Golden signals, gray-failure detection and runtime remediation from the access logs your
/// proxies already write (Envoy, Istio, NGINX) and from trace spans.
///
/// Start with `graywatch replay FILE…`: it reads logs with no Kafka, computes per-pair
/// golden signals in event-time windows, detects gray failures and prints window aggregates,
/// findings and remediation commands as JSON lines.
#[derive(Debug, Parser)]
#[command(name = "graywatch", version, max_term_width = 100)]
struct Cli {
    /// Log format on stderr: text, or json (one JSON object per event). Log levels come from
    /// RUST_LOG (default warn; run logs at info).
    #[arg(long, global = true, default_value = "text", value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: String,
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
    #[command(after_help = "Examples:
  graywatch simulate --scenario black-hole --duration 40min --scale 0.4 -o bh.jsonl
  graywatch replay --no-windows bh.jsonl    # findings, commands and alerts on stdout
  graywatch replay --windows w.jsonl --findings f.jsonl --rejects r.jsonl access.log
  kubectl logs -f cart-7d9f5c-x2x8k -c istio-proxy | graywatch replay --format istio -")]
    Replay(replay::ReplayArgs),
    /// Print each line's flow record as one JSON line: check that graywatch reads your logs.
    ///
    /// Rejected lines are reported on stderr as FILE:LINE: REASON: DETAIL.
    #[command(after_help = "Examples:
  graywatch simulate --scenario clean --duration 10min --format istio -o istio.log --mapping m.toml
  graywatch parse -c m.toml istio.log | head -3
  graywatch parse --format 'nginx:$remote_addr [$time_local] \"$request\" $status $request_time' access.log")]
    Parse(parse::ParseArgs),
    /// Run on Kafka: read proxies' logs from input topics, write findings, remediation
    /// commands, alerts, window aggregates and dead letters to output topics.
    ///
    /// Runs until SIGTERM or SIGINT, then checkpoints, commits and exits 0. Several
    /// instances with the same group id share the input partitions.
    #[command(
        after_help = "Example (a broker on 127.0.0.1:9092, proxies' Envoy JSON logs on the topic access-logs):
  printf '%s\\n' '[kafka]' 'bootstrap-servers = \"127.0.0.1:9092\"' 'group-id = \"graywatch\"' \\
    '[[kafka.inputs]]' 'topic = \"access-logs\"' 'format = \"envoy-json\"' '[kafka.outputs]' \\
    'findings = \"graywatch.findings\"' 'commands = \"graywatch.commands\"' \\
    'alerts = \"graywatch.alerts\"' 'dead-letters = \"graywatch.dead-letters\"' > run.toml
  graywatch validate -c run.toml && graywatch run -c run.toml"
    )]
    Run(graywatch::kafka::RunArgs),
    /// Check a config file: every key known, every value in range.
    #[command(after_help = "Example:
  printf '[detect.window]\\nlength = \"30s\"\\nallowed-lateness = \"1m\"\\n' > my.toml
  graywatch validate -c my.toml")]
    Validate(ValidateArgs),
    /// Measure detection quality on labelled data: the Numenta Anomaly Benchmark, TrainTicket
    /// traces with injected faults, the simulator's scenarios.
    #[command(subcommand)]
    Eval(graywatch::eval::EvalCommand),
    /// Write a synthetic landscape's records with one injected incident, and its ground truth.
    ///
    /// About 40 services in three zones (edge, front ends, APIs, business services, cache and
    /// databases, a log sink, three segments of room clients and relays) under a daily load
    /// curve, slow swings, Poisson noise, long latency tails, a few errors and 2 to 4 benign
    /// deployments; --truth says what was injected, where and when.
    #[command(after_help = "Examples:
  graywatch simulate --scenario black-hole --duration 40min --scale 0.4 -o bh.jsonl --truth bh.truth.json
  graywatch replay --no-windows bh.jsonl
  graywatch simulate --scenario cross-zone --format envoy-json -o cz.log --mapping cz.toml
  graywatch replay --format envoy-json -c cz.toml cz.log")]
    Simulate(simulate_cmd::SimulateArgs),
    /// Approve a proposed remediation command (`[actuate] approval = true`): the running
    /// `graywatch run` sends it again in enforce mode, and audits the approval.
    ///
    /// Posts the id to the admin endpoint of the instance the config describes
    /// (`POST /admin/approve` on its [http] listen address, with its admin token). With
    /// [scale-out], an instance that does not hold the command forwards the approval to the
    /// one that does (printed as "forwarded …"; the audit topic says "approved"). Exit
    /// status 0 when approved or forwarded, 1 with the reason otherwise (no such proposed
    /// command, a wrong token, no admin endpoint).
    #[command(
        after_help = "Example (run.toml with [actuate] approval = true and [http] admin-token-file):
  graywatch approve backpressure/node/inventory/1767572530000000 -c run.toml"
    )]
    Approve(ApproveArgs),
    /// Put remediation commands in force on an enforcement point (NGINX).
    #[command(subcommand)]
    Enforce(graywatch::enforce::EnforceCommand),
    /// Show what remediation commands are in Envoy (admin runtime keys and config snippets)
    /// or Istio (Kubernetes resources), as JSON.
    #[command(after_help = "Examples:
  graywatch simulate --scenario black-hole --duration 40min --scale 0.4 -o bh.jsonl
  graywatch replay --no-windows --commands cmds.jsonl -q bh.jsonl > /dev/null
  graywatch render envoy cmds.jsonl
  graywatch render istio - < cmds.jsonl")]
    Render(graywatch::enforce::render::RenderArgs),
    /// Draw a run as one self-contained HTML page: the landscape graph coloured by findings,
    /// each incident's timeline (evidence, finding, alert, commands, revoke, resolved), and
    /// time series of the golden signals with their baseline bands.
    ///
    /// Replays inputs (with `replay`'s input options: -c, -f, --rejects, --max-line-bytes),
    /// or reads an archive (--archive DIR, as `replay --archive` or `run`'s [archive] write
    /// it; --since/--until pick a time range). Examples:
    ///   graywatch simulate --scenario black-hole --duration 40min --scale 0.4 -o bh.jsonl
    ///   graywatch report -o report.html bh.jsonl
    ///   graywatch replay bh.jsonl --archive arch -q > /dev/null
    ///   graywatch report --archive arch --since 2026-01-05T00:20:00Z -o incident.html
    #[command(verbatim_doc_comment)]
    Report(graywatch::report::ReportArgs),
    /// Run SQL over an archive of closed windows and findings (`replay --archive DIR`, or
    /// `run`'s [archive]). Queries only: statements that write are refused.
    ///
    /// Tables: pairs (golden signals per pair and window, with baselines), nodes, breakdown
    /// (requests by zone and version of both ends), findings, commands, alerts and audit
    /// (each with its whole document in a json column); columns as in the SQL rules
    /// (`src/rules.rs`, `detect::tables`) and `graywatch::archive`. Timestamps are UTC.
    ///
    /// Examples:
    ///   graywatch simulate --scenario black-hole --duration 40min --scale 0.4 -o bh.jsonl
    ///   graywatch replay bh.jsonl --archive arch -q > /dev/null
    ///   graywatch query --archive arch "SELECT source, destination, max(p99_us) AS worst_p99_us
    ///       FROM pairs GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10"
    ///   graywatch query --archive arch --format csv "SELECT DISTINCT source FROM breakdown
    ///       WHERE destination = 'inventory' AND destination_version IS NOT NULL"
    #[command(verbatim_doc_comment)]
    Query(QueryArgs),
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// One SQL statement (DataFusion's dialect, PostgreSQL-like).
    sql: String,
    /// The archive directory, as `replay --archive DIR` writes it.
    #[arg(long, value_name = "DIR")]
    archive: PathBuf,
    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    format: graywatch::archive::QueryFormat,
}

/// `graywatch query`.
fn query(args: QueryArgs) -> anyhow::Result<()> {
    use std::io::{ErrorKind, Write};
    let mut stdout = std::io::stdout().lock();
    let done = graywatch::archive::query(&args.archive, &args.sql, args.format, &mut stdout)
        .map(drop)
        .and_then(|()| {
            stdout
                .flush()
                .map_err(|source| graywatch::archive::ArchiveError::Io {
                    path: "stdout".into(),
                    source,
                })
        });
    match done {
        // a closed stdout (`graywatch query … | head`) ends it quietly
        Err(graywatch::archive::ArchiveError::Io { source, .. })
            if source.kind() == ErrorKind::BrokenPipe =>
        {
            Ok(())
        }
        other => Ok(other?),
    }
}

#[derive(Debug, Args)]
struct ApproveArgs {
    /// The command's id, as its messages and audit records give it.
    id: String,
    /// The instance's config file (its [http] listen address and admin token).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Another address than the config's [http] listen (e.g. 127.0.0.1:9465).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// The revision you looked at (the proposed message's `revision`): refused (409) when
    /// the command was proposed again since, e.g. wider. Without it, whichever revision is
    /// proposed now is approved.
    #[arg(long, value_name = "N")]
    revision: Option<u32>,
}

/// `graywatch approve`.
fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    let config = graywatch::config::Config::load(Some(&args.config))?;
    let Some(token) = config.http.admin_token()? else {
        anyhow::bail!(
            "{} gives no admin token ([http] admin-token-file or admin-token-env): the instance has no admin endpoint",
            args.config.display()
        );
    };
    let listen = args.listen.unwrap_or(config.http.listen);
    let url = format!("http://{listen}/admin/approve");
    let response = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?
        .post(&url)
        .bearer_auth(token)
        .body(match args.revision {
            Some(r) => format!("{}@{r}", args.id),
            None => args.id.clone(),
        })
        .send()
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = response.status();
    let text = response.text().unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{url}: {status}: {}", text.trim());
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Config file (TOML) to check.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) | Command::Enforce(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let result = match cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Parse(args) => parse::run(args),
        Command::Run(args) => graywatch::kafka::main(args),
        Command::Validate(args) => validate(args),
        Command::Eval(command) => graywatch::eval::run(command),
        Command::Simulate(args) => simulate_cmd::run(args),
        Command::Approve(args) => approve(args),
        Command::Enforce(command) => graywatch::enforce::main(command),
        Command::Render(args) => graywatch::enforce::render::run(args),
        Command::Query(args) => query(args),
        Command::Report(args) => graywatch::report::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`graywatch replay … | head`) ends the run quietly, as in other
        // command-line tools.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("graywatch: error: {}\n", chain(&e)));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// before it already ends with (errors that print their source, as librdkafka's and I/O
/// errors wrapped with a context often do).
fn chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<JsonLinesError>(),
            Some(JsonLinesError::StdoutClosed)
        )
    })
}

fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let config = graywatch::config::Config::load(Some(&args.config))?;
    let rules = config.mapping.rules.len();
    let service = config.mapping.service.clone();
    let valid = config.validate(Some(&args.config))?;
    let w = &valid.detect.window;
    let mut out = format!("{}: ok\n", args.config.display());
    out += &format!(
        "  mapping: service {}, {rules} rule(s)\n",
        service.as_deref().unwrap_or("(none)")
    );
    out += &format!(
        "  windows: {} long, allowed lateness {}\n",
        humantime::format_duration(w.length),
        humantime::format_duration(w.allowed_lateness)
    );
    out += &format!("  actuate: {}\n", valid.actuator.summary());
    if let Some(k) = &valid.kafka {
        let topics: Vec<String> = k
            .inputs
            .iter()
            .map(|i| format!("{} ({})", i.topic, i.format.name()))
            .collect();
        out += &format!(
            "  kafka: {} as group {}, reading {}{}\n",
            k.config.bootstrap_servers,
            k.config.group_id,
            topics.join(", "),
            k.config.deployments.as_ref().map_or(String::new(), |d| {
                let unused = if valid.suite.deploy.is_none() {
                    " (not used: [detect.deploy] enabled = false)"
                } else {
                    ""
                };
                format!("; deployments from {d}{unused}")
            })
        );
    }
    let mut stdout = graywatch::pipeline::jsonl::JsonLines::open(None)?;
    stdout.write_raw(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
