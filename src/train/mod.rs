//! Training as a library: a [`Trainer`] runs a model (with its optimizers and learning-rate
//! schedule, see [`crate::optim`]) over a [`BatchSource`] for some epochs, evaluates it on
//! the test split ([`evaluate`]: loss, accuracy, ROC AUC) at a cadence, stops early on a
//! target metric or a [`Stop`] request, and tells [`Observer`]s what happens: log lines,
//! a metrics CSV and checkpoints come with the library ([`LogLines`], [`CsvLog`],
//! [`Checkpoints`]); a progress bar is one in the program that draws it.
//!
//! Batches are made ahead on a background thread ([`TrainOptions::background_loading`]) or
//! in line, and the summary says where the time went: the steps (split by part, see
//! [`StepTimings`](crate::model::StepTimings)) and the wait for data.
//!
//! ```
//! use dlrm_kernels::data::{SplitSizes, synthetic::{SyntheticConfig, SyntheticSource}};
//! use dlrm_kernels::model::{Dlrm, DlrmConfig};
//! use dlrm_kernels::train::{TrainOptions, Trainer};
//!
//! let rows = vec![1000; 4];
//! let cfg = DlrmConfig { bottom_mlp: vec![13, 16, 4], table_rows: rows.clone(), ..DlrmConfig::tiny() };
//! let sizes = SplitSizes { train_batches: 50, test_batches: 4, test_batch_size: 256 };
//! let data = SyntheticSource::new(SyntheticConfig { table_rows: rows, batch_size: 16, ..Default::default() }, sizes)?;
//! let mut trainer = Trainer::new(Dlrm::new(cfg, 1)?, data, TrainOptions::default())?;
//! let summary = trainer.run()?;
//! assert_eq!(summary.steps, 50);
//! assert_eq!(summary.evals.len(), 11); // before training, then every 5 steps
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

mod evaluate;
mod observer;
mod report;
mod stop;

use std::sync::Arc;
use std::time::Instant;

pub use evaluate::{Eval, Metric, evaluate};
pub use observer::{Checkpoints, CsvLog, LogLines, Observer, Output, check_writable};
pub use report::{Evaluation, Progress, RunInfo, StopReason, Summary};
pub use stop::Stop;

use crate::data::prefetch::Prefetcher;
use crate::data::{BatchSource, Split};
use crate::error::{Error, Result};
use crate::model::Dlrm;

/// How a [`Trainer`] runs.
///
/// ```
/// use dlrm_kernels::train::{Metric, Target, TrainOptions};
/// let o = TrainOptions {
///     epochs: 2,
///     eval_every: Some(1000),
///     target: Some(Target { metric: Metric::Auc, value: 0.8 }),
///     ..TrainOptions::default()
/// };
/// assert!(o.evaluate_first && o.background_loading);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// Passes over the training split.
    pub epochs: usize,
    /// Evaluate every this many steps, and at the last one (`None` or 0: ten times over
    /// the run).
    pub eval_every: Option<usize>,
    /// Evaluate before the first step.
    pub evaluate_first: bool,
    /// Report progress to the observers every this many steps, and at the last one.
    pub report_every: usize,
    /// Make batches on a background thread while the model trains (else each in line,
    /// when it is needed, its time counted as waiting for data).
    pub background_loading: bool,
    /// Batches the background thread makes ahead.
    pub prefetch: usize,
    /// Stop once an evaluation during training reaches this.
    pub target: Option<Target>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 1,
            eval_every: None,
            evaluate_first: true,
            report_every: 10,
            background_loading: true,
            prefetch: 4,
            target: None,
        }
    }
}

/// A value of a test metric that ends training once an evaluation reaches it (at least
/// as good, see [`Metric::better`]).
///
/// ```
/// use dlrm_kernels::train::{Eval, Metric, Target};
/// let t = Target { metric: Metric::Loss, value: 0.45 };
/// assert!(t.reached(&Eval { loss: 0.44, ..Eval::default() }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// The metric.
    pub metric: Metric,
    /// The value to reach.
    pub value: f64,
}

impl Target {
    /// Whether `eval` reaches the target.
    ///
    /// ```
    /// use dlrm_kernels::train::{Eval, Metric, Target};
    /// assert!(!Target { metric: Metric::Auc, value: 0.8 }.reached(&Eval { auc: 0.7, ..Eval::default() }));
    /// ```
    pub fn reached(&self, eval: &Eval) -> bool {
        self.metric.better(eval.get(self.metric), self.value)
    }
}

/// A model, its training data and how to run: see the [module docs](self).
pub struct Trainer {
    model: Dlrm,
    data: Arc<dyn BatchSource>,
    options: TrainOptions,
    observers: Vec<Box<dyn Observer>>,
    stop: Stop,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.model.config())
            .field("options", &self.options)
            .field("observers", &self.observers.len())
            .finish()
    }
}

impl Trainer {
    /// A trainer of `model` on `data`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the data does not fit the model: another number of dense
    /// features or tables, or a table with more rows than the model's (its indices could
    /// not be looked up); or if `options` asks for no report cadence.
    ///
    /// ```
    /// use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// use dlrm_kernels::train::{TrainOptions, Trainer};
    /// let sizes = SplitSizes { train_batches: 1, test_batches: 1, test_batch_size: 8 };
    /// let data = RandomSource::new(RandomDataConfig::default(), sizes)?; // 13 dense features
    /// let err = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default());
    /// assert_eq!(
    ///     err.unwrap_err().to_string(),
    ///     "invalid configuration: the data has 13 dense features, the model takes 5"
    /// );
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn new(
        model: Dlrm,
        data: impl BatchSource + 'static,
        options: TrainOptions,
    ) -> Result<Self> {
        Self::with_source(model, Arc::new(data), options)
    }

    /// [`Trainer::new`] with a shared source.
    ///
    /// # Errors
    ///
    /// As [`Trainer::new`].
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let shared: std::sync::Arc<dyn dlrm_kernels::data::BatchSource> = std::sync::Arc::new(data);
    /// let trainer = Trainer::with_source(Dlrm::new(DlrmConfig::tiny(), 0)?, shared.clone(), TrainOptions::default())?;
    /// assert_eq!(trainer.data().dense_features(), shared.dense_features());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn with_source(
        model: Dlrm,
        data: Arc<dyn BatchSource>,
        options: TrainOptions,
    ) -> Result<Self> {
        let cfg = model.config();
        let bad = |m: String| Err(Error::Config(m));
        if data.dense_features() != cfg.dense_features() {
            return bad(format!(
                "the data has {} dense features, the model takes {}",
                data.dense_features(),
                cfg.dense_features()
            ));
        }
        let rows = data.table_rows();
        if rows.len() != cfg.table_rows.len() {
            return bad(format!(
                "the data has {} tables, the model {}",
                rows.len(),
                cfg.table_rows.len()
            ));
        }
        if let Some(t) = (0..rows.len()).find(|&t| rows[t] > cfg.table_rows[t]) {
            return bad(format!(
                "table {t}: the data's indices go up to {} rows, the model's table has {}",
                rows[t], cfg.table_rows[t]
            ));
        }
        if options.report_every == 0 {
            return bad("progress is reported every report_every steps: at least 1".into());
        }
        Ok(Trainer {
            model,
            data,
            options,
            observers: Vec::new(),
            stop: Stop::new(),
        })
    }

    /// Tell `observer` what the runs do (observers are told in the order they were added).
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// use dlrm_kernels::train::{LogLines, TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 1, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], ..Default::default() }, sizes)?;
    /// let trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?
    ///     .observe(LogLines::default());
    /// # let _ = trainer;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn observe(mut self, observer: impl Observer + 'static) -> Self {
        self.observers.push(Box::new(observer));
        self
    }

    /// [`Trainer::observe`] for a boxed observer.
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let log: Box<dyn dlrm_kernels::train::Observer> = Box::new(dlrm_kernels::train::LogLines::default());
    /// let trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?.observe_boxed(log);
    /// # let _ = trainer;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn observe_boxed(mut self, observer: Box<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Stop when `stop` is asked to (instead of the trainer's own handle).
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let stop = dlrm_kernels::train::Stop::new();
    /// stop.request(); // before the run: it trains nothing
    /// let mut trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?.with_stop(stop);
    /// let summary = trainer.run()?;
    /// assert!(summary.interrupted() && summary.steps == 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn with_stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// The handle that stops the run after the current step (give it to another thread or a
    /// signal handler).
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let mut trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?;
    /// let stop = trainer.stop_handle();
    /// assert!(!stop.requested());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn stop_handle(&self) -> Stop {
        self.stop.clone()
    }

    /// The model.
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?;
    /// assert_eq!(trainer.model().steps(), 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn model(&self) -> &Dlrm {
        &self.model
    }

    /// The model, mutable (e.g. to load a checkpoint into it).
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let mut trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?;
    /// trainer.model_mut().set_steps(100); // resume the schedule at step 100
    /// assert_eq!(trainer.model().steps(), 100);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn model_mut(&mut self) -> &mut Dlrm {
        &mut self.model
    }

    /// The model back.
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let mut trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?;
    /// trainer.run()?;
    /// assert_eq!(trainer.into_model().steps(), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn into_model(self) -> Dlrm {
        self.model
    }

    /// The options.
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?;
    /// assert_eq!(trainer.options().epochs, 1);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    /// The data.
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?;
    /// assert_eq!(trainer.data().batches(dlrm_kernels::data::Split::Train), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn data(&self) -> &dyn BatchSource {
        &*self.data
    }

    /// Evaluate the model on the test split now and tell the observers; `None` if a stop
    /// was asked for before it was done.
    ///
    /// # Errors
    ///
    /// Those of [`evaluate`] and of the observers.
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let mut trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?;
    /// let e = trainer.evaluate()?.expect("not stopped");
    /// assert_eq!((e.step, e.eval.samples), (0, 8));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn evaluate(&mut self) -> Result<Option<Evaluation>> {
        self.evaluate_in(0)
    }

    fn evaluate_in(&mut self, epoch: usize) -> Result<Option<Evaluation>> {
        let Some(eval) = evaluate(&mut self.model, &*self.data, &self.stop)? else {
            return Ok(None);
        };
        let e = Evaluation {
            eval,
            step: self.model.steps(),
            epoch,
        };
        for o in &mut self.observers {
            o.evaluated(&self.model, &e)?;
        }
        Ok(Some(e))
    }

    /// Train: the evaluation before training (if asked for), then every epoch's batches,
    /// evaluating at the cadence asked for, until the last step, a stop request (after the
    /// current step) or the target.
    ///
    /// # Errors
    ///
    /// [`Error::Training`] naming the iteration and epoch of a step that failed (a batch
    /// that does not fit the model, a NaN or infinite loss; the model is as it was after the
    /// step before); the data's errors; the observers'.
    ///
    /// ```
    /// # use dlrm_kernels::data::{SplitSizes, random::{RandomDataConfig, RandomSource}};
    /// # use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// # use dlrm_kernels::train::{TrainOptions, Trainer};
    /// # let sizes = SplitSizes { train_batches: 3, test_batches: 1, test_batch_size: 8 };
    /// # let data = RandomSource::new(RandomDataConfig { dense_features: 5, table_rows: vec![100; 3], batch_size: 8, ..Default::default() }, sizes)?;
    /// let mut trainer = Trainer::new(Dlrm::new(DlrmConfig::tiny(), 0)?, data, TrainOptions::default())?;
    /// let summary = trainer.run()?;
    /// assert_eq!((summary.steps, summary.evals.len()), (3, 4)); // before, then after each step
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn run(&mut self) -> Result<Summary> {
        let per_epoch = self.data.batches(Split::Train);
        let epochs = self.options.epochs;
        let total = (per_epoch * epochs) as u64;
        let eval_every = match self.options.eval_every {
            Some(n) if n > 0 => n as u64,
            _ => total.div_ceil(10).max(1),
        };
        let report_every = self.options.report_every as u64;
        let start_step = self.model.steps();
        let run = RunInfo {
            start_step,
            total_steps: total,
            batches_per_epoch: per_epoch,
            epochs,
            stop: self.stop.clone(),
        };
        for o in &mut self.observers {
            o.start(&run)?;
        }
        let mut summary = Summary {
            skipped: self.data.skipped(),
            ..Summary::default()
        };
        if self.options.evaluate_first {
            summary.evals.extend(self.evaluate_in(0)?);
        }
        self.model.reset_timings();
        let start = Instant::now();
        for epoch in 0..epochs {
            if self.stop.requested() || summary.stopped.is_some() {
                break;
            }
            let data = Arc::clone(&self.data);
            let batches = (0..per_epoch).map(move |i| data.batch(Split::Train, epoch, i));
            let mut batches = Prefetcher::new(
                batches,
                self.options.background_loading,
                self.options.prefetch,
            );
            let (epoch_start, mut it, mut samples) = (Instant::now(), 0u64, 0usize);
            let (mut loss_sum, mut losses) = (0.0, 0u64);
            for batch in batches.by_ref() {
                let batch = batch?;
                let iteration = self.model.steps() + 1;
                let t = Instant::now();
                let loss = self.model.train_step(&batch);
                summary.stepped += t.elapsed();
                let loss = loss.map_err(|cause| Error::Training {
                    iteration,
                    epoch,
                    cause: Box::new(cause),
                })?;
                (it, samples) = (it + 1, samples + batch.len());
                (loss_sum, losses) = (loss_sum + loss, losses + 1);
                let done = self.model.steps() - start_step;
                if done.is_multiple_of(report_every) || done == total {
                    let elapsed = epoch_start.elapsed().as_secs_f64();
                    let p = Progress {
                        step: self.model.steps(),
                        done,
                        total,
                        epoch,
                        loss: loss_sum / losses as f64,
                        learning_rate: self.model.learning_rate(),
                        ms_per_step: 1e3 * elapsed / it as f64,
                        samples_per_second: samples as f64 / elapsed,
                    };
                    (loss_sum, losses) = (0.0, 0);
                    for o in &mut self.observers {
                        o.progress(&p)?;
                    }
                }
                if done.is_multiple_of(eval_every) || done == total {
                    let e = self.evaluate_in(epoch)?;
                    summary.evals.extend(e);
                    if let (Some(target), Some(e)) = (self.options.target, e)
                        && target.reached(&e.eval)
                    {
                        summary.stopped = Some(StopReason::TargetReached {
                            metric: target.metric,
                            value: e.eval.get(target.metric),
                        });
                        break;
                    }
                }
                if self.stop.requested() {
                    break;
                }
            }
            summary.waited += batches.waited();
        }
        summary.wall = start.elapsed();
        if self.stop.requested() && summary.stopped.is_none() {
            summary.stopped = Some(StopReason::Interrupted);
        }
        summary.steps = self.model.steps() - start_step;
        summary.timings = self.model.timings();
        if let Some(reason) = summary.stopped {
            for o in &mut self.observers {
                o.stopping(&self.model, reason)?;
            }
        }
        for o in &mut self.observers {
            o.finished(&self.model, &summary)?;
        }
        Ok(summary)
    }
}
