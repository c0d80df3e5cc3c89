//! The CRL publisher: holds the current signed CRL (RFC 5280 §5) and regenerates it from the
//! store's revocations, at start-up, after every revocation made through the admin API, and
//! on a schedule (half the nextUpdate interval, so that a relying party never holds a CRL
//! past its nextUpdate while the server runs).

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use scepd_ca::{CaBackend, RevocationReason, RevokedEntry};

use crate::store::Store;

/// Errors of CRL generation.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// The store could not list revocations or count CRLs.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The CA could not sign.
    #[error("CA: {0}")]
    Ca(#[from] scepd_ca::CaError),
}

/// One published CRL and what it says, for logs and tests.
#[derive(Debug, Clone)]
pub struct PublishedCrl {
    /// The CertificateList, DER.
    pub der: Bytes,
    /// Its cRLNumber.
    pub number: u64,
    /// How many certificates it lists.
    pub revoked: usize,
}

/// Holds the current CRL; shared by the HTTP route, the admin API and the schedule.
pub struct CrlPublisher {
    ca: Arc<dyn CaBackend>,
    store: Arc<dyn Store>,
    next_update: Duration,
    current: RwLock<Option<PublishedCrl>>,
    /// Serialises regenerations, so that a CRL never replaces one with a higher number.
    regenerating: Mutex<()>,
    /// List only certificates this CA signed (when several CA generations share the store).
    own_certificates_only: bool,
}

impl std::fmt::Debug for CrlPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlPublisher")
            .field("next_update", &self.next_update)
            .finish_non_exhaustive()
    }
}

impl CrlPublisher {
    /// A publisher with no CRL yet: call [`CrlPublisher::regenerate`] before serving.
    pub fn new(ca: Arc<dyn CaBackend>, store: Arc<dyn Store>, next_update: Duration) -> Self {
        Self {
            ca,
            store,
            next_update,
            current: RwLock::new(None),
            regenerating: Mutex::new(()),
            own_certificates_only: false,
        }
    }

    /// Lists only the revoked certificates that this publisher's CA signed: needed when the
    /// store also holds certificates of other CA generations (one signature check per
    /// revoked certificate at each signing).
    pub fn own_certificates_only(mut self) -> Self {
        self.own_certificates_only = true;
        self
    }

    /// Whether this publisher's CA signed `cert_der`.
    pub fn covers(&self, cert_der: &[u8]) -> bool {
        self.ca.issued(cert_der)
    }

    /// How often the schedule regenerates: half of nextUpdate - thisUpdate (at least a minute).
    pub fn refresh_interval(&self) -> Duration {
        (self.next_update / 2).max(Duration::from_secs(60))
    }

    /// The current CRL, if one was generated.
    pub fn current(&self) -> Option<PublishedCrl> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Signs a new CRL listing every revocation in the store, with the next cRLNumber, and
    /// makes it current. CPU-bound (one signature) and reads the store.
    pub fn regenerate(&self, now: SystemTime) -> Result<PublishedCrl, CrlError> {
        let _one_at_a_time = self
            .regenerating
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut revocations = self.store.revocations()?;
        if self.own_certificates_only {
            revocations.retain(|(serial, _, _)| self.signed_here(serial));
        }
        let revoked: Vec<RevokedEntry> = revocations
            .into_iter()
            .map(|(serial, at, reason)| RevokedEntry {
                serial,
                at,
                // Free-text reasons (from before the reason was checked) are unspecified.
                reason: reason
                    .parse::<RevocationReason>()
                    .unwrap_or(RevocationReason::Unspecified),
            })
            .collect();
        let unix_seconds = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let number = self.store.next_crl_number(unix_seconds)?;
        let der = self.ca.crl(&revoked, now, now + self.next_update, number)?;
        let published = PublishedCrl {
            der: Bytes::from(der),
            number,
            revoked: revoked.len(),
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(published.clone());
        tracing::info!(
            crl_number = number,
            revoked = published.revoked,
            "CRL published"
        );
        Ok(published)
    }

    /// Whether the stored certificate `serial` was signed by this CA. A record that cannot be
    /// read is listed (a CRL that lists too much is safer than one that lists too little).
    fn signed_here(&self, serial: &[u8]) -> bool {
        match self.store.certificate(serial) {
            Ok(Some(record)) => self.ca.issued(&record.der),
            _ => true,
        }
    }
}

/// The CRLs of every CA generation in service, each at `/crl/<name>.crl`.
#[derive(Debug)]
pub struct CrlSet {
    entries: Vec<(String, Arc<CrlPublisher>)>,
}

impl CrlSet {
    /// The publishers by name; the first is the one of the generation in charge.
    pub fn new(entries: Vec<(String, Arc<CrlPublisher>)>) -> Self {
        Self { entries }
    }

    /// One publisher under `name`.
    pub fn single(name: &str, publisher: Arc<CrlPublisher>) -> Self {
        Self::new(vec![(name.to_owned(), publisher)])
    }

    /// The publisher served at `/crl/<name>.crl` (names compare case-insensitively).
    pub fn get(&self, name: &str) -> Option<&Arc<CrlPublisher>> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| p)
    }

    /// The publisher whose CA signed `cert_der`.
    pub fn for_certificate(&self, cert_der: &[u8]) -> Option<&Arc<CrlPublisher>> {
        self.entries
            .iter()
            .map(|(_, p)| p)
            .find(|p| p.covers(cert_der))
    }

    /// Every publisher.
    pub fn publishers(&self) -> impl Iterator<Item = &Arc<CrlPublisher>> {
        self.entries.iter().map(|(_, p)| p)
    }

    /// Re-signs every CRL; every failure is logged, the first is returned.
    pub fn regenerate_all(&self, now: SystemTime) -> Result<(), CrlError> {
        let mut first_error = None;
        for (name, publisher) in &self.entries {
            if let Err(e) = publisher.regenerate(now) {
                tracing::error!(crl = %name, error = %e, "CRL not signed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, SledStore};

    fn software_ca() -> Arc<dyn CaBackend> {
        let key = scepd_ca::generate_key(scepd_ca::KeySpec::P256).unwrap();
        let cert = scepd_ca::self_signed_ca(&key, "CN=CRL test CA", 30).unwrap();
        Arc::new(scepd_ca::SoftwareCa::from_parts(cert, key, Vec::new()).unwrap())
    }

    #[test]
    fn each_regeneration_is_current_and_numbered_above_the_last_and_the_unix_time() {
        let publisher = CrlPublisher::new(
            software_ca(),
            Arc::new(MemoryStore::new()),
            Duration::from_secs(24 * 3600),
        );
        assert!(publisher.current().is_none());
        assert_eq!(publisher.refresh_interval(), Duration::from_secs(12 * 3600));
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = publisher.regenerate(now).unwrap();
        let second = publisher.regenerate(now).unwrap();
        // The Unix time, then one more within the same second.
        assert_eq!(
            (first.number, second.number),
            (1_800_000_000, 1_800_000_001)
        );
        assert_eq!(publisher.current().unwrap().der, second.der);
        let crl = openssl::x509::X509Crl::from_der(&second.der).unwrap();
        assert!(crl.get_revoked().is_none());
        // A clock stepped back still gets a higher number.
        let third = publisher
            .regenerate(now - Duration::from_secs(3600))
            .unwrap();
        assert_eq!(third.number, 1_800_000_002);
    }

    #[test]
    fn the_sled_crl_number_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.next_crl_number(0).unwrap(), 1);
            assert_eq!(store.next_crl_number(0).unwrap(), 2);
            assert_eq!(store.next_crl_number(100).unwrap(), 100);
        }
        let store = SledStore::open_waiting(dir.path(), Duration::from_secs(5)).unwrap();
        assert_eq!(store.next_crl_number(50).unwrap(), 101);
    }
}
