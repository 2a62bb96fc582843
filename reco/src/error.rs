//! Typed errors of the reconstruction: bad data is a `Result`, never a panic.

/// Why an event could not be reconstructed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecoError {
    /// A pod names a channel the detector does not have.
    #[error(
        "event {event}: pod {pod} has channel {channel}, the detector has {n_channels} channels"
    )]
    BadChannel {
        /// Event id.
        event: u64,
        /// Index of the pod within the event.
        pod: usize,
        /// Channel found.
        channel: u16,
        /// Number of channels of the detector model.
        n_channels: usize,
    },
    /// A pod points outside the event's sample array.
    #[error(
        "event {event}: pod {pod} covers samples {offset}..+{length}, the event has {n_samples}"
    )]
    PodOutOfBounds {
        /// Event id.
        event: u64,
        /// Index of the pod within the event.
        pod: usize,
        /// First sample in the sample array.
        offset: u64,
        /// Length [samples].
        length: u32,
        /// Samples in the event's array.
        n_samples: usize,
    },
    /// A pod lies (partly) outside the event window.
    #[error("event {event}: pod {pod} spans window samples {start_sample}..+{length}, the window has {window_samples}")]
    PodOutsideWindow {
        /// Event id.
        event: u64,
        /// Index of the pod within the event.
        pod: usize,
        /// First sample in the window [samples].
        start_sample: i32,
        /// Length [samples].
        length: u32,
        /// Samples in the event window.
        window_samples: u32,
    },
    /// Two pods of one channel overlap in time.
    #[error("event {event}: pods {previous} and {pod} on channel {channel} overlap in time")]
    OverlappingPods {
        /// Event id.
        event: u64,
        /// Index within the event of the pod that starts first.
        previous: usize,
        /// Index within the event of the pod that starts inside it.
        pod: usize,
        /// Channel.
        channel: u16,
    },
    /// A configuration value is unusable.
    #[error("reconstruction config field `{field}` = {value} is out of range")]
    BadConfig {
        /// Field name.
        field: &'static str,
        /// Offending value.
        value: f64,
    },
}
