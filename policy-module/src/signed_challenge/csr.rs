//! The CSR against the claims: subject, subject alternative names, key usage, extended key
//! usage, key type and size.

use super::claims::{truncate, Claims, KEY_USAGE_NAMES};
use super::dn;
use crate::{Denial, DenialReason};
use const_oid::db::rfc5280::{ID_CE_EXT_KEY_USAGE, ID_CE_KEY_USAGE, ID_CE_SUBJECT_ALT_NAME};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use std::net::IpAddr;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, SubjectAltName};
use x509_cert::ext::Extension;
use x509_cert::request::CertReq;

/// PKCS#9 extensionRequest (RFC 2985 §5.4.2).
const EXTENSION_REQUEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
/// Microsoft's UPN otherName (szOID_NT_PRINCIPAL_NAME).
const UPN: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.3");

fn deny(reason: DenialReason, detail: impl Into<String>) -> Denial {
    Denial::new(reason, detail)
}

/// Runs every CSR check, in the order subject, SAN, key usage, EKU, key.
pub(crate) fn check(csr: &CertReq, claims: &Claims) -> Result<(), Denial> {
    let extensions = requested_extensions(csr)?;
    check_subject(csr, claims)?;
    check_sans(&extensions, claims)?;
    check_key_usage(&extensions, claims)?;
    check_eku(&extensions, claims)?;
    check_key(csr, claims)
}

/// The extensions requested in the CSR's extensionRequest attribute (none when absent).
/// A repeated attribute or extension makes the request ambiguous and is refused.
fn requested_extensions(csr: &CertReq) -> Result<Vec<Extension>, Denial> {
    let ambiguous = |what: &str| {
        deny(
            DenialReason::ProfileRule,
            format!("CSR has an ambiguous {what}"),
        )
    };
    let mut attrs = csr
        .info
        .attributes
        .iter()
        .filter(|a| a.oid == EXTENSION_REQUEST);
    let Some(attr) = attrs.next() else {
        return Ok(Vec::new());
    };
    if attrs.next().is_some() || attr.values.len() != 1 {
        return Err(ambiguous("extensionRequest attribute"));
    }
    let extensions: Vec<Extension> = attr
        .values
        .get(0)
        .and_then(|v| v.to_der().ok())
        .and_then(|der| Vec::<Extension>::from_der(&der).ok())
        .ok_or_else(|| ambiguous("extensionRequest attribute"))?;
    for (i, e) in extensions.iter().enumerate() {
        if extensions[..i].iter().any(|o| o.extn_id == e.extn_id) {
            return Err(ambiguous(&format!("extension {}", e.extn_id)));
        }
    }
    Ok(extensions)
}

fn find(extensions: &[Extension], oid: ObjectIdentifier) -> Option<&Extension> {
    extensions.iter().find(|e| e.extn_id == oid)
}

fn check_subject(csr: &CertReq, claims: &Claims) -> Result<(), Denial> {
    let claimed = dn::parse_rfc4514(&claims.subject).map_err(|e| {
        deny(
            DenialReason::ChallengeDeserializationError,
            format!("claimed subject: {e}"),
        )
    })?;
    let actual = dn::decode_name(&csr.info.subject).map_err(|e| {
        deny(
            DenialReason::SubjectNameMismatch,
            format!("CSR subject: {e}"),
        )
    })?;
    if actual.is_empty() && !claimed.is_empty() {
        return Err(deny(
            DenialReason::SubjectNameMissing,
            "CSR has an empty subject",
        ));
    }
    if actual != claimed {
        return Err(deny(
            DenialReason::SubjectNameMismatch,
            format!(
                "CSR subject {:?} differs from the claimed {:?}",
                truncate(&csr.info.subject.to_string()),
                truncate(&claims.subject)
            ),
        ));
    }
    Ok(())
}

/// A SAN reduced to what is compared: its type and its canonical bytes.
type SanKey = (&'static str, Vec<u8>);

fn check_sans(extensions: &[Extension], claims: &Claims) -> Result<(), Denial> {
    let mut claimed = claims
        .san
        .iter()
        .map(|s| claimed_san(&s.kind, &s.value))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(ext) = find(extensions, ID_CE_SUBJECT_ALT_NAME) else {
        if claimed.is_empty() {
            return Ok(());
        }
        return Err(deny(
            DenialReason::SubjectAltNameMissing,
            "CSR requests no subjectAltName",
        ));
    };
    let names = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|e| {
        deny(
            DenialReason::SubjectAltNameMismatch,
            format!("CSR subjectAltName: {e}"),
        )
    })?;
    let mut actual = names.0.iter().map(csr_san).collect::<Result<Vec<_>, _>>()?;
    claimed.sort();
    actual.sort();
    if claimed != actual {
        return Err(deny(
            DenialReason::SubjectAltNameMismatch,
            format!(
                "CSR has {} subjectAltNames, the claim {}; they differ",
                actual.len(),
                claimed.len()
            ),
        ));
    }
    Ok(())
}

fn claimed_san(kind: &str, value: &str) -> Result<SanKey, Denial> {
    Ok(match kind {
        "dns" => ("dns", value.to_ascii_lowercase().into_bytes()),
        "email" => ("email", email_key(value.as_bytes())),
        "upn" => ("upn", value.as_bytes().to_vec()),
        "uri" => ("uri", value.as_bytes().to_vec()),
        "ip" => {
            let ip: IpAddr = value.parse().map_err(|_| {
                deny(
                    DenialReason::ChallengeDeserializationError,
                    format!("claimed ip SAN {:?} is not an address", truncate(value)),
                )
            })?;
            ("ip", ip_octets(ip))
        }
        other => {
            return Err(deny(
                DenialReason::ChallengeDeserializationError,
                format!("unknown SAN type {other:?}"),
            ))
        }
    })
}

fn csr_san(name: &GeneralName) -> Result<SanKey, Denial> {
    Ok(match name {
        GeneralName::DnsName(s) => ("dns", s.as_bytes().to_ascii_lowercase()),
        GeneralName::Rfc822Name(s) => ("email", email_key(s.as_bytes())),
        GeneralName::UniformResourceIdentifier(s) => ("uri", s.as_bytes().to_vec()),
        GeneralName::IpAddress(o) => ("ip", o.as_bytes().to_vec()),
        GeneralName::OtherName(o) if o.type_id == UPN => {
            let value = der::asn1::Utf8StringRef::try_from(&o.value).map_err(|_| {
                deny(
                    DenialReason::SubjectAltNameMismatch,
                    "CSR UPN is not a UTF8String",
                )
            })?;
            ("upn", value.as_str().as_bytes().to_vec())
        }
        other => {
            return Err(deny(
                DenialReason::SubjectAltNameMismatch,
                format!(
                    "CSR requests a SAN type no claim can name: {}",
                    san_kind(other)
                ),
            ))
        }
    })
}

fn san_kind(name: &GeneralName) -> &'static str {
    match name {
        GeneralName::OtherName(_) => "otherName",
        GeneralName::DirectoryName(_) => "directoryName",
        GeneralName::EdiPartyName(_) => "ediPartyName",
        GeneralName::RegisteredId(_) => "registeredID",
        _ => "other",
    }
}

/// The local part as is, the domain (after the last `@`) in ASCII lower case.
fn email_key(addr: &[u8]) -> Vec<u8> {
    match addr.iter().rposition(|&b| b == b'@') {
        Some(at) => {
            let mut key = addr[..at].to_vec();
            key.push(b'@');
            key.extend(addr[at + 1..].to_ascii_lowercase());
            key
        }
        None => addr.to_vec(),
    }
}

fn ip_octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn check_key_usage(extensions: &[Extension], claims: &Claims) -> Result<(), Denial> {
    let Some(names) = &claims.key_usage else {
        return Ok(());
    };
    let claimed: u16 = names
        .iter()
        .filter_map(|n| KEY_USAGE_NAMES.iter().find(|(k, _)| k == n))
        .fold(0, |bits, (_, bit)| bits | (1 << bit));
    let ext = find(extensions, ID_CE_KEY_USAGE).ok_or_else(|| {
        deny(
            DenialReason::KeyUsageMismatch,
            "CSR requests no keyUsage, the claim names one",
        )
    })?;
    let requested = KeyUsage::from_der(ext.extn_value.as_bytes())
        .map_err(|e| deny(DenialReason::KeyUsageMismatch, format!("CSR keyUsage: {e}")))?;
    let actual: u16 = requested.0.bits();
    if actual != claimed {
        return Err(deny(
            DenialReason::KeyUsageMismatch,
            format!("CSR keyUsage bits {actual:#06x}, claimed {claimed:#06x}"),
        ));
    }
    Ok(())
}

fn check_eku(extensions: &[Extension], claims: &Claims) -> Result<(), Denial> {
    let Some(oids) = &claims.eku else {
        return Ok(());
    };
    let mut claimed: Vec<ObjectIdentifier> = oids
        .iter()
        .filter_map(|o| super::parse_dotted_oid(o))
        .collect();
    let ext = find(extensions, ID_CE_EXT_KEY_USAGE).ok_or_else(|| {
        deny(
            DenialReason::EnhancedKeyUsageMismatch,
            "CSR requests no extendedKeyUsage, the claim names some",
        )
    })?;
    let mut actual = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
        .map_err(|e| {
            deny(
                DenialReason::EnhancedKeyUsageMismatch,
                format!("CSR extendedKeyUsage: {e}"),
            )
        })?
        .0;
    claimed.sort();
    claimed.dedup();
    actual.sort();
    actual.dedup();
    if claimed != actual {
        return Err(deny(
            DenialReason::EnhancedKeyUsageMismatch,
            "CSR extendedKeyUsage differs from the claimed set",
        ));
    }
    Ok(())
}

fn check_key(csr: &CertReq, claims: &Claims) -> Result<(), Denial> {
    if claims.min_key_bits.is_none() && claims.key_types.is_none() {
        return Ok(());
    }
    let bad = |detail: String| deny(DenialReason::KeyLengthMismatch, detail);
    let spki = csr
        .info
        .public_key
        .to_der()
        .map_err(|e| bad(format!("CSR key: {e}")))?;
    let key = openssl::pkey::PKey::public_key_from_der(&spki)
        .map_err(|_| bad("CSR key cannot be read".into()))?;
    let (kind, bits) = match key.id() {
        openssl::pkey::Id::RSA => ("rsa", key.bits()),
        openssl::pkey::Id::EC => {
            let curve = key
                .ec_key()
                .ok()
                .and_then(|ec| ec.group().curve_name())
                .ok_or_else(|| bad("CSR EC key on an unnamed curve".into()))?;
            match curve {
                openssl::nid::Nid::X9_62_PRIME256V1 => ("p256", 256),
                openssl::nid::Nid::SECP384R1 => ("p384", 384),
                openssl::nid::Nid::SECP521R1 => ("p521", 521),
                _ => return Err(bad("CSR EC key on a curve not allowed".into())),
            }
        }
        _ => ("other", key.bits()),
    };
    if let Some(types) = &claims.key_types {
        if !types.iter().any(|t| t == kind) {
            return Err(bad(format!("CSR key type {kind} is not among the claimed")));
        }
    }
    if let Some(min) = claims.min_key_bits {
        if bits < min {
            return Err(bad(format!(
                "CSR key has {bits} bits, at least {min} claimed"
            )));
        }
    }
    Ok(())
}
