//! Request lines longer than hyper accepts, made parseable.
//!
//! SCEP clients send GET PKIOperation with the whole base64 pkiMessage in the `message` query
//! parameter (RFC 8894 §4.1); Intune's requests exceed 40 KB, and `Limits::max_request_line_bytes`
//! promises 128 KiB by default. hyper parses the request-target into `http::Uri`, which refuses
//! anything over 65534 bytes with 414 before our handler runs.
//!
//! [`LongUriRewriter`] sits between the TCP/TLS stream and hyper. It frames HTTP/1.1 requests
//! on the read side, and when a request-target is longer than [`LONG_TARGET_BYTES`] and has a
//! `message` parameter, it moves that parameter's raw (still percent-encoded) value into a
//! [`MESSAGE_HEADER`] header line placed right after the request line. Every other byte of the
//! head stays as it was. Client-sent [`MESSAGE_HEADER`] lines are dropped from every head, so
//! the header only ever carries what this adapter moved. `App::handle` reads the header when
//! the query has no `message`.
//!
//! Framing follows hyper's so keep-alive and pipelining keep working: `Content-Length: N`
//! passes exactly N body bytes; `Transfer-Encoding`, `Upgrade`, CONNECT, several or malformed
//! `Content-Length`s, an unparsable head, or a head over `max_head_bytes` switch the rest of
//! the connection to pass-through, where hyper sees the bytes unchanged and answers (or
//! refuses) them itself. Writes pass straight through.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Request-targets up to this length pass untouched even when they carry `message=`. hyper
/// parses them fine (`http::Uri` stops at 65534 bytes), and leaving the everyday requests
/// byte-identical keeps the adapter out of the way; 8 KiB is far below the cap and far above
/// any SCEP GET other than a PKIOperation.
pub const LONG_TARGET_BYTES: usize = 8 * 1024;

/// The header line that carries a moved `message` value, still percent-encoded.
pub const MESSAGE_HEADER: &str = "x-scepd-message";

/// Bytes asked of the inner stream per read while a head is buffered.
const READ_CHUNK: usize = 16 * 1024;

/// Header lines parsed per head. hyper refuses more than 100, so a head with more than this
/// is handed to hyper unchanged to be refused there.
const MAX_HEADERS: usize = 128;

/// Buffers grown past this by one large head are released once drained, so an idle
/// keep-alive connection does not keep 100+ KiB.
const RETAINED_CAPACITY: usize = 16 * 1024;

/// Where the read side is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Buffering a request head.
    Head,
    /// Passing this many more body bytes (never 0).
    Body(u64),
    /// No more framing: every byte passes unchanged.
    Passthrough,
}

/// Bytes read from the inner stream and not yet handed to the reader: `data[start..end]`.
/// `data` stays initialized, so reads into it never re-zero memory.
#[derive(Debug, Default)]
struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    fn filled(&self) -> &[u8] {
        self.data.get(self.start..self.end).unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.capacity() > RETAINED_CAPACITY.saturating_add(READ_CHUNK) {
                self.data = Vec::new();
            }
        }
    }

    /// `want` writable bytes after the filled part (compacting or growing as needed).
    fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.data.len().saturating_sub(self.end) < want && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end = self.len();
            self.start = 0;
        }
        let needed = self.end.saturating_add(want);
        if self.data.len() < needed {
            self.data.resize(needed, 0);
        }
        self.data.get_mut(self.end..needed).unwrap_or_default()
    }

    fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.data.len());
    }
}

/// An IO adapter that rewrites over-long SCEP GET request lines so hyper can parse them (see
/// the module documentation). Reads are framed; writes pass straight through.
#[derive(Debug)]
pub struct LongUriRewriter<S> {
    inner: S,
    max_head_bytes: usize,
    mode: Mode,
    input: InBuf,
    /// Leading bytes of `input` that are decided and go to the reader unchanged.
    ready: usize,
    /// Bytes of `input` after `ready` already searched for the end of the head.
    scanned: usize,
    /// A rewritten head, handed to the reader before anything in `input`.
    out: Vec<u8>,
    out_pos: usize,
    /// The inner stream reported end of file.
    eof: bool,
}

impl<S> LongUriRewriter<S> {
    /// Wraps `inner`. A head (request line and headers) that grows past `max_head_bytes`
    /// without ending is handed to hyper unchanged, and the connection is no longer framed.
    pub fn new(inner: S, max_head_bytes: usize) -> Self {
        Self {
            inner,
            max_head_bytes,
            mode: Mode::Head,
            input: InBuf::default(),
            ready: 0,
            scanned: 0,
            out: Vec::new(),
            out_pos: 0,
            eof: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Copies pending bytes (a rewritten head first, then decided input) into `buf`.
    /// `false` if nothing was pending.
    fn emit(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if let Some(chunk) = self.out.get(self.out_pos..).filter(|c| !c.is_empty()) {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(chunk.get(..n).unwrap_or_default());
            self.out_pos = self.out_pos.saturating_add(n);
            if self.out_pos >= self.out.len() {
                self.out_pos = 0;
                if self.out.capacity() > RETAINED_CAPACITY {
                    self.out = Vec::new();
                } else {
                    self.out.clear();
                }
            }
            return true;
        }
        if self.ready > 0 {
            let chunk = self.input.filled().get(..self.ready).unwrap_or_default();
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(chunk.get(..n).unwrap_or_default());
            self.input.consume(n);
            self.ready = self.ready.saturating_sub(n);
            return true;
        }
        false
    }

    /// Decides what the undecided input is. `false` if more bytes are needed first.
    fn process(&mut self) -> bool {
        let pending = self.input.len().saturating_sub(self.ready);
        match self.mode {
            Mode::Passthrough => {
                self.ready = self.ready.saturating_add(pending);
                pending > 0
            }
            Mode::Body(remaining) => {
                if pending == 0 {
                    return false;
                }
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(pending);
                self.ready = self.ready.saturating_add(take);
                self.mode = body_mode(remaining.saturating_sub(take as u64));
                true
            }
            Mode::Head => self.process_head(),
        }
    }

    fn process_head(&mut self) -> bool {
        let Self {
            input,
            ready,
            scanned,
            out,
            mode,
            max_head_bytes,
            ..
        } = self;
        let pending = input.filled().get(*ready..).unwrap_or_default();
        // httparse (and so hyper) skips empty lines before a request line; pass them on.
        let blank = pending
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        if blank > 0 {
            *ready = ready.saturating_add(blank);
            *scanned = 0;
            return true;
        }
        let head_len = match find_head_end(pending, *scanned) {
            Some(len) if len <= *max_head_bytes => len,
            Some(_) => return self.give_up(),
            None if pending.len() > *max_head_bytes => return self.give_up(),
            None => {
                *scanned = pending.len();
                return false;
            }
        };
        let head = pending.get(..head_len).unwrap_or_default();
        let Some(examined) = examine(head) else {
            return self.give_up();
        };
        if !examined.rewrite {
            *ready = ready.saturating_add(head_len);
        } else if *ready > 0 {
            // Earlier bytes go out first; the head is rewritten on the next call.
            return true;
        } else if rewrite_head(head, out).is_some() {
            input.consume(head_len);
        } else {
            out.clear();
            return self.give_up();
        }
        *scanned = 0;
        *mode = examined.framing;
        true
    }

    /// Stops framing: everything buffered and everything after goes to hyper unchanged.
    fn give_up(&mut self) -> bool {
        self.mode = Mode::Passthrough;
        self.scanned = 0;
        self.ready = self.input.len();
        true
    }
}

fn body_mode(remaining: u64) -> Mode {
    if remaining == 0 {
        Mode::Head
    } else {
        Mode::Body(remaining)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LongUriRewriter<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.emit(buf) {
                return Poll::Ready(Ok(()));
            }
            if this.process() {
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                // Nothing buffered: read straight into the caller's buffer.
                Mode::Passthrough => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Mode::Body(remaining) => {
                    // Straight into the caller's buffer too, but never past the body.
                    let limit = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.remaining());
                    let mut body = ReadBuf::new(buf.initialize_unfilled_to(limit));
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut body))?;
                    let n = body.filled().len();
                    buf.advance(n);
                    if n == 0 {
                        this.eof = true;
                    } else {
                        this.mode = body_mode(remaining.saturating_sub(n as u64));
                    }
                    return Poll::Ready(Ok(()));
                }
                Mode::Head => {
                    let pending = this.input.len().saturating_sub(this.ready);
                    let room = this
                        .max_head_bytes
                        .saturating_add(1)
                        .saturating_sub(pending)
                        .clamp(1, READ_CHUNK);
                    let mut read = ReadBuf::new(this.input.spare(room));
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                    let n = read.filled().len();
                    if n == 0 {
                        // End of file inside a head: hyper gets what there is and reports it.
                        this.eof = true;
                        this.give_up();
                    } else {
                        this.input.commit(n);
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LongUriRewriter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The length of the head at the start of `buf` (through its empty line, CRLF or bare LF as
/// httparse accepts), searching from about `scanned`, where an earlier search stopped.
fn find_head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let start = scanned.saturating_sub(2);
    let tail = buf.get(start..)?;
    tail.iter().enumerate().find_map(|(i, &b)| {
        if b != b'\n' {
            return None;
        }
        let end = match (tail.get(i.saturating_add(1)), tail.get(i.saturating_add(2))) {
            (Some(b'\n'), _) => i.checked_add(2),
            (Some(b'\r'), Some(b'\n')) => i.checked_add(3),
            _ => None,
        }?;
        start.checked_add(end)
    })
}

/// What a complete head means for the adapter.
struct Examined {
    /// How the bytes after it are framed.
    framing: Mode,
    /// The head must be rewritten (a `message` to move or a client-sent [`MESSAGE_HEADER`]).
    rewrite: bool,
}

/// Parses a complete head as hyper will. `None` if hyper would refuse it.
fn examine(head: &[u8]) -> Option<Examined> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return None,
    }
    let method = request.method?;
    let target = request.path?;
    let mut unframed = method == "CONNECT";
    let mut lengths = 0usize;
    let mut length = None;
    let mut strip = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") || name.eq_ignore_ascii_case("upgrade") {
            unframed = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths = lengths.saturating_add(1);
            length = parse_content_length(header.value);
        } else if name.eq_ignore_ascii_case(MESSAGE_HEADER) {
            strip = true;
        }
    }
    let framing = match (unframed, lengths, length) {
        (false, 0, _) => Mode::Head,
        (false, 1, Some(n)) => body_mode(n),
        _ => Mode::Passthrough,
    };
    let moves_message =
        target.len() > LONG_TARGET_BYTES && split_target(target.as_bytes()).is_some();
    Some(Examined {
        framing,
        rewrite: strip || moves_message,
    })
}

/// A `Content-Length` value: ASCII digits around optional whitespace, within `u64`.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

/// A request-target with a `message` parameter: its path, its query, and the raw value of
/// the last `message` (the one `request::parse_query` keeps).
fn split_target(target: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let question = target.iter().position(|&b| b == b'?')?;
    let path = target.get(..question)?;
    let query = target.get(question.checked_add(1)?..)?;
    let last = query.rsplit(|&b| b == b'&').find(|p| is_message_param(p))?;
    let value = last.splitn(2, |&b| b == b'=').nth(1).unwrap_or_default();
    Some((path, query, value))
}

/// `message` or `message=...`, the name compared as `request::parse_query` does.
fn is_message_param(param: &[u8]) -> bool {
    param
        .split(|&b| b == b'=')
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(b"message"))
}

/// Splits off the first line, terminator included.
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    Some(bytes.split_at(newline.checked_add(1)?))
}

/// Writes `head` into `out` with the long target's `message` moved into a [`MESSAGE_HEADER`]
/// line after the request line and client-sent [`MESSAGE_HEADER`] lines dropped. `head` has
/// passed [`examine`].
fn rewrite_head(head: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let (request_line, rest) = split_line(head)?;
    let method_len = request_line.iter().position(|&b| b == b' ')?;
    let (method, after_method) = request_line.split_at(method_len.checked_add(1)?);
    let target_len = after_method.iter().position(|&b| b == b' ')?;
    let (target, version) = after_method.split_at(target_len);
    out.clear();
    out.reserve(
        head.len()
            .saturating_add(MESSAGE_HEADER.len())
            .saturating_add(4),
    );
    out.extend_from_slice(method);
    let moved = if target.len() > LONG_TARGET_BYTES {
        split_target(target)
    } else {
        None
    };
    let Some((path, query, value)) = moved else {
        out.extend_from_slice(target);
        out.extend_from_slice(version);
        return rewrite_headers(rest, out);
    };
    out.extend_from_slice(path);
    let mut separator = b'?';
    for param in query.split(|&b| b == b'&').filter(|p| !is_message_param(p)) {
        out.push(separator);
        out.extend_from_slice(param);
        separator = b'&';
    }
    out.extend_from_slice(version);
    out.extend_from_slice(MESSAGE_HEADER.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    rewrite_headers(rest, out)
}

/// Copies header lines (through the empty line), dropping [`MESSAGE_HEADER`] ones.
fn rewrite_headers(mut rest: &[u8], out: &mut Vec<u8>) -> Option<()> {
    while let Some((line, next)) = split_line(rest) {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !name.eq_ignore_ascii_case(MESSAGE_HEADER.as_bytes()) {
            out.extend_from_slice(line);
        }
        rest = next;
    }
    rest.is_empty().then_some(())
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::io::AsyncReadExt;

    /// Hands out scripted chunks, one per read (split further if the reader's buffer is
    /// smaller), then end of file.
    struct Script(VecDeque<Vec<u8>>);

    impl AsyncRead for Script {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if let Some(chunk) = this.0.front_mut() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                chunk.drain(..n);
                if chunk.is_empty() {
                    this.0.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    const LIMIT: usize = 128 * 1024 + 16 * 1024;

    /// Everything the adapter yields for `chunks`, read `read_size` bytes at a time.
    async fn run(chunks: Vec<Vec<u8>>, read_size: usize) -> Vec<u8> {
        let mut rewriter = LongUriRewriter::new(Script(chunks.into()), LIMIT);
        let mut all = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = rewriter.read(&mut buf).await.unwrap();
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&buf[..n]);
        }
    }

    async fn run_whole(bytes: &[u8]) -> Vec<u8> {
        run(vec![bytes.to_vec()], 64 * 1024).await
    }

    fn bytewise(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes.iter().map(|&b| vec![b]).collect()
    }

    fn long_value(len: usize) -> String {
        // Base64 as clients percent-encode it.
        "MIIB%2Bab%2Fcd".chars().cycle().take(len).collect()
    }

    fn long_get(value: &str) -> Vec<u8> {
        format!("GET /scep?operation=PKIOperation&message={value} HTTP/1.1\r\nHost: scep.example\r\nUser-Agent: test\r\n\r\n")
            .into_bytes()
    }

    fn long_get_rewritten(value: &str) -> Vec<u8> {
        format!(
            "GET /scep?operation=PKIOperation HTTP/1.1\r\nx-scepd-message: {value}\r\nHost: scep.example\r\nUser-Agent: test\r\n\r\n"
        )
        .into_bytes()
    }

    const SHORT_GET: &[u8] =
        b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: scep.example\r\n\r\n";

    #[tokio::test]
    async fn short_requests_pass_byte_identical() {
        let mut stream = SHORT_GET.to_vec();
        stream.extend_from_slice(
            b"GET /scep?operation=PKIOperation&message=MIIBshort HTTP/1.1\nhost: a\n\n",
        );
        stream.extend_from_slice(b"\r\nHEAD /healthz HTTP/1.0\r\n\r\n");
        assert_eq!(run_whole(&stream).await, stream);
        assert_eq!(run(bytewise(&stream), 3).await, stream);
    }

    #[tokio::test]
    async fn a_100_kib_target_is_rewritten() {
        let value = long_value(100 * 1024);
        assert_eq!(
            run_whole(&long_get(&value)).await,
            long_get_rewritten(&value)
        );
        // Small reader buffers: the rewritten head goes out in pieces.
        assert_eq!(
            run(vec![long_get(&value)], 1000).await,
            long_get_rewritten(&value)
        );
    }

    #[tokio::test]
    async fn message_in_the_middle_and_other_parameters_stay() {
        let value = long_value(20 * 1024);
        let head = format!(
            "GET /scep/wifi?x=1&MESSAGE={value}&operation=PKIOperation&&y HTTP/1.1\nHost: h\n\n"
        );
        let want =
            format!("GET /scep/wifi?x=1&operation=PKIOperation&&y HTTP/1.1\nx-scepd-message: {value}\r\nHost: h\n\n");
        assert_eq!(
            String::from_utf8(run_whole(head.as_bytes()).await).unwrap(),
            want
        );
    }

    #[tokio::test]
    async fn a_head_split_into_single_bytes_is_rewritten() {
        let value = long_value(20 * 1024);
        let mut stream = long_get(&value);
        stream.extend_from_slice(SHORT_GET);
        let mut want = long_get_rewritten(&value);
        want.extend_from_slice(SHORT_GET);
        assert_eq!(run(bytewise(&stream), 1).await, want);
        assert_eq!(run(bytewise(&stream), 4096).await, want);
    }

    #[tokio::test]
    async fn pipelined_long_then_short_in_one_read() {
        let value = long_value(100 * 1024);
        let mut stream = long_get(&value);
        stream.extend_from_slice(SHORT_GET);
        let mut want = long_get_rewritten(&value);
        want.extend_from_slice(SHORT_GET);
        assert_eq!(run_whole(&stream).await, want);
        // Short first, then long, then short: order is kept.
        let mut stream = SHORT_GET.to_vec();
        stream.extend_from_slice(&long_get(&value));
        stream.extend_from_slice(SHORT_GET);
        let mut want = SHORT_GET.to_vec();
        want.extend_from_slice(&long_get_rewritten(&value));
        want.extend_from_slice(SHORT_GET);
        assert_eq!(run(vec![stream], 256 * 1024).await, want);
    }

    #[tokio::test]
    async fn a_post_body_is_never_rewritten_and_the_next_request_is_framed() {
        let value = long_value(20 * 1024);
        // A body that looks like a head with a long message and a forged header.
        let body = format!("GET /x?message={value} HTTP/1.1\r\nx-scepd-message: forged\r\n\r\n");
        let mut stream = format!(
            "POST /scep?operation=PKIOperation HTTP/1.1\r\ncontent-LENGTH: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        stream.extend_from_slice(body.as_bytes());
        stream.extend_from_slice(&long_get(&value));
        let mut want = stream[..stream.len() - long_get(&value).len()].to_vec();
        want.extend_from_slice(&long_get_rewritten(&value));
        assert_eq!(run_whole(&stream).await, want);
        assert_eq!(run(bytewise(&stream), 7).await, want);
        // The body read straight from the stream in large pieces.
        let head_len = stream.len() - body.len() - long_get(&value).len();
        let chunks = vec![
            stream[..head_len].to_vec(),
            body.as_bytes().to_vec(),
            long_get(&value),
        ];
        assert_eq!(run(chunks, 100).await, want);
    }

    #[tokio::test]
    async fn zero_content_length_frames_the_next_request() {
        let value = long_value(20 * 1024);
        let mut stream = b"POST /scep HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec();
        stream.extend_from_slice(&long_get(&value));
        let mut want = b"POST /scep HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec();
        want.extend_from_slice(&long_get_rewritten(&value));
        assert_eq!(run_whole(&stream).await, want);
    }

    #[tokio::test]
    async fn chunked_and_unclear_lengths_switch_to_passthrough() {
        let value = long_value(20 * 1024);
        for head in [
            "POST /scep HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /scep HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST /scep HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST /scep HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST /scep HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "GET /chat HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        ] {
            let mut stream = head.as_bytes().to_vec();
            stream.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
            stream.extend_from_slice(&long_get(&value));
            assert_eq!(run_whole(&stream).await, stream, "{head}");
            assert_eq!(run(bytewise(&stream), 1).await, stream, "{head}");
        }
    }

    #[tokio::test]
    async fn an_over_limit_head_passes_unchanged() {
        let value = long_value(LIMIT + 1);
        let mut stream = long_get(&value);
        stream.extend_from_slice(SHORT_GET);
        assert_eq!(run_whole(&stream).await, stream);
        // Without an end at all.
        let endless = format!("GET /scep?message={value}").into_bytes();
        assert_eq!(run(vec![endless.clone()], 4096).await, endless);
        // Just within the limit is still rewritten.
        let fixed = long_get("").len();
        let value = long_value(LIMIT - fixed);
        assert_eq!(long_get(&value).len(), LIMIT);
        assert_eq!(
            run_whole(&long_get(&value)).await,
            long_get_rewritten(&value)
        );
    }

    #[tokio::test]
    async fn the_adapter_never_buffers_past_its_limit() {
        let mut rewriter = LongUriRewriter::new(Script(vec![vec![b'a'; 10 * LIMIT]].into()), LIMIT);
        let mut buf = vec![0; 1024];
        let n = rewriter.read(&mut buf).await.unwrap();
        assert!(n > 0);
        assert!(
            rewriter.input.data.len() <= LIMIT + 1 + READ_CHUNK,
            "{}",
            rewriter.input.data.len()
        );
        assert_eq!(rewriter.mode, Mode::Passthrough);
    }

    #[tokio::test]
    async fn client_sent_message_headers_are_dropped() {
        let short = b"GET /scep?operation=PKIOperation HTTP/1.1\r\nX-Scepd-Message: forged\r\nHost: h\r\nx-scepd-message:x\r\n\r\n";
        let mut stream = short.to_vec();
        stream.extend_from_slice(SHORT_GET);
        let mut want = b"GET /scep?operation=PKIOperation HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
        want.extend_from_slice(SHORT_GET);
        assert_eq!(run_whole(&stream).await, want);
        assert_eq!(run(bytewise(&stream), 1).await, want);
        // With a long target: only the moved value remains.
        let value = long_value(20 * 1024);
        let head = format!("GET /scep?operation=PKIOperation&message={value} HTTP/1.1\r\nx-scepd-message: forged\r\nHost: scep.example\r\nUser-Agent: test\r\n\r\n");
        assert_eq!(run_whole(head.as_bytes()).await, long_get_rewritten(&value));
    }

    #[tokio::test]
    async fn invalid_heads_and_early_eof_pass_unchanged() {
        let value = long_value(20 * 1024);
        let mut stream =
            format!("GET /scep?message={value} HTTP/1.1\r\nbad header\r\n\r\n").into_bytes();
        stream.extend_from_slice(&long_get(&value));
        assert_eq!(run_whole(&stream).await, stream);
        let truncated = format!("GET /scep?message={value} HTTP/1.1\r\nHost: h\r\n").into_bytes();
        assert_eq!(run(bytewise(&truncated), 100).await, truncated);
        let mut body_cut = b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc".to_vec();
        assert_eq!(run_whole(&body_cut).await, body_cut);
        body_cut.clear();
        assert_eq!(run_whole(&body_cut).await, body_cut);
    }

    #[tokio::test]
    async fn writes_pass_through() {
        use tokio::io::AsyncWriteExt;
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut server = LongUriRewriter::new(server, LIMIT);
        let mut client = client;
        let value = long_value(70 * 1024);
        client.write_all(&long_get(&value)).await.unwrap();
        let mut got = vec![0; long_get_rewritten(&value).len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, long_get_rewritten(&value));
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        server.flush().await.unwrap();
        let mut answer = [0; 19];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[test]
    fn head_end_search_resumes() {
        let head = b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest";
        for scanned in 0..=head.len() - 4 {
            assert_eq!(find_head_end(head, scanned.min(22)), Some(24), "{scanned}");
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", 0), None);
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"18446744073709551616"), None);
    }
}
