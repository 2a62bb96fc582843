//! The raw file format: what the DAQ writes and the reconstruction reads.
//!
//! One HDF5 file per (run, sequence), `{run:06}/{run:06}_{seq:05}.raw.h5`:
//!
//! ```text
//! /events/event_id         u64   event number (unique within the run)
//! /events/trigger_time_ns  i64   S2 trigger time since the run start [ns]
//! /events/first_pod        u64   index of the event's first row in /pods
//! /events/pod_count        u32   number of pods of the event
//! /pods/channel            u16   PMT channel
//! /pods/start_sample       i32   first sample, from the event window start [samples]
//! /pods/length             u32   samples in the pod
//! /pods/offset             u64   index of the pod's first sample in /samples
//! /samples                 i16   ONE flat, contiguous, uncompressed array (ADC counts)
//! root attributes: format_version, run, sequence, sample_period_ns,
//!                  conditions_tag, n_channels, window_samples, software_version
//! ```
//!
//! `/samples` is contiguous so that [`reader::RawFile`] can memory-map it and
//! serve events as zero-copy views.

pub mod direct;
pub mod prefetch;
pub mod readahead;
pub mod reader;
pub mod writer;

use std::ops::Range;
use std::path::{Path, PathBuf};

pub use reader::{PodBatch, RawFile, SamplesInFile};
pub use writer::{write_raw_file, OwnedEvent};

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// File-level facts stored as root attributes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RawHeader {
    /// Run number.
    pub run: u32,
    /// File sequence number within the run.
    pub sequence: u32,
    /// Sample period [ns].
    pub sample_period_ns: f64,
    /// Detector conditions tag.
    pub conditions_tag: String,
    /// Number of PMT channels.
    pub n_channels: u32,
    /// Samples in an event window.
    pub window_samples: u32,
}

/// Errors reading or writing raw files. Each names the file; pod-level ones the event and pod.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// Finishing a file (fsync, rename, fsync of its directory) failed.
    #[error(transparent)]
    Finish(#[from] crate::atomic_file::AtomicFileError),
    /// Operating-system I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The HDF5 library refused.
    #[error("{path}: HDF5: {message}")]
    Hdf5 {
        /// File.
        path: PathBuf,
        /// What HDF5 said (and about which object).
        message: String,
    },
    /// The file is shorter than its own metadata says.
    #[error("{path}: truncated file: {detail}")]
    Truncated {
        /// File.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// A format version this code does not know.
    #[error(
        "{path}: unknown raw format version {found} (this build reads version {FORMAT_VERSION})"
    )]
    UnknownVersion {
        /// File.
        path: PathBuf,
        /// Version in the file.
        found: u32,
    },
    /// Tables of inconsistent lengths, or a missing part.
    #[error("{path}: malformed: {what}")]
    Malformed {
        /// File.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An event's pod range falls outside the pod table.
    #[error("{path}: event {event_id} (row {event_index}): pods {first_pod}..{end} outside the pod table of {n_pods}")]
    BadPodRange {
        /// File.
        path: PathBuf,
        /// Event row.
        event_index: usize,
        /// Event number.
        event_id: u64,
        /// First pod.
        first_pod: u64,
        /// One past the last pod.
        end: u64,
        /// Pods in the file.
        n_pods: usize,
    },
    /// A pod points outside the sample array.
    #[error("{path}: event {event_id}, pod {pod}: samples {offset}..{end} outside the sample array of {n_samples}")]
    PodOutOfRange {
        /// File.
        path: PathBuf,
        /// Event number.
        event_id: u64,
        /// Pod row.
        pod: usize,
        /// Pod offset.
        offset: u64,
        /// Offset + length.
        end: u64,
        /// Samples in the file.
        n_samples: usize,
    },
    /// A pod on a channel the detector does not have.
    #[error("{path}: event {event_id}, pod {pod}: channel {channel} out of range (detector has {n_channels})")]
    BadChannel {
        /// File.
        path: PathBuf,
        /// Event number.
        event_id: u64,
        /// Pod row.
        pod: usize,
        /// Channel found.
        channel: u16,
        /// Channels of the detector.
        n_channels: u32,
    },
    /// A pod starting or ending outside the event window.
    #[error("{path}: event {event_id}, pod {pod}: samples {start}..{end} outside the event window of {window} samples")]
    PodOutsideWindow {
        /// File.
        path: PathBuf,
        /// Event number.
        event_id: u64,
        /// Pod row.
        pod: usize,
        /// Start sample.
        start: i64,
        /// End sample.
        end: i64,
        /// Window length.
        window: u32,
    },
    /// The file's DAQ header disagrees with the detector conditions the
    /// reconstruction uses (the DAQ's own conditions tag is not compared:
    /// a newer tag may rightly be used).
    #[error(
        "{path}: DAQ header {field} is {in_file}, conditions {conditions_tag} say {in_conditions}"
    )]
    DaqMismatch {
        /// File.
        path: PathBuf,
        /// Header attribute.
        field: &'static str,
        /// Its value in the file.
        in_file: String,
        /// The value the conditions imply.
        in_conditions: String,
        /// The conditions' tag.
        conditions_tag: String,
    },
}

impl RawError {
    pub(crate) fn hdf5(path: &Path, what: &str, e: hdf5::Error) -> Self {
        let message = format!("{what}: {e}");
        if message.contains("truncated") {
            return RawError::Truncated {
                path: path.to_path_buf(),
                detail: message,
            };
        }
        RawError::Hdf5 {
            path: path.to_path_buf(),
            message,
        }
    }
}

/// Path of raw file `seq` of `run` under a site root: `{run:06}/{run:06}_{seq:05}.raw.h5`.
pub fn raw_file_path(root: &Path, run: u32, seq: u32) -> PathBuf {
    root.join(format!("{run:06}"))
        .join(format!("{run:06}_{seq:05}.raw.h5"))
}

/// The truth file beside a raw file (`*.raw.h5` -> `*.truth.h5`).
pub fn truth_path_for(raw: &Path) -> PathBuf {
    let name = raw
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".raw.h5").unwrap_or(&name);
    raw.with_file_name(format!("{stem}.truth.h5"))
}

/// Rows `range` of the mapped column at byte offset `at` (its placement and
/// alignment checked at open by `reader::PodColumns::locate_in`;
/// read by the reader and by the read-ahead of a window).
fn mapped_column<'a, T: bytemuck::Pod>(map: &'a [u8], at: usize, range: &Range<usize>) -> &'a [T] {
    let size = std::mem::size_of::<T>();
    bytemuck::cast_slice(&map[at + range.start * size..at + range.end * size])
}
