//! Training data: the DLRM reference's random generator, a learnable synthetic generator
//! (the trainer's default), the Criteo raw text reader and the MLPerf binary format, and a
//! prefetcher that overlaps loading with training on a background thread (or loads in line,
//! where training already takes every core).

pub mod binary;
pub mod criteo;
pub mod prefetch;
pub mod random;
pub mod synthetic;

pub use crate::model::MiniBatch;
