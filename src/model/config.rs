//! What defines a DLRM model and its training ([`DlrmConfig`]), its precision, and the
//! reference's configurations ([`Preset`]).

use std::fmt;
use std::str::FromStr;

use crate::data::criteo::{KAGGLE_ROWS, SPARSE};
use crate::error::{Error, Result, parse_name};
use crate::interaction::{InteractionOp, checked_output_dim};
use crate::loss::Loss;
use crate::mlp::MlpConfig;
use crate::optim::{LrPolicy, Optimizers};

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
    /// Both precisions.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

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
    /// The optimizer of each parameter group (tables, MLPs).
    pub optimizers: Optimizers,
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
            optimizers: Optimizers::default(),
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
        let mut top = vec![self.interaction_width()];
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

    /// A configuration by its preset's name (see [`Preset`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownName`] for a name that is not a preset.
    ///
    /// ```
    /// use dlrm_kernels::model::DlrmConfig;
    /// assert_eq!(DlrmConfig::preset("small")?, DlrmConfig::small());
    /// let err = DlrmConfig::preset("huge").unwrap_err();
    /// assert_eq!(err.to_string(), "unknown preset \"huge\", expected one of: small, kaggle, terabyte, mlperf");
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn preset(name: &str) -> Result<Self> {
        Ok(name.parse::<Preset>()?.config())
    }
}

/// The configurations of the DLRM reference's benchmarks and datasets.
///
/// ```
/// use dlrm_kernels::model::Preset;
/// assert_eq!(Preset::Kaggle.config().table_rows.len(), 26);
/// assert_eq!("mlperf".parse::<Preset>()?, Preset::Mlperf);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// [`DlrmConfig::small`]: the reference benchmark's small configuration.
    Small,
    /// [`DlrmConfig::kaggle`] with the Kaggle dataset's table sizes
    /// ([`crate::data::criteo::KAGGLE_ROWS`]).
    Kaggle,
    /// [`DlrmConfig::terabyte`] with 26 tables of 10M rows.
    Terabyte,
    /// [`DlrmConfig::mlperf`] with 26 tables of 40M rows.
    Mlperf,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 4] = [
        Preset::Small,
        Preset::Kaggle,
        Preset::Terabyte,
        Preset::Mlperf,
    ];

    /// `"small"`, `"kaggle"`, `"terabyte"` or `"mlperf"`, as the trainer's `--preset` takes
    /// it.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::model::Preset::Terabyte.name(), "terabyte");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Preset::Small => "small",
            Preset::Kaggle => "kaggle",
            Preset::Terabyte => "terabyte",
            Preset::Mlperf => "mlperf",
        }
    }

    /// The configuration.
    ///
    /// ```
    /// use dlrm_kernels::model::{DlrmConfig, Preset};
    /// assert_eq!(Preset::Terabyte.config(), DlrmConfig::terabyte(vec![10_000_000; 26]));
    /// ```
    pub fn config(self) -> DlrmConfig {
        match self {
            Preset::Small => DlrmConfig::small(),
            Preset::Kaggle => DlrmConfig::kaggle(KAGGLE_ROWS.to_vec()),
            Preset::Terabyte => DlrmConfig::terabyte(vec![10_000_000; SPARSE]),
            Preset::Mlperf => DlrmConfig::mlperf(vec![40_000_000; SPARSE]),
        }
    }
}

impl FromStr for Preset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_name(s, "preset", &Self::ALL, Self::name)
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_name(s, "precision", &Self::ALL, Self::name)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
