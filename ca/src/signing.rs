//! Signature algorithms: what the CA signs with, and what it accepts on a CSR.

use const_oid::ObjectIdentifier;
use der::asn1::Any;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKeyRef};
use openssl::sign::Verifier;
use spki::AlgorithmIdentifierOwned;

use crate::keyops::{HashAlg, KeyKind, PrivateKeyOps};
use crate::CaError;

const SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
const SHA224_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.14");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");

/// How a CA key signs certificates and CRLs: sha256WithRSAEncryption for RSA,
/// ecdsa-with-SHA256 for P-256, ecdsa-with-SHA384 for P-384 (RFC 5754 pairings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigningScheme {
    RsaSha256,
    EcdsaSha256,
    EcdsaSha384,
}

impl SigningScheme {
    /// Picks the scheme for a CA key; other key types cannot be CA keys here.
    pub(crate) fn for_key(key: &dyn PrivateKeyOps) -> Result<Self, CaError> {
        match key.kind() {
            KeyKind::Rsa => Ok(Self::RsaSha256),
            KeyKind::Ec(curve) => match curve {
                Some(Nid::X9_62_PRIME256V1) => Ok(Self::EcdsaSha256),
                Some(Nid::SECP384R1) => Ok(Self::EcdsaSha384),
                other => Err(CaError::CaConfig(format!("unsupported CA curve {other:?}"))),
            },
            other => Err(CaError::CaConfig(format!(
                "unsupported CA key type {other:?}"
            ))),
        }
    }

    /// The AlgorithmIdentifier: RSA carries NULL parameters (RFC 4055 §5), ECDSA none
    /// (RFC 5758 §3.2).
    pub(crate) fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        match self {
            Self::RsaSha256 => AlgorithmIdentifierOwned {
                oid: SHA256_WITH_RSA,
                parameters: Some(Any::null()),
            },
            Self::EcdsaSha256 => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA256,
                parameters: None,
            },
            Self::EcdsaSha384 => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA384,
                parameters: None,
            },
        }
    }

    fn hash(self) -> HashAlg {
        match self {
            Self::RsaSha256 | Self::EcdsaSha256 => HashAlg::Sha256,
            Self::EcdsaSha384 => HashAlg::Sha384,
        }
    }

    /// Signs `data` (a DER TBSCertificate or TBSCertList) with the CA key, in memory or in a
    /// token. RSA uses PKCS#1 v1.5; ECDSA yields the DER Ecdsa-Sig-Value the BIT STRING
    /// carries.
    pub(crate) fn sign(self, key: &dyn PrivateKeyOps, data: &[u8]) -> Result<Vec<u8>, CaError> {
        Ok(key.sign(self.hash(), data)?)
    }
}

/// Verifies a CSR self-signature over the exact bytes of the CertificationRequestInfo.
/// Accepts RSA PKCS#1 v1.5 with SHA-1/224/256/384/512 and ECDSA with SHA-256/384/512.
pub(crate) fn verify_self_signature(
    algorithm: &AlgorithmIdentifierOwned,
    key: &PKeyRef<impl HasPublic>,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), CaError> {
    let (digest, key_type) = accepted_csr_algorithm(&algorithm.oid)?;
    if key.id() != key_type {
        return Err(CaError::UnsupportedAlgorithm(format!(
            "signature algorithm {} does not match the key type",
            algorithm.oid
        )));
    }
    // An openssl error here means the signature is garbage (bad DER ECDSA value, wrong
    // length): the same answer as a signature that does not verify.
    let verified = Verifier::new(digest, key)
        .and_then(|mut verifier| {
            verifier.update(signed)?;
            verifier.verify(signature)
        })
        .unwrap_or(false);
    if verified {
        Ok(())
    } else {
        Err(CaError::BadCsrSignature)
    }
}

fn accepted_csr_algorithm(oid: &ObjectIdentifier) -> Result<(MessageDigest, Id), CaError> {
    Ok(match *oid {
        SHA1_WITH_RSA => (MessageDigest::sha1(), Id::RSA),
        SHA224_WITH_RSA => (MessageDigest::sha224(), Id::RSA),
        SHA256_WITH_RSA => (MessageDigest::sha256(), Id::RSA),
        SHA384_WITH_RSA => (MessageDigest::sha384(), Id::RSA),
        SHA512_WITH_RSA => (MessageDigest::sha512(), Id::RSA),
        ECDSA_WITH_SHA256 => (MessageDigest::sha256(), Id::EC),
        ECDSA_WITH_SHA384 => (MessageDigest::sha384(), Id::EC),
        ECDSA_WITH_SHA512 => (MessageDigest::sha512(), Id::EC),
        other => {
            return Err(CaError::UnsupportedAlgorithm(format!(
                "CSR signature algorithm {other}"
            )))
        }
    })
}
