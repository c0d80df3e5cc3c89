//! Reading a SCEP HTTP request: which endpoint, which operation, which message (RFC 8894 §4.1).
//! Pure functions over the request line and body; no sockets.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// What a path names. Matched case-insensitively, as IIS does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/healthz`
    Health,
    /// A SCEP path; `None` is the default template.
    Scep(Option<String>),
    /// `/crl/<name>.crl`: the CRL of the CA called `<name>` (lowercased).
    Crl(String),
    /// `/ocsp` (POST) or `/ocsp/<base64 request>` (GET), RFC 6960 Appendix A.1.
    Ocsp,
    /// Anything else.
    NotFound,
}

/// The SCEP operations (RFC 8894 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GetCACaps
    GetCaCaps,
    /// GetCACert
    GetCaCert,
    /// GetNextCACert
    GetNextCaCert,
    /// PKIOperation
    PkiOperation,
}

impl Operation {
    /// The operation named by `operation=`, compared without case (clients vary).
    pub fn parse(name: &str) -> Option<Self> {
        [
            ("GetCACaps", Self::GetCaCaps),
            ("GetCACert", Self::GetCaCert),
            ("GetNextCACert", Self::GetNextCaCert),
            ("PKIOperation", Self::PkiOperation),
        ]
        .into_iter()
        .find(|(wire, _)| wire.eq_ignore_ascii_case(name))
        .map(|(_, op)| op)
    }

    /// The wire name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetCaCaps => "GetCACaps",
            Self::GetCaCert => "GetCACert",
            Self::GetNextCaCert => "GetNextCACert",
            Self::PkiOperation => "PKIOperation",
        }
    }
}

/// The fixed paths that serve the default template: SCEP's default, NDES's, and ours.
const DEFAULT_PATHS: [&str; 5] = [
    "/scep",
    "/cgi-bin/pkiclient.exe",
    "/certsrv/mscep/mscep.dll",
    "/certsrv/mscep/mscep.dll/pkiclient.exe",
    "/certsrv/mscep",
];

/// Classifies a request path (without its query).
pub fn classify_path(path: &str) -> Endpoint {
    let lower = path.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('/');
    if trimmed == "/healthz" {
        return Endpoint::Health;
    }
    if DEFAULT_PATHS.contains(&trimmed) {
        return Endpoint::Scep(None);
    }
    if trimmed == "/ocsp" || trimmed.starts_with("/ocsp/") {
        return Endpoint::Ocsp;
    }
    if let Some(name) = trimmed
        .strip_prefix("/crl/")
        .and_then(|rest| rest.strip_suffix(".crl"))
    {
        return if is_name(name) {
            Endpoint::Crl(name.to_owned())
        } else {
            Endpoint::NotFound
        };
    }
    // `/scep/<template>`, optionally followed by `/pkiclient.exe` as Cisco and Windows append.
    let Some(rest) = trimmed.strip_prefix("/scep/") else {
        return Endpoint::NotFound;
    };
    let name = rest.strip_suffix("/pkiclient.exe").unwrap_or(rest);
    if is_name(name) {
        Endpoint::Scep(Some(name.to_owned()))
    } else {
        Endpoint::NotFound
    }
}

/// A template or CA name: letters, digits, `-`, `_`.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The DER OCSPRequest of a GET (RFC 6960 Appendix A.1): the path after `/ocsp/`,
/// percent-decoded, then base64 (padding optional; unescaped `+` and `/`, and the URL-safe
/// alphabet, accepted). `None` when there is none or it is not base64.
pub fn ocsp_get_request(path: &str) -> Option<Vec<u8>> {
    let prefix = path.get(..6)?;
    if !prefix.eq_ignore_ascii_case("/ocsp/") {
        return None;
    }
    let encoded = path.get(6..)?;
    let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
    decode_message(&decoded)
}

/// The two query parameters SCEP uses, percent-decoded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScepQuery {
    /// `operation`
    pub operation: Option<String>,
    /// `message` (base64 for PKIOperation, free text for the others)
    pub message: Option<String>,
}

/// Splits a query string. `+` is kept as `+`: SCEP's base64 is not form encoding, and clients
/// send `+` unescaped (RFC 8894 §4.1 says to percent-encode it; many don't).
pub fn parse_query(query: &str) -> ScepQuery {
    let mut out = ScepQuery::default();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8_lossy()
            .into_owned();
        if name.eq_ignore_ascii_case("operation") {
            out.operation = Some(value);
        } else if name.eq_ignore_ascii_case("message") {
            out.message = Some(value);
        }
    }
    out
}

const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes a GET PKIOperation `message`: standard base64, padding optional, line breaks
/// ignored; a space (a `+` that a proxy form-decoded) and the URL-safe alphabet are mapped back.
pub fn decode_message(message: &str) -> Option<Vec<u8>> {
    let cleaned: String = message
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\t'))
        .map(|c| match c {
            ' ' | '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    LENIENT_BASE64
        .decode(cleaned.trim_end_matches('='))
        .ok()
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_without_case_and_with_suffixes() {
        assert_eq!(classify_path("/scep"), Endpoint::Scep(None));
        assert_eq!(
            classify_path("/CertSrv/mscep/mscep.dll"),
            Endpoint::Scep(None)
        );
        assert_eq!(
            classify_path("/certsrv/mscep/mscep.dll/pkiclient.exe"),
            Endpoint::Scep(None)
        );
        assert_eq!(
            classify_path("/cgi-bin/PKICLIENT.EXE"),
            Endpoint::Scep(None)
        );
        assert_eq!(
            classify_path("/scep/WiFi"),
            Endpoint::Scep(Some("wifi".into()))
        );
        assert_eq!(
            classify_path("/scep/wifi/pkiclient.exe"),
            Endpoint::Scep(Some("wifi".into()))
        );
        assert_eq!(classify_path("/scep/../etc"), Endpoint::NotFound);
        assert_eq!(classify_path("/healthz"), Endpoint::Health);
        assert_eq!(classify_path("/other"), Endpoint::NotFound);
        assert_eq!(classify_path("/crl/CA.crl"), Endpoint::Crl("ca".into()));
        assert_eq!(classify_path("/crl/a/b.crl"), Endpoint::NotFound);
        assert_eq!(classify_path("/crl/.crl"), Endpoint::NotFound);
        assert_eq!(classify_path("/ocsp"), Endpoint::Ocsp);
        assert_eq!(classify_path("/ocsp/MEow+/=="), Endpoint::Ocsp);
    }

    #[test]
    fn ocsp_get_request_is_percent_decoded_base64() {
        let der = vec![0x30, 0xfb, 0xff, 0x01];
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        assert_eq!(ocsp_get_request(&format!("/ocsp/{b64}")), Some(der.clone()));
        let escaped = b64
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(ocsp_get_request(&format!("/OCSP/{escaped}")), Some(der));
        assert_eq!(ocsp_get_request("/ocsp/"), None);
        assert_eq!(ocsp_get_request("/ocsp"), None);
        assert_eq!(ocsp_get_request("/ocsp/!!"), None);
    }

    #[test]
    fn query_keeps_plus_and_decodes_percent() {
        let q = parse_query("operation=PKIOperation&message=ab+c%2Bd%2F%3D");
        assert_eq!(q.operation.as_deref(), Some("PKIOperation"));
        assert_eq!(q.message.as_deref(), Some("ab+c+d/="));
    }

    #[test]
    fn message_decoding_is_lenient_the_way_clients_need() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        let padded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(decode_message(&padded).unwrap(), bytes);
        assert_eq!(decode_message(padded.trim_end_matches('=')).unwrap(), bytes);
        assert_eq!(decode_message(&padded.replace('+', " ")).unwrap(), bytes);
        let wrapped: String = padded
            .as_bytes()
            .chunks(64)
            .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
            .collect();
        assert_eq!(decode_message(&wrapped).unwrap(), bytes);
        assert!(decode_message("!!!").is_none());
        assert!(decode_message("").is_none());
    }
}
