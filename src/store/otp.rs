//! One-time passwords as NDES issues them (`[challenge] type = "otp"`).
//!
//! Stored in sled tree `otp_passwords`. Key: the template name's length (`u64` big-endian),
//! the template name (UTF-8), then the SHA-256 digest of the password (32 bytes), so that the
//! passwords of one template are one prefix scan and a password issued for template A is not
//! even looked up under template B. Value: the expiry, `u64` big-endian Unix seconds. The
//! password itself is never stored.
//!
//! A password is live while `now < expires_at`. Redeeming removes it (compare-and-swap: of
//! concurrent redemptions exactly one wins); an expired one is removed when it is found, by a
//! redemption or by [`super::Store::issue_otp`] counting the template's outstanding passwords.

use std::time::SystemTime;

use super::record::{corrupt, to_secs};
use super::StoreError;

pub(crate) const TREE: &str = "otp_passwords";

/// What [`super::Store::issue_otp`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpIssue {
    /// The password is recorded (and durable).
    Issued,
    /// The template already has `max_outstanding` live passwords; nothing was recorded.
    CacheFull,
}

/// What [`super::Store::redeem_otp`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpRedeem {
    /// It was live; it is now gone, and this caller is the one that used it.
    Redeemed,
    /// Never issued for this template, or already used (indistinguishable by design).
    Unknown,
    /// Issued for this template but past its expiry; it is now gone.
    Expired,
}

/// Prefix of every key of `template`.
pub(crate) fn prefix(template: &str) -> Vec<u8> {
    let mut key = (template.len() as u64).to_be_bytes().to_vec();
    key.extend_from_slice(template.as_bytes());
    key
}

/// The key of one password of `template`.
pub(crate) fn key(template: &str, digest: &[u8; 32]) -> Vec<u8> {
    let mut key = prefix(template);
    key.extend_from_slice(digest);
    key
}

/// The stored expiry.
pub(crate) fn encode_expiry(expires_at: SystemTime) -> [u8; 8] {
    to_secs(expires_at).to_be_bytes()
}

/// Decodes a stored expiry.
pub(crate) fn decode_expiry(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(TREE, "expiry is not 8 bytes"))?;
    Ok(u64::from_be_bytes(array))
}

/// Whether a password expiring at `expires_at_secs` may still be used at `now`.
pub(crate) fn is_live(expires_at_secs: u64, now: SystemTime) -> bool {
    to_secs(now) < expires_at_secs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::store::{MemoryStore, SledStore, Store};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const T0: u64 = 1_700_000_000;

    fn digest(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn issued_once_then_unknown(store: &dyn Store) {
        let issue = store.issue_otp("devices", &digest(1), at(T0 + 3600), 5, at(T0));
        assert_eq!(issue.unwrap(), OtpIssue::Issued);
        let first = store.redeem_otp("devices", &digest(1), at(T0 + 10));
        assert_eq!(first.unwrap(), OtpRedeem::Redeemed);
        let again = store.redeem_otp("devices", &digest(1), at(T0 + 11));
        assert_eq!(again.unwrap(), OtpRedeem::Unknown);
    }

    fn never_issued_is_unknown(store: &dyn Store) {
        let answer = store.redeem_otp("devices", &digest(9), at(T0));
        assert_eq!(answer.unwrap(), OtpRedeem::Unknown);
    }

    fn another_templates_password_is_unknown_and_survives(store: &dyn Store) {
        store
            .issue_otp("a", &digest(1), at(T0 + 3600), 5, at(T0))
            .unwrap();
        let on_b = store.redeem_otp("b", &digest(1), at(T0 + 1)).unwrap();
        assert_eq!(on_b, OtpRedeem::Unknown);
        // "ab" + digest must not be found as "a" + "b..." either.
        let on_ab = store.redeem_otp("ab", &digest(1), at(T0 + 1)).unwrap();
        assert_eq!(on_ab, OtpRedeem::Unknown);
        let on_a = store.redeem_otp("a", &digest(1), at(T0 + 2)).unwrap();
        assert_eq!(on_a, OtpRedeem::Redeemed);
    }

    fn expired_is_refused_and_purged(store: &dyn Store) {
        store
            .issue_otp("devices", &digest(1), at(T0 + 60), 5, at(T0))
            .unwrap();
        let late = store
            .redeem_otp("devices", &digest(1), at(T0 + 60))
            .unwrap();
        assert_eq!(late, OtpRedeem::Expired);
        // Purged: the second look does not find it at all.
        let again = store
            .redeem_otp("devices", &digest(1), at(T0 + 61))
            .unwrap();
        assert_eq!(again, OtpRedeem::Unknown);
    }

    fn cap_counts_live_passwords_per_template(store: &dyn Store) {
        for n in 0..3 {
            let issue = store.issue_otp("devices", &digest(n), at(T0 + 60), 3, at(T0));
            assert_eq!(issue.unwrap(), OtpIssue::Issued);
        }
        let full = store.issue_otp("devices", &digest(10), at(T0 + 60), 3, at(T0));
        assert_eq!(full.unwrap(), OtpIssue::CacheFull);
        // Another template has its own cap.
        let other = store.issue_otp("users", &digest(10), at(T0 + 60), 3, at(T0));
        assert_eq!(other.unwrap(), OtpIssue::Issued);
        // Using one frees a place.
        store.redeem_otp("devices", &digest(0), at(T0 + 1)).unwrap();
        let after_use = store.issue_otp("devices", &digest(11), at(T0 + 60), 3, at(T0 + 1));
        assert_eq!(after_use.unwrap(), OtpIssue::Issued);
        // Expired ones do not count (and are purged on the way).
        let later = store.issue_otp("devices", &digest(12), at(T0 + 200), 3, at(T0 + 100));
        assert_eq!(later.unwrap(), OtpIssue::Issued);
        let purged = store
            .redeem_otp("devices", &digest(1), at(T0 + 100))
            .unwrap();
        assert_eq!(purged, OtpRedeem::Unknown);
    }

    fn concurrent_redemptions_have_exactly_one_winner(store: &dyn Store) {
        store
            .issue_otp("devices", &digest(1), at(T0 + 3600), 5, at(T0))
            .unwrap();
        let barrier = std::sync::Barrier::new(8);
        let answers: Vec<OtpRedeem> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        store.redeem_otp("devices", &digest(1), at(T0 + 1)).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = answers
            .iter()
            .filter(|a| **a == OtpRedeem::Redeemed)
            .count();
        assert_eq!(winners, 1, "{answers:?}");
    }

    fn concurrent_issues_respect_the_cap(store: &dyn Store) {
        let issued: Vec<OtpIssue> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u8)
                .map(|n| {
                    scope.spawn(move || {
                        store
                            .issue_otp("devices", &digest(n), at(T0 + 60), 5, at(T0))
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let count = issued.iter().filter(|i| **i == OtpIssue::Issued).count();
        assert_eq!(count, 5, "{issued:?}");
    }

    macro_rules! on_every_store {
        ($($name:ident),* $(,)?) => {
            mod on_memory {
                $(
                    #[test]
                    fn $name() {
                        super::$name(&super::MemoryStore::new());
                    }
                )*
            }
            mod on_sled {
                $(
                    #[test]
                    fn $name() {
                        let dir = tempfile::tempdir().unwrap();
                        let store = super::SledStore::open(dir.path()).unwrap();
                        super::$name(&store);
                    }
                )*
            }
        };
    }

    on_every_store!(
        issued_once_then_unknown,
        never_issued_is_unknown,
        another_templates_password_is_unknown_and_survives,
        expired_is_refused_and_purged,
        cap_counts_live_passwords_per_template,
        concurrent_redemptions_have_exactly_one_winner,
        concurrent_issues_respect_the_cap,
    );

    #[test]
    fn passwords_survive_reopening_the_sled_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .issue_otp("devices", &digest(1), at(T0 + 3600), 5, at(T0))
                .unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let answer = store.redeem_otp("devices", &digest(1), at(T0 + 1)).unwrap();
        assert_eq!(answer, OtpRedeem::Redeemed);
    }
}
