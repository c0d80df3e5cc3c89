//! The connector outbox: events (certificate issued, request failed, certificate revoked)
//! written in the same commit as the state change that caused them, and delivered later by
//! the connector worker (`crate::connector::worker`), at least once, oldest first.
//!
//! # Stored format (sled)
//!
//! | tree | key | value |
//! |---|---|---|
//! | `outbox` | `u64` BE sequence number (monotonic, never reused) | JSON [`OutboxEntry`] without `seq` |
//! | `outbox_meta` | `next_seq`, `count` | `u64` BE |
//!
//! The count lives beside the events and changes in the same transaction, so the bound
//! ([`NewEvent::capacity`]) is exact under concurrency: a full outbox refuses the state change
//! ([`super::StoreError::OutboxFull`]) rather than dropping an event.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::StoreError;

/// sled tree of the events.
pub(super) const TREE: &str = "outbox";
/// sled tree of the sequence counter and the number of events.
pub(super) const META_TREE: &str = "outbox_meta";
const NEXT_SEQ: &[u8] = b"next_seq";
const COUNT: &[u8] = b"count";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A certificate was issued (and stored).
    Issued,
    /// A request failed after its transaction began.
    Failed,
    /// A certificate was revoked.
    Revoked,
}

impl EventKind {
    /// `issued`, `failed` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Failed => "failed",
            Self::Revoked => "revoked",
        }
    }
}

/// One connector event. Its `id` is random (128 bits, hex) and stays the same across
/// retries, so a receiver can drop duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Random 128-bit id, 32 lowercase hex digits.
    pub id: String,
    /// The connector that delivers it: `intune` or `webhook`.
    pub connector: String,
    /// What happened.
    pub kind: EventKind,
    /// The SCEP transactionID (empty for a revocation of a certificate without one).
    pub transaction_id: String,
    /// The template.
    pub template: String,
    /// The certificate's serial, uppercase hex.
    #[serde(default)]
    pub serial: Option<String>,
    /// Why: a policy denial reason (`SubjectNameMismatch`), an Intune code, an RFC 5280
    /// revocation reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// More detail for humans (never a secret).
    #[serde(default)]
    pub detail: Option<String>,
    /// Who revoked (revocations).
    #[serde(default)]
    pub by: Option<String>,
    /// When it happened, Unix seconds.
    pub time: u64,
    /// The PKCS#10 request, base64 DER (Intune's notifications carry it).
    #[serde(default)]
    pub csr: Option<String>,
    /// The certificate, base64 DER (issued events).
    #[serde(default)]
    pub certificate: Option<String>,
}

/// An event to write together with a state change, and the outbox's bound.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event.
    pub event: Event,
    /// The most events the outbox may hold; at this many the state change is refused.
    pub capacity: usize,
    /// The worker's first attempt not before this (Unix milliseconds; 0: at once), while a
    /// synchronous delivery is under way.
    pub not_before_ms: u64,
}

/// An event waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Position in the outbox (monotonic).
    #[serde(skip)]
    pub seq: u64,
    /// The event.
    pub event: Event,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// Not before this time, Unix milliseconds (0: at once).
    pub next_try_ms: u64,
    /// The last delivery error.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl OutboxEntry {
    pub(super) fn fresh(seq: u64, event: Event) -> Self {
        Self {
            seq,
            event,
            attempts: 0,
            next_try_ms: 0,
            last_error: None,
        }
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::Encode(e.to_string()))
    }

    pub(super) fn decode(seq: u64, bytes: &[u8]) -> Result<Self, StoreError> {
        let mut entry: Self = serde_json::from_slice(bytes)
            .map_err(|e| super::record::corrupt(TREE, e.to_string()))?;
        entry.seq = seq;
        Ok(entry)
    }

    /// Records a failed attempt.
    pub(super) fn failed(&mut self, next_try_ms: u64, error: &str) {
        self.attempts = self.attempts.saturating_add(1);
        self.next_try_ms = next_try_ms;
        self.last_error = Some(truncate(error, 512));
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

pub(super) fn seq_from_key(key: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| super::record::corrupt(TREE, "key is not 8 bytes"))
}

type TxError = ConflictableTransactionError<StoreError>;

fn read_u64(meta: &TransactionalTree, key: &[u8]) -> Result<u64, TxError> {
    match meta.get(key)? {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| {
                ConflictableTransactionError::Abort(super::record::corrupt(
                    META_TREE,
                    "counter is not 8 bytes",
                ))
            }),
    }
}

/// Appends `new` inside a sled transaction over the two outbox trees, or aborts with
/// [`StoreError::OutboxFull`].
pub(super) fn push(
    outbox: &TransactionalTree,
    meta: &TransactionalTree,
    new: &NewEvent,
) -> Result<(), TxError> {
    let count = read_u64(meta, COUNT)?;
    if count >= new.capacity as u64 {
        return Err(ConflictableTransactionError::Abort(
            StoreError::OutboxFull {
                capacity: new.capacity,
            },
        ));
    }
    let seq = read_u64(meta, NEXT_SEQ)?.max(1);
    let mut entry = OutboxEntry::fresh(seq, new.event.clone());
    entry.next_try_ms = new.not_before_ms;
    let value = entry
        .encode()
        .map_err(ConflictableTransactionError::Abort)?;
    outbox.insert(&seq.to_be_bytes()[..], value)?;
    meta.insert(NEXT_SEQ, &(seq + 1).to_be_bytes()[..])?;
    meta.insert(COUNT, &(count + 1).to_be_bytes()[..])?;
    Ok(())
}

/// Removes event `seq` inside a sled transaction; whether it was there.
pub(super) fn remove(
    outbox: &TransactionalTree,
    meta: &TransactionalTree,
    seq: u64,
) -> Result<bool, TxError> {
    if outbox.remove(&seq.to_be_bytes()[..])?.is_none() {
        return Ok(false);
    }
    let count = read_u64(meta, COUNT)?;
    meta.insert(COUNT, &count.saturating_sub(1).to_be_bytes()[..])?;
    Ok(true)
}

/// The number of events, as counted in the meta tree.
pub(super) fn count(meta: &sled::Tree) -> Result<usize, StoreError> {
    match meta.get(COUNT)? {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
            .map(|b| usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX))
            .map_err(|_| super::record::corrupt(META_TREE, "counter is not 8 bytes")),
    }
}

/// A random 128-bit event id, 32 lowercase hex digits.
pub fn new_event_id() -> String {
    let mut bytes = [0u8; 16];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        // openssl's CSPRNG does not fail once initialised; fall back to time and a counter
        // rather than panic (the id must only be unique, not secret).
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        bytes = (nanos ^ (u128::from(n) << 64)).to_be_bytes();
    }
    hex::encode(bytes)
}
