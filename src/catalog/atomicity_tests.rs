//! Each catalog state change that spans several statements is one
//! transaction: a failure injected into a later statement (an SQLite trigger
//! that RAISEs, on a real catalog file) rolls the earlier ones back, so a
//! crash between them cannot leave e.g. a failed job whose tasks stay in
//! `submitting` forever.

use super::*;

fn catalog() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::init(&dir.path().join("catalog.sqlite")).unwrap();
    (dir, c)
}

/// Run 17 with `n` transferred files and a campaign over it (prompt or not)
/// with a queued task per file. Returns (campaign, task ids).
fn campaign_with_tasks(c: &Catalog, n: u32, prompt: bool) -> (CampaignRow, Vec<i64>) {
    c.upsert_run(
        &RunInfo {
            number: 17,
            run_type: RunType::Science,
            start_time: None,
            conditions: Some("v1".into()),
        },
        false,
    )
    .unwrap();
    let files: Vec<NewRawFile> = (0..n)
        .map(|seq| {
            let name = format!("000017_{seq:05}.raw.h5");
            NewRawFile {
                run: 17,
                sequence: seq,
                rel_path: format!("000017/{name}"),
                name,
                size_bytes: 1000,
                adler32: format!("{:08x}", 0xabc0 + seq),
                written_at: None,
            }
        })
        .collect();
    c.register_files(&files).unwrap();
    for f in c.files_of_run(17).unwrap() {
        c.transition(f.id, FileState::Registered, FileState::Transferred)
            .unwrap();
    }
    let id = c
        .create_configured_campaign(
            &NewCampaign {
                name: "PROD-1".into(),
                first_run: 17,
                last_run: 17,
                conditions_tag: "v1".into(),
                lineage_hash: "0123abcd".into(),
            },
            "{}",
            prompt,
        )
        .unwrap();
    c.campaign_transition(id, CampaignState::Defined, CampaignState::Active)
        .unwrap();
    let campaign = c.campaign_by_name("PROD-1").unwrap().unwrap();
    assert_eq!(
        c.queue_campaign_tasks(&campaign, false).unwrap(),
        n as usize
    );
    let tasks = c
        .tasks_in_state(id, TaskState::Queued)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    (campaign, tasks)
}

/// Make every `UPDATE` of `table` (matching `when`) fail, as a crash there would.
fn fail_updates_of(c: &Catalog, table: &str, when: &str) {
    c.conn()
        .execute_batch(&format!(
            "CREATE TRIGGER injected_failure BEFORE UPDATE ON {table} WHEN {when}
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        ))
        .unwrap();
}

fn heal(c: &Catalog) {
    c.conn()
        .execute_batch("DROP TRIGGER injected_failure")
        .unwrap();
}

fn text(c: &Catalog, sql: &str) -> Vec<String> {
    let conn = c.conn();
    let mut st = conn.prepare(sql).unwrap();
    let rows = st.query_map([], |r| r.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

fn assert_injected(e: &CatalogError) {
    assert!(
        e.to_string().contains("injected failure") || format!("{e:?}").contains("injected failure"),
        "{e:?}"
    );
}

#[test]
fn a_job_never_submitted_fails_together_with_requeueing_its_tasks() {
    let (_d, c) = catalog();
    let (campaign, tasks) = campaign_with_tasks(&c, 2, false);
    let (job, _) = c.begin_job(campaign.id, "tpcflow", &tasks, 1).unwrap();
    fail_updates_of(&c, "tasks", "1");
    let e = c.job_never_submitted(job, "sbatch refused").unwrap_err();
    assert_injected(&e);
    assert_eq!(text(&c, "SELECT state FROM jobs"), ["pending"]);
    assert_eq!(
        text(&c, "SELECT state FROM tasks ORDER BY id"),
        ["submitting", "submitting"]
    );
    // Once the cause is gone, the same step completes (what reconciliation does).
    heal(&c);
    c.job_never_submitted(job, "sbatch refused").unwrap();
    assert_eq!(text(&c, "SELECT state FROM jobs"), ["failed"]);
    assert_eq!(
        text(&c, "SELECT state FROM tasks ORDER BY id"),
        ["queued", "queued"]
    );
}

#[test]
fn the_elements_of_an_array_never_submitted_fail_in_one_transaction() {
    let (_d, c) = catalog();
    let (campaign, tasks) = campaign_with_tasks(&c, 2, false);
    let (_, jobs) = c
        .begin_array(
            campaign.id,
            "tpcflow",
            &[(vec![tasks[0]], 1), (vec![tasks[1]], 1)],
        )
        .unwrap();
    let ids: Vec<i64> = jobs.iter().map(|j| j.0).collect();
    fail_updates_of(&c, "tasks", &format!("OLD.job_id = {}", ids[1]));
    let e = c.jobs_never_submitted(&ids, "sbatch refused").unwrap_err();
    assert_injected(&e);
    assert_eq!(
        text(&c, "SELECT state FROM jobs ORDER BY id"),
        ["pending", "pending"]
    );
    assert_eq!(
        text(&c, "SELECT state FROM tasks ORDER BY id"),
        ["submitting", "submitting"]
    );
    heal(&c);
    c.jobs_never_submitted(&ids, "sbatch refused").unwrap();
    assert_eq!(
        text(&c, "SELECT state FROM tasks ORDER BY id"),
        ["queued", "queued"]
    );
}

#[test]
fn a_job_submission_records_its_state_and_slurm_id_together() {
    let (_d, c) = catalog();
    let job = c
        .insert_job(&NewJob {
            name: "tpcflow-j1".into(),
            campaign_id: None,
            task_ids: vec![],
            attempt: 1,
        })
        .unwrap();
    fail_updates_of(&c, "jobs", "NEW.slurm_id IS NOT NULL");
    assert_injected(&c.job_submitted(job, 4242).unwrap_err());
    assert_eq!(
        text(
            &c,
            "SELECT state || ' ' || coalesce(slurm_id, '-') FROM jobs"
        ),
        ["pending -"]
    );
}

#[test]
fn retrying_failed_tasks_resets_files_and_tasks_together() {
    let (_d, c) = catalog();
    let (campaign, tasks) = campaign_with_tasks(&c, 1, true);
    c.begin_job(campaign.id, "tpcflow", &tasks, 1).unwrap();
    assert_eq!(
        c.task_failed(tasks[0], "reco crashed", 1, 0.0).unwrap(),
        TaskState::Failed
    );
    assert_eq!(text(&c, "SELECT state FROM raw_files"), ["failed"]);
    fail_updates_of(&c, "tasks", "1");
    assert_injected(&c.retry_failed_tasks(campaign.id).unwrap_err());
    assert_eq!(text(&c, "SELECT state FROM raw_files"), ["failed"]);
    assert_eq!(text(&c, "SELECT state FROM tasks"), ["failed"]);
    heal(&c);
    assert_eq!(c.retry_failed_tasks(campaign.id).unwrap(), 1);
    assert_eq!(text(&c, "SELECT state FROM raw_files"), ["transferred"]);
    assert_eq!(text(&c, "SELECT state FROM tasks"), ["queued"]);
}

#[test]
fn cancelling_a_campaign_cancels_its_queued_tasks_in_the_same_transaction() {
    let (_d, c) = catalog();
    let (campaign, _) = campaign_with_tasks(&c, 2, false);
    fail_updates_of(&c, "tasks", "1");
    assert_injected(&c.cancel_campaign(&campaign).unwrap_err());
    assert_eq!(text(&c, "SELECT state FROM campaigns"), ["active"]);
    assert_eq!(
        text(&c, "SELECT state FROM tasks ORDER BY id"),
        ["queued", "queued"]
    );
    heal(&c);
    assert!(c.cancel_campaign(&campaign).unwrap().is_empty());
    assert_eq!(text(&c, "SELECT state FROM campaigns"), ["cancelled"]);
    assert_eq!(
        text(&c, "SELECT state FROM tasks ORDER BY id"),
        ["cancelled", "cancelled"]
    );
}

#[test]
fn a_campaign_is_created_with_its_configuration_or_not_at_all() {
    let (_d, c) = catalog();
    fail_updates_of(&c, "campaigns", "1");
    let new = NewCampaign {
        name: "PROD-2".into(),
        first_run: 1,
        last_run: 2,
        conditions_tag: "v1".into(),
        lineage_hash: "0123abcd".into(),
    };
    assert_injected(
        &c.create_configured_campaign(&new, "{\"threads\": 2}", true)
            .unwrap_err(),
    );
    assert!(c.campaign_by_name("PROD-2").unwrap().is_none());
    heal(&c);
    let id = c
        .create_configured_campaign(&new, "{\"threads\": 2}", true)
        .unwrap();
    assert_eq!(
        c.campaign_extras(id).unwrap(),
        ("{\"threads\": 2}".to_string(), true)
    );
}
