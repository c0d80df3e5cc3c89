//! CA rollover (issue 4 item 7). A CA *generation* is one CA key and certificate with its RA
//! certificates. The first generation is the CA in scepd.toml's `[ca]` (and `[ra]`); each
//! `scepd ca rollover` appends the next one to `rollover.toml` beside scepd.toml, with the time
//! it takes over. GetNextCACert (RFC 8894 §3.5.3, §4.7) offers a generation until that time;
//! from then on it issues. Every generation stays in service for what its certificates need
//! after the switch: its own CRL at `/crl/<name>.crl`, OCSP answers, and renewals. Nothing has
//! to be moved or finished by hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use scepd_ca::{
    CaBackend, CaError, CaSignature, IssueRequest, Issued, Profile, RevocationReason, RevokedEntry,
    SoftwareCa,
};
use serde::Deserialize;

use crate::config::{Config, RaConfig};
use crate::keys::{self, KeyError, KeyPair, RaIdentity};
use crate::scep::attributes::AttributeWriter;
use crate::scep::signed::{certs_only, sign_message, SignatureStyle, Signing};
use crate::scep::DigestAlg;

/// The file, beside scepd.toml, that lists the generations after the first.
pub const FILE_NAME: &str = "rollover.toml";

/// `rollover.toml`, as `scepd ca rollover` writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollover {
    /// The generations after `[ca]`, oldest first.
    #[serde(default)]
    pub generation: Vec<RawGeneration>,
}

/// One `[[generation]]` of `rollover.toml`. Paths are relative to its directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeneration {
    /// Its name in URLs: its certificates name `/crl/<name>.crl`.
    pub name: String,
    /// When it takes over (RFC 3339).
    pub switch_at: String,
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// Its key (PEM; encrypted with the `[ca]` key's passphrase, if that has one).
    pub ca_key: PathBuf,
    /// The RA signing certificate, issued by this CA.
    pub ra_sign_cert: Option<PathBuf>,
    /// Its key.
    pub ra_sign_key: Option<PathBuf>,
    /// The RA encryption certificate, issued by this CA.
    pub ra_encrypt_cert: Option<PathBuf>,
    /// Its key.
    pub ra_encrypt_key: Option<PathBuf>,
}

/// One CA generation, loaded.
pub struct Generation {
    /// Its name in URLs (`[ca] name` for the first).
    pub name: String,
    /// When it takes over; `None` for the first, in charge from the start.
    pub switch_at: Option<SystemTime>,
    /// The CA.
    pub ca: Arc<SoftwareCa>,
    /// The RA signing and encryption pairs; without `[ra]`, the CA pair for both.
    pub ra: (KeyPair, KeyPair),
    /// Where the RA pairs live, so that they can renew themselves; `None` without `[ra]`.
    pub ra_files: Option<RaConfig>,
}

impl Generation {
    /// The RA identity of this generation, keeping `grace` as extra decryption keys.
    pub fn ra_identity(&self, grace: impl IntoIterator<Item = KeyPair>) -> RaIdentity {
        let mut decrypters = vec![self.ra.1.clone()];
        decrypters.extend(grace);
        RaIdentity {
            signer: self.ra.0.clone(),
            decrypters,
            has_ra_certificates: self.ra_files.is_some(),
        }
    }

    /// Whether its CA certificate has expired by `now` (its certificates have too).
    fn expired(&self, now: SystemTime) -> bool {
        self.ca.not_after() <= now
    }
}

/// Every CA generation, oldest first; the first is `[ca]`.
pub struct Generations {
    list: Vec<Generation>,
}

/// Why a rollover could not be read or answered.
#[derive(Debug, thiserror::Error)]
pub enum RolloverError {
    /// rollover.toml is unreadable or invalid.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A certificate or key named in it.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A CA cannot be used.
    #[error("CA generation: {0}")]
    Ca(#[from] CaError),
    /// The GetNextCACert body could not be built.
    #[error("GetNextCACert: {0}")]
    Encode(String),
}

/// Reads `rollover.toml` beside `config_path` (an empty list when there is none).
pub fn read_raw(config_path: &Path) -> Result<RawRollover, RolloverError> {
    let path = record_path(config_path);
    if !path.exists() {
        return Ok(RawRollover::default());
    }
    let invalid = |reason: String| RolloverError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
    toml::from_str(&text).map_err(|e| invalid(e.to_string()))
}

/// `rollover.toml`'s path for `config_path`.
pub fn record_path(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(FILE_NAME)
}

impl Generations {
    /// The first generation (`first`, with `first_ra` from `[ra]`) and those `rollover.toml`
    /// lists. Their keys are decrypted with `passphrase` (the `[ca]` key's).
    pub fn load(
        config_path: &Path,
        config: &Config,
        first: Arc<SoftwareCa>,
        first_ra: &RaIdentity,
        passphrase: Option<&[u8]>,
    ) -> Result<Self, RolloverError> {
        let decrypter = first_ra
            .current_decrypter()
            .cloned()
            .unwrap_or_else(|| first_ra.signer.clone());
        let mut list = vec![Generation {
            name: config.ca_name.clone(),
            switch_at: None,
            ca: first,
            ra: (first_ra.signer.clone(), decrypter),
            ra_files: config.ra.clone(),
        }];
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let path = record_path(config_path);
        let invalid = |reason: String| RolloverError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        for raw in read_raw(config_path)?.generation {
            let generation = load_generation(dir, &raw, config, passphrase, &invalid)?;
            let previous = list.last().and_then(|g| g.switch_at);
            if previous.is_some_and(|p| generation.switch_at <= Some(p)) {
                return Err(invalid(format!(
                    "generation {} must switch after the one before it",
                    generation.name
                )));
            }
            if list.iter().any(|g| g.name == generation.name) {
                return Err(invalid(format!(
                    "two generations named {}",
                    generation.name
                )));
            }
            list.push(generation);
        }
        Ok(Self { list })
    }

    /// A single generation (no rollover), for tests and tools.
    pub fn single(generation: Generation) -> Self {
        Self {
            list: vec![generation],
        }
    }

    /// Every generation, oldest first.
    pub fn all(&self) -> &[Generation] {
        &self.list
    }

    /// Every generation whose certificates may still be in use at `now`: those whose CA
    /// certificate has not expired, and always the one in charge.
    pub fn in_service(&self, now: SystemTime) -> impl Iterator<Item = &Generation> {
        let active = self.active_index(now);
        self.list
            .iter()
            .enumerate()
            .filter(move |(i, g)| *i == active || !g.expired(now))
            .map(|(_, g)| g)
    }

    /// Index of the generation in charge at `now`: the last one whose switch time has come
    /// (the first has none and is always a candidate).
    fn active_index(&self, now: SystemTime) -> usize {
        self.list
            .iter()
            .rposition(|g| g.switch_at.is_none_or(|at| at <= now))
            .unwrap_or(0)
    }

    /// The generation in charge at `now`.
    pub fn active_at(&self, now: SystemTime) -> &Generation {
        // `list` is never empty (`load` and `single` put one in), and the index is in range.
        &self.list[self.active_index(now)]
    }

    /// The generation before the one in charge at `now` (its RA encryption key is kept as a
    /// grace decryption key after a switch).
    pub fn previous_at(&self, now: SystemTime) -> Option<&Generation> {
        self.active_index(now)
            .checked_sub(1)
            .and_then(|i| self.list.get(i))
    }

    /// The generation that takes over after `now`, if one is prepared.
    pub fn next_at(&self, now: SystemTime) -> Option<&Generation> {
        self.list.get(self.active_index(now) + 1)
    }
}

fn load_generation(
    dir: &Path,
    raw: &RawGeneration,
    config: &Config,
    passphrase: Option<&[u8]>,
    invalid: &dyn Fn(String) -> RolloverError,
) -> Result<Generation, RolloverError> {
    if !is_url_name(&raw.name) {
        return Err(invalid(format!(
            "generation name {:?} must be letters, digits, '-' or '_'",
            raw.name
        )));
    }
    let switch_at = parse_rfc3339(&raw.switch_at).map_err(invalid)?;
    let ca_pair = keys::load_pair(&dir.join(&raw.ca_cert), &dir.join(&raw.ca_key), passphrase)?;
    let ca = SoftwareCa::from_parts(ca_pair.cert_der.clone(), ca_pair.key.clone(), Vec::new())?;
    let (ra, ra_files) = match (
        &raw.ra_sign_cert,
        &raw.ra_sign_key,
        &raw.ra_encrypt_cert,
        &raw.ra_encrypt_key,
    ) {
        (Some(sc), Some(sk), Some(ec), Some(ek)) => {
            let files = RaConfig {
                sign_cert: dir.join(sc),
                sign_key: dir.join(sk),
                encrypt_cert: dir.join(ec),
                encrypt_key: dir.join(ek),
                renew_before: config
                    .ra
                    .as_ref()
                    .map_or(crate::ra_renewal::DEFAULT_WINDOW, |ra| ra.renew_before),
            };
            let pairs = (
                keys::load_pair(&files.sign_cert, &files.sign_key, None)?,
                keys::load_pair(&files.encrypt_cert, &files.encrypt_key, None)?,
            );
            (pairs, Some(files))
        }
        (None, None, None, None) => ((ca_pair.clone(), ca_pair), None),
        _ => return Err(invalid("the ra_* entries go together".into())),
    };
    Ok(Generation {
        name: raw.name.clone(),
        switch_at: Some(switch_at),
        ca: Arc::new(ca),
        ra,
        ra_files,
    })
}

/// Whether `name` can be a CRL name in `/crl/<name>.crl` (as the HTTP router reads it).
pub fn is_url_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Parses an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

/// The GetNextCACert body (RFC 8894 §4.7): a SignedData signed by the current CA key whose
/// eContent is a degenerate certs-only SignedData of the next CA and RA certificates.
pub fn next_ca_body(
    next: &Generation,
    current: &SoftwareCa,
    now: SystemTime,
) -> Result<Vec<u8>, RolloverError> {
    let mut certs: Vec<&[u8]> = vec![next.ca.certificate_der()];
    if next.ra_files.is_some() {
        certs.push(&next.ra.0.cert_der);
        certs.push(&next.ra.1.cert_der);
    }
    let inner = certs_only(&certs).map_err(|e| RolloverError::Encode(e.to_string()))?;
    let signing = Signing {
        cert_der: current.certificate_der(),
        key: current.private_key(),
        digest: DigestAlg::Sha256,
        style: SignatureStyle::Named,
        signing_time: now,
    };
    sign_message(Some(&inner), AttributeWriter::new(), &signing)
        .map_err(|e| RolloverError::Encode(e.to_string()))
}

/// The CA port across generations: each call goes to the generation in charge at its time,
/// so a running server issues with the next CA from its switch time on. Certificates of
/// every generation count as ours (renewal), and a later generation's certificates name its
/// own CRL: a cRLDistributionPoint ending in `/crl/<first name>.crl` is rewritten to
/// `/crl/<its name>.crl`.
pub struct RollingCa {
    generations: Arc<Generations>,
}

impl RollingCa {
    /// Issues across `generations`.
    pub fn new(generations: Arc<Generations>) -> Self {
        Self { generations }
    }

    /// The CA in charge at `now`.
    pub fn active_at(&self, now: SystemTime) -> &Arc<SoftwareCa> {
        &self.generations.active_at(now).ca
    }

    fn active(&self) -> &SoftwareCa {
        self.active_at(SystemTime::now())
    }

    /// `profile` with its CRL URLs pointing at `generation`'s CRL.
    fn profile_for(&self, profile: &Profile, generation: &Generation) -> Option<Profile> {
        let first = &self.generations.all().first()?.name;
        if generation.name == *first {
            return None;
        }
        let from = format!("/crl/{first}.crl");
        let to = format!("/crl/{}.crl", generation.name);
        let urls = profile
            .crl_distribution_points()
            .iter()
            .map(|url| match url.strip_suffix(&from) {
                Some(base) => format!("{base}{to}"),
                None => url.clone(),
            })
            .collect();
        Some(profile.with_crl_distribution_points(urls))
    }
}

impl CaBackend for RollingCa {
    fn issue(&self, request: &IssueRequest<'_>) -> Result<Issued, CaError> {
        let generation = self.generations.active_at(request.now);
        match self.profile_for(request.profile, generation) {
            Some(profile) => generation.ca.issue(&IssueRequest {
                profile: &profile,
                ..*request
            }),
            None => generation.ca.issue(request),
        }
    }

    fn revoke(
        &self,
        serial: &[u8],
        reason: RevocationReason,
        at: SystemTime,
    ) -> Result<scepd_ca::RevokeAtCa, CaError> {
        self.active().revoke(serial, reason, at)
    }

    fn chain(&self) -> &[Vec<u8>] {
        self.active().chain()
    }

    fn issued(&self, cert_der: &[u8]) -> bool {
        self.generations.all().iter().any(|g| g.ca.issued(cert_der))
    }

    fn crl(
        &self,
        revoked: &[RevokedEntry],
        this_update: SystemTime,
        next_update: SystemTime,
        crl_number: u64,
    ) -> Result<Vec<u8>, CaError> {
        self.active()
            .crl(revoked, this_update, next_update, crl_number)
    }

    fn sign_ocsp_response(&self, tbs: &[u8]) -> Result<CaSignature, CaError> {
        self.active().sign_ocsp_response(tbs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn generation(cn: &str, name: &str, switch_at: Option<SystemTime>) -> Generation {
        let key = scepd_ca::generate_key(scepd_ca::KeySpec::P256).unwrap();
        let cert = scepd_ca::self_signed_ca(&key, cn, 30).unwrap();
        let pair = KeyPair {
            cert_der: cert.clone(),
            key: key.clone().into(),
        };
        Generation {
            name: name.into(),
            switch_at,
            ca: Arc::new(SoftwareCa::from_parts(cert, key, Vec::new()).unwrap()),
            ra: (pair.clone(), pair),
            ra_files: None,
        }
    }

    #[test]
    fn the_generation_in_charge_follows_the_switch_times() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let generations = Generations {
            list: vec![
                generation("CN=first", "ca", None),
                generation("CN=second", "ca-2", Some(now - hour)),
                generation("CN=third", "ca-3", Some(now + hour)),
            ],
        };
        assert_eq!(generations.active_at(now - 2 * hour).name, "ca");
        assert_eq!(generations.active_at(now).name, "ca-2");
        assert_eq!(generations.previous_at(now).unwrap().name, "ca");
        assert_eq!(generations.next_at(now).unwrap().name, "ca-3");
        assert_eq!(generations.active_at(now + hour).name, "ca-3");
        assert!(generations.next_at(now + hour).is_none());
        let rolling = RollingCa::new(Arc::new(generations));
        assert_eq!(rolling.active_at(now).certificate_der(), rolling.chain()[0]);
    }

    #[test]
    fn certificates_of_every_generation_count_as_issued_and_name_their_own_crl() {
        let now = SystemTime::now();
        let old = generation("CN=CA", "ca", None);
        let new = generation("CN=CA", "ca-2", Some(now - Duration::from_secs(60)));
        let leaf_key = scepd_ca::generate_key(scepd_ca::KeySpec::P256).unwrap();
        let old_leaf =
            scepd_ca::issue_ocsp_responder_certificate(&old.ca, &leaf_key, "CN=x", 1).unwrap();
        let foreign = generation("CN=CA", "other", None);
        let foreign_leaf =
            scepd_ca::issue_ocsp_responder_certificate(&foreign.ca, &leaf_key, "CN=x", 1).unwrap();
        let rolling = RollingCa::new(Arc::new(Generations {
            list: vec![old, new],
        }));
        assert!(
            rolling.issued(&old_leaf),
            "the previous generation's certificate"
        );
        assert!(!rolling.issued(&foreign_leaf), "same subject, another key");

        let raw: scepd_ca::RawProfile = toml::from_str(
            r#"crl_distribution_points = ["http://h/crl/ca.crl", "http://other/x.crl"]"#,
        )
        .unwrap();
        let profile = raw.validate("t").unwrap();
        let generations = &rolling.generations;
        let rewritten = rolling
            .profile_for(&profile, generations.active_at(now))
            .unwrap();
        assert_eq!(
            rewritten.crl_distribution_points(),
            ["http://h/crl/ca-2.crl", "http://other/x.crl"]
        );
        assert!(rolling
            .profile_for(&profile, &generations.all()[0])
            .is_none());
    }

    #[test]
    fn switch_times_are_rfc3339() {
        let at = parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_893_456_000);
        assert!(parse_rfc3339("tomorrow").is_err());
        assert!(parse_rfc3339("2030-01-01").is_err());
    }
}
