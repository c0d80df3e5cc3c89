//! One enrollment at the upstream SCEP CA, as a SCEP client (RFC 8894 §3-§4): GetCACaps,
//! GetCACert, PKCSReq carrying the upstream's challenge, then CertPoll while the upstream
//! answers PENDING, bounded by a deadline and a number of polls.

use std::time::{Duration, Instant};

use base64::Engine;
use der::asn1::{PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode};
use x509_cert::attr::Attribute;
use x509_cert::request::CertReq;
use x509_cert::Certificate;

use super::http::{Answer, Endpoint};
use crate::scep::client::{self, ClientError, ClientIdentity, PreparedRequest, RequestOptions};
use crate::scep::message_data::encode_issuer_and_subject;
use crate::scep::{ContentCipher, DigestAlg, FailInfo, KeyTransport, MessageType, PkiStatus};

/// PKCS#9 challengePassword (RFC 2985 §5.4.1).
const CHALLENGE_PASSWORD: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.7");

/// Why the upstream did not issue.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The HTTP exchange failed (connection, timeout, size).
    #[error("upstream HTTP: {0}")]
    Http(String),
    /// The upstream answered with an HTTP error status.
    #[error("upstream answered HTTP {status} to {operation}")]
    Status {
        /// The SCEP operation.
        operation: &'static str,
        /// The status code.
        status: u16,
    },
    /// The upstream's answer could not be read or checked.
    #[error("upstream SCEP: {0}")]
    Scep(#[from] ClientError),
    /// The upstream refused the request.
    #[error("upstream refused the request: failInfo {fail_info}{}", text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Refused {
        /// The failInfo.
        fail_info: String,
        /// failInfoText, if any.
        text: Option<String>,
    },
    /// Still PENDING when the deadline or the poll budget ran out.
    #[error("upstream still PENDING after {polls} polls and {seconds} s; giving up")]
    StillPending {
        /// Polls sent.
        polls: u32,
        /// Seconds waited.
        seconds: u64,
    },
    /// The CSR could not be re-encoded with the upstream's challenge.
    #[error("CSR: {0}")]
    Csr(String),
    /// The certificate returned is not for the CSR's key.
    #[error("the upstream returned a certificate for another key")]
    WrongCertificate,
}

/// How to reach the upstream and how long to wait for it.
pub struct UpstreamClient {
    endpoint: Endpoint,
    challenge: String,
    poll_interval: Duration,
    max_wait: Duration,
    max_polls: u32,
    /// The identity that signs our requests; the upstream encrypts its replies to it.
    identity: ClientIdentity,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the challenge.
        f.debug_struct("UpstreamClient")
            .field("endpoint", &self.endpoint)
            .field("poll_interval", &self.poll_interval)
            .field("max_wait", &self.max_wait)
            .field("max_polls", &self.max_polls)
            .finish_non_exhaustive()
    }
}

/// What one successful enrollment returned.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The issued certificate, DER.
    pub cert_der: Vec<u8>,
    /// The upstream's GetCACert certificates, in the order received.
    pub ca_certs: Vec<Vec<u8>>,
}

/// Timing of an [`UpstreamClient`].
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Wait between two CertPolls.
    pub poll_interval: Duration,
    /// Give up when PENDING lasts longer than this.
    pub max_wait: Duration,
    /// Give up after this many CertPolls.
    pub max_polls: u32,
}

/// What GetCACaps advertised that we use.
#[derive(Debug, Clone, Copy)]
struct Caps {
    post: bool,
    digest: DigestAlg,
    cipher: ContentCipher,
}

impl Caps {
    fn parse(text: &str) -> Self {
        let has = |cap: &str| text.lines().any(|l| l.trim().eq_ignore_ascii_case(cap));
        let post = has("POSTPKIOperation") || has("SCEPStandard");
        let digest = if has("SHA-256") || has("SCEPStandard") {
            DigestAlg::Sha256
        } else {
            DigestAlg::Sha1
        };
        // scepd never sends single DES: AES when offered, else 3DES (RFC 8894 §3.5.2's
        // default when nothing is advertised).
        let cipher = if has("AES") || has("SCEPStandard") {
            ContentCipher::Aes128Cbc
        } else {
            ContentCipher::DesEde3Cbc
        };
        Self {
            post,
            digest,
            cipher,
        }
    }
}

impl UpstreamClient {
    /// A client for `endpoint`; `challenge` is the upstream's challenge password. A
    /// throwaway RSA identity (self-signed, as devices make) signs the requests.
    pub fn new(
        endpoint: Endpoint,
        challenge: String,
        patience: Patience,
    ) -> Result<Self, UpstreamError> {
        let key = openssl::rsa::Rsa::generate(2048)
            .and_then(openssl::pkey::PKey::from_rsa)
            .map_err(|e| UpstreamError::Scep(e.into()))?;
        let identity = ClientIdentity::self_signed(key, "scepd upstream RA")?;
        Ok(Self {
            endpoint,
            challenge,
            poll_interval: patience.poll_interval,
            max_wait: patience.max_wait,
            max_polls: patience.max_polls,
            identity,
        })
    }

    /// GetCACert: the upstream's certificates in the order received.
    pub fn ca_certs(&self) -> Result<Vec<Vec<u8>>, UpstreamError> {
        let answer = self
            .endpoint
            .get("operation=GetCACert")
            .map_err(UpstreamError::Http)?;
        let answer = ok(answer, "GetCACert")?;
        Ok(client::parse_ca_certs(&answer.body)?)
    }

    fn caps(&self) -> Result<Caps, UpstreamError> {
        let answer = self
            .endpoint
            .get("operation=GetCACaps")
            .map_err(UpstreamError::Http)?;
        // A server without GetCACaps (404 and the like) gets the RFC's defaults.
        if !(200..300).contains(&answer.status) {
            return Ok(Caps::parse(""));
        }
        Ok(Caps::parse(&String::from_utf8_lossy(&answer.body)))
    }

    /// Enrolls `csr_der` at the upstream: its challengePassword is replaced by the
    /// upstream's (see docs/design.md "Upstream CA"), the request is sent, and PENDING is
    /// polled until the certificate comes, the upstream refuses, or patience runs out.
    pub fn enroll(&self, csr_der: &[u8]) -> Result<Enrolled, UpstreamError> {
        let caps = self.caps()?;
        let ca_certs = self.ca_certs()?;
        let (encrypt, sign) = client::select_ra_certs(&ca_certs)?;
        let ca_subject = ca_certs
            .iter()
            .filter_map(|der| Certificate::from_der(der).ok())
            .find(|c| c.tbs_certificate.subject == c.tbs_certificate.issuer)
            .or_else(|| {
                ca_certs
                    .first()
                    .and_then(|der| Certificate::from_der(der).ok())
            })
            .map(|c| c.tbs_certificate.subject)
            .ok_or(UpstreamError::Scep(ClientError::NoCertificates(
                "GetCACert response",
            )))?;
        let csr = with_challenge(csr_der, &self.challenge)?;
        let request = CertReq::from_der(&csr).map_err(|e| UpstreamError::Csr(e.to_string()))?;
        let transaction_id = hex::encode_upper(crate::scep::crypto::random_bytes(16));
        let options = |message_type| RequestOptions {
            message_type,
            transaction_id: transaction_id.clone(),
            digest: caps.digest,
            cipher: caps.cipher,
            key_transport: KeyTransport::RsaPkcs1v15,
            recipient_by_ski: false,
        };
        let prepared = client::build_request(
            &csr,
            &encrypt,
            &self.identity,
            &options(MessageType::PkcsReq),
        )?;
        let started = Instant::now();
        let mut view = self.exchange(&prepared, caps, &sign)?;
        let mut polls = 0u32;
        while view.status == PkiStatus::Pending {
            if polls >= self.max_polls || started.elapsed() + self.poll_interval > self.max_wait {
                return Err(UpstreamError::StillPending {
                    polls,
                    seconds: started.elapsed().as_secs(),
                });
            }
            std::thread::sleep(self.poll_interval);
            polls += 1;
            let poll = encode_issuer_and_subject(&ca_subject, &request.info.subject)
                .map_err(|e| UpstreamError::Csr(e.to_string()))?;
            let prepared = client::build_request(
                &poll,
                &encrypt,
                &self.identity,
                &options(MessageType::CertPoll),
            )?;
            view = self.exchange(&prepared, caps, &sign)?;
        }
        if view.status == PkiStatus::Failure {
            return Err(UpstreamError::Refused {
                fail_info: view
                    .fail_info
                    .map_or_else(|| "?".to_owned(), |f: FailInfo| format!("{f:?}")),
                text: view.fail_info_text,
            });
        }
        let spki = request
            .info
            .public_key
            .to_der()
            .map_err(|e| UpstreamError::Csr(e.to_string()))?;
        // The issued certificate is the one for the CSR's key (a server may add its chain).
        let cert_der = view
            .certs
            .into_iter()
            .find(|der| {
                Certificate::from_der(der).is_ok_and(|c| {
                    c.tbs_certificate
                        .subject_public_key_info
                        .to_der()
                        .is_ok_and(|k| k == spki)
                })
            })
            .ok_or(UpstreamError::WrongCertificate)?;
        Ok(Enrolled { cert_der, ca_certs })
    }

    fn exchange(
        &self,
        prepared: &PreparedRequest,
        caps: Caps,
        reply_signer: &[u8],
    ) -> Result<client::CertRepView, UpstreamError> {
        let answer = if caps.post {
            self.endpoint
                .post("operation=PKIOperation", prepared.der.clone())
        } else {
            let message = base64::engine::general_purpose::STANDARD.encode(&prepared.der);
            let message: String =
                percent_encoding::utf8_percent_encode(&message, percent_encoding::NON_ALPHANUMERIC)
                    .collect();
            self.endpoint
                .get(&format!("operation=PKIOperation&message={message}"))
        }
        .map_err(UpstreamError::Http)?;
        let answer = ok(answer, "PKIOperation")?;
        Ok(client::read_cert_rep(
            &answer.body,
            prepared,
            reply_signer,
            &self.identity,
        )?)
    }
}

fn ok(answer: Answer, operation: &'static str) -> Result<Answer, UpstreamError> {
    if (200..300).contains(&answer.status) {
        Ok(answer)
    } else {
        Err(UpstreamError::Status {
            operation,
            status: answer.status,
        })
    }
}

/// The CSR with its challengePassword attribute (if any) replaced by `challenge`; every other
/// byte of the CertificationRequestInfo and the signature are kept. When the CSR already
/// carries exactly this challenge it is returned unchanged.
pub fn with_challenge(csr_der: &[u8], challenge: &str) -> Result<Vec<u8>, UpstreamError> {
    let mut csr = CertReq::from_der(csr_der).map_err(|e| UpstreamError::Csr(e.to_string()))?;
    let value = if challenge
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))
    {
        Any::encode_from(
            &PrintableStringRef::new(challenge).map_err(|e| UpstreamError::Csr(e.to_string()))?,
        )
    } else {
        Any::encode_from(
            &Utf8StringRef::new(challenge).map_err(|e| UpstreamError::Csr(e.to_string()))?,
        )
    }
    .map_err(|e| UpstreamError::Csr(e.to_string()))?;
    let same = csr.info.attributes.iter().any(|a| {
        a.oid == CHALLENGE_PASSWORD
            && a.values.len() == 1
            && a.values.iter().any(|v| v.value() == value.value())
    });
    if same {
        return Ok(csr_der.to_vec());
    }
    let mut attributes: Vec<Attribute> = csr
        .info
        .attributes
        .iter()
        .filter(|a| a.oid != CHALLENGE_PASSWORD)
        .cloned()
        .collect();
    let mut values = SetOfVec::new();
    values
        .insert(value)
        .map_err(|e| UpstreamError::Csr(e.to_string()))?;
    attributes.push(Attribute {
        oid: CHALLENGE_PASSWORD,
        values,
    });
    let mut set = SetOfVec::new();
    for attribute in attributes {
        set.insert(attribute)
            .map_err(|e| UpstreamError::Csr(e.to_string()))?;
    }
    csr.info.attributes = set;
    csr.to_der().map_err(|e| UpstreamError::Csr(e.to_string()))
}
