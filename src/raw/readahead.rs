//! How a window of a raw file's samples reaches memory: the page-cache,
//! direct-read and read-ahead policy of a streaming rank, apart from the
//! file format (`reader`).
//!
//! ```text
//! warm window   faulted into the page cache ahead of the rank by the prefetch
//!               thread (Readahead::run), then read through the memory map
//! cold window   (RawFile::is_cold: < 90 % of its samples in the page cache)
//!               read directly from disk into a reused buffer (Readahead::fetch,
//!               `direct`), served from there by RawFile::pod_batch_fetched
//! ```
//!
//! The prefetch thread (`prefetch`) runs [`Readahead`]s; `direct` does the
//! O_DIRECT reads and keeps the buffers.

use std::ops::Range;
use std::sync::Arc;

use memmap2::Mmap;
use tpcflow_reco::PodRecord;

use super::direct::{BufferPool, DirectWindow};
use super::reader::{PodBatch, RawFile, Samples};
use super::{mapped_column, RawError};

/// How a fetched window's samples are to be read.
#[derive(Debug)]
pub enum Fetched {
    /// Through the memory map (in the page cache now, or read there).
    Mapped,
    /// From this buffer, read directly from disk.
    Direct(DirectWindow),
}

/// What a window of events of a memory-mapped file will read, made resident
/// ahead of time on another thread by [`Readahead::run`] (see
/// `crate::raw::prefetch`): the window's rows of the four pod columns, then
/// the samples they index. Only a hint: a bad pod makes it read the wrong
/// pages, never out of the map; the window is validated when it is read.
#[derive(Debug, Clone)]
pub struct Readahead {
    map: Arc<Mmap>,
    /// Byte offsets of the pod columns (channel, start, length, offset).
    columns: [usize; 4],
    /// The window's pods.
    pods: Range<usize>,
    /// Byte range of the sample array in the map.
    samples: Range<usize>,
    /// The file opened for direct reads, when it may be read so.
    direct: Option<Arc<std::fs::File>>,
}

impl Readahead {
    /// Bytes of the pod columns per pod (channel, start, length, offset).
    const POD_BYTES: [usize; 4] = [2, 4, 4, 8];

    /// Fault the window's pages in (reading them from disk when they are not
    /// in the page cache), blocking this thread, not the one that will read
    /// them; errors are ignored (the reader then faults them in itself).
    pub fn run(&self) {
        self.populate_columns();
        let bytes = self.sample_bytes();
        self.populate(bytes.start, bytes.len());
    }

    /// [`Readahead::run`], except that the samples of a window made with
    /// `cold` ([`RawFile::readahead_for`]) are read directly from disk into a
    /// buffer from `pool` (see `crate::raw::direct`), for
    /// [`RawFile::pod_batch_fetched`].
    pub fn fetch(&self, pool: &BufferPool) -> Fetched {
        self.populate_columns();
        let bytes = self.sample_bytes();
        if let Some(file) = &self.direct {
            if !bytes.is_empty() && bytes.len() <= super::direct::MAX_DIRECT_BYTES {
                if let Ok(w) = DirectWindow::read(file, bytes.clone(), pool.take()) {
                    return Fetched::Direct(w);
                }
            }
        }
        self.populate(bytes.start, bytes.len());
        Fetched::Mapped
    }

    fn populate_columns(&self) {
        for (at, size) in self.columns.iter().zip(Self::POD_BYTES) {
            self.populate(at + self.pods.start * size, self.pods.len() * size);
        }
    }

    /// Bytes of the map holding the samples the window's pods point to
    /// (clamped to the sample array: the pods are not validated yet), from
    /// the first pod's start to the last pod's end: files are written with
    /// each pod's samples after the one before. A file written otherwise
    /// gets a range that misses some samples, which the reader then reads
    /// through the map (a direct window that does not hold every pod is not
    /// used; see `pod_batch_fetched`). Only the two end pods are read.
    fn sample_bytes(&self) -> Range<usize> {
        let map: &[u8] = &self.map;
        let offset: &[u64] = mapped_column(map, self.columns[3], &self.pods);
        let length: &[u32] = mapped_column(map, self.columns[2], &self.pods);
        let (Some(&lo), Some(&last), Some(&n)) = (offset.first(), offset.last(), length.last())
        else {
            return 0..0;
        };
        let hi = last.saturating_add(u64::from(n));
        let n_samples = ((self.samples.end - self.samples.start) / 2) as u64;
        let (lo, hi) = (lo.min(n_samples) as usize, hi.min(n_samples) as usize);
        if lo < hi {
            self.samples.start + 2 * lo..self.samples.start + 2 * hi
        } else {
            0..0
        }
    }

    fn populate(&self, offset: usize, len: usize) {
        let page = 4096;
        let a = offset / page * page;
        let b = (offset + len).min(self.map.len());
        if b > a {
            let _ = self
                .map
                .advise_range(memmap2::Advice::PopulateRead, a, b - a);
        }
    }
}

impl RawFile {
    /// What [`RawFile::pod_batch`] of `events` will read, to be made resident
    /// ahead of time ([`Readahead::run`]); None when the file is not read
    /// through the memory map or the events have no pods.
    pub fn readahead(&self, events: Range<usize>) -> Option<Readahead> {
        self.readahead_for(events, false)
    }

    /// [`RawFile::readahead`] of a window whose samples, when `cold` (see
    /// [`RawFile::is_cold`]), are read directly from disk rather than into the
    /// page cache when it is fetched ([`Readahead::fetch`]).
    pub fn readahead_for(&self, events: Range<usize>, cold: bool) -> Option<Readahead> {
        let columns = self.pod_columns.as_ref()?.mapped?;
        let Samples::Mapped { map, start, len } = &self.samples else {
            return None;
        };
        let n = self.n_events();
        let (lo, hi) = self.pod_span(events.start.min(n)..events.end.min(n));
        (lo < hi).then(|| Readahead {
            map: map.clone(),
            columns,
            pods: lo as usize..hi as usize,
            samples: *start..*start + 2 * *len,
            direct: if cold { self.direct.clone() } else { None },
        })
    }

    /// True when less than 90 % of the samples of `events` are in the page
    /// cache (and the file can be read directly): then they are better read
    /// directly from disk than faulted into the cache (`crate::raw::direct`).
    /// Not half: reading a range through the map, the kernel reads the next
    /// megabytes ahead, and the next unit of the same file would count as
    /// cached and be read through the map in turn.
    /// Decided from the page cache before anything of the range is read; the
    /// two pod entries that bound it are read through HDF5, not the map (a
    /// fault there would read the neighbouring megabytes into the cache).
    pub fn is_cold(&self, events: Range<usize>) -> bool {
        let (Some(_), Some(c), Samples::Mapped { map, start, len }) =
            (&self.direct, &self.pod_columns, &self.samples)
        else {
            return false;
        };
        let n = self.n_events();
        let (lo, hi) = self.pod_span(events.start.min(n)..events.end.min(n));
        if lo >= hi {
            return false;
        }
        let one = |d: &hdf5::Dataset, at: u64| -> Option<u64> {
            let at = usize::try_from(at).ok()?;
            d.read_slice_1d::<u64, _>(at..at + 1).ok()?.first().copied()
        };
        let first = one(&c.offset, lo);
        let last = one(&c.offset, hi - 1);
        let last_len = c
            .length
            .read_slice_1d::<u32, _>(hi as usize - 1..hi as usize)
            .ok()
            .and_then(|a| a.first().copied());
        let (Some(first), Some(last), Some(last_len)) = (first, last, last_len) else {
            return false;
        };
        let end = last.saturating_add(u64::from(last_len)).min(*len as u64);
        if end <= first {
            return false;
        }
        let bytes = start + 2 * first as usize..start + 2 * end as usize;
        super::direct::resident_fraction(map, bytes) < 0.9
    }

    /// [`RawFile::pod_batch_reusing`] for a window a prefetch thread is
    /// reading ahead right now ([`Readahead`]): its samples are not mapped
    /// in one call first, so the reconstruction starts on the window's first
    /// events while the rest arrive instead of waiting for all of them.
    ///
    /// # Errors
    /// As [`RawFile::pod_batch`].
    pub fn pod_batch_behind_readahead(
        &self,
        events: Range<usize>,
        buffer: Vec<PodRecord>,
    ) -> Result<PodBatch<'_>, RawError> {
        self.window(events, buffer, false)
    }

    /// [`RawFile::pod_batch_reusing`] for a window the prefetch thread
    /// fetched ([`Readahead::fetch`]): when it read the window's samples
    /// directly, the batch serves them from its buffer (the pods' offsets
    /// rebased to it); otherwise, or when the buffer does not hold every
    /// sample the validated pods point to, from the map (the buffer then goes
    /// back to `pool`).
    ///
    /// # Errors
    /// As [`RawFile::pod_batch`].
    pub fn pod_batch_fetched(
        &self,
        events: Range<usize>,
        buffer: Vec<PodRecord>,
        fetched: Fetched,
        pool: &BufferPool,
    ) -> Result<PodBatch<'_>, RawError> {
        let Fetched::Direct(w) = fetched else {
            return self.window(events, buffer, false);
        };
        let (mut batch, covered) = self.window_covered(events, buffer, false)?;
        let start = match &self.samples {
            Samples::Mapped { start, .. } => *start,
            Samples::Owned(_) => usize::MAX,
        };
        // The buffer's first sample, when it starts on one; it must hold
        // every sample the validated pods cover.
        let held = w.file_bytes();
        let first = held
            .start
            .checked_sub(start)
            .filter(|skip| skip % 2 == 0)
            .map(|skip| skip / 2);
        let usable = first.zip(covered.as_ref()).is_some_and(|(first, c)| {
            first as u64 <= c.start
                && start + 2 * c.end as usize <= held.end
                && bytemuck::try_cast_slice::<u8, i16>(w.bytes()).is_ok()
        });
        let first = first.unwrap_or(0);
        match (&mut batch.pods, usable) {
            (std::borrow::Cow::Owned(pods), true) => {
                for p in pods.iter_mut() {
                    p.offset -= first as u64;
                }
                batch.direct = Some(w);
            }
            _ => pool.give(w.into_buffer()),
        }
        Ok(batch)
    }
}
