//! The raw file format: exact round trip, zero-copy reads, h5py/h5dump
//! interoperability, and typed errors for bad files.

use std::path::Path;

use proptest::prelude::*;
use tpcflow::raw::{self, OwnedEvent, RawError, RawFile, RawHeader};
use tpcflow_reco::PodRecord;

use crate::common::*;

fn header(n_channels: u32) -> RawHeader {
    RawHeader {
        run: 42,
        sequence: 7,
        sample_period_ns: 10.0,
        conditions_tag: "v1".into(),
        n_channels,
        window_samples: 450_000,
    }
}

/// Random events: pods with random channels, starts and samples.
fn events_strategy() -> impl Strategy<Value = Vec<OwnedEvent>> {
    let pod = (
        0u16..494,
        0i32..440_000,
        prop::collection::vec(any::<i16>(), 1..80),
    );
    let event = (
        any::<u64>(),
        any::<i64>(),
        prop::collection::vec(pod, 0..12),
    );
    prop::collection::vec(event, 0..10).prop_map(|evs| {
        evs.into_iter()
            .map(|(id, t, pods)| {
                let mut e = OwnedEvent {
                    event_id: id,
                    trigger_time_ns: t,
                    ..Default::default()
                };
                for (ch, start, s) in pods {
                    e.pods.push(PodRecord {
                        channel: ch,
                        start_sample: start,
                        length: s.len() as u32,
                        offset: e.samples.len() as u64,
                    });
                    e.samples.extend_from_slice(&s);
                }
                e
            })
            .collect()
    })
}

fn assert_same(file: &RawFile, events: &[OwnedEvent]) {
    assert_eq!(file.n_events(), events.len());
    for (view, want) in file.events().zip(events) {
        assert_eq!(view.event_id, want.event_id);
        assert_eq!(view.trigger_time_ns, want.trigger_time_ns);
        assert_eq!(view.pods.len(), want.pods.len());
        for (p, q) in view.pods.iter().zip(&want.pods) {
            assert_eq!(
                (p.channel, p.start_sample, p.length),
                (q.channel, q.start_sample, q.length)
            );
            let got = view.pod_samples(p);
            let exp = &want.samples[q.offset as usize..(q.offset + u64::from(q.length)) as usize];
            assert_eq!(got, exp);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn raw_round_trip_is_exact(events in events_strategy()) {
        let dir = scratch("roundtrip");
        let path = raw::raw_file_path(dir.path(), 42, 7);
        raw::write_raw_file(&path, &header(494), &events).unwrap();
        let mapped = RawFile::open(&path).unwrap();
        assert_same(&mapped, &events);
        // The whole file's map, which the input check hashes, is the file
        // (a file without samples is not mapped: nothing to map them from).
        assert_eq!(mapped.file_map().is_some(), mapped.is_mapped());
        if let Some(map) = mapped.file_map() {
            assert_eq!(
                tpcflow::adler::digest_bytes(&map),
                tpcflow::adler::digest_file(&path).unwrap()
            );
        }
        let via_hdf5 = RawFile::open_via_hdf5(&path).unwrap();
        assert!(!via_hdf5.is_mapped());
        assert!(via_hdf5.file_map().is_none());
        assert_same(&via_hdf5, &events);
        assert_eq!(mapped.header(), &header(494));
    }
}

/// Simulated file used by the interop and bad-input tests.
fn simulated_file(dir: &Path, events: u32) -> std::path::PathBuf {
    let cond = tpcflow::conditions::Conditions::load("v1").unwrap();
    let opts = tpcflow::sim::SimOptions {
        run: 5,
        files: 1,
        events_per_file: events,
        seed: 11,
        out: dir.to_path_buf(),
        source: tpcflow::sim::Source::Mixed,
        first_sequence: 0,
        live_rate_hz: None,
    };
    let report = tpcflow::sim::run(&opts, &cond).unwrap();
    report.files[0].clone()
}

#[test]
fn samples_seen_by_h5py_and_h5dump_equal_the_mapped_view() {
    let dir = scratch("interop");
    let path = simulated_file(dir.path(), 5);
    let file = RawFile::open(&path).unwrap();
    assert!(
        file.is_mapped(),
        "tpcflow's own files are served from the memory map"
    );
    let samples = file.samples();
    let sum: i64 = samples.iter().map(|&s| i64::from(s)).sum();
    let pods_len: u64 = file.events().map(|e| e.n_samples()).sum();
    assert_eq!(
        pods_len as usize,
        samples.len(),
        "pods tile the sample array"
    );

    let py = run_python(
        "import sys, h5py, numpy as np\nf = h5py.File(sys.argv[1], 'r')\ns = f['samples']\n\
         assert s.chunks is None and s.compression is None\n\
         print(s.shape[0], int(s[:].astype(np.int64).sum()), int(f['pods/length'][:].sum()), \
         int(f.attrs['format_version']), f.attrs['conditions_tag'])",
        &[&path],
    );
    assert_eq!(
        py.trim(),
        format!("{} {sum} {pods_len} 1 v1", samples.len())
    );

    // h5dump prints the first values of /samples: the same as our view.
    let dump = h5dump(&[
        "-d",
        "/samples",
        "-s",
        "0",
        "-c",
        "8",
        "-w",
        "0",
        path.to_str().unwrap(),
    ]);
    let data_line = dump
        .lines()
        .find(|l| l.trim_start().starts_with("(0):"))
        .expect("h5dump data line");
    let values: Vec<i16> = data_line
        .trim_start()
        .trim_start_matches("(0):")
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(values, samples[..8].to_vec());
}

fn modify(path: &Path, f: impl FnOnce(&hdf5::File)) {
    let file = tpcflow::h5::open_rw(path).unwrap();
    f(&file);
}

/// Corrupt one value: element `i` of `dataset` in the file at `path`.
fn poke<T: hdf5::H5Type + Copy>(path: &Path, dataset: &str, i: usize, value: T) {
    modify(path, |f| {
        let ds = f.dataset(dataset).unwrap();
        let mut v: Vec<T> = ds.read_raw().unwrap();
        v[i] = value;
        ds.write_raw(&v).unwrap();
    });
}

#[test]
fn corrupt_pod_offset_is_a_typed_error_naming_event_and_pod() {
    let dir = scratch("badpod");
    // 40 events: pod columns the map serves (see `MAPPED_AND_NOT`).
    let path = simulated_file(dir.path(), 40);
    let n = RawFile::open(&path).unwrap().samples().len() as u64;
    poke(&path, "pods/offset", 4, n + 1000);
    match RawFile::open(&path).unwrap_err() {
        RawError::PodOutOfRange {
            path: p,
            event_id,
            pod,
            ..
        } => {
            assert_eq!(p, path);
            assert_eq!(pod, 4);
            assert_eq!(event_id, 0);
        }
        other => panic!("expected PodOutOfRange, got {other}"),
    }
    let msg = RawFile::open(&path).unwrap_err().to_string();
    assert!(
        msg.contains("event 0, pod 4") && msg.contains(path.to_str().unwrap()),
        "{msg}"
    );
    // Opened for streaming, the same fault surfaces with the batch holding it.
    let s = RawFile::open_streaming(&path).unwrap();
    // (from the pod columns in the map, checked as they are read)
    assert!(s.pods_mapped());
    let msg = s.pod_batch(0..1).unwrap_err().to_string();
    assert!(msg.contains("event 0, pod 4"), "{msg}");
}

#[test]
fn streaming_open_reads_pods_a_batch_at_a_time_and_gives_the_same_events() {
    let dir = scratch("streaming");
    // 40 events: pod columns over 64 KiB, which HDF5 aligns, so the windows
    // come from the memory map.
    let path = simulated_file(dir.path(), 40);
    let whole = RawFile::open(&path).unwrap();
    let s = RawFile::open_streaming(&path).unwrap();
    assert!(s.pods_mapped(), "pod windows read from the map");
    assert_eq!(s.n_pods(), whole.n_pods());
    assert_eq!(s.n_events(), 40);
    // Windows of different sizes through one recycled buffer (as a reco
    // unit streams them): a big window, then smaller ones, an empty one; the
    // first buffer handed in is not empty (whatever it holds is dropped).
    let junk = PodRecord {
        channel: 7,
        start_sample: 1,
        length: 2,
        offset: 3,
    };
    let mut buffer = vec![junk; 9];
    for range in [4..40, 0..3, 3..4, 2..2, 10..12] {
        let batch = s.pod_batch_reusing(range.clone(), buffer).unwrap();
        let same = whole.pod_batch(range.clone()).unwrap();
        for i in range {
            let (a, b, c) = (
                s.event_in(&batch, i),
                whole.event(i),
                whole.event_in(&same, i),
            );
            assert_eq!(
                (a.event_id, a.trigger_time_ns),
                (b.event_id, b.trigger_time_ns)
            );
            assert_eq!(a.pods, b.pods, "event {i}");
            assert_eq!(c.pods, b.pods, "event {i}");
            for p in a.pods {
                assert_eq!(a.pod_samples(p), b.pod_samples(p));
            }
        }
        buffer = batch.into_buffer();
    }
    // A window being read ahead by a prefetch thread holds the same pods.
    let behind = s.pod_batch_behind_readahead(4..40, buffer).unwrap();
    let same = whole.pod_batch(4..40).unwrap();
    for i in 4..40 {
        assert_eq!(s.event_in(&behind, i).pods, whole.event_in(&same, i).pods);
    }
}

#[test]
fn the_prefetcher_brings_a_window_of_a_cold_file_into_memory() {
    let dir = scratch("prefetch");
    let path = simulated_file(dir.path(), 40);
    let size = std::fs::metadata(&path).unwrap().len();
    evict(&path);
    let s = RawFile::open_streaming(&path).unwrap();
    // Opening read the header and event columns only.
    let opened = resident_bytes(&path);
    assert!(
        opened < size / 4,
        "{opened} of {size} bytes resident after open"
    );
    let window = s.readahead(0..40).expect("a mapped file with pods");
    let p = tpcflow::raw::prefetch::Prefetcher::start().unwrap();
    assert!(p.submit(window));
    drop(p); // waits for the queued windows
    let read = resident_bytes(&path);
    let samples = 2 * s.samples().len() as u64;
    assert!(
        read >= opened + samples * 9 / 10,
        "{read} bytes resident after the readahead, samples {samples}, file {size}"
    );
    // Events without pods, or past the end, have nothing to read ahead.
    assert!(s.readahead(40..45).is_none());
    assert!(s.readahead(3..3).is_none());
}

/// Events `events` of `s`, a file just evicted from the page cache, fetched
/// as the prefetch thread fetches a cold window: a direct read.
fn cold_window<'a>(
    s: &'a RawFile,
    p: &tpcflow::raw::prefetch::Prefetcher,
    events: std::ops::Range<usize>,
) -> tpcflow::raw::PodBatch<'a> {
    assert!(s.is_cold(events.clone()));
    let f = p
        .fetch(s.readahead_for(events.clone(), true).unwrap())
        .unwrap()
        .wait();
    assert!(
        matches!(f, tpcflow::raw::prefetch::Fetched::Direct(_)),
        "{f:?}"
    );
    s.pod_batch_fetched(events, Vec::new(), f, p.pool())
        .unwrap()
}

#[test]
fn a_cold_window_is_read_directly_and_gives_the_same_events() {
    let dir = scratch("direct");
    let path = simulated_file(dir.path(), 40);
    let p = tpcflow::raw::prefetch::Prefetcher::start().unwrap();
    // Reference: every event of the window through the map.
    let s = RawFile::open_streaming(&path).unwrap();
    let mapped = s.pod_batch(0..40).unwrap();
    assert_eq!(mapped.direct_bytes(), 0);
    type Pods = Vec<(PodRecord, Vec<i16>)>;
    let reference: Vec<(u64, Pods)> = (0..40)
        .map(|i| {
            let v = s.event_in(&mapped, i);
            let pods = v
                .pods
                .iter()
                .map(|p| (*p, v.pod_samples(p).to_vec()))
                .collect();
            (v.event_id, pods)
        })
        .collect();
    // A window in the page cache is fetched through the map.
    assert!(!s.is_cold(0..40));
    let f = p
        .fetch(s.readahead_for(0..40, false).unwrap())
        .unwrap()
        .wait();
    assert!(
        matches!(f, tpcflow::raw::prefetch::Fetched::Mapped),
        "{f:?}"
    );
    drop(mapped);
    drop(s);

    evict(&path);
    let s = RawFile::open_streaming(&path).unwrap();
    let batch = cold_window(&s, &p, 0..40);
    let samples = 2 * s.samples().len() as u64;
    assert!(
        batch.direct_bytes() >= samples * 9 / 10,
        "{} of {samples} sample bytes read directly",
        batch.direct_bytes()
    );
    // The same pods (offsets aside: counted from the buffer) and samples.
    for (i, (id, pods)) in reference.iter().enumerate() {
        let v = s.event_in(&batch, i);
        assert_eq!(v.event_id, *id);
        assert_eq!(v.pods.len(), pods.len(), "event {id}");
        for (p, (q, samples)) in v.pods.iter().zip(pods) {
            assert_eq!(
                (p.channel, p.start_sample, p.length),
                (q.channel, q.start_sample, q.length)
            );
            assert_eq!(v.pod_samples(p), &samples[..], "event {id}");
        }
    }
    // The buffer goes back to the rank's pool for the next window.
    let (_, buffer) = batch.into_parts();
    assert!(buffer.is_some_and(|b| b.len() as u64 >= samples));
}

#[test]
fn a_cold_window_whose_pods_are_out_of_sample_order_is_read_through_the_map() {
    // The prefetch thread reads a window's samples from its first pod's start
    // to its last pod's end (files are written in sample order). Here the
    // first pod points at the last samples of the file: the direct read
    // misses the samples of most pods, and the reader must not use it.
    let dir = scratch("direct-order");
    let path = simulated_file(dir.path(), 40);
    let (n_samples, length0) = {
        let s = RawFile::open_streaming(&path).unwrap();
        let b = s.pod_batch(0..1).unwrap();
        (s.samples().len() as u64, s.event_in(&b, 0).pods[0].length)
    };
    poke(&path, "pods/offset", 0, n_samples - u64::from(length0));
    let s = RawFile::open_streaming(&path).unwrap();
    let mapped = s.pod_batch(0..40).unwrap();
    let reference: Vec<Vec<Vec<i16>>> = (0..40)
        .map(|i| {
            let v = s.event_in(&mapped, i);
            v.pods.iter().map(|p| v.pod_samples(p).to_vec()).collect()
        })
        .collect();
    assert_eq!(
        reference[0][0],
        s.samples()[(n_samples - u64::from(length0)) as usize..],
        "the first pod reads the file's last samples"
    );
    drop(mapped);
    drop(s);

    evict(&path);
    let p = tpcflow::raw::prefetch::Prefetcher::start().unwrap();
    let s = RawFile::open_streaming(&path).unwrap();
    let batch = cold_window(&s, &p, 0..40);
    assert_eq!(
        batch.direct_bytes(),
        0,
        "the direct read misses pods: not used"
    );
    for (i, pods) in reference.iter().enumerate() {
        let v = s.event_in(&batch, i);
        let got: Vec<Vec<i16>> = v.pods.iter().map(|p| v.pod_samples(p).to_vec()).collect();
        assert_eq!(&got, pods, "event {i}");
    }
}

/// Streaming windows take their pods from the memory map when the pod
/// columns are aligned (40 events: over 64 KiB, which HDF5 aligns) and
/// through HDF5 otherwise (2 events): the bad-pod tests run both.
const MAPPED_AND_NOT: [(u32, bool); 2] = [(2, false), (40, true)];

#[test]
fn channel_out_of_range_is_a_typed_error() {
    for (events, mapped) in MAPPED_AND_NOT {
        let dir = scratch("badchan");
        let path = simulated_file(dir.path(), events);
        poke(&path, "pods/channel", 1, 600u16);
        assert!(matches!(
            RawFile::open(&path).unwrap_err(),
            RawError::BadChannel {
                channel: 600,
                pod: 1,
                n_channels: 494,
                ..
            }
        ));
        // Streaming: the window's quick check fails, the per-event pass names it.
        let s = RawFile::open_streaming(&path).unwrap();
        assert_eq!(s.pods_mapped(), mapped);
        assert!(matches!(
            s.pod_batch(0..2).unwrap_err(),
            RawError::BadChannel {
                channel: 600,
                pod: 1,
                ..
            }
        ));
    }
}

#[test]
fn pods_outside_the_window_or_wrapping_past_the_samples_are_typed_errors() {
    for (events, mapped) in MAPPED_AND_NOT {
        let dir = scratch("badwindow");
        let path = simulated_file(dir.path(), events);
        poke(&path, "pods/start_sample", 2, -5i32);
        let outside = |e: RawError| {
            matches!(
                e,
                RawError::PodOutsideWindow {
                    pod: 2,
                    start: -5,
                    ..
                }
            )
        };
        assert!(outside(RawFile::open(&path).unwrap_err()));
        let s = RawFile::open_streaming(&path).unwrap();
        assert_eq!(s.pods_mapped(), mapped);
        assert!(outside(s.pod_batch(0..2).unwrap_err()));

        // An offset so large that offset + length wraps around u64.
        let dir = scratch("badwrap");
        let path = simulated_file(dir.path(), events);
        poke(&path, "pods/offset", 3, u64::MAX - 1);
        let wraps = |e: RawError| matches!(e, RawError::PodOutOfRange { pod: 3, .. });
        assert!(wraps(RawFile::open(&path).unwrap_err()));
        let s = RawFile::open_streaming(&path).unwrap();
        assert_eq!(s.pods_mapped(), mapped);
        assert!(wraps(s.pod_batch(0..2).unwrap_err()));
    }
}

#[test]
fn unknown_format_version_is_a_typed_error() {
    let dir = scratch("badversion");
    let path = simulated_file(dir.path(), 1);
    modify(&path, |f| {
        f.attr("format_version")
            .unwrap()
            .write_scalar(&99u32)
            .unwrap();
    });
    let err = RawFile::open(&path).unwrap_err();
    assert!(
        matches!(err, RawError::UnknownVersion { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn truncated_file_is_a_typed_error() {
    let dir = scratch("truncated");
    let path = simulated_file(dir.path(), 2);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let err = RawFile::open(&path).unwrap_err();
    assert!(
        matches!(err, RawError::Truncated { .. }),
        "expected Truncated, got {err}"
    );
    assert!(err.to_string().contains(path.to_str().unwrap()));
}

#[test]
fn writer_leaves_no_partial_file_under_the_final_name() {
    let dir = scratch("atomic");
    let path = raw::raw_file_path(dir.path(), 1, 0);
    // The parent directory is a file: writing must fail and leave nothing behind.
    std::fs::write(dir.path().join("000001"), b"not a directory").unwrap();
    assert!(raw::write_raw_file(&path, &header(494), &[]).is_err());
    assert!(!path.exists());
}
