//! The fallback receive path: `ppoll` on every socket, then `recvmmsg` in
//! batches into buffers allocated once at open.
//!
//! # Safety model
//!
//! In [`Slots`], `headers[i]` points at `iovecs[i]`; `iovecs[i]` points at
//! slot i of `data`. All three are heap blocks allocated in `Slots::new` and
//! never resized, so the pointers stay valid while the `Slots` lives (moving
//! the struct moves no heap block). The kernel writes through them only
//! during a `recvmmsg` call, when no Rust reference into them exists; slices
//! are made afterwards from the same raw pointers.
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::coalesce::WakeGate;
use super::socket::DropCounters;
use super::{Error, RxConfig, RxStats};

/// `recvmmsg` calls per socket per poll, so one busy socket cannot starve
/// the others or the caller.
const BATCHES_MAX: usize = 16;
/// The kernel caps one `recvmmsg` at UIO_MAXIOV messages.
const SLOTS_MAX: usize = 1024;

/// One `recvmmsg` batch's worth of datagram slots, each `slot_len` bytes.
/// The recvmmsg path receives into one; a shard that steals from a
/// sibling's socket (`steal.rs`) into another.
pub(super) struct Slots {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    /// Owns the datagram slots; touched only through `data_ptr`.
    data: Vec<u8>,
    data_ptr: *mut u8,
    slot_len: usize,
}

// SAFETY: the raw pointers (ours and those inside `headers`/`iovecs`) point
// only into heap blocks this struct owns; none is shared with another thread.
unsafe impl Send for Slots {}

impl Slots {
    /// `count` slots (at least 1, at most the kernel's per-call cap) of
    /// `slot_len` bytes. The block is zeroed lazily by the allocator: pages
    /// count towards RSS only once a datagram has been written to them.
    pub(super) fn new(count: usize, slot_len: usize) -> Slots {
        let count = count.clamp(1, SLOTS_MAX);
        let slot_len = slot_len.max(1);
        let mut data = vec![0u8; count * slot_len];
        let data_ptr = data.as_mut_ptr();
        let mut iovecs: Vec<libc::iovec> = (0..count)
            .map(|slot| libc::iovec {
                // SAFETY: slot * slot_len < count * slot_len, inside `data`.
                iov_base: unsafe { data_ptr.add(slot * slot_len) }.cast(),
                iov_len: slot_len,
            })
            .collect();
        let iov_ptr = iovecs.as_mut_ptr();
        let headers = (0..count)
            .map(|slot| {
                // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                // SAFETY: slot < count = iovecs.len().
                header.msg_hdr.msg_iov = unsafe { iov_ptr.add(slot) };
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        Slots {
            headers,
            iovecs,
            data,
            data_ptr,
            slot_len,
        }
    }

    /// How many datagrams one [`Slots::receive`] can take.
    pub(super) fn len(&self) -> usize {
        self.headers.len()
    }

    /// One non-blocking `recvmmsg` on `fd`: the number of datagrams now in
    /// the slots, 0 when none was waiting.
    pub(super) fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        debug_assert_eq!(self.iovecs.len(), self.headers.len());
        debug_assert_eq!(self.data.len(), self.headers.len() * self.slot_len);
        for header in &mut self.headers {
            // The kernel overwrites these with what it wrote.
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: `headers` holds `len()` mmsghdr whose pointers are valid
        // (safety model above); a null timeout is allowed.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(received as usize)
    }

    /// Hand the first `received` slots to `on_datagram`, counting them in
    /// `stats` (a truncated datagram is counted and skipped). Returns the
    /// datagrams delivered.
    pub(super) fn deliver<F: FnMut(&[u8])>(
        &self,
        received: usize,
        stats: &mut RxStats,
        on_datagram: &mut F,
    ) -> usize {
        let mut delivered = 0;
        let received = received.min(self.headers.len());
        for (slot, header) in self.headers[..received].iter().enumerate() {
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                stats.truncated += 1;
                continue;
            }
            let len = (header.msg_len as usize).min(self.slot_len);
            // SAFETY: slot `slot` of `data` is slot_len bytes inside the
            // allocation, initialised (zeroed, then written by the kernel).
            let payload =
                unsafe { std::slice::from_raw_parts(self.data_ptr.add(slot * self.slot_len), len) };
            stats.datagrams += 1;
            stats.bytes += len as u64;
            delivered += 1;
            on_datagram(payload);
        }
        delivered
    }
}

pub(super) struct MmsgRx {
    fds: Vec<RawFd>,
    pollfds: Vec<libc::pollfd>,
    slots: Slots,
    drops: DropCounters,
    stats: RxStats,
    gate: WakeGate,
}

impl MmsgRx {
    pub(super) fn new(fds: Vec<RawFd>, cfg: &RxConfig) -> MmsgRx {
        let pollfds = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let sockets = fds.len();
        MmsgRx {
            fds,
            pollfds,
            slots: Slots::new(cfg.buffers, cfg.max_datagram_size),
            drops: DropCounters::new(sockets),
            stats: RxStats::default(),
            gate: WakeGate::new(cfg.wake_coalesce),
        }
    }

    pub(super) fn stats(&self) -> RxStats {
        self.stats
    }

    pub(super) fn poll<F: FnMut(&[u8])>(
        &mut self,
        timeout: Duration,
        on_datagram: &mut F,
    ) -> Result<usize, Error> {
        for pollfd in &mut self.pollfds {
            pollfd.revents = 0;
        }
        let timeout = self.gate.hold(timeout);
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        };
        // SAFETY: `pollfds` is a live array of `len` pollfd; `ts` outlives
        // the call; a null sigmask means "do not change the mask".
        let ready = unsafe {
            libc::ppoll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if ready < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINTR) => Ok(0),
                _ => Err(Error::Io(e)),
            };
        }
        let woke = Instant::now();
        // Before the drain: the queues hold what piled up while this thread
        // was away.
        self.drops.refresh(&self.fds, &mut self.stats);
        let (mut delivered, mut behind) = (0, false);
        for index in 0..self.fds.len() {
            if self.pollfds[index].revents != 0 {
                let (n, left) = self.drain_socket(index, on_datagram)?;
                delivered += n;
                behind |= left;
            }
        }
        if delivered > 0 {
            self.stats.batches += 1;
        }
        self.gate.woke(woke, delivered, behind);
        Ok(delivered)
    }

    /// `recvmmsg` until the socket is empty or the batch bound is reached;
    /// returns the datagrams delivered and whether the bound left some behind.
    fn drain_socket<F: FnMut(&[u8])>(
        &mut self,
        index: usize,
        on_datagram: &mut F,
    ) -> Result<(usize, bool), Error> {
        let mut delivered = 0;
        for _ in 0..BATCHES_MAX {
            let received = self.slots.receive(self.fds[index])?;
            delivered += self.slots.deliver(received, &mut self.stats, on_datagram);
            if received < self.slots.len() {
                return Ok((delivered, false));
            }
        }
        Ok((delivered, true))
    }
}
