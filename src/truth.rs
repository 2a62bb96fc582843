//! Simulation truth, in a sibling `*.truth.h5` that reconstruction never reads.
//!
//! ```text
//! /events/event_id, source (u8), t0_ns (interaction time in the window),
//!         first_vertex (u64), n_vertices (u32), s1_phd, s2_phd (u64 totals)
//! /vertices/x_mm, y_mm, z_mm, energy_kev, recoil (0 ER, 1 NR), n_photons,
//!           n_electrons, n_extracted, s1_phd, s2_phd, t_s1_ns, t_s2_ns, drift_ns
//! ```

use std::path::Path;

use crate::raw::RawError;
use crate::sim::signals::VertexTruth;

/// Truth of one event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventTruth {
    /// Event number (same as in the raw file).
    pub event_id: u64,
    /// Source code (see `Source::code`).
    pub source: u8,
    /// Interaction time in the window [ns].
    pub t0_ns: f64,
    /// Vertices.
    pub vertices: Vec<VertexTruth>,
}

impl EventTruth {
    /// Detected S1 photons of all vertices [phd].
    pub fn s1_phd(&self) -> u64 {
        self.vertices.iter().map(|v| v.s1_phd).sum()
    }
    /// Detected S2 photons of all vertices [phd].
    pub fn s2_phd(&self) -> u64 {
        self.vertices.iter().map(|v| v.s2_phd).sum()
    }
}

fn col<T: hdf5::H5Type>(
    g: &hdf5::Group,
    name: &str,
    data: &[T],
    path: &Path,
) -> Result<(), RawError> {
    g.new_dataset_builder()
        .with_data(data)
        .create(name)
        .map(|_| ())
        .map_err(|e| RawError::hdf5(path, name, e))
}

/// Write a truth file atomically.
///
/// # Errors
/// [`RawError`] naming the file.
pub fn write_truth_file(path: &Path, events: &[EventTruth]) -> Result<(), RawError> {
    let tmp = crate::atomic_file::temp_path(path);
    let written = (|| {
        let f = crate::h5::create(&tmp).map_err(|e| RawError::hdf5(&tmp, "create", e))?;
        let ev = f
            .create_group("events")
            .map_err(|e| RawError::hdf5(&tmp, "/events", e))?;
        let ids: Vec<u64> = events.iter().map(|e| e.event_id).collect();
        let src: Vec<u8> = events.iter().map(|e| e.source).collect();
        let t0: Vec<f64> = events.iter().map(|e| e.t0_ns).collect();
        let mut first = Vec::new();
        let mut n = Vec::new();
        let mut acc = 0u64;
        for e in events {
            first.push(acc);
            n.push(e.vertices.len() as u32);
            acc += e.vertices.len() as u64;
        }
        col(&ev, "event_id", &ids, &tmp)?;
        col(&ev, "source", &src, &tmp)?;
        col(&ev, "t0_ns", &t0, &tmp)?;
        col(&ev, "first_vertex", &first, &tmp)?;
        col(&ev, "n_vertices", &n, &tmp)?;
        col(
            &ev,
            "s1_phd",
            &events.iter().map(EventTruth::s1_phd).collect::<Vec<_>>(),
            &tmp,
        )?;
        col(
            &ev,
            "s2_phd",
            &events.iter().map(EventTruth::s2_phd).collect::<Vec<_>>(),
            &tmp,
        )?;
        let vs: Vec<&VertexTruth> = events.iter().flat_map(|e| e.vertices.iter()).collect();
        let vg = f
            .create_group("vertices")
            .map_err(|e| RawError::hdf5(&tmp, "/vertices", e))?;
        macro_rules! vcol {
            ($name:literal, $field:ident) => {
                col(
                    &vg,
                    $name,
                    &vs.iter().map(|v| v.$field).collect::<Vec<_>>(),
                    &tmp,
                )?
            };
        }
        vcol!("x_mm", x);
        vcol!("y_mm", y);
        vcol!("z_mm", z);
        vcol!("energy_kev", energy_kev);
        vcol!("recoil", recoil);
        vcol!("n_photons", n_photons);
        vcol!("n_electrons", n_electrons);
        vcol!("n_extracted", n_extracted);
        vcol!("s1_phd", s1_phd);
        vcol!("s2_phd", s2_phd);
        vcol!("t_s1_ns", t_s1_ns);
        vcol!("t_s2_ns", t_s2_ns);
        vcol!("drift_ns", drift_ns);
        f.flush().map_err(|e| RawError::hdf5(&tmp, "flush", e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crate::atomic_file::commit(&tmp, path)?;
    Ok(())
}

fn read<T: hdf5::H5Type>(f: &hdf5::File, name: &str, path: &Path) -> Result<Vec<T>, RawError> {
    f.dataset(name)
        .and_then(|d| d.read_raw::<T>())
        .map_err(|e| RawError::hdf5(path, name, e))
}

/// Read a truth file back.
///
/// # Errors
/// [`RawError`] naming the file and dataset.
pub fn read_truth_file(path: &Path) -> Result<Vec<EventTruth>, RawError> {
    let f = crate::h5::open(path).map_err(|e| RawError::hdf5(path, "open", e))?;
    let ids: Vec<u64> = read(&f, "events/event_id", path)?;
    let src: Vec<u8> = read(&f, "events/source", path)?;
    let t0: Vec<f64> = read(&f, "events/t0_ns", path)?;
    let first: Vec<u64> = read(&f, "events/first_vertex", path)?;
    let n: Vec<u32> = read(&f, "events/n_vertices", path)?;
    let x: Vec<f64> = read(&f, "vertices/x_mm", path)?;
    let y: Vec<f64> = read(&f, "vertices/y_mm", path)?;
    let z: Vec<f64> = read(&f, "vertices/z_mm", path)?;
    let en: Vec<f64> = read(&f, "vertices/energy_kev", path)?;
    let rec: Vec<u8> = read(&f, "vertices/recoil", path)?;
    let nph: Vec<u64> = read(&f, "vertices/n_photons", path)?;
    let ne: Vec<u64> = read(&f, "vertices/n_electrons", path)?;
    let next: Vec<u64> = read(&f, "vertices/n_extracted", path)?;
    let s1: Vec<u64> = read(&f, "vertices/s1_phd", path)?;
    let s2: Vec<u64> = read(&f, "vertices/s2_phd", path)?;
    let ts1: Vec<f64> = read(&f, "vertices/t_s1_ns", path)?;
    let ts2: Vec<f64> = read(&f, "vertices/t_s2_ns", path)?;
    let dr: Vec<f64> = read(&f, "vertices/drift_ns", path)?;
    let mut out = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        let a = first.get(i).copied().unwrap_or(0) as usize;
        let b = a + n.get(i).copied().unwrap_or(0) as usize;
        if b > x.len() {
            return Err(RawError::Malformed {
                path: path.to_path_buf(),
                what: format!("event {}: vertices {a}..{b} outside the table", ids[i]),
            });
        }
        let vertices = (a..b)
            .map(|k| VertexTruth {
                x: x[k],
                y: y[k],
                z: z[k],
                energy_kev: en[k],
                recoil: rec[k],
                n_photons: nph[k],
                n_electrons: ne[k],
                n_extracted: next[k],
                s1_phd: s1[k],
                s2_phd: s2[k],
                t_s1_ns: ts1[k],
                t_s2_ns: ts2[k],
                drift_ns: dr[k],
            })
            .collect();
        out.push(EventTruth {
            event_id: ids[i],
            source: src[i],
            t0_ns: t0[i],
            vertices,
        });
    }
    Ok(out)
}
