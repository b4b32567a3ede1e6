//! Sinks: one per `[[sink]]`. Shards offer sealed chunks to a sink's bounded
//! lock-free queue; the sink's writer thread coalesces them into POST bodies
//! and delivers them over HTTP/1.1 keep-alive with retries.
//!
//! Shape of one sink:
//!
//! ```text
//! shards ──offer()──► ArrayQueue<Chunk> ──► collector ──► request task 0 (own connection)
//!   (never block;      (queue_max_batches)   (coalesce     request task 1 …
//!    full = queue_full)                       into bodies)  (up to `connections`)
//! ```
//!
//! The collector and the request tasks run on one current-thread tokio runtime in
//! the thread `sink-<name>`. The collector hands a body only to an idle request
//! task; while all are busy (a slow or dead backend) it stops popping, so the
//! queue fills and the shards drop with `queue_full`: a sink never blocks a shard
//! or another sink.
//!
//! Architecture invariant: no per-line work here. Chunks carry their line count,
//! and bodies are lists of the chunks' refcounted `Bytes` (see `body.rs`).
pub mod body;
mod client;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_queue::ArrayQueue;
use tokio::sync::{mpsc, watch, Notify};

use crate::batch::Chunk;
use crate::config::SinkConfig;
use body::{BodyBuilder, Payload};
use client::{Requester, Shared};

/// How long `SinkWriter::shutdown` waits for the writer thread past the deadline
/// before leaving it behind.
const SHUTDOWN_SLACK: Duration = Duration::from_millis(500);

/// Counters of one sink. Written by the sink's own writer thread only; read at scrape time.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// HTTP requests attempted (first tries and retries).
    pub requests: AtomicU64,
    /// Attempts that failed (connection error, timeout, non-2xx).
    pub request_failures: AtomicU64,
    /// Attempts that were retries.
    pub retries: AtomicU64,
    /// Body bytes of successful requests (before gzip).
    pub bytes_delivered: AtomicU64,
    /// Lines in successful requests.
    pub lines_delivered: AtomicU64,
    /// Lines dropped because retries gave up (`sink_gave_up`).
    pub lines_gave_up: AtomicU64,
    /// Lines dropped because the backend answered a non-retryable 4xx (`sink_rejected`).
    pub lines_rejected: AtomicU64,
    /// Lines still undelivered when the shutdown deadline passed (`shutdown`).
    pub lines_shutdown: AtomicU64,
    /// Lines taken from the queue but not yet delivered or dropped (in bodies being built or sent).
    pub lines_in_flight: AtomicU64,
}

/// The shards' handle on a sink: cheap to share (`Arc<Sink>`).
pub struct Sink {
    pub name: String,
    pub stats: Arc<SinkStats>,
    queue: ArrayQueue<Chunk>,
    /// Bytes of the chunks in `queue` (one update per chunk, not per line).
    queued_bytes: AtomicUsize,
    /// The collector sleeps until this many bytes are queued: 1 while its
    /// body is empty (the first chunk starts the `batch_max_age` clock), else
    /// what the body still needs to be full. A chunk that does not bring the
    /// queue to it (or the queue to half its capacity) does not wake the
    /// collector: under load that is one cross-thread wake-up per body or
    /// two, not one per chunk.
    wake_at_bytes: AtomicUsize,
    /// Wakes the collector: one stored permit, so a push is never missed.
    wake: Notify,
}

impl Sink {
    /// Offer a chunk without blocking. `Err` gives it back when the queue is full;
    /// the caller counts it as `queue_full` for this sink.
    pub fn offer(&self, chunk: Chunk) -> Result<(), Chunk> {
        let bytes = queued_size(&chunk);
        self.queue.push(chunk)?;
        // Wake the collector when this push brings the queue to what it
        // waits for (`wake_at_bytes`). Exactly one push crosses that mark;
        // the collector re-reads `queued_bytes` after publishing the mark,
        // so between the two sides no crossing goes unseen (SeqCst).
        let before = self.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
        let wanted = self.wake_at_bytes.load(Ordering::SeqCst);
        // Also while the queue is at least half full by count: many small
        // chunks (sealed by `chunk.max_age` at low rates) must not fill it
        // while the collector waits for bytes, or offers would start
        // failing. (`>=`, not `==`: concurrent pushes may skip the mark.)
        if (before < wanted && before + bytes >= wanted) || self.queue.len() >= self.half_full() {
            self.wake.notify_one();
        }
        Ok(())
    }
    /// The chunk count at which the collector is woken whatever the bytes.
    fn half_full(&self) -> usize {
        (self.queue.capacity() / 2).max(1)
    }

    /// Chunks waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }
    /// Queue capacity in chunks.
    pub fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Empty the queue, returning the lines it held.
    fn drain_queue(&self) -> u64 {
        let mut lines = 0;
        while let Some(chunk) = self.pop() {
            lines += u64::from(chunk.lines);
        }
        lines
    }

    fn pop(&self) -> Option<Chunk> {
        let chunk = self.queue.pop()?;
        self.queued_bytes
            .fetch_sub(queued_size(&chunk), Ordering::SeqCst);
        Some(chunk)
    }
}

/// What a chunk adds to `queued_bytes`: its bytes, at least 1 so that even
/// an empty chunk counts as something queued.
fn queued_size(chunk: &Chunk) -> usize {
    chunk.data.len().max(1)
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("name", &self.name)
            .field("queue_len", &self.queue_len())
            .field("queue_capacity", &self.queue_capacity())
            .finish_non_exhaustive()
    }
}

/// The writer thread of a sink. Dropping it without `shutdown` stops the writer at
/// once (what is queued or in flight is counted as `lines_shutdown`) without joining it.
#[derive(Debug)]
pub struct SinkWriter {
    sink: Arc<Sink>,
    /// `Some(deadline)` once shutdown began. Dropping the sender stops the writer at once.
    stop: watch::Sender<Option<Instant>>,
    /// Receives one message when the writer thread is about to exit.
    done: std::sync::mpsc::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

/// What a sink did during shutdown.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShutdownReport {
    /// Lines delivered between the call to `shutdown` and its return.
    pub lines_delivered: u64,
    /// Lines still queued or in flight at the deadline (added to `lines_shutdown`).
    pub lines_undelivered: u64,
}

impl SinkWriter {
    /// Called after every shard has stopped and offered its last chunks: deliver
    /// everything queued or in flight until `deadline`, then give up, counting what
    /// is left as `lines_shutdown`, and join the thread.
    ///
    /// Returns by `deadline` plus a little slack even if the backend hangs.
    pub fn shutdown(self, deadline: Instant) -> ShutdownReport {
        let stats = &self.sink.stats;
        let delivered_before = stats.lines_delivered.load(Ordering::Relaxed);
        let shutdown_before = stats.lines_shutdown.load(Ordering::Relaxed);
        self.stop.send_replace(Some(deadline));
        self.sink.wake.notify_one();

        let wait = later(deadline, SHUTDOWN_SLACK).saturating_duration_since(Instant::now());
        match self.done.recv_timeout(wait) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if self.thread.join().is_err() {
                    tracing::error!(sink = %self.sink.name, "sink writer thread panicked");
                    settle_shutdown(&self.sink);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Should not happen: the writer stops itself at the deadline. Leave
                // it behind rather than hang the process's shutdown.
                tracing::error!(
                    sink = %self.sink.name,
                    "sink writer did not stop by its deadline; abandoning it"
                );
                settle_shutdown(&self.sink);
            }
        }
        ShutdownReport {
            lines_delivered: stats.lines_delivered.load(Ordering::Relaxed) - delivered_before,
            lines_undelivered: stats.lines_shutdown.load(Ordering::Relaxed) - shutdown_before,
        }
    }
}

/// Start a sink's writer thread.
pub fn start(cfg: &SinkConfig) -> anyhow::Result<(Arc<Sink>, SinkWriter)> {
    let name = &cfg.name;
    anyhow::ensure!(
        cfg.queue_max_batches > 0,
        "sink {name:?}: queue_max_batches must be at least 1"
    );
    anyhow::ensure!(
        cfg.connections > 0,
        "sink {name:?}: connections must be at least 1"
    );
    anyhow::ensure!(
        cfg.gzip <= 9,
        "sink {name:?}: gzip level {} is not in 0..=9",
        cfg.gzip
    );
    let mut endpoint = client::parse_url(&cfg.url).with_context(|| format!("sink {name:?}"))?;
    if let Some(auth) = client::auth_from_env(name)? {
        endpoint.headers.insert(http::header::AUTHORIZATION, auth);
    }

    let sink = Arc::new(Sink {
        name: name.clone(),
        stats: Arc::new(SinkStats::default()),
        queue: ArrayQueue::new(cfg.queue_max_batches),
        queued_bytes: AtomicUsize::new(0),
        wake_at_bytes: AtomicUsize::new(1),
        wake: Notify::new(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("sink {name:?}: tokio runtime"))?;
    let (stop_tx, stop_rx) = watch::channel(None);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writer = Writer {
        sink: Arc::clone(&sink),
        shared: Arc::new(Shared::new(cfg, endpoint, Arc::clone(&sink.stats))),
        batch_max_size: cfg.batch_max_size,
        batch_max_age: cfg.batch_max_age,
        connections: cfg.connections,
        gzip: cfg.gzip,
    };
    let (nice, sink_name) = (cfg.nice, name.clone());
    let thread = std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || {
            set_thread_nice(&sink_name, nice);
            writer.run(runtime, stop_rx);
            let _ = done_tx.send(());
        })
        .with_context(|| format!("sink {name:?}: spawn writer thread"))?;
    let handle = SinkWriter {
        sink: Arc::clone(&sink),
        stop: stop_tx,
        done: done_rx,
        thread,
    };
    Ok((sink, handle))
}

/// Give the calling thread niceness `nice` (threads it starts inherit it).
/// A failure (a negative value without CAP_SYS_NICE) is logged, not fatal.
fn set_thread_nice(sink: &str, nice: i32) {
    // SAFETY: gettid and setpriority take plain integers and touch no memory
    // of ours; on Linux, PRIO_PROCESS with a thread id sets that thread only.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if rc != 0 {
        tracing::warn!(
            sink,
            nice,
            error = %std::io::Error::last_os_error(),
            "could not set the writer thread's niceness; it runs at the default"
        );
    }
}

/// Move whatever is still queued or in flight into `lines_shutdown`.
fn settle_shutdown(sink: &Sink) -> u64 {
    let stats = &sink.stats;
    let lines = stats.lines_in_flight.swap(0, Ordering::Relaxed) + sink.drain_queue();
    stats.lines_shutdown.fetch_add(lines, Ordering::Relaxed);
    lines
}

/// The writer thread's state.
struct Writer {
    sink: Arc<Sink>,
    shared: Arc<Shared>,
    batch_max_size: usize,
    batch_max_age: Duration,
    connections: usize,
    gzip: u32,
}

impl Writer {
    fn run(self, runtime: tokio::runtime::Runtime, stop: watch::Receiver<Option<Instant>>) {
        let sink = Arc::clone(&self.sink);
        let finished = runtime.block_on(async {
            tokio::select! {
                () = self.work(stop.clone()) => true,
                () = deadline(stop) => false,
            }
        });
        // Cancels the request tasks still running at the deadline, and their
        // connections, without waiting for them.
        runtime.shutdown_background();
        let left = settle_shutdown(&sink);
        if !finished || left > 0 {
            tracing::warn!(
                sink = %sink.name,
                lines = left,
                "shutdown deadline passed with lines undelivered"
            );
        }
    }

    /// Collect and deliver until shutdown has drained the queue and every body is settled.
    async fn work(&self, mut stop: watch::Receiver<Option<Instant>>) {
        let mut pool = Pool::start(&self.shared, self.connections);
        let mut collector = Collector {
            stopping: false,
            carry: None,
        };
        loop {
            let body = self.next_body(&mut collector, &mut stop).await;
            if !body.is_empty() {
                pool.dispatch(body.seal(self.gzip)).await;
            } else if collector.stopping && collector.carry.is_none() {
                break;
            }
        }
        pool.finish().await;
    }

    /// Fill one body: until it is full, `batch_max_age` has passed since its first
    /// chunk, or (when stopping) the queue is empty. Empty only when stopping.
    async fn next_body(
        &self,
        collector: &mut Collector,
        stop: &mut watch::Receiver<Option<Instant>>,
    ) -> BodyBuilder {
        let stats = &self.sink.stats;
        let mut body = BodyBuilder::default();
        // `batch_max_age` ran out: take what is queued (chunks that did not
        // wake the collector) and send.
        let mut aged = false;
        loop {
            let chunk = match collector.carry.take() {
                Some(chunk) => chunk,
                None => match self.sink.pop() {
                    Some(chunk) => {
                        stats
                            .lines_in_flight
                            .fetch_add(u64::from(chunk.lines), Ordering::Relaxed);
                        chunk
                    }
                    None if collector.stopping || aged => return body,
                    None => {
                        // Sleep until a chunk starts the body, or until the
                        // queue holds what fills it (or its age runs out).
                        let wanted = if body.is_empty() {
                            1
                        } else {
                            self.batch_max_size.saturating_sub(body.len()).max(1)
                        };
                        self.sink.wake_at_bytes.store(wanted, Ordering::SeqCst);
                        if self.sink.queued_bytes.load(Ordering::SeqCst) >= wanted
                            || self.sink.queue.len() >= self.sink.half_full()
                        {
                            continue;
                        }
                        let age_deadline = body.first_at().map(|t| later(t, self.batch_max_age));
                        tokio::select! {
                            () = self.sink.wake.notified() => {}
                            () = sleep_until(age_deadline) => aged = true,
                            _ = stop.changed(), if !collector.stopping => collector.stopping = true,
                        }
                        continue;
                    }
                },
            };
            if chunk.data.is_empty() {
                // Nothing to send; a chunk without bytes has no lines either.
                debug_assert_eq!(chunk.lines, 0);
                stats
                    .lines_in_flight
                    .fetch_sub(u64::from(chunk.lines), Ordering::Relaxed);
                continue;
            }
            if !body.fits(&chunk, self.batch_max_size) {
                collector.carry = Some(chunk);
                return body;
            }
            body.push(chunk);
            if body.is_full(self.batch_max_size) {
                return body;
            }
            // Past its age: still take what is already queued, then send.
            aged = aged
                || body
                    .first_at()
                    .is_some_and(|t| t.elapsed() >= self.batch_max_age);
        }
    }
}

/// The collector's state between bodies.
struct Collector {
    /// Shutdown began: drain the queue without waiting for `batch_max_age`.
    stopping: bool,
    /// A chunk popped that did not fit the previous body: the next one starts with it.
    carry: Option<Chunk>,
}

/// `at + delay`, saturating at a year from `at` (durations in the config can be huge).
fn later(at: Instant, delay: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    at.checked_add(delay.min(YEAR)).unwrap_or(at)
}

/// Sleep until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Completes at the shutdown deadline (at once if the `SinkWriter` was dropped).
async fn deadline(mut stop: watch::Receiver<Option<Instant>>) {
    let at = loop {
        if let Some(at) = *stop.borrow_and_update() {
            break at;
        }
        if stop.changed().await.is_err() {
            break Instant::now();
        }
    };
    tokio::time::sleep_until(at.into()).await;
}

/// The request tasks. Each owns one keep-alive connection and takes one body at a time.
struct Pool {
    /// Ids of request tasks waiting for a body.
    idle: mpsc::Receiver<usize>,
    inboxes: Vec<mpsc::Sender<Payload>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Pool {
    fn start(shared: &Arc<Shared>, connections: usize) -> Pool {
        let (idle_tx, idle) = mpsc::channel(connections);
        let mut inboxes = Vec::with_capacity(connections);
        let mut tasks = Vec::with_capacity(connections);
        for id in 0..connections {
            let (inbox_tx, mut inbox) = mpsc::channel::<Payload>(1);
            let idle_tx = idle_tx.clone();
            let mut requester = Requester::new(Arc::clone(shared));
            tasks.push(tokio::spawn(async move {
                loop {
                    // Capacity is `connections` and each task holds at most one
                    // token in the channel, so this never waits.
                    if idle_tx.send(id).await.is_err() {
                        return;
                    }
                    let Some(payload) = inbox.recv().await else {
                        return;
                    };
                    requester.deliver(payload).await;
                }
            }));
            inboxes.push(inbox_tx);
        }
        Pool {
            idle,
            inboxes,
            tasks,
            shared: Arc::clone(shared),
        }
    }

    /// Hand `payload` to an idle request task, waiting for one to become idle.
    async fn dispatch(&mut self, payload: Payload) {
        let sent = match self.idle.recv().await {
            Some(id) => self.inboxes[id].send(payload).await.map_err(|e| e.0),
            None => Err(payload),
        };
        if let Err(payload) = sent {
            // Only if a request task died, which would be a bug.
            let stats = &self.shared.stats;
            stats
                .lines_gave_up
                .fetch_add(payload.lines, Ordering::Relaxed);
            stats
                .lines_in_flight
                .fetch_sub(payload.lines, Ordering::Relaxed);
            tracing::error!(sink = %self.shared.name, "no request task left; body dropped");
        }
    }

    /// Let every request task finish its body, then end them.
    async fn finish(self) {
        drop(self.inboxes);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
