//! CA rollover (issue 4 item 7): `scepd ca rollover` prepares the next CA and RA
//! certificates; GetNextCACert serves them, signed by the current CA, and GetCACaps
//! advertises it. Checked with `openssl cms -verify` as the independent reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use scepd::cli::serve::{load, Loaded};
use scepd::scep::client::{self, CertRepView};
use scepd::scep::PkiStatus;
use support::{init_dir, openssl_verify, options, runtime, Device, Setup, CHALLENGE};

const DEADLINE: Duration = Duration::from_secs(60);

fn get(loaded: &Loaded, operation: &str) -> Response<Bytes> {
    let request = Request::get(format!("/scep?operation={operation}"))
        .body(Bytes::new())
        .unwrap();
    runtime().block_on(loaded.app.handle(request))
}

fn rollover(config: &Path, args: &[&str]) -> std::process::Output {
    common::run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["ca", "rollover", "--config"])
            .arg(config)
            .args(args),
        DEADLINE,
    )
}

/// `openssl cms -verify` of a GetNextCACert body against the current CA; the eContent.
fn cms_verify(dir: &Path, body: &[u8]) -> Vec<u8> {
    let input = dir.join("next.p7");
    let output = dir.join("next-inner.der");
    std::fs::write(&input, body).unwrap();
    let run = common::run_bounded(
        std::process::Command::new("openssl")
            .args([
                "cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
            ])
            .arg("-in")
            .arg(&input)
            .arg("-CAfile")
            .arg(dir.join("ca.pem"))
            .arg("-out")
            .arg(&output),
        DEADLINE,
    );
    assert!(run.status.success(), "{}", common::describe(&run));
    std::fs::read(output).unwrap()
}

fn subject(der: &[u8]) -> String {
    let cert = openssl::x509::X509::from_der(der).unwrap();
    format!("{:?}", cert.subject_name())
}

#[test]
fn get_next_ca_cert_serves_the_next_ca_after_scepd_ca_rollover() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(dir.path(), &Setup::default());
    {
        let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
        let caps = get(&loaded, "GetCACaps");
        assert!(!String::from_utf8_lossy(caps.body()).contains("GetNextCACert"));
        assert_eq!(
            get(&loaded, "GetNextCACert").status(),
            StatusCode::NOT_FOUND
        );
    }

    let run = rollover(&config, &["--switch-in-days", "7"]);
    assert!(run.status.success(), "{}", common::describe(&run));
    let again = rollover(&config, &["--switch-at", "2030-01-01T00:00:00Z"]);
    assert!(!again.status.success(), "a second rollover is refused");
    let bad = rollover(&config, &["--switch-at", "tomorrow"]);
    assert!(!bad.status.success());

    let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
    let caps = get(&loaded, "GetCACaps");
    assert!(String::from_utf8_lossy(caps.body())
        .lines()
        .any(|l| l == "GetNextCACert"));
    let response = get(&loaded, "GetNextCACert");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-x509-next-ca-cert"
    );
    let inner = cms_verify(dir.path(), response.body());
    let certs = client::parse_ca_certs(&inner).unwrap();
    assert_eq!(
        certs.len(),
        3,
        "next CA, next RA signing, next RA encryption"
    );
    let current = scepd::keys::load_cert_der(&dir.path().join("ca.pem")).unwrap();
    let next = &certs[0];
    assert_ne!(next, &current);
    assert_eq!(subject(next), subject(&current));
    assert_eq!(
        next,
        &scepd::keys::load_cert_der(&dir.path().join("ca-next.pem")).unwrap()
    );
    assert!(support::is_ca(next));
    for ra in &certs[1..] {
        assert!(
            openssl_verify(next, ra),
            "RA certificate issued by the next CA"
        );
        assert!(!openssl_verify(&current, ra));
    }
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca-next.key", "ra-sign-next.key", "ra-encrypt-next.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

fn pem_der(path: &Path) -> Vec<u8> {
    scepd::keys::load_cert_der(path).unwrap()
}

/// Enrolls through `send` with the request encrypted to `recipient`; the issued certificate.
fn enroll_with(
    send: impl FnOnce(Vec<u8>) -> Vec<u8>,
    recipient: &[u8],
    reply_signer: &[u8],
    id: &str,
) -> Vec<u8> {
    let device = Device::rsa(2048);
    let csr = device.simple_csr(id, CHALLENGE);
    let prepared = client::build_request(&csr, recipient, &device.signer, &options(id)).unwrap();
    let body = send(prepared.der.clone());
    let view: CertRepView =
        client::read_cert_rep(&body, &prepared, reply_signer, &device.signer).unwrap();
    assert_eq!(view.status, PkiStatus::Success, "{id}: {view:?}");
    view.certs[0].clone()
}

#[test]
fn after_the_switch_time_the_next_ca_issues_and_the_old_ra_key_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(dir.path(), &Setup::default());
    let old_ca = pem_der(&dir.path().join("ca.pem"));
    let old_recipient = pem_der(&dir.path().join("ra-encrypt.pem"));
    let run = rollover(&config, &["--switch-at", "2020-01-01T00:00:00Z"]);
    assert!(run.status.success(), "{}", common::describe(&run));
    let new_ca = pem_der(&dir.path().join("ca-next.pem"));

    let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
    let certs = client::parse_ca_certs(get(&loaded, "GetCACert").body()).unwrap();
    assert_eq!(certs[0], new_ca, "GetCACert answers with the new chain");
    let (recipient, signer) = client::select_ra_certs(&certs).unwrap();
    assert_eq!(recipient, pem_der(&dir.path().join("ra-encrypt-next.pem")));
    // The next CA is now the current one: it is no longer offered as the next.
    let caps = get(&loaded, "GetCACaps");
    assert!(!String::from_utf8_lossy(caps.body())
        .lines()
        .any(|l| l == "GetNextCACert"));
    assert_eq!(
        get(&loaded, "GetNextCACert").status(),
        http::StatusCode::NOT_FOUND
    );
    let post = |der: Vec<u8>| {
        let request = Request::post("/scep?operation=PKIOperation")
            .body(Bytes::from(der))
            .unwrap();
        runtime()
            .block_on(loaded.app.handle(request))
            .into_body()
            .to_vec()
    };
    let issued = enroll_with(post, &recipient, &signer, "after-switch");
    assert!(openssl_verify(&new_ca, &issued), "issued by the new CA");
    assert!(!openssl_verify(&old_ca, &issued));
    let grace = enroll_with(post, &old_recipient, &signer, "to-the-old-ra");
    assert!(openssl_verify(&new_ca, &grace));
}

/// `scepd serve` running across the switch time: before it the current CA issues, after it
/// (no restart) the next CA, and GetCACert changes.
#[test]
fn a_running_server_switches_to_the_next_ca_at_the_switch_time() {
    use common::{free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard};
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let init = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--listen", &addr.to_string(), "--static-challenge"])
            .arg(CHALLENGE)
            .args(["--admin-listen", &free_loopback_addr().to_string()]),
        DEADLINE,
    );
    assert!(init.status.success(), "{}", common::describe(&init));
    let config = dir.path().join("scepd.toml");
    let old_ca = pem_der(&dir.path().join("ca.pem"));
    let old_recipient = pem_der(&dir.path().join("ra-encrypt.pem"));
    let old_signer = pem_der(&dir.path().join("ra-sign.pem"));
    let lead = Duration::from_secs(10);
    let switch = time::OffsetDateTime::now_utc() + lead;
    let switch_text = switch
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let prepared_at = std::time::Instant::now();
    let run = rollover(&config, &["--switch-at", &switch_text]);
    assert!(run.status.success(), "{}", common::describe(&run));
    let new_ca = pem_der(&dir.path().join("ca-next.pem"));

    let mut server = ChildGuard::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_scepd"))
            .arg("serve")
            .arg("--config")
            .arg(&config),
        &dir.path().join("serve.log"),
    );
    wait_for_http_ok(&mut server, addr, "/healthz", DEADLINE);
    let post = |der: Vec<u8>| http(addr, "POST", "/scep?operation=PKIOperation", &der);
    let before = enroll_with(post, &old_recipient, &old_signer, "before-switch");
    if prepared_at.elapsed() < lead - Duration::from_secs(2) {
        assert!(
            openssl_verify(&old_ca, &before),
            "the current CA issues first"
        );
    }
    let started = std::time::Instant::now();
    let certs = loop {
        let certs =
            client::parse_ca_certs(&http(addr, "GET", "/scep?operation=GetCACert", &[])).unwrap();
        if certs[0] == new_ca {
            break certs;
        }
        assert!(started.elapsed() < DEADLINE, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(200));
    };
    let (recipient, signer) = client::select_ra_certs(&certs).unwrap();
    let after = enroll_with(post, &recipient, &signer, "after-switch");
    assert!(
        openssl_verify(&new_ca, &after),
        "the next CA issues after the switch"
    );
    let grace = enroll_with(post, &old_recipient, &signer, "old-ra-after-switch");
    assert!(openssl_verify(&new_ca, &grace));
    server.assert_running();
}

/// One HTTP/1.1 exchange (Connection: close), expecting 200; the body.
fn http(addr: std::net::SocketAddr, method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-pki-message\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    response[split + 4..].to_vec()
}
