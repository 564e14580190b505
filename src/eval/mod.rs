//! `graywatch eval`: graywatch's detection measured on labelled data.
//!
//! Each evaluation is one subcommand of [`EvalCommand`] with its own module; adding one means
//! a variant, its `Args` and its `run`.

pub mod collect;
pub mod nab;
pub mod scenarios;
pub mod trainticket;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps of `what` (`runs`, `files`) on stderr, drawn only when stderr is a
/// terminal (as `replay`'s); the current step's name goes in its message. Lines printed
/// meanwhile go through [`ProgressBar::suspend`], so that they are written also when the bar
/// is not drawn.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {{pos}}/{{len}} {what} {{wide_bar}} {{elapsed}}, eta {{eta}} {{msg}}"
        ))
        .expect("valid progress template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The evaluations (`graywatch eval <NAME>`).
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// The per-signal baseline on the Numenta Anomaly Benchmark, scored with NAB's rules.
    ///
    /// Runs one baseline per data file over its values in order (each row's anomaly score
    /// uses earlier rows only), writes `OUT_DIR/<category>/graywatch_<file>.csv`
    /// (`timestamp,value,anomaly_score`), then scores the corpus as NAB does: the first 15 %
    /// of each file is not scored, the earliest detection in each anomaly window earns up to
    /// 1 (less the later it comes), a missed window costs 1, a detection outside windows
    /// costs up to 0.11 (standard), 0.22 (reward_low_FP_rate) or, with missed windows
    /// costing 2, 0.11 (reward_low_FN_rate); one threshold per profile, the best for the
    /// whole corpus; scores normalised so that the null detector scores 0 and the perfect one
    /// 100 (Lavin & Ahmad 2015). Prints the three profiles' scores and each category's.
    ///
    /// A row's anomaly score is S ÷ (S + ln 1000), S = −ln p, p the two-sided probability of
    /// its value under the baseline (0.5: one in a thousand); the baseline learns every row.
    /// A row at or above the reporting threshold is reported and the next 72 rows (6 hours)
    /// score 0, as the pipeline reports an incident once while it lasts; the reporting
    /// threshold is the one with the best standard score, each candidate scored with its own
    /// hold, and is printed.
    #[command(
        after_help = "Example (the corpus and its labels: a checkout of github.com/numenta/NAB):
  git clone --depth 1 https://github.com/numenta/NAB
  graywatch eval nab NAB/data --labels NAB/labels/combined_windows.json --out nab-results"
    )]
    Nab(nab::NabArgs),
    /// Root-cause ranking on TrainTicket traces with injected faults (the Nezha layout).
    ///
    /// Replays every trace file (one-minute span CSVs, in time order) through the pipeline of
    /// `--config`, then, for each fault of `--faults`, ranks the services named as root-cause
    /// candidates by the `spreading-degradation` findings in the three minutes after the
    /// injection. Prints each fault's rank of the right service, top-1 and top-3 over all
    /// faults and per fault type, and the findings on the fault-free files (`normal_*`).
    /// The ranking uses `[detect.root-cause]` with `min-pairs = 2`,
    /// `max-tail-probability = 0.01` and `candidates = 5` (a ranking is wanted in every fault
    /// window, not only an alarm); the fault-free count uses the config as given.
    #[command(
        after_help = "Example (a checkout of github.com/IntelligentDDS/Nezha, its rca_data of 2023-01-29):
  D=Nezha/rca_data/2023-01-29
  graywatch eval trainticket --faults $D/2023-01-29-fault_list.json $D/trace/*.csv"
    )]
    Trainticket(TrainTicketArgs),
    /// Detection quality on the simulator's scenarios: per scenario and seed, whether the
    /// injected incident was found with the right subject, how long after its onset (event
    /// time and windows), and the findings not about it, per hour. Targets: every scenario
    /// found within 2 windows of onset, nothing on `clean` over 24 h, stable over 10 seeds.
    #[command(after_help = "Examples:
  graywatch eval scenarios --scenarios black-hole,cross-zone --seeds 3
  graywatch eval scenarios --scenarios clean --seeds 1 --hours 2")]
    Scenarios(ScenariosArgs),
}

/// Arguments of `graywatch eval scenarios`.
#[derive(Debug, clap::Args)]
pub struct ScenariosArgs {
    /// The config (segments, fail-over routes, windows). Default: the repository's
    /// deploy/examples/simulate.toml, built into the binary.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Scenarios to run (default: all, `clean` included).
    #[arg(long, value_delimiter = ',', value_name = "NAME,…")]
    pub scenarios: Vec<String>,
    /// Seeds 1..=N.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub seeds: u64,
    /// Rate multiplier of the simulation.
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub scale: f64,
    /// Event time per run, hours (default: each scenario's own, 2 h; 24 h for `clean`).
    #[arg(long, value_name = "H")]
    pub hours: Option<f64>,
    /// Where services' versions come from: `records` (the simulator writes them), or
    /// `events` (removed from the records; the run's deploy history is given as
    /// `[detect.deploy] events`, as for logs that don't name versions).
    #[arg(long, default_value = "records", value_name = "FROM", value_parser = ["records", "events"])]
    pub versions: String,
}

fn scenarios(args: ScenariosArgs) -> anyhow::Result<()> {
    let (config, name) =
        crate::config::Config::load_or(args.config.as_deref(), crate::config::SIMULATE_TOML)?;
    let config = config.validate(Some(&name))?;
    let list: Vec<crate::simulate::Scenario> = if args.scenarios.is_empty() {
        crate::simulate::Scenario::ALL.to_vec()
    } else {
        args.scenarios
            .iter()
            .map(|s| s.parse().map_err(|e| anyhow::anyhow!("--scenarios: {e}")))
            .collect::<anyhow::Result<_>>()?
    };
    let versions = if args.versions == "events" {
        scenarios::Versions::Events
    } else {
        scenarios::Versions::Records
    };
    let mut results = Vec::new();
    let bar = progress(list.len() as u64 * args.seeds, "runs");
    for scenario in list {
        for seed in 1..=args.seeds {
            bar.set_message(format!("{} seed {seed}", scenario.as_str()));
            let r = scenarios::run_one(&config, scenario, seed, args.scale, args.hours, versions)?;
            bar.suspend(|| {
                eprintln!(
                    "{} seed {seed}: detected {:?}, {} false finding(s)",
                    scenario.as_str(),
                    r.detected,
                    r.false_findings.len()
                )
            });
            bar.inc(1);
            for id in &r.false_findings {
                tracing::debug!("{} seed {seed}: false finding {id}", scenario.as_str());
            }
            results.push(r);
        }
    }
    bar.finish_and_clear();
    print!("{}", scenarios::render(&results));
    Ok(())
}

/// Arguments of `graywatch eval trainticket`.
#[derive(Debug, clap::Args)]
pub struct TrainTicketArgs {
    /// The fault list (`{"<hour>": [{"inject_time", "inject_pod", "inject_type"}, …]}`).
    #[arg(long, value_name = "FAULT_LIST.json")]
    pub faults: std::path::PathBuf,
    /// The config (service mapping of pod names, windows, lateness). Default: the
    /// repository's deploy/examples/trainticket.toml, built into the binary.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// The span CSVs (`TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,
    /// EndTimeUnixNano,Duration`), fault-free ones named `normal_*`.
    #[arg(required = true, value_name = "TRACE.csv")]
    pub traces: Vec<std::path::PathBuf>,
}

fn trainticket(args: TrainTicketArgs) -> anyhow::Result<()> {
    let faults = trainticket::read_faults(&args.faults)?;
    let (mut config, name) =
        crate::config::Config::load_or(args.config.as_deref(), crate::config::TRAINTICKET_TOML)?;
    let as_given = config.clone().validate(Some(&name))?;
    config.detect.root_cause.min_pairs = 2;
    config.detect.root_cause.max_tail_probability = 0.01;
    config.detect.root_cause.candidates = 5;
    let ranking = config.validate(Some(&name))?;
    let mut report = trainticket::evaluate(&ranking, &faults, &args.traces)?;
    report.fault_free_findings =
        trainticket::evaluate(&as_given, &[], &args.traces)?.fault_free_findings;
    print!("{}", trainticket::render(&report));
    Ok(())
}

/// Runs an evaluation.
///
/// # Errors
/// The evaluation's own (see each module's `run`).
pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    match command {
        EvalCommand::Nab(args) => nab::run(args),
        EvalCommand::Trainticket(args) => trainticket(args),
        EvalCommand::Scenarios(args) => scenarios(args),
    }
}
