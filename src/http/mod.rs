//! The hyper front: listeners, limits, TLS, graceful shutdown, and the admin API.

pub mod admin;
pub mod long_uri;
pub mod request;
pub mod server;
