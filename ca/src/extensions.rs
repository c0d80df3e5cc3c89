//! Certificate and CRL extensions (RFC 5280 §4.2, §5.2), built from `x509-cert` types.

use der::asn1::{Ia5String, OctetString};
use der::Encode;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;

use crate::CaError;

/// Object identifiers this crate uses that are not (all) in `const-oid`'s database.
pub(crate) mod oid {
    use const_oid::ObjectIdentifier;

    pub use const_oid::db::rfc5280::{
        ID_AD_CA_ISSUERS, ID_AD_OCSP, ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_BASIC_CONSTRAINTS,
        ID_CE_CRL_DISTRIBUTION_POINTS, ID_CE_CRL_NUMBER, ID_CE_CRL_REASONS, ID_CE_EXT_KEY_USAGE,
        ID_CE_KEY_USAGE, ID_CE_SUBJECT_ALT_NAME, ID_CE_SUBJECT_KEY_IDENTIFIER,
        ID_PE_AUTHORITY_INFO_ACCESS,
    };

    /// id-kp-clientAuth (RFC 5280 §4.2.1.12).
    pub const KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
    /// id-kp-serverAuth.
    pub const KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
    /// id-kp-codeSigning.
    pub const KP_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
    /// id-kp-emailProtection.
    pub const KP_EMAIL_PROTECTION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
    /// id-kp-ipsecIKE (RFC 4945).
    pub const KP_IPSEC_IKE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.17");
    /// Microsoft smart card logon.
    pub const KP_SMARTCARD_LOGON: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.2");
    /// Microsoft Certificate Request Agent (the EKU of NDES's RA certificates).
    pub const KP_CERTIFICATE_REQUEST_AGENT: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.1");
    /// Microsoft UPN otherName type (szOID_NT_PRINCIPAL_NAME).
    pub const MS_UPN: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.3");
    /// Microsoft NTDS CA security extension carrying the object SID (strong mapping).
    pub const MS_SID_EXTENSION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.25.2");
    /// Microsoft enrollmentNameValuePair request attribute.
    pub const MS_ENROLLMENT_NAME_VALUE_PAIR: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.13.2.1");
    /// Microsoft's legacy certificate-extensions request attribute (szOID_CERT_EXTENSIONS).
    pub const MS_CERT_EXTENSIONS: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.14");
    /// PKCS#9 extensionRequest (RFC 2985 §5.4.2).
    pub const EXTENSION_REQUEST: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
}

/// Wraps a DER-encodable value as an extension.
pub(crate) fn extension(
    extn_id: const_oid::ObjectIdentifier,
    critical: bool,
    value: &impl Encode,
) -> Result<Extension, CaError> {
    Ok(Extension {
        extn_id,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// basicConstraints (RFC 5280 §4.2.1.9), always critical.
pub(crate) fn basic_constraints(ca: bool) -> Result<Extension, CaError> {
    let value = BasicConstraints {
        ca,
        path_len_constraint: None,
    };
    extension(oid::ID_CE_BASIC_CONSTRAINTS, true, &value)
}

/// keyUsage (RFC 5280 §4.2.1.3), critical as the RFC recommends.
pub(crate) fn key_usage(usage: KeyUsage) -> Result<Extension, CaError> {
    extension(oid::ID_CE_KEY_USAGE, true, &usage)
}

/// extKeyUsage (RFC 5280 §4.2.1.12), non-critical; none for an empty list.
pub(crate) fn extended_key_usage(
    purposes: &[const_oid::ObjectIdentifier],
) -> Result<Option<Extension>, CaError> {
    if purposes.is_empty() {
        return Ok(None);
    }
    let value = ExtendedKeyUsage(purposes.to_vec());
    extension(oid::ID_CE_EXT_KEY_USAGE, false, &value).map(Some)
}

/// The key identifier of RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits.
pub(crate) fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    openssl::sha::sha1(spki.subject_public_key.raw_bytes()).to_vec()
}

/// subjectKeyIdentifier (RFC 5280 §4.2.1.2).
pub(crate) fn subject_key_identifier(
    spki: &SubjectPublicKeyInfoOwned,
) -> Result<Extension, CaError> {
    let value = SubjectKeyIdentifier(OctetString::new(key_identifier(spki))?);
    extension(oid::ID_CE_SUBJECT_KEY_IDENTIFIER, false, &value)
}

/// authorityKeyIdentifier (RFC 5280 §4.2.1.1 and §5.2.1) with keyIdentifier only.
pub(crate) fn authority_key_identifier(key_id: &[u8]) -> Result<Extension, CaError> {
    let value = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(key_id)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    extension(oid::ID_CE_AUTHORITY_KEY_IDENTIFIER, false, &value)
}

/// subjectAltName (RFC 5280 §4.2.1.6) from names we built ourselves (certgen).
pub(crate) fn subject_alt_name(names: Vec<GeneralName>) -> Result<Extension, CaError> {
    extension(oid::ID_CE_SUBJECT_ALT_NAME, false, &SubjectAltName(names))
}

fn uri(url: &str) -> Result<GeneralName, CaError> {
    Ok(GeneralName::UniformResourceIdentifier(Ia5String::new(url)?))
}

/// cRLDistributionPoints (RFC 5280 §4.2.1.13): one point per URL, full names only.
pub(crate) fn crl_distribution_points(urls: &[String]) -> Result<Option<Extension>, CaError> {
    if urls.is_empty() {
        return Ok(None);
    }
    let points = urls
        .iter()
        .map(|url| {
            Ok(DistributionPoint {
                distribution_point: Some(DistributionPointName::FullName(vec![uri(url)?])),
                reasons: None,
                crl_issuer: None,
            })
        })
        .collect::<Result<Vec<_>, CaError>>()?;
    extension(
        oid::ID_CE_CRL_DISTRIBUTION_POINTS,
        false,
        &CrlDistributionPoints(points),
    )
    .map(Some)
}

/// authorityInfoAccess (RFC 5280 §4.2.2.1): OCSP responders, then caIssuers.
pub(crate) fn authority_info_access(
    ocsp_urls: &[String],
    ca_issuers_urls: &[String],
) -> Result<Option<Extension>, CaError> {
    let described = |method, urls: &[String]| {
        urls.iter()
            .map(|url| {
                Ok(AccessDescription {
                    access_method: method,
                    access_location: uri(url)?,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()
    };
    let mut descriptions = described(oid::ID_AD_OCSP, ocsp_urls)?;
    descriptions.extend(described(oid::ID_AD_CA_ISSUERS, ca_issuers_urls)?);
    if descriptions.is_empty() {
        return Ok(None);
    }
    extension(
        oid::ID_PE_AUTHORITY_INFO_ACCESS,
        false,
        &AuthorityInfoAccessSyntax(descriptions),
    )
    .map(Some)
}
