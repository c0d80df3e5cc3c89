//! A small client for the admin API, used by the CLI while a server holds the store.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::AdminConfig;

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
