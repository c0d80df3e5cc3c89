//! Intune's revocation loop (intune.md §2): download up to `revocation_batch` requests,
//! revoke each in scepd, upload one result per `requestContext`, repeat until Intune has
//! none left; then the CRL is re-signed so that CRL and OCSP show the revocations.
//!
//! Results (`errorCode` sent as the enum *name*, the form Microsoft's C# library sends):
//! - revoked now, or revoked before by Intune itself (a request Intune re-delivers because
//!   our upload was lost): `succeeded: true`, `None`;
//! - no certificate with that serial: `CertificateNotFoundError` (4004);
//! - revoked before by someone else (an admin, the webhook): `ConflictError` (4005);
//! - the store failed: `RetryableServiceException` (4100).
//!
//! Serials match case-insensitively, ignoring separators and leading zeros.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::{IntuneClient, IntuneError, RevocationRequest};
use crate::crl::CrlSet;
use crate::store::{RevokeOutcome, Store};

/// Who revocations from Intune are recorded as (`scepd certs show`: revoked by).
pub const REVOKED_BY: &str = "intune";

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevocationRun {
    /// Requests received.
    pub requests: usize,
    /// Certificates newly revoked.
    pub revoked: usize,
    /// Requests answered with an error code.
    pub errors: usize,
}

/// The candidates a serial text may name: its bytes, and with a leading zero octet (DER
/// INTEGER content of a serial whose top bit is set).
fn serial_candidates(text: &str) -> Vec<Vec<u8>> {
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | ' '))
        .collect();
    let trimmed = cleaned.trim_start_matches('0');
    let even = if trimmed.len() % 2 == 1 {
        format!("0{trimmed}")
    } else {
        trimmed.to_owned()
    };
    let Ok(bytes) = hex::decode(&even) else {
        return Vec::new();
    };
    if bytes.is_empty() {
        return vec![vec![0]];
    }
    let mut with_zero = vec![0u8];
    with_zero.extend_from_slice(&bytes);
    vec![bytes, with_zero]
}

fn result(context: &str, code: Option<&str>, message: Option<String>) -> Value {
    json!({
        "requestContext": context,
        "succeeded": code.is_none(),
        "errorCode": code.unwrap_or("None"),
        "errorMessage": message,
    })
}

/// Applies one request; `(result, newly revoked serial)`.
fn apply(
    store: &dyn Store,
    request: &RevocationRequest,
    now: SystemTime,
) -> (Value, Option<Vec<u8>>) {
    let context = request.request_context.as_str();
    let reason = scepd_ca::RevocationReason::CessationOfOperation;
    for serial in serial_candidates(&request.serial_number) {
        match store.certificate(&serial) {
            Ok(None) => continue,
            Ok(Some(_)) => {}
            Err(e) => {
                return (
                    result(
                        context,
                        Some("RetryableServiceException"),
                        Some(e.to_string()),
                    ),
                    None,
                )
            }
        }
        return match store.revoke(&serial, reason.name(), REVOKED_BY, now) {
            Ok(RevokeOutcome::Revoked) => (result(context, None, None), Some(serial)),
            Ok(RevokeOutcome::AlreadyRevoked { by, .. }) if by == REVOKED_BY => {
                (result(context, None, None), None)
            }
            Ok(RevokeOutcome::AlreadyRevoked { by, reason, .. }) => (
                result(
                    context,
                    Some("ConflictError"),
                    Some(format!("already revoked ({reason}) by {by}")),
                ),
                None,
            ),
            Ok(RevokeOutcome::NotFound) => (
                result(
                    context,
                    Some("CertificateNotFoundError"),
                    Some("no certificate with this serial number".into()),
                ),
                None,
            ),
            Err(e) => (
                result(
                    context,
                    Some("RetryableServiceException"),
                    Some(e.to_string()),
                ),
                None,
            ),
        };
    }
    (
        result(
            context,
            Some("CertificateNotFoundError"),
            Some("no certificate with this serial number".into()),
        ),
        None,
    )
}

/// Download, revoke, upload, until Intune has nothing left (at most 1000 rounds per run, so
/// a service that keeps answering cannot hold the loop forever).
pub fn run_once(
    client: &IntuneClient,
    store: &dyn Store,
    ca: &dyn scepd_ca::CaBackend,
    crls: Option<&CrlSet>,
    now: SystemTime,
) -> Result<RevocationRun, IntuneError> {
    let mut run = RevocationRun::default();
    for _round in 0..1000 {
        let requests = client.download_revocations(client.config().revocation_batch)?;
        if requests.is_empty() {
            break;
        }
        run.requests += requests.len();
        let mut results = Vec::with_capacity(requests.len());
        let mut revoked_now = 0;
        for request in &requests {
            let (answer, revoked) = apply(store, request, now);
            if answer.get("succeeded") != Some(&Value::Bool(true)) {
                run.errors += 1;
            }
            if let Some(serial) = revoked {
                revoked_now += 1;
                let hex = scepd_ca::serial_hex(&serial);
                tracing::info!(serial = %hex, by = REVOKED_BY, "certificate revoked at Intune's request");
                if let Err(e) = ca.revoke(
                    &serial,
                    scepd_ca::RevocationReason::CessationOfOperation,
                    now,
                ) {
                    tracing::error!(serial = %hex, error = %e, "CA refused a revocation from Intune");
                }
            }
            results.push(answer);
        }
        run.revoked += revoked_now;
        // The CRL first: once Intune hears "revoked", relying parties must see it.
        if revoked_now > 0 {
            if let Some(crls) = crls {
                if let Err(e) = crls.regenerate_all(now) {
                    tracing::error!(error = %e, "CRL not re-signed after revocations from Intune");
                }
            }
        }
        client.upload_results(&results)?;
    }
    Ok(run)
}

/// Fuzzing entry point (see `intune::fuzzing`). Not API.
#[doc(hidden)]
pub mod fuzzing {
    /// The serial candidates of any text; must never panic.
    pub fn serial(text: &str) {
        let _ = super::serial_candidates(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_match_without_case_separators_or_leading_zeros() {
        assert_eq!(serial_candidates("00ab:CD")[0], vec![0xab, 0xcd]);
        assert_eq!(serial_candidates("ABC")[0], vec![0x0a, 0xbc]);
        assert_eq!(serial_candidates("8f")[1], vec![0x00, 0x8f]);
        assert!(serial_candidates("xyz").is_empty());
    }
}
