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

/// Fraction of the pages of `bytes` (a byte range of `map`) that are in
/// the page cache.
#[allow(unsafe_code)]
pub fn resident_fraction(map: &memmap2::Mmap, bytes: Range<usize>) -> f64 {
    let page = ALIGN;
    let a = bytes.start / page * page;
    let b = bytes.end.min(map.len());
    if b <= a {
        return 1.0;
    }
    let pages = (b - a).div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: `a..b` lies within the live map (a is page-aligned, the map
    // starts on a page); mincore writes one byte per page of that range into
    // `vec`, which has exactly that many.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr().add(a).cast_mut().cast(),
            b - a,
            vec.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return 1.0;
    }
    vec.iter().filter(|&&v| v & 1 != 0).count() as f64 / pages as f64
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
