//! Parse: split datagrams into lines and scan InfluxDB line protocol without
//! allocating. Pure code: no I/O, no clock.
//!
//! (stub: being implemented)

/// Why a line was rejected by the scanner. `as_str` gives the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseError {
    BadMeasurement,
    BadTag,
    DuplicateTag,
    BadField,
    NoFields,
    BadNumber,
    NumberOutOfRange,
    UnterminatedString,
    BadTimestamp,
    InvalidUtf8,
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
#[derive(Clone, Copy, Debug)]
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
}

/// One item of a datagram: a valid line or a rejected one.
#[derive(Clone, Copy, Debug)]
pub enum Item<'a> {
    Line(Line<'a>),
    Reject { raw: &'a [u8], error: ParseError },
}

/// Iterator over the lines of a datagram (blank lines and `#` comments skipped).
pub struct Lines<'a> {
    _rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = Item<'a>;
    fn next(&mut self) -> Option<Item<'a>> {
        unimplemented!()
    }
}

/// Split a datagram into lines.
pub fn lines(datagram: &[u8]) -> Lines<'_> {
    Lines { _rest: datagram }
}

/// Scan one line (without its line ending).
pub fn scan_line(_line: &[u8]) -> Result<Line<'_>, ParseError> {
    unimplemented!()
}

/// Iterator over the `(key, value)` pairs of an escaped tag section, still escaped.
pub fn tags(_tag_section: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::empty()
}

/// Compare an escaped token with a plain (unescaped) byte string, without allocating.
pub fn unescaped_eq(_escaped: &[u8], _kind: Escape, _plain: &[u8]) -> bool {
    unimplemented!()
}

/// Append the unescaped form of `escaped` to `out`.
pub fn unescape_into(_escaped: &[u8], _kind: Escape, _out: &mut Vec<u8>) {
    unimplemented!()
}
