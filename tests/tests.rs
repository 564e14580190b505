//! End-to-end tests of the `graywatch` binary: real logs and traces in, JSON lines out.

mod alerting;
mod attribution;
mod black_hole;
mod broker;
mod cli;
mod deploy;
mod enforce;
#[path = "../examples/landscape/generator.rs"]
mod generator;
mod golden;
mod kafka;
mod limits;
mod map;
mod nab;
mod report;
mod rules;
mod runtime;
mod scenarios;
mod simulate;
mod trainticket;
mod util;
