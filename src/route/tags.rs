//! `tags` rules: every `(key, value)` pair of the rule among a line's tags.
//!
//! The general way splits the tag section on unescaped separators and
//! compares each tag unescaped (`tags_match_split`). Nearly every line has
//! no backslash, and then every `,` separates two tags and a tag's first `=`
//! ends its key: a plain pair is present exactly when `key=value` starts at
//! a tag start (the section's first byte, or one after a `,`) and ends at a
//! `,` or the section's end. `has_pair` finds the tag starts sixteen bytes
//! at a time and compares the needle only where a tag starts with its first
//! byte: one compare per line for a rule on a key every line has.
use crate::parse::{self, Escape};

/// A compiled `tags` rule: its `(key, value)` pairs (unescaped), and, when
/// every key and value is non-empty and holds no byte that line protocol
/// escapes in tags or that separates them (`,` `=` space `\\` `"`), each
/// pair's `key=value` as one needle.
#[derive(Clone, Debug)]
pub(super) struct TagsRule {
    pub(super) pairs: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) needles: Option<Vec<Box<[u8]>>>,
}

impl TagsRule {
    pub(super) fn new(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> TagsRule {
        let plain = |b: &[u8]| {
            !b.iter()
                .any(|c| matches!(c, b',' | b'=' | b' ' | b'\\' | b'"'))
        };
        let needles = pairs
            .iter()
            .all(|(k, v)| !k.is_empty() && !v.is_empty() && plain(k) && plain(v))
            .then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| [&k[..], b"=", &v[..]].concat().into_boxed_slice())
                    .collect()
            });
        TagsRule { pairs, needles }
    }

    /// Every pair is among the line's tags (unescaped, exact bytes).
    /// `escaped`: the line may hold a backslash (`Line::escaped`).
    #[inline]
    pub(super) fn matches(&self, tag_section: &[u8], escaped: bool) -> bool {
        match &self.needles {
            Some(needles) if !escaped || memchr::memchr(b'\\', tag_section).is_none() => {
                has_pairs(tag_section, needles)
            }
            _ => tags_match_split(tag_section, &self.pairs),
        }
    }
}

/// Every needle (`key=value`) is a whole tag of a backslash-free, non-empty
/// tag section.
#[inline(always)]
pub(super) fn has_pairs(section: &[u8], needles: &[Box<[u8]>]) -> bool {
    !section.is_empty() && needles.iter().all(|needle| has_pair(section, needle))
}

/// Every `(key, value)` of `pairs` is among the tags of `tag_section`,
/// split on unescaped separators and compared unescaped: the general way,
/// for sections with backslashes and for pairs that are not plain.
pub(super) fn tags_match_split(tag_section: &[u8], pairs: &[(Vec<u8>, Vec<u8>)]) -> bool {
    !tag_section.is_empty()
        && pairs.iter().all(|(key, value)| {
            parse::tags(tag_section).any(|(k, v)| {
                parse::unescaped_eq(k, Escape::TagKey, key)
                    && parse::unescaped_eq(v, Escape::TagValue, value)
            })
        })
}

/// `needle` (`key=value`, non-empty) is a whole tag of a backslash-free tag
/// section: it starts at the section's start or after a `,`, and is
/// followed by the end or a `,`.
///
/// The candidates are the bytes equal to the needle's first byte whose
/// previous byte is a `,` (or that open the section), found for up to 64
/// start positions at a time, sixteen bytes per compare; only those are
/// compared with the needle. A section shorter than sixteen bytes is copied
/// into a zeroed block first.
#[inline(always)]
pub(super) fn has_pair(section: &[u8], needle: &[u8]) -> bool {
    let (n, len) = (section.len(), needle.len());
    if len == 0 || len > n {
        return false;
    }
    // The last byte a whole-needle occurrence can start at.
    let last = n - len;
    if n < 16 || last >= 64 {
        return has_pair_windows(section, needle);
    }
    // The common case, a section of 16 bytes or more whose starts all lie
    // in its first 64 bytes: one window, inlined.
    let (commas, firsts) = window_masks(section, 0, last, needle[0]);
    any_whole(section, needle, 0, firsts & ((commas << 1) | 1))
}

/// Whether `needle` is a whole tag at one of the `candidates` (bit `i`:
/// start `from + i`, each at most `section.len() - needle.len()`): it ends
/// at a `,` or the section's end.
#[inline(always)]
fn any_whole(section: &[u8], needle: &[u8], from: usize, mut candidates: u64) -> bool {
    while candidates != 0 {
        let at = from + candidates.trailing_zeros() as usize;
        let end = at + needle.len();
        if (end == section.len() || section[end] == b',') && eq_bytes(&section[at..end], needle) {
            return true;
        }
        candidates &= candidates - 1;
    }
    false
}

/// `has_pair` for any section: windows of up to 64 start positions. A
/// section shorter than sixteen bytes is copied into a zeroed block first.
#[inline(never)]
fn has_pair_windows(section: &[u8], needle: &[u8]) -> bool {
    let (n, len) = (section.len(), needle.len());
    let last = n - len;
    let mut block = [0u8; 16];
    let data: &[u8] = if n >= 16 {
        section
    } else {
        block[..n].copy_from_slice(section);
        &block
    };
    // Bit 0 of the window: whether its first byte follows a `,` (the
    // section's start counts as one).
    let mut after_comma = 1u64;
    let mut from = 0;
    loop {
        let (commas, firsts) = window_masks(data, from, last, needle[0]);
        if any_whole(
            section,
            needle,
            from,
            firsts & ((commas << 1) | after_comma),
        ) {
            return true;
        }
        if last - from < 64 {
            return false;
        }
        after_comma = commas >> 63;
        from += 64;
    }
}

/// `block_masks` for the start positions `from..=last`, at most 64 of them:
/// bit `i` is byte `from + i`. `data` holds at least sixteen bytes; a block
/// that would run past its end is loaded from its last sixteen and shifted.
#[inline(always)]
fn window_masks(data: &[u8], from: usize, last: usize, first: u8) -> (u64, u64) {
    // The last start position in this window, as an offset from `from`.
    let span = (last - from).min(63);
    let block = |at: usize| {
        let base = at.min(data.len() - 16);
        let (c, f) = block_masks(&data[base..base + 16], first);
        (u64::from(c >> (at - base)), u64::from(f >> (at - base)))
    };
    let (mut commas, mut firsts) = block(from);
    let mut q = 16;
    while q <= span {
        let (c, f) = block(from + q);
        commas |= c << q;
        firsts |= f << q;
        q += 16;
    }
    let keep = u64::MAX >> (63 - span);
    (commas & keep, firsts & keep)
}

/// Bit `i` of the first mask: `bytes[i]` is a `,`; of the second: it is `first`.
#[inline(always)]
fn block_masks(bytes: &[u8], first: u8) -> (u32, u32) {
    debug_assert_eq!(bytes.len(), 16);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        assert!(bytes.len() >= 16);
        // SAFETY: SSE2 is part of the x86_64 baseline; the load reads the
        // sixteen bytes of `bytes` (checked above; `loadu`: any alignment).
        unsafe {
            let x = _mm_loadu_si128(bytes.as_ptr().cast());
            let mask = |c: u8| _mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(c as i8))) as u32;
            (mask(b','), mask(first))
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        block_masks_portable(bytes, first)
    }
}

/// `block_masks` a byte at a time: the reference, and other architectures' way.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn block_masks_portable(bytes: &[u8], first: u8) -> (u32, u32) {
    bytes[..16]
        .iter()
        .enumerate()
        .fold((0, 0), |(commas, firsts), (i, &b)| {
            (
                commas | u32::from(b == b',') << i,
                firsts | u32::from(b == first) << i,
            )
        })
}

/// `a == b` for slices of equal length; up to sixteen bytes as two
/// overlapping words each instead of a `memcmp` call.
#[inline(always)]
pub(super) fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: a tag start (0 or after `,`), the needle, then `,` or the end.
    fn has_pair_reference(section: &[u8], needle: &[u8]) -> bool {
        (0..section.len()).any(|at| {
            (at == 0 || section[at - 1] == b',')
                && section[at..].starts_with(needle)
                && matches!(section.get(at + needle.len()), None | Some(b','))
        })
    }

    #[test]
    fn pairs_at_every_offset_and_section_length() {
        // The needle at each offset of sections from 1 to 160 bytes, so
        // every block and window boundary, the shifted last block and the
        // short-section copy are crossed.
        let needle = b"region=us-east-1";
        for n in 1..160 {
            for at in 0..n {
                let mut section = vec![b'x'; n];
                if at > 0 {
                    section[at - 1] = b',';
                }
                let end = (at + needle.len()).min(n);
                section[at..end].copy_from_slice(&needle[..end - at]);
                if end < n {
                    section[end] = b',';
                }
                assert_eq!(
                    has_pair(&section, needle),
                    has_pair_reference(&section, needle),
                    "{}",
                    String::from_utf8_lossy(&section)
                );
            }
        }
    }

    #[test]
    fn eq_bytes_at_every_length() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n as u8).collect();
            assert!(eq_bytes(&a, &a.clone()));
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 0x20;
                assert!(!eq_bytes(&a, &b), "{n} {i}");
            }
            assert!(!eq_bytes(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn has_pair_agrees_with_its_definition(
            section in proptest::collection::vec(prop::sample::select(&b"ab=,x"[..]), 0..200),
            needle in proptest::collection::vec(prop::sample::select(&b"ab=x"[..]), 1..20),
        ) {
            prop_assert_eq!(has_pair(&section, &needle), has_pair_reference(&section, &needle));
        }

        #[test]
        fn block_masks_agree_with_the_portable_way(
            bytes in proptest::collection::vec(any::<u8>(), 16),
            first in any::<u8>(),
        ) {
            prop_assert_eq!(block_masks(&bytes, first), block_masks_portable(&bytes, first));
        }
    }
}
