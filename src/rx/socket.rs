//! Socket setup shared by both receive paths, and the one cmsg we read.
//!
//! Every socket is non-blocking: the recvmmsg path needs it, and io_uring does
//! not care (it arms its own poll on the socket).
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::{Error, RxStats};

/// `SO_RXQ_OVFL` from `asm-generic/socket.h`; the `libc` crate does not
/// export it for Linux glibc targets.
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_RXQ_OVFL: libc::c_int = 40;
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_RXQ_OVFL: libc::c_int = 0x0024;

/// Control-buffer bytes per datagram. The only cmsg we enable is
/// `SO_RXQ_OVFL` (a u32: `CMSG_SPACE(4)` = 24 bytes on 64-bit Linux); the
/// rest is headroom so an unexpected cmsg cannot push ours out (`MSG_CTRUNC`).
pub(super) const CONTROL_LEN: usize = 64;

/// The sockets of one receiver, in `cfg.addrs` order.
pub(super) struct Sockets {
    pub(super) sockets: Vec<Socket>,
    pub(super) local_addrs: Vec<SocketAddr>,
    /// SO_RCVBUF as the kernel reports it (doubled, clamped at rmem_max).
    pub(super) effective_rcvbuf: usize,
}

impl Sockets {
    pub(super) fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.sockets.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

/// Open, configure and bind one UDP socket per address.
pub(super) fn open_all(addrs: &[SocketAddr], rcvbuf: usize) -> Result<Sockets, Error> {
    let mut sockets = Vec::with_capacity(addrs.len());
    let mut local_addrs = Vec::with_capacity(addrs.len());
    let mut effective_rcvbuf = usize::MAX;
    for &addr in addrs {
        let (socket, local, effective) =
            open_one(addr, rcvbuf).map_err(|source| Error::Socket { addr, source })?;
        sockets.push(socket);
        local_addrs.push(local);
        effective_rcvbuf = effective_rcvbuf.min(effective);
    }
    if addrs.is_empty() {
        effective_rcvbuf = 0;
    }
    Ok(Sockets {
        sockets,
        local_addrs,
        effective_rcvbuf,
    })
}

fn open_one(addr: SocketAddr, rcvbuf: usize) -> std::io::Result<(Socket, SocketAddr, usize)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_recv_buffer_size(rcvbuf)?;
    enable_rxq_ovfl(&socket)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("bound address is not an IP socket address"))?;
    let effective = socket.recv_buffer_size()?;
    Ok((socket, local, effective))
}

fn enable_rxq_ovfl(socket: &Socket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `socket`; the option value
    // pointer and length describe `on`, a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_RXQ_OVFL,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The kernel's `SO_RXQ_OVFL` counter from a received control area, if
/// present. The kernel attaches it only once the socket has dropped something.
///
/// Parsed from bytes (no pointer casts): the control area of an io_uring
/// provided buffer has no alignment guarantee. Layout is the kernel's
/// `struct cmsghdr { size_t len; int level; int type; }`, each header and
/// payload aligned to `size_t`.
pub(super) fn rxq_ovfl(control: &[u8]) -> Option<u32> {
    const WORD: usize = std::mem::size_of::<usize>();
    const HEADER: usize = (WORD + 8).next_multiple_of(WORD);
    let mut offset = 0usize;
    // Bounded: each step advances by at least HEADER bytes.
    while offset + HEADER <= control.len() {
        let at = &control[offset..];
        let len = usize::from_ne_bytes(at[..WORD].try_into().ok()?);
        let level = i32::from_ne_bytes(at[WORD..WORD + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(at[WORD + 4..WORD + 8].try_into().ok()?);
        if len < HEADER || len > at.len() {
            return None;
        }
        if level == libc::SOL_SOCKET && kind == SO_RXQ_OVFL && len >= HEADER + 4 {
            return Some(u32::from_ne_bytes(at[HEADER..HEADER + 4].try_into().ok()?));
        }
        offset += len.next_multiple_of(WORD);
    }
    None
}

/// Latest `SO_RXQ_OVFL` value per socket, folded into `RxStats::kernel_drops`.
pub(super) struct DropCounters {
    latest: Vec<u32>,
}

impl DropCounters {
    pub(super) fn new(sockets: usize) -> DropCounters {
        DropCounters {
            latest: vec![0; sockets],
        }
    }

    /// Record the counter carried by one datagram of socket `index`.
    /// The kernel counter is a wrapping u32; the sum in `stats` is the total
    /// of the per-socket deltas, so it keeps counting past a wrap.
    pub(super) fn observe(&mut self, index: usize, control: &[u8], stats: &mut RxStats) {
        if let Some(value) = rxq_ovfl(control) {
            let delta = value.wrapping_sub(self.latest[index]);
            // A datagram queued before a later one can carry an older value;
            // counts only move forward, so ignore apparent huge "deltas".
            if delta < u32::MAX / 2 {
                self.latest[index] = value;
                stats.kernel_drops += u64::from(delta);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        const WORD: usize = std::mem::size_of::<usize>();
        let header = (WORD + 8).next_multiple_of(WORD);
        let len = header + data.len();
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(len.next_multiple_of(WORD), 0);
        out
    }

    #[test]
    fn rxq_ovfl_found_after_other_cmsg() {
        let mut control = cmsg(libc::SOL_IP, 8, &[1, 2, 3, 4, 5]);
        control.extend(cmsg(libc::SOL_SOCKET, SO_RXQ_OVFL, &7u32.to_ne_bytes()));
        assert_eq!(rxq_ovfl(&control), Some(7));
        assert_eq!(rxq_ovfl(&control[..control.len() - 8]), None);
        assert_eq!(rxq_ovfl(&[]), None);
    }

    #[test]
    fn drop_counters_sum_deltas_across_wrap() {
        let mut stats = RxStats::default();
        let mut drops = DropCounters::new(2);
        let at = |v: u32| cmsg(libc::SOL_SOCKET, SO_RXQ_OVFL, &v.to_ne_bytes());
        drops.observe(0, &at(5), &mut stats);
        drops.observe(1, &at(3), &mut stats);
        drops.observe(0, &at(4), &mut stats); // stale, ignored
        drops.observe(0, &at(9), &mut stats);
        assert_eq!(stats.kernel_drops, 12);
        drops.observe(1, &at(0x7000_0000), &mut stats);
        drops.observe(1, &at(0xE000_0000), &mut stats);
        let before = stats.kernel_drops;
        drops.observe(1, &at(1), &mut stats);
        assert_eq!(stats.kernel_drops - before, 0x2000_0001);
    }
}
