//! The one error enum of the crate.

use std::path::PathBuf;

/// Everything that can go wrong in `scepd-ca`.
///
/// The RA maps these to SCEP failInfo values in one place (design section 4):
/// [`CaError::BadCsrSignature`] is badMessageCheck, [`CaError::UnsupportedAlgorithm`] is
/// badAlg, [`CaError::MalformedCsr`] and [`CaError::ProfileViolation`] are badRequest, the
/// rest are CA failures (badRequest with a reference in the log).
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CSR could not be decoded as a DER PKCS#10 request (RFC 2986).
    #[error("malformed CSR: {0}")]
    MalformedCsr(String),
    /// The CSR's self-signature does not verify with its own public key.
    #[error("the CSR's signature does not verify")]
    BadCsrSignature,
    /// A signature or key algorithm this CA does not accept.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The CSR asks for something the profile does not allow.
    #[error("refused by profile {profile:?}: {reason}")]
    ProfileViolation {
        /// The profile's name.
        profile: String,
        /// What was refused, for the log.
        reason: String,
    },
    /// An RFC 4514 distinguished name that cannot be parsed or encoded.
    #[error("invalid distinguished name: {0}")]
    InvalidName(String),
    /// The CA certificate, key or chain is unusable (mismatched key, expired, unreadable).
    #[error("CA configuration: {0}")]
    CaConfig(String),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A revocation reason name that is not one of RFC 5280 §5.3.1.
    #[error("unknown revocation reason {0:?}")]
    UnknownRevocationReason(String),
    /// A time that cannot be represented in a certificate (before 1970, after 9999).
    #[error("time out of range: {0}")]
    TimeOutOfRange(String),
    /// An OpenSSL operation failed (key generation, signing, PEM parsing).
    #[error("openssl: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    /// The CA key could not sign (a PKCS#11 token that is away, a key that cannot do it).
    #[error("CA key: {0}")]
    Key(#[from] crate::keyops::KeyOpError),
    /// Encoding a structure we built ourselves failed (never caused by client input; client
    /// input that fails to decode is [`CaError::MalformedCsr`]).
    #[error("DER encoding: {0}")]
    Encoding(#[from] der::Error),
}
