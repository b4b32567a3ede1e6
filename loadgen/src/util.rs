//! Small parsers and /proc readers shared by the subcommands.

use anyhow::{anyhow, bail, Context, Result};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a `--rate` limits.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Rate {
    Unlimited,
    BytesPerSec(f64),
    LinesPerSec(f64),
}

impl Rate {
    pub fn scaled(self, f: f64) -> Rate {
        match self {
            Rate::Unlimited => Rate::Unlimited,
            Rate::BytesPerSec(b) => Rate::BytesPerSec(b * f),
            Rate::LinesPerSec(l) => Rate::LinesPerSec(l * f),
        }
    }
    pub fn value(self) -> f64 {
        match self {
            Rate::Unlimited => 0.0,
            Rate::BytesPerSec(v) | Rate::LinesPerSec(v) => v,
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Unlimited => write!(f, "unlimited"),
            Rate::BytesPerSec(b) => write!(f, "{}/s", fmt_bytes(*b)),
            Rate::LinesPerSec(l) => write!(f, "{} lines/s", fmt_count(*l)),
        }
    }
}

/// Parses `1GiB/s`, `200MB/s`, `500k lines/s`, `1e6lines/s`, `0`.
pub fn parse_rate(s: &str) -> Result<Rate> {
    let t = s.trim().to_ascii_lowercase().replace(' ', "");
    if t == "0" || t == "max" || t == "unlimited" {
        return Ok(Rate::Unlimited);
    }
    let t = t.strip_suffix("/s").unwrap_or(&t);
    if let Some(n) = t.strip_suffix("lines").or_else(|| t.strip_suffix("line")) {
        let v = parse_scaled(n, 1000.0)?;
        return Ok(if v <= 0.0 {
            Rate::Unlimited
        } else {
            Rate::LinesPerSec(v)
        });
    }
    let v = parse_size_f(t)?;
    Ok(if v <= 0.0 {
        Rate::Unlimited
    } else {
        Rate::BytesPerSec(v)
    })
}

/// Number with an optional k/m/g suffix in the given base.
fn parse_scaled(s: &str, base: f64) -> Result<f64> {
    let (num, mul) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], base),
        Some('m') => (&s[..s.len() - 1], base * base),
        Some('g') => (&s[..s.len() - 1], base * base * base),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().with_context(|| format!("bad number {s:?}"))?;
    Ok(v * mul)
}

/// Parses sizes like `1400`, `64KB`, `1MiB`, `8mb` (KB = 1000, KiB = 1024).
pub fn parse_size_f(s: &str) -> Result<f64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| anyhow!("bad size {s:?}"))?;
    let mul = match unit {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => bail!("bad size unit in {s:?}"),
    };
    Ok(v * mul)
}

/// Parses `2s`, `500ms`, `1.5`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow!("bad duration {s:?}"))?;
    if !(0.0..1e7).contains(&v) {
        bail!("duration out of range: {s:?}");
    }
    Ok(Duration::from_secs_f64(v * mul))
}

/// Parses `0.001%` or `0.00001`.
pub fn parse_fraction(s: &str) -> Result<f64> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        Ok(p.trim().parse::<f64>()? / 100.0)
    } else {
        Ok(t.parse::<f64>()?)
    }
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn fmt_bytes(b: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", U[i])
}

pub fn fmt_count(c: f64) -> String {
    if c.abs() >= 1e9 {
        format!("{:.2}G", c / 1e9)
    } else if c.abs() >= 1e6 {
        format!("{:.2}M", c / 1e6)
    } else if c.abs() >= 1e3 {
        format!("{:.1}k", c / 1e3)
    } else {
        format!("{c:.0}")
    }
}

/// Clock ticks (the unit of `/proc` CPU times) as seconds.
fn ticks_to_secs(ticks: f64) -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / if hz > 0.0 { hz } else { 100.0 }
}

/// Spawn a thread with a name, so per-thread CPU (`/proc/PID/task/*/comm`)
/// tells one kind of thread from another (receivers from writers, the
/// sinks from the sender).
pub fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .with_context(|| format!("spawn thread {name}"))
}

/// utime+stime of a process, in seconds.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// utime+stime from a `stat` file of `/proc`, in seconds.
fn stat_cpu_secs(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (_, user, system) = parse_task_stat(&stat)?;
    Some(user + system)
}

/// The `stat` line of each live thread of `pid`, by thread id (a thread that
/// exits meanwhile is skipped).
fn task_stats(pid: u32) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let tid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            Some((tid, stat))
        })
        .collect()
}

/// CPU seconds (user, system) of each live thread of `pid`, by thread id,
/// with the thread's name.
pub fn thread_cpu_secs(pid: u32) -> std::collections::BTreeMap<u32, (String, f64, f64)> {
    task_stats(pid)
        .into_iter()
        .filter_map(|(tid, stat)| Some((tid, parse_task_stat(&stat)?)))
        .collect()
}

/// User + system seconds the calling thread has used so far
/// (`/proc/thread-self/stat`); `None` where that cannot be read.
pub fn current_thread_cpu_secs() -> Option<f64> {
    stat_cpu_secs("/proc/thread-self/stat")
}

/// A `/proc/PID/stat` or `/proc/PID/task/TID/stat` line split into the name
/// and the fields after it (the name is parenthesised and may hold spaces
/// and parentheses, so the fields are counted from the last `)`): field 3
/// of the line, the state, is index 0.
fn split_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    Some((name, stat.get(close + 2..)?.split_whitespace().collect()))
}

/// `(name, user s, system s)` from a `stat` line.
fn parse_task_stat(stat: &str) -> Option<(String, f64, f64)> {
    let (name, f) = split_stat(stat)?;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((name.to_owned(), ticks_to_secs(utime), ticks_to_secs(stime)))
}

/// The niceness (field 19) from a `stat` line.
fn stat_nice(stat: &str) -> Option<i64> {
    split_stat(stat)?.1.get(16)?.parse().ok()
}

/// Niceness of the live threads of `pid`, by thread group
/// ([`thread_group`]): the lowest of the group's threads.
pub fn thread_group_nice(pid: u32) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    for (_, stat) in task_stats(pid) {
        let (Some((name, _)), Some(nice)) = (split_stat(&stat), stat_nice(&stat)) else {
            continue;
        };
        let lowest = out.entry(thread_group(name)).or_insert(nice);
        *lowest = (*lowest).min(nice);
    }
    out
}

/// The group a thread's CPU is reported under: its name without a trailing
/// `-<number>` (`shard-0`, `shard-1` → `shard`; `bl-recv-3` → `bl-recv`), and
/// every `sink-<name>` as `sink`.
pub fn thread_group(name: &str) -> String {
    if name.starts_with("sink-") {
        return "sink".to_owned();
    }
    match name.rsplit_once('-') {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
            head.to_owned()
        }
        _ => name.to_owned(),
    }
}

/// CPU each thread group used between two `thread_cpu_secs` snapshots:
/// `group -> (user s, system s)`. A thread born in between counts from zero;
/// one that exited in between is missing (the process total still has it).
pub fn thread_cpu_delta(
    before: &std::collections::BTreeMap<u32, (String, f64, f64)>,
    after: &std::collections::BTreeMap<u32, (String, f64, f64)>,
) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut groups = std::collections::BTreeMap::new();
    for (tid, (name, user, system)) in after {
        let (user0, system0) = before.get(tid).map_or((0.0, 0.0), |b| (b.1, b.2));
        let entry = groups.entry(thread_group(name)).or_insert((0.0, 0.0));
        entry.0 += (user - user0).max(0.0);
        entry.1 += (system - system0).max(0.0);
    }
    groups
}

/// Seconds the host's hypervisor has taken from this machine's CPUs so far
/// (`steal` in `/proc/stat`, all CPUs together); `None` where not reported.
/// Its growth during a run says how much of the run a noisy host stole.
pub fn host_steal_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = s.lines().find(|l| l.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq steal ...
    let steal: f64 = cpu.split_whitespace().nth(8)?.parse().ok()?;
    Some(ticks_to_secs(steal))
}

/// Peak RSS (VmHWM) of a process, in bytes.
pub fn proc_peak_rss(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:").map(|kb| kb * 1024)
}

/// Resident set size of `pid` now, in bytes.
pub fn proc_rss(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:").map(|kb| kb * 1024)
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    proc_status_field(pid, key)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The value of `key` (e.g. `"Cpus_allowed_list:"`) in /proc/PID/status.
pub fn proc_status_field(pid: u32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with(key))?;
    Some(l[key.len()..].trim().to_string())
}

/// Host-wide UDP counters from /proc/net/snmp (+snmp6): (InErrors, RcvbufErrors).
pub fn udp_snmp() -> (u64, u64) {
    let mut in_err = 0;
    let mut rcvbuf = 0;
    if let Ok(s) = std::fs::read_to_string("/proc/net/snmp") {
        let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("Udp:")).collect();
        if lines.len() >= 2 {
            let names: Vec<&str> = lines[0].split_whitespace().collect();
            let vals: Vec<&str> = lines[1].split_whitespace().collect();
            for (n, v) in names.iter().zip(vals.iter()) {
                match *n {
                    "InErrors" => in_err += v.parse::<u64>().unwrap_or(0),
                    "RcvbufErrors" => rcvbuf += v.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/net/snmp6") {
        for l in s.lines() {
            let mut it = l.split_whitespace();
            match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
                (Some("Udp6InErrors"), Some(v)) => in_err += v,
                (Some("Udp6RcvbufErrors"), Some(v)) => rcvbuf += v,
                _ => {}
            }
        }
    }
    (in_err, rcvbuf)
}

/// Set the calling thread's niceness (Linux: `setpriority` on its thread id).
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: PRIO_PROCESS with a thread id changes only that thread; no
    // memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// CPUs online on this host (not this thread's affinity mask).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Sum of the per-socket `drops` column of /proc/net/udp{,6} for sockets bound to `port`.
pub fn udp_socket_drops(port: u16) -> u64 {
    let mut total = 0;
    for f in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(s) = std::fs::read_to_string(f) else {
            continue;
        };
        for l in s.lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let Some(local) = cols.get(1) else { continue };
            let Some(p) = local.rsplit(':').next() else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() == Some(port) {
                total += cols.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_niceness_is_set_for_that_thread_only() {
        let pid = std::process::id();
        let own_nice = || -> i64 {
            stat_nice(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()).unwrap()
        };
        let before = own_nice();
        let (set, done) = (
            std::sync::Arc::new(std::sync::Barrier::new(2)),
            std::sync::Arc::new(std::sync::Barrier::new(2)),
        );
        let (set2, done2) = (set.clone(), done.clone());
        let niced = spawn_named("niced-test-7", move || {
            set_thread_nice(before as i32 + 3).unwrap();
            set2.wait();
            done2.wait();
        })
        .unwrap();
        set.wait();
        let nices = thread_group_nice(pid);
        done.wait();
        niced.join().unwrap();
        assert_eq!(nices.get("niced-test"), Some(&(before + 3)), "{nices:?}");
        assert_eq!(own_nice(), before, "the calling thread only");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0").unwrap(), Rate::Unlimited);
        assert_eq!(
            parse_rate("1GiB/s").unwrap(),
            Rate::BytesPerSec(1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(parse_rate("200MB/s").unwrap(), Rate::BytesPerSec(200e6));
        assert_eq!(
            parse_rate("500k lines/s").unwrap(),
            Rate::LinesPerSec(500e3)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2000us").unwrap(), Duration::from_millis(2));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!((parse_fraction("0.001%").unwrap() - 1e-5).abs() < 1e-12);
    }

    #[test]
    fn thread_groups_and_deltas() {
        assert_eq!(thread_group("shard-0"), "shard");
        assert_eq!(thread_group("shard-12"), "shard");
        assert_eq!(thread_group("sink-influx-a"), "sink");
        assert_eq!(thread_group("bl-recv-3"), "bl-recv");
        assert_eq!(thread_group("sluice"), "sluice");
        assert_eq!(thread_group("odd-"), "odd-");
        let hz = ticks_to_secs(1.0);
        let stat = |name: &str, u: u32, s: u32| {
            format!("42 ({name}) S 1 1 1 0 -1 4194368 10 0 0 0 {u} {s} 0 0 20 0 1 0 100 0 0")
        };
        let (name, user, system) = parse_task_stat(&stat("a (b) c", 7, 3)).unwrap();
        assert_eq!(name, "a (b) c");
        assert_eq!((user, system), (7.0 * hz, 3.0 * hz));
        let snap = |entries: &[(u32, &str, u32, u32)]| {
            entries
                .iter()
                .map(|&(tid, name, u, s)| (tid, parse_task_stat(&stat(name, u, s)).unwrap()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let before = snap(&[
            (1, "shard-0", 10, 5),
            (2, "shard-1", 20, 5),
            (3, "gone", 9, 9),
        ]);
        let after = snap(&[
            (1, "shard-0", 15, 6),
            (2, "shard-1", 22, 8),
            (4, "sink-a", 1, 2),
        ]);
        let delta = thread_cpu_delta(&before, &after);
        assert_eq!(delta.len(), 2);
        assert!((delta["shard"].0 - 7.0 * hz).abs() < 1e-9);
        assert!((delta["shard"].1 - 4.0 * hz).abs() < 1e-9);
        assert!(
            (delta["sink"].0 - 1.0 * hz).abs() < 1e-9,
            "born in between: from zero"
        );
    }
}
