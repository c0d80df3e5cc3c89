//! Re-checking a PKCS#10 request (RFC 2986) against a profile, as the CA's defence in depth.
//!
//! The self-signature is verified over the CertificationRequestInfo bytes exactly as
//! received (a decoded `SET OF` may be re-sorted, so a re-encoding is never trusted).

use std::net::{Ipv4Addr, Ipv6Addr};

use der::asn1::{AnyRef, BitStringRef, BmpString, OctetString, Utf8StringRef};
use der::{Decode, Encode, Sequence};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::{CertReqInfo, Version};

use crate::extensions::oid;
use crate::profile::{KeyType, Profile, SanType};
use crate::signing::verify_self_signature;
use crate::CaError;

/// Upper bound on a CSR we look at; real ones are a few KiB.
/// Signed challenges travel inside the CSR and reach 64 KiB over POST (Intune-style blobs).
const MAX_CSR_LEN: usize = 256 * 1024;

/// `CertificationRequest` with the signed part kept as raw bytes.
#[derive(Sequence)]
struct SignedRequest<'a> {
    info: AnyRef<'a>,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitStringRef<'a>,
}

/// `CertificationRequestInfo` with each field kept raw, to get at the subject's exact bytes.
#[derive(Sequence)]
struct RawRequestInfo<'a> {
    version: AnyRef<'a>,
    subject: AnyRef<'a>,
    public_key: AnyRef<'a>,
    attributes: AnyRef<'a>,
}

/// ```text
/// EnrollmentNameValuePair ::= SEQUENCE { name BMPString, value BMPString }
/// ```
/// Microsoft's request attribute 1.3.6.1.4.1.311.13.2.1 (MS-WCCE §2.2.2.7.10).
#[derive(Sequence)]
struct EnrollmentNameValuePair {
    name: BmpString,
    value: BmpString,
}

/// A validity the client asked for (Microsoft ValidityPeriod + ValidityPeriodUnits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestedValidity {
    pub unit: ValidityUnit,
    pub count: u32,
}

/// The units of the Microsoft `ValidityPeriod` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValidityUnit {
    Hours,
    Days,
    Weeks,
    Months,
    Years,
}

/// The subjectAltName the CSR requested: the extension value exactly as received, and its
/// names in `type:value` form.
#[derive(Debug, Clone)]
pub(crate) struct RequestedSan {
    pub extn_value: OctetString,
    pub names: Vec<String>,
}

/// A CSR that passed every check of the profile.
#[derive(Debug, Clone)]
pub(crate) struct CheckedCsr {
    pub subject: Name,
    pub public_key: SubjectPublicKeyInfoOwned,
    pub san: Option<RequestedSan>,
    pub sid_extension: Option<Extension>,
    pub requested_validity: Option<RequestedValidity>,
}

fn malformed(what: impl std::fmt::Display) -> CaError {
    CaError::MalformedCsr(what.to_string())
}

fn refused(profile: &Profile, reason: impl Into<String>) -> CaError {
    CaError::ProfileViolation {
        profile: profile.name().to_owned(),
        reason: reason.into(),
    }
}

/// Decodes and verifies the CSR and checks key, subject, SANs and extensions against the
/// profile.
///
/// The CSR must be DER (BER, e.g. indefinite lengths, is refused as malformed). Requested
/// extensions other than subjectAltName and the SID extension are ignored: keyUsage,
/// extKeyUsage, basicConstraints and the rest come from the profile alone.
pub(crate) fn check_csr(der: &[u8], profile: &Profile) -> Result<CheckedCsr, CaError> {
    if der.len() > MAX_CSR_LEN {
        return Err(malformed("CSR larger than 256 KiB"));
    }
    let signed = SignedRequest::from_der(der).map_err(malformed)?;
    let info_der = signed.info.to_der().map_err(malformed)?;
    let info = CertReqInfo::from_der(&info_der).map_err(malformed)?;
    if info.version != Version::V1 {
        return Err(malformed("CSR version is not v1 (0)"));
    }
    require_canonical_subject(&info_der, &info.subject)?;
    let public_key = public_key_of(&info.public_key)?;
    let signature = signed
        .signature
        .as_bytes()
        .ok_or_else(|| malformed("signature BIT STRING has unused bits"))?;
    verify_self_signature(&signed.algorithm, &public_key, &info_der, signature)?;
    check_key(&public_key, profile)?;
    check_subject(&info.subject, profile)?;
    let extensions = requested_extensions(&info)?;
    let san = requested_san(&extensions, profile)?;
    // RFC 5280 §4.1.2.6: a certificate with an empty subject must carry a SAN.
    let subject_will_be_empty = !profile.subject_from_csr() || info.subject.is_empty();
    if subject_will_be_empty && san.is_none() {
        return Err(refused(
            profile,
            "the subject is empty, so a SAN is required",
        ));
    }
    let requested_validity = requested_validity(&info, profile)?;
    Ok(CheckedCsr {
        subject: info.subject,
        public_key: info.public_key,
        san,
        sid_extension: find_extension(&extensions, oid::MS_SID_EXTENSION)?
            .filter(|_| profile.allow_sid_extension()),
        requested_validity,
    })
}

/// The subject is copied into the certificate through the decoded `Name`; refuse the rare
/// subject whose DER re-encoding differs (an unsorted multi-valued RDN) rather than change
/// the client's bytes.
fn require_canonical_subject(info_der: &[u8], subject: &Name) -> Result<(), CaError> {
    let raw = RawRequestInfo::from_der(info_der).map_err(malformed)?;
    let received = raw.subject.to_der().map_err(malformed)?;
    if subject.to_der().map_err(malformed)? != received {
        return Err(malformed("subject is not DER-encoded (unsorted SET OF)"));
    }
    Ok(())
}

fn public_key_of(spki: &SubjectPublicKeyInfoOwned) -> Result<PKey<Public>, CaError> {
    crate::pubkey::public_key_from_spki(spki)
        .map_err(|_| CaError::UnsupportedAlgorithm(format!("subject key {}", spki.algorithm.oid)))
}

/// Proof of possession alone (RFC 2986 §3): the CSR is signed by the key it asks a
/// certificate for. The RA checks this before any policy decision, so that a forged request
/// never consumes a one-time challenge; [`check_csr`] repeats it as the CA's own check.
pub fn verify_csr_signature(der: &[u8]) -> Result<(), CaError> {
    if der.len() > MAX_CSR_LEN {
        return Err(malformed("CSR too large"));
    }
    let signed = SignedRequest::from_der(der).map_err(malformed)?;
    let info_der = signed.info.to_der().map_err(malformed)?;
    let info = CertReqInfo::from_der(&info_der).map_err(malformed)?;
    let public_key = public_key_of(&info.public_key)?;
    let signature = signed
        .signature
        .as_bytes()
        .ok_or_else(|| malformed("signature BIT STRING has unused bits"))?;
    verify_self_signature(&signed.algorithm, &public_key, &info_der, signature)
}

/// The profile's view of a key: its type, and for RSA its size.
fn check_key(key: &PKey<Public>, profile: &Profile) -> Result<(), CaError> {
    let key_type = match key.id() {
        Id::RSA => KeyType::Rsa,
        Id::EC => match key.ec_key()?.group().curve_name() {
            Some(Nid::X9_62_PRIME256V1) => KeyType::P256,
            Some(Nid::SECP384R1) => KeyType::P384,
            other => return Err(CaError::UnsupportedAlgorithm(format!("EC curve {other:?}"))),
        },
        other => return Err(CaError::UnsupportedAlgorithm(format!("key type {other:?}"))),
    };
    if !profile.key_types().contains(&key_type) {
        return Err(refused(profile, format!("key type {key_type} not allowed")));
    }
    if key_type == KeyType::Rsa && !profile.accepts_rsa_bits(key.bits()) {
        return Err(refused(
            profile,
            format!("RSA key of {} bits not allowed", key.bits()),
        ));
    }
    Ok(())
}

fn check_subject(subject: &Name, profile: &Profile) -> Result<(), CaError> {
    if profile.require_subject() && subject.is_empty() {
        return Err(refused(profile, "the CSR's subject is empty"));
    }
    Ok(())
}

/// Every extension requested through PKCS#9 extensionRequest (RFC 2985 §5.4.2) or
/// Microsoft's older szOID_CERT_EXTENSIONS attribute.
fn requested_extensions(info: &CertReqInfo) -> Result<Vec<Extension>, CaError> {
    let mut extensions = Vec::new();
    let requests = info
        .attributes
        .iter()
        .filter(|a| a.oid == oid::EXTENSION_REQUEST || a.oid == oid::MS_CERT_EXTENSIONS);
    for attribute in requests {
        for value in attribute.values.iter() {
            let value_der = value.to_der().map_err(malformed)?;
            extensions.extend(Vec::<Extension>::from_der(&value_der).map_err(malformed)?);
        }
    }
    Ok(extensions)
}

/// The one extension with this OID, if requested; asking twice is malformed
/// (RFC 5280 §4.2: an extension appears at most once).
fn find_extension(
    extensions: &[Extension],
    id: const_oid::ObjectIdentifier,
) -> Result<Option<Extension>, CaError> {
    let mut matching = extensions.iter().filter(|e| e.extn_id == id);
    let first = matching.next().cloned();
    if matching.next().is_some() {
        return Err(malformed(format!("extension {id} requested twice")));
    }
    Ok(first)
}

fn requested_san(
    extensions: &[Extension],
    profile: &Profile,
) -> Result<Option<RequestedSan>, CaError> {
    let Some(extension) = find_extension(extensions, oid::ID_CE_SUBJECT_ALT_NAME)? else {
        return Ok(None);
    };
    let san = SubjectAltName::from_der(extension.extn_value.as_bytes()).map_err(malformed)?;
    if san.0.is_empty() {
        return Err(malformed("empty subjectAltName"));
    }
    let names = san
        .0
        .iter()
        .map(|name| allowed_san(name, profile))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(RequestedSan {
        extn_value: extension.extn_value,
        names,
    }))
}

/// Checks one GeneralName against the profile and renders it as `type:value`.
fn allowed_san(name: &GeneralName, profile: &Profile) -> Result<String, CaError> {
    let (san_type, value) = describe_san(name).map_err(|reason| refused(profile, reason))?;
    if !profile.allowed_san_types().contains(&san_type) {
        return Err(refused(
            profile,
            format!("SAN type {san_type} not allowed ({value})"),
        ));
    }
    Ok(format!("{san_type}:{value}"))
}

/// The profile type and printable value of a GeneralName, or why it is not supported.
fn describe_san(name: &GeneralName) -> Result<(SanType, String), String> {
    match name {
        GeneralName::DnsName(dns) => Ok((SanType::Dns, dns.as_str().to_owned())),
        GeneralName::Rfc822Name(email) => Ok((SanType::Email, email.as_str().to_owned())),
        GeneralName::UniformResourceIdentifier(uri) => Ok((SanType::Uri, uri.as_str().to_owned())),
        GeneralName::IpAddress(ip) => ip_text(ip.as_bytes()).map(|ip| (SanType::Ip, ip)),
        GeneralName::OtherName(other) if other.type_id == oid::MS_UPN => {
            let upn = Utf8StringRef::try_from(&other.value)
                .map_err(|_| "UPN otherName is not a UTF8String".to_owned())?;
            Ok((SanType::Upn, upn.as_str().to_owned()))
        }
        GeneralName::OtherName(other) => {
            Err(format!("SAN otherName {} not supported", other.type_id))
        }
        GeneralName::DirectoryName(_) => Err("SAN directoryName not supported".into()),
        GeneralName::EdiPartyName(_) => Err("SAN ediPartyName not supported".into()),
        GeneralName::RegisteredId(id) => Err(format!("SAN registeredID {id} not supported")),
    }
}

fn ip_text(bytes: &[u8]) -> Result<String, String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(Ipv4Addr::from(v4).to_string());
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(Ipv6Addr::from(v6).to_string());
    }
    Err(format!("SAN iPAddress of {} octets", bytes.len()))
}

/// The Microsoft ValidityPeriod/ValidityPeriodUnits pair, when the profile honours it and
/// the CSR carries both names. Names and units match case-insensitively.
fn requested_validity(
    info: &CertReqInfo,
    profile: &Profile,
) -> Result<Option<RequestedValidity>, CaError> {
    if !profile.allow_requested_validity() {
        return Ok(None);
    }
    let mut period = None;
    let mut units = None;
    for (name, value) in enrollment_name_value_pairs(info)? {
        if name.eq_ignore_ascii_case("ValidityPeriod") {
            period = Some(value);
        } else if name.eq_ignore_ascii_case("ValidityPeriodUnits") {
            units = Some(value);
        }
    }
    let (Some(period), Some(units)) = (period, units) else {
        return Ok(None);
    };
    let unit = validity_unit(&period)
        .ok_or_else(|| malformed(format!("ValidityPeriod {period:?} is not a known unit")))?;
    let count = units
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|count| *count > 0)
        .ok_or_else(|| {
            malformed(format!(
                "ValidityPeriodUnits {units:?} is not a positive number"
            ))
        })?;
    Ok(Some(RequestedValidity { unit, count }))
}

fn enrollment_name_value_pairs(info: &CertReqInfo) -> Result<Vec<(String, String)>, CaError> {
    let mut pairs = Vec::new();
    let attributes = info
        .attributes
        .iter()
        .filter(|a| a.oid == oid::MS_ENROLLMENT_NAME_VALUE_PAIR);
    for attribute in attributes {
        for value in attribute.values.iter() {
            let value_der = value.to_der().map_err(malformed)?;
            let pair = EnrollmentNameValuePair::from_der(&value_der).map_err(malformed)?;
            pairs.push((pair.name.chars().collect(), pair.value.chars().collect()));
        }
    }
    Ok(pairs)
}

fn validity_unit(text: &str) -> Option<ValidityUnit> {
    let text = text.trim();
    [
        ("Hours", ValidityUnit::Hours),
        ("Days", ValidityUnit::Days),
        ("Weeks", ValidityUnit::Weeks),
        ("Months", ValidityUnit::Months),
        ("Years", ValidityUnit::Years),
    ]
    .into_iter()
    .find(|(name, _)| name.eq_ignore_ascii_case(text))
    .map(|(_, unit)| unit)
}
