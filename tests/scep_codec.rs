//! Interop of the SCEP codec with the OpenSSL command line, an independent CMS
//! implementation: what we build, `openssl cms` must accept; what `openssl cms` builds
//! (DER and streamed BER), our decoder must accept.
//!
//! Needs the `openssl` binary on PATH (OpenSSL 1.1 or 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509Builder, X509NameBuilder, X509ReqBuilder, X509};
use scepd::scep::client::{self, ClientIdentity, RequestOptions};
use scepd::scep::decode::{decode, Limits};
use scepd::scep::envelope::{self, RecipientKey};
use scepd::scep::reply::{encode_cert_rep, Outcome, ReplySigner};
use scepd::scep::signed::SignedMessage;
use scepd::scep::{ber, ContentCipher, DigestAlg, KeyTransport, MessageType, PkiStatus};
use x509_cert::der::Decode;

struct Fixture {
    dir: tempfile::TempDir,
    ra_key: PKey<Private>,
    ra_cert: X509,
    client: ClientIdentity,
    csr: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ra_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let ra_cert = self_signed(&ra_key, "scepd interop RA");
        let client_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let csr = csr(&client_key);
        let client = ClientIdentity::self_signed(client_key, "interop device").unwrap();
        let fixture = Self {
            dir,
            ra_key,
            ra_cert,
            client,
            csr,
        };
        fixture.write("ra.pem", &fixture.ra_cert.to_pem().unwrap());
        fixture.write(
            "ra.key",
            &fixture.ra_key.private_key_to_pem_pkcs8().unwrap(),
        );
        let client_cert = X509::from_der(&fixture.client.cert_der).unwrap();
        fixture.write("client.pem", &client_cert.to_pem().unwrap());
        fixture.write(
            "client.key",
            &fixture.client.key.private_key_to_pem_pkcs8().unwrap(),
        );
        fixture.write("csr.der", &fixture.csr);
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// Runs `openssl` in the fixture directory; panics with its stderr on failure.
    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl on PATH");
        assert!(
            output.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn ra_der(&self) -> Vec<u8> {
        self.ra_cert.to_der().unwrap()
    }

    fn options(
        &self,
        cipher: ContentCipher,
        key_transport: KeyTransport,
        by_ski: bool,
    ) -> RequestOptions {
        RequestOptions {
            message_type: MessageType::PkcsReq,
            transaction_id: "interop-1".into(),
            digest: DigestAlg::Sha256,
            cipher,
            key_transport,
            recipient_by_ski: by_ski,
        }
    }
}

fn self_signed(key: &PKey<Private>, cn: &str) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    builder
        .set_serial_number(&BigNum::from_u32(4242).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(key).unwrap();
    builder
        .set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    builder
        .append_extension(
            KeyUsage::new()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(None, None))
        .unwrap();
    builder.append_extension(ski).unwrap();
    builder.sign(key, MessageDigest::sha256()).unwrap();
    builder.build()
}

fn csr(key: &PKey<Private>) -> Vec<u8> {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "interop device").unwrap();
    let mut builder = X509ReqBuilder::new().unwrap();
    builder.set_subject_name(&name.build()).unwrap();
    builder.set_pubkey(key).unwrap();
    builder.sign(key, MessageDigest::sha256()).unwrap();
    builder.build().to_der().unwrap()
}

fn ra_recipient(fixture: &Fixture) -> (Vec<u8>, &PKey<Private>) {
    (fixture.ra_der(), &fixture.ra_key)
}

#[test]
fn openssl_verifies_and_decrypts_our_requests() {
    let fixture = Fixture::new();
    let variants = [
        (ContentCipher::Aes128Cbc, KeyTransport::RsaPkcs1v15, false),
        (ContentCipher::Aes256Cbc, KeyTransport::RsaPkcs1v15, true),
        (ContentCipher::DesEde3Cbc, KeyTransport::RsaPkcs1v15, false),
        (
            ContentCipher::Aes192Cbc,
            KeyTransport::RsaOaep(DigestAlg::Sha1),
            false,
        ),
        (
            ContentCipher::Aes256Cbc,
            KeyTransport::RsaOaep(DigestAlg::Sha256),
            true,
        ),
    ];
    for (cipher, transport, by_ski) in variants {
        let options = fixture.options(cipher, transport, by_ski);
        let request =
            client::build_request(&fixture.csr, &fixture.ra_der(), &fixture.client, &options)
                .unwrap();
        fixture.write("request.der", &request.der);
        fixture.openssl(&[
            "cms",
            "-verify",
            "-noverify",
            "-inform",
            "DER",
            "-in",
            "request.der",
            "-out",
            "envelope.der",
        ]);
        fixture.openssl(&[
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            "envelope.der",
            "-recip",
            "ra.pem",
            "-inkey",
            "ra.key",
            "-out",
            "decrypted.der",
        ]);
        assert_eq!(
            fixture.read("decrypted.der"),
            fixture.csr,
            "{cipher:?} {transport:?} ski={by_ski}"
        );
    }
}

#[test]
fn openssl_verifies_our_cert_reps_and_reads_the_issued_certificates_in_order() {
    let fixture = Fixture::new();
    let options = fixture.options(ContentCipher::Aes128Cbc, KeyTransport::RsaPkcs1v15, false);
    let request =
        client::build_request(&fixture.csr, &fixture.ra_der(), &fixture.client, &options).unwrap();
    let (ra_der, ra_key) = ra_recipient(&fixture);
    let keys = [RecipientKey {
        cert_der: &ra_der,
        key: ra_key,
    }];
    let opened = decode(&request.der, &Limits::default())
        .unwrap()
        .verify()
        .unwrap()
        .open(&keys, false)
        .unwrap();
    let signer = ReplySigner {
        cert_der: &ra_der,
        key: ra_key,
    };

    // SUCCESS: issued certificate first (here the client's own, standing in), then the RA.
    let issued = fixture.client.cert_der.clone();
    let certs: [&[u8]; 2] = [&issued, &ra_der];
    let success = encode_cert_rep(
        opened.reply_to(),
        &Outcome::Success { certs: &certs },
        opened.cipher(),
        &signer,
    )
    .unwrap();
    fixture.write("success.der", &success);
    fixture.openssl(&[
        "cms",
        "-verify",
        "-noverify",
        "-inform",
        "DER",
        "-in",
        "success.der",
        "-out",
        "reply-envelope.der",
    ]);
    fixture.openssl(&[
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        "reply-envelope.der",
        "-recip",
        "client.pem",
        "-inkey",
        "client.key",
        "-out",
        "degenerate.der",
    ]);
    fixture.openssl(&[
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        "degenerate.der",
        "-print_certs",
        "-out",
        "certs.pem",
    ]);
    let printed = X509::stack_from_pem(&fixture.read("certs.pem")).unwrap();
    let printed: Vec<Vec<u8>> = printed.iter().map(|c| c.to_der().unwrap()).collect();
    assert_eq!(printed, vec![issued, ra_der.clone()]);

    // PENDING: no eContent; the messageDigest covers the empty string.
    let pending = encode_cert_rep(
        opened.reply_to(),
        &Outcome::Pending,
        opened.cipher(),
        &signer,
    )
    .unwrap();
    fixture.write("pending.der", &pending);
    fixture.write("empty", b"");
    fixture.openssl(&[
        "cms",
        "-verify",
        "-noverify",
        "-inform",
        "DER",
        "-in",
        "pending.der",
        "-content",
        "empty",
    ]);
    let view = client::read_cert_rep(&pending, &request, &ra_der, &fixture.client).unwrap();
    assert_eq!(view.status, PkiStatus::Pending);
}

/// `openssl cms -encrypt` with the given extra options, to the RA, of the CSR.
fn openssl_envelope(fixture: &Fixture, extra: &[&str]) -> Vec<u8> {
    // `-keyopt` applies to the `-recip` before it.
    let mut args = vec![
        "cms",
        "-encrypt",
        "-binary",
        "-outform",
        "DER",
        "-in",
        "csr.der",
        "-out",
        "envelope.der",
        "-recip",
        "ra.pem",
    ];
    args.extend_from_slice(extra);
    fixture.openssl(&args);
    fixture.read("envelope.der")
}

#[test]
fn we_open_envelopes_openssl_builds() {
    let fixture = Fixture::new();
    let (ra_der, ra_key) = ra_recipient(&fixture);
    let keys = [RecipientKey {
        cert_der: &ra_der,
        key: ra_key,
    }];
    let variants: [(&[&str], ContentCipher); 6] = [
        (&["-aes256"], ContentCipher::Aes256Cbc),
        (&["-aes128", "-stream"], ContentCipher::Aes128Cbc),
        (&["-des3"], ContentCipher::DesEde3Cbc),
        (&["-aes192", "-keyid"], ContentCipher::Aes192Cbc),
        (
            &["-aes256", "-keyopt", "rsa_padding_mode:oaep"],
            ContentCipher::Aes256Cbc,
        ),
        (
            &[
                "-aes256",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
                "-keyopt",
                "rsa_mgf1_md:sha256",
            ],
            ContentCipher::Aes256Cbc,
        ),
    ];
    for (extra, cipher) in variants {
        let envelope = openssl_envelope(&fixture, extra);
        let opened =
            envelope::open(&envelope, &keys, false).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert_eq!(
            (opened.content.as_slice(), opened.cipher),
            (fixture.csr.as_slice(), cipher),
            "{extra:?}"
        );
    }
}

#[test]
fn we_verify_signed_data_openssl_builds_in_der_and_streamed_ber() {
    let fixture = Fixture::new();
    let envelope = openssl_envelope(&fixture, &["-aes256"]);
    let (ra_der, ra_key) = ra_recipient(&fixture);
    let keys = [RecipientKey {
        cert_der: &ra_der,
        key: ra_key,
    }];
    let signer_cert = x509_cert::Certificate::from_der(&fixture.client.cert_der).unwrap();
    let variants: [&[&str]; 4] = [
        &["-md", "sha256"],
        &["-md", "sha1", "-stream"],
        &["-md", "sha512", "-keyid"],
        &["-md", "sha384", "-stream", "-keyid"],
    ];
    for extra in variants {
        let mut args = vec![
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-outform",
            "DER",
            "-in",
            "envelope.der",
            "-signer",
            "client.pem",
            "-inkey",
            "client.key",
            "-out",
            "signed.der",
        ];
        args.extend_from_slice(extra);
        fixture.openssl(&args);
        let der = ber::normalize_to_der(&fixture.read("signed.der")).unwrap();
        let message = SignedMessage::parse(&der).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        let (found, _) = message
            .signer_certificate()
            .expect("signer certificate found by sid");
        assert_eq!(found, fixture.client.cert_der);
        message
            .verify(&signer_cert)
            .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert_eq!(message.econtent(), Some(envelope.as_slice()));
        let opened = envelope::open(message.econtent().unwrap(), &keys, false).unwrap();
        assert_eq!(opened.content, fixture.csr);
        // Without SCEP attributes it is no pkiMessage: a 400, not a panic or a FAILURE.
        assert!(matches!(
            decode(&fixture.read("signed.der"), &Limits::default()),
            Err(Err(_))
        ));
    }
}
