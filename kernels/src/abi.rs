//! What the kernel API hands to a backend once it has validated a call: sizes, raw pointers
//! and type-erased views. The API modules (`brgemm`, `embedding`, ...) build these; the
//! backends (`backend/*`) consume them; neither imports the other's internals.
//!
//! Every value here describes accesses that the API has already checked; a backend entry may
//! rely on that (its `# Safety` contract says so) and on the CPU having the backend's
//! features.

use half::bf16;

use crate::activation::Activation;
use crate::dtype::{SliceMut, SliceRef};
use crate::embedding::types::{Bags, Lookup, RowUpdate, RowsMut};

/// A register tile: `rows` rows of C by `cols` vectors of columns, kept in registers while a
/// BRGEMM reduces over k and the batch.
///
/// ```
/// use dlrm_microkernels::RegisterTile;
/// let t = RegisterTile { rows: 6, cols: 4 };
/// assert_eq!(t.accumulators(), 24);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegisterTile {
    /// Rows of C per tile (broadcasts of A per k step).
    pub rows: usize,
    /// Vectors of columns per tile (loads of B per k step).
    pub cols: usize,
}

impl RegisterTile {
    /// Accumulator registers the tile holds.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::RegisterTile { rows: 8, cols: 3 }.accumulators(), 24);
    /// ```
    pub fn accumulators(&self) -> usize {
        self.rows * self.cols
    }
}

/// The sizes a BRGEMM body runs with (after validation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Elements between A rows (`lda`, or 1 when A is transposed).
    pub a_row: usize,
    /// Elements between consecutive k of one A row (1, or `lda` when A is transposed).
    pub a_k: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub count: usize,
    pub accumulate: bool,
    /// Elements one A_i, one B_i and C span (every access lies inside them).
    pub a_extent: usize,
    pub b_extent: usize,
    pub c_extent: usize,
    /// The largest register tile to use (SIMD backends).
    pub tile: RegisterTile,
    /// Run the batch as the outer loop, C carrying the sum between pairs (SIMD backends,
    /// f32 C; see `backend::x86::tile::brgemm`).
    pub pair_outer: bool,
    /// The epilogue, as raw pointers.
    pub epi: EpiPtrs,
}

/// An epilogue for the backends: null pointers for absent steps, `active` false when no step
/// changes a value (the bodies then store the reduction as it is). See
/// [`crate::Epilogue`] for the steps and their order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EpiPtrs {
    pub active: bool,
    /// `n` values, or null.
    pub bias: *const f32,
    pub relu: bool,
    /// Laid out as C (`c_extent` elements of C's type), or null.
    pub mask: *const u8,
    pub valid_rows: usize,
    pub valid_cols: usize,
}

/// A validated batch of (A_i, B_i) as raw pointers.
pub(crate) enum BatchPtrs<'a, T> {
    Strided {
        a: *const T,
        b: *const T,
        stride_a: usize,
        stride_b: usize,
    },
    Offsets {
        a: *const T,
        b: *const T,
        a_offsets: &'a [usize],
        b_offsets: &'a [usize],
    },
    Slices {
        a: &'a [&'a [T]],
        b: &'a [&'a [T]],
    },
}

impl<T> Clone for BatchPtrs<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for BatchPtrs<'_, T> {}

impl<T> BatchPtrs<'_, T> {
    /// Start of A_i and B_i.
    ///
    /// # Safety
    ///
    /// `i` must be below the batch count that the API validated.
    #[inline(always)]
    pub(crate) unsafe fn get(&self, i: usize) -> (*const T, *const T) {
        // SAFETY: i < count and every pair's extent was checked against its slice, so the
        // offsets are in bounds of the allocations the pointers come from.
        unsafe {
            match *self {
                BatchPtrs::Strided {
                    a,
                    b,
                    stride_a,
                    stride_b,
                } => (a.add(i * stride_a), b.add(i * stride_b)),
                BatchPtrs::Offsets {
                    a,
                    b,
                    a_offsets,
                    b_offsets,
                } => (
                    a.add(*a_offsets.get_unchecked(i)),
                    b.add(*b_offsets.get_unchecked(i)),
                ),
                BatchPtrs::Slices { a, b } => {
                    (a.get_unchecked(i).as_ptr(), b.get_unchecked(i).as_ptr())
                }
            }
        }
    }
}

/// A BRGEMM body: `C (=|+=) sum_i A_i B_i` with the epilogue, for one (input, output) type
/// pair.
///
/// # Safety (of calling one)
///
/// The CPU has the backend's features; `p` and the batch describe accesses the API checked
/// (every A_i, B_i inside its slice, C `p.c_extent` elements, the epilogue's bias and mask
/// as [`EpiPtrs`] says).
pub(crate) type BrgemmFn<I, O> = unsafe fn(&Params, &BatchPtrs<'_, I>, *mut O);

/// The bf16 BRGEMM bodies of one way of multiplying bf16: to f32 and to bf16 output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bf16Brgemm {
    pub to_f32: BrgemmFn<bf16, f32>,
    pub to_bf16: BrgemmFn<bf16, bf16>,
}

/// How a block's lookups are visited by the fused update.
pub(crate) trait Order: Copy {
    /// Number of units (rows to update).
    fn units(self) -> usize;
    /// The first lookup of unit `u`.
    fn first(self, u: usize) -> usize;
    /// The lookup after `j` in the same unit, if any.
    fn after(self, lookups: &[Lookup], j: usize) -> Option<usize>;
    /// The unit after `u`, whose last lookup was `last`.
    fn advance(self, u: usize, last: usize) -> usize;
}

/// Runs of consecutive lookups of one row ([`crate::embedding::BagKernel::apply`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Runs {
    pub n: usize,
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

/// Lookups linked row by row ([`crate::embedding::GroupBuffers`]): `heads[u]` is the first
/// lookup of unit `u`, `next[j]` the lookup after `j` of the same row (or [`Chains::END`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chains<'a> {
    pub(crate) heads: &'a [u32],
    pub(crate) next: &'a [u32],
}

impl Chains<'_> {
    /// No next lookup.
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

/// Either visiting order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Orders<'a> {
    Runs(Runs),
    Chains(Chains<'a>),
}

/// One block's fused coalesce-and-update, validated.
pub(crate) struct ApplyJob<'a> {
    pub dim: usize,
    pub first_row: usize,
    pub lookups: &'a [Lookup],
    pub order: Orders<'a>,
    /// Gradient rows, `grad_stride` apart; every lookup's bag row lies inside.
    pub grad: *const f32,
    pub grad_stride: usize,
    /// `dim` rounded up to whole vectors of 16.
    pub scratch: *mut f32,
    pub prefetch: usize,
}

/// The update of an [`ApplyJob`].
///
/// # Safety (of calling one)
///
/// The CPU has the backend's features; `BagKernel` checked every lookup's row against the
/// block and its bag's gradient row against the gradient, `hi` and `lo` have equal lengths,
/// and the Adagrad state covers the block's rows.
pub(crate) type ApplyFn = unsafe fn(&ApplyJob<'_>, RowsMut<'_>, RowUpdate<'_>);

/// Bags with their index type erased.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AnyBags<'a> {
    I32(Bags<'a, i32>),
    I64(Bags<'a, i64>),
}

/// One pooling call, validated: every bag inside the indices, every index a row of
/// `table`, every output row inside `out`.
pub(crate) struct PoolJob<'a> {
    pub table: SliceRef<'a>,
    pub dim: usize,
    pub bags: AnyBags<'a>,
    pub mean: bool,
    pub prefetch: usize,
    pub out: SliceMut<'a>,
    pub out_stride: usize,
}

/// A pooling body.
///
/// # Safety (of calling one)
///
/// The CPU has the backend's features, and the job was validated as [`PoolJob`] says.
pub(crate) type PoolFn = unsafe fn(PoolJob<'_>);

/// The element-wise pieces of the blocked MLP (see [`crate::eltwise`]), each a safe body
/// run under the backend's features.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EltwiseFns {
    /// Bias and activation on `rows x cols` f32, zeroing rows past `valid_rows` and
    /// columns past `valid_cols`.
    pub bias_act: unsafe fn(&mut [f32], usize, usize, usize, &[f32], Activation),
    /// `dy *= act'(y)` (lengths equal).
    pub act_backward: unsafe fn(SliceMut<'_>, SliceRef<'_>, Activation),
    /// Column sums of a `rows x cols` block into `sums[..cols]`.
    pub column_sums: unsafe fn(SliceRef<'_>, usize, usize, &mut [f32]),
    /// Column sums of a VNNI-2 packed block.
    pub column_sums_vnni: unsafe fn(SliceRef<'_>, usize, usize, &mut [f32]),
    /// `acc[r] += block[r] . w` for `rows x cols`.
    pub row_dots: unsafe fn(SliceRef<'_>, usize, usize, SliceRef<'_>, &mut [f32]),
}

/// A peak loop: the number of floating-point operations one iteration does, and the loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeakLoop {
    pub flops_per_iteration: u64,
    /// Runs the loop for the given number of iterations; returns a value to keep alive.
    pub run: unsafe fn(u64) -> f32,
}
