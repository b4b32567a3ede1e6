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
//! The check is cheap and bounded: at most [`PROBES`] siblings per check
//! (the one found behind last time first, then the others in rotation), one
//! `getsockopt(SO_MEMINFO)` each, at most once per [`CHECK_INTERVAL`] while
//! nobody is behind; at most [`STEAL_BATCHES`] `recvmmsg` calls per poll.
//! While a sibling is behind or half way there, the helper waits at most
//! [`WATCH_WAIT`] for its own datagrams, and not at all while the batch
//! bound stopped it with the sibling still behind.
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
    /// A sibling's queue is past half the threshold, and this shard either
    /// emptied it or left it under the threshold: look again within a
    /// millisecond.
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
    /// At least 1 (`steal_threshold`).
    threshold: u64,
    slots: Slots,
    /// Where the next check's rotation starts among the siblings.
    cursor: usize,
    /// The sibling the last check found behind: probed first next time.
    hot: Option<usize>,
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
            threshold,
            slots,
            cursor: 0,
            hot: None,
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
        let (order, probes, advance) =
            probe_order(self.me, self.siblings.len(), self.cursor, self.hot);
        self.cursor = self.cursor.wrapping_add(advance);
        for &sibling in &order[..probes] {
            let Some(sockets) = self.siblings.sockets(sibling) else {
                continue;
            };
            let mut found = Watch::Quiet;
            for socket in sockets.iter() {
                let (n, watch) = self.steal_from(socket, &mut batches, on_datagram)?;
                delivered += n;
                found = found.max(watch);
            }
            self.watch = self.watch.max(found);
            if found > Watch::Quiet {
                self.hot = Some(sibling);
            } else if self.hot == Some(sibling) {
                self.hot = None;
            }
        }
        if delivered > 0 {
            self.stats.stolen += delivered as u64;
            if own_delivered == 0 {
                self.stats.batches += 1;
            }
        }
        Ok(delivered)
    }

    /// Take datagrams from `socket` while it is behind and the poll's
    /// `batches` last. Returns the datagrams delivered and what was found:
    /// `Quiet` (under half the threshold), `Behind` (half way there, or
    /// emptied), `Stealing` (the bound stopped us, not an empty queue).
    fn steal_from<F: FnMut(&[u8])>(
        &mut self,
        socket: &Socket,
        batches: &mut usize,
        on_datagram: &mut F,
    ) -> std::io::Result<(usize, Watch)> {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let Some((_, queued)) = socket_meminfo(fd) else {
            return Ok((0, Watch::Quiet));
        };
        let queued = u64::from(queued);
        if queued < self.threshold {
            // Half way there: keep looking every millisecond rather than
            // sleeping a whole poll while it fills.
            let watch = if queued >= self.threshold / 2 {
                Watch::Behind
            } else {
                Watch::Quiet
            };
            return Ok((0, watch));
        }
        let mut delivered = 0;
        while *batches > 0 {
            *batches -= 1;
            let received = self.slots.receive(fd)?;
            delivered += self.slots.deliver(received, &mut self.stats, on_datagram);
            if received < self.slots.len() {
                return Ok((delivered, Watch::Behind));
            }
        }
        Ok((delivered, Watch::Stealing))
    }
}

/// The siblings one check looks at, never `me`: the one found behind at
/// the last check first (`hot`: on a big host one hot shard must not wait
/// for the rotation to come round again), then the next in rotation from
/// `cursor`, [`PROBES`] distinct ones at most. Returns them, how many, and
/// how far the rotation moved.
fn probe_order(
    me: usize,
    shards: usize,
    cursor: usize,
    hot: Option<usize>,
) -> ([usize; PROBES], usize, usize) {
    let others = shards.saturating_sub(1);
    let mut order = [0; PROBES];
    let mut count = 0;
    if let Some(hot) = hot.filter(|&h| h != me && h < shards) {
        order[0] = hot;
        count = 1;
    }
    let mut advance = 0;
    while count < PROBES.min(others) && advance < others {
        let sibling = (me + 1 + (cursor + advance) % others) % shards;
        advance += 1;
        if !order[..count].contains(&sibling) {
            order[count] = sibling;
            count += 1;
        }
    }
    (order, count, advance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_rotate_over_the_siblings_and_put_the_hot_one_first() {
        let probes = |me, shards, cursor, hot| {
            let (order, count, advance) = probe_order(me, shards, cursor, hot);
            (order[..count].to_vec(), advance)
        };
        // Two shards: the one sibling, whatever the cursor.
        assert_eq!(probes(0, 2, 0, None), (vec![1], 1));
        assert_eq!(probes(1, 2, 7, None), (vec![0], 1));
        assert_eq!(probes(1, 2, 7, Some(0)), (vec![0], 0));
        // Five shards, me = 2: the others are 3, 4, 0, 1 in rotation.
        assert_eq!(probes(2, 5, 0, None), (vec![3, 4], 2));
        assert_eq!(probes(2, 5, 2, None), (vec![0, 1], 2));
        assert_eq!(probes(2, 5, 3, None), (vec![1, 3], 2));
        // The hot one first, then the rotation, skipping it.
        assert_eq!(probes(2, 5, 0, Some(0)), (vec![0, 3], 1));
        assert_eq!(probes(2, 5, 2, Some(0)), (vec![0, 1], 2));
        // A stale or impossible `hot` is ignored.
        assert_eq!(probes(2, 5, 0, Some(2)), (vec![3, 4], 2));
        assert_eq!(probes(2, 5, 0, Some(9)), (vec![3, 4], 2));
        // Every sibling comes round: over 4 checks each is probed twice.
        let mut seen = [0; 5];
        let mut cursor = 0;
        for _ in 0..4 {
            let (order, count, advance) = probe_order(2, 5, cursor, None);
            cursor += advance;
            for &s in &order[..count] {
                seen[s] += 1;
            }
        }
        assert_eq!(seen, [2, 2, 0, 2, 2]);
        // One shard: nothing to probe.
        assert_eq!(probes(0, 1, 0, None), (vec![], 0));
    }
}
