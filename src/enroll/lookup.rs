//! GetCert and GetCRL (RFC 8894 §3.3.4): answers from the store, never an issuance.
//!
//! Both carry an IssuerAndSerialNumber. The issuer must be our CA and the serial a
//! certificate this CA issued (the store holds every one): otherwise FAILURE badCertId
//! (design.md §4). GetCRL answers with a CRL signed now from the store's revocations, so it
//! does not depend on the HTTP CRL publisher.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::Decode;
use scepd_ca::{RevocationReason, RevokedEntry};
use x509_cert::Certificate;

use super::{Enroller, Refusal};
use crate::crl::CrlPublisher;
use crate::scep::decode::Opened;
use crate::scep::message_data;
use crate::store::CertRecord;

/// nextUpdate of a CRL handed out over GetCRL: a day after thisUpdate.
pub const CRL_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// GetCert: the certificate named by the messageData.
pub fn get_cert(enroller: &Enroller, opened: &Opened) -> Result<CertRecord, Refusal> {
    named_certificate(enroller, opened)
}

/// GetCRL: a CRL of every revocation, signed now, after checking that the messageData
/// names a certificate we issued. The cRLNumber is the Unix time in seconds: it increases
/// with each second without a counter to persist, and two CRLs of the same second list the
/// same state unless a revocation fell in that second (RFC 5280 §5.2.3 asks only for an
/// increasing number).
pub fn get_crl(enroller: &Enroller, opened: &Opened, now: SystemTime) -> Result<Vec<u8>, Refusal> {
    let named = named_certificate(enroller, opened)?;
    // The CRL of the CA generation that signed the named certificate.
    match enroller
        .crl
        .as_ref()
        .and_then(|crls| crls.for_certificate(&named.der))
    {
        Some(publisher) => published_crl(publisher, now),
        None => current_crl(enroller, now),
    }
}

/// The CRL the server publishes over HTTP (signed now if none was yet).
fn published_crl(publisher: &CrlPublisher, now: SystemTime) -> Result<Vec<u8>, Refusal> {
    if let Some(current) = publisher.current() {
        return Ok(current.der.to_vec());
    }
    publisher
        .regenerate(now)
        .map(|published| published.der.to_vec())
        .map_err(|e| Refusal::internal(format!("CRL: {e}")))
}

/// Without a publisher (an [`Enroller`] built without one, as in tests): a CRL of the store's
/// revocations, thisUpdate `now`, nextUpdate `now` + [`CRL_VALIDITY`].
pub fn current_crl(enroller: &Enroller, now: SystemTime) -> Result<Vec<u8>, Refusal> {
    let revoked = enroller
        .store
        .revocations()
        .map_err(|e| Refusal::internal(format!("store: revocations: {e}")))?
        .into_iter()
        .map(|(serial, at, reason)| RevokedEntry {
            serial,
            at,
            // Reasons are stored as text; free text means "unspecified" on the CRL.
            reason: reason.parse().unwrap_or(RevocationReason::Unspecified),
        })
        .collect::<Vec<_>>();
    let number = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    enroller
        .ca
        .crl(&revoked, now, now + CRL_VALIDITY, number)
        .map_err(|e| Refusal::internal(format!("CA: CRL: {e}")))
}

fn named_certificate(enroller: &Enroller, opened: &Opened) -> Result<CertRecord, Refusal> {
    let id = message_data::parse_issuer_and_serial(opened.content()).map_err(|e| {
        Refusal::bad_request(
            "messageData is not an IssuerAndSerialNumber",
            format!("IssuerAndSerialNumber: {e}"),
        )
    })?;
    let ca_subject = enroller
        .ca
        .chain()
        .first()
        .and_then(|der| Certificate::from_der(der).ok())
        .map(|cert| cert.tbs_certificate.subject)
        .ok_or_else(|| Refusal::internal("the CA chain is empty or unreadable"))?;
    let unknown = || {
        Refusal::bad_cert_id(
            "no such certificate",
            format!(
                "no certificate with serial {} issued by {}",
                scepd_ca::serial_hex(id.serial_number.as_bytes()),
                scepd_ca::format_dn(&id.issuer)
            ),
        )
    };
    if id.issuer != ca_subject {
        return Err(unknown());
    }
    match enroller.store.certificate(id.serial_number.as_bytes()) {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(unknown()),
        Err(e) => Err(Refusal::internal(format!("store: {e}"))),
    }
}
