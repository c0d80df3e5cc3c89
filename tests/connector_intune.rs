//! The Intune connector end to end, against a local stand-in of the token endpoint, Graph
//! discovery and Intune's two services (tests/intune_standin), with enrollments by the
//! project's SCEP client through `App::handle`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod intune_standin;
mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::{Request, StatusCode};
use intune_standin::{Behaviour, IntuneStandin, INTUNE_SCOPE};
use scepd::connector::Connectors;
use scepd::scep::client::CertRepView;
use scepd::scep::{FailInfo, PkiStatus};
use scepd::store::{CertStatus, EventKind};
use serde_json::{json, Value};
use support::*;

const SECRET: &str = "client-secret-1";

struct Setup2 {
    instance: Instance,
    connectors: Arc<Connectors>,
    standin: IntuneStandin,
}

fn intune_template(extra: &str) -> String {
    format!("[challenge]\ntype = \"intune\"\n\n[issuance]\nvalidity_days = 30\n{extra}")
}

/// An instance whose template `intune` validates through the stand-in.
fn setup_with(connector_extra: &str, issuance_extra: &str) -> Setup2 {
    let standin = IntuneStandin::start(SECRET);
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(
        dir.path(),
        &Setup {
            templates: vec![("intune", intune_template(issuance_extra))],
            ..Setup::default()
        },
    );
    std::fs::write(dir.path().join("intune.secret"), format!("{SECRET}\n")).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&standin.config("intune.secret", connector_extra));
    std::fs::write(&config, text).unwrap();
    let loaded = scepd::cli::serve::load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
    let connectors = loaded.connectors.clone().expect("connectors");
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
    instance.ca_certs = scepd::scep::client::parse_ca_certs(&body).unwrap();
    let (recipient, signer) = scepd::scep::client::select_ra_certs(&instance.ca_certs).unwrap();
    instance.recipient = recipient;
    instance.reply_signer = signer;
    Setup2 {
        instance,
        connectors,
        standin,
    }
}

fn setup() -> Setup2 {
    setup_with("", "")
}

/// A PKCSReq with an (opaque) Intune challenge; returns the reply and the CSR.
fn enroll(s: &Setup2, device: &Device, cn: &str, tx: &str) -> (CertRepView, Vec<u8>) {
    let csr = device.simple_csr(cn, "opaque-intune-challenge-blob");
    let view = s.instance.exchange(
        "/scep/intune",
        Via::Post,
        &prepare(&s.instance, device, &csr, &options(tx)),
        &device.signer,
    );
    (view, csr)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn assert_failure(view: &CertRepView) {
    assert_eq!(view.status, PkiStatus::Failure, "expected FAILURE");
    assert_eq!(view.fail_info, Some(FailInfo::BadRequest));
    assert!(view.certs.is_empty());
}

fn store_certs(s: &Setup2) -> Vec<scepd::store::CertRecord> {
    s.instance.app.enroller().store().certificates().unwrap()
}

fn deliver_outbox(s: &Setup2) -> scepd::connector::worker::Round {
    let store = s.instance.app.enroller().store();
    scepd::connector::worker::deliver_due(&**store, &s.connectors, SystemTime::now()).unwrap()
}

#[test]
fn an_intune_enrollment_is_validated_issued_and_reported_with_the_same_transaction_id() {
    let s = setup();
    let device = Device::rsa(2048);
    let tx = "4F1E2D3C4B5A69788796A5B4C3D2E1F0A1B2C3D4";
    let (view, csr) = enroll(&s, &device, "laptop-1", tx);
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);
    let cert_der = view.certs[0].clone();

    let validations = s.standin.calls_to("ScepActions/validateRequest");
    assert_eq!(validations.len(), 1);
    let request = validations[0].json();
    assert_eq!(
        request,
        json!({"request": {"transactionId": tx, "certificateRequest": b64(&csr), "callerInfo": "scepd-tests/1.0"}})
    );
    assert_eq!(validations[0].header("UserAgent"), Some("scepd-tests/1.0"));

    let notifications = s.standin.calls_to("ScepActions/successNotification");
    assert_eq!(notifications.len(), 1, "reported before delivery");
    let n = notifications[0].json();
    let n = &n["notification"];
    let cert = openssl::x509::X509::from_der(&cert_der).unwrap();
    let serial = cert
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
        .to_ascii_uppercase();
    assert_eq!(n["transactionId"], tx);
    assert_eq!(n["certificateRequest"], b64(&csr));
    assert_eq!(
        n["certificateThumbprint"],
        hex::encode_upper(openssl::sha::sha1(&cert_der))
    );
    assert_eq!(n["certificateSerialNumber"], serial.as_str());
    let expiry = n["certificateExpirationDateUtc"].as_str().unwrap();
    assert_eq!(expiry.len(), "2026-12-23T20:26:02.000Z".len(), "{expiry}");
    assert!(
        expiry.ends_with(".000Z") && expiry.as_bytes()[10] == b'T',
        "{expiry}"
    );
    assert_eq!(
        n["issuingCertificateAuthority"],
        "CN=scepd test CA,O=scepd tests"
    );
    assert_eq!(n["callerInfo"], "scepd-tests/1.0");
    assert_eq!(n["caConfiguration"], "scepd\\ca");
    assert_eq!(n["certificateAuthority"], "ca");
    // Both tokens, the Intune scope byte for byte as Microsoft's libraries send it.
    let scopes = s.standin.state.lock().unwrap().token_scopes.clone();
    assert!(scopes.contains(&INTUNE_SCOPE.to_owned()), "{scopes:?}");
    assert!(
        scopes.contains(&s.standin.server.url("/.default")),
        "{scopes:?}"
    );
    // Confirmed synchronously: nothing left for the worker.
    assert!(s
        .instance
        .app
        .enroller()
        .store()
        .outbox()
        .unwrap()
        .is_empty());
    assert_eq!(store_certs(&s).len(), 1);
}

#[test]
fn rejected_validations_500s_and_timeouts_give_failure_and_no_certificate() {
    let s = setup();
    let cases = [
        ("tx-expired", Behaviour::Code("ChallengeExpired".into())),
        ("tx-subject", Behaviour::Code("SubjectNameMismatch".into())),
        (
            "tx-tenant",
            Behaviour::Code("BadTenantIdInChallenge".into()),
        ),
        ("tx-500", Behaviour::Status(500)),
        // The client gives up after timeout_ms = 2000.
        ("tx-timeout", Behaviour::Hang(Duration::from_secs(4))),
    ];
    for (tx, behaviour) in &cases {
        s.standin
            .state
            .lock()
            .unwrap()
            .validate
            .insert((*tx).into(), behaviour.clone());
    }
    for (tx, _) in &cases {
        let (view, _) = enroll(&s, &Device::rsa(2048), "refused", tx);
        assert_failure(&view);
    }
    assert!(store_certs(&s).is_empty(), "no certificate issued");
    assert!(s.standin.calls_to("successNotification").is_empty());
    // Refused by validation: nothing to report afterwards.
    assert!(s
        .instance
        .app
        .enroller()
        .store()
        .outbox()
        .unwrap()
        .is_empty());
    assert!(s.standin.calls_to("failureNotification").is_empty());
}

#[test]
fn a_refused_success_notification_delivers_nothing_and_revokes_the_certificate() {
    let s = setup();
    for (tx, behaviour) in [
        ("tx-refused", Behaviour::Code("Unknown".into())),
        ("tx-500", Behaviour::Status(500)),
    ] {
        s.standin
            .state
            .lock()
            .unwrap()
            .success
            .insert(tx.into(), behaviour);
        let device = Device::rsa(2048);
        let (view, csr) = enroll(&s, &device, tx, tx);
        assert_failure(&view);
        let record = store_certs(&s)
            .into_iter()
            .find(|c| c.transaction_id == tx)
            .expect("the certificate was issued and recorded");
        match &record.status {
            CertStatus::Revoked { reason, by, .. } => {
                assert_eq!(reason, "cessationOfOperation");
                assert_eq!(by, "intune-connector");
            }
            other => panic!("not revoked: {other:?}"),
        }
        // The served CRL lists it.
        let crl = crl_serials(&s);
        assert!(
            crl.contains(&record.serial),
            "CRL lists the withdrawn certificate"
        );
        // A retry of the same transaction does not get the revoked certificate.
        let again = s.instance.exchange(
            "/scep/intune",
            Via::Post,
            &prepare(&s.instance, &device, &csr, &options(tx)),
            &device.signer,
        );
        assert_failure(&again);
        // The failure notification goes through the outbox.
        let events = s.instance.app.enroller().store().outbox().unwrap();
        assert!(events
            .iter()
            .all(|e| e.event.kind == EventKind::Failed && e.event.connector == "intune"));
    }
    let round = deliver_outbox(&s);
    assert_eq!(round.delivered, 2);
    let failures = s.standin.calls_to("ScepActions/failureNotification");
    assert_eq!(failures.len(), 2);
    for f in &failures {
        let n = &f.json()["notification"];
        assert_eq!(n["hResult"], json!(0x8000_4005_i64));
        let description = n["errorDescription"].as_str().unwrap();
        assert!(
            !description.is_empty() && description.len() <= 255,
            "{description}"
        );
        assert!(
            description.starts_with("DeliveryNotConfirmed"),
            "{description}"
        );
        assert!(n["certificateRequest"]
            .as_str()
            .is_some_and(|c| !c.is_empty()));
    }
    let txs: Vec<Value> = failures
        .iter()
        .map(|f| f.json()["notification"]["transactionId"].clone())
        .collect();
    assert_eq!(txs, [json!("tx-refused"), json!("tx-500")]);
}

#[test]
fn a_failure_after_validation_sends_a_failure_notification() {
    // The CA refuses the CSR after Intune validated it: 2048-bit key, template wants 3072.
    let s = setup_with("", "min_rsa_bits = 3072\n");
    let (view, csr) = enroll(&s, &Device::rsa(2048), "small-key", "tx-small");
    assert_failure(&view);
    assert_eq!(s.standin.calls_to("validateRequest").len(), 1);
    let events = s.instance.app.enroller().store().outbox().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.kind, EventKind::Failed);
    // Intune down at first: the worker keeps it and retries.
    s.standin
        .state
        .lock()
        .unwrap()
        .fail_next
        .insert("failureNotification".into(), 1);
    let round = deliver_outbox(&s);
    assert_eq!((round.delivered, round.failed), (0, 1));
    let waiting = s.instance.app.enroller().store().outbox().unwrap();
    assert_eq!(waiting[0].attempts, 1);
    assert!(waiting[0]
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("500"));
    s.instance
        .app
        .enroller()
        .store()
        .outbox_retry(None)
        .unwrap();
    assert_eq!(deliver_outbox(&s).delivered, 1);
    let failures = s.standin.calls_to("ScepActions/failureNotification");
    let n = &failures.last().unwrap().json()["notification"];
    assert_eq!(n["transactionId"], "tx-small");
    assert_eq!(n["certificateRequest"], b64(&csr));
    assert_eq!(n["hResult"], json!(0x8000_4005_i64));
    assert!(n["errorDescription"].as_str().unwrap().len() <= 255);
    assert!(s
        .instance
        .app
        .enroller()
        .store()
        .outbox()
        .unwrap()
        .is_empty());
}

#[test]
fn an_expired_token_is_refreshed_and_a_failed_call_repeats_discovery() {
    let s = setup();
    let (view, _) = enroll(&s, &Device::rsa(2048), "one", "tx-1");
    assert_eq!(view.status, PkiStatus::Success);
    let (tokens, discoveries) = {
        let st = s.standin.state.lock().unwrap();
        (st.tokens_issued, st.discovery_calls)
    };
    assert_eq!(
        (tokens, discoveries),
        (2, 1),
        "one Graph and one Intune token"
    );
    // Cached: a second enrollment fetches nothing new.
    let (view, _) = enroll(&s, &Device::rsa(2048), "two", "tx-2");
    assert_eq!(view.status, PkiStatus::Success);
    assert_eq!(s.standin.state.lock().unwrap().tokens_issued, 2);

    // Every token expires: the 401 drops it, a fresh one is fetched, the call succeeds.
    s.standin.expire_tokens();
    let (view, _) = enroll(&s, &Device::rsa(2048), "three", "tx-3");
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);
    assert_eq!(s.standin.state.lock().unwrap().tokens_issued, 3);

    // A failed call (HTTP 500) forgets discovery: the next request discovers again.
    s.standin
        .state
        .lock()
        .unwrap()
        .fail_next
        .insert("validateRequest".into(), 1);
    let (view, _) = enroll(&s, &Device::rsa(2048), "four", "tx-4");
    assert_failure(&view);
    assert_eq!(s.standin.state.lock().unwrap().discovery_calls, 1);
    let (view, _) = enroll(&s, &Device::rsa(2048), "five", "tx-5");
    assert_eq!(view.status, PkiStatus::Success);
    assert_eq!(s.standin.state.lock().unwrap().discovery_calls, 2);

    // A rotated client secret is read at the next token fetch, without a restart.
    let rotated = "client-secret-2";
    std::fs::write(s.instance.dir.path().join("intune.secret"), rotated).unwrap();
    s.standin.state.lock().unwrap().secret = rotated.into();
    s.standin.expire_tokens();
    let (view, _) = enroll(&s, &Device::rsa(2048), "six", "tx-6");
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);

    // A token that expires within the safety margin (60 s) is never reused: validate and
    // notify each fetch a fresh one.
    s.standin.state.lock().unwrap().expires_in = Some(30);
    s.standin.expire_tokens();
    let before = s.standin.state.lock().unwrap().tokens_issued;
    let (view, _) = enroll(&s, &Device::rsa(2048), "seven", "tx-7");
    assert_eq!(view.status, PkiStatus::Success);
    let (view, _) = enroll(&s, &Device::rsa(2048), "eight", "tx-8");
    assert_eq!(view.status, PkiStatus::Success);
    assert_eq!(s.standin.state.lock().unwrap().tokens_issued, before + 4);
}

fn crl_serials(s: &Setup2) -> Vec<Vec<u8>> {
    let request = Request::get("/crl/ca.crl").body(Bytes::new()).unwrap();
    let response = runtime().block_on(s.instance.app.handle(request));
    assert_eq!(response.status(), StatusCode::OK);
    let crl = openssl::x509::X509Crl::from_der(response.body()).unwrap();
    let ca = openssl::x509::X509::from_der(s.instance.ca_cert()).unwrap();
    assert!(crl.verify(&ca.public_key().unwrap()).unwrap());
    crl.get_revoked()
        .map(|stack| {
            stack
                .iter()
                .map(|r| r.serial_number().to_bn().unwrap().to_vec())
                .collect()
        })
        .unwrap_or_default()
}

fn ocsp_status(s: &Setup2, cert: &[u8]) -> openssl::ocsp::OcspCertStatus {
    use openssl::hash::MessageDigest;
    use openssl::ocsp::{OcspCertId, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus};
    use openssl::x509::X509;
    let (cert, issuer) = (
        X509::from_der(cert).unwrap(),
        X509::from_der(s.instance.ca_cert()).unwrap(),
    );
    let id = || OcspCertId::from_cert(MessageDigest::sha1(), &cert, &issuer).unwrap();
    let mut request = OcspRequest::new().unwrap();
    request.add_id(id()).unwrap();
    let http = Request::post("/ocsp")
        .header("content-type", "application/ocsp-request")
        .body(Bytes::from(request.to_der().unwrap()))
        .unwrap();
    let body = runtime().block_on(s.instance.app.handle(http)).into_body();
    let response = OcspResponse::from_der(&body).unwrap();
    assert_eq!(response.status(), OcspResponseStatus::SUCCESSFUL);
    let basic = response.basic().unwrap();
    let mut certs = openssl::stack::Stack::new().unwrap();
    certs.push(issuer.clone()).unwrap();
    let store = openssl::x509::store::X509StoreBuilder::new()
        .unwrap()
        .build();
    basic.verify(&certs, &store, OcspFlag::TRUST_OTHER).unwrap();
    basic.find_status(&id()).expect("a status").status
}

#[test]
fn revocation_requests_are_applied_uploaded_and_shown_by_crl_and_ocsp() {
    // Two per download, so that the loop runs until Intune has none left.
    let s = setup_with("revocation_batch = 2\n", "");
    let (a, _) = enroll(&s, &Device::rsa(2048), "a", "tx-a");
    let (b, _) = enroll(&s, &Device::rsa(2048), "b", "tx-b");
    let (a, b) = (a.certs[0].clone(), b.certs[0].clone());
    let serial_of = |der: &[u8]| {
        openssl::x509::X509::from_der(der)
            .unwrap()
            .serial_number()
            .to_bn()
            .unwrap()
            .to_vec()
    };
    let (serial_a, serial_b) = (serial_of(&a), serial_of(&b));
    // B was revoked by an admin before Intune asks.
    let store = s.instance.app.enroller().store();
    store
        .revoke(&serial_b, "keyCompromise", "alice", SystemTime::now())
        .unwrap();
    {
        let mut st = s.standin.state.lock().unwrap();
        // A in lowercase with leading zeros: matched case-insensitively, zeros ignored.
        let a_text = format!("00{}", hex::encode(&serial_a));
        st.revocations.push_back(json!({"requestContext": "ctx-a", "serialNumber": a_text, "issuerName": "CN=scepd test CA,O=scepd tests", "caConfiguration": "scepd\\ca"}));
        st.revocations.push_back(json!({"requestContext": "ctx-unknown", "serialNumber": "0DEADBEEF0", "issuerName": null, "caConfiguration": null}));
        st.revocations.push_back(
            json!({"requestContext": "ctx-b", "serialNumber": hex::encode_upper(&serial_b)}),
        );
    }
    assert_eq!(ocsp_status(&s, &a), openssl::ocsp::OcspCertStatus::GOOD);
    let enroller = s.instance.app.enroller();
    let run = scepd::connector::intune::revocation::run_once(
        s.connectors.intune.as_ref().unwrap(),
        &**enroller.store(),
        &**enroller.ca(),
        enroller.crls().map(|c| &**c),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!((run.requests, run.revoked, run.errors), (3, 1, 2));
    let downloads = s.standin.calls_to("downloadRevocationRequests");
    assert_eq!(
        downloads.len(),
        3,
        "2 + 1 + the empty answer that ends the loop"
    );
    for d in &downloads {
        assert_eq!(
            d.json(),
            json!({"downloadParameters": {"maxRequests": 2, "issuerName": null}})
        );
    }
    let uploads = s.standin.state.lock().unwrap().uploads.clone();
    let by_context = |ctx: &str| {
        uploads
            .iter()
            .find(|u| u["requestContext"] == ctx)
            .cloned()
            .unwrap()
    };
    let ua = by_context("ctx-a");
    assert_eq!(
        (ua["succeeded"].clone(), ua["errorCode"].clone()),
        (json!(true), json!("None"))
    );
    let uu = by_context("ctx-unknown");
    assert_eq!(
        (uu["succeeded"].clone(), uu["errorCode"].clone()),
        (json!(false), json!("CertificateNotFoundError"))
    );
    let ub = by_context("ctx-b");
    assert_eq!(
        (ub["succeeded"].clone(), ub["errorCode"].clone()),
        (json!(false), json!("ConflictError"))
    );
    assert_eq!(s.standin.calls_to("uploadRevocationResults").len(), 2);

    match store.certificate(&serial_a).unwrap().unwrap().status {
        CertStatus::Revoked { by, .. } => assert_eq!(by, "intune"),
        other => panic!("{other:?}"),
    }
    let crl = crl_serials(&s);
    assert!(crl.contains(&serial_a) && crl.contains(&serial_b));
    assert_eq!(ocsp_status(&s, &a), openssl::ocsp::OcspCertStatus::REVOKED);

    // Intune re-delivers A (our upload was lost): still success, nothing changes.
    s.standin.state.lock().unwrap().revocations.push_back(
        json!({"requestContext": "ctx-a2", "serialNumber": hex::encode_upper(&serial_a)}),
    );
    let run = scepd::connector::intune::revocation::run_once(
        s.connectors.intune.as_ref().unwrap(),
        &**enroller.store(),
        &**enroller.ca(),
        enroller.crls().map(|c| &**c),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!((run.requests, run.revoked, run.errors), (1, 0, 0));
}

#[test]
fn connector_configuration_problems_are_all_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(
        dir.path(),
        &Setup {
            templates: vec![
                (
                    "intune",
                    format!("manual_approval = true\n{}", intune_template("")),
                ),
                (
                    "hooked",
                    "connector = \"webhook\"\n[challenge]\ntype = \"none\"\n".into(),
                ),
                (
                    "other",
                    "connector = \"pager\"\n[challenge]\ntype = \"none\"\n".into(),
                ),
            ],
            ..Setup::default()
        },
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[connector.intune]\ntenant = \"contoso.onmicrosoft.com\"\napp_id = \"x\"\n\
         client_secret_file = \"missing.secret\"\nauthority = \"http://login.example.com/\"\n\
         revocation_batch = 501\n\n[outbox]\nmax_events = 0\n",
    );
    std::fs::write(&config, text).unwrap();
    let errors = scepd::config::Config::load(&config)
        .unwrap_err()
        .0
        .join("\n");
    for expected in [
        "client_secret_file",
        "connector.intune.authority",
        "revocation_batch",
        "outbox.max_events",
        "template intune: manual_approval",
        "template hooked: needs a [connector.webhook]",
        "template other: connector = \"pager\"",
    ] {
        assert!(
            errors.contains(expected),
            "{expected:?} missing from:\n{errors}"
        );
    }
}

/// `scepd serve` runs the revocation loop on its schedule: a request queued at the
/// stand-in reaches the served CRL, and the log never shows the client secret or a token.
#[test]
fn scepd_serve_polls_intune_for_revocations_and_never_logs_secrets() {
    use common::{describe, free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard};
    use std::process::Command;
    let deadline = Duration::from_secs(60);
    let standin = IntuneStandin::start(SECRET);
    let scepd = || Command::new(env!("CARGO_BIN_EXE_scepd"));
    let dir = tempfile::tempdir().unwrap();
    let (addr, admin_addr) = (free_loopback_addr(), free_loopback_addr());
    let init = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin_addr.to_string()]),
        deadline,
    );
    assert!(init.status.success(), "{}", describe(&init));
    std::fs::write(
        dir.path().join("templates/intune.toml"),
        intune_template(""),
    )
    .unwrap();
    std::fs::write(dir.path().join("intune.secret"), SECRET).unwrap();
    let config = dir.path().join("scepd.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        &standin
            .config("intune.secret", "")
            .replace("revocation_poll_secs = 0", "revocation_poll_secs = 1"),
    );
    std::fs::write(&config, text).unwrap();
    let mut server = ChildGuard::spawn(
        scepd()
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("SCEPD_LOG", "debug"),
        &dir.path().join("serve.log"),
    );
    wait_for_http_ok(&mut server, addr, "/healthz", deadline);

    // Enroll over HTTP with our client.
    let http_get = |path: &str| {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        use std::io::{Read, Write};
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut data = Vec::new();
        stream.read_to_end(&mut data).unwrap();
        let split = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        data[split..].to_vec()
    };
    let certs =
        scepd::scep::client::parse_ca_certs(&http_get("/scep/intune?operation=GetCACert")).unwrap();
    let (recipient, reply_signer) = scepd::scep::client::select_ra_certs(&certs).unwrap();
    let device = Device::rsa(2048);
    let csr = device.simple_csr("served", "opaque-intune-challenge-blob");
    let request =
        scepd::scep::client::build_request(&csr, &recipient, &device.signer, &options("tx-served"))
            .unwrap();
    let message = percent_encoding::utf8_percent_encode(
        &b64(&request.der),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let reply = http_get(&format!(
        "/scep/intune?operation=PKIOperation&message={message}"
    ));
    let view = scepd::scep::client::read_cert_rep(&reply, &request, &reply_signer, &device.signer)
        .unwrap();
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);
    let serial = openssl::x509::X509::from_der(&view.certs[0])
        .unwrap()
        .serial_number()
        .to_bn()
        .unwrap();
    s_push(&standin, &serial.to_hex_str().unwrap());

    // The loop picks it up within a few polls; the served CRL lists it.
    let start = std::time::Instant::now();
    loop {
        server.assert_running();
        let crl = openssl::x509::X509Crl::from_der(&http_get("/crl/ca.crl")).unwrap();
        let listed = crl.get_revoked().is_some_and(|r| {
            r.iter()
                .any(|e| e.serial_number().to_bn().unwrap() == serial)
        });
        if listed {
            break;
        }
        assert!(
            start.elapsed() < deadline,
            "not revoked:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let uploads = standin.state.lock().unwrap().uploads.clone();
    assert_eq!(uploads[0]["succeeded"], json!(true));
    drop(server);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("Intune revocation requests applied"), "{log}");
    assert!(!log.contains(SECRET), "the client secret reached the log");
    assert!(!log.contains("token-1"), "an access token reached the log");
}

fn s_push(standin: &IntuneStandin, serial_hex: &str) {
    standin
        .state
        .lock()
        .unwrap()
        .revocations
        .push_back(json!({"requestContext": "ctx-served", "serialNumber": serial_hex}));
}
