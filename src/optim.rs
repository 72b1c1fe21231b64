//! Optimizers and the learning-rate schedule.
//!
//! Each group of parameters has its optimizer, a value: the embedding tables a
//! [`TableOptimizer`] (SGD or the reference's row-wise Adagrad), the MLPs an
//! [`MlpOptimizer`] (SGD). At each step the schedule ([`LrPolicy`], the DLRM reference's:
//! linear warm-up, then polynomial (power 2) decay, with a floor of `1e-7` once decay has
//! started) gives the learning rate, and [`Optimizers::at`] turns the choices into the
//! updates the passes apply ([`TableUpdate`], [`DenseUpdate`]), which is what they take
//! instead of a bare learning rate. How a weight is stored (fp32, or bf16 Split-SGD halves)
//! is the model's precision, not an optimizer: every update is exact fp32 either way.
//!
//! ```
//! use dlrm_kernels::optim::LrPolicy;
//! let p = LrPolicy { base_lr: 1.0, warmup_steps: 10, decay_start_step: 20, decay_steps: 10 };
//! assert_eq!(p.lr(5), 0.5);     // warming up
//! assert_eq!(p.lr(15), 1.0);    // flat
//! assert_eq!(p.lr(25), 0.25);   // ((10 - 5) / 10)^2
//! assert_eq!(p.lr(40), 1e-7);   // decayed to the floor
//! ```

use crate::error::{Error, Result, parse_name};

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

/// The optimizer of the embedding tables.
///
/// ```
/// use dlrm_kernels::optim::{TableOptimizer, TableUpdate};
/// assert_eq!("rwsadagrad".parse::<TableOptimizer>()?, TableOptimizer::RowwiseAdagrad);
/// assert_eq!(TableOptimizer::Sgd.at(0.5), TableUpdate::Sgd { lr: 0.5 });
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TableOptimizer {
    /// Plain SGD on the looked-up rows.
    #[default]
    Sgd,
    /// The DLRM reference's row-wise sparse Adagrad (`rwsadagrad`).
    RowwiseAdagrad,
}

impl TableOptimizer {
    /// Every choice.
    pub const ALL: [TableOptimizer; 2] = [TableOptimizer::Sgd, TableOptimizer::RowwiseAdagrad];

    /// `"sgd"` or `"rwsadagrad"`, as the trainer's `--optimizer` takes it.
    ///
    /// ```
    /// use dlrm_kernels::optim::TableOptimizer;
    /// assert_eq!(TableOptimizer::RowwiseAdagrad.name(), "rwsadagrad");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            TableOptimizer::Sgd => "sgd",
            TableOptimizer::RowwiseAdagrad => "rwsadagrad",
        }
    }

    /// The update of a step at learning rate `lr` (Adagrad with the reference's
    /// `eps = 1e-10`).
    ///
    /// ```
    /// use dlrm_kernels::optim::{TableOptimizer, TableUpdate};
    /// assert_eq!(TableOptimizer::RowwiseAdagrad.at(0.1), TableUpdate::rowwise_adagrad(0.1));
    /// ```
    pub fn at(self, lr: f32) -> TableUpdate {
        match self {
            TableOptimizer::Sgd => TableUpdate::Sgd { lr },
            TableOptimizer::RowwiseAdagrad => TableUpdate::rowwise_adagrad(lr),
        }
    }
}

impl std::str::FromStr for TableOptimizer {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_name(s, "table optimizer", &Self::ALL, Self::name)
    }
}

impl std::fmt::Display for TableOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The optimizer of the MLPs (the reference's element-wise Adagrad is the next one).
///
/// ```
/// use dlrm_kernels::optim::{DenseUpdate, MlpOptimizer};
/// assert_eq!(MlpOptimizer::Sgd.at(0.5), DenseUpdate::Sgd { lr: 0.5 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MlpOptimizer {
    /// `W -= lr * dW`, `b -= lr * db`.
    #[default]
    Sgd,
}

impl MlpOptimizer {
    /// Every choice.
    pub const ALL: [MlpOptimizer; 1] = [MlpOptimizer::Sgd];

    /// `"sgd"`.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::optim::MlpOptimizer::Sgd.name(), "sgd");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            MlpOptimizer::Sgd => "sgd",
        }
    }

    /// The update of a step at learning rate `lr`.
    ///
    /// ```
    /// use dlrm_kernels::optim::{DenseUpdate, MlpOptimizer};
    /// assert_eq!(MlpOptimizer::Sgd.at(2.0).lr(), 2.0);
    /// ```
    pub fn at(self, lr: f32) -> DenseUpdate {
        match self {
            MlpOptimizer::Sgd => DenseUpdate::Sgd { lr },
        }
    }
}

impl std::str::FromStr for MlpOptimizer {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_name(s, "MLP optimizer", &Self::ALL, Self::name)
    }
}

/// The optimizer of each parameter group.
///
/// ```
/// use dlrm_kernels::optim::{MlpOptimizer, Optimizers, TableOptimizer, TableUpdate};
/// let o = Optimizers { tables: TableOptimizer::RowwiseAdagrad, ..Optimizers::default() };
/// let step = o.at(0.1);
/// assert_eq!(step.tables, TableUpdate::rowwise_adagrad(0.1));
/// assert_eq!(step.mlp.lr(), 0.1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Optimizers {
    /// The embedding tables'.
    pub tables: TableOptimizer,
    /// The bottom and top MLPs'.
    pub mlp: MlpOptimizer,
}

impl Optimizers {
    /// The updates of a step at learning rate `lr`.
    ///
    /// ```
    /// let step = dlrm_kernels::optim::Optimizers::default().at(0.25);
    /// assert_eq!((step.tables.lr(), step.mlp.lr()), (0.25, 0.25));
    /// ```
    pub fn at(self, lr: f32) -> StepUpdates {
        StepUpdates {
            tables: self.tables.at(lr),
            mlp: self.mlp.at(lr),
        }
    }
}

/// The updates one training step applies, per parameter group.
///
/// ```
/// use dlrm_kernels::optim::{DenseUpdate, StepUpdates, TableUpdate};
/// let s = StepUpdates { tables: TableUpdate::Sgd { lr: 0.1 }, mlp: DenseUpdate::Sgd { lr: 0.1 } };
/// assert!(s.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepUpdates {
    /// The embedding tables' update.
    pub tables: TableUpdate,
    /// The MLPs' update.
    pub mlp: DenseUpdate,
}

impl StepUpdates {
    /// Both updates can be applied (see [`TableUpdate::validate`],
    /// [`DenseUpdate::validate`]).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a NaN or infinite learning rate, or a bad Adagrad `eps`.
    ///
    /// ```
    /// use dlrm_kernels::optim::Optimizers;
    /// assert!(Optimizers::default().at(f32::NAN).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.tables.validate()?;
        self.mlp.validate()
    }
}

/// A table optimizer at one step: what the fused embedding update applies to each row it
/// touches, with `G` the row's coalesced gradient.
///
/// ```
/// use dlrm_kernels::optim::TableUpdate;
/// let o = TableUpdate::rowwise_adagrad(0.01);
/// assert_eq!(o, TableUpdate::RowwiseAdagrad { lr: 0.01, eps: 1e-10 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TableUpdate {
    /// `row -= lr * G[row]`.
    Sgd {
        /// Learning rate.
        lr: f32,
    },
    /// `h[row] += mean(G[row]^2); row -= lr * G[row] / (sqrt(h[row]) + eps)`.
    RowwiseAdagrad {
        /// Learning rate.
        lr: f32,
        /// Added to `sqrt(h)` (the DLRM reference uses 1e-10).
        eps: f32,
    },
}

impl TableUpdate {
    /// Row-wise Adagrad with the DLRM reference's `eps = 1e-10`.
    ///
    /// ```
    /// assert!(matches!(
    ///     dlrm_kernels::optim::TableUpdate::rowwise_adagrad(0.1),
    ///     dlrm_kernels::optim::TableUpdate::RowwiseAdagrad { .. }
    /// ));
    /// ```
    pub fn rowwise_adagrad(lr: f32) -> Self {
        TableUpdate::RowwiseAdagrad { lr, eps: 1e-10 }
    }

    /// The learning rate.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::optim::TableUpdate::Sgd { lr: 3.0 }.lr(), 3.0);
    /// ```
    pub fn lr(self) -> f32 {
        match self {
            TableUpdate::Sgd { lr } | TableUpdate::RowwiseAdagrad { lr, .. } => lr,
        }
    }

    /// Whether the update can be applied.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a NaN or infinite learning rate, or an `eps` that is negative
    /// or not finite.
    ///
    /// ```
    /// use dlrm_kernels::optim::TableUpdate;
    /// assert!(TableUpdate::RowwiseAdagrad { lr: 1.0, eps: -1.0 }.validate().is_err());
    /// ```
    pub fn validate(self) -> Result<()> {
        let (lr, eps) = match self {
            TableUpdate::Sgd { lr } => (lr, 0.0),
            TableUpdate::RowwiseAdagrad { lr, eps } => (lr, eps),
        };
        if !lr.is_finite() {
            return Err(Error::Config(format!(
                "embedding update: learning rate {lr} is not finite"
            )));
        }
        if !eps.is_finite() || eps < 0.0 {
            return Err(Error::Config(format!(
                "row-wise Adagrad: eps {eps} must be finite and not negative"
            )));
        }
        Ok(())
    }
}

/// An MLP optimizer at one step: what a layer applies with its weight and bias gradients.
///
/// ```
/// use dlrm_kernels::optim::DenseUpdate;
/// assert!(DenseUpdate::Sgd { lr: f32::INFINITY }.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DenseUpdate {
    /// `W -= lr * dW`, `b -= lr * db` (Split-SGD in bf16: the exact fp32 master update).
    Sgd {
        /// Learning rate.
        lr: f32,
    },
}

impl DenseUpdate {
    /// The learning rate.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::optim::DenseUpdate::Sgd { lr: 3.0 }.lr(), 3.0);
    /// ```
    pub fn lr(self) -> f32 {
        match self {
            DenseUpdate::Sgd { lr } => lr,
        }
    }

    /// Whether the update can be applied.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a NaN or infinite learning rate, which would write NaN into
    /// every weight.
    ///
    /// ```
    /// assert!(dlrm_kernels::optim::DenseUpdate::Sgd { lr: 0.1 }.validate().is_ok());
    /// ```
    pub fn validate(self) -> Result<()> {
        let lr = self.lr();
        if lr.is_finite() {
            Ok(())
        } else {
            Err(Error::Config(format!("learning rate {lr} is not finite")))
        }
    }
}
