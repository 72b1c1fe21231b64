//! Evaluation over a source's test split: loss, accuracy and ROC AUC.

use std::fmt;
use std::str::FromStr;

use super::Stop;
use crate::data::{BatchSource, Split};
use crate::error::{Error, Result, parse_name};
use crate::metrics::{accuracy, roc_auc};
use crate::model::Dlrm;

/// A model's evaluation over a whole test set.
///
/// ```
/// use dlrm_kernels::train::{Eval, Metric};
/// let e = Eval { loss: 0.45, accuracy: 0.79, auc: 0.81, samples: 1000 };
/// assert_eq!(e.get(Metric::Auc), 0.81);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Eval {
    /// Mean loss (the model's loss function).
    pub loss: f64,
    /// Fraction of samples whose rounded probability equals the target.
    pub accuracy: f64,
    /// ROC AUC (NaN when the targets are all one class).
    pub auc: f64,
    /// Samples evaluated.
    pub samples: usize,
}

impl Eval {
    /// The value of `metric`.
    ///
    /// ```
    /// use dlrm_kernels::train::{Eval, Metric};
    /// let e = Eval { loss: 0.5, ..Eval::default() };
    /// assert_eq!(e.get(Metric::Loss), 0.5);
    /// ```
    pub fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Loss => self.loss,
            Metric::Accuracy => self.accuracy,
            Metric::Auc => self.auc,
        }
    }
}

/// A test metric.
///
/// ```
/// use dlrm_kernels::train::Metric;
/// assert_eq!("auc".parse::<Metric>()?, Metric::Auc);
/// assert!(Metric::Auc.better(0.8, 0.7) && Metric::Loss.better(0.4, 0.5));
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// The mean loss (lower is better).
    Loss,
    /// Accuracy (higher is better).
    Accuracy,
    /// ROC AUC (higher is better).
    Auc,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 3] = [Metric::Loss, Metric::Accuracy, Metric::Auc];

    /// `"loss"`, `"accuracy"` or `"auc"`.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::train::Metric::Accuracy.name(), "accuracy");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Accuracy => "accuracy",
            Metric::Auc => "auc",
        }
    }

    /// Whether `a` is at least as good as `b` (lower for the loss, higher otherwise; NaN
    /// is never).
    ///
    /// ```
    /// use dlrm_kernels::train::Metric;
    /// assert!(Metric::Auc.better(0.7, 0.7) && !Metric::Auc.better(f64::NAN, 0.5));
    /// ```
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Metric::Loss => a <= b,
            Metric::Accuracy | Metric::Auc => a >= b,
        }
    }
}

impl FromStr for Metric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_name(s, "metric", &Self::ALL, Self::name)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Evaluate `model` on every test batch of `data`: the mean loss, accuracy and ROC AUC;
/// `None` if `stop` was asked for before it was done (between batches). The model's
/// parameters and training timings do not change.
///
/// # Errors
///
/// Those of the source's batches and of [`Dlrm::predict`] (a batch that does not match
/// the model).
///
/// ```
/// use dlrm_kernels::data::{SplitSizes, synthetic::{SyntheticConfig, SyntheticSource}};
/// use dlrm_kernels::model::{Dlrm, DlrmConfig};
/// use dlrm_kernels::train::{evaluate, Stop};
/// let cfg = DlrmConfig { bottom_mlp: vec![13, 8, 4], table_rows: vec![100; 8], ..DlrmConfig::tiny() };
/// let sizes = SplitSizes { train_batches: 1, test_batches: 2, test_batch_size: 64 };
/// let data = SyntheticSource::new(SyntheticConfig { table_rows: vec![100; 8], ..Default::default() }, sizes)?;
/// let mut model = Dlrm::new(cfg, 1)?;
/// let e = evaluate(&mut model, &data, &Stop::new())?.expect("not stopped");
/// assert_eq!(e.samples, 128);
/// assert!(e.auc > 0.0 && e.auc < 1.0);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub fn evaluate(model: &mut Dlrm, data: &dyn BatchSource, stop: &Stop) -> Result<Option<Eval>> {
    let loss_fn = model.config().loss;
    let (mut probs, mut targets, mut loss_sum) = (Vec::new(), Vec::new(), 0.0);
    let mut p = Vec::new();
    for i in 0..data.batches(Split::Test) {
        if stop.requested() {
            return Ok(None);
        }
        let batch = data.batch(Split::Test, 0, i)?;
        model.predict(&batch, &mut p)?;
        loss_sum += loss_fn.mean(model.logits(), &batch.targets)? * batch.len() as f64;
        probs.extend_from_slice(&p);
        targets.extend_from_slice(&batch.targets);
    }
    let n = probs.len().max(1);
    Ok(Some(Eval {
        loss: loss_sum / n as f64,
        accuracy: accuracy(&probs, &targets),
        auc: roc_auc(&probs, &targets).unwrap_or(f64::NAN),
        samples: probs.len(),
    }))
}
