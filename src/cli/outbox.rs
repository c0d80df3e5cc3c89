//! `scepd outbox list|retry`: the connector events waiting for delivery. Through the admin
//! API while a server runs, directly on the store otherwise (a stopped server's worker
//! picks the retried events up when it starts).

use http::Method;

use super::admin_client::{api_json, rfc3339, Access};
use super::ConfigArg;
use crate::connector::admin::{self, OutboxView, RetryAnswer, RetryBody};
use crate::store::Store;

/// Arguments of `scepd outbox`.
#[derive(Debug, clap::Args)]
pub struct OutboxArgs {
    /// Which action.
    #[command(subcommand)]
    pub action: OutboxAction,
}

/// `scepd outbox` actions.
#[derive(Debug, clap::Subcommand)]
pub enum OutboxAction {
    /// One line per waiting event: id, connector, kind, transactionID, attempts, next try,
    /// last error.
    List(ConfigArg),
    /// Clear the backoff of one event (by id) or of all: the worker tries them at once.
    Retry {
        /// The event id (from `scepd outbox list`).
        id: Option<String>,
        /// Every waiting event.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Runs `scepd outbox ...`.
pub fn run(args: &OutboxArgs) -> u8 {
    let config = match &args.action {
        OutboxAction::List(c) | OutboxAction::Retry { config: c, .. } => c,
    };
    let access = match Access::open(&config.config) {
        Ok(access) => access,
        Err(code) => return code,
    };
    let result = match &args.action {
        OutboxAction::List(_) => list(&access),
        OutboxAction::Retry { id, all, .. } => retry(&access, id.as_deref(), *all),
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
    let views: Vec<OutboxView> = match access {
        Access::Direct(store) => admin::list(store).map_err(|e| e.to_string())?,
        Access::Api(config) => api_json(config, Method::GET, "/v1/outbox", None)?,
    };
    if views.is_empty() {
        println!("no events waiting");
    }
    for v in views {
        let next = if v.next_try_ms == 0 {
            "now".to_owned()
        } else {
            rfc3339(v.next_try_ms / 1000)
        };
        println!(
            "{}  {:<7} {:<7} tx={} template={} serial={} attempts={} next={} error={}",
            v.id,
            v.connector,
            v.kind,
            v.transaction_id,
            v.template,
            v.serial.as_deref().unwrap_or("-"),
            v.attempts,
            next,
            v.last_error.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn retry(access: &Access, id: Option<&str>, all: bool) -> Result<(), String> {
    if id.is_none() && !all {
        return Err("give an event id or --all".into());
    }
    let due = match access {
        Access::Direct(store) => {
            let due = store.outbox_retry(id).map_err(|e| e.to_string())?;
            if due == 0 && id.is_some() {
                return Err("no waiting event with this id".into());
            }
            due
        }
        Access::Api(config) => {
            let body = serde_json::to_vec(&RetryBody {
                id: id.map(str::to_owned),
                all,
            })
            .map_err(|e| e.to_string())?;
            let answer: RetryAnswer =
                api_json(config, Method::POST, "/v1/outbox/retry", Some(body))?;
            answer.due
        }
    };
    println!("{due} event(s) due now");
    Ok(())
}
