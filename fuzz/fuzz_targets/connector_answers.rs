//! The connectors' readings of what the network sends them (Intune's token, discovery,
//! ScepActions and revocation answers, the webhook's inbound revocation body, serials from
//! Intune) on any bytes: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    scepd::connector::intune::fuzzing::answers(input);
});
