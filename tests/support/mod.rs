//! A scepd instance without sockets, and a SCEP client that talks to it through
//! `App::handle`: the black-box harness of the enrollment tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use openssl::pkey::{PKey, Private};
use scepd::cli::init::{create, InitArgs};
use scepd::scep::client::{
    self, CertRepView, ClientIdentity, PreparedRequest, RequestOptions, Tamper,
};
use scepd::scep::csr::{build_csr, CsrSpec};
use scepd::scep::{ContentCipher, DigestAlg, KeyTransport, MessageType};
use scepd::App;

/// The challenge every test instance is created with.
pub const CHALLENGE: &str = "correct horse battery staple";

/// A scepd instance in a temporary directory.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub app: App,
    /// GetCACert output, in order.
    pub ca_certs: Vec<Vec<u8>>,
    /// RA encryption certificate (or the CA).
    pub recipient: Vec<u8>,
    /// RA signing certificate (or the CA).
    pub reply_signer: Vec<u8>,
}

/// How to set an instance up.
pub struct Setup {
    pub ca_key: &'static str,
    pub legacy: bool,
    /// Extra template files: (name, TOML).
    pub templates: Vec<(&'static str, String)>,
    /// Remove `[ra]` from scepd.toml: the CA key decrypts and signs.
    pub without_ra: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            ca_key: "rsa2048",
            legacy: false,
            templates: Vec::new(),
            without_ra: false,
        }
    }
}

pub fn init_dir(dir: &Path, setup: &Setup) -> PathBuf {
    let args = InitArgs {
        dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        challenge_mode: scepd::cli::init::ChallengeMode::Static,
        static_challenge: Some(CHALLENGE.into()),
        ca_key: setup.ca_key.into(),
        ca_subject: "CN=scepd test CA,O=scepd tests".into(),
        tls_name: None,
        tls_listen: "127.0.0.1:0".parse().unwrap(),
        legacy_algorithms: setup.legacy,
        pkcs11: Default::default(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ca_source: Default::default(),
    };
    let created = create(&args).expect("init");
    for (name, text) in &setup.templates {
        std::fs::write(dir.join("templates").join(format!("{name}.toml")), text).unwrap();
    }
    if setup.without_ra {
        let config = std::fs::read_to_string(&created.config).unwrap();
        let start = config.find("[ra]").unwrap();
        let end = config[start..].find("[store]").unwrap() + start;
        std::fs::write(
            &created.config,
            format!("{}{}", &config[..start], &config[end..]),
        )
        .unwrap();
    }
    created.config
}

impl Instance {
    pub fn new(setup: Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = init_dir(dir.path(), &setup);
        let loaded = scepd::cli::serve::load(&config).unwrap_or_else(|e| panic!("load: {e:?}"));
        let app = std::sync::Arc::try_unwrap(loaded.app)
            .ok()
            .expect("sole owner");
        let mut instance = Self {
            dir,
            app,
            ca_certs: Vec::new(),
            recipient: Vec::new(),
            reply_signer: Vec::new(),
        };
        let body = instance.get("/scep", "operation=GetCACert").into_body();
        instance.ca_certs = client::parse_ca_certs(&body).unwrap();
        let (recipient, signer) = client::select_ra_certs(&instance.ca_certs).unwrap();
        instance.recipient = recipient;
        instance.reply_signer = signer;
        instance
    }

    pub fn default_instance() -> Self {
        Self::new(Setup::default())
    }

    pub fn ca_cert(&self) -> &[u8] {
        self.ca_certs
            .iter()
            .find(|c| is_ca(c))
            .expect("a CA certificate")
    }

    pub fn request(&self, method: Method, uri: &str, body: Vec<u8>) -> Response<Bytes> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Bytes::from(body))
            .unwrap();
        runtime().block_on(self.app.handle(request))
    }

    pub fn get(&self, path: &str, query: &str) -> Response<Bytes> {
        self.request(Method::GET, &format!("{path}?{query}"), Vec::new())
    }

    pub fn post(&self, path: &str, body: Vec<u8>) -> Response<Bytes> {
        self.request(
            Method::POST,
            &format!("{path}?operation=PKIOperation"),
            body,
        )
    }

    /// Sends a prepared request and reads the CertRep, checking signer, nonce and ID.
    pub fn exchange(
        &self,
        path: &str,
        via: Via,
        request: &PreparedRequest,
        signer: &ClientIdentity,
    ) -> CertRepView {
        let response = match via {
            Via::Post => self.post(path, request.der.clone()),
            Via::Get => {
                let b64 = base64_encode(&request.der);
                let escaped =
                    percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC)
                        .to_string();
                self.get(path, &format!("operation=PKIOperation&message={escaped}"))
            }
        };
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "body: {:?}",
            response.body()
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/x-pki-message"
        );
        client::read_cert_rep(response.body(), request, &self.reply_signer, signer)
            .expect("a valid CertRep")
    }
}

pub enum Via {
    Post,
    Get,
}

pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

pub fn is_ca(der: &[u8]) -> bool {
    let cert = openssl::x509::X509::from_der(der).unwrap();
    let text = String::from_utf8_lossy(&cert.to_text().unwrap()).into_owned();
    text.contains("CA:TRUE")
}

pub fn rsa_key(bits: u32) -> PKey<Private> {
    PKey::from_rsa(openssl::rsa::Rsa::generate(bits).unwrap()).unwrap()
}

pub fn ec_key(nid: openssl::nid::Nid) -> PKey<Private> {
    let group = openssl::ec::EcGroup::from_curve_name(nid).unwrap();
    PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
}

/// A device: its key, its self-signed signer (a throwaway RSA one for EC keys, as Apple does).
pub struct Device {
    pub key: PKey<Private>,
    pub signer: ClientIdentity,
}

impl Device {
    pub fn rsa(bits: u32) -> Self {
        let key = rsa_key(bits);
        let signer = ClientIdentity::self_signed(key.clone(), "device signer").unwrap();
        Self { key, signer }
    }

    pub fn ec(nid: openssl::nid::Nid) -> Self {
        let key = ec_key(nid);
        let signer = ClientIdentity::self_signed(key.clone(), "device signer").unwrap();
        Self { key, signer }
    }

    pub fn csr(&self, spec: &CsrSpec<'_>) -> Vec<u8> {
        build_csr(&self.key, spec).unwrap()
    }

    pub fn simple_csr(&self, cn: &str, challenge: &str) -> Vec<u8> {
        let subject = format!("CN={cn},O=scepd tests");
        self.csr(&CsrSpec {
            subject: &subject,
            challenge: Some(challenge),
            ..CsrSpec::default()
        })
    }
}

pub fn options(transaction_id: &str) -> RequestOptions {
    RequestOptions {
        message_type: MessageType::PkcsReq,
        transaction_id: transaction_id.into(),
        digest: DigestAlg::Sha256,
        cipher: ContentCipher::Aes256Cbc,
        key_transport: KeyTransport::RsaPkcs1v15,
        recipient_by_ski: false,
    }
}

pub fn prepare(
    instance: &Instance,
    device: &Device,
    csr: &[u8],
    opts: &RequestOptions,
) -> PreparedRequest {
    client::build_request(csr, &instance.recipient, &device.signer, opts).unwrap()
}

pub fn prepare_tampered(
    instance: &Instance,
    device: &Device,
    csr: &[u8],
    opts: &RequestOptions,
    tamper: Tamper,
) -> PreparedRequest {
    client::build_request_with(csr, &[&instance.recipient], &device.signer, opts, tamper).unwrap()
}

/// `openssl verify` of a certificate against the instance's CA: the independent check.
pub fn openssl_verify(ca_der: &[u8], cert_der: &[u8]) -> bool {
    let ca = openssl::x509::X509::from_der(ca_der).unwrap();
    let cert = openssl::x509::X509::from_der(cert_der).unwrap();
    let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
    store.add_cert(ca).unwrap();
    let store = store.build();
    let chain = openssl::stack::Stack::new().unwrap();
    let mut ctx = openssl::x509::X509StoreContext::new().unwrap();
    ctx.init(&store, &cert, &chain, |c| c.verify_cert())
        .unwrap()
}
