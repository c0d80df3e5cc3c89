//! A small blocking HTTP/1.1 client for the upstream SCEP server: GET and POST, one request
//! per connection (`Connection: close`), bounded in size and in time.
//!
//! `CaBackend::issue` is synchronous and runs on tokio's blocking pool, so a blocking client
//! is the right shape. Every exchange runs on a helper thread that the caller waits for with
//! `recv_timeout`: that bounds the whole exchange, name resolution included (which socket
//! timeouts do not cover). The helper's sockets carry the same timeout, so it ends soon after.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;

use crate::verifiers::webhook::Target;

/// The largest answer read (a GetCACert with a long chain, a CertRep with a chain).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// An upstream endpoint: the parsed URL, its TLS client (https) and the timeout of one
/// exchange.
#[derive(Clone)]
pub struct Endpoint {
    target: Target,
    tls: Option<SslConnector>,
    timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One answer: status, Content-Type (lowercase, may be empty) and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Content-Type, lowercased.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Endpoint {
    /// Parses `url` (`http://` or `https://`, e.g. `http://ca.example/scep`); for https the
    /// server's certificate must chain to the certificates in `ca_pem` when given, else to
    /// the system's trusted CAs.
    pub fn new(url: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, String> {
        let target = Target::parse(url)?;
        if target.path.contains('?') {
            return Err("must not carry a query (scepd adds ?operation=...)".into());
        }
        let tls = if target.tls {
            Some(connector(ca_pem).map_err(|e| format!("TLS client: {e}"))?)
        } else {
            None
        };
        Ok(Self {
            target,
            tls,
            timeout,
        })
    }

    /// `GET <path>?<query>`.
    pub fn get(&self, query: &str) -> Result<Answer, String> {
        let head = format!("GET {}?{query} HTTP/1.1\r\n", self.target.path);
        self.call(head, None, Vec::new())
    }

    /// `POST <path>?<query>` with a binary body.
    pub fn post(&self, query: &str, body: Vec<u8>) -> Result<Answer, String> {
        let head = format!("POST {}?{query} HTTP/1.1\r\n", self.target.path);
        self.call(head, Some("application/x-pki-message"), body)
    }

    fn call(
        &self,
        head: String,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let mut request = head;
        request.push_str(&format!(
            "Host: {}\r\nUser-Agent: scepd/{}\r\nAccept: */*\r\nConnection: close\r\n",
            host_header(&self.target),
            env!("CARGO_PKG_VERSION")
        ));
        if let Some(content_type) = content_type {
            request.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(&body);
        let (tx, rx) = mpsc::sync_channel(1);
        let target = self.target.clone();
        let tls = self.tls.clone();
        let timeout = self.timeout;
        let started = Instant::now();
        std::thread::Builder::new()
            .name("scepd-upstream".into())
            .spawn(move || {
                let result = exchange(&target, tls.as_ref(), timeout, &request, started);
                // The caller may have stopped waiting: nothing to do then.
                let _ = tx.send(result);
            })
            .map_err(|e| format!("cannot start the upstream call: {e}"))?;
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "no answer from {}:{} within {} ms",
                self.target.host,
                self.target.port,
                timeout.as_millis()
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the upstream call ended".into()),
        }
    }
}

fn host_header(target: &Target) -> String {
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    match (target.tls, target.port) {
        (true, 443) | (false, 80) => host,
        _ => format!("{host}:{}", target.port),
    }
}

fn connector(ca_pem: Option<&[u8]>) -> Result<SslConnector, openssl::error::ErrorStack> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    if let Some(pem) = ca_pem {
        let mut store = X509StoreBuilder::new()?;
        for cert in X509::stack_from_pem(pem)? {
            store.add_cert(cert)?;
        }
        builder.set_verify_cert_store(store.build())?;
    }
    Ok(builder.build())
}

fn exchange(
    target: &Target,
    tls: Option<&SslConnector>,
    timeout: Duration,
    request: &[u8],
    started: Instant,
) -> Result<Answer, String> {
    let address = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", target.host))?
        .next()
        .ok_or_else(|| format!("resolve {}: no address", target.host))?;
    let remaining = timeout
        .checked_sub(started.elapsed())
        .filter(|d| !d.is_zero())
        .ok_or("timed out")?;
    let stream = TcpStream::connect_timeout(&address, remaining)
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    match tls {
        Some(connector) => {
            let mut tls = connector
                .connect(&target.host, stream)
                .map_err(|e| format!("TLS with {}: {e}", target.host))?;
            round_trip(&mut tls, request, started, timeout)
        }
        None if target.tls => Err("https without a TLS client".into()),
        None => {
            let mut stream = stream;
            round_trip(&mut stream, request, started, timeout)
        }
    }
}

fn round_trip<S: Read + Write>(
    stream: &mut S,
    request: &[u8],
    started: Instant,
    timeout: Duration,
) -> Result<Answer, String> {
    stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 16384];
    loop {
        if started.elapsed() > timeout {
            return Err("timed out".into());
        }
        if let Some(parsed) = parse_answer(&answer, false)? {
            return Ok(parsed);
        }
        let n = stream
            .read(&mut buffer)
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            return parse_answer(&answer, true)?
                .ok_or_else(|| "the connection closed before a complete answer".to_owned());
        }
        answer.extend_from_slice(buffer.get(..n).unwrap_or_default());
        if answer.len() > MAX_ANSWER_BYTES {
            return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
        }
    }
}

/// A complete answer in `bytes`, if there is one (Content-Length, chunked, or, at end of
/// stream, everything after the headers).
fn parse_answer(bytes: &[u8], at_eof: bool) -> Result<Option<Answer>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let header_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("answer is not HTTP: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let content_type = header("content-type").unwrap_or_default();
    let rest = bytes.get(header_len..).unwrap_or_default();
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| "bad Content-Length in the answer".to_owned())?;
        match rest.get(..length) {
            Some(body) => Some(body.to_vec()),
            None if at_eof => return Err("the answer ended early".into()),
            None => None,
        }
    } else if at_eof {
        Some(rest.to_vec())
    } else {
        None
    };
    Ok(body.map(|body| Answer {
        status,
        content_type,
        body,
    }))
}

/// A chunked body, once complete.
fn dechunk(mut bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(bytes.get(..line_end).unwrap_or_default());
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| "bad chunk size in the answer".to_owned())?;
        let data_start = line_end + 2;
        if size == 0 {
            return Ok(Some(body));
        }
        let data_end = data_start.checked_add(size).ok_or("chunk size overflows")?;
        let Some(data) = bytes.get(data_start..data_end) else {
            return Ok(None);
        };
        body.extend_from_slice(data);
        let after_data = data_end.checked_add(2).ok_or("chunk size overflows")?;
        let Some(after) = bytes.get(after_data..) else {
            return Ok(None);
        };
        bytes = after;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_sized_chunked_and_no_length_answers() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc";
        let answer = parse_answer(sized, false).unwrap().unwrap();
        assert_eq!((answer.status, answer.body), (200, b"abc".to_vec()));
        assert_eq!(answer.content_type, "text/plain");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        assert_eq!(parse_answer(chunked, false).unwrap().unwrap().body, b"abc");
        let no_length = b"HTTP/1.1 200 OK\r\n\r\nabc";
        assert!(parse_answer(no_length, false).unwrap().is_none());
        assert_eq!(parse_answer(no_length, true).unwrap().unwrap().body, b"abc");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", true).is_err());
        assert!(parse_answer(b"garbage\r\n\r\n", true).is_err());
    }

    #[test]
    fn urls_with_a_query_are_refused() {
        assert!(
            Endpoint::new("http://127.0.0.1:1/scep?x=1", None, Duration::from_secs(1)).is_err()
        );
        assert!(Endpoint::new("ftp://x/scep", None, Duration::from_secs(1)).is_err());
        assert!(Endpoint::new("http://127.0.0.1:1/scep", None, Duration::from_secs(1)).is_ok());
    }
}
