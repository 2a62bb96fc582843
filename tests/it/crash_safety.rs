//! Writes that fail midway (here: a real full tmpfs) leave the previous state:
//! no half-written key that would lock the vault, the old vault record intact,
//! no temporary left holding the space, nothing incomplete under a final name.

use std::io::Write;
use std::path::{Path, PathBuf};

use tpcflow::conditions::Conditions;
use tpcflow::salt::{Vault, VaultKey};
use tpcflow::sim::{SimOptions, Source};

use crate::full_disk::SmallFs;

/// Fill the file system holding `dir` until it reports ENOSPC; returns the filler.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let page = vec![0u8; 4096];
    loop {
        match f.write_all(&page) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    path
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_key_that_does_not_fit_is_not_left_half_written() {
    let dir = crate::common::scratch("crash-key");
    let fs_dir = dir.path().join("keys");
    let fs = SmallFs::mount(&fs_dir, 64 * 1024);
    let filler = fill(&fs_dir);
    let key = fs_dir.join("salt.key");
    let e = VaultKey::generate(&key).unwrap_err().to_string();
    assert!(e.contains("No space left on device"), "{e}");
    assert!(!key.exists(), "a half-written key is left: {e}");
    assert_eq!(names_in(&fs_dir), ["filler"]);
    std::fs::remove_file(filler).unwrap();
    VaultKey::generate(&key).unwrap();
    VaultKey::load(&key).unwrap();
    drop(fs);
}

#[test]
fn a_vault_record_that_does_not_fit_keeps_the_old_one_and_leaves_no_temporary() {
    let dir = crate::common::scratch("crash-vault");
    let key = VaultKey::generate(&dir.path().join("salt.key")).unwrap();
    let fs_dir = dir.path().join("vault");
    let fs = SmallFs::mount(&fs_dir, 512 * 1024);
    let vault = Vault::open(&fs_dir, key).unwrap();
    vault.write("a.vault", &vec![1u32; 10]).unwrap();
    let filler = fill(&fs_dir);
    let e = vault
        .write("a.vault", &vec![2u32; 50_000])
        .unwrap_err()
        .to_string();
    assert!(e.contains("No space left on device"), "{e}");
    assert_eq!(
        vault.read::<Vec<u32>>("a.vault").unwrap(),
        Some(vec![1u32; 10])
    );
    assert_eq!(names_in(&fs_dir), ["a.vault", "filler"]);
    std::fs::remove_file(filler).unwrap();
    vault.write("a.vault", &vec![2u32; 50_000]).unwrap();
    assert_eq!(
        vault.read::<Vec<u32>>("a.vault").unwrap(),
        Some(vec![2u32; 50_000])
    );
    drop(fs);
}

#[test]
fn raw_files_that_do_not_fit_leave_no_temporary_and_nothing_incomplete() {
    let dir = crate::common::scratch("crash-raw");
    let fs_dir = dir.path().join("surf");
    let fs = SmallFs::mount(&fs_dir, 256 * 1024);
    let opts = SimOptions {
        run: 17411,
        files: 8,
        events_per_file: 20,
        seed: 5,
        out: fs_dir.clone(),
        source: Source::Mixed,
        first_sequence: 0,
        live_rate_hz: None,
    };
    let e = tpcflow::sim::run(&opts, &Conditions::load("v1").unwrap())
        .expect_err("8 files of 20 events do not fit in 256 KiB");
    let e = format!("{e:#}");
    assert!(
        e.contains("No space left on device") || e.contains("HDF5"),
        "{e}"
    );
    let run_dir = fs_dir.join("017411");
    for name in names_in(&run_dir) {
        assert!(
            !tpcflow::catalog::ingest::is_temporary_name(&name),
            "temporary {name} left behind: {e}"
        );
        let path = run_dir.join(&name);
        if name.ends_with(".raw.h5") {
            tpcflow::raw::RawFile::open(&path)
                .unwrap_or_else(|err| panic!("incomplete {name} under its final name: {err}"));
        } else if name.ends_with(".truth.h5") {
            tpcflow::truth::read_truth_file(&path)
                .unwrap_or_else(|err| panic!("incomplete {name} under its final name: {err}"));
        }
    }
    drop(fs);
}
