//! The messageData parsers of CertPoll, GetCert and GetCRL (RFC 8894 §3.3.3, §3.3.4) on any
//! input: never panic, and what they accept survives encode/decode unchanged.
#![no_main]

use der::{Decode, Encode};
use libfuzzer_sys::fuzz_target;
use scepd::scep::message_data::{parse_issuer_and_serial, parse_issuer_and_subject, IssuerAndSubject};

fuzz_target!(|input: &[u8]| {
    if let Ok(id) = parse_issuer_and_serial(input) {
        let again = id.to_der().expect("re-encode IssuerAndSerialNumber");
        assert_eq!(parse_issuer_and_serial(&again).expect("round trip"), id);
    }
    if let Ok(names) = parse_issuer_and_subject(input) {
        let again = names.to_der().expect("re-encode IssuerAndSubject");
        assert_eq!(IssuerAndSubject::from_der(&again).expect("round trip"), names);
    }
});
