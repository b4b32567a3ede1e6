//! Chunk buffers, recycled. A shard takes the buffer of each new chunk from
//! its own pool; when the last sink holding the sealed chunk lets go of it
//! (on that sink's thread), the buffer goes back to the pool.
//!
//! Why: fresh memory costs its first touch. The kernel maps and zeroes each
//! page (each 2 MiB huge page, here) when it is first written, and in a VM
//! the host may have to back it too. Without a pool, a shard's first chunks
//! went to such memory, at the moment a restarted appliance meets a fleet
//! that never stopped sending: `clear_page_erms` was 34–51 % of the shards'
//! time in their first 300 ms, and the kernel dropped datagrams while they
//! caught up (sixteenth session, BENCHMARKS.md). So a pool is filled, every
//! page of it written, by the shard's own thread (its memory node) before
//! its socket opens. Afterwards the same buffers circulate, and the
//! allocator never hands memory back to the kernel only to fault it in
//! again.
//!
//! A shard that needs more buffers than its pool holds allocates them (the
//! caller counts that); one of the pool's size returns to the pool while
//! there is room, so the pool also keeps what a busier spell needed, up to
//! its capacity.
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;

/// Write one byte in every this many: each page gets mapped.
const PAGE: usize = 4096;

/// Free chunk buffers of one shard, all of `buf_len` bytes' capacity.
#[derive(Debug)]
pub struct ChunkPool {
    free: ArrayQueue<Vec<u8>>,
    buf_len: usize,
}

impl ChunkPool {
    /// A pool holding `buffers` empty buffers of `buf_len` bytes' capacity,
    /// each allocated and its pages written now. `None` for no buffers.
    pub fn filled(buffers: usize, buf_len: usize) -> Option<Arc<ChunkPool>> {
        if buffers == 0 {
            return None;
        }
        let pool = ChunkPool {
            free: ArrayQueue::new(buffers),
            buf_len,
        };
        for _ in 0..buffers {
            // Cannot fail: the queue has room for exactly these.
            let _ = pool.free.push(touched(buf_len));
        }
        Some(Arc::new(pool))
    }

    /// An empty buffer of the pool's size, if one is free.
    #[inline]
    pub fn take(&self) -> Option<Vec<u8>> {
        self.free.pop()
    }

    /// The capacity of the pool's buffers.
    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// Buffers free now.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Keep `buf` for reuse when it is of the pool's size and there is room;
    /// otherwise it is freed.
    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() == self.buf_len {
            buf.clear();
            let _ = self.free.push(buf);
        }
    }
}

/// An empty buffer of `len` bytes' capacity, one byte of each page written
/// so the kernel maps its pages now, not when a chunk first fills them.
fn touched(len: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(len);
    for byte in buf.spare_capacity_mut().iter_mut().step_by(PAGE) {
        byte.write(0);
    }
    // The buffer escapes into the pool, so the writes stay; this says so.
    std::hint::black_box(buf.as_mut_ptr());
    buf
}

/// A sealed chunk's bytes in a pool's buffer, which goes back to the pool
/// when the last `Bytes` of it drops.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<ChunkPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// The chunk `buf` as shareable bytes, without a copy. A buffer of `pool`'s
/// size returns to it once every holder has let go; any other is freed.
pub fn freeze(buf: Vec<u8>, pool: Option<&Arc<ChunkPool>>) -> Bytes {
    match pool {
        Some(pool) if buf.capacity() == pool.buf_len => Bytes::from_owner(Pooled {
            buf,
            pool: Arc::clone(pool),
        }),
        _ => Bytes::from(buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_buffers_is_no_pool() {
        assert!(ChunkPool::filled(0, 1024).is_none());
    }

    #[test]
    fn a_buffer_comes_back_when_its_last_holder_drops() {
        let pool = ChunkPool::filled(2, 1024).unwrap();
        let mut buf = pool.take().unwrap();
        assert_eq!(pool.free(), 1);
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), 1024);
        buf.extend_from_slice(b"cpu v=1\n");
        let address = buf.as_ptr();
        let bytes = freeze(buf, Some(&pool));
        assert_eq!(&bytes[..], b"cpu v=1\n");
        // Shared and sliced as a sink does: the buffer stays out.
        let clone = bytes.clone();
        let tail = bytes.slice(4..);
        drop(bytes);
        drop(clone);
        assert_eq!(pool.free(), 1);
        assert_eq!(&tail[..], b"v=1\n");
        drop(tail);
        assert_eq!(pool.free(), 2);
        // The same memory, emptied, is handed out again.
        let again: Vec<Vec<u8>> = (0..2).map(|_| pool.take().unwrap()).collect();
        assert!(again.iter().any(|b| b.as_ptr() == address));
        assert!(again.iter().all(|b| b.is_empty() && b.capacity() == 1024));
        assert!(pool.take().is_none());
    }

    #[test]
    fn a_buffer_returns_to_a_pool_with_room_and_others_are_freed() {
        let pool = ChunkPool::filled(1, 1024).unwrap();
        let first = pool.take().unwrap();
        // Allocated past the pool, of its size: kept once there is room.
        let extra = freeze(Vec::with_capacity(1024), Some(&pool));
        drop(extra);
        assert_eq!(pool.free(), 1);
        // A full pool frees what comes back.
        drop(freeze(first, Some(&pool)));
        assert_eq!(pool.free(), 1);
        // Another size (a line larger than a chunk) never joins it.
        pool.take().unwrap();
        drop(freeze(Vec::with_capacity(4096), Some(&pool)));
        assert_eq!(pool.free(), 0);
        // Without a pool, bytes are bytes.
        assert_eq!(&freeze(b"x\n".to_vec(), None)[..], b"x\n");
    }

    #[test]
    fn buffers_return_from_other_threads() {
        let pool = ChunkPool::filled(64, 4096).unwrap();
        let mut chunks: Vec<Bytes> = (0..64)
            .map(|i| {
                let mut buf = pool.take().unwrap();
                buf.extend_from_slice(format!("m v={i}\n").as_bytes());
                freeze(buf, Some(&pool))
            })
            .collect();
        assert_eq!(pool.free(), 0);
        // Each chunk's last holder drops it on another thread, as sinks do.
        std::thread::scope(|s| {
            while !chunks.is_empty() {
                let part: Vec<Bytes> = chunks.drain(..16).collect();
                s.spawn(move || drop(part));
            }
        });
        assert_eq!(pool.free(), 64);
    }
}
