//! Policy modules for scepd: decide whether an enrollment request may be issued.
//!
//! A [`PolicyModule`] looks at one request ([`PolicyInput`]) and returns a [`Decision`]:
//! an [`Approval`] carrying the [`Constraints`] the challenge granted (and, for a one-time
//! challenge, the [`OneTimeRedemption`] the RA must redeem in its store before issuing), or a
//! [`Denial`] with a [`DenialReason`].
//!
//! This crate does no I/O and never reads the system clock: time is an input
//! ([`PolicyInput::now`]). Verifiers that need the network (an Intune or webhook verifier) live
//! in the root crate and implement the same trait.
#![forbid(unsafe_code)]

mod allow_all;
mod challenge;
mod decision;
pub mod signed_challenge;
mod static_secret;

pub use allow_all::AllowAll;
pub use challenge::{challenge_password, ChallengeError, CHALLENGE_PASSWORD};
pub use decision::{Approval, Constraints, Decision, Denial, DenialReason, OneTimeRedemption};
pub use signed_challenge::{
    mint_challenge, random_challenge_id, verify_signed_challenge, ChallengeKeys, Claims,
    DecryptionKey, MintError, MintOptions, San, SignedChallenge, SignedChallengeTrust, StaticKeys,
    TrustedSigner, VerifiedClaims,
};
pub use static_secret::StaticSecret;

use std::time::SystemTime;
use x509_cert::request::CertReq;

/// Everything a policy module may look at to decide on one enrollment request.
///
/// Built by the RA after the pkiMessage was verified and opened (enrollment steps 3 and 4),
/// so every field is authentic as far as SCEP goes; the challenge is what the CSR carried.
#[derive(Clone, Copy)]
pub struct PolicyInput<'a> {
    /// Name of the template the request was routed to.
    pub template: &'a str,
    /// The whole PKCS#10 request, exactly as received (signed claims may bind its digest).
    pub csr_der: &'a [u8],
    /// The decoded PKCS#10 request.
    pub csr: &'a CertReq,
    /// The challengePassword from the CSR, if any (see [`challenge_password`]).
    pub challenge: Option<&'a str>,
    /// The SCEP transactionID of the request.
    pub transaction_id: &'a str,
    /// DER of the certificate that signed the pkiMessage.
    pub signer_der: &'a [u8],
    /// For a RenewalReq: DER of the certificate it was signed with, already chain-validated
    /// by the RA.
    pub renewal_of: Option<&'a [u8]>,
    /// The time of the decision; modules never read the clock themselves.
    pub now: SystemTime,
}

// Hand-written so that logging an input can never print the challenge.
impl std::fmt::Debug for PolicyInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyInput")
            .field("template", &self.template)
            .field("csr_der_len", &self.csr_der.len())
            .field("challenge", &self.challenge.map(|_| "<redacted>"))
            .field("transaction_id", &self.transaction_id)
            .field("signer_der_len", &self.signer_der.len())
            .field("renewal", &self.renewal_of.is_some())
            .field("now", &self.now)
            .finish()
    }
}

/// A verifier that approves or denies enrollment requests.
///
/// Held by the RA as `Arc<dyn PolicyModule>`, one per template. `evaluate` must be pure:
/// no I/O, no clock, no side effects. A one-time challenge is not redeemed here: the module
/// returns an [`OneTimeRedemption`] and the RA redeems it atomically in its store.
pub trait PolicyModule: Send + Sync {
    /// Short stable name for logs and configuration, e.g. `"static-secret"`.
    fn name(&self) -> &'static str;

    /// Decide on one request.
    fn evaluate(&self, input: &PolicyInput<'_>) -> Decision;
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::PolicyInput;
    use der::Decode;
    use std::time::{Duration, SystemTime};
    use x509_cert::request::CertReq;

    /// A fixture from `tests/data/` (see its README).
    pub fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    pub fn fixture_csr(name: &str) -> (Vec<u8>, CertReq) {
        let der = fixture(name);
        let csr = CertReq::from_der(&der).expect("fixture decodes");
        (der, csr)
    }

    pub fn input<'a>(
        der: &'a [u8],
        csr: &'a CertReq,
        challenge: Option<&'a str>,
    ) -> PolicyInput<'a> {
        PolicyInput {
            template: "devices",
            csr_der: der,
            csr,
            challenge,
            transaction_id: "tx-1",
            signer_der: &[],
            renewal_of: None,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;

    #[test]
    fn debug_of_input_redacts_the_challenge() {
        let (der, csr) = fixture_csr("csr-challenge-printable.der");
        let input = input(&der, &csr, Some("s3cret-Printable"));
        let printed = format!("{input:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn modules_are_usable_as_trait_objects() {
        let modules: Vec<Box<dyn super::PolicyModule>> = vec![
            Box::new(super::AllowAll),
            Box::new(super::StaticSecret::new("x")),
        ];
        let names: Vec<_> = modules.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["allow-all", "static-secret"]);
    }
}
