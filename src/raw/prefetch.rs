//! Reading ahead of the reconstruction: a thread that faults the next window
//! of events into memory while the current one is reconstructed.
//!
//! A rank reads its inputs through a memory map, a window of events at a time
//! (`RawFile::pod_batch`). When a window's pages are not in the page cache
//! the rank waits for the disk in the middle of its work: inputs fresh from
//! transfer, or dropped from the cache, made reading 31-36 % of a rank's busy
//! time here. The prefetcher takes that wait off the rank's thread: the job
//! hands it the next window (and, near the end of a unit, the first window of
//! the next unit) as a [`Readahead`], and it populates those pages while the
//! rank works; when the rank gets there the pages are mapped and in memory.
//! On a rank with one CPU the prefetcher's own CPU time (page-table and page
//! cache work) is the same the rank would spend faulting the pages in; what
//! it saves is the time spent waiting.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;

use super::reader::Readahead;

/// Windows that may wait for the prefetcher; later hints are dropped (the
/// reader then reads those pages itself), so a slow disk never blocks a rank
/// and never holds more than this many windows of maps alive.
const DEPTH: usize = 2;

/// The prefetch thread; stops when dropped.
#[derive(Debug)]
pub struct Prefetcher {
    tx: Option<SyncSender<Readahead>>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Start the thread.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Readahead>(DEPTH);
        let handle = std::thread::Builder::new()
            .name("tpcflow-prefetch".into())
            .spawn(move || {
                for r in rx {
                    r.run();
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Queue `r` without waiting; false when it was dropped (queue full).
    pub fn submit(&self, r: Readahead) -> bool {
        match self.tx.as_ref().map(|tx| tx.try_send(r)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => false,
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
