//! CPU placement: which cores shards run on, and pinning.
use core_affinity::CoreId;

/// The CPUs in this process's affinity mask (so `taskset`/cgroup limits are honoured).
pub fn allowed_cores() -> Vec<CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// Pin the calling thread; `false` (with nothing changed) when the kernel refuses.
pub fn pin_current(core: CoreId) -> bool {
    core_affinity::set_for_current(core)
}
