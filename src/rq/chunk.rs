//! Whole chunks encoded here and written with `H5Dwrite_chunk`.
//!
//! HDF5's filter pipeline compresses with the system zlib, one chunk at a
//! time, on the calling thread; for a reco rank that was a sixth of its time.
//! tpcflow applies the same two filters itself: HDF5's byte shuffle, then
//! deflate in the zlib format at level 1 with zlib-rs (through flate2), chunks
//! of one append in parallel on the writer's pool. zlib-rs level 1 is zlib's
//! "quick" strategy: on the RQ writer benchmark (1000 mixed events) 30-37 ms
//! against libdeflate level 1's 39-40 ms, for a 3 % larger file (6.8 vs 6.6
//! MB); libdeflate spent ~0.5 ms on a 157 KB pulse column that deflates 125x.
//! Both are about twice the system zlib's speed. The dataset keeps the
//! standard shuffle + deflate filter pipeline in its creation properties, so every HDF5 reader
//! (h5py, h5dump, ROOT) decodes the chunks as if HDF5 had written them.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::Path;

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;

use super::{ColumnData, RqError, DEFLATE_LEVEL};

impl ColumnData {
    /// Bytes per value.
    pub fn value_size(&self) -> usize {
        match self {
            ColumnData::F64(_) | ColumnData::I64(_) | ColumnData::U64(_) => 8,
            ColumnData::F32(_) | ColumnData::I32(_) | ColumnData::U32(_) => 4,
            ColumnData::U16(_) => 2,
            ColumnData::U8(_) => 1,
        }
    }

    /// The values as native-endian bytes (what HDF5 stores for a native type).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ColumnData::F32(v) => bytemuck::cast_slice(v),
            ColumnData::F64(v) => bytemuck::cast_slice(v),
            ColumnData::I64(v) => bytemuck::cast_slice(v),
            ColumnData::I32(v) => bytemuck::cast_slice(v),
            ColumnData::U64(v) => bytemuck::cast_slice(v),
            ColumnData::U32(v) => bytemuck::cast_slice(v),
            ColumnData::U16(v) => bytemuck::cast_slice(v),
            ColumnData::U8(v) => v,
        }
    }

    /// Drop the first `n` rows.
    pub(crate) fn remove_front(&mut self, n: usize) {
        match self {
            ColumnData::F32(v) => drop(v.drain(..n)),
            ColumnData::F64(v) => drop(v.drain(..n)),
            ColumnData::I64(v) => drop(v.drain(..n)),
            ColumnData::I32(v) => drop(v.drain(..n)),
            ColumnData::U64(v) => drop(v.drain(..n)),
            ColumnData::U32(v) => drop(v.drain(..n)),
            ColumnData::U16(v) => drop(v.drain(..n)),
            ColumnData::U8(v) => drop(v.drain(..n)),
        }
    }

    /// Same value type as `other`.
    pub(crate) fn same_type(&self, other: &ColumnData) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// One chunk to encode: `data` holds its rows (value size `size`), the chunk
/// holds `rows` rows (the rows past the data are zeros, HDF5's fill value);
/// a `plain` dataset has no filters (the chunk is stored as it is).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkJob<'a> {
    pub data: &'a [u8],
    pub size: usize,
    pub rows: usize,
    pub plain: bool,
}

/// HDF5's shuffle filter over a chunk of `rows` values of `size` bytes:
/// byte `b` of value `i` goes to `b * rows + i`. Values past `data` are zero.
#[cfg(test)]
pub(crate) fn shuffle(data: &[u8], size: usize, rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    shuffle_into(data, size, rows, &mut out);
    out
}

/// [`shuffle`] into `out` (its allocation reused): each byte plane is written
/// once, its padding past the data zeroed (not the whole chunk first).
fn shuffle_into(data: &[u8], size: usize, rows: usize, out: &mut Vec<u8>) {
    out.resize(rows * size, 0);
    let n = data.len() / size;
    if size == 1 {
        out[..n].copy_from_slice(data);
        out[n..].fill(0);
        return;
    }
    for (b, plane) in out.chunks_exact_mut(rows).enumerate() {
        let (values, padding) = plane.split_at_mut(n);
        for (dst, value) in values.iter_mut().zip(data.chunks_exact(size)) {
            *dst = value[b];
        }
        padding.fill(0);
    }
}

/// A thread's deflate state and buffers, reused from chunk to chunk (fresh
/// chunk-sized buffers cost a page fault and a zeroed page per 4 KiB).
struct Encoder {
    compressor: Compress,
    shuffled: Vec<u8>,
    deflated: Vec<u8>,
}

impl Encoder {
    fn new() -> Self {
        Self {
            compressor: Compress::new(Compression::new(u32::from(DEFLATE_LEVEL)), true),
            shuffled: Vec::new(),
            deflated: Vec::new(),
        }
    }

    /// The chunk as stored: a whole plain chunk is its data as it is.
    fn encode<'a>(&mut self, job: &ChunkJob<'a>) -> std::io::Result<Cow<'a, [u8]>> {
        if job.plain {
            if job.data.len() == job.rows * job.size {
                return Ok(Cow::Borrowed(job.data));
            }
            let mut out = vec![0u8; job.rows * job.size];
            out[..job.data.len()].copy_from_slice(job.data);
            return Ok(Cow::Owned(out));
        }
        shuffle_into(job.data, job.size, job.rows, &mut self.shuffled);
        // One zlib stream per chunk, into the thread's output buffer, sized
        // for deflate's worst case (stored blocks: +5 bytes per 16 KiB, zlib
        // header and trailer) and grown if that is ever short.
        let z = &mut self.compressor;
        z.reset();
        let input = &self.shuffled[..];
        let out = &mut self.deflated;
        out.clear();
        out.reserve(input.len() + input.len() / 1024 + 64);
        loop {
            let read = z.total_in() as usize;
            match z.compress_vec(&input[read..], out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => break,
                Ok(_) => out.reserve(out.capacity().max(64)),
                Err(e) => return Err(std::io::Error::other(format!("deflate: {e}"))),
            }
        }
        Ok(Cow::Owned(out.clone()))
    }
}

thread_local! {
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::new());
}

fn encode_one<'a>(job: &ChunkJob<'a>) -> std::io::Result<Cow<'a, [u8]>> {
    ENCODER.with(|e| e.borrow_mut().encode(job))
}

/// Shuffle and deflate `jobs` (on `pool` when given, else on this thread);
/// the encoded chunks in job order.
///
/// # Errors
/// When the compressor fails (it does not on memory it was given whole).
pub(crate) fn encode<'a>(
    jobs: &[ChunkJob<'a>],
    pool: Option<&rayon::ThreadPool>,
) -> std::io::Result<Vec<Cow<'a, [u8]>>> {
    match pool {
        Some(p) if jobs.len() > 1 && p.current_num_threads() > 1 => {
            p.install(|| jobs.par_iter().map(encode_one).collect())
        }
        _ => jobs.iter().map(encode_one).collect(),
    }
}

/// Write one encoded chunk (all filters applied) whose first row is `row`.
#[allow(unsafe_code)]
pub(crate) fn write_chunk(
    ds: &hdf5::Dataset,
    row: usize,
    bytes: &[u8],
    path: &Path,
    what: &str,
) -> Result<(), RqError> {
    use hdf5_sys::h5p::H5P_DEFAULT;
    let offset = [row as hdf5_sys::h5::hsize_t];
    let id = ds.id();
    // SAFETY: `id` is a live dataset (borrowed for the call), `offset` has
    // one entry per dimension (RQ datasets are 1-D), and `bytes` is valid for
    // `bytes.len()` bytes; HDF5 copies them before returning. The call holds
    // the crate's HDF5 lock like every hdf5-metno call.
    let rc = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5d::H5Dwrite_chunk(
            id,
            H5P_DEFAULT,
            0, // filter mask: every filter of the pipeline was applied
            offset.as_ptr(),
            bytes.len(),
            bytes.as_ptr().cast(),
        )
    });
    hdf5::h5check(rc).map(|_| ()).map_err(|e| RqError::Hdf5 {
        path: path.to_path_buf(),
        what: format!("{what}: chunk at row {row}"),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_matches_hdf5s_byte_planes_and_zero_pads() {
        let v: Vec<u32> = vec![0x0403_0201, 0x0807_0605];
        let s = shuffle(bytemuck::cast_slice(&v), 4, 3);
        assert_eq!(s, vec![1, 5, 0, 2, 6, 0, 3, 7, 0, 4, 8, 0]);
        assert_eq!(shuffle(&[7, 8], 1, 3), vec![7, 8, 0]);
        // A reused buffer's old bytes never leak into the padding.
        let mut out = vec![0xff; 64];
        shuffle_into(bytemuck::cast_slice(&v), 4, 3, &mut out);
        assert_eq!(out, vec![1, 5, 0, 2, 6, 0, 3, 7, 0, 4, 8, 0]);
        shuffle_into(&[7, 8], 1, 3, &mut out);
        assert_eq!(out, vec![7, 8, 0]);
    }
}
