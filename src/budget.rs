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
use crate::route::RouteId;
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

/// Series and rate accounting for one budgeted thing: a measurement or a route.
struct Tracker {
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

impl Tracker {
    fn new(max_series: u64, max_lines_per_second: u64, now_ns: i64) -> Tracker {
        Tracker {
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
        }
    }

    /// Admit one line of `series` (ignored when there is no series budget).
    fn admit(&mut self, series: u64, now_ns: i64, window_ns: i64) -> Result<(), LineDrop> {
        self.lines_total += 1;
        let second = now_ns / 1_000_000_000;
        if second != self.second {
            self.lines_last_second = if second == self.second + 1 {
                self.lines_this_second
            } else {
                0
            };
            self.lines_this_second = 0;
            self.second = second;
        }
        if self.max_lines_per_second > 0 && self.lines_this_second >= self.max_lines_per_second {
            self.rejected_rate += 1;
            return Err(LineDrop::RateLimited);
        }
        if self.max_series > 0 {
            if now_ns.saturating_sub(self.window_start_ns) >= window_ns {
                self.previous = std::mem::take(&mut self.current);
                self.window_start_ns = now_ns;
            }
            if !self.current.contains(&series) {
                // A series from the previous window moves over; a new one needs room.
                let known = self.previous.remove(&series);
                if known || ((self.current.len() + self.previous.len()) as u64) < self.max_series {
                    self.current.insert(series);
                } else {
                    self.rejected_series += 1;
                    return Err(LineDrop::Cardinality);
                }
            }
        }
        self.lines_this_second += 1;
        Ok(())
    }

    fn stat(&self, name: String) -> MeasurementStat {
        MeasurementStat {
            measurement: name,
            series: (self.current.len() + self.previous.len()) as u64,
            lines_last_second: self.lines_last_second,
            lines_total: self.lines_total,
            rejected_cardinality: self.rejected_series,
            rejected_rate: self.rejected_rate,
        }
    }
}

struct Measurement {
    name: Box<[u8]>,
    tracker: Tracker,
}

/// A snapshot row for `/debug/cardinality` (a measurement, or a route in
/// the `routes` list).
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
    /// Indexed by route id; `None` for routes without a budget.
    routes: Vec<Option<(String, Tracker)>>,
    /// Measurements not tracked because `max_measurements` was reached.
    pub untracked_lines: u64,
}

impl Budgets {
    /// `None` when no budget is configured (the checker then skips this
    /// stage). `route_names` are the route table's, indexed by route id.
    pub fn new(config: &CardinalityConfig, route_names: &[String]) -> Option<Budgets> {
        let any = config.max_series > 0
            || config.max_lines_per_second > 0
            || !config.routes.is_empty()
            || config
                .limits
                .iter()
                .any(|l| l.max_series.unwrap_or(0) > 0 || l.max_lines_per_second.unwrap_or(0) > 0);
        let routes = route_names
            .iter()
            .map(|name| {
                config.routes.iter().find(|l| &l.route == name).map(|l| {
                    (
                        name.clone(),
                        Tracker::new(l.max_series, l.max_lines_per_second, 0),
                    )
                })
            })
            .collect();
        any.then(|| Budgets {
            config: config.clone(),
            hasher: foldhash::quality::FixedState::with_seed(0x005e_ed51_u64),
            measurements: HashMap::with_hasher(NoHash),
            routes,
            untracked_lines: 0,
        })
    }

    fn hash(&self, bytes: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(bytes);
        h.finish()
    }

    /// Series identity: measurement hash and the order-independent tag-set hash.
    fn series(&self, measurement_key: u64, line: &Line<'_>) -> u64 {
        let mut tags_hash = 0u64;
        for (k, v) in crate::parse::tags(line.tags) {
            let mut h = self.hasher.build_hasher();
            h.write(k);
            h.write_u8(b'=');
            h.write(v);
            tags_hash = tags_hash.wrapping_add(h.finish());
        }
        measurement_key ^ tags_hash.rotate_left(17)
    }

    /// Admit or reject one line bound for `route` at `now_ns`: first its
    /// measurement's budget, then its route's.
    pub fn admit(&mut self, line: &Line<'_>, route: RouteId, now_ns: i64) -> Result<(), LineDrop> {
        let key = self.hash(line.measurement);
        if self.measurements.contains_key(&key) {
            // Tracked already.
        } else if self.measurements.len() >= self.config.max_measurements {
            self.untracked_lines += 1;
        } else {
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
                    tracker: Tracker::new(max_series, max_lines_per_second, now_ns),
                },
            );
        }
        let measurement_series = self
            .measurements
            .get(&key)
            .is_some_and(|m| m.tracker.max_series > 0);
        let route_series = self
            .routes
            .get(route as usize)
            .and_then(Option::as_ref)
            .is_some_and(|(_, t)| t.max_series > 0);
        let series = if measurement_series || route_series {
            self.series(key, line)
        } else {
            0
        };
        let window_ns = self.config.window.as_nanos().min(i64::MAX as u128) as i64;
        if let Some(m) = self.measurements.get_mut(&key) {
            m.tracker.admit(series, now_ns, window_ns)?;
        }
        if let Some(Some((_, t))) = self.routes.get_mut(route as usize) {
            t.admit(series, now_ns, window_ns)?;
        }
        Ok(())
    }

    /// Every tracked measurement, for `/debug/cardinality`.
    pub fn snapshot(&self) -> Vec<MeasurementStat> {
        self.measurements
            .values()
            .map(|m| {
                m.tracker
                    .stat(String::from_utf8_lossy(&m.name).into_owned())
            })
            .collect()
    }

    /// Every route with a budget (the row's `measurement` is the route name).
    pub fn route_snapshot(&self) -> Vec<MeasurementStat> {
        self.routes
            .iter()
            .flatten()
            .map(|(name, t)| t.stat(name.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MeasurementLimit, RouteLimit};
    use std::time::Duration;

    fn config(max_series: u64, rate: u64) -> CardinalityConfig {
        CardinalityConfig {
            max_series,
            max_lines_per_second: rate,
            window: Duration::from_secs(60),
            max_measurements: 100,
            limits: vec![],
            routes: vec![],
        }
    }

    fn admit(b: &mut Budgets, text: &str, now: i64) -> Result<(), LineDrop> {
        let line = crate::parse::scan_line(text.as_bytes()).unwrap();
        b.admit(&line, 0, now)
    }

    fn routes() -> Vec<String> {
        vec!["junk".into(), "dev".into()]
    }

    #[test]
    fn no_budget_means_no_stage() {
        assert!(Budgets::new(&config(0, 0), &routes()).is_none());
    }

    #[test]
    fn new_series_beyond_budget_are_rejected_existing_keep_flowing() {
        let mut b = Budgets::new(&config(2, 0), &routes()).unwrap();
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
        let mut b = Budgets::new(&config(1, 0), &routes()).unwrap();
        assert_eq!(admit(&mut b, "cpu,a=1,b=2 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "cpu,b=2,a=1 v=1", 0), Ok(()));
    }

    #[test]
    fn silent_series_are_forgotten_after_two_windows() {
        let mut b = Budgets::new(&config(1, 0), &routes()).unwrap();
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
        let mut b = Budgets::new(&config(0, 3), &routes()).unwrap();
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
        let mut b = Budgets::new(&cfg, &routes()).unwrap();
        assert_eq!(admit(&mut b, "hot,id=1 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "hot,id=2 v=1", 0), Err(LineDrop::Cardinality));
        assert_eq!(admit(&mut b, "cold,id=2 v=1", 0), Ok(()));
    }

    #[test]
    fn measurement_tracking_is_bounded() {
        let mut cfg = config(1, 0);
        cfg.max_measurements = 2;
        let mut b = Budgets::new(&cfg, &routes()).unwrap();
        assert_eq!(admit(&mut b, "a,x=1 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "b,x=1 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "c,x=1 v=1", 0), Ok(()));
        assert_eq!(admit(&mut b, "c,x=2 v=1", 0), Ok(()));
        assert_eq!(b.untracked_lines, 2);
        assert_eq!(b.snapshot().len(), 2);
    }

    #[test]
    fn route_budgets_count_series_across_measurements() {
        let mut cfg = config(0, 0);
        cfg.routes.push(RouteLimit {
            route: "dev".into(),
            max_series: 2,
            max_lines_per_second: 0,
        });
        let mut b = Budgets::new(&cfg, &routes()).unwrap();
        let dev = 1;
        let line = |t: &'static str| crate::parse::scan_line(t.as_bytes()).unwrap();
        assert_eq!(b.admit(&line("cpu,h=a v=1"), dev, 0), Ok(()));
        assert_eq!(b.admit(&line("mem,h=a v=1"), dev, 0), Ok(()));
        // A third series in the route, whatever its measurement, is over budget...
        assert_eq!(
            b.admit(&line("disk,h=a v=1"), dev, 0),
            Err(LineDrop::Cardinality)
        );
        // ...existing ones keep flowing, and other routes are not budgeted.
        assert_eq!(b.admit(&line("cpu,h=a v=2"), dev, 0), Ok(()));
        assert_eq!(b.admit(&line("disk,h=a v=1"), 0, 0), Ok(()));
        let stats = b.route_snapshot();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].measurement, "dev");
        assert_eq!((stats[0].series, stats[0].rejected_cardinality), (2, 1));
    }

    #[test]
    fn route_rate_budget() {
        let mut cfg = config(0, 0);
        cfg.routes.push(RouteLimit {
            route: "dev".into(),
            max_series: 0,
            max_lines_per_second: 2,
        });
        let mut b = Budgets::new(&cfg, &routes()).unwrap();
        let line = crate::parse::scan_line(b"cpu v=1").unwrap();
        let t = 7_000_000_000;
        assert_eq!(b.admit(&line, 1, t), Ok(()));
        assert_eq!(b.admit(&line, 1, t), Ok(()));
        assert_eq!(b.admit(&line, 1, t), Err(LineDrop::RateLimited));
        assert_eq!(b.admit(&line, 0, t), Ok(()));
        assert_eq!(b.admit(&line, 1, t + 1_000_000_000), Ok(()));
    }
}
