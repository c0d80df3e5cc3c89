//! Interop with a real SCEP client: micromdm's `scepclient` 2.1.0 (Debian package `scep`)
//! enrolls against `scepd serve` over loopback, at both URL paths clients use (`/scep` and
//! NDES's `/certsrv/mscep/mscep.dll`), over HTTP and HTTPS.
//!
//! scepclient runs GetCACert, GetCACaps and a PKCSReq (RFC 8894 §3.3.1) encrypted with single
//! DES, which it cannot be told not to use; hence `--legacy-algorithms`. It writes key.pem,
//! csr.pem and client.pem into its working directory, so every run gets an empty one.
//!
//! These tests install scepclient themselves when it is missing (as root) and fail, never
//! skip, when they cannot.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    describe, ensure_debian_tool, free_loopback_addr, run_bounded, wait_for_http_ok, wait_for_tcp,
    ChildGuard,
};
use openssl::nid::Nid;
use openssl::x509::X509;

const CHALLENGE: &str = "interop-static-secret";
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
/// The name the HTTPS listener's certificate is issued for (`scepd init --tls-name`).
const TLS_NAME: &str = "localhost";

/// A running `scepd serve` with a fresh setup from `scepd init`; killed on drop.
struct Scepd {
    // Declared first so that the server dies before its directory is removed.
    process: ChildGuard,
    dir: tempfile::TempDir,
    http: SocketAddr,
    https: SocketAddr,
}

impl Scepd {
    /// `scepd init` with both listeners on free loopback ports, then `scepd serve`, then waits
    /// for `/healthz` and the TLS listener.
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (http, https) = (free_loopback_addr(), free_loopback_addr());
        let init = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_scepd"))
                .args(["init", "--dir"])
                .arg(dir.path())
                .args([
                    "--listen",
                    &http.to_string(),
                    "--static-challenge",
                    CHALLENGE,
                    "--legacy-algorithms",
                ])
                .args(["--tls-name", TLS_NAME, "--tls-listen", &https.to_string()])
                // Servers of tests running in parallel must not collide on the admin port.
                .args(["--admin-listen", &free_loopback_addr().to_string()]),
            Duration::from_secs(60),
        );
        assert!(
            init.status.success(),
            "scepd init failed:\n{}",
            describe(&init)
        );
        let config = dir.path().join("scepd.toml");
        let mut process = ChildGuard::spawn(
            Command::new(env!("CARGO_BIN_EXE_scepd"))
                .arg("serve")
                .arg("--config")
                .arg(&config),
            &dir.path().join("serve.log"),
        );
        wait_for_http_ok(&mut process, http, "/healthz", STARTUP_DEADLINE);
        wait_for_tcp(&mut process, https, STARTUP_DEADLINE);
        Self {
            process,
            dir,
            http,
            https,
        }
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://{TLS_NAME}:{}{path}", self.https.port())
    }
}

/// One scepclient run in its own empty working directory.
struct ClientRun {
    workdir: tempfile::TempDir,
    output: Output,
}

impl ClientRun {
    fn certificate_path(&self) -> PathBuf {
        self.workdir.path().join("client.pem")
    }

    fn got_certificate(&self) -> bool {
        self.certificate_path().is_file()
    }
}

/// Runs scepclient against `server_url`. For HTTPS, `trusted_ca` becomes its trust store:
/// scepclient 2.1.0 has no CA-file flag, and Go reads SSL_CERT_FILE on Linux.
fn run_scepclient(
    server_url: &str,
    challenge: &str,
    cn: &str,
    trusted_ca: Option<&Path>,
) -> ClientRun {
    let scepclient = ensure_debian_tool("scepclient", "scep");
    let workdir = tempfile::tempdir().expect("client working dir");
    let mut command = Command::new(scepclient);
    command.current_dir(workdir.path()).args([
        "-private-key",
        "key.pem",
        "-server-url",
        server_url,
        "-challenge",
        challenge,
        "-cn",
        cn,
        "-debug",
    ]);
    if let Some(ca) = trusted_ca {
        command.env("SSL_CERT_FILE", ca).env_remove("SSL_CERT_DIR");
    }
    let output = run_bounded(&mut command, CLIENT_DEADLINE);
    ClientRun { workdir, output }
}

/// `openssl verify -CAfile ca.pem client.pem` prints OK, and the subject's CN is `cn`.
fn assert_issued(server: &Scepd, run: &ClientRun, cn: &str) {
    assert!(
        run.output.status.success() && run.got_certificate(),
        "scepclient did not enroll:\n{}\nscepd log:\n{}",
        describe(&run.output),
        server.process.log_text()
    );
    let verify = run_bounded(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(server.ca_pem())
            .arg(run.certificate_path()),
        Duration::from_secs(30),
    );
    let verdict = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && verdict.trim_end().ends_with(": OK"),
        "openssl verify:\n{}",
        describe(&verify)
    );
    assert_eq!(
        common_names(&run.certificate_path()),
        [cn],
        "issued certificate's subject CN"
    );
}

fn common_names(pem_path: &Path) -> Vec<String> {
    let pem = std::fs::read(pem_path).expect("read client.pem");
    let certificate = X509::from_pem(&pem).expect("client.pem holds a PEM certificate");
    certificate
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .map(|entry| entry.data().to_string().expect("CN as UTF-8"))
        .collect()
}

fn enroll_and_check(server: &Scepd, url: String, trusted_ca: Option<&Path>, cn: &str) {
    let run = run_scepclient(&url, CHALLENGE, cn, trusted_ca);
    assert_issued(server, &run, cn);
}

#[test]
fn scepclient_enrolls_over_http_at_scep() {
    let server = Scepd::start();
    enroll_and_check(&server, server.http_url("/scep"), None, "interop-http-scep");
}

#[test]
fn scepclient_enrolls_over_http_at_mscep_dll() {
    let server = Scepd::start();
    enroll_and_check(
        &server,
        server.http_url("/certsrv/mscep/mscep.dll"),
        None,
        "interop-http-mscep",
    );
}

#[test]
fn scepclient_enrolls_over_https_at_scep() {
    let server = Scepd::start();
    let ca = server.ca_pem();
    enroll_and_check(
        &server,
        server.https_url("/scep"),
        Some(&ca),
        "interop-https-scep",
    );
}

#[test]
fn scepclient_enrolls_over_https_at_mscep_dll() {
    let server = Scepd::start();
    let ca = server.ca_pem();
    enroll_and_check(
        &server,
        server.https_url("/certsrv/mscep/mscep.dll"),
        Some(&ca),
        "interop-https-mscep",
    );
}

#[test]
fn scepclient_with_a_wrong_challenge_gets_no_certificate() {
    let server = Scepd::start();
    let refused = run_scepclient(
        &server.http_url("/scep"),
        "not-the-challenge",
        "interop-wrong-challenge",
        None,
    );
    assert!(
        !refused.output.status.success() || !refused.got_certificate(),
        "a wrong challenge was accepted:\n{}",
        describe(&refused.output)
    );
    // The refusal must be the server's SCEP answer (a FAILURE CertRep with a failInfo), not a
    // connection problem that would make this test pass for the wrong reason.
    let printed = String::from_utf8_lossy(&refused.output.stdout)
        + String::from_utf8_lossy(&refused.output.stderr);
    assert!(
        printed.contains("failInfo"),
        "no SCEP failure reply seen:\n{}",
        describe(&refused.output)
    );
    // And the same server still enrolls with the right challenge.
    enroll_and_check(
        &server,
        server.http_url("/scep"),
        None,
        "interop-after-refusal",
    );
}
