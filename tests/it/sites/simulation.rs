//! A simulation production campaign: 40 files made by SLURM job arrays of
//! `tpcflow sim` at both sites are the files `tpcflow sim` writes by hand
//! with the same seed (same Adler-32), catalogued as a simulated run (never
//! salted, never in the detector's run counts or prompt processing), copied
//! to the other destinations and reconstructed.

use std::time::Duration;

use tpcflow::adler::digest_file;
use tpcflow::catalog::{CampaignState, Catalog, JobKind, JobState, ReplicaState, Site, TaskState};

use super::{passes_until, require_two_sites, sim, total, world, UKDC, UKDC_CONF};
use crate::common::{cluster_shared, scratch, tpcflow_cmd};
use crate::web::fixture::get_json;

const FILES: u32 = 40;

#[test]
fn a_simulation_campaign_of_40_files_matches_sim_by_hand_and_is_reconstructed() {
    if !require_two_sites() {
        return;
    }
    let _default = cluster_shared();
    let _ukdc = UKDC.read().unwrap_or_else(|p| p.into_inner());
    let w = world(
        "sites-simulation",
        &format!(
            "prompt_conditions = \"v1\"\nfiles_per_job = 4\narray_min_jobs = 2\narray_throttle = 4\n\
             max_queued_jobs = 4\nbackoff_s = 0.0\nnodes = 1\nntasks = 1\n\
             [sites.USDC]\n[sites.UKDC]\nslurm_conf = \"{UKDC_CONF}\"\n"
        ),
    );
    // Detector data beside it: one science run, prompt-processed.
    sim(&w, 17550, 1, 2);
    let o = tpcflow_cmd()
        .args(["campaign", "create", "--name", "sim_wimp", "--simulate"])
        .args([
            "--source",
            "wimp",
            "--events",
            "2",
            "--files",
            &FILES.to_string(),
        ])
        .args([
            "--seed",
            "7",
            "--conditions",
            "v1",
            "--site",
            "any",
            "--catalog",
        ])
        .arg(&w.catalog)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(said.contains("runs 900000-900000"), "{said}");

    let settled = |c: &Catalog| {
        let p = c.campaign_progress().unwrap();
        let fam = p.iter().find(|p| p.campaign.name == "sim_wimp").unwrap();
        let prompt = p.iter().find(|p| p.prompt).unwrap();
        fam.campaign.state == CampaignState::Complete && prompt.done == 1
    };
    let reports = passes_until(&w, Duration::from_secs(300), settled);
    assert_eq!(total(&reports, "sim_files_made"), u64::from(FILES));
    assert!(total(&reports, "arrays_submitted") >= 2, "{reports:?}");

    let c = Catalog::open(&w.catalog).unwrap();
    let fam = c.campaign_by_name("sim_wimp").unwrap().unwrap();
    let run = fam.first_run;
    assert_eq!((run, fam.last_run), (900_000, 900_000));
    // Job arrays of simulation jobs, one element per file, at both sites.
    let sim_jobs: Vec<_> = c
        .jobs_in_state(JobState::Completed)
        .unwrap()
        .into_iter()
        .filter(|j| j.kind == JobKind::Sim)
        .collect();
    assert_eq!(sim_jobs.len(), FILES as usize, "one element per file");
    assert!(sim_jobs.iter().all(|j| j.array_index.is_some()));
    let sims = c.sim_tasks(fam.id).unwrap();
    assert!(sims
        .iter()
        .all(|t| t.state == TaskState::Done && t.attempts == 0));
    let made_at = |s: &str| sims.iter().filter(|t| t.site.as_deref() == Some(s)).count();
    assert!(made_at("USDC") > 0 && made_at("UKDC") > 0, "{sims:?}");
    assert_eq!(made_at("USDC") + made_at("UKDC"), FILES as usize);

    // The same files as `tpcflow sim` by hand with the same seed.
    let hand = scratch("sim-by-hand");
    let o = tpcflow_cmd()
        .args([
            "sim",
            "--run",
            &run.to_string(),
            "--files",
            &FILES.to_string(),
        ])
        .args(["--events-per-file", "2", "--seed", "7", "--source", "wimp"])
        .args(["--conditions", "v1", "--out"])
        .arg(hand.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = c.files_of_run(run).unwrap();
    assert_eq!(files.len(), FILES as usize);
    for f in &files {
        let by_hand = digest_file(&hand.path().join(format!("{run:06}")).join(&f.name)).unwrap();
        assert_eq!(f.adler32, by_hand.adler32, "{}", f.name);
        assert_eq!(f.size_bytes, by_hand.size_bytes, "{}", f.name);
        assert!(!f.salted, "a simulated file is never salted");
        // Made at one site, copied from there to the others, all verified.
        let reps = c.replicas_of(f.id).unwrap();
        let made = sims.iter().find(|t| t.file_id == Some(f.id)).unwrap();
        let made: Site = made.site.as_deref().unwrap().parse().unwrap();
        for site in Site::DESTINATIONS {
            let r = reps.iter().find(|r| r.site == site).unwrap();
            assert_eq!(r.state, ReplicaState::Verified, "{r:?}");
            assert_eq!(r.source, made, "{r:?}");
            let d = digest_file(&w.root.join(site.as_str()).join(&r.path)).unwrap();
            assert_eq!(d.adler32, f.adler32, "{} at {site}", f.name);
        }
        assert!(reps.iter().all(|r| r.site != Site::Surf), "never at SURF");
        // Reconstructed once, with the family's lineage.
        let outs = c.outputs_of(f.id).unwrap();
        assert_eq!(outs.len(), 1, "{outs:?}");
        assert_eq!(outs[0].lineage_hash, fam.lineage_hash);
    }
    let p = c.campaign_progress().unwrap();
    let fp = p.iter().find(|p| p.campaign.name == "sim_wimp").unwrap();
    assert_eq!((fp.tasks, fp.done, fp.failed), (40, 40, 0));
    let sp = fp.simulation.as_ref().unwrap();
    assert_eq!(
        (sp.files, sp.simulated, sp.failed, sp.in_flight),
        (40, 40, 0, 0)
    );
    // Prompt processing took the detector file only.
    let prompt = p.iter().find(|p| p.prompt).unwrap();
    assert_eq!(prompt.tasks, 1, "{prompt:?}");

    // The status keeps the simulated run out of the detector's run table.
    let o = tpcflow_cmd()
        .args(["status", "--json", "--catalog"])
        .arg(&w.catalog)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs: Vec<u64> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_u64().unwrap())
        .collect();
    assert_eq!(runs, [17550], "{v}");
    let o = tpcflow_cmd()
        .args(["status", "--catalog"])
        .arg(&w.catalog)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("simulation family sim_wimp: complete")
            && text.contains("simulated 40 / failed 0 of 40")
            && text.contains("reconstructed 40 / failed 0 of 40"),
        "{text}"
    );

    // The web: the family with its production; the run table of detector runs only.
    let rt = crate::web::fixture::runtime();
    rt.block_on(async {
        let server = tpcflow::web::spawn(tpcflow::web::ServeConfig {
            catalog: w.catalog.clone(),
            addr: "127.0.0.1:0".parse().unwrap(),
            token: None,
            roots: tpcflow::web::DataRoots::under(&w.root, None).unwrap(),
            conditions: tpcflow::conditions::Conditions::load("v1").unwrap(),
            runs_cache: Duration::from_secs(2),
        })
        .await
        .unwrap();
        let client = crate::web::fixture::http();
        let base = format!("http://{}", server.addr);
        let fams = get_json(&client, &format!("{base}/api/families"), 200).await;
        let fam = fams["families"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "sim_wimp")
            .unwrap()
            .clone();
        assert_eq!(fam["simulation"]["files"], 40, "{fam}");
        assert_eq!(fam["simulation"]["simulated"], 40, "{fam}");
        assert_eq!(fam["done"], 40, "{fam}");
        let runs = get_json(&client, &format!("{base}/api/runs"), 200).await;
        let runs: Vec<u64> = runs["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run"].as_u64().unwrap())
            .collect();
        assert_eq!(runs, [17550]);
        server.stop().await.unwrap();
    });
}
