//! Reconstruction throughput: MB/s of raw samples and events/s, per stage and
//! end to end (pods -> `EventRecon` including the xy fit), on one core and on
//! explicit 1- and 2-thread rayon pools (parallel efficiency).
//!
//! The data are `mixed` events simulated once into `target/bench-data/` (the
//! same file as `benches/sim_and_raw.rs`, `TPCFLOW_BENCH_RAW_GB`, default 2 GB)
//! and read through the memory map; the benchmark set is the first events
//! holding at least `TPCFLOW_BENCH_RECO_MB` (default 500) MB of samples, or
//! the first `TPCFLOW_BENCH_RECO_EVENTS` events when that is set. Events
//! are reconstructed one at a time from the mapped file and the results
//! dropped, so memory does not grow with the set.
//!
//! ```text
//! stage              what is timed (each includes the ones above; a stage's cost is the difference)
//! hits               pod validation, baselines, hit finding, hit sort
//! pulses             + clustering, summed waveform, natural-break split, pulse quantities
//! interaction        + classification, S1/S2 pairing, drift, z
//! full               + xy fit of the main S2, corrections, energy   (= reconstruct_event_with)
//! hits_portable      hits with the portable (non-SIMD) threshold scan
//! full_portable      full with the portable threshold scan
//! ```
//!
//! The stages above use the widest threshold-scan path this CPU has
//! (`ScanPath::detect`); the `_portable` rows give the SIMD gain.
//!
//! After criterion's own report a summary prints the median of the samples
//! per benchmark as MB/s and events/s, the stage costs, the 2-thread
//! speed-up and parallel efficiency (from criterion's medians, and from
//! rounds alternating the 1- and the 2-thread pool, which a slow spell of a
//! shared machine cannot bias towards either), and one core's memory read
//! bandwidth measured in the same run with the core's MB/s as a fraction of
//! it.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use rayon::prelude::*;
use tpcflow::conditions::Conditions;
use tpcflow::raw::RawFile;

use tpcflow_reco::{
    fit_xy, reconstruct_event_until, reconstruct_event_with, DetectorModel, RecoConfig,
    RecoScratch, ScanPath, Stage,
};

/// The mixed raw file shared with `benches/sim_and_raw.rs` (made once).
fn bench_file() -> PathBuf {
    common::bench_file(common::raw_gb())
}

/// Reconstruct events `0..n` of the file serially up to `stage`; returns a
/// checksum so that nothing is optimised away.
fn run_serial(
    file: &RawFile,
    n: usize,
    model: &DetectorModel,
    cfg: &RecoConfig,
    stage: Stage,
    path: ScanPath,
) -> u64 {
    let mut scratch = RecoScratch::with_scan_path(path);
    let mut acc = 0u64;
    for i in 0..n {
        let r = reconstruct_event_until(&file.event(i), model, cfg, &mut scratch, stage)
            .expect("valid event");
        acc += u64::from(r.event.n_hits) + r.pulses.len() as u64;
    }
    acc
}

/// End to end on the current rayon pool, events by index from the map.
fn run_parallel(file: &RawFile, n: usize, model: &DetectorModel, cfg: &RecoConfig) -> u64 {
    (0..n)
        .into_par_iter()
        .map_init(RecoScratch::default, |scratch, i| {
            let r =
                reconstruct_event_with(&file.event(i), model, cfg, scratch).expect("valid event");
            u64::from(r.event.n_hits) + r.pulses.len() as u64
        })
        .sum()
}

/// Per-iteration durations recorded by each benchmark (for the medians).
static SAMPLES: Mutex<Vec<(String, Vec<f64>)>> = Mutex::new(Vec::new());

fn record(name: &str, per_iter: f64) {
    let mut s = SAMPLES.lock().expect("samples lock");
    match s.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => v.push(per_iter),
        None => s.push((name.to_string(), vec![per_iter])),
    }
}

fn median(name: &str) -> Option<f64> {
    let s = SAMPLES.lock().expect("samples lock");
    let (_, v) = s.iter().find(|(n, _)| n == name)?;
    let mut v = v.clone();
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Time `iters` runs of `f`, recording the time per run under `name`.
fn timed(name: &str, iters: u64, mut f: impl FnMut() -> u64) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(f());
    }
    let d = t.elapsed();
    record(name, d.as_secs_f64() / iters as f64);
    d
}

struct Set {
    file: RawFile,
    n: usize,
    bytes: u64,
}

fn bench_set() -> Set {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    let mb = env("TPCFLOW_BENCH_RECO_MB").unwrap_or(500.0);
    // An explicit event count instead (scripts/bench-scaling.sh: the same
    // events as its workload, which it simulates with the same run and seed).
    let events = env("TPCFLOW_BENCH_RECO_EVENTS").map(|n| n as usize);
    let file = RawFile::open(&bench_file()).expect("open the benchmark file");
    assert!(file.is_mapped(), "the benchmark file must be memory-mapped");
    let (mut n, mut bytes) = (0usize, 0u64);
    let more = |n: usize, bytes: u64| match events {
        Some(e) => n < e,
        None => (bytes as f64) < mb * 1e6,
    };
    while n < file.n_events() && more(n, bytes) {
        bytes += file.event(n).n_samples() * 2;
        n += 1;
    }
    assert!(
        !more(n, bytes),
        "the benchmark file holds only {n} events, {:.0} MB of samples; raise TPCFLOW_BENCH_RAW_GB",
        bytes as f64 / 1e6
    );
    Set { file, n, bytes }
}

fn bench_reco(c: &mut Criterion, set: &Set) {
    let cond = Conditions::load("v1").expect("v1 conditions");
    let model = &cond.detector;
    let cfg = RecoConfig::default();
    let (file, n) = (&set.file, set.n);

    let mut g = c.benchmark_group("reco_1core");
    // Flat sampling: each of the 10 samples is one pass over the set (~1 s).
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.warm_up_time(Duration::from_secs(2));
    g.throughput(Throughput::BytesDecimal(set.bytes));
    let (detected, portable) = (ScanPath::detect(), ScanPath::Portable);
    for (name, stage, path) in [
        ("hits", Stage::Hits, detected),
        ("pulses", Stage::Pulses, detected),
        ("interaction", Stage::Interaction, detected),
        ("full", Stage::Full, detected),
        ("hits_portable", Stage::Hits, portable),
        ("full_portable", Stage::Full, portable),
    ] {
        g.bench_function(BenchmarkId::new("stage", name), |b| {
            b.iter_custom(|iters| {
                timed(&format!("1core/{name}"), iters, || {
                    run_serial(file, n, model, &cfg, stage, path)
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("reco_threads");
    // Flat sampling: each of the 10 samples is one pass over the set (~1 s).
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.warm_up_time(Duration::from_secs(2));
    g.throughput(Throughput::BytesDecimal(set.bytes));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool");
        g.bench_function(BenchmarkId::new("full", threads), |b| {
            b.iter_custom(|iters| {
                pool.install(|| {
                    timed(&format!("pool/{threads}"), iters, || {
                        run_parallel(file, n, model, &cfg)
                    })
                })
            })
        });
    }
    g.finish();

    // The xy fit alone, on the main-S2 top patterns of the first 1000 events
    // (a fixed set: it does not grow with the file).
    let n_top = model.pmts.n_top;
    let mut patterns: Vec<Vec<f64>> = Vec::new();
    let mut scratch = RecoScratch::default();
    for i in 0..n.min(1000) {
        let r = reconstruct_event_with(&file.event(i), model, &cfg, &mut scratch).expect("valid");
        if r.event.main_s2 >= 0 {
            let mut top = vec![0.0; n_top];
            for a in r.pulse_channel_areas(r.event.main_s2 as usize) {
                if usize::from(a.channel) < n_top {
                    top[usize::from(a.channel)] = f64::from(a.area_phd);
                }
            }
            patterns.push(top);
        }
    }
    let mut g = c.benchmark_group("xy_fit");
    g.sample_size(20);
    g.throughput(Throughput::Elements(patterns.len() as u64));
    g.bench_function("main_s2_patterns", |b| {
        b.iter_custom(|iters| {
            timed("xy/fits", iters, || {
                patterns
                    .iter()
                    .filter_map(|p| fit_xy(model, p, cfg.xy_max_iterations, cfg.xy_tolerance_mm))
                    .map(|f| u64::from(f.iterations))
                    .sum()
            })
        })
    });
    // The same fits with a learned light response in the conditions (the
    // nominal shape, tabulated, with every efficiency 1: the same positions,
    // the cost of the table path the learned response takes).
    let mut params = model.params.clone();
    params.calibration.lrf = Some(tpcflow_reco::lrf::LightResponse {
        shape: tpcflow_reco::lrf::LrfShape::Analytic {
            r0_mm: params.light.lrf.r0_mm,
            tail_amplitude: 0.0,
            tail_length_mm: 200.0,
            flat: params.light.lrf.flat,
        },
        relative_efficiency: vec![1.0; n_top],
    });
    let learned = DetectorModel::new("learned", params).expect("valid response");
    g.bench_function("main_s2_patterns_learned_lrf", |b| {
        b.iter_custom(|iters| {
            timed("xy/fits_learned", iters, || {
                patterns
                    .iter()
                    .filter_map(|p| fit_xy(&learned, p, cfg.xy_max_iterations, cfg.xy_tolerance_mm))
                    .map(|f| u64::from(f.iterations))
                    .sum()
            })
        })
    });
    g.finish();
    let cpu = cpu_time_ab(set, model, &cfg, CPU_PAIRS);
    let scaling = thread_scaling_ab(set, model, &cfg, SCALING_PAIRS);
    summary(set, patterns.len(), &cpu, &scaling);
}

/// This thread's CPU time [s], from `/proc/thread-self/schedstat` (ns on the
/// CPU): unlike wall time it leaves out the time other processes held the
/// core, which on a shared machine is most of the noise.
fn thread_cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat's first field");
    ns as f64 * 1e-9
}

/// Thread-CPU-time medians [s] of the full and hits stages with the detected
/// and the portable scan path, in `pairs` alternating rounds (one pass of
/// each per round), so that a drift of the machine's speed hits all alike.
fn cpu_time_ab(
    set: &Set,
    model: &DetectorModel,
    cfg: &RecoConfig,
    pairs: usize,
) -> Vec<(String, f64)> {
    let runs = [
        ("full", Stage::Full, ScanPath::detect()),
        ("full_portable", Stage::Full, ScanPath::Portable),
        ("hits", Stage::Hits, ScanPath::detect()),
        ("hits_portable", Stage::Hits, ScanPath::Portable),
    ];
    let mut times = vec![Vec::new(); runs.len()];
    for _ in 0..pairs {
        for (k, &(_, stage, path)) in runs.iter().enumerate() {
            let t = thread_cpu_seconds();
            std::hint::black_box(run_serial(&set.file, set.n, model, cfg, stage, path));
            times[k].push(thread_cpu_seconds() - t);
        }
    }
    runs.iter()
        .zip(times)
        .map(|(&(name, _, _), mut v)| {
            v.sort_by(f64::total_cmp);
            (name.to_string(), v[v.len() / 2])
        })
        .collect()
}

/// Parallel efficiency of a 2-thread pool against a 1-thread pool, end to
/// end, in `pairs` alternating rounds (wall time): each round's `t1 / (2
/// t2)`, so that a slow spell of the shared machine lowers one round, not
/// every 2-thread sample as in the criterion group, whose samples all come
/// after the 1-thread group's.
fn thread_scaling_ab(set: &Set, model: &DetectorModel, cfg: &RecoConfig, pairs: usize) -> Vec<f64> {
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool")
    };
    let (one, two) = (pool(1), pool(2));
    let pass = |p: &rayon::ThreadPool| {
        let t = Instant::now();
        std::hint::black_box(p.install(|| run_parallel(&set.file, set.n, model, cfg)));
        t.elapsed().as_secs_f64()
    };
    // Each round runs a pool three times back to back and counts the last
    // two: the first wakes its threads, whose CPUs idled while the other
    // pool ran (a woken vCPU of a VM starts slow), as a real job's threads,
    // busy for minutes, never do.
    let counted = |p: &rayon::ThreadPool| {
        pass(p);
        pass(p) + pass(p)
    };
    (0..pairs)
        .map(|_| {
            let t1 = counted(&one);
            let t2 = counted(&two);
            t1 / (2.0 * t2)
        })
        .collect()
}

/// Alternating rounds of the 1- against 2-thread comparison.
const SCALING_PAIRS: usize = 7;

/// One core's memory read bandwidth [MB/s]: for each way of reading a
/// buffer far larger than the caches (`TPCFLOW_BENCH_MEM_MB`, default 512)
/// sequentially on one thread, as the reconstruction reads its samples,
/// the median of `passes` sums; the bandwidth is the fastest of them, with
/// its name. A scalar loop is not enough: on a CPU that keeps more bytes in
/// flight with wider loads it reads a quarter less (11.9 against 15.5 GB/s
/// with AVX-512 loads on an Emerald Rapids VM), and the core's fraction of
/// it would read high. Dividing the core's MB/s by it gives the fraction of
/// the memory speed the core reaches, a figure to compare machines by.
fn memory_read_mb_s(passes: usize) -> Vec<(&'static str, f64)> {
    let mb = std::env::var("TPCFLOW_BENCH_MEM_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(512);
    let words = mb * 1_000_000 / 8;
    // Distinct values, written once so every page is really backed.
    let buf: Vec<u64> = (0..words as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9))
        .collect();
    read_kernels()
        .into_iter()
        .map(|(name, sum)| {
            let mut rates = Vec::with_capacity(passes);
            for _ in 0..passes {
                let t = Instant::now();
                std::hint::black_box(sum(std::hint::black_box(&buf)));
                rates.push((words * 8) as f64 / 1e6 / t.elapsed().as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            (name, rates[rates.len() / 2])
        })
        .collect()
}

/// A sum over a buffer, as a read of it.
type ReadKernel = fn(&[u64]) -> u64;

/// The ways this CPU can sum a buffer of `u64`s: a scalar loop of four
/// independent lanes (so the adds keep up with the loads), and on x86-64
/// loops of four 256-bit (AVX2) or 512-bit (AVX-512F) accumulators where the
/// CPU has them.
#[allow(unsafe_code)]
fn read_kernels() -> Vec<(&'static str, ReadKernel)> {
    fn scalar(buf: &[u64]) -> u64 {
        let mut acc = [0u64; 4];
        for c in buf.chunks_exact(4) {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a = a.wrapping_add(x);
            }
        }
        acc.iter().fold(0, |s, &a| s.wrapping_add(a))
    }
    #[allow(unused_mut)]
    let mut kernels: Vec<(&'static str, ReadKernel)> = vec![("scalar", scalar)];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            kernels.push(("AVX2", |buf| {
                // SAFETY: AVX2 detected.
                unsafe { wide_read::sum_avx2(buf) }
            }));
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            kernels.push(("AVX-512", |buf| {
                // SAFETY: AVX-512F detected.
                unsafe { wide_read::sum_avx512(buf) }
            }));
        }
    }
    kernels
}

/// Sums of a buffer in 4 independent wide accumulators (the tail past a
/// whole number of 4 registers is left out: the buffer is hundreds of MB).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod wide_read {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub fn sum_avx2(buf: &[u64]) -> u64 {
        let mut acc = [_mm256_setzero_si256(); 4];
        for c in buf.chunks_exact(16) {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: c holds 16 u64s, so c[4 k..4 k + 4] exists.
                let v = unsafe { _mm256_loadu_si256(c.as_ptr().add(4 * k).cast()) };
                *a = _mm256_add_epi64(*a, v);
            }
        }
        let s = _mm256_add_epi64(
            _mm256_add_epi64(acc[0], acc[1]),
            _mm256_add_epi64(acc[2], acc[3]),
        );
        let mut out = [0u64; 4];
        // SAFETY: out holds 4 u64s.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), s) };
        out.iter().fold(0, |t, &x| t.wrapping_add(x))
    }

    #[target_feature(enable = "avx512f")]
    pub fn sum_avx512(buf: &[u64]) -> u64 {
        let mut acc = [_mm512_setzero_si512(); 4];
        for c in buf.chunks_exact(32) {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: c holds 32 u64s, so c[8 k..8 k + 8] exists.
                let v = unsafe { _mm512_loadu_si512(c.as_ptr().add(8 * k).cast()) };
                *a = _mm512_add_epi64(*a, v);
            }
        }
        let s = _mm512_add_epi64(
            _mm512_add_epi64(acc[0], acc[1]),
            _mm512_add_epi64(acc[2], acc[3]),
        );
        _mm512_reduce_add_epi64(s) as u64
    }
}

/// Alternating rounds of the CPU-time comparison.
const CPU_PAIRS: usize = 5;

fn summary(set: &Set, n_fits: usize, cpu: &[(String, f64)], scaling: &[f64]) {
    let (mb, ev) = (set.bytes as f64 / 1e6, set.n as f64);
    eprintln!(
        "\nreco benchmark summary: {} events, {mb:.0} MB of samples ({:.3} MB/event), medians of the samples",
        set.n,
        mb / ev
    );
    eprintln!(
        "  {:<28} {:>9} {:>9} {:>10} {:>12}",
        "benchmark", "s/run", "MB/s", "events/s", "us/event"
    );
    let mut prev = 0.0;
    for stage in ["hits", "pulses", "interaction", "full"] {
        if let Some(t) = median(&format!("1core/{stage}")) {
            eprintln!(
                "  {:<28} {t:>9.3} {:>9.0} {:>10.0} {:>12.1}   stage cost {:.1} us/event",
                format!("1 core, up to {stage}"),
                mb / t,
                ev / t,
                t / ev * 1e6,
                (t - prev) / ev * 1e6
            );
            prev = t;
        }
    }
    for stage in ["hits", "full"] {
        let portable = format!("1core/{stage}_portable");
        if let (Some(t), Some(tp)) = (median(&format!("1core/{stage}")), median(&portable)) {
            eprintln!(
                "  {:<28} {tp:>9.3} {:>9.0}   portable / {:?} time up to {stage}: {:.2}",
                format!("1 core, {stage}, portable scan"),
                mb / tp,
                ScanPath::detect(),
                tp / t
            );
        }
    }
    let (t1, t2) = (median("pool/1"), median("pool/2"));
    for (threads, t) in [(1, t1), (2, t2)] {
        if let Some(t) = t {
            eprintln!(
                "  {:<28} {t:>9.3} {:>9.0} {:>10.0} {:>12.1}",
                format!("end to end, {threads}-thread pool"),
                mb / t,
                ev / t,
                t / ev * 1e6
            );
        }
    }
    if let (Some(t1), Some(t2)) = (t1, t2) {
        eprintln!(
            "  2 threads: speed-up {:.2}, parallel efficiency {:.1} % (target >= 90 %)",
            t1 / t2,
            t1 / (2.0 * t2) * 100.0
        );
    }
    if !scaling.is_empty() {
        let mut v = scaling.to_vec();
        v.sort_by(f64::total_cmp);
        eprintln!(
            "  2 threads, {} alternating rounds (wall time): parallel efficiency median {:.1} % ({:.1}-{:.1} %)",
            v.len(),
            v[v.len() / 2] * 100.0,
            v[0] * 100.0,
            v[v.len() - 1] * 100.0
        );
    }
    eprintln!(
        "  thread CPU time, {} alternating rounds, medians (what the core costs when it has the core):",
        CPU_PAIRS
    );
    for (name, t) in cpu {
        eprintln!("    {name:<26} {t:>9.3} s {:>9.0} MB/s", mb / t);
    }
    let cpu_of = |name: &str| cpu.iter().find(|(n, _)| n == name).map(|&(_, t)| t);
    if let (Some(a), Some(b)) = (cpu_of("hits"), cpu_of("hits_portable")) {
        eprintln!(
            "    {:?} scan vs portable: hits stage {:.2}x the speed",
            ScanPath::detect(),
            b / a
        );
    }
    if let (Some(a), Some(b)) = (cpu_of("full"), cpu_of("full_portable")) {
        eprintln!("    end to end {:.2}x the speed", b / a);
    }
    let reads = memory_read_mb_s(5);
    let (how, mem) = reads
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("a scalar read at least");
    let each: Vec<String> = reads
        .iter()
        .map(|(name, r)| format!("{name} {r:.0}"))
        .collect();
    eprintln!(
        "  memory read bandwidth, 1 core: {mem:.0} MB/s with {how} loads (medians of 5 passes, wall time; {})",
        each.join(", ")
    );
    for (what, t) in [("wall", median("1core/full")), ("CPU", cpu_of("full"))] {
        if let Some(t) = t {
            eprintln!(
                "  core end to end, 1 core ({what} time): {:.0} MB/s = {:.1} % of one core's memory read bandwidth (goal >= 10 %)",
                mb / t,
                mb / t / mem * 100.0
            );
        }
    }
    if let Some(t) = median("xy/fits") {
        eprintln!(
            "  xy fit alone: {:.0} fits/s ({:.1} us/fit over {n_fits} main-S2 patterns)",
            n_fits as f64 / t,
            t / n_fits as f64 * 1e6
        );
        if let Some(l) = median("xy/fits_learned") {
            eprintln!(
                "  xy fit with a learned light response: {:.1} us/fit ({:+.1} % vs the nominal form)",
                l / n_fits as f64 * 1e6,
                (l / t - 1.0) * 100.0
            );
        }
    }
}

fn main() {
    let set = bench_set();
    let mut c = Criterion::default().configure_from_args();
    bench_reco(&mut c, &set);
    c.final_summary();
}
