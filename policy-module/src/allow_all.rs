//! The policy of a template that explicitly needs no challenge.

use crate::{Approval, Decision, PolicyInput, PolicyModule};

/// Approves every request, challenge or not, without constraints.
///
/// Only for templates whose configuration says `challenge = "none"`; the name is meant to make
/// that choice obvious in configuration and logs. The profile still applies at issuance.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl PolicyModule for AllowAll {
    fn name(&self) -> &'static str {
        "allow-all"
    }

    fn evaluate(&self, _input: &PolicyInput<'_>) -> Decision {
        Decision::Approve(Approval::unconstrained())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixture_csr, input};

    #[test]
    fn approves_with_or_without_a_challenge() {
        let (der, csr) = fixture_csr("csr-no-challenge.der");
        for challenge in [None, Some(""), Some("anything")] {
            let decision = AllowAll.evaluate(&input(&der, &csr, challenge));
            assert_eq!(decision, Decision::Approve(Approval::unconstrained()));
        }
    }
}
