//! Reading raw files: HDF5 for the tables, memmap2 for the sample array.
//!
//! [`RawFile::open`] reads the event and pod tables, validates every pod
//! against the sample array, the channel count and the event window, then
//! maps the contiguous `/samples` dataset at its file offset. Events are
//! served as [`EventView`]s borrowing the mapped samples: zero copies. A
//! chunked or compressed `/samples` (not written by tpcflow, but legal HDF5)
//! is read through HDF5 instead.

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use tpcflow_reco::{EventView, PodRecord};

use super::{RawError, RawHeader, FORMAT_VERSION};

/// How the sample array is held.
#[derive(Debug)]
enum Samples {
    /// Memory-mapped file and the byte range of the array in it.
    Mapped { map: Mmap, start: usize, len: usize },
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
    pods: Vec<PodRecord>,
    samples: Samples,
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
    file.dataset(name)
        .and_then(|d| d.read_raw::<T>())
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
        Self::open_with(path, true)
    }

    /// Open reading the samples through HDF5 instead of mapping them (the
    /// fallback path; for benchmarks and cross-checks).
    ///
    /// # Errors
    /// As [`RawFile::open`].
    pub fn open_via_hdf5(path: &Path) -> Result<Self, RawError> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, allow_mmap: bool) -> Result<Self, RawError> {
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
        let channel: Vec<u16> = read_column(&file, "pods/channel", path)?;
        let start: Vec<i32> = read_column(&file, "pods/start_sample", path)?;
        let length: Vec<u32> = read_column(&file, "pods/length", path)?;
        let offset: Vec<u64> = read_column(&file, "pods/offset", path)?;
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
        let n_pods = channel.len();
        if [start.len(), length.len(), offset.len()]
            .iter()
            .any(|&l| l != n_pods)
        {
            return Err(RawError::Malformed {
                path: path.to_path_buf(),
                what: "the /pods columns have different lengths".into(),
            });
        }
        let pods: Vec<PodRecord> = (0..n_pods)
            .map(|i| PodRecord {
                channel: channel[i],
                start_sample: start[i],
                length: length[i],
                offset: offset[i],
            })
            .collect();

        let ds = file.dataset("samples").map_err(|e| RawError::Malformed {
            path: path.to_path_buf(),
            what: format!("dataset `samples`: {e}"),
        })?;
        let n_samples = ds.size();
        let native =
            hdf5::Datatype::from_type::<i16>().map_err(|e| RawError::hdf5(path, "i16 type", e))?;
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
        let mappable = allow_mmap && !ds.is_chunked() && ds.filters().is_empty() && dtype == native;
        let mapped_at = if mappable && n_samples > 0 {
            ds.offset()
        } else {
            None
        };
        let samples = match mapped_at {
            Some(at) => {
                let needed = at + 2 * n_samples as u64;
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
                    Samples::Mapped { map, start, len }
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
        let raw = Self {
            path: path.to_path_buf(),
            header,
            event_id,
            trigger_time_ns,
            first_pod,
            pod_count,
            pods,
            samples,
        };
        raw.validate()?;
        Ok(raw)
    }

    fn validate(&self) -> Result<(), RawError> {
        let n_samples = self.samples().len();
        let n_pods = self.pods.len();
        let window = i64::from(self.header.window_samples);
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
            for (k, p) in self.pods[first as usize..end as usize].iter().enumerate() {
                let pod = first as usize + k;
                let stop = p.offset.saturating_add(u64::from(p.length));
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
        self.pods.len()
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

/// Map a file read-only.
#[allow(unsafe_code)]
fn map_file(f: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: raw files are immutable once renamed to their final name (every
    // writer writes a temporary name and renames); the map is read-only. A
    // file truncated underneath a running reader would fault: the same
    // contract every mmap reader (strax, ROOT) has.
    let map = unsafe { Mmap::map(f) }?;
    // Events are read front to back: let the kernel read ahead.
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}
