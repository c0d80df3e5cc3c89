//! `scep::decode::decode` (RFC 8894 §3 pkiMessage) never panics on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scepd::scep::decode::{decode, Limits};

fuzz_target!(|input: &[u8]| {
    let _ = decode(input, &Limits::default());
});
