//! RFC 4514 distinguished-name strings <-> X.501 `Name` (RFC 5280 §4.1.2.4).
//!
//! RFC 4514 lists RDNs most significant LAST, so `"CN=x,O=y"` encodes `O=y` first.

use std::fmt::Write as _;

use const_oid::ObjectIdentifier;
use der::asn1::{Any, BmpString, Ia5String, PrintableString, SetOfVec, Utf8StringRef};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

use crate::CaError;

const COUNTRY_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.6");

/// How an attribute's value is encoded when parsed from a string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StringKind {
    Utf8,
    Printable,
    Ia5,
}

/// The attribute types known by name: (name printed, other accepted names, OID, encoding).
const ATTRIBUTES: &[(&str, &[&str], &str, StringKind)] = &[
    ("CN", &["commonName"], "2.5.4.3", StringKind::Utf8),
    ("SN", &["surname"], "2.5.4.4", StringKind::Utf8),
    // RFC 5280 Appendix A.1: serialNumber and countryName are PrintableString.
    (
        "SERIALNUMBER",
        &["serialNumber"],
        "2.5.4.5",
        StringKind::Printable,
    ),
    ("C", &["countryName"], "2.5.4.6", StringKind::Printable),
    ("L", &["localityName"], "2.5.4.7", StringKind::Utf8),
    (
        "ST",
        &["S", "stateOrProvinceName"],
        "2.5.4.8",
        StringKind::Utf8,
    ),
    ("STREET", &["streetAddress"], "2.5.4.9", StringKind::Utf8),
    ("O", &["organizationName"], "2.5.4.10", StringKind::Utf8),
    (
        "OU",
        &["organizationalUnitName"],
        "2.5.4.11",
        StringKind::Utf8,
    ),
    ("title", &[], "2.5.4.12", StringKind::Utf8),
    ("GN", &["givenName"], "2.5.4.42", StringKind::Utf8),
    // RFC 4519 / RFC 5280: domainComponent and emailAddress are IA5String.
    (
        "DC",
        &["domainComponent"],
        "0.9.2342.19200300.100.1.25",
        StringKind::Ia5,
    ),
    (
        "UID",
        &["userId"],
        "0.9.2342.19200300.100.1.1",
        StringKind::Utf8,
    ),
    (
        "emailAddress",
        &["E", "email"],
        "1.2.840.113549.1.9.1",
        StringKind::Ia5,
    ),
];

/// Parses an RFC 4514 string such as `"CN=scepd CA,O=Example"` into a `Name`.
///
/// Knows CN, SN, SERIALNUMBER, C, L, ST, STREET, O, OU, title, GN, DC, UID and emailAddress
/// (case-insensitively) and dotted OIDs; `+` joins multi-valued RDNs; `\,`, `\+`, `\\`,
/// `\"` and `\XX` hex pairs escape; a value of the form `#hex` is raw DER. Spaces around
/// separators are ignored. An empty string is the empty Name.
pub fn parse_dn(text: &str) -> Result<Name, CaError> {
    let mut rdns = Vec::new();
    for rdn in split_unescaped(text.trim(), b',')? {
        let atvs = split_unescaped(rdn, b'+')?
            .into_iter()
            .map(parse_attribute)
            .collect::<Result<Vec<_>, _>>()?;
        let set =
            SetOfVec::try_from(atvs).map_err(|e| CaError::InvalidName(format!("{rdn:?}: {e}")))?;
        rdns.push(RelativeDistinguishedName(set));
    }
    rdns.reverse();
    Ok(RdnSequence(rdns))
}

/// Splits at every separator not preceded by an escaping backslash; empty input gives no
/// parts, an empty part is an error.
fn split_unescaped(text: &str, separator: u8) -> Result<Vec<&str>, CaError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (index, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            _ if byte == separator => {
                parts.push(text.get(start..index).unwrap_or_default());
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(text.get(start..).unwrap_or_default());
    if parts.iter().any(|part| part.trim().is_empty()) {
        return Err(CaError::InvalidName(format!("empty RDN in {text:?}")));
    }
    Ok(parts)
}

fn parse_attribute(text: &str) -> Result<AttributeTypeAndValue, CaError> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| CaError::InvalidName(format!("{text:?} has no '='")))?;
    let (oid, kind) = attribute_type(key.trim())?;
    let value = value.trim_start();
    if oid == COUNTRY_NAME && value.chars().count() != 2 {
        return Err(CaError::InvalidName(format!(
            "C={value:?} is not a two-letter code"
        )));
    }
    let value = match value.strip_prefix('#') {
        Some(hex_der) => hex_value(hex_der.trim_end())?,
        None => string_value(&unescape(value)?, kind)?,
    };
    Ok(AttributeTypeAndValue { oid, value })
}

fn attribute_type(key: &str) -> Result<(ObjectIdentifier, StringKind), CaError> {
    let known = ATTRIBUTES.iter().find(|(name, aliases, _, _)| {
        name.eq_ignore_ascii_case(key) || aliases.iter().any(|a| a.eq_ignore_ascii_case(key))
    });
    let (oid, kind) = match known {
        Some((_, _, oid, kind)) => (*oid, *kind),
        None => (key, StringKind::Utf8),
    };
    let oid = crate::parse_dotted_oid(oid)
        .ok_or_else(|| CaError::InvalidName(format!("unknown attribute type {key:?}")))?;
    Ok((oid, kind))
}

fn hex_value(hex_der: &str) -> Result<Any, CaError> {
    let der = hex::decode(hex_der).map_err(|e| CaError::InvalidName(format!("#{hex_der}: {e}")))?;
    Any::from_der(&der).map_err(|e| CaError::InvalidName(format!("#{hex_der}: {e}")))
}

/// Undoes RFC 4514 §2.4 escaping; unescaped trailing spaces are dropped.
fn unescape(text: &str) -> Result<String, CaError> {
    let bad = || CaError::InvalidName(format!("bad escape in {text:?}"));
    let mut bytes = Vec::with_capacity(text.len());
    let mut significant_len = 0;
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        if byte != b'\\' {
            bytes.push(byte);
            if byte != b' ' {
                significant_len = bytes.len();
            }
            continue;
        }
        let first = input.next().ok_or_else(bad)?;
        if first.is_ascii_hexdigit() {
            let second = input.next().filter(u8::is_ascii_hexdigit).ok_or_else(bad)?;
            let pair = [first, second];
            let decoded = hex::decode(pair).map_err(|_| bad())?;
            bytes.extend(decoded);
        } else {
            bytes.push(first);
        }
        significant_len = bytes.len();
    }
    bytes.truncate(significant_len);
    String::from_utf8(bytes).map_err(|_| CaError::InvalidName(format!("{text:?} is not UTF-8")))
}

fn string_value(value: &str, kind: StringKind) -> Result<Any, CaError> {
    let invalid = |e: der::Error| CaError::InvalidName(format!("{value:?}: {e}"));
    match kind {
        StringKind::Utf8 => Any::encode_from(&Utf8StringRef::new(value).map_err(invalid)?),
        StringKind::Printable => Any::encode_from(&PrintableString::new(value).map_err(invalid)?),
        StringKind::Ia5 => Any::encode_from(&Ia5String::new(value).map_err(invalid)?),
    }
    .map_err(invalid)
}

/// Formats a `Name` as an RFC 4514 string, most significant RDN last.
///
/// Total for any decoded Name: values that are not character strings (or whose type is
/// unknown) are printed as `OID=#hex` of their DER encoding (RFC 4514 §2.4).
pub fn format_dn(name: &Name) -> String {
    let mut out = String::new();
    for (index, rdn) in name.0.iter().rev().enumerate() {
        if index > 0 {
            out.push(',');
        }
        for (position, atv) in rdn.0.iter().enumerate() {
            if position > 0 {
                out.push('+');
            }
            format_attribute(atv, &mut out);
        }
    }
    out
}

fn format_attribute(atv: &AttributeTypeAndValue, out: &mut String) {
    let known = ATTRIBUTES
        .iter()
        .find(|(_, _, oid, _)| ObjectIdentifier::new(oid).is_ok_and(|oid| oid == atv.oid));
    match (known, string_of(&atv.value)) {
        (Some((name, ..)), Some(text)) => {
            out.push_str(name);
            out.push('=');
            escape_into(&text, out);
        }
        _ => {
            let _ = write!(out, "{}=#", atv.oid);
            out.push_str(&hex::encode(atv.value.to_der().unwrap_or_default()));
        }
    }
}

/// The text of a directory string, if the value is one we can read.
fn string_of(value: &Any) -> Option<String> {
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
            std::str::from_utf8(bytes).ok().map(str::to_owned)
        }
        // T.61 in practice holds Latin-1.
        Tag::TeletexString => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => BmpString::from_ucs2(bytes.to_vec())
            .ok()
            .map(|s| s.chars().collect()),
        _ => None,
    }
}

/// RFC 4514 §2.4 escaping.
fn escape_into(text: &str, out: &mut String) {
    let last = text.chars().count().saturating_sub(1);
    for (index, c) in text.chars().enumerate() {
        match c {
            '#' if index == 0 => out.push_str("\\#"),
            ' ' if index == 0 || index == last => out.push_str("\\ "),
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\0'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\{:02X}", u32::from(c));
            }
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {

    /// An OID arc beyond `u32` is an error, not a panic inside const-oid.
    #[test]
    fn oversized_oid_arcs_are_an_error() {
        assert!(parse_dn("1.2.99999999999=x").is_err());
        assert!(parse_dn("2.5.4.3=ok").is_ok());
    }
    use super::*;

    #[test]
    fn rdns_are_encoded_in_reverse_order() {
        let name = parse_dn("CN=scepd CA,O=Example,C=DE").expect("parses");
        assert_eq!(name.0.len(), 3);
        let first = name
            .0
            .first()
            .and_then(|rdn| rdn.0.iter().next())
            .expect("rdn");
        assert_eq!(first.oid, ObjectIdentifier::new_unwrap("2.5.4.6"));
        assert_eq!(first.value.tag(), Tag::PrintableString);
        assert_eq!(format_dn(&name), "CN=scepd CA,O=Example,C=DE");
    }

    #[test]
    fn escapes_round_trip() {
        let name = parse_dn(r"CN=Doe\, John,OU=a\+b,DC=example,DC=com,emailAddress=j@example.com")
            .expect("parses");
        assert_eq!(
            format_dn(&name),
            r"CN=Doe\, John,OU=a\+b,DC=example,DC=com,emailAddress=j@example.com"
        );
        let hex = parse_dn(r"CN=caf\C3\A9").expect("parses");
        assert_eq!(format_dn(&hex), "CN=café");
    }

    #[test]
    fn matches_openssl_encoding() {
        let mut builder = openssl::x509::X509NameBuilder::new().expect("builder");
        builder.append_entry_by_text("O", "Example").expect("O");
        builder.append_entry_by_text("CN", "host").expect("CN");
        let openssl_der = builder.build().to_der().expect("der");
        let ours = parse_dn("cn=host, o=Example")
            .expect("parses")
            .to_der()
            .expect("der");
        assert_eq!(ours, openssl_der);
    }

    #[test]
    fn multi_valued_and_unknown() {
        let name = parse_dn("CN=a+UID=b,1.2.3.4=#0c0178").expect("parses");
        assert_eq!(name.0.len(), 2);
        let text = format_dn(&name);
        assert!(text.ends_with(",1.2.3.4=#0c0178"), "{text}");
        assert!(
            text.contains("CN=a") && text.contains("UID=b") && text.contains('+'),
            "{text}"
        );
    }

    #[test]
    fn errors_are_reported() {
        assert!(parse_dn("CN=a,,O=b").is_err());
        assert!(parse_dn("XX=a").is_err());
        assert!(parse_dn("C=Germany").is_err());
        assert!(parse_dn("CN=trailing\\").is_err());
        assert!(parse_dn("").expect("empty").is_empty());
    }
}
