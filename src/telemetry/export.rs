//! Prometheus export: a `prometheus-client` collector that sums the shards'
//! counters and reads the sinks' stats at scrape time.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{Layout, LineDrop, ShardCounters, Totals};
use crate::parse::ParseError;
use crate::sink::Sink;

/// Everything a scrape needs. Built once at start.
#[derive(Clone)]
pub struct Telemetry {
    pub layout: Layout,
    pub shards: Vec<Arc<ShardCounters>>,
    pub sinks: Vec<Arc<Sink>>,
    pub route_names: Vec<String>,
    /// Per rule: (index as text, route name).
    pub rule_labels: Vec<(String, String)>,
    /// Per shard: `/debug` snapshots.
    pub debug: Vec<Arc<crate::shard::debug::ShardDebug>>,
    /// Each UDP socket's receive buffer as the kernel accounts it (twice
    /// `read_buffer_size`, or what the cap left): where drops begin.
    pub rx_buffer_bytes: u64,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Telemetry {
    pub fn totals(&self) -> Totals {
        Totals::sum(&self.shards, self.layout)
    }

    /// Every shard has opened its receiver and is polling.
    pub fn ready(&self) -> bool {
        !self.shards.is_empty()
            && self
                .shards
                .iter()
                .all(|s| s.receiving.load(Ordering::Acquire))
    }

    /// `/debug/cardinality`: measurements summed over shards, top by series
    /// and top by line rate.
    pub fn cardinality_json(&self, top: usize) -> String {
        let (mut measurements, mut routes) = (Vec::new(), Vec::new());
        for shard in &self.debug {
            let snapshot = shard.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            measurements.extend(snapshot.measurements.iter().cloned());
            routes.extend(snapshot.routes.iter().cloned());
        }
        let all = sum_by_name(measurements);
        let routes = sum_by_name(routes);
        let mut by_series = all.clone();
        by_series.sort_by(|a, b| {
            b.series
                .cmp(&a.series)
                .then(a.measurement.cmp(&b.measurement))
        });
        by_series.truncate(top);
        let mut by_rate = all;
        by_rate.sort_by(|a, b| {
            b.lines_last_second
                .cmp(&a.lines_last_second)
                .then(a.measurement.cmp(&b.measurement))
        });
        by_rate.truncate(top);
        let enabled = self.debug.iter().any(|d| {
            !d.snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .measurements
                .is_empty()
        });
        serde_json::json!({
            "note": if enabled { "series counts are per shard, summed" } else { "no cardinality budget configured, or no lines yet" },
            "top_by_series": by_series,
            "top_by_line_rate": by_rate,
            "routes": routes,
        })
        .to_string()
    }

    /// `/debug/rejects`: recent rejected lines per reason (rate-limited samples).
    pub fn rejects_json(&self) -> String {
        let mut merged: std::collections::BTreeMap<&str, Vec<crate::shard::debug::RejectSample>> =
            Default::default();
        for shard in &self.debug {
            let snapshot = shard.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            for (reason, samples) in &snapshot.rejects {
                merged
                    .entry(reason)
                    .or_default()
                    .extend(samples.iter().cloned());
            }
        }
        for samples in merged.values_mut() {
            samples.sort_by_key(|s| std::cmp::Reverse(s.unix_ns));
        }
        serde_json::to_string(&merged).unwrap_or_else(|_| "{}".into())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter_family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, u64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, i64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Telemetry {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let t = self.totals();
        let e = &mut e;
        counter(
            e,
            "sluice_received_datagrams",
            "Datagrams received.",
            t.datagrams,
        )?;
        counter(
            e,
            "sluice_received_bytes",
            "Payload bytes received.",
            t.bytes,
        )?;
        counter(
            e,
            "sluice_received_lines",
            "Lines received (blank lines and comments excluded).",
            t.lines,
        )?;
        let drops: Vec<_> = LineDrop::ALL
            .iter()
            .zip(&t.dropped)
            .map(|(r, v)| (vec![("reason", r.as_str())], *v))
            .collect();
        counter_family(
            e,
            "sluice_dropped_lines",
            "Lines dropped before reaching a sink queue, by reason. received = routed + dropped.",
            &drops,
        )?;
        let parse: Vec<_> = ParseError::ALL
            .iter()
            .zip(&t.parse_errors)
            .map(|(k, v)| (vec![("kind", k.as_str())], *v))
            .collect();
        counter_family(
            e,
            "sluice_parse_errors",
            "Rejected lines by precise parse error.",
            &parse,
        )?;
        let routed: Vec<_> = self
            .route_names
            .iter()
            .zip(&t.routed)
            .map(|(r, v)| (vec![("route", r.as_str())], *v))
            .collect();
        counter_family(
            e,
            "sluice_routed_lines",
            "Lines routed to a route and appended to a chunk for its sinks.",
            &routed,
        )?;
        let rules: Vec<_> = self
            .rule_labels
            .iter()
            .zip(&t.rule_matches)
            .map(|((i, r), v)| (vec![("rule", i.as_str()), ("route", r.as_str())], *v))
            .collect();
        counter_family(
            e,
            "sluice_rule_matches",
            "Lines matched by each rule (first match wins).",
            &rules,
        )?;
        counter_family(
            e,
            "sluice_dropped_datagrams",
            "Datagrams dropped whole, by reason.",
            &[(vec![("reason", "truncated")], t.truncated)],
        )?;
        counter(
            e,
            "sluice_kernel_drops",
            "Datagrams the kernel dropped on sluice's sockets before user space (the socket's drop counter, SO_MEMINFO).",
            t.kernel_drops,
        )?;
        counter(
            e,
            "sluice_dead_lettered_lines",
            "Rejected lines also sent to the dead-letter route (they stay counted as dropped).",
            t.dead_lettered,
        )?;
        counter(
            e,
            "sluice_rx_enobufs",
            "io_uring receives that found no free buffer.",
            t.enobufs,
        )?;
        counter(
            e,
            "sluice_rx_rearms",
            "io_uring multishot receives re-armed.",
            t.rearms,
        )?;
        counter(
            e,
            "sluice_rx_batches",
            "Shard wake-ups that found datagrams; sluice_received_datagrams over this is the mean batch (listen.wake_coalesce raises it).",
            t.rx_batches,
        )?;
        counter(
            e,
            "sluice_rx_stolen_datagrams",
            "Datagrams shards took from siblings' sockets that were behind (listen.steal): how much a skewed flow split needed help.",
            t.stolen,
        )?;
        counter(
            e,
            "sluice_chunk_buffers_allocated",
            "Chunk buffers that did not come from the shards' pools (chunk.pool): one had none free, a line was larger than a chunk, or there is no pool. Rising under steady load means more chunks are in flight than the pool holds.",
            t.chunk_allocs,
        )?;
        // Per shard: how evenly SO_REUSEPORT spread the senders' flows (one
        // source address and port always land on one shard).
        let labels: Vec<String> = (0..self.shards.len()).map(|i| i.to_string()).collect();
        // One series per shard, labelled with its index.
        fn per_shard<'l, T>(
            shards: &[Arc<ShardCounters>],
            labels: &'l [String],
            value: impl Fn(&ShardCounters) -> T,
        ) -> Vec<(Vec<(&'static str, &'l str)>, T)> {
            shards
                .iter()
                .zip(labels)
                .map(|(shard, label)| (vec![("shard", label.as_str())], value(shard)))
                .collect()
        }
        counter_family(
            e,
            "sluice_shard_received_datagrams",
            "Datagrams received, per shard: an uneven split means few or heavy flows (each source address and port lands on one shard).",
            &per_shard(&self.shards, &labels, |s| s.get(super::DATAGRAMS)),
        )?;
        counter_family(
            e,
            "sluice_shard_stolen_datagrams",
            "Datagrams a shard took from siblings' sockets that were behind (listen.steal; also counted in sluice_shard_received_datagrams).",
            &per_shard(&self.shards, &labels, |s| s.get(super::STOLEN)),
        )?;
        gauge_family(
            e,
            "sluice_shard_rx_backlog_bytes",
            "Receive backlog per shard at its last wake-up (summed over its sockets).",
            &per_shard(&self.shards, &labels, |s| {
                i64::try_from(s.get(super::BACKLOG)).unwrap_or(i64::MAX)
            }),
        )?;
        gauge_family(
            e,
            "sluice_shard_nice",
            "Scheduling niceness each shard runs at: listen.nice, or the process's where raising priority was refused.",
            &per_shard(&self.shards, &labels, |s| {
                i64::from(s.nice.load(Ordering::Relaxed))
            }),
        )?;
        let (mut uring, mut mmsg) = (0i64, 0i64);
        for s in &self.shards {
            match s.path.load(Ordering::Relaxed) {
                1 => uring += 1,
                2 => mmsg += 1,
                _ => {}
            }
        }
        gauge_family(
            e,
            "sluice_rx_path_shards",
            "Shards receiving on each path.",
            &[
                (vec![("path", "io_uring")], uring),
                (vec![("path", "recvmmsg")], mmsg),
            ],
        )?;
        gauge(
            e,
            "sluice_shards",
            "Receive shards.",
            self.shards.len() as i64,
        )?;
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            e,
            "sluice_rx_buffer_bytes",
            "Each UDP socket's receive buffer in the kernel's accounting (twice listen.read_buffer_size unless capped): the kernel drops when a socket's backlog reaches it.",
            as_gauge(self.rx_buffer_bytes),
        )?;
        gauge(
            e,
            "sluice_rx_backlog_bytes",
            "Largest receive backlog a shard found in its sockets when it last woke (kernel accounting, about 2.3 KB per 1400-byte datagram).",
            as_gauge(t.rx_backlog_bytes),
        )?;
        gauge(
            e,
            "sluice_rx_backlog_max_bytes",
            "Largest backlog of any one UDP socket since start: against sluice_rx_buffer_bytes, how close receiving came to kernel drops.",
            as_gauge(t.rx_backlog_max_bytes),
        )?;

        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter_family(
            e,
            "sluice_sink_enqueued_lines",
            "Lines queued for each sink.",
            &self.per_sink(|i, _| t.sink_enqueued[i]),
        )?;
        counter_family(
            e,
            "sluice_sink_lines",
            "Lines delivered to each sink (2xx).",
            &self.per_sink(|_, s| load(&s.stats.lines_delivered)),
        )?;
        counter_family(
            e,
            "sluice_sink_bytes",
            "Body bytes delivered to each sink (before compression).",
            &self.per_sink(|_, s| load(&s.stats.bytes_delivered)),
        )?;
        counter_family(
            e,
            "sluice_sink_requests",
            "HTTP requests attempted.",
            &self.per_sink(|_, s| load(&s.stats.requests)),
        )?;
        counter_family(
            e,
            "sluice_sink_request_failures",
            "HTTP requests that failed (connection, timeout, non-2xx).",
            &self.per_sink(|_, s| load(&s.stats.request_failures)),
        )?;
        counter_family(
            e,
            "sluice_sink_retries",
            "HTTP requests that were retries.",
            &self.per_sink(|_, s| load(&s.stats.retries)),
        )?;
        let mut sink_drops = Vec::new();
        for (i, s) in self.sinks.iter().enumerate() {
            for (reason, v) in [
                ("queue_full", t.sink_queue_full[i]),
                ("sink_gave_up", load(&s.stats.lines_gave_up)),
                ("sink_rejected", load(&s.stats.lines_rejected)),
                ("shutdown", load(&s.stats.lines_shutdown)),
            ] {
                sink_drops.push((vec![("sink", s.name.as_str()), ("reason", reason)], v));
            }
        }
        counter_family(
            e,
            "sluice_sink_dropped_lines",
            "Lines a sink did not deliver, by reason.",
            &sink_drops,
        )?;
        gauge_family(
            e,
            "sluice_sink_queue_depth",
            "Chunks waiting in each sink's queue.",
            &self.per_sink(|_, s| s.queue_len() as i64),
        )?;
        gauge_family(
            e,
            "sluice_sink_queue_bytes",
            "Bytes waiting in each sink's queue (bounded by queue_max_size).",
            &self.per_sink(|_, s| s.queued_bytes() as i64),
        )?;
        gauge_family(
            e,
            "sluice_sink_lines_in_flight",
            "Lines taken from the queue and not yet delivered or dropped.",
            &self.per_sink(|_, s| load(&s.stats.lines_in_flight) as i64),
        )?;
        Ok(())
    }
}

impl Telemetry {
    /// One row a sink, labelled with its name: a counter's or a gauge's.
    fn per_sink<T>(&self, f: impl Fn(usize, &Sink) -> T) -> Vec<(Vec<(&str, &str)>, T)> {
        self.sinks
            .iter()
            .enumerate()
            .map(|(i, s)| (vec![("sink", s.name.as_str())], f(i, s)))
            .collect()
    }
}

/// Sum per-shard budget rows that share a name.
fn sum_by_name(rows: Vec<crate::budget::MeasurementStat>) -> Vec<crate::budget::MeasurementStat> {
    let mut merged: std::collections::BTreeMap<String, crate::budget::MeasurementStat> =
        Default::default();
    for row in rows {
        match merged.get_mut(&row.measurement) {
            Some(entry) => {
                entry.series += row.series;
                entry.lines_last_second += row.lines_last_second;
                entry.lines_total += row.lines_total;
                entry.rejected_cardinality += row.rejected_cardinality;
                entry.rejected_rate += row.rejected_rate;
            }
            None => {
                merged.insert(row.measurement.clone(), row);
            }
        }
    }
    merged.into_values().collect()
}
