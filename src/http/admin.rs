//! The admin API: its own listener (loopback by default), a bearer token from a file.
//! sled lets one process open the store, so while `serve` runs the CLI goes through here.
//!
//! - `GET  /v1/certs`                    every issued certificate
//! - `GET  /v1/certs/{serial}`           one (serial in hex)
//! - `POST /v1/certs/{serial}/revoke`    body `{"reason": "keyCompromise", "by": "alice"}`
//! - `GET  /v1/requests`                 requests parked for manual approval
//! - `POST /v1/requests/{txid}/approve`  body `{"by": "alice"}` (txid percent-encoded)
//! - `POST /v1/requests/{txid}/reject`   body `{"by": "alice"}`
//! - `POST /v1/challenges/otp`           body `{"template": "T"}`: a one-time password,
//!   `{"password": "...", "expires_at": <unix>}`; 429 when the template's cap is reached
//! - `GET /v1/outbox`, `POST /v1/outbox/retry`, `GET /v1/status`, and the HMAC-signed
//!   `POST /v1/webhook/revoke`: see `crate::connector::admin`

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::server::Handler;
use crate::config::OtpConfig;
use crate::store::{CertRecord, CertStatus, RevokeOutcome, Store};
use crate::verifiers::otp::{self, MintError};

/// One certificate as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertView {
    /// Uppercase hex, no separators.
    pub serial: String,
    /// `valid`, `revoked` or `expired`.
    pub status: String,
    /// RFC 4514.
    pub subject: String,
    /// `type:value`.
    pub sans: Vec<String>,
    /// Template name.
    pub template: String,
    /// SCEP transactionID.
    pub transaction_id: String,
    /// Seconds since the Unix epoch.
    pub not_before: u64,
    /// Seconds since the Unix epoch.
    pub not_after: u64,
    /// Revocation time, seconds since the Unix epoch.
    pub revoked_at: Option<u64>,
    /// RFC 5280 reason name.
    pub revocation_reason: Option<String>,
    /// Who asked.
    pub revoked_by: Option<String>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CertView {
    /// The view of a stored record at time `now`.
    pub fn new(record: &CertRecord, now: SystemTime) -> Self {
        let (status, revoked_at, reason, by) = match &record.status {
            CertStatus::Revoked { at, reason, by } => (
                "revoked",
                Some(unix(*at)),
                Some(reason.clone()),
                Some(by.clone()),
            ),
            CertStatus::Valid if record.not_after < now => ("expired", None, None, None),
            CertStatus::Valid => ("valid", None, None, None),
        };
        Self {
            serial: scepd_ca::serial_hex(&record.serial),
            status: status.into(),
            subject: record.subject.clone(),
            sans: record.sans.clone(),
            template: record.template.clone(),
            transaction_id: record.transaction_id.clone(),
            not_before: unix(record.not_before),
            not_after: unix(record.not_after),
            revoked_at,
            revocation_reason: reason,
            revoked_by: by,
        }
    }
}

/// Body of a revocation request.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeBody {
    /// RFC 5280 reason name.
    pub reason: String,
    /// Who asks (recorded).
    pub by: String,
}

/// Answer to a revocation request.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeAnswer {
    /// `revoked` or `already_revoked`.
    pub outcome: String,
    /// The certificate after the call.
    pub certificate: CertView,
    /// What the operator must still do, when the CA that issued the certificate could not be
    /// told (an upstream SCEP CA: revoke there too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// What a revocation did, shared by the API and the CLI's direct path.
pub enum RevokeResult {
    /// Revoked now, or before.
    Done(Box<RevokeAnswer>),
    /// No such serial.
    NotFound,
    /// The reason is not an RFC 5280 name.
    BadReason(String),
    /// The store failed.
    Failed(String),
}

/// Revokes `serial` in the store: records time, reason and who asked. Twice is harmless.
pub fn revoke(
    store: &dyn Store,
    serial: &[u8],
    reason: &str,
    by: &str,
    now: SystemTime,
) -> RevokeResult {
    revoke_reporting(store, None, serial, reason, by, now)
}

/// [`revoke`], with the certificate's connector event (if any) in the same commit.
pub fn revoke_reporting(
    store: &dyn Store,
    connectors: Option<&crate::connector::Connectors>,
    serial: &[u8],
    reason: &str,
    by: &str,
    now: SystemTime,
) -> RevokeResult {
    let reason = match reason.parse::<scepd_ca::RevocationReason>() {
        Ok(reason) => reason.to_string(),
        Err(_) => return RevokeResult::BadReason(reason.to_owned()),
    };
    let reported =
        crate::connector::admin::revoke_reporting(store, connectors, serial, &reason, by, now);
    let outcome = match reported {
        Ok(RevokeOutcome::NotFound) => return RevokeResult::NotFound,
        Ok(RevokeOutcome::Revoked) => "revoked",
        Ok(RevokeOutcome::AlreadyRevoked { .. }) => "already_revoked",
        Err(e) => return RevokeResult::Failed(e.to_string()),
    };
    match store.certificate(serial) {
        Ok(Some(record)) => RevokeResult::Done(Box::new(RevokeAnswer {
            outcome: outcome.into(),
            certificate: CertView::new(&record, now),
            notice: None,
        })),
        Ok(None) => RevokeResult::NotFound,
        Err(e) => RevokeResult::Failed(e.to_string()),
    }
}

/// Body of `POST /v1/challenges/otp`.
#[derive(Debug, Serialize, Deserialize)]
pub struct OtpBody {
    /// The template the password is for.
    pub template: String,
}

/// Answer of `POST /v1/challenges/otp`.
#[derive(Serialize, Deserialize)]
pub struct OtpAnswer {
    /// 16 uppercase hex characters; valid once.
    pub password: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

/// The admin API handler.
pub struct AdminApi {
    store: Arc<dyn Store>,
    token: Vec<u8>,
    on_revoked: Option<RevocationHook>,
    /// `otp` settings by template, for `POST /v1/challenges/otp`.
    otp_templates: BTreeMap<String, OtpConfig>,
    /// The CA port, told of every new revocation (`CaBackend::revoke`).
    ca: Option<Arc<dyn scepd_ca::CaBackend>>,
    /// Connectors: revocation events, the outbox, the webhook's inbound revocations.
    connectors: Option<Arc<crate::connector::Connectors>>,
}

/// Called after a certificate is newly revoked, before the API answers (`serve` re-signs the
/// CRL there, so that the CRL is current when `scepd certs revoke` returns).
pub type RevocationHook = Arc<dyn Fn() + Send + Sync>;

impl AdminApi {
    /// `token` is the bearer token's exact bytes.
    pub fn new(store: Arc<dyn Store>, token: Vec<u8>) -> Self {
        Self {
            store,
            token,
            on_revoked: None,
            otp_templates: BTreeMap::new(),
            ca: None,
            connectors: None,
        }
    }

    /// Reports revocations to connectors and serves the outbox and webhook endpoints.
    pub fn with_connectors(mut self, connectors: Arc<crate::connector::Connectors>) -> Self {
        self.connectors = Some(connectors);
        self
    }

    /// Tells `ca` of every new revocation; a notice it returns (an upstream CA that must
    /// revoke too) goes into the answer.
    pub fn with_ca(mut self, ca: Arc<dyn scepd_ca::CaBackend>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// The templates `POST /v1/challenges/otp` may issue passwords for, with their settings.
    pub fn with_otp_templates(mut self, templates: BTreeMap<String, OtpConfig>) -> Self {
        self.otp_templates = templates;
        self
    }

    /// Runs `hook` after every new revocation.
    pub fn with_revocation_hook(mut self, hook: RevocationHook) -> Self {
        self.on_revoked = Some(hook);
        self
    }

    fn authorized(&self, request: &Request<Bytes>) -> bool {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare digests so that neither content nor length leaks through timing.
        let a = openssl::sha::sha256(presented.as_bytes());
        let b = openssl::sha::sha256(&self.token);
        !self.token.is_empty() && bool::from(a.ct_eq(&b))
    }

    fn route(&self, request: Request<Bytes>) -> Response<Bytes> {
        // Signed by the MDM with the webhook key instead of the bearer token.
        if request.method() == Method::POST
            && request.uri().path().trim_end_matches('/') == "/v1/webhook/revoke"
        {
            return self.webhook_revoke(&request, SystemTime::now());
        }
        if !self.authorized(&request) {
            return json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
        let now = SystemTime::now();
        let path = request.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        match (request.method(), segments.as_slice()) {
            (&Method::GET, ["v1", "certs"]) => self.list(now),
            (&Method::GET, ["v1", "certs", serial]) => self.show(serial, now),
            (&Method::POST, ["v1", "certs", serial, "revoke"]) => {
                self.revoke(serial, request.body(), now)
            }
            (&Method::GET, ["v1", "requests"]) => self.list_requests(now),
            (&Method::POST, ["v1", "requests", txid, "approve"]) => {
                self.decide_request(txid, crate::store::Verdict::Approve, request.body(), now)
            }
            (&Method::POST, ["v1", "requests", txid, "reject"]) => {
                self.decide_request(txid, crate::store::Verdict::Reject, request.body(), now)
            }
            (&Method::POST, ["v1", "challenges", "otp"]) => self.mint_otp(request.body(), now),
            (&Method::GET, ["v1", "outbox"]) => self.outbox_list(),
            (&Method::POST, ["v1", "outbox", "retry"]) => self.outbox_retry(request.body()),
            (&Method::GET, ["v1", "status"]) => self.status(),
            _ => json_error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    fn mint_otp(&self, body: &Bytes, now: SystemTime) -> Response<Bytes> {
        let Ok(body) = serde_json::from_slice::<OtpBody>(body) else {
            return json_error(StatusCode::BAD_REQUEST, "body must be {\"template\": ...}");
        };
        let template = body.template.to_ascii_lowercase();
        let Some(settings) = self.otp_templates.get(&template) else {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no template {:?} with [challenge] type = \"otp\"",
                    body.template
                ),
            );
        };
        match otp::mint(&*self.store, &template, settings, now) {
            Ok(minted) => {
                // Never the password: who asked is the bearer, the template and expiry suffice.
                tracing::info!(template = %template, expires_at = minted.expires_at_unix(), "one-time password issued");
                json(
                    StatusCode::OK,
                    &OtpAnswer {
                        expires_at: minted.expires_at_unix(),
                        password: minted.password,
                    },
                )
            }
            Err(e @ MintError::CacheFull { .. }) => {
                json_error(StatusCode::TOO_MANY_REQUESTS, &e.to_string())
            }
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    fn list_requests(&self, now: SystemTime) -> Response<Bytes> {
        match crate::enroll::queue::list(&*self.store, now) {
            Ok(views) => json(StatusCode::OK, &views),
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
        }
    }

    fn decide_request(
        &self,
        transaction_id: &str,
        verdict: crate::store::Verdict,
        body: &Bytes,
        now: SystemTime,
    ) -> Response<Bytes> {
        use crate::enroll::queue::{self, DecideBody, DecideResult};
        let transaction_id =
            percent_encoding::percent_decode_str(transaction_id).decode_utf8_lossy();
        let Ok(body) = serde_json::from_slice::<DecideBody>(body) else {
            return json_error(StatusCode::BAD_REQUEST, "body must be {\"by\": ...}");
        };
        match queue::decide(&*self.store, &transaction_id, verdict, &body.by, now) {
            DecideResult::Done(answer) => json(StatusCode::OK, &*answer),
            DecideResult::NotFound => json_error(
                StatusCode::NOT_FOUND,
                "no pending request with this transactionID",
            ),
            DecideResult::Expired => json_error(
                StatusCode::CONFLICT,
                "the request expired before it was decided",
            ),
            DecideResult::Failed(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
        }
    }

    fn list(&self, now: SystemTime) -> Response<Bytes> {
        match self.store.certificates() {
            Ok(records) => json(
                StatusCode::OK,
                &records
                    .iter()
                    .map(|r| CertView::new(r, now))
                    .collect::<Vec<_>>(),
            ),
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    fn show(&self, serial: &str, now: SystemTime) -> Response<Bytes> {
        let Some(serial) = parse_serial(serial) else {
            return json_error(StatusCode::BAD_REQUEST, "serial must be hex");
        };
        match self.store.certificate(&serial) {
            Ok(Some(record)) => json(StatusCode::OK, &CertView::new(&record, now)),
            Ok(None) => json_error(StatusCode::NOT_FOUND, "no certificate with this serial"),
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    /// `CaBackend::revoke` for a revocation the store recorded; the operator's notice, if any.
    fn tell_ca(&self, serial: &[u8], reason: &str, now: SystemTime) -> Option<String> {
        let ca = self.ca.as_ref()?;
        let reason = reason.parse::<scepd_ca::RevocationReason>().ok()?;
        match ca.revoke(serial, reason, now) {
            Ok(scepd_ca::RevokeAtCa::Recorded) => None,
            Ok(scepd_ca::RevokeAtCa::NotForwarded(notice)) => {
                tracing::warn!(serial = %hex::encode_upper(serial), "{notice}");
                Some(notice)
            }
            Err(e) => Some(format!("the CA was not told of the revocation: {e}")),
        }
    }

    fn revoke(&self, serial: &str, body: &Bytes, now: SystemTime) -> Response<Bytes> {
        let Some(serial) = parse_serial(serial) else {
            return json_error(StatusCode::BAD_REQUEST, "serial must be hex");
        };
        let Ok(body) = serde_json::from_slice::<RevokeBody>(body) else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "body must be {\"reason\": ..., \"by\": ...}",
            );
        };
        let connectors = self.connectors.as_deref();
        match revoke_reporting(
            &*self.store,
            connectors,
            &serial,
            &body.reason,
            &body.by,
            now,
        ) {
            RevokeResult::Done(mut answer) => {
                tracing::info!(serial = %answer.certificate.serial, reason = %body.reason, by = %body.by, outcome = %answer.outcome, "revocation");
                if answer.outcome == "revoked" {
                    answer.notice = self.tell_ca(&serial, &body.reason, now);
                }
                if answer.outcome == "revoked" {
                    if let Some(hook) = &self.on_revoked {
                        hook();
                    }
                }
                json(StatusCode::OK, &*answer)
            }
            RevokeResult::NotFound => {
                json_error(StatusCode::NOT_FOUND, "no certificate with this serial")
            }
            RevokeResult::BadReason(r) => {
                json_error(StatusCode::BAD_REQUEST, &format!("unknown reason {r:?}"))
            }
            RevokeResult::Failed(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
        }
    }
}

impl AdminApi {
    fn outbox_list(&self) -> Response<Bytes> {
        match crate::connector::admin::list(&*self.store) {
            Ok(views) => json(StatusCode::OK, &views),
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    fn outbox_retry(&self, body: &Bytes) -> Response<Bytes> {
        use crate::connector::admin::{RetryAnswer, RetryBody};
        let Ok(body) = serde_json::from_slice::<RetryBody>(body) else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "body must be {\"id\": ...} or {\"all\": true}",
            );
        };
        let id = match (&body.id, body.all) {
            (Some(id), false) => Some(id.as_str()),
            (None, true) => None,
            _ => return json_error(StatusCode::BAD_REQUEST, "give exactly one of id, all"),
        };
        match self.store.outbox_retry(id) {
            Ok(0) if id.is_some() => {
                json_error(StatusCode::NOT_FOUND, "no waiting event with this id")
            }
            Ok(due) => json(StatusCode::OK, &RetryAnswer { due }),
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    fn status(&self) -> Response<Bytes> {
        let default = crate::connector::ConnectorsConfig::default();
        let config = self.connectors.as_ref().map_or(&default, |c| c.config());
        match crate::connector::admin::status(&*self.store, config) {
            Ok(view) => json(StatusCode::OK, &view),
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    /// `POST /v1/webhook/revoke`: authenticated by the webhook's HMAC, revoked "by webhook".
    fn webhook_revoke(&self, request: &Request<Bytes>, now: SystemTime) -> Response<Bytes> {
        use crate::verifiers::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
        let Some(webhook) = self.connectors.as_ref().and_then(|c| c.webhook.clone()) else {
            return json_error(StatusCode::NOT_FOUND, "no [connector.webhook] configured");
        };
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        if let Err(why) = webhook.verify(
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            request.body(),
            now,
        ) {
            tracing::warn!(why, "webhook revocation refused");
            return json_error(StatusCode::UNAUTHORIZED, why);
        }
        let Ok(body) =
            serde_json::from_slice::<crate::connector::admin::WebhookRevokeBody>(request.body())
        else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "body must be {\"serial\": ..., \"reason\": ...}",
            );
        };
        let Some(serial) = parse_serial(&body.serial) else {
            return json_error(StatusCode::BAD_REQUEST, "serial must be hex");
        };
        let reason = body.reason.as_deref().unwrap_or("unspecified");
        self.revoke_bytes(&serial, reason, "webhook", now)
    }

    fn revoke_bytes(
        &self,
        serial: &[u8],
        reason: &str,
        by: &str,
        now: SystemTime,
    ) -> Response<Bytes> {
        match revoke_reporting(
            &*self.store,
            self.connectors.as_deref(),
            serial,
            reason,
            by,
            now,
        ) {
            RevokeResult::Done(answer) => {
                tracing::info!(serial = %answer.certificate.serial, reason, by, outcome = %answer.outcome, "revocation");
                if answer.outcome == "revoked" {
                    if let Some(hook) = &self.on_revoked {
                        hook();
                    }
                }
                json(StatusCode::OK, &*answer)
            }
            RevokeResult::NotFound => {
                json_error(StatusCode::NOT_FOUND, "no certificate with this serial")
            }
            RevokeResult::BadReason(r) => {
                json_error(StatusCode::BAD_REQUEST, &format!("unknown reason {r:?}"))
            }
            RevokeResult::Failed(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
        }
    }
}

/// Parses a serial given in hex, with or without `:` separators, any case.
pub fn parse_serial(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(cleaned).ok()?;
    (!bytes.is_empty()).then_some(bytes)
}

impl Handler for AdminApi {
    fn call(
        &self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Response<Bytes>> + Send + '_>> {
        Box::pin(async move { self.route(request) })
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Bytes> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn json_error(status: StatusCode, message: &str) -> Response<Bytes> {
    json(status, &serde_json::json!({ "error": message }))
}
