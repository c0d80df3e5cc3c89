//! CA rollover (issue 4 item 7): `scepd ca rollover` prepares the next CA and its RA
//! certificates and records them in `rollover.toml` beside scepd.toml; `serve` reads that file
//! and answers GetNextCACert (RFC 8894 §3.5.3, §4.7) with them.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::keys::{self, KeyError};
use crate::scep::attributes::AttributeWriter;
use crate::scep::signed::{certs_only, sign_message, SignatureStyle, Signing};
use crate::scep::DigestAlg;

/// The file, beside scepd.toml, that records a prepared rollover.
pub const FILE_NAME: &str = "rollover.toml";

/// `rollover.toml`, as `scepd ca rollover` writes it. Paths are relative to its directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollover {
    /// When the next CA takes over (RFC 3339).
    pub switch_at: String,
    /// The next CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// Its key (PEM; encrypted with the current CA key's passphrase, if it has one).
    pub ca_key: PathBuf,
    /// The next RA signing certificate, issued by the next CA.
    pub ra_sign_cert: Option<PathBuf>,
    /// Its key.
    pub ra_sign_key: Option<PathBuf>,
    /// The next RA encryption certificate, issued by the next CA.
    pub ra_encrypt_cert: Option<PathBuf>,
    /// Its key.
    pub ra_encrypt_key: Option<PathBuf>,
}

/// A prepared next CA, as served by GetNextCACert.
pub struct NextCa {
    /// When it takes over.
    pub switch_at: SystemTime,
    /// The next CA certificate, then the next RA signing and encryption certificates (DER).
    pub certs: Vec<Vec<u8>>,
}

/// Why a rollover could not be read or answered.
#[derive(Debug, thiserror::Error)]
pub enum RolloverError {
    /// rollover.toml is unreadable or invalid.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A certificate or key named in it.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The GetNextCACert body could not be built.
    #[error("GetNextCACert: {0}")]
    Encode(String),
}

/// Reads `rollover.toml` beside `config_path`; `Ok(None)` when there is none.
pub fn load_next(config_path: &Path) -> Result<Option<NextCa>, RolloverError> {
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        return Ok(None);
    }
    let invalid = |reason: String| RolloverError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
    let raw: RawRollover = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let switch_at = parse_rfc3339(&raw.switch_at).map_err(invalid)?;
    let mut certs = vec![keys::load_cert_der(&dir.join(&raw.ca_cert))?];
    for cert in [&raw.ra_sign_cert, &raw.ra_encrypt_cert]
        .into_iter()
        .flatten()
    {
        certs.push(keys::load_cert_der(&dir.join(cert))?);
    }
    Ok(Some(NextCa { switch_at, certs }))
}

/// Parses an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

/// The GetNextCACert body (RFC 8894 §4.7): a SignedData signed by the current CA key whose
/// eContent is a degenerate certs-only SignedData of the next CA and RA certificates.
pub fn next_ca_body(
    next: &NextCa,
    current_ca_der: &[u8],
    current_ca_key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    now: SystemTime,
) -> Result<Vec<u8>, RolloverError> {
    let certs: Vec<&[u8]> = next.certs.iter().map(Vec::as_slice).collect();
    let inner = certs_only(&certs).map_err(|e| RolloverError::Encode(e.to_string()))?;
    let signing = Signing {
        cert_der: current_ca_der,
        key: current_ca_key,
        digest: DigestAlg::Sha256,
        style: SignatureStyle::Named,
        signing_time: now,
    };
    sign_message(Some(&inner), AttributeWriter::new(), &signing)
        .map_err(|e| RolloverError::Encode(e.to_string()))
}
