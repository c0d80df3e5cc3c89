//! `scepd ca rollover`: prepares the next CA (a new key of the same type, self-signed, same
//! subject) and RA certificates issued by it, and records them in `rollover.toml`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use openssl::pkey::{Id, PKey, Private};
use scepd_ca::certgen::{self, KeySpec, RaPurpose};
use scepd_ca::SoftwareCa;

use super::init::{pem_of, write_file, write_secret};
use crate::config::Config;
use crate::keys;
use crate::ra_renewal::RA_VALIDITY_DAYS;
use crate::rollover;

/// Validity of the next CA certificate, as `init` gives the first.
const CA_VALIDITY_DAYS: u32 = 3650;
/// Switch time when none is given.
const DEFAULT_SWITCH_IN_DAYS: u32 = 30;

/// `scepd ca ...`
#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CaCommand,
}

/// The `ca` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Prepare the next CA and its RA certificates; GetNextCACert serves them.
    Rollover(RolloverArgs),
}

/// `scepd ca rollover`
#[derive(Debug, clap::Args)]
pub struct RolloverArgs {
    /// Path of scepd.toml.
    #[arg(long, default_value = "scepd.toml")]
    pub config: PathBuf,
    /// When the next CA takes over (RFC 3339, e.g. 2027-01-01T00:00:00Z).
    #[arg(long, conflicts_with = "switch_in_days")]
    pub switch_at: Option<String>,
    /// Days from now until the next CA takes over (default 30).
    #[arg(long)]
    pub switch_in_days: Option<u32>,
}

/// Runs `scepd ca ...`.
pub fn run(args: &CaArgs) -> u8 {
    match &args.command {
        CaCommand::Rollover(args) => match rollover(args) {
            Ok(path) => {
                println!("next CA prepared: {}", path.display());
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
    }
}

fn rollover(args: &RolloverArgs) -> Result<PathBuf, String> {
    let config = Config::load(&args.config).map_err(|e| e.0.join("; "))?;
    let dir = args.config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let record = dir.join(rollover::FILE_NAME);
    if record.exists() {
        return Err(format!(
            "{} exists: a rollover is already prepared",
            record.display()
        ));
    }
    let switch_at = switch_time(args)?;
    let passphrase = keys::read_passphrase(&config.ca.passphrase).map_err(|e| e.to_string())?;
    let current =
        keys::load_key(&config.ca.key, passphrase.as_deref()).map_err(|e| e.to_string())?;
    let current_der = keys::load_cert_der(&config.ca.cert).map_err(|e| e.to_string())?;
    let key = certgen::generate_key(key_spec_of(&current)?).map_err(|e| e.to_string())?;
    let subject = subject_of(&current_der)?;
    let ca_der =
        certgen::self_signed_ca(&key, &subject, CA_VALIDITY_DAYS).map_err(|e| e.to_string())?;
    let next_ca = SoftwareCa::from_parts(ca_der.clone(), key.clone(), Vec::new())
        .map_err(|e| e.to_string())?;
    write_file(&dir.join("ca-next.pem"), &pem_text(&ca_der)?)?;
    write_secret(
        &dir.join("ca-next.key"),
        &key_text(&key, passphrase.as_deref())?,
    )?;
    let mut text = format!(
        "# Written by `scepd ca rollover`: the next CA, served by GetNextCACert until switch_at.\n\
         switch_at = \"{switch_at}\"\nca_cert = \"ca-next.pem\"\nca_key = \"ca-next.key\"\n"
    );
    if let Some(ra) = &config.ra {
        for (name, purpose, current) in [
            ("ra-sign", RaPurpose::Signing, &ra.sign_cert),
            ("ra-encrypt", RaPurpose::Encryption, &ra.encrypt_cert),
        ] {
            next_ra(&next_ca, &dir, name, purpose, current)?;
            let field = name.replace('-', "_");
            text.push_str(&format!(
                "{field}_cert = \"{name}-next.pem\"\n{field}_key = \"{name}-next.key\"\n"
            ));
        }
    }
    // Written last: the record is what makes the prepared files count.
    write_file(&record, &text)?;
    Ok(record)
}

fn next_ra(
    ca: &SoftwareCa,
    dir: &Path,
    name: &str,
    purpose: RaPurpose,
    current_cert: &Path,
) -> Result<(), String> {
    let subject = subject_of(&keys::load_cert_der(current_cert).map_err(|e| e.to_string())?)?;
    let key = certgen::generate_key(KeySpec::Rsa2048).map_err(|e| e.to_string())?;
    let der = certgen::issue_ra_certificate(ca, &key, &subject, purpose, RA_VALIDITY_DAYS)
        .map_err(|e| e.to_string())?;
    write_file(&dir.join(format!("{name}-next.pem")), &pem_text(&der)?)?;
    write_secret(
        &dir.join(format!("{name}-next.key")),
        &key_text(&key, None)?,
    )
}

fn switch_time(args: &RolloverArgs) -> Result<String, String> {
    let at = match (&args.switch_at, args.switch_in_days) {
        (Some(text), _) => rollover::parse_rfc3339(text)?,
        (None, days) => {
            let days = days.unwrap_or(DEFAULT_SWITCH_IN_DAYS);
            SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400)
        }
    };
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
}

fn key_spec_of(key: &PKey<Private>) -> Result<KeySpec, String> {
    match (key.id(), key.bits()) {
        (Id::RSA, 2048) => Ok(KeySpec::Rsa2048),
        (Id::RSA, 3072) => Ok(KeySpec::Rsa3072),
        (Id::RSA, 4096) => Ok(KeySpec::Rsa4096),
        (Id::EC, 256) => Ok(KeySpec::P256),
        (Id::EC, 384) => Ok(KeySpec::P384),
        (id, bits) => Err(format!(
            "the current CA key ({id:?}, {bits} bits) has no matching key type"
        )),
    }
}

fn subject_of(cert_der: &[u8]) -> Result<String, String> {
    use der::Decode;
    x509_cert::Certificate::from_der(cert_der)
        .map(|c| c.tbs_certificate.subject.to_string())
        .map_err(|e| e.to_string())
}

fn pem_text(der: &[u8]) -> Result<String, String> {
    Ok(String::from_utf8_lossy(&pem_of(der)?).into_owned())
}

fn key_text(key: &PKey<Private>, passphrase: Option<&[u8]>) -> Result<String, String> {
    let pem = match passphrase {
        Some(pass) => {
            key.private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), pass)
        }
        None => key.private_key_to_pem_pkcs8(),
    };
    pem.map(|p| String::from_utf8_lossy(&p).into_owned())
        .map_err(|e| e.to_string())
}
