//! Alerts to pager systems: PagerDuty Events API v2, Prometheus Alertmanager API v2, and a
//! generic webhook (`[[alerting.sinks]]`).
//!
//! ```text
//!   Judge ─▶ Outputs::alert ─▶ Dispatcher::send ──try_send──▶ [bounded queue] ─▶ sink thread
//!                                 (never blocks:                                 POST, timeout,
//!                                  a full queue                                  retries with
//!                                  drops, counted)                               backoff
//! ```
//!
//! Each sink has its own thread, its own bounded queue and its own HTTP client (reqwest): a
//! slow or failing sink never stalls detection, nor another sink. A delivery that fails with a
//! connection error, a timeout, a 429 or a 5xx is tried again after `backoff`, doubled each
//! time (at most a minute), up to `retries` more times; a 4xx other than 429 is not retried
//! (the request is wrong: the response is logged). What was delivered, retried, given up and
//! dropped is counted per sink ([`SinkCounters`]).
//!
//! The dedup key is the incident's (`schemas::Alert::dedup_key`): a trigger and its resolve
//! carry the same key, and pager systems fold the re-sends of a restart into one incident.
//!
//! | sink | request | per alert |
//! |---|---|---|
//! | `pagerduty` | `POST url` (default `https://events.pagerduty.com/v2/enqueue`) | `routing_key`, `event_action` `trigger`/`resolve`, `dedup_key`, `payload` (`summary`, `source`, `severity`, `component`, `group`, `class`, `custom_details`), per PagerDuty's Events API v2 docs |
//! | `alertmanager` | `POST url/api/v2/alerts` | one alert: `labels` (`alertname` = the signature, `dedup_key`, `severity`, `subject`, `source`), `annotations` (`summary`, `finding`), `startsAt`, and on resolve `endsAt`; firing alerts are sent again every `resend-every`, as Alertmanager's API v2 docs ask of clients; when an incident's severity rises, the alert of its severity before (another label set) is ended with the new one's trigger |
//! | `webhook` | `POST url` | the alert's JSON (`schemas/json/alert.schema.json`) |

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use schemas::{Alert, AlertAction};
use serde::Deserialize;
use serde_json::{Value, json};

/// Which pager system a sink talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Prometheus Alertmanager API v2.
    Alertmanager,
    /// The alert's JSON, as is.
    Webhook,
}

/// One `[[alerting.sinks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SinkConfig {
    /// Name in logs and metrics. Default: the kind, with its position when several share it.
    #[serde(default)]
    pub name: Option<String>,
    /// The pager system.
    pub kind: SinkKind,
    /// Where to send: PagerDuty's enqueue URL (default
    /// `https://events.pagerduty.com/v2/enqueue`), Alertmanager's base URL
    /// (`http://127.0.0.1:9093`), or the webhook's URL.
    #[serde(default)]
    pub url: Option<String>,
    /// PagerDuty: a file holding the integration's routing key.
    #[serde(default)]
    pub routing_key_file: Option<std::path::PathBuf>,
    /// PagerDuty: an environment variable holding it.
    #[serde(default)]
    pub routing_key_env: Option<String>,
    /// PagerDuty: `payload.source`, where the incident is. Default `graywatch`.
    #[serde(default)]
    pub source: Option<String>,
    /// How long one request may take. Default 5 s.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    /// Tries after the first. Default 5.
    #[serde(default = "five")]
    pub retries: u32,
    /// Wait before the first retry, doubled each time (at most a minute). Default 1 s.
    #[serde(default = "one_second", with = "humantime_serde")]
    pub backoff: Duration,
    /// Alerts waiting for this sink at most (count, >= 1); more are dropped, counted.
    /// Default 1024.
    #[serde(default = "queue")]
    pub queue: usize,
    /// Alertmanager: firing alerts are sent again this often (below its `resolve_timeout`,
    /// 5 min by default). Default 1 min.
    #[serde(default = "one_minute", with = "humantime_serde")]
    pub resend_every: Duration,
    /// Only alerts of at least this severity (`warning`: all, the default; `critical`): e.g.
    /// a pager that pages for critical incidents only, beside a webhook or a chat that gets
    /// all. An incident that opened as a warning reaches it when it turns critical (its
    /// trigger again, with the new severity), and its resolve then too.
    #[serde(default)]
    pub min_severity: Option<schemas::Severity>,
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn five() -> u32 {
    5
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn queue() -> usize {
    1024
}
fn one_minute() -> Duration {
    Duration::from_secs(60)
}

/// `[alerting]`: where alerts go besides the outputs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertingConfig {
    /// The sinks; none by default.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

/// A sink, validated: how to turn an alert into a request.
#[derive(Debug, Clone)]
struct Sink {
    name: String,
    kind: SinkKind,
    url: String,
    routing_key: Option<String>,
    source: String,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    queue: usize,
    resend_every: Duration,
    min_severity: schemas::Severity,
}

impl AlertingConfig {
    /// Checks every sink (reading PagerDuty routing keys), without starting anything.
    ///
    /// # Errors
    /// See [`Dispatcher::start`].
    pub fn check(&self) -> anyhow::Result<()> {
        self.sinks().map(|_| ())
    }

    /// Validates every sink (reading PagerDuty routing keys).
    ///
    /// # Errors
    /// Naming `alerting.sinks[i].<key>`: a missing or unreadable URL or routing key, a zero
    /// timeout or queue.
    fn sinks(&self) -> anyhow::Result<Vec<Sink>> {
        let mut out = Vec::new();
        for (i, s) in self.sinks.iter().enumerate() {
            let key = |k: &str| format!("[alerting] sinks[{i}].{k}");
            let kind = match s.kind {
                SinkKind::Pagerduty => "pagerduty",
                SinkKind::Alertmanager => "alertmanager",
                SinkKind::Webhook => "webhook",
            };
            let url = match (s.kind, &s.url) {
                (_, Some(u)) => u.clone(),
                (SinkKind::Pagerduty, None) => "https://events.pagerduty.com/v2/enqueue".into(),
                (_, None) => {
                    anyhow::bail!("{}: missing (where does the {kind} sink send?)", key("url"))
                }
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!(
                    "{} = {url:?}: must be an http:// or https:// URL",
                    key("url")
                );
            }
            let url = if s.kind == SinkKind::Alertmanager {
                format!("{}/api/v2/alerts", url.trim_end_matches('/'))
            } else {
                url
            };
            let routing_key = match (s.kind, &s.routing_key_file, &s.routing_key_env) {
                (SinkKind::Pagerduty, Some(f), None) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| {
                            anyhow::anyhow!("{} {}: {e}", key("routing-key-file"), f.display())
                        })?
                        .trim()
                        .to_owned(),
                ),
                (SinkKind::Pagerduty, None, Some(v)) => Some(
                    std::env::var(v)
                        .map_err(|e| anyhow::anyhow!("{} {v}: {e}", key("routing-key-env")))?
                        .trim()
                        .to_owned(),
                ),
                (SinkKind::Pagerduty, None, None) => anyhow::bail!(
                    "{}: a PagerDuty sink needs routing-key-file or routing-key-env",
                    key("routing-key-file")
                ),
                (SinkKind::Pagerduty, Some(_), Some(_)) => anyhow::bail!(
                    "{}: give the routing key one way only",
                    key("routing-key-env")
                ),
                (_, None, None) => None,
                (_, _, _) => {
                    anyhow::bail!("{}: only for a pagerduty sink", key("routing-key-file"))
                }
            };
            if routing_key.as_deref() == Some("") {
                anyhow::bail!("{}: the routing key is empty", key("routing-key-file"));
            }
            if s.timeout.is_zero() {
                anyhow::bail!("{} = 0s: must be positive", key("timeout"));
            }
            if s.queue == 0 {
                anyhow::bail!("{} = 0: must be at least 1", key("queue"));
            }
            if s.resend_every.is_zero() {
                anyhow::bail!("{} = 0s: must be positive", key("resend-every"));
            }
            let same_kind = self.sinks.iter().filter(|o| o.kind == s.kind).count();
            let name = s.name.clone().unwrap_or_else(|| {
                if same_kind > 1 {
                    format!("{kind}-{i}")
                } else {
                    kind.to_owned()
                }
            });
            out.push(Sink {
                name,
                kind: s.kind,
                url,
                routing_key,
                source: s.source.clone().unwrap_or_else(|| "graywatch".into()),
                timeout: s.timeout,
                retries: s.retries,
                backoff: s.backoff,
                queue: s.queue,
                resend_every: s.resend_every,
                min_severity: s.min_severity.unwrap_or(schemas::Severity::Warning),
            });
        }
        Ok(out)
    }
}

/// What one sink did, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Requests answered 2xx (a firing alert sent again counts again).
    pub delivered: u64,
    /// Tries after a failed one.
    pub retries: u64,
    /// Alerts given up: every try failed, or a 4xx.
    pub failed: u64,
    /// Alerts dropped: the sink's queue was full.
    pub dropped: u64,
}

struct Worker {
    name: String,
    min_severity: schemas::Severity,
    queue: SyncSender<Job>,
    counters: Arc<Mutex<SinkCounters>>,
    thread: Option<JoinHandle<()>>,
}

/// Sends alerts to every configured sink, each on its own thread behind a bounded queue.
pub struct Dispatcher {
    workers: Vec<Worker>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.workers.iter().map(|w| w.name.as_str()).collect();
        f.debug_struct("Dispatcher").field("sinks", &names).finish()
    }
}

impl Dispatcher {
    /// Starts a thread per sink of `config`; `None` when it has none.
    ///
    /// # Errors
    /// A sink that does not validate (named), or an HTTP client that can't be built.
    pub fn start(config: &AlertingConfig) -> anyhow::Result<Option<Self>> {
        let sinks = config.sinks()?;
        if sinks.is_empty() {
            return Ok(None);
        }
        let mut workers = Vec::new();
        for sink in sinks {
            let (queue, alerts) = std::sync::mpsc::sync_channel(sink.queue);
            let counters = Arc::new(Mutex::new(SinkCounters::default()));
            let client = reqwest::blocking::Client::builder()
                .timeout(sink.timeout)
                .connect_timeout(sink.timeout)
                .build()?;
            let name = sink.name.clone();
            let min_severity = sink.min_severity;
            let c = Arc::clone(&counters);
            let thread = std::thread::Builder::new()
                .name(format!("graywatch-alerts-{name}"))
                .spawn(move || deliver_all(&sink, &client, &alerts, &c))?;
            workers.push(Worker {
                name,
                min_severity,
                queue,
                counters,
                thread: Some(thread),
            });
        }
        Ok(Some(Dispatcher { workers }))
    }

    /// Hands `alert` to every sink; never blocks (a full queue drops it, counted and logged).
    pub fn send(&self, alert: &Alert) {
        self.hand(alert, Job::Deliver);
    }

    /// Tells the sinks that `alerts` (triggers) fired before a restart and still fire: an
    /// Alertmanager sink takes them into the alerts it re-sends (Alertmanager would resolve
    /// them after its `resolve_timeout` otherwise); PagerDuty and webhooks got the trigger
    /// already and are told nothing. Never blocks, as [`Dispatcher::send`].
    pub fn resume(&self, alerts: &[Alert]) {
        for a in alerts {
            self.hand(a, Job::StillFiring);
        }
    }

    /// Tells the sinks that `alerts` (triggers) are another instance's now (`[scale-out]`: a
    /// stage-2 partition moved away, its open incidents with it): an Alertmanager sink stops
    /// re-sending them, without resolving them (the new owner re-sends them, and resolves them
    /// when their incident closes; re-sent from here too, a resolved alert would fire again).
    /// Never blocks, as [`Dispatcher::send`].
    pub fn hand_over(&self, alerts: &[Alert]) {
        for a in alerts {
            self.hand(a, Job::HandedOver);
        }
    }

    fn hand(&self, alert: &Alert, job: fn(Alert) -> Job) {
        for w in self
            .workers
            .iter()
            .filter(|w| alert.severity >= w.min_severity)
        {
            match w.queue.try_send(job(alert.clone())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    let mut c = w.counters.lock().expect("counters lock");
                    c.dropped += 1;
                    tracing::warn!(sink = %w.name, dedup_key = %alert.dedup_key, dropped = c.dropped, "alert sink queue full: alert dropped");
                }
                Err(TrySendError::Disconnected(_)) => {
                    tracing::error!(sink = %w.name, "alert sink stopped: alert dropped");
                    w.counters.lock().expect("counters lock").dropped += 1;
                }
            }
        }
    }

    /// Every sink's counters, by name.
    pub fn counters(&self) -> BTreeMap<String, SinkCounters> {
        self.workers
            .iter()
            .map(|w| (w.name.clone(), *w.counters.lock().expect("counters lock")))
            .collect()
    }

    /// Closes the queues and waits for each sink to finish what it holds, at most until
    /// `deadline` (a sink still busy then is left behind: the process is ending).
    pub fn close(mut self, deadline: Instant) -> BTreeMap<String, SinkCounters> {
        let counters = self.counters_handles();
        for w in &mut self.workers {
            let (closed, _) = std::sync::mpsc::sync_channel(1);
            drop(std::mem::replace(&mut w.queue, closed));
        }
        for w in &mut self.workers {
            let Some(t) = w.thread.take() else { continue };
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!(sink = %w.name, "alert sink still busy at exit: its last alerts may not be delivered");
            }
        }
        counters
            .into_iter()
            .map(|(n, c)| (n, *c.lock().expect("counters lock")))
            .collect()
    }

    fn counters_handles(&self) -> Vec<(String, Arc<Mutex<SinkCounters>>)> {
        self.workers
            .iter()
            .map(|w| (w.name.clone(), Arc::clone(&w.counters)))
            .collect()
    }
}

/// RFC 3339 (UTC, µs) of `us` µs since the epoch.
fn rfc3339(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_micros(us.max(0).unsigned_abs());
    humantime::format_rfc3339_micros(t).to_string()
}

/// The signature and subject key of a dedup key (`<signature>/<subject key>`; a rule's
/// `rule/<name>/<subject key>` keeps the rule's name with the signature).
fn split_key(key: &str) -> (&str, &str) {
    let cut = match key.strip_prefix("rule/") {
        Some(rest) => rest.find('/').map(|i| i + "rule/".len()),
        None => key.find('/'),
    };
    match cut {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => (key, ""),
    }
}

/// The request body for `alert` on `sink`; Alertmanager's `started_us` is the incident's
/// trigger time.
fn body(sink: &Sink, alert: &Alert, started_us: i64) -> Value {
    let (signature, subject) = split_key(&alert.dedup_key);
    let severity = match alert.severity {
        schemas::Severity::Critical => "critical",
        schemas::Severity::Warning => "warning",
    };
    match sink.kind {
        SinkKind::Webhook => serde_json::to_value(alert).expect("an alert serializes"),
        SinkKind::Pagerduty => {
            let action = match alert.action {
                AlertAction::Trigger => "trigger",
                AlertAction::Resolve => "resolve",
            };
            let mut summary = alert.summary.clone();
            if summary.len() > 1024 {
                let mut cut = 1021;
                while !summary.is_char_boundary(cut) {
                    cut -= 1;
                }
                summary.truncate(cut);
                summary.push_str("...");
            }
            json!({
                "routing_key": sink.routing_key,
                "event_action": action,
                "dedup_key": alert.dedup_key,
                "payload": {
                    "summary": summary,
                    "source": sink.source,
                    "severity": severity,
                    "timestamp": rfc3339(alert.at_us),
                    "component": subject.rsplit('/').next().unwrap_or(subject),
                    "group": subject,
                    "class": signature,
                    "custom_details": {
                        "finding": alert.finding,
                        "dedup_key": alert.dedup_key,
                        "at_us": alert.at_us,
                    },
                },
            })
        }
        SinkKind::Alertmanager => {
            let mut a = json!({
                "labels": {
                    "alertname": signature,
                    "dedup_key": alert.dedup_key,
                    "severity": severity,
                    "subject": subject,
                    "source": "graywatch",
                },
                "annotations": {
                    "summary": alert.summary,
                    "finding": alert.finding,
                },
                "startsAt": rfc3339(started_us),
            });
            if alert.action == AlertAction::Resolve {
                a["endsAt"] = json!(rfc3339(alert.at_us));
            }
            json!([a])
        }
    }
}

/// One alert to one sink, with its retries. Returns whether it was delivered.
fn deliver(
    sink: &Sink,
    client: &reqwest::blocking::Client,
    body: &Value,
    c: &Mutex<SinkCounters>,
    what: &str,
) -> bool {
    let mut wait = sink.backoff;
    for attempt in 0..=sink.retries {
        if attempt > 0 {
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(60));
            c.lock().expect("counters lock").retries += 1;
        }
        let request = client
            .post(&sink.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match request.send() {
            Ok(r) if r.status().is_success() => {
                c.lock().expect("counters lock").delivered += 1;
                return true;
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                tracing::warn!(sink = %sink.name, status = %r.status(), attempt, "{what}: not taken, will retry");
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().unwrap_or_default();
                tracing::error!(sink = %sink.name, %status, response = %text.trim(), "{what}: refused, not retried");
                c.lock().expect("counters lock").failed += 1;
                return false;
            }
            Err(e) => {
                tracing::warn!(sink = %sink.name, error = %e, attempt, "{what}: not delivered, will retry");
            }
        }
    }
    tracing::error!(sink = %sink.name, tries = sink.retries + 1, "{what}: given up");
    c.lock().expect("counters lock").failed += 1;
    false
}

/// What a sink's thread is handed.
#[derive(Debug)]
enum Job {
    /// Deliver it.
    Deliver(Alert),
    /// A trigger delivered before a restart: Alertmanager keeps re-sending it.
    StillFiring(Alert),
    /// Another instance's incident now: Alertmanager stops re-sending it (not resolved).
    HandedOver(Alert),
}

/// A sink's thread: delivers what comes until the queue closes; for Alertmanager, sends the
/// firing alerts again every `resend_every`.
fn deliver_all(
    sink: &Sink,
    client: &reqwest::blocking::Client,
    alerts: &Receiver<Job>,
    c: &Mutex<SinkCounters>,
) {
    // Alertmanager: firing alerts by dedup key, with their trigger time
    let mut firing: BTreeMap<String, (Alert, i64)> = BTreeMap::new();
    let mut last_resend = Instant::now();
    loop {
        let next = if sink.kind == SinkKind::Alertmanager && !firing.is_empty() {
            let left = sink.resend_every.saturating_sub(last_resend.elapsed());
            alerts.recv_timeout(left)
        } else {
            alerts.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(Job::StillFiring(alert)) => {
                if sink.kind == SinkKind::Alertmanager {
                    let started = alert.at_us;
                    firing.insert(alert.dedup_key.clone(), (alert, started));
                }
            }
            Ok(Job::HandedOver(alert)) => {
                firing.remove(&alert.dedup_key);
            }
            Ok(Job::Deliver(alert)) => {
                let started = match alert.action {
                    AlertAction::Trigger => alert.at_us,
                    AlertAction::Resolve => {
                        firing.get(&alert.dedup_key).map_or(alert.at_us, |f| f.1)
                    }
                };
                let action = match alert.action {
                    AlertAction::Trigger => "trigger",
                    AlertAction::Resolve => "resolve",
                };
                // Alertmanager tells alerts apart by their labels: an incident that turned
                // critical fires a second alert, and the one of its severity before ends now
                // (not at Alertmanager's resolve_timeout)
                if sink.kind == SinkKind::Alertmanager
                    && alert.action == AlertAction::Trigger
                    && let Some((before, before_started)) = firing.get(&alert.dedup_key)
                    && before.severity != alert.severity
                {
                    let ended = Alert {
                        action: AlertAction::Resolve,
                        at_us: alert.at_us,
                        ..before.clone()
                    };
                    let what = format!("resolve {} (its severity before)", alert.dedup_key);
                    deliver(sink, client, &body(sink, &ended, *before_started), c, &what);
                }
                let what = format!("{action} {}", alert.dedup_key);
                deliver(sink, client, &body(sink, &alert, started), c, &what);
                if sink.kind == SinkKind::Alertmanager {
                    match alert.action {
                        AlertAction::Trigger => {
                            firing.insert(alert.dedup_key.clone(), (alert, started));
                        }
                        AlertAction::Resolve => {
                            firing.remove(&alert.dedup_key);
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                last_resend = Instant::now();
                for (alert, started) in firing.values() {
                    let what = format!("firing {} (sent again)", alert.dedup_key);
                    deliver(sink, client, &body(sink, alert, *started), c, &what);
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keys_split_into_signature_and_subject() {
        assert_eq!(
            split_key("black-hole/node/catalog"),
            ("black-hole", "node/catalog")
        );
        assert_eq!(
            split_key("rule/slow-pair/pair/web/api"),
            ("rule/slow-pair", "pair/web/api")
        );
        assert_eq!(split_key("landscape"), ("landscape", ""));
    }

    #[test]
    fn timestamps_are_rfc_3339_utc() {
        assert_eq!(
            rfc3339(1_674_982_210_000_000),
            "2023-01-29T08:50:10.000000Z"
        );
    }

    #[test]
    fn sinks_are_validated_naming_the_key() {
        for (text, want) in [
            (
                "[[sinks]]\nkind = \"webhook\"\n",
                "[alerting] sinks[0].url: missing",
            ),
            (
                "[[sinks]]\nkind = \"pagerduty\"\n",
                "a PagerDuty sink needs routing-key-file or routing-key-env",
            ),
            (
                "[[sinks]]\nkind = \"webhook\"\nurl = \"ftp://x\"\n",
                "must be an http:// or https:// URL",
            ),
            (
                "[[sinks]]\nkind = \"webhook\"\nurl = \"http://x\"\nqueue = 0\n",
                "sinks[0].queue = 0",
            ),
            (
                "[[sinks]]\nkind = \"webhook\"\nurl = \"http://x\"\nrouting-key-env = \"K\"\n",
                "only for a pagerduty sink",
            ),
        ] {
            let c: AlertingConfig = toml::from_str(text).unwrap();
            let e = c.sinks().unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let c: AlertingConfig = toml::from_str(
            "[[sinks]]\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093/\"\n",
        )
        .unwrap();
        assert_eq!(
            c.sinks().unwrap()[0].url,
            "http://127.0.0.1:9093/api/v2/alerts"
        );
    }
}
