//! Minting signed challenges, for MDMs (and tests) written in Rust. The output is the format
//! of `docs/challenge-format.md`, the same layering `openssl cms -encrypt` then
//! `openssl cms -sign -binary -nodetach` produce.

use super::claims::{self, Claims};
use super::layers::{oids, random, Digest};
use base64::Engine;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::{Any, OctetString, SetOfVec};
use der::{Decode, Encode};
use openssl::pkey::{Id, PKeyRef, Private};
use openssl::rsa::Padding;
use spki::AlgorithmIdentifierOwned;
use std::time::{Duration, SystemTime};
use x509_cert::attr::Attribute;
use x509_cert::Certificate;

/// Content-encryption cipher of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Cipher {
    /// AES-128-CBC (2.16.840.1.101.3.4.1.2).
    Aes128Cbc,
    /// AES-192-CBC (2.16.840.1.101.3.4.1.22).
    Aes192Cbc,
    /// AES-256-CBC (2.16.840.1.101.3.4.1.42), the default.
    #[default]
    Aes256Cbc,
}

/// RSA key transport of the content-encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyTransport {
    /// rsaEncryption, RSAES-PKCS1-v1_5 (the default; what `openssl cms -encrypt` does).
    #[default]
    RsaPkcs1v15,
    /// id-RSAES-OAEP with SHA-1 and MGF1-SHA-1 (all-default parameters).
    RsaOaepSha1,
    /// id-RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaepSha256,
}

/// Choices for [`mint_challenge`]. `MintOptions::default()` gives AES-256-CBC, PKCS#1 v1.5
/// key transport, SHA-256, signingTime = `iat`, and the signer certificate in the message.
#[derive(Debug, Clone, Default)]
pub struct MintOptions {
    /// The envelope's cipher.
    pub cipher: Cipher,
    /// The envelope's key transport.
    pub key_transport: KeyTransport,
    /// The signingTime attribute; `None` means the claims' `iat`.
    pub signing_time: Option<SystemTime>,
    /// Intermediate certificates (DER) to carry besides the signer's.
    pub extra_certificates: Vec<Vec<u8>>,
    /// Leave the signer certificate out of the message (the verifier must then have it
    /// configured as a trust anchor).
    pub omit_signer_certificate: bool,
}

/// Why a challenge could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The claims break a rule of the format (the verifier would refuse them).
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// A certificate or structure could not be encoded or decoded.
    #[error("encoding: {0}")]
    Der(#[from] der::Error),
    /// A cryptographic operation failed.
    #[error("openssl: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
    /// The recipient key is not RSA, or the signer key neither RSA nor EC.
    #[error("unsupported key: {0}")]
    UnsupportedKey(&'static str),
}

/// A fresh one-time id: 32 random bytes from openssl, base64url without padding (43 chars).
pub fn random_challenge_id() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random(32))
}

/// Mints a signed challenge: serialises `claims`, encrypts them to `recipient_cert_der`
/// (scepd's challenge-decryption certificate), signs the envelope with `signer_key`
/// (SHA-256; RSA PKCS#1 v1.5 or ECDSA) whose certificate is `signer_cert_der`, and returns
/// the standard base64 of the DER SignedData.
pub fn mint_challenge(
    claims: &Claims,
    signer_cert_der: &[u8],
    signer_key: &PKeyRef<Private>,
    recipient_cert_der: &[u8],
    options: MintOptions,
) -> Result<String, MintError> {
    let json = serde_json::to_vec(claims).map_err(|e| MintError::InvalidClaims(e.to_string()))?;
    claims::parse(&json).map_err(MintError::InvalidClaims)?;
    let envelope = envelope(&json, recipient_cert_der, &options)?;
    let iat = SystemTime::UNIX_EPOCH + Duration::from_secs(claims.iat);
    let signed = sign(
        &envelope,
        signer_cert_der,
        signer_key,
        options.signing_time.unwrap_or(iat),
        &options,
    )?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signed))
}

fn algorithm(oid: ObjectIdentifier, parameters: Option<Any>) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned { oid, parameters }
}

fn issuer_and_serial(cert: &Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    }
}

fn envelope(
    plaintext: &[u8],
    recipient_cert_der: &[u8],
    options: &MintOptions,
) -> Result<Vec<u8>, MintError> {
    let recipient = Certificate::from_der(recipient_cert_der)?;
    let public = openssl::x509::X509::from_der(recipient_cert_der)?.public_key()?;
    if public.id() != Id::RSA {
        return Err(MintError::UnsupportedKey("recipient key must be RSA"));
    }
    let (cipher, oid) = match options.cipher {
        Cipher::Aes128Cbc => (openssl::symm::Cipher::aes_128_cbc(), oids::AES128_CBC),
        Cipher::Aes192Cbc => (openssl::symm::Cipher::aes_192_cbc(), oids::AES192_CBC),
        Cipher::Aes256Cbc => (openssl::symm::Cipher::aes_256_cbc(), oids::AES256_CBC),
    };
    let key = random(cipher.key_len());
    let iv = random(16);
    let ciphertext = openssl::symm::encrypt(cipher, &key, Some(&iv), plaintext)?;

    let mut encrypter = openssl::encrypt::Encrypter::new(&public)?;
    let key_enc_alg = match options.key_transport {
        KeyTransport::RsaPkcs1v15 => {
            encrypter.set_rsa_padding(Padding::PKCS1)?;
            algorithm(oids::RSA_ENCRYPTION, Some(Any::null()))
        }
        KeyTransport::RsaOaepSha1 => {
            encrypter.set_rsa_padding(Padding::PKCS1_OAEP)?;
            // RSAES-OAEP-params with every field at its default: an empty SEQUENCE.
            algorithm(oids::RSAES_OAEP, Some(Any::new(der::Tag::Sequence, [])?))
        }
        KeyTransport::RsaOaepSha256 => {
            let md = openssl::hash::MessageDigest::sha256();
            encrypter.set_rsa_padding(Padding::PKCS1_OAEP)?;
            encrypter.set_rsa_oaep_md(md)?;
            encrypter.set_rsa_mgf1_md(md)?;
            algorithm(oids::RSAES_OAEP, Some(oaep_sha256_params()?))
        }
    };
    let mut wrapped = vec![0; encrypter.encrypt_len(&key)?];
    let len = encrypter.encrypt(&key, &mut wrapped)?;
    wrapped.truncate(len);

    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(issuer_and_serial(&recipient)),
        key_enc_alg,
        enc_key: OctetString::new(wrapped)?,
    };
    let enveloped = EnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(SetOfVec::try_from(vec![RecipientInfo::Ktri(ktri)])?),
        encrypted_content: EncryptedContentInfo {
            content_type: oids::ID_DATA,
            content_enc_alg: algorithm(oid, Some(Any::encode_from(&OctetString::new(iv)?)?)),
            encrypted_content: Some(OctetString::new(ciphertext)?),
        },
        unprotected_attrs: None,
    };
    Ok(ContentInfo {
        content_type: oids::ID_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped)?,
    }
    .to_der()?)
}

/// RSAES-OAEP-params { hashAlgorithm [0] sha256, maskGenAlgorithm [1] mgf1(sha256) }.
fn oaep_sha256_params() -> Result<Any, der::Error> {
    let sha256 = algorithm(oids::SHA256, None);
    let mgf1 = algorithm(oids::MGF1, Some(Any::encode_from(&sha256)?));
    let explicit = |n: u8, inner: &AlgorithmIdentifierOwned| -> Result<Vec<u8>, der::Error> {
        let body = inner.to_der()?;
        let mut out = Vec::new();
        der::Header::new(
            der::Tag::ContextSpecific {
                constructed: true,
                number: der::TagNumber::new(n),
            },
            body.len(),
        )?
        .encode_to_vec(&mut out)?;
        out.extend(body);
        Ok(out)
    };
    let mut body = explicit(0, &sha256)?;
    body.extend(explicit(1, &mgf1)?);
    Any::new(der::Tag::Sequence, body)
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, der::Error> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}

fn sign(
    econtent: &[u8],
    signer_cert_der: &[u8],
    signer_key: &PKeyRef<Private>,
    signing_time: SystemTime,
    options: &MintOptions,
) -> Result<Vec<u8>, MintError> {
    let signer = Certificate::from_der(signer_cert_der)?;
    let digest = Digest::Sha256;
    let signature_algorithm = match signer_key.id() {
        Id::RSA => algorithm(oids::RSA_ENCRYPTION, Some(Any::null())),
        Id::EC => algorithm(oids::ECDSA_SHA256, None),
        _ => return Err(MintError::UnsupportedKey("signer key must be RSA or EC")),
    };
    let message_digest = openssl::hash::hash(digest.md(), econtent)?;
    let time = x509_cert::time::Time::try_from(signing_time)?;
    let attrs = SetOfVec::try_from(vec![
        attribute(oids::CONTENT_TYPE, Any::encode_from(&oids::ID_DATA)?)?,
        attribute(oids::SIGNING_TIME, Any::encode_from(&time)?)?,
        attribute(
            oids::MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(message_digest.to_vec())?)?,
        )?,
    ])?;
    let mut signer_ctx = openssl::sign::Signer::new(digest.md(), signer_key)?;
    if signer_key.id() == Id::RSA {
        signer_ctx.set_rsa_padding(Padding::PKCS1)?;
    }
    let signature = signer_ctx.sign_oneshot_to_vec(&attrs.to_der()?)?;

    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(&signer)),
        digest_alg: algorithm(digest.oid(), None),
        signed_attrs: Some(attrs),
        signature_algorithm,
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };
    let mut certificates = Vec::new();
    if !options.omit_signer_certificate {
        certificates.push(CertificateChoices::Certificate(signer));
    }
    for der_cert in &options.extra_certificates {
        certificates.push(CertificateChoices::Certificate(Certificate::from_der(
            der_cert,
        )?));
    }
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![algorithm(digest.oid(), None)])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oids::ID_DATA,
            econtent: Some(Any::encode_from(&OctetString::new(econtent)?)?),
        },
        certificates: if certificates.is_empty() {
            None
        } else {
            Some(CertificateSet(SetOfVec::try_from(certificates)?))
        },
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info])?),
    };
    Ok(ContentInfo {
        content_type: oids::ID_SIGNED_DATA,
        content: Any::encode_from(&signed_data)?,
    }
    .to_der()?)
}
