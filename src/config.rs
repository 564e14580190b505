//! The config file (`--config FILE`, TOML): one section per stage, plus the run mode's Kafka,
//! checkpoint, HTTP and scale-out sections.
//!
//! Every section and key is optional for `replay`; `run` needs `[kafka]`. Unknown keys are
//! errors that name the key. `deploy/examples/graywatch.toml` lists every key with its unit and
//! default.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::kafka::config::{CheckpointConfig, HttpConfig, KafkaConfig, KafkaInput, ScaleOutConfig};

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// How log fields become source and destination services.
    #[serde(default)]
    pub mapping: ingest::MappingConfig,
    /// Windows, watermark and detector thresholds.
    #[serde(default)]
    pub detect: detect::DetectConfig,
    /// Operational patterns: what remediation commands look like.
    #[serde(default)]
    pub actuate: actuate::ActuateConfig,
    /// How the drivers treat inputs in processing time.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Brokers, group, input and output topics (`run`).
    pub kafka: Option<KafkaConfig>,
    /// Where `run` saves its state.
    pub checkpoint: Option<CheckpointConfig>,
    /// `run`'s `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub http: HttpConfig,
    /// Stage 2 on a repartition topic keyed by node (several instances in one group).
    pub scale_out: Option<ScaleOutConfig>,
    /// `[archive]`: closed windows and findings as Parquet, when configured.
    pub archive: Option<ArchiveConfig>,
    /// User rules: detectors in SQL over each window's tables (`[[rules]]`).
    #[serde(default)]
    pub rules: Vec<crate::rules::RuleConfig>,
    /// Pager systems alerts go to (`[[alerting.sinks]]`).
    #[serde(default)]
    pub alerting: crate::alerting::AlertingConfig,
    /// The file's text, for the line of a key whose value [`Config::validate`] refuses.
    #[serde(skip)]
    text: Option<String>,
}

/// The 1-based line of `key` in the TOML `text`: a dotted path of kebab-case keys, `name[i]`
/// for the `i`-th table of an array of tables (`actuate.policy[1].rate-fraction`), as
/// validation errors name keys. When the text doesn't write the key itself (a default value
/// refused beside another key), the line of the nearest table on its path that it writes.
/// `None` when it writes none of them, or is no TOML.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut at = None;
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        at = Some(k.span().start);
        let mut value = v;
        if let Some(i) = index {
            let Some(item) = value.get_ref().as_array().and_then(|a| a.get(i)) else {
                break;
            };
            if item.span().start > 0 || at.is_none() {
                at = Some(item.span().start);
            }
            value = item;
        }
        match value.get_ref().as_table() {
            Some(t) => table = t,
            None => break,
        }
    }
    at.map(|byte| text[..byte.min(text.len())].matches('\n').count() + 1)
}

/// `[archive]` (`run` only; `replay` takes `--archive DIR`): closed windows' tables,
/// findings, commands, alerts and audit records as Parquet files by hour under `dir`
/// ([`crate::archive`]), completed at every checkpoint, each window once across restarts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArchiveConfig {
    /// The archive directory (created if missing); `graywatch query --archive DIR` and
    /// `graywatch report --archive DIR` read it.
    pub dir: std::path::PathBuf,
}

/// `[runtime]`: processing-time behaviour of the drivers (detection itself reads no clock).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RuntimeConfig {
    /// An input (a Kafka partition, a pipe) with no record for this long (processing time,
    /// `"30s"`; > 0) stops holding the watermark back: its open windows are handed over.
    /// When every input is idle, every window closes: a landscape that goes silent is seen,
    /// not waited for. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Records of a slow input (`kubectl logs -f … | graywatch replay -`) go through after
    /// this long without a full batch (`"200ms"`; > 0). Default 200 ms.
    #[serde(with = "humantime_serde")]
    pub flush_after: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            idle_timeout: Duration::from_secs(30),
            flush_after: Duration::from_millis(200),
        }
    }
}

/// The Kafka part of a validated config.
#[derive(Debug, Clone)]
pub struct ValidKafka {
    /// The section as given.
    pub config: KafkaConfig,
    /// librdkafka properties, `${NAME}` values read from the environment.
    pub client: crate::kafka::config::Properties,
    /// The input topics with their parsed formats.
    pub inputs: Vec<KafkaInput>,
}

/// The config after validation: what the pipeline runs with.
#[derive(Clone)]
pub struct Validated {
    /// Service mapping for parsers.
    pub mapping: ingest::Mapping,
    /// The window geometry.
    pub window: detect::pair::WindowSpec,
    /// Every signature's validated spec.
    pub suite: detect::suite::Suite,
    /// The actuation stage.
    pub actuator: actuate::Actuator,
    /// The detection config as given (for summaries).
    pub detect: detect::DetectConfig,
    /// The runtime section.
    pub runtime: RuntimeConfig,
    /// Kafka, when configured.
    pub kafka: Option<ValidKafka>,
    /// Checkpoints, when configured.
    pub checkpoint: Option<CheckpointConfig>,
    /// The HTTP endpoint.
    pub http: HttpConfig,
    /// Scale-out, when configured.
    pub scale_out: Option<ScaleOutConfig>,
    /// The archive, when configured.
    pub archive: Option<ArchiveConfig>,
    /// The user rules, each checked and planned once (each judge plans its own copy).
    pub rules: Vec<crate::rules::RuleConfig>,
    /// The alert sinks (checked; [`crate::alerting::Dispatcher::start`] starts them).
    pub alerting: crate::alerting::AlertingConfig,
}

impl Validated {
    /// A stage-2 judge of this config owning `ownership`'s nodes, with the user rules;
    /// `write_windows`: whether pair and node windows go to the outputs.
    pub fn judge(
        &self,
        ownership: crate::pipeline::Ownership,
        write_windows: bool,
    ) -> crate::pipeline::judge::Judge {
        let mut actuator = self.actuator.clone();
        if let crate::pipeline::Ownership::Partition { count, .. } = ownership {
            // each stage-2 partition acts for its nodes alone: its share of the rails
            actuator.share_rails(usize::try_from(count).unwrap_or(1));
        }
        crate::pipeline::judge::Judge::new(
            self.window,
            self.suite.clone(),
            actuator,
            ownership,
            write_windows,
        )
        .with_rules(&self.rules)
        .expect("the rules were planned when the config was validated")
    }
}

/// `deploy/examples/simulate.toml`, built into the binary: the config `graywatch eval
/// scenarios` runs with unless given another (the simulator's segments, fail-over routes and
/// tuned detectors), so that it works without the repository.
pub const SIMULATE_TOML: (&str, &str) = (
    "deploy/examples/simulate.toml (built in)",
    include_str!("../deploy/examples/simulate.toml"),
);

/// `deploy/examples/trainticket.toml`, built into the binary: `graywatch eval
/// trainticket`'s default config (the TrainTicket pods' service mapping).
pub const TRAINTICKET_TOML: (&str, &str) = (
    "deploy/examples/trainticket.toml (built in)",
    include_str!("../deploy/examples/trainticket.toml"),
);

impl Config {
    /// `path`, or the built-in `(name, text)` when `None` (see [`SIMULATE_TOML`]), with the
    /// name to give [`Config::validate`].
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_or(
        path: Option<&Path>,
        (name, text): (&str, &str),
    ) -> anyhow::Result<(Self, std::path::PathBuf)> {
        match path {
            Some(p) => Ok((Config::load(Some(p))?, p.to_owned())),
            None => {
                let mut config: Config =
                    toml::from_str(text).with_context(|| format!("config {name}"))?;
                config.text = Some(text.to_owned());
                Ok((config, name.into()))
            }
        }
    }

    /// Reads and parses `path`; no file means all defaults.
    ///
    /// # Errors
    /// The file can't be read, is not TOML, or has an unknown key (named).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
        config.text = Some(text);
        Ok(config)
    }

    /// `config FILE line N [SECTION]` for an error about `key` (a dotted path from the
    /// file's root, see [`line_of`]) in `section` (`[detect]`, …): the line when the file
    /// has one for it.
    fn at(&self, file: &str, section: &str, key: &str) -> String {
        match self.text.as_deref().and_then(|t| line_of(t, key)) {
            Some(line) => format!("config {file} line {line} {section}"),
            None => format!("config {file} {section}"),
        }
    }

    /// [`Config::at`] for a `detect` or `actuate` error that names its key under `root`.
    fn at_error(&self, file: &str, section: &str, root: &str, e: &anyhow::Error) -> String {
        let key = match (
            e.downcast_ref::<detect::Error>(),
            e.downcast_ref::<actuate::Error>(),
        ) {
            (Some(detect::Error::Config { key, .. }), _) => format!("{root}.{key}"),
            (_, Some(actuate::Error::Config { key, .. })) => format!("{root}.{key}"),
            _ => root.to_owned(),
        };
        self.at(file, section, &key)
    }

    /// Validates every section into the runtime types; errors name `path`, the section and
    /// the key.
    ///
    /// # Errors
    /// The first invalid value.
    pub fn validate(self, path: Option<&Path>) -> anyhow::Result<Validated> {
        let file = path.map_or_else(|| "defaults".into(), |p| p.display().to_string());
        let window = detect::pair::WindowSpec::try_from(&self.detect.window)
            .map_err(anyhow::Error::from)
            .map_err(|e| {
                let at = self.at_error(&file, "[detect]", "detect", &e);
                e.context(at)
            })?;
        let mut suite = detect::suite::Suite::try_from(&self.detect)
            .map_err(anyhow::Error::from)
            .map_err(|e| {
                let at = self.at_error(&file, "[detect]", "detect", &e);
                e.context(at)
            })?;
        if let (Some(path), Some((spec, _))) = (&self.detect.deploy.events, &mut suite.deploy) {
            let events = read_deployments(path)
                .with_context(|| format!("config {file} [detect.deploy] events"))?;
            spec.set_deployments(&events);
        }
        if self.runtime.idle_timeout.is_zero() {
            let at = self.at(&file, "[runtime]", "runtime.idle-timeout");
            anyhow::bail!("{at}: idle-timeout must be > 0");
        }
        if self.runtime.flush_after.is_zero() {
            let at = self.at(&file, "[runtime]", "runtime.flush-after");
            anyhow::bail!("{at}: flush-after must be > 0");
        }
        let kafka = match &self.kafka {
            Some(k) => {
                let (client, inputs) = k
                    .validate(|name| std::env::var(name).ok())
                    .with_context(|| format!("config {file}"))?;
                // which partitions are caught up comes from librdkafka's statistics: at most
                // half an idle-timeout old (unset, `run` picks 5 s or half the idle-timeout)
                if let Some(ms) = client
                    .consumer_property("statistics.interval.ms")
                    .and_then(|v| v.parse::<u64>().ok())
                    && Duration::from_millis(ms.saturating_mul(2)) > self.runtime.idle_timeout
                {
                    anyhow::bail!(
                        "config {file}: kafka statistics.interval.ms is {ms}: at most half of \
                         [runtime] idle-timeout ({:?}), since which partitions are caught up \
                         (may be idle) comes from librdkafka's statistics",
                        self.runtime.idle_timeout
                    );
                }
                // librdkafka checks every property's name and value (without connecting)
                let servers = &k.bootstrap_servers;
                for (section, properties) in [
                    (
                        "[kafka.client] or [kafka.consumer]",
                        crate::kafka::client::consumer_config(servers, &k.group_id, &client),
                    ),
                    (
                        "[kafka.client] or [kafka.producer]",
                        crate::kafka::client::producer_config(servers, &client),
                    ),
                ] {
                    properties
                        .create_native_config()
                        .with_context(|| format!("config {file} {section}"))?;
                }
                Some(ValidKafka {
                    config: k.clone(),
                    client,
                    inputs,
                })
            }
            None => None,
        };
        if let Some(c) = &self.checkpoint {
            c.validate().with_context(|| format!("config {file}"))?;
        }
        if let Some(s) = &self.scale_out {
            s.validate().with_context(|| format!("config {file}"))?;
            if s.repartition_topic == s.state_topic {
                anyhow::bail!(
                    "config {file}: scale-out.state-topic: {:?} is also the repartition topic",
                    s.state_topic
                );
            }
            if let Some(k) = &self.kafka {
                let o = &k.outputs;
                let others = k
                    .inputs
                    .iter()
                    .map(|i| ("an input topic", &i.topic))
                    .chain([
                        ("kafka.outputs.findings", &o.findings),
                        ("kafka.outputs.commands", &o.commands),
                        ("kafka.outputs.alerts", &o.alerts),
                        ("kafka.outputs.dead-letters", &o.dead_letters),
                    ])
                    .chain(o.windows.iter().map(|w| ("kafka.outputs.windows", w)))
                    .chain(o.audit.iter().map(|w| ("kafka.outputs.audit", w)))
                    .chain(k.deployments.iter().map(|d| ("kafka.deployments", d)));
                for (what, topic) in others {
                    for (key, ours) in [
                        ("scale-out.repartition-topic", &s.repartition_topic),
                        ("scale-out.state-topic", &s.state_topic),
                    ] {
                        if ours == topic {
                            anyhow::bail!("config {file}: {key}: {ours:?} is also {what}");
                        }
                    }
                }
            }
        }
        if let Some(s) = &self.scale_out
            && self.actuate.mode == schemas::Mode::Enforce
        {
            // each stage-2 partition gets ⌊limit / partitions⌋ of a count rail
            let parts = usize::try_from(s.partitions).unwrap_or(1);
            let rails = &self.actuate.rails;
            for (key, limit) in [
                ("max-active", rails.max_active),
                ("max-new-per-minute", rails.max_new_per_minute),
            ] {
                if limit < parts {
                    anyhow::bail!(
                        "config {file}: actuate.rails.{key} = {limit}: with [scale-out] each of \
                         the {parts} stage-2 partitions acts alone and gets 1/{parts} of it, at \
                         least 1, so in enforce mode it must be at least scale-out.partitions \
                         ({parts})"
                    );
                }
            }
        }
        if self.archive.is_some() && self.scale_out.is_some() {
            anyhow::bail!(
                "config {file}: [archive] does not work with [scale-out] yet (each judge would \
                 need files of its own to archive each window once); archive from one instance, \
                 or archive the findings topic"
            );
        }
        crate::rules::Rules::new(&self.rules)
            .with_context(|| format!("config {file} [[rules]]"))?;
        self.alerting
            .check()
            .with_context(|| format!("config {file}"))?;
        // a command outlives the window that may renew it
        for (i, rule) in self.actuate.policy.iter().enumerate() {
            if rule.ttl < 2 * self.detect.window.length {
                anyhow::bail!(
                    "{} policy[{i}].ttl = {}: must be at least two windows ({}): \
                     a command's incident renews it when a window closes",
                    self.at(&file, "[actuate]", &format!("actuate.policy[{i}].ttl")),
                    humantime::format_duration(rule.ttl),
                    humantime::format_duration(2 * self.detect.window.length)
                );
            }
        }
        let actuate_at = |e: &anyhow::Error| self.at_error(&file, "[actuate]", "actuate", e);
        let mut actuator = match actuate::Actuator::try_from(self.actuate.clone()) {
            Ok(a) => a,
            Err(e) => {
                let e = anyhow::Error::from(e);
                let at = actuate_at(&e);
                return Err(e.context(at));
            }
        };
        // alerts (and the commands they revoke) follow the detectors' incidents
        actuator.align_resolve_after(|s| suite.debounce(s).resolve_after);
        Ok(Validated {
            mapping: ingest::Mapping::try_from(self.mapping)
                .with_context(|| format!("config {file} [mapping]"))?,
            window,
            suite,
            actuator,
            detect: self.detect,
            runtime: self.runtime,
            kafka,
            checkpoint: self.checkpoint,
            http: self.http,
            scale_out: self.scale_out,
            archive: self.archive,
            rules: self.rules,
            alerting: self.alerting,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# a config\n\
        [detect.window]\n\
        length = \"0s\"\n\
        \n\
        [[actuate.policy]]\n\
        signature = \"black-hole\"\n\
        pattern = \"backpressure\"\n\
        \n\
        [[actuate.policy]]\n\
        signature = \"black-hole\"\n\
        pattern = \"backpressure\"\n\
        rate-fraction = 1.5\n\
        [runtime]\n\
        idle-timeout = \"0s\"\n";

    #[test]
    fn line_of_finds_keys_and_the_tables_of_arrays() {
        assert_eq!(line_of(TEXT, "detect.window.length"), Some(3));
        assert_eq!(line_of(TEXT, "actuate.policy[1].rate-fraction"), Some(12));
        assert_eq!(line_of(TEXT, "runtime.idle-timeout"), Some(14));
        // not written: the nearest table that is
        assert_eq!(line_of(TEXT, "detect.window.max-pairs"), Some(2));
        assert_eq!(line_of(TEXT, "http.listen"), None);
        assert_eq!(line_of("not toml [", "detect"), None);
    }

    #[test]
    fn out_of_range_values_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let check = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(Some(&path))
                .unwrap()
                .validate(Some(&path))
                .err()
                .expect("invalid");
            format!("{e:#}")
        };
        let file = path.display();
        assert!(
            check(TEXT).starts_with(&format!(
                "config {file} line 3 [detect]: invalid config window.length"
            )),
            "{}",
            check(TEXT)
        );
        let text = TEXT.replace("length = \"0s\"", "length = \"10s\"");
        let later = text.replace("idle-timeout = \"0s\"", "idle-timeout = \"30s\"");
        assert!(
            check(&later).starts_with(&format!(
                "config {file} line 12 [actuate]: policy[1].rate-fraction = 1.5"
            )),
            "{}",
            check(&later)
        );
        let text = text.replace("rate-fraction = 1.5", "");
        assert_eq!(
            check(&text),
            format!("config {file} line 14 [runtime]: idle-timeout must be > 0")
        );
    }

    #[test]
    fn the_example_config_is_valid_and_complete() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/examples/graywatch.toml"
        ));
        let config = Config::load(Some(path)).unwrap();
        let kafka = config
            .kafka
            .clone()
            .expect("the example has a [kafka] section");
        assert_eq!(kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(kafka.group_id, "graywatch");
        assert_eq!(kafka.outputs.findings, "graywatch.findings");
        assert_eq!(kafka.outputs.windows.as_deref(), Some("graywatch.windows"));
        assert_eq!(
            config.checkpoint.as_ref().unwrap().interval,
            Duration::from_secs(10)
        );
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:9464");
        let valid = config.validate(Some(path)).unwrap();
        assert_eq!(
            valid.kafka.unwrap().inputs[0].format,
            ingest::Format::EnvoyJson
        );
        assert_eq!(valid.rules.len(), 1);
        assert_eq!(valid.rules[0].name, "failing-service");
        assert_eq!(valid.rules[0].severity, schemas::Severity::Critical);
    }

    #[test]
    fn a_command_ttl_shorter_than_two_windows_is_refused() {
        let config: Config = toml::from_str(
            "[[actuate.policy]]\nsignature = \"black-hole\"\npattern = \"backpressure\"\nttl = \"15s\"\n",
        )
        .unwrap();
        let Err(e) = config.validate(None) else {
            panic!("a 15 s TTL with 10 s windows is accepted")
        };
        let e = e.to_string();
        assert!(
            e.contains("policy[0].ttl = 15s: must be at least two windows (20s)"),
            "{e}"
        );
    }

    #[test]
    fn the_admin_token_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef\n").unwrap();
        let mut http = crate::kafka::config::HttpConfig {
            admin_token_file: Some(file.clone()),
            ..Default::default()
        };
        assert_eq!(
            http.admin_token().unwrap().as_deref(),
            Some("0123456789abcdef")
        );
        std::fs::write(&file, "short\n").unwrap();
        let e = http.admin_token().unwrap_err().to_string();
        assert!(e.contains("5 bytes; at least 16"), "{e}");
        http.admin_token_env = Some("GRAYWATCH_TEST_NO_SUCH_TOKEN".into());
        let e = http.admin_token().unwrap_err().to_string();
        assert!(e.contains("one way only"), "{e}");
        http.admin_token_file = None;
        let e = http.admin_token().unwrap_err().to_string();
        assert!(
            e.starts_with("[http] admin-token-env GRAYWATCH_TEST_NO_SUCH_TOKEN"),
            "{e}"
        );
        assert!(
            crate::kafka::config::HttpConfig::default()
                .admin_token()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_walk_through_config_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/examples/run.toml"
        ));
        let valid = Config::load(Some(path))
            .unwrap()
            .validate(Some(path))
            .unwrap();
        let kafka = valid.kafka.unwrap();
        assert_eq!(kafka.inputs[0].topic, "access-logs");
        assert_eq!(kafka.inputs[0].format, ingest::Format::FlowJson);
        assert_eq!(valid.runtime.idle_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |text: &str| {
            let c: Config = toml::from_str(text).unwrap();
            format!("{:#}", c.validate(None).err().unwrap())
        };
        let kafka = |extra: &str| {
            format!(
                "[kafka]\nbootstrap-servers = \"127.0.0.1:1\"\n{extra}\n[kafka.outputs]\nfindings = \"f\"\ncommands = \"c\"\nalerts = \"a\"\ndead-letters = \"d\"\n"
            )
        };
        assert_eq!(
            err(&kafka(
                "[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"spans-csv\""
            )),
            "config defaults: kafka.inputs[0].format: spans-csv joins lines across messages, \
             which a Kafka partition can't commit message by message: convert spans to \
             flow-json first"
        );
        assert_eq!(
            err(&kafka(
                "[[kafka.inputs]]\ntopic = \"f\"\nformat = \"envoy\""
            )),
            "config defaults: kafka.outputs.findings: \"f\" is also an input topic"
        );
        assert_eq!(
            err(&kafka(
                "deployments = \"d\"\n[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\""
            )),
            "config defaults: kafka.deployments: \"d\" is also an input or output topic"
        );
        assert_eq!(
            err(&kafka(
                "[kafka.client]\n\"sasl.password\" = \"${GRAYWATCH_TEST_UNSET_VARIABLE}\"\n[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\""
            )),
            "config defaults: kafka.client.\"sasl.password\": environment variable \
             GRAYWATCH_TEST_UNSET_VARIABLE is not set"
        );
        assert_eq!(
            err(&format!(
                "{}[scale-out]\nstate-topic = \"f\"\n",
                kafka("[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\"")
            )),
            "config defaults: scale-out.state-topic: \"f\" is also kafka.outputs.findings"
        );
        assert_eq!(
            err(&format!(
                "{}[scale-out]\nrepartition-topic = \"deploys\"\n",
                kafka(
                    "deployments = \"deploys\"\n[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\""
                )
            )),
            "config defaults: scale-out.repartition-topic: \"deploys\" is also kafka.deployments"
        );
        assert!(
            err(&format!(
                "{}[scale-out]\n[archive]\ndir = \"a\"\n",
                kafka("[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\"")
            ))
            .starts_with("config defaults: [archive] does not work with [scale-out] yet"),
        );
        let enforce = |rails: &str| {
            err(&format!(
                "{}[scale-out]\npartitions = 6\n[actuate]\nmode = \"enforce\"\n[actuate.rails]\n{rails}\n",
                kafka("[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\"")
            ))
        };
        assert!(
            enforce("max-new-per-minute = 5").starts_with(
                "config defaults: actuate.rails.max-new-per-minute = 5: with [scale-out] each of \
                 the 6 stage-2 partitions acts alone"
            ),
            "{}",
            enforce("max-new-per-minute = 5")
        );
        let e = err(&kafka(
            "[kafka.client]\n\"statistics.interval.ms\" = \"0\"\n[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\"",
        ));
        assert!(
            e.starts_with(
                "config defaults: kafka.client.\"statistics.interval.ms\": is 0: graywatch reads"
            ),
            "{e}"
        );
        assert_eq!(
            err(&format!(
                "[runtime]\nidle-timeout = \"4s\"\n{}",
                kafka(
                    "[kafka.consumer]\n\"statistics.interval.ms\" = \"2500\"\n[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\""
                )
            )),
            "config defaults: kafka statistics.interval.ms is 2500: at most half of [runtime] \
             idle-timeout (4s), since which partitions are caught up (may be idle) comes from \
             librdkafka's statistics"
        );
        let e = err(&kafka(
            "[kafka.consumer]\n\"sesion.timeout.ms\" = \"6000\"\n[[kafka.inputs]]\ntopic = \"logs\"\nformat = \"envoy\"",
        ));
        assert!(
            e.starts_with("config defaults [kafka.client] or [kafka.consumer]: ")
                && e.contains("sesion.timeout.ms"),
            "{e}"
        );
        assert_eq!(
            err("[runtime]\nidle-timeout = \"0s\"\n"),
            "config defaults [runtime]: idle-timeout must be > 0"
        );
        let e = toml::from_str::<Config>("[kafka]\nbootstrap-server = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bootstrap-server"), "{e}");
    }
}

/// One line of a deploy history file, as written (see
/// [`detect::signatures::deploy::DeploymentEvent`]).
#[derive(Deserialize, serde::Serialize)]
struct DeploymentLine {
    service: String,
    version: String,
    /// RFC 3339, UTC (`2026-01-05T01:06:02Z`).
    at: String,
    #[serde(default)]
    previous_version: Option<String>,
}

/// `e` as a line of a deploy history file (what [`read_deployments`] reads), without the
/// newline.
pub fn deployment_line(e: &detect::signatures::deploy::DeploymentEvent) -> String {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_micros(u64::try_from(e.at_us).unwrap_or(0));
    let line = DeploymentLine {
        service: e.service.clone(),
        version: e.version.clone(),
        at: humantime::format_rfc3339(at).to_string(),
        previous_version: e.previous_version.clone(),
    };
    serde_json::to_string(&line).expect("strings serialize")
}

/// What a deploy history line looks like, for errors.
const DEPLOYMENT_SHAPE: &str = r#"expected one JSON object per line, {"service": …, "version": …, "at": "2026-01-05T01:06:02Z", "previous_version": … (optional)}"#;

/// One deployment from a line of a deploy history (a file's line, or a line of a
/// deployments topic's message): a JSON object `{"service", "version", "at" (RFC 3339, UTC),
/// "previous_version" (optional)}`; other fields are ignored.
///
/// # Errors
/// The line is not such an object: what is wrong, with the field at fault (the caller names
/// where the line is).
pub fn parse_deployment(line: &str) -> Result<detect::signatures::deploy::DeploymentEvent, String> {
    // serde would read the struct from an array too (`["cart","v2","2026-…"]`)
    if !line.trim_start().starts_with('{') {
        return Err(format!("not a JSON object; {DEPLOYMENT_SHAPE}"));
    }
    let d: DeploymentLine = serde_json::from_str(line).map_err(|e| {
        // serde's "at line 1 column N" is within the line: the caller names the line
        let msg = e.to_string();
        let msg = msg.rfind(" at line ").map_or(msg.as_str(), |k| &msg[..k]);
        format!("{msg}; {DEPLOYMENT_SHAPE}")
    })?;
    for (field, value) in [
        ("service", Some(&d.service)),
        ("version", Some(&d.version)),
        ("previous_version", d.previous_version.as_ref()),
    ] {
        if let Some(v) = value
            && (v.is_empty() || v.chars().any(char::is_control))
        {
            return Err(format!(
                "{field} {v:?} is empty or holds a control character"
            ));
        }
    }
    let t = humantime::parse_rfc3339(&d.at).map_err(|e| {
        format!(
            "\"at\" {:?}: {e}; expected RFC 3339 in UTC, e.g. 2026-01-05T01:06:02Z",
            d.at
        )
    })?;
    let at_us = t
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|x| i64::try_from(x.as_micros()).ok())
        .ok_or_else(|| format!("\"at\" {:?} is before 1970", d.at))?;
    Ok(detect::signatures::deploy::DeploymentEvent {
        service: d.service,
        version: d.version,
        at_us,
        previous_version: d.previous_version,
    })
}

/// Reads a deploy history: one JSON object per line (see [`parse_deployment`]); blank lines
/// and lines starting with `#` skipped.
///
/// # Errors
/// The file can't be read, or a line is not such an object (named by file and line number,
/// with the field at fault).
pub fn read_deployments(
    path: &Path,
) -> anyhow::Result<Vec<detect::signatures::deploy::DeploymentEvent>> {
    anyhow::ensure!(
        !path.as_os_str().is_empty(),
        "the path is empty (leave the key out for no deploy history)"
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading deploy history {}", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let e = parse_deployment(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        events.push(e);
    }
    let services: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.service.as_str()).collect();
    tracing::info!(
        "deploy history {}: {} deployments of {} services",
        path.display(),
        events.len(),
        services.len()
    );
    Ok(events)
}
