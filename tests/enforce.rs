//! `graywatch enforce nginx` against a real NGINX (Debian's nginx-light, installed by
//! `scripts/test`) on loopback: two versions of `orders` behind it, callers named by the
//! `X-Graywatch-Caller` header; signed commands appended to a file the enforcer follows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actuate::sign::Signer;
use schemas::RemediationCommand;

use crate::broker::free_port;

const KEY: &[u8] = b"graywatch-test-key-0123456789abcdef";

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// An NGINX prefix with a site of two services, the enforcer following `commands.jsonl`,
/// and the NGINX it starts; both stopped on drop.
struct Site {
    dir: tempfile::TempDir,
    front: u16,
    enforcer: Child,
}

impl Site {
    /// The enforcer following `commands.jsonl`.
    fn start() -> Site {
        Site::start_with(|p| vec!["--commands".into(), p.join("commands.jsonl").into()])
    }

    /// The enforcer with `source(prefix)` as its input arguments.
    fn start_with(source: impl Fn(&Path) -> Vec<std::ffi::OsString>) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let (front, v1, v2) = (free_port(), free_port(), free_port());
        std::fs::create_dir_all(p.join("tmp")).unwrap();
        std::fs::write(p.join("extra.conf"), "").unwrap();
        let d = p.display();
        std::fs::write(
            p.join("nginx.conf"),
            format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 256; }}\nhttp {{\n    access_log off;\n\
                 client_body_temp_path {d}/tmp/body;\n    proxy_temp_path {d}/tmp/proxy;\n\
                 fastcgi_temp_path {d}/tmp/fastcgi;\n    uwsgi_temp_path {d}/tmp/uwsgi;\n\
                 scgi_temp_path {d}/tmp/scgi;\n\
                 server {{ listen 127.0.0.1:{v1}; location / {{ return 200 \"v1\\n\"; }} }}\n\
                 server {{ listen 127.0.0.1:{v2}; location / {{ return 200 \"v2\\n\"; }} }}\n\
                 include {d}/graywatch.conf;\n    include {d}/extra.conf;\n}}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            p.join("graywatch-site.toml"),
            format!(
                "listen = \"127.0.0.1:{front}\"\ncaller = \"$http_x_graywatch_caller\"\n\
                 caller-tier = \"$http_x_graywatch_tier\"\n\n\
                 [[services]]\nname = \"orders\"\nlocation = \"/orders/\"\n\
                 servers = [{{ address = \"127.0.0.1:{v1}\", version = \"v1\" }}, {{ address = \"127.0.0.1:{v2}\", version = \"v2\" }}]\n\n\
                 [[services]]\nname = \"catalog\"\nlocation = \"/catalog/\"\n\
                 servers = [{{ address = \"127.0.0.1:{v1}\", version = \"v1\" }}]\n"
            ),
        )
        .unwrap();
        std::fs::write(p.join("k1.key"), KEY).unwrap();
        std::fs::write(p.join("commands.jsonl"), "").unwrap();
        let log = std::fs::File::create(p.join("enforcer.log")).unwrap();
        let enforcer = Command::new(env!("CARGO_BIN_EXE_graywatch"))
            .args(["enforce", "nginx"])
            .args(source(p))
            .arg("--prefix")
            .arg(p)
            .arg("--verify-key")
            .arg(format!("k1={}", p.join("k1.key").display()))
            .args(["--nginx", nginx_bin()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("graywatch enforce nginx starts");
        let site = Site {
            dir,
            front,
            enforcer,
        };
        site.wait_for("frontend", "/orders/", None, |s, _| s == 200);
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        let mut s = std::fs::read_to_string(self.path("enforcer.log")).unwrap_or_default();
        s.push_str("\n--- nginx error.log ---\n");
        s.push_str(&std::fs::read_to_string(self.path("error.log")).unwrap_or_default());
        s
    }

    /// One GET as `caller` (and `tier`): (status, body).
    fn get(&self, caller: &str, path: &str, tier: Option<&str>) -> (u16, String) {
        let mut req = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{}{path}", self.front))
            .header("X-Graywatch-Caller", caller);
        if let Some(t) = tier {
            req = req.header("X-Graywatch-Tier", t);
        }
        match req.send() {
            Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// Polls until `ok(status, body)` holds for 5 requests in a row (within 20 s), or fails
    /// with the logs. In a row: during a reload, NGINX's old workers still take a few
    /// connections with the old config.
    fn wait_for(
        &self,
        caller: &str,
        path: &str,
        tier: Option<&str>,
        ok: impl Fn(u16, &str) -> bool,
    ) -> (u16, String) {
        let start = Instant::now();
        let mut streak = 0;
        loop {
            let (status, body) = self.get(caller, path, tier);
            if ok(status, &body) {
                streak += 1;
                if streak == 5 {
                    return (status, body);
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            streak = 0;
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{caller} {path}: still {status} {body:?} after 20 s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn send(&self, command: &RemediationCommand) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path("commands.jsonl"))
            .unwrap();
        writeln!(f, "{}", serde_json::to_string(command).unwrap()).unwrap();
    }

    /// Waits until the enforcer's log holds `text` `n` times.
    fn wait_log(&self, text: &str, n: usize) {
        let start = Instant::now();
        while self.log().matches(text).count() < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {n}× {text:?} in the logs:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.enforcer.kill();
        let _ = self.enforcer.wait();
        // by its pid: `nginx -s stop` reads the config, which a test may have broken
        if let Ok(pid) = std::fs::read_to_string(self.path("nginx.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// A signed command: `pattern` with `parameters` on `sources → destinations`.
fn command(
    id: &str,
    action: &str,
    revision: u32,
    pattern: &str,
    target: serde_json::Value,
    parameters: serde_json::Value,
    ttl_s: i64,
) -> RemediationCommand {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let mut c: RemediationCommand = serde_json::from_value(serde_json::json!({
        "schema_version": 1, "kind": "remediation-command", "id": id, "action": action,
        "revision": revision, "pattern": pattern, "target": target, "parameters": parameters,
        "issued_at_us": now, "ttl_us": ttl_s * 1_000_000, "expires_at_us": now + ttl_s * 1_000_000,
        "reason": { "finding": "f", "signature": "segmentation-violation", "incident": "i", "summary": "test" },
        "mode": "enforce",
    }))
    .unwrap();
    Signer::new("k1", KEY.to_vec()).unwrap().sign(&mut c);
    c
}

/// A signed segmentation command: `source`'s requests to orders get 403 (10 min).
fn deny(id: &str, source: &str) -> RemediationCommand {
    command(
        id,
        "issue",
        0,
        "segmentation",
        serde_json::json!({ "sources": [source], "destinations": ["orders"] }),
        serde_json::json!({ "status": 403 }),
        600,
    )
}

/// The revoke of `c` as graywatch writes one: the next revision, expiring at once.
fn revoke_of(c: &RemediationCommand) -> RemediationCommand {
    let mut r = c.clone();
    r.action = schemas::CommandAction::Revoke;
    r.revision = c.revision + 1;
    r.issued_at_us = c.issued_at_us + 1_000_000;
    r.ttl_us = 0;
    r.expires_at_us = r.issued_at_us;
    Signer::new("k1", KEY.to_vec()).unwrap().sign(&mut r);
    r
}

#[test]
fn nginx_enforces_segmentation_rate_limits_quarantine_and_refuses_forgeries() {
    let site = Site::start();
    let on = |sources: &[&str], dest: &str| serde_json::json!({ "sources": sources, "destinations": [dest] });

    // segmentation: the attacker's requests to orders are denied, the frontend's are not
    let seg = deny("segmentation/orders/1", "attacker");
    site.send(&seg);
    site.wait_for("attacker", "/orders/", None, |s, _| s == 403);
    assert_eq!(site.get("frontend", "/orders/", None).0, 200);
    assert_eq!(
        site.get("attacker", "/orders/", Some("x|y")).0,
        403,
        "a `|` in the tier header does not take the caller out of the command"
    );
    assert_eq!(
        site.get("attacker", "/catalog/", None).0,
        200,
        "catalog is not segmented"
    );

    // a forged command (signed, then altered to deny the frontend) changes nothing
    let mut forged = deny("segmentation/orders/2", "attacker");
    forged.target.sources = vec!["frontend".into()];
    site.send(&forged);
    site.wait_log("signature does not match", 1);
    for _ in 0..5 {
        assert_eq!(
            site.get("frontend", "/orders/", None).0,
            200,
            "{}",
            site.log()
        );
    }

    // revoke: the attacker gets through again
    let revoke = revoke_of(&seg);
    site.send(&revoke);
    site.wait_for("attacker", "/orders/", None, |s, _| s == 200);
    // the same issue again (a replayed topic) does not bring it back
    site.send(&seg);

    // backpressure: the batch caller at 5 req/s (burst 5), the frontend unlimited
    let bp = command(
        "backpressure/orders/3",
        "issue",
        0,
        "backpressure",
        on(&["batch"], "orders"),
        serde_json::json!({ "rate_limit_rps": { "batch": 5.0 } }),
        600,
    );
    site.send(&bp);
    site.wait_for("batch", "/orders/", None, |s, _| s == 429);
    assert_eq!(
        site.get("attacker", "/orders/", None).0,
        200,
        "the replayed issue stayed revoked\n{}",
        site.log()
    );
    std::thread::sleep(Duration::from_millis(1500)); // the bucket fills again
    let statuses: Vec<u16> = (0..30)
        .map(|_| site.get("batch", "/orders/", None).0)
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(ok + limited, 30, "only 200 and 429: {statuses:?}");
    assert!(
        (5..=10).contains(&ok),
        "5 req/s with a burst of 5 lets 6 through a quick burst (a few more while it lasts): {statuses:?}"
    );
    assert!(
        (0..30).all(|_| site.get("frontend", "/orders/", None).0 == 200),
        "the frontend is not limited"
    );

    // quarantine: orders v2 out of rotation, v1 serves everything
    let bodies: Vec<String> = (0..6)
        .map(|_| site.get("frontend", "/orders/", None).1)
        .collect();
    assert!(
        bodies.iter().any(|b| b == "v2\n") && bodies.iter().any(|b| b == "v1\n"),
        "round robin first: {bodies:?}"
    );
    let q = command(
        "quarantine/orders/4",
        "issue",
        0,
        "quarantine",
        serde_json::json!({ "sources": [], "destinations": ["orders"], "version": "v2" }),
        serde_json::json!({ "weight": 0.0 }),
        600,
    );
    site.send(&q);
    site.wait_log("NGINX config applied", 5);
    std::thread::sleep(Duration::from_millis(500));
    let bodies: Vec<String> = (0..10)
        .map(|_| site.get("frontend", "/orders/", None).1)
        .collect();
    assert!(
        bodies.iter().all(|b| b == "v1\n"),
        "v2 is quarantined: {bodies:?}\n{}",
        site.log()
    );

    // circuit breaker for the batch tier on catalog: 503 at once; other tiers pass
    let cb = command(
        "circuit-breaker/catalog/5",
        "issue",
        0,
        "circuit-breaker",
        serde_json::json!({ "sources": [], "destinations": ["catalog"] }),
        serde_json::json!({ "status": 503, "tier": "batch" }),
        4,
    );
    site.send(&cb);
    let opened = Instant::now();
    site.wait_for("reports", "/catalog/", Some("batch"), |s, _| s == 503);
    assert_eq!(site.get("reports", "/catalog/", Some("online")).0, 200);
    // ...for its TTL of 4 s only: it expires with no message (the wall clock drives it)
    site.wait_for("reports", "/catalog/", Some("batch"), |s, _| s == 200);
    assert!(
        opened.elapsed() >= Duration::from_secs(3),
        "expired early: {:?}",
        opened.elapsed()
    );
    site.wait_log("expired", 1);

    // bulkhead: catalog denied to everyone but the allow-listed frontend; orders capped at
    // 5 requests in flight (NGINX takes the limit_conn config)
    let bh = command(
        "bulkhead/catalog/7",
        "issue",
        0,
        "bulkhead",
        serde_json::json!({ "sources": [], "destinations": ["catalog"] }),
        serde_json::json!({ "allow": [{ "source": "frontend", "destination": "catalog" }] }),
        600,
    );
    let cap = command(
        "bulkhead/orders/8",
        "issue",
        0,
        "bulkhead",
        serde_json::json!({ "sources": [], "destinations": ["orders"] }),
        serde_json::json!({ "max_concurrency": 5 }),
        600,
    );
    site.send(&bh);
    site.send(&cap);
    site.wait_for("reports", "/catalog/", None, |s, _| s == 403);
    assert_eq!(
        site.get("frontend", "/catalog/", None).0,
        200,
        "the allow-listed edge"
    );
    site.wait_log("in_force=4", 1);
    assert!(
        std::fs::read_to_string(site.path("graywatch.conf"))
            .unwrap()
            .contains(" 5;\n"),
        "the cap is in force"
    );
    assert!(
        !site.log().contains("left out") && !site.log().contains("not applied"),
        "{}",
        site.log()
    );

    // NGINX refuses the next config (the operator's part broke): the old one keeps serving
    let before = std::fs::read_to_string(site.path("graywatch.conf")).unwrap();
    std::fs::write(site.path("extra.conf"), "this_is_not_a_directive;\n").unwrap();
    let seg2 = deny("segmentation/orders/6", "attacker");
    site.send(&seg2);
    site.wait_log(
        "graywatch.conf is back to the last config NGINX accepted",
        1,
    );
    assert_eq!(
        std::fs::read_to_string(site.path("graywatch.conf")).unwrap(),
        before
    );
    assert!(
        site.log().contains("this_is_not_a_directive"),
        "nginx -t's error is reported"
    );
    assert_eq!(
        site.get("attacker", "/orders/", None).0,
        200,
        "the previous config serves"
    );
    assert_eq!(
        site.get("frontend", "/orders/", None).1,
        "v1\n",
        "and still quarantines v2"
    );
}

/// `--kafka CONFIG`: the commands topic of a `graywatch run` config, through the enforcer's
/// own consumer group, on a real broker.
#[test]
fn nginx_enforces_commands_from_the_commands_topic() {
    let broker = crate::broker::Broker::start();
    broker.create_topic("graywatch.commands", 2);
    let config = tempfile::NamedTempFile::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path(),
        crate::kafka::run_config(&broker, crate::kafka::LANDSCAPE_INPUTS, state.path(), ""),
    )
    .unwrap();
    let site = Site::start_with(|_| {
        vec![
            "--kafka".into(),
            config.path().into(),
            "--group-id".into(),
            "enforce-test".into(),
        ]
    });
    let seg = deny("segmentation/orders/1", "attacker");
    let revoke = revoke_of(&seg);
    let msg = |c: &RemediationCommand| crate::broker::Msg {
        partition: None,
        key: Some(c.id.clone()),
        value: serde_json::to_vec(c).unwrap(),
        headers: Vec::new(),
    };
    broker.produce("graywatch.commands", &[msg(&seg)]);
    site.wait_for("attacker", "/orders/", None, |s, _| s == 403);
    assert_eq!(site.get("frontend", "/orders/", None).0, 200);
    broker.produce("graywatch.commands", &[msg(&revoke)]);
    site.wait_for("attacker", "/orders/", None, |s, _| s == 200);
    assert!(
        site.log().contains("graywatch.commands/"),
        "positions name topic/partition@offset:\n{}",
        site.log()
    );
}

/// A caller variable NGINX does not know is refused at start, naming it, before any command
/// needs it (it used to pass and fail at the first command that used it).
#[test]
fn a_caller_variable_nginx_does_not_know_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let d = p.display();
    std::fs::create_dir_all(p.join("tmp")).unwrap();
    std::fs::write(
        p.join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 16; }}
             http {{
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
             fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
             scgi_temp_path {d}/tmp/scgi;
    include {d}/graywatch.conf;
}}
"
        ),
    )
    .unwrap();
    let site = |caller: &str| {
        std::fs::write(
            p.join("graywatch-site.toml"),
            format!(
                "listen = \"127.0.0.1:{}\"\ncaller = \"{caller}\"\n[[services]]\nname = \"orders\"\n\
                 location = \"/orders/\"\nservers = [{{ address = \"127.0.0.1:2\" }}]\n",
                free_port()
            ),
        )
        .unwrap();
    };
    std::fs::write(p.join("k1.key"), KEY).unwrap();
    std::fs::write(p.join("commands.jsonl"), "").unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_graywatch"))
            .args(["enforce", "nginx", "--once", "--commands"])
            .arg(p.join("commands.jsonl"))
            .arg("--prefix")
            .arg(p)
            .arg("--verify-key")
            .arg(format!("k1={}", p.join("k1.key").display()))
            .args(["--nginx", nginx_bin()])
            .output()
            .unwrap()
    };
    site("$graywatch_no_such_variable");
    let out = run();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("NGINX does not know the variable $graywatch_no_such_variable (caller")
            && log.contains("unknown \"graywatch_no_such_variable\" variable"),
        "{log}"
    );
    assert!(!p.join("nginx.pid").exists(), "NGINX was started: {log}");
    assert!(
        !p.join("graywatch.conf").exists(),
        "the refused config is not left behind"
    );
    // a config in place (what NGINX serves) is left as it was, refused or not
    std::fs::write(p.join("graywatch.conf"), "# serving\n").unwrap();
    assert!(!run().status.success());
    assert_eq!(
        std::fs::read_to_string(p.join("graywatch.conf")).unwrap(),
        "# serving\n"
    );
    std::fs::remove_file(p.join("graywatch.conf")).unwrap();
    // a header variable NGINX knows passes the same check (nothing to serve: `--once` ends)
    site("$http_x_graywatch_caller");
    let out = run();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("does not know"), "{log}");
    let conf = std::fs::read_to_string(p.join("graywatch.conf")).unwrap();
    assert!(
        conf.contains("map \"$http_x_graywatch_caller||\" $graywatch_site_caller"),
        "{conf}"
    );
    if let Ok(pid) = std::fs::read_to_string(p.join("nginx.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}

/// A command whose config NGINX refuses is left out, the others apply (`--nginx`: a stand-in
/// whose `-t` refuses any config naming `attacker-bad`); `--once` exits 1 when nothing could
/// be applied.
#[test]
fn a_command_nginx_refuses_is_left_out_and_the_rest_applies() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let fake = p.join("nginx");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$*\" in *-t*) if grep -q attacker-bad \"$2/graywatch.conf\"; then echo 'nginx: [emerg] refused' >&2; exit 1; fi;; esac\nexit 0\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .unwrap();
    std::fs::write(
        p.join("graywatch-site.toml"),
        "listen = \"127.0.0.1:1\"\ncaller = \"$http_x_graywatch_caller\"\n[[services]]\nname = \"orders\"\nlocation = \"/orders/\"\nservers = [{ address = \"127.0.0.1:2\" }]\n",
    )
    .unwrap();
    std::fs::write(p.join("k1.key"), KEY).unwrap();
    let seg = |id: &str, source: &str| serde_json::to_string(&deny(id, source)).unwrap() + "\n";
    let commands = p.join("commands.jsonl");
    std::fs::write(
        &commands,
        seg("segmentation/orders/1", "attacker-bad") + &seg("segmentation/orders/2", "mallory"),
    )
    .unwrap();
    // the enforcer on this prefix with `nginx`, following the commands unless given --once
    let enforcer = |nginx: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_graywatch"));
        c.args(["enforce", "nginx", "--commands"])
            .arg(&commands)
            .arg("--prefix")
            .arg(p)
            .arg("--verify-key")
            .arg(format!("k1={}", p.join("k1.key").display()))
            .arg("--nginx")
            .arg(nginx);
        c
    };
    let run = |nginx: &Path| enforcer(nginx).arg("--once").output().unwrap();
    let out = run(&fake);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("left out: NGINX refuses its config") && log.contains("segmentation/orders/1"),
        "{log}"
    );
    assert!(log.contains("1 in force"), "{log}");
    let conf = std::fs::read_to_string(p.join("graywatch.conf")).unwrap();
    assert!(
        conf.contains("mallory") && !conf.contains("attacker-bad"),
        "{conf}"
    );

    // a second enforcer on the same prefix is refused while one runs
    let follower_log = p.join("follower.log");
    let follower = enforcer(&fake)
        .stderr(std::fs::File::create(&follower_log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _follower = Kill(follower);
    // it holds the lock once it has applied what it read
    let start = Instant::now();
    while !std::fs::read_to_string(&follower_log)
        .unwrap_or_default()
        .contains("NGINX config applied")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the follower did not start: {}",
            std::fs::read_to_string(&follower_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(&fake);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("another `graywatch enforce nginx` manages"),
        "{log}"
    );
    drop(_follower);

    // no NGINX at all: exit 1, and it says so
    let out = run(Path::new("/nonexistent/nginx"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("not serving"), "{log}");
}

#[test]
fn rendered_envoy_and_istio_examples_are_what_render_prints() {
    for (mesh, file, extra) in [
        ("envoy", "deploy/envoy/rendered.json", &[][..]),
        (
            "istio",
            "deploy/istio/rendered.json",
            &["--namespace", "shop", "--versions", "orders=v1,v2"][..],
        ),
    ] {
        let mut args = vec!["render", mesh, "deploy/examples/commands.jsonl"];
        args.extend_from_slice(extra);
        let out = crate::util::graywatch(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        let kept = std::fs::read_to_string(crate::util::root().join(file)).unwrap();
        assert_eq!(
            printed,
            kept,
            "{file} is stale: regenerate it with `graywatch {}`",
            args.join(" ")
        );

        let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&printed)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(docs.len(), 5, "one per command");
        for d in &docs {
            if mesh == "envoy" {
                let path = d["runtime_modify"].as_str().unwrap();
                assert!(
                    path.starts_with("/runtime_modify?") && path.len() > 16,
                    "{d}"
                );
                assert!(d["command"].as_str().unwrap().contains('/'));
            } else {
                assert_eq!(d["kind"], "List");
                for item in d["items"].as_array().unwrap() {
                    let kind = item["kind"].as_str().unwrap();
                    assert!(
                        [
                            "AuthorizationPolicy",
                            "DestinationRule",
                            "VirtualService",
                            "EnvoyFilter"
                        ]
                        .contains(&kind),
                        "{kind}"
                    );
                    assert!(item["apiVersion"].as_str().unwrap().contains("istio.io/"));
                    assert_eq!(item["metadata"]["namespace"], "shop");
                    assert!(item["spec"].is_object());
                }
            }
        }
    }
    // a quarantine without the serving versions is an error naming the flag
    let out = crate::util::graywatch(&["render", "istio", "deploy/examples/commands.jsonl"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--versions orders=V1,V2"));
}
