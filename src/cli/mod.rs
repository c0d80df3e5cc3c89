//! The `scepd` command line (clap). Every subcommand that needs the configuration takes
//! `--config FILE`, default `./scepd.toml`.

mod admin_client;
pub mod ca;
pub mod ca_source;
pub mod certs;
pub mod challenge;
pub mod init;
pub mod outbox;
pub mod requests;
pub mod serve;
pub mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit code for a bad configuration (sysexits EX_USAGE), before any port is bound.
pub const EXIT_CONFIG: u8 = 64;

/// NDES-compatible SCEP enrollment server.
#[derive(Debug, Parser)]
#[command(name = "scepd", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new setup: CA, RA certificates, templates, store and scepd.toml.
    Init(Box<init::InitArgs>),
    /// Run the SCEP server (and the admin API).
    Serve(serve::ServeArgs),
    /// Validate scepd.toml and every template; print every problem; exit 64 on any.
    CheckConfig(ConfigArg),
    /// List, show and revoke issued certificates.
    Certs(certs::CertsArgs),
    /// List, approve and reject requests waiting for manual approval.
    Requests(requests::RequestsArgs),
    /// CA rollover: prepare the next CA (served by GetNextCACert).
    Ca(ca::CaArgs),
    /// Challenges: one-time passwords (`scepd challenge otp --template T`).
    Challenge(challenge::ChallengeArgs),
    /// Connector events waiting for delivery: `scepd outbox list`, `scepd outbox retry ID|--all`.
    Outbox(outbox::OutboxArgs),
    /// Server and connector outbox status (depth, fullness); exit 2 when the outbox is full.
    Status(ConfigArg),
}

/// `--config FILE`
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Path of scepd.toml.
    #[arg(long, default_value = "scepd.toml")]
    pub config: PathBuf,
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Init(args) => init::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Requests(args) => requests::run(&args),
        Command::Ca(args) => ca::run(&args),
        Command::Challenge(args) => challenge::run(&args),
        Command::Outbox(args) => outbox::run(&args),
        Command::Status(args) => status::run(&args),
    }
}

fn check_config(args: &ConfigArg) -> u8 {
    match crate::config::Config::load(&args.config) {
        Ok(config) => {
            println!(
                "{}: OK ({} template{})",
                args.config.display(),
                config.templates.len(),
                if config.templates.len() == 1 { "" } else { "s" }
            );
            0
        }
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("error: {error}");
            }
            EXIT_CONFIG
        }
    }
}
