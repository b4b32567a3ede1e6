//! Loopback tests of both receive paths (127.0.0.1 and ::1 only).
//!
//! io_uring tests need a kernel and sandbox that allow io_uring. Where it is
//! unavailable they say so on stderr and skip, unless
//! `SLUICE_REQUIRE_IO_URING=1`, in which case they fail.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::*;

const POLL: Duration = Duration::from_millis(20);
const DEADLINE: Duration = Duration::from_secs(5);

fn v4() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn v6() -> SocketAddr {
    (Ipv6Addr::LOCALHOST, 0).into()
}

fn ipv6_available() -> bool {
    UdpSocket::bind(v6()).is_ok()
}

fn uring_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let rx = Receiver::open_inner(&config(vec![v4()], IoUringMode::Auto), false).unwrap();
        if let Some(e) = rx.io_uring_error() {
            assert!(
                std::env::var_os("SLUICE_REQUIRE_IO_URING").is_none(),
                "io_uring required but unavailable: {e}"
            );
            eprintln!("io_uring unavailable here ({e}): io_uring tests are SKIPPED");
        }
        rx.path() == RxPath::IoUring
    })
}

/// The paths to test: recvmmsg always, io_uring where this kernel has it.
fn paths() -> Vec<RxPath> {
    let mut paths = vec![RxPath::Recvmmsg];
    if uring_available() {
        paths.push(RxPath::IoUring);
    }
    paths
}

fn config(addrs: Vec<SocketAddr>, mode: IoUringMode) -> RxConfig {
    RxConfig {
        addrs,
        rcvbuf: 1 << 20,
        max_datagram_size: 2048,
        buffers: 64,
        mode,
        // Tests that time a poll want it to return at the first datagram;
        // coalescing has its own tests.
        wake_coalesce: Duration::ZERO,
        spread: None,
        steal: None,
    }
}

fn mode(path: RxPath) -> IoUringMode {
    match path {
        RxPath::IoUring => IoUringMode::On,
        RxPath::Recvmmsg => IoUringMode::Off,
    }
}

fn open(cfg: &RxConfig, path: RxPath) -> Receiver {
    let cfg = RxConfig {
        mode: mode(path),
        ..cfg.clone()
    };
    let rx = Receiver::open_inner(&cfg, false).unwrap();
    assert_eq!(rx.path(), path);
    rx
}

fn sender_for(addr: SocketAddr) -> UdpSocket {
    let bind: SocketAddr = if addr.is_ipv6() { v6() } else { v4() };
    UdpSocket::bind(bind).unwrap()
}

/// Poll until `count` datagrams have arrived (or a deadline passes).
fn collect(rx: &mut Receiver, count: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < count && Instant::now() < deadline {
        rx.poll(POLL, &mut |d: &[u8]| got.push(d.to_vec())).unwrap();
    }
    got
}

fn payload(i: usize) -> Vec<u8> {
    let len = 1 + (i * 37) % 1500;
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

#[test]
fn every_payload_arrives_byte_identical() {
    let mut addrs = vec![v4()];
    if ipv6_available() {
        addrs.push(v6());
    } else {
        eprintln!("no ::1 here: IPv6 part SKIPPED");
    }
    for path in paths() {
        for &addr in &addrs {
            let mut rx = open(&config(vec![addr], IoUringMode::Auto), path);
            let to = rx.local_addrs()[0];
            assert_eq!(to.ip(), addr.ip());
            assert_ne!(to.port(), 0);
            let tx = sender_for(to);
            let sent: Vec<Vec<u8>> = (0..300).map(payload).collect();
            for p in &sent {
                tx.send_to(p, to).unwrap();
            }
            let got = collect(&mut rx, sent.len());
            assert_eq!(got, sent, "{path:?} {addr}");
            let stats = rx.stats();
            assert_eq!(stats.datagrams, 300);
            assert_eq!(
                stats.bytes,
                sent.iter().map(|p| p.len() as u64).sum::<u64>()
            );
            assert_eq!(stats.truncated, 0);
            assert_eq!(stats.kernel_drops, 0);
        }
    }
}

#[test]
fn both_address_families_in_one_receiver() {
    if !ipv6_available() {
        eprintln!("no ::1 here: SKIPPED");
        return;
    }
    for path in paths() {
        let mut rx = open(&config(vec![v4(), v6()], IoUringMode::Auto), path);
        let addrs = rx.local_addrs();
        for (i, &to) in addrs.iter().enumerate() {
            sender_for(to).send_to(&[i as u8; 10], to).unwrap();
        }
        let mut got = collect(&mut rx, 2);
        got.sort();
        assert_eq!(got, vec![vec![0u8; 10], vec![1u8; 10]], "{path:?}");
    }
}

#[test]
fn oversized_datagram_is_counted_truncated_and_not_delivered() {
    for path in paths() {
        let cfg = RxConfig {
            max_datagram_size: 512,
            ..config(vec![v4()], IoUringMode::Auto)
        };
        let mut rx = open(&cfg, path);
        let to = rx.local_addrs()[0];
        let tx = sender_for(to);
        tx.send_to(b"before", to).unwrap();
        tx.send_to(&[b'x'; 513], to).unwrap();
        tx.send_to(&[b'y'; 512], to).unwrap();
        tx.send_to(b"after", to).unwrap();
        let got = collect(&mut rx, 3);
        assert_eq!(
            got,
            vec![b"before".to_vec(), vec![b'y'; 512], b"after".to_vec()],
            "{path:?}"
        );
        assert_eq!(rx.stats().truncated, 1, "{path:?}");
        assert_eq!(rx.stats().datagrams, 3, "{path:?}");
    }
}

#[test]
fn idle_poll_returns_zero_after_timeout() {
    for path in paths() {
        let mut rx = open(&config(vec![v4()], IoUringMode::Auto), path);
        for _ in 0..3 {
            let start = Instant::now();
            let n = rx
                .poll(Duration::from_millis(100), &mut |_: &[u8]| {
                    panic!("no traffic")
                })
                .unwrap();
            let elapsed = start.elapsed();
            assert_eq!(n, 0);
            assert!(
                elapsed >= Duration::from_millis(90),
                "{path:?} returned early: {elapsed:?}"
            );
            assert!(
                elapsed < Duration::from_millis(1000),
                "{path:?} overslept: {elapsed:?}"
            );
        }
        let start = Instant::now();
        assert_eq!(rx.poll(Duration::ZERO, &mut |_: &[u8]| {}).unwrap(), 0);
        assert!(start.elapsed() < Duration::from_millis(100));
        // Still receives after idle polls (no stale timeouts in the way).
        let to = rx.local_addrs()[0];
        sender_for(to).send_to(b"late", to).unwrap();
        assert_eq!(collect(&mut rx, 1), vec![b"late".to_vec()]);
        // The multishot receive stayed armed across idle polls.
        assert_eq!(rx.stats().rearms, 0, "{path:?}");
        assert_eq!(rx.stats().enobufs, 0, "{path:?}");
    }
}

#[test]
fn two_receivers_share_a_port_with_reuseport() {
    let mut pairs: Vec<(RxPath, RxPath)> = paths().iter().map(|&p| (p, p)).collect();
    if uring_available() {
        pairs.push((RxPath::IoUring, RxPath::Recvmmsg));
    }
    for (first, second) in pairs {
        let cfg = config(vec![v4()], IoUringMode::Auto);
        let mut a = open(&cfg, first);
        let mut b = open(&config(a.local_addrs(), IoUringMode::Auto), second);
        assert_eq!(a.local_addrs(), b.local_addrs());
        let to = a.local_addrs()[0];
        let mut sent = Vec::new();
        for source in 0..32u8 {
            let tx = sender_for(to);
            for i in 0..4u8 {
                let p = vec![source, i, 0xAB];
                tx.send_to(&p, to).unwrap();
                sent.push(p);
            }
        }
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + DEADLINE;
        while got_a.len() + got_b.len() < sent.len() && Instant::now() < deadline {
            a.poll(POLL, &mut |d: &[u8]| got_a.push(d.to_vec()))
                .unwrap();
            b.poll(POLL, &mut |d: &[u8]| got_b.push(d.to_vec()))
                .unwrap();
        }
        assert!(
            !got_a.is_empty() && !got_b.is_empty(),
            "{first:?}/{second:?}: one receiver got nothing"
        );
        let mut got: Vec<Vec<u8>> = got_a.into_iter().chain(got_b).collect();
        got.sort();
        sent.sort();
        assert_eq!(got, sent, "{first:?}/{second:?}");
    }
}

#[test]
fn forced_uring_failure_falls_back_in_auto_and_errors_in_on() {
    assert!(force_flag(Some("1".as_ref())));
    assert!(!force_flag(Some("0".as_ref())));
    assert!(!force_flag(None));

    let mut rx = Receiver::open_inner(&config(vec![v4()], IoUringMode::Auto), true).unwrap();
    assert_eq!(rx.path(), RxPath::Recvmmsg);
    assert_eq!(
        rx.io_uring_error().and_then(|e| e.raw_os_error()),
        Some(libc::EPERM)
    );
    let to = rx.local_addrs()[0];
    sender_for(to).send_to(b"fallback", to).unwrap();
    assert_eq!(collect(&mut rx, 1), vec![b"fallback".to_vec()]);

    match Receiver::open_inner(&config(vec![v4()], IoUringMode::On), true) {
        Err(Error::IoUringUnavailable(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
        Err(e) => panic!("wrong error: {e}"),
        Ok(rx) => panic!("opened on {:?}", rx.path()),
    }
    let rx = Receiver::open_inner(&config(vec![v4()], IoUringMode::Off), true).unwrap();
    assert_eq!(rx.path(), RxPath::Recvmmsg);
    assert!(rx.io_uring_error().is_none());
}

#[test]
fn kernel_drops_are_counted() {
    for path in paths() {
        let cfg = RxConfig {
            rcvbuf: 1, // the kernel raises this to its minimum (a few KiB)
            ..config(vec![v4()], IoUringMode::Auto)
        };
        let mut rx = open(&cfg, path);
        assert!(rx.effective_rcvbuf() < 64 * 1024);
        let to = rx.local_addrs()[0];
        let tx = sender_for(to);
        for _ in 0..200 {
            tx.send_to(&[b'd'; 1000], to).unwrap();
        }
        // Drain what fit. The counter is read at every poll, so it is
        // current without any datagram arriving after the drops.
        let deadline = Instant::now() + DEADLINE;
        while rx.stats().datagrams + rx.stats().kernel_drops < 200 && Instant::now() < deadline {
            rx.poll(POLL, &mut |_: &[u8]| {}).unwrap();
        }
        let stats = rx.stats();
        assert!(stats.kernel_drops > 0, "{path:?}: {stats:?}");
        assert_eq!(
            stats.datagrams + stats.kernel_drops,
            200,
            "{path:?}: {stats:?}"
        );
    }
}

#[test]
fn uring_small_ring_counts_enobufs_and_keeps_working_after_rearm() {
    if !uring_available() {
        return;
    }
    let cfg = RxConfig {
        buffers: 3, // rounded up to 4
        ..config(vec![v4()], IoUringMode::On)
    };
    let mut rx = open(&cfg, RxPath::IoUring);
    let to = rx.local_addrs()[0];
    let tx = sender_for(to);
    let sent: Vec<Vec<u8>> = (0..100).map(payload).collect();
    for p in &sent {
        tx.send_to(p, to).unwrap();
    }
    let got = collect(&mut rx, sent.len());
    assert_eq!(got, sent);
    let stats = rx.stats();
    assert!(stats.enobufs > 0, "{stats:?}");
    assert!(stats.rearms >= stats.enobufs, "{stats:?}");
    assert_eq!(stats.kernel_drops, 0);
    for i in 0..10u8 {
        tx.send_to(&[i; 64], to).unwrap();
    }
    let got = collect(&mut rx, 10);
    assert_eq!(got, (0..10u8).map(|i| vec![i; 64]).collect::<Vec<_>>());
}

#[test]
fn largest_udp_datagram_arrives_whole() {
    for path in paths() {
        let cfg = RxConfig {
            max_datagram_size: 65535,
            buffers: 8,
            ..config(vec![v4()], IoUringMode::Auto)
        };
        let mut rx = open(&cfg, path);
        let to = rx.local_addrs()[0];
        let big: Vec<u8> = (0..65507).map(|i| (i % 251) as u8).collect();
        sender_for(to).send_to(&big, to).unwrap();
        let got = collect(&mut rx, 1);
        assert_eq!(got.len(), 1, "{path:?}");
        assert!(got[0] == big, "{path:?}: payload differs");
        assert_eq!(rx.stats().truncated, 0);
    }
}

#[test]
fn backlog_is_what_waited_at_the_wake_and_its_high_water_stays() {
    for path in paths() {
        let mut rx = open(&config(vec![v4()], IoUringMode::Auto), path);
        let to = rx.local_addrs()[0];
        let tx = sender_for(to);
        // More than the ring's 64 buffers, all queued before the first poll.
        for _ in 0..200 {
            tx.send_to(&[b'd'; 1000], to).unwrap();
        }
        let mut got = 0;
        got += rx.poll(POLL, &mut |_: &[u8]| {}).unwrap();
        let first = rx.stats();
        assert!(
            first.backlog_bytes >= 1000,
            "{path:?}: datagrams waited, yet {first:?}"
        );
        assert!(
            first.backlog_max_bytes >= first.backlog_bytes,
            "{path:?}: {first:?}"
        );
        let deadline = Instant::now() + DEADLINE;
        while got < 200 && Instant::now() < deadline {
            got += rx.poll(POLL, &mut |_: &[u8]| {}).unwrap();
        }
        assert_eq!(got, 200, "{path:?}");
        // Nothing waits now; the high-water mark remembers the first wake.
        rx.poll(POLL, &mut |_: &[u8]| {}).unwrap();
        let idle = rx.stats();
        assert_eq!(idle.backlog_bytes, 0, "{path:?}: {idle:?}");
        assert_eq!(idle.backlog_max_bytes, first.backlog_max_bytes, "{path:?}");
    }
}

#[test]
fn effective_rcvbuf_is_read_back() {
    let cfg = RxConfig {
        rcvbuf: 256 * 1024,
        ..config(vec![v4()], IoUringMode::Off)
    };
    let rx = open(&cfg, RxPath::Recvmmsg);
    // Linux doubles the request (rmem_max permitting).
    assert!(
        rx.effective_rcvbuf() >= 256 * 1024,
        "{}",
        rx.effective_rcvbuf()
    );
}

/// Whether this process holds CAP_NET_ADMIN (bit 12 of `CapEff`).
fn has_net_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

#[test]
fn rcvbuf_above_rmem_max_is_forced_with_net_admin() {
    let Some(rmem_max) = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    else {
        eprintln!("no /proc/sys/net/core/rmem_max: SKIPPED");
        return;
    };
    let requested = rmem_max + (1 << 20);
    let cfg = RxConfig {
        rcvbuf: requested,
        ..config(vec![v4()], IoUringMode::Off)
    };
    let effective = open(&cfg, RxPath::Recvmmsg).effective_rcvbuf();
    if has_net_admin() {
        // SO_RCVBUFFORCE: the request, doubled, past the cap.
        assert!(
            effective / 2 >= requested,
            "{effective} (requested {requested})"
        );
    } else {
        // No capability: the cap stands (and the app warns).
        assert!(effective <= 2 * rmem_max, "{effective} (cap {rmem_max})");
    }
}

#[test]
fn receiver_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Receiver>();
}

#[test]
fn drop_with_traffic_in_flight_is_prompt() {
    for path in paths() {
        let mut rx = open(&config(vec![v4()], IoUringMode::Auto), path);
        let to = rx.local_addrs()[0];
        let tx = sender_for(to);
        for i in 0..50 {
            tx.send_to(&payload(i), to).unwrap();
        }
        rx.poll(POLL, &mut |_: &[u8]| {}).unwrap();
        for i in 0..50 {
            tx.send_to(&payload(i), to).unwrap();
        }
        let start = Instant::now();
        drop(rx);
        assert!(start.elapsed() < Duration::from_secs(1), "{path:?}");
    }
}

#[test]
fn ring_entries_round_up_to_a_power_of_two() {
    assert_eq!(uring::ring_entries(0), 1);
    assert_eq!(uring::ring_entries(3), 4);
    assert_eq!(uring::ring_entries(4096), 4096);
    assert_eq!(uring::ring_entries(1 << 20), 32768);
}

/// Runs the real `Receiver::open` under `SLUICE_FORCE_IO_URING_FAILURE=1` in
/// a child process (this test binary again), so the process-global variable
/// never leaks into tests running in parallel.
#[test]
fn env_hook_forces_fallback_in_a_child_process() {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rx::tests::env_hook_child", "--test-threads=1"])
        .env(FORCE_IO_URING_FAILURE_ENV, "1")
        .status()
        .unwrap();
    assert!(status.success());
}

/// Does its checks only when the hook is set (i.e. in the child above).
#[test]
fn env_hook_child() {
    if std::env::var_os(FORCE_IO_URING_FAILURE_ENV).is_none() {
        return;
    }
    let rx = Receiver::open(&config(vec![v4()], IoUringMode::Auto)).unwrap();
    assert_eq!(rx.path(), RxPath::Recvmmsg);
    assert!(matches!(
        Receiver::open(&config(vec![v4()], IoUringMode::On)),
        Err(Error::IoUringUnavailable(_))
    ));
}

/// `wake_coalesce`: under a steady trickle a receiver wakes about once per
/// interval and takes what gathered as one batch; nothing is lost or
/// reordered; without it, it wakes for (nearly) every datagram.
#[test]
fn wake_coalesce_batches_a_steady_stream() {
    const SENT: usize = 300;
    for path in paths() {
        let mut batches = Vec::new();
        for coalesce in [Duration::from_millis(20), Duration::ZERO] {
            let cfg = RxConfig {
                wake_coalesce: coalesce,
                ..config(vec![v4()], IoUringMode::Auto)
            };
            let mut rx = open(&cfg, path);
            let to = rx.local_addrs()[0];
            let sender = std::thread::spawn(move || {
                let tx = sender_for(to);
                for i in 0..SENT {
                    tx.send_to(&payload(i), to).unwrap();
                    // ≥ 300 ms in all: at least 15 intervals of 20 ms.
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            let got = collect(&mut rx, SENT);
            sender.join().unwrap();
            assert_eq!(got, (0..SENT).map(payload).collect::<Vec<_>>(), "{path:?}");
            let stats = rx.stats();
            assert_eq!(stats.datagrams, SENT as u64);
            batches.push(stats.batches);
        }
        let (coalesced, eager) = (batches[0], batches[1]);
        eprintln!("{path:?}: {coalesced} batches with 20 ms, {eager} without");
        assert!(
            (1..=40).contains(&coalesced),
            "{path:?}: {coalesced} wake-ups for {SENT} datagrams over ≥ 300 ms at 20 ms"
        );
        assert!(
            eager >= 60,
            "{path:?}: only {eager} wake-ups without coalescing"
        );
    }
}

/// After an idle spell longer than the interval, the first datagram is
/// handled at once: coalescing delays only datagrams that follow a wake-up.
#[test]
fn wake_coalesce_does_not_delay_the_first_datagram_after_idle() {
    for path in paths() {
        let cfg = RxConfig {
            wake_coalesce: Duration::from_millis(300),
            ..config(vec![v4()], IoUringMode::Auto)
        };
        let mut rx = open(&cfg, path);
        let to = rx.local_addrs()[0];
        let tx = sender_for(to);
        // A first wake-up that found a datagram and caught up...
        tx.send_to(b"first", to).unwrap();
        assert_eq!(collect(&mut rx, 1), vec![b"first".to_vec()], "{path:?}");
        // ... then an idle spell longer than the interval, the receiver
        // waiting throughout, and one datagram.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let sent_at = Instant::now();
            tx.send_to(b"second", to).unwrap();
            sent_at
        });
        let mut got = Vec::new();
        let mut arrived = None;
        let deadline = Instant::now() + DEADLINE;
        while got.is_empty() && Instant::now() < deadline {
            rx.poll(Duration::from_secs(2), &mut |d: &[u8]| got.push(d.to_vec()))
                .unwrap();
            if !got.is_empty() {
                arrived = Some(Instant::now());
            }
        }
        let sent_at = sender.join().unwrap();
        assert_eq!(got, vec![b"second".to_vec()], "{path:?}");
        let waited = arrived.unwrap().saturating_duration_since(sent_at);
        assert!(
            waited < Duration::from_millis(150),
            "{path:?}: the first datagram after idle waited {waited:?} (interval 300 ms)"
        );
    }
}

/// The caller's timeout bounds a poll even when it is shorter than the
/// coalescing interval, idle or right after a batch (the shard's timers for
/// sealing chunks depend on it).
#[test]
fn wake_coalesce_never_outlasts_the_poll_timeout() {
    for path in paths() {
        let cfg = RxConfig {
            wake_coalesce: Duration::from_millis(100),
            ..config(vec![v4()], IoUringMode::Auto)
        };
        let mut rx = open(&cfg, path);
        let to = rx.local_addrs()[0];
        let tx = sender_for(to);
        for _ in 0..3 {
            let start = Instant::now();
            let n = rx
                .poll(Duration::from_millis(10), &mut |_: &[u8]| {})
                .unwrap();
            assert_eq!(n, 0, "{path:?}");
            let idle = start.elapsed();
            assert!(
                idle < Duration::from_millis(60),
                "{path:?}: idle poll took {idle:?}"
            );
        }
        // Right after a caught-up batch: the next poll still ends by its timeout.
        tx.send_to(b"x", to).unwrap();
        assert_eq!(collect(&mut rx, 1).len(), 1, "{path:?}");
        let start = Instant::now();
        rx.poll(Duration::from_millis(10), &mut |_: &[u8]| {})
            .unwrap();
        let after = start.elapsed();
        assert!(
            after < Duration::from_millis(60),
            "{path:?}: poll after a batch took {after:?}"
        );
    }
}

/// `spread` (`listen.balance = "datagram"`): one source's datagrams spread
/// over every socket of the group at random; with the flow hash they all
/// land on one.
#[test]
fn balance_datagram_spreads_one_source_over_the_group() {
    const SENT: usize = 400;
    for spread in [Some(2), None] {
        let first_cfg = RxConfig {
            spread,
            ..config(vec![v4()], IoUringMode::Off)
        };
        let mut first = open(&first_cfg, RxPath::Recvmmsg);
        let to = first.local_addrs()[0];
        let second_cfg = RxConfig {
            addrs: vec![to],
            ..first_cfg.clone()
        };
        let mut second = open(&second_cfg, RxPath::Recvmmsg);
        let tx = sender_for(to);
        for i in 0..SENT {
            tx.send_to(&payload(i), to).unwrap();
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let (mut a, mut b) = (0usize, 0usize);
        let deadline = Instant::now() + DEADLINE;
        while a + b < SENT && Instant::now() < deadline {
            a += first.poll(POLL, &mut |_: &[u8]| {}).unwrap();
            b += second.poll(POLL, &mut |_: &[u8]| {}).unwrap();
        }
        assert_eq!(a + b, SENT, "{spread:?}");
        match spread {
            // Binomial(400, 1/2): below 120 on either side is ~1e-16.
            Some(_) => assert!(a >= 120 && b >= 120, "{spread:?}: {a} / {b}"),
            None => assert!(a == 0 || b == 0, "{spread:?}: {a} / {b}"),
        }
    }
}

/// Two receivers of one `SO_REUSEPORT` group with `steal` on, bound to one
/// port, and a sender whose one flow the kernel hashes to one of them.
struct StealPair {
    rx: [Receiver; 2],
    to: SocketAddr,
    tx: UdpSocket,
}

impl StealPair {
    fn open(path: RxPath) -> StealPair {
        let siblings = Siblings::new(2);
        let first_cfg = RxConfig {
            steal: Some((siblings.clone(), 0)),
            ..config(vec![v4()], mode(path))
        };
        let first = open(&first_cfg, path);
        let to = first.local_addrs()[0];
        let second_cfg = RxConfig {
            addrs: vec![to],
            steal: Some((siblings, 1)),
            ..first_cfg
        };
        let second = open(&second_cfg, path);
        StealPair {
            rx: [first, second],
            to,
            tx: sender_for(to),
        }
    }

    /// Bytes the kernel holds in receiver `i`'s socket queue.
    fn queued(&self, i: usize) -> u64 {
        use std::os::fd::AsRawFd;
        let fd = self.rx[i].sockets.sockets[0].as_raw_fd();
        u64::from(socket::socket_meminfo(fd).expect("SO_MEMINFO").1)
    }

    /// Send `payload(i)` for `range` and wait until the kernel has queued
    /// them; returns which receiver's socket holds them.
    fn send(&self, range: std::ops::Range<usize>) -> usize {
        let before = [self.queued(0), self.queued(1)];
        for i in range {
            self.tx.send_to(&payload(i), self.to).unwrap();
        }
        // Loopback delivers within the send call; the queue is final.
        let after = [self.queued(0), self.queued(1)];
        assert!(
            after[0] == before[0] || after[1] == before[1],
            "one flow landed on both sockets: {before:?} -> {after:?}"
        );
        usize::from(after[1] > before[1])
    }
}

/// `steal`: a receiver with nothing of its own takes a sibling's datagrams
/// once the sibling's queue is past the threshold (a sixteenth of the
/// socket's drop point), byte-identical and in queue order; below it,
/// nothing is taken.
#[test]
fn a_caught_up_receiver_steals_from_a_sibling_that_is_behind() {
    for path in paths() {
        let mut pair = StealPair::open(path);
        let threshold = steal_threshold(pair.rx[0].effective_rcvbuf());
        // A few datagrams, well under the threshold: the idle one leaves them.
        let busy = pair.send(0..5);
        let idle = 1 - busy;
        for _ in 0..3 {
            let got = pair.rx[idle].poll(Duration::from_millis(5), &mut |_: &[u8]| {});
            assert_eq!(got.unwrap(), 0, "{path:?}: stole below the threshold");
        }
        assert_eq!(collect(&mut pair.rx[busy], 5).len(), 5, "{path:?}");
        // Now push the busy one's queue past twice the threshold.
        let mut sent = 5;
        while pair.queued(busy) < 2 * threshold {
            assert_eq!(pair.send(sent..sent + 10), busy, "{path:?}");
            sent += 10;
            assert!(sent < 5_000, "{path:?}: queue never reached {threshold}");
        }
        let stolen = collect(&mut pair.rx[idle], sent - 5);
        assert_eq!(stolen.len(), sent - 5, "{path:?}");
        for (k, datagram) in stolen.iter().enumerate() {
            assert_eq!(datagram, &payload(5 + k), "{path:?}: datagram {k}");
        }
        let stats = pair.rx[idle].stats();
        assert_eq!(stats.stolen, (sent - 5) as u64, "{path:?}: {stats:?}");
        assert_eq!(stats.datagrams, (sent - 5) as u64, "{path:?}: {stats:?}");
        assert_eq!(pair.queued(busy), 0, "{path:?}");
        let owner = pair.rx[busy].poll(Duration::from_millis(5), &mut |_: &[u8]| {});
        assert_eq!(owner.unwrap(), 0, "{path:?}");
        assert_eq!(pair.rx[busy].stats().kernel_drops, 0, "{path:?}");
        assert_eq!(pair.rx[busy].stats().stolen, 0, "{path:?}");
    }
}

/// A receiver that dropped has withdrawn its sockets: its sibling neither
/// reads them nor fails, and a group of one steals nothing.
#[test]
fn a_dropped_receiver_leaves_the_group() {
    for path in paths() {
        let StealPair { rx, to, tx } = StealPair::open(path);
        let [first, mut second] = rx;
        drop(first);
        for i in 0..20 {
            tx.send_to(&payload(i), to).unwrap();
        }
        // The group now has one socket bound: everything lands there.
        assert_eq!(collect(&mut second, 20).len(), 20, "{path:?}");
        assert_eq!(second.stats().stolen, 0, "{path:?}");
    }
    let lonely = RxConfig {
        steal: Some((Siblings::new(1), 0)),
        ..config(vec![v4()], IoUringMode::Off)
    };
    assert!(open(&lonely, RxPath::Recvmmsg).helper.is_none());
}
