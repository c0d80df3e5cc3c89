//! The webhook verifier (`[challenge] type = "webhook"`): POST the request's details as JSON
//! to a configured URL and obey the answer.
//!
//! Request (`Content-Type: application/json`):
//!
//! ```json
//! {"version": 1, "template": "devices", "transaction_id": "...", "subject": "CN=dev,O=Example",
//!  "sans": ["dns:dev.example.com"], "key": {"type": "rsa", "bits": 2048},
//!  "challenge": "...", "timestamp": 1700000000}
//! ```
//!
//! With `secret_file`, two headers let the receiver authenticate scepd:
//! `X-Scepd-Timestamp: <unix seconds>` and
//! `X-Scepd-Signature: sha256=<lowercase hex HMAC-SHA256(key, timestamp + "." + body)>`.
//!
//! A 2xx answer whose JSON body has `"allow": true` approves. Optional `subject` and `sans`
//! in the answer are checks, not rewrites: they must equal the CSR's (subject as the same
//! RFC 4514 string, SANs as the same set of `type:value`), else the request is denied. An
//! answer carrying `validity_days` is denied: the RA cannot narrow validity (it refuses
//! constraints it cannot enforce). Everything else (another status, `allow` false or missing,
//! a body that is not such JSON, no complete answer within `timeout_ms`, a connection
//! failure) denies; the reason goes to the request log, never the challenge.
//!
//! https verifies the server's certificate chain and name against the system's trusted CAs,
//! or only against the certificates of `ca_file` when set (an internal CA).
//!
//! The client is a small blocking HTTP/1.1 client on `std::net` (and openssl for https),
//! run on a helper thread that `evaluate` waits for with `recv_timeout`: `evaluate` is
//! synchronous and runs on tokio's blocking pool, and waiting on a channel bounds the whole
//! exchange (name resolution included, which socket timeouts do not cover) without needing
//! a runtime handle. The helper's sockets carry the same timeout, so it ends soon after.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use der::{Decode, Encode};
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use scepd_policy::{Approval, Decision, DenialReason, PolicyInput, PolicyModule};
use serde::{Deserialize, Serialize};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::request::CertReq;

use crate::config::WebhookConfig;

/// Largest answer read from the webhook (status line, headers and body).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Header with the Unix time the request was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Scepd-Timestamp";
/// Header with `sha256=<hex HMAC-SHA256(key, timestamp + "." + body)>`.
pub const SIGNATURE_HEADER: &str = "X-Scepd-Signature";

/// Where the webhook lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// https.
    pub tls: bool,
    /// Host name or IP address (without IPv6 brackets).
    pub host: String,
    /// Port (default 80 or 443).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]` or `https://...`; no user info, no fragment.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("must start with https:// or http://".into());
        };
        if url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
        {
            return Err("must not contain spaces, control characters or '#'".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("must not contain user information".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed '[' in host")?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// The JSON body scepd POSTs.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookRequest {
    /// Format version: 1.
    pub version: u32,
    /// The template the request was routed to.
    pub template: String,
    /// The SCEP transactionID.
    pub transaction_id: String,
    /// The CSR's subject, RFC 4514.
    pub subject: String,
    /// The CSR's requested SANs, `type:value` (dns, email, upn, uri, ip).
    pub sans: Vec<String>,
    /// The CSR's public key.
    pub key: KeyInfo,
    /// The CSR's challengePassword, if any.
    pub challenge: Option<String>,
    /// When scepd asked, Unix seconds.
    pub timestamp: u64,
}

/// Key type and size.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyInfo {
    /// `rsa`, `ec` or `unknown`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Modulus size (RSA) or field size (EC), in bits.
    pub bits: u32,
}

/// The answer scepd expects.
#[derive(Debug, Deserialize)]
struct WebhookAnswer {
    allow: Option<bool>,
    subject: Option<String>,
    sans: Option<Vec<String>>,
    validity_days: Option<u32>,
}

/// The webhook verifier of one template.
pub struct WebhookVerifier {
    target: Target,
    timeout: Duration,
    hmac_key: Option<Vec<u8>>,
    /// For https: the system's trusted CAs, or only those of `ca_file`.
    tls: Option<SslConnector>,
}

impl WebhookVerifier {
    /// A verifier for a validated configuration; `Err` only for a URL that does not parse
    /// (config validation already refused those).
    pub fn new(config: &WebhookConfig) -> Result<Self, String> {
        let target = Target::parse(&config.url)?;
        let tls = if target.tls {
            Some(connector(config.ca_pem.as_deref()).map_err(|e| format!("TLS: {e}"))?)
        } else {
            None
        };
        Ok(Self {
            target,
            timeout: config.timeout,
            hmac_key: config.hmac_key.clone(),
            tls,
        })
    }

    /// The headers and body of one call.
    fn prepare(&self, input: &PolicyInput<'_>) -> Result<(Vec<u8>, Vec<String>), String> {
        let timestamp = input
            .now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let body = WebhookRequest {
            version: 1,
            template: input.template.to_owned(),
            transaction_id: input.transaction_id.to_owned(),
            subject: scepd_ca::format_dn(&input.csr.info.subject),
            sans: requested_sans(input.csr)?,
            key: key_info(input.csr),
            challenge: input.challenge.map(str::to_owned),
            timestamp,
        };
        let body = serde_json::to_vec(&body).map_err(|e| format!("encode: {e}"))?;
        let mut headers = Vec::new();
        if let Some(key) = &self.hmac_key {
            headers.push(format!("{TIMESTAMP_HEADER}: {timestamp}"));
            headers.push(format!(
                "{SIGNATURE_HEADER}: sha256={}",
                hex::encode(sign(key, timestamp, &body)?)
            ));
        }
        Ok((body, headers))
    }
}

/// A TLS client that verifies the server's certificate and name, against `ca_pem`'s
/// certificates only when given, else the system's trusted CAs.
pub(crate) fn connector(ca_pem: Option<&[u8]>) -> Result<SslConnector, openssl::error::ErrorStack> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    if let Some(pem) = ca_pem {
        let mut store = X509StoreBuilder::new()?;
        for cert in X509::stack_from_pem(pem)? {
            store.add_cert(cert)?;
        }
        builder.set_cert_store(store.build());
    }
    Ok(builder.build())
}

/// HMAC-SHA256(key, timestamp + "." + body).
pub fn sign(key: &[u8], timestamp: u64, body: &[u8]) -> Result<Vec<u8>, String> {
    let key = openssl::pkey::PKey::hmac(key).map_err(|e| e.to_string())?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)
        .map_err(|e| e.to_string())?;
    signer
        .update(format!("{timestamp}.").as_bytes())
        .and_then(|()| signer.update(body))
        .map_err(|e| e.to_string())?;
    signer.sign_to_vec().map_err(|e| e.to_string())
}

impl PolicyModule for WebhookVerifier {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn evaluate(&self, input: &PolicyInput<'_>) -> Decision {
        let (body, headers) = match self.prepare(input) {
            Ok(prepared) => prepared,
            Err(e) => {
                return Decision::deny(
                    DenialReason::ProfileRule,
                    format!("webhook: the CSR cannot be described: {e}"),
                )
            }
        };
        let answer = call(&self.target, self.tls.clone(), self.timeout, headers, body);
        let (status, answer_body) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                return Decision::deny(DenialReason::Unavailable, format!("webhook: {e}"));
            }
        };
        if !(200..300).contains(&status) {
            return Decision::deny(
                DenialReason::WrongChallenge,
                format!("webhook answered HTTP {status}"),
            );
        }
        let answer: WebhookAnswer = match serde_json::from_slice(&answer_body) {
            Ok(answer) => answer,
            Err(e) => {
                return Decision::deny(
                    DenialReason::Unavailable,
                    format!("webhook answer is not the expected JSON: {e}"),
                )
            }
        };
        judge(&answer, input)
    }
}

/// The decision an answer means for this request.
fn judge(answer: &WebhookAnswer, input: &PolicyInput<'_>) -> Decision {
    if answer.allow != Some(true) {
        return Decision::deny(
            DenialReason::WrongChallenge,
            "webhook did not allow the request",
        );
    }
    if answer.validity_days.is_some() {
        return Decision::deny(
            DenialReason::ProfileRule,
            "webhook answer narrows validity_days, which scepd does not support",
        );
    }
    if let Some(subject) = &answer.subject {
        if *subject != scepd_ca::format_dn(&input.csr.info.subject) {
            return Decision::deny(
                DenialReason::NameMismatch,
                "the CSR's subject differs from the webhook's",
            );
        }
    }
    if let Some(sans) = &answer.sans {
        let mut expected = sans.clone();
        expected.sort();
        expected.dedup();
        let mut requested = requested_sans(input.csr).unwrap_or_default();
        requested.sort();
        requested.dedup();
        if expected != requested {
            return Decision::deny(
                DenialReason::NameMismatch,
                "the CSR's SANs differ from the webhook's",
            );
        }
    }
    Decision::Approve(Approval::unconstrained())
}

/// The SANs the CSR asks for (extensionRequest), as `type:value`.
fn requested_sans(csr: &CertReq) -> Result<Vec<String>, String> {
    let mut sans = Vec::new();
    let requests = csr
        .info
        .attributes
        .iter()
        .filter(|a| a.oid == crate::scep::oids::EXTENSION_REQUEST);
    for attribute in requests {
        for value in attribute.values.iter() {
            let der = value.to_der().map_err(|e| e.to_string())?;
            let extensions =
                x509_cert::ext::Extensions::from_der(&der).map_err(|e| e.to_string())?;
            for extension in extensions
                .iter()
                .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME)
            {
                let san = SubjectAltName::from_der(extension.extn_value.as_bytes())
                    .map_err(|e| e.to_string())?;
                sans.extend(san.0.iter().map(describe));
            }
        }
    }
    Ok(sans)
}

/// `type:value` of one GeneralName (as the certificate listing prints them).
fn describe(name: &GeneralName) -> String {
    match name {
        GeneralName::DnsName(v) => format!("dns:{}", v.as_str()),
        GeneralName::Rfc822Name(v) => format!("email:{}", v.as_str()),
        GeneralName::UniformResourceIdentifier(v) => format!("uri:{}", v.as_str()),
        GeneralName::IpAddress(ip) => {
            let bytes = ip.as_bytes();
            let text = if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
                std::net::Ipv4Addr::from(v4).to_string()
            } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
                std::net::Ipv6Addr::from(v6).to_string()
            } else {
                hex::encode(bytes)
            };
            format!("ip:{text}")
        }
        GeneralName::OtherName(other)
            if other.type_id
                == const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.3") =>
        {
            match der::asn1::Utf8StringRef::try_from(&other.value) {
                Ok(upn) => format!("upn:{}", upn.as_str()),
                Err(_) => format!("othername:{}", other.type_id),
            }
        }
        GeneralName::OtherName(other) => format!("othername:{}", other.type_id),
        GeneralName::DirectoryName(n) => format!("dirname:{}", scepd_ca::format_dn(n)),
        GeneralName::EdiPartyName(_) => "edipartyname:".into(),
        GeneralName::RegisteredId(id) => format!("rid:{id}"),
    }
}

fn key_info(csr: &CertReq) -> KeyInfo {
    match scepd_ca::public_key_from_spki(&csr.info.public_key) {
        Ok(key) => KeyInfo {
            kind: match key.id() {
                openssl::pkey::Id::RSA => "rsa",
                openssl::pkey::Id::EC => "ec",
                _ => "unknown",
            }
            .into(),
            bits: key.bits(),
        },
        Err(_) => KeyInfo {
            kind: "unknown".into(),
            bits: 0,
        },
    }
}

/// One POST of JSON, bounded by `timeout` as a whole: (status, body).
fn call(
    target: &Target,
    tls: Option<SslConnector>,
    timeout: Duration,
    headers: Vec<String>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    send(
        target,
        tls,
        timeout,
        ("POST", Some("application/json")),
        headers,
        body,
    )
}

/// One request (`method` and the body's content type, if any), bounded by `timeout` as a
/// whole: (status, body). Also the connectors' client (`crate::connector::http`).
pub(crate) fn send(
    target: &Target,
    tls: Option<SslConnector>,
    timeout: Duration,
    (method, content_type): (&'static str, Option<&'static str>),
    headers: Vec<String>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let (tx, rx) = mpsc::sync_channel(1);
    let target_for_thread = target.clone();
    let started = Instant::now();
    std::thread::Builder::new()
        .name("scepd-webhook".into())
        .spawn(move || {
            let result = exchange(
                &target_for_thread,
                tls.as_ref(),
                timeout,
                (method, content_type),
                &headers,
                &body,
                started,
            );
            // The caller may have stopped waiting: nothing to do then.
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start the webhook call: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "no answer from {}:{} within {} ms",
            target.host,
            target.port,
            timeout.as_millis()
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the webhook call ended".into()),
    }
}

fn exchange(
    target: &Target,
    tls: Option<&SslConnector>,
    timeout: Duration,
    (method, content_type): (&str, Option<&str>),
    headers: &[String],
    body: &[u8],
    started: Instant,
) -> Result<(u16, Vec<u8>), String> {
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
    let mut request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: scepd/{}\r\nContent-Length: {}\r\nConnection: close\r\n",
        target.path,
        target.host_header(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    if let Some(content_type) = content_type {
        request.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    }
    for header in headers {
        request.extend_from_slice(header.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    match tls {
        Some(connector) => {
            // Verifies the certificate chain and that it names the host (or IP address).
            let mut tls = connector
                .connect(&target.host, stream)
                .map_err(|e| format!("TLS with {}: {e}", target.host))?;
            round_trip(&mut tls, &request, started, timeout)
        }
        None if target.tls => Err("https without a TLS client".into()),
        None => {
            let mut stream = stream;
            round_trip(&mut stream, &request, started, timeout)
        }
    }
}

fn round_trip<S: Read + Write>(
    stream: &mut S,
    request: &[u8],
    started: Instant,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    // Bounded by size and by time; each read also by the socket's read timeout.
    loop {
        if started.elapsed() > timeout {
            return Err("timed out".into());
        }
        if let Some(parsed) = parse_answer(&answer)? {
            return Ok(parsed);
        }
        let n = match stream.read(&mut buffer) {
            Ok(n) => n,
            Err(e) => return Err(format!("receive: {e}")),
        };
        if n == 0 {
            return parse_answer_at_eof(&answer);
        }
        answer.extend_from_slice(buffer.get(..n).unwrap_or_default());
        if answer.len() > MAX_ANSWER_BYTES {
            return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
        }
    }
}

/// A complete answer in `bytes`, if there is one yet (Content-Length or chunked).
fn parse_answer(bytes: &[u8]) -> Result<Option<(u16, Vec<u8>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let header_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("answer is not HTTP: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let rest = bytes.get(header_len..).unwrap_or_default();
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Ok(dechunk(rest)?.map(|body| (status, body)));
    }
    match header("content-length") {
        Some(length) => {
            let length: usize = length
                .parse()
                .map_err(|_| "bad Content-Length in the answer".to_owned())?;
            Ok(rest.get(..length).map(|body| (status, body.to_vec())))
        }
        None => Ok(None),
    }
}

/// At end of stream: an answer without length ends here.
fn parse_answer_at_eof(bytes: &[u8]) -> Result<(u16, Vec<u8>), String> {
    if let Some(parsed) = parse_answer(bytes)? {
        return Ok(parsed);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => {
            let chunked_or_sized = response.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("content-length")
                    || h.name.eq_ignore_ascii_case("transfer-encoding")
            });
            if chunked_or_sized {
                return Err("the answer ended early".into());
            }
            Ok((
                response.code.unwrap_or(0),
                bytes.get(n..).unwrap_or_default().to_vec(),
            ))
        }
        _ => Err("the connection closed before a complete answer".into()),
    }
}

/// A chunked body, once complete.
fn dechunk(mut bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    // Each round consumes at least one line; the input is bounded by MAX_ANSWER_BYTES.
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

/// Entry point for the cargo-fuzz target `webhook_answer` (design rule 5). Not API.
#[doc(hidden)]
pub mod fuzzing {
    /// Reads `bytes` as a webhook's HTTP answer, complete or cut at end of stream, and its
    /// body as the JSON answer; must never panic.
    pub fn answer(bytes: &[u8]) {
        let parsed = match super::parse_answer(bytes) {
            Ok(Some(parsed)) => Some(parsed),
            _ => super::parse_answer_at_eof(bytes).ok(),
        };
        if let Some((_, body)) = parsed {
            let _ = serde_json::from_slice::<super::WebhookAnswer>(&body);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_knows_loopback() {
        let t = Target::parse("http://127.0.0.1:8089/hook?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8089,
                path: "/hook?x=1".into()
            }
        );
        assert!(t.is_loopback());
        let t = Target::parse("https://mdm.example.com").unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.is_loopback()),
            (443, "/", false)
        );
        let t = Target::parse("http://[::1]:9/").unwrap();
        assert!(t.is_loopback());
        assert_eq!(t.host_header(), "[::1]:9");
        assert!(Target::parse("http://localhost/").unwrap().is_loopback());
        for bad in [
            "ftp://x/",
            "http://",
            "http://u:p@host/",
            "http://host:0/",
            "http://host:99999/",
            "http://host/a b",
            "http://[::1/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_sized_chunked_and_unsized_answers() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdEXTRA";
        assert_eq!(parse_answer(sized).unwrap(), Some((200, b"abcd".to_vec())));
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab").unwrap(),
            None
        );
        let chunked =
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_answer(chunked).unwrap(),
            Some((403, b"abcde".to_vec()))
        );
        let unsized_answer = b"HTTP/1.0 200 OK\r\n\r\n{\"allow\":true}";
        assert_eq!(parse_answer(unsized_answer).unwrap(), None);
        assert_eq!(
            parse_answer_at_eof(unsized_answer).unwrap(),
            (200, b"{\"allow\":true}".to_vec())
        );
        assert!(parse_answer_at_eof(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    /// The fuzz seeds, and a bounded set of mutations of them, through the fuzz entry point.
    #[test]
    fn fuzz_seeds_and_mutations_never_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/webhook_answer");
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert!(seeds.len() >= 3);
        seeds.push(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab".to_vec(),
        );
        for seed in &seeds {
            super::fuzzing::answer(seed);
            for cut in 0..seed.len().min(200) {
                super::fuzzing::answer(&seed[..cut]);
            }
            for (i, flip) in
                (0..seed.len().min(300)).zip([0x01u8, 0x80, 0xff, 0x30, 0x0d].iter().cycle())
            {
                let mut mutated = seed.clone();
                mutated[i] ^= flip;
                super::fuzzing::answer(&mutated);
            }
        }
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // RFC 4231 style check against openssl's command-line independent value.
        let mac = sign(b"key", 1, b"{}").unwrap();
        let key = openssl::pkey::PKey::hmac(b"key").unwrap();
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        signer.update(b"1.{}").unwrap();
        assert_eq!(mac, signer.sign_to_vec().unwrap());
        assert_eq!(mac.len(), 32);
    }
}
