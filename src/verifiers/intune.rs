//! The Intune verifier (`[challenge] type = "intune"`): Intune's challenge is opaque (it is
//! encrypted and signed for Intune), so Intune itself decides: `validateRequest` with the
//! CSR as received (intune.md §1.4). Only code `Success` approves; any other code, a non-2xx
//! answer, a timeout or no connection denies, and the code goes to the log with the
//! transactionID, to the failed transaction's record and to connector events.

use std::sync::Arc;

use scepd_policy::{Approval, Decision, DenialReason, PolicyInput, PolicyModule};

use crate::connector::intune::{IntuneClient, IntuneError};

/// Start of the denial detail; [`code_of`] reads the code back.
pub const CODE_PREFIX: &str = "Intune code ";

/// The Intune code in a denial detail written by this verifier.
pub fn code_of(detail: &str) -> Option<&str> {
    detail
        .strip_prefix(CODE_PREFIX)
        .and_then(|rest| rest.split(':').next())
}

/// Asks Intune's ScepRequestValidationFEService.
pub struct IntuneVerifier {
    client: Arc<IntuneClient>,
}

impl IntuneVerifier {
    /// A verifier on the server's Intune client.
    pub fn new(client: Arc<IntuneClient>) -> Self {
        Self { client }
    }
}

impl PolicyModule for IntuneVerifier {
    fn name(&self) -> &'static str {
        "intune"
    }

    fn evaluate(&self, input: &PolicyInput<'_>) -> Decision {
        match self.client.validate(input.transaction_id, input.csr_der) {
            Ok(()) => Decision::Approve(Approval::unconstrained()),
            Err(error) => {
                let reason = match error {
                    IntuneError::Refused { .. } => DenialReason::WrongChallenge,
                    _ => DenialReason::Unavailable,
                };
                Decision::deny(
                    reason,
                    format!("{CODE_PREFIX}{}: validateRequest: {error}", error.code()),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_read_back_from_the_detail() {
        assert_eq!(
            code_of("Intune code ChallengeExpired: validateRequest: x"),
            Some("ChallengeExpired")
        );
        assert_eq!(code_of("something else"), None);
    }
}
