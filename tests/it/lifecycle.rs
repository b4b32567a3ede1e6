//! Start-up, configuration errors, the admin server and orderly shutdown.
use std::process::Command;
use std::time::Duration;

use crate::support::*;

#[test]
fn shutdown_delivers_everything_still_buffered() {
    let sink = HttpSink::start(Behaviour::Ok);
    // Long ages: nothing would be sent before the SIGTERM without the final drain.
    let config = format!(
        "{}{}",
        base_config("auto").replace("max_age = \"20ms\"", "max_age = \"1h\""),
        sink_config("s", &sink.url(), &["*"])
            .replace("batch_max_age = \"50ms\"", "batch_max_age = \"1h\"")
    );
    let mut s = Sluice::start(&config);
    let lines = make_lines("cpu", 2000, "");
    send_lines(s.udp[0], &lines, 1400);
    // Wait until every line is received (not yet delivered).
    assert!(wait_until(Duration::from_secs(10), || {
        s.metrics().get("sluice_received_lines_total") >= lines.len() as u64
    }));
    assert_eq!(
        sink.line_count(),
        0,
        "nothing should be delivered before shutdown"
    );
    assert_eq!(s.terminate(), 0);
    assert_eq!(sorted(sink.lines()), sorted(lines));
}

#[test]
fn shutdown_with_a_hanging_sink_still_exits_in_time() {
    let hanging = HttpSink::start(Behaviour::Hang);
    let config = format!(
        "{}{}",
        base_config("auto").replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"1s\""),
        sink_config("h", &hanging.url(), &["*"]).replace("timeout = \"2s\"", "timeout = \"30s\"")
    );
    let mut s = Sluice::start(&config);
    send_lines(s.udp[0], &make_lines("cpu", 100, ""), 1400);
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(s.terminate(), 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        s.stderr().contains("not delivered"),
        "stderr: {}",
        s.stderr()
    );
}

#[test]
fn admin_endpoints() {
    let s = Sluice::start(&base_config("auto"));
    assert_eq!(http_get(s.admin, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(s.admin, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(s.admin, "/nope").unwrap().0, 404);
    let (status, body) = http_get(s.admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    for name in [
        "sluice_received_datagrams_total",
        "sluice_received_bytes_total",
        "sluice_received_lines_total",
        "sluice_dropped_lines_total{reason=\"parse_error\"}",
        "sluice_kernel_drops_total",
        "sluice_rx_path_shards",
        "sluice_parse_errors_total{kind=\"bad_field\"}",
        "sluice_rx_backlog_bytes",
        "sluice_rx_backlog_max_bytes",
        "sluice_rx_batches_total",
        "sluice_rx_stolen_datagrams_total",
        "sluice_chunk_buffers_allocated_total",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    // The buffer the backlog is measured against: the kernel's doubled
    // `read_buffer_size` (4MB here), or what rmem_max left without CAP_NET_ADMIN.
    let buffer = s.metrics().get("sluice_rx_buffer_bytes");
    assert!(
        buffer > 0 && buffer <= 8 << 20,
        "sluice_rx_buffer_bytes {buffer}"
    );
    // With no sink, lines are dropped with reason no_sink, still counted.
    send_lines(s.udp[0], &make_lines("cpu", 10, ""), 1400);
    assert!(wait_until(Duration::from_secs(5), || {
        s.metrics()
            .get("sluice_dropped_lines_total{reason=\"no_sink\"}")
            == 10
    }));
    // Per shard (two here), summing to the total.
    let m = s.metrics();
    assert_eq!(
        m.sum("sluice_shard_received_datagrams_total"),
        m.get("sluice_received_datagrams_total")
    );
    for shard in ["0", "1"] {
        for name in [
            "sluice_shard_received_datagrams_total",
            "sluice_shard_rx_backlog_bytes",
            "sluice_shard_stolen_datagrams_total",
        ] {
            let series = format!("{name}{{shard=\"{shard}\"}}");
            assert!(m.values.contains_key(&series), "{series} missing");
        }
    }
}

/// `chunk.pool` through the real binary: chunk buffers come from the
/// shard's pool and go back to it once the sink has posted them, so four
/// times more chunks than the pool holds pass without one allocation
/// (`sluice_chunk_buffers_allocated_total` stays 0); with `pool = "0"`
/// every chunk is allocated. Every line arrives either way.
#[test]
fn chunk_buffers_come_from_the_pool_and_go_back() {
    const ROUNDS: usize = 20;
    // ≈50-byte lines: ≈25 chunks of 4 KB a round, ≈500 in all, against a
    // pool of 128 buffers a shard (1 MB over two shards).
    const LINES: usize = 2000;
    for pool in ["1MB", "0"] {
        let sink = HttpSink::start(Behaviour::Ok);
        let config = format!(
            "{}{}",
            base_config("auto").replace(
                "max_size = \"64KB\"",
                &format!("max_size = \"4KB\"\npool = \"{pool}\"")
            ),
            sink_config("s", &sink.url(), &["*"])
        );
        let s = Sluice::start(&config);
        let mut sent = Vec::new();
        for round in 0..ROUNDS {
            let lines = make_lines(&format!("r{round}"), LINES, "");
            send_lines(s.udp[0], &lines, 1400);
            sent.extend(lines);
            assert!(
                wait_until(Duration::from_secs(10), || sink.line_count() == sent.len()),
                "pool {pool}, round {round}: {} of {} lines arrived",
                sink.line_count(),
                sent.len()
            );
        }
        let allocated = s.metrics().get("sluice_chunk_buffers_allocated_total");
        if pool == "0" {
            // At most ≈90 of these lines fit a 4 KB chunk.
            assert!(allocated >= 400, "pool 0: {allocated} chunks allocated");
        } else {
            assert_eq!(allocated, 0, "pool {pool}: chunks allocated past the pool");
        }
        assert_eq!(sorted(sink.lines()), sorted(sent));
    }
}

/// `listen.wake_coalesce` through the real binary: a steady trickle into one
/// shard is taken in about one batch per interval (`sluice_rx_batches`),
/// every line still delivered; with 0 the shard wakes for nearly every
/// datagram.
#[test]
fn wake_coalesce_batches_a_trickle_and_loses_nothing() {
    const DATAGRAMS: usize = 200;
    let mut batches = Vec::new();
    for coalesce in ["25ms", "0"] {
        let sink = HttpSink::start(Behaviour::Ok);
        let config = format!(
            "{}{}",
            base_config("auto").replace(
                "read_buffer_size = \"4MB\"",
                &format!("read_buffer_size = \"4MB\"\nwake_coalesce = \"{coalesce}\"")
            ),
            sink_config("s", &sink.url(), &["*"])
        );
        let mut s = Sluice::start(&config);
        // One source socket: one 4-tuple, so one shard takes all of it.
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let lines = make_lines("cpu", DATAGRAMS, "");
        for line in &lines {
            tx.send_to(line.as_bytes(), s.udp[0]).unwrap();
            // ≥ 400 ms in all: at least 16 intervals of 25 ms.
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(wait_until(Duration::from_secs(10), || sink.lines().len() == DATAGRAMS));
        let m = s.metrics();
        assert_eq!(m.get("sluice_received_datagrams_total"), DATAGRAMS as u64);
        // One source address and port: one shard took every datagram.
        let per_shard: Vec<u64> = ["0", "1"]
            .iter()
            .map(|i| {
                m.get(&format!(
                    "sluice_shard_received_datagrams_total{{shard=\"{i}\"}}"
                ))
            })
            .collect();
        assert_eq!(
            per_shard.iter().max(),
            Some(&(DATAGRAMS as u64)),
            "{per_shard:?}"
        );
        batches.push(m.get("sluice_rx_batches_total"));
        assert_eq!(s.terminate(), 0);
    }
    let (coalesced, eager) = (batches[0], batches[1]);
    eprintln!("{coalesced} batches with 25 ms, {eager} without");
    assert!(
        (1..=60).contains(&coalesced),
        "{coalesced} wake-ups for {DATAGRAMS} datagrams over ≥ 400 ms at 25 ms"
    );
    assert!(eager >= 100, "only {eager} wake-ups without coalescing");
}

/// `listen.steal` through the real binary: one source (one shard by the
/// flow hash) whose shard pauses after each wake-up (`wake_coalesce` on the
/// recvmmsg path sleeps in user space), so its queue passes the
/// threshold (a sixteenth of a 256 KB buffer's drop point) between
/// wake-ups. The other shard, with nothing of its own, takes part of it;
/// every line arrives once. With `steal = false` nobody helps.
#[test]
fn a_caught_up_shard_steals_from_a_sibling_that_is_behind() {
    const DATAGRAMS: usize = 300;
    const LINES: usize = 30;
    let mut stolen = Vec::new();
    for steal in [true, false] {
        let sink = HttpSink::start(Behaviour::Ok);
        let config = format!(
            "{}{}",
            base_config("off")
                .replace(
                    "read_buffer_size = \"4MB\"",
                    &format!(
                        "read_buffer_size = \"256KB\"\nwake_coalesce = \"100ms\"\nsteal = {steal}"
                    )
                )
                // A shard's wait also ends when an open chunk is due; keep
                // that from cutting the pause short.
                .replace("max_age = \"20ms\"", "max_age = \"1s\""),
            sink_config("s", &sink.url(), &["*"])
        );
        let mut s = Sluice::start(&config);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Thirty lines a datagram (~1.4 KB; 3.6 KB of kernel memory each),
        // 5 datagrams every 10 ms: the 16 or more that gather while the
        // shard pauses (up to its 50 ms longest wait) pass the threshold
        // (≤ 32 KB) and stay far from the drop point (≥ 416 KB).
        let lines = make_lines("cpu", DATAGRAMS * LINES, "");
        for (i, chunk) in lines.chunks(LINES).enumerate() {
            tx.send_to(chunk.join("\n").as_bytes(), s.udp[0]).unwrap();
            if i % 5 == 4 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert!(wait_until(Duration::from_secs(10), || sink.lines().len()
            == DATAGRAMS * LINES));
        let m = s.metrics();
        assert_eq!(m.get("sluice_received_datagrams_total"), DATAGRAMS as u64);
        assert_eq!(m.get("sluice_kernel_drops_total"), 0);
        let mut got = sink.lines();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), DATAGRAMS * LINES, "a line arrived twice");
        assert_eq!(
            m.sum("sluice_shard_stolen_datagrams_total"),
            m.get("sluice_rx_stolen_datagrams_total")
        );
        stolen.push(m.get("sluice_rx_stolen_datagrams_total"));
        assert_eq!(s.terminate(), 0);
    }
    eprintln!("stolen with steal on: {}, off: {}", stolen[0], stolen[1]);
    assert!(
        stolen[0] > 0,
        "nothing stolen from a shard that pauses between wake-ups"
    );
    assert_eq!(stolen[1], 0);
}

/// `Cpus_allowed_list` of each `shard-*` thread of `pid`, and of the process.
fn shard_cpu_lists(pid: u32) -> (Vec<String>, String) {
    let allowed = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .expect("Cpus_allowed_list in /proc status")
    };
    let process = allowed(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap());
    let mut shards = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.starts_with("shard-") {
            shards.push(allowed(
                &std::fs::read_to_string(task.join("status")).unwrap(),
            ));
        }
    }
    (shards, process)
}

/// Whether a CPU list in `/proc`'s syntax (`0-3,6`) names exactly one CPU.
fn single_cpu(list: &str) -> bool {
    !list.contains(',') && !list.contains('-')
}

#[test]
fn shards_are_pinned_unless_pin_is_false() {
    let pinned = Sluice::start(&base_config("auto"));
    let (shards, process) = shard_cpu_lists(pinned.pid());
    assert_eq!(shards.len(), 2, "{shards:?}");
    for list in &shards {
        assert!(
            single_cpu(list),
            "pinned shard allowed on {list} ({process} for the process)"
        );
    }
    if !single_cpu(&process) {
        // Two shards on a host with two or more CPUs sit on different ones.
        assert_ne!(shards[0], shards[1], "{shards:?}");
    }

    let config = base_config("auto").replace("shards = 2", "shards = 2\npin = false");
    let free = Sluice::start(&config);
    let (shards, process) = shard_cpu_lists(free.pid());
    assert_eq!(shards.len(), 2, "{shards:?}");
    for list in &shards {
        assert_eq!(list, &process, "an unpinned shard keeps the process's CPUs");
    }
}

/// Niceness of each thread of `pid` whose name starts with `prefix`.
fn thread_nices(pid: u32, prefix: &str) -> Vec<i64> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            // Fields after the parenthesised name; nice is field 19 overall.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            nices.push(after.split(' ').nth(16).unwrap().parse().unwrap());
        }
    }
    nices
}

#[test]
fn shards_run_at_listen_nice_and_above_the_writers() {
    let sink = HttpSink::start(Behaviour::Ok);
    let with_sink = |head: String| head + &sink_config("a", &sink.url(), &["*"]);

    // Lowering priority needs no privilege: the value is taken as given.
    let config = with_sink(base_config("auto").replace("shards = 2", "shards = 2\nnice = 3"));
    let low = Sluice::start(&config);
    assert_eq!(thread_nices(low.pid(), "shard-"), vec![3, 3]);
    let shard_nice = |s: &Sluice, shard: u32| {
        s.metrics()
            .values
            .get(&format!("sluice_shard_nice{{shard=\"{shard}\"}}"))
            .copied()
    };
    assert_eq!(
        (shard_nice(&low, 0), shard_nice(&low, 1)),
        (Some(3.0), Some(3.0))
    );

    // The default raises the shards above everything else (-5) where the
    // process may, and says once that it could not where it may not.
    let default = Sluice::start(&with_sink(base_config("auto")));
    let shards = thread_nices(default.pid(), "shard-");
    let refused = "the shards run at niceness 0";
    // /metrics says what the threads run at, either way.
    let at = shards[0] as f64;
    assert_eq!(
        (shard_nice(&default, 0), shard_nice(&default, 1)),
        (Some(at), Some(at))
    );
    if shards == vec![-5, -5] {
        assert!(!default.stderr().contains(refused), "{}", default.stderr());
    } else {
        assert_eq!(shards, vec![0, 0]);
        // stderr is collected by a reader thread: let it catch up.
        wait_until(Duration::from_secs(5), || {
            default.stderr().contains(refused)
        });
        assert_eq!(
            default.stderr().matches(refused).count(),
            1,
            "{}",
            default.stderr()
        );
    }
    // The connection threads keep their own niceness (5), below the shards.
    // Each sets it as it starts, which may be after sluice said it is up.
    let mut writers = Vec::new();
    let settled = wait_until(Duration::from_secs(5), || {
        writers = thread_nices(default.pid(), "sink-a");
        !writers.is_empty() && writers.iter().all(|&n| n == 5)
    });
    assert!(settled, "{writers:?}");
}

#[test]
fn bad_config_refuses_to_start_and_names_the_key() {
    let dir = std::env::temp_dir().join(format!("sluice-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[listen]\nshards = 2\nio_uring = \"sometimes\"\n").unwrap();
    let out = Command::new(sluice_bin())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listen.io_uring"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");

    std::fs::write(&path, "[sink]\nname = 1\n").unwrap();
    let out = Command::new(sluice_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn check_prints_the_rule_table() {
    let dir = std::env::temp_dir().join(format!("sluice-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ok.toml");
    std::fs::write(
        &path,
        "[[rule]]\ntype = \"basic\"\nmatch = \"cpu\"\nroute = \"cpu\"\n[[sink]]\nname = \"a\"\nurl = \"http://127.0.0.1:8086/write?db=x\"\nroutes = [\"cpu\"]\n",
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[0] basic    measurement == \"cpu\"  -> route \"cpu\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"junk\" -> (no sink"), "{stdout}");
    // The chunk settings, the pool's default included (64 MiB), and the
    // sink's queue bounds.
    assert!(
        stdout.contains("chunks: max_size=1048576 max_age=100ms pool=67108864"),
        "{stdout}"
    );
    assert!(
        stdout.contains("queue_max_batches=4096 queue_max_size=67108864"),
        "{stdout}"
    );
}

#[test]
fn print_default_config_is_the_embedded_default_and_checks() {
    let out = Command::new(sluice_bin())
        .arg("print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("udp = [\"0.0.0.0:8089\"]"));
    assert!(text.contains("http://127.0.0.1:8086/write?db=telegraf"));
    assert_check_accepts("default", &text);
}

/// `sluice check` accepts `text` as a configuration file.
fn assert_check_accepts(name: &str, text: &str) {
    let path = std::env::temp_dir().join(format!("sluice-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(sluice_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The configuration example in README.md is a valid configuration.
#[test]
fn readme_config_example_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("```toml\n").expect("README has a toml example") + 8;
    let end = start + readme[start..].find("```").unwrap();
    assert_check_accepts("readme", &readme[start..end]);
}
