//! Protecting the backends: timestamp units, budgets, dead letters, the
//! debug pages and `sluice explain` — through the real binary.
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-protect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Run `sluice explain` on stdin; one JSON value per output line.
fn explain(config: &str, input: &str) -> Vec<serde_json::Value> {
    let path = write_config(&format!("explain-{}.toml", input.len()), config);
    let mut child = Command::new(sluice_bin())
        .args(["explain", "--config"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

const RULES: &str = r#"
[[rule]]
type = "basic"
match = "cpu"
route = "cpu"
[[sink]]
name = "main"
url = "http://127.0.0.1:9/write?db=x"
routes = ["cpu"]
"#;

#[test]
fn explain_reports_every_reason_precisely() {
    let now = now_ns();
    let cases: Vec<(String, &str)> = vec![
        ("cpu value=".into(), "bad_field"),
        ("cpu".into(), "no_fields"),
        ("cpu,host=a,host=b value=1".into(), "duplicate_tag"),
        ("cpu,host value=1".into(), "bad_tag"),
        ("cpu value=1a".into(), "bad_number"),
        (
            "cpu value=9223372036854775808i".into(),
            "number_out_of_range",
        ),
        ("cpu value=\"open".into(), "unterminated_string"),
        ("cpu value=1 12x".into(), "bad_timestamp"),
        (
            "cpu,t=\u{FFFD} v=1".replace('\u{FFFD}', "\u{00e9}"),
            "accept",
        ),
        ("cpu value=1 1434055562".into(), "time_out_of_range"),
        (format!("cpu v=\"{}\"", "x".repeat(70_000)), "too_long"),
        ("mem value=1".into(), "no_sink"),
        (",host=a value=1".into(), "bad_measurement"),
        (format!("{} v=1", "k".repeat(65_531)), "key_too_long"),
        (format!("cpu,host=a value=1i,s=\"x y\" {now}"), "accept"),
    ];
    let input: String = cases.iter().map(|(l, _)| format!("{l}\n")).collect();
    let out = explain(RULES, &input);
    assert_eq!(out.len(), cases.len());
    for ((line, expected), got) in cases.iter().zip(&out) {
        let verdict = got["verdict"].as_str().unwrap();
        let label = if verdict == "accept" {
            "accept"
        } else {
            got["reason"].as_str().unwrap()
        };
        assert_eq!(
            label,
            *expected,
            "line {:?}: {}",
            &line[..line.len().min(60)],
            &got.to_string()[..got.to_string().len().min(300)]
        );
    }
    let last = out.last().unwrap();
    assert_eq!(last["measurement"], "cpu");
    assert_eq!(last["tags"]["host"], "a");
    assert_eq!(last["fields"]["value"], 1);
    assert_eq!(last["fields"]["s"], "x y");
    assert_eq!(last["timestamp_ns"], now);
    assert_eq!(last["rule"], 0);
    assert_eq!(last["route"], "cpu");
    assert_eq!(last["sinks"], serde_json::json!(["main"]));
    // A line that routes to no sink still says where it would have gone.
    assert_eq!(out[11]["route"], "junk");
    // Key length counts like 1.x: series key + field separator + field key.
    assert_eq!(out[13]["reason"], "key_too_long");
}

#[test]
fn explain_invalid_utf8_is_its_own_reason() {
    let path = write_config("utf8.toml", RULES);
    let mut child = Command::new(sluice_bin())
        .args(["explain", "--config"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"m,t=\xC3\x28 v=1\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "invalid_utf8");
}

#[test]
fn auto_precision_normalises_forwarded_timestamps() {
    let sink = HttpSink::start(Behaviour::Ok);
    let config = format!(
        "{}{}",
        base_config("auto").replace(
            "[listen]",
            "[sanity]\nprecision = \"auto\"\nstamp_missing = true\n[listen]"
        ),
        sink_config("s", &sink.url(), &["*"])
    );
    let s = Sluice::start(&config);
    let ns = now_ns();
    let (secs, ms, us) = (ns / 1_000_000_000, ns / 1_000_000, ns / 1_000);
    let lines = vec![
        format!("cpu,u=s v=1 {secs}"),
        format!("cpu,u=ms v=1 {ms}"),
        format!("cpu,u=us v=1 {us}"),
        format!("cpu,u=ns v=1 {ns}"),
        "cpu,u=none v=1".to_string(),
    ];
    send_lines(s.udp[0], &lines, 1400);
    assert!(wait_until(Duration::from_secs(10), || sink.line_count() >= 5));
    let got = sorted(sink.lines());
    let find = |tag: &str| {
        got.iter()
            .find(|l| l.starts_with(&format!("cpu,u={tag} ")))
            .unwrap()
            .clone()
    };
    assert_eq!(find("s"), format!("cpu,u=s v=1 {}", secs * 1_000_000_000));
    assert_eq!(find("ms"), format!("cpu,u=ms v=1 {}", ms * 1_000_000));
    assert_eq!(find("us"), format!("cpu,u=us v=1 {}", us * 1_000));
    assert_eq!(find("ns"), format!("cpu,u=ns v=1 {ns}"));
    let stamped: i64 = find("none").rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (stamped - ns).abs() < 60_000_000_000,
        "stamped with receive time"
    );
}

#[test]
fn cardinality_budget_diverts_new_series_and_keeps_existing_ones() {
    let sink = HttpSink::start(Behaviour::Ok);
    let rejects = HttpSink::start(Behaviour::Ok);
    // One shard, so the per-shard budget is the whole budget.
    let config = format!(
        "{}{}{}{}",
        base_config("auto").replace("shards = 2", "shards = 1"),
        "[cardinality]\nmax_series = 3\n[dead_letter]\nroute = \"rejects\"\n",
        sink_config("s", &sink.url(), &["*"]),
        sink_config("dead", &rejects.url(), &["rejects"]),
    );
    let s = Sluice::start(&config);
    let ts = now_ns();
    let mut lines = Vec::new();
    for round in 0..3 {
        for host in 0..10 {
            lines.push(format!("exploding,host=h{host} v={round} {}", ts + round));
        }
    }
    lines.push(format!("calm,host=a v=1 {ts}"));
    send_lines(s.udp[0], &lines, 1400);
    assert!(wait_until(Duration::from_secs(10), || {
        s.metrics()
            .get("sluice_dropped_lines_total{reason=\"cardinality\"}")
            == 21
    }));
    assert!(wait_until(Duration::from_secs(10), || sink.line_count()
        >= 10
        && rejects.line_count() >= 21));
    std::thread::sleep(Duration::from_millis(200));
    let got = sink.lines();
    // The first three series keep flowing in every round; the calm measurement is untouched.
    assert_eq!(got.len(), 10, "{got:?}");
    for host in 0..3 {
        assert_eq!(
            got.iter()
                .filter(|l| l.starts_with(&format!("exploding,host=h{host} ")))
                .count(),
            3
        );
    }
    assert!(got.iter().any(|l| l.starts_with("calm,")));
    // Diverted, not lost: the dead-letter sink has each with its reason; the "*" sink has none.
    let dead = rejects.lines();
    assert_eq!(dead.len(), 21);
    assert!(dead
        .iter()
        .all(|l| l.starts_with("sluice_reject,reason=cardinality line=\"exploding,host=h")));
    assert!(!got.iter().any(|l| l.starts_with("sluice_reject")));
    let m = s.metrics();
    assert_eq!(m.get("sluice_dead_lettered_lines_total"), 21);
    assert_eq!(
        m.get("sluice_received_lines_total"),
        m.sum("sluice_routed_lines_total") + m.sum("sluice_dropped_lines_total")
    );
    // The operator's view.
    assert!(wait_until(Duration::from_secs(5), || {
        let (_, body) = http_get(s.admin, "/debug/cardinality").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["top_by_series"][0]["measurement"] == "exploding"
            && v["top_by_series"][0]["rejected_cardinality"] == 21
    }));
    assert!(wait_until(Duration::from_secs(5), || {
        let (_, body) = http_get(s.admin, "/debug/rejects").unwrap();
        body.contains("\"cardinality\"") && body.contains("exploding,host=h")
    }));
}

#[test]
fn rate_budget_limits_a_flooding_measurement() {
    let sink = HttpSink::start(Behaviour::Ok);
    let config = format!(
        "{}{}{}",
        base_config("off").replace("shards = 2", "shards = 1"),
        "[cardinality]\n[[cardinality.limit]]\nmeasurement = \"flood\"\nmax_lines_per_second = 50\n",
        sink_config("s", &sink.url(), &["*"]),
    );
    let s = Sluice::start(&config);
    let mut lines = make_lines("flood", 500, "");
    lines.extend(make_lines("quiet", 20, ""));
    send_lines(s.udp[0], &lines, 1400);
    assert!(wait_until(Duration::from_secs(10), || {
        s.metrics().get("sluice_received_lines_total") == 520
    }));
    std::thread::sleep(Duration::from_millis(300));
    let m = s.metrics();
    let limited = m.get("sluice_dropped_lines_total{reason=\"rate_limited\"}");
    // All sent within a second or two: at most 50 per second pass.
    assert!(limited >= 500 - 150, "limited {limited}");
    let got = sink.lines();
    assert_eq!(got.iter().filter(|l| l.starts_with("quiet,")).count(), 20);
    assert_eq!(got.len() as u64, 520 - limited);
}

#[test]
fn rejected_lines_go_to_dead_letters_only_for_chosen_reasons() {
    let main = HttpSink::start(Behaviour::Ok);
    let dead = HttpSink::start(Behaviour::Ok);
    let config = format!(
        "{}{}{}{}",
        base_config("on"),
        "[dead_letter]\nroute = \"bad\"\nreasons = [\"parse_error\"]\n",
        sink_config("main", &main.url(), &["*"]),
        sink_config("dead", &dead.url(), &["bad"]),
    );
    let s = Sluice::start(&config);
    send_datagrams(
        s.udp[0],
        &[b"cpu value=\ncpu,a=1,a=2 v=1\ncpu v=1 1434055562\ncpu v=2\n".to_vec()],
    );
    assert!(wait_until(Duration::from_secs(10), || dead.line_count()
        >= 2
        && main.line_count() >= 1));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(main.lines(), vec!["cpu v=2".to_string()]);
    assert_eq!(
        sorted(dead.lines())
            .iter()
            .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
            .collect::<Vec<_>>(),
        vec![
            "sluice_reject,reason=bad_field line=\"cpu value=\"".to_string(),
            "sluice_reject,reason=duplicate_tag line=\"cpu,a=1,a=2 v=1\"".to_string(),
        ]
    );
    // time_out_of_range was not chosen: counted only.
    assert_eq!(
        s.metrics()
            .get("sluice_dropped_lines_total{reason=\"time_out_of_range\"}"),
        1
    );
}

/// Every scanner rejection class, sent over real UDP, lands in its own
/// `sluice_parse_errors_total{kind}` counter; the good line beside them
/// is delivered, the bad ones never are.
#[test]
fn every_parse_error_kind_is_counted_over_udp() {
    let sink = HttpSink::start(Behaviour::Ok);
    let config = format!(
        "{}{}",
        base_config("auto"),
        sink_config("s", &sink.url(), &["*"])
    );
    let s = Sluice::start(&config);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad_measurement", b",host=a v=1".to_vec()),
        ("bad_tag", b"cpu,host v=1".to_vec()),
        ("duplicate_tag", b"cpu,a=1,a=2 v=1".to_vec()),
        ("bad_field", b"cpu value=".to_vec()),
        ("no_fields", b"cpu".to_vec()),
        ("bad_number", b"cpu value=1a".to_vec()),
        (
            "number_out_of_range",
            b"cpu value=9223372036854775808i".to_vec(),
        ),
        ("unterminated_string", b"cpu value=\"open".to_vec()),
        ("bad_timestamp", b"cpu value=1 12x".to_vec()),
        ("invalid_utf8", b"cpu,t=\xff v=1".to_vec()),
    ];
    // One bad line per datagram, plus a datagram of plain good lines (the
    // vector fast path) with a bad one in the middle.
    let mut datagrams: Vec<Vec<u8>> = cases.iter().map(|(_, line)| line.clone()).collect();
    let now = now_ns();
    let good = vec![
        format!("cpu,host=a value=1 {now}"),
        format!("cpu,host=b value=2i,ok=t {}", now + 1),
    ];
    datagrams.push(format!("{}\ncpu value=1.5.5\n{}\n", good[0], good[1]).into_bytes());
    send_datagrams(s.udp[0], &datagrams);
    assert!(wait_until(Duration::from_secs(10), || sink.line_count() >= 2));
    assert!(wait_until(Duration::from_secs(5), || {
        s.metrics().get("sluice_received_lines_total") == cases.len() as u64 + 3
    }));
    let m = s.metrics();
    for (kind, line) in &cases {
        let expected = if *kind == "bad_number" { 2 } else { 1 };
        assert_eq!(
            m.get(&format!("sluice_parse_errors_total{{kind=\"{kind}\"}}")),
            expected,
            "{kind} for {:?}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(
        m.get("sluice_dropped_lines_total{reason=\"parse_error\"}"),
        cases.len() as u64 + 1
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sorted(sink.lines()), sorted(good));
}

/// `[[cardinality.route]]`: a series budget for everything one route
/// receives, across measurements; other routes are not limited by it.
#[test]
fn route_budget_limits_series_across_measurements() {
    let dev = HttpSink::start(Behaviour::Ok);
    let prod = HttpSink::start(Behaviour::Ok);
    let config = format!(
        "{}{}{}{}",
        base_config("auto").replace("shards = 2", "shards = 1"),
        "[[rule]]\ntype = \"tags\"\ntags = [[\"env\", \"dev\"]]\nroute = \"dev\"\n\
         [[cardinality.route]]\nroute = \"dev\"\nmax_series = 4\n",
        sink_config("dev", &dev.url(), &["dev"]),
        sink_config("prod", &prod.url(), &["junk"]),
    );
    let s = Sluice::start(&config);
    let ts = now_ns();
    let mut lines = Vec::new();
    // Three measurements × three hosts in dev: 9 series for a budget of 4.
    for m in ["cpu", "mem", "disk"] {
        for host in 0..3 {
            lines.push(format!("{m},env=dev,host=h{host} v=1 {ts}"));
        }
    }
    // The same shape in prod is not budgeted.
    for m in ["cpu", "mem", "disk"] {
        for host in 0..3 {
            lines.push(format!("{m},env=prod,host=h{host} v=1 {ts}"));
        }
    }
    // Existing dev series keep flowing.
    lines.push(format!("cpu,env=dev,host=h0 v=2 {}", ts + 1));
    send_lines(s.udp[0], &lines, 1400);
    assert!(wait_until(Duration::from_secs(10), || {
        dev.line_count() >= 5 && prod.line_count() >= 9
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(dev.line_count(), 5, "{:?}", dev.lines());
    assert_eq!(prod.line_count(), 9);
    let m = s.metrics();
    assert_eq!(
        m.get("sluice_dropped_lines_total{reason=\"cardinality\"}"),
        5
    );
    assert_identity_protect(&s);
    assert!(wait_until(Duration::from_secs(5), || {
        let (_, body) = http_get(s.admin, "/debug/cardinality").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["routes"][0]["measurement"] == "dev"
            && v["routes"][0]["series"] == 4
            && v["routes"][0]["rejected_cardinality"] == 5
    }));
    // `sluice check` shows the budget.
    let path = write_config("route-budget.toml", &config);
    let out = Command::new(sluice_bin())
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("route \"dev\": max_series=4 max_lines_per_second=off"),
        "{stdout}"
    );
    // A budget for a route that does not exist is a config error naming the key.
    let bad = format!(
        "{}[[cardinality.route]]\nroute = \"nope\"\nmax_series = 1\n",
        base_config("auto")
    );
    let path = write_config("bad-route-budget.toml", &bad);
    let out = Command::new(sluice_bin())
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cardinality.route[0].route") && stderr.contains("\"nope\""),
        "{stderr}"
    );
}

fn assert_identity_protect(s: &Sluice) {
    let m = s.metrics();
    assert_eq!(
        m.get("sluice_received_lines_total"),
        m.sum("sluice_routed_lines_total") + m.sum("sluice_dropped_lines_total")
    );
}

/// A route's lines-per-second budget limits everything routed there, across
/// measurements, and leaves other routes alone.
#[test]
fn route_rate_budget_limits_a_flooding_route() {
    let burst = HttpSink::start(Behaviour::Ok);
    let other = HttpSink::start(Behaviour::Ok);
    let config = format!(
        "{}{}{}{}",
        base_config("off").replace("shards = 2", "shards = 1"),
        "[[rule]]\ntype = \"tags\"\ntags = [[\"env\", \"burst\"]]\nroute = \"burst\"\n\
         [[cardinality.route]]\nroute = \"burst\"\nmax_lines_per_second = 50\n",
        sink_config("burst", &burst.url(), &["burst"]),
        sink_config("other", &other.url(), &["junk"]),
    );
    let s = Sluice::start(&config);
    let mut lines = make_lines("a", 250, ",env=burst");
    lines.extend(make_lines("b", 250, ",env=burst"));
    lines.extend(make_lines("calm", 20, ""));
    send_lines(s.udp[0], &lines, 1400);
    assert!(wait_until(Duration::from_secs(10), || {
        s.metrics().get("sluice_received_lines_total") == 520
    }));
    std::thread::sleep(Duration::from_millis(300));
    let m = s.metrics();
    let limited = m.get("sluice_dropped_lines_total{reason=\"rate_limited\"}");
    // All sent within a second or two: at most 50 per second pass.
    assert!(limited >= 500 - 150, "limited {limited}");
    assert_eq!(burst.line_count() as u64, 500 - limited);
    assert_eq!(other.line_count(), 20);
    assert_identity_protect(&s);
}
