//! The RA identity: the keys that decrypt requests and sign CertReps (not the CA's signing
//! duty, which lives behind `CaBackend`). Parsed once at start-up; shared read-only.

use std::path::Path;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use scepd_ca::{KeyKind, PrivateKey};

use crate::config::{Config, Passphrase};

/// A certificate with its private key.
#[derive(Clone)]
pub struct KeyPair {
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// The private key, parsed once (in memory), or found once in a PKCS#11 token.
    pub key: PrivateKey,
}

/// Who decrypts requests and signs replies.
pub struct RaIdentity {
    /// Signs CertReps: the RA signing certificate, or the CA.
    pub signer: KeyPair,
    /// Requests are encrypted to these: the RA encryption certificate, or the CA. The first
    /// is the current one (published by GetCACert); any others are kept for a grace period
    /// after a renewal, for clients that fetched GetCACert before it.
    pub decrypters: Vec<KeyPair>,
    /// Whether separate RA certificates are configured (GetCACert then answers ca-ra-cert).
    pub has_ra_certificates: bool,
}

/// Why key material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// PEM or DER could not be parsed (or the passphrase is wrong).
    #[error("{path}: cannot parse ({reason})")]
    Parse {
        /// The file.
        path: String,
        /// openssl's reason, never key material.
        reason: String,
    },
    /// The passphrase environment variable is not set.
    #[error("environment variable {0} (ca.key_passphrase_env) is not set")]
    MissingEnv(String),
    /// A key does not match its certificate, or cannot do its job.
    #[error("{0}")]
    Unsuitable(String),
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::Parse {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Reads a PEM certificate as DER.
pub fn load_cert_der(path: &Path) -> Result<Vec<u8>, KeyError> {
    let cert = X509::from_pem(&read(path)?).map_err(|e| parse_err(path, e))?;
    cert.to_der().map_err(|e| parse_err(path, e))
}

/// Reads every certificate of a PEM bundle, as DER, in file order.
pub fn load_cert_chain_der(path: &Path) -> Result<Vec<Vec<u8>>, KeyError> {
    let stack = X509::stack_from_pem(&read(path)?).map_err(|e| parse_err(path, e))?;
    stack
        .iter()
        .map(|c| c.to_der().map_err(|e| parse_err(path, e)))
        .collect()
}

/// Reads a PEM private key, decrypting it with `passphrase` when given.
pub fn load_key(path: &Path, passphrase: Option<&[u8]>) -> Result<PKey<Private>, KeyError> {
    let pem = read(path)?;
    let key = match passphrase {
        Some(pass) => PKey::private_key_from_pem_passphrase(&pem, pass),
        None => PKey::private_key_from_pem(&pem),
    };
    key.map_err(|e| parse_err(path, e))
}

/// Resolves the CA key passphrase from its configured source.
pub fn read_passphrase(source: &Passphrase) -> Result<Option<Vec<u8>>, KeyError> {
    match source {
        Passphrase::None => Ok(None),
        Passphrase::Env(var) => std::env::var(var)
            .map(|v| Some(v.into_bytes()))
            .map_err(|_| KeyError::MissingEnv(var.clone())),
        Passphrase::File(path) => {
            let mut bytes = read(path)?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            Ok(Some(bytes))
        }
    }
}

/// Loads a certificate and its key, checking that they match.
pub fn load_pair(
    cert: &Path,
    key_path: &Path,
    passphrase: Option<&[u8]>,
) -> Result<KeyPair, KeyError> {
    let cert_der = load_cert_der(cert)?;
    let key = load_key(key_path, passphrase)?;
    let x509 = X509::from_der(&cert_der).map_err(|e| parse_err(cert, e))?;
    let public = x509.public_key().map_err(|e| parse_err(cert, e))?;
    if !public.public_eq(&key) {
        let msg = format!("{} does not match {}", key_path.display(), cert.display());
        return Err(KeyError::Unsuitable(msg));
    }
    Ok(KeyPair {
        cert_der,
        key: key.into(),
    })
}

impl RaIdentity {
    /// Loads the RA keys, or falls back to the CA key when no RA is configured.
    pub fn load(config: &Config) -> Result<Self, KeyError> {
        match &config.ra {
            Some(ra) => {
                let signer = load_pair(&ra.sign_cert, &ra.sign_key, None)?;
                let decrypter = load_pair(&ra.encrypt_cert, &ra.encrypt_key, None)?;
                require_rsa(&decrypter, "ra.encrypt_key")?;
                Ok(Self {
                    signer,
                    decrypters: vec![decrypter],
                    has_ra_certificates: true,
                })
            }
            None => {
                let pass = read_passphrase(&config.ca.passphrase)?;
                let ca = load_pair(&config.ca.cert, &config.ca.key, pass.as_deref())?;
                require_rsa(
                    &ca,
                    "ca.key (no [ra] configured, so the CA key must decrypt requests)",
                )?;
                let decrypter = KeyPair {
                    cert_der: ca.cert_der.clone(),
                    key: ca.key.clone(),
                };
                Ok(Self {
                    signer: ca,
                    decrypters: vec![decrypter],
                    has_ra_certificates: false,
                })
            }
        }
    }
}

impl RaIdentity {
    /// The identity after an RA renewal: the new signer and encryption pair, with the
    /// current encryption pair kept as a second decrypter (the grace period lasts until the
    /// next renewal or restart). Older grace decrypters are dropped.
    pub fn renewed(&self, signer: KeyPair, decrypter: KeyPair) -> Self {
        let mut decrypters = vec![decrypter];
        decrypters.extend(self.decrypters.first().cloned());
        Self {
            signer,
            decrypters,
            has_ra_certificates: self.has_ra_certificates,
        }
    }

    /// The current encryption pair (the one GetCACert publishes).
    pub fn current_decrypter(&self) -> Option<&KeyPair> {
        self.decrypters.first()
    }
}

pub(crate) fn require_rsa(pair: &KeyPair, what: &str) -> Result<(), KeyError> {
    if pair.key.kind() == KeyKind::Rsa {
        Ok(())
    } else {
        Err(KeyError::Unsuitable(format!(
            "{what}: SCEP key transport needs an RSA key"
        )))
    }
}
