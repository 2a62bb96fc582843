//! Writing raw files: to a temporary name, then [`crate::atomic_file::commit`]
//! (fsync, rename, fsync of the directory).

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use tpcflow_reco::PodRecord;

use super::{RawError, RawHeader, FORMAT_VERSION};

/// An event held in memory before writing; pod offsets index `samples`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnedEvent {
    /// Event number.
    pub event_id: u64,
    /// S2 trigger time since the run start [ns].
    pub trigger_time_ns: i64,
    /// Pods, offsets relative to `samples`.
    pub pods: Vec<PodRecord>,
    /// Samples of all pods, in pod order.
    pub samples: Vec<i16>,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Events written.
    pub events: usize,
    /// Pods written.
    pub pods: usize,
    /// Samples written.
    pub samples: usize,
    /// File size [bytes].
    pub bytes: u64,
}

/// The temporary name a file is written under before its rename
/// ([`crate::atomic_file::temp_path`]).
pub fn temp_name(path: &Path) -> PathBuf {
    crate::atomic_file::temp_path(path)
}

fn write_column<T: hdf5::H5Type>(
    group: &hdf5::Group,
    name: &str,
    data: &[T],
    path: &Path,
) -> Result<(), RawError> {
    group
        .new_dataset_builder()
        .with_data(data)
        .create(name)
        .map(|_| ())
        .map_err(|e| RawError::hdf5(path, name, e))
}

fn write_attr<T: hdf5::H5Type>(
    file: &hdf5::File,
    name: &str,
    v: &T,
    path: &Path,
) -> Result<(), RawError> {
    file.new_attr::<T>()
        .shape(())
        .create(name)
        .and_then(|a| a.write_scalar(v))
        .map_err(|e| RawError::hdf5(path, name, e))
}

fn write_str_attr(file: &hdf5::File, name: &str, v: &str, path: &Path) -> Result<(), RawError> {
    let s: VarLenUnicode = v.parse().map_err(|e| RawError::Malformed {
        path: path.to_path_buf(),
        what: format!("attribute {name}: {e}"),
    })?;
    write_attr(file, name, &s, path)
}

/// Write a raw file atomically: `.{name}.tmp`, fsync, rename to `path`.
///
/// Pod offsets of each event are relative to that event's `samples`; the
/// writer concatenates them into the file's single sample array.
///
/// # Errors
/// [`RawError`] naming the file when HDF5 or the file system fails.
pub fn write_raw_file(
    path: &Path,
    header: &RawHeader,
    events: &[OwnedEvent],
) -> Result<WriteStats, RawError> {
    let io = |source| RawError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = temp_name(path);
    let n_pods: usize = events.iter().map(|e| e.pods.len()).sum();
    let n_samples: usize = events.iter().map(|e| e.samples.len()).sum();

    let mut event_id = Vec::with_capacity(events.len());
    let mut trigger = Vec::with_capacity(events.len());
    let mut first_pod = Vec::with_capacity(events.len());
    let mut pod_count = Vec::with_capacity(events.len());
    let mut channel = Vec::with_capacity(n_pods);
    let mut start = Vec::with_capacity(n_pods);
    let mut length = Vec::with_capacity(n_pods);
    let mut offset = Vec::with_capacity(n_pods);
    let mut samples: Vec<i16> = Vec::with_capacity(n_samples);
    for e in events {
        event_id.push(e.event_id);
        trigger.push(e.trigger_time_ns);
        first_pod.push(channel.len() as u64);
        pod_count.push(e.pods.len() as u32);
        let base = samples.len() as u64;
        for p in &e.pods {
            channel.push(p.channel);
            start.push(p.start_sample);
            length.push(p.length);
            offset.push(base + p.offset);
        }
        samples.extend_from_slice(&e.samples);
    }

    let written = (|| {
        // Align large objects to 4 KiB so the sample array is page-aligned for mmap.
        let file = crate::h5::create(&tmp).map_err(|e| RawError::hdf5(&tmp, "create", e))?;
        write_attr(&file, "format_version", &FORMAT_VERSION, &tmp)?;
        write_attr(&file, "run", &header.run, &tmp)?;
        write_attr(&file, "sequence", &header.sequence, &tmp)?;
        write_attr(&file, "sample_period_ns", &header.sample_period_ns, &tmp)?;
        write_attr(&file, "n_channels", &header.n_channels, &tmp)?;
        write_attr(&file, "window_samples", &header.window_samples, &tmp)?;
        write_str_attr(&file, "conditions_tag", &header.conditions_tag, &tmp)?;
        write_str_attr(&file, "software_version", crate::SOFTWARE_VERSION, &tmp)?;
        let ev = file
            .create_group("events")
            .map_err(|e| RawError::hdf5(&tmp, "/events", e))?;
        write_column(&ev, "event_id", &event_id, &tmp)?;
        write_column(&ev, "trigger_time_ns", &trigger, &tmp)?;
        write_column(&ev, "first_pod", &first_pod, &tmp)?;
        write_column(&ev, "pod_count", &pod_count, &tmp)?;
        let pods = file
            .create_group("pods")
            .map_err(|e| RawError::hdf5(&tmp, "/pods", e))?;
        write_column(&pods, "channel", &channel, &tmp)?;
        write_column(&pods, "start_sample", &start, &tmp)?;
        write_column(&pods, "length", &length, &tmp)?;
        write_column(&pods, "offset", &offset, &tmp)?;
        // Contiguous (no chunking, no filters): the reader maps it.
        let root: &hdf5::Group = &file;
        write_column(root, "samples", &samples, &tmp)?;
        file.flush().map_err(|e| RawError::hdf5(&tmp, "flush", e))
    })();
    if let Err(e) = written {
        // A half-written temporary (e.g. on a full disk) is removed, not left behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let bytes = crate::atomic_file::commit(&tmp, path)?;
    Ok(WriteStats {
        events: events.len(),
        pods: n_pods,
        samples: n_samples,
        bytes,
    })
}
