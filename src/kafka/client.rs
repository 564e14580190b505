//! librdkafka clients: their properties, and the topics graywatch needs.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;

use super::config::Properties;

/// Properties of the consumer: graywatch's defaults, then the user's `[kafka.client]`, then what
/// correctness needs (offsets are committed by graywatch, after a checkpoint, never by
/// librdkafka on its own).
pub fn consumer_config(servers: &str, group: &str, props: &Properties) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        // bounded prefetch: when input outruns processing, lag grows, memory does not
        .set("queued.max.messages.kbytes", "16384")
        // ...and fetching goes on as soon as the queue has room (librdkafka waits 1 s by
        // default, which leaves a consumer that processes slower than it fetches idle most of
        // the time: measured 60 k records/s against 590 k/s with 10 ms, `benches/run.rs`)
        .set("fetch.queue.backoff.ms", "10")
        .set("statistics.interval.ms", "5000");
    for (k, v) in props.all.iter().chain(&props.consumer) {
        c.set(k, v);
    }
    c.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    c
}

/// Properties of the producer: idempotent (no duplicates or reordering on retries), and a
/// message waits for its broker as long as it takes (`message.timeout.ms` 0): an outage slows
/// graywatch down, it loses nothing.
pub fn producer_config(servers: &str, props: &Properties) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.kbytes", "65536");
    for (k, v) in props.all.iter().chain(&props.producer) {
        c.set(k, v);
    }
    c.set("enable.idempotence", "true");
    c
}

/// Properties of the admin client.
pub fn admin_config(servers: &str, props: &Properties) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers);
    for (k, v) in &props.all {
        c.set(k, v);
    }
    c
}

/// Why the topics are not as needed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// An input topic does not exist (the user's: create it, or fix the name).
    #[error("input topic {0:?} does not exist (graywatch creates only the topics it writes)")]
    MissingInput(String),
    /// The brokers could not be asked (external; retrying may help).
    #[error("asking the brokers about topic {topic:?}: {source}")]
    Broker {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic could not be created.
    #[error("creating topic {topic:?}: {code}")]
    Create {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
}

/// The partition count of `topic`, or `None` when it does not exist.
///
/// # Errors
/// [`TopicError::Broker`] when the brokers can't be asked.
pub fn partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, TopicError> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| TopicError::Broker {
            topic: topic.to_owned(),
            source,
        })?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// Creates `topics` (name, partitions, replication, compacted) that do not exist yet.
///
/// # Errors
/// [`TopicError`] for a topic the brokers refuse to create.
pub fn create_missing(
    config: &ClientConfig,
    topics: &[(String, i32, i32, bool)],
    timeout: Duration,
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(|source| TopicError::Broker {
            topic: topics.first().map(|t| t.0.clone()).unwrap_or_default(),
            source,
        })?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, parts, replication, compact)| {
            let t = NewTopic::new(name, *parts, TopicReplication::Fixed(*replication));
            if *compact {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    let results = runtime
        .block_on(admin.create_topics(new.iter(), &opts))
        .map_err(|source| TopicError::Broker {
            topic: topics.first().map(|t| t.0.clone()).unwrap_or_default(),
            source,
        })?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }
    Ok(())
}
