//! The Intune connector: Microsoft's third-party CA API, exactly as the shared `intune.md`
//! §1-2 describes it (Microsoft's `Intune-Resource-Access` libraries).
//!
//! - OAuth2 client credentials at `{authority}{tenant}/oauth2/v2.0/token` (form POST:
//!   `grant_type=client_credentials`, `client_id`, `client_secret`, `scope`), one token per
//!   scope (Graph `.default`, Intune `https://api.manage.microsoft.com//.default`), cached
//!   until a minute before `expires_in` runs out, dropped when a call answers 401 or 403 (and
//!   that call is made once more with a fresh token). The client secret file is read at each
//!   token fetch, so a rotated secret needs no restart.
//! - Service discovery: `GET {graph}v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints`,
//!   `providerName` -> `uri`, cached; forgotten on any transport or HTTP failure of a call to a
//!   discovered service, so that a moved tenant is found again.
//! - `ScepActions/validateRequest|successNotification|failureNotification` with header
//!   `api-version: 2018-02-20`, and `CertificateAuthorityRequests/downloadRevocationRequests|uploadRevocationResults`
//!   with `api-version: 5019-05-05`; every call has a fresh `client-request-id` GUID (logged).
//!
//! Blocking, on the webhook verifier's client (`verifiers::webhook::send`): callers run on
//! tokio's blocking pool (enrollments) or in `spawn_blocking` (worker, revocation loop).

pub mod revocation;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::ssl::SslConnector;
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::IntuneConfig;
use crate::store::Event;
use crate::verifiers::webhook::{self, Target};

/// Intune's first-party application id (discovery).
pub const INTUNE_APP_ID: &str = "0000000a-0000-0000-c000-000000000000";
/// Validation and notifications.
pub const SCEP_SERVICE: &str = "ScepRequestValidationFEService";
/// Revocation.
pub const PKI_SERVICE: &str = "PkiConnectorFEService";
/// `api-version` of ScepActions.
pub const SCEP_API_VERSION: &str = "2018-02-20";
/// `api-version` of the revocation calls.
pub const PKI_API_VERSION: &str = "5019-05-05";
/// HRESULT of failure notifications: E_FAIL.
pub const E_FAIL: i64 = 0x8000_4005;
/// Longest `errorDescription` Intune accepts.
pub const MAX_DESCRIPTION: usize = 255;

/// A token is used until this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Why a call to Intune did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum IntuneError {
    /// No connection, no complete answer in time.
    #[error("transport: {0}")]
    Transport(String),
    /// An answer other than 2xx.
    #[error("HTTP {status}: {body}")]
    Http {
        /// The status.
        status: u16,
        /// The start of the body (Intune's `{"error": ...}`).
        body: String,
    },
    /// A 2xx answer whose `code` is not `Success`.
    #[error("Intune answered code {code}")]
    Refused {
        /// Intune's code (an open set: `ChallengeExpired`, `BadTenantIdInChallenge`, ...).
        code: String,
    },
    /// The answer is not what the API promises.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// Configuration (client secret file, URL).
    #[error("configuration: {0}")]
    Config(String),
}

impl IntuneError {
    /// The code to record: Intune's code, or `HTTP <status>`, `Timeout`/`Transport`.
    pub fn code(&self) -> String {
        match self {
            Self::Refused { code } => code.clone(),
            Self::Http { status, .. } => format!("HTTP{status}"),
            Self::Transport(_) => "Transport".into(),
            Self::Protocol(_) => "Protocol".into(),
            Self::Config(_) => "Configuration".into(),
        }
    }
}

/// One revocation request from Intune.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RevocationRequest {
    /// Echoed in the result.
    pub request_context: String,
    /// The certificate's serial as Intune knows it.
    pub serial_number: String,
    /// Optional.
    #[serde(default)]
    pub issuer_name: Option<String>,
    /// Optional.
    #[serde(default)]
    pub ca_configuration: Option<String>,
}

/// The client (one per server).
pub struct IntuneClient {
    config: IntuneConfig,
    tls: Option<SslConnector>,
    /// scope -> (token, usable until).
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// lowercase providerName -> uri.
    services: Mutex<Option<HashMap<String, String>>>,
}

impl std::fmt::Debug for IntuneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntuneClient")
            .field("tenant", &self.config.tenant)
            .finish_non_exhaustive()
    }
}

/// A fresh GUID for `client-request-id`.
fn guid() -> String {
    let mut b = [0u8; 16];
    let _ = openssl::rand::rand_bytes(&mut b);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(12..16).unwrap_or_default(),
        h.get(16..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    )
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

impl IntuneClient {
    /// A client for a validated configuration.
    pub fn new(config: IntuneConfig) -> Result<Self, String> {
        let tls = webhook::connector(None).map_err(|e| format!("TLS: {e}"))?;
        Ok(Self {
            config,
            tls: Some(tls),
            tokens: Mutex::default(),
            services: Mutex::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IntuneConfig {
        &self.config
    }

    fn send(
        &self,
        url: &str,
        method: &'static str,
        content_type: Option<&'static str>,
        headers: Vec<String>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), IntuneError> {
        let target = Target::parse(url).map_err(|e| IntuneError::Config(format!("{url}: {e}")))?;
        if !target.tls && !target.is_loopback() {
            return Err(IntuneError::Config(format!(
                "{url}: http:// only to a loopback address"
            )));
        }
        let tls = if target.tls { self.tls.clone() } else { None };
        webhook::send(
            &target,
            tls,
            self.config.timeout,
            (method, content_type),
            headers,
            body,
        )
        .map_err(IntuneError::Transport)
    }

    /// A token for `scope`, from the cache or the token endpoint.
    fn token(&self, scope: &str) -> Result<String, IntuneError> {
        if let Some((token, until)) = self.lock_tokens().get(scope) {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let secret = std::fs::read_to_string(&self.config.client_secret_file).map_err(|e| {
            IntuneError::Config(format!(
                "client_secret_file {}: {e}",
                self.config.client_secret_file.display()
            ))
        })?;
        let body = form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.config.app_id),
            ("client_secret", secret.trim()),
            ("scope", scope),
        ]);
        let url = format!(
            "{}{}/oauth2/v2.0/token",
            self.config.authority, self.config.tenant
        );
        let started = Instant::now();
        let (status, answer) = self.send(
            &url,
            "POST",
            Some("application/x-www-form-urlencoded"),
            vec![format!("client-request-id: {}", guid())],
            body.into_bytes(),
        )?;
        if !(200..300).contains(&status) {
            // The token endpoint's error JSON names the problem (AADSTS codes), not the secret.
            return Err(IntuneError::Http {
                status,
                body: truncate(&String::from_utf8_lossy(&answer), 300),
            });
        }
        let (token, lifetime) = parse_token(&answer)?;
        let until = started + Duration::from_secs(lifetime).saturating_sub(TOKEN_MARGIN);
        self.lock_tokens()
            .insert(scope.to_owned(), (token.clone(), until));
        tracing::debug!(scope, lifetime, "Intune connector: new access token");
        Ok(token)
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_services(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, String>>> {
        self.services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn drop_token(&self, scope: &str) {
        self.lock_tokens().remove(scope);
    }

    /// Forgets the discovered endpoints (after a failed call).
    pub fn forget_services(&self) {
        *self.lock_services() = None;
    }

    /// The URI of `service` (`ScepRequestValidationFEService`, `PkiConnectorFEService`).
    fn service_uri(&self, service: &str) -> Result<String, IntuneError> {
        if let Some(map) = self.lock_services().as_ref() {
            if let Some(uri) = map.get(&service.to_ascii_lowercase()) {
                return Ok(uri.clone());
            }
        }
        let map = self.discover()?;
        let uri = map.get(&service.to_ascii_lowercase()).cloned();
        *self.lock_services() = Some(map);
        uri.ok_or_else(|| {
            IntuneError::Protocol(format!(
                "service {service} not found by discovery (is the scep_challenge_provider role granted and consented?)"
            ))
        })
    }

    fn discover(&self) -> Result<HashMap<String, String>, IntuneError> {
        let url = format!(
            "{}v1.0/servicePrincipals/appId={INTUNE_APP_ID}/endpoints",
            self.config.graph_url
        );
        let scope = self.config.graph_scope.clone();
        let (status, body) = self.authorized(&scope, |token| {
            self.send(
                &url,
                "GET",
                None,
                vec![
                    format!("Authorization: Bearer {token}"),
                    format!("client-request-id: {}", guid()),
                ],
                Vec::new(),
            )
        })?;
        if !(200..300).contains(&status) {
            return Err(IntuneError::Http {
                status,
                body: truncate(&String::from_utf8_lossy(&body), 300),
            });
        }
        let map = parse_services(&body)?;
        tracing::info!(services = map.len(), "Intune connector: service discovery");
        Ok(map)
    }

    /// Runs `call` with a token for `scope`; on 401/403 drops the token and runs it once
    /// more with a fresh one.
    fn authorized(
        &self,
        scope: &str,
        call: impl Fn(&str) -> Result<(u16, Vec<u8>), IntuneError>,
    ) -> Result<(u16, Vec<u8>), IntuneError> {
        let token = self.token(scope)?;
        let (status, body) = call(&token)?;
        if status == 401 || status == 403 {
            tracing::info!(
                status,
                "Intune connector: token refused; fetching a new one"
            );
            self.drop_token(scope);
            let token = self.token(scope)?;
            return call(&token);
        }
        Ok((status, body))
    }

    /// POSTs `body` to `{service}/{suffix}`; a transport or HTTP failure forgets discovery.
    fn post(
        &self,
        service: &str,
        suffix: &str,
        api_version: &str,
        body: &Value,
    ) -> Result<Value, IntuneError> {
        let uri = self.service_uri(service)?;
        let url = format!("{uri}/{suffix}");
        let bytes = serde_json::to_vec(body).map_err(|e| IntuneError::Protocol(e.to_string()))?;
        let scope = self.config.intune_scope.clone();
        let result = self.authorized(&scope, |token| {
            let request_id = guid();
            tracing::debug!(%request_id, suffix, "Intune connector: call");
            self.send(
                &url,
                "POST",
                Some("application/json"),
                vec![
                    format!("Authorization: Bearer {token}"),
                    format!("client-request-id: {request_id}"),
                    format!("api-version: {api_version}"),
                    format!("UserAgent: {}", self.config.provider_name),
                ],
                bytes.clone(),
            )
        });
        let (status, answer) = match result {
            Ok(answer) => answer,
            Err(e) => {
                self.forget_services();
                return Err(e);
            }
        };
        if !(200..300).contains(&status) {
            self.forget_services();
            return Err(IntuneError::Http {
                status,
                body: truncate(&String::from_utf8_lossy(&answer), 300),
            });
        }
        serde_json::from_slice(&answer).map_err(|e| IntuneError::Protocol(format!("{suffix}: {e}")))
    }

    fn scep_action(&self, action: &str, body: &Value) -> Result<(), IntuneError> {
        let answer = self.post(
            SCEP_SERVICE,
            &format!("ScepActions/{action}"),
            SCEP_API_VERSION,
            body,
        )?;
        action_result(&answer, action)
    }

    /// validateRequest: `Ok` only for code `Success`.
    pub fn validate(&self, transaction_id: &str, csr_der: &[u8]) -> Result<(), IntuneError> {
        use base64::Engine;
        let body = json!({"request": {
            "transactionId": transaction_id,
            "certificateRequest": base64::engine::general_purpose::STANDARD.encode(csr_der),
            "callerInfo": self.config.provider_name,
        }});
        self.scep_action("validateRequest", &body)
    }

    /// successNotification for an `issued` event.
    pub fn success_notification(&self, event: &Event) -> Result<(), IntuneError> {
        use base64::Engine;
        let cert_der = event
            .certificate
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| IntuneError::Protocol("issued event without certificate".into()))?;
        let cert = openssl::x509::X509::from_der(&cert_der)
            .map_err(|e| IntuneError::Protocol(format!("certificate: {e}")))?;
        let thumbprint = hex::encode_upper(openssl::sha::sha1(&cert_der));
        let serial = cert
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
            .map_err(|e| IntuneError::Protocol(e.to_string()))?;
        let issuer = x509_issuer(&cert_der)?;
        let expiry = expiry_iso8601(&cert_der)?;
        let body = json!({"notification": {
            "transactionId": event.transaction_id,
            "certificateRequest": event.csr.clone().unwrap_or_default(),
            "certificateThumbprint": thumbprint,
            "certificateSerialNumber": serial.to_ascii_uppercase(),
            "certificateExpirationDateUtc": expiry,
            "issuingCertificateAuthority": issuer,
            "callerInfo": self.config.provider_name,
            "caConfiguration": self.config.ca_configuration,
            "certificateAuthority": self.config.certificate_authority,
        }});
        self.scep_action("successNotification", &body)
    }

    /// failureNotification for a `failed` event (HRESULT E_FAIL, description <= 255).
    pub fn failure_notification(&self, event: &Event) -> Result<(), IntuneError> {
        let description = match (&event.reason, &event.detail) {
            (Some(r), Some(d)) => format!("{r}: {d}"),
            (Some(r), None) => r.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => "the certificate request failed".into(),
        };
        let body = json!({"notification": {
            "transactionId": event.transaction_id,
            "certificateRequest": event.csr.clone().unwrap_or_default(),
            "hResult": E_FAIL,
            "errorDescription": truncate(&description, MAX_DESCRIPTION),
            "callerInfo": self.config.provider_name,
        }});
        self.scep_action("failureNotification", &body)
    }

    /// downloadRevocationRequests (at most `max`, 1..=500).
    pub fn download_revocations(&self, max: u32) -> Result<Vec<RevocationRequest>, IntuneError> {
        let body =
            json!({"downloadParameters": {"maxRequests": max.clamp(1, 500), "issuerName": null}});
        let answer = self.post(
            PKI_SERVICE,
            "CertificateAuthorityRequests/downloadRevocationRequests",
            PKI_API_VERSION,
            &body,
        )?;
        parse_download(&answer)
    }

    /// uploadRevocationResults; `Ok` when Intune answers `{"value": true}`.
    pub fn upload_results(&self, results: &[Value]) -> Result<(), IntuneError> {
        let body = json!({ "results": results });
        let answer = self.post(
            PKI_SERVICE,
            "CertificateAuthorityRequests/uploadRevocationResults",
            PKI_API_VERSION,
            &body,
        )?;
        match answer.get("value") {
            Some(Value::Bool(true)) => Ok(()),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(()),
            other => Err(IntuneError::Protocol(format!(
                "upload answered {other:?}, not true"
            ))),
        }
    }
}

/// The token endpoint's answer: the access token and its lifetime in seconds.
fn parse_token(answer: &[u8]) -> Result<(String, u64), IntuneError> {
    #[derive(Deserialize)]
    struct TokenAnswer {
        access_token: String,
        #[serde(default)]
        expires_in: Option<Value>,
    }
    let parsed: TokenAnswer = serde_json::from_slice(answer)
        .map_err(|e| IntuneError::Protocol(format!("token answer: {e}")))?;
    let lifetime = match parsed.expires_in {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 3600,
    };
    Ok((parsed.access_token, lifetime))
}

/// Graph's endpoints answer: lowercase providerName (or AAD Graph's serviceName) -> uri.
fn parse_services(body: &[u8]) -> Result<HashMap<String, String>, IntuneError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| IntuneError::Protocol(format!("discovery: {e}")))?;
    let mut map = HashMap::new();
    for entry in value
        .get("value")
        .and_then(Value::as_array)
        .ok_or_else(|| IntuneError::Protocol("discovery: no value array".into()))?
    {
        let name = entry
            .get("providerName")
            .or_else(|| entry.get("serviceName"))
            .and_then(Value::as_str);
        let uri = entry.get("uri").and_then(Value::as_str);
        if let (Some(name), Some(uri)) = (name, uri) {
            map.insert(
                name.to_ascii_lowercase(),
                uri.trim_end_matches('/').to_owned(),
            );
        }
    }
    Ok(map)
}

/// A ScepActions result: `Ok` only for code `Success`; the code is an open set.
fn action_result(answer: &Value, action: &str) -> Result<(), IntuneError> {
    match answer.get("code").and_then(Value::as_str) {
        Some("Success") => Ok(()),
        Some(code) => Err(IntuneError::Refused {
            code: truncate(code, 100),
        }),
        None => Err(IntuneError::Protocol(format!("{action}: no code"))),
    }
}

/// downloadRevocationRequests' answer.
fn parse_download(answer: &Value) -> Result<Vec<RevocationRequest>, IntuneError> {
    let value = answer
        .get("value")
        .cloned()
        .ok_or_else(|| IntuneError::Protocol("download: no value".into()))?;
    serde_json::from_value(value).map_err(|e| IntuneError::Protocol(format!("download: {e}")))
}

/// Entry point for the cargo-fuzz target `connector_answers` (design rule 5). Not API.
#[doc(hidden)]
pub mod fuzzing {
    /// Reads `bytes` as each answer the Intune client parses (token, discovery, ScepActions
    /// result, revocation download), as an inbound webhook revocation body and as a serial
    /// from Intune; must never panic.
    pub fn answers(bytes: &[u8]) {
        let _ = super::parse_token(bytes);
        let _ = super::parse_services(bytes);
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            let _ = super::action_result(&value, "fuzz");
            let _ = super::parse_download(&value);
        }
        let _ = serde_json::from_slice::<crate::connector::admin::WebhookRevokeBody>(bytes);
        super::revocation::fuzzing::serial(&String::from_utf8_lossy(bytes));
    }
}

fn parse_cert(der: &[u8]) -> Result<x509_cert::Certificate, IntuneError> {
    use der::Decode;
    x509_cert::Certificate::from_der(der).map_err(|e| IntuneError::Protocol(e.to_string()))
}

fn x509_issuer(der: &[u8]) -> Result<String, IntuneError> {
    Ok(scepd_ca::format_dn(
        &parse_cert(der)?.tbs_certificate.issuer,
    ))
}

/// notAfter as `YYYY-MM-DDThh:mm:ss.000Z`.
fn expiry_iso8601(der: &[u8]) -> Result<String, IntuneError> {
    let cert = parse_cert(der)?;
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration();
    let t = i64::try_from(not_after.as_secs())
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| IntuneError::Protocol("notAfter out of range".into()))?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_cut_at_255_bytes_on_a_char_boundary() {
        let long = "é".repeat(200);
        let cut = truncate(&long, MAX_DESCRIPTION);
        assert!(cut.len() <= MAX_DESCRIPTION);
        assert_eq!(cut.len() % 2, 0);
        assert_eq!(truncate("short", MAX_DESCRIPTION), "short");
    }

    #[test]
    fn answers_are_read_as_microsoft_sends_them_and_garbage_never_panics() {
        let (token, lifetime) =
            parse_token(br#"{"token_type":"Bearer","expires_in":"3599","access_token":"t"}"#)
                .unwrap_or_default();
        assert_eq!((token.as_str(), lifetime), ("t", 3599));
        let services = parse_services(
            br#"{"value":[{"providerName":"PkiConnectorFEService","uri":"https://x/y/"},{"serviceName":"ScepRequestValidationFEService","uri":"https://z"}]}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            services.get("pkiconnectorfeservice").map(String::as_str),
            Some("https://x/y")
        );
        assert!(services.contains_key(&"ScepRequestValidationFEService".to_ascii_lowercase()));
        let refused = action_result(&json!({"code": "BadDeviceTypeInChallenge"}), "v");
        assert!(
            matches!(refused, Err(IntuneError::Refused { code }) if code == "BadDeviceTypeInChallenge")
        );
        // Bounded mutations of the seeds: truncations and single-byte changes.
        let seeds: [&[u8]; 3] = [
            br#"{"token_type":"Bearer","expires_in":3599,"access_token":"t"}"#,
            br#"{"value":[{"requestContext":"c","serialNumber":"0A","issuerName":null}]}"#,
            br#"{"serial":"3F2A","reason":"keyCompromise"}"#,
        ];
        for seed in seeds {
            for at in 0..seed.len() {
                fuzzing::answers(seed.get(..at).unwrap_or_default());
                let mut mutated = seed.to_vec();
                if let Some(b) = mutated.get_mut(at) {
                    *b ^= 0x5a;
                }
                fuzzing::answers(&mutated);
            }
        }
    }

    #[test]
    fn guids_have_the_usual_shape() {
        let g = guid();
        assert_eq!(g.len(), 36);
        assert_eq!(g.matches('-').count(), 4);
    }

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(
            form_encode(&[("scope", "https://api.manage.microsoft.com//.default")]),
            "scope=https%3A%2F%2Fapi%2Emanage%2Emicrosoft%2Ecom%2F%2F%2Edefault"
        );
    }
}
