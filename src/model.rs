//! DLRM as a library type: bottom MLP, embedding bags, interaction, top MLP, loss, and the
//! SGD / row-wise Adagrad step, in f32 or bf16 (Split-SGD), trained in a few lines.
//!
//! One training step ([`Dlrm::train_step`]):
//!
//! 1. bottom MLP forward on the dense features, every table's bags pooled;
//! 2. the interaction writes the top MLP's blocked input; top MLP forward gives logits;
//! 3. the loss (BCE with the sigmoid fused, or MSE) and its gradient; a NaN or infinite loss
//!    is an error *before* anything is updated;
//! 4. top MLP backward with SGD fused in, interaction backward, the fused embedding
//!    backward + update, bottom MLP backward with SGD fused in.
//!
//! Everything the step reads is validated before any parameter changes, so an error leaves
//! the model as it was. Every part is deterministic, so the step gives the same bits for any
//! number of threads.
//!
//! ```
//! use dlrm_kernels::data::MiniBatch;
//! use dlrm_kernels::model::{Dlrm, DlrmConfig};
//!
//! let mut cfg = DlrmConfig::tiny();
//! cfg.batch_size = 4;
//! let mut model = Dlrm::new(cfg.clone(), 42)?;
//! let batch = MiniBatch {
//!     dense: vec![0.5; 4 * cfg.dense_features()],
//!     indices: vec![vec![1, 2, 3, 4]; cfg.table_rows.len()],
//!     offsets: vec![vec![0, 1, 2, 3]; cfg.table_rows.len()],
//!     targets: vec![1.0, 0.0, 1.0, 0.0],
//! };
//! let loss = model.train_step(&batch)?;
//! assert!(loss.is_finite());
//! let mut p = Vec::new();
//! model.predict(&batch, &mut p)?;
//! assert_eq!(p.len(), 4);
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use std::time::{Duration, Instant};

use crate::bf16;
use crate::data::MiniBatch;
use crate::embedding::{
    Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, Optimizer, TableConfig,
};
use crate::error::{Error, Result, check_len};
use crate::interaction::{Interaction, InteractionOp, checked_output_dim};
use crate::kernels::Element;
use crate::linear::Activation;
use crate::loss::{Loss, sigmoid};
use crate::memory;
use crate::mlp::{Mlp, MlpConfig};
use crate::optim::LrPolicy;

/// Storage and arithmetic precision of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 everywhere.
    #[default]
    F32,
    /// bf16 weights (Split-SGD: exact fp32 master updates), activations and tables; f32
    /// accumulation.
    Bf16,
}

impl Precision {
    /// `"fp32"` or `"bf16"`, as the trainer's `--precision` takes it.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::model::Precision::Bf16.name(), "bf16");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// The optimizer of the embedding tables (the MLPs always use SGD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EmbeddingOptimizer {
    /// Plain SGD on the looked-up rows.
    #[default]
    Sgd,
    /// The DLRM reference's row-wise sparse Adagrad (`rwsadagrad`).
    RowwiseAdagrad,
}

impl EmbeddingOptimizer {
    /// `"sgd"` or `"rwsadagrad"`, as the trainer's `--optimizer` takes it.
    ///
    /// ```
    /// use dlrm_kernels::model::EmbeddingOptimizer;
    /// assert_eq!(EmbeddingOptimizer::RowwiseAdagrad.name(), "rwsadagrad");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            EmbeddingOptimizer::Sgd => "sgd",
            EmbeddingOptimizer::RowwiseAdagrad => "rwsadagrad",
        }
    }
}

/// Everything that defines a DLRM model and its training.
///
/// ```
/// use dlrm_kernels::model::DlrmConfig;
/// let small = DlrmConfig::small();
/// assert_eq!(small.table_rows, vec![1_000_000; 8]);
/// assert!(small.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DlrmConfig {
    /// Bottom MLP sizes, the dense input first (`13-512-256-64` is `[13, 512, 256, 64]`).
    pub bottom_mlp: Vec<usize>,
    /// Top MLP sizes after the interaction (its input width is derived), ending in 1.
    pub top_mlp: Vec<usize>,
    /// Rows of each embedding table.
    pub table_rows: Vec<usize>,
    /// Embedding width; must equal the bottom MLP's output width.
    pub embedding_dim: usize,
    /// Interaction operator.
    pub interaction: InteractionOp,
    /// Whether the dot interaction includes each vector with itself.
    pub interaction_itself: bool,
    /// f32 or bf16.
    pub precision: Precision,
    /// Samples per step (a smaller last batch is fine).
    pub batch_size: usize,
    /// Loss function.
    pub loss: Loss,
    /// Optimizer of the tables.
    pub embedding_optimizer: EmbeddingOptimizer,
    /// Learning-rate schedule (shared by MLPs and tables).
    pub lr: LrPolicy,
}

impl DlrmConfig {
    /// The DLRM reference benchmark's `small` configuration: 8 tables of 1M rows, dim 64,
    /// bottom 512-512-64, top 1024-1024-1024-1, batch 2048.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::model::DlrmConfig::small().batch_size, 2048);
    /// ```
    pub fn small() -> Self {
        DlrmConfig {
            bottom_mlp: vec![512, 512, 64],
            top_mlp: vec![1024, 1024, 1024, 1],
            table_rows: vec![1_000_000; 8],
            embedding_dim: 64,
            interaction: InteractionOp::Dot,
            interaction_itself: false,
            precision: Precision::F32,
            batch_size: 2048,
            loss: Loss::Bce,
            embedding_optimizer: EmbeddingOptimizer::Sgd,
            lr: LrPolicy::constant(0.1),
        }
    }

    /// The Criteo Kaggle configuration: 26 tables (`rows` from the data), dim 16, bottom
    /// 13-512-256-64-16, top 512-256-1, batch 128.
    ///
    /// ```
    /// let c = dlrm_kernels::model::DlrmConfig::kaggle(vec![1000; 26]);
    /// assert_eq!(c.embedding_dim, 16);
    /// ```
    pub fn kaggle(rows: Vec<usize>) -> Self {
        DlrmConfig {
            bottom_mlp: vec![13, 512, 256, 64, 16],
            top_mlp: vec![512, 256, 1],
            table_rows: rows,
            embedding_dim: 16,
            batch_size: 128,
            ..Self::small()
        }
    }

    /// The Criteo Terabyte configuration: 26 tables capped at 10M rows, dim 64, bottom
    /// 13-512-256-64, top 512-512-256-1, batch 2048.
    ///
    /// ```
    /// let c = dlrm_kernels::model::DlrmConfig::terabyte(vec![20_000_000; 26]);
    /// assert_eq!(c.table_rows[0], 10_000_000);
    /// ```
    pub fn terabyte(rows: Vec<usize>) -> Self {
        DlrmConfig {
            bottom_mlp: vec![13, 512, 256, 64],
            top_mlp: vec![512, 512, 256, 1],
            table_rows: rows.into_iter().map(|r| r.min(10_000_000)).collect(),
            embedding_dim: 64,
            batch_size: 2048,
            ..Self::small()
        }
    }

    /// The MLPerf configuration: 26 tables capped at 40M rows, dim 128, bottom
    /// 13-512-256-128, top 1024-1024-512-256-1, batch 2048.
    ///
    /// ```
    /// let c = dlrm_kernels::model::DlrmConfig::mlperf(vec![100; 26]);
    /// assert_eq!(c.top_mlp, vec![1024, 1024, 512, 256, 1]);
    /// ```
    pub fn mlperf(rows: Vec<usize>) -> Self {
        DlrmConfig {
            bottom_mlp: vec![13, 512, 256, 128],
            top_mlp: vec![1024, 1024, 512, 256, 1],
            table_rows: rows.into_iter().map(|r| r.min(40_000_000)).collect(),
            embedding_dim: 128,
            batch_size: 2048,
            ..Self::small()
        }
    }

    /// A very small model for examples and tests: 3 tables of 100 rows, dim 4, bottom
    /// 5-8-4, top 8-1, batch 16.
    ///
    /// ```
    /// assert!(dlrm_kernels::model::DlrmConfig::tiny().validate().is_ok());
    /// ```
    pub fn tiny() -> Self {
        DlrmConfig {
            bottom_mlp: vec![5, 8, 4],
            top_mlp: vec![8, 1],
            table_rows: vec![100; 3],
            embedding_dim: 4,
            batch_size: 16,
            ..Self::small()
        }
    }

    /// Number of dense features (the bottom MLP's input width).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::model::DlrmConfig::small().dense_features(), 512);
    /// ```
    pub fn dense_features(&self) -> usize {
        self.bottom_mlp.first().copied().unwrap_or(0)
    }

    /// Check that the configuration can work.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the problem: an MLP with fewer than two sizes (bottom) or
    /// none (top), a zero size, a bottom output width other than the embedding dim, a top
    /// MLP not ending in 1, no tables, a table with zero rows, a zero batch, a NaN or infinite
    /// learning rate. (Whether the sizes fit in memory is [`crate::memory::check`]'s
    /// question.)
    ///
    /// ```
    /// let mut c = dlrm_kernels::model::DlrmConfig::small();
    /// c.embedding_dim = 32;
    /// assert_eq!(
    ///     c.validate().unwrap_err().to_string(),
    ///     "invalid configuration: the bottom MLP's output width 64 must equal the embedding dim 32"
    /// );
    /// ```
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.bottom_mlp.len() < 2 {
            return bad(format!(
                "the bottom MLP needs an input and an output size, got {:?}",
                self.bottom_mlp
            ));
        }
        if self.top_mlp.is_empty() {
            return bad("the top MLP is empty".into());
        }
        if self.bottom_mlp.iter().chain(&self.top_mlp).any(|&s| s == 0) {
            return bad(format!(
                "MLP sizes must be positive: bottom {:?}, top {:?}",
                self.bottom_mlp, self.top_mlp
            ));
        }
        let out = *self.bottom_mlp.last().expect("checked");
        if out != self.embedding_dim {
            return bad(format!(
                "the bottom MLP's output width {out} must equal the embedding dim {}",
                self.embedding_dim
            ));
        }
        if *self.top_mlp.last().expect("checked") != 1 {
            return bad(format!(
                "the top MLP must end in one output (the click logit), got {:?}",
                self.top_mlp
            ));
        }
        if self.table_rows.is_empty() {
            return bad("at least one embedding table is needed".into());
        }
        if let Some(t) = self.table_rows.iter().position(|&r| r == 0) {
            return bad(format!("table {t} has zero rows"));
        }
        if self.batch_size == 0 {
            return bad("the batch size must be positive".into());
        }
        if !self.lr.base_lr.is_finite() {
            return bad(format!("learning rate {} is not finite", self.lr.base_lr));
        }
        Ok(())
    }

    /// MLP FLOP of one training step (forward, backward-data, backward-weights) at the full
    /// batch.
    ///
    /// ```
    /// let f = dlrm_kernels::model::DlrmConfig::small().mlp_flops();
    /// assert!(f > 29_000_000_000 && f < 31_000_000_000);
    /// ```
    pub fn mlp_flops(&self) -> u64 {
        let inter = self.interaction_width();
        let mut top = vec![inter];
        top.extend(&self.top_mlp);
        MlpConfig::new(self.bottom_mlp.clone(), self.batch_size).flops(self.batch_size)
            + MlpConfig::new(top, self.batch_size).flops(self.batch_size)
    }

    /// Width of the interaction output (the top MLP's input).
    fn interaction_width(&self) -> usize {
        checked_output_dim(
            self.interaction,
            self.interaction_itself,
            self.table_rows.len(),
            self.embedding_dim,
        )
        .unwrap_or(usize::MAX)
    }
}

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
    pub embedding: std::time::Duration,
    /// Bottom and top MLP forward, backward and update.
    pub mlp: std::time::Duration,
    /// Interaction forward and backward.
    pub interaction: std::time::Duration,
    /// Loss, layout conversions and the rest.
    pub other: std::time::Duration,
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

/// A callback receiving `(name, shape, values)` of one tensor.
type TensorVisitor<'a> = dyn FnMut(&str, &[usize], &[f32]) -> Result<()> + 'a;

/// The bottom and top MLPs of one precision.
#[derive(Debug, Clone)]
struct Mlps<T: Element> {
    bottom: Mlp<T>,
    top: Mlp<T>,
}

#[derive(Debug, Clone)]
enum Stack {
    F32(Mlps<f32>),
    Bf16(Mlps<bf16>),
}

/// Work buffers of a step, kept between steps.
#[derive(Debug, Clone, Default)]
struct Buffers {
    /// Bottom MLP output, row-major `[B][d]`.
    dense_out: Vec<f32>,
    /// Pooled embeddings `[B][T][d]`.
    emb_out: Vec<f32>,
    d_dense: Vec<f32>,
    d_emb: Vec<f32>,
    logits: Vec<f32>,
    d_logits: Vec<f32>,
}

/// A DLRM model. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Dlrm {
    cfg: DlrmConfig,
    stack: Stack,
    emb: EmbeddingBags,
    inter: Interaction,
    step: u64,
    bufs: Buffers,
    timings: StepTimings,
}

/// Time `f` into `slot`.
fn timed<R>(slot: &mut Duration, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    *slot += t.elapsed();
    r
}

impl Dlrm {
    /// A model initialised as the DLRM reference does, from `seed` (bottom MLP layer `l`
    /// from `seed + l`, top from `seed + 1000 + l`, table `t` from `seed + 2000 + t`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a configuration that cannot work (see
    /// [`DlrmConfig::validate`]); [`Error::TooLarge`] naming the setting when the model's
    /// sizes overflow or it would not fit in the memory available (see
    /// [`crate::memory::check`]: checked before anything is allocated); kernel errors.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut cfg = DlrmConfig::tiny();
    /// cfg.top_mlp = vec![8, 2];
    /// assert!(Dlrm::new(cfg, 0).is_err());
    /// let huge = DlrmConfig { batch_size: 1 << 60, ..DlrmConfig::tiny() };
    /// let err = Dlrm::new(huge, 0).unwrap_err();
    /// assert!(err.to_string().starts_with("batch size 1152921504606846976: "));
    /// ```
    pub fn new(cfg: DlrmConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        memory::check(&cfg)?;
        let tables = cfg.table_rows.len();
        let inter = Interaction::new(
            cfg.interaction,
            cfg.interaction_itself,
            tables,
            cfg.embedding_dim,
        )?;
        let bottom_cfg = MlpConfig::new(cfg.bottom_mlp.clone(), cfg.batch_size);
        let mut top_sizes = vec![inter.output_dim()];
        top_sizes.extend(&cfg.top_mlp);
        let mut top_cfg = MlpConfig::new(top_sizes, cfg.batch_size);
        top_cfg.output_activation = Activation::None; // logits; the loss applies the sigmoid
        let stack = match cfg.precision {
            Precision::F32 => Stack::F32(Mlps {
                bottom: Mlp::new(bottom_cfg, seed)?,
                top: Mlp::new(top_cfg, seed.wrapping_add(1000))?,
            }),
            Precision::Bf16 => Stack::Bf16(Mlps {
                bottom: Mlp::new(bottom_cfg, seed)?,
                top: Mlp::new(top_cfg, seed.wrapping_add(1000))?,
            }),
        };
        let emb_tables = cfg
            .table_rows
            .iter()
            .enumerate()
            .map(|(t, &rows)| {
                let tc = match cfg.precision {
                    Precision::F32 => TableConfig::f32(rows, cfg.embedding_dim),
                    Precision::Bf16 => TableConfig::bf16_split(rows, cfg.embedding_dim),
                };
                EmbeddingTable::new(tc, seed.wrapping_add(2000 + t as u64))
            })
            .collect::<Result<Vec<_>>>()?;
        let emb = EmbeddingBags::new(emb_tables, EmbeddingBagConfig::default())?;
        Ok(Dlrm {
            cfg,
            stack,
            emb,
            inter,
            step: 0,
            bufs: Buffers::default(),
            timings: StepTimings::default(),
        })
    }

    /// The configuration.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.config().embedding_dim, 4);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn config(&self) -> &DlrmConfig {
        &self.cfg
    }

    /// Training steps taken so far.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.steps(), 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The learning rate the next step will use.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.learning_rate(), 0.1);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn learning_rate(&self) -> f32 {
        self.cfg.lr.lr(self.step + 1)
    }

    /// Time per part of the steps since the last [`Dlrm::reset_timings`].
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.timings().steps, 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn timings(&self) -> StepTimings {
        self.timings
    }

    /// Zero the timings.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// m.reset_timings();
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn reset_timings(&mut self) {
        self.timings = StepTimings::default();
    }

    /// The embedding tables.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.embeddings().tables().len(), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn embeddings(&self) -> &EmbeddingBags {
        &self.emb
    }

    fn check_batch(&self, batch: &MiniBatch) -> Result<usize> {
        let b = batch.len();
        if b == 0 {
            return Err(Error::Shape {
                what: "mini-batch samples".into(),
                expected: self.cfg.batch_size,
                got: 0,
            });
        }
        check_len(
            "dense features length ([B][dense_features])",
            b * self.cfg.dense_features(),
            batch.dense.len(),
        )?;
        let t = self.cfg.table_rows.len();
        check_len("tables in the batch's indices", t, batch.indices.len())?;
        check_len("tables in the batch's offsets", t, batch.offsets.len())?;
        for (i, o) in batch.offsets.iter().enumerate() {
            check_len(format!("bags of table {i}"), b, o.len())?;
        }
        if let Some(i) = batch.dense.iter().position(|x| !x.is_finite()) {
            let nd = self.cfg.dense_features();
            return Err(Error::NonFinite {
                what: format!("dense feature {} of sample {}", i % nd, i / nd),
            });
        }
        if let Some(i) = batch.targets.iter().position(|y| !(0.0..=1.0).contains(y)) {
            return Err(Error::Config(format!(
                "target of sample {i} is {}, outside [0, 1]",
                batch.targets[i]
            )));
        }
        Ok(b)
    }

    /// Forward to the logits (in `self.bufs.logits`).
    fn forward(&mut self, batch: &MiniBatch) -> Result<()> {
        let b = self.check_batch(batch)?;
        let (d, t) = (self.cfg.embedding_dim, self.cfg.table_rows.len());
        let bufs = &mut self.bufs;
        bufs.dense_out.resize(b * d, 0.0);
        bufs.emb_out.resize(b * t * d, 0.0);
        bufs.logits.resize(b, 0.0);
        let tm = &mut self.timings;
        let bags = bags(batch);
        // Embedding first: it validates every index before anything else runs.
        timed(&mut tm.embedding, || {
            self.emb.forward(&bags, &mut bufs.emb_out)
        })?;
        match &mut self.stack {
            Stack::F32(m) => forward_mlps(m, &self.inter, batch, bufs, tm),
            Stack::Bf16(m) => forward_mlps(m, &self.inter, batch, bufs, tm),
        }
    }

    /// One training step on `batch`; returns its mean loss.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if the batch does not match the model (dense width, number of tables,
    /// bags per table), [`Error::Offsets`] / [`Error::IndexOutOfRange`] naming table, bag
    /// and position, [`Error::Config`] for a target outside `[0, 1]`, [`Error::NonFinite`] for
    /// a NaN or infinite dense feature or loss. On any error the model is unchanged.
    ///
    /// ```
    /// use dlrm_kernels::data::MiniBatch;
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let cfg = DlrmConfig::tiny();
    /// let mut m = Dlrm::new(cfg.clone(), 0)?;
    /// let bad = MiniBatch {
    ///     dense: vec![0.0; 5],
    ///     indices: vec![vec![0], vec![0], vec![100]],
    ///     offsets: vec![vec![0]; 3],
    ///     targets: vec![1.0],
    /// };
    /// let err = m.train_step(&bad).unwrap_err();
    /// assert_eq!(err.to_string(), "table 2, bag 0, position 0: index 100 >= rows 100");
    /// assert_eq!(m.steps(), 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn train_step(&mut self, batch: &MiniBatch) -> Result<f64> {
        self.forward(batch)?;
        let b = batch.len();
        let lr = self.learning_rate();
        let bufs = &mut self.bufs;
        bufs.d_logits.resize(b, 0.0);
        let loss = timed(&mut self.timings.other, || {
            self.cfg
                .loss
                .forward_backward(&bufs.logits, &batch.targets, &mut bufs.d_logits)
        })
        .map_err(|e| match e {
            Error::NonFinite { what } => Error::NonFinite {
                what: format!("{what} at step {}", self.step + 1),
            },
            e => e,
        })?;
        let (d, t) = (self.cfg.embedding_dim, self.cfg.table_rows.len());
        bufs.d_dense.resize(b * d, 0.0);
        bufs.d_emb.resize(b * t * d, 0.0);
        let tm = &mut self.timings;
        let emb = &mut self.emb;
        let opt = match self.cfg.embedding_optimizer {
            EmbeddingOptimizer::Sgd => Optimizer::Sgd { lr },
            EmbeddingOptimizer::RowwiseAdagrad => Optimizer::rowwise_adagrad(lr),
        };
        let mut update_tables = |bufs: &mut Buffers, tm: &mut StepTimings| {
            let bags = bags(batch);
            timed(&mut tm.embedding, || {
                emb.backward_update(&bags, &bufs.d_emb, opt)
            })
        };
        match &mut self.stack {
            Stack::F32(m) => backward_mlps(m, &self.inter, bufs, tm, lr, &mut update_tables),
            Stack::Bf16(m) => backward_mlps(m, &self.inter, bufs, tm, lr, &mut update_tables),
        }?;
        self.step += 1;
        self.timings.steps += 1;
        Ok(loss)
    }

    /// Click probabilities for `batch` (its targets are ignored), into `probs` (resized).
    ///
    /// # Errors
    ///
    /// As [`Dlrm::train_step`], except for the loss; nothing changes in the model.
    ///
    /// ```
    /// use dlrm_kernels::data::MiniBatch;
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// let batch = MiniBatch {
    ///     dense: vec![0.0; 5],
    ///     indices: vec![vec![0]; 3],
    ///     offsets: vec![vec![0]; 3],
    ///     targets: vec![0.0],
    /// };
    /// let mut p = Vec::new();
    /// m.predict(&batch, &mut p)?;
    /// assert!(p[0] > 0.0 && p[0] < 1.0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn predict(&mut self, batch: &MiniBatch, probs: &mut Vec<f32>) -> Result<()> {
        let saved = self.timings;
        let res = self.forward(batch);
        self.timings = saved; // evaluation does not count as training time
        res?;
        probs.clear();
        probs.extend(self.bufs.logits.iter().map(|&z| sigmoid(z)));
        Ok(())
    }

    /// Visit every parameter tensor as `(name, shape, values)`, row-major f32, named as the
    /// DLRM reference's PyTorch state dict names them: `bot_l.<2i>.weight` (`[out][in]`),
    /// `bot_l.<2i>.bias`, `top_l.<2i>.*`, `emb_l.<t>.weight` (`[rows][dim]`). bf16 models give
    /// their exact fp32 master weights (upper and lower halves joined).
    ///
    /// # Errors
    ///
    /// Whatever `f` returns.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// let mut names = Vec::new();
    /// m.visit_tensors(|name, shape, data| {
    ///     assert_eq!(shape.iter().product::<usize>(), data.len());
    ///     names.push(name.to_string());
    ///     Ok(())
    /// })?;
    /// assert_eq!(names[0], "bot_l.0.weight");
    /// assert_eq!(names.last().unwrap(), "emb_l.2.weight");
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn visit_tensors(
        &self,
        mut f: impl FnMut(&str, &[usize], &[f32]) -> Result<()>,
    ) -> Result<()> {
        match &self.stack {
            Stack::F32(m) => m.visit(&mut f)?,
            Stack::Bf16(m) => m.visit(&mut f)?,
        }
        for (t, table) in self.emb.tables().iter().enumerate() {
            let shape = [table.rows(), table.dim()];
            let name = format!("emb_l.{t}.weight");
            match table.as_f32() {
                Some(w) => f(&name, &shape, w)?,
                None => f(&name, &shape, &table.master_weights())?,
            }
        }
        Ok(())
    }

    /// Names and shapes of every parameter tensor, in [`Dlrm::visit_tensors`] order.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let list = Dlrm::new(DlrmConfig::tiny(), 0)?.tensor_list();
    /// assert_eq!(list[0], ("bot_l.0.weight".to_string(), vec![8, 5]));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn tensor_list(&self) -> Vec<(String, Vec<usize>)> {
        let mut list = Vec::new();
        let mut mlp = |prefix: &str, sizes: Vec<usize>| {
            for (l, w) in sizes.windows(2).enumerate() {
                list.push((format!("{prefix}.{}.weight", 2 * l), vec![w[1], w[0]]));
                list.push((format!("{prefix}.{}.bias", 2 * l), vec![w[1]]));
            }
        };
        mlp("bot_l", self.cfg.bottom_mlp.clone());
        let mut top = vec![self.inter.output_dim()];
        top.extend(&self.cfg.top_mlp);
        mlp("top_l", top);
        for (t, &rows) in self.cfg.table_rows.iter().enumerate() {
            list.push((
                format!("emb_l.{t}.weight"),
                vec![rows, self.cfg.embedding_dim],
            ));
        }
        list
    }

    /// The values of one parameter tensor (row-major f32; masters for bf16), or `None` for an
    /// unknown name.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// assert_eq!(m.tensor("emb_l.1.weight").unwrap().len(), 100 * 4);
    /// assert!(m.tensor("emb_l.9.weight").is_none());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn tensor(&self, name: &str) -> Option<Vec<f32>> {
        if let Some(t) = name
            .strip_prefix("emb_l.")
            .and_then(|r| r.strip_suffix(".weight"))
            .and_then(|t| t.parse::<usize>().ok())
        {
            return self.emb.tables().get(t).map(|table| table.master_weights());
        }
        let parts: Vec<&str> = name.split('.').collect();
        let [prefix, index, kind] = parts[..] else {
            return None;
        };
        let index: usize = index.parse().ok().filter(|i| i % 2 == 0)?;
        match &self.stack {
            Stack::F32(m) => m.values(prefix, index / 2, kind),
            Stack::Bf16(m) => m.values(prefix, index / 2, kind),
        }
    }

    /// Set the step counter (the learning-rate schedule's position), e.g. when resuming.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// m.set_steps(10);
    /// assert_eq!(m.steps(), 10);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn set_steps(&mut self, steps: u64) {
        self.step = steps;
    }

    /// The embedding tables, mutable (e.g. to restore optimizer state).
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// m.embeddings_mut().table_mut(0).unwrap().set_adagrad_state(&[0.0; 100])?;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn embeddings_mut(&mut self) -> &mut EmbeddingBags {
        &mut self.emb
    }

    /// Set one parameter tensor by its [`Dlrm::visit_tensors`] name (f32 masters for bf16
    /// models, stored exactly).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown name, [`Error::Shape`] for a wrong length; nothing is
    /// changed then.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// m.set_tensor("top_l.2.bias", &[0.5])?;
    /// assert!(m.set_tensor("top_l.1.bias", &[0.5]).is_err());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn set_tensor(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let done = match &mut self.stack {
            Stack::F32(m) => m.set(name, data)?,
            Stack::Bf16(m) => m.set(name, data)?,
        };
        if done {
            return Ok(());
        }
        let table = name
            .strip_prefix("emb_l.")
            .and_then(|r| r.strip_suffix(".weight"))
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|&t| t < self.cfg.table_rows.len())
            .ok_or_else(|| Error::Config(format!("no parameter tensor named {name:?}")))?;
        self.emb
            .table_mut(table)
            .expect("index checked")
            .set_weights(data)?;
        Ok(())
    }

    /// The logits of the last forward pass (one per sample).
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert!(Dlrm::new(DlrmConfig::tiny(), 0)?.logits().is_empty());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn logits(&self) -> &[f32] {
        &self.bufs.logits
    }
}

impl<T: Element> Mlps<T> {
    fn mlp_mut(&mut self, name: &str) -> Option<&mut Mlp<T>> {
        match name {
            "bot_l" => Some(&mut self.bottom),
            "top_l" => Some(&mut self.top),
            _ => None,
        }
    }

    fn visit(&self, f: &mut TensorVisitor<'_>) -> Result<()> {
        for (prefix, mlp) in [("bot_l", &self.bottom), ("top_l", &self.top)] {
            for (l, layer) in mlp.layers().iter().enumerate() {
                let c = layer.config();
                // nn.Sequential of (Linear, ReLU) pairs: Linear layers sit at even indices.
                let shape = [c.out_features, c.in_features];
                f(
                    &format!("{prefix}.{}.weight", 2 * l),
                    &shape,
                    &layer.weights(),
                )?;
                f(
                    &format!("{prefix}.{}.bias", 2 * l),
                    &shape[..1],
                    layer.bias(),
                )?;
            }
        }
        Ok(())
    }

    /// Values of layer `l` of `prefix` (`"weight"` or `"bias"`).
    fn values(&self, prefix: &str, l: usize, kind: &str) -> Option<Vec<f32>> {
        let mlp = match prefix {
            "bot_l" => &self.bottom,
            "top_l" => &self.top,
            _ => return None,
        };
        let layer = mlp.layers().get(l)?;
        match kind {
            "weight" => Some(layer.weights()),
            "bias" => Some(layer.bias().to_vec()),
            _ => None,
        }
    }

    /// Set `bot_l.<2l>.weight` etc.; `Ok(false)` if the name is not an MLP tensor.
    fn set(&mut self, name: &str, data: &[f32]) -> Result<bool> {
        let parts: Vec<&str> = name.split('.').collect();
        let [prefix, index, kind] = parts[..] else {
            return Ok(false);
        };
        let (Some(mlp), Ok(index)) = (self.mlp_mut(prefix), index.parse::<usize>()) else {
            return Ok(false);
        };
        if index % 2 != 0 || index / 2 >= mlp.layers().len() {
            return Ok(false);
        }
        let layer = &mut mlp.layers_mut()[index / 2];
        match kind {
            "weight" => {
                let b = layer.bias().to_vec();
                layer.set_parameters(data, &b)?;
            }
            "bias" => {
                let w = layer.weights();
                check_len(
                    format!("{name} length"),
                    layer.config().out_features,
                    data.len(),
                )?;
                layer.set_parameters(&w, data)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn forward_mlps<T: Element>(
    m: &mut Mlps<T>,
    inter: &Interaction,
    batch: &MiniBatch,
    bufs: &mut Buffers,
    tm: &mut StepTimings,
) -> Result<()> {
    let b = batch.len();
    timed(&mut tm.mlp, || m.bottom.forward(&batch.dense))?;
    timed(&mut tm.other, || {
        m.bottom.output_row_major(&mut bufs.dense_out)
    })?;
    timed(&mut tm.interaction, || {
        inter.forward(&bufs.dense_out, &bufs.emb_out, m.top.input_mut(b))
    })?;
    timed(&mut tm.mlp, || m.top.forward_from_input())?;
    timed(&mut tm.other, || m.top.output_row_major(&mut bufs.logits))
}

fn backward_mlps<T: Element>(
    m: &mut Mlps<T>,
    inter: &Interaction,
    bufs: &mut Buffers,
    tm: &mut StepTimings,
    lr: f32,
    update_tables: &mut dyn FnMut(&mut Buffers, &mut StepTimings) -> Result<()>,
) -> Result<()> {
    timed(&mut tm.other, || {
        m.top.output_grad_mut().copy_from_row_major(&bufs.d_logits)
    })?;
    timed(&mut tm.mlp, || {
        m.top.backward_from_output_grad(true, Some(lr))
    })?;
    timed(&mut tm.interaction, || {
        inter.backward(
            &bufs.dense_out,
            &bufs.emb_out,
            m.top.input_grad(),
            &mut bufs.d_dense,
            &mut bufs.d_emb,
        )
    })?;
    update_tables(bufs, tm)?;
    timed(&mut tm.other, || {
        m.bottom
            .output_grad_mut()
            .copy_from_row_major(&bufs.d_dense)
    })?;
    timed(&mut tm.mlp, || {
        m.bottom.backward_from_output_grad(false, Some(lr))
    })
}

/// Every table's bags of a batch.
fn bags(batch: &MiniBatch) -> Vec<Bags<'_, i64>> {
    batch
        .indices
        .iter()
        .zip(&batch.offsets)
        .map(|(i, o)| Bags::new(i, o))
        .collect()
}
