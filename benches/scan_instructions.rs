//! A fixed amount of scanner work for counting instructions, which (unlike
//! time) does not depend on the machine's neighbours:
//!
//! ```sh
//! cargo bench --bench scan_instructions --no-run
//! valgrind --tool=callgrind target/release/deps/scan_instructions-<hash>
//! ```
//!
//! It builds 1 MiB of `sluice-loadgen`-shaped lines (≈148 bytes, 5 fields,
//! ns timestamps), cuts it into 1400-byte datagrams at line boundaries and
//! runs `parse::Scanner::lines` (the shards' path) over it 20 times. Under `cargo bench` it simply runs
//! once and prints what it scanned.
use sluice::parse::{self, Item};

fn main() {
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    let mut datagram = Vec::new();
    let mut total = 0;
    let mut i = 0u64;
    while total < 1 << 20 {
        let host = i % 1000;
        let line = match i % 4 {
            0 => format!("cpu,host=host{host:04},region=eu-west-1,cpu=cpu{} usage_user={}.22,usage_system=22.68,usage_idle=64.22,usage_iowait=85.71,seq={i:012}i 1795985842709494595\n", i % 8, i % 100),
            1 => format!("mem,host=host{host:04},region=eu-west-1,cpu=cpu0 used_percent=23.97,available_percent=46.07,cached=30.20,buffered=27.90,seq={i:012}i 1795985842709494595\n"),
            2 => format!("disk,host=host{host:04},region=eu-west-1,cpu=cpu0 used_percent=87.40,inodes_used=57.91,free=87.65,total=72.96,seq={i:012}i 1795985842709494595\n"),
            _ => format!("net,host=host{host:04},region=eu-west-1,cpu=cpu0 bytes_recv=54.69,bytes_sent=2.25,packets_recv=15.56,packets_sent=26.25,seq={i:012}i 1795985842709494595\n"),
        };
        if datagram.len() + line.len() > 1400 {
            datagrams.push(std::mem::take(&mut datagram));
        }
        total += line.len();
        datagram.extend_from_slice(line.as_bytes());
        i += 1;
    }
    datagrams.push(datagram);
    // `scan_instructions ROUNDS` (run the binary directly) also times ROUNDS
    // rounds of 20 passes and prints the fastest, for quick A/B runs such as
    // `SLUICE_SIMD=avx2` against the default on a noisy machine.
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let mut scanner = parse::Scanner::new();
    let mut best = std::time::Duration::MAX;
    let (mut accepted, mut rejected) = (0u64, 0u64);
    for _ in 0..rounds {
        (accepted, rejected) = (0, 0);
        let started = std::time::Instant::now();
        for _ in 0..20 {
            for d in &datagrams {
                for item in scanner.lines(d) {
                    match item {
                        Item::Line(_) => accepted += 1,
                        Item::Reject { .. } => rejected += 1,
                    }
                }
            }
        }
        best = best.min(started.elapsed());
    }
    assert_eq!(rejected, 0);
    println!("scan_instructions: {accepted} lines accepted, {total} bytes x 20");
    if rounds > 1 {
        println!(
            "fastest of {rounds} rounds: {:.1} ns/line, {:.2} GiB/s",
            best.as_nanos() as f64 / accepted as f64,
            (total * 20) as f64 / best.as_secs_f64() / (1u64 << 30) as f64
        );
    }
}
