//! One dispatcher per catalog: the lock file `{catalog}.dispatch.lock`, an
//! [`ExclusiveLock`] the kernel releases when the dispatcher exits.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::exclusive_lock::{ExclusiveLock, LockError};

/// The process-wide lock: one dispatcher per catalog.
#[derive(Debug)]
pub struct DispatchLock {
    _lock: ExclusiveLock,
    /// The lock file.
    pub path: PathBuf,
}

impl DispatchLock {
    /// Take the lock `{catalog}.dispatch.lock` or fail naming the holder.
    ///
    /// # Errors
    /// When another dispatcher holds it, or the lock file cannot be opened or written.
    pub fn acquire(catalog: &Path) -> Result<Self> {
        let path = PathBuf::from(format!("{}.dispatch.lock", catalog.display()));
        let what = format!("a dispatcher on {}", catalog.display());
        match ExclusiveLock::try_acquire(&path, &what) {
            Ok(lock) => Ok(Self { _lock: lock, path }),
            Err(LockError::Held { holder, .. }) => bail!(
                "another dispatcher is running on {} (lock {} held by pid {})",
                catalog.display(),
                path.display(),
                holder
            ),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_dispatcher_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("c.sqlite");
        let first = DispatchLock::acquire(&catalog).unwrap();
        let msg = DispatchLock::acquire(&catalog).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "another dispatcher is running on {} (lock {} held by pid {})",
                catalog.display(),
                first.path.display(),
                std::process::id()
            )
        );
        drop(first);
        DispatchLock::acquire(&catalog).unwrap();
    }
}
