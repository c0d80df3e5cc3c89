//! Private-key operations behind one small trait, so that the CA's signing code, the RA's
//! CertRep signing and the RA's envelope opening work the same with a key in memory (an
//! openssl `PKey`) and a key that never leaves a PKCS#11 token ([`crate::pkcs11`]).
//!
//! Only two operations exist: a signature over data with a named hash (RSA PKCS#1 v1.5 or
//! ECDSA with a DER `Ecdsa-Sig-Value`), and an RSA decryption with a named padding (SCEP key
//! transport). Everything else (public key, key type) is known at load time.

use std::fmt;
use std::sync::Arc;

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::Padding;
use openssl::sign::Signer;

/// The hash of a signature or of RSA-OAEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-1.
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
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

    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA-1",
            Self::Sha224 => "SHA-224",
            Self::Sha256 => "SHA-256",
            Self::Sha384 => "SHA-384",
            Self::Sha512 => "SHA-512",
        }
    }
}

/// How an RSA-encrypted block is padded (RFC 8017 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RsaDecryption {
    /// RSAES-PKCS1-v1_5.
    Pkcs1v15,
    /// RSAES-OAEP with this hash for OAEP and MGF1, and the empty label.
    Oaep(HashAlg),
}

/// What kind of key it is; enough to pick algorithm identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA.
    Rsa,
    /// ECDSA on the named curve (`None`: a curve without a name).
    Ec(Option<Nid>),
    /// Anything else (cannot sign certificates or decrypt here).
    Other,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyOpError {
    /// The key (or its token) cannot do this algorithm at all; independent of the input, so
    /// it may be told to the client (failInfo badAlg).
    #[error("not supported by this key: {0}")]
    Unsupported(String),
    /// The key cannot be reached now (token removed, session lost, not logged in). The
    /// text is for the log; it never holds key material or the PIN.
    #[error("key unavailable: {0}")]
    Unavailable(String),
    /// The operation ran and failed (a decryption that does not unpad). Deliberately without
    /// detail: for a decryption, the cause may depend on a secret.
    #[error("key operation failed")]
    Failed,
}

/// A private key that can sign and (RSA) decrypt. Implemented by openssl keys in memory and
/// by PKCS#11 token keys.
pub trait PrivateKeyOps: Send + Sync {
    /// The key type.
    fn kind(&self) -> KeyKind;

    /// The public half (at load time; not on the request path).
    fn public_key(&self) -> Result<PKey<Public>, KeyOpError>;

    /// Signs `data` hashed with `hash`: RSA PKCS#1 v1.5 (RFC 8017 §8.2), or ECDSA as a DER
    /// `Ecdsa-Sig-Value` (RFC 5480 §2.2 / RFC 3279 §2.2.3).
    fn sign(&self, hash: HashAlg, data: &[u8]) -> Result<Vec<u8>, KeyOpError>;

    /// Decrypts an RSA-encrypted block (key transport). On input paths use it only through
    /// an implicit-rejection wrapper: every [`KeyOpError::Failed`] must look the same.
    fn rsa_decrypt(&self, padding: RsaDecryption, data: &[u8]) -> Result<Vec<u8>, KeyOpError>;

    /// The openssl key, when the key is in memory (writing it out, software-only features).
    fn as_openssl(&self) -> Option<&PKey<Private>> {
        None
    }

    /// Where the key lives, for logs ("software", "PKCS#11 token scepd, key scepd-ca").
    fn location(&self) -> String {
        "software".into()
    }
}

fn openssl_failed(_: openssl::error::ErrorStack) -> KeyOpError {
    KeyOpError::Failed
}

impl PrivateKeyOps for PKey<Private> {
    fn kind(&self) -> KeyKind {
        match self.id() {
            Id::RSA => KeyKind::Rsa,
            Id::EC => KeyKind::Ec(self.ec_key().ok().and_then(|k| k.group().curve_name())),
            _ => KeyKind::Other,
        }
    }

    fn public_key(&self) -> Result<PKey<Public>, KeyOpError> {
        self.public_key_to_der()
            .and_then(|der| PKey::public_key_from_der(&der))
            .map_err(openssl_failed)
    }

    fn sign(&self, hash: HashAlg, data: &[u8]) -> Result<Vec<u8>, KeyOpError> {
        let mut signer = Signer::new(hash.message_digest(), self).map_err(openssl_failed)?;
        if self.id() == Id::RSA {
            signer
                .set_rsa_padding(Padding::PKCS1)
                .map_err(openssl_failed)?;
        }
        signer.sign_oneshot_to_vec(data).map_err(openssl_failed)
    }

    fn rsa_decrypt(&self, padding: RsaDecryption, data: &[u8]) -> Result<Vec<u8>, KeyOpError> {
        if self.id() != Id::RSA {
            return Err(KeyOpError::Unsupported(
                "RSA decryption with a non-RSA key".into(),
            ));
        }
        let mut decrypter = openssl::encrypt::Decrypter::new(self).map_err(openssl_failed)?;
        match padding {
            RsaDecryption::Pkcs1v15 => decrypter.set_rsa_padding(Padding::PKCS1),
            RsaDecryption::Oaep(hash) => decrypter
                .set_rsa_padding(Padding::PKCS1_OAEP)
                .and_then(|()| decrypter.set_rsa_oaep_md(hash.message_digest()))
                .and_then(|()| decrypter.set_rsa_mgf1_md(hash.message_digest())),
        }
        .map_err(openssl_failed)?;
        let mut out = vec![0; decrypter.decrypt_len(data).map_err(openssl_failed)?];
        let len = decrypter.decrypt(data, &mut out).map_err(openssl_failed)?;
        out.truncate(len);
        Ok(out)
    }

    fn as_openssl(&self) -> Option<&PKey<Private>> {
        Some(self)
    }
}

/// A private key of either kind, cheap to clone (a reference count), parsed or found once.
#[derive(Clone)]
pub struct PrivateKey(Arc<dyn PrivateKeyOps>);

impl PrivateKey {
    /// A key held elsewhere (a PKCS#11 token).
    pub fn external(ops: Arc<dyn PrivateKeyOps>) -> Self {
        Self(ops)
    }

    /// The key type (inherent, so that callers need not import the trait).
    pub fn kind(&self) -> KeyKind {
        self.0.kind()
    }

    /// The openssl key when the key is in memory; `None` for a token key.
    pub fn as_openssl(&self) -> Option<&PKey<Private>> {
        self.0.as_openssl()
    }

    /// The public half.
    pub fn public_key(&self) -> Result<PKey<Public>, KeyOpError> {
        self.0.public_key()
    }

    /// Where the key lives, for logs.
    pub fn location(&self) -> String {
        self.0.location()
    }
}

impl From<PKey<Private>> for PrivateKey {
    fn from(key: PKey<Private>) -> Self {
        Self(Arc::new(key))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kind", &self.0.kind())
            .field("location", &self.0.location())
            .finish_non_exhaustive()
    }
}

impl PrivateKeyOps for PrivateKey {
    fn kind(&self) -> KeyKind {
        self.0.kind()
    }
    fn public_key(&self) -> Result<PKey<Public>, KeyOpError> {
        self.0.public_key()
    }
    fn sign(&self, hash: HashAlg, data: &[u8]) -> Result<Vec<u8>, KeyOpError> {
        self.0.sign(hash, data)
    }
    fn rsa_decrypt(&self, padding: RsaDecryption, data: &[u8]) -> Result<Vec<u8>, KeyOpError> {
        self.0.rsa_decrypt(padding, data)
    }
    fn as_openssl(&self) -> Option<&PKey<Private>> {
        self.0.as_openssl()
    }
    fn location(&self) -> String {
        self.0.location()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn software_keys_sign_and_decrypt_through_the_trait() {
        let key: PrivateKey = crate::generate_key(crate::KeySpec::Rsa2048).unwrap().into();
        assert_eq!(key.kind(), KeyKind::Rsa);
        let public = key.public_key().unwrap();
        let signature = key.sign(HashAlg::Sha256, b"data").unwrap();
        let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &public).unwrap();
        assert!(verifier.verify_oneshot(&signature, b"data").unwrap());
        let rsa = public.rsa().unwrap();
        let mut wrapped = vec![0; 256];
        rsa.public_encrypt(b"0123456789abcdef", &mut wrapped, Padding::PKCS1)
            .unwrap();
        assert_eq!(
            key.rsa_decrypt(RsaDecryption::Pkcs1v15, &wrapped).unwrap(),
            b"0123456789abcdef"
        );
        assert!(key.as_openssl().is_some());
        let ec: PrivateKey = crate::generate_key(crate::KeySpec::P384).unwrap().into();
        assert_eq!(ec.kind(), KeyKind::Ec(Some(Nid::SECP384R1)));
        assert!(matches!(
            ec.rsa_decrypt(RsaDecryption::Pkcs1v15, &wrapped),
            Err(KeyOpError::Unsupported(_))
        ));
    }
}
