//! Catalog, ingest, transfer and audit on real SQLite files and real raw files.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tpcflow::adler::{digest_file, same_checksum};
use tpcflow::audit::{self, AuditConfig};
use tpcflow::catalog::ingest::{self, IngestConfig};
use tpcflow::catalog::{Catalog, FileState, ReplicaState, RunType, Site};
use tpcflow::conditions::Conditions;
use tpcflow::sim::{SimOptions, Source};
use tpcflow::transfer::{self, Sites, TransferConfig};

use crate::common::*;

const RUN: u32 = 17400;

/// A data root with SURF holding `files` small real raw files of run 17400.
fn data_root_with_run(dir: &Path, files: u32) -> PathBuf {
    let data = dir.join("data");
    let opts = SimOptions {
        run: RUN,
        files,
        events_per_file: 2,
        seed: 11,
        out: data.join("SURF"),
        source: Source::Mixed,
        first_sequence: 0,
        live_rate_hz: None,
    };
    tpcflow::sim::run(&opts, &Conditions::load("v1").unwrap()).unwrap();
    data
}

fn transfer_cfg(data: &Path) -> TransferConfig {
    TransferConfig {
        sites: Sites::under(data),
        destinations: Site::DESTINATIONS.to_vec(),
        max_attempts: 3,
        parallel: 2,
        retry_failed: false,
        require_salted: false,
    }
}

fn ingest(data: &Path, catalog: &Catalog) -> ingest::IngestReport {
    ingest::run(
        &IngestConfig {
            surf_root: data.join("SURF"),
        },
        catalog,
    )
    .unwrap()
}

fn raw_name(seq: u32) -> String {
    format!("{RUN:06}_{seq:05}.raw.h5")
}

fn site_file(data: &Path, site: Site, seq: u32) -> PathBuf {
    data.join(site.as_str())
        .join(format!("{RUN:06}"))
        .join(raw_name(seq))
}

/// Flip one byte of a file in place (size unchanged).
fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Every final-name file under the destinations matches the catalog; returns how many.
fn assert_final_names_are_complete(data: &Path, catalog: &Catalog) -> usize {
    let mut n = 0;
    for site in Site::DESTINATIONS {
        let dir = data.join(site.as_str()).join(format!("{RUN:06}"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ingest::parse_raw_file_name(&name).is_none() {
                continue;
            }
            let f = catalog.file(&name).unwrap();
            let d = digest_file(&e.path()).unwrap();
            assert_eq!(d.size_bytes, f.size_bytes, "{name} at {site} is partial");
            assert!(
                same_checksum(&d.adler32, &f.adler32),
                "{name} at {site} has wrong bytes"
            );
            n += 1;
        }
    }
    n
}

#[test]
fn twenty_files_ingest_transfer_and_verify_at_three_sites() {
    let dir = scratch("catalog-20");
    let data = data_root_with_run(dir.path(), 20);
    let run_dir = data.join("SURF").join(format!("{RUN:06}"));
    std::fs::write(run_dir.join("RUNINFO.toml"), "run_type = \"calibration\"\n").unwrap();
    let catalog = Catalog::init(&dir.path().join("catalog.sqlite")).unwrap();

    let first = ingest(&data, &catalog);
    assert_eq!(first.files_registered, 20);
    let again = ingest(&data, &catalog);
    assert_eq!(
        (again.files_registered, again.files_known),
        (0, 20),
        "ingest is not idempotent"
    );
    let runs = catalog.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_type, RunType::Calibration);
    assert_eq!(runs[0].conditions.as_deref(), Some("v1"));
    assert!(runs[0].start_time.is_some());

    let report = transfer::run(&transfer_cfg(&data), &catalog).unwrap();
    eprintln!("{report}");
    eprintln!(
        "ingest: {} files {:.1} MB in {:.3} s ({:.0} MB/s)",
        first.files_registered,
        first.bytes_registered as f64 / 1e6,
        first.seconds,
        first.mb_per_s
    );
    assert_eq!(report.verified, 60);
    assert_eq!(report.files_completed, 20);
    assert!(report.failures.is_empty());
    assert_eq!(report.bytes, 3 * first.bytes_registered);
    assert!(report.mb_per_s > 0.0);

    let files = catalog.files_of_run(RUN).unwrap();
    assert_eq!(files.len(), 20);
    for f in &files {
        assert_eq!(f.state, FileState::Transferred, "{}", f.name);
        let source = digest_file(&run_dir.join(&f.name)).unwrap();
        assert!(same_checksum(&source.adler32, &f.adler32));
        assert_eq!(source.size_bytes, f.size_bytes);
        let replicas = catalog.replicas_of(f.id).unwrap();
        assert_eq!(replicas.len(), 4, "{}: {replicas:?}", f.name);
        for r in replicas {
            assert_eq!(r.state, ReplicaState::Verified, "{} at {}", f.name, r.site);
            assert_eq!(r.size_bytes, Some(f.size_bytes));
            assert!(same_checksum(r.adler32.as_deref().unwrap(), &f.adler32));
            assert!(r.verified_at.is_some());
        }
    }
    for site in Site::ALL {
        assert_eq!(
            catalog
                .count_replicas(*site, ReplicaState::Verified)
                .unwrap(),
            20
        );
    }
    assert_eq!(assert_final_names_are_complete(&data, &catalog), 60);
    let second = transfer::run(&transfer_cfg(&data), &catalog).unwrap();
    assert_eq!(
        (second.attempts, second.queued),
        (0, 0),
        "a second pass copied again"
    );
}

#[test]
fn a_byte_flipped_in_a_copy_is_detected_and_retransferred() {
    let dir = scratch("catalog-flip");
    let data = data_root_with_run(dir.path(), 5);
    let catalog = Catalog::init(&dir.path().join("catalog.sqlite")).unwrap();
    ingest(&data, &catalog);
    // A copy tool that corrupts its first copy of each file (the HDF5 signature byte).
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let script = dir.path().join("flaky_cp.sh");
    std::fs::write(
        &script,
        "cp \"$1\" \"$2\"\nm=\"$3/$(basename \"$1\")\"\nif [ ! -e \"$m\" ]; then touch \"$m\"; \
         printf X | dd of=\"$2\" bs=1 seek=0 count=1 conv=notrunc 2>/dev/null; fi\n",
    )
    .unwrap();
    let mut cfg = transfer_cfg(&data);
    let template = format!(
        "sh {} {{src}} {{dst}} {}",
        script.display(),
        markers.display()
    );
    cfg.sites.set_copy_command(Site::Usdc, &template).unwrap();

    let report = transfer::run(&cfg, &catalog).unwrap();
    eprintln!("{report}");
    assert_eq!(report.verified, 15);
    assert_eq!(report.retries, 5, "each USDC copy was corrupted once");
    assert_eq!(report.sites[&Site::Usdc].failed_attempts, 5);
    assert!(report.failures.is_empty());
    for seq in 0..5 {
        let f = catalog.file(&raw_name(seq)).unwrap();
        let usdc = catalog
            .replicas_of(f.id)
            .unwrap()
            .into_iter()
            .find(|r| r.site == Site::Usdc)
            .unwrap();
        assert_eq!((usdc.state, usdc.attempts), (ReplicaState::Verified, 1));
    }
    assert_eq!(assert_final_names_are_complete(&data, &catalog), 15);
}

#[test]
fn a_source_corrupted_after_registration_ends_as_bad_replicas_after_the_cap() {
    let dir = scratch("catalog-badsrc");
    let data = data_root_with_run(dir.path(), 4);
    let catalog = Catalog::init(&dir.path().join("catalog.sqlite")).unwrap();
    ingest(&data, &catalog);
    flip_byte(&site_file(&data, Site::Surf, 2), 4000);

    let report = transfer::run(&transfer_cfg(&data), &catalog).unwrap();
    eprintln!("{report}");
    assert_eq!(report.verified, 9);
    assert_eq!(report.failures.len(), 3, "{:?}", report.failures);
    assert_eq!(report.retries, 6, "two re-queues per site before the cap");
    let f = catalog.file(&raw_name(2)).unwrap();
    assert_eq!(f.state, FileState::Registered);
    for r in catalog.replicas_of(f.id).unwrap() {
        if r.site == Site::Surf {
            continue;
        }
        assert_eq!(
            (r.state, r.attempts),
            (ReplicaState::Bad, 3),
            "{} at {}",
            r.file,
            r.site
        );
        let reason = r.last_error.unwrap();
        for needle in [
            raw_name(2).as_str(),
            r.site.as_str(),
            "adler32 mismatch",
            "SURF copy no longer matches",
        ] {
            assert!(reason.contains(needle), "reason lacks {needle:?}: {reason}");
        }
        assert!(
            !site_file(&data, r.site, 2).exists(),
            "a bad copy got its final name"
        );
    }
    let again = transfer::run(&transfer_cfg(&data), &catalog).unwrap();
    assert_eq!(again.attempts, 0, "a replica past the cap was retried");
}

#[test]
fn a_file_still_being_written_is_not_ingested_until_renamed() {
    let dir = scratch("catalog-partial");
    let data = data_root_with_run(dir.path(), 3);
    let catalog = Catalog::init(&dir.path().join("catalog.sqlite")).unwrap();
    let final_path = site_file(&data, Site::Surf, 1);
    let tmp = final_path.with_file_name(format!(".{}.tmp", raw_name(1)));
    std::fs::rename(&final_path, &tmp).unwrap();
    // Half of it, as a writer would have it mid-way.
    let bytes = std::fs::read(&tmp).unwrap();
    std::fs::write(&tmp, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(
        final_path.with_file_name("017400_00007.raw.h5.part"),
        b"partial",
    )
    .unwrap();

    let first = ingest(&data, &catalog);
    assert_eq!(first.files_registered, 2);
    assert_eq!(first.files_in_progress, 1);
    assert!(catalog.file(&raw_name(1)).is_err());

    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &final_path).unwrap();
    let second = ingest(&data, &catalog);
    assert_eq!((second.files_registered, second.files_known), (1, 2));
    let f = catalog.file(&raw_name(1)).unwrap();
    assert_eq!(f.size_bytes, bytes.len() as u64);
    assert!(same_checksum(
        &f.adler32,
        &digest_file(&final_path).unwrap().adler32
    ));
}

fn tpcflow(dir: &Path, data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(tpcflow_bin());
    cmd.args(args)
        .env("TPCFLOW_CATALOG", dir.join("catalog.sqlite"))
        .env("TPCFLOW_DATA_ROOT", data)
        .env("TPCFLOW_LOG", "warn");
    cmd
}

#[test]
fn a_mover_killed_mid_transfer_leaves_no_partial_file_and_resumes() {
    let dir = scratch("catalog-kill");
    let data = data_root_with_run(dir.path(), 20);
    let out = tpcflow(dir.path(), &data, &["catalog", "init"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tpcflow(dir.path(), &data, &["catalog", "ingest", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["files_registered"], 20);

    // A slow copy tool that writes part of the file, pauses, then completes it.
    let slow = "head -c 50000 {src} > {dst}; sleep 0.3; cp {src} {dst}";
    let mut args = vec!["transfer", "--parallel", "2"];
    let specs: Vec<String> = Site::DESTINATIONS
        .iter()
        .map(|s| format!("{s}={slow}"))
        .collect();
    for s in &specs {
        args.extend(["--copy-command", s.as_str()]);
    }
    // Its own process group, so the kill takes the copy commands too, as
    // SLURM or a node crash would.
    let child = tpcflow(dir.path(), &data, &args)
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let catalog = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
    // Wait until a few copies are verified, then kill mid-way.
    while catalog
        .count_replicas(Site::Usdc, ReplicaState::Verified)
        .unwrap()
        + catalog
            .count_replicas(Site::Ukdc, ReplicaState::Verified)
            .unwrap()
        + catalog
            .count_replicas(Site::Archive, ReplicaState::Verified)
            .unwrap()
        < 4
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "transfer made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut child = child;
    let status = child.wait().unwrap();
    assert!(!status.success(), "the mover finished before the kill");

    let verified_before: u64 = Site::DESTINATIONS
        .iter()
        .map(|s| catalog.count_replicas(*s, ReplicaState::Verified).unwrap())
        .sum();
    assert!(
        verified_before < 60,
        "the kill came too late: {verified_before} verified"
    );
    let in_flight: u64 = Site::DESTINATIONS
        .iter()
        .map(|s| {
            catalog
                .count_replicas(*s, ReplicaState::Transferring)
                .unwrap()
        })
        .sum();
    assert!(in_flight > 0, "no copy was in flight at the kill");
    // Every final name is a complete copy; besides the verified ones, only a
    // copy renamed just before the kill (not yet marked) may have one.
    let final_names = assert_final_names_are_complete(&data, &catalog) as u64;
    assert!(
        (verified_before..=verified_before + in_flight).contains(&final_names),
        "{final_names} final names for {verified_before} verified + {in_flight} in flight"
    );

    let out = tpcflow(dir.path(), &data, &["transfer", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("resumed pass: {report}");
    assert_eq!(report["resumed"].as_u64().unwrap(), in_flight);
    assert_eq!(report["verified"].as_u64().unwrap(), 60 - verified_before);
    assert_eq!(assert_final_names_are_complete(&data, &catalog), 60);
    for f in catalog.files_of_run(RUN).unwrap() {
        assert_eq!(f.state, FileState::Transferred, "{}", f.name);
    }
    for site in Site::DESTINATIONS {
        let run_dir = data.join(site.as_str()).join(format!("{RUN:06}"));
        for e in std::fs::read_dir(run_dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !ingest::is_temporary_name(&name),
                "leftover {name} at {site}"
            );
        }
    }
}

#[test]
fn audit_finds_dark_lost_and_bad_files_and_refuses_a_broken_listing() {
    let dir = scratch("catalog-audit");
    let data = data_root_with_run(dir.path(), 20);
    let catalog = Catalog::init(&dir.path().join("catalog.sqlite")).unwrap();
    ingest(&data, &catalog);
    let t = transfer::run(&transfer_cfg(&data), &catalog).unwrap();
    assert_eq!(t.verified, 60);

    // USDC: a dark file, a stray, a deleted replica and a corrupted one.
    let dark = site_file(&data, Site::Usdc, 99);
    std::fs::copy(site_file(&data, Site::Usdc, 0), &dark).unwrap();
    let stray = dark.with_file_name("notes.txt");
    std::fs::write(&stray, b"operator notes").unwrap();
    std::fs::remove_file(site_file(&data, Site::Usdc, 4)).unwrap();
    flip_byte(&site_file(&data, Site::Usdc, 7), 5000);

    let cfg = |site| AuditConfig {
        site,
        sites: Sites::under(&data),
        max_missing_fraction: audit::DEFAULT_MAX_MISSING_FRACTION,
        verify_checksums: true,
    };
    let report = audit::run(&cfg(Site::Usdc), &catalog).unwrap();
    eprintln!("{report}");
    assert_eq!(
        report.dark,
        vec!["017400/017400_00099.raw.h5", "017400/notes.txt"]
    );
    assert_eq!(report.lost.len(), 1);
    assert_eq!(report.lost[0].file, raw_name(4));
    assert_eq!(report.bad.len(), 1);
    assert_eq!(report.bad[0].file, raw_name(7));
    assert!(
        report.bad[0].reason.contains("adler32"),
        "{}",
        report.bad[0].reason
    );
    assert_eq!(
        (report.ok, report.marked, report.refused.is_none()),
        (18, 2, true)
    );
    let state_at = |seq, site| {
        let f = catalog.file(&raw_name(seq)).unwrap();
        catalog
            .replicas_of(f.id)
            .unwrap()
            .into_iter()
            .find(|r| r.site == site)
            .unwrap()
    };
    let lost = state_at(4, Site::Usdc);
    assert_eq!(lost.state, ReplicaState::Lost);
    assert!(lost.last_error.unwrap().contains("missing"));
    let bad = state_at(7, Site::Usdc);
    assert_eq!(bad.state, ReplicaState::Bad);
    assert!(bad.last_error.unwrap().contains(&raw_name(7)));
    assert!(
        dark.exists() && stray.exists(),
        "the audit deleted something"
    );
    // Audited again: the marked ones are no longer verified, nothing new.
    let again = audit::run(&cfg(Site::Usdc), &catalog).unwrap();
    assert_eq!((again.lost.len(), again.bad.len(), again.marked), (0, 0, 0));

    // UKDC: most files gone (an unmounted or broken listing): nothing is marked.
    for seq in 0..15 {
        std::fs::remove_file(site_file(&data, Site::Ukdc, seq)).unwrap();
    }
    let refused = audit::run(&cfg(Site::Ukdc), &catalog).unwrap();
    eprintln!("{refused}");
    assert_eq!(refused.lost.len(), 15);
    assert_eq!(refused.marked, 0);
    assert!(refused
        .refused
        .as_deref()
        .unwrap()
        .contains("nothing was marked"));
    assert_eq!(
        catalog
            .count_replicas(Site::Ukdc, ReplicaState::Verified)
            .unwrap(),
        20
    );
    // The binary says so with exit code 1.
    let out = tpcflow(dir.path(), &data, &["audit", "--site", "UKDC"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("looks broken"));

    // A lost replica is restored by an explicit retry.
    let mut retry = transfer_cfg(&data);
    retry.destinations = vec![Site::Usdc];
    retry.retry_failed = true;
    let healed = transfer::run(&retry, &catalog).unwrap();
    assert_eq!(healed.verified, 2);
    assert_eq!(state_at(4, Site::Usdc).state, ReplicaState::Verified);
}
