//! Configuration: `scepd.toml` plus one TOML file per template in the templates directory.
//!
//! Raw (serde, `deny_unknown_fields`) types are turned into validated types once, at start-up,
//! and every problem is reported at once (design.md §7 rule 7). Relative paths are resolved
//! against the directory that holds `scepd.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// Default bound on a POSTed pkiMessage (issue 3: 2 MiB, as smallstep's maxPayloadSize).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 << 20;
/// Default bound on the HTTP request line and headers: Intune's GETs exceed 40 KB.
pub const DEFAULT_MAX_REQUEST_LINE_BYTES: usize = 128 << 10;

/// Every problem found in the configuration and the templates, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// `scepd.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The SCEP listeners and their limits.
    #[serde(default)]
    pub server: RawServer,
    /// Optional HTTPS listener.
    pub tls: Option<RawTls>,
    /// The admin API listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// The issuing CA.
    pub ca: RawCa,
    /// RA certificates; without them the CA key decrypts requests and signs replies.
    pub ra: Option<RawRa>,
    /// The embedded store.
    #[serde(default)]
    pub store: RawStore,
    /// Where templates live and which one serves the unnamed paths.
    #[serde(default)]
    pub templates: RawTemplates,
    /// The published CRL.
    #[serde(default)]
    pub crl: RawCrl,
    /// The OCSP responder.
    #[serde(default)]
    pub ocsp: RawOcsp,
    /// NDES's one-time-password page `/certsrv/mscep_admin/`.
    #[serde(default)]
    pub ndes_admin: RawNdesAdmin,
    /// `[signed_challenge]`: whom templates with `type = "signed"` trust.
    pub signed_challenge: Option<RawSignedChallenge>,
    /// `[connector.intune]`, `[connector.webhook]`: where connector events go.
    #[serde(default)]
    pub connector: crate::connector::config::RawConnectors,
    /// `[outbox]`: the connector outbox's bound and retry timing.
    #[serde(default)]
    pub outbox: crate::connector::config::RawOutbox,
    /// `[cas.<name>]`: further CAs, each serving the templates that name it (`ca = "<name>"`).
    #[serde(default)]
    pub cas: BTreeMap<String, RawExtraCa>,
    /// `[pkcs11]`: the token that holds the keys named by `key_label`s.
    pub pkcs11: Option<crate::pkcs11::RawPkcs11>,
}

/// `[cas.<name>]`: a further software CA and, optionally, its RA certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExtraCa {
    /// CA certificate, PEM.
    pub cert: PathBuf,
    /// CA private key, PEM (optionally encrypted).
    pub key: PathBuf,
    /// Certificates above the CA (PEM, issuer first), served with it.
    pub chain: Option<PathBuf>,
    /// Environment variable holding the key's passphrase.
    pub key_passphrase_env: Option<String>,
    /// File holding the key's passphrase.
    pub key_passphrase_file: Option<PathBuf>,
    /// `[cas.<name>.ra]`: its RA certificates; without, the CA key decrypts and signs.
    pub ra: Option<RawRa>,
}

/// A further CA (`[cas.<name>]`), validated.
#[derive(Debug, Clone)]
pub struct ExtraCa {
    /// Its name: in `ca = "<name>"` of templates, in `/crl/<name>.crl`, and as the
    /// `message` of GetCACert on a path without a template.
    pub name: String,
    /// Its certificate and key.
    pub ca: CaConfig,
    /// Its RA certificates.
    pub ra: Option<RaConfig>,
}

/// `[signed_challenge]`: the trust of the signed-challenge verifier (docs/challenge-format.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignedChallenge {
    /// Allowed clock difference in seconds (default 300).
    #[serde(default = "default_signed_skew_seconds")]
    pub skew_seconds: u64,
    /// Longest accepted `exp - nbf`, in days (default 30).
    #[serde(default = "default_signed_max_lifetime_days")]
    pub max_lifetime_days: u64,
    /// The certificate MDMs encrypt challenges to (PEM); default: the RA encryption
    /// certificate in service.
    pub decrypt_cert: Option<PathBuf>,
    /// Its RSA key (PEM, unencrypted).
    pub decrypt_key: Option<PathBuf>,
    /// Trusted MDM signers (`[[signed_challenge.signer]]`), several so that keys can rotate.
    #[serde(default)]
    pub signer: Vec<RawTrustedSigner>,
}

fn default_signed_skew_seconds() -> u64 {
    300
}

fn default_signed_max_lifetime_days() -> u64 {
    30
}

/// One `[[signed_challenge.signer]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedSigner {
    /// PEM file of one or more certificates: the MDM's signing certificate, or a CA above it.
    pub certs: PathBuf,
    /// When set, blobs signed under these certificates must carry this `iss`.
    pub issuer: Option<String>,
}

/// `[signed_challenge]`, validated: the trust and, when configured, a dedicated decryption
/// key (otherwise the RA encryption keys in service decrypt).
#[derive(Debug)]
pub struct SignedChallengeSettings {
    /// Trusted signers, skew and longest lifetime.
    pub trust: scepd_policy::SignedChallengeTrust,
    /// The dedicated decryption key, if any.
    pub decryption: Option<scepd_policy::DecryptionKey>,
}

/// `[ndes_admin]`: NDES's password page on the SCEP listener(s), behind HTTP Basic auth.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNdesAdmin {
    /// Serve `/certsrv/mscep_admin/` (default false).
    pub enabled: bool,
    /// The template whose one-time passwords the page hands out (its challenge type must be
    /// `otp`).
    pub template: String,
    /// `user:sha256-hex-of-password:enroll` lines (see `verifiers::ndes_admin`).
    pub users_file: Option<PathBuf>,
}

impl Default for RawNdesAdmin {
    fn default() -> Self {
        Self {
            enabled: false,
            template: "default".into(),
            users_file: None,
        }
    }
}

/// `[ndes_admin]`, validated and enabled.
#[derive(Debug, Clone)]
pub struct NdesAdminConfig {
    /// Lowercase template name; its challenge is `otp`.
    pub template: String,
    /// Who may sign in.
    pub users: Vec<NdesUser>,
}

/// One line of the `[ndes_admin] users_file`.
#[derive(Clone)]
pub struct NdesUser {
    /// The Basic-auth user name.
    pub name: String,
    /// SHA-256 of the password.
    pub password_digest: [u8; 32],
    /// Whether the user may obtain passwords (`enroll` permission).
    pub may_enroll: bool,
}

impl std::fmt::Debug for NdesUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NdesUser")
            .field("name", &self.name)
            .field("may_enroll", &self.may_enroll)
            .finish_non_exhaustive()
    }
}

/// `[ocsp]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOcsp {
    /// Who signs responses: `ca` (the CA key) or `delegated` (a responder certificate that
    /// scepd issues from the CA and renews itself).
    pub responder: String,
    /// Validity of a delegated responder certificate, in days; renewed at half of it.
    pub responder_validity_days: u32,
}

impl Default for RawOcsp {
    fn default() -> Self {
        Self {
            responder: "ca".into(),
            responder_validity_days: 7,
        }
    }
}

/// `[crl]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCrl {
    /// nextUpdate - thisUpdate of each CRL, in hours; the server re-signs at half of it.
    pub next_update_hours: u64,
}

impl Default for RawCrl {
    fn default() -> Self {
        Self {
            next_update_hours: 24,
        }
    }
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Plain-HTTP listener; empty string disables it.
    pub listen: String,
    /// Largest POST body.
    pub max_body_bytes: usize,
    /// Largest request line plus headers (GET PKIOperation carries the message in the URL).
    pub max_request_line_bytes: usize,
    /// Connections served at once; further ones wait in the kernel backlog.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout_secs: u64,
    /// Time a whole request (including its body) may take.
    pub request_timeout_secs: u64,
    /// PKIOperations waiting for a crypto thread before new ones get 503.
    pub max_queued_operations: usize,
    /// Accept single-DES requests on every path (RFC 8894 forbids it; old clients need it).
    pub legacy_algorithms: bool,
    /// The URL clients reach this server at (`http://scep.example.com:8080`): issued
    /// certificates name `<public_url>/crl/<ca name>.crl` and `<public_url>/ocsp`.
    pub public_url: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_request_line_bytes: DEFAULT_MAX_REQUEST_LINE_BYTES,
            max_connections: 4096,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_queued_operations: 256,
            legacy_algorithms: false,
            public_url: None,
        }
    }
}

/// `[tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// HTTPS listener address.
    pub listen: String,
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Server private key, PEM.
    pub key: PathBuf,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Admin API listener; keep it on loopback.
    pub listen: String,
    /// File holding the bearer token.
    pub token_file: PathBuf,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            token_file: "admin.token".into(),
        }
    }
}

/// `[ca]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCa {
    /// CA certificate, PEM (with `backend = "upstream"`: the upstream CA's certificate).
    pub cert: PathBuf,
    /// CA private key, PEM (optionally encrypted); none with `backend = "upstream"`.
    #[serde(default)]
    pub key: PathBuf,
    /// The CA key's label in the `[pkcs11]` token, instead of `key`.
    pub key_label: Option<String>,
    /// `software` (default: scepd signs with `key`) or `upstream` (an upstream SCEP CA issues,
    /// see `[ca.upstream]` and src/upstream/).
    pub backend: Option<String>,
    /// `[ca.upstream]`: the upstream SCEP CA, with `backend = "upstream"`.
    pub upstream: Option<crate::upstream::RawUpstream>,
    /// Certificates above the CA (PEM, issuer first), served with it.
    pub chain: Option<PathBuf>,
    /// Environment variable holding the key's passphrase.
    pub key_passphrase_env: Option<String>,
    /// File holding the key's passphrase.
    pub key_passphrase_file: Option<PathBuf>,
    /// The CA's name in URLs: the CRL is served at `/crl/<name>.crl` (default `ca`).
    pub name: Option<String>,
}

/// `[ra]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRa {
    /// RA signing certificate (digitalSignature): signs CertReps.
    pub sign_cert: PathBuf,
    /// Its key; absent with `sign_key_label`.
    #[serde(default)]
    pub sign_key: PathBuf,
    /// The signing key's label in the `[pkcs11]` token, instead of `sign_key`.
    pub sign_key_label: Option<String>,
    /// RA encryption certificate (keyEncipherment): requests are encrypted to it.
    pub encrypt_cert: PathBuf,
    /// Its key; absent with `encrypt_key_label`.
    #[serde(default)]
    pub encrypt_key: PathBuf,
    /// The encryption key's label in the `[pkcs11]` token, instead of `encrypt_key`.
    pub encrypt_key_label: Option<String>,
    /// Renew an RA certificate this many days before it expires (default 30).
    #[serde(default = "default_ra_renew_before_days")]
    pub renew_before_days: u32,
}

fn default_ra_renew_before_days() -> u32 {
    30
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// The sled directory.
    pub path: PathBuf,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            path: "store".into(),
        }
    }
}

/// `[templates]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTemplates {
    /// Directory of `<name>.toml` files.
    pub dir: PathBuf,
    /// Template serving `/scep`, `/cgi-bin/pkiclient.exe` and the NDES paths.
    pub default: String,
}

impl Default for RawTemplates {
    fn default() -> Self {
        Self {
            dir: "templates".into(),
            default: "default".into(),
        }
    }
}

/// One template file (`templates/<name>.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    /// Free text for admins.
    #[serde(default)]
    pub description: String,
    /// Append the CA chain after the issued certificate in SUCCESS replies.
    #[serde(default)]
    pub include_chain: bool,
    /// Accept single-DES requests on this template's path.
    #[serde(default)]
    pub legacy_algorithms: bool,
    /// How requests are authorised.
    pub challenge: RawChallenge,
    /// NDES-style choice of template by the key usage the CSR asks for.
    pub key_usage_routing: Option<RawRouting>,
    /// What the CA puts in the certificate.
    #[serde(default = "empty_issuance")]
    pub issuance: toml::Value,
    /// PKCSReq answers PENDING after policy approval; an admin approves or rejects.
    #[serde(default)]
    pub manual_approval: bool,
    /// Hours after which a pending request expires (default 72).
    pub pending_expiry_hours: Option<u32>,
    /// `[renewal]`: RenewalReq rules.
    #[serde(default)]
    pub renewal: RawRenewal,
    /// The connector this template's events go to: `intune` or `webhook` (implied by
    /// `[challenge] type = "intune"`).
    pub connector: Option<String>,
    /// The CA that issues for this template: a `[cas.<name>]` of scepd.toml (default: `[ca]`).
    pub ca: Option<String>,
}

/// `[renewal]`: who may renew, when, and what happens to the old certificate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRenewal {
    /// Renewal only in the last N days of the old certificate (absent: any time it is valid).
    pub allowed_days_before_expiry: Option<u32>,
    /// Revoke the old certificate (reason superseded) once the new one is issued.
    #[serde(default)]
    pub revoke_superseded: bool,
    /// A PKCSReq signed by a certificate we issued is handled as a RenewalReq (Cisco).
    #[serde(default)]
    pub treat_signed_pkcsreq_as_renewal: bool,
    /// The new certificate must have the old one's subject (default true).
    pub require_same_subject: Option<bool>,
}

fn empty_issuance() -> toml::Value {
    toml::Value::Table(Default::default())
}

/// `[challenge]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChallenge {
    /// `static` (one shared secret), `otp` (one-time passwords as NDES issues them),
    /// `webhook` (ask a URL) or `none` (no challenge: only for closed networks).
    #[serde(rename = "type")]
    pub kind: String,
    /// The shared secret, inline (`static`).
    pub secret: Option<String>,
    /// A file holding the shared secret (`static`), or the HMAC key the webhook requests are
    /// signed with (`webhook`); trailing newline ignored.
    pub secret_file: Option<PathBuf>,
    /// Minutes a one-time password stays valid (`otp`, default 60).
    pub ttl_minutes: Option<u64>,
    /// Unused passwords a template may have at once (`otp`, default 5).
    pub max_outstanding: Option<usize>,
    /// Where the webhook POSTs (`webhook`): https, or http to a loopback address.
    pub url: Option<String>,
    /// How long the webhook may take to answer, in milliseconds (`webhook`, default 5000).
    pub timeout_ms: Option<u64>,
    /// PEM certificates an https webhook's server certificate must chain to (`webhook`;
    /// default: the system's trusted CAs).
    pub ca_file: Option<PathBuf>,
}

/// `[key_usage_routing]`: NDES's SignatureTemplate / EncryptionTemplate / GeneralPurposeTemplate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Template for CSRs asking for digitalSignature without keyEncipherment.
    pub signature: Option<String>,
    /// Template for CSRs asking for keyEncipherment without digitalSignature.
    pub encryption: Option<String>,
    /// Template for everything else (default: this template).
    pub general_purpose: Option<String>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Directory holding scepd.toml; relative paths were resolved against it.
    pub base_dir: PathBuf,
    /// Plain HTTP listener.
    pub listen: Option<SocketAddr>,
    /// HTTPS listener.
    pub tls: Option<TlsConfig>,
    /// Admin API.
    pub admin: AdminConfig,
    /// Limits.
    pub limits: Limits,
    /// Single DES accepted on every path.
    pub legacy_algorithms: bool,
    /// CA key material locations.
    pub ca: CaConfig,
    /// `[ca.upstream]` when `[ca] backend = "upstream"`: an upstream SCEP CA issues.
    pub upstream: Option<crate::upstream::UpstreamConfig>,
    /// RA key material locations.
    pub ra: Option<RaConfig>,
    /// Store directory.
    pub store_path: PathBuf,
    /// Templates by name.
    pub templates: BTreeMap<String, Template>,
    /// Name of the default template.
    pub default_template: String,
    /// `[server] public_url`, without a trailing `/`.
    pub public_url: Option<String>,
    /// `[ca] name`: the CRL's file name is `<ca_name>.crl`.
    pub ca_name: String,
    /// `[crl] next_update_hours`.
    pub crl_next_update: Duration,
    /// `[ocsp]`: `Some(validity_days)` when a delegated responder signs, `None` for the CA.
    pub ocsp_delegated_days: Option<u32>,
    /// `[ndes_admin]`, when enabled.
    pub ndes_admin: Option<NdesAdminConfig>,
    /// `[signed_challenge]`, when present (also handed to each `type = "signed"` template).
    pub signed_challenge: Option<Arc<SignedChallengeSettings>>,
    /// `[connector.*]` and `[outbox]`, with each template's connector.
    pub connectors: crate::connector::config::ConnectorsConfig,
    /// `[cas.<name>]`: the CAs besides `[ca]`.
    pub extra_cas: Vec<ExtraCa>,
    /// `[pkcs11]` and the key labels, when keys are in a token.
    pub pkcs11: Option<crate::pkcs11::Pkcs11Config>,
}

/// What issued certificates point to when their template names no URLs of its own.
#[derive(Debug, Clone, Default)]
pub struct IssuanceDefaults {
    /// cRLDistributionPoints.
    pub crl_distribution_points: Vec<String>,
    /// authorityInfoAccess id-ad-ocsp.
    pub ocsp_urls: Vec<String>,
}

impl IssuanceDefaults {
    /// The CRL URLs for a template of the CA `ca` (`None`: `[ca]`): each CA's certificates
    /// name its own CRL, `<public_url>/crl/<ca>.crl`.
    pub fn crl_urls_for(&self, ca: Option<&str>) -> Vec<String> {
        let Some(ca) = ca else {
            return self.crl_distribution_points.clone();
        };
        self.crl_distribution_points
            .iter()
            .map(|url| match url.rfind("/crl/") {
                Some(at) => format!("{}/crl/{}.crl", &url[..at], ca.to_ascii_lowercase()),
                None => url.clone(),
            })
            .collect()
    }

    /// From `[server] public_url` and `[ca] name`; none without a public URL.
    pub fn from_public_url(public_url: Option<&str>, ca_name: &str) -> Self {
        match public_url {
            Some(url) => Self {
                crl_distribution_points: vec![format!("{url}/crl/{ca_name}.crl")],
                ocsp_urls: vec![format!("{url}/ocsp")],
            },
            None => Self::default(),
        }
    }
}

/// HTTP limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest POST body.
    pub max_body_bytes: usize,
    /// Largest request line plus headers.
    pub max_request_line_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Header read timeout.
    pub header_read_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Queue bound for PKIOperations.
    pub max_queued_operations: usize,
}

/// `[tls]`, validated.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Address.
    pub listen: SocketAddr,
    /// Certificate chain PEM.
    pub cert: PathBuf,
    /// Key PEM.
    pub key: PathBuf,
}

/// `[admin]`, validated.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address (loopback by default).
    pub listen: SocketAddr,
    /// Token file.
    pub token_file: PathBuf,
}

/// `[ca]`, validated.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Certificate PEM.
    pub cert: PathBuf,
    /// Key PEM.
    pub key: PathBuf,
    /// Chain PEM.
    pub chain: Option<PathBuf>,
    /// Where the passphrase comes from.
    pub passphrase: Passphrase,
}

/// Where a key passphrase comes from: never the command line.
#[derive(Debug, Clone)]
pub enum Passphrase {
    /// Unencrypted key.
    None,
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
}

/// `[ra]`, validated.
#[derive(Debug, Clone)]
pub struct RaConfig {
    /// Signing certificate.
    pub sign_cert: PathBuf,
    /// Signing key.
    pub sign_key: PathBuf,
    /// Encryption certificate.
    pub encrypt_cert: PathBuf,
    /// Encryption key.
    pub encrypt_key: PathBuf,
    /// The renewal window: an RA certificate expiring within it is renewed.
    pub renew_before: std::time::Duration,
}

/// A validated template.
#[derive(Debug)]
pub struct Template {
    /// File stem; also the URL segment of `/scep/<name>`.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Append the CA chain in SUCCESS replies.
    pub include_chain: bool,
    /// Single DES accepted on this template's path.
    pub legacy_algorithms: bool,
    /// How requests are authorised.
    pub challenge: ChallengeConfig,
    /// Key-usage routing to other templates.
    pub routing: Routing,
    /// The CA profile.
    pub profile: scepd_ca::Profile,
    /// PKCSReq answers PENDING until an admin approves.
    pub manual_approval: bool,
    /// How long a pending request waits for a decision.
    pub pending_expiry: std::time::Duration,
    /// RenewalReq rules.
    pub renewal: RenewalPolicy,
    /// `connector = "intune" | "webhook"`, as written.
    pub connector: Option<String>,
    /// The `[cas.<name>]` that issues for it; `None` for `[ca]`.
    pub ca: Option<String>,
}

/// A template's renewal rules (`[renewal]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// Renewal only within this long before the old certificate's notAfter.
    pub allowed_before_expiry: Option<std::time::Duration>,
    /// Revoke the old certificate (superseded) after issuing the new one.
    pub revoke_superseded: bool,
    /// A PKCSReq signed by one of our certificates is a renewal.
    pub treat_signed_pkcsreq_as_renewal: bool,
    /// The new certificate's subject must equal the old one's.
    pub require_same_subject: bool,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            allowed_before_expiry: None,
            revoke_superseded: false,
            treat_signed_pkcsreq_as_renewal: false,
            require_same_subject: true,
        }
    }
}

/// Default lifetime of a pending request.
pub const DEFAULT_PENDING_EXPIRY_HOURS: u32 = 72;

/// How a template authorises requests.
#[derive(Clone)]
pub enum ChallengeConfig {
    /// A shared secret.
    Static(Vec<u8>),
    /// One-time passwords (`scepd challenge otp`, the admin API, `/certsrv/mscep_admin/`).
    Otp(OtpConfig),
    /// An HTTP endpoint decides.
    Webhook(WebhookConfig),
    /// A signed, encrypted challenge blob (docs/challenge-format.md), checked against the
    /// server's `[signed_challenge]` trust, which `Config::load` fills in (`None` only for a
    /// template loaded on its own).
    Signed(Option<Arc<SignedChallengeSettings>>),
    /// Intune's own challenge, validated by Intune (`[connector.intune]`, validateRequest).
    Intune,
    /// No challenge.
    None,
}

/// Default lifetime of a one-time password (NDES: 60 minutes).
pub const DEFAULT_OTP_TTL_MINUTES: u64 = 60;
/// Default cap on unused one-time passwords per template (NDES: 5).
pub const DEFAULT_OTP_MAX_OUTSTANDING: usize = 5;
/// Default webhook timeout.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 5000;

/// `[challenge] type = "otp"`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtpConfig {
    /// How long a password stays valid.
    pub ttl: Duration,
    /// Unused passwords the template may have at once.
    pub max_outstanding: usize,
}

/// `[challenge] type = "webhook"`, validated.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The URL, `http://` (loopback only) or `https://`.
    pub url: String,
    /// The whole exchange must end within this.
    pub timeout: Duration,
    /// HMAC-SHA256 key for the `X-Scepd-Signature` header, if configured.
    pub hmac_key: Option<Vec<u8>>,
    /// PEM of the CAs an https webhook must chain to (`ca_file`), instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ChallengeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("Static(<redacted>)"),
            Self::Otp(otp) => write!(f, "Otp({otp:?})"),
            Self::Signed(settings) => write!(f, "Signed(configured: {})", settings.is_some()),
            Self::Webhook(w) => write!(
                f,
                "Webhook {{ url: {:?}, timeout: {:?}, hmac_key: {} }}",
                w.url,
                w.timeout,
                if w.hmac_key.is_some() {
                    "<redacted>"
                } else {
                    "none"
                }
            ),
            Self::Intune => f.write_str("Intune"),
            Self::None => f.write_str("None"),
        }
    }
}

/// NDES-style routing by requested key usage.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// digitalSignature only.
    pub signature: Option<String>,
    /// keyEncipherment only.
    pub encryption: Option<String>,
    /// Everything else.
    pub general_purpose: Option<String>,
}

impl Config {
    /// Reads and validates `scepd.toml` and every template, reporting all problems at once.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        let raw: RawConfig = toml::from_str(&text)
            .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir
        };
        Self::validate(raw, base_dir)
    }

    /// Validates a parsed configuration; `base_dir` resolves relative paths.
    pub fn validate(raw: RawConfig, base_dir: PathBuf) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let listen = parse_optional_addr("server.listen", &raw.server.listen, &mut errors);
        let tls = raw.tls.as_ref().and_then(|t| {
            let listen = parse_optional_addr("tls.listen", &t.listen, &mut errors)?;
            Some(TlsConfig {
                listen,
                cert: resolve(&t.cert),
                key: resolve(&t.key),
            })
        });
        if listen.is_none() && tls.is_none() {
            errors.push("server.listen and [tls] are both absent: nothing to serve".into());
        }
        let admin_listen = parse_optional_addr("admin.listen", &raw.admin.listen, &mut errors);
        let limits = validate_limits(&raw.server, &mut errors);
        let mut ca = CaConfig {
            cert: resolve(&raw.ca.cert),
            key: if raw.ca.key.as_os_str().is_empty() {
                PathBuf::new()
            } else {
                resolve(&raw.ca.key)
            },
            chain: raw.ca.chain.as_deref().map(&resolve),
            passphrase: match (&raw.ca.key_passphrase_env, &raw.ca.key_passphrase_file) {
                (Some(_), Some(_)) => {
                    errors
                        .push("ca: set key_passphrase_env or key_passphrase_file, not both".into());
                    Passphrase::None
                }
                (Some(var), None) => Passphrase::Env(var.clone()),
                (None, Some(file)) => Passphrase::File(resolve(file)),
                (None, None) => Passphrase::None,
            },
        };
        let mut ra = raw.ra.as_ref().map(|r| RaConfig {
            sign_cert: resolve(&r.sign_cert),
            sign_key: resolve(&r.sign_key),
            encrypt_cert: resolve(&r.encrypt_cert),
            encrypt_key: resolve(&r.encrypt_key),
            renew_before: std::time::Duration::from_secs(u64::from(r.renew_before_days) * 86_400),
        });
        let upstream = validate_backend(&raw.ca, ra.as_ref(), &resolve, &mut errors);
        let pkcs11 = crate::pkcs11::validate(&raw, &mut ca.key, ra.as_mut(), &resolve, &mut errors);
        check_files_exist(&ca, ra.as_ref(), tls.as_ref(), &mut errors);
        let public_url = validate_public_url(raw.server.public_url.as_deref(), &mut errors);
        let ca_name = raw.ca.name.clone().unwrap_or_else(|| "ca".into());
        if !is_url_safe_name(&ca_name) {
            errors.push(format!(
                "ca.name: {ca_name:?}: use letters, digits, '-' and '_'"
            ));
        }
        if raw.crl.next_update_hours == 0 {
            errors.push("crl.next_update_hours: must be greater than 0".into());
        }
        let ocsp_delegated_days = match raw.ocsp.responder.as_str() {
            "ca" => None,
            "delegated" if raw.ocsp.responder_validity_days > 0 => {
                Some(raw.ocsp.responder_validity_days)
            }
            "delegated" => {
                errors.push("ocsp.responder_validity_days: must be greater than 0".into());
                None
            }
            other => {
                errors.push(format!(
                    "ocsp.responder: {other:?} is not one of ca, delegated"
                ));
                None
            }
        };
        let defaults = IssuanceDefaults::from_public_url(public_url.as_deref(), &ca_name);
        let templates_dir = resolve(&raw.templates.dir);
        let templates = load_templates(&templates_dir, &defaults, &mut errors);
        check_template_references(&templates, &raw.templates.default, &mut errors);
        let extra_cas = validate_extra_cas(&raw.cas, &ca_name, &resolve, &mut errors);
        check_template_cas(&templates, &extra_cas, &mut errors);
        let ndes_admin = validate_ndes_admin(&raw.ndes_admin, &templates, &resolve, &mut errors);
        let signed_challenge = raw
            .signed_challenge
            .as_ref()
            .and_then(|raw| validate_signed_challenge(raw, &resolve, &mut errors))
            .map(Arc::new);
        let mut templates = templates;
        if raw.signed_challenge.is_none() {
            require_signed_challenge_section(&templates, &mut errors);
        }
        attach_signed_challenge(&mut templates, signed_challenge.as_ref());
        let connectors = crate::connector::config::validate(
            &raw.connector,
            &raw.outbox,
            &templates,
            &ca_name,
            &resolve,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Self {
            listen,
            tls,
            admin: AdminConfig {
                listen: admin_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081))),
                token_file: resolve(&raw.admin.token_file),
            },
            limits,
            legacy_algorithms: raw.server.legacy_algorithms,
            ca,
            upstream,
            ra,
            store_path: resolve(&raw.store.path),
            templates,
            default_template: raw.templates.default,
            base_dir,
            public_url,
            ca_name,
            crl_next_update: Duration::from_secs(raw.crl.next_update_hours.saturating_mul(3600)),
            ocsp_delegated_days,
            ndes_admin,
            signed_challenge,
            connectors,
            extra_cas,
            pkcs11,
        })
    }
}

/// `[cas.<name>]`: names usable in URLs and distinct from `[ca] name`; files that exist.
fn validate_extra_cas(
    raw: &BTreeMap<String, RawExtraCa>,
    default_name: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<String>,
) -> Vec<ExtraCa> {
    let mut cas = Vec::new();
    for (name, ca) in raw {
        let lower = name.to_ascii_lowercase();
        if !is_url_safe_name(name) {
            errors.push(format!("cas.{name}: use letters, digits, '-' and '_'"));
            continue;
        }
        if lower == default_name.to_ascii_lowercase() {
            errors.push(format!("cas.{name}: the name of [ca] already"));
            continue;
        }
        let passphrase = match (&ca.key_passphrase_env, &ca.key_passphrase_file) {
            (Some(_), Some(_)) => {
                errors.push(format!(
                    "cas.{name}: set key_passphrase_env or key_passphrase_file, not both"
                ));
                Passphrase::None
            }
            (Some(var), None) => Passphrase::Env(var.clone()),
            (None, Some(file)) => Passphrase::File(resolve(file)),
            (None, None) => Passphrase::None,
        };
        let extra = ExtraCa {
            name: lower,
            ca: CaConfig {
                cert: resolve(&ca.cert),
                key: resolve(&ca.key),
                chain: ca.chain.as_deref().map(resolve),
                passphrase,
            },
            ra: ca.ra.as_ref().map(|r| RaConfig {
                sign_cert: resolve(&r.sign_cert),
                sign_key: resolve(&r.sign_key),
                encrypt_cert: resolve(&r.encrypt_cert),
                encrypt_key: resolve(&r.encrypt_key),
                renew_before: Duration::from_secs(u64::from(r.renew_before_days) * 86_400),
            }),
        };
        let mut problems = Vec::new();
        check_files_exist(&extra.ca, extra.ra.as_ref(), None, &mut problems);
        errors.extend(problems.into_iter().map(|p| format!("cas.{name}: {p}")));
        cas.push(extra);
    }
    cas
}

/// A template's `ca` must name a `[cas.<name>]`, and key-usage routing stays with one CA
/// (the request was encrypted to that CA's RA certificate).
fn check_template_cas(
    templates: &BTreeMap<String, Template>,
    extra: &[ExtraCa],
    errors: &mut Vec<String>,
) {
    for template in templates.values() {
        if let Some(ca) = &template.ca {
            if !extra.iter().any(|e| e.name == *ca) {
                errors.push(format!(
                    "template {}: ca = {ca:?} names no [cas.{ca}] in scepd.toml",
                    template.name
                ));
            }
        }
        let r = &template.routing;
        for target in [&r.signature, &r.encryption, &r.general_purpose]
            .into_iter()
            .flatten()
        {
            if templates.get(target).is_some_and(|t| t.ca != template.ca) {
                errors.push(format!(
                    "template {}: key_usage_routing to {target:?}, which another CA serves",
                    template.name
                ));
            }
        }
    }
}

/// `[signed_challenge]`: every signer file must hold certificates, the limits be sane, and
/// a dedicated decryption key come with its certificate (and be RSA).
fn validate_signed_challenge(
    raw: &RawSignedChallenge,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<String>,
) -> Option<SignedChallengeSettings> {
    let before = errors.len();
    if raw.signer.is_empty() {
        errors.push("signed_challenge: name at least one [[signed_challenge.signer]]".into());
    }
    if raw.skew_seconds > 3600 {
        errors.push("signed_challenge.skew_seconds: at most 3600".into());
    }
    if !(1..=366).contains(&raw.max_lifetime_days) {
        errors.push("signed_challenge.max_lifetime_days: from 1 to 366".into());
    }
    let mut signers = Vec::new();
    for signer in &raw.signer {
        let path = resolve(&signer.certs);
        let certs = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| openssl::x509::X509::stack_from_pem(&pem).map_err(|e| e.to_string()));
        match certs {
            Ok(certs) if !certs.is_empty() => {
                let trusted = scepd_policy::TrustedSigner::new(certs);
                signers.push(match &signer.issuer {
                    Some(iss) => trusted.with_issuer(iss.clone()),
                    None => trusted,
                });
            }
            Ok(_) => errors.push(format!(
                "signed_challenge.signer.certs {}: no certificate in it",
                path.display()
            )),
            Err(e) => errors.push(format!(
                "signed_challenge.signer.certs {}: {e}",
                path.display()
            )),
        }
    }
    let decryption = match (&raw.decrypt_cert, &raw.decrypt_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            match crate::keys::load_pair(&resolve(cert), &resolve(key), None) {
                Ok(pair) if pair.key.kind() == scepd_ca::KeyKind::Rsa => {
                    pair.key
                        .as_openssl()
                        .map(|key| scepd_policy::DecryptionKey {
                            cert_der: pair.cert_der.clone(),
                            key: key.clone(),
                        })
                }
                Ok(_) => {
                    errors.push("signed_challenge.decrypt_key: must be an RSA key".into());
                    None
                }
                Err(e) => {
                    errors.push(format!("signed_challenge.decrypt_cert/decrypt_key: {e}"));
                    None
                }
            }
        }
        _ => {
            errors.push("signed_challenge: decrypt_cert and decrypt_key go together".into());
            None
        }
    };
    if errors.len() > before {
        return None;
    }
    let trust = scepd_policy::SignedChallengeTrust::new(signers)
        .with_skew(Duration::from_secs(raw.skew_seconds))
        .with_max_lifetime(Duration::from_secs(raw.max_lifetime_days * 86_400));
    Some(SignedChallengeSettings { trust, decryption })
}

/// Hands `[signed_challenge]` to every `type = "signed"` template.
fn attach_signed_challenge(
    templates: &mut BTreeMap<String, Template>,
    settings: Option<&Arc<SignedChallengeSettings>>,
) {
    for template in templates.values_mut() {
        if let ChallengeConfig::Signed(slot) = &mut template.challenge {
            *slot = settings.map(Arc::clone);
        }
    }
}

/// A `type = "signed"` template needs `[signed_challenge]` in scepd.toml.
fn require_signed_challenge_section(
    templates: &BTreeMap<String, Template>,
    errors: &mut Vec<String>,
) {
    for (name, template) in templates {
        if matches!(template.challenge, ChallengeConfig::Signed(_)) {
            errors.push(format!(
                "template {name}: challenge.type = \"signed\" needs a [signed_challenge] \
                 section with at least one [[signed_challenge.signer]] in scepd.toml"
            ));
        }
    }
}

/// `[ndes_admin]`: the template must exist and hand out one-time passwords; the users file
/// must read as `user:sha256-hex[:enroll]` lines.
fn validate_ndes_admin(
    raw: &RawNdesAdmin,
    templates: &BTreeMap<String, Template>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<String>,
) -> Option<NdesAdminConfig> {
    if !raw.enabled {
        return None;
    }
    let template = raw.template.to_ascii_lowercase();
    match templates.get(&template).map(|t| &t.challenge) {
        Some(ChallengeConfig::Otp(_)) => {}
        Some(_) => errors.push(format!(
            "ndes_admin.template: template {:?} does not use [challenge] type = \"otp\"",
            raw.template
        )),
        None => errors.push(format!(
            "ndes_admin.template: no template named {:?}",
            raw.template
        )),
    }
    let Some(file) = raw.users_file.as_deref().map(resolve) else {
        errors.push("ndes_admin.users_file: required when enabled".into());
        return None;
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) => {
            errors.push(format!("ndes_admin.users_file {}: {e}", file.display()));
            return None;
        }
    };
    match crate::verifiers::ndes_admin::parse_users(&text) {
        Ok(users) => Some(NdesAdminConfig { template, users }),
        Err(problems) => {
            errors.extend(
                problems
                    .into_iter()
                    .map(|p| format!("ndes_admin.users_file {}: {p}", file.display())),
            );
            None
        }
    }
}

/// `[server] public_url`: an http or https URL without query; a trailing `/` is dropped.
fn validate_public_url(url: Option<&str>, errors: &mut Vec<String>) -> Option<String> {
    let url = url?.trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !url.contains(['?', '#', ' ']) => Some(url.to_owned()),
        _ => {
            errors.push(format!(
                "server.public_url: {url:?} is not a URL such as http://scep.example.com:8080"
            ));
            None
        }
    }
}

fn parse_optional_addr(key: &str, value: &str, errors: &mut Vec<String>) -> Option<SocketAddr> {
    if value.is_empty() {
        return None;
    }
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(format!(
                "{key}: {value:?} is not an address such as 127.0.0.1:8080"
            ));
            None
        }
    }
}

fn validate_limits(server: &RawServer, errors: &mut Vec<String>) -> Limits {
    if server.max_request_line_bytes < 8192 {
        errors.push("server.max_request_line_bytes: at least 8192".into());
    }
    if server.max_body_bytes < 1024 {
        errors.push("server.max_body_bytes: at least 1024".into());
    }
    for (key, value) in [
        ("server.max_connections", server.max_connections as u64),
        (
            "server.header_read_timeout_secs",
            server.header_read_timeout_secs,
        ),
        ("server.request_timeout_secs", server.request_timeout_secs),
        (
            "server.max_queued_operations",
            server.max_queued_operations as u64,
        ),
    ] {
        if value == 0 {
            errors.push(format!("{key}: must be greater than 0"));
        }
    }
    Limits {
        max_body_bytes: server.max_body_bytes,
        max_request_line_bytes: server.max_request_line_bytes,
        max_connections: server.max_connections,
        header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
        request_timeout: Duration::from_secs(server.request_timeout_secs),
        max_queued_operations: server.max_queued_operations,
    }
}

/// `[ca] backend`: `software` (default) needs `key`; `upstream` needs `[ca.upstream]` and
/// `[ra]` (the upstream's key never reaches scepd, so scepd needs RA certificates of its own).
fn validate_backend(
    raw: &RawCa,
    ra: Option<&RaConfig>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<String>,
) -> Option<crate::upstream::UpstreamConfig> {
    match raw.backend.as_deref().unwrap_or("software") {
        "software" => {
            if raw.upstream.is_some() {
                errors.push("ca.upstream: only with [ca] backend = \"upstream\"".into());
            }
            if raw.key.as_os_str().is_empty() && raw.key_label.is_none() {
                errors.push("ca.key: missing (the software CA needs its key)".into());
            }
            None
        }
        "upstream" => {
            if !raw.key.as_os_str().is_empty() || raw.key_label.is_some() {
                errors.push(
                    "ca.key: not with backend = \"upstream\" (the upstream keeps its key)".into(),
                );
            }
            if ra.is_none() {
                errors.push("ca: backend = \"upstream\" needs [ra] certificates (scepd init --upstream enrolls them)".into());
            }
            match &raw.upstream {
                Some(upstream) => {
                    crate::upstream::UpstreamConfig::validate(upstream, resolve, errors)
                }
                None => {
                    errors.push("ca: backend = \"upstream\" needs [ca.upstream]".into());
                    None
                }
            }
        }
        other => {
            errors.push(format!(
                "ca.backend: {other:?} is not one of software, upstream"
            ));
            None
        }
    }
}

fn check_files_exist(
    ca: &CaConfig,
    ra: Option<&RaConfig>,
    tls: Option<&TlsConfig>,
    errors: &mut Vec<String>,
) {
    // An empty key path: `backend = "upstream"`, or a key in the [pkcs11] token.
    let has_key = !ca.key.as_os_str().is_empty();
    if has_key && !ca.cert.is_file() && ca.key.is_file() {
        // `scepd init --ca-csr-out`: the key is here, the certificate not yet.
        errors.push(format!(
            "ca.cert: {} does not exist: the CA certificate is not installed yet. Have your root CA sign the CSR `scepd init --ca-csr-out` wrote, then run `scepd ca install-cert --config <scepd.toml> --cert <issued.pem> --chain <root.pem>`",
            ca.cert.display()
        ));
        // The RA certificates come with the CA certificate: nothing else to report.
        return;
    }
    let mut files = vec![("ca.cert", &ca.cert)];
    if has_key {
        files.push(("ca.key", &ca.key));
    }
    if let Some(chain) = &ca.chain {
        files.push(("ca.chain", chain));
    }
    if let Passphrase::File(file) = &ca.passphrase {
        files.push(("ca.key_passphrase_file", file));
    }
    if let Some(ra) = ra {
        files.extend([
            ("ra.sign_cert", &ra.sign_cert),
            ("ra.sign_key", &ra.sign_key),
            ("ra.encrypt_cert", &ra.encrypt_cert),
            ("ra.encrypt_key", &ra.encrypt_key),
        ]);
    }
    if let Some(tls) = tls {
        files.extend([("tls.cert", &tls.cert), ("tls.key", &tls.key)]);
    }
    for (key, path) in files {
        // An empty key path: the key is in the [pkcs11] token (checked there).
        if !path.as_os_str().is_empty() && !path.is_file() {
            errors.push(format!("{key}: {} does not exist", path.display()));
        }
    }
}

fn load_templates(
    dir: &Path,
    defaults: &IssuanceDefaults,
    errors: &mut Vec<String>,
) -> BTreeMap<String, Template> {
    let mut templates = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(format!("templates.dir: {}: {e}", dir.display()));
            return templates;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        if !is_url_safe_name(&name) {
            errors.push(format!(
                "{}: template names use letters, digits, '-' and '_'",
                path.display()
            ));
            continue;
        }
        match load_template_with_defaults(&path, &name, defaults) {
            Ok(template) => {
                templates.insert(name.to_ascii_lowercase(), template);
            }
            Err(mut problems) => errors.append(&mut problems),
        }
    }
    templates
}

fn is_url_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reads and validates one template file, reporting every problem with the file name.
pub fn load_template(path: &Path, name: &str) -> Result<Template, Vec<String>> {
    load_template_with_defaults(path, name, &IssuanceDefaults::default())
}

/// [`load_template`], filling the CRL and OCSP URLs the template leaves empty from `defaults`.
pub fn load_template_with_defaults(
    path: &Path,
    name: &str,
    defaults: &IssuanceDefaults,
) -> Result<Template, Vec<String>> {
    let prefix = |msg: String| format!("{}: {msg}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| vec![prefix(e.to_string())])?;
    let raw: RawTemplate = toml::from_str(&text).map_err(|e| vec![prefix(e.to_string())])?;
    let mut errors = Vec::new();
    let base = path.parent().unwrap_or(Path::new("."));
    let challenge = validate_challenge(&raw.challenge, base).map_err(|e| errors.push(prefix(e)));
    let profile = raw
        .issuance
        .try_into::<scepd_ca::RawProfile>()
        .map_err(|e| errors.push(prefix(format!("[issuance]: {e}"))))
        .ok()
        .map(|mut p| {
            if p.crl_distribution_points.is_empty() {
                p.crl_distribution_points = defaults.crl_urls_for(raw.ca.as_deref());
            }
            if p.ocsp_urls.is_empty() {
                p.ocsp_urls = defaults.ocsp_urls.clone();
            }
            p
        })
        .and_then(|p| {
            p.validate(name)
                .map_err(|e| errors.extend(e.into_iter().map(&prefix)))
                .ok()
        });
    let pending_hours = raw
        .pending_expiry_hours
        .unwrap_or(DEFAULT_PENDING_EXPIRY_HOURS);
    if pending_hours == 0 {
        errors.push(prefix("pending_expiry_hours must be at least 1".into()));
    }
    let renewal = RenewalPolicy {
        allowed_before_expiry: raw
            .renewal
            .allowed_days_before_expiry
            .map(|days| std::time::Duration::from_secs(u64::from(days) * 86_400)),
        revoke_superseded: raw.renewal.revoke_superseded,
        treat_signed_pkcsreq_as_renewal: raw.renewal.treat_signed_pkcsreq_as_renewal,
        require_same_subject: raw.renewal.require_same_subject.unwrap_or(true),
    };
    match (challenge, profile) {
        (Ok(challenge), Some(profile)) if errors.is_empty() => Ok(Template {
            name: name.to_ascii_lowercase(),
            description: raw.description,
            include_chain: raw.include_chain,
            legacy_algorithms: raw.legacy_algorithms,
            challenge,
            routing: raw
                .key_usage_routing
                .map(|r| Routing {
                    signature: r.signature.map(|s| s.to_ascii_lowercase()),
                    encryption: r.encryption.map(|s| s.to_ascii_lowercase()),
                    general_purpose: r.general_purpose.map(|s| s.to_ascii_lowercase()),
                })
                .unwrap_or_default(),
            profile,
            manual_approval: raw.manual_approval,
            pending_expiry: std::time::Duration::from_secs(u64::from(pending_hours) * 3600),
            renewal,
            connector: raw.connector,
            ca: raw.ca.map(|ca| ca.to_ascii_lowercase()),
        }),
        _ => Err(errors),
    }
}

fn validate_challenge(raw: &RawChallenge, base: &Path) -> Result<ChallengeConfig, String> {
    let resolve = |file: &PathBuf| {
        if file.is_absolute() {
            file.clone()
        } else {
            base.join(file)
        }
    };
    let read_secret_file = |file: &PathBuf| {
        let file = resolve(file);
        std::fs::read_to_string(&file)
            .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("challenge.secret_file {}: {e}", file.display()))
    };
    // Keys of another type are errors, not silently ignored (a `url` on a static template
    // is a mistake worth hearing about).
    let given: [(&str, bool); 7] = [
        ("secret", raw.secret.is_some()),
        ("secret_file", raw.secret_file.is_some()),
        ("ttl_minutes", raw.ttl_minutes.is_some()),
        ("max_outstanding", raw.max_outstanding.is_some()),
        ("url", raw.url.is_some()),
        ("timeout_ms", raw.timeout_ms.is_some()),
        ("ca_file", raw.ca_file.is_some()),
    ];
    let allowed: &[&str] = match raw.kind.as_str() {
        "none" => &[],
        "static" => &["secret", "secret_file"],
        "otp" => &["ttl_minutes", "max_outstanding"],
        "webhook" => &["url", "timeout_ms", "secret_file", "ca_file"],
        "signed" | "intune" => &[],
        other => {
            return Err(format!(
                "challenge.type: {other:?} is not one of static, signed, otp, webhook, intune, none"
            ))
        }
    };
    let stray: Vec<&str> = given
        .iter()
        .filter(|(key, set)| *set && !allowed.contains(key))
        .map(|(key, _)| *key)
        .collect();
    if !stray.is_empty() {
        return Err(format!(
            "challenge: {} not allowed with type = {:?}",
            stray.join(", "),
            raw.kind
        ));
    }
    match raw.kind.as_str() {
        "signed" => Ok(ChallengeConfig::Signed(None)),
        "intune" => Ok(ChallengeConfig::Intune),
        "static" => {
            let secret =
                match (&raw.secret, &raw.secret_file) {
                    (Some(s), None) => s.clone(),
                    (None, Some(file)) => read_secret_file(file)?,
                    _ => return Err(
                        "challenge: a static challenge needs exactly one of secret, secret_file"
                            .into(),
                    ),
                };
            if secret.is_empty() {
                return Err("challenge: the static secret is empty".into());
            }
            Ok(ChallengeConfig::Static(secret.into_bytes()))
        }
        "otp" => {
            let minutes = raw.ttl_minutes.unwrap_or(DEFAULT_OTP_TTL_MINUTES);
            let max_outstanding = raw.max_outstanding.unwrap_or(DEFAULT_OTP_MAX_OUTSTANDING);
            let mut problems = Vec::new();
            if !(1..=10_080).contains(&minutes) {
                problems.push("challenge.ttl_minutes: from 1 to 10080 (a week)");
            }
            if !(1..=10_000).contains(&max_outstanding) {
                problems.push("challenge.max_outstanding: from 1 to 10000");
            }
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
            Ok(ChallengeConfig::Otp(OtpConfig {
                ttl: Duration::from_secs(minutes * 60),
                max_outstanding,
            }))
        }
        "webhook" => {
            let mut problems = Vec::new();
            let url = match &raw.url {
                None => {
                    problems.push("challenge.url: a webhook needs a url".to_owned());
                    String::new()
                }
                Some(url) => {
                    if let Err(e) = check_webhook_url(url) {
                        problems.push(format!("challenge.url: {url:?}: {e}"));
                    }
                    url.clone()
                }
            };
            let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_MS);
            if !(1..=60_000).contains(&timeout_ms) {
                problems.push("challenge.timeout_ms: from 1 to 60000".to_owned());
            }
            let hmac_key = match raw.secret_file.as_ref().map(read_secret_file) {
                None => None,
                Some(Ok(key)) if key.is_empty() => {
                    problems.push("challenge.secret_file: the HMAC key is empty".to_owned());
                    None
                }
                Some(Ok(key)) => Some(key.into_bytes()),
                Some(Err(e)) => {
                    problems.push(e);
                    None
                }
            };
            let ca_pem = match raw.ca_file.as_ref().map(resolve) {
                None => None,
                Some(file) => match std::fs::read(&file) {
                    Ok(pem)
                        if openssl::x509::X509::stack_from_pem(&pem)
                            .is_ok_and(|certs| !certs.is_empty()) =>
                    {
                        Some(pem)
                    }
                    Ok(_) => {
                        problems.push(format!(
                            "challenge.ca_file {}: no PEM certificate",
                            file.display()
                        ));
                        None
                    }
                    Err(e) => {
                        problems.push(format!("challenge.ca_file {}: {e}", file.display()));
                        None
                    }
                },
            };
            if raw.ca_file.is_some() && !url.starts_with("https://") {
                problems.push("challenge.ca_file: only for an https url".to_owned());
            }
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
            Ok(ChallengeConfig::Webhook(WebhookConfig {
                url,
                timeout: Duration::from_millis(timeout_ms),
                hmac_key,
                ca_pem,
            }))
        }
        _ => Ok(ChallengeConfig::None),
    }
}

/// A webhook URL: `https://host[:port]/path`, or `http://` to a loopback address only (the
/// challenge travels in the body, so it must not cross a network in clear text).
fn check_webhook_url(url: &str) -> Result<(), String> {
    let parsed = crate::verifiers::webhook::Target::parse(url)?;
    if !parsed.tls && !parsed.is_loopback() {
        return Err(
            "http is allowed only to a loopback address (127.0.0.1, ::1, localhost); use https"
                .into(),
        );
    }
    Ok(())
}

fn check_template_references(
    templates: &BTreeMap<String, Template>,
    default: &str,
    errors: &mut Vec<String>,
) {
    if !templates.contains_key(&default.to_ascii_lowercase()) {
        errors.push(format!("templates.default: no template named {default:?}"));
    }
    for template in templates.values() {
        let r = &template.routing;
        for target in [&r.signature, &r.encryption, &r.general_purpose]
            .into_iter()
            .flatten()
        {
            if !templates.contains_key(target) {
                errors.push(format!(
                    "template {}: key_usage_routing names {target:?}, which does not exist",
                    template.name
                ));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The example templates shipped in `templates/` stay valid as the format grows (copied
    /// into a setup that has the `challenge.secret` the static ones name).
    #[test]
    fn every_example_template_loads() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let setup = tempfile::tempdir().unwrap();
        std::fs::write(setup.path().join("challenge.secret"), "s3cret\n").unwrap();
        let dir = setup.path().join("templates");
        std::fs::create_dir(&dir).unwrap();
        let mut loaded = 0;
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let source = entry.unwrap().path();
            if source.extension().is_some_and(|x| x == "toml") {
                let path = dir.join(source.file_name().unwrap());
                std::fs::copy(&source, &path).unwrap();
                let name = path.file_stem().unwrap().to_str().unwrap();
                load_template(&path, name)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", source.display()));
                loaded += 1;
            }
        }
        assert!(loaded >= 4, "templates/ holds the examples");
    }
}
