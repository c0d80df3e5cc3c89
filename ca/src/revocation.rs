//! Revocation reasons and CRL entries (RFC 5280 §5.3.1).

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use x509_cert::ext::pkix::crl::CrlReason;

use crate::CaError;

/// CRLReason (RFC 5280 §5.3.1):
///
/// ```text
/// CRLReason ::= ENUMERATED {
///      unspecified             (0),
///      keyCompromise           (1),
///      cACompromise            (2),
///      affiliationChanged      (3),
///      superseded              (4),
///      cessationOfOperation    (5),
///      certificateHold         (6),
///           -- value 7 is not used
///      removeFromCRL           (8),
///      privilegeWithdrawn      (9),
///      aACompromise           (10) }
/// ```
///
/// `Display` prints the RFC name; `FromStr` parses it case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// unspecified (0).
    Unspecified,
    /// keyCompromise (1).
    KeyCompromise,
    /// cACompromise (2).
    CaCompromise,
    /// affiliationChanged (3).
    AffiliationChanged,
    /// superseded (4).
    Superseded,
    /// cessationOfOperation (5).
    CessationOfOperation,
    /// certificateHold (6).
    CertificateHold,
    /// removeFromCRL (8).
    RemoveFromCrl,
    /// privilegeWithdrawn (9).
    PrivilegeWithdrawn,
    /// aACompromise (10).
    AaCompromise,
}

const REASONS: [(RevocationReason, &str, u8); 10] = [
    (RevocationReason::Unspecified, "unspecified", 0),
    (RevocationReason::KeyCompromise, "keyCompromise", 1),
    (RevocationReason::CaCompromise, "cACompromise", 2),
    (
        RevocationReason::AffiliationChanged,
        "affiliationChanged",
        3,
    ),
    (RevocationReason::Superseded, "superseded", 4),
    (
        RevocationReason::CessationOfOperation,
        "cessationOfOperation",
        5,
    ),
    (RevocationReason::CertificateHold, "certificateHold", 6),
    (RevocationReason::RemoveFromCrl, "removeFromCRL", 8),
    (
        RevocationReason::PrivilegeWithdrawn,
        "privilegeWithdrawn",
        9,
    ),
    (RevocationReason::AaCompromise, "aACompromise", 10),
];

impl RevocationReason {
    /// The RFC 5280 name, e.g. `"keyCompromise"`.
    pub fn name(self) -> &'static str {
        REASONS
            .iter()
            .find(|(reason, _, _)| *reason == self)
            .map_or("unspecified", |(_, name, _)| name)
    }

    /// The ENUMERATED value (0 to 10, never 7).
    pub fn code(self) -> u8 {
        REASONS
            .iter()
            .find(|(reason, _, _)| *reason == self)
            .map_or(0, |(_, _, code)| *code)
    }

    /// The reason for an ENUMERATED value, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        REASONS
            .iter()
            .find(|(_, _, c)| *c == code)
            .map(|(reason, _, _)| *reason)
    }

    /// The `x509-cert` CRLReason value (for CRL entries and OCSP RevokedInfo).
    pub fn to_crl_reason(self) -> CrlReason {
        match self {
            Self::Unspecified => CrlReason::Unspecified,
            Self::KeyCompromise => CrlReason::KeyCompromise,
            Self::CaCompromise => CrlReason::CaCompromise,
            Self::AffiliationChanged => CrlReason::AffiliationChanged,
            Self::Superseded => CrlReason::Superseded,
            Self::CessationOfOperation => CrlReason::CessationOfOperation,
            Self::CertificateHold => CrlReason::CertificateHold,
            Self::RemoveFromCrl => CrlReason::RemoveFromCRL,
            Self::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
            Self::AaCompromise => CrlReason::AaCompromise,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RevocationReason {
    type Err = CaError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        REASONS
            .iter()
            .find(|(_, name, _)| name.eq_ignore_ascii_case(text.trim()))
            .map(|(reason, _, _)| *reason)
            .ok_or_else(|| CaError::UnknownRevocationReason(text.to_owned()))
    }
}

/// One revoked certificate to list in a CRL (RFC 5280 §5.1.2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The serial number's content octets, as in [`crate::Issued::serial`].
    pub serial: Vec<u8>,
    /// The revocation date.
    pub at: SystemTime,
    /// The reason; `unspecified` is listed without a reasonCode (RFC 5280 §5.3.1 says the
    /// code SHOULD then be absent).
    pub reason: RevocationReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for (reason, name, code) in REASONS {
            assert_eq!(reason.to_string(), name);
            assert_eq!(
                name.to_uppercase().parse::<RevocationReason>().ok(),
                Some(reason)
            );
            assert_eq!(RevocationReason::from_code(code), Some(reason));
            assert_eq!(reason.code(), code);
            assert_eq!(reason.to_crl_reason() as u8, code);
        }
        assert!("bogus".parse::<RevocationReason>().is_err());
        assert_eq!(RevocationReason::from_code(7), None);
    }
}
