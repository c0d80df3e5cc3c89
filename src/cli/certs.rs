//! `scepd certs list|show|revoke`: through the admin API while a server runs (sled lets one
//! process open the store), directly on the store otherwise.

use std::time::SystemTime;

use http::Method;

use super::admin_client::{api_json, rfc3339, Access};
use super::ConfigArg;
use crate::http::admin::{self, CertView, RevokeAnswer, RevokeBody, RevokeResult};
use crate::store::Store;

/// Arguments of `scepd certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Which action.
    #[command(subcommand)]
    pub action: CertsAction,
}

/// `scepd certs` actions.
#[derive(Debug, clap::Subcommand)]
pub enum CertsAction {
    /// One line per certificate: serial, status, not-after, template, subject.
    List(ConfigArg),
    /// Everything about one certificate, as JSON.
    Show {
        /// Serial in hex.
        #[arg(long)]
        serial: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a certificate (recorded with time, reason and who asked).
    Revoke {
        /// Serial in hex.
        #[arg(long)]
        serial: String,
        /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
        /// superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// Who asks (recorded); defaults to the login name.
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Runs `scepd certs ...`.
pub fn run(args: &CertsArgs) -> u8 {
    let config_arg = match &args.action {
        CertsAction::List(c) => c,
        CertsAction::Show { config, .. } | CertsAction::Revoke { config, .. } => config,
    };
    let access = match Access::open(&config_arg.config) {
        Ok(access) => access,
        Err(code) => return code,
    };
    let result = match &args.action {
        CertsAction::List(_) => list(&access),
        CertsAction::Show { serial, .. } => show(&access, serial),
        CertsAction::Revoke {
            serial, reason, by, ..
        } => {
            let by = by
                .clone()
                .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "cli".into()));
            revoke(&access, serial, reason, &by, &config_arg.config)
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn list(access: &Access) -> Result<(), String> {
    let views: Vec<CertView> = match access {
        Access::Direct(store) => {
            let now = SystemTime::now();
            store
                .certificates()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|r| CertView::new(r, now))
                .collect()
        }
        Access::Api(config) => api_json(config, Method::GET, "/v1/certs", None)?,
    };
    for view in views {
        println!(
            "{} {:<8} {} {:<16} {}",
            view.serial,
            view.status,
            rfc3339(view.not_after),
            view.template,
            view.subject
        );
    }
    Ok(())
}

fn show(access: &Access, serial: &str) -> Result<(), String> {
    let bytes = admin::parse_serial(serial).ok_or("the serial must be hex")?;
    let view: CertView = match access {
        Access::Direct(store) => {
            let record = store
                .certificate(&bytes)
                .map_err(|e| e.to_string())?
                .ok_or("no certificate with this serial")?;
            CertView::new(&record, SystemTime::now())
        }
        Access::Api(config) => api_json(
            config,
            Method::GET,
            &format!("/v1/certs/{}", hex::encode_upper(&bytes)),
            None,
        )?,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&view).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn revoke(
    access: &Access,
    serial: &str,
    reason: &str,
    by: &str,
    config: &std::path::Path,
) -> Result<(), String> {
    let bytes = admin::parse_serial(serial).ok_or("the serial must be hex")?;
    let answer: RevokeAnswer = match access {
        Access::Direct(store) => {
            // The connector event commits with the revocation, as the admin API's does.
            let connectors = offline_connectors(config)?;
            match admin::revoke_reporting(
                store,
                connectors.as_ref(),
                &bytes,
                reason,
                by,
                SystemTime::now(),
            ) {
                RevokeResult::Done(mut answer) => {
                    // No server runs: the CA port is not loaded, so ask the config.
                    if answer.outcome == "revoked" && crate::upstream::is_upstream_config(config) {
                        answer.notice = Some(crate::upstream::REVOKE_NOTICE.into());
                    }
                    *answer
                }
                RevokeResult::NotFound => return Err("no certificate with this serial".into()),
                RevokeResult::BadReason(r) => {
                    return Err(format!(
                        "unknown reason {r:?}; use an RFC 5280 name such as keyCompromise"
                    ))
                }
                RevokeResult::Failed(e) => return Err(e),
            }
        }
        Access::Api(config) => {
            let body = serde_json::to_vec(&RevokeBody {
                reason: reason.into(),
                by: by.into(),
            })
            .map_err(|e| e.to_string())?;
            api_json(
                config,
                Method::POST,
                &format!("/v1/certs/{}/revoke", hex::encode_upper(&bytes)),
                Some(body),
            )?
        }
    };
    let cert = &answer.certificate;
    match answer.outcome.as_str() {
        "already_revoked" => println!(
            "{} was already revoked ({} by {}); nothing changed",
            cert.serial,
            cert.revocation_reason.as_deref().unwrap_or("?"),
            cert.revoked_by.as_deref().unwrap_or("?")
        ),
        _ => println!(
            "{} revoked ({})",
            cert.serial,
            cert.revocation_reason.as_deref().unwrap_or(reason)
        ),
    }
    if let Some(notice) = &answer.notice {
        println!("NOTE: {notice}");
    }
    Ok(())
}

/// The connectors of `[connector.*]` for a revocation made on the store while no server runs,
/// so that its event reaches the outbox (the next `serve` delivers it).
fn offline_connectors(
    config_path: &std::path::Path,
) -> Result<Option<crate::connector::Connectors>, String> {
    let config = crate::config::Config::load(config_path).map_err(|e| e.0.join("; "))?;
    let connectors = &config.connectors;
    if connectors.intune.is_none() && connectors.webhook.is_none() {
        return Ok(None);
    }
    crate::connector::Connectors::new(connectors).map(Some)
}
