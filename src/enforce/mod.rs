//! Enforcement points: consumers of remediation commands that put them in force.
//!
//! [`Ledger`] is what every enforcement point keeps, free of I/O and clocks: the latest
//! revision of each command it holds, after checking its signature, dropping it on a revoke
//! or at its expiry, and ignoring a message it has already seen (a replayed topic or file sends
//! the same messages again). [`nginx`] renders the commands in force as NGINX config and
//! [`run_nginx`] drives a real NGINX with it; [`render`] shows what the same commands are in
//! Envoy and Istio.

pub mod nginx;
pub mod render;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use actuate::sign::{Keys, Verify, VerifyError};
use anyhow::Context as _;
use schemas::{CommandAction, Mode, RemediationCommand};
use serde::{Deserialize, Serialize};

/// What [`Ledger::offer`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// A new command, or a new revision of one: what is in force may have changed.
    Held,
    /// A revoke: the command is dropped.
    Revoked,
    /// A revision at or below one already seen (or revoked): nothing changes.
    Stale,
    /// Its expiry is already past: nothing changes.
    Expired,
}

/// How many messages met each fate, for logs and summaries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Held (new or renewed).
    pub held: u64,
    /// Revoked.
    pub revoked: u64,
    /// Already seen.
    pub stale: u64,
    /// Expired on arrival, or while held.
    pub expired: u64,
    /// Refused: unsigned, unknown key, or a MAC that does not match.
    pub refused_signature: u64,
    /// Not a command (malformed JSON, a wrong shape).
    pub malformed: u64,
    /// For services this enforcement point does not front.
    pub not_here: u64,
}

/// The commands an enforcement point holds: the latest verified revision of each id, until a
/// revoke or its `expires_at_us`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(skip)]
    keys: Keys,
    held: BTreeMap<String, RemediationCommand>,
    /// Revoked ids: (last revision, expiry µs), kept until the expiry so that a replayed
    /// older message does not bring the command back.
    revoked: BTreeMap<String, (u32, i64)>,
    /// Outcomes so far (not persisted).
    #[serde(skip)]
    pub counts: Counts,
}

impl Ledger {
    /// An empty ledger verifying with `keys`.
    pub fn new(keys: Keys) -> Self {
        Ledger {
            keys,
            ..Ledger::default()
        }
    }

    /// Takes one message at wall-clock time `now_us` (µs since the Unix epoch).
    ///
    /// # Errors
    /// [`VerifyError`]: unsigned, signed with an unknown key, or forged/altered; the message
    /// changes nothing (and is counted).
    pub fn offer(&mut self, c: RemediationCommand, now_us: i64) -> Result<Offer, VerifyError> {
        if let Err(e) = self.keys.verify(&c) {
            self.counts.refused_signature += 1;
            return Err(e);
        }
        let seen = self
            .held
            .get(&c.id)
            .map(|h| h.revision)
            .or_else(|| self.revoked.get(&c.id).map(|r| r.0));
        if seen.is_some_and(|r| c.revision <= r) {
            self.counts.stale += 1;
            return Ok(Offer::Stale);
        }
        if c.action == CommandAction::Revoke {
            // a revoke expires at once; a replayed issue or renew of the command can live
            // until the latest expiry it had, so the tombstone stays until then
            let until = self
                .held
                .remove(&c.id)
                .map_or(i64::MIN, |h| h.expires_at_us)
                .max(c.expires_at_us)
                .max(c.issued_at_us.saturating_add(c.ttl_us))
                .max(now_us);
            self.revoked.insert(c.id.clone(), (c.revision, until));
            self.counts.revoked += 1;
            return Ok(Offer::Revoked);
        }
        if c.expires_at_us <= now_us {
            self.counts.expired += 1;
            return Ok(Offer::Expired);
        }
        self.held.insert(c.id.clone(), c);
        self.counts.held += 1;
        Ok(Offer::Held)
    }

    /// Drops what expires at or before `now_us`; returns the expired ids.
    pub fn expire(&mut self, now_us: i64) -> Vec<String> {
        self.revoked.retain(|_, r| r.1 > now_us);
        let gone: Vec<String> = self
            .held
            .values()
            .filter(|c| c.expires_at_us <= now_us)
            .map(|c| c.id.clone())
            .collect();
        for id in &gone {
            self.held.remove(id);
        }
        self.counts.expired += gone.len() as u64;
        gone
    }

    /// Every held command, in id order (dry-run and proposed ones included).
    pub fn held(&self) -> impl Iterator<Item = &RemediationCommand> {
        self.held.values()
    }

    /// The held commands in enforce mode: what an enforcement point puts in force.
    pub fn in_force(&self) -> Vec<&RemediationCommand> {
        self.held
            .values()
            .filter(|c| c.mode == Mode::Enforce)
            .collect()
    }

    /// Reads a ledger [`Ledger::save`] wrote, verifying each command again with `keys`
    /// (a command whose key was rotated away is dropped, with a warning).
    ///
    /// # Errors
    /// The file exists but can't be read or parsed.
    pub fn load(path: &Path, keys: Keys) -> anyhow::Result<Self> {
        let mut ledger = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Ledger>(&bytes)
                .with_context(|| format!("enforcement state {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ledger::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", path.display()));
            }
        };
        ledger.keys = keys;
        let keys = &ledger.keys;
        ledger.held.retain(|id, c| match keys.verify(c) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%id, "dropped from {}: {e}", path.display());
                false
            }
        });
        Ok(ledger)
    }

    /// Writes the ledger to `path` atomically (a temporary file, then a rename).
    ///
    /// # Errors
    /// The file can't be written.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_atomically(path, &serde_json::to_vec(self)?)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// that a reader sees the old file or the new one, never a part.
///
/// # Errors
/// The directory isn't writable.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::File::open(&temp).and_then(|f| f.sync_all()).ok();
    std::fs::rename(&temp, path).with_context(|| format!("renaming onto {}", path.display()))
}

/// Reads `[ID=]FILE` key arguments: the key is the file's bytes (trailing white space
/// ignored, as graywatch's signer reads it), named `ID`, or the file's stem without one.
///
/// # Errors
/// A file can't be read, or a key is shorter than [`actuate::sign::MIN_KEY_BYTES`].
pub fn read_keys(args: &[String]) -> anyhow::Result<Keys> {
    let mut keys = Keys::new();
    for arg in args {
        let (id, file) = match arg.split_once('=') {
            Some((id, file)) => (id.to_owned(), PathBuf::from(file)),
            None => {
                let file = PathBuf::from(arg);
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (stem, file)
            }
        };
        let raw =
            std::fs::read(&file).with_context(|| format!("--verify-key {}", file.display()))?;
        let key = actuate::sign::key_bytes(raw)
            .map_err(|why| anyhow::anyhow!("--verify-key {}: {why}", file.display()))?;
        keys.insert(id, key);
    }
    Ok(keys)
}

/// `graywatch enforce`.
#[derive(Debug, clap::Subcommand)]
pub enum EnforceCommand {
    /// Put remediation commands in force on an NGINX: rate limits, denials, fail-fast
    /// statuses, concurrency caps and versions out of rotation.
    ///
    /// Reads commands (JSON lines, as `replay --commands` or the commands topic carry them),
    /// verifies each signature, keeps the latest revision of each command until its revoke or
    /// expiry (wall clock), and after each change writes PREFIX/graywatch.conf atomically
    /// (included in nginx.conf's http block; --site says which services it fronts), runs
    /// `nginx -t`, then `nginx -s reload` (and starts NGINX if it is not running). A config
    /// `nginx -t` refuses is taken back and the commands NGINX refuses are left out, each
    /// logged with NGINX's error; the rest applies. What it holds is kept in
    /// PREFIX/graywatch-state.json across restarts; one enforcer per prefix.
    #[command(
        after_help = "Example (commands signed with the key in k1.key: [actuate.signing] key-id = \"k1\",
key-file = \"k1.key\" in graywatch.toml; the NGINX under /etc/nginx includes graywatch.conf and
fronts the services its graywatch-site.toml names):
  openssl rand -hex 32 > k1.key
  graywatch replay -c graywatch.toml --no-windows --commands cmds.jsonl access.log
  graywatch enforce nginx --prefix /etc/nginx --verify-key k1=k1.key --commands cmds.jsonl"
    )]
    Nginx(NginxArgs),
}

/// Arguments of `graywatch enforce nginx`.
#[derive(Debug, clap::Args)]
pub struct NginxArgs {
    /// Commands to read, JSON lines; a file is followed as it grows (like `tail -f`), `-` is
    /// stdin.
    #[arg(long, value_name = "FILE|-", required_unless_present = "kafka")]
    pub commands: Option<PathBuf>,
    /// Read the commands topic of this graywatch config (`[kafka]` bootstrap-servers, client
    /// properties, `[kafka.outputs]` commands) instead.
    #[arg(long, value_name = "CONFIG", conflicts_with = "commands")]
    pub kafka: Option<PathBuf>,
    /// The consumer group with --kafka: each enforcement point needs every command, so each
    /// has its own group. Default: graywatch-enforce-nginx-HOSTNAME.
    #[arg(long, value_name = "ID", requires = "kafka")]
    pub group_id: Option<String>,
    /// NGINX's prefix directory (`nginx -p`): graywatch.conf and graywatch-state.json are
    /// written here.
    #[arg(long, value_name = "DIR")]
    pub prefix: PathBuf,
    /// NGINX's main config (`nginx -c`). Default: PREFIX/nginx.conf.
    #[arg(long, value_name = "FILE")]
    pub conf: Option<PathBuf>,
    /// The services this NGINX fronts (TOML; deploy/nginx/graywatch-site.toml documents it).
    /// Default: PREFIX/graywatch-site.toml.
    #[arg(long, value_name = "FILE")]
    pub site: Option<PathBuf>,
    /// A key to verify signatures with: the file's bytes, named ID (the key id commands
    /// carry) or the file's stem. Repeat it to accept several keys while they rotate.
    #[arg(long, value_name = "[ID=]FILE", required = true)]
    pub verify_key: Vec<String>,
    /// The nginx binary.
    #[arg(long, value_name = "PATH", default_value = "nginx")]
    pub nginx: PathBuf,
    /// Apply what the input holds, then exit (no following, no expiry timers; with
    /// --commands only).
    #[arg(long, requires = "commands")]
    pub once: bool,
}

/// One message and where it came from (for errors: `FILE:LINE`, `topic/partition@offset`).
struct Message {
    bytes: Vec<u8>,
    at: String,
    offset: Option<(String, i32, i64)>,
}

/// Reads lines of `path` (`-`: stdin) on a thread; follows a file as it grows unless `once`,
/// from its start again when it is truncated or replaced (a rotation), like `tail -F`.
fn read_lines(path: PathBuf, once: bool, tx: mpsc::SyncSender<Option<Message>>) {
    use std::os::unix::fs::MetadataExt as _;
    std::thread::spawn(move || {
        let name = path.display().to_string();
        let send = |bytes: Vec<u8>, number: u64| {
            let at = format!("{name}:{number}");
            tx.send(Some(Message {
                bytes,
                at,
                offset: None,
            }))
            .is_ok()
        };
        let result = (|| -> std::io::Result<()> {
            let open = || -> std::io::Result<(Box<dyn BufRead>, u64)> {
                let file = std::fs::File::open(&path)?;
                let inode = file.metadata()?.ino();
                Ok((Box::new(std::io::BufReader::new(file)), inode))
            };
            let (mut reader, mut inode): (Box<dyn BufRead>, u64) = if name == "-" {
                (Box::new(std::io::stdin().lock()), 0)
            } else {
                open()?
            };
            let follow = !once && name != "-";
            let (mut line, mut number, mut partial, mut read) =
                (Vec::new(), 0u64, Vec::new(), 0u64);
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                read += n as u64;
                if n == 0 || !line.ends_with(b"\n") {
                    // the end for now: a line without its newline is still being written
                    partial.extend_from_slice(&line);
                    if !follow {
                        if !partial.is_empty() {
                            send(std::mem::take(&mut partial), number + 1);
                        }
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    let now = std::fs::metadata(&path);
                    let rotated = now
                        .as_ref()
                        .is_ok_and(|m| m.ino() != inode || m.len() < read);
                    if rotated {
                        tracing::warn!(
                            "{name} was truncated or replaced: reading it from its start"
                        );
                        (reader, inode) = open()?;
                        (number, read) = (0, 0);
                        partial.clear();
                    }
                    continue;
                }
                number += 1;
                partial.extend_from_slice(&line);
                if !send(std::mem::take(&mut partial), number) {
                    return Ok(());
                }
            }
        })();
        if let Err(e) = result {
            tracing::error!("reading {name}: {e}");
        }
        let _ = tx.send(None);
    });
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Drives one NGINX: writes its graywatch.conf, tests and reloads it.
struct Nginx {
    bin: PathBuf,
    prefix: PathBuf,
    conf: PathBuf,
    file: PathBuf,
}

impl Nginx {
    fn run(&self, what: &[&str]) -> anyhow::Result<()> {
        let out = Process::new(&self.bin)
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(&self.conf)
            .args(what)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            anyhow::bail!(
                "`nginx {}` failed ({}): {}",
                what.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        }
    }

    /// Writes `text` as graywatch.conf and has `nginx -t` check the whole config; on a
    /// refusal the previous file is put back.
    fn check(&self, text: &str) -> anyhow::Result<()> {
        let before = std::fs::read(&self.file).ok();
        write_atomically(&self.file, text.as_bytes())?;
        if let Err(e) = self.run(&["-t", "-q"]) {
            match &before {
                Some(old) => write_atomically(&self.file, old)?,
                None => std::fs::remove_file(&self.file)?,
            }
            return Err(e);
        }
        Ok(())
    }

    /// Has `nginx -t` check the whole config with `text` as graywatch.conf, then puts the
    /// file back as it was, whatever the answer.
    fn probe(&self, text: &str) -> anyhow::Result<()> {
        let before = std::fs::read(&self.file).ok();
        let checked = self.check(text);
        if checked.is_ok() {
            match &before {
                Some(old) => write_atomically(&self.file, old)?,
                None => std::fs::remove_file(&self.file)?,
            }
        }
        checked
    }

    /// Has NGINX load its config: a reload, or a start when it does not run.
    fn reload(&self) -> anyhow::Result<()> {
        if self.running() {
            self.run(&["-s", "reload"])
        } else {
            tracing::info!("NGINX is not running: starting it");
            self.run(&[])
        }
    }

    /// Whether the master process of this prefix runs: its pid file names a live process.
    fn running(&self) -> bool {
        let pid = std::fs::read_to_string(self.prefix.join("nginx.pid"))
            .or_else(|_| std::fs::read_to_string(self.prefix.join("logs/nginx.pid")));
        pid.ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    }
}

/// `graywatch enforce`.
///
/// # Errors
/// A bad argument, site or key; the input can't be read; NGINX can't be run.
pub fn main(command: EnforceCommand) -> anyhow::Result<()> {
    match command {
        EnforceCommand::Nginx(args) => run_nginx(args),
    }
}

/// `graywatch enforce nginx`: see [`EnforceCommand::Nginx`].
///
/// # Errors
/// A bad argument, site or key; the input or the Kafka config can't be read; the state
/// can't be written. A config `nginx -t` refuses is logged, not returned.
pub fn run_nginx(args: NginxArgs) -> anyhow::Result<()> {
    let keys = read_keys(&args.verify_key)?;
    let site_path = args
        .site
        .clone()
        .unwrap_or_else(|| args.prefix.join("graywatch-site.toml"));
    let site = nginx::Site::load(&site_path)?;
    let nginx = Nginx {
        bin: args.nginx.clone(),
        prefix: args.prefix.clone(),
        conf: args
            .conf
            .clone()
            .unwrap_or_else(|| args.prefix.join("nginx.conf")),
        file: args.prefix.join("graywatch.conf"),
    };
    // one enforcer per prefix: a second would overwrite the first's config and state
    let lock_path = args.prefix.join("graywatch.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        anyhow::bail!(
            "another `graywatch enforce nginx` manages {} (it holds {})",
            args.prefix.display(),
            lock_path.display()
        );
    }
    // the site's caller variables must be ones NGINX knows: every config names them (an
    // unused `map`), so `nginx -t` says so now, not at the first command that uses them; the
    // probe leaves graywatch.conf as it was (what serves now is not replaced by an empty one)
    if let Err(e) = nginx.probe(&nginx::render(&site, &[]).text) {
        let why = format!("{e:#}");
        let site_variables = [
            Some(site.caller.as_str()),
            site.caller_zone.as_deref(),
            site.caller_tier.as_deref(),
        ];
        let named = site_variables.iter().flatten().find(|v| {
            why.contains(&format!(
                "unknown \"{}\" variable",
                v.trim_start_matches('$')
            ))
        });
        if let Some(variable) = named {
            anyhow::bail!(
                "{}: NGINX does not know the variable {variable} (caller, caller-zone or \
                 caller-tier): {why}",
                site_path.display()
            );
        }
        tracing::warn!(
            "nginx -t refuses the config before any command (not the site's variables): {why}"
        );
    }
    let state = args.prefix.join("graywatch-state.json");
    let mut ledger = Ledger::load(&state, keys)?;
    let (tx, rx) = mpsc::sync_channel::<Option<Message>>(1024);
    let mut kafka = None;
    match (&args.commands, &args.kafka) {
        (Some(path), _) => read_lines(path.clone(), args.once, tx),
        (None, Some(config)) => kafka = Some(KafkaCommands::new(config, args.group_id.clone())?),
        (None, None) => unreachable!("clap requires --commands or --kafka"),
    }
    let mut applied = Applied::default();
    let mut last_try = std::time::Instant::now();
    let mut changed = true; // the first pass writes what the saved state holds
    let mut pending_offsets = BTreeMap::new();
    let mut ended = false;
    loop {
        // take what is there (up to a batch), waiting a little when nothing is
        let mut messages = Vec::new();
        let wait = Duration::from_millis(200);
        if let Some(k) = &mut kafka {
            k.poll(wait, &mut messages);
        } else if !ended {
            match rx.recv_timeout(wait) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => ended = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            while messages.len() < 1024 {
                match rx.try_recv() {
                    Ok(Some(m)) => messages.push(m),
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
        } else {
            std::thread::sleep(wait);
        }
        let now = now_us();
        for m in messages {
            changed |= take(&mut ledger, &site, &m, now);
            if let Some((topic, partition, offset)) = m.offset {
                pending_offsets.insert((topic, partition), offset);
            }
        }
        for id in ledger.expire(now) {
            tracing::info!(%id, "expired");
            changed = true;
        }
        // a change, a failed one to retry (every 5 s), or a config file someone removed
        let retry = !applied.ok && last_try.elapsed() >= Duration::from_secs(5);
        if changed || retry || !nginx.file.exists() {
            changed = false;
            last_try = std::time::Instant::now();
            apply(&nginx, &site, &ledger, &mut applied);
            ledger.save(&state)?;
        }
        if let Some(k) = &kafka {
            k.commit(&mut pending_offsets);
        }
        if ended && args.once {
            let c = ledger.counts;
            eprintln!(
                "graywatch enforce nginx: {} held, {} revoked, {} stale, {} expired, {} refused (signature), {} malformed, {} not for this site; {} in force",
                c.held,
                c.revoked,
                c.stale,
                c.expired,
                c.refused_signature,
                c.malformed,
                c.not_here,
                applied.good.len()
            );
            anyhow::ensure!(
                applied.ok,
                "the last change is not serving (see the errors above)"
            );
            return Ok(());
        }
    }
}

/// Parses, checks and offers one message; whether what is held changed.
fn take(ledger: &mut Ledger, site: &nginx::Site, m: &Message, now: i64) -> bool {
    let text = String::from_utf8_lossy(&m.bytes);
    if text.trim().is_empty() {
        return false;
    }
    let c = match serde_json::from_str::<RemediationCommand>(&text) {
        Ok(c) => c,
        Err(e) => {
            ledger.counts.malformed += 1;
            tracing::error!(at = %m.at, "not a remediation command: {e}");
            return false;
        }
    };
    if !site.concerns(&c) {
        ledger.counts.not_here += 1;
        tracing::debug!(at = %m.at, id = %c.id, "not for this site");
        return false;
    }
    let (id, revision, mode) = (c.id.clone(), c.revision, c.mode);
    match ledger.offer(c, now) {
        Err(e) => {
            tracing::warn!(at = %m.at, "refused: {e}");
            false
        }
        Ok(Offer::Held) => {
            tracing::info!(at = %m.at, %id, revision, mode = mode.as_str(), "held");
            true
        }
        Ok(Offer::Revoked) => {
            tracing::info!(at = %m.at, %id, "revoked");
            true
        }
        Ok(Offer::Stale) => false,
        Ok(Offer::Expired) => {
            tracing::info!(at = %m.at, %id, "expired on arrival");
            false
        }
    }
}

/// What NGINX has accepted: the (id, revision) of each command in force there, and the ones
/// its `nginx -t` refused (left out until a new revision comes).
#[derive(Debug, Default)]
struct Applied {
    good: BTreeMap<String, u32>,
    bad: BTreeMap<String, u32>,
    /// Whether the last change is serving.
    ok: bool,
}

/// Renders what `ledger` holds in force and has NGINX serve it. When `nginx -t` refuses the
/// whole, the commands it took before are kept and each new one is tried on top of them
/// alone: one that NGINX refuses is left out (logged with NGINX's error), the others apply.
/// When it refuses even what it took before (its own config broke), nothing changes.
fn apply(nginx: &Nginx, site: &nginx::Site, ledger: &Ledger, state: &mut Applied) {
    for c in ledger.held().filter(|c| c.mode != Mode::Enforce) {
        tracing::info!(id = %c.id, mode = c.mode.as_str(), "held, not enforced");
    }
    let candidates: Vec<&RemediationCommand> = ledger
        .in_force()
        .into_iter()
        .filter(|c| state.bad.get(&c.id) != Some(&c.revision))
        .collect();
    state.bad.retain(|id, _| ledger.held.contains_key(id));
    let full = nginx::render(site, &candidates);
    for (id, why) in &full.refused {
        tracing::error!(%id, "not expressible in NGINX: {why}");
    }
    for (id, how) in &full.loosened {
        tracing::warn!(%id, "applied less strictly than commanded: {how}");
    }
    let mut chosen: Vec<&RemediationCommand> = candidates
        .iter()
        .copied()
        .filter(|c| full.applied.contains(&c.id))
        .collect();
    let mut text = full.text;
    if let Err(e) = nginx.check(&text) {
        tracing::warn!(
            "nginx -t refused the new config ({e:#}); trying the new commands one by one"
        );
        let (mut base, fresh): (Vec<&RemediationCommand>, Vec<&RemediationCommand>) = chosen
            .into_iter()
            .partition(|c| state.good.get(&c.id) == Some(&c.revision));
        text = nginx::render(site, &base).text;
        if let Err(e) = nginx.check(&text) {
            tracing::error!(
                "NGINX config not applied: nginx -t refuses even what it took before: {e:#}; graywatch.conf is back to the last config NGINX accepted"
            );
            state.ok = false;
            return;
        }
        for c in fresh {
            base.push(c);
            let trial = nginx::render(site, &base).text;
            match nginx.check(&trial) {
                Ok(()) => text = trial,
                Err(e) => {
                    base.pop();
                    tracing::error!(id = %c.id, revision = c.revision, "left out: NGINX refuses its config: {e:#}");
                    state.bad.insert(c.id.clone(), c.revision);
                }
            }
        }
        if let Err(e) = nginx.check(&text) {
            tracing::error!("NGINX config not applied: {e:#}");
            state.ok = false;
            return;
        }
        chosen = base;
    }
    match nginx.reload() {
        Ok(()) => {
            state.good = chosen.iter().map(|c| (c.id.clone(), c.revision)).collect();
            state.ok = true;
            tracing::info!(
                in_force = chosen.len(),
                "NGINX config applied ({})",
                nginx.file.display()
            );
        }
        Err(e) => {
            tracing::error!("NGINX config written but not loaded: {e:#}");
            state.ok = false;
        }
    }
}

/// The commands topic through a consumer group (`--kafka`): offsets are committed after
/// what they carried is saved in the state file.
struct KafkaCommands {
    consumer: rdkafka::consumer::BaseConsumer,
}

impl KafkaCommands {
    fn new(path: &Path, group: Option<String>) -> anyhow::Result<Self> {
        use rdkafka::consumer::Consumer as _;
        let config = crate::config::Config::load(Some(path))?;
        let Some(k) = &config.kafka else {
            anyhow::bail!("{}: no [kafka] section", path.display());
        };
        let (props, _) = k
            .validate(|name| std::env::var(name).ok())
            .with_context(|| format!("config {}", path.display()))?;
        let group = group.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("graywatch-enforce-nginx-{}", host.trim())
        });
        let consumer: rdkafka::consumer::BaseConsumer =
            crate::kafka::client::consumer_config(&k.bootstrap_servers, &group, &props)
                .create()
                .context("creating the Kafka consumer")?;
        consumer
            .subscribe(&[&k.outputs.commands])
            .with_context(|| format!("subscribing to {}", k.outputs.commands))?;
        tracing::info!(topic = %k.outputs.commands, %group, "reading commands from Kafka");
        Ok(KafkaCommands { consumer })
    }

    /// Up to a batch of messages, waiting at most `wait` for the first (errors are logged:
    /// librdkafka retries on its own).
    fn poll(&mut self, wait: Duration, out: &mut Vec<Message>) {
        use rdkafka::Message as _;
        let mut timeout = wait;
        while out.len() < 1024 {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!("Kafka: {e}");
                    break;
                }
                Some(Ok(m)) => {
                    out.push(Message {
                        bytes: m.payload().unwrap_or_default().to_vec(),
                        at: format!("{}/{}@{}", m.topic(), m.partition(), m.offset()),
                        offset: Some((m.topic().to_owned(), m.partition(), m.offset())),
                    });
                    timeout = Duration::ZERO;
                }
            }
        }
    }

    /// Commits the next offset after each (topic, partition)'s last saved message.
    fn commit(&self, offsets: &mut BTreeMap<(String, i32), i64>) {
        use rdkafka::consumer::{CommitMode, Consumer as _};
        if offsets.is_empty() {
            return;
        }
        let mut list = rdkafka::TopicPartitionList::new();
        for ((topic, partition), offset) in std::mem::take(offsets) {
            if let Err(e) =
                list.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(offset + 1))
            {
                tracing::warn!("offset of {topic}/{partition}: {e}");
            }
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::warn!("committing command offsets: {e}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use actuate::sign::Signer;

    pub(crate) const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A signed command from JSON fields over a segmentation default.
    pub(crate) fn command(fields: serde_json::Value) -> RemediationCommand {
        let mut v = serde_json::json!({
            "schema_version": 1, "kind": "remediation-command", "id": "segmentation/orders/1",
            "action": "issue", "revision": 0, "pattern": "segmentation",
            "target": { "sources": ["attacker"], "destinations": ["orders"] },
            "parameters": { "status": 403 },
            "issued_at_us": 1_000, "ttl_us": 10_000, "expires_at_us": 11_000,
            "reason": { "finding": "f", "signature": "segmentation-violation", "incident": "i", "summary": "s" },
            "mode": "enforce",
        });
        for (k, x) in fields.as_object().unwrap() {
            v[k] = x.clone();
        }
        let mut c: RemediationCommand = serde_json::from_value(v).unwrap();
        Signer::new("k1", KEY.to_vec()).unwrap().sign(&mut c);
        c
    }

    fn ledger() -> Ledger {
        Ledger::new(Keys::from([("k1".to_owned(), KEY.to_vec())]))
    }

    #[test]
    fn revisions_revokes_and_expiry() {
        let mut l = ledger();
        let issue = command(serde_json::json!({}));
        assert_eq!(l.offer(issue.clone(), 2_000), Ok(Offer::Held));
        assert_eq!(l.offer(issue.clone(), 2_000), Ok(Offer::Stale), "seen");
        let renew = command(
            serde_json::json!({ "action": "renew", "revision": 1, "expires_at_us": 21_000 }),
        );
        assert_eq!(l.offer(renew, 3_000), Ok(Offer::Held));
        assert_eq!(l.held().next().unwrap().expires_at_us, 21_000);
        assert_eq!(
            l.offer(issue.clone(), 3_000),
            Ok(Offer::Stale),
            "an older revision"
        );

        // as the actuator writes a revoke: expiring at once
        let revoke = command(serde_json::json!({
            "action": "revoke", "revision": 2, "issued_at_us": 4_000, "ttl_us": 0, "expires_at_us": 4_000
        }));
        assert_eq!(l.offer(revoke, 4_000), Ok(Offer::Revoked));
        assert_eq!(l.in_force().len(), 0);
        assert!(l.expire(4_000).is_empty());
        assert_eq!(
            l.revoked.get("segmentation/orders/1"),
            Some(&(2, 21_000)),
            "the tombstone lasts as long as the renewed command could have"
        );
        assert_eq!(
            l.offer(issue.clone(), 5_000),
            Ok(Offer::Stale),
            "a replay stays revoked"
        );
        assert!(l.expire(21_000).is_empty());
        assert_eq!(l.revoked.len(), 0, "the tombstone goes at the expiry");

        let other =
            command(serde_json::json!({ "id": "segmentation/orders/2", "expires_at_us": 30_000 }));
        assert_eq!(l.offer(other, 22_000), Ok(Offer::Held));
        assert!(l.expire(29_999).is_empty());
        assert_eq!(l.expire(30_000), vec!["segmentation/orders/2".to_owned()]);
        let late =
            command(serde_json::json!({ "id": "segmentation/orders/3", "expires_at_us": 30_000 }));
        assert_eq!(l.offer(late, 30_000), Ok(Offer::Expired));
        assert_eq!(
            (
                l.counts.held,
                l.counts.stale,
                l.counts.expired,
                l.counts.revoked
            ),
            (3, 3, 2, 1)
        );
    }

    #[test]
    fn forged_unsigned_and_unknown_keys_are_refused_and_counted() {
        let mut l = ledger();
        let mut altered = command(serde_json::json!({}));
        altered.target.sources.push("frontend".into());
        assert!(matches!(l.offer(altered, 0), Err(VerifyError::Mismatch(_))));
        let mut unsigned = command(serde_json::json!({}));
        unsigned.signature = None;
        assert!(matches!(
            l.offer(unsigned, 0),
            Err(VerifyError::Unsigned(_))
        ));
        let mut other = command(serde_json::json!({}));
        Signer::new("k2", KEY.to_vec()).unwrap().sign(&mut other);
        assert!(matches!(
            l.offer(other, 0),
            Err(VerifyError::UnknownKey { .. })
        ));
        assert_eq!(l.counts.refused_signature, 3);
        assert_eq!(l.held().count(), 0);
    }

    #[test]
    fn only_enforce_mode_is_in_force_and_the_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut l = ledger();
        l.offer(command(serde_json::json!({})), 0).unwrap();
        l.offer(
            command(serde_json::json!({ "id": "b", "mode": "dry-run" })),
            0,
        )
        .unwrap();
        l.offer(
            command(serde_json::json!({ "id": "c", "mode": "proposed" })),
            0,
        )
        .unwrap();
        l.offer(
            command(serde_json::json!({ "id": "d", "action": "revoke" })),
            0,
        )
        .unwrap();
        assert_eq!(l.held().count(), 3);
        let ids: Vec<&str> = l.in_force().iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["segmentation/orders/1"]);
        l.save(&path).unwrap();

        let back = Ledger::load(&path, Keys::from([("k1".to_owned(), KEY.to_vec())])).unwrap();
        assert_eq!(back.held().count(), 3);
        assert_eq!(back.revoked.get("d"), Some(&(0, 11_000)));
        let rotated = Ledger::load(&path, Keys::from([("k2".to_owned(), KEY.to_vec())])).unwrap();
        assert_eq!(
            rotated.held().count(),
            0,
            "a command whose key is gone is dropped"
        );
    }

    #[test]
    fn verify_keys_are_named_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("2026-12.key");
        std::fs::write(&file, b"0123456789abcdef0123456789abcdef\n").unwrap();
        let keys =
            read_keys(&[file.display().to_string(), format!("k1={}", file.display())]).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["2026-12", "k1"]);
        assert_eq!(keys["k1"].len(), 32, "the newline is not part of the key");
        std::fs::write(&file, b"short").unwrap();
        let e = read_keys(&[file.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--verify-key") && e.contains("5 bytes; at least 32"),
            "{e}"
        );
    }
}
