//! Sinks: one per `[[sink]]`. Shards offer sealed chunks to a sink's bounded
//! lock-free queue; the sink's writer thread coalesces them into POST bodies
//! and delivers them over HTTP/1.1 keep-alive with retries.
//!
//! (stub: being implemented)
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::batch::Chunk;
use crate::config::SinkConfig;

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
}

impl Sink {
    /// Offer a chunk without blocking. `Err` gives it back when the queue is full;
    /// the caller counts it as `queue_full` for this sink.
    pub fn offer(&self, _chunk: Chunk) -> Result<(), Chunk> {
        unimplemented!()
    }
    /// Chunks waiting in the queue.
    pub fn queue_len(&self) -> usize {
        unimplemented!()
    }
    /// Queue capacity in chunks.
    pub fn queue_capacity(&self) -> usize {
        unimplemented!()
    }
}

/// The writer thread of a sink.
pub struct SinkWriter {}

/// What a sink did during shutdown.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShutdownReport {
    pub lines_delivered: u64,
    pub lines_undelivered: u64,
}

impl SinkWriter {
    /// Called after every shard has stopped and offered its last chunks: deliver
    /// everything queued or in flight until `deadline`, then give up, counting what
    /// is left as `lines_shutdown`, and join the thread.
    pub fn shutdown(self, _deadline: Instant) -> ShutdownReport {
        unimplemented!()
    }
}

/// Start a sink's writer thread.
pub fn start(_cfg: &SinkConfig) -> anyhow::Result<(Arc<Sink>, SinkWriter)> {
    unimplemented!()
}
