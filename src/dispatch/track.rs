//! What SLURM says about our jobs, read with as few calls as possible: one
//! `squeue` per pass (all states it still remembers) plus the jobcomp file
//! (the durable record of finished jobs), indexed by id and by name.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::slurm::{parse_record, JobState as SlurmState, SlurmError};

/// One job as SLURM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmJob {
    /// SLURM job id.
    pub id: u64,
    /// Job name.
    pub name: String,
    /// State (first word).
    pub state: SlurmState,
    /// `code:signal` when finished.
    pub exit_code: Option<String>,
    /// Reason or node list, for messages.
    pub detail: String,
}

/// A snapshot of SLURM's view, taken once per pass.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    by_id: HashMap<u64, SlurmJob>,
    by_name: HashMap<String, u64>,
    /// SLURM client calls made for this snapshot.
    pub calls: u32,
}

/// Parse `squeue -h -t all -o '%i|%j|%T|%r'` (verbatim output in the tests).
pub fn parse_squeue(text: &str) -> Vec<SlurmJob> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().splitn(4, '|').collect();
            if f.len() < 3 {
                return None;
            }
            // Array tasks print `123_4`; the dispatcher submits plain jobs.
            let id = f[0].split('_').next()?.parse().ok()?;
            Some(SlurmJob {
                id,
                name: f[1].to_string(),
                state: SlurmState::parse(f[2]),
                exit_code: None,
                detail: f.get(3).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

impl Snapshot {
    /// Take a snapshot: `squeue` for what the controller remembers, then the
    /// jobcomp file for what finished earlier (the newest record of an id wins).
    ///
    /// # Errors
    /// When `squeue` cannot run or fails (the controller is down): the pass
    /// must not conclude anything about its jobs then.
    pub fn take(jobcomp: Option<&Path>) -> Result<Self, SlurmError> {
        let mut snap = Snapshot::default();
        if let Some(path) = jobcomp {
            if let Ok(text) = std::fs::read_to_string(path) {
                for line in text.lines().filter(|l| l.starts_with("JobId=")) {
                    let rec = parse_record(line);
                    let Some(id) = rec.get("JobId").and_then(|v| v.parse().ok()) else {
                        continue;
                    };
                    let job = SlurmJob {
                        id,
                        name: rec.get("Name").cloned().unwrap_or_default(),
                        state: rec
                            .get("JobState")
                            .map_or(SlurmState::Unknown, |s| SlurmState::parse(s)),
                        exit_code: rec.get("ExitCode").cloned(),
                        detail: rec.get("NodeList").cloned().unwrap_or_default(),
                    };
                    snap.insert(job);
                }
            }
        }
        let cmd = "squeue -h -t all -o %i|%j|%T|%r";
        let out = Command::new("squeue")
            .args(["-h", "-t", "all", "-o", "%i|%j|%T|%r"])
            .output()
            .map_err(|source| SlurmError::Spawn {
                command: cmd.into(),
                source,
            })?;
        snap.calls += 1;
        if !out.status.success() {
            return Err(SlurmError::Failed {
                command: cmd.into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
            });
        }
        for job in parse_squeue(&String::from_utf8_lossy(&out.stdout)) {
            // squeue is newer than jobcomp for a live job; keep jobcomp's exit code.
            let exit = snap
                .by_id
                .get(&job.id)
                .filter(|j| j.name == job.name)
                .and_then(|j| j.exit_code.clone());
            snap.insert(SlurmJob {
                exit_code: exit.or(job.exit_code.clone()),
                ..job
            });
        }
        Ok(snap)
    }

    fn insert(&mut self, job: SlurmJob) {
        self.by_name.insert(job.name.clone(), job.id);
        self.by_id.insert(job.id, job);
    }

    /// The job with this id and name (an id reused after a state wipe with
    /// another name is not ours).
    pub fn job(&self, id: u64, name: &str) -> Option<&SlurmJob> {
        self.by_id.get(&id).filter(|j| j.name == name)
    }

    /// The newest job with this name.
    pub fn by_name(&self, name: &str) -> Option<&SlurmJob> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_output_is_parsed_on_the_first_word_of_the_state() {
        // Verbatim `squeue -h -t all -o '%i|%j|%T|%r'` from the local cluster.
        let text = "41|tpcflow-c1-j7|RUNNING|None\n42|tpcflow-c1-j8|PENDING|Resources\n\
                    39|tpcflow-c1-j5|COMPLETED|None\n40|tpcflow-c1-j6|CANCELLED|None\n43_2|arr|RUNNING|None\n";
        let jobs = parse_squeue(text);
        assert_eq!(jobs.len(), 5);
        assert_eq!(jobs[0].state, SlurmState::Running);
        assert_eq!(jobs[1].state, SlurmState::Pending);
        assert_eq!(jobs[1].detail, "Resources");
        assert_eq!(jobs[2].state, SlurmState::Completed);
        assert_eq!(jobs[3].state, SlurmState::Cancelled);
        assert_eq!(jobs[4].id, 43);
        let mut snap = Snapshot::default();
        for j in jobs {
            snap.insert(j);
        }
        assert!(snap.job(41, "tpcflow-c1-j7").is_some());
        assert!(
            snap.job(41, "someone-else").is_none(),
            "a reused id with another name is not ours"
        );
        assert_eq!(snap.by_name("tpcflow-c1-j8").map(|j| j.id), Some(42));
    }
}
