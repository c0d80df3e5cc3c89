//! The webhook connector end to end: a real `scepd serve` reports enrollments, failures and
//! revocations to a receiver on 127.0.0.1 that is down at first; the events are retried,
//! survive a kill and restart of the server, and arrive signed, none lost, duplicates with
//! the same event id. Also the signed inbound revocation endpoint, `scepd outbox`,
//! `scepd status`, and `wait_for_delivery`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod intune_standin;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{describe, free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard};
use intune_standin::{signature_valid, Received, WebhookReceiver};
use scepd::scep::client::{self, CertRepView};
use scepd::scep::{FailInfo, PkiStatus};
use scepd::store::CertStatus;
use serde_json::Value;
use support::*;

const KEY: &str = "webhook-hmac-key-for-tests";
const DEADLINE: Duration = Duration::from_secs(60);

fn template() -> String {
    "connector = \"webhook\"\n\n[challenge]\ntype = \"static\"\nsecret_file = \"../challenge.secret\"\n\n\
     [issuance]\nvalidity_days = 30\n"
        .to_owned()
}

fn connector_config(url: &str, extra: &str) -> String {
    format!(
        "\n[connector.webhook]\nurl = \"{url}\"\nsecret_file = \"webhook.key\"\ntimeout_ms = 2000\n{extra}\n\
         [outbox]\ninitial_backoff_ms = 100\nmax_backoff_ms = 400\npoll_interval_ms = 100\n"
    )
}

/// One HTTP/1.1 exchange with `Connection: close`, bounded by 10 s: (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
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
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(&data).unwrap() else {
        panic!("incomplete answer");
    };
    (response.code.unwrap(), data[head..].to_vec())
}

fn enroll_over_http(addr: SocketAddr, cn: &str, tx: &str, challenge: &str) -> CertRepView {
    let (status, body) = http(addr, "GET", "/scep/devices?operation=GetCACert", &[], b"");
    assert_eq!(status, 200);
    let certs = client::parse_ca_certs(&body).unwrap();
    let (recipient, reply_signer) = client::select_ra_certs(&certs).unwrap();
    let device = Device::rsa(2048);
    let csr = device.simple_csr(cn, challenge);
    let request = client::build_request(&csr, &recipient, &device.signer, &options(tx)).unwrap();
    let (status, body) = http(
        addr,
        "POST",
        "/scep/devices?operation=PKIOperation",
        &[("Content-Type", "application/x-pki-message".into())],
        &request.der,
    );
    assert_eq!(status, 200);
    client::read_cert_rep(&body, &request, &reply_signer, &device.signer).unwrap()
}

/// Polls `done` every 50 ms until it holds or `DEADLINE` passes (then panics with `what`).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within {DEADLINE:?}: {what}");
}

fn sign(body: &[u8], timestamp: u64) -> Vec<(&'static str, String)> {
    let pkey = openssl::pkey::PKey::hmac(KEY.as_bytes()).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
    signer.update(format!("{timestamp}.").as_bytes()).unwrap();
    signer.update(body).unwrap();
    vec![
        ("X-Scepd-Timestamp", timestamp.to_string()),
        (
            "X-Scepd-Signature",
            format!("sha256={}", hex::encode(signer.sign_to_vec().unwrap())),
        ),
    ]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn webhook_events_are_signed_retried_and_delivered_after_a_restart_none_lost() {
    let receiver = WebhookReceiver::start();
    receiver.down.store(true, Ordering::SeqCst);
    let scepd = || Command::new(env!("CARGO_BIN_EXE_scepd"));
    let dir = tempfile::tempdir().unwrap();
    let (addr, admin_addr) = (free_loopback_addr(), free_loopback_addr());
    let init = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--listen", &addr.to_string()])
            .args(["--static-challenge", CHALLENGE])
            .args(["--admin-listen", &admin_addr.to_string()]),
        DEADLINE,
    );
    assert!(init.status.success(), "{}", describe(&init));
    std::fs::write(dir.path().join("templates/devices.toml"), template()).unwrap();
    std::fs::write(dir.path().join("webhook.key"), format!("{KEY}\n")).unwrap();
    let config = dir.path().join("scepd.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&connector_config(&receiver.server.url("/hook"), ""));
    std::fs::write(&config, toml).unwrap();
    let cli =
        |args: &[&str]| run_bounded(scepd().args(args).arg("--config").arg(&config), DEADLINE);
    let check = cli(&["check-config"]);
    assert!(check.status.success(), "{}", describe(&check));

    let mut server = ChildGuard::spawn(
        scepd().arg("serve").arg("--config").arg(&config),
        &dir.path().join("serve-1.log"),
    );
    wait_for_http_ok(&mut server, addr, "/healthz", DEADLINE);

    // Two certificates, one refusal, one revocation: four events.
    let ok1 = enroll_over_http(addr, "dev-1", "tx-ok-1", CHALLENGE);
    let ok2 = enroll_over_http(addr, "dev-2", "tx-ok-2", CHALLENGE);
    assert_eq!(
        (ok1.status, ok2.status),
        (PkiStatus::Success, PkiStatus::Success)
    );
    let bad = enroll_over_http(addr, "dev-3", "tx-bad", "wrong challenge");
    assert_eq!(bad.fail_info, Some(FailInfo::BadRequest));
    let serial2 = openssl::x509::X509::from_der(&ok2.certs[0])
        .unwrap()
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    let revoke = cli(&[
        "certs",
        "revoke",
        "--serial",
        &serial2,
        "--reason",
        "keyCompromise",
        "--by",
        "alice",
    ]);
    assert!(revoke.status.success(), "{}", describe(&revoke));

    // The receiver is down: the oldest event is tried again and again (backoff 100-400 ms),
    // and holds the newer ones back (oldest first per connector).
    wait_until(
        "the oldest event retried while the receiver is down",
        || {
            let ids: BTreeSet<String> = receiver
                .seen()
                .iter()
                .map(|r| r.header("x-scepd-event-id").unwrap_or("").to_owned())
                .collect();
            receiver.seen().len() >= 3 && ids.len() == 1
        },
    );
    let listed = cli(&["outbox", "list"]);
    assert!(listed.status.success(), "{}", describe(&listed));
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert!(listed.contains("HTTP 503"), "{listed}");
    let first_line = listed.lines().next().unwrap_or_default();
    assert!(
        first_line.contains("tx=tx-ok-1") && first_line.contains("issued"),
        "{listed}"
    );
    let status = cli(&["status"]);
    assert!(status.status.success(), "{}", describe(&status));
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("server: running") && status.contains("4 of 10000 events waiting"),
        "{status}"
    );

    // Killed (no drain) while the receiver is still down: the events are in the store.
    drop(server);
    // A revocation on the store while no server runs commits its event too.
    let serial1 = openssl::x509::X509::from_der(&ok1.certs[0])
        .unwrap()
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    let offline_revoke = cli(&[
        "certs",
        "revoke",
        "--serial",
        &serial1,
        "--reason",
        "superseded",
        "--by",
        "bob",
    ]);
    assert!(
        offline_revoke.status.success(),
        "{}",
        describe(&offline_revoke)
    );
    let offline = cli(&["outbox", "list"]);
    assert!(offline.status.success(), "{}", describe(&offline));
    assert_eq!(String::from_utf8_lossy(&offline.stdout).lines().count(), 5);
    let retry = cli(&["outbox", "retry", "--all"]);
    assert!(retry.status.success(), "{}", describe(&retry));

    // Back up, and a new server: everything arrives.
    let before_restart = receiver.seen().len();
    receiver.down.store(false, Ordering::SeqCst);
    let mut server = ChildGuard::spawn(
        scepd().arg("serve").arg("--config").arg(&config),
        &dir.path().join("serve-2.log"),
    );
    wait_for_http_ok(&mut server, addr, "/healthz", DEADLINE);
    wait_until("the outbox drains after the restart", || {
        let out = cli(&["outbox", "list"]);
        String::from_utf8_lossy(&out.stdout).trim() == "no events waiting"
    });
    let all = receiver.seen();
    let delivered: Vec<&Received> = all[before_restart..].iter().collect();
    let mut bodies: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in &all {
        assert!(
            signature_valid(KEY.as_bytes(), r),
            "every delivery is signed"
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(r.header("x-scepd-event-id"), Some(id.as_str()));
        let ts: u64 = r.header("x-scepd-timestamp").unwrap().parse().unwrap();
        assert!(ts.abs_diff(unix_now()) < 600);
        bodies.entry(id).or_default().push(body);
    }
    assert_eq!(bodies.len(), 5, "five events, none lost, none invented");
    for (id, copies) in &bodies {
        assert!(
            copies.windows(2).all(|w| w[0] == w[1]),
            "duplicates of {id} are the same event"
        );
    }
    let arrived: BTreeSet<&str> = delivered
        .iter()
        .map(|r| r.header("x-scepd-event-id").unwrap())
        .collect();
    assert_eq!(arrived.len(), 5, "each event delivered after the restart");
    let by_tx = |tx: &str, kind: &str| {
        bodies
            .values()
            .map(|c| &c[0])
            .find(|b| b["transaction_id"] == tx && b["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} event for {tx}: {bodies:?}"))
    };
    assert_eq!(
        by_tx("tx-ok-1", "revoked")["revoked_by"],
        "bob",
        "the offline revocation"
    );
    let issued = by_tx("tx-ok-1", "issued");
    assert_eq!(issued["template"], "devices");
    assert_eq!(issued["version"], 1);
    use base64::Engine;
    let cert = base64::engine::general_purpose::STANDARD
        .decode(issued["certificate"].as_str().unwrap())
        .unwrap();
    assert_eq!(cert, ok1.certs[0], "the issued certificate travels");
    by_tx("tx-ok-2", "issued");
    let failed = by_tx("tx-bad", "failed");
    assert_eq!(
        failed["reason"], "wrong_challenge",
        "the denial reason travels"
    );
    let revoked = by_tx("tx-ok-2", "revoked");
    assert_eq!(revoked["reason"], "keyCompromise");
    assert_eq!(revoked["revoked_by"], "alice");
    assert_eq!(
        revoked["serial"].as_str().unwrap(),
        serial2.to_ascii_uppercase()
    );

    // Inbound revocation, signed like the events (of a certificate nobody revoked yet).
    let ok3 = enroll_over_http(addr, "dev-4", "tx-ok-3", CHALLENGE);
    assert_eq!(ok3.status, PkiStatus::Success);
    let serial1 = openssl::x509::X509::from_der(&ok3.certs[0])
        .unwrap()
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    let body = format!(r#"{{"serial": "{serial1}", "reason": "affiliationChanged"}}"#);
    let (status, _) = http(
        admin_addr,
        "POST",
        "/v1/webhook/revoke",
        &[],
        body.as_bytes(),
    );
    assert_eq!(status, 401, "unsigned");
    let stale = sign(body.as_bytes(), unix_now() - 3600);
    let (status, _) = http(
        admin_addr,
        "POST",
        "/v1/webhook/revoke",
        &stale,
        body.as_bytes(),
    );
    assert_eq!(status, 401, "timestamp an hour old");
    let mut forged = sign(body.as_bytes(), unix_now());
    forged[1].1 = format!("sha256={}", "00".repeat(32));
    let (status, _) = http(
        admin_addr,
        "POST",
        "/v1/webhook/revoke",
        &forged,
        body.as_bytes(),
    );
    assert_eq!(status, 401, "wrong signature");
    let signed = sign(body.as_bytes(), unix_now());
    let (status, answer) = http(
        admin_addr,
        "POST",
        "/v1/webhook/revoke",
        &signed,
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["certificate"]["revoked_by"], "webhook");
    assert_eq!(
        answer["certificate"]["revocation_reason"],
        "affiliationChanged"
    );
    let unknown = br#"{"serial": "0DEADBEEF0"}"#;
    let signed = sign(unknown, unix_now());
    let (status, _) = http(admin_addr, "POST", "/v1/webhook/revoke", &signed, unknown);
    assert_eq!(status, 404);
    server.assert_running();
    drop(server);
    for log in ["serve-1.log", "serve-2.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        assert!(text.contains("connector event"), "{log}: {text}");
        assert!(!text.contains(KEY), "{log} shows the HMAC key");
    }
}

#[test]
fn with_wait_for_delivery_no_certificate_is_delivered_until_the_webhook_accepts_it() {
    let receiver = WebhookReceiver::start();
    receiver.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(
        dir.path(),
        &Setup {
            templates: vec![("devices", template())],
            ..Setup::default()
        },
    );
    std::fs::write(dir.path().join("webhook.key"), KEY).unwrap();
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&connector_config(
        &receiver.server.url("/hook"),
        "wait_for_delivery = true",
    ));
    std::fs::write(&config, toml).unwrap();
    let loaded = scepd::cli::serve::load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
    drop(loaded.admin);
    let app = Arc::try_unwrap(loaded.app).ok().expect("sole owner");
    let mut instance = Instance {
        dir,
        app,
        ca_certs: Vec::new(),
        recipient: Vec::new(),
        reply_signer: Vec::new(),
    };
    let body = instance.get("/scep", "operation=GetCACert").into_body();
    instance.ca_certs = client::parse_ca_certs(&body).unwrap();
    let (recipient, signer) = client::select_ra_certs(&instance.ca_certs).unwrap();
    instance.recipient = recipient;
    instance.reply_signer = signer;
    let enroll = |tx: &str| {
        let device = Device::rsa(2048);
        let csr = device.simple_csr(tx, CHALLENGE);
        instance.exchange(
            "/scep/devices",
            Via::Post,
            &prepare(&instance, &device, &csr, &options(tx)),
            &device.signer,
        )
    };
    let refused = enroll("tx-down");
    assert_eq!(refused.status, PkiStatus::Failure);
    assert!(refused.certs.is_empty());
    let store = instance.app.enroller().store();
    let withdrawn = store
        .certificates()
        .unwrap()
        .into_iter()
        .find(|c| c.transaction_id == "tx-down")
        .unwrap();
    assert!(
        matches!(&withdrawn.status, CertStatus::Revoked { by, .. } if by == "webhook-connector"),
        "{:?}",
        withdrawn.status
    );
    // Its issued event is gone; a failed event waits for the webhook instead.
    let waiting = store.outbox().unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].event.kind.as_str(), "failed");
    assert_eq!(
        waiting[0].event.reason.as_deref(),
        Some("DeliveryNotConfirmed")
    );

    receiver.down.store(false, Ordering::SeqCst);
    let delivered = enroll("tx-up");
    assert_eq!(delivered.status, PkiStatus::Success);
    let seen = receiver.seen();
    let last: Value = serde_json::from_slice(&seen.last().unwrap().body).unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["transaction_id"].as_str()),
        (Some("issued"), Some("tx-up"))
    );
    // Only the old failure is left for the worker.
    assert_eq!(store.outbox().unwrap().len(), 1);
}
