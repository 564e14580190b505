//! A real Kafka broker for the tests: nisshi (Kafka wire protocol, no other service needed),
//! started on a free loopback port per test, in memory or on SQLite (to survive a restart).
//! `.ci/run` installs it; a test that can't start it fails loudly.
//!
//! Also: producing to and reading whole topics with rdkafka. Used by the tests and by
//! `benches/run.rs`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The nisshi binary: `$NISSHI`, else `nisshi` on the PATH, else `~/.cargo/bin/nisshi`.
fn nisshi() -> PathBuf {
    if let Some(p) = std::env::var_os("NISSHI") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nisshi"))
        .find(|p| p.is_file());
    if let Some(p) = on_path {
        return p;
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let cargo = home.join(".cargo/bin/nisshi");
    assert!(
        cargo.is_file(),
        "the Kafka broker nisshi is not installed: run scripts/test (it installs it) or \
         `cargo +nightly install nisshi --locked`"
    );
    cargo
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A broker process.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    storage: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// A broker keeping its data in memory.
    pub fn start() -> Broker {
        Broker::start_with("memory://nisshi/".into(), tempfile::tempdir().unwrap())
    }

    /// A broker keeping its data in a SQLite file (it survives [`Broker::restart`]).
    pub fn start_persistent() -> Broker {
        // a relative path: the broker runs in `dir`
        Broker::start_with("sqlite://broker.db".into(), tempfile::tempdir().unwrap())
    }

    fn start_with(storage: String, dir: tempfile::TempDir) -> Broker {
        let log = dir.path().join("broker.log");
        let mut b = Broker {
            child: None,
            port: free_port(),
            storage,
            log,
            _dir: dir,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(nisshi())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                &self.storage,
                "--group-initial-rebalance-delay",
                "0s",
            ])
            .current_dir(self._dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the Kafka broker nisshi: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the broker did not listen on 127.0.0.1:{} within 30 s:\n{}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        c
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt
            .block_on(admin.create_topics(
                [&NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ))
            .unwrap();
        r[0].as_ref()
            .unwrap_or_else(|e| panic!("creating {topic}: {e:?}"));
    }

    /// A producer (idempotent).
    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        self.client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }

    /// Produces each `(partition, key, value, headers)` to `topic` and waits for delivery.
    pub fn produce(&self, topic: &str, messages: &[Msg]) {
        let p = self.producer();
        send(&p, topic, messages);
        p.flush(Duration::from_secs(30))
            .expect("test messages delivered");
    }

    /// Every message of `topic`, reading until `done(messages)` holds or `timeout` passes.
    pub fn read_until(
        &self,
        topic: &str,
        timeout: Duration,
        done: impl Fn(&[Msg]) -> bool,
    ) -> Vec<Msg> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", "graywatch-tests-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        let deadline = Instant::now() + timeout;
        let partitions = loop {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                Ok(md) => {
                    let n = md
                        .topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                        .map_or(0, |t| t.partitions().len());
                    if n > 0 {
                        break n as i32;
                    }
                }
                Err(e) => eprintln!("metadata of {topic}: {e}"),
            }
            assert!(Instant::now() < deadline, "topic {topic} never appeared");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        while Instant::now() < deadline && !done(&out) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(Msg {
                    partition: Some(m.partition()),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(e)) => eprintln!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends each `(partition, key, value, headers)` to `topic` with `p`, waiting while the
/// producer's queue is full; delivery is the caller's to wait for (`flush`).
pub fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, messages: &[Msg]) {
    for m in messages {
        let mut h = OwnedHeaders::new();
        for (k, v) in &m.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut r: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).payload(&m.value[..]).headers(h);
        if let Some(k) = &m.key {
            r = r.key(k.as_bytes());
        }
        if let Some(part) = m.partition {
            r = r.partition(part);
        }
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

/// A message, produced or read.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    /// Its partition (`None`: the producer's partitioner picks one).
    pub partition: Option<i32>,
    /// Its key.
    pub key: Option<String>,
    /// Its value.
    pub value: Vec<u8>,
    /// Its headers.
    pub headers: Vec<(String, String)>,
}

impl Msg {
    /// A message with `value`, to `partition`.
    pub fn to(partition: i32, value: impl Into<Vec<u8>>) -> Msg {
        Msg {
            partition: Some(partition),
            value: value.into(),
            ..Msg::default()
        }
    }

    /// The value as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.value)))
    }

    /// A header's value: its last, when the message has it more than once.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
