//! `dlrm-kernels`: fast CPU training of DLRM-style recommender models.
//!
//! The microkernels (BRGEMM, bf16 conversion, Split-SGD) live in the [`kernels`] crate,
//! re-exported here; this crate builds safe layers on them and forbids `unsafe` code.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use dlrm_microkernels as kernels;
pub use dlrm_microkernels::{Accum, Batch, Brgemm, BrgemmDesc, DType, Isa, KernelError, bf16};

pub mod embedding;
pub mod error;
pub mod rng;

pub use error::{Error, Result};
pub mod blocked;
pub mod checkpoint;
pub mod data;
pub mod interaction;
pub mod linear;
pub mod loss;
pub mod metrics;
pub mod mlp;
pub mod model;
pub mod optim;
