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
}

impl DenialReason {
    /// Stable snake_case name, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::MissingChallenge => "missing_challenge",
            DenialReason::WrongChallenge => "wrong_challenge",
            DenialReason::ExpiredChallenge => "expired_challenge",
            DenialReason::ReusedChallenge => "reused_challenge",
            DenialReason::NameMismatch => "name_mismatch",
            DenialReason::ProfileRule => "profile_rule",
            DenialReason::Unavailable => "unavailable",
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
