//! The enrollment cycle's connector steps (design.md §3 steps 8 and 9): the event that
//! commits with the certificate or the failure, the bound of the outbox, and the
//! confirmation some MDMs demand before a certificate is delivered (Intune's success
//! notification, a webhook with `wait_for_delivery`).

use std::time::{Duration, SystemTime};

use super::{Enroller, Refusal};
use crate::config::Template;
use crate::connector::{remove_event, ConnectorKind, EventFacts};
use crate::store::{CertRecord, EventKind, NewEvent, StoreError, TxKey};

/// Reason of a certificate withdrawn because its MDM did not accept it.
pub(super) const DELIVERY_NOT_CONFIRMED: &str = "DeliveryNotConfirmed";

/// Margin after the confirmation deadline before the worker may try the same event.
const WORKER_HOLD_MARGIN: Duration = Duration::from_secs(5);

/// A refusal when `template` reports to a connector and the outbox is full: new work that
/// would need an event is refused, not an event dropped.
pub(super) fn outbox_full(enroller: &Enroller, template: &Template) -> Option<Refusal> {
    let connectors = enroller.connectors()?;
    connectors.route(&template.name)?;
    let capacity = connectors.outbox.max_events;
    match enroller.store.outbox_depth() {
        Ok(depth) if depth >= capacity => {
            tracing::error!(template = %template.name, depth, capacity, "request refused: the connector outbox is full (see `scepd outbox list`)");
            Some(Refusal::internal(format!(
                "the connector outbox is full ({depth} of {capacity} events)"
            )))
        }
        Ok(_) => None,
        Err(e) => Some(Refusal::internal(format!("store: outbox: {e}"))),
    }
}

/// The `issued` event of a new certificate, if its template reports anywhere.
pub(super) fn issued_event(
    enroller: &Enroller,
    template: &Template,
    record: &CertRecord,
    csr_der: &[u8],
    now: SystemTime,
) -> Option<NewEvent> {
    let connectors = enroller.connectors()?;
    let hold = connectors
        .confirmation_deadline(&template.name)
        .map(|d| d + WORKER_HOLD_MARGIN);
    connectors.event_for(
        &EventFacts {
            kind: EventKind::Issued,
            transaction_id: &record.transaction_id,
            template: &template.name,
            serial: Some(&record.serial),
            reason: None,
            detail: None,
            by: None,
            csr_der: Some(csr_der),
            cert_der: Some(&record.der),
            now,
        },
        hold,
    )
}

/// Step 9: when the template's connector demands it, the `issued` event must be accepted
/// within the deadline before the certificate is delivered. If it is not, the certificate
/// is revoked (cessationOfOperation, by `<connector>-connector`) with a `failed` event in
/// the same commit, the CRL is re-signed, and the device gets FAILURE; a retry of the
/// transaction finds the certificate revoked and gets FAILURE too.
pub(super) fn confirm_delivery(
    enroller: &Enroller,
    template: &Template,
    record: &CertRecord,
    event: Option<&NewEvent>,
    csr_der: &[u8],
    now: SystemTime,
) -> Result<(), Refusal> {
    let (Some(connectors), Some(event)) = (enroller.connectors(), event) else {
        return Ok(());
    };
    let Some(deadline) = connectors.confirmation_deadline(&template.name) else {
        return Ok(());
    };
    let Err(error) = connectors.confirm(&*enroller.store, &event.event, deadline) else {
        return Ok(());
    };
    let connector = connectors
        .route(&template.name)
        .map_or("connector", ConnectorKind::as_str);
    let serial_hex = scepd_ca::serial_hex(&record.serial);
    let by = format!("{connector}-connector");
    tracing::warn!(transaction_id = %record.transaction_id, template = %template.name, serial = %serial_hex, %error, "{connector} did not accept the issued certificate: revoking it and answering FAILURE");
    let detail = format!("{connector} did not accept the issued certificate {serial_hex}: {error}");
    let failed = connectors.event_for(
        &EventFacts {
            kind: EventKind::Failed,
            transaction_id: &record.transaction_id,
            template: &template.name,
            serial: Some(&record.serial),
            reason: Some(DELIVERY_NOT_CONFIRMED),
            detail: Some(&detail),
            by: None,
            csr_der: Some(csr_der),
            cert_der: None,
            now,
        },
        None,
    );
    let reason = scepd_ca::RevocationReason::CessationOfOperation;
    let store = &enroller.store;
    let revoked = match store.revoke_with_event(
        &record.serial,
        reason.name(),
        &by,
        now,
        failed.as_ref(),
    ) {
        Err(StoreError::OutboxFull { .. }) => {
            // The certificate must not stay valid: revoke without the event.
            tracing::error!(transaction_id = %record.transaction_id, "outbox full: the failure notification of a withdrawn certificate is not queued");
            store.revoke(&record.serial, reason.name(), &by, now)
        }
        other => other,
    };
    match revoked {
        Ok(_) => {
            if let Err(e) = enroller.ca.revoke(&record.serial, reason, now) {
                tracing::error!(serial = %serial_hex, error = %e, "CA refused the revocation of a withdrawn certificate");
            }
            if let Some(crls) = enroller.crls() {
                if let Err(e) = crls.regenerate_all(now) {
                    tracing::error!(serial = %serial_hex, error = %e, "CRL not re-signed after withdrawing a certificate");
                }
            }
        }
        Err(e) => {
            tracing::error!(serial = %serial_hex, error = %e, "could not revoke a certificate its MDM did not accept");
        }
    }
    // Its `issued` event must never be delivered now.
    if let Err(e) = remove_event(&**store, &event.event.id) {
        tracing::error!(event = %event.event.id, error = %e, "could not drop the issued event of a withdrawn certificate");
    }
    Err(
        Refusal::bad_request("the MDM did not accept the certificate", detail)
            .with_reason(DELIVERY_NOT_CONFIRMED),
    )
}

/// Records a failed transaction with its `failed` event when the template reports (an
/// Intune template only after Intune validated the request), in one commit.
pub(super) fn record_failure(
    enroller: &Enroller,
    key: &TxKey,
    template: &Template,
    csr_der: &[u8],
    refusal: &Refusal,
    validated: bool,
    now: SystemTime,
) {
    // A withdrawn certificate's transaction succeeded and was answered for already.
    if refusal.reason.as_deref() == Some(DELIVERY_NOT_CONFIRMED) {
        return;
    }
    let text = match &refusal.reason {
        Some(reason) => format!("{} ({reason})", refusal.text),
        None => refusal.text.to_owned(),
    };
    let event = enroller.connectors().and_then(|connectors| {
        let route = connectors.route(&template.name)?;
        if route == ConnectorKind::Intune && !validated {
            return None;
        }
        connectors.event_for(
            &EventFacts {
                kind: EventKind::Failed,
                transaction_id: &key.transaction_id,
                template: &template.name,
                serial: None,
                reason: refusal.reason.as_deref(),
                detail: Some(&refusal.detail),
                by: None,
                csr_der: Some(csr_der),
                cert_der: None,
                now,
            },
            None,
        )
    });
    let code = refusal.fail_info.code();
    let result = match enroller.store.record_failure_with_event(
        key,
        code,
        &text,
        now,
        event.as_ref(),
    ) {
        Err(e @ StoreError::OutboxFull { .. }) => {
            tracing::error!(transaction_id = %key.transaction_id, error = %e, "the failure event of this transaction is not queued");
            enroller.store.record_failure(key, code, &text, now)
        }
        other => other,
    };
    if let Err(e) = result {
        // Never drop a side effect's error (design.md §7 rule 8).
        tracing::error!(transaction_id = %key.transaction_id, error = %e, "could not record a failed transaction");
    }
}
