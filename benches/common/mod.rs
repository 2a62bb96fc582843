//! Shared by the benchmarks: the simulated `mixed` raw file they read, made
//! once under `target/bench-data/` and reused.

use std::path::PathBuf;

use tpcflow::conditions::Conditions;
use tpcflow::sim::{self, SimOptions, Source};

/// `TPCFLOW_BENCH_RAW_GB` (default 2): the size of the shared raw file [GB of samples].
pub fn raw_gb() -> f64 {
    std::env::var("TPCFLOW_BENCH_RAW_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0)
}

/// A `mixed` raw file of about `gb` GB of samples (run 900), simulated once.
pub fn bench_file(gb: f64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    // ~0.33 MB of samples per mixed event.
    let events = ((gb * 1e9) / 0.33e6).ceil() as u32;
    let path = tpcflow::raw::raw_file_path(&dir.join(format!("reader-{events}")), 900, 0);
    if !path.exists() {
        let cond = Conditions::load("v1").expect("v1 conditions");
        let opts = SimOptions {
            run: 900,
            files: 1,
            events_per_file: events,
            seed: 900,
            out: dir.join(format!("reader-{events}")),
            source: Source::Mixed,
            first_sequence: 0,
            live_rate_hz: None,
        };
        eprintln!(
            "simulating {events} events for the benchmarks into {}",
            path.display()
        );
        sim::run(&opts, &cond).expect("simulate the benchmark file");
    }
    path
}
