//! One-time passwords as NDES issues them: 16 uppercase hex characters (64 random bits),
//! valid once, for one template, for a limited time, at most `max_outstanding` unused ones
//! per template.
//!
//! Only the SHA-256 digest of a password is stored. The store is keyed by that digest, so a
//! lookup compares digests, never the password itself: the timing of a lookup can reveal at
//! most something about a digest, which does not help to guess a password.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scepd_policy::{Approval, Decision, DenialReason, PolicyInput, PolicyModule};

use crate::config::{ChallengeConfig, OtpConfig, Template};
use crate::store::{OtpIssue, OtpRedeem, Store, StoreError};

/// Length of a password: NDES's 16 hex characters.
pub const PASSWORD_LEN: usize = 16;

/// A freshly issued password: show it once, it is not stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    /// 16 uppercase hex characters.
    pub password: String,
    /// When it stops working.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Minted {
    /// `expires_at` in seconds since the Unix epoch.
    pub fn expires_at_unix(&self) -> u64 {
        self.expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Why no password was issued.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The template has `max_outstanding` unused passwords already (NDES: "The password
    /// cache is full.").
    #[error("the password cache is full: template {template:?} has {max} unused one-time passwords; use or let one expire first")]
    CacheFull {
        /// The template.
        template: String,
        /// Its cap.
        max: usize,
    },
    /// No randomness.
    #[error("no random bytes: {0}")]
    Random(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Issues a password for `template` with its `[challenge]` settings.
pub fn mint(
    store: &dyn Store,
    template: &str,
    settings: &OtpConfig,
    now: SystemTime,
) -> Result<Minted, MintError> {
    let mut random = [0u8; PASSWORD_LEN / 2];
    openssl::rand::rand_bytes(&mut random).map_err(|e| MintError::Random(e.to_string()))?;
    let password = hex::encode_upper(random);
    let expires_at = now + settings.ttl;
    match store.issue_otp(
        template,
        &digest(&password),
        expires_at,
        settings.max_outstanding,
        now,
    )? {
        OtpIssue::Issued => Ok(Minted {
            password,
            expires_at,
        }),
        OtpIssue::CacheFull => Err(MintError::CacheFull {
            template: template.to_owned(),
            max: settings.max_outstanding,
        }),
    }
}

/// The stored form of a password.
fn digest(password: &str) -> [u8; 32] {
    openssl::sha::sha256(password.as_bytes())
}

/// The password as a device may send it: surrounding spaces dropped, hex case ignored
/// (NDES shows it uppercase; someone may type it in lowercase). `None` when it cannot be
/// one of ours, so the store is not even asked.
fn normalise(challenge: &str) -> Option<String> {
    let trimmed = challenge.trim();
    (trimmed.len() == PASSWORD_LEN && trimmed.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| trimmed.to_ascii_uppercase())
}

/// The `otp` verifier of one template. Unlike the verifiers of `policy-module`, it holds the
/// store: the password is redeemed inside [`PolicyModule::evaluate`], atomically, so of two
/// concurrent requests with one password exactly one is approved.
pub struct OtpVerifier {
    store: Arc<dyn Store>,
    template: String,
}

impl OtpVerifier {
    /// The verifier of `template`'s passwords.
    pub fn new(store: Arc<dyn Store>, template: &str) -> Self {
        Self {
            store,
            template: template.to_owned(),
        }
    }
}

impl PolicyModule for OtpVerifier {
    fn name(&self) -> &'static str {
        "otp"
    }

    fn evaluate(&self, input: &PolicyInput<'_>) -> Decision {
        let Some(challenge) = input.challenge.filter(|c| !c.is_empty()) else {
            return Decision::deny(
                DenialReason::MissingChallenge,
                format!("template {:?} requires a one-time password", self.template),
            );
        };
        let Some(password) = normalise(challenge) else {
            return Decision::deny(
                DenialReason::WrongChallenge,
                "the challenge is not a one-time password (16 hex characters)",
            );
        };
        match self
            .store
            .redeem_otp(&self.template, &digest(&password), input.now)
        {
            Ok(OtpRedeem::Redeemed) => Decision::Approve(Approval::unconstrained()),
            Ok(OtpRedeem::Unknown) => Decision::deny(
                DenialReason::WrongChallenge,
                format!(
                    "one-time password unknown for template {:?}: never issued for it, or already used",
                    self.template
                ),
            ),
            Ok(OtpRedeem::Expired) => Decision::deny(
                DenialReason::ExpiredChallenge,
                "one-time password expired (now removed)",
            ),
            Err(e) => Decision::deny(DenialReason::Unavailable, format!("store: {e}")),
        }
    }
}

/// The `otp` settings of every template that uses one-time passwords, by template name.
pub fn settings_by_template(templates: &BTreeMap<String, Template>) -> BTreeMap<String, OtpConfig> {
    templates
        .iter()
        .filter_map(|(name, t)| match &t.challenge {
            ChallengeConfig::Otp(settings) => Some((name.clone(), *settings)),
            _ => None,
        })
        .collect()
}

/// The NDES wording for a password lifetime: "60 minutes".
pub fn ttl_text(ttl: Duration) -> String {
    let minutes = ttl.as_secs() / 60;
    format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use der::Decode;
    use x509_cert::request::CertReq;

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn settings() -> OtpConfig {
        OtpConfig {
            ttl: Duration::from_secs(3600),
            max_outstanding: 2,
        }
    }

    fn csr() -> (Vec<u8>, CertReq) {
        let path = format!(
            "{}/policy-module/tests/data/csr-no-challenge.der",
            env!("CARGO_MANIFEST_DIR")
        );
        let der = std::fs::read(path).unwrap();
        let csr = CertReq::from_der(&der).unwrap();
        (der, csr)
    }

    fn evaluate(verifier: &OtpVerifier, challenge: Option<&str>, now: u64) -> Decision {
        let (der, csr) = csr();
        verifier.evaluate(&PolicyInput {
            template: "devices",
            csr_der: &der,
            csr: &csr,
            challenge,
            transaction_id: "tx",
            signer_der: &[],
            renewal_of: None,
            now: at(now),
        })
    }

    fn reason(decision: Decision) -> DenialReason {
        match decision {
            Decision::Deny(d) => d.reason,
            Decision::Approve(a) => panic!("approved: {a:?}"),
        }
    }

    #[test]
    fn a_minted_password_works_once_in_ndes_shape() {
        let store = Arc::new(MemoryStore::new());
        let minted = mint(&*store, "devices", &settings(), at(T0)).unwrap();
        assert_eq!(minted.password.len(), 16);
        assert!(minted
            .password
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        assert_eq!(minted.expires_at_unix(), T0 + 3600);
        let verifier = OtpVerifier::new(store, "devices");
        let first = evaluate(&verifier, Some(&minted.password), T0 + 1);
        assert_eq!(first, Decision::Approve(Approval::unconstrained()));
        let second = evaluate(&verifier, Some(&minted.password), T0 + 2);
        assert_eq!(reason(second), DenialReason::WrongChallenge);
    }

    #[test]
    fn lowercase_and_spaces_are_accepted() {
        let store = Arc::new(MemoryStore::new());
        let minted = mint(&*store, "devices", &settings(), at(T0)).unwrap();
        let verifier = OtpVerifier::new(store, "devices");
        let typed = format!(" {} ", minted.password.to_ascii_lowercase());
        assert!(matches!(
            evaluate(&verifier, Some(&typed), T0 + 1),
            Decision::Approve(_)
        ));
    }

    #[test]
    fn expired_missing_malformed_and_foreign_passwords_are_denied() {
        let store = Arc::new(MemoryStore::new());
        let minted = mint(&*store, "devices", &settings(), at(T0)).unwrap();
        let other = mint(&*store, "users", &settings(), at(T0)).unwrap();
        let verifier = OtpVerifier::new(store, "devices");
        assert_eq!(
            reason(evaluate(&verifier, None, T0)),
            DenialReason::MissingChallenge
        );
        assert_eq!(
            reason(evaluate(&verifier, Some("not-a-password"), T0)),
            DenialReason::WrongChallenge
        );
        assert_eq!(
            reason(evaluate(&verifier, Some(&other.password), T0 + 1)),
            DenialReason::WrongChallenge
        );
        assert_eq!(
            reason(evaluate(&verifier, Some(&minted.password), T0 + 3600)),
            DenialReason::ExpiredChallenge
        );
    }

    #[test]
    fn the_cap_is_reported_and_detail_never_holds_the_password() {
        let store = Arc::new(MemoryStore::new());
        let a = mint(&*store, "devices", &settings(), at(T0)).unwrap();
        mint(&*store, "devices", &settings(), at(T0)).unwrap();
        let full = mint(&*store, "devices", &settings(), at(T0));
        assert!(matches!(full, Err(MintError::CacheFull { max: 2, .. })));
        let verifier = OtpVerifier::new(store, "devices");
        evaluate(&verifier, Some(&a.password), T0 + 1);
        let Decision::Deny(denial) = evaluate(&verifier, Some(&a.password), T0 + 2) else {
            panic!("reuse approved");
        };
        assert!(!denial.detail.contains(&a.password));
        assert!(!format!("{a:?}").contains(&a.password));
    }

    #[test]
    fn ttl_reads_as_ndes_writes_it() {
        assert_eq!(ttl_text(Duration::from_secs(3600)), "60 minutes");
        assert_eq!(ttl_text(Duration::from_secs(60)), "1 minute");
    }
}
