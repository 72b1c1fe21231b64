//! The worker threads the library's passes run on.
//!
//! Every parallel pass runs on the current rayon pool, and gives the same bits whatever its
//! size. [`pool`] builds one of a given size and can pin its workers to CPUs, one each, so a
//! worker keeps its L1 and L2 (the GEMM operand panels, the prefetched embedding rows) for
//! the whole run instead of leaving them behind when the scheduler moves it (what that
//! gained where it was measured: BENCHMARKS.md). The trainer pins with `--pin-threads true`.
//!
//! Pin only on a machine given to one run: two pools pinned to the same CPUs halve each
//! other. Threads a pinned worker starts inherit its CPU, and
//! `std::thread::available_parallelism` on a pinned worker says 1.
//!
//! ```
//! use dlrm_kernels::model::{Dlrm, DlrmConfig};
//! let workers = dlrm_kernels::threads::pool(1, true)?;
//! match &workers.pinned {
//!     Some(cpus) => println!("worker 0 runs on CPU {}", cpus[0]),
//!     None => println!("not pinned (not Linux, or fewer CPUs than workers)"),
//! }
//! let model = workers.pool.install(|| Dlrm::new(DlrmConfig::tiny(), 1))?;
//! # let _ = model;
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::kernels::affinity;

/// A rayon pool built by [`pool`], and where its workers run.
#[derive(Debug)]
pub struct Workers {
    /// The pool: run work on it with `workers.pool.install(|| ...)`.
    pub pool: rayon::ThreadPool,
    /// The CPU each worker is pinned to (worker `i` on `pinned[i]`), or `None` where the
    /// workers are left to the OS scheduler.
    pub pinned: Option<Vec<usize>>,
}

/// A pool of `threads` workers. With `pin`, worker `i` is pinned to the `i`-th CPU the
/// calling thread may use, where that is possible: on Linux, with at least `threads` such
/// CPUs. Otherwise (or without `pin`) the workers are not pinned; [`Workers::pinned`] says
/// which happened.
///
/// # Errors
///
/// [`Error::Config`] for zero threads, or if the pool cannot be built or a worker cannot be
/// pinned (the OS error is given); nothing is left running.
///
/// ```
/// let w = dlrm_kernels::threads::pool(2, false)?;
/// assert_eq!(w.pool.current_num_threads(), 2);
/// assert!(w.pinned.is_none());
/// assert!(dlrm_kernels::threads::pool(0, true).is_err());
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub fn pool(threads: usize, pin: bool) -> Result<Workers> {
    if threads == 0 {
        return Err(Error::Config(
            "a thread pool needs at least 1 thread".into(),
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Config(format!("building a pool of {threads} threads: {e}")))?;
    let cpus = if pin { pin_cpus(threads) } else { None };
    if let Some(cpus) = &cpus {
        let pinned = pool.broadcast(|ctx| affinity::pin_current_thread(cpus[ctx.index()]));
        for (i, res) in pinned.into_iter().enumerate() {
            res.map_err(|e| Error::Config(format!("pinning worker {i} to CPU {}: {e}", cpus[i])))?;
        }
    }
    Ok(Workers { pool, pinned: cpus })
}

/// The CPUs [`pool`] pins `threads` workers to: the first `threads` the calling thread may
/// use, or `None` where there are fewer or the system cannot say.
///
/// ```
/// if let Some(cpus) = dlrm_kernels::threads::pin_cpus(1) {
///     assert_eq!(cpus.len(), 1);
/// }
/// assert_eq!(dlrm_kernels::threads::pin_cpus(1 << 20), None);
/// ```
pub fn pin_cpus(threads: usize) -> Option<Vec<usize>> {
    let cpus = affinity::allowed_cpus().ok()?;
    (cpus.len() >= threads).then(|| cpus[..threads].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_workers_each_run_on_their_own_cpu() {
        let Some(cpus) = pin_cpus(1) else {
            return; // not Linux: nothing to pin
        };
        let w = pool(1, true).unwrap();
        assert_eq!(w.pinned.as_deref(), Some(&cpus[..]));
        let seen = w.pool.install(|| affinity::allowed_cpus().unwrap());
        assert_eq!(seen, cpus);
        // More workers than CPUs: left unpinned, still usable.
        let many = affinity::allowed_cpus().unwrap().len() + 1;
        let w = pool(many, true).unwrap();
        assert!(w.pinned.is_none());
        assert_eq!(w.pool.install(rayon::current_num_threads), many);
    }
}
