//! Issuance profiles: the `[issuance]` table of a template file.
//!
//! [`RawProfile`] is what serde reads (unknown keys are an error, every key has a default);
//! [`RawProfile::validate`] turns it into an immutable [`Profile`], reporting every problem at
//! once. Example (every key shown with its default):
//!
//! ```toml
//! [issuance]
//! validity_days = 365
//! max_validity_days = 365          # defaults to validity_days
//! allow_requested_validity = false
//! backdate_seconds = 300
//! key_usage = ["digitalSignature", "keyEncipherment"]
//! extended_key_usage = ["clientAuth"]
//! key_types = ["rsa", "p256", "p384"]
//! min_rsa_bits = 2048
//! subject_from_csr = true
//! require_subject = true
//! allowed_san_types = ["dns", "email", "upn", "uri", "ip"]
//! allow_sid_extension = false
//! crl_distribution_points = []
//! ocsp_urls = []
//! ca_issuers_urls = []
//! ```

use std::fmt;

use const_oid::ObjectIdentifier;
use der::flagset::FlagSet;
use serde::Deserialize;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};

use crate::extensions::oid;

/// Longest validity a profile may configure (about 100 years): a typo guard.
const MAX_CONFIGURABLE_DAYS: u32 = 36_500;
/// Longest backdating a profile may configure (one day).
const MAX_BACKDATE_SECONDS: u32 = 86_400;

/// The `[issuance]` table of a template, as written. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    /// `validity_days`: validity of issued certificates in days (default 365). notAfter is
    /// issuance time plus this, never later than the CA certificate's notAfter
    /// (RFC 5280 §4.1.2.5).
    #[serde(default = "default_validity_days")]
    pub validity_days: u32,
    /// `max_validity_days`: upper bound for a validity the client requests (default: the
    /// value of `validity_days`). A longer request is clamped to this, not refused.
    #[serde(default)]
    pub max_validity_days: Option<u32>,
    /// `allow_requested_validity`: honour the Microsoft request attributes `ValidityPeriod`
    /// (`Hours`, `Days`, `Weeks`, `Months`, `Years`) and `ValidityPeriodUnits` (a number),
    /// sent as enrollmentNameValuePair (OID 1.3.6.1.4.1.311.13.2.1) attributes in the CSR
    /// (default false: the request is ignored).
    #[serde(default)]
    pub allow_requested_validity: bool,
    /// `backdate_seconds`: notBefore is issuance time minus this, to tolerate clients whose
    /// clocks run slow (default 300, at most 86400).
    #[serde(default = "default_backdate_seconds")]
    pub backdate_seconds: u32,
    /// `key_usage`: the keyUsage bits (RFC 5280 §4.2.1.3), by name: `digitalSignature`,
    /// `nonRepudiation` (or `contentCommitment`), `keyEncipherment`, `dataEncipherment`,
    /// `keyAgreement` (default `["digitalSignature", "keyEncipherment"]`). Marked critical.
    #[serde(default = "default_key_usage")]
    pub key_usage: Vec<String>,
    /// `extended_key_usage`: extKeyUsage purposes (RFC 5280 §4.2.1.12) by name (`clientAuth`,
    /// `serverAuth`, `codeSigning`, `emailProtection`, `ipsecIKE`, `smartcardLogon`) or as
    /// dotted OIDs (default `["clientAuth"]`; an empty list omits the extension).
    #[serde(default = "default_extended_key_usage")]
    pub extended_key_usage: Vec<String>,
    /// `key_types`: subject key types accepted: `rsa`, `p256`, `p384` (default all three).
    #[serde(default = "default_key_types")]
    pub key_types: Vec<String>,
    /// `min_rsa_bits`: smallest RSA modulus accepted: 1024, 2048, 3072 or 4096 (default
    /// 2048). Accepted RSA sizes are exactly 2048, 3072 and 4096 (and 1024 only when this is
    /// set to 1024), at least this value.
    #[serde(default = "default_min_rsa_bits")]
    pub min_rsa_bits: u32,
    /// `subject_from_csr`: copy the subject from the CSR byte for byte (default true). When
    /// false the certificate's subject is empty and its subjectAltName, then required, is
    /// marked critical (RFC 5280 §4.1.2.6).
    #[serde(default = "default_true")]
    pub subject_from_csr: bool,
    /// `require_subject`: refuse a CSR whose subject is empty (default true).
    #[serde(default = "default_true")]
    pub require_subject: bool,
    /// `allowed_san_types`: subjectAltName types a CSR may request: `dns`, `email`, `upn`,
    /// `uri`, `ip` (default all five). Names are copied from the CSR's extensionRequest byte
    /// for byte; a name of any other type refuses the request (it is never silently
    /// dropped).
    #[serde(default = "default_san_types")]
    pub allowed_san_types: Vec<String>,
    /// `allow_sid_extension`: copy the Microsoft SID extension (OID 1.3.6.1.4.1.311.25.2,
    /// strong certificate mapping) from the CSR as is (default false: dropped).
    #[serde(default)]
    pub allow_sid_extension: bool,
    /// `crl_distribution_points`: URLs put in the cRLDistributionPoints extension
    /// (RFC 5280 §4.2.1.13); default empty (no extension).
    #[serde(default)]
    pub crl_distribution_points: Vec<String>,
    /// `ocsp_urls`: OCSP responder URLs for the authorityInfoAccess extension
    /// (RFC 5280 §4.2.2.1); default empty.
    #[serde(default)]
    pub ocsp_urls: Vec<String>,
    /// `ca_issuers_urls`: caIssuers URLs for the authorityInfoAccess extension
    /// (RFC 5280 §4.2.2.1); default empty.
    #[serde(default)]
    pub ca_issuers_urls: Vec<String>,
}

impl Default for RawProfile {
    fn default() -> Self {
        Self {
            validity_days: default_validity_days(),
            max_validity_days: None,
            allow_requested_validity: false,
            backdate_seconds: default_backdate_seconds(),
            key_usage: default_key_usage(),
            extended_key_usage: default_extended_key_usage(),
            key_types: default_key_types(),
            min_rsa_bits: default_min_rsa_bits(),
            subject_from_csr: true,
            require_subject: true,
            allowed_san_types: default_san_types(),
            allow_sid_extension: false,
            crl_distribution_points: Vec::new(),
            ocsp_urls: Vec::new(),
            ca_issuers_urls: Vec::new(),
        }
    }
}

fn default_validity_days() -> u32 {
    365
}
fn default_backdate_seconds() -> u32 {
    300
}
fn default_true() -> bool {
    true
}
fn default_min_rsa_bits() -> u32 {
    2048
}
fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
fn default_key_usage() -> Vec<String> {
    strings(&["digitalSignature", "keyEncipherment"])
}
fn default_extended_key_usage() -> Vec<String> {
    strings(&["clientAuth"])
}
fn default_key_types() -> Vec<String> {
    strings(&["rsa", "p256", "p384"])
}
fn default_san_types() -> Vec<String> {
    strings(&["dns", "email", "upn", "uri", "ip"])
}

/// A subject key type a profile can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA (size bounded by `min_rsa_bits`).
    Rsa,
    /// ECDSA on NIST P-256 (secp256r1).
    P256,
    /// ECDSA on NIST P-384 (secp384r1).
    P384,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Rsa => "rsa",
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
        })
    }
}

/// A subjectAltName type (RFC 5280 §4.2.1.6) a profile can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SanType {
    /// dNSName.
    Dns,
    /// rfc822Name.
    Email,
    /// otherName of type Microsoft UPN (1.3.6.1.4.1.311.20.2.3).
    Upn,
    /// uniformResourceIdentifier (also carries the Intune SID tag URI).
    Uri,
    /// iPAddress.
    Ip,
}

impl fmt::Display for SanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SanType::Dns => "dns",
            SanType::Email => "email",
            SanType::Upn => "upn",
            SanType::Uri => "uri",
            SanType::Ip => "ip",
        })
    }
}

/// A validated, immutable issuance profile. Built only by [`RawProfile::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    name: String,
    validity_days: u32,
    max_validity_days: u32,
    allow_requested_validity: bool,
    backdate_seconds: u32,
    key_usage: FlagSet<KeyUsages>,
    extended_key_usage: Vec<ObjectIdentifier>,
    key_types: Vec<KeyType>,
    min_rsa_bits: u32,
    subject_from_csr: bool,
    require_subject: bool,
    allowed_san_types: Vec<SanType>,
    allow_sid_extension: bool,
    crl_distribution_points: Vec<String>,
    ocsp_urls: Vec<String>,
    ca_issuers_urls: Vec<String>,
}

impl RawProfile {
    /// Checks every key and returns the [`Profile`], or every problem found, each message
    /// naming its key (prefixed with the profile name).
    pub fn validate(self, name: &str) -> Result<Profile, Vec<String>> {
        let mut errors = Vec::new();
        let mut report = |key: &str, message: String| {
            errors.push(format!("profile {name:?}: issuance.{key}: {message}"));
        };
        let max_validity_days = self.max_validity_days.unwrap_or(self.validity_days);
        check_days("validity_days", self.validity_days, &mut report);
        check_days("max_validity_days", max_validity_days, &mut report);
        if max_validity_days < self.validity_days {
            report(
                "max_validity_days",
                format!(
                    "{max_validity_days} is less than validity_days ({})",
                    self.validity_days
                ),
            );
        }
        if self.backdate_seconds > MAX_BACKDATE_SECONDS {
            report(
                "backdate_seconds",
                format!("at most {MAX_BACKDATE_SECONDS}"),
            );
        }
        let key_usage = parse_key_usage(&self.key_usage, &mut report);
        let extended_key_usage = parse_all(
            "extended_key_usage",
            &self.extended_key_usage,
            parse_eku,
            &mut report,
        );
        let key_types = parse_all("key_types", &self.key_types, parse_key_type, &mut report);
        if self.key_types.is_empty() {
            report("key_types", "must name at least one key type".into());
        }
        if !matches!(self.min_rsa_bits, 1024 | 2048 | 3072 | 4096) {
            report(
                "min_rsa_bits",
                format!("{} is not one of 1024, 2048, 3072, 4096", self.min_rsa_bits),
            );
        }
        let allowed_san_types = parse_all(
            "allowed_san_types",
            &self.allowed_san_types,
            parse_san_type,
            &mut report,
        );
        if !self.subject_from_csr && self.allowed_san_types.is_empty() {
            report(
                "allowed_san_types",
                "must allow a type when subject_from_csr = false (the SAN is the only identity)"
                    .into(),
            );
        }
        check_urls(
            "crl_distribution_points",
            &self.crl_distribution_points,
            &mut report,
        );
        check_urls("ocsp_urls", &self.ocsp_urls, &mut report);
        check_urls("ca_issuers_urls", &self.ca_issuers_urls, &mut report);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Profile {
            name: name.to_owned(),
            validity_days: self.validity_days,
            max_validity_days,
            allow_requested_validity: self.allow_requested_validity,
            backdate_seconds: self.backdate_seconds,
            key_usage,
            extended_key_usage,
            key_types,
            min_rsa_bits: self.min_rsa_bits,
            subject_from_csr: self.subject_from_csr,
            require_subject: self.require_subject,
            allowed_san_types,
            allow_sid_extension: self.allow_sid_extension,
            crl_distribution_points: self.crl_distribution_points,
            ocsp_urls: self.ocsp_urls,
            ca_issuers_urls: self.ca_issuers_urls,
        })
    }
}

fn check_days(key: &str, days: u32, report: &mut impl FnMut(&str, String)) {
    if days == 0 || days > MAX_CONFIGURABLE_DAYS {
        report(
            key,
            format!("{days} is not between 1 and {MAX_CONFIGURABLE_DAYS}"),
        );
    }
}

/// Parses every item, reporting each one that fails; duplicates are kept out.
fn parse_all<T: PartialEq>(
    key: &str,
    items: &[String],
    parse: fn(&str) -> Option<T>,
    report: &mut impl FnMut(&str, String),
) -> Vec<T> {
    let mut parsed = Vec::new();
    for item in items {
        match parse(item) {
            Some(value) if !parsed.contains(&value) => parsed.push(value),
            Some(_) => {}
            None => report(key, format!("unknown value {item:?}")),
        }
    }
    parsed
}

fn parse_key_usage(names: &[String], report: &mut impl FnMut(&str, String)) -> FlagSet<KeyUsages> {
    if names.is_empty() {
        report("key_usage", "must name at least one usage".into());
    }
    parse_all("key_usage", names, key_usage_bit, report)
        .into_iter()
        .fold(FlagSet::default(), |set, bit| set | bit)
}

fn key_usage_bit(name: &str) -> Option<KeyUsages> {
    Some(match name {
        "digitalSignature" => KeyUsages::DigitalSignature,
        "nonRepudiation" | "contentCommitment" => KeyUsages::NonRepudiation,
        "keyEncipherment" => KeyUsages::KeyEncipherment,
        "dataEncipherment" => KeyUsages::DataEncipherment,
        "keyAgreement" => KeyUsages::KeyAgreement,
        _ => return None,
    })
}

fn parse_eku(name: &str) -> Option<ObjectIdentifier> {
    Some(match name {
        "clientAuth" => oid::KP_CLIENT_AUTH,
        "serverAuth" => oid::KP_SERVER_AUTH,
        "codeSigning" => oid::KP_CODE_SIGNING,
        "emailProtection" => oid::KP_EMAIL_PROTECTION,
        "ipsecIKE" => oid::KP_IPSEC_IKE,
        "smartcardLogon" => oid::KP_SMARTCARD_LOGON,
        dotted => return crate::parse_dotted_oid(dotted),
    })
}

fn parse_key_type(name: &str) -> Option<KeyType> {
    Some(match name {
        "rsa" => KeyType::Rsa,
        "p256" => KeyType::P256,
        "p384" => KeyType::P384,
        _ => return None,
    })
}

fn parse_san_type(name: &str) -> Option<SanType> {
    Some(match name {
        "dns" => SanType::Dns,
        "email" => SanType::Email,
        "upn" => SanType::Upn,
        "uri" => SanType::Uri,
        "ip" => SanType::Ip,
        _ => return None,
    })
}

/// URLs end up in IA5String GeneralNames: ASCII, no spaces, with a scheme.
fn check_urls(key: &str, urls: &[String], report: &mut impl FnMut(&str, String)) {
    for url in urls {
        let has_scheme = url
            .split_once("://")
            .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty());
        let printable = url.bytes().all(|b| b.is_ascii_graphic());
        if !has_scheme || !printable {
            report(key, format!("{url:?} is not an ASCII URL with a scheme"));
        }
    }
}

impl Profile {
    /// The profile's name (the template it came from).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Default validity in days.
    pub fn validity_days(&self) -> u32 {
        self.validity_days
    }
    /// Upper bound in days for a client-requested validity.
    pub fn max_validity_days(&self) -> u32 {
        self.max_validity_days
    }
    /// Whether the Microsoft ValidityPeriod request attributes are honoured.
    pub fn allow_requested_validity(&self) -> bool {
        self.allow_requested_validity
    }
    /// Seconds notBefore is set before the issuance time.
    pub fn backdate_seconds(&self) -> u32 {
        self.backdate_seconds
    }
    /// The keyUsage bits (RFC 5280 §4.2.1.3).
    pub fn key_usage(&self) -> KeyUsage {
        KeyUsage(self.key_usage)
    }
    /// The extKeyUsage purposes (RFC 5280 §4.2.1.12); empty means no extension.
    pub fn extended_key_usage(&self) -> &[ObjectIdentifier] {
        &self.extended_key_usage
    }
    /// The subject key types accepted.
    pub fn key_types(&self) -> &[KeyType] {
        &self.key_types
    }
    /// The smallest RSA modulus accepted, in bits.
    pub fn min_rsa_bits(&self) -> u32 {
        self.min_rsa_bits
    }
    /// Whether an RSA modulus of `bits` is acceptable under this profile.
    pub fn accepts_rsa_bits(&self, bits: u32) -> bool {
        let standard =
            matches!(bits, 2048 | 3072 | 4096) || (bits == 1024 && self.min_rsa_bits <= 1024);
        standard && bits >= self.min_rsa_bits
    }
    /// Whether the subject is copied from the CSR (else it is empty).
    pub fn subject_from_csr(&self) -> bool {
        self.subject_from_csr
    }
    /// Whether a CSR with an empty subject is refused.
    pub fn require_subject(&self) -> bool {
        self.require_subject
    }
    /// The subjectAltName types a CSR may request.
    pub fn allowed_san_types(&self) -> &[SanType] {
        &self.allowed_san_types
    }
    /// Whether the Microsoft SID extension (1.3.6.1.4.1.311.25.2) is copied from the CSR.
    pub fn allow_sid_extension(&self) -> bool {
        self.allow_sid_extension
    }
    /// cRLDistributionPoints URLs (RFC 5280 §4.2.1.13).
    pub fn crl_distribution_points(&self) -> &[String] {
        &self.crl_distribution_points
    }

    /// The same profile with other cRLDistributionPoints URLs (the URLs are not re-checked:
    /// the caller derives them from validated ones, as a CA rollover does).
    pub fn with_crl_distribution_points(&self, urls: Vec<String>) -> Profile {
        Profile {
            crl_distribution_points: urls,
            ..self.clone()
        }
    }
    /// OCSP URLs for authorityInfoAccess (RFC 5280 §4.2.2.1).
    pub fn ocsp_urls(&self) -> &[String] {
        &self.ocsp_urls
    }
    /// caIssuers URLs for authorityInfoAccess (RFC 5280 §4.2.2.1).
    pub fn ca_issuers_urls(&self) -> &[String] {
        &self.ca_issuers_urls
    }
}

#[cfg(test)]
pub(crate) fn profile_from_toml(text: &str) -> Profile {
    let raw: RawProfile = toml::from_str(text).expect("test TOML parses");
    raw.validate("test").expect("test profile is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let profile = profile_from_toml("");
        assert_eq!(profile.validity_days(), 365);
        assert_eq!(profile.max_validity_days(), 365);
        assert_eq!(profile.backdate_seconds(), 300);
        assert!(profile.key_usage().digital_signature());
        assert!(profile.key_usage().key_encipherment());
        assert_eq!(profile.extended_key_usage(), &[oid::KP_CLIENT_AUTH]);
        assert_eq!(
            profile.key_types(),
            &[KeyType::Rsa, KeyType::P256, KeyType::P384]
        );
        assert_eq!(profile.allowed_san_types().len(), 5);
        assert!(!profile.accepts_rsa_bits(1024));
        assert!(profile.accepts_rsa_bits(2048));
        assert!(!profile.accepts_rsa_bits(2047));
        assert!(!profile.allow_sid_extension());
    }

    #[test]
    fn rsa_1024_only_when_explicit() {
        let profile = profile_from_toml("min_rsa_bits = 1024");
        assert!(profile.accepts_rsa_bits(1024));
        assert!(!profile.accepts_rsa_bits(1536));
        let profile = profile_from_toml("min_rsa_bits = 3072");
        assert!(!profile.accepts_rsa_bits(2048));
        assert!(profile.accepts_rsa_bits(4096));
    }

    #[test]
    fn eku_accepts_names_and_dotted_oids() {
        let profile =
            profile_from_toml(r#"extended_key_usage = ["serverAuth", "1.3.6.1.4.1.311.20.2.2"]"#);
        assert_eq!(
            profile.extended_key_usage(),
            &[oid::KP_SERVER_AUTH, oid::KP_SMARTCARD_LOGON]
        );
    }

    #[test]
    fn validate_reports_every_error_at_once() {
        let raw: RawProfile = toml::from_str(
            r#"
            validity_days = 0
            key_usage = ["digitalSignature", "frobnicate"]
            extended_key_usage = ["notAnEku"]
            key_types = ["rsa", "ed25519"]
            min_rsa_bits = 1536
            allowed_san_types = ["dns", "x400"]
            crl_distribution_points = ["not a url"]
            "#,
        )
        .expect("parses");
        let errors = raw.validate("broken").expect_err("invalid");
        for key in [
            "validity_days",
            "key_usage",
            "extended_key_usage",
            "key_types",
            "min_rsa_bits",
            "allowed_san_types",
            "crl_distribution_points",
        ] {
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(&format!("issuance.{key}:"))),
                "no error for {key}: {errors:?}"
            );
        }
    }

    #[test]
    fn max_below_validity_is_refused() {
        let raw: RawProfile =
            toml::from_str("validity_days = 30\nmax_validity_days = 10").expect("parses");
        let errors = raw.validate("p").expect_err("invalid");
        assert!(errors[0].contains("max_validity_days"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<RawProfile>("validty_days = 3").is_err());
    }
}
