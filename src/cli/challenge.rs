//! `scepd challenge otp --template T`: a one-time password for an `otp` template, through
//! the admin API while a server runs (sled lets one process open the store), directly on the
//! store otherwise.
//!
//! The password alone goes to stdout (for scripts); its expiry goes to stderr.

use std::time::SystemTime;

use http::Method;

use super::admin_client::{api_json, rfc3339, Access};
use super::ConfigArg;
use crate::config::{ChallengeConfig, Config};
use crate::http::admin::{OtpAnswer, OtpBody};
use crate::verifiers::otp;

/// Arguments of `scepd challenge`.
#[derive(Debug, clap::Args)]
pub struct ChallengeArgs {
    /// Which action.
    #[command(subcommand)]
    pub action: ChallengeAction,
}

/// `scepd challenge` actions.
#[derive(Debug, clap::Subcommand)]
pub enum ChallengeAction {
    /// Print a new one-time password for a template whose `[challenge]` type is `otp`.
    Otp {
        /// The template the password is for.
        #[arg(long)]
        template: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Runs `scepd challenge ...`.
pub fn run(args: &ChallengeArgs) -> u8 {
    match &args.action {
        ChallengeAction::Otp { template, config } => otp_password(&config.config, template),
    }
}

fn otp_password(config_path: &std::path::Path, template: &str) -> u8 {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(errors) => {
            errors.0.iter().for_each(|e| eprintln!("error: {e}"));
            return super::EXIT_CONFIG;
        }
    };
    let name = template.to_ascii_lowercase();
    let settings = match config.templates.get(&name).map(|t| &t.challenge) {
        Some(ChallengeConfig::Otp(settings)) => *settings,
        Some(_) => {
            eprintln!("error: template {template:?} does not use [challenge] type = \"otp\"");
            return 1;
        }
        None => {
            eprintln!("error: no template named {template:?}");
            return 1;
        }
    };
    let access = match Access::open(config_path) {
        Ok(access) => access,
        Err(code) => return code,
    };
    let result = match &access {
        Access::Direct(store) => otp::mint(store, &name, &settings, SystemTime::now())
            .map(|minted| OtpAnswer {
                expires_at: minted.expires_at_unix(),
                password: minted.password,
            })
            .map_err(|e| e.to_string()),
        Access::Api(config) => serde_json::to_vec(&OtpBody {
            template: name.clone(),
        })
        .map_err(|e| e.to_string())
        .and_then(|body| api_json(config, Method::POST, "/v1/challenges/otp", Some(body))),
    };
    match result {
        Ok(answer) => {
            println!("{}", answer.password);
            eprintln!(
                "valid once for template {name}, until {}",
                rfc3339(answer.expires_at)
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
