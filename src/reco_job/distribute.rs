//! Dynamic work distribution over MPI ranks.
//!
//! Every rank starts on the unit of its own rank number (no message, so a rank
//! that starts late on another node still gets work, and the start costs no
//! round trip). Rank 0 holds the counter of the units after those and works
//! too: between batches of its own events it answers the other ranks'
//! requests (non-blocking probe), so a rank that finishes early gets the next
//! unit at once. With one rank this is a plain loop.

use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

const TAG_REQUEST: i32 = 101;
const TAG_ASSIGN: i32 = 102;
const NONE: u64 = u64::MAX;

/// Hands out unit indices 0..n, each exactly once across all ranks.
#[allow(missing_debug_implementations)] // SimpleCommunicator has no Debug
pub struct WorkQueue<'a> {
    world: &'a SimpleCommunicator,
    rank: i32,
    size: i32,
    next: u64,
    n_units: u64,
    stopped: i32,
    /// This rank's first unit, taken without asking.
    first: Option<u64>,
    /// Units this rank took.
    pub taken: u64,
}

impl<'a> WorkQueue<'a> {
    /// A queue of `n_units` over `world`.
    pub fn new(world: &'a SimpleCommunicator, n_units: usize) -> Self {
        let (rank, size, n) = (world.rank(), world.size(), n_units as u64);
        Self {
            world,
            rank,
            size,
            next: (size as u64).min(n),
            n_units: n,
            stopped: 0,
            first: Some(rank as u64).filter(|&r| r < n),
            taken: 0,
        }
    }

    fn take_local(&mut self) -> u64 {
        if self.next < self.n_units {
            self.next += 1;
            self.next - 1
        } else {
            NONE
        }
    }

    /// On rank 0: answer every pending request without blocking. Elsewhere: nothing.
    pub fn serve(&mut self) {
        if self.rank != 0 {
            return;
        }
        while let Some(status) = self
            .world
            .any_process()
            .immediate_probe_with_tag(TAG_REQUEST)
        {
            self.answer(status.source_rank());
        }
    }

    fn answer(&mut self, source: i32) {
        let (_msg, _status) = self
            .world
            .process_at_rank(source)
            .receive_with_tag::<u64>(TAG_REQUEST);
        let unit = self.take_local();
        if unit == NONE {
            self.stopped += 1;
        }
        self.world
            .process_at_rank(source)
            .send_with_tag(&unit, TAG_ASSIGN);
    }

    /// Units handed out so far (rank 0's count: each rank's first unit and
    /// every one assigned since); 0 elsewhere.
    pub fn handed_out(&self) -> u64 {
        if self.rank == 0 {
            self.next
        } else {
            0
        }
    }

    /// The next unit for this rank, or None when all are handed out.
    pub fn next_unit(&mut self) -> Option<usize> {
        let unit = if let Some(first) = self.first.take() {
            first
        } else if self.rank == 0 {
            self.serve();
            self.take_local()
        } else {
            self.world
                .process_at_rank(0)
                .send_with_tag(&(self.rank as u64), TAG_REQUEST);
            self.world
                .process_at_rank(0)
                .receive_with_tag::<u64>(TAG_ASSIGN)
                .0
        };
        if unit == NONE {
            None
        } else {
            self.taken += 1;
            Some(unit as usize)
        }
    }

    /// On rank 0, after its own last unit: answer until every rank was told to stop.
    pub fn drain(&mut self) {
        if self.rank != 0 {
            return;
        }
        while self.stopped < self.size - 1 {
            let (status, _) = (self.world.any_process().probe_with_tag(TAG_REQUEST), ());
            self.answer(status.source_rank());
        }
    }
}
