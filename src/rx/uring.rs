//! The io_uring receive path: one ring, one provided-buffer ring, one
//! multishot `RecvMsgMulti` per socket.
//!
//! # Safety model
//!
//! The kernel holds three kinds of pointers into this struct's memory:
//! the msghdr template (read when a receive is prepared), the buffer ring and
//! the buffers (owned by [`BufRing`], see `buffers.rs`). All live as long as
//! `UringRx`. `Drop` cancels every receive still armed and reaps completions
//! until each one has posted its final CQE, then unregisters the buffer ring;
//! only then are the buffers freed. If that cannot be proven within a bounded
//! time the buffers are leaked instead of freed. Field order drops the ring
//! before the buffers, and the sockets (owned by `Receiver`) after both.
//!
//! Each socket's receive is armed from `poll`, i.e. by the thread that polls:
//! the kernel cancels a task's requests when that task exits, so arming from
//! the thread that merely opened the receiver would tie it to that thread.
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring};
use socket2::{Domain, Socket, Type};

use super::buffers::{BufRing, ENTRIES_MAX};
use super::coalesce::WakeGate;
use super::socket::DropCounters;
use super::{Error, RxConfig, RxStats};

/// Our only buffer group.
const BGID: u16 = 0;
/// user_data of completions that are not receives (cancels, the probe).
const USER_DATA_CANCEL: u64 = u64::MAX;
const USER_DATA_PROBE: u64 = u64::MAX - 1;
/// `struct io_uring_recvmsg_out`: namelen, controllen, payloadlen, flags.
const RECVMSG_OUT_LEN: usize = 16;
/// Bytes in front of the payload in every provided buffer: the header alone.
/// The source address is never used, so `msg_namelen` is 0 and the kernel
/// neither fills nor copies it (the recvmmsg path passes no name either).
pub(super) const HEADER_LEN: usize = RECVMSG_OUT_LEN;
/// How long `Drop` waits for cancelled receives to finish before leaking.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

/// The msghdr given to `RecvMsgMulti`: all zero. The kernel reads only
/// `msg_namelen` and `msg_controllen` from it (the space it reserves in
/// front of each payload), and neither a name nor control messages are
/// wanted; every pointer is null.
struct MsgTemplate(libc::msghdr);

// SAFETY: every pointer in the template is null; it is plain data.
unsafe impl Send for MsgTemplate {}

pub(super) struct UringRx {
    // Field order matters: the ring is dropped (closed) before the buffers.
    ring: IoUring,
    bufs: BufRing,
    msghdr: Box<MsgTemplate>,
    fds: Vec<RawFd>,
    /// Whether socket i may have a multishot receive in flight (pushed, not
    /// yet seen its final CQE).
    armed: Vec<bool>,
    drops: DropCounters,
    stats: RxStats,
    /// Completions to wait for before waking: half the buffers where the
    /// wait carries `min_wait_usec`, else 1.
    wake_batch: u32,
    /// `listen.wake_coalesce` for the kernel (`IORING_FEAT_MIN_TIMEOUT`,
    /// Linux 6.12): once a wait has lasted this long it ends at the first
    /// completion; before that only `wake_batch` completions end it. So a
    /// shard that has just woken sleeps until datagrams have gathered, and
    /// one woken after an idle spell handles the first datagram at once.
    min_wait_usec: Option<u32>,
    /// The same rule in user space, where the kernel lacks the feature.
    gate: WakeGate,
}

/// Provided-buffer count: `buffers` rounded up to a power of two, within the
/// kernel's limit.
pub(super) fn ring_entries(buffers: usize) -> u16 {
    let clamped = buffers.clamp(1, usize::from(ENTRIES_MAX));
    let entries = clamped.next_power_of_two().min(usize::from(ENTRIES_MAX));
    u16::try_from(entries).expect("clamped to ENTRIES_MAX")
}

impl UringRx {
    /// Set up the ring and buffers, and check that this kernel runs multishot
    /// `recvmsg`. Any error means "no io_uring here"; the caller decides
    /// whether to fall back. `force_failure` is the test hook behind
    /// `SLUICE_FORCE_IO_URING_FAILURE`.
    pub(super) fn new(fds: Vec<RawFd>, cfg: &RxConfig, force_failure: bool) -> io::Result<UringRx> {
        if force_failure {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let entries = ring_entries(cfg.buffers);
        let sq_entries = u32::try_from((fds.len() * 2 + 8).next_power_of_two())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many sockets"))?;
        // Every data CQE holds a buffer, so at most `entries` of them are
        // outstanding, plus a final CQE per socket and the cancels.
        let cq_entries = (u32::from(entries) * 2)
            .max(sq_entries * 2)
            .next_power_of_two();
        let ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            // Receive work runs only when this thread waits for completions,
            // and the wait wakes once `wake_batch` are ready: one wake-up per
            // batch of datagrams, not per datagram. The ring is created,
            // armed, polled and dropped on its shard's thread only.
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(sq_entries)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(cq_entries)
                    .setup_coop_taskrun()
                    .setup_taskrun_flag()
                    .build(sq_entries)
            })?;
        if !ring.params().is_feature_ext_arg() {
            // Needed for the wait timeout in `poll` (Linux 5.11).
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let bufs = BufRing::new(entries, HEADER_LEN + cfg.max_datagram_size)?;
        // SAFETY: `bufs` lives in the same `UringRx` as `ring`; it is freed
        // only after `Drop` has unregistered the group with no receive in
        // flight (or leaked), and the ring is dropped before it.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring_addr(),
                bufs.entries(),
                BGID,
                0,
            )?;
        }
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let template: libc::msghdr = unsafe { std::mem::zeroed() };
        let sockets = fds.len();
        let coalesce = cfg.wake_coalesce;
        let in_kernel = ring.params().is_feature_min_timeout() && !coalesce.is_zero();
        let min_wait_usec = in_kernel.then(|| {
            u32::try_from(coalesce.as_micros())
                .unwrap_or(u32::MAX)
                .max(1)
        });
        // Half the buffers, so a batch never has to wait for ENOBUFS.
        let wake_batch = if in_kernel {
            (u32::from(entries) / 2).clamp(1, 64)
        } else {
            1
        };
        let gate = WakeGate::new(if in_kernel { Duration::ZERO } else { coalesce });
        let mut rx = UringRx {
            ring,
            bufs,
            msghdr: Box::new(MsgTemplate(template)),
            fds,
            armed: vec![false; sockets],
            drops: DropCounters::new(sockets),
            stats: RxStats::default(),
            wake_batch,
            min_wait_usec,
            gate,
        };
        rx.probe_multishot()?;
        Ok(rx)
    }

    pub(super) fn stats(&self) -> RxStats {
        self.stats
    }

    /// Multishot recvmsg needs Linux 6.0; older kernels accept the ring and
    /// the buffer ring but fail the receive with EINVAL. Arm one on an
    /// unbound socket (it can never receive), cancel it, and look at how it
    /// ended.
    fn probe_multishot(&mut self) -> io::Result<()> {
        let probe = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        let recv = opcode::RecvMsgMulti::new(types::Fd(probe.as_raw_fd()), &self.msghdr.0, BGID)
            .build()
            .user_data(USER_DATA_PROBE);
        let cancel = opcode::AsyncCancel::new(USER_DATA_PROBE)
            .build()
            .user_data(USER_DATA_CANCEL);
        {
            let mut sq = self.ring.submission();
            // SAFETY: the msghdr template is boxed in `self` and outlives the
            // ring; the probe socket outlives the request because we reap its
            // final CQE below before `probe` is dropped (or leak on timeout).
            // The queue was just created and is empty, so both pushes fit.
            unsafe {
                sq.push(&recv)
                    .map_err(|_| io::Error::other("submission queue full"))?;
                sq.push(&cancel)
                    .map_err(|_| io::Error::other("submission queue full"))?;
            }
        }
        let deadline = Instant::now() + TEARDOWN_WAIT;
        let mut outcome = None;
        let mut cancelled = false;
        while (outcome.is_none() || !cancelled) && Instant::now() < deadline {
            let ts = types::Timespec::from(Duration::from_millis(100));
            let args = types::SubmitArgs::new().timespec(&ts);
            if let Err(e) = self.ring.submitter().submit_with_args(2, &args) {
                if !transient(&e) {
                    return Err(e);
                }
            }
            for cqe in self.ring.completion() {
                match cqe.user_data() {
                    USER_DATA_PROBE if !cqueue::more(cqe.flags()) => {
                        outcome = Some(cqe.result());
                    }
                    USER_DATA_CANCEL => cancelled = true,
                    _ => {}
                }
            }
        }
        match outcome {
            Some(result) if result == -libc::ECANCELED || result >= 0 => Ok(()),
            Some(result) => Err(io::Error::from_raw_os_error(-result)),
            None => {
                // The kernel never finished the probe: it may still select a
                // buffer, so the buffers must never be freed.
                self.bufs.leak();
                std::mem::forget(probe);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "io_uring probe did not complete",
                ))
            }
        }
    }

    /// Push a multishot receive for every socket that has none in flight.
    fn arm(&mut self) -> io::Result<()> {
        for index in 0..self.fds.len() {
            if self.armed[index] {
                continue;
            }
            let entry = opcode::RecvMsgMulti::new(types::Fd(self.fds[index]), &self.msghdr.0, BGID)
                .build()
                .user_data(index as u64);
            // SAFETY: the template is boxed in `self` and outlives the ring;
            // the socket fd is owned by the `Receiver`, which drops it only
            // after this `UringRx` (and its teardown) is gone.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_err() {
                self.ring.submit()?;
                // SAFETY: as above; the queue was just flushed.
                unsafe { self.ring.submission().push(&entry) }
                    .map_err(|_| io::Error::other("submission queue full"))?;
            }
            self.armed[index] = true;
        }
        Ok(())
    }

    pub(super) fn poll<F: FnMut(&[u8])>(
        &mut self,
        timeout: Duration,
        on_datagram: &mut F,
    ) -> Result<usize, Error> {
        self.arm()?;
        let timeout = self.gate.hold(timeout);
        // The wait timeout travels in the enter call itself (EXT_ARG), so no
        // timeout SQE exists that could complete late and pile up.
        let ts = types::Timespec::from(timeout);
        let mut args = types::SubmitArgs::new().timespec(&ts);
        if let Some(usec) = self.min_wait_usec {
            // The kernel lets the minimum wait outlast the timeout; the
            // caller's timeout (a chunk to seal, `stop`) must win.
            let timeout_usec = u32::try_from(timeout.as_micros()).unwrap_or(u32::MAX);
            args = args.min_wait_usec(usec.min(timeout_usec).max(1));
        }
        let want = self.wake_batch as usize;
        if let Err(e) = self.ring.submitter().submit_with_args(want, &args) {
            if !transient(&e) {
                return Err(Error::Io(e));
            }
        }
        let woke = Instant::now();
        // Before the drain: what still waits in the sockets now is what
        // piled up beyond the ring's buffers while this thread was away.
        self.drops.refresh(&self.fds, &mut self.stats);
        let (delivered, failure) = self.drain(on_datagram);
        if delivered > 0 {
            self.stats.batches += 1;
        }
        // A multishot receive ends when the buffers ran out: datagrams were
        // left in the socket, so the next poll must not pause.
        let behind = self.armed.iter().any(|armed| !armed);
        self.gate.woke(woke, delivered, behind);
        if behind {
            // Re-arm now rather than at the next poll, so the kernel keeps
            // receiving while the caller works through this batch.
            self.arm()?;
            self.ring.submit()?;
        }
        match failure {
            Some(e) => Err(Error::Io(e)),
            None => Ok(delivered),
        }
    }

    /// Handle every ready completion, then publish the recycled buffers once.
    fn drain<F: FnMut(&[u8])>(&mut self, on_datagram: &mut F) -> (usize, Option<io::Error>) {
        let UringRx {
            ring,
            bufs,
            msghdr,
            armed,
            stats,
            ..
        } = self;
        let mut delivered = 0usize;
        let mut failure = None;
        let mut cq = ring.completion();
        // Bounded: at most `entries` data CQEs can be outstanding (each holds
        // a buffer that is recycled only below), plus final CQEs.
        let budget = cq.capacity() * 2;
        for _ in 0..budget {
            let Some(cqe) = cq.next() else {
                cq.sync();
                if cq.is_empty() {
                    break;
                }
                continue;
            };
            let Ok(index) = usize::try_from(cqe.user_data()) else {
                continue;
            };
            if index >= armed.len() {
                continue; // a cancel or probe completion
            }
            let flags = cqe.flags();
            if !cqueue::more(flags) {
                armed[index] = false;
                stats.rearms += 1;
            }
            let result = cqe.result();
            if result < 0 {
                match -result {
                    libc::ENOBUFS => stats.enobufs += 1,
                    libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
                    errno => {
                        failure.get_or_insert(io::Error::from_raw_os_error(errno));
                    }
                }
                continue;
            }
            let Some(bid) = cqueue::buffer_select(flags) else {
                continue;
            };
            let len = usize::try_from(result).unwrap_or(0).min(bufs.buf_len());
            // SAFETY: this CQE selected `bid` from our group, so the kernel
            // has finished writing it and removed it from the ring.
            let data = unsafe { bufs.take(bid, len) };
            let parsed = types::RecvMsgOut::parse(data, &msghdr.0);
            // The kernel always writes the full header area before the payload.
            debug_assert!(parsed.is_ok(), "short multishot recvmsg completion");
            if let Ok(out) = parsed {
                if out.is_payload_truncated() {
                    stats.truncated += 1;
                } else {
                    let payload = out.payload_data();
                    stats.datagrams += 1;
                    stats.bytes += payload.len() as u64;
                    delivered += 1;
                    on_datagram(payload);
                }
            }
            bufs.recycle(bid);
        }
        drop(cq);
        bufs.publish();
        (delivered, failure)
    }

    /// Cancel every armed receive and reap until each has ended. Returns
    /// false if that could not be confirmed in time.
    fn teardown(&mut self) -> bool {
        let mut pending = Vec::new();
        for (index, armed) in self.armed.iter().enumerate() {
            if *armed {
                pending.push(
                    opcode::AsyncCancel::new(index as u64)
                        .build()
                        .user_data(USER_DATA_CANCEL),
                );
            }
        }
        for entry in &pending {
            // SAFETY: a cancel SQE carries no pointers.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                if self.ring.submit().is_err() {
                    return false;
                }
                // SAFETY: as above.
                if unsafe { self.ring.submission().push(entry) }.is_err() {
                    return false;
                }
            }
        }
        let deadline = Instant::now() + TEARDOWN_WAIT;
        while self.armed.iter().any(|armed| *armed) {
            if Instant::now() >= deadline {
                return false;
            }
            let ts = types::Timespec::from(Duration::from_millis(50));
            let args = types::SubmitArgs::new().timespec(&ts);
            if let Err(e) = self.ring.submitter().submit_with_args(1, &args) {
                if !transient(&e) {
                    return false;
                }
            }
            for cqe in self.ring.completion() {
                let Ok(index) = usize::try_from(cqe.user_data()) else {
                    continue;
                };
                if index < self.armed.len() && !cqueue::more(cqe.flags()) {
                    self.armed[index] = false;
                }
            }
        }
        // Nothing can select a buffer any more. Failure to unregister is
        // harmless: closing the ring unpins the ring pages too.
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
        true
    }
}

impl Drop for UringRx {
    fn drop(&mut self) {
        if !self.teardown() {
            tracing::warn!("io_uring receives did not finish on shutdown; leaking their buffers");
            self.bufs.leak();
        }
    }
}

/// Errors from `io_uring_enter` that only mean "nothing to report yet".
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}
