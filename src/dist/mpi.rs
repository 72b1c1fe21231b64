//! [`Communicator`] over MPI, through the `mpi` crate's safe API (cargo feature `mpi`).
//!
//! MPI is initialised with `MPI_THREAD_SERIALIZED`: the training step runs on rayon workers,
//! so MPI calls may come from more than one thread, one at a time. Counts are `i32` in MPI;
//! longer messages go in rounds of at most [`Mpi::chunk`] elements per peer. A transport
//! failure aborts the job (MPI's default error handler), so every rank stops.

use std::cell::RefCell;

use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::request::{Request, Scope, scope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator as _;
use mpi::traits::*;

use super::comm::{Communicator, Progress, Wire, check_counts, check_root};
use crate::{Error, Result};

/// The MPI world of this job. Finalises MPI when dropped.
pub struct Mpi {
    world: SimpleCommunicator,
    chunk: usize,
    library: String,
    // Dropped last: MPI_Finalize.
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.rank(), self.size())
    }
}

impl Mpi {
    /// Initialise MPI (once per process) and take its world.
    ///
    /// # Errors
    ///
    /// [`Error::Communication`] when MPI was already initialised, or grants less than the
    /// serialised threading level the step needs.
    pub fn init() -> Result<Mpi> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Communication("MPI is already initialised".into()))?;
        if !matches!(level, Threading::Serialized | Threading::Multiple) {
            return Err(Error::Communication(format!(
                "MPI granted threading level {level:?}; the step needs Serialized (MPI calls \
                 from rayon workers, one at a time)"
            )));
        }
        let library = mpi::environment::library_version()
            .map(|v| v.lines().next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        Ok(Mpi {
            world: universe.world(),
            chunk: i32::MAX as usize,
            library,
            _universe: universe,
        })
    }

    /// The most elements one message to one peer carries (at most `i32::MAX`); smaller
    /// values make tests exercise the rounds.
    ///
    /// # Panics
    ///
    /// If `elements` is 0 or above `i32::MAX`.
    pub fn with_chunk(mut self, elements: usize) -> Mpi {
        assert!(
            elements > 0 && elements <= i32::MAX as usize,
            "chunk of {elements} elements outside 1..=i32::MAX"
        );
        self.chunk = elements;
        self
    }

    /// The chunk size in elements.
    pub fn chunk(&self) -> usize {
        self.chunk
    }
}

/// Requests in flight, which `work` may poke.
type Slots<'a, D, S> = RefCell<Vec<Option<Request<'a, D, S>>>>;

/// The requests of one collective, in flight beside `work`.
struct Pending<'a, D: ?Sized, S: Scope<'a>> {
    requests: Slots<'a, D, S>,
}

impl<'a, D: ?Sized, S: Scope<'a>> Pending<'a, D, S> {
    fn new(requests: impl IntoIterator<Item = Request<'a, D, S>>) -> Self {
        Pending {
            requests: RefCell::new(requests.into_iter().map(Some).collect()),
        }
    }

    /// Wait for every request still in flight.
    fn wait_all(self) {
        for r in self.requests.into_inner().into_iter().flatten() {
            r.wait();
        }
    }
}

impl<'a, D: ?Sized, S: Scope<'a>> Progress for Pending<'a, D, S> {
    fn poke(&self) {
        for slot in self.requests.borrow_mut().iter_mut() {
            if let Some(r) = slot.take() {
                *slot = r.test().err();
            }
        }
    }
}

fn to_i32(v: usize) -> i32 {
    i32::try_from(v).expect("chunked to fit i32")
}

/// Counts and displacements as MPI takes them (each fits `i32`: callers chunk).
fn counts_displs(counts: &[usize]) -> (Vec<i32>, Vec<i32>) {
    let mut at = 0usize;
    let displs = counts
        .iter()
        .map(|&c| {
            let d = to_i32(at);
            at += c;
            d
        })
        .collect();
    (counts.iter().map(|&c| to_i32(c)).collect(), displs)
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn describe(&self) -> String {
        format!("MPI, {} ranks ({})", self.size(), self.library)
    }
    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
    fn broadcast<T: Wire>(&self, buf: &mut [T], root: usize) -> Result<()> {
        check_root(root, self.size())?;
        let root = self.world.process_at_rank(root as i32);
        for part in buf.chunks_mut(self.chunk) {
            root.broadcast_into(part);
        }
        Ok(())
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        let mut all = vec![0u64; self.size()];
        self.world.all_gather_into(&value, &mut all[..]);
        Ok(all)
    }
    fn all_reduce_sum_while<R>(
        &self,
        buf: &mut [f32],
        work: impl FnOnce(&dyn Progress) -> R,
    ) -> Result<R> {
        let send = buf.to_vec();
        let result = scope(|sc| {
            let pending =
                Pending::new(send.chunks(self.chunk).zip(buf.chunks_mut(self.chunk)).map(
                    |(s, r)| {
                        self.world
                            .immediate_all_reduce_into(sc, s, r, SystemOperation::sum())
                    },
                ));
            let out = work(&pending);
            pending.wait_all();
            out
        });
        Ok(result)
    }
    fn all_to_all_v_while<T: Wire, R>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        work: impl FnOnce(&dyn Progress) -> R,
    ) -> Result<R> {
        let size = self.size();
        check_counts("all-to-all send", send_counts, size, send.len())?;
        check_counts("all-to-all receive", recv_counts, size, recv.len())?;
        // Every rank must take the same path and the same number of rounds: agree on the
        // largest count and buffer of any rank first (one small collective).
        let local = send_counts
            .iter()
            .chain(recv_counts)
            .copied()
            .chain([send.len(), recv.len()])
            .max()
            .unwrap_or(0);
        let largest = self
            .all_gather_u64(local as u64)?
            .into_iter()
            .max()
            .unwrap_or(0) as usize;
        if largest <= self.chunk {
            return Ok(self.a2a_round(send, send_counts, recv, recv_counts, work));
        }
        // Rounds: round q moves elements q * per.. of every peer's part, packed, so a round's
        // buffers hold at most `chunk` elements.
        let per = (self.chunk / size.max(1)).max(1);
        let rounds = largest.div_ceil(per);
        let starts = |c: &[usize]| -> Vec<usize> {
            c.iter()
                .scan(0, |a, &x| {
                    let s = *a;
                    *a += x;
                    Some(s)
                })
                .collect()
        };
        let (s_start, r_start) = (starts(send_counts), starts(recv_counts));
        // Messages this large are rare (2^31 elements to one peer): the work runs first and
        // the rounds after it, blocking, so no round is in flight beside another.
        let out = work(&super::comm::NoProgress);
        for q in 0..rounds {
            let part = |c: usize| c.saturating_sub(q * per).min(per);
            let sc: Vec<usize> = send_counts.iter().map(|&c| part(c)).collect();
            let rc: Vec<usize> = recv_counts.iter().map(|&c| part(c)).collect();
            let mut sbuf = Vec::with_capacity(sc.iter().sum());
            for (r, &n) in sc.iter().enumerate().filter(|(_, n)| **n > 0) {
                sbuf.extend_from_slice(&send[s_start[r] + q * per..][..n]);
            }
            let mut rbuf = vec![T::default(); rc.iter().sum()];
            {
                let (sc32, sd) = counts_displs(&sc);
                let (rc32, rd) = counts_displs(&rc);
                let send_part = Partition::new(&sbuf[..], sc32, sd);
                let mut recv_part = PartitionMut::new(&mut rbuf[..], rc32, rd);
                self.world
                    .all_to_all_varcount_into(&send_part, &mut recv_part);
            }
            let mut at = 0;
            for (r, &n) in rc.iter().enumerate().filter(|(_, n)| **n > 0) {
                recv[r_start[r] + q * per..][..n].copy_from_slice(&rbuf[at..at + n]);
                at += n;
            }
        }
        Ok(out)
    }
    fn gather_v<T: Wire>(&self, send: &[T], root: usize) -> Result<Vec<T>> {
        check_root(root, self.size())?;
        let counts = self.all_gather_u64(send.len() as u64)?;
        let total: u64 = counts.iter().sum();
        if counts.iter().any(|&c| c > self.chunk as u64) || total > self.chunk as u64 {
            // Rounds through the all-to-all path: everyone sends to root only.
            let size = self.size();
            let mut sc = vec![0usize; size];
            sc[root] = send.len();
            let rc: Vec<usize> = if self.rank() == root {
                counts.iter().map(|&c| c as usize).collect()
            } else {
                vec![0; size]
            };
            let mut recv = vec![T::default(); rc.iter().sum()];
            self.all_to_all_v_while(send, &sc, &mut recv, &rc, |_| ())?;
            return Ok(recv);
        }
        let root_proc = self.world.process_at_rank(root as i32);
        if self.rank() == root {
            let counts: Vec<i32> = counts.iter().map(|&c| to_i32(c as usize)).collect();
            let displs: Vec<i32> = counts
                .iter()
                .scan(0, |a, &c| {
                    let s = *a;
                    *a += c;
                    Some(s)
                })
                .collect();
            let mut recv = vec![T::default(); total as usize];
            {
                let mut part = PartitionMut::new(&mut recv[..], counts, displs);
                root_proc.gather_varcount_into_root(send, &mut part);
            }
            Ok(recv)
        } else {
            root_proc.gather_varcount_into(send);
            Ok(Vec::new())
        }
    }
}

impl Mpi {
    /// One all-to-all-v whose counts and displacements fit `i32`, with `work` beside it.
    fn a2a_round<T: Wire, R>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        work: impl FnOnce(&dyn Progress) -> R,
    ) -> R {
        let (sc, sd) = counts_displs(send_counts);
        let (rc, rd) = counts_displs(recv_counts);
        let send_part = Partition::new(send, sc, sd);
        let mut recv_part = PartitionMut::new(recv, rc, rd);
        scope(|s| {
            let request =
                self.world
                    .immediate_all_to_all_varcount_into(s, &send_part, &mut recv_part);
            let pending = Pending::new([request]);
            let out = work(&pending);
            pending.wait_all();
            out
        })
    }
}
