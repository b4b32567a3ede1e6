//! Check: the per-line decision, shared by the shards and `sluice explain`
//! so that explain shows exactly what the running appliance would do.
//! Pure code: "now" is passed in once per batch.
//!
//! Order: parse → length → timestamp unit and window → route → budgets →
//! does any sink want the route.
use crate::budget::Budgets;
use crate::config::{Precision, SanityConfig};
use crate::parse::{Item, Line, ParseError};
use crate::route::{Match, RouteTable, Scratch};
use crate::sanity::TimeWindow;
use crate::telemetry::LineDrop;

/// Why a line was rejected: a precise parse error, or a later check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Parse(ParseError),
    Drop(LineDrop),
}

impl Reason {
    /// Every label a reason can have (for config validation of dead-letter reasons).
    pub const LABELS: &'static [&'static str] = &[
        "parse_error",
        "time_out_of_range",
        "too_long",
        "cardinality",
        "rate_limited",
        "no_sink",
        "bad_measurement",
        "bad_tag",
        "duplicate_tag",
        "bad_field",
        "no_fields",
        "bad_number",
        "number_out_of_range",
        "unterminated_string",
        "bad_timestamp",
        "invalid_utf8",
        "key_too_long",
    ];

    /// The precise label (`bad_field`, `time_out_of_range`, …).
    pub fn label(self) -> &'static str {
        match self {
            Reason::Parse(e) => e.as_str(),
            Reason::Drop(d) => d.as_str(),
        }
    }

    /// The drop class counted in `sluice_dropped_lines_total{reason}`.
    pub fn drop_class(self) -> LineDrop {
        match self {
            Reason::Parse(_) => LineDrop::ParseError,
            Reason::Drop(d) => d,
        }
    }
}

/// How the forwarded line differs from the received one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// Forward as received.
    None,
    /// Replace the timestamp text with this value in nanoseconds.
    Timestamp(i64),
    /// Append this receive time (ns) as the timestamp.
    Stamp(i64),
}

/// The decision for one line.
#[derive(Clone, Copy, Debug)]
pub enum Verdict<'a> {
    Accept {
        line: Line<'a>,
        matched: Match,
        timestamp_ns: Option<i64>,
        rewrite: Rewrite,
    },
    Reject {
        raw: &'a [u8],
        reason: Reason,
        /// The scanned line when the rejection came after parsing.
        line: Option<Line<'a>>,
        /// The route it would have taken, when routing happened.
        matched: Option<Match>,
    },
}

/// The unit a timestamp was most likely sent in, judged by its magnitude:
/// below 1e11 is seconds (until the year 5138), below 1e14 milliseconds,
/// below 1e17 microseconds, else nanoseconds. Zero and negatives are taken as ns.
pub fn infer_unit(ts: i64) -> Precision {
    match ts {
        t if t <= 0 => Precision::Nanoseconds,
        t if t < 100_000_000_000 => Precision::Seconds,
        t if t < 100_000_000_000_000 => Precision::Milliseconds,
        t if t < 100_000_000_000_000_000 => Precision::Microseconds,
        _ => Precision::Nanoseconds,
    }
}

/// Scale a timestamp to ns; `None` when it overflows.
#[inline]
pub fn to_nanos(ts: i64, precision: Precision) -> Option<i64> {
    // Nanoseconds (the default) is decided by one compare; the rest is out
    // of line, so the per-line path holds no jump table on the precision.
    if precision == Precision::Nanoseconds {
        return Some(ts);
    }
    scaled_to_nanos(ts, precision)
}

#[inline(never)]
fn scaled_to_nanos(ts: i64, precision: Precision) -> Option<i64> {
    let unit = match precision {
        Precision::Auto => infer_unit(ts),
        p => p,
    };
    match unit {
        Precision::Nanoseconds | Precision::Auto => Some(ts),
        Precision::Microseconds => ts.checked_mul(1_000),
        Precision::Milliseconds => ts.checked_mul(1_000_000),
        Precision::Seconds => ts.checked_mul(1_000_000_000),
    }
}

/// One shard's (or one explain run's) checker.
pub struct Checker<'t> {
    table: &'t RouteTable,
    scratch: Scratch,
    sanity: SanityConfig,
    window: TimeWindow,
    now_ns: i64,
    budgets: Option<Budgets>,
    /// Per route id: does any sink subscribe?
    route_has_sinks: Vec<bool>,
}

impl<'t> Checker<'t> {
    pub fn new(
        table: &'t RouteTable,
        sanity: SanityConfig,
        budgets: Option<Budgets>,
        route_has_sinks: Vec<bool>,
        now_ns: i64,
    ) -> Checker<'t> {
        Checker {
            table,
            scratch: table.scratch(),
            window: TimeWindow::new(now_ns, &sanity),
            sanity,
            now_ns,
            budgets,
            route_has_sinks,
        }
    }

    /// Set "now" for the next lines (once per receive batch).
    pub fn set_now(&mut self, now_ns: i64) {
        self.now_ns = now_ns;
        self.window = TimeWindow::new(now_ns, &self.sanity);
    }

    pub fn now_ns(&self) -> i64 {
        self.now_ns
    }

    pub fn budgets(&self) -> Option<&Budgets> {
        self.budgets.as_ref()
    }

    /// Give the budget state back (explain keeps it across inputs).
    pub fn into_budgets(self) -> Option<Budgets> {
        self.budgets
    }

    #[inline(always)]
    pub fn judge<'a>(&mut self, item: Item<'a>) -> Verdict<'a> {
        let line = match item {
            Item::Line(line) => line,
            Item::Reject { raw, error } => {
                return Verdict::Reject {
                    raw,
                    reason: Reason::Parse(error),
                    line: None,
                    matched: None,
                }
            }
        };
        let reject = |reason: LineDrop, matched: Option<Match>| Verdict::Reject {
            raw: line.raw,
            reason: Reason::Drop(reason),
            line: Some(line),
            matched,
        };
        if line.raw.len() > self.sanity.max_line_length {
            return reject(LineDrop::TooLong, None);
        }
        let (timestamp_ns, rewrite) = match line.timestamp {
            None if self.sanity.stamp_missing => (Some(self.now_ns), Rewrite::Stamp(self.now_ns)),
            None => (None, Rewrite::None),
            Some(ts) => match to_nanos(ts, self.sanity.precision) {
                None => return reject(LineDrop::TimeOutOfRange, None),
                Some(ns) if ns == ts => (Some(ns), Rewrite::None),
                Some(ns) => (Some(ns), Rewrite::Timestamp(ns)),
            },
        };
        if !self.window.accepts(timestamp_ns) {
            return reject(LineDrop::TimeOutOfRange, None);
        }
        let matched = self.table.lookup(&line, &mut self.scratch);
        if let Some(budgets) = &mut self.budgets {
            if let Err(reason) = budgets.admit(&line, matched.route, self.now_ns) {
                return reject(reason, Some(matched));
            }
        }
        if !self.route_has_sinks[matched.route as usize] {
            return reject(LineDrop::NoSink, Some(matched));
        }
        Verdict::Accept {
            line,
            matched,
            timestamp_ns,
            rewrite,
        }
    }
}

/// Write the forwarded form of an accepted line (without newline) into `out`
/// when it differs from the received bytes; returns `false` when `raw` can be
/// forwarded as it is.
#[inline]
pub fn rewritten(line: &Line<'_>, rewrite: Rewrite, out: &mut Vec<u8>) -> bool {
    // The common case (nothing to rewrite) is decided inline in the shard's
    // line loop; the rewrite itself is out of line.
    // Only the two words the rewrite needs cross the call: passing `&Line`
    // made the shard materialize the whole `Line` in memory for every line.
    rewrite != Rewrite::None && write_rewritten(line.raw, line.timestamp_offset, rewrite, out)
}

#[inline(never)]
fn write_rewritten(
    raw: &[u8],
    timestamp_offset: usize,
    rewrite: Rewrite,
    out: &mut Vec<u8>,
) -> bool {
    match rewrite {
        Rewrite::None => false,
        Rewrite::Timestamp(ns) => {
            out.clear();
            out.extend_from_slice(&raw[..timestamp_offset]);
            out.extend_from_slice(itoa::Buffer::new().format(ns).as_bytes());
            true
        }
        Rewrite::Stamp(ns) => {
            out.clear();
            let mut raw = raw;
            while let Some((b' ', head)) = raw.split_last() {
                raw = head;
            }
            out.extend_from_slice(raw);
            out.push(b' ');
            out.extend_from_slice(itoa::Buffer::new().format(ns).as_bytes());
            true
        }
    }
}

/// The dead-letter form of a rejected line: valid line protocol carrying the
/// reason and the original text, e.g.
/// `sluice_reject,reason=bad_field line="cpu value=x" 1700000000000000000`.
pub fn dead_letter(raw: &[u8], reason: Reason, now_ns: i64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"sluice_reject,reason=");
    out.extend_from_slice(reason.label().as_bytes());
    out.extend_from_slice(b" line=\"");
    for &b in raw {
        match b {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            // Keep the dead letter one physical line and valid UTF-8.
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    if std::str::from_utf8(out).is_err() {
        let lossy = String::from_utf8_lossy(out).into_owned();
        out.clear();
        out.extend_from_slice(lossy.as_bytes());
    }
    out.extend_from_slice(b"\" ");
    out.extend_from_slice(itoa::Buffer::new().format(now_ns).as_bytes());
}

#[cfg(test)]
mod tests;
