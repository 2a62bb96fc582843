//! RQ file writing and reading: the HDF5 output stage of `tpcflow reco`.
//!
//! The first `TPCFLOW_BENCH_RQ_EVENTS` (default 1000) events of the shared
//! `mixed` raw file (`benches/common`) are reconstructed once; then the
//! benchmark writes their `/events`, `/pulses` and `/channels` columns as one
//! RQ file exactly as a reco job does (chunked, shuffle + deflate, units
//! attributes, temporary name, fsync, rename), and reads it back.
//! Throughput is in MB/s of the raw samples those events came from, so it
//! compares directly with the reconstruction's MB/s (`benches/reco.rs`): the
//! writer must be much faster than the reco for I/O not to become the
//! bottleneck. A summary prints events/s and MB/s of column data too.

mod common;

use std::time::Instant;

use criterion::{Criterion, Throughput};
use tpcflow::conditions::Conditions;
use tpcflow::raw::RawFile;
use tpcflow::reco_job::columns::{process_range, UnitOutput};
use tpcflow::rq::{self, ColumnData, RqHeader};
use tpcflow_reco::RecoConfig;

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

fn main() {
    let n: usize = std::env::var("TPCFLOW_BENCH_RQ_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let raw = RawFile::open(&common::bench_file(common::raw_gb())).expect("bench file");
    let n = n.min(raw.n_events());
    let cond = Conditions::load("v1").expect("v1 conditions");
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .expect("thread pool");
    let out = process_range(
        &raw,
        0..n,
        &cond.detector,
        &RecoConfig::default(),
        256,
        &pool,
        &mut || {},
    )
    .expect("reconstruct the benchmark events");
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
    let write = || {
        rq::write_rq_file_with_channels(&path, &header, &out.events, &out.pulses, &out.channels)
            .expect("write RQ file")
    };

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("rq_writer");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(out.bytes_read));
    g.bench_function("write_file_raw_MBps", |b| b.iter(write));
    write();
    g.bench_function("read_file_raw_MBps", |b| {
        b.iter(|| std::hint::black_box(rq::read_rq_file(&path).expect("read RQ file")))
    });
    g.finish();
    c.final_summary();

    // Medians of our own, for the table: events/s and MB/s of columns.
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let size = write();
            std::hint::black_box(size);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 2];
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "rq_writer summary: {} events, {} pulses, {:.1} MB of columns -> {:.1} MB file; \
         median write {:.1} ms = {:.0} events/s, {:.0} MB/s of columns, {:.0} MB/s of raw samples",
        out.n_events,
        out.n_pulses,
        column_bytes(&out) as f64 / 1e6,
        size as f64 / 1e6,
        t * 1e3,
        out.n_events as f64 / t,
        column_bytes(&out) as f64 / 1e6 / t,
        out.bytes_read as f64 / 1e6 / t
    );
}
