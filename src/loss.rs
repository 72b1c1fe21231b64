//! Losses on the model's logits: binary cross-entropy with the sigmoid fused in (stable for
//! any logit), and mean squared error on the sigmoid's output (the DLRM reference's default).
//!
//! Both return the mean loss over the batch and write `d loss / d logit` for each sample.
//!
//! ```
//! use dlrm_kernels::loss::Loss;
//! let logits = [0.0f32, 100.0, -100.0];
//! let targets = [1.0f32, 1.0, 0.0];
//! let mut grad = [0f32; 3];
//! let l = Loss::Bce.forward_backward(&logits, &targets, &mut grad)?;
//! assert!((l - (2f64.ln() / 3.0)).abs() < 1e-6);
//! assert_eq!(grad[1], 0.0); // confident and right: no gradient, no overflow
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use crate::error::{Error, Result, check_len};

/// A loss on logits `z` with targets `y` in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Loss {
    /// Binary cross-entropy of `sigmoid(z)`: `max(z, 0) - z y + log(1 + exp(-|z|))`;
    /// gradient `(sigmoid(z) - y) / B`.
    #[default]
    Bce,
    /// Mean squared error of `p = sigmoid(z)`: `(p - y)^2`; gradient
    /// `2 (p - y) p (1 - p) / B`.
    Mse,
}

/// `1 / (1 + exp(-z))` without overflow for any `z`.
///
/// ```
/// assert_eq!(dlrm_kernels::loss::sigmoid(0.0), 0.5);
/// assert_eq!(dlrm_kernels::loss::sigmoid(-1000.0), 0.0);
/// ```
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl std::str::FromStr for Loss {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        crate::error::parse_name(s, "loss", &Self::ALL, Self::name)
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Loss {
    /// Both losses.
    pub const ALL: [Loss; 2] = [Loss::Bce, Loss::Mse];

    /// Lower-case name (`"bce"`, `"mse"`), as the trainer's `--loss-function` takes it.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::loss::Loss::Mse.name(), "mse");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Loss::Bce => "bce",
            Loss::Mse => "mse",
        }
    }

    /// Mean loss over the batch, and `grad[i] = d mean_loss / d logits[i]`.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if the lengths differ; [`Error::NonFinite`] if the loss is NaN or
    /// infinite (a NaN logit, or a target outside `[0, 1]` making it so). `grad` is only
    /// written when the result is `Ok`.
    ///
    /// ```
    /// use dlrm_kernels::loss::Loss;
    /// let mut g = [0f32; 1];
    /// assert!(Loss::Bce.forward_backward(&[f32::NAN], &[1.0], &mut g).is_err());
    /// ```
    pub fn forward_backward(
        self,
        logits: &[f32],
        targets: &[f32],
        grad: &mut [f32],
    ) -> Result<f64> {
        check_len("targets length", logits.len(), targets.len())?;
        check_len("gradient length", logits.len(), grad.len())?;
        let n = logits.len().max(1) as f64;
        let total: f64 = logits
            .iter()
            .zip(targets)
            .map(|(&z, &y)| self.sample_loss(z as f64, y as f64))
            .sum();
        let loss = total / n;
        if !loss.is_finite() {
            return Err(Error::NonFinite {
                what: format!("{} loss", self.name()),
            });
        }
        for ((g, &z), &y) in grad.iter_mut().zip(logits).zip(targets) {
            let p = sigmoid(z);
            *g = match self {
                Loss::Bce => (p - y) / n as f32,
                Loss::Mse => 2.0 * (p - y) * p * (1.0 - p) / n as f32,
            };
        }
        Ok(loss)
    }

    /// The loss of one sample, in f64.
    fn sample_loss(self, z: f64, y: f64) -> f64 {
        match self {
            Loss::Bce => z.max(0.0) - z * y + (-z.abs()).exp().ln_1p(),
            Loss::Mse => {
                let p = 1.0 / (1.0 + (-z).exp());
                (p - y) * (p - y)
            }
        }
    }

    /// Mean loss only (for evaluation).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if the lengths differ.
    ///
    /// ```
    /// let l = dlrm_kernels::loss::Loss::Mse.mean(&[0.0], &[1.0])?;
    /// assert_eq!(l, 0.25);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn mean(self, logits: &[f32], targets: &[f32]) -> Result<f64> {
        check_len("targets length", logits.len(), targets.len())?;
        let total: f64 = logits
            .iter()
            .zip(targets)
            .map(|(&z, &y)| self.sample_loss(z as f64, y as f64))
            .sum();
        Ok(total / logits.len().max(1) as f64)
    }
}
