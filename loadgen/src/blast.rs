//! `blast`: paced UDP line-protocol sender using `sendmmsg`.

use crate::gen::{self, Datagram, LineSource, Precision, Synth};
use crate::util::{self, Rate};
use anyhow::{anyhow, bail, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BlastConfig {
    pub targets: Vec<SocketAddr>,
    pub threads: usize,
    pub duration: Option<Duration>,
    pub lines: Option<u64>,
    pub rate: Rate,
    pub payload: usize,
    pub corpus: Option<String>,
    pub measurements: usize,
    pub series: usize,
    pub fields: usize,
    pub precision: Precision,
    pub sources: usize,
    /// Datagrams per `sendmmsg` call.
    pub batch: usize,
    /// Scheduling niceness of the sender threads (0: unchanged). A positive
    /// value makes a sender on the SUT's host yield the CPU to the SUT, as a
    /// remote sender would never take it.
    pub nice: i32,
}

impl Default for BlastConfig {
    fn default() -> Self {
        BlastConfig {
            targets: vec![],
            threads: 1,
            duration: Some(Duration::from_secs(5)),
            lines: None,
            rate: Rate::Unlimited,
            payload: 1400,
            corpus: None,
            measurements: 4,
            series: 1000,
            fields: 4,
            precision: Precision::Ns,
            sources: 1,
            batch: 32,
            nice: 0,
        }
    }
}

/// Live counters, readable while the blast runs.
#[derive(Default, Debug)]
pub struct Progress {
    pub datagrams: AtomicU64,
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
    pub send_errors: AtomicU64,
    pub unsent_lines: AtomicU64,
    /// Next sequence number to hand out; every seq below it was either sent or counted unsent.
    pub next_seq: AtomicU64,
    pub stop: AtomicBool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BlastReport {
    pub datagrams: u64,
    pub lines: u64,
    pub bytes: u64,
    pub send_errors: u64,
    /// Lines whose datagram could not be sent (their seqs are never delivered).
    pub unsent_lines: u64,
    /// Seqs were handed out from 0 up to (not including) this.
    pub seq_end: u64,
    pub elapsed_s: f64,
    pub bytes_per_s: f64,
    pub lines_per_s: f64,
    pub datagrams_per_s: f64,
    /// User + system seconds the sender threads used, together.
    pub sender_cpu_s: f64,
}

impl BlastReport {
    pub fn print(&self) {
        println!(
            "sent {} datagrams, {} lines, {} in {:.2}s; send errors {} (unsent lines {})",
            self.datagrams,
            self.lines,
            util::fmt_bytes(self.bytes as f64),
            self.elapsed_s,
            self.send_errors,
            self.unsent_lines
        );
        println!(
            "rate: {}/s, {} lines/s, {} datagrams/s",
            util::fmt_bytes(self.bytes_per_s),
            util::fmt_count(self.lines_per_s),
            util::fmt_count(self.datagrams_per_s)
        );
    }
}

fn check_loopback(a: &SocketAddr) -> Result<()> {
    if !a.ip().is_loopback() {
        bail!("refusing to send to non-loopback address {a}");
    }
    Ok(())
}

/// Runs a blast to completion on the calling thread (spawning worker threads).
pub fn run(cfg: &BlastConfig, progress: Arc<Progress>) -> Result<BlastReport> {
    if cfg.targets.is_empty() {
        bail!("no --target given");
    }
    for t in &cfg.targets {
        check_loopback(t)?;
    }
    if cfg.duration.is_none() && cfg.lines.is_none() {
        bail!("need --duration or --lines");
    }
    if cfg.payload == 0 || cfg.payload > 65000 {
        bail!("--payload must be 1..=65000");
    }
    let mut threads = cfg.threads.max(1);
    // Prepare all datagrams before the clock starts.
    let mut pools = Vec::with_capacity(threads);
    if let Some(path) = &cfg.corpus {
        // A corpus is sent whole and in order, each line once per pass: packed
        // once, its datagrams split into one contiguous share per thread, which
        // each thread cycles through (one thread replays the file exactly).
        let pass = LineSource::corpus_pass(path, cfg.payload)?;
        threads = threads.min(pass.len());
        let per = pass.len().div_ceil(threads);
        let mut rest = pass.into_iter();
        for _ in 0..threads {
            pools.push(rest.by_ref().take(per).collect::<Vec<_>>());
        }
        pools.retain(|p| !p.is_empty());
        threads = pools.len();
    } else {
        for t in 0..threads {
            let per = (4 << 20) / cfg.payload;
            let mut count = per.clamp(16, 1024).max(cfg.batch);
            if let Some(l) = cfg.lines {
                // No point building more datagrams than lines.
                count = count.min((l as usize).max(1)).max(1);
            }
            let mut src = LineSource::Synth(Synth::new(
                cfg.measurements,
                cfg.series,
                cfg.fields,
                cfg.precision,
                0x9e37_79b9 + t as u64,
            ));
            pools.push(src.build(count, cfg.payload, t * 7919));
        }
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for (t, pool) in pools.into_iter().enumerate() {
        let cfg = cfg.clone();
        let progress = progress.clone();
        handles.push(std::thread::spawn(move || {
            let niced = match cfg.nice {
                0 => Ok(()),
                n => util::set_thread_nice(n).map_err(|e| anyhow!("sender niceness {n}: {e}")),
            };
            let sent = niced.and_then(|()| sender(t, threads, cfg, pool, progress, start));
            (sent, util::current_thread_cpu_secs().unwrap_or(0.0))
        }));
    }
    let mut sender_cpu_s = 0.0;
    for h in handles {
        match h.join() {
            Ok((sent, cpu)) => {
                sent?;
                sender_cpu_s += cpu;
            }
            Err(_) => bail!("sender thread panicked"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let p = &progress;
    let r = BlastReport {
        datagrams: p.datagrams.load(Relaxed),
        lines: p.lines.load(Relaxed),
        bytes: p.bytes.load(Relaxed),
        send_errors: p.send_errors.load(Relaxed),
        unsent_lines: p.unsent_lines.load(Relaxed),
        seq_end: cfg.lines.map_or(p.next_seq.load(Relaxed), |l| {
            l.min(p.next_seq.load(Relaxed))
        }),
        elapsed_s: elapsed,
        bytes_per_s: p.bytes.load(Relaxed) as f64 / elapsed,
        lines_per_s: p.lines.load(Relaxed) as f64 / elapsed,
        datagrams_per_s: p.datagrams.load(Relaxed) as f64 / elapsed,
        sender_cpu_s,
    };
    Ok(r)
}

fn make_socket(target: &SocketAddr) -> Result<Socket> {
    let s = Socket::new(
        Domain::for_address(*target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    let local: SocketAddr = match target.ip() {
        IpAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    s.bind(&local.into())?;
    let _ = s.set_send_buffer_size(4 << 20);
    Ok(s)
}

fn sender(
    t: usize,
    threads: usize,
    cfg: BlastConfig,
    mut pool: Vec<Datagram>,
    p: Arc<Progress>,
    start: Instant,
) -> Result<()> {
    let targets: Vec<SockAddr> = cfg.targets.iter().map(|a| SockAddr::from(*a)).collect();
    // K sockets (distinct source ports) per target so SO_REUSEPORT spreads load.
    let k = cfg.sources.max(1);
    let mut socks: Vec<Vec<Socket>> = Vec::new();
    for a in &cfg.targets {
        let mut v = Vec::new();
        for _ in 0..k {
            v.push(make_socket(a)?);
        }
        socks.push(v);
    }
    // Each thread sends its share of the rate.
    let rate = cfg.rate.scaled(1.0 / threads.max(1) as f64);
    let batch = cfg.batch.clamp(1, pool.len().max(1));
    let deadline = cfg.duration.map(|d| start + d);
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(batch);
    // SAFETY: mmsghdr is a plain C struct; all-zero is a valid (empty) value.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    // A corpus share is sent from its start, in order; synthetic pools are
    // entered at different points per thread.
    let mut cursor = if cfg.corpus.is_some() {
        0
    } else {
        t % pool.len()
    };
    let mut round = t;
    let mut next = Instant::now();
    let mut ts_digits = vec![b'0'; cfg.precision.width()];
    loop {
        if p.stop.load(Relaxed) {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        // Pick this batch's datagrams and count lines.
        let idx: Vec<usize> = (0..batch).map(|i| (cursor + i) % pool.len()).collect();
        cursor = (cursor + batch) % pool.len();
        let lines_total: u64 = idx.iter().map(|&i| pool[i].lines.len() as u64).sum();
        let first = p.next_seq.fetch_add(lines_total, Relaxed);
        let mut allow = lines_total;
        if let Some(limit) = cfg.lines {
            if first >= limit {
                break;
            }
            allow = allow.min(limit - first);
        }
        gen::write_digits(&mut ts_digits, cfg.precision.from_ns(util::now_ns()));
        // Patch and describe each datagram (truncating the last one under --lines).
        iov.clear();
        let mut lens: Vec<(usize, u64)> = Vec::with_capacity(batch);
        let mut seq = first;
        let mut left = allow;
        for &i in &idx {
            if left == 0 {
                break;
            }
            let d = &mut pool[i];
            let n = (d.lines.len() as u64).min(left) as usize;
            gen::patch(d, seq, &ts_digits, n);
            seq += n as u64;
            left -= n as u64;
            let len = d.len_for(n);
            iov.push(libc::iovec {
                iov_base: d.buf.as_mut_ptr().cast(),
                iov_len: len,
            });
            lens.push((len, n as u64));
        }
        let cnt = iov.len();
        let bytes: u64 = lens.iter().map(|l| l.0 as u64).sum();
        // Smooth pacing: each batch costs bytes or lines; sleep in small steps until due.
        let cost = match rate {
            Rate::Unlimited => 0.0,
            Rate::BytesPerSec(r) => bytes as f64 / r,
            Rate::LinesPerSec(r) => allow as f64 / r,
        };
        if cost > 0.0 {
            let lag_cap = Duration::from_millis(20);
            let now = Instant::now();
            if next + lag_cap < now {
                next = now - lag_cap;
            }
            loop {
                let now = Instant::now();
                if now >= next || p.stop.load(Relaxed) {
                    break;
                }
                std::thread::sleep((next - now).min(Duration::from_millis(2)));
            }
            next += Duration::from_secs_f64(cost);
        }
        let ti = round % targets.len();
        let sock = &socks[ti][(round / targets.len()) % k];
        round += 1;
        let sa = &targets[ti];
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_name = sa.as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = sa.len();
            m.msg_hdr.msg_iov = v as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_len = 0;
        }
        let mut off = 0;
        let mut retries = 0;
        while off < cnt {
            // SAFETY: msgs[off..cnt] are initialised mmsghdrs whose iovecs point into pool
            // buffers and whose names point into `targets`; all outlive this call.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    msgs.as_mut_ptr().add(off),
                    (cnt - off) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                off += r as usize;
                retries = 0;
                continue;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            p.send_errors.fetch_add(1, Relaxed);
            retries += 1;
            if retries > 50 {
                // Give up on the rest of this batch; its lines are accounted as unsent.
                let unsent: u64 = lens[off..].iter().map(|l| l.1).sum();
                p.unsent_lines.fetch_add(unsent, Relaxed);
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let sent_lines: u64 = lens[..off].iter().map(|l| l.1).sum();
        let sent_bytes: u64 = lens[..off].iter().map(|l| l.0 as u64).sum();
        p.datagrams.fetch_add(off as u64, Relaxed);
        p.lines.fetch_add(sent_lines, Relaxed);
        p.bytes.fetch_add(sent_bytes, Relaxed);
        let _ = bytes;
        if allow < lines_total {
            break;
        }
    }
    Ok(())
}
