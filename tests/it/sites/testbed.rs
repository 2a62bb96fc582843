//! The local two-site test bed: a second SLURM cluster beside the default one.

use std::process::Command;
use std::time::Duration;

use super::{require_two_sites, ukdc_ok, ukdc_sacct_final, write_script, UKDC};
use crate::common::{cluster_shared, scratch};

#[test]
fn the_second_site_is_its_own_cluster_with_accounting_in_slurmdbd() {
    if !require_two_sites() {
        return;
    }
    let _default = cluster_shared();
    let _ukdc = UKDC.read().unwrap_or_else(|p| p.into_inner());
    // Two controllers: each lists only its own nodes.
    let own = ukdc_ok("sinfo", &["-h", "-N", "-o", "%N"]);
    let mut own: Vec<&str> = own.lines().collect();
    own.dedup();
    assert_eq!(own, ["u1", "u2"], "ukdc nodes");
    let default = Command::new("sinfo")
        .args(["-h", "-N", "-o", "%N"])
        .output()
        .unwrap();
    let default = String::from_utf8_lossy(&default.stdout).into_owned();
    assert!(
        !default.lines().any(|n| n.starts_with('u')),
        "the default cluster must not list the second site's nodes: {default}"
    );
    assert!(
        ukdc_ok("scontrol", &["show", "config"])
            .lines()
            .any(|l| l.starts_with("ClusterName") && l.trim_end().ends_with("ukdc")),
        "ClusterName=ukdc"
    );

    // A job there runs on its nodes and is known to its accounting.
    let dir = scratch("ukdc-bed");
    let script = write_script(dir.path(), "job.sh", "echo cluster=$SLURM_CLUSTER_NAME");
    let log = dir.path().join("job.log");
    let id: u64 = ukdc_ok(
        "sbatch",
        &[
            "--parsable",
            "-J",
            "tpcflow-bed",
            "-o",
            log.to_str().unwrap(),
            script.to_str().unwrap(),
        ],
    )
    .trim()
    .parse()
    .expect("sbatch --parsable prints the id");
    let line = ukdc_sacct_final(id, Duration::from_secs(60));
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f[0], "COMPLETED", "{line}");
    assert!(f[2] == "u1" || f[2] == "u2", "ran on a ukdc node: {line}");
    assert_eq!(f[3], "ukdc", "{line}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().trim(),
        "cluster=ukdc"
    );
    // The default cluster never heard of it.
    let q = Command::new("squeue")
        .args(["-h", "-t", "all", "-n", "tpcflow-bed", "-o", "%i"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&q.stdout).trim().is_empty(),
        "the default cluster lists a ukdc job"
    );

    // Idempotent: a second run changes nothing.
    let again = Command::new(super::repo().join("scripts/setup-ukdc.sh"))
        .output()
        .unwrap();
    assert!(again.status.success());
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(said.contains("[nothing changed]"), "{said}");
}
