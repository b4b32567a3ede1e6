//! Scanner throughput over telegraf-like lines (100–250 bytes, floats, ints,
//! strings, booleans, 19-digit timestamps), packed into ~64 KB datagrams.
//!
//! `cargo bench --bench parse`; figures are MB/s of line-protocol text.

use criterion::{black_box, criterion_group, Criterion, Throughput};
use sluice::parse;

/// Deterministic corpus: ~1 MB of lines in datagrams of at most 64,000 bytes.
fn corpus() -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut datagrams = Vec::new();
    let mut datagram = Vec::new();
    let mut total = 0;
    let mut ts = 1_700_000_000_123_456_789u64;
    while total < 1 << 20 {
        let line = match rng.u8(0..4) {
            0 => format!(
                "cpu,host=server{:03},region=us-west-{},cpu=cpu{} usage_user={:.2},usage_system={:.2},\
                 usage_idle={:.2},usage_iowait={}i {}",
                rng.u32(0..1000),
                rng.u8(1..4),
                rng.u8(0..64),
                rng.f64() * 100.0,
                rng.f64() * 10.0,
                rng.f64() * 100.0,
                rng.u32(0..100),
                ts
            ),
            1 => format!(
                "mem,host=server{:03},region=eu-central-1 active={}i,available={}i,\
                 available_percent={:.4},buffered={}i,cached={}i,free={}i,used_percent={:.4} {}",
                rng.u32(0..1000),
                rng.u64(1 << 30..1 << 34),
                rng.u64(1 << 30..1 << 34),
                rng.f64() * 100.0,
                rng.u64(1 << 20..1 << 28),
                rng.u64(1 << 28..1 << 32),
                rng.u64(1 << 28..1 << 32),
                rng.f64() * 100.0,
                ts
            ),
            2 => format!(
                "http_response,host=web{:02},method=GET,server=https://api.example.com/v1/items,\
                 status_code={} response_time={:.6},http_response_code={}i,result=\"success\",\
                 content_length={}u,up=true {}",
                rng.u8(0..50),
                200 + rng.u16(0..4),
                rng.f64(),
                200 + rng.u16(0..4),
                rng.u32(100..100_000),
                ts
            ),
            _ => format!(
                "disk,device=nvme0n1p{},fstype=ext4,host=server{:03},mode=rw,path=/var/lib/data \
                 free={}i,inodes_free={}i,inodes_total={}i,total={}i,used={}i,used_percent={:.3} {}",
                rng.u8(1..4),
                rng.u32(0..1000),
                rng.u64(1 << 30..1 << 40),
                rng.u32(..),
                rng.u32(..),
                rng.u64(1 << 40..1 << 41),
                rng.u64(1 << 30..1 << 40),
                rng.f64() * 100.0,
                ts
            ),
        };
        ts += rng.u64(1..1_000_000);
        if datagram.len() + line.len() + 1 > 64_000 {
            datagrams.push(std::mem::take(&mut datagram));
        }
        total += line.len() + 1;
        datagram.extend_from_slice(line.as_bytes());
        datagram.push(b'\n');
    }
    datagrams.push(datagram);
    datagrams
}

fn bench(c: &mut Criterion) {
    let datagrams = corpus();
    let bytes: usize = datagrams.iter().map(Vec::len).sum();
    let lines: Vec<&[u8]> = datagrams
        .iter()
        .flat_map(|d| d.split(|&b| b == b'\n').filter(|l| !l.is_empty()))
        .collect();
    let avg = bytes / lines.len();
    assert!((100..=250).contains(&avg), "average line is {avg} bytes");
    for line in &lines {
        parse::scan_line(line).expect("corpus lines are valid");
    }

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("scan_line", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for line in &lines {
                ok += parse::scan_line(black_box(line)).is_ok() as usize;
            }
            ok
        })
    });
    group.bench_function("lines", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for d in &datagrams {
                for item in parse::lines(black_box(d)) {
                    ok += matches!(item, parse::Item::Line(_)) as usize;
                }
            }
            ok
        })
    });
    group.bench_function("lines_and_tags", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for d in &datagrams {
                for item in parse::lines(black_box(d)) {
                    if let parse::Item::Line(l) = item {
                        n += parse::tags(l.tags).count();
                    }
                }
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

/// `PARSE_LOOPS=N` runs `scan_line` over the corpus N times and exits, for
/// `perf stat -e cycles:u` (cycles per byte), which a shared machine's
/// scheduling noise does not disturb the way it disturbs wall time.
fn main() {
    if let Some(loops) = std::env::var("PARSE_LOOPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let datagrams = corpus();
        let bytes: usize = datagrams.iter().map(Vec::len).sum();
        let lines: Vec<&[u8]> = datagrams
            .iter()
            .flat_map(|d| d.split(|&b| b == b'\n').filter(|l| !l.is_empty()))
            .collect();
        let mut ok = 0usize;
        for _ in 0..loops {
            for line in &lines {
                ok += parse::scan_line(black_box(line)).is_ok() as usize;
            }
        }
        println!("bytes={} ok={ok}", bytes * loops);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
