//! The enrollment cycle (design.md §3): `Received -> Verified -> Opened -> Approved -> Issued`.
//!
//! Runs on the crypto pool, never on the reactor: every step here is synchronous and
//! CPU-bound. The failInfo is chosen in exactly one place ([`Refusal`]).

mod approve;
mod connected;
mod lookup;
pub mod queue;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use scepd_ca::CaBackend;
use scepd_policy::PolicyModule;

use crate::config::Template;
use crate::crl::CrlSet;
use crate::keys::RaIdentity;
use crate::scep::decode::{self, Limits, Opened, Rejected, ReplyTo};
use crate::scep::envelope::RecipientKey;
use crate::scep::reply::{self, Outcome, ReplySigner};
use crate::scep::{ContentCipher, FailInfo, MessageType};
use crate::store::Store;

pub use approve::{Answer, Approved};

/// Why a request is refused: the failInfo for the wire, a short text for the client, and the
/// full cause for the log. Built only here, so the mapping of design.md §4 lives in one file.
#[derive(Debug)]
pub struct Refusal {
    /// failInfo on the wire.
    pub fail_info: FailInfo,
    /// failInfoText: short and generic.
    pub text: &'static str,
    /// The whole story, for tracing only.
    pub detail: String,
    /// A machine-readable reason for connector events and the transaction record: a policy
    /// denial reason (`SubjectNameMismatch`), an Intune code (`ChallengeExpired`).
    pub reason: Option<String>,
}

impl Refusal {
    /// Bad signature, digest mismatch, bad CSR self-signature, any envelope failure.
    pub fn bad_message_check(text: &'static str, detail: impl Into<String>) -> Self {
        Self {
            fail_info: FailInfo::BadMessageCheck,
            text,
            detail: detail.into(),
            reason: None,
        }
    }
    /// Unsupported or disallowed algorithm.
    pub fn bad_alg(text: &'static str, detail: impl Into<String>) -> Self {
        Self {
            fail_info: FailInfo::BadAlg,
            text,
            detail: detail.into(),
            reason: None,
        }
    }
    /// Policy denial, reuse, conflicts, unsupported message types.
    pub fn bad_request(text: &'static str, detail: impl Into<String>) -> Self {
        Self {
            fail_info: FailInfo::BadRequest,
            text,
            detail: detail.into(),
            reason: None,
        }
    }
    /// A rejection from the codec: its detail goes to the log only, the client gets a
    /// generic text for the failInfo (details could help an attacker).
    pub fn from_codec(rejected: &Rejected) -> Self {
        let text = match rejected.fail_info {
            FailInfo::BadAlg => "algorithm not supported",
            FailInfo::BadMessageCheck => "message check failed",
            FailInfo::BadTime => "signing time out of range",
            FailInfo::BadCertId => "no such certificate",
            FailInfo::BadRequest => "request not supported",
        };
        Self {
            fail_info: rejected.fail_info,
            text,
            detail: rejected.detail.into(),
            reason: None,
        }
    }

    /// GetCert/GetCRL (or a renewal) naming a certificate we did not issue.
    pub fn bad_cert_id(text: &'static str, detail: impl Into<String>) -> Self {
        Self {
            fail_info: FailInfo::BadCertId,
            text,
            detail: detail.into(),
            reason: None,
        }
    }

    /// The same refusal with a machine-readable reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// CA, store or key failure: still badRequest on the wire (design.md §4), with the
    /// transactionID as the reference an admin can find in the log.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self {
            fail_info: FailInfo::BadRequest,
            text: "internal error; the administrator can find this transactionID in the log",
            detail: detail.into(),
            reason: None,
        }
    }
}

/// What one PKIOperation produced, for the HTTP layer and the request log.
#[derive(Debug)]
pub enum PkiReply {
    /// Not even a ReplyTo could be read: HTTP 400.
    Unreadable(String),
    /// A signed CertRep.
    CertRep {
        /// The DER pkiMessage.
        der: Vec<u8>,
        /// What happened, for the log.
        summary: Summary,
    },
    /// The reply could not be signed (a key problem on our side): HTTP 503.
    Unavailable(String),
}

/// One request's outcome, logged once by the HTTP layer.
#[derive(Debug, Default)]
pub struct Summary {
    /// messageType of the request.
    pub message_type: Option<MessageType>,
    /// transactionID.
    pub transaction_id: String,
    /// Template that handled it.
    pub template: String,
    /// success, failure or pending.
    pub outcome: &'static str,
    /// failInfo of a failure.
    pub fail_info: Option<FailInfo>,
    /// The cause of a failure.
    pub detail: String,
    /// Serial of the issued certificate (uppercase hex).
    pub serial: Option<String>,
    /// Whether this answered a retry from the stored transaction.
    pub replayed: bool,
}

/// Everything the cycle needs, built once at start-up and shared read-only.
pub struct Enroller {
    /// Swapped whole by an RA renewal; read without a lock on every request (shared with the
    /// signed-challenge verifiers, which decrypt with the RA encryption keys in service).
    ra: Arc<ArcSwap<RaIdentity>>,
    ca: Arc<dyn CaBackend>,
    store: Arc<dyn Store>,
    templates: BTreeMap<String, Template>,
    policies: BTreeMap<String, Arc<dyn PolicyModule>>,
    legacy_everywhere: bool,
    limits: Limits,
    /// The published CRL, when the server publishes one: GetCRL answers with it, and a
    /// renewal that supersedes a certificate re-signs it.
    crl: Option<Arc<CrlSet>>,
    /// Where templates report (events, Intune validation), when any connector is configured.
    connectors: Option<Arc<crate::connector::Connectors>>,
}

/// The pieces an [`Enroller`] is built from.
pub struct EnrollerParts {
    /// RA keys.
    pub ra: RaIdentity,
    /// The CA backend.
    pub ca: Arc<dyn CaBackend>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Templates by lowercase name.
    pub templates: BTreeMap<String, Template>,
    /// Single DES accepted on every path.
    pub legacy_everywhere: bool,
    /// Largest pkiMessage.
    pub max_message_bytes: usize,
}

impl Enroller {
    /// Wires the parts; one policy module per template.
    pub fn new(parts: EnrollerParts) -> Self {
        let ra = Arc::new(ArcSwap::from_pointee(parts.ra));
        let policies = parts
            .templates
            .iter()
            .map(|(name, t)| (name.clone(), approve::policy_for(t, &parts.store, &ra)))
            .collect();
        Self {
            ra,
            ca: parts.ca,
            store: parts.store,
            templates: parts.templates,
            policies,
            legacy_everywhere: parts.legacy_everywhere,
            limits: Limits {
                max_message_bytes: parts.max_message_bytes,
            },
            crl: None,
            connectors: None,
        }
    }

    /// Hands over the connectors: templates with `[challenge] type = "intune"` validate
    /// through the Intune client, and routed templates write connector events.
    pub fn with_connectors(mut self, connectors: Arc<crate::connector::Connectors>) -> Self {
        if let Some(client) = &connectors.intune {
            for (name, template) in &self.templates {
                if matches!(template.challenge, crate::config::ChallengeConfig::Intune) {
                    let verifier =
                        crate::verifiers::intune::IntuneVerifier::new(Arc::clone(client));
                    self.policies.insert(name.clone(), Arc::new(verifier));
                }
            }
        }
        self.connectors = Some(connectors);
        self
    }

    /// The connectors, if configured.
    pub fn connectors(&self) -> Option<&Arc<crate::connector::Connectors>> {
        self.connectors.as_ref()
    }

    /// Hands over the CRL publishers, so that GetCRL and the CRLs served over HTTP are the
    /// same CRLs with one cRLNumber sequence, and superseding renewals reach them at once.
    pub fn with_crls(mut self, crls: Arc<CrlSet>) -> Self {
        self.crl = Some(crls);
        self
    }

    /// The CRL publishers, if the server publishes CRLs.
    pub fn crls(&self) -> Option<&Arc<CrlSet>> {
        self.crl.as_ref()
    }

    /// The current RA identity (for GetCACert).
    pub fn ra(&self) -> Arc<RaIdentity> {
        self.ra.load_full()
    }

    /// Replaces the RA identity (after an RA renewal); requests already running finish
    /// with the identity they loaded.
    pub fn replace_ra(&self, ra: RaIdentity) {
        self.ra.store(Arc::new(ra));
    }

    /// The CA backend (for GetCACert).
    pub fn ca(&self) -> &Arc<dyn CaBackend> {
        &self.ca
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The template of this name, if configured.
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates.get(name)
    }

    /// Steps 2 to 10 for one pkiMessage that arrived on `route`'s path.
    pub fn pki_operation(&self, route: &Template, message: &[u8], now: SystemTime) -> PkiReply {
        let opened = match self.open(route, message, now) {
            Ok(opened) => opened,
            Err(reply) => return *reply,
        };
        let message_type = opened.message_type();
        let reply_to = opened.reply_to().clone();
        let cipher = opened.cipher();
        match message_type {
            MessageType::PkcsReq | MessageType::RenewalReq | MessageType::CertPoll => {
                let answer = if message_type == MessageType::CertPoll {
                    approve::poll(self, route, &reply_to.transaction_id, now)
                } else {
                    approve::enroll(self, route, &opened, now)
                };
                match answer {
                    Ok(Answer::Issued(issued)) => {
                        self.succeed(&reply_to, message_type, cipher, issued, now)
                    }
                    Ok(Answer::Pending { template }) => {
                        let summary = self.summary(&reply_to, message_type, template, "pending");
                        self.answer(&reply_to, cipher, template, &Outcome::Pending, summary, now)
                    }
                    Err((template, refusal)) => {
                        let template = template.unwrap_or(route);
                        self.refuse(
                            &reply_to,
                            Some(message_type),
                            cipher,
                            template,
                            refusal,
                            now,
                        )
                    }
                }
            }
            // GetCert and GetCRL read the store; they never reach the CA's issue().
            MessageType::GetCert => match lookup::get_cert(self, &opened) {
                Ok(record) => {
                    let summary = self.summary(&reply_to, message_type, route, "success");
                    let summary = Summary {
                        serial: Some(scepd_ca::serial_hex(&record.serial)),
                        ..summary
                    };
                    let certs: [&[u8]; 1] = [&record.der];
                    let outcome = Outcome::Success { certs: &certs };
                    self.answer(&reply_to, cipher, route, &outcome, summary, now)
                }
                Err(refusal) => {
                    self.refuse(&reply_to, Some(message_type), cipher, route, refusal, now)
                }
            },
            MessageType::GetCrl => match lookup::get_crl(self, &opened, now) {
                Ok(crl) => {
                    let summary = self.summary(&reply_to, message_type, route, "success");
                    let outcome = Outcome::Crl { crl: &crl };
                    self.answer(&reply_to, cipher, route, &outcome, summary, now)
                }
                Err(refusal) => {
                    self.refuse(&reply_to, Some(message_type), cipher, route, refusal, now)
                }
            },
            // Allow-list dispatch (CVE-2026-30836): anything else is refused before any policy.
            other => {
                let refusal = Refusal::bad_request(
                    "message type not supported",
                    format!("{other} not supported"),
                );
                self.refuse(&reply_to, Some(other), cipher, route, refusal, now)
            }
        }
    }

    /// Steps 2 to 4: decode, verify the signature, open the envelope with our keys.
    fn open(
        &self,
        route: &Template,
        message: &[u8],
        now: SystemTime,
    ) -> Result<Opened, Box<PkiReply>> {
        let received = decode::decode(message, &self.limits).map_err(|failure| match failure {
            Err(unreadable) => Box::new(PkiReply::Unreadable(unreadable.to_string())),
            Ok(rejected) => self.reject(&rejected, None, route, now),
        })?;
        let message_type = Some(received.message_type());
        let verified = received
            .verify()
            .map_err(|rejected| self.reject(&rejected, message_type, route, now))?;
        let ra = self.ra.load();
        let recipients: Vec<_> = ra
            .decrypters
            .iter()
            .map(|pair| RecipientKey {
                cert_der: &pair.cert_der,
                key: &pair.key,
            })
            .collect();
        let legacy = self.legacy_everywhere || route.legacy_algorithms;
        verified
            .open(&recipients, legacy)
            .map_err(|rejected| self.reject(&rejected, message_type, route, now))
    }

    /// A FAILURE for a codec rejection. It carries no envelope, so the cipher is moot.
    fn reject(
        &self,
        rejected: &Rejected,
        message_type: Option<MessageType>,
        route: &Template,
        now: SystemTime,
    ) -> Box<PkiReply> {
        let refusal = Refusal::from_codec(rejected);
        let cipher = ContentCipher::Aes128Cbc;
        Box::new(self.refuse(
            &rejected.reply_to,
            message_type,
            cipher,
            route,
            refusal,
            now,
        ))
    }

    fn succeed(
        &self,
        reply_to: &ReplyTo,
        message_type: MessageType,
        cipher: ContentCipher,
        issued: approve::Delivery<'_>,
        now: SystemTime,
    ) -> PkiReply {
        let mut certs: Vec<&[u8]> = vec![&issued.cert_der];
        if issued.template.include_chain {
            certs.extend(self.ca.chain().iter().map(Vec::as_slice));
        }
        let summary = Summary {
            message_type: Some(message_type),
            transaction_id: reply_to.transaction_id.clone(),
            template: issued.template.name.clone(),
            outcome: "success",
            serial: Some(scepd_ca::serial_hex(&issued.serial)),
            replayed: issued.replayed,
            ..Summary::default()
        };
        let outcome = Outcome::Success { certs: &certs };
        match reply::encode_cert_rep_at(
            reply_to,
            &outcome,
            cipher,
            &signer_of(&self.ra.load()),
            now,
        ) {
            Ok(der) => PkiReply::CertRep { der, summary },
            // The requester's signer key cannot receive a key-transport envelope (not RSA).
            Err(e) => self.refuse(
                reply_to,
                Some(message_type),
                cipher,
                issued.template,
                Refusal::bad_alg(
                    "cannot encrypt the reply to the signer's key",
                    e.to_string(),
                ),
                now,
            ),
        }
    }

    fn summary(
        &self,
        reply_to: &ReplyTo,
        message_type: MessageType,
        template: &Template,
        outcome: &'static str,
    ) -> Summary {
        Summary {
            message_type: Some(message_type),
            transaction_id: reply_to.transaction_id.clone(),
            template: template.name.clone(),
            outcome,
            ..Summary::default()
        }
    }

    /// Signs a SUCCESS or PENDING; a SUCCESS that cannot be encrypted to the requester's
    /// key becomes FAILURE badAlg.
    fn answer(
        &self,
        reply_to: &ReplyTo,
        cipher: ContentCipher,
        template: &Template,
        outcome: &Outcome<'_>,
        summary: Summary,
        now: SystemTime,
    ) -> PkiReply {
        let message_type = summary.message_type;
        match reply::encode_cert_rep_at(reply_to, outcome, cipher, &signer_of(&self.ra.load()), now)
        {
            Ok(der) => PkiReply::CertRep { der, summary },
            Err(e) => self.refuse(
                reply_to,
                message_type,
                cipher,
                template,
                Refusal::bad_alg(
                    "cannot encrypt the reply to the signer's key",
                    e.to_string(),
                ),
                now,
            ),
        }
    }

    fn refuse(
        &self,
        reply_to: &ReplyTo,
        message_type: Option<MessageType>,
        cipher: ContentCipher,
        template: &Template,
        refusal: Refusal,
        now: SystemTime,
    ) -> PkiReply {
        let outcome = Outcome::Failure {
            fail_info: refusal.fail_info,
            text: refusal.text,
        };
        let summary = Summary {
            message_type,
            transaction_id: reply_to.transaction_id.clone(),
            template: template.name.clone(),
            outcome: "failure",
            fail_info: Some(refusal.fail_info),
            detail: refusal.detail,
            ..Summary::default()
        };
        match reply::encode_cert_rep_at(
            reply_to,
            &outcome,
            cipher,
            &signer_of(&self.ra.load()),
            now,
        ) {
            Ok(der) => PkiReply::CertRep { der, summary },
            Err(e) => PkiReply::Unavailable(format!("cannot sign a FAILURE reply: {e}")),
        }
    }
}

/// The CertRep signer of an RA identity.
fn signer_of(ra: &RaIdentity) -> ReplySigner<'_> {
    ReplySigner {
        cert_der: &ra.signer.cert_der,
        key: &ra.signer.key,
    }
}
