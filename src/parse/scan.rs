//! The line scanner: one left-to-right pass that validates a whole line and
//! records where its sections are. Errors name the first offending byte.
//!
//! Hot loops skip ordinary bytes through a 256-entry class table, so each
//! byte costs a load and a test; only delimiters, backslashes and control
//! bytes leave the loop.

use super::{Line, ParseError};

/// Longest series key + field key InfluxDB 1.x accepts (`models.MaxKeyLength`).
pub const KEY_LEN_MAX: usize = 65_535;
/// 1.x counts the TSM field separator `#!~#` in the key length
/// (`seriesKeySize`), so we do too: the accept/reject edge then matches.
const FIELD_SEPARATOR_LEN: usize = 4;

/// Largest timestamp 1.x stores (`models.MaxNanoTime` = MaxInt64 − 1, case 64).
pub const TIMESTAMP_MAX: i64 = i64::MAX - 1;
/// Smallest timestamp 1.x stores (`models.MinNanoTime` = MinInt64 + 2, case 63).
pub const TIMESTAMP_MIN: i64 = i64::MIN + 2;

/// Ends a run of measurement bytes: `,` space `\` and control bytes.
const MEAS: u8 = 1;
/// Ends a run of key or tag-value bytes: `,` space `=` `\` and control bytes.
const KEY: u8 = 2;
/// Control bytes (< 0x20 and DEL): never valid in names (case 57).
const CTRL: u8 = 4;
/// ASCII digits.
const DIGIT: u8 = 8;

static CLASS: [u8; 256] = class_table();

const fn class_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        if b < 0x20 || b == 0x7f {
            t[b] = MEAS | KEY | CTRL;
        }
        if b >= b'0' as usize && b <= b'9' as usize {
            t[b] = DIGIT;
        }
        b += 1;
    }
    t[b',' as usize] = MEAS | KEY;
    t[b' ' as usize] = MEAS | KEY;
    t[b'\\' as usize] = MEAS | KEY;
    t[b'=' as usize] = KEY;
    t
}

#[inline(always)]
fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that is zero. Exact for the lowest such
/// byte (borrows only run towards higher bytes), which is all we look at.
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

#[inline(always)]
pub(super) fn load8(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

/// Index of the first byte at or after `i` that ends a run of plain name
/// bytes: `,` space `\` control or DEL, plus `=` when `KEY` (tag keys,
/// tag values, field keys; a measurement may hold a bare `=`, case 17).
/// Eight bytes per step while they last, then the class table.
#[inline(always)]
pub(super) fn skip_plain<const KEY_RUN: bool>(b: &[u8], mut i: usize) -> usize {
    let n = b.len();
    while i + 8 <= n {
        let x = load8(b, i);
        // Bytes below 0x21 (control and space); high bytes never match.
        let mut hit = x.wrapping_sub(ONES * 0x21) & !x & HIGHS;
        hit |= zero_bytes(x ^ (ONES * b',' as u64));
        hit |= zero_bytes(x ^ (ONES * b'\\' as u64));
        hit |= zero_bytes(x ^ (ONES * 0x7f));
        if KEY_RUN {
            hit |= zero_bytes(x ^ (ONES * b'=' as u64));
        }
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let mask = if KEY_RUN { KEY } else { MEAS };
    while i < n && class(b[i]) & mask == 0 {
        i += 1;
    }
    i
}

/// Index of the first non-digit at or after `i`. Field values are short, so
/// one eight-byte step usually settles it without a mispredicted loop exit.
#[inline(always)]
fn skip_digits(b: &[u8], mut i: usize) -> usize {
    let n = b.len();
    while i + 8 <= n {
        let x = load8(b, i);
        // A byte is a digit iff its high nibble is 3 and adding 6 keeps it so.
        let odd = ((x & 0xF0F0_F0F0_F0F0_F0F0) ^ 0x3030_3030_3030_3030)
            | ((x.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0)
                ^ 0x3030_3030_3030_3030);
        // High bit of each non-zero byte of `odd`, without cross-byte carries.
        let hit = (((odd & !HIGHS) + !HIGHS) | odd) & HIGHS;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && class(b[i]) & DIGIT != 0 {
        i += 1;
    }
    i
}

/// Whether all eight bytes of `x` are ASCII digits.
#[inline(always)]
fn all_digits(x: u64) -> bool {
    (x & 0xF0F0_F0F0_F0F0_F0F0) == 0x3030_3030_3030_3030
        && (x.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) == 0x3030_3030_3030_3030
}

/// Value of eight ASCII digits, the first in the lowest byte.
#[inline(always)]
pub(super) fn parse8(x: u64) -> u64 {
    let x = x - 0x3030_3030_3030_3030;
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00FF_00FF_00FF_00FF;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_FFFF_0000_FFFF;
    (x.wrapping_mul(10000) + (x >> 32)) & 0xFFFF_FFFF
}

/// Most tags we remember for the duplicate check; longer tag sets fall back
/// to a quadratic re-scan (rare: telegraf sends a handful of tags).
const TAGS_TRACKED_MAX: usize = 16;

pub(super) fn scan_line(raw: &[u8]) -> Result<Line<'_>, ParseError> {
    // `is_ascii` is word-at-a-time; the full validator runs only on non-ASCII.
    if !raw.is_ascii() && std::str::from_utf8(raw).is_err() {
        return Err(ParseError::InvalidUtf8);
    }
    let n = raw.len();
    let mut i = 0;
    while i < n && raw[i] == b' ' {
        i += 1;
    }
    // Empty measurement: blank line, or a leading `,` (1.x "missing measurement").
    if i == n || raw[i] == b',' {
        return Err(ParseError::BadMeasurement);
    }
    let measurement_start = i;
    i = scan_measurement(raw, i)?;
    let measurement_end = i;
    if i == n {
        return Err(ParseError::NoFields);
    }
    let (tags_start, tags_end) = if raw[i] == b',' {
        let start = i + 1;
        i = scan_tags(raw, start)?;
        (start, i)
    } else {
        (i, i)
    };
    // Here raw[i] == b' ': the series key ends.
    let key_len = i - measurement_start;
    while i < n && raw[i] == b' ' {
        i += 1;
    }
    if i == n {
        return Err(ParseError::NoFields);
    }
    let fields_start = i;
    let (fields_end, field_key_len_max) = scan_fields(raw, i)?;
    // Keys are disjoint parts of the line, so short lines cannot be too long.
    if n + FIELD_SEPARATOR_LEN > KEY_LEN_MAX
        && key_len + FIELD_SEPARATOR_LEN + field_key_len_max > KEY_LEN_MAX
    {
        return Err(ParseError::KeyTooLong);
    }
    i = fields_end;
    while i < n && raw[i] == b' ' {
        i += 1;
    }
    let (timestamp, timestamp_offset) = if i == n {
        (None, n)
    } else {
        (Some(scan_timestamp(raw, i)?), i)
    };
    Ok(Line {
        raw,
        measurement: &raw[measurement_start..measurement_end],
        tags: &raw[tags_start..tags_end],
        fields: &raw[fields_start..fields_end],
        timestamp,
        timestamp_offset,
        escaped: memchr::memchr(b'\\', raw).is_some(),
    })
}

/// Skip the bytes escaped by the backslash at `b[i]` under the 1.x
/// "previous byte is a backslash" rule: a run of backslashes escapes each
/// other and then the byte after the run. Returns the index after them.
#[inline(always)]
fn skip_escaped_prev(b: &[u8], mut i: usize, err: ParseError) -> Result<usize, ParseError> {
    i += 1;
    while i < b.len() && b[i] == b'\\' {
        i += 1;
    }
    if i < b.len() {
        // Escaping does not make a control byte printable.
        if class(b[i]) & CTRL != 0 {
            return Err(err);
        }
        i += 1;
    }
    Ok(i)
}

/// Scan a measurement starting at a non-space, non-comma byte. Returns the
/// index of the unescaped `,` or space that ends it, or `b.len()`.
#[inline]
fn scan_measurement(b: &[u8], mut i: usize) -> Result<usize, ParseError> {
    let n = b.len();
    loop {
        i = skip_plain::<false>(b, i);
        if i == n {
            return Ok(n);
        }
        match b[i] {
            b',' | b' ' => return Ok(i),
            b'\\' => i = skip_escaped_prev(b, i, ParseError::BadMeasurement)?,
            _ => return Err(ParseError::BadMeasurement),
        }
    }
}

/// Scan the tag section starting after the measurement's `,`. Returns the
/// index of the space that ends it.
#[inline]
fn scan_tags(b: &[u8], mut i: usize) -> Result<usize, ParseError> {
    let n = b.len();
    let start = i;
    let mut keys = [(0u32, 0u32); TAGS_TRACKED_MAX];
    let mut count = 0usize;
    loop {
        // Key: up to an unescaped `=`.
        let key_start = i;
        loop {
            i = skip_plain::<true>(b, i);
            if i == n {
                return Err(ParseError::BadTag);
            }
            match b[i] {
                b'=' => break,
                b'\\' => i = skip_escaped_prev(b, i, ParseError::BadTag)?,
                _ => return Err(ParseError::BadTag),
            }
        }
        if i == key_start {
            return Err(ParseError::BadTag);
        }
        let key = &b[key_start..i];
        if count < TAGS_TRACKED_MAX {
            for &(s, e) in &keys[..count] {
                let seen = &b[s as usize..e as usize];
                // Length and first byte settle almost every pair without a memcmp call.
                if seen.len() == key.len() && seen[0] == key[0] && seen == key {
                    return Err(ParseError::DuplicateTag);
                }
            }
            keys[count] = (key_start as u32, i as u32);
        }
        count += 1;
        i += 1;
        // Value: up to an unescaped `,` (next tag) or space (end of tags).
        let value_start = i;
        loop {
            i = skip_plain::<true>(b, i);
            if i == n {
                if i == value_start {
                    return Err(ParseError::BadTag);
                }
                // `cpu,host=a`: valid tags, nothing after them.
                return Err(ParseError::NoFields);
            }
            match b[i] {
                b',' | b' ' => break,
                b'\\' => i = skip_escaped_prev(b, i, ParseError::BadTag)?,
                // An unescaped `=` in a tag value (case 47) or a control byte.
                _ => return Err(ParseError::BadTag),
            }
        }
        if i == value_start {
            return Err(ParseError::BadTag);
        }
        if b[i] == b' ' {
            if count > TAGS_TRACKED_MAX && has_duplicate_tag(&b[start..i]) {
                return Err(ParseError::DuplicateTag);
            }
            return Ok(i);
        }
        i += 1;
    }
}

#[cold]
fn has_duplicate_tag(section: &[u8]) -> bool {
    let mut outer = super::tags(section);
    while let Some((key, _)) = outer.next() {
        if outer.clone().any(|(k, _)| k == key) {
            return true;
        }
    }
    false
}

/// Scan the field section starting at its first byte. Returns the index just
/// after the last value and the longest field key (escaped length).
///
/// Duplicate field keys (case 36) are accepted, as 1.x does; whoever
/// materialises fields keeps the last one. Detecting them would cost a
/// quadratic pass per line; `has_duplicate_field` exists for counting.
#[inline]
fn scan_fields(b: &[u8], mut i: usize) -> Result<(usize, usize), ParseError> {
    let n = b.len();
    let mut key_len_max = 0;
    let mut first = true;
    loop {
        let key_start = i;
        loop {
            i = skip_plain::<true>(b, i);
            if i == n {
                return Err(missing_equals(first));
            }
            match b[i] {
                b'=' => break,
                // 1.x `scanFields`: a backslash skips the next byte.
                b'\\' => {
                    if i + 1 < n && class(b[i + 1]) & CTRL != 0 {
                        return Err(ParseError::BadField);
                    }
                    i += 2;
                    if i > n {
                        return Err(missing_equals(first));
                    }
                }
                b' ' => return Err(missing_equals(first)),
                _ => return Err(ParseError::BadField),
            }
        }
        if i == key_start {
            return Err(ParseError::BadField);
        }
        key_len_max = key_len_max.max(i - key_start);
        i = scan_value(b, i + 1)?;
        if i == n || b[i] == b' ' {
            return Ok((i, key_len_max));
        }
        // scan_value stops only at the end, a space or a comma.
        debug_assert_eq!(b[i], b',');
        i += 1;
        first = false;
    }
}

/// A key with no `=`: for the first field that means the line has no field
/// section at all (`cpu,host=a 1434055562000000000i`, case 50).
fn missing_equals(first: bool) -> ParseError {
    if first {
        ParseError::NoFields
    } else {
        ParseError::BadField
    }
}

/// Scan a field value at `b[i]` (just after `=`). Returns the index of the
/// `,` or space after it, or `b.len()`.
#[inline]
pub(super) fn scan_value(b: &[u8], i: usize) -> Result<usize, ParseError> {
    let Some(&first) = b.get(i) else {
        return Err(ParseError::BadField);
    };
    match first {
        // scan_number checks what follows the number itself.
        b'0'..=b'9' | b'-' | b'.' => Ok(scan_number(b, i)?.0),
        b'"' => end_of_value(b, scan_string(b, i + 1)?),
        // scan_bool stops only at the end, `,` or a space.
        b't' | b'T' | b'f' | b'F' => Ok(scan_bool(b, i)?.0),
        _ => Err(unknown_value(&b[i..])),
    }
}

/// A string value must be followed by `,`, a space or the end of the line:
/// `"test""`, `"blah"=123` are not (case 55).
#[inline(always)]
fn end_of_value(b: &[u8], end: usize) -> Result<usize, ParseError> {
    match b.get(end) {
        None | Some(b',' | b' ') => Ok(end),
        Some(_) => Err(ParseError::BadField),
    }
}

/// NaN and ±Inf are numbers InfluxDB refuses (case 53); anything else is an
/// unrecognised type (case 54), as is an empty value (case 49).
#[cold]
fn unknown_value(v: &[u8]) -> ParseError {
    let head = &v[..v.len().min(3)];
    if v.first() == Some(&b'+')
        || head.eq_ignore_ascii_case(b"nan")
        || head.eq_ignore_ascii_case(b"inf")
    {
        ParseError::BadNumber
    } else {
        ParseError::BadField
    }
}

/// The kind of number `scan_number` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Number {
    Float,
    Int,
    UInt,
}

/// Validate a number at `b[i]`: `-?(d+(.d*)?|.d+)([eE][+-]?d+)?` for floats,
/// `-?d+i` for int64 and `d+u` for uint64, with range checks. Returns the
/// index after it (the `,`/space/end is checked by the caller) and its kind.
#[inline]
pub(super) fn scan_number(b: &[u8], mut i: usize) -> Result<(usize, Number), ParseError> {
    let n = b.len();
    let start = i;
    let negative = b[i] == b'-';
    if negative {
        i += 1;
    }
    let int_start = i;
    i = skip_digits(b, i);
    let int_digits = i - int_start;
    let Some(&next) = b.get(i) else {
        return if int_digits == 0 {
            Err(ParseError::BadNumber)
        } else {
            check_float_range(b, start, i, int_digits, 0)?;
            Ok((i, Number::Float))
        };
    };
    match next {
        b',' | b' ' if int_digits > 0 => {
            check_float_range(b, start, i, int_digits, 0)?;
            return Ok((i, Number::Float));
        }
        b'i' if int_digits > 0 => {
            check_end(b, i + 1)?;
            check_int_range(&b[int_start..i], negative, false)?;
            return Ok((i + 1, Number::Int));
        }
        b'u' if int_digits > 0 && !negative => {
            check_end(b, i + 1)?;
            check_int_range(&b[int_start..i], false, true)?;
            return Ok((i + 1, Number::UInt));
        }
        _ => {}
    }
    let mut frac_digits = 0;
    if b[i] == b'.' {
        i += 1;
        let frac_start = i;
        i = skip_digits(b, i);
        frac_digits = i - frac_start;
    }
    if int_digits + frac_digits == 0 {
        return Err(ParseError::BadNumber);
    }
    let mut exponent = 0i64;
    if i < n && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let mut exponent_negative = false;
        if i < n && (b[i] == b'+' || b[i] == b'-') {
            exponent_negative = b[i] == b'-';
            i += 1;
        }
        let exponent_start = i;
        while i < n && class(b[i]) & DIGIT != 0 {
            // Saturate: only "large or not" matters for the range check.
            exponent = (exponent * 10 + (b[i] - b'0') as i64).min(1 << 32);
            i += 1;
        }
        if i == exponent_start {
            return Err(ParseError::BadNumber);
        }
        if exponent_negative {
            exponent = -exponent;
        }
    }
    // `1a`, `42+3`, `1.1.1`, `1.0i`, `9e10i` (case 51).
    check_end(b, i)?;
    check_float_range(b, start, i, int_digits, exponent)?;
    Ok((i, Number::Float))
}

/// A number must be followed by `,`, a space or the end of the line.
#[inline(always)]
fn check_end(b: &[u8], i: usize) -> Result<(), ParseError> {
    match b.get(i) {
        None | Some(b',' | b' ') => Ok(()),
        Some(_) => Err(ParseError::BadNumber),
    }
}

/// A float overflows f64 only if its integer digits plus its exponent pass
/// 308; only then do we pay for a full parse (1.x: `strconv.ParseFloat`
/// returns ErrRange, case 52).
#[inline(always)]
fn check_float_range(
    b: &[u8],
    start: usize,
    end: usize,
    int_digits: usize,
    exponent: i64,
) -> Result<(), ParseError> {
    if int_digits as i64 + exponent <= 308 {
        return Ok(());
    }
    check_float_range_slow(&b[start..end])
}

#[cold]
fn check_float_range_slow(text: &[u8]) -> Result<(), ParseError> {
    // The text is ASCII digits, signs, `.` and `e`, so from_utf8 cannot fail.
    let value: f64 = std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::BadNumber)?;
    if value.is_finite() {
        Ok(())
    } else {
        Err(ParseError::NumberOutOfRange)
    }
}

/// Range-check the decimal digits of an integer. Up to 18 digits always fit.
#[inline(always)]
fn check_int_range(digits: &[u8], negative: bool, unsigned: bool) -> Result<(), ParseError> {
    if digits.len() <= 18 {
        return Ok(());
    }
    match parse_magnitude(digits) {
        Some(_) if unsigned => Ok(()),
        Some(m) if negative && m <= 1 << 63 => Ok(()),
        Some(m) if !negative && m < 1 << 63 => Ok(()),
        _ => Err(ParseError::NumberOutOfRange),
    }
}

/// Decimal digits to u64, `None` on overflow. Leading zeros are fine (case 4).
fn parse_magnitude(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

/// Scan a string value whose opening quote is just before `b[i]`. Returns
/// the index after the closing quote. Raw newlines and control bytes are
/// allowed inside (cases 13, 57); a backslash skips the next byte (1.x).
#[inline]
pub(super) fn scan_string(b: &[u8], mut i: usize) -> Result<usize, ParseError> {
    loop {
        match memchr::memchr2(b'"', b'\\', &b[i.min(b.len())..]) {
            None => return Err(ParseError::UnterminatedString),
            Some(p) => {
                i += p;
                if b[i] == b'"' {
                    return Ok(i + 1);
                }
                i += 2;
            }
        }
    }
}

/// Scan a boolean: exactly t T true True TRUE f F false False FALSE (case 7).
/// Returns the index after it and its value.
#[inline]
pub(super) fn scan_bool(b: &[u8], i: usize) -> Result<(usize, bool), ParseError> {
    let rest = &b[i..];
    let len = rest
        .iter()
        .position(|&c| c == b',' || c == b' ')
        .unwrap_or(rest.len());
    let value = match &rest[..len] {
        b"t" | b"T" | b"true" | b"True" | b"TRUE" => true,
        b"f" | b"F" | b"false" | b"False" | b"FALSE" => false,
        _ => return Err(ParseError::BadField),
    };
    Ok((i + len, value))
}

/// Scan a timestamp at `b[i]` (not a space) up to the end of the line:
/// `-?[0-9]+` within [TIMESTAMP_MIN, TIMESTAMP_MAX], then only spaces.
#[inline]
fn scan_timestamp(b: &[u8], mut i: usize) -> Result<i64, ParseError> {
    let n = b.len();
    let negative = b[i] == b'-';
    if negative {
        i += 1;
    }
    let start = i;
    let mut value = 0u64;
    // Nanosecond timestamps are 19 digits: two eight-digit steps and three single ones.
    while i + 8 <= n && all_digits(load8(b, i)) {
        value = value
            .wrapping_mul(100_000_000)
            .wrapping_add(parse8(load8(b, i)));
        i += 8;
    }
    while i < n && class(b[i]) & DIGIT != 0 {
        value = value.wrapping_mul(10).wrapping_add((b[i] - b'0') as u64);
        i += 1;
    }
    let digits = i - start;
    if digits == 0 {
        return Err(ParseError::BadTimestamp);
    }
    // Trailing spaces are fine (case 37); anything else is not (cases 65, 66).
    let mut j = i;
    while j < n && b[j] == b' ' {
        j += 1;
    }
    if j != n {
        return Err(ParseError::BadTimestamp);
    }
    // Up to 19 digits are below 10^19 < 2^64, so the wrapping sum is exact.
    if digits > 19 {
        value = parse_magnitude(&b[start..i]).ok_or(ParseError::BadTimestamp)?;
    }
    // TIMESTAMP_MAX = 2^63 - 2 and TIMESTAMP_MIN = -(2^63 - 2): symmetric.
    if value > TIMESTAMP_MAX as u64 {
        return Err(ParseError::BadTimestamp);
    }
    let value = value as i64;
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn skip_scalar(b: &[u8], mut i: usize, mask: u8) -> usize {
        while i < b.len() && class(b[i]) & mask == 0 {
            i += 1;
        }
        i
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn skip_plain_matches_table(
            bytes in proptest::collection::vec(
                prop_oneof![4 => b'a'..=b'z', 1 => any::<u8>()], 0..40),
            from in 0usize..40,
        ) {
            let from = from.min(bytes.len());
            prop_assert_eq!(skip_plain::<true>(&bytes, from), skip_scalar(&bytes, from, KEY));
            prop_assert_eq!(skip_plain::<false>(&bytes, from), skip_scalar(&bytes, from, MEAS));
        }

        #[test]
        fn skip_digits_matches_table(
            bytes in proptest::collection::vec(
                prop_oneof![4 => b'0'..=b'9', 1 => any::<u8>()], 0..40),
            from in 0usize..40,
        ) {
            let from = from.min(bytes.len());
            let mut end = from;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            prop_assert_eq!(skip_digits(&bytes, from), end);
        }

        #[test]
        fn parse8_matches_std(v in 0u64..100_000_000) {
            let text = format!("{v:08}");
            let x = load8(text.as_bytes(), 0);
            prop_assert!(all_digits(x));
            prop_assert_eq!(parse8(x), v);
        }

        #[test]
        fn all_digits_is_exact(bytes in proptest::array::uniform8(any::<u8>())) {
            prop_assert_eq!(all_digits(u64::from_le_bytes(bytes)), bytes.iter().all(u8::is_ascii_digit));
        }
    }
}
