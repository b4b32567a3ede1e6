//! Loopback end-to-end tests: blast → (test relay) → sink, sink fault injection,
//! and `verify --baseline` through the real binary.

use sluice_loadgen::blast::{self, BlastConfig, Progress};
use sluice_loadgen::http::{self, Client};
use sluice_loadgen::sink::{self, SinkConfig};
use sluice_loadgen::util::Rate;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sink_cfg() -> SinkConfig {
    SinkConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..Default::default()
    }
}

fn url(a: SocketAddr) -> http::Url {
    http::parse_url(&format!("http://{a}/write?db=t")).unwrap()
}

#[test]
fn blast_to_sink_exact_lines_zero_loss() {
    let sinks = sink::start(sink_cfg()).unwrap();
    let sink_addr = sinks.addrs()[0];
    let udp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    udp.set_recv_buffer_size(8 << 20).unwrap();
    udp.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let udp: UdpSocket = udp.into();
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let target = udp.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    // Minimal relay: UDP payloads batched into POSTs to the sink.
    let relay = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut c = Client::new(url(sink_addr), Duration::from_secs(5));
            let mut buf = vec![0u8; 65536];
            let mut out = Vec::new();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                match udp.recv(&mut buf) {
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
                if out.len() > 64 * 1024 {
                    assert_eq!(c.post(&out).unwrap(), 204);
                    out.clear();
                }
            }
            if !out.is_empty() {
                assert_eq!(c.post(&out).unwrap(), 204);
            }
        })
    };
    let n = 20_000u64;
    let cfg = BlastConfig {
        targets: vec![target],
        threads: 2,
        duration: None,
        lines: Some(n),
        rate: Rate::BytesPerSec(10e6),
        ..Default::default()
    };
    let r = blast::run(&cfg, Arc::new(Progress::default())).unwrap();
    assert_eq!(r.lines, n);
    assert_eq!(r.seq_end, n);
    done.store(true, Ordering::Relaxed);
    relay.join().unwrap();
    let p = &sinks.ports[0];
    let st = p.stats();
    assert_eq!(st.lines, n);
    assert_eq!(st.unique_seq, n);
    assert_eq!(st.duplicates, 0);
    assert_eq!(p.missing_below(n), 0);
    assert_eq!(st.max_seq, Some(n - 1));
    assert!(st.latency.count == n && st.latency.max_ns < 10_000_000_000);
}

#[test]
fn sink_fail_rate_returns_500() {
    let mut cfg = sink_cfg();
    cfg.fail_rate = 1.0;
    let s = sink::start(cfg).unwrap();
    let mut c = Client::new(url(s.addrs()[0]), Duration::from_secs(2));
    for _ in 0..5 {
        assert_eq!(c.post(b"m f=1i,seq=000000000001i 1\n").unwrap(), 500);
    }
    let st = s.ports[0].stats();
    assert_eq!((st.requests, st.rejected, st.lines), (5, 5, 0));

    let mut cfg = sink_cfg();
    cfg.fail_rate = 0.5;
    let s = sink::start(cfg).unwrap();
    let mut c = Client::new(url(s.addrs()[0]), Duration::from_secs(2));
    let codes: Vec<u16> = (0..200).map(|_| c.post(b"m f=1i 1\n").unwrap()).collect();
    let fails = codes.iter().filter(|&&x| x == 500).count();
    assert!((40..160).contains(&fails), "fails={fails}");
    assert_eq!(s.ports[0].stats().lines as usize, 200 - fails);
}

#[test]
fn sink_down_for_refuses_then_accepts() {
    let mut cfg = sink_cfg();
    cfg.down_for = Duration::from_millis(800);
    let s = sink::start(cfg).unwrap();
    let a = s.addrs()[0];
    assert!(TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err());
    std::thread::sleep(Duration::from_millis(1000));
    let mut c = Client::new(url(a), Duration::from_secs(2));
    assert_eq!(c.post(b"m f=1i 1\n").unwrap(), 204);
    assert_eq!(s.ports[0].stats().lines, 1);
}

/// The sequence bitmap counts exactly: lines missing from the run show as
/// `max_seq + 1 - unique_seq`, a line sent twice as a duplicate, a line
/// without a seq field as `no_seq`, over several requests and connections.
#[test]
fn sink_counts_gaps_duplicates_and_unnumbered_lines_exactly() {
    let s = sink::start(sink_cfg()).unwrap();
    let line = |seq: u64| format!("cpu,host=a usage=1.5,seq={seq:012}i 1700000000000000000\n");
    // seq 0..1000 except 100..150 (50 lost), across two connections.
    let mut first = Client::new(url(s.addrs()[0]), Duration::from_secs(2));
    let mut second = Client::new(url(s.addrs()[0]), Duration::from_secs(2));
    let body: String = (0..500)
        .filter(|q| !(100..150).contains(q))
        .map(line)
        .collect();
    assert_eq!(first.post(body.as_bytes()).unwrap(), 204);
    let body: String = (500..1000).map(line).collect();
    assert_eq!(second.post(body.as_bytes()).unwrap(), 204);
    // 7 lines again (a retried request delivered twice), 3 without seq, and
    // a comment and a blank line that are not lines at all.
    let mut again: String = (990..997).map(line).collect();
    again.push_str("cpu usage=1 1\ncpu,host=b usage=2\ncpu seq=12 1\n# comment\n\n");
    assert_eq!(first.post(again.as_bytes()).unwrap(), 204);

    let st = s.ports[0].stats();
    assert_eq!(st.requests, 3);
    assert_eq!(st.lines, 950 + 7 + 3);
    assert_eq!(st.unique_seq, 950);
    assert_eq!(st.duplicates, 7);
    assert_eq!(
        st.no_seq, 3,
        "`seq=12` is a float, not blast's integer field"
    );
    assert_eq!(st.max_seq, Some(999));
    assert_eq!(st.max_seq.unwrap() + 1 - st.unique_seq, 50, "lost lines");
    let now = sluice_loadgen::util::now_ns();
    assert!(st.last_arrival_ns > now - 10_000_000_000 && st.last_arrival_ns <= now);
}

/// `--delay` holds every answer, so a writer's timeout and queueing can be
/// tested against a slow backend.
#[test]
fn sink_delay_holds_each_answer() {
    let mut cfg = sink_cfg();
    cfg.delay = Duration::from_millis(300);
    let s = sink::start(cfg).unwrap();
    let mut c = Client::new(url(s.addrs()[0]), Duration::from_secs(5));
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(c.post(b"m f=1i 1\n").unwrap(), 204);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "answered after {took:?}"
        );
    }
    // A client that gives up first sees a timeout, not an answer.
    let mut impatient = Client::new(url(s.addrs()[0]), Duration::from_millis(100));
    assert!(impatient.post(b"m f=1i 1\n").is_err());
}

#[test]
fn sink_gzip_and_stats() {
    let s = sink::start(sink_cfg()).unwrap();
    let a = s.addrs()[0];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"m f=1i,seq=000000000000i 1\nm f=2i,seq=000000000001i 2\n")
        .unwrap();
    let body = gz.finish().unwrap();
    let mut t = TcpStream::connect(a).unwrap();
    write!(
        t,
        "POST /api/v2/write?bucket=b HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    t.write_all(&body).unwrap();
    let mut resp = String::new();
    t.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
    let (code, j) = http::get(a, "/stats", Duration::from_secs(2)).unwrap();
    assert_eq!(code, 200);
    let st: sink::PortStats = serde_json::from_slice(&j).unwrap();
    assert_eq!((st.lines, st.unique_seq), (2, 2));
}

/// Run `sluice-loadgen verify ARGS --no-progress --json FILE`, require
/// success, and return its output and the JSON it wrote.
/// A run's `shard_datagrams`: what each of sluice's shards received.
fn shard_datagrams(run: &serde_json::Value) -> Vec<u64> {
    run["shard_datagrams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect()
}

/// The SUT's receive threads ran at the niceness `verify` asked (-5 by
/// default) where raising priority is permitted (root), else at the
/// niceness they inherited (this process's); either way the run reports
/// which.
fn assert_receivers_at_shard_nice(run: &serde_json::Value) {
    assert_eq!(run["shard_nice"].as_i64(), Some(-5), "{run}");
    // SAFETY: geteuid and getpriority take plain integers and touch no memory.
    let (root, inherited) = unsafe {
        (
            libc::geteuid() == 0,
            libc::getpriority(libc::PRIO_PROCESS, 0),
        )
    };
    let expected = if root { -5 } else { i64::from(inherited) };
    assert_eq!(run["receiver_nice"].as_i64(), Some(expected), "{run}");
}

fn verify_json(name: &str, args: &[&str]) -> (String, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!("loadgen-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("v.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
        .arg("verify")
        .args(args)
        .args(["--no-progress", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (stdout, v)
}

#[test]
fn verify_baseline_amplifies_4x_without_loss() {
    let (_, v) = verify_json(
        "test",
        &[
            "--baseline",
            "--rate",
            "10MB/s",
            "--duration",
            "2s",
            "--baseline-threads",
            "2",
        ],
    );
    let r = &v["run"];
    assert_eq!(
        format!("{:.2}", r["amplification"].as_f64().unwrap()),
        "4.00"
    );
    assert_eq!(r["lost_lines_max"].as_u64(), Some(0));
    assert!(r["blast"]["lines"].as_u64().unwrap() > 10_000);
    assert_eq!(r["accounting_agrees"].as_bool(), Some(true));
    // The output rate is over the blast plus the time the last bodies took to
    // arrive (the relay's batching), not the drain check's flat second.
    let blast_s = r["blast"]["elapsed_s"].as_f64().unwrap();
    let window = r["out_window_s"].as_f64().unwrap();
    assert!(
        window >= blast_s && window < blast_s + 1.0,
        "{window} {blast_s}"
    );
    let out_total = r["out_bytes_total"].as_u64().unwrap() as f64;
    let out_rate = r["out_bytes_per_s"].as_f64().unwrap();
    assert!(
        (out_rate * window - out_total).abs() < 1.0,
        "{out_rate} {window}"
    );
    // The load generator's own CPU is reported beside the SUT's: the sender
    // certainly worked; the sinks' share may round to zero ticks here.
    assert!(r["blast"]["sender_cpu_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["harness_sinks_cpu_s"].as_f64().unwrap() >= 0.0, "{r}");
    // Where the relay's CPU went, by thread group: the receivers worked (at
    // this rate the writers' share can round to zero ticks, but they are
    // listed), and the groups add up to no more than the process total.
    let by_thread = r["cpu_by_thread"].as_object().unwrap();
    let cpu = |group: &str| {
        let t = &by_thread[group];
        t["user_s"].as_f64().unwrap() + t["system_s"].as_f64().unwrap()
    };
    assert!(cpu("bl-recv") > 0.0, "{by_thread:?}");
    assert_receivers_at_shard_nice(r);
    assert!(cpu("bl-writer") >= 0.0, "{by_thread:?}");
    let sum: f64 = by_thread.keys().map(|g| cpu(g)).sum();
    assert!(
        sum <= r["cpu_s"].as_f64().unwrap() + 0.02,
        "{sum} {by_thread:?}"
    );
}

/// `--find-max --repeat N` runs N searches and reports the spread of their
/// best rates (with `--compare-baseline`, of the ratios).
#[test]
fn verify_find_max_repeat_reports_every_search() {
    let (stdout, v) = verify_json(
        "fmrepeat",
        &[
            "--baseline",
            "--find-max",
            "--repeat",
            "2",
            "--rate",
            "4MB/s",
            "--duration",
            "1s",
            "--find-steps",
            "2",
            "--baseline-threads",
            "1",
        ],
    );
    assert!(
        stdout.contains("== find-max, round 2: baseline =="),
        "{stdout}"
    );
    assert!(stdout.contains("== find-max, 2 rounds =="), "{stdout}");
    let rounds = v["find_max_rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    let mut bests = Vec::new();
    for r in rounds {
        // Two trials each: 4 MB/s, then twice that; both pass on loopback.
        assert_eq!(r["find_max"]["trials"].as_array().unwrap().len(), 2, "{r}");
        assert_eq!(r["best"]["lost_lines_max"].as_u64(), Some(0));
        bests.push(r["find_max"]["best_bytes_per_s"].as_f64().unwrap());
    }
    let spread = &v["summary"]["best_bytes_per_s"];
    let (min, max) = (bests[0].min(bests[1]), bests[0].max(bests[1]));
    assert_eq!(spread["min"].as_f64(), Some(min));
    assert_eq!(spread["max"].as_f64(), Some(max));
    assert!((spread["median"].as_f64().unwrap() - (min + max) / 2.0).abs() < 1e-6);
}

#[test]
fn verify_repeat_reports_medians_of_every_run() {
    let (stdout, v) = verify_json(
        "repeat",
        &[
            "--baseline",
            "--repeat",
            "3",
            "--rate",
            "5MB/s",
            "--duration",
            "1s",
            "--baseline-threads",
            "2",
        ],
    );
    assert_eq!(stdout.matches("  round ").count(), 3, "{stdout}");
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let summary = &v["summary"];
    assert_eq!(summary["runs"].as_u64(), Some(3));
    assert_eq!(summary["passed"].as_u64(), Some(3));
    // The median is one of the runs' figures, between the smallest and largest.
    let cpu: Vec<f64> = runs
        .iter()
        .map(|r| r["cpu_s_per_gib"].as_f64().unwrap())
        .collect();
    let spread = &summary["cpu_s_per_gib"];
    let median = spread["median"].as_f64().unwrap();
    assert!(cpu.contains(&median), "{cpu:?} {median}");
    assert_eq!(
        spread["min"].as_f64().unwrap(),
        cpu.iter().cloned().fold(f64::MAX, f64::min)
    );
    assert_eq!(
        spread["max"].as_f64().unwrap(),
        cpu.iter().cloned().fold(f64::MIN, f64::max)
    );
    assert_eq!(
        format!("{:.2}", summary["amplification"]["min"].as_f64().unwrap()),
        "4.00"
    );
    assert!(runs
        .iter()
        .all(|r| r["host_steal_s"].as_f64().unwrap() >= 0.0));
    // The CPU split by thread group, per GiB, as (user, system) spreads.
    let recv = &summary["cpu_per_gib_by_thread"]["bl-recv"];
    let user = &recv[0];
    assert!(user["median"].as_f64().unwrap() >= user["min"].as_f64().unwrap());
    assert!(recv[1]["max"].as_f64().unwrap() >= 0.0);
    // Printed for the groups that used any CPU: 5 MB/s for a second can
    // stay under one clock tick (10 ms) in every thread.
    let measured = summary["cpu_per_gib_by_thread"]
        .as_object()
        .unwrap()
        .values()
        .any(|g| g[0]["max"].as_f64().unwrap() + g[1]["max"].as_f64().unwrap() > 0.0);
    assert_eq!(
        stdout.contains("cpu-s/GiB by thread (medians): "),
        measured,
        "{stdout}"
    );
}

/// The `sluice` binary built beside this one (`cargo test --workspace` builds both).
fn sibling_sluice() -> Option<std::path::PathBuf> {
    let me = std::path::Path::new(env!("CARGO_BIN_EXE_sluice-loadgen"));
    let path = me.with_file_name("sluice");
    path.exists().then_some(path)
}

/// `sibling_sluice`, or `None` after saying why the sluice part of a test is
/// skipped: only under `cargo test -p sluice-loadgen` alone; the README's
/// `cargo test --workspace` builds sluice too.
fn sibling_sluice_or_skip() -> Option<std::path::PathBuf> {
    let sluice = sibling_sluice();
    if sluice.is_none() {
        eprintln!("no sluice binary beside sluice-loadgen; build the workspace to run the sluice part of this test");
    }
    sluice
}

#[test]
fn verify_find_max_compare_baseline_searches_both() {
    let Some(sluice) = sibling_sluice_or_skip() else {
        return;
    };
    let (stdout, v) = verify_json(
        "findmax",
        &[
            "--find-max",
            "--compare-baseline",
            "--sluice",
            sluice.to_str().unwrap(),
            "--rate",
            "2MB/s",
            "--duration",
            "1s",
            "--find-steps",
            "2",
            "--baseline-threads",
            "2",
        ],
    );
    assert!(stdout.contains("== find-max: baseline =="), "{stdout}");
    assert!(stdout.contains("== find-max: sluice =="), "{stdout}");
    assert!(
        stdout.contains("sluice vs baseline (best passing runs)"),
        "{stdout}"
    );
    for key in ["find_max_baseline", "find_max"] {
        let trials = v[key]["trials"].as_array().unwrap();
        assert_eq!(
            trials.len(),
            2,
            "{key}: two steps, both passing at these rates"
        );
        assert!(v[key]["best_rate"].is_string(), "{key}");
    }
    for key in ["best_baseline", "best"] {
        assert_eq!(v[key]["pass"].as_bool(), Some(true), "{key}");
    }
    // Which build was measured: the sluice runs name their binary, the
    // baseline's runs none.
    assert_eq!(v["best"]["sut_binary"].as_str(), sluice.to_str());
    assert_eq!(v["best_baseline"]["sut_binary"].as_str(), Some(""));
    assert!(
        stdout.contains(&format!("  binary    : {}", sluice.display())),
        "{stdout}"
    );
    let lines_ratio = v["ratios"]["lines_per_s"].as_f64().unwrap();
    assert!(lines_ratio > 0.5 && lines_ratio < 2.0, "{lines_ratio}");
    assert!(v["ratios"]["cpu_s_per_gib"].as_f64().unwrap() > 0.0);
}

/// The default configuration's sink settings (`--queue-max-batches 256
/// --batch-max-age 1s`, the memory target's setting) reach sluice, and the
/// run reports its RSS over time: per sample in the JSON, first and last
/// third of the blast, and on the plot's right axis.
#[test]
fn verify_default_sink_settings_and_rss_over_time() {
    let Some(sluice) = sibling_sluice_or_skip() else {
        return;
    };
    let plot = std::env::temp_dir().join(format!("loadgen-rss-{}.svg", std::process::id()));
    let (stdout, v) = verify_json(
        "rss",
        &[
            "--sluice",
            sluice.to_str().unwrap(),
            "--rate",
            "5MB/s",
            "--duration",
            "3s",
            "--queue-max-batches",
            "256",
            "--batch-max-age",
            "1s",
            "--max-rss",
            "256MiB",
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    let r = &v["run"];
    assert_eq!(r["pass"].as_bool(), Some(true), "{stdout}");
    assert_eq!(r["lost_lines_max"].as_u64(), Some(0), "{stdout}");
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.len() >= 8, "{samples:?}");
    assert!(
        samples
            .iter()
            .all(|s| s["rss_bytes"].as_u64().unwrap() > 1 << 20),
        "{samples:?}"
    );
    // Drops, steal and sluice's receive backlog ride along (a lossless
    // run: no drops, and a backlog below the socket buffer).
    assert!(
        samples.iter().all(|s| s["kernel_drops"].as_u64() == Some(0)
            && s["host_steal_s"].as_f64().is_some_and(|x| x >= 0.0)
            && s["rx_backlog_bytes"].as_u64().is_some()),
        "{samples:?}"
    );
    let buffer = r["rx_buffer_bytes"].as_u64().unwrap();
    assert!(buffer > 0, "{r}");
    assert!(r["rx_backlog_max_bytes"].as_u64().unwrap() < buffer, "{r}");
    assert!(stdout.contains("receive backlog: peak"), "{stdout}");
    // sluice ran with the default wake-up coalescing, and says how big a
    // batch a wake-up took.
    assert_eq!(r["wake_coalesce_us"].as_u64(), Some(2000), "{r}");
    assert_receivers_at_shard_nice(r);
    let batches = r["rx_batches"].as_u64().unwrap();
    assert!(
        batches > 0 && (batches as f64) <= r["received_datagrams"].as_f64().unwrap(),
        "{r}"
    );
    assert!(stdout.contains("wake-ups: "), "{stdout}");
    // Per shard, summing to what sluice received.
    let shards = shard_datagrams(r);
    assert!(!shards.is_empty(), "{r}");
    assert_eq!(
        shards.iter().sum::<u64>() as f64,
        r["received_datagrams"].as_f64().unwrap(),
        "{r}"
    );
    let peak = r["peak_rss_bytes"].as_u64().unwrap();
    for third in ["rss_first_third", "rss_last_third"] {
        let median = r[third]["median_bytes"].as_u64().unwrap();
        let max = r[third]["max_bytes"].as_u64().unwrap();
        assert!(0 < median && median <= max && max <= peak, "{third}: {r}");
    }
    assert!(stdout.contains("RSS over the blast"), "{stdout}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    let _ = std::fs::remove_file(&plot);
    assert!(svg.contains("SUT RSS"), "no RSS series on the plot");
    assert_eq!(r["max_rss_bytes"].as_u64(), Some(256 << 20));

    // Above `--max-rss` the run fails, with the reason, like a loss would.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
        .args(["verify", "--no-progress", "--sluice"])
        .arg(&sluice)
        .args(["--rate", "2MB/s", "--duration", "1s", "--max-rss", "1MiB"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("is above --max-rss 1.00 MiB"), "{stdout}");
}

/// A configuration sluice refuses ends the run at once with sluice's own
/// reason, not after a 20 s wait for a listening line that never comes.
#[test]
fn verify_reports_why_the_sut_did_not_start() {
    let Some(sluice) = sibling_sluice_or_skip() else {
        return;
    };
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
        .args(["verify", "--no-progress", "--sluice"])
        .arg(&sluice)
        .args([
            "--rate",
            "1MB/s",
            "--duration",
            "1s",
            "--batch-max-age",
            "0s",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sluice exited before listening"),
        "{stderr}"
    );
    assert!(
        stderr.contains("batch_max_age: must be greater than zero"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

/// `--sut-cpus`: the SUT runs on the CPUs named (the kernel's own word for it
/// is checked by `verify`), the sender and the sinks on the rest, and the
/// report gives lines per SUT CPU. Needs two CPUs.
#[test]
fn verify_sut_cpus_splits_the_host() {
    use sluice_loadgen::cpus;
    let allowed = cpus::allowed().unwrap();
    if allowed.len() < 2 {
        eprintln!("one CPU here: --sut-cpus needs two; SKIPPED");
        return;
    }
    let sut = allowed[allowed.len() - 1];
    let rest = cpus::fmt_cpu_list(&allowed[..allowed.len() - 1]);
    let sut_arg = sut.to_string();
    let mut args = vec![
        "--sut-cpus",
        sut_arg.as_str(),
        "--rate",
        "5MB/s",
        "--duration",
        "2s",
    ];
    let sluice = sibling_sluice();
    let runs = match &sluice {
        Some(path) => {
            args.extend(["--compare-baseline", "--sluice", path.to_str().unwrap()]);
            vec!["baseline", "sluice"]
        }
        None => {
            eprintln!("no sluice binary beside sluice-loadgen: the baseline only");
            args.push("--baseline");
            vec!["run"]
        }
    };
    let (stdout, v) = verify_json("cpus", &args);
    assert!(
        stdout.contains(&format!("SUT on {sut}, sender and sinks on {rest}")),
        "{stdout}"
    );
    for key in runs {
        let r = &v[key];
        assert_eq!(r["pass"].as_bool(), Some(true), "{key}: {stdout}");
        assert_eq!(r["lost_lines_max"].as_u64(), Some(0), "{key}");
        assert_eq!(r["sut_cpus"].as_str(), Some(sut_arg.as_str()), "{key}");
        assert_eq!(r["harness_cpus"].as_str(), Some(rest.as_str()), "{key}");
        let per_cpu = r["lines_per_s_per_sut_cpu"].as_f64().unwrap();
        let lines = r["received_lines_per_s"].as_f64().unwrap();
        assert!(
            per_cpu > 0.0 && (per_cpu - lines).abs() < 1e-6 * lines,
            "{key}: {r}"
        );
    }

    // Every CPU for the SUT leaves none for the harness: refused, with why.
    let all = cpus::fmt_cpu_list(&allowed);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
        .args(["verify", "--no-progress", "--baseline", "--sut-cpus", &all])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("leaves no CPU"), "{stderr}");
}

/// `--balance datagram` reaches both SUTs: the baseline relay attaches the
/// reuseport program and still delivers everything, and sluice's shards
/// split the datagrams evenly (`shard_datagrams`) where the flow hash of
/// one source port would give one shard all of them.
#[test]
fn verify_balance_datagram_spreads_both_suts() {
    let (_, v) = verify_json(
        "balance-baseline",
        &[
            "--baseline",
            "--balance",
            "datagram",
            "--rate",
            "5MB/s",
            "--duration",
            "2s",
            "--baseline-threads",
            "2",
        ],
    );
    let r = &v["run"];
    assert_eq!(r["lost_lines_max"].as_u64(), Some(0), "{r}");
    assert_eq!(r["accounting_agrees"].as_bool(), Some(true), "{r}");
    let Some(sluice) = sibling_sluice_or_skip() else {
        return;
    };
    let (stdout, v) = verify_json(
        "balance-sluice",
        &[
            "--sluice",
            sluice.to_str().unwrap(),
            "--balance",
            "datagram",
            "--sources",
            "1",
            "--rate",
            "5MB/s",
            "--duration",
            "2s",
        ],
    );
    let r = &v["run"];
    assert_eq!(r["lost_lines_max"].as_u64(), Some(0), "{stdout}");
    let shards = shard_datagrams(r);
    let total: u64 = shards.iter().sum();
    assert!(total > 1000, "{shards:?}");
    if shards.len() > 1 {
        let fair = total / shards.len() as u64;
        assert!(
            shards.iter().all(|&d| d > fair / 2),
            "one source, spread per datagram: {shards:?}"
        );
        assert!(stdout.contains("shards    : "), "{stdout}");
    }
}

/// `--rules mixed`: sluice routes by all three rule kinds, each line to the
/// route of the first rule that matches, and still delivers every line 4×.
#[test]
fn verify_rules_route_every_line_by_its_first_matching_rule() {
    let Some(sluice) = sibling_sluice_or_skip() else {
        return;
    };
    let (stdout, v) = verify_json(
        "rules-mixed",
        &[
            "--sluice",
            sluice.to_str().unwrap(),
            "--rules",
            "mixed",
            "--rate",
            "5MB/s",
            "--duration",
            "2s",
        ],
    );
    let r = &v["run"];
    assert_eq!(r["lost_lines_max"].as_u64(), Some(0), "{stdout}");
    assert_eq!(r["amplification"].as_f64(), Some(4.0), "{stdout}");
    assert_eq!(r["rules"].as_str(), Some("mixed"), "{r}");
    let routed = r["routed_lines"].as_object().expect("routed_lines");
    let count = |route: &str| routed.get(route).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let total: f64 = routed.values().filter_map(|v| v.as_f64()).sum();
    assert_eq!(total, r["received_lines"].as_f64().unwrap(), "{routed:?}");
    // The generator's series cycle through four regions: a quarter of the
    // lines are in us-east-1 (the tags rule, first); of the rest, `disk`
    // goes to the regex rule's route and cpu, mem and net to their own.
    assert!((count("us-east") / total - 0.25).abs() < 0.01, "{routed:?}");
    for route in ["storage", "cpu", "mem", "net"] {
        assert!(
            (count(route) / total - 0.1875).abs() < 0.01,
            "{route}: {routed:?}"
        );
    }
    assert_eq!(count("junk"), 0.0, "{routed:?}");
    assert!(stdout.contains("(rules mixed)"), "{stdout}");
}
