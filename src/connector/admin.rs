//! What the admin API and the CLI share about connectors: the outbox listing and retry,
//! `status`, revocations that report to connectors, and the webhook's signed inbound
//! revocation endpoint.
//!
//! - `GET  /v1/outbox`            events waiting, oldest first ([`OutboxView`])
//! - `POST /v1/outbox/retry`      body `{"id": "<event id>"}` or `{"all": true}`: clears the backoff
//! - `GET  /v1/status`            outbox depth and fullness, connectors ([`StatusView`])
//! - `POST /v1/webhook/revoke`    signed like the webhook's events (not the bearer token),
//!   body `{"serial": "3F2A...", "reason": "keyCompromise"}`

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Connectors, EventFacts, OutboxStatus};
use crate::store::{EventKind, RevokeOutcome, Store, StoreError};

/// One waiting event, as `scepd outbox list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxView {
    /// Event id.
    pub id: String,
    /// Connector.
    pub connector: String,
    /// issued, failed, revoked.
    pub kind: String,
    /// SCEP transactionID.
    pub transaction_id: String,
    /// Template.
    pub template: String,
    /// Serial.
    pub serial: Option<String>,
    /// Reason.
    pub reason: Option<String>,
    /// When it happened, Unix seconds.
    pub time: u64,
    /// Failed attempts.
    pub attempts: u32,
    /// Next attempt, Unix milliseconds (0: at once).
    pub next_try_ms: u64,
    /// Last error.
    pub last_error: Option<String>,
}

/// Every waiting event.
pub fn list(store: &dyn Store) -> Result<Vec<OutboxView>, StoreError> {
    Ok(store
        .outbox()?
        .into_iter()
        .map(|e| OutboxView {
            id: e.event.id,
            connector: e.event.connector,
            kind: e.event.kind.as_str().into(),
            transaction_id: e.event.transaction_id,
            template: e.event.template,
            serial: e.event.serial,
            reason: e.event.reason,
            time: e.event.time,
            attempts: e.attempts,
            next_try_ms: e.next_try_ms,
            last_error: e.last_error,
        })
        .collect())
}

/// Body of `POST /v1/outbox/retry`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RetryBody {
    /// One event.
    #[serde(default)]
    pub id: Option<String>,
    /// Every event.
    #[serde(default)]
    pub all: bool,
}

/// Answer of `POST /v1/outbox/retry`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryAnswer {
    /// Events now due.
    pub due: usize,
}

/// `scepd status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// The outbox.
    pub outbox: OutboxStatus,
    /// Configured connectors (`intune`, `webhook`).
    pub connectors: Vec<String>,
}

/// The status, with `capacity` from `[outbox] max_events`.
pub fn status(
    store: &dyn Store,
    connectors: &super::ConnectorsConfig,
) -> Result<StatusView, StoreError> {
    let mut names = Vec::new();
    if connectors.intune.is_some() {
        names.push("intune".to_owned());
    }
    if connectors.webhook.is_some() {
        names.push("webhook".to_owned());
    }
    Ok(StatusView {
        outbox: OutboxStatus::read(store, connectors.outbox.max_events)?,
        connectors: names,
    })
}

/// Revokes in the store with the `revoked` event of the certificate's connector (if its
/// template reports to one that takes revocations) in the same commit.
pub fn revoke_reporting(
    store: &dyn Store,
    connectors: Option<&Connectors>,
    serial: &[u8],
    reason: &str,
    by: &str,
    now: SystemTime,
) -> Result<RevokeOutcome, StoreError> {
    let event = match connectors {
        Some(connectors) => match store.certificate(serial)? {
            Some(record) => connectors.event_for(
                &EventFacts {
                    kind: EventKind::Revoked,
                    transaction_id: &record.transaction_id,
                    template: &record.template,
                    serial: Some(serial),
                    reason: Some(reason),
                    detail: None,
                    by: Some(by),
                    csr_der: None,
                    cert_der: None,
                    now,
                },
                None,
            ),
            None => None,
        },
        None => None,
    };
    store.revoke_with_event(serial, reason, by, now, event.as_ref())
}

/// Body of `POST /v1/webhook/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookRevokeBody {
    /// Serial, hex (separators and case ignored).
    pub serial: String,
    /// RFC 5280 reason name (default unspecified).
    #[serde(default)]
    pub reason: Option<String>,
}
