//! `[connector.intune]`, `[connector.webhook]` and `[outbox]` of scepd.toml: raw (serde) and
//! validated forms. `crate::config::Config::validate` calls [`validate`] and reports every
//! problem with the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ChallengeConfig, Template};
use crate::verifiers::webhook::Target;

/// `[connector]`: the connectors templates can report to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnectors {
    /// `[connector.intune]`.
    pub intune: Option<RawIntune>,
    /// `[connector.webhook]`.
    pub webhook: Option<RawWebhook>,
}

/// `[connector.intune]`: Microsoft Intune's third-party CA API (docs: shared intune.md §1-2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntune {
    /// Tenant id (GUID) or `*.onmicrosoft.com` domain.
    pub tenant: String,
    /// The Entra application (client) id.
    pub app_id: String,
    /// File with the client secret; read again at every token fetch (rotation without
    /// restart).
    pub client_secret_file: PathBuf,
    /// Default `https://login.microsoftonline.com/`.
    pub authority: Option<String>,
    /// Default `https://graph.microsoft.com/`.
    pub graph_url: Option<String>,
    /// Default `https://api.manage.microsoft.com/`.
    pub intune_resource_url: Option<String>,
    /// Default `<graph_url>.default`.
    pub graph_scope: Option<String>,
    /// Default `<intune_resource_url>/.default` (`https://api.manage.microsoft.com//.default`,
    /// byte for byte what Microsoft's libraries send).
    pub intune_scope: Option<String>,
    /// `callerInfo` of every call; default `scepd/<version>`.
    pub provider_name: Option<String>,
    /// Each HTTP exchange must end within this (default 30000).
    pub timeout_ms: Option<u64>,
    /// Deliver the certificate only once Intune accepted the success notification
    /// (default true, as Microsoft asks).
    pub wait_for_success_notification: Option<bool>,
    /// How long the success notification may take before the device gets FAILURE
    /// (default 30000).
    pub success_notification_deadline_ms: Option<u64>,
    /// Seconds between revocation downloads (default 300; 0 disables the loop).
    pub revocation_poll_secs: Option<u64>,
    /// `maxRequests` of each download, 1 to 500 (default 500).
    pub revocation_batch: Option<u32>,
    /// `caConfiguration` of success notifications (default `scepd\<ca name>`).
    pub ca_configuration: Option<String>,
    /// `certificateAuthority` of success notifications (default the `[ca] name`).
    pub certificate_authority: Option<String>,
}

/// `[connector.webhook]`: events POSTed to a URL with an HMAC signature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// https, or http to a loopback address.
    pub url: String,
    /// HMAC-SHA256 key of the signature (also authenticates inbound revocations).
    pub secret_file: PathBuf,
    /// Each delivery must end within this (default 5000).
    pub timeout_ms: Option<u64>,
    /// Deliver the certificate only once the webhook answered 2xx to its `issued` event.
    #[serde(default)]
    pub wait_for_delivery: bool,
    /// PEM CAs an https webhook must chain to (default: the system's).
    pub ca_file: Option<PathBuf>,
}

/// `[outbox]`: the bound and the retry timing of the connector outbox.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutbox {
    /// Events the outbox may hold; at this many, work that needs an event is refused.
    pub max_events: usize,
    /// First retry delay (doubles per attempt, with jitter).
    pub initial_backoff_ms: u64,
    /// Largest retry delay.
    pub max_backoff_ms: u64,
    /// How often the worker looks for due events.
    pub poll_interval_ms: u64,
}

impl Default for RawOutbox {
    fn default() -> Self {
        Self {
            max_events: 10_000,
            initial_backoff_ms: 5_000,
            max_backoff_ms: 300_000,
            poll_interval_ms: 1_000,
        }
    }
}

/// The validated connectors.
#[derive(Debug, Clone, Default)]
pub struct ConnectorsConfig {
    /// `[connector.intune]`.
    pub intune: Option<IntuneConfig>,
    /// `[connector.webhook]`.
    pub webhook: Option<WebhookConnectorConfig>,
    /// `[outbox]`.
    pub outbox: OutboxConfig,
    /// Which connector each template reports to (templates without one are absent).
    pub routes: BTreeMap<String, ConnectorKind>,
}

/// A connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    /// Microsoft Intune.
    Intune,
    /// The webhook.
    Webhook,
}

impl ConnectorKind {
    /// `intune` or `webhook`, as in the configuration and the events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intune => "intune",
            Self::Webhook => "webhook",
        }
    }

    /// The inverse of [`ConnectorKind::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "intune" => Some(Self::Intune),
            "webhook" => Some(Self::Webhook),
            _ => None,
        }
    }
}

/// `[connector.intune]`, validated.
#[derive(Debug, Clone)]
pub struct IntuneConfig {
    /// Tenant.
    pub tenant: String,
    /// Application id.
    pub app_id: String,
    /// Client secret file (read at each token fetch).
    pub client_secret_file: PathBuf,
    /// Ends with `/`.
    pub authority: String,
    /// Ends with `/`.
    pub graph_url: String,
    /// Scope of the Graph token.
    pub graph_scope: String,
    /// Scope of the Intune token.
    pub intune_scope: String,
    /// callerInfo.
    pub provider_name: String,
    /// Per exchange.
    pub timeout: Duration,
    /// Wait for the success notification before delivering.
    pub wait_for_success_notification: bool,
    /// Deadline of that wait.
    pub success_notification_deadline: Duration,
    /// Zero: no revocation loop.
    pub revocation_poll: Duration,
    /// maxRequests.
    pub revocation_batch: u32,
    /// caConfiguration.
    pub ca_configuration: String,
    /// certificateAuthority.
    pub certificate_authority: String,
}

/// `[connector.webhook]`, validated.
#[derive(Clone)]
pub struct WebhookConnectorConfig {
    /// URL.
    pub url: String,
    /// HMAC key.
    pub hmac_key: Vec<u8>,
    /// Per delivery.
    pub timeout: Duration,
    /// Wait for the issued event's 2xx before delivering the certificate.
    pub wait_for_delivery: bool,
    /// Pinned CAs for https.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for WebhookConnectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConnectorConfig")
            .field("url", &self.url)
            .field("hmac_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("wait_for_delivery", &self.wait_for_delivery)
            .finish()
    }
}

/// `[outbox]`, validated.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Bound.
    pub max_events: usize,
    /// First retry delay.
    pub initial_backoff: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
    /// Worker period.
    pub poll_interval: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        let raw = RawOutbox::default();
        Self {
            max_events: raw.max_events,
            initial_backoff: Duration::from_millis(raw.initial_backoff_ms),
            max_backoff: Duration::from_millis(raw.max_backoff_ms),
            poll_interval: Duration::from_millis(raw.poll_interval_ms),
        }
    }
}

/// `https://`, or `http://` to a loopback address (how tests reach a local stand-in).
fn check_url(key: &str, url: &str, errors: &mut Vec<String>) {
    match Target::parse(url) {
        Ok(target) if !target.tls && !target.is_loopback() => errors.push(format!(
            "{key}: {url:?}: http:// only to 127.0.0.1, ::1 or localhost; use https://"
        )),
        Ok(_) => {}
        Err(e) => errors.push(format!("{key}: {url:?}: {e}")),
    }
}

fn with_slash(url: String) -> String {
    if url.ends_with('/') {
        url
    } else {
        format!("{url}/")
    }
}

/// Validates `[connector.*]` and `[outbox]` and routes each template to its connector.
pub fn validate(
    raw: &RawConnectors,
    outbox: &RawOutbox,
    templates: &BTreeMap<String, Template>,
    ca_name: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<String>,
) -> ConnectorsConfig {
    let intune = raw
        .intune
        .as_ref()
        .map(|r| validate_intune(r, ca_name, resolve, errors));
    let webhook = raw
        .webhook
        .as_ref()
        .and_then(|r| validate_webhook(r, resolve, errors));
    if outbox.max_events == 0 {
        errors.push("outbox.max_events: at least 1".into());
    }
    if outbox.initial_backoff_ms == 0 || outbox.initial_backoff_ms > outbox.max_backoff_ms {
        errors.push("outbox.initial_backoff_ms: from 1 to max_backoff_ms".into());
    }
    if outbox.poll_interval_ms == 0 || outbox.poll_interval_ms > 3_600_000 {
        errors.push("outbox.poll_interval_ms: from 1 to 3600000".into());
    }
    let mut routes = BTreeMap::new();
    for (name, template) in templates {
        let implied =
            matches!(template.challenge, ChallengeConfig::Intune).then_some(ConnectorKind::Intune);
        let kind = match template.connector.as_deref() {
            None => implied,
            Some(named) => match ConnectorKind::parse(named) {
                Some(kind) => Some(kind),
                None => {
                    errors.push(format!(
                        "template {name}: connector = {named:?} is not one of intune, webhook"
                    ));
                    None
                }
            },
        };
        if implied.is_some() && template.manual_approval {
            errors.push(format!(
                "template {name}: manual_approval does not go with [challenge] type = \"intune\" \
                 (Intune's flow is synchronous: validate, issue, notify)"
            ));
        }
        if implied.is_some() && kind != implied {
            errors.push(format!(
                "template {name}: [challenge] type = \"intune\" reports to the intune connector"
            ));
        }
        match kind {
            Some(ConnectorKind::Intune) if intune.is_none() => errors.push(format!(
                "template {name}: needs a [connector.intune] section in scepd.toml"
            )),
            Some(ConnectorKind::Webhook) if raw.webhook.is_none() => errors.push(format!(
                "template {name}: needs a [connector.webhook] section in scepd.toml"
            )),
            _ => {}
        }
        if let Some(kind) = kind {
            routes.insert(name.clone(), kind);
        }
    }
    ConnectorsConfig {
        intune,
        webhook,
        outbox: OutboxConfig {
            max_events: outbox.max_events,
            initial_backoff: Duration::from_millis(outbox.initial_backoff_ms),
            max_backoff: Duration::from_millis(outbox.max_backoff_ms),
            poll_interval: Duration::from_millis(outbox.poll_interval_ms),
        },
        routes,
    }
}

fn validate_intune(
    raw: &RawIntune,
    ca_name: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<String>,
) -> IntuneConfig {
    let authority = with_slash(
        raw.authority
            .clone()
            .unwrap_or_else(|| "https://login.microsoftonline.com/".into()),
    );
    let graph_url = with_slash(
        raw.graph_url
            .clone()
            .unwrap_or_else(|| "https://graph.microsoft.com/".into()),
    );
    let intune_resource_url = raw
        .intune_resource_url
        .clone()
        .unwrap_or_else(|| "https://api.manage.microsoft.com/".into());
    check_url("connector.intune.authority", &authority, errors);
    check_url("connector.intune.graph_url", &graph_url, errors);
    let tenant_ok = !raw.tenant.is_empty()
        && raw
            .tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !tenant_ok {
        errors.push("connector.intune.tenant: a tenant id or domain".into());
    }
    if raw.app_id.trim().is_empty() {
        errors.push("connector.intune.app_id: the application (client) id".into());
    }
    let client_secret_file = resolve(&raw.client_secret_file);
    match std::fs::read_to_string(&client_secret_file) {
        Ok(text) if text.trim().is_empty() => errors.push(format!(
            "connector.intune.client_secret_file {}: empty",
            client_secret_file.display()
        )),
        Ok(_) => {}
        Err(e) => errors.push(format!(
            "connector.intune.client_secret_file {}: {e}",
            client_secret_file.display()
        )),
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(30_000);
    if !(1..=120_000).contains(&timeout_ms) {
        errors.push("connector.intune.timeout_ms: from 1 to 120000".into());
    }
    let deadline_ms = raw.success_notification_deadline_ms.unwrap_or(30_000);
    if !(1..=120_000).contains(&deadline_ms) {
        errors.push("connector.intune.success_notification_deadline_ms: from 1 to 120000".into());
    }
    let batch = raw.revocation_batch.unwrap_or(500);
    if !(1..=500).contains(&batch) {
        errors.push("connector.intune.revocation_batch: from 1 to 500".into());
    }
    IntuneConfig {
        tenant: raw.tenant.clone(),
        app_id: raw.app_id.trim().to_owned(),
        client_secret_file,
        graph_scope: raw
            .graph_scope
            .clone()
            .unwrap_or_else(|| format!("{graph_url}.default")),
        intune_scope: raw
            .intune_scope
            .clone()
            .unwrap_or_else(|| format!("{intune_resource_url}/.default")),
        authority,
        graph_url,
        provider_name: raw
            .provider_name
            .clone()
            .unwrap_or_else(|| format!("scepd/{}", env!("CARGO_PKG_VERSION"))),
        timeout: Duration::from_millis(timeout_ms),
        wait_for_success_notification: raw.wait_for_success_notification.unwrap_or(true),
        success_notification_deadline: Duration::from_millis(deadline_ms),
        revocation_poll: Duration::from_secs(raw.revocation_poll_secs.unwrap_or(300)),
        revocation_batch: batch,
        ca_configuration: raw
            .ca_configuration
            .clone()
            .unwrap_or_else(|| format!("scepd\\{ca_name}")),
        certificate_authority: raw
            .certificate_authority
            .clone()
            .unwrap_or_else(|| ca_name.to_owned()),
    }
}

fn validate_webhook(
    raw: &RawWebhook,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<String>,
) -> Option<WebhookConnectorConfig> {
    let before = errors.len();
    check_url("connector.webhook.url", &raw.url, errors);
    let secret_file = resolve(&raw.secret_file);
    let hmac_key = match std::fs::read_to_string(&secret_file) {
        Ok(text) => {
            let key = text.trim_end_matches(['\r', '\n']).as_bytes().to_vec();
            if key.is_empty() {
                errors.push("connector.webhook.secret_file: the HMAC key is empty".into());
            }
            key
        }
        Err(e) => {
            errors.push(format!(
                "connector.webhook.secret_file {}: {e}",
                secret_file.display()
            ));
            Vec::new()
        }
    };
    let timeout_ms = raw.timeout_ms.unwrap_or(5_000);
    if !(1..=60_000).contains(&timeout_ms) {
        errors.push("connector.webhook.timeout_ms: from 1 to 60000".into());
    }
    let ca_pem = raw.ca_file.as_ref().and_then(|file| {
        let file = resolve(file);
        match std::fs::read(&file) {
            Ok(pem) => Some(pem),
            Err(e) => {
                errors.push(format!("connector.webhook.ca_file {}: {e}", file.display()));
                None
            }
        }
    });
    (errors.len() == before).then(|| WebhookConnectorConfig {
        url: raw.url.clone(),
        hmac_key,
        timeout: Duration::from_millis(timeout_ms),
        wait_for_delivery: raw.wait_for_delivery,
        ca_pem,
    })
}
