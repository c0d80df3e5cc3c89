//! CRL and OCSP (issue 4 items 5 and 6) against a running `scepd serve`, checked with the
//! real tools: micromdm's `scepclient` enrolls, `openssl ocsp` asks for the status (POST, with
//! its default nonce, which it verifies), a GET request is sent over a raw socket and read back
//! with `openssl ocsp -respin`, `openssl crl` verifies the served CRL against the CA, and
//! `openssl x509` shows the CDP and AIA URLs in the issued certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use common::{describe, free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard};

const CHALLENGE: &str = "crl-ocsp-test-challenge";
const DEADLINE: Duration = Duration::from_secs(60);

fn scepd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scepd"))
}

fn openssl(args: &[&str], dir: &Path) -> Output {
    run_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        DEADLINE,
    )
}

/// stdout and stderr together (openssl prints verification results on stderr).
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

struct Server {
    process: ChildGuard,
    addr: SocketAddr,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    /// `scepd init` (which writes `public_url = "http://<listen>"`), single DES allowed for
    /// scepclient, then `scepd serve`.
    fn start() -> Self {
        Self::start_with("")
    }

    /// [`Server::start`] with `extra` appended to scepd.toml.
    fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_loopback_addr();
        let output = run_bounded(
            scepd().args(["init", "--dir"]).arg(dir.path()).args([
                "--listen",
                &addr.to_string(),
                "--static-challenge",
                CHALLENGE,
                "--admin-listen",
                &free_loopback_addr().to_string(),
            ]),
            DEADLINE,
        );
        assert!(output.status.success(), "{}", describe(&output));
        let config = dir.path().join("scepd.toml");
        let toml = std::fs::read_to_string(&config).unwrap();
        assert!(
            toml.contains(&format!("public_url = \"http://{addr}\"")),
            "{toml}"
        );
        let toml = toml.replace("legacy_algorithms = false", "legacy_algorithms = true") + extra;
        std::fs::write(&config, toml).unwrap();
        let mut process = ChildGuard::spawn(
            scepd().arg("serve").arg("--config").arg(&config),
            &dir.path().join("serve.log"),
        );
        wait_for_http_ok(&mut process, addr, "/healthz", DEADLINE);
        Self {
            process,
            addr,
            config,
            dir,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        run_bounded(
            scepd().args(args).arg("--config").arg(&self.config),
            DEADLINE,
        )
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Enrolls with scepclient; returns the serial (uppercase hex) and the certificate path.
    fn enroll(&self, cn: &str) -> (String, PathBuf) {
        let client_dir = self.path().join(cn);
        std::fs::create_dir_all(&client_dir).unwrap();
        let scepclient = common::ensure_debian_tool("scepclient", "scep");
        let output = run_bounded(
            Command::new(scepclient).current_dir(&client_dir).args([
                "-private-key",
                "key.pem",
                "-server-url",
                &format!("http://{}/scep", self.addr),
                "-challenge",
                CHALLENGE,
                "-cn",
                cn,
                "-certificate",
                "client.pem",
            ]),
            DEADLINE,
        );
        assert!(
            output.status.success(),
            "{}\n{}",
            describe(&output),
            self.process.log_text()
        );
        let cert = client_dir.join("client.pem");
        let serial = openssl(
            &["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"],
            self.path(),
        );
        assert!(serial.status.success(), "{}", describe(&serial));
        let serial = String::from_utf8(serial.stdout).unwrap();
        let serial = serial.trim().trim_start_matches("serial=").to_owned();
        (serial, cert)
    }

    /// `openssl ocsp` over POST, with its default nonce.
    fn ocsp_post(&self, target: &[&str]) -> String {
        let mut args = vec!["ocsp", "-issuer", "ca.pem", "-CAfile", "ca.pem"];
        args.extend_from_slice(target);
        let url = format!("http://{}/ocsp", self.addr);
        args.extend_from_slice(&["-url", &url]);
        let output = openssl(&args, self.path());
        let text = text(&output);
        assert!(
            output.status.success(),
            "{text}\n{}",
            self.process.log_text()
        );
        assert!(text.contains("Response verify OK"), "{text}");
        // openssl sends a nonce and warns when the response does not echo it.
        assert!(!text.contains("WARNING"), "{text}");
        text
    }

    /// Fetches the CRL, checks its signature against the CA and returns `openssl crl -text`.
    fn crl_text(&self) -> String {
        let (status, headers, body) = http_get(self.addr, "/crl/ca.crl");
        assert_eq!(status, 200, "{headers}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("content-type: application/pkix-crl"),
            "{headers}"
        );
        let file = self.path().join("served.crl");
        std::fs::write(&file, body).unwrap();
        let output = openssl(
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                "served.crl",
                "-CAfile",
                "ca.pem",
                "-noout",
                "-text",
            ],
            self.path(),
        );
        let text = text(&output);
        assert!(output.status.success(), "{text}");
        assert!(text.contains("verify OK"), "{text}");
        text
    }
}

/// One HTTP/1.1 GET over a raw socket: (status, header block, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    http_request(addr, "GET", path, &[])
}

fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let headers = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = headers[9..12].parse().unwrap();
    (status, headers, response[split + 4..].to_vec())
}

/// The number after "X509v3 CRL Number:" in `openssl crl -text`.
fn crl_number(text: &str) -> u64 {
    let after = text
        .split("X509v3 CRL Number:")
        .nth(1)
        .unwrap_or_else(|| panic!("no CRL number: {text}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn ocsp_and_crl_follow_a_revocation_made_through_the_admin_api() {
    let server = Server::start();
    let (serial, cert) = server.enroll("ocsp-device");
    let cert = cert.to_str().unwrap();
    let addr = server.addr;

    // The issued certificate names this server's CRL and OCSP URLs.
    let x509 = openssl(&["x509", "-in", cert, "-noout", "-text"], server.path());
    let x509 = text(&x509);
    assert!(
        x509.contains(&format!("URI:http://{addr}/crl/ca.crl")),
        "{x509}"
    );
    assert!(
        x509.contains(&format!("OCSP - URI:http://{addr}/ocsp")),
        "{x509}"
    );

    // Before the revocation: good, and the CRL does not list the serial.
    let before = server.crl_text();
    assert!(!before.contains(&serial), "{before}");
    assert!(before.contains("No Revoked Certificates"), "{before}");
    let first_number = crl_number(&before);

    let good = server.ocsp_post(&["-cert", cert]);
    assert!(good.contains(&format!("{cert}: good")), "{good}");

    // A serial never issued here: unknown.
    let unknown = server.ocsp_post(&["-serial", "0x1234567890"]);
    assert!(unknown.contains("0x1234567890: unknown"), "{unknown}");

    // The GET form (RFC 6960 Appendix A.1), base64 with percent-escaped '+', '/' and '='.
    let reqout = openssl(
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            cert,
            "-no_nonce",
            "-reqout",
            "req.der",
        ],
        server.path(),
    );
    assert!(reqout.status.success(), "{}", describe(&reqout));
    let request = std::fs::read(server.path().join("req.der")).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(&request)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (status, headers, body) = http_get(addr, &format!("/ocsp/{encoded}"));
    assert_eq!(status, 200, "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/ocsp-response"),
        "{headers}"
    );
    std::fs::write(server.path().join("get-response.der"), body).unwrap();
    let respin = openssl(
        &[
            "ocsp",
            "-respin",
            "get-response.der",
            "-issuer",
            "ca.pem",
            "-CAfile",
            "ca.pem",
            "-cert",
            cert,
        ],
        server.path(),
    );
    let respin = text(&respin);
    assert!(
        respin.contains("Response verify OK") && respin.contains(&format!("{cert}: good")),
        "{respin}"
    );

    // A request that is not an OCSPRequest: malformedRequest (HTTP 200), not a server error.
    let (status, _, body) = http_request(addr, "POST", "/ocsp", b"not DER at all");
    assert_eq!(status, 200);
    assert_eq!(body, [0x30, 0x03, 0x0a, 0x01, 0x01]);
    let (status, _, body) = http_get(addr, "/ocsp/!!!");
    assert_eq!(status, 200);
    assert_eq!(body, [0x30, 0x03, 0x0a, 0x01, 0x01]);

    // Revoke through the admin API (the server holds the store).
    let revoke = server.cli(&[
        "certs",
        "revoke",
        "--serial",
        &serial,
        "--reason",
        "keyCompromise",
        "--by",
        "tester",
    ]);
    assert!(revoke.status.success(), "{}", describe(&revoke));

    let revoked = server.ocsp_post(&["-cert", cert]);
    assert!(revoked.contains(&format!("{cert}: revoked")), "{revoked}");
    assert!(revoked.contains("Reason: keyCompromise"), "{revoked}");
    assert!(revoked.contains("Revocation Time:"), "{revoked}");

    // The CRL was re-signed at once: it lists the serial, with a higher CRL number.
    let after = server.crl_text();
    assert!(
        after.contains(&format!("Serial Number: {serial}")),
        "{serial}\n{after}"
    );
    assert!(after.contains("Key Compromise"), "{after}");
    assert!(crl_number(&after) > first_number, "{before}\n{after}");
    // The CRL is v2 with an authority key identifier.
    assert!(after.contains("Version 2"), "{after}");
    assert!(after.contains("X509v3 Authority Key Identifier"), "{after}");

    // Revoking again changes nothing and is harmless.
    let again = server.cli(&["certs", "revoke", "--serial", &serial]);
    assert!(again.status.success(), "{}", describe(&again));

    // Unknown CA names and other methods.
    assert_eq!(http_get(addr, "/crl/other.crl").0, 404);
    assert_eq!(http_request(addr, "POST", "/crl/ca.crl", b"").0, 405);
    assert_eq!(http_request(addr, "PUT", "/ocsp", b"").0, 405);
}

#[test]
fn a_delegated_responder_certificate_signs_when_configured() {
    let server =
        Server::start_with("\n[ocsp]\nresponder = \"delegated\"\nresponder_validity_days = 2\n");
    let (serial, cert) = server.enroll("delegated-device");
    let cert = cert.to_str().unwrap();
    // openssl accepts a responder certificate issued by the CA with id-kp-OCSPSigning.
    let good = server.ocsp_post(&["-cert", cert, "-resp_text"]);
    assert!(good.contains(&format!("{cert}: good")), "{good}");
    assert!(good.contains("Subject: CN=scepd OCSP responder"), "{good}");
    assert!(good.contains("OCSP Signing"), "{good}");
    assert!(good.contains("OCSP No Check"), "{good}");
    let revoke = server.cli(&[
        "certs",
        "revoke",
        "--serial",
        &serial,
        "--reason",
        "superseded",
    ]);
    assert!(revoke.status.success(), "{}", describe(&revoke));
    let revoked = server.ocsp_post(&["-cert", cert]);
    assert!(revoked.contains(&format!("{cert}: revoked")), "{revoked}");
    assert!(revoked.contains("Reason: superseded"), "{revoked}");
}

#[test]
fn the_crl_number_keeps_growing_across_restarts() {
    let mut server = Server::start();
    let first = crl_number(&server.crl_text());
    let pid = server.process.id().to_string();
    let kill = run_bounded(Command::new("kill").args(["-TERM", &pid]), DEADLINE);
    assert!(kill.status.success());
    server
        .process
        .wait_for_exit(Duration::from_secs(40))
        .expect("exits after SIGTERM");
    server.process = ChildGuard::spawn(
        scepd().arg("serve").arg("--config").arg(&server.config),
        &server.path().join("serve2.log"),
    );
    wait_for_http_ok(&mut server.process, server.addr, "/healthz", DEADLINE);
    let second = crl_number(&server.crl_text());
    assert!(second > first, "{first} then {second}");
}

#[test]
fn bad_crl_and_ocsp_settings_are_listed_together_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_bounded(
        scepd().args(["init", "--dir"]).arg(dir.path()).args([
            "--listen",
            &free_loopback_addr().to_string(),
            "--admin-listen",
            &free_loopback_addr().to_string(),
        ]),
        DEADLINE,
    );
    assert!(output.status.success(), "{}", describe(&output));
    let config = dir.path().join("scepd.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    let public_url = toml
        .lines()
        .find(|l| l.starts_with("public_url = "))
        .unwrap()
        .to_owned();
    let toml = toml
        .replace(&public_url, "public_url = \"ftp://example.com\"")
        .replace("[ca]\n", "[ca]\nname = \"my ca\"\n")
        + "\n[crl]\nnext_update_hours = 0\n\n[ocsp]\nresponder = \"someone\"\n";
    std::fs::write(&config, toml).unwrap();
    let check = run_bounded(
        scepd().arg("check-config").arg("--config").arg(&config),
        DEADLINE,
    );
    assert_eq!(check.status.code(), Some(64), "{}", describe(&check));
    let stderr = String::from_utf8_lossy(&check.stderr);
    for key in [
        "server.public_url",
        "ca.name",
        "crl.next_update_hours",
        "ocsp.responder",
    ] {
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}
