//! Stored forms of the records and the decisions both stores share, so that the sled store
//! and the memory fake cannot drift apart.

use super::{
    CertRecord, CertStatus, RevokeOutcome, StoreError, TxBegin, TxKey, STALE_IN_PROGRESS_AFTER,
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; times before it become 0.
pub(crate) fn to_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The inverse of [`to_secs`]; refuses a value the platform's clock cannot represent.
pub(crate) fn from_secs(secs: u64, tree: &'static str) -> Result<SystemTime, StoreError> {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .ok_or_else(|| corrupt(tree, format!("time {secs} out of range")))
}

pub(crate) fn corrupt(tree: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree,
        detail: detail.into(),
    }
}

/// Byte strings as lowercase hex inside JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// The record of one transactionID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredTx {
    pub message_type: u8,
    #[serde(with = "hex_bytes")]
    pub csr_digest: Vec<u8>,
    pub state: TxState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TxState {
    InProgress {
        since: u64,
    },
    Succeeded {
        #[serde(with = "hex_bytes")]
        serial: Vec<u8>,
    },
    Failed {
        fail_info: u8,
        text: String,
        at: u64,
    },
}

impl StoredTx {
    pub fn in_progress(key: &TxKey, now: SystemTime) -> Self {
        Self::with_state(
            key,
            TxState::InProgress {
                since: to_secs(now),
            },
        )
    }

    pub fn succeeded(key: &TxKey, serial: &[u8]) -> Self {
        Self::with_state(
            key,
            TxState::Succeeded {
                serial: serial.to_vec(),
            },
        )
    }

    pub fn failed(key: &TxKey, fail_info: u8, text: &str, now: SystemTime) -> Self {
        let state = TxState::Failed {
            fail_info,
            text: text.to_owned(),
            at: to_secs(now),
        };
        Self::with_state(key, state)
    }

    fn with_state(key: &TxKey, state: TxState) -> Self {
        Self {
            message_type: key.message_type,
            csr_digest: key.csr_digest.to_vec(),
            state,
        }
    }

    /// Same CSR and same message type: a retry of the same request.
    fn is_same_request(&self, key: &TxKey) -> bool {
        self.message_type == key.message_type && self.csr_digest == key.csr_digest
    }

    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::Encode(e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| corrupt("transactions", e.to_string()))
    }
}

/// What `begin_transaction` should do, given the current record.
pub(crate) enum BeginStep {
    /// Answer without writing.
    Answer(TxBegin),
    /// Write this record (replacing the current one only if unchanged), then answer `Fresh`.
    Claim(StoredTx),
}

pub(crate) fn decide_begin(current: Option<&StoredTx>, key: &TxKey, now: SystemTime) -> BeginStep {
    let claim = || BeginStep::Claim(StoredTx::in_progress(key, now));
    let Some(current) = current else {
        return claim();
    };
    match &current.state {
        TxState::Failed { .. } => claim(),
        TxState::InProgress { since } if is_stale(*since, now) => claim(),
        TxState::InProgress { .. } if current.is_same_request(key) => {
            BeginStep::Answer(TxBegin::InProgress)
        }
        TxState::Succeeded { serial } if current.is_same_request(key) => {
            BeginStep::Answer(TxBegin::Replay {
                serial: serial.clone(),
            })
        }
        TxState::InProgress { .. } | TxState::Succeeded { .. } => {
            BeginStep::Answer(TxBegin::Conflict)
        }
    }
}

fn is_stale(since: u64, now: SystemTime) -> bool {
    // A marker from the future (clock stepped back) is not stale: wait rather than double-issue.
    to_secs(now).saturating_sub(since) >= STALE_IN_PROGRESS_AFTER.as_secs()
}

/// `record_issued` may only complete a transaction this request holds.
pub(crate) fn check_may_record_issued(
    current: Option<&StoredTx>,
    key: &TxKey,
) -> Result<(), StoreError> {
    match current {
        Some(tx) if tx.is_same_request(key) && matches!(tx.state, TxState::InProgress { .. }) => {
            Ok(())
        }
        _ => Err(not_in_progress(key)),
    }
}

/// A failure may be recorded unless it would erase a success or another request's claim.
pub(crate) fn check_may_record_failure(
    current: Option<&StoredTx>,
    key: &TxKey,
) -> Result<(), StoreError> {
    match current {
        None => Ok(()),
        Some(tx) => match tx.state {
            TxState::Failed { .. } => Ok(()),
            TxState::InProgress { .. } if tx.is_same_request(key) => Ok(()),
            TxState::InProgress { .. } | TxState::Succeeded { .. } => Err(not_in_progress(key)),
        },
    }
}

fn not_in_progress(key: &TxKey) -> StoreError {
    StoreError::NotInProgress {
        transaction_id: key.transaction_id.clone(),
    }
}

/// A certificate record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCert {
    #[serde(with = "hex_bytes")]
    pub serial: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub der: Vec<u8>,
    pub subject: String,
    pub sans: Vec<String>,
    pub template: String,
    pub transaction_id: String,
    pub not_before: u64,
    pub not_after: u64,
    pub status: StoredStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoredStatus {
    Valid,
    Revoked { at: u64, reason: String, by: String },
}

const CERTS: &str = "certificates";

impl StoredCert {
    pub fn from_record(cert: &CertRecord) -> Self {
        let status = match &cert.status {
            CertStatus::Valid => StoredStatus::Valid,
            CertStatus::Revoked { at, reason, by } => StoredStatus::Revoked {
                at: to_secs(*at),
                reason: reason.clone(),
                by: by.clone(),
            },
        };
        Self {
            serial: cert.serial.clone(),
            der: cert.der.clone(),
            subject: cert.subject.clone(),
            sans: cert.sans.clone(),
            template: cert.template.clone(),
            transaction_id: cert.transaction_id.clone(),
            not_before: to_secs(cert.not_before),
            not_after: to_secs(cert.not_after),
            status,
        }
    }

    pub fn to_record(&self) -> Result<CertRecord, StoreError> {
        let status = match &self.status {
            StoredStatus::Valid => CertStatus::Valid,
            StoredStatus::Revoked { at, reason, by } => CertStatus::Revoked {
                at: from_secs(*at, CERTS)?,
                reason: reason.clone(),
                by: by.clone(),
            },
        };
        Ok(CertRecord {
            serial: self.serial.clone(),
            der: self.der.clone(),
            subject: self.subject.clone(),
            sans: self.sans.clone(),
            template: self.template.clone(),
            transaction_id: self.transaction_id.clone(),
            not_before: from_secs(self.not_before, CERTS)?,
            not_after: from_secs(self.not_after, CERTS)?,
            status,
        })
    }

    /// The earlier revocation, if this certificate was revoked before.
    pub fn earlier_revocation(&self) -> Result<Option<RevokeOutcome>, StoreError> {
        match &self.status {
            StoredStatus::Valid => Ok(None),
            StoredStatus::Revoked { at, reason, by } => Ok(Some(RevokeOutcome::AlreadyRevoked {
                at: from_secs(*at, CERTS)?,
                reason: reason.clone(),
                by: by.clone(),
            })),
        }
    }

    /// Mark revoked (the caller checked [`Self::earlier_revocation`] first).
    pub fn mark_revoked(&mut self, reason: &str, by: &str, at: SystemTime) {
        self.status = StoredStatus::Revoked {
            at: to_secs(at),
            reason: reason.to_owned(),
            by: by.to_owned(),
        };
    }

    /// (serial, when, reason) if revoked.
    pub fn revocation(&self) -> Result<Option<(Vec<u8>, SystemTime, String)>, StoreError> {
        match &self.status {
            StoredStatus::Valid => Ok(None),
            StoredStatus::Revoked { at, reason, .. } => Ok(Some((
                self.serial.clone(),
                from_secs(*at, CERTS)?,
                reason.clone(),
            ))),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::Encode(e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| corrupt(CERTS, e.to_string()))
    }
}

pub(crate) fn duplicate_serial(serial: &[u8]) -> StoreError {
    StoreError::DuplicateSerial(hex::encode(serial))
}

/// Sort certificates by notBefore, then serial.
pub(crate) fn sort_certificates(certs: &mut [StoredCert]) {
    certs.sort_by(|a, b| (a.not_before, &a.serial).cmp(&(b.not_before, &b.serial)));
}

/// Sort revocations by time, then serial.
pub(crate) fn sort_revocations(revocations: &mut [(Vec<u8>, SystemTime, String)]) {
    revocations.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
}

/// Decode all, sort, convert: the shared tail of every certificate listing.
pub(crate) fn certificate_list(mut certs: Vec<StoredCert>) -> Result<Vec<CertRecord>, StoreError> {
    sort_certificates(&mut certs);
    certs.iter().map(StoredCert::to_record).collect()
}

/// Revocations of these certificates, sorted.
pub(crate) fn revocation_list<'a>(
    certs: impl IntoIterator<Item = &'a StoredCert>,
) -> Result<Vec<(Vec<u8>, SystemTime, String)>, StoreError> {
    let mut out = Vec::new();
    for cert in certs {
        out.extend(cert.revocation()?);
    }
    sort_revocations(&mut out);
    Ok(out)
}

/// A redemption stored with this `forget_after` still blocks the id at `now`.
pub(crate) fn redemption_is_live(forget_after_secs: u64, now: SystemTime) -> bool {
    to_secs(now) < forget_after_secs
}
