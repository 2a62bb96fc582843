//! The per-run ledger of salted files (in the vault) and the pass lock.
//!
//! The ledger lists, for each salted file of a run, its original event-id
//! range, how many salt events it got, and its last trigger time. From it a
//! new file learns how far its ids shift (salt of the earlier files), whether
//! a later file is already salted (then it gets no salt, so ids never
//! collide), and the previous file's last trigger (so salt may precede its
//! first real event). It is encrypted like every vault file: salt counts are
//! secret.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{SaltError, Vault, VaultError};
use crate::exclusive_lock::ExclusiveLock;

/// One salted file of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// File sequence.
    pub sequence: u32,
    /// Smallest original event id of the file.
    pub original_first_id: u64,
    /// Largest original event id of the file.
    pub original_last_id: u64,
    /// Salt events added.
    pub n_salt: u64,
    /// Trigger time of the file's last event [ns since the run start].
    pub last_trigger_time_ns: i64,
}

/// What the ledger says about a new file with original ids `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Shift of the ids: salt events of the run's earlier files.
    pub id_shift: u64,
    /// A later file is already salted: this one gets no salt.
    pub no_salt: bool,
    /// Last trigger of the directly preceding file [ns], when salted.
    pub left_anchor_ns: Option<i64>,
}

/// The salted files of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunLedger {
    /// Run number.
    pub run: u32,
    /// Salted files, by sequence.
    pub files: Vec<LedgerEntry>,
}

impl RunLedger {
    /// Vault name of a run's ledger.
    pub fn vault_name(run: u32) -> String {
        format!("{run:06}/ledger.vault")
    }

    /// Load the ledger of `run` (empty when none yet).
    ///
    /// # Errors
    /// As [`Vault::read`].
    pub fn load(vault: &Vault, run: u32) -> Result<Self, VaultError> {
        Ok(vault
            .read(&Self::vault_name(run))?
            .unwrap_or(RunLedger { run, files: vec![] }))
    }

    /// Save it (atomically).
    ///
    /// # Errors
    /// As [`Vault::write`].
    pub fn save(&self, vault: &Vault) -> Result<(), VaultError> {
        vault.write(&Self::vault_name(self.run), self)
    }

    /// Add or replace the entry of a sequence.
    pub fn upsert(&mut self, e: LedgerEntry) {
        self.files.retain(|f| f.sequence != e.sequence);
        self.files.push(e);
        self.files.sort_by_key(|f| f.sequence);
    }

    /// Where file `sequence` with original ids `first..=last` goes.
    ///
    /// # Errors
    /// [`SaltError::Unsaltable`] when its ids overlap another salted file's.
    pub fn placement(
        &self,
        file: &str,
        sequence: u32,
        first: u64,
        last: u64,
    ) -> Result<Placement, SaltError> {
        let mut p = Placement {
            id_shift: 0,
            no_salt: false,
            left_anchor_ns: None,
        };
        for e in self.files.iter().filter(|e| e.sequence != sequence) {
            if e.original_last_id < first {
                p.id_shift += e.n_salt;
                if e.original_last_id + 1 == first {
                    p.left_anchor_ns = Some(e.last_trigger_time_ns);
                }
            } else if e.original_first_id > last {
                p.no_salt = true;
            } else {
                return Err(SaltError::Unsaltable {
                    file: file.to_string(),
                    what: format!(
                        "event ids {first}..={last} overlap those of salted file sequence {} ({}..={})",
                        e.sequence, e.original_first_id, e.original_last_id
                    ),
                });
            }
        }
        Ok(p)
    }
}

/// Only one salting pass at a time per vault: an flock on `salt.lock`
/// (see [`crate::exclusive_lock`]), so two passes never share the staging
/// file nor overwrite each other's ledger, and a pass that died leaves no
/// lock behind.
#[derive(Debug)]
pub struct PassLock {
    _lock: ExclusiveLock,
}

impl PassLock {
    /// Take the lock, or refuse naming the holder.
    ///
    /// # Errors
    /// [`SaltError::Locked`] naming the lock file and the holder's pid.
    pub fn acquire(vault_dir: &Path) -> Result<Self, SaltError> {
        let path = vault_dir.join("salt.lock");
        let what = format!("a salting pass on vault {}", vault_dir.display());
        Ok(Self {
            _lock: ExclusiveLock::try_acquire(&path, &what)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sequence: u32, first: u64, last: u64, n_salt: u64) -> LedgerEntry {
        LedgerEntry {
            sequence,
            original_first_id: first,
            original_last_id: last,
            n_salt,
            last_trigger_time_ns: 1000 * last as i64,
        }
    }

    #[test]
    fn shifts_accumulate_late_files_get_no_salt_and_overlaps_are_refused() {
        let mut l = RunLedger::default();
        l.upsert(entry(0, 0, 59, 3));
        l.upsert(entry(1, 60, 119, 5));
        l.upsert(entry(3, 180, 239, 2));
        let p = l.placement("x", 2, 120, 179).unwrap();
        assert_eq!(p.id_shift, 8);
        assert!(p.no_salt, "sequence 3 is salted already");
        assert_eq!(p.left_anchor_ns, Some(119_000));
        let p = l.placement("x", 4, 240, 299).unwrap();
        assert_eq!((p.id_shift, p.no_salt), (10, false));
        assert_eq!(
            l.placement("x", 1, 60, 119).unwrap().id_shift,
            3,
            "a redo ignores its own entry"
        );
        assert!(l.placement("x", 9, 100, 130).is_err());
    }
}
