//! Simulator throughput (events/s per core) and raw-reader throughput
//! (mmap vs HDF5 read path) over a multi-GB file.
//!
//! `TPCFLOW_BENCH_RAW_GB` sets the reader file size (default 2 GB); the file is
//! simulated once into `target/bench-data/` and reused.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tpcflow::conditions::Conditions;
use tpcflow::raw::RawFile;
use tpcflow::sim::{self, EventSpec, Scratch, Source};

fn bench_sim(c: &mut Criterion) {
    let cond = Conditions::load("v1").expect("v1 conditions");
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    for source in [Source::Mixed, Source::Kr83m, Source::Wimp] {
        let n = 64u64;
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(
            BenchmarkId::new("events_1core", format!("{source:?}")),
            &source,
            |b, &source| {
                let mut scratch = Scratch::default();
                let mut k = 0u64;
                b.iter(|| {
                    for _ in 0..n {
                        k += 1;
                        let spec = EventSpec {
                            source,
                            seed: 1,
                            run: 1,
                            event_index: k,
                            event_id: k,
                            trigger_time_ns: 0,
                        };
                        std::hint::black_box(sim::simulate_event(
                            &cond.detector,
                            &cond.sim,
                            spec,
                            &mut scratch,
                        ));
                    }
                });
            },
        );
    }
    g.finish();
}

/// Sum of a pod's samples (pods are short: an i32 cannot overflow below 65536 samples).
fn sum_i16(s: &[i16]) -> i32 {
    s.iter().fold(0i32, |a, &v| a.wrapping_add(i32::from(v)))
}

fn touch_all(file: &RawFile) -> i64 {
    // Read every sample of every pod through the event views.
    let mut acc = 0i64;
    for ev in file.events() {
        for p in ev.pods {
            acc += i64::from(sum_i16(ev.pod_samples(p)));
        }
    }
    acc
}

fn bench_reader(c: &mut Criterion) {
    let path = common::bench_file(common::raw_gb());
    let bytes = std::fs::metadata(&path).expect("bench file").len();
    let mut g = c.benchmark_group("raw_reader");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("mmap_open_and_read_all", |b| {
        b.iter(|| {
            let f = RawFile::open(&path).expect("open");
            assert!(f.is_mapped());
            std::hint::black_box(touch_all(&f))
        })
    });
    let opened = RawFile::open(&path).expect("open");
    g.bench_function("mmap_read_all_already_open", |b| {
        b.iter(|| std::hint::black_box(touch_all(&opened)))
    });
    g.bench_function("mmap_flat_sum_already_open", |b| {
        b.iter(|| {
            std::hint::black_box(
                opened
                    .samples()
                    .chunks(32768)
                    .map(|c| i64::from(sum_i16(c)))
                    .sum::<i64>(),
            )
        })
    });
    let copy: Vec<i16> = opened.samples().to_vec();
    g.bench_function("heap_vec_flat_sum", |b| {
        b.iter(|| {
            std::hint::black_box(
                copy.chunks(32768)
                    .map(|c| i64::from(sum_i16(c)))
                    .sum::<i64>(),
            )
        })
    });
    drop(copy);
    drop(opened);
    g.bench_function("hdf5_open_and_read_all", |b| {
        b.iter(|| {
            let f = RawFile::open_via_hdf5(&path).expect("open");
            std::hint::black_box(touch_all(&f))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_sim, bench_reader);
criterion_main!(benches);
