//! Unit tests of the sans-IO OCSP codec: CertID matching, the three statuses, the nonce, the
//! error statuses, and malformed input (never a panic). Signatures are checked with OpenSSL's
//! own OCSP verifier.

use std::time::{Duration, UNIX_EPOCH};

use der::asn1::{Null, OctetString};
use der::{Decode, Encode};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    ResponderId, TbsRequest, Version,
};

use super::*;

struct Ca {
    key: PKey<Private>,
    der: Vec<u8>,
    identity: IssuerIdentity,
}

fn ca() -> Ca {
    let key = scepd_ca::generate_key(scepd_ca::KeySpec::P256).unwrap();
    let der = scepd_ca::self_signed_ca(&key, "CN=OCSP test CA", 30).unwrap();
    let identity = IssuerIdentity::from_ca_certificate(&der).unwrap();
    Ca { key, der, identity }
}

fn cert_id(ca_der: &[u8], sha256: bool, serial: &[u8]) -> CertId {
    let cert = x509_cert::Certificate::from_der(ca_der).unwrap();
    let name = cert.tbs_certificate.subject.to_der().unwrap();
    let key = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    let (oid, name_hash, key_hash) = if sha256 {
        (
            ID_SHA_256,
            openssl::sha::sha256(&name).to_vec(),
            openssl::sha::sha256(&key).to_vec(),
        )
    } else {
        (
            ID_SHA_1,
            openssl::sha::sha1(&name).to_vec(),
            openssl::sha::sha1(&key).to_vec(),
        )
    };
    CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid,
            parameters: Some(der::asn1::Any::from(Null)),
        },
        issuer_name_hash: OctetString::new(name_hash).unwrap(),
        issuer_key_hash: OctetString::new(key_hash).unwrap(),
        serial_number: SerialNumber::new(serial).unwrap(),
    }
}

fn nonce_extension(octets: &[u8]) -> Extension {
    Extension {
        extn_id: ID_PKIX_OCSP_NONCE,
        critical: false,
        extn_value: OctetString::new(OctetString::new(octets).unwrap().to_der().unwrap()).unwrap(),
    }
}

fn request(ids: Vec<CertId>, nonce: Option<Extension>) -> Vec<u8> {
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: ids
                .into_iter()
                .map(|req_cert| Request {
                    req_cert,
                    single_request_extensions: None,
                })
                .collect(),
            request_extensions: nonce.map(|n| vec![n]),
        },
        optional_signature: None,
    }
    .to_der()
    .unwrap()
}

const GOOD: &[u8] = &[0x11];
const REVOKED: &[u8] = &[0x22];

fn lookup(serial: &[u8]) -> Result<Status, LookupFailed> {
    Ok(match serial {
        GOOD => Status::Good,
        REVOKED => Status::Revoked {
            at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            reason: Some(RevocationReason::KeyCompromise),
        },
        _ => Status::Unknown,
    })
}

fn answer(ca: &Ca, request_der: &[u8]) -> Vec<u8> {
    let context = Context {
        issuer: &ca.identity,
        responder_key_hash: ca.identity.key_hash(),
        responder_certs: &[],
        now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        validity: Duration::from_secs(3600),
    };
    let key = ca.key.clone();
    respond(request_der, &context, lookup, move |tbs| {
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        signer.update(tbs).unwrap();
        Ok(CaSignature {
            algorithm: AlgorithmIdentifierOwned {
                oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
                parameters: None,
            },
            value: signer.sign_to_vec().unwrap(),
        })
    })
}

fn status_of(response: &[u8]) -> OcspResponseStatus {
    OcspResponse::from_der(response).unwrap().response_status
}

fn basic(response: &[u8]) -> BasicOcspResponse {
    let response = OcspResponse::from_der(response).unwrap();
    assert_eq!(response.response_status, OcspResponseStatus::Successful);
    let bytes = response.response_bytes.unwrap();
    assert_eq!(
        bytes.response_type,
        const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC
    );
    BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap()
}

#[test]
fn cert_ids_match_by_sha1_and_sha256_and_nothing_else() {
    let ca = ca();
    let other = self::ca();
    assert!(ca.identity.matches(&cert_id(&ca.der, false, GOOD)));
    assert!(ca.identity.matches(&cert_id(&ca.der, true, GOOD)));
    assert!(!ca.identity.matches(&cert_id(&other.der, false, GOOD)));
    assert!(!ca.identity.matches(&cert_id(&other.der, true, GOOD)));
    let mut md5 = cert_id(&ca.der, false, GOOD);
    md5.hash_algorithm.oid = const_oid::db::rfc5912::ID_MD_5;
    assert!(!ca.identity.matches(&md5));
}

#[test]
fn good_revoked_and_unknown_in_one_signed_response_with_the_nonce_echoed() {
    let ca = ca();
    let nonce = nonce_extension(&[7u8; 16]);
    let ids = vec![
        cert_id(&ca.der, false, GOOD),
        cert_id(&ca.der, true, REVOKED),
        cert_id(&ca.der, false, &[0x33]),
    ];
    let der = answer(&ca, &request(ids.clone(), Some(nonce.clone())));
    let basic = basic(&der);
    let data = &basic.tbs_response_data;
    assert_eq!(
        data.responder_id,
        ResponderId::ByKey(OctetString::new(ca.identity.key_hash()).unwrap())
    );
    assert_eq!(data.response_extensions.as_deref(), Some(&[nonce][..]));
    assert_eq!(data.responses.len(), 3);
    for (single, id) in data.responses.iter().zip(&ids) {
        assert_eq!(&single.cert_id, id, "CertIDs are echoed as sent");
        let next = single.next_update.unwrap().0.to_unix_duration();
        assert_eq!(
            next - single.this_update.0.to_unix_duration(),
            Duration::from_secs(3600)
        );
    }
    assert_eq!(data.responses[0].cert_status, CertStatus::good());
    match &data.responses[1].cert_status {
        CertStatus::Revoked(info) => {
            assert_eq!(
                info.revocation_time.0.to_unix_duration(),
                Duration::from_secs(1_700_000_000)
            );
            assert_eq!(
                info.revocation_reason,
                Some(x509_cert::ext::pkix::crl::CrlReason::KeyCompromise)
            );
        }
        other => panic!("expected revoked, got {other:?}"),
    }
    assert_eq!(data.responses[2].cert_status, CertStatus::unknown());

    // OpenSSL's verifier accepts the signature with the CA as the trusted signer.
    let response = openssl::ocsp::OcspResponse::from_der(&der).unwrap();
    let basic = response.basic().unwrap();
    let ca_cert = X509::from_der(&ca.der).unwrap();
    let mut certs = Stack::new().unwrap();
    certs.push(ca_cert.clone()).unwrap();
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(ca_cert).unwrap();
    basic
        .verify(&certs, &store.build(), openssl::ocsp::OcspFlag::empty())
        .unwrap();
}

#[test]
fn a_request_only_about_another_ca_is_unauthorized_and_mixed_ones_say_unknown() {
    let ca = ca();
    let other = self::ca();
    let der = answer(&ca, &request(vec![cert_id(&other.der, false, GOOD)], None));
    assert_eq!(status_of(&der), OcspResponseStatus::Unauthorized);
    let der = answer(
        &ca,
        &request(
            vec![
                cert_id(&other.der, false, GOOD),
                cert_id(&ca.der, false, GOOD),
            ],
            None,
        ),
    );
    let basic = basic(&der);
    assert_eq!(
        basic.tbs_response_data.responses[0].cert_status,
        CertStatus::unknown()
    );
    assert_eq!(
        basic.tbs_response_data.responses[1].cert_status,
        CertStatus::good()
    );
    assert!(basic.tbs_response_data.response_extensions.is_none());
}

#[test]
fn malformed_requests_get_malformed_request() {
    let ca = ca();
    let id = || cert_id(&ca.der, false, GOOD);
    for bad in [
        Vec::new(),
        b"not DER".to_vec(),
        vec![0x30, 0x80, 0x00, 0x00],
        request(Vec::new(), None),
        request(vec![id(); MAX_REQUESTS + 1], None),
        request(vec![id()], Some(nonce_extension(&[]))),
        request(vec![id()], Some(nonce_extension(&[1u8; 33]))),
    ] {
        let der = answer(&ca, &bad);
        assert_eq!(der, MALFORMED_REQUEST_DER, "{bad:02x?}");
        assert_eq!(status_of(&der), OcspResponseStatus::MalformedRequest);
    }
    // 32 octets is the most RFC 8954 allows; a raw (unwrapped) nonce is accepted too.
    let ok = request(vec![id()], Some(nonce_extension(&[1u8; 32])));
    assert_eq!(status_of(&answer(&ca, &ok)), OcspResponseStatus::Successful);
    let raw = Extension {
        extn_id: ID_PKIX_OCSP_NONCE,
        critical: false,
        extn_value: OctetString::new([0xab; 8]).unwrap(),
    };
    let der = answer(&ca, &request(vec![id()], Some(raw)));
    assert_eq!(status_of(&der), OcspResponseStatus::Successful);
}

#[test]
fn truncated_and_flipped_requests_never_panic() {
    let ca = ca();
    let valid = request(
        vec![
            cert_id(&ca.der, true, GOOD),
            cert_id(&ca.der, false, REVOKED),
        ],
        Some(nonce_extension(&[9u8; 20])),
    );
    for length in 0..valid.len() {
        let _ = answer(&ca, &valid[..length]);
    }
    for at in 0..valid.len() {
        let mut flipped = valid.clone();
        flipped[at] ^= 0x5a;
        let der = answer(&ca, &flipped);
        assert!(OcspResponse::from_der(&der).is_ok());
    }
}

#[test]
fn store_and_signer_failures_are_try_later_and_internal_error() {
    let ca = ca();
    let request = request(vec![cert_id(&ca.der, false, GOOD)], None);
    let context = Context {
        issuer: &ca.identity,
        responder_key_hash: ca.identity.key_hash(),
        responder_certs: &[],
        now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        validity: Duration::from_secs(60),
    };
    let der = respond(
        &request,
        &context,
        |_| Err(LookupFailed("disk".into())),
        |_| Err("unused".into()),
    );
    assert_eq!(status_of(&der), OcspResponseStatus::TryLater);
    let der = respond(&request, &context, lookup, |_| Err("no key".into()));
    assert_eq!(status_of(&der), OcspResponseStatus::InternalError);
    assert_eq!(status_name(&der), "internalError");
    assert_eq!(status_name(b"junk"), "undecodable");
}

#[test]
fn the_fuzz_shim_answers_the_seeds_and_their_mutations() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/ocsp_request");
    for entry in std::fs::read_dir(dir).unwrap() {
        let seed = std::fs::read(entry.unwrap().path()).unwrap();
        fuzzing::respond_to(&seed);
        for at in 0..seed.len() {
            let mut mutated = seed.clone();
            mutated[at] = mutated[at].wrapping_add(1);
            fuzzing::respond_to(&mutated);
            fuzzing::respond_to(&seed[..at]);
        }
    }
}
