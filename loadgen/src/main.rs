use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use sluice_loadgen::gen::Precision;
use sluice_loadgen::util::{self, parse_duration, parse_fraction, parse_rate, parse_size_f};
use sluice_loadgen::{baseline, blast, sink, verify};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "sluice-loadgen",
    about = "Load generator, test sinks, baseline relay and verifier for sluice"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send UDP line protocol as fast as asked.
    Blast(BlastArgs),
    /// HTTP write sink that counts lines and checks sequence numbers.
    Sink(SinkArgs),
    /// Bare UDP -> HTTP fan-out relay: the floor sluice is measured against.
    Baseline(BaselineArgs),
    /// End-to-end check of the mission on this host.
    Verify(Box<VerifyArgs>),
}

#[derive(Args, Clone)]
struct GenArgs {
    /// Bytes per datagram (whole lines packed up to this size).
    #[arg(long, default_value_t = 1400)]
    payload: usize,
    #[arg(long, default_value_t = 4)]
    measurements: usize,
    #[arg(long, default_value_t = 1000)]
    series: usize,
    #[arg(long, default_value_t = 4)]
    fields: usize,
    /// Timestamp unit of generated lines.
    #[arg(long, value_enum, default_value_t = Precision::Ns)]
    precision: Precision,
    /// Sender threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Sockets (distinct source ports) per thread and target.
    #[arg(long, default_value_t = 16)]
    sources: usize,
}

#[derive(Args)]
struct BlastArgs {
    /// Target address (repeatable; round-robin per batch). Loopback only.
    #[arg(long, required = true)]
    target: Vec<SocketAddr>,
    /// How long to send, e.g. 10s.
    #[arg(long)]
    duration: Option<String>,
    /// Exact number of lines to send.
    #[arg(long)]
    lines: Option<u64>,
    /// `1GiB/s`, `200MB/s`, `500k lines/s`, `0` = as fast as possible.
    #[arg(long, default_value = "0")]
    rate: String,
    /// Send lines from this file instead of the synthetic generator (no seq
    /// patching): the whole file, in order, each line once per pass (with
    /// several threads, each cycles through its own contiguous share;
    /// `--threads 1 --lines <lines in the file>` replays it exactly once).
    #[arg(long)]
    corpus: Option<String>,
    /// Datagrams per sendmmsg call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Niceness of the sender threads (-20..=19; 0 leaves it): above 0 the
    /// sender yields the CPU to whatever else runs on the host.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: i32,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    gen: GenArgs,
}

#[derive(Args)]
struct SinkArgs {
    /// Listen address (repeatable). Loopback only.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Listen on N consecutive ports from --base-port (0 = N ephemeral ports).
    #[arg(long)]
    ports: Option<usize>,
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Track seq=NNNi per port for exact loss/duplicate accounting and latency.
    #[arg(long)]
    check_seq: bool,
    #[arg(long, value_enum, default_value_t = Precision::Ns)]
    precision: Precision,
    /// Delay every write by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    delay: u64,
    /// Answer 500 with this probability.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Refuse connections for this many seconds after start.
    #[arg(long, default_value_t = 0.0)]
    down_for: f64,
    /// Stop after this long (bounded; SIGTERM/SIGINT stop earlier).
    #[arg(long, default_value = "600s")]
    duration: String,
    /// Expected total lines (seqs 0..N) for the final loss report.
    #[arg(long)]
    expect: Option<u64>,
}

#[derive(Args)]
struct BaselineArgs {
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Sink URL, e.g. http://127.0.0.1:8086/write?db=x (repeatable).
    #[arg(long, required = true)]
    sink: Vec<String>,
    #[arg(long, default_value = "127.0.0.1:0")]
    admin: SocketAddr,
    /// Receiver threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, default_value = "1MiB")]
    batch_bytes: String,
    #[arg(long, default_value = "200ms")]
    batch_age: String,
    /// Keep-alive connections per sink.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// SO_RCVBUF per socket (SO_RCVBUFFORCE past rmem_max with CAP_NET_ADMIN),
    /// as sluice's `listen.read_buffer_size`, whose default this is.
    #[arg(long, default_value = "32MiB")]
    rcvbuf: String,
    /// After a wake-up that found datagrams and caught up, wait this long
    /// (since that wake-up) before receiving again: sluice's
    /// `listen.wake_coalesce`, whose default this is; 0 = never wait.
    #[arg(long, default_value = "2ms")]
    wake_coalesce: String,
    /// `flow`: the kernel's SO_REUSEPORT hash (one source port, one
    /// receiver); `datagram`: each datagram to a receiver at random, as
    /// sluice's `listen.balance`.
    #[arg(long, default_value = "flow", value_parser = ["flow", "datagram"])]
    balance: String,
    /// Niceness of the receiver threads: sluice's `listen.nice`, whose
    /// default this is (raising priority needs root or CAP_SYS_NICE).
    #[arg(long, default_value_t = -5, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: i32,
    /// Upper bound on run time.
    #[arg(long, default_value = "3600s")]
    max_runtime: String,
}

#[derive(Args)]
struct VerifyArgs {
    /// Number of in-process sinks (every line goes to each).
    #[arg(long, default_value_t = 4)]
    sinks: usize,
    /// Path of the sluice binary (default: the workspace's target/release/sluice).
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// Test the baseline relay instead of sluice.
    #[arg(long)]
    baseline: bool,
    /// Run the same load against the baseline first, then sluice, and print
    /// ratios (with --find-max: search both, and compare the best passing runs).
    #[arg(long)]
    compare_baseline: bool,
    #[arg(long, default_value = "50MB/s")]
    rate: String,
    #[arg(long, default_value = "5s")]
    duration: String,
    /// Highest tolerated loss, e.g. 0.001% (0 = none).
    #[arg(long, default_value = "0")]
    max_loss: String,
    /// Search for the highest rate with loss <= --max-loss.
    #[arg(long)]
    find_max: bool,
    /// Run N times (with --compare-baseline: N rounds, the order of the two
    /// alternating) and report medians and ranges, for noisy hosts. With
    /// --find-max: N searches (of each, with --compare-baseline).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Trials for --find-max.
    #[arg(long, default_value_t = 8)]
    find_steps: usize,
    /// Write all results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of in/out throughput.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
    /// Bound on waiting for the pipeline to drain after the blast.
    #[arg(long, default_value = "20s")]
    drain_timeout: String,
    /// Receiver threads of the baseline relay (0 = one per core).
    #[arg(long, default_value_t = 0)]
    baseline_threads: usize,
    /// sluice's receive path: auto (io_uring, else recvmmsg), on, or off (recvmmsg).
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    io_uring: String,
    /// Pin sluice's shards to CPUs (`listen.pin`). Off by default: the
    /// sender and the sinks run on the same CPUs, where a pinned shard waits
    /// for its one CPU while another is idle; the baseline is not pinned either.
    #[arg(long, default_value = "false", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pin: bool,
    /// Each sink's `queue_max_batches` (a count of chunks) in sluice's
    /// generated config: the appliance's default.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    queue_max_batches: u64,
    /// Each sink's `queue_max_size` (bytes) in sluice's generated config.
    /// Deeper than the appliance's default (64MB), so a spell of host steal
    /// does not decide a run; `--queue-max-size 64MB --batch-max-age 1s` runs
    /// the default configuration's sink settings (for the memory target).
    /// `none` leaves the key out, for sluice binaries older than it.
    #[arg(long, default_value = "256MB")]
    queue_max_size: String,
    /// Each sink's `batch_max_age` in sluice's generated config (the
    /// appliance's default is 1s).
    #[arg(long, default_value = "200ms")]
    batch_max_age: String,
    /// Receive buffer of each UDP socket of the SUT, either one: sluice's
    /// `listen.read_buffer_size`, the baseline relay's `--rcvbuf` (capped by
    /// `net.core.rmem_max` without CAP_NET_ADMIN; `tuning/apply.sh` raises it
    /// to 64 MiB). 32 MiB, sluice's default: with 8 MiB both relays lost
    /// lines now and then at full speed on a shared 2-core host.
    #[arg(long, default_value = "32MiB")]
    rcvbuf: String,
    /// Wake-up coalescing of the SUT, either one: sluice's
    /// `listen.wake_coalesce`, the baseline relay's `--wake-coalesce`. 2ms,
    /// sluice's default; 0 wakes for every arrival.
    #[arg(long, default_value = "2ms")]
    wake_coalesce: String,
    /// How the SUT's sockets share the load, either one: `flow` (the
    /// kernel's SO_REUSEPORT hash: each of the sender's source ports lands
    /// on one shard, so few sources can load shards unevenly) or `datagram`
    /// (each datagram to a shard at random): sluice's `listen.balance`, the
    /// baseline relay's `--balance`.
    #[arg(long, default_value = "flow", value_parser = ["flow", "datagram"])]
    balance: String,
    /// sluice's `listen.steal` (a shard whose socket is caught up takes
    /// datagrams from a sibling's that is behind): `on` or `off`. Left out
    /// of the generated configuration unless given, so that a sluice older
    /// than the option still starts (and gets its default: off).
    #[arg(long, value_parser = ["on", "off"])]
    steal: Option<String>,
    /// sluice's `chunk.pool` (chunk buffers kept ready, over all shards),
    /// e.g. `64MB` or `0`. Left out of the generated configuration unless
    /// given, so that a sluice older than the option still starts.
    #[arg(long)]
    chunk_pool: Option<String>,
    /// sluice's rule table: `none` (every line to the junkyard), `basic`
    /// (one exact-name rule and route per generated measurement: every line
    /// routed by name) or `mixed` (a tags and a regex rule ahead of those:
    /// every line looked up by all three kinds). Every sink subscribes to
    /// every route, so the output is 4× the input either way. The baseline
    /// relay routes nothing.
    #[arg(long, default_value = "none", value_parser = ["none", "basic", "mixed"])]
    rules: String,
    /// Run the SUT (sluice or the baseline) on these CPUs only, e.g. `1` or
    /// `0-3`, and the sender and the sinks on the others: the SUT's capacity
    /// on that many cores, without the harness taking its CPU (or it the
    /// harness's). sluice starts one shard per CPU given, the baseline one
    /// receiver. Default: everything shares every CPU.
    #[arg(long, value_name = "LIST")]
    sut_cpus: Option<String>,
    /// Niceness of the sender threads (0..=19). Above 0 the sender takes
    /// only the CPU the SUT and the sinks leave, as a remote fleet would:
    /// at full speed on a small host the offered rate then settles where the
    /// SUT keeps up, instead of starving it into kernel drops. Either SUT
    /// gets the same. Default 0: everything at one priority.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    sender_nice: i32,
    /// Niceness of the SUT's receive threads, either one: sluice's
    /// `listen.nice`, the baseline relay's `--nice`. -5, sluice's default:
    /// the receivers outweigh the sender and the sinks 3:1 for a CPU.
    #[arg(long, default_value_t = -5, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    shard_nice: i32,
    /// Fail the run when the SUT's peak RSS is above this, e.g. `256MiB`
    /// (the memory target).
    #[arg(long)]
    max_rss: Option<String>,
    #[command(flatten)]
    gen: GenArgs,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Blast(a) => cmd_blast(a),
        Cmd::Sink(a) => cmd_sink(a),
        Cmd::Baseline(a) => cmd_baseline(a).map(|_| 0),
        Cmd::Verify(a) => cmd_verify(*a),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn cmd_blast(a: BlastArgs) -> Result<i32> {
    let cfg = blast::BlastConfig {
        targets: a.target,
        threads: a.gen.threads,
        duration: a.duration.as_deref().map(parse_duration).transpose()?,
        lines: a.lines,
        rate: parse_rate(&a.rate)?,
        payload: a.gen.payload,
        corpus: a.corpus,
        measurements: a.gen.measurements,
        series: a.gen.series,
        fields: a.gen.fields,
        precision: a.gen.precision,
        sources: a.gen.sources,
        batch: a.batch,
        nice: a.nice,
    };
    let r = blast::run(&cfg, Arc::new(blast::Progress::default()))?;
    r.print();
    if let Some(p) = a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(0)
}

fn cmd_sink(a: SinkArgs) -> Result<i32> {
    let mut listen = a.listen;
    if let Some(n) = a.ports {
        for i in 0..n {
            let port = if a.base_port == 0 {
                0
            } else {
                a.base_port + i as u16
            };
            listen.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    if listen.is_empty() {
        bail!("need --listen or --ports");
    }
    let mut h = sink::start(sink::SinkConfig {
        listen,
        check_seq: a.check_seq,
        precision: a.precision,
        delay: Duration::from_millis(a.delay),
        fail_rate: a.fail_rate,
        down_for: Duration::from_secs_f64(a.down_for),
    })?;
    let ports: Vec<String> = h.addrs().iter().map(|a| a.to_string()).collect();
    println!("listening http={}", ports.join(","));
    baseline::install_term_handler();
    let dur = parse_duration(&a.duration)?;
    let t0 = Instant::now();
    let mut last = Instant::now();
    while t0.elapsed() < dur && !baseline::terminated() {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprintln!(
                "{:.0}s: {} lines",
                t0.elapsed().as_secs_f64(),
                h.total_lines()
            );
        }
    }
    for p in &h.ports {
        let st = p.stats();
        println!("{}", serde_json::to_string(&st)?);
        if let Some(n) = a.expect {
            println!(
                "{}: lost {} of {} (duplicates {})",
                st.addr,
                p.missing_below(n),
                n,
                st.duplicates
            );
        }
    }
    h.stop();
    Ok(0)
}

fn cmd_baseline(a: BaselineArgs) -> Result<()> {
    baseline::run(baseline::BaselineConfig {
        listen: a.listen,
        sinks: a.sink,
        admin: a.admin,
        threads: a.threads,
        batch_bytes: parse_size_f(&a.batch_bytes)? as usize,
        batch_age: parse_duration(&a.batch_age)?,
        connections: a.connections,
        rcvbuf: parse_size_f(&a.rcvbuf)? as usize,
        wake_coalesce: parse_duration(&a.wake_coalesce)?,
        spread_datagrams: a.balance == "datagram",
        nice: a.nice,
        max_runtime: parse_duration(&a.max_runtime)?,
    })
}

/// sluice's lines/s and CPU-s/GiB, each divided by the baseline's.
fn ratios(baseline: &verify::RunResult, sluice: &verify::RunResult) -> (f64, f64) {
    (
        sluice.received_lines_per_s / baseline.received_lines_per_s.max(1e-9),
        sluice.cpu_s_per_gib / baseline.cpu_s_per_gib.max(1e-9),
    )
}

/// Print the two ratios of one baseline run and one sluice run under
/// `== {title} ==`, and record them as `ratios` in the JSON.
fn report_ratios(
    title: &str,
    baseline: &verify::RunResult,
    sluice: &verify::RunResult,
    json: &mut serde_json::Map<String, serde_json::Value>,
) {
    let (lines_ratio, cpu_ratio) = ratios(baseline, sluice);
    println!("== {title} ==");
    println!("  lines/s ratio (sluice / baseline): {lines_ratio:.3}");
    println!("  cpu-s/GiB ratio (sluice / baseline): {cpu_ratio:.3}");
    json.insert(
        "ratios".into(),
        serde_json::json!({"lines_per_s": lines_ratio, "cpu_s_per_gib": cpu_ratio}),
    );
}

/// One `find-max` search of `sut`, printed; the best passing run, if any.
fn search(
    cfg: &verify::VerifyConfig,
    sut: &verify::Sut,
    steps: usize,
) -> Result<(verify::FindMax, Option<verify::RunResult>)> {
    let (fm, best) = verify::find_max(cfg, sut, cfg.rate, steps)?;
    match &best {
        Some(b) => {
            verify::print_result(b);
            println!(
                "find-max: highest passing rate {} (achieved {}/s){}",
                fm.best_rate.as_deref().unwrap_or("-"),
                util::fmt_bytes(fm.best_bytes_per_s),
                if fm.sender_limited {
                    "; sender-limited: the SUT kept up with all the sender could do"
                } else {
                    ""
                }
            );
        }
        None => println!("find-max: no rate passed"),
    }
    Ok((fm, best))
}

/// The note under a comparison when a search stopped at the sender's limit.
fn sender_limited_note(baseline: bool, sluice: bool) {
    if baseline || sluice {
        println!(
            "  note: sender-limited ({}); the lines ratio compares what the \
             sender reached beside each, not either one's ceiling",
            match (baseline, sluice) {
                (true, true) => "both searches",
                (true, false) => "the baseline's search",
                _ => "sluice's search",
            }
        );
    }
}

/// `verify --find-max`: one search of `sut`, or with `compare` one of the
/// baseline and then one of sluice, compared by their best passing runs.
/// With `rounds` > 1 (`--repeat`), that many rounds (alternating which is
/// searched first), then the medians and ranges of the ratios: on a noisy
/// host, and where the sender is the limit, one search decides little.
/// Returns whether every search found a passing rate, and the last sluice
/// best run (or the last best run) for the plot.
fn find_max_rounds(
    cfg: &verify::VerifyConfig,
    sut: &verify::Sut,
    sluice: &verify::Sut,
    compare: bool,
    (rounds, steps): (usize, usize),
    json: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(bool, Option<verify::RunResult>)> {
    let mut ok = true;
    let mut last = None;
    let mut per_round = Vec::new();
    // What the summary of several rounds is made of.
    let (mut bests, mut round_ratios, mut limited) = (Vec::new(), Vec::new(), 0);
    for round in 1..=rounds {
        let label = |name: &str| {
            if rounds > 1 {
                format!("== find-max, round {round}: {name} ==")
            } else {
                format!("== find-max: {name} ==")
            }
        };
        let searched = |name: &str, sut: &verify::Sut| {
            println!("{}", label(name));
            search(cfg, sut, steps)
        };
        if !compare {
            let (fm, best) = if rounds > 1 {
                searched(sut.name(), sut)?
            } else {
                search(cfg, sut, steps)?
            };
            ok &= best.is_some();
            if rounds == 1 {
                json.insert("find_max".into(), serde_json::to_value(&fm)?);
                json.insert("best".into(), serde_json::to_value(&best)?);
            } else {
                bests.push(fm.best_bytes_per_s);
                per_round.push(serde_json::json!({"find_max": fm, "best": best}));
            }
            last = best.or(last);
            continue;
        }
        // The baseline first in odd rounds (and in a single search), sluice
        // first in even ones, so a drifting host weighs on both alike.
        let ((fb, bb), (fs, bs)) = if round % 2 == 1 {
            let b = searched("baseline", &verify::Sut::Baseline)?;
            (b, searched("sluice", sluice)?)
        } else {
            let s = searched("sluice", sluice)?;
            (searched("baseline", &verify::Sut::Baseline)?, s)
        };
        ok &= bb.is_some() && bs.is_some();
        let either_limited = fb.sender_limited || fs.sender_limited;
        limited += usize::from(either_limited);
        let ratio = match (&bb, &bs) {
            (Some(b), Some(s)) => {
                let (lines, cpu) = ratios(b, s);
                if rounds == 1 {
                    report_ratios(
                        "find-max: sluice vs baseline (best passing runs)",
                        b,
                        s,
                        json,
                    );
                } else {
                    println!(
                        "  round {round} ratios (best passing runs): lines/s {lines:.3}  cpu-s/GiB {cpu:.3}"
                    );
                    round_ratios.push((lines, cpu));
                }
                sender_limited_note(fb.sender_limited, fs.sender_limited);
                Some((lines, cpu))
            }
            _ => None,
        };
        if rounds == 1 {
            json.insert("find_max_baseline".into(), serde_json::to_value(&fb)?);
            json.insert("best_baseline".into(), serde_json::to_value(&bb)?);
            json.insert("find_max".into(), serde_json::to_value(&fs)?);
            json.insert("best".into(), serde_json::to_value(&bs)?);
        } else {
            per_round.push(serde_json::json!({
                "find_max_baseline": fb, "best_baseline": bb,
                "find_max": fs, "best": bs,
                "ratios": ratio.map(|(l, c)| serde_json::json!({"lines_per_s": l, "cpu_s_per_gib": c})),
                "sender_limited": either_limited,
            }));
        }
        last = bs.or(last);
    }
    if rounds > 1 {
        println!("== find-max, {rounds} rounds ==");
        let summary = if compare {
            let lines = verify::Spread::of(&round_ratios.iter().map(|r| r.0).collect::<Vec<_>>());
            let cpu = verify::Spread::of(&round_ratios.iter().map(|r| r.1).collect::<Vec<_>>());
            if let (Some(lines), Some(cpu)) = (&lines, &cpu) {
                println!("  lines/s ratio (sluice / baseline): {lines}");
                println!("  cpu-s/GiB ratio (sluice / baseline): {cpu}");
            }
            println!(
                "  rounds where a search stopped at the sender's limit: {limited} of {rounds}"
            );
            serde_json::json!({"ratios": {"lines_per_s": lines, "cpu_s_per_gib": cpu}, "sender_limited_rounds": limited})
        } else {
            let best = verify::Spread::of(&bests);
            if let Some(best) = &best {
                println!(
                    "  best passing rate achieved: {}/s ({}/s – {}/s)",
                    util::fmt_bytes(best.median),
                    util::fmt_bytes(best.min),
                    util::fmt_bytes(best.max)
                );
            }
            serde_json::json!({"best_bytes_per_s": best})
        };
        json.insert(
            "find_max_rounds".into(),
            serde_json::Value::Array(per_round),
        );
        json.insert("summary".into(), summary);
    }
    Ok((ok, last))
}

/// `verify --repeat N`: N runs of `sut`, or with `compare` N rounds of the
/// baseline and sluice (alternating which goes first, so a drifting host
/// weighs on both alike), each run summarised on one line (a failing one in
/// full), then medians and ranges. Returns whether every run passed, and the
/// last sluice run (or the last run) for the plot.
fn repeated(
    cfg: &verify::VerifyConfig,
    sut: &verify::Sut,
    sluice: &verify::Sut,
    compare: bool,
    rounds: usize,
    json: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(bool, Option<verify::RunResult>)> {
    let mut all = Vec::new();
    let mut pairs = Vec::new();
    let mut tag = 0;
    let mut run = |sut: &verify::Sut, round: usize| -> Result<verify::RunResult> {
        tag += 1;
        let r = verify::run_once(cfg, sut, cfg.rate, tag)?;
        verify::print_run_line(round, &r);
        if !r.pass {
            verify::print_result(&r);
        }
        Ok(r)
    };
    let unit = if compare { "rounds" } else { "runs" };
    println!("== {rounds} {unit} @ {} ==", cfg.rate);
    for round in 1..=rounds {
        if compare {
            let (b, s) = if round % 2 == 1 {
                let b = run(&verify::Sut::Baseline, round)?;
                (b, run(sluice, round)?)
            } else {
                let s = run(sluice, round)?;
                (run(&verify::Sut::Baseline, round)?, s)
            };
            let (lines_ratio, cpu_ratio) = ratios(&b, &s);
            println!(
                "  round {round:<3} ratios   lines/s {lines_ratio:.3}  cpu-s/GiB {cpu_ratio:.3}"
            );
            pairs.push((b, s, lines_ratio, cpu_ratio));
        } else {
            all.push(run(sut, round)?);
        }
    }
    let passed;
    let last;
    if compare {
        let baseline: Vec<&verify::RunResult> = pairs.iter().map(|p| &p.0).collect();
        let ours: Vec<&verify::RunResult> = pairs.iter().map(|p| &p.1).collect();
        let lines = verify::Spread::of(&pairs.iter().map(|p| p.2).collect::<Vec<_>>());
        let cpu = verify::Spread::of(&pairs.iter().map(|p| p.3).collect::<Vec<_>>());
        let (b, s) = (
            verify::RepeatSummary::of(&baseline).context("no runs")?,
            verify::RepeatSummary::of(&ours).context("no runs")?,
        );
        println!("== sluice vs baseline, {rounds} rounds ==");
        verify::print_summary(&b, "baseline");
        verify::print_summary(&s, "sluice");
        if let (Some(lines), Some(cpu)) = (lines, cpu) {
            println!("  lines/s ratio (sluice / baseline): {lines}");
            println!("  cpu-s/GiB ratio (sluice / baseline): {cpu}");
        }
        passed = b.passed == rounds && s.passed == rounds;
        let rounds_json: Vec<serde_json::Value> = pairs
            .iter()
            .map(|(b, s, l, c)| serde_json::json!({"baseline": b, "sluice": s, "ratios": {"lines_per_s": l, "cpu_s_per_gib": c}}))
            .collect();
        json.insert("rounds".into(), serde_json::Value::Array(rounds_json));
        json.insert(
            "summary".into(),
            serde_json::json!({"baseline": b, "sluice": s, "ratios": {"lines_per_s": lines, "cpu_s_per_gib": cpu}}),
        );
        last = pairs.pop().map(|p| p.1);
    } else {
        let runs: Vec<&verify::RunResult> = all.iter().collect();
        let summary = verify::RepeatSummary::of(&runs).context("no runs")?;
        println!("== {rounds} runs ==");
        verify::print_summary(&summary, runs[0].sut.as_str());
        passed = summary.passed == rounds;
        json.insert("runs".into(), serde_json::to_value(&all)?);
        json.insert("summary".into(), serde_json::to_value(&summary)?);
        last = all.pop();
    }
    println!("  result: {}", if passed { "PASS" } else { "FAIL" });
    Ok((passed, last))
}

fn cmd_verify(a: VerifyArgs) -> Result<i32> {
    let cfg = verify::VerifyConfig {
        sinks: a.sinks.max(1),
        rate: parse_rate(&a.rate)?,
        duration: parse_duration(&a.duration)?,
        payload: a.gen.payload,
        threads: a.gen.threads,
        sources: a.gen.sources,
        precision: a.gen.precision,
        measurements: a.gen.measurements,
        series: a.gen.series,
        fields: a.gen.fields,
        max_loss: parse_fraction(&a.max_loss)?,
        drain_timeout: parse_duration(&a.drain_timeout)?,
        progress: !a.no_progress,
        baseline_threads: a.baseline_threads,
        io_uring: a.io_uring,
        pin: a.pin,
        queue_max_batches: a.queue_max_batches as usize,
        queue_max_size: match a.queue_max_size.as_str() {
            "none" => None,
            size => Some(parse_size_f(size)? as u64),
        },
        batch_max_age: parse_duration(&a.batch_max_age)?,
        rcvbuf: parse_size_f(&a.rcvbuf)? as u64,
        wake_coalesce: parse_duration(&a.wake_coalesce)?,
        balance: a.balance.clone(),
        steal: a.steal.as_deref().map(|s| s == "on"),
        chunk_pool: a
            .chunk_pool
            .as_deref()
            .map(|s| parse_size_f(s).map(|b| b as u64))
            .transpose()?,
        rules: a.rules.clone(),
        max_rss: a
            .max_rss
            .as_deref()
            .map(parse_size_f)
            .transpose()?
            .map(|b| b as u64),
        cpus: match &a.sut_cpus {
            Some(list) => Some(sluice_loadgen::cpus::CpuSplit::new(
                sluice_loadgen::cpus::parse_cpu_list(list)?,
                &sluice_loadgen::cpus::allowed()?,
            )?),
            None => None,
        },
        sender_nice: a.sender_nice,
        shard_nice: a.shard_nice,
        quiet: false,
    };
    let sluice = verify::Sut::Sluice(a.sluice.unwrap_or_else(verify::default_sluice_path));
    let sut = if a.baseline {
        verify::Sut::Baseline
    } else {
        sluice.clone()
    };
    let mut json = serde_json::Map::new();
    let ok;
    let plot_run;
    if a.find_max {
        let (passed, last) = find_max_rounds(
            &cfg,
            &sut,
            &sluice,
            a.compare_baseline,
            (a.repeat.max(1) as usize, a.find_steps),
            &mut json,
        )?;
        ok = passed;
        plot_run = last;
    } else if a.repeat > 1 {
        let (passed, last) = repeated(
            &cfg,
            &sut,
            &sluice,
            a.compare_baseline,
            a.repeat as usize,
            &mut json,
        )?;
        ok = passed;
        plot_run = last;
    } else if a.compare_baseline {
        let b = verify::run_once(&cfg, &verify::Sut::Baseline, cfg.rate, 1)?;
        verify::print_result(&b);
        let s = verify::run_once(&cfg, &sluice, cfg.rate, 2)?;
        verify::print_result(&s);
        report_ratios("sluice vs baseline", &b, &s, &mut json);
        ok = b.pass && s.pass;
        json.insert("baseline".into(), serde_json::to_value(&b)?);
        json.insert("sluice".into(), serde_json::to_value(&s)?);
        plot_run = Some(s);
    } else {
        let r = verify::run_once(&cfg, &sut, cfg.rate, 1)?;
        verify::print_result(&r);
        ok = r.pass;
        json.insert("run".into(), serde_json::to_value(&r)?);
        plot_run = Some(r);
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&json)?)?;
        println!("wrote {}", p.display());
    }
    if let (Some(p), Some(r)) = (&a.plot, &plot_run) {
        verify::plot(p, r)?;
        println!("wrote {}", p.display());
    }
    Ok(if ok { 0 } else { 1 })
}
