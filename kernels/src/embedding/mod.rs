//! Embedding-bag row kernels: pooling (gather-reduce) and fused sparse row updates, plus
//! zeroed huge-page buffers for the tables.
//!
//! A table is `rows x dim`, row-major, `f32` or `bf16` (for bf16 Split-SGD tables the `bf16`
//! half is what the forward reads). A batch of bags is PyTorch's `EmbeddingBag` input: a flat
//! list of indices and, per bag, the offset where its indices start ([`Bags`]). Bags are
//! validated once, against the table's row count, by [`CheckedBags::new`]; the pooling
//! kernel takes only [`CheckedBags`] and compares the row count they were checked against
//! with its table's, so no pass reads the indices for validation again.
//!
//! # Pooling
//!
//! For bag `b` with positions `s..e`:
//!
//! `out[b] = scale_b * sum_{j in s..e} w_j * table[indices[j]]`
//!
//! with `w_j` the per-sample weight (1 without weights) and `scale_b = 1` for
//! [`Pooling::Sum`], `1 / (e - s)` for [`Pooling::Mean`]. Empty bags give zeros. Rows are
//! accumulated in f32 in bag order, each product `w_j * x` rounded before the addition (no
//! FMA), so every ISA gives the same bits. The SIMD path prefetches the rows
//! [`BagKernelDesc::prefetch_distance`] lookups ahead (across bag boundaries).
//!
//! # Fused sparse update
//!
//! [`BagKernel::apply`] takes [`Lookup`]s `(row, bag, scale)` and the gradient of the pooled
//! output, `grad[bag]`. Each run of consecutive lookups of one row (each row's lookups, for
//! [`BagKernel::apply_grouped`]) is coalesced first:
//!
//! `g = ((0 + scale_1 * grad[bag_1]) + scale_2 * grad[bag_2]) + ...` (in lookup order)
//!
//! then the row is updated once:
//!
//! * [`RowUpdate::Sgd`]: `row -= lr * g` (multiply, then subtract);
//! * [`RowUpdate::RowwiseAdagrad`] (the DLRM reference's `RowWiseSparseAdagrad`):
//!   `h += sum(g^2) / dim; row -= lr * (g / (sqrt(h) + eps))`, with one `h` per row.
//!
//! For a [`RowsMut::Split`] table each element is the exact f32 `hi << 16 | lo`, updated in
//! f32 and split again (Split-SGD). No gradient row is materialised per lookup: the coalesced
//! gradient of one row lives in a `dim`-long scratch, and the update is applied in place.
//! Callers of [`BagKernel::apply`] group the lookups by row (stably, to keep the order
//! deterministic) so that all duplicates of a row are consecutive;
//! [`BagKernel::apply_grouped`] groups them itself, in one pass that also validates them
//! (see [`GroupBuffers`]), without moving them. The `dlrm-kernels` crate groups the lookups
//! of each block of rows on the task that owns the block, which makes the update race-free
//! and independent of the thread count. The SIMD path prefetches the row, its gradient row
//! and its Adagrad accumulator [`BagKernelDesc::prefetch_distance`] lookups (grouped: rows)
//! ahead.
//! `sum(g^2)` is reduced in 16 lanes and then by halves (8, 4, 2, 1), on every ISA, so Adagrad
//! too gives the same bits everywhere.
//!
//! # Example
//!
//! ```
//! use dlrm_microkernels::embedding::{BagKernel, BagKernelDesc, Bags, CheckedBags, Pooling};
//!
//! let dim = 3;
//! let table: Vec<f32> = (0..4 * dim).map(|x| x as f32).collect(); // 4 rows
//! let indices = [0i64, 2, 3, 1];
//! let offsets = [0i64, 1, 1]; // bags [0], [], [2, 3, 1]
//! let bags = Bags { indices: &indices, offsets: &offsets, end: indices.len(), weights: None };
//! let bags = CheckedBags::new(bags, 4)?; // validated once, for a table of 4 rows
//! let kernel = BagKernel::new(BagKernelDesc::new(dim))?;
//! let mut out = vec![f32::NAN; 3 * dim];
//! kernel.pool(&table, &bags, Pooling::Sum, &mut out, dim)?;
//! assert_eq!(out, [0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 18.0, 21.0, 24.0]);
//! # Ok::<(), dlrm_microkernels::embedding::BagError>(())
//! ```

mod checked;
mod group;
pub(crate) mod types;

pub use crate::sys::hugepage::{HUGE_PAGE, HugePageBuf, Plain};
pub use checked::CheckedBags;
pub use group::GroupBuffers;
pub use types::{BagIndex, Bags, GradRows, Lookup, Pooling, RowUpdate, RowsMut};

use std::fmt;

use crate::abi::{AnyBags, ApplyJob, Order, Orders, PoolJob, Runs};
use crate::backend::{self, Backend};
use crate::{Element, Isa, KernelError};

/// What went wrong in an embedding kernel. Kernels check everything before they write: on
/// error, no output and no row has been touched.
///
/// ```
/// use dlrm_microkernels::embedding::BagError;
/// let e = BagError::IndexOutOfRange { bag: 2, position: 9, index: 10, rows: 10 };
/// assert_eq!(e.to_string(), "bag 2, position 9: index 10 outside [0, 10)");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BagError {
    /// A size, length or ISA problem (see [`KernelError`]).
    Kernel(KernelError),
    /// An index outside `[0, rows)`.
    IndexOutOfRange {
        /// Bag (counted from the first bag given) holding the index.
        bag: usize,
        /// Position in the index list.
        position: usize,
        /// The index.
        index: i64,
        /// Rows in the table.
        rows: usize,
    },
    /// Malformed offsets.
    Offsets {
        /// The bag (counted from the first bag given) whose offset is wrong.
        bag: usize,
        /// What is wrong.
        detail: String,
    },
    /// A lookup given to [`BagKernel::apply`] names a row outside its block of rows.
    RowOutsideBlock {
        /// Position in the lookup list.
        position: usize,
        /// The row.
        row: u32,
        /// First row of the block.
        first_row: usize,
        /// Rows in the block.
        rows: usize,
    },
    /// `dim` is zero.
    ZeroDim,
    /// [`CheckedBags`] checked against a table of another row count than the one given.
    RowsMismatch {
        /// The rows the bags were checked against.
        checked: usize,
        /// The rows of the table given.
        table: usize,
    },
}

impl fmt::Display for BagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BagError::Kernel(e) => write!(f, "{e}"),
            BagError::IndexOutOfRange {
                bag,
                position,
                index,
                rows,
            } => write!(
                f,
                "bag {bag}, position {position}: index {index} outside [0, {rows})"
            ),
            BagError::Offsets { bag, detail } => write!(f, "bag {bag}: bad offsets: {detail}"),
            BagError::RowOutsideBlock {
                position,
                row,
                first_row,
                rows,
            } => write!(
                f,
                "lookup {position}: row {row} outside the block of rows [{first_row}, {})",
                first_row + rows
            ),
            BagError::ZeroDim => write!(f, "embedding dimension is zero"),
            BagError::RowsMismatch { checked, table } => write!(
                f,
                "bags checked against a table of {checked} rows, given a table of {table}"
            ),
        }
    }
}

impl std::error::Error for BagError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BagError::Kernel(e) => Some(e),
            _ => None,
        }
    }
}

impl From<KernelError> for BagError {
    fn from(e: KernelError) -> Self {
        BagError::Kernel(e)
    }
}

/// Describes a bag kernel: the row length and how far ahead to prefetch.
///
/// ```
/// use dlrm_microkernels::embedding::BagKernelDesc;
/// let d = BagKernelDesc::new(64);
/// assert_eq!((d.dim, d.prefetch_distance), (64, BagKernelDesc::prefetch_for_row_bytes(256)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BagKernelDesc {
    /// Elements per row.
    pub dim: usize,
    /// Lookups ahead whose rows are prefetched (0: no software prefetch).
    pub prefetch_distance: usize,
}

impl BagKernelDesc {
    /// Bytes of rows the default prefetch distance keeps in flight ahead of the loads.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::BagKernelDesc;
    /// assert_eq!(BagKernelDesc::PREFETCH_BYTES, 8192);
    /// ```
    pub const PREFETCH_BYTES: usize = 8 << 10;

    /// Rows of `dim` elements, with the default prefetch distance for f32 rows.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::embedding::BagKernelDesc::new(3).dim, 3);
    /// ```
    pub fn new(dim: usize) -> Self {
        BagKernelDesc {
            dim,
            prefetch_distance: Self::prefetch_for_row_bytes(dim.saturating_mul(4)),
        }
    }

    /// The default prefetch distance for rows of `row_bytes` bytes: the lookups that cover
    /// [`Self::PREFETCH_BYTES`] (32 lookups of fp32 x 64, 64 of bf16 x 64), between 4 and 64
    /// (how the 8 KiB were chosen: BENCHMARKS.md, "Measurements behind choices in the
    /// code").
    ///
    /// ```
    /// use dlrm_microkernels::embedding::BagKernelDesc;
    /// assert_eq!(BagKernelDesc::prefetch_for_row_bytes(64 * 4), 32);
    /// assert_eq!(BagKernelDesc::prefetch_for_row_bytes(64 * 2), 64);
    /// assert_eq!(BagKernelDesc::prefetch_for_row_bytes(1 << 20), 4);
    /// ```
    pub fn prefetch_for_row_bytes(row_bytes: usize) -> usize {
        (Self::PREFETCH_BYTES / row_bytes.max(1)).clamp(4, 64)
    }
}

/// Pooling and fused-update kernels for one row length, bound to an ISA. `Copy`, cheap.
///
/// ```
/// use dlrm_microkernels::embedding::{BagKernel, BagKernelDesc};
/// use dlrm_microkernels::Isa;
/// for isa in Isa::available() {
///     let k = BagKernel::with_isa(BagKernelDesc::new(17), isa)?;
///     assert_eq!(k.isa(), isa);
/// }
/// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BagKernel {
    desc: BagKernelDesc,
    table: &'static Backend,
}

impl BagKernel {
    /// A kernel on the active ISA ([`Isa::active`]).
    ///
    /// # Errors
    ///
    /// [`BagError::ZeroDim`] for `dim == 0`, and the errors of [`Isa::active`].
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{BagError, BagKernel, BagKernelDesc};
    /// assert!(BagKernel::new(BagKernelDesc::new(64)).is_ok());
    /// assert_eq!(BagKernel::new(BagKernelDesc::new(0)), Err(BagError::ZeroDim));
    /// ```
    pub fn new(desc: BagKernelDesc) -> Result<Self, BagError> {
        Self::with_isa(desc, Isa::active()?)
    }

    /// A kernel on a chosen ISA.
    ///
    /// # Errors
    ///
    /// [`BagError::ZeroDim`] for `dim == 0`; [`KernelError::IsaUnavailable`] if this CPU
    /// lacks `isa`.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{BagKernel, BagKernelDesc};
    /// use dlrm_microkernels::Isa;
    /// let k = BagKernel::with_isa(BagKernelDesc::new(8), Isa::Portable)?;
    /// assert_eq!(k.desc().dim, 8);
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn with_isa(desc: BagKernelDesc, isa: Isa) -> Result<Self, BagError> {
        if desc.dim == 0 {
            return Err(BagError::ZeroDim);
        }
        Ok(BagKernel {
            desc,
            table: backend::get(isa)?,
        })
    }

    /// The descriptor.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{BagKernel, BagKernelDesc};
    /// let d = BagKernelDesc { dim: 5, prefetch_distance: 0 };
    /// assert_eq!(*BagKernel::new(d)?.desc(), d);
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn desc(&self) -> &BagKernelDesc {
        &self.desc
    }

    /// The ISA the kernel runs on.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{BagKernel, BagKernelDesc};
    /// assert!(BagKernel::new(BagKernelDesc::new(5))?.isa().is_available());
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn isa(&self) -> Isa {
        self.table.isa
    }

    /// Pool each bag of `bags` into `out[i * out_stride..][..dim]` (see the module docs for
    /// the formula). `table` holds `table.len() / dim` rows, the count `bags` were checked
    /// against. Elements of `out` outside those ranges are not touched.
    ///
    /// `T` is `f32` or `bf16` (rows widened to f32), the output `O` is `f32` or `bf16`
    /// (rounded to nearest even once, at the end).
    ///
    /// # Errors
    ///
    /// Nothing is written when any of these is returned:
    /// [`BagError::RowsMismatch`] when `bags` were checked for a table of another size,
    /// [`KernelError::SliceTooShort`] for `out` too short,
    /// [`KernelError::LeadingDimension`] for `out_stride < dim`, and
    /// [`KernelError::Overflow`] if the output extent overflows.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{BagError, BagKernel, BagKernelDesc, Bags, CheckedBags, Pooling};
    /// use half::bf16;
    ///
    /// let table: Vec<bf16> = [1.0f32, 2.0, 3.0, 4.0].map(bf16::from_f32).to_vec(); // 2 x 2
    /// let (indices, offsets, weights) = ([0i32, 1, 1], [0i32], [1.0f32, 0.5, 0.5]);
    /// let bags = Bags { indices: &indices, offsets: &offsets, end: 3, weights: Some(&weights) };
    /// let k = BagKernel::new(BagKernelDesc::new(2))?;
    /// let mut out = [0.0f32; 2];
    /// k.pool(&table, &CheckedBags::new(bags, 2)?, Pooling::Sum, &mut out, 2)?;
    /// assert_eq!(out, [4.0, 6.0]);
    ///
    /// let mut mean = [0.0f32; 2];
    /// let first_two = Bags { end: 2, weights: None, ..bags }; // the bag of rows 0 and 1
    /// k.pool(&table, &CheckedBags::new(first_two, 2)?, Pooling::Mean, &mut mean, 2)?;
    /// assert_eq!(mean, [2.0, 3.0]);
    ///
    /// // Checked for a table of 3 rows: refused by this one, whatever the indices.
    /// let err = k.pool(&table, &CheckedBags::new(bags, 3)?, Pooling::Sum, &mut out, 2);
    /// assert_eq!(err, Err(BagError::RowsMismatch { checked: 3, table: 2 }));
    /// # Ok::<(), BagError>(())
    /// ```
    pub fn pool<T: Element, I: BagIndex, O: Element>(
        &self,
        table: &[T],
        bags: &CheckedBags<'_, I>,
        pooling: Pooling,
        out: &mut [O],
        out_stride: usize,
    ) -> Result<(), BagError> {
        let dim = self.desc.dim;
        let rows = table.len() / dim;
        if rows != bags.rows() {
            return Err(BagError::RowsMismatch {
                checked: bags.rows(),
                table: rows,
            });
        }
        let nb = bags.len();
        if nb == 0 {
            return Ok(());
        }
        if out_stride < dim {
            return Err(KernelError::LeadingDimension {
                name: "out_stride",
                value: out_stride,
                min_name: "dim",
                min: dim,
            }
            .into());
        }
        let needed = (nb - 1)
            .checked_mul(out_stride)
            .and_then(|x| x.checked_add(dim))
            .ok_or(KernelError::Overflow {
                what: "pooled output extent",
            })?;
        if out.len() < needed {
            return Err(KernelError::SliceTooShort {
                operand: "out",
                batch_index: None,
                needed,
                len: out.len(),
            }
            .into());
        }
        let mean = pooling == Pooling::Mean;
        let job = PoolJob {
            table: T::view(table),
            dim,
            bags: erase(&bags.bags()),
            mean,
            prefetch: self.desc.prefetch_distance,
            out: O::view_mut(out),
            out_stride,
        };
        // SAFETY: the table is of a backend this CPU runs; `CheckedBags::new` proved every
        // bag lies inside `indices` (and `weights`) and every index used is below the row
        // count it recorded, which is this table's; the check above proved every bag's
        // output row lies inside `out`.
        unsafe { (self.table.pool)(job) };
        Ok(())
    }

    /// The fused sparse update: coalesce each run of consecutive lookups of one row and apply
    /// `update` to that row once (see the module docs for the formulas).
    ///
    /// `rows` is a block of whole rows starting at table row `first_row` (`len / dim` rows;
    /// for [`RowsMut::Split`] `hi` and `lo` have the same length). Group `lookups` by row
    /// (any row order) so that every duplicate is coalesced; duplicates that are not
    /// consecutive are still correct SGD, applied one run after another.
    ///
    /// # Errors
    ///
    /// Nothing is written when any of these is returned:
    /// [`BagError::RowOutsideBlock`] for a lookup whose row is not in the block,
    /// [`KernelError::SliceTooShort`] when a lookup's bag gradient is past the end of
    /// `grad.data` (naming the lookup) or the Adagrad state has fewer entries than rows,
    /// [`KernelError::LengthMismatch`] when `hi` and `lo` differ in length, and
    /// [`KernelError::LeadingDimension`] when `grad.stride < dim`.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{
    ///     BagKernel, BagKernelDesc, GradRows, Lookup, RowUpdate, RowsMut,
    /// };
    ///
    /// // Rows 10 and 11 of a table with dim 2; bag 0 used row 10 twice, bag 1 row 11 once.
    /// let mut block = [1.0f32, 1.0, 2.0, 2.0];
    /// let grad = [0.5f32, 1.0, -1.0, 0.0]; // two bags
    /// let lookups = [
    ///     Lookup { row: 10, bag: 0, scale: 1.0 },
    ///     Lookup { row: 10, bag: 0, scale: 1.0 },
    ///     Lookup { row: 11, bag: 1, scale: 1.0 },
    /// ];
    /// let k = BagKernel::new(BagKernelDesc::new(2))?;
    /// k.apply(
    ///     RowsMut::F32(&mut block),
    ///     10,
    ///     &lookups,
    ///     GradRows { data: &grad, stride: 2 },
    ///     RowUpdate::Sgd { lr: 0.5 },
    /// )?;
    /// assert_eq!(block, [0.5, 0.0, 2.5, 2.0]);
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn apply(
        &self,
        rows: RowsMut<'_>,
        first_row: usize,
        lookups: &[Lookup],
        grad: GradRows<'_>,
        update: RowUpdate<'_>,
    ) -> Result<(), BagError> {
        let nrows = self.check_block(&rows, grad, &update)?;
        check_lookups(self.desc.dim, first_row, nrows, lookups, grad)?;
        let order = Orders::Runs(Runs { n: lookups.len() });
        // SAFETY: the block and every lookup were just checked.
        unsafe { self.run_order(rows, first_row, lookups, order, grad, update) };
        Ok(())
    }

    /// The fused sparse update of lookups in any order: each row's lookups are coalesced in
    /// position order and the row is updated once, rows in the order of their first lookup.
    /// The same arithmetic, bit for bit, as [`BagKernel::apply`] on the lookups laid out row
    /// by row in that order, without moving them.
    ///
    /// The grouping is one pass over the lookups that also validates them (see
    /// [`GroupBuffers`], which `buffers` provides and which grows to the largest block and
    /// lookup count seen). `rows`, `first_row`, `grad` and `update` are as for
    /// [`BagKernel::apply`].
    ///
    /// # Errors
    ///
    /// Those of [`BagKernel::apply`], with nothing written, and [`KernelError::Unsupported`]
    /// for `u32::MAX` lookups or more.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{
    ///     BagKernel, BagKernelDesc, GradRows, GroupBuffers, Lookup, RowUpdate, RowsMut,
    /// };
    ///
    /// // Rows 10 and 11 of a table with dim 2; bag 0 used row 10 twice, bag 1 row 11 once.
    /// let mut block = [1.0f32, 1.0, 2.0, 2.0];
    /// let grad = [0.5f32, 1.0, -1.0, 0.0]; // two bags
    /// let lookups = [
    ///     Lookup { row: 10, bag: 0, scale: 1.0 },
    ///     Lookup { row: 11, bag: 1, scale: 1.0 },
    ///     Lookup { row: 10, bag: 0, scale: 1.0 },
    /// ];
    /// let k = BagKernel::new(BagKernelDesc::new(2))?;
    /// let mut buffers = GroupBuffers::default();
    /// k.apply_grouped(
    ///     RowsMut::F32(&mut block),
    ///     10,
    ///     &lookups,
    ///     GradRows { data: &grad, stride: 2 },
    ///     RowUpdate::Sgd { lr: 0.5 },
    ///     &mut buffers,
    /// )?;
    /// assert_eq!(block, [0.5, 0.0, 2.5, 2.0]);
    ///
    /// // A row outside the block: an error naming the lookup, and nothing written.
    /// let bad = [lookups[0], Lookup { row: 12, bag: 0, scale: 1.0 }];
    /// let err = k
    ///     .apply_grouped(
    ///         RowsMut::F32(&mut block),
    ///         10,
    ///         &bad,
    ///         GradRows { data: &grad, stride: 2 },
    ///         RowUpdate::Sgd { lr: 0.5 },
    ///         &mut buffers,
    ///     )
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "lookup 1: row 12 outside the block of rows [10, 12)");
    /// assert_eq!(block, [0.5, 0.0, 2.5, 2.0]);
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn apply_grouped(
        &self,
        rows: RowsMut<'_>,
        first_row: usize,
        lookups: &[Lookup],
        grad: GradRows<'_>,
        update: RowUpdate<'_>,
        buffers: &mut GroupBuffers,
    ) -> Result<(), BagError> {
        let nrows = self.check_block(&rows, grad, &update)?;
        if lookups.len() >= u32::MAX as usize {
            return Err(KernelError::Unsupported {
                what: "u32::MAX or more lookups in one grouped update",
            }
            .into());
        }
        let dim = self.desc.dim;
        // The largest bag whose gradient row fits: bag * stride + dim <= len (stride >= dim
        // >= 1, checked).
        let max_bag = grad
            .data
            .len()
            .checked_sub(dim)
            .map(|room| room / grad.stride);
        match buffers.chain(lookups, first_row, nrows, max_bag) {
            Some(chains) => {
                let chains = Orders::Chains(chains);
                // SAFETY: `check_block` passed, and the grouping pass checked every lookup's
                // row against the block and its bag against `max_bag`, as `check_lookups`
                // does.
                unsafe { self.run_order(rows, first_row, lookups, chains, grad, update) };
                Ok(())
            }
            // Some lookup is bad: the full check names the first one.
            None => {
                check_lookups(dim, first_row, nrows, lookups, grad)?;
                unreachable!("the grouping pass and the full check agree on bad lookups")
            }
        }
    }

    /// The checks of a fused update that do not depend on the lookups; returns the rows in
    /// the block.
    fn check_block(
        &self,
        rows: &RowsMut<'_>,
        grad: GradRows<'_>,
        update: &RowUpdate<'_>,
    ) -> Result<usize, BagError> {
        let dim = self.desc.dim;
        let nrows = match rows {
            RowsMut::F32(w) => w.len() / dim,
            RowsMut::Split { hi, lo } => {
                if hi.len() != lo.len() {
                    return Err(KernelError::LengthMismatch {
                        what: "hi and lo",
                        left: hi.len(),
                        right: lo.len(),
                    }
                    .into());
                }
                hi.len() / dim
            }
        };
        if grad.stride < dim {
            return Err(KernelError::LeadingDimension {
                name: "grad stride",
                value: grad.stride,
                min_name: "dim",
                min: dim,
            }
            .into());
        }
        if let RowUpdate::RowwiseAdagrad { state, .. } = update
            && state.len() < nrows
        {
            return Err(KernelError::SliceTooShort {
                operand: "Adagrad state",
                batch_index: None,
                needed: nrows,
                len: state.len(),
            }
            .into());
        }
        Ok(nrows)
    }

    /// Apply the lookups in `order` (see [`BagKernel::apply`]).
    ///
    /// # Safety
    ///
    /// The block passed [`BagKernel::check_block`] and every lookup [`check_lookups`] (or the
    /// grouping pass of [`GroupBuffers`], which checks the same), with these `rows`,
    /// `first_row`, `grad` and `update`. (`order` needs no promise: it is indexed with
    /// bounds checks.)
    unsafe fn run_order(
        &self,
        rows: RowsMut<'_>,
        first_row: usize,
        lookups: &[Lookup],
        order: Orders<'_>,
        grad: GradRows<'_>,
        update: RowUpdate<'_>,
    ) {
        let dim = self.desc.dim;
        let units = match order {
            Orders::Runs(o) => o.units(),
            Orders::Chains(o) => o.units(),
        };
        if lookups.is_empty() || units == 0 {
            return;
        }
        let mut scratch = vec![0f32; dim.next_multiple_of(16)];
        let job = ApplyJob {
            dim,
            first_row,
            lookups,
            order,
            grad: grad.data.as_ptr(),
            grad_stride: grad.stride,
            scratch: scratch.as_mut_ptr(),
            prefetch: self.desc.prefetch_distance,
        };
        // SAFETY: the table is of a backend this CPU runs; every lookup's row is inside the
        // block and its bag's gradient row inside `grad.data`, `hi`/`lo` have equal lengths
        // and the Adagrad state covers every row of the block (the caller's checks); `order`
        // only names lookups (it is indexed with bounds checks); the scratch holds `dim`
        // rounded up to whole vectors.
        unsafe { (self.table.apply)(&job, rows, update) };
    }
}

/// Every lookup's row inside the block `first_row..first_row + rows` and its bag's gradient
/// row inside `grad.data`; the first that is not is the error.
fn check_lookups(
    dim: usize,
    first_row: usize,
    nrows: usize,
    lookups: &[Lookup],
    grad: GradRows<'_>,
) -> Result<(), BagError> {
    for (position, l) in lookups.iter().enumerate() {
        let r = l.row as usize;
        if r < first_row || r - first_row >= nrows {
            return Err(BagError::RowOutsideBlock {
                position,
                row: l.row,
                first_row,
                rows: nrows,
            });
        }
        // bag * stride + dim <= len, without overflow.
        let fits = (l.bag as usize)
            .checked_mul(grad.stride)
            .and_then(|x| x.checked_add(dim))
            .is_some_and(|x| x <= grad.data.len());
        if !fits {
            return Err(KernelError::SliceTooShort {
                operand: "grad",
                batch_index: Some(position),
                needed: (l.bag as usize)
                    .saturating_mul(grad.stride)
                    .saturating_add(dim),
                len: grad.data.len(),
            }
            .into());
        }
    }
    Ok(())
}

/// Bags with their index type erased, for the backends.
fn erase<'a, I: BagIndex>(b: &Bags<'a, I>) -> AnyBags<'a> {
    /// The same bags with the index type `J`.
    ///
    /// # Safety
    ///
    /// `J` is the same type as `I`.
    unsafe fn retype<'a, I, J>(b: &Bags<'a, I>) -> Bags<'a, J> {
        // SAFETY: `J` is `I` (caller): layout, length and validity carry over.
        let cast = |s: &'a [I]| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) };
        Bags {
            indices: cast(b.indices),
            offsets: cast(b.offsets),
            end: b.end,
            weights: b.weights,
        }
    }
    // SAFETY: `BagIndex` is sealed to i32 and i64, whose sizes tell them apart.
    unsafe {
        if size_of::<I>() == 4 {
            AnyBags::I32(retype(b))
        } else {
            AnyBags::I64(retype(b))
        }
    }
}
