//! What a run reports: the readable table, the medians and ranges of repeated
//! runs, and the SVG plot.

use super::{RunResult, Sample, GIB};
use crate::util::{fmt_bytes, fmt_count};
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Nanoseconds as milliseconds, for the latency line.
fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

/// How many sampling windows (≈250 ms) saw the kernel drop datagrams at the
/// SUT's sockets, and the `n` with the most, in time order: (end of the
/// window in s, datagrams dropped in it, host steal in it in s). Where
/// losses came in bursts, this says when, and whether the hypervisor took
/// the CPUs at that moment.
pub fn drop_bursts(samples: &[Sample], n: usize) -> (usize, Vec<(f64, u64, f64)>) {
    let mut windows: Vec<(f64, u64, f64)> = Vec::with_capacity(samples.len());
    let (mut drops, mut steal) = (0u64, 0.0f64);
    for s in samples {
        let dropped = s.kernel_drops.saturating_sub(drops);
        if dropped > 0 {
            windows.push((s.t_s, dropped, (s.host_steal_s - steal).max(0.0)));
        }
        drops = drops.max(s.kernel_drops);
        steal = steal.max(s.host_steal_s);
    }
    let with_drops = windows.len();
    windows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.total_cmp(&b.0)));
    windows.truncate(n);
    windows.sort_by(|a, b| a.0.total_cmp(&b.0));
    (with_drops, windows)
}

/// One run's readable report: rates in and out, per-sink counts, loss from
/// three sides, latency, the SUT's CPU and memory, and PASS or FAIL.
pub fn print_result(r: &RunResult) {
    let b = &r.blast;
    println!("== {} @ {} ==", r.sut, r.rate);
    if !r.sut_binary.is_empty() {
        println!("  binary    : {}", r.sut_binary);
    }
    if !r.sut_cpus.is_empty() {
        println!(
            "  cpus      : SUT on {}, sender and sinks on {}",
            r.sut_cpus, r.harness_cpus
        );
    }
    println!(
        "  offered   : {:>12}/s  {:>10} lines/s  ({} lines, {} datagrams, {:.2}s, send errors {})",
        fmt_bytes(b.bytes_per_s),
        fmt_count(b.lines_per_s),
        b.lines,
        b.datagrams,
        b.elapsed_s,
        b.send_errors
    );
    println!(
        "  received  : {:>12}/s  {:>10} lines/s  ({} lines){}",
        fmt_bytes(r.received_bytes_per_s),
        fmt_count(r.received_lines_per_s),
        r.received_lines,
        if r.sut_cpus.is_empty() {
            String::new()
        } else {
            format!(
                "; {} lines/s per SUT CPU",
                fmt_count(r.lines_per_s_per_sut_cpu)
            )
        }
    );
    println!(
        "  {:<10} {:>14} {:>12} {:>12} {:>10} {:>6} {:>10}",
        "sink", "out/s", "lines/s", "lines", "lost", "dups", "requests"
    );
    for (i, s) in r.sinks.iter().enumerate() {
        println!(
            "  s{:<9} {:>14} {:>12} {:>12} {:>10} {:>6} {:>10}",
            i,
            format!("{}/s", fmt_bytes(s.out_bytes_per_s)),
            fmt_count(s.out_lines_per_s),
            s.lines,
            s.lost,
            s.duplicates,
            s.requests
        );
    }
    println!(
        "  total out : {:>12}/s  {:>10} lines/s  (over {:.2}s: the blast's {:.2}s and {:.2}s until the last body arrived)",
        fmt_bytes(r.out_bytes_per_s),
        fmt_count(r.out_lines_per_s),
        r.out_window_s,
        b.elapsed_s,
        (r.out_window_s - b.elapsed_s).max(0.0)
    );
    println!(
        "  amplification: {:.2}x lines ({:.2}x bytes)",
        r.amplification, r.amplification_bytes
    );
    println!(
        "  loss: max per sink {} lines ({:.6}%); input gap {} lines; SUT drops {:?}; SUT kernel drops {}; socket drops {} dgrams; snmp InErrors +{} RcvbufErrors +{}; accounting {}",
        r.lost_lines_max,
        r.loss_fraction * 100.0,
        r.input_gap_lines,
        r.sut_dropped_lines.iter().filter(|(_, v)| **v > 0.0).collect::<BTreeMap<_, _>>(),
        r.sut_kernel_drops,
        r.socket_drops_datagrams,
        r.snmp_in_errors_delta,
        r.snmp_rcvbuf_errors_delta,
        if r.accounting_agrees { "agrees" } else { "DISAGREES" }
    );
    if r.rx_buffer_bytes > 0 {
        println!(
            "  receive backlog: peak {} in one socket, of its {} buffer ({:.0} %; the kernel drops at 100 %)",
            fmt_bytes(r.rx_backlog_max_bytes as f64),
            fmt_bytes(r.rx_buffer_bytes as f64),
            r.rx_backlog_max_bytes as f64 / r.rx_buffer_bytes as f64 * 100.0
        );
    }
    if r.rx_batches > 0 {
        println!(
            "  wake-ups: {} found datagrams, {:.1} datagrams each on average (wake_coalesce {} µs)",
            r.rx_batches,
            r.received_datagrams / r.rx_batches as f64,
            r.wake_coalesce_us
        );
    }
    let shard_total: u64 = r.shard_datagrams.iter().sum();
    if r.shard_datagrams.len() > 1 && shard_total > 0 {
        // Each shard's count as a share of all the datagrams received.
        let shares = |counts: &[u64]| {
            counts
                .iter()
                .map(|&d| format!("{:.1} %", d as f64 / shard_total as f64 * 100.0))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "  shards    : {} of the datagrams ({})",
            shares(&r.shard_datagrams),
            if r.balance == "datagram" {
                "balance datagram: each datagram to a shard at random"
            } else {
                "balance flow: each source port lands on one shard"
            }
        );
        let stolen: u64 = r.shard_stolen.iter().sum();
        if stolen > 0 {
            println!(
                "  stolen    : {} of the datagrams taken from a sibling's socket that was behind (listen.steal)",
                shares(&r.shard_stolen)
            );
        }
        if r.chunk_buffers_allocated > 0 {
            println!(
                "  chunks    : {} buffers allocated past the shards' pools (chunk.pool): more were in flight than it holds",
                r.chunk_buffers_allocated
            );
        }
    }
    let routed_total: f64 = r.routed_lines.values().sum();
    if routed_total > 0.0 {
        let shares: Vec<String> = r
            .routed_lines
            .iter()
            .filter(|(_, &v)| v > 0.0)
            .map(|(route, v)| format!("{route} {:.1} %", v / routed_total * 100.0))
            .collect();
        println!(
            "  routes    : {} of the lines (rules {})",
            shares.join(", "),
            r.rules
        );
    }
    let (windows, bursts) = drop_bursts(&r.samples, 3);
    if windows > 0 {
        let mean_steal = r.samples.last().map_or(0.0, |s| s.host_steal_s) / r.samples.len() as f64;
        let worst: Vec<String> = bursts
            .iter()
            .map(|(t, d, steal)| format!("{d} at {t:.1}s (steal {steal:.2}s)"))
            .collect();
        println!(
            "  kernel drops in {windows} of {} 250 ms windows; the largest: {}; host steal per window {mean_steal:.3}s on average",
            r.samples.len(),
            worst.join(", ")
        );
    }
    for (i, s) in r.sinks.iter().enumerate() {
        if !s.sut_dropped_lines.is_empty() && s.sut_dropped_lines.values().any(|v| *v > 0.0) {
            println!("    s{i}: SUT-side drops {:?}", s.sut_dropped_lines);
        }
    }
    println!(
        "  latency (arrival - line timestamp): p50 {}  p99 {}  p999 {}  max {}  ({} lines)",
        ms(r.latency.p50_ns),
        ms(r.latency.p99_ns),
        ms(r.latency.p999_ns),
        ms(r.latency.max_ns),
        r.latency.count
    );
    println!(
        "  SUT cpu {:.2}s, {:.2} cpu-s/GiB received; peak RSS {}; exit {:?}; drained {}; host steal {:.1}s",
        r.cpu_s,
        r.cpu_s_per_gib,
        fmt_bytes(r.peak_rss_bytes as f64),
        r.sut_exit,
        r.drained,
        r.host_steal_s
    );
    let (first, last) = (r.rss_first_third, r.rss_last_third);
    if first.median_bytes > 0 && last.median_bytes > 0 {
        println!(
            "  RSS over the blast (250 ms samples): first third median {} (max {}), last third median {} (max {}): {:+.1} %",
            fmt_bytes(first.median_bytes as f64),
            fmt_bytes(first.max_bytes as f64),
            fmt_bytes(last.median_bytes as f64),
            fmt_bytes(last.max_bytes as f64),
            (last.median_bytes as f64 / first.median_bytes as f64 - 1.0) * 100.0
        );
    }
    if !r.cpu_by_thread.is_empty() {
        let groups: Vec<String> = r
            .cpu_by_thread
            .iter()
            .filter(|(_, t)| t.user_s + t.system_s > 0.0)
            .map(|(g, t)| {
                format!(
                    "{g} {:.2}s (user {:.2}, sys {:.2})",
                    t.user_s + t.system_s,
                    t.user_s,
                    t.system_s
                )
            })
            .collect();
        println!("  SUT cpu by thread: {}", groups.join("; "));
    }
    match r.receiver_nice {
        Some(n) if n != i64::from(r.shard_nice) => println!(
            "  receive threads at niceness {n}, not the {} asked: raising priority needs root or CAP_SYS_NICE",
            r.shard_nice
        ),
        Some(n) if n != 0 => println!("  receive threads at niceness {n}"),
        _ => {}
    }
    if r.sender_nice != 0 {
        println!(
            "  sender at niceness {}: it takes the CPU the SUT and the sinks leave",
            r.sender_nice
        );
    }
    println!(
        "  load generator cpu, {}: sender {:.2}s, sinks {:.2}s",
        if r.sut_cpus.is_empty() {
            "on the same CPUs"
        } else {
            "on its own CPUs"
        },
        r.blast.sender_cpu_s,
        r.harness_sinks_cpu_s
    );
    if let Some(max) = r.max_rss_bytes.filter(|&max| r.peak_rss_bytes > max) {
        println!(
            "  peak RSS {} is above --max-rss {}",
            fmt_bytes(r.peak_rss_bytes as f64),
            fmt_bytes(max as f64)
        );
    }
    println!("  result: {}", if r.pass { "PASS" } else { "FAIL" });
}

/// Median and range of one figure over repeated runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values. The median of an even count is the mean of the
    /// middle two.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = f.precision().unwrap_or(3);
        write!(f, "{:.p$} ({:.p$}–{:.p$})", self.median, self.min, self.max)
    }
}

/// Medians over repeated runs of one SUT (`verify --repeat`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepeatSummary {
    pub runs: usize,
    pub passed: usize,
    pub received_lines_per_s: Spread,
    pub cpu_s_per_gib: Spread,
    pub loss_fraction: Spread,
    pub amplification: Spread,
    pub peak_rss_bytes: Spread,
    pub host_steal_s: Spread,
    /// CPU-s per GiB received of each thread group (user, system), over the
    /// runs (a run without the group counts 0): the split of `cpu_s_per_gib`.
    pub cpu_per_gib_by_thread: BTreeMap<String, (Spread, Spread)>,
}

impl RepeatSummary {
    /// `None` for no runs.
    pub fn of(runs: &[&RunResult]) -> Option<RepeatSummary> {
        let figure =
            |f: fn(&RunResult) -> f64| Spread::of(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        Some(RepeatSummary {
            runs: runs.len(),
            passed: runs.iter().filter(|r| r.pass).count(),
            received_lines_per_s: figure(|r| r.received_lines_per_s)?,
            cpu_s_per_gib: figure(|r| r.cpu_s_per_gib)?,
            loss_fraction: figure(|r| r.loss_fraction)?,
            amplification: figure(|r| r.amplification)?,
            peak_rss_bytes: figure(|r| r.peak_rss_bytes as f64)?,
            host_steal_s: figure(|r| r.host_steal_s)?,
            cpu_per_gib_by_thread: cpu_per_gib_by_thread(runs)?,
        })
    }
}

/// CPU seconds per GiB received (0 when nothing was received).
pub(super) fn per_gib(cpu_s: f64, received_bytes: f64) -> f64 {
    if received_bytes > 0.0 {
        cpu_s / (received_bytes / GIB)
    } else {
        0.0
    }
}

/// Medians and ranges of each thread group's user and system CPU per GiB.
fn cpu_per_gib_by_thread(runs: &[&RunResult]) -> Option<BTreeMap<String, (Spread, Spread)>> {
    let groups: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|r| r.cpu_by_thread.keys()).collect();
    let mut out = BTreeMap::new();
    for group in groups {
        let (mut user, mut system) = (Vec::new(), Vec::new());
        for r in runs {
            let t = r.cpu_by_thread.get(group);
            user.push(per_gib(t.map_or(0.0, |t| t.user_s), r.received_bytes));
            system.push(per_gib(t.map_or(0.0, |t| t.system_s), r.received_bytes));
        }
        out.insert(group.clone(), (Spread::of(&user)?, Spread::of(&system)?));
    }
    Some(out)
}

/// One line per run of `verify --repeat`.
pub fn print_run_line(round: usize, r: &RunResult) {
    println!(
        "  round {round:<3} {:<8} {:>10} lines/s  {:>6.2} cpu-s/GiB  loss {:.6}%  {:.2}x  steal {:.1}s  {}",
        r.sut,
        fmt_count(r.received_lines_per_s),
        r.cpu_s_per_gib,
        r.loss_fraction * 100.0,
        r.amplification,
        r.host_steal_s,
        if r.pass { "PASS" } else { "FAIL" }
    );
}

/// The medians of `verify --repeat` for one SUT.
pub fn print_summary(s: &RepeatSummary, sut: &str) {
    let scaled = |x: Spread, k: f64| Spread {
        median: x.median * k,
        min: x.min * k,
        max: x.max * k,
    };
    println!(
        "  {sut:<8} {} of {} runs passed; median (min–max): {:.1} klines/s; {:.2} cpu-s/GiB; loss {:.6} %; {:.2}x out; peak RSS {:.1} MiB; host steal {:.1} s",
        s.passed,
        s.runs,
        scaled(s.received_lines_per_s, 1e-3),
        s.cpu_s_per_gib,
        scaled(s.loss_fraction, 100.0),
        s.amplification,
        scaled(s.peak_rss_bytes, 1.0 / (1024.0 * 1024.0)),
        s.host_steal_s
    );
    let groups: Vec<String> = s
        .cpu_per_gib_by_thread
        .iter()
        .filter(|(_, (user, system))| user.max + system.max > 0.0)
        .map(|(g, (user, system))| {
            format!("{g} {:.2} user + {:.2} sys", user.median, system.median)
        })
        .collect();
    if !groups.is_empty() {
        println!(
            "  {sut:<8} cpu-s/GiB by thread (medians): {}",
            groups.join("; ")
        );
    }
}

/// SVG of offered/received input and total output throughput over time.
pub fn plot(path: &Path, r: &RunResult) -> Result<()> {
    use plotters::prelude::*;
    let mut pts_off = Vec::new();
    let mut pts_in = Vec::new();
    let mut pts_out = Vec::new();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let pts_rss: Vec<(f64, f64)> = r
        .samples
        .iter()
        .filter(|s| s.rss_bytes > 0)
        .map(|s| (s.t_s, mib(s.rss_bytes)))
        .collect();
    let rss_max = pts_rss.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut prev: Option<&Sample> = None;
    for s in &r.samples {
        if let Some(p) = prev {
            let dt = (s.t_s - p.t_s).max(1e-6);
            let f = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt / 1e6;
            pts_off.push((s.t_s, f(s.offered_bytes, p.offered_bytes)));
            pts_in.push((s.t_s, f(s.received_bytes, p.received_bytes)));
            pts_out.push((s.t_s, f(s.out_bytes, p.out_bytes)));
        }
        prev = Some(s);
    }
    let tmax = r.samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let ymax = pts_off
        .iter()
        .chain(&pts_in)
        .chain(&pts_out)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut ch = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} @ {}: throughput (MB/s) and RSS (MiB), 250 ms samples",
                r.sut, r.rate
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..tmax, 0.0..ymax)
        .map_err(|e| anyhow!("{e}"))?
        .set_secondary_coord(0.0..tmax, 0.0..rss_max);
    ch.configure_mesh()
        .x_desc("seconds")
        .y_desc("MB/s")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    ch.configure_secondary_axes()
        .y_desc("SUT RSS, MiB")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (pts, color, label) in [
        (pts_off, BLUE, "offered (blast)"),
        (pts_in, GREEN, "received by SUT"),
        (pts_out, RED, "out (all sinks)"),
    ] {
        ch.draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    let grey = RGBColor(110, 110, 110);
    ch.draw_secondary_series(LineSeries::new(pts_rss, grey.stroke_width(2)))
        .map_err(|e| anyhow!("{e}"))?
        .label("SUT RSS (right axis)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    ch.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
