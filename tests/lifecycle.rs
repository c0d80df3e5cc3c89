//! Certificate lifecycle over SCEP through `App::handle`: GetCert, GetCRL, RenewalReq,
//! manual approval and CertPoll.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
