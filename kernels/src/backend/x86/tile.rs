//! The one register-blocked BRGEMM body shared by every x86 SIMD backend.
//!
//! `C[m x n] (=|+=) sum_i A_i[m x k] * B_i[k x n]` is cut into tiles of `MR` rows by `NR`
//! vector columns (`LANES * NR` floats), at most the size of [`Params::tile`]. A tile's
//! accumulators stay in registers across the whole batch; B is loaded once per k step and
//! reused by every row, A is broadcast. Columns past `n` are masked off in the last vector of
//! a tile, and the last rows get a tile with a smaller `MR`, so every tile runs the same
//! full-speed loop. Each element of C sums its products in (pair, k) order whatever the tile
//! shape, so the choice of tile never changes a result.
//!
//! What a "k step" is differs by data type and backend; the [`Dot`] trait says it (fp32 FMA,
//! `vdpbf16ps`, or bf16 widened to fp32), and [`OutElem`] says how C is loaded and stored
//! (fp32, or bf16 rounded to nearest even). Backends implement `Dot` with their intrinsics
//! and call [`brgemm`] from thin `#[target_feature]` shims.

use super::vector::{OutElem, Vector};
use crate::abi::{BatchPtrs, Params};

/// One k step of a tile: how B and A are loaded and how they are multiplied into the fp32
/// accumulators.
pub(crate) trait Dot<V: Vector> {
    /// The element type of A and B (`f32` or `half::bf16`).
    type Elem: Copy;
    /// A loaded B vector (one register, or a pair when bf16 is widened).
    type B: Copy;
    /// A broadcast A value.
    type A: Copy;
    /// Elements of k consumed per step (1 for fp32, 2 for VNNI-2 bf16).
    const K_STEP: usize;

    /// Load B for `LANES` columns of one step; lanes off `mask` read nothing and are zero.
    unsafe fn load_b(ptr: *const Self::Elem, mask: V::Mask) -> Self::B;
    /// Like `load_b` for a final half step (odd k): the missing half is zero whatever memory
    /// holds.
    unsafe fn load_b_tail(ptr: *const Self::Elem, mask: V::Mask) -> Self::B;
    /// Broadcast one step of A (one value, or a pair of consecutive bf16).
    unsafe fn bcast_a(ptr: *const Self::Elem) -> Self::A;
    /// Broadcast a final half step of A (odd k): reads one element only.
    unsafe fn bcast_a_tail(ptr: *const Self::Elem) -> Self::A;
    /// `acc + a * b` summed over the step.
    unsafe fn dot(acc: V::F, a: Self::A, b: Self::B) -> V::F;
}

/// Largest `MR` any tile uses.
const MR_CAP: usize = 14;
/// Widest tile, in vector columns.
const NR_CAP: usize = 4;

/// One `MR x (LANES * NR)` tile of C at (`row0`, `col0`), the last vector column masked by
/// `last`.
///
/// # Safety
///
/// The batch and `c` must be valid for the accesses `p` describes (checked by the API), the
/// tile must lie inside `m x n`, and the CPU must have the features `V` and `D` use.
#[inline(always)]
unsafe fn tile<V: Vector, D: Dot<V>, O: OutElem, const MR: usize, const NR: usize>(
    p: &Params,
    batch: &BatchPtrs<'_, D::Elem>,
    row0: usize,
    col0: usize,
    last: V::Mask,
    c: *mut O,
) {
    let lanes = V::LANES;
    let masks: [V::Mask; NR] = core::array::from_fn(|j| if j + 1 == NR { last } else { V::all() });
    // SAFETY: the caller guarantees the tile lies inside C, so every row start is in bounds,
    // and that the CPU has the vector features (this body is only inlined into shims).
    let (c0, mut acc) = unsafe { (c.add(row0 * p.ldc + col0), [[V::zero(); NR]; MR]) };
    if p.accumulate {
        for (r, acc_r) in acc.iter_mut().enumerate() {
            for (j, acc_rj) in acc_r.iter_mut().enumerate() {
                // SAFETY: row `row0 + r` < m and the masked lanes stay below n.
                *acc_rj = unsafe { O::load::<V>(c0.add(r * p.ldc + lanes * j), masks[j]) };
            }
        }
    }
    let steps = p.k / D::K_STEP;
    let tail = !p.k.is_multiple_of(D::K_STEP);
    let b_step = p.ldb * D::K_STEP;
    for i in 0..p.count {
        // SAFETY: i < count, and the API checked every pair's extent.
        let (a, b) = unsafe { batch.get(i) };
        // SAFETY: the row/column offsets lie inside A_i and B_i (tile inside m x n).
        let (a, b) = unsafe { (a.add(row0 * p.a_row), b.add(col0 * D::K_STEP)) };
        for s in 0..steps {
            // SAFETY: step s < steps covers k elements s*K_STEP.. inside each row of A_i and
            // the VNNI / row-major row s of B_i; lanes past n are masked.
            unsafe {
                let bs = b.add(s * b_step);
                let bv: [D::B; NR] =
                    core::array::from_fn(|j| D::load_b(bs.add(lanes * j * D::K_STEP), masks[j]));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = D::bcast_a(a.add(r * p.a_row + s * D::K_STEP * p.a_k));
                    for (acc_rj, bvj) in acc_r.iter_mut().zip(bv) {
                        *acc_rj = D::dot(*acc_rj, av, bvj);
                    }
                }
            }
        }
        if tail {
            // SAFETY: as above for the last, half-filled step: the tail loads read only the
            // element of A that exists and the padded pair of B inside its extent.
            unsafe {
                let bs = b.add(steps * b_step);
                let bv: [D::B; NR] = core::array::from_fn(|j| {
                    D::load_b_tail(bs.add(lanes * j * D::K_STEP), masks[j])
                });
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = D::bcast_a_tail(a.add(r * p.a_row + steps * D::K_STEP * p.a_k));
                    for (acc_rj, bvj) in acc_r.iter_mut().zip(bv) {
                        *acc_rj = D::dot(*acc_rj, av, bvj);
                    }
                }
            }
        }
    }
    if p.epi.active {
        // Out of line: the hot loop above keeps its accumulators in registers only if
        // nothing in its frame borrows them.
        // SAFETY: as for the loads of C above; the bias covers the n columns and the mask
        // C's extent (checked by the API).
        unsafe {
            V::out_of_line(move || {
                store_with_epilogue::<V, O, MR, NR>(p, acc, row0, col0, masks, c0)
            })
        };
        return;
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (j, acc_rj) in acc_r.iter().enumerate() {
            // SAFETY: as for the loads of C above.
            unsafe { O::store::<V>(c0.add(r * p.ldc + lanes * j), masks[j], *acc_rj) };
        }
    }
}

/// Store a finished tile after the epilogue steps, applied in registers in the order and
/// with the comparisons of the portable definition (so every backend gives the same bits).
///
/// # Safety
///
/// The tile lies inside C (`c0` is its first element), `p.epi.bias` (when not null) holds
/// the `n` columns and `p.epi.mask` (when not null) is laid out as C with C's element type;
/// the CPU has the vector features.
#[inline(always)]
unsafe fn store_with_epilogue<V: Vector, O: OutElem, const MR: usize, const NR: usize>(
    p: &Params,
    acc: [[V::F; NR]; MR],
    row0: usize,
    col0: usize,
    masks: [V::Mask; NR],
    c0: *mut O,
) {
    let e = &p.epi;
    let lanes = V::LANES;
    // SAFETY: every load and store is masked to columns inside n, on rows inside the tile
    // (caller).
    unsafe {
        let bias: [V::F; NR] = core::array::from_fn(|j| {
            if e.bias.is_null() {
                V::zero()
            } else {
                V::load(e.bias.add(col0 + lanes * j), masks[j])
            }
        });
        let valid_cols: [V::Mask; NR] =
            core::array::from_fn(|j| V::first(e.valid_cols.saturating_sub(col0 + lanes * j)));
        let mask = e.mask.cast::<O>();
        for (r, acc_r) in acc.iter().enumerate() {
            let row = row0 + r;
            for (j, &acc_rj) in acc_r.iter().enumerate() {
                let mut v = acc_rj;
                if !e.bias.is_null() {
                    v = V::add(v, bias[j]);
                }
                if e.relu {
                    v = V::relu(v);
                }
                if !mask.is_null() {
                    let y = O::load::<V>(mask.add(row * p.ldc + col0 + lanes * j), masks[j]);
                    v = V::where_positive(y, v);
                }
                let keep = if row < e.valid_rows {
                    valid_cols[j]
                } else {
                    V::first(0)
                };
                v = V::keep(keep, v);
                O::store::<V>(c0.add(r * p.ldc + lanes * j), masks[j], v);
            }
        }
    }
}

/// Expands to a `match` on (`mr`, `nr`) calling the matching monomorphised tile.
macro_rules! dispatch_tile {
    ($mr:expr, $nr:expr, $args:tt, $( $nrv:literal => [$($mrv:literal)*] ),* ) => {
        match $nr {
            $( $nrv => match $mr {
                $( $mrv => dispatch_tile!(@call $mrv, $nrv, $args), )*
                _ => unreachable!("tile rows out of range"),
            }, )*
            _ => unreachable!("tile columns out of range"),
        }
    };
    (@call $mrv:literal, $nrv:literal, ($v:ty, $d:ty, $o:ty, $p:expr, $b:expr, $r:expr, $c0:expr, $last:expr, $c:expr)) => {
        tile::<$v, $d, $o, $mrv, $nrv>($p, $b, $r, $c0, $last, $c)
    };
}

/// The whole BRGEMM for one call.
///
/// With `p.pair_outer` and an f32 C, the batch is the outer loop: every tile of C takes one
/// pair at a time, C carrying the sum between pairs in memory (exactly: it is f32), so one
/// pair's B stays in L1 while all the tiles sweep it, instead of every tile streaming all the
/// pairs' B from L2. Otherwise (and for bf16 C, which must not round between pairs) each tile
/// keeps its accumulators in registers across the whole batch. Both orders add the same
/// products in the same order into each element.
///
/// # Safety
///
/// As for [`tile`]: the API validated the accesses, and the CPU has what `V` and `D` need.
#[inline(always)]
pub(crate) unsafe fn brgemm<V: Vector, D: Dot<V>, O: OutElem>(
    p: &Params,
    batch: &BatchPtrs<'_, D::Elem>,
    c: *mut O,
) {
    if !(p.pair_outer && p.count > 1 && O::DTYPE == crate::DType::F32) {
        // SAFETY: forwarded from the caller.
        unsafe { tiles::<V, D, O>(p, batch, c) };
        return;
    }
    let inactive = crate::abi::EpiPtrs {
        active: false,
        ..p.epi
    };
    for i in 0..p.count {
        // SAFETY: i < count (the API validated every pair).
        let (a, b) = unsafe { batch.get(i) };
        let one = BatchPtrs::Strided {
            a,
            b,
            stride_a: 0,
            stride_b: 0,
        };
        let last = i + 1 == p.count;
        let pi = Params {
            count: 1,
            accumulate: p.accumulate || i > 0,
            epi: if last { p.epi } else { inactive },
            ..*p
        };
        // SAFETY: the single pair is pair i of the validated batch; C as before.
        unsafe { tiles::<V, D, O>(&pi, &one, c) };
    }
}

/// Every tile of C over the whole batch of `p`.
///
/// Tiles are at most `p.tile` (columns capped at 4 vectors, rows at 14); where fewer
/// columns remain, the rows grow so the tile keeps the same number of accumulators.
///
/// # Safety
///
/// As for [`brgemm`].
#[inline(always)]
unsafe fn tiles<V: Vector, D: Dot<V>, O: OutElem>(
    p: &Params,
    batch: &BatchPtrs<'_, D::Elem>,
    c: *mut O,
) {
    let lanes = V::LANES;
    let budget = p.tile.accumulators().max(1);
    let max_cols = p.tile.cols.clamp(1, NR_CAP);
    let mut col0 = 0;
    while col0 < p.n {
        let cols = (p.n - col0).min(lanes * max_cols);
        let nr = cols.div_ceil(lanes);
        let last = V::first(cols - lanes * (nr - 1));
        let mr_max = (budget / nr).clamp(1, max_rows(nr, V::REGISTERS));
        let mut row0 = 0;
        while row0 < p.m {
            let mr = mr_max.min(p.m - row0);
            // SAFETY: the tile (row0..row0+mr, col0..col0+cols) lies inside m x n.
            unsafe {
                dispatch_tile!(mr, nr, (V, D, O, p, batch, row0, col0, last, c),
                    1 => [1 2 3 4 5 6 7 8 9 10 11 12],
                    2 => [1 2 3 4 5 6 7 8 9 10 11 12 13 14],
                    3 => [1 2 3 4 5 6 7 8 9],
                    4 => [1 2 3 4 5 6]
                )
            }
            row0 += mr;
        }
        col0 += cols;
    }
}

/// The most rows a tile of `nr` vector columns may have: what fits `registers` vector
/// registers with its `nr` B vectors, a broadcast and one more (a lane mask or a constant),
/// at most the rows [`tiles`] instantiates for `nr`. (32 zmm: 12, 14, 9, 6 rows; 16 ymm: 12,
/// 6, 3, 2.)
const fn max_rows(nr: usize, registers: usize) -> usize {
    let instantiated = match nr {
        1 => 12,
        2 => MR_CAP,
        3 => 9,
        _ => 6,
    };
    let fit = (registers - nr - 2) / nr;
    if fit < instantiated {
        fit
    } else {
        instantiated
    }
}
