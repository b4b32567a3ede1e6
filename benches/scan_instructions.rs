//! A fixed amount of scanner work for counting instructions, which (unlike
//! time) does not depend on the machine's neighbours:
//!
//! ```sh
//! cargo bench --bench scan_instructions --no-run
//! valgrind --tool=callgrind target/release/deps/scan_instructions-<hash>            # scanner
//! valgrind --tool=callgrind target/release/deps/scan_instructions-<hash> 1 pipeline # + check, append
//! valgrind --tool=callgrind target/release/deps/scan_instructions-<hash> 0          # setup only
//! target/release/deps/scan_instructions-<hash> 30 pipeline varied                    # timed, random values
//! valgrind --tool=callgrind target/release/deps/scan_instructions-<hash> 1 pipeline mixed # with a rule table
//! ```
//!
//! It builds 1 MiB of `sluice-loadgen`-shaped lines (≈148 bytes, 5 fields,
//! ns timestamps), cuts it into 1400-byte datagrams at line boundaries and
//! runs `parse::Scanner::lines` (the shards' path) over it 20 times; with
//! `pipeline`, also the shard's per-line `Checker::judge` and the chunk
//! append (`Batcher::datagram`); `basic` or `mixed` routes through the rule
//! tables `sluice-loadgen verify --rules` writes, `tags` or `regex` through
//! one of `mixed`'s rules alone (without, every line goes to the
//! junkyard). Lines go to their route's delivery group as in a shard
//! where every sink subscribes to every route (one group, so one copy per
//! datagram); `split` gives each route a sink of its own (a group per
//! route: with rules, a copy per line). Subtract the setup-only count (building the
//! corpus) to get the scanner's own. Under `cargo bench` it simply runs
//! once and prints what it scanned.
use std::time::{Duration, Instant};

use sluice::batch::pool::ChunkPool;
use sluice::batch::{Batcher, DeliveryGroups};
use sluice::check::{Checker, Verdict};
use sluice::config::{Precision, RuleConfig, RuleKind, SanityConfig};
use sluice::parse::{self, Item};
use sluice::route::RouteTable;

/// The corpus's timestamp, and the checker's "now".
const NOW: i64 = 1_795_985_842_709_494_595;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `varied`: every field value drawn at random, 1–2 integer digits as
    // `sluice-loadgen blast` sends them, instead of the fixed values below
    // (which keep the callgrind counts comparable across sessions). Shows
    // what value-length variety costs the branch predictor.
    let varied = args.iter().any(|a| a == "varied");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut value = || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let v = rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % 10_000;
        format!("{}.{:02}", v / 100, v % 100)
    };
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    let mut datagram = Vec::new();
    let mut total = 0;
    let mut i = 0u64;
    while total < 1 << 20 {
        let host = i % 1000;
        let line = if varied {
            let (name, fields) = match i % 4 {
                0 => (
                    "cpu",
                    ["usage_user", "usage_system", "usage_idle", "usage_iowait"],
                ),
                1 => (
                    "mem",
                    ["used_percent", "available_percent", "cached", "buffered"],
                ),
                2 => ("disk", ["used_percent", "inodes_used", "free", "total"]),
                _ => (
                    "net",
                    ["bytes_recv", "bytes_sent", "packets_recv", "packets_sent"],
                ),
            };
            let mut line = format!(
                "{name},host=host{host:04},region=eu-west-1,cpu=cpu{} ",
                i % 8
            );
            for field in fields {
                line.push_str(&format!("{field}={},", value()));
            }
            line.push_str(&format!("seq={i:012}i {NOW}\n"));
            line
        } else {
            match i % 4 {
            0 => format!("cpu,host=host{host:04},region=eu-west-1,cpu=cpu{} usage_user={}.22,usage_system=22.68,usage_idle=64.22,usage_iowait=85.71,seq={i:012}i {NOW}\n", i % 8, i % 100),
            1 => format!("mem,host=host{host:04},region=eu-west-1,cpu=cpu0 used_percent=23.97,available_percent=46.07,cached=30.20,buffered=27.90,seq={i:012}i {NOW}\n"),
            2 => format!("disk,host=host{host:04},region=eu-west-1,cpu=cpu0 used_percent=87.40,inodes_used=57.91,free=87.65,total=72.96,seq={i:012}i {NOW}\n"),
            _ => format!("net,host=host{host:04},region=eu-west-1,cpu=cpu0 bytes_recv=54.69,bytes_sent=2.25,packets_recv=15.56,packets_sent=26.25,seq={i:012}i {NOW}\n"),
            }
        };
        if datagram.len() + line.len() > 1400 {
            datagrams.push(std::mem::take(&mut datagram));
        }
        total += line.len();
        datagram.extend_from_slice(line.as_bytes());
        i += 1;
    }
    datagrams.push(datagram);
    // `scan_instructions ROUNDS [pipeline]` (run the binary directly) also
    // times ROUNDS rounds of 20 passes and prints the fastest, for quick A/B
    // runs such as `SLUICE_SIMD=sse2` against the default on a noisy machine.
    // `pipeline` runs a shard's whole per-line work instead of the scanner
    // alone: scan, check (window, route lookup), append to the route's chunk.
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1);
    let pipeline = args.iter().any(|a| a == "pipeline");
    let table = RouteTable::compile(&rules(&args), "junk").unwrap();
    let sanity = SanityConfig {
        max_time_past: Duration::from_secs(600),
        max_time_future: Duration::from_secs(600),
        max_line_length: 64 << 10,
        precision: Precision::Nanoseconds,
        stamp_missing: false,
    };
    let mut checker = Checker::new(&table, sanity, None, vec![true; table.routes().len()], NOW);
    let route_sinks: Vec<Vec<usize>> = (0..table.routes().len())
        .map(|route| {
            vec![if args.iter().any(|a| a == "split") {
                route
            } else {
                0
            }]
        })
        .collect();
    let groups = DeliveryGroups::new(&route_sinks);
    // A pool, as a shard has: each sealed chunk's buffer comes back when the
    // bench drops it.
    let mut batcher = Batcher::new(
        groups.sinks.len(),
        256 << 10,
        Duration::from_millis(100),
        ChunkPool::filled(groups.sinks.len() + 1, 256 << 10).expect("chunk pool"),
    );
    let now = Instant::now();
    let mut scratch = Vec::with_capacity(1024);
    let mut scanner = parse::Scanner::new();
    let mut best = Duration::MAX;
    let mut best_cpu = Duration::MAX;
    let (mut accepted, mut rejected, mut chunks) = (0u64, 0u64, 0u64);
    for _ in 0..rounds {
        (accepted, rejected) = (0, 0);
        let started = Instant::now();
        let started_cpu = thread_cpu_time();
        for _ in 0..20 {
            for d in &datagrams {
                if pipeline {
                    let mut out = batcher.datagram(d, now);
                    for item in scanner.lines(d) {
                        match checker.judge(item) {
                            Verdict::Accept {
                                line,
                                matched,
                                rewrite,
                                ..
                            } => {
                                accepted += 1;
                                out.accepted(
                                    groups.of(matched.route),
                                    &line,
                                    rewrite,
                                    &mut scratch,
                                    &mut |_, _| chunks += 1,
                                );
                            }
                            Verdict::Reject { .. } => rejected += 1,
                        }
                    }
                    out.finish();
                } else {
                    for item in scanner.lines(d) {
                        match item {
                            Item::Line(_) => accepted += 1,
                            Item::Reject { .. } => rejected += 1,
                        }
                    }
                }
            }
        }
        best = best.min(started.elapsed());
        best_cpu = best_cpu.min(thread_cpu_time().saturating_sub(started_cpu));
    }
    assert_eq!(rejected, 0);
    println!(
        "scan_instructions ({}): {accepted} lines accepted, {total} bytes x 20, {chunks} chunks sealed",
        if pipeline { "pipeline" } else { "scanner" }
    );
    if rounds > 1 {
        println!(
            "fastest of {rounds} rounds: {:.1} ns/line, {:.2} GiB/s; on-CPU (this thread's \
             CPU time, without preemption): {:.1} ns/line",
            best.as_nanos() as f64 / accepted as f64,
            (total * 20) as f64 / best.as_secs_f64() / (1u64 << 30) as f64,
            best_cpu.as_nanos() as f64 / accepted as f64,
        );
    }
}

/// The rule table: none (every line to the junkyard), `basic` (one exact
/// name rule per measurement, its own route) or `mixed` (a tags rule that
/// never matches here and a `^disk` regex ahead of the exact names), as
/// `sluice-loadgen verify --rules` writes them; or, to price one rule kind
/// alone, `tags` (that tags rule) or `regex` (that regex). With `basic` or
/// `mixed`, consecutive lines go to different routes.
fn rules(args: &[String]) -> Vec<RuleConfig> {
    let rule = |kind, route: &str| RuleConfig {
        kind,
        route: route.to_string(),
    };
    let basic =
        ["cpu", "mem", "disk", "net"].map(|name| rule(RuleKind::Basic(name.to_string()), name));
    if args.iter().any(|a| a == "basic") {
        basic.to_vec()
    } else if args.iter().any(|a| a == "mixed") {
        let mut rules = vec![
            rule(
                RuleKind::Tags(vec![("region".into(), "us-east-1".into())]),
                "us-east",
            ),
            rule(RuleKind::Regex("^disk".into()), "storage"),
        ];
        rules.extend(basic);
        rules
    } else if args.iter().any(|a| a == "tags") {
        vec![rule(
            RuleKind::Tags(vec![("region".into(), "us-east-1".into())]),
            "us-east",
        )]
    } else if args.iter().any(|a| a == "regex") {
        vec![rule(RuleKind::Regex("^disk".into()), "storage")]
    } else {
        Vec::new()
    }
}

/// CPU time of the calling thread: what a round costs when other processes
/// preempt it (wall time would count their slices too).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
