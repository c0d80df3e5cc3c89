//! One-time passwords and the webhook verifier, end to end: enrollments through `App::handle`
//! with the project's SCEP client, and a real `scepd serve` for `scepd challenge otp`, the
//! admin API endpoint and NDES's `/certsrv/mscep_admin/` page as an MDM (Fleet) scrapes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use scepd::config::OtpConfig;
use scepd::scep::client::{self, CertRepView};
use scepd::scep::csr::San;
use scepd::scep::{FailInfo, PkiStatus};
use scepd::verifiers::otp;
use support::*;

fn assert_success(view: &CertRepView) {
    assert_eq!(
        view.status,
        PkiStatus::Success,
        "{:?} {:?}",
        view.fail_info,
        view.fail_info_text
    );
    assert!(!view.certs.is_empty());
}

fn assert_bad_request(view: &CertRepView) {
    assert_eq!(view.status, PkiStatus::Failure, "expected a FAILURE");
    assert_eq!(view.fail_info, Some(FailInfo::BadRequest));
}

/// A PKCSReq for a fresh RSA key with `challenge`, through `App::handle`.
fn enroll(instance: &Instance, path: &str, cn: &str, tx: &str, challenge: &str) -> CertRepView {
    let device = Device::rsa(2048);
    let csr = device.simple_csr(cn, challenge);
    instance.exchange(
        path,
        Via::Post,
        &prepare(instance, &device, &csr, &options(tx)),
        &device.signer,
    )
}

fn otp_template(ttl_minutes: u64, max_outstanding: usize) -> String {
    format!(
        "[challenge]\ntype = \"otp\"\nttl_minutes = {ttl_minutes}\nmax_outstanding = {max_outstanding}\n\n\
         [issuance]\nvalidity_days = 30\n"
    )
}

fn otp_instance() -> Instance {
    Instance::new(Setup {
        templates: vec![("otp", otp_template(60, 5)), ("otp2", otp_template(60, 5))],
        ..Setup::default()
    })
}

fn settings() -> OtpConfig {
    OtpConfig {
        ttl: Duration::from_secs(3600),
        max_outstanding: 5,
    }
}

fn mint(instance: &Instance, template: &str, now: SystemTime) -> String {
    let store = instance.app.enroller().store();
    otp::mint(&**store, template, &settings(), now)
        .unwrap()
        .password
}

#[test]
fn a_one_time_password_enrolls_once_on_its_own_template_until_it_expires() {
    let instance = otp_instance();
    let password = mint(&instance, "otp", SystemTime::now());
    assert_success(&enroll(
        &instance,
        "/scep/otp",
        "otp-1",
        "otp-tx-1",
        &password,
    ));
    // Used: a second device with the same password is refused.
    assert_bad_request(&enroll(
        &instance,
        "/scep/otp",
        "otp-2",
        "otp-tx-2",
        &password,
    ));

    // A password minted for otp2 does not work on otp, and is still good on otp2 afterwards.
    let other = mint(&instance, "otp2", SystemTime::now());
    assert_bad_request(&enroll(&instance, "/scep/otp", "otp-3", "otp-tx-3", &other));
    assert_success(&enroll(
        &instance,
        "/scep/otp2",
        "otp-4",
        "otp-tx-4",
        &other,
    ));

    // Minted two hours ago with a one-hour lifetime: expired, refused, and purged.
    let old = mint(
        &instance,
        "otp",
        SystemTime::now() - Duration::from_secs(7200),
    );
    assert_bad_request(&enroll(&instance, "/scep/otp", "otp-5", "otp-tx-5", &old));

    // A password never issued, and none at all, are refused too.
    assert_bad_request(&enroll(
        &instance,
        "/scep/otp",
        "otp-6",
        "otp-tx-6",
        "0123456789ABCDEF",
    ));
    // The static secret of the default template means nothing here.
    assert_bad_request(&enroll(
        &instance,
        "/scep/otp",
        "otp-7",
        "otp-tx-7",
        CHALLENGE,
    ));
}

#[test]
fn one_password_in_four_concurrent_enrollments_issues_exactly_one_certificate() {
    let instance = otp_instance();
    let password = mint(&instance, "otp", SystemTime::now());
    // Prepared first (key generation is slow), sent together.
    let devices: Vec<_> = (0..4).map(|_| Device::rsa(2048)).collect();
    let requests: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(i, device)| {
            let csr = device.simple_csr(&format!("race-{i}"), &password);
            prepare(&instance, device, &csr, &options(&format!("race-tx-{i}")))
        })
        .collect();
    let barrier = std::sync::Barrier::new(4);
    let views: Vec<CertRepView> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .zip(&requests)
            .map(|(device, request)| {
                let (instance, barrier) = (&instance, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    instance.exchange("/scep/otp", Via::Post, request, &device.signer)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let successes = views
        .iter()
        .filter(|v| v.status == PkiStatus::Success)
        .count();
    assert_eq!(successes, 1);
    for view in views.iter().filter(|v| v.status != PkiStatus::Success) {
        assert_bad_request(view);
    }
    assert_eq!(
        instance
            .app
            .enroller()
            .store()
            .certificates()
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------
// Webhook

/// What the receiver saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A tiny HTTP receiver on 127.0.0.1 whose answer depends on the path. Stops on drop; every
/// loop is bounded in time (60 s) and count (100 connections).
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Self {
        Self::start_with(None)
    }

    /// An https receiver with this TLS identity.
    fn start_tls(acceptor: openssl::ssl::SslAcceptor) -> Self {
        Self::start_with(Some(Arc::new(acceptor)))
    }

    fn start_with(tls: Option<Arc<openssl::ssl::SslAcceptor>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut served = 0;
                while !stop.load(Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(60)
                    && served < 100
                {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            served += 1;
                            let seen = Arc::clone(&seen);
                            let tls = tls.clone();
                            std::thread::spawn(move || {
                                stream.set_nonblocking(false).unwrap();
                                let timeout = Some(Duration::from_secs(5));
                                stream.set_read_timeout(timeout).unwrap();
                                match tls {
                                    Some(acceptor) => {
                                        if let Ok(tls_stream) = acceptor.accept(stream) {
                                            serve_one(tls_stream, &seen);
                                        }
                                    }
                                    None => serve_one(stream, &seen),
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one<S: Read + Write>(mut stream: S, seen: &Mutex<Vec<Seen>>) {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let (path, headers, body) = loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        data.extend_from_slice(&buffer[..n]);
        let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut parsed_headers);
        if let Ok(httparse::Status::Complete(head)) = request.parse(&data) {
            let headers: BTreeMap<String, String> = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if data.len() >= head + length {
                let path = request.path.unwrap_or("").to_owned();
                break (path, headers, data[head..head + length].to_vec());
            }
        }
        if data.len() > 1 << 20 {
            return;
        }
    };
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let (status, answer) = match path.as_str() {
        "/allow" => ("200 OK", r#"{"allow": true}"#.to_owned()),
        "/deny" => ("200 OK", r#"{"allow": false}"#.to_owned()),
        "/forbidden" => ("403 Forbidden", r#"{"allow": true}"#.to_owned()),
        "/garbage" => ("200 OK", "allow".to_owned()),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(4));
            ("200 OK", r#"{"allow": true}"#.to_owned())
        }
        "/same-subject" => (
            "200 OK",
            serde_json::json!({"allow": true, "subject": request["subject"], "sans": request["sans"]})
                .to_string(),
        ),
        "/other-subject" => (
            "200 OK",
            r#"{"allow": true, "subject": "CN=someone else"}"#.to_owned(),
        ),
        "/validity" => ("200 OK", r#"{"allow": true, "validity_days": 7}"#.to_owned()),
        "/chunked" => {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                  6\r\n{\"allo\r\n9\r\nw\": true}\r\n0\r\n\r\n",
            );
            return;
        }
        _ => ("404 Not Found", "{}".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

const HMAC_KEY: &str = "webhook-hmac-key-for-tests";
const WEBHOOK_TIMEOUT_MS: u64 = 1000;

fn webhook_template(url: &str, key_file: &std::path::Path) -> String {
    format!(
        "[challenge]\ntype = \"webhook\"\nurl = \"{url}\"\ntimeout_ms = {WEBHOOK_TIMEOUT_MS}\nsecret_file = \"{}\"\n\n\
         [issuance]\nvalidity_days = 30\nallowed_san_types = [\"dns\"]\n",
        key_file.display()
    )
}

#[test]
fn the_webhook_allows_denies_times_out_and_is_signed() {
    let receiver = Receiver::start();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("webhook.key");
    std::fs::write(&key_file, format!("{HMAC_KEY}\n")).unwrap();
    // Nothing listens there: a port bound and released.
    let down = common::free_loopback_addr();
    let paths = [
        "allow",
        "deny",
        "forbidden",
        "garbage",
        "slow",
        "same-subject",
        "other-subject",
        "validity",
        "chunked",
    ];
    let mut templates: Vec<(&'static str, String)> = paths
        .iter()
        .map(|p| {
            (
                *p,
                webhook_template(&receiver.url(&format!("/{p}")), &key_file),
            )
        })
        .collect();
    templates.push((
        "down",
        webhook_template(&format!("http://{down}/hook"), &key_file),
    ));
    let instance = Instance::new(Setup {
        templates,
        ..Setup::default()
    });

    // Allowed: a certificate, and the receiver saw the request's details and a valid HMAC.
    let device = Device::rsa(2048);
    let csr = device.csr(&scepd::scep::csr::CsrSpec {
        subject: "CN=hooked,O=scepd tests",
        challenge: Some("device-token-123"),
        sans: &[San::Dns("hooked.example".into())],
        ..Default::default()
    });
    let view = instance.exchange(
        "/scep/allow",
        Via::Post,
        &prepare(&instance, &device, &csr, &options("hook-tx-allow")),
        &device.signer,
    );
    assert_success(&view);
    let seen = receiver.seen("/allow");
    assert_eq!(seen.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["transaction_id"], "hook-tx-allow");
    assert_eq!(body["template"], "allow");
    assert_eq!(body["subject"], "CN=hooked,O=scepd tests");
    assert_eq!(body["sans"], serde_json::json!(["dns:hooked.example"]));
    assert_eq!(
        body["key"],
        serde_json::json!({"type": "rsa", "bits": 2048})
    );
    assert_eq!(body["challenge"], "device-token-123");
    let timestamp = &seen[0].headers["x-scepd-timestamp"];
    let signature = &seen[0].headers["x-scepd-signature"];
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(&seen[0].body);
    let key = openssl::pkey::PKey::hmac(HMAC_KEY.as_bytes()).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    signer.update(&signed).unwrap();
    let expected = format!("sha256={}", hex::encode(signer.sign_to_vec().unwrap()));
    assert_eq!(*signature, expected);
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(timestamp.parse::<u64>().unwrap()) < 60);

    // A chunked answer is read, and a matching subject/SAN answer allows.
    assert_success(&enroll(
        &instance,
        "/scep/chunked",
        "c",
        "hook-tx-chunked",
        "x",
    ));
    let view = instance.exchange(
        "/scep/same-subject",
        Via::Post,
        &prepare(&instance, &device, &csr, &options("hook-tx-same")),
        &device.signer,
    );
    assert_success(&view);

    // Denials: allow false, 403, not JSON, another subject, validity narrowing.
    for (path, tx) in [
        ("/scep/deny", "hook-tx-deny"),
        ("/scep/forbidden", "hook-tx-403"),
        ("/scep/garbage", "hook-tx-garbage"),
        ("/scep/other-subject", "hook-tx-other"),
        ("/scep/validity", "hook-tx-validity"),
    ] {
        assert_bad_request(&enroll(&instance, path, "denied", tx, "x"));
    }
    assert_eq!(receiver.seen("/deny").len(), 1);
    assert_eq!(receiver.seen("/forbidden").len(), 1);

    // A receiver that answers after 4 s: FAILURE after about the 1 s timeout.
    let started = Instant::now();
    assert_bad_request(&enroll(
        &instance,
        "/scep/slow",
        "slow",
        "hook-tx-slow",
        "x",
    ));
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(WEBHOOK_TIMEOUT_MS + 2500),
        "{elapsed:?}"
    );

    // Nobody listening: FAILURE.
    assert_bad_request(&enroll(
        &instance,
        "/scep/down",
        "down",
        "hook-tx-down",
        "x",
    ));
    assert_eq!(
        instance
            .app
            .enroller()
            .store()
            .certificates()
            .unwrap()
            .len(),
        3
    );
}

// ---------------------------------------------------------------------------------------
// The real binary: scepd challenge otp, the admin API and /certsrv/mscep_admin/

struct HttpAnswer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// One HTTP/1.1 request with `Connection: close`, bounded by 10 s.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> HttpAnswer {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut data = Vec::new();
    stream.read_to_end(&mut data).unwrap();
    let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut parsed_headers);
    let httparse::Status::Complete(head) = response.parse(&data).unwrap() else {
        panic!("incomplete answer");
    };
    HttpAnswer {
        status: response.code.unwrap(),
        headers: response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: data[head..].to_vec(),
    }
}

fn basic(user: &str, password: &str) -> (&'static str, String) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    ("Authorization", format!("Basic {encoded}"))
}

/// The page as text: UTF-16LE after a byte-order mark.
fn utf16_text(body: &[u8]) -> String {
    assert_eq!(&body[..2], &[0xFF, 0xFE], "no UTF-16LE byte-order mark");
    let units: Vec<u16> = body[2..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).unwrap()
}

/// What Fleet's regex `The enrollment challenge password is: <B> ([A-F0-9]+) </B>` captures.
fn fleet_password(page: &str) -> Option<String> {
    const BEFORE: &str = "The enrollment challenge password is: <B> ";
    let start = page.find(BEFORE)? + BEFORE.len();
    let rest = &page[start..];
    let captured: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || ('A'..='F').contains(c))
        .collect();
    (!captured.is_empty() && rest[captured.len()..].starts_with(" </B>")).then_some(captured)
}

/// Enrolls over real HTTP at `http://addr/scep/otp` with our client.
fn enroll_over_http(addr: SocketAddr, cn: &str, tx: &str, password: &str) -> CertRepView {
    let ca_certs = http(addr, "GET", "/scep/otp?operation=GetCACert", &[], b"");
    assert_eq!(ca_certs.status, 200);
    let certs = client::parse_ca_certs(&ca_certs.body).unwrap();
    let (recipient, reply_signer) = client::select_ra_certs(&certs).unwrap();
    let device = Device::rsa(2048);
    let csr = device.simple_csr(cn, password);
    let request = client::build_request(&csr, &recipient, &device.signer, &options(tx)).unwrap();
    let answer = http(
        addr,
        "POST",
        "/scep/otp?operation=PKIOperation",
        &[("Content-Type", "application/x-pki-message".into())],
        &request.der,
    );
    assert_eq!(answer.status, 200);
    client::read_cert_rep(&answer.body, &request, &reply_signer, &device.signer).unwrap()
}

fn sha256_hex(text: &str) -> String {
    hex::encode(openssl::sha::sha256(text.as_bytes()))
}

#[test]
fn scepd_challenge_otp_the_admin_api_and_the_ndes_page_against_a_running_server() {
    use common::{describe, free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard};
    use std::process::Command;
    let deadline = Duration::from_secs(60);
    let scepd = || Command::new(env!("CARGO_BIN_EXE_scepd"));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let admin_addr = free_loopback_addr();
    let init = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--listen", &addr.to_string()])
            .args(["--static-challenge", CHALLENGE])
            .args(["--admin-listen", &admin_addr.to_string()]),
        deadline,
    );
    assert!(init.status.success(), "{}", describe(&init));
    let config = dir.path().join("scepd.toml");
    std::fs::write(dir.path().join("templates/otp.toml"), otp_template(60, 2)).unwrap();
    std::fs::write(
        dir.path().join("ndes-users"),
        format!(
            "# NDES page users\nfleet:{}:enroll\nviewer:{}\n",
            sha256_hex("fleet-pass"),
            sha256_hex("viewer-pass")
        ),
    )
    .unwrap();
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(
        "\n[ndes_admin]\nenabled = true\ntemplate = \"otp\"\nusers_file = \"ndes-users\"\n",
    );
    std::fs::write(&config, toml).unwrap();
    let cli =
        |args: &[&str]| run_bounded(scepd().args(args).arg("--config").arg(&config), deadline);

    let check = cli(&["check-config"]);
    assert!(check.status.success(), "{}", describe(&check));

    // No server: the CLI issues on the store itself.
    let first = cli(&["challenge", "otp", "--template", "otp"]);
    assert!(first.status.success(), "{}", describe(&first));
    let first = String::from_utf8(first.stdout).unwrap().trim().to_owned();
    assert_eq!(first.len(), 16);
    assert!(first
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
    let static_template = cli(&["challenge", "otp", "--template", "default"]);
    assert!(!static_template.status.success());
    assert!(String::from_utf8_lossy(&static_template.stderr).contains("does not use"));

    let mut server = ChildGuard::spawn(
        scepd().arg("serve").arg("--config").arg(&config),
        &dir.path().join("serve.log"),
    );
    wait_for_http_ok(&mut server, addr, "/healthz", deadline);

    // Through the admin API while the server holds the store; the cap is 2.
    let second = cli(&["challenge", "otp", "--template", "otp"]);
    assert!(second.status.success(), "{}", describe(&second));
    let second = String::from_utf8(second.stdout).unwrap().trim().to_owned();
    assert_ne!(first, second);
    let full = cli(&["challenge", "otp", "--template", "otp"]);
    assert!(!full.status.success());
    assert!(
        String::from_utf8_lossy(&full.stderr).contains("password cache is full"),
        "{}",
        describe(&full)
    );

    // The admin API itself: bearer token, JSON, 429 when full, 404 for a non-otp template.
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let bearer = ("Authorization", format!("Bearer {}", token.trim()));
    let body = br#"{"template": "otp"}"#;
    let unauthorized = http(admin_addr, "POST", "/v1/challenges/otp", &[], body);
    assert_eq!(unauthorized.status, 401);
    let api_full = http(
        admin_addr,
        "POST",
        "/v1/challenges/otp",
        std::slice::from_ref(&bearer),
        body,
    );
    assert_eq!(api_full.status, 429);
    let not_otp = http(
        admin_addr,
        "POST",
        "/v1/challenges/otp",
        std::slice::from_ref(&bearer),
        br#"{"template": "default"}"#,
    );
    assert_eq!(not_otp.status, 404);

    // NDES's page: redirect, Basic auth, permission, cache full.
    let redirect = http(addr, "GET", "/certsrv/mscep_admin", &[], b"");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.headers["location"], "/certsrv/mscep_admin/");
    for headers in [
        vec![],
        vec![basic("fleet", "wrong")],
        vec![basic("nobody", "fleet-pass")],
    ] {
        let refused = http(addr, "GET", "/certsrv/mscep_admin/", &headers, b"");
        assert_eq!(refused.status, 401);
        assert_eq!(refused.headers["www-authenticate"], "Basic realm=\"scepd\"");
    }
    let viewer = http(
        addr,
        "GET",
        "/certsrv/mscep_admin/",
        &[basic("viewer", "viewer-pass")],
        b"",
    );
    assert!(utf16_text(&viewer.body).contains(
        "You do not have sufficient permission to enroll with SCEP. Please contact your system administrator."
    ));
    let cache_full = http(
        addr,
        "GET",
        "/certsrv/mscep_admin/",
        &[basic("fleet", "fleet-pass")],
        b"",
    );
    assert_eq!(cache_full.status, 200);
    let cache_full = utf16_text(&cache_full.body);
    assert!(cache_full.contains("The password cache is full."));
    assert_eq!(fleet_password(&cache_full), None);

    // The first password (issued with no server running) enrolls over HTTP, once.
    assert_success(&enroll_over_http(addr, "cli-otp", "cli-otp-tx", &first));
    assert_bad_request(&enroll_over_http(
        addr,
        "cli-otp-again",
        "cli-otp-tx-2",
        &first,
    ));

    // A place is free again: the page hands out a password, scraped as Fleet does.
    let page = http(
        addr,
        "GET",
        "/certsrv/mscep_admin/",
        &[basic("fleet", "fleet-pass")],
        b"",
    );
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-16");
    let text = utf16_text(&page.body);
    let scraped = fleet_password(&text).expect("a password on the page");
    assert_eq!(scraped.len(), 16);
    assert!(text.contains("This password can be used only once and will expire within 60 minutes."));
    let ca_pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let ca_der = openssl::x509::X509::from_pem(&ca_pem)
        .unwrap()
        .to_der()
        .unwrap();
    let md5 = hex::encode_upper(
        openssl::hash::hash(openssl::hash::MessageDigest::md5(), &ca_der).unwrap(),
    );
    let thumbprint = format!(
        "{} {} {} {}",
        &md5[0..8],
        &md5[8..16],
        &md5[16..24],
        &md5[24..32]
    );
    assert!(
        text.contains(&format!(
            "The thumbprint (hash value) for the CA certificate is: <B> {thumbprint} </B>"
        )),
        "{text}"
    );
    let issued = enroll_over_http(addr, "fleet-device", "fleet-tx", &scraped);
    assert_success(&issued);
    assert!(openssl_verify(&ca_der, &issued.certs[0]));
    assert_bad_request(&enroll_over_http(
        addr,
        "fleet-again",
        "fleet-tx-2",
        &scraped,
    ));
    // The API's password works too.
    assert_success(&enroll_over_http(addr, "api-device", "api-tx", &second));

    // Passwords never reach the log.
    let log = server.log_text();
    for password in [&first, &second, &scraped] {
        assert!(!log.contains(password.as_str()), "password in the log");
    }
    assert!(!log.contains("fleet-pass"));
}

#[test]
fn check_config_lists_every_otp_webhook_and_ndes_admin_problem() {
    use common::{describe, free_loopback_addr, run_bounded};
    use std::process::Command;
    let deadline = Duration::from_secs(60);
    let scepd = || Command::new(env!("CARGO_BIN_EXE_scepd"));
    let dir = tempfile::tempdir().unwrap();
    let init = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--listen", &free_loopback_addr().to_string()])
            .args(["--admin-listen", &free_loopback_addr().to_string()]),
        deadline,
    );
    assert!(init.status.success(), "{}", describe(&init));
    let templates = dir.path().join("templates");
    let write = |name: &str, challenge: &str| {
        std::fs::write(
            templates.join(format!("{name}.toml")),
            format!("[challenge]\n{challenge}\n[issuance]\nvalidity_days = 30\n"),
        )
        .unwrap();
    };
    write(
        "otp-bad",
        "type = \"otp\"\nttl_minutes = 0\nmax_outstanding = 0",
    );
    write(
        "hook-remote",
        "type = \"webhook\"\nurl = \"http://192.0.2.10/hook\"\ntimeout_ms = 0",
    );
    write(
        "hook-nourl",
        "type = \"webhook\"\nsecret_file = \"missing.key\"",
    );
    write(
        "static-url",
        "type = \"static\"\nsecret = \"s\"\nurl = \"https://x/\"",
    );
    write("unknown", "type = \"ldap\"");
    write(
        "hook-cafile",
        "type = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nca_file = \"nope.pem\"",
    );
    let config = dir.path().join("scepd.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(
        "\n[ndes_admin]\nenabled = true\ntemplate = \"default\"\nusers_file = \"no-such-file\"\n",
    );
    std::fs::write(&config, toml).unwrap();
    let check = run_bounded(
        scepd().arg("check-config").arg("--config").arg(&config),
        deadline,
    );
    assert_eq!(check.status.code(), Some(64), "{}", describe(&check));
    let stderr = String::from_utf8_lossy(&check.stderr);
    for expected in [
        "challenge.ttl_minutes: from 1 to 10080",
        "challenge.max_outstanding: from 1 to 10000",
        "http is allowed only to a loopback address",
        "challenge.timeout_ms: from 1 to 60000",
        "challenge.url: a webhook needs a url",
        "missing.key",
        "url not allowed with type = \"static\"",
        "challenge.type: \"ldap\" is not one of",
        "ndes_admin.template: template \"default\" does not use [challenge] type = \"otp\"",
        "ndes_admin.users_file",
        "challenge.ca_file",
        "only for an https url",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn scepd_serve_asks_the_webhook_and_never_logs_the_challenge() {
    use common::{describe, free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard};
    use std::process::Command;
    let deadline = Duration::from_secs(60);
    let receiver = Receiver::start();
    let scepd = || Command::new(env!("CARGO_BIN_EXE_scepd"));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let init = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &free_loopback_addr().to_string()]),
        deadline,
    );
    assert!(init.status.success(), "{}", describe(&init));
    let key_file = dir.path().join("webhook.key");
    std::fs::write(&key_file, HMAC_KEY).unwrap();
    // The template is named otp so that enroll_over_http's /scep/otp reaches it.
    std::fs::write(
        dir.path().join("templates/otp.toml"),
        webhook_template(&receiver.url("/allow"), &key_file),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates/deny.toml"),
        webhook_template(&receiver.url("/deny"), &key_file),
    )
    .unwrap();
    let config = dir.path().join("scepd.toml");
    let mut server = ChildGuard::spawn(
        scepd()
            .env("SCEPD_LOG", "debug")
            .arg("serve")
            .arg("--config")
            .arg(&config),
        &dir.path().join("serve.log"),
    );
    wait_for_http_ok(&mut server, addr, "/healthz", deadline);

    const TOKEN: &str = "device-secret-token-7Q2X";
    let issued = enroll_over_http(addr, "served-hook", "served-hook-tx", TOKEN);
    assert_success(&issued);
    let seen = receiver.seen("/allow");
    assert_eq!(seen.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["transaction_id"], "served-hook-tx");
    assert_eq!(body["challenge"], TOKEN);

    // The deny template, over HTTP too.
    let ca_certs = http(addr, "GET", "/scep/deny?operation=GetCACert", &[], b"");
    let certs = client::parse_ca_certs(&ca_certs.body).unwrap();
    let (recipient, reply_signer) = client::select_ra_certs(&certs).unwrap();
    let device = Device::rsa(2048);
    let csr = device.simple_csr("denied", TOKEN);
    let request =
        client::build_request(&csr, &recipient, &device.signer, &options("served-deny-tx"))
            .unwrap();
    let answer = http(
        addr,
        "POST",
        "/scep/deny?operation=PKIOperation",
        &[],
        &request.der,
    );
    assert_eq!(answer.status, 200);
    let view =
        client::read_cert_rep(&answer.body, &request, &reply_signer, &device.signer).unwrap();
    assert_bad_request(&view);

    let log = server.log_text();
    assert!(log.contains("webhook did not allow"), "{log}");
    assert!(!log.contains(TOKEN), "the challenge reached the log");
    assert!(!log.contains(HMAC_KEY), "the HMAC key reached the log");
}

/// A test CA and a server certificate for 127.0.0.1 issued by it: (CA PEM, acceptor).
fn tls_identity() -> (Vec<u8>, openssl::ssl::SslAcceptor) {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::x509::extension::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    };
    use openssl::x509::{X509Builder, X509NameBuilder};
    let name = |cn: &str| {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        name.build()
    };
    let certificate = |subject: &str, key: &openssl::pkey::PKey<openssl::pkey::Private>| {
        let mut builder = X509Builder::new().unwrap();
        builder.set_version(2).unwrap();
        let serial = openssl::bn::BigNum::from_u32(rand_u32()).unwrap();
        builder
            .set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        builder.set_subject_name(&name(subject)).unwrap();
        builder.set_pubkey(key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(2).unwrap())
            .unwrap();
        builder
    };
    let ca_key = rsa_key(2048);
    let mut ca = certificate("webhook test CA", &ca_key);
    ca.set_issuer_name(&name("webhook test CA")).unwrap();
    ca.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    ca.append_extension(KeyUsage::new().critical().key_cert_sign().build().unwrap())
        .unwrap();
    ca.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = ca.build();
    let key = rsa_key(2048);
    let mut leaf = certificate("127.0.0.1", &key);
    leaf.set_issuer_name(ca.subject_name()).unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&leaf.x509v3_context(Some(&ca), None))
        .unwrap();
    leaf.append_extension(san).unwrap();
    leaf.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
        .unwrap();
    leaf.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let leaf = leaf.build();
    let mut acceptor =
        openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls()).unwrap();
    acceptor.set_private_key(&key).unwrap();
    acceptor.set_certificate(&leaf).unwrap();
    acceptor.add_extra_chain_cert(ca.clone()).unwrap();
    (ca.to_pem().unwrap(), acceptor.build())
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    openssl::rand::rand_bytes(&mut bytes).unwrap();
    u32::from_be_bytes(bytes) >> 1
}

#[test]
fn an_https_webhook_is_verified_against_ca_file() {
    let (ca_pem, acceptor) = tls_identity();
    let receiver = Receiver::start_tls(acceptor);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("webhook-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let key_file = dir.path().join("webhook.key");
    std::fs::write(&key_file, HMAC_KEY).unwrap();
    let trusting = format!(
        "[challenge]\ntype = \"webhook\"\nurl = \"{}\"\nca_file = \"{}\"\n\n[issuance]\nvalidity_days = 30\n",
        receiver.https_url("/allow"),
        ca_file.display()
    );
    // Without ca_file the system's CAs apply, and they do not know the test CA.
    let system_trust = webhook_template(&receiver.https_url("/deny"), &key_file);
    let instance = Instance::new(Setup {
        templates: vec![("trusting", trusting), ("system", system_trust)],
        ..Setup::default()
    });
    assert_success(&enroll(&instance, "/scep/trusting", "tls", "tls-tx", "x"));
    assert_eq!(receiver.seen("/allow").len(), 1);
    assert_bad_request(&enroll(&instance, "/scep/system", "tls2", "tls-tx-2", "x"));
    // The handshake failed: the receiver never saw a request.
    assert!(receiver.seen("/deny").is_empty());
}
