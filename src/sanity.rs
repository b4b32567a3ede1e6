//! Sanity checks applied to every scanned line before routing. Pure code: the
//! caller passes "now" in, read once per batch of datagrams.
use crate::config::SanityConfig;

/// The accepted timestamp window for one batch: `min < ts < max`, both
/// exclusive (influx-spout). Lines without a timestamp always pass: the
/// backend stamps them on arrival.
#[derive(Clone, Copy, Debug)]
pub struct TimeWindow {
    min_ns: i64,
    max_ns: i64,
}

impl TimeWindow {
    pub fn new(now_ns: i64, cfg: &SanityConfig) -> TimeWindow {
        let past = i64::try_from(cfg.max_time_past.as_nanos()).unwrap_or(i64::MAX);
        let future = i64::try_from(cfg.max_time_future.as_nanos()).unwrap_or(i64::MAX);
        TimeWindow {
            min_ns: now_ns.saturating_sub(past),
            max_ns: now_ns.saturating_add(future),
        }
    }

    #[inline]
    pub fn accepts(&self, timestamp_ns: Option<i64>) -> bool {
        match timestamp_ns {
            None => true,
            Some(ts) => self.min_ns < ts && ts < self.max_ns,
        }
    }
}

/// Nanoseconds since the Unix epoch, from the wall clock.
pub fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn window_is_exclusive_and_timestampless_lines_pass() {
        let cfg = SanityConfig {
            max_time_past: Duration::from_secs(600),
            max_time_future: Duration::from_secs(60),
            max_line_length: 1000,
            precision: crate::config::Precision::Nanoseconds,
            stamp_missing: false,
        };
        let now = 1_700_000_000_000_000_000i64;
        let w = TimeWindow::new(now, &cfg);
        assert!(w.accepts(None));
        assert!(w.accepts(Some(now)));
        assert!(w.accepts(Some(now - 599_999_999_999)));
        assert!(!w.accepts(Some(now - 600_000_000_000)));
        assert!(w.accepts(Some(now + 59_999_999_999)));
        assert!(!w.accepts(Some(now + 60_000_000_000)));
        // Seconds sent as nanoseconds land in 1970: rejected.
        assert!(!w.accepts(Some(1_434_055_562)));
    }
}
