//! `scepd serve`: loads everything once, binds the listeners, serves until SIGTERM/SIGINT,
//! then drains in-flight requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::EXIT_CONFIG;
use crate::app::{App, AppLimits, RevocationServices};
use crate::config::Config;
use crate::crl::CrlPublisher;
use crate::enroll::{Enroller, EnrollerParts};
use crate::http::admin::AdminApi;
use crate::http::server;
use crate::keys::{self, RaIdentity};
use crate::ocsp::responder::OcspResponder;
use crate::ra_renewal;
use crate::rollover;
use crate::store::{SledStore, Store};

/// How long `serve` waits for the store's lock (a server that is just exiting holds it).
const STORE_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Arguments of `scepd serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Path of scepd.toml. Without it and without ./scepd.toml, a development instance is
    /// set up in ./scepd-data.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Everything `serve` loads before binding a port.
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The SCEP application.
    pub app: Arc<App>,
    /// The admin API.
    pub admin: Arc<AdminApi>,
    /// The CRL publisher (re-signed on a schedule while serving).
    pub crl: Arc<CrlPublisher>,
    /// The software CA, which issues renewed RA certificates.
    pub software_ca: Arc<scepd_ca::SoftwareCa>,
    /// The next CA, when `scepd ca rollover` has prepared one.
    pub next: Option<rollover::NextCa>,
}

/// Runs `scepd serve`.
pub fn run(args: &ServeArgs) -> u8 {
    let config_path = match config_path_or_dev_instance(args) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let loaded = match load(&config_path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            for problem in problems {
                eprintln!("error: {problem}");
            }
            return EXIT_CONFIG;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(loaded)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn config_path_or_dev_instance(args: &ServeArgs) -> Result<PathBuf, String> {
    if let Some(path) = &args.config {
        return Ok(path.clone());
    }
    let default = PathBuf::from("scepd.toml");
    if default.exists() {
        return Ok(default);
    }
    let dir = PathBuf::from("scepd-data");
    let config = dir.join("scepd.toml");
    if !config.exists() {
        let init = super::init::InitArgs {
            dir: dir.clone(),
            listen: "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?,
            static_challenge: None,
            ca_key: "rsa2048".into(),
            ca_subject: "CN=scepd development CA".into(),
            tls_name: None,
            tls_listen: "127.0.0.1:8443".parse().map_err(|e| format!("{e}"))?,
            legacy_algorithms: true,
            admin_listen: "127.0.0.1:8081".parse().map_err(|e| format!("{e}"))?,
        };
        super::init::create(&init)?;
    }
    println!(
        "development instance in {} (not for production)",
        dir.display()
    );
    println!("SCEP URL:    http://127.0.0.1:8080/scep");
    super::init::print_ca_fingerprints(&dir.join("ca.pem"));
    let challenge = std::fs::read_to_string(dir.join("challenge.secret")).unwrap_or_default();
    println!("challenge:   {}", challenge.trim());
    Ok(config)
}

/// Loads configuration, keys, CA and store; every problem is returned at once.
pub fn load(config_path: &Path) -> Result<Loaded, Vec<String>> {
    let mut config = Config::load(config_path).map_err(|e| e.0)?;
    let mut ra = RaIdentity::load(&config).map_err(|e| vec![e.to_string()])?;
    let passphrase =
        keys::read_passphrase(&config.ca.passphrase).map_err(|e| vec![e.to_string()])?;
    let ca = scepd_ca::SoftwareCa::load(
        &config.ca.cert,
        &config.ca.key,
        passphrase.as_deref(),
        config.ca.chain.as_deref(),
    )
    .map_err(|e| vec![format!("CA: {e}")])?;
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open_waiting(&config.store_path, STORE_LOCK_PATIENCE)
            .map_err(|e| vec![e.to_string()])?,
    );
    let token = std::fs::read_to_string(&config.admin.token_file).map_err(|e| {
        vec![format!(
            "admin.token_file {}: {e}",
            config.admin.token_file.display()
        )]
    })?;
    let templates = std::mem::take(&mut config.templates);
    let otp_templates = crate::verifiers::otp::settings_by_template(&templates);
    let software_ca = Arc::new(ca);
    let next =
        rollover::load_next(config_path, passphrase.as_deref()).map_err(|e| vec![e.to_string()])?;
    let ca: Arc<dyn scepd_ca::CaBackend> = match &next {
        Some(next) => Arc::new(rollover::RollingCa::new(
            Arc::clone(&software_ca),
            Arc::clone(&next.ca),
            next.switch_at,
        )),
        None => Arc::clone(&software_ca) as _,
    };
    if let Some(next) = next.as_ref().filter(|n| n.switch_at <= SystemTime::now()) {
        ra = ra.renewed(next.ra.0.clone(), next.ra.1.clone());
    }
    let crl = Arc::new(CrlPublisher::new(
        Arc::clone(&ca),
        Arc::clone(&store),
        config.crl_next_update,
    ));
    crl.regenerate(std::time::SystemTime::now())
        .map_err(|e| vec![format!("CRL: {e}")])?;
    // OCSP stays with the CA the server started with: its issuer hashes and responder ID are
    // fixed at start-up, so it must not follow a rollover's switch (see docs/design.md).
    let mut ocsp = OcspResponder::new(
        Arc::clone(&software_ca) as Arc<dyn scepd_ca::CaBackend>,
        Arc::clone(&store),
        crate::ocsp::responder::DEFAULT_VALIDITY,
    )
    .map_err(|e| vec![format!("OCSP: {e}")])?;
    if let Some(days) = config.ocsp_delegated_days {
        ocsp = ocsp
            .with_delegated_responder(Arc::clone(&software_ca), days)
            .map_err(|e| vec![format!("OCSP: {e}")])?;
    }
    let revocation = RevocationServices {
        ca_name: config.ca_name.clone(),
        crl: Arc::clone(&crl),
        ocsp: Arc::new(ocsp),
    };
    let enroller = Enroller::new(EnrollerParts {
        ra,
        ca,
        store: Arc::clone(&store),
        templates,
        legacy_everywhere: config.legacy_algorithms,
        max_message_bytes: config.limits.max_body_bytes,
    })
    .with_crl_publisher(Arc::clone(&crl));
    let limits = AppLimits {
        max_queued_operations: config.limits.max_queued_operations,
        // Twice the cores: an enrollment also waits on the disk (the store's fsync), and the
        // other core should sign meanwhile. Measured in docs/performance.md.
        crypto_threads: 2 * std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };
    let mut app = App::new(enroller, &config.default_template, limits)
        .map_err(|e| vec![e.to_string()])?
        .with_revocation_services(revocation);
    if let Some(next) = &next {
        let body = rollover::next_ca_body(
            next,
            software_ca.certificate_der(),
            software_ca.private_key(),
            SystemTime::now(),
        )
        .map_err(|e| vec![e.to_string()])?;
        app = app.with_next_ca(body, next.switch_at);
    }
    let on_revoked = Arc::clone(&crl);
    if let Some(page) = &config.ndes_admin {
        let ca = Arc::clone(app.enroller().ca());
        let page =
            crate::verifiers::ndes_admin::build(page, &otp_templates, Arc::clone(&store), ca)
                .map_err(|e| vec![e])?;
        app = app.with_ndes_admin(page);
    }
    let admin = AdminApi::new(store, token.trim().as_bytes().to_vec())
        .with_otp_templates(otp_templates)
        .with_revocation_hook(Arc::new(move || {
            if let Err(e) = on_revoked.regenerate(std::time::SystemTime::now()) {
                tracing::error!(error = %e, "CRL not re-signed after a revocation");
            }
        }));
    Ok(Loaded {
        config,
        app: Arc::new(app),
        admin: Arc::new(admin),
        crl,
        software_ca,
        next,
    })
}

async fn serve(loaded: Loaded) -> Result<(), String> {
    let Loaded {
        config,
        app,
        admin,
        crl,
        software_ca,
        next,
    } = loaded;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(crl_schedule(crl, stop_rx.clone())));
    // While a rollover is prepared, the RA certificates are the rollover's to replace.
    let rollover_prepared = next.is_some();
    if let Some(next) = next.filter(|n| n.switch_at > SystemTime::now()) {
        tasks.push(tokio::spawn(switch_at(
            Arc::clone(&app),
            next,
            stop_rx.clone(),
        )));
    }
    if let Some(ra) = config.ra.clone().filter(|_| !rollover_prepared) {
        let renewal = RaRenewal {
            app: Arc::clone(&app),
            ca: software_ca,
            config: ra,
        };
        tasks.push(tokio::spawn(ra_renewal_schedule(renewal, stop_rx.clone())));
    }
    if let Some(addr) = config.listen {
        let listener = server::bind(addr).await.map_err(|e| e.to_string())?;
        tracing::info!(%addr, "SCEP over HTTP");
        tasks.push(tokio::spawn(server::serve(
            listener,
            None,
            Arc::clone(&app),
            config.limits.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(tls) = &config.tls {
        let acceptor = server::tls_acceptor(&tls.cert, &tls.key).map_err(|e| e.to_string())?;
        let listener = server::bind(tls.listen).await.map_err(|e| e.to_string())?;
        tracing::info!(addr = %tls.listen, "SCEP over HTTPS");
        tasks.push(tokio::spawn(server::serve(
            listener,
            Some(acceptor),
            Arc::clone(&app),
            config.limits.clone(),
            stop_rx.clone(),
        )));
    }
    let admin_listener = server::bind(config.admin.listen)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(addr = %config.admin.listen, "admin API");
    tasks.push(tokio::spawn(server::serve(
        admin_listener,
        None,
        admin,
        config.limits.clone(),
        stop_rx,
    )));
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// Re-signs the CRL every [`CrlPublisher::refresh_interval`] until `stop` turns true.
async fn crl_schedule(crl: Arc<CrlPublisher>, mut stop: watch::Receiver<bool>) {
    let interval = crl.refresh_interval();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let crl = Arc::clone(&crl);
        match tokio::task::spawn_blocking(move || crl.regenerate(std::time::SystemTime::now()))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "scheduled CRL not signed; retrying later"),
            Err(e) => tracing::error!(error = %e, "scheduled CRL task failed"),
        }
    }
}

/// Puts the next RA identity into service at the rollover's switch time (the CA port, a
/// `RollingCa`, switches by itself); the current encryption key stays as a grace decrypter.
async fn switch_at(app: Arc<App>, next: rollover::NextCa, mut stop: watch::Receiver<bool>) {
    loop {
        let now = SystemTime::now();
        let Ok(wait) = next.switch_at.duration_since(now) else {
            break;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.min(std::time::Duration::from_secs(60))) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
    let ra = app
        .enroller()
        .ra()
        .renewed(next.ra.0.clone(), next.ra.1.clone());
    match app.replace_ra(ra) {
        Ok(()) => tracing::info!("switched to the next CA and RA certificates"),
        Err(e) => tracing::error!(error = %e, "next RA identity not in service"),
    }
}

/// What the RA renewal task needs.
struct RaRenewal {
    app: Arc<App>,
    ca: Arc<scepd_ca::SoftwareCa>,
    config: crate::config::RaConfig,
}

/// Checks the RA certificates at start-up and every [`ra_renewal::CHECK_INTERVAL`] until
/// `stop` turns true; renews them when due. A failure keeps the current identity and is
/// retried at the next check.
async fn ra_renewal_schedule(renewal: RaRenewal, mut stop: watch::Receiver<bool>) {
    let renewal = Arc::new(renewal);
    loop {
        let job = Arc::clone(&renewal);
        let outcome = tokio::task::spawn_blocking(move || {
            ra_renewal::renew_if_due(&job.app, &job.ca, &job.config, std::time::SystemTime::now())
        })
        .await;
        match outcome {
            Ok(Ok(true)) => tracing::info!("RA certificates renewed and in service"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "RA renewal failed; retrying later"),
            Err(e) => tracing::error!(error = %e, "RA renewal task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(ra_renewal::CHECK_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
