//! PKCSReq and RenewalReq: from an opened message to a durable certificate (design.md §3
//! steps 5 to 8).

mod pending;
mod renew;

use std::borrow::Cow;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use der::{Decode, Encode};
use openssl::sha::sha256;
use scepd_ca::{CaError, IssueRequest};
use scepd_policy::{
    AllowAll, ChallengeKeys, Constraints, Decision, DecryptionKey, PolicyInput, PolicyModule,
    SignedChallenge, StaticKeys, StaticSecret,
};
use x509_cert::ext::pkix::KeyUsage;
use x509_cert::request::CertReq;

use super::{Enroller, Refusal};
use crate::config::{ChallengeConfig, Template};
use crate::keys::RaIdentity;
use crate::scep::decode::Opened;
use crate::scep::{oids, MessageType};
use crate::store::{CertRecord, CertStatus, Store, StoreError, TxBegin, TxKey};
use crate::verifiers::otp::OtpVerifier;
use crate::verifiers::webhook::WebhookVerifier;
use crate::verifiers::Unbuildable;

/// A request the policy module approved: only [`authorize`] makes one, and the CA is called
/// only with one, so issuance without authorisation cannot be written (design.md §3 step 7).
pub struct Approved<'a> {
    template: &'a Template,
    csr_der: Cow<'a, [u8]>,
    key: TxKey,
}

/// What a PKCSReq, RenewalReq or CertPoll comes to, short of a refusal.
pub enum Answer<'a> {
    /// A certificate to deliver.
    Issued(Delivery<'a>),
    /// Waiting for an admin (manual approval).
    Pending {
        /// The template the request waits under.
        template: &'a Template,
    },
}

/// A certificate ready to deliver: fresh, or from a retried transaction.
pub struct Delivery<'a> {
    pub template: &'a Template,
    pub cert_der: Vec<u8>,
    pub serial: Vec<u8>,
    pub replayed: bool,
}

type Failed<'a> = (Option<&'a Template>, Refusal);

/// CertPoll (RFC 8894 §3.3.3), see [`pending`].
pub fn poll<'a>(
    enroller: &'a Enroller,
    route: &'a Template,
    transaction_id: &str,
    now: SystemTime,
) -> Result<Answer<'a>, Failed<'a>> {
    pending::poll(enroller, route, transaction_id, now)
}

/// The policy module that a template's challenge configuration asks for. Verifiers that
/// need a port (the one-time passwords need the store) get it here.
pub fn policy_for(
    template: &Template,
    store: &Arc<dyn Store>,
    ra: &Arc<ArcSwap<RaIdentity>>,
) -> Arc<dyn PolicyModule> {
    match &template.challenge {
        ChallengeConfig::Signed(Some(settings)) => {
            let keys: Arc<dyn ChallengeKeys> = match &settings.decryption {
                Some(key) => Arc::new(StaticKeys(vec![key.clone()])),
                None => Arc::new(ra_decryption_keys(Arc::clone(ra))),
            };
            Arc::new(SignedChallenge::new(settings.trust.clone(), keys))
        }
        ChallengeConfig::Signed(None) => {
            Arc::new(Unbuildable("no [signed_challenge] trust configured".into()))
        }
        ChallengeConfig::Static(secret) => Arc::new(StaticSecret::new(secret.clone())),
        ChallengeConfig::Otp(_) => Arc::new(OtpVerifier::new(Arc::clone(store), &template.name)),
        ChallengeConfig::Webhook(webhook) => match WebhookVerifier::new(webhook) {
            Ok(verifier) => Arc::new(verifier),
            Err(e) => Arc::new(Unbuildable(format!("webhook URL: {e}"))),
        },
        // Replaced by `Enroller::with_connectors` when [connector.intune] is configured.
        ChallengeConfig::Intune => Arc::new(Unbuildable(
            "no [connector.intune] configured for an intune template".into(),
        )),
        ChallengeConfig::None => Arc::new(AllowAll),
    }
}

/// The RA encryption keys in service, read at each request: MDMs encrypt signed challenges
/// to the RA encryption certificate (GetCACert), which renews itself without a restart.
fn ra_decryption_keys(
    ra: Arc<ArcSwap<RaIdentity>>,
) -> impl Fn() -> Vec<DecryptionKey> + Send + Sync {
    move || {
        ra.load()
            .decrypters
            .iter()
            // Signed challenges are opened by the policy module with keys in memory; an RA
            // decryption key in a PKCS#11 token needs `[signed_challenge] decrypt_key`.
            .filter_map(|pair| {
                Some(DecryptionKey {
                    cert_der: pair.cert_der.clone(),
                    key: pair.key.as_openssl()?.clone(),
                })
            })
            .collect()
    }
}

/// Steps 5 to 8 for a PKCSReq or RenewalReq that arrived on `route`'s path.
///
/// A RenewalReq, and on a template with `treat_signed_pkcsreq_as_renewal` a PKCSReq signed
/// by a certificate our CA issued, is authorised by its signer certificate (see
/// [`renew`]); every other PKCSReq by the template's policy module.
pub fn enroll<'a>(
    enroller: &'a Enroller,
    route: &'a Template,
    opened: &'a Opened,
    now: SystemTime,
) -> Result<Answer<'a>, Failed<'a>> {
    let csr_der = opened.content();
    let csr = parse_csr(csr_der).map_err(|r| (None, r))?;
    let template = route_by_key_usage(enroller, route, &csr);
    let message_type = opened.message_type();
    let signer_der = &opened.reply_to().signer_cert_der;
    let renewal = match message_type {
        MessageType::RenewalReq => true,
        MessageType::PkcsReq => {
            route.renewal.treat_signed_pkcsreq_as_renewal
                && renew::signed_by_our_ca(enroller, signer_der)
        }
        _ => {
            return Err((
                None,
                Refusal::bad_request("message type not supported", "enroll: not a request"),
            ))
        }
    };
    let key = TxKey {
        transaction_id: opened.reply_to().transaction_id.clone(),
        message_type: message_type.code(),
        csr_digest: sha256(csr_der),
    };
    let fail = |refusal| (Some(template), refusal);
    if let Some(refusal) = super::connected::outbox_full(enroller, template) {
        return Err(fail(refusal));
    }
    // A transactionID parked for manual approval answers from its parked record.
    match enroller.store.pending_request(&key.transaction_id) {
        Ok(Some(parked)) if parked.csr_digest == key.csr_digest && !renewal => {
            return pending::answer(enroller, route, parked, now)
        }
        Ok(Some(_)) => {
            return Err(fail(Refusal::bad_request(
                "transactionID already used for another request",
                "transactionID is pending with a different CSR or message type",
            )))
        }
        Ok(None) => {}
        Err(e) => return Err(fail(Refusal::internal(format!("store: pending: {e}")))),
    }
    match enroller.store.begin_transaction(&key, now) {
        Ok(TxBegin::Fresh) => {}
        Ok(TxBegin::Replay { serial }) => {
            return replay(enroller, template, serial)
                .map(Answer::Issued)
                .map_err(fail)
        }
        Ok(TxBegin::Conflict) => {
            return Err(fail(Refusal::bad_request(
                "transactionID already used for another request",
                "transactionID succeeded or is pending with a different CSR",
            )))
        }
        Ok(TxBegin::InProgress) => {
            return Err(fail(Refusal::bad_request(
                "this transaction is being processed; retry later",
                "concurrent request with the same transactionID",
            )))
        }
        Err(e) => {
            return Err(fail(Refusal::internal(format!(
                "store: begin transaction: {e}"
            ))))
        }
    }
    // Intune wants a failure notification only for failures after its validation.
    let mut validated = false;
    let outcome = if renewal {
        renew::authorize_renewal(
            enroller,
            template,
            signer_der,
            &csr,
            csr_der,
            key.clone(),
            now,
        )
        .and_then(|(approved, old)| {
            validated = true;
            let delivery = issue(enroller, approved, now)?;
            if template.renewal.revoke_superseded {
                supersede(enroller, &old.serial, now);
            }
            Ok(Answer::Issued(delivery))
        })
    } else {
        authorize(enroller, template, opened, &csr, csr_der, key.clone(), now).and_then(
            |approved| {
                validated = true;
                if template.manual_approval {
                    pending::park(enroller, template, &csr, csr_der, &key, now)
                } else {
                    issue(enroller, approved, now).map(Answer::Issued)
                }
            },
        )
    };
    if let Err(refusal) = &outcome {
        super::connected::record_failure(
            enroller, &key, template, csr_der, refusal, validated, now,
        );
    }
    outcome.map_err(fail)
}

fn parse_csr(csr_der: &[u8]) -> Result<CertReq, Refusal> {
    let csr = CertReq::from_der(csr_der).map_err(|e| {
        Refusal::bad_request("the request is not a PKCS#10 CSR", format!("CSR: {e}"))
    })?;
    // Proof of possession before any policy decision, so a forged CSR never consumes a
    // one-time challenge.
    scepd_ca::verify_csr_signature(csr_der).map_err(refusal_for_ca_error)?;
    Ok(csr)
}

/// NDES's SignatureTemplate / EncryptionTemplate / GeneralPurposeTemplate choice.
fn route_by_key_usage<'a>(
    enroller: &'a Enroller,
    route: &'a Template,
    csr: &CertReq,
) -> &'a Template {
    let routing = &route.routing;
    let target = match requested_key_usage(csr) {
        Some(ku) if ku.digital_signature() && !ku.key_encipherment() => routing.signature.as_ref(),
        Some(ku) if ku.key_encipherment() && !ku.digital_signature() => routing.encryption.as_ref(),
        _ => routing.general_purpose.as_ref(),
    };
    target
        .and_then(|name| enroller.templates.get(name))
        .unwrap_or(route)
}

/// The keyUsage in the CSR's extensionRequest, if any.
fn requested_key_usage(csr: &CertReq) -> Option<KeyUsage> {
    let attribute = csr
        .info
        .attributes
        .iter()
        .find(|a| a.oid == oids::EXTENSION_REQUEST)?;
    let value = attribute.values.iter().next()?;
    let extensions = x509_cert::ext::Extensions::from_der(&value.to_der().ok()?).ok()?;
    let ku = extensions
        .iter()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_KEY_USAGE)?;
    KeyUsage::from_der(ku.extn_value.as_bytes()).ok()
}

fn replay<'a>(
    enroller: &'a Enroller,
    template: &'a Template,
    serial: Vec<u8>,
) -> Result<Delivery<'a>, Refusal> {
    match enroller.store.certificate(&serial) {
        Ok(Some(record)) if matches!(record.status, CertStatus::Revoked { .. }) => {
            Err(Refusal::bad_request(
                "the certificate of this transaction was revoked",
                format!(
                    "retried transaction: certificate {} is revoked",
                    scepd_ca::serial_hex(&serial)
                ),
            )
            .with_reason(super::connected::DELIVERY_NOT_CONFIRMED))
        }
        Ok(Some(record)) => Ok(Delivery {
            template,
            cert_der: record.der,
            serial,
            replayed: true,
        }),
        Ok(None) => Err(Refusal::internal(
            "transaction names a certificate the store does not hold",
        )),
        Err(e) => Err(Refusal::internal(format!("store: {e}"))),
    }
}

/// Step 6: the template's policy module decides, and a one-time challenge is redeemed.
fn authorize<'a>(
    enroller: &'a Enroller,
    template: &'a Template,
    opened: &'a Opened,
    csr: &CertReq,
    csr_der: &'a [u8],
    key: TxKey,
    now: SystemTime,
) -> Result<Approved<'a>, Refusal> {
    let challenge = scepd_policy::challenge_password(csr).map_err(|e| {
        Refusal::bad_request("the challenge password cannot be read", e.to_string())
    })?;
    let input = PolicyInput {
        template: &template.name,
        csr_der,
        csr,
        challenge: challenge.as_deref(),
        transaction_id: &opened.reply_to().transaction_id,
        signer_der: &opened.reply_to().signer_cert_der,
        renewal_of: None,
        now,
    };
    let policy = enroller.policies.get(&template.name).ok_or_else(|| {
        Refusal::internal(format!("no policy module for template {}", template.name))
    })?;
    let approval = match policy.evaluate(&input) {
        Decision::Approve(approval) => approval,
        Decision::Deny(denial) => {
            let reason = crate::verifiers::intune::code_of(&denial.detail)
                .map_or_else(|| denial.reason.as_str().to_owned(), str::to_owned);
            return Err(
                Refusal::bad_request("the request was not approved", denial.to_string())
                    .with_reason(reason),
            );
        }
    };
    require_no_constraints(&approval.constraints)?;
    if let Some(redemption) = &approval.redeem {
        match enroller
            .store
            .redeem_once(&redemption.id, redemption.forget_after, now)
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(Refusal::bad_request(
                    "the challenge was already used",
                    format!(
                        "{}: one-time challenge reused",
                        scepd_policy::DenialReason::ChallengeReplayed
                    ),
                ))
            }
            Err(e) => return Err(Refusal::internal(format!("store: redeem: {e}"))),
        }
    }
    Ok(Approved {
        template,
        csr_der: Cow::Borrowed(csr_der),
        key,
    })
}

/// Constraints come with signed challenges (a later issue). Until the RA enforces them,
/// a module that grants any is refused rather than silently ignored: fail closed.
fn require_no_constraints(constraints: &Constraints) -> Result<(), Refusal> {
    if *constraints == Constraints::default() {
        Ok(())
    } else {
        Err(Refusal::internal(
            "policy module returned constraints this RA cannot enforce yet",
        ))
    }
}

/// Steps 7 and 8: the CA signs; certificate and transaction become durable together.
fn issue<'a>(
    enroller: &'a Enroller,
    approved: Approved<'a>,
    now: SystemTime,
) -> Result<Delivery<'a>, Refusal> {
    let request = IssueRequest {
        csr_der: &approved.csr_der,
        profile: &approved.template.profile,
        now,
    };
    // A duplicate serial (128 random bits) is astronomically unlikely; one retry covers it.
    for _attempt in 0..2 {
        let issued = enroller.ca.issue(&request).map_err(refusal_for_ca_error)?;
        let record = CertRecord {
            serial: issued.serial.clone(),
            der: issued.der.clone(),
            subject: issued.subject.clone(),
            sans: issued.sans.clone(),
            template: approved.template.name.clone(),
            transaction_id: approved.key.transaction_id.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            status: CertStatus::Valid,
        };
        let event = super::connected::issued_event(
            enroller,
            approved.template,
            &record,
            &approved.csr_der,
            now,
        );
        match enroller
            .store
            .record_issued_with_event(&approved.key, &record, event.as_ref())
        {
            Ok(()) => {
                super::connected::confirm_delivery(
                    enroller,
                    approved.template,
                    &record,
                    event.as_ref(),
                    &approved.csr_der,
                    now,
                )?;
                return Ok(Delivery {
                    template: approved.template,
                    cert_der: issued.der,
                    serial: issued.serial,
                    replayed: false,
                });
            }
            Err(StoreError::DuplicateSerial(_)) => continue,
            Err(e @ StoreError::OutboxFull { .. }) => {
                tracing::error!(transaction_id = %approved.key.transaction_id, template = %approved.template.name, error = %e, "certificate not issued: the connector outbox is full");
                return Err(Refusal::internal(format!("store: record issued: {e}")));
            }
            Err(e) => return Err(Refusal::internal(format!("store: record issued: {e}"))),
        }
    }
    Err(Refusal::internal("serial collision twice in a row"))
}

/// The CA refuses CSRs that break the template (key size, SAN types...): a policy matter
/// for the client, badRequest. Anything else is ours: logged with the reference.
fn refusal_for_ca_error(error: CaError) -> Refusal {
    match error {
        CaError::BadCsrSignature => {
            Refusal::bad_message_check("the CSR signature does not verify", error.to_string())
        }
        CaError::UnsupportedAlgorithm(_) => {
            Refusal::bad_alg("algorithm not supported", error.to_string())
        }
        CaError::MalformedCsr(_) | CaError::ProfileViolation { .. } | CaError::InvalidName(_) => {
            Refusal::bad_request(
                "the request does not satisfy the template",
                error.to_string(),
            )
        }
        _ => Refusal::internal(format!("CA: {error}")),
    }
}

/// Revokes a renewed certificate (reason superseded) after its successor is durable. A
/// failure here does not take the new certificate back; it is logged for the admin.
fn supersede(enroller: &Enroller, serial: &[u8], now: SystemTime) {
    let reason = scepd_ca::RevocationReason::Superseded;
    let serial_hex = scepd_ca::serial_hex(serial);
    match enroller
        .store
        .revoke(serial, reason.name(), renew::SUPERSEDED_BY, now)
    {
        Ok(_) => {
            if let Err(e) = enroller.ca.revoke(serial, reason, now) {
                tracing::error!(serial = %serial_hex, error = %e, "CA refused the revocation of a superseded certificate");
            }
            // Relying parties that read the CRL see it now, not at the next scheduled signing.
            if let Some(crls) = &enroller.crl {
                if let Err(e) = crls.regenerate_all(now) {
                    tracing::error!(serial = %serial_hex, error = %e, "CRL not re-signed after superseding a certificate");
                }
            }
        }
        Err(e) => {
            tracing::error!(serial = %serial_hex, error = %e, "could not revoke a superseded certificate");
        }
    }
}

fn record_failure(enroller: &Enroller, key: &TxKey, refusal: &Refusal, now: SystemTime) {
    if let Err(e) = enroller
        .store
        .record_failure(key, refusal.fail_info.code(), refusal.text, now)
    {
        // Never drop a side effect's error (design.md §7 rule 8).
        tracing::error!(transaction_id = %key.transaction_id, error = %e, "could not record a failed transaction");
    }
}
