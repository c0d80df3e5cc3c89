//! The manual-approval queue as admins see it: shared by the admin API
//! (`/v1/requests...`) and `scepd requests` on the store directly.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::{DecideOutcome, PendingDecision, PendingRequest, Store, Verdict};

/// One pending request as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestView {
    /// SCEP transactionID.
    pub transaction_id: String,
    /// `waiting`, `expired`, `approved` or `rejected`.
    pub state: String,
    /// Template it was approved by policy under.
    pub template: String,
    /// The CSR's subject, RFC 4514.
    pub subject: String,
    /// Seconds since the Unix epoch.
    pub received_at: u64,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When, seconds since the Unix epoch.
    pub decided_at: Option<u64>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl RequestView {
    /// The view of a stored request at `now`.
    pub fn new(request: &PendingRequest, now: SystemTime) -> Self {
        let (by, at) = match &request.decision {
            PendingDecision::Waiting => (None, None),
            PendingDecision::Approved { by, at } | PendingDecision::Rejected { by, at } => {
                (Some(by.clone()), Some(unix(*at)))
            }
        };
        Self {
            transaction_id: request.transaction_id.clone(),
            state: request.state_name(now).into(),
            template: request.template.clone(),
            subject: request.subject.clone(),
            received_at: unix(request.received_at),
            expires_at: unix(request.expires_at),
            decided_by: by,
            decided_at: at,
        }
    }
}

/// Body of an approve or reject call.
#[derive(Debug, Serialize, Deserialize)]
pub struct DecideBody {
    /// Who decides (recorded).
    pub by: String,
}

/// Answer to an approve or reject call.
#[derive(Debug, Serialize, Deserialize)]
pub struct DecideAnswer {
    /// `approved`, `rejected`, or `already_decided` (the earlier decision stands).
    pub outcome: String,
    /// The request after the call.
    pub request: RequestView,
}

/// What a decision did.
pub enum DecideResult {
    /// Recorded now, or an earlier decision stands.
    Done(Box<DecideAnswer>),
    /// No pending request with this transactionID.
    NotFound,
    /// It expired before anyone decided.
    Expired,
    /// The store failed.
    Failed(String),
}

/// Every pending request (decided ones included), oldest first.
pub fn list(store: &dyn Store, now: SystemTime) -> Result<Vec<RequestView>, String> {
    Ok(store
        .pending_requests()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| RequestView::new(r, now))
        .collect())
}

/// Approves or rejects the waiting request `transaction_id`.
pub fn decide(
    store: &dyn Store,
    transaction_id: &str,
    verdict: Verdict,
    by: &str,
    now: SystemTime,
) -> DecideResult {
    let (outcome, request) = match store.decide_pending(transaction_id, verdict, by, now) {
        Ok(DecideOutcome::Decided(request)) => match verdict {
            Verdict::Approve => ("approved", request),
            Verdict::Reject => ("rejected", request),
        },
        Ok(DecideOutcome::AlreadyDecided(request)) => ("already_decided", request),
        Ok(DecideOutcome::Expired(_)) => return DecideResult::Expired,
        Ok(DecideOutcome::NotFound) => return DecideResult::NotFound,
        Err(e) => return DecideResult::Failed(e.to_string()),
    };
    tracing::info!(transaction_id, by, outcome, "manual approval decision");
    DecideResult::Done(Box::new(DecideAnswer {
        outcome: outcome.into(),
        request: RequestView::new(&request, now),
    }))
}
