//! Sink body assembly: coalescing sealed chunks into one POST body (no copy:
//! a list of refcounted `Bytes`) and walking its parts as the connection
//! thread's vectored write does, with and without gzip. The no-copy path should cost next to nothing per MiB;
//! gzip shows what compression costs a writer thread.
//!
//! cargo bench --bench sink_body
use std::time::Duration;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice::batch::Chunk;
use sluice::sink::body::BodyBuilder;

const CHUNK: usize = 256 << 10;
const BODY: usize = 1 << 20;

/// 256 KiB of telegraf-like lines.
fn chunk() -> Chunk {
    let mut data = Vec::with_capacity(CHUNK);
    let mut lines = 0u32;
    while data.len() < CHUNK - 200 {
        data.extend_from_slice(
            format!(
                "cpu,host=server{:04},region=us-west-1 usage_user={}.5,usage_idle=84.25 {}\n",
                lines % 1000,
                lines % 100,
                1_700_000_000_000_000_000i64 + lines as i64
            )
            .as_bytes(),
        );
        lines += 1;
    }
    Chunk {
        data: Bytes::from(data),
        lines,
    }
}

/// Build a body of `BODY` bytes from shared chunks, seal it, walk its parts.
fn assemble_and_drain(chunk: &Chunk, gzip: u32) -> usize {
    let mut builder = BodyBuilder::default();
    while builder.fits(chunk, BODY) && !builder.is_full(BODY) {
        builder.push(chunk.clone());
    }
    let payload = builder.seal(gzip);
    let slices: Vec<std::io::IoSlice<'_>> = payload
        .parts()
        .iter()
        .map(|p| std::io::IoSlice::new(p))
        .collect();
    black_box(&slices).iter().map(|s| s.len()).sum()
}

fn bench(c: &mut Criterion) {
    let chunk = chunk();
    let mut group = c.benchmark_group("sink_body");
    group.throughput(Throughput::Bytes(BODY as u64));
    group.bench_function("coalesce_1MiB", |b| {
        b.iter(|| black_box(assemble_and_drain(&chunk, 0)))
    });
    group.bench_function("coalesce_gzip1_1MiB", |b| {
        b.iter(|| black_box(assemble_and_drain(&chunk, 1)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
