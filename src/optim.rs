//! Learning-rate policy of the DLRM reference: linear warm-up, then polynomial (power 2)
//! decay, with a floor of `1e-7` once decay has started.
//!
//! ```
//! use dlrm_kernels::optim::LrPolicy;
//! let p = LrPolicy { base_lr: 1.0, warmup_steps: 10, decay_start_step: 20, decay_steps: 10 };
//! assert_eq!(p.lr(5), 0.5);     // warming up
//! assert_eq!(p.lr(15), 1.0);    // flat
//! assert_eq!(p.lr(25), 0.25);   // ((10 - 5) / 10)^2
//! assert_eq!(p.lr(40), 1e-7);   // decayed to the floor
//! ```

/// The reference's `LRPolicyScheduler`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrPolicy {
    /// The learning rate after warm-up and before decay.
    pub base_lr: f32,
    /// Steps of linear warm-up (0: none).
    pub warmup_steps: u64,
    /// Step at which decay starts.
    pub decay_start_step: u64,
    /// Steps over which the rate decays to the floor (0: no decay).
    pub decay_steps: u64,
}

/// The floor once decay has started.
pub const MIN_LR: f32 = 1e-7;

impl LrPolicy {
    /// A constant rate.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::optim::LrPolicy::constant(0.1).lr(1000), 0.1);
    /// ```
    pub fn constant(base_lr: f32) -> Self {
        LrPolicy {
            base_lr,
            warmup_steps: 0,
            decay_start_step: 0,
            decay_steps: 0,
        }
    }

    /// The rate for step `step` (counted from 1, as the reference's scheduler counts).
    ///
    /// ```
    /// let p = dlrm_kernels::optim::LrPolicy { base_lr: 2.0, warmup_steps: 4, decay_start_step: 0, decay_steps: 0 };
    /// assert_eq!(p.lr(1), 0.5);
    /// ```
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            let scale = 1.0 - (self.warmup_steps - step) as f64 / self.warmup_steps as f64;
            (self.base_lr as f64 * scale) as f32
        } else if self.decay_steps > 0
            && step >= self.decay_start_step
            && step < self.decay_start_step + self.decay_steps
        {
            let decayed = (step - self.decay_start_step) as f64;
            let n = self.decay_steps as f64;
            let scale = ((n - decayed) / n).powi(2);
            ((self.base_lr as f64 * scale) as f32).max(MIN_LR)
        } else if self.decay_steps > 0 && step >= self.decay_start_step + self.decay_steps {
            MIN_LR
        } else {
            self.base_lr
        }
    }
}
