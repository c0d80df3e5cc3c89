//! A small client for the admin API, used by the CLI while a server holds the store.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{AdminConfig, Config};

/// Sends one request to the admin API; returns the status and the body.
pub fn call(
    admin: &AdminConfig,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), String> {
    let token = std::fs::read_to_string(&admin.token_file)
        .map_err(|e| format!("admin token {}: {e}", admin.token_file.display()))?;
    let uri = format!("http://{}{path}", admin.listen);
    let request = Request::builder()
        .method(method)
        .uri(&uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response =
            tokio::time::timeout(std::time::Duration::from_secs(30), client.request(request))
                .await
                .map_err(|_| format!("admin API at {uri}: timed out"))?
                .map_err(|e| format!("admin API at {uri}: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    })
}

/// Calls the admin API and decodes its JSON answer; a non-200 answer becomes its `error` text.
pub fn api_json<T: serde::de::DeserializeOwned>(
    config: &Config,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<T, String> {
    let (status, body) = call(&config.admin, method, path, body)?;
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(format!("admin API: {status}: {message}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("admin API answer: {e}"))
}

/// Seconds since the Unix epoch as `2026-11-23T17:33:01Z`.
pub fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|u| time::OffsetDateTime::from_unix_timestamp(u).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Where a CLI command reads and changes state: the store itself, or the admin API of the
/// server that holds it (sled lets one process open the store).
pub enum Access {
    /// No server runs: the store, opened by this process.
    Direct(crate::store::SledStore),
    /// A server holds the store: its admin API.
    Api(Box<Config>),
}

impl Access {
    /// Loads the configuration and picks the access; on failure prints why and returns the
    /// exit code (64 for a bad configuration).
    pub fn open(config_path: &std::path::Path) -> Result<Self, u8> {
        let config = Config::load(config_path).map_err(|errors| {
            errors.0.iter().for_each(|e| eprintln!("error: {e}"));
            super::EXIT_CONFIG
        })?;
        match crate::store::SledStore::open(&config.store_path) {
            Ok(store) => Ok(Self::Direct(store)),
            Err(crate::store::StoreError::Locked { .. }) => Ok(Self::Api(Box::new(config))),
            Err(e) => {
                eprintln!("error: {e}");
                Err(1)
            }
        }
    }
}
