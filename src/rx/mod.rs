//! Receive: the ONLY module that touches io_uring or recvmmsg.
//!
//! A [`Receiver`] belongs to one shard. It owns that shard's `SO_REUSEPORT`
//! sockets (one per listen address), its receive buffers and, on the io_uring
//! path, its ring. `poll` hands each complete datagram to a callback as a
//! borrowed slice; the slice is only valid during the callback.
//!
//! Files: `socket.rs` (socket options, the kernel's drop counter), `uring.rs`
//! (io_uring multishot `RecvMsgMulti`), `buffers.rs` (the provided-buffer
//! ring: the one place that tracks kernel-owned vs lent buffers), `mmsg.rs`
//! (the `recvmmsg` fallback). Each unsafe-bearing file opens with its safety
//! model.
//!
//! Test hook: with the environment variable `SLUICE_FORCE_IO_URING_FAILURE=1`
//! [`Receiver::open`] behaves as if io_uring setup failed with EPERM (as under
//! `kernel.io_uring_disabled` or a seccomp filter): `auto` falls back to
//! recvmmsg and `on` fails with [`Error::IoUringUnavailable`].
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::IoUringMode;

pub use steal::Siblings;

mod buffers;
mod coalesce;
mod mmsg;
mod socket;
mod steal;
#[cfg(test)]
mod tests;
mod uring;

/// Environment variable of the io_uring failure test hook (see module docs).
pub const FORCE_IO_URING_FAILURE_ENV: &str = "SLUICE_FORCE_IO_URING_FAILURE";

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
    /// After a wake-up that found datagrams, let the next ones gather this
    /// long before waking again (`listen.wake_coalesce`); zero = never wait.
    pub wake_coalesce: Duration,
    /// `listen.balance = "datagram"`: spread each datagram at random over
    /// this many sockets of each address (one per shard); `None` leaves the
    /// kernel's flow hash.
    pub spread: Option<usize>,
    /// `listen.steal`: the receive group this receiver belongs to and its
    /// index in it; while its own sockets are caught up it takes datagrams
    /// from siblings whose sockets are behind (`steal.rs`).
    pub steal: Option<(std::sync::Arc<Siblings>, usize)>,
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
    /// Sum over sockets of the kernel's drop counter (`SO_MEMINFO`, read once per poll).
    pub kernel_drops: u64,
    /// Multishot receives re-armed after a completion came without the MORE flag.
    pub rearms: u64,
    /// Bytes waiting in the sockets' receive queues when the receiver last
    /// woke (`SO_MEMINFO`'s rmem_alloc, summed over its sockets; kernel
    /// accounting, ≈2.3 KB for a 1400-byte datagram): how far behind it was.
    pub backlog_bytes: u64,
    /// The highest backlog of any one socket (not summed, unlike
    /// `backlog_bytes`) since the receiver opened. Drops begin where it
    /// reaches twice `read_buffer_size`.
    pub backlog_max_bytes: u64,
    /// Polls that delivered at least one datagram: `datagrams / batches` is
    /// the mean batch a wake-up handled (`wake_coalesce` raises it).
    pub batches: u64,
    /// Datagrams taken from siblings' sockets that were behind (also
    /// counted in `datagrams`, `bytes`).
    pub stolen: u64,
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
pub struct Receiver {
    // Field order matters: `path` (and with it any io_uring ring and its
    // in-flight receives) is torn down before the sockets are closed.
    path: Path,
    sockets: socket::Sockets,
    io_uring_error: Option<std::io::Error>,
    helper: Option<steal::Helper>,
}

// One per shard, built once and never moved on the hot path: size is irrelevant.
#[allow(clippy::large_enum_variant)]
enum Path {
    IoUring(uring::UringRx),
    Recvmmsg(mmsg::MmsgRx),
}

impl Receiver {
    /// Open sockets (SO_REUSEPORT, SO_RCVBUF, non-blocking as needed) and
    /// the io_uring ring or recvmmsg state, per `cfg.mode`.
    pub fn open(cfg: &RxConfig) -> Result<Receiver, Error> {
        let force = force_flag(std::env::var_os(FORCE_IO_URING_FAILURE_ENV).as_deref());
        Receiver::open_inner(cfg, force)
    }

    /// `open`, with the io_uring failure hook given explicitly (tests use
    /// this: environment variables are process-global).
    fn open_inner(cfg: &RxConfig, force_uring_failure: bool) -> Result<Receiver, Error> {
        if cfg.max_datagram_size == 0 || cfg.max_datagram_size > u32::MAX as usize / 2 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "max_datagram_size out of range",
            )));
        }
        let sockets = socket::open_all(&cfg.addrs, cfg.rcvbuf, cfg.spread)?;
        let fds = sockets.raw_fds();
        let mut io_uring_error = None;
        let path = match cfg.mode {
            IoUringMode::Off => Path::Recvmmsg(mmsg::MmsgRx::new(fds, cfg)),
            IoUringMode::On => match uring::UringRx::new(fds, cfg, force_uring_failure) {
                Ok(rx) => Path::IoUring(rx),
                Err(e) => return Err(Error::IoUringUnavailable(e)),
            },
            IoUringMode::Auto => match uring::UringRx::new(fds.clone(), cfg, force_uring_failure) {
                Ok(rx) => Path::IoUring(rx),
                Err(e) => {
                    io_uring_error = Some(e);
                    Path::Recvmmsg(mmsg::MmsgRx::new(fds, cfg))
                }
            },
        };
        let helper = match &cfg.steal {
            Some((siblings, me)) if siblings.len() > 1 => {
                let dups = sockets
                    .sockets
                    .iter()
                    .map(socket2::Socket::try_clone)
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(Error::Io)?;
                siblings.register(*me, dups);
                Some(steal::Helper::new(
                    siblings.clone(),
                    *me,
                    steal_threshold(sockets.effective_rcvbuf),
                    mmsg::Slots::new(cfg.buffers, cfg.max_datagram_size),
                ))
            }
            _ => None,
        };
        Ok(Receiver {
            path,
            sockets,
            io_uring_error,
            helper,
        })
    }

    /// The path actually in use.
    pub fn path(&self) -> RxPath {
        match self.path {
            Path::IoUring(_) => RxPath::IoUring,
            Path::Recvmmsg(_) => RxPath::Recvmmsg,
        }
    }

    /// Why io_uring is not in use, when `auto` fell back to recvmmsg.
    pub fn io_uring_error(&self) -> Option<&std::io::Error> {
        self.io_uring_error.as_ref()
    }

    /// The bound addresses (ports resolved), in `cfg.addrs` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.local_addrs.clone()
    }

    /// Effective SO_RCVBUF as reported by the kernel (per socket; same for all).
    /// Linux reports twice the requested size, clamped at `net.core.rmem_max`
    /// (times two); `effective / 2 < requested` means the clamp bit.
    pub fn effective_rcvbuf(&self) -> usize {
        self.sockets.effective_rcvbuf
    }

    /// Wait up to `timeout` for datagrams, then deliver every datagram that is
    /// ready (a batch) to `on_datagram`. Returns the number delivered. Returns
    /// `Ok(0)` on timeout. Never blocks longer than `timeout`.
    pub fn poll<F: FnMut(&[u8])>(
        &mut self,
        timeout: Duration,
        on_datagram: &mut F,
    ) -> Result<usize, Error> {
        let timeout = match &self.helper {
            Some(helper) => helper.cap_timeout(timeout),
            None => timeout,
        };
        let own = match &mut self.path {
            Path::IoUring(rx) => rx.poll(timeout, on_datagram)?,
            Path::Recvmmsg(rx) => rx.poll(timeout, on_datagram)?,
        };
        let Some(helper) = &mut self.helper else {
            return Ok(own);
        };
        let backlog = self.path.stats().backlog_bytes;
        Ok(own + helper.help(backlog, own, on_datagram)?)
    }

    /// Cumulative counters.
    pub fn stats(&self) -> RxStats {
        let mut stats = self.path.stats();
        if let Some(helper) = &self.helper {
            let stolen = helper.stats();
            stats.datagrams += stolen.datagrams;
            stats.bytes += stolen.bytes;
            stats.truncated += stolen.truncated;
            stats.batches += stolen.batches;
            stats.stolen = stolen.stolen;
        }
        stats
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Before the sockets close: siblings stop stealing from them.
        if let Some(helper) = &self.helper {
            helper.withdraw();
        }
    }
}

impl Path {
    /// The receive path's own counters (stolen datagrams not included).
    fn stats(&self) -> RxStats {
        match self {
            Path::IoUring(rx) => rx.stats(),
            Path::Recvmmsg(rx) => rx.stats(),
        }
    }
}

/// A socket is behind, for `listen.steal`, once its queue holds a sixteenth
/// of what it can hold before the kernel drops (4 MB of the default 64 MB;
/// a wake-up at full speed finds about 1.5 MB there).
fn steal_threshold(effective_rcvbuf: usize) -> u64 {
    (effective_rcvbuf as u64 / 16).max(1)
}

/// The hook is on for exactly "1".
fn force_flag(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v == "1")
}
