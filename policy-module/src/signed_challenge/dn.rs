//! Distinguished names for the signed challenge: the claimed RFC 4514 string, parsed, and the
//! CSR's `Name`, decoded, so the two can be compared as sequences of Unicode strings.
//!
//! RFC 5280 §4.1.2.4:
//! ```text
//! Name ::= CHOICE { rdnSequence RDNSequence }
//! RDNSequence ::= SEQUENCE OF RelativeDistinguishedName
//! RelativeDistinguishedName ::= SET SIZE (1..MAX) OF AttributeTypeAndValue
//! AttributeTypeAndValue ::= SEQUENCE { type AttributeType, value AttributeValue }
//! ```
//! An RFC 4514 string lists the RDNs in the reverse order of the `RDNSequence` (§2.1).

use const_oid::ObjectIdentifier;
use der::asn1::{Ia5StringRef, PrintableStringRef};
use der::{Tag, Tagged};
use x509_cert::name::Name;

/// One RDN: its (type, value) pairs, sorted so that the order inside a multi-valued RDN
/// (a SET) does not matter.
pub(crate) type Rdn = Vec<(ObjectIdentifier, String)>;

/// Most RDNs a claimed subject may have.
const MAX_RDNS: usize = 64;

/// Attribute type names accepted in the claimed subject (case-insensitive), RFC 4514 §3
/// plus the ones Windows and Intune write.
const NAMES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("S", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("TITLE", "2.5.4.12"),
    ("GN", "2.5.4.42"),
    ("GIVENNAME", "2.5.4.42"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
    ("E", "1.2.840.113549.1.9.1"),
];

/// Parses an RFC 4514 string into RDNs in ASN.1 order (the reverse of the string's).
///
/// Escapes: `\` followed by one of `,+"\<>;=# ` or a space, or by two hex digits (a UTF-8
/// byte). Values starting with `#` (BER-encoded values) are refused. Whitespace around
/// types and values is not trimmed, except that none is allowed around `=`, `,` and `+`
/// other than as part of a value. An empty string is the empty name.
pub(crate) fn parse_rfc4514(text: &str) -> Result<Vec<Rdn>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = text.as_bytes();
    let mut rdns: Vec<Rdn> = Vec::new();
    let mut current: Rdn = Vec::new();
    let mut i = 0;
    loop {
        // attribute type
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' {
            if matches!(bytes[i], b',' | b'+') {
                return Err(format!("attribute without '=' at offset {start}"));
            }
            i += 1;
        }
        if i >= bytes.len() {
            return Err(format!("attribute without '=' at offset {start}"));
        }
        let oid = attribute_type(&text[start..i])?;
        i += 1;
        // attribute value
        if bytes.get(i) == Some(&b'#') {
            return Err("hex-encoded (#) attribute values are not supported".into());
        }
        let mut value: Vec<u8> = Vec::new();
        let mut end = None;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    let next = *bytes.get(i + 1).ok_or("value ends with a lone backslash")?;
                    if next.is_ascii_hexdigit() {
                        let pair = bytes
                            .get(i + 1..i + 3)
                            .and_then(|p| std::str::from_utf8(p).ok())
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                            .ok_or("backslash followed by a single hex digit")?;
                        value.push(pair);
                        i += 3;
                    } else if b",+\"\\<>;=# ".contains(&next) {
                        value.push(next);
                        i += 2;
                    } else {
                        return Err(format!("invalid escape '\\{}'", char::from(next)));
                    }
                }
                b',' | b'+' => {
                    end = Some(bytes[i]);
                    i += 1;
                    break;
                }
                b'"' | b';' | b'<' | b'>' => {
                    return Err(format!(
                        "unescaped '{}' in an attribute value",
                        char::from(bytes[i])
                    ))
                }
                other => {
                    value.push(other);
                    i += 1;
                }
            }
        }
        let value = String::from_utf8(value).map_err(|_| "escaped bytes are not UTF-8")?;
        current.push((oid, value));
        match end {
            Some(b'+') => {}
            Some(_) | None => {
                current.sort();
                rdns.push(std::mem::take(&mut current));
                if rdns.len() > MAX_RDNS {
                    return Err(format!("more than {MAX_RDNS} RDNs"));
                }
            }
        }
        if end.is_none() {
            break;
        }
        if i >= bytes.len() {
            return Err("name ends with a separator".into());
        }
    }
    rdns.reverse();
    Ok(rdns)
}

fn attribute_type(name: &str) -> Result<ObjectIdentifier, String> {
    if let Some((_, oid)) = NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return super::parse_dotted_oid(oid).ok_or_else(|| format!("bad OID {oid:?}"));
    }
    let dotted = name
        .strip_prefix("OID.")
        .or_else(|| name.strip_prefix("oid."))
        .unwrap_or(name);
    if dotted.starts_with(|c: char| c.is_ascii_digit()) {
        return super::parse_dotted_oid(dotted).ok_or_else(|| format!("bad OID {name:?}"));
    }
    Err(format!("unknown attribute type {name:?}"))
}

/// The CSR's subject as RDNs of decoded strings, in ASN.1 order.
pub(crate) fn decode_name(name: &Name) -> Result<Vec<Rdn>, String> {
    name.0
        .iter()
        .map(|rdn| {
            let mut pairs = rdn
                .0
                .iter()
                .map(|atv| {
                    let value = directory_string(atv.value.tag(), atv.value.value())
                        .ok_or_else(|| format!("attribute {} is not a readable string", atv.oid))?;
                    Ok((atv.oid, value))
                })
                .collect::<Result<Rdn, String>>()?;
            pairs.sort();
            Ok(pairs)
        })
        .collect()
}

/// A DirectoryString (or IA5String) value as a Rust string; other types give `None`.
pub(crate) fn directory_string(tag: Tag, bytes: &[u8]) -> Option<String> {
    match tag {
        Tag::Utf8String => std::str::from_utf8(bytes).ok().map(str::to_owned),
        Tag::PrintableString => PrintableStringRef::new(bytes)
            .ok()
            .map(|s| s.as_str().to_owned()),
        Tag::Ia5String => Ia5StringRef::new(bytes).ok().map(|s| s.as_str().to_owned()),
        // T.61 in theory, Latin-1 in practice.
        Tag::TeletexString => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            let units = bytes.chunks_exact(2);
            if !units.remainder().is_empty() {
                return None;
            }
            units
                .map(|u| char::from_u32(u32::from(u16::from_be_bytes([u[0], u[1]]))))
                .collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(s: &str) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(s)
    }

    #[test]
    fn reverses_the_order_and_maps_names() {
        let rdns = parse_rfc4514("CN=dev 1,OU=Devices,O=Example,C=DE").unwrap();
        assert_eq!(
            rdns,
            vec![
                vec![(oid("2.5.4.6"), "DE".to_string())],
                vec![(oid("2.5.4.10"), "Example".to_string())],
                vec![(oid("2.5.4.11"), "Devices".to_string())],
                vec![(oid("2.5.4.3"), "dev 1".to_string())],
            ]
        );
    }

    #[test]
    fn handles_escapes_multi_valued_rdns_and_oids() {
        let rdns =
            parse_rfc4514(r"CN=Doe\, John\+\22x\22\\+UID=jd,2.5.4.10=A\C3\A9,E=a@b").unwrap();
        assert_eq!(rdns.len(), 3);
        assert_eq!(rdns[0], vec![(oid("1.2.840.113549.1.9.1"), "a@b".into())]);
        assert_eq!(rdns[1], vec![(oid("2.5.4.10"), "Aé".into())]);
        let mut expected = vec![
            (oid("2.5.4.3"), r#"Doe, John+"x"\"#.to_string()),
            (oid("0.9.2342.19200300.100.1.1"), "jd".to_string()),
        ];
        expected.sort();
        assert_eq!(rdns[2], expected);
    }

    #[test]
    fn empty_string_is_the_empty_name() {
        assert_eq!(parse_rfc4514("").unwrap(), Vec::<Rdn>::new());
    }

    #[test]
    fn refuses_malformed_strings() {
        for bad in [
            "CN",
            "CN=a,",
            "CN=#0403616263",
            "XX=a",
            r"CN=a\",
            r"CN=a\q",
            r#"CN="quoted""#,
            "CN=a;O=b",
            r"CN=\ff",
        ] {
            assert!(parse_rfc4514(bad).is_err(), "{bad}");
        }
    }
}
