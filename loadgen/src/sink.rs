//! `sink`: an InfluxDB-write-compatible HTTP/1.1 receiver that counts and checks lines.
//!
//! Hand-written keep-alive server, one thread per connection: the expected clients
//! (sluice, baseline) hold a few long-lived connections, so this is cheaper than a runtime.

use crate::gen::Precision;
use crate::http;
use crate::util;
use anyhow::Result;
use hdrhistogram::Histogram;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Open connections, so `stop()` can unblock their readers.
type Conns = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// The name of every connection thread.
pub const CONN_THREAD: &str = "lg-sink";

/// Highest seq tracked in the bitmap (256 MiB of bits per port at most).
const MAX_SEQ: u64 = 1 << 31;

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub listen: Vec<SocketAddr>,
    pub check_seq: bool,
    pub precision: Precision,
    pub delay: Duration,
    pub fail_rate: f64,
    pub down_for: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            listen: vec![],
            check_seq: true,
            precision: Precision::Ns,
            delay: Duration::ZERO,
            fail_rate: 0.0,
            down_for: Duration::ZERO,
        }
    }
}

struct SeqState {
    bits: Vec<u64>,
    unique: u64,
    duplicates: u64,
    max_seq: Option<u64>,
    hist: Histogram<u64>,
    negative_latency: u64,
}

/// Counters of one listening port.
pub struct PortState {
    pub addr: SocketAddr,
    requests: AtomicU64,
    rejected: AtomicU64,
    bytes: AtomicU64,
    decoded_bytes: AtomicU64,
    lines: AtomicU64,
    no_seq: AtomicU64,
    out_of_range: AtomicU64,
    bad_requests: AtomicU64,
    /// Wall-clock ns (`util::now_ns`) of the last accepted request's arrival.
    last_arrival_ns: AtomicU64,
    seq: Mutex<SeqState>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PortStats {
    pub addr: String,
    pub requests: u64,
    /// Requests answered 500 by fault injection (their lines are not counted).
    pub rejected: u64,
    pub bytes: u64,
    pub decoded_bytes: u64,
    pub lines: u64,
    pub unique_seq: u64,
    pub duplicates: u64,
    pub no_seq: u64,
    pub max_seq: Option<u64>,
    pub latency: Latency,
    pub negative_latency: u64,
    /// Wall-clock ns of the last accepted request's arrival (0: none yet).
    #[serde(default)]
    pub last_arrival_ns: u64,
}

impl PortState {
    fn new(addr: SocketAddr) -> Self {
        PortState {
            addr,
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            decoded_bytes: AtomicU64::new(0),
            lines: AtomicU64::new(0),
            no_seq: AtomicU64::new(0),
            out_of_range: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            last_arrival_ns: AtomicU64::new(0),
            seq: Mutex::new(SeqState {
                bits: Vec::new(),
                unique: 0,
                duplicates: 0,
                max_seq: None,
                hist: Histogram::new_with_bounds(1, 3_600_000_000_000, 2)
                    .expect("histogram bounds"),
                negative_latency: 0,
            }),
        }
    }

    pub fn lines(&self) -> u64 {
        self.lines.load(Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    pub fn stats(&self) -> PortStats {
        let s = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        let h = &s.hist;
        PortStats {
            addr: self.addr.to_string(),
            requests: self.requests.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            decoded_bytes: self.decoded_bytes.load(Relaxed),
            lines: self.lines.load(Relaxed),
            unique_seq: s.unique,
            duplicates: s.duplicates,
            no_seq: self.no_seq.load(Relaxed) + self.out_of_range.load(Relaxed),
            max_seq: s.max_seq,
            latency: Latency {
                count: h.len(),
                p50_ns: h.value_at_quantile(0.5),
                p99_ns: h.value_at_quantile(0.99),
                p999_ns: h.value_at_quantile(0.999),
                max_ns: h.max(),
            },
            negative_latency: s.negative_latency,
            last_arrival_ns: self.last_arrival_ns.load(Relaxed),
        }
    }

    /// Seqs in `[0, end)` never seen (exact, from the bitmap).
    pub fn missing_below(&self, end: u64) -> u64 {
        let s = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        let end = end.min(MAX_SEQ);
        let full = (end / 64) as usize;
        let mut seen: u64 = s
            .bits
            .iter()
            .take(full)
            .map(|w| w.count_ones() as u64)
            .sum();
        let rem = end % 64;
        if rem > 0 {
            if let Some(w) = s.bits.get(full) {
                seen += (w & ((1u64 << rem) - 1)).count_ones() as u64;
            }
        }
        end - seen
    }

    /// Merged latency histogram (for cross-port percentiles).
    pub fn histogram(&self) -> Histogram<u64> {
        self.seq
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hist
            .clone()
    }
}

/// Running sinks; stops (and joins) on `stop()` or drop.
pub struct SinkHandle {
    pub ports: Vec<Arc<PortState>>,
    stop: Arc<AtomicBool>,
    conns: Conns,
    threads: Vec<JoinHandle<()>>,
}

impl SinkHandle {
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.ports.iter().map(|p| p.addr).collect()
    }
    pub fn total_lines(&self) -> u64 {
        self.ports.iter().map(|p| p.lines()).sum()
    }
    pub fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, c)| c)
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds every listen address and serves until stopped.
pub fn start(cfg: SinkConfig) -> Result<SinkHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let conns: Conns = Arc::new(Mutex::new(HashMap::new()));
    let mut ports = Vec::new();
    let mut threads = Vec::new();
    let cfg = Arc::new(cfg);
    for a in &cfg.listen {
        if !a.ip().is_loopback() {
            anyhow::bail!("sink listens on loopback only, not {a}");
        }
        // Bind now (so the port is known and reserved) but only listen() after
        // --down-for: until then connections are refused by the kernel.
        let sock = Socket::new(Domain::for_address(*a), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.bind(&(*a).into())?;
        let local = sock
            .local_addr()?
            .as_socket()
            .ok_or_else(|| anyhow::anyhow!("no local addr"))?;
        if cfg.down_for.is_zero() {
            // Listen before returning so callers can connect at once.
            sock.listen(1024)?;
        }
        let st = Arc::new(PortState::new(local));
        ports.push(st.clone());
        let (stop2, conns2, cfg2) = (stop.clone(), conns.clone(), cfg.clone());
        threads.push(std::thread::spawn(move || {
            acceptor(sock, st, cfg2, stop2, conns2);
        }));
    }
    Ok(SinkHandle {
        ports,
        stop,
        conns,
        threads,
    })
}

fn acceptor(
    sock: Socket,
    st: Arc<PortState>,
    cfg: Arc<SinkConfig>,
    stop: Arc<AtomicBool>,
    conns: Conns,
) {
    let t0 = Instant::now();
    while t0.elapsed() < cfg.down_for {
        if stop.load(Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if sock.listen(1024).is_err() {
        return;
    }
    let l: TcpListener = sock.into();
    if l.set_nonblocking(true).is_err() {
        return;
    }
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut seed = util::now_ns() | 1;
    let mut next_id = 0u64;
    while !stop.load(Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_nodelay(true);
                next_id += 1;
                let id = next_id;
                if let Ok(c) = s.try_clone() {
                    conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, c);
                }
                let (st, cfg, stop, conns) = (st.clone(), cfg.clone(), stop.clone(), conns.clone());
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let s2 = seed;
                // Named, so `verify` can tell the sinks' CPU from the sender's.
                let spawned = util::spawn_named(CONN_THREAD, move || {
                    let _ = serve_conn(s, &st, &cfg, &stop, s2);
                    // The registry holds a clone; drop it so the peer sees the close.
                    if let Some(c) = conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                        let _ = c.shutdown(std::net::Shutdown::Both);
                    }
                });
                match spawned {
                    Ok(handle) => workers.push(handle),
                    // The stream went with the closure: the client sees a close.
                    Err(e) => eprintln!("sink: cannot start a connection thread: {e:#}"),
                }
                workers.retain(|w| !w.is_finished());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

fn serve_conn(
    s: TcpStream,
    st: &PortState,
    cfg: &SinkConfig,
    stop: &AtomicBool,
    mut rng: u64,
) -> Result<()> {
    let mut r = BufReader::with_capacity(256 * 1024, s.try_clone()?);
    let mut w = s;
    let mut body = Vec::new();
    let mut decoded = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    let mut lats: Vec<i64> = Vec::new();
    while !stop.load(Relaxed) {
        let Some(req) = http::read_request(&mut r, std::mem::take(&mut body))? else {
            break;
        };
        let close = req.close;
        if req.method == "GET" && req.path.starts_with("/stats") {
            let j = serde_json::to_vec(&st.stats())?;
            http::write_response(&mut w, 200, "application/json", &j)?;
        } else if req.method == "POST"
            && (req.path.starts_with("/write") || req.path.starts_with("/api/v2/write"))
        {
            let arrival = util::now_ns();
            st.requests.fetch_add(1, Relaxed);
            if !cfg.delay.is_zero() {
                std::thread::sleep(cfg.delay);
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if cfg.fail_rate > 0.0 && ((rng >> 11) as f64 / (1u64 << 53) as f64) < cfg.fail_rate {
                st.rejected.fetch_add(1, Relaxed);
                http::write_response(&mut w, 500, "text/plain", b"injected failure\n")?;
            } else {
                st.bytes.fetch_add(req.body.len() as u64, Relaxed);
                let data: &[u8] = if req.gzip {
                    decoded.clear();
                    if flate2::read::MultiGzDecoder::new(&req.body[..])
                        .read_to_end(&mut decoded)
                        .is_err()
                    {
                        st.bad_requests.fetch_add(1, Relaxed);
                        http::write_response(&mut w, 400, "text/plain", b"bad gzip\n")?;
                        body = req.body;
                        continue;
                    }
                    &decoded
                } else {
                    &req.body
                };
                st.decoded_bytes.fetch_add(data.len() as u64, Relaxed);
                account(st, cfg, data, arrival, &mut seqs, &mut lats);
                st.last_arrival_ns.fetch_max(arrival, Relaxed);
                http::write_response(&mut w, 204, "", b"")?;
            }
        } else {
            http::write_response(&mut w, 404, "text/plain", b"not found\n")?;
        }
        body = req.body;
        if close {
            break;
        }
    }
    Ok(())
}

/// Longest digit run taken as a seq or a timestamp (always fits a `u64`).
const DIGITS_MAX: usize = 19;

/// Where the line's timestamp starts: the line ends in a space and 1 to 19
/// digits. (The same as "everything after the last space, if it is 1 to 19
/// digits", found from the end without searching the line.)
fn timestamp_start(line: &[u8]) -> Option<usize> {
    // Trailing digits, eight at a time, then one at a time, up to one more
    // than a timestamp may have.
    let mut digits = 0;
    while digits + 8 <= DIGITS_MAX + 1 && digits + 8 <= line.len() {
        let at = line.len() - digits - 8;
        if !all_digits(load8(&line[at..at + 8])) {
            break;
        }
        digits += 8;
    }
    while digits <= DIGITS_MAX
        && digits < line.len()
        && line[line.len() - 1 - digits].is_ascii_digit()
    {
        digits += 1;
    }
    let at = line.len() - digits;
    (at > 0 && line[at - 1] == b' ' && (1..=DIGITS_MAX).contains(&digits)).then_some(at)
}

/// `blast`'s own shape, read at fixed offsets: `seq=` and `SEQ_WIDTH`
/// digits and `i`, ending right before the timestamp's space at `space`.
/// When it matches, it is the line's last `seq=` (nothing after it can hold
/// an `s`), so the answer is the one `find_seq` would give.
fn blast_seq(line: &[u8], space: usize) -> Option<u64> {
    const FIELD: usize = 4 + crate::gen::SEQ_WIDTH + 1;
    let field = line.get(space.checked_sub(FIELD)?..space)?;
    if &field[..4] != b"seq=" || field[FIELD - 1] != b'i' {
        return None;
    }
    digits_value(&field[4..FIELD - 1])
}

/// The generic form: the last `seq=` in the line, then 1 to 19 digits and `i`.
fn find_seq(finder: &memchr::memmem::FinderRev<'_>, line: &[u8]) -> Option<u64> {
    let p = finder.rfind(line)?;
    let d = &line[p + 4..];
    let len = d.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > DIGITS_MAX || d.get(len) != Some(&b'i') {
        return None;
    }
    digits_value(&d[..len])
}

/// The value of 1 to 19 ASCII digits, else `None`.
fn digits_value(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > DIGITS_MAX {
        return None;
    }
    let mut value = 0u64;
    let mut eights = digits.chunks_exact(8);
    for chunk in &mut eights {
        let x = load8(chunk);
        if !all_digits(x) {
            return None;
        }
        value = value * 100_000_000 + eight_digits(x);
    }
    eights.remainder().iter().try_fold(value, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + u64::from(b - b'0'))
    })
}

/// Eight bytes as a little-endian word: the first byte is the lowest.
fn load8(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"))
}

/// Whether all eight bytes of `x` are ASCII digits: high nibble 3, and
/// adding 6 does not carry out of the low nibble.
fn all_digits(x: u64) -> bool {
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    x & HIGH == THREES && x.wrapping_add(0x0606_0606_0606_0606) & HIGH == THREES
}

/// The value of eight ASCII digits (checked by `all_digits`), first byte
/// most significant: pairs, then fours, then the eight, by multiply and shift.
fn eight_digits(x: u64) -> u64 {
    let x = x - 0x3030_3030_3030_3030;
    let x = (x * 10 + (x >> 8)) & 0x00ff_00ff_00ff_00ff;
    let x = (x * 100 + (x >> 16)) & 0x0000_ffff_0000_ffff;
    (x * 10_000 + (x >> 32)) & 0xffff_ffff
}

/// A line's `seq=NNNi` and timestamp, as the sink reads them: `blast`'s
/// shape at fixed offsets from the timestamp, else a search for the last
/// `seq=`.
fn seq_and_timestamp(
    finder: &memchr::memmem::FinderRev<'_>,
    line: &[u8],
) -> (Option<u64>, Option<u64>) {
    let ts_start = timestamp_start(line);
    let seq = ts_start
        .and_then(|at| blast_seq(line, at - 1))
        .or_else(|| find_seq(finder, line));
    (seq, ts_start.and_then(|at| digits_value(&line[at..])))
}

/// Counts lines; with check_seq also parses `seq=NNNi` and the timestamp of each line.
fn account(
    st: &PortState,
    cfg: &SinkConfig,
    data: &[u8],
    arrival: u64,
    seqs: &mut Vec<u64>,
    lats: &mut Vec<i64>,
) {
    if !cfg.check_seq {
        let mut n = memchr::memchr_iter(b'\n', data).count() as u64;
        if data.last().is_some_and(|&b| b != b'\n') {
            n += 1;
        }
        st.lines.fetch_add(n, Relaxed);
        return;
    }
    seqs.clear();
    lats.clear();
    let finder = memchr::memmem::FinderRev::new(b"seq=");
    let mut n = 0u64;
    let mut no_seq = 0u64;
    let mut from = 0;
    while from < data.len() {
        let end = memchr::memchr(b'\n', &data[from..]).map_or(data.len(), |i| from + i);
        let line = &data[from..end];
        from = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        n += 1;
        let (seq, ts) = seq_and_timestamp(&finder, line);
        match seq {
            Some(s) => seqs.push(s),
            None => no_seq += 1,
        }
        if let Some(v) = ts {
            lats.push(arrival as i64 - cfg.precision.to_ns(v) as i64);
        }
    }
    st.lines.fetch_add(n, Relaxed);
    st.no_seq.fetch_add(no_seq, Relaxed);
    let mut g = st.seq.lock().unwrap_or_else(|e| e.into_inner());
    let g = &mut *g;
    for &s in seqs.iter() {
        if s >= MAX_SEQ {
            st.out_of_range.fetch_add(1, Relaxed);
            continue;
        }
        let w = (s / 64) as usize;
        if w >= g.bits.len() {
            let new_len = (w + 1).max(g.bits.len() * 2).min((MAX_SEQ / 64) as usize);
            g.bits.resize(new_len, 0);
        }
        let m = 1u64 << (s % 64);
        if g.bits[w] & m != 0 {
            g.duplicates += 1;
        } else {
            g.bits[w] |= m;
            g.unique += 1;
        }
        g.max_seq = Some(g.max_seq.map_or(s, |x| x.max(s)));
    }
    for &l in lats.iter() {
        if l < 0 {
            g.negative_latency += 1;
            g.hist.saturating_record(1);
        } else {
            g.hist.saturating_record(l as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The sink's first per-line reading, kept as the oracle: the last
    /// `seq=`, searched for; the timestamp after the last space.
    fn reference(line: &[u8]) -> Reading {
        let seq = memchr::memmem::find_iter(line, b"seq=")
            .last()
            .and_then(|p| {
                let d = &line[p + 4..];
                let len = d.iter().take_while(|b| b.is_ascii_digit()).count();
                if len == 0 || len > 19 || d.get(len) != Some(&b'i') {
                    return None;
                }
                std::str::from_utf8(&d[..len]).ok()?.parse::<u64>().ok()
            });
        let ts = memchr::memrchr(b' ', line).and_then(|sp| {
            let ts = &line[sp + 1..];
            (!ts.is_empty() && ts.len() <= 19 && ts.iter().all(|b| b.is_ascii_digit()))
                .then(|| std::str::from_utf8(ts).unwrap().parse::<u64>().unwrap())
        });
        (seq, ts)
    }

    /// A line's seq and timestamp, as read.
    type Reading = (Option<u64>, Option<u64>);

    fn fast(line: &[u8]) -> Reading {
        seq_and_timestamp(&memchr::memmem::FinderRev::new(b"seq="), line)
    }

    #[test]
    fn reads_blast_lines_and_odd_ones() {
        let cases: &[(&[u8], Reading)] = &[
            (
                b"cpu,host=a u=1.5,seq=000000000042i 1700000000000000000",
                (Some(42), Some(1_700_000_000_000_000_000)),
            ),
            (b"cpu u=1,seq=7i 12", (Some(7), Some(12))),
            (
                b"cpu seq=000000000001i,seq=000000000002i 5",
                (Some(2), Some(5)),
            ),
            (b"cpu seq=000000000001i", (Some(1), None)),
            (b"cpu u=1 12345678901234567890", (None, None)),
            (b"12345", (None, None)),
            (b" 12345", (None, Some(12345))),
            (b"cpu u=1 ", (None, None)),
            (b"cpu u=1 1a", (None, None)),
        ];
        for (line, want) in cases {
            assert_eq!(fast(line), *want, "{}", String::from_utf8_lossy(line));
            assert_eq!(reference(line), *want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn eight_digit_words() {
        for v in [
            0u64, 1, 9, 10, 12_345_678, 99_999_999, 10_000_000, 40_302_010,
        ] {
            let text = format!("{v:08}");
            let x = load8(text.as_bytes());
            assert!(all_digits(x), "{text}");
            assert_eq!(eight_digits(x), v, "{text}");
        }
        for text in ["1234567/", "1234567:", "a2345678", "1234 678", "\x0012345"] {
            let mut bytes = [b'0'; 8];
            bytes[..text.len().min(8)].copy_from_slice(&text.as_bytes()[..text.len().min(8)]);
            assert!(!all_digits(load8(&bytes)), "{text}");
        }
        for b in 0..=255u8 {
            let mut bytes = *b"12345678";
            bytes[5] = b;
            assert_eq!(all_digits(load8(&bytes)), b.is_ascii_digit(), "{b}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20000, ..ProptestConfig::default() })]

        /// Lines built from the bytes that matter read the same as the oracle.
        #[test]
        fn fast_reading_is_the_reference(line in proptest::collection::vec(
            prop_oneof![
                8 => prop::sample::select(&b"0123456789"[..]),
                2 => prop::sample::select(&b"seq=i ,ab"[..]),
                1 => any::<u8>(),
            ], 0..60),
            tail in prop_oneof![
                Just(Vec::new()),
                (0u64..1_000_000_000_000, 0u64..u64::MAX)
                    .prop_map(|(q, t)| format!("seq={q:012}i {t}").into_bytes()),
            ]) {
            let mut line = line;
            line.extend_from_slice(&tail);
            prop_assert_eq!(fast(&line), reference(&line));
        }
    }
}
