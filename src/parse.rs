//! `graywatch parse`: each line's flow record as a JSON line; rejects on stderr.

use std::time::Instant;

use clap::Args;
use ingest::{IngestSink, RejectedLine};

use crate::InputArgs;
use crate::input::{self, RejectDoc};
use crate::output::{FirstFailure, JsonLines, open_or};

#[derive(Debug, Args)]
pub struct ParseArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Print no summary on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

struct Printer {
    out: JsonLines,
    rejects: Option<JsonLines>,
    failure: FirstFailure,
}

impl IngestSink for Printer {
    fn batch(&mut self, batch: arrow::array::RecordBatch) -> ingest::Result<()> {
        let records =
            schemas::flow_records(&batch).map_err(|e| ingest::Error::Downstream(e.to_string()))?;
        for r in &records {
            if let Err(e) = self.out.write(r) {
                return Err(self.failure.keep(e));
            }
        }
        Ok(())
    }

    fn reject(&mut self, rejected: &RejectedLine<'_>) -> ingest::Result<()> {
        say!("{rejected}\n");
        let written = match &mut self.rejects {
            Some(out) => out.write(&RejectDoc::from(rejected)),
            None => Ok(()),
        };
        written.map_err(|e| self.failure.keep(e))
    }
}

pub fn run(args: ParseArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config_path = args.input.config.as_deref();
    let mapping = crate::config::Config::load(config_path)?
        .validate(config_path)?
        .mapping;
    let inputs = input::open_all(&args.input)?;
    input::check_outputs(&args.input, &[("--rejects", &args.input.rejects)])?;
    let mut printer = Printer {
        out: JsonLines::open(None)?,
        rejects: open_or(&args.input.rejects)?,
        failure: FirstFailure::default(),
    };
    let progress = indicatif::ProgressBar::hidden();
    let read = input::drive(&args.input, inputs, &mapping, &mut printer, &progress)
        .map_err(|e| printer.failure.or(e))?;
    printer.out.flush()?;
    if let Some(r) = &mut printer.rejects {
        r.flush()?;
    }
    if !args.quiet {
        say!(
            "graywatch parse: {} input(s)\n{}",
            args.input.inputs.len(),
            input::summarize_input(&read, started.elapsed())
        );
    }
    Ok(())
}
