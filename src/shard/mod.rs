//! Shard: one pinned thread's loop. Receive a batch of datagrams, split and
//! scan lines, check them, route them, append them to the route's open chunk,
//! and offer sealed chunks to the subscribed sinks' queues. A shard shares
//! nothing with other shards but those queues, and never blocks on a sink.
pub mod cpu;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::batch::{Batcher, Chunk};
use crate::config::{ChunkConfig, SanityConfig};
use crate::parse::{self, Item};
use crate::route::{RouteId, RouteTable, Scratch};
use crate::rx::{Receiver, RxConfig, RxPath};
use crate::sanity::{wall_clock_ns, TimeWindow};
use crate::sink::Sink;
use crate::telemetry::{Layout, LineDrop, LocalCounters, ShardCounters};

/// The longest a shard waits in one poll, so it notices `stop` promptly.
const POLL_MAX: Duration = Duration::from_millis(50);

/// Everything one shard needs; moved into its thread.
pub struct ShardSpec {
    pub index: usize,
    pub core: Option<core_affinity::CoreId>,
    pub rx: RxConfig,
    pub table: Arc<RouteTable>,
    /// Route id -> indices into `sinks` of the sinks subscribed to it.
    pub route_sinks: Arc<Vec<Vec<usize>>>,
    pub sinks: Vec<Arc<Sink>>,
    pub sanity: SanityConfig,
    pub chunk: ChunkConfig,
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
}

/// Start a shard thread. The returned channel yields the open result.
pub fn spawn(
    spec: ShardSpec,
) -> std::io::Result<(JoinHandle<()>, mpsc::Receiver<Result<Opened, crate::rx::Error>>)> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("shard-{}", spec.index))
        .spawn(move || run(spec, tx))?;
    Ok((handle, rx))
}

fn run(spec: ShardSpec, opened: mpsc::Sender<Result<Opened, crate::rx::Error>>) {
    if let Some(core) = spec.core {
        if !cpu::pin_current(core) {
            tracing::warn!(shard = spec.index, core = core.id, "could not pin shard to its CPU; running unpinned");
        }
    }
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
    let _ = opened.send(Ok(Opened {
        local_addrs: receiver.local_addrs(),
        path,
        effective_rcvbuf: receiver.effective_rcvbuf(),
    }));

    let mut pipeline = Pipeline {
        table: &spec.table,
        scratch: spec.table.scratch(),
        batcher: Batcher::new(spec.table.routes().len(), spec.chunk.max_size, spec.chunk.max_age),
        local: LocalCounters::new(spec.layout),
        route_sinks: &spec.route_sinks,
        sinks: &spec.sinks,
        window: TimeWindow::new(wall_clock_ns(), &spec.sanity),
        max_line_length: spec.sanity.max_line_length,
        batch_now: None,
    };
    spec.counters.receiving.store(true, Ordering::Release);
    while !spec.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let timeout = pipeline
            .batcher
            .next_expiry(now)
            .map_or(POLL_MAX, |d| d.min(POLL_MAX))
            .max(Duration::from_millis(1));
        pipeline.window = TimeWindow::new(wall_clock_ns(), &spec.sanity);
        pipeline.batch_now = None;
        if let Err(e) = receiver.poll(timeout, &mut |datagram: &[u8]| pipeline.datagram(datagram)) {
            tracing::error!(shard = spec.index, error = %e, "receive failed; retrying");
            std::thread::sleep(Duration::from_millis(10));
        }
        pipeline.seal_expired(Instant::now());
        pipeline.local.set_rx(&receiver.stats());
        pipeline.local.publish(&spec.counters);
    }
    // Stop receiving first, then hand everything still open to the sinks.
    drop(receiver);
    pipeline.finish(Instant::now() + spec.final_offer_timeout);
    pipeline.local.publish(&spec.counters);
}

/// The per-shard data path, from datagram to sink queue.
struct Pipeline<'a> {
    table: &'a RouteTable,
    scratch: Scratch,
    batcher: Batcher,
    local: LocalCounters,
    route_sinks: &'a [Vec<usize>],
    sinks: &'a [Arc<Sink>],
    window: TimeWindow,
    max_line_length: usize,
    /// Clock read once per poll, at the first datagram.
    batch_now: Option<Instant>,
}

impl Pipeline<'_> {
    #[inline]
    fn datagram(&mut self, datagram: &[u8]) {
        let now = *self.batch_now.get_or_insert_with(Instant::now);
        let mut lines = 0u64;
        for item in parse::lines(datagram) {
            lines += 1;
            let line = match item {
                Item::Line(line) => line,
                Item::Reject { error, .. } => {
                    self.local.parse_error(error);
                    continue;
                }
            };
            if line.raw.len() > self.max_line_length {
                self.local.dropped(LineDrop::TooLong, 1);
                continue;
            }
            if !self.window.accepts(line.timestamp) {
                self.local.dropped(LineDrop::TimeOutOfRange, 1);
                continue;
            }
            let m = self.table.lookup(&line, &mut self.scratch);
            if self.route_sinks[m.route as usize].is_empty() {
                self.local.dropped(LineDrop::NoSink, 1);
                continue;
            }
            self.local.routed(m.route as usize, m.rule);
            let (local, sinks, route_sinks) = (&mut self.local, self.sinks, self.route_sinks);
            self.batcher.append(m.route, line.raw, now, &mut |route, chunk| {
                dispatch(local, sinks, route_sinks, route, chunk)
            });
        }
        self.local.lines(lines);
    }

    fn seal_expired(&mut self, now: Instant) {
        let (local, sinks, route_sinks) = (&mut self.local, self.sinks, self.route_sinks);
        self.batcher.seal_expired(now, &mut |route, chunk| {
            dispatch(local, sinks, route_sinks, route, chunk)
        });
    }

    /// Shutdown: seal everything and offer it, waiting (bounded) for room.
    fn finish(&mut self, deadline: Instant) {
        let mut sealed: Vec<(RouteId, Chunk)> = Vec::new();
        self.batcher.seal_all(&mut |route, chunk| sealed.push((route, chunk)));
        for (route, chunk) in sealed {
            for &sink in &self.route_sinks[route as usize] {
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

/// Offer a sealed chunk to every sink of its route; a full queue drops it for that sink only.
#[inline]
fn dispatch(
    local: &mut LocalCounters,
    sinks: &[Arc<Sink>],
    route_sinks: &[Vec<usize>],
    route: RouteId,
    chunk: Chunk,
) {
    let lines = chunk.lines as u64;
    let subscribers = &route_sinks[route as usize];
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
