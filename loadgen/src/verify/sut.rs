//! Starting the system under test: sluice with a generated configuration, or
//! the baseline relay, as a child process on loopback; its listening line,
//! its shutdown, and its `/metrics`.

use super::{parse_metrics, Sut, VerifyConfig};
use crate::http;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace's release build of sluice (under `$CARGO_TARGET_DIR` when
/// that is set and holds one): what `verify` runs without `--sluice`.
pub fn default_sluice_path() -> PathBuf {
    // Workspace root: loadgen's manifest dir's parent at build time; fall back to cwd.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf);
    let rel = PathBuf::from("target/release/sluice");
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        let p = PathBuf::from(t).join("release/sluice");
        if p.exists() {
            return p;
        }
    }
    match root {
        Some(r) if r.join(&rel).exists() => r.join(rel),
        _ => rel,
    }
}

/// A size in bytes as a sluice config value: KiB, rounded up (sluice's sizes
/// are binary: "8192KB" = 8 MiB).
fn size_toml(bytes: u64) -> String {
    format!("\"{}KB\"", bytes.div_ceil(1024))
}

/// sluice's configuration for a run: one loopback listener on a free port,
/// the admin server on another, and every sink subscribed to every route.
pub(super) fn sluice_config(sinks: &[SocketAddr], cfg: &VerifyConfig) -> String {
    let (io_uring, pin) = (&cfg.io_uring, cfg.pin);
    let (queue, age_ms) = (cfg.queue_max_batches, cfg.batch_max_age.as_millis());
    let rcvbuf = size_toml(cfg.rcvbuf);
    let coalesce_us = cfg.wake_coalesce.as_micros();
    let balance = &cfg.balance;
    let nice = cfg.shard_nice;
    let mut s = format!(
        "junkyard = \"junk\"\nshutdown_timeout = \"5s\"\n\n[listen]\nudp = [\"127.0.0.1:0\"]\nshards = 0\npin = {pin}\nio_uring = \"{io_uring}\"\nread_buffer_size = {rcvbuf}\nwake_coalesce = \"{coalesce_us}us\"\nbalance = \"{balance}\"\nnice = {nice}\n\n[sanity]\nmax_time_delta = \"10m\"\nmax_line_length = \"64KB\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    if let Some(steal) = cfg.steal {
        // Under [listen], before the next table starts.
        let at = s
            .find("\n\n[sanity]")
            .expect("the [sanity] table follows [listen]");
        s.insert_str(at, &format!("\nsteal = {steal}"));
    }
    if let Some(pool) = cfg.chunk_pool {
        s.push_str(&format!("\n[chunk]\npool = {}\n", size_toml(pool)));
    }
    s.push_str(&rules_toml(&cfg.rules, cfg.measurements));
    for (i, a) in sinks.iter().enumerate() {
        s.push_str(&format!(
            "\n[[sink]]\nname = \"s{i}\"\nurl = \"http://{a}/write?db=test\"\nroutes = [\"*\"]\nbatch_max_size = \"1MB\"\nbatch_max_age = \"{age_ms}ms\"\nqueue_max_batches = {queue}\nconnections = 2\ntimeout = \"10s\"\n"
        ));
        if let Some(size) = cfg.queue_max_size {
            s.push_str(&format!("queue_max_size = {}\n", size_toml(size)));
        }
    }
    s
}

/// sluice's rule table for `--rules`, over the generator's measurement
/// names (`gen::measurement_name`); every sink subscribes to every route.
/// - `none`: no rules, every line to the junkyard (sessions 1–12 measured
///   this);
/// - `basic`: one exact-name rule per measurement, each to a route of its
///   own, so every line is routed by a hash lookup;
/// - `mixed`: a `tags` rule (`region=us-east-1`, a quarter of the series)
///   and a `regex` rule (`^disk`) ahead of the `basic` ones, so every line
///   is looked up by all three kinds (a later kind is only tried when it
///   could beat an earlier match).
pub(super) fn rules_toml(rules: &str, measurements: usize) -> String {
    let mut s = String::new();
    if rules == "mixed" {
        s.push_str(&format!(
            "\n[[rule]]\ntype = \"tags\"\ntags = [[\"region\", \"{}\"]]\nroute = \"us-east\"\n",
            crate::gen::REGION_US_EAST
        ));
        s.push_str("\n[[rule]]\ntype = \"regex\"\nmatch = \"^disk\"\nroute = \"storage\"\n");
    }
    if rules == "basic" || rules == "mixed" {
        for m in 0..measurements.max(1) {
            let name = crate::gen::measurement_name(m);
            s.push_str(&format!(
                "\n[[rule]]\ntype = \"basic\"\nmatch = \"{name}\"\nroute = \"{name}\"\n"
            ));
        }
    }
    s
}

/// The running SUT: its process, the addresses it said it listens on, and
/// the log its stderr goes to. Dropping it stops the process.
pub(super) struct SutProcess {
    pub(super) child: Child,
    pub(super) udp: Vec<SocketAddr>,
    pub(super) admin: SocketAddr,
    pub(super) log: PathBuf,
}

impl SutProcess {
    pub(super) fn terminate(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for SutProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The SUT's `listening udp=ADDR[,ADDR…] admin=ADDR` line (sluice's and
/// the baseline relay's alike), with the ports the kernel chose.
fn parse_listening(line: &str) -> Option<(Vec<SocketAddr>, SocketAddr)> {
    let rest = line.trim().strip_prefix("listening ")?;
    let mut udp = Vec::new();
    let mut admin = None;
    for part in rest.split_whitespace() {
        if let Some(u) = part.strip_prefix("udp=") {
            for a in u.split(',') {
                udp.push(a.parse().ok()?);
            }
        } else if let Some(a) = part.strip_prefix("admin=") {
            admin = a.parse().ok();
        }
    }
    Some((udp, admin?))
}

/// Start the SUT, wait for its listening line, and refuse to go on unless
/// every address it listens on is loopback.
pub(super) fn spawn_sut(
    sut: &Sut,
    sinks: &[SocketAddr],
    cfg: &VerifyConfig,
    tag: usize,
) -> Result<SutProcess> {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let log = dir.join(format!("sluice-verify-{pid}-{tag}.log"));
    let logf = std::fs::File::create(&log)?;
    let mut cmd = match sut {
        Sut::Sluice(path) => {
            if !path.exists() {
                bail!(
                    "sluice binary not found at {} — build it with `cargo build --release -p sluice` or pass --sluice PATH",
                    path.display()
                );
            }
            let conf = dir.join(format!("sluice-verify-{pid}-{tag}.toml"));
            std::fs::write(&conf, sluice_config(sinks, cfg))?;
            let mut c = Command::new(path);
            c.arg("--config").arg(conf);
            c
        }
        Sut::Baseline => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args([
                "baseline",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ]);
            c.args(["--threads", &cfg.baseline_threads.to_string()]);
            c.args(["--rcvbuf", &cfg.rcvbuf.to_string()]);
            c.args([
                "--wake-coalesce",
                &format!("{}us", cfg.wake_coalesce.as_micros()),
            ]);
            c.args(["--balance", &cfg.balance]);
            c.arg(format!("--nice={}", cfg.shard_nice));
            // Bounded even if nobody signals it.
            let max = cfg.duration.as_secs() + cfg.drain_timeout.as_secs() + 120;
            c.args(["--max-runtime", &format!("{max}s")]);
            for a in sinks {
                c.arg("--sink").arg(format!("http://{a}/write?db=test"));
            }
            c
        }
    };
    if let Some(split) = &cfg.cpus {
        let set = crate::cpus::cpu_set(&split.sut);
        // SAFETY: the closure runs in the child between fork and exec, where
        // only async-signal-safe calls are allowed; `cpus::apply` is one
        // system call on a set built before the fork (no allocation, no lock).
        unsafe {
            cmd.pre_exec(move || crate::cpus::apply(&set));
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(logf));
    let mut child = cmd.spawn().context("spawning system under test")?;
    let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sent = false;
        for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
            if !sent {
                if let Some(p) = parse_listening(&l) {
                    let _ = tx.send(p);
                    sent = true;
                }
            }
        }
    });
    let mut process = SutProcess {
        child,
        udp: vec![],
        admin: "127.0.0.1:0".parse()?,
        log: log.clone(),
    };
    let (udp, admin) = rx.recv_timeout(Duration::from_secs(20)).map_err(|e| {
        // Its stdout closed first: it exited (a config it refused, a port in
        // use), and its last words are in the log.
        let last = std::fs::read_to_string(&log)
            .ok()
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        match e {
            std::sync::mpsc::RecvTimeoutError::Disconnected => anyhow!(
                "{} exited before listening: {last} (log: {})",
                sut.name(),
                log.display()
            ),
            std::sync::mpsc::RecvTimeoutError::Timeout => anyhow!(
                "{} did not print its `listening udp=... admin=...` line within 20s (log: {})",
                sut.name(),
                log.display()
            ),
        }
    })?;
    for a in udp.iter().chain(std::iter::once(&admin)) {
        if !a.ip().is_loopback() {
            bail!("SUT listens on non-loopback {a}; refusing to send");
        }
    }
    process.udp = udp;
    process.admin = admin;
    let t0 = Instant::now();
    loop {
        if let Ok((200, _)) = http::get(admin, "/readyz", Duration::from_secs(1)) {
            break;
        }
        if let Ok(Some(st)) = process.child.try_wait() {
            bail!("{} exited early ({st}); log: {}", sut.name(), log.display());
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("{} /readyz not 200 within 20s", sut.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(process)
}

/// The SUT's `/metrics`, parsed; empty when the scrape fails (a run reads
/// it several times, and one miss must not end the run).
pub(super) fn scrape(admin: SocketAddr) -> BTreeMap<String, f64> {
    match http::get(admin, "/metrics", Duration::from_secs(2)) {
        Ok((200, b)) => parse_metrics(&String::from_utf8_lossy(&b)),
        _ => BTreeMap::new(),
    }
}
