//! `graywatch eval`: graywatch's detection measured on labelled data.
//!
//! Each evaluation is one subcommand of [`EvalCommand`] with its own module; adding one means
//! a variant, its `Args` and its `run`.

pub mod nab;

use clap::Subcommand;

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
    Nab(nab::NabArgs),
}

/// Runs an evaluation.
///
/// # Errors
/// The evaluation's own (see each module's `run`).
pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    match command {
        EvalCommand::Nab(args) => nab::run(args),
    }
}
