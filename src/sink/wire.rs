//! HTTP/1.1 on a blocking `TcpStream`: what a sink's connection thread sends and
//! reads. A request is one vectored write of a prepared head and the body's
//! shared chunks (never copied); a response is parsed with `httparse`, its body
//! read by `Content-Length`, chunked coding or to the end of the connection, and
//! kept only up to a limit (the rest is read and discarded, so the connection
//! stays usable).
//!
//! Every blocking call is bounded by the attempt's deadline (the socket's
//! timeout is set to what is left before each call), so a backend that hangs
//! costs at most the sink's `timeout`.
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Most headers a response may carry.
const HEADERS_MAX: usize = 64;
/// Longest response head accepted.
const HEAD_MAX: usize = 64 * 1024;
/// Up to this many bytes, a response head is parsed on every read; longer,
/// only once a blank line may have ended it (bounding the re-parsing a head
/// that arrives a byte at a time costs).
const EAGER_PARSE_MAX: usize = 1024;
/// Read size while parsing a response.
const READ_CHUNK: usize = 8 * 1024;

/// A parsed response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// `Retry-After` in seconds, if given in that form.
    pub(crate) retry_after: Option<Duration>,
    /// The first `body_max` bytes of the body.
    pub(crate) body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub(crate) keep_alive: bool,
}

/// Why a request failed on the wire.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The attempt's deadline passed.
    TimedOut,
    /// The connection ended before a whole response arrived; `answered`
    /// says whether any of the response had arrived.
    Closed { answered: bool },
    /// The peer reset the connection, or another I/O error.
    Io { error: io::Error, answered: bool },
    /// The response is not HTTP/1.x as we read it.
    Protocol(String),
}

impl WireError {
    /// Whether the failure is the keep-alive race: the backend had closed the
    /// idle connection before our request reached it, so nothing was answered.
    pub(crate) fn before_any_answer(&self) -> bool {
        match self {
            WireError::Closed { answered } => !answered,
            WireError::Io { error, answered } => {
                !answered
                    && matches!(
                        error.kind(),
                        io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                    )
            }
            WireError::TimedOut | WireError::Protocol(_) => false,
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TimedOut => write!(f, "timed out"),
            WireError::Closed { answered: false } => {
                write!(f, "connection closed before an answer")
            }
            WireError::Closed { answered: true } => write!(f, "connection closed mid-answer"),
            WireError::Io { error, .. } => write!(f, "{error}"),
            WireError::Protocol(what) => write!(f, "bad response: {what}"),
        }
    }
}

/// Time left before `deadline` (a socket timeout for the next call), or a
/// `TimedOut` error once it has passed: a zero timeout would mean "block
/// forever" to the socket.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::ErrorKind::TimedOut.into())
    } else {
        Ok(left)
    }
}

fn io_error(error: io::Error, answered: bool) -> WireError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => WireError::TimedOut,
        _ => WireError::Io { error, answered },
    }
}

/// Write `head` then every part of the body, with as few `writev` calls as the
/// socket allows, before `deadline`.
pub(crate) fn send(
    stream: &mut TcpStream,
    head: &[u8],
    parts: &[Bytes],
    deadline: Instant,
) -> Result<(), WireError> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() + 1);
    slices.push(IoSlice::new(head));
    slices.extend(
        parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p)),
    );
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        time_left(deadline)
            .and_then(|left| stream.set_write_timeout(Some(left)))
            .map_err(|e| io_error(e, false))?;
        // std caps the slice count at the system's IOV_MAX per call.
        match stream.write_vectored(slices) {
            Ok(0) => return Err(WireError::Closed { answered: false }),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e, false)),
        }
    }
    Ok(())
}

/// How long to look for an early answer after a failed send.
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// One request and its answer. A backend may answer before it has read the
/// whole body (413 Payload Too Large, 401) and close: when the send fails,
/// an answer already there is read and returned (the connection is then not
/// reused), so a refusal is reported as what it is, not as a broken pipe.
pub(crate) fn exchange(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &[u8],
    parts: &[Bytes],
    deadline: Instant,
    body_max: usize,
) -> Result<Response, WireError> {
    match send(stream, head, parts, deadline) {
        Ok(()) => read_response(stream, buf, deadline, body_max),
        Err(WireError::TimedOut) => Err(WireError::TimedOut),
        Err(send_error) => {
            let wait = deadline.min(Instant::now() + EARLY_ANSWER_WAIT);
            match read_response(stream, buf, wait, body_max) {
                Ok(mut early) => {
                    early.keep_alive = false;
                    Ok(early)
                }
                Err(_) => Err(send_error),
            }
        }
    }
}

/// Whether an idle keep-alive connection can take a request: nothing to read
/// and not closed by the peer (one non-blocking peek, no state changed).
pub(crate) fn idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: `recv` writes at most 1 byte into `byte`, which lives across
    // the call; the descriptor is owned by `stream` and open.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    // -1 with EAGAIN: open and quiet. 0: the peer closed. Data: an answer
    // nobody asked for; the connection's framing can no longer be trusted.
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// Where an answer's bytes come from: the connection (each read bounded by
/// the attempt's deadline) or, for tests and the fuzz target, bytes handed
/// out a few at a time.
pub(crate) trait Source {
    /// Read into `buf` before `deadline`; `Ok(0)` at the end of the stream.
    fn read_before(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize>;
}

impl Source for TcpStream {
    fn read_before(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        self.set_read_timeout(Some(time_left(deadline)?))?;
        loop {
            match self.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// Bytes handed out at most `piece` at a time: a backend's answer as a
/// slow or fragmenting network would deliver it (tests, fuzzing).
pub(crate) struct Pieces<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) piece: usize,
}

impl Source for Pieces<'_> {
    fn read_before(&mut self, buf: &mut [u8], _deadline: Instant) -> io::Result<usize> {
        let n = self.data.len().min(self.piece.max(1)).min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Buffered reading of one response.
struct Reader<'s, S: Source + ?Sized> {
    source: &'s mut S,
    /// Storage, zero-filled once as it grows and reused: the received
    /// bytes are `buf[..end]`, the unread ones `buf[pos..end]`.
    buf: &'s mut Vec<u8>,
    pos: usize,
    end: usize,
    deadline: Instant,
    /// Whether any byte of the response has arrived.
    answered: bool,
}

impl<S: Source + ?Sized> Reader<'_, S> {
    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Read more bytes; `Ok(false)` at the end of the connection.
    fn fill(&mut self) -> Result<bool, WireError> {
        if self.pos == self.end {
            (self.pos, self.end) = (0, 0);
        }
        // Grow (zero-filling only the new part) when less than a read's
        // worth is free, so a backend that sends a byte at a time costs a
        // read per byte, not a buffer clear.
        if self.buf.len() - self.end < READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        match self
            .source
            .read_before(&mut self.buf[self.end..], self.deadline)
        {
            Ok(n) => {
                self.end += n;
                self.answered |= n > 0;
                Ok(n > 0)
            }
            Err(e) => Err(io_error(e, self.answered)),
        }
    }

    /// Read more, or fail with "closed" at the end of the connection.
    fn fill_or_closed(&mut self) -> Result<(), WireError> {
        if self.fill()? {
            Ok(())
        } else {
            Err(WireError::Closed {
                answered: self.answered,
            })
        }
    }

    /// Take up to `n` unread bytes, keeping what fits under `body_max` in `body`.
    fn take_into(&mut self, n: usize, body: &mut Vec<u8>, body_max: usize) -> usize {
        let take = n.min(self.end - self.pos);
        let keep = take.min(body_max.saturating_sub(body.len()));
        body.extend_from_slice(&self.buf[self.pos..self.pos + keep]);
        self.pos += take;
        take
    }

    /// Exactly `n` body bytes.
    fn body_bytes(
        &mut self,
        mut n: u64,
        body: &mut Vec<u8>,
        body_max: usize,
    ) -> Result<(), WireError> {
        while n > 0 {
            if self.pos == self.end {
                self.fill_or_closed()?;
            }
            n -= self.take_into(usize::try_from(n).unwrap_or(usize::MAX), body, body_max) as u64;
        }
        Ok(())
    }

    /// A line ending in CRLF (without it), for chunk sizes and trailers.
    fn line(&mut self) -> Result<Vec<u8>, WireError> {
        loop {
            if let Some(at) = memchr::memmem::find(self.unread(), b"\r\n") {
                let line = self.unread()[..at].to_vec();
                self.pos += at + 2;
                return Ok(line);
            }
            if self.end - self.pos > HEAD_MAX {
                return Err(WireError::Protocol("line too long in chunked body".into()));
            }
            self.fill_or_closed()?;
        }
    }

    /// A body in chunked transfer coding, trailers included.
    fn chunked(&mut self, body: &mut Vec<u8>, body_max: usize) -> Result<(), WireError> {
        loop {
            let line = self.line()?;
            let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size_text)
                .ok()
                .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
                .ok_or_else(|| WireError::Protocol("bad chunk size".into()))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(());
            }
            self.body_bytes(size, body, body_max)?;
            if !self.line()?.is_empty() {
                return Err(WireError::Protocol("chunk not followed by CRLF".into()));
            }
        }
    }
}

/// The framing a response's headers announce.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What a response head says.
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    status: u16,
    /// The minor version: 0 for HTTP/1.0.
    version: u8,
    framing: Framing,
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive` (what an HTTP/1.0 answer needs to be kept).
    keep_alive_asked: bool,
    retry_after: Option<Duration>,
}

/// Parse the head at the start of `bytes`; `None` while it is not whole.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let parsed = response
        .parse(bytes)
        .map_err(|e| WireError::Protocol(e.to_string()))?;
    let httparse::Status::Complete(len) = parsed else {
        return Ok(None);
    };
    let mut head = Head {
        len,
        status: response.code.unwrap_or(0),
        version: response.version.unwrap_or(1),
        framing: Framing::UntilClose,
        close: false,
        keep_alive_asked: false,
        retry_after: None,
    };
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .map_err(|_| WireError::Protocol(format!("content-length {value:?}")))?;
            if !matches!(head.framing, Framing::Chunked) {
                head.framing = Framing::Length(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().ends_with("chunked") {
                head.framing = Framing::Chunked;
            } else {
                head.framing = Framing::UntilClose;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            head.close |= value.split(',').any(|t| t.trim() == "close");
            head.keep_alive_asked |= value.split(',').any(|t| t.trim() == "keep-alive");
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = value.parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    Ok(Some(head))
}

/// Read one response (skipping interim 1xx answers) before `deadline`. `buf`
/// is the connection's scratch storage (kept between requests to avoid
/// allocating and zero-filling).
pub(crate) fn read_response<S: Source + ?Sized>(
    source: &mut S,
    buf: &mut Vec<u8>,
    deadline: Instant,
    body_max: usize,
) -> Result<Response, WireError> {
    // `buf` is storage kept by the connection; its old contents are not read.
    let mut reader = Reader {
        source,
        buf,
        pos: 0,
        end: 0,
        deadline,
        answered: false,
    };
    // How far the unread bytes were searched for the head's end: a head that
    // arrives a byte at a time is parsed once it is whole, not once per byte.
    let mut searched = 0usize;
    loop {
        let unread = reader.unread();
        let from = searched.saturating_sub(2);
        // Short heads are parsed as they come (garbage is refused at once);
        // past that, only when a blank line has arrived.
        let worth_parsing = !unread.is_empty()
            && (unread.len() <= EAGER_PARSE_MAX
                || memchr::memmem::find(&unread[from..], b"\n\n").is_some()
                || memchr::memmem::find(&unread[from..], b"\n\r\n").is_some());
        let head = if worth_parsing {
            parse_head(unread)?
        } else {
            None
        };
        let Some(head) = head else {
            // Not whole yet (or a blank line inside a value, say): read on.
            searched = unread.len();
            if searched > HEAD_MAX {
                return Err(WireError::Protocol("response head too long".into()));
            }
            reader.fill_or_closed()?;
            continue;
        };
        reader.pos += head.len;
        searched = 0;
        if (100..200).contains(&head.status) {
            // An interim answer (100 Continue, 103): the real one follows.
            if head.status == 101 {
                return Err(WireError::Protocol(
                    "unexpected 101 Switching Protocols".into(),
                ));
            }
            continue;
        }
        let framing = if head.status == 204 || head.status == 304 {
            Framing::None
        } else {
            head.framing
        };
        let mut body = Vec::new();
        let mut keep_alive = if head.version == 0 {
            head.keep_alive_asked
        } else {
            !head.close
        };
        match framing {
            Framing::None => {}
            Framing::Length(n) => reader.body_bytes(n, &mut body, body_max)?,
            Framing::Chunked => reader.chunked(&mut body, body_max)?,
            Framing::UntilClose => {
                keep_alive = false;
                loop {
                    reader.take_into(usize::MAX, &mut body, body_max);
                    if !reader.fill()? {
                        break;
                    }
                }
            }
        }
        // Bytes after the response were never asked for: do not reuse.
        keep_alive &= reader.pos == reader.end;
        return Ok(Response {
            status: head.status,
            retry_after: head.retry_after,
            body,
            keep_alive,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serve `answer` (raw bytes) to one connection after reading a request
    /// head and `body_len` body bytes; then close if `close`.
    fn answer_with(
        answer: &'static [u8],
        close: bool,
    ) -> (TcpStream, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // The test request's body is "a v=1\n" after the head.
            while !got.ends_with(b"\r\n\r\na v=1\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "client closed early");
                got.extend_from_slice(&buf[..n]);
            }
            for piece in answer.chunks(7) {
                s.write_all(piece).unwrap();
                s.flush().unwrap();
            }
            if !close {
                std::thread::sleep(Duration::from_millis(200));
            }
            got
        });
        (TcpStream::connect(addr).unwrap(), server)
    }

    fn roundtrip(answer: &'static [u8], close: bool) -> (Result<Response, WireError>, Vec<u8>) {
        let (mut stream, server) = answer_with(answer, close);
        let deadline = Instant::now() + Duration::from_secs(5);
        let head = b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n";
        let parts = [
            Bytes::from_static(b"a v"),
            Bytes::new(),
            Bytes::from_static(b"=1\n"),
        ];
        send(&mut stream, head, &parts, deadline).unwrap();
        let mut buf = Vec::new();
        let response = read_response(&mut stream, &mut buf, deadline, 16);
        (response, server.join().unwrap())
    }

    #[test]
    fn request_is_head_then_parts() {
        let (response, request) = roundtrip(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(
            request,
            b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\na v=1\n"
        );
        let response = response.unwrap();
        assert_eq!(response.status, 204);
        assert!(response.keep_alive);
        assert!(response.body.is_empty());
    }

    #[test]
    fn length_body_kept_up_to_the_limit() {
        let (response, _) = roundtrip(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 30\r\n\r\n{\"error\":\"partial write: xyz\"}",
            false,
        );
        let response = response.unwrap();
        assert_eq!(response.status, 400);
        assert_eq!(response.body, b"{\"error\":\"partia");
        assert!(response.keep_alive, "the whole body was read");
    }

    #[test]
    fn chunked_body_and_trailers() {
        let (response, _) = roundtrip(
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n",
            false,
        );
        let response = response.unwrap();
        assert_eq!(response.status, 500);
        assert_eq!(response.body, b"hello world");
        assert!(response.keep_alive);
    }

    #[test]
    fn interim_answers_are_skipped_and_retry_after_read() {
        let (response, _) = roundtrip(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            true,
        );
        let response = response.unwrap();
        assert_eq!(response.status, 429);
        assert_eq!(response.retry_after, Some(Duration::from_secs(7)));
        assert!(!response.keep_alive, "Connection: close");
    }

    #[test]
    fn body_until_close_and_http10() {
        let (response, _) = roundtrip(b"HTTP/1.0 200 OK\r\n\r\nsome text", true);
        let response = response.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"some text");
        assert!(!response.keep_alive);
    }

    #[test]
    fn close_before_answer_is_the_keep_alive_race() {
        let (response, _) = roundtrip(b"", true);
        let error = response.unwrap_err();
        assert!(error.before_any_answer(), "{error}");
        let (response, _) = roundtrip(b"HTTP/1.1 204", true);
        let error = response.unwrap_err();
        assert!(!error.before_any_answer(), "{error}");
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let (response, _) = roundtrip(b"SMTP ready\r\n\r\n", true);
        assert!(matches!(response, Err(WireError::Protocol(_))));
    }

    #[test]
    fn an_early_answer_beats_the_broken_pipe() {
        // The backend reads only the head, answers 413 and closes while the
        // client is still sending a body far larger than the socket buffers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while memchr::memmem::find(&got, b"\r\n\r\n").is_none() {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
                .unwrap();
            let _ = s.shutdown(std::net::Shutdown::Write);
            std::thread::sleep(Duration::from_millis(50));
            // Dropping with unread data resets the connection.
        });
        let mut stream = TcpStream::connect(addr).unwrap();
        let body = Bytes::from(vec![b'x'; 64 << 20]);
        let head = b"POST /write HTTP/1.1\r\nContent-Length: 67108864\r\n\r\n";
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let response = exchange(&mut stream, &mut buf, head, &[body], deadline, 64).unwrap();
        server.join().unwrap();
        assert_eq!(response.status, 413);
        assert_eq!(response.body, b"too large");
        assert!(!response.keep_alive);
    }

    proptest::proptest! {
        /// Whatever a backend sends, in whatever pieces: an answer or an
        /// error, never a panic or a hang.
        #[test]
        fn any_bytes_end_in_an_answer_or_an_error(
            head in proptest::sample::select(vec![
                &b""[..],
                b"HTTP/1.1 200 OK\r\n",
                b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
                b"HTTP/1.1 500 E\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"HTTP/1.0 100 Continue\r\n\r\n",
            ]),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            piece in 1usize..70,
            body_max in 0usize..100,
        ) {
            let data = [head, &tail[..]].concat();
            if let Ok((status, body, _)) = crate::sink::parse_answer(&data, piece, body_max) {
                proptest::prop_assert!(body.len() <= body_max);
                proptest::prop_assert!(status < 1000);
            }
        }

        /// A well-framed answer reads back exactly, however it is cut up.
        #[test]
        fn framed_answers_read_back_exactly(
            status in 200u16..600,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            framing in 0u8..3,
            chunk in 1usize..40,
            piece in 1usize..50,
            body_max in 0usize..400,
        ) {
            let status = if status == 204 || status == 304 { 200 } else { status };
            let mut data = format!("HTTP/1.1 {status} Whatever\r\n").into_bytes();
            match framing {
                0 => {
                    data.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                    data.extend_from_slice(&body);
                }
                1 => {
                    data.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for part in body.chunks(chunk) {
                        data.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                        data.extend_from_slice(part);
                        data.extend_from_slice(b"\r\n");
                    }
                    data.extend_from_slice(b"0\r\n\r\n");
                }
                _ => {
                    data.extend_from_slice(b"\r\n");
                    data.extend_from_slice(&body);
                }
            }
            let (got_status, got_body, keep_alive) =
                crate::sink::parse_answer(&data, piece, body_max).unwrap();
            proptest::prop_assert_eq!(got_status, status);
            proptest::prop_assert_eq!(&got_body[..], &body[..body.len().min(body_max)]);
            proptest::prop_assert_eq!(keep_alive, framing != 2);
        }
    }

    #[test]
    fn silence_times_out_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let began = Instant::now();
        let mut buf = Vec::new();
        let deadline = began + Duration::from_millis(100);
        let result = read_response(&mut stream, &mut buf, deadline, 16);
        assert!(matches!(result, Err(WireError::TimedOut)), "{result:?}");
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(95) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn idle_check_sees_a_closed_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        assert!(idle_and_open(&stream));
        drop(peer);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!idle_and_open(&stream));
    }
}
