//! Sinks: one per `[[sink]]`. Shards offer sealed chunks to a sink's bounded
//! lock-free queue; the sink's connection threads coalesce them into POST
//! bodies and deliver them over HTTP/1.1 keep-alive with retries.
//!
//! Shape of one sink:
//!
//! ```text
//! shards ──offer()──► ArrayQueue<Chunk> ──► connection thread 0 (own connection)
//!   (never block;      (queue_max_size bytes, connection thread 1 …
//!    full = queue_full) queue_max_batches)   (up to `connections`, named `sink-<name>`)
//! ```
//!
//! The connection threads take turns as the collector (leader/follower): the
//! one holding the collector lock fills a body from the queue, then lets go
//! of the lock and sends the body itself, on its own blocking connection,
//! while an idle sibling collects the next. No hand-off between threads and
//! no async runtime: a body costs its `writev` and `read`, not scheduler
//! work. While every thread is busy sending (a slow or dead backend) nobody
//! pops, so the queue fills and the shards drop with `queue_full`: a sink
//! never blocks a shard or another sink.
//!
//! Architecture invariant: no per-line work here. Chunks carry their line count,
//! and bodies are lists of the chunks' refcounted `Bytes` (see `body.rs`).
pub mod body;
mod client;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_queue::ArrayQueue;

use crate::batch::Chunk;
use crate::config::SinkConfig;
use body::BodyBuilder;
use client::{Requester, Shared};

/// How long `SinkWriter::shutdown` waits for the connection threads past the
/// deadline (after aborting them) before leaving them behind.
const SHUTDOWN_SLACK: Duration = Duration::from_millis(500);

/// Counters of one sink. Written by the sink's own connection threads only; read at scrape time.
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
    /// Bytes of the chunks in `queue` (one update per chunk, not per line),
    /// reserved before a push and released after a pop, so it is never
    /// below what the queue holds.
    queued_bytes: AtomicUsize,
    /// `queue_max_size`: the bound on `queued_bytes`.
    max_queued_bytes: usize,
    /// The collector sleeps until this many bytes are queued: 1 while its
    /// body is empty (the first chunk starts the `batch_max_age` clock), else
    /// what the body still needs to be full. A chunk that does not bring the
    /// queue to it (or the queue to half its capacity) does not wake the
    /// collector: under load that is one cross-thread wake-up per body or
    /// two, not one per chunk.
    wake_at_bytes: AtomicUsize,
    /// Wakes the collector (one stored permit, so a push is never missed),
    /// and tells the connection threads to drain or to stop.
    signal: Arc<Signal>,
}

impl Sink {
    /// Offer a chunk without blocking. `Err` gives it back when the queue is full;
    /// the caller counts it as `queue_full` for this sink.
    pub fn offer(&self, chunk: Chunk) -> Result<(), Chunk> {
        let bytes = queued_size(&chunk);
        // Reserve the bytes first: racing shards then cannot take the queue
        // past `queue_max_size` together. An empty queue takes any chunk,
        // however large, so that no chunk is undeliverable by size alone.
        let before = self.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
        let refused = if before > 0 && before + bytes > self.max_queued_bytes {
            Some(chunk)
        } else {
            self.queue.push(chunk).err()
        };
        if let Some(chunk) = refused {
            self.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
            // A full queue must have its collector awake. (A reservation
            // taken back may also have been the one push that crossed the
            // collector's mark, below: this wake stands in for it.)
            self.signal.wake();
            return Err(chunk);
        }
        // Wake the collector when this push brings the queue to what it
        // waits for (`wake_at_bytes`). Exactly one push crosses that mark;
        // the collector re-reads `queued_bytes` after publishing the mark,
        // so between the two sides no crossing goes unseen (SeqCst). (The
        // collector may see a reservation a moment before its chunk is in
        // the queue; it then looks again.)
        let wanted = self.wake_at_bytes.load(Ordering::SeqCst);
        // Also while the queue is at least half full by count: many small
        // chunks (sealed by `chunk.max_age` at low rates) must not fill it
        // while the collector waits for bytes, or offers would start
        // failing. (`>=`, not `==`: concurrent pushes may skip the mark.)
        if (before < wanted && before + bytes >= wanted) || self.queue.len() >= self.half_full() {
            self.signal.wake();
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
    /// Bytes of the chunks waiting in the queue (a pushing shard's
    /// reservation included).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
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

/// Wake-ups and stop requests for a sink's connection threads: one mutex, so
/// no request is missed between a check and a wait. A shard takes it only
/// when its offer crosses the collector's mark (once or twice per body).
pub(crate) struct Signal {
    state: Mutex<SignalState>,
    /// The collector waits here for a permit.
    collector: Condvar,
    /// Threads sleeping before a retry wait here (woken only by an abort).
    sleepers: Condvar,
}

#[derive(Default)]
struct SignalState {
    /// A stored wake-up for the collector.
    permit: bool,
    /// Shutdown began: drain the queue without waiting for `batch_max_age`.
    stopping: bool,
    /// Stop now: the deadline passed, or the `SinkWriter` was dropped.
    aborted: bool,
    /// `SinkWriter::shutdown` gave up waiting for the threads and counted
    /// everything left itself: the threads must not count it again.
    abandoned: bool,
}

/// What ended a collector's wait.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Woken,
    Aged,
    Stopping,
    Aborted,
}

impl Signal {
    fn new() -> Signal {
        Signal {
            state: Mutex::new(SignalState::default()),
            collector: Condvar::new(),
            sleepers: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give the collector a permit (it may be busy; then its next wait returns at once).
    fn wake(&self) {
        self.lock().permit = true;
        self.collector.notify_one();
    }

    fn stop(&self) {
        self.lock().stopping = true;
        self.collector.notify_all();
    }

    fn abort(&self) {
        let mut state = self.lock();
        state.aborted = true;
        state.stopping = true;
        drop(state);
        self.collector.notify_all();
        self.sleepers.notify_all();
    }

    pub(crate) fn aborted(&self) -> bool {
        self.lock().aborted
    }

    /// `(aborted, stopping)`, under one lock.
    fn flags(&self) -> (bool, bool) {
        let state = self.lock();
        (state.aborted, state.stopping)
    }

    /// Count what an aborted thread holds, unless the threads were abandoned
    /// (then `abandon` has counted it already). Under the lock, so the two
    /// never both count the same lines.
    pub(crate) fn account_abort(&self, account: impl FnOnce()) {
        let state = self.lock();
        if !state.abandoned {
            account();
        }
    }

    /// Take over the threads' accounting (they are past their deadline).
    fn abandon(&self, settle: impl FnOnce()) {
        let mut state = self.lock();
        state.abandoned = true;
        settle();
    }

    /// Wait for a permit, until `until` (`None`: no age limit), or until
    /// shutdown begins (reported once: `seen_stopping` says it was).
    fn wait(&self, until: Option<Instant>, seen_stopping: bool) -> Event {
        let mut state = self.lock();
        loop {
            if state.aborted {
                return Event::Aborted;
            }
            if state.stopping && !seen_stopping {
                return Event::Stopping;
            }
            if std::mem::take(&mut state.permit) {
                return Event::Woken;
            }
            state = match until {
                None => self
                    .collector
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Event::Aged;
                    }
                    self.collector
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Sleep for `delay`, or until an abort.
    pub(crate) fn sleep(&self, delay: Duration) {
        let until = later(Instant::now(), delay);
        let mut state = self.lock();
        while !state.aborted {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .sleepers
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The connection threads of a sink. Dropping it without `shutdown` stops them at
/// once (what is queued or in flight is counted as `lines_shutdown`) without joining them.
#[derive(Debug)]
pub struct SinkWriter {
    sink: Arc<Sink>,
    writer: Arc<Writer>,
    /// Disconnected once every connection thread has exited (each holds a sender).
    done: std::sync::mpsc::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
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
    /// is left as `lines_shutdown`, and join the threads.
    ///
    /// Returns by `deadline` plus a little slack even if the backend hangs.
    pub fn shutdown(mut self, deadline: Instant) -> ShutdownReport {
        let stats = Arc::clone(&self.sink.stats);
        let delivered_before = stats.lines_delivered.load(Ordering::Relaxed);
        let shutdown_before = stats.lines_shutdown.load(Ordering::Relaxed);
        self.sink.signal.stop();

        let mut finished = self.wait_until(deadline);
        if !finished {
            // The deadline passed: end blocked requests and sleeps; each
            // thread counts what it holds as `lines_shutdown`.
            self.writer.abort();
            finished = self.wait_until(later(Instant::now(), SHUTDOWN_SLACK));
        }
        if finished {
            for thread in self.threads.drain(..) {
                if thread.join().is_err() {
                    tracing::error!(sink = %self.sink.name, "sink connection thread panicked");
                    self.sink.signal.abandon(|| {
                        settle_shutdown(&self.sink);
                    });
                }
            }
        } else {
            // Should not happen: an aborted thread returns from any call at once.
            // Leave it behind rather than hang the process's shutdown.
            tracing::error!(
                sink = %self.sink.name,
                "sink threads did not stop by their deadline; abandoning them"
            );
            self.threads.clear();
            self.sink.signal.abandon(|| {
                settle_shutdown(&self.sink);
            });
        }
        ShutdownReport {
            lines_delivered: stats.lines_delivered.load(Ordering::Relaxed) - delivered_before,
            lines_undelivered: stats.lines_shutdown.load(Ordering::Relaxed) - shutdown_before,
        }
    }

    /// Whether every connection thread exited by `until`.
    fn wait_until(&self, until: Instant) -> bool {
        let wait = until.saturating_duration_since(Instant::now());
        matches!(
            self.done.recv_timeout(wait),
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        )
    }
}

impl Drop for SinkWriter {
    fn drop(&mut self) {
        // After `shutdown` the threads are gone and this changes nothing.
        if !self.threads.is_empty() {
            self.writer.abort();
        }
    }
}

/// What a connection thread makes of `data` as a backend's answer to one
/// request, handed over `piece` bytes at a time, keeping at most `body_max`
/// bytes of the body: `(status, kept body, keep-alive)`, or the error the
/// writer would log. For the fuzz target and property tests.
#[doc(hidden)]
pub fn parse_answer(
    data: &[u8],
    piece: usize,
    body_max: usize,
) -> Result<(u16, Vec<u8>, bool), String> {
    let mut source = wire::Pieces { data, piece };
    let mut buf = Vec::new();
    // The pieces never wait, so the deadline never passes.
    let deadline = later(Instant::now(), Duration::from_secs(3600));
    wire::read_response(&mut source, &mut buf, deadline, body_max)
        .map(|r| (r.status, r.body, r.keep_alive))
        .map_err(|e| e.to_string())
}

/// Start a sink's connection threads.
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

    let signal = Arc::new(Signal::new());
    let sink = Arc::new(Sink {
        name: name.clone(),
        stats: Arc::new(SinkStats::default()),
        queue: ArrayQueue::new(cfg.queue_max_batches),
        max_queued_bytes: cfg.queue_max_size,
        queued_bytes: AtomicUsize::new(0),
        wake_at_bytes: AtomicUsize::new(1),
        signal: Arc::clone(&signal),
    });
    let shared = Arc::new(Shared::new(cfg, endpoint, Arc::clone(&sink.stats), signal));
    let writer = Arc::new(Writer {
        sink: Arc::clone(&sink),
        shared,
        batch_max_size: cfg.batch_max_size,
        batch_max_age: cfg.batch_max_age,
        gzip: cfg.gzip,
        collector: Mutex::new(Collector::default()),
        threads_left: AtomicUsize::new(cfg.connections),
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(cfg.connections);
    for id in 0..cfg.connections {
        let (writer_ref, done, nice, sink_name) =
            (Arc::clone(&writer), done_tx.clone(), cfg.nice, name.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                set_thread_nice(&sink_name, nice);
                writer_ref.run(id);
                drop(done);
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                // Stop the ones already running; their `done` senders go with them.
                writer.abort();
                return Err(e).with_context(|| format!("sink {name:?}: spawn connection thread"));
            }
        }
    }
    let handle = SinkWriter {
        sink: Arc::clone(&sink),
        writer,
        done: done_rx,
        threads,
    };
    Ok((sink, handle))
}

/// Give the calling connection thread niceness `nice`.
/// A failure (a negative value without CAP_SYS_NICE) is logged, not fatal.
fn set_thread_nice(sink: &str, nice: i32) {
    if let Err(error) = crate::sched::set_current_nice(nice) {
        tracing::warn!(
            sink,
            nice,
            %error,
            "could not set the connection thread's niceness; it runs at the default"
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

/// What a sink's connection threads share.
struct Writer {
    sink: Arc<Sink>,
    shared: Arc<Shared>,
    batch_max_size: usize,
    batch_max_age: Duration,
    gzip: u32,
    /// The collector role: whoever holds this lock fills the next body.
    collector: Mutex<Collector>,
    /// Connection threads still running; the last one out empties the queue.
    threads_left: AtomicUsize,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("sink", &self.sink.name)
            .finish_non_exhaustive()
    }
}

/// What the next body came to.
enum Next {
    Body(BodyBuilder),
    /// Shutdown drained the queue: nothing more to send.
    Drained,
    /// Aborted; what the collector held is already counted as `lines_shutdown`.
    Aborted,
}

impl Writer {
    fn abort(&self) {
        self.sink.signal.abort();
        self.shared.abort_connections();
    }

    /// A connection thread: collect a body (when it is this thread's turn),
    /// send it, repeat; until shutdown has drained the queue, or an abort.
    fn run(&self, id: usize) {
        let mut requester = Requester::new(Arc::clone(&self.shared), id);
        loop {
            let next = {
                let mut collector = self.collector.lock().unwrap_or_else(|e| e.into_inner());
                self.next_body(&mut collector)
            };
            match next {
                // Sealed (and gzipped) after letting go of the collector role,
                // so a sibling can collect meanwhile.
                Next::Body(body) => requester.deliver(body.seal(self.gzip)),
                Next::Drained | Next::Aborted => break,
            }
        }
        if self.threads_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last thread out: after an abort the queue may still hold chunks.
            let mut left = 0;
            self.sink
                .signal
                .account_abort(|| left = settle_shutdown(&self.sink));
            if left > 0 {
                tracing::warn!(
                    sink = %self.sink.name,
                    lines = left,
                    "shutdown deadline passed with lines undelivered"
                );
            }
        }
    }

    /// Fill one body: until it is full, `batch_max_age` has passed since its first
    /// chunk, or (when stopping) the queue is empty.
    fn next_body(&self, collector: &mut Collector) -> Next {
        let stats = &self.sink.stats;
        let signal = &self.sink.signal;
        let mut body = BodyBuilder::default();
        // `batch_max_age` ran out: take what is queued (chunks that did not
        // wake the collector) and send.
        let mut aged = false;
        loop {
            let (aborted, stopping) = signal.flags();
            if aborted {
                // Count what this thread holds; the queue is the last thread's.
                let mut lines = body.lines();
                if let Some(carry) = collector.carry.take() {
                    lines += u64::from(carry.lines);
                }
                signal.account_abort(|| {
                    stats.lines_shutdown.fetch_add(lines, Ordering::Relaxed);
                    stats.lines_in_flight.fetch_sub(lines, Ordering::Relaxed);
                });
                return Next::Aborted;
            }
            collector.stopping |= stopping;
            let chunk = match collector.carry.take() {
                Some(chunk) => chunk,
                None => match self.sink.pop() {
                    Some(chunk) => {
                        stats
                            .lines_in_flight
                            .fetch_add(u64::from(chunk.lines), Ordering::Relaxed);
                        chunk
                    }
                    None if (collector.stopping || aged) && !body.is_empty() => {
                        return Next::Body(body)
                    }
                    None if collector.stopping => return Next::Drained,
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
                        match signal.wait(age_deadline, collector.stopping) {
                            Event::Woken => {}
                            Event::Aged => aged = true,
                            Event::Stopping => collector.stopping = true,
                            Event::Aborted => {}
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
                return Next::Body(body);
            }
            body.push(chunk);
            if body.is_full(self.batch_max_size) {
                return Next::Body(body);
            }
            // Past its age: still take what is already queued, then send.
            aged = aged
                || body
                    .first_at()
                    .is_some_and(|t| t.elapsed() >= self.batch_max_age);
        }
    }
}

/// The collector's state between bodies (kept under the collector lock).
#[derive(Default)]
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
