//! The `run` driver's main loop: one thread polls the consumer, hands each partition's
//! messages to worker threads that parse them into flow batches ([`super::messages`]), drives
//! stage 1 ([`Aggregate`]) with the batches in the order it handed the messages out, and stage
//! 2 ([`Judge`]: in this process, or one per owned partition of the repartition topic with
//! `[scale-out]`), and every `[checkpoint] interval` saves the state with the offsets it
//! covers and commits them.
//!
//! ```text
//!  poll ─▶ messages of one partition ─▶ worker: lines ─▶ parser ─▶ batches ─▶ Aggregate ─▶ Judge ─▶ outputs
//!    │        └─ too large, empty; rejected line (from the worker) ──────────────────▶ dead letters
//!    └─ rebalance (inside poll) ─▶ Event ─▶ add / revoke inputs
//!  every interval: flush batches ─▶ flush producer ─▶ save checkpoint ─▶ commit offsets
//! ```
//!
//! Nothing accepted is lost: an offset is committed only after every record before it is in
//! the saved state or in output the producer has delivered.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use detect::pair::{AggregatorSnapshot, PairAggregator};
use detect::signatures::deploy::DeploymentEvent;
use ingest::WriterParser;
use ingest::parallel::{InFlight, Workers};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::client;
use super::consumer::{CommitMeta, ConsumerCx, Event, Shared, Start};
use super::deployments::{self, DeploymentsReader};
use super::messages::{self, Messages, TopicParser};
use super::metrics::{Delta, FieldLabel, KindLabel, Metrics, RuleLabel, SignatureLabel};
use super::outputs::{KafkaOutputError, KafkaOutputs, OutputTopics};
use super::repartition::{self, PartitionState, TopicExchange};
use crate::config::Validated;
use crate::pipeline::aggregate::AggregateCounters;
use crate::pipeline::checkpoint::CheckpointDir;
use crate::pipeline::judge::{JudgeItem, JudgeState};
use crate::pipeline::local::Local;
use crate::pipeline::{
    Aggregate, DeadLetter, FlowBatch, InputId, Judge, Outputs, Ownership, Payload, Removal, Stage,
    StageError,
};

/// [`Messages`] being parsed at most, per worker thread: enough that a worker never waits
/// for the loop to hand out the next, even while stage 2 closes a window.
const IN_FLIGHT_PER_WORKER: usize = 2;
/// Most messages handled between two looks at the clock (for idle inputs, flushes,
/// checkpoints): the clock costs more than handling a small message.
const CLOCK_EVERY: u32 = 256;
/// While messages keep coming, the loop looks at the clock about this often: every
/// `clock_every` messages, a number halved when they took longer and doubled (up to
/// [`CLOCK_EVERY`]) when they took under a tenth of it, and 1 after a poll that found nothing.
/// A trickle of messages never leaves the clock unread for long (at 12 messages/s, 256 of
/// them took 21 s: `flush-after` and the checkpoint interval were not kept).
const CLOCK_PERIOD: Duration = Duration::from_millis(10);
/// How often metrics are updated from the stages' counters (and the loop's liveness).
const METRICS_EVERY: Duration = Duration::from_millis(100);
/// How long a broker call at startup may take.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// librdkafka's property for static group membership. With a checkpoint directory, `run`
/// sets it to `graywatch-<instance id>` (the id kept there) unless the config sets it (`""`
/// turns it off).
const STATIC_ID: &str = "group.instance.id";
/// How long a flush of the producer may take before the checkpoint waits for the next turn.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What `run` saves: the pipeline's state with, per input partition, its state, the next
/// offset to read and the offset committed with it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunCheckpoint {
    /// The instance that saved it.
    pub instance: String,
    /// Its sequence number (commits carry it).
    pub seq: u64,
    /// When it was saved, ms since the epoch (processing time).
    pub saved_at_ms: i64,
    /// Stage 1's counters.
    pub aggregate: AggregateCounters,
    /// Stage 2, when it runs in this process (not scaled out: then each repartition
    /// partition's stage 2 is on the state topic).
    pub judge: Option<JudgeState>,
    /// Each input partition held.
    pub inputs: Vec<InputCheckpoint>,
}

/// One input partition of a [`RunCheckpoint`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputCheckpoint {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset to read.
    pub position: i64,
    /// The offset committed with this checkpoint (the lowest held in an open window).
    pub commit: i64,
    /// The partition's aggregator.
    pub state: AggregatorSnapshot,
}

/// One assigned input partition.
struct Part {
    id: InputId,
    /// The next offset to read.
    next: i64,
    /// Processing time of its last message (or of its assignment), as of the first look at
    /// the clock after it (never earlier than the message: silence is never overstated).
    last_data: Instant,
    /// A message came since the last look at the clock.
    fresh: bool,
    idle: bool,
    /// Its messages read but not yet handed to a worker.
    open: Option<Messages>,
}

/// One input topic.
struct TopicIn {
    name: String,
    /// Its parsers not in use by a worker (one more is made when none is free).
    parsers: Vec<TopicParser>,
    format: ingest::Format,
    mapping: ingest::Mapping,
    writer: ingest::WriterConfig,
    /// Largest message value read, bytes.
    max_message: usize,
    /// Messages and records since metrics were last updated.
    messages: u64,
    records: u64,
}

impl TopicIn {
    /// A parser of this topic's format and mapping, behind a writer when one is configured.
    fn make_parser(&self) -> anyhow::Result<TopicParser> {
        let base = self.format.parser(&self.mapping)?;
        Ok(if self.writer.is_empty() {
            TopicParser::Plain(base)
        } else {
            TopicParser::Writer(Box::new(WriterParser::new(
                base,
                &self.mapping,
                self.writer.clone(),
            )))
        })
    }
}

/// Counter deltas from stage 1 into metrics (stage 2's come from `Judge::new_counts`).
#[derive(Default)]
struct Deltas {
    late: Delta,
    records: Delta,
    overflow: Delta,
}

/// Stage 2: in this process, or per owned repartition partition.
enum Stage2 {
    /// Both stages in one process (no `[scale-out]`).
    Local(Box<Judge>),
    /// `[scale-out]`: a judge per repartition partition this instance owns.
    Topic(Box<Scaled>),
}

/// Stage 2 scaled out.
struct Scaled {
    /// The repartition topic.
    topic: Arc<str>,
    /// The state topic.
    state_topic: String,
    /// The repartition topic's partition count.
    count: i32,
    /// Owned partitions: their judge and the next offset to read.
    judges: BTreeMap<i32, (Judge, i64)>,
    /// Every input partition of every input topic: the producers a judge waits for.
    producers: Vec<InputId>,
}

/// Runs `$body` with stage 1 (`$agg`) and the exchange to stage 2 (`$x`), whichever it is;
/// errors become the output's own.
macro_rules! stage1 {
    ($self:ident, |$agg:ident, $x:ident| $body:expr) => {
        match &mut $self.stage2 {
            Stage2::Local(judge) => {
                let mut $x = Local {
                    judge: judge.as_mut(),
                    out: &mut $self.out,
                };
                let $agg = &mut $self.aggregate;
                $body.map_err(|e| lift(e.flatten()))
            }
            Stage2::Topic(t) => {
                let mut $x = TopicExchange {
                    out: &mut $self.out,
                    topic: &t.topic,
                    partitions: t.count,
                };
                let $agg = &mut $self.aggregate;
                $body.map_err(lift)
            }
        }
    };
}

/// How long a stopping `run` waits for alert sinks to deliver what they hold.
const ALERTS_AT_EXIT: Duration = Duration::from_secs(10);

/// The main loop's state.
struct Driver {
    config: Validated,
    /// Partitions of all input topics (read at start).
    input_partitions: usize,
    shared: Arc<Mutex<Shared>>,
    metrics: Arc<Metrics>,
    out: KafkaOutputs,
    aggregate: Aggregate,
    stage2: Stage2,
    /// The input topics: parser, limits, counts.
    topics: Vec<TopicIn>,
    parts: BTreeMap<(String, i32), Part>,
    /// The threads that parse messages.
    workers: Workers,
    /// Messages being parsed, in the order they were handed out.
    in_flight: InFlight<messages::Parsed>,
    /// Emptied [`Messages`], for reuse.
    spare: Vec<Messages>,
    /// Partition states of the checkpoint loaded at start, taken when assigned.
    restored: HashMap<(String, i32), InputCheckpoint>,
    /// The first assignment has come (after it, restored partitions it did not bring are
    /// someone else's).
    assignment_seen: bool,
    /// Input partitions revoked, or checkpointed and not assigned, that stage 2 in this
    /// process still waits for (an eager rebalance revokes and assigns again at once; a
    /// restarted member may get its partitions back when its old membership expires), with
    /// the assignment that did not bring them back (`None` while the rebalance goes on):
    /// released `idle-timeout` after it, with a broker answering.
    departed: HashMap<InputId, Option<Instant>>,
    /// Per judge (the local one: -1; else its repartition partition), since when every input
    /// it waits for has been idle: event time moves on from its last window by the processing
    /// time since ([`Driver::advance_idle`]).
    all_idle_since: HashMap<i32, Instant>,
    /// Operators' approvals from the admin endpoint.
    approvals: std::sync::mpsc::Receiver<super::http::Approval>,
    /// Since when messages wait in some partition's open [`Messages`].
    unflushed_since: Option<Instant>,
    last_metrics: Instant,
    /// Processing time as of the last look at the clock (see [`CLOCK_PERIOD`]).
    now: Instant,
    /// The partition of the last message, reused as a map key without allocating.
    hot: (String, i32),
    /// Messages of the repartition topic since metrics were last updated.
    repartition_messages: u64,
    checkpoint: Option<CheckpointDir>,
    instance: String,
    seq: u64,
    interval: Duration,
    last_checkpoint: Instant,
    /// When the last checkpoint was saved and committed.
    last_saved: Instant,
    deltas: Deltas,
    /// No broker answered at the last look (see `check_idle`).
    broker_was_down: bool,
    /// The deployments topic, when configured.
    deployments: Option<DeploymentsReader>,
    /// The deployments read from it so far (a judge assigned later gets them too).
    known_deployments: Vec<DeploymentEvent>,
    /// The same, to tell a new one from one read before.
    deployment_seen: std::collections::HashSet<DeploymentEvent>,
}

/// Processing time, ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The partition count of `topic` (`None`: it does not exist), asking again while the brokers
/// don't answer, for [`STARTUP_TIMEOUT`] or until a shutdown is requested.
fn partitions_when_up(
    consumer: &BaseConsumer<ConsumerCx>,
    topic: &str,
    shutdown: &AtomicBool,
) -> anyhow::Result<Option<i32>> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match client::partitions(consumer, topic, Duration::from_secs(2)) {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() < deadline && !shutdown.load(Ordering::SeqCst) => {
                tracing::warn!(error = %e, "waiting for the brokers");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// This instance's id, kept in the checkpoint directory (a new one without a directory).
fn instance_id(dir: Option<&PathBuf>) -> anyhow::Result<String> {
    let fresh = || {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_i64(now_ms());
        format!("{:016x}", h.finish())
    };
    let Some(dir) = dir else {
        return Ok(fresh());
    };
    let path = dir.join("instance");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = fresh();
            std::fs::write(&path, format!("{id}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}

/// `graywatch run` (see the [module docs](self)), messages parsed on `threads` worker threads.
/// Returns when a shutdown is requested (after the last checkpoint and commit), or with the
/// error that stopped it.
///
/// # Errors
/// A config without `[kafka]`, a missing input topic, a checkpoint that can't be read, an
/// output that failed for good.
pub fn run(
    config: Validated,
    threads: usize,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    approvals: std::sync::mpsc::Receiver<super::http::Approval>,
) -> anyhow::Result<()> {
    let kafka_scale_out = config.scale_out.clone();
    let Some(kafka) = config.kafka.clone() else {
        anyhow::bail!(
            "run needs a [kafka] section in the config (see deploy/examples/graywatch.toml)"
        );
    };
    let servers = &kafka.config.bootstrap_servers;
    let checkpoint = match &config.checkpoint {
        Some(c) => Some(CheckpointDir::open(&c.dir)?),
        None => {
            tracing::warn!(
                "no [checkpoint] section: baselines and open windows are not saved; a restart reads again from the committed offsets and learns baselines anew"
            );
            None
        }
    };
    let instance = instance_id(config.checkpoint.as_ref().map(|c| &c.dir))?;
    let interval = config
        .checkpoint
        .as_ref()
        .map_or(Duration::from_secs(10), |c| c.interval);

    let shared = Arc::new(Mutex::new(Shared::default()));
    let state_reader = match &config.scale_out {
        Some(s) => Some(
            super::consumer::StateReader::new(
                client::consumer_config(servers, &kafka.config.group_id, &kafka.client),
                &s.state_topic,
                &s.repartition_topic,
            )
            .context("kafka consumer of the state topic")?,
        ),
        None => None,
    };
    let mut consumer_config =
        client::consumer_config(servers, &kafka.config.group_id, &kafka.client);
    if kafka
        .client
        .consumer_property("statistics.interval.ms")
        .is_none()
    {
        // idle needs caught up, known from statistics at most half an idle-timeout old
        let half = (config.runtime.idle_timeout / 2).as_millis().clamp(1, 5000);
        consumer_config.set("statistics.interval.ms", half.to_string());
    }
    let static_id = match kafka.client.consumer_property(STATIC_ID) {
        // static membership (KIP-345): a restart of this instance takes its partitions back
        // at once, where a new member would wait for the old one's session to time out
        // (holding, meanwhile, partitions nobody reads)
        None if config.checkpoint.is_some() => {
            let id = format!("graywatch-{instance}");
            consumer_config.set(STATIC_ID, &id);
            Some(id)
        }
        None => None,
        Some("") => {
            consumer_config.remove(STATIC_ID);
            None
        }
        Some(id) => Some(id.to_owned()),
    };
    let consumer: BaseConsumer<ConsumerCx> = consumer_config
        .create_with_context(ConsumerCx {
            shared: Arc::clone(&shared),
            instance: instance.clone(),
            metrics: Arc::clone(&metrics),
            quiet: Default::default(),
            state: state_reader,
            read_committed: kafka.client.consumer_property("isolation.level")
                != Some("read_uncommitted"),
            static_id,
        })
        .context("kafka consumer")?;
    let mut producers: Vec<InputId> = Vec::new();
    for input in &kafka.inputs {
        let Some(n) = partitions_when_up(&consumer, &input.topic, &shutdown)? else {
            return Err(client::TopicError::MissingInput(input.topic.clone()).into());
        };
        producers.extend((0..n).map(|p| InputId::partition(&input.topic, p)));
    }
    let input_partitions = producers.len();
    let o = &kafka.config.outputs;
    let mut wanted: Vec<(String, i32, i32, bool)> =
        [&o.findings, &o.commands, &o.alerts, &o.dead_letters]
            .into_iter()
            .chain(o.windows.as_ref())
            .chain(o.audit.as_ref())
            .map(|t| (t.clone(), o.partitions, o.replication_factor, false))
            .collect();
    if let Some(s) = &config.scale_out {
        wanted.push((
            s.repartition_topic.clone(),
            s.partitions,
            o.replication_factor,
            false,
        ));
        wanted.push((
            s.state_topic.clone(),
            s.partitions,
            o.replication_factor,
            true,
        ));
    }
    if let Some(d) = &kafka.config.deployments {
        // one partition: a history written in order is read in order
        wanted.push((d.clone(), 1, o.replication_factor, false));
    }
    wanted.dedup();
    client::create_missing(
        &client::admin_config(servers, &kafka.client),
        &wanted,
        STARTUP_TIMEOUT,
    )?;
    let mut producer_config = client::producer_config(servers, &kafka.client);
    // librdkafka's own limit (1 000 000 by default) must not refuse what the cap lets through
    producer_config.set(
        "message.max.bytes",
        (o.max_message_bytes + 65_536).max(1_000_000).to_string(),
    );
    let out = KafkaOutputs::new(
        &producer_config,
        OutputTopics {
            findings: o.findings.clone(),
            commands: o.commands.clone(),
            alerts: o.alerts.clone(),
            audit: o.audit.clone(),
            dead_letters: o.dead_letters.clone(),
            windows: o.windows.clone(),
        },
        Arc::clone(&metrics),
        FLUSH_TIMEOUT,
        o.max_message_bytes,
    )
    .context("kafka producer")?
    .with_alerting(crate::alerting::Dispatcher::start(&config.alerting)?)
    .with_archive(
        config
            .archive
            .as_ref()
            .map(|a| crate::archive::Archive::open(&a.dir, &instance))
            .transpose()?,
    );

    let mut topics = Vec::new();
    for input in &kafka.inputs {
        let mapping = config.mapping.for_input(&input.topic);
        let writer = input
            .writer
            .clone()
            .unwrap_or_else(|| mapping.writer().clone());
        let mut topic = TopicIn {
            name: input.topic.clone(),
            parsers: Vec::new(),
            format: input.format.clone(),
            mapping,
            writer,
            max_message: input.max_message_bytes,
            messages: 0,
            records: 0,
        };
        // a bad format (an NGINX log_format that does not compile) is a startup error
        let first = topic.make_parser()?;
        topic.parsers.push(first);
        topics.push(topic);
    }

    let stage2 = match &config.scale_out {
        None => Stage2::Local(Box::new(config.judge(Ownership::All, o.windows.is_some()))),
        Some(s) => {
            if let Some(n) = partitions_when_up(&consumer, &s.repartition_topic, &shutdown)?
                && n != s.partitions
            {
                anyhow::bail!(
                    "[scale-out] partitions is {} but topic {} has {n}: nodes would be judged on the wrong partitions",
                    s.partitions,
                    s.repartition_topic
                );
            }
            Stage2::Topic(Box::new(Scaled {
                topic: Arc::from(s.repartition_topic.as_str()),
                state_topic: s.state_topic.clone(),
                count: s.partitions,
                judges: BTreeMap::new(),
                producers,
            }))
        }
    };
    let aggregate = Aggregate::new(config.window, crate::not_after_now());
    let mut driver = Driver {
        input_partitions,
        config,
        shared,
        metrics,
        out,
        aggregate,
        stage2,
        topics,
        parts: BTreeMap::new(),
        workers: Workers::new(threads, "parse"),
        in_flight: InFlight::default(),
        spare: Vec::new(),
        restored: HashMap::new(),
        assignment_seen: false,
        departed: HashMap::new(),
        all_idle_since: HashMap::new(),
        approvals,
        unflushed_since: None,
        last_metrics: Instant::now(),
        now: Instant::now(),
        hot: (String::new(), -1),
        repartition_messages: 0,
        checkpoint,
        instance,
        seq: 0,
        interval,
        last_checkpoint: Instant::now(),
        last_saved: Instant::now(),
        deltas: Deltas::default(),
        broker_was_down: false,
        deployments: None,
        known_deployments: Vec::new(),
        deployment_seen: Default::default(),
    };
    driver.restore()?;
    if let Some(topic) = &kafka.config.deployments {
        let reader = DeploymentsReader::new(
            client::consumer_config(servers, &kafka.config.group_id, &kafka.client),
            topic,
            STARTUP_TIMEOUT,
        )?;
        if driver.config.suite.deploy.is_none() {
            tracing::warn!(%topic, "[kafka] deployments is read, but [detect.deploy] enabled = false: nothing uses it");
        }
        // the whole history before any record: windows read again see the same one
        tracing::info!(%topic, "reading the deployments topic");
        let read = reader.read_to_end(STARTUP_TIMEOUT, &shutdown)?;
        let bad = read.bad.len();
        driver.deployments = Some(reader);
        let added = driver.take_deployments(read, false)?;
        let services: std::collections::BTreeSet<&str> = driver
            .known_deployments
            .iter()
            .map(|e| e.service.as_str())
            .collect();
        tracing::info!(%topic, deployments = added, services = services.len(), bad_lines = bad, "deployments topic read");
    }
    driver.metrics.broker_up.set(1); // it answered the metadata requests above
    let mut topics: Vec<&str> = kafka.inputs.iter().map(|i| i.topic.as_str()).collect();
    if let Some(s) = &kafka_scale_out {
        topics.push(s.repartition_topic.as_str());
    }
    consumer.subscribe(&topics).context("subscribing")?;
    tracing::info!(?topics, group = %kafka.config.group_id, instance = %driver.instance, "running");

    let result = driver.main_loop(&consumer, &shutdown);
    match result {
        Ok(()) => {
            // SIGTERM: stop consuming, close what can close, checkpoint, commit
            let saved = driver.seq;
            driver.checkpoint(&consumer, CommitMode::Sync)?;
            if driver.seq == saved {
                tracing::warn!(
                    "last checkpoint not saved (no broker answers): a restart reads again from the previous commit"
                );
            }
            driver.shared.lock().expect("rebalance state lock").closing = true;
            consumer.unsubscribe();
            driver.out.close_archive()?;
            // what the alert sinks hold goes out before the process ends (or is given up)
            driver.out.close_alerting(Instant::now() + ALERTS_AT_EXIT);
            tracing::info!("stopped");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Driver {
    /// Loads this instance's checkpoint, if any: stage 2 now, input partitions when assigned.
    fn restore(&mut self) -> anyhow::Result<()> {
        let Some(dir) = &self.checkpoint else {
            return Ok(());
        };
        let Some(cp) = dir.load::<RunCheckpoint>()? else {
            tracing::info!(dir = %dir.path().display(), "no checkpoint: starting empty");
            return Ok(());
        };
        if cp.instance != self.instance {
            anyhow::bail!(
                "checkpoint in {} was written by instance {}, this directory says {}",
                dir.path().display(),
                cp.instance,
                self.instance
            );
        }
        let hint = || {
            format!(
                "restoring the checkpoint in {}: run with the config it was taken with, or move it \
                 away to start without it",
                dir.path().display()
            )
        };
        Stage::<Local<'_, KafkaOutputs>>::restore(&mut self.aggregate, cp.aggregate)
            .map_err(|e| lift(e.flatten()))
            .with_context(hint)?;
        match (&mut self.stage2, cp.judge) {
            (Stage2::Local(judge), Some(state)) => {
                // the sinks start empty: Alertmanager must go on hearing what still fires
                let firing = state.actuator.alerts.firing();
                Stage::<KafkaOutputs>::restore(judge.as_mut(), state)
                    .map_err(lift)
                    .with_context(hint)?;
                self.out.resume_alerting(&firing);
            }
            (Stage2::Local(_), None) => anyhow::bail!(
                "checkpoint in {} was taken with [scale-out]: its stage 2 is on the state topic; \
                 run with [scale-out] again, or move the checkpoint away",
                dir.path().display()
            ),
            (Stage2::Topic(_), Some(_)) => tracing::warn!(
                "checkpoint taken without [scale-out]: its stage 2 (baselines, commands in force) is not carried over"
            ),
            (Stage2::Topic(_), None) => {}
        }
        self.seq = cp.seq;
        let mut shared = self.shared.lock().expect("rebalance state lock");
        for input in cp.inputs {
            let key = (input.topic.clone(), input.partition);
            shared.checkpointed.insert(key.clone(), input.position);
            let meta = commit_meta(&self.instance, self.seq, input.state.late_before_us);
            shared.commits.insert(key.clone(), (input.commit, meta));
            self.restored.insert(key, input);
        }
        tracing::info!(
            seq = self.seq,
            partitions = self.restored.len(),
            "restored checkpoint"
        );
        Ok(())
    }

    fn main_loop(
        &mut self,
        consumer: &BaseConsumer<ConsumerCx>,
        shutdown: &AtomicBool,
    ) -> anyhow::Result<()> {
        let flush_after = self.config.runtime.flush_after;
        let mut handled = 0u32;
        let mut clock_every = 1;
        while !shutdown.load(Ordering::SeqCst) {
            let message = consumer.poll(Duration::from_millis(100));
            self.handle_events()?;
            let quiet = match message {
                Some(Ok(m)) => {
                    self.on_message(&m)?;
                    false
                }
                Some(Err(e)) => {
                    // the context's error callback has reported it
                    tracing::debug!(error = %e, "kafka consumer");
                    true
                }
                None => true,
            };
            handled += 1;
            if !quiet && handled < clock_every {
                continue;
            }
            handled = 0;
            if let Some((code, reason)) = consumer.client().fatal_error() {
                return Err(fatal(
                    code,
                    &reason,
                    consumer.context().static_id.as_deref(),
                ));
            }
            let now = Instant::now();
            clock_every = if quiet {
                1 // nothing came for a while: whatever comes next, the clock is read at once
            } else {
                next_clock_every(clock_every, now.duration_since(self.now))
            };
            self.now = now;
            for p in self.parts.values_mut().filter(|p| p.fresh) {
                p.last_data = now;
                p.fresh = false;
            }
            if quiet {
                // nothing more to read for now: every record read goes through
                self.flush_all()?;
            } else {
                if let Some(since) = self.unflushed_since
                    && self.now.duration_since(since) >= flush_after
                {
                    self.hand_out_all()?;
                }
                self.take_ready()?;
            }
            self.check_idle()?;
            self.release_departed()?;
            self.advance_idle()?;
            self.approve()?;
            if let Some(reader) = &self.deployments {
                let read = reader.poll();
                self.take_deployments(read, true)?;
            }
            if self.now.duration_since(self.last_checkpoint) >= self.interval {
                self.checkpoint(consumer, CommitMode::Async)?;
            }
            if quiet || self.now.duration_since(self.last_metrics) >= METRICS_EVERY {
                self.update_metrics();
            }
        }
        Ok(())
    }

    fn handle_events(&mut self) -> anyhow::Result<()> {
        let events = std::mem::take(&mut self.shared.lock().expect("rebalance state lock").events);
        for event in events {
            match event {
                Event::Assigned(parts) => {
                    for (topic, partition, start) in parts {
                        self.assigned(topic, partition, start)?;
                    }
                    if !std::mem::replace(&mut self.assignment_seen, true) {
                        self.elsewhere()?;
                    }
                    // the rebalance is over: who did not come back starts its wait
                    let now = Instant::now();
                    for since in self.departed.values_mut() {
                        since.get_or_insert(now);
                    }
                    // restored at start, now assigned: ready (while the loop turns)
                    self.metrics.ready.store(true, Ordering::Relaxed);
                    if matches!(self.stage2, Stage2::Local(_))
                        && self.parts.len() < self.input_partitions
                    {
                        tracing::warn!(
                            held = self.parts.len(),
                            of = self.input_partitions,
                            "this instance holds part of the input partitions: without [scale-out], \
                             nodes are judged on part of their traffic here (run one instance, or \
                             configure [scale-out])"
                        );
                    }
                }
                Event::Revoked(parts) => {
                    for key in parts {
                        self.revoked(key)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// After the first assignment: the checkpoint's partitions it did not bring are read
    /// elsewhere (from their commits). Their states are dropped; stage 2 in this process
    /// waits for them for `idle-timeout` more ([`Driver::release_departed`]).
    fn elsewhere(&mut self) -> anyhow::Result<()> {
        let gone: Vec<(String, i32)> = self
            .restored
            .keys()
            .filter(|k| !self.parts.contains_key(*k))
            .cloned()
            .collect();
        if !gone.is_empty() {
            tracing::info!(partitions = ?gone, "checkpointed partitions assigned elsewhere: their states are dropped");
            let mut shared = self.shared.lock().expect("rebalance state lock");
            for key in &gone {
                self.restored.remove(key);
                shared.checkpointed.remove(key);
                shared.commits.remove(key);
            }
        }
        if let Stage2::Local(judge) = &self.stage2 {
            let now = Instant::now();
            for name in judge.inputs() {
                let id = InputId::new(name);
                if id
                    .topic_partition()
                    .is_some_and(|(t, p)| !self.parts.contains_key(&(t.to_owned(), p)))
                {
                    self.departed.entry(id).or_insert(Some(now));
                }
            }
        }
        Ok(())
    }

    /// Stage 2 in this process stops waiting for the partitions that left more than
    /// `idle-timeout` ago and have not come back: windows close without them.
    fn release_departed(&mut self) -> anyhow::Result<()> {
        let Stage2::Local(judge) = &mut self.stage2 else {
            return Ok(());
        };
        if self.metrics.broker_up.get() == 0 {
            // no broker: partitions may come back when it does (lost in an outage longer
            // than the session); their clocks start again then (`check_idle`)
            return Ok(());
        }
        let timeout = self.config.runtime.idle_timeout;
        let gone: Vec<InputId> = self
            .departed
            .iter()
            .filter(|(_, since)| since.is_some_and(|t| self.now.duration_since(t) >= timeout))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.departed.remove(&id);
            tracing::info!(input = %id, "partition not back within idle-timeout: windows close without it here");
            Stage::<KafkaOutputs>::remove_input(
                judge.as_mut(),
                &id,
                Removal::Revoked,
                &mut self.out,
            )
            .map_err(lift)?;
        }
        Ok(())
    }

    /// Whether `topic` is the repartition topic (stage 2's input).
    fn is_repartition(&self, topic: &str) -> bool {
        matches!(&self.stage2, Stage2::Topic(t) if &*t.topic == topic)
    }

    /// A repartition partition assigned: its judge, restored from the state topic when a
    /// state was there.
    fn assigned_stage2(&mut self, partition: i32, start: Start) -> anyhow::Result<()> {
        let state = self
            .shared
            .lock()
            .expect("rebalance state lock")
            .stage2
            .remove(&partition);
        let Stage2::Topic(t) = &mut self.stage2 else {
            return Ok(());
        };
        let mut judge = self.config.judge(
            Ownership::Partition {
                index: partition,
                count: t.count,
            },
            self.config
                .kafka
                .as_ref()
                .is_some_and(|k| k.config.outputs.windows.is_some()),
        );
        let next = match (start, state) {
            (Start::Restore { offset }, Some(state)) => {
                Stage::<KafkaOutputs>::restore(&mut judge, state.judge).map_err(lift)?;
                // the sinks here never heard of its open incidents (a restart, or the
                // partition came from another instance): Alertmanager must go on hearing them
                self.out.resume_alerting(&judge.firing());
                offset
            }
            _ => -1,
        };
        for p in &t.producers {
            judge.expect_input(p);
        }
        // the deploy history is not part of a judge's state: the topic's is added again
        judge.add_deployments(&self.known_deployments);
        tracing::info!(partition, next, "stage 2 partition assigned");
        t.judges.insert(partition, (judge, next));
        Ok(())
    }

    fn assigned(&mut self, topic: String, partition: i32, start: Start) -> anyhow::Result<()> {
        if self.is_repartition(&topic) {
            return self.assigned_stage2(partition, start);
        }
        let key = (topic, partition);
        let id = InputId::partition(&key.0, partition);
        self.departed.remove(&id);
        let (next, state) = match start {
            Start::Restore { offset } => match self.restored.remove(&key) {
                Some(s) => (offset, Some(s.state)),
                None => {
                    tracing::error!(input = %id, "checkpointed partition without its state: starting it empty");
                    (offset, None)
                }
            },
            Start::Resume { offset, watermark } => (
                offset,
                Some(PairAggregator::resume_at(self.config.window, watermark).snapshot()),
            ),
            Start::Beginning | Start::Committed => (-1, None),
        };
        let added = match &mut self.stage2 {
            Stage2::Local(judge) => {
                judge.expect_input(&id);
                Stage::<Local<'_, KafkaOutputs>>::add_input(&mut self.aggregate, &id, state)
                    .map_err(|e| lift(e.flatten()))
            }
            Stage2::Topic(_) => {
                Stage::<TopicExchange<'_>>::add_input(&mut self.aggregate, &id, state).map_err(lift)
            }
        };
        added.with_context(|| {
            format!(
                "restoring input {key:?} from the checkpoint: run with the config it was taken \
                 with, or move the checkpoint away to start without it"
            )
        })?;
        self.parts.insert(
            key,
            Part {
                id,
                next,
                last_data: Instant::now(),
                fresh: false,
                idle: false,
                open: None,
            },
        );
        Ok(())
    }

    fn revoked(&mut self, key: (String, i32)) -> anyhow::Result<()> {
        if let Stage2::Topic(t) = &mut self.stage2
            && *t.topic == key.0
        {
            if let Some((judge, _)) = t.judges.remove(&key.1) {
                // its open incidents go with it: the new owner re-sends and resolves them
                self.out.hand_over_alerting(&judge.firing());
            }
            let mut shared = self.shared.lock().expect("rebalance state lock");
            shared.commits.remove(&key);
            tracing::info!(partition = key.1, "stage 2 partition revoked");
            return Ok(());
        }
        self.flush_part(&key)?;
        if let Some(part) = self.parts.remove(&key) {
            stage1!(self, |agg, x| agg.remove_input(
                &part.id,
                Removal::Revoked,
                &mut x
            ))?;
            if matches!(self.stage2, Stage2::Local(_)) {
                self.departed.insert(part.id, None);
            }
        }
        let mut shared = self.shared.lock().expect("rebalance state lock");
        shared.checkpointed.remove(&key);
        shared.commits.remove(&key);
        self.restored.remove(&key);
        Ok(())
    }

    fn on_message(&mut self, m: &BorrowedMessage<'_>) -> anyhow::Result<()> {
        let topic = m.topic();
        let offset = m.offset();
        let Some(t) = self.topics.iter().position(|t| t.name == topic) else {
            self.repartition_messages += 1;
            if self.is_repartition(topic) {
                return self.on_repartition(m);
            }
            tracing::warn!(%topic, "message of a topic not read here");
            return Ok(());
        };
        self.topics[t].messages += 1;
        if self.hot.1 != m.partition() || self.hot.0 != topic {
            self.hot.0.clear();
            self.hot.0.push_str(topic);
            self.hot.1 = m.partition();
        }
        let Some(part) = self.parts.get_mut(&self.hot) else {
            tracing::warn!(%topic, partition = m.partition(), offset, "message of a partition not assigned here");
            return Ok(());
        };
        part.next = offset + 1;
        part.fresh = true;
        part.idle = false;
        let payload = m.payload().unwrap_or_default();
        let max = self.topics[t].max_message;
        let empty = payload.iter().all(u8::is_ascii_whitespace);
        let open = part.open.get_or_insert_with(|| {
            let (key, id) = (self.hot.clone(), part.id.clone());
            match self.spare.pop() {
                Some(mut spare) => {
                    spare.reuse(key, id, t);
                    spare
                }
                None => Messages::new(key, id, t),
            }
        });
        if empty || payload.len() > max {
            // refused whole, its dead letter sent in its place among the partition's
            let (reason, detail) = if empty && m.payload().is_none() {
                ("empty-message", "the message has no value".to_owned())
            } else if empty {
                ("empty-message", "the message's value is empty".to_owned())
            } else {
                let n = payload.len();
                let detail = format!("message of {n} bytes, more than max-message-bytes {max}");
                ("too-large", detail)
            };
            open.refuse(offset, payload, m.key(), message_headers(m), reason, detail);
        } else {
            open.push(offset, payload, m.key(), message_headers(m));
        }
        let full = open.full();
        if self.unflushed_since.is_none() {
            self.unflushed_since = Some(self.now);
        }
        if full {
            let key = self.hot.clone();
            self.hand_out(&key)?;
            self.take_ready()?;
        }
        Ok(())
    }

    /// Hands partition `key`'s open messages to a worker, with a parser of their topic.
    fn hand_out(&mut self, key: &(String, i32)) -> anyhow::Result<()> {
        let Some(open) = self.parts.get_mut(key).and_then(|p| p.open.take()) else {
            return Ok(());
        };
        let topic = &mut self.topics[open.topic];
        let parser = match topic.parsers.pop() {
            Some(p) => p,
            None => topic.make_parser()?,
        };
        self.in_flight
            .push(self.workers.submit(move || messages::parse(open, parser)));
        Ok(())
    }

    /// Takes the results of the workers that are done, oldest first (a newer one waits for
    /// the older ones), and waits for the oldest while more than the workers can keep busy
    /// are in flight.
    fn take_ready(&mut self) -> anyhow::Result<()> {
        while let Some(parsed) = self.in_flight.oldest_ready() {
            self.take(parsed)?;
        }
        while self.in_flight.len() > IN_FLIGHT_PER_WORKER * self.workers.threads() {
            let parsed = self.in_flight.wait_oldest().expect("messages in flight");
            self.take(parsed)?;
        }
        Ok(())
    }

    /// Waits for every result in flight and takes each.
    fn take_all(&mut self) -> anyhow::Result<()> {
        while let Some(parsed) = self.in_flight.wait_oldest() {
            self.take(parsed)?;
        }
        Ok(())
    }

    /// A worker's result: its batches into stage 1, its rejected lines to the dead-letter
    /// topic, counts into metrics; the parser back to its topic.
    fn take(&mut self, mut parsed: messages::Parsed) -> anyhow::Result<()> {
        let t = parsed.messages.topic;
        self.topics[t].records += parsed.records() as u64;
        for (field, n) in [
            ("request_id", parsed.dropped.request_ids),
            ("upstream_address", parsed.dropped.addresses),
        ] {
            if n > 0 {
                self.metrics
                    .dropped_values
                    .get_or_create(&FieldLabel {
                        field: field.into(),
                    })
                    .inc_by(n);
            }
        }
        self.topics[t].parsers.push(parsed.parser);
        let id = parsed.messages.input.clone();
        for (batch, positions) in parsed.batches.drain(..) {
            let fb = FlowBatch {
                batch: &batch,
                positions: Some(&positions),
            };
            stage1!(self, |agg, x| agg.process(&id, fb, &mut x))?;
        }
        for r in parsed.rejects.drain(..) {
            let m = parsed.messages.get(r.message);
            self.dead_letter(
                &id, m.offset, m.key, r.reason, &r.detail, m.value, &m.headers,
            )?;
        }
        self.spare.push(parsed.messages);
        Ok(())
    }

    /// A message of the repartition topic: into its partition's judge.
    fn on_repartition(&mut self, m: &BorrowedMessage<'_>) -> anyhow::Result<()> {
        let partition = m.partition();
        let offset = m.offset();
        let Stage2::Topic(t) = &mut self.stage2 else {
            return Ok(());
        };
        let Some((judge, next)) = t.judges.get_mut(&partition) else {
            tracing::warn!(
                partition,
                offset,
                "repartition message of a partition not assigned here"
            );
            return Ok(());
        };
        *next = offset + 1;
        let payload = m.payload().unwrap_or_default();
        let slots = self.config.window.slots();
        let decoded = match repartition::decode::<repartition::Message>(payload) {
            Err(e) => Err(format!("repartition message: {e}")),
            Ok(repartition::Message::Approve { id, revision, from }) => {
                // an approval another instance took: this judge enforces it if it holds it
                let Some(now_us) = judge.last_closed_us() else {
                    return Ok(());
                };
                match judge
                    .approve(&id, revision, now_us, &mut self.out)
                    .context("outputs")?
                {
                    Ok(()) => {
                        tracing::info!(command = %id, partition, %from, "approved {id}: enforced (approval forwarded by instance {from})")
                    }
                    Err(
                        e @ (actuate::ApproveError::NotProposed { .. }
                        | actuate::ApproveError::Revision { .. }),
                    ) => {
                        tracing::warn!(command = %id, partition, %from, "approval refused: {e}");
                    }
                    Err(actuate::ApproveError::Unknown(_)) => {}
                }
                return Ok(());
            }
            Ok(repartition::Message::Pair {
                producer,
                window,
                source,
                destination,
                state,
            }) => detect::pair::PairState::from_data(state, slots)
                .map_err(|e| format!("pair state from {producer}: {e}"))
                .map(|state| {
                    let item = JudgeItem::Pair {
                        window,
                        source,
                        destination,
                        state: Box::new(state),
                    };
                    (producer, item)
                }),
            Ok(repartition::Message::Mark { producer, mark }) => {
                Ok((producer, JudgeItem::Mark(mark)))
            }
        };
        let (producer, item) = match decoded {
            Ok(d) => d,
            Err(detail) => {
                let id = InputId::partition(m.topic(), partition);
                let reason = "bad-repartition-message";
                return self.dead_letter(&id, offset, m.key(), reason, &detail, payload, &[]);
            }
        };
        judge
            .process(&InputId::new(&producer), item, &mut self.out)
            .map_err(lift)
    }

    #[allow(clippy::too_many_arguments)] // a dead letter's parts, as the message gave them
    fn dead_letter(
        &mut self,
        input: &InputId,
        offset: i64,
        key: Option<&[u8]>,
        reason: &str,
        detail: &str,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> anyhow::Result<()> {
        tracing::debug!(%input, offset, reason, detail, "dead letter");
        self.out
            .dead_letter(&DeadLetter {
                input,
                position: Some(offset),
                reason,
                detail,
                payload: Payload::Bytes(payload),
                key,
                headers,
            })
            .map_err(anyhow::Error::from)
    }

    /// Deployments read from the deployments topic: into every judge of this instance; lines
    /// that are not deployments to the dead-letter topic (`bad-deployment`). `live`: read
    /// while running (each logged), not with the history at start-up. Returns how many were
    /// new.
    fn take_deployments(&mut self, read: deployments::Read, live: bool) -> anyhow::Result<usize> {
        if read.events.is_empty() && read.bad.is_empty() {
            return Ok(0); // most turns of the loop
        }
        let topic = match &self.deployments {
            Some(r) => r.topic().to_owned(),
            None => return Ok(0),
        };
        for b in &read.bad {
            if live {
                tracing::warn!(%topic, partition = b.partition, offset = b.offset, detail = %b.detail, "not a deployment");
            }
            let headers: Vec<(&str, &[u8])> = b
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            self.dead_letter(
                &InputId::partition(&topic, b.partition),
                b.offset,
                b.key.as_deref(),
                "bad-deployment",
                &b.detail,
                &b.payload,
                &headers,
            )?;
        }
        let mut new = Vec::new();
        for e in read.events {
            if self.deployment_seen.insert(e.clone()) {
                new.push(e);
            }
        }
        if new.is_empty() {
            return Ok(0);
        }
        if live {
            for e in &new {
                tracing::info!(deployment = %crate::config::deployment_line(e), "deployment");
            }
        }
        match &mut self.stage2 {
            Stage2::Local(judge) => {
                judge.add_deployments(&new);
            }
            Stage2::Topic(t) => {
                for (judge, _) in t.judges.values_mut() {
                    judge.add_deployments(&new);
                }
            }
        }
        self.metrics.deployments.inc_by(new.len() as u64);
        let added = new.len();
        self.known_deployments.extend(new);
        Ok(added)
    }

    /// Hands partition `key`'s open messages to a worker and waits until every record read so
    /// far is in stage 1.
    fn flush_part(&mut self, key: &(String, i32)) -> anyhow::Result<()> {
        self.hand_out(key)?;
        self.take_all()
    }

    /// Hands every partition's open messages to the workers.
    fn hand_out_all(&mut self) -> anyhow::Result<()> {
        self.unflushed_since = None;
        let keys: Vec<(String, i32)> = self
            .parts
            .iter()
            .filter(|(_, p)| p.open.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.hand_out(&key)?;
        }
        Ok(())
    }

    /// Hands every partition's open messages to the workers and waits until every record read
    /// so far is in stage 1.
    fn flush_all(&mut self) -> anyhow::Result<()> {
        self.hand_out_all()?;
        self.take_all()
    }

    /// Partitions without messages for `idle-timeout` stop holding the watermark back, once
    /// caught up: librdkafka's statistics show them fetched to their end
    /// ([`super::consumer::fetched_to_end`]) and read to it. A partition still being read, or
    /// waiting for its first fetch (a loaded machine, a slow broker), is behind, not idle.
    /// One fetched to its end but read short of it for twice `idle-timeout` is idle too (a
    /// bound on what the statistics can't say: a record cannot wait that long in the
    /// consumer's queue, bounded to 16 MiB). While no broker answers, nothing is idle (no
    /// message may mean none could be fetched, not none was written): idle clocks start again
    /// when a broker is back.
    fn check_idle(&mut self) -> anyhow::Result<()> {
        if self.metrics.broker_up.get() == 0 {
            self.broker_was_down = true;
            return Ok(());
        }
        if std::mem::take(&mut self.broker_was_down) {
            let now = Instant::now();
            for p in self.parts.values_mut() {
                p.last_data = now;
            }
            for since in self.departed.values_mut().flatten() {
                *since = now;
            }
            tracing::info!("a broker answers again: reading on");
        }
        let timeout = self.config.runtime.idle_timeout;
        let idle: Vec<(String, i32)> = {
            let shared = self.shared.lock().expect("rebalance state lock");
            self.parts
                .iter()
                .filter(|(k, p)| {
                    let silent = self.now.duration_since(p.last_data);
                    !p.idle
                        && silent >= timeout
                        && shared
                            .fetched
                            .get(*k)
                            .is_some_and(|f| f.caught_up(p.next) || silent >= 2 * timeout)
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in idle {
            self.flush_part(&key)?;
            let part = self.parts.get_mut(&key).expect("listed above");
            part.idle = true;
            tracing::info!(input = %part.id, "input idle");
            let id = part.id.clone();
            stage1!(self, |agg, x| agg.input_idle(&id, &mut x))?;
        }
        Ok(())
    }

    /// While every input a judge waits for is idle, no window closes; event time still
    /// passes for what it has in force: the end of its last window plus the processing time
    /// since every input went idle (commands expire, audited). Not while no broker answers
    /// (nothing is idle then).
    fn advance_idle(&mut self) -> anyhow::Result<()> {
        let now = self.now;
        let judges: Vec<(i32, &mut Judge)> = match &mut self.stage2 {
            Stage2::Local(judge) => vec![(-1, judge.as_mut())],
            Stage2::Topic(t) => t.judges.iter_mut().map(|(p, (j, _))| (*p, j)).collect(),
        };
        for (key, judge) in judges {
            if !judge.all_idle() {
                self.all_idle_since.remove(&key);
                continue;
            }
            let since = *self.all_idle_since.entry(key).or_insert(now);
            if let Some(end) = judge.last_closed_us() {
                let passed =
                    i64::try_from(now.duration_since(since).as_micros()).unwrap_or(i64::MAX);
                judge
                    .advance(end.saturating_add(passed), &mut self.out)
                    .context("outputs")?;
            }
        }
        Ok(())
    }

    /// Operators' approvals (`POST /admin/approve`): the judge holding the proposed command
    /// sends it again in enforce mode, at the event time of its last window. With
    /// `[scale-out]`, when no judge of this instance holds it, the approval goes to every
    /// repartition partition ([`repartition::Message::Approve`]), and the judge holding it,
    /// wherever it runs, enforces it (answered 202: the audit topic says `approved`).
    fn approve(&mut self) -> anyhow::Result<()> {
        while let Ok(a) = self.approvals.try_recv() {
            let judges: Vec<&mut Judge> = match &mut self.stage2 {
                Stage2::Local(judge) => vec![judge.as_mut()],
                Stage2::Topic(t) => t.judges.values_mut().map(|(j, _)| j).collect(),
            };
            let mut answer = Err((
                404,
                format!("no command {} is in force on this instance", a.id),
            ));
            for judge in judges {
                let Some(now_us) = judge.last_closed_us() else {
                    continue;
                };
                match judge
                    .approve(&a.id, a.revision, now_us, &mut self.out)
                    .context("outputs")?
                {
                    Ok(()) => {
                        answer = Ok((200, format!("approved {}: enforced", a.id)));
                        break;
                    }
                    Err(
                        e @ (actuate::ApproveError::NotProposed { .. }
                        | actuate::ApproveError::Revision { .. }),
                    ) => {
                        answer = Err((409, e.to_string()));
                        break;
                    }
                    Err(actuate::ApproveError::Unknown(_)) => {}
                }
            }
            if let (Err((404, _)), Stage2::Topic(t)) = (&answer, &self.stage2) {
                repartition::forward_approval(
                    &mut self.out,
                    &t.topic,
                    t.count,
                    &a.id,
                    a.revision,
                    &self.instance,
                )
                .context("forwarding an approval")?;
                answer = Ok((
                    202,
                    format!(
                        "forwarded {} to the {} stage-2 partitions: the one holding it enforces it \
                         (the audit topic says \"approved\")",
                        a.id, t.count
                    ),
                ));
            }
            match &answer {
                Ok((_, done)) => tracing::info!(command = %a.id, "{done}"),
                Err((_, why)) => tracing::warn!(command = %a.id, "approval refused: {why}"),
            }
            let _ = a.reply.send(answer);
        }
        Ok(())
    }

    /// Flushes batches and the producer, saves the checkpoint, commits the offsets it covers.
    /// A producer that can't deliver in time (a broker outage) postpones it to the next turn.
    /// `commit`: `Async` in the main loop (a sync commit waits for a group coordinator as
    /// long as none answers: a broker outage stalled the loop, and with it the metrics that
    /// say the broker is down; a failed async commit is logged by the consumer's context and
    /// retried at the next checkpoint), `Sync` for the last one before exit.
    fn checkpoint(
        &mut self,
        consumer: &BaseConsumer<ConsumerCx>,
        commit_mode: CommitMode,
    ) -> anyhow::Result<()> {
        self.last_checkpoint = Instant::now();
        self.flush_all()?;
        if self.metrics.broker_up.get() == 0 {
            tracing::debug!("no broker answers: checkpoint and commit postponed");
            return Ok(());
        }
        match self.out.flush() {
            Ok(()) => {}
            Err(e @ KafkaOutputError::Undelivered(_)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "outputs not delivered yet: checkpoint and commit postponed");
                self.metrics.checkpoint_failures.inc();
                return Ok(());
            }
        }
        self.seq += 1;
        let mut inputs = Vec::new();
        let mut commit = TopicPartitionList::new();
        let mut commits = HashMap::new();
        let mut positions = HashMap::new();
        for ((topic, partition), part) in &self.parts {
            if part.next < 0 {
                continue; // nothing read yet: nothing to commit
            }
            let low = self.aggregate.low_position(&part.id);
            let at = low.unwrap_or(part.next).min(part.next);
            let state = Stage::<TopicExchange<'_>>::snapshot_input(&self.aggregate, &part.id)
                .unwrap_or_else(|| PairAggregator::new(self.config.window).snapshot());
            let meta = commit_meta(&self.instance, self.seq, state.late_before_us);
            commit
                .add_partition_offset(topic, *partition, Offset::Offset(at))
                .context("commit offset")?;
            if let Some(mut e) = commit.find_partition(topic, *partition) {
                e.set_metadata(&meta);
            }
            commits.insert((topic.clone(), *partition), (at, meta));
            positions.insert((topic.clone(), *partition), part.next);
            inputs.push(InputCheckpoint {
                topic: topic.clone(),
                partition: *partition,
                position: part.next,
                commit: at,
                state,
            });
        }
        // restored, not assigned yet: kept as they were until an assignment says where
        // they are read
        for (key, cp) in &self.restored {
            if !self.parts.contains_key(key) {
                positions.insert(key.clone(), cp.position);
                let meta = commit_meta(&self.instance, self.seq, cp.state.late_before_us);
                commits.insert(key.clone(), (cp.commit, meta));
                inputs.push(cp.clone());
            }
        }
        // the archive's files are complete before the checkpoint that covers their windows
        self.out.commit_archive()?;
        if let Some(dir) = &self.checkpoint {
            let cp = RunCheckpoint {
                instance: self.instance.clone(),
                seq: self.seq,
                saved_at_ms: now_ms(),
                aggregate: self.aggregate.counters(),
                judge: match &self.stage2 {
                    Stage2::Local(judge) => Some(Stage::<KafkaOutputs>::snapshot(judge.as_ref())),
                    Stage2::Topic(_) => None,
                },
                inputs,
            };
            match dir.save(&cp) {
                Ok(saved) => {
                    self.metrics
                        .checkpoint_duration
                        .set(saved.took.as_secs_f64());
                    self.metrics.checkpoint_bytes.set(saved.bytes as i64);
                    tracing::debug!(seq = self.seq, bytes = saved.bytes, took = ?saved.took, "checkpoint saved");
                }
                Err(e) => {
                    tracing::error!(error = %e, "checkpoint not saved: offsets not committed");
                    self.metrics.checkpoint_failures.inc();
                    return Ok(());
                }
            }
        }
        // stage 2 scaled out: each owned partition's state to the state topic, delivered
        // before its offset is committed
        if let Stage2::Topic(t) = &self.stage2 {
            for (&partition, (judge, next)) in &t.judges {
                if *next < 0 {
                    continue;
                }
                let state = repartition::encode_named(&PartitionState {
                    position: *next,
                    judge: Stage::<KafkaOutputs>::snapshot(judge),
                });
                self.out.send(
                    &t.state_topic,
                    Some(partition.to_string().as_bytes()),
                    Some(partition),
                    &state,
                    None,
                )?;
                commit
                    .add_partition_offset(&t.topic, partition, Offset::Offset(*next))
                    .context("commit offset")?;
                commits.insert((t.topic.to_string(), partition), (*next, String::new()));
            }
            if let Err(e) = self.out.flush() {
                tracing::warn!(error = %e, "stage-2 states not delivered yet: offsets not committed");
                self.metrics.checkpoint_failures.inc();
                return Ok(());
            }
        }
        {
            let mut shared = self.shared.lock().expect("rebalance state lock");
            shared.commits = commits;
            shared.checkpointed = positions;
        }
        self.last_saved = Instant::now();
        self.metrics.checkpoint_age.set(0.0);
        if commit.count() > 0
            && let Err(e) = consumer.commit(&commit, commit_mode)
        {
            tracing::warn!(error = %e, "offsets not committed (the checkpoint is saved; retried next time)");
            self.metrics.checkpoint_failures.inc();
        }
        Ok(())
    }

    fn update_metrics(&mut self) {
        self.last_metrics = Instant::now();
        self.out.export_alerting();
        let m = &self.metrics;
        for t in &mut self.topics {
            if t.messages > 0 {
                // messages arrive: a broker answers
                m.broker_up.set(1);
                Metrics::by_topic(&m.messages_in, &t.name, std::mem::take(&mut t.messages));
            }
            if t.records > 0 {
                Metrics::by_topic(&m.records_in, &t.name, std::mem::take(&mut t.records));
            }
        }
        if self.repartition_messages > 0
            && let Stage2::Topic(t) = &self.stage2
        {
            m.broker_up.set(1);
            Metrics::by_topic(
                &m.messages_in,
                &t.topic,
                std::mem::take(&mut self.repartition_messages),
            );
        }
        let mut judges: Vec<&mut Judge> = match &mut self.stage2 {
            Stage2::Local(judge) => vec![judge.as_mut()],
            Stage2::Topic(t) => t.judges.values_mut().map(|(j, _)| j).collect(),
        };
        let (mut windows, mut pairs, mut nodes) = (0, 0, 0);
        let mut watermark: Option<i64> = None;
        for judge in &mut judges {
            let (new, merger) = judge.new_counts();
            m.windows_closed.inc_by(new.windows);
            m.commands.inc_by(new.commands);
            m.alerts.inc_by(new.alerts);
            for (signature, n) in new.findings {
                m.findings
                    .get_or_create(&SignatureLabel { signature })
                    .inc_by(n);
            }
            for (rule, n) in new.rules {
                m.rule_findings.get_or_create(&RuleLabel { rule }).inc_by(n);
            }
            m.rule_errors.inc_by(new.rule_errors);
            m.dropped_partials
                .get_or_create(&KindLabel {
                    kind: "duplicate".into(),
                })
                .inc_by(merger.duplicate_partials);
            m.dropped_partials
                .get_or_create(&KindLabel {
                    kind: "late".into(),
                })
                .inc_by(merger.late_partials);
            m.pair_overflow
                .get_or_create(&KindLabel {
                    kind: "partials".into(),
                })
                .inc_by(merger.overflow_partials);
            let (w, p) = judge.open_state();
            windows += w;
            pairs += p;
            nodes += judge.baselines();
            if let Some(wm) = judge.watermark().filter(|&w| w != i64::MAX) {
                watermark = Some(watermark.map_or(wm, |o| o.min(wm)));
            }
        }
        let a = self.aggregate.counters();
        self.deltas.late.update(&m.late_records, a.late_records);
        self.deltas.records.update(&m.records_aggregated, a.records);
        self.deltas.overflow.update(
            &m.pair_overflow.get_or_create(&KindLabel {
                kind: "records".into(),
            }),
            a.overflow_records,
        );
        let (w1, p1) = self.aggregate.open_state();
        m.state_windows.set((w1 + windows) as i64);
        m.state_pairs.set((p1 + pairs) as i64);
        m.state_nodes.set(nodes as i64);
        m.assigned.set(self.parts.len() as i64);
        let now = now_ms();
        if let Some(wm) = watermark {
            m.watermark_delay
                .set((now as f64 / 1e3 - wm as f64 / 1e6).max(0.0));
        }
        m.checkpoint_age
            .set(self.last_saved.elapsed().as_secs_f64());
        m.turned(now);
    }
}

/// The consumer's fatal error (it can't go on: librdkafka's `rd_kafka_fatal_error`), with
/// what to do about it when known; `static_id`: its `group.instance.id`, if any.
/// Messages to handle before the next look at the clock, after `every` of them took `took`
/// (see [`CLOCK_PERIOD`]).
fn next_clock_every(every: u32, took: Duration) -> u32 {
    if took > CLOCK_PERIOD {
        (every / 2).max(1)
    } else if took < CLOCK_PERIOD / 10 {
        (every * 2).min(CLOCK_EVERY)
    } else {
        every
    }
}

/// A message's headers: name and value (an absent value is empty).
fn message_headers<'m>(
    m: &'m BorrowedMessage<'_>,
) -> impl Iterator<Item = (&'m str, &'m [u8])> + 'm {
    m.headers()
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value.unwrap_or_default()))
}

fn fatal(
    code: rdkafka::types::RDKafkaErrorCode,
    reason: &str,
    static_id: Option<&str>,
) -> anyhow::Error {
    let hint = match (code, static_id) {
        (rdkafka::types::RDKafkaErrorCode::FencedInstanceId, Some(id)) => format!(
            ": another consumer joined the group as {STATIC_ID} {id:?} (two instances share \
             one [checkpoint] dir's instance id, or one {STATIC_ID}); give each its own"
        ),
        _ => String::new(),
    };
    anyhow::anyhow!("the Kafka consumer failed for good ({code}: {reason}){hint}")
}

/// The metadata committed with an offset (see [`CommitMeta`]).
fn commit_meta(instance: &str, seq: u64, late_before_us: i64) -> String {
    serde_json::to_string(&CommitMeta {
        v: 1,
        wm: (late_before_us != i64::MIN).then_some(late_before_us),
        by: instance.to_owned(),
        seq,
    })
    .expect("commit metadata serializes")
}

/// A stage error of the Kafka outputs, whole.
fn lift(e: StageError<KafkaOutputError>) -> anyhow::Error {
    match e {
        StageError::Output(o) => o.into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_of_messages_has_the_clock_read_at_each() {
        // from a busy stretch into 12 messages/s: the clock is read at each message within 8 looks
        let mut every = CLOCK_EVERY;
        let mut looks = 0;
        while every > 1 {
            every = next_clock_every(every, Duration::from_millis(83) * every);
            looks += 1;
        }
        assert_eq!(looks, 8);
        assert_eq!(next_clock_every(1, Duration::from_millis(83)), 1);
        // a busy partition: back to every 256 messages (1 µs each)
        let mut every = 1;
        for _ in 0..8 {
            every = next_clock_every(every, Duration::from_micros(1) * every);
        }
        assert_eq!(every, CLOCK_EVERY);
        // about CLOCK_PERIOD: kept
        assert_eq!(next_clock_every(32, Duration::from_millis(5)), 32);
    }
}
