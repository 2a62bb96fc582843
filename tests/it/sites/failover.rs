//! Both sites process a campaign at `any`; one site's controller stops
//! mid-campaign (the second cluster's, which these tests own): its work moves
//! to the other site, nothing is lost or catalogued twice, the status shows
//! the outage; a drained site gets no new work.

use std::process::Command;
use std::time::{Duration, Instant};

use tpcflow::catalog::{Catalog, JobState, Site, TaskState};

use super::{campaign, pass, require_two_sites, sim, world, UKDC, UKDC_CONF};
use crate::common::{cluster_shared, tpcflow_cmd};

/// Restarts the second cluster when dropped (also when the test fails).
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = Command::new(super::repo().join("scripts/setup-ukdc.sh")).status();
    }
}

fn settings() -> String {
    format!(
        "prompt_conditions = \"\"\nfiles_per_job = 1\narray_min_jobs = 0\nmax_queued_jobs = 2\n\
         max_submissions_per_pass = 2\nbackoff_s = 0.0\nslurm_timeout_s = 3.0\n\
         slurm_retry_s = 1.0\nslurm_retry_max_s = 2.0\nlost_after_s = 4.0\nnodes = 1\nntasks = 1\n\
         [sites.USDC]\n[sites.UKDC]\nslurm_conf = \"{UKDC_CONF}\"\n"
    )
}

fn status_json(catalog: &std::path::Path) -> serde_json::Value {
    let o = tpcflow_cmd()
        .args(["status", "--json", "--catalog"])
        .arg(catalog)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn site_of_outputs(c: &Catalog, campaign: &str) -> Vec<Option<String>> {
    let camp = c.campaign_by_name(campaign).unwrap().unwrap();
    c.tasks_in_state(camp.id, TaskState::Done)
        .unwrap()
        .iter()
        .map(|t| c.output_site(t.file_id, &camp.lineage_hash).unwrap())
        .collect()
}

#[test]
fn a_campaign_at_any_site_survives_one_controller_stopping() {
    if !require_two_sites() {
        return;
    }
    let _default = cluster_shared();
    let _ukdc = UKDC.write().unwrap_or_else(|p| p.into_inner());
    let _restart = Restart;
    let w = world("sites-failover", &settings());
    // Twenty one-file jobs, two in flight per site: work is left for UKDC
    // after its first outputs (with ten, USDC sometimes took the rest).
    sim(&w, 17520, 20, 2);
    campaign(&w, "both", "17520", &["--site", "any"]);

    // Both sites take work from the first pass on.
    let first = pass(&w);
    assert_eq!(first["submitted_at"]["USDC"], 2, "{first}");
    assert_eq!(first["submitted_at"]["UKDC"], 2, "{first}");
    // Run until UKDC has made an output and has work in flight, then stop
    // its controller.
    let start = Instant::now();
    loop {
        let r = pass(&w);
        let c = Catalog::open(&w.catalog).unwrap();
        let made_at_ukdc = site_of_outputs(&c, "both")
            .iter()
            .any(|s| s.as_deref() == Some("UKDC"));
        let active: Vec<i64> = c.active_jobs().unwrap().iter().map(|j| j.id).collect();
        let busy_at_ukdc = !c
            .jobs_at_site(&active, Site::Ukdc, Site::Usdc)
            .unwrap()
            .is_empty();
        if made_at_ukdc && busy_at_ukdc {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{r}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let stop = Command::new(super::repo().join("scripts/stop-ukdc.sh"))
        .arg("--controller-only")
        .status()
        .unwrap();
    assert!(stop.success());
    let in_flight_at_ukdc = {
        let c = Catalog::open(&w.catalog).unwrap();
        let active: Vec<i64> = c.active_jobs().unwrap().iter().map(|j| j.id).collect();
        c.jobs_at_site(&active, Site::Ukdc, Site::Usdc)
            .unwrap()
            .len()
    };
    assert!(
        in_flight_at_ukdc > 0,
        "UKDC had work in flight when it stopped"
    );

    // The rest runs at USDC; the outage shows in the status meanwhile.
    let (mut lost, mut saw_outage) = (0, false);
    let start = Instant::now();
    loop {
        let r = pass(&w);
        lost += r["jobs_lost"].as_u64().unwrap();
        assert_eq!(r["submitted_at"]["UKDC"], serde_json::Value::Null, "{r}");
        let v = status_json(&w.catalog);
        let ukdc = &v["sites"][1];
        assert_eq!(ukdc["site"], "UKDC");
        if ukdc["available"] == false {
            saw_outage = true;
            assert!(
                ukdc["message"]
                    .as_str()
                    .unwrap()
                    .contains("SLURM unavailable since"),
                "{v}"
            );
        }
        let c = Catalog::open(&w.catalog).unwrap();
        let p = c.campaign_progress().unwrap();
        if p[0].done == 20 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "{r}\n{v}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(saw_outage, "tpcflow status showed the UKDC outage");
    assert_eq!(
        lost as usize, in_flight_at_ukdc,
        "every job in flight there declared lost"
    );
    let text = tpcflow_cmd()
        .args(["status", "--catalog"])
        .arg(&w.catalog)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("UKDC: SLURM unavailable since"), "{text}");

    // Every file done once, no attempt spent on the outage, one output each.
    let c = Catalog::open(&w.catalog).unwrap();
    let camp = c.campaign_by_name("both").unwrap().unwrap();
    let done = c.tasks_in_state(camp.id, TaskState::Done).unwrap();
    assert_eq!(done.len(), 20);
    assert!(done.iter().all(|t| t.attempts == 0), "{done:?}");
    for t in &done {
        assert_eq!(c.outputs_of(t.file_id).unwrap().len(), 1, "{}", t.file_name);
    }
    let sites = site_of_outputs(&c, "both");
    assert!(sites.iter().all(Option::is_some), "{sites:?}");
    assert!(sites.iter().any(|s| s.as_deref() == Some("UKDC")));
    assert!(sites.iter().any(|s| s.as_deref() == Some("USDC")));
    let failed = c.jobs_in_state(JobState::Failed).unwrap();
    assert!(
        failed.iter().all(|j| j
            .reason
            .as_deref()
            .unwrap_or("")
            .starts_with("lost at UKDC")),
        "{failed:?}"
    );

    // UKDC answers again: its outage clears.
    drop(_restart);
    let _restart = Restart;
    let start = Instant::now();
    while pass(&w)["slurm_skipped"] == true {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "UKDC answers again"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(status_json(&w.catalog)["sites"][1]["available"], true);

    // Drained, UKDC gets no new work; resumed, it does again.
    let o = tpcflow_cmd()
        .args([
            "site",
            "drain",
            "UKDC",
            "--reason",
            "maintenance",
            "--catalog",
        ])
        .arg(&w.catalog)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = status_json(&w.catalog);
    assert_eq!(v["sites"][1]["drained"], true, "{v}");
    sim(&w, 17521, 3, 2);
    campaign(&w, "drained", "17521", &[]);
    let r = pass(&w);
    assert_eq!(r["submitted_at"]["USDC"], 2, "{r}");
    assert_eq!(r["submitted_at"]["UKDC"], serde_json::Value::Null, "{r}");
    let o = tpcflow_cmd()
        .args(["site", "resume", "UKDC", "--catalog"])
        .arg(&w.catalog)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(status_json(&w.catalog)["sites"][1]["drained"], false);
}
