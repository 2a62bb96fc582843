//! Reduced-quantity (RQ) files: what analysts open in h5py/pandas.
//!
//! ```text
//! /events/<column>   one dataset per event quantity (rows = events)
//! /pulses/<column>   one dataset per pulse quantity (rows = pulses);
//!                    /events/first_pulse + /events/n_pulses give each event's rows
//! /channels/<column> per-channel areas of each pulse (channel, area_phd);
//!                    /pulses/first_channel + /pulses/n_channel_areas give a pulse's rows
//! every dataset: chunked along rows, shuffle + deflate (a writer's `plain`
//!                    datasets: no filters), attributes `units`, `description`
//! root attributes: software_version, lineage_json, lineage_hash,
//!                  conditions_tag, conditions_sha256 (from the lineage), input_file,
//!                  input_adler32, n_events, n_pulses
//! ```
//!
//! Written to a temporary name, fsynced and renamed: a file under its final
//! name is always complete.

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;

mod chunk;
mod create;
mod writer;

pub use writer::{ClosedRq, RqWriter};

/// Rows per chunk (64 Ki rows: 256-512 KiB per chunk for 4-8 byte columns).
pub const CHUNK_ROWS: usize = 65_536;
/// Deflate level: 1 (zlib-rs, see `chunk`). When the level was chosen, on
/// 1000 mixed events' columns (4 MB shuffled): libdeflate level 1 19 ms ->
/// 2.08 MB, level 4 28 ms -> 2.05 MB; the system zlib level 1 42 ms -> 2.12
/// MB. The cheapest level that still halves the file.
pub const DEFLATE_LEVEL: u8 = 1;

/// The values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// Signed 64-bit integers.
    I64(Vec<i64>),
    /// Signed 32-bit integers.
    I32(Vec<i32>),
    /// Unsigned 64-bit integers.
    U64(Vec<u64>),
    /// Unsigned 32-bit integers.
    U32(Vec<u32>),
    /// Unsigned 16-bit integers.
    U16(Vec<u16>),
    /// Unsigned bytes (codes, flags).
    U8(Vec<u8>),
}

impl ColumnData {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            ColumnData::F32(v) => v.len(),
            ColumnData::F64(v) => v.len(),
            ColumnData::I64(v) => v.len(),
            ColumnData::I32(v) => v.len(),
            ColumnData::U64(v) => v.len(),
            ColumnData::U32(v) => v.len(),
            ColumnData::U16(v) => v.len(),
            ColumnData::U8(v) => v.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named column with its units.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Dataset name.
    pub name: String,
    /// Units, e.g. `ns`, `phd`, `mm`, `keV`, or `1` for counts and codes.
    pub units: String,
    /// One line for analysts.
    pub description: String,
    /// Values.
    pub data: ColumnData,
}

impl Column {
    /// A column.
    pub fn new(name: &str, units: &str, description: &str, data: ColumnData) -> Self {
        Self {
            name: name.into(),
            units: units.into(),
            description: description.into(),
            data,
        }
    }
}

/// File-level facts.
#[derive(Debug, Clone, PartialEq)]
pub struct RqHeader {
    /// Canonical lineage JSON.
    pub lineage_json: String,
    /// Lineage hash.
    pub lineage_hash: String,
    /// Detector conditions tag.
    pub conditions_tag: String,
    /// Name of the raw input file.
    pub input_file: String,
    /// adler32 of the raw input file (8 hex digits).
    pub input_adler32: String,
}

impl RqHeader {
    /// SHA-256 of the conditions' content, as the lineage records it (the
    /// `conditions_sha256` of its first stage that has one).
    pub fn conditions_sha256(&self) -> Option<String> {
        fn find(v: &serde_json::Value) -> Option<String> {
            if let Some(s) = v
                .pointer("/config/conditions_sha256")
                .and_then(|s| s.as_str())
            {
                return Some(s.to_string());
            }
            v.get("inputs")?.as_array()?.iter().find_map(find)
        }
        find(&serde_json::from_str(&self.lineage_json).ok()?)
    }
}

/// Errors writing RQ files.
#[derive(Debug, thiserror::Error)]
pub enum RqError {
    /// Finishing the file (fsync, rename, fsync of its directory) failed.
    #[error(transparent)]
    Finish(#[from] crate::atomic_file::AtomicFileError),
    /// HDF5 refused.
    #[error("{path}: HDF5: {what}: {message}")]
    Hdf5 {
        /// File.
        path: PathBuf,
        /// Object.
        what: String,
        /// HDF5's message.
        message: String,
    },
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Columns of one group with different lengths.
    #[error("{path}: /{group}/{column} has {got} rows, expected {expected}")]
    Ragged {
        /// File.
        path: PathBuf,
        /// Group.
        group: &'static str,
        /// Column.
        column: String,
        /// Rows found.
        got: usize,
        /// Rows expected.
        expected: usize,
    },
    /// An index column (`/events/first_pulse` + `n_pulses`, `/pulses/first_channel`
    /// + `n_channel_areas`) pointing past the rows of the group it indexes.
    #[error(
        "{path}: /{group}/{column} row {row}: rows {first}..{end} outside /{target} ({rows} rows)"
    )]
    BadIndex {
        /// File.
        path: PathBuf,
        /// Group of the index column.
        group: &'static str,
        /// Index column (the `first_*` one).
        column: String,
        /// Row of the index column.
        row: usize,
        /// First row indexed.
        first: u64,
        /// One past the last row indexed.
        end: u64,
        /// Group indexed.
        target: &'static str,
        /// Rows of the group indexed.
        rows: usize,
    },
    /// A batch whose columns differ from the file's (set or value type), or a
    /// dataset read back with a shape, type or size this reader does not accept.
    #[error("{path}: /{group}/{column}: {message}")]
    Schema {
        /// File.
        path: PathBuf,
        /// Group.
        group: &'static str,
        /// Column.
        column: String,
        /// What differs.
        message: String,
    },
}

impl RqError {
    /// True when the file system is full: an I/O error ENOSPC/EDQUOT, or
    /// HDF5's report of one (its innermost frame quotes the system's message).
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::Finish(e) => e.is_no_space(),
            Self::Io { source, .. } => crate::atomic_file::is_no_space(source),
            Self::Hdf5 { message, .. } => {
                message.contains("No space left on device")
                    || message.contains("Disk quota exceeded")
            }
            _ => false,
        }
    }
}

fn h5err(path: &Path, what: &str) -> impl FnOnce(hdf5::Error) -> RqError {
    let (path, what) = (path.to_path_buf(), what.to_string());
    move |e| RqError::Hdf5 {
        path,
        what,
        message: e.to_string(),
    }
}

/// fsync `tmp`, rename it to `path`, fsync the directory; the size [bytes].
/// `tmp` is removed when it cannot be made final.
fn durable_rename(tmp: &Path, path: &Path) -> Result<u64, RqError> {
    Ok(crate::atomic_file::commit(tmp, path)?)
}

fn str_attr(file: &hdf5::File, key: &str, value: &str, path: &Path) -> Result<(), RqError> {
    let s: VarLenUnicode = value.parse().unwrap_or_default();
    file.new_attr::<VarLenUnicode>()
        .shape(())
        .create(key)
        .and_then(|a| a.write_scalar(&s))
        .map_err(h5err(path, key))
}

/// Write an RQ file atomically; returns its size [bytes].
///
/// # Errors
/// [`RqError`] naming the file and the dataset.
pub fn write_rq_file(
    path: &Path,
    header: &RqHeader,
    events: &[Column],
    pulses: &[Column],
) -> Result<u64, RqError> {
    write_rq_file_with_channels(path, header, events, pulses, &[])
}

/// Write an RQ file with a `/channels` group of per-channel pulse areas.
///
/// # Errors
/// [`RqError`] naming the file and the dataset.
pub fn write_rq_file_with_channels(
    path: &Path,
    header: &RqHeader,
    events: &[Column],
    pulses: &[Column],
    channels: &[Column],
) -> Result<u64, RqError> {
    let mut w = RqWriter::create(path)?;
    w.append(events, pulses, channels)?;
    w.finish(header)
}

/// Read the lineage hash of an existing RQ file (None when absent or unreadable).
pub fn existing_lineage_hash(path: &Path) -> Option<String> {
    let f = crate::h5::open(path).ok()?;
    let s = f
        .attr("lineage_hash")
        .ok()?
        .read_scalar::<VarLenUnicode>()
        .ok()?;
    Some(s.as_str().to_string())
}

/// An RQ file read back: header and both column groups, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct RqFile {
    /// Root attributes.
    pub header: RqHeader,
    /// `/events` columns.
    pub events: Vec<Column>,
    /// `/pulses` columns.
    pub pulses: Vec<Column>,
    /// `/channels` columns (empty when the file has none).
    pub channels: Vec<Column>,
}

impl RqFile {
    /// An `/events` column by name.
    pub fn event_column(&self, name: &str) -> Option<&ColumnData> {
        self.events.iter().find(|c| c.name == name).map(|c| &c.data)
    }
    /// A `/pulses` column by name.
    pub fn pulse_column(&self, name: &str) -> Option<&ColumnData> {
        self.pulses.iter().find(|c| c.name == name).map(|c| &c.data)
    }

    /// Check the columns of each group have equal lengths and the index
    /// columns point within the rows they index (`/events/first_pulse` +
    /// `n_pulses` into `/pulses`; `/pulses/first_channel` + `n_channel_areas`
    /// into `/channels` when the file has channel areas). `path` names the
    /// file in the errors.
    ///
    /// # Errors
    /// [`RqError::Ragged`], [`RqError::BadIndex`], or [`RqError::Schema`]
    /// for an index column of floats or negative values.
    pub fn check(&self, path: &Path) -> Result<(), RqError> {
        let groups = [
            ("events", &self.events),
            ("pulses", &self.pulses),
            ("channels", &self.channels),
        ];
        for (group, cols) in groups {
            let Some(expected) = cols.first().map(|c| c.data.len()) else {
                continue;
            };
            if let Some(c) = cols.iter().find(|c| c.data.len() != expected) {
                return Err(RqError::Ragged {
                    path: path.to_path_buf(),
                    group,
                    column: c.name.clone(),
                    got: c.data.len(),
                    expected,
                });
            }
        }
        let rows = |cols: &[Column]| cols.first().map_or(0, |c| c.data.len());
        check_index(
            path,
            ("events", &self.events),
            ("first_pulse", "n_pulses"),
            ("pulses", rows(&self.pulses)),
        )?;
        if !self.channels.is_empty() {
            check_index(
                path,
                ("pulses", &self.pulses),
                ("first_channel", "n_channel_areas"),
                ("channels", rows(&self.channels)),
            )?;
        }
        Ok(())
    }
}

fn read_str_attr(loc: &hdf5::Location, key: &str, path: &Path) -> Result<String, RqError> {
    loc.attr(key)
        .and_then(|a| a.read_scalar::<VarLenUnicode>())
        .map(|s| s.as_str().to_string())
        .map_err(h5err(path, key))
}

/// Read the columns of group `name`, checking each dataset's shape and claimed
/// size before reading it.
fn read_group(file: &hdf5::File, name: &'static str, path: &Path) -> Result<Vec<Column>, RqError> {
    use hdf5::types::{FloatSize, IntSize, TypeDescriptor as T};
    let g = file.group(name).map_err(h5err(path, name))?;
    let mut names = g.member_names().map_err(h5err(path, name))?;
    names.sort();
    let mut cols = Vec::with_capacity(names.len());
    for n in names {
        let what = format!("/{name}/{n}");
        let ds = g.dataset(&n).map_err(h5err(path, &what))?;
        let schema = |message: String| RqError::Schema {
            path: path.to_path_buf(),
            group: name,
            column: n.clone(),
            message,
        };
        if ds.ndim() != 1 {
            return Err(schema(format!(
                "shape {:?}: a column has one dimension",
                ds.shape()
            )));
        }
        crate::h5::read_size(&ds).map_err(schema)?;
        let desc = ds
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(h5err(path, &what))?;
        macro_rules! rd {
            ($t:ty, $v:ident) => {
                ColumnData::$v(ds.read_raw::<$t>().map_err(h5err(path, &what))?)
            };
        }
        let data = match desc {
            T::Float(FloatSize::U4) => rd!(f32, F32),
            T::Float(FloatSize::U8) => rd!(f64, F64),
            T::Integer(IntSize::U8) => rd!(i64, I64),
            T::Integer(IntSize::U4) => rd!(i32, I32),
            T::Unsigned(IntSize::U8) => rd!(u64, U64),
            T::Unsigned(IntSize::U4) => rd!(u32, U32),
            T::Unsigned(IntSize::U2) => rd!(u16, U16),
            T::Unsigned(IntSize::U1) => rd!(u8, U8),
            other => {
                return Err(RqError::Hdf5 {
                    path: path.to_path_buf(),
                    what,
                    message: format!("unsupported column type {other:?}"),
                })
            }
        };
        let loc: &hdf5::Location = &ds;
        let units = read_str_attr(loc, "units", path)?;
        let description = read_str_attr(loc, "description", path).unwrap_or_default();
        cols.push(Column {
            name: n,
            units,
            description,
            data,
        });
    }
    Ok(cols)
}

/// The values of an integer column as row numbers, or None for a float
/// column or a negative value.
fn row_numbers(data: &ColumnData) -> Option<Vec<u64>> {
    fn signed<T: Copy + TryInto<u64>>(v: &[T]) -> Option<Vec<u64>> {
        v.iter().map(|&x| x.try_into().ok()).collect()
    }
    match data {
        ColumnData::U64(v) => Some(v.clone()),
        ColumnData::U32(v) => Some(v.iter().map(|&x| u64::from(x)).collect()),
        ColumnData::U16(v) => Some(v.iter().map(|&x| u64::from(x)).collect()),
        ColumnData::U8(v) => Some(v.iter().map(|&x| u64::from(x)).collect()),
        ColumnData::I64(v) => signed(v),
        ColumnData::I32(v) => signed(v),
        ColumnData::F32(_) | ColumnData::F64(_) => None,
    }
}

/// Check that the rows `first[i]..first[i] + count[i]` of each row `i` of
/// `group` lie within the `rows` rows of `target` (when both columns exist).
fn check_index(
    path: &Path,
    (group, cols): (&'static str, &[Column]),
    (first_name, count_name): (&str, &str),
    (target, rows): (&'static str, usize),
) -> Result<(), RqError> {
    let find = |name: &str| cols.iter().find(|c| c.name == name);
    let (Some(first), Some(count)) = (find(first_name), find(count_name)) else {
        return Ok(());
    };
    let values = |c: &Column| {
        row_numbers(&c.data).ok_or_else(|| RqError::Schema {
            path: path.to_path_buf(),
            group,
            column: c.name.clone(),
            message: "an index column holds non-negative integers".into(),
        })
    };
    let (first_rows, counts) = (values(first)?, values(count)?);
    for (row, (&a, &n)) in first_rows.iter().zip(&counts).enumerate() {
        let end = a.saturating_add(n);
        if n > 0 && end > rows as u64 {
            return Err(RqError::BadIndex {
                path: path.to_path_buf(),
                group,
                column: first_name.to_string(),
                row,
                first: a,
                end,
                target,
                rows,
            });
        }
    }
    Ok(())
}

/// Read a whole RQ file (columns sorted by name).
///
/// Checked before anything is used: every dataset is one-dimensional, of a
/// supported type and no larger than its storage can hold; the columns of a
/// group have equal lengths; the index columns point within the rows they
/// index.
///
/// # Errors
/// [`RqError`] naming the file and the dataset: [`RqError::Hdf5`] for a
/// missing group or unreadable dataset, [`RqError::Schema`] for a bad shape,
/// type or size, [`RqError::Ragged`], [`RqError::BadIndex`].
pub fn read_rq_file(path: &Path) -> Result<RqFile, RqError> {
    let file = crate::h5::open(path).map_err(h5err(path, "open"))?;
    let loc: &hdf5::Location = &file;
    let header = RqHeader {
        lineage_json: read_str_attr(loc, "lineage_json", path)?,
        lineage_hash: read_str_attr(loc, "lineage_hash", path)?,
        conditions_tag: read_str_attr(loc, "conditions_tag", path)?,
        input_file: read_str_attr(loc, "input_file", path)?,
        input_adler32: read_str_attr(loc, "input_adler32", path)?,
    };
    let channels = if file.link_exists("channels") {
        read_group(&file, "channels", path)?
    } else {
        Vec::new()
    };
    let rq = RqFile {
        header,
        events: read_group(&file, "events", path)?,
        pulses: read_group(&file, "pulses", path)?,
        channels,
    };
    rq.check(path)?;
    Ok(rq)
}

/// The `/events/event_id` column of an RQ file (for indexes of many files,
/// without reading the other columns).
///
/// # Errors
/// [`RqError`] naming the file and the dataset when it is missing, not
/// one-dimensional `u64`, or larger than its storage can hold.
pub fn read_event_ids(path: &Path) -> Result<Vec<u64>, RqError> {
    let what = "/events/event_id";
    let file = crate::h5::open(path).map_err(h5err(path, "open"))?;
    let ds = file.dataset("events/event_id").map_err(h5err(path, what))?;
    let schema = |message: String| RqError::Schema {
        path: path.to_path_buf(),
        group: "events",
        column: "event_id".into(),
        message,
    };
    let u64_type = hdf5::Datatype::from_type::<u64>().map_err(h5err(path, what))?;
    if ds.ndim() != 1 || ds.dtype().map_err(h5err(path, what))? != u64_type {
        return Err(schema(format!(
            "expected a one-dimensional u64 column, found shape {:?}",
            ds.shape()
        )));
    }
    crate::h5::read_size(&ds).map_err(schema)?;
    ds.read_raw::<u64>().map_err(h5err(path, what))
}

impl ColumnData {
    /// Append another column of the same type.
    ///
    /// # Panics
    /// When the types differ (a caller bug: parts of one file share a schema).
    pub fn extend(&mut self, other: &ColumnData) {
        match (self, other) {
            (ColumnData::F32(a), ColumnData::F32(b)) => a.extend_from_slice(b),
            (ColumnData::F64(a), ColumnData::F64(b)) => a.extend_from_slice(b),
            (ColumnData::I64(a), ColumnData::I64(b)) => a.extend_from_slice(b),
            (ColumnData::I32(a), ColumnData::I32(b)) => a.extend_from_slice(b),
            (ColumnData::U64(a), ColumnData::U64(b)) => a.extend_from_slice(b),
            (ColumnData::U32(a), ColumnData::U32(b)) => a.extend_from_slice(b),
            (ColumnData::U16(a), ColumnData::U16(b)) => a.extend_from_slice(b),
            (ColumnData::U8(a), ColumnData::U8(b)) => a.extend_from_slice(b),
            (a, b) => panic!("cannot append {b:?} to a column of another type {a:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RqHeader {
        RqHeader {
            lineage_json: "{}".into(),
            lineage_hash: "abc".into(),
            conditions_tag: "v1".into(),
            input_file: "x.raw.h5".into(),
            input_adler32: "0000abcd".into(),
        }
    }

    #[test]
    fn batches_append_to_one_file_and_an_unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.rq.h5");
        let col = |v: Vec<f64>| vec![Column::new("t", "ns", "time", ColumnData::F64(v))];
        let mut w = RqWriter::create(&path).unwrap();
        w.append(&col(vec![1.0, 2.0]), &[], &[]).unwrap();
        w.append(&col(vec![]), &[], &[]).unwrap();
        w.append(&col(vec![3.0]), &[], &[]).unwrap();
        assert_eq!(w.rows(), [3, 0, 0]);
        // A batch with another column set is refused, naming the column.
        let other = vec![Column::new("u", "1", "u", ColumnData::U8(vec![1]))];
        let err = w.append(&other, &[], &[]).unwrap_err().to_string();
        assert!(err.contains('u'), "{err}");
        assert!(!path.exists(), "nothing under the final name before finish");
        w.finish(&header()).unwrap();
        let f = read_rq_file(&path).unwrap();
        assert_eq!(
            f.event_column("t"),
            Some(&ColumnData::F64(vec![1.0, 2.0, 3.0]))
        );
        assert_eq!(f.header.lineage_hash, "abc");
        // Dropped before finish (a failed unit): no file, no temporary.
        let path2 = dir.path().join("c.rq.h5");
        let mut w = RqWriter::create(&path2).unwrap();
        w.append(&col(vec![1.0]), &[], &[]).unwrap();
        drop(w);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("b.rq.h5")]);
    }

    #[test]
    fn the_next_file_on_a_thread_reuses_buffers_without_the_last_files_rows() {
        let dir = tempfile::tempdir().unwrap();
        let col = |v: ColumnData| vec![Column::new("t", "ns", "time", v)];
        let write = |name: &str, batches: &[ColumnData]| {
            let path = dir.path().join(name);
            let mut w = RqWriter::create(&path).unwrap();
            for b in batches {
                w.append(&col(b.clone()), &[], &[]).unwrap();
            }
            w.finish(&header()).unwrap();
            read_rq_file(&path).unwrap()
        };
        let a = write("a.rq.h5", &[ColumnData::F64(vec![1.0, 2.0, 3.0])]);
        assert_eq!(
            a.event_column("t"),
            Some(&ColumnData::F64(vec![1.0, 2.0, 3.0]))
        );
        // Same column: the recycled buffer holds only this file's rows.
        let b = write(
            "b.rq.h5",
            &[ColumnData::F64(vec![7.0]), ColumnData::F64(vec![8.0])],
        );
        assert_eq!(b.event_column("t"), Some(&ColumnData::F64(vec![7.0, 8.0])));
        // Same name, another type: not mixed up with the recycled buffer.
        let c = write("c.rq.h5", &[ColumnData::U8(vec![5])]);
        assert_eq!(c.event_column("t"), Some(&ColumnData::U8(vec![5])));
    }

    #[test]
    fn columns_round_trip_with_units() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.rq.h5");
        let events = vec![
            Column::new(
                "drift_time_ns",
                "ns",
                "drift time",
                ColumnData::F64(vec![1.0, 2.5]),
            ),
            Column::new("n_pulses", "1", "pulses", ColumnData::U32(vec![3, 0])),
        ];
        let pulses = vec![Column::new(
            "area_phd",
            "phd",
            "area",
            ColumnData::F32(vec![1.0, 2.0, 3.0]),
        )];
        write_rq_file(&path, &header(), &events, &pulses).unwrap();
        let back = read_rq_file(&path).unwrap();
        assert_eq!(back.header, header());
        assert_eq!(back.events, events);
        assert_eq!(back.pulses, pulses);
        assert_eq!(existing_lineage_hash(&path).as_deref(), Some("abc"));
    }

    #[test]
    fn ragged_columns_are_refused_and_nothing_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.rq.h5");
        let events = vec![
            Column::new("a", "1", "", ColumnData::F64(vec![1.0, 2.0])),
            Column::new("b", "1", "", ColumnData::F64(vec![1.0])),
        ];
        let err = write_rq_file(&path, &header(), &events, &[]).unwrap_err();
        assert!(
            err.to_string().contains("/events/b has 1 rows, expected 2"),
            "{err}"
        );
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary file removed"
        );
    }
}
