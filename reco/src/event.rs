//! The raw event as the reconstruction sees it: pod headers and the sample
//! array they point into (zero-copy views of the memory-mapped raw file).

/// One pulse-only-digitisation record: a run of samples on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodRecord {
    /// PMT channel (0..n_top are the top array, then the bottom array).
    pub channel: u16,
    /// First sample, counted from the start of the event window [samples].
    pub start_sample: i32,
    /// Number of samples.
    pub length: u32,
    /// Index of the first sample in the sample array the event refers to.
    pub offset: u64,
}

/// One event: its pods and the sample array they index into.
///
/// Invariant (checked by the raw reader before it hands an event out): every
/// pod's `offset + length` lies within `samples`.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// Event number, unique within a run.
    pub event_id: u64,
    /// Time of the S2 trigger since the start of the run [ns].
    pub trigger_time_ns: i64,
    /// Pods of the event, sorted by channel then start sample.
    pub pods: &'a [PodRecord],
    /// The sample array `pods` index into (ADC counts, raw polarity).
    pub samples: &'a [i16],
}

impl<'a> EventView<'a> {
    /// The samples of one pod.
    ///
    /// # Panics
    /// When the pod points outside `samples` (the reader rules this out).
    pub fn pod_samples(&self, pod: &PodRecord) -> &'a [i16] {
        let start = pod.offset as usize;
        &self.samples[start..start + pod.length as usize]
    }

    /// Total number of samples in the event's pods.
    pub fn n_samples(&self) -> u64 {
        self.pods.iter().map(|p| u64::from(p.length)).sum()
    }
}
