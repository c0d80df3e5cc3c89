//! Test fixtures for the codec: keys and certificates made with openssl, once per test run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509Builder, X509NameBuilder, X509Req, X509ReqBuilder, X509};

use super::client::ClientIdentity;

/// A key and its certificate.
pub struct Identity {
    pub key: PKey<Private>,
    pub cert: X509,
}

impl Identity {
    pub fn der(&self) -> Vec<u8> {
        self.cert.to_der().unwrap()
    }
}

pub fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

pub fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// Which extensions a test certificate gets.
#[derive(Clone, Copy)]
pub enum Role {
    Ca,
    /// digitalSignature + keyEncipherment (a combined RA).
    Ra,
    /// keyEncipherment only.
    RaEncrypt,
    /// digitalSignature only.
    RaSign,
    /// An issued end-entity certificate (no SKI, to vary shapes).
    Leaf,
}

/// A certificate for `key`, issued by `issuer` (self-signed when `None`).
pub fn certificate(
    key: &PKey<Private>,
    cn: &str,
    role: Role,
    issuer: Option<&Identity>,
    serial: u32,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    builder
        .set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&name).unwrap();
    builder
        .set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))
        .unwrap();
    builder.set_pubkey(key).unwrap();
    builder
        .set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let usage = match role {
        Role::Ca => KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .digital_signature()
            .build(),
        Role::Ra => KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build(),
        Role::RaEncrypt => KeyUsage::new().critical().key_encipherment().build(),
        Role::RaSign | Role::Leaf => KeyUsage::new().critical().digital_signature().build(),
    };
    builder.append_extension(usage.unwrap()).unwrap();
    if matches!(role, Role::Ca) {
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    if !matches!(role, Role::Leaf) {
        let ski = SubjectKeyIdentifier::new()
            .build(&builder.x509v3_context(None, None))
            .unwrap();
        builder.append_extension(ski).unwrap();
    }
    let signing_key = issuer.map_or(key, |i| &i.key);
    builder.sign(signing_key, MessageDigest::sha256()).unwrap();
    builder.build()
}

/// The fixtures every test shares.
pub struct Pki {
    pub ca: Identity,
    /// Combined RA (sign + decrypt), issued by the CA.
    pub ra: Identity,
    /// Another RA nobody should decrypt with.
    pub stranger: Identity,
    pub client: ClientIdentity,
    /// A CSR for the client key.
    pub csr: Vec<u8>,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = rsa_key();
        let ca = Identity {
            cert: certificate(&ca_key, "scepd test CA", Role::Ca, None, 1),
            key: ca_key,
        };
        let ra_key = rsa_key();
        let ra = Identity {
            cert: certificate(&ra_key, "scepd test RA", Role::Ra, Some(&ca), 2),
            key: ra_key,
        };
        let stranger_key = rsa_key();
        let stranger = Identity {
            cert: certificate(&stranger_key, "someone else", Role::Ra, None, 3),
            key: stranger_key,
        };
        let client_key = rsa_key();
        let csr = csr(&client_key, "device-1").to_der().unwrap();
        let client = ClientIdentity::self_signed(client_key, "device-1").unwrap();
        Pki {
            ca,
            ra,
            stranger,
            client,
            csr,
        }
    })
}

pub fn csr(key: &PKey<Private>, cn: &str) -> X509Req {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let mut builder = X509ReqBuilder::new().unwrap();
    builder.set_subject_name(&name.build()).unwrap();
    builder.set_pubkey(key).unwrap();
    builder.sign(key, MessageDigest::sha256()).unwrap();
    builder.build()
}
