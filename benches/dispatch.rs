//! One dispatcher pass over a catalog of 1,000,000 raw files with nothing to
//! do (every file placed and processed), and the catalog queries operators
//! and the web run at that size. Needs the local SLURM cluster
//! (scripts/setup.sh): the pass calls squeue like the real one.
//!
//! The catalog is built once into `target/bench-data/catalog-1m.db`
//! (`TPCFLOW_BENCH_FILES` changes the size).

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use tpcflow::catalog::Catalog;
use tpcflow::dispatch::{DispatchConfig, Dispatcher, Settings};
use tpcflow::sbatch::Template;
use tpcflow::transfer::Sites;

const FILES_PER_RUN: u64 = 1000;

fn build_catalog(path: &Path, n_files: u64) {
    if path.exists() {
        return;
    }
    let start = Instant::now();
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    // Schema and the prompt campaign through the real code...
    drop(Catalog::init(&tmp).expect("catalog"));
    let cat = Catalog::open(&tmp).expect("catalog");
    let c = tpcflow::dispatch::create_campaign(
        &cat,
        "prompt-v1",
        (0, u32::MAX >> 1),
        "v1",
        &Default::default(),
        true,
    )
    .expect("campaign");
    drop(cat);
    // ...and the million rows in bulk.
    let mut conn = rusqlite::Connection::open(&tmp).expect("sqlite");
    conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        .expect("pragmas");
    let tx = conn.transaction().expect("tx");
    {
        let mut run = tx.prepare("INSERT INTO runs (number, start_time, run_type, conditions, registered_at) VALUES (?1, '2026-01-01T00:00:00Z', 'science', 'v1', 0)").unwrap();
        let mut file = tx.prepare("INSERT INTO raw_files (id, run, sequence, name, size_bytes, adler32, state, salted, written_at, registered_at) VALUES (?1, ?2, ?3, ?4, 30000000, '0badcafe', 'processed', 1, 0, 0)").unwrap();
        let mut rep = tx.prepare("INSERT INTO replicas (file_id, site, path, size_bytes, adler32, state, verified_at, updated_at) VALUES (?1, ?2, ?3, 30000000, '0badcafe', 'verified', 0, 0)").unwrap();
        let mut task = tx.prepare("INSERT INTO tasks (file_id, campaign_id, state, attempts, created_at, updated_at) VALUES (?1, ?2, 'done', 0, 0, 0)").unwrap();
        let mut out = tx.prepare("INSERT INTO outputs (file_id, lineage_hash, rq_path, checksum, events, catalogued_at) VALUES (?1, ?2, ?3, '01234567', 100, 10)").unwrap();
        for id in 1..=n_files {
            let (r, seq) = (10_000 + (id - 1) / FILES_PER_RUN, (id - 1) % FILES_PER_RUN);
            if seq == 0 {
                run.execute([r]).unwrap();
            }
            let name = format!("{r:06}_{seq:05}.raw.h5");
            file.execute(rusqlite::params![id, r, seq, name]).unwrap();
            let rel = format!("{r:06}/{name}");
            for site in ["SURF", "USDC", "UKDC", "ARCHIVE"] {
                rep.execute(rusqlite::params![id, site, rel]).unwrap();
            }
            task.execute(rusqlite::params![id, c.id]).unwrap();
            out.execute(rusqlite::params![id, c.lineage_hash, format!("/rq/{name}")])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("ANALYZE;").unwrap();
    drop(conn);
    std::fs::rename(&tmp, path).unwrap();
    eprintln!(
        "built a catalog of {n_files} files in {:.0} s",
        start.elapsed().as_secs_f64()
    );
}

fn bench_dispatch(c: &mut Criterion) {
    let n: u64 = std::env::var("TPCFLOW_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("catalog-{n}.db"));
    build_catalog(&path, n);
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("SURF")).unwrap();
    let cfg = DispatchConfig {
        catalog: path.clone(),
        sites: Sites::under(data.path()),
        rq_root: data.path().join("RQ"),
        work_dir: data.path().join("jobs"),
        tpcflow_bin: PathBuf::from("/bin/false"),
        settings: Settings::default(),
        template: Template::load("local").unwrap(),
    };
    let d = Dispatcher::new(cfg).expect("dispatcher (is the local SLURM cluster up?)");
    let first = d.pass().expect("pass");
    assert_eq!(
        (first.jobs_submitted, first.tasks_queued, first.ingested),
        (0, 0, 0),
        "nothing to do"
    );
    eprintln!(
        "a pass with nothing to do makes {} SLURM call(s); stages {:?}",
        first.slurm_calls, first.stage_seconds
    );
    let mut g = c.benchmark_group("dispatch");
    g.sample_size(20);
    g.bench_function(format!("pass_nothing_to_do_{n}_files"), |b| {
        b.iter(|| d.pass().expect("pass"))
    });
    let cat = d.catalog();
    // The file in the middle of the catalog (run 10500 at 1M files) and its run.
    let mid = n / 2;
    let run = u32::try_from(10_000 + mid / FILES_PER_RUN).expect("run number");
    let name = format!("{run:06}_{:05}.raw.h5", mid % FILES_PER_RUN);
    assert!(!cat.files_of_run(run).unwrap().is_empty(), "run {run}");
    cat.file(&name).expect("the middle file is catalogued");
    g.bench_function(format!("status_one_run_{n}_files"), |b| {
        b.iter(|| cat.run_status(Some(run), false).unwrap())
    });
    g.bench_function(format!("files_of_run_{n}_files"), |b| {
        b.iter(|| cat.files_of_run(run).unwrap())
    });
    g.bench_function(format!("file_by_name_{n}_files"), |b| {
        b.iter(|| cat.file(&name).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_dispatch);
criterion_main!(benches);
