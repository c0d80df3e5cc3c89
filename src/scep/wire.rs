//! ASN.1 mirror types for the CMS structures SCEP carries (RFC 5652), where the `cms` crate's
//! own types would lose information we need.
//!
//! `der` 0.7's `SetOfVec` sorts its elements when it decodes and when it encodes. That is
//! right for DER in general but wrong for three things SCEP depends on:
//! - a SignerInfo's signature covers the signed attributes *as the signer encoded them*
//!   (RFC 5652 §5.4), and some legacy clients do not sort them;
//! - the order of a certs-only reply's `certificates` is meaningful to clients (Apple and
//!   scepclient take the first certificate as the issued one, RFC 8894 §3.4);
//! - the order of RecipientInfos is the sender's (harmless, but tests want to control it).
//!
//! So the types here keep SET OF elements in wire order ([`SetInWireOrder`]) and keep the
//! signed attributes' received bytes ([`RawAttributes`]). Everything else reuses `cms`,
//! `x509-cert` and `spki` types.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::OriginatorInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use const_oid::ObjectIdentifier as Oid;
use der::asn1::{Any, OctetString, SetOfVec};
use der::{
    Decode, DecodeValue, Encode, EncodeValue, FixedTag, Header, Length, Reader, Sequence,
    SliceReader, Tag, TagNumber, Tagged, Writer,
};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;

/// Upper bound on the elements of any SET OF we decode (certificates, recipients, signers,
/// attributes). Real messages have a handful; this only stops pathological inputs early.
const MAX_SET_ELEMENTS: usize = 64;

/// `SET OF T` whose elements stay in the order they were received or given: no sorting on
/// decode, no sorting on encode. Use it only where order matters or is harmless; the sender
/// is responsible for DER order when DER order is required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetInWireOrder<T>(pub Vec<T>);

impl<'a, T: Decode<'a>> DecodeValue<'a> for SetInWireOrder<T> {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        reader.read_nested(header.length, |reader| {
            let mut elements = Vec::new();
            while !reader.is_finished() {
                if elements.len() >= MAX_SET_ELEMENTS {
                    return Err(der::ErrorKind::Overlength.into());
                }
                elements.push(T::decode(reader)?);
            }
            Ok(Self(elements))
        })
    }
}

impl<T: Encode> EncodeValue for SetInWireOrder<T> {
    fn value_len(&self) -> der::Result<Length> {
        self.0
            .iter()
            .try_fold(Length::ZERO, |sum, element| sum + element.encoded_len()?)
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        self.0.iter().try_for_each(|element| element.encode(writer))
    }
}

impl<T> FixedTag for SetInWireOrder<T> {
    const TAG: Tag = Tag::Set;
}

/// `SignedAttributes ::= SET SIZE (1..MAX) OF Attribute` (RFC 5652 §5.3), with the contents
/// octets kept exactly as received, because the signature is computed over them re-tagged
/// as a SET (RFC 5652 §5.4), not over a re-encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAttributes {
    /// The contents octets of the `[0] IMPLICIT SET`, as received.
    contents: Vec<u8>,
    /// The attributes, in wire order.
    attributes: Vec<Attribute>,
}

impl RawAttributes {
    /// DER-sorts `attributes` (signed attributes MUST be DER, RFC 5652 §5.3) and keeps their
    /// encoding; used when we sign.
    pub fn from_attributes(attributes: Vec<Attribute>) -> der::Result<Self> {
        let sorted = SetOfVec::try_from(attributes)?;
        let mut contents = Vec::new();
        for attribute in sorted.iter() {
            attribute.encode_to_vec(&mut contents)?;
        }
        Ok(Self {
            contents,
            attributes: sorted.into_vec(),
        })
    }

    /// Keeps `attributes` in the given order, as a legacy signer that does not sort would
    /// send them. Only for tests of the verifier.
    #[cfg(test)]
    pub fn in_given_order(attributes: &[Attribute]) -> der::Result<Self> {
        let mut contents = Vec::new();
        for attribute in attributes {
            attribute.encode_to_vec(&mut contents)?;
        }
        Ok(Self {
            contents,
            attributes: attributes.to_vec(),
        })
    }

    /// The bytes the signature covers: the attributes with an explicit SET tag (0x31)
    /// instead of the `[0] IMPLICIT` tag they travel with (RFC 5652 §5.4).
    pub fn signed_bytes(&self) -> der::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.contents.len() + 6);
        Header::new(Tag::Set, self.contents.len())?.encode_to_vec(&mut out)?;
        out.extend_from_slice(&self.contents);
        Ok(out)
    }

    /// The attributes in wire order.
    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }
}

impl<'a> DecodeValue<'a> for RawAttributes {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let contents = reader.read_slice(header.length)?.to_vec();
        let mut inner = SliceReader::new(&contents)?;
        let mut attributes = Vec::new();
        while !inner.is_finished() {
            if attributes.len() >= MAX_SET_ELEMENTS {
                return Err(der::ErrorKind::Overlength.into());
            }
            attributes.push(Attribute::decode(&mut inner)?);
        }
        Ok(Self {
            contents,
            attributes,
        })
    }
}

impl EncodeValue for RawAttributes {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.contents.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.contents)
    }
}

impl FixedTag for RawAttributes {
    const TAG: Tag = Tag::Set;
}

/// `SignedData` (RFC 5652 §5.1):
///
/// ```text
/// SignedData ::= SEQUENCE {
///     version CMSVersion,
///     digestAlgorithms SET OF DigestAlgorithmIdentifier,
///     encapContentInfo EncapsulatedContentInfo,
///     certificates [0] IMPLICIT CertificateSet OPTIONAL,
///     crls [1] IMPLICIT RevocationInfoChoices OPTIONAL,
///     signerInfos SET OF SignerInfo }
/// ```
///
/// Certificates are kept as raw elements in wire order (a `CertificateChoices` that is not a
/// plain `Certificate` is skipped by whoever reads them).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SignedData {
    pub version: CmsVersion,
    pub digest_algorithms: SetInWireOrder<AlgorithmIdentifierOwned>,
    pub encap_content_info: EncapsulatedContentInfo,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub certificates: Option<SetInWireOrder<Any>>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub crls: Option<SetInWireOrder<Any>>,
    pub signer_infos: SetInWireOrder<SignerInfo>,
}

/// `SignerInfo` (RFC 5652 §5.3):
///
/// ```text
/// SignerInfo ::= SEQUENCE {
///     version CMSVersion,
///     sid SignerIdentifier,
///     digestAlgorithm DigestAlgorithmIdentifier,
///     signedAttrs [0] IMPLICIT SignedAttributes OPTIONAL,
///     signatureAlgorithm SignatureAlgorithmIdentifier,
///     signature SignatureValue,
///     unsignedAttrs [1] IMPLICIT UnsignedAttributes OPTIONAL }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SignerInfo {
    pub version: CmsVersion,
    pub sid: SignerIdentifier,
    pub digest_alg: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub signed_attrs: Option<RawAttributes>,
    pub signature_algorithm: AlgorithmIdentifierOwned,
    pub signature: OctetString,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub unsigned_attrs: Option<SetInWireOrder<Any>>,
}

/// `EnvelopedData` (RFC 5652 §6.1):
///
/// ```text
/// EnvelopedData ::= SEQUENCE {
///     version CMSVersion,
///     originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
///     recipientInfos RecipientInfos,
///     encryptedContentInfo EncryptedContentInfo,
///     unprotectedAttrs [1] IMPLICIT UnprotectedAttributes OPTIONAL }
/// ```
///
/// RecipientInfos are kept raw: only `KeyTransRecipientInfo` is of interest to SCEP, and an
/// exotic recipient meant for someone else must not make the whole message unreadable.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct EnvelopedData {
    pub version: CmsVersion,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub originator_info: Option<OriginatorInfo>,
    pub recipient_infos: SetInWireOrder<Any>,
    pub encrypted_content_info: EncryptedContentInfo,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub unprotected_attrs: Option<SetInWireOrder<Any>>,
}

/// `EncryptedContentInfo` (RFC 5652 §6.1):
///
/// ```text
/// EncryptedContentInfo ::= SEQUENCE {
///     contentType ContentType,
///     contentEncryptionAlgorithm ContentEncryptionAlgorithmIdentifier,
///     encryptedContent [0] IMPLICIT EncryptedContent OPTIONAL }
/// EncryptedContent ::= OCTET STRING
/// ```
///
/// `encryptedContent` is kept as the raw `[0]` element, because BER senders (wolfSSL, some
/// Java stacks) use the constructed form, which an IMPLICIT OCTET STRING field rejects; see
/// [`EncryptedContentInfo::ciphertext`].
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct EncryptedContentInfo {
    pub content_type: Oid,
    pub content_enc_alg: AlgorithmIdentifierOwned,
    pub encrypted_content: Option<Any>,
}

impl EncryptedContentInfo {
    /// Builds the primitive `[0] IMPLICIT OCTET STRING` form we emit.
    pub fn new(
        content_type: Oid,
        content_enc_alg: AlgorithmIdentifierOwned,
        ciphertext: Vec<u8>,
    ) -> der::Result<Self> {
        let tag = Tag::ContextSpecific {
            constructed: false,
            number: TagNumber::N0,
        };
        Ok(Self {
            content_type,
            content_enc_alg,
            encrypted_content: Some(Any::new(tag, ciphertext)?),
        })
    }

    /// The ciphertext: the primitive `[0]` contents, or for the constructed form the
    /// concatenation of its OCTET STRING segments (X.690 §8.7.3). `None` when absent or when
    /// it is not a `[0]`.
    pub fn ciphertext(&self) -> Option<Vec<u8>> {
        let element = self.encrypted_content.as_ref()?;
        match element.tag() {
            Tag::ContextSpecific {
                constructed: false,
                number: TagNumber::N0,
            } => Some(element.value().to_vec()),
            Tag::ContextSpecific {
                constructed: true,
                number: TagNumber::N0,
            } => concatenate_octet_strings(element.value()).ok(),
            _ => None,
        }
    }
}

/// The concatenated contents of a run of OCTET STRING elements (a constructed string's body).
pub fn concatenate_octet_strings(body: &[u8]) -> der::Result<Vec<u8>> {
    let mut reader = SliceReader::new(body)?;
    let mut out = Vec::with_capacity(body.len());
    while !reader.is_finished() {
        out.extend_from_slice(OctetString::decode(&mut reader)?.as_bytes());
    }
    Ok(out)
}

/// `KeyTransRecipientInfo` (RFC 5652 §6.2.1), re-exported from `cms` for convenience.
pub type KeyTransRecipientInfo = cms::enveloped_data::KeyTransRecipientInfo;

/// `RSAES-OAEP-params` (RFC 8017 §A.2.1; RFC 4055 §4.1):
///
/// ```text
/// RSAES-OAEP-params ::= SEQUENCE {
///     hashAlgorithm      [0] HashAlgorithm     DEFAULT sha1,
///     maskGenAlgorithm   [1] MaskGenAlgorithm  DEFAULT mgf1SHA1,
///     pSourceAlgorithm   [2] PSourceAlgorithm  DEFAULT pSpecifiedEmpty }
/// ```
///
/// DEFAULT is modelled as OPTIONAL: absent means the default.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct OaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub hash_algorithm: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub mask_gen_algorithm: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub p_source_algorithm: Option<AlgorithmIdentifierOwned>,
}

/// The `IssuerAndSerialNumber` of a certificate (RFC 5652 §10.2.4).
pub fn issuer_and_serial(cert: &x509_cert::Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    }
}

/// Decodes a value held in an `Any` as `T` (re-encoding the small header is cheaper than
/// threading lifetimes through every caller).
pub fn decode_any<T: for<'a> Decode<'a>>(any: &Any) -> der::Result<T> {
    T::from_der(&any.to_der()?)
}

/// An `AlgorithmIdentifier` with the given parameters.
pub fn algorithm(oid: Oid, parameters: Option<Any>) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned { oid, parameters }
}

/// `DigestInfo` inside an RSASSA-PKCS1-v1_5 signature (RFC 8017 §9.2):
///
/// ```text
/// DigestInfo ::= SEQUENCE {
///     digestAlgorithm DigestAlgorithmIdentifier,
///     digest OCTET STRING }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct DigestInfo {
    pub algorithm: AlgorithmIdentifierOwned,
    pub digest: OctetString,
}
