//! The OCSP responder as the server runs it: [`super::respond`] with the store as the status
//! lookup and either the CA backend or a delegated responder key as the signer. The only I/O
//! here is the store read.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use der::Decode;
use openssl::pkey::{PKey, Private};
use scepd_ca::{CaBackend, CaSignature, RevocationReason, SoftwareCa};
use x509_cert::Certificate;

use super::{Context, IssuerIdentity, LookupFailed, OcspError, Status};
use crate::store::{CertStatus, Store};

/// How long an answer holds (nextUpdate - thisUpdate). Answers are computed from the store at
/// request time, so a short window costs nothing and bounds how long a cached `good` outlives
/// a revocation.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(3600);

/// Subject of the delegated responder certificates scepd issues.
const DELEGATED_SUBJECT: &str = "CN=scepd OCSP responder";

/// The CA's OCSP responder (RFC 6960).
pub struct OcspResponder {
    ca: Arc<dyn CaBackend>,
    store: Arc<dyn Store>,
    issuer: IssuerIdentity,
    validity: Duration,
    delegation: Option<Delegation>,
    /// Answer `good`/`revoked` only for certificates this CA signed (several CA
    /// generations share one store, and their subjects are the same).
    own_certificates_only: bool,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder")
            .field("validity", &self.validity)
            .field("delegated", &self.delegation.is_some())
            .finish_non_exhaustive()
    }
}

/// A delegated responder (RFC 6960 §4.2.2.2): a P-256 key that lives only in memory and a
/// short-lived certificate for it (id-kp-OCSPSigning, ocsp-nocheck) that the software CA
/// issues at start-up and again once half its validity has passed.
struct Delegation {
    ca: Arc<SoftwareCa>,
    validity_days: u32,
    current: RwLock<Arc<Delegated>>,
    renewing: Mutex<()>,
}

struct Delegated {
    key: PKey<Private>,
    certificate: Certificate,
    key_hash: [u8; 20],
    renew_after: SystemTime,
}

impl Delegation {
    fn issue(ca: &SoftwareCa, validity_days: u32) -> Result<Delegated, OcspError> {
        let failed = |e: &dyn std::fmt::Display| {
            OcspError::CaCertificate(format!("delegated responder certificate: {e}"))
        };
        let key = scepd_ca::generate_key(scepd_ca::KeySpec::P256).map_err(|e| failed(&e))?;
        let der =
            scepd_ca::issue_ocsp_responder_certificate(ca, &key, DELEGATED_SUBJECT, validity_days)
                .map_err(|e| failed(&e))?;
        let certificate = Certificate::from_der(&der).map_err(|e| failed(&e))?;
        let validity = &certificate.tbs_certificate.validity;
        let not_before = validity.not_before.to_system_time();
        let not_after = validity.not_after.to_system_time();
        let half = not_after.duration_since(not_before).unwrap_or_default() / 2;
        let key_hash = openssl::sha::sha1(
            certificate
                .tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
        );
        Ok(Delegated {
            key,
            certificate,
            key_hash,
            renew_after: not_before + half,
        })
    }

    /// The current responder, renewed first when half its validity has passed. A failed
    /// renewal keeps the current one (still valid) and is logged.
    fn current(&self, now: SystemTime) -> Arc<Delegated> {
        let current = Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner));
        if now < current.renew_after {
            return current;
        }
        let _one_at_a_time = self.renewing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner));
        if now < current.renew_after {
            return current;
        }
        match Self::issue(&self.ca, self.validity_days) {
            Ok(renewed) => {
                let renewed = Arc::new(renewed);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    Arc::clone(&renewed);
                tracing::info!("delegated OCSP responder certificate renewed");
                renewed
            }
            Err(e) => {
                tracing::error!(error = %e, "delegated OCSP responder certificate not renewed");
                current
            }
        }
    }
}

fn sign_p256(key: &PKey<Private>, tbs: &[u8]) -> Result<CaSignature, String> {
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)
        .map_err(|e| e.to_string())?;
    signer.update(tbs).map_err(|e| e.to_string())?;
    Ok(CaSignature {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        },
        value: signer.sign_to_vec().map_err(|e| e.to_string())?,
    })
}

impl OcspResponder {
    /// A responder for the CA's first chain certificate, signing with the CA key
    /// (`CaBackend::sign_ocsp_response`).
    pub fn new(
        ca: Arc<dyn CaBackend>,
        store: Arc<dyn Store>,
        validity: Duration,
    ) -> Result<Self, OcspError> {
        let ca_cert = ca
            .chain()
            .first()
            .ok_or_else(|| OcspError::CaCertificate("the CA backend has no certificate".into()))?;
        let issuer = IssuerIdentity::from_ca_certificate(ca_cert)?;
        Ok(Self {
            ca,
            store,
            issuer,
            validity,
            delegation: None,
            own_certificates_only: false,
        })
    }

    /// Answers `unknown` for certificates that another CA generation signed (one signature
    /// check per answered certificate).
    pub fn own_certificates_only(mut self) -> Self {
        self.own_certificates_only = true;
        self
    }

    /// Whether a request names this responder's CA in one of its CertIDs.
    fn speaks_for(&self, request: &super::ParsedRequest) -> bool {
        request.cert_ids.iter().any(|id| self.issuer.matches(id))
    }

    /// Signs with a delegated responder certificate instead, issued now by `ca` for
    /// `validity_days` and renewed when half of that has passed.
    pub fn with_delegated_responder(
        mut self,
        ca: Arc<SoftwareCa>,
        validity_days: u32,
    ) -> Result<Self, OcspError> {
        let first = Delegation::issue(&ca, validity_days)?;
        self.delegation = Some(Delegation {
            ca,
            validity_days,
            current: RwLock::new(Arc::new(first)),
            renewing: Mutex::new(()),
        });
        Ok(self)
    }

    /// The delegated responder certificate in use (DER), if responses are delegated.
    pub fn delegated_certificate(&self, now: SystemTime) -> Option<Certificate> {
        self.delegation
            .as_ref()
            .map(|d| d.current(now).certificate.clone())
    }

    /// Answers one DER OCSPRequest with a DER OCSPResponse. CPU-bound (one signature): call
    /// it off the reactor.
    pub fn answer(&self, request_der: &[u8], now: SystemTime) -> Vec<u8> {
        let lookup = |serial: &[u8]| self.status(serial);
        match &self.delegation {
            None => {
                let context = Context {
                    issuer: &self.issuer,
                    responder_key_hash: self.issuer.key_hash(),
                    responder_certs: &[],
                    now,
                    validity: self.validity,
                };
                super::respond(request_der, &context, lookup, |tbs| {
                    self.ca.sign_ocsp_response(tbs).map_err(|e| e.to_string())
                })
            }
            Some(delegation) => {
                let delegated = delegation.current(now);
                let certs = [delegated.certificate.clone()];
                let context = Context {
                    issuer: &self.issuer,
                    responder_key_hash: &delegated.key_hash,
                    responder_certs: &certs,
                    now,
                    validity: self.validity,
                };
                super::respond(request_der, &context, lookup, |tbs| {
                    sign_p256(&delegated.key, tbs)
                })
            }
        }
    }

    fn status(&self, serial: &[u8]) -> Result<Status, LookupFailed> {
        let record = self
            .store
            .certificate(serial)
            .map_err(|e| LookupFailed(e.to_string()))?;
        Ok(match record {
            None => Status::Unknown,
            Some(record) if self.own_certificates_only && !self.ca.issued(&record.der) => {
                Status::Unknown
            }
            Some(record) => match record.status {
                CertStatus::Valid => Status::Good,
                CertStatus::Revoked { at, reason, .. } => Status::Revoked {
                    at,
                    reason: reason
                        .parse::<RevocationReason>()
                        .ok()
                        .filter(|r| *r != RevocationReason::Unspecified),
                },
            },
        })
    }
}

/// The OCSP responders of every CA generation in service: a request goes to the one whose
/// CA its CertIDs name (RFC 6960 §4.1.1 issuer hashes), else to the first, which answers
/// `unauthorized` as for any foreign issuer.
#[derive(Debug)]
pub struct OcspResponders {
    responders: Vec<OcspResponder>,
}

impl OcspResponders {
    /// `responders`, the one of the generation in charge first. At least one.
    pub fn new(first: OcspResponder, others: Vec<OcspResponder>) -> Self {
        let mut responders = vec![first];
        responders.extend(others);
        Self { responders }
    }

    /// Answers one DER OCSPRequest with a DER OCSPResponse. CPU-bound: off the reactor.
    pub fn answer(&self, request_der: &[u8], now: SystemTime) -> Vec<u8> {
        let chosen = match (
            super::parse_request(request_der),
            self.responders.as_slice(),
        ) {
            (Ok(parsed), [_, _, ..]) => self
                .responders
                .iter()
                .find(|r| r.speaks_for(&parsed))
                .unwrap_or(&self.responders[0]),
            (_, responders) => &responders[0],
        };
        chosen.answer(request_der, now)
    }

    /// The responders, the first being the generation in charge at start-up.
    pub fn responders(&self) -> &[OcspResponder] {
        &self.responders
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use der::Encode;
    use openssl::x509::X509;

    fn software_ca() -> Arc<SoftwareCa> {
        let key = scepd_ca::generate_key(scepd_ca::KeySpec::P256).unwrap();
        let cert = scepd_ca::self_signed_ca(&key, "CN=Delegation test CA", 30).unwrap();
        Arc::new(SoftwareCa::from_parts(cert, key, Vec::new()).unwrap())
    }

    #[test]
    fn the_delegated_certificate_is_an_ocsp_signer_and_is_renewed_at_half_life() {
        let ca = software_ca();
        let responder = OcspResponder::new(
            Arc::clone(&ca) as Arc<dyn CaBackend>,
            Arc::new(MemoryStore::new()),
            DEFAULT_VALIDITY,
        )
        .unwrap()
        .with_delegated_responder(Arc::clone(&ca), 2)
        .unwrap();
        let now = SystemTime::now();
        let first = responder.delegated_certificate(now).unwrap();
        let der = first.to_der().unwrap();
        let text = String::from_utf8(X509::from_der(&der).unwrap().to_text().unwrap()).unwrap();
        assert!(text.contains("OCSP Signing"), "{text}");
        assert!(text.contains("OCSP No Check"), "{text}");
        let ca_x509 = X509::from_der(ca.certificate_der()).unwrap();
        assert!(X509::from_der(&der)
            .unwrap()
            .verify(&ca_x509.public_key().unwrap())
            .unwrap());
        // Within the first half: the same certificate; past it: a new one.
        assert_eq!(responder.delegated_certificate(now).unwrap(), first);
        let later = now + Duration::from_secs(36 * 3600);
        assert_ne!(responder.delegated_certificate(later).unwrap(), first);
    }
}
