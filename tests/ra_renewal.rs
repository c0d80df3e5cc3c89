//! RA certificates renew themselves (issue 4 item 7), in process: `ra_renewal::renew_if_due`
//! on the loaded server, with requests before and after through `App::handle`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use scepd::cli::serve::{load, Loaded};
use scepd::ra_renewal::renew_if_due;
use scepd::scep::client::{self, CertRepView};
use scepd::scep::PkiStatus;
use support::{init_dir, options, runtime, Device, Setup, CHALLENGE};

const DAY: Duration = Duration::from_secs(86_400);

fn get_ca_certs(loaded: &Loaded) -> Vec<Vec<u8>> {
    let request = Request::get("/scep?operation=GetCACert")
        .body(Bytes::new())
        .unwrap();
    let response = runtime().block_on(loaded.app.handle(request));
    assert_eq!(response.status(), StatusCode::OK);
    client::parse_ca_certs(response.body()).unwrap()
}

/// Enrolls with the request encrypted to `recipient`, expecting `reply_signer` to sign.
fn enroll(loaded: &Loaded, recipient: &[u8], reply_signer: &[u8], id: &str) -> CertRepView {
    let device = Device::rsa(2048);
    let csr = device.simple_csr(id, CHALLENGE);
    let prepared = client::build_request(&csr, recipient, &device.signer, &options(id)).unwrap();
    let request = Request::post("/scep?operation=PKIOperation")
        .body(Bytes::from(prepared.der.clone()))
        .unwrap();
    let response = runtime().block_on(loaded.app.handle(request));
    assert_eq!(response.status(), StatusCode::OK);
    client::read_cert_rep(response.body(), &prepared, reply_signer, &device.signer).unwrap()
}

#[test]
fn ra_certificates_renew_in_service_and_the_old_encryption_key_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = init_dir(dir.path(), &Setup::default());
    let loaded = load(&config_path).unwrap_or_else(|e| panic!("load: {e:?}"));
    let ra_config = loaded.config.ra.clone().expect("[ra] from init");
    let (old_recipient, old_signer) = client::select_ra_certs(&get_ca_certs(&loaded)).unwrap();
    let before = enroll(&loaded, &old_recipient, &old_signer, "before-renewal");
    assert_eq!(before.status, PkiStatus::Success);

    let now = SystemTime::now();
    assert!(!renew_if_due(
        &loaded.app,
        &loaded.generations.all()[0].ca,
        &ra_config,
        now
    )
    .unwrap());
    // 710 days on, the 730-day RA certificates are inside the 30-day window.
    let later = now + 710 * DAY;
    assert!(renew_if_due(
        &loaded.app,
        &loaded.generations.all()[0].ca,
        &ra_config,
        later
    )
    .unwrap());

    let certs = get_ca_certs(&loaded);
    let (new_recipient, new_signer) = client::select_ra_certs(&certs).unwrap();
    assert_ne!(new_recipient, old_recipient);
    assert_ne!(new_signer, old_signer);
    assert_eq!(certs.len(), 3, "CA, RA signing, current RA encryption only");
    assert_eq!(subject(&new_recipient), subject(&old_recipient));
    assert_eq!(subject(&new_signer), subject(&old_signer));

    let after = enroll(&loaded, &new_recipient, &new_signer, "after-renewal");
    assert_eq!(after.status, PkiStatus::Success);
    let grace = enroll(&loaded, &old_recipient, &new_signer, "to-the-old-ra");
    assert_eq!(grace.status, PkiStatus::Success, "grace decrypter");

    // A restart loads the renewed files, and keeps the replaced encryption key as grace.
    assert_eq!(
        scepd::keys::load_cert_der(&ra_config.encrypt_cert).unwrap(),
        new_recipient
    );
    assert_eq!(
        scepd::keys::load_cert_der(&ra_config.sign_cert).unwrap(),
        new_signer
    );
    drop(loaded);
    let restarted = load(&config_path).unwrap_or_else(|e| panic!("reload: {e:?}"));
    let grace = enroll(
        &restarted,
        &old_recipient,
        &new_signer,
        "old-ra-after-restart",
    );
    assert_eq!(grace.status, PkiStatus::Success, "grace survives a restart");
}

/// `scepd serve` with a renewal window longer than the RA validity: the start-up check
/// renews at once, and the same process then answers GetCACert with the new certificates,
/// enrolls against them, and still opens a request encrypted to the old RA certificate (as
/// from a client that fetched GetCACert before the renewal).
#[test]
fn a_running_server_renews_its_ra_certificates_without_a_restart() {
    use common::{describe, free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard};
    use std::os::unix::fs::PermissionsExt;
    let deadline = Duration::from_secs(60);
    let scepd = || std::process::Command::new(env!("CARGO_BIN_EXE_scepd"));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let init = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--listen", &addr.to_string(), "--static-challenge"])
            .arg(CHALLENGE)
            .args(["--admin-listen", &free_loopback_addr().to_string()]),
        deadline,
    );
    assert!(init.status.success(), "{}", describe(&init));
    let config = dir.path().join("scepd.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[ra]\n", "[ra]\nrenew_before_days = 800\n"),
    )
    .unwrap();
    let old_recipient = scepd::keys::load_cert_der(&dir.path().join("ra-encrypt.pem")).unwrap();
    let old_signer = scepd::keys::load_cert_der(&dir.path().join("ra-sign.pem")).unwrap();

    let mut server = ChildGuard::spawn(
        scepd().arg("serve").arg("--config").arg(&config),
        &dir.path().join("serve.log"),
    );
    wait_for_http_ok(&mut server, addr, "/healthz", deadline);
    let started = std::time::Instant::now();
    let (new_recipient, new_signer) = loop {
        let (_, body) = http(addr, "GET", "/scep?operation=GetCACert", &[]);
        let certs = client::parse_ca_certs(&body).unwrap();
        let (recipient, signer) = client::select_ra_certs(&certs).unwrap();
        if recipient != old_recipient && signer != old_signer {
            break (recipient, signer);
        }
        assert!(started.elapsed() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    let process_id = server.id();

    for (recipient, id) in [(&new_recipient, "new-ra"), (&old_recipient, "old-ra")] {
        let device = Device::rsa(2048);
        let csr = device.simple_csr(id, CHALLENGE);
        let prepared =
            client::build_request(&csr, recipient, &device.signer, &options(id)).unwrap();
        let (status, body) = http(addr, "POST", "/scep?operation=PKIOperation", &prepared.der);
        assert_eq!(status, 200, "{}", server.log_text());
        let view = client::read_cert_rep(&body, &prepared, &new_signer, &device.signer).unwrap();
        assert_eq!(view.status, PkiStatus::Success, "{id}: {view:?}");
    }
    server.assert_running();
    assert_eq!(server.id(), process_id);
    assert_eq!(
        scepd::keys::load_cert_der(&dir.path().join("ra-encrypt.pem")).unwrap(),
        new_recipient
    );
    for key in ["ra-sign.key", "ra-encrypt.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let log = server.log_text();
    assert!(log.contains("RA certificates renewed"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "no key material in the log");
}

/// One HTTP/1.1 exchange (Connection: close): the status and the body.
fn http(addr: std::net::SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
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
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let status = String::from_utf8_lossy(&response[9..12]).parse().unwrap();
    (status, response[split + 4..].to_vec())
}

fn subject(der: &[u8]) -> String {
    let cert = openssl::x509::X509::from_der(der).unwrap();
    format!("{:?}", cert.subject_name())
}

/// After a CA switch the RA certificates in service are the new generation's: they renew
/// from the new CA into that generation's files, and the first generation's stay as they were.
#[test]
fn after_a_ca_switch_the_new_generations_ra_certificates_renew_from_the_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = init_dir(dir.path(), &Setup::default());
    let rollover = common::run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args([
                "ca",
                "rollover",
                "--switch-at",
                "2020-01-01T00:00:00Z",
                "--config",
            ])
            .arg(&config_path),
        Duration::from_secs(60),
    );
    assert!(rollover.status.success(), "{}", common::describe(&rollover));
    let pem = |name: &str| scepd::keys::load_cert_der(&dir.path().join(name)).unwrap();
    let (first_encrypt, second_encrypt) = (pem("ra-encrypt.pem"), pem("ra-encrypt-2.pem"));
    let loaded = load(&config_path).unwrap_or_else(|e| panic!("load: {e:?}"));
    let now = SystemTime::now();
    let generations = &loaded.generations;
    assert!(!scepd::ra_renewal::renew_in_charge_if_due(&loaded.app, generations, now).unwrap());
    let later = now + 710 * DAY;
    assert!(scepd::ra_renewal::renew_in_charge_if_due(&loaded.app, generations, later).unwrap());

    let (recipient, signer) = client::select_ra_certs(&get_ca_certs(&loaded)).unwrap();
    assert_ne!(recipient, second_encrypt);
    assert_eq!(pem("ra-encrypt-2.pem"), recipient, "the generation's files");
    assert_eq!(pem("ra-sign-2.pem"), signer);
    assert_eq!(
        pem("ra-encrypt.pem"),
        first_encrypt,
        "the first generation's untouched"
    );
    let new_ca = pem("ca-2.pem");
    assert!(support::openssl_verify(&new_ca, &recipient));
    assert!(support::openssl_verify(&new_ca, &signer));
    let view = enroll(&loaded, &recipient, &signer, "after-generation-renewal");
    assert_eq!(view.status, PkiStatus::Success);
}
