//! Output files made durable on a background thread.
//!
//! Finishing a unit's RQ file ends with waits on the disk: fsync of the file,
//! rename, fsync of the directory, then the result record (written, fsynced,
//! renamed). On a one-CPU rank those waits would keep the CPU idle; here they
//! overlap the next unit's reconstruction. Order is kept per
//! file (the record is written only after its RQ file is final), so a crash
//! leaves at worst a complete RQ file without its record, which the
//! dispatcher treats as not done.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};

type Task = Box<dyn FnOnce() -> Result<()> + Send>;

/// Runs finishing tasks in order on one thread; [`Finisher::wait`] returns the
/// first error (the later tasks still run: other files are not held back).
pub(crate) struct Finisher {
    tx: Mutex<Option<SyncSender<Task>>>,
    handle: Mutex<Option<JoinHandle<Result<()>>>>,
}

impl std::fmt::Debug for Finisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Finisher")
    }
}

impl Finisher {
    /// Start the thread; at most `depth` tasks wait (then `submit` blocks:
    /// a slow disk slows the rank down instead of piling up work).
    pub(crate) fn start(depth: usize) -> Result<Self> {
        let (tx, rx) = sync_channel::<Task>(depth);
        let handle = std::thread::Builder::new()
            .name("tpcflow-finisher".into())
            .spawn(move || {
                let mut first: Result<()> = Ok(());
                for task in rx {
                    let r = task();
                    if first.is_ok() {
                        first = r;
                    }
                }
                first
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Queue `task`.
    ///
    /// # Errors
    /// When the finisher has already been waited for or its thread is gone.
    pub(crate) fn submit(&self, task: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
        let tx = self
            .tx
            .lock()
            .map_err(|_| anyhow!("finisher lock poisoned"))?;
        tx.as_ref()
            .ok_or_else(|| anyhow!("finisher already closed"))?
            .send(Box::new(task))
            .map_err(|_| anyhow!("finisher thread ended"))
    }

    /// Run every queued task to its end; the first error.
    ///
    /// # Errors
    /// The first task's error, or a panicked finisher thread.
    pub(crate) fn wait(&self) -> Result<()> {
        drop(
            self.tx
                .lock()
                .map_err(|_| anyhow!("finisher lock poisoned"))?
                .take(),
        );
        let handle = self
            .handle
            .lock()
            .map_err(|_| anyhow!("finisher lock poisoned"))?
            .take();
        match handle {
            Some(h) => h
                .join()
                .map_err(|_| anyhow!("the finisher thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        // Never leave work behind silently: finish what was queued.
        let _ = self.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn tasks_run_in_order_and_the_first_error_is_returned_after_all_ran() {
        let f = Finisher::start(2).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ran = Arc::new(AtomicUsize::new(0));
        for i in 0..6 {
            let (seen, ran) = (seen.clone(), ran.clone());
            f.submit(move || {
                seen.lock().unwrap().push(i);
                ran.fetch_add(1, Ordering::SeqCst);
                if i == 2 || i == 4 {
                    anyhow::bail!("task {i} failed");
                }
                Ok(())
            })
            .unwrap();
        }
        let err = f.wait().unwrap_err().to_string();
        assert_eq!(err, "task 2 failed");
        assert_eq!(ran.load(Ordering::SeqCst), 6);
        assert_eq!(*seen.lock().unwrap(), (0..6).collect::<Vec<_>>());
        assert!(f.submit(|| Ok(())).is_err(), "closed after wait");
    }
}
