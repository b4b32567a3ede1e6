//! Work stealing between shards (`listen.steal`).
//!
//! `SO_REUSEPORT` puts each flow (source address and port) on one socket, so
//! a few heavy senders can load one shard far beyond its CPU while another
//! idles; the busy socket's buffer then fills and the kernel drops. Here a
//! shard whose own sockets are caught up looks at its siblings' sockets and,
//! where one holds more than [`Helper::threshold`] bytes, takes datagrams
//! from it with `recvmmsg` into its own slots and runs them through its own
//! pipeline. Datagrams are dequeued atomically by the kernel, so each one is
//! handled by exactly one shard. The cost: while a shard is helped, lines of
//! one source may leave out of order (order holds otherwise).
//!
//! The check is cheap and bounded: at most [`PROBES`] siblings per check, one
//! `getsockopt(SO_MEMINFO)` each, at most once per [`CHECK_INTERVAL`] while
//! nobody is behind; at most [`STEAL_BATCHES`] `recvmmsg` calls per poll.
//! The helper reads the sibling's queue itself rather than trusting what the
//! sibling last published, because a shard falls behind exactly when it is
//! not running.
//!
//! Sockets are shared as duplicated descriptors (`dup`), so a helper never
//! reads a descriptor number its owner has closed and the kernel reused. The
//! owner withdraws them when its receiver drops; a helper that is in the
//! middle of a batch keeps the socket open until it finishes.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::Socket;

use super::mmsg::Slots;
use super::socket::socket_meminfo;
use super::RxStats;

/// Siblings looked at per check (rotating through all of them).
const PROBES: usize = 2;
/// `recvmmsg` calls per poll when stealing.
const STEAL_BATCHES: usize = 4;
/// While no sibling was behind at the last check, check at most this often.
const CHECK_INTERVAL: Duration = Duration::from_millis(1);
/// While a sibling was behind at the last check, wait at most this long for
/// the shard's own datagrams before checking again.
const WATCH_WAIT: Duration = Duration::from_millis(1);

/// One shard's entry: its sockets (duplicated), `None` before it opens and
/// after it drops.
type Entry = Mutex<Option<Arc<[Socket]>>>;

/// The sockets of every shard of one receive group, shared among them.
#[derive(Default)]
pub struct Siblings {
    slots: Box<[Entry]>,
}

impl std::fmt::Debug for Siblings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Siblings")
            .field("shards", &self.slots.len())
            .finish()
    }
}

impl Siblings {
    /// An empty group for `shards` receivers; each registers when it opens.
    pub fn new(shards: usize) -> Arc<Siblings> {
        Arc::new(Siblings {
            slots: (0..shards).map(|_| Mutex::new(None)).collect(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn register(&self, index: usize, sockets: Vec<Socket>) {
        if let Some(slot) = self.slots.get(index) {
            *lock(slot) = Some(sockets.into());
        }
    }

    pub(super) fn withdraw(&self, index: usize) {
        if let Some(slot) = self.slots.get(index) {
            *lock(slot) = None;
        }
    }

    fn sockets(&self, index: usize) -> Option<Arc<[Socket]>> {
        lock(&self.slots[index]).clone()
    }
}

/// A poisoned slot only means a thread panicked while holding it; the
/// `Option` inside is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the last check found (ordered: a later finding only raises it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Watch {
    /// No sibling behind.
    Quiet,
    /// A sibling was behind (or half way there) and is not being emptied
    /// by the steal bound: look again within a millisecond.
    Behind,
    /// The steal bound stopped this shard with the sibling still behind:
    /// look again at once.
    Stealing,
}

/// One shard's side of work stealing.
pub(super) struct Helper {
    siblings: Arc<Siblings>,
    me: usize,
    /// Queue size (kernel bytes) above which a sibling's socket is behind,
    /// and above which this shard's own queue keeps it from helping.
    threshold: u64,
    slots: Slots,
    /// Where the next check starts among the siblings.
    cursor: usize,
    last_check: Option<Instant>,
    watch: Watch,
    /// What stolen datagrams added: `datagrams`, `bytes`, `truncated`,
    /// `stolen`, `batches`.
    stats: RxStats,
}

impl Helper {
    pub(super) fn new(siblings: Arc<Siblings>, me: usize, threshold: u64, slots: Slots) -> Helper {
        Helper {
            siblings,
            me,
            threshold: threshold.max(1),
            slots,
            cursor: 0,
            last_check: None,
            watch: Watch::Quiet,
            stats: RxStats::default(),
        }
    }

    /// Take this shard's sockets out of the group.
    pub(super) fn withdraw(&self) {
        self.siblings.withdraw(self.me);
    }

    pub(super) fn stats(&self) -> &RxStats {
        &self.stats
    }

    /// The wait for the shard's own datagrams: shortened while a sibling
    /// is behind, so that this shard comes back to help.
    pub(super) fn cap_timeout(&self, timeout: Duration) -> Duration {
        match self.watch {
            Watch::Quiet => timeout,
            Watch::Behind => timeout.min(WATCH_WAIT),
            Watch::Stealing => Duration::ZERO,
        }
    }

    /// After the shard's own poll: `own_backlog` is what its own sockets
    /// held when it woke, `own_delivered` what the poll delivered. Steals
    /// from siblings that are behind, handing each datagram to
    /// `on_datagram`; returns the datagrams delivered.
    pub(super) fn help<F: FnMut(&[u8])>(
        &mut self,
        own_backlog: u64,
        own_delivered: usize,
        on_datagram: &mut F,
    ) -> std::io::Result<usize> {
        let others = self.siblings.len().saturating_sub(1);
        if others == 0 || own_backlog >= self.threshold {
            self.watch = Watch::Quiet;
            return Ok(0);
        }
        let now = Instant::now();
        if self.watch == Watch::Quiet
            && self
                .last_check
                .is_some_and(|at| now.duration_since(at) < CHECK_INTERVAL)
        {
            return Ok(0);
        }
        self.last_check = Some(now);
        self.watch = Watch::Quiet;
        let mut batches = STEAL_BATCHES;
        let mut delivered = 0;
        for probe in 0..PROBES.min(others) {
            let sibling = (self.me + 1 + (self.cursor + probe) % others) % self.siblings.len();
            let Some(sockets) = self.siblings.sockets(sibling) else {
                continue;
            };
            for socket in sockets.iter() {
                delivered += self.steal_from(socket, &mut batches, on_datagram)?;
            }
        }
        self.cursor = self.cursor.wrapping_add(PROBES.min(others));
        if delivered > 0 {
            self.stats.stolen += delivered as u64;
            if own_delivered == 0 {
                self.stats.batches += 1;
            }
        }
        Ok(delivered)
    }

    /// Take datagrams from `socket` while it is behind and the poll's
    /// `batches` last.
    fn steal_from<F: FnMut(&[u8])>(
        &mut self,
        socket: &Socket,
        batches: &mut usize,
        on_datagram: &mut F,
    ) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let Some((_, queued)) = socket_meminfo(fd) else {
            return Ok(0);
        };
        let queued = u64::from(queued);
        if queued < self.threshold {
            // Half way there: keep looking every millisecond rather than
            // sleeping a whole poll while it fills.
            if queued >= self.threshold / 2 {
                self.watch = self.watch.max(Watch::Behind);
            }
            return Ok(0);
        }
        self.watch = self.watch.max(Watch::Behind);
        let mut delivered = 0;
        while *batches > 0 {
            *batches -= 1;
            let received = self.slots.receive(fd)?;
            delivered += self.slots.deliver(received, &mut self.stats, on_datagram);
            if received < self.slots.len() {
                return Ok(delivered);
            }
        }
        // The bound stopped us, not an empty queue.
        self.watch = Watch::Stealing;
        Ok(delivered)
    }
}
