//! In-memory fake of the [`Store`] port, with the sled store's semantics.

use super::record::{
    certificate_list, check_may_record_failure, check_may_record_issued, decide_begin,
    duplicate_serial, redemption_is_live, revocation_list, to_secs, BeginStep, StoredCert,
    StoredTx,
};
use super::{otp, OtpIssue, OtpRedeem};
use super::{pending, DecideOutcome, PendingRequest, Verdict};
use super::{CertRecord, RevokeOutcome, Store, StoreError, TxBegin, TxKey};
use super::{NewEvent, OutboxEntry};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

/// A [`Store`] in memory, for tests. One mutex guards everything (it's a fake); it keeps the
/// same stored record types as [`super::SledStore`], so times round to seconds the same way.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    transactions: HashMap<String, StoredTx>,
    certificates: BTreeMap<Vec<u8>, StoredCert>,
    redeemed: HashMap<Vec<u8>, u64>,
    pending: HashMap<String, PendingRequest>,
    crl_number: u64,
    /// One-time passwords: (template, digest) -> expiry in Unix seconds.
    otps: HashMap<(String, [u8; 32]), u64>,
    /// Connector events by sequence number, and the next one.
    outbox: BTreeMap<u64, OutboxEntry>,
    outbox_next: u64,
}

impl State {
    /// Appends an event, or refuses as the sled store does when the outbox is full.
    fn push_event(&mut self, new: &NewEvent) -> Result<(), StoreError> {
        if self.outbox.len() >= new.capacity {
            return Err(StoreError::OutboxFull {
                capacity: new.capacity,
            });
        }
        let seq = self.outbox_next.max(1);
        self.outbox_next = seq + 1;
        let entry = OutboxEntry {
            seq,
            event: new.event.clone(),
            attempts: 0,
            next_try_ms: new.not_before_ms,
            last_error: None,
        };
        // Round-trip through the stored form, as the sled store does.
        let entry = OutboxEntry::decode(seq, &entry.encode()?)?;
        self.outbox.insert(seq, entry);
        Ok(())
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below is a single insert after all checks, so a panicking holder
        // cannot leave a half-made change: the state is usable after poisoning.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn begin_transaction(&self, key: &TxKey, now: SystemTime) -> Result<TxBegin, StoreError> {
        let mut state = self.state();
        match decide_begin(state.transactions.get(&key.transaction_id), key, now) {
            BeginStep::Answer(answer) => Ok(answer),
            BeginStep::Claim(record) => {
                state
                    .transactions
                    .insert(key.transaction_id.clone(), record);
                Ok(TxBegin::Fresh)
            }
        }
    }

    fn record_issued(&self, key: &TxKey, cert: &CertRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        check_may_record_issued(state.transactions.get(&key.transaction_id), key)?;
        if state.certificates.contains_key(&cert.serial) {
            return Err(duplicate_serial(&cert.serial));
        }
        state
            .certificates
            .insert(cert.serial.clone(), StoredCert::from_record(cert));
        let done = StoredTx::succeeded(key, &cert.serial);
        state.transactions.insert(key.transaction_id.clone(), done);
        Ok(())
    }

    fn record_failure(
        &self,
        key: &TxKey,
        fail_info: u8,
        text: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        check_may_record_failure(state.transactions.get(&key.transaction_id), key)?;
        let failed = StoredTx::failed(key, fail_info, text, now);
        state
            .transactions
            .insert(key.transaction_id.clone(), failed);
        Ok(())
    }

    fn redeem_once(
        &self,
        id: &[u8],
        forget_after: SystemTime,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        if let Some(&stored) = state.redeemed.get(id) {
            if redemption_is_live(stored, now) {
                return Ok(false);
            }
        }
        state.redeemed.insert(id.to_vec(), to_secs(forget_after));
        Ok(true)
    }

    fn forget_expired_redemptions(&self, now: SystemTime) -> Result<usize, StoreError> {
        let mut state = self.state();
        let before = state.redeemed.len();
        state
            .redeemed
            .retain(|_, &mut forget_after| redemption_is_live(forget_after, now));
        Ok(before - state.redeemed.len())
    }

    fn certificate(&self, serial: &[u8]) -> Result<Option<CertRecord>, StoreError> {
        self.state()
            .certificates
            .get(serial)
            .map(StoredCert::to_record)
            .transpose()
    }

    fn certificates(&self) -> Result<Vec<CertRecord>, StoreError> {
        certificate_list(self.state().certificates.values().cloned().collect())
    }

    fn certificates_by_subject(&self, subject: &str) -> Result<Vec<CertRecord>, StoreError> {
        let state = self.state();
        let matching = state.certificates.values().filter(|c| c.subject == subject);
        certificate_list(matching.cloned().collect())
    }

    fn revoke(
        &self,
        serial: &[u8],
        reason: &str,
        by: &str,
        at: SystemTime,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut state = self.state();
        let Some(cert) = state.certificates.get_mut(serial) else {
            return Ok(RevokeOutcome::NotFound);
        };
        if let Some(earlier) = cert.earlier_revocation()? {
            return Ok(earlier);
        }
        cert.mark_revoked(reason, by, at);
        Ok(RevokeOutcome::Revoked)
    }

    fn record_pending(&self, key: &TxKey, request: &PendingRequest) -> Result<(), StoreError> {
        let stored = pending::normalised(request)?;
        let mut state = self.state();
        check_may_record_issued(state.transactions.get(&key.transaction_id), key)?;
        state.transactions.remove(&key.transaction_id);
        state.pending.insert(request.transaction_id.clone(), stored);
        Ok(())
    }

    fn pending_request(&self, transaction_id: &str) -> Result<Option<PendingRequest>, StoreError> {
        Ok(self.state().pending.get(transaction_id).cloned())
    }

    fn pending_requests(&self) -> Result<Vec<PendingRequest>, StoreError> {
        let mut all: Vec<_> = self.state().pending.values().cloned().collect();
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
        let mut state = self.state();
        let current = state.pending.get(transaction_id).cloned();
        match pending::decide(current, verdict, by, now) {
            Ok(updated) => {
                state
                    .pending
                    .insert(transaction_id.to_owned(), updated.clone());
                Ok(DecideOutcome::Decided(updated))
            }
            Err(outcome) => Ok(*outcome),
        }
    }

    fn revocations(&self) -> Result<Vec<(Vec<u8>, SystemTime, String)>, StoreError> {
        revocation_list(self.state().certificates.values())
    }

    fn next_crl_number(&self, at_least: u64) -> Result<u64, StoreError> {
        let mut state = self.state();
        state.crl_number = state.crl_number.saturating_add(1).max(at_least);
        Ok(state.crl_number)
    }

    fn issue_otp(
        &self,
        template: &str,
        digest: &[u8; 32],
        expires_at: SystemTime,
        max_outstanding: usize,
        now: SystemTime,
    ) -> Result<OtpIssue, StoreError> {
        let mut state = self.state();
        state
            .otps
            .retain(|(t, _), &mut expiry| t != template || otp::is_live(expiry, now));
        let outstanding = state.otps.keys().filter(|(t, _)| t == template).count();
        if outstanding >= max_outstanding {
            return Ok(OtpIssue::CacheFull);
        }
        let expiry = u64::from_be_bytes(otp::encode_expiry(expires_at));
        state.otps.insert((template.to_owned(), *digest), expiry);
        Ok(OtpIssue::Issued)
    }

    fn redeem_otp(
        &self,
        template: &str,
        digest: &[u8; 32],
        now: SystemTime,
    ) -> Result<OtpRedeem, StoreError> {
        let mut state = self.state();
        match state.otps.remove(&(template.to_owned(), *digest)) {
            None => Ok(OtpRedeem::Unknown),
            Some(expiry) if otp::is_live(expiry, now) => Ok(OtpRedeem::Redeemed),
            Some(_) => Ok(OtpRedeem::Expired),
        }
    }

    fn record_issued_with_event(
        &self,
        key: &TxKey,
        cert: &CertRecord,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        check_may_record_issued(state.transactions.get(&key.transaction_id), key)?;
        if state.certificates.contains_key(&cert.serial) {
            return Err(duplicate_serial(&cert.serial));
        }
        if let Some(event) = event {
            state.push_event(event)?;
        }
        state
            .certificates
            .insert(cert.serial.clone(), StoredCert::from_record(cert));
        let done = StoredTx::succeeded(key, &cert.serial);
        state.transactions.insert(key.transaction_id.clone(), done);
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
        let mut state = self.state();
        check_may_record_failure(state.transactions.get(&key.transaction_id), key)?;
        if let Some(event) = event {
            state.push_event(event)?;
        }
        let failed = StoredTx::failed(key, fail_info, text, now);
        state
            .transactions
            .insert(key.transaction_id.clone(), failed);
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
        let mut state = self.state();
        let Some(cert) = state.certificates.get(serial) else {
            return Ok(RevokeOutcome::NotFound);
        };
        if let Some(earlier) = cert.earlier_revocation()? {
            return Ok(earlier);
        }
        if let Some(event) = event {
            state.push_event(event)?;
        }
        if let Some(cert) = state.certificates.get_mut(serial) {
            cert.mark_revoked(reason, by, at);
        }
        Ok(RevokeOutcome::Revoked)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self.state().outbox.values().cloned().collect())
    }

    fn outbox_depth(&self) -> Result<usize, StoreError> {
        Ok(self.state().outbox.len())
    }

    fn outbox_delivered(&self, seq: u64) -> Result<bool, StoreError> {
        Ok(self.state().outbox.remove(&seq).is_some())
    }

    fn outbox_attempt_failed(
        &self,
        seq: u64,
        next_try_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        if let Some(entry) = self.state().outbox.get_mut(&seq) {
            entry.failed(next_try_ms, error);
        }
        Ok(())
    }

    fn outbox_retry(&self, event_id: Option<&str>) -> Result<usize, StoreError> {
        let mut state = self.state();
        let mut changed = 0;
        for entry in state.outbox.values_mut() {
            if event_id.is_some_and(|id| id != entry.event.id) {
                continue;
            }
            entry.next_try_ms = 0;
            changed += 1;
        }
        Ok(changed)
    }
}
