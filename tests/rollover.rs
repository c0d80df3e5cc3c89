//! CA rollover (issue 4 item 7): `scepd ca rollover` prepares the next CA and RA
//! certificates; GetNextCACert serves them, signed by the current CA, and GetCACaps
//! advertises it. Checked with `openssl cms -verify` as the independent reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use scepd::cli::serve::{load, Loaded};
use scepd::scep::client;
use support::{init_dir, openssl_verify, runtime, Setup};

const DEADLINE: Duration = Duration::from_secs(60);

fn get(loaded: &Loaded, operation: &str) -> Response<Bytes> {
    let request = Request::get(format!("/scep?operation={operation}"))
        .body(Bytes::new())
        .unwrap();
    runtime().block_on(loaded.app.handle(request))
}

fn rollover(config: &Path, args: &[&str]) -> std::process::Output {
    common::run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_scepd"))
            .args(["ca", "rollover", "--config"])
            .arg(config)
            .args(args),
        DEADLINE,
    )
}

/// `openssl cms -verify` of a GetNextCACert body against the current CA; the eContent.
fn cms_verify(dir: &Path, body: &[u8]) -> Vec<u8> {
    let input = dir.join("next.p7");
    let output = dir.join("next-inner.der");
    std::fs::write(&input, body).unwrap();
    let run = common::run_bounded(
        std::process::Command::new("openssl")
            .args([
                "cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any",
            ])
            .arg("-in")
            .arg(&input)
            .arg("-CAfile")
            .arg(dir.join("ca.pem"))
            .arg("-out")
            .arg(&output),
        DEADLINE,
    );
    assert!(run.status.success(), "{}", common::describe(&run));
    std::fs::read(output).unwrap()
}

fn subject(der: &[u8]) -> String {
    let cert = openssl::x509::X509::from_der(der).unwrap();
    format!("{:?}", cert.subject_name())
}

#[test]
fn get_next_ca_cert_serves_the_next_ca_after_scepd_ca_rollover() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_dir(dir.path(), &Setup::default());
    {
        let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
        let caps = get(&loaded, "GetCACaps");
        assert!(!String::from_utf8_lossy(caps.body()).contains("GetNextCACert"));
        assert_eq!(
            get(&loaded, "GetNextCACert").status(),
            StatusCode::NOT_FOUND
        );
    }

    let run = rollover(&config, &["--switch-in-days", "7"]);
    assert!(run.status.success(), "{}", common::describe(&run));
    let again = rollover(&config, &["--switch-at", "2030-01-01T00:00:00Z"]);
    assert!(!again.status.success(), "a second rollover is refused");
    let bad = rollover(&config, &["--switch-at", "tomorrow"]);
    assert!(!bad.status.success());

    let loaded = load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
    let caps = get(&loaded, "GetCACaps");
    assert!(String::from_utf8_lossy(caps.body())
        .lines()
        .any(|l| l == "GetNextCACert"));
    let response = get(&loaded, "GetNextCACert");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-x509-next-ca-cert"
    );
    let inner = cms_verify(dir.path(), response.body());
    let certs = client::parse_ca_certs(&inner).unwrap();
    assert_eq!(
        certs.len(),
        3,
        "next CA, next RA signing, next RA encryption"
    );
    let current = scepd::keys::load_cert_der(&dir.path().join("ca.pem")).unwrap();
    let next = &certs[0];
    assert_ne!(next, &current);
    assert_eq!(subject(next), subject(&current));
    assert_eq!(
        next,
        &scepd::keys::load_cert_der(&dir.path().join("ca-next.pem")).unwrap()
    );
    assert!(support::is_ca(next));
    for ra in &certs[1..] {
        assert!(
            openssl_verify(next, ra),
            "RA certificate issued by the next CA"
        );
        assert!(!openssl_verify(&current, ra));
    }
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca-next.key", "ra-sign-next.key", "ra-encrypt-next.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}
