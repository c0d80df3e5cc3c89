//! The claims document inside a signed challenge: a UTF-8 JSON object (format version 1).

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// Largest claims document accepted, in bytes.
pub const MAX_CLAIMS_BYTES: usize = 16 * 1024;
/// Most entries in `san`.
pub const MAX_SANS: usize = 64;
/// Most entries in `key_usage` and in `eku`, and in `key_types`.
pub const MAX_LIST: usize = 32;
/// Longest string value in the claims (subject, a SAN value, iss, template, ...), in bytes.
pub const MAX_STRING_BYTES: usize = 2048;
/// Deepest JSON nesting accepted.
const MAX_DEPTH: usize = 8;

/// The claims of a signed challenge, version 1 (see `docs/challenge-format.md`).
///
/// Serialises to the JSON an MDM signs; `None` optional fields are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Format version; must be 1.
    pub v: u32,
    /// The one-time id: 22 to 128 characters of `[A-Za-z0-9_-]` (see [`random_challenge_id`]).
    ///
    /// [`random_challenge_id`]: super::random_challenge_id
    pub id: String,
    /// Name of the issuing MDM; checked where the trust configuration pins one.
    pub iss: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Not valid after, seconds since the Unix epoch.
    pub exp: u64,
    /// Name of the scepd template the challenge is for.
    pub template: String,
    /// The CSR's subject as an RFC 4514 string (most specific RDN first).
    pub subject: String,
    /// The CSR's subject alternative names, exactly (order ignored).
    pub san: Vec<San>,
    /// Key usage bits the CSR must request, exactly (RFC 5280 names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_usage: Option<Vec<String>>,
    /// Extended key usages (dotted OIDs) the CSR must request, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eku: Option<Vec<String>>,
    /// Smallest key size: RSA modulus bits or EC curve bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_key_bits: Option<u32>,
    /// Key types allowed: `rsa`, `p256`, `p384`, `p521`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_types: Option<Vec<String>>,
    /// Device identifier, for the log only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// User identifier, for the log only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Tenant identifier, for the log only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// One subject alternative name claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct San {
    /// `dns`, `email`, `upn`, `uri` or `ip`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name, as text (an IP address in its usual textual form).
    pub value: String,
}

impl San {
    /// A SAN claim of the given type and value.
    pub fn new(kind: &str, value: &str) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

/// RFC 5280 §4.2.1.3 names accepted in `key_usage`, with their bit numbers.
pub(crate) const KEY_USAGE_NAMES: &[(&str, u8)] = &[
    ("digitalSignature", 0),
    ("nonRepudiation", 1),
    ("contentCommitment", 1),
    ("keyEncipherment", 2),
    ("dataEncipherment", 3),
    ("keyAgreement", 4),
    ("keyCertSign", 5),
    ("cRLSign", 6),
    ("encipherOnly", 7),
    ("decipherOnly", 8),
];

/// Key type names accepted in `key_types` (the names scepd templates use, plus `p521`).
pub(crate) const KEY_TYPES: &[&str] = &["rsa", "p256", "p384", "p521"];

/// SAN types accepted in `san`.
const SAN_TYPES: &[&str] = &["dns", "email", "upn", "uri", "ip"];

/// Parses and checks a claims document. The error text is for the log and never quotes the
/// document.
pub(crate) fn parse(plaintext: &[u8]) -> Result<Claims, String> {
    if plaintext.len() > MAX_CLAIMS_BYTES {
        return Err(format!("claims exceed {MAX_CLAIMS_BYTES} bytes"));
    }
    let text = std::str::from_utf8(plaintext).map_err(|_| "claims are not UTF-8".to_string())?;
    // First pass: any JSON, refusing duplicate keys anywhere and deep nesting.
    let mut strict = serde_json::Deserializer::from_str(text);
    NoDuplicates::deserialize_at(&mut strict, 0).map_err(|e| format!("claims JSON: {e}"))?;
    strict.end().map_err(|e| format!("claims JSON: {e}"))?;
    let claims: Claims = serde_json::from_str(text).map_err(|e| format!("claims: {e}"))?;
    check(&claims)?;
    Ok(claims)
}

fn check(c: &Claims) -> Result<(), String> {
    if c.v != 1 {
        return Err(format!("unsupported claims version {}", c.v));
    }
    if !(22..=128).contains(&c.id.len())
        || !c
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("id must be 22 to 128 characters of [A-Za-z0-9_-]".into());
    }
    let strings = [&c.iss, &c.template, &c.subject]
        .into_iter()
        .chain(c.device_id.iter())
        .chain(c.user_id.iter())
        .chain(c.tenant.iter())
        .chain(c.san.iter().map(|s| &s.value));
    for s in strings {
        if s.len() > MAX_STRING_BYTES {
            return Err(format!("a string claim exceeds {MAX_STRING_BYTES} bytes"));
        }
    }
    if c.iss.is_empty() || c.template.is_empty() {
        return Err("iss and template must not be empty".into());
    }
    if c.nbf > c.exp {
        return Err("nbf is after exp".into());
    }
    if c.iat > c.exp {
        return Err("iat is after exp".into());
    }
    if c.san.len() > MAX_SANS {
        return Err(format!("more than {MAX_SANS} san entries"));
    }
    if let Some(bad) = c.san.iter().find(|s| !SAN_TYPES.contains(&s.kind.as_str())) {
        return Err(format!("unknown san type {:?}", truncate(&bad.kind)));
    }
    for list in [&c.key_usage, &c.eku, &c.key_types].into_iter().flatten() {
        if list.len() > MAX_LIST {
            return Err(format!("a list claim has more than {MAX_LIST} entries"));
        }
    }
    if let Some(names) = &c.key_usage {
        if let Some(bad) = names
            .iter()
            .find(|n| !KEY_USAGE_NAMES.iter().any(|(k, _)| k == n))
        {
            return Err(format!("unknown key_usage {:?}", truncate(bad)));
        }
    }
    if let Some(oids) = &c.eku {
        if let Some(bad) = oids.iter().find(|o| super::parse_dotted_oid(o).is_none()) {
            return Err(format!("eku {:?} is not a dotted OID", truncate(bad)));
        }
    }
    if let Some(types) = &c.key_types {
        if let Some(bad) = types.iter().find(|t| !KEY_TYPES.contains(&t.as_str())) {
            return Err(format!("unknown key type {:?}", truncate(bad)));
        }
    }
    Ok(())
}

/// At most 64 characters of a claim value, for error messages.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A JSON value that refuses duplicate object keys and nesting deeper than [`MAX_DEPTH`].
struct NoDuplicates;

impl NoDuplicates {
    fn deserialize_at<'de, D: Deserializer<'de>>(d: D, depth: usize) -> Result<(), D::Error> {
        d.deserialize_any(NoDupVisitor { depth })
    }
}

struct NoDupVisitor {
    depth: usize,
}

struct Nested {
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for Nested {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        NoDuplicates::deserialize_at(d, self.depth)
    }
}

impl<'de> Visitor<'de> for NoDupVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nesting too deep"));
        }
        while seq
            .next_element_seed(Nested {
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nesting too deep"));
        }
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Nested {
                depth: self.depth + 1,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> serde_json::Value {
        serde_json::json!({
            "v": 1, "id": "abcdefghijklmnopqrstuv", "iss": "mdm", "iat": 10, "nbf": 10,
            "exp": 100, "template": "devices", "subject": "CN=a", "san": []
        })
    }

    fn parse_value(v: &serde_json::Value) -> Result<Claims, String> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn accepts_the_minimum_and_ignores_unknown_fields() {
        assert!(parse_value(&good()).is_ok());
        let mut v = good();
        v["x-vendor"] = serde_json::json!({"anything": [1, 2]});
        assert!(parse_value(&v).is_ok());
    }

    #[test]
    fn refuses_duplicate_keys_even_unknown_or_nested_ones() {
        let text = good().to_string();
        let dup = text.replacen("\"v\":1", "\"v\":1,\"v\":1", 1);
        assert!(parse(dup.as_bytes()).unwrap_err().contains("duplicate"));
        let dup = text.replacen("{", "{\"z\":1,\"z\":2,", 1);
        assert!(parse(dup.as_bytes()).unwrap_err().contains("duplicate"));
        let dup = text.replacen(
            "\"san\":[]",
            "\"san\":[{\"type\":\"dns\",\"type\":\"ip\",\"value\":\"x\"}]",
            1,
        );
        assert!(parse(dup.as_bytes()).unwrap_err().contains("duplicate"));
    }

    #[test]
    fn refuses_bad_fields() {
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("v", serde_json::json!(2)),
            ("id", serde_json::json!("short")),
            ("id", serde_json::json!("abcdefghijklmnopqrstu+")),
            ("iat", serde_json::json!(-1)),
            ("exp", serde_json::json!(5)),
            ("exp", serde_json::json!("100")),
            ("san", serde_json::json!([{"type": "x400", "value": "a"}])),
            ("key_usage", serde_json::json!(["signing"])),
            ("eku", serde_json::json!(["clientAuth"])),
            ("key_types", serde_json::json!(["ed25519"])),
        ];
        for (field, value) in cases {
            let mut v = good();
            v[field] = value.clone();
            assert!(parse_value(&v).is_err(), "{field} = {value}");
        }
        for field in [
            "v", "id", "iss", "iat", "nbf", "exp", "template", "subject", "san",
        ] {
            let mut v = good();
            v.as_object_mut().unwrap().remove(field);
            assert!(parse_value(&v).is_err(), "without {field}");
        }
    }

    #[test]
    fn refuses_oversized_and_deep_documents() {
        let mut v = good();
        v["pad"] = serde_json::json!("x".repeat(MAX_CLAIMS_BYTES));
        assert!(parse_value(&v).is_err());
        let mut v = good();
        v["deep"] = serde_json::from_str(&format!("{}{}", "[".repeat(20), "]".repeat(20))).unwrap();
        assert!(parse_value(&v).is_err());
        let mut v = good();
        v["san"] = serde_json::json!(vec![serde_json::json!({"type":"dns","value":"a"}); 65]);
        assert!(parse_value(&v).is_err());
    }
}
