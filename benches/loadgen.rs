//! Load generator: PKCSReq enrollments over keep-alive HTTP/1.1 connections against a running
//! SCEP server (scepd, or micromdm's scepserver for comparison).
//!
//! ```text
//! cargo build --release
//! cargo bench --bench loadgen -- --self-host --concurrency 4 --requests 2000
//! cargo bench --bench loadgen -- --url http://127.0.0.1:PORT/scep --challenge secret
//! cargo bench --bench loadgen -- --self-host --pkcs11 /usr/lib/softhsm/libsofthsm2.so
//! ```
//!
//! Options: `--url URL` (plain http only), `--challenge S`, `--concurrency N` (4),
//! `--requests N` (2000), `--duration-secs N` (60; every loop is bounded in count and time),
//! `--cipher aes256|aes128|3des|des` (aes256), `--get` (GET with a base64 `message` instead of
//! POST), `--self-host` (the default without `--url`: `scepd init` in a temporary directory on
//! free loopback ports, `scepd serve`, killed at the end; the binary is `target/release/scepd`
//! next to this bench, or `--scepd PATH`), `--server-pid PID[,PID...]` (processes whose CPU
//! time to report, e.g. micromdm's scepserver and its socat bridge), `--pkcs11 MODULE` (with
//! `--self-host`: the CA, RA signing and RA encryption keys in a PKCS#11 token, a SoftHSM2
//! token initialised in the temporary directory with `softhsm2-util` and used through
//! `scepd init --pkcs11-module MODULE --pkcs11-token ... --pkcs11-pin-file ...`).
//!
//! All requests are built before the timed phase (distinct transactionIDs and CSR subjects,
//! one RSA-2048 device key), so the client's crypto is not measured. After the timed phase
//! every HTTP 200 reply is parsed for its pkiStatus, and every 50th is read in full with
//! `read_cert_rep` (signature, nonces, decryption of the issued certificate).
//!
//! Run without `--bench` (as `cargo test --all-targets` runs it) it does a bounded smoke run
//! instead: an in-process scepd on a loopback port, a few enrollments over HTTP, every reply
//! verified, in a few seconds.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use scepd::scep::client::{self, ClientIdentity, PreparedRequest, RequestOptions};
use scepd::scep::csr::{build_csr, CsrSpec};
use scepd::scep::signed::SignedMessage;
use scepd::scep::{ContentCipher, DigestAlg, KeyTransport, MessageType, PkiStatus};
use tokio::net::TcpStream;

/// Every `SAMPLE_EVERY`th successful reply is verified in full.
const SAMPLE_EVERY: usize = 50;
/// Clock ticks per second of /proc/*/stat (USER_HZ, 100 on every mainstream Linux).
const CLOCK_TICKS: f64 = 100.0;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Options {
    url: Option<String>,
    challenge: Option<String>,
    concurrency: usize,
    requests: usize,
    duration: Duration,
    cipher: ContentCipher,
    cipher_name: String,
    get: bool,
    scepd: Option<PathBuf>,
    server_pids: Vec<u32>,
    sample_every: usize,
    pkcs11: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            url: None,
            challenge: None,
            concurrency: 4,
            requests: 2000,
            duration: Duration::from_secs(60),
            cipher: ContentCipher::Aes256Cbc,
            cipher_name: "aes256".into(),
            get: false,
            scepd: None,
            server_pids: Vec::new(),
            sample_every: SAMPLE_EVERY,
            pkcs11: None,
        }
    }
}

const USAGE: &str =
    "usage: cargo bench --bench loadgen -- [--url http://HOST:PORT/PATH | --self-host] \
[--challenge S] [--concurrency N] [--requests N] [--duration-secs N] \
[--cipher aes256|aes128|3des|des] [--get] [--scepd PATH] [--server-pid PID[,PID...]] \
[--pkcs11 MODULE]";

/// `Ok(None)`: smoke mode (no `--bench`, or `--test`).
fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let bench = args.iter().any(|a| a == "--bench");
    let test = args.iter().any(|a| a == "--test");
    if !bench || test {
        // cargo test passes its own filters and flags through; none of them matter here.
        return Ok(None);
    }
    let mut options = Options::default();
    let mut self_host = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, text: String| {
            text.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}: {text:?} is not a positive number"))
        };
        match arg.as_str() {
            "--bench" => {}
            "--url" => options.url = Some(value("--url")?),
            "--challenge" => options.challenge = Some(value("--challenge")?),
            "--concurrency" => options.concurrency = number(arg, value(arg)?)?,
            "--requests" => options.requests = number(arg, value(arg)?)?,
            "--duration-secs" => {
                options.duration = Duration::from_secs(number(arg, value(arg)?)? as u64)
            }
            "--cipher" => {
                let name = value(arg)?;
                options.cipher = match name.as_str() {
                    "aes256" => ContentCipher::Aes256Cbc,
                    "aes128" => ContentCipher::Aes128Cbc,
                    "3des" => ContentCipher::DesEde3Cbc,
                    "des" => ContentCipher::DesCbc,
                    other => return Err(format!("--cipher: unknown {other:?}")),
                };
                options.cipher_name = name;
            }
            "--get" => options.get = true,
            "--self-host" => self_host = true,
            "--scepd" => options.scepd = Some(PathBuf::from(value(arg)?)),
            "--pkcs11" => options.pkcs11 = Some(PathBuf::from(value(arg)?)),
            "--server-pid" => {
                for pid in value(arg)?.split([',', ' ']).filter(|s| !s.is_empty()) {
                    options
                        .server_pids
                        .push(pid.parse().map_err(|_| format!("--server-pid: {pid:?}"))?);
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if self_host && options.url.is_some() {
        return Err("--self-host and --url exclude each other".into());
    }
    if options.pkcs11.is_some() && options.url.is_some() {
        return Err("--pkcs11 goes with --self-host".into());
    }
    Ok(Some(options))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match options {
        None => runtime.block_on(smoke()),
        Some(options) => runtime.block_on(bench(options)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Modes

/// `cargo test` mode: an in-process scepd on 127.0.0.1, 2 connections, 6 enrollments, each
/// reply verified in full; bounded at 4 s of load.
async fn smoke() -> Result<(), BoxError> {
    let started = Instant::now();
    let challenge = "loadgen smoke challenge";
    let dir = tempfile::tempdir()?;
    let created = scepd::cli::init::create(&scepd::cli::init::InitArgs {
        dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        challenge_mode: scepd::cli::init::ChallengeMode::Static,
        static_challenge: Some(challenge.into()),
        ca_key: "rsa2048".into(),
        ca_subject: "CN=loadgen smoke CA".into(),
        tls_name: None,
        tls_listen: "127.0.0.1:0".parse()?,
        legacy_algorithms: false,
        pkcs11: Default::default(),
        admin_listen: "127.0.0.1:0".parse()?,
        ca_source: Default::default(),
    })?;
    let loaded = scepd::cli::serve::load(&created.config).map_err(|e| e.join("; "))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(scepd::http::server::serve(
        listener,
        None,
        loaded.app,
        loaded.config.limits.clone(),
        stop_rx,
    ));
    let options = Options {
        url: Some(format!("http://{addr}/scep")),
        challenge: Some(challenge.into()),
        concurrency: 2,
        requests: 6,
        duration: Duration::from_secs(4),
        sample_every: 1,
        ..Options::default()
    };
    let report = run(&options).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    let report = report?;
    report.print(&options);
    let ok = report.statuses.get(&200).copied().unwrap_or(0) as usize;
    if ok != options.requests
        || report.pki.success != options.requests
        || report.verified_ok != options.requests
        || !report.problems.is_empty()
    {
        return Err(format!(
            "smoke run: expected {} verified SUCCESS replies, got HTTP 200 x{ok}, SUCCESS x{}, \
             verified x{}; {:?}",
            options.requests, report.pki.success, report.verified_ok, report.problems
        )
        .into());
    }
    println!(
        "loadgen smoke run ok ({} enrollments over HTTP in {:.2} s)",
        options.requests,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo bench` mode.
async fn bench(mut options: Options) -> Result<(), BoxError> {
    let _server = match options.url {
        Some(_) => None,
        None => {
            let server = SelfHosted::start(&options)?;
            options.url = Some(server.url.clone());
            options.challenge = Some(server.challenge.clone());
            options.server_pids.push(server.child.id());
            println!(
                "self-hosted scepd {} (pid {}) at {}",
                server.binary.display(),
                server.child.id(),
                server.url
            );
            Some(server)
        }
    };
    let report = run(&options).await?;
    report.print(&options);
    let server_errors: u64 = report
        .statuses
        .iter()
        .filter(|(code, _)| **code >= 500 && **code != 503)
        .map(|(_, n)| *n)
        .sum();
    if server_errors > 0 || !report.problems.is_empty() || report.verified_ok == 0 {
        return Err(format!(
            "{server_errors} 5xx other than 503, {} verified, problems: {:?}",
            report.verified_ok, report.problems
        )
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Self-hosted scepd

/// A `scepd serve` child in a temporary directory; killed on drop.
struct SelfHosted {
    child: Child,
    url: String,
    challenge: String,
    binary: PathBuf,
    _dir: tempfile::TempDir,
}

impl SelfHosted {
    fn start(options: &Options) -> Result<Self, BoxError> {
        let binary = match &options.scepd {
            Some(path) => path.clone(),
            None => default_scepd_binary()?,
        };
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let admin_port = free_port()?;
        let challenge = format!("loadgen-{}", run_id());
        let mut init = Command::new(&binary);
        init.arg("init")
            .arg("--dir")
            .arg(dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .arg("--static-challenge")
            .arg(&challenge)
            .arg("--ca-key")
            .arg("rsa2048");
        if options.cipher == ContentCipher::DesCbc {
            init.arg("--legacy-algorithms");
        }
        let softhsm_conf = match &options.pkcs11 {
            Some(module) => {
                let (conf, pin_file) = softhsm_token(dir.path())?;
                init.env("SOFTHSM2_CONF", &conf)
                    .arg("--pkcs11-module")
                    .arg(module)
                    .args(["--pkcs11-token", SOFTHSM_TOKEN])
                    .arg("--pkcs11-pin-file")
                    .arg(pin_file);
                Some(conf)
            }
            None => None,
        };
        let init = init.stdout(Stdio::null()).output()?;
        if !init.status.success() {
            return Err(format!(
                "scepd init failed: {}",
                String::from_utf8_lossy(&init.stderr)
            )
            .into());
        }
        let log = std::fs::File::create(dir.path().join("serve.log"))?;
        let mut serve = Command::new(&binary);
        if let Some(conf) = &softhsm_conf {
            serve.env("SOFTHSM2_CONF", conf);
        }
        let child = serve
            .arg("serve")
            .arg("--config")
            .arg(dir.path().join("scepd.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}/scep"),
            challenge,
            binary,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("scepd serve did not start listening within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for SelfHosted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SOFTHSM_TOKEN: &str = "scepd-bench";

/// A SoftHSM2 token in `dir` (its own config, token directory and PIN file): returns the
/// config (for SOFTHSM2_CONF) and the PIN file.
fn softhsm_token(dir: &Path) -> Result<(PathBuf, PathBuf), BoxError> {
    let tokens = dir.join("softhsm-tokens");
    std::fs::create_dir(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let pin = format!("bench-{}", run_id());
    let pin_file = dir.join("pkcs11.pin");
    std::fs::write(&pin_file, format!("{pin}\n"))?;
    let output = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            SOFTHSM_TOKEN,
            "--pin",
            &pin,
        ])
        .args(["--so-pin", &format!("so-{pin}")])
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "softhsm2-util --init-token failed (apt-get install softhsm2): {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok((conf, pin_file))
}

/// `target/release/scepd` beside this bench binary (`target/release/deps/loadgen-*`), else
/// under the package directory.
fn default_scepd_binary() -> Result<PathBuf, BoxError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("scepd")));
    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/scepd");
    beside
        .into_iter()
        .chain(Some(fallback))
        .find(|p| p.is_file())
        .ok_or_else(|| "no target/release/scepd: run `cargo build --release` first".into())
}

fn free_port() -> Result<u16, BoxError> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

// ---------------------------------------------------------------------------------------
// Target

struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, BoxError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are supported")?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
            .next()
            .ok_or("the URL's host does not resolve")?;
        Ok(Self {
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// One keep-alive HTTP/1.1 connection.
async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A prepared HTTP request: method, path with query, body.
#[derive(Clone)]
struct Wire {
    post: bool,
    path_and_query: String,
    body: Bytes,
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    wire: &Wire,
) -> Result<(u16, Bytes), BoxError> {
    let mut builder = hyper::Request::builder()
        .uri(wire.path_and_query.as_str())
        .header(hyper::header::HOST, target.host.as_str());
    builder = if wire.post {
        builder
            .method(hyper::Method::POST)
            .header(hyper::header::CONTENT_TYPE, "application/x-pki-message")
    } else {
        builder.method(hyper::Method::GET)
    };
    let request = builder.body(Full::new(wire.body.clone()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

// ---------------------------------------------------------------------------------------
// Preparation

struct Prepared {
    wires: Vec<Wire>,
    requests: Vec<PreparedRequest>,
    signer: ClientIdentity,
    reply_signer: Vec<u8>,
    ca_certs: usize,
}

async fn prepare(options: &Options, target: &Target) -> Result<Prepared, BoxError> {
    let mut sender = connect(target).await?;
    let get_ca_cert = Wire {
        post: false,
        path_and_query: format!("{}?operation=GetCACert", target.path),
        body: Bytes::new(),
    };
    let (status, body) = send(&mut sender, target, &get_ca_cert).await?;
    if status != 200 {
        return Err(format!("GetCACert answered HTTP {status}").into());
    }
    let ca_certs = client::parse_ca_certs(&body)?;
    let (recipient, reply_signer) = client::select_ra_certs(&ca_certs)?;
    let key: PKey<Private> = PKey::from_rsa(Rsa::generate(2048)?)?;
    let signer = ClientIdentity::self_signed(key.clone(), "loadgen device")?;
    let challenge = options
        .challenge
        .clone()
        .ok_or("--challenge is required with --url")?;
    let run = run_id();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(options.requests);
    let chunk = options.requests.div_ceil(threads);
    let built: Vec<Result<Vec<PreparedRequest>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (key, signer, recipient, challenge, run) =
                    (&key, &signer, &recipient, &challenge, &run);
                scope.spawn(move || {
                    let range = t * chunk..((t + 1) * chunk).min(options.requests);
                    range
                        .map(|i| {
                            // Distinct subjects: micromdm's depot refuses a second live
                            // certificate for a CN.
                            let subject = format!("CN=loadgen-{run}-{i}");
                            let csr = build_csr(
                                key,
                                &CsrSpec {
                                    subject: &subject,
                                    challenge: Some(challenge),
                                    ..CsrSpec::default()
                                },
                            )
                            .map_err(|e| e.to_string())?;
                            let request_options = RequestOptions {
                                message_type: MessageType::PkcsReq,
                                transaction_id: format!("loadgen-{run}-{i}"),
                                digest: DigestAlg::Sha256,
                                cipher: options.cipher,
                                key_transport: KeyTransport::RsaPkcs1v15,
                                recipient_by_ski: false,
                            };
                            client::build_request(&csr, recipient, signer, &request_options)
                                .map_err(|e| e.to_string())
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("builder thread panicked".into()))
            })
            .collect()
    });
    let mut requests = Vec::with_capacity(options.requests);
    for chunk in built {
        requests.extend(chunk?);
    }
    let wires = requests
        .iter()
        .map(|request| {
            if options.get {
                let message = base64::engine::general_purpose::STANDARD.encode(&request.der);
                let escaped = percent_encoding::utf8_percent_encode(
                    &message,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                Wire {
                    post: false,
                    path_and_query: format!(
                        "{}?operation=PKIOperation&message={escaped}",
                        target.path
                    ),
                    body: Bytes::new(),
                }
            } else {
                Wire {
                    post: true,
                    path_and_query: format!("{}?operation=PKIOperation", target.path),
                    body: Bytes::from(request.der.clone()),
                }
            }
        })
        .collect();
    Ok(Prepared {
        wires,
        requests,
        signer,
        reply_signer,
        ca_certs: ca_certs.len(),
    })
}

// ---------------------------------------------------------------------------------------
// Timed phase

/// What one worker saw.
#[derive(Default)]
struct WorkerLog {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_error: Option<String>,
    reconnects: u64,
    /// (request index, reply body) of every HTTP 200.
    replies: Vec<(usize, Bytes)>,
}

async fn worker(
    target: Arc<Target>,
    wires: Arc<Vec<Wire>>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) -> WorkerLog {
    let mut log = WorkerLog::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(wire) = wires.get(i) else { break };
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if !matches!(&sender, Some(s) if !s.is_closed()) {
            if sender.is_some() {
                log.reconnects += 1;
            }
            sender = match tokio::time::timeout(deadline - now, connect(&target)).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    log.transport_errors += 1;
                    log.first_error.get_or_insert_with(|| e.to_string());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(_) => break,
            };
        }
        let Some(s) = sender.as_mut() else { continue };
        let started = Instant::now();
        // Each request may overrun the deadline by at most 5 s.
        let budget = (deadline + Duration::from_secs(5)).saturating_duration_since(started);
        match tokio::time::timeout(budget, send(s, &target, wire)).await {
            Ok(Ok((status, body))) => {
                log.latencies.push(started.elapsed());
                *log.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    log.replies.push((i, body));
                }
            }
            Ok(Err(e)) => {
                log.transport_errors += 1;
                log.first_error.get_or_insert_with(|| e.to_string());
                sender = None;
            }
            Err(_) => {
                log.transport_errors += 1;
                log.first_error
                    .get_or_insert_with(|| "request timed out".into());
                break;
            }
        }
    }
    log
}

#[derive(Default, Debug)]
struct PkiCounts {
    success: usize,
    failure: usize,
    /// failInfo code -> count, for the FAILUREs.
    fail_infos: BTreeMap<u32, usize>,
    pending: usize,
    unreadable: usize,
}

struct Report {
    url: String,
    ca_certs: usize,
    prepared_in: Duration,
    elapsed: Duration,
    sent: usize,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_error: Option<String>,
    reconnects: u64,
    latencies: Vec<Duration>,
    pki: PkiCounts,
    verified: usize,
    verified_ok: usize,
    problems: Vec<String>,
    loadgen_cpu: Option<f64>,
    server_cpu: Option<f64>,
    machine_busy: Option<f64>,
    /// CPU seconds used by every process on the machine.
    machine_cpu: Option<f64>,
}

async fn run(options: &Options) -> Result<Report, BoxError> {
    let url = options.url.clone().ok_or("no target URL")?;
    let target = Arc::new(Target::parse(&url)?);
    let preparing = Instant::now();
    let prepared = prepare(options, &target).await?;
    let prepared_in = preparing.elapsed();

    let wires = Arc::new(prepared.wires);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = (
        process_cpu_seconds(&["self".to_owned()]),
        process_cpu_seconds(&pid_names(&options.server_pids)),
        machine_ticks(),
    );
    let started = Instant::now();
    let deadline = started + options.duration;
    let workers: Vec<_> = (0..options.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                Arc::clone(&target),
                Arc::clone(&wires),
                Arc::clone(&next),
                deadline,
            ))
        })
        .collect();
    let mut logs = Vec::with_capacity(workers.len());
    for w in workers {
        logs.push(w.await?);
    }
    let elapsed = started.elapsed();
    let cpu_after = (
        process_cpu_seconds(&["self".to_owned()]),
        process_cpu_seconds(&pid_names(&options.server_pids)),
        machine_ticks(),
    );

    let mut report = Report {
        url,
        ca_certs: prepared.ca_certs,
        prepared_in,
        elapsed,
        sent: 0,
        statuses: BTreeMap::new(),
        transport_errors: 0,
        first_error: None,
        reconnects: 0,
        latencies: Vec::new(),
        pki: PkiCounts::default(),
        verified: 0,
        verified_ok: 0,
        problems: Vec::new(),
        loadgen_cpu: cpu_before.0.zip(cpu_after.0).map(|(a, b)| b - a),
        server_cpu: if options.server_pids.is_empty() {
            None
        } else {
            cpu_before.1.zip(cpu_after.1).map(|(a, b)| b - a)
        },
        machine_cpu: cpu_before
            .2
            .zip(cpu_after.2)
            .map(|((b0, _), (b1, _))| b1.saturating_sub(b0) as f64 / CLOCK_TICKS),
        machine_busy: cpu_before.2.zip(cpu_after.2).map(|((b0, t0), (b1, t1))| {
            if t1 > t0 {
                (b1 - b0) as f64 / (t1 - t0) as f64
            } else {
                0.0
            }
        }),
    };
    let mut replies = Vec::new();
    for log in logs {
        report.latencies.extend(log.latencies);
        for (status, n) in log.statuses {
            *report.statuses.entry(status).or_default() += n;
        }
        report.transport_errors += log.transport_errors;
        report.reconnects += log.reconnects;
        if report.first_error.is_none() {
            report.first_error = log.first_error;
        }
        replies.extend(log.replies);
    }
    report.sent = report.latencies.len() + report.transport_errors as usize;
    replies.sort_by_key(|(i, _)| *i);
    for (n, (i, body)) in replies.iter().enumerate() {
        match pki_status(body) {
            Some((PkiStatus::Failure, fail_info)) => {
                report.pki.failure += 1;
                *report
                    .pki
                    .fail_infos
                    .entry(fail_info.unwrap_or(u32::MAX))
                    .or_default() += 1;
            }
            Some((PkiStatus::Success, _)) => report.pki.success += 1,
            Some((PkiStatus::Pending, _)) => report.pki.pending += 1,
            None => report.pki.unreadable += 1,
        }
        if n % options.sample_every != 0 {
            continue;
        }
        report.verified += 1;
        let Some(request) = prepared.requests.get(*i) else {
            continue;
        };
        match client::read_cert_rep(body, request, &prepared.reply_signer, &prepared.signer) {
            Ok(view) if view.status == PkiStatus::Success && !view.certs.is_empty() => {
                report.verified_ok += 1
            }
            Ok(view) => report.problems.push(format!(
                "request {i}: {:?} {:?} {:?}",
                view.status, view.fail_info, view.fail_info_text
            )),
            Err(e) => report.problems.push(format!("request {i}: {e}")),
        }
    }
    Ok(report)
}

/// pkiStatus and failInfo of a CertRep, without verifying it (the sample is verified in
/// full).
fn pki_status(body: &[u8]) -> Option<(PkiStatus, Option<u32>)> {
    let der = scepd::scep::ber::normalize_to_der(body).ok()?;
    let message = SignedMessage::parse(&der).ok()?;
    let attributes = message.attributes();
    let status = PkiStatus::from_code(attributes.pki_status_code().ok()?)?;
    Some((status, attributes.fail_info_code().ok().flatten()))
}

// ---------------------------------------------------------------------------------------
// CPU accounting (Linux /proc; None elsewhere)

fn pid_names(pids: &[u32]) -> Vec<String> {
    pids.iter().map(u32::to_string).collect()
}

/// utime + stime (+ reaped children) of the processes, in seconds.
fn process_cpu_seconds(pids: &[String]) -> Option<f64> {
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_name = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14-17 of proc(5) (utime, stime, cutime, cstime); field 3 is index 0 here.
        for index in 11..=14 {
            ticks += fields.get(index)?.parse::<u64>().ok()?;
        }
    }
    Some(ticks as f64 / CLOCK_TICKS)
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

// ---------------------------------------------------------------------------------------
// Report

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl Report {
    fn print(&self, options: &Options) {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(code, n)| format!("{code}={n}"))
            .collect();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        if let Some(module) = &options.pkcs11 {
            println!(
                "keys: CA, RA signing and RA encryption in a PKCS#11 token ({})",
                module.display()
            );
        }
        println!(
            "target {} ({}, {}, {} GetCACert certs), concurrency {}, {} requests prepared in {:.1} s",
            self.url,
            if options.get { "GET" } else { "POST" },
            options.cipher_name,
            self.ca_certs,
            options.concurrency,
            options.requests,
            self.prepared_in.as_secs_f64(),
        );
        println!(
            "  sent {} in {:.2} s; HTTP {}; transport errors {}{}; reconnects {}",
            self.sent,
            secs,
            if statuses.is_empty() {
                "-".into()
            } else {
                statuses.join(" ")
            },
            self.transport_errors,
            self.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            self.reconnects,
        );
        println!(
            "  pkiStatus SUCCESS {} FAILURE {}{} PENDING {} unreadable {}; verified in full {}/{}",
            self.pki.success,
            self.pki.failure,
            if self.pki.fail_infos.is_empty() {
                String::new()
            } else {
                let infos: Vec<String> = self
                    .pki
                    .fail_infos
                    .iter()
                    .map(|(code, n)| format!("failInfo {code} x{n}"))
                    .collect();
                format!(" ({})", infos.join(", "))
            },
            self.pki.pending,
            self.pki.unreadable,
            self.verified_ok,
            self.verified
        );
        println!(
            "  throughput {:.1} certificates/s; latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
            self.pki.success as f64 / secs,
            percentile(&sorted, 50.0),
            percentile(&sorted, 90.0),
            percentile(&sorted, 99.0),
            percentile(&sorted, 100.0),
        );
        let fmt_cpu = |cpu: Option<f64>| {
            cpu.map_or("n/a".to_owned(), |c| {
                format!("{c:.2} s ({:.0}% of one core)", 100.0 * c / secs)
            })
        };
        println!(
            "  CPU during the timed phase: loadgen {}, server {}, machine {} busy ({} cores)",
            fmt_cpu(self.loadgen_cpu),
            fmt_cpu(self.server_cpu),
            self.machine_busy
                .map_or("n/a".to_owned(), |b| format!("{:.0}%", b * 100.0)),
            cores,
        );
        if let (Some(all), Some(ours), Some(server)) =
            (self.machine_cpu, self.loadgen_cpu, self.server_cpu)
        {
            // A busy neighbour (a compile, a test run) skews every figure above.
            println!(
                "  CPU of other processes during the timed phase: {:.2} s",
                (all - ours - server).max(0.0)
            );
        }
        for problem in self.problems.iter().take(5) {
            println!("  PROBLEM {problem}");
        }
    }
}
