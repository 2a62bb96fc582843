//! RQ outputs are catalogued with the site that made them and replicated to
//! the other processing site, checksum verified, through the transfer
//! machinery: an output made at UKDC gets a verified replica at USDC, and
//! one made at USDC a verified replica at UKDC.

use std::time::Duration;

use tpcflow::adler::digest_file;
use tpcflow::catalog::{Catalog, ReplicaState, Site};

use super::{campaign, passes_until, require_two_sites, sim, total, world, UKDC, UKDC_CONF};
use crate::common::{cluster_shared, tpcflow_cmd};

#[test]
fn outputs_made_at_one_site_get_a_verified_replica_at_the_other() {
    if !require_two_sites() {
        return;
    }
    let _default = cluster_shared();
    let _ukdc = UKDC.read().unwrap_or_else(|p| p.into_inner());
    let w = world(
        "sites-outputs",
        &format!(
            "prompt_conditions = \"\"\nfiles_per_job = 1\narray_min_jobs = 0\nbackoff_s = 0.0\n\
             nodes = 1\nntasks = 1\n[sites.USDC]\n[sites.UKDC]\nslurm_conf = \"{UKDC_CONF}\"\n"
        ),
    );
    sim(&w, 17540, 1, 2);
    sim(&w, 17541, 1, 2);
    campaign(&w, "made_at_ukdc", "17540", &["--site", "UKDC"]);
    campaign(&w, "made_at_usdc", "17541", &["--site", "USDC"]);
    let replicated = |c: &Catalog| {
        ["017540_00000.raw.h5", "017541_00000.raw.h5"]
            .iter()
            .all(|name| {
                let f = c.file(name).unwrap();
                c.outputs_of(f.id).unwrap().iter().any(|o| {
                    let r = c.output_replicas_of(o.id).unwrap();
                    r.len() == 2 && r.iter().all(|r| r.state == ReplicaState::Verified)
                })
            })
    };
    let reports = passes_until(&w, Duration::from_secs(120), replicated);
    assert_eq!(total(&reports, "outputs_replicated"), 2, "{reports:?}");

    let c = Catalog::open(&w.catalog).unwrap();
    // Each site writes under its own RQ root: USDC the dispatcher's, UKDC its storage's.
    let rq_root = |s: Site| match s {
        Site::Usdc => w.root.join("RQ"),
        _ => w.root.join("UKDC/RQ"),
    };
    for (name, made, other) in [
        ("017540_00000.raw.h5", Site::Ukdc, Site::Usdc),
        ("017541_00000.raw.h5", Site::Usdc, Site::Ukdc),
    ] {
        let f = c.file(name).unwrap();
        let outputs = c.outputs_of(f.id).unwrap();
        assert_eq!(outputs.len(), 1, "{outputs:?}");
        let o = &outputs[0];
        assert_eq!(o.site, Some(made), "{o:?}");
        assert!(
            o.rq_path.starts_with(rq_root(made).to_str().unwrap()),
            "{o:?}"
        );
        let reps = c.output_replicas_of(o.id).unwrap();
        let at = |s: Site| reps.iter().find(|r| r.site == s).unwrap();
        assert_eq!(at(made).source, None, "made there: {reps:?}");
        assert_eq!(at(other).source, Some(made), "copied from there: {reps:?}");
        assert_eq!(at(made).path, at(other).path);
        for s in [made, other] {
            let r = at(s);
            assert_eq!(r.state, ReplicaState::Verified, "{r:?}");
            assert_eq!(r.adler32, o.checksum);
            let d = digest_file(&rq_root(s).join(&r.path)).unwrap();
            assert_eq!(d.adler32, o.checksum, "{s}: the bytes are the output's");
            assert_eq!(d.size_bytes, r.size_bytes);
        }
        // Visible in the catalog.
        let shown = tpcflow_cmd()
            .args(["catalog", "show", name, "--json", "--catalog"])
            .arg(&w.catalog)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        let o = &v["outputs"][0];
        assert_eq!(o["site"], made.as_str(), "{v}");
        let sites: Vec<(&str, &str)> = o["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["site"].as_str().unwrap(), r["state"].as_str().unwrap()))
            .collect();
        assert_eq!(sites, [("UKDC", "verified"), ("USDC", "verified")], "{v}");
    }
    // The event display reads USDC's RQ root: an output made at UKDC through
    // its USDC replica (a path relative to that root).
    let shown = c.outputs_of_run(17540, None).unwrap();
    assert_eq!(shown.len(), 1);
    assert!(!shown[0].rq_path.starts_with('/'), "{shown:?}");
    assert!(w.root.join("RQ").join(&shown[0].rq_path).is_file());
}
