//! A PKCS#10 certification request builder (RFC 2986) for scepd's own clients: the SCEP test
//! client, the bench's load generator and, later, the upstream-SCEP CA backend.
//!
//! The request carries what SCEP servers look at (RFC 8894 §3.3.1): the subject, the
//! challengePassword attribute (RFC 2985 §5.4.1) and an extensionRequest attribute
//! (RFC 2985 §5.4.2) with subjectAltName, keyUsage and extendedKeyUsage. For NDES
//! compatibility tests it can also carry Microsoft's enrollmentNameValuePair validity request
//! (MS-WCCE §2.2.2.7.10) and the SID extension that a server must drop.
//!
//! The structure is built with `x509-cert` types and signed through [`super::crypto::sign`],
//! so every private-key operation goes through openssl.

use std::net::IpAddr;
use std::str::FromStr;

use const_oid::db::rfc5280::{ID_CE_EXT_KEY_USAGE, ID_CE_KEY_USAGE, ID_CE_SUBJECT_ALT_NAME};
use const_oid::ObjectIdentifier;
use der::asn1::{
    Any, BitString, BmpString, Ia5String, OctetString, PrintableStringRef, SetOfVec, Utf8StringRef,
};
use der::{Decode, Encode, Sequence};
use openssl::pkey::{HasPrivate, HasPublic, Id, PKeyRef};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::{GeneralName, OtherName};
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

use super::crypto::{self, CryptoError, DigestAlg};
use super::oids;

/// Microsoft user principal name, an otherName form (MS-WCCE §2.2.2.7.7.4).
pub const UPN_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.3");
/// Microsoft `szOID_ENROLLMENT_NAME_VALUE_PAIR` request attribute (MS-WCCE §2.2.2.7.10).
pub const ENROLLMENT_NAME_VALUE_PAIR_OID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.13.2.1");
/// Microsoft `szOID_NTDS_CA_SECURITY_EXT`, the SID extension (MS-WCCE §2.2.2.7.7.4).
pub const NTDS_CA_SECURITY_EXT_OID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.25.2");
/// `szOID_NTDS_OBJECTSID`, the otherName inside the SID extension.
pub const NTDS_OBJECTSID_OID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.25.2.1");

/// PKCS#9 `pkcs-9-ub-challengePassword` (RFC 2985 App. A): the DirectoryString bound.
const CHALLENGE_PRINTABLE_MAX: usize = 255;

/// One subjectAltName entry (RFC 5280 §4.2.1.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// dNSName.
    Dns(String),
    /// rfc822Name.
    Email(String),
    /// otherName 1.3.6.1.4.1.311.20.2.3 holding a UTF8String (Microsoft UPN).
    Upn(String),
    /// uniformResourceIdentifier (Intune's strong-mapping SID URI is one of these).
    Uri(String),
    /// iPAddress: 4 or 16 octets.
    Ip(IpAddr),
}

/// What to put into a request.
#[derive(Debug, Clone)]
pub struct CsrSpec<'a> {
    /// The subject as an RFC 4514 string (`CN=device,O=Example`); empty for an empty name.
    pub subject: &'a str,
    /// subjectAltName entries; none means no extension.
    pub sans: &'a [San],
    /// PKCS#9 challengePassword: a PrintableString when its characters allow and it is at most
    /// 255 characters, otherwise a UTF8String (so that long or non-ASCII secrets still work).
    pub challenge: Option<&'a str>,
    /// keyUsage bit names as in RFC 5280 §4.2.1.3 (`digitalSignature`, `keyEncipherment`, ...),
    /// requested as a critical extension.
    pub key_usage: Option<Vec<&'a str>>,
    /// extendedKeyUsage purposes (RFC 5280 §4.2.1.12); empty means no extension.
    pub extended_key_usage: Vec<ObjectIdentifier>,
    /// The digest the request is signed with.
    pub digest: DigestAlg,
    /// Microsoft validity request: (`ValidityPeriod` unit such as `Days` or `Years`,
    /// `ValidityPeriodUnits`), sent as two enrollmentNameValuePair attributes.
    pub validity_request: Option<(&'a str, u32)>,
    /// A SID string for the Microsoft SID extension, for tests that check a server drops it.
    pub sid_extension: Option<&'a str>,
}

impl Default for CsrSpec<'_> {
    fn default() -> Self {
        Self {
            subject: "",
            sans: &[],
            challenge: None,
            key_usage: None,
            extended_key_usage: Vec::new(),
            digest: DigestAlg::Sha256,
            validity_request: None,
            sid_extension: None,
        }
    }
}

/// Why a request could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The subject is not an RFC 4514 string x509-cert can parse.
    #[error("subject is not a valid RFC 4514 distinguished name")]
    Subject(#[source] der::Error),
    /// A keyUsage name not in RFC 5280 §4.2.1.3.
    #[error("unknown keyUsage name {0:?}")]
    UnknownKeyUsage(String),
    /// A SAN value the name form cannot hold (IA5String names must be ASCII).
    #[error("subjectAltName {0} is not valid for its name form")]
    San(&'static str),
    /// The key is neither RSA nor EC.
    #[error("unsupported key type")]
    UnsupportedKey,
    /// A structure failed to encode.
    #[error("DER encoding failed")]
    Encoding(#[from] der::Error),
    /// Signing or key export failed.
    #[error("signing failed")]
    Crypto(#[from] CryptoError),
    /// openssl refused to export the public key.
    #[error("public key export failed")]
    Openssl(#[from] openssl::error::ErrorStack),
}

/// Builds and signs a DER-encoded PKCS#10 request (RFC 2986 §4):
///
/// ```text
/// CertificationRequest ::= SEQUENCE {
///     certificationRequestInfo CertificationRequestInfo,
///     signatureAlgorithm       AlgorithmIdentifier,
///     signature                BIT STRING }
/// ```
///
/// The key is RSA (signed with PKCS#1 v1.5) or EC (ECDSA).
pub fn build_csr<T: HasPrivate + HasPublic>(
    key: &PKeyRef<T>,
    spec: &CsrSpec<'_>,
) -> Result<Vec<u8>, CsrError> {
    // First, so that an unsupported key type is reported as such rather than as a failed
    // signature.
    let algorithm = signature_algorithm(key, spec.digest)?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: parse_subject(spec.subject)?,
        public_key: SubjectPublicKeyInfoOwned::from_der(&key.public_key_to_der()?)?,
        attributes: request_attributes(spec)?,
    };
    let signature = crypto::sign(key, spec.digest, &info.to_der()?)?;
    let request = CertReq {
        info,
        algorithm,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(request.to_der()?)
}

fn parse_subject(subject: &str) -> Result<Name, CsrError> {
    if subject.trim().is_empty() {
        return Ok(Name::default());
    }
    Name::from_str(subject).map_err(CsrError::Subject)
}

/// sha*WithRSAEncryption takes NULL parameters (RFC 4055 §5); ecdsa-with-SHA* takes none
/// (RFC 5758 §3.2).
fn signature_algorithm<T: HasPublic>(
    key: &PKeyRef<T>,
    digest: DigestAlg,
) -> Result<AlgorithmIdentifierOwned, CsrError> {
    let oid = digest
        .signature_oid(key)
        .map_err(|_| CsrError::UnsupportedKey)?;
    let parameters = match key.id() {
        Id::RSA => Some(Any::from(der::asn1::Null)),
        _ => None,
    };
    Ok(AlgorithmIdentifierOwned { oid, parameters })
}

/// The `[0] Attributes` of the request. `SetOfVec` keeps them in DER order; RFC 2986 sets no
/// other order (servers that care about it are wrong, see scep-protocol.md §2.8).
fn request_attributes(spec: &CsrSpec<'_>) -> Result<SetOfVec<Attribute>, CsrError> {
    let mut attributes = SetOfVec::new();
    if let Some(challenge) = spec.challenge {
        attributes.insert(single_value_attribute(
            oids::CHALLENGE_PASSWORD,
            challenge_value(challenge)?,
        )?)?;
    }
    let extensions = requested_extensions(spec)?;
    if !extensions.is_empty() {
        attributes.insert(Attribute::try_from(ExtensionReq(extensions))?)?;
    }
    if let Some((unit, count)) = spec.validity_request {
        attributes.insert(name_value_pair("ValidityPeriod", unit)?)?;
        attributes.insert(name_value_pair("ValidityPeriodUnits", &count.to_string())?)?;
    }
    Ok(attributes)
}

fn single_value_attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, CsrError> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}

/// challengePassword is a DirectoryString (RFC 2985 §5.4.1). PrintableString is what most
/// clients send; UTF8String carries anything else, including the long signed challenges
/// some deployments use, which exceed the 255-character bound.
fn challenge_value(challenge: &str) -> Result<Any, CsrError> {
    if challenge.chars().count() <= CHALLENGE_PRINTABLE_MAX {
        if let Ok(printable) = PrintableStringRef::new(challenge) {
            return Ok(Any::encode_from(&printable)?);
        }
    }
    Ok(Any::encode_from(&Utf8StringRef::new(challenge)?)?)
}

/// ```text
/// EnrollmentNameValuePair ::= SEQUENCE { name BMPString, value BMPString }
/// ```
/// (MS-WCCE §2.2.2.7.10), one attribute per pair.
#[derive(Sequence)]
struct EnrollmentNameValuePair {
    name: BmpString,
    value: BmpString,
}

fn name_value_pair(name: &str, value: &str) -> Result<Attribute, CsrError> {
    let pair = EnrollmentNameValuePair {
        name: BmpString::from_utf8(name)?,
        value: BmpString::from_utf8(value)?,
    };
    single_value_attribute(ENROLLMENT_NAME_VALUE_PAIR_OID, Any::encode_from(&pair)?)
}

/// The extensions for the extensionRequest attribute, in a fixed order.
fn requested_extensions(spec: &CsrSpec<'_>) -> Result<Vec<Extension>, CsrError> {
    let mut extensions = Vec::new();
    if !spec.sans.is_empty() {
        let names = spec
            .sans
            .iter()
            .map(general_name)
            .collect::<Result<Vec<_>, _>>()?;
        // RFC 5280 §4.2.1.6: with an empty subject the SAN extension must be critical.
        let critical = spec.subject.trim().is_empty();
        extensions.push(extension(
            ID_CE_SUBJECT_ALT_NAME,
            critical,
            &SubjectAltName(names),
        )?);
    }
    if let Some(names) = &spec.key_usage {
        extensions.push(extension(ID_CE_KEY_USAGE, true, &key_usage(names)?)?);
    }
    if !spec.extended_key_usage.is_empty() {
        let usages = ExtendedKeyUsage(spec.extended_key_usage.clone());
        extensions.push(extension(ID_CE_EXT_KEY_USAGE, false, &usages)?);
    }
    if let Some(sid) = spec.sid_extension {
        extensions.push(extension(
            NTDS_CA_SECURITY_EXT_OID,
            false,
            &sid_general_names(sid)?,
        )?);
    }
    Ok(extensions)
}

fn extension(
    extn_id: ObjectIdentifier,
    critical: bool,
    value: &impl Encode,
) -> Result<Extension, CsrError> {
    Ok(Extension {
        extn_id,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

fn general_name(san: &San) -> Result<GeneralName, CsrError> {
    let ia5 =
        |text: &str, form: &'static str| Ia5String::new(text).map_err(|_| CsrError::San(form));
    Ok(match san {
        San::Dns(name) => GeneralName::DnsName(ia5(name, "dNSName")?),
        San::Email(address) => GeneralName::Rfc822Name(ia5(address, "rfc822Name")?),
        San::Uri(uri) => {
            GeneralName::UniformResourceIdentifier(ia5(uri, "uniformResourceIdentifier")?)
        }
        San::Ip(IpAddr::V4(v4)) => GeneralName::IpAddress(OctetString::new(v4.octets().to_vec())?),
        San::Ip(IpAddr::V6(v6)) => GeneralName::IpAddress(OctetString::new(v6.octets().to_vec())?),
        San::Upn(upn) => GeneralName::OtherName(OtherName {
            type_id: UPN_OID,
            value: Any::encode_from(&Utf8StringRef::new(upn)?)?,
        }),
    })
}

/// The SID extension as AD CS writes it: GeneralNames with one otherName
/// `szOID_NTDS_OBJECTSID` holding the SID string as an OCTET STRING.
fn sid_general_names(sid: &str) -> Result<Vec<GeneralName>, CsrError> {
    let value = Any::encode_from(&OctetString::new(sid.as_bytes().to_vec())?)?;
    Ok(vec![GeneralName::OtherName(OtherName {
        type_id: NTDS_OBJECTSID_OID,
        value,
    })])
}

/// Maps RFC 5280 §4.2.1.3 bit names (case-insensitive; `contentCommitment` is the newer name
/// of `nonRepudiation`) to a KeyUsage.
fn key_usage(names: &[&str]) -> Result<KeyUsage, CsrError> {
    let mut usages = der::flagset::FlagSet::<KeyUsages>::default();
    for name in names {
        usages |=
            key_usage_bit(name).ok_or_else(|| CsrError::UnknownKeyUsage((*name).to_owned()))?;
    }
    Ok(KeyUsage(usages))
}

fn key_usage_bit(name: &str) -> Option<KeyUsages> {
    const BITS: [(&str, KeyUsages); 10] = [
        ("digitalSignature", KeyUsages::DigitalSignature),
        ("nonRepudiation", KeyUsages::NonRepudiation),
        ("contentCommitment", KeyUsages::NonRepudiation),
        ("keyEncipherment", KeyUsages::KeyEncipherment),
        ("dataEncipherment", KeyUsages::DataEncipherment),
        ("keyAgreement", KeyUsages::KeyAgreement),
        ("keyCertSign", KeyUsages::KeyCertSign),
        ("cRLSign", KeyUsages::CRLSign),
        ("encipherOnly", KeyUsages::EncipherOnly),
        ("decipherOnly", KeyUsages::DecipherOnly),
    ];
    BITS.iter()
        .find(|(bit_name, _)| bit_name.eq_ignore_ascii_case(name))
        .map(|(_, bit)| *bit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::{Tag, Tagged};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::rsa::Rsa;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::Command;

    const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

    fn rsa_2048() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    fn ec_key(curve: Nid) -> PKey<Private> {
        let group = EcGroup::from_curve_name(curve).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    fn every_san() -> Vec<San> {
        vec![
            San::Dns("device.example.com".into()),
            San::Email("user@example.com".into()),
            San::Upn("user@corp.example".into()),
            San::Uri("tag:microsoft.com,2022-09-14:sid:S-1-5-21-1-2-3-1001".into()),
            San::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
            San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]
    }

    /// `openssl req -verify -noout -text` on the DER request: (verified, text).
    fn openssl_req_text(der: &[u8]) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("request.der");
        std::fs::write(&path, der).unwrap();
        let output = Command::new("openssl")
            .args(["req", "-inform", "DER", "-verify", "-noout", "-text", "-in"])
            .arg(&path)
            .output()
            .expect("openssl CLI");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success() && text.contains("verify OK"), text)
    }

    fn attribute_values(der: &[u8], oid: ObjectIdentifier) -> Vec<Any> {
        let request = CertReq::from_der(der).unwrap();
        request
            .info
            .attributes
            .iter()
            .filter(|a| a.oid == oid)
            .flat_map(|a| a.values.iter().cloned())
            .collect()
    }

    #[test]
    fn openssl_verifies_a_full_request_with_every_key_type() {
        let sans = every_san();
        let keys = [
            ("RSA", rsa_2048()),
            ("P-256", ec_key(Nid::X9_62_PRIME256V1)),
            ("P-384", ec_key(Nid::SECP384R1)),
        ];
        for (label, key) in keys {
            let spec = CsrSpec {
                subject: "CN=device-42,OU=Fleet,O=Example Org,C=DE",
                sans: &sans,
                challenge: Some("secret challenge"),
                key_usage: Some(vec!["digitalSignature", "keyEncipherment"]),
                extended_key_usage: vec![CLIENT_AUTH],
                digest: DigestAlg::Sha256,
                ..CsrSpec::default()
            };
            let der = build_csr(&key, &spec).unwrap();
            let (verified, text) = openssl_req_text(&der);
            assert!(verified, "{label}: {text}");
            for expected in [
                "Subject: C = DE, O = Example Org, OU = Fleet, CN = device-42",
                "DNS:device.example.com",
                "email:user@example.com",
                "user@corp.example",
                "URI:tag:microsoft.com,2022-09-14:sid:S-1-5-21-1-2-3-1001",
                "IP Address:192.0.2.7",
                "IP Address:0:0:0:0:0:0:0:1",
                "challengePassword",
                "secret challenge",
                "X509v3 Key Usage: critical",
                "Digital Signature, Key Encipherment",
                "TLS Web Client Authentication",
            ] {
                assert!(
                    text.contains(expected),
                    "{label}: missing {expected:?} in\n{text}"
                );
            }
        }
    }

    #[test]
    fn every_digest_signs_a_request_openssl_accepts() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        for digest in DigestAlg::ALL {
            let spec = CsrSpec {
                subject: "CN=digest",
                digest,
                ..CsrSpec::default()
            };
            let der = build_csr(&key, &spec).unwrap();
            assert!(openssl_req_text(&der).0, "{digest:?}");
            let request = CertReq::from_der(&der).unwrap();
            assert_eq!(request.algorithm.oid, digest.signature_oid(&key).unwrap());
            assert!(
                request.algorithm.parameters.is_none(),
                "ECDSA takes no parameters"
            );
        }
        let rsa = rsa_2048();
        let der = build_csr(
            &rsa,
            &CsrSpec {
                subject: "CN=rsa",
                ..CsrSpec::default()
            },
        )
        .unwrap();
        let parameters = CertReq::from_der(&der).unwrap().algorithm.parameters;
        assert_eq!(
            parameters.map(|p| p.tag()),
            Some(Tag::Null),
            "RSA takes NULL parameters"
        );
    }

    #[test]
    fn challenge_is_printable_when_it_can_be_and_utf8_otherwise() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let cases = [
            ("Plain Secret 123", Tag::PrintableString),
            ("under_score@example", Tag::Utf8String),
            ("pässwört", Tag::Utf8String),
            (&*"a".repeat(255), Tag::PrintableString),
            (&*"a".repeat(256), Tag::Utf8String),
        ];
        for (challenge, tag) in cases {
            let der = build_csr(
                &key,
                &CsrSpec {
                    challenge: Some(challenge),
                    ..CsrSpec::default()
                },
            )
            .unwrap();
            let values = attribute_values(&der, oids::CHALLENGE_PASSWORD);
            assert_eq!(values.len(), 1);
            assert_eq!(values[0].tag(), tag, "{challenge:.20}");
            assert_eq!(values[0].value(), challenge.as_bytes());
        }
    }

    #[test]
    fn a_40_kib_challenge_works() {
        let key = rsa_2048();
        let challenge: String = (0..40 * 1024)
            .map(|i| char::from(b'A' + (i % 26) as u8))
            .collect();
        let spec = CsrSpec {
            subject: "CN=long challenge",
            challenge: Some(&challenge),
            ..CsrSpec::default()
        };
        let der = build_csr(&key, &spec).unwrap();
        let (verified, text) = openssl_req_text(&der);
        assert!(verified, "{text:.2000}");
        let values = attribute_values(&der, oids::CHALLENGE_PASSWORD);
        assert_eq!(values[0].tag(), Tag::Utf8String);
        assert_eq!(values[0].value(), challenge.as_bytes());
    }

    #[test]
    fn validity_request_is_two_bmpstring_name_value_pairs() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let spec = CsrSpec {
            subject: "CN=validity",
            validity_request: Some(("Years", 2)),
            ..CsrSpec::default()
        };
        let der = build_csr(&key, &spec).unwrap();
        assert!(openssl_req_text(&der).0);
        let mut pairs: Vec<(String, String)> =
            attribute_values(&der, ENROLLMENT_NAME_VALUE_PAIR_OID)
                .iter()
                .map(|value| {
                    let pair = EnrollmentNameValuePair::from_der(&value.to_der().unwrap()).unwrap();
                    (pair.name.to_string(), pair.value.to_string())
                })
                .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("ValidityPeriod".into(), "Years".into()),
                ("ValidityPeriodUnits".into(), "2".into())
            ]
        );
    }

    #[test]
    fn sid_extension_is_requested_when_asked() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let spec = CsrSpec {
            subject: "CN=sid",
            sid_extension: Some("S-1-5-21-1-2-3-500"),
            ..CsrSpec::default()
        };
        let der = build_csr(&key, &spec).unwrap();
        let (verified, text) = openssl_req_text(&der);
        assert!(verified && text.contains("1.3.6.1.4.1.311.25.2"), "{text}");
        let extension_request = attribute_values(&der, const_oid::db::rfc5912::ID_EXTENSION_REQ);
        let extensions =
            Vec::<Extension>::from_der(&extension_request[0].to_der().unwrap()).unwrap();
        assert_eq!(extensions.len(), 1);
        assert_eq!(extensions[0].extn_id, NTDS_CA_SECURITY_EXT_OID);
        let names = Vec::<GeneralName>::from_der(extensions[0].extn_value.as_bytes()).unwrap();
        let GeneralName::OtherName(other) = &names[0] else {
            panic!("not an otherName")
        };
        assert_eq!(other.type_id, NTDS_OBJECTSID_OID);
        assert_eq!(
            OctetString::from_der(&other.value.to_der().unwrap())
                .unwrap()
                .as_bytes(),
            b"S-1-5-21-1-2-3-500"
        );
    }

    #[test]
    fn minimal_request_has_no_attributes_and_an_empty_subject_makes_the_san_critical() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let der = build_csr(&key, &CsrSpec::default()).unwrap();
        assert!(CertReq::from_der(&der).unwrap().info.attributes.is_empty());
        assert!(openssl_req_text(&der).0);

        let sans = [San::Dns("only-a-san.example".into())];
        let der = build_csr(
            &key,
            &CsrSpec {
                sans: &sans,
                ..CsrSpec::default()
            },
        )
        .unwrap();
        let (verified, text) = openssl_req_text(&der);
        assert!(
            verified && text.contains("X509v3 Subject Alternative Name: critical"),
            "{text}"
        );
    }

    #[test]
    fn bad_input_gives_errors_not_panics() {
        let key = ec_key(Nid::X9_62_PRIME256V1);
        let unknown_usage = CsrSpec {
            key_usage: Some(vec!["signEverything"]),
            ..CsrSpec::default()
        };
        assert!(
            matches!(build_csr(&key, &unknown_usage), Err(CsrError::UnknownKeyUsage(name)) if name == "signEverything")
        );
        let sans = [San::Dns("bücher.example".into())];
        assert!(matches!(
            build_csr(
                &key,
                &CsrSpec {
                    sans: &sans,
                    ..CsrSpec::default()
                }
            ),
            Err(CsrError::San("dNSName"))
        ));
        assert!(matches!(
            build_csr(
                &key,
                &CsrSpec {
                    subject: "not a dn",
                    ..CsrSpec::default()
                }
            ),
            Err(CsrError::Subject(_))
        ));
        let ed25519 = PKey::generate_ed25519().unwrap();
        assert!(matches!(
            build_csr(&ed25519, &CsrSpec::default()),
            Err(CsrError::UnsupportedKey)
        ));
    }
}
