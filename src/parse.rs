//! `graywatch parse`: each line's flow record as a JSON line; rejects on stderr.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use clap::Args;
use graywatch::pipeline::jsonl::{JsonLines, JsonLinesError};
use graywatch::replay::input::{self, Source, Streams};
use graywatch::replay::{self, InputArgs, InputSummary, say};
use ingest::{IngestSink, LineReader, ReadError, ReadStatus, ReaderOptions, RejectedLine};

#[derive(Debug, Args)]
pub struct ParseArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Print no summary on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Why printing stopped.
#[derive(Debug, thiserror::Error)]
enum PrintError {
    #[error(transparent)]
    Output(#[from] JsonLinesError),
    #[error("{0}")]
    Batch(#[from] schemas::Error),
}

/// The output's error whole (a closed stdout ends the run quietly).
fn lift(e: PrintError) -> anyhow::Error {
    match e {
        PrintError::Output(o) => o.into(),
        PrintError::Batch(b) => b.into(),
    }
}

struct Printer<'a> {
    out: JsonLines,
    rejects: Option<JsonLines>,
    input: &'a str,
}

#[derive(serde::Serialize)]
struct RejectDoc<'a> {
    kind: &'static str,
    input: &'a str,
    line: u64,
    reason: &'static str,
    detail: &'a str,
    text: String,
}

impl IngestSink for Printer<'_> {
    type Error = PrintError;

    fn batch(&mut self, batch: RecordBatch, _lines: &[u64]) -> Result<(), PrintError> {
        for r in &schemas::flow_records(&batch)? {
            self.out.write(r)?;
        }
        Ok(())
    }

    fn reject(&mut self, rejected: &RejectedLine<'_>) -> Result<(), PrintError> {
        say(&format!("{rejected}\n"));
        if let Some(out) = &mut self.rejects {
            out.write(&RejectDoc {
                kind: "dead-letter",
                input: self.input,
                line: rejected.line_no,
                reason: rejected.reject.reason.as_str(),
                detail: &rejected.reject.detail,
                text: String::from_utf8_lossy(rejected.line).into_owned(),
            })?;
        }
        Ok(())
    }
}

pub fn run(args: ParseArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config_path = args.input.config.as_deref();
    let mapping = graywatch::config::Config::load(config_path)?
        .validate(config_path)?
        .mapping;
    let streams = Streams::default();
    let mut inputs = input::open_all(&args.input.inputs, &streams)?;
    input::check_outputs(&inputs, &[("--rejects", &args.input.rejects)], true)?;
    let mut parsers = replay::parsers(&args.input, &mut inputs, &mapping, &streams)?;
    let opts = ReaderOptions {
        max_line_bytes: args.input.max_line_bytes,
        ..ReaderOptions::default()
    };
    let mut stats = std::mem::take(&mut parsers.stats);
    let mut out = JsonLines::open(None)?;
    let mut rejects = args
        .input
        .rejects
        .as_deref()
        .map(|p| JsonLines::open(Some(p)))
        .transpose()?;
    // one input after another, each to its end
    for i in 0..inputs.len() {
        let Some(p) = parsers.of_input[i] else {
            continue;
        };
        let name = inputs[i].name.clone();
        let mut lines = LineReader::new(name.clone());
        let mut printer = Printer {
            out,
            rejects,
            input: &name,
        };
        loop {
            input::make_room(&mut inputs, i);
            let parser = parsers.parsers[p].1.as_mut();
            let status = match &mut inputs[i].source {
                Source::File(r) => lines.read(r, parser, &opts, &mut stats, &mut printer, u64::MAX),
                Source::Stream(r) => {
                    lines.read(r, parser, &opts, &mut stats, &mut printer, u64::MAX)
                }
            };
            match status {
                Ok(ReadStatus::End) => break,
                Ok(ReadStatus::More) => {}
                Ok(ReadStatus::Pending) => {
                    // a quiet stream: print what is parsed, then wait for more
                    lines.flush(&mut printer).map_err(lift)?;
                    printer.out.flush()?;
                    streams.receive(&mut inputs, Duration::from_millis(200));
                }
                Err(ReadError::Io { input, source }) => {
                    return Err(anyhow::Error::from(source).context(format!("reading {input}")));
                }
                Err(ReadError::Sink(e)) => return Err(lift(e)),
            }
        }
        inputs[i].close();
        let last_user = parsers.parsers[p].2.iter().all(|&u| u <= i);
        if last_user {
            lines
                .finish_parser(parsers.parsers[p].1.as_mut(), &mut stats, &mut printer)
                .map_err(lift)?;
        } else {
            lines.flush(&mut printer).map_err(lift)?;
        }
        out = printer.out;
        rejects = printer.rejects;
    }
    out.flush()?;
    if let Some(r) = &mut rejects {
        r.flush()?;
    }
    if !args.quiet {
        let mut counters = Vec::new();
        for (_, parser, _) in &parsers.parsers {
            counters.extend(parser.counters());
        }
        let read = InputSummary {
            stats,
            counters,
            formats: parsers.formats,
        };
        say(&format!(
            "graywatch parse: {} input(s)\n{}",
            args.input.inputs.len(),
            replay::summarize_input(&read, started.elapsed())
        ));
    }
    Ok(())
}
