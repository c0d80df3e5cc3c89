//! `scepd serve`: loads everything once, binds the listeners, serves until SIGTERM/SIGINT,
//! then drains in-flight requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::EXIT_CONFIG;
use crate::app::{App, AppLimits, RevocationServices};
use crate::config::Config;
use crate::crl::{CrlPublisher, CrlSet};
use crate::enroll::{Enroller, EnrollerParts};
use crate::http::admin::AdminApi;
use crate::http::server;
use crate::keys::{self, RaIdentity};
use crate::ocsp::responder::{OcspResponder, OcspResponders, DEFAULT_VALIDITY};
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
    /// The CRL publishers (re-signed on a schedule while serving).
    pub crls: Arc<CrlSet>,
    /// Every CA generation (`[ca]` and those `scepd ca rollover` prepared).
    pub generations: Arc<rollover::Generations>,
    /// The connectors (`[connector.*]`), when any is configured: the outbox worker and
    /// Intune's revocation loop run while serving.
    pub connectors: Option<Arc<crate::connector::Connectors>>,
    /// The CAs of `[cas.<name>]`, for their RA renewal: name, CA, RA files.
    pub extra_cas: Vec<(
        String,
        Arc<scepd_ca::SoftwareCa>,
        Option<crate::config::RaConfig>,
    )>,
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
    if crate::upstream::is_upstream_config(&config_path) {
        return crate::upstream::serve::run(&config_path);
    }
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
            challenge_mode: super::init::ChallengeMode::Static,
            static_challenge: None,
            ca_key: "rsa2048".into(),
            ca_subject: "CN=scepd development CA".into(),
            tls_name: None,
            tls_listen: "127.0.0.1:8443".parse().map_err(|e| format!("{e}"))?,
            legacy_algorithms: true,
            pkcs11: Default::default(),
            admin_listen: "127.0.0.1:8081".parse().map_err(|e| format!("{e}"))?,
            ca_source: Default::default(),
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
    // Keys in a PKCS#11 token ([pkcs11], `key_label`s): one session per crypto thread.
    let token = crate::pkcs11::open(&config, crypto_threads()).map_err(|e| vec![e])?;
    let ra = crate::pkcs11::load_ra(&config, token.as_ref()).map_err(|e| vec![e.to_string()])?;
    let passphrase =
        keys::read_passphrase(&config.ca.passphrase).map_err(|e| vec![e.to_string()])?;
    let ca = crate::pkcs11::load_ca(&config, token.as_ref(), passphrase.as_deref())
        .map_err(|e| vec![e])?;
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
    let (templates, mut extra_templates) = crate::multi_ca::split_templates(templates);
    let extra_cas = crate::multi_ca::load_all(&config.extra_cas, SystemTime::now())?;
    let software_ca = Arc::new(ca);
    let generations = Arc::new(
        rollover::Generations::load(
            config_path,
            &config,
            software_ca,
            &ra,
            passphrase.as_deref(),
        )
        .map_err(|e| vec![e.to_string()])?,
    );
    let now = SystemTime::now();
    let ra = ra_in_charge(&generations, now);
    let ca: Arc<dyn scepd_ca::CaBackend> =
        Arc::new(rollover::RollingCa::new(Arc::clone(&generations)));
    let (crls, ocsp) = revocation_services(&config, &generations, &extra_cas, &store, now)?;
    let revocation = RevocationServices {
        crls: Arc::clone(&crls),
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
    .with_crls(Arc::clone(&crls));
    let connectors = connectors_of(&config)?;
    let enroller = match &connectors {
        Some(connectors) => enroller.with_connectors(Arc::clone(connectors)),
        None => enroller,
    };
    let limits = AppLimits {
        max_queued_operations: config.limits.max_queued_operations,
        // Twice the cores: an enrollment also waits on the disk (the store's fsync), and the
        // other core should sign meanwhile. Measured in docs/performance.md.
        crypto_threads: crypto_threads(),
    };
    let mut app = App::new(enroller, &config.default_template, limits)
        .map_err(|e| vec![e.to_string()])?
        .with_revocation_services(revocation);
    let mut extra_renewal = Vec::new();
    for extra in extra_cas {
        let enroller = Enroller::new(EnrollerParts {
            ra: extra.ra,
            ca: Arc::clone(&extra.ca) as Arc<dyn scepd_ca::CaBackend>,
            store: Arc::clone(&store),
            templates: extra_templates.remove(&extra.name).unwrap_or_default(),
            legacy_everywhere: config.legacy_algorithms,
            max_message_bytes: config.limits.max_body_bytes,
        })
        .with_crls(Arc::clone(&crls));
        app = app
            .with_extra_ca(&extra.name, enroller)
            .map_err(|e| vec![format!("cas.{}: {e}", extra.name)])?;
        extra_renewal.push((extra.name, extra.ca, extra.ra_files));
    }
    if let Some(next) = generations.next_at(now) {
        let current = &generations.active_at(now).ca;
        let body = rollover::next_ca_body(next, current, now).map_err(|e| vec![e.to_string()])?;
        if let Some(switch_at) = next.switch_at {
            app = app.with_next_ca(body, switch_at);
        }
    }
    let on_revoked = Arc::clone(&crls);
    if let Some(page) = &config.ndes_admin {
        let ca = Arc::clone(app.enroller().ca());
        let page =
            crate::verifiers::ndes_admin::build(page, &otp_templates, Arc::clone(&store), ca)
                .map_err(|e| vec![e])?;
        app = app.with_ndes_admin(page);
    }
    let mut admin = AdminApi::new(store, token.trim().as_bytes().to_vec());
    if let Some(connectors) = &connectors {
        admin = admin.with_connectors(Arc::clone(connectors));
    }
    let admin = admin
        .with_otp_templates(otp_templates)
        .with_revocation_hook(Arc::new(move || {
            if let Err(e) = on_revoked.regenerate_all(std::time::SystemTime::now()) {
                tracing::error!(error = %e, "CRL not re-signed after a revocation");
            }
        }));
    Ok(Loaded {
        config,
        app: Arc::new(app),
        admin: Arc::new(admin),
        crls,
        generations,
        connectors,
        extra_cas: extra_renewal,
    })
}

/// The connectors of `[connector.*]`, if any is configured.
fn connectors_of(
    config: &Config,
) -> Result<Option<Arc<crate::connector::Connectors>>, Vec<String>> {
    let connectors = &config.connectors;
    if connectors.intune.is_none() && connectors.webhook.is_none() {
        return Ok(None);
    }
    crate::connector::Connectors::new(connectors)
        .map(|c| Some(Arc::new(c)))
        .map_err(|e| vec![e])
}

/// Twice the cores: an enrollment also waits on the disk (the store's fsync), and the other
/// core should sign meanwhile. Measured in docs/performance.md.
fn crypto_threads() -> usize {
    2 * std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// The RA identity of the generation in charge at `now`, with grace decryption keys: the
/// encryption key its last self-renewal replaced, and after a switch the previous
/// generation's, so that clients holding an older GetCACert still enroll after a restart.
fn ra_in_charge(generations: &rollover::Generations, now: SystemTime) -> RaIdentity {
    let active = generations.active_at(now);
    let renewed_away = active
        .ra_files
        .as_ref()
        .and_then(|files| ra_renewal::previous_pair(files, now));
    let previous_generation = generations
        .previous_at(now)
        .map(|g| g.ra.1.clone())
        .filter(|pair| {
            ra_renewal::expires_within(&pair.cert_der, now, std::time::Duration::ZERO)
                .is_ok_and(|expired| !expired)
        });
    active.ra_identity(renewed_away.into_iter().chain(previous_generation))
}

/// A CA key with its name in URLs.
struct NamedCa {
    name: String,
    ca: Arc<scepd_ca::SoftwareCa>,
}

/// A CRL publisher and an OCSP responder for every CA generation in service (the one in
/// charge first) and every `[cas.<name>]`. With several, each lists and answers only for its own certificates.
fn revocation_services(
    config: &Config,
    generations: &rollover::Generations,
    extra_cas: &[crate::multi_ca::LoadedCa],
    store: &Arc<dyn Store>,
    now: SystemTime,
) -> Result<(Arc<CrlSet>, OcspResponders), Vec<String>> {
    let mut in_service: Vec<&rollover::Generation> = generations.in_service(now).collect();
    let active_name = &generations.active_at(now).name;
    in_service.sort_by_key(|g| g.name != *active_name);
    // Every CA key that signs certificates into the shared store: generations, then `[cas]`.
    let signers: Vec<(&str, &Arc<scepd_ca::SoftwareCa>)> = in_service
        .iter()
        .map(|g| (g.name.as_str(), &g.ca))
        .chain(extra_cas.iter().map(|e| (e.name.as_str(), &e.ca)))
        .collect();
    let several = signers.len() > 1;
    let mut crls = Vec::new();
    let mut responders = Vec::new();
    for (name, software_ca) in signers {
        let generation = NamedCa {
            name: name.to_owned(),
            ca: Arc::clone(software_ca),
        };
        let ca = Arc::clone(&generation.ca) as Arc<dyn scepd_ca::CaBackend>;
        let mut crl = CrlPublisher::new(Arc::clone(&ca), Arc::clone(store), config.crl_next_update);
        let mut ocsp = OcspResponder::new(ca, Arc::clone(store), DEFAULT_VALIDITY)
            .map_err(|e| vec![format!("OCSP ({}): {e}", generation.name)])?;
        if several {
            crl = crl.own_certificates_only();
            ocsp = ocsp.own_certificates_only();
        }
        if let Some(days) = config.ocsp_delegated_days {
            ocsp = ocsp
                .with_delegated_responder(Arc::clone(&generation.ca), days)
                .map_err(|e| vec![format!("OCSP ({}): {e}", generation.name)])?;
        }
        crl.regenerate(now)
            .map_err(|e| vec![format!("CRL ({}): {e}", generation.name)])?;
        crls.push((generation.name.clone(), Arc::new(crl)));
        responders.push(ocsp);
    }
    let mut responders = responders.into_iter();
    let first = responders
        .next()
        .ok_or_else(|| vec!["no CA generation in service".to_owned()])?;
    Ok((
        Arc::new(CrlSet::new(crls)),
        OcspResponders::new(first, responders.collect()),
    ))
}

async fn serve(loaded: Loaded) -> Result<(), String> {
    let Loaded {
        config,
        app,
        admin,
        crls,
        generations,
        connectors,
        extra_cas,
    } = loaded;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(crl_schedule(crls, stop_rx.clone())));
    if let Some(next) = generations.next_at(SystemTime::now()) {
        if let Some(at) = next.switch_at {
            tasks.push(tokio::spawn(switch_at(
                Arc::clone(&app),
                Arc::clone(&generations),
                at,
                stop_rx.clone(),
            )));
        }
    }
    let renewal = RaRenewal {
        app: Arc::clone(&app),
        generations,
        extra_cas,
    };
    tasks.push(tokio::spawn(ra_renewal_schedule(renewal, stop_rx.clone())));
    tasks.extend(spawn_connector_tasks(&app, connectors, &stop_rx));
    serve_until_signal(&config, app, admin, tasks, stop_tx, stop_rx).await
}

/// The outbox worker and Intune's revocation loop, when connectors are configured.
pub(crate) fn spawn_connector_tasks(
    app: &Arc<App>,
    connectors: Option<Arc<crate::connector::Connectors>>,
    stop_rx: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(connectors) = connectors else {
        return Vec::new();
    };
    let store = Arc::clone(app.enroller().store());
    vec![
        tokio::spawn(crate::connector::worker::run(
            store,
            Arc::clone(&connectors),
            stop_rx.clone(),
        )),
        tokio::spawn(crate::connector::worker::intune_revocations(
            Arc::clone(app),
            connectors,
            stop_rx.clone(),
        )),
    ]
}

/// Binds the SCEP (HTTP, HTTPS) and admin listeners, serves until SIGTERM or SIGINT, then
/// stops every task (`tasks` and the listeners) and waits for in-flight requests.
pub(crate) async fn serve_until_signal(
    config: &Config,
    app: Arc<App>,
    admin: Arc<AdminApi>,
    mut tasks: Vec<tokio::task::JoinHandle<()>>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
) -> Result<(), String> {
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

/// Re-signs every CRL every [`CrlPublisher::refresh_interval`] until `stop` turns true.
async fn crl_schedule(crls: Arc<CrlSet>, mut stop: watch::Receiver<bool>) {
    let interval = crls
        .publishers()
        .map(|p| p.refresh_interval())
        .min()
        .unwrap_or(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let crls = Arc::clone(&crls);
        match tokio::task::spawn_blocking(move || crls.regenerate_all(SystemTime::now())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "scheduled CRL not signed; retrying later"),
            Err(e) => tracing::error!(error = %e, "scheduled CRL task failed"),
        }
    }
}

/// Puts the next generation's RA identity into service at its switch time (the CA port, a
/// `RollingCa`, switches by itself); the current encryption key stays as a grace decrypter.
async fn switch_at(
    app: Arc<App>,
    generations: Arc<rollover::Generations>,
    at: SystemTime,
    mut stop: watch::Receiver<bool>,
) {
    while let Ok(wait) = at.duration_since(SystemTime::now()) {
        tokio::select! {
            _ = tokio::time::sleep(wait.min(std::time::Duration::from_secs(60))) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
    let next = generations.active_at(at);
    let current = app.enroller().ra();
    let ra = current.renewed(next.ra.0.clone(), next.ra.1.clone());
    match app.replace_ra(ra) {
        Ok(()) => {
            tracing::info!(generation = %next.name, "switched to the next CA and RA certificates")
        }
        Err(e) => tracing::error!(error = %e, "next RA identity not in service"),
    }
}

/// What the RA renewal task needs: the RA certificates it renews are those of the CA
/// generation in charge at each check, issued by that generation's CA.
struct RaRenewal {
    app: Arc<App>,
    generations: Arc<rollover::Generations>,
    extra_cas: Vec<(
        String,
        Arc<scepd_ca::SoftwareCa>,
        Option<crate::config::RaConfig>,
    )>,
}

impl RaRenewal {
    /// Every CA's RA certificates; a failure of one does not stop the others.
    fn renew_if_due(&self, now: SystemTime) -> Result<bool, ra_renewal::RenewalError> {
        let mut renewed = false;
        let mut first_error = None;
        for (name, ca, files) in &self.extra_cas {
            let Some(files) = files else { continue };
            match ra_renewal::renew_extra_if_due(&self.app, name, ca, files, now) {
                Ok(done) => renewed |= done,
                Err(e) => {
                    tracing::error!(ca = %name, error = %e, "RA renewal failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        renewed |= ra_renewal::renew_in_charge_if_due(&self.app, &self.generations, now)?;
        first_error.map_or(Ok(renewed), Err)
    }
}

/// Checks the RA certificates at start-up and every [`ra_renewal::CHECK_INTERVAL`] until
/// `stop` turns true; renews them when due. A failure keeps the current identity and is
/// retried at the next check.
async fn ra_renewal_schedule(renewal: RaRenewal, mut stop: watch::Receiver<bool>) {
    let renewal = Arc::new(renewal);
    loop {
        let job = Arc::clone(&renewal);
        let outcome =
            tokio::task::spawn_blocking(move || job.renew_if_due(SystemTime::now())).await;
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
