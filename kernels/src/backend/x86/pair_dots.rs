//! Pairwise dots of a few vectors (the dot interaction), `d` across the lanes, for the x86
//! SIMD backends, written once against [`Vector`]. A dot sums its products (each rounded)
//! in 16 lanes over the chunks of 16 in order, then by halves, whatever the register width:
//! the portable definition.

use super::vector::Vector;
use crate::backend::portable::coefficient;

/// Vectors of one row kept in registers by the backward; longer rows are done in pieces of
/// this many.
const PIECE: usize = 8;

/// `z_i . z_j` for every pair, in the interaction's order.
///
/// # Safety
///
/// The CPU has what `V` needs (callers are `#[target_feature]` shims); `z` holds `f * d`
/// elements and `out` the pairs.
#[inline(always)]
pub(crate) unsafe fn forward<V: Vector>(
    z: *const f32,
    f: usize,
    d: usize,
    diagonal: bool,
    out: *mut f32,
) {
    let lanes = V::LANES;
    let nv = d.div_ceil(lanes);
    let mut p = 0;
    for i in 0..f {
        for j in 0..i + usize::from(diagonal) {
            // SAFETY: rows i and j (< f) hold d elements; the masked lanes stay below d;
            // `p` counts the pairs, which `out` holds (caller).
            unsafe {
                let (zi, zj) = (z.add(i * d), z.add(j * d));
                let mut acc = [V::zero(); 2];
                for v in 0..nv {
                    let m = V::first(d - lanes * v);
                    let a = V::load(zi.add(lanes * v), m);
                    let b = V::load(zj.add(lanes * v), m);
                    let q = v % V::PARTS16;
                    acc[q] = V::add(acc[q], V::mul(a, b));
                }
                *out.add(p) = V::reduce16(acc);
            }
            p += 1;
        }
    }
}

/// `dz_i = sum_j s(i, j) z_j`.
///
/// # Safety
///
/// The CPU has what `V` needs; `z` and `dz` hold `f * d` elements.
#[inline(always)]
unsafe fn backward_with<V: Vector>(
    z: *const f32,
    f: usize,
    d: usize,
    s: impl Fn(usize, usize) -> f32,
    dz: *mut f32,
) {
    let lanes = V::LANES;
    let nv = d.div_ceil(lanes);
    let mut v0 = 0;
    while v0 < nv {
        let piece = (nv - v0).min(PIECE);
        for i in 0..f {
            // SAFETY: register-only operations (callers are `#[target_feature]` shims).
            let mut acc = unsafe { [V::zero(); PIECE] };
            for j in 0..f {
                // SAFETY: as above.
                let c = unsafe { V::splat(s(i, j)) };
                for (v, a) in acc.iter_mut().enumerate().take(piece) {
                    let e = lanes * (v0 + v);
                    // SAFETY: row j (< f) holds d elements; masked lanes stay below d.
                    unsafe {
                        let x = V::load(z.add(j * d + e), V::first(d - e));
                        *a = V::add(*a, V::mul(c, x));
                    }
                }
            }
            for (v, a) in acc.iter().enumerate().take(piece) {
                let e = lanes * (v0 + v);
                // SAFETY: row i (< f) of `dz` holds d elements; masked lanes stay below d.
                unsafe { V::store(dz.add(i * d + e), V::first(d - e), *a) };
            }
        }
        v0 += piece;
    }
}

/// The backward entry: `dz_i = sum_j s_ij z_j` with `s` from the pairs' gradient.
///
/// # Safety
///
/// The CPU has what `V` needs; `z` and `dz` hold `f * d` values, `grad` every pair.
#[inline(always)]
pub(crate) unsafe fn backward<V: Vector>(
    z: *const f32,
    f: usize,
    d: usize,
    diagonal: bool,
    grad: &[f32],
    dz: *mut f32,
) {
    // SAFETY: forwarded; `coefficient` indexes `grad` with bounds checks.
    unsafe { backward_with::<V>(z, f, d, |i, j| coefficient(grad, i, j, diagonal), dz) }
}

/// A backend's pairwise-dot entries: `shims!("its,features", Register)` expands, in the
/// invoking module, to thin `#[target_feature]` shims `forward` and `backward` over the
/// bodies above, instantiated with the backend's [`Vector`] type.
macro_rules! shims {
    ($features:literal, $v:ty) => {
        /// The pairs' dots (`PairDots::forward`) on this backend.
        ///
        /// # Safety
        ///
        /// The CPU has this backend's features; `z` holds `f * d` elements and `out` the
        /// pairs.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn forward(
            z: *const f32,
            f: usize,
            d: usize,
            diagonal: bool,
            out: *mut f32,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::backend::x86::pair_dots::forward::<$v>(z, f, d, diagonal, out) }
        }

        /// The backward (`PairDots::backward`) on this backend.
        ///
        /// # Safety
        ///
        /// The CPU has this backend's features; `z` and `dz` hold `f * d` values, `grad`
        /// every pair.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn backward(
            z: *const f32,
            f: usize,
            d: usize,
            diagonal: bool,
            grad: &[f32],
            dz: *mut f32,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::backend::x86::pair_dots::backward::<$v>(z, f, d, diagonal, grad, dz) }
        }
    };
}
pub(crate) use shims;
