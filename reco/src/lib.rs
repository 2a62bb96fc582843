//! tpcflow-reco: the pure reconstruction core of tpcflow.
//!
//! No I/O: this crate takes one event's pods as slices plus the
//! [`DetectorModel`] and returns plain structs. It never opens a file, prints,
//! or knows about MPI, HDF5 or SQLite.
//!
//! ```
//! use tpcflow_reco::{DetectorModel, PodRecord, EventView};
//!
//! let model = DetectorModel::default_lz_like();
//! assert_eq!(model.n_channels(), 494);
//! // One pod of 4 samples on channel 3, starting at sample 100 of the window.
//! let samples = [16000i16, 16000, 15990, 16000];
//! let pods = [PodRecord { channel: 3, start_sample: 100, length: 4, offset: 0 }];
//! let event = EventView { event_id: 1, trigger_time_ns: 0, pods: &pods, samples: &samples };
//! assert_eq!(event.pod_samples(&pods[0]), &samples[..]);
//! ```

pub mod baseline;
pub mod calibration;
pub mod classify;
pub mod config;
pub mod corrections;
pub mod detector;
pub mod error;
pub mod event;
pub mod hits;
pub mod interactions;
pub mod lrf;
pub mod pulses;
pub mod recon;
pub mod split;
pub mod threshold_scan;
pub mod xy;

pub use detector::{DetectorModel, PmtMap};
pub use event::{EventView, PodRecord};

pub use config::RecoConfig;
pub use error::RecoError;
pub use interactions::InteractionKind;
pub use pulses::{ChannelArea, PulseKind, PulseRq};
pub use recon::{
    reconstruct_batch, reconstruct_event, reconstruct_event_until, reconstruct_event_with,
    reconstruct_serial, EventRecon, EventRq, RecoScratch, Stage,
};
pub use threshold_scan::ScanPath;
pub use xy::{cramer_rao_xy, fit_xy, fit_xy_on, XyFit};
