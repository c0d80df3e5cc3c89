//! Certificate lifecycle over SCEP through `App::handle`: GetCert, GetCRL, RenewalReq,
//! manual approval and CertPoll.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::time::SystemTime;

use openssl::x509::{X509Crl, X509};
use scepd::scep::client::{self, CertRepView, ClientIdentity, PreparedRequest};
use scepd::scep::message_data;
use scepd::scep::{FailInfo, MessageType, PkiStatus};
use support::*;

fn assert_failure(view: &CertRepView, expected: FailInfo) {
    assert_eq!(view.status, PkiStatus::Failure, "expected a FAILURE");
    assert_eq!(
        view.fail_info,
        Some(expected),
        "text: {:?}",
        view.fail_info_text
    );
    assert!(!view.has_content, "a FAILURE carries no envelope");
}

/// Enrolls `device` with a PKCSReq and returns the issued certificate (DER).
fn enroll(instance: &Instance, device: &Device, cn: &str, tx: &str) -> Vec<u8> {
    let csr = device.simple_csr(cn, CHALLENGE);
    let view = instance.exchange(
        "/scep",
        Via::Post,
        &prepare(instance, device, &csr, &options(tx)),
        &device.signer,
    );
    assert_eq!(
        view.status,
        PkiStatus::Success,
        "{:?} {:?}",
        view.fail_info,
        view.fail_info_text
    );
    view.certs[0].clone()
}

fn serial_of(cert_der: &[u8]) -> Vec<u8> {
    X509::from_der(cert_der)
        .unwrap()
        .serial_number()
        .to_bn()
        .unwrap()
        .to_vec()
}

/// A GetCert or GetCRL for `serial` under the subject of `issuer_der`, signed by `signer`.
fn query(
    instance: &Instance,
    message_type: MessageType,
    issuer_der: &[u8],
    serial: &[u8],
    signer: &ClientIdentity,
    tx: &str,
) -> (PreparedRequest, CertRepView) {
    let data = message_data::encode_issuer_and_serial(issuer_der, serial).unwrap();
    let mut opts = options(tx);
    opts.message_type = message_type;
    let request = client::build_request(&data, &instance.recipient, signer, &opts).unwrap();
    let view = instance.exchange("/scep", Via::Post, &request, signer);
    (request, view)
}

#[test]
fn get_cert_returns_an_issued_certificate_and_bad_cert_id_otherwise() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let cert = enroll(&instance, &device, "getcert", "tx-getcert-enroll");
    let serial = serial_of(&cert);

    // Anyone may fetch a certificate (it is public); the reply is encrypted to the asker.
    let asker = Device::rsa(2048);
    let (_, view) = query(
        &instance,
        MessageType::GetCert,
        instance.ca_cert(),
        &serial,
        &asker.signer,
        "tx-getcert-1",
    );
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);
    assert_eq!(view.certs, vec![cert.clone()]);

    // An unknown serial, or a known serial under another issuer: badCertId.
    let (_, view) = query(
        &instance,
        MessageType::GetCert,
        instance.ca_cert(),
        &[0x01, 0x02, 0x03],
        &asker.signer,
        "tx-getcert-2",
    );
    assert_failure(&view, FailInfo::BadCertId);
    let (_, view) = query(
        &instance,
        MessageType::GetCert,
        &cert, // its subject is not our CA's
        &serial,
        &asker.signer,
        "tx-getcert-3",
    );
    assert_failure(&view, FailInfo::BadCertId);

    // messageData that is not an IssuerAndSerialNumber: badRequest.
    let mut opts = options("tx-getcert-4");
    opts.message_type = MessageType::GetCert;
    let request =
        client::build_request(&[0x05, 0x00], &instance.recipient, &asker.signer, &opts).unwrap();
    let view = instance.exchange("/scep", Via::Post, &request, &asker.signer);
    assert_failure(&view, FailInfo::BadRequest);
}

#[test]
fn get_crl_returns_a_signed_crl_listing_revocations() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let cert = enroll(&instance, &device, "getcrl", "tx-getcrl-enroll");
    let serial = serial_of(&cert);
    let ca = X509::from_der(instance.ca_cert()).unwrap();

    let (_, view) = query(
        &instance,
        MessageType::GetCrl,
        instance.ca_cert(),
        &serial,
        &device.signer,
        "tx-getcrl-1",
    );
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);
    assert!(view.certs.is_empty());
    assert_eq!(view.crls.len(), 1);
    let crl = X509Crl::from_der(&view.crls[0]).unwrap();
    assert!(crl.verify(&ca.public_key().unwrap()).unwrap());
    assert!(crl.get_revoked().is_none_or(|r| r.is_empty()));

    instance
        .app
        .enroller()
        .store()
        .revoke(&serial, "keyCompromise", "test", SystemTime::now())
        .unwrap();
    // GetCRL answers with the published CRL, which the admin API re-signs after each
    // revocation; this test revoked in the store directly, so it re-signs as the hook would.
    instance
        .app
        .enroller()
        .crls()
        .expect("serve publishes a CRL")
        .regenerate_all(SystemTime::now())
        .unwrap();
    let (_, view) = query(
        &instance,
        MessageType::GetCrl,
        instance.ca_cert(),
        &serial,
        &device.signer,
        "tx-getcrl-2",
    );
    let crl = X509Crl::from_der(&view.crls[0]).unwrap();
    assert!(crl.verify(&ca.public_key().unwrap()).unwrap());
    let listed: Vec<Vec<u8>> = crl
        .get_revoked()
        .unwrap()
        .iter()
        .map(|r| r.serial_number().to_bn().unwrap().to_vec())
        .collect();
    assert_eq!(listed, vec![serial.clone()]);
    // `openssl crl` as an admin would run it: verifies against the CA.
    let text = openssl_crl_verify(instance.ca_cert(), &view.crls[0]);
    assert!(text.contains("verify OK"), "{text}");

    // A certificate we did not issue: badCertId.
    let (_, view) = query(
        &instance,
        MessageType::GetCrl,
        &cert,
        &serial,
        &device.signer,
        "tx-getcrl-3",
    );
    assert_failure(&view, FailInfo::BadCertId);
}

fn openssl_crl_verify(ca_der: &[u8], crl_der: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = X509::from_der(ca_der).unwrap().to_pem().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.path().join("crl.der"), crl_der).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// A template file: static challenge, `issuance` and `extra` (top-level keys and tables).
fn template(top: &str, issuance: &str, extra: &str) -> String {
    format!(
        "{top}\n[challenge]\ntype = \"static\"\nsecret_file = \"../challenge.secret\"\n\n\
         [issuance]\n{issuance}\n{extra}"
    )
}

/// A RenewalReq (or PKCSReq) for a fresh key with `cn`, signed by `old` and the old key.
fn renewal_request(
    instance: &Instance,
    old: &ClientIdentity,
    cn: &str,
    challenge: Option<&str>,
    message_type: MessageType,
    tx: &str,
) -> PreparedRequest {
    let new_device = Device::rsa(2048);
    let subject = format!("CN={cn},O=scepd tests");
    let csr = new_device.csr(&scepd::scep::csr::CsrSpec {
        subject: &subject,
        challenge,
        ..Default::default()
    });
    let mut opts = options(tx);
    opts.message_type = message_type;
    client::build_request(&csr, &instance.recipient, old, &opts).unwrap()
}

/// Runs a request through the enroller at `now` (the clock App::handle would not let us set).
fn at_time(
    instance: &Instance,
    template: &str,
    request: &PreparedRequest,
    signer: &ClientIdentity,
    now: SystemTime,
) -> CertRepView {
    let enroller = instance.app.enroller();
    let route = enroller.template(template).expect("template");
    match enroller.pki_operation(route, &request.der, now) {
        scepd::enroll::PkiReply::CertRep { der, .. } => {
            client::read_cert_rep(&der, request, &instance.reply_signer, signer).unwrap()
        }
        other => panic!("not a CertRep: {other:?}"),
    }
}

fn identity(cert_der: &[u8], device: &Device) -> ClientIdentity {
    ClientIdentity {
        cert_der: cert_der.to_vec(),
        key: device.key.clone(),
    }
}

#[test]
fn renewal_with_an_issued_certificate_succeeds_without_a_challenge() {
    let instance = Instance::default_instance();
    let caps = instance.get("/scep", "operation=GetCACaps").into_body();
    assert!(String::from_utf8_lossy(&caps)
        .lines()
        .any(|l| l == "Renewal"));
    let device = Device::rsa(2048);
    let old = enroll(&instance, &device, "renew-me", "tx-renew-enroll");
    let signer = identity(&old, &device);
    let request = renewal_request(
        &instance,
        &signer,
        "renew-me",
        None,
        MessageType::RenewalReq,
        "tx-renew-1",
    );
    let view = instance.exchange("/scep", Via::Post, &request, &signer);
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);
    let new = &view.certs[0];
    assert_ne!(new, &old);
    assert!(openssl_verify(instance.ca_cert(), new));
    let (old_x, new_x) = (X509::from_der(&old).unwrap(), X509::from_der(new).unwrap());
    assert_eq!(
        old_x.subject_name().to_der().unwrap(),
        new_x.subject_name().to_der().unwrap()
    );
    // By default the old certificate stays valid.
    let record = instance
        .app
        .enroller()
        .store()
        .certificate(&serial_of(&old))
        .unwrap()
        .unwrap();
    assert_eq!(record.status, scepd::store::CertStatus::Valid);

    // The same transaction retried gets the same certificate.
    let again = instance.exchange("/scep", Via::Post, &request, &signer);
    assert_eq!(&again.certs[0], new);

    // Another subject than the old certificate's: refused by default.
    let request = renewal_request(
        &instance,
        &signer,
        "someone-else",
        None,
        MessageType::RenewalReq,
        "tx-renew-2",
    );
    let view = instance.exchange("/scep", Via::Post, &request, &signer);
    assert_failure(&view, FailInfo::BadRequest);
}

#[test]
fn renewal_signed_by_an_expired_revoked_foreign_or_self_signed_certificate_fails() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let old = enroll(&instance, &device, "renew-fail", "tx-rf-enroll");
    let signer = identity(&old, &device);

    // Expired: the same request at a time after the old certificate's notAfter.
    let not_after = instance
        .app
        .enroller()
        .store()
        .certificate(&serial_of(&old))
        .unwrap()
        .unwrap()
        .not_after;
    let request = renewal_request(
        &instance,
        &signer,
        "renew-fail",
        None,
        MessageType::RenewalReq,
        "tx-rf-expired",
    );
    let view = at_time(&instance, "default", &request, &signer, not_after + DAY);
    assert_failure(&view, FailInfo::BadRequest);
    // ... while the same request now succeeds (the failed transactionID is reusable).
    let view = at_time(&instance, "default", &request, &signer, SystemTime::now());
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);

    // Self-signed signer (a PKCSReq-style throwaway): refused, no challenge fallback.
    let request = renewal_request(
        &instance,
        &device.signer,
        "renew-fail",
        Some(CHALLENGE),
        MessageType::RenewalReq,
        "tx-rf-self",
    );
    let view = instance.exchange("/scep", Via::Post, &request, &device.signer);
    assert_failure(&view, FailInfo::BadRequest);

    // Foreign: a certificate for the same key and subject from another CA.
    let foreign = foreign_certificate(&instance, &device, "CN=renew-fail,O=scepd tests");
    let foreign_signer = identity(&foreign, &device);
    let request = renewal_request(
        &instance,
        &foreign_signer,
        "renew-fail",
        None,
        MessageType::RenewalReq,
        "tx-rf-foreign",
    );
    let view = instance.exchange("/scep", Via::Post, &request, &foreign_signer);
    assert_failure(&view, FailInfo::BadRequest);

    // Revoked.
    instance
        .app
        .enroller()
        .store()
        .revoke(&serial_of(&old), "keyCompromise", "test", SystemTime::now())
        .unwrap();
    let request = renewal_request(
        &instance,
        &signer,
        "renew-fail",
        None,
        MessageType::RenewalReq,
        "tx-rf-revoked",
    );
    let view = instance.exchange("/scep", Via::Post, &request, &signer);
    assert_failure(&view, FailInfo::BadRequest);
}

#[test]
fn renewal_window_supersede_and_signed_pkcsreq_as_renewal() {
    let short = template(
        "description = \"renewal rules\"",
        "validity_days = 30",
        "[renewal]\nallowed_days_before_expiry = 10\nrevoke_superseded = true\n\
         treat_signed_pkcsreq_as_renewal = true\n",
    );
    let instance = Instance::new(Setup {
        templates: vec![("short", short)],
        ..Setup::default()
    });
    let device = Device::rsa(2048);
    let csr = device.simple_csr("windowed", CHALLENGE);
    let view = instance.exchange(
        "/scep/short",
        Via::Post,
        &prepare(&instance, &device, &csr, &options("tx-win-enroll")),
        &device.signer,
    );
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);
    let old = view.certs[0].clone();
    let signer = identity(&old, &device);

    // Too early: 30-day certificate, renewal only in its last 10 days.
    let request = renewal_request(
        &instance,
        &signer,
        "windowed",
        None,
        MessageType::RenewalReq,
        "tx-win-early",
    );
    let view = instance.exchange("/scep/short", Via::Post, &request, &signer);
    assert_failure(&view, FailInfo::BadRequest);

    // A certificate of the default template cannot renew into this one.
    let other = enroll(&instance, &device, "windowed", "tx-win-default");
    let other_signer = identity(&other, &device);
    let request = renewal_request(
        &instance,
        &other_signer,
        "windowed",
        None,
        MessageType::RenewalReq,
        "tx-win-cross",
    );
    let view = at_time(
        &instance,
        "short",
        &request,
        &other_signer,
        SystemTime::now() + 25 * DAY,
    );
    assert_failure(&view, FailInfo::BadRequest);

    // In the window, as a PKCSReq signed by the old certificate without a challenge (Cisco).
    let request = renewal_request(
        &instance,
        &signer,
        "windowed",
        None,
        MessageType::PkcsReq,
        "tx-win-late",
    );
    let view = at_time(
        &instance,
        "short",
        &request,
        &signer,
        SystemTime::now() + 25 * DAY,
    );
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);
    let store = instance.app.enroller().store();
    match store.certificate(&serial_of(&old)).unwrap().unwrap().status {
        scepd::store::CertStatus::Revoked { reason, .. } => assert_eq!(reason, "superseded"),
        other => panic!("old certificate not superseded: {other:?}"),
    }
    let revocations = store.revocations().unwrap();
    assert!(revocations.iter().any(|(s, _, _)| s == &serial_of(&old)));
    // The CRL served over HTTP lists it at once, not at the next scheduled signing.
    let crl = instance.get("/crl/ca.crl", "");
    assert_eq!(crl.status(), http::StatusCode::OK);
    let listed = X509Crl::from_der(crl.body()).unwrap();
    let listed: Vec<Vec<u8>> = listed
        .get_revoked()
        .map(|stack| {
            stack
                .iter()
                .map(|r| r.serial_number().to_bn().unwrap().to_vec())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        listed.contains(&serial_of(&old)),
        "superseded certificate missing from the CRL"
    );

    // On the default template (no such rule) a PKCSReq signed by an issued certificate
    // still needs the challenge.
    let request = renewal_request(
        &instance,
        &other_signer,
        "windowed",
        None,
        MessageType::PkcsReq,
        "tx-win-default-pkcsreq",
    );
    let view = instance.exchange("/scep", Via::Post, &request, &other_signer);
    assert_failure(&view, FailInfo::BadRequest);
}

/// A certificate for `device`'s key, signed by a CA scepd does not know.
fn foreign_certificate(instance: &Instance, device: &Device, subject: &str) -> Vec<u8> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let ca_key = rsa_key(2048);
    let our_ca = X509::from_der(instance.ca_cert()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    for part in subject.split(',') {
        let (k, v) = part.split_once('=').unwrap();
        name.append_entry_by_text(k, v).unwrap();
    }
    let name = name.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    let serial = BigNum::from_u32(0x1234_5678).unwrap();
    builder
        .set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&name).unwrap();
    // Same issuer name as our CA: only the signature tells them apart.
    builder.set_issuer_name(our_ca.subject_name()).unwrap();
    builder.set_pubkey(&device.key).unwrap();
    builder
        .set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    builder.sign(&ca_key, MessageDigest::sha256()).unwrap();
    builder.build().to_der().unwrap()
}

/// A CertPoll for `tx`, with the IssuerAndSubject scepclient would send.
fn poll_request(instance: &Instance, device: &Device, cn: &str, tx: &str) -> PreparedRequest {
    use der::{Decode, Encode};
    let ca = x509_cert::Certificate::from_der(instance.ca_cert()).unwrap();
    let subject: x509_cert::name::Name = format!("CN={cn},O=scepd tests").parse().unwrap();
    let data =
        message_data::encode_issuer_and_subject(&ca.tbs_certificate.subject, &subject).unwrap();
    assert!(!subject.to_der().unwrap().is_empty());
    let mut opts = options(tx);
    opts.message_type = MessageType::CertPoll;
    client::build_request(&data, &instance.recipient, &device.signer, &opts).unwrap()
}

fn manual_instance() -> Instance {
    Instance::new(Setup {
        templates: vec![(
            "manual",
            template(
                "manual_approval = true\npending_expiry_hours = 1",
                "validity_days = 30",
                "",
            ),
        )],
        ..Setup::default()
    })
}

#[test]
fn manual_approval_pending_then_success_after_approve() {
    use scepd::enroll::queue::{self, DecideResult};
    use scepd::store::Verdict;
    let instance = manual_instance();
    let store = instance.app.enroller().store().clone();
    let device = Device::rsa(2048);

    // The challenge is checked before anything is parked.
    let wrong = device.simple_csr("manual-1", "wrong challenge");
    let view = instance.exchange(
        "/scep/manual",
        Via::Post,
        &prepare(&instance, &device, &wrong, &options("tx-manual-wrong")),
        &device.signer,
    );
    assert_failure(&view, FailInfo::BadRequest);
    assert!(store.pending_requests().unwrap().is_empty());

    let csr = device.simple_csr("manual-1", CHALLENGE);
    let request = prepare(&instance, &device, &csr, &options("tx-manual-1"));
    let view = instance.exchange("/scep/manual", Via::Post, &request, &device.signer);
    assert_eq!(view.status, PkiStatus::Pending, "{:?}", view.fail_info_text);
    assert!(!view.has_content, "a PENDING carries no envelope");
    let listed = queue::list(&*store, SystemTime::now()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].transaction_id, "tx-manual-1");
    assert_eq!(listed[0].state, "waiting");
    assert_eq!(listed[0].subject, "CN=manual-1,O=scepd tests");

    // A retried PKCSReq and a CertPoll: still PENDING.
    let again = prepare(&instance, &device, &csr, &options("tx-manual-1"));
    let view = instance.exchange("/scep/manual", Via::Post, &again, &device.signer);
    assert_eq!(view.status, PkiStatus::Pending);
    let poll = poll_request(&instance, &device, "manual-1", "tx-manual-1");
    let view = instance.exchange("/scep/manual", Via::Post, &poll, &device.signer);
    assert_eq!(view.status, PkiStatus::Pending);
    // The same transactionID with another CSR is refused.
    let other = device.simple_csr("manual-other", CHALLENGE);
    let view = instance.exchange(
        "/scep/manual",
        Via::Post,
        &prepare(&instance, &device, &other, &options("tx-manual-1")),
        &device.signer,
    );
    assert_failure(&view, FailInfo::BadRequest);

    // Approve: the next poll gets the certificate, and so does every retry.
    match queue::decide(
        &*store,
        "tx-manual-1",
        Verdict::Approve,
        "alice",
        SystemTime::now(),
    ) {
        DecideResult::Done(answer) => assert_eq!(answer.outcome, "approved"),
        _ => panic!("approve failed"),
    }
    match queue::decide(
        &*store,
        "tx-manual-1",
        Verdict::Reject,
        "bob",
        SystemTime::now(),
    ) {
        DecideResult::Done(answer) => assert_eq!(answer.outcome, "already_decided"),
        _ => panic!("second decision"),
    }
    let poll = poll_request(&instance, &device, "manual-1", "tx-manual-1");
    let view = instance.exchange("/scep/manual", Via::Post, &poll, &device.signer);
    assert_eq!(view.status, PkiStatus::Success, "{:?}", view.fail_info_text);
    let cert = view.certs[0].clone();
    assert!(openssl_verify(instance.ca_cert(), &cert));
    let record = store.certificate(&serial_of(&cert)).unwrap().unwrap();
    assert_eq!(record.template, "manual");
    assert_eq!(record.transaction_id, "tx-manual-1");
    let poll = poll_request(&instance, &device, "manual-1", "tx-manual-1");
    let view = instance.exchange("/scep/manual", Via::Post, &poll, &device.signer);
    assert_eq!(view.certs, vec![cert.clone()]);
    let again = prepare(&instance, &device, &csr, &options("tx-manual-1"));
    let view = instance.exchange("/scep/manual", Via::Post, &again, &device.signer);
    assert_eq!(view.certs, vec![cert]);
    assert_eq!(store.certificates().unwrap().len(), 1);
}

#[test]
fn manual_approval_reject_expiry_and_unknown_poll() {
    use scepd::enroll::queue::{self, DecideResult};
    use scepd::store::Verdict;
    let instance = manual_instance();
    let store = instance.app.enroller().store().clone();
    let device = Device::rsa(2048);
    for (cn, tx) in [("rejected", "tx-reject"), ("expiring", "tx-expire")] {
        let csr = device.simple_csr(cn, CHALLENGE);
        let view = instance.exchange(
            "/scep/manual",
            Via::Post,
            &prepare(&instance, &device, &csr, &options(tx)),
            &device.signer,
        );
        assert_eq!(view.status, PkiStatus::Pending);
    }

    assert!(matches!(
        queue::decide(
            &*store,
            "tx-reject",
            Verdict::Reject,
            "alice",
            SystemTime::now()
        ),
        DecideResult::Done(_)
    ));
    let poll = poll_request(&instance, &device, "rejected", "tx-reject");
    let view = instance.exchange("/scep/manual", Via::Post, &poll, &device.signer);
    assert_failure(&view, FailInfo::BadRequest);

    // pending_expiry_hours = 1: two hours later the request has expired.
    let later = SystemTime::now() + std::time::Duration::from_secs(2 * 3600);
    let poll = poll_request(&instance, &device, "expiring", "tx-expire");
    let view = at_time(&instance, "manual", &poll, &device.signer, later);
    assert_failure(&view, FailInfo::BadRequest);
    assert!(matches!(
        queue::decide(&*store, "tx-expire", Verdict::Approve, "alice", later),
        DecideResult::Expired
    ));
    let mut states: Vec<(String, String)> = queue::list(&*store, later)
        .unwrap()
        .into_iter()
        .map(|v| (v.transaction_id, v.state))
        .collect();
    states.sort();
    let expected = [("tx-expire", "expired"), ("tx-reject", "rejected")];
    assert_eq!(
        states,
        expected.map(|(t, s)| (t.to_owned(), s.to_owned())).to_vec()
    );

    // CertPoll for a transaction nobody parked: badRequest.
    let poll = poll_request(&instance, &device, "nobody", "tx-unknown");
    let view = instance.exchange("/scep/manual", Via::Post, &poll, &device.signer);
    assert_failure(&view, FailInfo::BadRequest);
    assert!(matches!(
        queue::decide(
            &*store,
            "tx-unknown",
            Verdict::Approve,
            "alice",
            SystemTime::now()
        ),
        DecideResult::NotFound
    ));
}

/// The whole manual-approval loop against the binary and a real client: micromdm's
/// scepclient 2.1.0 gets PENDING and retries its PKCSReq every 30 s (same transactionID,
/// same CSR); `scepd requests list` shows the request and `scepd requests approve` (through
/// the admin API while `serve` holds the store) releases the certificate.
#[test]
fn scepclient_waits_for_scepd_requests_approve() {
    use common::{describe, free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard};
    use std::process::Command;
    use std::time::{Duration, Instant};
    let deadline = Duration::from_secs(60);
    let scepd = || Command::new(env!("CARGO_BIN_EXE_scepd"));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let init = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(dir.path())
            .args([
                "--listen",
                &addr.to_string(),
                "--static-challenge",
                CHALLENGE,
            ])
            .args(["--admin-listen", &free_loopback_addr().to_string()]),
        deadline,
    );
    assert!(init.status.success(), "{}", describe(&init));
    let config = dir.path().join("scepd.toml");
    // scepclient 2.1.0 encrypts with single DES: allowed on this template's path only.
    std::fs::write(
        dir.path().join("templates/manual.toml"),
        template(
            "manual_approval = true\nlegacy_algorithms = true",
            "validity_days = 30",
            "",
        ),
    )
    .unwrap();
    let mut server = ChildGuard::spawn(
        scepd().arg("serve").arg("--config").arg(&config),
        &dir.path().join("serve.log"),
    );
    wait_for_http_ok(&mut server, addr, "/healthz", deadline);
    let cli =
        |args: &[&str]| run_bounded(scepd().args(args).arg("--config").arg(&config), deadline);

    let client_dir = dir.path().join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    let scepclient = common::ensure_debian_tool("scepclient", "scep");
    let mut client = ChildGuard::spawn(
        Command::new(scepclient).current_dir(&client_dir).args([
            "-private-key",
            "key.pem",
            "-server-url",
            &format!("http://{addr}/scep/manual"),
            "-challenge",
            CHALLENGE,
            "-cn",
            "manual-device",
        ]),
        &dir.path().join("scepclient.log"),
    );

    // The request shows up in the queue.
    let started = Instant::now();
    let txid = loop {
        let list = cli(&["requests", "list"]);
        assert!(list.status.success(), "{}", describe(&list));
        let text = String::from_utf8(list.stdout).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("CN=manual-device")) {
            assert!(line.contains(" waiting "), "{line}");
            break line.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < deadline,
            "no pending request: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Still waiting (PENDING is not an error for it).
    client.assert_running();

    let approve = cli(&["requests", "approve", &txid, "--by", "tester"]);
    assert!(approve.status.success(), "{}", describe(&approve));
    assert!(String::from_utf8_lossy(&approve.stdout).contains("approved"));

    // scepclient retries after 30 s and gets its certificate.
    let status = client
        .wait_for_exit(Duration::from_secs(90))
        .expect("scepclient finished");
    assert!(
        status.success(),
        "{}\n{}",
        client.log_text(),
        server.log_text()
    );
    let issued = std::fs::read(client_dir.join("client.pem")).expect("client.pem written");
    let issued = X509::from_pem(&issued).unwrap();
    assert!(format!("{:?}", issued.subject_name()).contains("manual-device"));
    let list = cli(&["certs", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("CN=manual-device"));
    let requests = cli(&["requests", "list"]);
    assert!(String::from_utf8_lossy(&requests.stdout).contains(" approved "));
}

/// With no server running, `scepd requests` opens the store itself.
#[test]
fn scepd_requests_works_on_the_store_when_no_server_runs() {
    use common::{describe, run_bounded};
    use std::process::Command;
    let deadline = std::time::Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(dir.path(), &Setup::default());
    let scepd = |args: &[&str]| {
        run_bounded(
            Command::new(env!("CARGO_BIN_EXE_scepd"))
                .args(args)
                .arg("--config")
                .arg(&config),
            deadline,
        )
    };
    let list = scepd(&["requests", "list"]);
    assert!(list.status.success(), "{}", describe(&list));
    assert!(list.stdout.is_empty(), "{}", describe(&list));
    let approve = scepd(&["requests", "approve", "tx-nobody", "--by", "tester"]);
    assert!(!approve.status.success());
    assert!(
        String::from_utf8_lossy(&approve.stderr).contains("no pending request"),
        "{}",
        describe(&approve)
    );
}
