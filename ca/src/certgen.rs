//! Keys and certificates for `scepd init`: the CA, the RA's signing and encryption
//! certificates, and a TLS server certificate.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use der::asn1::{Any, Ia5String, OctetString, SetOfVec, Utf8StringRef};
use der::flagset::FlagSet;
use der::Decode;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

use crate::extensions::{self, oid};
use crate::keyops::{KeyKind, PrivateKeyOps};
use crate::signing::SigningScheme;
use crate::software::{assemble_certificate, CertificateFields, SoftwareCa};
use crate::{parse_dn, CaError};

/// How far notBefore is set in the past, for peers whose clocks run slow.
const BACKDATE: Duration = Duration::from_secs(300);

/// A key to generate: RSA of 2048, 3072 or 4096 bits, or ECDSA on P-256 or P-384.
/// Parsed from `rsa2048`, `rsa3072`, `rsa4096`, `p256`, `p384` (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// ECDSA on NIST P-256.
    P256,
    /// ECDSA on NIST P-384.
    P384,
}

impl FromStr for KeySpec {
    type Err = CaError;

    fn from_str(text: &str) -> Result<Self, CaError> {
        match text.to_ascii_lowercase().as_str() {
            "rsa2048" => Ok(Self::Rsa2048),
            "rsa3072" => Ok(Self::Rsa3072),
            "rsa4096" => Ok(Self::Rsa4096),
            "p256" => Ok(Self::P256),
            "p384" => Ok(Self::P384),
            _ => Err(CaError::UnsupportedAlgorithm(format!(
                "key spec {text:?} (expected rsa2048, rsa3072, rsa4096, p256 or p384)"
            ))),
        }
    }
}

/// Generates a private key with openssl (EC keys use the named-curve encoding).
pub fn generate_key(spec: KeySpec) -> Result<PKey<Private>, CaError> {
    let rsa =
        |bits| -> Result<PKey<Private>, CaError> { Ok(PKey::from_rsa(Rsa::generate(bits)?)?) };
    let ec = |curve| -> Result<PKey<Private>, CaError> {
        let group = EcGroup::from_curve_name(curve)?;
        Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
    };
    match spec {
        KeySpec::Rsa2048 => rsa(2048),
        KeySpec::Rsa3072 => rsa(3072),
        KeySpec::Rsa4096 => rsa(4096),
        KeySpec::P256 => ec(Nid::X9_62_PRIME256V1),
        KeySpec::P384 => ec(Nid::SECP384R1),
    }
}

/// What an RA certificate is for (RFC 8894 §2.1.2: a CA may delegate to an RA with
/// separate signing and encryption keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaPurpose {
    /// Signs CertRep messages: keyUsage digitalSignature.
    Signing,
    /// Decrypts clients' EnvelopedData: keyUsage keyEncipherment + dataEncipherment.
    Encryption,
}

fn subject_public_key_info(
    key: &PKeyRef<impl HasPublic>,
) -> Result<SubjectPublicKeyInfoOwned, CaError> {
    Ok(SubjectPublicKeyInfoOwned::from_der(
        &key.public_key_to_der()?,
    )?)
}

fn validity_from_now(validity_days: u32) -> Result<(SystemTime, SystemTime), CaError> {
    let now = SystemTime::now();
    let not_before = now
        .checked_sub(BACKDATE)
        .ok_or_else(|| CaError::TimeOutOfRange("notBefore".into()))?;
    Ok((not_before, crate::time::add_days(now, validity_days)?))
}

fn non_empty_name(subject: &str) -> Result<Name, CaError> {
    let name = parse_dn(subject)?;
    if name.is_empty() {
        return Err(CaError::InvalidName("the subject must not be empty".into()));
    }
    Ok(name)
}

/// Creates a self-signed CA certificate (DER) for `key`: basicConstraints cA=TRUE critical
/// (RFC 5280 §4.2.1.9); keyUsage keyCertSign, cRLSign, digitalSignature, plus
/// keyEncipherment for RSA keys, since SCEP clients encrypt to the CA when there is no RA
/// (RFC 8894 §2.1.2); subjectKeyIdentifier (§4.2.1.2). `subject` is RFC 4514, e.g.
/// `"CN=scepd CA,O=Example"`.
pub fn self_signed_ca(
    key: &dyn PrivateKeyOps,
    subject: &str,
    validity_days: u32,
) -> Result<Vec<u8>, CaError> {
    let name = non_empty_name(subject)?;
    let public_key = subject_public_key_info(&*key.public_key()?)?;
    let mut usage = KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature;
    if key.kind() == KeyKind::Rsa {
        usage |= KeyUsages::KeyEncipherment;
    }
    let (not_before, not_after) = validity_from_now(validity_days)?;
    let fields = CertificateFields {
        subject: name.clone(),
        extensions: vec![
            extensions::basic_constraints(true)?,
            extensions::key_usage(KeyUsage(usage))?,
            extensions::subject_key_identifier(&public_key)?,
        ],
        public_key,
        not_before,
        not_after,
    };
    Ok(assemble_certificate(fields, name, key, SigningScheme::for_key(key)?)?.der)
}

/// Issues an RA certificate (DER) under `ca` for `key`, as NDES's RA certificates are:
/// extKeyUsage Certificate Request Agent (1.3.6.1.4.1.311.20.2.1) and the keyUsage of
/// `purpose`. notAfter is clamped to the CA's.
pub fn issue_ra_certificate(
    ca: &SoftwareCa,
    key: &PKeyRef<impl HasPublic>,
    subject: &str,
    purpose: RaPurpose,
    validity_days: u32,
) -> Result<Vec<u8>, CaError> {
    let usage: FlagSet<KeyUsages> = match purpose {
        RaPurpose::Signing => KeyUsages::DigitalSignature.into(),
        RaPurpose::Encryption => KeyUsages::KeyEncipherment | KeyUsages::DataEncipherment,
    };
    end_entity(
        ca,
        key,
        non_empty_name(subject)?,
        KeyUsage(usage),
        &[oid::KP_CERTIFICATE_REQUEST_AGENT],
        Vec::new(),
        validity_days,
    )
}

/// Issues a delegated OCSP responder certificate (DER) under `ca` for `key` (RFC 6960
/// §4.2.2.2): keyUsage digitalSignature, extKeyUsage id-kp-OCSPSigning, and id-pkix-ocsp-nocheck
/// (§4.2.2.2.1: clients need not check the responder certificate's own status, so keep its
/// validity short and renew it).
pub fn issue_ocsp_responder_certificate(
    ca: &SoftwareCa,
    key: &PKeyRef<impl HasPublic>,
    subject: &str,
    validity_days: u32,
) -> Result<Vec<u8>, CaError> {
    end_entity(
        ca,
        key,
        non_empty_name(subject)?,
        KeyUsage(KeyUsages::DigitalSignature.into()),
        &[const_oid::db::rfc5280::ID_KP_OCSP_SIGNING],
        vec![extensions::extension(
            const_oid::db::rfc6960::ID_PKIX_OCSP_NOCHECK,
            false,
            &der::asn1::Null,
        )?],
        validity_days,
    )
}

/// Issues a TLS server certificate (DER) under `ca` for `key`: subject CN=`host`,
/// subjectAltName dNSName `host` (iPAddress if `host` is an IP address), extKeyUsage
/// serverAuth, keyUsage digitalSignature (+ keyEncipherment for RSA keys, which RSA key
/// exchange needs and which RFC 8813 §3 forbids for EC keys).
pub fn issue_tls_server_certificate(
    ca: &SoftwareCa,
    key: &PKeyRef<impl HasPublic>,
    host: &str,
    validity_days: u32,
) -> Result<Vec<u8>, CaError> {
    let san = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => GeneralName::IpAddress(OctetString::new(ip.octets())?),
        Ok(IpAddr::V6(ip)) => GeneralName::IpAddress(OctetString::new(ip.octets())?),
        Err(_) => GeneralName::DnsName(
            Ia5String::new(host).map_err(|_| CaError::InvalidName(format!("host {host:?}")))?,
        ),
    };
    let mut usage: FlagSet<KeyUsages> = KeyUsages::DigitalSignature.into();
    if key.id() == Id::RSA {
        usage |= KeyUsages::KeyEncipherment;
    }
    end_entity(
        ca,
        key,
        common_name(host)?,
        KeyUsage(usage),
        &[oid::KP_SERVER_AUTH],
        vec![extensions::subject_alt_name(vec![san])?],
        validity_days,
    )
}

/// `CN=<value>` built directly, so that a host needs no RFC 4514 escaping.
fn common_name(value: &str) -> Result<Name, CaError> {
    let atv = AttributeTypeAndValue {
        oid: const_oid::db::rfc4519::CN,
        value: Any::encode_from(&Utf8StringRef::new(value)?)?,
    };
    let rdn = RelativeDistinguishedName(SetOfVec::try_from(vec![atv])?);
    Ok(RdnSequence(vec![rdn]))
}

fn end_entity(
    ca: &SoftwareCa,
    key: &PKeyRef<impl HasPublic>,
    subject: Name,
    usage: KeyUsage,
    purposes: &[const_oid::ObjectIdentifier],
    extra: Vec<x509_cert::ext::Extension>,
    validity_days: u32,
) -> Result<Vec<u8>, CaError> {
    let public_key = subject_public_key_info(key)?;
    let mut list = vec![
        extensions::basic_constraints(false)?,
        extensions::key_usage(usage)?,
    ];
    list.extend(extensions::extended_key_usage(purposes)?);
    list.extend(extra);
    list.push(extensions::subject_key_identifier(&public_key)?);
    let (not_before, not_after) = validity_from_now(validity_days)?;
    let fields = CertificateFields {
        subject,
        public_key,
        not_before,
        not_after,
        extensions: list,
    };
    Ok(ca.sign_certificate(fields)?.der)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use openssl::x509::X509;

    use super::*;
    use crate::testutil::{assert_chains_to, ca, extension};
    use crate::CaBackend;

    fn key_usage_of(der: &[u8]) -> KeyUsage {
        let ext = extension(der, oid::ID_CE_KEY_USAGE).unwrap();
        KeyUsage::from_der(ext.extn_value.as_bytes()).unwrap()
    }

    #[test]
    fn key_specs_parse_and_generate() {
        for (text, bits, id) in [
            ("rsa2048", 2048, Id::RSA),
            ("P256", 256, Id::EC),
            ("p384", 384, Id::EC),
        ] {
            let key = generate_key(text.parse().unwrap()).unwrap();
            assert_eq!((key.bits(), key.id()), (bits, id));
        }
        assert!("rsa1024".parse::<KeySpec>().is_err());
    }

    #[test]
    fn self_signed_ca_is_a_ca() {
        for spec in [KeySpec::Rsa2048, KeySpec::P256] {
            let key = generate_key(spec).unwrap();
            let der = self_signed_ca(&key, "CN=scepd CA,O=Example,C=DE", 3650).unwrap();
            let cert = X509::from_der(&der).unwrap();
            assert!(cert.verify(&key).unwrap());
            let subject = crate::format_dn(
                &x509_cert::Certificate::from_der(&der)
                    .unwrap()
                    .tbs_certificate
                    .subject,
            );
            assert_eq!(subject, "CN=scepd CA,O=Example,C=DE");
            let usage = key_usage_of(&der);
            assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
            assert_eq!(usage.key_encipherment(), spec == KeySpec::Rsa2048);
            assert!(
                extension(&der, oid::ID_CE_BASIC_CONSTRAINTS)
                    .unwrap()
                    .critical
            );
            assert!(cert.subject_key_id().is_some());
        }
        let key = generate_key(KeySpec::P256).unwrap();
        assert!(self_signed_ca(&key, "", 10).is_err());
    }

    #[test]
    fn ra_certificates_carry_the_request_agent_eku() {
        let ca = ca(KeySpec::Rsa2048);
        let key = generate_key(KeySpec::Rsa2048).unwrap();
        for (purpose, signing) in [(RaPurpose::Signing, true), (RaPurpose::Encryption, false)] {
            let der = issue_ra_certificate(&ca, &key, "CN=scepd RA", purpose, 365).unwrap();
            assert_chains_to(&ca, &der);
            let usage = key_usage_of(&der);
            assert_eq!(usage.digital_signature(), signing);
            assert_eq!(usage.key_encipherment(), !signing);
            let eku = extension(&der, oid::ID_CE_EXT_KEY_USAGE).unwrap();
            let eku = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(eku.extn_value.as_bytes())
                .unwrap();
            assert_eq!(eku.0, vec![oid::KP_CERTIFICATE_REQUEST_AGENT]);
        }
    }

    #[test]
    fn tls_certificates_name_the_host() {
        let ca = ca(KeySpec::P256);
        let key = generate_key(KeySpec::P256).unwrap();
        let der = issue_tls_server_certificate(&ca, &key, "scep.example.com", 365).unwrap();
        assert_chains_to(&ca, &der);
        let cert = X509::from_der(&der).unwrap();
        let names = cert.subject_alt_names().unwrap();
        assert_eq!(
            names.iter().find_map(|n| n.dnsname()),
            Some("scep.example.com")
        );
        assert!(!key_usage_of(&der).key_encipherment());

        let der = issue_tls_server_certificate(&ca, &key, "192.0.2.7", 365).unwrap();
        let cert = X509::from_der(&der).unwrap();
        let names = cert.subject_alt_names().unwrap();
        assert_eq!(
            names.iter().find_map(|n| n.ipaddress()),
            Some(&[192, 0, 2, 7][..])
        );
        assert_eq!(ca.chain().len(), 1);
    }
}
