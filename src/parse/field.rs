//! Field decoding for `explain` and tests: off the hot path, which only
//! validates fields (see `scan::scan_fields`).

use super::scan::{self, Number};

/// A decoded field value. Strings stay escaped (see `unescape_str_into`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    /// Escaped contents between the quotes.
    Str(&'a [u8]),
}

/// Iterator over the fields of a field section: `(escaped key, value)`.
///
/// Yields fields in the order written, duplicates included (case 36:
/// materialise last-wins). Stops at the first malformed field, so it never
/// panics on input that `scan_line` did not accept.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

/// Iterator over the fields of an escaped field section (`Line::fields`).
pub fn fields(field_section: &[u8]) -> Fields<'_> {
    Fields {
        rest: field_section,
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], FieldValue<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.rest;
        self.rest = &[];
        let eq = find_key_end(b)?;
        let (end, value) = decode_value(b, eq + 1)?;
        if b.get(end) == Some(&b',') {
            self.rest = &b[end + 1..];
        }
        Some((&b[..eq], value))
    }
}

/// Index of the `=` that ends the first field key, with 1.x's field rule:
/// a backslash skips the next byte.
fn find_key_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'=' if i > 0 => return Some(i),
            b'\\' => i += 2,
            b'=' | b',' | b' ' => return None,
            _ => i += 1,
        }
    }
    None
}

fn decode_value(b: &[u8], i: usize) -> Option<(usize, FieldValue<'_>)> {
    let end = scan::scan_value(b, i).ok()?;
    let text = &b[i..end];
    let value = match text[0] {
        b'"' => FieldValue::Str(&text[1..text.len() - 1]),
        b't' | b'T' | b'f' | b'F' => FieldValue::Bool(scan::scan_bool(b, i).ok()?.1),
        _ => match scan::scan_number(b, i).ok()?.1 {
            Number::Float => FieldValue::Float(std::str::from_utf8(text).ok()?.parse().ok()?),
            Number::Int => {
                let s = std::str::from_utf8(&text[..text.len() - 1]).ok()?;
                FieldValue::Int(s.parse().ok()?)
            }
            Number::UInt => {
                let s = std::str::from_utf8(&text[..text.len() - 1]).ok()?;
                FieldValue::UInt(s.parse().ok()?)
            }
        },
    };
    Some((end, value))
}

/// Append the unescaped contents of a string field value (`FieldValue::Str`)
/// to `out`. Only `\\` and `\"` are escapes (1.x; case 14 diverges from v2,
/// which also turns `\t` `\r` `\n` into control bytes).
pub fn unescape_str_into(escaped: &[u8], out: &mut Vec<u8>) {
    let mut rest = escaped;
    while let Some(p) = memchr::memchr(b'\\', rest) {
        match rest.get(p + 1) {
            Some(&next @ (b'\\' | b'"')) => {
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

/// Whether a field section names the same key twice (case 36). Accepted by
/// the scanner; this lets the sanity stage count `duplicate_field`.
/// Quadratic in the number of fields, so call it off the hot path.
pub fn has_duplicate_field(field_section: &[u8]) -> bool {
    let mut outer = fields(field_section);
    while let Some((key, _)) = outer.next() {
        if outer.clone().any(|(k, _)| k == key) {
            return true;
        }
    }
    false
}
