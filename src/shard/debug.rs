//! What a shard shares with the admin server's `/debug/*` pages: a snapshot
//! refreshed about once a second (one short lock per second per shard, never
//! per line), and a rate-limited sample of rejected lines per reason.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::budget::MeasurementStat;

/// Samples kept per reason per shard.
pub const SAMPLES_PER_REASON: usize = 8;
/// At most one new sample per reason per shard this often.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest sample text kept.
pub const SAMPLE_BYTES_MAX: usize = 512;

#[derive(Clone, Debug, serde::Serialize)]
pub struct RejectSample {
    pub reason: &'static str,
    pub unix_ns: i64,
    pub line: String,
}

/// The published part.
#[derive(Default)]
pub struct ShardDebug {
    pub snapshot: Mutex<DebugSnapshot>,
}

#[derive(Clone, Default)]
pub struct DebugSnapshot {
    pub measurements: Vec<MeasurementStat>,
    /// Routes with a budget (`measurement` holds the route name).
    pub routes: Vec<MeasurementStat>,
    pub rejects: BTreeMap<&'static str, VecDeque<RejectSample>>,
}

/// The shard-local part: collects samples without locking.
#[derive(Default)]
pub struct Sampler {
    last: BTreeMap<&'static str, Instant>,
    rejects: BTreeMap<&'static str, VecDeque<RejectSample>>,
    dirty: bool,
}

impl Sampler {
    /// Maybe keep a sample of a rejected line (rate-limited per reason).
    #[inline]
    pub fn offer(&mut self, reason: &'static str, raw: &[u8], now: Instant, unix_ns: i64) {
        if let Some(last) = self.last.get(reason) {
            if now.saturating_duration_since(*last) < SAMPLE_INTERVAL {
                return;
            }
        }
        self.last.insert(reason, now);
        let raw = &raw[..raw.len().min(SAMPLE_BYTES_MAX)];
        let samples = self.rejects.entry(reason).or_default();
        if samples.len() == SAMPLES_PER_REASON {
            samples.pop_front();
        }
        samples.push_back(RejectSample {
            reason,
            unix_ns,
            line: String::from_utf8_lossy(raw).into_owned(),
        });
        self.dirty = true;
    }

    /// Publish budget snapshots (`(measurements, routes)`, when budgets
    /// are on) and any new reject samples.
    pub fn publish(
        &mut self,
        to: &ShardDebug,
        budgets: Option<(Vec<MeasurementStat>, Vec<MeasurementStat>)>,
    ) {
        let mut snapshot = to.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((measurements, routes)) = budgets {
            snapshot.measurements = measurements;
            snapshot.routes = routes;
        }
        if self.dirty {
            snapshot.rejects = self.rejects.clone();
            self.dirty = false;
        }
    }
}
