//! RenewalReq (RFC 8894 §2.3, §3.3.1): the request is authorised by the certificate that
//! signed it instead of a challenge.
//!
//! The signer must be a certificate this CA issued (its signature verifies with the key of
//! one of the CA's generations, see `rollover.rs`, and the store holds the very same bytes),
//! issued under the same template, inside its validity period, not revoked, and, if the
//! template says so, within its last N days.
//! The CSR's subject must equal the old certificate's unless the template allows a change;
//! the CA re-checks the CSR against the template's profile as for any issuance. Any of these
//! failing is a policy denial: FAILURE badRequest (design.md §4).

use std::time::SystemTime;

use der::Decode;
use openssl::x509::X509;
use x509_cert::request::CertReq;
use x509_cert::Certificate;

use super::{Approved, Enroller, Refusal};
use crate::config::Template;
use crate::store::{CertRecord, CertStatus, TxKey};

/// Who revoked a superseded certificate, as recorded in the store.
pub const SUPERSEDED_BY: &str = "scepd renewal";

/// Step 6 for a renewal: the signer certificate stands in for the challenge.
pub(super) fn authorize_renewal<'a>(
    enroller: &'a Enroller,
    template: &'a Template,
    signer_der: &[u8],
    csr: &CertReq,
    csr_der: &'a [u8],
    key: TxKey,
    now: SystemTime,
) -> Result<(Approved<'a>, CertRecord), Refusal> {
    let old = issued_signer(enroller, signer_der)?;
    let deny = |detail: String| Refusal::bad_request("the renewal was not approved", detail);
    let serial = scepd_ca::serial_hex(&old.serial);
    if old.template != template.name {
        return Err(deny(format!(
            "signer {serial} was issued under template {}, not {}",
            old.template, template.name
        )));
    }
    if let CertStatus::Revoked { at, reason, .. } = &old.status {
        return Err(deny(format!(
            "signer {serial} was revoked ({reason}) at {} (Unix time)",
            at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        )));
    }
    if now < old.not_before || now > old.not_after {
        return Err(deny(format!("signer {serial} is not valid now")));
    }
    if let Some(window) = template.renewal.allowed_before_expiry {
        let opens = old.not_after.checked_sub(window).unwrap_or(old.not_before);
        if now < opens {
            return Err(deny(format!(
                "signer {serial} may be renewed only in its last {} days",
                window.as_secs() / 86_400
            )));
        }
    }
    if template.renewal.require_same_subject {
        let old_cert = Certificate::from_der(&old.der)
            .map_err(|e| Refusal::internal(format!("stored certificate {serial}: {e}")))?;
        if old_cert.tbs_certificate.subject != csr.info.subject {
            return Err(deny(format!(
                "CSR subject {} differs from the renewed certificate's {}",
                scepd_ca::format_dn(&csr.info.subject),
                old.subject
            )));
        }
    }
    Ok((
        Approved {
            template,
            csr_der: std::borrow::Cow::Borrowed(csr_der),
            key,
        },
        old,
    ))
}

/// Whether `signer_der` was issued by our CA (by name): such a PKCSReq is a renewal on a
/// template with `treat_signed_pkcsreq_as_renewal`. Self-signed throwaway signers are not.
pub(super) fn signed_by_our_ca(enroller: &Enroller, signer_der: &[u8]) -> bool {
    let (Ok(signer), Some(ca)) = (
        Certificate::from_der(signer_der),
        enroller
            .ca
            .chain()
            .first()
            .and_then(|der| Certificate::from_der(der).ok()),
    ) else {
        return false;
    };
    signer.tbs_certificate.issuer == ca.tbs_certificate.subject
        && signer.tbs_certificate.subject != signer.tbs_certificate.issuer
}

/// The store's record of the signer certificate, once its signature verifies with the CA's
/// key and the store holds exactly these bytes.
fn issued_signer(enroller: &Enroller, signer_der: &[u8]) -> Result<CertRecord, Refusal> {
    let foreign = |detail: String| {
        Refusal::bad_request(
            "the renewal must be signed by a certificate this CA issued",
            detail,
        )
    };
    let signer = X509::from_der(signer_der)
        .map_err(|e| foreign(format!("signer certificate unreadable: {e}")))?;
    // Any of our CA keys: after a rollover, certificates of the previous CA renew too.
    if !enroller.ca.issued(signer_der) {
        return Err(foreign("signer certificate not signed by our CA".into()));
    }
    let serial = signer
        .serial_number()
        .to_bn()
        .map(|bn| bn.to_vec())
        .map_err(|e| foreign(format!("signer serial: {e}")))?;
    match enroller.store.certificate(&serial) {
        Ok(Some(record)) if record.der == signer_der => Ok(record),
        Ok(_) => Err(foreign(format!(
            "signer {} is not a certificate issued through scepd",
            scepd_ca::serial_hex(&serial)
        ))),
        Err(e) => Err(Refusal::internal(format!("store: {e}"))),
    }
}
