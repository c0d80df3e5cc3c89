//! The whole server-side codec on any input: `decode` (RFC 8894 §3 pkiMessage), then
//! `verify` and `open` with a fixed RSA recipient key. Never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openssl::pkey::{PKey, Private};
use scepd::scep::decode::{decode, Limits};
use scepd::scep::envelope::RecipientKey;

/// One RSA key and a self-signed certificate for it, made once per process.
fn recipient() -> &'static (Vec<u8>, PKey<Private>) {
    static RECIPIENT: OnceLock<(Vec<u8>, PKey<Private>)> = OnceLock::new();
    RECIPIENT.get_or_init(|| {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa")).expect("key");
        let identity = scepd::scep::client::ClientIdentity::self_signed(key.clone(), "fuzz RA").expect("cert");
        (identity.cert_der, key)
    })
}

fuzz_target!(|input: &[u8]| {
    let Ok(received) = decode(input, &Limits::default()) else { return };
    let Ok(verified) = received.verify() else { return };
    let (cert_der, key) = recipient();
    let _ = verified.open(&[RecipientKey { cert_der, key }], true);
});
