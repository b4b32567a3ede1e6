//! The fast path of the scanner, for the lines fleets actually send: short,
//! printable ASCII, no backslash, no quote (so no escapes and no string
//! fields), single spaces, numbers without exponents.
//!
//! It classifies bytes 32 at a time (AVX2; SSE2 and portable fallbacks) into
//! bitmasks of structural bytes (space, `,`, `=`), digits and newlines,
//! rejects to the full scanner on any byte it does not handle (quote,
//! backslash, control, DEL, non-ASCII), then walks the structure bit by bit
//! instead of byte by byte and validates numbers on the digit mask. It never reports
//! an error: anything unusual or invalid returns `None` and the full scanner
//! (`scan::scan_line`) decides, so the precise error reasons and every edge
//! case live in one place.
//!
//! Two ways in: a whole datagram classified at once (`DatagramMasks`, the
//! shards' path: each byte is classified once and the newline mask splits
//! the lines, with no separate newline search), or one line at a time
//! (`Masks`, for datagrams holding a byte the fast path declines, and for
//! `scan_line`). Both walk the same masks the same way (`walk`).
//!
//! Invariant (tested against the full scanner): `scan_with(l, _) == Some(x)` implies
//! `scan::scan_line(l) == Ok(x)`, and so does `scan_in(d, s, e, _)` for `l = d[s..e]`.

use super::{scan, Line};

/// Longest line the fast path takes (keeps the per-line masks on the stack;
/// such lines are far below `KEY_LEN_MAX`, so the key-length check cannot fire).
const LEN_MAX: usize = 1024;
const BLOCKS_MAX: usize = LEN_MAX / 64;
/// Integer digits that always fit i64/u64 (as `check_int_range`).
const INT_DIGITS_MAX: usize = 18;

/// Scan `raw` if it is a plain valid line; `None` means "ask the full
/// scanner". The masks are reusable (`Scanner`): nothing to clear per line,
/// since the walk reads only the blocks `classify` just wrote.
#[inline(always)]
pub(super) fn scan_with<'a>(raw: &'a [u8], masks: &mut Masks) -> Option<Line<'a>> {
    let n = raw.len();
    if n == 0 || n > LEN_MAX {
        return None;
    }
    masks.blocks = n.div_ceil(64);
    if !classify(raw, masks) {
        return None;
    }
    walk(raw, 0, n, masks.view())
}

/// Scan the line `datagram[start..end]` (without its newline) on the masks
/// of its whole datagram, which `DatagramMasks::classify` found plain; `None`
/// means "ask the full scanner".
#[inline(always)]
pub(super) fn scan_in<'a>(
    datagram: &'a [u8],
    start: usize,
    end: usize,
    masks: &DatagramMasks,
) -> Option<Line<'a>> {
    debug_assert!(start <= end && end <= datagram.len() && masks.len == datagram.len());
    let n = end - start;
    if n == 0 || n > LEN_MAX {
        return None;
    }
    walk(datagram, start, end, masks.view())
}

/// Index of the first `\n` in `hay`: the line splitter's search. Lines are
/// short, so a plain 32-byte loop beats a general-purpose `memchr` call
/// (whose setup and unrolling cost more than the ~150 bytes it searches).
#[inline]
pub(super) fn find_newline(hay: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::level() != x86::Level::Sse2 {
            // SAFETY: `level` reports AVX2 or better only where the CPU has AVX2.
            return unsafe { x86::find_newline_avx2(hay) };
        }
    }
    memchr::memchr(b'\n', hay)
}

/// Per 64-byte block of a line: which bytes are structural (space, `,`,
/// `=`, newline), ASCII digits and newlines. Only the line's `blocks` (and the spare
/// digits block after them) are meaningful.
pub(super) struct Masks {
    structural: [u64; BLOCKS_MAX],
    /// One spare zero block, so `digits` may always read the next block.
    digits: [u64; BLOCKS_MAX + 1],
    newlines: [u64; BLOCKS_MAX],
    blocks: usize,
}

impl Masks {
    pub(super) fn new() -> Masks {
        Masks {
            structural: [0; BLOCKS_MAX],
            digits: [0; BLOCKS_MAX + 1],
            newlines: [0; BLOCKS_MAX],
            blocks: 0,
        }
    }

    fn view(&self) -> View<'_> {
        View::of(&self.structural, &self.digits, self.blocks)
    }
}

/// The masks of a whole datagram (any length), grown to the largest one
/// seen and reused: the shards' path.
#[derive(Default)]
pub(super) struct DatagramMasks {
    structural: Vec<u64>,
    /// One spare zero block, as `Masks::digits`.
    digits: Vec<u64>,
    newlines: Vec<u64>,
    blocks: usize,
    /// Length of the datagram classified last.
    len: usize,
}

impl DatagramMasks {
    /// Classify `datagram`. `false`: it holds a byte the fast path declines
    /// (the masks are then incomplete; split and scan it line by line).
    #[inline]
    pub(super) fn classify(&mut self, datagram: &[u8]) -> bool {
        let blocks = datagram.len().div_ceil(64);
        if self.digits.len() < blocks + 1 {
            self.structural.resize(blocks, 0);
            self.digits.resize(blocks + 1, 0);
            self.newlines.resize(blocks, 0);
        }
        self.blocks = blocks;
        self.len = datagram.len();
        classify_into(
            datagram,
            Out::of(
                &mut self.structural,
                &mut self.digits,
                &mut self.newlines,
                blocks,
            ),
        )
    }

    /// Position of the first `\n` at or after `from` (`from < len`).
    #[inline(always)]
    pub(super) fn next_newline(&self, from: usize) -> Option<usize> {
        debug_assert!(from < self.len);
        let newlines = &self.newlines[..self.blocks];
        let mut block = from / 64;
        let mut bits = newlines[block] & (u64::MAX << (from % 64));
        while bits == 0 {
            block += 1;
            bits = *newlines.get(block)?;
        }
        Some(block * 64 + bits.trailing_zeros() as usize)
    }

    fn view(&self) -> View<'_> {
        View::of(&self.structural, &self.digits, self.blocks)
    }
}

/// The masks `walk` reads: `structural` covers every byte of the text the
/// positions index (`blocks` words), `digits` one spare zero word more.
#[derive(Clone, Copy)]
struct View<'m> {
    structural: &'m [u64],
    digits: &'m [u64],
}

impl<'m> View<'m> {
    /// The first `blocks` structural words, and the spare digits word.
    #[inline(always)]
    fn of(structural: &'m [u64], digits: &'m [u64], blocks: usize) -> Self {
        View {
            structural: &structural[..blocks],
            digits: &digits[..blocks + 1],
        }
    }

    /// Digit bits of `len` (1..=64) bytes from `start`, bit 0 = `start`.
    #[inline(always)]
    fn digits(&self, start: usize, len: usize) -> u64 {
        let (block, offset) = (start / 64, start % 64);
        // Two shifts, so an offset of 0 shifts the next block out entirely
        // (one shift by 64 would overflow) without a branch.
        debug_assert!(block + 1 < self.digits.len());
        // SAFETY: callers pass a byte of the text (`start` below its length),
        // so `block < blocks` and `block + 1 <= blocks < digits.len()`: both
        // inside `digits`, whose spare last entry is zero.
        let (this, next) = unsafe {
            (
                *self.digits.get_unchecked(block),
                *self.digits.get_unchecked(block + 1),
            )
        };
        let bits = (this >> offset) | ((next << 1) << (63 - offset));
        bits & ones(len)
    }
}

/// The low `len` bits set (`len` in 1..=64).
#[inline(always)]
fn ones(len: usize) -> u64 {
    debug_assert!((1..=64).contains(&len));
    u64::MAX >> (64 - len)
}

/// The structural bytes of a text from a start position on, in order.
/// A newline counts as structural: it ends a line's last token as the
/// text's end does, so the walk needs no bound of its own.
struct Structurals<'m> {
    masks: &'m [u64],
    block: usize,
    /// `block * 64`, kept rather than recomputed for every position.
    base: usize,
    bits: u64,
}

impl<'m> Structurals<'m> {
    #[inline(always)]
    fn new(masks: &'m [u64], start: usize) -> Self {
        let block = start / 64;
        Structurals {
            masks,
            block,
            base: block * 64,
            bits: masks[block] & (u64::MAX << (start % 64)),
        }
    }

    /// Position of the next structural byte, `None` at the end of the text.
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            self.block += 1;
            self.base += 64;
            self.bits = *self.masks.get(self.block)?;
        }
        let at = self.base + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(at)
    }
}

/// The byte at a position taken from the masks: a structural position (from
/// `Structurals`, which yields only set bits of the text's bytes) or a bit
/// of a value's masked digit bits (cut to the value's length), so such
/// positions are always below `text.len()`.
#[inline(always)]
fn byte(text: &[u8], at: usize) -> u8 {
    debug_assert!(at < text.len());
    // SAFETY: `at < text.len()`, by the invariant above.
    unsafe { *text.get_unchecked(at) }
}

/// Walk the line `text[start..end]` (`start < end`) on the masks of `text`,
/// which the classifier found free of bytes the fast path declines. The
/// line ends at a newline (structural) or at the text's end: the first
/// structural position at or past `end` is `end` itself, or there is none.
/// Positions are `text`'s; the `Line` is the line's.
#[inline(always)]
fn walk<'a>(text: &'a [u8], start: usize, end: usize, masks: View<'_>) -> Option<Line<'a>> {
    let (s, e) = (start, end);
    let raw = &text[s..e];
    let mut it = Structurals::new(masks.structural, s);
    // Leading spaces and an empty measurement are the full scanner's business.
    if raw[0] == b' ' || raw[0] == b',' {
        return None;
    }
    // Measurement: up to the first `,` or space (a bare `=` belongs to it).
    let mut at = it.next()?;
    while byte(text, at) == b'=' {
        at = it.next()?;
    }
    let measurement_end = at;
    let (tags_start, tags_end) = if byte(text, at) == b',' {
        let tags_start = at + 1;
        let mut seen = 0u64;
        let mut key_start = tags_start;
        loop {
            let equals = it.next()?;
            if byte(text, equals) != b'=' || equals == key_start {
                return None;
            }
            // A key is compared with the earlier ones only when one of them
            // had its signature (one bit of 64, from its length and first
            // byte): a handful of distinct keys rarely share one (`host` and
            // `pid` do; two keys of one length and first byte always do),
            // and a key that does costs a look back over the tags before it.
            let len = equals - key_start;
            let signature = 1u64 << ((len * 8 + byte(text, key_start) as usize) & 63);
            if seen & signature != 0
                && tag_key_seen(&text[tags_start..key_start], &text[key_start..equals])
            {
                return None;
            }
            seen |= signature;
            let value_end = it.next()?;
            if value_end == equals + 1 {
                return None;
            }
            match byte(text, value_end) {
                b' ' => {
                    at = value_end;
                    break (tags_start, value_end);
                }
                b',' => key_start = value_end + 1,
                // `=` in a value, or the line's end (a newline) before the fields.
                _ => return None,
            }
        }
    } else {
        (at, at)
    };
    // `text[at]` is the single space before the fields.
    let fields_start = at + 1;
    if fields_start >= e || text[fields_start] == b' ' {
        return None;
    }
    // A macro, not a closure: the closure was not inlined.
    macro_rules! line {
        ($fields_end:expr, $timestamp:expr, $timestamp_offset:expr) => {
            Line {
                raw,
                measurement: &text[s..measurement_end],
                tags: &text[tags_start..tags_end],
                fields: &text[fields_start..$fields_end],
                timestamp: $timestamp,
                timestamp_offset: $timestamp_offset,
                // The classifier turned away every line with a backslash.
                escaped: false,
            }
        };
    }
    let mut key_start = fields_start;
    loop {
        let equals = it.next()?;
        if byte(text, equals) != b'=' || equals == key_start {
            return None;
        }
        let value_end = it.next().unwrap_or(e);
        if value_end < e && byte(text, value_end) == b'=' {
            return None;
        }
        if !value_ok(text, equals + 1, value_end, masks) {
            return None;
        }
        if value_end == e {
            return Some(line!(e, None, e - s));
        }
        if byte(text, value_end) == b' ' {
            // Timestamp: the rest of the line, with no structural byte in it.
            let ts_start = value_end + 1;
            if ts_start == e || it.next().is_some_and(|at| at != e) {
                return None;
            }
            let timestamp = timestamp(text, ts_start, e, masks)?;
            return Some(line!(value_end, Some(timestamp), ts_start - s));
        }
        key_start = value_end + 1;
    }
}

/// Whether `key` is the key of one of the tags in `section`, the plain tag
/// section before it (`k=v,k=v,`: no backslash, so every `,` separates tags
/// and a tag's first `=` ends its key). The signature collisions' path.
#[cold]
#[inline(never)]
fn tag_key_seen(section: &[u8], key: &[u8]) -> bool {
    section
        .split(|&b| b == b',')
        .any(|tag| tag.split(|&b| b == b'=').next() == Some(key))
}

/// A field value `text[start..end]` without quotes or backslashes: a number
/// without exponent (`-?d+`, `-?d*.d*` with at least one digit, `-?d+i`,
/// `d+u`, within the digit counts whose range needs no check, so no float
/// can overflow: values are at most 64 bytes) or a boolean. Anything else,
/// including every invalid value, is `false`. Decided on the digit mask:
/// only the non-digit bytes (a point, sign, suffix or a boolean's letters)
/// are read.
#[inline(always)]
fn value_ok(text: &[u8], start: usize, end: usize, masks: View<'_>) -> bool {
    debug_assert!(start <= end && end <= text.len());
    let len = end - start;
    if len == 0 || len > 64 {
        return false;
    }
    // SAFETY: `start` is just past an `=` and `end` the next structural
    // position or the line's end, so `start <= end <= text.len()`.
    let v = unsafe { text.get_unchecked(start..end) };
    let others = !masks.digits(start, len) & ones(len);
    if others == 0 {
        return true;
    }
    let first = others.trailing_zeros() as usize;
    let rest = others & (others - 1);
    if rest == 0 {
        // One non-digit: a point, a leading sign, an integer suffix, or a
        // one-letter boolean. Not one `match` over the eight bytes: that
        // compiled to a jump table, one indirect jump per field value whose
        // target changes from field to field (floats, then `i` integers);
        // callgrind's branch model mispredicted it ≈2 times a line. Four
        // cases, the booleans folded by case, are direct compares.
        let c = byte(v, first);
        return if c == b'.' {
            len >= 2
        } else if c == b'i' || c == b'u' {
            first == len - 1 && (1..=INT_DIGITS_MAX).contains(&(len - 1))
        } else if c == b'-' {
            first == 0 && len >= 2
        } else {
            // `t`, `T`, `f`, `F`: setting bit 5 lowers exactly these to `t`, `f`.
            matches!(c | 0x20, b't' | b'f') && len == 1
        };
    }
    if first != 0 {
        return false;
    }
    match byte(v, 0) {
        // A leading sign, then a point or an `i` suffix.
        b'-' => {
            let second = rest.trailing_zeros() as usize;
            rest & (rest - 1) == 0
                && match byte(v, second) {
                    b'.' => len >= 3,
                    b'i' => second == len - 1 && (1..=INT_DIGITS_MAX).contains(&(len - 2)),
                    _ => false,
                }
        }
        b't' | b'T' | b'f' | b'F' => matches!(
            v,
            b"true" | b"True" | b"TRUE" | b"false" | b"False" | b"FALSE"
        ),
        _ => false,
    }
}

/// The timestamp `text[start..end]`: `-?d{1,19}` within the 1.x range. Not
/// `scan::scan_timestamp`: the digit mask already settles what that one
/// checks byte by byte (sharing it measured 4.6 % more scanner instructions).
#[inline(always)]
fn timestamp(text: &[u8], start: usize, end: usize, masks: View<'_>) -> Option<i64> {
    let n = end;
    let negative = text[start] == b'-';
    let from = start + negative as usize;
    let len = n - from;
    if len == 0 || len > 19 || masks.digits(from, len) != ones(len) {
        return None;
    }
    // 19 digits stay below 10^19 < 2^64. The leading `len % 8` digits first,
    // then groups of eight.
    let head = len % 8;
    let mut i = from + head;
    let mut value = 0u64;
    if head != 0 {
        if i >= 8 {
            // The eight bytes ending at `i`, the ones before the digits
            // (in the line or the text before it) replaced by '0' (the
            // first byte is the lowest).
            let keep = u64::MAX << (64 - 8 * head);
            let x = scan::load8(text, i - 8);
            value = scan::parse8((x & keep) | (0x3030_3030_3030_3030 & !keep));
        } else {
            for &d in &text[from..i] {
                value = value * 10 + (d - b'0') as u64;
            }
        }
    }
    while i < n {
        value = value * 100_000_000 + scan::parse8(scan::load8(text, i));
        i += 8;
    }
    if value > super::TIMESTAMP_MAX as u64 {
        return None;
    }
    let value = value as i64;
    Some(if negative { -value } else { value })
}

/// Where the classifiers write: one word per 64-byte block of the text
/// (`digits`: one spare word more, which they zero).
struct Out<'m> {
    structural: &'m mut [u64],
    digits: &'m mut [u64],
    newlines: &'m mut [u64],
}

impl<'m> Out<'m> {
    /// The first `blocks` words of each mask, and the spare digits word.
    #[inline(always)]
    fn of(
        structural: &'m mut [u64],
        digits: &'m mut [u64],
        newlines: &'m mut [u64],
        blocks: usize,
    ) -> Self {
        Out {
            structural: &mut structural[..blocks],
            digits: &mut digits[..blocks + 1],
            newlines: &mut newlines[..blocks],
        }
    }
}

/// Fill the masks of one line. Returns `false` when the line holds a byte
/// the fast path does not handle: `"`, `\`, a control byte (a newline
/// included), DEL or a non-ASCII byte.
#[inline(always)]
fn classify(raw: &[u8], masks: &mut Masks) -> bool {
    let blocks = masks.blocks;
    classify_into(
        raw,
        Out::of(
            &mut masks.structural,
            &mut masks.digits,
            &mut masks.newlines,
            blocks,
        ),
    ) && masks.newlines[..blocks].iter().all(|&w| w == 0)
}

/// Fill `out` for `text`. Returns `false`, as soon as a block holds one,
/// when `text` holds a byte the fast path does not handle other than a
/// newline (which has a mask of its own).
#[inline(always)]
fn classify_into(text: &[u8], out: Out<'_>) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match x86::level() {
            // SAFETY: `level` reports AVX2 only where the CPU has it.
            x86::Level::Avx2 => unsafe { x86::classify_avx2(text, out) },
            x86::Level::Sse2 => x86::classify_sse2(text, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        classify_portable(text, out)
    }
}

/// One block's masks: structural bytes (space, `,`, `=`), digits,
/// newlines, and whether it
/// holds a byte the fast path declines (a newline is not one).
type BlockMasks = (u64, u64, u64, bool);

/// Run `block` over every 64 bytes of `text`, stopping at the first block
/// with a declined byte. A partial last block is read as the text's last 64
/// bytes (overlapping the previous block) when the text is that long, else
/// from a copy padded with a plain byte (neither structural, digit, newline
/// nor declined).
#[inline(always)]
fn for_blocks(text: &[u8], out: Out<'_>, mut block: impl FnMut(&[u8; 64]) -> BlockMasks) -> bool {
    let n = text.len();
    let whole = n / 64;
    // Checked once here, so the stores below need no bounds checks.
    let blocks = n.div_ceil(64);
    assert!(
        out.structural.len() == blocks
            && out.newlines.len() == blocks
            && out.digits.len() == blocks + 1
    );
    for b in 0..whole {
        let (structural, digits, newlines, odd) =
            block(text[b * 64..b * 64 + 64].try_into().unwrap());
        if odd {
            return false;
        }
        // Newlines count as structural (`Structurals`).
        out.structural[b] = structural | newlines;
        out.digits[b] = digits;
        out.newlines[b] = newlines;
    }
    let tail = n % 64;
    if tail != 0 {
        let (structural, digits, newlines, odd) = if whole > 0 {
            // The text's last 64 bytes, overlapping the previous block: no
            // copy; keep the bits of the `tail` bytes not yet classified
            // (the others are in the text too, so their verdict stands).
            let (s, d, l, o) = block(text[n - 64..].try_into().unwrap());
            let shift = 64 - tail;
            (s >> shift, d >> shift, l >> shift, o)
        } else {
            let mut last = [b'a'; 64];
            last[..tail].copy_from_slice(text);
            block(&last)
        };
        if odd {
            return false;
        }
        out.structural[whole] = structural | newlines;
        out.digits[whole] = digits;
        out.newlines[whole] = newlines;
    }
    out.digits[blocks] = 0;
    true
}

#[cfg(not(target_arch = "x86_64"))]
fn classify_portable(text: &[u8], out: Out<'_>) -> bool {
    for_blocks(text, out, |bytes| {
        let (mut structural, mut digits, mut newlines, mut odd) = (0u64, 0u64, 0u64, false);
        for (i, &b) in bytes.iter().enumerate() {
            structural |= (matches!(b, b' ' | b',' | b'=') as u64) << i;
            digits |= (b.is_ascii_digit() as u64) << i;
            newlines |= ((b == b'\n') as u64) << i;
            odd |= b != b'\n' && (!(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\');
        }
        (structural, digits, newlines, odd)
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{for_blocks, Out};
    use std::arch::x86_64::*;
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

    /// The widest vector unit the scanner uses.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Level {
        Sse2 = 1,
        Avx2 = 2,
    }

    static LEVEL: AtomicU8 = AtomicU8::new(0);

    /// AVX2 where the CPU has it, unless `SLUICE_SIMD=sse2` (read once) asks
    /// for the SSE2 path, to compare the two or to work around a CPU issue.
    #[inline]
    pub(super) fn level() -> Level {
        match LEVEL.load(Relaxed) {
            1 => Level::Sse2,
            2 => Level::Avx2,
            _ => detect(),
        }
    }

    #[cold]
    fn detect() -> Level {
        let level = if std::is_x86_feature_detected!("avx2")
            && std::env::var("SLUICE_SIMD").as_deref() != Ok("sse2")
        {
            Level::Avx2
        } else {
            Level::Sse2
        };
        LEVEL.store(level as u8, Relaxed);
        level
    }

    /// Sixteen bytes at a time; SSE2 is part of the x86_64 baseline.
    pub(super) fn classify_sse2(text: &[u8], out: Out<'_>) -> bool {
        for_blocks(text, out, |bytes| {
            let (mut structural, mut digits, mut newlines, mut odd) = (0u64, 0u64, 0u64, 0u64);
            for q in 0..4 {
                // SAFETY: SSE2 is always available on x86_64; the load reads
                // 16 bytes inside the 64-byte array (`loadu`: any alignment).
                unsafe {
                    let x = _mm_loadu_si128(bytes.as_ptr().add(q * 16).cast());
                    let eq = |c: u8| _mm_cmpeq_epi8(x, _mm_set1_epi8(c as i8));
                    let l = eq(b'\n');
                    let s = _mm_or_si128(_mm_or_si128(eq(b' '), eq(b',')), eq(b'='));
                    let d = _mm_and_si128(
                        _mm_cmpgt_epi8(x, _mm_set1_epi8(b'/' as i8)),
                        _mm_cmplt_epi8(x, _mm_set1_epi8(b':' as i8)),
                    );
                    // Signed compare: bytes 0x00..0x1f and 0x80..0xff are
                    // below 0x20; the newline is not declined.
                    let o = _mm_andnot_si128(
                        l,
                        _mm_or_si128(
                            _mm_or_si128(_mm_cmplt_epi8(x, _mm_set1_epi8(0x20)), eq(0x7f)),
                            _mm_or_si128(eq(b'"'), eq(b'\\')),
                        ),
                    );
                    structural |= (_mm_movemask_epi8(s) as u16 as u64) << (q * 16);
                    digits |= (_mm_movemask_epi8(d) as u16 as u64) << (q * 16);
                    newlines |= (_mm_movemask_epi8(l) as u16 as u64) << (q * 16);
                    odd |= (_mm_movemask_epi8(o) as u16 as u64) << (q * 16);
                }
            }
            (structural, digits, newlines, odd != 0)
        })
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn find_newline_avx2(hay: &[u8]) -> Option<usize> {
        let newline = _mm256_set1_epi8(b'\n' as i8);
        let mut i = 0;
        while i + 32 <= hay.len() {
            // SAFETY: `i + 32 <= hay.len()`, so the 32-byte load stays inside
            // `hay` (`loadu`: any alignment); AVX2 is guaranteed by the caller.
            let hits = unsafe {
                let x = _mm256_loadu_si256(hay.as_ptr().add(i).cast());
                _mm256_movemask_epi8(_mm256_cmpeq_epi8(x, newline)) as u32
            };
            if hits != 0 {
                return Some(i + hits.trailing_zeros() as usize);
            }
            i += 32;
        }
        hay[i..].iter().position(|&b| b == b'\n').map(|p| i + p)
    }

    /// Byte classes for `classify_avx2`, looked up by nibble: a byte's class
    /// is `LOW[b & 15] & HIGH[b >> 4]`, so a bit is set only for the bytes
    /// whose low and high nibble both carry it.
    const SPACE_COMMA: u8 = 0x80; // 0x20, 0x2c
    const EQUALS: u8 = 0x40; // 0x3d
    const DIGIT: u8 = 0x20; // 0x30..=0x39
    /// Bytes the fast path declines: controls but the newline, non-ASCII,
    /// `"`, `\`, DEL — one bit each so their nibble pairs do not mix.
    const ODD: u8 = 0x1f;
    const ODD_C0: u8 = 0x10; // 0x00..=0x0f but 0x0a (the newline)
    const ODD_ANY: u8 = 0x01; // 0x10..=0x1f, 0x80..=0xff
    const ODD_QUOTE: u8 = 0x02; // 0x22
    const ODD_BACKSLASH: u8 = 0x04; // 0x5c
    const ODD_DEL: u8 = 0x08; // 0x7f
    const LOW: [u8; 16] = {
        let mut t = [ODD_ANY | ODD_C0; 16];
        t[0xa] = ODD_ANY;
        let mut d = 0;
        while d < 10 {
            t[d] |= DIGIT;
            d += 1;
        }
        t[0x0] |= SPACE_COMMA;
        t[0x2] |= ODD_QUOTE;
        t[0xc] |= SPACE_COMMA | ODD_BACKSLASH;
        t[0xd] |= EQUALS;
        t[0xf] |= ODD_DEL;
        t
    };
    const HIGH: [u8; 16] = {
        let mut t = [ODD_ANY; 16];
        t[0x0] = ODD_C0;
        t[0x2] = SPACE_COMMA | ODD_QUOTE;
        t[0x3] = EQUALS | DIGIT;
        t[0x4] = 0;
        t[0x5] = ODD_BACKSLASH;
        t[0x6] = 0;
        t[0x7] = ODD_DEL;
        t
    };

    /// Thirty-two bytes at a time: two nibble lookups (`vpshufb`) give each
    /// byte's class bits, which shift into the sign bit for `movemask`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn classify_avx2(text: &[u8], out: Out<'_>) -> bool {
        // SAFETY: the caller guarantees AVX2; the table loads read 16 bytes
        // from 16-byte arrays (`loadu`: any alignment).
        let (low, high) = unsafe {
            (
                _mm256_broadcastsi128_si256(_mm_loadu_si128(LOW.as_ptr().cast())),
                _mm256_broadcastsi128_si256(_mm_loadu_si128(HIGH.as_ptr().cast())),
            )
        };
        let nibble = _mm256_set1_epi8(0x0f);
        let newline = _mm256_set1_epi8(b'\n' as i8);
        let odd = _mm256_set1_epi8(ODD as i8);
        for_blocks(text, out, |bytes| {
            let (mut structural, mut digits, mut newlines) = (0u64, 0u64, 0u64);
            // Declined bytes only matter as "any in this block": OR the
            // classes and test once.
            let mut classes = _mm256_setzero_si256();
            for h in 0..2 {
                // SAFETY: the caller guarantees AVX2; the load reads 32 bytes
                // inside the 64-byte array (`loadu`: any alignment).
                unsafe {
                    let x = _mm256_loadu_si256(bytes.as_ptr().add(h * 32).cast());
                    let class = _mm256_and_si256(
                        _mm256_shuffle_epi8(low, _mm256_and_si256(x, nibble)),
                        _mm256_shuffle_epi8(
                            high,
                            _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble),
                        ),
                    );
                    classes = _mm256_or_si256(classes, class);
                    // Sign bit: SPACE_COMMA, or EQUALS shifted up by one.
                    let s = _mm256_or_si256(class, _mm256_add_epi8(class, class));
                    // DIGIT shifted up by two (16-bit lanes: what crosses into
                    // the next byte lands in its low bits, never the sign bit).
                    let d = _mm256_slli_epi16(class, 2);
                    let l = _mm256_cmpeq_epi8(x, newline);
                    structural |= (_mm256_movemask_epi8(s) as u32 as u64) << (h * 32);
                    digits |= (_mm256_movemask_epi8(d) as u32 as u64) << (h * 32);
                    newlines |= (_mm256_movemask_epi8(l) as u32 as u64) << (h * 32);
                }
            }
            (
                structural,
                digits,
                newlines,
                _mm256_testz_si256(classes, odd) == 0,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::scan;
    use super::*;
    use proptest::prelude::*;

    fn scan(raw: &[u8]) -> Option<Line<'_>> {
        scan_with(raw, &mut Masks::new())
    }

    /// The fast path's answer, if any, is exactly the full scanner's.
    fn agrees(text: &[u8]) -> Result<bool, TestCaseError> {
        let Some(fast) = scan(text) else {
            return Ok(false);
        };
        let full = scan::scan_line(text).map_err(|e| {
            TestCaseError::fail(format!(
                "fast accepts, full rejects {:?}: {e:?}",
                String::from_utf8_lossy(text)
            ))
        })?;
        prop_assert_eq!(fast, full);
        Ok(true)
    }

    const SEEDS: &[&str] = &[
        "cpu,host=host0001,region=us-east-1,cpu=cpu1 usage_user=53.24,usage_system=98.40,seq=000000000004i 1795985842709494595",
        "mem used=1u,free=-2i,ok=t,bad=FALSE,x=.5,y=-1.,z=7 -1",
        "m=x,a=b f=1",
        "disk,path=/var/lib,fs=ext4 free=123456789012345678i,pct=0.1",
    ];

    #[test]
    fn takes_typical_lines() {
        for seed in SEEDS {
            assert!(
                agrees(seed.as_bytes()).unwrap(),
                "fast path declined {seed:?}"
            );
        }
        // Long enough to span several 64-byte blocks.
        let long = format!(
            "m,{} v=1 5",
            (0..15)
                .map(|i| format!("k{i}=v{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(agrees(long.as_bytes()).unwrap());
    }

    /// Every byte as the one non-digit of a value, alone and beside digits
    /// on either side: the fast path's value check (direct compares, the
    /// booleans folded by case) says what the full scanner says.
    #[test]
    fn one_non_digit_values_agree_for_every_byte() {
        for b in 0..=255u8 {
            for (before, after) in [("", ""), ("1", ""), ("", "1"), ("12", "34"), ("-", "")] {
                let mut text = b"m f=".to_vec();
                text.extend_from_slice(before.as_bytes());
                text.push(b);
                text.extend_from_slice(after.as_bytes());
                agrees(&text).unwrap();
            }
        }
        for taken in [
            "m f=t", "m f=F", "m f=1.", "m f=.5", "m f=7i", "m f=7u", "m f=-7",
        ] {
            assert!(
                scan(taken.as_bytes()).is_some(),
                "fast path declined {taken:?}"
            );
        }
    }

    /// The newline search's 32-byte steps and byte tail: a single newline at
    /// every position of every length up to 200, or none.
    #[test]
    fn find_newline_at_every_position() {
        for len in 0..200 {
            let mut hay = vec![b'a'; len];
            assert_eq!(find_newline(&hay), None, "len {len}");
            for at in 0..len {
                hay[at] = b'\n';
                assert_eq!(find_newline(&hay), Some(at), "len {len} at {at}");
                hay[at] = b'a';
            }
        }
    }

    /// Duplicate tag keys are declined, and distinct ones taken, whether
    /// or not their signatures collide: every pair of keys from a set with
    /// shared signatures (`host`/`pid`, same length and first byte), in
    /// both orders, with a third key between them.
    #[test]
    fn duplicate_tags_whatever_their_signature() {
        let keys = [
            "host", "pid", "path", "port", "h", "p", "hx", "region", "cpu", "c",
        ];
        for a in keys {
            for b in keys {
                for middle in ["", ",zz=1"] {
                    let line = format!("m,{a}=1{middle},{b}=2 v=1");
                    let taken = agrees(line.as_bytes()).unwrap();
                    assert_eq!(taken, a != b, "{line}");
                }
            }
        }
        // Many tags: signatures collide often; only the true duplicate counts.
        let many: Vec<String> = (0..60).map(|i| format!("k{i}=v")).collect();
        let line = format!("m,{} v=1", many.join(","));
        assert!(agrees(line.as_bytes()).unwrap(), "{line}");
        for dup in ["k0", "k37", "k59"] {
            let line = format!("m,{},{dup}=x v=1", many.join(","));
            assert!(!agrees(line.as_bytes()).unwrap(), "{line}");
        }
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        for text in [
            "",
            " cpu v=1",
            "cpu  v=1",
            "cpu v=1 ",
            "cpu v=1  5",
            "cpu v=\"s\"",
            r"cpu\ x v=1",
            "cpu v=1e3",
            "cpu v=1234567890123456789i",
            "cpu,a=1,a=2 v=1",
            "cpu v=+1",
            "cpu v=1 12345678901234567890",
            "cpu v=1 9223372036854775807",
            "cpu v=é",
        ] {
            assert!(scan(text.as_bytes()).is_none(), "fast path took {text:?}");
        }
    }

    /// Every classifier gives the byte-by-byte reference's verdict and, on
    /// text it accepts, its masks; the per-line `classify` also declines
    /// newlines.
    fn classifiers_match_reference(bytes: &[u8]) -> Result<(), TestCaseError> {
        let blocks = bytes.len().div_ceil(64);
        let zeros = |n: usize| vec![0u64; n];
        let (mut structural, mut digits, mut newlines) =
            (zeros(blocks), zeros(blocks + 1), zeros(blocks));
        let mut odd = false;
        for (i, &b) in bytes.iter().enumerate() {
            structural[i / 64] |= (matches!(b, b' ' | b',' | b'=' | b'\n') as u64) << (i % 64);
            digits[i / 64] |= (b.is_ascii_digit() as u64) << (i % 64);
            newlines[i / 64] |= ((b == b'\n') as u64) << (i % 64);
            odd |= b != b'\n' && (!(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\');
        }
        let check = |name: &str, run: &dyn Fn(Out<'_>) -> bool| -> Result<(), TestCaseError> {
            // Garbage in the masks beforehand: the classifier must write every word.
            let (mut s, mut d, mut l) = (vec![!0; blocks], vec![!0; blocks + 1], vec![!0; blocks]);
            let plain = run(Out {
                structural: &mut s,
                digits: &mut d,
                newlines: &mut l,
            });
            prop_assert_eq!(plain, !odd, "{}", name);
            if plain {
                prop_assert_eq!(&s, &structural, "{}", name);
                prop_assert_eq!(&d, &digits, "{}", name);
                prop_assert_eq!(&l, &newlines, "{}", name);
            }
            Ok(())
        };
        #[cfg(target_arch = "x86_64")]
        {
            check("sse2", &|out| x86::classify_sse2(bytes, out))?;
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 support was just checked.
                check("avx2", &|out| unsafe { x86::classify_avx2(bytes, out) })?;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        check("portable", &|out| classify_portable(bytes, out))?;
        check("dispatch", &|out| classify_into(bytes, out))?;
        if bytes.len() <= LEN_MAX {
            let mut line = Masks::new();
            line.blocks = blocks;
            let newline = newlines.iter().any(|&w| w != 0);
            prop_assert_eq!(classify(bytes, &mut line), !odd && !newline);
            if !odd && !newline {
                prop_assert_eq!(&line.structural[..blocks], &structural[..]);
                prop_assert_eq!(&line.digits[..blocks + 1], &digits[..]);
            }
        }
        Ok(())
    }

    /// Each of the 256 byte values, alone in a plain line and at every
    /// position of a block (the nibble tables must not mix classes).
    #[test]
    fn classifiers_know_every_byte() {
        for b in 0..=255u8 {
            for at in 0..64 {
                let mut line = vec![b'a'; 64 + at % 7];
                line[at] = b;
                classifiers_match_reference(&line).unwrap();
                classifiers_match_reference(&line[..at + 1]).unwrap();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        /// Random edits of typical lines, biased to the bytes that matter.
        #[test]
        fn agrees_with_full_scanner_on_edits(
            seed in 0usize..SEEDS.len(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                &b"a=, 0129-.iuetfTF+\"\\\t#x"[..])), 1..5),
        ) {
            let mut line = SEEDS[seed].as_bytes().to_vec();
            for (at, op, byte) in edits {
                if line.is_empty() {
                    line.push(byte);
                    continue;
                }
                let p = at.index(line.len());
                match op {
                    0 => line.insert(p, byte),
                    1 => {
                        line.remove(p);
                    }
                    _ => line[p] = byte,
                }
            }
            agrees(&line)?;
        }

        /// Both vector classifiers agree with a byte-by-byte reference.
        #[test]
        fn classifiers_agree(bytes in proptest::collection::vec(any::<u8>(), 1..LEN_MAX)) {
            classifiers_match_reference(&bytes)?;
        }

        /// ... also on whole datagrams of accepted bytes and newlines, the
        /// masks compared word for word, past the per-line limit.
        #[test]
        fn classifiers_agree_on_plain_text(bytes in proptest::collection::vec(
            prop_oneof![8 => prop::sample::select(&b"ab=, 019.\n"[..]), 1 => (0x20u8..0x7f).prop_filter("a byte the fast path takes", |b| *b != b'"' && *b != b'\\')], 1..3000)) {
            classifiers_match_reference(&bytes)?;
        }

        /// `DatagramMasks::next_newline` finds what `memchr` finds, from
        /// every position.
        #[test]
        fn next_newline_is_memchr(bytes in proptest::collection::vec(
            prop_oneof![30 => (0x20u8..0x7f).prop_filter("a byte the fast path takes", |b| *b != b'"' && *b != b'\\'), 1 => Just(b'\n')], 1..700)) {
            let mut masks = DatagramMasks::default();
            prop_assert!(masks.classify(&bytes));
            for from in 0..bytes.len() {
                prop_assert_eq!(
                    masks.next_newline(from),
                    memchr::memchr(b'\n', &bytes[from..]).map(|p| from + p)
                );
            }
        }

        #[test]
        fn find_newline_is_memchr(bytes in proptest::collection::vec(
            prop_oneof![20 => any::<u8>(), 1 => Just(b'\n')], 0..300)) {
            prop_assert_eq!(find_newline(&bytes), memchr::memchr(b'\n', &bytes));
        }

        #[test]
        fn agrees_with_full_scanner_on_bytes(bytes in proptest::collection::vec(
            prop_oneof![6 => prop::sample::select(&b"ab=, 01.-it"[..]), 1 => any::<u8>()], 0..200)) {
            agrees(&bytes)?;
        }
    }
}
