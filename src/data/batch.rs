//! One batch of samples as every data source produces it and the model takes it.

use std::ops::Range;

use crate::error::{Error, Result};

/// One batch of samples: dense features, one bag list per table, and targets.
///
/// ```
/// use dlrm_kernels::data::MiniBatch;
/// let b = MiniBatch { dense: vec![0.0; 2 * 3], indices: vec![vec![0, 1]], offsets: vec![vec![0, 1]], targets: vec![0.0, 1.0] };
/// assert_eq!(b.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MiniBatch {
    /// Row-major `[B][dense_features]`.
    pub dense: Vec<f32>,
    /// Per table: the looked-up rows of all bags, back to back.
    pub indices: Vec<Vec<i64>>,
    /// Per table: `B` bag start offsets into its indices.
    pub offsets: Vec<Vec<i64>>,
    /// `[B]` click labels (or any target in `[0, 1]`).
    pub targets: Vec<f32>,
}

impl MiniBatch {
    /// Number of samples `B`.
    ///
    /// ```
    /// assert!(dlrm_kernels::data::MiniBatch::default().is_empty());
    /// ```
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the batch has no samples.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::data::MiniBatch::default().len(), 0);
    /// ```
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The samples `range` of this batch as a batch of their own: their dense rows and
    /// targets, and each table's bags of those samples (offsets counted from the first).
    /// This is how a part of a global batch is taken (see [`super::Part`]).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `range` is not inside the batch or the dense features are not a
    /// whole number of rows; [`Error::Offsets`] if a table does not have `B` offsets, or
    /// its offsets at the ends of `range` are not positions inside its indices in order.
    /// The part's bags are not validated further (the model does that).
    ///
    /// ```
    /// use dlrm_kernels::data::MiniBatch;
    /// let b = MiniBatch {
    ///     dense: vec![0.0, 1.0, 2.0],
    ///     indices: vec![vec![7, 8, 9, 4]],
    ///     offsets: vec![vec![0, 2, 3]], // bags [7, 8], [9], [4]
    ///     targets: vec![1.0, 0.0, 1.0],
    /// };
    /// let tail = b.samples(1..3)?;
    /// assert_eq!((tail.dense, tail.targets), (vec![1.0, 2.0], vec![0.0, 1.0]));
    /// assert_eq!((tail.indices, tail.offsets), (vec![vec![9, 4]], vec![vec![0, 1]]));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn samples(&self, range: Range<usize>) -> Result<MiniBatch> {
        let b = self.len();
        if range.start > range.end || range.end > b {
            return Err(Error::Shape {
                what: format!("samples {range:?} of a batch"),
                expected: b,
                got: range.end,
            });
        }
        let width = self.dense.len().checked_div(b).unwrap_or(0);
        if width * b != self.dense.len() {
            return Err(Error::Shape {
                what: "dense features (a whole number per sample)".into(),
                expected: width * b,
                got: self.dense.len(),
            });
        }
        let mut part = MiniBatch {
            dense: self.dense[range.start * width..range.end * width].to_vec(),
            targets: self.targets[range.clone()].to_vec(),
            ..MiniBatch::default()
        };
        for (table, (indices, offsets)) in self.indices.iter().zip(&self.offsets).enumerate() {
            let bad = |bag: usize, detail: String| Error::Offsets { table, bag, detail };
            if offsets.len() != b {
                return Err(bad(0, format!("{} offsets for {b} samples", offsets.len())));
            }
            let at = |i: usize| -> Result<usize> {
                let o = if i < b {
                    offsets[i]
                } else {
                    indices.len() as i64
                };
                usize::try_from(o)
                    .ok()
                    .filter(|&o| o <= indices.len())
                    .ok_or_else(|| bad(i, format!("offset {o} is outside the indices")))
            };
            let (first, last) = (at(range.start)?, at(range.end)?);
            if first > last {
                return Err(bad(range.start, "offsets decrease".into()));
            }
            part.indices.push(indices[first..last].to_vec());
            part.offsets.push(
                offsets[range.clone()]
                    .iter()
                    .map(|&o| o - first as i64)
                    .collect(),
            );
        }
        Ok(part)
    }
}
