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
//!
//! A window handed over with [`Prefetcher::fetch`] that is mostly not in the
//! page cache is read directly from disk into one of the rank's reusable
//! buffers instead (`crate::raw::direct`); the rank collects it with
//! [`Pending::wait`].

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::direct::BufferPool;
pub use super::readahead::Fetched;
use super::readahead::Readahead;

/// A window handed to [`Prefetcher::fetch`]: what it became.
#[derive(Debug)]
pub struct Pending(Receiver<Fetched>);

impl Pending {
    /// Wait for the prefetch thread to have read the window.
    pub fn wait(self) -> Fetched {
        self.0.recv().unwrap_or(Fetched::Mapped)
    }
}

enum Job {
    Populate(Readahead),
    Fetch(Readahead, SyncSender<Fetched>),
}

/// Windows that may wait for the prefetcher (a cold range keeps three in
/// flight, plus the next unit's first); later hints are dropped (the reader
/// then reads those pages itself), so a slow disk never blocks a rank and
/// never holds more than this many windows of maps or buffers alive.
const DEPTH: usize = 5;

/// The prefetch thread; stops when dropped.
#[derive(Debug)]
pub struct Prefetcher {
    tx: Option<SyncSender<Job>>,
    handle: Option<JoinHandle<()>>,
    pool: Arc<BufferPool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Populate(_) => "Populate",
            Job::Fetch(..) => "Fetch",
        })
    }
}

impl Prefetcher {
    /// Start the thread.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(DEPTH);
        let pool = Arc::new(BufferPool::default());
        let buffers = pool.clone();
        let handle = std::thread::Builder::new()
            .name("tpcflow-prefetch".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Populate(r) => r.run(),
                        Job::Fetch(r, reply) => {
                            // A window nobody waits for any more gives its
                            // buffer back.
                            if let Err(e) = reply.send(r.fetch(&buffers)) {
                                if let Fetched::Direct(w) = e.0 {
                                    buffers.give(w.into_buffer());
                                }
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            pool,
        })
    }

    /// Queue `r` without waiting; false when it was dropped (queue full).
    pub fn submit(&self, r: Readahead) -> bool {
        self.send(Job::Populate(r))
    }

    /// Queue `r` to be fetched (populated, or read directly when cold)
    /// without waiting; None when it was dropped (queue full): the window is
    /// then read through the map.
    pub fn fetch(&self, r: Readahead) -> Option<Pending> {
        let (reply, rx) = sync_channel(1);
        self.send(Job::Fetch(r, reply)).then_some(Pending(rx))
    }

    /// The rank's direct-read buffers (windows give theirs back here).
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn send(&self, job: Job) -> bool {
        match self.tx.as_ref().map(|tx| tx.try_send(job)) {
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
