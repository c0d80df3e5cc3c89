//! CA backends for scepd: the [`CaBackend`] port, the software CA, issuance profiles,
//! serial numbers and CRLs.
//!
//! This crate knows nothing of SCEP or HTTP. The RA (package `scepd`) hands it a PKCS#10
//! request that policy has already approved; the CA re-checks the request against the
//! [`Profile`] (defence in depth) and issues an X.509 certificate (RFC 5280).
//!
//! Structure is built with the `x509-cert`/`der` types; every key operation (key generation,
//! signing, signature verification, randomness) goes through `openssl`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certgen;
mod csr;
mod dn;
mod error;
mod extensions;
pub mod keyops;
pub mod pkcs11;
pub mod profile;
mod pubkey;
mod revocation;
mod signing;
pub mod software;
#[cfg(test)]
mod testutil;
mod time;

use std::time::SystemTime;

pub use certgen::{
    generate_key, issue_ocsp_responder_certificate, issue_ra_certificate,
    issue_tls_server_certificate, self_signed_ca, KeySpec, RaPurpose,
};
pub use csr::verify_csr_signature;
pub use dn::{format_dn, parse_dn};
pub use error::CaError;
pub use keyops::{HashAlg, KeyKind, KeyOpError, PrivateKey, PrivateKeyOps, RsaDecryption};
pub use profile::{KeyType, Profile, RawProfile, SanType};
pub use pubkey::{public_key_from_spki, public_key_from_spki_der, PublicKeyError};
pub use revocation::{RevocationReason, RevokedEntry};
pub use software::SoftwareCa;

/// One issuance request: the CSR (PKCS#10, RFC 2986, DER) that policy approved, the profile
/// to issue under, and the time to treat as "now" (the CA reads no clock of its own).
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    /// The PKCS#10 `CertificationRequest`, DER-encoded.
    pub csr_der: &'a [u8],
    /// The validated issuance profile (the `[issuance]` table of a template).
    pub profile: &'a Profile,
    /// The issuance time; notBefore is this minus the profile's `backdate_seconds`.
    pub now: SystemTime,
}

/// An issued certificate and the facts the RA records and logs about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate, DER-encoded (RFC 5280 §4.1).
    pub der: Vec<u8>,
    /// The serial number: the content octets of the DER INTEGER (positive, minimal).
    /// Print it with [`serial_hex`].
    pub serial: Vec<u8>,
    /// notBefore, as encoded (whole seconds).
    pub not_before: SystemTime,
    /// notAfter, as encoded (whole seconds).
    pub not_after: SystemTime,
    /// The subject as an RFC 4514 string (most significant RDN last), see [`format_dn`].
    pub subject: String,
    /// The subject alternative names, each as `type:value`: `dns:host.example`,
    /// `email:a@example.com`, `upn:user@example.com`, `uri:tag:microsoft.com,...`,
    /// `ip:192.0.2.1`.
    pub sans: Vec<String>,
}

/// The CA port (design section 5). Held by the RA as `Arc<dyn CaBackend>`.
///
/// `issue` is synchronous and CPU-bound: the RA runs it on a blocking pool.
pub trait CaBackend: Send + Sync {
    /// Re-checks the CSR against the profile and issues a certificate.
    fn issue(&self, request: &IssueRequest<'_>) -> Result<Issued, CaError>;

    /// Tells the CA that a certificate was revoked. The software CA keeps no state of its
    /// own (revocations live in the RA's store and reach the CRL through [`CaBackend::crl`]),
    /// so the default does nothing; a backend fronting an external CA forwards the call.
    ///
    /// Returns what became of the revocation at the CA: [`RevokeAtCa::Recorded`] when the
    /// CA's own CRL and OCSP will list it, [`RevokeAtCa::NotForwarded`] with a notice for the
    /// operator when the certificate's issuer is a CA scepd cannot revoke at (an upstream
    /// SCEP CA: SCEP has no revocation operation).
    fn revoke(
        &self,
        _serial: &[u8],
        _reason: RevocationReason,
        _at: SystemTime,
    ) -> Result<RevokeAtCa, CaError> {
        Ok(RevokeAtCa::Recorded)
    }

    /// The CA chain, DER-encoded: the issuing CA certificate first, then its issuers.
    fn chain(&self) -> &[Vec<u8>];

    /// Whether `cert_der` was signed by this CA: by the key of `chain()[0]` by default; a
    /// backend with several CA keys (a rollover's generations) checks each of them.
    fn issued(&self, cert_der: &[u8]) -> bool {
        self.chain()
            .first()
            .is_some_and(|ca_der| signed_by(cert_der, ca_der))
    }

    /// Signs a v2 CRL (RFC 5280 §5) listing `revoked`, with a cRLNumber (§5.2.3) and an
    /// authorityKeyIdentifier (§5.2.1).
    fn crl(
        &self,
        revoked: &[RevokedEntry],
        this_update: SystemTime,
        next_update: SystemTime,
        crl_number: u64,
    ) -> Result<Vec<u8>, CaError>;

    /// Signs the DER `ResponseData` of an OCSP BasicOCSPResponse (RFC 6960 §4.2.1) with the
    /// CA key, so that the CA itself is the OCSP responder (RFC 6960 §4.2.2.2, first case).
    /// Returns the signatureAlgorithm and the signature value. A backend that cannot sign
    /// arbitrary structures (a remote CA) keeps the default, and the RA answers OCSP requests
    /// with `unauthorized`.
    fn sign_ocsp_response(&self, _tbs_response_data: &[u8]) -> Result<CaSignature, CaError> {
        Err(CaError::UnsupportedAlgorithm(
            "this CA backend does not sign OCSP responses".into(),
        ))
    }
}

/// What a CA backend did with a revocation ([`CaBackend::revoke`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeAtCa {
    /// The revocation is in effect at this CA: its CRL and OCSP answers list it.
    Recorded,
    /// The certificate's issuer is a CA scepd cannot revoke at; the revocation is recorded
    /// in scepd only, and the notice tells the operator to revoke at that CA too.
    NotForwarded(String),
}

/// Checks a CSR against a profile exactly as the software CA does before it issues (decode,
/// self-signature, key, subject, extensions, SANs), without issuing: for a backend that
/// forwards the CSR to another CA, so that templates stay a policy check.
pub fn check_request(csr_der: &[u8], profile: &Profile) -> Result<(), CaError> {
    csr::check_csr(csr_der, profile).map(drop)
}

/// A signature made with the CA key: the AlgorithmIdentifier to put beside it and the value
/// (PKCS#1 v1.5 for RSA, a DER Ecdsa-Sig-Value for ECDSA), as a BIT STRING carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSignature {
    /// signatureAlgorithm (sha256WithRSAEncryption, ecdsa-with-SHA256 or ecdsa-with-SHA384).
    pub algorithm: spki::AlgorithmIdentifierOwned,
    /// The signature value.
    pub value: Vec<u8>,
}

/// Entry points for the cargo-fuzz targets in `fuzz/` (design rule 5). Not API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::profile::RawProfile;

    /// Runs the CSR checks (decode, self-signature, profile) on arbitrary bytes under the
    /// default profile; must never panic.
    pub fn check_csr(data: &[u8]) {
        if let Ok(profile) = RawProfile::default().validate("fuzz") {
            let _ = crate::csr::check_csr(data, &profile);
        }
    }

    /// Parses arbitrary text as an RFC 4514 DN and, if it parses, checks that formatting and
    /// parsing again gives the same Name.
    pub fn dn_round_trip(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(name) = crate::parse_dn(text) {
            let formatted = crate::format_dn(&name);
            if let Ok(again) = crate::parse_dn(&formatted) {
                assert_eq!(crate::format_dn(&again), formatted, "DN round trip");
            }
        }
    }
}

/// `ObjectIdentifier::new` on dotted text, after checking that every arc is 1 to 9 decimal
/// digits: const-oid 0.9 accumulates an arc in a `u32` without overflow checks, which panics
/// in builds with overflow checks (found by the `signed_challenge` fuzz target).
pub(crate) fn parse_dotted_oid(text: &str) -> Option<const_oid::ObjectIdentifier> {
    let arcs_fit = text
        .split('.')
        .all(|arc| (1..=9).contains(&arc.len()) && arc.bytes().all(|b| b.is_ascii_digit()));
    if arcs_fit {
        const_oid::ObjectIdentifier::new(text).ok()
    } else {
        None
    }
}

/// Whether the certificate `cert_der` carries a valid signature by the key of the CA
/// certificate `ca_der`. Unreadable input is `false`.
pub fn signed_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok(cert), Ok(ca)) = (
        openssl::x509::X509::from_der(cert_der),
        openssl::x509::X509::from_der(ca_der),
    ) else {
        return false;
    };
    ca.public_key()
        .and_then(|key| cert.verify(&key))
        .unwrap_or(false)
}

/// Formats a serial number as uppercase hex without separators (`"01A2FF..."`): the one
/// format used wherever a serial is printed, logged or stored as text.
pub fn serial_hex(serial: &[u8]) -> String {
    hex::encode_upper(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_is_uppercase_without_separators() {
        assert_eq!(serial_hex(&[0x01, 0xab, 0x00, 0xff]), "01AB00FF");
        assert_eq!(serial_hex(&[]), "");
    }

    #[test]
    fn fuzz_shims_survive_samples() {
        for text in [
            "",
            "=",
            "CN=",
            "CN=\\",
            "CN=\\é",
            "CN=#",
            "CN=#zz",
            "CN=#0500",
            "+",
            "CN=a+",
            ",",
            "CN=\\ a\\ ",
            "2.5.4.3=#020101",
            "CN=a\\0Ab",
            "C=DE+CN=x,O=y",
            "CN=\\,\\+",
        ] {
            fuzzing::dn_round_trip(text.as_bytes());
        }
        let mut data = vec![0u8; 512];
        for length in [0, 1, 2, 3, 16, 100, 512] {
            openssl::rand::rand_bytes(&mut data).ok();
            if let Some(first) = data.first_mut() {
                *first = 0x30;
            }
            fuzzing::check_csr(data.get(..length).unwrap_or_default());
        }
    }
}
