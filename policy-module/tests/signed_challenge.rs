//! End-to-end tests of the signed challenge: blobs minted by `mint_challenge` and by the
//! `openssl` command line, verified against CSRs built with the `openssl` crate.
//!
//! Keys and certificates are generated per test run; files for the command line go to a
//! temporary directory. Nothing here is a stored fixture.

use der::{Decode, Encode};
use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time, Asn1Type};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509Extension, X509Name, X509NameBuilder, X509ReqBuilder, X509};
use scepd_policy::signed_challenge::{Cipher, KeyTransport};
use scepd_policy::{
    mint_challenge, random_challenge_id, verify_signed_challenge, Approval, Claims, Decision,
    DecryptionKey, Denial, DenialReason, MintOptions, PolicyInput, PolicyModule, San,
    SignedChallenge, SignedChallengeTrust, StaticKeys, TrustedSigner, VerifiedClaims,
};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use x509_cert::ext::pkix::name::{GeneralName, OtherName};
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName};
use x509_cert::request::CertReq;

const SID_URI: &str =
    "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1004336348-1177238915-682003330-1001";
const OTHER_SID_URI: &str =
    "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1004336348-1177238915-682003330-500";

trait DecisionExt {
    fn approval(self) -> Option<Approval>;
    fn denial(self) -> Option<Denial>;
}

impl DecisionExt for Decision {
    fn approval(self) -> Option<Approval> {
        match self {
            Decision::Approve(a) => Some(a),
            Decision::Deny(_) => None,
        }
    }
    fn denial(self) -> Option<Denial> {
        match self {
            Decision::Deny(d) => Some(d),
            Decision::Approve(_) => None,
        }
    }
}

fn now_secs() -> u64 {
    static NOW: OnceLock<u64> = OnceLock::new();
    *NOW.get_or_init(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    })
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs())
}

// ---------------------------------------------------------------- keys and certificates

struct Identity {
    cert: X509,
    key: PKey<Private>,
}

impl Identity {
    fn der(&self) -> Vec<u8> {
        self.cert.to_der().unwrap()
    }
    fn decryption_key(&self) -> DecryptionKey {
        DecryptionKey {
            cert_der: self.der(),
            key: self.key.clone(),
        }
    }
}

fn rsa(bits: u32) -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
}

fn ec(nid: Nid) -> PKey<Private> {
    PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(nid).unwrap()).unwrap()).unwrap()
}

fn name(cn: &str) -> X509Name {
    let mut b = X509NameBuilder::new().unwrap();
    b.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    b.build()
}

/// A certificate for `key` named `cn`, issued by `issuer` (self-signed when `None`), valid
/// from `from` to `to` seconds relative to now.
fn certificate(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<&Identity>,
    ca: bool,
    from: i64,
    to: i64,
) -> X509 {
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(rand_u32()).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&serial).unwrap())
        .unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    let issuer_name =
        issuer.map_or_else(|| name(cn), |i| i.cert.subject_name().to_owned().unwrap());
    b.set_issuer_name(&issuer_name).unwrap();
    b.set_pubkey(key).unwrap();
    let at = |d: i64| Asn1Time::from_unix(now_secs() as i64 + d).unwrap();
    b.set_not_before(&at(from)).unwrap();
    b.set_not_after(&at(to)).unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    let signing_key = issuer.map_or(key, |i| &i.key);
    b.sign(signing_key, MessageDigest::sha256()).unwrap();
    b.build()
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u32::from_be_bytes(b) >> 1
}

fn identity(cn: &str, key: PKey<Private>) -> Identity {
    let cert = certificate(cn, &key, None, false, -86_400, 30 * 86_400);
    Identity { cert, key }
}

struct Pki {
    ra: Identity,
    ra_old: Identity,
    mdm_rsa: Identity,
    mdm_ec: Identity,
    stranger: Identity,
    mdm_ca: Identity,
    mdm_leaf: Identity,
    mdm_expired: Identity,
    device_rsa: PKey<Private>,
    device_small: PKey<Private>,
    device_p256: PKey<Private>,
    device_p384: PKey<Private>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mdm_ca_key = rsa(2048);
        let mdm_ca = Identity {
            cert: certificate("MDM CA", &mdm_ca_key, None, true, -86_400, 365 * 86_400),
            key: mdm_ca_key,
        };
        let leaf_key = ec(Nid::X9_62_PRIME256V1);
        let mdm_leaf = Identity {
            cert: certificate(
                "MDM signer 2",
                &leaf_key,
                Some(&mdm_ca),
                false,
                -86_400,
                86_400,
            ),
            key: leaf_key,
        };
        let expired_key = ec(Nid::X9_62_PRIME256V1);
        let mdm_expired = Identity {
            cert: certificate(
                "MDM old",
                &expired_key,
                None,
                false,
                -10 * 86_400,
                -5 * 86_400,
            ),
            key: expired_key,
        };
        Pki {
            ra: identity("RA encryption", rsa(2048)),
            ra_old: identity("RA encryption (old)", rsa(2048)),
            mdm_rsa: identity("MDM signer RSA", rsa(2048)),
            mdm_ec: identity("MDM signer EC", ec(Nid::X9_62_PRIME256V1)),
            stranger: identity("Not the MDM", rsa(2048)),
            mdm_ca,
            mdm_leaf,
            mdm_expired,
            device_rsa: rsa(2048),
            device_small: rsa(1024),
            device_p256: ec(Nid::X9_62_PRIME256V1),
            device_p384: ec(Nid::SECP384R1),
        }
    })
}

fn trust() -> SignedChallengeTrust {
    let p = pki();
    SignedChallengeTrust::new(vec![
        TrustedSigner::new(vec![p.mdm_rsa.cert.clone()]),
        TrustedSigner::new(vec![p.mdm_ec.cert.clone()]).with_issuer("mdm.example"),
        TrustedSigner::new(vec![p.mdm_ca.cert.clone()]),
        TrustedSigner::new(vec![p.mdm_expired.cert.clone()]),
    ])
}

fn keys() -> Vec<DecryptionKey> {
    vec![pki().ra.decryption_key()]
}

// ---------------------------------------------------------------- claims and CSRs

fn claims() -> Claims {
    let t = now_secs();
    Claims {
        v: 1,
        id: random_challenge_id(),
        iss: "mdm.example".into(),
        iat: t - 60,
        nbf: t - 60,
        exp: t + 3600,
        template: "devices".into(),
        subject: r"CN=Doe\, Jane,OU=Devices,O=Example".into(),
        san: vec![
            San::new("dns", "host1.example.com"),
            San::new("email", "jane@example.com"),
            San::new("upn", "jane@corp.example.com"),
            San::new("uri", SID_URI),
            San::new("ip", "192.0.2.7"),
            San::new("ip", "2001:db8::7"),
        ],
        key_usage: Some(vec!["digitalSignature".into(), "keyEncipherment".into()]),
        eku: Some(vec!["1.3.6.1.5.5.7.3.2".into()]),
        min_key_bits: Some(2048),
        key_types: Some(vec!["rsa".into(), "p256".into()]),
        device_id: Some("device-42".into()),
        user_id: Some("jane".into()),
        tenant: Some("contoso".into()),
    }
}

/// What goes into a test CSR.
#[derive(Clone)]
struct CsrSpec {
    /// (nid, value, string type) in ASN.1 order; `None` as the type means UTF8String.
    subject: Vec<(Nid, &'static str, Asn1Type)>,
    sans: Option<Vec<GeneralName>>,
    key_usage: Option<KeyUsage>,
    eku: Option<Vec<&'static str>>,
}

fn ia5(s: &str) -> der::asn1::Ia5String {
    der::asn1::Ia5String::new(s).unwrap()
}

fn upn(s: &str) -> GeneralName {
    GeneralName::OtherName(OtherName {
        type_id: const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.3"),
        value: der::Any::encode_from(&der::asn1::Utf8StringRef::new(s).unwrap()).unwrap(),
    })
}

fn ip(octets: &[u8]) -> GeneralName {
    GeneralName::IpAddress(der::asn1::OctetString::new(octets).unwrap())
}

fn matching_sans() -> Vec<GeneralName> {
    vec![
        GeneralName::UniformResourceIdentifier(ia5(SID_URI)),
        GeneralName::DnsName(ia5("host1.example.com")),
        GeneralName::Rfc822Name(ia5("jane@example.com")),
        upn("jane@corp.example.com"),
        ip(&[192, 0, 2, 7]),
        ip(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]),
    ]
}

fn spec() -> CsrSpec {
    CsrSpec {
        subject: vec![
            (Nid::ORGANIZATIONNAME, "Example", Asn1Type::UTF8STRING),
            (Nid::ORGANIZATIONALUNITNAME, "Devices", Asn1Type::UTF8STRING),
            (Nid::COMMONNAME, "Doe, Jane", Asn1Type::UTF8STRING),
        ],
        sans: Some(matching_sans()),
        key_usage: Some(KeyUsage(
            KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment,
        )),
        eku: Some(vec!["1.3.6.1.5.5.7.3.2"]),
    }
}

fn extension(oid: &str, der_value: Vec<u8>) -> X509Extension {
    let oid = Asn1Object::from_str(oid).unwrap();
    let value = Asn1OctetString::new_from_bytes(&der_value).unwrap();
    X509Extension::new_from_der(&oid, false, &value).unwrap()
}

fn csr_with_key(spec: &CsrSpec, key: &PKey<Private>) -> CertReq {
    let mut b = X509ReqBuilder::new().unwrap();
    let mut n = X509NameBuilder::new().unwrap();
    for (nid, value, ty) in &spec.subject {
        n.append_entry_by_nid_with_type(*nid, value, *ty).unwrap();
    }
    b.set_subject_name(&n.build()).unwrap();
    b.set_pubkey(key).unwrap();
    let mut extensions = Stack::new().unwrap();
    if let Some(sans) = &spec.sans {
        let der_value = SubjectAltName(sans.clone()).to_der().unwrap();
        extensions.push(extension("2.5.29.17", der_value)).unwrap();
    }
    if let Some(ku) = &spec.key_usage {
        extensions
            .push(extension("2.5.29.15", ku.to_der().unwrap()))
            .unwrap();
    }
    if let Some(eku) = &spec.eku {
        let oids = eku
            .iter()
            .map(|o| const_oid::ObjectIdentifier::new_unwrap(o))
            .collect();
        extensions
            .push(extension(
                "2.5.29.37",
                ExtendedKeyUsage(oids).to_der().unwrap(),
            ))
            .unwrap();
    }
    if !extensions.is_empty() {
        b.add_extensions(&extensions).unwrap();
    }
    b.sign(key, MessageDigest::sha256()).unwrap();
    CertReq::from_der(&b.build().to_der().unwrap()).unwrap()
}

fn csr(spec: &CsrSpec) -> CertReq {
    csr_with_key(spec, &pki().device_rsa)
}

// ---------------------------------------------------------------- minting and verifying

fn mint_with(
    claims: &Claims,
    signer: &Identity,
    recipient: &Identity,
    options: MintOptions,
) -> String {
    mint_challenge(
        claims,
        &signer.der(),
        &signer.key,
        &recipient.der(),
        options,
    )
    .unwrap()
}

fn mint(claims: &Claims) -> String {
    let p = pki();
    mint_with(claims, &p.mdm_rsa, &p.ra, MintOptions::default())
}

fn verify_at(blob: &str, csr: &CertReq, when: SystemTime) -> Result<VerifiedClaims, Denial> {
    verify_signed_challenge(blob, csr, "devices", when, &trust(), &keys())
}

fn verify(blob: &str, csr: &CertReq) -> Result<VerifiedClaims, Denial> {
    verify_at(blob, csr, now())
}

#[track_caller]
fn assert_denied(result: Result<VerifiedClaims, Denial>, reason: DenialReason) -> Denial {
    match result {
        Err(denial) => {
            assert_eq!(denial.reason, reason, "{denial}");
            denial
        }
        Ok(v) => panic!("expected {reason}, got an approval {v:?}"),
    }
}

/// Denies `claims` (after `edit`) minted normally, against the standard CSR.
#[track_caller]
fn denied_for_claims(edit: impl FnOnce(&mut Claims), reason: DenialReason) {
    let mut c = claims();
    edit(&mut c);
    assert_denied(verify(&mint(&c), &csr(&spec())), reason);
}

/// Denies the standard claims against a CSR built from `spec()` after `edit`.
#[track_caller]
fn denied_for_csr(edit: impl FnOnce(&mut CsrSpec), reason: DenialReason) {
    let mut s = spec();
    edit(&mut s);
    assert_denied(verify(&mint(&claims()), &csr(&s)), reason);
}

// ---------------------------------------------------------------- the openssl command line

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_pem(dir: &Path, stem: &str, id: &Identity) {
    std::fs::write(dir.join(format!("{stem}.pem")), id.cert.to_pem().unwrap()).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.key")),
        id.key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
}

/// Encrypts `plaintext` to the RA certificate and signs it with `signer`, with the openssl
/// command line only; `encrypt_extra` / `sign_extra` are appended to the two commands.
/// Returns `base64 -w0` of the result.
fn cli_blob(
    plaintext: &[u8],
    signer: &Identity,
    encrypt_extra: &[&str],
    sign_extra: &[&str],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pem(d, "ra", &pki().ra);
    write_pem(d, "mdm", signer);
    std::fs::write(d.join("claims.json"), plaintext).unwrap();
    let mut encrypt = vec![
        "cms",
        "-encrypt",
        "-binary",
        "-in",
        "claims.json",
        "-recip",
        "ra.pem",
        "-outform",
        "DER",
        "-out",
        "enveloped.der",
    ];
    encrypt.extend(if encrypt_extra.is_empty() {
        &["-aes256"][..]
    } else {
        encrypt_extra
    });
    openssl(d, &encrypt);
    let mut sign = vec![
        "cms",
        "-sign",
        "-binary",
        "-nodetach",
        "-in",
        "enveloped.der",
        "-signer",
        "mdm.pem",
        "-inkey",
        "mdm.key",
        "-outform",
        "DER",
        "-out",
        "signed.der",
    ];
    sign.extend(if sign_extra.is_empty() {
        &["-md", "sha256"][..]
    } else {
        sign_extra
    });
    openssl(d, &sign);
    let out = Command::new("base64")
        .args(["-w0", "signed.der"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn json(c: &Claims) -> Vec<u8> {
    serde_json::to_vec(c).unwrap()
}

// ================================================================ tests: accepted blobs

#[test]
fn a_minted_blob_verifies_and_exposes_the_log_claims() {
    let c = claims();
    let v = verify(&mint(&c), &csr(&spec())).unwrap();
    assert_eq!(v.iss, "mdm.example");
    assert_eq!(v.device_id.as_deref(), Some("device-42"));
    assert_eq!(v.user_id.as_deref(), Some("jane"));
    assert_eq!(v.tenant.as_deref(), Some("contoso"));
    assert_eq!(v.exp, SystemTime::UNIX_EPOCH + Duration::from_secs(c.exp));
    assert_eq!(v.forget_after, v.exp + Duration::from_secs(300));
    // The redemption key is a digest of the id, never the id itself, and is stable.
    assert_ne!(v.id_digest.to_vec(), c.id.as_bytes().to_vec());
    let again = verify(&mint(&c), &csr(&spec())).unwrap();
    assert_eq!(again.id_digest, v.id_digest);
    let other = verify(&mint(&claims()), &csr(&spec())).unwrap();
    assert_ne!(other.id_digest, v.id_digest);
}

#[test]
fn the_policy_module_approves_without_constraints_and_asks_for_redemption() {
    let c = claims();
    let blob = mint(&c);
    let req = csr(&spec());
    let der = req.to_der().unwrap();
    let module = SignedChallenge::new(trust(), Arc::new(StaticKeys(keys())));
    assert_eq!(module.name(), "signed-challenge");
    let input = |challenge| PolicyInput {
        template: "devices",
        csr_der: &der,
        csr: &req,
        challenge,
        transaction_id: "tx",
        signer_der: &[],
        renewal_of: None,
        now: now(),
    };
    let approval = module.evaluate(&input(Some(&blob))).approval().unwrap();
    assert_eq!(approval.constraints, scepd_policy::Constraints::default());
    let redeem = approval.redeem.expect("a one-time redemption");
    let expected = verify(&blob, &req).unwrap().redemption();
    assert_eq!(redeem, expected);
    assert_eq!(
        module.evaluate(&input(None)).denial().unwrap().reason,
        DenialReason::MissingChallenge
    );
    assert_eq!(
        module.evaluate(&input(Some(""))).denial().unwrap().reason,
        DenialReason::MissingChallenge
    );
}

#[test]
fn keys_come_from_a_closure_and_an_old_key_still_opens_during_renewal() {
    let p = pki();
    let blob = mint_with(&claims(), &p.mdm_rsa, &p.ra_old, MintOptions::default());
    let source = || vec![pki().ra.decryption_key(), pki().ra_old.decryption_key()];
    let module = SignedChallenge::new(trust(), Arc::new(source));
    let req = csr(&spec());
    let der = req.to_der().unwrap();
    let decision = module.evaluate(&PolicyInput {
        template: "devices",
        csr_der: &der,
        csr: &req,
        challenge: Some(&blob),
        transaction_id: "tx",
        signer_der: &[],
        renewal_of: None,
        now: now(),
    });
    assert!(matches!(decision, Decision::Approve(_)), "{decision:?}");
    // With only the new key, the same blob does not open.
    assert_denied(verify(&blob, &req), DenialReason::ChallengeDecryptionError);
}

#[test]
fn an_ecdsa_p256_signer_with_a_pinned_issuer_verifies() {
    let p = pki();
    let blob = mint_with(&claims(), &p.mdm_ec, &p.ra, MintOptions::default());
    verify(&blob, &csr(&spec())).unwrap();
}

#[test]
fn a_signer_issued_by_a_trusted_mdm_ca_verifies_and_may_be_left_out_if_configured() {
    let p = pki();
    let blob = mint_with(&claims(), &p.mdm_leaf, &p.ra, MintOptions::default());
    verify(&blob, &csr(&spec())).unwrap();
    // A configured leaf need not travel in the message.
    let options = MintOptions {
        omit_signer_certificate: true,
        ..MintOptions::default()
    };
    let blob = mint_with(&claims(), &p.mdm_rsa, &p.ra, options);
    verify(&blob, &csr(&spec())).unwrap();
}

#[test]
fn every_cipher_and_key_transport_of_the_minter_verifies() {
    let p = pki();
    for cipher in [Cipher::Aes128Cbc, Cipher::Aes192Cbc, Cipher::Aes256Cbc] {
        for key_transport in [
            KeyTransport::RsaPkcs1v15,
            KeyTransport::RsaOaepSha1,
            KeyTransport::RsaOaepSha256,
        ] {
            let options = MintOptions {
                cipher,
                key_transport,
                ..MintOptions::default()
            };
            let blob = mint_with(&claims(), &p.mdm_rsa, &p.ra, options);
            verify(&blob, &csr(&spec()))
                .unwrap_or_else(|d| panic!("{cipher:?} {key_transport:?}: {d}"));
        }
    }
}

#[test]
fn a_blob_made_by_the_openssl_command_line_alone_verifies() {
    let p = pki();
    let req = csr(&spec());
    let c = claims();
    // The worked example of docs/challenge-format.md: -aes256, then -md sha256.
    verify(&cli_blob(&json(&c), &p.mdm_rsa, &[], &[]), &req).unwrap();
    verify(&cli_blob(&json(&c), &p.mdm_ec, &[], &[]), &req).unwrap();
    verify(
        &cli_blob(&json(&c), &p.mdm_rsa, &["-aes128"], &["-md", "sha512"]),
        &req,
    )
    .unwrap();
    let oaep = [
        "-aes256",
        "-keyopt",
        "rsa_padding_mode:oaep",
        "-keyopt",
        "rsa_oaep_md:sha256",
    ];
    verify(&cli_blob(&json(&c), &p.mdm_rsa, &oaep, &[]), &req).unwrap();
    let oaep_sha1 = ["-aes256", "-keyopt", "rsa_padding_mode:oaep"];
    verify(&cli_blob(&json(&c), &p.mdm_rsa, &oaep_sha1, &[]), &req).unwrap();
    let pss = ["-md", "sha256", "-keyopt", "rsa_padding_mode:pss"];
    verify(&cli_blob(&json(&c), &p.mdm_rsa, &[], &pss), &req).unwrap();
}

#[test]
fn a_minted_blob_is_accepted_by_openssl_cms_verify_and_decrypt() {
    let p = pki();
    let c = claims();
    for signer in [&p.mdm_rsa, &p.mdm_ec] {
        let blob = mint_with(&c, signer, &p.ra, MintOptions::default());
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        use base64::Engine;
        let der_blob = base64::engine::general_purpose::STANDARD
            .decode(&blob)
            .unwrap();
        std::fs::write(d.join("blob.der"), der_blob).unwrap();
        write_pem(d, "ra", &p.ra);
        write_pem(d, "mdm", signer);
        openssl(
            d,
            &[
                "cms",
                "-verify",
                "-inform",
                "DER",
                "-in",
                "blob.der",
                "-noverify",
                "-binary",
                "-out",
                "enveloped.der",
            ],
        );
        // And with the chain check against the signer as the trust anchor.
        openssl(
            d,
            &[
                "cms",
                "-verify",
                "-inform",
                "DER",
                "-in",
                "blob.der",
                "-CAfile",
                "mdm.pem",
                "-partial_chain",
                "-purpose",
                "any",
                "-binary",
                "-out",
                "enveloped2.der",
            ],
        );
        openssl(
            d,
            &[
                "cms",
                "-decrypt",
                "-inform",
                "DER",
                "-in",
                "enveloped.der",
                "-recip",
                "ra.pem",
                "-inkey",
                "ra.key",
                "-binary",
                "-out",
                "claims.json",
            ],
        );
        let plain = std::fs::read(d.join("claims.json")).unwrap();
        let back: Claims = serde_json::from_slice(&plain).unwrap();
        assert_eq!(back, c);
    }
}

// ================================================================ tests: signature and envelope

#[test]
fn an_untrusted_signer_is_refused() {
    let p = pki();
    let blob = mint_with(&claims(), &p.stranger, &p.ra, MintOptions::default());
    assert_denied(
        verify(&blob, &csr(&spec())),
        DenialReason::SignatureValidationFailed,
    );
    let blob = cli_blob(&json(&claims()), &p.stranger, &[], &[]);
    assert_denied(
        verify(&blob, &csr(&spec())),
        DenialReason::SignatureValidationFailed,
    );
}

#[test]
fn a_signer_not_valid_at_signing_time_is_refused() {
    let p = pki();
    let blob = mint_with(&claims(), &p.mdm_expired, &p.ra, MintOptions::default());
    assert_denied(
        verify(&blob, &csr(&spec())),
        DenialReason::SignatureValidationFailed,
    );
    // The same signer, at a time it was valid, is accepted: validity is judged at signing.
    let mut c = claims();
    let then = now_secs() - 7 * 86_400;
    (c.iat, c.nbf, c.exp) = (then, then, then + 3600);
    let blob = mint_with(&c, &p.mdm_expired, &p.ra, MintOptions::default());
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(then + 60);
    verify_at(&blob, &csr(&spec()), at).unwrap();
}

#[test]
fn a_signing_time_far_from_iat_is_refused() {
    let p = pki();
    let options = MintOptions {
        signing_time: Some(now() + Duration::from_secs(3600)),
        ..MintOptions::default()
    };
    let blob = mint_with(&claims(), &p.mdm_rsa, &p.ra, options);
    assert_denied(
        verify(&blob, &csr(&spec())),
        DenialReason::SignatureValidationFailed,
    );
}

#[test]
fn a_pinned_issuer_name_must_match() {
    let p = pki();
    let mut c = claims();
    c.iss = "someone-else".into();
    let blob = mint_with(&c, &p.mdm_ec, &p.ra, MintOptions::default());
    assert_denied(
        verify(&blob, &csr(&spec())),
        DenialReason::SignatureValidationFailed,
    );
    // The RSA signer's entry pins no name.
    verify(&mint(&c), &csr(&spec())).unwrap();
}

#[test]
fn sha1_signatures_are_refused() {
    let p = pki();
    let blob = cli_blob(&json(&claims()), &p.mdm_rsa, &[], &["-md", "sha1"]);
    let d = assert_denied(
        verify(&blob, &csr(&spec())),
        DenialReason::SignatureValidationFailed,
    );
    assert!(d.detail.contains("digest"), "{d}");
}

fn flip(blob: &str, at: impl FnOnce(&[u8]) -> usize) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut bytes = engine.decode(blob).unwrap();
    let i = at(&bytes);
    bytes[i] ^= 0x01;
    engine.encode(bytes)
}

#[test]
fn a_tampered_blob_is_refused_as_a_bad_signature() {
    let blob = mint(&claims());
    // Last byte: inside the signature value.
    let tampered = flip(&blob, |b| b.len() - 1);
    assert_denied(
        verify(&tampered, &csr(&spec())),
        DenialReason::SignatureValidationFailed,
    );
    // Byte 80: inside the eContent (the envelope), so the messageDigest no longer matches.
    let tampered = flip(&blob, |_| 80);
    let d = assert_denied(
        verify(&tampered, &csr(&spec())),
        DenialReason::SignatureValidationFailed,
    );
    assert!(d.detail.contains("messageDigest"), "{d}");
}

/// The envelope made by the CLI, with `edit` applied to its DER, then signed by the MDM.
fn signed_tampered_envelope(edit: impl FnOnce(&mut cms::enveloped_data::EnvelopedData)) -> String {
    use cms::content_info::ContentInfo;
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pem(d, "ra", &p.ra);
    write_pem(d, "mdm", &p.mdm_rsa);
    std::fs::write(d.join("claims.json"), json(&claims())).unwrap();
    openssl(
        d,
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-binary",
            "-in",
            "claims.json",
            "-recip",
            "ra.pem",
            "-outform",
            "DER",
            "-out",
            "env.der",
        ],
    );
    let info = ContentInfo::from_der(&std::fs::read(d.join("env.der")).unwrap()).unwrap();
    let mut env: cms::enveloped_data::EnvelopedData = info.content.decode_as().unwrap();
    edit(&mut env);
    let info = ContentInfo {
        content_type: info.content_type,
        content: der::Any::encode_from(&env).unwrap(),
    };
    std::fs::write(d.join("env.der"), info.to_der().unwrap()).unwrap();
    openssl(
        d,
        &[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-in",
            "env.der",
            "-signer",
            "mdm.pem",
            "-inkey",
            "mdm.key",
            "-md",
            "sha256",
            "-outform",
            "DER",
            "-out",
            "signed.der",
        ],
    );
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(d.join("signed.der")).unwrap())
}

#[test]
fn a_bad_key_block_and_a_bad_ciphertext_fail_alike_as_decryption_errors() {
    use cms::enveloped_data::RecipientInfo;
    let bad_key_block = signed_tampered_envelope(|env| {
        let mut infos: Vec<RecipientInfo> = env.recip_infos.0.iter().cloned().collect();
        if let RecipientInfo::Ktri(k) = &mut infos[0] {
            let mut bytes = k.enc_key.as_bytes().to_vec();
            bytes[10] ^= 0xff;
            k.enc_key = der::asn1::OctetString::new(bytes).unwrap();
        }
        env.recip_infos.0 = der::asn1::SetOfVec::try_from(infos).unwrap();
    });
    let bad_ciphertext = signed_tampered_envelope(|env| {
        let mut bytes = env
            .encrypted_content
            .encrypted_content
            .as_ref()
            .unwrap()
            .as_bytes()
            .to_vec();
        let n = bytes.len();
        bytes[n - 1] ^= 0x5a;
        env.encrypted_content.encrypted_content = Some(der::asn1::OctetString::new(bytes).unwrap());
    });
    let a = assert_denied(
        verify(&bad_key_block, &csr(&spec())),
        DenialReason::ChallengeDecryptionError,
    );
    let b = assert_denied(
        verify(&bad_ciphertext, &csr(&spec())),
        DenialReason::ChallengeDecryptionError,
    );
    assert_eq!(a, b, "the two failures must not be told apart");
}

#[test]
fn a_blob_for_another_recipient_is_a_decryption_error() {
    let p = pki();
    let blob = mint_with(&claims(), &p.mdm_rsa, &p.stranger, MintOptions::default());
    let a = assert_denied(
        verify(&blob, &csr(&spec())),
        DenialReason::ChallengeDecryptionError,
    );
    // Our certificate, but the key that goes with it is not the one we hold.
    let wrong_key = vec![DecryptionKey {
        cert_der: p.ra.der(),
        key: p.stranger.key.clone(),
    }];
    let blob = mint(&claims());
    let r = verify_signed_challenge(&blob, &csr(&spec()), "devices", now(), &trust(), &wrong_key);
    let b = assert_denied(r, DenialReason::ChallengeDecryptionError);
    assert_eq!(a, b);
}

#[test]
fn malformed_blobs_are_deserialization_errors() {
    for blob in [
        "",
        "not base64!",
        "aGVsbG8=",
        "aGVsbG8",
        &"A".repeat(70_000),
    ] {
        assert_denied(
            verify(blob, &csr(&spec())),
            DenialReason::ChallengeDeserializationError,
        );
    }
}

// ================================================================ tests: claims

#[test]
fn bad_claims_documents_are_deserialization_errors() {
    let p = pki();
    let req = csr(&spec());
    let mut value = serde_json::to_value(claims()).unwrap();
    let mut cases: Vec<Vec<u8>> = vec![b"{\"v\":1,".to_vec(), b"{}".to_vec()];
    value["v"] = 2.into();
    cases.push(value.to_string().into_bytes());
    for field in ["id", "iss", "iat", "exp", "template", "subject", "san"] {
        let mut v = serde_json::to_value(claims()).unwrap();
        v.as_object_mut().unwrap().remove(field);
        cases.push(v.to_string().into_bytes());
    }
    let text = String::from_utf8(json(&claims())).unwrap();
    cases.push(text.replacen("{", "{\"iss\":\"x\",", 1).into_bytes());
    for plaintext in cases {
        let blob = cli_blob(&plaintext, &p.mdm_rsa, &[], &[]);
        let d = assert_denied(
            verify(&blob, &req),
            DenialReason::ChallengeDeserializationError,
        );
        assert!(!d.detail.contains(&blob[..40]));
    }
    // Unknown fields are ignored.
    let mut v = serde_json::to_value(claims()).unwrap();
    v["x-mdm-profile"] = "wifi".into();
    verify(
        &cli_blob(v.to_string().as_bytes(), &p.mdm_rsa, &[], &[]),
        &req,
    )
    .unwrap();
}

#[test]
fn the_minter_refuses_claims_the_verifier_would_refuse() {
    let p = pki();
    let mut c = claims();
    c.id = "too-short".into();
    let err = mint_challenge(
        &c,
        &p.mdm_rsa.der(),
        &p.mdm_rsa.key,
        &p.ra.der(),
        MintOptions::default(),
    );
    assert!(err.is_err());
}

#[test]
fn a_lifetime_over_the_maximum_is_refused() {
    denied_for_claims(
        |c| c.exp = c.nbf + 31 * 86_400,
        DenialReason::ChallengeDeserializationError,
    );
}

#[test]
fn expired_and_not_yet_valid_challenges_are_refused_outside_the_skew() {
    let c = claims();
    let blob = mint(&c);
    let req = csr(&spec());
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    verify_at(&blob, &req, at(c.exp + 299)).unwrap();
    assert_denied(
        verify_at(&blob, &req, at(c.exp + 301)),
        DenialReason::ChallengeExpired,
    );
    verify_at(&blob, &req, at(c.nbf - 299)).unwrap();
    assert_denied(
        verify_at(&blob, &req, at(c.nbf - 301)),
        DenialReason::ChallengeExpired,
    );
    // Issued in the future (beyond the skew), even with nbf already passed.
    let mut future = claims();
    future.iat = now_secs() + 1000;
    assert_denied(verify(&mint(&future), &req), DenialReason::ChallengeExpired);
    // A configured skew of zero.
    let strict = trust().with_skew(Duration::ZERO);
    let r = verify_signed_challenge(&blob, &req, "devices", at(c.exp + 1), &strict, &keys());
    assert_denied(r, DenialReason::ChallengeExpired);
}

#[test]
fn a_challenge_for_another_template_is_refused() {
    let blob = mint(&claims());
    let r = verify_signed_challenge(&blob, &csr(&spec()), "servers", now(), &trust(), &keys());
    assert_denied(r, DenialReason::TemplateMismatch);
}

// ================================================================ tests: the CSR

#[test]
fn a_different_subject_is_refused() {
    denied_for_csr(
        |s| s.subject[2] = (Nid::COMMONNAME, "Doe, John", Asn1Type::UTF8STRING),
        DenialReason::SubjectNameMismatch,
    );
    denied_for_claims(
        |c| c.subject = "CN=Doe\\, Jane,O=Example".into(),
        DenialReason::SubjectNameMismatch,
    );
    denied_for_claims(
        |c| c.subject = "CN=doe\\, jane,OU=Devices,O=Example".into(),
        DenialReason::SubjectNameMismatch,
    );
}

#[test]
fn the_same_subject_in_other_string_types_is_accepted() {
    let mut s = spec();
    s.subject = vec![
        (Nid::ORGANIZATIONNAME, "Example", Asn1Type::PRINTABLESTRING),
        // openssl takes the bytes of a BMPString as they are: UCS-2 big-endian.
        (
            Nid::ORGANIZATIONALUNITNAME,
            "\0D\0e\0v\0i\0c\0e\0s",
            Asn1Type::BMPSTRING,
        ),
        (Nid::COMMONNAME, "Doe, Jane", Asn1Type::T61STRING),
    ];
    verify(&mint(&claims()), &csr(&s)).unwrap();
    // And a non-ASCII value given as \XX escapes in the claim.
    let mut s = spec();
    s.subject[2] = (Nid::COMMONNAME, "Jürgen", Asn1Type::UTF8STRING);
    let mut c = claims();
    c.subject = r"CN=J\C3\BCrgen,OU=Devices,O=Example".into();
    verify(&mint(&c), &csr(&s)).unwrap();
}

#[test]
fn the_same_rdns_in_another_order_are_refused() {
    denied_for_csr(|s| s.subject.swap(0, 1), DenialReason::SubjectNameMismatch);
}

#[test]
fn an_empty_csr_subject_is_subject_name_missing() {
    denied_for_csr(|s| s.subject.clear(), DenialReason::SubjectNameMissing);
}

#[test]
fn a_missing_san_extension_is_subject_alt_name_missing() {
    denied_for_csr(|s| s.sans = None, DenialReason::SubjectAltNameMissing);
}

#[test]
fn an_extra_a_missing_or_a_duplicated_san_is_a_mismatch() {
    denied_for_csr(
        |s| {
            s.sans
                .as_mut()
                .unwrap()
                .push(GeneralName::DnsName(ia5("evil.example.com")))
        },
        DenialReason::SubjectAltNameMismatch,
    );
    denied_for_csr(
        |s| {
            s.sans.as_mut().unwrap().pop();
        },
        DenialReason::SubjectAltNameMismatch,
    );
    denied_for_csr(
        |s| {
            s.sans
                .as_mut()
                .unwrap()
                .push(GeneralName::DnsName(ia5("host1.example.com")))
        },
        DenialReason::SubjectAltNameMismatch,
    );
}

#[test]
fn a_sid_uri_for_another_sid_is_a_mismatch() {
    denied_for_csr(
        |s| {
            s.sans.as_mut().unwrap()[0] = GeneralName::UniformResourceIdentifier(ia5(OTHER_SID_URI))
        },
        DenialReason::SubjectAltNameMismatch,
    );
    // URIs compare byte for byte, case included.
    denied_for_csr(
        |s| {
            s.sans.as_mut().unwrap()[0] =
                GeneralName::UniformResourceIdentifier(ia5(&SID_URI.replace("tag:", "TAG:")))
        },
        DenialReason::SubjectAltNameMismatch,
    );
}

#[test]
fn dns_names_and_email_domains_compare_case_insensitively_but_local_parts_do_not() {
    let mut s = spec();
    let sans = s.sans.as_mut().unwrap();
    sans[1] = GeneralName::DnsName(ia5("HOST1.Example.COM"));
    sans[2] = GeneralName::Rfc822Name(ia5("jane@EXAMPLE.com"));
    verify(&mint(&claims()), &csr(&s)).unwrap();
    denied_for_csr(
        |s| s.sans.as_mut().unwrap()[2] = GeneralName::Rfc822Name(ia5("JANE@example.com")),
        DenialReason::SubjectAltNameMismatch,
    );
    denied_for_csr(
        |s| s.sans.as_mut().unwrap()[3] = upn("JANE@corp.example.com"),
        DenialReason::SubjectAltNameMismatch,
    );
    denied_for_csr(
        |s| s.sans.as_mut().unwrap()[4] = ip(&[192, 0, 2, 8]),
        DenialReason::SubjectAltNameMismatch,
    );
}

#[test]
fn key_usage_must_be_requested_exactly_as_claimed() {
    denied_for_csr(
        |s| s.key_usage = Some(KeyUsage(KeyUsages::DigitalSignature.into())),
        DenialReason::KeyUsageMismatch,
    );
    denied_for_csr(|s| s.key_usage = None, DenialReason::KeyUsageMismatch);
    // Without a key_usage claim, the CSR's request is not looked at.
    let mut c = claims();
    c.key_usage = None;
    let mut s = spec();
    s.key_usage = Some(KeyUsage(KeyUsages::KeyCertSign.into()));
    verify(&mint(&c), &csr(&s)).unwrap();
}

#[test]
fn extended_key_usage_must_be_requested_exactly_as_claimed() {
    denied_for_csr(
        |s| s.eku = Some(vec!["1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.1"]),
        DenialReason::EnhancedKeyUsageMismatch,
    );
    denied_for_csr(|s| s.eku = None, DenialReason::EnhancedKeyUsageMismatch);
}

#[test]
fn a_key_too_small_or_of_another_type_is_refused() {
    let blob = mint(&claims());
    let p = pki();
    let d = assert_denied(
        verify(&blob, &csr_with_key(&spec(), &p.device_small)),
        DenialReason::KeyLengthMismatch,
    );
    assert!(d.detail.contains("1024"), "{d}");
    assert_denied(
        verify(&blob, &csr_with_key(&spec(), &p.device_p384)),
        DenialReason::KeyLengthMismatch,
    );
    // P-256 is among the claimed types, but 256 < 2048 bits.
    assert_denied(
        verify(&blob, &csr_with_key(&spec(), &p.device_p256)),
        DenialReason::KeyLengthMismatch,
    );
    let mut c = claims();
    c.min_key_bits = Some(256);
    verify(&mint(&c), &csr_with_key(&spec(), &p.device_p256)).unwrap();
}

#[test]
fn denial_details_never_contain_the_blob() {
    let blob = mint(&claims());
    let mut s = spec();
    s.subject.clear();
    for result in [
        verify(&blob, &csr(&s)),
        verify_signed_challenge(&blob, &csr(&spec()), "x", now(), &trust(), &keys()),
        verify_signed_challenge(&blob, &csr(&spec()), "devices", now(), &trust(), &[]),
    ] {
        let denial = result.unwrap_err();
        assert!(!denial.detail.contains(&blob[20..60]), "{denial}");
    }
}

#[test]
fn the_worked_example_of_the_format_document_verifies() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/challenge-format.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/challenge-format.md");
    let script = doc
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a sh block in the document");
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pem(d, "ra", &p.ra);
    write_pem(d, "mdm", &p.mdm_rsa);
    let out = Command::new("bash")
        .args(["-e", "-c", script])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob = std::fs::read_to_string(d.join("challenge.txt")).unwrap();
    let spec = CsrSpec {
        subject: vec![
            (Nid::ORGANIZATIONNAME, "Example", Asn1Type::UTF8STRING),
            (Nid::COMMONNAME, "host1.example.com", Asn1Type::UTF8STRING),
        ],
        sans: Some(vec![GeneralName::DnsName(ia5("host1.example.com"))]),
        key_usage: Some(KeyUsage(
            KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment,
        )),
        eku: Some(vec!["1.3.6.1.5.5.7.3.2"]),
    };
    // The script reads the clock itself; judge at the current time.
    verify_signed_challenge(
        &blob,
        &csr(&spec),
        "devices",
        SystemTime::now(),
        &trust(),
        &keys(),
    )
    .unwrap();
}
