//! HTTP delivery: one keep-alive connection per connection thread, retries with backoff.
//!
//! A connection thread sends one body at a time and retries it in place, so a
//! failing backend keeps its threads busy, nobody collects, the queue fills
//! and the shards count `queue_full` for this sink only.
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{StatusCode, Uri};
use socket2::{Domain, Protocol, Socket, Type};

use super::body::Payload;
use super::wire::{self, WireError};
use super::{Signal, SinkStats};
use crate::config::SinkConfig;

/// Largest response body read (to keep the connection reusable and to log errors).
const RESPONSE_BODY_MAX: usize = 64 * 1024;
/// Bytes of an error response quoted in the log.
const RESPONSE_QUOTE_MAX: usize = 200;
/// At most one failure log line per sink per this interval; the rest are counted.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Where a sink writes: parsed once at start.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// Host name or IP literal, without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Set when `host` is an IP literal: connect without a DNS lookup.
    pub(crate) ip: Option<IpAddr>,
    pub(crate) path_and_query: PathAndQuery,
    /// Headers sent with every request: Host, Content-Type, User-Agent, Authorization.
    pub(crate) headers: HeaderMap,
}

/// Parse `http://host[:port][/path][?query]`. Only plain http; no credentials in the URL
/// (secrets come from the environment, never from the config file).
pub(crate) fn parse_url(url: &str) -> anyhow::Result<Endpoint> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("bad sink url {url:?}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("sink url {url:?}: scheme {other:?} is not supported (only http)"),
        None => bail!("sink url {url:?}: no scheme (expected http://host:port/path)"),
    }
    let Some(authority) = uri.authority() else {
        bail!("sink url {url:?}: no host");
    };
    if authority.as_str().contains('@') {
        bail!("sink url {url:?}: credentials in the url are not allowed; use the environment");
    }
    let bracketed = authority.host();
    let host = bracketed
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(bracketed);
    if host.is_empty() {
        bail!("sink url {url:?}: empty host");
    }
    // No userinfo (refused above), so the authority is the host and maybe `:port`.
    let port = match authority.as_str()[bracketed.len()..].strip_prefix(':') {
        None => 80,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => bail!("sink url {url:?}: bad port {text:?}"),
        },
    };
    let ip = host.parse::<IpAddr>().ok();
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::HOST,
        HeaderValue::from_str(authority.as_str()).context("sink url host")?,
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        ip,
        path_and_query,
        headers,
    })
}

/// Prefix of a sink's auth environment variables: `SLUICE_SINK_<NAME>_`, NAME upper-cased
/// with every non-alphanumeric replaced by `_`.
pub(crate) fn env_prefix(sink_name: &str) -> String {
    let name: String = sink_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SLUICE_SINK_{name}_")
}

/// The Authorization header from `SLUICE_SINK_<NAME>_USER` + `_PASSWORD` (Basic) or
/// `SLUICE_SINK_<NAME>_TOKEN` (`Token <t>`, InfluxDB 2). Neither: no header.
pub(crate) fn auth_from_env(sink_name: &str) -> anyhow::Result<Option<HeaderValue>> {
    let prefix = env_prefix(sink_name);
    let var = |suffix: &str| -> anyhow::Result<Option<String>> {
        let key = format!("{prefix}{suffix}");
        match std::env::var(&key) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{key} is not valid UTF-8"),
        }
    };
    let (user, password, token) = (var("USER")?, var("PASSWORD")?, var("TOKEN")?);
    let text = match (user, password, token) {
        (None, None, None) => return Ok(None),
        (Some(user), Some(password), None) => {
            format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
        }
        (None, None, Some(token)) => format!("Token {token}"),
        (Some(_), None, _) | (None, Some(_), _) => {
            bail!("sink {sink_name:?}: set both {prefix}USER and {prefix}PASSWORD, or neither")
        }
        (Some(_), Some(_), Some(_)) => {
            bail!("sink {sink_name:?}: set {prefix}TOKEN or {prefix}USER/PASSWORD, not both")
        }
    };
    let mut value = HeaderValue::from_str(&text)
        .with_context(|| format!("sink {sink_name:?}: credentials are not a valid header"))?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// Standard base64 with padding (RFC 4648), for Basic auth.
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Retry delay before retry number `step` (0-based): full jitter over
/// `min(max, initial * 2^step)`.
pub(crate) fn backoff(initial: Duration, max: Duration, step: u32) -> Duration {
    let cap = initial.saturating_mul(1u32 << step.min(31)).min(max);
    let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=cap_ns))
}

/// Failure logging that stays quiet under a flood: one line per `WARN_INTERVAL`,
/// saying how many were suppressed in between.
#[derive(Debug, Default)]
pub(crate) struct WarnLimiter {
    state: Mutex<WarnState>,
}

#[derive(Debug, Default)]
struct WarnState {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    pub(crate) fn warn(&self, sink: &str, message: std::fmt::Arguments<'_>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if state.last.is_some_and(|last| now < last + WARN_INTERVAL) {
            state.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut state.suppressed);
        state.last = Some(now);
        drop(state);
        tracing::warn!(sink, suppressed, "{message}");
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Outcome {
    /// 2xx.
    Delivered,
    /// A status that retrying will not fix (4xx other than 429, 1xx/3xx).
    Rejected { status: StatusCode, quote: String },
    /// Connection error, timeout, 5xx or 429.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
        /// A reused keep-alive connection turned out closed (the keep-alive race):
        /// retry at once on a fresh connection.
        stale: bool,
    },
}

/// Everything a sink's connection threads share.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) stats: Arc<SinkStats>,
    pub(crate) signal: Arc<Signal>,
    pub(crate) warn: WarnLimiter,
    pub(crate) timeout: Duration,
    pub(crate) retry_max_age: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    /// The request line and fixed headers, ready to send; each request adds
    /// its `Content-Length` (and `Content-Encoding`) and the blank line.
    head: Vec<u8>,
    /// A handle on each connection thread's socket (a second descriptor of the
    /// same socket, registered before it connects), so that an abort ends
    /// blocked calls, a hanging connect included, at the shutdown deadline.
    sockets: Mutex<Vec<Option<Socket>>>,
}

impl Shared {
    pub(crate) fn new(
        cfg: &SinkConfig,
        endpoint: Endpoint,
        stats: Arc<SinkStats>,
        signal: Arc<Signal>,
    ) -> Self {
        let mut head = format!("POST {} HTTP/1.1\r\n", endpoint.path_and_query).into_bytes();
        for (name, value) in &endpoint.headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        Shared {
            name: cfg.name.clone(),
            endpoint,
            stats,
            signal,
            warn: WarnLimiter::default(),
            timeout: cfg.timeout,
            retry_max_age: cfg.retry_max_age,
            backoff_initial: cfg.retry_backoff_initial,
            backoff_max: cfg.retry_backoff_max,
            head,
            sockets: Mutex::new((0..cfg.connections).map(|_| None).collect()),
        }
    }

    /// Shut down every connection's socket: a thread blocked on one returns at once.
    pub(crate) fn abort_connections(&self) {
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        for socket in sockets.iter().flatten() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    fn register(&self, id: usize, socket: Option<Socket>) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets[id] = socket;
    }
}

/// A keep-alive connection and its response buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A connection thread's client: its connection, if it has one.
pub(crate) struct Requester {
    shared: Arc<Shared>,
    /// This thread's slot in `Shared::sockets`.
    id: usize,
    conn: Option<Conn>,
    /// The request head being built (reused).
    head: Vec<u8>,
}

impl Requester {
    pub(crate) fn new(shared: Arc<Shared>, id: usize) -> Self {
        Requester {
            shared,
            id,
            conn: None,
            head: Vec::new(),
        }
    }

    /// Deliver `payload`, retrying until it is delivered, rejected, too old or
    /// the writer is aborted. Every outcome settles the payload's lines out of
    /// `lines_in_flight`.
    pub(crate) fn deliver(&mut self, payload: Payload) {
        let shared = Arc::clone(&self.shared);
        let stats = &shared.stats;
        let expiry = super::later(payload.created, shared.retry_max_age);
        let mut step = 0u32;
        let mut attempts = 0u32;
        loop {
            if shared.signal.aborted() {
                self.drop_conn();
                settle_shutdown(&shared.signal, stats, &payload);
                return;
            }
            if attempts > 0 {
                stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            attempts += 1;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let (reason, retry_after) = match self.attempt(&payload) {
                Outcome::Delivered => {
                    stats
                        .lines_delivered
                        .fetch_add(payload.lines, Ordering::Relaxed);
                    stats
                        .bytes_delivered
                        .fetch_add(payload.raw_bytes, Ordering::Relaxed);
                    settle(stats, &payload);
                    return;
                }
                Outcome::Rejected { status, quote } => {
                    stats.request_failures.fetch_add(1, Ordering::Relaxed);
                    stats
                        .lines_rejected
                        .fetch_add(payload.lines, Ordering::Relaxed);
                    settle(stats, &payload);
                    shared.warn.warn(
                        &shared.name,
                        format_args!(
                            "backend rejected a body of {} lines with {status}, dropped: {quote}",
                            payload.lines
                        ),
                    );
                    return;
                }
                Outcome::Retry {
                    reason,
                    retry_after,
                    stale,
                } => {
                    stats.request_failures.fetch_add(1, Ordering::Relaxed);
                    if stale {
                        // The keep-alive race: the backend closed an idle connection
                        // as we reused it. Not the backend's fault; go again now.
                        continue;
                    }
                    (reason, retry_after)
                }
            };
            if shared.signal.aborted() {
                continue;
            }
            let delay = retry_after
                .unwrap_or_else(|| backoff(shared.backoff_initial, shared.backoff_max, step));
            step = step.saturating_add(1);
            if super::later(Instant::now(), delay) > expiry {
                stats
                    .lines_gave_up
                    .fetch_add(payload.lines, Ordering::Relaxed);
                settle(stats, &payload);
                shared.warn.warn(
                    &shared.name,
                    format_args!(
                        "gave up on a body of {} lines after {attempts} attempts \
                         (retry_max_age {:?}): {reason}",
                        payload.lines, shared.retry_max_age
                    ),
                );
                return;
            }
            shared.warn.warn(
                &shared.name,
                format_args!("request failed, retrying in {delay:?}: {reason}"),
            );
            // Returns early when the writer is aborted; the loop's top settles.
            shared.signal.sleep(delay);
        }
    }

    fn drop_conn(&mut self) {
        if self.conn.take().is_some() {
            self.shared.register(self.id, None);
        }
    }

    /// One request: (re)connect if needed, send, read the answer, all within `timeout`.
    fn attempt(&mut self, payload: &Payload) -> Outcome {
        let shared = Arc::clone(&self.shared);
        let deadline = super::later(Instant::now(), shared.timeout);
        if self
            .conn
            .as_ref()
            .is_some_and(|c| !wire::idle_and_open(&c.stream))
        {
            self.drop_conn();
        }
        let reused = self.conn.is_some();
        if !reused {
            match connect(&shared, self.id, deadline) {
                Ok(stream) => {
                    self.conn = Some(Conn {
                        stream,
                        buf: Vec::new(),
                    });
                }
                Err(reason) => {
                    return Outcome::Retry {
                        reason,
                        retry_after: None,
                        stale: false,
                    }
                }
            }
        }
        let conn = self.conn.as_mut().expect("connected above");
        self.head.clear();
        self.head.extend_from_slice(&shared.head);
        self.head.extend_from_slice(b"Content-Length: ");
        self.head
            .extend_from_slice(itoa::Buffer::new().format(payload.wire_bytes).as_bytes());
        if payload.gzip {
            self.head.extend_from_slice(b"\r\nContent-Encoding: gzip");
        }
        self.head.extend_from_slice(b"\r\n\r\n");
        let answer = wire::exchange(
            &mut conn.stream,
            &mut conn.buf,
            &self.head,
            payload.parts(),
            deadline,
            RESPONSE_BODY_MAX,
        );
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                self.drop_conn();
                let reason = match error {
                    WireError::TimedOut => format!("timed out after {:?}", shared.timeout),
                    ref other => format!("request failed: {other}"),
                };
                return Outcome::Retry {
                    reason,
                    retry_after: None,
                    stale: reused && error.before_any_answer(),
                };
            }
        };
        if !response.keep_alive {
            self.drop_conn();
        }
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let quote = quote(&response.body);
        if status.is_success() {
            Outcome::Delivered
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = if status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE
            {
                response.retry_after
            } else {
                None
            };
            Outcome::Retry {
                reason: format!("backend answered {status}: {quote}"),
                retry_after,
                stale: false,
            }
        } else {
            Outcome::Rejected { status, quote }
        }
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        // Also closes the registered second descriptor, so the socket closes now.
        self.drop_conn();
    }
}

fn settle(stats: &SinkStats, payload: &Payload) {
    stats
        .lines_in_flight
        .fetch_sub(payload.lines, Ordering::Relaxed);
}

/// The writer was aborted (shutdown deadline, or dropped) with `payload` undelivered.
fn settle_shutdown(signal: &Signal, stats: &SinkStats, payload: &Payload) {
    signal.account_abort(|| {
        stats
            .lines_shutdown
            .fetch_add(payload.lines, Ordering::Relaxed);
        settle(stats, payload);
    });
}

/// Connect before `deadline`: an IP literal directly, a name through the
/// resolver (every address it gives, in order). Each socket is registered in
/// slot `id` before it connects, so an abort ends a connect that hangs.
fn connect(shared: &Shared, id: usize, deadline: Instant) -> Result<TcpStream, String> {
    let endpoint = &shared.endpoint;
    let target = || format!("{}:{}", endpoint.host, endpoint.port);
    let addrs: Vec<SocketAddr> = match endpoint.ip {
        Some(ip) => vec![SocketAddr::new(ip, endpoint.port)],
        None => (endpoint.host.as_str(), endpoint.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolve {}: {e}", target()))?
            .collect(),
    };
    let mut last = format!("resolve {}: no address", target());
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("connect to {}: timed out", target()));
        }
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| format!("socket for {}: {e}", target()))?;
        shared.register(id, socket.try_clone().ok());
        // An abort that came before the registration did not see this socket.
        if shared.signal.aborted() {
            shared.register(id, None);
            return Err("aborted".to_owned());
        }
        match socket.connect_timeout(&addr.into(), left) {
            Ok(()) => {
                // Bodies are written whole; do not let Nagle hold back the tail.
                let _ = socket.set_nodelay(true);
                return Ok(socket.into());
            }
            Err(e) => {
                shared.register(id, None);
                last = format!("connect to {}: {e}", target());
            }
        }
    }
    Err(last)
}

fn quote(body: &[u8]) -> String {
    let end = body.len().min(RESPONSE_QUOTE_MAX);
    String::from_utf8_lossy(&body[..end]).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pa ss", "dXNlcjpwYSBzcw=="),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn urls() {
        let e = parse_url("http://127.0.0.1:8086/write?db=metrics").unwrap();
        assert_eq!(e.host, "127.0.0.1");
        assert_eq!(e.port, 8086);
        assert!(e.ip.is_some());
        assert_eq!(e.path_and_query.as_str(), "/write?db=metrics");
        assert_eq!(e.headers[header::HOST], "127.0.0.1:8086");

        let e = parse_url("http://[::1]:9/api/v2/write?org=o&bucket=b").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.ip, Some("::1".parse().unwrap()));
        assert_eq!(e.headers[header::HOST], "[::1]:9");

        let e = parse_url("http://influxdb").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.ip), ("influxdb", 80, None));
        assert_eq!(e.path_and_query.as_str(), "/");

        for bad in [
            "https://127.0.0.1/write",
            "ftp://127.0.0.1/",
            "127.0.0.1:8086/write",
            "/write",
            "http://user:secret@127.0.0.1/write",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "not a url",
            "",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(env_prefix("influx-a.b"), "SLUICE_SINK_INFLUX_A_B_");
        assert_eq!(env_prefix("Kapacitor2"), "SLUICE_SINK_KAPACITOR2_");
    }

    #[test]
    fn backoff_is_bounded_and_doubles() {
        let initial = Duration::from_millis(10);
        let max = Duration::from_millis(100);
        for step in 0..40 {
            let cap = (initial * 2u32.pow(step.min(10))).min(max);
            for _ in 0..20 {
                assert!(backoff(initial, max, step) <= cap);
            }
        }
    }
}
