//! Making the salted version of one raw file: draw the salt count, place
//! and simulate the salt events (on the detector the salt conditions
//! describe), renumber, and write the staging file.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tpcflow_reco::EventView;

use super::ledger::{LedgerEntry, RunLedger};
use super::placement::{merge_order, place_salt_times, Origin};
use super::{staging_path, vault, SaltError, SaltEvent};
use crate::catalog::RawFileRow;
use crate::raw::{write_raw_file, OwnedEvent, RawFile, RawHeader};
use crate::sim::told_detector::ToldDetector;
use crate::sim::{simulate_event_with_truth, EventSpec, Scratch, Source};
use crate::truth::EventTruth;

/// A salted file written under its staging name, and what the vault keeps.
#[derive(Debug)]
pub struct SaltedFile {
    /// Staging path (`.{name}.salting`), to be renamed over the original.
    pub staging: PathBuf,
    /// Seed of the salt events' random streams (secret).
    pub seed: u64,
    /// Salt events with their truth.
    pub salt_events: Vec<SaltEvent>,
    /// Real events: (new id, original id).
    pub real_event_ids: Vec<(u64, u64)>,
    /// The run ledger's entry for this file.
    pub ledger_entry: LedgerEntry,
    /// Events in the salted file.
    pub n_events: u64,
    /// Tag of the conditions the salt was made with.
    pub conditions_tag: String,
    /// SHA-256 of their text (hex).
    pub conditions_sha256: String,
}

/// Copy an event out of a file, pod offsets made relative to its own samples.
pub fn owned_event(v: &EventView<'_>) -> OwnedEvent {
    let mut ev = OwnedEvent {
        event_id: v.event_id,
        trigger_time_ns: v.trigger_time_ns,
        pods: Vec::with_capacity(v.pods.len()),
        samples: Vec::new(),
    };
    for p in v.pods {
        let (a, b) = (p.offset as usize, p.offset as usize + p.length as usize);
        let mut q = *p;
        q.offset = ev.samples.len() as u64;
        ev.pods.push(q);
        ev.samples.extend_from_slice(&v.samples[a..b]);
    }
    ev
}

fn salt_truth(t: &EventTruth, trigger_time_ns: i64) -> SaltEvent {
    let e: f64 = t.vertices.iter().map(|v| v.energy_kev).sum();
    let w = |f: fn(&crate::sim::signals::VertexTruth) -> f64| {
        t.vertices.iter().map(|v| v.energy_kev * f(v)).sum::<f64>() / e.max(1e-12)
    };
    SaltEvent {
        event_id: t.event_id,
        trigger_time_ns,
        energy_kev: e,
        x_mm: w(|v| v.x),
        y_mm: w(|v| v.y),
        z_mm: w(|v| v.z),
        n_vertices: t.vertices.len() as u32,
        s1_phd: t.s1_phd(),
        s2_phd: t.s2_phd(),
    }
}

/// Salt the raw file at `path` (catalogued as `f`) into its staging file,
/// the salt made on the detector `detector` gives for the file's header.
///
/// # Errors
/// Raw-file, conditions and vault-randomness errors; [`SaltError::Unsaltable`]
/// when its ids overlap another salted file of the run.
pub fn salt_file<'c>(
    path: &Path,
    f: &RawFileRow,
    rate: f64,
    ledger: &RunLedger,
    detector: impl FnOnce(&RawHeader) -> Result<&'c ToldDetector, SaltError>,
) -> Result<SaltedFile, SaltError> {
    let raw = RawFile::open(path)?;
    let header = raw.header().clone();
    let told = detector(&header)?;
    let cond = &told.conditions;
    let mut order: Vec<usize> = (0..raw.n_events()).collect();
    order.sort_by_key(|&i| {
        let e = raw.event(i);
        (e.trigger_time_ns, e.event_id)
    });
    let real: Vec<OwnedEvent> = order.iter().map(|&i| owned_event(&raw.event(i))).collect();
    drop(raw);
    let real_times: Vec<i64> = real.iter().map(|e| e.trigger_time_ns).collect();
    let first = real.iter().map(|e| e.event_id).min();
    let last = real.iter().map(|e| e.event_id).max();
    let seed = u64::from_le_bytes(vault::random_bytes()?);
    let mut rng = ChaCha20Rng::from_seed(vault::random_bytes()?);

    let (salt_times, new_first, entry) = match (first, last) {
        (Some(first), Some(last)) => {
            let p = ledger.placement(&f.name, f.sequence, first, last)?;
            let rate = if p.no_salt { 0.0 } else { rate };
            let daq = &cond.detector.params.daq;
            let dead_ns = (daq.window_before_ns + daq.window_after_ns).ceil() as i64;
            let anchor = p.left_anchor_ns.filter(|&a| a < real_times[0]);
            let times = place_salt_times(&mut rng, &real_times, anchor, dead_ns, rate);
            let entry = LedgerEntry {
                sequence: f.sequence,
                original_first_id: first,
                original_last_id: last,
                n_salt: times.len() as u64,
                last_trigger_time_ns: *real_times.last().expect("non-empty"),
            };
            (times, first + p.id_shift, entry)
        }
        _ => {
            return Err(SaltError::Unsaltable {
                file: f.name.clone(),
                what: "no events".into(),
            })
        }
    };

    let mut scratch = Scratch::default();
    let mut salt: Vec<(OwnedEvent, EventTruth)> = salt_times
        .iter()
        .enumerate()
        .map(|(k, &t)| {
            let spec = EventSpec {
                source: Source::Wimp,
                seed,
                run: f.run,
                event_index: k as u64,
                event_id: 0,
                trigger_time_ns: t,
            };
            simulate_event_with_truth(&cond.detector, &cond.sim, Some(told), spec, &mut scratch)
        })
        .collect();

    let mut events = Vec::with_capacity(real.len() + salt.len());
    let mut salt_events = Vec::with_capacity(salt.len());
    let mut real_event_ids = Vec::with_capacity(real.len());
    let mut real = real.into_iter();
    for (row, o) in merge_order(&real_times, &salt_times)
        .into_iter()
        .enumerate()
    {
        let id = new_first + row as u64;
        match o {
            Origin::Real(_) => {
                let mut e = real.next().expect("merge yields each real event once");
                real_event_ids.push((id, e.event_id));
                e.event_id = id;
                events.push(e);
            }
            Origin::Salt(j) => {
                let (mut e, mut t) = std::mem::take(&mut salt[j]);
                e.event_id = id;
                t.event_id = id;
                salt_events.push(salt_truth(&t, e.trigger_time_ns));
                events.push(e);
            }
        }
    }
    let staging = staging_path(path);
    write_raw_file(&staging, &header, &events)?;
    Ok(SaltedFile {
        staging,
        seed,
        salt_events,
        real_event_ids,
        ledger_entry: entry,
        n_events: events.len() as u64,
        conditions_tag: told.tag().to_string(),
        conditions_sha256: told.sha256().to_string(),
    })
}
