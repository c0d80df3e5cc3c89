//! The result of a policy evaluation: approval with constraints, or denial with a reason.

use const_oid::ObjectIdentifier;
use std::fmt;
use std::time::SystemTime;
use x509_cert::ext::pkix::KeyUsage;

/// What a [`crate::PolicyModule`] decided about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Issue, within the constraints the approval carries.
    Approve(Approval),
    /// Refuse; the RA answers FAILURE with failInfo badRequest.
    Deny(Denial),
}

impl Decision {
    /// Shorthand for a denial.
    pub fn deny(reason: DenialReason, detail: impl Into<String>) -> Self {
        Decision::Deny(Denial::new(reason, detail))
    }
}

/// An approval: what the challenge granted, and whether it must be redeemed first.
///
/// `#[non_exhaustive]` so that later fields break no verifier: build one with
/// [`Approval::unconstrained`] or [`Approval::new`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Approval {
    /// Limits the issued certificate must respect; empty for a static secret.
    pub constraints: Constraints,
    /// A one-time challenge the RA must redeem atomically in its store before issuing;
    /// if the redemption fails (already used), the request is denied as
    /// [`DenialReason::ReusedChallenge`].
    pub redeem: Option<OneTimeRedemption>,
}

impl Approval {
    /// An approval that grants no constraints and needs no redemption.
    pub fn unconstrained() -> Self {
        Self::default()
    }

    /// An approval with the given constraints and optional one-time redemption.
    pub fn new(constraints: Constraints, redeem: Option<OneTimeRedemption>) -> Self {
        Self {
            constraints,
            redeem,
        }
    }
}

/// What a challenge allows the certificate to contain. Every field is optional; `None`
/// means "not constrained by the challenge" (the template's profile still applies).
///
/// `#[non_exhaustive]`: build one with `Constraints::default()` and set fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Constraints {
    /// The subject the certificate must have, as an RFC 4514 string.
    pub subject: Option<String>,
    /// The subject alternative names the certificate must have, in the form
    /// `type:value` (`dns:host.example`, `email:a@example`, `upn:a@example`, `uri:...`,
    /// `ip:192.0.2.1`).
    pub sans: Option<Vec<String>>,
    /// The key usage the certificate must have.
    pub key_usage: Option<KeyUsage>,
    /// The extended key usages the certificate must have.
    pub eku: Option<Vec<ObjectIdentifier>>,
    /// The minimum public-key size, in bits (RSA modulus or EC field size).
    pub min_key_bits: Option<u32>,
    /// The latest notAfter the certificate may have.
    pub not_after: Option<SystemTime>,
}

/// A one-time challenge to redeem in the store before issuing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeRedemption {
    /// The store key of the challenge (e.g. a digest of its one-time id); never the secret.
    pub id: Vec<u8>,
    /// When the store may forget the redemption: after the challenge itself has expired,
    /// so a forgotten id can never be presented again successfully.
    pub forget_after: SystemTime,
}

/// A refusal, with a reason for the metrics and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why the request was refused.
    pub reason: DenialReason,
    /// Detail for the log (with the transactionID); never contains the secret.
    pub detail: String,
}

impl Denial {
    /// A denial with the given reason and log detail.
    pub fn new(reason: DenialReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// Why a request was denied. All map to failInfo badRequest on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenialReason {
    /// The template needs a challenge and the CSR has none.
    MissingChallenge,
    /// The challenge is not one this module accepts.
    WrongChallenge,
    /// The challenge was valid once but has expired.
    ExpiredChallenge,
    /// A one-time challenge was already used.
    ReusedChallenge,
    /// The CSR's subject or SANs differ from what the challenge allows.
    NameMismatch,
    /// The CSR breaks a rule of the template's profile.
    ProfileRule,
    /// The module could not decide (e.g. a remote verifier is unreachable).
    Unavailable,
    /// Signed challenge: outside its `nbf`..`exp` window (either side, with the skew).
    ChallengeExpired,
    /// Signed challenge: the envelope could not be opened with any of our keys. Every
    /// envelope failure is this one reason (no padding oracle).
    ChallengeDecryptionError,
    /// Signed challenge: not base64, not the expected CMS layering, or claims that do not
    /// follow `docs/challenge-format.md`.
    ChallengeDeserializationError,
    /// Signed challenge: bad signature or digest, disallowed algorithm, or a signer that
    /// does not chain to a trusted MDM certificate.
    SignatureValidationFailed,
    /// Signed challenge: the CSR's subject differs from the claimed one.
    SubjectNameMismatch,
    /// Signed challenge: the CSR has an empty subject and the claim names one.
    SubjectNameMissing,
    /// Signed challenge: the CSR's subject alternative names differ from the claimed ones.
    SubjectAltNameMismatch,
    /// Signed challenge: the CSR requests no subject alternative names, the claim lists some.
    SubjectAltNameMissing,
    /// Signed challenge: the CSR's requested key usage differs from the claimed one.
    KeyUsageMismatch,
    /// Signed challenge: the CSR's key is smaller than claimed or of a type not claimed.
    KeyLengthMismatch,
    /// Signed challenge: the CSR's requested extended key usages differ from the claimed ones.
    EnhancedKeyUsageMismatch,
    /// Signed challenge: its one-time id was already redeemed. Verifiers may return it; the
    /// RA reports a failed redemption as [`DenialReason::ReusedChallenge`], which means the
    /// same thing.
    ChallengeReplayed,
    /// Signed challenge: minted for another template than the one the request arrived on.
    TemplateMismatch,
}

impl DenialReason {
    /// Stable name, for logs and metrics labels: snake_case for the general reasons,
    /// Intune's CamelCase result code for the signed-challenge reasons (`"SubjectNameMismatch"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::MissingChallenge => "missing_challenge",
            DenialReason::WrongChallenge => "wrong_challenge",
            DenialReason::ExpiredChallenge => "expired_challenge",
            DenialReason::ReusedChallenge => "reused_challenge",
            DenialReason::NameMismatch => "name_mismatch",
            DenialReason::ProfileRule => "profile_rule",
            DenialReason::Unavailable => "unavailable",
            // The signed-challenge reasons carry Intune's names (its validation result codes),
            // so dashboards built for the Intune connector read the same words.
            DenialReason::ChallengeExpired => "ChallengeExpired",
            DenialReason::ChallengeDecryptionError => "ChallengeDecryptionError",
            DenialReason::ChallengeDeserializationError => "ChallengeDeserializationError",
            DenialReason::SignatureValidationFailed => "SignatureValidationFailed",
            DenialReason::SubjectNameMismatch => "SubjectNameMismatch",
            DenialReason::SubjectNameMissing => "SubjectNameMissing",
            DenialReason::SubjectAltNameMismatch => "SubjectAltNameMismatch",
            DenialReason::SubjectAltNameMissing => "SubjectAltNameMissing",
            DenialReason::KeyUsageMismatch => "KeyUsageMismatch",
            DenialReason::KeyLengthMismatch => "KeyLengthMismatch",
            DenialReason::EnhancedKeyUsageMismatch => "EnhancedKeyUsageMismatch",
            DenialReason::ChallengeReplayed => "ChallengeReplayed",
            DenialReason::TemplateMismatch => "TemplateMismatch",
        }
    }
}

impl fmt::Display for DenialReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_name() {
        let all = [
            DenialReason::MissingChallenge,
            DenialReason::WrongChallenge,
            DenialReason::ExpiredChallenge,
            DenialReason::ReusedChallenge,
            DenialReason::NameMismatch,
            DenialReason::ProfileRule,
            DenialReason::Unavailable,
            DenialReason::ChallengeExpired,
            DenialReason::ChallengeDecryptionError,
            DenialReason::ChallengeDeserializationError,
            DenialReason::SignatureValidationFailed,
            DenialReason::SubjectNameMismatch,
            DenialReason::SubjectNameMissing,
            DenialReason::SubjectAltNameMismatch,
            DenialReason::SubjectAltNameMissing,
            DenialReason::KeyUsageMismatch,
            DenialReason::KeyLengthMismatch,
            DenialReason::EnhancedKeyUsageMismatch,
            DenialReason::ChallengeReplayed,
            DenialReason::TemplateMismatch,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.to_string()).collect();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn denial_displays_reason_and_detail() {
        let d = Denial::new(DenialReason::WrongChallenge, "template devices");
        assert_eq!(d.to_string(), "wrong_challenge: template devices");
    }

    #[test]
    fn unconstrained_approval_is_empty() {
        let a = Approval::unconstrained();
        assert_eq!(a.constraints, Constraints::default());
        assert!(a.redeem.is_none());
    }
}
