//! One shared challenge password per template, as NDES's static password mode.

use crate::{Approval, Decision, DenialReason, PolicyInput, PolicyModule};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// Approves a request whose challengePassword equals the template's shared secret.
///
/// The comparison is over SHA-256 digests of the secret and of the presented challenge, in
/// constant time: comparing fixed-length digests leaks neither the content nor the length of
/// the secret. Only the digest is kept; `Debug` prints neither.
///
/// An empty challenge counts as missing, so a misconfigured empty secret never matches.
/// The approval grants no constraints (a static secret binds no name) and needs no redemption
/// (it is reusable by design).
#[derive(Clone)]
pub struct StaticSecret {
    secret_digest: [u8; 32],
}

impl StaticSecret {
    /// A verifier for `secret`, compared byte for byte with the challenge's UTF-8 encoding.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret_digest: sha256(&secret.into()),
        }
    }

    /// Whether `challenge` is the secret, in time independent of where they differ.
    fn matches(&self, challenge: &str) -> bool {
        sha256(challenge.as_bytes())
            .ct_eq(&self.secret_digest)
            .into()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticSecret").finish_non_exhaustive()
    }
}

impl PolicyModule for StaticSecret {
    fn name(&self) -> &'static str {
        "static-secret"
    }

    fn evaluate(&self, input: &PolicyInput<'_>) -> Decision {
        match input.challenge {
            None | Some("") => Decision::deny(
                DenialReason::MissingChallenge,
                format!(
                    "template {:?} requires a challenge password",
                    input.template
                ),
            ),
            Some(challenge) if self.matches(challenge) => {
                Decision::Approve(Approval::unconstrained())
            }
            Some(_) => Decision::deny(
                DenialReason::WrongChallenge,
                format!(
                    "challenge password does not match template {:?}",
                    input.template
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixture_csr, input};

    fn evaluate(module: &StaticSecret, challenge: Option<&str>) -> Decision {
        let (der, csr) = fixture_csr("csr-challenge-printable.der");
        module.evaluate(&input(&der, &csr, challenge))
    }

    fn denial_reason(decision: Decision) -> DenialReason {
        match decision {
            Decision::Deny(denial) => denial.reason,
            Decision::Approve(a) => panic!("expected a denial, got {a:?}"),
        }
    }

    #[test]
    fn approves_the_right_secret_without_constraints() {
        let module = StaticSecret::new("s3cret-Printable");
        assert_eq!(
            evaluate(&module, Some("s3cret-Printable")),
            Decision::Approve(Approval::unconstrained())
        );
    }

    #[test]
    fn approves_a_non_ascii_secret() {
        let module = StaticSecret::new("pässwörd".as_bytes());
        assert!(matches!(
            evaluate(&module, Some("pässwörd")),
            Decision::Approve(_)
        ));
    }

    #[test]
    fn denies_a_wrong_secret() {
        let module = StaticSecret::new("s3cret");
        assert_eq!(
            denial_reason(evaluate(&module, Some("guess"))),
            DenialReason::WrongChallenge
        );
    }

    #[test]
    fn denies_a_prefix_and_an_extension_of_the_secret() {
        let module = StaticSecret::new("s3cret");
        for challenge in ["s3cre", "s3cret!", "S3CRET"] {
            let reason = denial_reason(evaluate(&module, Some(challenge)));
            assert_eq!(reason, DenialReason::WrongChallenge, "{challenge}");
        }
    }

    #[test]
    fn denies_a_missing_challenge() {
        let module = StaticSecret::new("s3cret");
        assert_eq!(
            denial_reason(evaluate(&module, None)),
            DenialReason::MissingChallenge
        );
    }

    #[test]
    fn an_empty_challenge_counts_as_missing_even_with_an_empty_secret() {
        let module = StaticSecret::new("");
        assert_eq!(
            denial_reason(evaluate(&module, Some(""))),
            DenialReason::MissingChallenge
        );
    }

    #[test]
    fn denial_detail_never_contains_the_secret_or_the_guess() {
        let module = StaticSecret::new("s3cret");
        let Decision::Deny(denial) = evaluate(&module, Some("guess-123")) else {
            panic!("expected a denial");
        };
        assert!(!denial.detail.contains("s3cret"));
        assert!(!denial.detail.contains("guess-123"));
    }

    #[test]
    fn debug_does_not_print_the_secret_or_its_digest() {
        let module = StaticSecret::new("s3cret");
        let printed = format!("{module:?}");
        assert_eq!(printed, "StaticSecret { .. }");
    }
}
