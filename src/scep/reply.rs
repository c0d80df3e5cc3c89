//! Server side, step 10 (design.md §3): the CertRep pkiMessage (RFC 8894 §3.3.2) and the
//! degenerate certs-only SignedData (RFC 8894 §3.4) used by GetCACert and inside SUCCESS.

use std::time::SystemTime;

use der::Decode;
use x509_cert::Certificate;

use super::attributes::AttributeWriter;
use super::crypto::{self, ContentCipher, KeyTransport};
use super::decode::ReplyTo;
use super::envelope::{self, SealError, SealRecipient};
use super::oids;
use super::signed::{self, SignError, SignatureStyle, Signing};
use super::{FailInfo, MessageType, PkiStatus};

/// Length of the fresh senderNonce of a CertRep (RFC 8894 §3.2.1.5: 16 bytes).
const SENDER_NONCE_LEN: usize = 16;

/// The RA (or CA) signing identity that signs CertReps.
#[derive(Clone, Copy)]
pub struct ReplySigner<'a> {
    /// Its certificate (DER), included in `SignedData.certificates`.
    pub cert_der: &'a [u8],
    /// Its private key (RSA or EC), in memory or in a PKCS#11 token.
    pub key: &'a dyn scepd_ca::PrivateKeyOps,
}

/// What a CertRep says (RFC 8894 §3.3.2, pkiStatus).
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// pkiStatus 0: `certs` (DER) go to the client in this order, the issued one first.
    Success {
        /// DER certificates, issued certificate first; order is preserved on the wire.
        certs: &'a [&'a [u8]],
    },
    /// pkiStatus 0 for GetCRL: the CRL (DER) in `crls` of the degenerate SignedData
    /// (RFC 8894 §3.3.2.1).
    Crl {
        /// One DER CertificateList.
        crl: &'a [u8],
    },
    /// pkiStatus 3: the client polls with CertPoll.
    Pending,
    /// pkiStatus 2.
    Failure {
        /// failInfo.
        fail_info: FailInfo,
        /// failInfoText (short and generic; empty for none).
        text: &'a str,
    },
}

/// Why a reply could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A SUCCESS must be encrypted to the requester's signer key, and only RSA keys can
    /// receive KeyTransRecipientInfo: answer FAILURE badAlg instead.
    #[error("requester signer key is not RSA; cannot encrypt the reply")]
    RequesterKeyNotRsa,
    /// A SUCCESS with no certificate.
    #[error("SUCCESS without certificates")]
    NoCertificates,
    /// A certificate or value could not be encoded.
    #[error("encoding failed: {0}")]
    Der(#[from] der::Error),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Encrypting the SUCCESS content failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Builds a CertRep (RFC 8894 §3.3.2) signed at the current time; see
/// [`encode_cert_rep_at`].
pub fn encode_cert_rep(
    reply_to: &ReplyTo,
    outcome: &Outcome<'_>,
    cipher: ContentCipher,
    signer: &ReplySigner<'_>,
) -> Result<Vec<u8>, EncodeError> {
    encode_cert_rep_at(reply_to, outcome, cipher, signer, SystemTime::now())
}

/// Builds a CertRep: a SignedData with eContentType id-data signed by `signer` with
/// `reply_to.digest` (signatureAlgorithm rsaEncryption for RSA keys, the conservative choice
/// for legacy clients), the signer certificate in `certificates`, and the signed attributes
/// contentType, messageDigest, signingTime, messageType (3), pkiStatus, transactionID
/// (copied), senderNonce (fresh), recipientNonce (the request's senderNonce), and for a
/// FAILURE failInfo and failInfoText.
///
/// SUCCESS: the eContent is an EnvelopedData to the requester's signer certificate
/// (issuerAndSerialNumber, RSA PKCS#1 v1.5) with `cipher.for_reply()`, wrapping a certs-only
/// SignedData of `certs`. PENDING and FAILURE: no eContent at all (RFC 8894 §3.2: no
/// pkcsPKIEnvelope; a dummy one makes clients try to decrypt it).
pub fn encode_cert_rep_at(
    reply_to: &ReplyTo,
    outcome: &Outcome<'_>,
    cipher: ContentCipher,
    signer: &ReplySigner<'_>,
    signing_time: SystemTime,
) -> Result<Vec<u8>, EncodeError> {
    let econtent = match outcome {
        Outcome::Success { certs } => {
            if certs.is_empty() {
                return Err(EncodeError::NoCertificates);
            }
            Some(success_envelope(reply_to, &certs_only(certs)?, cipher)?)
        }
        Outcome::Crl { crl } => Some(success_envelope(
            reply_to,
            &signed::crls_only(crl)?,
            cipher,
        )?),
        Outcome::Pending | Outcome::Failure { .. } => None,
    };
    let attributes = cert_rep_attributes(reply_to, outcome)?;
    let signing = Signing {
        cert_der: signer.cert_der,
        key: signer.key,
        digest: reply_to.digest,
        style: SignatureStyle::RsaEncryption,
        signing_time,
    };
    Ok(signed::sign_message(
        econtent.as_deref(),
        attributes,
        &signing,
    )?)
}

/// A degenerate certs-only SignedData ContentInfo (RFC 8894 §3.4), certificates in exactly
/// the given order. For GetCACert (`application/x-x509-ca-ra-cert`) and inside SUCCESS.
pub fn certs_only(certs: &[&[u8]]) -> Result<Vec<u8>, EncodeError> {
    Ok(signed::certs_only(certs)?)
}

/// The pkcsPKIEnvelope of a SUCCESS: `degenerate` (a certs-only or CRLs-only SignedData)
/// encrypted to the requester's signer certificate.
fn success_envelope(
    reply_to: &ReplyTo,
    degenerate: &[u8],
    cipher: ContentCipher,
) -> Result<Vec<u8>, EncodeError> {
    ensure_rsa_recipient(&reply_to.signer_cert_der)?;
    let recipient = SealRecipient {
        cert_der: &reply_to.signer_cert_der,
        by_key_identifier: false,
    };
    Ok(envelope::seal(
        degenerate,
        &[recipient],
        cipher.for_reply(),
        KeyTransport::RsaPkcs1v15,
    )?)
}

fn ensure_rsa_recipient(cert_der: &[u8]) -> Result<(), EncodeError> {
    // The algorithm OID says it; building the key just to ask would cost a key parse.
    let cert = Certificate::from_der(cert_der)?;
    if cert.tbs_certificate.subject_public_key_info.algorithm.oid == oids::RSA_ENCRYPTION {
        Ok(())
    } else {
        Err(EncodeError::RequesterKeyNotRsa)
    }
}

fn cert_rep_attributes(
    reply_to: &ReplyTo,
    outcome: &Outcome<'_>,
) -> Result<AttributeWriter, der::Error> {
    let mut attributes = AttributeWriter::new();
    attributes
        .decimal(oids::MESSAGE_TYPE, MessageType::CertRep.code())?
        .decimal(oids::PKI_STATUS, status_of(outcome).code())?
        .transaction_id(&reply_to.transaction_id)?
        .octets(oids::SENDER_NONCE, &crypto::random_bytes(SENDER_NONCE_LEN))?
        .octets(oids::RECIPIENT_NONCE, &reply_to.sender_nonce)?;
    if let Outcome::Failure { fail_info, text } = outcome {
        attributes.decimal(oids::FAIL_INFO, fail_info.code())?;
        if !text.is_empty() {
            attributes.fail_info_text(text)?;
        }
    }
    Ok(attributes)
}

fn status_of(outcome: &Outcome<'_>) -> PkiStatus {
    match outcome {
        Outcome::Success { .. } | Outcome::Crl { .. } => PkiStatus::Success,
        Outcome::Pending => PkiStatus::Pending,
        Outcome::Failure { .. } => PkiStatus::Failure,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::scep::client::{build_request, read_cert_rep, RequestOptions};
    use crate::scep::decode::{decode, Limits, Opened};
    use crate::scep::envelope::RecipientKey;
    use crate::scep::signed::{certificates_in_order, SignedMessage};
    use crate::scep::testing::{self, pki, Identity, Role};
    use crate::scep::DigestAlg;

    fn opened_request() -> (Opened, crate::scep::client::PreparedRequest) {
        let options = RequestOptions {
            message_type: MessageType::PkcsReq,
            transaction_id: "E3A1B2C4D5E6F708".into(),
            digest: DigestAlg::Sha256,
            cipher: ContentCipher::Aes128Cbc,
            key_transport: KeyTransport::RsaPkcs1v15,
            recipient_by_ski: false,
        };
        let request = build_request(&pki().csr, &pki().ra.der(), &pki().client, &options).unwrap();
        let ra_der = pki().ra.der();
        let keys = [RecipientKey {
            cert_der: &ra_der,
            key: &pki().ra.key,
        }];
        let opened = decode(&request.der, &Limits::default())
            .unwrap()
            .verify()
            .unwrap()
            .open(&keys, false)
            .unwrap();
        (opened, request)
    }

    fn reply(opened: &Opened, outcome: &Outcome<'_>) -> Vec<u8> {
        let ra_der = pki().ra.der();
        let signer = ReplySigner {
            cert_der: &ra_der,
            key: &pki().ra.key,
        };
        encode_cert_rep(opened.reply_to(), outcome, opened.cipher(), &signer).unwrap()
    }

    #[test]
    fn failure_and_pending_have_no_econtent_and_echo_the_request() {
        let (opened, request) = opened_request();
        let failure = Outcome::Failure {
            fail_info: FailInfo::BadRequest,
            text: "challenge refused",
        };
        for (outcome, status) in [
            (failure, PkiStatus::Failure),
            (Outcome::Pending, PkiStatus::Pending),
        ] {
            let der = reply(&opened, &outcome);
            let message = SignedMessage::parse(&der).unwrap();
            assert!(message.econtent().is_none());
            let view = read_cert_rep(&der, &request, &pki().ra.der(), &pki().client).unwrap();
            assert_eq!(view.status, status);
            assert!(!view.has_content);
            assert_eq!(view.transaction_id, request.transaction_id);
            assert_eq!(view.recipient_nonce, request.sender_nonce);
            if status == PkiStatus::Failure {
                assert_eq!(view.fail_info, Some(FailInfo::BadRequest));
                assert_eq!(view.fail_info_text.as_deref(), Some("challenge refused"));
            }
        }
    }

    #[test]
    fn success_certificates_keep_the_given_order() {
        let (opened, request) = opened_request();
        let key = testing::rsa_key();
        let leaf = testing::certificate(
            &key,
            "device-1 issued with a long name to sort last",
            Role::Leaf,
            Some(&pki().ca),
            77,
        );
        let leaf = leaf.to_der().unwrap();
        let ca = pki().ca.der();
        for order in [
            [leaf.as_slice(), ca.as_slice()],
            [ca.as_slice(), leaf.as_slice()],
        ] {
            let der = reply(&opened, &Outcome::Success { certs: &order });
            let view = read_cert_rep(&der, &request, &pki().ra.der(), &pki().client).unwrap();
            assert_eq!(
                view.certs,
                order.iter().map(|c| c.to_vec()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn certs_only_keeps_order_and_has_no_signers() {
        let ca = pki().ca.der();
        let ra = pki().ra.der();
        let stranger = pki().stranger.der();
        let der = certs_only(&[&ra, &stranger, &ca]).unwrap();
        assert_eq!(
            certificates_in_order(&der).unwrap(),
            vec![ra.clone(), stranger, ca]
        );
        // Not a pkiMessage: no SignerInfo.
        assert!(SignedMessage::parse(&der).is_err());
        assert!(certs_only(&[b"not a certificate"]).is_err());
    }

    #[test]
    fn reply_from_an_unexpected_signer_is_refused() {
        let (opened, request) = opened_request();
        let der = reply(&opened, &Outcome::Pending);
        let error = read_cert_rep(&der, &request, &pki().stranger.der(), &pki().client);
        assert!(matches!(
            error,
            Err(crate::scep::client::ClientError::WrongSigner)
        ));
        let mut other = request.clone();
        other.sender_nonce = vec![0; 16];
        let error = read_cert_rep(&der, &other, &pki().ra.der(), &pki().client);
        assert!(matches!(
            error,
            Err(crate::scep::client::ClientError::Unexpected(
                "recipientNonce"
            ))
        ));
    }

    #[test]
    fn ec_reply_signer_works() {
        let (opened, request) = opened_request();
        let key = testing::ec_key();
        let ra = Identity {
            cert: testing::certificate(&key, "EC RA", Role::RaSign, Some(&pki().ca), 12),
            key,
        };
        let ra_der = ra.der();
        let signer = ReplySigner {
            cert_der: &ra_der,
            key: &ra.key,
        };
        let der = encode_cert_rep(
            opened.reply_to(),
            &Outcome::Pending,
            opened.cipher(),
            &signer,
        )
        .unwrap();
        let view = read_cert_rep(&der, &request, &ra_der, &pki().client).unwrap();
        assert_eq!(view.status, PkiStatus::Pending);
    }
}
