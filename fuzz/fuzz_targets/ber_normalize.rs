//! `scep::ber::normalize_to_der` never panics, and its output is a fixed point: normalising
//! DER again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scepd::scep::ber::normalize_to_der;

fuzz_target!(|input: &[u8]| {
    if let Ok(der) = normalize_to_der(input) {
        assert_eq!(
            normalize_to_der(&der).as_deref(),
            Ok(der.as_slice()),
            "normalising is not idempotent"
        );
    }
});
