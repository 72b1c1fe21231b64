//! `dlrm-kernels`: fast CPU training of DLRM-style recommender models.
//!
//! The microkernels (BRGEMM, bf16 conversion) live in the [`kernels`] crate, re-exported here.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use dlrm_microkernels as kernels;
pub use dlrm_microkernels::{Accum, Batch, Brgemm, BrgemmDesc, DType, Isa, KernelError, bf16};
