//! How sluice's threads are scheduled: which CPUs shards run on, pinning,
//! and each thread's niceness (shards above the writers, by default both
//! above a host's ordinary processes: see `listen.nice` and `[[sink]] nice`).
use core_affinity::CoreId;

/// The CPUs in this process's affinity mask (so `taskset`/cgroup limits are honoured).
pub fn allowed_cores() -> Vec<CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// Pin the calling thread; `false` (with nothing changed) when the kernel refuses.
pub fn pin_current(core: CoreId) -> bool {
    core_affinity::set_for_current(core)
}

/// Give the calling thread (only it) niceness `nice`. Raising priority
/// (below the current value) needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that
/// allows it (systemd's `LimitNICE=`); without, the kernel refuses and
/// nothing changes.
pub fn set_current_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid and setpriority take plain integers and touch no memory
    // of ours; on Linux, PRIO_PROCESS with a thread id sets that thread only.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's niceness, from the kernel.
pub fn current_nice() -> std::io::Result<i32> {
    // SAFETY: as above; getpriority can return -1 legitimately, so errno
    // is cleared first and read after.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
        match *libc::__errno_location() {
            0 => Ok(n),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn niceness_is_set_for_the_calling_thread_only() {
        let before = current_nice().unwrap();
        // Lowering priority needs no privilege.
        let target = (before + 3).min(19);
        let niced = std::thread::spawn(move || {
            set_current_nice(target).unwrap();
            current_nice().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(niced, target);
        assert_eq!(current_nice().unwrap(), before);
    }
}
