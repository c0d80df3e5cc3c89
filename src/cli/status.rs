//! `scepd status`: the connector outbox's depth and fullness (through the admin API while
//! a server runs, directly on the store otherwise).

use http::Method;

use super::admin_client::{api_json, Access};
use super::ConfigArg;
use crate::connector::admin::{self, StatusView};

/// Runs `scepd status`; exits 2 when the outbox is full.
pub fn run(args: &ConfigArg) -> u8 {
    let config = match crate::config::Config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => {
            errors.0.iter().for_each(|e| eprintln!("error: {e}"));
            return super::EXIT_CONFIG;
        }
    };
    let access = match Access::open(&args.config) {
        Ok(access) => access,
        Err(code) => return code,
    };
    let view: Result<StatusView, String> = match &access {
        Access::Direct(store) => {
            admin::status(store, &config.connectors).map_err(|e| e.to_string())
        }
        Access::Api(config) => api_json(config, Method::GET, "/v1/status", None),
    };
    let view = match view {
        Ok(view) => view,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let server = match access {
        Access::Direct(_) => "not running",
        Access::Api(_) => "running",
    };
    println!("server: {server}");
    println!(
        "connectors: {}",
        if view.connectors.is_empty() {
            "none".to_owned()
        } else {
            view.connectors.join(", ")
        }
    );
    let o = &view.outbox;
    println!(
        "outbox: {} of {} events waiting{}, {} failing",
        o.depth,
        o.capacity,
        if o.full() {
            " (FULL: requests that need an event are refused)"
        } else {
            ""
        },
        o.failing
    );
    if o.full() {
        2
    } else {
        0
    }
}
