//! How tpcflow opens HDF5 files.
//!
//! HDF5's own file locking (flock) is switched off, as NERSC recommends
//! (`HDF5_USE_FILE_LOCKING=FALSE`) for Lustre and GPFS. tpcflow never needs
//! it: every writer writes a temporary name and renames, so no reader sees a
//! file being written. It also does harm: HDF5 opens files without
//! `O_CLOEXEC`, so a child process forked by another thread (sbatch, h5dump)
//! inherits the descriptor and holds the lock until it exits, and an
//! unrelated open then fails with EAGAIN.

use std::path::Path;

/// Create (truncate) a file for writing; objects of 64 KiB or more are
/// aligned to 4 KiB so big contiguous datasets are page-aligned for mmap.
///
/// # Errors
/// When HDF5 cannot create the file.
pub fn create(path: &Path) -> hdf5::Result<hdf5::File> {
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false).alignment(65536, 4096))
        .create(path)
}

/// Open a file read-only.
///
/// # Errors
/// When HDF5 cannot open the file.
pub fn open(path: &Path) -> hdf5::Result<hdf5::File> {
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open(path)
}

/// Open a file read-write.
///
/// # Errors
/// When HDF5 cannot open the file.
pub fn open_rw(path: &Path) -> hdf5::Result<hdf5::File> {
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open_rw(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn files_open_while_another_process_holds_a_flock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.h5");
        drop(super::create(&path).unwrap());
        // What an inherited descriptor in a forked child amounts to: an
        // exclusive flock held by another open file description.
        let holder = std::fs::File::open(&path).unwrap();
        holder.lock().unwrap();
        let f = super::open(&path).expect("opens despite the flock");
        drop(f);
        let g = super::open_rw(&path).expect("opens read-write despite the flock");
        drop(g);
        drop(super::create(&path).expect("re-creates despite the flock"));
    }
}
