//! Sink tests against real HTTP servers on loopback (127.0.0.1, or ::1 when present).
use std::collections::VecDeque;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What the test server does with one request.
#[derive(Clone, Debug)]
enum Action {
    /// Answer with this status and extra headers.
    Status(u16, Vec<(&'static str, String)>),
    /// Never answer.
    Hang,
    /// Drop the connection without answering.
    Close,
    /// Answer 204 after this long.
    Slow(Duration),
}

fn ok() -> Action {
    Action::Status(204, Vec::new())
}

/// 204, a moment later: for tests that check `ShutdownReport`, which counts
/// only what is delivered after `shutdown` is called. With instant answers a
/// body that fills (or ages) at once could be delivered before that.
fn held() -> Action {
    Action::Slow(Duration::from_millis(100))
}

#[derive(Debug)]
struct Recorded {
    at: Instant,
    conn: usize,
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct State {
    /// Actions for the next requests, in order; then `default`.
    script: VecDeque<Action>,
    default: Action,
    /// Close each connection right after answering, without saying so.
    close_after_answer: bool,
    requests: Vec<Recorded>,
    connections: usize,
}

/// A tiny HTTP/1.1 server on its own thread and runtime.
struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn start(bind: &str, script: Vec<Action>, default: Action) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            default,
            close_after_answer: false,
            requests: Vec::new(),
            connections: 0,
        }));
        let server_state = Arc::clone(&state);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let conn = {
                        let mut state = server_state.lock().unwrap();
                        state.connections += 1;
                        state.connections
                    };
                    tokio::spawn(serve(stream, conn, Arc::clone(&server_state)));
                }
            });
        });
        Ok(Server { addr, state })
    }

    fn local(script: Vec<Action>, default: Action) -> Server {
        Server::start("127.0.0.1:0", script, default).unwrap()
    }

    fn url(&self) -> String {
        format!("http://{}/write?db=test", self.addr)
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap())
    }
}

async fn serve(mut stream: TcpStream, conn: usize, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("the sink always sends Content-Length");
        while buf.len() < head_end + length {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let (action, close_after_answer) = {
            let mut state = state.lock().unwrap();
            state.requests.push(Recorded {
                at: Instant::now(),
                conn,
                request_line,
                headers,
                body,
            });
            let action = state.script.pop_front();
            (
                action.unwrap_or_else(|| state.default.clone()),
                state.close_after_answer,
            )
        };
        let action = match action {
            Action::Slow(delay) => {
                tokio::time::sleep(delay).await;
                ok()
            }
            action => action,
        };
        match action {
            Action::Status(status, extra) => {
                let mut answer = format!("HTTP/1.1 {status} Whatever\r\n");
                if status != 204 {
                    answer.push_str("content-length: 4\r\n");
                }
                for (name, value) in extra {
                    answer.push_str(&format!("{name}: {value}\r\n"));
                }
                answer.push_str("\r\n");
                if status != 204 {
                    answer.push_str("oops");
                }
                if stream.write_all(answer.as_bytes()).await.is_err() || close_after_answer {
                    return;
                }
            }
            Action::Hang => std::future::pending::<()>().await,
            Action::Close => return,
            Action::Slow(_) => unreachable!("answered as a 204 above"),
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 64 * 1024];
    match stream.read(&mut tmp).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

fn config(name: &str, url: String) -> SinkConfig {
    SinkConfig {
        name: name.to_owned(),
        url,
        routes: vec!["*".to_owned()],
        batch_max_size: 64 * 1024,
        batch_max_age: Duration::from_millis(20),
        queue_max_batches: 64,
        queue_max_size: 64 << 20,
        connections: 1,
        timeout: Duration::from_secs(2),
        gzip: 0,
        retry_max_age: Duration::from_secs(5),
        retry_backoff_initial: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(100),
        nice: 5,
    }
}

/// A chunk of `lines` lines, each `width` bytes long including the newline.
fn chunk(tag: usize, lines: u32, width: usize) -> Chunk {
    let mut data = Vec::new();
    for i in 0..lines {
        let head = format!("m,chunk={tag} v={i}i ");
        let pad = width.saturating_sub(head.len() + 1);
        data.extend_from_slice(head.as_bytes());
        data.extend(std::iter::repeat_n(b'0', pad));
        data.push(b'\n');
    }
    Chunk {
        data: Bytes::from(data),
        lines,
    }
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A write URL on a loopback port nobody listens on: bound, its port
/// learnt, closed. Connections are refused.
fn refused_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/write")
}

/// A sink whose backend refuses every connection (`refused_url`), with
/// small bodies and quick retries that go on for `retry_max_age`.
fn dead_backend_config(name: &str, retry_max_age: Duration) -> SinkConfig {
    let mut cfg = config(name, refused_url());
    cfg.batch_max_size = 100;
    cfg.retry_max_age = retry_max_age;
    cfg.retry_backoff_initial = Duration::from_millis(10);
    cfg.retry_backoff_max = Duration::from_millis(50);
    cfg
}

fn soon(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

#[test]
fn delivers_in_order_coalesced_on_one_connection() {
    let server = Server::local(Vec::new(), held());
    let mut cfg = config("coalesce", server.url());
    cfg.batch_max_size = 1000;
    cfg.batch_max_age = Duration::from_millis(50);
    let (sink, writer) = start(&cfg).unwrap();

    let mut chunks: Vec<Chunk> = (0..40).map(|i| chunk(i, 2, 50)).collect();
    // One chunk bigger than the limit: it must travel alone, whole.
    chunks.insert(20, chunk(999, 30, 50));
    let mut expected = Vec::new();
    let mut lines = 0;
    for c in &chunks {
        expected.extend_from_slice(&c.data);
        lines += u64::from(c.lines);
        sink.offer(c.clone()).unwrap();
    }
    let report = writer.shutdown(soon(5));
    assert_eq!(report.lines_delivered, lines);
    assert_eq!(report.lines_undelivered, 0);

    let stats = &sink.stats;
    assert_eq!(load(&stats.lines_delivered), lines);
    assert_eq!(load(&stats.bytes_delivered), expected.len() as u64);
    assert_eq!(load(&stats.lines_in_flight), 0);
    assert_eq!(load(&stats.request_failures), 0);
    server.with(|state| {
        assert_eq!(state.connections, 1, "one keep-alive connection");
        assert!(state.requests.iter().all(|r| r.conn == 1));
        let bodies: Vec<&[u8]> = state.requests.iter().map(|r| &r.body[..]).collect();
        assert_eq!(bodies.concat(), expected, "byte-identical and in order");
        assert!(bodies.len() <= 6, "coalesced: {} bodies", bodies.len());
        assert_eq!(load(&stats.requests), bodies.len() as u64);
        for body in &bodies {
            assert!(body.len() <= 1000 || *body == &chunks[20].data[..]);
        }
        let first = &state.requests[0];
        assert_eq!(first.request_line, "POST /write?db=test HTTP/1.1");
        assert_eq!(first.header("host"), Some(&*server.addr.to_string()));
        assert_eq!(
            first.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(first.header("content-encoding"), None);
        assert_eq!(first.header("authorization"), None);
        assert_eq!(first.header("transfer-encoding"), None);
    });
}

#[test]
fn max_age_flushes_a_lone_chunk() {
    let server = Server::local(Vec::new(), ok());
    let mut cfg = config("max-age", server.url());
    cfg.batch_max_age = Duration::from_millis(150);
    let (sink, writer) = start(&cfg).unwrap();
    let offered = Instant::now();
    sink.offer(chunk(1, 1, 30)).unwrap();
    assert!(wait_for(Duration::from_secs(3), || server.requests() == 1));
    let waited = server.with(|s| s.requests[0].at - offered);
    assert!(
        waited >= Duration::from_millis(140),
        "sent after {waited:?}"
    );
    assert!(wait_for(Duration::from_secs(1), || load(
        &sink.stats.lines_delivered
    ) == 1));
    assert_eq!(load(&sink.stats.lines_in_flight), 0);
    writer.shutdown(soon(2));
}

#[test]
fn chunks_that_do_not_fill_a_body_join_it_when_it_ages() {
    // Chunks below the body size do not wake the collector; at
    // `batch_max_age` it must still take every chunk already queued.
    let server = Server::local(Vec::new(), ok());
    let mut cfg = config("trickle", server.url());
    cfg.batch_max_size = 1 << 20;
    cfg.batch_max_age = Duration::from_millis(300);
    let (sink, writer) = start(&cfg).unwrap();
    let mut expected = Vec::new();
    for i in 0..5 {
        let c = chunk(i, 1, 40);
        expected.extend_from_slice(&c.data);
        sink.offer(c).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(wait_for(Duration::from_secs(3), || load(
        &sink.stats.lines_delivered
    ) == 5));
    server.with(|state| {
        assert_eq!(state.requests.len(), 1, "one body for all five chunks");
        assert_eq!(state.requests[0].body, expected);
    });
    writer.shutdown(soon(2));
}

#[test]
fn a_nearly_full_body_goes_without_waiting_for_the_next_chunk() {
    // A shard seals a chunk when the next datagram would not fit, so one
    // chunk is a body a little under `batch_max_size`. It must go at once,
    // not wait for a chunk that could not join it, nor for its age.
    let server = Server::local(Vec::new(), ok());
    let mut cfg = config("nearly", server.url());
    cfg.batch_max_size = 1024;
    cfg.batch_max_age = Duration::from_secs(30);
    let (sink, writer) = start(&cfg).unwrap();
    // 12 lines of 80 bytes: 960 bytes, within a sixteenth of 1024.
    let c = chunk(0, 12, 80);
    assert_eq!(c.data.len(), 960);
    let began = Instant::now();
    sink.offer(c.clone()).unwrap();
    assert!(
        wait_for(Duration::from_secs(3), || server.requests() == 1),
        "the body waited"
    );
    assert!(began.elapsed() < Duration::from_secs(3));
    server.with(|state| assert_eq!(state.requests[0].body, c.data.to_vec()));
    // A body further from full still waits for more (or for its age).
    sink.offer(chunk(1, 11, 80)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.requests(), 1, "880 of 1024 is not full");
    writer.shutdown(soon(2));
}

#[test]
fn many_small_chunks_never_fill_the_queue_while_the_body_waits() {
    // Small chunks (as `chunk.max_age` seals them at low rates) far below the
    // body size: the collector must still take them before the queue, which
    // counts chunks, fills and offers start failing.
    let server = Server::local(Vec::new(), ok());
    let mut cfg = config("small", server.url());
    cfg.queue_max_batches = 8;
    cfg.batch_max_size = 1 << 20;
    cfg.batch_max_age = Duration::from_millis(500);
    let (sink, writer) = start(&cfg).unwrap();
    let mut expected = Vec::new();
    for i in 0..100 {
        let c = chunk(i, 1, 30);
        expected.extend_from_slice(&c.data);
        let mut pending = c;
        // A moment for the collector to run, as between a shard's polls.
        let started = Instant::now();
        loop {
            match sink.offer(pending) {
                Ok(()) => break,
                Err(back) => {
                    assert!(
                        started.elapsed() < Duration::from_millis(200),
                        "queue stayed full: the collector was not woken"
                    );
                    pending = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    assert!(wait_for(Duration::from_secs(5), || load(
        &sink.stats.lines_delivered
    ) == 100));
    server.with(|state| {
        let bodies: Vec<&[u8]> = state.requests.iter().map(|r| &r.body[..]).collect();
        assert_eq!(bodies.concat(), expected);
        assert!(bodies.len() <= 3, "coalesced: {} bodies", bodies.len());
    });
    writer.shutdown(soon(2));
}

#[test]
fn a_queue_that_fills_the_body_wakes_the_collector_before_max_age() {
    let server = Server::local(Vec::new(), ok());
    let mut cfg = config("fills", server.url());
    cfg.batch_max_size = 1000;
    cfg.batch_max_age = Duration::from_secs(60);
    let (sink, writer) = start(&cfg).unwrap();
    let offered = Instant::now();
    // The first chunk starts a body; the collector then sleeps until the
    // queue holds what fills it.
    sink.offer(chunk(0, 2, 50)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    for i in 1..10 {
        sink.offer(chunk(i, 2, 50)).unwrap();
    }
    assert!(wait_for(Duration::from_secs(5), || server.requests() >= 1));
    assert!(
        offered.elapsed() < Duration::from_secs(10),
        "sent before max age"
    );
    server.with(|state| assert_eq!(state.requests[0].body.len(), 1000));
    writer.shutdown(soon(2));
}

#[test]
fn server_errors_are_retried_then_delivered() {
    let fail = Action::Status(500, Vec::new());
    let server = Server::local(vec![fail.clone(), fail], ok());
    let (sink, writer) = start(&config("retry-500", server.url())).unwrap();
    let c = chunk(1, 3, 40);
    sink.offer(c.clone()).unwrap();
    assert!(wait_for(Duration::from_secs(3), || load(
        &sink.stats.lines_delivered
    ) == 3));
    let stats = &sink.stats;
    assert_eq!(load(&stats.requests), 3);
    assert_eq!(load(&stats.request_failures), 2);
    assert_eq!(load(&stats.retries), 2);
    assert_eq!(load(&stats.lines_in_flight), 0);
    server.with(|s| assert!(s.requests.iter().all(|r| r.body == c.data)));
    writer.shutdown(soon(2));
}

#[test]
fn too_many_requests_honours_retry_after() {
    let busy = Action::Status(429, vec![("retry-after", "1".to_owned())]);
    let server = Server::local(vec![busy], ok());
    let (sink, writer) = start(&config("retry-after", server.url())).unwrap();
    sink.offer(chunk(1, 2, 40)).unwrap();
    assert!(wait_for(Duration::from_secs(4), || load(
        &sink.stats.lines_delivered
    ) == 2));
    let gap = server.with(|s| s.requests[1].at - s.requests[0].at);
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(load(&sink.stats.retries), 1);
    writer.shutdown(soon(2));
}

#[test]
fn client_errors_are_rejected_not_retried() {
    let server = Server::local(vec![Action::Status(400, Vec::new())], ok());
    let (sink, writer) = start(&config("reject-400", server.url())).unwrap();
    sink.offer(chunk(1, 5, 40)).unwrap();
    assert!(wait_for(Duration::from_secs(3), || load(
        &sink.stats.lines_rejected
    ) == 5));
    let report = writer.shutdown(soon(2));
    let stats = &sink.stats;
    assert_eq!(load(&stats.requests), 1);
    assert_eq!(load(&stats.retries), 0);
    assert_eq!(load(&stats.request_failures), 1);
    assert_eq!(load(&stats.lines_delivered), 0);
    assert_eq!(load(&stats.lines_in_flight), 0);
    assert_eq!(report.lines_undelivered, 0);
    assert_eq!(server.requests(), 1);
}

#[test]
fn abrupt_closes_are_retried() {
    let server = Server::local(vec![Action::Close, Action::Close], ok());
    let (sink, writer) = start(&config("abrupt-close", server.url())).unwrap();
    sink.offer(chunk(1, 2, 40)).unwrap();
    assert!(wait_for(Duration::from_secs(3), || load(
        &sink.stats.lines_delivered
    ) == 2));
    assert_eq!(load(&sink.stats.request_failures), 2);
    assert_eq!(server.with(|s| s.connections), 3);
    writer.shutdown(soon(2));
}

#[test]
fn keep_alive_race_retries_at_once_on_a_fresh_connection() {
    // The second request arrives on the reused connection and the server drops
    // it unanswered, as a backend closing an idle connection at that moment would.
    let server = Server::local(vec![ok(), Action::Close], ok());
    let mut cfg = config("keepalive-race", server.url());
    // A backoff step would show: the test waits far less than this.
    cfg.retry_backoff_initial = Duration::from_secs(10);
    cfg.retry_backoff_max = Duration::from_secs(10);
    cfg.retry_max_age = Duration::from_secs(60);
    cfg.batch_max_age = Duration::from_millis(1);
    let (sink, writer) = start(&cfg).unwrap();
    sink.offer(chunk(0, 1, 30)).unwrap();
    assert!(wait_for(Duration::from_secs(2), || load(
        &sink.stats.lines_delivered
    ) == 1));
    sink.offer(chunk(1, 1, 30)).unwrap();
    assert!(wait_for(Duration::from_secs(2), || load(
        &sink.stats.lines_delivered
    ) == 2));
    let stats = &sink.stats;
    assert_eq!(load(&stats.request_failures), 1);
    assert_eq!(load(&stats.retries), 1);
    assert_eq!(load(&stats.requests), 3);
    server.with(|s| {
        let conns: Vec<usize> = s.requests.iter().map(|r| r.conn).collect();
        assert_eq!(conns, [1, 1, 2]);
    });
    writer.shutdown(soon(2));
}

#[test]
fn connections_closed_after_each_answer_are_replaced() {
    let server = Server::local(Vec::new(), ok());
    server.state.lock().unwrap().close_after_answer = true;
    let mut cfg = config("closing-backend", server.url());
    cfg.retry_backoff_initial = Duration::from_secs(10);
    cfg.retry_backoff_max = Duration::from_secs(10);
    cfg.retry_max_age = Duration::from_secs(60);
    cfg.batch_max_age = Duration::from_millis(1);
    let (sink, writer) = start(&cfg).unwrap();
    for i in 0..5 {
        sink.offer(chunk(i, 1, 30)).unwrap();
        let want = u64::from(i as u32) + 1;
        assert!(
            wait_for(Duration::from_secs(2), || load(&sink.stats.lines_delivered)
                == want),
            "chunk {i} not delivered"
        );
        // Let the server's close reach us, or not: both paths must work.
        std::thread::sleep(Duration::from_millis(if i % 2 == 0 { 30 } else { 0 }));
    }
    server.with(|s| {
        let conns: std::collections::HashSet<usize> = s.requests.iter().map(|r| r.conn).collect();
        assert_eq!(conns.len(), 5, "the server closed every connection");
    });
    assert_eq!(load(&sink.stats.lines_delivered), 5);
    writer.shutdown(soon(2));
}

#[test]
fn dead_backend_gives_up_and_the_queue_fills_without_blocking() {
    let mut cfg = dead_backend_config("dead", Duration::from_millis(300));
    cfg.queue_max_batches = 4;
    let (sink, writer) = start(&cfg).unwrap();
    let stats = Arc::clone(&sink.stats);

    sink.offer(chunk(0, 2, 40)).unwrap();
    assert!(wait_for(Duration::from_secs(3), || load(
        &stats.lines_gave_up
    ) == 2));
    assert!(load(&stats.request_failures) >= 2);
    assert!(load(&stats.retries) >= 1);

    // Now flood it: the one request task is retrying, the collector holds one
    // body, so the queue fills and offer() refuses, at once.
    let began = Instant::now();
    let mut accepted = 2u64;
    let mut refused = 0;
    for i in 0..50 {
        match sink.offer(chunk(i, 2, 60)) {
            Ok(()) => accepted += 2,
            Err(c) => {
                assert_eq!(c.lines, 2);
                refused += 1;
            }
        }
    }
    assert!(
        began.elapsed() < Duration::from_millis(100),
        "offer blocked"
    );
    assert!(refused >= 40, "only {refused} refused");
    assert!(sink.queue_len() <= sink.queue_capacity());
    assert_eq!(sink.queue_capacity(), 4);

    let report = writer.shutdown(Instant::now() + Duration::from_millis(200));
    assert_eq!(
        load(&stats.lines_gave_up) + load(&stats.lines_shutdown),
        accepted,
        "every accepted line is accounted for"
    );
    assert_eq!(report.lines_undelivered, load(&stats.lines_shutdown));
    assert_eq!(load(&stats.lines_in_flight), 0);
    assert_eq!(sink.queue_len(), 0);
}

#[test]
fn the_queue_is_bounded_in_bytes_as_well_as_in_chunks() {
    let mut cfg = dead_backend_config("bytes", Duration::from_secs(30));
    cfg.queue_max_batches = 64;
    cfg.queue_max_size = 1000;
    let (sink, writer) = start(&cfg).unwrap();
    let stats = Arc::clone(&sink.stats);

    // A chunk larger than the whole bound still enters an empty queue.
    sink.offer(chunk(0, 1, 1500)).unwrap();
    // The only connection thread takes it and keeps retrying it: from now
    // on nobody pops.
    assert!(wait_for(Duration::from_secs(3), || load(
        &stats.request_failures
    ) >= 1));
    assert_eq!(sink.queue_len(), 0);
    assert_eq!(sink.queued_bytes(), 0);

    // 300-byte chunks: three fit in 1,000 bytes, far below the 64 chunks.
    let (mut accepted, mut refused) = (0u64, 0u64);
    for i in 1..=20 {
        match sink.offer(chunk(i, 1, 300)) {
            Ok(()) => accepted += 1,
            Err(c) => {
                assert_eq!(c.lines, 1);
                refused += 1;
            }
        }
    }
    assert_eq!((accepted, refused), (3, 17));
    assert_eq!(sink.queue_len(), 3);
    assert_eq!(sink.queued_bytes(), 900);

    let report = writer.shutdown(Instant::now() + Duration::from_millis(200));
    assert_eq!(
        load(&stats.lines_gave_up) + load(&stats.lines_shutdown),
        1 + accepted,
        "every accepted line is accounted for"
    );
    assert_eq!(report.lines_undelivered, load(&stats.lines_shutdown));
    assert_eq!(sink.queue_len(), 0);
    assert_eq!(sink.queued_bytes(), 0);
}

#[test]
fn hanging_backend_times_out_and_shutdown_keeps_its_deadline() {
    let server = Server::local(Vec::new(), Action::Hang);
    let mut cfg = config("hang", server.url());
    cfg.timeout = Duration::from_millis(150);
    cfg.retry_max_age = Duration::from_secs(30);
    let (sink, writer) = start(&cfg).unwrap();
    for i in 0..3 {
        sink.offer(chunk(i, 4, 40)).unwrap();
    }
    assert!(wait_for(Duration::from_secs(3), || load(
        &sink.stats.request_failures
    ) >= 2));
    let began = Instant::now();
    let report = writer.shutdown(began + Duration::from_millis(300));
    let took = began.elapsed();
    assert!(
        took < Duration::from_millis(300) + SHUTDOWN_SLACK,
        "took {took:?}"
    );
    assert!(
        took >= Duration::from_millis(290),
        "gave up early: {took:?}"
    );
    assert_eq!(report.lines_undelivered, 12);
    assert_eq!(report.lines_delivered, 0);
    assert_eq!(load(&sink.stats.lines_shutdown), 12);
    assert_eq!(load(&sink.stats.lines_in_flight), 0);
}

/// A listener whose accept queue is full: further connects hang (their SYNs
/// are dropped), as with a backend behind a firewall that drops packets.
/// Returns the listener and the connections that fill its queue.
fn full_listener() -> (socket2::Socket, Vec<std::net::TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    // With backlog 0 the queue holds one; connect until one would hang.
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => break,
        }
    }
    (listener, fillers)
}

#[test]
fn a_hanging_connect_is_aborted_at_the_shutdown_deadline() {
    let (listener, _fillers) = full_listener();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut cfg = config("connect-hang", format!("http://{addr}/write"));
    cfg.timeout = Duration::from_secs(30);
    cfg.retry_max_age = Duration::from_secs(60);
    let (sink, writer) = start(&cfg).unwrap();
    sink.offer(chunk(1, 5, 40)).unwrap();
    assert!(wait_for(Duration::from_secs(2), || load(
        &sink.stats.requests
    ) == 1));
    std::thread::sleep(Duration::from_millis(100));
    // Still connecting: neither failed nor delivered.
    assert_eq!(load(&sink.stats.request_failures), 0);
    let began = Instant::now();
    let report = writer.shutdown(began + Duration::from_millis(300));
    let took = began.elapsed();
    assert!(
        took < Duration::from_millis(300) + SHUTDOWN_SLACK,
        "took {took:?}"
    );
    assert_eq!(report.lines_undelivered, 5);
    assert_eq!(load(&sink.stats.lines_shutdown), 5);
    assert_eq!(load(&sink.stats.lines_in_flight), 0);
}

#[test]
fn shutdown_delivers_everything_queued_at_once() {
    let server = Server::local(Vec::new(), held());
    let mut cfg = config("drain", server.url());
    cfg.batch_max_age = Duration::from_secs(60);
    cfg.batch_max_size = 500;
    cfg.connections = 3;
    let (sink, writer) = start(&cfg).unwrap();
    let mut expected = 0;
    for i in 0..30 {
        let c = chunk(i, 3, 40);
        expected += u64::from(c.lines);
        sink.offer(c).unwrap();
    }
    let began = Instant::now();
    let report = writer.shutdown(began + Duration::from_secs(10));
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "waited for max age"
    );
    assert_eq!(report.lines_delivered, expected);
    assert_eq!(report.lines_undelivered, 0);
    assert_eq!(load(&sink.stats.lines_delivered), expected);
    assert_eq!(load(&sink.stats.lines_shutdown), 0);
    assert!(server.with(|s| s.requests.iter().all(|r| r.body.len() <= 500)));
}

#[test]
fn gzip_body_decompresses_to_the_original() {
    let server = Server::local(Vec::new(), held());
    let mut cfg = config("gzip", server.url());
    cfg.gzip = 1;
    let (sink, writer) = start(&cfg).unwrap();
    let chunks: Vec<Chunk> = (0..5).map(|i| chunk(i, 10, 60)).collect();
    let mut expected = Vec::new();
    for c in &chunks {
        expected.extend_from_slice(&c.data);
        sink.offer(c.clone()).unwrap();
    }
    let report = writer.shutdown(soon(5));
    assert_eq!(report.lines_delivered, 50);
    assert_eq!(load(&sink.stats.bytes_delivered), expected.len() as u64);
    server.with(|s| {
        let mut text = Vec::new();
        for r in &s.requests {
            assert_eq!(r.header("content-encoding"), Some("gzip"));
            assert!(r.body.len() < expected.len());
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut text)
                .unwrap();
        }
        assert_eq!(text, expected);
    });
}

/// Run one chunk through a sink named `name` and return the Authorization header seen.
fn authorization_seen(name: &str) -> Option<String> {
    let server = Server::local(Vec::new(), ok());
    header_seen(&server, name, server.url(), 1, "authorization").1
}

/// Deliver one chunk of `lines` lines through a sink named `name` writing to
/// `url` (served by `server`), require all of them delivered, and return the
/// shutdown's report and the first request's `header`.
fn header_seen(
    server: &Server,
    name: &str,
    url: String,
    lines: u32,
    header: &str,
) -> (ShutdownReport, Option<String>) {
    let (sink, writer) = start(&config(name, url)).unwrap();
    sink.offer(chunk(1, lines, 30)).unwrap();
    let report = writer.shutdown(soon(3));
    assert_eq!(load(&sink.stats.lines_delivered), u64::from(lines));
    let seen = server.with(|s| s.requests[0].header(header).map(str::to_owned));
    (report, seen)
}

#[test]
fn basic_auth_from_environment() {
    // Unique names: tests run in parallel in one process.
    std::env::set_var("SLUICE_SINK_AUTH_BASIC_TEST_USER", "sluice");
    std::env::set_var("SLUICE_SINK_AUTH_BASIC_TEST_PASSWORD", "s3cret:x");
    assert_eq!(
        authorization_seen("auth-basic.test").as_deref(),
        Some(&*format!("Basic {}", client::base64(b"sluice:s3cret:x")))
    );
}

#[test]
fn token_from_environment() {
    std::env::set_var("SLUICE_SINK_AUTH_TOKEN_TEST_TOKEN", "abc123==");
    assert_eq!(
        authorization_seen("auth-token-test").as_deref(),
        Some("Token abc123==")
    );
}

#[test]
fn half_set_credentials_refuse_to_start() {
    std::env::set_var("SLUICE_SINK_AUTH_HALF_TEST_USER", "sluice");
    assert!(start(&config("auth-half-test", "http://127.0.0.1:9/".into())).is_err());
}

#[test]
fn bad_urls_refuse_to_start() {
    for url in ["https://127.0.0.1:8086/write", "127.0.0.1:8086", "http://"] {
        assert!(start(&config("bad-url", url.to_owned())).is_err(), "{url}");
    }
}

#[test]
fn ipv6_loopback() {
    let Ok(server) = Server::start("[::1]:0", Vec::new(), held()) else {
        eprintln!("no ::1 here; skipping");
        return;
    };
    let url = format!("http://[::1]:{}/write", server.addr.port());
    let (report, host) = header_seen(&server, "ipv6", url, 2, "host");
    assert_eq!(report.lines_delivered, 2);
    assert_eq!(host, Some(format!("[::1]:{}", server.addr.port())));
}

#[test]
fn a_host_name_is_resolved_and_every_address_tried() {
    // `localhost` resolves to 127.0.0.1 (and on some hosts ::1 first, which
    // refuses here: the next address must be tried).
    let server = Server::local(Vec::new(), held());
    let url = format!("http://localhost:{}/write", server.addr.port());
    let (report, host) = header_seen(&server, "by-name", url, 3, "host");
    assert_eq!(report.lines_delivered, 3);
    assert_eq!(host, Some(format!("localhost:{}", server.addr.port())));
}

#[test]
fn a_name_that_does_not_resolve_is_retried_then_given_up() {
    let mut cfg = config(
        "no-such-host",
        "http://no-such-host.invalid:8086/write".to_owned(),
    );
    cfg.retry_max_age = Duration::from_millis(300);
    let (sink, writer) = start(&cfg).unwrap();
    sink.offer(chunk(1, 4, 30)).unwrap();
    // `.invalid` never resolves (RFC 6761); a resolver that is slow to say
    // so gets time, the give-up comes after the first failed lookup.
    assert!(wait_for(Duration::from_secs(30), || load(
        &sink.stats.lines_gave_up
    ) == 4));
    assert!(load(&sink.stats.request_failures) >= 1);
    writer.shutdown(soon(1));
    assert_eq!(load(&sink.stats.lines_in_flight), 0);
}

#[test]
fn writer_thread_is_named() {
    let server = Server::local(Vec::new(), ok());
    let (_sink, writer) = start(&config("named", server.url())).unwrap();
    assert_eq!(writer.threads[0].thread().name(), Some("sink-named"));
    writer.shutdown(soon(1));
}

#[test]
fn busy_connections_stop_the_collector_popping() {
    let server = Server::local(Vec::new(), Action::Hang);
    let mut cfg = config("busy", server.url());
    cfg.connections = 3;
    cfg.batch_max_size = 100;
    cfg.batch_max_age = Duration::from_millis(1);
    cfg.timeout = Duration::from_secs(30);
    cfg.queue_max_batches = 16;
    let (sink, writer) = start(&cfg).unwrap();
    for i in 0..12 {
        sink.offer(chunk(i, 1, 80)).unwrap();
    }
    // Three bodies in flight, one per connection thread, and the chunk that
    // did not fit the third (kept for the next body); with every thread busy
    // nobody collects, so the rest stay queued.
    assert!(wait_for(Duration::from_secs(2), || server.requests() == 3));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(server.with(|s| s.connections), 3);
    assert_eq!(server.requests(), 3);
    assert_eq!(sink.queue_len(), 12 - 4);
    assert_eq!(load(&sink.stats.lines_in_flight), 4);
    let report = writer.shutdown(Instant::now() + Duration::from_millis(100));
    assert_eq!(report.lines_undelivered, 12);
    assert_eq!(sink.queue_len(), 0);
}

#[test]
fn dropping_the_writer_stops_it_and_counts_what_is_left() {
    let server = Server::local(Vec::new(), Action::Hang);
    let mut cfg = config("dropped", server.url());
    cfg.timeout = Duration::from_secs(30);
    let (sink, writer) = start(&cfg).unwrap();
    sink.offer(chunk(1, 3, 40)).unwrap();
    assert!(wait_for(Duration::from_secs(2), || server.requests() == 1));
    sink.offer(chunk(2, 4, 40)).unwrap();
    drop(writer);
    assert!(wait_for(Duration::from_secs(2), || load(
        &sink.stats.lines_shutdown
    ) == 7));
    assert_eq!(load(&sink.stats.lines_in_flight), 0);
}

/// The niceness of this process's thread named `comm`, from /proc.
fn thread_nice(comm: &str) -> Option<i64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        if std::fs::read_to_string(dir.join("comm")).ok()?.trim() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised name; nice is field 19 overall.
        let after = &stat[stat.rfind(')')? + 2..];
        return after.split(' ').nth(16)?.parse().ok();
    }
    None
}

#[test]
fn writer_thread_runs_at_its_niceness() {
    let server = Server::local(Vec::new(), ok());
    let mut cfg = config("niced", server.url());
    cfg.nice = 7;
    let (sink, writer) = start(&cfg).unwrap();
    sink.offer(chunk(1, 1, 20)).unwrap();
    let deadline = soon(5);
    let mut nice = None;
    while Instant::now() < deadline && nice.is_none() {
        nice = thread_nice("sink-niced");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(nice, Some(7), "writer thread niceness");
    writer.shutdown(soon(5));
}
