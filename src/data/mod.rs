//! Training data: the batches the model takes ([`MiniBatch`]), where they come from
//! ([`BatchSource`]: the DLRM reference's random generator, a learnable synthetic generator
//! (the trainer's default), Criteo raw text and the MLPerf binary format), and a prefetcher
//! that overlaps loading with training on a background thread (or loads in line, where
//! training already takes every core).
//!
//! A [`BatchSource`] hands out batch `i` of a [`Split`] in an epoch, in any order (every
//! source here can produce any batch on its own), so batches can be made ahead on another
//! thread and a consumer that takes only a [`Part`] of each global batch can ask for just
//! that.
//!
//! ```
//! use dlrm_kernels::data::{BatchSource, Split};
//! use dlrm_kernels::data::synthetic::{SyntheticConfig, SyntheticSource};
//! use dlrm_kernels::data::SplitSizes;
//!
//! let sizes = SplitSizes { train_batches: 10, test_batches: 2, test_batch_size: 256 };
//! let data = SyntheticSource::new(SyntheticConfig::default(), sizes)?;
//! assert_eq!((data.batches(Split::Train), data.batches(Split::Test)), (10, 2));
//! assert_eq!(data.batch(Split::Test, 0, 1)?.len(), 256);
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

mod batch;
pub mod binary;
pub mod criteo;
pub mod prefetch;
pub mod random;
pub mod synthetic;

use std::ops::Range;

pub use batch::MiniBatch;

use crate::error::{Error, Result};

/// Which part of a dataset.
///
/// ```
/// use dlrm_kernels::data::Split;
/// assert_eq!(Split::Validation.name(), "val");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training samples (Criteo: every day but the last).
    Train,
    /// The test samples (Criteo: the first half of the last day).
    Test,
    /// The validation samples (Criteo: the second half of the last day).
    Validation,
}

impl Split {
    /// `"train"`, `"test"` or `"val"`.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::data::Split::Train.name(), "train");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Validation => "val",
        }
    }
}

/// Which samples of each global batch a consumer takes: all of them in one process
/// ([`Part::WHOLE`]), or part `index` of `count` equal shares (the first
/// `batch % count` parts one sample larger), as one rank of a data-parallel run does.
///
/// ```
/// use dlrm_kernels::data::Part;
/// assert_eq!(Part::WHOLE.samples(10), 0..10);
/// let second = Part { index: 1, count: 3 };
/// assert_eq!(second.samples(10), 4..7); // shares of 4, 3, 3
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Part {
    /// This part's number, below `count`.
    pub index: usize,
    /// How many parts share each batch (at least 1).
    pub count: usize,
}

impl Part {
    /// The whole batch.
    pub const WHOLE: Part = Part { index: 0, count: 1 };

    /// The samples of a batch of `batch` samples that this part takes (empty for a part
    /// past `count`).
    ///
    /// ```
    /// use dlrm_kernels::data::Part;
    /// let shares: Vec<_> = (0..3).map(|index| Part { index, count: 3 }.samples(2)).collect();
    /// assert_eq!(shares, [0..1, 1..2, 2..2]);
    /// ```
    pub fn samples(self, batch: usize) -> Range<usize> {
        let count = self.count.max(1);
        let index = self.index.min(count);
        let (share, extra) = (batch / count, batch % count);
        let start = index * share + index.min(extra);
        let len = if index < count {
            share + usize::from(index < extra)
        } else {
            0
        };
        start..start + len
    }
}

/// Batches per split of a generated source, and the test batch size.
///
/// ```
/// use dlrm_kernels::data::SplitSizes;
/// let s = SplitSizes { train_batches: 100, test_batches: 10, test_batch_size: 2048 };
/// assert_eq!(s.train_batches, 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SplitSizes {
    /// Training batches per epoch (generated sources make fresh ones every epoch).
    pub train_batches: usize,
    /// Test batches (the same ones at every evaluation).
    pub test_batches: usize,
    /// Samples per test batch.
    pub test_batch_size: usize,
}

/// Where a trainer's batches come from: training and test batches of one shape, any batch
/// on request.
///
/// A source's batches all have [`BatchSource::dense_features`] dense features per sample
/// and one bag list per table of [`BatchSource::table_rows`]; the batch size is the
/// source's own (a dataset's last batch may be smaller). Batch `i` of an epoch must not
/// depend on which batches were asked for before (the prefetcher makes them ahead, on
/// another thread), and the same `(split, epoch, i)` must give the same batch.
///
/// A source of your own is a few lines:
///
/// ```
/// use dlrm_kernels::data::{BatchSource, MiniBatch, Split};
///
/// /// Two tables of 10 rows; the label is whether sample's row in table 0 is even.
/// struct Parity;
///
/// impl BatchSource for Parity {
///     fn dense_features(&self) -> usize { 1 }
///     fn table_rows(&self) -> Vec<usize> { vec![10, 10] }
///     fn batches(&self, split: Split) -> usize { if split == Split::Train { 50 } else { 1 } }
///     fn batch(&self, _: Split, epoch: usize, i: usize) -> dlrm_kernels::Result<MiniBatch> {
///         let rows: Vec<i64> = (0..16).map(|s| ((s * 7 + i + epoch) % 10) as i64).collect();
///         Ok(MiniBatch {
///             dense: vec![0.5; 16],
///             targets: rows.iter().map(|r| (r % 2 == 0) as u8 as f32).collect(),
///             offsets: vec![(0..16).collect(); 2],
///             indices: vec![rows.clone(), rows],
///         })
///     }
/// }
/// assert_eq!(Parity.batch(Split::Train, 0, 3)?.len(), 16);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub trait BatchSource: Send + Sync {
    /// Dense features per sample.
    fn dense_features(&self) -> usize;

    /// Rows of each table the indices address (one entry per table).
    fn table_rows(&self) -> Vec<usize>;

    /// Batches in one pass over `split` (0 for a split the source does not have).
    fn batches(&self, split: Split) -> usize;

    /// Batch `i` (below [`BatchSource::batches`]) of `split` in epoch `epoch` (generated
    /// sources draw fresh training batches every epoch; datasets visit theirs in order, or
    /// shuffled per epoch).
    ///
    /// # Errors
    ///
    /// Whatever reading or making the batch can fail with (a malformed record, an I/O
    /// error, `i` out of range).
    fn batch(&self, split: Split, epoch: usize, i: usize) -> Result<MiniBatch>;

    /// The samples `part` takes of [`BatchSource::batch`]`(split, epoch, i)`. The default
    /// makes the whole batch and keeps the part ([`MiniBatch::samples`]); a source that can
    /// read less overrides it.
    ///
    /// # Errors
    ///
    /// Those of [`BatchSource::batch`] and [`MiniBatch::samples`].
    ///
    /// ```
    /// use dlrm_kernels::data::{BatchSource, Part, Split, SplitSizes};
    /// use dlrm_kernels::data::random::{RandomDataConfig, RandomSource};
    /// let sizes = SplitSizes { train_batches: 1, test_batches: 1, test_batch_size: 8 };
    /// let data = RandomSource::new(RandomDataConfig::default(), sizes)?;
    /// let half = data.part(Split::Train, 0, 0, Part { index: 1, count: 2 })?;
    /// assert_eq!(half.targets, data.batch(Split::Train, 0, 0)?.targets[64..]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    fn part(&self, split: Split, epoch: usize, i: usize, part: Part) -> Result<MiniBatch> {
        let batch = self.batch(split, epoch, i)?;
        if part == Part::WHOLE {
            return Ok(batch);
        }
        batch.samples(part.samples(batch.len()))
    }

    /// Input lines skipped as malformed while preparing the data (0 unless the source
    /// reads raw text and was asked to skip them).
    ///
    /// ```
    /// use dlrm_kernels::data::{BatchSource, SplitSizes};
    /// use dlrm_kernels::data::random::{RandomDataConfig, RandomSource};
    /// let sizes = SplitSizes { train_batches: 1, test_batches: 1, test_batch_size: 8 };
    /// assert_eq!(RandomSource::new(RandomDataConfig::default(), sizes)?.skipped(), 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    fn skipped(&self) -> u64 {
        0
    }
}

/// `Err` unless `i` is below `n`, batch `i` of `split`.
pub(crate) fn check_batch_number(split: Split, i: usize, n: usize) -> Result<()> {
    if i < n {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{} batch {i} requested, the split has {n}",
            split.name()
        )))
    }
}
