//! Tag splitting and unescaping without allocation, for the router.
//!
//! Unescaping is InfluxDB 1.x's `bytes.Replace(in, "\\"+c, c)` for each `c`
//! of the token's escape set, done in one left-to-right pass: a backslash
//! followed by a byte of the set is dropped, every other backslash is kept.
//! The two agree because the patterns cannot overlap (cases 24–27).

use super::scan::skip_plain;
use super::Escape;

/// Whether `b` is in the escape set of `kind`.
#[inline(always)]
fn escapable(kind: Escape, b: u8) -> bool {
    match kind {
        Escape::Measurement => b == b',' || b == b' ',
        Escape::TagKey | Escape::TagValue | Escape::FieldKey => b == b',' || b == b' ' || b == b'=',
    }
}

/// Compare an escaped token with a plain (unescaped) byte string, without allocating.
pub fn unescaped_eq(escaped: &[u8], kind: Escape, plain: &[u8]) -> bool {
    // Fast path: most tokens hold no backslash and compare as they are.
    if memchr::memchr(b'\\', escaped).is_none() {
        return escaped == plain;
    }
    // An escaped token is never shorter than its plain form.
    if plain.len() > escaped.len() {
        return false;
    }
    let mut i = 0;
    let mut j = 0;
    while i < escaped.len() {
        let mut b = escaped[i];
        if b == b'\\' && i + 1 < escaped.len() && escapable(kind, escaped[i + 1]) {
            i += 1;
            b = escaped[i];
        }
        if plain.get(j) != Some(&b) {
            return false;
        }
        i += 1;
        j += 1;
    }
    j == plain.len()
}

/// Append the unescaped form of `escaped` to `out`.
pub fn unescape_into(escaped: &[u8], kind: Escape, out: &mut Vec<u8>) {
    let mut rest = escaped;
    while let Some(p) = memchr::memchr(b'\\', rest) {
        match rest.get(p + 1) {
            Some(&next) if escapable(kind, next) => {
                out.extend_from_slice(&rest[..p]);
                out.push(next);
                rest = &rest[p + 2..];
            }
            _ => {
                out.extend_from_slice(&rest[..=p]);
                rest = &rest[p + 1..];
            }
        }
    }
    out.extend_from_slice(rest);
}

/// Iterator over the `(key, value)` pairs of an escaped tag section, still escaped.
///
/// Splits at `=` and `,` not preceded by a backslash, the same rule the
/// scanner used to validate the section. Stops early on malformed input.
#[derive(Clone, Debug)]
pub struct Tags<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tags<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(eq) = find_unescaped(self.rest, b'=') else {
            self.rest = &[];
            return None;
        };
        let key = &self.rest[..eq];
        let after = &self.rest[eq + 1..];
        let (value, rest) = match find_unescaped(after, b',') {
            Some(c) => (&after[..c], &after[c + 1..]),
            None => (after, &[][..]),
        };
        self.rest = rest;
        Some((key, value))
    }
}

/// Iterator over the `(key, value)` pairs of an escaped tag section, still escaped.
pub fn tags(tag_section: &[u8]) -> Tags<'_> {
    Tags { rest: tag_section }
}

/// First `needle` (`=` or `,`) in `hay` whose previous byte is not a
/// backslash. Walks the section like the scanner does: plain runs eight
/// bytes at a time, and a backslash escapes a run of backslashes and the byte
/// after it. Short haystacks make this cheaper than a `memchr` call per token.
#[inline]
fn find_unescaped(hay: &[u8], needle: u8) -> Option<usize> {
    let n = hay.len();
    let mut i = 0;
    loop {
        i = skip_plain::<true>(hay, i);
        if i >= n {
            return None;
        }
        let b = hay[i];
        if b == needle {
            return Some(i);
        }
        i += 1;
        if b == b'\\' {
            while i < n && hay[i] == b'\\' {
                i += 1;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn find_unescaped_is_the_previous_byte_rule(
            hay in proptest::collection::vec(prop::sample::select(
                &[b'a', b'=', b',', b'\\', b' ', 0u8, 0xc3][..]), 0..40),
        ) {
            for needle in [b'=', b','] {
                let expected = (0..hay.len())
                    .find(|&p| hay[p] == needle && (p == 0 || hay[p - 1] != b'\\'));
                prop_assert_eq!(find_unescaped(&hay, needle), expected);
            }
        }
    }
}
