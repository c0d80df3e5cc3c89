//! The OCSP responder as the server runs it: [`super::respond`] with the store as the status
//! lookup and the CA backend as the signer. The only I/O here is the store read.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scepd_ca::{CaBackend, RevocationReason};

use super::{Context, IssuerIdentity, LookupFailed, OcspError, Status};
use crate::store::{CertStatus, Store};

/// How long an answer holds (nextUpdate - thisUpdate). Answers are computed from the store at
/// request time, so a short window costs nothing and bounds how long a cached `good` outlives
/// a revocation.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(3600);

/// The CA's OCSP responder (RFC 6960), signing with the CA key (`CaBackend::sign_ocsp_response`).
pub struct OcspResponder {
    ca: Arc<dyn CaBackend>,
    store: Arc<dyn Store>,
    issuer: IssuerIdentity,
    validity: Duration,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder")
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl OcspResponder {
    /// A responder for the CA's first chain certificate.
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
        })
    }

    /// Answers one DER OCSPRequest with a DER OCSPResponse. CPU-bound (one signature): call
    /// it off the reactor.
    pub fn answer(&self, request_der: &[u8], now: SystemTime) -> Vec<u8> {
        let context = Context {
            issuer: &self.issuer,
            now,
            validity: self.validity,
        };
        super::respond(
            request_der,
            &context,
            |serial| self.status(serial),
            |tbs| self.ca.sign_ocsp_response(tbs).map_err(|e| e.to_string()),
        )
    }

    fn status(&self, serial: &[u8]) -> Result<Status, LookupFailed> {
        let record = self
            .store
            .certificate(serial)
            .map_err(|e| LookupFailed(e.to_string()))?;
        Ok(match record {
            None => Status::Unknown,
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
