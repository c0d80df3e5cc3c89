//! The signed-challenge parsers (policy-module, docs/challenge-format.md) never panic: the
//! RFC 4514 subject parser and the claims parser on raw text, and the whole verifier (base64,
//! CMS layers, up to the signature) on a blob with a fixed CSR.
#![no_main]

use der::Decode;
use libfuzzer_sys::fuzz_target;
use scepd_policy::signed_challenge::fuzzing;
use x509_cert::request::CertReq;

/// A valid PKCS#10 request (see policy-module/tests/data/README.md), the same for every input.
const CSR: &[u8] = include_bytes!("../../policy-module/tests/data/csr-challenge-printable.der");

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        let _ = fuzzing::claims(input);
        return;
    };
    let _ = fuzzing::rfc4514(text);
    let _ = fuzzing::claims(input);
    if let Ok(csr) = CertReq::from_der(CSR) {
        let _ = fuzzing::blob(text, &csr);
    }
});
