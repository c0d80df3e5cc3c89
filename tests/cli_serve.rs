//! The `scepd` binary as an admin runs it: init, check-config, serve with its limits and
//! timeouts, the CLI through the admin API while the server holds the store, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{describe, free_loopback_addr, run_bounded, wait_for_http_ok, ChildGuard};

const CHALLENGE: &str = "cli-test-challenge";
const DEADLINE: Duration = Duration::from_secs(60);

fn scepd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scepd"))
}

fn init(dir: &Path, listen: SocketAddr) -> PathBuf {
    let output = run_bounded(
        scepd().args(["init", "--dir"]).arg(dir).args([
            "--listen",
            &listen.to_string(),
            "--static-challenge",
            CHALLENGE,
            // Servers of tests running in parallel must not collide on the admin port.
            "--admin-listen",
            &free_loopback_addr().to_string(),
        ]),
        DEADLINE,
    );
    assert!(output.status.success(), "{}", describe(&output));
    dir.join("scepd.toml")
}

/// Rewrites `key = ...` lines of scepd.toml (first occurrence after `[section]`).
fn set(config: &Path, section: &str, key: &str, value: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let start = text
        .find(&format!("[{section}]"))
        .unwrap_or_else(|| panic!("no [{section}]"));
    let rest = &text[start..];
    let new = match rest.find(&format!("\n{key} = ")) {
        Some(at) => {
            let line_start = start + at + 1;
            let line_end = text[line_start..]
                .find('\n')
                .map_or(text.len(), |e| line_start + e);
            format!(
                "{}{key} = {value}{}",
                &text[..line_start],
                &text[line_end..]
            )
        }
        None => {
            let header_end = start + rest.find('\n').unwrap() + 1;
            format!(
                "{}{key} = {value}\n{}",
                &text[..header_end],
                &text[header_end..]
            )
        }
    };
    std::fs::write(config, new).unwrap();
}

struct Server {
    process: ChildGuard,
    addr: SocketAddr,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(tune: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_loopback_addr();
        let config = init(dir.path(), addr);
        tune(&config);
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

    fn cli(&self, args: &[&str]) -> std::process::Output {
        run_bounded(
            scepd().args(args).arg("--config").arg(&self.config),
            DEADLINE,
        )
    }
}

/// Enrolls once with micromdm's scepclient (a real client) so there is a certificate.
fn enroll(server: &Server) -> String {
    let client_dir = server.dir.path().join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    let url = format!("http://{}/scep", server.addr);
    let scepclient = common::ensure_debian_tool("scepclient", "scep");
    // scepclient 2.1.0 encrypts with single DES: this server accepts it on its path only.
    let output = run_bounded(
        Command::new(scepclient).current_dir(&client_dir).args([
            "-private-key",
            "key.pem",
            "-server-url",
            &url,
            "-challenge",
            CHALLENGE,
            "-cn",
            "cli-device",
        ]),
        DEADLINE,
    );
    assert!(
        output.status.success(),
        "{}\n{}",
        describe(&output),
        server.process.log_text()
    );
    let list = server.cli(&["certs", "list"]);
    assert!(list.status.success(), "{}", describe(&list));
    let text = String::from_utf8(list.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("CN=cli-device"))
        .unwrap_or_else(|| panic!("not listed: {text}"));
    line.split_whitespace().next().unwrap().to_owned()
}

fn legacy(config: &Path) {
    set(config, "server", "legacy_algorithms", "true");
}

#[test]
fn init_refuses_to_overwrite_an_existing_setup() {
    let dir = tempfile::tempdir().unwrap();
    let config = init(dir.path(), free_loopback_addr());
    let before = std::fs::read(dir.path().join("ca.key")).unwrap();
    let again = run_bounded(scepd().args(["init", "--dir"]).arg(dir.path()), DEADLINE);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"),
        "{}",
        describe(&again)
    );
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);
    let check = run_bounded(
        scepd().arg("check-config").arg("--config").arg(&config),
        DEADLINE,
    );
    assert!(check.status.success(), "{}", describe(&check));
}

#[test]
fn a_bad_configuration_lists_every_problem_and_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let config = init(dir.path(), addr);
    set(&config, "server", "max_connections", "0");
    std::fs::write(
        dir.path().join("templates/broken.toml"),
        "[challenge]\ntype = \"static\"\nsecret = \"x\"\n[issuance]\nkey_usage = [\"flying\"]\nvalidty_days = 3\n",
    )
    .unwrap();
    let check = run_bounded(
        scepd().arg("check-config").arg("--config").arg(&config),
        DEADLINE,
    );
    assert_eq!(check.status.code(), Some(64), "{}", describe(&check));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("max_connections"), "{stderr}");
    assert!(stderr.contains("broken.toml"), "{stderr}");

    let serve = run_bounded(scepd().arg("serve").arg("--config").arg(&config), DEADLINE);
    assert_eq!(serve.status.code(), Some(64), "{}", describe(&serve));
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing may listen after a config error"
    );
}

#[test]
fn the_cli_goes_through_the_admin_api_while_the_server_runs_and_sigterm_drains() {
    let mut server = Server::start(legacy);
    let serial = enroll(&server);
    assert!(
        serial
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
        "uppercase hex: {serial}"
    );
    assert!(serial.len() >= 32, "at least 16 bytes: {serial}");

    let show = server.cli(&["certs", "show", "--serial", &serial]);
    assert!(show.status.success(), "{}", describe(&show));
    assert!(String::from_utf8_lossy(&show.stdout).contains("\"status\": \"valid\""));

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
    let again = server.cli(&[
        "certs",
        "revoke",
        "--serial",
        &serial,
        "--reason",
        "keyCompromise",
    ]);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already revoked"),
        "{}",
        describe(&again)
    );
    let bad_reason = server.cli(&[
        "certs", "revoke", "--serial", &serial, "--reason", "boredom",
    ]);
    assert!(!bad_reason.status.success());

    // SIGTERM: the server drains and exits cleanly.
    let pid = server.process.id().to_string();
    let kill = run_bounded(Command::new("kill").args(["-TERM", &pid]), DEADLINE);
    assert!(kill.status.success());
    let status = server
        .process
        .wait_for_exit(Duration::from_secs(40))
        .expect("exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        server.process.log_text()
    );

    // With the store free again the CLI opens it directly and sees the revocation.
    let show = server.cli(&["certs", "show", "--serial", &serial]);
    assert!(show.status.success(), "{}", describe(&show));
    let text = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(
        text.contains("\"status\": \"revoked\"")
            && text.contains("keyCompromise")
            && text.contains("tester"),
        "{text}"
    );

    // Each request was logged; the challenge and keys never were.
    let log = server.process.log_text();
    assert!(
        log.contains("PKIOperation") && log.contains("outcome=\"success\""),
        "{log}"
    );
    assert!(!log.contains(CHALLENGE), "the challenge reached the log");
    assert!(!log.contains("PRIVATE KEY"), "key material reached the log");
}

#[test]
fn idle_and_slow_clients_are_cut_off_and_the_server_keeps_serving() {
    let server = Server::start(|config| {
        set(config, "server", "header_read_timeout_secs", "1");
        set(config, "server", "request_timeout_secs", "2");
        set(config, "server", "max_connections", "2");
    });
    // An idle connection is closed once the header timeout passes (bounded wait).
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let read = idle.read(&mut buf);
    // Ok(_) means the server closed (or answered); an Err is our 20 s read timeout.
    assert!(
        read.is_ok(),
        "idle connection still open after {:?}: {read:?}",
        started.elapsed()
    );

    // A body that never completes gets an answer, not a hung connection.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789").unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A body over max_body_bytes (2 MiB by default) is refused up front with 413.
    let mut large = TcpStream::connect(server.addr).unwrap();
    large
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    large
        .write_all(b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: t\r\nContent-Length: 3000000\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    large.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    // With the connection limit reached by idle clients, a new client is still served once
    // they are cut off: no client can hold the server.
    let _hold: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    assert_eq!(
        common::http_get_status(server.addr, "/healthz", Duration::from_secs(20)),
        Some(200)
    );
}
