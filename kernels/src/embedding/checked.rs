//! Bags validated once against a table's row count: what the pooling kernel takes.

use std::ops::Range;

use super::{BagError, BagIndex, Bags};
use crate::KernelError;

/// Bags whose offsets and indices have been checked against a table of [`rows`] rows, by
/// [`CheckedBags::new`], the only way to make one. [`BagKernel::pool`] takes them and only
/// compares the recorded row count with its table's (O(1)), so the indices of a batch are
/// read for validation once, however many passes use them. [`CheckedBags::range`] hands out
/// runs of the bags (for threads) without checking again.
///
/// [`rows`]: CheckedBags::rows
/// [`BagKernel::pool`]: super::BagKernel::pool
///
/// ```
/// use dlrm_microkernels::embedding::{BagError, Bags, CheckedBags};
/// let (indices, offsets) = ([4i64, 5, 6], [0i64, 2]);
/// let bags = Bags { indices: &indices, offsets: &offsets, end: 3, weights: None };
/// let checked = CheckedBags::new(bags, 10)?;
/// assert_eq!((checked.len(), checked.rows()), (2, 10));
/// assert_eq!(
///     CheckedBags::new(bags, 6).unwrap_err(),
///     BagError::IndexOutOfRange { bag: 1, position: 2, index: 6, rows: 6 }
/// );
/// # Ok::<(), BagError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CheckedBags<'a, I> {
    bags: Bags<'a, I>,
    rows: usize,
}

impl<'a, I: BagIndex> CheckedBags<'a, I> {
    /// Check `bags` for a table of `rows` rows: `end <= indices.len()`; weights, when
    /// given, one per index; offsets non-negative, non-decreasing and at most `end`; every
    /// index used (positions `offsets[0]..end`) in `[0, rows)`.
    ///
    /// # Errors
    ///
    /// The first problem found, in that order: [`KernelError::SliceTooShort`] for `end`
    /// past the indices, [`KernelError::LengthMismatch`] for the weights,
    /// [`BagError::Offsets`] naming the bag, [`BagError::IndexOutOfRange`] naming the bag
    /// (the last one starting at or before the index) and the position.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{Bags, CheckedBags};
    /// let bags = Bags { indices: &[1i32, 2], offsets: &[0i32, 2, 1], end: 2, weights: None };
    /// let err = CheckedBags::new(bags, 10).unwrap_err();
    /// assert_eq!(err.to_string(), "bag 2: bad offsets: offset 1 is smaller than the previous offset 2");
    /// ```
    pub fn new(bags: Bags<'a, I>, rows: usize) -> Result<Self, BagError> {
        check_offsets(&bags)?;
        check_indices(&bags, rows)?;
        Ok(CheckedBags { bags, rows })
    }

    /// The row count the indices were checked against.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{Bags, CheckedBags};
    /// let bags = Bags::<i32> { indices: &[], offsets: &[], end: 0, weights: None };
    /// assert_eq!(CheckedBags::new(bags, 7)?.rows(), 7);
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The bags, as checked.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{Bags, CheckedBags};
    /// let bags = Bags { indices: &[3i64], offsets: &[0i64], end: 1, weights: None };
    /// assert_eq!(CheckedBags::new(bags, 7)?.bags().indices, &[3]);
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn bags(&self) -> Bags<'a, I> {
        self.bags
    }

    /// Number of bags.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{Bags, CheckedBags};
    /// let bags = Bags { indices: &[3i64], offsets: &[0i64, 1], end: 1, weights: None };
    /// assert_eq!(CheckedBags::new(bags, 7)?.len(), 2);
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.bags.len()
    }

    /// Whether there are no bags.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{Bags, CheckedBags};
    /// let bags = Bags::<i64> { indices: &[], offsets: &[], end: 0, weights: None };
    /// assert!(CheckedBags::new(bags, 7)?.is_empty());
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.bags.is_empty()
    }

    /// Where bag `b` starts in the indices (`b == len()`: where the last bag ends).
    ///
    /// # Panics
    ///
    /// If `b > len()`.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{Bags, CheckedBags};
    /// let bags = Bags { indices: &[3i64, 4, 5], offsets: &[0i64, 2], end: 3, weights: None };
    /// let c = CheckedBags::new(bags, 7)?;
    /// assert_eq!((c.start(1), c.start(2)), (2, 3));
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn start(&self, b: usize) -> usize {
        let n = self.bags.offsets.len();
        assert!(b <= n, "bag {b} of {n}");
        if b < n {
            // Checked: a non-negative offset at most `end`.
            self.bags.offsets[b].to_i64() as usize
        } else {
            self.bags.end
        }
    }

    /// Bags `range`, still checked (the same indices, the offsets of those bags, and the
    /// end of the last one).
    ///
    /// # Panics
    ///
    /// If `range` is not inside `0..=len()` or runs backwards.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{Bags, CheckedBags};
    /// let bags = Bags { indices: &[3i64, 4, 5], offsets: &[0i64, 2, 2], end: 3, weights: None };
    /// let middle = CheckedBags::new(bags, 7)?.range(1..2);
    /// assert_eq!((middle.len(), middle.bags().end), (1, 2)); // the empty bag 1
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn range(&self, range: Range<usize>) -> CheckedBags<'a, I> {
        let end = self.start(range.end);
        CheckedBags {
            bags: Bags {
                offsets: &self.bags.offsets[range],
                end,
                ..self.bags
            },
            rows: self.rows,
        }
    }
}

/// Offsets non-negative, non-decreasing, at most `end`; `end <= indices.len()`; weights as
/// many as indices.
fn check_offsets<I: BagIndex>(bags: &Bags<'_, I>) -> Result<(), BagError> {
    let n = bags.indices.len();
    if bags.end > n {
        return Err(KernelError::SliceTooShort {
            operand: "indices",
            batch_index: None,
            needed: bags.end,
            len: n,
        }
        .into());
    }
    if let Some(w) = bags.weights
        && w.len() != n
    {
        return Err(KernelError::LengthMismatch {
            what: "weights and indices",
            left: w.len(),
            right: n,
        }
        .into());
    }
    let mut prev = 0i64;
    for (bag, o) in bags.offsets.iter().enumerate() {
        let o = o.to_i64();
        let detail = if o < 0 {
            format!("offset {o} is negative")
        } else if bag > 0 && o < prev {
            format!("offset {o} is smaller than the previous offset {prev}")
        } else if o as u64 > bags.end as u64 {
            format!("offset {o} is past the end of the indices ({})", bags.end)
        } else {
            prev = o;
            continue;
        };
        return Err(BagError::Offsets { bag, detail });
    }
    Ok(())
}

/// Every index at positions `offsets[0]..end` in `[0, rows)` (offsets already checked).
fn check_indices<I: BagIndex>(bags: &Bags<'_, I>, rows: usize) -> Result<(), BagError> {
    let Some(first) = bags.offsets.first() else {
        return Ok(());
    };
    let start = first.to_i64() as usize;
    let used = &bags.indices[start..bags.end];
    // `x` is in `[0, rows)` exactly when the sign bits of `x` and of `!(x - rows)` are both
    // clear (`x - rows` cannot overflow for `x >= 0`). OR-ing them over all indices uses
    // plain 64-bit integer operations, which vectorise on every x86-64 (a 64-bit unsigned
    // maximum needs a compare that SSE2 lacks). With more rows than `i64::MAX`, every
    // non-negative index is a row.
    let bad_bits = match i64::try_from(rows) {
        Ok(limit) => used.iter().fold(0i64, |acc, &i| {
            let x = i.to_i64();
            acc | x | !x.wrapping_sub(limit)
        }),
        Err(_) => used.iter().fold(0i64, |acc, &i| acc | i.to_i64()),
    };
    if bad_bits >= 0 {
        return Ok(());
    }
    let k = used
        .iter()
        .position(|&i| i.to_i64() < 0 || i.to_i64() as u64 >= rows as u64)
        .expect("some index is out of range");
    let position = start + k;
    // The bag holding `position`: the last one starting at or before it.
    let bag = bags
        .offsets
        .partition_point(|o| o.to_i64() as usize <= position)
        - 1;
    Err(BagError::IndexOutOfRange {
        bag,
        position,
        index: used[k].to_i64(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_check_takes_exactly_zero_to_rows() {
        for rows in [1usize, 10, 1 << 20, u32::MAX as usize, usize::MAX] {
            let r = i64::try_from(rows).unwrap_or(i64::MAX);
            for (x, ok) in [
                (0, true),
                (r - 1, true),
                (r, rows as u64 > i64::MAX as u64),
                (r.saturating_add(1), rows as u64 > i64::MAX as u64),
                (-1, false),
                (-r, false),
                (i64::MIN, false),
                (i64::MAX, rows as u64 > i64::MAX as u64),
            ] {
                // The bad index in the middle of good ones, as one bag.
                let indices = [0, x, r - 1];
                let bags = Bags {
                    indices: &indices,
                    offsets: &[0i64],
                    end: 3,
                    weights: None,
                };
                let got = CheckedBags::new(bags, rows);
                assert_eq!(got.is_ok(), ok, "index {x}, rows {rows}");
                if let Err(BagError::IndexOutOfRange {
                    position, index, ..
                }) = got
                {
                    assert_eq!((position, index), (1, x));
                }
            }
        }
    }
}
