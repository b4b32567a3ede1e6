//! Routing, fan-out, drops and isolation, on both receive paths.
use std::time::Duration;

use crate::support::*;

/// Generate one test per receive path from a body taking the `io_uring` setting.
macro_rules! both_paths {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn io_uring() {
                ($body)("on", "io_uring")
            }
            #[test]
            fn recvmmsg() {
                ($body)("off", "recvmmsg")
            }
        }
    };
}

fn assert_identity(s: &Sluice) {
    let m = s.metrics();
    let received = m.get("sluice_received_lines_total");
    let routed = m.sum("sluice_routed_lines_total");
    let dropped = m.sum("sluice_dropped_lines_total");
    assert_eq!(
        received,
        routed + dropped,
        "received = routed + dropped must hold (received {received}, routed {routed}, dropped {dropped})"
    );
}

both_paths!(
    routes_every_line_to_exactly_its_sinks,
    |mode: &str, path: &str| {
        let cpu_sink = HttpSink::start(Behaviour::Ok);
        let nyc_disk_sink = HttpSink::start(Behaviour::Ok);
        let junk_sink = HttpSink::start(Behaviour::Ok);
        let all_sink = HttpSink::start(Behaviour::Ok);
        let config = format!(
            "{}{}{}{}{}{}",
            base_config(mode),
            r#"
junkyard = "junk"
[[rule]]
type = "basic"
match = "cpu"
route = "cpu"
[[rule]]
type = "tags"
tags = [["dc", "nyc"]]
subject = "nyc"
[[rule]]
type = "regex"
match = "^disk,"
route = "disk"
"#,
            sink_config("cpu", &cpu_sink.url(), &["cpu"]),
            sink_config("nycdisk", &nyc_disk_sink.url(), &["nyc", "disk"]),
            sink_config("junk", &junk_sink.url(), &["junk"]),
            sink_config("all", &all_sink.url(), &["*"]),
        );
        // TOML needs top-level keys before tables: put junkyard first.
        let config = format!(
            "junkyard = \"junk\"\n{}",
            config.replace("\njunkyard = \"junk\"\n", "\n")
        );
        let s = Sluice::start(&config);
        let cpu = make_lines("cpu", 3000, ",dc=nyc");
        let nyc = make_lines("mem", 2000, ",dc=nyc");
        let disk = make_lines("disk", 1000, "");
        let junk = make_lines("net", 1500, ",dc=sfo");
        let mut all: Vec<String> = Vec::new();
        for i in 0..3000 {
            for group in [&cpu, &nyc, &disk, &junk] {
                if let Some(line) = group.get(i) {
                    all.push(line.clone());
                }
            }
        }
        send_lines(s.udp[0], &all, 1400);
        assert!(
            wait_until(Duration::from_secs(15), || all_sink.line_count()
                >= all.len()),
            "all-sink got {} of {}",
            all_sink.line_count(),
            all.len()
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(sorted(cpu_sink.lines()), sorted(cpu.clone()));
        assert_eq!(
            sorted(nyc_disk_sink.lines()),
            sorted([nyc.clone(), disk.clone()].concat())
        );
        assert_eq!(sorted(junk_sink.lines()), sorted(junk.clone()));
        assert_eq!(sorted(all_sink.lines()), sorted(all.clone()));
        // Routes with the same sinks share chunks: `nyc` and `disk` (both to
        // `nycdisk` and `all`) reach `nycdisk` in the order they were sent
        // from one source (one shard), not route by route.
        let nyc_or_disk: Vec<String> = all
            .iter()
            .filter(|l| nyc.contains(l) || disk.contains(l))
            .cloned()
            .collect();
        assert_eq!(nyc_disk_sink.lines(), nyc_or_disk);
        assert!(cpu_sink.paths().iter().all(|p| p == "/write?db=test"));
        let m = s.metrics();
        assert_eq!(m.get("sluice_received_lines_total"), all.len() as u64);
        assert_eq!(m.get("sluice_routed_lines_total{route=\"cpu\"}"), 3000);
        assert_eq!(m.get("sluice_routed_lines_total{route=\"nyc\"}"), 2000);
        assert_eq!(m.get("sluice_routed_lines_total{route=\"disk\"}"), 1000);
        assert_eq!(m.get("sluice_routed_lines_total{route=\"junk\"}"), 1500);
        assert_eq!(
            m.get("sluice_rule_matches_total{rule=\"1\",route=\"nyc\"}"),
            2000
        );
        assert_eq!(
            m.get("sluice_sink_lines_total{sink=\"all\"}"),
            all.len() as u64
        );
        assert_eq!(
            m.get(&format!("sluice_rx_path_shards{{path=\"{path}\"}}")),
            2
        );
        assert_identity(&s);
    }
);

both_paths!(
    four_sinks_on_one_route_each_get_every_line,
    |mode: &str, _path: &str| {
        let sinks: Vec<HttpSink> = (0..4).map(|_| HttpSink::start(Behaviour::Ok)).collect();
        let mut config = base_config(mode);
        for (i, sink) in sinks.iter().enumerate() {
            config.push_str(&sink_config(&format!("s{i}"), &sink.url(), &["*"]));
        }
        let s = Sluice::start(&config);
        let lines = make_lines("cpu", 20_000, ",region=eu");
        send_lines(s.udp[0], &lines, 8192);
        for sink in &sinks {
            assert!(wait_until(Duration::from_secs(15), || sink.line_count() >= lines.len()));
        }
        std::thread::sleep(Duration::from_millis(200));
        let expected = sorted(lines.clone());
        for sink in &sinks {
            assert_eq!(sorted(sink.lines()), expected);
            // Coalesced: far fewer POSTs than chunks of lines would need one by one.
            assert!(sink.bodies() < 200, "{} bodies", sink.bodies());
        }
        let m = s.metrics();
        assert_eq!(m.sum("sluice_sink_lines_total"), 4 * lines.len() as u64);
        assert_eq!(m.sum("sluice_sink_dropped_lines_total"), 0);
        // Every queue reports its bytes, and everything left them.
        for i in 0..sinks.len() {
            let key = format!("sluice_sink_queue_bytes{{sink=\"s{i}\"}}");
            assert!(m.has(&key), "{key} missing");
            assert_eq!(m.get(&key), 0, "{key}");
        }
        assert_identity(&s);
    }
);

both_paths!(
    invalid_lines_are_counted_and_never_forwarded,
    |mode: &str, _path: &str| {
        let sink = HttpSink::start(Behaviour::Ok);
        let config = format!(
            "{}{}",
            base_config(mode).replace("[listen]", "[sanity]\nmax_line_length = \"200B\"\n[listen]"),
            sink_config("s", &sink.url(), &["*"])
        );
        let s = Sluice::start(&config);
        let now = now_ns();
        let good = vec![
            format!("cpu,host=a value=1 {now}"),
            "cpu value=2i".to_string(),
            format!("cpu,host=b value=\"x\" {}", now + 1),
        ];
        let datagrams: Vec<Vec<u8>> = vec![
            // Bad neighbours do not cost the good lines of the same datagram.
            format!("{}\ncpu,host=a\n{}\ncpu value=\n", good[0], good[1]).into_bytes(),
            // Seconds sent as nanoseconds: 1970, out of the window.
            b"cpu value=1 1434055562\n".to_vec(),
            // Far future (2050).
            b"cpu value=1 2524608000000000000\n".to_vec(),
            // Too long.
            format!("cpu,host={} value=1\n", "x".repeat(300)).into_bytes(),
            // CRLF, comments, blank lines, no final newline.
            format!("# comment\r\n\r\n{}", good[2]).into_bytes(),
            // Binary garbage.
            vec![0, 0xff, b'\n', 0xfe],
        ];
        send_datagrams(s.udp[0], &datagrams);
        assert!(wait_until(Duration::from_secs(10), || sink.line_count() >= 3));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(sorted(sink.lines()), sorted(good.clone()));
        let m = s.metrics();
        assert_eq!(
            m.get("sluice_dropped_lines_total{reason=\"parse_error\"}"),
            4
        );
        assert_eq!(
            m.get("sluice_dropped_lines_total{reason=\"time_out_of_range\"}"),
            2
        );
        assert_eq!(m.get("sluice_dropped_lines_total{reason=\"too_long\"}"), 1);
        assert_eq!(m.get("sluice_received_lines_total"), 3 + 4 + 2 + 1);
        assert_eq!(m.get("sluice_received_datagrams_total"), 6);
        assert_identity(&s);
    }
);

both_paths!(
    a_dead_and_a_failing_sink_do_not_stop_the_others,
    |mode: &str, _path: &str| {
        let good_a = HttpSink::start(Behaviour::Ok);
        let good_b = HttpSink::start(Behaviour::Ok);
        let failing = HttpSink::start(Behaviour::Fail500);
        let hanging = HttpSink::start(Behaviour::Hang);
        let config = format!(
            "{}{}{}{}{}{}",
            base_config(mode),
            sink_config("good_a", &good_a.url(), &["*"]),
            sink_config("dead", &dead_url(), &["*"]),
            sink_config("failing", &failing.url(), &["*"]),
            sink_config("hanging", &hanging.url(), &["*"]),
            sink_config("good_b", &good_b.url(), &["*"]),
        );
        let s = Sluice::start(&config);
        let lines = make_lines("cpu", 10_000, "");
        send_lines(s.udp[0], &lines, 1400);
        for sink in [&good_a, &good_b] {
            assert!(
                wait_until(Duration::from_secs(15), || sink.line_count() >= lines.len()),
                "healthy sink got {} of {}",
                sink.line_count(),
                lines.len()
            );
            assert_eq!(sorted(sink.lines()), sorted(lines.clone()));
        }
        assert!(failing.requests() > 0);
        // The broken sinks give up after retry_max_age (1 s) and count it.
        assert!(wait_until(Duration::from_secs(15), || {
            let m = s.metrics();
            m.get("sluice_sink_dropped_lines_total{sink=\"dead\",reason=\"sink_gave_up\"}") > 0
                && m.get(
                    "sluice_sink_dropped_lines_total{sink=\"failing\",reason=\"sink_gave_up\"}",
                ) > 0
        }));
        let m = s.metrics();
        assert!(m.get("sluice_sink_retries_total{sink=\"failing\"}") > 0);
        assert!(m.get("sluice_sink_request_failures_total{sink=\"dead\"}") > 0);
        assert_eq!(
            m.get("sluice_sink_lines_total{sink=\"good_b\"}"),
            lines.len() as u64
        );
        assert_identity(&s);
    }
);

both_paths!(
    truncated_datagrams_are_dropped_and_counted,
    |mode: &str, _path: &str| {
        let sink = HttpSink::start(Behaviour::Ok);
        let config = format!(
            "{}{}",
            base_config(mode).replace("io_uring =", "max_datagram_size = \"2KB\"\nio_uring ="),
            sink_config("s", &sink.url(), &["*"])
        );
        let s = Sluice::start(&config);
        let small = make_lines("cpu", 5, "");
        let big = make_lines("big", 100, "");
        let mut big_datagram = big.join("\n").into_bytes();
        big_datagram.push(b'\n');
        assert!(big_datagram.len() > 2048);
        let mut small_datagram = small.join("\n").into_bytes();
        small_datagram.push(b'\n');
        send_datagrams(s.udp[0], &[big_datagram, small_datagram]);
        assert!(wait_until(Duration::from_secs(10), || sink.line_count() >= 5));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(sorted(sink.lines()), sorted(small));
        let m = s.metrics();
        assert_eq!(
            m.get("sluice_dropped_datagrams_total{reason=\"truncated\"}"),
            1
        );
    }
);
