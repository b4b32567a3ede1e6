//! Coalescing chunks into POST bodies.
//!
//! A body is a list of refcounted chunk `Bytes`, never a copy: four sinks on one
//! route send the same memory four times. The list is written with vectored
//! writes (`wire::send`). Only gzip makes a new buffer, because compression has to.
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::batch::Chunk;

/// A body being filled by the collector.
#[derive(Debug, Default)]
pub struct BodyBuilder {
    parts: Vec<Bytes>,
    bytes: usize,
    lines: u64,
    /// When the first chunk went in; the body is sent `batch_max_age` after it.
    first_at: Option<Instant>,
}

impl BodyBuilder {
    pub(crate) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes in the body so far.
    pub(crate) fn len(&self) -> usize {
        self.bytes
    }

    /// Lines in the body so far.
    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    pub(crate) fn first_at(&self) -> Option<Instant> {
        self.first_at
    }

    /// Whether `chunk` may join this body without pushing it past `size_max`.
    /// An empty body takes any chunk, so a chunk bigger than the limit travels alone.
    pub fn fits(&self, chunk: &Chunk, size_max: usize) -> bool {
        self.parts.is_empty() || self.bytes + chunk.data.len() <= size_max
    }

    /// Whether the body is full: within a sixteenth of `size_max`. A shard
    /// seals a chunk when the next datagram's lines would not fit it, so
    /// bodies of whole chunks are rarely exactly full, and the chunk that
    /// would have to fill the rest is almost never that small: waiting for
    /// it only held the body back, by up to a chunk's fill time (15 ms at
    /// 100 MB/s with 1 MB chunks, the default's one chunk a body).
    pub fn is_full(&self, size_max: usize) -> bool {
        self.bytes >= size_max - size_max / 16
    }

    pub fn push(&mut self, chunk: Chunk) {
        debug_assert!(!chunk.data.is_empty());
        self.first_at.get_or_insert_with(Instant::now);
        self.bytes += chunk.data.len();
        self.lines += u64::from(chunk.lines);
        self.parts.push(chunk.data);
    }

    /// Close the body. `gzip_level` 0 sends the chunks as they are; 1..=9
    /// compresses them into one buffer (on the calling thread: the writer's).
    pub fn seal(self, gzip_level: u32) -> Payload {
        let created = self.first_at.unwrap_or_else(Instant::now);
        let raw_bytes = self.bytes as u64;
        let (parts, gzip): (Arc<[Bytes]>, bool) = if gzip_level == 0 {
            (self.parts.into(), false)
        } else {
            (Arc::from([gzip(&self.parts, raw_bytes, gzip_level)]), true)
        };
        let wire_bytes = parts.iter().map(|p| p.len() as u64).sum();
        Payload {
            parts,
            wire_bytes,
            raw_bytes,
            lines: self.lines,
            created,
            gzip,
        }
    }
}

fn gzip(parts: &[Bytes], raw_bytes: u64, level: u32) -> Bytes {
    let level = flate2::Compression::new(level.clamp(1, 9));
    // Line protocol compresses well; a quarter of the input is a fair first guess.
    let capacity = (raw_bytes / 4) as usize + 64;
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(capacity), level);
    for part in parts {
        // Writing into a Vec cannot fail.
        encoder.write_all(part).expect("gzip into memory");
    }
    Bytes::from(encoder.finish().expect("gzip into memory"))
}

/// A sealed body: what a connection thread sends, and sends again on retry.
#[derive(Clone, Debug)]
pub struct Payload {
    parts: Arc<[Bytes]>,
    /// Bytes on the wire (after gzip): the Content-Length.
    pub(crate) wire_bytes: u64,
    /// Line-protocol bytes before gzip: what `bytes_delivered` counts.
    pub(crate) raw_bytes: u64,
    pub(crate) lines: u64,
    /// When the body's first chunk arrived; retries stop `retry_max_age` after it.
    pub(crate) created: Instant,
    pub(crate) gzip: bool,
}

impl Payload {
    /// The body's parts, in order: the chunks' shared bytes, or one gzip buffer.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn chunk(text: &str) -> Chunk {
        Chunk {
            data: Bytes::copy_from_slice(text.as_bytes()),
            lines: text.matches('\n').count() as u32,
        }
    }

    #[test]
    fn builder_limits_and_shares_bytes() {
        let mut builder = BodyBuilder::default();
        let a = chunk("a v=1\n");
        let b = chunk("b v=2\n");
        assert!(builder.fits(&a, 10));
        builder.push(a.clone());
        assert!(!builder.fits(&b, 10), "6 + 6 > 10");
        assert!(builder.fits(&b, 12));
        assert!(!builder.is_full(12), "6 of 12");
        builder.push(b);
        assert!(builder.is_full(12));
        let payload = builder.seal(0);
        assert_eq!(payload.lines, 2);
        assert_eq!(payload.raw_bytes, 12);
        assert_eq!(payload.wire_bytes, 12);
        // No copy: the first part is the very same memory as the chunk.
        assert_eq!(payload.parts()[0].as_ptr(), a.data.as_ptr());
    }

    #[test]
    fn a_body_within_a_sixteenth_of_the_limit_is_full() {
        // As a 1 MiB chunk less a datagram's worth in a 1 MiB body: the
        // next chunk would not fit, so waiting for it is pointless.
        let mut builder = BodyBuilder::default();
        builder.push(chunk(&format!("{}\n", "x".repeat(959))));
        assert!(builder.is_full(1024), "960 of 1024: 1024 - 64");
        assert!(!builder.is_full(1025), "960 of 1025: 1025 - 64 = 961");
        assert!(!builder.is_full(2048));
    }

    #[test]
    fn oversized_chunk_goes_alone() {
        let builder = BodyBuilder::default();
        assert!(builder.fits(&chunk("a long line v=1\n"), 4));
    }

    #[test]
    fn parts_and_gzip() {
        let mut builder = BodyBuilder::default();
        builder.push(chunk("a v=1\n"));
        builder.push(chunk("b v=2\nc v=3\n"));
        let plain = builder.seal(0);
        assert_eq!(plain.wire_bytes, 18);
        assert_eq!(plain.parts().concat(), b"a v=1\nb v=2\nc v=3\n");

        let mut builder = BodyBuilder::default();
        builder.push(chunk("a v=1\n"));
        builder.push(chunk("b v=2\nc v=3\n"));
        let zipped = builder.seal(6);
        assert!(zipped.gzip);
        assert_eq!(zipped.raw_bytes, 18);
        assert_eq!(zipped.parts().len(), 1);
        let wire = &zipped.parts()[0];
        assert_eq!(wire.len() as u64, zipped.wire_bytes);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&wire[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a v=1\nb v=2\nc v=3\n");
    }
}
