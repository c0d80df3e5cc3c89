//! The outer layer of every pkiMessage: a CMS SignedData with one SignerInfo and signed
//! attributes (RFC 8894 §3.2, RFC 5652 §5). Parsing, signature verification and signing,
//! shared by the server (requests) and the client (CertReps), plus the degenerate
//! certs-only SignedData (RFC 8894 §3.4).

use std::time::SystemTime;

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use const_oid::ObjectIdentifier as Oid;
use der::asn1::{Any, OctetString};
use der::{Decode, Encode, Tag, Tagged};
use openssl::pkey::{Id, PKey, Public};
use scepd_ca::{KeyKind, PrivateKeyOps};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use super::attributes::{AttributeReader, AttributeWriter};
use super::crypto::{self, CryptoError, DigestAlg};
use super::oids;
use super::wire::{self, RawAttributes, SetInWireOrder, SignedData, SignerInfo};

/// Why a SignedData could not even be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not the structure named.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Well-formed, but not what a pkiMessage may be.
    #[error("unsupported {0}")]
    Unsupported(&'static str),
}

/// Why a signature check failed, already split the way RFC 8894 §3.2.1.4 answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// An algorithm we do not support or allow: failInfo badAlg.
    #[error("unsupported algorithm: {0}")]
    BadAlg(&'static str),
    /// The message does not verify: failInfo badMessageCheck.
    #[error("message check failed: {0}")]
    BadMessageCheck(&'static str),
}

/// Why we could not build a SignedData.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Encoding failed (a value too large for DER, a malformed certificate given to us).
    #[error("encoding failed: {0}")]
    Der(#[from] der::Error),
    /// The private-key operation failed, or the key type cannot sign.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// How the SignerInfo names its signature algorithm. Both are accepted by every client we
/// know; some legacy clients insist on `rsaEncryption` (smallstep/certificates PR #2776).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStyle {
    /// RSA: `rsaEncryption` with NULL parameters (RFC 3370 §3.2). ECDSA keys always use the
    /// named form, since there is no such generic OID for them.
    RsaEncryption,
    /// `sha256WithRSAEncryption`, `ecdsa-with-SHA256`, ...
    Named,
}

/// A parsed pkiMessage SignedData: exactly one SignerInfo, with signed attributes.
#[derive(Debug, Clone)]
pub struct SignedMessage {
    certificates: Vec<Any>,
    signer_info: SignerInfo,
    signed_attrs: RawAttributes,
    econtent_type: Oid,
    econtent: Option<Vec<u8>>,
}

impl SignedMessage {
    /// Parses `ContentInfo { id-signedData, SignedData }` from DER (normalise BER first).
    pub fn parse(der: &[u8]) -> Result<Self, ParseError> {
        let signed_data = parse_signed_data(der)?;
        let econtent_type = signed_data.encap_content_info.econtent_type;
        let econtent = econtent_octets(&signed_data.encap_content_info)?;
        let certificates = signed_data
            .certificates
            .map(|set| set.0)
            .unwrap_or_default();
        let mut signer_infos = signed_data.signer_infos.0.into_iter();
        let (Some(signer_info), None) = (signer_infos.next(), signer_infos.next()) else {
            return Err(ParseError::Unsupported("signerInfos (need exactly one)"));
        };
        let signed_attrs = signer_info
            .signed_attrs
            .clone()
            .ok_or(ParseError::Unsupported(
                "SignerInfo without signed attributes",
            ))?;
        Ok(Self {
            certificates,
            signer_info,
            signed_attrs,
            econtent_type,
            econtent,
        })
    }

    /// The signed attributes, in wire order.
    pub fn attributes(&self) -> AttributeReader<'_> {
        AttributeReader::new(self.signed_attrs.attributes())
    }

    /// `eContentType` (id-data for every pkiMessage).
    pub fn econtent_type(&self) -> Oid {
        self.econtent_type
    }

    /// The eContent octets (an EnvelopedData ContentInfo), if any.
    pub fn econtent(&self) -> Option<&[u8]> {
        self.econtent.as_deref()
    }

    /// The SignerInfo's `digestAlgorithm` OID.
    pub fn digest_oid(&self) -> Oid {
        self.signer_info.digest_alg.oid
    }

    /// The certificate in `certificates` that the SignerInfo's `sid` names, as DER and parsed.
    pub fn signer_certificate(&self) -> Option<(Vec<u8>, Certificate)> {
        self.certificates.iter().find_map(|any| {
            let der = any.to_der().ok()?;
            let cert = Certificate::from_der(&der).ok()?;
            self.is_signed_by(&cert).then_some((der, cert))
        })
    }

    /// Whether the SignerInfo's `sid` names `cert`.
    pub fn is_signed_by(&self, cert: &Certificate) -> bool {
        match &self.signer_info.sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => matches_issuer_and_serial(id, cert),
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                matches_key_identifier(ski.0.as_bytes(), cert)
            }
        }
    }

    /// Checks the SignerInfo (RFC 5652 §5.4, §5.6) against `signer`'s public key: supported
    /// digest and signature algorithms, contentType = id-data, messageDigest = digest of the
    /// eContent octets, and the signature over the signed attributes exactly as received.
    /// Returns the digest algorithm used.
    pub fn verify(&self, signer: &Certificate) -> Result<DigestAlg, VerifyError> {
        let digest = DigestAlg::from_oid(&self.signer_info.digest_alg.oid)
            .ok_or(VerifyError::BadAlg("digest"))?;
        let family = signature_family(&self.signer_info.signature_algorithm, digest)?;
        let key = public_key(signer)?;
        if key.id() != family {
            return Err(VerifyError::BadMessageCheck(
                "signature algorithm does not fit the signer key",
            ));
        }
        self.check_content_attributes(digest)?;
        let signed_bytes = self
            .signed_attrs
            .signed_bytes()
            .map_err(|_| VerifyError::BadMessageCheck("signed attributes"))?;
        let signature = self.signer_info.signature.as_bytes();
        match crypto::verify(&key, digest, &signed_bytes, signature) {
            Ok(true) => Ok(digest),
            _ => Err(VerifyError::BadMessageCheck("signature")),
        }
    }

    fn check_content_attributes(&self, digest: DigestAlg) -> Result<(), VerifyError> {
        let attributes = self.attributes();
        let content_type = attributes
            .content_type()
            .map_err(|_| VerifyError::BadMessageCheck("contentType"))?;
        if content_type != self.econtent_type {
            return Err(VerifyError::BadMessageCheck("contentType"));
        }
        let claimed = attributes
            .message_digest()
            .map_err(|_| VerifyError::BadMessageCheck("messageDigest"))?;
        // No eContent (PENDING/FAILURE CertReps): the digest is over the empty string, as
        // micromdm and Go's pkcs7 compute it.
        let actual = digest
            .digest(self.econtent().unwrap_or_default())
            .map_err(|_| VerifyError::BadMessageCheck("messageDigest"))?;
        if claimed != actual.as_slice() {
            return Err(VerifyError::BadMessageCheck("messageDigest"));
        }
        Ok(())
    }
}

fn parse_signed_data(der: &[u8]) -> Result<SignedData, ParseError> {
    let content_info =
        ContentInfo::from_der(der).map_err(|_| ParseError::Malformed("ContentInfo"))?;
    if content_info.content_type != oids::ID_SIGNED_DATA {
        return Err(ParseError::Unsupported("content type (not SignedData)"));
    }
    wire::decode_any::<SignedData>(&content_info.content)
        .map_err(|_| ParseError::Malformed("SignedData"))
}

/// The contents of `eContent [0] EXPLICIT OCTET STRING`. A constructed OCTET STRING has been
/// flattened by BER normalisation already; anything but an OCTET STRING is refused.
fn econtent_octets(encap: &EncapsulatedContentInfo) -> Result<Option<Vec<u8>>, ParseError> {
    match &encap.econtent {
        None => Ok(None),
        Some(any) if any.tag() == Tag::OctetString => Ok(Some(any.value().to_vec())),
        Some(_) => Err(ParseError::Malformed("eContent (not an OCTET STRING)")),
    }
}

/// Which key type the SignerInfo's `signatureAlgorithm` needs. `rsaEncryption` leaves the
/// digest to `digestAlgorithm`; a named algorithm (sha256WithRSAEncryption,
/// ecdsa-with-SHA256) must agree with it, since the two would otherwise disagree on what was
/// signed.
fn signature_family(
    alg: &spki::AlgorithmIdentifierOwned,
    digest: DigestAlg,
) -> Result<Id, VerifyError> {
    if alg.oid == oids::RSA_ENCRYPTION {
        return Ok(Id::RSA);
    }
    let named = DigestAlg::from_signature_oid(&alg.oid)
        .ok_or(VerifyError::BadAlg("signature algorithm"))?;
    if named != digest {
        return Err(VerifyError::BadAlg(
            "signature digest differs from digestAlgorithm",
        ));
    }
    let is_ecdsa = [
        oids::ECDSA_WITH_SHA1,
        oids::ECDSA_WITH_SHA224,
        oids::ECDSA_WITH_SHA256,
        oids::ECDSA_WITH_SHA384,
        oids::ECDSA_WITH_SHA512,
    ]
    .contains(&alg.oid);
    Ok(if is_ecdsa { Id::EC } else { Id::RSA })
}

/// The certificate's public key as an openssl key (RSA or EC; anything else is badAlg).
pub fn public_key(cert: &Certificate) -> Result<PKey<Public>, VerifyError> {
    let key = scepd_ca::public_key_from_spki(&cert.tbs_certificate.subject_public_key_info)
        .map_err(|_| VerifyError::BadAlg("signer key type"))?;
    match key.id() {
        Id::RSA | Id::EC => Ok(key),
        _ => Err(VerifyError::BadAlg("signer key type")),
    }
}

/// Whether `id` (a SignerIdentifier's or RecipientIdentifier's issuerAndSerialNumber) names
/// `cert`.
pub fn matches_issuer_and_serial(id: &IssuerAndSerialNumber, cert: &Certificate) -> bool {
    id.serial_number == cert.tbs_certificate.serial_number
        && id.issuer == cert.tbs_certificate.issuer
}

/// Whether `key_id` (a subjectKeyIdentifier) names `cert`: equal to its
/// SubjectKeyIdentifier extension, or, for certificates without one or senders that compute
/// it themselves, to the SHA-1 of its subjectPublicKey bits (RFC 5280 §4.2.1.2, method 1).
pub fn matches_key_identifier(key_id: &[u8], cert: &Certificate) -> bool {
    let from_extension = cert
        .tbs_certificate
        .get::<SubjectKeyIdentifier>()
        .ok()
        .flatten()
        .is_some_and(|(_, ski)| ski.0.as_bytes() == key_id);
    from_extension || key_id_from_public_key(cert).is_some_and(|computed| computed == key_id)
}

/// RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's bits.
pub fn key_id_from_public_key(cert: &Certificate) -> Option<Vec<u8>> {
    let bits = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    DigestAlg::Sha1.digest(bits).ok()
}

/// The subjectKeyIdentifier to put in a RecipientIdentifier or SignerIdentifier for `cert`:
/// its extension if present, else computed (method 1).
pub fn subject_key_identifier(cert: &Certificate) -> Option<Vec<u8>> {
    match cert.tbs_certificate.get::<SubjectKeyIdentifier>() {
        Ok(Some((_, ski))) => Some(ski.0.as_bytes().to_vec()),
        _ => key_id_from_public_key(cert),
    }
}

/// What to sign: everything but the content-bound attributes, which [`sign_message`] adds.
pub struct Signing<'a> {
    /// The signer certificate (DER); it goes into `certificates` and names the SignerInfo.
    pub cert_der: &'a [u8],
    /// The signer's private key, in memory or in a PKCS#11 token.
    pub key: &'a dyn PrivateKeyOps,
    /// The digest for messageDigest and the signature.
    pub digest: DigestAlg,
    /// How to name the signature algorithm.
    pub style: SignatureStyle,
    /// signingTime.
    pub signing_time: SystemTime,
}

/// Builds `ContentInfo { id-signedData, SignedData }` with eContentType id-data, the given
/// eContent (absent for PENDING/FAILURE), one SignerInfo with `attributes` plus contentType,
/// messageDigest and signingTime, and the signer certificate in `certificates`
/// (RFC 8894 §3.2, RFC 5652 §5).
pub fn sign_message(
    econtent: Option<&[u8]>,
    mut attributes: AttributeWriter,
    signing: &Signing<'_>,
) -> Result<Vec<u8>, SignError> {
    let cert = Certificate::from_der(signing.cert_der)?;
    let message_digest = signing.digest.digest(econtent.unwrap_or_default())?;
    attributes
        .content_type(oids::ID_DATA)?
        .message_digest(&message_digest)?
        .signing_time(signing.signing_time)?;
    let signed_attrs = RawAttributes::from_attributes(attributes.finish())?;
    let signature = signing
        .key
        .sign(signing.digest.hash_alg(), &signed_attrs.signed_bytes()?)
        .map_err(CryptoError::from)?;
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(wire::issuer_and_serial(&cert)),
        digest_alg: digest_algorithm(signing.digest),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: signature_algorithm(signing.key, signing.digest, signing.style)?,
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };
    let econtent = econtent
        .map(|bytes| Any::new(Tag::OctetString, bytes.to_vec()))
        .transpose()?;
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetInWireOrder(vec![digest_algorithm(signing.digest)]),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oids::ID_DATA,
            econtent,
        },
        certificates: Some(SetInWireOrder(vec![Any::from_der(signing.cert_der)?])),
        crls: None,
        signer_infos: SetInWireOrder(vec![signer_info]),
    };
    Ok(wrap_signed_data(&signed_data)?)
}

/// A degenerate certs-only SignedData (RFC 8894 §3.4, RFC 5652 §5.1 with no signers and no
/// eContent): `certificates` in exactly the given order. Each entry must be one DER
/// certificate.
pub fn certs_only(certs: &[&[u8]]) -> Result<Vec<u8>, der::Error> {
    let certificates = certs
        .iter()
        .map(|der| Certificate::from_der(der).and_then(|_| Any::from_der(der)))
        .collect::<Result<Vec<_>, _>>()?;
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetInWireOrder(Vec::new()),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oids::ID_DATA,
            econtent: None,
        },
        certificates: Some(SetInWireOrder(certificates)),
        crls: None,
        signer_infos: SetInWireOrder(Vec::new()),
    };
    wrap_signed_data(&signed_data)
}

/// A degenerate SignedData carrying one CRL (RFC 8894 §3.3.2.1 and §3.4: the reply to
/// GetCRL puts the CRL in `crls`): no signers, no eContent, no certificates. `crl_der` must
/// be one DER `CertificateList` (RFC 5280 §5.1).
pub fn crls_only(crl_der: &[u8]) -> Result<Vec<u8>, der::Error> {
    x509_cert::crl::CertificateList::from_der(crl_der)?;
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetInWireOrder(Vec::new()),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oids::ID_DATA,
            econtent: None,
        },
        certificates: None,
        crls: Some(SetInWireOrder(vec![Any::from_der(crl_der)?])),
        signer_infos: SetInWireOrder(Vec::new()),
    };
    wrap_signed_data(&signed_data)
}

/// The CRLs of a degenerate SignedData, in wire order, as DER.
pub fn crls_in_order(der: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    let signed_data = parse_signed_data(der)?;
    let set = signed_data.crls.map(|set| set.0).unwrap_or_default();
    Ok(set
        .iter()
        .filter(|any| any.tag() == Tag::Sequence)
        .filter_map(|any| any.to_der().ok())
        .collect())
}

/// The certificates of a certs-only SignedData, in wire order, as DER. Entries that are not
/// plain certificates (attribute certificates, `other`) are skipped.
pub fn certificates_in_order(der: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    let signed_data = parse_signed_data(der)?;
    let set = signed_data
        .certificates
        .map(|set| set.0)
        .unwrap_or_default();
    Ok(set
        .iter()
        .filter(|any| any.tag() == Tag::Sequence)
        .filter_map(|any| any.to_der().ok())
        .collect())
}

fn wrap_signed_data(signed_data: &SignedData) -> Result<Vec<u8>, der::Error> {
    ContentInfo {
        content_type: oids::ID_SIGNED_DATA,
        content: Any::encode_from(signed_data)?,
    }
    .to_der()
}

/// A digest AlgorithmIdentifier with absent parameters (RFC 5754 §2, RFC 3370 §2.1).
fn digest_algorithm(digest: DigestAlg) -> spki::AlgorithmIdentifierOwned {
    wire::algorithm(digest.oid(), None)
}

/// The SignerInfo signatureAlgorithm for `key`: RSA OIDs carry NULL parameters (RFC 3370
/// §3.2, RFC 4055 §5), ECDSA ones none (RFC 5758 §3.2).
fn signature_algorithm(
    key: &dyn PrivateKeyOps,
    digest: DigestAlg,
    style: SignatureStyle,
) -> Result<spki::AlgorithmIdentifierOwned, CryptoError> {
    let kind = key.kind();
    match (kind, style) {
        (KeyKind::Rsa, SignatureStyle::RsaEncryption) => {
            Ok(wire::algorithm(oids::RSA_ENCRYPTION, Some(Any::null())))
        }
        (KeyKind::Rsa, SignatureStyle::Named) => Ok(wire::algorithm(
            digest.signature_oid_for(kind)?,
            Some(Any::null()),
        )),
        _ => Ok(wire::algorithm(digest.signature_oid_for(kind)?, None)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::scep::client::{build_request, RequestOptions};
    use crate::scep::testing::pki;
    use crate::scep::wire::DigestInfo;
    use crate::scep::{ContentCipher, KeyTransport, MessageType};

    fn request_der() -> Vec<u8> {
        let options = RequestOptions {
            message_type: MessageType::PkcsReq,
            transaction_id: "ORDER-TEST".into(),
            digest: DigestAlg::Sha256,
            cipher: ContentCipher::Aes128Cbc,
            key_transport: KeyTransport::RsaPkcs1v15,
            recipient_by_ski: false,
        };
        build_request(&pki().csr, &pki().ra.der(), &pki().client, &options)
            .unwrap()
            .der
    }

    /// Re-encodes the request with its signed attributes in reverse (non-DER) order; signs
    /// the reversed bytes when `sign_as_sent`, else keeps the signature over the sorted ones.
    fn with_reversed_attributes(sign_as_sent: bool) -> Vec<u8> {
        let info = ContentInfo::from_der(&request_der()).unwrap();
        let mut signed_data: SignedData = wire::decode_any(&info.content).unwrap();
        let signer_info = signed_data.signer_infos.0.first_mut().unwrap();
        let mut attributes = signer_info
            .signed_attrs
            .as_ref()
            .unwrap()
            .attributes()
            .to_vec();
        attributes.reverse();
        let reversed = RawAttributes::in_given_order(&attributes).unwrap();
        if sign_as_sent {
            let signature = crypto::sign(
                &pki().client.key,
                DigestAlg::Sha256,
                &reversed.signed_bytes().unwrap(),
            )
            .unwrap();
            signer_info.signature = OctetString::new(signature).unwrap();
        }
        signer_info.signed_attrs = Some(reversed);
        wrap_signed_data(&signed_data).unwrap()
    }

    fn verify(der: &[u8]) -> Result<DigestAlg, VerifyError> {
        let message = SignedMessage::parse(der).unwrap();
        let (_, signer) = message.signer_certificate().unwrap();
        message.verify(&signer)
    }

    #[test]
    fn signature_is_checked_over_the_attributes_as_received() {
        assert_eq!(
            verify(&with_reversed_attributes(true)),
            Ok(DigestAlg::Sha256)
        );
        // Signed sorted, sent reversed: a verifier that re-encoded would wrongly accept it.
        assert_eq!(
            verify(&with_reversed_attributes(false)),
            Err(VerifyError::BadMessageCheck("signature"))
        );
    }

    #[test]
    fn digest_info_without_null_parameters_is_accepted() {
        let message = SignedMessage::parse(&request_der()).unwrap();
        let signed_bytes = message.signed_attrs.signed_bytes().unwrap();
        let hash = DigestAlg::Sha256.digest(&signed_bytes).unwrap();
        // DigestInfo ::= SEQUENCE { AlgorithmIdentifier (no parameters), OCTET STRING }
        let digest_info = DigestInfo {
            algorithm: wire::algorithm(DigestAlg::Sha256.oid(), None),
            digest: OctetString::new(hash).unwrap(),
        };
        let rsa = pki().client.key.rsa().unwrap();
        let mut signature = vec![0; rsa.size() as usize];
        let len = rsa
            .private_encrypt(
                &digest_info.to_der().unwrap(),
                &mut signature,
                openssl::rsa::Padding::PKCS1,
            )
            .unwrap();
        signature.truncate(len);
        let mut message = message;
        message.signer_info.signature = OctetString::new(signature).unwrap();
        let (_, signer) = message.signer_certificate().unwrap();
        assert_eq!(message.verify(&signer), Ok(DigestAlg::Sha256));
    }
}
