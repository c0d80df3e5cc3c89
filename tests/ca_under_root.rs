//! A CA under an existing root (issue 7 item 4), with roots made by the `openssl` command:
//!
//! - `scepd init --ca-csr-out` writes a CSR for the issuing CA and no certificate; `serve`
//!   refuses to start and says what to do; `scepd ca install-cert` refuses a certificate for
//!   another key and installs the one the root signed (`openssl x509 -req`); then a real
//!   enrollment (micromdm's `scepclient` against `scepd serve`) gets a certificate that
//!   `openssl verify -CAfile root.pem -untrusted ca.pem` accepts, and GetCACert serves the root.
//! - `scepd init --ca-import-pem CERT KEY` (an encrypted key, its password in a file) and
//!   `--ca-import-p12 FILE --ca-import-password-file F` (an intermediate with its root): a
//!   certificate issued after the import verifies against the imported CA (and its root).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    describe, ensure_debian_tool, free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard,
};

const CHALLENGE: &str = "under-root-secret";
const DEADLINE: Duration = Duration::from_secs(60);

fn scepd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scepd"))
}

/// Runs `openssl ARGS` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = run_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        DEADLINE,
    );
    assert!(
        output.status.success(),
        "openssl {args:?}:\n{}",
        describe(&output)
    );
}

/// `openssl verify` with `extra` options; whether it accepted.
fn verifies(dir: &Path, extra: &[&str], cert: &Path) -> bool {
    let output = run_bounded(
        Command::new("openssl")
            .current_dir(dir)
            .arg("verify")
            .args(extra)
            .arg(cert),
        DEADLINE,
    );
    if !output.status.success() {
        eprintln!("openssl verify {extra:?}:\n{}", describe(&output));
    }
    output.status.success()
}

/// A self-signed root CA (root.key, root.pem) in `dir`.
fn make_root(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "3650",
            "-subj",
            &format!("/O=scepd tests/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// The extensions a root gives an issuing CA (`openssl x509 -req -extfile`).
const CA_EXTENSIONS: &str = "[v3_ca]\nbasicConstraints = critical, CA:TRUE, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign, digitalSignature\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n";

/// `root` signs `csr` as an issuing CA: `out`.
fn sign_as_ca(dir: &Path, root: &str, csr: &str, out: &str) {
    std::fs::write(dir.join("ca-ext.cnf"), CA_EXTENSIONS).expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            &format!("{root}.pem"),
            "-CAkey",
            &format!("{root}.key"),
            "-CAcreateserial",
            "-days",
            "1825",
            "-sha256",
            "-extfile",
            "ca-ext.cnf",
            "-extensions",
            "v3_ca",
            "-out",
            out,
        ],
    );
}

fn init(dir: &Path, listen: SocketAddr, extra: &[&str]) -> std::process::Output {
    run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(dir)
            .args(["--listen", &listen.to_string()])
            .args(["--admin-listen", &free_loopback_addr().to_string()])
            .args(["--static-challenge", CHALLENGE, "--legacy-algorithms"])
            .args(extra),
        DEADLINE,
    )
}

/// `scepd serve`, then one scepclient enrollment; the issued certificate's path.
fn enroll_through_serve(dir: &Path, listen: SocketAddr, cn: &str) -> (ChildGuard, PathBuf) {
    ensure_debian_tool("scepclient", "scep");
    let mut server = ChildGuard::spawn(
        scepd()
            .arg("serve")
            .arg("--config")
            .arg(dir.join("scepd.toml")),
        &dir.join("serve.log"),
    );
    wait_for_http_ok(&mut server, listen, "/healthz", Duration::from_secs(20));
    let work = dir.join(format!("client-{cn}"));
    std::fs::create_dir_all(&work).expect("client dir");
    let output = run_bounded(
        Command::new("scepclient")
            .current_dir(&work)
            .args(["-server-url", &format!("http://{listen}/scep")])
            .args(["-challenge", CHALLENGE, "-cn", cn])
            .args(["-private-key", "key.pem", "-certificate", "client.pem"]),
        DEADLINE,
    );
    let cert = work.join("client.pem");
    assert!(
        cert.is_file(),
        "scepclient got no certificate:\n{}\n{}",
        describe(&output),
        server.log_text()
    );
    (server, cert)
}

#[test]
fn an_issuing_ca_signed_by_an_openssl_root_issues_verifiable_certificates() {
    let work = tempfile::tempdir().expect("temp dir");
    let root_dir = work.path();
    make_root(root_dir, "root");
    let dir = work.path().join("scepd");
    let listen = free_loopback_addr();
    let csr = work.path().join("issuing.csr");
    let created = init(
        &dir,
        listen,
        &[
            "--ca-subject",
            "CN=scepd issuing CA,O=scepd tests",
            "--ca-csr-out",
            csr.to_str().expect("utf-8 path"),
        ],
    );
    assert!(created.status.success(), "init:\n{}", describe(&created));
    assert!(dir.join("ca.key").is_file() && !dir.join("ca.pem").exists());
    assert!(
        !dir.join("ra-sign.pem").exists(),
        "no RA certificate before the CA's"
    );
    openssl(
        root_dir,
        &["req", "-in", "issuing.csr", "-noout", "-verify"],
    );

    // serve refuses, and says what to do.
    let refused = run_bounded(
        scepd()
            .arg("serve")
            .arg("--config")
            .arg(dir.join("scepd.toml")),
        DEADLINE,
    );
    assert_eq!(refused.status.code(), Some(64), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("scepd ca install-cert"),
        "{}",
        describe(&refused)
    );

    // A certificate for another key is refused.
    openssl(
        root_dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.csr",
            "-subj",
            "/CN=other",
        ],
    );
    sign_as_ca(root_dir, "root", "other.csr", "other.pem");
    let install = |cert: &str| {
        run_bounded(
            scepd()
                .args(["ca", "install-cert", "--config"])
                .arg(dir.join("scepd.toml"))
                .arg("--cert")
                .arg(root_dir.join(cert))
                .arg("--chain")
                .arg(root_dir.join("root.pem")),
            DEADLINE,
        )
    };
    let wrong = install("other.pem");
    assert!(!wrong.status.success(), "{}", describe(&wrong));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not for this CA's key"));
    assert!(!dir.join("ca.pem").exists());

    // The root signs the CSR; install-cert installs it and issues the RA certificates.
    sign_as_ca(root_dir, "root", "issuing.csr", "issuing.pem");
    let installed = install("issuing.pem");
    assert!(
        installed.status.success(),
        "install-cert:\n{}",
        describe(&installed)
    );
    assert!(dir.join("ca.pem").is_file() && dir.join("ra-encrypt.pem").is_file());
    let again = install("issuing.pem");
    assert!(!again.status.success(), "a second install is refused");

    let (server, cert) = enroll_through_serve(&dir, listen, "device-under-root");
    let root = root_dir.join("root.pem");
    let ca = dir.join("ca.pem");
    assert!(verifies(
        root_dir,
        &[
            "-CAfile",
            root.to_str().expect("utf-8"),
            "-untrusted",
            ca.to_str().expect("utf-8")
        ],
        &cert
    ));
    assert!(
        !verifies(root_dir, &["-CAfile", root.to_str().expect("utf-8")], &cert),
        "without the issuing CA the path is incomplete (the device's certificate is not the root's)"
    );
    // GetCACert serves the chain: the issuing CA and the root.
    let body = run_bounded(
        Command::new("curl")
            .args(["-fsS", "-m", "10", "-o"])
            .arg(root_dir.join("getcacert.der"))
            .arg(format!("http://{listen}/scep?operation=GetCACert")),
        DEADLINE,
    );
    assert!(body.status.success(), "{}", describe(&body));
    let printed = run_bounded(
        Command::new("openssl").current_dir(root_dir).args([
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            "getcacert.der",
            "-print_certs",
            "-noout",
        ]),
        DEADLINE,
    );
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains("CN = root") && printed.contains("CN = scepd issuing CA"),
        "{printed}"
    );
    drop(server);
}

#[test]
fn a_ca_imported_from_pem_with_an_encrypted_key_issues() {
    let work = tempfile::tempdir().expect("temp dir");
    let root_dir = work.path();
    std::fs::write(root_dir.join("pw"), "pem import password\n").expect("pw");
    openssl(
        root_dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-aes256",
            "-pass",
            "file:pw",
            "-out",
            "imported.key",
        ],
    );
    openssl(
        root_dir,
        &[
            "req",
            "-x509",
            "-key",
            "imported.key",
            "-passin",
            "file:pw",
            "-out",
            "imported.pem",
            "-days",
            "3650",
            "-subj",
            "/O=scepd tests/CN=imported PEM CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let dir = work.path().join("scepd");
    let listen = free_loopback_addr();
    let created = init(
        &dir,
        listen,
        &[
            "--ca-import-pem",
            root_dir.join("imported.pem").to_str().expect("utf-8"),
            root_dir.join("imported.key").to_str().expect("utf-8"),
            "--ca-import-password-file",
            root_dir.join("pw").to_str().expect("utf-8"),
        ],
    );
    assert!(created.status.success(), "init:\n{}", describe(&created));
    let (_server, cert) = enroll_through_serve(&dir, listen, "device-pem");
    let imported = root_dir.join("imported.pem");
    assert!(verifies(
        root_dir,
        &["-CAfile", imported.to_str().expect("utf-8")],
        &cert
    ));
}

#[test]
fn a_ca_imported_from_pkcs12_with_its_root_issues() {
    let work = tempfile::tempdir().expect("temp dir");
    let root_dir = work.path();
    make_root(root_dir, "p12root");
    openssl(
        root_dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "int.key",
            "-out",
            "int.csr",
            "-subj",
            "/O=scepd tests/CN=imported P12 CA",
        ],
    );
    sign_as_ca(root_dir, "p12root", "int.csr", "int.pem");
    std::fs::write(root_dir.join("p12pw"), "p12 password\n").expect("pw");
    openssl(
        root_dir,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "int.key",
            "-in",
            "int.pem",
            "-certfile",
            "p12root.pem",
            "-passout",
            "file:p12pw",
            "-out",
            "ca.p12",
        ],
    );
    let dir = work.path().join("scepd");
    let listen = free_loopback_addr();
    let created = init(
        &dir,
        listen,
        &[
            "--ca-import-p12",
            root_dir.join("ca.p12").to_str().expect("utf-8"),
            "--ca-import-password-file",
            root_dir.join("p12pw").to_str().expect("utf-8"),
        ],
    );
    assert!(created.status.success(), "init:\n{}", describe(&created));
    assert!(
        dir.join("ca-chain.pem").is_file(),
        "the root from the PKCS#12 is the chain"
    );
    let (_server, cert) = enroll_through_serve(&dir, listen, "device-p12");
    let root = root_dir.join("p12root.pem");
    let ca = dir.join("ca.pem");
    assert!(verifies(
        root_dir,
        &[
            "-CAfile",
            root.to_str().expect("utf-8"),
            "-untrusted",
            ca.to_str().expect("utf-8")
        ],
        &cert
    ));
    // A wrong password is refused before anything is written.
    let wrong_dir = work.path().join("wrong");
    std::fs::write(root_dir.join("wrongpw"), "nope\n").expect("pw");
    let wrong = init(
        &wrong_dir,
        free_loopback_addr(),
        &[
            "--ca-import-p12",
            root_dir.join("ca.p12").to_str().expect("utf-8"),
            "--ca-import-password-file",
            root_dir.join("wrongpw").to_str().expect("utf-8"),
        ],
    );
    assert!(!wrong.status.success());
    assert!(!wrong_dir.join("scepd.toml").exists());
}
