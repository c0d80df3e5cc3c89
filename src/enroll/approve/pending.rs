//! Manual approval (RFC 8894 §2.5, §3.3.3): a PKCSReq on a template with
//! `manual_approval` is checked by the template's policy (challenge included) and then
//! parked in the store; an admin approves or rejects it; CertPoll (or the same PKCSReq
//! again) then gets PENDING, SUCCESS or FAILURE.
//!
//! The certificate is issued at the first poll after approval, inside the enrollment cycle
//! (so the CA is still called from the one place, with an [`Approved`]), not by the admin
//! command: the CLI then needs no CA key, and the CA re-checks the CSR at issuance time.

use std::borrow::Cow;
use std::time::SystemTime;

use x509_cert::request::CertReq;

use super::{issue, record_failure, replay, Answer, Approved, Enroller, Failed, Refusal};
use crate::config::Template;
use crate::scep::MessageType;
use crate::store::{PendingDecision, PendingRequest, TxBegin, TxKey};

/// Parks an approved-by-policy request for the admin; the client hears PENDING.
pub(super) fn park<'a>(
    enroller: &'a Enroller,
    template: &'a Template,
    csr: &CertReq,
    csr_der: &[u8],
    key: &TxKey,
    now: SystemTime,
) -> Result<Answer<'a>, Refusal> {
    let request = PendingRequest {
        transaction_id: key.transaction_id.clone(),
        template: template.name.clone(),
        csr_der: csr_der.to_vec(),
        csr_digest: key.csr_digest,
        subject: scepd_ca::format_dn(&csr.info.subject),
        received_at: now,
        expires_at: now + template.pending_expiry,
        decision: PendingDecision::Waiting,
    };
    enroller
        .store
        .record_pending(key, &request)
        .map_err(|e| Refusal::internal(format!("store: record pending: {e}")))?;
    tracing::info!(transaction_id = %key.transaction_id, template = %template.name,
        subject = %request.subject, "request waits for manual approval");
    Ok(Answer::Pending { template })
}

/// The answer for a parked transaction: PENDING while waiting, FAILURE once rejected or
/// expired, and once approved the certificate (issued now, or again on a retry).
pub(super) fn answer<'a>(
    enroller: &'a Enroller,
    route: &'a Template,
    parked: PendingRequest,
    now: SystemTime,
) -> Result<Answer<'a>, Failed<'a>> {
    let Some(template) = enroller.templates.get(&parked.template) else {
        return Err((
            Some(route),
            Refusal::internal(format!(
                "pending request names template {} which is not configured",
                parked.template
            )),
        ));
    };
    let fail = |refusal| (Some(template), refusal);
    match parked.decision {
        PendingDecision::Waiting if parked.is_expired(now) => Err(fail(Refusal::bad_request(
            "the request expired before it was approved",
            "pending request expired",
        ))),
        PendingDecision::Waiting => Ok(Answer::Pending { template }),
        PendingDecision::Rejected { by, .. } => Err(fail(Refusal::bad_request(
            "the request was rejected",
            format!("rejected by {by}"),
        ))),
        PendingDecision::Approved { .. } => {
            let key = TxKey {
                transaction_id: parked.transaction_id,
                message_type: MessageType::PkcsReq.code(),
                csr_digest: parked.csr_digest,
            };
            match enroller.store.begin_transaction(&key, now) {
                Ok(TxBegin::Fresh) => {}
                Ok(TxBegin::Replay { serial }) => {
                    return replay(enroller, template, serial)
                        .map(Answer::Issued)
                        .map_err(fail)
                }
                Ok(TxBegin::InProgress) => return Ok(Answer::Pending { template }),
                Ok(TxBegin::Conflict) => {
                    return Err(fail(Refusal::internal(
                        "approved request conflicts with its own transaction",
                    )))
                }
                Err(e) => return Err(fail(Refusal::internal(format!("store: begin: {e}")))),
            }
            let approved = Approved {
                template,
                csr_der: Cow::Owned(parked.csr_der),
                key: key.clone(),
            };
            issue(enroller, approved, now)
                .map(Answer::Issued)
                .map_err(|refusal| {
                    record_failure(enroller, &key, &refusal, now);
                    fail(refusal)
                })
        }
    }
}

/// CertPoll: keyed on the transactionID (RFC 8894 §3.3.3); the IssuerAndSubject is not
/// consulted. An unknown transaction is FAILURE badRequest.
pub(super) fn poll<'a>(
    enroller: &'a Enroller,
    route: &'a Template,
    transaction_id: &str,
    now: SystemTime,
) -> Result<Answer<'a>, Failed<'a>> {
    match enroller.store.pending_request(transaction_id) {
        Ok(Some(parked)) => answer(enroller, route, parked, now),
        Ok(None) => Err((
            Some(route),
            Refusal::bad_request(
                "no pending request with this transactionID",
                "CertPoll for an unknown transaction",
            ),
        )),
        Err(e) => Err((
            Some(route),
            Refusal::internal(format!("store: pending request: {e}")),
        )),
    }
}
