//! Test harness: a recording HTTP/1.1 sink server, a sluice child process,
//! a UDP sender and a `/metrics` reader. Loopback (127.0.0.1) only.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How a test sink answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 204 No Content.
    Ok,
    /// 500 on every request.
    Fail500,
    /// Read the request, never answer.
    Hang,
}

/// A recording HTTP/1.1 server standing in for InfluxDB.
pub struct HttpSink {
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    paths: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HttpSink {
    pub fn start(behaviour: Behaviour) -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (bodies, paths, requests, stop) = (
                bodies.clone(),
                paths.clone(),
                requests.clone(),
                stop.clone(),
            );
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (bodies, paths, requests, stop) = (
                        bodies.clone(),
                        paths.clone(),
                        requests.clone(),
                        stop.clone(),
                    );
                    thread::spawn(move || {
                        serve(stream, behaviour, &bodies, &paths, &requests, &stop)
                    });
                }
            });
        }
        HttpSink {
            addr,
            bodies,
            paths,
            requests,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/write?db=test", self.addr)
    }

    /// Every line received, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        let bodies = self.bodies.lock().unwrap();
        let mut out = Vec::new();
        for body in bodies.iter() {
            let text = String::from_utf8(body.clone()).expect("bodies are UTF-8");
            assert!(text.ends_with('\n'), "a body must end with a whole line");
            out.extend(text.lines().map(str::to_string));
        }
        out
    }

    pub fn line_count(&self) -> usize {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .sum()
    }

    pub fn bodies(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    stream: TcpStream,
    behaviour: Behaviour,
    bodies: &Mutex<Vec<Vec<u8>>>,
    paths: &Mutex<Vec<String>>,
    requests: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        // Request line (waiting across read timeouts until stopped).
        let mut request_line = String::new();
        loop {
            match reader.read_line(&mut request_line) {
                Ok(0) => return,
                Ok(_) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        let _ = reader
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(5)));
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = reader
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)));
        requests.fetch_add(1, Ordering::Relaxed);
        match behaviour {
            Behaviour::Ok => {
                bodies.lock().unwrap().push(body);
                paths.lock().unwrap().push(path);
                if writer
                    .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                    .is_err()
                {
                    return;
                }
            }
            Behaviour::Fail500 => {
                if writer
                    .write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\noops\n",
                    )
                    .is_err()
                {
                    return;
                }
            }
            Behaviour::Hang => {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                }
                return;
            }
        }
    }
}

/// A TCP port on 127.0.0.1 with nothing listening (connections are refused).
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/write?db=test")
}

/// A running sluice process.
pub struct Sluice {
    child: Option<Child>,
    pub udp: Vec<SocketAddr>,
    pub admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// The common head of a test config: loopback, ephemeral ports, 2 shards.
pub fn base_config(io_uring: &str) -> String {
    format!(
        r#"
shutdown_timeout = "5s"
[listen]
udp = ["127.0.0.1:0"]
shards = 2
io_uring = "{io_uring}"
read_buffer_size = "4MB"
[admin]
listen = "127.0.0.1:0"
[chunk]
max_size = "64KB"
max_age = "20ms"
"#
    )
}

/// A `[[sink]]` table with test-friendly timings.
pub fn sink_config(name: &str, url: &str, routes: &[&str]) -> String {
    let routes: Vec<String> = routes.iter().map(|r| format!("{r:?}")).collect();
    format!(
        r#"
[[sink]]
name = "{name}"
url = "{url}"
routes = [{}]
batch_max_size = "256KB"
batch_max_age = "50ms"
queue_max_batches = 1024
connections = 2
timeout = "2s"
retry_max_age = "1s"
retry_backoff_initial = "20ms"
retry_backoff_max = "200ms"
"#,
        routes.join(", ")
    )
}

impl Sluice {
    pub fn start(config: &str) -> Sluice {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Sluice {
        let dir = std::env::temp_dir().join(format!(
            "sluice-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(sluice_bin());
        command
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn sluice");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        if !line.starts_with("listening ") {
            let _ = child.kill();
            let _ = child.wait();
            thread::sleep(Duration::from_millis(100));
            panic!(
                "sluice did not start; stdout {line:?}; stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
        let mut udp = Vec::new();
        let mut admin = None;
        for part in line.split_whitespace().skip(1) {
            if let Some(list) = part.strip_prefix("udp=") {
                udp = list.split(',').map(|a| a.parse().unwrap()).collect();
            } else if let Some(a) = part.strip_prefix("admin=") {
                admin = Some(a.parse().unwrap());
            }
        }
        let sluice = Sluice {
            child: Some(child),
            udp,
            admin: admin.expect("admin address"),
            stderr,
        };
        sluice.wait_ready();
        sluice
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if http_get(self.admin, "/readyz").map(|(s, _)| s) == Some(200) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("sluice never became ready");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = http_get(self.admin, "/metrics").expect("scrape /metrics");
        assert_eq!(status, 200);
        Metrics::parse(&body)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then wait for exit; returns the exit code.
    pub fn terminate(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sluice did not exit after SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// GET a path from a loopback HTTP server; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Parsed Prometheus text: `name{labels}` -> value.
pub struct Metrics {
    pub values: HashMap<String, f64>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut values = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((key, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.parse::<f64>() {
                    values.insert(key.to_string(), v);
                }
            }
        }
        Metrics { values }
    }

    /// Value of an exact series key such as `sluice_dropped_lines_total{reason="too_long"}`; 0 if absent.
    pub fn get(&self, key: &str) -> u64 {
        self.values.get(key).copied().unwrap_or(0.0) as u64
    }

    /// Whether `/metrics` had this exact series key.
    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// Sum of every series of a metric name.
    pub fn sum(&self, name: &str) -> u64 {
        self.values
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| *v as u64)
            .sum()
    }
}

/// Send lines to sluice, packed into datagrams of at most `payload` bytes,
/// paced so loopback never overruns the receive buffer in a test.
pub fn send_lines(target: SocketAddr, lines: &[String], payload: usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut datagram = Vec::with_capacity(payload);
    let mut sent = 0usize;
    for line in lines {
        if !datagram.is_empty() && datagram.len() + line.len() + 1 > payload {
            socket.send_to(&datagram, target).unwrap();
            datagram.clear();
            sent += 1;
            if sent.is_multiple_of(64) {
                thread::sleep(Duration::from_millis(1));
            }
        }
        datagram.extend_from_slice(line.as_bytes());
        datagram.push(b'\n');
    }
    if !datagram.is_empty() {
        socket.send_to(&datagram, target).unwrap();
    }
}

/// Send raw datagrams as they are.
pub fn send_datagrams(target: SocketAddr, datagrams: &[Vec<u8>]) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in datagrams {
        socket.send_to(d, target).unwrap();
    }
}

/// Poll `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Current time in ns, for line timestamps inside the sanity window.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// `n` distinct valid lines of measurement `m`.
pub fn make_lines(m: &str, n: usize, extra_tags: &str) -> Vec<String> {
    let ts = now_ns();
    (0..n)
        .map(|i| {
            format!(
                "{m},host=h{}{extra_tags} value={i}i,f=1.5 {}",
                i % 97,
                ts + i as i64
            )
        })
        .collect()
}

/// Sorted copy, for comparing multisets.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
