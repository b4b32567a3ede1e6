//! Socket setup shared by both receive paths, and the kernel's drop counter.
//!
//! Every socket is non-blocking: the recvmmsg path needs it, and io_uring does
//! not care (it arms its own poll on the socket).
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::{Error, RxStats};

/// `SO_MEMINFO` from `asm-generic/socket.h`; the `libc` crate does not
/// export it for Linux glibc targets.
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_MEMINFO: libc::c_int = 55;
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_MEMINFO: libc::c_int = 0x0039;

/// Entries of the `SO_MEMINFO` array (`SK_MEMINFO_VARS`).
const MEMINFO_VARS: usize = 9;

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
/// `spread`: spread datagrams at random over this many sockets of each
/// address's `SO_REUSEPORT` group (see `spread_at_random`); `None` leaves the
/// kernel's flow hash.
pub(super) fn open_all(
    addrs: &[SocketAddr],
    rcvbuf: usize,
    spread: Option<usize>,
) -> Result<Sockets, Error> {
    let mut sockets = Vec::with_capacity(addrs.len());
    let mut local_addrs = Vec::with_capacity(addrs.len());
    let mut effective_rcvbuf = usize::MAX;
    for &addr in addrs {
        let (socket, local, effective) =
            open_one(addr, rcvbuf, spread).map_err(|source| Error::Socket { addr, source })?;
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

fn open_one(
    addr: SocketAddr,
    rcvbuf: usize,
    spread: Option<usize>,
) -> std::io::Result<(Socket, SocketAddr, usize)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    set_recv_buffer(&socket, rcvbuf)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if let Some(group) = spread {
        spread_at_random(&socket, group)?;
    }
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("bound address is not an IP socket address"))?;
    let effective = socket.recv_buffer_size()?;
    Ok((socket, local, effective))
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic; the libc crate exports it for
/// Android only).
#[cfg(not(target_arch = "sparc64"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
#[cfg(target_arch = "sparc64")]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x35;

/// Attach to the socket's `SO_REUSEPORT` group a classic BPF program that
/// picks a socket at random for each datagram: `random() % group`. The
/// kernel indexes the group's sockets in the order they were bound, one per
/// shard, and falls back to its flow hash while an index is not bound yet
/// (shards bind one after another); every shard attaches the same program,
/// the last one stays.
fn spread_at_random(socket: &Socket, group: usize) -> std::io::Result<()> {
    let group = u32::try_from(group.max(1))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "too many shards"))?;
    let insn = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut program = [
        // A = a random u32 (an ancillary load, no packet data).
        insn(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
        ),
        insn(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, group),
        insn(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the
    // kernel copies the program; the length passed is the struct's size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Ask for `rcvbuf` bytes of receive buffer. The kernel caps `SO_RCVBUF` at
/// `net.core.rmem_max`; where that cap bites, `SO_RCVBUFFORCE` gets the size
/// anyway for a process with `CAP_NET_ADMIN` (root, or a unit granting it), as
/// systemd's own sockets do. Without the capability the capped size stands and
/// the caller warns.
fn set_recv_buffer(socket: &Socket, rcvbuf: usize) -> std::io::Result<()> {
    socket.set_recv_buffer_size(rcvbuf)?;
    // Linux doubles the value it stores (bookkeeping overhead), so a size
    // below twice the request means the cap applied.
    if socket.recv_buffer_size()? / 2 < rcvbuf {
        let Ok(value) = libc::c_int::try_from(rcvbuf) else {
            return Ok(());
        };
        // SAFETY: the socket is open and owned by the caller; the value
        // pointer and length describe `value`, which outlives the call. An
        // EPERM (no CAP_NET_ADMIN) leaves the capped size in place.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok(())
}

/// The socket's drop counter (`sk_drops`: datagrams the kernel dropped
/// because the receive buffer was full, or for a bad checksum) and the bytes
/// in its receive queue (`rmem_alloc`), read with `getsockopt(SO_MEMINFO)`.
/// It costs one call per socket per poll, where `SO_RXQ_OVFL` would make the
/// kernel build a control message for every datagram; and it is current, not
/// carried by the next datagram.
pub(super) fn socket_meminfo(fd: RawFd) -> Option<(u32, u32)> {
    let mut info = [0u32; MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `fd` is a live socket owned by the receiver; the value pointer
    // and length describe `info`, which outlives the call, and the kernel
    // writes at most `len` bytes and stores the length written in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let drops = libc::SK_MEMINFO_DROPS as usize;
    let queued = libc::SK_MEMINFO_RMEM_ALLOC as usize;
    (rc == 0 && len as usize >= (drops + 1) * 4).then(|| (info[drops], info[queued]))
}

/// Latest drop counter per socket, folded into `RxStats::kernel_drops`.
pub(super) struct DropCounters {
    latest: Vec<u32>,
}

impl DropCounters {
    pub(super) fn new(sockets: usize) -> DropCounters {
        DropCounters {
            latest: vec![0; sockets],
        }
    }

    /// Read every socket's drop counter and receive queue, once per poll,
    /// right after the wait: the queue then holds what piled up while the
    /// receiver was away.
    pub(super) fn refresh(&mut self, fds: &[RawFd], stats: &mut RxStats) {
        let mut backlog = 0u64;
        for (index, &fd) in fds.iter().enumerate() {
            if let Some((drops, queued)) = socket_meminfo(fd) {
                self.observe(index, drops, stats);
                backlog += u64::from(queued);
                stats.backlog_max_bytes = stats.backlog_max_bytes.max(u64::from(queued));
            }
        }
        stats.backlog_bytes = backlog;
    }

    /// Record the counter of socket `index`. The kernel counter is a
    /// wrapping u32; the sum in `stats` is the total of the per-socket
    /// deltas, so it keeps counting past a wrap.
    pub(super) fn observe(&mut self, index: usize, value: u32, stats: &mut RxStats) {
        let delta = value.wrapping_sub(self.latest[index]);
        // Counts only move forward; ignore an apparent huge "delta".
        if delta < u32::MAX / 2 {
            self.latest[index] = value;
            stats.kernel_drops += u64::from(delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_sum_deltas_across_wrap() {
        let mut stats = RxStats::default();
        let mut drops = DropCounters::new(2);
        drops.observe(0, 5, &mut stats);
        drops.observe(1, 3, &mut stats);
        drops.observe(0, 4, &mut stats); // backwards, ignored
        drops.observe(0, 9, &mut stats);
        assert_eq!(stats.kernel_drops, 12);
        drops.observe(1, 0x7000_0000, &mut stats);
        drops.observe(1, 0xE000_0000, &mut stats);
        let before = stats.kernel_drops;
        drops.observe(1, 1, &mut stats);
        assert_eq!(stats.kernel_drops - before, 0x2000_0001);
    }
}
