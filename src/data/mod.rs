//! Training data: the DLRM reference's random generator, a learnable synthetic generator,
//! and readers for the Criteo datasets.

pub mod random;

pub use crate::model::MiniBatch;
