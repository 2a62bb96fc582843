//! What SLURM says about our jobs, read with as few calls as possible: one
//! `squeue` per pass (all states it still remembers) plus the durable record
//! of finished jobs: one batched `sacct` call when the cluster keeps
//! accounting in slurmdbd (see [`super::accounting`]), else (or when sacct
//! fails) the jobcomp file; indexed by id and by name.
//!
//! sacct lags the controller by a fraction of a second: a job squeue already
//! shows finished that sacct does not yet know as finished counts as still
//! running for this pass, so its final record (memory used, the state a
//! memory kill left) is read from accounting in the next.

use std::collections::HashMap;
use std::path::Path;

use crate::slurm::{parse_record, Client, ClusterConfig, JobState as SlurmState, SlurmError};

/// One job, or one element of a job array, as SLURM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmJob {
    /// SLURM job id; for an array element the array's job id.
    pub id: u64,
    /// Index of the element in its job array.
    pub array_index: Option<u32>,
    /// Job name.
    pub name: String,
    /// State (first word).
    pub state: SlurmState,
    /// `code:signal` when finished.
    pub exit_code: Option<String>,
    /// Reason or node list, for messages.
    pub detail: String,
    /// Largest resident set of its steps [bytes] (sacct only).
    pub max_rss_bytes: Option<u64>,
    /// Where the record came from: `squeue`, `sacct` or `jobcomp`.
    pub source: &'static str,
}

/// A snapshot of SLURM's view, taken once per pass.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    by_id: HashMap<(u64, Option<u32>), SlurmJob>,
    by_name: HashMap<String, u64>,
    /// SLURM client calls made for this snapshot.
    pub calls: u32,
    /// Where finished jobs were read: `sacct` or `jobcomp`.
    pub finished_source: &'static str,
    /// Why sacct was not used although the cluster keeps accounting.
    pub fallback: Option<String>,
}

/// The squeue call of a snapshot: every state it remembers, one line per
/// array element (`-r`), `id|name|state|reason`.
pub const SQUEUE_ARGS: [&str; 6] = ["-h", "-r", "-t", "all", "-o", "%i|%j|%T|%r"];

/// Parse `squeue -h -r -t all -o '%i|%j|%T|%r'` (verbatim output in the tests).
/// An array element prints `{array id}_{index}`.
pub fn parse_squeue(text: &str) -> Vec<SlurmJob> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().splitn(4, '|').collect();
            if f.len() < 3 {
                return None;
            }
            let (id, array_index) = match f[0].split_once('_') {
                // A still-compressed pending range (`123_[4-9%2]`, without -r) names no element.
                Some((id, index)) => (id.parse().ok()?, Some(index.parse().ok()?)),
                None => (f[0].parse().ok()?, None),
            };
            Some(SlurmJob {
                id,
                array_index,
                name: f[1].to_string(),
                state: SlurmState::parse(f[2]),
                exit_code: None,
                detail: f.get(3).unwrap_or(&"").to_string(),
                max_rss_bytes: None,
                source: "squeue",
            })
        })
        .collect()
}

/// Parse one line of the jobcomp/filetxt file (`JobId=.. Name=.. JobState=..`;
/// an array element also has `ArrayJobId=` and `ArrayTaskId=`, and its
/// `JobId` is its own).
pub fn parse_jobcomp_line(line: &str) -> Option<SlurmJob> {
    if !line.starts_with("JobId=") {
        return None;
    }
    let rec = parse_record(line);
    let own: u64 = rec.get("JobId")?.parse().ok()?;
    let array = rec
        .get("ArrayJobId")
        .and_then(|a| a.parse::<u64>().ok())
        .zip(rec.get("ArrayTaskId").and_then(|i| i.parse::<u32>().ok()))
        // SLURM prints NO_VAL (4294967294) and 0 when a job is not in an array.
        .filter(|(a, i)| *a != 0 && *i < u32::MAX - 2);
    Some(SlurmJob {
        id: array.map_or(own, |(a, _)| a),
        array_index: array.map(|(_, i)| i),
        name: rec.get("Name").cloned().unwrap_or_default(),
        state: rec
            .get("JobState")
            .map_or(SlurmState::Unknown, |s| SlurmState::parse(s)),
        exit_code: rec.get("ExitCode").cloned(),
        detail: rec.get("NodeList").cloned().unwrap_or_default(),
        max_rss_bytes: None,
        source: "jobcomp",
    })
}

impl Snapshot {
    /// Take a snapshot of one cluster: `squeue` for what the controller
    /// remembers, then the finished jobs among `open_ids` (the SLURM ids the
    /// catalog still holds open) from `sacct` when the cluster keeps
    /// accounting, else from its jobcomp file (only jobs named
    /// `{name_prefix}...`; the newest record of an id wins).
    ///
    /// # Errors
    /// When `squeue` cannot run, fails, or does not answer within the
    /// client's timeout ([`SlurmError::Unavailable`]): the pass must not
    /// conclude anything about its jobs then. A failing sacct falls back to
    /// the jobcomp file ([`Snapshot::fallback`] says why).
    pub fn take(
        cluster: &ClusterConfig,
        name_prefix: &str,
        client: &Client,
        open_ids: &[u64],
    ) -> Result<Self, SlurmError> {
        let mut snap = Snapshot::default();
        snap.calls += 1;
        let live = parse_squeue(&client.run("squeue", &SQUEUE_ARGS)?);
        let accounted = if cluster.accounting {
            snap.calls += u32::from(!open_ids.is_empty());
            match super::accounting::query(client, open_ids) {
                Ok(jobs) => Some(jobs),
                Err(e) => {
                    snap.fallback = Some(format!("sacct failed, jobcomp file used: {e}"));
                    None
                }
            }
        } else {
            None
        };
        match accounted {
            Some(jobs) => {
                snap.finished_source = "sacct";
                for job in live {
                    snap.insert(job);
                }
                for a in jobs.into_iter().filter(|a| a.name.starts_with(name_prefix)) {
                    if !a.state.is_final() {
                        continue;
                    }
                    snap.insert(SlurmJob {
                        id: a.id,
                        array_index: a.array_index,
                        name: a.name,
                        state: a.state,
                        exit_code: Some(a.exit_code),
                        detail: format!("time limit {}", a.time_limit),
                        max_rss_bytes: a.max_rss_bytes,
                        source: "sacct",
                    });
                }
                // Final in squeue (no exit code: squeue prints none), not yet
                // final in sacct: accounting lags.
                for job in snap.by_id.values_mut() {
                    let lagging = job.state.is_final()
                        && job.exit_code.is_none()
                        && open_ids.contains(&job.id)
                        && job.name.starts_with(name_prefix);
                    if lagging {
                        job.state = SlurmState::Running;
                    }
                }
            }
            None => {
                snap.finished_source = "jobcomp";
                if let Some(path) = &cluster.jobcomp {
                    snap.read_jobcomp(path, name_prefix);
                }
                for job in live {
                    // squeue is newer than jobcomp for a live job; keep jobcomp's exit code.
                    let exit = snap
                        .by_id
                        .get(&(job.id, job.array_index))
                        .filter(|j| j.name == job.name)
                        .and_then(|j| j.exit_code.clone());
                    let source = if exit.is_some() {
                        "jobcomp"
                    } else {
                        job.source
                    };
                    snap.insert(SlurmJob {
                        exit_code: exit.or(job.exit_code.clone()),
                        source,
                        ..job
                    });
                }
            }
        }
        Ok(snap)
    }

    fn read_jobcomp(&mut self, path: &Path, name_prefix: &str) {
        if let Ok(text) = std::fs::read_to_string(path) {
            // The file keeps every job the cluster ever ran: parse only
            // the lines of our jobs (a substring scan is cheap; parsing is not).
            let needle = format!(" Name={name_prefix}");
            for job in text
                .lines()
                .filter(|l| l.contains(&needle))
                .filter_map(parse_jobcomp_line)
            {
                self.insert(job);
            }
        }
    }

    fn insert(&mut self, job: SlurmJob) {
        self.by_name.insert(job.name.clone(), job.id);
        self.by_id.insert((job.id, job.array_index), job);
    }

    /// The job (or array element) with this id, index and name (an id reused
    /// after a state wipe with another name is not ours).
    pub fn job(&self, id: u64, array_index: Option<u32>, name: &str) -> Option<&SlurmJob> {
        self.by_id
            .get(&(id, array_index))
            .filter(|j| j.name == name)
    }

    /// The SLURM id (the array's id for an array) of the newest job with this name.
    pub fn id_by_name(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_output_is_parsed_on_the_first_word_of_the_state() {
        // Verbatim `squeue -h -r -t all -o '%i|%j|%T|%r'` from the local cluster
        // (SLURM 22.05), with a job array `arrtest-x` submitted `--array=0-4%2`.
        let text = "41|tpcflow-c1-j7|RUNNING|None\n42|tpcflow-c1-j8|PENDING|Resources\n\
                    39|tpcflow-c1-j5|COMPLETED|None\n40|tpcflow-c1-j6|CANCELLED|None\n\
                    234_4|arrtest-x|COMPLETED|None\n234_2|arrtest-x|FAILED|NonZeroExitCode\n\
                    234_[0-4%2]|arrtest-x|PENDING|None\n";
        let jobs = parse_squeue(text);
        assert_eq!(
            jobs.len(),
            6,
            "the compressed pending range names no element"
        );
        assert_eq!(jobs[0].state, SlurmState::Running);
        assert_eq!(jobs[1].state, SlurmState::Pending);
        assert_eq!(jobs[1].detail, "Resources");
        assert_eq!(jobs[2].state, SlurmState::Completed);
        assert_eq!(jobs[3].state, SlurmState::Cancelled);
        assert_eq!((jobs[4].id, jobs[4].array_index), (234, Some(4)));
        assert_eq!(jobs[5].state, SlurmState::Failed);
        let mut snap = Snapshot::default();
        for j in jobs {
            snap.insert(j);
        }
        assert!(snap.job(41, None, "tpcflow-c1-j7").is_some());
        assert!(
            snap.job(41, None, "someone-else").is_none(),
            "a reused id with another name is not ours"
        );
        assert_eq!(snap.id_by_name("tpcflow-c1-j8"), Some(42));
        assert_eq!(snap.id_by_name("arrtest-x"), Some(234));
        assert_eq!(
            snap.job(234, Some(2), "arrtest-x").map(|j| j.state),
            Some(SlurmState::Failed)
        );
        assert!(snap.job(234, None, "arrtest-x").is_none());
    }

    #[test]
    fn jobcomp_lines_of_plain_jobs_and_array_elements() {
        // Verbatim from /var/log/slurm/jobcomp.log (jobcomp/filetxt, SLURM 22.05).
        let element = "JobId=237 UserId=root(0) GroupId=root(0) Name=arrtest-x JobState=FAILED \
            Partition=debug TimeLimit=UNLIMITED StartTime=2026-11-28T19:31:00 EndTime=2026-11-28T19:31:02 \
            NodeList=n1 NodeCnt=1 ProcCnt=1 WorkDir=/tmp/arrtest ReservationName= \
            Tres=cpu=1,mem=11449M,node=1,billing=1 Account= QOS= WcKey= Cluster=unknown \
            SubmitTime=2026-11-28T19:30:56 EligibleTime=2026-11-28T19:31:00 ArrayJobId=234 \
            ArrayTaskId=2 DerivedExitCode=0:0 ExitCode=3:0 ";
        let j = parse_jobcomp_line(element).unwrap();
        assert_eq!((j.id, j.array_index), (234, Some(2)));
        assert_eq!(j.state, SlurmState::Failed);
        assert_eq!(j.exit_code.as_deref(), Some("3:0"));
        let plain = "JobId=106 UserId=root(0) GroupId=root(0) Name=tpcflow-1ca7e8-c1-j2 \
            JobState=CANCELLED Partition=debug TimeLimit=1 StartTime=2026-11-28T13:33:08 \
            EndTime=2026-11-28T13:33:08 NodeList=n1 NodeCnt=1 ProcCnt=1 WorkDir=/work/main \
            ReservationName= Tres=cpu=1,mem=11449M,node=1,billing=1 Account= QOS= WcKey= \
            Cluster=unknown SubmitTime=2026-11-28T13:33:08 EligibleTime=2026-11-28T13:33:08 \
            DerivedExitCode=0:0 ExitCode=0:0 ";
        let j = parse_jobcomp_line(plain).unwrap();
        assert_eq!((j.id, j.array_index), (106, None));
        assert_eq!(j.state, SlurmState::Cancelled);
        assert!(parse_jobcomp_line("garbage").is_none());
    }
}
