//! Parse: split datagrams into lines and scan InfluxDB 1.x line protocol
//! without allocating. Pure code: no I/O, no clock.
//!
//! The scanner is strict: it validates the whole line (syntax, escapes,
//! number ranges, booleans, UTF-8, key length) in one pass and returns
//! borrowed, still-escaped slices. Consumers unescape only what they compare
//! (`unescaped_eq`) or copy (`unescape_into`).
//!
//! Escaping follows InfluxDB 1.x `models` (conformance N.1, cases 15–33):
//! - In the measurement and the tag section a byte is escaped when the byte
//!   before it is a backslash (1.x `scanMeasurement`/`scanTagsKey`/`scanTagsValue`
//!   test `buf[i-1] != '\\'`). So in `two\\ words` the space is escaped.
//! - In the field section a backslash skips the next byte (1.x `scanFields`).
//! - Unescaping drops a backslash only before a byte of the token's escape set
//!   (`,` and space for measurements, plus `=` for keys and tag values); any
//!   other backslash is kept (cases 18, 24–27).
//! - String field values unescape only `\\` and `\"` (case 14: we follow 1.x,
//!   not the v2 decoder).
//!
//! Architecture invariant: nothing in this module allocates except
//! `unescape_into`/`unescape_str_into`, which append to a caller's buffer.

mod escape;
mod fast;
mod field;
mod scan;
#[cfg(test)]
mod tests;

pub use escape::{tags, unescape_into, unescaped_eq, Tags};
pub use field::{fields, has_duplicate_field, unescape_str_into, FieldValue, Fields};
pub use scan::{KEY_LEN_MAX, TIMESTAMP_MAX, TIMESTAMP_MIN};

/// Why a line was rejected by the scanner. `as_str` gives the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseError {
    /// Empty measurement, a control byte in it, a leading TAB, or a comment
    /// line with a stray CR.
    BadMeasurement,
    /// Malformed tag: empty key or value, missing `=`, unescaped `=` in a
    /// value, a control byte, or a trailing comma.
    BadTag,
    /// The same tag key twice (case 48).
    DuplicateTag,
    /// Malformed field: empty key or value, a key without `=` after the
    /// first field, unknown value type, junk after a string.
    BadField,
    /// No field section at all (the line ends in the series key, or the only
    /// token after it has no `=`).
    NoFields,
    /// A numeric value that does not follow the number grammar, or NaN/Inf.
    BadNumber,
    /// An integer outside i64/u64, or a float that overflows f64.
    NumberOutOfRange,
    /// A string value with no closing quote (even after joining the next
    /// physical lines, see `Lines`).
    UnterminatedString,
    /// A timestamp that is not `-?[0-9]+`, is outside
    /// `[TIMESTAMP_MIN, TIMESTAMP_MAX]`, or is followed by more text.
    BadTimestamp,
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// Series key + field key longer than `KEY_LEN_MAX` (1.x `MaxKeyLength`).
    KeyTooLong,
}

impl ParseError {
    /// Every variant, for pre-registering metrics.
    pub const ALL: &'static [ParseError] = &[
        ParseError::BadMeasurement,
        ParseError::BadTag,
        ParseError::DuplicateTag,
        ParseError::BadField,
        ParseError::NoFields,
        ParseError::BadNumber,
        ParseError::NumberOutOfRange,
        ParseError::UnterminatedString,
        ParseError::BadTimestamp,
        ParseError::InvalidUtf8,
        ParseError::KeyTooLong,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::BadMeasurement => "bad_measurement",
            ParseError::BadTag => "bad_tag",
            ParseError::DuplicateTag => "duplicate_tag",
            ParseError::BadField => "bad_field",
            ParseError::NoFields => "no_fields",
            ParseError::BadNumber => "bad_number",
            ParseError::NumberOutOfRange => "number_out_of_range",
            ParseError::UnterminatedString => "unterminated_string",
            ParseError::BadTimestamp => "bad_timestamp",
            ParseError::InvalidUtf8 => "invalid_utf8",
            ParseError::KeyTooLong => "key_too_long",
        }
    }
    /// Index into `ALL` (for per-reason counter arrays).
    pub fn index(self) -> usize {
        ParseError::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

/// Which escaping rules apply to a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// `\,` and `\ ` (not `\=`).
    Measurement,
    /// `\,` `\ ` `\=`.
    TagKey,
    /// `\,` `\ ` `\=`.
    TagValue,
    /// `\,` `\ ` `\=`.
    FieldKey,
}

/// A scanned, valid line. All slices borrow the datagram; tokens are still escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The whole line without its line ending (`\n` or `\r\n`).
    pub raw: &'a [u8],
    /// Escaped measurement.
    pub measurement: &'a [u8],
    /// Escaped tag section between the first unescaped `,` and the first unescaped space; empty when there are no tags.
    pub tags: &'a [u8],
    /// Escaped field section.
    pub fields: &'a [u8],
    /// Timestamp as written (unit is the listener's precision; not scaled here).
    pub timestamp: Option<i64>,
    /// Byte offset in `raw` where the timestamp text starts (`raw.len()` when there is none).
    pub timestamp_offset: usize,
    /// `raw` holds a backslash. When it does not (nearly always), every
    /// token is its own unescaped form, and routing compares bytes as they
    /// are without looking for escapes again.
    pub escaped: bool,
}

impl<'a> Line<'a> {
    /// The escaped series key as written: measurement plus tag section
    /// (`cpu,host=a`), without leading spaces. Tags are not sorted.
    /// Expects a `Line` from `scan_line`/`lines` (its slices point into `raw`).
    pub fn series_key(&self) -> &'a [u8] {
        let base = self.raw.as_ptr() as usize;
        let start = self.measurement.as_ptr() as usize - base;
        let end = if self.tags.is_empty() {
            start + self.measurement.len()
        } else {
            self.tags.as_ptr() as usize - base + self.tags.len()
        };
        &self.raw[start..end]
    }

    /// Iterator over the escaped `(key, value)` tag pairs.
    pub fn tag_pairs(&self) -> Tags<'a> {
        tags(self.tags)
    }

    /// Iterator over the fields, decoded (off the hot path: `explain`).
    pub fn field_values(&self) -> Fields<'a> {
        fields(self.fields)
    }
}

/// One item of a datagram: a valid line or a rejected one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    Line(Line<'a>),
    Reject { raw: &'a [u8], error: ParseError },
}

/// How many physical lines one point may span when a string field value
/// contains raw newlines (case 13). Bounds the rescans an unterminated quote
/// can cause, so a hostile datagram stays linear.
pub const LINE_SPAN_MAX: usize = 16;

/// Iterator over the lines of a datagram (blank lines and `#` comments skipped).
///
/// Each physical line is scanned on its own, so one bad line never affects
/// its neighbours. The one exception is a string field value still open at
/// the end of a line: the next lines (up to `LINE_SPAN_MAX` in all) are joined
/// tentatively, and kept joined only if the joined text is a valid point.
/// Otherwise only the first physical line is rejected.
pub struct Lines<'a> {
    rest: &'a [u8],
    masks: LineMasks<'a>,
}

/// How `Lines` finds line ends and what the fast path scans on.
enum LineMasks<'a> {
    /// Fresh per-line masks for every line (`lines`).
    Fresh,
    /// Reused per-line masks (`Scanner::lines` on a datagram holding a byte
    /// the fast path declines).
    Reused(&'a mut fast::Masks),
    /// The masks of the whole datagram, which holds no byte the fast path
    /// declines (`Scanner::lines`, nearly always): its newline mask splits
    /// the lines, and every line is scanned on it. `rest` stays the whole
    /// datagram; the next line starts at `at`.
    Datagram {
        at: usize,
        masks: &'a fast::DatagramMasks,
    },
}

impl<'a> Iterator for Lines<'a> {
    type Item = Item<'a>;
    #[inline(always)]
    fn next(&mut self) -> Option<Item<'a>> {
        if let LineMasks::Datagram { ref mut at, masks } = self.masks {
            return next_in_plain(self.rest, at, masks);
        }
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let rest = self.rest;
            let newline = fast::find_newline(rest);
            let end = newline.unwrap_or(rest.len());
            let line = strip_cr(&rest[..end]);
            self.rest = rest.get(end + 1..).unwrap_or(&[]);
            match line.first() {
                None => continue,
                Some(b' ' | b'\t' | b'#') => match classify(line) {
                    Kind::Blank => continue,
                    Kind::Comment => {
                        // v2 rejects a CR inside a comment (case 42, telegraf#3631).
                        if memchr::memchr(b'\r', line).is_some() {
                            return Some(Item::Reject {
                                raw: line,
                                error: ParseError::BadMeasurement,
                            });
                        }
                        continue;
                    }
                    Kind::Point => {}
                },
                Some(_) => {}
            }
            let scanned = match &mut self.masks {
                LineMasks::Reused(masks) => scan_line_with(line, masks),
                _ => scan_line(line),
            };
            return Some(match scanned {
                Ok(l) => Item::Line(l),
                Err(ParseError::UnterminatedString) if newline.is_some() => {
                    match join_lines(rest, end) {
                        Some((l, next)) => {
                            self.rest = next;
                            Item::Line(l)
                        }
                        None => Item::Reject {
                            raw: line,
                            error: ParseError::UnterminatedString,
                        },
                    }
                }
                Err(error) => Item::Reject { raw: line, error },
            });
        }
    }
}

impl std::iter::FusedIterator for Lines<'_> {}

/// `Lines::next` on a datagram the classifier found plain: no CR, TAB,
/// quote or other declined byte anywhere in it, so no line needs its CR
/// stripped, starts with a TAB, or opens a string.
#[inline(always)]
fn next_in_plain<'a>(
    datagram: &'a [u8],
    at: &mut usize,
    masks: &fast::DatagramMasks,
) -> Option<Item<'a>> {
    loop {
        let start = *at;
        if start >= datagram.len() {
            return None;
        }
        let end = masks.next_newline(start).unwrap_or(datagram.len());
        *at = end + 1;
        let line = &datagram[start..end];
        match line.first() {
            None => continue,
            Some(b' ' | b'#') => match classify(line) {
                Kind::Blank | Kind::Comment => continue,
                Kind::Point => {}
            },
            Some(_) => {}
        }
        return Some(match fast::scan_in(datagram, start, end, masks) {
            Some(l) => Item::Line(l),
            None => scan_full(line),
        });
    }
}

/// The full scanner's item for a line the fast path declined.
#[inline(never)]
fn scan_full(line: &[u8]) -> Item<'_> {
    match scan::scan_line(line) {
        Ok(l) => Item::Line(l),
        Err(error) => Item::Reject { raw: line, error },
    }
}

enum Kind {
    Blank,
    Comment,
    Point,
}

/// Classify a line that starts with a space, TAB or `#`.
fn classify(line: &[u8]) -> Kind {
    match line.iter().find(|&&b| b != b' ' && b != b'\t') {
        None => Kind::Blank,
        Some(b'#') => Kind::Comment,
        // A leading TAB before a point is rejected by the scanner (case 38).
        Some(_) => Kind::Point,
    }
}

/// Try to extend a point whose string value is open at `rest[first_end]`
/// (a `\n`) over the following lines. Returns the point and what follows it.
#[cold]
fn join_lines(rest: &[u8], first_end: usize) -> Option<(Line<'_>, &[u8])> {
    let mut end = first_end;
    for _ in 1..LINE_SPAN_MAX {
        let from = end + 1;
        if from >= rest.len() {
            return None;
        }
        end = memchr::memchr(b'\n', &rest[from..]).map_or(rest.len(), |p| from + p);
        // A line with no quote cannot close the string: skip the rescan, so a
        // hostile run of open quotes costs a memchr per line, not a scan.
        if memchr::memchr(b'"', &rest[from..end]).is_none() {
            continue;
        }
        match scan_line(strip_cr(&rest[..end])) {
            Ok(l) => return Some((l, rest.get(end + 1..).unwrap_or(&[]))),
            Err(ParseError::UnterminatedString) => continue,
            Err(_) => return None,
        }
    }
    None
}

fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', head)) => head,
        _ => line,
    }
}

/// Split a datagram into lines.
pub fn lines(datagram: &[u8]) -> Lines<'_> {
    Lines {
        rest: datagram,
        masks: LineMasks::Fresh,
    }
}

/// Reusable scratch for splitting and scanning datagrams: the shards' path.
/// `lines` yields exactly what `parse::lines` yields, but classifies the
/// whole datagram at once (each byte once, and the newline mask splits the
/// lines), and the fast path's masks live here instead of being set up on
/// the stack for every line.
pub struct Scanner {
    masks: fast::Masks,
    datagram: fast::DatagramMasks,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            masks: fast::Masks::new(),
            datagram: fast::DatagramMasks::default(),
        }
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Split `datagram` into lines and scan them.
    #[inline]
    pub fn lines<'a>(&'a mut self, datagram: &'a [u8]) -> Lines<'a> {
        let masks = if self.datagram.classify(datagram) {
            LineMasks::Datagram {
                at: 0,
                masks: &self.datagram,
            }
        } else {
            // A CR, TAB, quote, backslash or other declined byte somewhere:
            // line by line, as `lines`, where each line still gets the
            // fast path if it has none.
            LineMasks::Reused(&mut self.masks)
        };
        Lines {
            rest: datagram,
            masks,
        }
    }
}

#[cfg(test)]
impl Scanner {
    /// Whether `lines` scans `datagram` on its whole-datagram masks.
    fn takes_whole(&mut self, datagram: &[u8]) -> bool {
        matches!(self.lines(datagram).masks, LineMasks::Datagram { .. })
    }
}

/// The full scanner alone, without the fast path: for differential tests and
/// fuzzing (`scan_line` must agree with it on every input).
#[doc(hidden)]
pub fn scan_line_full(line: &[u8]) -> Result<Line<'_>, ParseError> {
    scan::scan_line(line)
}

/// Scan one line (without its line ending).
pub fn scan_line(line: &[u8]) -> Result<Line<'_>, ParseError> {
    scan_line_with(line, &mut fast::Masks::new())
}

/// The fast path with the given masks, else the full scanner.
#[inline(always)]
fn scan_line_with<'a>(line: &'a [u8], masks: &mut fast::Masks) -> Result<Line<'a>, ParseError> {
    match fast::scan_with(line, masks) {
        Some(l) => Ok(l),
        None => scan::scan_line(line),
    }
}
