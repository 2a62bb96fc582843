//! Reading raw files: HDF5 for the tables, memmap2 for the sample array.
//!
//! [`RawFile::open`] reads the event and pod tables, validates every pod
//! against the sample array, the channel count and the event window, then
//! maps the contiguous `/samples` dataset at its file offset. Events are
//! served as [`EventView`]s borrowing the mapped samples: zero copies. A
//! chunked or compressed `/samples` (not written by tpcflow, but legal HDF5)
//! is read through HDF5 instead.
//!
//! This module is the file format and its validation; how a window's samples
//! reach memory (read ahead into the page cache, or read directly from disk
//! when cold) is in `readahead`, run by `prefetch` with the buffers of `direct`.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use tpcflow_reco::{EventView, PodRecord};

use super::direct::DirectWindow;
use super::{mapped_column, RawError, RawHeader, FORMAT_VERSION};

/// How the sample array is held.
#[derive(Debug)]
pub(super) enum Samples {
    /// Memory-mapped file and the byte range of the array in it.
    /// (Shared with the `Readahead`s in flight, see `super::readahead`: the
    /// last holder unmaps it.)
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    /// Read through HDF5 (chunked/compressed or unaligned data).
    Owned(Vec<i16>),
}

/// An open, validated raw file.
#[derive(Debug)]
pub struct RawFile {
    path: PathBuf,
    header: RawHeader,
    event_id: Vec<u64>,
    trigger_time_ns: Vec<i64>,
    first_pod: Vec<u64>,
    pod_count: Vec<u32>,
    /// Every pod, read at open ([`RawFile::open`]); empty when streaming.
    pods: Vec<PodRecord>,
    /// The pod columns, read a batch at a time ([`RawFile::open_streaming`]).
    pub(super) pod_columns: Option<PodColumns>,
    pub(super) samples: Samples,
    /// The file opened for direct reads of cold windows (streaming files
    /// whose samples are mapped; see `crate::raw::direct`).
    pub(super) direct: Option<Arc<std::fs::File>>,
}

/// The `/pods` datasets of a file opened for streaming.
#[derive(Debug)]
pub(super) struct PodColumns {
    channel: hdf5::Dataset,
    start: hdf5::Dataset,
    pub(super) length: hdf5::Dataset,
    pub(super) offset: hdf5::Dataset,
    n_pods: usize,
    /// Byte offsets of the four columns in the file's memory map, when all
    /// are contiguous, unfiltered, native and aligned (what tpcflow writes):
    /// windows are then read from the map instead of through HDF5.
    pub(super) mapped: Option<[usize; 4]>,
}

impl PodColumns {
    /// Where each column lies in `map` (see `mapped`), or None.
    fn locate_in(&self, map: &[u8]) -> Option<[usize; 4]> {
        fn at<T: hdf5::H5Type + bytemuck::Pod>(
            d: &hdf5::Dataset,
            n: usize,
            map: &[u8],
        ) -> Option<usize> {
            if !stored_as_native::<T>(d) {
                return None;
            }
            let start = usize::try_from(d.offset()?).ok()?;
            let bytes = map.get(start..start.checked_add(n * std::mem::size_of::<T>())?)?;
            bytemuck::try_cast_slice::<u8, T>(bytes).ok()?;
            Some(start)
        }
        if self.n_pods == 0 {
            return None;
        }
        let n = self.n_pods;
        Some([
            at::<u16>(&self.channel, n, map)?,
            at::<i32>(&self.start, n, map)?,
            at::<u32>(&self.length, n, map)?,
            at::<u64>(&self.offset, n, map)?,
        ])
    }
}

/// True when `d` is stored contiguous, unfiltered and as native `T`: its
/// bytes in the file are the values, so they can be served from the map.
fn stored_as_native<T: hdf5::H5Type>(d: &hdf5::Dataset) -> bool {
    !d.is_chunked()
        && d.filters().is_empty()
        && matches!(
            (d.dtype(), hdf5::Datatype::from_type::<T>()),
            (Ok(a), Ok(b)) if a == b
        )
}

/// Pods `range` from the columns at `offsets` in `map` (checked at open),
/// checked against `limits` in the same pass (see [`Coverage`]): the
/// samples they cover, or `None` when one of them is not valid or they
/// cover nothing.
fn mapped_pods(
    map: &[u8],
    offsets: [usize; 4],
    range: Range<usize>,
    out: &mut Vec<PodRecord>,
    limits: &PodLimits,
) -> Option<Range<u64>> {
    let channel: &[u16] = mapped_column(map, offsets[0], &range);
    let start: &[i32] = mapped_column(map, offsets[1], &range);
    let length: &[u32] = mapped_column(map, offsets[2], &range);
    let offset: &[u64] = mapped_column(map, offsets[3], &range);
    out.clear();
    // A window's pods are megabytes: huge pages spare a fault per 4 KiB the
    // first time the buffer is filled.
    crate::huge::reserve_huge(out, range.len());
    let mut coverage = Coverage::EMPTY;
    out.extend(channel.iter().zip(start).zip(length).zip(offset).map(
        |(((&channel, &start_sample), &length), &offset)| {
            let pod = PodRecord {
                channel,
                start_sample,
                length,
                offset,
            };
            coverage.add(limits, &pod);
            pod
        },
    ));
    coverage.covered()
}

/// What every pod of a file must respect: samples within the sample array,
/// a channel of the detector, a place within the event window.
#[derive(Debug, Clone, Copy)]
struct PodLimits {
    n_samples: u64,
    window: i64,
    n_channels: u32,
}

/// The samples a run of pods covers and whether any of them broke its
/// file's [`PodLimits`], accumulated branch-free pod by pod.
#[derive(Debug, Clone, Copy)]
struct Coverage {
    lo: u64,
    hi: u64,
    bad: bool,
}

impl Coverage {
    const EMPTY: Coverage = Coverage {
        lo: u64::MAX,
        hi: 0,
        bad: false,
    };

    #[inline(always)]
    fn add(&mut self, limits: &PodLimits, p: &PodRecord) {
        let stop = p.offset.wrapping_add(u64::from(p.length));
        let start = i64::from(p.start_sample);
        self.lo = self.lo.min(p.offset);
        self.hi = self.hi.max(stop);
        self.bad |= (stop < p.offset)
            | (stop > limits.n_samples)
            | (u32::from(p.channel) >= limits.n_channels)
            | (start < 0)
            | (start + i64::from(p.length) > limits.window);
    }

    /// The samples covered, or `None` when a pod was bad or none covers any.
    fn covered(self) -> Option<Range<u64>> {
        (!self.bad && self.lo < self.hi).then_some(self.lo..self.hi)
    }
}

/// Where an event's samples end in its file, and the bytes of its window
/// when that was read directly (see [`RawFile::samples_in_file`]).
#[derive(Debug, Clone, Copy)]
pub struct SamplesInFile<'a> {
    /// Byte offset in the file just past the event's last sample.
    pub end: usize,
    /// The window's bytes and the file offset of the first, when it was
    /// read directly.
    pub held: Option<(usize, &'a [u8])>,
}

/// The pods of a range of events (see [`RawFile::pod_batch`]).
#[derive(Debug)]
pub struct PodBatch<'a> {
    base: u64,
    pub(super) pods: std::borrow::Cow<'a, [PodRecord]>,
    /// The window's samples, read directly; the pods' offsets are then
    /// counted from its first sample.
    pub(super) direct: Option<DirectWindow>,
}

impl PodBatch<'_> {
    /// The batch's buffer, emptied, for the next [`RawFile::pod_batch_reusing`]
    /// (a streaming window's pods are megabytes: reusing them saves the page
    /// faults of a fresh allocation per window).
    pub fn into_buffer(self) -> Vec<PodRecord> {
        self.into_parts().0
    }

    /// The pod buffer (as [`PodBatch::into_buffer`]) and the direct-read
    /// buffer, when the samples were read directly.
    pub fn into_parts(self) -> (Vec<PodRecord>, Option<Vec<u8>>) {
        let direct = self.direct.map(DirectWindow::into_buffer);
        let pods = match self.pods {
            std::borrow::Cow::Owned(mut v) => {
                v.clear();
                v
            }
            std::borrow::Cow::Borrowed(_) => Vec::new(),
        };
        (pods, direct)
    }

    /// Bytes of samples read directly (0 when read through the map).
    pub fn direct_bytes(&self) -> u64 {
        self.direct
            .as_ref()
            .map_or(0, |d| d.file_bytes().len() as u64)
    }
}

fn read_attr<T: hdf5::H5Type>(file: &hdf5::File, name: &str, path: &Path) -> Result<T, RawError> {
    file.attr(name)
        .and_then(|a| a.read_scalar::<T>())
        .map_err(|e| RawError::Malformed {
            path: path.to_path_buf(),
            what: format!("root attribute `{name}`: {e}"),
        })
}

fn read_column<T: hdf5::H5Type>(
    file: &hdf5::File,
    name: &str,
    path: &Path,
) -> Result<Vec<T>, RawError> {
    let ds = file.dataset(name).map_err(|e| RawError::Malformed {
        path: path.to_path_buf(),
        what: format!("dataset `{name}`: {e}"),
    })?;
    check_read_size(&ds, name, path)?;
    ds.read_raw::<T>().map_err(|e| RawError::Malformed {
        path: path.to_path_buf(),
        what: format!("dataset `{name}`: {e}"),
    })
}

/// Refuse a dataset whose claimed size its storage cannot hold (a corrupted
/// length), before anything of that size is allocated.
fn check_read_size(ds: &hdf5::Dataset, name: &str, path: &Path) -> Result<(), RawError> {
    crate::h5::read_size(ds)
        .map(drop)
        .map_err(|e| RawError::Malformed {
            path: path.to_path_buf(),
            what: format!("dataset `{name}`: {e}"),
        })
}

impl RawFile {
    /// Open and validate a raw file; map its sample array.
    ///
    /// # Errors
    /// A [`RawError`] naming the file, and the event and pod for pod-level faults.
    pub fn open(path: &Path) -> Result<Self, RawError> {
        Self::open_with(path, true, false)
    }

    /// Open for streaming: the sample array is mapped, the pod index is read
    /// and validated a batch of events at a time ([`RawFile::pod_batch`]), so
    /// memory does not grow with the file. [`RawFile::event`] is not
    /// available on such a file; use [`RawFile::event_in`].
    ///
    /// # Errors
    /// As [`RawFile::open`], for the header and event index; pod faults come
    /// from [`RawFile::pod_batch`].
    pub fn open_streaming(path: &Path) -> Result<Self, RawError> {
        Self::open_with(path, true, true)
    }

    /// Open reading the samples through HDF5 instead of mapping them (the
    /// fallback path; for benchmarks and cross-checks).
    ///
    /// # Errors
    /// As [`RawFile::open`].
    pub fn open_via_hdf5(path: &Path) -> Result<Self, RawError> {
        Self::open_with(path, false, false)
    }

    fn open_with(path: &Path, allow_mmap: bool, streaming: bool) -> Result<Self, RawError> {
        let io = |source| RawError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file_len = std::fs::metadata(path).map_err(io)?.len();
        let file = crate::h5::open(path).map_err(|e| RawError::hdf5(path, "open", e))?;
        let version: u32 = read_attr(&file, "format_version", path)?;
        if version != FORMAT_VERSION {
            return Err(RawError::UnknownVersion {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let header = RawHeader {
            run: read_attr(&file, "run", path)?,
            sequence: read_attr(&file, "sequence", path)?,
            sample_period_ns: read_attr(&file, "sample_period_ns", path)?,
            conditions_tag: read_attr::<hdf5::types::VarLenUnicode>(&file, "conditions_tag", path)?
                .as_str()
                .to_string(),
            n_channels: read_attr(&file, "n_channels", path)?,
            window_samples: read_attr(&file, "window_samples", path)?,
        };
        let event_id: Vec<u64> = read_column(&file, "events/event_id", path)?;
        let trigger_time_ns: Vec<i64> = read_column(&file, "events/trigger_time_ns", path)?;
        let first_pod: Vec<u64> = read_column(&file, "events/first_pod", path)?;
        let pod_count: Vec<u32> = read_column(&file, "events/pod_count", path)?;
        let n_events = event_id.len();
        if [trigger_time_ns.len(), first_pod.len(), pod_count.len()]
            .iter()
            .any(|&l| l != n_events)
        {
            return Err(RawError::Malformed {
                path: path.to_path_buf(),
                what: "the /events columns have different lengths".into(),
            });
        }
        let pod_ds = |name: &str| {
            file.dataset(name).map_err(|e| RawError::Malformed {
                path: path.to_path_buf(),
                what: format!("dataset `{name}`: {e}"),
            })
        };
        let columns = PodColumns {
            channel: pod_ds("pods/channel")?,
            start: pod_ds("pods/start_sample")?,
            length: pod_ds("pods/length")?,
            offset: pod_ds("pods/offset")?,
            n_pods: 0,
            mapped: None,
        };
        let n_pods = columns.channel.size();
        if [&columns.start, &columns.length, &columns.offset]
            .iter()
            .any(|d| d.size() != n_pods)
        {
            return Err(RawError::Malformed {
                path: path.to_path_buf(),
                what: "the /pods columns have different lengths".into(),
            });
        }
        for (d, name) in [
            (&columns.channel, "pods/channel"),
            (&columns.start, "pods/start_sample"),
            (&columns.length, "pods/length"),
            (&columns.offset, "pods/offset"),
        ] {
            check_read_size(d, name, path)?;
        }
        let columns = PodColumns { n_pods, ..columns };
        let (pods, pod_columns) = if streaming {
            (Vec::new(), Some(columns))
        } else {
            (read_pods(&columns, 0..n_pods, path)?, None)
        };

        let ds = file.dataset("samples").map_err(|e| RawError::Malformed {
            path: path.to_path_buf(),
            what: format!("dataset `samples`: {e}"),
        })?;
        let n_samples = ds.size();
        let dtype = ds
            .dtype()
            .map_err(|e| RawError::hdf5(path, "samples dtype", e))?;
        if dtype.size() != 2 {
            return Err(RawError::Malformed {
                path: path.to_path_buf(),
                what: format!(
                    "/samples has {}-byte elements, expected 16-bit ADC counts",
                    dtype.size()
                ),
            });
        }
        check_read_size(&ds, "samples", path)?;
        let mappable = allow_mmap && stored_as_native::<i16>(&ds);
        let mapped_at = if mappable && n_samples > 0 {
            ds.offset()
        } else {
            None
        };
        let samples = match mapped_at {
            Some(at) => {
                let needed = (n_samples as u64)
                    .checked_mul(2)
                    .and_then(|b| b.checked_add(at))
                    .unwrap_or(u64::MAX);
                if needed > file_len {
                    return Err(RawError::Truncated {
                        path: path.to_path_buf(),
                        detail: format!(
                            "the sample array needs {needed} bytes but the file has {file_len}"
                        ),
                    });
                }
                let f = std::fs::File::open(path).map_err(io)?;
                let map = map_file(&f).map_err(io)?;
                let (start, len) = (at as usize, n_samples);
                if bytemuck::try_cast_slice::<u8, i16>(&map[start..start + 2 * len]).is_ok() {
                    Samples::Mapped {
                        map: Arc::new(map),
                        start,
                        len,
                    }
                } else {
                    Samples::Owned(
                        ds.read_raw::<i16>()
                            .map_err(|e| RawError::hdf5(path, "samples", e))?,
                    )
                }
            }
            None if n_samples == 0 => Samples::Owned(Vec::new()),
            None => Samples::Owned(
                ds.read_raw::<i16>()
                    .map_err(|e| RawError::hdf5(path, "samples", e))?,
            ),
        };
        let pod_columns = match (pod_columns, &samples) {
            (Some(c), Samples::Mapped { map, .. }) => {
                let mapped = c.locate_in(map);
                Some(PodColumns { mapped, ..c })
            }
            (c, _) => c,
        };
        // A streaming file's cold event ranges are read directly from disk
        // ([`RawFile::is_cold`], [`RawFile::readahead_for`]).
        let direct = match (&pod_columns, &samples) {
            (Some(c), Samples::Mapped { .. }) if streaming && c.mapped.is_some() => {
                super::direct::open_direct(path).map(Arc::new)
            }
            _ => None,
        };
        let raw = Self {
            direct,
            path: path.to_path_buf(),
            header,
            event_id,
            trigger_time_ns,
            first_pod,
            pod_count,
            pods,
            pod_columns,
            samples,
        };
        raw.validate_events()?;
        if raw.pod_columns.is_none() {
            raw.validate_pods(0..raw.n_events(), &raw.pods, 0)?;
        }
        Ok(raw)
    }

    /// Every event's pod range lies within the pod index.
    fn validate_events(&self) -> Result<(), RawError> {
        let n_pods = self.n_pods();
        for i in 0..self.event_id.len() {
            let (first, count, id) = (
                self.first_pod[i],
                u64::from(self.pod_count[i]),
                self.event_id[i],
            );
            let end = first.saturating_add(count);
            if end > n_pods as u64 {
                return Err(RawError::BadPodRange {
                    path: self.path.clone(),
                    event_index: i,
                    event_id: id,
                    first_pod: first,
                    end,
                    n_pods,
                });
            }
        }
        Ok(())
    }

    /// The samples a window's `pods` cover when every one of them indexes real
    /// samples, a real channel and the event window (one branch-free pass);
    /// `None` when any does not, or covers nothing: then
    /// [`RawFile::validate_pods`] names the fault.
    fn quick_check(&self, pods: &[PodRecord]) -> Option<Range<u64>> {
        let limits = self.pod_limits();
        let mut coverage = Coverage::EMPTY;
        for p in pods {
            coverage.add(&limits, p);
        }
        coverage.covered()
    }

    /// What this file's pods must respect (see [`Coverage`]).
    fn pod_limits(&self) -> PodLimits {
        PodLimits {
            n_samples: self.samples().len() as u64,
            window: i64::from(self.header.window_samples),
            n_channels: self.header.n_channels,
        }
    }

    /// The pods of `events` (`pods[0]` is pod number `base`) index real
    /// samples, real channels and the event window; returns the range of
    /// samples they cover.
    fn validate_pods(
        &self,
        events: Range<usize>,
        pods: &[PodRecord],
        base: u64,
    ) -> Result<Range<u64>, RawError> {
        let n_samples = self.samples().len();
        let window = i64::from(self.header.window_samples);
        let (mut lo, mut hi) = (u64::MAX, 0);
        for i in events {
            let (first, count, id) = (
                self.first_pod[i],
                u64::from(self.pod_count[i]),
                self.event_id[i],
            );
            if count == 0 {
                continue;
            }
            let end = first + count;
            let local = (first - base) as usize..(end - base) as usize;
            for (k, p) in pods[local].iter().enumerate() {
                let pod = first as usize + k;
                let stop = p.offset.saturating_add(u64::from(p.length));
                lo = lo.min(p.offset);
                hi = hi.max(stop);
                if stop > n_samples as u64 {
                    return Err(RawError::PodOutOfRange {
                        path: self.path.clone(),
                        event_id: id,
                        pod,
                        offset: p.offset,
                        end: stop,
                        n_samples,
                    });
                }
                if u32::from(p.channel) >= self.header.n_channels {
                    return Err(RawError::BadChannel {
                        path: self.path.clone(),
                        event_id: id,
                        pod,
                        channel: p.channel,
                        n_channels: self.header.n_channels,
                    });
                }
                let (s, e) = (
                    i64::from(p.start_sample),
                    i64::from(p.start_sample) + i64::from(p.length),
                );
                if s < 0 || e > window {
                    return Err(RawError::PodOutsideWindow {
                        path: self.path.clone(),
                        event_id: id,
                        pod,
                        start: s,
                        end: e,
                        window: self.header.window_samples,
                    });
                }
            }
        }
        Ok(lo.min(hi)..hi)
    }

    /// The DAQ header (sample period, window length, channel count) agrees
    /// with `detector`, the conditions (tag `tag`) the file is reconstructed
    /// with: pods are read in units of its samples, window and channels.
    ///
    /// # Errors
    /// [`RawError::DaqMismatch`] naming the file, the attribute and both values.
    pub fn check_daq(
        &self,
        detector: &tpcflow_reco::DetectorModel,
        tag: &str,
    ) -> Result<(), RawError> {
        let daq = &detector.params.daq;
        let h = &self.header;
        let window = ((daq.window_before_ns + daq.window_after_ns) / daq.sample_ns).round();
        let mismatch = |field, in_file: String, in_conditions: String| RawError::DaqMismatch {
            path: self.path.clone(),
            field,
            in_file,
            in_conditions,
            conditions_tag: tag.to_string(),
        };
        if (h.sample_period_ns - daq.sample_ns).abs() > 1e-9 * daq.sample_ns.abs() {
            return Err(mismatch(
                "sample_period_ns",
                format!("{} ns", h.sample_period_ns),
                format!("{} ns", daq.sample_ns),
            ));
        }
        if f64::from(h.window_samples) != window {
            return Err(mismatch(
                "window_samples",
                format!("{} samples", h.window_samples),
                format!("{window} samples"),
            ));
        }
        if h.n_channels as usize != detector.n_channels() {
            return Err(mismatch(
                "n_channels",
                h.n_channels.to_string(),
                detector.n_channels().to_string(),
            ));
        }
        Ok(())
    }

    /// The file's header.
    pub fn header(&self) -> &RawHeader {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of events.
    pub fn n_events(&self) -> usize {
        self.event_id.len()
    }

    /// Number of pods.
    pub fn n_pods(&self) -> usize {
        self.pod_columns
            .as_ref()
            .map_or(self.pods.len(), |c| c.n_pods)
    }

    /// The pods of events `events` (rows), for [`RawFile::event_in`]: borrowed
    /// from a file opened with [`RawFile::open`], read and validated now for
    /// one opened with [`RawFile::open_streaming`].
    ///
    /// # Errors
    /// A [`RawError`] naming the file, event and pod (streaming files only).
    pub fn pod_batch(&self, events: Range<usize>) -> Result<PodBatch<'_>, RawError> {
        self.pod_batch_reusing(events, Vec::new())
    }

    /// [`RawFile::pod_batch`] building a streaming window's pods in `buffer`
    /// (from [`PodBatch::into_buffer`] of the previous window).
    ///
    /// # Errors
    /// As [`RawFile::pod_batch`].
    pub fn pod_batch_reusing(
        &self,
        events: Range<usize>,
        buffer: Vec<PodRecord>,
    ) -> Result<PodBatch<'_>, RawError> {
        self.window(events, buffer, true)
    }

    pub(super) fn window(
        &self,
        events: Range<usize>,
        buffer: Vec<PodRecord>,
        populate: bool,
    ) -> Result<PodBatch<'_>, RawError> {
        self.window_covered(events, buffer, populate)
            .map(|(b, _)| b)
    }

    /// The window's pods, and the samples they cover when read from the
    /// pod columns (validated).
    pub(super) fn window_covered(
        &self,
        events: Range<usize>,
        mut buffer: Vec<PodRecord>,
        populate: bool,
    ) -> Result<(PodBatch<'_>, Option<Range<u64>>), RawError> {
        let (lo, hi) = self.pod_span(events.clone());
        if lo >= hi {
            return Ok((
                PodBatch {
                    base: 0,
                    pods: std::borrow::Cow::Borrowed(&[]),
                    direct: None,
                },
                None,
            ));
        }
        let mut covered_out = None;
        let pods = match &self.pod_columns {
            None => std::borrow::Cow::Borrowed(&self.pods[lo as usize..hi as usize]),
            Some(c) => {
                let range = lo as usize..hi as usize;
                let quick = match (c.mapped, &self.samples) {
                    (Some(at), Samples::Mapped { map, .. }) => {
                        mapped_pods(map, at, range, &mut buffer, &self.pod_limits())
                    }
                    _ => {
                        buffer = read_pods(c, range, &self.path)?;
                        self.quick_check(&buffer)
                    }
                };
                // The window's pods are those of its events (files are written
                // so); when one is not valid, the per-event pass names it.
                let covered = match quick {
                    Some(covered) => covered,
                    None => self.validate_pods(events, &buffer, lo)?,
                };
                covered_out = Some(covered.clone());
                if let (true, Samples::Mapped { map, start, .. }) = (populate, &self.samples) {
                    // Map the window's samples in one call instead of a page
                    // fault per 64 KiB as the reconstruction first reads them
                    // (validated: within the samples).
                    let page = 4096;
                    let a = (start + 2 * covered.start as usize) / page * page;
                    let b = start + 2 * covered.end as usize;
                    if b > a {
                        let _ = map.advise_range(memmap2::Advice::PopulateRead, a, b - a);
                    }
                }
                std::borrow::Cow::Owned(buffer)
            }
        };
        Ok((
            PodBatch {
                base: lo,
                pods,
                direct: None,
            },
            covered_out,
        ))
    }

    /// The pods of `events`, as (first, end): first >= end when they have none.
    pub(super) fn pod_span(&self, events: Range<usize>) -> (u64, u64) {
        events
            .filter(|&i| self.pod_count[i] > 0)
            .map(|i| {
                let first = self.first_pod[i];
                (first, first + u64::from(self.pod_count[i]))
            })
            .fold((u64::MAX, 0), |(lo, hi), (a, b)| (lo.min(a), hi.max(b)))
    }

    /// Event `index` (row) as a zero-copy view with its pods from `batch`.
    ///
    /// # Panics
    /// When `index >= n_events()` or the event is not in `batch`.
    pub fn event_in<'a>(&'a self, batch: &'a PodBatch<'_>, index: usize) -> EventView<'a> {
        let count = self.pod_count[index] as usize;
        let first = if count == 0 {
            0
        } else {
            (self.first_pod[index] - batch.base) as usize
        };
        EventView {
            event_id: self.event_id[index],
            trigger_time_ns: self.trigger_time_ns[index],
            pods: &batch.pods[first..first + count],
            samples: match &batch.direct {
                Some(d) => bytemuck::cast_slice(d.bytes()),
                None => self.samples(),
            },
        }
    }

    /// Where the samples of `view` (an event of `batch`, from
    /// [`RawFile::event_in`]) end in the file, taken from its last pod (files
    /// are written with an event's pods in sample order), and, when the
    /// batch's window was read directly, the bytes it holds: what an in-order
    /// checksum of the file has been read up to once the event is
    /// reconstructed, and where to take a direct window's bytes from
    /// ([`crate::adler::InOrderDigest`], which is right whatever the offsets:
    /// one that is off only moves bytes to a later piece). None for a file
    /// read through HDF5 and an event without pods.
    pub fn samples_in_file<'b>(
        &self,
        batch: &'b PodBatch<'_>,
        view: &EventView<'_>,
    ) -> Option<SamplesInFile<'b>> {
        let Samples::Mapped { start, .. } = &self.samples else {
            return None;
        };
        let last = view.pods.last()?;
        let end = usize::try_from(last.offset.saturating_add(u64::from(last.length))).ok()?;
        Some(match &batch.direct {
            // The pods' offsets count from the window's first sample.
            Some(d) => SamplesInFile {
                end: d.file_bytes().start.saturating_add(end.saturating_mul(2)),
                held: Some((d.file_bytes().start, d.bytes())),
            },
            None => SamplesInFile {
                end: start + 2 * end,
                held: None,
            },
        })
    }

    /// True when a streaming file's pod windows are read from the memory map
    /// (its pod columns contiguous, native and aligned) rather than through HDF5.
    pub fn pods_mapped(&self) -> bool {
        self.pod_columns
            .as_ref()
            .is_some_and(|c| c.mapped.is_some())
    }

    /// True when the samples are served from the memory map (zero copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.samples, Samples::Mapped { .. })
    }

    /// The whole sample array.
    pub fn samples(&self) -> &[i16] {
        match &self.samples {
            Samples::Mapped { map, start, len } => {
                bytemuck::cast_slice(&map[*start..*start + 2 * *len])
            }
            Samples::Owned(v) => v,
        }
    }

    /// Event `index` (row, not id) as a zero-copy view.
    ///
    /// # Panics
    /// When `index >= n_events()`.
    pub fn event(&self, index: usize) -> EventView<'_> {
        assert!(
            self.pod_columns.is_none(),
            "RawFile::event on a file opened for streaming: use pod_batch and event_in"
        );
        let first = self.first_pod[index] as usize;
        let count = self.pod_count[index] as usize;
        EventView {
            event_id: self.event_id[index],
            trigger_time_ns: self.trigger_time_ns[index],
            pods: &self.pods[first..first + count],
            samples: self.samples(),
        }
    }

    /// All events in file order.
    pub fn events(&self) -> impl ExactSizeIterator<Item = EventView<'_>> + '_ {
        (0..self.n_events()).map(move |i| self.event(i))
    }

    /// Event ids in file order.
    pub fn event_ids(&self) -> &[u64] {
        &self.event_id
    }
}

/// Pods `range` of the pod index, read from the `/pods` columns.
fn read_pods(c: &PodColumns, range: Range<usize>, path: &Path) -> Result<Vec<PodRecord>, RawError> {
    fn col<T: hdf5::H5Type>(
        d: &hdf5::Dataset,
        range: Range<usize>,
        path: &Path,
    ) -> Result<Vec<T>, RawError> {
        d.read_slice_1d::<T, _>(range)
            .map(|a| a.into_iter().collect())
            .map_err(|e| RawError::Malformed {
                path: path.to_path_buf(),
                what: format!("dataset `{}`: {e}", d.name()),
            })
    }
    if range.is_empty() {
        return Ok(Vec::new());
    }
    let channel: Vec<u16> = col(&c.channel, range.clone(), path)?;
    let start: Vec<i32> = col(&c.start, range.clone(), path)?;
    let length: Vec<u32> = col(&c.length, range.clone(), path)?;
    let offset: Vec<u64> = col(&c.offset, range, path)?;
    Ok((0..channel.len())
        .map(|i| PodRecord {
            channel: channel[i],
            start_sample: start[i],
            length: length[i],
            offset: offset[i],
        })
        .collect())
}

/// Number of events in a raw file, reading only its header and event index
/// (for planning work; [`RawFile::open`] validates everything).
///
/// # Errors
/// When the file cannot be opened, has an unknown version or no event index.
pub fn probe_events(path: &Path) -> Result<u64, RawError> {
    let file = crate::h5::open(path).map_err(|e| RawError::hdf5(path, "open", e))?;
    let version: u32 = read_attr(&file, "format_version", path)?;
    if version != FORMAT_VERSION {
        return Err(RawError::UnknownVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let ds = file
        .dataset("events/event_id")
        .map_err(|e| RawError::Malformed {
            path: path.to_path_buf(),
            what: format!("dataset `events/event_id`: {e}"),
        })?;
    Ok(ds.size() as u64)
}

impl RawFile {
    /// The memory map of the whole file, when the samples are read through
    /// one (not for files read through HDF5): what else must read every
    /// byte of the file (the input's checksum) reads these pages instead of
    /// mapping the file again.
    pub fn file_map(&self) -> Option<Arc<Mmap>> {
        match &self.samples {
            Samples::Mapped { map, .. } => Some(Arc::clone(map)),
            Samples::Owned(_) => None,
        }
    }
}

/// Map a file read-only.
#[allow(unsafe_code)]
fn map_file(f: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: raw files are immutable once renamed to their final name (every
    // writer writes a temporary name and renames); the map is read-only. A
    // file truncated underneath a running reader would fault: the same
    // contract every mmap reader (strax, ROOT) has.
    // No MADV_SEQUENTIAL: with it the kernel reads faulted ranges ahead in
    // small folios (4 KiB pages to map one by one instead of 2 MB ones): a
    // rank reading cold inputs spent 8.3 % of its busy time reading against
    // 4.7 % without (the prefetch thread reads ahead instead, see
    // `crate::raw::prefetch`).
    unsafe { Mmap::map(f) }
}
