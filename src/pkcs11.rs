//! Keys in a PKCS#11 token (issue 7, item 1): the `[pkcs11]` section of scepd.toml and the
//! `key_label`s that replace key files, loading the CA and the RA identity from the token at
//! start-up, and `scepd init --pkcs11-module/--pkcs11-token/--pkcs11-pin-file`.
//!
//! The token itself (session pool, login, recovery after a removal) is
//! [`scepd_ca::pkcs11::Token`]; its keys implement [`scepd_ca::PrivateKeyOps`], so the CA's
//! signing code, CertRep signing and envelope opening use them exactly as keys in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::nid::Nid;
use scepd_ca::pkcs11::{self as token, Token, TokenConfig, TokenKeySpec, TokenKeyUse};
use scepd_ca::{KeySpec, PrivateKey, SoftwareCa};
use serde::Deserialize;

use crate::config::{Config, RaConfig, RawConfig};
use crate::keys::{self, KeyError, KeyPair, RaIdentity};

/// `[pkcs11]`: which module and token hold the keys named by `key_label`s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPkcs11 {
    /// The PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// The token label.
    pub token: String,
    /// A file holding the user PIN (one line; mode 0600).
    pub pin_file: Option<PathBuf>,
    /// An environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// Idle sessions kept open (default: the number of crypto threads).
    pub sessions: Option<usize>,
}

/// Where the user PIN comes from (never the command line, never a log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file (trailing newline removed).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// `[pkcs11]` and the key labels, validated.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// The module.
    pub module: PathBuf,
    /// The token label.
    pub token: String,
    /// The PIN's source.
    pub pin: PinSource,
    /// Idle sessions kept open (`None`: the crypto threads).
    pub sessions: Option<usize>,
    /// `[ca] key_label`: the CA key is in the token.
    pub ca_key_label: Option<String>,
    /// `[ra] sign_key_label`.
    pub ra_sign_key_label: Option<String>,
    /// `[ra] encrypt_key_label`.
    pub ra_encrypt_key_label: Option<String>,
}

/// Checks `[pkcs11]` and the `key`/`key_label` pairs of `[ca]` and `[ra]`, pushing every
/// problem to `errors`. A key kept in the token gets an empty path in `ca`/`ra` (so that no
/// file is looked for).
pub fn validate(
    raw: &RawConfig,
    ca_key: &mut PathBuf,
    ra: Option<&mut RaConfig>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<String>,
) -> Option<Pkcs11Config> {
    let mut choose = |what: &str, path: &Path, label: Option<&String>, target: &mut PathBuf| {
        let has_path = !path.as_os_str().is_empty();
        match (has_path, label) {
            (true, Some(_)) => {
                errors.push(format!("{what}: set a key file or a key_label, not both"));
                None
            }
            // No key at all: the file checks report it (or another backend needs none).
            (false, None) => None,
            (false, Some(label)) if label.is_empty() => {
                errors.push(format!("{what}_label: must not be empty"));
                None
            }
            (false, Some(label)) => {
                *target = PathBuf::new();
                Some(label.clone())
            }
            (true, None) => None,
        }
    };
    let ca_key_label = choose("ca.key", &raw.ca.key, raw.ca.key_label.as_ref(), ca_key);
    let (ra_sign_key_label, ra_encrypt_key_label) = match (raw.ra.as_ref(), ra) {
        (Some(raw_ra), Some(ra)) => (
            choose(
                "ra.sign_key",
                &raw_ra.sign_key,
                raw_ra.sign_key_label.as_ref(),
                &mut ra.sign_key,
            ),
            choose(
                "ra.encrypt_key",
                &raw_ra.encrypt_key,
                raw_ra.encrypt_key_label.as_ref(),
                &mut ra.encrypt_key,
            ),
        ),
        _ => (None, None),
    };
    let labelled =
        ca_key_label.is_some() || ra_sign_key_label.is_some() || ra_encrypt_key_label.is_some();
    let Some(section) = &raw.pkcs11 else {
        if labelled {
            errors.push("a key_label needs a [pkcs11] section (module, token, PIN)".into());
        }
        return None;
    };
    let module = resolve(&section.module);
    if !module.is_file() {
        errors.push(format!(
            "pkcs11.module: {} does not exist",
            module.display()
        ));
    }
    if section.token.is_empty() {
        errors.push("pkcs11.token: the token label must not be empty".into());
    }
    let pin = match (&section.pin_file, &section.pin_env) {
        (Some(file), None) => {
            let file = resolve(file);
            if !file.is_file() {
                errors.push(format!(
                    "pkcs11.pin_file: {} does not exist",
                    file.display()
                ));
            }
            Some(PinSource::File(file))
        }
        (None, Some(var)) if !var.is_empty() => Some(PinSource::Env(var.clone())),
        (Some(_), Some(_)) => {
            errors.push("pkcs11: set pin_file or pin_env, not both".into());
            None
        }
        _ => {
            errors.push("pkcs11: pin_file or pin_env is required".into());
            None
        }
    };
    if section.sessions == Some(0) {
        errors.push("pkcs11.sessions: must be at least 1".into());
    }
    if !labelled {
        errors.push(
            "[pkcs11]: no key uses the token (set [ca] key_label or [ra] sign_key_label / \
             encrypt_key_label)"
                .into(),
        );
    }
    Some(Pkcs11Config {
        module,
        token: section.token.clone(),
        pin: pin?,
        sessions: section.sessions,
        ca_key_label,
        ra_sign_key_label,
        ra_encrypt_key_label,
    })
}

/// Reads the PIN from its source (a trailing newline is not part of it).
fn read_pin(source: &PinSource) -> Result<String, String> {
    let pin = match source {
        PinSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("pkcs11.pin_file {}: {e}", path.display()))?,
        PinSource::Env(var) => std::env::var(var)
            .map_err(|_| format!("pkcs11.pin_env: environment variable {var} is not set"))?,
    };
    let pin = pin.trim_end_matches(['\n', '\r']).to_owned();
    if pin.is_empty() {
        return Err("pkcs11: the PIN is empty".into());
    }
    Ok(pin)
}

/// Opens the token of `[pkcs11]` (loads the module, finds the token, logs in), keeping up
/// to `sessions` idle sessions. `None` without `[pkcs11]`.
pub fn open(config: &Config, sessions: usize) -> Result<Option<Arc<Token>>, String> {
    let Some(settings) = &config.pkcs11 else {
        return Ok(None);
    };
    open_token(
        &settings.module,
        &settings.token,
        &settings.pin,
        settings.sessions.unwrap_or(sessions),
    )
    .map(Some)
}

fn open_token(
    module: &Path,
    label: &str,
    pin: &PinSource,
    sessions: usize,
) -> Result<Arc<Token>, String> {
    let pin = read_pin(pin)?;
    Token::open(TokenConfig {
        module: module.to_path_buf(),
        label: label.to_owned(),
        pin: pin.into(),
        max_idle_sessions: sessions.max(1),
    })
    .map_err(|e| format!("pkcs11: {e}"))
}

fn token_key(token: &Arc<Token>, label: &str, cert_path: &Path) -> Result<PrivateKey, KeyError> {
    let cert_der = keys::load_cert_der(cert_path)?;
    let public = openssl::x509::X509::from_der(&cert_der)
        .and_then(|cert| cert.public_key())
        .map_err(|e| KeyError::Parse {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
    let key = token
        .key(label, public)
        .map_err(|e| KeyError::Unsuitable(format!("pkcs11 key {label:?}: {e}")))?;
    Ok(PrivateKey::external(Arc::new(key)))
}

/// The CA: its certificate (and chain) from PEM files, its key from the token when
/// `[ca] key_label` is set, else from `[ca] key` as [`SoftwareCa::load`] does.
pub fn load_ca(
    config: &Config,
    token: Option<&Arc<Token>>,
    passphrase: Option<&[u8]>,
) -> Result<SoftwareCa, String> {
    let label = config.pkcs11.as_ref().and_then(|p| p.ca_key_label.as_ref());
    let (Some(label), Some(token)) = (label, token) else {
        return SoftwareCa::load(
            &config.ca.cert,
            &config.ca.key,
            passphrase,
            config.ca.chain.as_deref(),
        )
        .map_err(|e| format!("CA: {e}"));
    };
    let key = token_key(token, label, &config.ca.cert).map_err(|e| format!("CA: {e}"))?;
    let cert_der = keys::load_cert_der(&config.ca.cert).map_err(|e| format!("CA: {e}"))?;
    let chain = match &config.ca.chain {
        Some(path) => keys::load_cert_chain_der(path).map_err(|e| format!("CA: {e}"))?,
        None => Vec::new(),
    };
    SoftwareCa::from_parts(cert_der, key, chain).map_err(|e| format!("CA: {e}"))
}

/// The RA identity, with every key whose `key_label` is set taken from the token; without
/// labels (or without a token), [`RaIdentity::load`].
pub fn load_ra(config: &Config, token: Option<&Arc<Token>>) -> Result<RaIdentity, KeyError> {
    let (Some(settings), Some(token)) = (&config.pkcs11, token) else {
        return RaIdentity::load(config);
    };
    let pair = |cert: &Path, key: &Path, label: Option<&String>, pass: Option<&[u8]>| match label {
        Some(label) => Ok(KeyPair {
            cert_der: keys::load_cert_der(cert)?,
            key: token_key(token, label, cert)?,
        }),
        None => keys::load_pair(cert, key, pass),
    };
    match &config.ra {
        Some(ra) => {
            let signer = pair(
                &ra.sign_cert,
                &ra.sign_key,
                settings.ra_sign_key_label.as_ref(),
                None,
            )?;
            let decrypter = pair(
                &ra.encrypt_cert,
                &ra.encrypt_key,
                settings.ra_encrypt_key_label.as_ref(),
                None,
            )?;
            keys::require_rsa(&decrypter, "ra.encrypt_key")?;
            Ok(RaIdentity {
                signer,
                decrypters: vec![decrypter],
                has_ra_certificates: true,
            })
        }
        None => {
            let pass = keys::read_passphrase(&config.ca.passphrase)?;
            let ca = pair(
                &config.ca.cert,
                &config.ca.key,
                settings.ca_key_label.as_ref(),
                pass.as_deref(),
            )?;
            keys::require_rsa(
                &ca,
                "ca.key (no [ra] configured, so the CA key must decrypt requests)",
            )?;
            Ok(RaIdentity {
                signer: ca.clone(),
                decrypters: vec![ca],
                has_ra_certificates: false,
            })
        }
    }
}

/// `scepd init`'s PKCS#11 options: generate the CA and RA keys in a token.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InitOptions {
    /// PKCS#11 module: generate the CA, RA signing and RA encryption keys inside a token
    /// (non-extractable) instead of writing key files. With --pkcs11-token and
    /// --pkcs11-pin-file.
    #[arg(long, value_name = "PATH", requires_all = ["pkcs11_token", "pkcs11_pin_file"])]
    pub pkcs11_module: Option<PathBuf>,
    /// Label of the (initialised) token to generate the keys in.
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pub pkcs11_token: Option<String>,
    /// File holding the token's user PIN; scepd.toml names it (`pin_file`).
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

/// The labels `init` gives the keys it generates.
pub const INIT_LABELS: InitLabels = InitLabels {
    ca: "scepd-ca",
    ra_sign: "scepd-ra-sign",
    ra_encrypt: "scepd-ra-encrypt",
};

/// Key labels in the token.
#[derive(Debug, Clone, Copy)]
pub struct InitLabels {
    /// The CA key.
    pub ca: &'static str,
    /// The RA signing key.
    pub ra_sign: &'static str,
    /// The RA encryption key.
    pub ra_encrypt: &'static str,
}

/// The token `init` generates keys in, opened from the options (`None` without them).
pub struct InitToken {
    token: Arc<Token>,
    module: PathBuf,
    label: String,
    pin_file: PathBuf,
}

impl InitOptions {
    /// Opens the token named by the options; `None` when `--pkcs11-module` is absent.
    pub fn open(&self) -> Result<Option<InitToken>, String> {
        let (Some(module), Some(label), Some(pin_file)) = (
            &self.pkcs11_module,
            &self.pkcs11_token,
            &self.pkcs11_pin_file,
        ) else {
            if self.pkcs11_module.is_some() {
                return Err("--pkcs11-module needs --pkcs11-token and --pkcs11-pin-file".into());
            }
            return Ok(None);
        };
        let module =
            std::path::absolute(module).map_err(|e| format!("{}: {e}", module.display()))?;
        let pin_file =
            std::path::absolute(pin_file).map_err(|e| format!("{}: {e}", pin_file.display()))?;
        let token = open_token(&module, label, &PinSource::File(pin_file.clone()), 1)?;
        Ok(Some(InitToken {
            token,
            module,
            label: label.clone(),
            pin_file,
        }))
    }
}

impl InitToken {
    /// Generates a key in the token (refused when the label is taken).
    pub fn generate(&self, label: &str, spec: KeySpec, sign: bool) -> Result<PrivateKey, String> {
        let spec = match spec {
            KeySpec::Rsa2048 => TokenKeySpec::Rsa(2048),
            KeySpec::Rsa3072 => TokenKeySpec::Rsa(3072),
            KeySpec::Rsa4096 => TokenKeySpec::Rsa(4096),
            KeySpec::P256 => TokenKeySpec::Ec(Nid::X9_62_PRIME256V1),
            KeySpec::P384 => TokenKeySpec::Ec(Nid::SECP384R1),
        };
        let usage = if sign {
            TokenKeyUse::Sign
        } else {
            TokenKeyUse::Decrypt
        };
        let key = token::generate(&self.token, label, spec, usage)
            .map_err(|e| format!("pkcs11: generating {label:?}: {e}"))?;
        Ok(PrivateKey::external(Arc::new(key)))
    }

    /// Rewrites the configuration `init` wrote: `key_label`s instead of the key files, and
    /// the `[pkcs11]` section.
    pub fn adjust_config(&self, config: &mut String) {
        for (file, label) in [
            ("key = \"ca.key\"\n", INIT_LABELS.ca),
            ("sign_key = \"ra-sign.key\"\n", INIT_LABELS.ra_sign),
            ("encrypt_key = \"ra-encrypt.key\"\n", INIT_LABELS.ra_encrypt),
        ] {
            let key = file.split(' ').next().unwrap_or("key");
            *config = config.replacen(file, &format!("{key}_label = {label:?}\n"), 1);
        }
        config.push_str(&format!(
            "\n[pkcs11]\n# The CA and RA keys are in this token (generated by `scepd init`; they\n\
             # never leave it). The certificates stay PEM files.\n\
             module = {module:?}\ntoken = {token:?}\npin_file = {pin:?}\n",
            module = self.module.display().to_string(),
            token = self.label,
            pin = self.pin_file.display().to_string(),
        ));
    }
}

/// Which key `init` generates.
#[derive(Debug, Clone, Copy)]
pub enum KeyRole {
    /// The CA key.
    Ca,
    /// An RA key.
    Ra(scepd_ca::RaPurpose),
}

/// Generates a key for `init`: in the token when there is one (labelled as
/// [`INIT_LABELS`] says), else in memory.
pub fn generate_key(
    token: Option<&InitToken>,
    role: KeyRole,
    spec: KeySpec,
) -> Result<PrivateKey, String> {
    let Some(token) = token else {
        return scepd_ca::generate_key(spec)
            .map(PrivateKey::from)
            .map_err(|e| e.to_string());
    };
    match role {
        KeyRole::Ca => token.generate(INIT_LABELS.ca, spec, true),
        KeyRole::Ra(scepd_ca::RaPurpose::Signing) => {
            token.generate(INIT_LABELS.ra_sign, spec, true)
        }
        KeyRole::Ra(scepd_ca::RaPurpose::Encryption) => {
            token.generate(INIT_LABELS.ra_encrypt, spec, false)
        }
    }
}
