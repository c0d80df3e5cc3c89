//! Black-box tests of the whole server through `App::handle`, without sockets: the project's
//! own SCEP client against the real configuration, keys, store and CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::{Method, StatusCode};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use scepd::scep::client::Tamper;
use scepd::scep::csr::{CsrSpec, San};
use scepd::scep::{ContentCipher, DigestAlg, FailInfo, KeyTransport, MessageType, PkiStatus};
use support::*;

fn issued(instance: &Instance, view: &scepd::scep::client::CertRepView) -> openssl::x509::X509 {
    assert_eq!(
        view.status,
        PkiStatus::Success,
        "failInfo {:?} {:?}",
        view.fail_info,
        view.fail_info_text
    );
    let cert = &view.certs[0];
    assert!(
        openssl_verify(instance.ca_cert(), cert),
        "issued certificate must chain to the CA"
    );
    openssl::x509::X509::from_der(cert).unwrap()
}

fn assert_failure(view: &scepd::scep::client::CertRepView, expected: FailInfo) {
    assert_eq!(view.status, PkiStatus::Failure);
    assert_eq!(
        view.fail_info,
        Some(expected),
        "text: {:?}",
        view.fail_info_text
    );
    assert!(!view.has_content, "a FAILURE carries no envelope");
}

#[test]
fn get_ca_caps_lists_only_what_works() {
    let instance = Instance::default_instance();
    let response = instance.get("/scep", "operation=GetCACaps");
    assert_eq!(response.status(), StatusCode::OK);
    let caps = String::from_utf8(response.body().to_vec()).unwrap();
    let caps: Vec<&str> = caps.lines().collect();
    for keyword in [
        "POSTPKIOperation",
        "AES",
        "DES3",
        "SHA-1",
        "SHA-256",
        "SHA-512",
        "SCEPStandard",
        "Renewal",
    ] {
        assert!(caps.contains(&keyword), "{keyword} missing from {caps:?}");
    }
    assert!(
        !caps.contains(&"GetNextCACert"),
        "GetNextCACert advertised but not implemented"
    );
}

#[test]
fn get_ca_cert_returns_ca_and_two_ra_certificates_with_separate_keys() {
    let instance = Instance::default_instance();
    let response = instance.get(
        "/certsrv/mscep/mscep.dll",
        "operation=GetCACert&message=default",
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/x-x509-ca-ra-cert"
    );
    assert_eq!(instance.ca_certs.len(), 3);
    assert_ne!(instance.recipient, instance.reply_signer);
    let key_of = |der: &[u8]| {
        openssl::x509::X509::from_der(der)
            .unwrap()
            .public_key()
            .unwrap()
            .public_key_to_der()
            .unwrap()
    };
    assert_ne!(key_of(&instance.recipient), key_of(&instance.reply_signer));
    assert!(!is_ca(&instance.recipient) && !is_ca(&instance.reply_signer));
}

#[test]
fn without_ra_the_ca_certificate_comes_alone_and_enrollment_works() {
    let instance = Instance::new(Setup {
        without_ra: true,
        ..Setup::default()
    });
    let response = instance.get("/scep", "operation=GetCACert");
    assert_eq!(
        response.headers()["content-type"],
        "application/x-x509-ca-cert"
    );
    assert_eq!(instance.ca_certs.len(), 1);
    assert_eq!(instance.recipient, instance.ca_certs[0]);
    let device = Device::rsa(2048);
    let request = prepare(
        &instance,
        &device,
        &device.simple_csr("no-ra", CHALLENGE),
        &options("tx-no-ra"),
    );
    issued(
        &instance,
        &instance.exchange("/scep", Via::Post, &request, &device.signer),
    );
}

#[test]
fn http_status_for_non_scep_requests() {
    let instance = Instance::default_instance();
    assert_eq!(instance.get("/healthz", "").status(), StatusCode::OK);
    assert_eq!(
        instance
            .request(Method::GET, "/certsrv/mscep/mscep.dll", Vec::new())
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        instance.get("/scep", "operation=Bogus").status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        instance
            .get("/scep/no-such-template", "operation=GetCACaps")
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        instance.get("/nowhere", "operation=GetCACaps").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        instance
            .get("/scep", "operation=PKIOperation&message=%21%21")
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        instance.get("/scep", "operation=GetNextCACert").status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn every_path_and_case_enrolls() {
    let instance = Instance::default_instance();
    for (i, path) in [
        "/scep",
        "/SCEP/default",
        "/cgi-bin/pkiclient.exe",
        "/CertSrv/mscep/mscep.dll",
        "/certsrv/mscep/mscep.dll/pkiclient.exe",
    ]
    .iter()
    .enumerate()
    {
        let device = Device::rsa(2048);
        let request = prepare(
            &instance,
            &device,
            &device.simple_csr("path", CHALLENGE),
            &options(&format!("tx-path-{i}")),
        );
        issued(
            &instance,
            &instance.exchange(path, Via::Post, &request, &device.signer),
        );
    }
}

#[test]
fn ciphers_digests_and_key_transports_all_enroll() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let cases = [
        (
            ContentCipher::Aes128Cbc,
            DigestAlg::Sha1,
            KeyTransport::RsaPkcs1v15,
            false,
        ),
        (
            ContentCipher::Aes192Cbc,
            DigestAlg::Sha224,
            KeyTransport::RsaPkcs1v15,
            true,
        ),
        (
            ContentCipher::Aes256Cbc,
            DigestAlg::Sha256,
            KeyTransport::RsaOaep(DigestAlg::Sha1),
            false,
        ),
        (
            ContentCipher::DesEde3Cbc,
            DigestAlg::Sha384,
            KeyTransport::RsaOaep(DigestAlg::Sha256),
            true,
        ),
        (
            ContentCipher::Aes128Cbc,
            DigestAlg::Sha512,
            KeyTransport::RsaPkcs1v15,
            false,
        ),
    ];
    for (i, (cipher, digest, transport, by_ski)) in cases.into_iter().enumerate() {
        let mut opts = options(&format!("tx-alg-{i}"));
        opts.cipher = cipher;
        opts.digest = digest;
        opts.key_transport = transport;
        opts.recipient_by_ski = by_ski;
        let csr = device.simple_csr(&format!("alg-{i}"), CHALLENGE);
        let view = instance.exchange(
            "/scep",
            Via::Post,
            &prepare(&instance, &device, &csr, &opts),
            &device.signer,
        );
        issued(&instance, &view);
    }
}

#[test]
fn rsa_and_ecdsa_csr_keys_enroll() {
    let instance = Instance::default_instance();
    let devices = [
        Device::rsa(2048),
        Device::rsa(3072),
        Device::rsa(4096),
        Device::ec(Nid::X9_62_PRIME256V1),
        Device::ec(Nid::SECP384R1),
    ];
    for (i, device) in devices.iter().enumerate() {
        let csr = device.simple_csr(&format!("key-{i}"), CHALLENGE);
        let view = instance.exchange(
            "/scep",
            Via::Post,
            &prepare(&instance, device, &csr, &options(&format!("tx-key-{i}"))),
            &device.signer,
        );
        let cert = issued(&instance, &view);
        assert!(
            cert.public_key().unwrap().public_eq(&device.key),
            "the certificate carries the CSR's key"
        );
    }
}

#[test]
fn get_with_a_uri_over_40_kb_enrolls() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    // As large as Intune's requests: the base64 message in the URL grows past 40 KB.
    let padding: Vec<String> = (0..1150)
        .map(|i| format!("host-{i:04}.devices.example.com"))
        .collect();
    let sans: Vec<San> = padding.iter().map(|h| San::Dns(h.clone())).collect();
    let csr = device.csr(&CsrSpec {
        subject: "CN=long",
        sans: &sans,
        challenge: Some(CHALLENGE),
        ..CsrSpec::default()
    });
    let request = prepare(&instance, &device, &csr, &options("tx-long-get"));
    assert!(
        base64_encode(&request.der).len() > 40 * 1024,
        "the URL must exceed 40 KB"
    );
    let view = instance.exchange("/scep", Via::Get, &request, &device.signer);
    issued(&instance, &view);
}

#[test]
fn get_accepts_unescaped_plus_slash_and_missing_padding() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let request = prepare(
        &instance,
        &device,
        &device.simple_csr("raw-get", CHALLENGE),
        &options("tx-raw-get"),
    );
    let raw = base64_encode(&request.der);
    let unpadded = raw.trim_end_matches('=');
    let response = instance.get(
        "/scep",
        &format!("operation=PKIOperation&message={unpadded}"),
    );
    assert_eq!(response.status(), StatusCode::OK);
    let view = scepd::scep::client::read_cert_rep(
        response.body(),
        &request,
        &instance.reply_signer,
        &device.signer,
    )
    .unwrap();
    issued(&instance, &view);
}

#[test]
fn a_retried_transaction_gets_the_same_certificate() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let csr = device.simple_csr("retry", CHALLENGE);
    let first = instance.exchange(
        "/scep",
        Via::Post,
        &prepare(&instance, &device, &csr, &options("tx-retry")),
        &device.signer,
    );
    let second = instance.exchange(
        "/scep",
        Via::Post,
        &prepare(&instance, &device, &csr, &options("tx-retry")),
        &device.signer,
    );
    assert_eq!(
        issued(&instance, &first).to_der().unwrap(),
        issued(&instance, &second).to_der().unwrap()
    );
    // The same transactionID with another CSR is refused.
    let other = device.simple_csr("retry-other-name", CHALLENGE);
    let third = instance.exchange(
        "/scep",
        Via::Post,
        &prepare(&instance, &device, &other, &options("tx-retry")),
        &device.signer,
    );
    assert_failure(&third, FailInfo::BadRequest);
}

#[test]
fn a_wrong_challenge_is_refused_and_the_transaction_can_be_retried() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let wrong = device.simple_csr("wrong", "not the challenge");
    let view = instance.exchange(
        "/scep",
        Via::Post,
        &prepare(&instance, &device, &wrong, &options("tx-wrong")),
        &device.signer,
    );
    assert_failure(&view, FailInfo::BadRequest);
    let missing = device.csr(&CsrSpec {
        subject: "CN=missing",
        ..CsrSpec::default()
    });
    let view = instance.exchange(
        "/scep",
        Via::Post,
        &prepare(&instance, &device, &missing, &options("tx-wrong")),
        &device.signer,
    );
    assert_failure(&view, FailInfo::BadRequest);
    // A failed transactionID may be used again (clients derive it from the key).
    let right = device.simple_csr("wrong", CHALLENGE);
    let view = instance.exchange(
        "/scep",
        Via::Post,
        &prepare(&instance, &device, &right, &options("tx-wrong")),
        &device.signer,
    );
    issued(&instance, &view);
}

#[test]
fn a_tampered_signature_gets_bad_message_check() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let csr = device.simple_csr("tampered", CHALLENGE);
    let request = prepare_tampered(
        &instance,
        &device,
        &csr,
        &options("tx-tampered"),
        Tamper::FlipSignatureByte,
    );
    assert_failure(
        &instance.exchange("/scep", Via::Post, &request, &device.signer),
        FailInfo::BadMessageCheck,
    );
}

#[test]
fn envelope_failures_are_indistinguishable() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let csr = device.simple_csr("envelope", CHALLENGE);
    // Encrypted to the wrong recipient (the RA signing certificate, whose key we hold but
    // which is not a decryption key), and a broken ciphertext.
    let wrong_recipient = scepd::scep::client::build_request(
        &csr,
        &instance.reply_signer,
        &device.signer,
        &options("tx-env-1"),
    )
    .unwrap();
    let flipped = prepare_tampered(
        &instance,
        &device,
        &csr,
        &options("tx-env-2"),
        Tamper::FlipCiphertextByte,
    );
    let a = instance.exchange("/scep", Via::Post, &wrong_recipient, &device.signer);
    let b = instance.exchange("/scep", Via::Post, &flipped, &device.signer);
    assert_failure(&a, FailInfo::BadMessageCheck);
    assert_failure(&b, FailInfo::BadMessageCheck);
    assert_eq!(a.fail_info_text, b.fail_info_text);
}

#[test]
fn a_truncated_message_is_http_400() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let request = prepare(
        &instance,
        &device,
        &device.simple_csr("trunc", CHALLENGE),
        &options("tx-trunc"),
    );
    for cut in [0, 1, 10, request.der.len() / 2, request.der.len() - 1] {
        let response = instance.post("/scep", request.der[..cut].to_vec());
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "cut at {cut}");
    }
}

#[test]
fn single_des_needs_the_legacy_switch_and_is_never_sent_back() {
    let strict = Instance::default_instance();
    let device = Device::rsa(2048);
    let mut opts = options("tx-des");
    opts.cipher = ContentCipher::DesCbc;
    let csr = device.simple_csr("des", CHALLENGE);
    assert_failure(
        &strict.exchange(
            "/scep",
            Via::Post,
            &prepare(&strict, &device, &csr, &opts),
            &device.signer,
        ),
        FailInfo::BadAlg,
    );

    let legacy = Instance::new(Setup {
        legacy: true,
        ..Setup::default()
    });
    let view = legacy.exchange(
        "/scep",
        Via::Post,
        &prepare(&legacy, &device, &csr, &opts),
        &device.signer,
    );
    issued(&legacy, &view);

    // Per URL path: only the template that enables it.
    let per_path = Instance::new(Setup {
        templates: vec![("old-gear", template("legacy_algorithms = true\n", ""))],
        ..Setup::default()
    });
    let view = per_path.exchange(
        "/scep/old-gear",
        Via::Post,
        &prepare(&per_path, &device, &csr, &opts),
        &device.signer,
    );
    issued(&per_path, &view);
    let mut opts2 = opts.clone();
    opts2.transaction_id = "tx-des-2".into();
    let view = per_path.exchange(
        "/scep",
        Via::Post,
        &prepare(&per_path, &device, &csr, &opts2),
        &device.signer,
    );
    assert_failure(&view, FailInfo::BadAlg);
}

#[test]
fn unsupported_digest_gets_bad_alg() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let csr = device.simple_csr("md5", CHALLENGE);
    let request = prepare_tampered(
        &instance,
        &device,
        &csr,
        &options("tx-md5"),
        Tamper::Md5DigestOid,
    );
    assert_failure(
        &instance.exchange("/scep", Via::Post, &request, &device.signer),
        FailInfo::BadAlg,
    );
}

#[test]
fn unsupported_message_types_get_bad_request() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let csr = device.simple_csr("types", CHALLENGE);
    for (i, code) in [17u32, 20, 21, 22, 18, 99].into_iter().enumerate() {
        let request = prepare_tampered(
            &instance,
            &device,
            &csr,
            &options(&format!("tx-type-{i}")),
            Tamper::MessageTypeCode(code),
        );
        assert_failure(
            &instance.exchange("/scep", Via::Post, &request, &device.signer),
            FailInfo::BadRequest,
        );
    }
    let _ = MessageType::PkcsReq;
}

#[test]
fn a_csr_with_a_bad_self_signature_gets_bad_message_check() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let mut csr = device.simple_csr("bad-pop", CHALLENGE);
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    let request = prepare(&instance, &device, &csr, &options("tx-bad-pop"));
    assert_failure(
        &instance.exchange("/scep", Via::Post, &request, &device.signer),
        FailInfo::BadMessageCheck,
    );
}

#[test]
fn rsa_1024_only_where_a_template_allows_it() {
    let instance = Instance::new(Setup {
        templates: vec![("weak", template("", "min_rsa_bits = 1024\n"))],
        ..Setup::default()
    });
    let device = Device::rsa(1024);
    let csr = device.simple_csr("weak", CHALLENGE);
    assert_failure(
        &instance.exchange(
            "/scep",
            Via::Post,
            &prepare(&instance, &device, &csr, &options("tx-1024-a")),
            &device.signer,
        ),
        FailInfo::BadRequest,
    );
    let view = instance.exchange(
        "/scep/weak",
        Via::Post,
        &prepare(&instance, &device, &csr, &options("tx-1024-b")),
        &device.signer,
    );
    issued(&instance, &view);
}

#[test]
fn sid_uri_is_copied_byte_for_byte_and_the_sid_extension_dropped() {
    let instance = Instance::default_instance();
    let device = Device::rsa(2048);
    let sid_uri = "tag:microsoft.com,2022-09-14:sid:S-1-5-21-3623811015-3361044348-30300820-1013";
    let sans = [
        San::Uri(sid_uri.into()),
        San::Upn("alice@example.com".into()),
        San::Dns("Laptop-1.Example.com".into()),
    ];
    let csr = device.csr(&CsrSpec {
        subject: "CN=alice",
        sans: &sans,
        challenge: Some(CHALLENGE),
        sid_extension: Some("S-1-5-21-3623811015-3361044348-30300820-1013"),
        ..CsrSpec::default()
    });
    let view = instance.exchange(
        "/scep",
        Via::Post,
        &prepare(&instance, &device, &csr, &options("tx-sid")),
        &device.signer,
    );
    let cert = issued(&instance, &view);
    let der = cert.to_der().unwrap();
    assert!(
        der.windows(sid_uri.len()).any(|w| w == sid_uri.as_bytes()),
        "SID URI copied verbatim"
    );
    let sid_ext_oid = [
        0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x19, 0x02,
    ];
    assert!(
        !der.windows(sid_ext_oid.len()).any(|w| w == sid_ext_oid),
        "SID extension dropped by default"
    );
    let text = String::from_utf8_lossy(&cert.to_text().unwrap()).into_owned();
    assert!(text.contains("DNS:Laptop-1.Example.com"), "{text}");
}

#[test]
fn include_chain_appends_the_ca_after_the_issued_certificate() {
    let instance = Instance::new(Setup {
        templates: vec![("chain", template("include_chain = true\n", ""))],
        ..Setup::default()
    });
    let device = Device::rsa(2048);
    let csr = device.simple_csr("chain", CHALLENGE);
    let view = instance.exchange(
        "/scep/chain",
        Via::Post,
        &prepare(&instance, &device, &csr, &options("tx-chain")),
        &device.signer,
    );
    let cert = issued(&instance, &view);
    assert_eq!(view.certs.len(), 2);
    assert!(
        cert.public_key().unwrap().public_eq(&device.key),
        "the issued certificate comes first"
    );
    assert_eq!(view.certs[1], instance.ca_cert());
}

#[test]
fn requested_validity_is_honoured_and_clamped_where_allowed() {
    let instance = Instance::new(Setup {
        templates: vec![(
            "validity",
            template(
                "",
                "validity_days = 20\nallow_requested_validity = true\nmax_validity_days = 30\n",
            ),
        )],
        ..Setup::default()
    });
    let device = Device::rsa(2048);
    let days_of =
        |cert: &openssl::x509::X509| cert.not_before().diff(cert.not_after()).unwrap().days;
    for (i, (unit, n, path, expected)) in [
        ("Days", 10, "/scep/validity", 10),
        ("Years", 2, "/scep/validity", 30),
        ("Days", 10, "/scep", 365),
    ]
    .into_iter()
    .enumerate()
    {
        let csr = device.csr(&CsrSpec {
            subject: "CN=v",
            challenge: Some(CHALLENGE),
            validity_request: Some((unit, n)),
            ..CsrSpec::default()
        });
        let view = instance.exchange(
            path,
            Via::Post,
            &prepare(&instance, &device, &csr, &options(&format!("tx-val-{i}"))),
            &device.signer,
        );
        let days = days_of(&issued(&instance, &view));
        assert!(
            (expected..=expected + 1).contains(&days),
            "{unit} {n} on {path}: {days} days, expected {expected}"
        );
    }
}

#[test]
fn key_usage_routing_picks_the_template() {
    let instance = Instance::new(Setup {
        templates: vec![
            ("signing", template("", "key_usage = [\"digitalSignature\"]\nextended_key_usage = [\"emailProtection\"]\n")),
            ("router", format!("{}[key_usage_routing]\nsignature = \"signing\"\n", template("", ""))),
        ],
        ..Setup::default()
    });
    let device = Device::rsa(2048);
    let csr = device.csr(&CsrSpec {
        subject: "CN=r",
        challenge: Some(CHALLENGE),
        key_usage: Some(vec!["digitalSignature"]),
        ..CsrSpec::default()
    });
    let view = instance.exchange(
        "/scep/router",
        Via::Post,
        &prepare(&instance, &device, &csr, &options("tx-route")),
        &device.signer,
    );
    let text = String::from_utf8_lossy(&issued(&instance, &view).to_text().unwrap()).into_owned();
    assert!(
        text.contains("E-mail Protection"),
        "routed to the signing template: {text}"
    );
}

#[test]
fn an_ecdsa_ca_gets_rsa_ra_certificates_and_issues() {
    let instance = Instance::new(Setup {
        ca_key: "p256",
        ..Setup::default()
    });
    let ra_key = openssl::x509::X509::from_der(&instance.recipient)
        .unwrap()
        .public_key()
        .unwrap();
    assert_eq!(ra_key.id(), openssl::pkey::Id::RSA);
    let device = Device::rsa(2048);
    let view = instance.exchange(
        "/scep",
        Via::Post,
        &prepare(
            &instance,
            &device,
            &device.simple_csr("ec-ca", CHALLENGE),
            &options("tx-ec-ca"),
        ),
        &device.signer,
    );
    issued(&instance, &view);
}

/// A template file using the instance's challenge.
fn template(top: &str, issuance: &str) -> String {
    format!("{top}\n[challenge]\ntype = \"static\"\nsecret_file = \"../challenge.secret\"\n\n[issuance]\n{issuance}")
}

/// A CA backend that has lost its key: every issuance fails on our side.
struct BrokenCa {
    chain: Vec<Vec<u8>>,
}

impl scepd_ca::CaBackend for BrokenCa {
    fn issue(
        &self,
        _request: &scepd_ca::IssueRequest<'_>,
    ) -> Result<scepd_ca::Issued, scepd_ca::CaError> {
        Err(scepd_ca::CaError::CaConfig(
            "the key store went away".into(),
        ))
    }
    fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
    fn crl(
        &self,
        _revoked: &[scepd_ca::RevokedEntry],
        _this_update: std::time::SystemTime,
        _next_update: std::time::SystemTime,
        _crl_number: u64,
    ) -> Result<Vec<u8>, scepd_ca::CaError> {
        Err(scepd_ca::CaError::CaConfig("no CRL".into()))
    }
}

#[test]
fn a_ca_failure_is_bad_request_with_a_reference_and_the_transaction_can_be_retried() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let config_path = init_dir(dir.path(), &Setup::default());
    let mut config = scepd::config::Config::load(&config_path).unwrap();
    let ra = scepd::keys::RaIdentity::load(&config).unwrap();
    let ca_der = scepd::keys::load_cert_der(&config.ca.cert).unwrap();
    let store: Arc<dyn scepd::store::Store> = Arc::new(scepd::store::MemoryStore::new());
    let enroller = scepd::enroll::Enroller::new(scepd::enroll::EnrollerParts {
        ra,
        ca: Arc::new(BrokenCa {
            chain: vec![ca_der],
        }),
        store: Arc::clone(&store),
        templates: std::mem::take(&mut config.templates),
        legacy_everywhere: false,
        max_message_bytes: 1 << 20,
    });
    let limits = scepd::app::AppLimits {
        max_queued_operations: 4,
        crypto_threads: 1,
    };
    let app = scepd::App::new(enroller, "default", limits).unwrap();
    let certs = {
        let request = http::Request::get("/scep?operation=GetCACert")
            .body(bytes::Bytes::new())
            .unwrap();
        scepd::scep::client::parse_ca_certs(runtime().block_on(app.handle(request)).body()).unwrap()
    };
    let (recipient, reply_signer) = scepd::scep::client::select_ra_certs(&certs).unwrap();
    let device = Device::rsa(2048);
    let csr = device.simple_csr("broken-ca", CHALLENGE);
    let request =
        scepd::scep::client::build_request(&csr, &recipient, &device.signer, &options("tx-broken"))
            .unwrap();
    let http_request = http::Request::post("/scep?operation=PKIOperation")
        .body(bytes::Bytes::from(request.der.clone()))
        .unwrap();
    let response = runtime().block_on(app.handle(http_request));
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a CA failure is a SCEP FAILURE, never a 5xx"
    );
    let view = scepd::scep::client::read_cert_rep(
        response.body(),
        &request,
        &reply_signer,
        &device.signer,
    )
    .unwrap();
    assert_failure(&view, FailInfo::BadRequest);
    assert!(
        view.fail_info_text.unwrap().contains("transactionID"),
        "the text points the admin at the log"
    );
    assert!(store.certificates().unwrap().is_empty());
    // The failure was recorded, so the device may retry with the same transactionID.
    let key = scepd::store::TxKey {
        transaction_id: "tx-broken".into(),
        message_type: 19,
        csr_digest: openssl::sha::sha256(&csr),
    };
    assert_eq!(
        store
            .begin_transaction(&key, std::time::SystemTime::now())
            .unwrap(),
        scepd::store::TxBegin::Fresh
    );
}

#[test]
fn an_encrypted_ca_key_loads_with_its_passphrase_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = init_dir(dir.path(), &Setup::default());
    let key_path = dir.path().join("ca.key");
    let key = PKey::private_key_from_pem(&std::fs::read(&key_path).unwrap()).unwrap();
    let encrypted = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"s3cret pass")
        .unwrap();
    std::fs::write(&key_path, encrypted).unwrap();
    assert!(
        scepd::cli::serve::load(&config_path).is_err(),
        "an encrypted key without its passphrase must not load"
    );

    std::fs::write(dir.path().join("ca.pass"), "s3cret pass\n").unwrap();
    let text = std::fs::read_to_string(&config_path).unwrap();
    let with_file = text.replace(
        "key = \"ca.key\"\n",
        "key = \"ca.key\"\nkey_passphrase_file = \"ca.pass\"\n",
    );
    std::fs::write(&config_path, &with_file).unwrap();
    scepd::cli::serve::load(&config_path).map(drop).unwrap();

    let var = "SCEPD_TEST_CA_PASSPHRASE";
    std::env::set_var(var, "s3cret pass");
    let with_env = text.replace(
        "key = \"ca.key\"\n",
        &format!("key = \"ca.key\"\nkey_passphrase_env = \"{var}\"\n"),
    );
    std::fs::write(&config_path, &with_env).unwrap();
    scepd::cli::serve::load(&config_path).map(drop).unwrap();
}
