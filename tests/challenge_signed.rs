//! Signed challenges (issue 5) end to end: `scepd init --challenge-mode signed`, blobs minted
//! by `scepd challenge mint`, by `scepd_policy::mint_challenge` and by the `openssl` command
//! line alone, checked by real enrollments (micromdm's scepclient and our own client through
//! `App::handle`). Each refusal reason comes from a request wrong in that one way, and the
//! device sees FAILURE badRequest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use openssl::pkey::{PKey, Private};
use scepd::cli::init::{create, ChallengeMode, InitArgs};
use scepd::cli::serve::{load, Loaded};
use scepd::enroll::PkiReply;
use scepd::scep::client::{self, CertRepView, PreparedRequest};
use scepd::scep::csr::{CsrSpec, San};
use scepd::scep::{FailInfo, PkiStatus};
use scepd_policy::{Claims, MintOptions};
use support::{options, runtime, Device};

const DEADLINE: Duration = Duration::from_secs(60);
const SUBJECT: &str = "CN=device-1,O=scepd tests";
const SID_URI: &str =
    "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1004336348-1177238915-682003330-512";

/// A setup made by `scepd init --challenge-mode signed`, loaded in process.
struct Signed {
    dir: tempfile::TempDir,
    loaded: Loaded,
    recipient: Vec<u8>,
    reply_signer: Vec<u8>,
}

impl Signed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = init(dir.path(), false, "127.0.0.1:0");
        // An MDM signer exists long before the challenges it signs; init's development
        // signer starts now, which would make a challenge issued an hour ago unverifiable.
        write_backdated_signer(dir.path());
        let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
        let request = Request::get("/scep?operation=GetCACert")
            .body(Bytes::new())
            .unwrap();
        let body = runtime().block_on(loaded.app.handle(request)).into_body();
        let certs = client::parse_ca_certs(&body).unwrap();
        let (recipient, reply_signer) = client::select_ra_certs(&certs).unwrap();
        Self {
            dir,
            loaded,
            recipient,
            reply_signer,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The development signer `init` wrote and trusts.
    fn signer(&self) -> (Vec<u8>, PKey<Private>) {
        let pair = scepd::keys::load_pair(
            &self.path("challenge-signer.pem"),
            &self.path("challenge-signer.key"),
            None,
        )
        .unwrap();
        (pair.cert_der, pair.key.as_openssl().unwrap().clone())
    }

    /// Mints `claims` with the development signer for our RA encryption certificate.
    fn mint(&self, claims: &Claims) -> String {
        let (cert, key) = self.signer();
        scepd_policy::mint_challenge(claims, &cert, &key, &self.recipient, MintOptions::default())
            .unwrap()
    }

    /// Builds a request for `spec` (a fresh key) and runs it through the enroller: the
    /// device's view and the server's log detail.
    fn enroll(&self, device: &Device, spec: &CsrSpec<'_>, tx: &str) -> (CertRepView, String) {
        let prepared = self.prepare(device, spec, tx);
        self.run(device, &prepared)
    }

    fn prepare(&self, device: &Device, spec: &CsrSpec<'_>, tx: &str) -> PreparedRequest {
        let csr = device.csr(spec);
        client::build_request(&csr, &self.recipient, &device.signer, &options(tx)).unwrap()
    }

    fn run(&self, device: &Device, prepared: &PreparedRequest) -> (CertRepView, String) {
        let enroller = self.loaded.app.enroller();
        let route = enroller.template("default").unwrap();
        match enroller.pki_operation(route, &prepared.der, SystemTime::now()) {
            PkiReply::CertRep { der, summary } => {
                let view =
                    client::read_cert_rep(&der, prepared, &self.reply_signer, &device.signer)
                        .unwrap();
                (view, summary.detail)
            }
            other => panic!("not a CertRep: {other:?}"),
        }
    }
}

/// `scepd init --challenge-mode signed` into `dir`; scepd.toml's path.
fn init(dir: &Path, legacy: bool, listen: &str) -> PathBuf {
    let created = create(&InitArgs {
        dir: dir.to_path_buf(),
        listen: listen.parse().unwrap(),
        challenge_mode: ChallengeMode::Signed,
        static_challenge: None,
        ca_key: "rsa2048".into(),
        ca_subject: "CN=scepd signed-challenge test CA".into(),
        tls_name: None,
        tls_listen: "127.0.0.1:0".parse().unwrap(),
        legacy_algorithms: legacy,
        pkcs11: Default::default(),
        admin_listen: common::free_loopback_addr(),
        ca_source: Default::default(),
    })
    .expect("init");
    assert!(
        created.challenge.is_none(),
        "no shared secret in signed mode"
    );
    assert!(!dir.join("challenge.secret").exists());
    created.config
}

/// Replaces the development signer with a P-256 signer valid from a day ago.
fn write_backdated_signer(dir: &Path) {
    use openssl::asn1::Asn1Time;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let key = support::ec_key(openssl::nid::Nid::X9_62_PRIME256V1);
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "test MDM signer").unwrap();
    let name = name.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(7)
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    builder.set_serial_number(&serial).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(&key).unwrap();
    let day = 86_400;
    let not_before = Asn1Time::from_unix(unix_now() as i64 - day).unwrap();
    builder.set_not_before(&not_before).unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    builder
        .sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let cert = builder.build();
    std::fs::write(dir.join("challenge-signer.pem"), cert.to_pem().unwrap()).unwrap();
    std::fs::write(
        dir.join("challenge-signer.key"),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `SUBJECT` with a DNS name and the SID URI, valid for an hour.
fn claims() -> Claims {
    let now = unix_now();
    Claims {
        v: 1,
        id: scepd_policy::random_challenge_id(),
        iss: "test-mdm".into(),
        iat: now,
        nbf: now,
        exp: now + 3600,
        template: "default".into(),
        subject: SUBJECT.into(),
        san: vec![
            scepd_policy::San::new("dns", "device-1.example.com"),
            scepd_policy::San::new("uri", SID_URI),
        ],
        key_usage: Some(vec!["digitalSignature".into(), "keyEncipherment".into()]),
        eku: Some(vec!["1.3.6.1.5.5.7.3.2".into()]),
        min_key_bits: Some(2048),
        key_types: None,
        device_id: Some("device-1".into()),
        user_id: None,
        tenant: None,
    }
}

/// The CSR the claims describe, with `blob` as its challengePassword.
fn matching_sans() -> Vec<San> {
    vec![
        San::Dns("device-1.example.com".into()),
        San::Uri(SID_URI.into()),
    ]
}

fn client_auth() -> Vec<const_oid::ObjectIdentifier> {
    vec![const_oid::db::rfc5280::ID_KP_CLIENT_AUTH]
}

fn matching_spec<'a>(blob: &'a str, sans: &'a [San]) -> CsrSpec<'a> {
    CsrSpec {
        subject: SUBJECT,
        sans,
        challenge: Some(blob),
        key_usage: Some(vec!["digitalSignature", "keyEncipherment"]),
        extended_key_usage: client_auth(),
        ..CsrSpec::default()
    }
}

fn uri_sans(der: &[u8]) -> Vec<Vec<u8>> {
    let cert = openssl::x509::X509::from_der(der).unwrap();
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.uri().map(|u| u.as_bytes().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_matching_csr_enrolls_once_and_the_sid_uri_is_copied_byte_for_byte() {
    let setup = Signed::new();
    let blob = setup.mint(&claims());
    let sans = matching_sans();
    let device = Device::rsa(2048);
    let (view, detail) = setup.enroll(&device, &matching_spec(&blob, &sans), "tx-ok");
    assert_eq!(view.status, PkiStatus::Success, "{detail}");
    assert_eq!(uri_sans(&view.certs[0]), [SID_URI.as_bytes().to_vec()]);

    // The same blob again, from another device: refused, the log says why.
    let other = Device::rsa(2048);
    let (view, detail) = setup.enroll(&other, &matching_spec(&blob, &sans), "tx-again");
    assert_failure(&view, &detail, "ChallengeReplayed");
}

fn assert_failure(view: &CertRepView, detail: &str, reason: &str) {
    assert_eq!(view.status, PkiStatus::Failure, "{reason}: {detail}");
    assert_eq!(
        view.fail_info,
        Some(FailInfo::BadRequest),
        "{reason}: {detail}"
    );
    assert!(detail.contains(reason), "expected {reason} in {detail:?}");
}

/// Each refusal reason from one enrollment whose blob or CSR is wrong in that one way.
#[test]
fn every_refusal_reason_comes_from_a_real_enrollment() {
    let setup = Signed::new();
    let sans = matching_sans();
    let now = unix_now();
    let rsa = Device::rsa(2048);

    let mut expired = claims();
    (expired.iat, expired.nbf, expired.exp) = (now - 7200, now - 7200, now - 3600);
    let blob = setup.mint(&expired);
    let (view, detail) = setup.enroll(&rsa, &matching_spec(&blob, &sans), "tx-expired");
    assert_failure(&view, &detail, "ChallengeExpired");

    // Encrypted to another certificate than ours.
    let stranger = support::rsa_key(2048);
    let stranger_cert = scepd_ca::self_signed_ca(&stranger, "CN=someone else", 1).unwrap();
    let (cert, key) = setup.signer();
    let blob = scepd_policy::mint_challenge(
        &claims(),
        &cert,
        &key,
        &stranger_cert,
        MintOptions::default(),
    )
    .unwrap();
    let (view, detail) = setup.enroll(&rsa, &matching_spec(&blob, &sans), "tx-decrypt");
    assert_failure(&view, &detail, "ChallengeDecryptionError");

    // Signed by a key the server does not trust.
    let rogue = support::ec_key(openssl::nid::Nid::X9_62_PRIME256V1);
    let rogue_cert = scepd_ca::self_signed_ca(&rogue, "CN=rogue MDM", 1).unwrap();
    let blob = scepd_policy::mint_challenge(
        &claims(),
        &rogue_cert,
        &rogue,
        &setup.recipient,
        MintOptions::default(),
    )
    .unwrap();
    let (view, detail) = setup.enroll(&rsa, &matching_spec(&blob, &sans), "tx-signature");
    assert_failure(&view, &detail, "SignatureValidationFailed");

    // Not base64 of CMS at all.
    let (view, detail) = setup.enroll(
        &rsa,
        &matching_spec("bm90IGEgYmxvYg==", &sans),
        "tx-garbage",
    );
    assert_failure(&view, &detail, "ChallengeDeserializationError");

    let mut other_template = claims();
    other_template.template = "wifi".into();
    let blob = setup.mint(&other_template);
    let (view, detail) = setup.enroll(&rsa, &matching_spec(&blob, &sans), "tx-template");
    assert_failure(&view, &detail, "TemplateMismatch");

    let blob = setup.mint(&claims());
    let spec = CsrSpec {
        subject: "CN=device-2,O=scepd tests",
        ..matching_spec(&blob, &sans)
    };
    let (view, detail) = setup.enroll(&rsa, &spec, "tx-subject");
    assert_failure(&view, &detail, "SubjectNameMismatch");

    let blob = setup.mint(&claims());
    let spec = CsrSpec {
        subject: "",
        ..matching_spec(&blob, &sans)
    };
    let (view, detail) = setup.enroll(&rsa, &spec, "tx-no-subject");
    assert_failure(&view, &detail, "SubjectNameMissing");

    let blob = setup.mint(&claims());
    let other_sid = [
        San::Dns("device-1.example.com".into()),
        San::Uri(SID_URI.replace("-512", "-513")),
    ];
    let (view, detail) = setup.enroll(&rsa, &matching_spec(&blob, &other_sid), "tx-sid");
    assert_failure(&view, &detail, "SubjectAltNameMismatch");

    let blob = setup.mint(&claims());
    let (view, detail) = setup.enroll(&rsa, &matching_spec(&blob, &[]), "tx-no-san");
    assert_failure(&view, &detail, "SubjectAltNameMissing");

    let blob = setup.mint(&claims());
    let spec = CsrSpec {
        key_usage: Some(vec!["digitalSignature"]),
        ..matching_spec(&blob, &sans)
    };
    let (view, detail) = setup.enroll(&rsa, &spec, "tx-ku");
    assert_failure(&view, &detail, "KeyUsageMismatch");

    let blob = setup.mint(&claims());
    let spec = CsrSpec {
        extended_key_usage: vec![const_oid::db::rfc5280::ID_KP_SERVER_AUTH],
        ..matching_spec(&blob, &sans)
    };
    let (view, detail) = setup.enroll(&rsa, &spec, "tx-eku");
    assert_failure(&view, &detail, "EnhancedKeyUsageMismatch");

    let mut bigger = claims();
    bigger.min_key_bits = Some(3072);
    let blob = setup.mint(&bigger);
    let (view, detail) = setup.enroll(&rsa, &matching_spec(&blob, &sans), "tx-key");
    assert_failure(&view, &detail, "KeyLengthMismatch");

    // None of these consumed the blob of the next, valid request.
    let blob = setup.mint(&claims());
    let (view, detail) = setup.enroll(&rsa, &matching_spec(&blob, &sans), "tx-fine");
    assert_eq!(view.status, PkiStatus::Success, "{detail}");
}

/// Four enrollments (four keys, four transactionIDs) race with one blob: one certificate.
#[test]
fn one_blob_used_by_four_concurrent_enrollments_issues_exactly_one_certificate() {
    let setup = Signed::new();
    let blob = setup.mint(&claims());
    let sans = matching_sans();
    let devices: Vec<Device> = (0..4).map(|_| Device::rsa(2048)).collect();
    let prepared: Vec<PreparedRequest> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| setup.prepare(d, &matching_spec(&blob, &sans), &format!("tx-race-{i}")))
        .collect();
    let bodies: Vec<_> = runtime().block_on(async {
        let handles: Vec<_> = prepared
            .iter()
            .map(|p| {
                let app = std::sync::Arc::clone(&setup.loaded.app);
                let request = Request::post("/scep?operation=PKIOperation")
                    .body(Bytes::from(p.der.clone()))
                    .unwrap();
                tokio::spawn(async move { app.handle(request).await })
            })
            .collect();
        let mut bodies = Vec::new();
        for handle in handles {
            bodies.push(handle.await.unwrap());
        }
        bodies
    });
    let mut successes = 0;
    for ((body, prepared), device) in bodies.iter().zip(&prepared).zip(&devices) {
        let view =
            client::read_cert_rep(body.body(), prepared, &setup.reply_signer, &device.signer)
                .unwrap();
        match view.status {
            PkiStatus::Success => successes += 1,
            _ => assert_eq!(view.fail_info, Some(FailInfo::BadRequest)),
        }
    }
    assert_eq!(successes, 1, "exactly one enrollment wins the blob");
    let issued = setup.loaded.app.enroller().store().certificates().unwrap();
    assert_eq!(issued.len(), 1);
}

/// A blob made with the `openssl` command line alone, following docs/challenge-format.md.
#[test]
fn a_blob_made_with_the_openssl_command_line_is_accepted() {
    let setup = Signed::new();
    let work = tempfile::tempdir().unwrap();
    let claims_json = serde_json::to_vec(&claims()).unwrap();
    std::fs::write(work.path().join("claims.json"), claims_json).unwrap();
    std::fs::write(
        work.path().join("recipient.pem"),
        openssl::x509::X509::from_der(&setup.recipient)
            .unwrap()
            .to_pem()
            .unwrap(),
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let run = common::run_bounded(
            Command::new("openssl").current_dir(work.path()).args(args),
            DEADLINE,
        );
        assert!(run.status.success(), "{}", common::describe(&run));
    };
    openssl(&[
        "cms",
        "-encrypt",
        "-binary",
        "-aes256",
        "-in",
        "claims.json",
        "-outform",
        "DER",
        "-out",
        "enveloped.der",
        "recipient.pem",
    ]);
    let signer_cert = setup.path("challenge-signer.pem");
    let signer_key = setup.path("challenge-signer.key");
    openssl(&[
        "cms",
        "-sign",
        "-binary",
        "-nodetach",
        "-md",
        "sha256",
        "-in",
        "enveloped.der",
        "-signer",
        signer_cert.to_str().unwrap(),
        "-inkey",
        signer_key.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        "signed.der",
    ]);
    let signed = std::fs::read(work.path().join("signed.der")).unwrap();
    let blob = support::base64_encode(&signed);
    let sans = matching_sans();
    let (view, detail) = setup.enroll(&Device::rsa(2048), &matching_spec(&blob, &sans), "tx-cli");
    assert_eq!(view.status, PkiStatus::Success, "{detail}");
}

/// micromdm's scepclient (single DES, so the setup allows legacy algorithms) enrolls against
/// `scepd serve` with a blob from `scepd challenge mint`; the blob works once, and neither
/// it nor its claims reach the log.
#[test]
fn scepclient_enrolls_with_a_blob_from_scepd_challenge_mint() {
    use common::{describe, ensure_debian_tool, run_bounded, wait_for_http_ok, ChildGuard};
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_loopback_addr();
    let config = init(dir.path(), true, &addr.to_string());
    let mint = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["challenge", "mint", "--config"])
            .arg(&config)
            .args([
                "--template",
                "default",
                "--subject",
                "CN=scepclient-device,OU=MDM,O=scep-client,C=US",
                "--ttl",
                "10m",
                "--device-id",
                "device-42",
            ]),
        DEADLINE,
    );
    assert!(mint.status.success(), "{}", describe(&mint));
    let blob = String::from_utf8(mint.stdout.clone())
        .unwrap()
        .trim()
        .to_owned();
    assert!(blob.len() > 255, "a blob beyond RFC 2985's 255 characters");

    let mut server = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_scepd"))
            .arg("serve")
            .arg("--config")
            .arg(&config),
        &dir.path().join("serve.log"),
    );
    wait_for_http_ok(&mut server, addr, "/healthz", DEADLINE);
    let scepclient = ensure_debian_tool("scepclient", "scep");
    let run = |workdir: &Path| {
        run_bounded(
            Command::new(&scepclient).current_dir(workdir).args([
                "-private-key",
                "key.pem",
                "-server-url",
                &format!("http://{addr}/scep"),
                "-challenge",
                &blob,
                "-cn",
                "scepclient-device",
            ]),
            DEADLINE,
        )
    };
    let first = tempfile::tempdir().unwrap();
    let output = run(first.path());
    assert!(
        output.status.success() && first.path().join("client.pem").is_file(),
        "{}\n{}",
        describe(&output),
        server.log_text()
    );
    let verify = run_bounded(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(dir.path().join("ca.pem"))
            .arg(first.path().join("client.pem")),
        DEADLINE,
    );
    assert!(verify.status.success(), "{}", describe(&verify));

    let second = tempfile::tempdir().unwrap();
    let again = run(second.path());
    assert!(
        !second.path().join("client.pem").is_file(),
        "a blob works once"
    );
    assert!(!again.status.success());
    let log = server.log_text();
    assert!(log.contains("ChallengeReplayed"), "{log}");
    assert!(!log.contains(&blob[..64]), "the blob never reaches the log");
    server.assert_running();
}

/// A blob of about `chars` base64 characters: a valid challenge whose SignedData also carries
/// unrelated certificates, as a large real-world blob would carry a chain.
fn padded_blob(setup: &Signed, claims: &Claims, chars: usize) -> String {
    let (cert, key) = setup.signer();
    let filler = |i: usize| {
        let key = support::ec_key(openssl::nid::Nid::X9_62_PRIME256V1);
        scepd_ca::self_signed_ca(&key, &format!("CN=filler {i}"), 1).unwrap()
    };
    let one = filler(0).len() * 4 / 3;
    let count = chars.saturating_sub(2048) / one;
    let options = MintOptions {
        extra_certificates: (0..count).map(filler).collect(),
        ..MintOptions::default()
    };
    scepd_policy::mint_challenge(claims, &cert, &key, &setup.recipient, options).unwrap()
}

/// Intune's blobs are several kilobytes; iOS sends GET. A 32 KiB challenge enrolls over GET,
/// a 60 KiB one over POST.
#[test]
fn large_challenges_enroll_over_get_and_post() {
    let setup = Signed::new();
    let sans = matching_sans();
    for (chars, via_get) in [(32 * 1024, true), (60 * 1024, false)] {
        let blob = padded_blob(&setup, &claims(), chars);
        assert!(
            blob.len() >= chars - 2048 && blob.len() <= 64 * 1024,
            "{}",
            blob.len()
        );
        let device = Device::rsa(2048);
        let tx = format!("tx-large-{chars}");
        let prepared = setup.prepare(&device, &matching_spec(&blob, &sans), &tx);
        let request = if via_get {
            let message = support::base64_encode(&prepared.der);
            let query: String = url_escape(&message);
            Request::get(format!("/scep?operation=PKIOperation&message={query}"))
                .body(Bytes::new())
                .unwrap()
        } else {
            Request::post("/scep?operation=PKIOperation")
                .body(Bytes::from(prepared.der.clone()))
                .unwrap()
        };
        let response = runtime().block_on(setup.loaded.app.handle(request));
        assert_eq!(response.status(), http::StatusCode::OK, "{chars}");
        let view = client::read_cert_rep(
            response.body(),
            &prepared,
            &setup.reply_signer,
            &device.signer,
        )
        .unwrap();
        assert_eq!(view.status, PkiStatus::Success, "{chars}: {view:?}");
    }
}

fn url_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '+' => "%2B".to_owned(),
            '/' => "%2F".to_owned(),
            '=' => "%3D".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// `init --challenge-mode` chooses the default template's verifier; `--static-challenge`
/// goes with static mode only.
#[test]
fn init_challenge_modes() {
    let scepd = || Command::new(env!("CARGO_BIN_EXE_scepd"));
    let dir = tempfile::tempdir().unwrap();
    let refused = common::run_bounded(
        scepd()
            .args([
                "init",
                "--challenge-mode",
                "signed",
                "--static-challenge",
                "x",
                "--dir",
            ])
            .arg(dir.path().join("both")),
        DEADLINE,
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--static-challenge"));
    assert!(!dir.path().join("both/scepd.toml").exists());

    let otp_dir = dir.path().join("otp");
    let init = common::run_bounded(
        scepd()
            .args(["init", "--challenge-mode", "otp", "--dir"])
            .arg(&otp_dir)
            .args(["--admin-listen", &common::free_loopback_addr().to_string()]),
        DEADLINE,
    );
    assert!(init.status.success(), "{}", common::describe(&init));
    let config = otp_dir.join("scepd.toml");
    let password = common::run_bounded(
        scepd()
            .args(["challenge", "otp", "--template", "default", "--config"])
            .arg(&config),
        DEADLINE,
    );
    assert!(password.status.success(), "{}", common::describe(&password));
    let text = String::from_utf8(password.stdout).unwrap();
    let text = text.trim();
    assert!(
        text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()),
        "{text:?}"
    );
    // A signed-mode setup has no one-time passwords, and mint refuses an otp template.
    let mint = common::run_bounded(
        scepd()
            .args([
                "challenge",
                "mint",
                "--template",
                "default",
                "--subject",
                "CN=x",
            ])
            .arg("--config")
            .arg(&config),
        DEADLINE,
    );
    assert!(!mint.status.success());
    assert!(String::from_utf8_lossy(&mint.stderr).contains("does not use"));
}
