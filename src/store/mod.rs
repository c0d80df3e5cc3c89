//! Durable state: transactions, issued certificates, revocations, challenge redemption.
//!
//! [`Store`] is the port; [`SledStore`] the embedded default; [`MemoryStore`] a fake for tests
//! with the same semantics (both run the same test functions, and both keep the same stored
//! record types, so even the rounding of times to whole seconds is identical).
//!
//! # Stored format (sled)
//!
//! Four trees, values are JSON (serde_json) so that a dump is readable and fields can be added
//! with serde defaults; byte strings inside JSON are lowercase hex, times are Unix seconds
//! (sub-second parts are dropped, times before 1970 are stored as 0):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `transactions` | transactionID (UTF-8) | `{message_type, csr_digest, state}`, state one of `in_progress {since}`, `succeeded {serial}`, `failed {fail_info, text, at}` |
//! | `certificates` | serial (bytes) | the certificate record, status included |
//! | `certificates_by_subject` | `u64` BE subject length, subject (UTF-8), serial | empty |
//! | `redeemed_challenges` | one-time id | `u64` BE Unix seconds of `forget_after` |
//! | `otp_passwords` | `u64` BE template length, template (UTF-8), SHA-256 of the password | `u64` BE Unix seconds of its expiry (see `otp`) |
//! | `outbox`, `outbox_meta` | connector events waiting for delivery (see `outbox`) | |

mod group_commit;
mod memory;
mod otp;
mod outbox;
mod pending;
mod record;
mod sled_store;
#[cfg(test)]
mod tests;

pub use memory::MemoryStore;
pub use otp::{OtpIssue, OtpRedeem};
pub use outbox::{new_event_id, Event, EventKind, NewEvent, OutboxEntry};
pub use pending::{DecideOutcome, PendingDecision, PendingRequest, Verdict};
pub use sled_store::SledStore;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// How long an in-progress marker blocks its transactionID. A request that crashed the
/// process (or was killed) leaves its marker behind; after this the ID may be used again.
pub const STALE_IN_PROGRESS_AFTER: Duration = Duration::from_secs(5 * 60);

/// One issued certificate, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// The certificate's serial number (the DER INTEGER's content bytes).
    pub serial: Vec<u8>,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The subject, RFC 4514.
    pub subject: String,
    /// The subject alternative names, `type:value`.
    pub sans: Vec<String>,
    /// The template it was issued under.
    pub template: String,
    /// The SCEP transactionID of the request that obtained it.
    pub transaction_id: String,
    /// notBefore; stored with one-second precision.
    pub not_before: SystemTime,
    /// notAfter; stored with one-second precision.
    pub not_after: SystemTime,
    /// Whether it has been revoked.
    pub status: CertStatus,
}

/// Revocation status of an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStatus {
    /// Not revoked.
    Valid,
    /// Revoked at `at` (one-second precision) for `reason` by `by` (an admin, the connector).
    Revoked {
        /// When it was revoked.
        at: SystemTime,
        /// Why (free text or an RFC 5280 CRLReason name).
        reason: String,
        /// Who revoked it.
        by: String,
    },
}

/// Identity of one enrollment attempt: what makes a retry a retry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey {
    /// The SCEP transactionID (RFC 8894 section 3.2.1.1).
    pub transaction_id: String,
    /// The SCEP messageType (19 PKCSReq, 17 RenewalReq, ...).
    pub message_type: u8,
    /// SHA-256 of the CSR as received.
    pub csr_digest: [u8; 32],
}

/// What [`Store::begin_transaction`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxBegin {
    /// Go ahead: the transaction is now marked in progress with this CSR.
    Fresh,
    /// The same request succeeded before: answer again with the certificate of this serial.
    Replay {
        /// Serial of the certificate issued then.
        serial: Vec<u8>,
    },
    /// The transactionID succeeded, or is in progress, with a different CSR or message type.
    Conflict,
    /// The same request is being processed right now (answer PENDING or ask to retry).
    InProgress,
}

/// What [`Store::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The certificate is now revoked.
    Revoked,
    /// It had been revoked before; the earlier revocation stands and is returned.
    AlreadyRevoked {
        /// When it was revoked.
        at: SystemTime,
        /// Why.
        reason: String,
        /// By whom.
        by: String,
    },
    /// No certificate with this serial was issued here.
    NotFound,
}

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has the store open.
    #[error("store {} is locked by another process", path.display())]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// A certificate with this serial is already stored (hex).
    #[error("a certificate with serial {0} is already stored")]
    DuplicateSerial(String),
    /// The transaction is not in progress with this key, so its outcome cannot be recorded:
    /// `begin_transaction` was not called, another request took it over, or it already ended.
    #[error("transaction {transaction_id:?} is not in progress with this request")]
    NotInProgress {
        /// The transactionID.
        transaction_id: String,
    },
    /// A stored value could not be decoded.
    #[error("corrupt record in {tree}: {detail}")]
    Corrupt {
        /// Which tree.
        tree: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A record could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(String),
    /// The store could not be made durable (fsync failed): nothing may be confirmed.
    #[error("cannot make the store durable: {0}")]
    Durability(String),
    /// The connector outbox holds `capacity` events: the state change that would add one is
    /// refused rather than an event dropped.
    #[error("the connector outbox is full ({capacity} events waiting)")]
    OutboxFull {
        /// The configured bound.
        capacity: usize,
    },
    /// The embedded database failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
}

/// The store port: transactions, certificates, challenge redemption, revocations.
///
/// Every method is atomic on its own; implementations take no global lock on the hot path.
pub trait Store: Send + Sync {
    /// Step 5 of the enrollment cycle: make the transactionID idempotent.
    ///
    /// - `Fresh` when there is no record for this transactionID, or its last attempt failed
    ///   (a failed transactionID may be reused with any CSR), or its in-progress marker is older
    ///   than [`STALE_IN_PROGRESS_AFTER`]; the transaction is then marked in progress with this
    ///   key, atomically.
    /// - `Replay` when it succeeded before with the same CSR digest and message type.
    /// - `Conflict` when it succeeded, or is in progress, with another CSR digest or message
    ///   type.
    /// - `InProgress` when the same request is in progress and not stale.
    fn begin_transaction(&self, key: &TxKey, now: SystemTime) -> Result<TxBegin, StoreError>;

    /// Atomically store the certificate (refusing a duplicate serial with
    /// [`StoreError::DuplicateSerial`]), index it by subject and mark the transaction
    /// succeeded with its serial; then flush to disk before returning, so that the device never
    /// hears SUCCESS about a certificate that is not durable.
    ///
    /// The transaction must be in progress with this key ([`StoreError::NotInProgress`]).
    fn record_issued(&self, key: &TxKey, cert: &CertRecord) -> Result<(), StoreError>;

    /// Mark the transaction failed, so that its ID may be reused. Allowed when it is in
    /// progress with this key, already failed, or unknown; refused with
    /// [`StoreError::NotInProgress`] when it succeeded or another request holds it.
    fn record_failure(
        &self,
        key: &TxKey,
        fail_info: u8,
        text: &str,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// Redeem a one-time challenge id: `true` the first time, `false` ever after, until the
    /// redemption is forgotten at `forget_after`. Of concurrent calls, exactly one gets `true`.
    fn redeem_once(
        &self,
        id: &[u8],
        forget_after: SystemTime,
        now: SystemTime,
    ) -> Result<bool, StoreError>;

    /// Drop the redemptions whose `forget_after` has passed; returns how many.
    fn forget_expired_redemptions(&self, now: SystemTime) -> Result<usize, StoreError>;

    /// The certificate with this serial, if it was issued here.
    fn certificate(&self, serial: &[u8]) -> Result<Option<CertRecord>, StoreError>;

    /// Every certificate, ordered by notBefore then serial.
    fn certificates(&self) -> Result<Vec<CertRecord>, StoreError>;

    /// The certificates with exactly this subject, ordered by notBefore then serial.
    fn certificates_by_subject(&self, subject: &str) -> Result<Vec<CertRecord>, StoreError>;

    /// Record who revoked which certificate, when and why, and flush. Revoking twice is
    /// harmless and reported as [`RevokeOutcome::AlreadyRevoked`] with the first revocation.
    fn revoke(
        &self,
        serial: &[u8],
        reason: &str,
        by: &str,
        at: SystemTime,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Park a request for manual approval: store `request` and release the transaction's
    /// in-progress marker, atomically, then flush. The transaction must be in progress with
    /// this key ([`StoreError::NotInProgress`]).
    fn record_pending(&self, key: &TxKey, request: &PendingRequest) -> Result<(), StoreError>;

    /// The pending request with this transactionID, whatever its decision.
    fn pending_request(&self, transaction_id: &str) -> Result<Option<PendingRequest>, StoreError>;

    /// Every pending request (decided ones included), ordered by arrival then transactionID.
    fn pending_requests(&self) -> Result<Vec<PendingRequest>, StoreError>;

    /// Record an admin's verdict on a waiting, unexpired request, and flush. Of concurrent
    /// verdicts exactly one is recorded; the others get [`DecideOutcome::AlreadyDecided`].
    fn decide_pending(
        &self,
        transaction_id: &str,
        verdict: Verdict,
        by: &str,
        now: SystemTime,
    ) -> Result<DecideOutcome, StoreError>;

    /// Every revocation as (serial, when, reason), ordered by time then serial.
    fn revocations(&self) -> Result<Vec<(Vec<u8>, SystemTime, String)>, StoreError>;

    /// The next cRLNumber (RFC 5280 §5.2.3): the larger of the last one plus 1 and
    /// `at_least` (the publisher passes the Unix time, so that numbers also order CRLs signed
    /// elsewhere from the time), strictly increasing across restarts and clock steps, made
    /// durable before it is returned so that no two CRLs share a number.
    fn next_crl_number(&self, at_least: u64) -> Result<u64, StoreError>;

    /// Record a one-time password of `template` (only its SHA-256 `digest`), live until
    /// `expires_at`, unless the template already has `max_outstanding` live ones
    /// ([`OtpIssue::CacheFull`]). Expired passwords of the template are purged on the way and
    /// do not count. Flushed before it returns: the caller hands the password out next.
    fn issue_otp(
        &self,
        template: &str,
        digest: &[u8; 32],
        expires_at: SystemTime,
        max_outstanding: usize,
        now: SystemTime,
    ) -> Result<OtpIssue, StoreError>;

    /// Use a one-time password of `template`: [`OtpRedeem::Redeemed`] exactly once for a live
    /// password (of concurrent calls, one), then [`OtpRedeem::Unknown`], as for a password
    /// never issued for this template; an expired one is removed and reported
    /// [`OtpRedeem::Expired`]. Becomes durable with the next flush (the certificate's).
    fn redeem_otp(
        &self,
        template: &str,
        digest: &[u8; 32],
        now: SystemTime,
    ) -> Result<OtpRedeem, StoreError>;
    /// [`Store::record_issued`], and `event` (if any) added to the connector outbox in the
    /// same atomic commit ([`StoreError::OutboxFull`] when the outbox is full: then nothing
    /// is written).
    fn record_issued_with_event(
        &self,
        key: &TxKey,
        cert: &CertRecord,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError>;

    /// [`Store::record_failure`], and `event` (if any) added to the outbox in the same
    /// commit, which is then made durable.
    fn record_failure_with_event(
        &self,
        key: &TxKey,
        fail_info: u8,
        text: &str,
        now: SystemTime,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError>;

    /// [`Store::revoke`], and `event` (if any) added to the outbox in the same commit when
    /// the certificate is newly revoked (not for `AlreadyRevoked` or `NotFound`).
    fn revoke_with_event(
        &self,
        serial: &[u8],
        reason: &str,
        by: &str,
        at: SystemTime,
        event: Option<&NewEvent>,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Every event waiting for delivery, oldest first.
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError>;

    /// How many events wait for delivery.
    fn outbox_depth(&self) -> Result<usize, StoreError>;

    /// Removes a delivered event (and flushes); `false` when it was no longer there.
    fn outbox_delivered(&self, seq: u64) -> Result<bool, StoreError>;

    /// Records a failed delivery attempt: one more attempt, the next not before
    /// `next_try_ms` (Unix milliseconds), and the error.
    fn outbox_attempt_failed(
        &self,
        seq: u64,
        next_try_ms: u64,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Clears the backoff of the event with this id (all events with `None`): due at once.
    /// Returns how many events it changed.
    fn outbox_retry(&self, event_id: Option<&str>) -> Result<usize, StoreError>;
}
