//! Requests waiting for an admin's decision (manual approval, RFC 8894 §2.5 and §3.3.3).
//!
//! Stored in sled tree `pending_requests`, key the transactionID, value JSON (byte strings
//! lowercase hex, times Unix seconds), like the other trees. The transaction's in-progress
//! marker is removed when a request is parked here: from then on this record governs the
//! transactionID until the certificate is issued (then the transaction is `succeeded`).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::record::{corrupt, from_secs, to_secs};
use super::StoreError;

pub(crate) const TREE: &str = "pending_requests";

/// One request waiting for (or past) an admin's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// The SCEP transactionID: CertPoll looks it up (RFC 8894 §3.3.3).
    pub transaction_id: String,
    /// The template whose policy approved it and under which it will be issued.
    pub template: String,
    /// The CSR as received (DER).
    pub csr_der: Vec<u8>,
    /// SHA-256 of the CSR: a retried PKCSReq must carry the same CSR.
    pub csr_digest: [u8; 32],
    /// The CSR's subject, RFC 4514, for the admin's listing.
    pub subject: String,
    /// When it arrived (one-second precision).
    pub received_at: SystemTime,
    /// When it expires if nobody decides (one-second precision).
    pub expires_at: SystemTime,
    /// The admin's decision so far.
    pub decision: PendingDecision,
}

/// What an admin decided about a [`PendingRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingDecision {
    /// Nobody has decided yet.
    Waiting,
    /// Approved: the next CertPoll (or retried PKCSReq) gets the certificate.
    Approved {
        /// Who approved.
        by: String,
        /// When.
        at: SystemTime,
    },
    /// Rejected: polls get FAILURE.
    Rejected {
        /// Who rejected.
        by: String,
        /// When.
        at: SystemTime,
    },
}

impl PendingRequest {
    /// Whether it is still waiting at `now` and its time is up.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.decision == PendingDecision::Waiting && now > self.expires_at
    }

    /// `waiting`, `expired`, `approved` or `rejected` at `now`.
    pub fn state_name(&self, now: SystemTime) -> &'static str {
        match self.decision {
            PendingDecision::Waiting if self.is_expired(now) => "expired",
            PendingDecision::Waiting => "waiting",
            PendingDecision::Approved { .. } => "approved",
            PendingDecision::Rejected { .. } => "rejected",
        }
    }
}

/// An admin's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it be issued.
    Approve,
    /// Refuse it.
    Reject,
}

/// What [`super::Store::decide_pending`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideOutcome {
    /// The decision is recorded; the updated request.
    Decided(PendingRequest),
    /// An earlier decision stands (approving twice is harmless); the request as it is.
    AlreadyDecided(PendingRequest),
    /// It expired before anyone decided.
    Expired(PendingRequest),
    /// No pending request with this transactionID.
    NotFound,
}

/// The decision for `current` at `now`: `Ok(updated)` to store, `Err(outcome)` to report.
pub(crate) fn decide(
    current: Option<PendingRequest>,
    verdict: Verdict,
    by: &str,
    now: SystemTime,
) -> Result<PendingRequest, Box<DecideOutcome>> {
    let Some(current) = current else {
        return Err(Box::new(DecideOutcome::NotFound));
    };
    if current.decision != PendingDecision::Waiting {
        return Err(Box::new(DecideOutcome::AlreadyDecided(current)));
    }
    if current.is_expired(now) {
        return Err(Box::new(DecideOutcome::Expired(current)));
    }
    let at = from_secs(to_secs(now), TREE).unwrap_or(now);
    let decision = match verdict {
        Verdict::Approve => PendingDecision::Approved { by: by.into(), at },
        Verdict::Reject => PendingDecision::Rejected { by: by.into(), at },
    };
    Ok(PendingRequest {
        decision,
        ..current
    })
}

#[derive(Serialize, Deserialize)]
struct Stored {
    template: String,
    csr_der: String,
    csr_digest: String,
    subject: String,
    received_at: u64,
    expires_at: u64,
    decision: StoredDecision,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredDecision {
    Waiting,
    Approved { by: String, at: u64 },
    Rejected { by: String, at: u64 },
}

pub(crate) fn encode(request: &PendingRequest) -> Result<Vec<u8>, StoreError> {
    let decision = match &request.decision {
        PendingDecision::Waiting => StoredDecision::Waiting,
        PendingDecision::Approved { by, at } => StoredDecision::Approved {
            by: by.clone(),
            at: to_secs(*at),
        },
        PendingDecision::Rejected { by, at } => StoredDecision::Rejected {
            by: by.clone(),
            at: to_secs(*at),
        },
    };
    serde_json::to_vec(&Stored {
        template: request.template.clone(),
        csr_der: hex::encode(&request.csr_der),
        csr_digest: hex::encode(request.csr_digest),
        subject: request.subject.clone(),
        received_at: to_secs(request.received_at),
        expires_at: to_secs(request.expires_at),
        decision,
    })
    .map_err(|e| StoreError::Encode(e.to_string()))
}

pub(crate) fn decode(transaction_id: &str, bytes: &[u8]) -> Result<PendingRequest, StoreError> {
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| corrupt(TREE, e.to_string()))?;
    let csr_der = hex::decode(&stored.csr_der).map_err(|e| corrupt(TREE, e.to_string()))?;
    let csr_digest: [u8; 32] = hex::decode(&stored.csr_digest)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| corrupt(TREE, "csr_digest is not 32 bytes of hex"))?;
    let decision = match stored.decision {
        StoredDecision::Waiting => PendingDecision::Waiting,
        StoredDecision::Approved { by, at } => PendingDecision::Approved {
            by,
            at: from_secs(at, TREE)?,
        },
        StoredDecision::Rejected { by, at } => PendingDecision::Rejected {
            by,
            at: from_secs(at, TREE)?,
        },
    };
    Ok(PendingRequest {
        transaction_id: transaction_id.to_owned(),
        template: stored.template,
        csr_der,
        csr_digest,
        subject: stored.subject,
        received_at: from_secs(stored.received_at, TREE)?,
        expires_at: from_secs(stored.expires_at, TREE)?,
        decision,
    })
}

/// The request as it will read back (times rounded to seconds), so both stores agree.
pub(crate) fn normalised(request: &PendingRequest) -> Result<PendingRequest, StoreError> {
    decode(&request.transaction_id, &encode(request)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::store::{MemoryStore, SledStore, Store, TxBegin, TxKey};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const T0: u64 = 1_700_000_000;

    fn parked(id: &str, received: u64) -> PendingRequest {
        PendingRequest {
            transaction_id: id.into(),
            template: "manual".into(),
            csr_der: vec![0x30, 0x00],
            csr_digest: [7; 32],
            subject: "CN=device".into(),
            received_at: at(received),
            expires_at: at(received + 3600),
            decision: PendingDecision::Waiting,
        }
    }

    fn key(id: &str) -> TxKey {
        TxKey {
            transaction_id: id.into(),
            message_type: 19,
            csr_digest: [7; 32],
        }
    }

    fn park_decide_and_expire(store: &dyn Store) {
        // Only an in-progress transaction can be parked.
        assert!(store
            .record_pending(&key("tx-a"), &parked("tx-a", T0))
            .is_err());
        for (id, t) in [("tx-b", T0 + 1), ("tx-a", T0)] {
            assert_eq!(
                store.begin_transaction(&key(id), at(t)).unwrap(),
                TxBegin::Fresh
            );
            store.record_pending(&key(id), &parked(id, t)).unwrap();
        }
        // The marker is released: the transaction can begin again (at poll time).
        assert_eq!(
            store.begin_transaction(&key("tx-a"), at(T0 + 2)).unwrap(),
            TxBegin::Fresh
        );
        let ids: Vec<_> = store
            .pending_requests()
            .unwrap()
            .into_iter()
            .map(|p| p.transaction_id)
            .collect();
        assert_eq!(ids, vec!["tx-a", "tx-b"]);
        assert_eq!(
            store.pending_request("tx-a").unwrap(),
            Some(parked("tx-a", T0))
        );
        assert_eq!(store.pending_request("nope").unwrap(), None);

        let decided = store
            .decide_pending("tx-a", Verdict::Approve, "alice", at(T0 + 10))
            .unwrap();
        let DecideOutcome::Decided(request) = decided else {
            panic!("{decided:?}")
        };
        assert_eq!(
            request.decision,
            PendingDecision::Approved {
                by: "alice".into(),
                at: at(T0 + 10)
            }
        );
        assert_eq!(
            store.pending_request("tx-a").unwrap(),
            Some(request.clone())
        );
        assert_eq!(
            store
                .decide_pending("tx-a", Verdict::Reject, "bob", at(T0 + 11))
                .unwrap(),
            DecideOutcome::AlreadyDecided(request)
        );
        assert!(matches!(
            store
                .decide_pending("tx-b", Verdict::Approve, "alice", at(T0 + 7200))
                .unwrap(),
            DecideOutcome::Expired(_)
        ));
        assert_eq!(
            store
                .decide_pending("nope", Verdict::Approve, "alice", at(T0))
                .unwrap(),
            DecideOutcome::NotFound
        );
        let b = store.pending_request("tx-b").unwrap().unwrap();
        assert_eq!(b.state_name(at(T0 + 7200)), "expired");
        assert_eq!(b.state_name(at(T0 + 5)), "waiting");
    }

    #[test]
    fn memory_store_parks_and_decides() {
        park_decide_and_expire(&MemoryStore::new());
    }

    #[test]
    fn sled_store_parks_and_decides_and_keeps_it_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            park_decide_and_expire(&store);
        }
        let store = SledStore::open_waiting(dir.path(), Duration::from_secs(5)).unwrap();
        assert_eq!(store.pending_requests().unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_pending_record_is_an_error() {
        assert!(decode("tx", b"{").is_err());
        assert!(decode("tx", br#"{"template":"t","csr_der":"zz","csr_digest":"00","subject":"","received_at":0,"expires_at":0,"decision":"waiting"}"#).is_err());
    }
}
