//! The signed challenge: a one-time, MDM-minted blob that says which certificate a device may
//! request, verified locally (the on-premises counterpart of Intune's ValidateRequest).
//!
//! The blob is `base64(ContentInfo(SignedData(eContent = ContentInfo(EnvelopedData(claims)))))`:
//! signed by a trusted MDM key, encrypted to scepd's challenge-decryption certificate, with a
//! UTF-8 JSON claims document inside. `docs/challenge-format.md` is the normative description;
//! [`verify_signed_challenge`] is the check, [`SignedChallenge`] the [`PolicyModule`] around
//! it, and [`mint_challenge`] the minting side for MDMs written in Rust.
//!
//! Like the rest of the crate this does no I/O and reads no clock: the time is an input.

mod claims;
mod csr;
mod dn;
mod layers;
mod mint;

pub use claims::{Claims, San, MAX_CLAIMS_BYTES, MAX_SANS};
pub use mint::{mint_challenge, random_challenge_id, Cipher, KeyTransport, MintError, MintOptions};

use crate::{Approval, Constraints, Decision, Denial, DenialReason, OneTimeRedemption};
use crate::{PolicyInput, PolicyModule};
use base64::Engine;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use x509_cert::request::CertReq;

/// Longest blob accepted, in base64 characters.
pub const MAX_BLOB_CHARS: usize = 64 * 1024;
/// Default allowance for clock differences between the MDM, the device and scepd.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(5 * 60);
/// Default longest validity (`exp - nbf`) of a challenge.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Domain separation for the redemption id (see [`VerifiedClaims::id_digest`]).
const ID_DIGEST_PREFIX: &[u8] = b"scepd signed-challenge id v1\0";

/// One trusted MDM signer: the certificates to anchor on, and optionally the `iss` claim its
/// challenges must carry.
///
/// Any certificate may be a CA (challenges signed by certificates it issued are trusted) or
/// the signer's own certificate (partial chains are accepted).
#[derive(Clone)]
pub struct TrustedSigner {
    certificates: Vec<X509>,
    issuer: Option<String>,
}

impl TrustedSigner {
    /// A signer anchored on `certificates`, with no pinned issuer name.
    pub fn new(certificates: Vec<X509>) -> Self {
        Self {
            certificates,
            issuer: None,
        }
    }

    /// A signer anchored on DER certificates.
    pub fn from_der<'a>(
        certificates: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, openssl::error::ErrorStack> {
        let certificates = certificates
            .into_iter()
            .map(X509::from_der)
            .collect::<Result<_, _>>()?;
        Ok(Self::new(certificates))
    }

    /// Pins the `iss` claim: challenges whose chain reaches only this entry must name `iss`.
    pub fn with_issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = Some(iss.into());
        self
    }

    /// The anchor certificates.
    pub fn certificates(&self) -> &[X509] {
        &self.certificates
    }

    /// The pinned issuer name, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }
}

impl fmt::Debug for TrustedSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subjects: Vec<String> = self
            .certificates
            .iter()
            .map(|c| format!("{:?}", c.subject_name()))
            .collect();
        f.debug_struct("TrustedSigner")
            .field("certificates", &subjects)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// The trust configuration of the signed-challenge verifier.
#[derive(Debug, Clone)]
pub struct SignedChallengeTrust {
    /// Trusted MDM signers; several at once, so that MDM keys can rotate.
    pub signers: Vec<TrustedSigner>,
    /// Allowed clock difference, applied to `nbf`, `exp` and signingTime vs `iat`.
    pub skew: Duration,
    /// Longest `exp - nbf` accepted.
    pub max_lifetime: Duration,
}

impl SignedChallengeTrust {
    /// Trust `signers`, with [`DEFAULT_SKEW`] and [`DEFAULT_MAX_LIFETIME`].
    pub fn new(signers: Vec<TrustedSigner>) -> Self {
        Self {
            signers,
            skew: DEFAULT_SKEW,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        }
    }

    /// The same with another skew.
    pub fn with_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// The same with another longest lifetime.
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    fn anchors(&self) -> Vec<X509> {
        self.signers
            .iter()
            .flat_map(|s| s.certificates.iter().cloned())
            .collect()
    }
}

/// One key challenges may be encrypted to: a certificate (DER) and its RSA private key.
#[derive(Clone)]
pub struct DecryptionKey {
    /// The certificate MDMs encrypt to (matched by issuerAndSerialNumber or
    /// subjectKeyIdentifier).
    pub cert_der: Vec<u8>,
    /// Its private key; only RSA keys are used.
    pub key: PKey<Private>,
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

/// Where the verifier gets its decryption keys for each request, so that the RA can renew
/// its keys without a restart (during a renewal it returns the new and the old pair).
///
/// Implemented by [`StaticKeys`] and by any `Fn() -> Vec<DecryptionKey> + Send + Sync`.
pub trait ChallengeKeys: Send + Sync {
    /// The keys to try, in order of preference.
    fn decryption_keys(&self) -> Vec<DecryptionKey>;
}

/// A fixed set of decryption keys.
#[derive(Debug, Clone)]
pub struct StaticKeys(pub Vec<DecryptionKey>);

impl ChallengeKeys for StaticKeys {
    fn decryption_keys(&self) -> Vec<DecryptionKey> {
        self.0.clone()
    }
}

impl<F> ChallengeKeys for F
where
    F: Fn() -> Vec<DecryptionKey> + Send + Sync,
{
    fn decryption_keys(&self) -> Vec<DecryptionKey> {
        self()
    }
}

/// What a verified challenge said, for the redemption and the log. Holds no secret: the id
/// is kept only as its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    /// SHA-256 over `"scepd signed-challenge id v1\0"` followed by the `id` claim: the key
    /// the RA redeems in its store.
    pub id_digest: [u8; 32],
    /// The `iss` claim.
    pub iss: String,
    /// The `exp` claim.
    pub exp: SystemTime,
    /// When the store may forget the redemption: `exp` plus the skew.
    pub forget_after: SystemTime,
    /// The `device_id` claim.
    pub device_id: Option<String>,
    /// The `user_id` claim.
    pub user_id: Option<String>,
    /// The `tenant` claim.
    pub tenant: Option<String>,
}

impl VerifiedClaims {
    /// The one-time redemption the RA must make before issuing.
    pub fn redemption(&self) -> OneTimeRedemption {
        OneTimeRedemption {
            id: self.id_digest.to_vec(),
            forget_after: self.forget_after,
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn secs_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Verifies a signed challenge `blob` against the request's CSR and template, at `now`.
///
/// In order (the first failure decides the reason):
/// 1. base64, size and the SignedData: signature over the signed attributes, messageDigest
///    over the eContent, SHA-256 or stronger, a signer that chains to `trust` (at the
///    signingTime attribute when present) — else [`DenialReason::SignatureValidationFailed`]
///    (or `ChallengeDeserializationError` for a blob that is not CMS at all);
/// 2. the envelope opens with one of `keys` — else `ChallengeDecryptionError`;
/// 3. the claims parse and follow the rules — else `ChallengeDeserializationError`;
/// 4. signingTime (or, without it, `iat`) is within the skew of `iat`, and the chain is valid
///    at that time; a pinned `iss` matches — else `SignatureValidationFailed`;
/// 5. `nbf - skew <= now`, `iat - skew <= now` and `now <= exp + skew` — else
///    `ChallengeExpired`;
/// 6. the `template` claim equals `template` — else `TemplateMismatch`;
/// 7. the CSR's subject, SANs, key usage, EKU and key (see `docs/challenge-format.md`).
pub fn verify_signed_challenge(
    blob: &str,
    csr: &CertReq,
    template: &str,
    now: SystemTime,
    trust: &SignedChallengeTrust,
    keys: &[DecryptionKey],
) -> Result<VerifiedClaims, Denial> {
    use DenialReason as R;
    let malformed = |detail: String| Denial::new(R::ChallengeDeserializationError, detail);
    let bad_signature = |detail: String| Denial::new(R::SignatureValidationFailed, detail);
    if blob.len() > MAX_BLOB_CHARS {
        return Err(malformed(format!(
            "blob exceeds {MAX_BLOB_CHARS} characters"
        )));
    }
    let der_bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| malformed("blob is not standard base64".into()))?;
    if <::cms::content_info::ContentInfo as der::Decode>::from_der(&der_bytes).is_err() {
        return Err(malformed("blob is not a DER CMS ContentInfo".into()));
    }
    let anchors = trust.anchors();
    let signed = layers::verify_signature(&der_bytes, &anchors).map_err(bad_signature)?;
    // Before decrypting anything, the signer must chain to a trusted MDM; without a
    // signingTime the validity period is checked against `iat` once the claims are read.
    let chain = layers::verify_chain(
        &signed.signer,
        &signed.others,
        &anchors,
        signed.signing_time,
    )
    .map_err(|e| bad_signature(format!("signer not trusted: {e}")))?;
    let pairs: Vec<(Vec<u8>, PKey<Private>)> = keys
        .iter()
        .map(|k| (k.cert_der.clone(), k.key.clone()))
        .collect();
    let plaintext = layers::open_envelope(&signed.econtent, &pairs).map_err(|e| match e {
        layers::OpenError::Malformed(detail) => Denial::new(R::ChallengeDecryptionError, detail),
        layers::OpenError::Undecryptable => Denial::new(
            R::ChallengeDecryptionError,
            "the envelope does not open with any challenge-decryption key",
        ),
    })?;
    let claims = claims::parse(&plaintext).map_err(malformed)?;
    let skew = i64::try_from(trust.skew.as_secs()).unwrap_or(i64::MAX);
    let iat = secs_i64(claims.iat);
    let signed_at = signed.signing_time.unwrap_or(iat);
    if signed_at.abs_diff(iat) > trust.skew.as_secs() {
        return Err(bad_signature(
            "signingTime is further than the skew from iat".into(),
        ));
    }
    let chain = match signed.signing_time {
        Some(_) => chain,
        None => layers::verify_chain(&signed.signer, &signed.others, &anchors, Some(iat))
            .map_err(|e| bad_signature(format!("signer not valid at iat: {e}")))?,
    };
    check_issuer(trust, &chain, &claims.iss).map_err(bad_signature)?;
    if claims.exp.saturating_sub(claims.nbf) > trust.max_lifetime.as_secs() {
        return Err(malformed(format!(
            "exp - nbf exceeds the longest lifetime of {} s",
            trust.max_lifetime.as_secs()
        )));
    }
    let now_s = unix(now);
    if now_s.saturating_add(skew) < secs_i64(claims.nbf) {
        return Err(Denial::new(
            R::ChallengeExpired,
            "challenge is not valid yet (nbf)",
        ));
    }
    if now_s.saturating_add(skew) < iat {
        return Err(Denial::new(
            R::ChallengeExpired,
            "challenge is issued in the future (iat)",
        ));
    }
    if now_s > secs_i64(claims.exp).saturating_add(skew) {
        return Err(Denial::new(
            R::ChallengeExpired,
            "challenge has expired (exp)",
        ));
    }
    if claims.template != template {
        return Err(Denial::new(
            R::TemplateMismatch,
            format!(
                "challenge is for template {:?}, the request came for {template:?}",
                claims::truncate(&claims.template)
            ),
        ));
    }
    csr::check(csr, &claims)?;
    let exp = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(claims.exp))
        .ok_or_else(|| malformed("exp is out of range".into()))?;
    let forget_after = exp
        .checked_add(trust.skew)
        .ok_or_else(|| malformed("exp is out of range".into()))?;
    let mut hasher = Sha256::new();
    hasher.update(ID_DIGEST_PREFIX);
    hasher.update(claims.id.as_bytes());
    Ok(VerifiedClaims {
        id_digest: hasher.finalize().into(),
        iss: claims.iss,
        exp,
        forget_after,
        device_id: claims.device_id,
        user_id: claims.user_id,
        tenant: claims.tenant,
    })
}

/// The `iss` claim must satisfy at least one trust entry whose certificates appear in the
/// verified chain: one that pins no name, or one that pins exactly `iss`.
fn check_issuer(trust: &SignedChallengeTrust, chain: &[Vec<u8>], iss: &str) -> Result<(), String> {
    let in_chain = |signer: &&TrustedSigner| {
        signer
            .certificates
            .iter()
            .any(|c| c.to_der().is_ok_and(|der| chain.contains(&der)))
    };
    let mut entries = trust.signers.iter().filter(in_chain).peekable();
    if entries.peek().is_none() {
        return Err("no trust entry matches the verified chain".into());
    }
    if entries.any(|s| s.issuer.is_none() || s.issuer.as_deref() == Some(iss)) {
        Ok(())
    } else {
        Err(format!(
            "iss {:?} is not the name pinned for this signer",
            claims::truncate(iss)
        ))
    }
}

/// `ObjectIdentifier::new` on dotted text, after checking that every arc is 1 to 9 decimal
/// digits: const-oid 0.9 accumulates an arc in a `u32` without overflow checks, which panics
/// in builds with overflow checks (found by the `signed_challenge` fuzz target).
pub(crate) fn parse_dotted_oid(text: &str) -> Option<const_oid::ObjectIdentifier> {
    let arcs_fit = text
        .split('.')
        .all(|arc| (1..=9).contains(&arc.len()) && arc.bytes().all(|b| b.is_ascii_digit()));
    if arcs_fit {
        const_oid::ObjectIdentifier::new(text).ok()
    } else {
        None
    }
}

/// Entry points for the fuzz targets (`fuzz/`): the parsers of this module on raw input.
#[doc(hidden)]
pub mod fuzzing {
    /// The RFC 4514 parser of the `subject` claim.
    pub fn rfc4514(text: &str) -> bool {
        super::dn::parse_rfc4514(text).is_ok()
    }

    /// The claims parser (JSON, duplicate names, limits, rules).
    pub fn claims(plaintext: &[u8]) -> bool {
        super::claims::parse(plaintext).is_ok()
    }

    /// The whole verifier with no trusted signer and no key: everything up to the signature.
    pub fn blob(blob: &str, csr: &x509_cert::request::CertReq) -> bool {
        let trust = super::SignedChallengeTrust::new(Vec::new());
        let now = std::time::SystemTime::UNIX_EPOCH;
        super::verify_signed_challenge(blob, csr, "t", now, &trust, &[]).is_ok()
    }
}

/// The signed-challenge verifier as a [`PolicyModule`] (name `"signed-challenge"`).
///
/// Approves with empty [`Constraints`] (every CSR check is done here) and a
/// [`OneTimeRedemption`] of the challenge id, which the RA redeems atomically; a second use
/// is refused there as [`DenialReason::ReusedChallenge`].
#[derive(Clone)]
pub struct SignedChallenge {
    trust: SignedChallengeTrust,
    keys: Arc<dyn ChallengeKeys>,
}

impl SignedChallenge {
    /// A verifier with the given trust configuration and decryption-key source.
    pub fn new(trust: SignedChallengeTrust, keys: Arc<dyn ChallengeKeys>) -> Self {
        Self { trust, keys }
    }

    /// The trust configuration.
    pub fn trust(&self) -> &SignedChallengeTrust {
        &self.trust
    }
}

impl fmt::Debug for SignedChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedChallenge")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl PolicyModule for SignedChallenge {
    fn name(&self) -> &'static str {
        "signed-challenge"
    }

    fn evaluate(&self, input: &PolicyInput<'_>) -> Decision {
        let Some(blob) = input.challenge.filter(|c| !c.is_empty()) else {
            return Decision::deny(
                DenialReason::MissingChallenge,
                format!("template {:?} requires a signed challenge", input.template),
            );
        };
        let keys = self.keys.decryption_keys();
        match verify_signed_challenge(
            blob,
            input.csr,
            input.template,
            input.now,
            &self.trust,
            &keys,
        ) {
            Ok(verified) => Decision::Approve(Approval::new(
                Constraints::default(),
                Some(verified.redemption()),
            )),
            Err(denial) => Decision::Deny(denial),
        }
    }
}

#[cfg(test)]
mod tests {
    /// Found by the fuzz target: an OID arc too large for a `u32` panicked in const-oid.
    #[test]
    fn oversized_oid_arcs_are_refused_not_a_panic() {
        for text in [
            "888883333333=338",
            "1.2.99999999999=x",
            "OID.2.5.4.3.4294967296=x",
        ] {
            assert!(!super::fuzzing::rfc4514(text), "{text}");
        }
        assert!(super::parse_dotted_oid("2.5.4.3").is_some());
        assert!(super::parse_dotted_oid("1.3.6.1.4.1.311.20.2.3").is_some());
        for bad in ["", "1..2", "1.2.", "1.2.3a", "1.2.1234567890"] {
            assert!(super::parse_dotted_oid(bad).is_none(), "{bad:?}");
        }
    }

    /// Bounded mutations of valid inputs through the fuzz entry points: none may panic.
    #[test]
    fn parsers_survive_mutated_input() {
        let subject = r"CN=Doe\, J\C3\A9+UID=jd,OU=Devices,O=Example,DC=corp,2.5.4.97=x";
        let claims = br#"{"v":1,"id":"abcdefghijklmnopqrstuv","iss":"m","iat":1,"nbf":1,"exp":2,"template":"t","subject":"CN=a","san":[{"type":"ip","value":"::1"}],"key_usage":["digitalSignature"]}"#;
        let mut state: u32 = 0x1234_5678;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize
        };
        for _ in 0..20_000 {
            let mut s = subject.as_bytes().to_vec();
            let mut c = claims.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let i = next() % s.len();
                s[i] = b",+=\\#\" ;"[next() % 8];
                let j = next() % c.len();
                c[j] = (next() % 256) as u8;
            }
            if let Ok(text) = std::str::from_utf8(&s) {
                super::fuzzing::rfc4514(text);
            }
            super::fuzzing::claims(&c);
        }
    }
}
