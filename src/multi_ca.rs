//! Several CAs in one server (issue 7 item 3). `[ca]` is the default CA; each `[cas.<name>]`
//! of scepd.toml is a further software CA with its own RA certificates (or none: its key
//! decrypts and signs). A template names its CA with `ca = "<name>"`; each CA gets its own
//! `Enroller` over its templates, so requests on a template's path are decrypted with that
//! CA's RA key and issued by that CA, and GetCACert answers with its chain. All CAs share the
//! store; CRLs (`/crl/<name>.crl`) and OCSP answers are per CA (see `cli::serve`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use scepd_ca::SoftwareCa;

use crate::config::{ExtraCa, RaConfig, Template};
use crate::keys::{self, KeyPair, RaIdentity};

/// A further CA, loaded.
pub struct LoadedCa {
    /// Its name (`[cas.<name>]`), lowercase.
    pub name: String,
    /// The CA.
    pub ca: Arc<SoftwareCa>,
    /// Its RA identity (with the encryption key its last renewal replaced, as grace).
    pub ra: RaIdentity,
    /// Where its RA certificates live, so that they renew themselves.
    pub ra_files: Option<RaConfig>,
}

/// Loads every `[cas.<name>]`; every problem is returned.
pub fn load_all(extra: &[ExtraCa], now: SystemTime) -> Result<Vec<LoadedCa>, Vec<String>> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for ca in extra {
        match load(ca, now) {
            Ok(ca) => loaded.push(ca),
            Err(e) => errors.push(format!("cas.{}: {e}", ca.name)),
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

fn load(extra: &ExtraCa, now: SystemTime) -> Result<LoadedCa, String> {
    let passphrase = keys::read_passphrase(&extra.ca.passphrase).map_err(|e| e.to_string())?;
    let ca = SoftwareCa::load(
        &extra.ca.cert,
        &extra.ca.key,
        passphrase.as_deref(),
        extra.ca.chain.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let (signer, decrypter) = match &extra.ra {
        Some(ra) => (
            keys::load_pair(&ra.sign_cert, &ra.sign_key, None).map_err(|e| e.to_string())?,
            keys::load_pair(&ra.encrypt_cert, &ra.encrypt_key, None).map_err(|e| e.to_string())?,
        ),
        None => {
            let pair = KeyPair {
                cert_der: ca.certificate_der().to_vec(),
                key: ca.private_key().clone(),
            };
            (pair.clone(), pair)
        }
    };
    if decrypter.key.kind() != scepd_ca::KeyKind::Rsa {
        return Err(
            "SCEP key transport needs an RSA key to decrypt requests (the RA \
                    encryption key, or the CA key without [cas.<name>.ra])"
                .into(),
        );
    }
    let mut decrypters = vec![decrypter];
    decrypters.extend(
        extra
            .ra
            .as_ref()
            .and_then(|files| crate::ra_renewal::previous_pair(files, now)),
    );
    Ok(LoadedCa {
        name: extra.name.clone(),
        ca: Arc::new(ca),
        ra: RaIdentity {
            signer,
            decrypters,
            has_ra_certificates: extra.ra.is_some(),
        },
        ra_files: extra.ra.clone(),
    })
}

/// Splits the templates: those of `[ca]` (no `ca` key), and those of each further CA.
pub fn split_templates(
    templates: BTreeMap<String, Template>,
) -> (
    BTreeMap<String, Template>,
    BTreeMap<String, BTreeMap<String, Template>>,
) {
    let mut default = BTreeMap::new();
    let mut by_ca: BTreeMap<String, BTreeMap<String, Template>> = BTreeMap::new();
    for (name, template) in templates {
        match template.ca.clone() {
            None => {
                default.insert(name, template);
            }
            Some(ca) => {
                by_ca.entry(ca).or_default().insert(name, template);
            }
        }
    }
    (default, by_ca)
}
