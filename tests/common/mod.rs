//! Helpers shared by the integration tests that drive real processes over loopback: free
//! ports, bounded waits, child processes that die with the test, and external tools that the
//! test installs itself rather than skipping.
//!
//! Every wait here is bounded; every process started here is ended by its own handle.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago: bind port 0, read the port, drop the listener.
pub fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A loopback address with a port from [`free_loopback_port`].
pub fn free_loopback_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_loopback_port()))
}

/// Runs a command to completion with a deadline; on timeout the child is killed and the test
/// fails with what it printed so far.
pub fn run_bounded(command: &mut Command, deadline: Duration) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    // Drain both pipes on threads so that a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_with_deadline(&mut child, deadline);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "{description} did not finish within {deadline:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits for the child to exit; kills and reaps it at the deadline and returns `None`.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Prints a process's output into a panic message.
pub fn describe(output: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A long-running child process (a server) that is killed when the guard drops, including
/// when the test panics. Its output goes to a log file so that failures can show it.
pub struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(command: &mut Command, log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("create log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Panics (with the log) if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("server exited early with {status}\n{}", self.log_text());
        }
    }

    /// The process id (to send it signals).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `deadline` for the process to exit on its own; `None` if it did not.
    pub fn wait_for_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        wait_with_deadline(&mut self.child, deadline)
    }

    /// The process's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Kill by handle: exactly the process this guard started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of `GET path` over plain HTTP/1.1, or `None` when nothing answers.
pub fn http_get_status(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).ok()?;
    let status_line = String::from_utf8_lossy(head.get(..read)?).into_owned();
    status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

/// Polls until `GET path` answers 200, the server dies, or `deadline` passes (then panics).
pub fn wait_for_http_ok(server: &mut ChildGuard, addr: SocketAddr, path: &str, deadline: Duration) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        server.assert_running();
        if http_get_status(addr, path, Duration::from_secs(1)) == Some(200) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no 200 from http://{addr}{path} within {deadline:?}\n{}",
        server.log_text()
    );
}

/// Polls until something accepts TCP connections at `addr`, or panics at `deadline`.
pub fn wait_for_tcp(server: &mut ChildGuard, addr: SocketAddr, deadline: Duration) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        server.assert_running();
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "nothing listens on {addr} after {deadline:?}\n{}",
        server.log_text()
    );
}

/// The path of `binary` on `PATH`, if any.
pub fn find_on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

/// Makes sure `binary` is installed, installing the Debian package `package` with apt-get
/// when it is not. Interop tests must not pass by skipping: when the tool cannot be had, the
/// test fails and says why.
pub fn ensure_debian_tool(binary: &str, package: &str) -> PathBuf {
    // One installer at a time across the tests of a binary (apt holds a lock anyway).
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _serialised = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = find_on_path(binary) {
        return found;
    }
    assert!(
        running_as_root(),
        "`{binary}` is missing and this test is not root, so it cannot `apt-get install -y {package}`; install it"
    );
    let install = || {
        run_bounded(
            Command::new("apt-get")
                .args(["install", "-y", "-q", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            Duration::from_secs(600),
        )
    };
    let mut output = install();
    if !output.status.success() {
        // A fresh machine has no package lists yet.
        run_bounded(
            Command::new("apt-get").args(["update", "-q"]),
            Duration::from_secs(600),
        );
        output = install();
    }
    find_on_path(binary).unwrap_or_else(|| {
        panic!(
            "`apt-get install -y {package}` did not provide `{binary}`:\n{}",
            describe(&output)
        )
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}
