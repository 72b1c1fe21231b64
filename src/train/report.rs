//! What a run reports: when it starts ([`RunInfo`]), as it goes ([`Progress`],
//! [`Evaluation`]), why it ended early ([`StopReason`]) and what it did ([`Summary`]).

use std::time::Duration;

use super::{Eval, Metric, Stop};
use crate::model::StepTimings;

/// What an observer learns when a run starts.
///
/// ```
/// use dlrm_kernels::train::{Observer, RunInfo};
/// /// Keeps the run's stop handle, to stop it from outside.
/// #[derive(Default)]
/// struct Handle(Option<dlrm_kernels::train::Stop>);
/// impl Observer for Handle {
///     fn start(&mut self, run: &RunInfo) -> dlrm_kernels::Result<()> {
///         self.0 = Some(run.stop.clone());
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The model's step count when the run started.
    pub start_step: u64,
    /// Steps the run will take if it is not stopped.
    pub total_steps: u64,
    /// Training batches per epoch.
    pub batches_per_epoch: usize,
    /// Epochs.
    pub epochs: usize,
    /// The run's stop handle (hold its lock while writing a file a handler must not cut
    /// short, see [`Stop::hold`]).
    pub stop: Stop,
}

/// A progress report (see [`Progress::describe`] for an example).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The model's step count.
    pub step: u64,
    /// Steps taken in this run.
    pub done: u64,
    /// Steps the run takes if it is not stopped.
    pub total: u64,
    /// The epoch (from 0).
    pub epoch: usize,
    /// The mean training loss since the last report.
    pub loss: f64,
    /// The learning rate of the next step.
    pub learning_rate: f32,
    /// Wall time per step over the epoch so far, data loading included.
    pub ms_per_step: f64,
    /// Samples per second over the epoch so far.
    pub samples_per_second: f64,
}

impl Progress {
    /// `"12.3 ms/it | 41000 samples/s | loss 0.45123 | lr 1.00e-1"`.
    ///
    /// ```
    /// use dlrm_kernels::train::Progress;
    /// let p = Progress { step: 10, done: 10, total: 100, epoch: 0, loss: 0.5, learning_rate: 0.1,
    ///     ms_per_step: 12.34, samples_per_second: 41000.0 };
    /// assert_eq!(p.describe(), "12.3 ms/it | 41000 samples/s | loss 0.50000 | lr 1.00e-1");
    /// ```
    pub fn describe(&self) -> String {
        format!(
            "{:.1} ms/it | {:.0} samples/s | loss {:.5} | lr {:.2e}",
            self.ms_per_step, self.samples_per_second, self.loss, self.learning_rate
        )
    }
}

/// An evaluation and when it was made (see [`Evaluation::describe`] for an example).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The result.
    pub eval: Eval,
    /// The model's step count.
    pub step: u64,
    /// The epoch (from 0).
    pub epoch: usize,
}

impl Evaluation {
    /// `"test at step 500: loss 0.45123, accuracy 79.12 %, AUC 0.8123 (10000 samples)"`.
    ///
    /// ```
    /// use dlrm_kernels::train::{Eval, Evaluation};
    /// let e = Evaluation { eval: Eval { loss: 0.5, accuracy: 0.75, auc: 0.8, samples: 10 }, step: 2, epoch: 0 };
    /// assert_eq!(e.describe(), "test at step 2: loss 0.50000, accuracy 75.00 %, AUC 0.8000 (10 samples)");
    /// ```
    pub fn describe(&self) -> String {
        format!(
            "test at step {}: loss {:.5}, accuracy {:.2} %, AUC {:.4} ({} samples)",
            self.step,
            self.eval.loss,
            100.0 * self.eval.accuracy,
            self.eval.auc,
            self.eval.samples
        )
    }
}

/// Why a run ended before its last step.
///
/// ```
/// use dlrm_kernels::train::{Metric, StopReason, Summary};
/// let s = Summary { stopped: Some(StopReason::Interrupted), ..Summary::default() };
/// assert!(s.interrupted());
/// let reached = StopReason::TargetReached { metric: Metric::Auc, value: 0.8 };
/// assert_ne!(reached, StopReason::Interrupted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopReason {
    /// [`Stop::request`] was called (a signal, another thread, an observer).
    Interrupted,
    /// An evaluation reached [`TrainOptions::target`](super::TrainOptions::target).
    TargetReached {
        /// The metric.
        metric: Metric,
        /// Its value.
        value: f64,
    },
}

/// What a run did (see [`Trainer::run`](super::Trainer::run); the [module docs](super) have an example).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Steps taken.
    pub steps: u64,
    /// The evaluations, in order.
    pub evals: Vec<Evaluation>,
    /// Why the run ended early, if it did.
    pub stopped: Option<StopReason>,
    /// Time per part of the steps.
    pub timings: StepTimings,
    /// Wall time of the steps.
    pub stepped: Duration,
    /// Time spent waiting for batches (in line: making them).
    pub waited: Duration,
    /// Wall time of the training loop (evaluations included).
    pub wall: Duration,
    /// Malformed input lines the data source skipped.
    pub skipped: u64,
}

impl Summary {
    /// Whether a stop request ended the run.
    ///
    /// ```
    /// assert!(!dlrm_kernels::train::Summary::default().interrupted());
    /// ```
    pub fn interrupted(&self) -> bool {
        self.stopped == Some(StopReason::Interrupted)
    }

    /// Milliseconds per step without waiting for data (and with it).
    ///
    /// ```
    /// let s = dlrm_kernels::train::Summary::default();
    /// assert_eq!(s.step_ms(), (0.0, 0.0));
    /// ```
    pub fn step_ms(&self) -> (f64, f64) {
        let steps = self.timings.steps.max(1) as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / steps;
        (ms(self.stepped), ms(self.stepped + self.waited))
    }

    /// The best evaluation by `metric` (the first of equals; `None` without evaluations).
    ///
    /// ```
    /// use dlrm_kernels::train::{Eval, Evaluation, Metric, Summary};
    /// let at = |step, auc| Evaluation { eval: Eval { auc, ..Eval::default() }, step, epoch: 0 };
    /// let s = Summary { evals: vec![at(0, 0.5), at(10, 0.8), at(20, 0.7)], ..Summary::default() };
    /// assert_eq!(s.best(Metric::Auc).unwrap().step, 10);
    /// ```
    pub fn best(&self, metric: Metric) -> Option<&Evaluation> {
        self.evals.iter().fold(None, |best, e| match best {
            Some(b) if !metric.better(e.eval.get(metric), b.eval.get(metric)) => Some(b),
            Some(b) if e.eval.get(metric) == b.eval.get(metric) => Some(b),
            _ if e.eval.get(metric).is_nan() => best,
            _ => Some(e),
        })
    }

    /// Where the time went: `"100 steps in 12.3 s: 95.12 ms/step without data loading
    /// (96.00 ms with it)"`, then the time per step by part.
    ///
    /// ```
    /// let s = dlrm_kernels::train::Summary::default();
    /// assert!(s.describe().starts_with("0 steps in 0.0 s: 0.00 ms/step without data loading"));
    /// ```
    pub fn describe(&self) -> String {
        let t = &self.timings;
        let per_step = |d: Duration| d.as_secs_f64() * 1e3 / t.steps.max(1) as f64;
        let (ms, with_data) = self.step_ms();
        format!(
            "{} steps in {:.1} s: {ms:.2} ms/step without data loading ({with_data:.2} ms with it)\n  \
             per step: data wait {:.2} ms, embedding {:.2} ms, MLP {:.2} ms, interaction {:.2} ms, other {:.2} ms{}",
            t.steps,
            self.wall.as_secs_f64(),
            per_step(self.waited),
            per_step(t.embedding),
            per_step(t.mlp),
            per_step(t.interaction),
            per_step(t.other),
            if self.skipped > 0 {
                format!("\n  {} malformed input lines were skipped", self.skipped)
            } else {
                String::new()
            }
        )
    }
}
