//! Configuration: one TOML file (or the embedded default), validated into
//! [`Config`]. Unknown keys and bad values are errors naming the key and why.
mod types;
mod units;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use types::*;
pub use units::{parse_duration, parse_size};

/// The configuration `sluice` runs on when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A rule as configured (influx-spout's `[[rule]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// Exact (unescaped) measurement name.
    Basic(String),
    /// Every listed `(key, value)` pair is present among the line's tags.
    Tags(Vec<(String, String)>),
    /// The regex matches somewhere in the line (without its newline).
    Regex(String),
    /// The regex does not match anywhere in the line.
    NegRegex(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    pub kind: RuleKind,
    pub route: String,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: ListenConfig,
    pub sanity: SanityConfig,
    pub chunk: ChunkConfig,
    pub admin_listen: SocketAddr,
    pub rules: Vec<RuleConfig>,
    pub junkyard: String,
    pub sinks: Vec<SinkConfig>,
    pub shutdown_timeout: Duration,
    pub cardinality: CardinalityConfig,
    pub dead_letter: DeadLetterConfig,
}

/// A configuration error: says where and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

impl Config {
    /// Load and validate a file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The embedded default.
    pub fn default_config() -> Config {
        Config::parse(DEFAULT_CONFIG, "embedded default config")
            .expect("the embedded default config is valid (tested)")
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, Error> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Syntax {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Validator { origin }.config(raw)
    }

    /// Every route name: those rules produce, then the junkyard.
    pub fn route_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for rule in &self.rules {
            if !names.contains(&rule.route) {
                names.push(rule.route.clone());
            }
        }
        if !names.contains(&self.junkyard) {
            names.push(self.junkyard.clone());
        }
        if let Some(dead) = &self.dead_letter.route {
            if !names.contains(dead) {
                names.push(dead.clone());
            }
        }
        names
    }
}

// ---- raw (as written) ----

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Int(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Int(u64),
    Text(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    sanity: RawSanity,
    #[serde(default)]
    chunk: RawChunk,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
    junkyard: Option<String>,
    #[serde(default, rename = "sink")]
    sinks: Vec<RawSink>,
    shutdown_timeout: Option<DurationValue>,
    #[serde(default)]
    cardinality: RawCardinality,
    #[serde(default)]
    dead_letter: RawDeadLetter,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCardinality {
    max_series: Option<u64>,
    max_lines_per_second: Option<u64>,
    window: Option<DurationValue>,
    max_measurements: Option<usize>,
    #[serde(default, rename = "limit")]
    limits: Vec<RawLimit>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRouteLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteLimit {
    route: Option<String>,
    max_series: Option<u64>,
    max_lines_per_second: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    measurement: Option<String>,
    max_series: Option<u64>,
    max_lines_per_second: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDeadLetter {
    route: Option<String>,
    reasons: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListen {
    udp: Option<Vec<String>>,
    shards: Option<usize>,
    pin: Option<bool>,
    io_uring: Option<String>,
    read_buffer_size: Option<SizeValue>,
    max_datagram_size: Option<SizeValue>,
    recv_buffers: Option<usize>,
    wake_coalesce: Option<DurationValue>,
    balance: Option<String>,
    steal: Option<bool>,
    nice: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSanity {
    max_time_delta: Option<DurationValue>,
    max_time_past: Option<DurationValue>,
    max_time_future: Option<DurationValue>,
    max_line_length: Option<SizeValue>,
    precision: Option<String>,
    stamp_missing: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawChunk {
    max_size: Option<SizeValue>,
    max_age: Option<DurationValue>,
    pool: Option<SizeValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "match")]
    pattern: Option<String>,
    tags: Option<Vec<Vec<String>>>,
    route: Option<String>,
    /// influx-spout's name for `route`.
    subject: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    name: Option<String>,
    url: Option<String>,
    routes: Option<Vec<String>>,
    batch_max_size: Option<SizeValue>,
    batch_max_age: Option<DurationValue>,
    queue_max_batches: Option<usize>,
    queue_max_size: Option<SizeValue>,
    connections: Option<usize>,
    timeout: Option<DurationValue>,
    gzip: Option<u32>,
    retry_max_age: Option<DurationValue>,
    retry_backoff_initial: Option<DurationValue>,
    retry_backoff_max: Option<DurationValue>,
    nice: Option<i64>,
}

// ---- validation ----

struct Validator<'a> {
    origin: &'a str,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            origin: self.origin.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn size(&self, key: &str, value: Option<SizeValue>, default: u64) -> Result<u64, Error> {
        match value {
            None => Ok(default),
            Some(SizeValue::Int(n)) => Ok(n),
            Some(SizeValue::Text(t)) => parse_size(&t).map_err(|m| self.err(key, m)),
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<DurationValue>,
        default: Duration,
    ) -> Result<Duration, Error> {
        match value {
            None => Ok(default),
            Some(DurationValue::Int(0)) => Ok(Duration::ZERO),
            Some(DurationValue::Int(n)) => Err(self.err(
                key,
                format!("{n} has no unit; write e.g. \"{n}s\" or \"{n}ms\""),
            )),
            Some(DurationValue::Text(t)) => parse_duration(&t).map_err(|m| self.err(key, m)),
        }
    }

    fn positive(&self, key: &str, value: Duration) -> Result<Duration, Error> {
        if value.is_zero() {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(value)
    }

    fn range(&self, key: &str, value: u64, min: u64, max: u64) -> Result<u64, Error> {
        if value < min || value > max {
            return Err(self.err(key, format!("{value} is out of range {min}..={max}")));
        }
        Ok(value)
    }

    fn config(&self, raw: RawConfig) -> Result<Config, Error> {
        let listen = self.listen(raw.listen)?;
        let sanity = self.sanity(raw.sanity)?;
        let chunk = ChunkConfig {
            max_size: self.range(
                "chunk.max_size",
                self.size("chunk.max_size", raw.chunk.max_size, CHUNK_MAX_SIZE_DEFAULT)?,
                1 << 10,
                64 << 20,
            )? as usize,
            max_age: self.positive(
                "chunk.max_age",
                self.duration(
                    "chunk.max_age",
                    raw.chunk.max_age,
                    Duration::from_millis(100),
                )?,
            )?,
            pool: self.range(
                "chunk.pool",
                self.size("chunk.pool", raw.chunk.pool, 64 << 20)?,
                0,
                64 << 30,
            )? as usize,
        };
        let admin_listen = raw.admin.listen.unwrap_or_else(|| "127.0.0.1:9331".into());
        let admin_listen: SocketAddr = admin_listen.parse().map_err(|_| {
            self.err(
                "admin.listen",
                format!("{admin_listen:?} is not an address like \"127.0.0.1:9331\""),
            )
        })?;
        let junkyard = raw.junkyard.unwrap_or_else(|| "junk".into());
        if junkyard.is_empty() {
            return Err(self.err("junkyard", "must not be empty"));
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, rule) in raw.rules.into_iter().enumerate() {
            rules.push(self.rule(i, rule)?);
        }
        let shutdown_timeout = self.duration(
            "shutdown_timeout",
            raw.shutdown_timeout,
            Duration::from_secs(10),
        )?;

        let cardinality = self.cardinality(raw.cardinality)?;
        let dead_letter = self.dead_letter(raw.dead_letter)?;
        let mut route_names: BTreeSet<String> = rules.iter().map(|r| r.route.clone()).collect();
        route_names.insert(junkyard.clone());
        if let Some(dead) = &dead_letter.route {
            if rules.iter().any(|r| &r.route == dead) || dead == &junkyard {
                return Err(self.err(
                    "dead_letter.route",
                    format!("{dead:?} is also a rule route or the junkyard; give rejects a route of their own"),
                ));
            }
            route_names.insert(dead.clone());
        }
        for (i, limit) in cardinality.routes.iter().enumerate() {
            if !route_names.contains(&limit.route) {
                return Err(self.err(
                    format!("cardinality.route[{i}].route"),
                    format!(
                        "{:?} is not a route (routes: {})",
                        limit.route,
                        route_names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if cardinality.routes[..i]
                .iter()
                .any(|l| l.route == limit.route)
            {
                return Err(self.err(
                    format!("cardinality.route[{i}].route"),
                    format!("{:?} has a budget already", limit.route),
                ));
            }
        }
        let mut sinks: Vec<SinkConfig> = Vec::with_capacity(raw.sinks.len());
        for (i, sink) in raw.sinks.into_iter().enumerate() {
            let sink = self.sink(i, sink, &route_names)?;
            if sinks.iter().any(|s| s.name == sink.name) {
                return Err(self.err(
                    format!("sink[{i}].name"),
                    format!("{:?} is used by another sink", sink.name),
                ));
            }
            sinks.push(sink);
        }
        Ok(Config {
            listen,
            sanity,
            chunk,
            admin_listen,
            rules,
            junkyard,
            sinks,
            shutdown_timeout,
            cardinality,
            dead_letter,
        })
    }

    fn cardinality(&self, raw: RawCardinality) -> Result<CardinalityConfig, Error> {
        let window = self.positive(
            "cardinality.window",
            self.duration("cardinality.window", raw.window, Duration::from_secs(3600))?,
        )?;
        let mut limits = Vec::with_capacity(raw.limits.len());
        for (i, limit) in raw.limits.into_iter().enumerate() {
            let measurement = limit.measurement.filter(|m| !m.is_empty()).ok_or_else(|| {
                self.err(
                    format!("cardinality.limit[{i}].measurement"),
                    "is missing or empty",
                )
            })?;
            limits.push(MeasurementLimit {
                measurement,
                max_series: limit.max_series,
                max_lines_per_second: limit.max_lines_per_second,
            });
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, limit) in raw.routes.into_iter().enumerate() {
            let route = limit.route.filter(|r| !r.is_empty()).ok_or_else(|| {
                self.err(
                    format!("cardinality.route[{i}].route"),
                    "is missing or empty",
                )
            })?;
            let (max_series, max_lines_per_second) = (
                limit.max_series.unwrap_or(0),
                limit.max_lines_per_second.unwrap_or(0),
            );
            if max_series == 0 && max_lines_per_second == 0 {
                return Err(self.err(
                    format!("cardinality.route[{i}]"),
                    "sets neither max_series nor max_lines_per_second",
                ));
            }
            routes.push(RouteLimit {
                route,
                max_series,
                max_lines_per_second,
            });
        }
        Ok(CardinalityConfig {
            routes,
            max_series: raw.max_series.unwrap_or(0),
            max_lines_per_second: raw.max_lines_per_second.unwrap_or(0),
            window,
            max_measurements: self.range(
                "cardinality.max_measurements",
                raw.max_measurements.unwrap_or(10_000) as u64,
                1,
                10_000_000,
            )? as usize,
            limits,
        })
    }

    fn dead_letter(&self, raw: RawDeadLetter) -> Result<DeadLetterConfig, Error> {
        let reasons = raw.reasons.unwrap_or_default();
        for (i, reason) in reasons.iter().enumerate() {
            if !crate::check::Reason::LABELS.contains(&reason.as_str()) {
                return Err(self.err(
                    format!("dead_letter.reasons[{i}]"),
                    format!(
                        "{reason:?} is not a reject reason (one of: {})",
                        crate::check::Reason::LABELS.join(", ")
                    ),
                ));
            }
        }
        if let Some(route) = &raw.route {
            if route.is_empty() {
                return Err(self.err("dead_letter.route", "must not be empty"));
            }
        }
        Ok(DeadLetterConfig {
            route: raw.route,
            reasons,
        })
    }

    fn listen(&self, raw: RawListen) -> Result<ListenConfig, Error> {
        let texts = raw.udp.unwrap_or_else(|| vec!["0.0.0.0:8089".into()]);
        if texts.is_empty() {
            return Err(self.err("listen.udp", "needs at least one address"));
        }
        let mut udp = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let addr: SocketAddr = text.parse().map_err(|_| {
                self.err(
                    format!("listen.udp[{i}]"),
                    format!("{text:?} is not an address like \"0.0.0.0:8089\" or \"[::]:8089\""),
                )
            })?;
            udp.push(addr);
        }
        let io_uring = match raw.io_uring.as_deref().unwrap_or("auto") {
            "auto" => IoUringMode::Auto,
            "on" => IoUringMode::On,
            "off" => IoUringMode::Off,
            other => {
                return Err(self.err(
                    "listen.io_uring",
                    format!("{other:?} is not one of \"auto\", \"on\", \"off\""),
                ))
            }
        };
        let wake_coalesce = self.duration(
            "listen.wake_coalesce",
            raw.wake_coalesce,
            WAKE_COALESCE_DEFAULT,
        )?;
        if wake_coalesce > WAKE_COALESCE_MAX {
            return Err(self.err(
                "listen.wake_coalesce",
                format!(
                    "{wake_coalesce:?} is more than {WAKE_COALESCE_MAX:?}: every datagram could \
                     wait that long, and the socket buffer must hold what arrives meanwhile"
                ),
            ));
        }
        let balance = match raw.balance.as_deref().unwrap_or("flow") {
            "flow" => Balance::Flow,
            "datagram" => Balance::Datagram,
            other => {
                return Err(self.err(
                    "listen.balance",
                    format!("{other:?} is not one of \"flow\", \"datagram\""),
                ))
            }
        };
        let nice = match raw.nice.unwrap_or(SHARD_NICE_DEFAULT.into()) {
            n @ -20..=19 => n as i32,
            n => return Err(self.err("listen.nice", format!("{n} is out of range -20..=19"))),
        };
        let shards = raw.shards.unwrap_or(0);
        if shards > 1024 {
            return Err(self.err("listen.shards", format!("{shards} is more than 1024")));
        }
        Ok(ListenConfig {
            udp,
            shards,
            pin: raw.pin.unwrap_or(true),
            io_uring,
            read_buffer_size: self.range(
                "listen.read_buffer_size",
                self.size("listen.read_buffer_size", raw.read_buffer_size, 32 << 20)?,
                4 << 10,
                2 << 30,
            )? as usize,
            max_datagram_size: self.range(
                "listen.max_datagram_size",
                self.size("listen.max_datagram_size", raw.max_datagram_size, 64 << 10)?,
                512,
                65536,
            )? as usize,
            recv_buffers: self.range(
                "listen.recv_buffers",
                raw.recv_buffers.unwrap_or(64) as u64,
                1,
                32768,
            )? as usize,
            balance,
            steal: raw.steal.unwrap_or(false),
            wake_coalesce,
            nice,
        })
    }

    fn sanity(&self, raw: RawSanity) -> Result<SanityConfig, Error> {
        let delta = self.duration(
            "sanity.max_time_delta",
            raw.max_time_delta,
            Duration::from_secs(600),
        )?;
        let delta = self.positive("sanity.max_time_delta", delta)?;
        let past = self.duration("sanity.max_time_past", raw.max_time_past, delta)?;
        let past = self.positive("sanity.max_time_past", past)?;
        let future = self.duration("sanity.max_time_future", raw.max_time_future, delta)?;
        let future = self.positive("sanity.max_time_future", future)?;
        let max_line_length = self.range(
            "sanity.max_line_length",
            self.size("sanity.max_line_length", raw.max_line_length, 64 << 10)?,
            16,
            16 << 20,
        )? as usize;
        let precision = match raw.precision.as_deref().unwrap_or("ns") {
            "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "auto" => Precision::Auto,
            other => {
                return Err(self.err(
                    "sanity.precision",
                    format!("{other:?} is not one of \"ns\", \"us\", \"ms\", \"s\", \"auto\""),
                ))
            }
        };
        Ok(SanityConfig {
            max_time_past: past,
            max_time_future: future,
            max_line_length,
            precision,
            stamp_missing: raw.stamp_missing.unwrap_or(false),
        })
    }

    fn rule(&self, i: usize, raw: RawRule) -> Result<RuleConfig, Error> {
        let key = |k: &str| format!("rule[{i}].{k}");
        let route = match (raw.route, raw.subject) {
            (Some(_), Some(_)) => {
                return Err(self.err(key("route"), "give `route` or `subject`, not both"))
            }
            (Some(r), None) | (None, Some(r)) => r,
            (None, None) => return Err(self.err(key("route"), "is missing")),
        };
        if route.is_empty() {
            return Err(self.err(key("route"), "must not be empty"));
        }
        let kind = raw
            .kind
            .ok_or_else(|| self.err(key("type"), "is missing (basic, tags, regex or negregex)"))?;
        let kind = match kind.as_str() {
            "tags" => {
                if raw.pattern.is_some() {
                    return Err(self.err(key("match"), "a tags rule takes `tags`, not `match`"));
                }
                let tags = raw
                    .tags
                    .ok_or_else(|| self.err(key("tags"), "is missing"))?;
                if tags.is_empty() {
                    return Err(self.err(key("tags"), "must list at least one pair"));
                }
                let mut pairs = Vec::with_capacity(tags.len());
                for (j, pair) in tags.into_iter().enumerate() {
                    let [k, v]: [String; 2] = pair.try_into().map_err(|p: Vec<String>| {
                        self.err(
                            format!("rule[{i}].tags[{j}]"),
                            format!("needs exactly two strings [key, value], got {}", p.len()),
                        )
                    })?;
                    if k.is_empty() || v.is_empty() {
                        return Err(self.err(
                            format!("rule[{i}].tags[{j}]"),
                            "key and value must not be empty",
                        ));
                    }
                    pairs.push((k, v));
                }
                RuleKind::Tags(pairs)
            }
            "basic" | "regex" | "negregex" => {
                if raw.tags.is_some() {
                    return Err(self.err(
                        key("tags"),
                        format!("a {kind} rule takes `match`, not `tags`"),
                    ));
                }
                let pattern = raw
                    .pattern
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| self.err(key("match"), "is missing or empty"))?;
                match kind.as_str() {
                    "basic" => RuleKind::Basic(pattern),
                    "regex" | "negregex" => {
                        if let Err(e) = regex::bytes::Regex::new(&pattern) {
                            return Err(self.err(key("match"), format!("bad regex: {e}")));
                        }
                        if kind == "regex" {
                            RuleKind::Regex(pattern)
                        } else {
                            RuleKind::NegRegex(pattern)
                        }
                    }
                    _ => unreachable!("matched above"),
                }
            }
            other => {
                return Err(self.err(
                    key("type"),
                    format!("{other:?} is not one of basic, tags, regex, negregex"),
                ))
            }
        };
        Ok(RuleConfig { kind, route })
    }

    fn sink(
        &self,
        i: usize,
        raw: RawSink,
        route_names: &BTreeSet<String>,
    ) -> Result<SinkConfig, Error> {
        let key = |k: &str| format!("sink[{i}].{k}");
        let name = raw
            .name
            .ok_or_else(|| self.err(key("name"), "is missing"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(self.err(
                key("name"),
                format!("{name:?} must be non-empty and use only letters, digits, '_', '-', '.'"),
            ));
        }
        let url = raw.url.ok_or_else(|| self.err(key("url"), "is missing"))?;
        if !url.starts_with("http://") {
            return Err(self.err(
                key("url"),
                format!("{url:?}: only http:// URLs are supported"),
            ));
        }
        let routes = raw.routes.unwrap_or_else(|| vec!["*".into()]);
        if routes.is_empty() {
            return Err(self.err(key("routes"), "must list at least one route (or \"*\")"));
        }
        for route in &routes {
            if route != "*" && !route_names.contains(route) {
                return Err(self.err(
                    key("routes"),
                    format!(
                        "route {route:?} is produced by no rule and is not the junkyard (known: {})",
                        route_names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let retry_backoff_initial = self.positive(
            &key("retry_backoff_initial"),
            self.duration(
                &key("retry_backoff_initial"),
                raw.retry_backoff_initial,
                Duration::from_millis(100),
            )?,
        )?;
        let retry_backoff_max = self.duration(
            &key("retry_backoff_max"),
            raw.retry_backoff_max,
            Duration::from_secs(10),
        )?;
        if retry_backoff_max < retry_backoff_initial {
            return Err(self.err(
                key("retry_backoff_max"),
                "must not be smaller than retry_backoff_initial",
            ));
        }
        let batch_max_size = self.range(
            &key("batch_max_size"),
            self.size(&key("batch_max_size"), raw.batch_max_size, 1 << 20)?,
            1 << 10,
            256 << 20,
        )? as usize;
        let queue_max_size = self.range(
            &key("queue_max_size"),
            self.size(
                &key("queue_max_size"),
                raw.queue_max_size,
                QUEUE_MAX_SIZE_DEFAULT,
            )?,
            1 << 10,
            64 << 30,
        )? as usize;
        // A queue that cannot hold a full body would leave every body to
        // `batch_max_age`: say so rather than send small bodies late.
        if queue_max_size < batch_max_size {
            return Err(self.err(
                key("queue_max_size"),
                format!(
                    "{queue_max_size} bytes is less than batch_max_size ({batch_max_size} bytes): \
                     the queue must hold at least one full body"
                ),
            ));
        }
        Ok(SinkConfig {
            name,
            url,
            routes,
            batch_max_size,
            batch_max_age: self.positive(
                &key("batch_max_age"),
                self.duration(
                    &key("batch_max_age"),
                    raw.batch_max_age,
                    Duration::from_secs(1),
                )?,
            )?,
            queue_max_batches: self.range(
                &key("queue_max_batches"),
                raw.queue_max_batches.unwrap_or(QUEUE_MAX_BATCHES_DEFAULT) as u64,
                1,
                1 << 20,
            )? as usize,
            queue_max_size,
            connections: self.range(
                &key("connections"),
                raw.connections.unwrap_or(2) as u64,
                1,
                256,
            )? as usize,
            timeout: self.positive(
                &key("timeout"),
                self.duration(&key("timeout"), raw.timeout, Duration::from_secs(10))?,
            )?,
            gzip: self.range(&key("gzip"), raw.gzip.unwrap_or(0) as u64, 0, 9)? as u32,
            retry_max_age: self.duration(
                &key("retry_max_age"),
                raw.retry_max_age,
                Duration::from_secs(60),
            )?,
            retry_backoff_initial,
            retry_backoff_max,
            nice: match raw.nice.unwrap_or(5) {
                n @ -20..=19 => n as i32,
                n => return Err(self.err(key("nice"), format!("{n} is out of range -20..=19"))),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::default_config();
        assert_eq!(c.listen.udp, vec!["0.0.0.0:8089".parse().unwrap()]);
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.sinks[0].url, "http://127.0.0.1:8086/write?db=telegraf");
        assert_eq!(c.sinks[0].routes, vec!["*"]);
        assert_eq!(c.sanity.max_time_past, Duration::from_secs(600));
        assert_eq!(c.sanity.max_line_length, 64 << 10);
        assert_eq!(c.junkyard, "junk");
        // The file and the code agree on the receive buffer.
        assert_eq!(c.listen.read_buffer_size, 32 << 20);
        let unset = Config::parse("", "t").unwrap();
        assert_eq!(unset.listen.read_buffer_size, c.listen.read_buffer_size);
        // ... and on the wake-up coalescing.
        assert_eq!(c.listen.wake_coalesce, WAKE_COALESCE_DEFAULT);
        assert_eq!(unset.listen.wake_coalesce, c.listen.wake_coalesce);
    }

    #[test]
    fn balance_is_flow_or_datagram() {
        let parse = |v: &str| {
            Config::parse(&format!("[listen]\nbalance = \"{v}\"\n"), "t").map(|c| c.listen.balance)
        };
        assert_eq!(
            Config::parse("", "t").unwrap().listen.balance,
            Balance::Flow
        );
        assert_eq!(Config::default_config().listen.balance, Balance::Flow);
        assert_eq!(parse("datagram").unwrap(), Balance::Datagram);
        let e = parse("random").unwrap_err().to_string();
        assert!(
            e.contains("listen.balance") && e.contains("datagram"),
            "{e}"
        );
    }

    #[test]
    fn listen_nice_defaults_to_minus_5_and_is_checked() {
        let nice =
            |v: &str| Config::parse(&format!("[listen]\nnice = {v}\n"), "t").map(|c| c.listen.nice);
        assert_eq!(Config::parse("", "t").unwrap().listen.nice, -5);
        assert_eq!(
            Config::default_config().listen.nice,
            i32::from(SHARD_NICE_DEFAULT)
        );
        assert_eq!(nice("0").unwrap(), 0);
        assert_eq!(nice("-20").unwrap(), -20);
        assert_eq!(nice("19").unwrap(), 19);
        for bad in ["20", "-21"] {
            let e = nice(bad).unwrap_err().to_string();
            assert!(e.contains("listen.nice") && e.contains("-20..=19"), "{e}");
        }
        let e = nice("\"high\"").unwrap_err().to_string();
        assert!(e.contains("nice"), "{e}");
    }

    #[test]
    fn wake_coalesce_is_a_bounded_duration() {
        let listen = |v: &str| format!("[listen]\nwake_coalesce = {v}\n");
        let parse = |v: &str| Config::parse(&listen(v), "t").unwrap().listen.wake_coalesce;
        assert_eq!(parse("\"500us\""), Duration::from_micros(500));
        assert_eq!(parse("\"100ms\""), WAKE_COALESCE_MAX);
        assert_eq!(parse("0"), Duration::ZERO);
        let e = err(&listen("\"101ms\""));
        assert!(
            e.contains("listen.wake_coalesce") && e.contains("100ms"),
            "{e}"
        );
        let e = err(&listen("2"));
        assert!(
            e.contains("listen.wake_coalesce") && e.contains("no unit"),
            "{e}"
        );
    }

    #[test]
    fn sink_nice_defaults_to_5_and_is_checked() {
        let base = "[[sink]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/write\"\nroutes = [\"*\"]\n";
        assert_eq!(Config::parse(base, "t").unwrap().sinks[0].nice, 5);
        let set = format!("{base}nice = -3\n");
        assert_eq!(Config::parse(&set, "t").unwrap().sinks[0].nice, -3);
        let e = err(&format!("{base}nice = 20\n"));
        assert!(e.contains("nice") && e.contains("-20..=19"), "{e}");
    }

    #[test]
    fn steal_defaults_to_false_and_is_a_bool() {
        assert!(!Config::parse("", "t").unwrap().listen.steal);
        assert!(!Config::default_config().listen.steal);
        assert!(
            Config::parse("[listen]\nsteal = true", "t")
                .unwrap()
                .listen
                .steal
        );
        let e = err("[listen]\nsteal = 1");
        assert!(e.contains("steal"), "{e}");
    }

    #[test]
    fn chunk_pool_is_shared_out_over_the_shards() {
        let chunk = Config::parse("", "t").unwrap().chunk;
        assert_eq!(chunk.pool, 64 << 20);
        assert_eq!(Config::default_config().chunk.pool, 64 << 20);
        // 64 MB of 1 MB buffers: 32 a shard on two, 4 on sixteen.
        assert_eq!(chunk.max_size, 1 << 20);
        assert_eq!(Config::default_config().chunk.max_size, 1 << 20);
        assert_eq!(chunk.pool_buffers(2), 32);
        assert_eq!(chunk.pool_buffers(16), 4);
        // At least one a shard while there is a pool; none without.
        assert_eq!(chunk.pool_buffers(1024), 1);
        let off = Config::parse("[chunk]\npool = \"0\"", "t").unwrap().chunk;
        assert_eq!(off.pool_buffers(2), 0);
        let small = Config::parse("[chunk]\nmax_size = \"4KB\"\npool = \"1MB\"", "t")
            .unwrap()
            .chunk;
        assert_eq!(small.pool_buffers(2), 128);
        let e = err("[chunk]\npool = \"lots\"");
        assert!(e.contains("chunk.pool"), "{e}");
        let e = err("[chunk]\npool = \"65GB\"");
        assert!(e.contains("chunk.pool"), "{e}");
    }

    #[test]
    fn sink_queue_is_bounded_in_bytes_and_in_chunks() {
        let sink = |extra: &str| {
            Config::parse(
                &format!("[[sink]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n{extra}"),
                "t",
            )
            .map(|c| c.sinks[0].clone())
        };
        // The defaults, in code and in the embedded file.
        let s = sink("").unwrap();
        assert_eq!(s.queue_max_size, 64 << 20);
        assert_eq!(s.queue_max_batches, 4096);
        let d = &Config::default_config().sinks[0];
        assert_eq!(d.queue_max_size, 64 << 20);
        assert_eq!(d.queue_max_batches, 4096);
        let s = sink("queue_max_size = \"8MB\"\nqueue_max_batches = 16").unwrap();
        assert_eq!((s.queue_max_size, s.queue_max_batches), (8 << 20, 16));
        // A queue that cannot hold one full body is a configuration error.
        let e = sink("batch_max_size = \"4MB\"\nqueue_max_size = \"2MB\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sink[0].queue_max_size"), "{e}");
        assert!(e.contains("batch_max_size"), "{e}");
        for bad in ["\"lots\"", "\"65GB\"", "\"512\""] {
            let e = sink(&format!("queue_max_size = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("queue_max_size"), "{bad}: {e}");
        }
    }

    #[test]
    fn pin_defaults_to_true_and_is_a_bool() {
        assert!(Config::parse("", "t").unwrap().listen.pin);
        assert!(
            !Config::parse("[listen]\npin = false", "t")
                .unwrap()
                .listen
                .pin
        );
        let e = err("[listen]\npin = \"no\"");
        assert!(e.contains("pin"), "{e}");
    }

    #[test]
    fn empty_file_uses_defaults() {
        let c = Config::parse("", "t").unwrap();
        assert!(c.sinks.is_empty());
        assert_eq!(c.listen.io_uring, IoUringMode::Auto);
        assert_eq!(c.admin_listen, "127.0.0.1:9331".parse().unwrap());
    }

    #[test]
    fn spout_style_rules() {
        let c = Config::parse(
            r#"
            [[rule]]
            type = "basic"
            match = "cpu"
            subject = "cpu-out"
            [[rule]]
            type = "tags"
            tags = [["dc", "nyc"], ["host", "db01"]]
            route = "nyc"
            [[rule]]
            type = "negregex"
            match = "^mem"
            route = "notmem"
            [[sink]]
            name = "a"
            url = "http://127.0.0.1:1/write"
            routes = ["cpu-out", "junk"]
            "#,
            "t",
        )
        .unwrap();
        assert_eq!(c.rules[0].route, "cpu-out");
        assert_eq!(
            c.rules[1].kind,
            RuleKind::Tags(vec![
                ("dc".into(), "nyc".into()),
                ("host".into(), "db01".into())
            ])
        );
        assert_eq!(c.route_names(), vec!["cpu-out", "nyc", "notmem", "junk"]);
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("bogus = 1").contains("unknown field `bogus`"));
        assert!(err("[listen]\nudp = [\"nope\"]").contains("listen.udp[0]"));
        assert!(err("[listen]\nio_uring = \"maybe\"").contains("listen.io_uring"));
        assert!(err("[sanity]\nmax_time_delta = \"0s\"").contains("greater than zero"));
        assert!(err("[sanity]\nmax_time_delta = \"10\"").contains("missing unit"));
        assert!(
            err("[[rule]]\ntype = \"regex\"\nmatch = \"(\"\nroute = \"r\"").contains("bad regex")
        );
        assert!(
            err("[[rule]]\ntype = \"glob\"\nmatch = \"x\"\nroute = \"r\"").contains("rule[0].type")
        );
        assert!(
            err("[[rule]]\ntype = \"tags\"\ntags = [[\"a\"]]\nroute = \"r\"")
                .contains("rule[0].tags[0]")
        );
        assert!(err("[[rule]]\ntype = \"basic\"\nmatch = \"x\"").contains("rule[0].route"));
        assert!(err("[[sink]]\nname = \"a\"\nurl = \"https://x/\"").contains("only http://"));
        assert!(
            err("[[sink]]\nname = \"a\"\nurl = \"http://x/\"\nroutes = [\"nope\"]")
                .contains("produced by no rule")
        );
        assert!(
            err("[[sink]]\nname = \"a\"\nurl = \"http://x/\"\nbatch_max_size = \"1ZB\"")
                .contains("sink[0].batch_max_size")
        );
        assert!(err("[[sink]]\nname = \"a\"\nurl = \"http://x/\"\n[[sink]]\nname = \"a\"\nurl = \"http://y/\"").contains("used by another sink"));
        assert!(
            err("[[sink]]\nname = \"a\"\nurl = \"http://x/\"\ngzip = 12").contains("sink[0].gzip")
        );
    }

    #[test]
    fn separate_past_and_future() {
        let c = Config::parse(
            "[sanity]\nmax_time_delta = \"5m\"\nmax_time_future = \"30s\"",
            "t",
        )
        .unwrap();
        assert_eq!(c.sanity.max_time_past, Duration::from_secs(300));
        assert_eq!(c.sanity.max_time_future, Duration::from_secs(30));
    }
}
