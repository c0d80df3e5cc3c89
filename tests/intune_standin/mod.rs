//! Local stand-ins for the connector tests, on 127.0.0.1 only:
//!
//! - [`IntuneStandin`]: the Entra token endpoint, Microsoft Graph discovery and Intune's two
//!   services, following the shared `intune.md` §1-2 request and response shapes. It records
//!   what it received, checks the headers and tokens it is sent, and can answer other codes,
//!   HTTP errors, hang past a timeout, and expire every token it issued.
//! - [`WebhookReceiver`]: records signed webhook deliveries; can be "down" (503).
//!
//! Both are served by [`Server`], a small thread-per-connection HTTP/1.1 server that stops
//! when dropped. Every wait here is bounded.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lowercase names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// An answer.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Wait this long before answering (a timeout on the caller's side).
    pub delay: Duration,
}

impl Answer {
    pub fn json(status: u16, value: Value) -> Self {
        Self {
            status,
            body: serde_json::to_vec(&value).unwrap(),
            delay: Duration::ZERO,
        }
    }
}

type Handler = Arc<dyn Fn(&Received) -> Answer + Send + Sync>;

/// A loopback HTTP server calling `handler` for each request.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(handler: Handler) -> Self {
        Self::start_at(TcpListener::bind("127.0.0.1:0").unwrap(), handler)
    }

    pub fn start_at(listener: TcpListener, handler: Handler) -> Self {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || serve_one(stream, &handler));
            }
        });
        Self { addr, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve_one(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let (received, header_len) = loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = request.parse(&buffer) {
            let headers: HashMap<String, String> = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            break (
                Received {
                    method: request.method.unwrap_or("").to_owned(),
                    path: request.path.unwrap_or("").to_owned(),
                    headers,
                    body: Vec::new(),
                },
                len,
            );
        }
        if buffer.len() > 1 << 20 {
            return;
        }
    };
    let length: usize = received
        .header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_len + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let received = Received {
        body: buffer[header_len..header_len + length].to_vec(),
        ..received
    };
    let answer = handler(&received);
    if !answer.delay.is_zero() {
        std::thread::sleep(answer.delay);
    }
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.status,
        answer.body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&answer.body);
}

/// How the stand-in answers one ScepActions call.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 with this `code` (`Success` or a rejection).
    Code(String),
    /// This HTTP status with Intune's error JSON.
    Status(u16),
    /// Answer `Success`, but only after this long.
    Hang(Duration),
}

pub const SCEP_PATH: &str =
    "/RACerts/ScepRequestValidationFEService/Gateway/StatelessScepRequestValidationService";
pub const PKI_PATH: &str =
    "/RACerts/StatelessPkiConnectorService/Gateway/StatelessPkiConnectorService";
pub const TENANT: &str = "contoso.onmicrosoft.com";
pub const APP_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const INTUNE_SCOPE: &str = "https://api.manage.microsoft.com//.default";

/// What the Intune stand-in knows and saw.
#[derive(Default)]
pub struct IntuneState {
    pub secret: String,
    pub graph_scope: String,
    /// token -> scope, for tokens still valid.
    pub valid_tokens: HashMap<String, String>,
    pub tokens_issued: usize,
    /// Scopes asked for, in order.
    pub token_scopes: Vec<String>,
    pub discovery_calls: usize,
    /// Every request to the two services (ScepActions, revocation), in order.
    pub calls: Vec<Received>,
    /// Answers to validateRequest by transactionId (default Success).
    pub validate: HashMap<String, Behaviour>,
    /// Answers to successNotification by transactionId (default Success).
    pub success: HashMap<String, Behaviour>,
    /// The next N calls with this suffix answer 500.
    pub fail_next: HashMap<String, usize>,
    /// Revocation requests waiting for download.
    pub revocations: VecDeque<Value>,
    pub uploads: Vec<Value>,
    pub base: String,
    /// `expires_in` of new tokens (default 3599).
    pub expires_in: Option<u64>,
}

impl IntuneState {
    fn token_ok(&self, received: &Received, scope: &str) -> bool {
        received
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| self.valid_tokens.get(t))
            .is_some_and(|s| s == scope)
    }
}

/// The Intune stand-in (token endpoint, Graph and the two services on one listener).
pub struct IntuneStandin {
    pub server: Server,
    pub state: Arc<Mutex<IntuneState>>,
}

fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect()
}

fn behave(behaviour: Option<Behaviour>) -> Answer {
    let success = || {
        json!({"code": "Success", "errorDescription": "",
               "@odata.context": "https://fef.msuc02.manage.microsoft.com/RACerts/ScepRequestValidationFEService/Gateway/StatelessScepRequestValidationService/$metadata#microsoft.management.services.scepRequestValidationService.api.scepActionResult"})
    };
    match behaviour {
        None => Answer::json(200, success()),
        Some(Behaviour::Code(code)) => Answer::json(
            200,
            json!({"code": code, "errorDescription": "refused by the stand-in"}),
        ),
        Some(Behaviour::Status(status)) => Answer::json(
            status,
            json!({"error": {"code": "InternalError", "message": "stand-in failure"}}),
        ),
        Some(Behaviour::Hang(delay)) => Answer {
            delay,
            ..Answer::json(200, success())
        },
    }
}

fn handle(state: &Mutex<IntuneState>, r: &Received) -> Answer {
    let mut s = state.lock().unwrap();
    let unauthorized = || {
        Answer::json(
            401,
            json!({"error": {"code": "Unauthorized", "message": "bad token"}}),
        )
    };
    if r.path == format!("/{TENANT}/oauth2/v2.0/token") {
        let f = form(&r.body);
        let content_type = r.header("content-type").unwrap_or("");
        if r.method != "POST"
            || content_type != "application/x-www-form-urlencoded"
            || f.get("grant_type").map(String::as_str) != Some("client_credentials")
            || f.get("client_id").map(String::as_str) != Some(APP_ID)
        {
            return Answer::json(400, json!({"error": "invalid_request"}));
        }
        if f.get("client_secret") != Some(&s.secret) {
            return Answer::json(
                401,
                json!({"error": "invalid_client", "error_description": "AADSTS7000215"}),
            );
        }
        let scope = f.get("scope").cloned().unwrap_or_default();
        s.tokens_issued += 1;
        let token = format!("token-{}", s.tokens_issued);
        s.token_scopes.push(scope.clone());
        s.valid_tokens.insert(token.clone(), scope);
        return Answer::json(
            200,
            json!({"token_type": "Bearer", "expires_in": s.expires_in.unwrap_or(3599), "ext_expires_in": 3599, "access_token": token}),
        );
    }
    if r.path == "/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints" {
        if r.method != "GET" || !s.token_ok(r, &s.graph_scope.clone()) {
            return unauthorized();
        }
        s.discovery_calls += 1;
        let base = s.base.clone();
        return Answer::json(
            200,
            json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals('appId%3D0000000a-0000-0000-c000-000000000000')/endpoints",
                   "value": [
                {"id": "1", "capability": "ScepRequestValidationFEService", "providerId": null,
                 "providerName": "ScepRequestValidationFEService", "providerResourceId": null,
                 "uri": format!("{base}{SCEP_PATH}")},
                {"id": "2", "capability": "PkiConnectorFEService", "providerId": null,
                 "providerName": "PkiConnectorFEService", "providerResourceId": null,
                 "uri": format!("{base}{PKI_PATH}")}
            ]}),
        );
    }
    let (service, suffix) = if let Some(suffix) = r.path.strip_prefix(&format!("{SCEP_PATH}/")) {
        ("scep", suffix.to_owned())
    } else if let Some(suffix) = r.path.strip_prefix(&format!("{PKI_PATH}/")) {
        ("pki", suffix.to_owned())
    } else {
        return Answer::json(404, json!({"error": "no such path"}));
    };
    if !s.token_ok(r, INTUNE_SCOPE) {
        return unauthorized();
    }
    let api_version = if service == "scep" {
        "2018-02-20"
    } else {
        "5019-05-05"
    };
    if r.method != "POST"
        || r.header("api-version") != Some(api_version)
        || r.header("client-request-id").map_or(0, str::len) != 36
        || !r
            .header("content-type")
            .unwrap_or("")
            .starts_with("application/json")
    {
        return Answer::json(
            400,
            json!({"error": {"code": "BadRequest", "message": "headers"}}),
        );
    }
    s.calls.push(r.clone());
    let action = suffix.rsplit('/').next().unwrap_or("").to_owned();
    if let Some(n) = s.fail_next.get_mut(&action) {
        if *n > 0 {
            *n -= 1;
            return behave(Some(Behaviour::Status(500)));
        }
    }
    let body = r.json();
    match suffix.as_str() {
        "ScepActions/validateRequest" => {
            let tx = body["request"]["transactionId"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            behave(s.validate.get(&tx).cloned())
        }
        "ScepActions/successNotification" => {
            let tx = body["notification"]["transactionId"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            behave(s.success.get(&tx).cloned())
        }
        "ScepActions/failureNotification" => behave(None),
        "CertificateAuthorityRequests/downloadRevocationRequests" => {
            let max = body["downloadParameters"]["maxRequests"]
                .as_u64()
                .unwrap_or(0);
            if !(1..=500).contains(&max) {
                return Answer::json(400, json!({"error": {"code": "BadRequest"}}));
            }
            let mut value = Vec::new();
            while value.len() < max as usize {
                match s.revocations.pop_front() {
                    Some(item) => value.push(item),
                    None => break,
                }
            }
            Answer::json(
                200,
                json!({"@odata.context": "https://fef.msuc02.manage.microsoft.com/$metadata#Collection(microsoft.management.services.api.caRevocationRequest)", "value": value}),
            )
        }
        "CertificateAuthorityRequests/uploadRevocationResults" => {
            let results = body["results"].as_array().cloned().unwrap_or_default();
            s.uploads.extend(results);
            Answer::json(200, json!({"@odata.context": "x", "value": true}))
        }
        _ => Answer::json(404, json!({"error": "no such action"})),
    }
}

impl IntuneStandin {
    pub fn start(secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(IntuneState {
            secret: secret.to_owned(),
            graph_scope: format!("{base}/.default"),
            base,
            ..IntuneState::default()
        }));
        let for_handler = Arc::clone(&state);
        let server = Server::start_at(listener, Arc::new(move |r| handle(&for_handler, r)));
        Self { server, state }
    }

    /// `[connector.intune]` pointing at this stand-in (authority and Graph here, the Intune
    /// scope left at Microsoft's default).
    pub fn config(&self, secret_file: &str, extra: &str) -> String {
        let base = self.server.url("/");
        format!(
            "\n[connector.intune]\ntenant = \"{TENANT}\"\napp_id = \"{APP_ID}\"\n\
             client_secret_file = \"{secret_file}\"\nauthority = \"{base}\"\ngraph_url = \"{base}\"\n\
             provider_name = \"scepd-tests/1.0\"\ntimeout_ms = 2000\n\
             success_notification_deadline_ms = 2000\nrevocation_poll_secs = 0\n{extra}\n"
        )
    }

    pub fn calls_to(&self, action: &str) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.path.ends_with(action))
            .cloned()
            .collect()
    }

    /// Every token issued so far stops working (as when a token expires early or the app's
    /// role consent changes): the next call with one gets 401.
    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().valid_tokens.clear();
    }
}

/// A webhook receiver: records deliveries; answers 503 while `down`.
pub struct WebhookReceiver {
    pub server: Server,
    pub seen: Arc<Mutex<Vec<Received>>>,
    pub down: Arc<AtomicBool>,
}

impl WebhookReceiver {
    pub fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (s, d) = (Arc::clone(&seen), Arc::clone(&down));
        let server = Server::start(Arc::new(move |r: &Received| {
            s.lock().unwrap().push(r.clone());
            if d.load(Ordering::SeqCst) {
                Answer::json(503, json!({"error": "down"}))
            } else {
                Answer::json(200, json!({"ok": true}))
            }
        }));
        Self { server, seen, down }
    }

    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

/// Verifies a delivery's `X-Scepd-Signature` as a receiver would (HMAC-SHA256 over
/// `timestamp + "." + body`, compared in constant time).
pub fn signature_valid(key: &[u8], r: &Received) -> bool {
    let Some(timestamp) = r.header("x-scepd-timestamp") else {
        return false;
    };
    let Some(presented) = r
        .header("x-scepd-signature")
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let pkey = openssl::pkey::PKey::hmac(key).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
    signer.update(format!("{timestamp}.").as_bytes()).unwrap();
    signer.update(&r.body).unwrap();
    let expected = signer.sign_to_vec().unwrap();
    expected.len() == presented.len() && openssl::memcmp::eq(&expected, &presented)
}
