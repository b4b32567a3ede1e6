//! Batching: each shard appends accepted lines to an open chunk per
//! delivery group. A chunk is sealed at a size or age limit into a
//! refcounted [`Chunk`] that every sink of the group shares (built once,
//! never copied per sink). A line is never split across chunks. Pure code:
//! the caller passes the clock in.
//!
//! A delivery group is the routes that go to the same sinks
//! ([`DeliveryGroups`]). A sink posts everything it receives to one URL
//! whatever the route, so routes with the same subscribers share chunks:
//! lines of such routes that follow each other in a datagram are copied as
//! one run, and a group's lines reach its sinks in the order they arrived.
//! With one chunk per route, a rule table that sends alternate lines to
//! different routes cost a copy per line.
//!
//! A chunk's buffer comes from the shard's [`pool::ChunkPool`] and returns
//! there when the last sink lets go of it.
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub mod pool;

use pool::{ChunkBuf, ChunkPool};

use crate::check::{self, Rewrite};
use crate::parse::Line;
use crate::route::RouteId;

/// Index of a delivery group: an open chunk per shard.
pub type GroupId = u16;

/// Routes grouped by their subscribers: routes with the same set of sinks
/// form one group (the routes no sink subscribes to form one too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryGroups {
    /// Route id -> its group.
    pub of_route: Vec<GroupId>,
    /// Group -> indices of its sinks (those of each of its routes).
    pub sinks: Vec<Vec<usize>>,
}

impl DeliveryGroups {
    /// `route_sinks`: route id -> indices of the sinks subscribed to it.
    pub fn new(route_sinks: &[Vec<usize>]) -> DeliveryGroups {
        let mut groups = DeliveryGroups {
            of_route: Vec::with_capacity(route_sinks.len()),
            sinks: Vec::new(),
        };
        for subscribers in route_sinks {
            let mut set = subscribers.clone();
            set.sort_unstable();
            set.dedup();
            let group = match groups.sinks.iter().position(|s| *s == set) {
                Some(g) => g,
                None => {
                    groups.sinks.push(set);
                    groups.sinks.len() - 1
                }
            };
            // At most one group per route, and route ids fit a `RouteId`.
            groups.of_route.push(group as GroupId);
        }
        groups
    }

    /// The group of `route`.
    #[inline(always)]
    pub fn of(&self, route: RouteId) -> GroupId {
        self.of_route[route as usize]
    }
}

/// A sealed run of whole lines, each ending in `\n`.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub data: Bytes,
    pub lines: u32,
}

impl OpenChunk {
    #[inline]
    fn len(&self) -> usize {
        self.buf.as_ref().map_or(0, ChunkBuf::len)
    }

    /// The chunk's buffer. An empty chunk opens at `now` with a new one of
    /// `capacity` bytes (it never grows), counted in `allocated` when it is
    /// not the pool's.
    #[inline]
    fn buffer(
        &mut self,
        pool: Option<&Arc<ChunkPool>>,
        allocated: &mut u64,
        capacity: usize,
        now: Instant,
    ) -> &mut ChunkBuf {
        match &mut self.buf {
            Some(buf) => buf,
            empty => {
                self.opened = Some(now);
                let (buf, not_pooled) = ChunkBuf::new(pool, capacity);
                *allocated += u64::from(not_pooled);
                empty.insert(buf)
            }
        }
    }
}

struct OpenChunk {
    /// `Some` exactly while the chunk holds lines: sealing takes it, the
    /// next line gets a new one.
    buf: Option<ChunkBuf>,
    lines: u32,
    /// When the first line went in; `None` while empty.
    opened: Option<Instant>,
}

/// The open chunks of one shard, one per group.
pub struct Batcher {
    open: Vec<OpenChunk>,
    max_size: usize,
    max_age: Duration,
    /// Buffers of `max_size` bytes; `None`: chunks come from the allocator.
    pool: Option<Arc<ChunkPool>>,
    /// Chunk buffers that did not come from the pool.
    allocated: u64,
}

impl Batcher {
    /// `pool`, when given, holds buffers of `max_size` bytes.
    pub fn new(
        groups: usize,
        max_size: usize,
        max_age: Duration,
        pool: Option<Arc<ChunkPool>>,
    ) -> Batcher {
        assert!(max_size > 0);
        assert!(pool.as_ref().is_none_or(|p| p.buf_len() == max_size));
        Batcher {
            open: (0..groups)
                .map(|_| OpenChunk {
                    buf: None,
                    lines: 0,
                    opened: None,
                })
                .collect(),
            max_size,
            max_age,
            pool,
            allocated: 0,
        }
    }

    /// Chunk buffers so far that did not come from the pool: it had none
    /// free, or a line was larger than a chunk, or there is no pool.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Unmap what the pool kept from a spell past it (`ChunkPool::trim`).
    pub fn trim_pool(&self) {
        if let Some(pool) = &self.pool {
            pool.trim();
        }
    }

    /// Append one line (without its newline; one is added). Calls `sealed` with
    /// the chunk this append completed, if any: the previous contents when the
    /// line would not fit, and/or this chunk once it reaches `max_size`.
    #[inline]
    pub fn append(
        &mut self,
        group: GroupId,
        line: &[u8],
        now: Instant,
        sealed: &mut impl FnMut(GroupId, Chunk),
    ) {
        let max_size = self.max_size;
        let pool = self.pool.as_ref();
        let open = &mut self.open[group as usize];
        let needed = line.len() + 1;
        if open.lines > 0 && open.len() + needed > max_size {
            sealed(group, Self::seal(open));
        }
        // A line larger than a chunk gets a buffer of its own size.
        let buf = open.buffer(pool, &mut self.allocated, needed.max(max_size), now);
        buf.extend_from_slice(line);
        buf.extend_from_slice(b"\n");
        let full = buf.len() >= max_size;
        open.lines += 1;
        if full {
            sealed(group, Self::seal(open));
        }
    }

    /// Start appending the lines of one datagram. Lines that are slices of
    /// `datagram`, each followed there by its `\n`, go in as runs: one copy
    /// per run of consecutive lines of one group instead of one per line.
    /// The result is byte for byte what `append` per line would build, with
    /// the same seals; call [`DatagramAppender::finish`] at the end.
    #[inline]
    pub fn datagram<'b, 'd>(
        &'b mut self,
        datagram: &'d [u8],
        now: Instant,
    ) -> DatagramAppender<'b, 'd> {
        DatagramAppender {
            batcher: self,
            datagram,
            now,
            run: Run::default(),
        }
    }

    /// Bytes in `group`'s open chunk.
    #[inline]
    fn open_len(&self, group: GroupId) -> usize {
        self.open[group as usize].len()
    }

    /// Append `lines` whole lines, each already ending in `\n`, that fit the
    /// open chunk without reaching `max_size` (the caller checked).
    #[inline]
    fn append_run(&mut self, group: GroupId, bytes: &[u8], lines: u32, now: Instant) {
        let max_size = self.max_size;
        let open = &mut self.open[group as usize];
        debug_assert!(open.len() + bytes.len() < max_size);
        let buf = open.buffer(self.pool.as_ref(), &mut self.allocated, max_size, now);
        buf.extend_from_slice(bytes);
        open.lines += lines;
    }

    /// Seal every chunk that has been open for `max_age` or longer.
    pub fn seal_expired(&mut self, now: Instant, sealed: &mut impl FnMut(GroupId, Chunk)) {
        for (group, open) in self.open.iter_mut().enumerate() {
            if let Some(opened) = open.opened {
                if now.saturating_duration_since(opened) >= self.max_age {
                    sealed(group as GroupId, Self::seal(open));
                }
            }
        }
    }

    /// Seal every non-empty chunk (shutdown).
    pub fn seal_all(&mut self, sealed: &mut impl FnMut(GroupId, Chunk)) {
        for (group, open) in self.open.iter_mut().enumerate() {
            if open.lines > 0 {
                sealed(group as GroupId, Self::seal(open));
            }
        }
    }

    /// How long until the oldest open chunk expires (`None` when all are empty).
    pub fn next_expiry(&self, now: Instant) -> Option<Duration> {
        self.open
            .iter()
            .filter_map(|o| o.opened)
            .map(|opened| (opened + self.max_age).saturating_duration_since(now))
            .min()
    }

    /// The open chunk as a sealed one; its buffer goes with it.
    fn seal(open: &mut OpenChunk) -> Chunk {
        let lines = std::mem::take(&mut open.lines);
        open.opened = None;
        Chunk {
            data: open.buf.take().map_or_else(Bytes::new, ChunkBuf::freeze),
            lines,
        }
    }
}

/// Consecutive lines of one group in the current datagram, not yet copied:
/// `datagram[start..end]`, each line with its `\n`.
#[derive(Default)]
struct Run {
    group: GroupId,
    start: usize,
    end: usize,
    lines: u32,
}

/// Appends one datagram's lines to a [`Batcher`]; see [`Batcher::datagram`].
pub struct DatagramAppender<'b, 'd> {
    batcher: &'b mut Batcher,
    datagram: &'d [u8],
    now: Instant,
    run: Run,
}

impl<'d> DatagramAppender<'_, 'd> {
    /// Append a line forwarded as received: `raw` is a slice of the
    /// datagram (without its line ending).
    #[inline]
    pub fn line(&mut self, group: GroupId, raw: &'d [u8], sealed: &mut impl FnMut(GroupId, Chunk)) {
        // Where `raw` lies in the datagram. A slice from elsewhere (a test
        // passing another buffer) fails the check below, wrapping or not,
        // and is appended as a copy: only bytes of `datagram` are ever
        // taken from `datagram`.
        let start = (raw.as_ptr() as usize).wrapping_sub(self.datagram.as_ptr() as usize);
        let end = start.wrapping_add(raw.len());
        let with_newline = start <= self.datagram.len() && self.datagram.get(end) == Some(&b'\n');
        let max_size = self.batcher.max_size;
        if with_newline {
            let run = &mut self.run;
            if run.lines > 0
                && run.group == group
                && run.end == start
                && self.batcher.open_len(group) + (end + 1 - run.start) < max_size
            {
                run.end = end + 1;
                run.lines += 1;
                return;
            }
            self.flush();
            if self.batcher.open_len(group) + raw.len() + 1 < max_size {
                self.run = Run {
                    group,
                    start,
                    end: end + 1,
                    lines: 1,
                };
                return;
            }
        } else {
            self.flush();
        }
        // Would fill the chunk (or has no `\n` after it in the datagram):
        // the per-line path, which seals exactly where it must.
        self.batcher.append(group, raw, self.now, sealed);
    }

    /// Append an accepted line in the form it is forwarded in: as received
    /// (joining a run), or, when `rewrite` asks for another form, as that
    /// form written into `scratch` first. The shard's one way to forward.
    #[inline]
    pub fn accepted(
        &mut self,
        group: GroupId,
        line: &Line<'d>,
        rewrite: Rewrite,
        scratch: &mut Vec<u8>,
        sealed: &mut impl FnMut(GroupId, Chunk),
    ) {
        if check::rewritten(line, rewrite, scratch) {
            self.other(group, scratch, sealed);
        } else {
            self.line(group, line.raw, sealed);
        }
    }

    /// Append a line that is not (as is) in the datagram: a rewritten line
    /// or a dead letter. Lines of the pending run go first, so a group's
    /// lines keep their order.
    pub fn other(&mut self, group: GroupId, line: &[u8], sealed: &mut impl FnMut(GroupId, Chunk)) {
        self.flush();
        self.batcher.append(group, line, self.now, sealed);
    }

    /// Copy the pending run into its chunk.
    #[inline]
    fn flush(&mut self) {
        let run = std::mem::take(&mut self.run);
        if run.lines > 0 {
            let bytes = &self.datagram[run.start..run.end];
            self.batcher
                .append_run(run.group, bytes, run.lines, self.now);
        }
    }

    /// Copy what is pending (dropping the appender does the same). A run
    /// never fills a chunk, so nothing seals here.
    #[inline]
    pub fn finish(self) {}
}

impl Drop for DatagramAppender<'_, '_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(
        b: &mut Batcher,
        lines: &[(&str, GroupId)],
        now: Instant,
    ) -> Vec<(GroupId, String, u32)> {
        let mut out = Vec::new();
        for (line, group) in lines {
            b.append(*group, line.as_bytes(), now, &mut |r, c| {
                out.push((r, String::from_utf8(c.data.to_vec()).unwrap(), c.lines))
            });
        }
        out
    }

    #[test]
    fn seals_at_size_without_splitting_lines() {
        let now = Instant::now();
        let mut b = Batcher::new(1, 20, Duration::from_secs(1), None);
        let out = collect(
            &mut b,
            &[("aaaaaaa", 0), ("bbbbbbb", 0), ("ccccccc", 0)],
            now,
        );
        // 8 + 8 = 16; the third line would make 24 > 20, so the first two seal.
        assert_eq!(out, vec![(0, "aaaaaaa\nbbbbbbb\n".to_string(), 2)]);
        let mut rest = Vec::new();
        b.seal_all(&mut |r, c| rest.push((r, c)));
        assert_eq!(rest.len(), 1);
        assert_eq!(&rest[0].1.data[..], b"ccccccc\n");
    }

    #[test]
    fn a_line_longer_than_the_limit_goes_alone() {
        let now = Instant::now();
        let mut b = Batcher::new(1, 10, Duration::from_secs(1), None);
        let out = collect(
            &mut b,
            &[("ab", 0), ("0123456789abcdef", 0), ("cd", 0)],
            now,
        );
        assert_eq!(
            out,
            vec![
                (0, "ab\n".to_string(), 1),
                (0, "0123456789abcdef\n".to_string(), 1)
            ]
        );
    }

    #[test]
    fn routes_with_the_same_sinks_share_a_group() {
        // Routes 0, 2 and 4 go to sinks 0 and 1 (in any order), route 1 to
        // sink 1 alone, route 3 to none.
        let groups = DeliveryGroups::new(&[vec![0, 1], vec![1], vec![1, 0], vec![], vec![0, 1]]);
        assert_eq!(groups.of_route, vec![0, 1, 0, 2, 0]);
        assert_eq!(groups.sinks, vec![vec![0, 1], vec![1], vec![]]);
        assert_eq!(groups.of(4), 0);
        assert_eq!(DeliveryGroups::new(&[]).sinks.len(), 0);
    }

    #[test]
    fn groups_have_separate_chunks() {
        let now = Instant::now();
        let mut b = Batcher::new(2, 1 << 20, Duration::from_secs(1), None);
        assert!(collect(&mut b, &[("a", 0), ("b", 1), ("c", 0)], now).is_empty());
        let mut out = Vec::new();
        b.seal_all(&mut |r, c| out.push((r, c.data, c.lines)));
        assert_eq!(out[0], (0, Bytes::from_static(b"a\nc\n"), 2));
        assert_eq!(out[1], (1, Bytes::from_static(b"b\n"), 1));
    }

    #[test]
    fn seals_at_age() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2, 1 << 20, Duration::from_millis(100), None);
        collect(&mut b, &[("a", 0)], t0);
        collect(&mut b, &[("b", 1)], t0 + Duration::from_millis(50));
        assert_eq!(b.next_expiry(t0), Some(Duration::from_millis(100)));
        let mut out = Vec::new();
        b.seal_expired(t0 + Duration::from_millis(100), &mut |r, _| out.push(r));
        assert_eq!(out, vec![0]);
        assert_eq!(
            b.next_expiry(t0 + Duration::from_millis(100)),
            Some(Duration::from_millis(50))
        );
        b.seal_expired(t0 + Duration::from_millis(150), &mut |r, _| out.push(r));
        assert_eq!(out, vec![0, 1]);
        assert_eq!(b.next_expiry(t0), None);
    }

    /// One line of a generated datagram: its text, its group, whether it is
    /// forwarded rewritten (not as received), and its line ending.
    #[derive(Clone, Debug)]
    struct GenLine {
        text: String,
        group: GroupId,
        rewritten: bool,
        ending: &'static str,
    }

    fn gen_line() -> impl proptest::strategy::Strategy<Value = GenLine> {
        use proptest::prelude::*;
        (
            "[a-z]{1,40}",
            0u16..3,
            prop::bool::weighted(0.1),
            prop::sample::select(vec!["\n", "\n", "\n", "\r\n", "\n\n"]),
        )
            .prop_map(|(text, group, rewritten, ending)| GenLine {
                text,
                group,
                rewritten,
                ending,
            })
    }

    proptest::proptest! {
        /// Runs build exactly the chunks, and seal them exactly where,
        /// per-line appends would: over datagrams whose lines change group,
        /// are rewritten, end in CRLF or nothing, with chunks small enough
        /// to seal often.
        #[test]
        fn runs_match_per_line_appends(
            datagrams in proptest::collection::vec(proptest::collection::vec(gen_line(), 0..12), 1..6),
            max_size in 8usize..200,
        ) {
            let now = Instant::now();
            let mut per_line = Batcher::new(3, max_size, Duration::from_secs(1), None);
            // Two pooled buffers, then allocated ones (the test keeps every chunk).
            let pool = ChunkPool::filled(2, max_size).unwrap();
            let mut runs = Batcher::new(3, max_size, Duration::from_secs(1), pool);
            let (mut expected, mut got) = (Vec::new(), Vec::new());
            for lines in &datagrams {
                let mut datagram = String::new();
                let mut spans = Vec::new();
                for l in lines {
                    spans.push(datagram.len()..datagram.len() + l.text.len());
                    datagram.push_str(&l.text);
                    datagram.push_str(l.ending);
                }
                // The last line sometimes has no line ending at all.
                if lines.len() % 2 == 1 {
                    datagram.truncate(datagram.trim_end().len());
                }
                let datagram = datagram.as_bytes();
                let mut out = runs.datagram(datagram, now);
                for (l, span) in lines.iter().zip(spans) {
                    let raw = &datagram[span];
                    let rewrite = format!("{}!", l.text);
                    let line: &[u8] = if l.rewritten { rewrite.as_bytes() } else { raw };
                    per_line.append(l.group, line, now, &mut |r, c| expected.push((r, c.data, c.lines)));
                    let sealed = &mut |r, c: Chunk| got.push((r, c.data, c.lines));
                    if l.rewritten {
                        out.other(l.group, line, sealed);
                    } else {
                        out.line(l.group, raw, sealed);
                    }
                }
                out.finish();
            }
            per_line.seal_all(&mut |r, c| expected.push((r, c.data, c.lines)));
            runs.seal_all(&mut |r, c| got.push((r, c.data, c.lines)));
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn a_run_is_one_copy_of_the_datagram() {
        let now = Instant::now();
        let mut b = Batcher::new(2, 1 << 20, Duration::from_secs(1), None);
        let datagram = b"a 1\nb 2\nc 3\n";
        let mut out = b.datagram(datagram, now);
        for raw in datagram.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            out.line(1, raw, &mut |_, _| unreachable!());
        }
        // Dropping the appender copies the pending run.
        drop(out);
        let mut sealed = Vec::new();
        b.seal_all(&mut |r, c| sealed.push((r, c.data, c.lines)));
        assert_eq!(sealed, vec![(1, Bytes::from_static(datagram), 3)]);
    }

    #[test]
    fn chunks_take_the_pools_buffers_and_count_the_others() {
        let now = Instant::now();
        let pool = ChunkPool::filled(2, 64).unwrap().unwrap();
        let mut b = Batcher::new(1, 64, Duration::from_secs(1), Some(pool.clone()));
        let mut sealed = Vec::new();
        // 63 bytes and the newline fill a chunk: three chunks, three buffers.
        for _ in 0..3 {
            b.append(0, &[b'x'; 63], now, &mut |_, c| sealed.push(c));
        }
        assert_eq!(sealed.len(), 3);
        assert!(sealed.iter().all(|c| c.data.len() == 64 && c.lines == 1));
        assert_eq!((pool.free(), b.allocated()), (0, 1));
        // The sinks let go: the pool is full again, and the next chunks
        // come from it.
        drop(sealed);
        assert_eq!(pool.free(), 2);
        let mut again = Vec::new();
        for _ in 0..2 {
            b.append(0, &[b'y'; 63], now, &mut |_, c| again.push(c));
        }
        assert_eq!((pool.free(), b.allocated()), (0, 1));
        // A line larger than a chunk travels alone, in a buffer of its own.
        b.append(0, &[b'z'; 100], now, &mut |_, c| again.push(c));
        assert_eq!(again[2].data.len(), 101);
        assert_eq!(b.allocated(), 2);
        drop(again);
        assert_eq!(pool.free(), 2);
    }
}
