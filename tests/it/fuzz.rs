//! Property tests over corrupted real files: the raw reader, the RQ reader
//! and the web query parser. Every case must end in a typed error or in data
//! the caller can use (every pod's samples in bounds, columns of equal
//! length), never a panic, and never an allocation the file cannot account
//! for (a length field claiming 2^40 samples must not allocate them).
//!
//! ```text
//! truncate   the file cut at a random length
//! flip       one bit flipped anywhere (tables, attributes, HDF5 metadata)
//! set        one element of an index column set to an extreme value
//! attr       one root attribute of the raw file set to an extreme value
//! dims       8-byte fields equal to a dataset's length (its dataspace and
//!            layout) set to a huge value
//! ```
//!
//! The base files are written by tpcflow's own writers with fixed contents.
//! Cases found failing are kept in `tests/fuzz-corpus/*.jsonl` (one mutation
//! per line, JSON) and replayed by the `*_corpus` tests; the property tests
//! use a fixed seed, so a run is reproducible.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde::{Deserialize, Serialize};
use tpcflow::raw::{write_raw_file, OwnedEvent, RawFile, RawHeader};
use tpcflow::rq::read_rq_file;
use tpcflow::web::params::Params;
use tpcflow_reco::PodRecord;

use crate::common::scratch;

/// One corruption of a base file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Mutation {
    /// Keep the first `len` bytes.
    Truncate { len: usize },
    /// Flip bit `bit` of byte `at` (both taken modulo the file).
    Flip { at: usize, bit: u8 },
    /// Set element `index` of `dataset` to `value` (a decimal integer, cast
    /// to the dataset's type).
    Set {
        dataset: String,
        index: usize,
        value: String,
    },
    /// Set a numeric root attribute to `value` (a decimal; `NaN`, `inf` too).
    Attr { name: String, value: String },
    /// Replace occurrence `k` (all when `k` is past the last) of the 8-byte
    /// little-endian length of `dataset` with `value`.
    Dims {
        dataset: String,
        k: usize,
        value: u64,
    },
}

/// Extreme values for index fields.
const EXTREMES: &[i128] = &[
    0,
    1,
    -1,
    i32::MAX as i128,
    i32::MIN as i128,
    u32::MAX as i128,
    1 << 40,
    i64::MAX as i128,
    u64::MAX as i128,
];

const RAW_DATASETS: &[&str] = &[
    "events/event_id",
    "events/trigger_time_ns",
    "events/first_pod",
    "events/pod_count",
    "pods/channel",
    "pods/start_sample",
    "pods/length",
    "pods/offset",
];
const RAW_ATTRS: &[&str] = &[
    "format_version",
    "run",
    "n_channels",
    "window_samples",
    "sample_period_ns",
];
const RQ_DATASETS: &[&str] = &[
    "events/event_id",
    "events/first_pulse",
    "events/n_pulses",
    "pulses/first_channel",
    "pulses/n_channel_areas",
    "channels/channel",
];

/// A small real raw file: 4 events of 3 pods of 20 samples, 8 channels.
fn base_raw(path: &Path) {
    let header = RawHeader {
        run: 7,
        sequence: 0,
        sample_period_ns: 10.0,
        conditions_tag: "v1".into(),
        n_channels: 8,
        window_samples: 1000,
    };
    let events: Vec<OwnedEvent> = (0..4u64)
        .map(|e| OwnedEvent {
            event_id: 100 + e,
            trigger_time_ns: 1_000 * e as i64,
            pods: (0..3u32)
                .map(|p| PodRecord {
                    channel: (p + e as u32) as u16 % 8,
                    start_sample: 100 * p as i32,
                    length: 20,
                    offset: u64::from(20 * p),
                })
                .collect(),
            samples: (0..60).map(|s| (s * 7 + e as i16) % 300).collect(),
        })
        .collect();
    write_raw_file(path, &header, &events).unwrap();
}

/// A small real RQ file of 37 events, 41 pulses and 41 channel areas: row
/// counts rare enough as 8-byte values that `dims` finds the dataspaces.
/// (With row counts of 2 and 3, `dims` also rewrites the global-heap
/// references of variable-length string attributes, and libhdf5 1.10.8
/// segfaults in `H5HG_read` reading them: a crash in the C library that no
/// check on the Rust side can prevent.)
fn base_rq(path: &Path) {
    use tpcflow::rq::{write_rq_file_with_channels, Column, ColumnData, RqHeader};
    let n_pulses: Vec<u32> = (0..37).map(|e| if e == 0 { 5 } else { 1 }).collect();
    let first: Vec<u64> = n_pulses
        .iter()
        .scan(0u64, |acc, &n| {
            let f = *acc;
            *acc += u64::from(n);
            Some(f)
        })
        .collect();
    let events = vec![
        Column::new("event_id", "1", "", ColumnData::U64((100..137).collect())),
        Column::new("first_pulse", "1", "", ColumnData::U64(first)),
        Column::new("n_pulses", "1", "", ColumnData::U32(n_pulses)),
        Column::new("s1_area_phd", "phd", "", ColumnData::F32(vec![5.0; 37])),
    ];
    let pulses = vec![
        Column::new("area_phd", "phd", "", ColumnData::F32(vec![1.5; 41])),
        Column::new("first_channel", "1", "", ColumnData::U64((0..41).collect())),
        Column::new("n_channel_areas", "1", "", ColumnData::U32(vec![1; 41])),
    ];
    let channels = vec![
        Column::new("channel", "1", "", ColumnData::U16((0..41).collect())),
        Column::new("area_phd", "phd", "", ColumnData::F32(vec![1.5; 41])),
    ];
    let header = RqHeader {
        lineage_json: "{}".into(),
        lineage_hash: "abcd1234".into(),
        conditions_tag: "v1".into(),
        input_file: "000007_00000.raw.h5".into(),
        input_adler32: "00000001".into(),
    };
    write_rq_file_with_channels(path, &header, &events, &pulses, &channels).unwrap();
}

/// Apply `m` to the bytes of `base`, writing `out`.
fn mutate(base: &Path, out: &Path, m: &Mutation) {
    let mut bytes = std::fs::read(base).unwrap();
    match m {
        Mutation::Truncate { len } => bytes.truncate(len % (bytes.len() + 1)),
        Mutation::Flip { at, bit } => {
            let n = bytes.len();
            bytes[at % n] ^= 1 << (bit % 8);
        }
        Mutation::Dims { dataset, k, value } => {
            let len = tpcflow::h5::open(base)
                .unwrap()
                .dataset(dataset)
                .unwrap()
                .size() as u64;
            let needle = len.to_le_bytes();
            let hits: Vec<usize> = (0..bytes.len().saturating_sub(7))
                .filter(|&i| bytes[i..i + 8] == needle)
                .collect();
            let chosen: Vec<usize> = match hits.get(*k) {
                Some(&i) => vec![i],
                None => hits,
            };
            for i in chosen {
                bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        Mutation::Set { .. } | Mutation::Attr { .. } => {}
    }
    std::fs::write(out, &bytes).unwrap();
    match m {
        Mutation::Set {
            dataset,
            index,
            value,
        } => set_element(out, dataset, *index, value.parse().unwrap()),
        Mutation::Attr { name, value } => set_attr(out, name, value.parse().unwrap()),
        _ => {}
    }
}

fn set_element(path: &Path, dataset: &str, index: usize, value: i128) {
    use hdf5::types::{IntSize, TypeDescriptor as T};
    let f = tpcflow::h5::open_rw(path).unwrap();
    let ds = f.dataset(dataset).unwrap();
    let i = index % ds.size().max(1);
    macro_rules! put {
        ($t:ty) => {
            ds.write_slice(&[value as $t], i..i + 1).unwrap()
        };
    }
    match ds.dtype().unwrap().to_descriptor().unwrap() {
        T::Unsigned(IntSize::U8) => put!(u64),
        T::Unsigned(IntSize::U4) => put!(u32),
        T::Unsigned(IntSize::U2) => put!(u16),
        T::Unsigned(IntSize::U1) => put!(u8),
        T::Integer(IntSize::U8) => put!(i64),
        T::Integer(IntSize::U4) => put!(i32),
        other => panic!("{dataset}: {other:?}"),
    }
}

fn set_attr(path: &Path, name: &str, value: f64) {
    let f = tpcflow::h5::open_rw(path).unwrap();
    let a = f.attr(name).unwrap();
    if name == "sample_period_ns" {
        a.write_scalar(&value).unwrap();
    } else {
        a.write_scalar(&(value as u32)).unwrap();
    }
}

/// Open a corrupted raw file every way the pipeline does; reading every
/// event's samples of an opened file must stay in bounds.
fn read_raw_every_way(path: &Path) {
    if let Ok(f) = RawFile::open(path) {
        for e in f.events() {
            let sum: i64 = e
                .pods
                .iter()
                .flat_map(|p| e.pod_samples(p))
                .map(|&s| i64::from(s))
                .sum();
            std::hint::black_box(sum);
        }
    }
    if let Ok(f) = RawFile::open_streaming(path) {
        if let Ok(batch) = f.pod_batch(0..f.n_events()) {
            for i in 0..f.n_events() {
                let e = f.event_in(&batch, i);
                for p in e.pods {
                    std::hint::black_box(e.pod_samples(p));
                }
            }
        }
    }
    let _ = RawFile::open_via_hdf5(path);
}

/// Read a corrupted RQ file; what is read must be consistent, and the
/// unsalting filter must take it without a panic.
fn read_rq(path: &Path) {
    let _ = tpcflow::rq::read_event_ids(path);
    if let Ok(rq) = read_rq_file(path) {
        for group in [&rq.events, &rq.pulses, &rq.channels] {
            let n = group.first().map_or(0, |c| c.data.len());
            assert!(group.iter().all(|c| c.data.len() == n), "ragged read back");
        }
        let salt = [100u64, 0].into_iter().collect();
        let _ = tpcflow::salt::unsalt::filter(&rq, &salt, &Default::default(), path);
    }
}

fn mutation(datasets: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    let dataset = proptest::sample::select(datasets).prop_map(str::to_string);
    prop_oneof![
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        2 => (dataset.clone(), 0usize..16, proptest::sample::select(EXTREMES))
            .prop_map(|(dataset, index, value)| Mutation::Set {
                dataset,
                index,
                value: value.to_string(),
            }),
        1 => (dataset, 0usize..4, prop_oneof![Just(1u64 << 40), Just(u64::MAX), Just(1u64 << 31)])
            .prop_map(|(dataset, k, value)| Mutation::Dims { dataset, k, value }),
    ]
}

fn raw_mutation() -> impl Strategy<Value = Mutation> {
    let attr = (
        proptest::sample::select(RAW_ATTRS),
        proptest::sample::select(&["0", "-1", "NaN", "inf", "4294967295", "1e-300"][..]),
    )
        .prop_map(|(name, value)| Mutation::Attr {
            name: name.to_string(),
            value: value.to_string(),
        });
    prop_oneof![4 => mutation(RAW_DATASETS), 1 => attr]
}

/// Fresh case file names: HDF5 must never see two versions under one name.
fn case_path(dir: &Path) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    dir.join(format!("case-{}.h5", N.fetch_add(1, Ordering::Relaxed)))
}

fn run_case(dir: &Path, base: &Path, m: &Mutation, read: fn(&Path)) {
    let path = case_path(dir);
    if std::env::var_os("TPCFLOW_FUZZ_VERBOSE").is_some() {
        eprintln!("case {}", serde_json::to_string(m).unwrap());
    }
    mutate(base, &path, m);
    read(&path);
    let _ = std::fs::remove_file(&path);
}

fn runner(cases: u32, seed: u8) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

fn fuzz(
    name: &str,
    strategy: impl Strategy<Value = Mutation>,
    base: fn(&Path),
    read: fn(&Path),
    cases: u32,
) {
    let dir = scratch(name);
    let base_path = dir.path().join("base.h5");
    base(&base_path);
    let result = runner(cases, 17).run(&strategy, |m| {
        let outcome = std::panic::catch_unwind(|| run_case(dir.path(), &base_path, &m, read));
        outcome.map_err(|_| {
            TestCaseError::fail(format!(
                "panicked on {}",
                serde_json::to_string(&m).unwrap()
            ))
        })
    });
    if let Err(e) = result {
        panic!("{name}: {e} (add the minimal case to tests/fuzz-corpus/{name}.jsonl)");
    }
}

/// Replay `tests/fuzz-corpus/{name}.jsonl`.
fn corpus(name: &str, base: fn(&Path), read: fn(&Path)) {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fuzz-corpus/{name}.jsonl"));
    let text = std::fs::read_to_string(&file).unwrap();
    let dir = scratch(name);
    let base_path = dir.path().join("base.h5");
    base(&base_path);
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let m: Mutation = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: {line}: {e}", file.display()));
        run_case(dir.path(), &base_path, &m, read);
        n += 1;
    }
    assert!(n > 0, "{} is empty", file.display());
}

#[test]
fn fuzz_raw_reader_on_corrupted_files() {
    fuzz("raw", raw_mutation(), base_raw, read_raw_every_way, 300);
}

#[test]
fn fuzz_rq_reader_on_corrupted_files() {
    fuzz("rq", mutation(RQ_DATASETS), base_rq, read_rq, 300);
}

#[test]
fn fuzz_raw_corpus() {
    corpus("raw", base_raw, read_raw_every_way);
}

#[test]
fn fuzz_rq_corpus() {
    corpus("rq", base_rq, read_rq);
}

const PARAM_NAMES: &[&str] = &["run", "event", "q", "name", "x"];

/// Parse a query and ask every getter about every name: errors are fine
/// (and are 4xx), panics are not.
fn parse_every_way(query: &str) {
    match Params::parse(Some(query), PARAM_NAMES) {
        Ok(p) => {
            for k in PARAM_NAMES {
                let _ = p.get(k);
                let _ = p.run(k);
                let _ = p.uint(k, "a number", u64::MAX);
                let _ = p.flag(k);
                let _ = p.number(k, "a number");
                let _ = p.name(k, "a name");
            }
        }
        Err(e) => assert_eq!(e.status().as_u16() / 100, 4, "{e}"),
    }
}

/// Every byte as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn fuzz_query_parser() {
    let text = "(\\PC|[%&=+]){0,200}|[a-z%0-9&=+é€𝄞]{0,9000}";
    runner(600, 3)
        .run(&proptest::string::string_regex(text).unwrap(), |q| {
            std::panic::catch_unwind(|| parse_every_way(&q))
                .map_err(|_| TestCaseError::fail(format!("panicked on {q:?}")))
        })
        .unwrap();
    // Encoded values round-trip exactly (after trimming).
    let pair = (proptest::sample::select(PARAM_NAMES), "\\PC{0,100}");
    runner(300, 5)
        .run(&pair, |(k, v)| {
            let q = format!("{}={}", percent_encode(k), percent_encode(&v));
            let p = Params::parse(Some(&q), PARAM_NAMES).unwrap();
            let want = Some(v.trim()).filter(|t| !t.is_empty());
            prop_assert_eq!(p.get(k), want);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_query_corpus() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/query.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let q: String = serde_json::from_str(line).unwrap();
        parse_every_way(&q);
        n += 1;
    }
    assert!(n > 0);
}
