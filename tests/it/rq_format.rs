//! RQ files as analysts' tools see them: chunks encoded by tpcflow (shuffle +
//! deflate, written whole with H5Dwrite_chunk) decode in h5py and h5dump to
//! exactly the values written, across several chunks, a padded last chunk
//! and the exact single chunk of a short column.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use tpcflow::rq::{read_rq_file, Column, ColumnData, RqHeader, RqWriter, CHUNK_ROWS};

use crate::common::{h5dump, run_python, scratch};

fn header() -> RqHeader {
    RqHeader {
        lineage_json: "{}".into(),
        lineage_hash: "0123456789abcdef".into(),
        conditions_tag: "v1".into(),
        input_file: "x.raw.h5".into(),
        input_adler32: "00000001".into(),
    }
}

/// Rows `range` of every column type, seeded by the rows (so batches of any
/// size concatenate to the same columns).
fn columns(range: std::ops::Range<usize>) -> Vec<Column> {
    let mut f32s = Vec::new();
    let mut f64s = Vec::new();
    let mut i64s = Vec::new();
    let mut i32s = Vec::new();
    let mut u64s = Vec::new();
    let mut u32s = Vec::new();
    let mut u16s = Vec::new();
    let mut u8s = Vec::new();
    for row in range {
        let mut rng = ChaCha8Rng::seed_from_u64(row as u64);
        f32s.push(rng.random::<f32>() * 1e3);
        f64s.push(rng.random::<f64>() - 0.5);
        i64s.push(rng.random_range(-1_000_000_i64..1_000_000));
        i32s.push(rng.random_range(-5..5));
        u64s.push(row as u64 * 7);
        u32s.push(rng.random_range(0..300));
        u16s.push(rng.random_range(0..494));
        u8s.push(rng.random_range(0..4));
    }
    vec![
        Column::new("a_f32", "phd", "", ColumnData::F32(f32s)),
        Column::new("b_f64", "ns", "", ColumnData::F64(f64s)),
        Column::new("c_i64", "ns", "", ColumnData::I64(i64s)),
        Column::new("d_i32", "1", "", ColumnData::I32(i32s)),
        Column::new("e_u64", "1", "", ColumnData::U64(u64s)),
        Column::new("f_u32", "1", "", ColumnData::U32(u32s)),
        Column::new("g_u16", "1", "", ColumnData::U16(u16s)),
        Column::new("h_u8", "1", "", ColumnData::U8(u8s)),
    ]
}

fn digests(cols: &[Column]) -> Vec<String> {
    cols.iter()
        .map(|c| {
            let d = Sha256::digest(c.data.as_bytes());
            format!(
                "{} {}",
                c.name,
                d.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        })
        .collect()
}

#[test]
fn chunks_encoded_by_tpcflow_decode_in_h5py_and_h5dump() {
    let dir = scratch("rq-format");
    let path = dir.path().join("multi.rq.h5");
    // /pulses: 2 whole chunks + a padded last one; /events: one exact chunk.
    let n_pulses = 2 * CHUNK_ROWS + 12_345;
    let n_events = 777;
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    // One column stored plain (no filters), as reco stores incompressible floats.
    let mut w = RqWriter::create(&path)
        .unwrap()
        .encode_on(pool)
        .plain(&["pulses/a_f32"]);
    let (mut p, mut e) = (0, 0);
    // Odd batch sizes, so chunks fill in the middle of batches.
    for batch in (1..).map(|k| 997 + 3 * k) {
        if p >= n_pulses {
            break;
        }
        let pe = (p + batch).min(n_pulses);
        let ee = (e + batch / 100).min(n_events);
        w.append(&columns(e..ee), &columns(p..pe), &[]).unwrap();
        (p, e) = (pe, ee);
    }
    let ee = n_events;
    w.append(&columns(e..ee), &[], &[]).unwrap();
    w.finish(&header()).unwrap();

    // Our reader (HDF5's own filter pipeline) sees the columns written.
    let back = read_rq_file(&path).unwrap();
    assert_eq!(back.events, columns(0..n_events));
    assert_eq!(back.pulses, columns(0..n_pulses));

    // h5py: same bytes, the standard filters, the chunking described.
    let py = run_python(
        "import sys, h5py, hashlib, numpy as np\n\
         f = h5py.File(sys.argv[1], 'r')\n\
         for g in ('events', 'pulses'):\n    \
             for k in sorted(f[g]):\n        \
                 d = f[g][k]\n        \
                 plain = (g, k) == ('pulses', 'a_f32')\n        \
                 assert (d.compression, d.shuffle) == ((None, False) if plain else ('gzip', True)), (g, k)\n        \
                 print(g, d.chunks[0], len(d), k, hashlib.sha256(np.ascontiguousarray(d[:]).tobytes()).hexdigest())",
        &[&path],
    );
    let mut expected = Vec::new();
    for (g, rows, chunk) in [
        ("events", n_events, n_events),
        ("pulses", n_pulses, CHUNK_ROWS),
    ] {
        for d in digests(&columns(0..rows)) {
            expected.push(format!("{g} {chunk} {rows} {d}"));
        }
    }
    assert_eq!(py.lines().collect::<Vec<_>>(), expected);

    // h5dump decodes the padded last chunk: the final rows are the values.
    let start = (n_pulses - 2).to_string();
    let file = path.to_str().unwrap();
    let dump = h5dump(&["-p", "-d", "/pulses/e_u64", "-s", &start, "-c", "2", file]);
    assert!(
        dump.contains("SHUFFLE") && dump.contains("DEFLATE"),
        "{dump}"
    );
    let last = format!(
        "{}, {}",
        (n_pulses as u64 - 2) * 7,
        (n_pulses as u64 - 1) * 7
    );
    assert!(dump.contains(&last), "h5dump shows {last}: {dump}");
}

#[test]
fn a_batch_with_another_column_type_is_refused_whole() {
    let dir = scratch("rq-format-refused");
    let path = dir.path().join("r.rq.h5");
    let mut w = RqWriter::create(&path).unwrap();
    w.append(&columns(0..10), &columns(0..20), &[]).unwrap();
    let mut bad = columns(10..20);
    bad[3].data = ColumnData::F64(vec![0.0; 10]);
    let err = w
        .append(&columns(10..12), &bad, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/pulses/d_i32") && err.contains("type"),
        "{err}"
    );
    assert_eq!(
        w.rows(),
        [10, 20, 0],
        "nothing of the refused batch was taken"
    );
    w.finish(&header()).unwrap();
    let back = read_rq_file(&path).unwrap();
    assert_eq!(back.events, columns(0..10));
    assert_eq!(back.pulses, columns(0..20));
}
