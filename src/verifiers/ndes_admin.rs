//! NDES's password page, `/certsrv/mscep_admin/` on the SCEP listener(s), which MDMs such as
//! Fleet scrape for a one-time password (intune.md §5.1).
//!
//! - `/certsrv/mscep_admin` answers 301 to `/certsrv/mscep_admin/`, as IIS does.
//! - HTTP Basic authentication against `[ndes_admin] users_file`: a missing or wrong user or
//!   password gets 401 with `WWW-Authenticate: Basic realm="scepd"`.
//! - A user with the `enroll` permission gets a fresh password of `[ndes_admin] template`;
//!   one without it gets NDES's "You do not have sufficient permission to enroll with SCEP."
//!   page; with the template's cap reached, "The password cache is full." (both 200, as NDES).
//! - The page is UTF-16LE with a BOM (`Content-Type: text/html; charset=utf-16`) and carries
//!   the CA thumbprint as NDES shows it: MD5 of the CA certificate's DER, four groups of eight
//!   uppercase hex digits.
//!
//! Users file: one user per line, `name:sha256-hex-of-password[:permissions]`, where
//! permissions is a comma-separated list and `enroll` is the only one defined; `#` starts a
//! comment line. A user listed without `enroll` can sign in but gets the permission page
//! (NDES's answer to an account without enroll rights on the template). Names may not contain
//! `:`. Passwords are compared as SHA-256 digests in constant time; the digest is unsalted, so
//! use long random passwords (`openssl rand -hex 16`), as for the admin token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use subtle::{Choice, ConstantTimeEq};

use scepd_ca::CaBackend;

use super::otp::{self, MintError};
use crate::config::{NdesAdminConfig, NdesUser, OtpConfig};
use crate::store::Store;

/// The page's path, as NDES serves it.
pub const PATH: &str = "/certsrv/mscep_admin/";

/// Parses a users file (see the module documentation); every problem at once.
pub fn parse_users(text: &str) -> Result<Vec<NdesUser>, Vec<String>> {
    let mut users: Vec<NdesUser> = Vec::new();
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = number + 1;
        let mut fields = line.split(':');
        let (Some(name), Some(digest_hex)) = (fields.next(), fields.next()) else {
            problems.push(format!("line {number}: expected name:sha256-hex[:enroll]"));
            continue;
        };
        let permissions = fields.next().unwrap_or("");
        if fields.next().is_some() {
            problems.push(format!("line {number}: too many ':'"));
            continue;
        }
        let digest = hex::decode(digest_hex.trim())
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok());
        let Some(password_digest) = digest else {
            problems.push(format!(
                "line {number}: the password must be given as 64 hex digits of its SHA-256"
            ));
            continue;
        };
        let name = name.trim();
        if name.is_empty() {
            problems.push(format!("line {number}: empty user name"));
            continue;
        }
        let mut may_enroll = false;
        for permission in permissions
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match permission {
                "enroll" => may_enroll = true,
                other => problems.push(format!(
                    "line {number}: unknown permission {other:?} (only \"enroll\")"
                )),
            }
        }
        if users.iter().any(|u| u.name == name) {
            problems.push(format!("line {number}: user {name:?} listed twice"));
            continue;
        }
        users.push(NdesUser {
            name: name.to_owned(),
            password_digest,
            may_enroll,
        });
    }
    if users.is_empty() && problems.is_empty() {
        problems.push("no users".into());
    }
    if problems.is_empty() {
        Ok(users)
    } else {
        Err(problems)
    }
}

/// The page's state: the users, the template, the store and the CA.
pub struct NdesAdmin {
    config: NdesAdminConfig,
    otp: OtpConfig,
    store: Arc<dyn Store>,
    ca: Arc<dyn CaBackend>,
}

impl NdesAdmin {
    /// `otp` is the settings of `config.template` (validated to be an `otp` template).
    pub fn new(
        config: NdesAdminConfig,
        otp: OtpConfig,
        store: Arc<dyn Store>,
        ca: Arc<dyn CaBackend>,
    ) -> Self {
        Self {
            config,
            otp,
            store,
            ca,
        }
    }

    /// The user these Basic credentials sign in, if any; every user is compared, in constant
    /// time, so neither names nor passwords leak through timing.
    fn authenticate(&self, request: &Request<Bytes>) -> Option<&NdesUser> {
        let encoded = request
            .headers()
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, password) = decoded.split_once(':')?;
        let name_digest = openssl::sha::sha256(name.as_bytes());
        let password_digest = openssl::sha::sha256(password.as_bytes());
        let mut found = None;
        for user in &self.config.users {
            let same_name = openssl::sha::sha256(user.name.as_bytes()).ct_eq(&name_digest);
            let same_password = user.password_digest.ct_eq(&password_digest);
            let matched: Choice = same_name & same_password;
            if bool::from(matched) {
                found = Some(user);
            }
        }
        found
    }

    fn page(&self, request: &Request<Bytes>) -> Response<Bytes> {
        // GET only: every answer to an authorised GET spends a place in the password cache,
        // which a HEAD (or a prefetch by another method) must not do.
        if request.method() != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        let Some(user) = self.authenticate(request) else {
            tracing::info!(page = PATH, outcome = "unauthenticated", "NDES admin page");
            let mut response = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"scepd\""),
            );
            return response;
        };
        if !user.may_enroll {
            tracing::info!(page = PATH, user = %user.name, outcome = "not permitted", "NDES admin page");
            return utf16_page(&no_permission_html());
        }
        let thumbprint = match self.ca.chain().first() {
            Some(ca) => md5_thumbprint(ca),
            None => return plain(StatusCode::SERVICE_UNAVAILABLE, "no CA certificate\n"),
        };
        match otp::mint(
            &*self.store,
            &self.config.template,
            &self.otp,
            SystemTime::now(),
        ) {
            Ok(minted) => {
                tracing::info!(page = PATH, user = %user.name, template = %self.config.template, expires_at = minted.expires_at_unix(), outcome = "issued", "NDES admin page");
                utf16_page(&password_html(
                    &thumbprint,
                    &minted.password,
                    &otp::ttl_text(self.otp.ttl),
                ))
            }
            Err(MintError::CacheFull { .. }) => {
                tracing::info!(page = PATH, user = %user.name, template = %self.config.template, outcome = "cache full", "NDES admin page");
                utf16_page(&cache_full_html())
            }
            Err(e) => {
                tracing::error!(page = PATH, error = %e, "NDES admin page: no password");
                plain(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n")
            }
        }
    }
}

/// The page for a validated `[ndes_admin]`; `Err` when its template has no `otp` settings
/// (configuration validation already refuses that).
pub fn build(
    config: &NdesAdminConfig,
    otp_templates: &BTreeMap<String, OtpConfig>,
    store: Arc<dyn Store>,
    ca: Arc<dyn CaBackend>,
) -> Result<NdesAdmin, String> {
    let otp = otp_templates
        .get(&config.template)
        .copied()
        .ok_or_else(|| {
            format!(
                "ndes_admin.template: {:?} does not use one-time passwords",
                config.template
            )
        })?;
    Ok(NdesAdmin::new(config.clone(), otp, store, ca))
}

/// The answer for `/certsrv/mscep_admin[/]`, or `None` for any other path (or when the page
/// is not enabled, so those paths get the listener's usual 404).
pub fn route(admin: Option<&NdesAdmin>, request: &Request<Bytes>) -> Option<Response<Bytes>> {
    let admin = admin?;
    let path = request.uri().path().to_ascii_lowercase();
    if path == "/certsrv/mscep_admin" {
        let mut response = plain(StatusCode::MOVED_PERMANENTLY, "moved\n");
        response
            .headers_mut()
            .insert(header::LOCATION, header::HeaderValue::from_static(PATH));
        return Some(response);
    }
    (path == PATH).then(|| admin.page(request))
}

/// MD5 of the certificate, as NDES shows it: `4D4F5E67 0B0E2C1A ...` (4 groups of 8).
pub fn md5_thumbprint(der: &[u8]) -> String {
    let digest = openssl::hash::hash(openssl::hash::MessageDigest::md5(), der)
        .map(|d| hex::encode_upper(d.as_ref()))
        .unwrap_or_default();
    digest
        .as_bytes()
        .chunks(8)
        .map(|group| String::from_utf8_lossy(group).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

const HEAD: &str = "<HTML><Head><Meta HTTP-Equiv=\"Content-Type\" Content=\"text/html; charset=UTF-16\">\
<Title>Network Device Enrollment Service</Title></Head><Body BgColor=#FFFFFF><Font ID=locPageFont Face=\"Arial\">\
<Table Border=0 CellSpacing=0 CellPadding=4 Width=100% BgColor=#008080><TR><TD><Font Color=#FFFFFF>\
<Font Face=\"Arial\" Size=-1><B><I>scepd</I></B></Font> Network Device Enrollment Service</Font></TD></TR></Table>\
<P ID=locPageTitle> <B> Network Device Enrollment Service</B>";
const TAIL: &str = "<P></Font></Body></HTML>";

fn password_html(thumbprint: &str, password: &str, ttl: &str) -> String {
    format!(
        "{HEAD}<P> Network Device Enrollment Service allows you to obtain certificates for routers or other \
network devices using the Simple Certificate Enrollment Protocol (SCEP). <P> To complete certificate \
enrollment for your network device you will need the following information: <P> The thumbprint (hash value) \
for the CA certificate is: <B> {thumbprint} </B> <P> The enrollment challenge password is: <B> {password} </B> \
<P> This password can be used only once and will expire within {ttl}. <P> Each enrollment requires a new \
challenge password. You can refresh this web page to obtain a new challenge password. {TAIL}"
    )
}

fn cache_full_html() -> String {
    format!(
        "{HEAD}<P> The password cache is full. <P> You can wait for previously obtained passwords to expire \
or use the passwords that were already obtained for enrollment. {TAIL}"
    )
}

fn no_permission_html() -> String {
    format!(
        "{HEAD}<P> You do not have sufficient permission to enroll with SCEP. Please contact your system \
administrator. {TAIL}"
    )
}

/// UTF-16LE with a byte-order mark, as NDES sends it.
fn utf16_page(html: &str) -> Response<Bytes> {
    let mut body = vec![0xFF, 0xFE];
    body.extend(html.encode_utf16().flat_map(u16::to_le_bytes));
    let mut response = Response::new(Bytes::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-16"),
    );
    // A password page must not be cached by anything in between.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(text.as_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PW_DIGEST: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn users_file_lines_and_problems() {
        let text = format!("# admins\nalice:{PW_DIGEST}:enroll\n\nbob:{PW_DIGEST}\n");
        let users = parse_users(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users[0].may_enroll && !users[1].may_enroll);
        assert_eq!(users[0].password_digest, openssl::sha::sha256(b"password"));
        let bad = format!("alice\nbob:beef\ncarol:{PW_DIGEST}:root\ndave:{PW_DIGEST}:enroll:x\nalice2:{PW_DIGEST}\nalice2:{PW_DIGEST}\n");
        let problems = parse_users(&bad).unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(parse_users("# nobody\n").is_err());
        // The digest never shows in Debug.
        assert!(!format!("{:?}", users[0]).contains("5e88"));
    }

    #[test]
    fn thumbprint_is_four_groups_of_eight_uppercase_hex() {
        let t = md5_thumbprint(b"abc");
        assert_eq!(t, "90015098 3CD24FB0 D6963F7D 28E17F72");
    }

    #[test]
    fn page_is_utf16le_with_a_bom() {
        let response = utf16_page(&password_html("A B C D", "0123456789ABCDEF", "60 minutes"));
        let body = response.body();
        assert_eq!(&body[..2], &[0xFF, 0xFE]);
        let units: Vec<u16> = body[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let text = String::from_utf16(&units).unwrap();
        assert!(text.contains("The enrollment challenge password is: <B> 0123456789ABCDEF </B>"));
        assert!(
            text.contains("This password can be used only once and will expire within 60 minutes.")
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-16"
        );
    }
}
