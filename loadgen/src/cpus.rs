//! Splitting the host's CPUs between the system under test and the harness
//! (`verify --sut-cpus`): the SUT gets the CPUs named, the sender and the sinks
//! the rest, so neither takes the other's CPU and the SUT's capacity on k cores
//! is what a run measures.
use anyhow::{bail, Context, Result};

/// Highest CPU number a `cpu_set_t` holds.
const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

/// Parse a CPU list as `taskset -c` and `/sys/.../cpulist` write it:
/// `"1"`, `"0-3"`, `"0-3,8,10-11"`. Sorted, without repeats.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| -> Result<usize> {
            s.parse::<usize>()
                .ok()
                .filter(|&n| n < MAX_CPUS)
                .with_context(|| format!("{text:?}: {s:?} is not a CPU number (0..{MAX_CPUS})"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            bail!("{text:?}: range {lo}-{hi} runs backwards");
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// A CPU list written compactly, `0-3,8`.
pub fn fmt_cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// The CPUs the calling thread may run on.
pub fn allowed() -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`, which outlives the call.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    // SAFETY: `set` is initialised and every index is below CPU_SETSIZE.
    Ok((0..MAX_CPUS)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// A `cpu_set_t` holding `cpus` (each below `CPU_SETSIZE`, as `parse_cpu_list` ensures).
pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < MAX_CPUS) {
        // SAFETY: `c` is below CPU_SETSIZE, so the bit is inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Restrict the calling thread (and the threads it starts from now on) to `set`.
/// Async-signal-safe (one system call), so a child may call it between fork and exec.
pub fn apply(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: the pointer and size describe `set`, which outlives the call;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Which CPUs the SUT runs on and which the harness (sender, sinks) keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSplit {
    pub sut: Vec<usize>,
    pub harness: Vec<usize>,
}

impl CpuSplit {
    /// The SUT on `sut`, the harness on every other CPU of `allowed`. Both
    /// sides need at least one CPU, and the SUT's must all be allowed.
    pub fn new(sut: Vec<usize>, allowed: &[usize]) -> Result<CpuSplit> {
        if sut.is_empty() {
            bail!("--sut-cpus names no CPU");
        }
        if let Some(c) = sut.iter().find(|c| !allowed.contains(c)) {
            bail!(
                "--sut-cpus: CPU {c} is not among this process's CPUs ({})",
                fmt_cpu_list(allowed)
            );
        }
        let harness: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|c| !sut.contains(c))
            .collect();
        if harness.is_empty() {
            bail!(
                "--sut-cpus {} leaves no CPU for the sender and the sinks (this process has {})",
                fmt_cpu_list(&sut),
                fmt_cpu_list(allowed)
            );
        }
        Ok(CpuSplit { sut, harness })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_print_like_taskset() {
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(
            parse_cpu_list("8, 0-2,10-11,2").unwrap(),
            vec![0, 1, 2, 8, 10, 11]
        );
        assert_eq!(fmt_cpu_list(&[0, 1, 2, 8, 10, 11]), "0-2,8,10-11");
        assert_eq!(fmt_cpu_list(&[5]), "5");
        for bad in ["", "x", "3-1", "1-", "-1", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn split_gives_the_harness_the_rest_and_refuses_what_cannot_work() {
        let all = [0, 1, 2, 3];
        let s = CpuSplit::new(vec![0, 1], &all).unwrap();
        assert_eq!(s.harness, vec![2, 3]);
        let e = CpuSplit::new(vec![0, 1, 2, 3], &all)
            .unwrap_err()
            .to_string();
        assert!(e.contains("leaves no CPU"), "{e}");
        let e = CpuSplit::new(vec![7], &all).unwrap_err().to_string();
        assert!(e.contains("CPU 7 is not among"), "{e}");
    }

    #[test]
    fn affinity_is_applied_and_read_back() {
        // On a thread of its own, so the test harness's threads keep theirs.
        std::thread::spawn(|| {
            let all = allowed().unwrap();
            assert!(!all.is_empty());
            let one = [all[all.len() - 1]];
            apply(&cpu_set(&one)).unwrap();
            assert_eq!(allowed().unwrap(), one);
        })
        .join()
        .unwrap();
    }
}
