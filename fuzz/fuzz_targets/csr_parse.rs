//! PKCS#10 decoding (`x509_cert::request::CertReq`, RFC 2986) never panics, and a request it
//! accepts survives an encode/decode round trip unchanged.
#![no_main]

use der::{Decode, Encode};
use libfuzzer_sys::fuzz_target;
use x509_cert::request::CertReq;

fuzz_target!(|input: &[u8]| {
    let Ok(request) = CertReq::from_der(input) else {
        return;
    };
    // Compared as values, not bytes: the decoder may accept an explicitly encoded DEFAULT
    // that the encoder then omits, which is harmless as scepd verifies signatures over the
    // bytes as received.
    let encoded = request.to_der().expect("a decoded CSR encodes");
    let decoded = CertReq::from_der(&encoded).expect("an encoded CSR decodes");
    assert_eq!(decoded, request, "CSR round trip changed the value");
});
