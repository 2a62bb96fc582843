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

/// Largest ratio of a dataset's bytes in memory to its bytes in the file
/// that a reader accepts: deflate cannot compress by more than 1032:1.
pub const MAX_EXPANSION: u64 = 1032;
/// Bytes any dataset may take in memory whatever its storage (small or
/// never-written datasets read as fill values) [bytes].
pub const ALWAYS_READABLE_BYTES: u64 = 1 << 20;

/// The bytes reading `ds` whole would allocate, when its storage in the file
/// can account for them: no more than the storage (itself no more than the
/// file) for an unfiltered dataset, [`MAX_EXPANSION`] times it for a
/// compressed one, or [`ALWAYS_READABLE_BYTES`]. A dataspace whose dimensions
/// were corrupted to claim 2^40 rows would otherwise make a whole read
/// allocate terabytes.
///
/// # Errors
/// A message with the claimed shape and the storage, when it cannot.
pub fn read_size(ds: &hdf5::Dataset) -> Result<u64, String> {
    let shape = ds.shape();
    let elem = ds.dtype().map_err(|e| format!("datatype: {e}"))?.size() as u64;
    let bytes = shape
        .iter()
        .try_fold(elem, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    let file_bytes = ds.file().map_or(u64::MAX, |f| f.size());
    let storage = ds.storage_size().min(file_bytes);
    let expansion = if ds.filters().is_empty() {
        1
    } else {
        MAX_EXPANSION
    };
    let limit = storage.saturating_mul(expansion).max(ALWAYS_READABLE_BYTES);
    if bytes > limit {
        return Err(format!(
            "shape {shape:?} of {elem}-byte elements claims {bytes} bytes, \
             but the file stores {storage} bytes of it"
        ));
    }
    Ok(bytes)
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
