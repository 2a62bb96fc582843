//! Salting and unsalting on real raw, RQ and catalog files, through the
//! `tpcflow` binary: science files salted blind, calibration untouched,
//! transfer copies the salted bytes, unsalt recovers exactly the injected
//! events, and the key file is guarded.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tpcflow::adler::{digest_file, same_checksum};
use tpcflow::catalog::ingest::{self, IngestConfig};
use tpcflow::catalog::{Catalog, Site};
use tpcflow::conditions::Conditions;
use tpcflow::raw::{truth_path_for, RawFile};
use tpcflow::rq::{read_rq_file, ColumnData, RqFile};
use tpcflow::salt::inject::owned_event;
use tpcflow::salt::{SaltRecord, Vault, VaultKey};
use tpcflow::sim::{SimOptions, Source};
use tpcflow::transfer::{self, Sites, TransferConfig};

use crate::common::*;

const SCIENCE: u32 = 17500;
const CALIBRATION: u32 = 17501;
const FILES: u32 = 4;
const EVENTS: u32 = 60;
/// Dead time between triggers: one 4.5 ms event window [ns].
const DEAD_NS: i64 = 4_500_000;

fn sim(data: &Path, run: u32, files: u32, source: Source) -> Vec<PathBuf> {
    let opts = SimOptions {
        run,
        files,
        events_per_file: EVENTS,
        seed: 23,
        out: data.join("SURF"),
        source,
        first_sequence: 0,
        live_rate_hz: None,
    };
    tpcflow::sim::run(&opts, &Conditions::load("v1").unwrap())
        .unwrap()
        .files
}

fn tpcflow(args: &[&str]) -> Output {
    let out = Command::new(tpcflow_bin())
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("SLURM_CPUS_PER_TASK")
        .output()
        .expect("tpcflow runs");
    eprintln!(
        "$ tpcflow {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(args: &[&str]) -> String {
    let out = tpcflow(args);
    assert!(out.status.success(), "tpcflow {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Two-sample Kolmogorov-Smirnov distance.
fn ks(a: &[f64], b: &[f64]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// KS distance below its 0.1 % critical value.
fn assert_same_distribution(what: &str, salt: &[f64], real: &[f64]) {
    let (n, m) = (salt.len() as f64, real.len() as f64);
    let critical = 1.95 * ((n + m) / (n * m)).sqrt();
    let d = ks(salt, real);
    eprintln!("{what}: KS distance {d:.3} (critical {critical:.3}, {n} salt vs {m} real)");
    assert!(
        d < critical,
        "{what} tells salt from real: KS {d:.3} >= {critical:.3}"
    );
}

fn u64s(c: Option<&ColumnData>) -> Vec<u64> {
    match c {
        Some(ColumnData::U64(v)) => v.clone(),
        other => panic!("not a u64 column: {other:?}"),
    }
}

/// An event's trigger time, pods and samples: equal for the same event in two files.
type Content = (i64, Vec<(u16, i32, u32, u64)>, Vec<i16>);

fn content(e: &tpcflow::raw::OwnedEvent) -> Content {
    let pods = e
        .pods
        .iter()
        .map(|p| (p.channel, p.start_sample, p.length, p.offset))
        .collect();
    (e.trigger_time_ns, pods, e.samples.clone())
}

/// A column compared value for value, NaN equal to NaN (no signal, no S1).
fn bits(c: Option<&ColumnData>) -> String {
    format!("{c:?}")
}

fn records(vault: &Vault) -> Vec<SaltRecord> {
    (0..FILES)
        .map(|seq| {
            vault
                .read(&SaltRecord::vault_name(SCIENCE, seq))
                .unwrap()
                .unwrap()
        })
        .collect()
}

#[test]
fn science_files_are_salted_blind_and_unsalt_recovers_exactly_the_injected_events() {
    let dir = scratch("salting");
    let d = dir.path();
    let data = d.join("data");
    let science = sim(&data, SCIENCE, FILES, Source::Wimp);
    let calibration = sim(&data, CALIBRATION, 1, Source::Kr83m);
    let cal_dir = data.join("SURF").join(format!("{CALIBRATION:06}"));
    std::fs::write(cal_dir.join("RUNINFO.toml"), "run_type = \"calibration\"\n").unwrap();
    let orig = d.join("orig");
    std::fs::create_dir_all(&orig).unwrap();
    for f in &science {
        std::fs::copy(f, orig.join(f.file_name().unwrap())).unwrap();
    }
    let cal_bytes = std::fs::read(&calibration[0]).unwrap();
    let truth_before = std::fs::read(truth_path_for(&science[0])).unwrap();

    let catalog_path = d.join("catalog.sqlite");
    let catalog = Catalog::init(&catalog_path).unwrap();
    let cfg = IngestConfig {
        surf_root: data.join("SURF"),
    };
    assert_eq!(
        ingest::run(&cfg, &catalog).unwrap().files_registered,
        FILES as usize + 1
    );

    let (key, vault_dir) = (d.join("salt.key"), d.join("vault"));
    ok(&[
        "salt",
        "keygen",
        "--key",
        s(&key),
        "--vault",
        s(&vault_dir),
        "--rate",
        "0.15",
    ]);
    let pass = [
        "salt",
        "--catalog",
        s(&catalog_path),
        "--data-root",
        s(&data),
        "--key",
        s(&key),
        "--vault",
        s(&vault_dir),
    ];
    let out = ok(&pass);
    assert!(
        out.contains("4 science file(s) salted") && out.contains("1 calibration file(s) bypassed"),
        "{out}"
    );
    assert!(
        ok(&pass).contains("0 science file(s) salted"),
        "a second pass salts again"
    );

    // Calibration bypasses: bytes identical, flag clear.
    assert_eq!(std::fs::read(&calibration[0]).unwrap(), cal_bytes);
    assert!(
        !catalog
            .file(&format!("{CALIBRATION:06}_00000.raw.h5"))
            .unwrap()
            .salted
    );
    // Truth files are left as they were (original ids, real events only).
    assert_eq!(
        std::fs::read(truth_path_for(&science[0])).unwrap(),
        truth_before
    );

    let vault = Vault::open(&vault_dir, VaultKey::load(&key).unwrap()).unwrap();
    let recs = records(&vault);
    let salt_ids: HashSet<u64> = recs.iter().flat_map(|r| r.salt_ids()).collect();
    assert!(
        salt_ids.len() >= 5,
        "rate 0.15 x 240 events gave only {} salt",
        salt_ids.len()
    );

    // Catalog: salted, re-checksummed; raw files read back; ids and times blind.
    let (mut ids, mut times) = (Vec::new(), Vec::new());
    let (mut salt_pods, mut real_pods, mut salt_samples, mut real_samples) =
        (vec![], vec![], vec![], vec![]);
    for (seq, f) in science.iter().enumerate() {
        let row = catalog
            .file(&format!("{SCIENCE:06}_{seq:05}.raw.h5"))
            .unwrap();
        let dg = digest_file(f).unwrap();
        assert!(row.salted);
        assert_eq!(row.size_bytes, dg.size_bytes);
        assert!(same_checksum(&row.adler32, &dg.adler32));
        assert!(same_checksum(&recs[seq].salted_adler32, &dg.adler32));
        let raw = RawFile::open(f).unwrap();
        for ev in raw.events() {
            ids.push(ev.event_id);
            times.push(ev.trigger_time_ns);
            let n: usize = ev.pods.iter().map(|p| p.length as usize).sum();
            let (pods, samples) = if salt_ids.contains(&ev.event_id) {
                (&mut salt_pods, &mut salt_samples)
            } else {
                (&mut real_pods, &mut real_samples)
            };
            pods.push(ev.pods.len() as f64);
            samples.push(n as f64);
        }
        // What was injected, found independently: events not in the original file.
        let original = RawFile::open(&orig.join(f.file_name().unwrap())).unwrap();
        let by_content: HashMap<_, u64> = original
            .events()
            .map(|e| {
                let o = owned_event(&e);
                (content(&o), o.event_id)
            })
            .collect();
        let (mut injected, mut mapping) = (Vec::new(), Vec::new());
        for e in raw.events() {
            match by_content.get(&content(&owned_event(&e))) {
                Some(&orig_id) => mapping.push((e.event_id, orig_id)),
                None => injected.push(e.event_id),
            }
        }
        assert_eq!(injected, recs[seq].salt_ids(), "{}", f.display());
        assert_eq!(mapping, recs[seq].real_event_ids);
        assert_eq!(mapping.len(), EVENTS as usize, "every real event kept");
    }
    let n = ids.len() as u64;
    assert_eq!(n, u64::from(FILES * EVENTS) + salt_ids.len() as u64);
    assert_eq!(
        ids,
        (0..n).collect::<Vec<_>>(),
        "ids must be gap-free and in time order over the run"
    );
    assert!(
        times.windows(2).all(|w| w[1] - w[0] >= DEAD_NS),
        "spacing below the dead time"
    );
    // Spacing: gaps next to a salt event vs gaps between real events.
    let (mut salt_gaps, mut real_gaps) = (vec![], vec![]);
    for (k, w) in times.windows(2).enumerate() {
        let gap = (w[1] - w[0]) as f64;
        if salt_ids.contains(&ids[k]) || salt_ids.contains(&ids[k + 1]) {
            salt_gaps.push(gap);
        } else {
            real_gaps.push(gap);
        }
    }
    assert_same_distribution("trigger spacing", &salt_gaps, &real_gaps);
    assert_same_distribution("pods per event", &salt_pods, &real_pods);
    assert_same_distribution("samples (bytes) per event", &salt_samples, &real_samples);
    // Ordering: salt is not bunched at the start or end of files.
    let rows: Vec<f64> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| salt_ids.contains(id))
        .map(|(i, _)| i as f64 / n as f64)
        .collect();
    let uniform: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
    assert_same_distribution("position in the run", &rows, &uniform);

    // Transfer copies the salted bytes and verifies them against the catalog.
    let tcfg = TransferConfig {
        sites: Sites::under(&data),
        destinations: vec![Site::Usdc],
        max_attempts: 2,
        parallel: 2,
        retry_failed: false,
        require_salted: false,
    };
    let report = transfer::run(&tcfg, &catalog).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    for f in &science {
        let copy = data
            .join("USDC")
            .join(f.strip_prefix(data.join("SURF")).unwrap());
        assert_eq!(std::fs::read(copy).unwrap(), std::fs::read(f).unwrap());
    }

    // Reco of the salted files (the pipeline) and of the originals (the reference).
    let (rq_dir, ref_dir, un_dir) = (d.join("rq"), d.join("rq_ref"), d.join("unsalted"));
    let salted_inputs: Vec<&str> = science.iter().map(|p| s(p)).collect();
    let orig_paths: Vec<PathBuf> = science
        .iter()
        .map(|p| orig.join(p.file_name().unwrap()))
        .collect();
    let orig_inputs: Vec<&str> = orig_paths.iter().map(|p| s(p)).collect();
    for (inputs, out) in [(&salted_inputs, &rq_dir), (&orig_inputs, &ref_dir)] {
        let mut args = vec!["reco", "--threads", "2", "--out-dir", s(out), "--inputs"];
        args.extend(inputs.iter());
        ok(&args);
    }
    let rq_files = |dir: &Path| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".rq.h5"))
            .collect();
        v.sort();
        v
    };
    let salted_rq = rq_files(&rq_dir);
    assert_eq!(salted_rq.len(), FILES as usize);
    let mut args = vec![
        "unsalt",
        "--key",
        s(&key),
        "--vault",
        s(&vault_dir),
        "--out-dir",
        s(&un_dir),
        "--files",
    ];
    args.extend(salted_rq.iter().map(|p| s(p)));
    let listing = ok(&args);
    assert!(listing.contains("UNBLINDING"), "{listing}");
    let log = std::fs::read_to_string(vault_dir.join("unsalt.log")).unwrap();
    assert!(
        log.contains("unsalt-start") && log.contains("unsalt-done"),
        "{log}"
    );

    for ((salted, reference), rec) in salted_rq.iter().zip(rq_files(&ref_dir)).zip(&recs) {
        assert!(salted.exists(), "original RQ file kept");
        let out = un_dir.join(
            salted
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".rq.h5", ".unsalted.rq.h5"),
        );
        let (sa, un, rf): (RqFile, RqFile, RqFile) = (
            read_rq_file(salted).unwrap(),
            read_rq_file(&out).unwrap(),
            read_rq_file(&reference).unwrap(),
        );
        let kept: HashSet<u64> = u64s(un.event_column("event_id")).into_iter().collect();
        let removed: Vec<u64> = u64s(sa.event_column("event_id"))
            .into_iter()
            .filter(|id| !kept.contains(id))
            .collect();
        assert_eq!(removed, rec.salt_ids(), "{}", out.display());
        assert_eq!(
            u64s(un.event_column("original_event_id")),
            u64s(rf.event_column("event_id"))
        );
        for c in &rf.events {
            if c.name != "event_id" {
                assert_eq!(
                    bits(un.event_column(&c.name)),
                    bits(Some(&c.data)),
                    "/events/{}",
                    c.name
                );
            }
        }
        for c in &rf.pulses {
            if c.name != "event_id" {
                assert_eq!(
                    bits(un.pulse_column(&c.name)),
                    bits(Some(&c.data)),
                    "/pulses/{}",
                    c.name
                );
            }
        }
        assert_eq!(format!("{:?}", un.channels), format!("{:?}", rf.channels));
        assert_ne!(un.header.lineage_hash, sa.header.lineage_hash);
    }
}

#[test]
fn a_world_readable_key_and_a_wrong_key_are_refused() {
    let dir = scratch("salt-key");
    let d = dir.path();
    let (key, vault) = (d.join("k"), d.join("vault"));
    ok(&[
        "salt",
        "keygen",
        "--key",
        s(&key),
        "--vault",
        s(&vault),
        "--rate",
        "0.05",
    ]);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = tpcflow(&[
        "salt",
        "keygen",
        "--key",
        s(&d.join("k2")),
        "--vault",
        s(&vault),
        "--rate",
        "1",
    ]);
    assert!(!again.status.success(), "keygen overwrote a vault");
    let catalog = d.join("c.sqlite");
    drop(Catalog::init(&catalog).unwrap());
    let rq = d.join("x.abc.rq.h5");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [
        vec![
            "unsalt",
            "--key",
            s(&key),
            "--vault",
            s(&vault),
            "--files",
            s(&rq),
        ],
        vec![
            "salt",
            "--catalog",
            s(&catalog),
            "--data-root",
            s(d),
            "--key",
            s(&key),
            "--vault",
            s(&vault),
        ],
    ] {
        let out = tpcflow(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("mode 0644") && err.contains(s(&key)), "{err}");
    }
    assert!(
        !vault.join("unsalt.log").exists(),
        "nothing logged or unblinded"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let wrong = d.join("wrong.key");
    VaultKey::generate(&wrong).unwrap();
    let out = tpcflow(&[
        "unsalt",
        "--key",
        s(&wrong),
        "--vault",
        s(&vault),
        "--files",
        s(&rq),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("authentication failed") && err.contains("config.vault"),
        "{err}"
    );
}
