//! The webhook connector: each event POSTed as JSON to `[connector.webhook] url`.
//!
//! Headers (the same scheme as the webhook verifier's):
//! - `X-Scepd-Timestamp: <unix seconds>`
//! - `X-Scepd-Signature: sha256=<lowercase hex HMAC-SHA256(key, timestamp + "." + body)>`
//! - `X-Scepd-Event-Id: <event id>` (also `id` in the body): the same on every retry, so a
//!   receiver drops duplicates by it.
//!
//! Any 2xx answer means delivered; anything else (or no answer within `timeout_ms`) is
//! retried by the outbox worker with backoff.
//!
//! Inbound: `POST /v1/webhook/revoke` on the admin listener, signed the same way by the
//! MDM with the same key, body `{"serial": "3F2A...", "reason": "keyCompromise"}`
//! (see [`verify_signature`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::ssl::SslConnector;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::config::WebhookConnectorConfig;
use crate::store::{Event, EventKind};
use crate::verifiers::webhook::{self, Target, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Header with the event id.
pub const EVENT_ID_HEADER: &str = "X-Scepd-Event-Id";
/// How far an inbound request's timestamp may be from our clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// The JSON body of a delivery (version 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookEvent {
    /// 1.
    pub version: u32,
    /// The event id (dedup key).
    pub id: String,
    /// `issued`, `failed` or `revoked`.
    pub kind: EventKind,
    /// SCEP transactionID.
    pub transaction_id: String,
    /// Template.
    pub template: String,
    /// Uppercase hex serial.
    pub serial: Option<String>,
    /// Reason: a policy denial reason name, an RFC 5280 reason.
    pub reason: Option<String>,
    /// Detail.
    pub detail: Option<String>,
    /// Who revoked.
    pub revoked_by: Option<String>,
    /// When it happened, Unix seconds.
    pub time: u64,
    /// The certificate, base64 DER (issued).
    pub certificate: Option<String>,
}

impl WebhookEvent {
    /// The body for `event`.
    pub fn from_event(event: &Event) -> Self {
        Self {
            version: 1,
            id: event.id.clone(),
            kind: event.kind,
            transaction_id: event.transaction_id.clone(),
            template: event.template.clone(),
            serial: event.serial.clone(),
            reason: event.reason.clone(),
            detail: event.detail.clone(),
            revoked_by: event.by.clone(),
            time: event.time,
            certificate: event.certificate.clone(),
        }
    }
}

/// The webhook connector.
pub struct WebhookConnector {
    config: WebhookConnectorConfig,
    target: Target,
    tls: Option<SslConnector>,
}

impl WebhookConnector {
    /// A connector for a validated configuration.
    pub fn new(config: WebhookConnectorConfig) -> Result<Self, String> {
        let target = Target::parse(&config.url)?;
        let tls = if target.tls {
            Some(webhook::connector(config.ca_pem.as_deref()).map_err(|e| format!("TLS: {e}"))?)
        } else {
            None
        };
        Ok(Self {
            config,
            target,
            tls,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &WebhookConnectorConfig {
        &self.config
    }

    /// POSTs the event; `Ok` on 2xx.
    pub fn deliver(&self, event: &Event, now: SystemTime) -> Result<(), String> {
        let body = serde_json::to_vec(&WebhookEvent::from_event(event))
            .map_err(|e| format!("encode: {e}"))?;
        let timestamp = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let signature = hex::encode(webhook::sign(&self.config.hmac_key, timestamp, &body)?);
        let headers = vec![
            format!("{TIMESTAMP_HEADER}: {timestamp}"),
            format!("{SIGNATURE_HEADER}: sha256={signature}"),
            format!("{EVENT_ID_HEADER}: {}", event.id),
        ];
        let (status, _) = webhook::send(
            &self.target,
            self.tls.clone(),
            self.config.timeout,
            ("POST", Some("application/json")),
            headers,
            body,
        )?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("webhook answered HTTP {status}"))
        }
    }

    /// Checks an inbound request's signature with this connector's key.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), &'static str> {
        verify_signature(&self.config.hmac_key, timestamp, signature, body, now)
    }
}

/// `X-Scepd-Timestamp` within [`MAX_SKEW`] of `now`, and `X-Scepd-Signature` equal (in
/// constant time) to `sha256=<hex HMAC-SHA256(key, timestamp + "." + body)>`.
pub fn verify_signature(
    key: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<(), &'static str> {
    let timestamp: u64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or("missing or malformed X-Scepd-Timestamp")?;
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now_secs.abs_diff(timestamp) > MAX_SKEW.as_secs() {
        return Err("X-Scepd-Timestamp is more than 5 minutes away from our clock");
    }
    let presented = signature
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or("missing or malformed X-Scepd-Signature")?;
    let expected = webhook::sign(key, timestamp, body).map_err(|_| "cannot compute HMAC")?;
    if key.is_empty() || !bool::from(presented.ct_eq(&expected)) {
        return Err("wrong signature");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_signatures_are_checked_with_time_and_key() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let body = br#"{"serial":"01"}"#;
        let sig = hex::encode(webhook::sign(b"k", 1_800_000_000, body).unwrap_or_default());
        let good = format!("sha256={sig}");
        assert!(verify_signature(b"k", Some("1800000000"), Some(&good), body, now).is_ok());
        assert!(verify_signature(b"x", Some("1800000000"), Some(&good), body, now).is_err());
        assert!(verify_signature(b"k", Some("1800000000"), Some(&good), b"{}", now).is_err());
        let late = now + Duration::from_secs(301);
        assert!(verify_signature(b"k", Some("1800000000"), Some(&good), body, late).is_err());
        assert!(verify_signature(b"k", None, Some(&good), body, now).is_err());
        assert!(verify_signature(b"k", Some("1800000000"), Some(&sig), body, now).is_err());
    }
}
