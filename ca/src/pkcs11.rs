//! Keys in a PKCS#11 token (an HSM, SoftHSM2), through the `cryptoki` crate.
//!
//! A [`Token`] is one token of one module, found by its label and logged in once (PKCS#11
//! login state is per application and token: every session of the process shares it). It
//! keeps a pool of idle sessions: an operation takes one (a mutex held for a `pop`), runs on
//! it and gives it back, so concurrent enrollments sign and decrypt on as many sessions as
//! there are crypto threads. Key handles are looked up once per connection and cached.
//!
//! A token that goes away (the module answers `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`,
//! `CKR_SESSION_HANDLE_INVALID`...) turns the connection *broken*: the operation fails with
//! [`KeyOpError::Unavailable`] at once, idle sessions are dropped, and the next operation
//! (at most one attempt per [`RETRY_INTERVAL`]) finds the token again, opens sessions, logs in
//! and finds the keys. When the token is not even listed any more, the module is finalised and
//! initialised again (some modules, SoftHSM2 among them, list tokens only at initialisation);
//! operations hold a read lock that this takes for writing, so nothing runs inside the module
//! while it is re-initialised.
//!
//! [`TokenKey`] implements [`PrivateKeyOps`]: RSA PKCS#1 v1.5 signatures (`CKM_RSA_PKCS`
//! over a DigestInfo computed here, which every token supports), ECDSA (`CKM_ECDSA` over the
//! hash, the raw `r || s` re-encoded as DER), and RSA decryption with `CKM_RSA_PKCS` or
//! `CKM_RSA_PKCS_OAEP`. A mechanism the token refuses at `C_DecryptInit` (before it sees the
//! ciphertext: SoftHSM2 2.6 does OAEP with SHA-1 only) is [`KeyOpError::Unsupported`]; every
//! error of `C_Decrypt` itself is the same [`KeyOpError::Failed`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;

use crate::keyops::{HashAlg, KeyKind, KeyOpError, PrivateKeyOps, RsaDecryption};

pub use cryptoki;

/// How long after a failed attempt to reach the token the next one is made; meanwhile
/// operations fail at once.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Which token to use and how to log in.
#[derive(Clone)]
pub struct TokenConfig {
    /// The module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token label (`softhsm2-util --init-token --label`).
    pub label: String,
    /// The user PIN.
    pub pin: AuthPin,
    /// Idle sessions kept open for reuse (the crypto threads); more are opened when needed.
    pub max_idle_sessions: usize,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("module", &self.module)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A connection to the token: the slot it was found in, the login session and the key
/// handles found so far.
struct Live {
    ctx: Pkcs11,
    slot: Slot,
    generation: u64,
    epoch: u64,
    handles: RwLock<HashMap<String, ObjectHandle>>,
    /// Keeps the login alive: PKCS#11 logs out when the last session closes.
    _login: Mutex<Session>,
}

struct Idle {
    session: Session,
    generation: u64,
    epoch: u64,
}

/// One logged-in token with a pool of sessions. Share it as `Arc<Token>`.
pub struct Token {
    config: TokenConfig,
    /// The module context (`None` until first loaded or after a failed re-initialisation),
    /// and the number of times it was initialised.
    ctx: Mutex<(Option<Pkcs11>, u64)>,
    live: Mutex<Option<Arc<Live>>>,
    idle: Mutex<Vec<Idle>>,
    generation: AtomicU64,
    last_failure: Mutex<Option<Instant>>,
    /// Held for reading around every call into the module; for writing while it is
    /// finalised and initialised again.
    gate: RwLock<()>,
}

/// What went wrong inside [`Token::with_key`].
enum OpError {
    /// The token cannot be reached.
    Unavailable(String),
    /// The operation itself failed with this return value in this function.
    Call(RvError, Function),
    /// Anything else cryptoki reports.
    Other(String),
}

impl From<CkError> for OpError {
    fn from(e: CkError) -> Self {
        match e {
            CkError::Pkcs11(rv, function) => Self::Call(rv, function),
            other => Self::Other(other.to_string()),
        }
    }
}

/// Return values that mean the token, the session or the login is gone (not the input).
fn is_disconnect(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::SlotIdInvalid
            | RvError::CryptokiNotInitialized
    )
}

fn ck(what: &str, e: CkError) -> String {
    format!("{what}: {e}")
}

impl Token {
    /// Loads the module, finds the token and logs in. Fails when any of that fails (at
    /// start-up a missing token is a configuration error, not something to wait for).
    pub fn open(config: TokenConfig) -> Result<Arc<Self>, KeyOpError> {
        let token = Arc::new(Self {
            config,
            ctx: Mutex::new((None, 0)),
            live: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            gate: RwLock::new(()),
        });
        token.connection(false)?;
        Ok(token)
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.config.label
    }

    /// The module path.
    pub fn module(&self) -> &Path {
        &self.config.module
    }

    fn context(&self, reinitialise: bool) -> Result<(Pkcs11, u64), String> {
        // Nothing runs inside the module while it is finalised and initialised again (the
        // gate, taken before the context lock: operations holding the gate for reading take
        // the context lock), and sessions of the old context are forgotten, not closed, when
        // they come back.
        let _exclusive = if reinitialise {
            Some(self.gate.write().map_err(|_| "poisoned lock".to_string())?)
        } else {
            None
        };
        let mut guard = self.ctx.lock().map_err(|_| "poisoned lock".to_string())?;
        if reinitialise {
            if let Some(old) = guard.0.take() {
                let _ = old.finalize();
            }
        }
        if let Some(ctx) = &guard.0 {
            return Ok((ctx.clone(), guard.1));
        }
        let ctx = Pkcs11::new(&self.config.module)
            .map_err(|e| ck(&format!("loading {}", self.config.module.display()), e))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(ck("C_Initialize", e)),
        }
        guard.1 += 1;
        guard.0 = Some(ctx.clone());
        Ok((ctx, guard.1))
    }

    fn find_slot(&self, ctx: &Pkcs11) -> Result<Option<Slot>, String> {
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| ck("C_GetSlotList", e))?;
        for slot in slots {
            if let Ok(info) = ctx.get_token_info(slot) {
                if info.label().trim_end() == self.config.label {
                    return Ok(Some(slot));
                }
            }
        }
        Ok(None)
    }

    fn connect(&self) -> Result<Arc<Live>, String> {
        let (mut ctx, mut epoch) = self.context(false)?;
        let mut slot = self.find_slot(&ctx)?;
        if slot.is_none() {
            (ctx, epoch) = self.context(true)?;
            slot = self.find_slot(&ctx)?;
        }
        let slot = slot.ok_or_else(|| {
            format!(
                "no token labelled {:?} in {}",
                self.config.label,
                self.config.module.display()
            )
        })?;
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| ck("C_OpenSession", e))?;
        match session.login(UserType::User, Some(&self.config.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(format!(
                    "C_Login to token {:?}: the PIN is incorrect",
                    self.config.label
                ))
            }
            Err(e) => return Err(ck("C_Login", e)),
        }
        Ok(Arc::new(Live {
            ctx,
            slot,
            generation: self.generation.load(Ordering::SeqCst),
            epoch,
            handles: RwLock::new(HashMap::new()),
            _login: Mutex::new(session),
        }))
    }

    /// The live connection, connecting when there is none (at most once per
    /// [`RETRY_INTERVAL`] after a failure, unless `force`).
    fn connection(&self, force: bool) -> Result<Arc<Live>, KeyOpError> {
        let mut live = self
            .live
            .lock()
            .map_err(|_| KeyOpError::Unavailable("poisoned lock".into()))?;
        if let Some(current) = live.as_ref() {
            return Ok(Arc::clone(current));
        }
        let mut last_failure = self
            .last_failure
            .lock()
            .map_err(|_| KeyOpError::Unavailable("poisoned lock".into()))?;
        if !force && last_failure.is_some_and(|at| at.elapsed() < RETRY_INTERVAL) {
            return Err(KeyOpError::Unavailable(format!(
                "token {:?} is not available (retrying)",
                self.config.label
            )));
        }
        match self.connect() {
            Ok(connected) => {
                if connected.generation > 0 {
                    tracing::info!(token = %self.config.label, "PKCS#11 token back in service");
                }
                *last_failure = None;
                *live = Some(Arc::clone(&connected));
                Ok(connected)
            }
            Err(reason) => {
                *last_failure = Some(Instant::now());
                Err(KeyOpError::Unavailable(reason))
            }
        }
    }

    /// Forgets the connection of `generation` (no-op if a newer one exists).
    fn mark_broken(&self, generation: u64, reason: &str) {
        if self
            .generation
            .compare_exchange(
                generation,
                generation + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
        {
            return;
        }
        tracing::warn!(
            token = %self.config.label,
            %reason,
            "PKCS#11 token lost; its sessions are dropped and the next operation reconnects"
        );
        if let Ok(mut live) = self.live.lock() {
            *live = None;
        }
        if let Ok(mut last_failure) = self.last_failure.lock() {
            *last_failure = None;
        }
        let stale = self
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        for idle in stale {
            self.discard(idle.session, idle.epoch);
        }
    }

    /// Closes a session of the current module context; forgets one of an earlier context
    /// (its handle may have been given to a new session since).
    fn discard(&self, session: Session, epoch: u64) {
        let current = self.ctx.lock().map(|guard| guard.1).unwrap_or(0);
        if epoch == current {
            drop(session);
        } else {
            std::mem::forget(session);
        }
    }

    fn checkout(&self, live: &Live) -> Result<Session, OpError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(idle) = pooled {
            if idle.generation == live.generation {
                return Ok(idle.session);
            }
            self.discard(idle.session, idle.epoch);
        }
        Ok(live.ctx.open_ro_session(live.slot)?)
    }

    fn checkin(&self, live: &Live, session: Session) {
        if self.generation.load(Ordering::SeqCst) != live.generation {
            self.discard(session, live.epoch);
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.config.max_idle_sessions.max(1) {
                idle.push(Idle {
                    session,
                    generation: live.generation,
                    epoch: live.epoch,
                });
                return;
            }
        }
        self.discard(session, live.epoch);
    }

    fn handle(&self, live: &Live, session: &Session, label: &str) -> Result<ObjectHandle, OpError> {
        if let Some(handle) = live.handles.read().ok().and_then(|h| h.get(label).copied()) {
            return Ok(handle);
        }
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        let handle = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(OpError::Other(format!(
                    "no private key labelled {label:?} in token {:?}",
                    self.config.label
                )))
            }
            _ => {
                return Err(OpError::Other(format!(
                    "several private keys labelled {label:?} in token {:?}",
                    self.config.label
                )))
            }
        };
        if let Ok(mut handles) = live.handles.write() {
            handles.insert(label.to_owned(), handle);
        }
        Ok(handle)
    }

    /// Runs `op` on a pooled session with the handle of the private key `label`.
    fn with_key<T>(
        &self,
        label: &str,
        op: impl FnOnce(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, OpError> {
        let live = self.connection(false).map_err(|e| match e {
            KeyOpError::Unavailable(reason) => OpError::Unavailable(reason),
            other => OpError::Unavailable(other.to_string()),
        })?;
        let _shared = self
            .gate
            .read()
            .map_err(|_| OpError::Unavailable("poisoned lock".into()))?;
        let result = self.checkout(&live).and_then(|session| {
            let result = self
                .handle(&live, &session, label)
                .and_then(|handle| op(&session, handle).map_err(OpError::from));
            match &result {
                Err(OpError::Call(rv, _)) if is_disconnect(*rv) => {
                    self.discard(session, live.epoch);
                }
                _ => self.checkin(&live, session),
            }
            result
        });
        if let Err(OpError::Call(rv, function)) = &result {
            if is_disconnect(*rv) {
                drop(_shared);
                self.mark_broken(live.generation, &format!("{function}: {rv}"));
                return Err(OpError::Unavailable(format!(
                    "token {:?}: {function}: {rv}",
                    self.config.label
                )));
            }
        }
        result
    }

    /// Runs `op` on a read-write session logged in as the user (key generation at `init`).
    pub fn with_rw_session<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, KeyOpError>,
    ) -> Result<T, KeyOpError> {
        let live = self.connection(true)?;
        let _shared = self
            .gate
            .read()
            .map_err(|_| KeyOpError::Unavailable("poisoned lock".into()))?;
        let session = live
            .ctx
            .open_rw_session(live.slot)
            .map_err(|e| KeyOpError::Unavailable(ck("C_OpenSession (read-write)", e)))?;
        op(&session)
    }

    /// The private key `label`, whose public half must be `public` (from its certificate):
    /// checked by a test signature, which also proves that the PIN and the key work.
    pub fn key(
        self: &Arc<Self>,
        label: &str,
        public: PKey<Public>,
    ) -> Result<TokenKey, KeyOpError> {
        let key = TokenKey {
            token: Arc::clone(self),
            label: label.to_owned(),
            kind: kind_of(&public),
            public,
        };
        let matches = match key.probe_decryption() {
            Err(KeyOpError::Unsupported(_)) => key.probe_signature()?,
            other => other?,
        };
        if !matches {
            return Err(KeyOpError::Unavailable(format!(
                "the key {label:?} in token {:?} does not match its certificate",
                self.config.label
            )));
        }
        Ok(key)
    }
}

fn kind_of(public: &PKey<Public>) -> KeyKind {
    match public.id() {
        Id::RSA => KeyKind::Rsa,
        Id::EC => KeyKind::Ec(public.ec_key().ok().and_then(|k| k.group().curve_name())),
        _ => KeyKind::Other,
    }
}

/// A private key in a token, addressed by its label. Cheap to clone.
#[derive(Clone)]
pub struct TokenKey {
    token: Arc<Token>,
    label: String,
    kind: KeyKind,
    public: PKey<Public>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("token", &self.token.config.label)
            .field("label", &self.label)
            .field("kind", &self.kind)
            .finish()
    }
}

/// DER prefixes of DigestInfo (RFC 8017 §9.2, note 1), to which the hash is appended.
fn digest_info_prefix(hash: HashAlg) -> &'static [u8] {
    match hash {
        HashAlg::Sha1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        HashAlg::Sha224 => &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x04, 0x05, 0x00, 0x04, 0x1c,
        ],
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    }
}

fn oaep_mechanism(hash: HashAlg) -> (MechanismType, PkcsMgfType) {
    match hash {
        HashAlg::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        HashAlg::Sha224 => (MechanismType::SHA224, PkcsMgfType::MGF1_SHA224),
        HashAlg::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        HashAlg::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        HashAlg::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    }
}

impl TokenKey {
    /// Signs a probe and verifies it with the certificate's key.
    fn probe_signature(&self) -> Result<bool, KeyOpError> {
        let probe = b"scepd: does this key match its certificate?";
        let signature = self.sign(HashAlg::Sha256, probe)?;
        Ok(
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &self.public)
                .and_then(|mut v| v.verify_oneshot(&signature, probe))
                .unwrap_or(false),
        )
    }

    /// Encrypts a probe to the certificate's key and decrypts it in the token (RSA keys
    /// that may not sign); `Unsupported` for keys that cannot decrypt.
    fn probe_decryption(&self) -> Result<bool, KeyOpError> {
        let Ok(rsa) = self.public.rsa() else {
            return Err(KeyOpError::Unsupported("not an RSA key".into()));
        };
        let mut probe = [0u8; 32];
        openssl::rand::rand_bytes(&mut probe).map_err(|_| KeyOpError::Failed)?;
        let mut wrapped = vec![0; usize::try_from(rsa.size()).map_err(|_| KeyOpError::Failed)?];
        let len = rsa
            .public_encrypt(&probe, &mut wrapped, openssl::rsa::Padding::PKCS1)
            .map_err(|_| KeyOpError::Failed)?;
        wrapped.truncate(len);
        match self.rsa_decrypt(RsaDecryption::Pkcs1v15, &wrapped) {
            Ok(plain) => Ok(plain == probe),
            Err(KeyOpError::Failed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn where_(&self) -> String {
        format!("token {:?}, key {:?}", self.token.config.label, self.label)
    }

    fn unavailable(&self, e: OpError) -> KeyOpError {
        match e {
            OpError::Unavailable(reason) | OpError::Other(reason) => {
                KeyOpError::Unavailable(format!("{}: {reason}", self.where_()))
            }
            OpError::Call(rv, function) => {
                KeyOpError::Unavailable(format!("{}: {function}: {rv}", self.where_()))
            }
        }
    }

    /// The label of the key in its token.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl PrivateKeyOps for TokenKey {
    fn kind(&self) -> KeyKind {
        self.kind
    }

    fn public_key(&self) -> Result<PKey<Public>, KeyOpError> {
        Ok(self.public.clone())
    }

    fn sign(&self, hash: HashAlg, data: &[u8]) -> Result<Vec<u8>, KeyOpError> {
        let digest =
            openssl::hash::hash(hash.message_digest(), data).map_err(|_| KeyOpError::Failed)?;
        match self.kind {
            KeyKind::Rsa => {
                let mut digest_info = digest_info_prefix(hash).to_vec();
                digest_info.extend_from_slice(&digest);
                self.token
                    .with_key(&self.label, |session, key| {
                        session.sign(&Mechanism::RsaPkcs, key, &digest_info)
                    })
                    .map_err(|e| self.unavailable(e))
            }
            KeyKind::Ec(_) => {
                let raw = self
                    .token
                    .with_key(&self.label, |session, key| {
                        session.sign(&Mechanism::Ecdsa, key, &digest)
                    })
                    .map_err(|e| self.unavailable(e))?;
                ecdsa_raw_to_der(&raw)
            }
            KeyKind::Other => Err(KeyOpError::Unsupported("signing with this key type".into())),
        }
    }

    fn rsa_decrypt(&self, padding: RsaDecryption, data: &[u8]) -> Result<Vec<u8>, KeyOpError> {
        if self.kind != KeyKind::Rsa {
            return Err(KeyOpError::Unsupported(
                "RSA decryption with a non-RSA key".into(),
            ));
        }
        let result = match padding {
            RsaDecryption::Pkcs1v15 => self.token.with_key(&self.label, |session, key| {
                session.decrypt(&Mechanism::RsaPkcs, key, data)
            }),
            RsaDecryption::Oaep(hash) => {
                let (hash_mechanism, mgf) = oaep_mechanism(hash);
                let params = PkcsOaepParams::new(hash_mechanism, mgf, PkcsOaepSource::empty());
                self.token.with_key(&self.label, |session, key| {
                    session.decrypt(&Mechanism::RsaPkcsOaep(params), key, data)
                })
            }
        };
        match result {
            Ok(plain) => Ok(plain),
            // Refused before the token looked at the ciphertext: the algorithm itself.
            Err(OpError::Call(
                RvError::MechanismInvalid
                | RvError::MechanismParamInvalid
                | RvError::ArgumentsBad
                | RvError::KeyTypeInconsistent
                | RvError::KeyFunctionNotPermitted,
                Function::DecryptInit,
            )) => Err(KeyOpError::Unsupported(format!(
                "{}: the token refuses {}",
                self.where_(),
                match padding {
                    RsaDecryption::Pkcs1v15 => "RSAES-PKCS1-v1_5".to_string(),
                    RsaDecryption::Oaep(hash) => format!("RSAES-OAEP with {}", hash.name()),
                }
            ))),
            Err(e @ OpError::Unavailable(_)) => Err(self.unavailable(e)),
            // Whatever C_Decrypt said (bad padding, bad length, anything): one answer.
            Err(_) => Err(KeyOpError::Failed),
        }
    }

    fn location(&self) -> String {
        format!("PKCS#11 {}", self.where_())
    }
}

/// `r || s` (PKCS#11 `CKM_ECDSA`) to a DER Ecdsa-Sig-Value.
fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, KeyOpError> {
    if raw.is_empty() || raw.len() & 1 != 0 {
        return Err(KeyOpError::Failed);
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let to_der = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?.to_der()
    };
    to_der().map_err(|_| KeyOpError::Failed)
}

/// A key to generate in a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKeySpec {
    /// RSA with this modulus size.
    Rsa(u32),
    /// ECDSA on this named curve (P-256 or P-384).
    Ec(Nid),
}

/// What a generated key is for: its private half gets `CKA_SIGN` or `CKA_DECRYPT` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKeyUse {
    /// Signs (CA, RA signing).
    Sign,
    /// Decrypts (RA encryption).
    Decrypt,
}

fn ec_params(curve: Nid) -> Result<Vec<u8>, KeyOpError> {
    // DER OBJECT IDENTIFIER of the named curve (RFC 5480 §2.1.1.1).
    match curve {
        Nid::X9_62_PRIME256V1 => Ok(vec![
            0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
        ]),
        Nid::SECP384R1 => Ok(vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
        other => Err(KeyOpError::Unsupported(format!("curve {other:?}"))),
    }
}

/// Generates a key pair inside the token: the private key with `CKA_TOKEN`, `CKA_PRIVATE`,
/// `CKA_SENSITIVE` true and `CKA_EXTRACTABLE` false (it never leaves the token), labelled
/// `label` (refused if a private key with that label exists). Returns the key.
pub fn generate(
    token: &Arc<Token>,
    label: &str,
    spec: TokenKeySpec,
    usage: TokenKeyUse,
) -> Result<TokenKey, KeyOpError> {
    let id = {
        let mut id = vec![0u8; 16];
        openssl::rand::rand_bytes(&mut id).map_err(|_| KeyOpError::Failed)?;
        id
    };
    let public = token.with_rw_session(|session| {
        let existing = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| KeyOpError::Unavailable(ck("C_FindObjects", e)))?;
        if !existing.is_empty() {
            return Err(KeyOpError::Unsupported(format!(
                "token {:?} already holds a key labelled {label:?}; refusing to add another",
                token.label()
            )));
        }
        let common = |class_private: bool| {
            let mut list = vec![
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ];
            if class_private {
                list.extend([
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(usage == TokenKeyUse::Sign),
                    Attribute::Decrypt(usage == TokenKeyUse::Decrypt),
                ]);
            } else {
                list.extend([
                    Attribute::Private(false),
                    Attribute::Verify(usage == TokenKeyUse::Sign),
                    Attribute::Encrypt(usage == TokenKeyUse::Decrypt),
                ]);
            }
            list
        };
        let mut public_template = common(false);
        let private_template = common(true);
        let mechanism = match spec {
            TokenKeySpec::Rsa(bits) => {
                public_template.extend([
                    Attribute::ModulusBits(u64::from(bits).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ]);
                Mechanism::RsaPkcsKeyPairGen
            }
            TokenKeySpec::Ec(curve) => {
                public_template.push(Attribute::EcParams(ec_params(curve)?));
                Mechanism::EccKeyPairGen
            }
        };
        let (public_handle, _private) = session
            .generate_key_pair(&mechanism, &public_template, &private_template)
            .map_err(|e| KeyOpError::Unavailable(ck("C_GenerateKeyPair", e)))?;
        read_public_key(session, public_handle, spec)
    })?;
    token.key(label, public)
}

fn read_public_key(
    session: &Session,
    handle: ObjectHandle,
    spec: TokenKeySpec,
) -> Result<PKey<Public>, KeyOpError> {
    let bad = |what: &str| KeyOpError::Unavailable(format!("reading the public key: {what}"));
    match spec {
        TokenKeySpec::Rsa(_) => {
            let attributes = session
                .get_attributes(
                    handle,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(|e| bad(&e.to_string()))?;
            let mut modulus = None;
            let mut exponent = None;
            for attribute in attributes {
                match attribute {
                    Attribute::Modulus(n) => modulus = Some(n),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (modulus, exponent) else {
                return Err(bad("no modulus or exponent"));
            };
            BigNum::from_slice(&n)
                .and_then(|n| Ok((n, BigNum::from_slice(&e)?)))
                .and_then(|(n, e)| Rsa::from_public_components(n, e))
                .and_then(PKey::from_rsa)
                .map_err(|e| bad(&e.to_string()))
        }
        TokenKeySpec::Ec(curve) => {
            let attributes = session
                .get_attributes(handle, &[AttributeType::EcPoint])
                .map_err(|e| bad(&e.to_string()))?;
            let point = attributes
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .ok_or_else(|| bad("no EC point"))?;
            // CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 v2.40 §2.3.3);
            // some modules return the bare point.
            let bare = <der::asn1::OctetString as der::Decode>::from_der(&point)
                .map(|octets| octets.into_bytes())
                .unwrap_or(point);
            let group = EcGroup::from_curve_name(curve).map_err(|e| bad(&e.to_string()))?;
            let mut ctx = openssl::bn::BigNumContext::new().map_err(|e| bad(&e.to_string()))?;
            EcPoint::from_bytes(&group, &bare, &mut ctx)
                .and_then(|p| EcKey::from_public_key(&group, &p))
                .and_then(PKey::from_ec_key)
                .map_err(|e| bad(&e.to_string()))
        }
    }
}

/// The protection attributes of a private key, as the token reports them (for `init`'s
/// summary and the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_TOKEN`.
    pub on_token: bool,
    /// Whether the token handed out a secret component (`CKA_PRIVATE_EXPONENT` for RSA,
    /// `CKA_VALUE` for EC) when asked.
    pub secret_readable: bool,
    /// The key type.
    pub key_type: Option<KeyType>,
}

/// Reads the protection attributes of the private key `label`.
pub fn protection(token: &Arc<Token>, label: &str) -> Result<KeyProtection, KeyOpError> {
    token.with_rw_session(|session| {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| KeyOpError::Unavailable(ck("C_FindObjects", e)))?;
        let [handle] = found.as_slice() else {
            return Err(KeyOpError::Unavailable(format!(
                "{} private keys labelled {label:?}",
                found.len()
            )));
        };
        let attributes = session
            .get_attributes(
                *handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Token,
                    AttributeType::KeyType,
                ],
            )
            .map_err(|e| KeyOpError::Unavailable(ck("C_GetAttributeValue", e)))?;
        let mut protection = KeyProtection {
            sensitive: false,
            extractable: true,
            on_token: false,
            secret_readable: false,
            key_type: None,
        };
        for attribute in attributes {
            match attribute {
                Attribute::Sensitive(v) => protection.sensitive = v,
                Attribute::Extractable(v) => protection.extractable = v,
                Attribute::Token(v) => protection.on_token = v,
                Attribute::KeyType(v) => protection.key_type = Some(v),
                _ => {}
            }
        }
        for secret in [
            AttributeType::PrivateExponent,
            AttributeType::Value,
            AttributeType::Prime1,
        ] {
            let readable = session
                .get_attributes(*handle, &[secret])
                .is_ok_and(|values| {
                    values.iter().any(|v| match v {
                        Attribute::PrivateExponent(b)
                        | Attribute::Value(b)
                        | Attribute::Prime1(b) => !b.is_empty(),
                        _ => false,
                    })
                });
            protection.secret_readable |= readable;
        }
        Ok(protection)
    })
}
