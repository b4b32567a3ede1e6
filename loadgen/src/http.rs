//! Minimal blocking HTTP/1.1 pieces: a keep-alive request reader for the sink, a
//! keep-alive POST client for the baseline relay, and a one-shot GET for admin endpoints.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Request {
    pub method: String,
    pub path: String,
    pub gzip: bool,
    pub close: bool,
    pub body: Vec<u8>,
}

/// Reads one header line; `Ok(None)` on clean EOF before any byte.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Option<()>> {
    buf.clear();
    let n = r.read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > 16 * 1024 {
        return Err(std::io::Error::other("header line too long"));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(()))
}

/// Reads one request (head + body, Content-Length or chunked). `Ok(None)` on EOF.
pub fn read_request<R: BufRead>(r: &mut R, body: Vec<u8>) -> std::io::Result<Option<Request>> {
    let mut line = Vec::with_capacity(256);
    // Skip stray blank lines between requests.
    loop {
        if read_line(r, &mut line)?.is_none() {
            return Ok(None);
        }
        if !line.is_empty() {
            break;
        }
    }
    let start = String::from_utf8_lossy(&line).into_owned();
    let mut it = start.split_whitespace();
    let method = it.next().unwrap_or("").to_string();
    let path = it.next().unwrap_or("").to_string();
    let http10 = it.next() == Some("HTTP/1.0");
    let mut clen: Option<usize> = None;
    let mut chunked = false;
    let mut gzip = false;
    let mut close = http10;
    for _ in 0..200 {
        if read_line(r, &mut line)?.is_none() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.is_empty() {
            break;
        }
        let Some(c) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..c]).to_ascii_lowercase();
        let val = String::from_utf8_lossy(&line[c + 1..])
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "content-length" => clen = val.parse().ok(),
            "transfer-encoding" => chunked = val.contains("chunked"),
            "content-encoding" => gzip = val.contains("gzip"),
            "connection" => close = val.contains("close"),
            _ => {}
        }
    }
    let mut body = body;
    if chunked {
        body.clear();
        loop {
            if read_line(r, &mut line)?.is_none() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let hex = String::from_utf8_lossy(&line);
            let hex = hex.split(';').next().unwrap_or("").trim();
            let n = usize::from_str_radix(hex, 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if n == 0 {
                // Trailers until blank line.
                while read_line(r, &mut line)?.is_some() && !line.is_empty() {}
                break;
            }
            let old = body.len();
            body.resize(old + n, 0);
            r.read_exact(&mut body[old..])?;
            read_line(r, &mut line)?;
        }
    } else if let Some(n) = clen {
        // Every byte is overwritten by the read: zero only what the reused
        // buffer never held (a 1 MiB memset per request otherwise).
        if body.len() >= n {
            body.truncate(n);
        } else {
            body.resize(n, 0);
        }
        r.read_exact(&mut body)?;
    } else {
        body.clear();
    }
    Ok(Some(Request {
        method,
        path,
        gzip,
        close,
        body,
    }))
}

pub fn write_response<W: Write>(
    w: &mut W,
    status: u16,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let head = if status == 204 {
        format!("HTTP/1.1 204 {reason}\r\n\r\n")
    } else {
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    };
    w.write_all(head.as_bytes())?;
    if status != 204 {
        w.write_all(body)?;
    }
    w.flush()
}

/// Reads a response: status and body (Content-Length, chunked or none for 204/304).
fn read_response<R: BufRead>(r: &mut R) -> Result<(u16, Vec<u8>, bool)> {
    let mut line = Vec::new();
    read_line(r, &mut line)?.ok_or_else(|| anyhow!("connection closed"))?;
    let s = String::from_utf8_lossy(&line).into_owned();
    let status: u16 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {s:?}"))?;
    let mut clen: Option<usize> = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        read_line(r, &mut line)?.ok_or_else(|| anyhow!("eof in headers"))?;
        if line.is_empty() {
            break;
        }
        let l = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            clen = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("transfer-encoding:") {
            chunked = v.contains("chunked");
        } else if let Some(v) = l.strip_prefix("connection:") {
            close = v.contains("close");
        }
    }
    let mut body = Vec::new();
    if status == 204 || status == 304 {
    } else if chunked {
        loop {
            read_line(r, &mut line)?.ok_or_else(|| anyhow!("eof in chunk"))?;
            let n = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16)?;
            if n == 0 {
                while read_line(r, &mut line)?.is_some() && !line.is_empty() {}
                break;
            }
            let old = body.len();
            body.resize(old + n, 0);
            r.read_exact(&mut body[old..])?;
            read_line(r, &mut line)?;
        }
    } else if let Some(n) = clen {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
        close = true;
    }
    Ok((status, body, close))
}

/// One-shot GET with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    let s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut w = &s;
    write!(
        w,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = BufReader::new(&s);
    let (st, body, _) = read_response(&mut r)?;
    Ok((st, body))
}

/// Parsed `http://HOST:PORT/path?query` (loopback only).
#[derive(Debug, Clone)]
pub struct Url {
    pub addr: SocketAddr,
    pub path: String,
}

pub fn parse_url(u: &str) -> Result<Url> {
    let rest = u
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs are supported: {u}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("URL host must be an IP:PORT literal: {u}"))?;
    if !addr.ip().is_loopback() {
        bail!("refusing non-loopback sink {u}");
    }
    Ok(Url {
        addr,
        path: path.to_string(),
    })
}

/// Keep-alive POST client; reconnects on demand.
pub struct Client {
    url: Url,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
    timeout: Duration,
}

impl Client {
    pub fn new(url: Url, timeout: Duration) -> Self {
        Client {
            url,
            conn: None,
            timeout,
        }
    }

    /// POSTs `body`; returns the status. Drops the connection on any error.
    pub fn post(&mut self, body: &[u8]) -> Result<u16> {
        let r = self.post_inner(body);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn post_inner(&mut self, body: &[u8]) -> Result<u16> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.url.addr, self.timeout)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            let r = BufReader::new(s.try_clone()?);
            self.conn = Some((s, r));
        }
        let Some((s, r)) = self.conn.as_mut() else {
            bail!("no connection");
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            self.url.path,
            self.url.addr,
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let (st, _, close) = read_response(r)?;
        if close {
            self.conn = None;
        }
        Ok(st)
    }
}
