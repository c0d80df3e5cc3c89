//! The software CA: a CA certificate and its private key held in memory.

use std::path::Path;
use std::time::{Duration, SystemTime};

use der::asn1::{BitString, Uint};
use der::{Decode, Encode};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::crl::CrlNumber;
use x509_cert::ext::pkix::{BasicConstraints, SubjectKeyIdentifier};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::Certificate;

use crate::csr::{check_csr, CheckedCsr, RequestedValidity, ValidityUnit};
use crate::extensions::{self, oid};
use crate::keyops::{PrivateKey, PrivateKeyOps};
use crate::signing::SigningScheme;
use crate::time::{add_days, whole_seconds, x509_time};
use crate::{
    format_dn, CaBackend, CaError, CaSignature, IssueRequest, Issued, Profile, RevokedEntry,
};

/// Random octets in a serial number (RFC 5280 §4.1.2.2 allows up to 20 octets; CA/B Forum
/// asks for at least 64 random bits; we use 128 and then some).
const SERIAL_RANDOM_OCTETS: usize = 16;

/// A CA whose key is in memory (parsed once; `PKey` is `Send + Sync`) or in a PKCS#11
/// token ([`crate::pkcs11`], a pool of sessions), so `issue` needs no lock.
pub struct SoftwareCa {
    /// The CA certificate first, then its issuers (DER).
    chain: Vec<Vec<u8>>,
    /// The CA's subject, which is the issuer of everything it signs.
    subject: Name,
    key: PrivateKey,
    scheme: SigningScheme,
    /// The keyIdentifier put in authorityKeyIdentifier.
    key_id: Vec<u8>,
    not_after: SystemTime,
}

impl std::fmt::Debug for SoftwareCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareCa")
            .field("subject", &format_dn(&self.subject))
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// The fields of a certificate to sign; the CA adds serial, issuer, AKI and signature.
pub(crate) struct CertificateFields {
    pub subject: Name,
    pub public_key: SubjectPublicKeyInfoOwned,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub extensions: Vec<Extension>,
}

/// A signed certificate and the values actually encoded in it.
pub(crate) struct SignedCertificate {
    pub der: Vec<u8>,
    pub serial: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

fn read_file(path: &Path) -> Result<Vec<u8>, CaError> {
    std::fs::read(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a PEM private key, encrypted or not. Without a passphrase, an encrypted key is an
/// error: openssl's default would prompt on the terminal, which a daemon must never do.
fn read_private_key(pem: &[u8], passphrase: Option<&[u8]>) -> Result<PKey<Private>, CaError> {
    let key = match passphrase {
        Some(passphrase) => PKey::private_key_from_pem_passphrase(pem, passphrase),
        None => PKey::private_key_from_pem_callback(pem, |_buffer| Ok(0)),
    };
    key.map_err(|e| CaError::CaConfig(format!("cannot read the CA key (wrong passphrase?): {e}")))
}

impl SoftwareCa {
    /// Loads the CA certificate (PEM), its private key (PEM, PKCS#8 or traditional,
    /// optionally encrypted with `passphrase`) and optionally the issuers above it (PEM, any
    /// number of certificates, nearest issuer first).
    pub fn load(
        cert_pem_path: &Path,
        key_pem_path: &Path,
        passphrase: Option<&[u8]>,
        chain_pem_path: Option<&Path>,
    ) -> Result<Self, CaError> {
        let cert = X509::from_pem(&read_file(cert_pem_path)?)
            .map_err(|e| CaError::CaConfig(format!("{}: {e}", cert_pem_path.display())))?;
        let key = read_private_key(&read_file(key_pem_path)?, passphrase)?;
        let chain = match chain_pem_path {
            Some(path) => X509::stack_from_pem(&read_file(path)?)
                .map_err(|e| CaError::CaConfig(format!("{}: {e}", path.display())))?
                .iter()
                .map(|c| c.to_der())
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        Self::from_parts(cert.to_der()?, key, chain)
    }

    /// Builds the CA from its certificate (DER), its private key and its issuers (DER,
    /// nearest first, the CA certificate itself not included). Checks that the key matches
    /// the certificate and that the certificate is a CA certificate (RFC 5280 §4.2.1.9).
    pub fn from_parts(
        cert_der: Vec<u8>,
        key: impl Into<PrivateKey>,
        issuers: Vec<Vec<u8>>,
    ) -> Result<Self, CaError> {
        let key: PrivateKey = key.into();
        let certificate = Certificate::from_der(&cert_der)
            .map_err(|e| CaError::CaConfig(format!("CA certificate: {e}")))?;
        // Issued certificates carry the CA subject through the decoded Name; a certificate
        // that does not re-encode to itself would give them a different issuer.
        if certificate.to_der()? != cert_der {
            return Err(CaError::CaConfig(
                "CA certificate is not DER-encoded".into(),
            ));
        }
        if !X509::from_der(&cert_der)?
            .public_key()?
            .public_eq(&*key.public_key()?)
        {
            return Err(CaError::CaConfig(
                "the key does not match the CA certificate".into(),
            ));
        }
        let tbs = &certificate.tbs_certificate;
        require_ca_certificate(tbs)?;
        let key_id = match tbs.get::<SubjectKeyIdentifier>() {
            Ok(Some((_, ski))) => ski.0.as_bytes().to_vec(),
            _ => extensions::key_identifier(&tbs.subject_public_key_info),
        };
        let mut chain = vec![cert_der];
        chain.extend(issuers);
        Ok(Self {
            scheme: SigningScheme::for_key(&key)?,
            subject: tbs.subject.clone(),
            not_after: tbs.validity.not_after.to_system_time(),
            key,
            key_id,
            chain,
        })
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        self.chain.first().map_or(&[], Vec::as_slice)
    }

    /// The CA certificate's notAfter.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The CA's private key (the RA signs nothing with it; `init` writes it out when it is
    /// in memory, see [`PrivateKeyOps::as_openssl`]).
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// Signs a certificate: a fresh random serial, this CA as issuer, notAfter clamped to the
    /// CA's own notAfter (RFC 5280 §6.1.3 would reject anything longer), and an
    /// authorityKeyIdentifier appended.
    pub(crate) fn sign_certificate(
        &self,
        mut fields: CertificateFields,
    ) -> Result<SignedCertificate, CaError> {
        fields.not_after = fields.not_after.min(self.not_after);
        if fields.not_after <= fields.not_before {
            return Err(CaError::CaConfig("the CA certificate has expired".into()));
        }
        fields
            .extensions
            .push(extensions::authority_key_identifier(&self.key_id)?);
        assemble_certificate(fields, self.subject.clone(), &self.key, self.scheme)
    }

    /// notBefore/notAfter for a request: now minus the backdate, and now plus the profile's
    /// validity or the requested one, never beyond `max_validity_days`.
    fn validity(
        &self,
        now: SystemTime,
        profile: &Profile,
        requested: Option<RequestedValidity>,
    ) -> Result<(SystemTime, SystemTime), CaError> {
        let not_before = now
            .checked_sub(Duration::from_secs(u64::from(profile.backdate_seconds())))
            .ok_or_else(|| CaError::TimeOutOfRange("notBefore".into()))?;
        let longest = add_days(now, profile.max_validity_days())?;
        let not_after = match requested {
            Some(requested) => requested_not_after(now, requested)?.min(longest),
            None => add_days(now, profile.validity_days())?,
        };
        Ok((not_before, not_after))
    }

    fn end_entity_extensions(
        &self,
        profile: &Profile,
        csr: &CheckedCsr,
        public_key: &SubjectPublicKeyInfoOwned,
        subject_is_empty: bool,
    ) -> Result<Vec<Extension>, CaError> {
        let mut list = vec![
            extensions::basic_constraints(false)?,
            extensions::key_usage(profile.key_usage())?,
        ];
        list.extend(extensions::extended_key_usage(
            profile.extended_key_usage(),
        )?);
        if let Some(san) = &csr.san {
            // The names are copied as the client encoded them; critical when the subject
            // is empty (RFC 5280 §4.2.1.6).
            list.push(Extension {
                extn_id: oid::ID_CE_SUBJECT_ALT_NAME,
                critical: subject_is_empty,
                extn_value: san.extn_value.clone(),
            });
        }
        list.push(extensions::subject_key_identifier(public_key)?);
        list.extend(extensions::crl_distribution_points(
            profile.crl_distribution_points(),
        )?);
        list.extend(extensions::authority_info_access(
            profile.ocsp_urls(),
            profile.ca_issuers_urls(),
        )?);
        list.extend(csr.sid_extension.clone());
        Ok(list)
    }
}

fn require_ca_certificate(tbs: &TbsCertificate) -> Result<(), CaError> {
    match tbs.get::<BasicConstraints>() {
        Ok(Some((_, constraints))) if constraints.ca => Ok(()),
        _ => Err(CaError::CaConfig(
            "not a CA certificate (basicConstraints cA is not true)".into(),
        )),
    }
}

/// `now` plus the requested period. Months and years are calendar months and years (as
/// AD CS counts them); the count is capped first so that nothing overflows, and the caller
/// clamps the result to the profile's maximum anyway.
fn requested_not_after(
    now: SystemTime,
    requested: RequestedValidity,
) -> Result<SystemTime, CaError> {
    let count = requested.count.min(100_000);
    match requested.unit {
        ValidityUnit::Hours => now
            .checked_add(Duration::from_secs(u64::from(count) * 3600))
            .ok_or_else(|| CaError::TimeOutOfRange(format!("now + {count} hours"))),
        ValidityUnit::Days => add_days(now, count),
        ValidityUnit::Weeks => add_days(now, count * 7),
        ValidityUnit::Months => crate::time::add_months(now, count),
        ValidityUnit::Years => crate::time::add_months(now, count * 12),
    }
}

/// A positive serial number of 17 octets: one octet in 0x01..=0x7f (top bit clear so the
/// INTEGER is positive, non-zero so it is minimal and keeps its length), then 16 random
/// octets. All 17 come from openssl's CSPRNG, so at least 128 bits are random.
pub(crate) fn random_serial() -> Result<Vec<u8>, CaError> {
    let mut serial = vec![0u8; SERIAL_RANDOM_OCTETS + 1];
    openssl::rand::rand_bytes(&mut serial)?;
    if let Some(first) = serial.first_mut() {
        *first &= 0x7f;
        if *first == 0 {
            *first = 0x01;
        }
    }
    Ok(serial)
}

/// Builds the TBSCertificate (RFC 5280 §4.1), signs its DER encoding and assembles the
/// certificate.
pub(crate) fn assemble_certificate(
    fields: CertificateFields,
    issuer: Name,
    key: &dyn PrivateKeyOps,
    scheme: SigningScheme,
) -> Result<SignedCertificate, CaError> {
    let serial = random_serial()?;
    let not_before = whole_seconds(fields.not_before)?;
    let not_after = whole_seconds(fields.not_after)?;
    let tbs_certificate = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial)?,
        signature: scheme.algorithm_identifier(),
        issuer,
        validity: Validity {
            not_before: x509_time(not_before)?,
            not_after: x509_time(not_after)?,
        },
        subject: fields.subject,
        subject_public_key_info: fields.public_key,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(fields.extensions),
    };
    let signature = scheme.sign(key, &tbs_certificate.to_der()?)?;
    let certificate = Certificate {
        tbs_certificate,
        signature_algorithm: scheme.algorithm_identifier(),
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(SignedCertificate {
        der: certificate.to_der()?,
        serial,
        not_before,
        not_after,
    })
}

fn revoked_certificate(entry: &RevokedEntry) -> Result<RevokedCert, CaError> {
    let reason = entry.reason.to_crl_reason();
    let extensions = match entry.reason {
        crate::RevocationReason::Unspecified => None,
        _ => Some(vec![extensions::extension(
            oid::ID_CE_CRL_REASONS,
            false,
            &reason,
        )?]),
    };
    Ok(RevokedCert {
        serial_number: SerialNumber::new(&entry.serial)?,
        revocation_date: x509_time(entry.at)?,
        crl_entry_extensions: extensions,
    })
}

impl CaBackend for SoftwareCa {
    fn issue(&self, request: &IssueRequest<'_>) -> Result<Issued, CaError> {
        let profile = request.profile;
        let csr = check_csr(request.csr_der, profile)?;
        let subject = if profile.subject_from_csr() {
            csr.subject.clone()
        } else {
            Name::default()
        };
        let (not_before, not_after) =
            self.validity(request.now, profile, csr.requested_validity)?;
        let extensions =
            self.end_entity_extensions(profile, &csr, &csr.public_key, subject.is_empty())?;
        let signed = self.sign_certificate(CertificateFields {
            subject: subject.clone(),
            public_key: csr.public_key.clone(),
            not_before,
            not_after,
            extensions,
        })?;
        Ok(Issued {
            der: signed.der,
            serial: signed.serial,
            not_before: signed.not_before,
            not_after: signed.not_after,
            subject: format_dn(&subject),
            sans: csr.san.map(|san| san.names).unwrap_or_default(),
        })
    }

    fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    fn crl(
        &self,
        revoked: &[RevokedEntry],
        this_update: SystemTime,
        next_update: SystemTime,
        crl_number: u64,
    ) -> Result<Vec<u8>, CaError> {
        let entries = revoked
            .iter()
            .map(revoked_certificate)
            .collect::<Result<Vec<_>, _>>()?;
        let crl_number = CrlNumber(Uint::new(&crl_number.to_be_bytes())?);
        let tbs_cert_list = TbsCertList {
            version: Version::V2,
            signature: self.scheme.algorithm_identifier(),
            issuer: self.subject.clone(),
            this_update: x509_time(this_update)?,
            next_update: Some(x509_time(next_update)?),
            // RFC 5280 §5.1.2.6: absent, not empty, when nothing is revoked.
            revoked_certificates: (!entries.is_empty()).then_some(entries),
            crl_extensions: Some(vec![
                extensions::authority_key_identifier(&self.key_id)?,
                extensions::extension(oid::ID_CE_CRL_NUMBER, false, &crl_number)?,
            ]),
        };
        let signature = self.scheme.sign(&self.key, &tbs_cert_list.to_der()?)?;
        let crl = CertificateList {
            tbs_cert_list,
            signature_algorithm: self.scheme.algorithm_identifier(),
            signature: BitString::from_bytes(&signature)?,
        };
        Ok(crl.to_der()?)
    }

    fn sign_ocsp_response(&self, tbs_response_data: &[u8]) -> Result<CaSignature, CaError> {
        Ok(CaSignature {
            algorithm: self.scheme.algorithm_identifier(),
            value: self.scheme.sign(&self.key, tbs_response_data)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::UNIX_EPOCH;

    use openssl::hash::MessageDigest;
    use openssl::x509::{X509Crl, X509};
    use x509_cert::request::CertReq;

    use super::*;
    use crate::profile::profile_from_toml;
    use crate::testutil::*;
    use crate::{generate_key, self_signed_ca, KeySpec, RevocationReason};

    fn days(issued: &Issued) -> u64 {
        issued
            .not_after
            .duration_since(issued.not_before)
            .unwrap()
            .as_secs()
            / 86_400
    }

    #[test]
    fn rsa_ca_issues_a_verifiable_certificate() {
        let ca = ca(KeySpec::Rsa2048);
        let key = generate_key(KeySpec::Rsa2048).unwrap();
        let mut spec = CsrSpec::new(&key);
        spec.dns = &["host.example.com"];
        spec.uris = &[SID_URI];
        let issued = issue(&ca, &spec.build(), &default_profile()).unwrap();
        assert_chains_to(&ca, &issued.der);

        assert_eq!(issued.serial.len(), 17);
        assert!(issued
            .serial
            .first()
            .is_some_and(|b| (1..=0x7f).contains(b)));
        assert_eq!(issued.subject, "CN=device-1,O=Example");
        assert_eq!(
            issued.sans,
            vec!["dns:host.example.com".to_owned(), format!("uri:{SID_URI}")]
        );

        let cert = X509::from_der(&issued.der).unwrap();
        assert_eq!(
            cert.serial_number().to_bn().unwrap().to_vec(),
            issued.serial
        );
        let (algorithm, _) = (cert.signature_algorithm().object().nid(), ());
        assert_eq!(algorithm, openssl::nid::Nid::SHA256WITHRSAENCRYPTION);
        for id in [
            oid::ID_CE_BASIC_CONSTRAINTS,
            oid::ID_CE_KEY_USAGE,
            oid::ID_CE_EXT_KEY_USAGE,
            oid::ID_CE_SUBJECT_KEY_IDENTIFIER,
            oid::ID_CE_AUTHORITY_KEY_IDENTIFIER,
            oid::ID_CE_SUBJECT_ALT_NAME,
        ] {
            assert!(extension(&issued.der, id).is_some(), "missing {id}");
        }
        assert!(
            extension(&issued.der, oid::ID_CE_KEY_USAGE)
                .unwrap()
                .critical
        );
        assert!(
            extension(&issued.der, oid::ID_CE_BASIC_CONSTRAINTS)
                .unwrap()
                .critical
        );
        assert!(
            !extension(&issued.der, oid::ID_CE_SUBJECT_ALT_NAME)
                .unwrap()
                .critical
        );
        assert_eq!(days(&issued), 365);
        // AKI of the leaf is the SKI of the CA.
        let ca_cert = X509::from_der(ca.certificate_der()).unwrap();
        assert_eq!(
            cert.authority_key_id().unwrap().as_slice(),
            ca_cert.subject_key_id().unwrap().as_slice()
        );
    }

    #[test]
    fn subject_and_san_are_copied_byte_for_byte() {
        let ca = ca(KeySpec::P256);
        let key = generate_key(KeySpec::P256).unwrap();
        let mut spec = CsrSpec::new(&key);
        spec.uris = &[SID_URI];
        spec.emails = &["user@example.com"];
        spec.ips = &["2001:db8::1"];
        let csr = spec.build();
        let issued = issue(&ca, &csr, &default_profile()).unwrap();
        assert_chains_to(&ca, &issued.der);

        let request = CertReq::from_der(&csr).unwrap();
        let certificate = Certificate::from_der(&issued.der).unwrap();
        assert_eq!(
            certificate.tbs_certificate.subject.to_der().unwrap(),
            request.info.subject.to_der().unwrap()
        );
        let san = extension(&issued.der, oid::ID_CE_SUBJECT_ALT_NAME).unwrap();
        let needle = SID_URI.as_bytes();
        assert!(octets(&san).windows(needle.len()).any(|w| w == needle));
        assert_eq!(issued.sans[0], format!("uri:{SID_URI}"));
        assert_eq!(issued.sans[2], "ip:2001:db8::1");
        let cert = X509::from_der(&issued.der).unwrap();
        assert_eq!(
            cert.signature_algorithm().object().nid(),
            openssl::nid::Nid::ECDSA_WITH_SHA256
        );
        let uri = cert.subject_alt_names().unwrap();
        assert_eq!(uri.iter().find_map(|n| n.uri()), Some(SID_URI));
    }

    #[test]
    fn p384_ca_signs_with_sha384() {
        let ca = ca(KeySpec::P384);
        let key = generate_key(KeySpec::P384).unwrap();
        let issued = issue(&ca, &CsrSpec::new(&key).build(), &default_profile()).unwrap();
        assert_chains_to(&ca, &issued.der);
        let cert = X509::from_der(&issued.der).unwrap();
        assert_eq!(
            cert.signature_algorithm().object().nid(),
            openssl::nid::Nid::ECDSA_WITH_SHA384
        );
    }

    #[test]
    fn sid_extension_dropped_by_default_kept_when_allowed() {
        let ca = ca(KeySpec::P256);
        let key = generate_key(KeySpec::P256).unwrap();
        let mut spec = CsrSpec::new(&key);
        spec.sid_extension = true;
        let csr = spec.build();
        let issued = issue(&ca, &csr, &default_profile()).unwrap();
        assert!(extension(&issued.der, oid::MS_SID_EXTENSION).is_none());

        let allowing = profile_from_toml("allow_sid_extension = true");
        let issued = issue(&ca, &csr, &allowing).unwrap();
        let sid = extension(&issued.der, oid::MS_SID_EXTENSION).unwrap();
        assert_eq!(octets(&sid), sid_extension_value().as_slice());
        assert_chains_to(&ca, &issued.der);
    }

    #[test]
    fn rsa_1024_refused_by_default_allowed_when_configured() {
        let ca = ca(KeySpec::P256);
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
        let csr = CsrSpec::new(&key).build();
        let error = issue(&ca, &csr, &default_profile()).unwrap_err();
        assert!(matches!(error, CaError::ProfileViolation { .. }), "{error}");
        let issued = issue(&ca, &csr, &profile_from_toml("min_rsa_bits = 1024")).unwrap();
        assert_chains_to(&ca, &issued.der);
    }

    #[test]
    fn key_type_not_in_profile_is_refused() {
        let ca = ca(KeySpec::Rsa2048);
        let key = generate_key(KeySpec::P384).unwrap();
        let profile = profile_from_toml(r#"key_types = ["rsa", "p256"]"#);
        let error = issue(&ca, &CsrSpec::new(&key).build(), &profile).unwrap_err();
        assert!(matches!(error, CaError::ProfileViolation { .. }), "{error}");
    }

    #[test]
    fn sha1_csr_signature_is_accepted() {
        let ca = ca(KeySpec::Rsa2048);
        let key = generate_key(KeySpec::Rsa2048).unwrap();
        let mut spec = CsrSpec::new(&key);
        spec.digest = MessageDigest::sha1();
        assert!(issue(&ca, &spec.build(), &default_profile()).is_ok());
    }

    #[test]
    fn bad_csr_signature_is_refused() {
        let ca = ca(KeySpec::Rsa2048);
        let key = generate_key(KeySpec::Rsa2048).unwrap();
        let mut request = CertReq::from_der(&CsrSpec::new(&key).build()).unwrap();
        let mut signature = request.signature.raw_bytes().to_vec();
        if let Some(byte) = signature.last_mut() {
            *byte ^= 0x01;
        }
        request.signature = BitString::from_bytes(&signature).unwrap();
        let error = issue(&ca, &request.to_der().unwrap(), &default_profile()).unwrap_err();
        assert!(matches!(error, CaError::BadCsrSignature), "{error}");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let ca = ca(KeySpec::P256);
        for input in [&b""[..], b"\x30\x00", b"\x30\x03\x02\x01\x00", &[0xff; 64]] {
            let error = issue(&ca, input, &default_profile()).unwrap_err();
            assert!(matches!(error, CaError::MalformedCsr(_)), "{error}");
        }
    }

    #[test]
    fn disallowed_san_type_is_refused() {
        let ca = ca(KeySpec::P256);
        let key = generate_key(KeySpec::P256).unwrap();
        let mut spec = CsrSpec::new(&key);
        spec.dns = &["host.example.com"];
        spec.emails = &["user@example.com"];
        let profile = profile_from_toml(r#"allowed_san_types = ["dns", "uri"]"#);
        let error = issue(&ca, &spec.build(), &profile).unwrap_err();
        match error {
            CaError::ProfileViolation { reason, .. } => {
                assert!(reason.contains("email"), "{reason}")
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn empty_subject_refused_when_required() {
        let ca = ca(KeySpec::P256);
        let key = generate_key(KeySpec::P256).unwrap();
        let mut builder = openssl::x509::X509ReqBuilder::new().unwrap();
        builder.set_pubkey(&key).unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        let csr = builder.build().to_der().unwrap();
        let error = issue(&ca, &csr, &default_profile()).unwrap_err();
        assert!(matches!(error, CaError::ProfileViolation { .. }), "{error}");
        // Allowed, but an empty subject then needs a SAN (RFC 5280 §4.1.2.6).
        let lenient = profile_from_toml("require_subject = false");
        let error = issue(&ca, &csr, &lenient).unwrap_err();
        assert!(matches!(error, CaError::ProfileViolation { .. }), "{error}");
    }

    #[test]
    fn empty_subject_profile_marks_san_critical() {
        let ca = ca(KeySpec::P256);
        let key = generate_key(KeySpec::P256).unwrap();
        let mut spec = CsrSpec::new(&key);
        spec.dns = &["host.example.com"];
        let profile = profile_from_toml("subject_from_csr = false");
        let issued = issue(&ca, &spec.build(), &profile).unwrap();
        assert_eq!(issued.subject, "");
        assert!(
            extension(&issued.der, oid::ID_CE_SUBJECT_ALT_NAME)
                .unwrap()
                .critical
        );
        assert_chains_to(&ca, &issued.der);
        // Without a SAN there would be no identity at all.
        let error = issue(&ca, &CsrSpec::new(&key).build(), &profile).unwrap_err();
        assert!(matches!(error, CaError::ProfileViolation { .. }), "{error}");
    }

    #[test]
    fn requested_validity_is_honoured_and_clamped() {
        let ca = ca(KeySpec::P256);
        let key = generate_key(KeySpec::P256).unwrap();
        let csr = CsrSpec::new(&key).build();
        let two_weeks = with_name_value_pairs(
            &csr,
            &key,
            &[("ValidityPeriod", "Weeks"), ("ValidityPeriodUnits", "2")],
        );
        let ten_years = with_name_value_pairs(
            &csr,
            &key,
            &[("ValidityPeriod", "years"), ("ValidityPeriodUnits", "10")],
        );
        let profile = profile_from_toml(
            "validity_days = 30\nmax_validity_days = 90\nallow_requested_validity = true",
        );
        let issued = issue(&ca, &two_weeks, &profile).unwrap();
        assert_eq!(days(&issued), 14);
        assert_chains_to(&ca, &issued.der);
        assert_eq!(days(&issue(&ca, &ten_years, &profile).unwrap()), 90);
        assert_eq!(days(&issue(&ca, &csr, &profile).unwrap()), 30);
        // Ignored unless the profile allows it.
        let ignoring = profile_from_toml("validity_days = 30\nmax_validity_days = 90");
        assert_eq!(days(&issue(&ca, &two_weeks, &ignoring).unwrap()), 30);
    }

    #[test]
    fn validity_never_exceeds_the_ca() {
        let key = generate_key(KeySpec::P256).unwrap();
        let cert = self_signed_ca(&key, "CN=Short CA", 10).unwrap();
        let ca = SoftwareCa::from_parts(cert, key, Vec::new()).unwrap();
        let leaf_key = generate_key(KeySpec::P256).unwrap();
        let issued = issue(&ca, &CsrSpec::new(&leaf_key).build(), &default_profile()).unwrap();
        assert!(issued.not_after <= ca.not_after);
        assert_eq!(days(&issued), 10);
    }

    #[test]
    fn profile_extensions_are_added() {
        let ca = ca(KeySpec::Rsa2048);
        let key = generate_key(KeySpec::P256).unwrap();
        let profile = profile_from_toml(
            r#"
            crl_distribution_points = ["http://pki.example.com/ca.crl"]
            ocsp_urls = ["http://ocsp.example.com"]
            ca_issuers_urls = ["http://pki.example.com/ca.crt"]
            extended_key_usage = []
            "#,
        );
        let issued = issue(&ca, &CsrSpec::new(&key).build(), &profile).unwrap();
        assert!(extension(&issued.der, oid::ID_CE_CRL_DISTRIBUTION_POINTS).is_some());
        assert!(extension(&issued.der, oid::ID_PE_AUTHORITY_INFO_ACCESS).is_some());
        assert!(extension(&issued.der, oid::ID_CE_EXT_KEY_USAGE).is_none());
        let cert = X509::from_der(&issued.der).unwrap();
        let points = cert.crl_distribution_points().unwrap();
        let url = points.iter().find_map(|p| {
            p.distpoint()?
                .fullname()?
                .iter()
                .find_map(|n| n.uri().map(str::to_owned))
        });
        assert_eq!(url.as_deref(), Some("http://pki.example.com/ca.crl"));
        assert_eq!(
            cert.ocsp_responders()
                .unwrap()
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            vec!["http://ocsp.example.com".to_owned()]
        );
    }

    #[test]
    fn crl_lists_revoked_serials_and_verifies() {
        for spec in [KeySpec::Rsa2048, KeySpec::P256] {
            let ca = ca(spec);
            let key = generate_key(KeySpec::P256).unwrap();
            let issued = issue(&ca, &CsrSpec::new(&key).build(), &default_profile()).unwrap();
            let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let revoked = [
                RevokedEntry {
                    serial: issued.serial.clone(),
                    at,
                    reason: RevocationReason::KeyCompromise,
                },
                RevokedEntry {
                    serial: vec![0x01, 0x02],
                    at,
                    reason: RevocationReason::Unspecified,
                },
            ];
            let now = SystemTime::now();
            let der = ca
                .crl(&revoked, now, now + Duration::from_secs(86_400), 42)
                .unwrap();
            let crl = X509Crl::from_der(&der).unwrap();
            let ca_cert = X509::from_der(ca.certificate_der()).unwrap();
            assert!(crl.verify(&ca_cert.public_key().unwrap()).unwrap());
            let listed = crl.get_revoked().unwrap();
            assert_eq!(listed.len(), 2);
            let serials: Vec<Vec<u8>> = listed
                .iter()
                .map(|r| r.serial_number().to_bn().unwrap().to_vec())
                .collect();
            assert!(serials.contains(&issued.serial));
            let parsed = CertificateList::from_der(&der).unwrap();
            let extension_ids: Vec<_> = parsed
                .tbs_cert_list
                .crl_extensions
                .unwrap()
                .iter()
                .map(|e| e.extn_id)
                .collect();
            assert!(extension_ids.contains(&oid::ID_CE_CRL_NUMBER));
            assert!(extension_ids.contains(&oid::ID_CE_AUTHORITY_KEY_IDENTIFIER));
            let entries = parsed.tbs_cert_list.revoked_certificates.unwrap();
            let first = entries.first().unwrap();
            assert_eq!(
                first.crl_entry_extensions.as_ref().unwrap()[0].extn_id,
                oid::ID_CE_CRL_REASONS
            );
        }
    }

    #[test]
    fn empty_crl_has_no_revoked_list() {
        let ca = ca(KeySpec::P256);
        let now = SystemTime::now();
        let der = ca
            .crl(&[], now, now + Duration::from_secs(3600), 1)
            .unwrap();
        let crl = X509Crl::from_der(&der).unwrap();
        assert!(crl.get_revoked().is_none());
    }

    #[test]
    fn load_reads_passphrase_protected_keys() {
        let key = generate_key(KeySpec::P256).unwrap();
        let cert = self_signed_ca(&key, "CN=Loaded CA", 365).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("ca.crt");
        let key_path = dir.path().join("ca.key");
        std::fs::write(&cert_path, X509::from_der(&cert).unwrap().to_pem().unwrap()).unwrap();
        let pem = key
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"s3cret")
            .unwrap();
        std::fs::write(&key_path, pem).unwrap();

        let ca = SoftwareCa::load(&cert_path, &key_path, Some(b"s3cret"), None).unwrap();
        assert_eq!(ca.chain().len(), 1);
        assert!(SoftwareCa::load(&cert_path, &key_path, Some(b"wrong"), None).is_err());
        // No passphrase for an encrypted key: an error, never a terminal prompt.
        assert!(SoftwareCa::load(&cert_path, &key_path, None, None).is_err());

        let other = generate_key(KeySpec::P256).unwrap();
        assert!(SoftwareCa::from_parts(cert, other, Vec::new()).is_err());
    }

    #[test]
    fn software_ca_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SoftwareCa>();
    }
}
