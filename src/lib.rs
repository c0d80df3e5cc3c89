//! scepd: an NDES-compatible SCEP (RFC 8894) enrollment server.
//!
//! The root package is the registration authority: the only place that knows every part.
//! `scep` is the sans-IO wire codec, `enroll` the enrollment cycle, `http` the hyper front,
//! `store` the durable state, `config` the validated configuration, `app` the wiring.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod connector;
pub mod crl;
pub mod enroll;
pub mod http;
pub mod keys;
pub mod multi_ca;
pub mod ocsp;
pub mod pkcs11;
pub mod ra_renewal;
pub mod rollover;
pub mod scep;
pub mod store;
pub mod upstream;
pub mod verifiers;

pub use app::App;
