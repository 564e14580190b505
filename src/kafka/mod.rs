//! `graywatch run`: the pipeline on Kafka.
//!
//! ```text
//!  input topics (proxies' logs, flow records) ── consumer group ──▶ Pipeline ──▶ findings,
//!      ▲ offsets committed after each checkpoint                    │           commands,
//!      └──────────────────────────────────────── checkpoint dir ◀───┘           alerts, windows,
//!                                                                               dead letters
//! ```
//!
//! Modules: [`config`] (the `[kafka]`, `[checkpoint]`, `[http]`, `[scale-out]` sections),
//! [`client`] (librdkafka properties, topics), [`consumer`] (rebalances, commits), [`outputs`]
//! (topics written), [`run`] (the main loop), [`metrics`] and [`http`] (graywatch's own
//! metrics and health).

pub mod client;
pub mod config;
pub mod consumer;
pub mod deployments;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod outputs;
pub mod repartition;
pub mod run;

pub use run::now_ms;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// `graywatch run`'s options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Config file (TOML): the kafka section (brokers, group, input and output topics, the
    /// deployments topic), and checkpoint, http, scale-out. See
    /// deploy/examples/graywatch.toml.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Threads that parse messages, beside the one that polls the consumer, aggregates and
    /// judges. Default: the machine's cores.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// `graywatch run`: validates the config, starts the HTTP endpoint (and the signal
/// handlers), and runs the main loop until SIGTERM or SIGINT.
///
/// # Errors
/// See [`run::run`].
pub fn main(args: RunArgs) -> anyhow::Result<()> {
    let config = crate::config::Config::load(Some(&args.config))?.validate(Some(&args.config))?;
    if config.kafka.is_none() {
        anyhow::bail!(
            "run needs a [kafka] section in {} (see deploy/examples/graywatch.toml)",
            args.config.display()
        );
    }
    let metrics = Arc::new(metrics::Metrics {
        golden: Arc::new(crate::golden::GoldenSignals::new(config.http.top_pairs)),
        ..metrics::Metrics::default()
    });
    let shutdown = Arc::new(AtomicBool::new(false));
    let (approvals, approved) = std::sync::mpsc::channel();
    let admin = config.http.admin_token()?.map(|token| http::Admin {
        token: token.into(),
        approvals,
    });
    let routes = if admin.is_some() {
        "/metrics /healthz /readyz /admin/approve"
    } else {
        "/metrics /healthz /readyz"
    };
    let bound = http::start(
        config.http.listen,
        Arc::clone(&metrics),
        Arc::clone(&shutdown),
        admin,
    )?;
    tracing::info!(listen = %bound, "http endpoint: {routes}");
    let threads = args.threads.map_or_else(crate::replay::cores, usize::from);
    run::run(config, threads, shutdown, metrics, approved)
}

/// The lines of a message's value, cut at each `\n` as `<[u8]>::split` cuts them (a value
/// ending with `\n` ends with an empty line), found with `memchr` rather than byte by byte.
pub(crate) fn message_lines(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(payload);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r) {
            Some(k) => {
                rest = Some(&r[k + 1..]);
                Some(&r[..k])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::message_lines;

    #[test]
    fn a_message_is_cut_into_lines_as_split_cuts_it() {
        fn lines(v: &[u8]) -> Vec<&[u8]> {
            message_lines(v).collect()
        }
        assert_eq!(lines(b""), [b"" as &[u8]]);
        assert_eq!(lines(b"a"), [b"a" as &[u8]]);
        assert_eq!(lines(b"a\n"), [b"a" as &[u8], b""]);
        assert_eq!(lines(b"\n\nb\r\nc"), [b"" as &[u8], b"", b"b\r", b"c"]);
    }

    proptest! {
        #[test]
        fn message_lines_are_split_lines(v in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..200)) {
            let ours: Vec<&[u8]> = message_lines(&v).collect();
            let split: Vec<&[u8]> = v.split(|&b| b == b'\n').collect();
            prop_assert_eq!(ours, split);
        }
    }
}
