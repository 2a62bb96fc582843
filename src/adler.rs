//! Adler-32 checksums of files, as the data-management world writes them.
//!
//! Rucio, XRootD and `xrdadler32` carry Adler-32 as an 8-digit lower-case hex
//! string. Tools disagree on case and on leading zeros (`0a1b2c3d`,
//! `A1B2C3D`), so checksums are compared as numbers: [`same_checksum`] is
//! case-insensitive and ignores leading zeros. The arithmetic itself is the
//! `simd-adler32` crate (SSE2/SSSE3/AVX2/AVX-512 chosen at run time, a
//! scalar path elsewhere; used by `png` and `miniz_oxide`): 1.9x the
//! `adler2` crate's speed on one core here (31 against 58 ms for a 364 MB raw
//! file in the page cache), which the input check of every reco job pays.
//! The tests check it against `adler2`.
//!
//! ```
//! use tpcflow::adler::{format_adler32, same_checksum};
//! assert_eq!(format_adler32(simd_adler32::adler32(b"Wikipedia")), "11e60398");
//! assert!(same_checksum("011E0398", "11e0398"));
//! ```

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Read buffer for checksumming [bytes].
const BUFFER_BYTES: usize = 1 << 20;

/// Size and checksum of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Size [bytes].
    pub size_bytes: u64,
    /// Adler-32, 8-digit lower-case hex.
    pub adler32: String,
}

/// Errors checksumming a file. Each names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot checksum: {source}")]
pub struct ChecksumError {
    /// File.
    pub path: PathBuf,
    /// Cause.
    pub source: std::io::Error,
}

/// Adler-32 as Rucio writes it: 8 lower-case hex digits.
pub fn format_adler32(value: u32) -> String {
    format!("{value:08x}")
}

/// True when two hex checksums denote the same value: case-insensitive,
/// leading zeros ignored. Strings that are not hex never match anything.
pub fn same_checksum(a: &str, b: &str) -> bool {
    match (parse_hex(a), parse_hex(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let digits = s.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Size and Adler-32 of a file, read once in 1 MiB blocks.
///
/// # Errors
/// A [`ChecksumError`] naming the file when it cannot be opened or read.
pub fn digest_file(path: &Path) -> Result<FileDigest, ChecksumError> {
    let err = |source| ChecksumError {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    let mut reader = BufReader::with_capacity(BUFFER_BYTES, file);
    let mut hasher = simd_adler32::Adler32::new();
    let mut buf = vec![0u8; BUFFER_BYTES];
    let mut size_bytes = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.write(&buf[..n]);
        size_bytes += n as u64;
    }
    Ok(FileDigest {
        size_bytes,
        adler32: format_adler32(hasher.finish()),
    })
}

/// Size and Adler-32 of bytes already in memory (a file's whole memory map).
pub fn digest_bytes(bytes: &[u8]) -> FileDigest {
    FileDigest {
        size_bytes: bytes.len() as u64,
        adler32: format_adler32(simd_adler32::adler32(&bytes)),
    }
}

/// The Adler-32 of bytes a reader goes through in order (a raw file's map,
/// as the reconstruction reads it event after event), taken in pieces: each
/// [`InOrderDigest::advance_to`] hashes the bytes from where the last piece
/// ended up to an offset, while the reader's pass has just brought them into
/// the cache, instead of reading the whole file from memory a second time
/// (on one core, a 335 MB file's checksum drops from ~27 ms read from memory
/// to ~8 ms hashed event by event from the core's cache). Every byte is
/// hashed once, in order, whatever the offsets: one behind the last piece
/// adds nothing, and [`InOrderDigest::finish`] hashes what is left.
pub struct InOrderDigest<B> {
    bytes: B,
    hasher: simd_adler32::Adler32,
    hashed: usize,
}

impl<B> std::fmt::Debug for InOrderDigest<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InOrderDigest")
            .field("hashed", &self.hashed)
            .finish_non_exhaustive()
    }
}

impl<B> InOrderDigest<B>
where
    B: std::ops::Deref,
    B::Target: AsRef<[u8]>,
{
    /// Nothing of `bytes` hashed yet.
    pub fn new(bytes: B) -> Self {
        Self {
            bytes,
            hasher: simd_adler32::Adler32::new(),
            hashed: 0,
        }
    }

    /// Hash the bytes up to `end` (clamped to their length) that are not
    /// hashed yet.
    pub fn advance_to(&mut self, end: usize) {
        let bytes = (*self.bytes).as_ref();
        let end = end.min(bytes.len());
        if end > self.hashed {
            self.hasher.write(&bytes[self.hashed..end]);
            self.hashed = end;
        }
    }

    /// Hash the bytes up to `end` (as [`InOrderDigest::advance_to`]),
    /// taking those of `at..at + held.len()` from `held`, a copy of them
    /// read directly from the file, and the others from `bytes`: a window
    /// read with O_DIRECT is hashed from its buffer, where its pages in the
    /// map would be read from disk a second time.
    pub fn advance_held(&mut self, end: usize, at: usize, held: &[u8]) {
        let len = (*self.bytes).as_ref().len();
        let end = end.min(len);
        self.advance_to(end.min(at));
        let stop = end.min(at.saturating_add(held.len()));
        if stop > self.hashed && self.hashed >= at {
            self.hasher.write(&held[self.hashed - at..stop - at]);
            self.hashed = stop;
        }
        self.advance_to(end);
    }

    /// Bytes hashed so far (from the first).
    pub fn hashed(&self) -> usize {
        self.hashed
    }

    /// Hash the rest; the size and Adler-32 of all the bytes.
    pub fn finish(mut self) -> FileDigest {
        self.advance_to(usize::MAX);
        FileDigest {
            size_bytes: self.hashed as u64,
            adler32: format_adler32(self.hasher.finish()),
        }
    }
}

/// Window of a file [`digest_mapped`] maps at a time [bytes] (a multiple of
/// the page size).
const MAP_WINDOW_BYTES: u64 = 64 << 20;

/// Size and Adler-32 of a file read through read-only memory maps of
/// [`MAP_WINDOW_BYTES`], each mapped whole up front (`MAP_POPULATE`): the
/// checksum reads the page cache in place instead of copying it out block by
/// block, which for a file in the page cache costs more than the checksum
/// itself. For files that no one writes while they are read (raw files and
/// RQ outputs under their final names); [`digest_file`] for any other.
///
/// # Errors
/// A [`ChecksumError`] naming the file when it cannot be opened or mapped.
pub fn digest_mapped(path: &Path) -> Result<FileDigest, ChecksumError> {
    digest_in_windows(path, MAP_WINDOW_BYTES)
}

fn digest_in_windows(path: &Path, window_bytes: u64) -> Result<FileDigest, ChecksumError> {
    let err = |source| ChecksumError {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    let size_bytes = file.metadata().map_err(err)?.len();
    let mut hasher = simd_adler32::Adler32::new();
    let mut offset = 0u64;
    while offset < size_bytes {
        let len = window_bytes.min(size_bytes - offset);
        let window = map_window(&file, offset, len as usize).map_err(err)?;
        hasher.write(&window);
        offset += len;
    }
    Ok(FileDigest {
        size_bytes,
        adler32: format_adler32(hasher.finish()),
    })
}

/// Map `len` bytes of a file from `offset` read-only, its pages mapped at once.
#[allow(unsafe_code)]
fn map_window(file: &File, offset: u64, len: usize) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: read-only map of a file that is not written while it is
    // mapped (the callers' contract, as for `crate::raw`'s maps: writers
    // write a temporary name and rename it); a file truncated underneath
    // would fault, as any mmap reader would.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_order_digest_is_the_whole_digest_whatever_the_pieces() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(25);
        for len in [0usize, 1, 5551, 5552, 5553, 100_000, 3 * BUFFER_BYTES + 7] {
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let whole = digest_bytes(&bytes);
            for _ in 0..20 {
                // Offsets forward, backward (nothing to add) and past the end.
                let mut d = InOrderDigest::new(&bytes[..]);
                let mut reached = 0;
                for _ in 0..rng.random_range(0..12) {
                    let end = rng.random_range(0..=len + 10);
                    if rng.random_bool(0.5) {
                        d.advance_to(end);
                    } else {
                        // Some of the bytes given as held, as a window read
                        // directly: before, around or past `end`.
                        let at = rng.random_range(0..=len);
                        let held = &bytes[at..rng.random_range(at..=len)];
                        d.advance_held(end, at, held);
                    }
                    reached = reached.max(end.min(len));
                    assert_eq!(d.hashed(), reached);
                }
                assert_eq!(d.finish(), whole, "{len} bytes");
            }
            // What is hashed from a copy is the copy: a byte read otherwise
            // than the map holds it shows.
            if len > 2 {
                let (at, to) = (len / 3, len - len / 3);
                let mut held = bytes[at..to].to_vec();
                held[0] ^= 0x01;
                let mut read = bytes.clone();
                read[at] ^= 0x01;
                let mut d = InOrderDigest::new(&bytes[..]);
                d.advance_held(len, at, &held);
                assert_eq!(d.finish(), digest_bytes(&read), "{len} bytes");
            }
            // A change anywhere changes it.
            if len > 0 {
                let mut changed = bytes.clone();
                let at = rng.random_range(0..len);
                changed[at] ^= 0x5a;
                let mut d = InOrderDigest::new(&changed[..]);
                d.advance_to(len / 2);
                assert_ne!(d.finish(), whole, "{len} bytes, byte {at} changed");
            }
        }
    }

    #[test]
    fn a_mapped_digest_equals_the_read_one() {
        let dir = tempfile::tempdir().unwrap();
        let page = 4096;
        for (name, len) in [
            ("empty", 0usize),
            ("small", 7),
            ("blocks", 3 * BUFFER_BYTES + 11),
            ("windows", 3 * page + 5),
        ] {
            let path = dir.path().join(name);
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 3) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            let mapped = digest_mapped(&path).unwrap();
            assert_eq!(mapped, digest_file(&path).unwrap(), "{name}");
            assert_eq!(mapped, digest_bytes(&bytes), "{name}");
            assert_eq!(
                mapped,
                digest_in_windows(&path, page as u64).unwrap(),
                "{name}"
            );
            assert_eq!(mapped.size_bytes, len as u64);
            assert_eq!(
                mapped.adler32,
                format_adler32(adler2::adler32_slice(&bytes)),
                "{name}"
            );
        }
        assert!(digest_mapped(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn known_vectors() {
        // Adler-32 of the empty string is 1; of "Wikipedia" 0x11E60398.
        assert_eq!(format_adler32(adler2::adler32_slice(b"")), "00000001");
        assert_eq!(
            format_adler32(adler2::adler32_slice(b"Wikipedia")),
            "11e60398"
        );
    }

    #[test]
    fn comparison_ignores_case_and_leading_zeros() {
        let table = [
            ("00000001", "1", true),
            ("0A1B2C3D", "a1b2c3d", true),
            ("0x0a1b2c3d", "A1B2C3D", true),
            ("00000000", "0", true),
            ("0a1b2c3d", "0a1b2c3e", false),
            ("zz", "zz", false),
            ("", "", false),
            ("", "0", false),
        ];
        for (a, b, want) in table {
            assert_eq!(same_checksum(a, b), want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn file_digest_matches_slice_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let d = digest_file(&path).unwrap();
        assert_eq!(d.size_bytes, data.len() as u64);
        assert_eq!(d.adler32, format_adler32(adler2::adler32_slice(&data)));
        let missing = digest_file(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
