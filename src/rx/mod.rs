//! Receive: the ONLY module that touches io_uring or recvmmsg.
//!
//! A [`Receiver`] belongs to one shard. It owns that shard's `SO_REUSEPORT`
//! sockets (one per listen address), its receive buffers and, on the io_uring
//! path, its ring. `poll` hands each complete datagram to a callback as a
//! borrowed slice; the slice is only valid during the callback.
//!
//! (stub: being implemented)
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::IoUringMode;

/// Which receive path is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxPath {
    IoUring,
    Recvmmsg,
}

impl RxPath {
    pub fn as_str(self) -> &'static str {
        match self {
            RxPath::IoUring => "io_uring",
            RxPath::Recvmmsg => "recvmmsg",
        }
    }
}

/// What a receiver needs to open its sockets.
#[derive(Clone, Debug)]
pub struct RxConfig {
    /// Concrete addresses (port 0 only for the first shard; later shards get
    /// the first shard's resolved addresses so they share the port).
    pub addrs: Vec<SocketAddr>,
    /// Requested SO_RCVBUF.
    pub rcvbuf: usize,
    /// Largest datagram accepted; buffers are this size; bigger ones are truncated and dropped.
    pub max_datagram_size: usize,
    /// Number of receive buffers (io_uring provided buffers, rounded to a power of two; recvmmsg batch).
    pub buffers: usize,
    pub mode: IoUringMode,
}

/// Counters of one receiver. Only its own shard writes them (plain fields);
/// the shard copies them to its published counters once per poll.
#[derive(Clone, Copy, Debug, Default)]
pub struct RxStats {
    /// Complete datagrams handed to the callback.
    pub datagrams: u64,
    /// Payload bytes handed to the callback.
    pub bytes: u64,
    /// Datagrams dropped because they did not fit a buffer (MSG_TRUNC).
    pub truncated: u64,
    /// Completions that failed with ENOBUFS (provided-buffer ring ran dry).
    pub enobufs: u64,
    /// Sum over sockets of the kernel's SO_RXQ_OVFL drop counter (latest value seen).
    pub kernel_drops: u64,
    /// Multishot receives re-armed after a completion came without the MORE flag.
    pub rearms: u64,
}

/// Errors of the receive layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating, configuring or binding a socket failed.
    #[error("cannot open UDP socket on {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// `io_uring = "on"` but io_uring could not be set up.
    #[error("io_uring unavailable: {0}")]
    IoUringUnavailable(std::io::Error),
    /// A receive syscall failed in a way that is not a transient condition.
    #[error("receive failed: {0}")]
    Io(#[from] std::io::Error),
}

/// One shard's receive side.
pub struct Receiver {}

impl Receiver {
    /// Open sockets (SO_REUSEPORT, SO_RCVBUF, SO_RXQ_OVFL, non-blocking as needed) and
    /// the io_uring ring or recvmmsg state, per `cfg.mode`.
    pub fn open(_cfg: &RxConfig) -> Result<Receiver, Error> {
        unimplemented!()
    }
    /// The path actually in use.
    pub fn path(&self) -> RxPath {
        unimplemented!()
    }
    /// The bound addresses (ports resolved), in `cfg.addrs` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        unimplemented!()
    }
    /// Effective SO_RCVBUF as reported by the kernel (per socket; same for all).
    pub fn effective_rcvbuf(&self) -> usize {
        unimplemented!()
    }
    /// Wait up to `timeout` for datagrams, then deliver every datagram that is
    /// ready (a batch) to `on_datagram`. Returns the number delivered. Returns
    /// `Ok(0)` on timeout. Never blocks longer than `timeout`.
    pub fn poll<F: FnMut(&[u8])>(
        &mut self,
        _timeout: Duration,
        _on_datagram: &mut F,
    ) -> Result<usize, Error> {
        unimplemented!()
    }
    /// Cumulative counters.
    pub fn stats(&self) -> RxStats {
        unimplemented!()
    }
}
