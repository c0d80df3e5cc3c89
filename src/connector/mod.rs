//! Connectors (design.md §5): where enrollment results and revocations are reported, and
//! where revocation requests come from.
//!
//! - [`intune`]: Microsoft Intune (validateRequest before issuing, success and failure
//!   notifications, the revocation loop).
//! - [`webhook`]: any other MDM: signed JSON events, and a signed inbound revocation endpoint.
//! - [`worker`]: delivers the outbox (`store::outbox`), at least once, oldest first per
//!   connector, with exponential backoff and jitter.
//!
//! Each template reports to at most one connector (`connector = "..."` in the template, or
//! implied by `[challenge] type = "intune"`); a template without one writes no event. The
//! intune connector takes `issued` and `failed` events (Intune has no message for a
//! revocation scepd made), the webhook all three kinds.

pub mod admin;
pub mod config;
pub mod intune;
pub mod webhook;
pub mod worker;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;

pub use config::{ConnectorKind, ConnectorsConfig, OutboxConfig};

use crate::store::{new_event_id, Event, EventKind, NewEvent, Store, StoreError};

/// The connectors of a server, built once at start-up.
pub struct Connectors {
    /// The Intune client, when `[connector.intune]` is configured.
    pub intune: Option<Arc<intune::IntuneClient>>,
    /// The webhook, when `[connector.webhook]` is configured.
    pub webhook: Option<Arc<webhook::WebhookConnector>>,
    /// `[outbox]`.
    pub outbox: OutboxConfig,
    config: ConnectorsConfig,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectors")
            .field("intune", &self.intune.is_some())
            .field("webhook", &self.webhook.is_some())
            .field("routes", &self.config.routes)
            .finish()
    }
}

/// What a certificate-producing step needs to describe its event.
pub struct EventFacts<'a> {
    /// What happened.
    pub kind: EventKind,
    /// The SCEP transactionID.
    pub transaction_id: &'a str,
    /// The template.
    pub template: &'a str,
    /// The certificate's serial.
    pub serial: Option<&'a [u8]>,
    /// Reason name or code.
    pub reason: Option<&'a str>,
    /// Detail.
    pub detail: Option<&'a str>,
    /// Who (revocations).
    pub by: Option<&'a str>,
    /// The CSR, DER.
    pub csr_der: Option<&'a [u8]>,
    /// The certificate, DER.
    pub cert_der: Option<&'a [u8]>,
    /// When.
    pub now: SystemTime,
}

impl Connectors {
    /// Builds the clients of a validated configuration.
    pub fn new(config: &ConnectorsConfig) -> Result<Self, String> {
        let intune = config
            .intune
            .clone()
            .map(intune::IntuneClient::new)
            .transpose()
            .map_err(|e| format!("connector.intune: {e}"))?
            .map(Arc::new);
        let webhook = config
            .webhook
            .clone()
            .map(webhook::WebhookConnector::new)
            .transpose()
            .map_err(|e| format!("connector.webhook: {e}"))?
            .map(Arc::new);
        Ok(Self {
            intune,
            webhook,
            outbox: config.outbox.clone(),
            config: config.clone(),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &ConnectorsConfig {
        &self.config
    }

    /// The connector `template` reports to.
    pub fn route(&self, template: &str) -> Option<ConnectorKind> {
        self.config.routes.get(template).copied()
    }

    /// Whether any template reports anywhere.
    pub fn any(&self) -> bool {
        !self.config.routes.is_empty()
    }

    /// The event to write with this state change, if the template's connector takes events
    /// of this kind. `hold` delays the worker's first attempt (a synchronous delivery is
    /// under way meanwhile).
    pub fn event_for(&self, facts: &EventFacts<'_>, hold: Option<Duration>) -> Option<NewEvent> {
        let connector = self.route(facts.template)?;
        if connector == ConnectorKind::Intune && facts.kind == EventKind::Revoked {
            return None;
        }
        let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
        let time = facts
            .now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(NewEvent {
            event: Event {
                id: new_event_id(),
                connector: connector.as_str().into(),
                kind: facts.kind,
                transaction_id: facts.transaction_id.into(),
                template: facts.template.into(),
                serial: facts.serial.map(scepd_ca::serial_hex),
                reason: facts.reason.map(str::to_owned),
                detail: facts.detail.map(|d| intune::truncate(d, 1000)),
                by: facts.by.map(str::to_owned),
                time,
                csr: facts.csr_der.map(b64),
                certificate: facts.cert_der.map(b64),
            },
            capacity: self.outbox.max_events,
            not_before_ms: hold.map_or(0, |h| unix_ms(facts.now + h)),
        })
    }

    /// How long the delivery of a certificate of `template` waits for its `issued` event to
    /// be accepted (Intune's success notification, a webhook with `wait_for_delivery`).
    pub fn confirmation_deadline(&self, template: &str) -> Option<Duration> {
        match self.route(template)? {
            ConnectorKind::Intune => {
                let intune = self.intune.as_ref()?;
                let config = intune.config();
                config
                    .wait_for_success_notification
                    .then_some(config.success_notification_deadline)
            }
            ConnectorKind::Webhook => {
                let webhook = self.webhook.as_ref()?;
                webhook
                    .config()
                    .wait_for_delivery
                    .then_some(webhook.config().timeout)
            }
        }
    }

    /// Delivers one event (blocking; bounded by the connector's timeouts).
    pub fn deliver(&self, event: &Event, now: SystemTime) -> Result<(), String> {
        match (ConnectorKind::parse(&event.connector), event.kind) {
            (Some(ConnectorKind::Intune), kind) => {
                let client = self
                    .intune
                    .as_ref()
                    .ok_or("no [connector.intune] configured")?;
                match kind {
                    EventKind::Issued => client.success_notification(event),
                    EventKind::Failed => client.failure_notification(event),
                    // Not written for Intune; nothing to tell it.
                    EventKind::Revoked => Ok(()),
                }
                .map_err(|e| e.to_string())
            }
            (Some(ConnectorKind::Webhook), _) => self
                .webhook
                .as_ref()
                .ok_or("no [connector.webhook] configured")?
                .deliver(event, now),
            (None, _) => Err(format!("unknown connector {:?}", event.connector)),
        }
    }

    /// Delivers `event` now, within `deadline` (a bounded wait on a helper thread), and on
    /// success removes it from the outbox. Used before a certificate is delivered.
    pub fn confirm(
        self: &Arc<Self>,
        store: &dyn Store,
        event: &Event,
        deadline: Duration,
    ) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let this = Arc::clone(self);
        let owned = event.clone();
        std::thread::Builder::new()
            .name("scepd-confirm".into())
            .spawn(move || {
                let _ = tx.send(this.deliver(&owned, SystemTime::now()));
            })
            .map_err(|e| format!("cannot start the confirmation: {e}"))?;
        let outcome = match rx.recv_timeout(deadline) {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("not accepted within {} ms", deadline.as_millis())),
        };
        outcome?;
        if let Err(e) = remove_event(store, &event.id) {
            // Harmless: the worker delivers it once more, with the same id.
            tracing::warn!(event = %event.id, error = %e, "confirmed event stays in the outbox");
        }
        Ok(())
    }
}

/// Removes the event with this id from the outbox, if it is there.
pub fn remove_event(store: &dyn Store, id: &str) -> Result<bool, StoreError> {
    for entry in store.outbox()? {
        if entry.event.id == id {
            return store.outbox_delivered(entry.seq);
        }
    }
    Ok(false)
}

/// Unix milliseconds.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Outbox depth and fullness, for `scepd status` and the log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Events waiting.
    pub depth: usize,
    /// `[outbox] max_events`.
    pub capacity: usize,
    /// Events whose last attempt failed.
    pub failing: usize,
    /// The oldest event's time, Unix seconds.
    pub oldest: Option<u64>,
}

impl OutboxStatus {
    /// Reads it from the store.
    pub fn read(store: &dyn Store, capacity: usize) -> Result<Self, StoreError> {
        let entries = store.outbox()?;
        Ok(Self {
            depth: entries.len(),
            capacity,
            failing: entries.iter().filter(|e| e.attempts > 0).count(),
            oldest: entries.iter().map(|e| e.event.time).min(),
        })
    }

    /// Whether new events are being refused.
    pub fn full(&self) -> bool {
        self.depth >= self.capacity
    }
}
