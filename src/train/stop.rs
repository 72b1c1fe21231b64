//! Stopping a run cleanly from outside: after the current step, never in the middle of
//! writing a checkpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A handle that asks a run to stop after the current step (cloned freely: every clone is
/// the same handle). A signal handler, another thread or an observer calls
/// [`Stop::request`]; the [`Trainer`](super::Trainer) looks at [`Stop::requested`] after
/// every step and between evaluation batches. Whoever writes a checkpoint holds
/// [`Stop::hold`] while writing, so a handler that must end the process at once can wait
/// for the write to finish first ([`Stop::hold`] there too) and never leave a partial file.
///
/// ```
/// use dlrm_kernels::train::Stop;
/// let stop = Stop::new();
/// let handler = stop.clone();
/// assert!(!stop.requested());
/// assert_eq!(handler.request(), 1); // the first request
/// assert!(stop.requested());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    /// Requests so far.
    requests: AtomicUsize,
    /// Held while a checkpoint is written.
    writing: Mutex<()>,
}

impl Stop {
    /// A handle no one has asked to stop yet.
    ///
    /// ```
    /// assert!(!dlrm_kernels::train::Stop::new().requested());
    /// ```
    pub fn new() -> Self {
        Stop::default()
    }

    /// Ask the run to stop after the current step; returns how many times it has been
    /// asked, this time included (a signal handler stops at once on the second).
    ///
    /// ```
    /// let stop = dlrm_kernels::train::Stop::new();
    /// stop.request();
    /// assert_eq!(stop.request(), 2);
    /// ```
    pub fn request(&self) -> usize {
        self.0.requests.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Whether a stop was asked for.
    ///
    /// ```
    /// let stop = dlrm_kernels::train::Stop::new();
    /// assert!(!stop.requested());
    /// ```
    pub fn requested(&self) -> bool {
        self.0.requests.load(Ordering::SeqCst) > 0
    }

    /// Hold the write lock: while the guard lives, no one else holding it runs (a
    /// checkpoint being written, a handler about to end the process).
    ///
    /// ```
    /// let stop = dlrm_kernels::train::Stop::new();
    /// let _writing = stop.hold();
    /// ```
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        self.0
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
