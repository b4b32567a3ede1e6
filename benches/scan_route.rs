//! Scan + route throughput over a realistic telegraf-like mix, with a rule
//! table of 10 basic, 2 tags and 2 regex rules (regex rules last, as in a
//! typical influx-spout config). Also: chunk append alone.
//!
//! cargo bench --bench scan_route
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice::batch::pool::ChunkPool;
use sluice::batch::Batcher;
use sluice::budget::Budgets;
use sluice::check::{Checker, Verdict};
use sluice::config::{CardinalityConfig, RuleConfig, RuleKind, SanityConfig};
use sluice::parse::{self, Item};
use sluice::route::RouteTable;
use sluice::sanity::TimeWindow;

const NOW: i64 = 1_700_000_000_000_000_000;

/// About 1 MiB of datagrams of ≤ 1400 bytes, telegraf-style lines.
pub fn corpus() -> Vec<Vec<u8>> {
    let measurements = [
        ("cpu", "usage_user=12.5,usage_system=3.25,usage_idle=84.25,usage_iowait=0.0"),
        ("mem", "used=8123456789i,free=123456789i,used_percent=61.5,available=7000000000i"),
        ("disk", "total=500000000000i,used=250000000000i,free=250000000000i,used_percent=50.0,inodes_free=1000000i"),
        ("diskio", "reads=123456i,writes=654321i,read_bytes=1234567890i,write_bytes=9876543210i,io_time=12345i"),
        ("net", "bytes_sent=123456789i,bytes_recv=987654321i,packets_sent=123456i,packets_recv=654321i,err_in=0i"),
        ("system", "load1=0.52,load5=0.48,load15=0.45,n_users=3i,n_cpus=16i"),
        ("processes", "running=3i,sleeping=250i,zombies=0i,total=253i,total_threads=1200i"),
        ("swap", "total=8589934592i,used=0i,free=8589934592i,used_percent=0.0"),
        ("kernel", "boot_time=1699000000i,context_switches=123456789i,interrupts=987654321i,processes_forked=123456i"),
        ("netstat", "tcp_established=120i,tcp_time_wait=30i,tcp_listen=12i,udp_socket=8i"),
        ("app_requests", "count=1234i,latency_ms=12.75,status=\"ok\",cached=true"),
        ("nginx", "active=12i,accepts=123456i,handled=123456i,requests=234567i"),
    ];
    let mut datagrams = Vec::new();
    let mut current = Vec::with_capacity(1400);
    let mut total = 0usize;
    let mut i = 0usize;
    while total < 1 << 20 {
        let (m, fields) = measurements[i % measurements.len()];
        let line = format!(
            "{m},host=server{:04},region=us-west-{},dc={},cpu=cpu{} {fields} {}\n",
            i % 1000,
            i % 3,
            ["nyc", "sfo", "ams", "sgp"][i % 4],
            i % 16,
            NOW + i as i64
        );
        if current.len() + line.len() > 1400 {
            total += current.len();
            datagrams.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(line.as_bytes());
        i += 1;
    }
    datagrams.push(current);
    datagrams
}

pub fn rules() -> Vec<RuleConfig> {
    let mut rules: Vec<RuleConfig> = [
        "cpu",
        "mem",
        "disk",
        "diskio",
        "net",
        "system",
        "processes",
        "swap",
        "kernel",
        "netstat",
    ]
    .iter()
    .map(|m| RuleConfig {
        kind: RuleKind::Basic(m.to_string()),
        route: format!("r_{m}"),
    })
    .collect();
    rules.push(RuleConfig {
        kind: RuleKind::Tags(vec![
            ("dc".into(), "nyc".into()),
            ("region".into(), "us-west-1".into()),
        ]),
        route: "nyc".into(),
    });
    rules.push(RuleConfig {
        kind: RuleKind::Tags(vec![("dc".into(), "sgp".into())]),
        route: "sgp".into(),
    });
    rules.push(RuleConfig {
        kind: RuleKind::Regex("^app_".into()),
        route: "apps".into(),
    });
    rules.push(RuleConfig {
        kind: RuleKind::NegRegex("status=\"ok\"".into()),
        route: "not_ok".into(),
    });
    rules
}

fn bench(c: &mut Criterion) {
    let datagrams = corpus();
    let bytes: usize = datagrams.iter().map(Vec::len).sum();
    let table = RouteTable::compile(&rules(), "junk").unwrap();
    let sanity = SanityConfig {
        max_time_past: Duration::from_secs(600),
        max_time_future: Duration::from_secs(600),
        max_line_length: 64 << 10,
        precision: sluice::config::Precision::Nanoseconds,
        stamp_missing: false,
    };
    let window = TimeWindow::new(NOW, &sanity);

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(bytes as u64));
    // The floor: what a non-validating relay does per line (influx-spout's
    // filter: split on newlines, find the measurement end and the trailing
    // timestamp). Strict validation and budgets are measured against this.
    group.bench_function("plain_split", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for d in &datagrams {
                for line in d.split(|&c| c == b'\n') {
                    if line.is_empty() {
                        continue;
                    }
                    let name_end = memchr::memchr2(b',', b' ', line).unwrap_or(line.len());
                    let ts_start = memchr::memrchr(b' ', line).unwrap_or(0);
                    n += name_end + ts_start;
                }
            }
            black_box(n)
        })
    });
    group.bench_function("scan", |b| {
        let mut scanner = parse::Scanner::new();
        b.iter(|| {
            let mut n = 0usize;
            for d in &datagrams {
                for item in scanner.lines(d) {
                    if let Item::Line(line) = item {
                        n += line.fields.len();
                    }
                }
            }
            black_box(n)
        })
    });
    group.bench_function("scan_check_route", |b| {
        let mut scratch = table.scratch();
        let mut scanner = parse::Scanner::new();
        b.iter(|| {
            let mut routes = [0u32; 32];
            for d in &datagrams {
                for item in scanner.lines(d) {
                    if let Item::Line(line) = item {
                        if line.raw.len() <= sanity.max_line_length
                            && window.accepts(line.timestamp)
                        {
                            let m = table.lookup(&line, &mut scratch);
                            routes[m.route as usize] += 1;
                        }
                    }
                }
            }
            black_box(routes)
        })
    });
    let every_route = vec![true; table.routes().len()];
    group.bench_function("checker", |b| {
        let mut checker = Checker::new(&table, sanity.clone(), None, every_route.clone(), NOW);
        let mut scanner = parse::Scanner::new();
        b.iter(|| {
            let mut accepted = 0usize;
            for d in &datagrams {
                for item in scanner.lines(d) {
                    if let Verdict::Accept { .. } = checker.judge(item) {
                        accepted += 1;
                    }
                }
            }
            black_box(accepted)
        })
    });
    group.bench_function("checker_with_budgets", |b| {
        let budgets = Budgets::new(
            &CardinalityConfig {
                max_series: 100_000,
                max_lines_per_second: 0,
                window: Duration::from_secs(3600),
                max_measurements: 10_000,
                limits: vec![],
                routes: vec![],
            },
            table.routes(),
        );
        let mut checker = Checker::new(&table, sanity.clone(), budgets, every_route.clone(), NOW);
        let mut scanner = parse::Scanner::new();
        b.iter(|| {
            let mut accepted = 0usize;
            for d in &datagrams {
                for item in scanner.lines(d) {
                    if let Verdict::Accept { .. } = checker.judge(item) {
                        accepted += 1;
                    }
                }
            }
            black_box(accepted)
        })
    });
    group.bench_function("scan_check_route_append", |b| {
        let mut scratch = table.scratch();
        let mut batcher = Batcher::new(
            table.routes().len(),
            256 << 10,
            Duration::from_secs(3600),
            ChunkPool::filled(table.routes().len() + 1, 256 << 10).expect("chunk pool"),
        );
        let now = Instant::now();
        b.iter(|| {
            let mut sealed = 0usize;
            for d in &datagrams {
                for item in parse::lines(d) {
                    if let Item::Line(line) = item {
                        if window.accepts(line.timestamp) {
                            let m = table.lookup(&line, &mut scratch);
                            batcher.append(m.route, line.raw, now, &mut |_, c| {
                                sealed += c.lines as usize
                            });
                        }
                    }
                }
            }
            black_box(sealed)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
