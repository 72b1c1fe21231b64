//! The plain data types of embedding bags, shared by the kernel API and the backends.

use std::fmt;

use half::bf16;

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
/// batch's offsets with the full index list. Requirements (checked once, by
/// [`CheckedBags::new`](super::CheckedBags::new), which the kernels take): offsets are
/// non-negative and non-decreasing, at most `end`; `end <= indices.len()`; every index used
/// (positions `offsets[0]..end`) lies in `[0, rows)`; `weights`, when given, has one weight
/// per index.
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
