//! The cryptographic primitives SCEP needs, all through openssl: digests, signatures,
//! content ciphers and RSA key transport. Keys are parsed once by the caller and passed in.
//!
//! RSA private-key operations never go through the `rsa` crate (RUSTSEC-2023-0071).

use const_oid::ObjectIdentifier as Oid;
use openssl::hash::{hash, MessageDigest};
use openssl::pkey::{HasPrivate, HasPublic, Id, PKeyRef};
use openssl::rsa::Padding;
use openssl::sign::{Signer, Verifier};
use openssl::symm::{Cipher, Crypter, Mode};
use scepd_ca::{HashAlg, KeyKind, KeyOpError, PrivateKeyOps, RsaDecryption};

use super::oids;

/// Why a primitive failed. Deliberately coarse: callers map every envelope failure to one
/// indistinguishable badMessageCheck.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// openssl refused the operation (bad key, bad padding, wrong length...).
    #[error("cryptographic operation failed")]
    Openssl(#[from] openssl::error::ErrorStack),
    /// The key type cannot do what was asked (e.g. RSA key transport to an EC key).
    #[error("key type not supported for this operation")]
    UnsupportedKey,
    /// Key or IV of the wrong length for the cipher.
    #[error("bad key or IV length")]
    BadLength,
    /// A private-key operation through [`PrivateKeyOps`] failed (a PKCS#11 token that is
    /// away, an algorithm the token cannot do).
    #[error(transparent)]
    Key(#[from] KeyOpError),
}

/// A message digest allowed in SignerInfo.digestAlgorithm (RFC 8894 §3.5.2: SHA-1 and SHA-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlg {
    /// SHA-1 (legacy, but every SCEP client still offers it).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256 (RFC 8894 mandatory).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlg {
    /// Every supported digest, strongest last.
    pub const ALL: [DigestAlg; 5] = [
        Self::Sha1,
        Self::Sha224,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
    ];

    /// The digest's OID (RFC 5754).
    pub fn oid(self) -> Oid {
        match self {
            Self::Sha1 => oids::SHA1,
            Self::Sha224 => oids::SHA224,
            Self::Sha256 => oids::SHA256,
            Self::Sha384 => oids::SHA384,
            Self::Sha512 => oids::SHA512,
        }
    }

    /// Recognises a digest OID; MD5 and anything else is `None` (badAlg).
    pub fn from_oid(oid: &Oid) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.oid() == *oid)
    }

    /// Recognises a signature-algorithm OID that names its digest (sha256WithRSAEncryption,
    /// ecdsa-with-SHA256, ...).
    pub fn from_signature_oid(oid: &Oid) -> Option<Self> {
        let digest = match *oid {
            oids::SHA1_WITH_RSA | oids::ECDSA_WITH_SHA1 => Self::Sha1,
            oids::SHA224_WITH_RSA | oids::ECDSA_WITH_SHA224 => Self::Sha224,
            oids::SHA256_WITH_RSA | oids::ECDSA_WITH_SHA256 => Self::Sha256,
            oids::SHA384_WITH_RSA | oids::ECDSA_WITH_SHA384 => Self::Sha384,
            oids::SHA512_WITH_RSA | oids::ECDSA_WITH_SHA512 => Self::Sha512,
            _ => return None,
        };
        Some(digest)
    }

    /// The same hash as the key-operation layer names it.
    pub fn hash_alg(self) -> HashAlg {
        match self {
            Self::Sha1 => HashAlg::Sha1,
            Self::Sha224 => HashAlg::Sha224,
            Self::Sha256 => HashAlg::Sha256,
            Self::Sha384 => HashAlg::Sha384,
            Self::Sha512 => HashAlg::Sha512,
        }
    }

    /// The openssl digest.
    pub fn message_digest(self) -> MessageDigest {
        match self {
            Self::Sha1 => MessageDigest::sha1(),
            Self::Sha224 => MessageDigest::sha224(),
            Self::Sha256 => MessageDigest::sha256(),
            Self::Sha384 => MessageDigest::sha384(),
            Self::Sha512 => MessageDigest::sha512(),
        }
    }

    /// Digest of `data`.
    pub fn digest(self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Ok(hash(self.message_digest(), data)?.to_vec())
    }

    /// The GetCACaps keyword, where RFC 8894 Table 7 defines one.
    pub fn caps_keyword(self) -> Option<&'static str> {
        match self {
            Self::Sha1 => Some("SHA-1"),
            Self::Sha256 => Some("SHA-256"),
            Self::Sha512 => Some("SHA-512"),
            Self::Sha224 | Self::Sha384 => None,
        }
    }

    /// The signature algorithm OID for a key of this type with this digest.
    pub fn signature_oid<T: HasPublic>(self, key: &PKeyRef<T>) -> Result<Oid, CryptoError> {
        let kind = match key.id() {
            Id::RSA => KeyKind::Rsa,
            Id::EC => KeyKind::Ec(None),
            _ => KeyKind::Other,
        };
        self.signature_oid_for(kind)
    }

    /// The signature algorithm OID for a key of this kind with this digest.
    pub fn signature_oid_for(self, kind: KeyKind) -> Result<Oid, CryptoError> {
        let oid = match (kind, self) {
            (KeyKind::Rsa, Self::Sha1) => oids::SHA1_WITH_RSA,
            (KeyKind::Rsa, Self::Sha224) => oids::SHA224_WITH_RSA,
            (KeyKind::Rsa, Self::Sha256) => oids::SHA256_WITH_RSA,
            (KeyKind::Rsa, Self::Sha384) => oids::SHA384_WITH_RSA,
            (KeyKind::Rsa, Self::Sha512) => oids::SHA512_WITH_RSA,
            (KeyKind::Ec(_), Self::Sha1) => oids::ECDSA_WITH_SHA1,
            (KeyKind::Ec(_), Self::Sha224) => oids::ECDSA_WITH_SHA224,
            (KeyKind::Ec(_), Self::Sha256) => oids::ECDSA_WITH_SHA256,
            (KeyKind::Ec(_), Self::Sha384) => oids::ECDSA_WITH_SHA384,
            (KeyKind::Ec(_), Self::Sha512) => oids::ECDSA_WITH_SHA512,
            _ => return Err(CryptoError::UnsupportedKey),
        };
        Ok(oid)
    }
}

/// A CMS content-encryption algorithm (RFC 3370 §5.1, RFC 3565).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentCipher {
    /// Single DES: forbidden by RFC 8894 §7.5; accepted in requests only behind the legacy
    /// switch, never used in replies.
    DesCbc,
    /// Triple DES (DES3 capability).
    DesEde3Cbc,
    /// AES-128-CBC (AES capability; RFC 8894 mandatory).
    Aes128Cbc,
    /// AES-192-CBC.
    Aes192Cbc,
    /// AES-256-CBC.
    Aes256Cbc,
}

impl ContentCipher {
    /// The algorithm OID.
    pub fn oid(self) -> Oid {
        match self {
            Self::DesCbc => oids::DES_CBC,
            Self::DesEde3Cbc => oids::DES_EDE3_CBC,
            Self::Aes128Cbc => oids::AES128_CBC,
            Self::Aes192Cbc => oids::AES192_CBC,
            Self::Aes256Cbc => oids::AES256_CBC,
        }
    }

    /// Recognises a content-encryption OID.
    pub fn from_oid(oid: &Oid) -> Option<Self> {
        [
            Self::DesCbc,
            Self::DesEde3Cbc,
            Self::Aes128Cbc,
            Self::Aes192Cbc,
            Self::Aes256Cbc,
        ]
        .into_iter()
        .find(|c| c.oid() == *oid)
    }

    /// True for single DES, which needs the explicit legacy switch.
    pub fn is_legacy(self) -> bool {
        self == Self::DesCbc
    }

    /// The cipher to answer with. The reply follows the request's cipher, except that
    /// single DES is never sent: those clients (micromdm's scepclient) get AES-256-CBC, which
    /// the same Go library decrypts.
    pub fn for_reply(self) -> Self {
        match self {
            Self::DesCbc => Self::Aes256Cbc,
            other => other,
        }
    }

    fn openssl_cipher(self) -> Cipher {
        match self {
            // OpenSSL 3 moved single DES to the legacy provider; EDE3 with one key three
            // times is the same function (E_k(D_k(E_k(x))) = E_k(x)), see `expand_key`.
            Self::DesCbc => Cipher::des_ede3_cbc(),
            Self::DesEde3Cbc => Cipher::des_ede3_cbc(),
            Self::Aes128Cbc => Cipher::aes_128_cbc(),
            Self::Aes192Cbc => Cipher::aes_192_cbc(),
            Self::Aes256Cbc => Cipher::aes_256_cbc(),
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::DesCbc => 8,
            other => other.openssl_cipher().key_len(),
        }
    }

    /// The key openssl's cipher takes: single DES runs as EDE3 with the key repeated.
    fn expand_key(self, key: &[u8]) -> Vec<u8> {
        match self {
            Self::DesCbc => key.repeat(3),
            _ => key.to_vec(),
        }
    }

    /// IV (block) length in bytes.
    pub fn iv_len(self) -> usize {
        self.openssl_cipher().iv_len().unwrap_or(0)
    }

    /// Encrypts with PKCS#7 padding.
    pub fn encrypt(self, key: &[u8], iv: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.run(Mode::Encrypt, key, iv, plaintext)
    }

    /// Decrypts and strips PKCS#7 padding.
    pub fn decrypt(self, key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.run(Mode::Decrypt, key, iv, ciphertext)
    }

    fn run(self, mode: Mode, key: &[u8], iv: &[u8], input: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if key.len() != self.key_len() || iv.len() != self.iv_len() {
            return Err(CryptoError::BadLength);
        }
        let cipher = self.openssl_cipher();
        let mut crypter = Crypter::new(cipher, mode, &self.expand_key(key), Some(iv))?;
        let mut out = vec![0; input.len() + cipher.block_size()];
        let mut len = crypter.update(input, &mut out)?;
        len += crypter.finalize(&mut out[len..])?;
        out.truncate(len);
        Ok(out)
    }
}

/// RSA key transport (RFC 5652 §6.2.1): how the content-encryption key is wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyTransport {
    /// rsaEncryption, RSAES-PKCS1-v1_5 (what almost every client sends).
    RsaPkcs1v15,
    /// id-RSAES-OAEP with the given hash for both OAEP and MGF1 (RFC 8017 §A.2.1).
    RsaOaep(DigestAlg),
}

/// Unwraps a content-encryption key with an RSA private key (in memory or in a PKCS#11
/// token), without a padding oracle: on any failure of the decryption (bad padding, wrong
/// length, any error a token reports for it, a token that is away) it returns random bytes
/// of `key_len`, so that the caller fails later, at the content decryption or parse, on the
/// same code path (the countermeasure of RFC 3218 §2.3.2).
///
/// The one error is [`KeyTransportUnsupported`]: the key cannot do `transport` at all (a
/// token without RSA-OAEP with that hash), which does not depend on the ciphertext.
pub fn unwrap_key_or_random(
    key: &dyn PrivateKeyOps,
    transport: KeyTransport,
    wrapped: &[u8],
    key_len: usize,
) -> Result<Vec<u8>, KeyTransportUnsupported> {
    let decoy = random_bytes(key_len);
    match key.rsa_decrypt(transport.rsa_decryption(), wrapped) {
        Ok(cek) if cek.len() == key_len => Ok(cek),
        Err(KeyOpError::Unsupported(reason)) => Err(KeyTransportUnsupported(reason)),
        _ => Ok(decoy),
    }
}

/// The private key cannot do this key transport at all (not a decryption failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key transport not supported by the decryption key: {0}")]
pub struct KeyTransportUnsupported(pub String);

impl KeyTransport {
    /// The padding of the RSA decryption.
    pub fn rsa_decryption(self) -> RsaDecryption {
        match self {
            Self::RsaPkcs1v15 => RsaDecryption::Pkcs1v15,
            Self::RsaOaep(digest) => RsaDecryption::Oaep(digest.hash_alg()),
        }
    }
}

/// Decrypts an RSA-wrapped key. Prefer [`unwrap_key_or_random`] on input paths.
pub fn rsa_decrypt<T: HasPrivate>(
    key: &PKeyRef<T>,
    transport: KeyTransport,
    wrapped: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if key.id() != Id::RSA {
        return Err(CryptoError::UnsupportedKey);
    }
    let mut decrypter = openssl::encrypt::Decrypter::new(key)?;
    set_transport_padding(&mut decrypter, transport)?;
    let mut out = vec![0; decrypter.decrypt_len(wrapped)?];
    let len = decrypter.decrypt(wrapped, &mut out)?;
    out.truncate(len);
    Ok(out)
}

fn set_transport_padding(
    decrypter: &mut openssl::encrypt::Decrypter<'_>,
    transport: KeyTransport,
) -> Result<(), CryptoError> {
    match transport {
        KeyTransport::RsaPkcs1v15 => decrypter.set_rsa_padding(Padding::PKCS1)?,
        KeyTransport::RsaOaep(digest) => {
            decrypter.set_rsa_padding(Padding::PKCS1_OAEP)?;
            decrypter.set_rsa_oaep_md(digest.message_digest())?;
            decrypter.set_rsa_mgf1_md(digest.message_digest())?;
        }
    }
    Ok(())
}

/// Wraps a content-encryption key for an RSA public key.
pub fn rsa_encrypt<T: HasPublic>(
    key: &PKeyRef<T>,
    transport: KeyTransport,
    cek: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if key.id() != Id::RSA {
        return Err(CryptoError::UnsupportedKey);
    }
    let mut encrypter = openssl::encrypt::Encrypter::new(key)?;
    match transport {
        KeyTransport::RsaPkcs1v15 => encrypter.set_rsa_padding(Padding::PKCS1)?,
        KeyTransport::RsaOaep(digest) => {
            encrypter.set_rsa_padding(Padding::PKCS1_OAEP)?;
            encrypter.set_rsa_oaep_md(digest.message_digest())?;
            encrypter.set_rsa_mgf1_md(digest.message_digest())?;
        }
    }
    let mut out = vec![0; encrypter.encrypt_len(cek)?];
    let len = encrypter.encrypt(cek, &mut out)?;
    out.truncate(len);
    Ok(out)
}

/// Signs `data` (RSA PKCS#1 v1.5 or ECDSA, DER-encoded signature).
pub fn sign<T: HasPrivate>(
    key: &PKeyRef<T>,
    digest: DigestAlg,
    data: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut signer = Signer::new(digest.message_digest(), key)?;
    if key.id() == Id::RSA {
        signer.set_rsa_padding(Padding::PKCS1)?;
    }
    Ok(signer.sign_oneshot_to_vec(data)?)
}

/// Verifies a signature over `data`; `Ok(false)` for a signature that does not match.
pub fn verify<T: HasPublic>(
    key: &PKeyRef<T>,
    digest: DigestAlg,
    data: &[u8],
    signature: &[u8],
) -> Result<bool, CryptoError> {
    let mut verifier = Verifier::new(digest.message_digest(), key)?;
    if key.id() == Id::RSA {
        verifier.set_rsa_padding(Padding::PKCS1)?;
    }
    let valid = verifier.verify_oneshot(signature, data).unwrap_or(false);
    Ok(valid
        || (key.id() == Id::RSA
            && rsa_digest_info_without_null_matches(key, digest, data, signature)))
}

/// RFC 8017 §9.2 note 1: the DigestInfo's AlgorithmIdentifier may carry NULL parameters or
/// none, and verifiers should accept both. OpenSSL only accepts NULL; some signers (older
/// wolfSSL, embedded stacks) omit it. So, after OpenSSL said no, recover the DigestInfo
/// with the public key and compare it with the parameter-less encoding.
fn rsa_digest_info_without_null_matches<T: HasPublic>(
    key: &PKeyRef<T>,
    digest: DigestAlg,
    data: &[u8],
    signature: &[u8],
) -> bool {
    use der::Encode;
    let expected = digest.digest(data).ok().and_then(|hash| {
        let digest_info = super::wire::DigestInfo {
            algorithm: super::wire::algorithm(digest.oid(), None),
            digest: der::asn1::OctetString::new(hash).ok()?,
        };
        digest_info.to_der().ok()
    });
    let recovered = key.rsa().ok().and_then(|rsa| {
        let mut out = vec![0; usize::try_from(rsa.size()).ok()?];
        let len = rsa
            .public_decrypt(signature, &mut out, Padding::PKCS1)
            .ok()?;
        out.truncate(len);
        Some(out)
    });
    matches!((expected, recovered), (Some(expected), Some(recovered)) if expected == recovered)
}

/// Cryptographically secure random bytes (openssl's DRBG).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    // rand_bytes only fails when the DRBG cannot be seeded, which openssl treats as fatal
    // at start-up; fall back to a fresh attempt rather than returning predictable bytes.
    while openssl::rand::rand_bytes(&mut out).is_err() {
        std::thread::yield_now();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;

    #[test]
    fn every_cipher_round_trips() {
        for cipher in [
            ContentCipher::DesCbc,
            ContentCipher::DesEde3Cbc,
            ContentCipher::Aes128Cbc,
            ContentCipher::Aes192Cbc,
            ContentCipher::Aes256Cbc,
        ] {
            let key = random_bytes(cipher.key_len());
            let iv = random_bytes(cipher.iv_len());
            let sealed = cipher.encrypt(&key, &iv, b"csr bytes").unwrap();
            assert_eq!(cipher.decrypt(&key, &iv, &sealed).unwrap(), b"csr bytes");
            assert_eq!(ContentCipher::from_oid(&cipher.oid()), Some(cipher));
        }
    }

    #[test]
    fn single_des_matches_openssl_legacy_provider() {
        // `printf scepd-des-vector | openssl enc -des-cbc -K 0011223344556677
        //  -iv 0001020304050607 -provider legacy -provider default | xxd -p`
        let expected = hex::decode("61d7391cb5ace1ebbb6dfff0e5f7df779ea3ae240533ff3b").unwrap();
        let key = hex::decode("0011223344556677").unwrap();
        let iv = hex::decode("0001020304050607").unwrap();
        let sealed = ContentCipher::DesCbc
            .encrypt(&key, &iv, b"scepd-des-vector")
            .unwrap();
        assert_eq!(sealed, expected);
    }

    #[test]
    fn key_transport_round_trips_and_bad_input_gives_a_decoy() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        for transport in [
            KeyTransport::RsaPkcs1v15,
            KeyTransport::RsaOaep(DigestAlg::Sha1),
            KeyTransport::RsaOaep(DigestAlg::Sha256),
        ] {
            let cek = random_bytes(32);
            let wrapped = rsa_encrypt(&key, transport, &cek).unwrap();
            assert_eq!(
                unwrap_key_or_random(&key, transport, &wrapped, 32),
                Ok(cek.clone())
            );
            let decoy = unwrap_key_or_random(&key, transport, &wrapped[1..], 32).unwrap();
            assert_eq!(decoy.len(), 32);
            assert_ne!(decoy, cek);
        }
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let ec = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        for key in [rsa, ec] {
            for digest in DigestAlg::ALL {
                let sig = sign(&key, digest, b"attrs").unwrap();
                assert!(verify(&key, digest, b"attrs", &sig).unwrap());
                assert!(!verify(&key, digest, b"attrz", &sig).unwrap());
            }
        }
    }
}
