//! The embedded [`Store`]: sled, durable (flushed and fsynced, see `group_commit`) before a
//! SUCCESS reply.
//!
//! No mutex: every read-decide-write is a sled transaction or a compare-and-swap, which sled
//! runs lock-free and retries on conflict.

use super::group_commit::GroupCommit;
use super::record::{
    certificate_list, check_may_record_failure, check_may_record_issued, corrupt, decide_begin,
    duplicate_serial, redemption_is_live, revocation_list, to_secs, BeginStep, StoredCert,
    StoredTx,
};
use super::{otp, OtpIssue, OtpRedeem};
use super::{outbox, NewEvent, OutboxEntry};
use super::{pending, DecideOutcome, PendingRequest, Verdict};
use super::{CertRecord, RevokeOutcome, Store, StoreError, TxBegin, TxKey};
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::{Db, IVec, Transactional, Tree};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const TRANSACTIONS: &str = "transactions";
const CERTIFICATES: &str = "certificates";
const BY_SUBJECT: &str = "certificates_by_subject";
const REDEEMED: &str = "redeemed_challenges";

/// A [`Store`] in a sled database directory. One process at a time: a second `open` of the
/// same directory fails with [`StoreError::Locked`].
#[derive(Debug, Clone)]
pub struct SledStore {
    path: PathBuf,
    db: Db,
    // Visible to the store's tests, which plant corrupt records.
    pub(super) transactions: Tree,
    pub(super) certificates: Tree,
    by_subject: Tree,
    redeemed: Tree,
    /// Requests parked for manual approval, opened once like the other trees.
    pending: Tree,
    /// One-time passwords (see `otp`).
    otps: Tree,
    /// Connector events waiting for delivery, and their counters (see `outbox`).
    outbox: Tree,
    outbox_meta: Tree,
    /// Serialises `issue_otp` alone (an admin action, never on the enrollment path), so that
    /// counting a template's passwords and adding one cannot race past the cap.
    otp_issue: std::sync::Arc<std::sync::Mutex<()>>,
    durability: std::sync::Arc<GroupCommit>,
}

impl SledStore {
    /// Open (or create) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| open_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            transactions: db.open_tree(TRANSACTIONS)?,
            certificates: db.open_tree(CERTIFICATES)?,
            by_subject: db.open_tree(BY_SUBJECT)?,
            redeemed: db.open_tree(REDEEMED)?,
            pending: db.open_tree(pending::TREE)?,
            otps: db.open_tree(otp::TREE)?,
            outbox: db.open_tree(outbox::TREE)?,
            outbox_meta: db.open_tree(outbox::META_TREE)?,
            otp_issue: std::sync::Arc::default(),
            durability: std::sync::Arc::new(GroupCommit::open(path)?),
            db,
        })
    }

    /// [`SledStore::open`], waiting up to `patience` for a lock to be released. sled releases
    /// its file lock from a background thread after the last handle drops, so a store closed
    /// a moment ago in this process (as `serve` does right after a development `init`), or by
    /// a server that is just exiting, can still look locked for a few milliseconds.
    pub fn open_waiting(path: &Path, patience: std::time::Duration) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Self::open(path) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_certificate(&self, serial: &[u8]) -> Result<Option<StoredCert>, StoreError> {
        self.certificates
            .get(serial)?
            .map(|v| StoredCert::decode(&v))
            .transpose()
    }

    fn all_certificates(&self) -> Result<Vec<StoredCert>, StoreError> {
        self.certificates
            .iter()
            .values()
            .map(|v| StoredCert::decode(&v?))
            .collect()
    }
}

/// sled reports a held lock only as an I/O error with this text (sled 0.34, `config.rs`).
fn open_error(path: &Path, error: sled::Error) -> StoreError {
    match &error {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        _ => StoreError::Sled(error),
    }
}

type TxResult<T> = ConflictableTransactionResult<T, StoreError>;

fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}

fn from_transaction_error(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

fn read_tx(tree: &TransactionalTree, transaction_id: &str) -> TxResult<Option<StoredTx>> {
    match tree.get(transaction_id.as_bytes())? {
        None => Ok(None),
        Some(bytes) => StoredTx::decode(&bytes).map(Some).map_err(abort),
    }
}

/// Index key: the subject's length (u64 big-endian) keeps "ab"+serial and "a"+"b…" apart.
fn subject_prefix(subject: &str) -> Vec<u8> {
    let mut key = (subject.len() as u64).to_be_bytes().to_vec();
    key.extend_from_slice(subject.as_bytes());
    key
}

fn subject_key(subject: &str, serial: &[u8]) -> Vec<u8> {
    let mut key = subject_prefix(subject);
    key.extend_from_slice(serial);
    key
}

fn decode_secs(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(REDEEMED, "forget_after is not 8 bytes"))?;
    Ok(u64::from_be_bytes(array))
}

impl Store for SledStore {
    fn begin_transaction(&self, key: &TxKey, now: SystemTime) -> Result<TxBegin, StoreError> {
        let id = key.transaction_id.as_str();
        self.transactions
            .transaction(
                |txs| match decide_begin(read_tx(txs, id)?.as_ref(), key, now) {
                    BeginStep::Answer(answer) => Ok(answer),
                    BeginStep::Claim(record) => {
                        txs.insert(id.as_bytes(), record.encode().map_err(abort)?)?;
                        Ok(TxBegin::Fresh)
                    }
                },
            )
            .map_err(from_transaction_error)
    }

    fn record_issued(&self, key: &TxKey, cert: &CertRecord) -> Result<(), StoreError> {
        let id = key.transaction_id.as_str();
        let cert_value = StoredCert::from_record(cert).encode()?;
        let done_value = StoredTx::succeeded(key, &cert.serial).encode()?;
        let index_key = subject_key(&cert.subject, &cert.serial);
        let trees = (&self.transactions, &self.certificates, &self.by_subject);
        trees
            .transaction(|(txs, certs, subjects)| {
                check_may_record_issued(read_tx(txs, id)?.as_ref(), key).map_err(abort)?;
                if certs.get(&cert.serial)?.is_some() {
                    return Err(abort(duplicate_serial(&cert.serial)));
                }
                certs.insert(cert.serial.as_slice(), cert_value.as_slice())?;
                subjects.insert(index_key.as_slice(), IVec::default())?;
                txs.insert(id.as_bytes(), done_value.as_slice())?;
                Ok(())
            })
            .map_err(from_transaction_error)?;
        // Durable before the caller answers SUCCESS. This also makes durable any redemption
        // made for this request, which shares the log.
        self.durability.commit(&self.db)?;
        Ok(())
    }

    fn record_failure(
        &self,
        key: &TxKey,
        fail_info: u8,
        text: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let id = key.transaction_id.as_str();
        let failed_value = StoredTx::failed(key, fail_info, text, now).encode()?;
        self.transactions
            .transaction(|txs| {
                check_may_record_failure(read_tx(txs, id)?.as_ref(), key).map_err(abort)?;
                txs.insert(id.as_bytes(), failed_value.as_slice())?;
                Ok(())
            })
            .map_err(from_transaction_error)
    }

    fn redeem_once(
        &self,
        id: &[u8],
        forget_after: SystemTime,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let value = to_secs(forget_after).to_be_bytes();
        loop {
            let current = self.redeemed.get(id)?;
            if let Some(stored) = &current {
                if redemption_is_live(decode_secs(stored)?, now) {
                    return Ok(false);
                }
            }
            // Exactly one of racing callers swaps from what it saw; the others look again
            // and find the live redemption.
            if self
                .redeemed
                .compare_and_swap(id, current, Some(&value[..]))?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    fn forget_expired_redemptions(&self, now: SystemTime) -> Result<usize, StoreError> {
        let mut forgotten = 0;
        for entry in self.redeemed.iter() {
            let (id, stored) = entry?;
            if redemption_is_live(decode_secs(&stored)?, now) {
                continue;
            }
            // Only remove what we looked at: a concurrent fresh redemption must survive.
            let swapped = self
                .redeemed
                .compare_and_swap(&id, Some(&stored), None::<IVec>)?;
            forgotten += usize::from(swapped.is_ok());
        }
        Ok(forgotten)
    }

    fn certificate(&self, serial: &[u8]) -> Result<Option<CertRecord>, StoreError> {
        self.read_certificate(serial)?
            .as_ref()
            .map(StoredCert::to_record)
            .transpose()
    }

    fn certificates(&self) -> Result<Vec<CertRecord>, StoreError> {
        certificate_list(self.all_certificates()?)
    }

    fn certificates_by_subject(&self, subject: &str) -> Result<Vec<CertRecord>, StoreError> {
        let prefix = subject_prefix(subject);
        let mut found = Vec::new();
        for index_key in self.by_subject.scan_prefix(&prefix).keys() {
            let index_key = index_key?;
            let serial = index_key.get(prefix.len()..).unwrap_or_default();
            let cert = self.read_certificate(serial)?;
            found.push(cert.ok_or_else(|| corrupt(BY_SUBJECT, "index entry without certificate"))?);
        }
        certificate_list(found)
    }

    fn revoke(
        &self,
        serial: &[u8],
        reason: &str,
        by: &str,
        at: SystemTime,
    ) -> Result<RevokeOutcome, StoreError> {
        let outcome = self
            .certificates
            .transaction(|certs| {
                let Some(bytes) = certs.get(serial)? else {
                    return Ok(RevokeOutcome::NotFound);
                };
                let mut cert = StoredCert::decode(&bytes).map_err(abort)?;
                if let Some(earlier) = cert.earlier_revocation().map_err(abort)? {
                    return Ok(earlier);
                }
                cert.mark_revoked(reason, by, at);
                certs.insert(serial, cert.encode().map_err(abort)?)?;
                Ok(RevokeOutcome::Revoked)
            })
            .map_err(from_transaction_error)?;
        if outcome == RevokeOutcome::Revoked {
            // Who revoked what must survive a crash: the admin was told it is done.
            self.durability.commit(&self.db)?;
        }
        Ok(outcome)
    }

    fn record_pending(&self, key: &TxKey, request: &PendingRequest) -> Result<(), StoreError> {
        let id = key.transaction_id.as_str();
        let value = pending::encode(request)?;
        let parked = &self.pending;
        (&self.transactions, parked)
            .transaction(|(txs, parked)| {
                check_may_record_issued(read_tx(txs, id)?.as_ref(), key).map_err(abort)?;
                txs.remove(id.as_bytes())?;
                parked.insert(request.transaction_id.as_bytes(), value.as_slice())?;
                Ok(())
            })
            .map_err(from_transaction_error)?;
        self.durability.commit(&self.db)?;
        Ok(())
    }

    fn pending_request(&self, transaction_id: &str) -> Result<Option<PendingRequest>, StoreError> {
        self.pending
            .get(transaction_id.as_bytes())?
            .map(|v| pending::decode(transaction_id, &v))
            .transpose()
    }

    fn pending_requests(&self) -> Result<Vec<PendingRequest>, StoreError> {
        let mut all = self
            .pending
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let id = String::from_utf8_lossy(&k).into_owned();
                pending::decode(&id, &v)
            })
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| {
            (a.received_at, &a.transaction_id).cmp(&(b.received_at, &b.transaction_id))
        });
        Ok(all)
    }

    fn decide_pending(
        &self,
        transaction_id: &str,
        verdict: Verdict,
        by: &str,
        now: SystemTime,
    ) -> Result<DecideOutcome, StoreError> {
        let tree = &self.pending;
        loop {
            let raw = tree.get(transaction_id.as_bytes())?;
            let current = raw
                .as_ref()
                .map(|v| pending::decode(transaction_id, v))
                .transpose()?;
            let updated = match pending::decide(current, verdict, by, now) {
                Ok(updated) => updated,
                Err(outcome) => return Ok(*outcome),
            };
            let value = pending::encode(&updated)?;
            // A racing verdict changes the value: look again and report it as decided.
            if tree
                .compare_and_swap(transaction_id.as_bytes(), raw, Some(value))?
                .is_ok()
            {
                self.durability.commit(&self.db)?;
                return Ok(DecideOutcome::Decided(updated));
            }
        }
    }

    fn revocations(&self) -> Result<Vec<(Vec<u8>, SystemTime, String)>, StoreError> {
        revocation_list(&self.all_certificates()?)
    }

    fn next_crl_number(&self, at_least: u64) -> Result<u64, StoreError> {
        let mut corrupt_value = false;
        let stored = self.db.update_and_fetch(CRL_NUMBER_KEY, |old| {
            let current = match old {
                None => 0,
                Some(bytes) => match <[u8; 8]>::try_from(bytes) {
                    Ok(be) => u64::from_be_bytes(be),
                    Err(_) => {
                        corrupt_value = true;
                        return old.map(<[u8]>::to_vec);
                    }
                },
            };
            Some(
                current
                    .saturating_add(1)
                    .max(at_least)
                    .to_be_bytes()
                    .to_vec(),
            )
        })?;
        let number = stored
            .as_deref()
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map(u64::from_be_bytes)
            .filter(|_| !corrupt_value)
            .ok_or_else(|| corrupt("default", "the CRL number is not 8 octets"))?;
        self.durability.commit(&self.db)?;
        Ok(number)
    }

    fn issue_otp(
        &self,
        template: &str,
        digest: &[u8; 32],
        expires_at: SystemTime,
        max_outstanding: usize,
        now: SystemTime,
    ) -> Result<OtpIssue, StoreError> {
        self.issue_otp_locked(template, digest, expires_at, max_outstanding, now)
    }

    fn redeem_otp(
        &self,
        template: &str,
        digest: &[u8; 32],
        now: SystemTime,
    ) -> Result<OtpRedeem, StoreError> {
        let key = otp::key(template, digest);
        let Some(stored) = self.otps.get(&key)? else {
            return Ok(OtpRedeem::Unknown);
        };
        let live = otp::is_live(otp::decode_expiry(&stored)?, now);
        // Exactly one of racing callers removes what it saw; the others find nothing.
        match self
            .otps
            .compare_and_swap(&key, Some(&stored), None::<IVec>)?
        {
            Ok(()) if live => Ok(OtpRedeem::Redeemed),
            Ok(()) => Ok(OtpRedeem::Expired),
            Err(_) => Ok(OtpRedeem::Unknown),
        }
    }

    fn record_issued_with_event(
        &self,
        key: &TxKey,
        cert: &CertRecord,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        let Some(event) = event else {
            return self.record_issued(key, cert);
        };
        let id = key.transaction_id.as_str();
        let cert_value = StoredCert::from_record(cert).encode()?;
        let done_value = StoredTx::succeeded(key, &cert.serial).encode()?;
        let index_key = subject_key(&cert.subject, &cert.serial);
        let trees = (
            &self.transactions,
            &self.certificates,
            &self.by_subject,
            &self.outbox,
            &self.outbox_meta,
        );
        trees
            .transaction(|(txs, certs, subjects, events, meta)| {
                check_may_record_issued(read_tx(txs, id)?.as_ref(), key).map_err(abort)?;
                if certs.get(&cert.serial)?.is_some() {
                    return Err(abort(duplicate_serial(&cert.serial)));
                }
                certs.insert(cert.serial.as_slice(), cert_value.as_slice())?;
                subjects.insert(index_key.as_slice(), IVec::default())?;
                txs.insert(id.as_bytes(), done_value.as_slice())?;
                outbox::push(events, meta, event)?;
                Ok(())
            })
            .map_err(from_transaction_error)?;
        self.durability.commit(&self.db)?;
        Ok(())
    }

    fn record_failure_with_event(
        &self,
        key: &TxKey,
        fail_info: u8,
        text: &str,
        now: SystemTime,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        let Some(event) = event else {
            return self.record_failure(key, fail_info, text, now);
        };
        let id = key.transaction_id.as_str();
        let failed_value = StoredTx::failed(key, fail_info, text, now).encode()?;
        (&self.transactions, &self.outbox, &self.outbox_meta)
            .transaction(|(txs, events, meta)| {
                check_may_record_failure(read_tx(txs, id)?.as_ref(), key).map_err(abort)?;
                txs.insert(id.as_bytes(), failed_value.as_slice())?;
                outbox::push(events, meta, event)?;
                Ok(())
            })
            .map_err(from_transaction_error)?;
        self.durability.commit(&self.db)?;
        Ok(())
    }

    fn revoke_with_event(
        &self,
        serial: &[u8],
        reason: &str,
        by: &str,
        at: SystemTime,
        event: Option<&NewEvent>,
    ) -> Result<RevokeOutcome, StoreError> {
        let Some(event) = event else {
            return self.revoke(serial, reason, by, at);
        };
        let outcome = (&self.certificates, &self.outbox, &self.outbox_meta)
            .transaction(|(certs, events, meta)| {
                let Some(bytes) = certs.get(serial)? else {
                    return Ok(RevokeOutcome::NotFound);
                };
                let mut cert = StoredCert::decode(&bytes).map_err(abort)?;
                if let Some(earlier) = cert.earlier_revocation().map_err(abort)? {
                    return Ok(earlier);
                }
                cert.mark_revoked(reason, by, at);
                certs.insert(serial, cert.encode().map_err(abort)?)?;
                outbox::push(events, meta, event)?;
                Ok(RevokeOutcome::Revoked)
            })
            .map_err(from_transaction_error)?;
        if outcome == RevokeOutcome::Revoked {
            self.durability.commit(&self.db)?;
        }
        Ok(outcome)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                OutboxEntry::decode(outbox::seq_from_key(&key)?, &value)
            })
            .collect()
    }

    fn outbox_depth(&self) -> Result<usize, StoreError> {
        outbox::count(&self.outbox_meta)
    }

    fn outbox_delivered(&self, seq: u64) -> Result<bool, StoreError> {
        let removed = (&self.outbox, &self.outbox_meta)
            .transaction(|(events, meta)| outbox::remove(events, meta, seq))
            .map_err(from_transaction_error)?;
        if removed {
            self.durability.commit(&self.db)?;
        }
        Ok(removed)
    }

    fn outbox_attempt_failed(
        &self,
        seq: u64,
        next_try_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        let key = seq.to_be_bytes();
        let Some(current) = self.outbox.get(key)? else {
            return Ok(());
        };
        let mut entry = OutboxEntry::decode(seq, &current)?;
        entry.failed(next_try_ms, error);
        // Delivered meanwhile (removed): the compare fails and nothing is written.
        let _ = self
            .outbox
            .compare_and_swap(key, Some(current), Some(entry.encode()?))?;
        Ok(())
    }

    fn outbox_retry(&self, event_id: Option<&str>) -> Result<usize, StoreError> {
        let mut changed = 0;
        for entry in self.outbox()? {
            if event_id.is_some_and(|id| id != entry.event.id) {
                continue;
            }
            if entry.next_try_ms == 0 {
                changed += 1;
                continue;
            }
            let key = entry.seq.to_be_bytes();
            let Some(current) = self.outbox.get(key)? else {
                continue;
            };
            let mut updated = OutboxEntry::decode(entry.seq, &current)?;
            updated.next_try_ms = 0;
            if self
                .outbox
                .compare_and_swap(key, Some(current), Some(updated.encode()?))?
                .is_ok()
            {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

impl SledStore {
    /// [`Store::issue_otp`]; split out so the trait impl stays one list of operations.
    fn issue_otp_locked(
        &self,
        template: &str,
        digest: &[u8; 32],
        expires_at: SystemTime,
        max_outstanding: usize,
        now: SystemTime,
    ) -> Result<OtpIssue, StoreError> {
        let _serial = self
            .otp_issue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut outstanding = 0usize;
        for entry in self.otps.scan_prefix(otp::prefix(template)) {
            let (key, value) = entry?;
            if otp::is_live(otp::decode_expiry(&value)?, now) {
                outstanding += 1;
            } else {
                // Only remove what we looked at: a concurrent redemption may have taken it.
                let _ = self
                    .otps
                    .compare_and_swap(&key, Some(&value), None::<IVec>)?;
            }
        }
        if outstanding >= max_outstanding {
            return Ok(OtpIssue::CacheFull);
        }
        self.otps.insert(
            otp::key(template, digest),
            &otp::encode_expiry(expires_at)[..],
        )?;
        self.durability.commit(&self.db)?;
        Ok(OtpIssue::Issued)
    }
}

/// Key of the cRLNumber counter in sled's default tree (a big-endian u64).
const CRL_NUMBER_KEY: &[u8] = b"crl_number";
