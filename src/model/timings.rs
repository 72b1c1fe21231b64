//! Where the time of the training steps goes, by part.

use std::time::{Duration, Instant};

/// Time spent in each part of the training steps since the last reset.
///
/// ```
/// let t = dlrm_kernels::model::StepTimings::default();
/// assert_eq!(t.total(), std::time::Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimings {
    /// Steps measured.
    pub steps: u64,
    /// Embedding forward and fused backward + update.
    pub embedding: Duration,
    /// Bottom and top MLP forward, backward and update.
    pub mlp: Duration,
    /// Interaction forward and backward.
    pub interaction: Duration,
    /// Loss, layout conversions and the rest.
    pub other: Duration,
}

impl StepTimings {
    /// Sum of the parts.
    ///
    /// ```
    /// let mut t = dlrm_kernels::model::StepTimings::default();
    /// t.mlp = std::time::Duration::from_millis(3);
    /// assert_eq!(t.total().as_millis(), 3);
    /// ```
    pub fn total(&self) -> Duration {
        self.embedding + self.mlp + self.interaction + self.other
    }
}

/// Time `f` into `slot`.
pub(crate) fn timed<R>(slot: &mut Duration, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    *slot += t.elapsed();
    r
}
