//! Over-long GET PKIOperation request lines through the real server: `scepd serve` as a child
//! process on a loopback port, spoken to with a raw socket, so hyper, `http::long_uri` and
//! `App::handle` all take part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scepd::scep::client::{self, PreparedRequest};
use scepd::scep::csr::{CsrSpec, San};
use scepd::scep::PkiStatus;
use support::{base64_encode, options, Device, Setup, CHALLENGE};

const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `scepd serve`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    recipient: Vec<u8>,
    reply_signer: Vec<u8>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = support::init_dir(dir.path(), &Setup::default());
        let addr = free_port();
        let admin = free_port();
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains("listen = \"127.0.0.1:0\"")
                && text.matches("listen = \"127.0.0.1:0\"").count() == 2
        );
        let text = text
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{addr}\""),
                1,
            )
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{admin}\""),
                1,
            );
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            addr,
            _dir: dir,
            recipient: Vec::new(),
            reply_signer: Vec::new(),
        };
        server.wait_healthy(dir_of(&config));
        let (status, _, body) = server.exchange_one(&get("/scep?operation=GetCACert"));
        assert_eq!(status, 200);
        let certs = client::parse_ca_certs(&body).unwrap();
        let (recipient, reply_signer) = client::select_ra_certs(&certs).unwrap();
        server.recipient = recipient;
        server.reply_signer = reply_signer;
        server
    }

    fn wait_healthy(&mut self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "scepd serve exited with {status} (config in {})",
                    dir.display()
                );
            }
            if let Ok(mut stream) = TcpStream::connect(self.addr) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                if stream.write_all(&get("/healthz")).is_ok() {
                    if let Ok((200, _, _)) = read_response(&mut stream) {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "scepd did not answer /healthz within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
    }

    /// One request on a fresh connection.
    fn exchange_one(&self, request: &[u8]) -> (u16, String, Vec<u8>) {
        let mut stream = self.connect();
        stream.write_all(request).unwrap();
        read_response(&mut stream).unwrap()
    }
}

fn dir_of(config: &Path) -> &Path {
    config.parent().unwrap()
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: scep.test\r\nUser-Agent: long-uri-test\r\n\r\n")
        .into_bytes()
}

/// Reads one Content-Length framed response: (status, content type, body). Nothing may
/// follow it: for pipelined responses use [`read_pipelined_response`].
fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut carry = Vec::new();
    let response = read_pipelined_response(stream, &mut carry)?;
    assert!(
        carry.is_empty(),
        "no bytes past the body before the next request"
    );
    Ok(response)
}

/// Reads one response of several pipelined on `stream`. Pipelined responses can arrive in one
/// read: bytes past this response's body are left in `carry` for the next call.
fn read_pipelined_response(
    stream: &mut TcpStream,
    carry: &mut Vec<u8>,
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut received = std::mem::take(carry);
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let header = |name: &str| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("Content-Length framing");
    let mut body = received[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&buf[..n]);
    }
    *carry = body.split_off(length);
    Ok((status, header("content-type").unwrap_or_default(), body))
}

/// A real PKCSReq made large by `sans` DNS names (the CA bounds CSR size), and its
/// base64, percent-encoded as clients do (`+`, `/`, `=` escaped). When that is shorter than
/// `min_len`, leading characters are escaped too (`%41` for `A`: valid, and some clients
/// escape everything) until it is `min_len` long, so the length does not hinge on the CSR limit.
fn long_request(
    server: &Server,
    device: &Device,
    transaction: &str,
    sans: usize,
    min_len: usize,
) -> (PreparedRequest, String) {
    let hosts: Vec<San> = (0..sans)
        .map(|i| San::Dns(format!("host-{i:05}.devices.example.com")))
        .collect();
    let csr = device.csr(&CsrSpec {
        subject: "CN=long-uri",
        sans: &hosts,
        challenge: Some(CHALLENGE),
        ..CsrSpec::default()
    });
    let request = client::build_request(
        &csr,
        &server.recipient,
        &device.signer,
        &options(transaction),
    )
    .unwrap();
    let b64 = base64_encode(&request.der);
    let mut escaped =
        percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut chars = b64.bytes();
    let mut prefix = String::new();
    while prefix.len() + escaped.len() < min_len {
        let Some(c) = chars.next() else { break };
        let plain = percent_encoding::utf8_percent_encode(
            std::str::from_utf8(&[c]).unwrap(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        prefix.push_str(&format!("%{c:02X}"));
        escaped.replace_range(..plain.len(), "");
    }
    prefix.push_str(&escaped);
    (request, prefix)
}

fn assert_enrolled(
    server: &Server,
    device: &Device,
    request: &PreparedRequest,
    answer: (u16, String, Vec<u8>),
) {
    let (status, content_type, body) = answer;
    assert_eq!(status, 200, "body: {}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/x-pki-message");
    let view = client::read_cert_rep(&body, request, &server.reply_signer, &device.signer)
        .expect("a valid CertRep");
    assert_eq!(
        view.status,
        PkiStatus::Success,
        "failInfo {:?} {:?}",
        view.fail_info,
        view.fail_info_text
    );
    assert!(!view.certs.is_empty());
}

#[test]
fn a_get_pkioperation_over_100_kib_enrolls() {
    let server = Server::start();
    let device = Device::rsa(2048);
    let (request, message) = long_request(&server, &device, "tx-long-uri-100k", 1800, 110 * 1024);
    let wire = get(&format!("/scep?operation=PKIOperation&message={message}"));
    let request_line = wire.iter().position(|&b| b == b'\r').unwrap();
    assert!(
        request_line > 100 * 1024,
        "request line is {request_line} bytes"
    );
    assert!(
        wire.len() < 128 * 1024,
        "must stay within the default limit"
    );
    let answer = server.exchange_one(&wire);
    assert_enrolled(&server, &device, &request, answer);
}

#[test]
fn a_request_line_over_the_limit_gets_a_4xx() {
    let server = Server::start();
    let padding = "A".repeat(200 * 1024);
    let wire = get(&format!("/scep?operation=PKIOperation&message={padding}"));
    let mut stream = server.connect();
    // The server may stop reading once it has refused the head; a failed write is fine.
    let _ = stream.write_all(&wire);
    let (status, _, _) = read_response(&mut stream).expect("an answer, not a reset or a hang");
    assert!((400..500).contains(&status), "status {status}");
    // The server is still fine.
    let (status, _, body) = server.exchange_one(&get("/scep?operation=GetCACaps"));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("POSTPKIOperation"));
}

#[test]
fn keep_alive_serves_a_long_get_then_get_ca_caps() {
    let server = Server::start();
    let device = Device::rsa(2048);
    let (request, message) = long_request(&server, &device, "tx-long-uri-keepalive", 1500, 0);
    let long = get(&format!("/scep?operation=PKIOperation&message={message}"));
    assert!(long.len() > 65 * 1024, "past http::Uri's cap");
    let mut stream = server.connect();
    stream.write_all(&long).unwrap();
    assert_enrolled(
        &server,
        &device,
        &request,
        read_response(&mut stream).unwrap(),
    );
    stream.write_all(&get("/scep?operation=GetCACaps")).unwrap();
    let (status, _, body) = read_response(&mut stream).unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("POSTPKIOperation"));
    // Pipelined on the same connection: a long GET (a retry of the same transaction) and a
    // GetCACaps in one write.
    let mut both = long.clone();
    both.extend_from_slice(&get("/scep?operation=GetCACaps"));
    stream.write_all(&both).unwrap();
    let mut carry = Vec::new();
    assert_enrolled(
        &server,
        &device,
        &request,
        read_pipelined_response(&mut stream, &mut carry).unwrap(),
    );
    let (status, _, body) = read_pipelined_response(&mut stream, &mut carry).unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("POSTPKIOperation"));
    assert!(carry.is_empty());
}
