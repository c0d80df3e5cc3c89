//! The OCSP responder (RFC 6960) on any bytes: `ocsp::respond` never panics and always
//! answers with a decodable OCSPResponse (malformedRequest, unauthorized, tryLater or a
//! signed BasicOCSPResponse).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    scepd::ocsp::fuzzing::respond_to(input);
});
