//! Verifiers that live in the root crate because they need a port or the network, and
//! implement the same [`scepd_policy::PolicyModule`] trait as the pure ones in
//! `policy-module/` (design.md §1: "a verifier that needs HTTP, such as a webhook, lives in
//! `src`").
//!
//! - [`otp`]: one-time passwords as NDES issues them; holds the store, and redeems the
//!   password there inside `evaluate` (see docs/design.md, "Verifiers in src/").
//! - [`webhook`]: POSTs the request's details to a URL and obeys the answer.
//! - [`intune`]: Intune decides (validateRequest, through the Intune connector).
//! - [`ndes_admin`]: NDES's password page `/certsrv/mscep_admin/` behind HTTP Basic auth.

pub mod intune;
pub mod ndes_admin;
pub mod otp;
pub mod webhook;

use scepd_policy::{Decision, DenialReason, PolicyInput, PolicyModule};

/// Stands in for a verifier that could not be built (configuration validation prevents
/// this): it denies everything, so a broken verifier never lets a request through.
pub struct Unbuildable(pub String);

impl PolicyModule for Unbuildable {
    fn name(&self) -> &'static str {
        "unbuildable"
    }

    fn evaluate(&self, _input: &PolicyInput<'_>) -> Decision {
        Decision::deny(DenialReason::Unavailable, self.0.clone())
    }
}
