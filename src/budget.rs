//! Cardinality and rate budgets per measurement, tracked per shard in bounded
//! memory. A line of a *new* series beyond its measurement's series budget is
//! rejected (`cardinality`); series already seen keep flowing. A measurement
//! over its lines-per-second budget has the excess rejected (`rate_limited`).
//!
//! Series identity is measurement + tag set, order-independent: the hash of a
//! tag set is the wrapping sum of the hashes of its pairs, so `a=1,b=2` and
//! `b=2,a=1` are one series without sorting (and without allocating).
//!
//! The window rolls in two generations: series seen in the current or the
//! previous window are "existing"; a rotation every `window` forgets series
//! silent for a whole window. Budgets are enforced per shard (a fleet's
//! sources spread over shards by SO_REUSEPORT's 4-tuple hash).
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use crate::config::CardinalityConfig;
use crate::parse::Line;
use crate::telemetry::LineDrop;

type FastSet = HashSet<u64, NoHash>;

/// The keys are already hashes: do not hash them again.
#[derive(Clone, Copy, Default)]
struct NoHash;
impl BuildHasher for NoHash {
    type Hasher = NoHasher;
    fn build_hasher(&self) -> NoHasher {
        NoHasher(0)
    }
}
struct NoHasher(u64);
impl Hasher for NoHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

struct Measurement {
    name: Box<[u8]>,
    max_series: u64,
    max_lines_per_second: u64,
    current: FastSet,
    previous: FastSet,
    window_start_ns: i64,
    second: i64,
    lines_this_second: u64,
    lines_last_second: u64,
    lines_total: u64,
    rejected_series: u64,
    rejected_rate: u64,
}

/// A snapshot row for `/debug/cardinality`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MeasurementStat {
    pub measurement: String,
    pub series: u64,
    pub lines_last_second: u64,
    pub lines_total: u64,
    pub rejected_cardinality: u64,
    pub rejected_rate: u64,
}

/// One shard's budgets.
pub struct Budgets {
    config: CardinalityConfig,
    hasher: foldhash::quality::FixedState,
    measurements: HashMap<u64, Measurement, NoHash>,
    /// Measurements not tracked because `max_measurements` was reached.
    pub untracked_lines: u64,
}

impl Budgets {
    /// `None` when no budget is configured (the checker then skips this stage).
    pub fn new(config: &CardinalityConfig) -> Option<Budgets> {
        let any = config.max_series > 0
            || config.max_lines_per_second > 0
            || config
                .limits
                .iter()
                .any(|l| l.max_series.unwrap_or(0) > 0 || l.max_lines_per_second.unwrap_or(0) > 0);
        any.then(|| Budgets {
            config: config.clone(),
            hasher: foldhash::quality::FixedState::with_seed(0x005e_ed51_u64),
            measurements: HashMap::with_hasher(NoHash),
            untracked_lines: 0,
        })
    }

    fn hash(&self, bytes: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(bytes);
        h.finish()
    }

    /// Admit or reject one line at `now_ns`.
    pub fn admit(&mut self, line: &Line<'_>, now_ns: i64) -> Result<(), LineDrop> {
        let key = self.hash(line.measurement);
        if !self.measurements.contains_key(&key) {
            if self.measurements.len() >= self.config.max_measurements {
                self.untracked_lines += 1;
                return Ok(());
            }
            let name = line.measurement;
            let limit = self.config.limits.iter().find(|l| {
                crate::parse::unescaped_eq(
                    name,
                    crate::parse::Escape::Measurement,
                    l.measurement.as_bytes(),
                )
            });
            let max_series = limit
                .and_then(|l| l.max_series)
                .unwrap_or(self.config.max_series);
            let max_lines_per_second = limit
                .and_then(|l| l.max_lines_per_second)
                .unwrap_or(self.config.max_lines_per_second);
            self.measurements.insert(
                key,
                Measurement {
                    name: name.into(),
                    max_series,
                    max_lines_per_second,
                    current: FastSet::default(),
                    previous: FastSet::default(),
                    window_start_ns: now_ns,
                    second: now_ns / 1_000_000_000,
                    lines_this_second: 0,
                    lines_last_second: 0,
                    lines_total: 0,
                    rejected_series: 0,
                    rejected_rate: 0,
                },
            );
        }
        let series = if self.measurements[&key].max_series > 0 {
            let mut tags_hash = 0u64;
            for (k, v) in crate::parse::tags(line.tags) {
                let mut h = self.hasher.build_hasher();
                h.write(k);
                h.write_u8(b'=');
                h.write(v);
                tags_hash = tags_hash.wrapping_add(h.finish());
            }
            key ^ tags_hash.rotate_left(17)
        } else {
            0
        };
        let window_ns = self.config.window.as_nanos().min(i64::MAX as u128) as i64;
        let m = self.measurements.get_mut(&key).expect("inserted above");
        m.lines_total += 1;
        let second = now_ns / 1_000_000_000;
        if second != m.second {
            m.lines_last_second = if second == m.second + 1 {
                m.lines_this_second
            } else {
                0
            };
            m.lines_this_second = 0;
            m.second = second;
        }
        if m.max_lines_per_second > 0 && m.lines_this_second >= m.max_lines_per_second {
            m.rejected_rate += 1;
            return Err(LineDrop::RateLimited);
        }
        if m.max_series > 0 {
            if now_ns.saturating_sub(m.window_start_ns) >= window_ns {
                m.previous = std::mem::take(&mut m.current);
                m.window_start_ns = now_ns;
            }
            if !m.current.contains(&series) {
                // A series from the previous window moves over; a new one needs room.
                let known = m.previous.remove(&series);
                if known || ((m.current.len() + m.previous.len()) as u64) < m.max_series {
                    m.current.insert(series);
                } else {
                    m.rejected_series += 1;
                    return Err(LineDrop::Cardinality);
                }
            }
        }
        m.lines_this_second += 1;
        Ok(())
    }

    /// Every tracked measurement, for `/debug/cardinality`.
    pub fn snapshot(&self) -> Vec<MeasurementStat> {
        self.measurements
            .values()
            .map(|m| MeasurementStat {
                measurement: String::from_utf8_lossy(&m.name).into_owned(),
                series: (m.current.len() + m.previous.len()) as u64,
                lines_last_second: m.lines_last_second,
                lines_total: m.lines_total,
                rejected_cardinality: m.rejected_series,
                rejected_rate: m.rejected_rate,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MeasurementLimit;
    use std::time::Duration;

    fn config(max_series: u64, rate: u64) -> CardinalityConfig {
        CardinalityConfig {
            max_series,
            max_lines_per_second: rate,
            window: Duration::from_secs(60),
            max_measurements: 100,
            limits: vec![],
        }
    }

    fn admit(b: &mut Budgets, text: &str, now: i64) -> Result<(), LineDrop> {
        let line = crate::parse::scan_line(text.as_bytes()).unwrap();
        b.admit(&line, now)
    }

    #[test]
    fn no_budget_means_no_stage() {
        assert!(Budgets::new(&config(0, 0)).is_none());
    }

    #[test]
    fn new_series_beyond_budget_are_rejected_existing_keep_flowing() {
        let mut b = Budgets::new(&config(2, 0)).unwrap();
        let t = 1_000_000_000_000;
        assert_eq!(admit(&mut b, "cpu,host=a v=1", t), Ok(()));
        assert_eq!(admit(&mut b, "cpu,host=b v=1", t), Ok(()));
        assert_eq!(
            admit(&mut b, "cpu,host=c v=1", t),
            Err(LineDrop::Cardinality)
        );
        assert_eq!(admit(&mut b, "cpu,host=a v=2", t), Ok(()));
        // Tag order does not make a new series.
        assert_eq!(
            admit(&mut b, "cpu,x=1,host=b v=1", t),
            Err(LineDrop::Cardinality)
        );
        assert_eq!(admit(&mut b, "cpu,host=b v=3", t), Ok(()));
        // Other measurements have their own budget.
        assert_eq!(admit(&mut b, "mem,host=c v=1", t), Ok(()));
        let stats = b.snapshot();
        let cpu = stats.iter().find(|s| s.measurement == "cpu").unwrap();
        assert_eq!((cpu.series, cpu.rejected_cardinality), (2, 2));
    }

    #[test]
    fn tag_order_is_one_series() {
        let mut b = Budgets::new(&config(1, 0)).unwrap();
        assert_eq!(admit(&mut b, "cpu,a=1,b=2 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "cpu,b=2,a=1 v=1", 0), Ok(()));
    }

    #[test]
    fn silent_series_are_forgotten_after_two_windows() {
        let mut b = Budgets::new(&config(1, 0)).unwrap();
        let minute = 60_000_000_000i64;
        assert_eq!(admit(&mut b, "cpu,host=a v=1", 0), Ok(()));
        assert_eq!(
            admit(&mut b, "cpu,host=b v=1", minute),
            Err(LineDrop::Cardinality)
        );
        // host=a went quiet for a whole window: after the next rotation there is room.
        assert_eq!(admit(&mut b, "cpu,host=b v=1", 2 * minute), Ok(()));
    }

    #[test]
    fn rate_budget_per_second() {
        let mut b = Budgets::new(&config(0, 3)).unwrap();
        let t = 5_000_000_000;
        for _ in 0..3 {
            assert_eq!(admit(&mut b, "cpu v=1", t), Ok(()));
        }
        assert_eq!(admit(&mut b, "cpu v=1", t + 1), Err(LineDrop::RateLimited));
        assert_eq!(admit(&mut b, "mem v=1", t), Ok(()));
        assert_eq!(admit(&mut b, "cpu v=1", t + 1_000_000_000), Ok(()));
        let cpu = b
            .snapshot()
            .into_iter()
            .find(|s| s.measurement == "cpu")
            .unwrap();
        assert_eq!(cpu.lines_last_second, 3);
        assert_eq!(cpu.rejected_rate, 1);
    }

    #[test]
    fn per_measurement_limits_override_the_default() {
        let mut cfg = config(100, 0);
        cfg.limits.push(MeasurementLimit {
            measurement: "hot".into(),
            max_series: Some(1),
            max_lines_per_second: None,
        });
        let mut b = Budgets::new(&cfg).unwrap();
        assert_eq!(admit(&mut b, "hot,id=1 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "hot,id=2 v=1", 0), Err(LineDrop::Cardinality));
        assert_eq!(admit(&mut b, "cold,id=2 v=1", 0), Ok(()));
    }

    #[test]
    fn measurement_tracking_is_bounded() {
        let mut cfg = config(1, 0);
        cfg.max_measurements = 2;
        let mut b = Budgets::new(&cfg).unwrap();
        assert_eq!(admit(&mut b, "a,x=1 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "b,x=1 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "c,x=1 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "c,x=2 v=1", 0), Ok(()));
        assert_eq!(b.untracked_lines, 2);
        assert_eq!(b.snapshot().len(), 2);
    }
}
