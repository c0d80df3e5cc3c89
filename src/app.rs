//! `App`: the wired server. `App::handle` answers one HTTP request without sockets, so the
//! black-box tests drive exactly what the listeners drive.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use crate::config::Template;
use crate::crl::CrlSet;
use crate::enroll::{Enroller, PkiReply, Summary};
use crate::http::request::{self, Endpoint, Operation};
use crate::keys::RaIdentity;
use crate::ocsp::responder::OcspResponders;
use crate::scep::reply::certs_only;

/// Media types of RFC 8894 §4.
mod media {
    pub const CA_CERT: &str = "application/x-x509-ca-cert";
    pub const CA_RA_CERT: &str = "application/x-x509-ca-ra-cert";
    pub const NEXT_CA_CERT: &str = "application/x-x509-next-ca-cert";
    pub const PKI_MESSAGE: &str = "application/x-pki-message";
    /// RFC 5280 §4.2.1.13 / RFC 2585 §4.2.
    pub const CRL: &str = "application/pkix-crl";
    /// RFC 6960 Appendix A.
    pub const OCSP_RESPONSE: &str = "application/ocsp-response";
}

/// Tuning of the request path.
#[derive(Debug, Clone)]
pub struct AppLimits {
    /// PKIOperations admitted at once (running plus waiting) before 503.
    pub max_queued_operations: usize,
    /// PKIOperations running at once: one per core keeps the reactor free and the CPU busy.
    pub crypto_threads: usize,
}

/// The server, shared by every connection.
pub struct App {
    enroller: Arc<Enroller>,
    default_template: String,
    caps: Bytes,
    /// Rebuilt by an RA renewal; read without a lock on every GetCACert.
    ca_cert_body: ArcSwap<Bytes>,
    ca_cert_type: &'static str,
    admission: Semaphore,
    crypto: Semaphore,
    revocation: Option<RevocationServices>,
    /// GetNextCACert and the time the next CA takes over, while `scepd ca rollover` has
    /// prepared one. From that time on it is the current CA, so neither is offered any more.
    next_ca: Option<(Bytes, SystemTime)>,
    /// GetCACaps while a next CA is offered (`caps` otherwise).
    caps_with_next_ca: Bytes,
    /// NDES's one-time-password page `/certsrv/mscep_admin/`, when enabled.
    ndes_admin: Option<Arc<crate::verifiers::ndes_admin::NdesAdmin>>,
    /// The CAs of `[cas.<name>]`, each with the templates that name it.
    others: Vec<CaService>,
}

/// A further CA's SCEP face (`[cas.<name>]`): its enroller (its templates, RA identity and
/// CA) and its GetCACert answer.
struct CaService {
    name: String,
    enroller: Arc<Enroller>,
    ca_cert_body: ArcSwap<Bytes>,
    ca_cert_type: &'static str,
}

/// What answers one request: the default CA's parts or a further CA's.
#[derive(Clone, Copy)]
struct Face<'a> {
    enroller: &'a Arc<Enroller>,
    ca_cert_body: &'a ArcSwap<Bytes>,
    ca_cert_type: &'static str,
    /// The default CA (the only one a rollover's GetNextCACert is for).
    is_default: bool,
}

/// The CRL and OCSP endpoints (issue 4 items 5 and 6); absent, both paths answer 404.
#[derive(Debug, Clone)]
pub struct RevocationServices {
    /// The CRL of each CA generation, served at `/crl/<name>.crl`.
    pub crls: Arc<CrlSet>,
    /// The OCSP responders.
    pub ocsp: Arc<OcspResponders>,
}

/// A failure to build the [`App`] (never at request time).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AppError(String);

impl App {
    /// Precomputes the static answers (GetCACaps, GetCACert) once.
    pub fn new(
        enroller: Enroller,
        default_template: &str,
        limits: AppLimits,
    ) -> Result<Self, AppError> {
        let (ca_cert_body, ca_cert_type) = ca_cert_response(&enroller)?;
        Ok(Self {
            caps: Bytes::from(capabilities(false)),
            ca_cert_body: ArcSwap::from_pointee(ca_cert_body),
            ca_cert_type,
            default_template: default_template.to_ascii_lowercase(),
            enroller: Arc::new(enroller),
            admission: Semaphore::new(limits.max_queued_operations.max(1)),
            crypto: Semaphore::new(limits.crypto_threads.max(1)),
            revocation: None,
            next_ca: None,
            caps_with_next_ca: Bytes::from(capabilities(true)),
            ndes_admin: None,
            others: Vec::new(),
        })
    }

    /// Adds a further CA (`[cas.<name>]`): `enroller` holds its templates, and GetCACert on
    /// their paths (or with `message=<name>` on a path without a template) answers for it.
    pub fn with_extra_ca(mut self, name: &str, enroller: Enroller) -> Result<Self, AppError> {
        let (body, ca_cert_type) = ca_cert_response(&enroller)?;
        self.others.push(CaService {
            name: name.to_ascii_lowercase(),
            enroller: Arc::new(enroller),
            ca_cert_body: ArcSwap::from_pointee(body),
            ca_cert_type,
        });
        Ok(self)
    }

    /// The enroller of a further CA, by name.
    pub fn extra_enroller(&self, name: &str) -> Option<&Arc<Enroller>> {
        self.others
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
            .map(|o| &o.enroller)
    }

    /// Puts a renewed RA identity of the further CA `name` into service (see
    /// [`App::replace_ra`]).
    pub fn replace_extra_ra(&self, name: &str, ra: RaIdentity) -> Result<(), AppError> {
        let other = self
            .others
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| AppError(format!("no CA named {name}")))?;
        let (body, _) = ca_cert_body(other.enroller.ca().chain(), &ra)?;
        other.enroller.replace_ra(ra);
        other.ca_cert_body.store(Arc::new(body));
        Ok(())
    }

    fn default_face(&self) -> Face<'_> {
        Face {
            enroller: &self.enroller,
            ca_cert_body: &self.ca_cert_body,
            ca_cert_type: self.ca_cert_type,
            is_default: true,
        }
    }

    fn face_of(other: &CaService) -> Face<'_> {
        Face {
            enroller: &other.enroller,
            ca_cert_body: &other.ca_cert_body,
            ca_cert_type: other.ca_cert_type,
            is_default: false,
        }
    }

    /// The CA answering for the template `name`, and the template.
    fn locate(&self, name: &str) -> Option<(Face<'_>, &Template)> {
        if let Some(template) = self.enroller.template(name) {
            return Some((self.default_face(), template));
        }
        self.others.iter().find_map(|other| {
            other
                .enroller
                .template(name)
                .map(|template| (Self::face_of(other), template))
        })
    }

    /// On a path without a template, GetCACert, GetCACaps and GetNextCACert may name a further
    /// CA in `message` (RFC 8894 §4.2: the CA identifier); anything else is the default CA.
    fn face_named(&self, message: Option<&str>) -> Option<Face<'_>> {
        let message = message?;
        self.others
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(message))
            .map(Self::face_of)
    }

    /// Serves GetNextCACert with `body` (see `rollover::next_ca_body`) and advertises it
    /// until `switch_at`, when the next CA becomes the current one.
    pub fn with_next_ca(mut self, body: Vec<u8>, switch_at: SystemTime) -> Self {
        self.next_ca = Some((Bytes::from(body), switch_at));
        self
    }

    /// The next CA's GetNextCACert body, while it is still the next one.
    fn offered_next_ca(&self) -> Option<&Bytes> {
        let (body, switch_at) = self.next_ca.as_ref()?;
        (SystemTime::now() < *switch_at).then_some(body)
    }

    /// Serves NDES's password page `/certsrv/mscep_admin/` (see `verifiers::ndes_admin`).
    pub fn with_ndes_admin(mut self, page: crate::verifiers::ndes_admin::NdesAdmin) -> Self {
        self.ndes_admin = Some(Arc::new(page));
        self
    }

    /// Serves the CRL and OCSP endpoints.
    pub fn with_revocation_services(mut self, services: RevocationServices) -> Self {
        self.revocation = Some(services);
        self
    }

    /// Puts a renewed RA identity into service: the enroller decrypts and signs with it, and
    /// GetCACert publishes its certificates. The GetCACert body is built before anything is
    /// swapped, so a failure leaves the server as it was.
    pub fn replace_ra(&self, ra: RaIdentity) -> Result<(), AppError> {
        let (body, _) = ca_cert_body(self.enroller.ca().chain(), &ra)?;
        self.enroller.replace_ra(ra);
        self.ca_cert_body.store(Arc::new(body));
        Ok(())
    }

    /// The enrollment engine (the admin API reads its store).
    pub fn enroller(&self) -> &Arc<Enroller> {
        &self.enroller
    }

    /// Answers one request. Never fails: every problem becomes a status code or a CertRep.
    pub async fn handle(&self, request: Request<Bytes>) -> Response<Bytes> {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        if let Some(page) =
            crate::verifiers::ndes_admin::route(self.ndes_admin.as_deref(), &request)
        {
            return page;
        }
        let (template, named_path) = match request::classify_path(&path) {
            Endpoint::Health => return plain(StatusCode::OK, "ok\n"),
            Endpoint::NotFound => return plain(StatusCode::NOT_FOUND, "not found\n"),
            Endpoint::Scep(Some(name)) => (name, true),
            Endpoint::Scep(None) => (self.default_template.clone(), false),
            Endpoint::Crl(name) => return self.crl(request.method(), &name),
            Endpoint::Ocsp => return self.ocsp(request).await,
        };
        let Some((mut face, template)) = self.locate(&template) else {
            return plain(StatusCode::NOT_FOUND, "no such SCEP template\n");
        };
        let query = request::parse_query(request.uri().query().unwrap_or(""));
        let is_ca_query = matches!(
            query.operation.as_deref().and_then(Operation::parse),
            Some(Operation::GetCaCert | Operation::GetCaCaps | Operation::GetNextCaCert)
        );
        if !named_path && is_ca_query {
            face = self.face_named(query.message.as_deref()).unwrap_or(face);
        }
        let operation = match (request.method(), query.operation.as_deref()) {
            // NDES with the Intune policy module answers a bare GET with 403; admins' health
            // checks (Validate-NDESConfiguration) read 403 as healthy.
            (&Method::GET, None) => return plain(StatusCode::FORBIDDEN, "forbidden\n"),
            // Many clients POST without checking `operation` (RFC 8894 §4.3).
            (&Method::POST, None) => Operation::PkiOperation,
            (_, None) => return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            (_, Some(name)) => match Operation::parse(name) {
                Some(op) => op,
                None => return plain(StatusCode::BAD_REQUEST, "unknown operation\n"),
            },
        };
        let (response, summary) = match (request.method(), operation) {
            (&Method::GET | &Method::HEAD, Operation::GetCaCaps) => {
                let caps = match self.offered_next_ca().filter(|_| face.is_default) {
                    Some(_) => &self.caps_with_next_ca,
                    None => &self.caps,
                };
                (typed(StatusCode::OK, "text/plain", caps.clone()), None)
            }
            (&Method::GET | &Method::HEAD, Operation::GetCaCert) => (
                typed(
                    StatusCode::OK,
                    face.ca_cert_type,
                    Bytes::clone(&face.ca_cert_body.load()),
                ),
                None,
            ),
            (&Method::GET | &Method::HEAD, Operation::GetNextCaCert) if face.is_default => {
                (self.next_ca_cert(), None)
            }
            (&Method::GET | &Method::HEAD, Operation::GetNextCaCert) => (
                plain(StatusCode::NOT_FOUND, "no next CA certificate\n"),
                None,
            ),
            (&Method::GET, Operation::PkiOperation) => {
                match get_message(query.message, &request)
                    .as_deref()
                    .and_then(request::decode_message)
                {
                    Some(message) => self.pki_operation(face.enroller, template, message).await,
                    None => (
                        plain(
                            StatusCode::BAD_REQUEST,
                            "message is missing or not base64\n",
                        ),
                        None,
                    ),
                }
            }
            (&Method::POST, Operation::PkiOperation) => {
                self.pki_operation(face.enroller, template, request.into_body().to_vec())
                    .await
            }
            _ => (
                plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
                None,
            ),
        };
        log_request(
            operation,
            &template.name,
            response.status(),
            summary.as_ref(),
            started,
        );
        response
    }

    /// Runs the CPU-bound cycle on the blocking pool, bounded twice: admission (queue) and
    /// crypto threads (one per core).
    async fn pki_operation(
        &self,
        enroller: &Arc<Enroller>,
        template: &Template,
        message: Vec<u8>,
    ) -> (Response<Bytes>, Option<Summary>) {
        let Ok(_admitted) = self.admission.try_acquire() else {
            let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "busy; retry\n");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return (response, None);
        };
        let Ok(_running) = self.crypto.acquire().await else {
            return (
                plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                None,
            );
        };
        let enroller = Arc::clone(enroller);
        let template_name = template.name.clone();
        let job = tokio::task::spawn_blocking(move || match enroller.template(&template_name) {
            Some(template) => enroller.pki_operation(template, &message, SystemTime::now()),
            None => PkiReply::Unavailable(format!("template {template_name} vanished")),
        });
        match job.await {
            Ok(reply) => pki_response(reply),
            Err(e) => {
                tracing::error!(error = %e, "PKIOperation task failed");
                (
                    plain(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n"),
                    None,
                )
            }
        }
    }
}

impl App {
    /// `GET /crl/<name>.crl`: the current DER CRL.
    fn crl(&self, method: &Method, name: &str) -> Response<Bytes> {
        let Some(publisher) = self.revocation.as_ref().and_then(|s| s.crls.get(name)) else {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        };
        if !matches!(*method, Method::GET | Method::HEAD) {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match publisher.current() {
            Some(published) => typed(StatusCode::OK, media::CRL, published.der),
            None => plain(StatusCode::SERVICE_UNAVAILABLE, "no CRL yet\n"),
        }
    }

    /// `/ocsp`: POST with the DER request as body, or GET `/ocsp/<base64>` (RFC 6960
    /// Appendix A.1). An unreadable request is a `malformedRequest` OCSPResponse (HTTP 200).
    async fn ocsp(&self, request: Request<Bytes>) -> Response<Bytes> {
        let Some(services) = self.revocation.as_ref() else {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        };
        let der = match *request.method() {
            Method::POST => request.into_body().to_vec(),
            Method::GET => request::ocsp_get_request(request.uri().path()).unwrap_or_default(),
            _ => return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        };
        let Ok(_admitted) = self.admission.try_acquire() else {
            let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "busy; retry\n");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return response;
        };
        let Ok(_running) = self.crypto.acquire().await else {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        };
        let responder = Arc::clone(&services.ocsp);
        let job = tokio::task::spawn_blocking(move || responder.answer(&der, SystemTime::now()));
        match job.await {
            Ok(body) => {
                tracing::info!(
                    operation = "OCSP",
                    status = crate::ocsp::status_name(&body),
                    "request"
                );
                typed(StatusCode::OK, media::OCSP_RESPONSE, Bytes::from(body))
            }
            Err(e) => {
                tracing::error!(error = %e, "OCSP task failed");
                plain(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n")
            }
        }
    }
}

fn pki_response(reply: PkiReply) -> (Response<Bytes>, Option<Summary>) {
    match reply {
        PkiReply::CertRep { der, summary } => (
            typed(StatusCode::OK, media::PKI_MESSAGE, Bytes::from(der)),
            Some(summary),
        ),
        PkiReply::Unreadable(reason) => {
            let summary = Summary {
                outcome: "unreadable",
                detail: reason,
                ..Summary::default()
            };
            (
                plain(StatusCode::BAD_REQUEST, "the pkiMessage cannot be read\n"),
                Some(summary),
            )
        }
        PkiReply::Unavailable(reason) => {
            tracing::error!(detail = %reason, "PKIOperation cannot be answered");
            let summary = Summary {
                outcome: "unavailable",
                detail: reason,
                ..Summary::default()
            };
            // A key that cannot be reached now (a PKCS#11 token that went away) comes back by
            // itself: tell the client when to retry, as for overload.
            let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            (response, Some(summary))
        }
    }
}

/// One line per SCEP request (issue 3 item 8): operation, transactionID, template, outcome,
/// failInfo. Never the challenge, never key material.
fn log_request(
    operation: Operation,
    route: &str,
    status: StatusCode,
    summary: Option<&Summary>,
    started: Instant,
) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let Some(summary) = summary else {
        tracing::info!(
            operation = operation.as_str(),
            template = route,
            status = status.as_u16(),
            elapsed_ms,
            "request"
        );
        return;
    };
    let message_type = summary
        .message_type
        .map(|m| m.to_string())
        .unwrap_or_default();
    let fail_info = summary.fail_info.map(|f| f.to_string()).unwrap_or_default();
    let template = if summary.template.is_empty() {
        route
    } else {
        summary.template.as_str()
    };
    tracing::info!(
        operation = operation.as_str(),
        message_type,
        transaction_id = %summary.transaction_id,
        template,
        status = status.as_u16(),
        outcome = summary.outcome,
        fail_info,
        serial = summary.serial.as_deref().unwrap_or(""),
        replayed = summary.replayed,
        detail = %summary.detail,
        elapsed_ms,
        "request"
    );
}

fn typed(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// The GET PKIOperation `message`: from the query, or, when the query has none, from the
/// header `http::long_uri` moves an over-long one into (percent-decoded the same way).
fn get_message(from_query: Option<String>, request: &Request<Bytes>) -> Option<String> {
    from_query.or_else(|| {
        let raw = request
            .headers()
            .get(crate::http::long_uri::MESSAGE_HEADER)?;
        let raw = String::from_utf8_lossy(raw.as_bytes());
        Some(
            percent_encoding::percent_decode_str(&raw)
                .decode_utf8_lossy()
                .into_owned(),
        )
    })
}

fn plain(status: StatusCode, text: &'static str) -> Response<Bytes> {
    typed(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

/// GetCACaps from what this configuration really does (RFC 8894 §3.5.2): AES (128/192/256),
/// 3DES, the SHA digests with keywords, POST. `SCEPStandard` implies AES, POSTPKIOperation and
/// SHA-256, which are also listed for clients that only read explicit keywords (Apple).
/// `GetNextCACert` only while a next CA is prepared.
fn capabilities(next_ca: bool) -> String {
    let mut caps = vec!["POSTPKIOperation", "AES", "DES3", "Renewal"];
    if next_ca {
        caps.push("GetNextCACert");
    }
    caps.extend(
        crate::scep::DigestAlg::ALL
            .iter()
            .filter_map(|d| d.caps_keyword()),
    );
    caps.push("SCEPStandard");
    caps.join("\n") + "\n"
}

impl App {
    /// GetNextCACert: 404 (and not advertised) unless a next CA is prepared and not yet
    /// in service.
    fn next_ca_cert(&self) -> Response<Bytes> {
        match self.offered_next_ca() {
            Some(body) => typed(StatusCode::OK, media::NEXT_CA_CERT, body.clone()),
            None => plain(StatusCode::NOT_FOUND, "no next CA certificate\n"),
        }
    }
}

/// GetCACert: with RA certificates, as NDES, a certs-only PKCS#7 of the CA chain plus the RA
/// signing and encryption certificates; without, the CA certificate alone.
/// Only the current encryption certificate is published: grace decrypters are not.
fn ca_cert_response(enroller: &Enroller) -> Result<(Bytes, &'static str), AppError> {
    ca_cert_body(enroller.ca().chain(), &enroller.ra())
}

fn ca_cert_body(chain: &[Vec<u8>], ra: &RaIdentity) -> Result<(Bytes, &'static str), AppError> {
    if !ra.has_ra_certificates {
        let ca = chain
            .first()
            .ok_or_else(|| AppError("the CA backend has no certificate".into()))?;
        return Ok((Bytes::from(ca.clone()), media::CA_CERT));
    }
    let mut certs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    certs.push(&ra.signer.cert_der);
    certs.extend(ra.current_decrypter().map(|d| d.cert_der.as_slice()));
    let body = certs_only(&certs).map_err(|e| AppError(format!("GetCACert: {e}")))?;
    Ok((Bytes::from(body), media::CA_RA_CERT))
}

impl crate::http::server::Handler for App {
    fn call(
        &self,
        request: Request<Bytes>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Bytes>> + Send + '_>> {
        Box::pin(self.handle(request))
    }
}
