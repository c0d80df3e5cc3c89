//! The CMS layers of a signed challenge: the outer SignedData (RFC 5652 §5) and the inner
//! EnvelopedData (RFC 5652 §6), read with the `cms` crate and checked with openssl.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::ContentInfo;
use cms::enveloped_data::{EnvelopedData, RecipientIdentifier, RecipientInfo};
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Decode, Encode, Sequence, Tag, Tagged};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, PKeyRef, Private, Public};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509StoreContext, X509};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

pub(crate) mod oids {
    use const_oid::ObjectIdentifier as Oid;
    pub const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
    pub const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
    pub const ID_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
    pub const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
    pub const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
    pub const SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");
    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
    pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
    pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const RSAES_OAEP: Oid = Oid::new_unwrap("1.2.840.113549.1.1.7");
    pub const MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");
    pub const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
    pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
    pub const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
    pub const AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
    pub const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
}

/// Largest encrypted content accepted (the claims are at most 16 KiB).
const MAX_CIPHERTEXT: usize = 32 * 1024;

/// A digest of SHA-256 strength or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Digest {
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            oids::SHA256 => Some(Digest::Sha256),
            oids::SHA384 => Some(Digest::Sha384),
            oids::SHA512 => Some(Digest::Sha512),
            _ => None,
        }
    }
    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Digest::Sha256 => oids::SHA256,
            Digest::Sha384 => oids::SHA384,
            Digest::Sha512 => oids::SHA512,
        }
    }
    pub(crate) fn md(self) -> MessageDigest {
        match self {
            Digest::Sha256 => MessageDigest::sha256(),
            Digest::Sha384 => MessageDigest::sha384(),
            Digest::Sha512 => MessageDigest::sha512(),
        }
    }
}

/// The outer layer, parsed and signature-checked but not yet chain-checked.
pub(crate) struct Signed {
    /// The eContent: DER of the inner ContentInfo(EnvelopedData).
    pub econtent: Vec<u8>,
    /// The signingTime attribute, seconds since the Unix epoch.
    pub signing_time: Option<i64>,
    /// The signer certificate.
    pub signer: X509,
    /// The other certificates the SignedData carries (chain candidates).
    pub others: Vec<X509>,
}

/// Parses the SignedData, checks the signed attributes and the signature. `extra` are
/// certificates to look the signer up in besides those in the message (the trust anchors).
pub(crate) fn verify_signature(der_bytes: &[u8], extra: &[X509]) -> Result<Signed, String> {
    let info = ContentInfo::from_der(der_bytes).map_err(|e| format!("ContentInfo: {e}"))?;
    if info.content_type != oids::ID_SIGNED_DATA {
        return Err(format!(
            "content type {} is not signedData",
            info.content_type
        ));
    }
    let sd: SignedData = info
        .content
        .decode_as()
        .map_err(|e| format!("SignedData: {e}"))?;
    if sd.encap_content_info.econtent_type != oids::ID_DATA {
        return Err("eContentType is not id-data".into());
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("detached SignedData (no eContent)")?
        .decode_as::<OctetString>()
        .map_err(|e| format!("eContent: {e}"))?
        .into_bytes();
    let signers = sd.signer_infos.0.as_slice();
    let [si] = signers else {
        return Err(format!(
            "{} SignerInfos, expected exactly one",
            signers.len()
        ));
    };
    let certs: Vec<(Certificate, X509)> = sd
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            cms::cert::CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .filter_map(|c| {
            let x = X509::from_der(&c.to_der().ok()?).ok()?;
            Some((c, x))
        })
        .chain(extra.iter().filter_map(|x| {
            let c = Certificate::from_der(&x.to_der().ok()?).ok()?;
            Some((c, x.clone()))
        }))
        .collect();
    let (signer_cert, signer) = certs
        .iter()
        .find(|(c, _)| names_signer(&si.sid, c))
        .ok_or("signer certificate not found")?;
    if !may_sign(signer_cert) {
        return Err("signer certificate's keyUsage allows no digital signature".into());
    }
    let digest = Digest::from_oid(&si.digest_alg.oid).ok_or_else(|| {
        format!(
            "digest {} not allowed (SHA-256 or stronger)",
            si.digest_alg.oid
        )
    })?;
    let attrs = si.signed_attrs.as_ref().ok_or("no signed attributes")?;
    let single = |oid: ObjectIdentifier| -> Result<der::Any, String> {
        let mut found = attrs.iter().filter(|a| a.oid == oid);
        match (found.next(), found.next()) {
            (Some(a), None) if a.values.len() == 1 => a
                .values
                .get(0)
                .cloned()
                .ok_or_else(|| format!("attribute {oid} without value")),
            (None, _) => Err(format!("attribute {oid} missing")),
            _ => Err(format!("attribute {oid} repeated or multi-valued")),
        }
    };
    let content_type: ObjectIdentifier = single(oids::CONTENT_TYPE)?
        .decode_as()
        .map_err(|e| format!("contentType attribute: {e}"))?;
    if content_type != oids::ID_DATA {
        return Err("contentType attribute is not id-data".into());
    }
    let claimed_digest = single(oids::MESSAGE_DIGEST)?
        .decode_as::<OctetString>()
        .map_err(|e| format!("messageDigest attribute: {e}"))?;
    let actual = openssl::hash::hash(digest.md(), &econtent).map_err(|e| e.to_string())?;
    if claimed_digest.as_bytes() != &actual[..] {
        return Err("messageDigest does not match the eContent".into());
    }
    let signing_time = if attrs.iter().any(|a| a.oid == oids::SIGNING_TIME) {
        let t = single(oids::SIGNING_TIME)?
            .to_der()
            .and_then(|der| x509_cert::time::Time::from_der(&der))
            .map_err(|e| format!("signingTime attribute: {e}"))?;
        Some(i64::try_from(t.to_unix_duration().as_secs()).map_err(|_| "signingTime")?)
    } else {
        None
    };
    let signed_bytes = attrs
        .to_der()
        .map_err(|e| format!("signed attributes: {e}"))?;
    let key = signer
        .public_key()
        .map_err(|e| format!("signer key: {e}"))?;
    if !signature_valid(si, digest, &key, &signed_bytes)? {
        return Err("signature does not verify".into());
    }
    let others = certs
        .iter()
        .map(|(_, x)| x.clone())
        .filter(|x| x.to_der().ok() != signer.to_der().ok())
        .collect();
    Ok(Signed {
        econtent,
        signing_time,
        signer: signer.clone(),
        others,
    })
}

/// A signer certificate with a keyUsage extension must allow digitalSignature or
/// nonRepudiation (RFC 5280 §4.2.1.3); one without the extension may sign.
fn may_sign(cert: &Certificate) -> bool {
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
    let ku = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_KEY_USAGE);
    match ku {
        None => true,
        Some(ext) => KeyUsage::from_der(ext.extn_value.as_bytes()).is_ok_and(|ku| {
            ku.0.contains(KeyUsages::DigitalSignature) || ku.0.contains(KeyUsages::NonRepudiation)
        }),
    }
}

fn names_signer(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => issuer_and_serial_names(id, cert),
        SignerIdentifier::SubjectKeyIdentifier(ski) => ski_names(ski.0.as_bytes(), cert),
    }
}

fn issuer_and_serial_names(id: &IssuerAndSerialNumber, cert: &Certificate) -> bool {
    id.issuer == cert.tbs_certificate.issuer
        && id.serial_number == cert.tbs_certificate.serial_number
}

fn ski_names(ski: &[u8], cert: &Certificate) -> bool {
    use x509_cert::ext::pkix::SubjectKeyIdentifier;
    let ours = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok());
    match ours {
        Some(id) => id.0.as_bytes() == ski,
        // RFC 5280 §4.2.1.2 method 1, as openssl computes it for certificates without one.
        None => cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .as_bytes()
            .and_then(|k| openssl::hash::hash(MessageDigest::sha1(), k).ok())
            .is_some_and(|h| &h[..] == ski),
    }
}

/// RSASSA-PSS-params, RFC 4055 §3.1 (defaults: SHA-1, MGF1-SHA-1, salt 20, trailer 1).
#[derive(Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mgf: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer: Option<u32>,
}

/// The signature algorithm must fit the key and the digest: RSA PKCS#1 v1.5 (rsaEncryption
/// or sha*WithRSAEncryption), RSASSA-PSS with the same hash for MGF1, or ECDSA.
fn signature_valid(
    si: &SignerInfo,
    digest: Digest,
    key: &PKeyRef<Public>,
    data: &[u8],
) -> Result<bool, String> {
    let alg = &si.signature_algorithm;
    let implied = match alg.oid {
        oids::SHA256_WITH_RSA | oids::ECDSA_SHA256 => Some(Digest::Sha256),
        oids::SHA384_WITH_RSA | oids::ECDSA_SHA384 => Some(Digest::Sha384),
        oids::SHA512_WITH_RSA | oids::ECDSA_SHA512 => Some(Digest::Sha512),
        _ => None,
    };
    if implied.is_some_and(|d| d != digest) {
        return Err("signature algorithm and digest algorithm disagree".into());
    }
    let family = match alg.oid {
        oids::RSA_ENCRYPTION
        | oids::SHA256_WITH_RSA
        | oids::SHA384_WITH_RSA
        | oids::SHA512_WITH_RSA => Id::RSA,
        oids::RSASSA_PSS => Id::RSA_PSS,
        oids::EC_PUBLIC_KEY | oids::ECDSA_SHA256 | oids::ECDSA_SHA384 | oids::ECDSA_SHA512 => {
            Id::EC
        }
        other => return Err(format!("signature algorithm {other} not allowed")),
    };
    let key_family = key.id();
    let fits = match family {
        Id::RSA_PSS => key_family == Id::RSA || key_family == Id::RSA_PSS,
        f => f == key_family,
    };
    if !fits {
        return Err("signature algorithm does not fit the signer's key".into());
    }
    let mut verifier = Verifier::new(digest.md(), key).map_err(|e| e.to_string())?;
    if family == Id::RSA {
        verifier
            .set_rsa_padding(Padding::PKCS1)
            .map_err(|e| e.to_string())?;
    }
    if family == Id::RSA_PSS {
        let params: PssParams = alg
            .parameters
            .as_ref()
            .ok_or("RSASSA-PSS without parameters")?
            .decode_as()
            .map_err(|e| format!("RSASSA-PSS parameters: {e}"))?;
        let hash = params.hash.as_ref().and_then(|h| Digest::from_oid(&h.oid));
        let mgf_hash = params
            .mgf
            .as_ref()
            .filter(|m| m.oid == oids::MGF1)
            .and_then(|m| m.parameters.as_ref())
            .and_then(|p| p.decode_as::<AlgorithmIdentifierOwned>().ok())
            .and_then(|h| Digest::from_oid(&h.oid));
        if hash != Some(digest) || mgf_hash != Some(digest) || params.trailer.unwrap_or(1) != 1 {
            return Err("RSASSA-PSS parameters not allowed".into());
        }
        let salt = i32::try_from(params.salt.unwrap_or(20)).map_err(|_| "PSS salt")?;
        if key_family == Id::RSA {
            verifier
                .set_rsa_padding(Padding::PKCS1_PSS)
                .map_err(|e| e.to_string())?;
        }
        verifier
            .set_rsa_mgf1_md(digest.md())
            .and_then(|_| verifier.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt)))
            .map_err(|e| e.to_string())?;
    }
    Ok(verifier
        .verify_oneshot(si.signature.as_bytes(), data)
        .unwrap_or(false))
}

/// Verifies that `signer` chains to one of `anchors` (each may itself be the signer: partial
/// chains are allowed). With `at`, validity is checked at that time; without, not at all.
/// Returns the verified chain, leaf first, as DER.
pub(crate) fn verify_chain(
    signer: &X509,
    others: &[X509],
    anchors: &[X509],
    at: Option<i64>,
) -> Result<Vec<Vec<u8>>, String> {
    let err = |e: openssl::error::ErrorStack| e.to_string();
    let mut builder = X509StoreBuilder::new().map_err(err)?;
    for anchor in anchors {
        builder.add_cert(anchor.clone()).map_err(err)?;
    }
    let mut param = X509VerifyParam::new().map_err(err)?;
    let mut flags = X509VerifyFlags::PARTIAL_CHAIN;
    match at {
        Some(t) => param.set_time(t as _),
        None => flags |= X509VerifyFlags::NO_CHECK_TIME,
    }
    param.set_flags(flags).map_err(err)?;
    param.set_depth(8);
    builder.set_param(&param).map_err(err)?;
    let store = builder.build();
    let mut chain = Stack::new().map_err(err)?;
    for other in others {
        chain.push(other.clone()).map_err(err)?;
    }
    let mut ctx = X509StoreContext::new().map_err(err)?;
    ctx.init(&store, signer, &chain, |ctx| {
        if ctx.verify_cert()? {
            let chain = ctx
                .chain()
                .map(|c| c.iter().filter_map(|x| x.to_der().ok()).collect())
                .unwrap_or_default();
            Ok(Ok(chain))
        } else {
            Ok(Err(ctx.error().error_string().to_string()))
        }
    })
    .map_err(err)?
}

/// Opens the inner ContentInfo(EnvelopedData) with one of `keys`. Every failure that depends
/// on a key is the same [`OpenError::Undecryptable`]: a missing recipient, a bad RSA block
/// (which continues with a random key, RFC 3218 §2.3.2), a bad CBC padding, or a plaintext
/// that does not look like a JSON object. Only a malformed structure or an algorithm we do
/// not accept (both visible to anyone, key or not) is [`OpenError::Malformed`].
pub(crate) fn open_envelope(
    der_bytes: &[u8],
    keys: &[(Vec<u8>, PKey<Private>)],
) -> Result<Vec<u8>, OpenError> {
    let info = ContentInfo::from_der(der_bytes)
        .map_err(|e| OpenError::Malformed(format!("inner ContentInfo: {e}")))?;
    if info.content_type != oids::ID_ENVELOPED_DATA {
        return Err(OpenError::Malformed(
            "inner content type is not envelopedData".into(),
        ));
    }
    let env: EnvelopedData = info
        .content
        .decode_as()
        .map_err(|e| OpenError::Malformed(format!("EnvelopedData: {e}")))?;
    let eci = &env.encrypted_content;
    let (cipher, key_len) = match eci.content_enc_alg.oid {
        oids::AES128_CBC => (openssl::symm::Cipher::aes_128_cbc(), 16),
        oids::AES192_CBC => (openssl::symm::Cipher::aes_192_cbc(), 24),
        oids::AES256_CBC => (openssl::symm::Cipher::aes_256_cbc(), 32),
        other => {
            return Err(OpenError::Malformed(format!(
                "content cipher {other} not allowed"
            )))
        }
    };
    let iv = eci
        .content_enc_alg
        .parameters
        .as_ref()
        .filter(|p| p.tag() == Tag::OctetString && p.value().len() == 16)
        .map(|p| p.value().to_vec())
        .ok_or_else(|| OpenError::Malformed("content cipher IV".into()))?;
    let ciphertext = eci
        .encrypted_content
        .as_ref()
        .map(|c| c.as_bytes())
        .filter(|c| !c.is_empty() && c.len() <= MAX_CIPHERTEXT && c.len() % 16 == 0)
        .ok_or_else(|| OpenError::Malformed("encrypted content missing or oversized".into()))?;
    // Our recipient: the first KeyTransRecipientInfo naming one of our RSA certificates.
    let ours: Vec<(Certificate, &PKey<Private>)> = keys
        .iter()
        .filter(|(_, k)| k.id() == Id::RSA)
        .filter_map(|(c, k)| Some((Certificate::from_der(c).ok()?, k)))
        .collect();
    let mut found = None;
    for ri in env.recip_infos.0.iter() {
        let RecipientInfo::Ktri(ktri) = ri else {
            continue;
        };
        let matching = ours.iter().find(|(cert, _)| match &ktri.rid {
            RecipientIdentifier::IssuerAndSerialNumber(id) => issuer_and_serial_names(id, cert),
            RecipientIdentifier::SubjectKeyIdentifier(ski) => ski_names(ski.0.as_bytes(), cert),
        });
        if let Some((_, key)) = matching {
            let transport = key_transport(&ktri.key_enc_alg)?;
            found = Some((ktri, *key, transport));
            break;
        }
    }
    // From here on every failure is `Undecryptable`, reached on the same path: without a
    // recipient, or with a key-transport block that does not unwrap, we go on with a random
    // content key.
    let content_key = match &found {
        Some((ktri, key, transport)) => {
            unwrap_or_random(key, *transport, ktri.enc_key.as_bytes(), key_len)
        }
        None => random(key_len),
    };
    let plaintext = openssl::symm::decrypt(cipher, &content_key, Some(&iv), ciphertext).ok();
    match (found, plaintext) {
        (Some(_), Some(p)) if looks_like_json_object(&p) => Ok(p),
        _ => Err(OpenError::Undecryptable),
    }
}

/// Why the envelope did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The structure or an algorithm is unacceptable (nothing secret involved).
    Malformed(String),
    /// No key of ours opens it, or what it opens to is not a claims document.
    Undecryptable,
}

/// A decoy key that passes the CBC padding check yields random bytes; those are told apart
/// from a claims document here, on the same path as every other decryption failure.
fn looks_like_json_object(p: &[u8]) -> bool {
    std::str::from_utf8(p).is_ok_and(|s| s.trim_start().starts_with('{'))
}

#[derive(Clone, Copy)]
enum Transport {
    Pkcs1,
    Oaep(MessageDigest),
}

/// RSAES-OAEP-params, RFC 4055 §4.1 (defaults SHA-1 / MGF1-SHA-1 / empty label).
#[derive(Sequence)]
struct OaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mgf: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    label: Option<AlgorithmIdentifierOwned>,
}

fn key_transport(alg: &AlgorithmIdentifierOwned) -> Result<Transport, OpenError> {
    let bad = || OpenError::Malformed("key transport algorithm not allowed".into());
    if alg.oid == oids::RSA_ENCRYPTION {
        return Ok(Transport::Pkcs1);
    }
    if alg.oid != oids::RSAES_OAEP {
        return Err(bad());
    }
    let params = match &alg.parameters {
        None => OaepParams {
            hash: None,
            mgf: None,
            label: None,
        },
        Some(p) => p.decode_as().map_err(|_| bad())?,
    };
    let md = |oid: Option<&ObjectIdentifier>| match oid {
        None | Some(&oids::SHA1) => Some(MessageDigest::sha1()),
        Some(o) => Digest::from_oid(o).map(Digest::md),
    };
    let hash = md(params.hash.as_ref().map(|h| &h.oid)).ok_or_else(bad)?;
    let mgf_hash = match &params.mgf {
        None => Some(MessageDigest::sha1()),
        Some(m) if m.oid == oids::MGF1 => m
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<AlgorithmIdentifierOwned>().ok())
            .and_then(|h| md(Some(&h.oid))),
        Some(_) => None,
    }
    .ok_or_else(bad)?;
    if hash.type_() != mgf_hash.type_() || params.label.is_some() {
        return Err(bad());
    }
    Ok(Transport::Oaep(hash))
}

fn unwrap_or_random(
    key: &PKeyRef<Private>,
    transport: Transport,
    wrapped: &[u8],
    key_len: usize,
) -> Vec<u8> {
    let decoy = random(key_len);
    match rsa_unwrap(key, transport, wrapped) {
        Some(cek) if cek.len() == key_len => cek,
        _ => decoy,
    }
}

fn rsa_unwrap(key: &PKeyRef<Private>, transport: Transport, wrapped: &[u8]) -> Option<Vec<u8>> {
    let mut d = openssl::encrypt::Decrypter::new(key).ok()?;
    match transport {
        Transport::Pkcs1 => d.set_rsa_padding(Padding::PKCS1).ok()?,
        Transport::Oaep(md) => {
            d.set_rsa_padding(Padding::PKCS1_OAEP).ok()?;
            d.set_rsa_oaep_md(md).ok()?;
            d.set_rsa_mgf1_md(md).ok()?;
        }
    }
    let mut out = vec![0; d.decrypt_len(wrapped).ok()?];
    let len = d.decrypt(wrapped, &mut out).ok()?;
    out.truncate(len);
    Some(out)
}

/// Random bytes from openssl's DRBG.
pub(crate) fn random(len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    while openssl::rand::rand_bytes(&mut out).is_err() {
        std::thread::yield_now();
    }
    out
}
