//! Unit tests of the catalog's typed methods on a real SQLite file.

use super::*;

fn catalog() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::init(&dir.path().join("catalog.sqlite")).unwrap();
    (dir, c)
}

fn register(c: &Catalog, run: u32, n: u32) {
    c.upsert_run(
        &RunInfo {
            number: run,
            run_type: RunType::Science,
            start_time: None,
            conditions: Some("v1".into()),
        },
        false,
    )
    .unwrap();
    let files: Vec<NewRawFile> = (0..n)
        .map(|seq| {
            let name = format!("{run:06}_{seq:05}.raw.h5");
            NewRawFile {
                run,
                sequence: seq,
                rel_path: format!("{run:06}/{name}"),
                name,
                size_bytes: 1000 + u64::from(seq),
                adler32: format!("{:08x}", 0xabc0 + seq),
                written_at: Some(now_unix_s() - 1.0),
            }
        })
        .collect();
    c.register_files(&files).unwrap();
}

#[test]
fn registration_is_idempotent_and_creates_a_verified_surf_replica() {
    let (_d, c) = catalog();
    register(&c, 17, 3);
    register(&c, 17, 3);
    let files = c.files_of_run(17).unwrap();
    assert_eq!(files.len(), 3);
    let reps = c.replicas_of(files[0].id).unwrap();
    assert_eq!(reps.len(), 1);
    assert_eq!(
        (reps[0].site, reps[0].state),
        (Site::Surf, ReplicaState::Verified)
    );
    assert_eq!(c.file("/any/dir/000017_00002.raw.h5").unwrap().sequence, 2);
    assert_eq!(
        c.file(&files[1].id.to_string()).unwrap().name,
        files[1].name
    );
    let e = c.file("000099_00000.raw.h5").unwrap_err().to_string();
    assert!(e.contains("000099_00000.raw.h5"), "{e}");
    let runs = c.runs().unwrap();
    assert_eq!((runs[0].files, runs[0].bytes), (3, 3003));
}

#[test]
fn transitions_check_the_current_state_and_name_the_file() {
    let (_d, c) = catalog();
    register(&c, 17, 1);
    let id = c.file("000017_00000.raw.h5").unwrap().id;
    let e = c
        .transition(id, FileState::Transferred, FileState::Processing)
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CatalogError::StateConflict { .. }), "{msg}");
    assert!(
        msg.contains("000017_00000.raw.h5") && msg.contains("registered"),
        "{msg}"
    );
    let e = c
        .transition(id, FileState::Registered, FileState::Processed)
        .unwrap_err();
    assert!(matches!(e, CatalogError::ForbiddenTransition { .. }), "{e}");
    c.transition(id, FileState::Registered, FileState::Transferred)
        .unwrap();
    c.transition(id, FileState::Transferred, FileState::Processing)
        .unwrap();
    assert_eq!(
        c.record_file_failure(id, "segfault", 2).unwrap(),
        FileState::Processing
    );
    assert_eq!(
        c.record_file_failure(id, "segfault again", 2).unwrap(),
        FileState::Failed
    );
    let f = c.file("000017_00000.raw.h5").unwrap();
    assert_eq!(
        (f.attempts, f.last_error.as_deref()),
        (2, Some("segfault again"))
    );
    c.set_salted(id, true).unwrap();
    assert!(c.file("000017_00000.raw.h5").unwrap().salted);
}

#[test]
fn replica_failures_requeue_until_the_cap_then_mark_bad() {
    let (_d, c) = catalog();
    register(&c, 17, 2);
    assert_eq!(c.queue_replicas(Site::Usdc).unwrap(), 2);
    assert_eq!(c.queue_replicas(Site::Usdc).unwrap(), 0);
    let items = c.queued_replicas(Site::Usdc, 2).unwrap();
    let id = items[0].file_id;
    for (i, want) in [ReplicaState::Queued, ReplicaState::Bad]
        .into_iter()
        .enumerate()
    {
        c.replica_transition(
            id,
            Site::Usdc,
            ReplicaState::Queued,
            ReplicaState::Transferring,
            None,
        )
        .unwrap();
        let got = c
            .replica_failed(id, Site::Usdc, &format!("mismatch {i}"), 2)
            .unwrap();
        assert_eq!(got, want);
    }
    assert_eq!(c.queued_replicas(Site::Usdc, 2).unwrap().len(), 1);
    let e = c
        .replica_verified(id, Site::Usdc, 1000, "abc0")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("000017_00000.raw.h5 at USDC") && e.contains("bad"),
        "{e}"
    );
    let e = c
        .replica_transition(
            id,
            Site::Ukdc,
            ReplicaState::Queued,
            ReplicaState::Transferring,
            None,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            CatalogError::UnknownReplica {
                site: Site::Ukdc,
                ..
            }
        ),
        "{e}"
    );
    // An interrupted copy is re-queued; an operator retry resets the budget.
    let other = items[1].file_id;
    c.replica_transition(
        other,
        Site::Usdc,
        ReplicaState::Queued,
        ReplicaState::Transferring,
        None,
    )
    .unwrap();
    assert_eq!(c.requeue_interrupted().unwrap(), 1);
    assert_eq!(c.requeue_failed(Site::Usdc).unwrap(), 1);
    assert_eq!(c.queued_replicas(Site::Usdc, 2).unwrap().len(), 2);
}

#[test]
fn check_constraints_reject_free_text_states() {
    let (_d, c) = catalog();
    register(&c, 17, 1);
    let e = c
        .conn()
        .execute("UPDATE raw_files SET state = 'done'", [])
        .unwrap_err();
    assert!(e.to_string().contains("CHECK"), "{e}");
    let e = c
        .conn()
        .execute("INSERT INTO replicas (file_id, site, path, state, updated_at) VALUES (999, 'USDC', 'x', 'queued', 0)", [])
        .unwrap_err();
    assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
}

#[test]
fn campaigns_jobs_and_outputs() {
    let (_d, c) = catalog();
    register(&c, 17, 1);
    let campaign = c
        .create_campaign(&NewCampaign {
            name: "SR3_autodata_Y2024_W41_PROD-1".into(),
            first_run: 17,
            last_run: 18,
            conditions_tag: "v1".into(),
            lineage_hash: "0123abcd".into(),
        })
        .unwrap();
    c.campaign_transition(campaign, CampaignState::Defined, CampaignState::Active)
        .unwrap();
    let e = c
        .campaign_transition(campaign, CampaignState::Defined, CampaignState::Active)
        .unwrap_err();
    assert!(
        e.to_string().contains("campaign") && e.to_string().contains("active"),
        "{e}"
    );
    assert_eq!(c.campaigns().unwrap()[0].state, CampaignState::Active);

    let job = c
        .insert_job(&NewJob {
            name: "tpcflow-reco-c1-f1".into(),
            campaign_id: Some(campaign),
            task_ids: vec![1],
            attempt: 1,
        })
        .unwrap();
    c.job_submitted(job, 4242).unwrap();
    c.job_transition(job, JobState::Submitted, JobState::Running, None)
        .unwrap();
    let e = c
        .job_transition(job, JobState::Submitted, JobState::Failed, Some("x"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tpcflow-reco-c1-f1") && e.contains("running"),
        "{e}"
    );
    c.job_transition(job, JobState::Running, JobState::Completed, Some("exit 0"))
        .unwrap();
    let done = c.jobs_in_state(JobState::Completed).unwrap();
    assert_eq!(
        (done[0].slurm_id, done[0].task_ids.clone()),
        (Some(4242), vec![1])
    );
    assert!(done[0].submitted_at.is_some() && done[0].finished_at.is_some());

    let file_id = c.file("000017_00000.raw.h5").unwrap().id;
    let out = NewOutput {
        file_id,
        lineage_hash: "0123abcd".into(),
        rq_path: "/rq/000017_00000.rq.h5".into(),
        checksum: "deadbeef".into(),
        events: 10,
    };
    let a = c.record_output(&out).unwrap();
    let b = c.record_output(&NewOutput { events: 11, ..out }).unwrap();
    assert_eq!(a, b);
    assert_eq!(c.outputs_of(file_id).unwrap()[0].events, 11);
}

#[test]
fn salting_and_the_mover_never_overlap_on_a_file() {
    let (_d, c) = catalog();
    register(&c, 21, 2);
    let files = c.files_of_run(21).unwrap();
    let (a, b) = (&files[0], &files[1]);
    c.queue_replicas(Site::Usdc).unwrap();
    let listed = c.queued_replicas(Site::Usdc, 3).unwrap();
    let item_a = listed.iter().find(|i| i.file_id == a.id).unwrap().clone();
    let item_b = listed.iter().find(|i| i.file_id == b.id).unwrap().clone();

    // Salting claims a first: the mover does not start it, and the claim
    // leaves the replica queued.
    assert!(c.begin_salting(a.id, &a.adler32).unwrap());
    assert_eq!(c.begin_copy(&item_a).unwrap(), CopyStart::BeingSalted);
    c.record_salted(a.id, &a.adler32, 2000, "0000beef").unwrap();
    // The listed item carries the old checksum: no copy of it starts.
    assert_eq!(c.begin_copy(&item_a).unwrap(), CopyStart::ChecksumChanged);
    let relisted = c.queued_replicas(Site::Usdc, 3).unwrap();
    let fresh = relisted.iter().find(|i| i.file_id == a.id).unwrap();
    assert_eq!(
        (fresh.adler32.as_str(), fresh.size_bytes),
        ("0000beef", 2000)
    );
    assert_eq!(c.begin_copy(fresh).unwrap(), CopyStart::Started);

    // The mover starts b first: salting cannot claim it any more.
    assert_eq!(c.begin_copy(&item_b).unwrap(), CopyStart::Started);
    assert!(!c.begin_salting(b.id, &b.adler32).unwrap());
    assert!(c.record_salted(b.id, &b.adler32, 1, "1").is_err());
    // A copy whose source changed is retried without counting an attempt.
    c.replica_retry_unchanged(b.id, Site::Usdc, "changed")
        .unwrap();
    let again = c.queued_replicas(Site::Usdc, 3).unwrap();
    let rb = again.iter().find(|i| i.file_id == b.id).unwrap();
    assert_eq!(rb.attempts, 0);
}
