//! Reading a window of samples that is not in the page cache straight from
//! disk (O_DIRECT) into a buffer the rank reuses, instead of through the
//! memory map.
//!
//! A cold window read through the map makes the kernel allocate page-cache
//! pages for it. On this machine (a VM whose free memory goes back to the
//! host) that costs the reading core 1.0-1.2 ms per MB once the freed memory
//! has been returned, against 0.16 ms/MB right after it was freed and
//! 0.12-0.23 ms/MB reading the same bytes with O_DIRECT into a reused buffer
//! (a CPU-bound loop on the same core lost that much while 1.1 GB were read;
//! the reconstruction itself takes ~2 ms/MB). A direct read also leaves the
//! page cache alone: reprocessing a year of data does not push out what
//! other work has cached. Files that are in the page cache when they are
//! opened (inputs fresh from transfer, a re-run) are still read through the
//! map, zero copy.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

/// Alignment of O_DIRECT offsets, lengths and buffers (a page: covers every
/// logical block size).
const ALIGN: usize = 4096;

/// Buffers a rank keeps for reuse (the window being reconstructed, those
/// read ahead and the next unit's first): a fresh buffer costs the same page
/// allocation a direct read is there to avoid.
const POOL_BUFFERS: usize = 6;

/// Bytes per read call: 4 MiB reads ran at 920 MB/s here, one call for a
/// whole window (84 MB) at 580 (the kernel pins the whole buffer first).
const READ_BYTES: usize = 4 << 20;

/// Largest window read directly [bytes]; larger ones go through the map, so
/// a rank's buffers stay bounded whatever the events.
pub const MAX_DIRECT_BYTES: usize = 192 << 20;

/// Open `path` for direct reads; None where the file system has no O_DIRECT
/// (tmpfs, some FUSE): the map is used then.
pub fn open_direct(path: &Path) -> Option<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// Pages [`resident_fraction`] looks up at most: mincore costs one page
/// cache lookup per page (about 20 ms of kernel time for a 335 MB file),
/// so a longer range is judged from this many pages spread evenly over it.
const MAX_PROBES: usize = 256;

/// Fraction of the pages of `bytes` (a byte range of `map`) that are in
/// the page cache: exact up to [`MAX_PROBES`] pages, estimated from that
/// many evenly spread pages beyond (a window is cold or warm as a whole in
/// practice: the choice it serves only needs the fraction to 1 %).
#[allow(unsafe_code)]
pub fn resident_fraction(map: &memmap2::Mmap, bytes: Range<usize>) -> f64 {
    let page = ALIGN;
    let a = bytes.start / page * page;
    let b = bytes.end.min(map.len());
    if b <= a {
        return 1.0;
    }
    let pages = (b - a).div_ceil(page);
    // (first byte, length) of each looked-up run: the whole range, or one
    // page at the middle of each of MAX_PROBES equal parts.
    let runs: Vec<(usize, usize)> = if pages <= MAX_PROBES {
        vec![(a, b - a)]
    } else {
        (0..MAX_PROBES)
            .map(|i| (a + (2 * i + 1) * pages / (2 * MAX_PROBES) * page, 1))
            .collect()
    };
    let mut vec = vec![0u8; pages.min(MAX_PROBES)];
    let mut looked = 0;
    for (at, len) in runs {
        let n = len.div_ceil(page);
        // SAFETY: `at..at + len` lies within the live map (`at` is
        // page-aligned, the map starts on a page, at + len <= b); mincore
        // writes one byte per page of that range into `vec[looked..]`,
        // which has at least that many left.
        let rc = unsafe {
            libc::mincore(
                map.as_ptr().add(at).cast_mut().cast(),
                len,
                vec[looked..].as_mut_ptr(),
            )
        };
        if rc != 0 {
            return 1.0;
        }
        looked += n;
    }
    vec[..looked].iter().filter(|&&v| v & 1 != 0).count() as f64 / looked as f64
}

/// A window's samples read directly: file bytes `file_bytes` at `at` in `buf`.
#[derive(Debug)]
pub struct DirectWindow {
    buf: Vec<u8>,
    at: usize,
    /// Byte range of the file held.
    file_bytes: Range<usize>,
}

impl DirectWindow {
    /// Read file bytes `file_bytes` of `file` (opened by [`open_direct`]) into
    /// `buf` (reused; grown when too small).
    ///
    /// # Errors
    /// The read's error, or `UnexpectedEof` when the file ends before
    /// `file_bytes` does.
    pub fn read(file: &File, file_bytes: Range<usize>, mut buf: Vec<u8>) -> std::io::Result<Self> {
        let a = file_bytes.start / ALIGN * ALIGN;
        let b = file_bytes.end.div_ceil(ALIGN) * ALIGN;
        if buf.len() < b - a + ALIGN {
            // Windows are tens of MB: on huge pages where the kernel can.
            let more = b - a + ALIGN - buf.len();
            crate::huge::reserve_huge(&mut buf, more);
            buf.resize(b - a + ALIGN, 0);
        }
        let base = buf.as_ptr().align_offset(ALIGN);
        let region = &mut buf[base..base + (b - a)];
        let need = file_bytes.end - a;
        let mut done = 0;
        while done < need {
            let end = (done + READ_BYTES).min(region.len());
            let n = rustix::io::pread(file, &mut region[done..end], (a + done) as u64)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(Self {
            at: base + (file_bytes.start - a),
            buf,
            file_bytes,
        })
    }

    /// Byte range of the file held.
    pub fn file_bytes(&self) -> Range<usize> {
        self.file_bytes.clone()
    }

    /// The bytes held (file bytes `file_bytes()`).
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.at..self.at + self.file_bytes.len()]
    }

    /// The buffer, for the next window.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// A rank's direct-read buffers, shared by its prefetch thread (which takes
/// them) and its main thread (which gives them back).
#[derive(Debug, Default)]
pub struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// A buffer to read into (empty when none is kept).
    pub fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut v| v.pop().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Keep `buf` for a later window (dropped when enough are kept).
    pub fn give(&self, buf: Vec<u8>) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() < POOL_BUFFERS {
                v.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// A file of `pages` pages written and synced, with the pages from
    /// `evicted` on dropped from the page cache.
    #[allow(unsafe_code)]
    fn half_cached(pages: usize, evicted: usize) -> (tempfile::TempDir, memmap2::Mmap) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; pages * ALIGN]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        // SAFETY: plain libc call on an open descriptor.
        let rc = unsafe {
            libc::posix_fadvise(
                f.as_raw_fd(),
                (evicted * ALIGN) as i64,
                ((pages - evicted) * ALIGN) as i64,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: a private temporary file nobody else writes.
        let map = unsafe { memmap2::Mmap::map(&f).unwrap() };
        (dir, map)
    }

    /// Residency of every page of the map (the reference).
    #[allow(unsafe_code)]
    fn every_page(map: &memmap2::Mmap) -> Vec<bool> {
        let mut v = vec![0u8; map.len().div_ceil(ALIGN)];
        // SAFETY: the whole live map, one byte per page into `v`.
        let rc =
            unsafe { libc::mincore(map.as_ptr().cast_mut().cast(), map.len(), v.as_mut_ptr()) };
        assert_eq!(rc, 0);
        v.iter().map(|&b| b & 1 != 0).collect()
    }

    #[test]
    fn resident_fraction_is_exact_when_short_and_close_when_sampled() {
        // 100 pages: each looked up; 4000 pages: 256 probes, each standing
        // for a part of ~16 pages, so only parts where residency changes
        // can be misjudged, each by at most 1/256 of the whole.
        for (pages, evicted) in [(100usize, 25usize), (4000, 1000)] {
            let (_dir, map) = half_cached(pages, evicted);
            let reference = every_page(&map);
            for range in [0..pages, 0..evicted, evicted..pages, 10..pages - 7] {
                let r = &reference[range.clone()];
                let exact = r.iter().filter(|&&b| b).count() as f64 / r.len() as f64;
                let got = resident_fraction(&map, range.start * ALIGN..range.end * ALIGN);
                if r.len() <= MAX_PROBES {
                    assert_eq!(got, exact, "{pages} pages, {range:?}");
                } else {
                    let changes = r.windows(2).filter(|w| w[0] != w[1]).count();
                    let bound = (changes + 1) as f64 / MAX_PROBES as f64;
                    assert!(
                        (got - exact).abs() <= bound,
                        "{pages} pages, {range:?}: {got} vs {exact} ({changes} changes)"
                    );
                }
            }
            // Fully resident ranges are judged so exactly.
            let (lo, hi) = (0, reference.iter().position(|&b| !b).unwrap_or(pages));
            if hi > lo {
                assert_eq!(resident_fraction(&map, lo * ALIGN..hi * ALIGN), 1.0);
            }
        }
    }
}
