//! The collectives the hybrid-parallel step needs, behind one trait: [`Communicator`].
//!
//! [`Local`] is the single-process implementation (rank 0 of 1: every collective is a copy,
//! or nothing), so the distributed code path runs and is tested without MPI. [`Mpi`] (cargo
//! feature `mpi`) runs them over MPI through the `mpi` crate.
//!
//! The collectives that the step overlaps with computation take that computation as a
//! closure: `all_to_all_v_while(send, .., recv, .., |progress| work(progress))` starts the
//! collective, runs `work` while it is in flight and waits for it before returning, whatever
//! `work` returns (so an early `?` inside `work` never leaves a request pending). MPI makes
//! progress on a non-blocking collective only inside MPI calls; `work` calls
//! [`Progress::poke`] between its compute blocks to give it that chance. Nesting is how
//! several collectives overlap: a bucketed gradient reduction starts the next bucket's
//! reduction inside the previous one's `work`.
//!
//! ```
//! use dlrm_kernels::dist::{Communicator, Local};
//!
//! let comm = Local;
//! let mut grads = vec![1.0f32, 2.0];
//! let before = comm.all_reduce_sum_while(&mut grads, |progress| {
//!     progress.poke(); // between compute blocks
//!     3
//! })?;
//! assert_eq!((before, grads), (3, vec![1.0, 2.0])); // one rank: the sum is itself
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use crate::{Error, Result};

/// Element types the collectives move: plain numbers, sent as they are (bf16 as its `u16`
/// bits).
pub trait Wire: Copy + Default + Send + Sync + 'static + WireBound {}

/// What the MPI build needs of a [`Wire`] type (nothing without the `mpi` feature).
#[cfg(feature = "mpi")]
pub trait WireBound: mpi::traits::Equivalence {}
/// What the MPI build needs of a [`Wire`] type (nothing without the `mpi` feature).
#[cfg(not(feature = "mpi"))]
pub trait WireBound {}

macro_rules! wire {
    ($($t:ty),*) => { $( impl WireBound for $t {} impl Wire for $t {} )* };
}
wire!(f32, u16, u32, u64, i64, u8);

/// Lets work running beside a collective drive it forward.
pub trait Progress {
    /// Give the collectives in flight a chance to progress (an `MPI_Test`); cheap.
    fn poke(&self);
}

/// A [`Progress`] with nothing to drive.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn poke(&self) {}
}

/// The collectives of the hybrid-parallel step. Counts are in elements; rank `r`'s part of a
/// buffer is the `counts[r]` elements after those of ranks `0..r`.
///
/// # Errors
///
/// Every method returns [`Error::Config`] for buffers that do not match their counts, and
/// the MPI implementation [`Error::Communication`] for a failure of the transport.
pub trait Communicator {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// What this is, for reports (`"single process"`, `"MPI (Open MPI ...)"`).
    fn describe(&self) -> String;
    /// Wait until every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// `buf` on every rank becomes `root`'s.
    fn broadcast<T: Wire>(&self, buf: &mut [T], root: usize) -> Result<()>;
    /// One value from every rank, in rank order, on every rank.
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>>;
    /// `buf` becomes the element-wise sum of every rank's `buf`, while `work` runs.
    fn all_reduce_sum_while<R>(
        &self,
        buf: &mut [f32],
        work: impl FnOnce(&dyn Progress) -> R,
    ) -> Result<R>;
    /// Rank `r` receives, in `recv` at rank `s`'s place, what rank `s` sent it from its
    /// `send` at `r`'s place; while `work` runs.
    fn all_to_all_v_while<T: Wire, R>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        work: impl FnOnce(&dyn Progress) -> R,
    ) -> Result<R>;
    /// Every rank's `send`, concatenated in rank order, on `root` (other ranks get an empty
    /// vector).
    fn gather_v<T: Wire>(&self, send: &[T], root: usize) -> Result<Vec<T>>;
}

/// Check that `counts` has one entry per rank and that they sum to `len`.
pub(crate) fn check_counts(what: &str, counts: &[usize], ranks: usize, len: usize) -> Result<()> {
    if counts.len() != ranks {
        return Err(Error::Config(format!(
            "{what}: {} counts for {ranks} ranks",
            counts.len()
        )));
    }
    let total = counts
        .iter()
        .try_fold(0usize, |a, &c| a.checked_add(c))
        .ok_or_else(|| Error::Config(format!("{what}: the counts overflow")))?;
    if total != len {
        return Err(Error::Config(format!(
            "{what}: counts add up to {total} elements, the buffer holds {len}"
        )));
    }
    Ok(())
}

/// One process: rank 0 of 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Communicator for Local {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn describe(&self) -> String {
        "single process".into()
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn broadcast<T: Wire>(&self, _buf: &mut [T], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        Ok(vec![value])
    }
    fn all_reduce_sum_while<R>(
        &self,
        _buf: &mut [f32],
        work: impl FnOnce(&dyn Progress) -> R,
    ) -> Result<R> {
        Ok(work(&NoProgress))
    }
    fn all_to_all_v_while<T: Wire, R>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        work: impl FnOnce(&dyn Progress) -> R,
    ) -> Result<R> {
        check_counts("all-to-all send", send_counts, 1, send.len())?;
        check_counts("all-to-all receive", recv_counts, 1, recv.len())?;
        if send.len() != recv.len() {
            return Err(Error::Config(format!(
                "all-to-all: rank 0 sends itself {} elements but expects {}",
                send.len(),
                recv.len()
            )));
        }
        recv.copy_from_slice(send);
        Ok(work(&NoProgress))
    }
    fn gather_v<T: Wire>(&self, send: &[T], root: usize) -> Result<Vec<T>> {
        check_root(root, 1)?;
        Ok(send.to_vec())
    }
}

/// `root` is a rank.
pub(crate) fn check_root(root: usize, size: usize) -> Result<()> {
    if root < size {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "root rank {root} outside the {size} ranks"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_collectives_copy_and_check_their_counts() {
        let c = Local;
        let mut recv = [0u16; 3];
        let got = c.all_to_all_v_while(&[1u16, 2, 3], &[3], &mut recv, &[3], |_| 7);
        assert_eq!(got.unwrap(), 7);
        assert_eq!(recv, [1, 2, 3]);
        let err = c.all_to_all_v_while(&[1u16, 2], &[3], &mut recv, &[3], |_| ());
        assert!(err.unwrap_err().to_string().contains("add up to 3"));
        assert_eq!(c.gather_v(&[5i64], 0).unwrap(), vec![5]);
        assert!(c.gather_v(&[5i64], 1).is_err());
        assert_eq!(c.all_gather_u64(9).unwrap(), vec![9]);
    }
}
