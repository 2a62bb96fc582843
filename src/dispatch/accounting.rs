//! Finished jobs as real sites expose them: SLURM's accounting (`sacct`,
//! backed by slurmdbd), read in one batched call per pass and cluster for the
//! jobs the catalog still holds open; and the retry policy that follows from
//! a job's final state.
//!
//! ```text
//! final state        next attempt                               counts against the file
//! COMPLETED          (the result records decide)                -
//! TIMEOUT            time limit x2, up to `max_time_limit`       yes
//! OUT_OF_MEMORY      memory x2 (at least 1.5 x MaxRSS), up to    yes
//!                    `max_mem_mb`
//! NODE_FAIL          same resources                             no
//! PREEMPTED          same resources                             no
//! anything else      same resources, back-off                   yes
//! TIMEOUT / OOM already at the limit: FAILED at once, with that reason
//! ```
//!
//! A job killed for its memory is `OUT_OF_MEMORY` where SLURM enforces memory
//! with cgroups. Without cgroups (this project's test bed) the accounting
//! poller (`JobAcctGatherParams=OverMemoryKill`) kills the step and the job
//! ends `FAILED` with signal 9, its batch step `CANCELLED`; the step's
//! `MaxRSS` above the job's `ReqMem` tells it apart, so both read as
//! out-of-memory here.

use serde::Serialize;

use crate::slurm::{Client, JobState as SlurmState, SlurmError};

/// Columns of the batched `sacct` call.
pub const SACCT_FORMAT: &str = "JobID,JobName,State,ExitCode,ReqMem,MaxRSS,Timelimit";

/// One job (or array element) as `sacct` reports it, its steps folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcctJob {
    /// SLURM job id; an array element's is its array's id.
    pub id: u64,
    /// Index in its job array.
    pub array_index: Option<u32>,
    /// Job name.
    pub name: String,
    /// State of the job (first word), `OutOfMemory` also for a memory kill
    /// seen through `MaxRSS` (see the module doc).
    pub state: SlurmState,
    /// `code:signal`.
    pub exit_code: String,
    /// Requested memory [bytes], when known.
    pub req_mem_bytes: Option<u64>,
    /// Largest resident set of any step [bytes], when known.
    pub max_rss_bytes: Option<u64>,
    /// Time limit as sacct prints it (`00:01:00`, `UNLIMITED`).
    pub time_limit: String,
}

/// Parse a size as sacct prints it (`424656K`, `100M`, `1G`, `0`, ``).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    // ReqMem may carry a per-node/per-CPU suffix (`100Mn`, `1Gc`) in older versions.
    let t = t.trim_end_matches(['n', 'c']);
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 'B'),
    };
    let value: f64 = digits.parse().ok()?;
    let scale = match unit.to_ascii_uppercase() {
        'B' => 1.0,
        'K' => 1024.0,
        'M' => 1024.0 * 1024.0,
        'G' => 1024.0 * 1024.0 * 1024.0,
        'T' => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * scale) as u64)
}

/// Parse `sacct -n -P -o` [`SACCT_FORMAT`]: job lines (`12`, `12_3`) and their
/// step lines (`12.batch`, `12_3.0`), whose `MaxRSS` goes to the job. Lines
/// of a still-pending array range (`12_[4-9]`) name no element and are skipped.
pub fn parse_sacct(text: &str) -> Vec<AcctJob> {
    let mut jobs: Vec<AcctJob> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.trim_end().split('|').collect();
        if f.len() < 7 {
            continue;
        }
        let (job_part, step) = match f[0].split_once('.') {
            Some((j, s)) => (j, Some(s)),
            None => (f[0], None),
        };
        let Some((id, array_index)) = parse_job_id(job_part) else {
            continue;
        };
        if step.is_some() {
            if let Some(j) = jobs
                .iter_mut()
                .rev()
                .find(|j| j.id == id && j.array_index == array_index)
            {
                if let Some(rss) = parse_size(f[5]) {
                    j.max_rss_bytes = Some(j.max_rss_bytes.unwrap_or(0).max(rss));
                }
            }
            continue;
        }
        jobs.push(AcctJob {
            id,
            array_index,
            name: f[1].to_string(),
            state: SlurmState::parse(f[2]),
            exit_code: f[3].to_string(),
            req_mem_bytes: parse_size(f[4]).filter(|&b| b > 0),
            max_rss_bytes: parse_size(f[5]),
            time_limit: f[6].to_string(),
        });
    }
    for j in &mut jobs {
        if j.killed_for_memory() {
            j.state = SlurmState::OutOfMemory;
        }
    }
    jobs
}

fn parse_job_id(text: &str) -> Option<(u64, Option<u32>)> {
    match text.split_once('_') {
        Some((id, index)) => Some((id.parse().ok()?, Some(index.parse().ok()?))),
        None => Some((text.parse().ok()?, None)),
    }
}

impl AcctJob {
    /// Ended by a kill (FAILED or CANCELLED) with a step past the requested memory.
    fn killed_for_memory(&self) -> bool {
        matches!(self.state, SlurmState::Failed | SlurmState::Cancelled)
            && self
                .req_mem_bytes
                .zip(self.max_rss_bytes)
                .is_some_and(|(req, rss)| rss >= req)
    }
}

/// The batched `sacct` call for these SLURM job ids (array ids cover their
/// elements); one per pass and cluster. No ids, no call.
///
/// # Errors
/// As [`Client::run`].
pub fn query(client: &Client, ids: &[u64]) -> Result<Vec<AcctJob>, SlurmError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    let list = list.join(",");
    let out = client.run("sacct", &["-n", "-P", "-j", &list, "-o", SACCT_FORMAT])?;
    Ok(parse_sacct(&out))
}

/// Resources of one attempt: time limit [min] and memory [MB] (None: the
/// cluster's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// sbatch `--time` [min].
    pub time_limit_min: u32,
    /// sbatch `--mem` [MB], when asked.
    pub mem_mb: Option<u32>,
}

/// How far the retry policy may raise resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest time limit [min].
    pub max_time_limit_min: u32,
    /// Largest memory [MB].
    pub max_mem_mb: u32,
}

/// What to do with a task whose job ended without its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Retry with these resources, spending an attempt.
    With(Resources),
    /// Retry with the same resources without spending an attempt (the node
    /// failed or the job was preempted: not the file's fault).
    Free,
    /// Give up now: the same failure at the limits.
    Fail(String),
}

/// The retry policy of the module doc, from the job's final state, what it
/// used, and `max_rss_bytes` when sacct knows it.
pub fn next_attempt(
    state: SlurmState,
    used: Resources,
    max_rss_bytes: Option<u64>,
    limits: Limits,
) -> Retry {
    match state {
        SlurmState::NodeFail | SlurmState::Preempted => Retry::Free,
        SlurmState::Timeout => {
            if used.time_limit_min >= limits.max_time_limit_min {
                return Retry::Fail(format!(
                    "TIMEOUT at the time limit {} (max_time_limit)",
                    format_minutes(used.time_limit_min)
                ));
            }
            Retry::With(Resources {
                time_limit_min: used
                    .time_limit_min
                    .saturating_mul(2)
                    .min(limits.max_time_limit_min),
                ..used
            })
        }
        SlurmState::OutOfMemory => {
            let used_mb = used.mem_mb.unwrap_or(0);
            if used_mb >= limits.max_mem_mb {
                return Retry::Fail(format!(
                    "OUT_OF_MEMORY at the memory limit {used_mb} MB (max_mem_mb)"
                ));
            }
            let rss_mb = max_rss_bytes.map_or(0, |b| (b / (1024 * 1024)) as u32);
            let want = used_mb
                .saturating_mul(2)
                .max(rss_mb.saturating_mul(3) / 2)
                .max(1);
            Retry::With(Resources {
                mem_mb: Some(want.min(limits.max_mem_mb)),
                ..used
            })
        }
        _ => Retry::With(used),
    }
}

/// Parse a SLURM time limit into minutes: `MM`, `MM:SS`, `HH:MM:SS`,
/// `D-HH`, `D-HH:MM`, `D-HH:MM:SS` (seconds round up, as SLURM does).
pub fn parse_minutes(text: &str) -> Option<u32> {
    let t = text.trim();
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (d.parse::<u32>().ok()?, r),
        None => (0, t),
    };
    let parts: Vec<u32> = rest
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (h, m, s) = match (t.contains('-'), parts.as_slice()) {
        (false, [m]) => (0, *m, 0),
        (false, [m, s]) => (0, *m, *s),
        (true, [h]) => (*h, 0, 0),
        (true, [h, m]) => (*h, *m, 0),
        (_, [h, m, s]) => (*h, *m, *s),
        _ => return None,
    };
    Some(days * 1440 + h * 60 + m + s.div_ceil(60))
}

/// Minutes as `HH:MM:00`.
pub fn format_minutes(min: u32) -> String {
    format!("{:02}:{:02}:00", min / 60, min % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim `sacct -n -P -j 1,2,3,5 -o JobID,JobName,State,ExitCode,ReqMem,MaxRSS,Timelimit`
    /// from the local cluster ukdc (slurmdbd, no cgroups): job 1 hit its
    /// 1-minute limit, job 2 (`--mem=100M`) was killed by the accounting
    /// poller at 415 MB, job 3 completed, array 5 has a failed element.
    const SACCT: &str = "1|wrap|TIMEOUT|0:0|1G||00:01:00
1.batch|batch|CANCELLED|0:15||3056K|
2|wrap|FAILED|0:9|100M||UNLIMITED
2.batch|batch|CANCELLED by 0|0:9||424656K|
3|wrap|COMPLETED|0:0|1G||UNLIMITED
3.batch|batch|COMPLETED|0:0|||
5_0|arrx|COMPLETED|0:0|1G||365-00:00:00
5_0.batch|batch|COMPLETED|0:0||3080K|
5_1|arrx|FAILED|1:0|1G||UNLIMITED
5_1.batch|batch|FAILED|1:0||3160K|
5_[2-4]|arrx|PENDING|0:0|1G||UNLIMITED
";

    #[test]
    fn sacct_jobs_steps_and_memory_kills() {
        let jobs = parse_sacct(SACCT);
        assert_eq!(jobs.len(), 5, "{jobs:?}");
        assert_eq!(jobs[0].state, SlurmState::Timeout);
        assert_eq!(jobs[0].time_limit, "00:01:00");
        assert_eq!(jobs[1].state, SlurmState::OutOfMemory, "a kill past ReqMem");
        assert_eq!(jobs[1].max_rss_bytes, Some(424_656 * 1024));
        assert_eq!(jobs[1].req_mem_bytes, Some(100 * 1024 * 1024));
        assert_eq!(jobs[2].state, SlurmState::Completed);
        assert_eq!((jobs[3].id, jobs[3].array_index), (5, Some(0)));
        assert_eq!(
            jobs[4].state,
            SlurmState::Failed,
            "a plain failure stays FAILED"
        );
        assert_eq!(jobs[4].exit_code, "1:0");
    }

    #[test]
    fn sizes_and_time_limits() {
        assert_eq!(parse_size("424656K"), Some(424_656 * 1024));
        assert_eq!(parse_size("100M"), Some(100 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1000Mn"), Some(1000 << 20));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_minutes("00:30:00"), Some(30));
        assert_eq!(parse_minutes("1"), Some(1));
        assert_eq!(parse_minutes("0:15"), Some(1));
        assert_eq!(parse_minutes("1-02:00:00"), Some(1560));
        assert_eq!(parse_minutes("2-3"), Some(3060));
        assert_eq!(parse_minutes("soon"), None);
        assert_eq!(format_minutes(125), "02:05:00");
    }

    #[test]
    fn the_retry_policy_follows_the_final_state() {
        let limits = Limits {
            max_time_limit_min: 4,
            max_mem_mb: 600,
        };
        let used = Resources {
            time_limit_min: 1,
            mem_mb: Some(150),
        };
        assert_eq!(
            next_attempt(SlurmState::Timeout, used, None, limits),
            Retry::With(Resources {
                time_limit_min: 2,
                ..used
            })
        );
        let at_limit = Resources {
            time_limit_min: 4,
            ..used
        };
        assert!(matches!(
            next_attempt(SlurmState::Timeout, at_limit, None, limits),
            Retry::Fail(r) if r.contains("TIMEOUT at the time limit 00:04:00")
        ));
        // Twice the memory, or 1.5 x what it reached when that is more; capped.
        assert_eq!(
            next_attempt(SlurmState::OutOfMemory, used, Some(100 << 20), limits),
            Retry::With(Resources {
                mem_mb: Some(300),
                ..used
            })
        );
        assert_eq!(
            next_attempt(SlurmState::OutOfMemory, used, Some(300 << 20), limits),
            Retry::With(Resources {
                mem_mb: Some(450),
                ..used
            })
        );
        let big = Resources {
            mem_mb: Some(400),
            ..used
        };
        assert_eq!(
            next_attempt(SlurmState::OutOfMemory, big, None, limits),
            Retry::With(Resources {
                mem_mb: Some(600),
                ..used
            })
        );
        let full = Resources {
            mem_mb: Some(600),
            ..used
        };
        assert!(matches!(
            next_attempt(SlurmState::OutOfMemory, full, None, limits),
            Retry::Fail(r) if r.contains("OUT_OF_MEMORY at the memory limit 600 MB")
        ));
        assert_eq!(
            next_attempt(SlurmState::NodeFail, used, None, limits),
            Retry::Free
        );
        assert_eq!(
            next_attempt(SlurmState::Preempted, used, None, limits),
            Retry::Free
        );
        assert_eq!(
            next_attempt(SlurmState::Failed, used, None, limits),
            Retry::With(used)
        );
    }
}
