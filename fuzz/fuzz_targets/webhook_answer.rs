//! The webhook verifier's reading of an answer (HTTP status line, headers, Content-Length,
//! chunked or read-to-end body, then the JSON) on any bytes: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    scepd::verifiers::webhook::fuzzing::answer(input);
});
