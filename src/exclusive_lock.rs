//! Exclusive locks on a lock file (`flock`), for the stages that must never
//! run twice at once: the mover and the retention stage share
//! `{catalog}.transfer.lock`, a salting pass holds `{vault}/salt.lock`.
//!
//! The kernel releases an flock when its holder exits, however it exits, so
//! there is no stale lock to take over and no race in taking one over. The
//! file is never deleted (a process that deleted it would let the next one
//! lock a fresh inode while a third still holds the old one); it holds the
//! holder's pid, for the error message only.
//!
//! ```no_run
//! use tpcflow::exclusive_lock::ExclusiveLock;
//! let _lock = ExclusiveLock::try_acquire(std::path::Path::new("/tmp/c.sqlite.transfer.lock"), "a mover")?;
//! // ... the pass; the lock is released when `_lock` drops or the process ends.
//! # Ok::<(), tpcflow::exclusive_lock::LockError>(())
//! ```

use std::fs::{File, TryLockError};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct ExclusiveLock {
    _file: File,
    path: PathBuf,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{what} is already running: {path} is locked by pid {holder}")]
    Held {
        /// What the lock guards, e.g. "a mover on /data/catalog.sqlite".
        what: String,
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it.
        holder: String,
    },
    /// The lock file could not be opened, locked or written.
    #[error("lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl ExclusiveLock {
    /// Take the lock on `path` (created if needed) without waiting.
    ///
    /// # Errors
    /// [`LockError::Held`] naming `what` and the holder's pid when another
    /// process (or another open of the file in this one) holds it;
    /// [`LockError::Io`].
    pub fn try_acquire(path: &Path, what: &str) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                let holder = holder.trim();
                return Err(LockError::Held {
                    what: what.to_string(),
                    path: path.to_path_buf(),
                    holder: if holder.is_empty() {
                        "unknown".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The mover's lock of a catalog, `{catalog}.transfer.lock`: taken by every
/// transfer pass (`tpcflow transfer`, the dispatcher's stage) and by the
/// retention stage, which deletes the files the mover reads.
pub fn transfer_lock_path(catalog: &Path) -> PathBuf {
    PathBuf::from(format!("{}.transfer.lock", catalog.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = ExclusiveLock::try_acquire(&path, "a test pass").unwrap();
        let e = ExclusiveLock::try_acquire(&path, "a test pass").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("a test pass is already running")
                && msg.contains(&std::process::id().to_string()),
            "{msg}"
        );
        drop(first);
        let again = ExclusiveLock::try_acquire(&path, "a test pass").unwrap();
        assert_eq!(again.path(), path);
        assert!(path.exists(), "the lock file is kept");
    }
}
