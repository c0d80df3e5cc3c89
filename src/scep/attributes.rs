//! The signed attributes of a pkiMessage (RFC 8894 §3.2.1, Tables 1-2) and the CMS ones
//! every SignerInfo carries (RFC 5652 §11): reading them from a received message and
//! building them for one we send.
//!
//! ```text
//! messageType    ::= PrintableString  -- decimal, 2.16.840.1.113733.1.9.2
//! pkiStatus      ::= PrintableString  -- decimal, 2.16.840.1.113733.1.9.3
//! failInfo       ::= PrintableString  -- decimal, 2.16.840.1.113733.1.9.4
//! senderNonce    ::= OCTET STRING     -- 2.16.840.1.113733.1.9.5
//! recipientNonce ::= OCTET STRING     -- 2.16.840.1.113733.1.9.6
//! transactionID  ::= PrintableString  -- 2.16.840.1.113733.1.9.7
//! failInfoText   ::= UTF8String       -- 1.3.6.1.5.5.7.24.1
//! ```

use std::time::SystemTime;

use const_oid::ObjectIdentifier as Oid;
use der::asn1::{
    Any, Ia5StringRef, OctetString, PrintableStringRef, SetOfVec, UtcTime, Utf8StringRef,
};
use der::{Tag, Tagged};
use x509_cert::attr::Attribute;

use super::oids;

/// Longest transactionID we accept (RFC 8894 sets none; real ones are 16-44 characters).
pub const MAX_TRANSACTION_ID_CHARS: usize = 128;
/// senderNonce/recipientNonce bounds: RFC 8894 §3.2.1.5 asks for 16 bytes; accept 8..=64.
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 8..=64;
/// Longest failInfoText we read back (client side).
const MAX_FAIL_INFO_TEXT_BYTES: usize = 1024;

/// Why an attribute could not be read. The `&'static str` names the attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// The attribute is not there.
    #[error("missing signed attribute {0}")]
    Missing(&'static str),
    /// It is there more than once, or with other than exactly one value.
    #[error("ambiguous signed attribute {0}")]
    Ambiguous(&'static str),
    /// Its value has the wrong type, length or content.
    #[error("invalid signed attribute {0}")]
    Invalid(&'static str),
}

/// Read access to a list of signed attributes.
pub struct AttributeReader<'a> {
    attributes: &'a [Attribute],
}

impl<'a> AttributeReader<'a> {
    /// Wraps the attributes of one SignerInfo.
    pub fn new(attributes: &'a [Attribute]) -> Self {
        Self { attributes }
    }

    /// The single value of the attribute `oid`, or `None` if absent. An attribute that
    /// appears twice, or with several values, is refused: which one would count is exactly
    /// the kind of ambiguity an attacker exploits.
    pub fn optional(
        &self,
        oid: Oid,
        name: &'static str,
    ) -> Result<Option<&'a Any>, AttributeError> {
        let mut matching = self.attributes.iter().filter(|a| a.oid == oid);
        let Some(attribute) = matching.next() else {
            return Ok(None);
        };
        if matching.next().is_some() || attribute.values.len() != 1 {
            return Err(AttributeError::Ambiguous(name));
        }
        Ok(attribute.values.iter().next())
    }

    /// Like [`Self::optional`], but absence is an error.
    pub fn required(&self, oid: Oid, name: &'static str) -> Result<&'a Any, AttributeError> {
        self.optional(oid, name)?
            .ok_or(AttributeError::Missing(name))
    }

    /// `contentType` (RFC 5652 §11.1): an OBJECT IDENTIFIER.
    pub fn content_type(&self) -> Result<Oid, AttributeError> {
        const NAME: &str = "contentType";
        let value = self.required(oids::CONTENT_TYPE, NAME)?;
        value
            .decode_as::<Oid>()
            .map_err(|_| AttributeError::Invalid(NAME))
    }

    /// `messageDigest` (RFC 5652 §11.2): an OCTET STRING.
    pub fn message_digest(&self) -> Result<&'a [u8], AttributeError> {
        const NAME: &str = "messageDigest";
        octets(self.required(oids::MESSAGE_DIGEST, NAME)?, NAME)
    }

    /// `signingTime` (RFC 5652 §11.3): UTCTime or GeneralizedTime, if present.
    pub fn signing_time(&self) -> Result<Option<SystemTime>, AttributeError> {
        const NAME: &str = "signingTime";
        let Some(value) = self.optional(oids::SIGNING_TIME, NAME)? else {
            return Ok(None);
        };
        let time = super::wire::decode_any::<x509_cert::time::Time>(value)
            .map_err(|_| AttributeError::Invalid(NAME))?;
        Ok(Some(time.to_system_time()))
    }

    /// `messageType` as the decimal number it carries (the caller applies the allow-list).
    pub fn message_type_code(&self) -> Result<u32, AttributeError> {
        decimal(
            self.required(oids::MESSAGE_TYPE, "messageType")?,
            "messageType",
        )
    }

    /// `pkiStatus` as its decimal number.
    pub fn pki_status_code(&self) -> Result<u32, AttributeError> {
        decimal(self.required(oids::PKI_STATUS, "pkiStatus")?, "pkiStatus")
    }

    /// `failInfo` as its decimal number, if present.
    pub fn fail_info_code(&self) -> Result<Option<u32>, AttributeError> {
        self.optional(oids::FAIL_INFO, "failInfo")?
            .map(|value| decimal(value, "failInfo"))
            .transpose()
    }

    /// `failInfoText` (UTF8String), if present.
    pub fn fail_info_text(&self) -> Result<Option<String>, AttributeError> {
        const NAME: &str = "failInfoText";
        let Some(value) = self.optional(oids::FAIL_INFO_TEXT, NAME)? else {
            return Ok(None);
        };
        if value.value().len() > MAX_FAIL_INFO_TEXT_BYTES {
            return Err(AttributeError::Invalid(NAME));
        }
        text(value).map(Some).ok_or(AttributeError::Invalid(NAME))
    }

    /// `transactionID`: a PrintableString per RFC 8894 §3.2.1.1; UTF8String and IA5String
    /// are accepted too, because some clients use them. Non-empty, at most
    /// [`MAX_TRANSACTION_ID_CHARS`] characters, no control characters (it ends up in logs).
    pub fn transaction_id(&self) -> Result<String, AttributeError> {
        const NAME: &str = "transactionID";
        let value = self.required(oids::TRANSACTION_ID, NAME)?;
        let id = text(value).ok_or(AttributeError::Invalid(NAME))?;
        let chars = id.chars().count();
        if chars == 0 || chars > MAX_TRANSACTION_ID_CHARS || id.chars().any(char::is_control) {
            return Err(AttributeError::Invalid(NAME));
        }
        Ok(id)
    }

    /// `senderNonce`: an OCTET STRING of [`NONCE_LEN`] bytes.
    pub fn sender_nonce(&self) -> Result<Vec<u8>, AttributeError> {
        nonce(
            self.required(oids::SENDER_NONCE, "senderNonce")?,
            "senderNonce",
        )
    }

    /// `recipientNonce`: an OCTET STRING of [`NONCE_LEN`] bytes.
    pub fn recipient_nonce(&self) -> Result<Vec<u8>, AttributeError> {
        nonce(
            self.required(oids::RECIPIENT_NONCE, "recipientNonce")?,
            "recipientNonce",
        )
    }
}

fn octets<'a>(value: &'a Any, name: &'static str) -> Result<&'a [u8], AttributeError> {
    if value.tag() != Tag::OctetString {
        return Err(AttributeError::Invalid(name));
    }
    Ok(value.value())
}

fn nonce(value: &Any, name: &'static str) -> Result<Vec<u8>, AttributeError> {
    let bytes = octets(value, name)?;
    if !NONCE_LEN.contains(&bytes.len()) {
        return Err(AttributeError::Invalid(name));
    }
    Ok(bytes.to_vec())
}

/// A PrintableString, UTF8String or IA5String value as text.
fn text(value: &Any) -> Option<String> {
    let string = match value.tag() {
        Tag::PrintableString => PrintableStringRef::new(value.value()).ok()?.to_string(),
        Tag::Utf8String => Utf8StringRef::new(value.value()).ok()?.to_string(),
        Tag::Ia5String => Ia5StringRef::new(value.value()).ok()?.to_string(),
        _ => return None,
    };
    Some(string)
}

/// A decimal number carried as a PrintableString (messageType, pkiStatus, failInfo). Some
/// clients use other string types; accept those too, but only ASCII digits, at most 9.
fn decimal(value: &Any, name: &'static str) -> Result<u32, AttributeError> {
    let text = text(value).ok_or(AttributeError::Invalid(name))?;
    let digits_only =
        !text.is_empty() && text.len() <= 9 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only {
        return Err(AttributeError::Invalid(name));
    }
    text.parse().map_err(|_| AttributeError::Invalid(name))
}

/// Builds the signed attributes of a message we send. Attribute order does not matter here:
/// [`super::wire::RawAttributes::from_attributes`] puts them in DER order.
#[derive(Default)]
pub struct AttributeWriter {
    attributes: Vec<Attribute>,
}

impl AttributeWriter {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an attribute with a single value.
    pub fn push(&mut self, oid: Oid, value: Any) -> der::Result<&mut Self> {
        self.attributes.push(Attribute {
            oid,
            values: SetOfVec::try_from(vec![value])?,
        });
        Ok(self)
    }

    /// `contentType` (RFC 5652 §11.1).
    pub fn content_type(&mut self, content_type: Oid) -> der::Result<&mut Self> {
        self.push(oids::CONTENT_TYPE, Any::encode_from(&content_type)?)
    }

    /// `messageDigest` (RFC 5652 §11.2).
    pub fn message_digest(&mut self, digest: &[u8]) -> der::Result<&mut Self> {
        self.octets(oids::MESSAGE_DIGEST, digest)
    }

    /// `signingTime` (RFC 5652 §11.3): UTCTime through 2049, GeneralizedTime after, as the
    /// RFC requires.
    pub fn signing_time(&mut self, at: SystemTime) -> der::Result<&mut Self> {
        let value = match UtcTime::from_system_time(at) {
            Ok(utc) => Any::encode_from(&utc)?,
            Err(_) => Any::encode_from(&der::asn1::GeneralizedTime::from_system_time(at)?)?,
        };
        self.push(oids::SIGNING_TIME, value)
    }

    /// A decimal number as a PrintableString (messageType, pkiStatus, failInfo).
    pub fn decimal(&mut self, oid: Oid, number: u8) -> der::Result<&mut Self> {
        self.push(
            oid,
            Any::new(Tag::PrintableString, number.to_string().into_bytes())?,
        )
    }

    /// transactionID: a PrintableString when its characters allow (RFC 8894 §3.2.1.1),
    /// otherwise a UTF8String (only possible when echoing a lenient client's ID).
    pub fn transaction_id(&mut self, id: &str) -> der::Result<&mut Self> {
        let value = match PrintableStringRef::new(id) {
            Ok(printable) => Any::encode_from(&printable)?,
            Err(_) => Any::new(Tag::Utf8String, id.as_bytes().to_vec())?,
        };
        self.push(oids::TRANSACTION_ID, value)
    }

    /// An OCTET STRING attribute (nonces, messageDigest).
    pub fn octets(&mut self, oid: Oid, bytes: &[u8]) -> der::Result<&mut Self> {
        self.push(oid, Any::encode_from(&OctetString::new(bytes)?)?)
    }

    /// `failInfoText` (RFC 8894 §3.2.1.4): a UTF8String.
    pub fn fail_info_text(&mut self, text: &str) -> der::Result<&mut Self> {
        self.push(
            oids::FAIL_INFO_TEXT,
            Any::new(Tag::Utf8String, text.as_bytes().to_vec())?,
        )
    }

    /// The attributes collected so far.
    pub fn finish(self) -> Vec<Attribute> {
        self.attributes
    }
}
