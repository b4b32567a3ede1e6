//! Validated configuration types. Parsing and validation live in `mod.rs`.
use std::net::SocketAddr;
use std::time::Duration;

/// Which receive path a shard uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoUringMode {
    /// Try io_uring, fall back to recvmmsg when setup fails.
    Auto,
    /// io_uring or refuse to start.
    On,
    /// Always recvmmsg.
    Off,
}

/// How the kernel spreads datagrams over the shards' `SO_REUSEPORT` sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// The kernel's hash of source and destination: one source address and
    /// port always lands on one shard, so its lines keep their order. Even
    /// when there are many more sources than shards.
    Flow,
    /// Each datagram to a shard at random: even load however few the
    /// sources; lines of one source may be forwarded out of order.
    Datagram,
}

/// One `[[sink]]`: an InfluxDB-compatible HTTP backend.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Unique name; used in metrics labels and in the auth environment variables.
    pub name: String,
    /// Full write URL, e.g. `http://127.0.0.1:8086/write?db=metrics`. Only `http://` is supported.
    pub url: String,
    /// Route names this sink subscribes to; `"*"` means every route including the junkyard.
    pub routes: Vec<String>,
    /// Upper bound of one POST body (a body may hold a single larger chunk alone).
    pub batch_max_size: usize,
    /// A body is sent at the latest this long after its first chunk arrived.
    pub batch_max_age: Duration,
    /// Capacity, in chunks, of the lock-free queue between the shards and this sink.
    pub queue_max_batches: usize,
    /// Bytes the queue may hold (its memory bound; `queue_max_batches` bounds
    /// the count of small chunks that `chunk.max_age` seals at low rates).
    /// A chunk that would take the queue past it is refused (`queue_full`),
    /// except into an empty queue.
    pub queue_max_size: usize,
    /// Concurrent in-flight requests (one keep-alive connection each).
    pub connections: usize,
    /// Timeout of one HTTP request (connect + send + response).
    pub timeout: Duration,
    /// gzip level 0..=9; 0 = off.
    pub gzip: u32,
    /// A batch is retried (connection errors, 5xx, 429) until it is this old, then dropped.
    pub retry_max_age: Duration,
    /// First retry delay; doubles per attempt with jitter, capped at `retry_backoff_max`.
    pub retry_backoff_initial: Duration,
    pub retry_backoff_max: Duration,
    /// Scheduling niceness of the connection threads (-20..=19, default 5):
    /// above the shards' (`listen.nice`, -5), so on a busy host a writer,
    /// which has its queue to absorb a delay, yields the CPU to the shards,
    /// whose only buffer is the socket's. Negative values need CAP_SYS_NICE.
    pub nice: i32,
}

/// Sanity limits applied to every line before routing.
#[derive(Clone, Debug)]
pub struct SanityConfig {
    /// Lines whose timestamp is further than this in the past are dropped.
    pub max_time_past: Duration,
    /// Lines whose timestamp is further than this in the future are dropped.
    pub max_time_future: Duration,
    /// Lines longer than this (without the newline) are dropped.
    pub max_line_length: usize,
    /// Unit of incoming timestamps; anything but ns is rewritten to ns when forwarded.
    pub precision: Precision,
    /// Append the receive time to lines that have no timestamp.
    pub stamp_missing: bool,
}

/// Receive side.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub udp: Vec<SocketAddr>,
    /// 0 = one shard per CPU in the affinity mask.
    pub shards: usize,
    /// Pin shard i to the i-th CPU of the affinity mask (the dedicated-host
    /// setting); `false` leaves placement to the scheduler.
    pub pin: bool,
    pub io_uring: IoUringMode,
    /// Requested SO_RCVBUF per socket.
    pub read_buffer_size: usize,
    /// Largest datagram accepted; bigger ones are truncated by the kernel, detected and dropped.
    pub max_datagram_size: usize,
    /// Receive buffers per shard (io_uring provided buffers / recvmmsg batch slots).
    pub recv_buffers: usize,
    pub balance: Balance,
    /// A shard whose own sockets are caught up takes datagrams from a
    /// sibling's socket that is behind (work stealing), so one heavy flow
    /// is not bound to one CPU; lines of a source being helped may leave
    /// out of order. Off by default.
    pub steal: bool,
    /// After a wake-up that found datagrams, a shard lets the next ones
    /// gather this long before it wakes again (as a NIC's interrupt
    /// coalescing does); 0 wakes for every arrival.
    pub wake_coalesce: Duration,
    /// Scheduling niceness of the shard threads (-20..=19). Below the
    /// host's ordinary processes (0) by default, so a busy neighbour cannot
    /// starve a shard while its socket buffer fills; needs CAP_SYS_NICE or
    /// RLIMIT_NICE, else the shards keep the process's niceness (logged
    /// once). 0 leaves them as they are.
    pub nice: i32,
}

/// `listen.nice` when unset. Weighs a shard about 3:1 against a process at
/// niceness 0, and 9:1 against the connection threads (`[[sink]] nice`, 5).
pub const SHARD_NICE_DEFAULT: i8 = -5;

/// `listen.wake_coalesce` when unset: at 100 MB/s of 1400-byte datagrams
/// it took 6-9 % off sluice's CPU per GiB against 200 µs (BENCHMARKS.md,
/// tenth session), for at most 2 ms more latency per line.
pub const WAKE_COALESCE_DEFAULT: Duration = Duration::from_millis(2);
/// The longest `listen.wake_coalesce` accepted.
pub const WAKE_COALESCE_MAX: Duration = Duration::from_millis(100);

/// `chunk.max_size` by default: the default `batch_max_size`, so that at
/// full rate a POST body is one chunk. Chunks of 1 MiB cost the connection
/// threads 15-25 % less kernel time to send than chunks of 128-512 KiB
/// (BENCHMARKS.md, seventeenth session), probably because a chunk that
/// fits the writing core's L2 is still there, dirty, when another core
/// copies it into the socket.
pub const CHUNK_MAX_SIZE_DEFAULT: u64 = 1 << 20;
/// A sink's `queue_max_size` by default: what 256 chunks of 256 KiB, the
/// queue's earlier bound, held.
pub const QUEUE_MAX_SIZE_DEFAULT: u64 = 64 << 20;
/// A sink's `queue_max_batches` by default: a count bound well past what
/// `queue_max_size` admits at full chunks, so that at low rates, where
/// `chunk.max_age` seals small chunks (a shard every 100 ms), the queue still
/// rides out a backend's restart (4,096 chunks: 25 s of 16 shards' chunks).
pub const QUEUE_MAX_BATCHES_DEFAULT: usize = 4096;

/// Per-shard chunking: how lines are grouped before being handed to sinks.
#[derive(Clone, Debug)]
pub struct ChunkConfig {
    /// A chunk is sealed once it holds this many bytes.
    pub max_size: usize,
    /// A chunk is sealed at the latest this long after its first line.
    pub max_age: Duration,
    /// Bytes of chunk buffers kept ready, over all shards (`batch::pool`);
    /// 0 = none.
    pub pool: usize,
}

impl ChunkConfig {
    /// Buffers in each shard's pool: `pool` shared out, at least one a
    /// shard when there is a pool at all.
    pub fn pool_buffers(&self, shards: usize) -> usize {
        match self.pool {
            0 => 0,
            bytes => (bytes / shards.max(1) / self.max_size).max(1),
        }
    }
}

/// The unit of timestamps as sent by the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    /// Infer from the magnitude of each timestamp (see `check::infer_unit`).
    Auto,
}

/// Budgets that keep runaway series or line rates away from the backends.
#[derive(Clone, Debug, Default)]
pub struct CardinalityConfig {
    /// Distinct series per measurement within `window`; 0 = unlimited.
    pub max_series: u64,
    /// Lines per second per measurement; 0 = unlimited.
    pub max_lines_per_second: u64,
    /// Series seen within this window count as existing.
    pub window: std::time::Duration,
    /// Measurements tracked per shard (memory bound); others are not budgeted.
    pub max_measurements: usize,
    /// Per-measurement overrides of the two budgets.
    pub limits: Vec<MeasurementLimit>,
    /// Budgets per route: distinct series (any measurement) and lines per
    /// second of everything routed there, on top of the measurement budgets.
    pub routes: Vec<RouteLimit>,
}

/// `[[cardinality.route]]`: a budget for everything one route receives.
#[derive(Clone, Debug)]
pub struct RouteLimit {
    pub route: String,
    /// Distinct series within `window`; 0 = unlimited.
    pub max_series: u64,
    /// Lines per second; 0 = unlimited.
    pub max_lines_per_second: u64,
}

#[derive(Clone, Debug)]
pub struct MeasurementLimit {
    pub measurement: String,
    pub max_series: Option<u64>,
    pub max_lines_per_second: Option<u64>,
}

/// Where rejected lines go, if anywhere besides their counter.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterConfig {
    /// Route that receives rejected lines (as `sluice_reject` lines); `None` = counted only.
    pub route: Option<String>,
    /// Reasons sent there (metric labels, e.g. "parse_error", "cardinality"); empty = all.
    pub reasons: Vec<String>,
}
