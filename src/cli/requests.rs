//! `scepd requests list|approve|reject TXID`: the manual-approval queue, through the admin
//! API while a server runs (sled lets one process open the store), directly on the store
//! otherwise (as `scepd certs`).

use std::time::SystemTime;

use http::Method;

use super::admin_client::{api_json, rfc3339, Access};
use super::ConfigArg;
use crate::enroll::queue::{self, DecideAnswer, DecideBody, DecideResult, RequestView};
use crate::store::Verdict;

/// Arguments of `scepd requests`.
#[derive(Debug, clap::Args)]
pub struct RequestsArgs {
    /// Which action.
    #[command(subcommand)]
    pub action: RequestsAction,
}

/// `scepd requests` actions.
#[derive(Debug, clap::Subcommand)]
pub enum RequestsAction {
    /// One line per request: transactionID, state, expiry, template, subject.
    List(ConfigArg),
    /// Approve a waiting request: the device's next poll gets its certificate.
    Approve(Decide),
    /// Reject a waiting request: the device's next poll gets FAILURE.
    Reject(Decide),
}

/// `TXID [--by NAME]`
#[derive(Debug, clap::Args)]
pub struct Decide {
    /// The request's SCEP transactionID.
    pub transaction_id: String,
    /// Who decides (recorded); defaults to the login name.
    #[arg(long)]
    pub by: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Runs `scepd requests ...`.
pub fn run(args: &RequestsArgs) -> u8 {
    let config_arg = match &args.action {
        RequestsAction::List(c) => c,
        RequestsAction::Approve(d) | RequestsAction::Reject(d) => &d.config,
    };
    let access = match Access::open(&config_arg.config) {
        Ok(access) => access,
        Err(code) => return code,
    };
    let result = match &args.action {
        RequestsAction::List(_) => list(&access),
        RequestsAction::Approve(d) => decide(&access, d, Verdict::Approve),
        RequestsAction::Reject(d) => decide(&access, d, Verdict::Reject),
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
    let views: Vec<RequestView> = match access {
        Access::Direct(store) => queue::list(store, SystemTime::now())?,
        Access::Api(config) => api_json(config, Method::GET, "/v1/requests", None)?,
    };
    for view in views {
        println!(
            "{} {:<8} {} {:<16} {}",
            view.transaction_id,
            view.state,
            rfc3339(view.expires_at),
            view.template,
            view.subject
        );
    }
    Ok(())
}

fn decide(access: &Access, args: &Decide, verdict: Verdict) -> Result<(), String> {
    let by = args
        .by
        .clone()
        .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "cli".into()));
    let txid = &args.transaction_id;
    let answer: DecideAnswer = match access {
        Access::Direct(store) => {
            match queue::decide(store, txid, verdict, &by, SystemTime::now()) {
                DecideResult::Done(answer) => *answer,
                DecideResult::NotFound => {
                    return Err("no pending request with this transactionID".into())
                }
                DecideResult::Expired => {
                    return Err("the request expired before it was decided".into())
                }
                DecideResult::Failed(e) => return Err(e),
            }
        }
        Access::Api(config) => {
            let body = serde_json::to_vec(&DecideBody { by }).map_err(|e| e.to_string())?;
            let action = match verdict {
                Verdict::Approve => "approve",
                Verdict::Reject => "reject",
            };
            let escaped =
                percent_encoding::utf8_percent_encode(txid, percent_encoding::NON_ALPHANUMERIC);
            api_json(
                config,
                Method::POST,
                &format!("/v1/requests/{escaped}/{action}"),
                Some(body),
            )?
        }
    };
    let request = &answer.request;
    match answer.outcome.as_str() {
        "already_decided" => println!(
            "{} was already {} by {}; nothing changed",
            request.transaction_id,
            request.state,
            request.decided_by.as_deref().unwrap_or("?")
        ),
        outcome => println!("{} {outcome}", request.transaction_id),
    }
    Ok(())
}
