//! `verify`: end-to-end proof of the mission. In-process sinks, system under test as a
//! child process, an in-process blast, then exact loss accounting from three sides.

use crate::blast::{self, BlastConfig, BlastReport, Progress};
use crate::cpus::{self, CpuSplit};
use crate::gen::Precision;
use crate::sink::{self, SinkConfig, SinkHandle};
use crate::util::{self, fmt_bytes, fmt_count, Rate};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod report;
mod sut;

use report::per_gib;
pub use report::{plot, print_result, print_run_line, print_summary, RepeatSummary, Spread};
pub use sut::default_sluice_path;
use sut::{scrape, spawn_sut};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[derive(Debug, Clone)]
pub enum Sut {
    Sluice(PathBuf),
    Baseline,
}

impl Sut {
    pub fn name(&self) -> &'static str {
        match self {
            Sut::Sluice(_) => "sluice",
            Sut::Baseline => "baseline",
        }
    }
}

#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub sinks: usize,
    pub rate: Rate,
    pub duration: Duration,
    pub payload: usize,
    pub threads: usize,
    pub sources: usize,
    pub precision: Precision,
    pub measurements: usize,
    pub series: usize,
    pub fields: usize,
    pub max_loss: f64,
    pub drain_timeout: Duration,
    pub progress: bool,
    /// Receiver threads for the baseline relay (0 = one per core).
    pub baseline_threads: usize,
    /// sluice's `listen.io_uring` (`auto`, `on` or `off`), to compare receive paths.
    pub io_uring: String,
    /// sluice's `listen.pin`. Off by default: here the sender, the sinks and
    /// the SUT share the host's CPUs (and the baseline's threads are not
    /// pinned either).
    pub pin: bool,
    /// Each sink's `queue_max_batches` (chunks) in sluice's generated config.
    pub queue_max_batches: usize,
    /// Each sink's `queue_max_size` (bytes) in sluice's generated config,
    /// `None` to leave it out (sluice binaries older than the key). Deeper
    /// than the appliance's default (64 MiB) by default, so a spell of host
    /// steal does not decide a run; 64 MiB measures the default configuration.
    pub queue_max_size: Option<u64>,
    /// Each sink's `batch_max_age` (the appliance's default is 1 s).
    pub batch_max_age: Duration,
    /// Receive buffer of every UDP socket, the SUT's either way: sluice's
    /// `listen.read_buffer_size` and the baseline relay's `--rcvbuf`.
    pub rcvbuf: u64,
    /// The SUT's wake-up coalescing, either way: sluice's
    /// `listen.wake_coalesce`, the baseline relay's `--wake-coalesce`.
    pub wake_coalesce: Duration,
    /// `flow` or `datagram`: sluice's `listen.balance`, the baseline's `--balance`.
    pub balance: String,
    /// `--steal`: sluice's `listen.steal`; `None` leaves sluice's default.
    pub steal: Option<bool>,
    /// `--chunk-pool`: sluice's `chunk.pool` in bytes; `None` leaves sluice's default.
    pub chunk_pool: Option<u64>,
    /// sluice's rule table (`--rules`): `none`, `basic` or `mixed`
    /// (`sut::rules_toml`). The baseline relay routes nothing either way.
    pub rules: String,
    /// A run whose peak RSS exceeds this fails (the memory target's gate).
    pub max_rss: Option<u64>,
    /// `--sut-cpus`: the SUT on these CPUs, the sender and the sinks on the
    /// rest. `None`: everything shares every CPU.
    pub cpus: Option<CpuSplit>,
    /// Niceness of the sender threads (0 = everything at one priority).
    pub sender_nice: i32,
    /// Niceness of the SUT's receive threads: sluice's `listen.nice`, the
    /// baseline's `--nice`.
    pub shard_nice: i32,
    pub quiet: bool,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            sinks: 4,
            rate: Rate::BytesPerSec(50e6),
            duration: Duration::from_secs(5),
            payload: 1400,
            threads: 1,
            sources: 16,
            precision: Precision::Ns,
            measurements: 4,
            series: 1000,
            fields: 4,
            max_loss: 0.0,
            drain_timeout: Duration::from_secs(20),
            progress: true,
            baseline_threads: 0,
            io_uring: "auto".into(),
            pin: false,
            queue_max_batches: 4096,
            queue_max_size: Some(256 << 20),
            batch_max_age: Duration::from_millis(200),
            rcvbuf: 32 << 20,
            wake_coalesce: Duration::from_millis(2),
            balance: "flow".into(),
            steal: None,
            chunk_pool: None,
            rules: "none".into(),
            max_rss: None,
            cpus: None,
            sender_nice: 0,
            shard_nice: -5,
            quiet: false,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub offered_bytes: u64,
    pub received_bytes: u64,
    pub out_bytes: u64,
    pub out_lines: u64,
    /// The SUT's resident set (`VmRSS`) at this sample.
    pub rss_bytes: u64,
    /// Datagrams the kernel dropped at the SUT's sockets so far (its
    /// `sluice_kernel_drops_total`): when in the run the losses happened.
    pub kernel_drops: u64,
    /// CPU time the hypervisor stole from the host since the blast began
    /// (all CPUs): whether a burst of drops came with a burst of steal.
    pub host_steal_s: f64,
    /// sluice's `sluice_rx_backlog_bytes`: the largest receive backlog a
    /// shard found at its last wake (0 for the baseline, which has no such gauge).
    pub rx_backlog_bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkResult {
    pub addr: String,
    pub requests: u64,
    pub rejected: u64,
    pub bytes: u64,
    pub lines: u64,
    pub unique_lines: u64,
    pub duplicates: u64,
    /// Exact: seqs in [0, seq_end) never seen, minus lines the sender could not send.
    pub lost: u64,
    pub out_bytes_per_s: f64,
    pub out_lines_per_s: f64,
    /// What the SUT says it delivered to this sink.
    pub sut_delivered_lines: Option<f64>,
    pub sut_dropped_lines: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub sut: String,
    /// The sluice binary that ran (which build was measured); empty for the baseline.
    pub sut_binary: String,
    pub rate: String,
    pub blast: BlastReport,
    pub received_datagrams: f64,
    pub received_bytes: f64,
    pub received_lines: f64,
    pub received_bytes_per_s: f64,
    pub received_lines_per_s: f64,
    pub sinks: Vec<SinkResult>,
    pub out_bytes_total: u64,
    /// Output over `out_window_s`: from the blast's start to the last
    /// body's arrival (never shorter than the blast).
    pub out_bytes_per_s: f64,
    pub out_lines_per_s: f64,
    pub out_window_s: f64,
    pub amplification: f64,
    pub amplification_bytes: f64,
    /// Offered lines that never reached the SUT's counters (kernel drops etc.).
    pub input_gap_lines: f64,
    pub sut_dropped_lines: BTreeMap<String, f64>,
    pub sut_kernel_drops: f64,
    /// sluice's receive-backlog high-water mark (one socket's, over the run)
    /// and the socket buffer it is measured against; 0 for the baseline.
    pub rx_backlog_max_bytes: u64,
    pub rx_buffer_bytes: u64,
    /// The SUT's wake-up coalescing (`--wake-coalesce`), in µs.
    pub wake_coalesce_us: u64,
    /// sluice's wake-ups that found datagrams (`sluice_rx_batches_total`);
    /// 0 for the baseline.
    pub rx_batches: u64,
    /// Datagrams each of sluice's shards received, in shard order: how
    /// evenly `SO_REUSEPORT` spread the sender's flows (empty for the
    /// baseline).
    pub shard_datagrams: Vec<u64>,
    /// Of those, the datagrams each shard took from a sibling's socket that
    /// was behind (`sluice_shard_stolen_datagrams_total`; empty for the
    /// baseline and for a sluice without `listen.steal`).
    pub shard_stolen: Vec<u64>,
    /// Chunk buffers sluice's shards allocated past their pools
    /// (`sluice_chunk_buffers_allocated_total`; 0 for the baseline).
    pub chunk_buffers_allocated: u64,
    /// `--balance`: `flow` or `datagram`.
    pub balance: String,
    /// `--rules`: sluice's rule table (`none`, `basic`, `mixed`).
    pub rules: String,
    /// Lines sluice appended to each route (`sluice_routed_lines_total`):
    /// where its rules sent the load (empty for the baseline).
    pub routed_lines: BTreeMap<String, f64>,
    pub socket_drops_datagrams: u64,
    pub snmp_in_errors_delta: u64,
    pub snmp_rcvbuf_errors_delta: u64,
    pub lost_lines_max: u64,
    pub loss_fraction: f64,
    pub accounting_agrees: bool,
    pub latency: sink::Latency,
    pub cpu_s: f64,
    pub cpu_s_per_gib: f64,
    /// CPU time the host stole from this machine while the SUT's CPU was
    /// measured (all CPUs; 0 where `/proc/stat` does not report it).
    pub host_steal_s: f64,
    /// The SUT's CPU over the same window by thread group (`shard`, `sink`,
    /// `bl-recv`, `bl-writer`, …): where the CPU went.
    pub cpu_by_thread: BTreeMap<String, ThreadCpu>,
    /// The load generator's own CPU over the run, on the same CPUs as the
    /// SUT: its sender threads (`blast.sender_cpu_s`) and its sinks' here.
    pub harness_sinks_cpu_s: f64,
    pub peak_rss_bytes: u64,
    /// The SUT's RSS over the blast, sampled every 250 ms, in its first and
    /// in its last third: alike means flat (no growth over the run).
    pub rss_first_third: RssThird,
    pub rss_last_third: RssThird,
    /// `--max-rss`: the run fails when `peak_rss_bytes` is above it.
    pub max_rss_bytes: Option<u64>,
    /// `--sut-cpus`: the CPUs the SUT ran on and those the sender and the
    /// sinks kept (`0-3` form); empty when all shared every CPU.
    pub sut_cpus: String,
    pub harness_cpus: String,
    /// Lines received per second per CPU of `sut_cpus` (0 when shared).
    pub lines_per_s_per_sut_cpu: f64,
    /// `--sender-nice`: the sender threads' niceness.
    pub sender_nice: i32,
    /// `--shard-nice`: the niceness asked for the SUT's receive threads.
    pub shard_nice: i32,
    /// The niceness they ran at (`shard-*` or `bl-recv-*`, read from
    /// `/proc` at the end of the blast); differs from `shard_nice` where
    /// raising priority was not permitted.
    pub receiver_nice: Option<i64>,
    pub sut_exit: Option<i32>,
    pub drained: bool,
    pub pass: bool,
    pub samples: Vec<Sample>,
}

/// `name{shard="i"}` for i = 0, 1, … until one is missing.
fn per_shard(m: &BTreeMap<String, f64>, name: &str) -> Vec<u64> {
    (0..)
        .map_while(|i| m.get(&format!("{name}{{shard=\"{i}\"}}")))
        .map(|v| *v as u64)
        .collect()
}

/// Parses Prometheus text into `name{labels}` → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        if l.starts_with('#') || l.trim().is_empty() {
            continue;
        }
        if let Some(sp) = l.rfind(' ') {
            if let Ok(v) = l[sp + 1..].trim().parse::<f64>() {
                m.insert(l[..sp].trim().to_string(), v);
            }
        }
    }
    m
}

fn msum(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Series of `name` with label `key="val"`: (other labels, value).
fn mlabel(m: &BTreeMap<String, f64>, name: &str, key: &str, val: &str) -> Vec<(String, f64)> {
    let needle = format!("{key}=\"{val}\"");
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(&needle))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn label_value(series: &str, key: &str) -> Option<String> {
    let p = series.find(&format!("{key}=\""))? + key.len() + 2;
    let e = series[p..].find('"')?;
    Some(series[p..p + e].to_string())
}

/// One full run at `rate`: fresh sinks, fresh SUT.
pub fn run_once(cfg: &VerifyConfig, sut: &Sut, rate: Rate, tag: usize) -> Result<RunResult> {
    if let Some(split) = &cfg.cpus {
        // Before the sinks and the sender start: their threads inherit it.
        cpus::apply(&cpus::cpu_set(&split.harness))
            .context("restricting the harness to the CPUs --sut-cpus leaves")?;
    }
    let mut sinks: SinkHandle = sink::start(SinkConfig {
        listen: (0..cfg.sinks)
            .map(|_| "127.0.0.1:0".parse().expect("addr"))
            .collect(),
        check_seq: true,
        precision: cfg.precision,
        ..Default::default()
    })?;
    let sink_addrs = sinks.addrs();
    let mut child = spawn_sut(sut, &sink_addrs, cfg, tag)?;
    let pid = child.child.id();
    // What the kernel says the SUT may run on, not what was asked for.
    let sut_cpus = match &cfg.cpus {
        Some(split) => {
            let seen = util::proc_status_field(pid, "Cpus_allowed_list:").unwrap_or_default();
            let want = cpus::fmt_cpu_list(&split.sut);
            if cpus::parse_cpu_list(&seen).ok().as_deref() != Some(split.sut.as_slice()) {
                bail!("the SUT runs on CPUs {seen:?}, not the {want} --sut-cpus asked for");
            }
            want
        }
        None => String::new(),
    };
    let (snmp_in0, snmp_rb0) = util::udp_snmp();
    let drops0: u64 = child
        .udp
        .iter()
        .map(|a| util::udp_socket_drops(a.port()))
        .sum();
    let cpu0 = util::proc_cpu_secs(pid).unwrap_or(0.0);
    let threads0 = util::thread_cpu_secs(pid);
    let own0 = util::thread_cpu_secs(std::process::id());
    let steal0 = util::host_steal_secs();
    // Host steal since here, for each sample and for the run (0 where
    // /proc/stat does not report it).
    let steal_since_start = || match (steal0, util::host_steal_secs()) {
        (Some(a), Some(b)) => (b - a).max(0.0),
        _ => 0.0,
    };
    let bcfg = BlastConfig {
        targets: child.udp.clone(),
        threads: cfg.threads,
        duration: Some(cfg.duration),
        lines: None,
        rate,
        payload: cfg.payload,
        corpus: None,
        measurements: cfg.measurements,
        series: cfg.series,
        fields: cfg.fields,
        precision: cfg.precision,
        sources: cfg.sources,
        batch: 32,
        nice: cfg.sender_nice,
    };
    let progress = Arc::new(Progress::default());
    let p2 = progress.clone();
    let t_start = Instant::now();
    let t_start_ns = util::now_ns();
    let blaster = std::thread::spawn(move || blast::run(&bcfg, p2));
    let pb = if cfg.progress && std::io::stdout().is_terminal() {
        let pb = indicatif::ProgressBar::new(cfg.duration.as_millis() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut samples = Vec::new();
    let mut last_out = 0u64;
    let mut last_change = Instant::now();
    let mut drained = false;
    let mut blast_done_at: Option<Instant> = None;
    // Sample every 250 ms; stop once the blast is over and sink line counts have been
    // flat for 1 s (or the bounded drain timeout passes).
    let deadline = t_start + cfg.duration + cfg.drain_timeout + Duration::from_secs(5);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let m = scrape(child.admin);
        let out_lines = sinks.total_lines();
        let out_bytes: u64 = sinks.ports.iter().map(|p| p.bytes()).sum();
        let t = t_start.elapsed().as_secs_f64();
        samples.push(Sample {
            t_s: t,
            offered_bytes: progress.bytes.load(Relaxed),
            received_bytes: msum(&m, "sluice_received_bytes_total") as u64,
            out_bytes,
            out_lines,
            rss_bytes: util::proc_rss(pid).unwrap_or(0),
            kernel_drops: msum(&m, "sluice_kernel_drops_total") as u64,
            rx_backlog_bytes: msum(&m, "sluice_rx_backlog_bytes") as u64,
            host_steal_s: steal_since_start(),
        });
        if out_lines != last_out {
            last_out = out_lines;
            last_change = Instant::now();
        }
        pb.set_position((t * 1000.0) as u64);
        pb.set_message(format!(
            "in {} lines, out {} lines",
            fmt_count(progress.lines.load(Relaxed) as f64),
            fmt_count(out_lines as f64)
        ));
        if blaster.is_finished() {
            let done = *blast_done_at.get_or_insert_with(Instant::now);
            let want = progress.lines.load(Relaxed) * cfg.sinks as u64;
            if out_lines >= want && last_change.elapsed() >= Duration::from_millis(500) {
                drained = true;
                break;
            }
            if last_change.elapsed() >= Duration::from_secs(1)
                && done.elapsed() >= Duration::from_secs(1)
            {
                // Flat for 1 s: drained, even if short of `want` (that is loss).
                drained = true;
                break;
            }
            if done.elapsed() >= cfg.drain_timeout {
                break;
            }
        }
    }
    pb.finish_and_clear();
    let blast = blaster
        .join()
        .map_err(|_| anyhow!("blast thread panicked"))??;
    let m = scrape(child.admin);
    let cpu = util::proc_cpu_secs(pid).unwrap_or(0.0) - cpu0;
    let receiver_nice = util::thread_group_nice(pid)
        .into_iter()
        .find(|(group, _)| group == "shard" || group == "bl-recv")
        .map(|(_, nice)| nice);
    let cpu_by_thread = util::thread_cpu_delta(&threads0, &util::thread_cpu_secs(pid))
        .into_iter()
        .map(|(group, (user_s, system_s))| (group, ThreadCpu { user_s, system_s }))
        .collect();
    let sinks_cpu_s = util::thread_cpu_delta(&own0, &util::thread_cpu_secs(std::process::id()))
        .get(crate::sink::CONN_THREAD)
        .map_or(0.0, |(user, system)| user + system);
    let host_steal_s = steal_since_start();
    // The kernel's high-water mark is updated lazily: a sample can be above it.
    let rss = util::proc_peak_rss(pid)
        .unwrap_or(0)
        .max(samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0));
    let rss_thirds = rss_thirds(&samples, cfg.duration.as_secs_f64());
    let drops: u64 = child
        .udp
        .iter()
        .map(|a| util::udp_socket_drops(a.port()))
        .sum::<u64>()
        - drops0;
    let (snmp_in1, snmp_rb1) = util::udp_snmp();
    let exit = child.terminate();
    let log = child.log.clone();
    drop(child);

    let offered = blast.lines;
    let expected_seqs = blast.seq_end;
    // The output's window: from the blast's start to the last body's exact
    // arrival, so the rate is not cut by the 250 ms sampling above.
    let last_arrival_s = sinks
        .ports
        .iter()
        .map(|p| p.stats().last_arrival_ns.saturating_sub(t_start_ns) as f64 / 1e9)
        .fold(0.0, f64::max);
    let active = last_arrival_s.max(blast.elapsed_s).max(1e-3);
    let mut sink_results = Vec::new();
    let mut hist: Option<hdrhistogram::Histogram<u64>> = None;
    for (i, p) in sinks.ports.iter().enumerate() {
        let st = p.stats();
        let missing = p
            .missing_below(expected_seqs)
            .saturating_sub(blast.unsent_lines);
        let name = format!("s{i}");
        let mut dropped = BTreeMap::new();
        for (k, v) in mlabel(&m, "sluice_sink_dropped_lines_total", "sink", &name) {
            dropped.insert(
                label_value(&k, "reason").unwrap_or_else(|| "other".into()),
                v,
            );
        }
        let delivered = mlabel(&m, "sluice_sink_lines_total", "sink", &name)
            .first()
            .map(|x| x.1);
        sink_results.push(SinkResult {
            addr: st.addr.clone(),
            requests: st.requests,
            rejected: st.rejected,
            bytes: st.bytes,
            lines: st.lines,
            unique_lines: st.unique_seq,
            duplicates: st.duplicates,
            lost: missing,
            out_bytes_per_s: st.bytes as f64 / active,
            out_lines_per_s: st.lines as f64 / active,
            sut_delivered_lines: delivered,
            sut_dropped_lines: dropped,
        });
        let h = p.histogram();
        match hist.as_mut() {
            Some(acc) => {
                let _ = acc.add(&h);
            }
            None => hist = Some(h),
        }
    }
    sinks.stop();
    let received_lines = msum(&m, "sluice_received_lines_total");
    let received_bytes = msum(&m, "sluice_received_bytes_total");
    let mut sut_dropped = BTreeMap::new();
    for (k, v) in m.iter() {
        if k.starts_with("sluice_dropped_lines_total{")
            || k.starts_with("sluice_dropped_datagrams_total{")
        {
            let base = if k.starts_with("sluice_dropped_lines") {
                "lines"
            } else {
                "datagrams"
            };
            let r = label_value(k, "reason").unwrap_or_else(|| "other".into());
            *sut_dropped.entry(format!("{base}:{r}")).or_insert(0.0) += v;
        }
    }
    let out_total: u64 = sink_results.iter().map(|s| s.bytes).sum();
    let out_unique: u64 = sink_results.iter().map(|s| s.unique_lines).sum();
    let lost_max = sink_results.iter().map(|s| s.lost).max().unwrap_or(0);
    let input_gap = offered as f64 - received_lines;
    let pre_route: f64 = sut_dropped
        .iter()
        .filter(|(k, _)| k.starts_with("lines:"))
        .map(|(_, v)| v)
        .sum();
    // Each sink's exact loss should equal lines that never entered the SUT, plus
    // pre-routing drops, plus what the SUT says it dropped for that sink.
    let agrees = sink_results.iter().all(|s| {
        let sut_side = input_gap + pre_route + s.sut_dropped_lines.values().sum::<f64>();
        (s.lost as f64 - sut_side).abs() <= (offered as f64 * 1e-9).max(0.5)
    });
    let lat = hist
        .map(|h| sink::Latency {
            count: h.len(),
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        })
        .unwrap_or_default();
    let amp = if offered > 0 {
        out_unique as f64 / offered as f64
    } else {
        0.0
    };
    let loss_fraction = if offered > 0 {
        lost_max as f64 / offered as f64
    } else {
        1.0
    };
    let n = cfg.sinks as f64;
    let dup_total: u64 = sink_results.iter().map(|s| s.duplicates).sum();
    let pass = offered > 0
        && cfg.max_rss.is_none_or(|max| rss <= max)
        && loss_fraction <= cfg.max_loss
        && dup_total == 0
        && (format!("{amp:.2}") == format!("{n:.2}")
            || cfg.max_loss > 0.0 && (amp - n).abs() <= n * cfg.max_loss + 0.005);
    if !cfg.quiet && exit != Some(0) {
        eprintln!(
            "note: {} exit status {:?} (log: {})",
            sut.name(),
            exit,
            log.display()
        );
    }
    let secs = blast.elapsed_s.max(1e-9);
    Ok(RunResult {
        sut: sut.name().into(),
        sut_binary: match sut {
            Sut::Sluice(path) => path.display().to_string(),
            Sut::Baseline => String::new(),
        },
        rate: rate.to_string(),
        received_datagrams: msum(&m, "sluice_received_datagrams_total"),
        received_bytes,
        received_lines,
        received_bytes_per_s: received_bytes / secs,
        received_lines_per_s: received_lines / secs,
        out_bytes_total: out_total,
        out_bytes_per_s: out_total as f64 / active,
        out_lines_per_s: sink_results.iter().map(|s| s.lines).sum::<u64>() as f64 / active,
        out_window_s: active,
        sinks: sink_results,
        amplification: amp,
        amplification_bytes: if blast.bytes > 0 {
            out_total as f64 / blast.bytes as f64
        } else {
            0.0
        },
        input_gap_lines: input_gap,
        sut_dropped_lines: sut_dropped,
        sut_kernel_drops: msum(&m, "sluice_kernel_drops_total"),
        rx_backlog_max_bytes: msum(&m, "sluice_rx_backlog_max_bytes") as u64,
        rx_buffer_bytes: msum(&m, "sluice_rx_buffer_bytes") as u64,
        wake_coalesce_us: u64::try_from(cfg.wake_coalesce.as_micros()).unwrap_or(u64::MAX),
        rx_batches: msum(&m, "sluice_rx_batches_total") as u64,
        shard_datagrams: per_shard(&m, "sluice_shard_received_datagrams_total"),
        shard_stolen: per_shard(&m, "sluice_shard_stolen_datagrams_total"),
        chunk_buffers_allocated: msum(&m, "sluice_chunk_buffers_allocated_total") as u64,
        balance: cfg.balance.clone(),
        rules: cfg.rules.clone(),
        routed_lines: m
            .iter()
            .filter(|(k, _)| k.starts_with("sluice_routed_lines_total{"))
            .filter_map(|(k, v)| Some((label_value(k, "route")?, *v)))
            .collect(),
        socket_drops_datagrams: drops,
        snmp_in_errors_delta: snmp_in1.saturating_sub(snmp_in0),
        snmp_rcvbuf_errors_delta: snmp_rb1.saturating_sub(snmp_rb0),
        lost_lines_max: lost_max,
        loss_fraction,
        accounting_agrees: agrees,
        latency: lat,
        cpu_s: cpu,
        cpu_s_per_gib: per_gib(cpu, received_bytes),
        host_steal_s,
        cpu_by_thread,
        harness_sinks_cpu_s: sinks_cpu_s,
        peak_rss_bytes: rss,
        rss_first_third: rss_thirds.0,
        rss_last_third: rss_thirds.1,
        max_rss_bytes: cfg.max_rss,
        sut_cpus,
        harness_cpus: cfg
            .cpus
            .as_ref()
            .map_or(String::new(), |s| cpus::fmt_cpu_list(&s.harness)),
        lines_per_s_per_sut_cpu: cfg
            .cpus
            .as_ref()
            .map_or(0.0, |s| received_lines / secs / s.sut.len() as f64),
        sender_nice: cfg.sender_nice,
        shard_nice: cfg.shard_nice,
        receiver_nice,
        sut_exit: exit,
        drained,
        pass,
        blast,
        samples,
    })
}

/// The SUT's RSS samples in one third of the blast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RssThird {
    pub median_bytes: u64,
    pub max_bytes: u64,
}

/// RSS in the first and in the last third of the blast (`0..blast_s`); the
/// drain after it is left out. Chunks in flight come and go, so single
/// samples are spiky: the median says whether memory grew, the max how
/// high it went.
fn rss_thirds(samples: &[Sample], blast_s: f64) -> (RssThird, RssThird) {
    let third = blast_s / 3.0;
    let of = |from: f64, to: f64| {
        let mut v: Vec<u64> = samples
            .iter()
            .filter(|s| s.t_s > from && s.t_s <= to)
            .map(|s| s.rss_bytes)
            .collect();
        v.sort_unstable();
        RssThird {
            median_bytes: v.get(v.len() / 2).copied().unwrap_or(0),
            max_bytes: v.last().copied().unwrap_or(0),
        }
    };
    (of(0.0, third), of(blast_s - third, blast_s))
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FindMax {
    pub best_rate: Option<String>,
    pub best_bytes_per_s: f64,
    /// The highest passing trial could not be offered at the asked rate.
    pub sender_limited: bool,
    pub trials: Vec<(String, bool, f64)>,
}

/// CPU seconds of one group of the SUT's threads.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ThreadCpu {
    pub user_s: f64,
    pub system_s: f64,
}

/// Times a search runs a trial again when host steal, not the SUT or the
/// sender, decided its outcome.
const STARVED_RERUNS: usize = 2;

/// Whether a run lost more than a tenth of the host's CPU time to the
/// hypervisor (steal), so a sender that fell short of its rate was starved
/// rather than at its limit.
fn starved(steal_s: f64, elapsed_s: f64, cpus: usize) -> bool {
    steal_s > 0.1 * elapsed_s * cpus as f64
}

/// Doubling from the start rate until a trial fails, then bisection; bounded
/// steps (a trial run again because of host steal does not count as one).
pub fn find_max(
    cfg: &VerifyConfig,
    sut: &Sut,
    start: Rate,
    steps: usize,
) -> Result<(FindMax, Option<RunResult>)> {
    let mut r = match start {
        Rate::Unlimited => Rate::BytesPerSec(16e6),
        x => x,
    };
    let mut lo: Option<(f64, RunResult)> = None;
    let mut hi: Option<f64> = None;
    let mut trials = Vec::new();
    let mut tag = 100;
    let mut sender_limited = false;
    // Steal is counted over every CPU of the host, whatever this thread's affinity.
    let online = util::online_cpus();
    let mut reruns = 0;
    let mut step = 0;
    while step < steps.max(1) {
        tag += 1;
        let res = run_once(cfg, sut, r, tag)?;
        if !cfg.quiet {
            println!(
                "  trial {}: offered {}/s, loss {:.6}% -> {}",
                r,
                fmt_bytes(res.blast.bytes_per_s),
                res.loss_fraction * 100.0,
                if res.pass { "ok" } else { "too much loss" }
            );
        }
        let v = r.value();
        // Search on what was actually offered: the sender may fall short of the ask.
        let achieved = match r {
            Rate::LinesPerSec(_) => res.blast.lines_per_s,
            _ => res.blast.bytes_per_s,
        };
        // A loss, or a sender short of its rate, while the hypervisor held
        // the host's CPUs says nothing about either relay or the sender.
        let short = res.pass && achieved < 0.9 * v;
        if (short || !res.pass)
            && starved(res.host_steal_s, res.blast.elapsed_s, online)
            && reruns < STARVED_RERUNS
        {
            reruns += 1;
            if !cfg.quiet {
                println!(
                    "  the host stole {:.1}s of CPU during this trial: not counted; running it again",
                    res.host_steal_s
                );
            }
            continue;
        }
        trials.push((r.to_string(), res.pass, res.blast.bytes_per_s));
        if res.pass {
            if short {
                if !cfg.quiet {
                    let hint = match &cfg.cpus {
                        // More sender threads cannot help when the harness's CPUs are full.
                        Some(split) => format!(
                            "the sender and the sinks share CPUs {}; give them more",
                            cpus::fmt_cpu_list(&split.harness)
                        ),
                        None => "try --threads".to_string(),
                    };
                    println!(
                        "  sender-limited: asked {r}, offered {}/s; the SUT kept up with all the sender could do ({hint})",
                        fmt_bytes(res.blast.bytes_per_s)
                    );
                }
                sender_limited = true;
                lo = Some((achieved, res));
                break;
            }
            lo = Some((achieved, res));
        } else {
            hi = Some(hi.map_or(achieved.min(v), |h: f64| h.min(achieved.min(v))));
        }
        let next = match (lo.as_ref().map(|x| x.0), hi) {
            (Some(l), None) => l * 2.0,
            (Some(l), Some(h)) => (l + h) / 2.0,
            (None, Some(h)) => h / 2.0,
            (None, None) => v * 2.0,
        };
        if let (Some(l), Some(h)) = (lo.as_ref().map(|x| x.0), hi) {
            if (h - l) / h < 0.05 {
                break;
            }
        }
        r = match r {
            Rate::LinesPerSec(_) => Rate::LinesPerSec(next),
            _ => Rate::BytesPerSec(next),
        };
        step += 1;
    }
    let best = lo.map(|(_, res)| res);
    Ok((
        FindMax {
            best_rate: best.as_ref().map(|b| b.rate.clone()),
            best_bytes_per_s: best.as_ref().map_or(0.0, |b| b.blast.bytes_per_s),
            sender_limited,
            trials,
        },
        best,
    ))
}

#[cfg(test)]
mod tests {
    use super::report::drop_bursts;
    use super::sut::sluice_config;
    use super::{rss_thirds, starved, RssThird, Sample, Spread, VerifyConfig};
    use std::time::Duration;

    #[test]
    fn drop_bursts_are_the_largest_windows_in_time_order_with_their_steal() {
        let at = |t_s: f64, kernel_drops: u64, host_steal_s: f64| Sample {
            t_s,
            offered_bytes: 0,
            received_bytes: 0,
            out_bytes: 0,
            out_lines: 0,
            rss_bytes: 0,
            kernel_drops,
            host_steal_s,
            rx_backlog_bytes: 0,
        };
        // Cumulative counters: drops of 5 (first window), 0, 100, 0, 40, 1.
        let samples = [
            at(0.25, 5, 0.0),
            at(0.5, 5, 0.01),
            at(0.75, 105, 0.31),
            at(1.0, 105, 0.32),
            at(1.25, 145, 0.32),
            at(1.5, 146, 0.40),
        ];
        let (windows, bursts) = drop_bursts(&samples, 3);
        assert_eq!(windows, 4);
        assert_eq!(bursts.len(), 3);
        let got: Vec<(f64, u64)> = bursts.iter().map(|b| (b.0, b.1)).collect();
        assert_eq!(got, [(0.25, 5), (0.75, 100), (1.25, 40)]);
        assert!((bursts[1].2 - 0.30).abs() < 1e-9, "{bursts:?}");
        assert_eq!(drop_bursts(&samples[..0], 3), (0, vec![]));
        assert_eq!(drop_bursts(&[at(0.25, 0, 0.5)], 3), (0, vec![]));
    }

    #[test]
    fn rss_thirds_leave_out_the_drain() {
        let at = |t_s: f64, mib: u64| Sample {
            t_s,
            offered_bytes: 0,
            received_bytes: 0,
            out_bytes: 0,
            out_lines: 0,
            rss_bytes: mib << 20,
            kernel_drops: 0,
            host_steal_s: 0.0,
            rx_backlog_bytes: 0,
        };
        let third = |median: u64, max: u64| RssThird {
            median_bytes: median << 20,
            max_bytes: max << 20,
        };
        // A 6 s blast: thirds (0, 2] and (4, 6]; the drain after 6 s and the
        // middle third do not count.
        let samples = [
            at(0.5, 30),
            at(1.0, 31),
            at(1.5, 34),
            at(3.0, 90),
            at(4.5, 33),
            at(5.0, 60),
            at(6.0, 35),
            at(6.5, 80),
        ];
        assert_eq!(rss_thirds(&samples, 6.0), (third(31, 34), third(35, 60)));
        assert_eq!(rss_thirds(&[], 6.0), (third(0, 0), third(0, 0)));
    }

    #[test]
    fn generated_config_carries_the_sink_settings() {
        let sinks = [
            "127.0.0.1:9".parse().unwrap(),
            "127.0.0.1:10".parse().unwrap(),
        ];
        let text = sluice_config(
            &sinks,
            &VerifyConfig {
                queue_max_batches: 256,
                queue_max_size: Some(64 << 20),
                batch_max_age: Duration::from_secs(1),
                ..VerifyConfig::default()
            },
        );
        assert_eq!(
            text.matches("queue_max_batches = 256\n").count(),
            2,
            "{text}"
        );
        assert_eq!(
            text.matches("queue_max_size = \"65536KB\"\n").count(),
            2,
            "{text}"
        );
        let older = sluice_config(
            &sinks,
            &VerifyConfig {
                queue_max_size: None,
                ..VerifyConfig::default()
            },
        );
        assert!(!older.contains("queue_max_size"), "{older}");
        assert_eq!(
            text.matches("batch_max_age = \"1000ms\"\n").count(),
            2,
            "{text}"
        );
        let default = sluice_config(&sinks, &VerifyConfig::default());
        assert_eq!(default.matches("queue_max_batches = 4096\n").count(), 2);
        assert_eq!(
            default.matches("queue_max_size = \"262144KB\"\n").count(),
            2
        );
        assert_eq!(default.matches("batch_max_age = \"200ms\"\n").count(), 2);
        assert_eq!(
            default.matches("read_buffer_size = \"32768KB\"\n").count(),
            1
        );
        // `--steal` only when given (an older sluice rejects the key), and
        // then inside [listen].
        assert!(!default.contains("steal"), "{default}");
        for steal in [true, false] {
            let text = sluice_config(
                &sinks,
                &VerifyConfig {
                    steal: Some(steal),
                    ..VerifyConfig::default()
                },
            );
            let listen = text.find("[listen]").unwrap();
            let sanity = text.find("[sanity]").unwrap();
            let key = text.find(&format!("\nsteal = {steal}\n")).expect(&text);
            assert!(listen < key && key < sanity, "{text}");
        }
        // `--chunk-pool` likewise, as a [chunk] table of its own.
        assert!(!default.contains("[chunk]"), "{default}");
        let text = sluice_config(
            &sinks,
            &VerifyConfig {
                chunk_pool: Some(0),
                ..VerifyConfig::default()
            },
        );
        assert!(text.contains("\n[chunk]\npool = \"0KB\"\n"), "{text}");
        let text = sluice_config(
            &sinks,
            &VerifyConfig {
                chunk_pool: Some(64 << 20),
                ..VerifyConfig::default()
            },
        );
        assert!(text.contains("\n[chunk]\npool = \"65536KB\"\n"), "{text}");
    }

    #[test]
    fn starved_means_a_tenth_of_the_hosts_cpu_stolen() {
        // 6 s on 2 CPUs is 12 CPU-seconds: more than 1.2 s stolen is starved.
        assert!(!starved(0.0, 6.0, 2));
        assert!(!starved(1.2, 6.0, 2));
        assert!(starved(1.3, 6.0, 2));
        assert!(starved(6.6, 6.0, 2));
        assert!(!starved(6.6, 6.0, 16));
    }

    #[test]
    fn spread_takes_the_middle() {
        assert_eq!(Spread::of(&[]), None);
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(Spread::of(&[f64::NAN, 5.0]).unwrap().median, 5.0);
        assert_eq!(
            format!("{:.1}", Spread::of(&[1.0, 2.0]).unwrap()),
            "1.5 (1.0–2.0)"
        );
    }
}
