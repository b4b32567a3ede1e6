//! Batching: each shard appends accepted lines to an open chunk per route.
//! A chunk is sealed at a size or age limit into a refcounted [`Chunk`] that
//! every sink subscribed to the route shares (built once, never copied per
//! sink). A line is never split across chunks. Pure code: the caller passes
//! the clock in.
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::route::RouteId;

/// A sealed run of whole lines, each ending in `\n`.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub data: Bytes,
    pub lines: u32,
}

struct OpenChunk {
    buf: BytesMut,
    lines: u32,
    /// When the first line went in; `None` while empty.
    opened: Option<Instant>,
}

/// The open chunks of one shard, one per route.
pub struct Batcher {
    open: Vec<OpenChunk>,
    max_size: usize,
    max_age: Duration,
}

impl Batcher {
    pub fn new(routes: usize, max_size: usize, max_age: Duration) -> Batcher {
        assert!(max_size > 0);
        Batcher {
            open: (0..routes)
                .map(|_| OpenChunk {
                    buf: BytesMut::new(),
                    lines: 0,
                    opened: None,
                })
                .collect(),
            max_size,
            max_age,
        }
    }

    /// Append one line (without its newline; one is added). Calls `sealed` with
    /// the chunk this append completed, if any: the previous contents when the
    /// line would not fit, and/or this chunk once it reaches `max_size`.
    #[inline]
    pub fn append(
        &mut self,
        route: RouteId,
        line: &[u8],
        now: Instant,
        sealed: &mut impl FnMut(RouteId, Chunk),
    ) {
        let max_size = self.max_size;
        let open = &mut self.open[route as usize];
        let needed = line.len() + 1;
        if open.lines > 0 && open.buf.len() + needed > max_size {
            sealed(route, Self::seal(open));
        }
        if open.lines == 0 {
            if open.buf.capacity() < needed.max(max_size) {
                // One allocation per chunk, sized so typical chunks never grow.
                open.buf = BytesMut::with_capacity(needed.max(max_size));
            }
            open.opened = Some(now);
        }
        open.buf.extend_from_slice(line);
        open.buf.extend_from_slice(b"\n");
        open.lines += 1;
        if open.buf.len() >= max_size {
            sealed(route, Self::seal(open));
        }
    }

    /// Seal every chunk that has been open for `max_age` or longer.
    pub fn seal_expired(&mut self, now: Instant, sealed: &mut impl FnMut(RouteId, Chunk)) {
        for (route, open) in self.open.iter_mut().enumerate() {
            if let Some(opened) = open.opened {
                if now.saturating_duration_since(opened) >= self.max_age {
                    sealed(route as RouteId, Self::seal(open));
                }
            }
        }
    }

    /// Seal every non-empty chunk (shutdown).
    pub fn seal_all(&mut self, sealed: &mut impl FnMut(RouteId, Chunk)) {
        for (route, open) in self.open.iter_mut().enumerate() {
            if open.lines > 0 {
                sealed(route as RouteId, Self::seal(open));
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

    fn seal(open: &mut OpenChunk) -> Chunk {
        let lines = std::mem::take(&mut open.lines);
        open.opened = None;
        Chunk {
            data: open.buf.split().freeze(),
            lines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(
        b: &mut Batcher,
        lines: &[(&str, RouteId)],
        now: Instant,
    ) -> Vec<(RouteId, String, u32)> {
        let mut out = Vec::new();
        for (line, route) in lines {
            b.append(*route, line.as_bytes(), now, &mut |r, c| {
                out.push((r, String::from_utf8(c.data.to_vec()).unwrap(), c.lines))
            });
        }
        out
    }

    #[test]
    fn seals_at_size_without_splitting_lines() {
        let now = Instant::now();
        let mut b = Batcher::new(1, 20, Duration::from_secs(1));
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
        let mut b = Batcher::new(1, 10, Duration::from_secs(1));
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
    fn routes_have_separate_chunks() {
        let now = Instant::now();
        let mut b = Batcher::new(2, 1 << 20, Duration::from_secs(1));
        assert!(collect(&mut b, &[("a", 0), ("b", 1), ("c", 0)], now).is_empty());
        let mut out = Vec::new();
        b.seal_all(&mut |r, c| out.push((r, c.data, c.lines)));
        assert_eq!(out[0], (0, Bytes::from_static(b"a\nc\n"), 2));
        assert_eq!(out[1], (1, Bytes::from_static(b"b\n"), 1));
    }

    #[test]
    fn seals_at_age() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2, 1 << 20, Duration::from_millis(100));
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
}
