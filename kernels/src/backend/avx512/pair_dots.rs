//! AVX-512 pairwise dots of a few vectors (the dot interaction), `d` across the lanes.

use core::arch::x86_64::*;

use super::{lanes, reduce_halves};
use crate::backend::portable::coefficient;

/// Vectors of one row kept in registers by the backward (128 floats); longer rows are
/// done in pieces of this many.
const PIECE: usize = 8;

/// [`super::PairDots::forward`].
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `z` holds `f * d` elements and `out` the pairs.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn forward(z: *const f32, f: usize, d: usize, diagonal: bool, out: *mut f32) {
    let nv = d.div_ceil(16);
    let mut p = 0;
    for i in 0..f {
        for j in 0..i + usize::from(diagonal) {
            // SAFETY: rows i and j (< f) hold d elements; the masked lanes stay below d;
            // `p` counts the pairs, which `out` holds (caller).
            unsafe {
                let (zi, zj) = (z.add(i * d), z.add(j * d));
                let mut acc = _mm512_setzero_ps();
                for v in 0..nv {
                    let m = lanes(d - 16 * v);
                    let a = _mm512_maskz_loadu_ps(m, zi.add(16 * v));
                    let b = _mm512_maskz_loadu_ps(m, zj.add(16 * v));
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(a, b));
                }
                *out.add(p) = reduce_halves(acc);
            }
            p += 1;
        }
    }
}

/// [`super::PairDots::backward`], with `s(i, j)` the coefficient of row `j` in `dz_i`.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `z` and `dz` hold `f * d` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn backward_with(
    z: *const f32,
    f: usize,
    d: usize,
    s: impl Fn(usize, usize) -> f32,
    dz: *mut f32,
) {
    let nv = d.div_ceil(16);
    let mut v0 = 0;
    while v0 < nv {
        let piece = (nv - v0).min(PIECE);
        for i in 0..f {
            let mut acc = [_mm512_setzero_ps(); PIECE];
            for j in 0..f {
                let c = _mm512_set1_ps(s(i, j));
                for (v, a) in acc.iter_mut().enumerate().take(piece) {
                    let e = 16 * (v0 + v);
                    // SAFETY: row j (< f) holds d elements; masked lanes stay below d.
                    let x = unsafe { _mm512_maskz_loadu_ps(lanes(d - e), z.add(j * d + e)) };
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(c, x));
                }
            }
            for (v, a) in acc.iter().enumerate().take(piece) {
                let e = 16 * (v0 + v);
                // SAFETY: row i (< f) of `dz` holds d elements; masked lanes stay below d.
                unsafe { _mm512_mask_storeu_ps(dz.add(i * d + e), lanes(d - e), *a) };
            }
        }
        v0 += piece;
    }
}

/// The backward entry: `dz_i = sum_j s_ij z_j` with `s` from the pairs' gradient.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `z` and `dz` hold `f * d` values, `grad` every pair.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn backward(
    z: *const f32,
    f: usize,
    d: usize,
    diagonal: bool,
    grad: &[f32],
    dz: *mut f32,
) {
    // SAFETY: forwarded; `coefficient` indexes `grad` with bounds checks.
    unsafe { backward_with(z, f, d, |i, j| coefficient(grad, i, j, diagonal), dz) }
}
