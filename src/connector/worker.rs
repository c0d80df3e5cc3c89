//! The outbox worker: a background task of `scepd serve` that delivers connector events.
//!
//! - At least once: an event leaves the outbox only after its connector accepted it; a
//!   crash in between delivers it again (with the same id).
//! - Oldest first per connector: events are taken in sequence order, and a connector whose
//!   oldest event is backing off or just failed gets nothing newer in that round.
//! - Backoff: `initial_backoff * 2^(attempts-1)`, capped at `max_backoff`, then a random
//!   jitter takes it down by up to half, so that many failed events do not retry in step.
//! - Resumes after a restart: the outbox is in the store.
//! - Bounded: depth and fullness are logged when they change state (a warning at 80 %, an
//!   error when full).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{unix_ms, Connectors, OutboxStatus};
use crate::store::{Store, StoreError};

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Events delivered.
    pub delivered: usize,
    /// Attempts that failed.
    pub failed: usize,
}

/// The delay before attempt number `attempts + 1` (attempts >= 1), with jitter from `random`
/// (0..=u32::MAX).
pub fn backoff(initial: Duration, max: Duration, attempts: u32, random: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let full = initial
        .saturating_mul(1u32 << exponent)
        .min(max)
        .max(Duration::from_millis(1));
    // Keep between half and all of it.
    let half = full / 2;
    half + half.mul_f64(f64::from(random) / f64::from(u32::MAX))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = openssl::rand::rand_bytes(&mut b);
    u32::from_be_bytes(b)
}

/// One pass over the outbox: delivers what is due, records failures with their backoff.
pub fn deliver_due(
    store: &dyn Store,
    connectors: &Connectors,
    now: SystemTime,
) -> Result<Round, StoreError> {
    let mut round = Round::default();
    let mut held: HashSet<String> = HashSet::new();
    let now_ms = unix_ms(now);
    for entry in store.outbox()? {
        let connector = entry.event.connector.clone();
        if held.contains(&connector) {
            continue;
        }
        if entry.next_try_ms > now_ms {
            held.insert(connector);
            continue;
        }
        match connectors.deliver(&entry.event, SystemTime::now()) {
            Ok(()) => {
                store.outbox_delivered(entry.seq)?;
                round.delivered += 1;
                tracing::info!(
                    event = %entry.event.id,
                    connector = %connector,
                    kind = entry.event.kind.as_str(),
                    transaction_id = %entry.event.transaction_id,
                    attempts = entry.attempts + 1,
                    "connector event delivered"
                );
            }
            Err(error) => {
                let attempts = entry.attempts.saturating_add(1);
                let delay = backoff(
                    connectors.outbox.initial_backoff,
                    connectors.outbox.max_backoff,
                    attempts,
                    random_u32(),
                );
                let next = unix_ms(SystemTime::now() + delay);
                store.outbox_attempt_failed(entry.seq, next, &error)?;
                round.failed += 1;
                tracing::warn!(
                    event = %entry.event.id,
                    connector = %connector,
                    kind = entry.event.kind.as_str(),
                    transaction_id = %entry.event.transaction_id,
                    attempts,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    %error,
                    "connector event not delivered; will retry"
                );
                held.insert(connector);
            }
        }
    }
    Ok(round)
}

/// Fullness bands that the log reports when they change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Band {
    Normal,
    High,
    Full,
}

fn band(status: &OutboxStatus) -> Band {
    if status.full() {
        Band::Full
    } else if status.depth.saturating_mul(5) >= status.capacity.saturating_mul(4) {
        Band::High
    } else {
        Band::Normal
    }
}

/// Runs [`deliver_due`] every `poll_interval` until `stop` turns true.
pub async fn run(
    store: Arc<dyn Store>,
    connectors: Arc<Connectors>,
    mut stop: watch::Receiver<bool>,
) {
    // None: the first round logs the depth found at start-up.
    let mut last_band: Option<Band> = None;
    loop {
        let (s, c) = (Arc::clone(&store), Arc::clone(&connectors));
        let capacity = connectors.outbox.max_events;
        let outcome = tokio::task::spawn_blocking(move || {
            let round = deliver_due(&*s, &c, SystemTime::now());
            (round, OutboxStatus::read(&*s, capacity))
        })
        .await;
        match outcome {
            Ok((round, status)) => {
                if let Err(e) = round {
                    tracing::error!(error = %e, "outbox worker: store failed");
                }
                if let Ok(status) = status {
                    let now_band = band(&status);
                    if Some(now_band) != last_band {
                        match now_band {
                            Band::Full => tracing::error!(depth = status.depth, capacity = status.capacity, "connector outbox full: enrollments and revocations that need an event are refused"),
                            Band::High => tracing::warn!(depth = status.depth, capacity = status.capacity, "connector outbox over 80% full"),
                            Band::Normal => tracing::info!(depth = status.depth, capacity = status.capacity, "connector outbox: events waiting"),
                        }
                        last_band = Some(now_band);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "outbox worker task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(connectors.outbox.poll_interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Runs Intune's revocation loop every `revocation_poll` until `stop` turns true.
pub async fn intune_revocations(
    app: Arc<crate::App>,
    connectors: Arc<Connectors>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(client) = connectors.intune.clone() else {
        return;
    };
    let interval = client.config().revocation_poll;
    if interval.is_zero() {
        return;
    }
    loop {
        let (client, app) = (Arc::clone(&client), Arc::clone(&app));
        let outcome = tokio::task::spawn_blocking(move || {
            let enroller = app.enroller();
            super::intune::revocation::run_once(
                &client,
                &**enroller.store(),
                &**enroller.ca(),
                enroller.crls().map(|c| &**c),
                SystemTime::now(),
            )
        })
        .await;
        match outcome {
            Ok(Ok(run)) if run.requests > 0 => tracing::info!(
                requests = run.requests,
                revoked = run.revoked,
                errors = run.errors,
                "Intune revocation requests applied"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Intune revocation download failed; retrying later")
            }
            Err(e) => tracing::error!(error = %e, "Intune revocation task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_down_by_at_most_half() {
        let (i, m) = (Duration::from_secs(5), Duration::from_secs(300));
        assert_eq!(backoff(i, m, 1, u32::MAX), Duration::from_secs(5));
        assert_eq!(backoff(i, m, 2, u32::MAX), Duration::from_secs(10));
        assert_eq!(backoff(i, m, 3, 0), Duration::from_secs(10));
        assert_eq!(backoff(i, m, 40, u32::MAX), Duration::from_secs(300));
        assert_eq!(backoff(i, m, 40, 0), Duration::from_secs(150));
    }
}
