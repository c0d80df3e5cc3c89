//! `scepd challenge otp --template T`: a one-time password for an `otp` template, through
//! the admin API while a server runs (sled lets one process open the store), directly on the
//! store otherwise. The password alone goes to stdout (for scripts); its expiry to stderr.
//!
//! `scepd challenge mint --template T --subject DN ...`: a signed challenge blob
//! (docs/challenge-format.md) for a `signed` template, on stdout.

use std::path::{Path, PathBuf};
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
    /// Print a signed challenge (docs/challenge-format.md) for a `signed` template.
    Mint(Box<MintArgs>),
}

/// `scepd challenge mint`
#[derive(Debug, clap::Args)]
pub struct MintArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The template the challenge is for.
    #[arg(long)]
    template: String,
    /// The subject the CSR must carry (RFC 4514, most specific RDN first).
    #[arg(long)]
    subject: String,
    /// A subject alternative name the CSR must carry, `TYPE:VALUE` with TYPE one of dns,
    /// email, upn, uri, ip (repeat for several; the CSR must carry exactly these).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Key usage bits the CSR must request (RFC 5280 names, e.g. digitalSignature).
    #[arg(long = "key-usage", value_delimiter = ',')]
    key_usage: Vec<String>,
    /// Extended key usages the CSR must request (dotted OIDs; repeat for several).
    #[arg(long = "eku")]
    eku: Vec<String>,
    /// Smallest key size in bits.
    #[arg(long)]
    min_key_bits: Option<u32>,
    /// Allowed key types (rsa, p256, p384, p521; repeat for several).
    #[arg(long = "key-type")]
    key_types: Vec<String>,
    /// How long the challenge is valid: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Device identifier (logged by scepd).
    #[arg(long)]
    device_id: Option<String>,
    /// User identifier (logged by scepd).
    #[arg(long)]
    user_id: Option<String>,
    /// Tenant identifier (logged by scepd).
    #[arg(long)]
    tenant: Option<String>,
    /// The `iss` claim: the minting MDM's name.
    #[arg(long, default_value = "scepd-cli")]
    iss: String,
    /// Signing key (PEM); default: the development signer beside scepd.toml.
    #[arg(long, requires = "signer_cert")]
    signer_key: Option<PathBuf>,
    /// Signing certificate (PEM) for --signer-key.
    #[arg(long, requires = "signer_key")]
    signer_cert: Option<PathBuf>,
}

/// Runs `scepd challenge ...`.
pub fn run(args: &ChallengeArgs) -> u8 {
    match &args.action {
        ChallengeAction::Otp { template, config } => otp_password(&config.config, template),
        ChallengeAction::Mint(args) => match mint_blob(args) {
            Ok(blob) => {
                println!("{blob}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
    }
}

/// Mints a blob for `args.template`, encrypted to the certificate the server decrypts with.
fn mint_blob(args: &MintArgs) -> Result<String, String> {
    let config_path = &args.config.config;
    let config = Config::load(config_path).map_err(|e| e.0.join("; "))?;
    let template = args.template.to_ascii_lowercase();
    match config.templates.get(&template).map(|t| &t.challenge) {
        Some(ChallengeConfig::Signed(_)) => {}
        Some(_) => {
            return Err(format!(
                "template {:?} does not use [challenge] type = \"signed\"",
                args.template
            ))
        }
        None => return Err(format!("no template named {:?}", args.template)),
    }
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let (cert_path, key_path) = match (&args.signer_cert, &args.signer_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => (
            dir.join(super::init::DEV_SIGNER.0),
            dir.join(super::init::DEV_SIGNER.1),
        ),
    };
    let signer = crate::keys::load_pair(&cert_path, &key_path, None).map_err(|e| e.to_string())?;
    let recipient = challenge_recipient(config_path, &config)?;
    let claims = claims(args, &template, SystemTime::now())?;
    scepd_policy::mint_challenge(
        &claims,
        &signer.cert_der,
        signer
            .key
            .as_openssl()
            .ok_or("the challenge signer key must be a PEM file")?,
        &recipient,
        scepd_policy::MintOptions::default(),
    )
    .map_err(|e| e.to_string())
}

/// The certificate challenges are encrypted to: `[signed_challenge] decrypt_cert`, else the
/// RA encryption certificate of the CA generation in charge (the CA's without `[ra]`).
fn challenge_recipient(config_path: &Path, config: &Config) -> Result<Vec<u8>, String> {
    if let Some(key) = config
        .signed_challenge
        .as_ref()
        .and_then(|s| s.decryption.as_ref())
    {
        return Ok(key.cert_der.clone());
    }
    let raw = crate::rollover::read_raw(config_path).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let switched = raw
        .generation
        .iter()
        .rev()
        .find(|g| crate::rollover::parse_rfc3339(&g.switch_at).is_ok_and(|at| at <= now));
    let path = match (switched, &config.ra) {
        (Some(generation), _) => generation
            .ra_encrypt_cert
            .as_ref()
            .unwrap_or(&generation.ca_cert)
            .to_owned(),
        (None, Some(ra)) => ra.encrypt_cert.clone(),
        (None, None) => config.ca.cert.clone(),
    };
    crate::keys::load_cert_der(&dir.join(path)).map_err(|e| e.to_string())
}

/// The claims `args` ask for, valid from `now` for the ttl.
fn claims(
    args: &MintArgs,
    template: &str,
    now: SystemTime,
) -> Result<scepd_policy::Claims, String> {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let sans = args
        .sans
        .iter()
        .map(|san| {
            san.split_once(':')
                .map(|(kind, value)| scepd_policy::San::new(kind, value))
                .ok_or_else(|| format!("--san {san:?}: expected TYPE:VALUE"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let non_empty = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
    Ok(scepd_policy::Claims {
        v: 1,
        id: scepd_policy::random_challenge_id(),
        iss: args.iss.clone(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(parse_ttl(&args.ttl)?),
        template: template.to_owned(),
        subject: args.subject.clone(),
        san: sans,
        key_usage: non_empty(&args.key_usage),
        eku: non_empty(&args.eku),
        min_key_bits: args.min_key_bits,
        key_types: non_empty(&args.key_types),
        device_id: args.device_id.clone(),
        user_id: args.user_id.clone(),
        tenant: args.tenant.clone(),
    })
}

/// `90`, `90s`, `30m`, `1h`, `7d` as seconds.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("--ttl {text:?}: use s, m, h or d")),
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n.saturating_mul(factor))
        .ok_or_else(|| format!("--ttl {text:?}: expected a positive number"))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_read_as_seconds() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        for bad in ["", "h", "0h", "-1h", "1w", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
