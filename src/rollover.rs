//! CA rollover (issue 4 item 7): `scepd ca rollover` prepares the next CA and its RA
//! certificates and records them in `rollover.toml` beside scepd.toml; `serve` reads that file
//! and answers GetNextCACert (RFC 8894 §3.5.3, §4.7) with them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use scepd_ca::{
    CaBackend, CaError, CaSignature, IssueRequest, Issued, RevocationReason, RevokedEntry,
    SoftwareCa,
};
use serde::Deserialize;

use crate::keys::{self, KeyError, KeyPair};
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
    /// The next CA.
    pub ca: Arc<SoftwareCa>,
    /// The next RA signing and encryption pairs; without `[ra]`, the next CA pair for both.
    pub ra: (KeyPair, KeyPair),
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
    /// The next CA cannot be used.
    #[error("next CA: {0}")]
    Ca(#[from] CaError),
    /// The GetNextCACert body could not be built.
    #[error("GetNextCACert: {0}")]
    Encode(String),
}

/// Reads `rollover.toml` beside `config_path`; `Ok(None)` when there is none. The next CA key
/// is decrypted with `passphrase` (the current CA key's).
pub fn load_next(
    config_path: &Path,
    passphrase: Option<&[u8]>,
) -> Result<Option<NextCa>, RolloverError> {
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
    let ca_pair = keys::load_pair(&dir.join(&raw.ca_cert), &dir.join(&raw.ca_key), passphrase)?;
    let ca = SoftwareCa::from_parts(ca_pair.cert_der.clone(), ca_pair.key.clone(), Vec::new())?;
    let ra = match (
        &raw.ra_sign_cert,
        &raw.ra_sign_key,
        &raw.ra_encrypt_cert,
        &raw.ra_encrypt_key,
    ) {
        (Some(sc), Some(sk), Some(ec), Some(ek)) => (
            keys::load_pair(&dir.join(sc), &dir.join(sk), None)?,
            keys::load_pair(&dir.join(ec), &dir.join(ek), None)?,
        ),
        (None, None, None, None) => (ca_pair.clone(), ca_pair.clone()),
        _ => return Err(invalid("the ra_* entries go together".into())),
    };
    let mut certs = vec![ca_pair.cert_der.clone()];
    if raw.ra_sign_cert.is_some() {
        certs.push(ra.0.cert_der.clone());
        certs.push(ra.1.cert_der.clone());
    }
    Ok(Some(NextCa {
        switch_at,
        certs,
        ca: Arc::new(ca),
        ra,
    }))
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

/// The CA port during a rollover: the current CA until `switch_at`, the next one from then
/// on, decided by the clock at each call. Enroller, CRL publisher and OCSP responder hold it
/// as their `CaBackend`, so the running server issues with the next CA at `switch_at`.
pub struct RollingCa {
    current: Arc<SoftwareCa>,
    next: Arc<SoftwareCa>,
    switch_at: SystemTime,
}

impl RollingCa {
    /// Rolls from `current` to `next` at `switch_at`.
    pub fn new(current: Arc<SoftwareCa>, next: Arc<SoftwareCa>, switch_at: SystemTime) -> Self {
        Self {
            current,
            next,
            switch_at,
        }
    }

    /// The CA in charge at `now`.
    pub fn active_at(&self, now: SystemTime) -> &Arc<SoftwareCa> {
        if now >= self.switch_at {
            &self.next
        } else {
            &self.current
        }
    }

    fn active(&self) -> &SoftwareCa {
        self.active_at(SystemTime::now())
    }
}

impl CaBackend for RollingCa {
    fn issue(&self, request: &IssueRequest<'_>) -> Result<Issued, CaError> {
        self.active().issue(request)
    }

    fn revoke(
        &self,
        serial: &[u8],
        reason: RevocationReason,
        at: SystemTime,
    ) -> Result<(), CaError> {
        self.active().revoke(serial, reason, at)
    }

    fn chain(&self) -> &[Vec<u8>] {
        self.active().chain()
    }

    fn crl(
        &self,
        revoked: &[RevokedEntry],
        this_update: SystemTime,
        next_update: SystemTime,
        crl_number: u64,
    ) -> Result<Vec<u8>, CaError> {
        self.active()
            .crl(revoked, this_update, next_update, crl_number)
    }

    fn sign_ocsp_response(&self, tbs: &[u8]) -> Result<CaSignature, CaError> {
        self.active().sign_ocsp_response(tbs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn software_ca(cn: &str) -> Arc<SoftwareCa> {
        let key = scepd_ca::generate_key(scepd_ca::KeySpec::P256).unwrap();
        let cert = scepd_ca::self_signed_ca(&key, cn, 30).unwrap();
        Arc::new(SoftwareCa::from_parts(cert, key, Vec::new()).unwrap())
    }

    #[test]
    fn the_rolling_ca_hands_over_at_the_switch_time() {
        let (current, next) = (software_ca("CN=current"), software_ca("CN=next"));
        let switch_at = SystemTime::now() + Duration::from_secs(3600);
        let rolling = RollingCa::new(Arc::clone(&current), Arc::clone(&next), switch_at);
        let before = switch_at - Duration::from_secs(1);
        assert!(Arc::ptr_eq(rolling.active_at(before), &current));
        assert!(Arc::ptr_eq(rolling.active_at(switch_at), &next));
        assert_eq!(rolling.chain(), current.chain(), "now is before the switch");
    }

    #[test]
    fn switch_times_are_rfc3339() {
        let at = parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_893_456_000);
        assert!(parse_rfc3339("tomorrow").is_err());
        assert!(parse_rfc3339("2030-01-01").is_err());
    }
}
