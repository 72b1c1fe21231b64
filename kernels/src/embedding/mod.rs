//! Embedding-bag row kernels: pooling (gather-reduce) and fused sparse row updates, plus
//! zeroed huge-page buffers for the tables.
//!
//! A table is `rows x dim`, row-major, `f32` or `bf16` (for bf16 Split-SGD tables the `bf16`
//! half is what the forward reads). A batch of bags is PyTorch's `EmbeddingBag` input: a flat
//! list of indices and, per bag, the offset where its indices start ([`Bags`]).
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
//! use dlrm_microkernels::embedding::{BagKernel, BagKernelDesc, Bags, Pooling};
//!
//! let dim = 3;
//! let table: Vec<f32> = (0..4 * dim).map(|x| x as f32).collect(); // 4 rows
//! let indices = [0i64, 2, 3, 1];
//! let offsets = [0i64, 1, 1]; // bags [0], [], [2, 3, 1]
//! let bags = Bags { indices: &indices, offsets: &offsets, end: indices.len(), weights: None };
//! let kernel = BagKernel::new(BagKernelDesc::new(dim))?;
//! let mut out = vec![f32::NAN; 3 * dim];
//! kernel.pool(&table, &bags, Pooling::Sum, &mut out, dim)?;
//! assert_eq!(out, [0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 18.0, 21.0, 24.0]);
//! # Ok::<(), dlrm_microkernels::embedding::BagError>(())
//! ```

mod alloc;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod group;

pub use alloc::{HUGE_PAGE, HugePageBuf, Plain};
pub use group::GroupBuffers;

use std::fmt;

use half::bf16;

use crate::{DType, Element, Isa, KernelError};

mod sealed {
    pub trait Sealed {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
}

/// An index type for bags: `i32` or `i64`, as PyTorch allows. Sealed.
///
/// ```
/// use dlrm_microkernels::embedding::BagIndex;
/// assert_eq!(BagIndex::to_i64(-3i32), -3);
/// assert_eq!(<i64 as BagIndex>::NAME, "i64");
/// ```
pub trait BagIndex: sealed::Sealed + Copy + Send + Sync + fmt::Debug + 'static {
    /// `"i32"` or `"i64"`.
    const NAME: &'static str;
    /// The value as `i64` (exact).
    fn to_i64(self) -> i64;
}

impl BagIndex for i32 {
    const NAME: &'static str = "i32";
    #[inline(always)]
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
}

impl BagIndex for i64 {
    const NAME: &'static str = "i64";
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self
    }
}

/// How a bag's rows are reduced.
///
/// ```
/// use dlrm_microkernels::embedding::Pooling;
/// assert_eq!(Pooling::default(), Pooling::Sum);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pooling {
    /// Sum of the (weighted) rows.
    #[default]
    Sum,
    /// Sum divided by the number of lookups in the bag (empty bags give zeros).
    Mean,
}

/// A run of consecutive bags: bag `i` covers positions `offsets[i]..offsets[i + 1]` of
/// `indices` (the last one `offsets[last]..end`).
///
/// `offsets` are absolute positions in `indices`, so a thread can be handed a sub-slice of a
/// batch's offsets with the full index list. Requirements (checked by every kernel): offsets
/// are non-negative and non-decreasing, at most `end`; `end <= indices.len()`; every index
/// used (positions `offsets[0]..end`) lies in `[0, rows)`; `weights`, when given, has one
/// weight per index.
///
/// ```
/// use dlrm_microkernels::embedding::Bags;
/// let indices = [4i32, 5, 6];
/// let offsets = [0i32, 2];
/// let bags = Bags { indices: &indices, offsets: &offsets, end: 3, weights: None };
/// assert_eq!(bags.len(), 2);
/// assert_eq!(bags.bag(1), Some(2..3));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Bags<'a, I> {
    /// Row numbers, all bags back to back.
    pub indices: &'a [I],
    /// Start position of each bag in `indices`.
    pub offsets: &'a [I],
    /// Where the last bag ends.
    pub end: usize,
    /// Optional per-sample weights, one per index (same positions as `indices`).
    pub weights: Option<&'a [f32]>,
}

impl<I: BagIndex> Bags<'_, I> {
    /// Number of bags (`offsets.len()`).
    ///
    /// ```
    /// use dlrm_microkernels::embedding::Bags;
    /// let b = Bags::<i64> { indices: &[], offsets: &[0, 0], end: 0, weights: None };
    /// assert_eq!(b.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether there are no bags.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::Bags;
    /// assert!(Bags::<i32> { indices: &[], offsets: &[], end: 0, weights: None }.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The positions of bag `i`, as given (not validated); `None` past the last bag or for an
    /// offset that is negative.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::Bags;
    /// let b = Bags { indices: &[1i32, 2], offsets: &[0i32, 1], end: 2, weights: None };
    /// assert_eq!(b.bag(0), Some(0..1));
    /// assert_eq!(b.bag(2), None);
    /// ```
    pub fn bag(&self, i: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(self.offsets.get(i)?.to_i64()).ok()?;
        let end = match self.offsets.get(i + 1) {
            Some(o) => usize::try_from(o.to_i64()).ok()?,
            None => self.end,
        };
        Some(start..end)
    }
}

/// One lookup for the fused update: the gradient of bag `bag`, times `scale`, goes to row
/// `row`. `scale` is the per-sample weight, or `1 / len` for mean pooling, or 1.
///
/// ```
/// use dlrm_microkernels::embedding::Lookup;
/// let l = Lookup { row: 7, bag: 0, scale: 1.0 };
/// assert_eq!(size_of::<Lookup>(), 12);
/// assert_eq!(l.row, 7);
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lookup {
    /// Table row (absolute: the first row of a [`RowsMut`] block is `first_row`).
    pub row: u32,
    /// Bag whose gradient row is read.
    pub bag: u32,
    /// Factor on the bag's gradient.
    pub scale: f32,
}

/// The order in which a fused update visits rows and their lookups: units are row updates.
pub(crate) trait Order: Copy {
    /// Number of units (for runs, an upper bound: the lookups).
    fn units(self) -> usize;
    /// The first lookup of unit `u`.
    fn first(self, u: usize) -> usize;
    /// The lookup after `j` in the same unit, if any.
    fn after(self, lookups: &[Lookup], j: usize) -> Option<usize>;
    /// The unit after `u`, whose last lookup was `last`.
    fn advance(self, u: usize, last: usize) -> usize;
}

/// Runs of consecutive lookups of one row ([`BagKernel::apply`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Runs {
    /// Number of lookups.
    n: usize,
}

impl Order for Runs {
    #[inline(always)]
    fn units(self) -> usize {
        self.n
    }
    #[inline(always)]
    fn first(self, u: usize) -> usize {
        u
    }
    #[inline(always)]
    fn after(self, lookups: &[Lookup], j: usize) -> Option<usize> {
        (j + 1 < lookups.len() && lookups[j + 1].row == lookups[j].row).then_some(j + 1)
    }
    #[inline(always)]
    fn advance(self, _: usize, last: usize) -> usize {
        last + 1
    }
}

/// Lookups chained by row ([`BagKernel::apply_grouped`]): the first lookup of each row in
/// visiting order, and for each lookup the next of its row (a later one) or [`Chains::END`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chains<'a> {
    pub(crate) heads: &'a [u32],
    pub(crate) next: &'a [u32],
}

impl Chains<'_> {
    /// The end of a chain.
    pub(crate) const END: u32 = u32::MAX;
}

impl Order for Chains<'_> {
    #[inline(always)]
    fn units(self) -> usize {
        self.heads.len()
    }
    #[inline(always)]
    fn first(self, u: usize) -> usize {
        self.heads[u] as usize
    }
    #[inline(always)]
    fn after(self, _: &[Lookup], j: usize) -> Option<usize> {
        let n = self.next[j];
        (n != Chains::END).then_some(n as usize)
    }
    #[inline(always)]
    fn advance(self, u: usize, _: usize) -> usize {
        u + 1
    }
}

/// The rows a fused update writes: f32 weights, or bf16 Split-SGD halves.
///
/// ```
/// use dlrm_microkernels::embedding::RowsMut;
/// let mut w = [0.0f32; 8];
/// let rows = RowsMut::F32(&mut w);
/// assert!(matches!(rows, RowsMut::F32(_)));
/// ```
#[derive(Debug)]
pub enum RowsMut<'a> {
    /// fp32 rows, `rows * dim` values.
    F32(&'a mut [f32]),
    /// Split-SGD rows: the master weight of element `i` is `f32::from_bits(hi[i] << 16 | lo[i])`.
    Split {
        /// Upper halves (the bf16 weights the forward reads).
        hi: &'a mut [bf16],
        /// Lower halves.
        lo: &'a mut [u16],
    },
}

/// The gradient of the pooled output: bag `b`'s gradient is `data[b * stride..][..dim]`.
///
/// ```
/// use dlrm_microkernels::embedding::GradRows;
/// let g = [1.0f32; 6];
/// let rows = GradRows { data: &g, stride: 3 };
/// assert_eq!(rows.stride, 3);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GradRows<'a> {
    /// Gradient values.
    pub data: &'a [f32],
    /// Distance between the gradients of consecutive bags (at least `dim`).
    pub stride: usize,
}

/// The optimizer step applied to each updated row.
///
/// ```
/// use dlrm_microkernels::embedding::RowUpdate;
/// let mut h = vec![0.0f32; 4];
/// let u = RowUpdate::RowwiseAdagrad { lr: 0.1, eps: 1e-10, state: &mut h };
/// assert!(matches!(u, RowUpdate::RowwiseAdagrad { .. }));
/// ```
#[derive(Debug)]
pub enum RowUpdate<'a> {
    /// `row -= lr * g`.
    Sgd {
        /// Learning rate.
        lr: f32,
    },
    /// `h += sum(g^2) / dim; row -= lr * (g / (sqrt(h) + eps))`.
    RowwiseAdagrad {
        /// Learning rate.
        lr: f32,
        /// Added to `sqrt(h)`.
        eps: f32,
        /// One accumulator per row of the block (index = row - first_row).
        state: &'a mut [f32],
    },
}

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
    /// [`Self::PREFETCH_BYTES`], between 4 and 64 (a random gather on Zen 4 runs fastest with
    /// about 8 KiB of rows prefetched ahead: 32 lookups of fp32 x 64, 64 of bf16 x 64).
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
    isa: Isa,
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
            isa: isa.require()?,
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
        self.isa
    }

    #[cfg(target_arch = "x86_64")]
    fn simd(&self) -> bool {
        self.isa >= Isa::Avx512
    }

    /// Pool each bag of `bags` into `out[i * out_stride..][..dim]` (see the module docs for
    /// the formula). `table` holds `table.len() / dim` rows. Elements of `out` outside those
    /// ranges are not touched.
    ///
    /// `T` is `f32` or `bf16` (rows widened to f32), the output `O` is `f32` or `bf16`
    /// (rounded to nearest even once, at the end).
    ///
    /// # Errors
    ///
    /// Nothing is written when any of these is returned:
    /// [`BagError::Offsets`] (negative, decreasing, or past `end`),
    /// [`BagError::IndexOutOfRange`] (naming bag and position),
    /// [`KernelError::SliceTooShort`] for `end > indices.len()` or `out` too short,
    /// [`KernelError::LengthMismatch`] when weights and indices differ in length,
    /// [`KernelError::LeadingDimension`] for `out_stride < dim`, and
    /// [`KernelError::Overflow`] if the output extent overflows.
    ///
    /// ```
    /// use dlrm_microkernels::embedding::{BagKernel, BagKernelDesc, Bags, Pooling};
    /// use half::bf16;
    ///
    /// let table: Vec<bf16> = [1.0f32, 2.0, 3.0, 4.0].map(bf16::from_f32).to_vec(); // 2 x 2
    /// let (indices, offsets, weights) = ([0i32, 1, 1], [0i32], [1.0f32, 0.5, 0.5]);
    /// let bags = Bags { indices: &indices, offsets: &offsets, end: 3, weights: Some(&weights) };
    /// let mut out = [0.0f32; 2];
    /// BagKernel::new(BagKernelDesc::new(2))?.pool(&table, &bags, Pooling::Sum, &mut out, 2)?;
    /// assert_eq!(out, [4.0, 6.0]);
    ///
    /// let mut mean = [0.0f32; 2];
    /// let first_two = Bags { end: 2, weights: None, ..bags }; // the bag of rows 0 and 1
    /// BagKernel::new(BagKernelDesc::new(2))?.pool(&table, &first_two, Pooling::Mean, &mut mean, 2)?;
    /// assert_eq!(mean, [2.0, 3.0]);
    /// # Ok::<(), dlrm_microkernels::embedding::BagError>(())
    /// ```
    pub fn pool<T: Element, I: BagIndex, O: Element>(
        &self,
        table: &[T],
        bags: &Bags<'_, I>,
        pooling: Pooling,
        out: &mut [O],
        out_stride: usize,
    ) -> Result<(), BagError> {
        let dim = self.desc.dim;
        check_offsets(bags)?;
        let nb = bags.offsets.len();
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
        let rows = table.len() / dim;
        check_indices(bags, rows)?;
        let mean = pooling == Pooling::Mean;
        #[cfg(target_arch = "x86_64")]
        if self.simd() {
            let pf = self.desc.prefetch_distance;
            // SAFETY: the ISA was checked available when the kernel was built; `check_offsets`
            // and `check_indices` proved every bag lies inside `indices` (and `weights`) and
            // every index used is a row of `table`; the check above proved every bag's output
            // row lies inside `out`. The casts are identities: `Element` is sealed to f32 and
            // bf16, and each cast is taken only when the `DTYPE` says the types are equal.
            unsafe {
                match (T::DTYPE, O::DTYPE) {
                    (DType::F32, DType::F32) => avx512::pool::<f32, I, f32>(
                        cast(table),
                        dim,
                        bags,
                        mean,
                        pf,
                        cast_mut(out),
                        out_stride,
                    ),
                    (DType::F32, DType::Bf16) => avx512::pool::<f32, I, bf16>(
                        cast(table),
                        dim,
                        bags,
                        mean,
                        pf,
                        cast_mut(out),
                        out_stride,
                    ),
                    (DType::Bf16, DType::F32) => avx512::pool::<bf16, I, f32>(
                        cast(table),
                        dim,
                        bags,
                        mean,
                        pf,
                        cast_mut(out),
                        out_stride,
                    ),
                    (DType::Bf16, DType::Bf16) => avx512::pool::<bf16, I, bf16>(
                        cast(table),
                        dim,
                        bags,
                        mean,
                        pf,
                        cast_mut(out),
                        out_stride,
                    ),
                }
            }
            return Ok(());
        }
        pool_portable(table, dim, bags, mean, out, out_stride);
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
        let order = Runs { n: lookups.len() };
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
    unsafe fn run_order<O: Order>(
        &self,
        rows: RowsMut<'_>,
        first_row: usize,
        lookups: &[Lookup],
        order: O,
        grad: GradRows<'_>,
        update: RowUpdate<'_>,
    ) {
        let dim = self.desc.dim;
        if lookups.is_empty() || order.units() == 0 {
            return;
        }
        let mut scratch = vec![0f32; dim.next_multiple_of(16)];
        #[cfg(target_arch = "x86_64")]
        if self.simd() {
            let job = avx512::ApplyJob {
                dim,
                first_row,
                lookups,
                order,
                grad: grad.data.as_ptr(),
                grad_stride: grad.stride,
                scratch: scratch.as_mut_ptr(),
                prefetch: self.desc.prefetch_distance,
            };
            // SAFETY: the ISA was checked available; every lookup's row is inside the block
            // and its bag's gradient row inside `grad.data`, `hi`/`lo` have equal lengths and
            // the Adagrad state covers every row of the block (the caller's checks); `order`
            // only names lookups (it is indexed with bounds checks); the scratch holds `dim`
            // rounded up to whole vectors.
            unsafe { avx512::apply(&job, rows, update) };
            return;
        }
        apply_portable(
            dim,
            first_row,
            lookups,
            order,
            grad,
            rows,
            update,
            &mut scratch,
        );
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

/// Reinterpret a slice of one `Element` type as another of the same `DType`.
///
/// # Safety
///
/// `A` and `B` must be the same type (checked by the caller through `Element::DTYPE`).
#[cfg(target_arch = "x86_64")]
unsafe fn cast<A, B>(s: &[A]) -> &[B] {
    // SAFETY: A and B are the same type (caller), so layout, length and validity carry over.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) }
}

/// Mutable version of [`cast`].
///
/// # Safety
///
/// As [`cast`].
#[cfg(target_arch = "x86_64")]
unsafe fn cast_mut<A, B>(s: &mut [A]) -> &mut [B] {
    // SAFETY: as in `cast`; the borrow is carried over, so access stays exclusive.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) }
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
    // Negative indices become huge as u64: one unsigned maximum finds every bad index (and
    // vectorises).
    let max = used.iter().fold(0u64, |m, &i| m.max(i.to_i64() as u64));
    if used.is_empty() || max < rows as u64 {
        return Ok(());
    }
    let k = used
        .iter()
        .position(|&i| i.to_i64() as u64 >= rows as u64)
        .expect("the maximum is out of range, so some index is");
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

/// Portable pooling: the same arithmetic, in the same order, as the SIMD body.
fn pool_portable<T: Element, I: BagIndex, O: Element>(
    table: &[T],
    dim: usize,
    bags: &Bags<'_, I>,
    mean: bool,
    out: &mut [O],
    stride: usize,
) {
    let mut acc = vec![0f32; dim];
    for b in 0..bags.offsets.len() {
        let range = bags.bag(b).expect("offsets were validated");
        acc.fill(0.0);
        for j in range.clone() {
            let r = bags.indices[j].to_i64() as usize;
            let row = &table[r * dim..][..dim];
            match bags.weights {
                Some(w) => {
                    let w = w[j];
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a += w * x.to_f32();
                    }
                }
                None => {
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a += x.to_f32();
                    }
                }
            }
        }
        if mean && !range.is_empty() {
            let scale = 1.0 / range.len() as f32;
            for a in acc.iter_mut() {
                *a *= scale;
            }
        }
        for (o, a) in out[b * stride..][..dim].iter_mut().zip(&acc) {
            *o = O::from_f32(*a);
        }
    }
}

/// `sum(x^2)` in the order every ISA uses: 16 lane sums over the vectors in turn, then
/// halves added pairwise (lane j + lane j+8, then j + j+4, j + j+2, j + j+1).
pub(crate) fn sum_squares_portable(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for chunk in x.chunks(16) {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += *v * *v;
        }
    }
    crate::portable::reduce_halves(lanes)
}

/// Portable fused update: the same arithmetic, in the same order, as the SIMD body.
#[allow(clippy::too_many_arguments)]
fn apply_portable<O: Order>(
    dim: usize,
    first_row: usize,
    lookups: &[Lookup],
    order: O,
    grad: GradRows<'_>,
    mut rows: RowsMut<'_>,
    mut update: RowUpdate<'_>,
    scratch: &mut [f32],
) {
    let acc = &mut scratch[..dim];
    let mut u = 0;
    while u < order.units() {
        let i = order.first(u);
        let row = lookups[i].row;
        acc.fill(0.0);
        let mut j = i;
        loop {
            let l = lookups[j];
            let g = &grad.data[l.bag as usize * grad.stride..][..dim];
            for (a, g) in acc.iter_mut().zip(g) {
                *a += l.scale * *g;
            }
            match order.after(lookups, j) {
                Some(next) => j = next,
                None => break,
            }
        }
        let r = row as usize - first_row;
        let (lr, denom) = match &mut update {
            RowUpdate::Sgd { lr } => (*lr, None),
            RowUpdate::RowwiseAdagrad { lr, eps, state } => {
                let h = state[r] + sum_squares_portable(acc) / dim as f32;
                state[r] = h;
                (*lr, Some(h.sqrt() + *eps))
            }
        };
        let step = |g: f32| match denom {
            None => lr * g,
            Some(d) => lr * (g / d),
        };
        match &mut rows {
            RowsMut::F32(w) => {
                for (w, g) in w[r * dim..][..dim].iter_mut().zip(acc.iter()) {
                    *w -= step(*g);
                }
            }
            RowsMut::Split { hi, lo } => {
                let (hi, lo) = (&mut hi[r * dim..][..dim], &mut lo[r * dim..][..dim]);
                for ((h, l), g) in hi.iter_mut().zip(lo.iter_mut()).zip(acc.iter()) {
                    let w = f32::from_bits((u32::from(h.to_bits()) << 16) | u32::from(*l));
                    let bits = (w - step(*g)).to_bits();
                    *h = bf16::from_bits((bits >> 16) as u16);
                    *l = bits as u16;
                }
            }
        }
        u = order.advance(u, j);
    }
}
