//! Files that appear under their final name only when complete and durable.
//!
//! ```text
//! write   a temporary file in the same directory (.{name}.XXXXXX.tmp, or
//!         .{name}.tmp for writers that must name it, e.g. HDF5)
//! fsync   the temporary file: its bytes are on disk
//! rename  to the final name (atomic within one file system)
//! fsync   the directory: the rename itself survives a power cut
//! ```
//!
//! A crash or an error at any step leaves the final name as it was (absent,
//! or the previous complete file) plus at worst a hidden temporary that
//! readers skip (`crate::catalog::ingest::is_temporary_name`). A failed write
//! removes its temporary, so a full disk (ENOSPC) gets its space back.
//!
//! ```no_run
//! use std::path::Path;
//! tpcflow::atomic_file::write(Path::new("/data/report.json"), b"{}\n")?;
//! // A file written by a library at a path it is given:
//! let out = Path::new("/data/000017_00003.rq.h5");
//! let tmp = tpcflow::atomic_file::temp_path(out);
//! std::fs::write(&tmp, b"...")?; // the library writes here
//! let bytes = tpcflow::atomic_file::commit(&tmp, out)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mode of files written by [`write`]: readable by all, like a plain
/// `std::fs::write` under the usual umask.
pub const DEFAULT_MODE: u32 = 0o644;

/// One step of an atomic write failed; the final name is untouched (except
/// for [`AtomicFileError::op`] `fsync directory`, after the rename).
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct AtomicFileError {
    /// The step: `create temporary in`, `write`, `fsync`, `rename to`, ...
    pub op: &'static str,
    /// The file or directory it was done to.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

impl AtomicFileError {
    fn new<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the file system is full (or the quota reached).
    pub fn is_no_space(&self) -> bool {
        is_no_space(&self.source)
    }
}

/// True for "no space left on device" (ENOSPC) and "disk quota exceeded" (EDQUOT).
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

/// The fixed temporary name `.{name}.tmp` beside `path`, for writers that
/// create the file themselves (HDF5, a site's copy command); finish with
/// [`commit`].
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// fsync a directory, making the renames and creations in it durable.
///
/// # Errors
/// [`AtomicFileError`] naming the directory.
pub fn sync_dir(dir: &Path) -> Result<(), AtomicFileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(AtomicFileError::new("fsync directory", dir))
}

/// Write `bytes` to `path` atomically with mode [`DEFAULT_MODE`].
///
/// # Errors
/// [`AtomicFileError`] naming the step and the path; `path` is untouched.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), AtomicFileError> {
    write_with(path, DEFAULT_MODE, false, |f| f.write_all(bytes))
}

/// [`write`] with an explicit mode (e.g. `0o600` for secrets, `0o755` for scripts).
///
/// # Errors
/// As [`write`].
pub fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AtomicFileError> {
    write_with(path, mode, false, |f| f.write_all(bytes))
}

/// Write `path` atomically only if it does not exist (a key that must never
/// be overwritten): the error's source has kind `AlreadyExists` when it does.
///
/// # Errors
/// As [`write`].
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AtomicFileError> {
    write_with(path, mode, true, |f| f.write_all(bytes))
}

/// Write `path` atomically with `fill` writing the content into the
/// temporary file; an error from `fill` leaves `path` untouched and removes
/// the temporary. With `no_clobber`, an existing `path` is an error.
///
/// # Errors
/// [`AtomicFileError`] naming the step and the path.
pub fn write_with(
    path: &Path,
    mode: u32,
    no_clobber: bool,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), AtomicFileError> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(AtomicFileError::new("create temporary in", dir))?;
    // The temporary is removed when `tmp` drops on any error below.
    let tmp_path = tmp.path().to_path_buf();
    fill(tmp.as_file_mut()).map_err(AtomicFileError::new("write", &tmp_path))?;
    tmp.as_file()
        .sync_all()
        .map_err(AtomicFileError::new("fsync", &tmp_path))?;
    let persisted = if no_clobber {
        tmp.persist_noclobber(path)
    } else {
        tmp.persist(path)
    };
    persisted.map_err(|e| AtomicFileError {
        op: if no_clobber {
            "rename (no overwrite) to"
        } else {
            "rename to"
        },
        path: path.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(dir)
}

/// Finish a file written at `tmp` (e.g. [`temp_path`]): fsync it, rename it
/// to `path`, fsync the directory. Returns its size [bytes]. On an error
/// before the rename, `tmp` is removed and `path` is untouched.
///
/// # Errors
/// [`AtomicFileError`] naming the step and the path.
pub fn commit(tmp: &Path, path: &Path) -> Result<u64, AtomicFileError> {
    let renamed = (|| {
        let f = File::open(tmp).map_err(AtomicFileError::new("open", tmp))?;
        f.sync_all().map_err(AtomicFileError::new("fsync", tmp))?;
        let bytes = f
            .metadata()
            .map_err(AtomicFileError::new("stat", tmp))?
            .len();
        std::fs::rename(tmp, path).map_err(AtomicFileError::new("rename to", path))?;
        Ok(bytes)
    })();
    match renamed {
        Ok(bytes) => {
            sync_dir(parent_dir(path))?;
            Ok(bytes)
        }
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_the_content_with_the_mode_and_no_temporary_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write(&path, b"{}\n").unwrap();
        write_with_mode(&dir.path().join("job.sh"), b"#!/bin/sh\n", 0o755).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o644);
        assert_eq!(mode(&dir.path().join("job.sh")), 0o755);
        assert_eq!(names_in(dir.path()), ["job.sh", "report.json"]);
    }

    #[test]
    fn a_failed_write_leaves_no_file_under_the_final_name_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.result.json");
        let err = write_with(&path, DEFAULT_MODE, false, |f| {
            f.write_all(b"{\"status\": \"o")?;
            Err(Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err();
        assert!(err.is_no_space(), "{err}");
        assert_eq!(err.op, "write");
        let text = err.to_string();
        assert!(
            text.contains(".a.result.json."),
            "names the temporary: {text}"
        );
        assert!(text.contains("No space left on device"), "{text}");
        assert!(!path.exists());
        assert!(
            names_in(dir.path()).is_empty(),
            "{:?}",
            names_in(dir.path())
        );
    }

    #[test]
    fn a_failed_write_leaves_an_existing_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.bin");
        write(&path, b"complete old content").unwrap();
        let err = write_with(&path, 0o600, false, |f| {
            f.write_all(b"half of the new")?;
            Err(Error::other("injected failure"))
        })
        .unwrap_err();
        assert!(!err.is_no_space());
        assert_eq!(std::fs::read(&path).unwrap(), b"complete old content");
        assert_eq!(names_in(dir.path()), ["ledger.bin"]);
    }

    #[test]
    fn write_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_new(&path, b"first", 0o600).unwrap();
        let err = write_new(&path, b"second", 0o600).unwrap_err();
        assert_eq!(err.source.kind(), ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(names_in(dir.path()), ["key"]);
    }

    #[test]
    fn commit_renames_a_complete_temporary_and_reports_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.rq.h5");
        let tmp = temp_path(&path);
        assert_eq!(tmp, dir.path().join(".x.rq.h5.tmp"));
        std::fs::write(&tmp, b"12345").unwrap();
        assert_eq!(commit(&tmp, &path).unwrap(), 5);
        assert_eq!(names_in(dir.path()), ["x.rq.h5"]);
    }

    #[test]
    fn commit_of_a_missing_temporary_names_it_and_leaves_the_final_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.rq.h5");
        std::fs::write(&path, b"old").unwrap();
        let err = commit(&temp_path(&path), &path).unwrap_err();
        assert_eq!(err.op, "open");
        assert_eq!(err.path, temp_path(&path));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
