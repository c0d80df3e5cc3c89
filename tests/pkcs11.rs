//! Keys in a PKCS#11 token (issue 7, item 1), with SoftHSM2 (Debian `softhsm2`) set up by
//! the tests in a temporary directory (SOFTHSM2_CONF names a config whose
//! `directories.tokendir` is in it; `softhsm2-util --init-token --free` makes one token per
//! test):
//!
//! - `scepd init --pkcs11-module/--pkcs11-token/--pkcs11-pin-file` generates the CA, RA
//!   signing and RA encryption keys inside the token (sensitive, not extractable: the token
//!   refuses their secret parts), writes no key file, and micromdm's `scepclient` enrolls
//!   against `scepd serve`; `openssl verify` accepts the certificate;
//! - eight enrollments at once through `App::handle` all succeed (a pool of sessions);
//! - a token that goes away (its directory moved aside) fails fast: SCEP FAILURE when the RA
//!   keys are files and only the CA key is in the token, HTTP 503 when the RA signing key is
//!   in it too (no CertRep can be signed); both recover when the token is back;
//! - RSA-OAEP with SHA-256 to a token key (SoftHSM2 2.6 does OAEP with SHA-1 only) is
//!   FAILURE badAlg; a broken key-transport block and a broken ciphertext get the identical
//!   FAILURE badMessageCheck.
//!
//! The tests of this file run one at a time: they share the process's SoftHSM2 module, and
//! one of them makes a token disappear.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{describe, ensure_debian_tool, free_loopback_addr, run_bounded, ChildGuard};
use http::{Method, Request, StatusCode};
use scepd::scep::client::{self, CertRepView, PreparedRequest, RequestOptions, Tamper};
use scepd::scep::{DigestAlg, FailInfo, KeyTransport, PkiStatus};
use scepd::App;
use support::{options, runtime, Device};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-scepd";
const SO_PIN: &str = "0815-scepd";
const CHALLENGE: &str = "pkcs11-static-secret";

/// The SoftHSM2 directory of this test process.
struct SoftHsm {
    dir: PathBuf,
}

fn softhsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        ensure_debian_tool("softhsm2-util", "softhsm2");
        assert!(Path::new(MODULE).is_file(), "softhsm2 installs {MODULE}");
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::create_dir(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        // Before any module is loaded in this process; children inherit it.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::fs::write(dir.join("pin"), format!("{PIN}\n")).unwrap();
        SoftHsm { dir }
    })
}

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SoftHsm {
    fn pin_file(&self) -> PathBuf {
        self.dir.join("pin")
    }

    /// `softhsm2-util --init-token --free --label <label>`.
    fn new_token(&self, label: &str) {
        let output = run_bounded(
            Command::new("softhsm2-util").args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ]),
            Duration::from_secs(60),
        );
        assert!(output.status.success(), "{}", describe(&output));
    }

    /// The directory SoftHSM2 keeps the token `label` in (one per token, named by a UUID;
    /// its token.object holds the label).
    fn token_dir(&self, label: &str) -> PathBuf {
        let padded = format!("{label:<32}");
        std::fs::read_dir(self.dir.join("tokens"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| {
                std::fs::read(path.join("token.object")).is_ok_and(|bytes| {
                    bytes
                        .windows(padded.len())
                        .any(|window| window == padded.as_bytes())
                })
            })
            .unwrap_or_else(|| panic!("no SoftHSM2 directory for token {label}"))
    }
}

/// `scepd init` with the PKCS#11 options, in `dir`.
fn scepd_init(hsm: &SoftHsm, dir: &Path, token: &str, listen: &str) {
    let output = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["init", "--dir"])
            .arg(dir)
            .args(["--listen", listen, "--static-challenge", CHALLENGE])
            .args(["--legacy-algorithms"])
            .args(["--admin-listen", &free_loopback_addr().to_string()])
            .args(["--pkcs11-module", MODULE, "--pkcs11-token", token])
            .arg("--pkcs11-pin-file")
            .arg(hsm.pin_file()),
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "scepd init:\n{}",
        describe(&output)
    );
}

/// The server in this process, as `scepd serve` loads it.
struct InProcess {
    app: Arc<App>,
    recipient: Vec<u8>,
    reply_signer: Vec<u8>,
    ca: Vec<u8>,
}

impl InProcess {
    fn load(config: &Path) -> Self {
        let loaded = scepd::cli::serve::load(config).unwrap_or_else(|e| panic!("load: {e:?}"));
        let app = loaded.app;
        let response = runtime().block_on(app.handle(get("/scep?operation=GetCACert")));
        let certs = client::parse_ca_certs(response.body()).unwrap();
        let (recipient, reply_signer) = client::select_ra_certs(&certs).unwrap();
        let ca = certs.iter().find(|c| support::is_ca(c)).unwrap().clone();
        Self {
            app,
            recipient,
            reply_signer,
            ca,
        }
    }

    fn prepare(
        &self,
        device: &Device,
        cn: &str,
        opts: &RequestOptions,
        tamper: Tamper,
    ) -> PreparedRequest {
        let csr = device.simple_csr(cn, CHALLENGE);
        client::build_request_with(&csr, &[&self.recipient], &device.signer, opts, tamper).unwrap()
    }

    /// POSTs a request: the HTTP status, and the CertRep when it is 200.
    async fn send(app: Arc<App>, der: Vec<u8>) -> (StatusCode, Bytes) {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/scep?operation=PKIOperation")
            .body(Bytes::from(der))
            .unwrap();
        let response = app.handle(request).await;
        (response.status(), response.into_body())
    }

    fn enroll(
        &self,
        device: &Device,
        cn: &str,
        opts: &RequestOptions,
        tamper: Tamper,
    ) -> (StatusCode, Option<CertRepView>) {
        let request = self.prepare(device, cn, opts, tamper);
        let (status, body) =
            runtime().block_on(Self::send(Arc::clone(&self.app), request.der.clone()));
        let view = (status == StatusCode::OK).then(|| {
            client::read_cert_rep(&body, &request, &self.reply_signer, &device.signer)
                .expect("a valid CertRep")
        });
        (status, view)
    }

    fn assert_success(&self, view: &CertRepView) {
        assert_eq!(view.status, PkiStatus::Success, "{view:?}");
        let issued = view.certs.first().expect("the issued certificate");
        assert!(support::openssl_verify(&self.ca, issued));
    }
}

fn get(uri: &str) -> Request<Bytes> {
    Request::builder()
        .method(Method::GET)
        .uri(uri)
        .body(Bytes::new())
        .unwrap()
}

fn token_for(path_label: &str) -> Arc<scepd_ca::pkcs11::Token> {
    scepd_ca::pkcs11::Token::open(scepd_ca::pkcs11::TokenConfig {
        module: MODULE.into(),
        label: path_label.into(),
        pin: PIN.to_string().into(),
        max_idle_sessions: 1,
    })
    .unwrap()
}

#[test]
fn init_generates_keys_in_the_token_and_scepclient_enrolls() {
    let _serial = one_at_a_time();
    let hsm = softhsm();
    hsm.new_token("scepd-interop");
    let dir = tempfile::tempdir().unwrap();
    let http = free_loopback_addr();
    scepd_init(hsm, dir.path(), "scepd-interop", &http.to_string());

    // No key file; the configuration names the keys by label and the token by [pkcs11].
    for file in ["ca.key", "ra-sign.key", "ra-encrypt.key"] {
        assert!(!dir.path().join(file).exists(), "{file} written");
    }
    let config = std::fs::read_to_string(dir.path().join("scepd.toml")).unwrap();
    for line in [
        "key_label = \"scepd-ca\"",
        "sign_key_label = \"scepd-ra-sign\"",
        "encrypt_key_label = \"scepd-ra-encrypt\"",
        "[pkcs11]",
        "token = \"scepd-interop\"",
    ] {
        assert!(config.contains(line), "scepd.toml lacks {line}:\n{config}");
    }
    // The keys are in the token and do not come out of it.
    let token = token_for("scepd-interop");
    for label in ["scepd-ca", "scepd-ra-sign", "scepd-ra-encrypt"] {
        let protection = scepd_ca::pkcs11::protection(&token, label).unwrap();
        assert!(protection.on_token, "{label}: {protection:?}");
        assert!(protection.sensitive, "{label}: {protection:?}");
        assert!(!protection.extractable, "{label}: {protection:?}");
        assert!(!protection.secret_readable, "{label}: {protection:?}");
    }
    drop(token);

    let check = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["check-config", "--config"])
            .arg(dir.path().join("scepd.toml")),
        Duration::from_secs(30),
    );
    assert!(check.status.success(), "{}", describe(&check));

    let mut server = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["serve", "--config"])
            .arg(dir.path().join("scepd.toml")),
        &dir.path().join("serve.log"),
    );
    common::wait_for_http_ok(&mut server, http, "/healthz", Duration::from_secs(30));
    let scepclient = ensure_debian_tool("scepclient", "scep");
    let workdir = tempfile::tempdir().unwrap();
    let run = run_bounded(
        Command::new(scepclient).current_dir(workdir.path()).args([
            "-private-key",
            "key.pem",
            "-server-url",
            &format!("http://{http}/scep"),
            "-challenge",
            CHALLENGE,
            "-cn",
            "pkcs11-interop",
        ]),
        Duration::from_secs(60),
    );
    let issued = workdir.path().join("client.pem");
    assert!(
        run.status.success() && issued.is_file(),
        "scepclient:\n{}\nscepd:\n{}",
        describe(&run),
        server.log_text()
    );
    let verify = run_bounded(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(dir.path().join("ca.pem"))
            .arg(&issued),
        Duration::from_secs(30),
    );
    assert!(
        verify.status.success()
            && String::from_utf8_lossy(&verify.stdout)
                .trim_end()
                .ends_with(": OK"),
        "{}",
        describe(&verify)
    );
}

#[test]
fn eight_concurrent_enrollments_all_succeed() {
    let _serial = one_at_a_time();
    let hsm = softhsm();
    hsm.new_token("scepd-concurrent");
    let dir = tempfile::tempdir().unwrap();
    scepd_init(hsm, dir.path(), "scepd-concurrent", "127.0.0.1:0");
    let server = InProcess::load(&dir.path().join("scepd.toml"));
    let devices: Vec<Device> = (0..8).map(|_| Device::rsa(2048)).collect();
    let requests: Vec<PreparedRequest> = devices
        .iter()
        .enumerate()
        .map(|(i, device)| {
            server.prepare(
                device,
                &format!("concurrent-{i}"),
                &options(&format!("concurrent-{i}")),
                Tamper::None,
            )
        })
        .collect();
    let answers = runtime().block_on(async {
        let tasks: Vec<_> = requests
            .iter()
            .map(|request| {
                tokio::spawn(InProcess::send(
                    Arc::clone(&server.app),
                    request.der.clone(),
                ))
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    });
    for ((device, request), (status, body)) in devices.iter().zip(&requests).zip(answers) {
        assert_eq!(status, StatusCode::OK);
        let view =
            client::read_cert_rep(&body, request, &server.reply_signer, &device.signer).unwrap();
        server.assert_success(&view);
    }
}

/// Moves the token's directory aside for the duration of `during`.
fn with_token_away<T>(hsm: &SoftHsm, label: &str, during: impl FnOnce() -> T) -> T {
    let token_dir = hsm.token_dir(label);
    let aside = hsm.dir.join(format!("{label}.away"));
    std::fs::rename(&token_dir, &aside).unwrap();
    let result = during();
    std::fs::rename(&aside, &token_dir).unwrap();
    // Reconnection attempts are spaced by this much after a failed one.
    std::thread::sleep(scepd_ca::pkcs11::RETRY_INTERVAL);
    result
}

#[test]
fn a_token_that_goes_away_fails_fast_and_recovers() {
    let _serial = one_at_a_time();
    let hsm = softhsm();
    let device = Device::rsa(2048);

    // Every key in the token: no CertRep can be signed while it is away, so the answer is
    // HTTP 503 (never 500, never a hang), and SUCCESS again once it is back.
    hsm.new_token("scepd-away-all");
    let dir = tempfile::tempdir().unwrap();
    scepd_init(hsm, dir.path(), "scepd-away-all", "127.0.0.1:0");
    let server = InProcess::load(&dir.path().join("scepd.toml"));
    let (_, view) = server.enroll(&device, "before", &options("away-all-1"), Tamper::None);
    server.assert_success(&view.unwrap());
    with_token_away(hsm, "scepd-away-all", || {
        for attempt in 0..3 {
            let started = Instant::now();
            let (status, _) = server.enroll(
                &device,
                "away",
                &options(&format!("away-all-{attempt}x")),
                Tamper::None,
            );
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(started.elapsed() < Duration::from_secs(10));
        }
    });
    let (_, view) = server.enroll(&device, "after", &options("away-all-3"), Tamper::None);
    server.assert_success(&view.unwrap());
    drop(server);

    // Only the CA key in the token, the RA keys in files: a signed FAILURE while it is away.
    hsm.new_token("scepd-away-ca");
    let dir = tempfile::tempdir().unwrap();
    scepd_init(hsm, dir.path(), "scepd-away-ca", "127.0.0.1:0");
    move_ra_keys_to_files(dir.path());
    let server = InProcess::load(&dir.path().join("scepd.toml"));
    let (_, view) = server.enroll(&device, "before", &options("away-ca-1"), Tamper::None);
    server.assert_success(&view.unwrap());
    with_token_away(hsm, "scepd-away-ca", || {
        for attempt in 0..3 {
            let started = Instant::now();
            let (status, view) = server.enroll(
                &device,
                "away",
                &options(&format!("away-ca-{attempt}x")),
                Tamper::None,
            );
            assert_eq!(status, StatusCode::OK);
            let view = view.unwrap();
            assert_eq!(view.status, PkiStatus::Failure, "{view:?}");
            assert!(started.elapsed() < Duration::from_secs(10));
        }
    });
    let (_, view) = server.enroll(&device, "after", &options("away-ca-3"), Tamper::None);
    server.assert_success(&view.unwrap());
}

/// Replaces the token's RA keys by new RSA keys in files, with certificates from the CA
/// (whose key stays in the token), and points `[ra]` at them.
fn move_ra_keys_to_files(dir: &Path) {
    let config_path = dir.join("scepd.toml");
    let config = scepd::config::Config::load(&config_path).unwrap();
    let token = scepd::pkcs11::open(&config, 1).unwrap();
    let ca = scepd::pkcs11::load_ca(&config, token.as_ref(), None).unwrap();
    for (name, purpose) in [
        ("ra-sign", scepd_ca::RaPurpose::Signing),
        ("ra-encrypt", scepd_ca::RaPurpose::Encryption),
    ] {
        let key = scepd_ca::generate_key(scepd_ca::KeySpec::Rsa2048).unwrap();
        let der =
            scepd_ca::issue_ra_certificate(&ca, &key, &format!("CN=scepd {name}"), purpose, 30)
                .unwrap();
        let pem = openssl::x509::X509::from_der(&der)
            .unwrap()
            .to_pem()
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), pem).unwrap();
        std::fs::write(
            dir.join(format!("{name}.key")),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace(
            "sign_key_label = \"scepd-ra-sign\"",
            "sign_key = \"ra-sign.key\"",
        )
        .replace(
            "encrypt_key_label = \"scepd-ra-encrypt\"",
            "encrypt_key = \"ra-encrypt.key\"",
        );
    std::fs::write(&config_path, text).unwrap();
}

#[test]
fn oaep_sha256_is_bad_alg_and_every_decryption_failure_looks_the_same() {
    let _serial = one_at_a_time();
    let hsm = softhsm();
    hsm.new_token("scepd-oaep");
    let dir = tempfile::tempdir().unwrap();
    scepd_init(hsm, dir.path(), "scepd-oaep", "127.0.0.1:0");
    let server = InProcess::load(&dir.path().join("scepd.toml"));
    let device = Device::rsa(2048);

    let with = |id: &str, transport: KeyTransport| RequestOptions {
        key_transport: transport,
        ..options(id)
    };
    let (_, view) = server.enroll(
        &device,
        "oaep1",
        &with("oaep-sha1", KeyTransport::RsaOaep(DigestAlg::Sha1)),
        Tamper::None,
    );
    server.assert_success(&view.unwrap());

    let (_, view) = server.enroll(
        &device,
        "oaep256",
        &with("oaep-sha256", KeyTransport::RsaOaep(DigestAlg::Sha256)),
        Tamper::None,
    );
    let view = view.unwrap();
    assert_eq!(
        (view.status, view.fail_info),
        (PkiStatus::Failure, Some(FailInfo::BadAlg)),
        "{view:?}"
    );

    let mut failures = Vec::new();
    for (id, transport, tamper) in [
        (
            "bad-block-v15",
            KeyTransport::RsaPkcs1v15,
            Tamper::FlipEncryptedKeyByte,
        ),
        (
            "bad-block-oaep",
            KeyTransport::RsaOaep(DigestAlg::Sha1),
            Tamper::FlipEncryptedKeyByte,
        ),
        (
            "bad-ciphertext",
            KeyTransport::RsaPkcs1v15,
            Tamper::FlipCiphertextByte,
        ),
    ] {
        let (status, view) = server.enroll(&device, "tampered", &with(id, transport), tamper);
        assert_eq!(status, StatusCode::OK);
        let view = view.unwrap();
        assert_eq!(view.status, PkiStatus::Failure, "{id}: {view:?}");
        failures.push((
            view.fail_info,
            view.fail_info_text.clone(),
            view.has_content,
        ));
    }
    assert_eq!(failures[0].0, Some(FailInfo::BadMessageCheck));
    assert!(failures.iter().all(|f| *f == failures[0]), "{failures:?}");
}

/// The token keys themselves, below the server: generated inside (a label is never
/// reused), signing (RSA and ECDSA) and decrypting through `PrivateKeyOps`, OAEP with SHA-1
/// only, and every decryption failure the same `Failed`.
#[test]
fn token_keys_sign_and_decrypt_through_private_key_ops() {
    use openssl::nid::Nid;
    use scepd_ca::pkcs11::{self, TokenKeySpec, TokenKeyUse};
    use scepd_ca::{HashAlg, KeyOpError, PrivateKeyOps, RsaDecryption};

    let _serial = one_at_a_time();
    let hsm = softhsm();
    hsm.new_token("scepd-unit");
    let token = token_for("scepd-unit");
    let rsa =
        pkcs11::generate(&token, "rsa", TokenKeySpec::Rsa(2048), TokenKeyUse::Decrypt).unwrap();
    let p256 = TokenKeySpec::Ec(Nid::X9_62_PRIME256V1);
    let ec = pkcs11::generate(&token, "ec", p256, TokenKeyUse::Sign).unwrap();
    assert!(pkcs11::generate(&token, "ec", p256, TokenKeyUse::Sign).is_err());

    let signature = ec.sign(HashAlg::Sha256, b"data").unwrap();
    let public = ec.public_key().unwrap();
    let mut verifier =
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public).unwrap();
    assert!(verifier.verify_oneshot(&signature, b"data").unwrap());

    let public = rsa.public_key().unwrap().rsa().unwrap();
    let mut wrapped = vec![0; 256];
    public
        .public_encrypt(
            b"0123456789abcdef",
            &mut wrapped,
            openssl::rsa::Padding::PKCS1,
        )
        .unwrap();
    assert_eq!(
        rsa.rsa_decrypt(RsaDecryption::Pkcs1v15, &wrapped).unwrap(),
        b"0123456789abcdef"
    );
    let mut broken = wrapped.clone();
    broken[10] ^= 1;
    for (padding, block) in [
        (RsaDecryption::Pkcs1v15, &broken),
        (RsaDecryption::Oaep(HashAlg::Sha1), &wrapped),
    ] {
        assert!(matches!(
            rsa.rsa_decrypt(padding, block),
            Err(KeyOpError::Failed)
        ));
    }
    assert!(matches!(
        rsa.rsa_decrypt(RsaDecryption::Oaep(HashAlg::Sha256), &wrapped),
        Err(KeyOpError::Unsupported(_))
    ));
    // A decryption key may not sign.
    assert!(rsa.sign(HashAlg::Sha256, b"data").is_err());
    for label in ["rsa", "ec"] {
        let protection = pkcs11::protection(&token, label).unwrap();
        assert!(protection.sensitive && !protection.extractable && protection.on_token);
        assert!(!protection.secret_readable, "{label}: {protection:?}");
    }
}
