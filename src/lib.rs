//! `dlrm-kernels`: fast CPU training of DLRM-style recommender models.
//!
//! Layers, from the bottom up (dependencies point down only):
//!
//! * [`kernels`] (the `dlrm-microkernels` crate, re-exported): batch-reduce GEMM
//!   `C (=|+=) sum_i A_i B_i` with AVX-512 fp32, AVX512-BF16 and portable paths; bf16
//!   conversion and the Split-SGD split/join; embedding row kernels; all the `unsafe` code.
//! * [`blocked`], [`linear`], [`mlp`]: activations stored `[Nb][Cb][bn][bc]`, weights
//!   `[Kb][Cb][bc][bk]` (bf16: VNNI-2 blocks `[bc/2][bk][2]`), so forward, backward-data and
//!   backward-weights are one BRGEMM per output block; bias and activation fused; the update
//!   fused into the weight-gradient pass.
//! * [`embedding`]: tables `rows x dim` (f32, or bf16 Split-SGD: 4 bytes per weight, exact
//!   fp32 updates), bags with PyTorch's `EmbeddingBag` semantics, and a fused, race-free,
//!   deterministic backward + SGD / row-wise Adagrad that never builds a dense gradient.
//! * [`interaction`], [`loss`], [`metrics`], [`optim`]: DLRM's dot interaction
//!   (`[x, Z_i . Z_j for j < i]`), BCE on logits and MSE, accuracy and exact ROC AUC, the
//!   optimizers of each parameter group and the reference's learning-rate policy.
//! * [`model`], [`checkpoint`], [`memory`]: the [`model::Dlrm`] type (its configuration,
//!   presets and training step), safetensors checkpoints with the reference's state-dict
//!   names, and the memory a configuration needs, checked before anything is allocated.
//! * [`data`]: [`data::MiniBatch`] and where batches come from ([`data::BatchSource`]: the
//!   reference's random data, synthetic data, Criteo raw text and MLPerf binary files).
//! * [`train`]: [`train::Trainer`] trains a model on a source, evaluates it, stops on a
//!   target or on request, and tells its observers (log lines, a CSV, checkpoints).
//! * `cli` (feature `cli`): the DLRM reference's flags and the trainer behind them, which
//!   `examples/dlrm.rs` runs.
//!
//! ARCHITECTURE.md (in the repository) follows one training step through these layers and
//! says where each technique of the paper lives.
//!
//! Every fallible call returns [`Result`] with an [`Error`] that names what was wrong and
//! where, and changes nothing on error. Every computation is deterministic: the same bits for
//! any number of threads (threads come from the current rayon pool; [`threads::pool`] builds
//! one with its workers pinned to CPUs).
//!
//! ```
//! use dlrm_kernels::data::MiniBatch;
//! use dlrm_kernels::model::{Dlrm, DlrmConfig};
//!
//! let cfg = DlrmConfig::tiny();
//! let mut model = Dlrm::new(cfg.clone(), 7)?;
//! let b = cfg.batch_size;
//! let batch = MiniBatch {
//!     dense: vec![0.25; b * cfg.dense_features()],
//!     indices: vec![(0..b as i64).collect(); cfg.table_rows.len()],
//!     offsets: vec![(0..b as i64).collect(); cfg.table_rows.len()],
//!     targets: (0..b).map(|i| (i % 2) as f32).collect(),
//! };
//! let first = model.train_step(&batch)?;
//! for _ in 0..20 {
//!     model.train_step(&batch)?;
//! }
//! assert!(model.train_step(&batch)? < first);
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use dlrm_microkernels as kernels;
pub use dlrm_microkernels::{Accum, Batch, Brgemm, BrgemmDesc, DType, Isa, KernelError, bf16};

pub mod blocked;
pub mod checkpoint;
#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod dist;
pub mod embedding;
pub mod error;
pub mod interaction;
pub mod linear;
pub mod loss;
pub mod memory;
pub mod metrics;
pub mod mlp;
pub mod model;
pub mod optim;
pub mod rng;
pub mod split_sgd;
pub mod threads;
pub mod train;

pub use error::{Error, Result};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
