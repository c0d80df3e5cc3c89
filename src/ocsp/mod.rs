//! Sans-IO OCSP (RFC 6960): read an OCSPRequest, answer with a signed BasicOCSPResponse.
//!
//! [`respond`] takes the request bytes, the CA's identity, a status lookup, a signer and the
//! time, and returns the DER OCSPResponse: it opens no socket, reads no clock and no store.
//! The ASN.1 types are those of the `x509-ocsp` crate (RustCrypto, on `der` 0.7 and
//! `x509-cert` 0.2); `responder` wires the lookup to the store and the signer to the CA.
//!
//! Every answer is an OCSPResponse (RFC 6960 §4.2.1):
//!
//! ```text
//! OCSPResponse ::= SEQUENCE {
//!    responseStatus         OCSPResponseStatus,
//!    responseBytes          [0] EXPLICIT ResponseBytes OPTIONAL }
//! ```
//!
//! - a request that does not decode, lists no or too many certificates, or carries a nonce
//!   of 0 or more than 32 octets (RFC 8954 §2.1): `malformedRequest`;
//! - a request none of whose CertIDs names our CA (by SHA-1 or SHA-256 hashes of its name and
//!   key): `unauthorized` (RFC 6960 §2.3, "the responder is not authoritative");
//! - the store cannot be read: `tryLater`; the CA cannot sign: `internalError`;
//! - otherwise `successful`, one SingleResponse per CertID: `good` for a certificate we issued
//!   and did not revoke, `revoked` with its time and reason, `unknown` for a serial we never
//!   issued or a CertID naming another issuer in a mixed request.

pub mod responder;

use std::time::{Duration, SystemTime};

use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256};
use const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE;
use der::asn1::{BitString, Null, OctetString};
use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use scepd_ca::{CaSignature, RevocationReason};

/// Most CertIDs answered in one request (RFC 6960 sets no bound; we do, since each costs a
/// store read).
pub const MAX_REQUESTS: usize = 64;

/// Largest nonce accepted (RFC 8954 §2.1: 1 to 32 octets).
pub const MAX_NONCE_OCTETS: usize = 32;

/// The encoding of `OCSPResponse { responseStatus malformedRequest }`, used if even encoding
/// a status-only response failed (it cannot; this keeps the path free of panics).
const MALFORMED_REQUEST_DER: &[u8] = &[0x30, 0x03, 0x0a, 0x01, 0x01];

/// Errors of the OCSP layer.
#[derive(Debug, thiserror::Error)]
pub enum OcspError {
    /// The CA certificate cannot be read (at start-up, never from a client).
    #[error("CA certificate: {0}")]
    CaCertificate(String),
}

/// What the CA's certificates say about one serial number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Issued here and not revoked.
    Good,
    /// Revoked at `at`, for `reason` (absent when unspecified or not an RFC 5280 name).
    Revoked {
        /// revocationTime.
        at: SystemTime,
        /// revocationReason.
        reason: Option<RevocationReason>,
    },
    /// Never issued here.
    Unknown,
}

/// The hashes by which a CertID names our CA (RFC 6960 §4.1.1): `issuerNameHash` over the DER
/// of the CA's subject, `issuerKeyHash` over the value of its subjectPublicKey BIT STRING
/// (without tag, length and unused-bits octet), in SHA-1 and SHA-256. The SHA-1 key hash is
/// also the responder's `KeyHash` (RFC 6960 §4.2.1, `ResponderID byKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerIdentity {
    sha1_name: [u8; 20],
    sha1_key: [u8; 20],
    sha256_name: [u8; 32],
    sha256_key: [u8; 32],
}

impl IssuerIdentity {
    /// Computes the hashes from the CA certificate (DER).
    pub fn from_ca_certificate(der: &[u8]) -> Result<Self, OcspError> {
        let cert =
            Certificate::from_der(der).map_err(|e| OcspError::CaCertificate(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let name = tbs
            .subject
            .to_der()
            .map_err(|e| OcspError::CaCertificate(e.to_string()))?;
        let key = tbs.subject_public_key_info.subject_public_key.raw_bytes();
        Ok(Self {
            sha1_name: openssl::sha::sha1(&name),
            sha1_key: openssl::sha::sha1(key),
            sha256_name: openssl::sha::sha256(&name),
            sha256_key: openssl::sha::sha256(key),
        })
    }

    /// Whether a CertID names this CA (by SHA-1 or SHA-256; other hashes never match).
    pub fn matches(&self, id: &CertId) -> bool {
        let name = id.issuer_name_hash.as_bytes();
        let key = id.issuer_key_hash.as_bytes();
        if id.hash_algorithm.oid == ID_SHA_1 {
            name == self.sha1_name && key == self.sha1_key
        } else if id.hash_algorithm.oid == ID_SHA_256 {
            name == self.sha256_name && key == self.sha256_key
        } else {
            false
        }
    }

    /// The responder's KeyHash: SHA-1 of the CA's public key (RFC 6960 §4.2.1).
    pub fn key_hash(&self) -> &[u8] {
        &self.sha1_key
    }
}

/// What the responder reads when it answers: the issuer it speaks for, who signs, how long its
/// answers hold, and the time.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The CA.
    pub issuer: &'a IssuerIdentity,
    /// The signer's KeyHash for `ResponderID byKey`: the CA's ([`IssuerIdentity::key_hash`])
    /// or a delegated responder's.
    pub responder_key_hash: &'a [u8],
    /// Certificates sent with the response: the delegated responder's certificate, or none
    /// when the CA signs.
    pub responder_certs: &'a [Certificate],
    /// producedAt and thisUpdate.
    pub now: SystemTime,
    /// nextUpdate is `now` plus this.
    pub validity: Duration,
}

/// A status lookup failed (the store): answered with `tryLater`.
#[derive(Debug)]
pub struct LookupFailed(pub String);

/// The OCSPResponseStatus of a reply, for logs.
pub fn status_name(response: &[u8]) -> &'static str {
    match OcspResponse::from_der(response).map(|r| r.response_status) {
        Ok(x509_ocsp::OcspResponseStatus::Successful) => "successful",
        Ok(x509_ocsp::OcspResponseStatus::MalformedRequest) => "malformedRequest",
        Ok(x509_ocsp::OcspResponseStatus::InternalError) => "internalError",
        Ok(x509_ocsp::OcspResponseStatus::TryLater) => "tryLater",
        Ok(x509_ocsp::OcspResponseStatus::SigRequired) => "sigRequired",
        Ok(x509_ocsp::OcspResponseStatus::Unauthorized) => "unauthorized",
        Err(_) => "undecodable",
    }
}

/// A parsed request: the CertIDs and the nonce extension to echo.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    /// requestList, in order.
    pub cert_ids: Vec<CertId>,
    /// The request's nonce extension (RFC 6960 §4.4.1), echoed unchanged.
    pub nonce: Option<x509_cert::ext::Extension>,
}

/// Why a request was refused before any lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not a DER OCSPRequest.
    #[error("not an OCSPRequest: {0}")]
    Decode(String),
    /// No CertID.
    #[error("the request lists no certificate")]
    Empty,
    /// More than [`MAX_REQUESTS`] CertIDs.
    #[error("the request lists more than {MAX_REQUESTS} certificates")]
    TooMany,
    /// A nonce of 0 or more than 32 octets (RFC 8954 §2.1).
    #[error("nonce of {0} octets (1 to 32 allowed)")]
    BadNonce(usize),
}

/// Parses an OCSPRequest (RFC 6960 §4.1.1). The optional signature is not checked: scepd
/// answers anyone, as public responders do.
pub fn parse_request(der: &[u8]) -> Result<ParsedRequest, Malformed> {
    let request = OcspRequest::from_der(der).map_err(|e| Malformed::Decode(e.to_string()))?;
    let tbs = request.tbs_request;
    if tbs.request_list.is_empty() {
        return Err(Malformed::Empty);
    }
    if tbs.request_list.len() > MAX_REQUESTS {
        return Err(Malformed::TooMany);
    }
    let nonce = tbs
        .request_extensions
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.extn_id == ID_PKIX_OCSP_NONCE);
    if let Some(nonce) = &nonce {
        // extnValue holds `Nonce ::= OCTET STRING` (DER); some old clients put the raw
        // octets there instead. Either way the length is what RFC 8954 bounds.
        let value = nonce.extn_value.as_bytes();
        let length = OctetString::from_der(value)
            .map(|inner| inner.as_bytes().len())
            .unwrap_or(value.len());
        if length == 0 || length > MAX_NONCE_OCTETS {
            return Err(Malformed::BadNonce(length));
        }
    }
    Ok(ParsedRequest {
        cert_ids: tbs.request_list.into_iter().map(|r| r.req_cert).collect(),
        nonce,
    })
}

/// Answers one OCSP request. `lookup` gives the status of a serial (content octets of the
/// INTEGER); `sign` signs the DER ResponseData. Never fails and never panics: every problem
/// is an OCSPResponse status.
pub fn respond(
    request_der: &[u8],
    context: &Context<'_>,
    lookup: impl Fn(&[u8]) -> Result<Status, LookupFailed>,
    sign: impl FnOnce(&[u8]) -> Result<CaSignature, String>,
) -> Vec<u8> {
    let parsed = match parse_request(request_der) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::debug!(error = %e, "OCSP request refused");
            return status_only(OcspResponse::malformed_request());
        }
    };
    if !parsed.cert_ids.iter().any(|id| context.issuer.matches(id)) {
        return status_only(OcspResponse::unauthorized());
    }
    let mut responses = Vec::with_capacity(parsed.cert_ids.len());
    for id in parsed.cert_ids {
        let status = if context.issuer.matches(&id) {
            match lookup(id.serial_number.as_bytes()) {
                Ok(status) => status,
                Err(LookupFailed(e)) => {
                    tracing::error!(error = %e, "OCSP: status lookup failed");
                    return status_only(OcspResponse::try_later());
                }
            }
        } else {
            Status::Unknown
        };
        match single_response(id, &status, context) {
            Ok(single) => responses.push(single),
            Err(e) => {
                tracing::error!(error = %e, "OCSP: cannot encode a SingleResponse");
                return status_only(OcspResponse::internal_error());
            }
        }
    }
    match signed_response(responses, parsed.nonce, context, sign) {
        Ok(der) => der,
        Err(e) => {
            tracing::error!(error = %e, "OCSP: cannot sign the response");
            status_only(OcspResponse::internal_error())
        }
    }
}

fn time(at: SystemTime) -> Result<OcspGeneralizedTime, String> {
    OcspGeneralizedTime::try_from(at).map_err(|e| format!("time: {e}"))
}

fn single_response(
    cert_id: CertId,
    status: &Status,
    context: &Context<'_>,
) -> Result<SingleResponse, String> {
    let cert_status = match status {
        Status::Good => CertStatus::Good(Null),
        Status::Unknown => CertStatus::Unknown(Null),
        Status::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
            revocation_time: time(*at)?,
            revocation_reason: reason.map(RevocationReason::to_crl_reason),
        }),
    };
    Ok(SingleResponse {
        cert_id,
        cert_status,
        this_update: time(context.now)?,
        next_update: Some(time(context.now + context.validity)?),
        single_extensions: None,
    })
}

fn signed_response(
    responses: Vec<SingleResponse>,
    nonce: Option<x509_cert::ext::Extension>,
    context: &Context<'_>,
    sign: impl FnOnce(&[u8]) -> Result<CaSignature, String>,
) -> Result<Vec<u8>, String> {
    let key_hash = OctetString::new(context.responder_key_hash).map_err(|e| e.to_string())?;
    let tbs_response_data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(key_hash),
        produced_at: time(context.now)?,
        responses,
        response_extensions: nonce.map(|n| vec![n]),
    };
    let tbs = tbs_response_data.to_der().map_err(|e| e.to_string())?;
    let signature = sign(&tbs)?;
    let basic = BasicOcspResponse {
        tbs_response_data,
        signature_algorithm: signature.algorithm,
        signature: BitString::from_bytes(&signature.value).map_err(|e| e.to_string())?,
        certs: (!context.responder_certs.is_empty()).then(|| context.responder_certs.to_vec()),
    };
    OcspResponse::successful(basic)
        .and_then(|r| r.to_der())
        .map_err(|e| e.to_string())
}

fn status_only(response: OcspResponse) -> Vec<u8> {
    response
        .to_der()
        .unwrap_or_else(|_| MALFORMED_REQUEST_DER.to_vec())
}

/// Entry point for the cargo-fuzz target `ocsp_request` (design rule 5). Not API.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::OnceLock;
    use std::time::{Duration, UNIX_EPOCH};

    use openssl::pkey::{PKey, Private};

    use super::*;

    fn ca() -> Option<&'static (IssuerIdentity, PKey<Private>)> {
        static CA: OnceLock<Option<(IssuerIdentity, PKey<Private>)>> = OnceLock::new();
        CA.get_or_init(|| {
            let key = scepd_ca::generate_key(scepd_ca::KeySpec::P256).ok()?;
            let der = scepd_ca::self_signed_ca(&key, "CN=fuzz CA", 30).ok()?;
            Some((IssuerIdentity::from_ca_certificate(&der).ok()?, key))
        })
        .as_ref()
    }

    fn identity_named_by(id: &CertId) -> Option<IssuerIdentity> {
        let name = id.issuer_name_hash.as_bytes();
        let key = id.issuer_key_hash.as_bytes();
        let mut identity = IssuerIdentity {
            sha1_name: [0; 20],
            sha1_key: [0; 20],
            sha256_name: [0; 32],
            sha256_key: [0; 32],
        };
        if id.hash_algorithm.oid == ID_SHA_1 {
            identity.sha1_name = name.try_into().ok()?;
            identity.sha1_key = key.try_into().ok()?;
        } else {
            identity.sha256_name = name.try_into().ok()?;
            identity.sha256_key = key.try_into().ok()?;
        }
        Some(identity)
    }

    /// Answers arbitrary bytes as an OCSPRequest (statuses chosen by the serial's first
    /// octet); must never panic and must always produce a decodable OCSPResponse.
    pub fn respond_to(data: &[u8]) {
        let Some((ca_identity, key)) = ca() else {
            return;
        };
        // Speak for the issuer the first CertID names, so that seeds made against any CA
        // reach the lookup and signing paths.
        let issuer = parse_request(data)
            .ok()
            .and_then(|parsed| parsed.cert_ids.first().and_then(identity_named_by))
            .unwrap_or_else(|| ca_identity.clone());
        let issuer = &issuer;
        let context = Context {
            issuer,
            responder_key_hash: issuer.key_hash(),
            responder_certs: &[],
            now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            validity: Duration::from_secs(3600),
        };
        let lookup = |serial: &[u8]| match serial.first().map(|b| b % 4) {
            Some(0) => Ok(Status::Good),
            Some(1) => Ok(Status::Revoked {
                at: UNIX_EPOCH,
                reason: RevocationReason::from_code(serial.len() as u8),
            }),
            Some(2) => Err(LookupFailed("fuzz".into())),
            _ => Ok(Status::Unknown),
        };
        let response = respond(data, &context, lookup, |tbs| {
            let mut signer =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)
                    .map_err(|e| e.to_string())?;
            signer.update(tbs).map_err(|e| e.to_string())?;
            Ok(CaSignature {
                algorithm: spki::AlgorithmIdentifierOwned {
                    oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
                    parameters: None,
                },
                value: signer.sign_to_vec().map_err(|e| e.to_string())?,
            })
        });
        assert!(
            OcspResponse::from_der(&response).is_ok(),
            "undecodable reply"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
