//! Client side of SCEP (RFC 8894 §2-§3): build a pkiMessage (PKCSReq, RenewalReq, CertPoll,
//! GetCert, GetCRL) and read the CertRep, plus GetCACert parsing and RA certificate
//! selection. Used by the project's test client and bench, and by a CA backend that itself
//! enrolls against an upstream SCEP CA, so it accepts what real servers send (single-DES
//! replies from micromdm, BER, either signature-algorithm style).

use std::time::SystemTime;

use cms::content_info::ContentInfo;
use der::asn1::{Any, OctetString};
use der::{Decode, Encode};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{KeyUsage as KeyUsageExt, SubjectKeyIdentifier};
use openssl::x509::{X509Builder, X509NameBuilder};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

use super::attributes::{AttributeError, AttributeWriter};
use super::ber::{self, BerError};
use super::crypto::{self, ContentCipher, DigestAlg, KeyTransport};
use super::envelope::{self, OpenError, RecipientKey, SealError, SealRecipient};
use super::signed::{
    self, ParseError, SignError, SignatureStyle, SignedMessage, Signing, VerifyError,
};
use super::wire::{self, EnvelopedData, SignedData};
use super::{oids, FailInfo, MessageType, PkiStatus};

/// Length of the senderNonce we send (RFC 8894 §3.2.1.5).
const SENDER_NONCE_LEN: usize = 16;
/// RSA size of the throwaway signer made for an EC CSR key.
const THROWAWAY_RSA_BITS: u32 = 2048;

/// Everything that can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// openssl failed (key generation, certificate building).
    #[error("openssl: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
    /// A value could not be encoded or decoded.
    #[error("DER: {0}")]
    Der(#[from] der::Error),
    /// The server's bytes are not BER.
    #[error(transparent)]
    Ber(#[from] BerError),
    /// The server's SignedData could not be read.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The CertRep's signature does not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A signed attribute is missing or invalid.
    #[error(transparent)]
    Attribute(#[from] AttributeError),
    /// Building the envelope failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The SUCCESS envelope could not be opened with our key.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The CertRep's SignerInfo does not name the expected RA/CA signing certificate.
    #[error("CertRep is not signed by the expected certificate")]
    WrongSigner,
    /// A reply attribute differs from what the request said (transactionID,
    /// recipientNonce) or has a value a CertRep may not have (messageType, pkiStatus).
    #[error("unexpected {0} in reply")]
    Unexpected(&'static str),
    /// No certificate where one was needed.
    #[error("no certificate in {0}")]
    NoCertificates(&'static str),
}

/// The client's signing identity: the self-signed certificate (or, for RenewalReq, an
/// existing certificate) and its key. The CertRep is encrypted to this certificate.
pub struct ClientIdentity {
    /// Certificate (DER).
    pub cert_der: Vec<u8>,
    /// Its private key.
    pub key: PKey<Private>,
}

impl ClientIdentity {
    /// A self-signed certificate as scepclient and Apple make for the signer (RFC 8894
    /// §2.3), CN `common_name`, keyUsage digitalSignature + keyEncipherment, valid for a
    /// year from now, SHA-256.
    ///
    /// The signer must be RSA, since the reply is key-transported to it. Given an EC key
    /// (the CSR's key), a separate throwaway RSA key signs instead, as Apple does, and the
    /// EC key is not part of the identity.
    pub fn self_signed(key: PKey<Private>, common_name: &str) -> Result<Self, ClientError> {
        let key = if key.id() == Id::RSA {
            key
        } else {
            PKey::from_rsa(Rsa::generate(THROWAWAY_RSA_BITS)?)?
        };
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", common_name)?;
        let name = name.build();
        let mut builder = X509Builder::new()?;
        builder.set_version(2)?;
        let serial = random_serial()?;
        let not_before = Asn1Time::days_from_now(0)?;
        let not_after = Asn1Time::days_from_now(365)?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&key)?;
        builder.set_not_before(&not_before)?;
        builder.set_not_after(&not_after)?;
        builder.append_extension(
            KeyUsageExt::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Ok(Self {
            cert_der: builder.build().to_der()?,
            key,
        })
    }
}

/// A positive 127-bit serial number.
fn random_serial() -> Result<Asn1Integer, ClientError> {
    let mut bytes = crypto::random_bytes(16);
    if let Some(first) = bytes.first_mut() {
        *first &= 0x7f;
    }
    Ok(BigNum::from_slice(&bytes)?.to_asn1_integer()?)
}

/// How to build a request.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    /// PKCSReq, RenewalReq, CertPoll, GetCert or GetCRL.
    pub message_type: MessageType,
    /// transactionID (a PrintableString; RFC 8894 §3.2.1.1).
    pub transaction_id: String,
    /// Digest for the SignerInfo.
    pub digest: DigestAlg,
    /// Content cipher for the envelope.
    pub cipher: ContentCipher,
    /// Key transport for the envelope.
    pub key_transport: KeyTransport,
    /// Name the recipient by subjectKeyIdentifier instead of issuerAndSerialNumber.
    pub recipient_by_ski: bool,
}

/// A built request and what is needed to check its reply.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    /// The pkiMessage (DER), the POST body.
    pub der: Vec<u8>,
    /// Our senderNonce; the reply's recipientNonce must equal it.
    pub sender_nonce: Vec<u8>,
    /// Our transactionID; the reply must echo it.
    pub transaction_id: String,
}

/// Deliberate defects, for tests of the server's checks.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tamper {
    /// A well-formed request.
    #[default]
    None,
    /// Flip one bit of the SignerInfo signature.
    FlipSignatureByte,
    /// Flip one bit of the envelope's ciphertext so that its CBC padding breaks (the
    /// messageDigest covers the tampered envelope, so the signature still verifies).
    FlipCiphertextByte,
    /// Flip one bit in the middle of the first recipient's encryptedKey, so that the RSA
    /// key-transport block does not unpad (a bad PKCS#1 v1.5 or OAEP block).
    FlipEncryptedKeyByte,
    /// Send this messageType number instead of the option's.
    MessageTypeCode(u32),
    /// Send no envelope (no eContent).
    NoEnvelope,
    /// Claim MD5 as the digestAlgorithm (the signature is SHA-based and will not match).
    Md5DigestOid,
}

/// Builds a pkiMessage (RFC 8894 §3.2): `message_data` (a CSR, IssuerAndSubject,
/// IssuerAndSerialNumber) enveloped to `recipient_cert_der` (the RA encryption certificate,
/// or the CA's when there is no RA), signed by `signer`.
pub fn build_request(
    message_data: &[u8],
    recipient_cert_der: &[u8],
    signer: &ClientIdentity,
    options: &RequestOptions,
) -> Result<PreparedRequest, ClientError> {
    build_request_to(message_data, &[recipient_cert_der], signer, options)
}

/// Like [`build_request`], with the content key wrapped for several recipients in the given
/// order (as scepclient does for every certificate GetCACert returned).
pub fn build_request_to(
    message_data: &[u8],
    recipient_certs: &[&[u8]],
    signer: &ClientIdentity,
    options: &RequestOptions,
) -> Result<PreparedRequest, ClientError> {
    build_request_with(message_data, recipient_certs, signer, options, Tamper::None)
}

/// [`build_request_to`] with a deliberate defect.
#[doc(hidden)]
pub fn build_request_with(
    message_data: &[u8],
    recipient_certs: &[&[u8]],
    signer: &ClientIdentity,
    options: &RequestOptions,
    tamper: Tamper,
) -> Result<PreparedRequest, ClientError> {
    let recipients: Vec<SealRecipient<'_>> = recipient_certs
        .iter()
        .map(|cert_der| SealRecipient {
            cert_der,
            by_key_identifier: options.recipient_by_ski,
        })
        .collect();
    let mut sealed = envelope::seal(
        message_data,
        &recipients,
        options.cipher,
        options.key_transport,
    )?;
    if tamper == Tamper::FlipCiphertextByte {
        sealed = flip_ciphertext_byte(&sealed)?;
    }
    if tamper == Tamper::FlipEncryptedKeyByte {
        sealed = flip_encrypted_key_byte(&sealed)?;
    }
    let sender_nonce = crypto::random_bytes(SENDER_NONCE_LEN);
    let message_type = match tamper {
        Tamper::MessageTypeCode(code) => code,
        _ => u32::from(options.message_type.code()),
    };
    let mut attributes = AttributeWriter::new();
    attributes
        .push(
            oids::MESSAGE_TYPE,
            Any::new(
                der::Tag::PrintableString,
                message_type.to_string().into_bytes(),
            )?,
        )?
        .transaction_id(&options.transaction_id)?
        .octets(oids::SENDER_NONCE, &sender_nonce)?;
    let signing = Signing {
        cert_der: &signer.cert_der,
        key: &signer.key,
        digest: options.digest,
        style: SignatureStyle::Named,
        signing_time: SystemTime::now(),
    };
    let econtent = (tamper != Tamper::NoEnvelope).then_some(sealed.as_slice());
    let mut der = signed::sign_message(econtent, attributes, &signing)?;
    match tamper {
        Tamper::FlipSignatureByte => {
            der = rewrite_signer_info(&der, |si| flip_middle_bit(&mut si.signature))?
        }
        Tamper::Md5DigestOid => der = rewrite_signer_info(&der, |si| si.digest_alg.oid = MD5)?,
        _ => {}
    }
    Ok(PreparedRequest {
        der,
        sender_nonce,
        transaction_id: options.transaction_id.clone(),
    })
}

/// md5 (RFC 1321), only to build a request the server must refuse.
const MD5: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.2.840.113549.2.5");

fn rewrite_signer_info(
    der: &[u8],
    change: impl FnOnce(&mut wire::SignerInfo),
) -> Result<Vec<u8>, ClientError> {
    let info = ContentInfo::from_der(der)?;
    let mut signed_data: SignedData = wire::decode_any(&info.content)?;
    if let Some(signer_info) = signed_data.signer_infos.0.first_mut() {
        change(signer_info);
    }
    Ok(ContentInfo {
        content_type: info.content_type,
        content: Any::encode_from(&signed_data)?,
    }
    .to_der()?)
}

fn flip_ciphertext_byte(sealed: &[u8]) -> Result<Vec<u8>, ClientError> {
    let info = ContentInfo::from_der(sealed)?;
    let mut enveloped: EnvelopedData = wire::decode_any(&info.content)?;
    let content = &mut enveloped.encrypted_content_info;
    let mut ciphertext = content
        .ciphertext()
        .ok_or(ClientError::Unexpected("envelope"))?;
    // The last byte of the next-to-last block: it flips the padding byte of the last
    // plaintext block, so CBC unpadding fails for sure. (A flip elsewhere can leave
    // well-formed DER with a garbled key inside, which only the CSR signature check sees.)
    let block =
        ContentCipher::from_oid(&content.content_enc_alg.oid).map_or(16, ContentCipher::iv_len);
    let target = ciphertext
        .len()
        .checked_sub(block + 1)
        .ok_or(ClientError::Unexpected("envelope"))?;
    if let Some(byte) = ciphertext.get_mut(target) {
        *byte ^= 0x01;
    }
    *content = wire::EncryptedContentInfo::new(
        content.content_type,
        content.content_enc_alg.clone(),
        ciphertext,
    )?;
    Ok(ContentInfo {
        content_type: info.content_type,
        content: Any::encode_from(&enveloped)?,
    }
    .to_der()?)
}

fn flip_encrypted_key_byte(sealed: &[u8]) -> Result<Vec<u8>, ClientError> {
    let info = ContentInfo::from_der(sealed)?;
    let mut enveloped: EnvelopedData = wire::decode_any(&info.content)?;
    let first = enveloped
        .recipient_infos
        .0
        .first_mut()
        .ok_or(ClientError::Unexpected("envelope"))?;
    let mut ktri: wire::KeyTransRecipientInfo = wire::decode_any(first)?;
    flip_middle_bit(&mut ktri.enc_key);
    *first = Any::encode_from(&ktri)?;
    Ok(ContentInfo {
        content_type: info.content_type,
        content: Any::encode_from(&enveloped)?,
    }
    .to_der()?)
}

fn flip_middle_bit(octets: &mut OctetString) {
    let mut bytes = octets.as_bytes().to_vec();
    let middle = bytes.len() / 2;
    if let Some(byte) = bytes.get_mut(middle) {
        *byte ^= 0x01;
    }
    if let Ok(flipped) = OctetString::new(bytes) {
        *octets = flipped;
    }
}

/// What a CertRep said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRepView {
    /// pkiStatus.
    pub status: PkiStatus,
    /// failInfo (present for FAILURE).
    pub fail_info: Option<FailInfo>,
    /// failInfoText, if any.
    pub fail_info_text: Option<String>,
    /// transactionID (equal to the request's).
    pub transaction_id: String,
    /// recipientNonce (equal to the request's senderNonce).
    pub recipient_nonce: Vec<u8>,
    /// For SUCCESS, the decrypted certificates in the order the server sent them (the
    /// issued one first); empty otherwise.
    pub certs: Vec<Vec<u8>>,
    /// For SUCCESS to GetCRL, the decrypted CRLs (DER); empty otherwise.
    pub crls: Vec<Vec<u8>>,
    /// Whether the reply carried an eContent (a PENDING/FAILURE must not).
    pub has_content: bool,
}

/// Reads a CertRep (RFC 8894 §3.3.2): checks that `ra_signer_cert_der` is its signer and
/// that the signature verifies with it, that messageType is CertRep, that transactionID and
/// recipientNonce match `request`, and for SUCCESS decrypts the certs-only content with the
/// client key (DES, 3DES and AES-CBC all accepted: upstream servers such as micromdm 2.1.0
/// reply with single DES).
pub fn read_cert_rep(
    der: &[u8],
    request: &PreparedRequest,
    ra_signer_cert_der: &[u8],
    signer: &ClientIdentity,
) -> Result<CertRepView, ClientError> {
    let der = ber::normalize_to_der(der)?;
    let message = SignedMessage::parse(&der)?;
    let ra_signer = Certificate::from_der(ra_signer_cert_der)?;
    if !message.is_signed_by(&ra_signer) {
        return Err(ClientError::WrongSigner);
    }
    message.verify(&ra_signer)?;
    let attributes = message.attributes();
    if MessageType::from_code(attributes.message_type_code()?) != Some(MessageType::CertRep) {
        return Err(ClientError::Unexpected("messageType"));
    }
    let transaction_id = attributes.transaction_id()?;
    if transaction_id != request.transaction_id {
        return Err(ClientError::Unexpected("transactionID"));
    }
    let recipient_nonce = attributes.recipient_nonce()?;
    if recipient_nonce != request.sender_nonce {
        return Err(ClientError::Unexpected("recipientNonce"));
    }
    let status = PkiStatus::from_code(attributes.pki_status_code()?)
        .ok_or(ClientError::Unexpected("pkiStatus"))?;
    let fail_info = match (status, attributes.fail_info_code()?) {
        (PkiStatus::Failure, Some(code)) => {
            Some(FailInfo::from_code(code).ok_or(ClientError::Unexpected("failInfo"))?)
        }
        (PkiStatus::Failure, None) => {
            return Err(ClientError::Unexpected("FAILURE without failInfo"))
        }
        _ => None,
    };
    let (certs, crls) = match status {
        PkiStatus::Success => success_content(message.econtent(), signer)?,
        PkiStatus::Failure | PkiStatus::Pending => (Vec::new(), Vec::new()),
    };
    Ok(CertRepView {
        status,
        fail_info,
        fail_info_text: attributes.fail_info_text()?,
        transaction_id,
        recipient_nonce,
        certs,
        crls,
        has_content: message.econtent().is_some(),
    })
}

/// DER certificates and DER CRLs of a SUCCESS.
type SuccessContent = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The certificates (and, for GetCRL, the CRLs) of a SUCCESS; at least one of either.
fn success_content(
    econtent: Option<&[u8]>,
    signer: &ClientIdentity,
) -> Result<SuccessContent, ClientError> {
    let econtent = econtent.ok_or(ClientError::NoCertificates("SUCCESS without content"))?;
    let ours = RecipientKey {
        cert_der: &signer.cert_der,
        key: &signer.key,
    };
    let opened = envelope::open(econtent, &[ours], true)?;
    let certs = signed::certificates_in_order(&opened.content)?;
    let crls = signed::crls_in_order(&opened.content)?;
    if certs.is_empty() && crls.is_empty() {
        return Err(ClientError::NoCertificates("SUCCESS content"));
    }
    Ok((certs, crls))
}

/// Parses a GetCACert body (RFC 8894 §4.2.1): one DER certificate
/// (`application/x-x509-ca-cert`) or a certs-only SignedData (`application/x-x509-ca-ra-cert`,
/// BER accepted). Returns the certificates in the order received.
pub fn parse_ca_certs(body: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
    let der = ber::normalize_to_der(body)?;
    if Certificate::from_der(&der).is_ok() {
        return Ok(vec![der]);
    }
    let certs = signed::certificates_in_order(&der)?;
    if certs.is_empty() {
        return Err(ClientError::NoCertificates("GetCACert response"));
    }
    Ok(certs)
}

/// How one GetCACert certificate may be used.
struct CertRole<'a> {
    der: &'a Vec<u8>,
    is_ca: bool,
    can_sign: bool,
    can_encrypt: bool,
}

impl<'a> CertRole<'a> {
    fn of(der: &'a Vec<u8>) -> Result<Self, ClientError> {
        let cert = Certificate::from_der(der)?;
        let tbs = &cert.tbs_certificate;
        let key_usage = tbs.get::<KeyUsage>().ok().flatten().map(|(_, usage)| usage);
        let basic_ca = tbs
            .get::<BasicConstraints>()
            .ok()
            .flatten()
            .is_some_and(|(_, bc)| bc.ca);
        let is_ca = basic_ca || key_usage.is_some_and(|u| u.key_cert_sign());
        Ok(Self {
            der,
            is_ca,
            can_sign: allowed(key_usage, KeyUsage::digital_signature),
            can_encrypt: allowed(key_usage, KeyUsage::key_encipherment),
        })
    }
}

/// Whether a keyUsage permits a use; no keyUsage extension means no restriction
/// (RFC 5280 §4.2.1.3).
fn allowed(key_usage: Option<KeyUsage>, bit: fn(&KeyUsage) -> bool) -> bool {
    match key_usage {
        None => true,
        Some(usage) => bit(&usage),
    }
}

/// Picks, from GetCACert output, the RA encryption certificate (keyEncipherment, not
/// keyCertSign) and the RA signing certificate (digitalSignature, not keyCertSign),
/// falling back to the CA certificate for whichever is missing (a CA without RA signs and
/// decrypts itself, RFC 8894 §2.1). Returns `(encrypt, sign)`.
pub fn select_ra_certs(certs: &[Vec<u8>]) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
    let roles = certs
        .iter()
        .map(CertRole::of)
        .collect::<Result<Vec<_>, _>>()?;
    let ca = roles
        .iter()
        .find(|r| r.is_ca)
        .or_else(|| roles.first())
        .ok_or(ClientError::NoCertificates("GetCACert response"))?;
    let encrypt = roles
        .iter()
        .find(|r| !r.is_ca && r.can_encrypt)
        .unwrap_or(ca);
    let sign = roles.iter().find(|r| !r.is_ca && r.can_sign).unwrap_or(ca);
    Ok((encrypt.der.clone(), sign.der.clone()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::scep::reply::certs_only;
    use crate::scep::testing::{self, pki, Identity, Role};

    fn identity(role: Role, cn: &str, serial: u32) -> Identity {
        let key = testing::rsa_key();
        Identity {
            cert: testing::certificate(&key, cn, role, Some(&pki().ca), serial),
            key,
        }
    }

    #[test]
    fn get_ca_cert_single_certificate_and_certs_only() {
        let ca = pki().ca.der();
        assert_eq!(parse_ca_certs(&ca).unwrap(), vec![ca.clone()]);
        let ra = pki().ra.der();
        let bundle = certs_only(&[&ra, &ca]).unwrap();
        assert_eq!(parse_ca_certs(&bundle).unwrap(), vec![ra, ca]);
        assert!(parse_ca_certs(b"").is_err());
        assert!(parse_ca_certs(b"\x30\x03\x02\x01\x01").is_err());
    }

    #[test]
    fn ndes_style_sign_and_encrypt_pair_is_selected() {
        let ca = pki().ca.der();
        let sign = identity(Role::RaSign, "EnrollmentAgentOffline", 20).der();
        let encrypt = identity(Role::RaEncrypt, "CEPEncryption", 21).der();
        let certs = vec![ca.clone(), sign.clone(), encrypt.clone()];
        assert_eq!(select_ra_certs(&certs).unwrap(), (encrypt, sign));
    }

    #[test]
    fn combined_ra_is_used_for_both_and_a_lone_ca_for_both() {
        let ca = pki().ca.der();
        let ra = pki().ra.der();
        assert_eq!(
            select_ra_certs(&[ra.clone(), ca.clone()]).unwrap(),
            (ra.clone(), ra)
        );
        assert_eq!(
            select_ra_certs(std::slice::from_ref(&ca)).unwrap(),
            (ca.clone(), ca)
        );
        assert!(select_ra_certs(&[]).is_err());
    }

    /// A SUCCESS as micromdm 2.1.0 sends it: content encrypted with single DES, signature
    /// algorithm rsaEncryption.
    #[test]
    fn single_des_success_from_an_upstream_server_is_read() {
        let options = RequestOptions {
            message_type: MessageType::PkcsReq,
            transaction_id: "UPSTREAM-1".into(),
            digest: DigestAlg::Sha1,
            cipher: ContentCipher::Aes128Cbc,
            key_transport: KeyTransport::RsaPkcs1v15,
            recipient_by_ski: false,
        };
        let request = build_request(&pki().csr, &pki().ra.der(), &pki().client, &options).unwrap();
        let issued = pki().ca.der();
        let degenerate = certs_only(&[&issued]).unwrap();
        let to_client = SealRecipient {
            cert_der: &pki().client.cert_der,
            by_key_identifier: false,
        };
        let sealed = envelope::seal(
            &degenerate,
            &[to_client],
            ContentCipher::DesCbc,
            KeyTransport::RsaPkcs1v15,
        )
        .unwrap();
        let mut attributes = AttributeWriter::new();
        attributes
            .decimal(oids::MESSAGE_TYPE, MessageType::CertRep.code())
            .unwrap()
            .decimal(oids::PKI_STATUS, PkiStatus::Success.code())
            .unwrap()
            .transaction_id(&request.transaction_id)
            .unwrap()
            .octets(oids::SENDER_NONCE, &crypto::random_bytes(16))
            .unwrap()
            .octets(oids::RECIPIENT_NONCE, &request.sender_nonce)
            .unwrap();
        let ra_der = pki().ra.der();
        let signing = Signing {
            cert_der: &ra_der,
            key: &pki().ra.key,
            digest: DigestAlg::Sha1,
            style: SignatureStyle::RsaEncryption,
            signing_time: SystemTime::now(),
        };
        let reply = signed::sign_message(Some(&sealed), attributes, &signing).unwrap();
        let view = read_cert_rep(&reply, &request, &ra_der, &pki().client).unwrap();
        assert_eq!(
            (view.status, view.certs),
            (PkiStatus::Success, vec![issued])
        );
    }

    #[test]
    fn self_signed_identity_has_the_scep_key_usage() {
        let identity = &pki().client;
        let cert = Certificate::from_der(&identity.cert_der).unwrap();
        let (_, usage) = cert.tbs_certificate.get::<KeyUsage>().unwrap().unwrap();
        assert!(usage.digital_signature() && usage.key_encipherment() && !usage.key_cert_sign());
        assert_eq!(cert.tbs_certificate.subject, cert.tbs_certificate.issuer);
    }
}
