//! Several CAs in one server (issue 7 item 3): `[cas.<name>]` beside `[ca]`, templates that
//! name their CA, each CA issuing from its own key on its own paths with its own RA
//! certificates, GetCACert per path (and per `message` on a path without a template), and a
//! CRL and OCSP answers per CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::Path;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use openssl::ocsp::OcspCertStatus;
use scepd::cli::serve::{load, Loaded};
use scepd::scep::client::{self, CertRepView};
use scepd::scep::{FailInfo, PkiStatus};
use scepd_ca::certgen::{self, KeySpec, RaPurpose};
use support::{init_dir, openssl_verify, options, runtime, Device, Setup, CHALLENGE};

fn write_pem(path: &Path, der: &[u8]) {
    let pem = openssl::x509::X509::from_der(der)
        .unwrap()
        .to_pem()
        .unwrap();
    std::fs::write(path, pem).unwrap();
}

fn write_key(path: &Path, key: &openssl::pkey::PKey<openssl::pkey::Private>) {
    std::fs::write(path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
}

/// A second CA (`[cas.second]`, with RA certificates it issued) and a template `second-wifi`
/// that names it.
fn add_second_ca(dir: &Path, config: &Path) {
    let key = certgen::generate_key(KeySpec::Rsa2048).unwrap();
    let cert = certgen::self_signed_ca(&key, "CN=second test CA,O=scepd tests", 365).unwrap();
    write_pem(&dir.join("ca2.pem"), &cert);
    write_key(&dir.join("ca2.key"), &key);
    let ca = scepd_ca::SoftwareCa::from_parts(cert, key, Vec::new()).unwrap();
    for (name, purpose) in [
        ("ra2-sign", RaPurpose::Signing),
        ("ra2-encrypt", RaPurpose::Encryption),
    ] {
        let ra_key = certgen::generate_key(KeySpec::Rsa2048).unwrap();
        let der =
            certgen::issue_ra_certificate(&ca, &ra_key, &format!("CN=second {name}"), purpose, 365)
                .unwrap();
        write_pem(&dir.join(format!("{name}.pem")), &der);
        write_key(&dir.join(format!("{name}.key")), &ra_key);
    }
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(
        "\n[cas.second]\ncert = \"ca2.pem\"\nkey = \"ca2.key\"\n\n[cas.second.ra]\n\
         sign_cert = \"ra2-sign.pem\"\nsign_key = \"ra2-sign.key\"\n\
         encrypt_cert = \"ra2-encrypt.pem\"\nencrypt_key = \"ra2-encrypt.key\"\n",
    );
    std::fs::write(config, text).unwrap();
    let template = std::fs::read_to_string(dir.join("templates/default.toml"))
        .unwrap()
        .replace("[challenge]", "ca = \"second\"\n\n[challenge]");
    std::fs::write(dir.join("templates/second-wifi.toml"), template).unwrap();
}

fn get(loaded: &Loaded, uri: &str) -> Response<Bytes> {
    let request = Request::get(uri).body(Bytes::new()).unwrap();
    runtime().block_on(loaded.app.handle(request))
}

fn ca_certs(loaded: &Loaded, uri: &str) -> Vec<Vec<u8>> {
    let response = get(loaded, uri);
    assert_eq!(response.status(), StatusCode::OK, "{uri}");
    client::parse_ca_certs(response.body()).unwrap()
}

/// Enrolls on `path` with the request encrypted to the RA encryption certificate of `certs`
/// (a GetCACert answer); the reply must be signed by the RA signing certificate of `reply`.
fn enroll_to(
    loaded: &Loaded,
    path: &str,
    certs: &[Vec<u8>],
    reply: &[Vec<u8>],
    id: &str,
) -> CertRepView {
    let (recipient, _) = client::select_ra_certs(certs).unwrap();
    let (_, signer) = client::select_ra_certs(reply).unwrap();
    let device = Device::rsa(2048);
    let csr = device.simple_csr(id, CHALLENGE);
    let prepared = client::build_request(&csr, &recipient, &device.signer, &options(id)).unwrap();
    let request = Request::post(format!("{path}?operation=PKIOperation"))
        .body(Bytes::from(prepared.der.clone()))
        .unwrap();
    let response = runtime().block_on(loaded.app.handle(request));
    assert_eq!(response.status(), StatusCode::OK);
    client::read_cert_rep(response.body(), &prepared, &signer, &device.signer).unwrap()
}

fn enroll(loaded: &Loaded, path: &str, certs: &[Vec<u8>], id: &str) -> CertRepView {
    enroll_to(loaded, path, certs, certs, id)
}

fn serial(der: &[u8]) -> Vec<u8> {
    openssl::x509::X509::from_der(der)
        .unwrap()
        .serial_number()
        .to_bn()
        .unwrap()
        .to_vec()
}

fn crl_serials(loaded: &Loaded, path: &str, ca: &[u8]) -> Vec<Vec<u8>> {
    let response = get(loaded, path);
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let crl = openssl::x509::X509Crl::from_der(response.body()).unwrap();
    let ca = openssl::x509::X509::from_der(ca).unwrap();
    assert!(
        crl.verify(&ca.public_key().unwrap()).unwrap(),
        "{path} signed by its CA"
    );
    crl.get_revoked()
        .map(|revoked| {
            revoked
                .iter()
                .map(|r| r.serial_number().to_bn().unwrap().to_vec())
                .collect()
        })
        .unwrap_or_default()
}

fn ocsp_status(loaded: &Loaded, cert: &[u8], issuer: &[u8]) -> OcspCertStatus {
    use openssl::hash::MessageDigest;
    use openssl::ocsp::{OcspCertId, OcspFlag, OcspRequest, OcspResponse};
    use openssl::x509::X509;
    let (cert, issuer) = (
        X509::from_der(cert).unwrap(),
        X509::from_der(issuer).unwrap(),
    );
    let id = || OcspCertId::from_cert(MessageDigest::sha1(), &cert, &issuer).unwrap();
    let mut request = OcspRequest::new().unwrap();
    request.add_id(id()).unwrap();
    let http = Request::post("/ocsp")
        .body(Bytes::from(request.to_der().unwrap()))
        .unwrap();
    let body = runtime().block_on(loaded.app.handle(http)).into_body();
    let basic = OcspResponse::from_der(&body).unwrap().basic().unwrap();
    let mut certs = openssl::stack::Stack::new().unwrap();
    certs.push(issuer.clone()).unwrap();
    let store = openssl::x509::store::X509StoreBuilder::new()
        .unwrap()
        .build();
    basic
        .verify(&certs, &store, OcspFlag::TRUST_OTHER)
        .expect("signed by the certificate's own CA");
    basic.find_status(&id()).unwrap().status
}

#[test]
fn two_cas_issue_from_their_own_keys_on_their_own_paths_with_their_own_crls() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(dir.path(), &Setup::default());
    add_second_ca(dir.path(), &config);
    let first_ca = scepd::keys::load_cert_der(&dir.path().join("ca.pem")).unwrap();
    let second_ca = scepd::keys::load_cert_der(&dir.path().join("ca2.pem")).unwrap();
    let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));

    // GetCACert answers for the CA the path selects, or the `message` on /scep.
    let first_certs = ca_certs(&loaded, "/scep?operation=GetCACert");
    let second_certs = ca_certs(&loaded, "/scep/second-wifi?operation=GetCACert");
    assert_eq!(first_certs[0], first_ca);
    assert_eq!(second_certs[0], second_ca);
    assert_eq!(
        ca_certs(&loaded, "/scep?operation=GetCACert&message=second")[0],
        second_ca
    );
    assert_eq!(
        ca_certs(&loaded, "/scep?operation=GetCACert&message=anything")[0],
        first_ca
    );
    let (second_recipient, _) = client::select_ra_certs(&second_certs).unwrap();
    assert!(openssl_verify(&second_ca, &second_recipient), "its own RA");
    let caps = get(&loaded, "/scep/second-wifi?operation=GetCACaps");
    assert!(String::from_utf8_lossy(caps.body()).contains("POSTPKIOperation"));

    let first = enroll(&loaded, "/scep", &first_certs, "first-ca-device");
    let second = enroll(
        &loaded,
        "/scep/second-wifi",
        &second_certs,
        "second-ca-device",
    );
    assert_eq!(first.status, PkiStatus::Success, "{first:?}");
    assert_eq!(second.status, PkiStatus::Success, "{second:?}");
    let (first_cert, second_cert) = (&first.certs[0], &second.certs[0]);
    assert!(openssl_verify(&first_ca, first_cert) && !openssl_verify(&second_ca, first_cert));
    assert!(openssl_verify(&second_ca, second_cert) && !openssl_verify(&first_ca, second_cert));
    let text = String::from_utf8(
        openssl::x509::X509::from_der(second_cert)
            .unwrap()
            .to_text()
            .unwrap(),
    )
    .unwrap();
    assert!(text.contains("/crl/second.crl"), "its own CRL: {text}");

    // A request encrypted to the first CA's RA cannot be opened on the second CA's path.
    let wrong = enroll_to(
        &loaded,
        "/scep/second-wifi",
        &first_certs,
        &second_certs,
        "wrong-ra",
    );
    assert_eq!(wrong.status, PkiStatus::Failure);
    assert_eq!(wrong.fail_info, Some(FailInfo::BadMessageCheck));

    // Each CA has its own CRL and answers OCSP for its own certificates.
    assert_eq!(
        ocsp_status(&loaded, second_cert, &second_ca),
        OcspCertStatus::GOOD
    );
    assert_eq!(
        ocsp_status(&loaded, first_cert, &first_ca),
        OcspCertStatus::GOOD
    );
    let now = std::time::SystemTime::now();
    let store = loaded.app.enroller().store();
    store
        .revoke(&serial(second_cert), "keyCompromise", "test", now)
        .unwrap();
    loaded
        .app
        .enroller()
        .crls()
        .unwrap()
        .regenerate_all(now)
        .unwrap();
    assert_eq!(
        ocsp_status(&loaded, second_cert, &second_ca),
        OcspCertStatus::REVOKED
    );
    assert_eq!(
        ocsp_status(&loaded, first_cert, &first_ca),
        OcspCertStatus::GOOD
    );
    assert_eq!(
        crl_serials(&loaded, "/crl/second.crl", &second_ca),
        [serial(second_cert)]
    );
    assert!(crl_serials(&loaded, "/crl/ca.crl", &first_ca).is_empty());
}

#[test]
fn a_template_naming_an_unknown_ca_or_routing_across_cas_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(dir.path(), &Setup::default());
    add_second_ca(dir.path(), &config);
    let default = std::fs::read_to_string(dir.path().join("templates/default.toml")).unwrap();
    std::fs::write(
        dir.path().join("templates/lost.toml"),
        default.replace("[challenge]", "ca = \"third\"\n\n[challenge]"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates/router.toml"),
        default.replace(
            "[challenge]",
            "[key_usage_routing]\nsignature = \"second-wifi\"\n\n[challenge]",
        ),
    )
    .unwrap();
    let check = common::run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["check-config", "--config"])
            .arg(&config),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(
        check.status.code(),
        Some(64),
        "{}",
        common::describe(&check)
    );
    let errors = String::from_utf8_lossy(&check.stderr).into_owned()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(errors.contains("names no [cas.third]"), "{errors}");
    assert!(errors.contains("another CA serves"), "{errors}");
}
