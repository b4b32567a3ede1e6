//! Shard: one pinned thread's loop. Receive a batch of datagrams, split and
//! scan lines, check them, route them, append them to the open chunk of the
//! route's delivery group, and offer sealed chunks to the subscribed sinks'
//! queues. A shard shares nothing with other shards but those queues, and
//! never blocks on a sink.
pub mod debug;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::batch::pool::ChunkPool;
use crate::batch::{Batcher, Chunk, DatagramAppender, DeliveryGroups, GroupId};
use crate::budget::Budgets;
use crate::check::{self, Checker, Reason, Verdict};
use crate::config::{CardinalityConfig, ChunkConfig, SanityConfig};
use crate::parse;
use crate::route::{RouteId, RouteTable};
use crate::rx::{Receiver, RxConfig, RxPath};
use crate::sanity::wall_clock_ns;
use crate::sink::Sink;
use crate::telemetry::{Layout, LocalCounters, ShardCounters};
use debug::{Sampler, ShardDebug};

/// How often a shard refreshes its `/debug` snapshot.
const DEBUG_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a shard waits in one poll, so it notices `stop` promptly.
const POLL_MAX: Duration = Duration::from_millis(50);

/// Everything one shard needs; moved into its thread.
pub struct ShardSpec {
    pub index: usize,
    pub core: Option<core_affinity::CoreId>,
    /// Niceness to run at (`listen.nice`); 0 leaves the thread as it is.
    pub nice: i32,
    pub rx: RxConfig,
    pub table: Arc<RouteTable>,
    /// Route id -> indices into `sinks` of the sinks subscribed to it.
    pub route_sinks: Arc<Vec<Vec<usize>>>,
    pub sinks: Vec<Arc<Sink>>,
    pub sanity: SanityConfig,
    pub cardinality: CardinalityConfig,
    /// Route that receives rejected lines, and which reasons (empty = all).
    pub dead_letter: Option<(RouteId, Vec<String>)>,
    pub debug: Arc<ShardDebug>,
    pub chunk: ChunkConfig,
    /// Buffers in this shard's chunk pool (`ChunkConfig::pool_buffers`).
    pub chunk_pool_buffers: usize,
    pub layout: Layout,
    pub counters: Arc<ShardCounters>,
    pub stop: Arc<AtomicBool>,
    /// At shutdown, how long to keep re-offering final chunks to full queues.
    pub final_offer_timeout: Duration,
}

/// What a shard reports once its receiver is open.
pub struct Opened {
    pub local_addrs: Vec<SocketAddr>,
    pub path: RxPath,
    pub effective_rcvbuf: usize,
    /// Why io_uring was not used, when `auto` fell back to recvmmsg.
    pub io_uring_error: Option<String>,
    /// Why the shard could not take its niceness (`listen.nice`).
    pub nice_error: Option<String>,
    /// The niceness it runs at: `listen.nice`, or what the process had.
    pub nice: i32,
}

/// Yields a shard's open result once.
pub type OpenedReceiver = mpsc::Receiver<Result<Opened, crate::rx::Error>>;

/// Start a shard thread. The returned channel yields the open result.
pub fn spawn(spec: ShardSpec) -> std::io::Result<(JoinHandle<()>, OpenedReceiver)> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("shard-{}", spec.index))
        .spawn(move || run(spec, tx))?;
    Ok((handle, rx))
}

fn run(spec: ShardSpec, opened: mpsc::Sender<Result<Opened, crate::rx::Error>>) {
    if let Some(core) = spec.core {
        if !crate::sched::pin_current(core) {
            tracing::warn!(
                shard = spec.index,
                core = core.id,
                "could not pin shard to its CPU; running unpinned"
            );
        }
    }
    // Before the socket opens, so no datagram waits on a shard at the wrong
    // priority. A refusal (no CAP_SYS_NICE) is reported, not fatal.
    let nice_error = match spec.nice {
        0 => None,
        n => crate::sched::set_current_nice(n)
            .err()
            .map(|e| e.to_string()),
    };
    // Filled (its pages written) on this thread, so on this CPU's memory
    // node, and before the socket opens: nothing waits while it is.
    let pool =
        ChunkPool::filled(spec.chunk_pool_buffers, spec.chunk.max_size).unwrap_or_else(|e| {
            tracing::warn!(
                shard = spec.index,
                buffers = spec.chunk_pool_buffers,
                error = %e,
                "cannot map the chunk pool; chunks come from the allocator"
            );
            None
        });
    let mut receiver = match Receiver::open(&spec.rx) {
        Ok(r) => r,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let path = receiver.path();
    spec.counters.path.store(
        match path {
            RxPath::IoUring => 1,
            RxPath::Recvmmsg => 2,
        },
        Ordering::Relaxed,
    );
    let nice = crate::sched::current_nice().unwrap_or(spec.nice);
    spec.counters
        .nice
        .store(nice.clamp(-20, 19) as i8, Ordering::Relaxed);
    let _ = opened.send(Ok(Opened {
        local_addrs: receiver.local_addrs(),
        path,
        effective_rcvbuf: receiver.effective_rcvbuf(),
        io_uring_error: receiver.io_uring_error().map(|e| e.to_string()),
        nice_error,
        nice,
    }));

    let route_has_sinks = spec.route_sinks.iter().map(|s| !s.is_empty()).collect();
    // Routes with the same sinks share open chunks (`batch`).
    let groups = DeliveryGroups::new(&spec.route_sinks);
    let dead_letter = spec
        .dead_letter
        .as_ref()
        .map(|(route, reasons)| DeadLetter {
            route: *route,
            reasons: check::Reason::LABELS
                .iter()
                .map(|label| reasons.is_empty() || reasons.iter().any(|r| r == label))
                .collect(),
        });
    // Fast-path scratch, reused for every line (kept outside `Pipeline` so
    // the line loop can borrow both).
    let mut scanner = parse::Scanner::new();
    let mut pipeline = Pipeline {
        checker: Checker::new(
            &spec.table,
            spec.sanity.clone(),
            Budgets::new(&spec.cardinality, spec.table.routes()),
            route_has_sinks,
            wall_clock_ns(),
        ),
        batcher: Batcher::new(
            groups.sinks.len(),
            spec.chunk.max_size,
            spec.chunk.max_age,
            pool,
        ),
        local: LocalCounters::new(spec.layout),
        groups: &groups,
        sinks: &spec.sinks,
        rewrite: Vec::with_capacity(1024),
        rejects: Rejects {
            dead_letter,
            sampler: Sampler::default(),
            letter: Vec::with_capacity(1024),
        },
        batch_now: None,
    };
    spec.counters.receiving.store(true, Ordering::Release);
    let mut next_debug = Instant::now();
    // Chunk buffers from outside the pool, as of the last debug tick.
    let mut allocated_seen = 0u64;
    while !spec.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let timeout = pipeline
            .batcher
            .next_expiry(now)
            .map_or(POLL_MAX, |d| d.min(POLL_MAX))
            .max(Duration::from_millis(1));
        pipeline.checker.set_now(wall_clock_ns());
        pipeline.batch_now = None;
        if let Err(e) = receiver.poll(timeout, &mut |datagram: &[u8]| {
            pipeline.datagram(&mut scanner, datagram)
        }) {
            tracing::error!(shard = spec.index, error = %e, "receive failed; retrying");
            std::thread::sleep(Duration::from_millis(10));
        }
        let now = Instant::now();
        pipeline.seal_expired(now);
        pipeline.local.set_rx(&receiver.stats());
        pipeline
            .local
            .set_chunk_allocs(pipeline.batcher.allocated());
        pipeline.local.publish(&spec.counters);
        if now >= next_debug {
            next_debug = now + DEBUG_INTERVAL;
            let budgets = pipeline
                .checker
                .budgets()
                .map(|b| (b.snapshot(), b.route_snapshot()));
            pipeline.rejects.sampler.publish(&spec.debug, budgets);
            // A spell past the pool is over once a whole interval took no
            // buffer from outside it: unmap what the pool kept for it.
            let allocated = pipeline.batcher.allocated();
            if allocated == allocated_seen {
                pipeline.batcher.trim_pool();
            }
            allocated_seen = allocated;
        }
    }
    // Stop receiving first, then hand everything still open to the sinks.
    drop(receiver);
    pipeline.finish(Instant::now() + spec.final_offer_timeout);
    pipeline.local.publish(&spec.counters);
}

struct DeadLetter {
    route: RouteId,
    /// Indexed like `Reason::LABELS`.
    reasons: Vec<bool>,
}

/// The per-shard data path, from datagram to sink queue.
struct Pipeline<'a> {
    checker: Checker<'a>,
    batcher: Batcher,
    local: LocalCounters,
    /// Which open chunk each route's lines go to, and its sinks.
    groups: &'a DeliveryGroups,
    sinks: &'a [Arc<Sink>],
    /// Scratch for an accepted line forwarded rewritten (timestamp to ns,
    /// receive-time stamp).
    rewrite: Vec<u8>,
    rejects: Rejects,
    /// Clock read once per poll, at the first datagram.
    batch_now: Option<Instant>,
}

impl Pipeline<'_> {
    #[inline]
    fn datagram(&mut self, scanner: &mut parse::Scanner, datagram: &[u8]) {
        let now = *self.batch_now.get_or_insert_with(Instant::now);
        let mut lines = 0u64;
        let Pipeline {
            checker,
            batcher,
            local,
            groups,
            sinks,
            rewrite: scratch,
            rejects,
            ..
        } = self;
        let (groups, sinks) = (*groups, *sinks);
        let group_sinks = &groups.sinks[..];
        // Lines forwarded as received go to their chunk in runs: one copy
        // per run of consecutive lines of a delivery group, not one per line.
        let mut out = batcher.datagram(datagram, now);
        for item in scanner.lines(datagram) {
            lines += 1;
            match checker.judge(item) {
                Verdict::Accept {
                    line,
                    matched,
                    rewrite,
                    ..
                } => {
                    local.routed(matched.route as usize, matched.rule);
                    out.accepted(
                        groups.of(matched.route),
                        &line,
                        rewrite,
                        scratch,
                        &mut |group, chunk| dispatch(local, sinks, group_sinks, group, chunk),
                    );
                }
                Verdict::Reject { raw, reason, .. } => rejects.reject(
                    raw,
                    reason,
                    (now, checker.now_ns()),
                    Delivery {
                        out: &mut out,
                        local,
                        sinks,
                        groups,
                    },
                ),
            }
        }
        out.finish();
        local.lines(lines);
    }

    fn seal_expired(&mut self, now: Instant) {
        let (local, sinks, group_sinks) = (&mut self.local, self.sinks, &self.groups.sinks[..]);
        self.batcher.seal_expired(now, &mut |group, chunk| {
            dispatch(local, sinks, group_sinks, group, chunk)
        });
    }

    /// Shutdown: seal everything and offer it, waiting (bounded) for room.
    fn finish(&mut self, deadline: Instant) {
        let mut sealed: Vec<(GroupId, Chunk)> = Vec::new();
        self.batcher
            .seal_all(&mut |group, chunk| sealed.push((group, chunk)));
        for (group, chunk) in sealed {
            for &sink in &self.groups.sinks[group as usize] {
                let mut pending = chunk.clone();
                loop {
                    match self.sinks[sink].offer(pending) {
                        Ok(()) => {
                            self.local.enqueued(sink, chunk.lines as u64);
                            break;
                        }
                        Err(back) if Instant::now() < deadline => {
                            pending = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(_) => {
                            self.local.queue_full(sink, chunk.lines as u64);
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Where a rejected line's dead letter goes: the datagram's appender and the sinks.
struct Delivery<'o, 'b, 'd, 's> {
    out: &'o mut DatagramAppender<'b, 'd>,
    local: &'o mut LocalCounters,
    sinks: &'s [Arc<Sink>],
    groups: &'s DeliveryGroups,
}

/// What a shard does with rejected lines: count, sample, dead-letter.
struct Rejects {
    dead_letter: Option<DeadLetter>,
    sampler: Sampler,
    /// Scratch for the dead letter being written.
    letter: Vec<u8>,
}

impl Rejects {
    /// Count, sample and maybe dead-letter one rejected line; `now` is the
    /// poll's clock and wall-clock time in ns.
    #[cold]
    fn reject(&mut self, raw: &[u8], reason: Reason, now: (Instant, i64), to: Delivery) {
        let Delivery {
            out,
            local,
            sinks,
            groups,
        } = to;
        let (now, now_ns) = now;
        match reason {
            Reason::Parse(error) => local.parse_error(error),
            Reason::Drop(drop) => local.dropped(drop, 1),
        }
        self.sampler.offer(reason.label(), raw, now, now_ns);
        let Some(dead) = &self.dead_letter else {
            return;
        };
        let wanted = Reason::LABELS
            .iter()
            .position(|l| *l == reason.label())
            .is_some_and(|i| dead.reasons[i])
            || dead.reasons[Reason::LABELS
                .iter()
                .position(|l| *l == reason.drop_class().as_str())
                .unwrap_or(0)];
        let group = groups.of(dead.route);
        if !wanted || groups.sinks[group as usize].is_empty() {
            return;
        }
        check::dead_letter(raw, reason, now_ns, &mut self.letter);
        local.dead_lettered();
        out.other(group, &self.letter, &mut |group, chunk| {
            dispatch(local, sinks, &groups.sinks, group, chunk)
        });
    }
}

/// Offer a sealed chunk to every sink of its delivery group; a full queue drops it for that sink only.
#[inline]
fn dispatch(
    local: &mut LocalCounters,
    sinks: &[Arc<Sink>],
    group_sinks: &[Vec<usize>],
    group: GroupId,
    chunk: Chunk,
) {
    let lines = chunk.lines as u64;
    let subscribers = &group_sinks[group as usize];
    let (last, rest) = match subscribers.split_last() {
        Some(split) => split,
        None => return,
    };
    for &sink in rest {
        match sinks[sink].offer(chunk.clone()) {
            Ok(()) => local.enqueued(sink, lines),
            Err(_) => local.queue_full(sink, lines),
        }
    }
    match sinks[*last].offer(chunk) {
        Ok(()) => local.enqueued(*last, lines),
        Err(_) => local.queue_full(*last, lines),
    }
}
