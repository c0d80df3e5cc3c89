//! Server side, steps 2-4 of the enrollment cycle (design.md §3): decode a pkiMessage
//! (RFC 8894 §3.2), verify its SignerInfo, open its pkcsPKIEnvelope.
//!
//! Each step consumes the previous phase and returns the next one, so a step cannot be
//! skipped: [`decode`] gives [`Received`], [`Received::verify`] gives [`Verified`],
//! [`Verified::open`] gives [`Opened`]. The phase types have private fields and no public
//! constructors.
//!
//! Errors before a [`ReplyTo`] exists are [`DecodeError`]s (HTTP 400); after, they are
//! [`Rejected`]s, answered with a signed CertRep FAILURE.

use std::fmt;
use std::time::SystemTime;

use x509_cert::Certificate;

use super::attributes::AttributeError;
use super::ber::{self, BerError};
use super::crypto::{ContentCipher, DigestAlg};
use super::envelope::{self, OpenError, RecipientKey};
use super::oids;
use super::signed::{ParseError, SignedMessage, VerifyError};
use super::{FailInfo, MessageType};

/// What every reply needs (design.md §3 step 2). Once we have it, every answer is a signed
/// CertRep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// transactionID, copied into the reply (RFC 8894 §3.2.1.1).
    pub transaction_id: String,
    /// senderNonce, copied into the reply's recipientNonce (RFC 8894 §3.2.1.5).
    pub sender_nonce: Vec<u8>,
    /// The requester's signer certificate (DER): a SUCCESS is encrypted to it (§2.3).
    pub signer_cert_der: Vec<u8>,
    /// The request's digest, used again for the reply. A request with an unsupported digest
    /// gets SHA-256 here and is then rejected with badAlg by [`Received::verify`].
    pub digest: DigestAlg,
}

/// A failure before we could build a [`ReplyTo`]: the HTTP layer answers 400.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`Limits::max_message_bytes`].
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// Not BER at all.
    #[error(transparent)]
    Ber(#[from] BerError),
    /// BER, but not the CMS structure a pkiMessage is.
    #[error("malformed pkiMessage: {0}")]
    Malformed(&'static str),
    /// A CMS structure SCEP does not use (several signers, no signed attributes...).
    #[error("unsupported pkiMessage: {0}")]
    Unsupported(&'static str),
    /// transactionID or senderNonce is missing or invalid.
    #[error(transparent)]
    Attribute(#[from] AttributeError),
    /// The SignerInfo's sid names no certificate in `SignedData.certificates` (RFC 8894
    /// App. A: the signer certificate MUST be there).
    #[error("signer certificate not found in SignedData.certificates")]
    SignerCertificateMissing,
}

impl From<ParseError> for DecodeError {
    fn from(error: ParseError) -> Self {
        match error {
            ParseError::Malformed(what) => Self::Malformed(what),
            ParseError::Unsupported(what) => Self::Unsupported(what),
        }
    }
}

/// A failure after we had a [`ReplyTo`]: answered with a signed CertRep FAILURE.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Where the FAILURE goes.
    pub reply_to: ReplyTo,
    /// What the FAILURE says.
    pub fail_info: FailInfo,
    /// What went wrong, for the log only (never sent: it could help an attacker).
    pub detail: &'static str,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}), transactionID {}",
            self.fail_info, self.detail, self.reply_to.transaction_id
        )
    }
}

impl std::error::Error for Rejected {}

/// Bounds on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest pkiMessage accepted, in bytes (default 2 MiB, as micromdm).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 2 * 1024 * 1024,
        }
    }
}

/// Phase 1: a pkiMessage whose structure we could read and which we can answer.
#[derive(Debug)]
pub struct Received {
    reply_to: ReplyTo,
    message_type: MessageType,
    message: SignedMessage,
    signer: Certificate,
}

/// Phase 2: a pkiMessage whose SignerInfo verified with its signer certificate.
#[derive(Debug)]
pub struct Verified {
    reply_to: ReplyTo,
    message_type: MessageType,
    signing_time: Option<SystemTime>,
    econtent: Option<Vec<u8>>,
}

/// Phase 3: the decrypted messageData (a PKCS#10 request for PKCSReq/RenewalReq,
/// IssuerAndSubject for CertPoll, IssuerAndSerialNumber for GetCert/GetCRL).
#[derive(Debug)]
pub struct Opened {
    reply_to: ReplyTo,
    message_type: MessageType,
    signing_time: Option<SystemTime>,
    content: Vec<u8>,
    cipher: ContentCipher,
}

/// Step 2: reads the outer `ContentInfo { id-signedData, SignedData }` (BER accepted),
/// exactly one SignerInfo with signed attributes, its signer certificate (found in
/// `certificates` by issuerAndSerialNumber or subjectKeyIdentifier), transactionID and
/// senderNonce; then the messageType, against the allow-list of request types.
///
/// `Err(Err(_))` means no reply can be built (HTTP 400); `Err(Ok(_))` is answered with a
/// FAILURE (an unknown messageType is badRequest, RFC 8894 §3.2.1.2).
pub fn decode(message: &[u8], limits: &Limits) -> Result<Received, Result<Rejected, DecodeError>> {
    if message.len() > limits.max_message_bytes {
        return Err(Err(DecodeError::TooLarge {
            limit: limits.max_message_bytes,
        }));
    }
    let (reply_to, message, signer) = read_reply_to(message).map_err(Err)?;
    let message_type = request_type(&message).map_err(|detail| {
        Ok(Rejected {
            reply_to: reply_to.clone(),
            fail_info: FailInfo::BadRequest,
            detail,
        })
    })?;
    Ok(Received {
        reply_to,
        message_type,
        message,
        signer,
    })
}

fn read_reply_to(message: &[u8]) -> Result<(ReplyTo, SignedMessage, Certificate), DecodeError> {
    let der = ber::normalize_to_der(message)?;
    let message = SignedMessage::parse(&der)?;
    let attributes = message.attributes();
    let transaction_id = attributes.transaction_id()?;
    let sender_nonce = attributes.sender_nonce()?;
    let (signer_cert_der, signer) = message
        .signer_certificate()
        .ok_or(DecodeError::SignerCertificateMissing)?;
    let digest = DigestAlg::from_oid(&message.digest_oid()).unwrap_or(DigestAlg::Sha256);
    let reply_to = ReplyTo {
        transaction_id,
        sender_nonce,
        signer_cert_der,
        digest,
    };
    Ok((reply_to, message, signer))
}

/// The messageType, if it is one a client may send (RFC 8894 Table 3; CertRep is ours).
fn request_type(message: &SignedMessage) -> Result<MessageType, &'static str> {
    let code = message
        .attributes()
        .message_type_code()
        .map_err(|_| "messageType missing or invalid")?;
    match MessageType::from_code(code) {
        None => Err("unknown messageType"),
        Some(MessageType::CertRep) => Err("messageType CertRep is not a request"),
        Some(request) => Ok(request),
    }
}

impl Received {
    /// Where a reply goes.
    pub fn reply_to(&self) -> &ReplyTo {
        &self.reply_to
    }

    /// The request type.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// Step 3: checks the SignerInfo (RFC 5652 §5.4/§5.6) with the signer certificate's key:
    /// a supported digest (SHA-1/SHA-2; MD5 and others are badAlg) and signature algorithm
    /// (rsaEncryption, sha*WithRSAEncryption, ecdsa-with-SHA*), eContentType and the
    /// contentType attribute id-data, messageDigest over the eContent octets, and the
    /// signature over the signed attributes as received. Anything else is badMessageCheck.
    pub fn verify(self) -> Result<Verified, Rejected> {
        let Received {
            reply_to,
            message_type,
            message,
            signer,
        } = self;
        let reject = |fail_info, detail| Rejected {
            reply_to: reply_to.clone(),
            fail_info,
            detail,
        };
        if message.econtent_type() != oids::ID_DATA {
            return Err(reject(
                FailInfo::BadMessageCheck,
                "eContentType is not id-data",
            ));
        }
        match message.verify(&signer) {
            Ok(_) => {}
            Err(VerifyError::BadAlg(detail)) => return Err(reject(FailInfo::BadAlg, detail)),
            Err(VerifyError::BadMessageCheck(detail)) => {
                return Err(reject(FailInfo::BadMessageCheck, detail))
            }
        }
        let signing_time = message.attributes().signing_time().ok().flatten();
        let econtent = message.econtent().map(<[u8]>::to_vec);
        Ok(Verified {
            reply_to,
            message_type,
            signing_time,
            econtent,
        })
    }
}

impl Verified {
    /// Where a reply goes.
    pub fn reply_to(&self) -> &ReplyTo {
        &self.reply_to
    }

    /// The request type.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The signed signingTime, if the client sent one (for an optional badTime check).
    pub fn signing_time(&self) -> Option<SystemTime> {
        self.signing_time
    }

    /// Step 4: opens the pkcsPKIEnvelope (the eContent) with whichever of `recipients` it
    /// names. Unknown or disallowed algorithms (single DES unless `legacy_des_allowed`) are
    /// badAlg; every other envelope failure is the same badMessageCheck `"envelope"`.
    ///
    /// A PKCSReq or RenewalReq without an envelope is badMessageCheck too. For the other
    /// types (CertPoll, GetCert, GetCRL), some clients send no envelope; that gives an
    /// [`Opened`] with empty content and AES-128 (the RFC's mandatory cipher) for the reply.
    pub fn open(
        self,
        recipients: &[RecipientKey<'_>],
        legacy_des_allowed: bool,
    ) -> Result<Opened, Rejected> {
        let Verified {
            reply_to,
            message_type,
            signing_time,
            econtent,
        } = self;
        let opened = match econtent {
            Some(econtent) => envelope::open(&econtent, recipients, legacy_des_allowed),
            None if carries_csr(message_type) => Err(OpenError::Envelope),
            None => Ok(envelope::Opened {
                content: Vec::new(),
                cipher: ContentCipher::Aes128Cbc,
            }),
        };
        match opened {
            Ok(envelope::Opened { content, cipher }) => Ok(Opened {
                reply_to,
                message_type,
                signing_time,
                content,
                cipher,
            }),
            Err(OpenError::BadAlg(detail)) => Err(Rejected {
                reply_to,
                fail_info: FailInfo::BadAlg,
                detail,
            }),
            Err(OpenError::Envelope) => Err(Rejected {
                reply_to,
                fail_info: FailInfo::BadMessageCheck,
                detail: "envelope",
            }),
        }
    }
}

fn carries_csr(message_type: MessageType) -> bool {
    matches!(message_type, MessageType::PkcsReq | MessageType::RenewalReq)
}

impl Opened {
    /// Where a reply goes.
    pub fn reply_to(&self) -> &ReplyTo {
        &self.reply_to
    }

    /// The request type.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The signed signingTime, if the client sent one.
    pub fn signing_time(&self) -> Option<SystemTime> {
        self.signing_time
    }

    /// The decrypted messageData, normalised to DER (empty only for an unenveloped
    /// CertPoll/GetCert/GetCRL).
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// The request's content cipher; reply with `cipher().for_reply()`.
    pub fn cipher(&self) -> ContentCipher {
        self.cipher
    }

    /// The requester's signer certificate (DER).
    pub fn signer_cert_der(&self) -> &[u8] {
        &self.reply_to.signer_cert_der
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::scep::client::{
        self, build_request_with, read_cert_rep, ClientIdentity, PreparedRequest, RequestOptions,
        Tamper,
    };
    use crate::scep::crypto::KeyTransport;
    use crate::scep::reply::{encode_cert_rep, Outcome, ReplySigner};
    use crate::scep::testing::{self, pki, Identity, Role};
    use crate::scep::PkiStatus;

    fn options(
        cipher: ContentCipher,
        digest: DigestAlg,
        key_transport: KeyTransport,
    ) -> RequestOptions {
        RequestOptions {
            message_type: MessageType::PkcsReq,
            transaction_id: "7XXEY-ERLPU-2JDR9".into(),
            digest,
            cipher,
            key_transport,
            recipient_by_ski: false,
        }
    }

    fn default_options() -> RequestOptions {
        options(
            ContentCipher::Aes128Cbc,
            DigestAlg::Sha256,
            KeyTransport::RsaPkcs1v15,
        )
    }

    fn ra_recipient(ra: &Identity) -> (Vec<u8>, &openssl::pkey::PKey<openssl::pkey::Private>) {
        (ra.der(), &ra.key)
    }

    /// decode -> verify -> open with the test RA key.
    fn server_open(request: &[u8], legacy_des_allowed: bool) -> Result<Opened, Rejected> {
        let (ra_der, ra_key) = ra_recipient(&pki().ra);
        let received =
            decode(request, &Limits::default()).map_err(|e| e.expect("decodes to a ReplyTo"))?;
        let verified = received.verify()?;
        verified.open(
            &[RecipientKey {
                cert_der: &ra_der,
                key: ra_key,
            }],
            legacy_des_allowed,
        )
    }

    fn request_with(
        options: &RequestOptions,
        recipients: &[&[u8]],
        tamper: Tamper,
    ) -> PreparedRequest {
        build_request_with(&pki().csr, recipients, &pki().client, options, tamper).unwrap()
    }

    fn request(options: &RequestOptions) -> PreparedRequest {
        request_with(options, &[&pki().ra.der()], Tamper::None)
    }

    fn reject_of(result: Result<Opened, Rejected>) -> Rejected {
        result.expect_err("the server must reject this")
    }

    /// The full cycle: client request, server decode/verify/open, SUCCESS reply, client read.
    fn full_round_trip(options: &RequestOptions) {
        let request = request(options);
        let opened = server_open(&request.der, false).unwrap();
        assert_eq!(opened.content(), pki().csr.as_slice());
        assert_eq!(opened.cipher(), options.cipher);
        assert_eq!(opened.message_type(), MessageType::PkcsReq);
        assert_eq!(opened.reply_to().transaction_id, options.transaction_id);
        assert_eq!(opened.reply_to().digest, options.digest);
        assert_eq!(opened.signer_cert_der(), pki().client.cert_der.as_slice());
        let issued = pki().ca.der();
        let certs: [&[u8]; 1] = [&issued];
        let reply = success_reply(&opened, &certs);
        let view = read_cert_rep(&reply, &request, &pki().ra.der(), &pki().client).unwrap();
        assert_eq!(view.status, PkiStatus::Success);
        assert_eq!(view.certs, vec![issued.clone()]);
    }

    fn success_reply(opened: &Opened, certs: &[&[u8]]) -> Vec<u8> {
        let ra = &pki().ra;
        let ra_der = ra.der();
        let signer = ReplySigner {
            cert_der: &ra_der,
            key: &ra.key,
        };
        encode_cert_rep(
            opened.reply_to(),
            &Outcome::Success { certs },
            opened.cipher(),
            &signer,
        )
        .unwrap()
    }

    #[test]
    fn every_allowed_cipher_round_trips() {
        for cipher in [
            ContentCipher::Aes128Cbc,
            ContentCipher::Aes192Cbc,
            ContentCipher::Aes256Cbc,
            ContentCipher::DesEde3Cbc,
        ] {
            full_round_trip(&options(
                cipher,
                DigestAlg::Sha256,
                KeyTransport::RsaPkcs1v15,
            ));
        }
    }

    #[test]
    fn every_digest_round_trips() {
        for digest in DigestAlg::ALL {
            full_round_trip(&options(
                ContentCipher::Aes128Cbc,
                digest,
                KeyTransport::RsaPkcs1v15,
            ));
        }
    }

    #[test]
    fn oaep_key_transport_round_trips() {
        for hash in [DigestAlg::Sha1, DigestAlg::Sha256, DigestAlg::Sha512] {
            full_round_trip(&options(
                ContentCipher::Aes256Cbc,
                DigestAlg::Sha256,
                KeyTransport::RsaOaep(hash),
            ));
        }
    }

    #[test]
    fn recipient_named_by_subject_key_identifier() {
        let mut options = default_options();
        options.recipient_by_ski = true;
        full_round_trip(&options);
    }

    #[test]
    fn recipient_without_ski_extension_is_found_by_computed_key_id() {
        let key = testing::rsa_key();
        let ra = Identity {
            cert: testing::certificate(&key, "RA without SKI", Role::Leaf, None, 9),
            key,
        };
        let mut options = default_options();
        options.recipient_by_ski = true;
        let request = request_with(&options, &[&ra.der()], Tamper::None);
        let received = decode(&request.der, &Limits::default()).unwrap();
        let ra_der = ra.der();
        let opened = received
            .verify()
            .unwrap()
            .open(
                &[RecipientKey {
                    cert_der: &ra_der,
                    key: &ra.key,
                }],
                false,
            )
            .unwrap();
        assert_eq!(opened.content(), pki().csr.as_slice());
    }

    #[test]
    fn ours_is_the_last_of_three_recipients() {
        let other = testing::rsa_key();
        let other = Identity {
            cert: testing::certificate(&other, "other", Role::Ra, None, 7),
            key: other,
        };
        let request = request_with(
            &default_options(),
            &[&pki().stranger.der(), &other.der(), &pki().ra.der()],
            Tamper::None,
        );
        assert_eq!(
            server_open(&request.der, false).unwrap().content(),
            pki().csr.as_slice()
        );
    }

    #[test]
    fn several_of_our_keys_are_tried() {
        let request = request(&default_options());
        let stranger_der = pki().stranger.der();
        let ra_der = pki().ra.der();
        let keys = [
            RecipientKey {
                cert_der: &stranger_der,
                key: &pki().stranger.key,
            },
            RecipientKey {
                cert_der: &ra_der,
                key: &pki().ra.key,
            },
        ];
        let opened = decode(&request.der, &Limits::default())
            .unwrap()
            .verify()
            .unwrap()
            .open(&keys, false)
            .unwrap();
        assert_eq!(opened.content(), pki().csr.as_slice());
    }

    #[test]
    fn single_des_is_bad_alg_unless_allowed_and_its_reply_is_aes_256() {
        let options = options(
            ContentCipher::DesCbc,
            DigestAlg::Sha256,
            KeyTransport::RsaPkcs1v15,
        );
        let request = request(&options);
        let rejected = reject_of(server_open(&request.der, false));
        assert_eq!(rejected.fail_info, FailInfo::BadAlg);
        assert_eq!(rejected.reply_to.transaction_id, options.transaction_id);

        let opened = server_open(&request.der, true).unwrap();
        assert_eq!(opened.cipher(), ContentCipher::DesCbc);
        let issued = pki().ca.der();
        let reply = success_reply(&opened, &[&issued]);
        let reply_message = crate::scep::signed::SignedMessage::parse(&reply).unwrap();
        let client = &pki().client;
        let ours = RecipientKey {
            cert_der: &client.cert_der,
            key: &client.key,
        };
        let inner = envelope::open(reply_message.econtent().unwrap(), &[ours], false).unwrap();
        assert_eq!(inner.cipher, ContentCipher::Aes256Cbc);
    }

    #[test]
    fn tampered_signature_is_bad_message_check() {
        let request = request_with(
            &default_options(),
            &[&pki().ra.der()],
            Tamper::FlipSignatureByte,
        );
        let rejected = reject_of(server_open(&request.der, false));
        assert_eq!(
            (rejected.fail_info, rejected.detail),
            (FailInfo::BadMessageCheck, "signature")
        );
    }

    #[test]
    fn md5_digest_is_bad_alg() {
        let request = request_with(&default_options(), &[&pki().ra.der()], Tamper::Md5DigestOid);
        let rejected = reject_of(server_open(&request.der, false));
        assert_eq!(rejected.fail_info, FailInfo::BadAlg);
        // We could not use the request's digest, so the reply falls back to SHA-256.
        assert_eq!(rejected.reply_to.digest, DigestAlg::Sha256);
    }

    #[test]
    fn every_envelope_failure_is_the_same_bad_message_check() {
        let wrong_recipient =
            request_with(&default_options(), &[&pki().stranger.der()], Tamper::None);
        let flipped = request_with(
            &default_options(),
            &[&pki().ra.der()],
            Tamper::FlipCiphertextByte,
        );
        let no_envelope = request_with(&default_options(), &[&pki().ra.der()], Tamper::NoEnvelope);
        for request in [wrong_recipient, flipped, no_envelope] {
            let rejected = reject_of(server_open(&request.der, false));
            assert_eq!(
                (rejected.fail_info, rejected.detail),
                (FailInfo::BadMessageCheck, "envelope")
            );
        }
    }

    #[test]
    fn truncated_message_is_a_decode_error() {
        let request = request(&default_options());
        for len in [0, 1, 10, request.der.len() / 2, request.der.len() - 1] {
            let outcome = decode(&request.der[..len], &Limits::default());
            assert!(matches!(outcome, Err(Err(_))), "truncated to {len}");
        }
    }

    #[test]
    fn oversized_message_is_a_decode_error() {
        let request = request(&default_options());
        let limits = Limits {
            max_message_bytes: request.der.len() - 1,
        };
        assert!(matches!(
            decode(&request.der, &limits),
            Err(Err(DecodeError::TooLarge { .. }))
        ));
    }

    #[test]
    fn unknown_or_reply_message_type_is_bad_request() {
        for code in [99, 0, 3, 18] {
            let request = request_with(
                &default_options(),
                &[&pki().ra.der()],
                Tamper::MessageTypeCode(code),
            );
            let Err(Ok(rejected)) = decode(&request.der, &Limits::default()) else {
                panic!("type {code} must be rejected")
            };
            assert_eq!(rejected.fail_info, FailInfo::BadRequest);
            assert_eq!(rejected.reply_to.sender_nonce, request.sender_nonce);
        }
    }

    #[test]
    fn ec_signer_is_verified_but_cannot_receive_a_success() {
        let key = testing::ec_key();
        let cert = testing::certificate(&key, "ec device", Role::Ra, None, 11)
            .to_der()
            .unwrap();
        let signer = ClientIdentity {
            cert_der: cert,
            key,
        };
        let request = build_request_with(
            &pki().csr,
            &[&pki().ra.der()],
            &signer,
            &default_options(),
            Tamper::None,
        )
        .unwrap();
        let opened = server_open(&request.der, false).unwrap();
        let ra_der = pki().ra.der();
        let reply_signer = ReplySigner {
            cert_der: &ra_der,
            key: &pki().ra.key,
        };
        let issued = pki().ca.der();
        let certs: [&[u8]; 1] = [&issued];
        let error = encode_cert_rep(
            opened.reply_to(),
            &Outcome::Success { certs: &certs },
            opened.cipher(),
            &reply_signer,
        );
        assert!(matches!(
            error,
            Err(crate::scep::reply::EncodeError::RequesterKeyNotRsa)
        ));
    }

    #[test]
    fn throwaway_rsa_signer_for_an_ec_csr_key() {
        let identity = ClientIdentity::self_signed(testing::ec_key(), "ec csr").unwrap();
        assert_eq!(identity.key.id(), openssl::pkey::Id::RSA);
        let request = build_request_with(
            &pki().csr,
            &[&pki().ra.der()],
            &identity,
            &default_options(),
            Tamper::None,
        )
        .unwrap();
        assert!(server_open(&request.der, false).is_ok());
        let _ = client::parse_ca_certs(&identity.cert_der).unwrap();
    }
}
