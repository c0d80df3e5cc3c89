//! `scepd ca rollover`: prepares the next CA generation (a new key of the same type,
//! self-signed, the same subject) and RA certificates issued by it, and appends it to
//! `rollover.toml`. `scepd ca status`: lists the generations.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use openssl::pkey::{Id, PKey, Private};
use scepd_ca::certgen::{self, KeySpec, RaPurpose};
use scepd_ca::SoftwareCa;

use super::init::{pem_of, write_secret};
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
    /// List the CA generations: name, switch time, notAfter, and which one is in charge.
    Status(super::ConfigArg),
    /// Install the CA certificate a root signed for the CSR of `scepd init --ca-csr-out`,
    /// with its chain; issues the RA certificates from it.
    InstallCert(super::ca_source::InstallCertArgs),
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
        CaCommand::InstallCert(args) => match super::ca_source::install_cert(args) {
            Ok(summary) => {
                print!("{summary}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        CaCommand::Status(args) => match status(&args.config) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
    }
}

/// One line per generation: name, switch time, CA notAfter, state.
fn status(config_path: &Path) -> Result<String, String> {
    let config = Config::load(config_path).map_err(|e| e.0.join("; "))?;
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let now = SystemTime::now();
    let mut rows = vec![(
        config.ca_name.clone(),
        None,
        keys::load_cert_der(&config.ca.cert).map_err(|e| e.to_string())?,
    )];
    for generation in rollover::read_raw(config_path)
        .map_err(|e| e.to_string())?
        .generation
    {
        let switch_at = rollover::parse_rfc3339(&generation.switch_at)?;
        let cert =
            keys::load_cert_der(&dir.join(&generation.ca_cert)).map_err(|e| e.to_string())?;
        rows.push((generation.name, Some(switch_at), cert));
    }
    let in_charge = rows
        .iter()
        .rposition(|(_, at, _)| at.is_none_or(|at| at <= now))
        .unwrap_or(0);
    let mut text = String::from("NAME\tSWITCH_AT\tNOT_AFTER\tSTATE\n");
    for (index, (name, switch_at, cert)) in rows.iter().enumerate() {
        let not_after = not_after_of(cert)?;
        let state = match index.cmp(&in_charge) {
            std::cmp::Ordering::Equal => "in charge",
            std::cmp::Ordering::Greater => "next (GetNextCACert)",
            std::cmp::Ordering::Less if not_after <= now => "expired",
            std::cmp::Ordering::Less => "previous (CRL, OCSP, renewal)",
        };
        let switch = match switch_at {
            Some(at) => rfc3339(*at)?,
            None => "-".into(),
        };
        text.push_str(&format!(
            "{name}\t{switch}\t{}\t{state}\n",
            rfc3339(not_after)?
        ));
    }
    Ok(text)
}

fn not_after_of(cert_der: &[u8]) -> Result<SystemTime, String> {
    use der::Decode;
    x509_cert::Certificate::from_der(cert_der)
        .map(|c| c.tbs_certificate.validity.not_after.to_system_time())
        .map_err(|e| e.to_string())
}

fn rfc3339(at: SystemTime) -> Result<String, String> {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
}

/// The CA and RA files of the generation in charge now, which the next one succeeds.
struct Predecessor {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    /// RA signing and encryption certificates, when the setup has RA certificates.
    ra_certs: Option<(PathBuf, PathBuf)>,
    switch_at: Option<SystemTime>,
}

fn predecessor(
    config: &Config,
    dir: &Path,
    last: Option<&rollover::RawGeneration>,
) -> Result<Predecessor, String> {
    Ok(match last {
        None => Predecessor {
            ca_cert: config.ca.cert.clone(),
            ca_key: config.ca.key.clone(),
            ra_certs: config
                .ra
                .as_ref()
                .map(|ra| (ra.sign_cert.clone(), ra.encrypt_cert.clone())),
            switch_at: None,
        },
        Some(generation) => Predecessor {
            ca_cert: dir.join(&generation.ca_cert),
            ca_key: dir.join(&generation.ca_key),
            ra_certs: generation
                .ra_sign_cert
                .as_ref()
                .zip(generation.ra_encrypt_cert.as_ref())
                .map(|(sign, encrypt)| (dir.join(sign), dir.join(encrypt))),
            switch_at: Some(rollover::parse_rfc3339(&generation.switch_at)?),
        },
    })
}

fn rollover(args: &RolloverArgs) -> Result<PathBuf, String> {
    let config = Config::load(&args.config).map_err(|e| e.0.join("; "))?;
    if config.upstream.is_some() {
        return Err("[ca] is an upstream CA: it rolls over at the upstream, not here".into());
    }
    if config
        .pkcs11
        .as_ref()
        .is_some_and(|p| p.ca_key_label.is_some())
    {
        return Err(
            "[ca] key_label: the CA key is in a PKCS#11 token, and `scepd ca rollover` \
                    writes the next CA key as a file; roll over a token CA by hand"
                .into(),
        );
    }
    let dir = args.config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let record = rollover::record_path(&args.config);
    let existing = rollover::read_raw(&args.config).map_err(|e| e.to_string())?;
    let switch_at = switch_time(args)?;
    let previous = predecessor(&config, &dir, existing.generation.last())?;
    if let Some(at) = previous.switch_at {
        if at > SystemTime::now() {
            return Err(format!(
                "{}: a rollover is already prepared (switch at {}); wait for it before the next",
                record.display(),
                rfc3339(at)?
            ));
        }
        if rollover::parse_rfc3339(&switch_at)? <= at {
            return Err(format!(
                "the switch time must be after the previous one ({})",
                rfc3339(at)?
            ));
        }
    }
    let number = existing.generation.len() + 2;
    let name = format!("{}-{number}", config.ca_name);
    let passphrase = keys::read_passphrase(&config.ca.passphrase).map_err(|e| e.to_string())?;
    let current =
        keys::load_key(&previous.ca_key, passphrase.as_deref()).map_err(|e| e.to_string())?;
    let current_der = keys::load_cert_der(&previous.ca_cert).map_err(|e| e.to_string())?;
    let key = certgen::generate_key(key_spec_of(&current)?).map_err(|e| e.to_string())?;
    let subject = subject_of(&current_der)?;
    let ca_der =
        certgen::self_signed_ca(&key, &subject, CA_VALIDITY_DAYS).map_err(|e| e.to_string())?;
    let next_ca = SoftwareCa::from_parts(ca_der.clone(), key.clone(), Vec::new())
        .map_err(|e| e.to_string())?;
    let ca_file = format!("ca-{number}");
    write_new(&dir.join(format!("{ca_file}.pem")), &pem_text(&ca_der)?)?;
    write_secret(
        &dir.join(format!("{ca_file}.key")),
        &key_text(&key, passphrase.as_deref())?,
    )?;
    let mut block = format!(
        "\n[[generation]]\nname = \"{name}\"\nswitch_at = \"{switch_at}\"\n\
         ca_cert = \"{ca_file}.pem\"\nca_key = \"{ca_file}.key\"\n"
    );
    if let Some((sign, encrypt)) = &previous.ra_certs {
        for (stem, purpose, current) in [
            ("ra-sign", RaPurpose::Signing, sign),
            ("ra-encrypt", RaPurpose::Encryption, encrypt),
        ] {
            let file = format!("{stem}-{number}");
            next_ra(&next_ca, &dir, &file, purpose, current)?;
            let field = stem.replace('-', "_");
            block.push_str(&format!(
                "{field}_cert = \"{file}.pem\"\n{field}_key = \"{file}.key\"\n"
            ));
        }
    }
    // Appended last: the record is what makes the prepared files count.
    let mut text = match std::fs::read_to_string(&record) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ROLLOVER_HEADER.to_owned(),
        Err(e) => return Err(format!("{}: {e}", record.display())),
    };
    text.push_str(&block);
    crate::ra_renewal::write_atomically(&record, text.as_bytes(), 0o644)
        .map_err(|e| e.to_string())?;
    Ok(record)
}

/// The first lines of a new `rollover.toml`.
const ROLLOVER_HEADER: &str = "# Written by `scepd ca rollover`: the CA generations after [ca] in scepd.toml, \
oldest first.\n# Each issues from its switch_at; GetNextCACert offers it before. Do not edit by hand.\n";

/// Writes a certificate to a file that must not exist yet.
fn write_new(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn next_ra(
    ca: &SoftwareCa,
    dir: &Path,
    file: &str,
    purpose: RaPurpose,
    current_cert: &Path,
) -> Result<(), String> {
    let subject = subject_of(&keys::load_cert_der(current_cert).map_err(|e| e.to_string())?)?;
    let key = certgen::generate_key(KeySpec::Rsa2048).map_err(|e| e.to_string())?;
    let der = certgen::issue_ra_certificate(ca, &key, &subject, purpose, RA_VALIDITY_DAYS)
        .map_err(|e| e.to_string())?;
    write_new(&dir.join(format!("{file}.pem")), &pem_text(&der)?)?;
    write_secret(&dir.join(format!("{file}.key")), &key_text(&key, None)?)
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
