//! Telemetry: per-shard counters and their Prometheus export.
//!
//! Each shard counts into plain `u64`s ([`LocalCounters`]) and publishes them
//! once per receive batch into its own [`ShardCounters`] (atomics written by
//! that shard only, so never contended). A scrape sums the shards.
mod export;

use std::sync::atomic::{AtomicBool, AtomicI8, AtomicU64, AtomicU8, Ordering};

pub use export::Telemetry;

use crate::parse::ParseError;

/// Why a line was dropped before it reached any sink queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineDrop {
    /// Not valid line protocol (the precise kind is in `parse_errors`).
    ParseError,
    /// Timestamp outside the sanity window.
    TimeOutOfRange,
    /// Longer than `max_line_length`.
    TooLong,
    /// A new series beyond its measurement's series budget.
    Cardinality,
    /// Over its measurement's lines-per-second budget.
    RateLimited,
    /// Routed to a route that no sink subscribes to.
    NoSink,
}

impl LineDrop {
    pub const ALL: [LineDrop; 6] = [
        LineDrop::ParseError,
        LineDrop::TimeOutOfRange,
        LineDrop::TooLong,
        LineDrop::Cardinality,
        LineDrop::RateLimited,
        LineDrop::NoSink,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            LineDrop::ParseError => "parse_error",
            LineDrop::TimeOutOfRange => "time_out_of_range",
            LineDrop::TooLong => "too_long",
            LineDrop::Cardinality => "cardinality",
            LineDrop::RateLimited => "rate_limited",
            LineDrop::NoSink => "no_sink",
        }
    }
}

/// Where each counter lives in the flat arrays.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub routes: usize,
    pub rules: usize,
    pub sinks: usize,
}

// Fixed counters first, then the variable-length groups.
const DATAGRAMS: usize = 0;
const BYTES: usize = 1;
const LINES: usize = 2;
const TRUNCATED: usize = 3;
const ENOBUFS: usize = 4;
const KERNEL_DROPS: usize = 5;
const REARMS: usize = 6;
const DEAD_LETTERED: usize = 7;
const BATCHES: usize = 8;
/// Datagrams a shard took from siblings' sockets (`listen.steal`).
const STOLEN: usize = 9;
/// Chunk buffers that did not come from the shard's pool.
const CHUNK_ALLOCS: usize = 10;
// Gauges: a scrape takes the largest over shards, not the sum.
const BACKLOG: usize = 11;
const BACKLOG_MAX: usize = 12;
const FIXED: usize = 13;

impl Layout {
    fn drop_base(&self) -> usize {
        FIXED
    }
    fn parse_base(&self) -> usize {
        self.drop_base() + LineDrop::ALL.len()
    }
    fn routed_base(&self) -> usize {
        self.parse_base() + ParseError::ALL.len()
    }
    fn rule_base(&self) -> usize {
        self.routed_base() + self.routes
    }
    fn enqueued_base(&self) -> usize {
        self.rule_base() + self.rules
    }
    fn queue_full_base(&self) -> usize {
        self.enqueued_base() + self.sinks
    }
    fn len(&self) -> usize {
        self.queue_full_base() + self.sinks
    }
}

/// A shard's working counters: plain integers, no atomics on the hot path.
pub struct LocalCounters {
    layout: Layout,
    values: Vec<u64>,
}

impl LocalCounters {
    pub fn new(layout: Layout) -> LocalCounters {
        LocalCounters {
            layout,
            values: vec![0; layout.len()],
        }
    }
    #[inline]
    pub fn lines(&mut self, n: u64) {
        self.values[LINES] += n;
    }
    #[inline]
    pub fn dropped(&mut self, reason: LineDrop, n: u64) {
        self.values[self.layout.drop_base() + reason as usize] += n;
    }
    #[inline]
    pub fn parse_error(&mut self, kind: ParseError) {
        self.values[self.layout.parse_base() + kind.index()] += 1;
        self.values[self.layout.drop_base() + LineDrop::ParseError as usize] += 1;
    }
    #[inline]
    pub fn routed(&mut self, route: usize, rule: Option<u32>) {
        self.values[self.layout.routed_base() + route] += 1;
        if let Some(rule) = rule {
            self.values[self.layout.rule_base() + rule as usize] += 1;
        }
    }
    #[inline]
    pub fn dead_lettered(&mut self) {
        self.values[DEAD_LETTERED] += 1;
    }
    #[inline]
    pub fn enqueued(&mut self, sink: usize, lines: u64) {
        self.values[self.layout.enqueued_base() + sink] += lines;
    }
    #[inline]
    pub fn queue_full(&mut self, sink: usize, lines: u64) {
        self.values[self.layout.queue_full_base() + sink] += lines;
    }
    /// Receive-side totals are cumulative in the receiver; copy them.
    pub fn set_rx(&mut self, rx: &crate::rx::RxStats) {
        self.values[DATAGRAMS] = rx.datagrams;
        self.values[BYTES] = rx.bytes;
        self.values[TRUNCATED] = rx.truncated;
        self.values[ENOBUFS] = rx.enobufs;
        self.values[KERNEL_DROPS] = rx.kernel_drops;
        self.values[REARMS] = rx.rearms;
        self.values[BACKLOG] = rx.backlog_bytes;
        self.values[BACKLOG_MAX] = rx.backlog_max_bytes;
        self.values[BATCHES] = rx.batches;
        self.values[STOLEN] = rx.stolen;
    }
    /// The batcher's count of chunk buffers that did not come from the pool.
    pub fn set_chunk_allocs(&mut self, n: u64) {
        self.values[CHUNK_ALLOCS] = n;
    }
    /// Make the current totals visible to scrapes.
    pub fn publish(&self, to: &ShardCounters) {
        for (dst, &v) in to.values.iter().zip(&self.values) {
            dst.store(v, Ordering::Relaxed);
        }
    }
}

/// The published counters of one shard (single writer: that shard).
pub struct ShardCounters {
    values: Vec<AtomicU64>,
    /// Set once the shard's receiver is open and it is polling.
    pub receiving: AtomicBool,
    /// 0 = not started, 1 = io_uring, 2 = recvmmsg.
    pub path: AtomicU8,
    /// The niceness the shard runs at (set once, at start).
    pub nice: AtomicI8,
}

impl ShardCounters {
    pub fn new(layout: Layout) -> ShardCounters {
        ShardCounters {
            values: (0..layout.len()).map(|_| AtomicU64::new(0)).collect(),
            receiving: AtomicBool::new(false),
            path: AtomicU8::new(0),
            nice: AtomicI8::new(0),
        }
    }
    fn get(&self, i: usize) -> u64 {
        self.values[i].load(Ordering::Relaxed)
    }
}

/// Totals summed over shards at one instant (what a scrape or a test sees).
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub datagrams: u64,
    pub bytes: u64,
    pub lines: u64,
    pub truncated: u64,
    pub enobufs: u64,
    pub kernel_drops: u64,
    pub rearms: u64,
    /// Wake-ups that found datagrams (`datagrams / rx_batches` = mean batch).
    pub rx_batches: u64,
    /// The largest receive backlog any shard found at its last wake.
    pub rx_backlog_bytes: u64,
    /// The largest receive backlog of any one socket since start.
    pub rx_backlog_max_bytes: u64,
    /// Datagrams shards took from siblings' sockets that were behind.
    pub stolen: u64,
    /// Chunk buffers that did not come from a shard's pool.
    pub chunk_allocs: u64,
    /// Rejected lines also sent to the dead-letter route.
    pub dead_lettered: u64,
    /// Indexed like [`LineDrop::ALL`].
    pub dropped: Vec<u64>,
    /// Indexed like [`ParseError::ALL`].
    pub parse_errors: Vec<u64>,
    pub routed: Vec<u64>,
    pub rule_matches: Vec<u64>,
    pub sink_enqueued: Vec<u64>,
    pub sink_queue_full: Vec<u64>,
}

impl Totals {
    pub fn sum(shards: &[std::sync::Arc<ShardCounters>], layout: Layout) -> Totals {
        let mut flat = vec![0u64; layout.len()];
        for shard in shards {
            for (i, v) in flat.iter_mut().enumerate() {
                *v = match i {
                    BACKLOG | BACKLOG_MAX => (*v).max(shard.get(i)),
                    _ => *v + shard.get(i),
                };
            }
        }
        let slice = |base: usize, n: usize| flat[base..base + n].to_vec();
        Totals {
            datagrams: flat[DATAGRAMS],
            bytes: flat[BYTES],
            lines: flat[LINES],
            truncated: flat[TRUNCATED],
            enobufs: flat[ENOBUFS],
            kernel_drops: flat[KERNEL_DROPS],
            rearms: flat[REARMS],
            rx_batches: flat[BATCHES],
            rx_backlog_bytes: flat[BACKLOG],
            rx_backlog_max_bytes: flat[BACKLOG_MAX],
            stolen: flat[STOLEN],
            chunk_allocs: flat[CHUNK_ALLOCS],
            dead_lettered: flat[DEAD_LETTERED],
            dropped: slice(layout.drop_base(), LineDrop::ALL.len()),
            parse_errors: slice(layout.parse_base(), ParseError::ALL.len()),
            routed: slice(layout.routed_base(), layout.routes),
            rule_matches: slice(layout.rule_base(), layout.rules),
            sink_enqueued: slice(layout.enqueued_base(), layout.sinks),
            sink_queue_full: slice(layout.queue_full_base(), layout.sinks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shards_sum_and_groups_do_not_overlap() {
        let layout = Layout {
            routes: 2,
            rules: 3,
            sinks: 2,
        };
        let shards: Vec<Arc<ShardCounters>> = (0..2)
            .map(|_| Arc::new(ShardCounters::new(layout)))
            .collect();
        for shard in &shards {
            let mut local = LocalCounters::new(layout);
            local.lines(10);
            local.parse_error(ParseError::BadField);
            local.dropped(LineDrop::TooLong, 2);
            local.routed(1, Some(2));
            local.routed(0, None);
            local.enqueued(1, 5);
            local.queue_full(0, 3);
            local.publish(shard);
        }
        let t = Totals::sum(&shards, layout);
        assert_eq!(t.lines, 20);
        assert_eq!(t.dropped, vec![2, 0, 4, 0, 0, 0]);
        assert_eq!(t.parse_errors[ParseError::BadField.index()], 2);
        assert_eq!(t.routed, vec![2, 2]);
        assert_eq!(t.rule_matches, vec![0, 0, 2]);
        assert_eq!(t.sink_enqueued, vec![0, 10]);
        assert_eq!(t.sink_queue_full, vec![6, 0]);
    }

    #[test]
    fn backlog_gauges_take_the_largest_shard_and_counters_still_sum() {
        let layout = Layout {
            routes: 1,
            rules: 0,
            sinks: 1,
        };
        let shards: Vec<Arc<ShardCounters>> = [(100, 900, 3), (700, 800, 4)]
            .into_iter()
            .map(|(backlog, max, drops)| {
                let shard = Arc::new(ShardCounters::new(layout));
                let mut local = LocalCounters::new(layout);
                local.set_rx(&crate::rx::RxStats {
                    backlog_bytes: backlog,
                    backlog_max_bytes: max,
                    kernel_drops: drops,
                    ..Default::default()
                });
                local.publish(&shard);
                shard
            })
            .collect();
        let t = Totals::sum(&shards, layout);
        assert_eq!((t.rx_backlog_bytes, t.rx_backlog_max_bytes), (700, 900));
        assert_eq!(t.kernel_drops, 7);
    }
}
