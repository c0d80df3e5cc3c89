//! The pkcsPKIEnvelope: a CMS EnvelopedData with RSA key transport (RFC 8894 §3.2.2,
//! RFC 5652 §6). Opening one with our keys (server: requests; client: SUCCESS replies) and
//! sealing one to a recipient certificate.
//!
//! Opening never tells an attacker *why* it failed: every failure that could depend on a
//! secret (no matching recipient, bad RSA padding, bad CBC padding, garbage plaintext) is
//! the same [`OpenError::Envelope`] from the same code path, and a bad key-transport block
//! continues with a decoy key ([`crypto::unwrap_key_or_random`], RFC 3218 §2.3.2).

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::RecipientIdentifier;
use der::asn1::{Any, OctetString};
use der::{Decode, Encode, Tag, Tagged};
use scepd_ca::{KeyKind, PrivateKeyOps};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use super::crypto::{self, ContentCipher, CryptoError, DigestAlg, KeyTransport};
use super::oids;
use super::signed::{matches_issuer_and_serial, matches_key_identifier, subject_key_identifier};
use super::wire::{
    self, EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, OaepParams, SetInWireOrder,
};

/// Largest decrypted messageData we accept (a CSR with a 16k-bit key is ~5 KiB).
const MAX_CONTENT_BYTES: usize = 256 * 1024;

/// Why an envelope could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The content cipher or key transport is unknown or not allowed: failInfo badAlg.
    #[error("unsupported algorithm: {0}")]
    BadAlg(&'static str),
    /// Anything else. Deliberately without detail (see the module documentation).
    #[error("envelope could not be opened")]
    Envelope,
}

/// Why an envelope could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A recipient certificate or value could not be encoded.
    #[error("encoding failed: {0}")]
    Der(#[from] der::Error),
    /// The recipient key cannot do RSA key transport, or a primitive failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A recipient certificate has no key identifier to name it by.
    #[error("recipient certificate has no usable key identifier")]
    NoKeyIdentifier,
}

/// One of our decryption identities: a certificate and its private key.
#[derive(Clone, Copy)]
pub struct RecipientKey<'a> {
    /// The certificate senders encrypt to (DER).
    pub cert_der: &'a [u8],
    /// Its private key (only RSA keys can be used for key transport), in memory or in a
    /// PKCS#11 token.
    pub key: &'a dyn PrivateKeyOps,
}

/// The result of opening an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The decrypted content: one value, normalised to DER.
    pub content: Vec<u8>,
    /// The content cipher the sender chose.
    pub cipher: ContentCipher,
}

/// Opens `ContentInfo { id-envelopedData, EnvelopedData }` (or, leniently, a bare
/// EnvelopedData) with whichever of `recipients` a KeyTransRecipientInfo names.
pub fn open(
    der: &[u8],
    recipients: &[RecipientKey<'_>],
    legacy_des_allowed: bool,
) -> Result<Opened, OpenError> {
    // The eContent octets were not touched by the outer normalisation (it does not look
    // inside OCTET STRINGs), and Apple's envelopes use indefinite lengths.
    let enveloped = super::ber::normalize_to_der(der)
        .ok()
        .and_then(|der| parse_enveloped_data(&der))
        .ok_or(OpenError::Envelope)?;
    let content_info = &enveloped.encrypted_content_info;
    let (cipher, iv) = content_cipher(&content_info.content_enc_alg, legacy_des_allowed)?;
    let ours = find_recipient(&enveloped, recipients);
    let transport = match &ours {
        Some((ktri, _)) => key_transport(&ktri.key_enc_alg)?,
        None => KeyTransport::RsaPkcs1v15,
    };
    // From here on, every failure is the same `Envelope` error. Without a matching
    // recipient we still decrypt, with a random key, so the work done does not depend on
    // whether the key-transport block was ours and well-formed.
    // A key that cannot do the transport at all (a token without RSA-OAEP-SHA256) is told
    // apart: that depends on the algorithm the sender named, not on the ciphertext.
    let content_key = match &ours {
        Some((ktri, key)) => {
            crypto::unwrap_key_or_random(*key, transport, ktri.enc_key.as_bytes(), cipher.key_len())
                .map_err(|_| OpenError::BadAlg(unsupported_transport(transport)))?
        }
        None => crypto::random_bytes(cipher.key_len()),
    };
    let content = content_info
        .ciphertext()
        .and_then(|ciphertext| decrypt_bounded(cipher, &content_key, &iv, &ciphertext))
        .and_then(|plaintext| one_der_value(&plaintext));
    match (ours, content) {
        (Some(_), Some(content)) => Ok(Opened { content, cipher }),
        _ => Err(OpenError::Envelope),
    }
}

/// The log text of a key transport the decryption key cannot do (a PKCS#11 token without
/// the mechanism: SoftHSM2 2.6 does RSA-OAEP with SHA-1 only).
fn unsupported_transport(transport: KeyTransport) -> &'static str {
    match transport {
        KeyTransport::RsaPkcs1v15 => {
            "RSAES-PKCS1-v1_5 key transport refused by the decryption key's PKCS#11 token"
        }
        KeyTransport::RsaOaep(DigestAlg::Sha1) => {
            "RSAES-OAEP (SHA-1) key transport refused by the decryption key's PKCS#11 token"
        }
        KeyTransport::RsaOaep(DigestAlg::Sha224) => {
            "RSAES-OAEP with SHA-224 refused by the decryption key's PKCS#11 token"
        }
        KeyTransport::RsaOaep(DigestAlg::Sha256) => {
            "RSAES-OAEP with SHA-256 refused by the decryption key's PKCS#11 token"
        }
        KeyTransport::RsaOaep(DigestAlg::Sha384) => {
            "RSAES-OAEP with SHA-384 refused by the decryption key's PKCS#11 token"
        }
        KeyTransport::RsaOaep(DigestAlg::Sha512) => {
            "RSAES-OAEP with SHA-512 refused by the decryption key's PKCS#11 token"
        }
    }
}

fn parse_enveloped_data(der: &[u8]) -> Option<EnvelopedData> {
    match ContentInfo::from_der(der) {
        Ok(info) if info.content_type == oids::ID_ENVELOPED_DATA => {
            wire::decode_any(&info.content).ok()
        }
        Ok(_) => None,
        Err(_) => EnvelopedData::from_der(der).ok(),
    }
}

fn decrypt_bounded(
    cipher: ContentCipher,
    key: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
) -> Option<Vec<u8>> {
    if ciphertext.is_empty() || ciphertext.len() > MAX_CONTENT_BYTES {
        return None;
    }
    cipher
        .decrypt(key, iv, ciphertext)
        .ok()
        .filter(|plain| !plain.is_empty())
}

/// The plaintext must be exactly one BER value, returned as DER: a decoy key that happened
/// to produce valid CBC padding yields garbage that fails here.
fn one_der_value(plaintext: &[u8]) -> Option<Vec<u8>> {
    super::ber::normalize_to_der(plaintext).ok()
}

/// `contentEncryptionAlgorithm`: the cipher (RFC 3370 §5.1, RFC 3565 §4.1) and its IV,
/// an OCTET STRING parameter for every CBC cipher we support.
fn content_cipher(
    alg: &AlgorithmIdentifierOwned,
    legacy_des_allowed: bool,
) -> Result<(ContentCipher, Vec<u8>), OpenError> {
    let cipher = ContentCipher::from_oid(&alg.oid).ok_or(OpenError::BadAlg("content cipher"))?;
    if cipher.is_legacy() && !legacy_des_allowed {
        return Err(OpenError::BadAlg("single DES not allowed"));
    }
    let iv = alg
        .parameters
        .as_ref()
        .filter(|p| p.tag() == Tag::OctetString)
        .map(|p| p.value().to_vec())
        .filter(|iv| iv.len() == cipher.iv_len())
        .ok_or(OpenError::Envelope)?;
    Ok((cipher, iv))
}

/// `keyEncryptionAlgorithm`: rsaEncryption (PKCS#1 v1.5) or id-RSAES-OAEP with its hash
/// (RFC 8017 §A.2.1, RFC 4055 §4.1). MGF1 must use the same hash, and the label must be
/// the default empty one.
fn key_transport(alg: &AlgorithmIdentifierOwned) -> Result<KeyTransport, OpenError> {
    if alg.oid == oids::RSA_ENCRYPTION {
        return Ok(KeyTransport::RsaPkcs1v15);
    }
    if alg.oid != oids::RSAES_OAEP {
        return Err(OpenError::BadAlg("key transport"));
    }
    let params = match &alg.parameters {
        None => OaepParams {
            hash_algorithm: None,
            mask_gen_algorithm: None,
            p_source_algorithm: None,
        },
        Some(any) => wire::decode_any::<OaepParams>(any)
            .map_err(|_| OpenError::BadAlg("RSAES-OAEP parameters"))?,
    };
    let hash = match &params.hash_algorithm {
        None => DigestAlg::Sha1,
        Some(alg) => DigestAlg::from_oid(&alg.oid).ok_or(OpenError::BadAlg("RSAES-OAEP hash"))?,
    };
    let mgf1_hash = match &params.mask_gen_algorithm {
        None => DigestAlg::Sha1,
        Some(mgf) if mgf.oid == oids::MGF1 => mgf
            .parameters
            .as_ref()
            .and_then(|p| wire::decode_any::<AlgorithmIdentifierOwned>(p).ok())
            .and_then(|hash| DigestAlg::from_oid(&hash.oid))
            .ok_or(OpenError::BadAlg("RSAES-OAEP MGF1 hash"))?,
        Some(_) => return Err(OpenError::BadAlg("RSAES-OAEP mask generation")),
    };
    if mgf1_hash != hash || params.p_source_algorithm.is_some() {
        return Err(OpenError::BadAlg("RSAES-OAEP parameters"));
    }
    Ok(KeyTransport::RsaOaep(hash))
}

/// The first KeyTransRecipientInfo that names one of our RSA certificates.
fn find_recipient<'k>(
    enveloped: &EnvelopedData,
    recipients: &[RecipientKey<'k>],
) -> Option<(KeyTransRecipientInfo, &'k dyn PrivateKeyOps)> {
    let ours: Vec<(Certificate, &dyn PrivateKeyOps)> = recipients
        .iter()
        .filter(|r| r.key.kind() == KeyKind::Rsa)
        .filter_map(|r| Some((Certificate::from_der(r.cert_der).ok()?, r.key)))
        .collect();
    enveloped
        .recipient_infos
        .0
        .iter()
        .filter(|any| any.tag() == Tag::Sequence)
        .filter_map(|any| wire::decode_any::<KeyTransRecipientInfo>(any).ok())
        .find_map(|ktri| {
            let key = ours
                .iter()
                .find(|(cert, _)| names(&ktri.rid, cert))
                .map(|(_, key)| *key)?;
            Some((ktri, key))
        })
}

fn names(rid: &RecipientIdentifier, cert: &Certificate) -> bool {
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(id) => matches_issuer_and_serial(id, cert),
        RecipientIdentifier::SubjectKeyIdentifier(ski) => {
            matches_key_identifier(ski.0.as_bytes(), cert)
        }
    }
}

/// A recipient to seal to.
#[derive(Clone, Copy, Debug)]
pub struct SealRecipient<'a> {
    /// The recipient certificate (DER); its public key must be RSA.
    pub cert_der: &'a [u8],
    /// Name it by subjectKeyIdentifier (KeyTransRecipientInfo version 2) instead of
    /// issuerAndSerialNumber (version 0).
    pub by_key_identifier: bool,
}

/// Encrypts `content` under a fresh content key with `cipher`, wraps the key for each
/// recipient in the given order, and returns `ContentInfo { id-envelopedData,
/// EnvelopedData }` (RFC 5652 §6.1; inner contentType id-data, RFC 8894 §3.2.2).
pub fn seal(
    content: &[u8],
    recipients: &[SealRecipient<'_>],
    cipher: ContentCipher,
    transport: KeyTransport,
) -> Result<Vec<u8>, SealError> {
    let content_key = crypto::random_bytes(cipher.key_len());
    let iv = crypto::random_bytes(cipher.iv_len());
    let recipient_infos = recipients
        .iter()
        .map(|recipient| recipient_info(recipient, transport, &content_key))
        .collect::<Result<Vec<_>, _>>()?;
    // RFC 5652 §6.1: version 2 as soon as any KeyTransRecipientInfo is version 2.
    let version = if recipients.iter().any(|r| r.by_key_identifier) {
        CmsVersion::V2
    } else {
        CmsVersion::V0
    };
    let ciphertext = cipher.encrypt(&content_key, &iv, content)?;
    let content_enc_alg = wire::algorithm(
        cipher.oid(),
        Some(Any::encode_from(&OctetString::new(iv)?)?),
    );
    let enveloped = EnvelopedData {
        version,
        originator_info: None,
        recipient_infos: SetInWireOrder(recipient_infos),
        encrypted_content_info: EncryptedContentInfo::new(
            oids::ID_DATA,
            content_enc_alg,
            ciphertext,
        )?,
        unprotected_attrs: None,
    };
    let info = ContentInfo {
        content_type: oids::ID_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped)?,
    };
    Ok(info.to_der()?)
}

fn recipient_info(
    recipient: &SealRecipient<'_>,
    transport: KeyTransport,
    content_key: &[u8],
) -> Result<Any, SealError> {
    let cert = Certificate::from_der(recipient.cert_der)?;
    let public_key = scepd_ca::public_key_from_spki(&cert.tbs_certificate.subject_public_key_info)
        .map_err(|_| SealError::Crypto(CryptoError::UnsupportedKey))?;
    let encrypted_key = crypto::rsa_encrypt(&public_key, transport, content_key)?;
    let (version, rid) = if recipient.by_key_identifier {
        let ski = subject_key_identifier(&cert).ok_or(SealError::NoKeyIdentifier)?;
        (
            CmsVersion::V2,
            RecipientIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(OctetString::new(ski)?)),
        )
    } else {
        let IssuerAndSerialNumber {
            issuer,
            serial_number,
        } = wire::issuer_and_serial(&cert);
        (
            CmsVersion::V0,
            RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer,
                serial_number,
            }),
        )
    };
    let ktri = KeyTransRecipientInfo {
        version,
        rid,
        key_enc_alg: key_transport_algorithm(transport)?,
        enc_key: OctetString::new(encrypted_key)?,
    };
    Ok(Any::encode_from(&ktri)?)
}

/// rsaEncryption with NULL parameters (RFC 3370 §4.2.1), or id-RSAES-OAEP with explicit
/// parameters for anything but the all-default SHA-1 (RFC 4055 §4.1, where SHA-1 is encoded
/// as an empty SEQUENCE).
fn key_transport_algorithm(
    transport: KeyTransport,
) -> Result<AlgorithmIdentifierOwned, der::Error> {
    match transport {
        KeyTransport::RsaPkcs1v15 => Ok(wire::algorithm(oids::RSA_ENCRYPTION, Some(Any::null()))),
        KeyTransport::RsaOaep(hash) => {
            let params = oaep_params(hash)?;
            Ok(wire::algorithm(
                oids::RSAES_OAEP,
                Some(Any::encode_from(&params)?),
            ))
        }
    }
}

fn oaep_params(hash: DigestAlg) -> Result<OaepParams, der::Error> {
    if hash == DigestAlg::Sha1 {
        return Ok(OaepParams {
            hash_algorithm: None,
            mask_gen_algorithm: None,
            p_source_algorithm: None,
        });
    }
    let hash_alg = wire::algorithm(hash.oid(), None);
    let mgf1 = wire::algorithm(oids::MGF1, Some(Any::encode_from(&hash_alg)?));
    Ok(OaepParams {
        hash_algorithm: Some(hash_alg),
        mask_gen_algorithm: Some(mgf1),
        p_source_algorithm: None,
    })
}
