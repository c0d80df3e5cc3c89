//! `scepd serve` for `[ca] backend = "upstream"`: the same SCEP application, enrollment
//! cycle, store and admin API as with the software CA, with [`UpstreamCa`] as the CA port.
//!
//! What differs, and why:
//! - No CRL and no OCSP: the upstream CA issued the certificates, so its CRL and OCSP are
//!   the ones relying parties check. `/crl/...` and `/ocsp` answer 404, and the SCEP GetCRL
//!   operation is not served either.
//! - No CA rollover and no RA self-renewal: the upstream owns the CA, and scepd's RA
//!   certificates come from the upstream (`scepd init --upstream` enrolls them again).

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::UpstreamCa;
use crate::app::{App, AppLimits};
use crate::config::Config;
use crate::enroll::{Enroller, EnrollerParts};
use crate::http::admin::AdminApi;
use crate::keys::{self, RaIdentity};
use crate::store::{SledStore, Store};

/// How long `serve` waits for the store's lock (a server that is just exiting holds it).
const STORE_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Everything loaded before binding a port.
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The SCEP application.
    pub app: Arc<App>,
    /// The admin API.
    pub admin: Arc<AdminApi>,
    /// The connectors (`[connector.*]`), when any is configured.
    pub connectors: Option<Arc<crate::connector::Connectors>>,
}

/// Loads an upstream-mode configuration: every problem at once.
pub fn load(config_path: &Path) -> Result<Loaded, Vec<String>> {
    let mut config = Config::load(config_path).map_err(|e| e.0)?;
    let upstream = config.upstream.clone().ok_or_else(|| {
        vec![format!(
            "{}: [ca] backend is not \"upstream\"",
            config_path.display()
        )]
    })?;
    let ra = RaIdentity::load(&config).map_err(|e| vec![e.to_string()])?;
    let mut chain =
        keys::load_cert_chain_der(&config.ca.cert).map_err(|e| vec![format!("ca.cert: {e}")])?;
    if let Some(path) = &config.ca.chain {
        chain.extend(keys::load_cert_chain_der(path).map_err(|e| vec![format!("ca.chain: {e}")])?);
    }
    let client = upstream.client().map_err(|e| vec![e])?;
    let ca: Arc<dyn scepd_ca::CaBackend> =
        Arc::new(UpstreamCa::new(client, chain).map_err(|e| vec![e])?);
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
    let enroller = Enroller::new(EnrollerParts {
        ra,
        ca,
        store: Arc::clone(&store),
        templates,
        legacy_everywhere: config.legacy_algorithms,
        max_message_bytes: config.limits.max_body_bytes,
    });
    // Connector events are scepd's in RA mode too (issued, failed, revoked).
    let connectors = if config.connectors.intune.is_none() && config.connectors.webhook.is_none() {
        None
    } else {
        Some(Arc::new(
            crate::connector::Connectors::new(&config.connectors).map_err(|e| vec![e])?,
        ))
    };
    let enroller = match &connectors {
        Some(connectors) => enroller.with_connectors(Arc::clone(connectors)),
        None => enroller,
    };
    let limits = AppLimits {
        max_queued_operations: config.limits.max_queued_operations,
        // Enrollments mostly wait on the upstream here, not on the CPU.
        crypto_threads: 4 * std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };
    let mut app =
        App::new(enroller, &config.default_template, limits).map_err(|e| vec![e.to_string()])?;
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
        .with_ca(Arc::clone(app.enroller().ca()));
    Ok(Loaded {
        config,
        app: Arc::new(app),
        admin: Arc::new(admin),
        connectors,
    })
}

/// Runs `scepd serve` in upstream mode; the exit code.
pub fn run(config_path: &Path) -> u8 {
    let loaded = match load(config_path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            for problem in problems {
                eprintln!("error: {problem}");
            }
            return crate::cli::EXIT_CONFIG;
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

async fn serve(loaded: Loaded) -> Result<(), String> {
    let Loaded {
        config,
        app,
        admin,
        connectors,
    } = loaded;
    if let Some(upstream) = &config.upstream {
        tracing::info!(url = %upstream.url, "CA: upstream SCEP CA (RA mode); no CRL or OCSP served");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = crate::cli::serve::spawn_connector_tasks(&app, connectors, &stop_rx);
    crate::cli::serve::serve_until_signal(&config, app, admin, tasks, stop_tx, stop_rx).await
}
