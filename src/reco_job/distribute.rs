//! Dynamic work distribution over MPI ranks.
//!
//! Every rank starts on the unit of its own rank number (no message, so a rank
//! that starts late on another node still gets work, and the start costs no
//! round trip). Rank 0 holds the counter of the units after those and works
//! too; a server thread on rank 0 answers the other ranks' requests whatever
//! rank 0's own work is doing: it polls with a non-blocking probe every
//! [`POLL`] and sleeps in between, so it takes no core (polling every 0.5 ms
//! cost rank 0 ~5 % of its reconstruction speed: ~25 us per wake-up on its
//! core). A request waits up to a poll; asking ahead (below) hides that, so
//! the poll can be slow. The connection between two ranks is set up before
//! any work, by a first message each rank exchanges with rank 0's main thread
//! ([`WorkQueue::new`]). Requests are served by their own thread, not between
//! rank 0's batches, which would leave a rank idle for up to a batch per
//! request. With one rank this is a plain loop.
//!
//! A rank asks for its next unit near the end of its current one (the job
//! asks with a pod window left, [`WorkQueue::ask_ahead`]), so that it
//! knows the unit before it needs it and its input is read ahead
//! (`crate::raw::prefetch`) while the current unit finishes; asking earlier
//! would keep a unit from the other ranks longer and unbalance the end of the
//! job.
//!
//! MPI: the server thread is the only thread of rank 0 that calls MPI while
//! units are handed out (rank 0's main thread takes units from the shared
//! counter and calls MPI again only after [`WorkQueue::drain`] joined the
//! server), so `MPI_THREAD_SERIALIZED` is enough; see [`REQUIRED_THREADING`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Result};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use super::ranks::Ranks;

const TAG_REQUEST: i32 = 101;
const TAG_ASSIGN: i32 = 102;
const NONE: u64 = u64::MAX;
/// A request that asks for no unit: answered with itself (see
/// [`WorkQueue::new`]).
const HELLO: u64 = u64::MAX - 1;
/// How long the server sleeps when no request is waiting: 100 wake-ups a
/// second (~0.25 % of rank 0's core); a rank asks ahead by ~0.1 s of work.
pub const POLL: Duration = Duration::from_millis(10);

/// The MPI thread level `tpcflow reco` asks for: rank 0's server thread and
/// its main thread call MPI, never at the same time.
pub const REQUIRED_THREADING: Threading = Threading::Serialized;

/// Check the thread level the MPI library gave (needed only with several ranks).
///
/// # Errors
/// When the library provides less than [`REQUIRED_THREADING`] to a job of
/// more than one rank.
pub fn check_threading(provided: Threading, size: i32) -> Result<()> {
    if size > 1 && provided < REQUIRED_THREADING {
        bail!(
            "the MPI library provides thread level {provided:?}; `tpcflow reco` with {size} ranks \
             needs {REQUIRED_THREADING:?} (rank 0 serves work requests on a thread). Open MPI, \
             MPICH and Cray MPICH provide it by default"
        );
    }
    Ok(())
}

/// Rank 0's counter of units not yet handed out.
#[derive(Debug)]
struct Counter {
    next: AtomicU64,
    n_units: u64,
}

impl Counter {
    fn take(&self) -> u64 {
        self.next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.n_units).then_some(n + 1)
            })
            .unwrap_or(NONE)
    }
}

/// Rank 0's server: answers requests until every other rank was told to stop
/// (or `quit` is set, when rank 0 gives up).
fn serve(counter: &Counter, others: i32, quit: &AtomicBool) {
    let world = SimpleCommunicator::world();
    let mut stopped = 0;
    while stopped < others && !quit.load(Ordering::Acquire) {
        let Some(status) = world.any_process().immediate_probe_with_tag(TAG_REQUEST) else {
            std::thread::sleep(POLL);
            continue;
        };
        let source = world.process_at_rank(status.source_rank());
        let (_msg, _status) = source.receive_with_tag::<u64>(TAG_REQUEST);
        let unit = counter.take();
        if unit == NONE {
            stopped += 1;
        }
        source.send_with_tag(&unit, TAG_ASSIGN);
    }
}

/// Hands out unit indices 0..n, each exactly once across all ranks.
#[allow(missing_debug_implementations)] // SimpleCommunicator has no Debug
pub struct WorkQueue<'a> {
    world: Ranks<'a>,
    rank: i32,
    counter: Arc<Counter>,
    server: Option<JoinHandle<()>>,
    quit: Arc<AtomicBool>,
    /// This rank's next unit when already known: its first one (taken
    /// without asking), or one asked for ahead ([`WorkQueue::ask_ahead`]).
    ahead: Option<u64>,
    /// A request sent to rank 0 whose answer was not received yet.
    asked: bool,
    /// Units this rank took.
    pub taken: u64,
}

impl<'a> WorkQueue<'a> {
    /// A queue of `n_units` over `world`; on rank 0 of several, starts the
    /// server thread (MPI must provide [`REQUIRED_THREADING`]). First every
    /// other rank exchanges a message with rank 0's main thread: the first
    /// message between two ranks on different nodes sets up their connection.
    /// At a rank's first request for a unit that took 40-90 ms here (3-7 % of
    /// its busy time in a short job), and answered by the server's 10 ms polls
    /// 40-70 ms, which also started that rank late; now it is start-up, like
    /// `MPI_Init`, and the ranks start their work together.
    ///
    /// # Errors
    /// When the server thread cannot be started.
    pub fn new(world: Ranks<'a>, n_units: usize) -> Result<Self> {
        let (rank, size, n) = (world.rank(), world.size(), n_units as u64);
        let counter = Arc::new(Counter {
            next: AtomicU64::new((size as u64).min(n)),
            n_units: n,
        });
        // Every other rank exchanges a first message with rank 0, whose main
        // thread answers them all before any rank starts working.
        let mpi = world.mpi().filter(|_| size > 1);
        if let (Some(world), 0) = (mpi, rank) {
            for _ in 1..size {
                let (msg, status) = world.any_process().receive_with_tag::<u64>(TAG_REQUEST);
                if msg != HELLO {
                    bail!(
                        "rank 0: a first message from rank {} was {msg}, not {HELLO}",
                        status.source_rank()
                    );
                }
                world
                    .process_at_rank(status.source_rank())
                    .send_with_tag(&HELLO, TAG_ASSIGN);
            }
        } else if let Some(world) = mpi {
            let t = std::time::Instant::now();
            let root = world.process_at_rank(0);
            root.send_with_tag(&HELLO, TAG_REQUEST);
            let (answer, _) = root.receive_with_tag::<u64>(TAG_ASSIGN);
            tracing::debug!(
                rank,
                ms = t.elapsed().as_secs_f64() * 1e3,
                "first message to rank 0 answered"
            );
            if answer != HELLO {
                bail!("rank {rank}: rank 0 answered {answer} to a first message, not {HELLO}");
            }
        }
        let quit = Arc::new(AtomicBool::new(false));
        let server = if rank == 0 && size > 1 {
            let (c, q) = (counter.clone(), quit.clone());
            Some(
                std::thread::Builder::new()
                    .name("tpcflow-workq".into())
                    .spawn(move || serve(&c, size - 1, &q))?,
            )
        } else {
            None
        };
        Ok(Self {
            world,
            rank,
            counter,
            server,
            quit,
            ahead: Some(rank as u64).filter(|&r| r < n),
            asked: false,
            taken: 0,
        })
    }

    /// Rank 0, seen from a rank other than 0 (which exist only with MPI).
    ///
    /// # Panics
    /// On a job without MPI, which has rank 0 alone and never asks it.
    fn root(&self) -> mpi::topology::Process<'a> {
        self.world
            .mpi()
            .expect("a rank other than 0 exists only with MPI")
            .process_at_rank(0)
    }

    /// Units handed out so far (rank 0's count: each rank's first unit and
    /// every one assigned since); 0 elsewhere.
    pub fn handed_out(&self) -> u64 {
        if self.rank == 0 {
            self.counter.next.load(Ordering::Acquire)
        } else {
            0
        }
    }

    /// Ask for this rank's next unit now, while the current one is still
    /// being worked on (near its end: a unit asked for early is a unit the
    /// other ranks cannot take), so that [`WorkQueue::peek_ahead`] can tell
    /// which one it is before [`WorkQueue::next_unit`] and its input can be
    /// read ahead. Does nothing when the next unit is known or asked for.
    pub fn ask_ahead(&mut self) {
        if self.ahead.is_some() || self.asked {
            return;
        }
        if self.rank == 0 {
            self.ahead = Some(self.counter.take());
        } else {
            self.root().send_with_tag(&(self.rank as u64), TAG_REQUEST);
            self.asked = true;
        }
    }

    /// The next unit if it is known already (taken, or its answer arrived:
    /// checked without waiting); None when unknown or when there is none.
    pub fn peek_ahead(&mut self) -> Option<usize> {
        if self.asked {
            let root = self.root();
            if root.immediate_probe_with_tag(TAG_ASSIGN).is_some() {
                self.ahead = Some(root.receive_with_tag::<u64>(TAG_ASSIGN).0);
                self.asked = false;
            }
        }
        self.ahead.filter(|&u| u != NONE).map(|u| u as usize)
    }

    /// The next unit for this rank, or None when all are handed out.
    pub fn next_unit(&mut self) -> Option<usize> {
        let unit = if let Some(known) = self.ahead.take() {
            known
        } else if self.rank == 0 {
            self.counter.take()
        } else {
            let root = self.root();
            if !std::mem::take(&mut self.asked) {
                root.send_with_tag(&(self.rank as u64), TAG_REQUEST);
            }
            root.receive_with_tag::<u64>(TAG_ASSIGN).0
        };
        if unit == NONE {
            None
        } else {
            self.taken += 1;
            Some(unit as usize)
        }
    }

    /// On rank 0, after its own last unit: wait until the server told every
    /// rank to stop. Rank 0 may call MPI again after this.
    pub fn drain(&mut self) {
        if let Some(server) = self.server.take() {
            // A panic on the server thread is re-raised here, on rank 0's main
            // thread, which then fails the job.
            if let Err(panic) = server.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for WorkQueue<'_> {
    /// Rank 0 leaving early (an error): stop the server before MPI is
    /// finalised, so no thread calls MPI after that.
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Release);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_hands_out_each_unit_once_then_none() {
        let c = Counter {
            next: AtomicU64::new(2),
            n_units: 5,
        };
        let got: Vec<u64> = (0..5).map(|_| c.take()).collect();
        assert_eq!(got, vec![2, 3, 4, NONE, NONE]);
    }

    #[test]
    fn the_counter_is_exact_under_contention() {
        let c = Arc::new(Counter {
            next: AtomicU64::new(0),
            n_units: 10_000,
        });
        let mut all: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let c = c.clone();
                    s.spawn(move || {
                        std::iter::from_fn(|| Some(c.take()).filter(|&u| u != NONE))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn one_rank_needs_no_thread_level_several_need_serialized() {
        assert!(check_threading(Threading::Single, 1).is_ok());
        assert!(check_threading(Threading::Serialized, 4).is_ok());
        assert!(check_threading(Threading::Multiple, 4).is_ok());
        let e = check_threading(Threading::Funneled, 2).unwrap_err();
        assert!(format!("{e}").contains("Serialized"), "{e}");
    }
}
