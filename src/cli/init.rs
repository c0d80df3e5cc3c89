//! `scepd init`: a CA, RA signing and encryption certificates, a default template, the store
//! and `scepd.toml`, in one directory. Never overwrites an existing setup.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use scepd_ca::{certgen, KeySpec, PrivateKeyOps, RaPurpose, SoftwareCa};

/// Arguments of `scepd init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to create the setup in (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Plain-HTTP SCEP listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How the default template checks requests: `static` (one shared secret, in
    /// challenge.secret), `signed` (per-device signed challenges, see
    /// docs/challenge-format.md; a development signer is written to challenge-signer.key and
    /// challenge-signer.pem and trusted) or `otp` (one-time passwords, `scepd challenge otp`).
    #[arg(long, value_enum, default_value_t = ChallengeMode::Static)]
    pub challenge_mode: ChallengeMode,
    /// Shared challenge for the default template in static mode (random when omitted).
    /// Prefer a random one: a static secret lets anyone who learns it enroll.
    #[arg(long)]
    pub static_challenge: Option<String>,
    /// CA key type: rsa2048, rsa3072, rsa4096, p256 or p384.
    #[arg(long, default_value = "rsa2048")]
    pub ca_key: String,
    /// CA subject (RFC 4514).
    #[arg(long, default_value = "CN=scepd CA")]
    pub ca_subject: String,
    /// Issue a TLS server certificate for HOST from the CA and enable the HTTPS listener.
    #[arg(long)]
    pub tls_name: Option<String>,
    /// HTTPS listener (with --tls-name).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub tls_listen: SocketAddr,
    /// Admin API listener (keep it on loopback; another instance on the same host needs
    /// another port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// Accept single-DES requests (RFC 8894 forbids DES; micromdm's scepclient 2.1.0 and
    /// old network gear still send it). Replies never use DES.
    #[arg(long)]
    pub legacy_algorithms: bool,
    /// Generate the CA and RA keys in a PKCS#11 token (`--pkcs11-module`, `--pkcs11-token`,
    /// `--pkcs11-pin-file`) instead of writing key files.
    #[command(flatten)]
    pub pkcs11: crate::pkcs11::InitOptions,
    /// Where the CA comes from: a CSR for an existing root, an import, or an upstream SCEP
    /// CA (default: a new self-signed CA).
    #[command(flatten)]
    pub ca_source: super::ca_source::CaSourceArgs,
}

/// The verifier of the default template (`--challenge-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChallengeMode {
    /// One shared secret.
    Static,
    /// Signed, encrypted per-device challenges.
    Signed,
    /// One-time passwords.
    Otp,
}

/// What init wrote, for the summary and for `serve`'s development mode.
pub struct Created {
    /// Path of scepd.toml.
    pub config: PathBuf,
    /// The shared challenge of the default template, in static mode.
    pub challenge: Option<String>,
}

/// The development challenge signer `init --challenge-mode signed` writes (beside
/// scepd.toml) and trusts; `scepd challenge mint` signs with it by default.
pub const DEV_SIGNER: (&str, &str) = ("challenge-signer.pem", "challenge-signer.key");

/// Runs `scepd init`; prints a summary.
pub fn run(args: &InitArgs) -> u8 {
    match create(args) {
        Ok(created) => {
            println!("wrote {}", created.config.display());
            println!("SCEP URL:    http://{}/scep", args.listen);
            if let Some(host) = &args.tls_name {
                println!(
                    "HTTPS URL:   https://{host}:{}/scep",
                    args.tls_listen.port()
                );
            }
            print_ca_fingerprints(&args.dir.join("ca.pem"));
            super::ca_source::print_summary(args);
            match args.challenge_mode {
                ChallengeMode::Static => println!(
                    "challenge:   in {}",
                    args.dir.join("challenge.secret").display()
                ),
                ChallengeMode::Signed => println!(
                    "challenge:   scepd challenge mint --config {} --template default --subject CN=...",
                    created.config.display()
                ),
                ChallengeMode::Otp => println!(
                    "challenge:   scepd challenge otp --config {} --template default",
                    created.config.display()
                ),
            }
            println!(
                "run:         scepd serve --config {}",
                created.config.display()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Prints the CA certificate's SHA-256 and SHA-1 fingerprints (an MDM's trusted-root
/// profile asks for the SHA-1 thumbprint).
pub fn print_ca_fingerprints(ca_pem: &Path) {
    let Ok(der) = crate::keys::load_cert_der(ca_pem) else {
        return;
    };
    let sha256 = hex::encode_upper(openssl::sha::sha256(&der));
    let sha1 = hex::encode_upper(openssl::sha::sha1(&der));
    println!("CA cert:     {}", ca_pem.display());
    println!("CA SHA-256:  {sha256}");
    println!("CA SHA-1:    {sha1} (the thumbprint an MDM profile asks for)");
}

/// Creates the whole setup. Refuses to touch a directory that already has one.
pub fn create(args: &InitArgs) -> Result<Created, String> {
    let dir = &args.dir;
    if args.static_challenge.is_some() && args.challenge_mode != ChallengeMode::Static {
        return Err("--static-challenge goes with --challenge-mode static only".into());
    }
    let config_path = dir.join("scepd.toml");
    if config_path.exists() || dir.join("ca.key").exists() {
        return Err(format!(
            "{} already holds a setup; refusing to overwrite it",
            dir.display()
        ));
    }
    fs::create_dir_all(dir.join("templates")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let spec: KeySpec = args
        .ca_key
        .parse()
        .map_err(|e: scepd_ca::CaError| e.to_string())?;
    let token = args.pkcs11.open()?;
    let ca = match super::ca_source::prepare(args, dir)? {
        super::ca_source::Prepared::Generate => {
            let role = crate::pkcs11::KeyRole::Ca;
            let ca_key = crate::pkcs11::generate_key(token.as_ref(), role, spec)?;
            let ca_der = certgen::self_signed_ca(&ca_key, &args.ca_subject, 3650)
                .map_err(|e| e.to_string())?;
            let ca = SoftwareCa::from_parts(ca_der.clone(), ca_key.clone(), Vec::new())
                .map_err(|e| e.to_string())?;
            write_pair(dir, "ca", &ca_der, &ca_key)?;
            Some(ca)
        }
        super::ca_source::Prepared::Imported(ca) => Some(ca),
        super::ca_source::Prepared::Done => None,
    };
    if let Some(ca) = &ca {
        issue_ra_and_tls(args, dir, ca, token.as_ref())?;
    }
    let challenge = match args.challenge_mode {
        ChallengeMode::Static => {
            let secret = args.static_challenge.clone().unwrap_or_else(random_token);
            write_secret(&dir.join("challenge.secret"), &format!("{secret}\n"))?;
            Some(secret)
        }
        ChallengeMode::Signed => {
            write_development_signer(dir)?;
            None
        }
        ChallengeMode::Otp => None,
    };
    write_secret(&dir.join("admin.token"), &format!("{}\n", random_token()))?;
    let template = DEFAULT_TEMPLATE.replace(
        STATIC_CHALLENGE_SECTION,
        match args.challenge_mode {
            ChallengeMode::Static => STATIC_CHALLENGE_SECTION,
            ChallengeMode::Signed => SIGNED_CHALLENGE_SECTION,
            ChallengeMode::Otp => OTP_CHALLENGE_SECTION,
        },
    );
    write_file(&dir.join("templates/default.toml"), &template)?;
    let mut config = config_text(args);
    if let Some(token) = &token {
        token.adjust_config(&mut config);
    }
    super::ca_source::adjust_config(args, dir, &mut config);
    if args.challenge_mode == ChallengeMode::Signed {
        config.push_str(SIGNED_CHALLENGE_TRUST);
    }
    write_file(&config_path, &config)?;
    crate::store::SledStore::open(&dir.join("store")).map_err(|e| e.to_string())?;
    Ok(Created {
        config: config_path,
        challenge,
    })
}

/// The RA signing and encryption certificates (and, with --tls-name, the TLS certificate)
/// issued by the software CA.
fn issue_ra_and_tls(
    args: &InitArgs,
    dir: &Path,
    ca: &SoftwareCa,
    token: Option<&crate::pkcs11::InitToken>,
) -> Result<(), String> {
    // RA certificates are always RSA: SCEP key transport needs an RSA recipient, and an
    // ECDSA CA cannot decrypt requests itself.
    for (name, purpose, cn) in [
        ("ra-sign", RaPurpose::Signing, "scepd RA signing"),
        ("ra-encrypt", RaPurpose::Encryption, "scepd RA encryption"),
    ] {
        let role = crate::pkcs11::KeyRole::Ra(purpose);
        let key = crate::pkcs11::generate_key(token, role, KeySpec::Rsa2048)?;
        let der = certgen::issue_ra_certificate(
            ca,
            &*key.public_key().map_err(|e| e.to_string())?,
            &format!("CN={cn}"),
            purpose,
            crate::ra_renewal::RA_VALIDITY_DAYS,
        )
        .map_err(|e| e.to_string())?;
        write_pair(dir, name, &der, &key)?;
    }
    if let Some(host) = &args.tls_name {
        let key = certgen::generate_key(KeySpec::Rsa2048).map_err(|e| e.to_string())?;
        let der = certgen::issue_tls_server_certificate(ca, &key, host, 397)
            .map_err(|e| e.to_string())?;
        write_pair(dir, "tls", &der, &key)?;
        // Serve the chain: leaf first, then the CA.
        append_pem(&dir.join("tls.pem"), ca.certificate_der())?;
    }
    Ok(())
}

/// A P-256 key and a self-signed certificate for it, for minting challenges during
/// development; production MDMs sign with their own key (README "Signed challenges").
fn write_development_signer(dir: &Path) -> Result<(), String> {
    let key = certgen::generate_key(KeySpec::P256).map_err(|e| e.to_string())?;
    let der = certgen::self_signed_ca(&key, "CN=scepd development challenge signer", 730)
        .map_err(|e| e.to_string())?;
    write_file(
        &dir.join(DEV_SIGNER.0),
        &String::from_utf8_lossy(&pem_of(&der)?),
    )?;
    let key_pem = key.private_key_to_pem_pkcs8().map_err(|e| e.to_string())?;
    write_secret(&dir.join(DEV_SIGNER.1), &String::from_utf8_lossy(&key_pem))
}

fn random_token() -> String {
    hex::encode(crate::scep::crypto::random_bytes(16))
}

pub(crate) fn pem_of(der: &[u8]) -> Result<Vec<u8>, String> {
    openssl::x509::X509::from_der(der)
        .and_then(|c| c.to_pem())
        .map_err(|e| e.to_string())
}

/// Writes `<name>.pem`, and `<name>.key` unless the key is in a PKCS#11 token.
fn write_pair(
    dir: &Path,
    name: &str,
    cert_der: &[u8],
    key: &dyn PrivateKeyOps,
) -> Result<(), String> {
    write_file(
        &dir.join(format!("{name}.pem")),
        &String::from_utf8_lossy(&pem_of(cert_der)?),
    )?;
    let Some(key) = key.as_openssl() else {
        return Ok(());
    };
    let key_pem = key.private_key_to_pem_pkcs8().map_err(|e| e.to_string())?;
    write_secret(
        &dir.join(format!("{name}.key")),
        &String::from_utf8_lossy(&key_pem),
    )
}

fn append_pem(path: &Path, der: &[u8]) -> Result<(), String> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(&pem_of(der)?)
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Keys, tokens and challenges: created readable by the owner only.
pub(crate) fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn config_text(args: &InitArgs) -> String {
    let tls = match &args.tls_name {
        Some(_) => format!(
            "\n[tls]\nlisten = \"{}\"\ncert = \"tls.pem\"\nkey = \"tls.key\"\n",
            args.tls_listen
        ),
        None => String::new(),
    };
    format!(
        r#"# scepd configuration, written by `scepd init`. Relative paths are relative to this file.
# Every key is documented in the README ("Configuration").

[server]
listen = "{listen}"
# Issued certificates name <public_url>/crl/ca.crl (CRL) and <public_url>/ocsp (OCSP):
# set it to the URL devices and relying parties reach this server at.
public_url = "http://{listen}"
# Single DES in requests (RFC 8894 forbids it; micromdm's scepclient 2.1.0 needs it).
legacy_algorithms = {legacy}
max_body_bytes = 2097152
max_request_line_bytes = 131072
{tls}
[admin]
listen = "{admin}"
token_file = "admin.token"

[ca]
cert = "ca.pem"
key = "ca.key"

[ra]
sign_cert = "ra-sign.pem"
sign_key = "ra-sign.key"
encrypt_cert = "ra-encrypt.pem"
encrypt_key = "ra-encrypt.key"

[store]
path = "store"

[templates]
dir = "templates"
default = "default"
"#,
        listen = args.listen,
        legacy = args.legacy_algorithms,
        admin = args.admin_listen,
    )
}

const DEFAULT_TEMPLATE: &str = r#"# The default template: serves /scep, /scep/default, /cgi-bin/pkiclient.exe and the NDES
# paths /certsrv/mscep/mscep.dll[/pkiclient.exe]. Every key: templates/README.md.
description = "Device certificate for client authentication"
include_chain = false

[challenge]
type = "static"
secret_file = "../challenge.secret"

[issuance]
validity_days = 365
key_usage = ["digitalSignature", "keyEncipherment"]
extended_key_usage = ["clientAuth"]
key_types = ["rsa", "p256", "p384"]
min_rsa_bits = 2048
allowed_san_types = ["dns", "email", "upn", "uri", "ip"]
"#;

/// The default template's `[challenge]` in static mode (replaced in the other modes).
const STATIC_CHALLENGE_SECTION: &str =
    "[challenge]\ntype = \"static\"\nsecret_file = \"../challenge.secret\"\n";

const SIGNED_CHALLENGE_SECTION: &str = "[challenge]\n\
# A signed, encrypted challenge per device (docs/challenge-format.md): the CSR must match it.\n\
type = \"signed\"\n";

const OTP_CHALLENGE_SECTION: &str = "[challenge]\n\
# One-time passwords: scepd challenge otp --template default (valid once, for 60 minutes).\n\
type = \"otp\"\n";

/// `[signed_challenge]` as `init --challenge-mode signed` writes it.
const SIGNED_CHALLENGE_TRUST: &str = r#"
[signed_challenge]
# Trusted MDM signers. challenge-signer.pem is a development signer written by `scepd init`;
# replace it with your MDM's signing certificate (or its CA) in production.
skew_seconds = 300
max_lifetime_days = 30

[[signed_challenge.signer]]
certs = "challenge-signer.pem"
"#;
