//! Durability for sled, shared by concurrent writers (group commit).
//!
//! sled 0.34's `Db::flush` writes its buffers with `sync_file_range`, which neither writes the
//! file's metadata nor flushes the disk's write cache: after a power loss a "flushed" write can
//! be gone. So after the flush we `fsync` (`sync_data`) sled's log file, which works on the
//! inode whichever descriptor asks. An fsync costs milliseconds on real disks, so writers that
//! arrive while one is running wait for it and the next one covers them all: one sync per
//! batch, not one per certificate.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::StoreError;

/// Hands out write sequence numbers and makes them durable in batches.
#[derive(Debug)]
pub(super) struct GroupCommit {
    /// sled's log (`<store>/db`), opened only to fsync it.
    log: File,
    /// Sequence number of the last write that asked to be made durable.
    written: AtomicU64,
    /// Every write up to this sequence number is on disk. The lock is the I/O serialisation
    /// point (one sync at a time), never held while computing anything.
    durable: Mutex<u64>,
}

impl GroupCommit {
    /// Opens sled's log file in the store directory `path` (after sled created it).
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let log = File::open(path.join("db")).map_err(|e| StoreError::Durability(e.to_string()))?;
        Ok(Self {
            log,
            written: AtomicU64::new(0),
            durable: Mutex::new(0),
        })
    }

    /// Returns once every write completed before this call is durable. Call it after the
    /// write (a sled transaction) has returned.
    pub(super) fn commit(&self, db: &sled::Db) -> Result<(), StoreError> {
        let mine = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut durable = self
            .durable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *durable >= mine {
            // Another writer's sync started after our write and covered it.
            return Ok(());
        }
        // Every sequence number handed out so far belongs to a write that has completed.
        let target = self.written.load(Ordering::SeqCst);
        db.flush()?;
        self.log
            .sync_data()
            .map_err(|e| StoreError::Durability(e.to_string()))?;
        *durable = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_all_return_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let commit = GroupCommit::open(dir.path()).expect("log file");
        std::thread::scope(|scope| {
            for writer in 0..8u8 {
                let (db, commit) = (&db, &commit);
                scope.spawn(move || {
                    for i in 0..20u8 {
                        db.insert([writer, i], vec![i; 64]).expect("insert");
                        commit.commit(db).expect("commit");
                    }
                });
            }
        });
        let durable = *commit.durable.lock().expect("lock");
        assert_eq!(durable, 160, "every write is covered by some sync");
        assert_eq!(commit.written.load(Ordering::SeqCst), 160);
    }
}
