//! Jobs read the replicas of the site they run at: a file whose USDC replica
//! is bad runs at UKDC from the UKDC replica (its catalogued checksum in the
//! job's input list, which the reco job verifies); a campaign pinned to USDC
//! leaves that file waiting instead of reading unverified data.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use tpcflow::catalog::{Catalog, TaskState};

use super::{campaign, pass, passes_until, require_two_sites, sim, world, UKDC, UKDC_CONF};
use crate::common::{cluster_shared, tpcflow_cmd};

#[test]
fn a_bad_usdc_replica_is_read_at_ukdc_and_a_pinned_campaign_waits() {
    if !require_two_sites() {
        return;
    }
    let _default = cluster_shared();
    let _ukdc = UKDC.read().unwrap_or_else(|p| p.into_inner());
    let w = world(
        "sites-replicas",
        &format!(
            "prompt_conditions = \"\"\nfiles_per_job = 1\narray_min_jobs = 0\nbackoff_s = 0.0\n\
             nodes = 1\nntasks = 1\n[sites.USDC]\n[sites.UKDC]\nslurm_conf = \"{UKDC_CONF}\"\n"
        ),
    );
    sim(&w, 17530, 3, 2);
    // Ingest and transfer to every site (no campaign yet: nothing runs).
    pass(&w);
    let bad = w.root.join("USDC/017530/017530_00000.raw.h5");
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&bad)
            .unwrap_or_else(|e| panic!("{}: {e}", bad.display()));
        let len = f.metadata().unwrap().len();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        let mut b = [0u8; 1];
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&[b[0] ^ 0xff]).unwrap();
    }
    let o = tpcflow_cmd()
        .args([
            "audit",
            "--site",
            "USDC",
            "--max-missing-fraction",
            "1",
            "--catalog",
        ])
        .arg(&w.catalog)
        .arg("--data-root")
        .arg(&w.root)
        .output()
        .unwrap();
    // Exit 3: a discrepancy found (and the replica marked bad).
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 bad at USDC"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    campaign(&w, "anywhere", "17530", &["--site", "any"]);
    campaign(&w, "usdc_only", "17530", &["--site", "USDC"]);
    let progress = |c: &Catalog, name: &str| {
        let p = c.campaign_progress().unwrap();
        let p = p.iter().find(|p| p.campaign.name == name).unwrap();
        (p.done, p.failed)
    };
    passes_until(&w, Duration::from_secs(120), |c| {
        progress(c, "anywhere") == (3, 0) && progress(c, "usdc_only").0 == 2
    });
    let c = Catalog::open(&w.catalog).unwrap();
    let any = c.campaign_by_name("anywhere").unwrap().unwrap();
    let f0 = c.file("017530_00000.raw.h5").unwrap();
    assert_eq!(
        c.output_site(f0.id, &any.lineage_hash).unwrap().as_deref(),
        Some("UKDC"),
        "the file with a bad USDC replica was processed at UKDC"
    );
    // Its job read the UKDC replica, with the catalogued checksum to verify.
    let mut lists = Vec::new();
    for dir in std::fs::read_dir(w.root.join("jobs")).unwrap() {
        let list = dir.unwrap().path().join("inputs.txt");
        if let Ok(text) = std::fs::read_to_string(&list) {
            lists.extend(text.lines().map(str::to_string));
        }
    }
    let reads: Vec<&String> = lists
        .iter()
        .filter(|l| l.contains("_00000.raw.h5"))
        .collect();
    assert!(!reads.is_empty());
    for l in &reads {
        let (path, adler) = l.split_once('\t').unwrap();
        assert!(path.contains("/UKDC/"), "{l}");
        assert_eq!(adler, f0.adler32, "{l}");
    }
    // The campaign pinned to USDC waits for a verified USDC replica: not failed.
    let pinned = c.campaign_by_name("usdc_only").unwrap().unwrap();
    let waiting = c.tasks_in_state(pinned.id, TaskState::Queued).unwrap();
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].file_name.contains("_00000"));
    assert_eq!(waiting[0].attempts, 0);
}
