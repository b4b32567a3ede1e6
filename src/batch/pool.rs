//! Chunk buffers, and where their memory comes from. A shard takes the
//! buffer of each new chunk from its own pool; when the last sink holding
//! the sealed chunk lets go of it (on that sink's thread), the buffer goes
//! back to the pool.
//!
//! Why: fresh memory costs its first touch. The kernel maps and zeroes each
//! page (each 2 MiB huge page, here) when it is first written, and in a VM
//! the host may have to back it too. Without a pool, a shard's first chunks
//! went to such memory, at the moment a restarted appliance meets a fleet
//! that never stopped sending: `clear_page_erms` was 28–45 % of the shards'
//! time in their first 300 ms, and the kernel dropped datagrams while they
//! caught up (sixteenth session, BENCHMARKS.md). So the pool is one mapping
//! per shard, every page of it written by the shard's own thread (its
//! memory node) before its socket opens.
//!
//! The memory is mapped here rather than taken from the allocator so that
//! what the process holds is plain: the pool, fixed in size, and buffers
//! past it. A chunk that finds the pool empty (more chunks in flight than it
//! holds, sinks behind) or that is larger than a pool buffer gets a mapping
//! of its own. One of the pool's size is kept as a spare for the next such
//! chunk while the spell lasts; the shard unmaps the spares once a second
//! has passed without one ([`ChunkPool::trim`]); any other is unmapped as
//! soon as the last sink lets go of it. With
//! allocator memory past a pool, what a busy spell needed stayed resident
//! afterwards: five minutes of overload took the process from 94 to 165 MiB
//! in steps (the allocator frees a thread's pages when that thread calls
//! into it, and a shard with a pool seldom does). Without a pool
//! (`chunk.pool = 0`) chunks come from the allocator, as they did before
//! there was one.
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;

const PAGE: usize = 4096;
/// Spare mappings a pool keeps at least room for, however small it is.
const SPARE_MIN: usize = 16;

/// Anonymous read-write memory, unmapped when dropped.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// At least `len` bytes (whole pages), zero until written.
    fn new(len: usize) -> io::Result<Mapping> {
        let len = len.max(1).next_multiple_of(PAGE);
        // SAFETY: a new private anonymous mapping: no address hint, no file;
        // the kernel picks an address that overlaps nothing of ours.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(Mapping { ptr, len })
    }

    /// A mapping for a buffer past the pool. Running out of address space
    /// or memory ends the process, as a failed allocation does.
    fn for_buffer(len: usize) -> Mapping {
        Mapping::new(len).unwrap_or_else(|_| {
            std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(len.max(1), PAGE).expect("a page-aligned size"),
            )
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what `mmap` returned and was
        // asked for; every buffer in it has been dropped (a pool's buffers
        // hold an `Arc` of it, a buffer of its own owns its mapping).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: a `Mapping` is plain memory with one owner; which thread unmaps
// it does not matter.
unsafe impl Send for Mapping {}
// SAFETY: shared access goes only through `ChunkPool`, which hands each
// slot to one `ChunkBuf` at a time.
unsafe impl Sync for Mapping {}

/// One shard's chunk buffers: `slots` buffers of `buf_len` bytes in one
/// mapping, and the queue of the free ones (sinks push back, the shard
/// pops). Beside it, mappings of the pool's size made past it, kept for
/// reuse while the spell that needed them lasts ([`ChunkPool::trim`]).
#[derive(Debug)]
pub struct ChunkPool {
    region: Mapping,
    free: ArrayQueue<u32>,
    /// Returned mappings of one buffer each, at most as many as the pool
    /// holds (and room for `SPARE_MIN` in a small pool). Mapping each chunk
    /// anew costs its page faults and an unmap: with the pool drained (a
    /// dead backend's queue holding its share of the chunks) that was 35 %
    /// more CPU a GiB.
    spare: ArrayQueue<Mapping>,
    buf_len: usize,
}

impl ChunkPool {
    /// A pool of `buffers` buffers of `buf_len` bytes, every page written
    /// now, so the kernel maps it before the first chunk. `None` for no
    /// buffers; an error when the memory cannot be mapped.
    pub fn filled(buffers: usize, buf_len: usize) -> io::Result<Option<Arc<ChunkPool>>> {
        if buffers == 0 {
            return Ok(None);
        }
        let slots = u32::try_from(buffers)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many buffers"))?;
        let len = buffers
            .checked_mul(buf_len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pool too large"))?;
        let region = Mapping::new(len)?;
        // Huge pages where the kernel allows them for this mapping: fewer
        // faults now and fewer TLB misses when chunks are filled. Advice
        // only; refused, the pool works with small pages.
        // SAFETY: the range is exactly our mapping.
        unsafe {
            libc::madvise(region.ptr.as_ptr().cast(), region.len, libc::MADV_HUGEPAGE);
        }
        for offset in (0..region.len).step_by(PAGE) {
            // SAFETY: `offset < region.len`, inside the mapping, which no
            // buffer uses yet.
            unsafe { region.ptr.as_ptr().add(offset).write_volatile(0) };
        }
        let free = ArrayQueue::new(buffers);
        for slot in 0..slots {
            // Cannot fail: the queue has room for exactly these.
            let _ = free.push(slot);
        }
        Ok(Some(Arc::new(ChunkPool {
            region,
            free,
            spare: ArrayQueue::new(buffers.max(SPARE_MIN)),
            buf_len,
        })))
    }

    /// The size of the pool's buffers.
    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// Buffers free now.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Mappings past the pool kept for reuse now.
    pub fn spare(&self) -> usize {
        self.spare.len()
    }

    /// Unmap the spare mappings: the shard calls this once a spell past the
    /// pool is over, so what it needed does not stay resident.
    pub fn trim(&self) {
        while self.spare.pop().is_some() {}
    }
}

/// Where a buffer's memory lives, and so where it goes when dropped.
#[derive(Debug)]
enum Home {
    /// A slot of the pool: back to its free queue.
    Pool { pool: Arc<ChunkPool>, slot: u32 },
    /// A mapping of its own (past the pool): to the pool's spares when it
    /// is of the pool's size and there is room, else unmapped.
    Mapped {
        mapping: Option<Mapping>,
        pool: Option<Arc<ChunkPool>>,
    },
    /// The allocator's (no pool): freed. Its `len` stays 0; `ChunkBuf`
    /// tracks the bytes written into its capacity.
    Heap(#[allow(dead_code, reason = "held for its Drop")] Vec<u8>),
}

/// The buffer of one chunk: a fixed capacity, filled from the front. A
/// sealed chunk's `Bytes` owns it ([`ChunkBuf::freeze`]).
#[derive(Debug)]
pub struct ChunkBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
    home: Home,
}

// SAFETY: a `ChunkBuf` has the only access to its memory (a pool slot is
// handed to one buffer until that buffer drops; a mapping or vector is its
// own), so it may move to and drop on another thread.
unsafe impl Send for ChunkBuf {}

impl ChunkBuf {
    /// An empty buffer of at least `capacity` bytes: a free buffer of the
    /// pool when there is a pool, `capacity` is its size and one is free;
    /// otherwise a mapping of its own when there is a pool, or the
    /// allocator's without one. The flag says it is not the pool's.
    pub fn new(pool: Option<&Arc<ChunkPool>>, capacity: usize) -> (ChunkBuf, bool) {
        let Some(pool) = pool else {
            let mut vec = Vec::with_capacity(capacity);
            let (ptr, cap) = (vec.as_mut_ptr(), vec.capacity());
            let ptr = NonNull::new(ptr).unwrap_or(NonNull::dangling());
            return (
                ChunkBuf {
                    ptr,
                    len: 0,
                    cap,
                    home: Home::Heap(vec),
                },
                true,
            );
        };
        let pool_sized = capacity == pool.buf_len;
        if pool_sized {
            if let Some(slot) = pool.free.pop() {
                // SAFETY: slot < buffers, so the buffer lies inside the region.
                let ptr = unsafe { pool.region.ptr.add(slot as usize * pool.buf_len) };
                return (
                    ChunkBuf {
                        ptr,
                        len: 0,
                        cap: pool.buf_len,
                        home: Home::Pool {
                            pool: Arc::clone(pool),
                            slot,
                        },
                    },
                    false,
                );
            }
        }
        let spare = if pool_sized { pool.spare.pop() } else { None };
        let mapping = spare.unwrap_or_else(|| Mapping::for_buffer(capacity));
        (
            ChunkBuf {
                ptr: mapping.ptr,
                len: 0,
                cap: capacity,
                home: Home::Mapped {
                    mapping: Some(mapping),
                    pool: pool_sized.then(|| Arc::clone(pool)),
                },
            },
            true,
        )
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Append `bytes`, which must fit: the batcher seals before a line
    /// would overflow and sizes a buffer for a line larger than a chunk.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        assert!(
            bytes.len() <= self.cap - self.len,
            "chunk buffer overflow: {} + {} > {}",
            self.len,
            bytes.len(),
            self.cap
        );
        // SAFETY: the destination `ptr + len .. + bytes.len()` is inside the
        // buffer (checked above), which this `ChunkBuf` alone may write;
        // `bytes` is other memory (a datagram or scratch), so they do not
        // overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
    }

    /// The bytes written so far.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the buffer were written by
        // `extend_from_slice`; the buffer lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The chunk as shareable bytes, without a copy; the memory goes home
    /// when the last clone or slice of them drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for ChunkBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        match &mut self.home {
            Home::Pool { pool, slot } => {
                // Cannot fail: the queue has room for every slot, and this
                // one is out of it.
                let _ = pool.free.push(*slot);
            }
            Home::Mapped {
                mapping,
                pool: Some(pool),
            } => {
                // A full spare queue hands it back: it is unmapped here.
                if let Some(mapping) = mapping.take() {
                    let _ = pool.spare.push(mapping);
                }
            }
            // Any other mapping is unmapped, a vector freed, as `home` drops.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(buffers: usize, len: usize) -> Arc<ChunkPool> {
        ChunkPool::filled(buffers, len).unwrap().unwrap()
    }

    #[test]
    fn no_buffers_is_no_pool() {
        assert!(ChunkPool::filled(0, 1024).unwrap().is_none());
    }

    #[test]
    fn a_buffer_comes_back_when_its_last_holder_drops() {
        let pool = filled(2, 1024);
        let (mut buf, allocated) = ChunkBuf::new(Some(&pool), 1024);
        assert!(!allocated);
        assert_eq!(pool.free(), 1);
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), 1024);
        buf.extend_from_slice(b"cpu v=1\n");
        buf.extend_from_slice(b"mem v=2\n");
        let address = buf.as_slice().as_ptr();
        let bytes = buf.freeze();
        assert_eq!(&bytes[..], b"cpu v=1\nmem v=2\n");
        // Shared and sliced as a sink does: the buffer stays out.
        let clone = bytes.clone();
        let tail = bytes.slice(8..);
        drop(bytes);
        drop(clone);
        assert_eq!(pool.free(), 1);
        assert_eq!(&tail[..], b"mem v=2\n");
        drop(tail);
        assert_eq!(pool.free(), 2);
        // The same memory is handed out again, empty.
        let again: Vec<ChunkBuf> = (0..2).map(|_| ChunkBuf::new(Some(&pool), 1024).0).collect();
        assert!(again.iter().any(|b| b.ptr.as_ptr().cast_const() == address));
        assert!(again.iter().all(|b| b.is_empty() && b.capacity() == 1024));
        assert_eq!(pool.free(), 0);
    }

    #[test]
    fn past_the_pool_a_buffer_has_memory_of_its_own() {
        let pool = filled(1, 1024);
        let (first, allocated) = ChunkBuf::new(Some(&pool), 1024);
        assert!(!allocated);
        // The pool is empty: a mapping, gone when the buffer drops.
        let (mut extra, allocated) = ChunkBuf::new(Some(&pool), 1024);
        assert!(allocated);
        assert!(matches!(extra.home, Home::Mapped { .. }));
        extra.extend_from_slice(&[b'x'; 1024]);
        assert_eq!(extra.freeze().len(), 1024);
        assert_eq!(pool.free(), 0);
        drop(first);
        assert_eq!(pool.free(), 1);
        // Larger than the pool's buffers (a line larger than a chunk): its
        // own mapping even with buffers free.
        let (big, allocated) = ChunkBuf::new(Some(&pool), 5000);
        assert!(allocated && big.capacity() == 5000);
        assert_eq!(pool.free(), 1);
        // Without a pool, the allocator's.
        let (mut heap, allocated) = ChunkBuf::new(None, 16);
        assert!(allocated && matches!(heap.home, Home::Heap(_)));
        heap.extend_from_slice(b"x\n");
        assert_eq!(&heap.freeze()[..], b"x\n");
    }

    #[test]
    fn mappings_past_the_pool_are_reused_until_trimmed() {
        let pool = filled(1, 4096);
        let (_held, _) = ChunkBuf::new(Some(&pool), 4096);
        let (extra, allocated) = ChunkBuf::new(Some(&pool), 4096);
        assert!(allocated);
        let address = extra.ptr;
        drop(extra.freeze());
        assert_eq!(pool.spare(), 1);
        // The next chunk past the pool takes the same memory: no new faults.
        let (again, allocated) = ChunkBuf::new(Some(&pool), 4096);
        assert!(allocated && again.ptr == address);
        assert_eq!(pool.spare(), 0);
        // Kept up to a bound (SPARE_MIN for a pool this small); the rest unmap.
        let more: Vec<ChunkBuf> = (0..SPARE_MIN + 2)
            .map(|_| ChunkBuf::new(Some(&pool), 4096).0)
            .collect();
        drop(again);
        drop(more);
        assert_eq!(pool.spare(), SPARE_MIN);
        pool.trim();
        assert_eq!(pool.spare(), 0);
        // Larger than a pool buffer: never kept.
        drop(ChunkBuf::new(Some(&pool), 5000).0);
        assert_eq!(pool.spare(), 0);
    }

    #[test]
    #[should_panic(expected = "chunk buffer overflow")]
    fn writing_past_the_capacity_is_refused() {
        let (mut buf, _) = ChunkBuf::new(None, 4);
        buf.extend_from_slice(b"12345");
    }

    #[test]
    fn buffers_return_from_other_threads() {
        let pool = filled(64, 4096);
        let mut chunks: Vec<Bytes> = (0..64)
            .map(|i| {
                let (mut buf, _) = ChunkBuf::new(Some(&pool), 4096);
                buf.extend_from_slice(format!("m v={i}\n").as_bytes());
                buf.freeze()
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

    #[test]
    fn the_pool_outlives_its_shard_while_sinks_hold_chunks() {
        let pool = filled(2, 64);
        let (mut buf, _) = ChunkBuf::new(Some(&pool), 64);
        buf.extend_from_slice(b"late\n");
        let chunk = buf.freeze();
        // The shard (the last other owner) is gone; the chunk still reads.
        drop(pool);
        assert_eq!(&chunk[..], b"late\n");
    }
}
