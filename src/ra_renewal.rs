//! RA certificates renew themselves (issue 4 item 7): when the RA signing or encryption
//! certificate expires within `[ra] renew_before_days`, both get new RSA-2048 keys and new
//! certificates from the software CA, with the same subjects. The files are replaced
//! atomically (so a restart keeps them) and the running server switches over without a lock
//! on the request path. The previous encryption key stays as a grace decrypter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::Decode;
use openssl::pkey::{PKey, Private};
use scepd_ca::certgen::{self, KeySpec, RaPurpose};
use scepd_ca::SoftwareCa;

use crate::app::App;
use crate::config::RaConfig;
use crate::keys::{self, KeyPair};
use crate::rollover::Generations;

/// Validity of RA certificates, at `init` and at each renewal.
pub const RA_VALIDITY_DAYS: u32 = 730;

/// The renewal window when `[ra] renew_before_days` is not set.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// How often a running server checks whether the RA certificates are due (and once at
/// start-up).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Why a renewal did not happen. The running identity is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum RenewalError {
    /// An RA certificate in service could not be read.
    #[error("RA certificate unreadable: {0}")]
    Certificate(String),
    /// Key generation or issuance failed.
    #[error("RA certificate not issued: {0}")]
    Issue(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The new identity could not be put into service.
    #[error("renewed RA identity not in service: {0}")]
    Swap(String),
}

/// Whether `cert_der` expires before `now + window` (an expired certificate does too).
pub fn expires_within(
    cert_der: &[u8],
    now: SystemTime,
    window: Duration,
) -> Result<bool, RenewalError> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| RenewalError::Certificate(e.to_string()))?;
    let not_after = cert.tbs_certificate.validity.not_after.to_system_time();
    Ok(not_after < now + window)
}

/// Renews the RA certificates of the CA generation in charge at `now` (from that
/// generation's CA, into its files) when either is due; returns whether it did. A setup
/// without RA certificates (the CA key decrypts and signs) has nothing to renew.
pub fn renew_in_charge_if_due(
    app: &App,
    generations: &Generations,
    now: SystemTime,
) -> Result<bool, RenewalError> {
    let generation = generations.active_at(now);
    match &generation.ra_files {
        Some(files) => renew_if_due(app, &generation.ca, files, now),
        None => Ok(false),
    }
}

/// Renews both RA certificates of the default CA when either is due; returns whether it did.
pub fn renew_if_due(
    app: &App,
    ca: &SoftwareCa,
    config: &RaConfig,
    now: SystemTime,
) -> Result<bool, RenewalError> {
    renew_identity_if_due(&app.enroller().ra(), ca, config, now, |ra| {
        app.replace_ra(ra)
    })
}

/// The same for the RA certificates of the further CA `name` (`[cas.<name>.ra]`).
pub fn renew_extra_if_due(
    app: &App,
    name: &str,
    ca: &SoftwareCa,
    config: &RaConfig,
    now: SystemTime,
) -> Result<bool, RenewalError> {
    let enroller = app
        .extra_enroller(name)
        .ok_or_else(|| RenewalError::Swap(format!("no CA named {name}")))?;
    renew_identity_if_due(&enroller.ra(), ca, config, now, |ra| {
        app.replace_extra_ra(name, ra)
    })
}

fn renew_identity_if_due(
    current: &crate::keys::RaIdentity,
    ca: &SoftwareCa,
    config: &RaConfig,
    now: SystemTime,
    put_in_service: impl FnOnce(crate::keys::RaIdentity) -> Result<(), crate::app::AppError>,
) -> Result<bool, RenewalError> {
    let decrypter = current
        .current_decrypter()
        .ok_or_else(|| RenewalError::Certificate("no encryption certificate".into()))?;
    let due = expires_within(&current.signer.cert_der, now, config.renew_before)?
        || expires_within(&decrypter.cert_der, now, config.renew_before)?;
    if !due {
        return Ok(false);
    }
    let signer = reissue(ca, &current.signer, RaPurpose::Signing)?;
    let encrypter = reissue(ca, decrypter, RaPurpose::Encryption)?;
    // Kept so that a restart keeps the grace decryption key too (see `previous_pair`). A key
    // in a PKCS#11 token keeps serving under its new certificate: no grace pair to keep.
    if decrypter.key.as_openssl().is_some() {
        let (previous_cert, previous_key) = previous_paths(config);
        write_pair(&previous_cert, &previous_key, decrypter)?;
    }
    write_pair(&config.sign_cert, &config.sign_key, &signer)?;
    write_pair(&config.encrypt_cert, &config.encrypt_key, &encrypter)?;
    put_in_service(current.renewed(signer, encrypter))
        .map_err(|e| RenewalError::Swap(e.to_string()))?;
    Ok(true)
}

/// Where a renewal keeps the encryption pair it replaced: beside the current one, with
/// `.previous` appended to each file name.
pub fn previous_paths(config: &RaConfig) -> (PathBuf, PathBuf) {
    let previous = |path: &Path| {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".previous");
        path.with_file_name(name)
    };
    (
        previous(&config.encrypt_cert),
        previous(&config.encrypt_key),
    )
}

/// The encryption pair the last renewal replaced, while its certificate is still valid at
/// `now`: a server started after a renewal keeps it as a grace decryption key. A missing or
/// unreadable pair is no grace key (logged when unreadable).
pub fn previous_pair(config: &RaConfig, now: SystemTime) -> Option<KeyPair> {
    let (cert, key) = previous_paths(config);
    if !cert.exists() {
        return None;
    }
    let pair = keys::load_pair(&cert, &key, None)
        .map_err(|e| tracing::warn!(error = %e, "previous RA encryption key not loaded"))
        .ok()?;
    match expires_within(&pair.cert_der, now, Duration::ZERO) {
        Ok(false) => Some(pair),
        _ => None,
    }
}

/// A new key and a certificate for it with the subject of `old`'s certificate. A key in a
/// PKCS#11 token is kept (it cannot be written to a file) and gets the new certificate.
fn reissue(ca: &SoftwareCa, old: &KeyPair, purpose: RaPurpose) -> Result<KeyPair, RenewalError> {
    let old_cert = x509_cert::Certificate::from_der(&old.cert_der)
        .map_err(|e| RenewalError::Certificate(e.to_string()))?;
    let subject = old_cert.tbs_certificate.subject.to_string();
    let issue = |public: &openssl::pkey::PKeyRef<openssl::pkey::Public>| {
        certgen::issue_ra_certificate(ca, public, &subject, purpose, RA_VALIDITY_DAYS)
            .map_err(|e| RenewalError::Issue(e.to_string()))
    };
    if old.key.as_openssl().is_none() {
        let public = old
            .key
            .public_key()
            .map_err(|e| RenewalError::Issue(e.to_string()))?;
        return Ok(KeyPair {
            cert_der: issue(&public)?,
            key: old.key.clone(),
        });
    }
    let key =
        certgen::generate_key(KeySpec::Rsa2048).map_err(|e| RenewalError::Issue(e.to_string()))?;
    let public = key
        .public_key_to_der()
        .and_then(|der| openssl::pkey::PKey::public_key_from_der(&der))
        .map_err(|e| RenewalError::Issue(e.to_string()))?;
    Ok(KeyPair {
        cert_der: issue(&public)?,
        key: key.into(),
    })
}

/// Writes the key (0600) and then the certificate, each through a temporary file and a
/// rename, so that neither file is ever seen half-written.
fn write_pair(cert_path: &Path, key_path: &Path, pair: &KeyPair) -> Result<(), RenewalError> {
    let cert_pem = openssl::x509::X509::from_der(&pair.cert_der)
        .and_then(|c| c.to_pem())
        .map_err(|e| RenewalError::Issue(e.to_string()))?;
    // A key in a PKCS#11 token stays there: only its certificate is written.
    if let Some(key) = pair.key.as_openssl() {
        write_atomically(key_path, &key_pem(key)?, 0o600)?;
    }
    write_atomically(cert_path, &cert_pem, 0o644)
}

fn key_pem(key: &PKey<Private>) -> Result<Vec<u8>, RenewalError> {
    key.private_key_to_pem_pkcs8()
        .map_err(|e| RenewalError::Issue(e.to_string()))
}

/// Writes `bytes` to a temporary file beside `path` (with `mode`), syncs it and renames it
/// over `path`: readers see the old file or the new one, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RenewalError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let temp = temp_path(path);
    let failed = |source| RenewalError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(failed)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temp, path).map_err(failed)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".renewing");
    path.with_file_name(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cert_valid_for(days: u32) -> Vec<u8> {
        let key = certgen::generate_key(KeySpec::Rsa2048).unwrap();
        certgen::self_signed_ca(&key, "CN=t", days).unwrap()
    }

    #[test]
    fn a_certificate_is_due_only_inside_the_window() {
        let der = cert_valid_for(10);
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        assert!(!expires_within(&der, now, 9 * day).unwrap());
        assert!(expires_within(&der, now, 11 * day).unwrap());
        assert!(expires_within(&der, now + 20 * day, Duration::ZERO).unwrap());
        assert!(expires_within(b"not a certificate", now, day).is_err());
    }

    #[test]
    fn files_are_replaced_whole_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ra.key");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!temp_path(&path).exists());
    }
}
