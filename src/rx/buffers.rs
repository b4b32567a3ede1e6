//! The io_uring provided-buffer ring, and the ONE record of who owns each buffer.
//!
//! # Safety model
//!
//! Two allocations, both made once in [`BufRing::new`] and freed in `Drop`:
//! the ring of `io_uring_buf` entries that the kernel reads (page aligned,
//! pinned by the kernel while registered) and the data area that the kernel
//! writes datagrams into. Each buffer id is in one of two states:
//!
//! * **kernel-owned**: its entry has been (or is about to be) published
//!   through the ring tail; the kernel may write into it at any moment, so
//!   Rust holds no reference into it.
//! * **lent**: a completion named it; the kernel will not touch it again until
//!   it is recycled, so [`BufRing::take`] may hand out `&[u8]`.
//!
//! The borrow returned by `take` borrows the whole `BufRing`, so the slice is
//! gone before [`BufRing::recycle`] can hand the buffer back. The owner of the
//! ring (`uring.rs`) must make sure no receive that selects from this group is
//! in flight when the `BufRing` is dropped; if it cannot prove that, it calls
//! [`BufRing::leak`] and the memory is never freed.
use std::alloc::Layout;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// The kernel's `struct io_uring_buf`. The tail of the ring overlays `resv`
/// of entry 0, so entries are written field by field and `resv` is never
/// written non-atomically.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);
const _: () =
    assert!(std::mem::size_of::<RawBuf>() == std::mem::size_of::<io_uring::types::BufRingEntry>());

/// Largest ring the kernel accepts (`IORING_REGISTER_PBUF_RING`).
pub(super) const ENTRIES_MAX: u16 = 32768;
const PAGE: usize = 4096;
/// Buffers start on cache-line boundaries.
const STRIDE_ALIGN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Kernel,
    Lent,
}

pub(super) struct BufRing {
    ring: NonNull<RawBuf>,
    ring_layout: Layout,
    data: NonNull<u8>,
    data_layout: Layout,
    stride: usize,
    buf_len: u32,
    mask: u16,
    /// Local tail: entries written so far, including unpublished ones.
    tail: u16,
    owner: Vec<Owner>,
    leaked: bool,
}

// SAFETY: `BufRing` exclusively owns its two allocations; the raw pointers
// are shared with the kernel only, never with another thread of this
// process, so moving the whole ring to another thread is sound.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Allocate `entries` buffers of `buf_len` bytes and a ring describing
    /// all of them (tail published: every buffer starts kernel-owned).
    pub(super) fn new(entries: u16, buf_len: usize) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two() && entries <= ENTRIES_MAX);
        let buf_len_u32 = u32::try_from(buf_len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer too large"))?;
        assert!(buf_len > 0);
        let stride = buf_len.next_multiple_of(STRIDE_ALIGN);
        let invalid = |_| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large");
        let ring_bytes = (usize::from(entries) * std::mem::size_of::<RawBuf>()).max(PAGE);
        let ring_layout = Layout::from_size_align(ring_bytes, PAGE).map_err(invalid)?;
        let data_bytes = stride
            .checked_mul(usize::from(entries))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        let data_layout = Layout::from_size_align(data_bytes, PAGE).map_err(invalid)?;

        // SAFETY: both layouts have a non-zero size (at least one page / one
        // buffer of at least one byte).
        let ring = unsafe { std::alloc::alloc_zeroed(ring_layout) };
        let Some(ring) = NonNull::new(ring.cast::<RawBuf>()) else {
            std::alloc::handle_alloc_error(ring_layout);
        };
        // SAFETY: as above, non-zero size.
        let data = unsafe { std::alloc::alloc_zeroed(data_layout) };
        let Some(data) = NonNull::new(data) else {
            std::alloc::handle_alloc_error(data_layout);
        };
        // Map the data area's pages now (the allocator may hand out fresh,
        // untouched memory): otherwise the kernel's first copies into it,
        // under the first load, pay for the faults and the zeroing.
        for offset in (0..data_bytes).step_by(PAGE) {
            // SAFETY: `offset < data_bytes`, inside the data allocation, which
            // no one else sees yet: no buffer has been published to the kernel.
            unsafe { data.as_ptr().add(offset).write_volatile(0) };
        }

        let mut bufs = BufRing {
            ring,
            ring_layout,
            data,
            data_layout,
            stride,
            buf_len: buf_len_u32,
            mask: entries - 1,
            tail: 0,
            owner: vec![Owner::Lent; usize::from(entries)],
            leaked: false,
        };
        for bid in 0..entries {
            bufs.recycle(bid);
        }
        bufs.publish();
        Ok(bufs)
    }

    /// Address to register with `IORING_REGISTER_PBUF_RING`.
    pub(super) fn ring_addr(&self) -> u64 {
        self.ring.as_ptr() as u64
    }

    pub(super) fn entries(&self) -> u16 {
        self.mask.wrapping_add(1)
    }

    /// Bytes the kernel may write into one buffer.
    pub(super) fn buf_len(&self) -> usize {
        self.buf_len as usize
    }

    /// Lend buffer `bid` to Rust: the first `len` bytes, as written by the kernel.
    ///
    /// # Safety
    ///
    /// A completion (CQE) of this ring's buffer group must have named `bid`
    /// since it was last recycled: only then has the kernel finished writing
    /// it and taken it off the ring.
    pub(super) unsafe fn take(&mut self, bid: u16, len: usize) -> &[u8] {
        let index = usize::from(bid);
        assert_eq!(self.owner[index], Owner::Kernel, "buffer {bid} lent twice");
        assert!(len <= self.buf_len(), "completion longer than its buffer");
        self.owner[index] = Owner::Lent;
        // SAFETY: `bid` < entries (checked by the index above), so the range
        // lies inside the data allocation; the caller guarantees the kernel
        // is done with this buffer, and the memory is initialised (zeroed at
        // allocation, then written by the kernel). The slice borrows `self`,
        // so it ends before `recycle` can return the buffer to the kernel.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(index * self.stride), len) }
    }

    /// Return a lent buffer to the ring. The kernel sees it after [`publish`](Self::publish).
    pub(super) fn recycle(&mut self, bid: u16) {
        let index = usize::from(bid);
        assert_eq!(
            self.owner[index],
            Owner::Lent,
            "recycling buffer {bid} not lent"
        );
        self.owner[index] = Owner::Kernel;
        let slot = usize::from(self.tail & self.mask);
        // SAFETY: `slot` < entries, inside the ring allocation. The entries
        // from the published tail up to head + entries are not read by the
        // kernel until the tail moves past them, and there are exactly
        // `entries` buffer ids, so `slot` is such a free entry. Fields are
        // written one by one, so entry 0's `resv` (the shared tail) is not
        // touched; `addr` is inside the data allocation.
        unsafe {
            let entry = self.ring.as_ptr().add(slot);
            std::ptr::addr_of_mut!((*entry).addr)
                .write(self.data.as_ptr().add(index * self.stride) as u64);
            std::ptr::addr_of_mut!((*entry).len).write(self.buf_len);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every recycled buffer visible to the kernel (one release store per batch).
    pub(super) fn publish(&mut self) {
        // SAFETY: entry 0's `resv` is the ring tail: inside the allocation,
        // 2-byte aligned (offset 14 of a page-aligned block), and only ever
        // accessed atomically (by us here, by the kernel with
        // smp_load_acquire).
        let tail =
            unsafe { AtomicU16::from_ptr(std::ptr::addr_of_mut!((*self.ring.as_ptr()).resv)) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Never free the memory: called when the kernel might still use it.
    pub(super) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: both blocks came from `alloc_zeroed` with these layouts;
        // the owner of the ring guarantees no request of this buffer group
        // is in flight (else it called `leak`).
        unsafe {
            std::alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            std::alloc::dealloc(self.data.as_ptr(), self.data_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_starts_full_and_recycles_in_order() {
        let mut bufs = BufRing::new(4, 100).unwrap();
        assert_eq!(bufs.entries(), 4);
        assert_eq!(bufs.buf_len(), 100);
        assert_eq!(bufs.tail, 4);
        // SAFETY: no kernel is attached to this ring; pretending a CQE named
        // buffer 2 is sound because nothing else writes it.
        let data = unsafe { bufs.take(2, 10) };
        assert_eq!(data, &[0u8; 10]);
        bufs.recycle(2);
        bufs.publish();
        assert_eq!(bufs.tail, 5);
        // SAFETY: entry 0 is inside the ring; slot 4 & 3 = 0 now holds bid 2.
        let bid = unsafe { (*bufs.ring.as_ptr()).bid };
        assert_eq!(bid, 2);
    }
}
