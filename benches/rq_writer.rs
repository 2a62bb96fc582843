//! RQ file writing and reading: the HDF5 output stage of `tpcflow reco`.
//!
//! The first `TPCFLOW_BENCH_RQ_EVENTS` (default 1000) events of the shared
//! `mixed` raw file (`benches/common`) are reconstructed once, in batches of
//! `TPCFLOW_BENCH_RQ_BATCH` (default 32, as `tpcflow reco --batch`) events,
//! keeping each batch's columns.
//! The benchmark then writes them exactly as a reco unit does: `RqWriter::create`,
//! `columns::append_to` per batch (rows held until a column fills a chunk;
//! chunks shuffled and deflated by tpcflow and written whole, the
//! `PLAIN_COLUMNS` floats without filters; units attributes; index columns
//! re-based), `finish` (last chunks, root attributes, fsync, rename); and
//! reads the file back. One thread, as a 1-CPU rank.
//!
//! ```text
//! benchmark                        throughput counts
//! rq_writer/write/events           events written
//! rq_writer/write/raw_sample_bytes raw sample bytes those events came from (MB/s)
//! rq_writer/read_back/...          the same raw sample bytes
//! ```
//!
//! The write is measured twice, once per throughput unit (criterion has one
//! per benchmark). MB/s of raw samples compares directly with the
//! reconstruction's (`benches/reco.rs`): the writer must be much faster than
//! the reco for I/O not to become the bottleneck. A summary line adds the MB/s
//! of column data written and the file size.

mod common;

use std::path::Path;
use std::time::Instant;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use tpcflow::conditions::Conditions;
use tpcflow::raw::RawFile;
use tpcflow::reco_job::columns::{append_to, UnitOutput, PLAIN_COLUMNS};
use tpcflow::reco_job::stream::stream_range;
use tpcflow::rq::{self, ColumnData, RqHeader, RqWriter};
use tpcflow_reco::RecoConfig;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes of column data in `out` (what the datasets hold before compression).
fn column_bytes(out: &UnitOutput) -> u64 {
    out.events
        .iter()
        .chain(&out.pulses)
        .chain(&out.channels)
        .map(|c| {
            let width = match &c.data {
                ColumnData::F64(_) | ColumnData::I64(_) | ColumnData::U64(_) => 8,
                ColumnData::F32(_) | ColumnData::I32(_) | ColumnData::U32(_) => 4,
                ColumnData::U16(_) => 2,
                ColumnData::U8(_) => 1,
            };
            width * c.data.len() as u64
        })
        .sum()
}

/// The first `n` events of `raw`, reconstructed, one `UnitOutput` per batch.
fn reconstruct_batches(
    raw: &RawFile,
    n: usize,
    batch: usize,
    cond: &Conditions,
) -> Vec<UnitOutput> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let mut batches = Vec::new();
    let mut sink = |out: UnitOutput| {
        batches.push(out);
        Ok(())
    };
    stream_range(
        raw,
        0..n,
        &cond.detector,
        &RecoConfig::default(),
        batch,
        &pool,
        None,
        &mut Vec::new(),
        &mut |_| {},
        &mut sink,
        None,
    )
    .expect("reconstruct the benchmark events");
    batches
}

/// Write one RQ file from `batches` the way a reco unit does; its size [bytes].
fn write_rq(path: &Path, header: &RqHeader, batches: Vec<UnitOutput>) -> u64 {
    let mut w = RqWriter::create(path)
        .expect("create RQ file")
        .plain(PLAIN_COLUMNS);
    for b in batches {
        append_to(&mut w, b).expect("append a batch");
    }
    w.finish(header).expect("finish RQ file")
}

fn main() {
    let n = env_usize("TPCFLOW_BENCH_RQ_EVENTS", 1000);
    let batch = env_usize("TPCFLOW_BENCH_RQ_BATCH", 32).max(1);
    let raw = RawFile::open(&common::bench_file(common::raw_gb())).expect("bench file");
    let n = n.min(raw.n_events());
    let cond = Conditions::load("v1").expect("v1 conditions");
    let batches = reconstruct_batches(&raw, n, batch, &cond);
    let n_events: u64 = batches.iter().map(|b| b.n_events).sum();
    let n_pulses: u64 = batches.iter().map(|b| b.n_pulses).sum();
    let raw_bytes: u64 = batches.iter().map(|b| b.bytes_read).sum();
    let col_bytes: u64 = batches.iter().map(column_bytes).sum();
    let header = RqHeader {
        lineage_json: "{\"bench\":true}".into(),
        lineage_hash: "0000000000000000".into(),
        conditions_tag: cond.tag.clone(),
        input_file: raw.path().display().to_string(),
        input_adler32: "00000000".into(),
    };
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/rq");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("bench.rq.h5");

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("rq_writer");
    g.sample_size(20);
    // The batches are cloned outside the timing (append_to consumes them).
    for (id, throughput) in [
        ("events", Throughput::Elements(n_events)),
        ("raw_sample_bytes", Throughput::BytesDecimal(raw_bytes)),
    ] {
        g.throughput(throughput);
        g.bench_function(BenchmarkId::new("write", id), |b| {
            b.iter_batched(
                || batches.clone(),
                |batches| write_rq(&path, &header, batches),
                BatchSize::PerIteration,
            )
        });
    }
    write_rq(&path, &header, batches.clone());
    g.throughput(Throughput::BytesDecimal(raw_bytes));
    g.bench_function(BenchmarkId::new("read_back", "raw_sample_bytes"), |b| {
        b.iter(|| std::hint::black_box(rq::read_rq_file(&path).expect("read RQ file")))
    });
    g.finish();
    c.final_summary();

    // Our own median over a few writes, for the summary line.
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let copy = batches.clone();
            let t = Instant::now();
            std::hint::black_box(write_rq(&path, &header, copy));
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 2];
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "rq_writer summary: {n_events} events in {} batches of {batch}, {n_pulses} pulses, \
         {:.1} MB of columns -> {:.1} MB file; median write {:.1} ms = {:.0} events/s, \
         {:.0} MB/s of columns, {:.0} MB/s of raw samples",
        batches.len(),
        col_bytes as f64 / 1e6,
        size as f64 / 1e6,
        t * 1e3,
        n_events as f64 / t,
        col_bytes as f64 / 1e6 / t,
        raw_bytes as f64 / 1e6 / t
    );
}
