//! Real flock locks through the `tpcflow` binary: a salting pass and a mover
//! refuse clearly while another holds the lock, a lock file left behind by a
//! dead pass blocks nothing, and two concurrent passes leave the vault
//! ledger, the raw files, the catalog and the destinations consistent.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use tpcflow::adler::{digest_file, same_checksum};
use tpcflow::catalog::{Catalog, ReplicaState, Site};
use tpcflow::salt::{RunLedger, SaltRecord, Vault, VaultKey};

use crate::blinding::{ok_in, sim_run, tpcflow_in};
use crate::common::*;

const RUN: u32 = 17610;
const FILES: u32 = 4;

/// Hold an exclusive flock on `path` (another open file description than
/// the binary's, so the kernel makes them conflict), as a running pass would.
fn hold_lock(path: &Path) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    file.try_lock().expect("the lock is free");
    file
}

fn release(holder: std::fs::File) {
    holder.unlock().unwrap();
}

fn spawn(catalog: &Path, data: &Path, args: &[&str]) -> Child {
    Command::new(tpcflow_bin())
        .args(args)
        .env("TPCFLOW_CATALOG", catalog)
        .env("TPCFLOW_DATA_ROOT", data)
        .env("TPCFLOW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two passes at once: each succeeds or refuses naming the lock; at least one succeeds.
fn run_two_at_once(catalog: &Path, data: &Path, args: &[&str]) {
    let (a, b) = (spawn(catalog, data, args), spawn(catalog, data, args));
    let mut succeeded = 0;
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{args:?}: {:?}\n{err}", out.status);
        if out.status.success() {
            succeeded += 1;
        } else {
            assert!(err.contains("is already running"), "{err}");
        }
    }
    assert!(succeeded >= 1, "neither concurrent {args:?} pass ran");
}

#[test]
fn salting_passes_exclude_each_other_with_a_real_lock() {
    let dir = scratch("locks-salt");
    let (d, data) = (dir.path(), dir.path().join("data"));
    let catalog = d.join("catalog.sqlite");
    sim_run(&data, RUN, FILES, false);
    ok_in(&catalog, &data, &["catalog", "init"]);
    ok_in(&catalog, &data, &["catalog", "ingest"]);
    let (key, vault) = (d.join("salt.key"), d.join("vault"));
    let (key_s, vault_s) = (key.to_str().unwrap(), vault.to_str().unwrap());
    ok_in(
        &catalog,
        &data,
        &[
            "salt", "keygen", "--key", key_s, "--vault", vault_s, "--rate", "0.2",
        ],
    );
    let pass = ["salt", "--key", key_s, "--vault", vault_s];
    let lock = vault.join("salt.lock");

    // A live holder: the pass refuses, names the lock, and salts nothing.
    let holder = hold_lock(&lock);
    let out = tpcflow_in(&catalog, &data, &pass);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is already running") && err.contains("salt.lock"),
        "{err}"
    );
    let c = Catalog::open(&catalog).unwrap();
    assert!(c.files_of_run(RUN).unwrap().iter().all(|f| !f.salted));
    release(holder);

    // A lock file left by a dead pass, naming a pid now in use: no lock is held.
    std::fs::write(&lock, "1\n").unwrap();
    // Two passes at once: one salts, the other waits its turn or refuses.
    run_two_at_once(&catalog, &data, &pass);
    let out = ok_in(&catalog, &data, &pass);
    assert!(out.contains("0 science file(s) salted"), "{out}");

    // Ledger, vault records, SURF bytes and catalog agree, file by file.
    let v = Vault::open(&vault, VaultKey::load(&key).unwrap()).unwrap();
    let ledger = RunLedger::load(&v, RUN).unwrap();
    let seqs: Vec<u32> = ledger.files.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (0..FILES).collect::<Vec<_>>(), "ledger: {ledger:?}");
    let mut next_first = None;
    for f in c.files_of_run(RUN).unwrap() {
        assert!(f.salted, "{} not salted", f.name);
        let rec: SaltRecord = v
            .read(&SaltRecord::vault_name(RUN, f.sequence))
            .unwrap()
            .unwrap();
        let at_surf =
            digest_file(&data.join("SURF").join(format!("{RUN:06}")).join(&f.name)).unwrap();
        assert!(
            same_checksum(&rec.salted_adler32, &at_surf.adler32),
            "{}",
            f.name
        );
        assert!(same_checksum(&f.adler32, &at_surf.adler32), "{}", f.name);
        let e = &ledger.files[f.sequence as usize];
        if let Some(first) = next_first {
            assert_eq!(e.original_first_id, first, "ledger ids of {}", f.name);
        }
        next_first = Some(e.original_last_id + 1);
    }
    assert!(!vault
        .join(format!("{RUN:06}"))
        .read_dir()
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    let staging_left = std::fs::read_dir(data.join("SURF").join(format!("{RUN:06}")))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".salting"));
    assert!(!staging_left, "a staging file was left behind");
}

#[test]
fn a_second_mover_refuses_while_one_holds_the_catalog() {
    let dir = scratch("locks-transfer");
    let (d, data) = (dir.path(), dir.path().join("data"));
    let catalog = d.join("catalog.sqlite");
    sim_run(&data, RUN, FILES, false);
    ok_in(&catalog, &data, &["catalog", "init"]);
    ok_in(&catalog, &data, &["catalog", "ingest"]);

    let holder = hold_lock(Path::new(&format!("{}.transfer.lock", catalog.display())));
    let out = tpcflow_in(&catalog, &data, &["transfer"]);
    assert!(!out.status.success(), "a second mover ran");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a mover on") && err.contains("is already running"),
        "{err}"
    );
    for site in Site::DESTINATIONS {
        assert!(
            !data.join(site.as_str()).exists(),
            "the refused mover wrote to {site}"
        );
    }
    // Retention takes the same lock.
    let out = tpcflow_in(
        &catalog,
        &data,
        &["retire", "--site", "SURF", "--grace-s", "0"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already running"));
    release(holder);

    run_two_at_once(&catalog, &data, &["transfer", "--parallel", "2"]);
    ok_in(&catalog, &data, &["transfer"]);
    let c = Catalog::open(&catalog).unwrap();
    for site in Site::DESTINATIONS {
        assert_eq!(
            c.count_replicas(site, ReplicaState::Verified).unwrap(),
            u64::from(FILES)
        );
        let tmp_left = std::fs::read_dir(data.join(site.as_str()).join(format!("{RUN:06}")))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"));
        assert!(!tmp_left, "temporary file left at {site}");
    }
}
