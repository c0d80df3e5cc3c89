//! The upstream SCEP CA backend (RA mode, issue 7 item 2): scepd does everything an RA does
//! (challenge verification, templates as policy, store, connector events) and forwards the
//! approved CSR to another SCEP server, the way NDES sits in front of AD CS.
//!
//! - [`http`]: a small blocking HTTP client with strict timeouts.
//! - [`client`]: one enrollment at the upstream (GetCACaps, GetCACert, PKCSReq, CertPoll).
//! - [`UpstreamCa`]: the [`scepd_ca::CaBackend`] that uses it.
//! - [`serve`]: `scepd serve` for a configuration whose `[ca] backend = "upstream"`.
//!
//! `scepd init --upstream URL --upstream-challenge-file F` lives in `cli::ca_source`.
//!
//! CRL and OCSP for upstream-issued certificates are the upstream's: the backend signs
//! neither, and `serve` publishes no CRL and answers no OCSP (both paths answer 404).

pub mod client;
pub mod http;
pub mod serve;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::Decode;
use scepd_ca::{
    CaBackend, CaError, CaSignature, IssueRequest, Issued, RevocationReason, RevokedEntry,
};
use serde::Deserialize;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

pub use client::{Enrolled, Patience, UpstreamClient, UpstreamError};

/// What `scepd certs revoke` prints for a certificate an upstream CA issued.
pub const REVOKE_NOTICE: &str = "scepd recorded the revocation, but the certificate was issued by the upstream CA: SCEP cannot revoke there, so revoke it at the upstream CA too (its CRL and OCSP are the ones relying parties check)";

/// `[ca.upstream]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// The upstream's SCEP URL, e.g. `http://ndes.example/certsrv/mscep/mscep.dll` or
    /// `http://127.0.0.1:8080/scep`.
    pub url: String,
    /// File holding the upstream's challenge password (first line).
    pub challenge_file: PathBuf,
    /// For an https URL: PEM certificates the upstream's TLS certificate must chain to
    /// (default: the system's trusted CAs).
    pub tls_ca_file: Option<PathBuf>,
    /// Timeout of one HTTP exchange, in seconds (default 30).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Wait between two CertPolls while the upstream answers PENDING (default 5).
    #[serde(default = "default_poll_interval")]
    pub poll_interval_seconds: u64,
    /// Give up (FAILURE to the device) when PENDING lasts longer than this (default 60).
    #[serde(default = "default_max_wait")]
    pub max_wait_seconds: u64,
    /// Give up after this many CertPolls (default 10).
    #[serde(default = "default_max_polls")]
    pub max_polls: u32,
}

fn default_timeout() -> u64 {
    30
}
fn default_poll_interval() -> u64 {
    5
}
fn default_max_wait() -> u64 {
    60
}
fn default_max_polls() -> u32 {
    10
}

/// `[ca.upstream]`, validated.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The upstream's SCEP URL.
    pub url: String,
    /// The challenge file.
    pub challenge_file: PathBuf,
    /// TLS trust for https.
    pub tls_ca_file: Option<PathBuf>,
    /// One exchange.
    pub timeout: Duration,
    /// Polling.
    pub patience: Patience,
}

impl UpstreamConfig {
    /// Checks `[ca.upstream]`; relative paths through `resolve`.
    pub fn validate(
        raw: &RawUpstream,
        resolve: &dyn Fn(&Path) -> PathBuf,
        errors: &mut Vec<String>,
    ) -> Option<Self> {
        let before = errors.len();
        if let Err(e) = crate::verifiers::webhook::Target::parse(&raw.url) {
            errors.push(format!("ca.upstream.url: {e}"));
        }
        if raw.url.contains('?') {
            errors.push("ca.upstream.url: must not carry a query".into());
        }
        let challenge_file = resolve(&raw.challenge_file);
        if !challenge_file.is_file() {
            errors.push(format!(
                "ca.upstream.challenge_file: {} does not exist",
                challenge_file.display()
            ));
        }
        let tls_ca_file = raw.tls_ca_file.as_deref().map(resolve);
        if let Some(file) = &tls_ca_file {
            if !file.is_file() {
                errors.push(format!(
                    "ca.upstream.tls_ca_file: {} does not exist",
                    file.display()
                ));
            }
        }
        for (key, value) in [
            ("timeout_seconds", raw.timeout_seconds),
            ("poll_interval_seconds", raw.poll_interval_seconds),
            ("max_wait_seconds", raw.max_wait_seconds),
        ] {
            if value == 0 || value > 3600 {
                errors.push(format!("ca.upstream.{key}: must be from 1 to 3600"));
            }
        }
        if errors.len() > before {
            return None;
        }
        Some(Self {
            url: raw.url.trim_end_matches('/').to_owned(),
            challenge_file,
            tls_ca_file,
            timeout: Duration::from_secs(raw.timeout_seconds),
            patience: Patience {
                poll_interval: Duration::from_secs(raw.poll_interval_seconds),
                max_wait: Duration::from_secs(raw.max_wait_seconds),
                max_polls: raw.max_polls,
            },
        })
    }

    /// The client this configuration describes (reads the challenge and TLS files).
    pub fn client(&self) -> Result<UpstreamClient, String> {
        let challenge = read_challenge(&self.challenge_file)?;
        let ca_pem = match &self.tls_ca_file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        let endpoint = http::Endpoint::new(&self.url, ca_pem.as_deref(), self.timeout)
            .map_err(|e| format!("ca.upstream.url: {e}"))?;
        UpstreamClient::new(endpoint, challenge, self.patience).map_err(|e| e.to_string())
    }
}

/// The first line of a challenge file, without its line ending. Never logged.
pub fn read_challenge(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let challenge = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned();
    if challenge.is_empty() {
        return Err(format!("{}: the challenge is empty", path.display()));
    }
    Ok(challenge)
}

/// The CA backend that forwards approved CSRs to an upstream SCEP CA.
#[derive(Debug)]
pub struct UpstreamCa {
    client: UpstreamClient,
    /// The upstream's CA certificate first, then its issuers (from `[ca] cert` and
    /// `[ca] chain`, which `init --upstream` wrote from the upstream's GetCACert).
    chain: Vec<Vec<u8>>,
}

impl UpstreamCa {
    /// A backend for `client`, publishing `chain` (issuing CA first).
    pub fn new(client: UpstreamClient, chain: Vec<Vec<u8>>) -> Result<Self, String> {
        if chain.is_empty() {
            return Err("the upstream CA certificate is missing".into());
        }
        Ok(Self { client, chain })
    }
}

impl CaBackend for UpstreamCa {
    fn issue(&self, request: &IssueRequest<'_>) -> Result<Issued, CaError> {
        // Templates stay a policy check: the CSR must satisfy the template's profile before
        // anything goes upstream (the upstream applies its own template when issuing).
        scepd_ca::check_request(request.csr_der, request.profile)?;
        let enrolled = self
            .client
            .enroll(request.csr_der)
            .map_err(|e| CaError::CaConfig(format!("upstream CA: {e}")))?;
        if !self.issued(&enrolled.cert_der) {
            return Err(CaError::CaConfig(
                "upstream CA: the certificate returned is not signed by the configured upstream CA certificate (has the upstream's CA changed? run GetCACert and update [ca] cert)".into(),
            ));
        }
        issued_facts(enrolled.cert_der)
    }

    fn revoke(
        &self,
        _serial: &[u8],
        _reason: RevocationReason,
        _at: SystemTime,
    ) -> Result<scepd_ca::RevokeAtCa, CaError> {
        Ok(scepd_ca::RevokeAtCa::NotForwarded(REVOKE_NOTICE.into()))
    }

    fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    fn issued(&self, cert_der: &[u8]) -> bool {
        self.chain
            .iter()
            .any(|ca_der| scepd_ca::signed_by(cert_der, ca_der))
    }

    fn crl(
        &self,
        _revoked: &[RevokedEntry],
        _this_update: SystemTime,
        _next_update: SystemTime,
        _crl_number: u64,
    ) -> Result<Vec<u8>, CaError> {
        Err(CaError::UnsupportedAlgorithm(
            "the upstream CA publishes the CRL of the certificates it issues; scepd signs none"
                .into(),
        ))
    }

    fn sign_ocsp_response(&self, _tbs_response_data: &[u8]) -> Result<CaSignature, CaError> {
        Err(CaError::UnsupportedAlgorithm(
            "the upstream CA answers OCSP for the certificates it issues; scepd signs no OCSP response".into(),
        ))
    }
}

/// The facts the RA records about a certificate the upstream issued.
pub fn issued_facts(der: Vec<u8>) -> Result<Issued, CaError> {
    let cert = Certificate::from_der(&der)
        .map_err(|e| CaError::CaConfig(format!("upstream CA: unreadable certificate: {e}")))?;
    let tbs = &cert.tbs_certificate;
    let serial = tbs.serial_number.as_bytes().to_vec();
    let not_before = tbs.validity.not_before.to_system_time();
    let not_after = tbs.validity.not_after.to_system_time();
    let subject = scepd_ca::format_dn(&tbs.subject);
    let sans = match tbs.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san.0.iter().filter_map(describe_san).collect(),
        _ => Vec::new(),
    };
    Ok(Issued {
        der,
        serial,
        not_before,
        not_after,
        subject,
        sans,
    })
}

fn describe_san(name: &GeneralName) -> Option<String> {
    match name {
        GeneralName::DnsName(v) => Some(format!("dns:{}", v.as_str())),
        GeneralName::Rfc822Name(v) => Some(format!("email:{}", v.as_str())),
        GeneralName::UniformResourceIdentifier(v) => Some(format!("uri:{}", v.as_str())),
        GeneralName::IpAddress(ip) => {
            let bytes = ip.as_bytes();
            if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
                Some(format!("ip:{}", std::net::Ipv4Addr::from(v4)))
            } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
                Some(format!("ip:{}", std::net::Ipv6Addr::from(v6)))
            } else {
                None
            }
        }
        GeneralName::OtherName(other) => other
            .value
            .decode_as::<der::asn1::Utf8StringRef<'_>>()
            .ok()
            .map(|upn| format!("upn:{}", upn.as_str())),
        _ => None,
    }
}

/// Whether `config_path` configures the upstream backend (`[ca] backend = "upstream"`),
/// read without validating the rest.
pub fn is_upstream_config(config_path: &Path) -> bool {
    #[derive(Deserialize)]
    struct Peek {
        ca: Option<PeekCa>,
    }
    #[derive(Deserialize)]
    struct PeekCa {
        backend: Option<String>,
    }
    std::fs::read_to_string(config_path)
        .ok()
        .and_then(|text| toml::from_str::<Peek>(&text).ok())
        .and_then(|peek| peek.ca)
        .and_then(|ca| ca.backend)
        .is_some_and(|backend| backend == "upstream")
}
