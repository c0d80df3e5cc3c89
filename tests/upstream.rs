//! RA mode against a real upstream SCEP CA (issue 7 item 2): Debian's micromdm `scepserver`
//! 2.1.0 (package `scep`) is the upstream, started by `tests/tools/start-micromdm.sh` in a
//! private network namespace bridged to 127.0.0.1 (2.1.0 listens on every interface), and
//! stopped on drop.
//!
//! The micromdm steps are one test, run in order, because micromdm fails enrollments under
//! concurrency (a race on its serial file):
//! 1. `scepd init --upstream` enrolls scepd's RA signing and encryption certificates at the
//!    upstream (its replies are single-DES: the client reads them) and writes a config whose
//!    `[ca]` is the upstream.
//! 2. micromdm's `scepclient` enrolls against `scepd serve` and gets a certificate that
//!    `openssl verify` accepts against the upstream's CA certificate, recorded in scepd's store.
//! 3. A wrong challenge and a CSR the template refuses (RSA 1024) get FAILURE from scepd and
//!    never reach the upstream: its depot's index does not grow, nor its PKIOperation count.
//! 4. scepd serves no CRL and no OCSP for upstream-issued certificates (404).
//! 5. `scepd certs revoke` records the revocation and says the upstream must revoke too.
//! 6. The webhook connector reports the issue, the refusals and the revocation, as with the
//!    software CA.
//!
//! A second test has another scepd, with manual approval, as the upstream, for CertPoll while
//! the upstream answers PENDING (micromdm never does).

mod common;
mod intune_standin;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    describe, ensure_debian_tool, free_loopback_addr, free_loopback_port, http_get_status,
    run_bounded, wait_for_http_ok, ChildGuard,
};

const DEVICE_CHALLENGE: &str = "device-facing-secret";
const UPSTREAM_CHALLENGE: &str = "upstream-secret-42";
const DEADLINE: Duration = Duration::from_secs(90);

/// The micromdm scepserver of one test: stopped (exactly its recorded PIDs) on drop.
struct Upstream {
    dir: PathBuf,
    port: u16,
}

/// A copy of the team's `shared/tools/{start,stop}-micromdm.sh`, kept in the repository so
/// that a clean checkout (CI) has it.
fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools")
}

impl Upstream {
    fn start(dir: &Path) -> Self {
        for (binary, package) in [
            ("scepserver", "scep"),
            ("socat", "socat"),
            ("curl", "curl"),
            ("ip", "iproute2"),
            ("unshare", "util-linux"),
        ] {
            ensure_debian_tool(binary, package);
        }
        let port = free_loopback_port();
        let output = run_bounded(
            Command::new(tools_dir().join("start-micromdm.sh"))
                .arg(port.to_string())
                .arg(dir)
                .env("CHALLENGE", UPSTREAM_CHALLENGE),
            DEADLINE,
        );
        let upstream = Self {
            dir: dir.to_path_buf(),
            port,
        };
        assert!(
            output.status.success(),
            "start-micromdm.sh failed:\n{}",
            describe(&output)
        );
        upstream
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/scep", self.port)
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Certificates the upstream issued (one line each in its depot's index).
    fn issued_count(&self) -> usize {
        std::fs::read_to_string(self.dir.join("depot/index.txt"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// PKIOperations the upstream received (its log has one line per operation).
    fn pki_operations(&self) -> usize {
        std::fs::read_to_string(self.dir.join("scepserver.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("op=PKIOperation"))
            .count()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if self.dir.join("pids").is_file() {
            let _ = run_bounded(
                Command::new(tools_dir().join("stop-micromdm.sh")).arg(&self.dir),
                Duration::from_secs(20),
            );
        }
    }
}

fn scepd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scepd"))
}

/// scepclient in an empty working directory; the certificate path if it got one.
fn scepclient(url: &str, challenge: &str, cn: &str, key_size: u32, work: &Path) -> Option<PathBuf> {
    std::fs::create_dir_all(work).expect("client dir");
    let output = run_bounded(
        Command::new("scepclient")
            .current_dir(work)
            .args(["-server-url", url, "-challenge", challenge, "-cn", cn])
            .args(["-keySize", &key_size.to_string()])
            .args(["-private-key", "key.pem", "-certificate", "client.pem"]),
        DEADLINE,
    );
    let cert = work.join("client.pem");
    if cert.is_file() {
        Some(cert)
    } else {
        eprintln!(
            "scepclient ({cn}) got no certificate:\n{}",
            describe(&output)
        );
        None
    }
}

fn openssl_verify(ca: &Path, cert: &Path) -> bool {
    let output = run_bounded(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(ca)
            .arg(cert),
        Duration::from_secs(20),
    );
    output.status.success()
}

fn subject_and_issuer(cert: &Path) -> String {
    let output = run_bounded(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-issuer", "-serial", "-in"])
            .arg(cert),
        Duration::from_secs(20),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn scepd_in_front_of_a_micromdm_upstream_ca() {
    ensure_debian_tool("scepclient", "scep");
    let work = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start(&work.path().join("upstream"));

    // 1. init enrolls the RA certificates at the upstream.
    let challenge_file = work.path().join("upstream-challenge");
    std::fs::write(&challenge_file, format!("{UPSTREAM_CHALLENGE}\n")).expect("write");
    let dir = work.path().join("scepd");
    let listen: SocketAddr = free_loopback_addr();
    let init = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(&dir)
            .args(["--listen", &listen.to_string()])
            .args(["--admin-listen", &free_loopback_addr().to_string()])
            .args([
                "--static-challenge",
                DEVICE_CHALLENGE,
                "--legacy-algorithms",
            ])
            .args(["--upstream", &upstream.url(), "--upstream-challenge-file"])
            .arg(&challenge_file),
        DEADLINE,
    );
    assert!(
        init.status.success(),
        "init --upstream:\n{}",
        describe(&init)
    );
    assert_eq!(
        upstream.issued_count(),
        2,
        "the RA signing and encryption certificates"
    );
    for ra in ["ra-sign.pem", "ra-encrypt.pem"] {
        assert!(
            openssl_verify(&upstream.ca_pem(), &dir.join(ra)),
            "{ra} is issued by the upstream CA"
        );
    }
    let config_text = std::fs::read_to_string(dir.join("scepd.toml")).expect("config");
    assert!(
        config_text.contains("backend = \"upstream\""),
        "{config_text}"
    );
    assert!(!dir.join("ca.key").exists(), "no CA key in RA mode");
    assert_eq!(
        std::fs::read(dir.join("upstream-ca.pem")).expect("upstream CA"),
        std::fs::read(upstream.ca_pem()).expect("micromdm CA"),
        "the CA certificate comes from the upstream's GetCACert"
    );

    // 2. A device enrolls through scepd and gets the upstream's certificate.
    let config = dir.join("scepd.toml");
    let receiver = intune_standin::WebhookReceiver::start();
    std::fs::write(dir.join("webhook.key"), "webhook-key\n").expect("write");
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml.push_str(&format!(
        "\n[connector.webhook]\nurl = \"{}\"\nsecret_file = \"webhook.key\"\n\n[outbox]\ninitial_backoff_ms = 100\nmax_backoff_ms = 400\npoll_interval_ms = 100\n",
        receiver.server.url("/hook")
    ));
    std::fs::write(&config, toml).expect("config");
    let template = dir.join("templates/default.toml");
    let text = std::fs::read_to_string(&template).expect("template");
    std::fs::write(&template, format!("connector = \"webhook\"\n{text}")).expect("template");
    let mut server = ChildGuard::spawn(
        scepd().arg("serve").arg("--config").arg(&config),
        &work.path().join("serve.log"),
    );
    wait_for_http_ok(&mut server, listen, "/healthz", Duration::from_secs(20));
    let url = format!("http://{listen}/scep");
    let before = upstream.issued_count();
    let cert = scepclient(
        &url,
        DEVICE_CHALLENGE,
        "device-1",
        2048,
        &work.path().join("dev1"),
    )
    .unwrap_or_else(|| panic!("device-1 enrolls\n{}", server.log_text()));
    assert!(
        openssl_verify(&upstream.ca_pem(), &cert),
        "the device's certificate verifies against the upstream CA: {}",
        subject_and_issuer(&cert)
    );
    assert!(subject_and_issuer(&cert).contains("micromdm-peer-ca"));
    assert_eq!(upstream.issued_count(), before + 1);

    // 3. Refused by scepd: never reaches the upstream.
    let (issued, operations) = (upstream.issued_count(), upstream.pki_operations());
    assert!(
        scepclient(
            &url,
            "wrong-challenge",
            "device-2",
            2048,
            &work.path().join("dev2")
        )
        .is_none(),
        "a wrong challenge is refused"
    );
    assert!(
        scepclient(
            &url,
            DEVICE_CHALLENGE,
            "device-3",
            1024,
            &work.path().join("dev3")
        )
        .is_none(),
        "an RSA-1024 key is refused by the template (min_rsa_bits = 2048)"
    );
    // The upstream's own challenge is not a device challenge at scepd either.
    assert!(
        scepclient(
            &url,
            UPSTREAM_CHALLENGE,
            "device-4",
            2048,
            &work.path().join("dev4")
        )
        .is_none(),
        "the upstream's challenge does not open scepd"
    );
    assert_eq!(upstream.issued_count(), issued, "nothing issued upstream");
    assert_eq!(
        upstream.pki_operations(),
        operations,
        "no request reached the upstream"
    );
    let log = server.log_text();
    assert!(log.contains("wrong_challenge"), "{log}");
    assert!(
        !log.contains(UPSTREAM_CHALLENGE) && !log.contains(DEVICE_CHALLENGE),
        "challenges never reach the log"
    );

    // 4. CRL and OCSP are the upstream's.
    assert_eq!(
        http_get_status(listen, "/crl/ca.crl", Duration::from_secs(5)),
        Some(404)
    );
    assert_eq!(
        http_get_status(listen, "/ocsp", Duration::from_secs(5)),
        Some(404)
    );

    // 5. Revocation: recorded, with the notice, through the admin API of the running server.
    let serial = subject_and_issuer(&cert)
        .lines()
        .find_map(|l| l.strip_prefix("serial=").map(str::to_owned))
        .expect("serial");
    let revoke = run_bounded(
        scepd()
            .args([
                "certs",
                "revoke",
                "--serial",
                &serial,
                "--reason",
                "keyCompromise",
            ])
            .arg("--config")
            .arg(&config),
        Duration::from_secs(30),
    );
    let said = String::from_utf8_lossy(&revoke.stdout).into_owned();
    assert!(revoke.status.success(), "revoke:\n{}", describe(&revoke));
    assert!(said.contains("revoked"), "{said}");
    assert!(
        said.contains("revoke it at the upstream CA too"),
        "the CLI says the upstream must revoke: {said}"
    );
    server.assert_running();

    // 6. Connector events: scepd's, in RA mode too.
    let kinds = || -> Vec<String> {
        receiver
            .seen()
            .iter()
            .filter_map(|r| r.json()["kind"].as_str().map(str::to_owned))
            .collect()
    };
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let seen = kinds();
        if seen.iter().any(|k| k == "revoked")
            && seen.iter().filter(|k| *k == "failed").count() >= 3
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = kinds();
    assert!(seen.iter().any(|k| k == "issued"), "{seen:?}");
    assert!(
        seen.iter().filter(|k| *k == "failed").count() >= 3,
        "{seen:?}"
    );
    assert!(seen.iter().any(|k| k == "revoked"), "{seen:?}");
}

/// A `scepd serve` of its own in `dir`; killed on drop.
fn serve(dir: &Path, listen: SocketAddr, log: &str) -> ChildGuard {
    let mut server = ChildGuard::spawn(
        scepd()
            .arg("serve")
            .arg("--config")
            .arg(dir.join("scepd.toml")),
        &dir.join(log),
    );
    wait_for_http_ok(&mut server, listen, "/healthz", Duration::from_secs(20));
    server
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{from:?} in {}", path.display());
    std::fs::write(path, text.replace(from, to)).expect("write");
}

/// CertPoll while the upstream says PENDING (micromdm never does, so another scepd, whose
/// template waits for manual approval, is the upstream here): the device's request is held
/// while scepd polls, and gets its certificate once the upstream's operator approves; a
/// request nobody approves ends in FAILURE when `max_polls` runs out.
///
/// The device uses the upstream's own challenge: a scepd upstream checks the CSR's
/// self-signature, so only a CSR scepd forwards byte for byte passes it (docs/design.md
/// "Upstream CA": the challenge is replaced otherwise).
#[test]
fn pending_at_the_upstream_is_polled_until_approved() {
    ensure_debian_tool("scepclient", "scep");
    let work = tempfile::tempdir().expect("temp dir");
    let (upstream_dir, ra_dir) = (work.path().join("upstream"), work.path().join("ra"));
    let (upstream_listen, ra_listen) = (free_loopback_addr(), free_loopback_addr());
    let created = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(&upstream_dir)
            .args(["--listen", &upstream_listen.to_string()])
            .args(["--admin-listen", &free_loopback_addr().to_string()])
            .args(["--static-challenge", UPSTREAM_CHALLENGE]),
        DEADLINE,
    );
    assert!(created.status.success(), "{}", describe(&created));
    let upstream = serve(&upstream_dir, upstream_listen, "upstream-1.log");
    let challenge_file = work.path().join("upstream-challenge");
    std::fs::write(&challenge_file, UPSTREAM_CHALLENGE).expect("write");
    let created = run_bounded(
        scepd()
            .args(["init", "--dir"])
            .arg(&ra_dir)
            .args(["--listen", &ra_listen.to_string()])
            .args(["--admin-listen", &free_loopback_addr().to_string()])
            .args([
                "--static-challenge",
                UPSTREAM_CHALLENGE,
                "--legacy-algorithms",
            ])
            .args(["--upstream", &format!("http://{upstream_listen}/scep")])
            .arg("--upstream-challenge-file")
            .arg(&challenge_file),
        DEADLINE,
    );
    assert!(created.status.success(), "{}", describe(&created));
    // From now on the upstream waits for its operator.
    drop(upstream);
    replace_in(
        &upstream_dir.join("templates/default.toml"),
        "include_chain = false\n",
        "include_chain = false\nmanual_approval = true\n",
    );
    let _upstream = serve(&upstream_dir, upstream_listen, "upstream-2.log");
    let ra_config = ra_dir.join("scepd.toml");
    replace_in(
        &ra_config,
        "poll_interval_seconds = 5",
        "poll_interval_seconds = 1",
    );
    replace_in(&ra_config, "max_polls = 10", "max_polls = 5");
    let ra = serve(&ra_dir, ra_listen, "ra.log");
    let url = format!("http://{ra_listen}/scep");

    // Approved while scepd polls: the device gets the upstream's certificate.
    let device_dir = work.path().join("device-1");
    let client = {
        let url = url.clone();
        let device_dir = device_dir.clone();
        std::thread::spawn(move || {
            scepclient(&url, UPSTREAM_CHALLENGE, "device-1", 2048, &device_dir)
        })
    };
    let upstream_config = upstream_dir.join("scepd.toml");
    let mut approved = false;
    let start = std::time::Instant::now();
    while !approved && start.elapsed() < Duration::from_secs(20) {
        let listed = run_bounded(
            scepd()
                .args(["requests", "list", "--config"])
                .arg(&upstream_config),
            DEADLINE,
        );
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        if let Some(txid) = listed
            .lines()
            .find(|l| l.contains("waiting") && l.contains("device-1"))
            .and_then(|l| l.split_whitespace().next())
        {
            let decided = run_bounded(
                scepd()
                    .args(["requests", "approve", txid, "--config"])
                    .arg(&upstream_config),
                DEADLINE,
            );
            assert!(decided.status.success(), "{}", describe(&decided));
            approved = true;
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(
        approved,
        "the upstream never held device-1's request\n{}",
        ra.log_text()
    );
    let cert = client
        .join()
        .expect("client thread")
        .unwrap_or_else(|| panic!("device-1 gets its certificate\n{}", ra.log_text()));
    assert!(openssl_verify(&upstream_dir.join("ca.pem"), &cert));

    // Nobody approves: FAILURE once max_polls (5 x 1 s) is spent.
    let started = std::time::Instant::now();
    assert!(
        scepclient(
            &url,
            UPSTREAM_CHALLENGE,
            "device-2",
            2048,
            &work.path().join("device-2")
        )
        .is_none(),
        "an unapproved request fails"
    );
    assert!(started.elapsed() >= Duration::from_secs(5), "it was polled");
    assert!(ra.log_text().contains("still PENDING"), "{}", ra.log_text());
}
