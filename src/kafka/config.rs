//! The `[kafka]`, `[checkpoint]`, `[http]` and `[scale-out]` sections: serde in, validated
//! by [`KafkaConfig::validate`] and friends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[kafka]`: the brokers, the consumer group, the input topics and the output topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaConfig {
    /// Brokers to bootstrap from, `host:port[,host:port…]` (librdkafka
    /// `bootstrap.servers`).
    pub bootstrap_servers: String,
    /// The consumer group: instances with the same id share the input partitions. Default
    /// `graywatch`.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Any librdkafka property (`security.protocol`, `sasl.*`, `ssl.*`, …), passed through to
    /// every client. A value `"${NAME}"` is read from the environment variable `NAME`.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// librdkafka properties of the consumer only (`session.timeout.ms`,
    /// `fetch.wait.max.ms`, …), after `client`; `${NAME}` as there.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// librdkafka properties of the producer only (`linger.ms`, `compression.type`, …), after
    /// `client`; `${NAME}` as there.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// Topics to read, each with its format.
    pub inputs: Vec<KafkaInputConfig>,
    /// Topics to write.
    pub outputs: KafkaOutputsConfig,
    /// A topic of deployment events (optional): each message one or more lines of the deploy
    /// history's form (`[detect.deploy] events`), written by a CD system as it rolls out. Every
    /// instance reads all of it, from its start at each start-up and then as it grows (not as
    /// a consumer group member); created with one partition if missing. A line that is not a
    /// deployment goes to the dead-letter topic (`bad-deployment`), by every instance that
    /// reads it, at each start-up too. Default: none.
    pub deployments: Option<String>,
}

fn default_group() -> String {
    "graywatch".into()
}

/// One `[[kafka.inputs]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaInputConfig {
    /// The topic (must exist).
    pub topic: String,
    /// The format of its messages' lines: any `--format` of `replay` but `spans-csv`, or
    /// `flow-json`. A message may hold several lines.
    pub format: String,
    /// Who wrote each message, when not `[mapping.writer]` (see the `writer` module of
    /// `ingest`): envelope fields or message headers.
    pub writer: Option<ingest::WriterConfig>,
    /// Largest message value read, bytes; a larger one goes to the dead-letter topic
    /// (`too-large`). Default 1 MiB.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
}

fn default_max_message() -> usize {
    1 << 20
}

/// `[kafka.outputs]`: the topics graywatch writes (created if missing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaOutputsConfig {
    /// Findings, keyed by subject (`node/<node>`).
    pub findings: String,
    /// Remediation commands, keyed by command id (the messages of one command stay in
    /// revision order).
    pub commands: String,
    /// Alerts, keyed by dedup key.
    pub alerts: String,
    /// The actuator's decisions about commands (issued, suppressed by a rail, approved,
    /// revoked, expired), keyed by command id (optional: logged at info when absent).
    pub audit: Option<String>,
    /// Messages that could not be used, with the original bytes and headers naming reason,
    /// source topic, partition and offset.
    pub dead_letters: String,
    /// Per-pair and per-node window aggregates, keyed by pair (`source/destination`) or node
    /// (optional: not written when absent).
    pub windows: Option<String>,
    /// Partitions of a topic graywatch creates (count, >= 1). Default 3.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of a topic graywatch creates (>= 1). Default 1.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Largest message graywatch produces (value, key and headers), bytes, >= 4096: keep it
    /// under the brokers' `message.max.bytes`. A dead letter's value is cut to fit; a
    /// document that does not fit becomes an `output-too-large` dead letter. Default
    /// 1 000 000.
    #[serde(default = "default_max_output")]
    pub max_message_bytes: usize,
}

fn default_max_output() -> usize {
    1_000_000
}

fn default_partitions() -> i32 {
    3
}

fn default_replication() -> i32 {
    1
}

/// `[checkpoint]`: where state is saved, and how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckpointConfig {
    /// A directory of this instance's own (created if missing, locked while running).
    pub dir: PathBuf,
    /// Time between checkpoints (processing time, `"10s"`; > 0). Offsets are committed after
    /// each. Default 10 s.
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

/// `[http]`: the endpoint for `/metrics`, `/healthz` and `/readyz`, and the admin endpoint
/// `POST /admin/approve` when an admin token is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpConfig {
    /// Address to listen on. Default `127.0.0.1:9464` (loopback only).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A file holding the admin token (`Authorization: Bearer TOKEN` of `POST
    /// /admin/approve`, which `graywatch approve` sends), at least 16 bytes; trailing white
    /// space ignored. Without a token there is no admin endpoint.
    #[serde(default)]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// An environment variable holding the admin token instead.
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// Pairs (and nodes) of each window with golden-signal series of their own on
    /// `/metrics`, busiest first, besides those of findings; the rest are summed under
    /// `(other)` (see [`crate::golden`]). Default 100.
    #[serde(default = "default_top_pairs")]
    pub top_pairs: usize,
}

fn default_top_pairs() -> usize {
    crate::golden::DEFAULT_TOP_K
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            admin_token_file: None,
            admin_token_env: None,
            top_pairs: default_top_pairs(),
        }
    }
}

/// Shortest admin token accepted, bytes.
pub const MIN_ADMIN_TOKEN: usize = 16;

impl HttpConfig {
    /// The admin token, read from its file or variable; `None` when neither is given.
    ///
    /// # Errors
    /// Both given, the file or variable can't be read, or the token is shorter than
    /// [`MIN_ADMIN_TOKEN`] (each named).
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        let token = match (&self.admin_token_file, &self.admin_token_env) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                anyhow::bail!(
                    "[http] admin-token-file and admin-token-env: give the token one way only"
                )
            }
            (Some(path), None) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("[http] admin-token-file {}: {e}", path.display()))?,
            (None, Some(var)) => std::env::var(var)
                .map_err(|e| anyhow::anyhow!("[http] admin-token-env {var}: {e}"))?,
        };
        let token = token.trim_end().to_owned();
        if token.len() < MIN_ADMIN_TOKEN {
            anyhow::bail!(
                "[http] admin token: {} bytes; at least {MIN_ADMIN_TOKEN} are needed (e.g. `openssl rand -hex 16`)",
                token.len()
            );
        }
        Ok(Some(token))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// `[scale-out]`: run stage 2 on a repartition topic keyed by node, so that several instances
/// in one group share the work and each node is judged whole in one place.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScaleOutConfig {
    /// The repartition topic (created if missing). Default `graywatch.repartition`.
    #[serde(default = "default_repartition")]
    pub repartition_topic: String,
    /// Its partitions (count, >= 1): how many instances stage 2 can spread over. Default 6.
    #[serde(default = "default_repartition_partitions")]
    pub partitions: i32,
    /// Compacted topic holding each stage-2 partition's state (baselines, commands in force),
    /// so a partition that moves to another instance takes its baselines along. Default
    /// `graywatch.state`.
    #[serde(default = "default_state_topic")]
    pub state_topic: String,
}

fn default_repartition() -> String {
    "graywatch.repartition".into()
}

fn default_repartition_partitions() -> i32 {
    6
}

fn default_state_topic() -> String {
    "graywatch.state".into()
}

/// Why the Kafka sections are invalid (the user's fault, fix the file).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct KafkaConfigError {
    /// The key, as written in the file (`kafka.inputs[0].format`).
    pub key: String,
    /// What is wrong, naming the value.
    pub reason: String,
}

/// librdkafka properties with `${NAME}` values read from the environment.
#[derive(Debug, Clone, Default)]
pub struct Properties {
    /// For every client (`[kafka.client]`).
    pub all: BTreeMap<String, String>,
    /// For the consumer only (`[kafka.consumer]`).
    pub consumer: BTreeMap<String, String>,
    /// For the producer only (`[kafka.producer]`).
    pub producer: BTreeMap<String, String>,
}

impl Properties {
    /// The consumer's value of `key` as the user set it (`[kafka.consumer]` over
    /// `[kafka.client]`), `None` when unset.
    pub fn consumer_property(&self, key: &str) -> Option<&str> {
        self.consumer
            .get(key)
            .or_else(|| self.all.get(key))
            .map(String::as_str)
    }
}

/// A validated input topic.
#[derive(Debug, Clone)]
pub struct KafkaInput {
    /// The topic.
    pub topic: String,
    /// Its format.
    pub format: ingest::Format,
    /// Who wrote each message.
    pub writer: Option<ingest::WriterConfig>,
    /// Largest message value read, bytes.
    pub max_message_bytes: usize,
}

impl KafkaConfig {
    /// Checks the section and expands `${NAME}` client values from `env`.
    ///
    /// # Errors
    /// [`KafkaConfigError`] naming the key: empty servers or group, no input, an unknown or
    /// unsupported format, an empty or repeated topic, an output topic that is also an input,
    /// a `${NAME}` whose variable is not set, partitions < 1, `statistics.interval.ms` 0.
    pub fn validate(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Properties, Vec<KafkaInput>), KafkaConfigError> {
        let bad = |key: &str, reason: String| KafkaConfigError {
            key: key.to_owned(),
            reason,
        };
        if self.bootstrap_servers.trim().is_empty() {
            return Err(bad("kafka.bootstrap-servers", "is empty".into()));
        }
        if self.group_id.trim().is_empty() {
            return Err(bad("kafka.group-id", "is empty".into()));
        }
        let expand = |section: &str, map: &BTreeMap<String, String>| {
            let mut out = BTreeMap::new();
            for (k, v) in map {
                let value = match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                    Some(name) => env(name).ok_or_else(|| {
                        bad(
                            &format!("kafka.{section}.{k:?}"),
                            format!("environment variable {name} is not set"),
                        )
                    })?,
                    None => v.clone(),
                };
                out.insert(k.clone(), value);
            }
            Ok::<_, KafkaConfigError>(out)
        };
        let client = Properties {
            all: expand("client", &self.client)?,
            consumer: expand("consumer", &self.consumer)?,
            producer: expand("producer", &self.producer)?,
        };
        if client.consumer_property("statistics.interval.ms") == Some("0") {
            let section = if client.consumer.contains_key("statistics.interval.ms") {
                "consumer"
            } else {
                "client"
            };
            return Err(bad(
                &format!("kafka.{section}.\"statistics.interval.ms\""),
                "is 0: graywatch reads librdkafka's statistics to know whether a broker answers \
                 and which partitions are caught up (idle detection); leave it unset (5 s, or half \
                 of [runtime] idle-timeout when less) or set it to at most half of that"
                    .into(),
            ));
        }
        if self.inputs.is_empty() {
            return Err(bad(
                "kafka.inputs",
                "no input topic: add a [[kafka.inputs]] with a topic and a format".into(),
            ));
        }
        let mut inputs = Vec::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let key = |k: &str| format!("kafka.inputs[{i}].{k}");
            if input.topic.trim().is_empty() {
                return Err(bad(&key("topic"), "is empty".into()));
            }
            if inputs.iter().any(|x: &KafkaInput| x.topic == input.topic) {
                return Err(bad(
                    &key("topic"),
                    format!("{:?} is given twice", input.topic),
                ));
            }
            let format: ingest::Format = input
                .format
                .parse()
                .map_err(|e: ingest::Error| bad(&key("format"), e.to_string()))?;
            if format.holds_records() {
                return Err(bad(
                    &key("format"),
                    format!(
                        "{} joins lines across messages, which a Kafka partition can't commit \
                         message by message: convert spans to flow-json first",
                        format.name()
                    ),
                ));
            }
            if let Some(w) = &input.writer {
                w.validate()
                    .map_err(|e| bad(&key("writer"), e.to_string()))?;
            }
            if input.max_message_bytes == 0 {
                return Err(bad(&key("max-message-bytes"), "must be >= 1".into()));
            }
            inputs.push(KafkaInput {
                topic: input.topic.clone(),
                format,
                writer: input.writer.clone(),
                max_message_bytes: input.max_message_bytes,
            });
        }
        let o = &self.outputs;
        for (k, t) in [
            ("findings", Some(&o.findings)),
            ("commands", Some(&o.commands)),
            ("alerts", Some(&o.alerts)),
            ("audit", o.audit.as_ref()),
            ("dead-letters", Some(&o.dead_letters)),
            ("windows", o.windows.as_ref()),
        ] {
            let Some(t) = t else { continue };
            if t.trim().is_empty() {
                return Err(bad(&format!("kafka.outputs.{k}"), "is empty".into()));
            }
            if inputs.iter().any(|i| &i.topic == t) {
                return Err(bad(
                    &format!("kafka.outputs.{k}"),
                    format!("{t:?} is also an input topic"),
                ));
            }
        }
        if let Some(d) = &self.deployments {
            if d.trim().is_empty() {
                return Err(bad(
                    "kafka.deployments",
                    "is empty (leave the key out for no deployments topic)".into(),
                ));
            }
            let outputs = [
                Some(&o.findings),
                Some(&o.commands),
                Some(&o.alerts),
                o.audit.as_ref(),
                Some(&o.dead_letters),
                o.windows.as_ref(),
            ];
            if inputs.iter().any(|i| &i.topic == d) || outputs.contains(&Some(d)) {
                return Err(bad(
                    "kafka.deployments",
                    format!("{d:?} is also an input or output topic"),
                ));
            }
        }
        if o.partitions < 1 {
            return Err(bad("kafka.outputs.partitions", "must be >= 1".into()));
        }
        if o.max_message_bytes < 4096 {
            return Err(bad(
                "kafka.outputs.max-message-bytes",
                format!("{} is under 4096", o.max_message_bytes),
            ));
        }
        if o.replication_factor < 1 {
            return Err(bad(
                "kafka.outputs.replication-factor",
                "must be >= 1".into(),
            ));
        }
        Ok((client, inputs))
    }
}

impl CheckpointConfig {
    /// Checks the section.
    ///
    /// # Errors
    /// [`KafkaConfigError`] for an empty dir or a zero interval.
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        if self.dir.as_os_str().is_empty() {
            return Err(KafkaConfigError {
                key: "checkpoint.dir".into(),
                reason: "is empty".into(),
            });
        }
        if self.interval.is_zero() {
            return Err(KafkaConfigError {
                key: "checkpoint.interval".into(),
                reason: "must be > 0".into(),
            });
        }
        Ok(())
    }
}

impl ScaleOutConfig {
    /// Checks the section.
    ///
    /// # Errors
    /// [`KafkaConfigError`] for an empty topic or partitions < 1.
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        for (k, t) in [
            ("scale-out.repartition-topic", &self.repartition_topic),
            ("scale-out.state-topic", &self.state_topic),
        ] {
            if t.trim().is_empty() {
                return Err(KafkaConfigError {
                    key: k.into(),
                    reason: "is empty".into(),
                });
            }
        }
        if self.partitions < 1 {
            return Err(KafkaConfigError {
                key: "scale-out.partitions".into(),
                reason: "must be >= 1".into(),
            });
        }
        Ok(())
    }
}
