//! Writes a synthetic landscape's Istio sidecar logs to stdout, optionally with a black hole:
//!
//! ```sh
//! cargo run --release --example landscape -- --black-hole inventory --at 120 > target/landscape.log
//! graywatch replay -c deploy/examples/landscape.toml --no-windows target/landscape.log
//! ```
//!
//! The landscape: gateway → frontend → {catalog, cart}; catalog → {inventory, pricing};
//! cart → inventory; inventory → db (rates in `generator::EDGES`). From `--at` seconds on, the
//! `--black-hole` service keeps accepting requests but never answers and stops calling its
//! dependencies. `deploy/examples/landscape.toml` maps the pod addresses to services.

mod generator;

use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "usage: landscape [--seconds N (200)] [--black-hole SERVICE --at SECONDS] [--seed N (7)]\n       landscape --print-config   (the config that maps its pod addresses to services)";

fn main() -> ExitCode {
    let mut seconds = 200u64;
    let mut black_hole = String::from("inventory");
    let mut at = u64::MAX;
    let mut seed = 7u64;
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--print-config") {
        print!("{}", generator::landscape_config());
        return ExitCode::SUCCESS;
    }
    while let Some(flag) = args.next() {
        let value = args.next();
        let parsed = match (flag.as_str(), value.as_deref()) {
            ("--seconds", Some(v)) => v.parse().map(|v| seconds = v).is_ok(),
            ("--black-hole", Some(v)) => {
                black_hole = v.to_owned();
                generator::SERVICES.iter().any(|(s, _)| *s == v)
            }
            ("--at", Some(v)) => v.parse().map(|v| at = v).is_ok(),
            ("--seed", Some(v)) => v.parse().map(|v| seed = v).is_ok(),
            _ => false,
        };
        if !parsed {
            eprintln!(
                "landscape: bad argument {flag} {}\n{USAGE}",
                value.unwrap_or_default()
            );
            return ExitCode::from(2);
        }
    }
    let logs = generator::landscape_logs(seconds, &black_hole, at, seed);
    match std::io::stdout().lock().write_all(logs.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("landscape: writing stdout: {e}");
            ExitCode::FAILURE
        }
    }
}
