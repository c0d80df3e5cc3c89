//! Listeners: plain HTTP, HTTPS (openssl) and the admin API, with a connection limit,
//! header-read and request timeouts, body limits, and a drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Limits;
use crate::http::long_uri::LongUriRewriter;

/// How long in-flight requests get to finish after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers requests whose body has been read in full.
pub trait Handler: Send + Sync + 'static {
    /// One request.
    fn call(
        &self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Response<Bytes>> + Send + '_>>;
}

/// Errors while setting up listeners.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Binds a TCP listener with a clear error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Builds the TLS acceptor from PEM files (chain, key).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<SslAcceptor, ServeError> {
    let tls = |e: openssl::error::ErrorStack| ServeError::Tls(e.to_string());
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(tls)?;
    builder
        .set_certificate_chain_file(cert)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?;
    builder.check_private_key().map_err(tls)?;
    Ok(builder.build())
}

/// Serves connections from `listener` until `shutdown` flips, then drains.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<SslAcceptor>,
    handler: Arc<H>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let tls = tls.map(Arc::new);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = Arc::clone(&handler);
        let limits = limits.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let stream =
                        LongUriRewriter::new(stream, limits.max_request_line_bytes + 16 * 1024);
                    serve_connection(TokioIo::new(stream), handler, limits, watcher).await
                }
                Some(acceptor) => {
                    match tls_handshake(&acceptor, stream, limits.header_read_timeout).await {
                        Some(stream) => {
                            let stream = LongUriRewriter::new(
                                stream,
                                limits.max_request_line_bytes + 16 * 1024,
                            );
                            serve_connection(TokioIo::new(stream), handler, limits, watcher).await
                        }
                        None => tracing::debug!(%peer, "TLS handshake failed or timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out; closing remaining connections"),
    }
}

async fn tls_handshake(
    acceptor: &SslAcceptor,
    stream: tokio::net::TcpStream,
    timeout: Duration,
) -> Option<tokio_openssl::SslStream<tokio::net::TcpStream>> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).ok()?;
    let mut stream = tokio_openssl::SslStream::new(ssl, stream).ok()?;
    match tokio::time::timeout(timeout, Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) => Some(stream),
        _ => None,
    }
}

async fn serve_connection<I, H>(
    io: TokioIo<I>,
    handler: Arc<H>,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        // hyper's buffer holds the request line and headers: GET PKIOperation puts the whole
        // message in the URL (Intune's exceed 40 KB), so it must hold at least the limit.
        .max_buf_size(limits.max_request_line_bytes.max(8192) + 16 * 1024);
    let service = service_fn(move |request: Request<Incoming>| {
        let handler = Arc::clone(&handler);
        let limits = limits.clone();
        async move {
            let handling = read_and_handle(request, &*handler, limits.max_body_bytes);
            let response = match tokio::time::timeout(limits.request_timeout, handling).await {
                Ok(response) => response,
                Err(_) => status_only(StatusCode::REQUEST_TIMEOUT),
            };
            Ok::<_, std::convert::Infallible>(response.map(Full::new))
        }
    });
    let connection = builder.serve_connection(io, service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Reads the whole body within `max_body_bytes` (413 past it), then hands over.
async fn read_and_handle<H: Handler>(
    request: Request<Incoming>,
    handler: &H,
    max_body_bytes: usize,
) -> Response<Bytes> {
    let (parts, body) = request.into_parts();
    // A declared length over the limit is refused before any of the body is read.
    if hyper::body::Body::size_hint(&body).lower() > max_body_bytes as u64 {
        return status_only(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let body = match Limited::new(body, max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return status_only(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Err(_) => return status_only(StatusCode::BAD_REQUEST),
    };
    handler.call(Request::from_parts(parts, body)).await
}

fn status_only(status: StatusCode) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(format!("{status}\n")));
    *response.status_mut() = status;
    response
}
