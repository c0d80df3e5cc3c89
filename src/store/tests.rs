//! The same test functions, run against the memory fake and against sled.

use super::*;
use std::sync::Barrier;
use std::time::UNIX_EPOCH;

/// A time in whole seconds (the stores keep one-second precision).
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const T0: u64 = 1_700_000_000;
const PKCS_REQ: u8 = 19;
const RENEWAL_REQ: u8 = 17;

fn key(transaction_id: &str, csr: u8) -> TxKey {
    TxKey {
        transaction_id: transaction_id.into(),
        message_type: PKCS_REQ,
        csr_digest: [csr; 32],
    }
}

fn cert(serial: &[u8], subject: &str, not_before: u64) -> CertRecord {
    CertRecord {
        serial: serial.to_vec(),
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        subject: subject.into(),
        sans: vec!["dns:device.example".into()],
        template: "devices".into(),
        transaction_id: "tx".into(),
        not_before: at(not_before),
        not_after: at(not_before + 365 * 86_400),
        status: CertStatus::Valid,
    }
}

fn issue(store: &dyn Store, key: &TxKey, cert: &CertRecord) {
    assert_eq!(
        store.begin_transaction(key, at(T0)).unwrap(),
        TxBegin::Fresh
    );
    store.record_issued(key, cert).unwrap();
}

fn fresh_then_replay_of_the_same_request(store: &dyn Store) {
    let k = key("tx-1", 1);
    issue(store, &k, &cert(b"\x01", "CN=a", T0));
    let again = store.begin_transaction(&k, at(T0 + 10)).unwrap();
    assert_eq!(again, TxBegin::Replay { serial: vec![1] });
    // A replay changes nothing: it can be asked again.
    assert_eq!(store.begin_transaction(&k, at(T0 + 20)).unwrap(), again);
}

fn other_csr_after_success_conflicts(store: &dyn Store) {
    issue(store, &key("tx-1", 1), &cert(b"\x01", "CN=a", T0));
    assert_eq!(
        store.begin_transaction(&key("tx-1", 2), at(T0)).unwrap(),
        TxBegin::Conflict
    );
}

fn other_message_type_after_success_conflicts(store: &dyn Store) {
    issue(store, &key("tx-1", 1), &cert(b"\x01", "CN=a", T0));
    let renewal = TxKey {
        message_type: RENEWAL_REQ,
        ..key("tx-1", 1)
    };
    assert_eq!(
        store.begin_transaction(&renewal, at(T0)).unwrap(),
        TxBegin::Conflict
    );
}

fn same_request_while_running_is_in_progress(store: &dyn Store) {
    let k = key("tx-1", 1);
    assert_eq!(store.begin_transaction(&k, at(T0)).unwrap(), TxBegin::Fresh);
    assert_eq!(
        store.begin_transaction(&k, at(T0 + 1)).unwrap(),
        TxBegin::InProgress
    );
}

fn other_csr_while_running_conflicts(store: &dyn Store) {
    assert_eq!(
        store.begin_transaction(&key("tx-1", 1), at(T0)).unwrap(),
        TxBegin::Fresh
    );
    assert_eq!(
        store.begin_transaction(&key("tx-1", 2), at(T0)).unwrap(),
        TxBegin::Conflict
    );
}

fn failed_transaction_may_be_reused_with_any_csr(store: &dyn Store) {
    let first = key("tx-1", 1);
    assert_eq!(
        store.begin_transaction(&first, at(T0)).unwrap(),
        TxBegin::Fresh
    );
    store
        .record_failure(&first, 2, "policy denied", at(T0))
        .unwrap();
    let other = key("tx-1", 2);
    assert_eq!(
        store.begin_transaction(&other, at(T0 + 1)).unwrap(),
        TxBegin::Fresh
    );
    store
        .record_issued(&other, &cert(b"\x01", "CN=a", T0))
        .unwrap();
    let replay = store.begin_transaction(&other, at(T0 + 2)).unwrap();
    assert_eq!(replay, TxBegin::Replay { serial: vec![1] });
}

fn stale_in_progress_marker_is_taken_over(store: &dyn Store) {
    let crashed = key("tx-1", 1);
    assert_eq!(
        store.begin_transaction(&crashed, at(T0)).unwrap(),
        TxBegin::Fresh
    );
    let stale = T0 + STALE_IN_PROGRESS_AFTER.as_secs();
    let retry = key("tx-1", 2);
    assert_eq!(
        store.begin_transaction(&retry, at(stale - 1)).unwrap(),
        TxBegin::Conflict
    );
    assert_eq!(
        store.begin_transaction(&retry, at(stale)).unwrap(),
        TxBegin::Fresh
    );
    // The new claim holds the ID now; the crashed request cannot complete it.
    let late = store.record_issued(&crashed, &cert(b"\x01", "CN=a", T0));
    assert!(
        matches!(late, Err(StoreError::NotInProgress { .. })),
        "{late:?}"
    );
}

fn marker_from_the_future_is_not_stale(store: &dyn Store) {
    let k = key("tx-1", 1);
    assert_eq!(
        store.begin_transaction(&k, at(T0 + 3600)).unwrap(),
        TxBegin::Fresh
    );
    assert_eq!(
        store.begin_transaction(&k, at(T0)).unwrap(),
        TxBegin::InProgress
    );
}

fn concurrent_begin_admits_exactly_one(store: &dyn Store) {
    let k = key("tx-1", 1);
    let answers = run_on_8_threads(|| store.begin_transaction(&k, at(T0)).unwrap());
    let fresh = answers.iter().filter(|a| **a == TxBegin::Fresh).count();
    assert_eq!(fresh, 1, "{answers:?}");
    assert!(answers
        .iter()
        .all(|a| matches!(a, TxBegin::Fresh | TxBegin::InProgress)));
}

fn record_issued_requires_a_begun_transaction(store: &dyn Store) {
    let result = store.record_issued(&key("tx-1", 1), &cert(b"\x01", "CN=a", T0));
    assert!(
        matches!(result, Err(StoreError::NotInProgress { .. })),
        "{result:?}"
    );
    assert_eq!(store.certificate(b"\x01").unwrap(), None);
}

fn record_issued_twice_is_refused(store: &dyn Store) {
    let k = key("tx-1", 1);
    issue(store, &k, &cert(b"\x01", "CN=a", T0));
    let again = store.record_issued(&k, &cert(b"\x02", "CN=a", T0));
    assert!(
        matches!(again, Err(StoreError::NotInProgress { .. })),
        "{again:?}"
    );
}

fn failure_cannot_erase_a_success(store: &dyn Store) {
    let k = key("tx-1", 1);
    issue(store, &k, &cert(b"\x01", "CN=a", T0));
    let result = store.record_failure(&k, 2, "late failure", at(T0));
    assert!(
        matches!(result, Err(StoreError::NotInProgress { .. })),
        "{result:?}"
    );
    assert_eq!(
        store.begin_transaction(&k, at(T0)).unwrap(),
        TxBegin::Replay { serial: vec![1] }
    );
}

fn failure_cannot_erase_another_requests_claim(store: &dyn Store) {
    assert_eq!(
        store.begin_transaction(&key("tx-1", 1), at(T0)).unwrap(),
        TxBegin::Fresh
    );
    let result = store.record_failure(&key("tx-1", 2), 2, "not mine", at(T0));
    assert!(
        matches!(result, Err(StoreError::NotInProgress { .. })),
        "{result:?}"
    );
}

fn failure_of_an_unknown_transaction_is_recorded(store: &dyn Store) {
    store
        .record_failure(&key("tx-1", 1), 2, "refused early", at(T0))
        .unwrap();
    assert_eq!(
        store.begin_transaction(&key("tx-1", 2), at(T0)).unwrap(),
        TxBegin::Fresh
    );
}

fn duplicate_serial_is_refused(store: &dyn Store) {
    let first = cert(b"\x07", "CN=a", T0);
    issue(store, &key("tx-1", 1), &first);
    let second = key("tx-2", 2);
    assert_eq!(
        store.begin_transaction(&second, at(T0)).unwrap(),
        TxBegin::Fresh
    );
    let result = store.record_issued(&second, &cert(b"\x07", "CN=b", T0 + 5));
    assert!(
        matches!(result, Err(StoreError::DuplicateSerial(ref s)) if s == "07"),
        "{result:?}"
    );
    // Nothing of the refused record was written: same certificate, no index, still running.
    assert_eq!(store.certificate(b"\x07").unwrap(), Some(first));
    assert!(store.certificates_by_subject("CN=b").unwrap().is_empty());
    assert_eq!(
        store.begin_transaction(&second, at(T0)).unwrap(),
        TxBegin::InProgress
    );
}

fn certificate_round_trips(store: &dyn Store) {
    let mut record = cert(b"\x00\xff", "CN=device,O=Example", T0);
    record.transaction_id = "tx-1".into();
    issue(store, &key("tx-1", 1), &record);
    assert_eq!(store.certificate(b"\x00\xff").unwrap(), Some(record));
    assert_eq!(store.certificate(b"\x01").unwrap(), None);
}

fn times_are_kept_to_the_second(store: &dyn Store) {
    let mut record = cert(b"\x01", "CN=a", T0);
    record.not_before = at(T0) + Duration::from_millis(999);
    issue(store, &key("tx-1", 1), &record);
    let stored = store.certificate(b"\x01").unwrap().unwrap();
    assert_eq!(stored.not_before, at(T0));
}

fn certificates_are_ordered_by_not_before_then_serial(store: &dyn Store) {
    issue(store, &key("tx-1", 1), &cert(b"\x03", "CN=a", T0 + 10));
    issue(store, &key("tx-2", 2), &cert(b"\x02", "CN=b", T0));
    issue(store, &key("tx-3", 3), &cert(b"\x01", "CN=c", T0 + 10));
    let serials: Vec<_> = store
        .certificates()
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(serials, [vec![2], vec![1], vec![3]]);
}

fn certificates_by_subject_match_exactly(store: &dyn Store) {
    issue(store, &key("tx-1", 1), &cert(b"\x01", "CN=a", T0 + 5));
    issue(store, &key("tx-2", 2), &cert(b"\x02", "CN=ab", T0));
    issue(store, &key("tx-3", 3), &cert(b"\x03", "CN=a", T0));
    let of = |subject| -> Vec<Vec<u8>> {
        let found = store.certificates_by_subject(subject).unwrap();
        found.into_iter().map(|c| c.serial).collect()
    };
    assert_eq!(of("CN=a"), [vec![3], vec![1]]);
    assert_eq!(of("CN=ab"), [vec![2]]);
    assert!(of("CN=").is_empty());
}

fn redeem_once_is_true_only_the_first_time(store: &dyn Store) {
    let forget_after = at(T0 + 3600);
    assert!(store.redeem_once(b"otp-1", forget_after, at(T0)).unwrap());
    assert!(!store
        .redeem_once(b"otp-1", forget_after, at(T0 + 1))
        .unwrap());
    assert!(!store
        .redeem_once(b"otp-1", forget_after, at(T0 + 3599))
        .unwrap());
    assert!(store.redeem_once(b"otp-2", forget_after, at(T0)).unwrap());
}

fn redemption_is_forgotten_after_its_time(store: &dyn Store) {
    assert!(store.redeem_once(b"old", at(T0 + 60), at(T0)).unwrap());
    assert!(store.redeem_once(b"live", at(T0 + 7200), at(T0)).unwrap());
    assert_eq!(store.forget_expired_redemptions(at(T0 + 59)).unwrap(), 0);
    assert_eq!(store.forget_expired_redemptions(at(T0 + 60)).unwrap(), 1);
    assert!(!store
        .redeem_once(b"live", at(T0 + 7200), at(T0 + 61))
        .unwrap());
    assert!(store
        .redeem_once(b"old", at(T0 + 120), at(T0 + 61))
        .unwrap());
}

fn expired_redemption_may_be_redeemed_again_before_cleanup(store: &dyn Store) {
    assert!(store.redeem_once(b"id", at(T0 + 60), at(T0)).unwrap());
    assert!(store.redeem_once(b"id", at(T0 + 120), at(T0 + 60)).unwrap());
    assert!(!store.redeem_once(b"id", at(T0 + 120), at(T0 + 61)).unwrap());
}

fn concurrent_redeem_once_has_exactly_one_winner(store: &dyn Store) {
    let wins = run_on_8_threads(|| store.redeem_once(b"otp", at(T0 + 60), at(T0)).unwrap());
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
}

fn revoke_records_who_when_and_why(store: &dyn Store) {
    issue(store, &key("tx-1", 1), &cert(b"\x01", "CN=a", T0));
    let outcome = store
        .revoke(b"\x01", "keyCompromise", "admin", at(T0 + 100))
        .unwrap();
    assert_eq!(outcome, RevokeOutcome::Revoked);
    let status = store.certificate(b"\x01").unwrap().unwrap().status;
    let expected = CertStatus::Revoked {
        at: at(T0 + 100),
        reason: "keyCompromise".into(),
        by: "admin".into(),
    };
    assert_eq!(status, expected);
}

fn revoking_twice_reports_the_first_revocation(store: &dyn Store) {
    issue(store, &key("tx-1", 1), &cert(b"\x01", "CN=a", T0));
    store
        .revoke(b"\x01", "keyCompromise", "admin", at(T0 + 100))
        .unwrap();
    let again = store
        .revoke(b"\x01", "superseded", "intune", at(T0 + 200))
        .unwrap();
    let first = RevokeOutcome::AlreadyRevoked {
        at: at(T0 + 100),
        reason: "keyCompromise".into(),
        by: "admin".into(),
    };
    assert_eq!(again, first);
}

fn revoking_an_unknown_serial_is_not_found(store: &dyn Store) {
    let outcome = store
        .revoke(b"\x09", "keyCompromise", "admin", at(T0))
        .unwrap();
    assert_eq!(outcome, RevokeOutcome::NotFound);
}

fn revocations_are_ordered_by_time_then_serial(store: &dyn Store) {
    issue(store, &key("tx-1", 1), &cert(b"\x01", "CN=a", T0));
    issue(store, &key("tx-2", 2), &cert(b"\x02", "CN=b", T0));
    issue(store, &key("tx-3", 3), &cert(b"\x03", "CN=c", T0));
    store
        .revoke(b"\x03", "superseded", "admin", at(T0 + 50))
        .unwrap();
    store
        .revoke(b"\x02", "keyCompromise", "admin", at(T0 + 10))
        .unwrap();
    let revocations = store.revocations().unwrap();
    let expected = vec![
        (vec![2], at(T0 + 10), "keyCompromise".to_string()),
        (vec![3], at(T0 + 50), "superseded".to_string()),
    ];
    assert_eq!(revocations, expected);
}

/// Run `f` on 8 threads released together; collect the answers.
fn event(id: &str, kind: EventKind, capacity: usize) -> NewEvent {
    NewEvent {
        event: Event {
            id: id.into(),
            connector: "webhook".into(),
            kind,
            transaction_id: "tx".into(),
            template: "devices".into(),
            serial: Some("01".into()),
            reason: None,
            detail: None,
            by: None,
            time: T0,
            csr: None,
            certificate: None,
        },
        capacity,
        not_before_ms: 0,
    }
}

fn issued_certificate_and_its_event_commit_together(store: &dyn Store) {
    let k = key("tx-1", 1);
    store.begin_transaction(&k, at(T0)).unwrap();
    let e = event("e1", EventKind::Issued, 10);
    store
        .record_issued_with_event(&k, &cert(b"\x01", "CN=a", T0), Some(&e))
        .unwrap();
    let pending = store.outbox().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event, e.event);
    assert_eq!(store.outbox_depth().unwrap(), 1);
    // A refused state change writes no event.
    let again = store.record_issued_with_event(&k, &cert(b"\x02", "CN=a", T0), Some(&e));
    assert!(again.is_err());
    assert_eq!(store.outbox_depth().unwrap(), 1);
}

fn a_full_outbox_refuses_the_state_change(store: &dyn Store) {
    let k1 = key("tx-1", 1);
    store.begin_transaction(&k1, at(T0)).unwrap();
    store
        .record_issued_with_event(
            &k1,
            &cert(b"\x01", "CN=a", T0),
            Some(&event("e1", EventKind::Issued, 1)),
        )
        .unwrap();
    let k2 = key("tx-2", 2);
    store.begin_transaction(&k2, at(T0)).unwrap();
    let refused = store.record_issued_with_event(
        &k2,
        &cert(b"\x02", "CN=b", T0),
        Some(&event("e2", EventKind::Issued, 1)),
    );
    assert!(
        matches!(refused, Err(StoreError::OutboxFull { capacity: 1 })),
        "{refused:?}"
    );
    assert!(
        store.certificate(b"\x02").unwrap().is_none(),
        "nothing written"
    );
    let revoke = store.revoke_with_event(
        b"\x01",
        "keyCompromise",
        "admin",
        at(T0 + 1),
        Some(&event("e3", EventKind::Revoked, 1)),
    );
    assert!(
        matches!(revoke, Err(StoreError::OutboxFull { .. })),
        "{revoke:?}"
    );
    assert_eq!(
        store.certificate(b"\x01").unwrap().unwrap().status,
        CertStatus::Valid
    );
    let failure = store.record_failure_with_event(
        &k2,
        2,
        "refused",
        at(T0),
        Some(&event("e4", EventKind::Failed, 1)),
    );
    assert!(matches!(failure, Err(StoreError::OutboxFull { .. })));
    // Delivering one makes room again.
    let seq = store.outbox().unwrap()[0].seq;
    assert!(store.outbox_delivered(seq).unwrap());
    assert!(!store.outbox_delivered(seq).unwrap());
    store
        .record_failure_with_event(
            &k2,
            2,
            "refused",
            at(T0),
            Some(&event("e4", EventKind::Failed, 1)),
        )
        .unwrap();
    assert_eq!(store.outbox().unwrap()[0].event.id, "e4");
}

fn events_keep_their_order_attempts_and_backoff(store: &dyn Store) {
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let serial = [i as u8 + 1];
        let k = key(&format!("tx-{i}"), i as u8);
        store.begin_transaction(&k, at(T0)).unwrap();
        store.record_issued(&k, &cert(&serial, "CN=a", T0)).unwrap();
        let outcome = store
            .revoke_with_event(
                &serial,
                "keyCompromise",
                "admin",
                at(T0),
                Some(&event(id, EventKind::Revoked, 10)),
            )
            .unwrap();
        assert_eq!(outcome, RevokeOutcome::Revoked);
    }
    // Already revoked: no second event.
    let again = store
        .revoke_with_event(
            &[1],
            "keyCompromise",
            "admin",
            at(T0),
            Some(&event("x", EventKind::Revoked, 10)),
        )
        .unwrap();
    assert!(matches!(again, RevokeOutcome::AlreadyRevoked { .. }));
    let ids: Vec<String> = store
        .outbox()
        .unwrap()
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let first = store.outbox().unwrap()[0].seq;
    store
        .outbox_attempt_failed(first, 5_000, "connection refused")
        .unwrap();
    store
        .outbox_attempt_failed(first, 9_000, "HTTP 503")
        .unwrap();
    let entry = store.outbox().unwrap()[0].clone();
    assert_eq!((entry.attempts, entry.next_try_ms), (2, 9_000));
    assert_eq!(entry.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(store.outbox_retry(Some("a")).unwrap(), 1);
    let entry = store.outbox().unwrap()[0].clone();
    assert_eq!(
        (entry.attempts, entry.next_try_ms),
        (2, 0),
        "attempts stay, backoff cleared"
    );
    assert_eq!(store.outbox_retry(Some("nope")).unwrap(), 0);
    assert_eq!(store.outbox_retry(None).unwrap(), 3);
}

fn run_on_8_threads<T: Send>(f: impl Fn() -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(8);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    f()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// One `#[test]` per store for each shared test function.
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
    fresh_then_replay_of_the_same_request,
    other_csr_after_success_conflicts,
    other_message_type_after_success_conflicts,
    same_request_while_running_is_in_progress,
    other_csr_while_running_conflicts,
    failed_transaction_may_be_reused_with_any_csr,
    stale_in_progress_marker_is_taken_over,
    marker_from_the_future_is_not_stale,
    concurrent_begin_admits_exactly_one,
    record_issued_requires_a_begun_transaction,
    record_issued_twice_is_refused,
    failure_cannot_erase_a_success,
    failure_cannot_erase_another_requests_claim,
    failure_of_an_unknown_transaction_is_recorded,
    duplicate_serial_is_refused,
    certificate_round_trips,
    times_are_kept_to_the_second,
    certificates_are_ordered_by_not_before_then_serial,
    certificates_by_subject_match_exactly,
    redeem_once_is_true_only_the_first_time,
    redemption_is_forgotten_after_its_time,
    expired_redemption_may_be_redeemed_again_before_cleanup,
    concurrent_redeem_once_has_exactly_one_winner,
    revoke_records_who_when_and_why,
    revoking_twice_reports_the_first_revocation,
    revoking_an_unknown_serial_is_not_found,
    revocations_are_ordered_by_time_then_serial,
    issued_certificate_and_its_event_commit_together,
    a_full_outbox_refuses_the_state_change,
    events_keep_their_order_attempts_and_backoff,
);

mod sled_only {
    use super::*;

    #[test]
    fn certificates_transactions_and_redemptions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let k = key("tx-1", 1);
        let record = cert(b"\x01", "CN=a", T0);
        {
            let store = SledStore::open(dir.path()).unwrap();
            issue(&store, &k, &record);
            store
                .revoke(b"\x01", "keyCompromise", "admin", at(T0 + 1))
                .unwrap();
            assert!(store.redeem_once(b"otp", at(T0 + 60), at(T0)).unwrap());
        }
        let store = SledStore::open(dir.path()).unwrap();
        let stored = store.certificate(b"\x01").unwrap().unwrap();
        assert_eq!(stored.der, record.der);
        assert!(matches!(stored.status, CertStatus::Revoked { .. }));
        assert_eq!(store.certificates_by_subject("CN=a").unwrap().len(), 1);
        assert_eq!(
            store.begin_transaction(&k, at(T0)).unwrap(),
            TxBegin::Replay { serial: vec![1] }
        );
        assert!(!store.redeem_once(b"otp", at(T0 + 60), at(T0 + 1)).unwrap());
    }

    #[test]
    fn outbox_events_survive_reopening_and_sequence_numbers_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first_seq;
        {
            let store = SledStore::open(dir.path()).unwrap();
            let k = key("tx-1", 1);
            store.begin_transaction(&k, at(T0)).unwrap();
            store
                .record_failure_with_event(
                    &k,
                    2,
                    "refused",
                    at(T0),
                    Some(&event("e1", EventKind::Failed, 10)),
                )
                .unwrap();
            first_seq = store.outbox().unwrap()[0].seq;
            store.outbox_attempt_failed(first_seq, 77, "down").unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let entries = store.outbox().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].event.id.as_str(), entries[0].attempts),
            ("e1", 1)
        );
        assert!(store.outbox_delivered(first_seq).unwrap());
        let k = key("tx-2", 2);
        store.begin_transaction(&k, at(T0)).unwrap();
        store
            .record_failure_with_event(
                &k,
                2,
                "refused",
                at(T0),
                Some(&event("e2", EventKind::Failed, 10)),
            )
            .unwrap();
        assert!(store.outbox().unwrap()[0].seq > first_seq);
        assert_eq!(store.outbox_depth().unwrap(), 1);
    }

    #[test]
    fn opening_a_store_twice_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let second = SledStore::open(dir.path());
        assert!(
            matches!(second, Err(StoreError::Locked { .. })),
            "{second:?}"
        );
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .certificates
            .insert(b"\x01", &b"not json"[..])
            .unwrap();
        store.transactions.insert(b"tx-1", &b"{"[..]).unwrap();
        assert!(matches!(
            store.certificate(b"\x01"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.certificates(),
            Err(StoreError::Corrupt { .. })
        ));
        let begin = store.begin_transaction(&key("tx-1", 1), at(T0));
        assert!(
            matches!(begin, Err(StoreError::Corrupt { .. })),
            "{begin:?}"
        );
    }
}
