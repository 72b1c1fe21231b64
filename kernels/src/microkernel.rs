//! The one register-blocked BRGEMM body shared by every x86 SIMD path.
//!
//! `C[m x n] (=|+=) sum_i A_i[m x k] * B_i[k x n]` is cut into tiles of `MR` rows by `NR`
//! zmm columns (`16 * NR` floats). A tile's accumulators stay in registers across the whole
//! batch; B is loaded once per k step and reused by every row, A is broadcast. Columns past
//! `n` are masked off in the last zmm of a tile, and the last rows get a tile with a smaller
//! `MR`, so every tile runs the same full-speed loop.
//!
//! What a "k step" is differs by data type and ISA; the [`Dot`] trait says it (fp32 FMA,
//! `vdpbf16ps`, or bf16 widened to fp32), and [`Out`] says how C is loaded and stored (fp32,
//! or bf16 rounded to nearest even). The ISA files implement those traits with thin
//! `#[target_feature]` shims around [`brgemm`].

use core::arch::x86_64::*;

use crate::brgemm::{BatchPtrs, Params};

/// One k step of a tile: how B and A are loaded and how they are multiplied into the fp32
/// accumulators.
pub(crate) trait Dot {
    /// The element type of A and B (`f32` or `half::bf16`).
    type Elem: Copy;
    /// A loaded B vector (one zmm, or a pair of zmm when bf16 is widened).
    type B: Copy;
    /// A broadcast A value.
    type A: Copy;
    /// Elements of k consumed per step (1 for fp32, 2 for VNNI-2 bf16).
    const K_STEP: usize;
    /// Accumulator budget: `MR * NR` is kept at or below it so A, B and C fit the 32 zmm.
    const MAX_ACC: usize;

    /// Load B for 16 columns of one step; lanes off `mask` read nothing and are zero.
    unsafe fn load_b(ptr: *const Self::Elem, mask: __mmask16) -> Self::B;
    /// Like `load_b` for a final half step (odd k): the missing half is zero whatever memory
    /// holds.
    unsafe fn load_b_tail(ptr: *const Self::Elem, mask: __mmask16) -> Self::B;
    /// Broadcast one step of A (one value, or a pair of consecutive bf16).
    unsafe fn bcast_a(ptr: *const Self::Elem) -> Self::A;
    /// Broadcast a final half step of A (odd k): reads one element only.
    unsafe fn bcast_a_tail(ptr: *const Self::Elem) -> Self::A;
    /// `acc + a * b` summed over the step.
    unsafe fn dot(acc: __m512, a: Self::A, b: Self::B) -> __m512;
}

/// How the C tile is loaded (for accumulation) and stored.
pub(crate) trait Out {
    /// The element type of C.
    type Elem: Copy;
    /// Load 16 values of C as fp32; lanes off `mask` read nothing.
    unsafe fn load(ptr: *const Self::Elem, mask: __mmask16) -> __m512;
    /// Store 16 fp32 values into C; lanes off `mask` are not written.
    unsafe fn store(ptr: *mut Self::Elem, mask: __mmask16, v: __m512);
}

/// Largest `MR` any tile uses.
const MR_CAP: usize = 12;
/// Widest tile, in zmm columns.
const NR_CAP: usize = 4;

/// One `MR x (16 * NR)` tile of C at (`row0`, `col0`), the last zmm column masked by `last`.
///
/// # Safety
///
/// The batch and `c` must be valid for the accesses `p` describes (checked by
/// `Brgemm::run`), the tile must lie inside `m x n`, and the CPU must support what `D` and
/// `O` use.
#[inline(always)]
unsafe fn tile<D: Dot, O: Out, const MR: usize, const NR: usize>(
    p: &Params,
    batch: &BatchPtrs<'_, D::Elem>,
    row0: usize,
    col0: usize,
    last: __mmask16,
    c: *mut O::Elem,
) {
    let masks: [__mmask16; NR] = core::array::from_fn(|j| if j + 1 == NR { last } else { !0 });
    // SAFETY: the caller guarantees the tile lies inside C, so every row start is in bounds,
    // and that the CPU has AVX-512F (this body is only inlined into `#[target_feature]` shims).
    let (c0, mut acc) = unsafe { (c.add(row0 * p.ldc + col0), [[_mm512_setzero_ps(); NR]; MR]) };
    if p.accumulate {
        for (r, acc_r) in acc.iter_mut().enumerate() {
            for (j, acc_rj) in acc_r.iter_mut().enumerate() {
                // SAFETY: row `row0 + r` < m and the masked lanes stay below n.
                *acc_rj = unsafe { O::load(c0.add(r * p.ldc + 16 * j), masks[j]) };
            }
        }
    }
    let steps = p.k / D::K_STEP;
    let tail = !p.k.is_multiple_of(D::K_STEP);
    let b_step = p.ldb * D::K_STEP;
    for i in 0..p.count {
        // SAFETY: i < count, and `run` checked every pair's extent.
        let (a, b) = unsafe { batch.get(i) };
        // SAFETY: the row/column offsets lie inside A_i and B_i (tile inside m x n).
        let (a, b) = unsafe { (a.add(row0 * p.a_row), b.add(col0 * D::K_STEP)) };
        for s in 0..steps {
            // SAFETY: step s < steps covers k elements s*K_STEP.. inside each row of A_i and
            // the VNNI / row-major row s of B_i; lanes past n are masked.
            unsafe {
                let bs = b.add(s * b_step);
                let bv: [D::B; NR] =
                    core::array::from_fn(|j| D::load_b(bs.add(16 * j * D::K_STEP), masks[j]));
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
                let bv: [D::B; NR] =
                    core::array::from_fn(|j| D::load_b_tail(bs.add(16 * j * D::K_STEP), masks[j]));
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
        // SAFETY: as for the loads of C above; the bias covers the n columns and the mask
        // C's extent (checked by `run_with`).
        unsafe { store_with_epilogue::<O, MR, NR>(p, acc, row0, col0, masks, c0) };
        return;
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (j, acc_rj) in acc_r.iter().enumerate() {
            // SAFETY: as for the loads of C above.
            unsafe { O::store(c0.add(r * p.ldc + 16 * j), masks[j], *acc_rj) };
        }
    }
}

/// Store a finished tile after the [`crate::Epilogue`] steps, applied in registers in the
/// order and with the comparisons of `Epilogue::apply` (so every ISA gives the same bits).
/// Kept out of line: the tile's hot loop keeps its accumulators in registers only if
/// nothing borrows them.
///
/// # Safety
///
/// The tile lies inside C (`c0` is its first element), `p.epi.bias` (when not null) holds
/// the `n` columns and `p.epi.mask` (when not null) is laid out as C with C's element type;
/// the CPU has AVX-512F.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn store_with_epilogue<O: Out, const MR: usize, const NR: usize>(
    p: &Params,
    acc: [[__m512; NR]; MR],
    row0: usize,
    col0: usize,
    masks: [__mmask16; NR],
    c0: *mut O::Elem,
) {
    let e = &p.epi;
    // SAFETY: every load and store is masked to columns inside n, on rows inside the tile
    // (caller).
    unsafe {
        let zero = _mm512_setzero_ps();
        let bias: [__m512; NR] = core::array::from_fn(|j| {
            if e.bias.is_null() {
                zero
            } else {
                _mm512_maskz_loadu_ps(masks[j], e.bias.add(col0 + 16 * j))
            }
        });
        let valid_cols: [__mmask16; NR] = core::array::from_fn(|j| {
            crate::avx512::lanes(e.valid_cols.saturating_sub(col0 + 16 * j))
        });
        let mask = e.mask.cast::<O::Elem>();
        for (r, acc_r) in acc.iter().enumerate() {
            let row = row0 + r;
            for (j, &acc_rj) in acc_r.iter().enumerate() {
                let mut v = acc_rj;
                if !e.bias.is_null() {
                    v = _mm512_add_ps(v, bias[j]);
                }
                if e.relu {
                    let not_positive = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, zero);
                    v = _mm512_mask_mov_ps(v, not_positive, zero);
                }
                if !mask.is_null() {
                    let y = O::load(mask.add(row * p.ldc + col0 + 16 * j), masks[j]);
                    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, zero), v);
                }
                let keep = if row < e.valid_rows { valid_cols[j] } else { 0 };
                v = _mm512_maskz_mov_ps(keep, v);
                O::store(c0.add(r * p.ldc + 16 * j), masks[j], v);
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
    (@call $mrv:literal, $nrv:literal, ($d:ty, $o:ty, $p:expr, $b:expr, $r:expr, $c0:expr, $last:expr, $c:expr)) => {
        tile::<$d, $o, $mrv, $nrv>($p, $b, $r, $c0, $last, $c)
    };
}

/// The whole BRGEMM for one call: tiles C and runs each tile over the batch.
///
/// # Safety
///
/// As for [`tile`]: `run` validated the accesses, and the CPU has what `D` and `O` need.
#[inline(always)]
pub(crate) unsafe fn brgemm<D: Dot, O: Out>(
    p: &Params,
    batch: &BatchPtrs<'_, D::Elem>,
    c: *mut O::Elem,
) {
    let mut col0 = 0;
    while col0 < p.n {
        let cols = (p.n - col0).min(16 * NR_CAP);
        let nr = cols.div_ceil(16);
        let rem = cols - 16 * (nr - 1);
        let last: __mmask16 = if rem == 16 { !0 } else { (1u16 << rem) - 1 };
        let mr_max = (D::MAX_ACC / nr).min(MR_CAP);
        let mut row0 = 0;
        while row0 < p.m {
            let mr = mr_max.min(p.m - row0);
            // SAFETY: the tile (row0..row0+mr, col0..col0+cols) lies inside m x n.
            unsafe {
                dispatch_tile!(mr, nr, (D, O, p, batch, row0, col0, last, c),
                    1 => [1 2 3 4 5 6 7 8 9 10 11 12],
                    2 => [1 2 3 4 5 6 7 8 9 10 11 12],
                    3 => [1 2 3 4 5 6 7 8],
                    4 => [1 2 3 4 5 6]
                )
            }
            row0 += mr;
        }
        col0 += cols;
    }
}

/// fp32 C: plain masked loads and stores.
pub(crate) struct OutF32;

impl Out for OutF32 {
    type Elem = f32;
    #[inline(always)]
    unsafe fn load(ptr: *const f32, mask: __mmask16) -> __m512 {
        // SAFETY: lanes on `mask` are in bounds (caller); masked-off lanes are not accessed.
        unsafe { _mm512_maskz_loadu_ps(mask, ptr) }
    }
    #[inline(always)]
    unsafe fn store(ptr: *mut f32, mask: __mmask16, v: __m512) {
        // SAFETY: as for `load`.
        unsafe { _mm512_mask_storeu_ps(ptr, mask, v) }
    }
}

/// bf16 C: widened on load, rounded to nearest even on store (NaN kept quiet).
pub(crate) struct OutBf16;

impl Out for OutBf16 {
    type Elem = half::bf16;
    #[inline(always)]
    unsafe fn load(ptr: *const half::bf16, mask: __mmask16) -> __m512 {
        // SAFETY: bf16 is a transparent u16; lanes on `mask` are in bounds.
        unsafe { widen_bf16(_mm256_maskz_loadu_epi16(mask, ptr.cast())) }
    }
    #[inline(always)]
    unsafe fn store(ptr: *mut half::bf16, mask: __mmask16, v: __m512) {
        // SAFETY: as for `load`.
        unsafe { _mm512_mask_cvtepi32_storeu_epi16(ptr.cast(), mask, round_to_bf16_bits(v)) }
    }
}

/// 16 bf16 (as u16 lanes of a ymm) widened to fp32.
#[inline(always)]
pub(crate) unsafe fn widen_bf16(v: __m256i) -> __m512 {
    // SAFETY: register-only AVX-512F operations; the caller's CPU has AVX-512F.
    unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v))) }
}

/// fp32 rounded to the nearest bf16 (ties to even), as 32-bit lanes holding the 16 bits.
///
/// NaN stays NaN (quiet bit set), infinities stay infinite, values that round past the
/// largest bf16 become infinity: the same bits as `half::bf16::from_f32`.
#[inline(always)]
pub(crate) unsafe fn round_to_bf16_bits(v: __m512) -> __m512i {
    // SAFETY: register-only AVX-512F operations; the caller's CPU has AVX-512F.
    unsafe {
        let bits = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(0x40));
        _mm512_mask_blend_epi32(nan, rounded, quiet)
    }
}
