//! Extraction of the PKCS#9 challengePassword from a PKCS#10 request.
//!
//! RFC 2985 section 5.4.1:
//! ```text
//! challengePassword ATTRIBUTE ::= {
//!     WITH SYNTAX DirectoryString {pkcs-9-ub-challengePassword}
//!     EQUALITY MATCHING RULE caseExactMatch
//!     SINGLE VALUE TRUE
//!     ID pkcs-9-at-challengePassword }
//! DirectoryString ::= CHOICE { teletexString TeletexString, printableString PrintableString,
//!     bmpString BMPString, universalString UniversalString, uTF8String UTF8String }
//! ```
//! RFC 8894 section 2.2 carries the SCEP challenge in it. IA5String is also accepted, because
//! some clients send it; UniversalString is not (no client is known to send it).
//! The value may be tens of kilobytes (Intune challenge blobs): no length limit is applied here,
//! the bound is the size of the request the RA accepted.

use const_oid::ObjectIdentifier;
use der::asn1::{Ia5StringRef, PrintableStringRef};
use der::{Any, Tag, Tagged};
use x509_cert::request::CertReq;

/// `pkcs-9-at-challengePassword` (1.2.840.113549.1.9.7), RFC 2985 section 5.4.1.
pub const CHALLENGE_PASSWORD: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.7");

/// Why the challengePassword attribute of a CSR could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// The attribute appears more than once.
    #[error("challengePassword attribute appears more than once")]
    RepeatedAttribute,
    /// The attribute has no value, or more than one (it is SINGLE VALUE).
    #[error("challengePassword attribute has {0} values, expected exactly one")]
    ValueCount(usize),
    /// The value is not one of the accepted string types.
    #[error("challengePassword has unsupported type {0}")]
    UnsupportedType(Tag),
    /// The value's bytes are not valid for its string type.
    #[error("challengePassword is not a valid {0}")]
    InvalidString(Tag),
}

/// The challengePassword of `csr`, or `None` when the CSR has none.
pub fn challenge_password(csr: &CertReq) -> Result<Option<String>, ChallengeError> {
    let mut found = csr
        .info
        .attributes
        .iter()
        .filter(|a| a.oid == CHALLENGE_PASSWORD);
    let Some(attribute) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(ChallengeError::RepeatedAttribute);
    }
    let values = attribute.values.as_slice();
    match values {
        [value] => directory_string(value).map(Some),
        _ => Err(ChallengeError::ValueCount(values.len())),
    }
}

/// Decode a DirectoryString (plus IA5String) to a Rust string.
fn directory_string(value: &Any) -> Result<String, ChallengeError> {
    let tag = value.tag();
    let bytes = value.value();
    let invalid = || ChallengeError::InvalidString(tag);
    match tag {
        Tag::Utf8String => std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| invalid()),
        Tag::PrintableString => PrintableStringRef::new(bytes)
            .map(|s| s.as_str().to_owned())
            .map_err(|_| invalid()),
        Tag::Ia5String => Ia5StringRef::new(bytes)
            .map(|s| s.as_str().to_owned())
            .map_err(|_| invalid()),
        // T.61 in theory; in practice every client that sends it means Latin-1.
        Tag::TeletexString => Ok(latin1(bytes)),
        Tag::BmpString => ucs2_big_endian(bytes).ok_or_else(invalid),
        other => Err(ChallengeError::UnsupportedType(other)),
    }
}

/// Latin-1 maps each byte to the code point of the same value.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// BMPString: UCS-2, big-endian, two bytes per character, no surrogates.
fn ucs2_big_endian(bytes: &[u8]) -> Option<String> {
    let units = bytes.chunks_exact(2);
    if !units.remainder().is_empty() {
        return None;
    }
    units
        .map(|unit| {
            let unit: [u8; 2] = unit.try_into().ok()?;
            char::from_u32(u32::from(u16::from_be_bytes(unit)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::fixture_csr;
    use der::asn1::SetOfVec;
    use x509_cert::attr::Attribute;

    fn challenge_of(name: &str) -> Result<Option<String>, ChallengeError> {
        let (_, csr) = fixture_csr(name);
        challenge_password(&csr)
    }

    /// `csr` with its attributes replaced by one challengePassword holding `values`.
    fn with_challenge_values(values: Vec<Any>) -> CertReq {
        let (_, mut csr) = fixture_csr("csr-no-challenge.der");
        let attribute = Attribute {
            oid: CHALLENGE_PASSWORD,
            values: SetOfVec::try_from(values).expect("set of values"),
        };
        csr.info.attributes = SetOfVec::try_from(vec![attribute]).expect("set of attributes");
        csr
    }

    fn with_challenge(tag: Tag, bytes: &[u8]) -> CertReq {
        with_challenge_values(vec![Any::new(tag, bytes).expect("any")])
    }

    #[test]
    fn no_attribute_means_no_challenge() {
        assert_eq!(challenge_of("csr-no-challenge.der"), Ok(None));
    }

    #[test]
    fn reads_printable_string_from_openssl() {
        assert_eq!(
            challenge_of("csr-challenge-printable.der"),
            Ok(Some("s3cret-Printable".into()))
        );
    }

    #[test]
    fn reads_utf8_string_from_openssl() {
        assert_eq!(
            challenge_of("csr-challenge-utf8.der"),
            Ok(Some("pässwörd".into()))
        );
    }

    #[test]
    fn reads_bmp_string_from_openssl() {
        assert_eq!(
            challenge_of("csr-challenge-bmp.der"),
            Ok(Some("pässwörd".into()))
        );
    }

    #[test]
    fn reads_teletex_string_as_latin1_from_openssl() {
        assert_eq!(
            challenge_of("csr-challenge-teletex.der"),
            Ok(Some("pässwörd".into()))
        );
    }

    #[test]
    fn reads_a_challenge_as_long_as_an_intune_blob() {
        let challenge = challenge_of("csr-challenge-long.der").unwrap().unwrap();
        assert_eq!(challenge.len(), 30_000);
        assert!(challenge.bytes().all(|b| b == b'A'));
    }

    #[test]
    fn reads_ia5_string() {
        let csr = with_challenge(Tag::Ia5String, b"ia5-secret");
        assert_eq!(challenge_password(&csr), Ok(Some("ia5-secret".into())));
    }

    #[test]
    fn reads_a_64_kib_value_built_in_memory() {
        let long = vec![b'x'; 64 * 1024];
        let csr = with_challenge(Tag::Utf8String, &long);
        assert_eq!(challenge_password(&csr).unwrap().unwrap().len(), long.len());
    }

    #[test]
    fn refuses_invalid_utf8() {
        let csr = with_challenge(Tag::Utf8String, &[0xff, 0xfe]);
        assert_eq!(
            challenge_password(&csr),
            Err(ChallengeError::InvalidString(Tag::Utf8String))
        );
    }

    #[test]
    fn refuses_printable_string_with_forbidden_characters() {
        let csr = with_challenge(Tag::PrintableString, b"no@here");
        assert_eq!(
            challenge_password(&csr),
            Err(ChallengeError::InvalidString(Tag::PrintableString))
        );
    }

    #[test]
    fn refuses_odd_length_bmp_string() {
        let csr = with_challenge(Tag::BmpString, &[0x00, 0x41, 0x00]);
        assert_eq!(
            challenge_password(&csr),
            Err(ChallengeError::InvalidString(Tag::BmpString))
        );
    }

    #[test]
    fn refuses_bmp_string_with_a_lone_surrogate() {
        let csr = with_challenge(Tag::BmpString, &[0xd8, 0x00]);
        assert_eq!(
            challenge_password(&csr),
            Err(ChallengeError::InvalidString(Tag::BmpString))
        );
    }

    #[test]
    fn refuses_non_string_types() {
        let csr = with_challenge(Tag::OctetString, b"secret");
        assert_eq!(
            challenge_password(&csr),
            Err(ChallengeError::UnsupportedType(Tag::OctetString))
        );
    }

    #[test]
    fn refuses_several_values() {
        let values = vec![
            Any::new(Tag::Utf8String, b"one".as_slice()).unwrap(),
            Any::new(Tag::Utf8String, b"two".as_slice()).unwrap(),
        ];
        let csr = with_challenge_values(values);
        assert_eq!(challenge_password(&csr), Err(ChallengeError::ValueCount(2)));
    }

    #[test]
    fn refuses_an_empty_value_set() {
        let csr = with_challenge_values(vec![]);
        assert_eq!(challenge_password(&csr), Err(ChallengeError::ValueCount(0)));
    }

    #[test]
    fn refuses_a_repeated_attribute() {
        let (_, mut csr) = fixture_csr("csr-no-challenge.der");
        let attribute = |v: &[u8]| Attribute {
            oid: CHALLENGE_PASSWORD,
            values: SetOfVec::try_from(vec![Any::new(Tag::Utf8String, v).unwrap()]).unwrap(),
        };
        // SetOfVec refuses duplicates but not two attributes with the same OID and different
        // values, which is exactly what a hostile CSR can carry.
        csr.info.attributes =
            SetOfVec::try_from(vec![attribute(b"one"), attribute(b"two")]).unwrap();
        assert_eq!(
            challenge_password(&csr),
            Err(ChallengeError::RepeatedAttribute)
        );
    }

    #[test]
    fn ignores_other_attributes() {
        let (_, mut csr) = fixture_csr("csr-challenge-printable.der");
        let other = Attribute {
            oid: ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14"),
            values: SetOfVec::try_from(vec![Any::new(Tag::Sequence, &[][..]).unwrap()]).unwrap(),
        };
        let mut all: Vec<_> = csr.info.attributes.iter().cloned().collect();
        all.push(other);
        csr.info.attributes = SetOfVec::try_from(all).unwrap();
        assert_eq!(
            challenge_password(&csr),
            Ok(Some("s3cret-Printable".into()))
        );
    }
}
