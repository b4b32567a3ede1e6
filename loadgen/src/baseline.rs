//! `baseline`: the bare relay sluice is measured against. No parsing: `recvmmsg` raw
//! payloads into ~1 MiB buffers, and POST each buffer (shared via `Arc`, never copied per
//! sink) to every sink over keep-alive HTTP/1.1.

use crate::http::{self, Client};
use crate::util;
use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BaselineConfig {
    pub listen: SocketAddr,
    pub sinks: Vec<String>,
    pub admin: SocketAddr,
    /// Receiver threads; 0 = one per core.
    pub threads: usize,
    pub batch_bytes: usize,
    pub batch_age: Duration,
    pub connections: usize,
    pub rcvbuf: usize,
    /// sluice's `listen.wake_coalesce`, the same rule: after a wake-up that
    /// found datagrams and caught up, the next receive waits until this
    /// long has passed since it. So both relays wake as often.
    pub wake_coalesce: Duration,
    /// sluice's `listen.balance = "datagram"`: each datagram to a receiver
    /// at random instead of the kernel's flow hash.
    pub spread_datagrams: bool,
    /// sluice's `listen.nice`: the receiver threads' niceness (0: unchanged).
    pub nice: i32,
    /// Hard upper bound on run time; SIGTERM ends it earlier.
    pub max_runtime: Duration,
}

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Relaxed);
}

/// SIGTERM/SIGINT set a flag polled by the bounded main loops.
pub fn install_term_handler() {
    // SAFETY: installing an async-signal-safe handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }
}

pub fn terminated() -> bool {
    TERM.load(Relaxed)
}

#[derive(Default)]
struct SinkMetrics {
    lines: AtomicU64,
    bytes: AtomicU64,
    requests: AtomicU64,
    gave_up: AtomicU64,
}

#[derive(Default)]
struct Metrics {
    datagrams: AtomicU64,
    bytes: AtomicU64,
    lines: AtomicU64,
    truncated: AtomicU64,
    sinks: Vec<SinkMetrics>,
}

struct Batch {
    data: Vec<u8>,
    lines: u64,
}

const RECV_BATCH: usize = 32;
const DGRAM_MAX: usize = 65536;

pub fn run(cfg: BaselineConfig) -> Result<()> {
    if !cfg.listen.ip().is_loopback() || !cfg.admin.ip().is_loopback() {
        bail!("baseline listens on loopback only");
    }
    let urls: Vec<http::Url> = cfg
        .sinks
        .iter()
        .map(|u| http::parse_url(u))
        .collect::<Result<_>>()?;
    if urls.is_empty() {
        bail!("need at least one --sink");
    }
    install_term_handler();
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.threads
    };
    // All shards share one port via SO_REUSEPORT; the first bind resolves port 0.
    let mut socks = Vec::new();
    let mut addr = cfg.listen;
    for _ in 0..threads {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        set_recv_buffer(&s, cfg.rcvbuf);
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        s.bind(&addr.into())
            .with_context(|| format!("bind {addr}"))?;
        if cfg.spread_datagrams {
            spread_at_random(&s, threads).context("attach the reuseport program")?;
        }
        addr = s.local_addr()?.as_socket().context("udp local addr")?;
        socks.push(s);
    }
    let metrics = Arc::new(Metrics {
        sinks: urls.iter().map(|_| SinkMetrics::default()).collect(),
        ..Default::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let admin = TcpListener::bind(cfg.admin).context("bind admin")?;
    let admin_addr = admin.local_addr()?;
    admin.set_nonblocking(true)?;
    let port = addr.port();
    let admin_t = {
        let (m, stop) = (metrics.clone(), stop.clone());
        util::spawn_named("bl-admin", move || admin_loop(admin, m, stop, port))?
    };
    // Writer threads per sink, fed by a bounded channel of shared buffers.
    let mut txs: Vec<SyncSender<Arc<Batch>>> = Vec::new();
    let mut writers = Vec::new();
    for (i, u) in urls.iter().enumerate() {
        let (tx, rx) = sync_channel::<Arc<Batch>>(64);
        let rx = Arc::new(Mutex::new(rx));
        txs.push(tx);
        for _ in 0..cfg.connections.max(1) {
            let (rx, m, u) = (rx.clone(), metrics.clone(), u.clone());
            writers.push(util::spawn_named(&format!("bl-writer-{i}"), move || {
                writer(i, u, rx, m)
            })?);
        }
    }
    let mut receivers = Vec::new();
    for (r, s) in socks.into_iter().enumerate() {
        let (txs, m, stop, c) = (txs.clone(), metrics.clone(), stop.clone(), cfg.clone());
        receivers.push(util::spawn_named(&format!("bl-recv-{r}"), move || {
            receiver(s, txs, m, stop, c)
        })?);
    }
    drop(txs);
    println!("listening udp={addr} admin={admin_addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let t0 = Instant::now();
    while !terminated() && t0.elapsed() < cfg.max_runtime {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Stop receiving, flush partial buffers, let writers drain, then exit.
    stop.store(true, Relaxed);
    for r in receivers {
        let _ = r.join();
    }
    for w in writers {
        let _ = w.join();
    }
    let _ = admin_t.join();
    Ok(())
}

fn receiver(
    s: Socket,
    txs: Vec<SyncSender<Arc<Batch>>>,
    m: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    cfg: BaselineConfig,
) {
    if cfg.nice != 0 {
        if let Err(e) = util::set_thread_nice(cfg.nice) {
            eprintln!(
                "baseline: receiver niceness {}: {e}; running at the default",
                cfg.nice
            );
        }
    }
    let mut bufs = vec![0u8; RECV_BATCH * DGRAM_MAX];
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(RECV_BATCH);
    // SAFETY: mmsghdr is a plain C struct; all-zero is a valid (empty) value.
    let mut msgs: Vec<libc::mmsghdr> = (0..RECV_BATCH)
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    let mut out = Vec::with_capacity(cfg.batch_bytes + DGRAM_MAX);
    let mut out_lines = 0u64;
    let mut born = Instant::now();
    let mut caught_up_at: Option<Instant> = None;
    let flush = |out: &mut Vec<u8>, lines: &mut u64| {
        if out.is_empty() {
            return;
        }
        let b = Arc::new(Batch {
            data: std::mem::replace(out, Vec::with_capacity(cfg.batch_bytes + DGRAM_MAX)),
            lines: *lines,
        });
        *lines = 0;
        for tx in &txs {
            // Blocking send: backpressure instead of dropping inside the relay.
            let _ = tx.send(b.clone());
        }
    };
    loop {
        iov.clear();
        for chunk in bufs.chunks_mut(DGRAM_MAX) {
            iov.push(libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: DGRAM_MAX,
            });
        }
        for (msg, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            msg.msg_hdr.msg_iov = v as *mut libc::iovec;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        if let Some(at) = caught_up_at.take() {
            let pause = cfg.wake_coalesce.saturating_sub(at.elapsed());
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        // SAFETY: msgs/iov point into `bufs`, which outlives the call; counts match.
        let n = unsafe {
            libc::recvmmsg(
                s.as_raw_fd(),
                msgs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 && (n as usize) < RECV_BATCH && !cfg.wake_coalesce.is_zero() {
            caught_up_at = Some(Instant::now());
        }
        if n > 0 {
            let mut bytes = 0u64;
            for (i, msg) in msgs.iter().take(n as usize).enumerate() {
                let len = msg.msg_len as usize;
                if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    m.truncated.fetch_add(1, Relaxed);
                    continue;
                }
                let d = &bufs[i * DGRAM_MAX..i * DGRAM_MAX + len];
                bytes += len as u64;
                if out.is_empty() {
                    born = Instant::now();
                }
                out.extend_from_slice(d);
                let mut l = memchr::memchr_iter(b'\n', d).count() as u64;
                if d.last().is_some_and(|&b| b != b'\n') {
                    out.push(b'\n');
                    l += 1;
                }
                out_lines += l;
                m.lines.fetch_add(l, Relaxed);
            }
            m.datagrams.fetch_add(n as u64, Relaxed);
            m.bytes.fetch_add(bytes, Relaxed);
        }
        if out.len() >= cfg.batch_bytes || (!out.is_empty() && born.elapsed() >= cfg.batch_age) {
            flush(&mut out, &mut out_lines);
        }
        if n <= 0 && stop.load(Relaxed) {
            flush(&mut out, &mut out_lines);
            return;
        }
    }
}

fn writer(i: usize, url: http::Url, rx: Arc<Mutex<Receiver<Arc<Batch>>>>, m: Arc<Metrics>) {
    let mut c = Client::new(url, Duration::from_secs(10));
    loop {
        let b = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(b) => b,
            Err(_) => return,
        };
        let sm = &m.sinks[i];
        let mut ok = false;
        // Bounded retries with backoff; then the batch is counted as given up.
        for attempt in 0..8u32 {
            match c.post(&b.data) {
                Ok(st) if (200..300).contains(&st) => {
                    ok = true;
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(25 << attempt.min(4))),
            }
        }
        if ok {
            sm.lines.fetch_add(b.lines, Relaxed);
            sm.bytes.fetch_add(b.data.len() as u64, Relaxed);
            sm.requests.fetch_add(1, Relaxed);
        } else {
            sm.gave_up.fetch_add(b.lines, Relaxed);
        }
    }
}

fn render(m: &Metrics, port: u16) -> String {
    let mut s = String::new();
    let mut c = |name: &str, labels: &str, v: u64| {
        let _ = writeln!(s, "# TYPE {name} counter\n{name}{labels} {v}");
    };
    c(
        "sluice_received_datagrams_total",
        "",
        m.datagrams.load(Relaxed),
    );
    c("sluice_received_bytes_total", "", m.bytes.load(Relaxed));
    c("sluice_received_lines_total", "", m.lines.load(Relaxed));
    c(
        "sluice_dropped_datagrams_total",
        "{reason=\"truncated\"}",
        m.truncated.load(Relaxed),
    );
    // Per-socket kernel drops for our port, from /proc/net/udp.
    c(
        "sluice_kernel_drops_total",
        "",
        crate::util::udp_socket_drops(port),
    );
    for (i, sm) in m.sinks.iter().enumerate() {
        let l = format!("{{sink=\"s{i}\"}}");
        c("sluice_sink_lines_total", &l, sm.lines.load(Relaxed));
        c("sluice_sink_bytes_total", &l, sm.bytes.load(Relaxed));
        c("sluice_sink_requests_total", &l, sm.requests.load(Relaxed));
        c(
            "sluice_sink_dropped_lines_total",
            &format!("{{sink=\"s{i}\",reason=\"sink_gave_up\"}}"),
            sm.gave_up.load(Relaxed),
        );
    }
    s
}

fn admin_loop(l: TcpListener, m: Arc<Metrics>, stop: Arc<AtomicBool>, port: u16) {
    while !stop.load(Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut r = std::io::BufReader::new(&s);
                if let Ok(Some(req)) = http::read_request(&mut r, Vec::new()) {
                    let mut w = &s;
                    let _ = match req.path.as_str() {
                        "/readyz" | "/healthz" => {
                            http::write_response(&mut w, 200, "text/plain", b"ok\n")
                        }
                        "/metrics" => http::write_response(
                            &mut w,
                            200,
                            "text/plain; version=0.0.4",
                            render(&m, port).as_bytes(),
                        ),
                        _ => http::write_response(&mut w, 404, "text/plain", b"not found\n"),
                    };
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The same program sluice attaches for `listen.balance = "datagram"`
/// (`rx/socket.rs`, kept separate like `set_recv_buffer`): the reuseport
/// group picks `random() % group` for each datagram.
fn spread_at_random(socket: &Socket, group: usize) -> std::io::Result<()> {
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let insn = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut program = [
        insn(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
        ),
        insn(
            libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K,
            group.max(1) as u32,
        ),
        insn(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the
    // kernel copies the program.
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

/// The same receive buffer sluice asks for: `SO_RCVBUF`, then `SO_RCVBUFFORCE`
/// where `net.core.rmem_max` capped it and the process has `CAP_NET_ADMIN`, so
/// that both relays always get equal buffers. Best effort, as before.
fn set_recv_buffer(socket: &Socket, rcvbuf: usize) {
    let _ = socket.set_recv_buffer_size(rcvbuf);
    let capped = socket.recv_buffer_size().is_ok_and(|got| got / 2 < rcvbuf);
    if let (true, Ok(value)) = (capped, libc::c_int::try_from(rcvbuf)) {
        // SAFETY: the socket is open; the value pointer and length describe
        // `value`, which outlives the call. An EPERM leaves the capped size.
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
}
