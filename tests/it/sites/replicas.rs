//! Jobs read the replicas of the site they run at. A file whose USDC replica
//! is bad runs, in a campaign at `any`, at UKDC from the UKDC replica; a
//! campaign pinned to USDC has the UKDC replica copied in (its Adler-32
//! verified before the USDC name appears) and reads that. When the UKDC
//! replica turns out corrupt too, the copy-in marks it bad and the file
//! waits: nothing reads unverified bytes.

use std::time::Duration;

use tpcflow::adler::digest_file;
use tpcflow::catalog::{Catalog, ReplicaState, Site, TaskState};

use super::{
    audit, campaign, corrupt, input_lines, pass, passes_until, require_two_sites, sim, total,
    world, UKDC, UKDC_CONF,
};
use crate::common::{cluster_shared, tpcflow_cmd};

fn replica(c: &Catalog, file_id: i64, site: Site) -> tpcflow::catalog::ReplicaRow {
    c.replicas_of(file_id)
        .unwrap()
        .into_iter()
        .find(|r| r.site == site)
        .unwrap()
}

#[test]
fn a_bad_usdc_replica_is_read_at_ukdc_or_copied_in_verified_or_the_file_waits() {
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
    corrupt(&w.root.join("USDC/017530/017530_00000.raw.h5"));
    let said = audit(&w, "USDC");
    assert!(said.contains("1 bad at USDC"), "{said}");
    let progress = |c: &Catalog, name: &str| {
        let p = c.campaign_progress().unwrap();
        let p = p.iter().find(|p| p.campaign.name == name).unwrap();
        (p.done, p.failed)
    };

    // At `any`: the file runs where a verified replica is, UKDC, and reads it there.
    campaign(&w, "anywhere", "17530", &["--site", "any"]);
    let reports = passes_until(&w, Duration::from_secs(120), |c| {
        progress(c, "anywhere") == (3, 0)
    });
    assert_eq!(total(&reports, "copy_ins_queued"), 0, "no copy needed");
    let c = Catalog::open(&w.catalog).unwrap();
    let any = c.campaign_by_name("anywhere").unwrap().unwrap();
    let f0 = c.file("017530_00000.raw.h5").unwrap();
    assert_eq!(
        c.output_site(f0.id, &any.lineage_hash).unwrap().as_deref(),
        Some("UKDC"),
        "the file with a bad USDC replica was processed at UKDC"
    );
    let reads: Vec<String> = input_lines(&w, any.id)
        .into_iter()
        .filter(|l| l.contains("_00000.raw.h5"))
        .collect();
    assert!(!reads.is_empty());
    for l in &reads {
        let (path, adler) = l.split_once('\t').unwrap();
        assert!(path.contains("/UKDC/"), "{l}");
        assert_eq!(adler, f0.adler32, "{l}");
    }
    assert_eq!(replica(&c, f0.id, Site::Usdc).state, ReplicaState::Bad);

    // Pinned to USDC: the UKDC replica is copied in, verified, and read at USDC.
    campaign(&w, "usdc_only", "17530", &["--site", "USDC"]);
    let reports = passes_until(&w, Duration::from_secs(120), |c| {
        progress(c, "usdc_only") == (3, 0)
    });
    assert_eq!(total(&reports, "copy_ins_queued"), 1, "{reports:?}");
    assert_eq!(total(&reports, "copied_in"), 1, "{reports:?}");
    let c = Catalog::open(&w.catalog).unwrap();
    let pinned = c.campaign_by_name("usdc_only").unwrap().unwrap();
    let usdc = replica(&c, f0.id, Site::Usdc);
    assert_eq!(usdc.state, ReplicaState::Verified, "{usdc:?}");
    assert_eq!(usdc.source, Site::Ukdc, "copied in from UKDC: {usdc:?}");
    assert_eq!(usdc.adler32.as_deref(), Some(f0.adler32.as_str()));
    let on_disk = digest_file(&w.root.join("USDC").join(&usdc.path)).unwrap();
    assert_eq!(
        on_disk.adler32, f0.adler32,
        "the USDC bytes are whole again"
    );
    assert_eq!(on_disk.size_bytes, f0.size_bytes);
    assert_eq!(
        c.output_site(f0.id, &pinned.lineage_hash)
            .unwrap()
            .as_deref(),
        Some("USDC")
    );
    let reads: Vec<String> = input_lines(&w, pinned.id)
        .into_iter()
        .filter(|l| l.contains("_00000.raw.h5"))
        .collect();
    assert_eq!(reads.len(), 1, "{reads:?}");
    let (path, adler) = reads[0].split_once('\t').unwrap();
    assert!(path.contains("/USDC/"), "{path}");
    assert_eq!(adler, f0.adler32, "the job verifies its input against it");
    let shown = tpcflow_cmd()
        .args(["catalog", "show", "017530_00000.raw.h5", "--catalog"])
        .arg(&w.catalog)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.lines().any(|l| l.trim_start().starts_with("USDC")
            && l.contains("verified")
            && l.contains("from UKDC")),
        "{shown}"
    );

    // Both replicas bad (UKDC's silently): the copy-in finds it out, marks
    // it bad, and the file waits without spending an attempt.
    sim(&w, 17531, 2, 2);
    pass(&w);
    corrupt(&w.root.join("USDC/017531/017531_00000.raw.h5"));
    audit(&w, "USDC");
    corrupt(&w.root.join("UKDC/017531/017531_00000.raw.h5"));
    campaign(&w, "usdc_waits", "17531", &["--site", "USDC"]);
    let reports = passes_until(&w, Duration::from_secs(120), |c| {
        progress(c, "usdc_waits").0 == 1
    });
    let reports = [reports, vec![pass(&w)]].concat();
    assert_eq!(total(&reports, "copy_ins_queued"), 1, "{reports:?}");
    assert_eq!(total(&reports, "copied_in"), 0, "{reports:?}");
    let c = Catalog::open(&w.catalog).unwrap();
    let waits = c.campaign_by_name("usdc_waits").unwrap().unwrap();
    let g0 = c.file("017531_00000.raw.h5").unwrap();
    let ukdc = replica(&c, g0.id, Site::Ukdc);
    assert_eq!(ukdc.state, ReplicaState::Bad, "{ukdc:?}");
    assert!(
        ukdc.last_error
            .as_deref()
            .unwrap_or("")
            .contains("found corrupt while copying it to USDC"),
        "{ukdc:?}"
    );
    let usdc = replica(&c, g0.id, Site::Usdc);
    assert_eq!(usdc.state, ReplicaState::Bad, "{usdc:?}");
    assert!(
        usdc.last_error
            .as_deref()
            .unwrap_or("")
            .contains("copy from UKDC failed"),
        "{usdc:?}"
    );
    assert!(
        !w.root
            .join("USDC")
            .join(&usdc.path)
            .with_file_name(".017531_00000.raw.h5.tmp")
            .exists(),
        "no temporary left behind"
    );
    let waiting = c.tasks_in_state(waits.id, TaskState::Queued).unwrap();
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].file_name.contains("_00000"));
    assert_eq!(waiting[0].attempts, 0);
    assert!(
        input_lines(&w, waits.id)
            .iter()
            .all(|l| !l.contains("017531_00000")),
        "no job read the corrupt file"
    );
}
