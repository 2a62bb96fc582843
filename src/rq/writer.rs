//! [`RqWriter`]: an RQ file written batch by batch.
//!
//! Rows wait in memory until a whole chunk of a column is there (at most
//! [`CHUNK_ROWS`] rows per column, whatever the file size); whole chunks are
//! encoded together (in parallel on the writer's pool) and written with
//! `H5Dwrite_chunk`. A dataset is created when its first chunk is written:
//! a column that never fills a chunk gets one chunk of exactly its rows, so
//! the small `/events` columns of a file are not padded to 64 Ki rows (HDF5
//! would compress the padding too), and only the last chunk of a long column
//! is padded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chunk::{self, ChunkJob};
use super::create::Creator;
use super::{
    durable_rename, h5err, str_attr, Column, ColumnData, RqError, RqHeader, CHUNK_ROWS,
    DEFLATE_LEVEL,
};
use crate::atomic_file::temp_path as temp_name;

/// The RQ groups, in file order.
const GROUPS: [&str; 3] = ["events", "pulses", "channels"];

/// One column being written.
struct ColumnOut {
    name: String,
    units: String,
    description: String,
    /// Rows not yet in the file.
    pending: ColumnData,
    /// Created with the first chunk.
    ds: Option<hdf5::Dataset>,
    /// Stored without shuffle + deflate.
    plain: bool,
}

thread_local! {
    /// Pending-row buffers of the writers this thread closed, by group and
    /// column, for the next file's writer: a reco rank writes file after file
    /// with the same columns, and a fresh buffer per file cost its page
    /// faults (on this VM several ms per file). Each buffer is bounded by a
    /// chunk plus a batch of rows.
    static RECYCLED: std::cell::RefCell<Vec<(usize, String, ColumnData)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept for reuse per thread (more than the three groups' columns).
const RECYCLED_MAX: usize = 128;

/// `data` in a recycled buffer of `group`'s column `name`, when there is one.
fn pending_from(group: usize, name: &str, data: &ColumnData) -> ColumnData {
    let reused = RECYCLED.with(|r| {
        let mut r = r.borrow_mut();
        let i = r
            .iter()
            .position(|(g, n, d)| *g == group && n == name && d.same_type(data))?;
        Some(r.swap_remove(i).2)
    });
    match reused {
        Some(mut buffer) => {
            buffer.extend(data);
            buffer
        }
        None => data.clone(),
    }
}

/// Keep the pending buffers of `groups` for this thread's next writer.
fn recycle(groups: &mut [GroupOut; 3]) {
    RECYCLED.with(|r| {
        let mut r = r.borrow_mut();
        for (g, group) in groups.iter_mut().enumerate() {
            for mut col in group.columns.drain(..) {
                if r.len() < RECYCLED_MAX {
                    // Empty after a complete close; not after a failed one.
                    col.pending.remove_front(col.pending.len());
                    r.push((g, col.name, col.pending));
                }
            }
        }
    });
}

/// One group being written: its columns share the row count.
#[derive(Default)]
struct GroupOut {
    group: Option<hdf5::Group>,
    columns: Vec<ColumnOut>,
    /// Rows appended.
    rows: usize,
    /// Rows in the file (whole chunks).
    written: usize,
}

/// An RQ file written batch by batch, so that memory holds one batch of
/// columns plus less than one chunk per column, whatever the file size.
/// Written under a temporary name; `finish` adds the root attributes, fsyncs
/// and renames it to its final name. A writer dropped unfinished removes its
/// temporary file.
#[allow(missing_debug_implementations)] // hdf5 handles have no useful Debug
pub struct RqWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<hdf5::File>,
    groups: [GroupOut; 3],
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Datasets (`group/column`) stored without shuffle + deflate.
    plain: &'static [&'static str],
    /// The temporary file opened a second time, to start its writeback
    /// ([`start_writeback`]); None when it could not be opened.
    writeback: Option<std::fs::File>,
}

/// Start writing the file's dirty pages to disk without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), each time whole chunks were
/// written: the disk works while the rank reconstructs its next batches,
/// and the fsync that makes the file durable at the end waits only for what
/// came after (RocksDB's `bytes_per_sync` does the same). A hint only:
/// durability still comes from that fsync, and an error here is ignored.
#[allow(unsafe_code)]
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a system call on an open descriptor; no memory is passed.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Rows of `cols`, which must all have the same length.
fn group_rows(name: &'static str, cols: &[Column], path: &Path) -> Result<usize, RqError> {
    let expected = cols.first().map_or(0, |c| c.data.len());
    for c in cols {
        if c.data.len() != expected {
            return Err(RqError::Ragged {
                path: path.to_path_buf(),
                group: name,
                column: c.name.clone(),
                got: c.data.len(),
                expected,
            });
        }
    }
    Ok(expected)
}

impl GroupOut {
    /// Check a batch's columns against the group's: where each goes (None:
    /// the batch is empty or starts the group).
    fn check(
        &self,
        name: &'static str,
        cols: &[Column],
        path: &Path,
    ) -> Result<Option<Vec<usize>>, RqError> {
        group_rows(name, cols, path)?;
        if cols.is_empty() || self.columns.is_empty() {
            return Ok(None);
        }
        let schema = |column: &str, message: String| RqError::Schema {
            path: path.to_path_buf(),
            group: name,
            column: column.to_string(),
            message,
        };
        if cols.len() != self.columns.len() {
            let missing = self
                .columns
                .iter()
                .find(|o| !cols.iter().any(|c| c.name == o.name))
                .map_or_else(|| cols[0].name.clone(), |o| o.name.clone());
            return Err(schema(
                &missing,
                format!(
                    "batch has {} columns, the file {}",
                    cols.len(),
                    self.columns.len()
                ),
            ));
        }
        let mut order = Vec::with_capacity(cols.len());
        for (i, c) in cols.iter().enumerate() {
            let k = if self.columns[i].name == c.name {
                i
            } else {
                self.columns
                    .iter()
                    .position(|o| o.name == c.name)
                    .ok_or_else(|| schema(&c.name, "not a column of this file".into()))?
            };
            if !self.columns[k].pending.same_type(&c.data) {
                return Err(schema(&c.name, "value type differs from the file's".into()));
            }
            order.push(k);
        }
        Ok(Some(order))
    }

    /// Take a checked batch's columns into the pending rows.
    fn take(
        &mut self,
        group: usize,
        cols: &[Column],
        order: Option<Vec<usize>>,
        plain: impl Fn(&str) -> bool,
    ) {
        let n = cols.first().map_or(0, |c| c.data.len());
        match order {
            Some(order) => {
                for (c, k) in cols.iter().zip(order) {
                    self.columns[k].pending.extend(&c.data);
                }
                self.rows += n;
            }
            None if !cols.is_empty() => {
                self.columns = cols
                    .iter()
                    .map(|c| ColumnOut {
                        name: c.name.clone(),
                        units: c.units.clone(),
                        description: c.description.clone(),
                        pending: pending_from(group, &c.name, &c.data),
                        ds: None,
                        plain: plain(&c.name),
                    })
                    .collect();
                self.rows = n;
            }
            None => {}
        }
    }

    /// Make sure the group and every dataset exist (chunks of `chunk_rows`).
    fn create(
        &mut self,
        file: &hdf5::File,
        name: &str,
        chunk_rows: usize,
        path: &Path,
    ) -> Result<(), RqError> {
        if self.group.is_none() {
            self.group = Some(file.create_group(name).map_err(h5err(path, name))?);
        }
        let group = self.group.as_ref().expect("created above");
        if self.columns.iter().all(|c| c.ds.is_some()) {
            return Ok(());
        }
        // Chunked along rows, growable, shuffle + deflate unless plain, with
        // `units` and `description` attributes.
        let creator = Creator::new(chunk_rows, DEFLATE_LEVEL, path)?;
        for col in &mut self.columns {
            if col.ds.is_none() {
                col.ds = Some(creator.dataset(
                    group,
                    &col.name,
                    &col.pending,
                    col.plain,
                    [("units", &col.units), ("description", &col.description)],
                    path,
                )?);
            }
        }
        Ok(())
    }

    /// Write the pending rows' whole chunks, or with `last` every pending
    /// row (a single exact chunk when the column never filled one); `between`
    /// runs once the plain columns' chunks are written, before the others'.
    fn flush(
        &mut self,
        file: &hdf5::File,
        name: &str,
        last: bool,
        pool: Option<&rayon::ThreadPool>,
        path: &Path,
        between: &mut dyn FnMut(),
    ) -> Result<(), RqError> {
        let pending = self.rows - self.written;
        let whole = pending / CHUNK_ROWS;
        let first_chunk = self.written == 0 && self.columns.first().is_some_and(|c| c.ds.is_none());
        let chunk_rows = if last && whole == 0 && first_chunk {
            pending
        } else {
            CHUNK_ROWS
        };
        if self.columns.is_empty() || (!last && whole == 0) {
            return Ok(());
        }
        self.create(file, name, chunk_rows, path)?;
        let take = if last { pending } else { whole * CHUNK_ROWS };
        if take == 0 {
            return Ok(());
        }
        let rows_after = self.written + take;
        for col in &self.columns {
            let ds = col.ds.as_ref().expect("created above");
            ds.resize(rows_after).map_err(h5err(path, &col.name))?;
        }
        // The plain columns' chunks are written first, as they are; then
        // `between` runs (the writer starts their writeback there), then the
        // other columns' chunks are encoded and written. At the end of a
        // file, the disk takes the plain chunks (most of the bytes) while
        // the rest is deflated, so the final fsync waits for less.
        for plain in [true, false] {
            // (column, first row) of each chunk, and what to encode.
            let mut at = Vec::new();
            let mut jobs = Vec::new();
            for (k, col) in self.columns.iter().enumerate() {
                if col.plain != plain {
                    continue;
                }
                let size = col.pending.value_size();
                let bytes = col.pending.as_bytes();
                let mut row = 0;
                while row < take {
                    let end = (row + chunk_rows).min(take);
                    at.push((k, self.written + row));
                    jobs.push(ChunkJob {
                        data: &bytes[row * size..end * size],
                        size,
                        rows: chunk_rows,
                        plain: col.plain,
                    });
                    row = end;
                }
            }
            let encoded = chunk::encode(&jobs, pool).map_err(|source| RqError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            drop(jobs);
            for ((k, row), bytes) in at.into_iter().zip(encoded) {
                let col = &self.columns[k];
                let ds = col.ds.as_ref().expect("created above");
                chunk::write_chunk(ds, row, &bytes, path, &format!("/{name}/{}", col.name))?;
            }
            if plain {
                between();
            }
        }
        for col in &mut self.columns {
            col.pending.remove_front(take);
        }
        self.written = rows_after;
        Ok(())
    }
}

impl RqWriter {
    /// Start the RQ file that will be `path`; chunks are encoded on the
    /// calling thread (see [`RqWriter::encode_on`]).
    ///
    /// # Errors
    /// [`RqError`] naming the file.
    pub fn create(path: &Path) -> Result<Self, RqError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| RqError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let tmp = temp_name(path);
        let file = crate::h5::create(&tmp).map_err(h5err(&tmp, "create"))?;
        let writeback = std::fs::File::open(&tmp).ok();
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            groups: Default::default(),
            pool: None,
            plain: &[],
            writeback,
        })
    }

    /// Encode chunks on `pool` (a reco rank's rayon pool: its threads are
    /// idle while the rank writes).
    #[must_use]
    pub fn encode_on(mut self, pool: Arc<rayon::ThreadPool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Store the datasets `plain` (`"group/column"`) chunked but without
    /// shuffle + deflate: for full-precision float columns that deflate
    /// barely shrinks (see `reco_job::columns::PLAIN_COLUMNS`).
    #[must_use]
    pub fn plain(mut self, plain: &'static [&'static str]) -> Self {
        self.plain = plain;
        self
    }

    /// Rows written so far to `/events`, `/pulses` and `/channels`.
    pub fn rows(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.groups[i].rows as u64)
    }

    /// Append rows to the three groups (each group's columns of equal length;
    /// every batch has the same columns; an empty column list adds nothing).
    /// A refused batch adds nothing to any group.
    ///
    /// # Errors
    /// [`RqError`] naming the file and dataset; ragged or changed columns.
    pub fn append(
        &mut self,
        events: &[Column],
        pulses: &[Column],
        channels: &[Column],
    ) -> Result<(), RqError> {
        let file = self.file.as_ref().ok_or_else(|| RqError::Io {
            path: self.tmp.clone(),
            source: std::io::Error::other("writer already finished"),
        })?;
        let batch = [events, pulses, channels];
        // Every group is checked before any takes rows.
        let mut orders = Vec::with_capacity(3);
        for (i, cols) in batch.iter().enumerate() {
            orders.push(self.groups[i].check(GROUPS[i], cols, &self.tmp)?);
        }
        let plain = self.plain;
        for (i, ((g, cols), order)) in self.groups.iter_mut().zip(batch).zip(orders).enumerate() {
            g.take(i, cols, order, |c| {
                plain
                    .iter()
                    .any(|p| p.split_once('/') == Some((GROUPS[i], c)))
            });
        }
        let before: usize = self.groups.iter().map(|g| g.written).sum();
        for (i, g) in self.groups.iter_mut().enumerate() {
            g.flush(
                file,
                GROUPS[i],
                false,
                self.pool.as_deref(),
                &self.tmp,
                &mut || {},
            )?;
        }
        if let Some(f) = &self.writeback {
            if self.groups.iter().map(|g| g.written).sum::<usize>() > before {
                start_writeback(f);
            }
        }
        Ok(())
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write the pending rows and the root attributes, close, fsync and
    /// rename to the final name; returns the file size [bytes].
    ///
    /// # Errors
    /// [`RqError`] naming the file; the temporary file is removed.
    pub fn finish(self, header: &RqHeader) -> Result<u64, RqError> {
        self.close(header)?.commit()
    }

    /// Write the pending rows and the root attributes and close the file,
    /// still under its temporary name: [`ClosedRq::commit`] makes it durable
    /// and final (on another thread if wanted: it only waits on the disk).
    ///
    /// # Errors
    /// [`RqError`] naming the file; the temporary file is removed.
    pub fn close(mut self, header: &RqHeader) -> Result<ClosedRq, RqError> {
        let tmp = self.tmp.clone();
        let file = self.file.take().ok_or_else(|| RqError::Io {
            path: tmp.clone(),
            source: std::io::Error::other("writer already finished"),
        })?;
        let [n_events, n_pulses, _] = self.rows();
        let pool = self.pool.clone();
        let result = (|| {
            for (i, g) in self.groups.iter_mut().enumerate() {
                // The writeback of what is written is started as soon as the
                // plain chunks are out (see `GroupOut::flush`).
                let writeback = self.writeback.as_ref();
                g.flush(&file, GROUPS[i], true, pool.as_deref(), &tmp, &mut || {
                    if let Some(f) = writeback {
                        start_writeback(f);
                    }
                })?;
            }
            for g in ["events", "pulses"] {
                if file.group(g).is_err() {
                    file.create_group(g).map_err(h5err(&tmp, g))?;
                }
            }
            str_attr(&file, "software_version", crate::SOFTWARE_VERSION, &tmp)?;
            str_attr(&file, "lineage_json", &header.lineage_json, &tmp)?;
            str_attr(&file, "lineage_hash", &header.lineage_hash, &tmp)?;
            str_attr(&file, "conditions_tag", &header.conditions_tag, &tmp)?;
            if let Some(sha) = header.conditions_sha256() {
                str_attr(&file, "conditions_sha256", &sha, &tmp)?;
            }
            str_attr(&file, "input_file", &header.input_file, &tmp)?;
            str_attr(&file, "input_adler32", &header.input_adler32, &tmp)?;
            for (key, v) in [("n_events", n_events), ("n_pulses", n_pulses)] {
                file.new_attr::<u64>()
                    .shape(())
                    .create(key)
                    .and_then(|a| a.write_scalar(&v))
                    .map_err(h5err(&tmp, key))?;
            }
            file.flush().map_err(h5err(&tmp, "flush"))
        })();
        recycle(&mut self.groups);
        self.groups = Default::default();
        drop(file);
        let closed = ClosedRq {
            tmp,
            path: self.path.clone(),
            committed: false,
        };
        // On error, dropping `closed` removes the temporary file.
        result.map(|()| closed)
    }
}

/// A complete RQ file under its temporary name. Dropped without
/// [`ClosedRq::commit`], the temporary file is removed.
#[derive(Debug)]
pub struct ClosedRq {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl ClosedRq {
    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsync, rename to the final name, fsync the directory; the file size
    /// [bytes].
    ///
    /// # Errors
    /// [`RqError`] naming the file; the temporary file is removed.
    pub fn commit(mut self) -> Result<u64, RqError> {
        self.committed = true;
        durable_rename(&self.tmp, &self.path)
    }
}

impl Drop for ClosedRq {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Drop for RqWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            self.groups = Default::default();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
