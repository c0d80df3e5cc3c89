//! Where `scepd init` gets its CA from, besides generating a self-signed one (issue 7 items
//! 2 and 4), and `scepd ca install-cert`:
//!
//! - `--ca-csr-out FILE`: a CA key is generated and kept; FILE gets a CSR for it, for an
//!   offline root to sign. No CA certificate and no RA certificates are written, so `serve`
//!   refuses to start until `scepd ca install-cert --cert FILE --chain FILE` installs the
//!   signed certificate (and then issues the RA certificates from it).
//! - `--ca-import-pem CERT KEY` or `--ca-import-p12 FILE` (with
//!   `--ca-import-password-file F`): an existing CA key and certificate (plus the issuers
//!   above it) become the software CA.
//! - `--upstream URL --upstream-challenge-file F`: an upstream SCEP CA issues (RA mode); the
//!   RA certificates are enrolled from it, or taken from `--ra-*` files.

use std::fs;
use std::path::{Path, PathBuf};

use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Name, X509ReqBuilder, X509};
use scepd_ca::certgen::{self, KeySpec, RaPurpose};
use scepd_ca::SoftwareCa;

use super::init::{pem_of, write_file, write_secret, InitArgs};
use crate::config::RawConfig;
use crate::keys;

/// The CA-source options of `scepd init` (all optional: without them, a self-signed CA is
/// generated as before).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CaSourceArgs {
    /// Write a CSR for the issuing CA to FILE instead of a self-signed CA certificate (the
    /// key stays in the setup directory); install the signed certificate with
    /// `scepd ca install-cert`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ca_import_pem", "ca_import_p12", "upstream"])]
    pub ca_csr_out: Option<PathBuf>,
    /// Import an existing CA: its certificate (PEM; certificates after the first are its
    /// issuers, nearest first) and its private key (PEM; encrypted with the passphrase in
    /// --ca-import-password-file, if given).
    #[arg(long, num_args = 2, value_names = ["CERT", "KEY"], conflicts_with_all = ["ca_import_p12", "upstream"])]
    pub ca_import_pem: Option<Vec<PathBuf>>,
    /// Import an existing CA from a PKCS#12 file (key, certificate and issuers).
    #[arg(long, value_name = "FILE", conflicts_with = "upstream")]
    pub ca_import_p12: Option<PathBuf>,
    /// File holding the password of --ca-import-p12 or of the --ca-import-pem key (first
    /// line).
    #[arg(long, value_name = "FILE")]
    pub ca_import_password_file: Option<PathBuf>,
    /// RA mode: an upstream SCEP CA (its SCEP URL, e.g. http://ndes.example/certsrv/mscep/mscep.dll)
    /// issues the certificates; scepd verifies challenges, applies templates, stores.
    #[arg(long, value_name = "URL", requires = "upstream_challenge_file")]
    pub upstream: Option<String>,
    /// The upstream's challenge password, in a file (first line).
    #[arg(long, value_name = "FILE", requires = "upstream")]
    pub upstream_challenge_file: Option<PathBuf>,
    /// With --upstream: use this RA signing certificate (PEM) instead of enrolling one.
    #[arg(long, value_name = "FILE", requires_all = ["upstream", "ra_sign_key", "ra_encrypt_cert", "ra_encrypt_key"])]
    pub ra_sign_cert: Option<PathBuf>,
    /// Its key (PEM, unencrypted).
    #[arg(long, value_name = "FILE", requires = "ra_sign_cert")]
    pub ra_sign_key: Option<PathBuf>,
    /// With --upstream: use this RA encryption certificate (PEM, RSA) instead of enrolling one.
    #[arg(long, value_name = "FILE", requires = "ra_sign_cert")]
    pub ra_encrypt_cert: Option<PathBuf>,
    /// Its key (PEM, unencrypted).
    #[arg(long, value_name = "FILE", requires = "ra_sign_cert")]
    pub ra_encrypt_key: Option<PathBuf>,
}

/// What `init` does about the CA.
pub enum Prepared {
    /// Generate a self-signed CA (the default).
    Generate,
    /// An imported CA, written to ca.pem, ca.key (and ca-chain.pem): RA and TLS certificates
    /// are issued from it as from a generated one.
    Imported(SoftwareCa),
    /// Nothing more to issue now: a CSR was written, or the upstream issued the RA
    /// certificates.
    Done,
}

/// The file names init writes.
const CHAIN_FILE: &str = "ca-chain.pem";
const UPSTREAM_CA_FILE: &str = "upstream-ca.pem";
const UPSTREAM_CHALLENGE_FILE: &str = "upstream-challenge.secret";

/// Runs the CA-source step of `init` in `dir` (which exists and holds no setup yet).
pub fn prepare(args: &InitArgs, dir: &Path) -> Result<Prepared, String> {
    let source = &args.ca_source;
    if (source.ca_csr_out.is_some() || source.upstream.is_some()) && args.tls_name.is_some() {
        return Err("--tls-name goes with a CA that exists at init: not with --ca-csr-out or --upstream (give [tls] a certificate of your own later)".into());
    }
    if let Some(out) = &source.ca_csr_out {
        write_ca_csr(args, dir, out)?;
        return Ok(Prepared::Done);
    }
    if let Some(url) = &source.upstream {
        let challenge_file = source
            .upstream_challenge_file
            .as_deref()
            .ok_or("--upstream needs --upstream-challenge-file")?;
        init_upstream(source, dir, url, challenge_file)?;
        return Ok(Prepared::Done);
    }
    let password = match &source.ca_import_password_file {
        Some(path) => Some(crate::upstream::read_challenge(path)?),
        None => None,
    };
    let imported = if let Some(files) = &source.ca_import_pem {
        let [cert, key] = files.as_slice() else {
            return Err("--ca-import-pem takes CERT KEY".into());
        };
        Some(import_pem(cert, key, password.as_deref())?)
    } else if let Some(p12) = &source.ca_import_p12 {
        Some(import_p12(p12, password.as_deref().unwrap_or(""))?)
    } else {
        None
    };
    let Some((cert_der, key, issuers)) = imported else {
        return Ok(Prepared::Generate);
    };
    let ca = SoftwareCa::from_parts(cert_der.clone(), key.clone(), issuers.clone())
        .map_err(|e| format!("the imported CA cannot be used: {e}"))?;
    write_file(
        &dir.join("ca.pem"),
        &String::from_utf8_lossy(&pem_of(&cert_der)?),
    )?;
    let key_pem = key.private_key_to_pem_pkcs8().map_err(|e| e.to_string())?;
    write_secret(&dir.join("ca.key"), &String::from_utf8_lossy(&key_pem))?;
    if !issuers.is_empty() {
        write_file(&dir.join(CHAIN_FILE), &pem_bundle(&issuers)?)?;
    }
    Ok(Prepared::Imported(ca))
}

/// The `[ca]` section of scepd.toml for what [`prepare`] did.
pub fn adjust_config(args: &InitArgs, dir: &Path, config: &mut String) {
    const SOFTWARE_CA: &str = "[ca]\ncert = \"ca.pem\"\nkey = \"ca.key\"\n";
    let source = &args.ca_source;
    let with_chain = "[ca]\ncert = \"ca.pem\"\nkey = \"ca.key\"\n# The issuers above the CA, served in GetCACert and with include_chain.\nchain = \"ca-chain.pem\"\n";
    if source.ca_csr_out.is_some() || dir.join(CHAIN_FILE).is_file() {
        *config = config.replace(SOFTWARE_CA, with_chain);
    }
    if let Some(url) = &source.upstream {
        let upstream = format!(
            "[ca]\n\
# An upstream SCEP CA issues (RA mode; README \"Upstream CA (RA mode)\"). scepd checks the\n\
# challenge and the template, stores and reports; the upstream signs. Its CRL and OCSP are\n\
# the ones relying parties check: scepd serves neither.\n\
backend = \"upstream\"\n\
# The upstream's CA certificate (from its GetCACert at init).\n\
cert = \"{UPSTREAM_CA_FILE}\"\n\
\n\
[ca.upstream]\n\
url = \"{url}\"\n\
challenge_file = \"{UPSTREAM_CHALLENGE_FILE}\"\n\
timeout_seconds = 30\n\
poll_interval_seconds = 5\n\
max_wait_seconds = 60\n\
max_polls = 10\n"
        );
        *config = config.replace(SOFTWARE_CA, &upstream);
    }
}

fn write_ca_csr(args: &InitArgs, dir: &Path, out: &Path) -> Result<(), String> {
    let spec: KeySpec = args
        .ca_key
        .parse()
        .map_err(|e: scepd_ca::CaError| e.to_string())?;
    let key = certgen::generate_key(spec).map_err(|e| e.to_string())?;
    let csr = ca_csr(&key, &args.ca_subject)?;
    let key_pem = key.private_key_to_pem_pkcs8().map_err(|e| e.to_string())?;
    write_secret(&dir.join("ca.key"), &String::from_utf8_lossy(&key_pem))?;
    write_file(out, &String::from_utf8_lossy(&csr))
}

/// A PEM PKCS#10 request for a CA: the subject, basicConstraints CA:TRUE (critical) and
/// keyUsage keyCertSign, cRLSign, digitalSignature (critical), signed with SHA-256.
fn ca_csr(key: &PKey<Private>, subject: &str) -> Result<Vec<u8>, String> {
    let name = scepd_ca::parse_dn(subject).map_err(|e| format!("--ca-subject: {e}"))?;
    let name_der = der::Encode::to_der(&name).map_err(|e| e.to_string())?;
    let name = X509Name::from_der(&name_der).map_err(|e| e.to_string())?;
    let build = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut builder = X509ReqBuilder::new()?;
        builder.set_version(0)?;
        builder.set_subject_name(&name)?;
        builder.set_pubkey(key)?;
        let mut extensions = Stack::new()?;
        extensions.push(BasicConstraints::new().critical().ca().build()?)?;
        extensions.push(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .digital_signature()
                .build()?,
        )?;
        builder.add_extensions(&extensions)?;
        builder.sign(key, openssl::hash::MessageDigest::sha256())?;
        builder.build().to_pem()
    };
    build().map_err(|e| format!("CSR: {e}"))
}

/// An imported CA: its certificate (DER), its key, and its issuers (DER, nearest first).
type ImportedCa = (Vec<u8>, PKey<Private>, Vec<Vec<u8>>);

fn import_pem(cert: &Path, key: &Path, password: Option<&str>) -> Result<ImportedCa, String> {
    let mut certs = keys::load_cert_chain_der(cert).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let cert_der = certs.remove(0);
    let key = keys::load_key(key, password.map(str::as_bytes)).map_err(|e| e.to_string())?;
    Ok((cert_der, key, certs))
}

fn import_p12(path: &Path, password: &str) -> Result<ImportedCa, String> {
    let der = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let parsed = Pkcs12::from_der(&der)
        .and_then(|p12| p12.parse2(password))
        .map_err(|e| format!("{}: cannot read (wrong password?): {e}", path.display()))?;
    let cert = parsed
        .cert
        .ok_or_else(|| format!("{}: no certificate", path.display()))?;
    let key = parsed
        .pkey
        .ok_or_else(|| format!("{}: no private key", path.display()))?;
    let cert_der = cert.to_der().map_err(|e| e.to_string())?;
    let mut issuers = Vec::new();
    if let Some(stack) = parsed.ca {
        for c in stack.iter() {
            let der = c.to_der().map_err(|e| e.to_string())?;
            if der != cert_der {
                issuers.push(der);
            }
        }
    }
    let issuers = order_issuers(&cert_der, issuers);
    Ok((cert_der, key, issuers))
}

/// The issuers nearest first: each one signed the one before (PKCS#12 files list them in
/// any order). Certificates that do not fit the path follow in their original order.
fn order_issuers(cert_der: &[u8], mut issuers: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut ordered = Vec::new();
    let mut current = cert_der.to_vec();
    while let Some(index) = issuers
        .iter()
        .position(|issuer| scepd_ca::signed_by(&current, issuer) && *issuer != current)
    {
        let next = issuers.remove(index);
        current = next.clone();
        ordered.push(next);
    }
    ordered.extend(issuers);
    ordered
}

fn pem_bundle(certs: &[Vec<u8>]) -> Result<String, String> {
    let mut text = String::new();
    for der in certs {
        text.push_str(&String::from_utf8_lossy(&pem_of(der)?));
    }
    Ok(text)
}

/// The RA certificates' subjects (as `init` names them for the software CA).
const RA_SIGN_CN: &str = "CN=scepd RA signing";
const RA_ENCRYPT_CN: &str = "CN=scepd RA encryption";

fn init_upstream(
    source: &CaSourceArgs,
    dir: &Path,
    url: &str,
    challenge_file: &Path,
) -> Result<(), String> {
    let challenge = crate::upstream::read_challenge(challenge_file)?;
    write_secret(
        &dir.join(UPSTREAM_CHALLENGE_FILE),
        &format!("{challenge}\n"),
    )?;
    let settings = crate::upstream::UpstreamConfig {
        url: url.trim_end_matches('/').to_owned(),
        challenge_file: dir.join(UPSTREAM_CHALLENGE_FILE),
        tls_ca_file: None,
        timeout: std::time::Duration::from_secs(30),
        patience: crate::upstream::Patience {
            poll_interval: std::time::Duration::from_secs(5),
            max_wait: std::time::Duration::from_secs(60),
            max_polls: 10,
        },
    };
    let client = settings.client()?;
    let ca_certs = client
        .ca_certs()
        .map_err(|e| format!("GetCACert from {url}: {e}"))?;
    let cas = issuing_first(ca_certs.iter().filter(|c| is_ca(c)).cloned().collect());
    if cas.is_empty() {
        return Err(format!("GetCACert from {url}: no CA certificate"));
    }
    write_file(&dir.join(UPSTREAM_CA_FILE), &pem_bundle(&cas)?)?;
    if let (Some(sign_cert), Some(sign_key), Some(encrypt_cert), Some(encrypt_key)) = (
        &source.ra_sign_cert,
        &source.ra_sign_key,
        &source.ra_encrypt_cert,
        &source.ra_encrypt_key,
    ) {
        for (name, cert, key) in [
            ("ra-sign", sign_cert, sign_key),
            ("ra-encrypt", encrypt_cert, encrypt_key),
        ] {
            let pair = keys::load_pair(cert, key, None).map_err(|e| e.to_string())?;
            let key = pair
                .key
                .as_openssl()
                .ok_or("RA keys from files are in memory")?;
            write_pair(dir, name, &pair.cert_der, key)?;
        }
        return Ok(());
    }
    for (name, subject, usage) in [
        ("ra-sign", RA_SIGN_CN, "digitalSignature"),
        ("ra-encrypt", RA_ENCRYPT_CN, "keyEncipherment"),
    ] {
        let key = certgen::generate_key(KeySpec::Rsa2048).map_err(|e| e.to_string())?;
        let csr = crate::scep::csr::build_csr(
            &key,
            &crate::scep::csr::CsrSpec {
                subject,
                challenge: Some(&challenge),
                key_usage: Some(vec![usage]),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let enrolled = client
            .enroll(&csr)
            .map_err(|e| format!("enrolling the {name} certificate at {url}: {e}"))?;
        write_pair(dir, name, &enrolled.cert_der, &key)?;
    }
    Ok(())
}

fn write_pair(dir: &Path, name: &str, cert_der: &[u8], key: &PKey<Private>) -> Result<(), String> {
    write_file(
        &dir.join(format!("{name}.pem")),
        &String::from_utf8_lossy(&pem_of(cert_der)?),
    )?;
    let key_pem = key.private_key_to_pem_pkcs8().map_err(|e| e.to_string())?;
    write_secret(
        &dir.join(format!("{name}.key")),
        &String::from_utf8_lossy(&key_pem),
    )
}

/// Whether a certificate is a CA certificate (basicConstraints cA).
fn is_ca(der: &[u8]) -> bool {
    use der::Decode;
    x509_cert::Certificate::from_der(der).is_ok_and(|cert| {
        cert.tbs_certificate
            .get::<x509_cert::ext::pkix::BasicConstraints>()
            .ok()
            .flatten()
            .is_some_and(|(_, bc)| bc.ca)
    })
}

/// CA certificates with the issuing one first: the one that signed none of the others.
fn issuing_first(cas: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let issuing = cas.iter().position(|candidate| {
        !cas.iter()
            .any(|other| other != candidate && scepd_ca::signed_by(other, candidate))
    });
    match issuing {
        Some(index) => {
            let first = cas.get(index).cloned().unwrap_or_default();
            let rest = cas.iter().filter(|c| **c != first).cloned().collect();
            let mut all = vec![first.clone()];
            all.extend(order_issuers(&first, rest));
            all
        }
        None => cas,
    }
}

/// `scepd ca install-cert`
#[derive(Debug, clap::Args)]
pub struct InstallCertArgs {
    /// Path of scepd.toml (written by `scepd init --ca-csr-out`).
    #[arg(long, default_value = "scepd.toml")]
    pub config: PathBuf,
    /// The CA certificate the root signed (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// The issuers above it, PEM, nearest first (at least the root).
    #[arg(long, value_name = "FILE")]
    pub chain: PathBuf,
}

/// Installs the CA certificate, the chain, and issues the RA certificates; a summary.
pub fn install_cert(args: &InstallCertArgs) -> Result<String, String> {
    let text =
        fs::read_to_string(&args.config).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let raw: RawConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let base = args
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    if raw.ca.backend.as_deref().is_some_and(|b| b != "software") {
        return Err("[ca] is not a software CA: nothing to install".into());
    }
    let cert_path = resolve(&raw.ca.cert);
    let key_path = resolve(&raw.ca.key);
    let chain_path = raw
        .ca
        .chain
        .as_deref()
        .map(&resolve)
        .ok_or("[ca] has no chain = \"...\": add chain = \"ca-chain.pem\" to [ca]")?;
    if cert_path.exists() {
        return Err(format!(
            "{} exists: a CA certificate is already installed (a new CA is `scepd ca rollover`'s job)",
            cert_path.display()
        ));
    }
    let passphrase = match &raw.ca.key_passphrase_file {
        Some(file) => Some(crate::upstream::read_challenge(&resolve(file))?.into_bytes()),
        None => None,
    };
    let key = keys::load_key(&key_path, passphrase.as_deref()).map_err(|e| e.to_string())?;
    let cert_der = read_cert(&args.cert)?;
    let issuers = keys::load_cert_chain_der(&args.chain).map_err(|e| e.to_string())?;
    let Some(issuer) = issuers.first() else {
        return Err(format!("{}: no certificate", args.chain.display()));
    };
    if !scepd_ca::signed_by(&cert_der, issuer) {
        return Err(format!(
            "{} is not signed by the first certificate of {} (the chain starts with the issuer of the CA certificate)",
            args.cert.display(),
            args.chain.display()
        ));
    }
    let cert = X509::from_der(&cert_der).map_err(|e| e.to_string())?;
    let key_matches = cert
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !key_matches {
        return Err(format!(
            "{} is not for this CA's key ({}): was it issued for the CSR of this setup?",
            args.cert.display(),
            key_path.display()
        ));
    }
    let ca = SoftwareCa::from_parts(cert_der.clone(), key, issuers.clone())
        .map_err(|e| format!("{}: {e}", args.cert.display()))?;
    let mut summary = String::new();
    if let Some(ra) = &raw.ra {
        for (cert, key, purpose, subject) in [
            (&ra.sign_cert, &ra.sign_key, RaPurpose::Signing, RA_SIGN_CN),
            (
                &ra.encrypt_cert,
                &ra.encrypt_key,
                RaPurpose::Encryption,
                RA_ENCRYPT_CN,
            ),
        ] {
            let (cert, key_file) = (resolve(cert), resolve(key));
            if cert.exists() || key_file.exists() {
                continue;
            }
            let key = certgen::generate_key(KeySpec::Rsa2048).map_err(|e| e.to_string())?;
            let der = certgen::issue_ra_certificate(
                &ca,
                &key,
                subject,
                purpose,
                crate::ra_renewal::RA_VALIDITY_DAYS,
            )
            .map_err(|e| e.to_string())?;
            write_file(&cert, &String::from_utf8_lossy(&pem_of(&der)?))?;
            let key_pem = key.private_key_to_pem_pkcs8().map_err(|e| e.to_string())?;
            write_secret(&key_file, &String::from_utf8_lossy(&key_pem))?;
            summary.push_str(&format!("wrote {}\n", cert.display()));
        }
    }
    write_file(&chain_path, &pem_bundle(&issuers)?)?;
    write_file(&cert_path, &String::from_utf8_lossy(&pem_of(&cert_der)?))?;
    let subject = cert
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default();
    Ok(format!(
        "installed CA certificate {} (CN={subject}) with {} issuer(s) in {}\n{summary}run: scepd serve --config {}\n",
        cert_path.display(),
        issuers.len(),
        chain_path.display(),
        args.config.display()
    ))
}

fn read_cert(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cert = X509::from_pem(&bytes)
        .or_else(|_| X509::from_der(&bytes))
        .map_err(|e| format!("{}: not a PEM or DER certificate: {e}", path.display()))?;
    cert.to_der().map_err(|e| e.to_string())
}

/// What `init` prints about the CA source after writing the setup.
pub fn print_summary(args: &InitArgs) {
    let source = &args.ca_source;
    if let Some(out) = &source.ca_csr_out {
        println!(
            "CA CSR:      {} (the key stays in {})",
            out.display(),
            args.dir.join("ca.key").display()
        );
        println!(
            "next:        have your root sign it, then: scepd ca install-cert --config {} --cert <issued.pem> --chain <root.pem>",
            args.dir.join("scepd.toml").display()
        );
    }
    if let Some(url) = &source.upstream {
        println!(
            "upstream CA: {url} (RA mode; certificates in {})",
            args.dir.join(UPSTREAM_CA_FILE).display()
        );
        super::init::print_ca_fingerprints(&args.dir.join(UPSTREAM_CA_FILE));
    }
}
