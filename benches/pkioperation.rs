//! One in-process PKIOperation (PKCSReq -> CertRep SUCCESS) with an RSA-2048 CA and RSA-2048
//! RA certificates: decode, verify, decrypt, policy, issue, store (flushed), sign the reply.
//! The client's work (building and encrypting the request) is set up outside the timing.
//!
//! `cargo bench --bench pkioperation`

use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use scepd::cli::init::{create, InitArgs};
use scepd::enroll::PkiReply;
use scepd::scep::client::{self, ClientIdentity, RequestOptions};
use scepd::scep::csr::{build_csr, CsrSpec};
use scepd::scep::{ContentCipher, DigestAlg, KeyTransport, MessageType};

const CHALLENGE: &str = "bench challenge";

fn pkioperation(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = InitArgs {
        dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        challenge_mode: scepd::cli::init::ChallengeMode::Static,
        static_challenge: Some(CHALLENGE.into()),
        ca_key: "rsa2048".into(),
        ca_subject: "CN=bench CA".into(),
        tls_name: None,
        tls_listen: "127.0.0.1:0".parse().expect("addr"),
        legacy_algorithms: false,
        pkcs11: Default::default(),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        ca_source: Default::default(),
    };
    let created = create(&args).expect("init");
    let loaded = scepd::cli::serve::load(&created.config).expect("load");
    let enroller = loaded.app.enroller().clone();
    let ca_certs = client::parse_ca_certs(
        &std::fs::read(dir.path().join("ra-encrypt.pem"))
            .map(|pem| {
                openssl::x509::X509::from_pem(&pem)
                    .expect("pem")
                    .to_der()
                    .expect("der")
            })
            .expect("read"),
    )
    .expect("certs");
    let recipient = ca_certs[0].clone();
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
    let signer = ClientIdentity::self_signed(key.clone(), "bench device").expect("signer");
    let csr = build_csr(
        &key,
        &CsrSpec {
            subject: "CN=bench device",
            challenge: Some(CHALLENGE),
            ..CsrSpec::default()
        },
    )
    .expect("csr");
    let mut counter = 0u64;
    c.bench_function("pkioperation_pkcsreq_rsa2048_aes256_sha256", |b| {
        b.iter_batched(
            || {
                counter += 1;
                let options = RequestOptions {
                    message_type: MessageType::PkcsReq,
                    transaction_id: format!("bench-{counter}"),
                    digest: DigestAlg::Sha256,
                    cipher: ContentCipher::Aes256Cbc,
                    key_transport: KeyTransport::RsaPkcs1v15,
                    recipient_by_ski: false,
                };
                client::build_request(&csr, &recipient, &signer, &options)
                    .expect("request")
                    .der
            },
            |message| {
                let template = enroller.template("default").expect("template");
                match enroller.pki_operation(template, &message, SystemTime::now()) {
                    PkiReply::CertRep { summary, .. } => assert_eq!(summary.outcome, "success"),
                    other => panic!("unexpected reply {other:?}"),
                }
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, pkioperation);
criterion_main!(benches);
