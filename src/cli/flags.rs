//! The flags, named as the DLRM reference's `dlrm_s_pytorch.py` names them.

use std::path::PathBuf;
use std::str::FromStr;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Parser, ValueEnum};

use crate::data::criteo::DatasetKind;
use crate::interaction::InteractionOp;
use crate::loss::Loss;
use crate::model::{Precision, Preset};
use crate::optim::TableOptimizer;

/// A flag taking one of `all`'s names (listed by `--help`), parsed by the type's `FromStr`.
fn choice<T>(all: &[T], name: fn(T) -> &'static str) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Copy + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    PossibleValuesParser::new(all.iter().map(|&v| name(v)))
        .map(|s| s.parse::<T>().expect("one of the possible values"))
}

/// Where the batches come from.
///
/// ```
/// use clap::Parser;
/// use dlrm_kernels::cli::{Args, DataGeneration};
/// assert_eq!(Args::parse_from(["dlrm"]).data_generation, DataGeneration::Synthetic);
/// ```
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataGeneration {
    /// The DLRM reference's random generator.
    Random,
    /// A learnable synthetic generator (the default).
    Synthetic,
    /// A Criteo dataset.
    Dataset,
}

/// The order of a dataset's training batches.
///
/// ```
/// use clap::Parser;
/// use dlrm_kernels::cli::{Args, DataRandomize};
/// let a = Args::parse_from(["dlrm", "--data-randomize", "total"]);
/// assert_eq!(a.data_randomize, DataRandomize::Total);
/// ```
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRandomize {
    /// As stored.
    None,
    /// Whole batches shuffled anew every epoch.
    Total,
}

/// The trainer's flags (names as in the DLRM reference).
///
/// ```
/// use clap::Parser;
/// use dlrm_kernels::cli::Args;
/// let a = Args::try_parse_from(["dlrm", "--precision", "bf16", "--arch-interaction-itself", "true"])?;
/// assert_eq!(a.precision, dlrm_kernels::model::Precision::Bf16);
/// assert!(a.arch_interaction_itself);
/// assert!(Args::try_parse_from(["dlrm", "--arch-interaction-itself", "False"]).is_err());
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Parser, Debug, Clone)]
#[command(
    name = "dlrm",
    about = "Train DLRM on the CPU with dlrm-kernels",
    version
)]
pub struct Args {
    /// A configuration (README.md, Presets): small (8 x 1M tables, dim 64), kaggle,
    /// terabyte, mlperf. Explicit flags override its values.
    #[arg(long, value_parser = choice(&Preset::ALL, Preset::name))]
    pub preset: Option<Preset>,
    /// Embedding dimension (must equal the bottom MLP's last size).
    #[arg(long)]
    pub arch_sparse_feature_size: Option<usize>,
    /// Table rows, dash-separated, e.g. 1000000-1000000 (ignored for datasets).
    #[arg(long)]
    pub arch_embedding_size: Option<String>,
    /// Bottom MLP sizes, dense input first, e.g. 13-512-256-64.
    #[arg(long)]
    pub arch_mlp_bot: Option<String>,
    /// Top MLP sizes after the interaction, ending in 1, e.g. 512-256-1.
    #[arg(long)]
    pub arch_mlp_top: Option<String>,
    /// Feature interaction.
    #[arg(long, value_parser = choice(&InteractionOp::ALL, InteractionOp::name), default_value = "dot")]
    pub arch_interaction_op: InteractionOp,
    /// Whether the dot interaction includes each feature with itself.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub arch_interaction_itself: bool,
    /// Where batches come from: the reference's random generator, a learnable synthetic
    /// generator, or a Criteo dataset.
    #[arg(long, value_enum, default_value_t = DataGeneration::Synthetic)]
    pub data_generation: DataGeneration,
    /// Which Criteo dataset (with --data-generation dataset).
    #[arg(long, value_parser = choice(&DatasetKind::ALL, DatasetKind::name), default_value = "kaggle")]
    pub data_set: DatasetKind,
    /// Raw Criteo text: Kaggle's train.txt, or the path prefix of Terabyte's day_N files.
    #[arg(long)]
    pub raw_data_file: Option<PathBuf>,
    /// Prefix of the MLPerf binary files (<prefix>_train.bin and <prefix>_test.bin); made
    /// from --raw-data-file when missing (default prefix: the raw file's path + _processed).
    #[arg(long)]
    pub processed_data_file: Option<PathBuf>,
    /// Rows per table for datasets: categorical value mod this (required for datasets); also
    /// caps preset table sizes.
    #[arg(long, default_value_t = -1)]
    pub max_ind_range: i64,
    /// Lookups per bag (random and synthetic data): the bag length, or its upper bound.
    #[arg(long)]
    pub num_indices_per_lookup: Option<usize>,
    /// Whether every bag has exactly --num-indices-per-lookup lookups (random data).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub num_indices_per_lookup_fixed: bool,
    /// Round random targets to 0/1.
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    pub round_targets: bool,
    /// Samples per training step.
    #[arg(long)]
    pub mini_batch_size: Option<usize>,
    /// Training steps per epoch (datasets: at most the data's; 0 = all of it).
    #[arg(long)]
    pub num_batches: Option<usize>,
    /// Passes over the training data.
    #[arg(long, default_value_t = 1)]
    pub nepochs: usize,
    /// Learning rate (after warm-up, before decay).
    #[arg(long)]
    pub learning_rate: Option<f32>,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub lr_num_warmup_steps: u64,
    /// Step at which polynomial decay starts.
    #[arg(long, default_value_t = 0)]
    pub lr_decay_start_step: u64,
    /// Steps of polynomial (power 2) decay (0: none).
    #[arg(long, default_value_t = 0)]
    pub lr_num_decay_steps: u64,
    /// Loss on the click logit.
    #[arg(long, value_parser = choice(&Loss::ALL, Loss::name), default_value = "bce")]
    pub loss_function: Loss,
    /// Optimizer of the embedding tables (the MLPs use SGD).
    #[arg(long, value_parser = choice(&TableOptimizer::ALL, TableOptimizer::name), default_value = "sgd")]
    pub optimizer: TableOptimizer,
    /// Evaluate every this many steps (0: ten times over the run); also once before training.
    #[arg(long, default_value_t = 0)]
    pub test_freq: usize,
    /// Samples per evaluation batch.
    #[arg(long)]
    pub test_mini_batch_size: Option<usize>,
    /// Evaluation batches (random and synthetic data; datasets use their whole test split).
    #[arg(long)]
    pub test_num_batches: Option<usize>,
    /// Refresh the progress line every this many steps.
    #[arg(long, default_value_t = 10)]
    pub print_freq: usize,
    /// Save a checkpoint (safetensors) here at every evaluation, at the end, and when a
    /// signal (Ctrl-C, SIGTERM) stops training.
    #[arg(long)]
    pub save_model: Option<PathBuf>,
    /// Start from this checkpoint.
    #[arg(long)]
    pub load_model: Option<PathBuf>,
    /// Only evaluate (with --load-model).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub inference_only: bool,
    /// Seed of the model initialisation and of generated data.
    #[arg(long, default_value_t = 123)]
    pub numpy_rand_seed: u64,
    /// Arithmetic and storage precision.
    #[arg(long, value_parser = choice(&Precision::ALL, Precision::name), default_value = "fp32")]
    pub precision: Precision,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Pin worker i to the i-th CPU this process may use (Linux, when there are at least
    /// --threads of them), so each worker keeps its caches. For a machine given to this run
    /// alone: two runs pinned to the same CPUs halve each other, and a background loader
    /// (--num-workers 1) shares the first worker's CPU.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub pin_threads: bool,
    /// Data loading threads: 1 produces batches ahead on a background thread, 0 produces each
    /// in line when it is needed (its time then counts as data time, as in the reference,
    /// whose loader has no workers by default). Default: 1 if a core is left beside
    /// --threads, else 0 (a background loader could then only take CPU from training).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub num_workers: Option<u8>,
    /// Write the metrics over time to this CSV file.
    #[arg(long)]
    pub metrics_csv: Option<PathBuf>,
    /// Order of a dataset's training batches: as stored, or whole batches shuffled each
    /// epoch (seeded by --numpy-rand-seed).
    #[arg(long, value_enum, default_value_t = DataRandomize::None)]
    pub data_randomize: DataRandomize,
    /// Skip malformed lines of raw data (counted in the summary) instead of stopping.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub skip_malformed: bool,
    /// Show the progress bar (on a terminal).
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    pub progress: bool,
}
