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
        &scepd::keys::load_cert_der(&dir.path().join("ca-2.pem")).unwrap()
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
    for key in ["ca-2.key", "ra-sign-2.key", "ra-encrypt-2.key"] {
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
    let new_ca = pem_der(&dir.path().join("ca-2.pem"));

    let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
    let certs = client::parse_ca_certs(get(&loaded, "GetCACert").body()).unwrap();
    assert_eq!(certs[0], new_ca, "GetCACert answers with the new chain");
    let (recipient, signer) = client::select_ra_certs(&certs).unwrap();
    assert_eq!(recipient, pem_der(&dir.path().join("ra-encrypt-2.pem")));
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
    let new_ca = pem_der(&dir.path().join("ca-2.pem"));

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

/// The status `/ocsp` gives for `cert` issued by `issuer`, after checking that the answer
/// is signed by that issuer.
fn ocsp_status(loaded: &Loaded, cert: &[u8], issuer: &[u8]) -> openssl::ocsp::OcspCertStatus {
    use openssl::hash::MessageDigest;
    use openssl::ocsp::{OcspCertId, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus};
    use openssl::x509::X509;
    let (cert, issuer) = (
        X509::from_der(cert).unwrap(),
        X509::from_der(issuer).unwrap(),
    );
    let id = || OcspCertId::from_cert(MessageDigest::sha1(), &cert, &issuer).unwrap();
    let mut request = OcspRequest::new().unwrap();
    request.add_id(id()).unwrap();
    let http = Request::post("/ocsp")
        .header("content-type", "application/ocsp-request")
        .body(Bytes::from(request.to_der().unwrap()))
        .unwrap();
    let body = runtime().block_on(loaded.app.handle(http)).into_body();
    let response = OcspResponse::from_der(&body).unwrap();
    assert_eq!(response.status(), OcspResponseStatus::SUCCESSFUL);
    let basic = response.basic().unwrap();
    let mut certs = openssl::stack::Stack::new().unwrap();
    certs.push(issuer.clone()).unwrap();
    let store = openssl::x509::store::X509StoreBuilder::new()
        .unwrap()
        .build();
    basic
        .verify(&certs, &store, OcspFlag::TRUST_OTHER)
        .expect("signed by the certificate's own CA");
    basic.find_status(&id()).expect("a status").status
}

/// The CRL served at `path`, verified with `ca`'s key; the serials it lists.
fn crl_serials(loaded: &Loaded, path: &str, ca: &[u8]) -> Vec<Vec<u8>> {
    let request = Request::get(path).body(Bytes::new()).unwrap();
    let response = runtime().block_on(loaded.app.handle(request));
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let crl = openssl::x509::X509Crl::from_der(response.body()).unwrap();
    let ca = openssl::x509::X509::from_der(ca).unwrap();
    assert!(
        crl.verify(&ca.public_key().unwrap()).unwrap(),
        "{path} signed by its CA"
    );
    crl.get_revoked()
        .map(|stack| {
            stack
                .iter()
                .map(|r| r.serial_number().to_bn().unwrap().to_vec())
                .collect()
        })
        .unwrap_or_default()
}

fn serial(der: &[u8]) -> Vec<u8> {
    openssl::x509::X509::from_der(der)
        .unwrap()
        .serial_number()
        .to_bn()
        .unwrap()
        .to_vec()
}

fn text(der: &[u8]) -> String {
    String::from_utf8(
        openssl::x509::X509::from_der(der)
            .unwrap()
            .to_text()
            .unwrap(),
    )
    .unwrap()
}

/// After the switch, the previous CA's certificates keep their revocation status (their own
/// CRL at the URL they name, OCSP answers signed by their CA) and can renew; the new CA's
/// certificates name its own CRL. Also across a restart, which loads both generations.
#[test]
fn after_a_switch_both_generations_keep_crl_ocsp_and_renewal() {
    use openssl::ocsp::OcspCertStatus;
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(dir.path(), &Setup::default());
    let old_ca = pem_der(&dir.path().join("ca.pem"));
    let renewing = Device::rsa(2048);
    let (old_cert, old_to_renew) = {
        let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
        let certs = client::parse_ca_certs(get(&loaded, "GetCACert").body()).unwrap();
        let (recipient, signer) = client::select_ra_certs(&certs).unwrap();
        let post = |der| post(&loaded, der);
        let old_cert = enroll_with(post, &recipient, &signer, "old-generation");
        let to_renew = enroll_device(&loaded, &renewing, &recipient, &signer, "renew-later");
        (old_cert, to_renew)
    };
    assert!(
        text(&old_cert).contains("/crl/ca.crl"),
        "{}",
        text(&old_cert)
    );

    let run = rollover(&config, &["--switch-at", "2020-01-01T00:00:00Z"]);
    assert!(run.status.success(), "{}", common::describe(&run));
    let new_ca = pem_der(&dir.path().join("ca-2.pem"));
    let status = common::run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["ca", "status", "--config"])
            .arg(&config),
        DEADLINE,
    );
    let listing = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(listing.contains("ca\t-\t"), "{listing}");
    assert!(
        listing.contains("previous (CRL, OCSP, renewal)"),
        "{listing}"
    );
    assert!(listing.contains("ca-2\t2020-01-01T00:00:00Z"), "{listing}");

    let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
    let certs = client::parse_ca_certs(get(&loaded, "GetCACert").body()).unwrap();
    let (recipient, signer) = client::select_ra_certs(&certs).unwrap();
    let new_cert = enroll_with(
        |der| post(&loaded, der),
        &recipient,
        &signer,
        "new-generation",
    );
    assert!(openssl_verify(&new_ca, &new_cert));
    assert!(
        text(&new_cert).contains("/crl/ca-2.crl"),
        "{}",
        text(&new_cert)
    );

    assert_eq!(
        ocsp_status(&loaded, &old_cert, &old_ca),
        OcspCertStatus::GOOD
    );
    assert_eq!(
        ocsp_status(&loaded, &new_cert, &new_ca),
        OcspCertStatus::GOOD
    );
    let store = loaded.app.enroller().store();
    store
        .revoke(
            &serial(&old_cert),
            "keyCompromise",
            "test",
            std::time::SystemTime::now(),
        )
        .unwrap();
    let crls = loaded.app.enroller().crls().expect("CRLs");
    crls.regenerate_all(std::time::SystemTime::now()).unwrap();
    assert_eq!(
        ocsp_status(&loaded, &old_cert, &old_ca),
        OcspCertStatus::REVOKED
    );
    assert_eq!(
        ocsp_status(&loaded, &new_cert, &new_ca),
        OcspCertStatus::GOOD
    );
    assert_eq!(
        crl_serials(&loaded, "/crl/ca.crl", &old_ca),
        [serial(&old_cert)]
    );
    assert!(crl_serials(&loaded, "/crl/ca-2.crl", &new_ca).is_empty());

    // A certificate of the previous CA renews; the new CA issues the renewal.
    let old_identity = client::ClientIdentity {
        cert_der: old_to_renew.clone(),
        key: renewing.key.clone(),
    };
    let fresh = Device::rsa(2048);
    let csr = fresh.simple_csr("renew-later", CHALLENGE);
    let mut opts = options("renew-after-switch");
    opts.message_type = scepd::scep::MessageType::RenewalReq;
    let prepared = client::build_request(&csr, &recipient, &old_identity, &opts).unwrap();
    let body = post(&loaded, prepared.der.clone());
    let view = client::read_cert_rep(&body, &prepared, &signer, &old_identity).unwrap();
    assert_eq!(view.status, PkiStatus::Success, "{view:?}");
    assert!(openssl_verify(&new_ca, &view.certs[0]));
}

fn post(loaded: &Loaded, der: Vec<u8>) -> Vec<u8> {
    let request = Request::post("/scep?operation=PKIOperation")
        .body(Bytes::from(der))
        .unwrap();
    runtime()
        .block_on(loaded.app.handle(request))
        .into_body()
        .to_vec()
}

/// Enrolls `device` (its key in the CSR and as the signer); the issued certificate.
fn enroll_device(
    loaded: &Loaded,
    device: &Device,
    recipient: &[u8],
    reply_signer: &[u8],
    id: &str,
) -> Vec<u8> {
    let csr = device.simple_csr(id, CHALLENGE);
    let prepared = client::build_request(&csr, recipient, &device.signer, &options(id)).unwrap();
    let body = post(loaded, prepared.der.clone());
    let view = client::read_cert_rep(&body, &prepared, reply_signer, &device.signer).unwrap();
    assert_eq!(view.status, PkiStatus::Success, "{id}: {view:?}");
    view.certs[0].clone()
}
