//! Pairwise dot products of a few vectors and their gradient: the arithmetic of the DLRM dot
//! interaction for one sample.
//!
//! For `f` vectors `z_0 .. z_{f-1}` of length `d` (the rows of `z`, row-major), the forward
//! gives `z_i . z_j` for the pairs `(i, j)` with `i` in `0..f` and `j` in `0..i` (`0..=i`
//! with the diagonal), in that order, as the DLRM reference lists them. The backward takes
//! one gradient per pair and gives `dz_i = sum_j s_ij z_j`, where `s` is the symmetric matrix
//! with `s_ij = s_ji` = the pair's gradient (the diagonal's doubled, since `z_i . z_i` holds
//! `z_i` twice).
//!
//! The vectors are used where they lie (no transposed copy), `d` across the SIMD lanes. Every
//! ISA rounds the same way, so the bits do not depend on the CPU: a dot product sums its
//! products (each rounded, no FMA) in 16 lanes over the chunks of 16 in order, then adds the
//! lanes by halves (8, 4, 2, 1); an element of `dz` sums `s_ij * z_j[e]` (each product
//! rounded) over `j` in order.
//!
//! ```
//! use dlrm_microkernels::pair_dots::PairDots;
//!
//! let k = PairDots::new()?;
//! // Three vectors of length 2: pairs (1, 0), (2, 0), (2, 1).
//! let z = [1.0f32, 0.0, 1.0, 2.0, 3.0, 4.0];
//! let mut p = [0f32; 3];
//! k.forward(&z, 3, 2, false, &mut p)?;
//! assert_eq!(p, [1.0, 3.0, 11.0]);
//!
//! // The gradient of p[2] = z_2 . z_1 alone: dz_1 = z_2, dz_2 = z_1.
//! let mut dz = [f32::NAN; 6];
//! k.backward(&z, 3, 2, false, &[0.0, 0.0, 1.0], &mut dz)?;
//! assert_eq!(dz, [0.0, 0.0, 3.0, 4.0, 1.0, 2.0]);
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

use crate::error::fits;
use crate::{Isa, KernelError};

/// The pairwise-dot kernels for the ISA chosen at construction. `Copy`, cheap.
///
/// ```
/// let k = dlrm_microkernels::pair_dots::PairDots::new()?;
/// assert!(k.isa().is_available());
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairDots {
    isa: Isa,
}

/// Where pair `(i, j)` (`j < i`, or `j <= i` with the diagonal) sits in the pair list.
#[inline(always)]
fn pair_index(i: usize, j: usize, diagonal: bool) -> usize {
    if diagonal {
        i * (i + 1) / 2 + j
    } else {
        i * (i - 1) / 2 + j
    }
}

/// `s_ij`: the gradient of the pair `(max, min)`, doubled on the diagonal, 0 on the diagonal
/// without it.
#[inline(always)]
fn coefficient(grad: &[f32], i: usize, j: usize, diagonal: bool) -> f32 {
    match (i.cmp(&j), diagonal) {
        (std::cmp::Ordering::Greater, _) => grad[pair_index(i, j, diagonal)],
        (std::cmp::Ordering::Less, _) => grad[pair_index(j, i, diagonal)],
        (std::cmp::Ordering::Equal, true) => 2.0 * grad[pair_index(i, i, true)],
        (std::cmp::Ordering::Equal, false) => 0.0,
    }
}

impl PairDots {
    /// For the active ISA ([`Isa::active`]).
    ///
    /// # Errors
    ///
    /// As [`Isa::active`].
    ///
    /// ```
    /// assert!(dlrm_microkernels::pair_dots::PairDots::new().is_ok());
    /// ```
    pub fn new() -> Result<Self, KernelError> {
        Self::with_isa(Isa::active()?)
    }

    /// For a given ISA.
    ///
    /// # Errors
    ///
    /// [`KernelError::IsaUnavailable`] if this CPU lacks `isa`.
    ///
    /// ```
    /// use dlrm_microkernels::{Isa, pair_dots::PairDots};
    /// assert_eq!(PairDots::with_isa(Isa::Portable)?.isa(), Isa::Portable);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn with_isa(isa: Isa) -> Result<Self, KernelError> {
        Ok(PairDots {
            isa: isa.require()?,
        })
    }

    /// The ISA the kernels run on.
    ///
    /// ```
    /// use dlrm_microkernels::{Isa, pair_dots::PairDots};
    /// assert_eq!(PairDots::with_isa(Isa::Portable)?.isa(), Isa::Portable);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Number of pairs of `f` vectors: `f (f - 1) / 2`, or `f (f + 1) / 2` with the diagonal.
    ///
    /// ```
    /// use dlrm_microkernels::pair_dots::PairDots;
    /// assert_eq!((PairDots::pairs(9, false), PairDots::pairs(9, true)), (36, 45));
    /// ```
    pub fn pairs(f: usize, diagonal: bool) -> usize {
        if diagonal {
            f * (f + 1) / 2
        } else {
            f * f.saturating_sub(1) / 2
        }
    }

    /// Check that `z` holds `f` rows of `d` and that the per-pair operand (its name and
    /// length) holds one value per pair; returns `f * d`.
    fn check(
        z: &[f32],
        f: usize,
        d: usize,
        diagonal: bool,
        (operand, len): (&'static str, usize),
    ) -> Result<usize, KernelError> {
        let n = f
            .checked_mul(d)
            .ok_or(KernelError::Overflow { what: "f * d" })?;
        fits("z", n, z.len())?;
        fits(operand, Self::pairs(f, diagonal), len)?;
        Ok(n)
    }

    /// `out[p] = z_i . z_j` for the `p`-th pair (see the [module docs](self)); `z` holds `f`
    /// rows of `d`. Only the first [`PairDots::pairs`] elements of `out` are written.
    ///
    /// # Errors
    ///
    /// [`KernelError::SliceTooShort`] if `z` has fewer than `f * d` elements or `out` fewer
    /// than the pairs (nothing is written).
    ///
    /// ```
    /// use dlrm_microkernels::pair_dots::PairDots;
    /// let k = PairDots::new()?;
    /// let mut p = [0f32; 3];
    /// k.forward(&[2.0f32, 3.0], 2, 1, true, &mut p)?; // (0,0), (1,0), (1,1)
    /// assert_eq!(p, [4.0, 6.0, 9.0]);
    /// assert!(k.forward(&[2.0f32], 2, 1, true, &mut p).is_err());
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn forward(
        &self,
        z: &[f32],
        f: usize,
        d: usize,
        diagonal: bool,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        Self::check(z, f, d, diagonal, ("out", out.len()))?;
        #[cfg(target_arch = "x86_64")]
        if self.isa >= Isa::Avx512 {
            // SAFETY: the ISA was checked available when the kernel was built; `z` holds
            // `f * d` elements and `out` the pairs (checked above).
            unsafe { avx512::forward(z.as_ptr(), f, d, diagonal, out.as_mut_ptr()) };
            return Ok(());
        }
        let extra = usize::from(diagonal);
        let mut p = 0;
        for i in 0..f {
            for j in 0..i + extra {
                out[p] = dot_portable(&z[i * d..][..d], &z[j * d..][..d]);
                p += 1;
            }
        }
        Ok(())
    }

    /// `dz_i = sum_j s_ij z_j` for the pair gradients `grad` (see the [module docs](self)):
    /// the gradient of [`PairDots::forward`] with respect to `z`, overwriting the first `f *
    /// d` elements of `dz`.
    ///
    /// # Errors
    ///
    /// [`KernelError::SliceTooShort`] if `z` or `dz` has fewer than `f * d` elements or `grad`
    /// fewer than the pairs (nothing is written).
    ///
    /// ```
    /// use dlrm_microkernels::pair_dots::PairDots;
    /// let k = PairDots::new()?;
    /// // p = [z0.z0, z1.z0, z1.z1] with z = [2, 3]: dz0 = 2 g00 z0 + g10 z1, dz1 = g10 z0 + 2 g11 z1.
    /// let mut dz = [0f32; 2];
    /// k.backward(&[2.0f32, 3.0], 2, 1, true, &[1.0, 10.0, 100.0], &mut dz)?;
    /// assert_eq!(dz, [2.0 * 2.0 + 10.0 * 3.0, 10.0 * 2.0 + 200.0 * 3.0]);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn backward(
        &self,
        z: &[f32],
        f: usize,
        d: usize,
        diagonal: bool,
        grad: &[f32],
        dz: &mut [f32],
    ) -> Result<(), KernelError> {
        let n = Self::check(z, f, d, diagonal, ("grad", grad.len()))?;
        fits("dz", n, dz.len())?;
        let grad = &grad[..Self::pairs(f, diagonal)];
        #[cfg(target_arch = "x86_64")]
        if self.isa >= Isa::Avx512 {
            // SAFETY: the ISA was checked available when the kernel was built; `z` and `dz`
            // hold `f * d` elements (checked above); `coefficient` indexes `grad` with bounds
            // checks.
            unsafe {
                avx512::backward(
                    z.as_ptr(),
                    f,
                    d,
                    |i, j| coefficient(grad, i, j, diagonal),
                    dz.as_mut_ptr(),
                )
            };
            return Ok(());
        }
        for i in 0..f {
            let out = &mut dz[i * d..][..d];
            out.fill(0.0);
            for j in 0..f {
                let s = coefficient(grad, i, j, diagonal);
                for (o, x) in out.iter_mut().zip(&z[j * d..][..d]) {
                    *o += s * x;
                }
            }
        }
        Ok(())
    }
}

/// `a . b` in the order every ISA uses: products summed in 16 lanes over the chunks of 16,
/// then the lanes by halves.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for (ca, cb) in a.chunks(16).zip(b.chunks(16)) {
        // A short last chunk adds zero products in its missing lanes, as the masked SIMD
        // loads do (which matters for the sign of a zero).
        for (l, lane) in lanes.iter_mut().enumerate() {
            let (x, y) = (ca.get(l).copied(), cb.get(l).copied());
            *lane += x.unwrap_or(0.0) * y.unwrap_or(0.0);
        }
    }
    crate::portable::reduce_halves(lanes)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    use crate::avx512::{lanes, reduce_halves};

    /// Vectors of one row kept in registers by the backward (128 floats); longer rows are
    /// done in pieces of this many.
    const PIECE: usize = 8;

    /// [`super::PairDots::forward`].
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512 F/BW/VL/DQ; `z` holds `f * d` elements and `out` the pairs.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn forward(z: *const f32, f: usize, d: usize, diagonal: bool, out: *mut f32) {
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
    pub(super) unsafe fn backward(
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isas() -> Vec<Isa> {
        Isa::available()
    }

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn forward_and_backward_match_f64_and_every_isa_gives_the_same_bits() {
        for (f, d) in [
            (1, 1),
            (2, 3),
            (9, 64),
            (27, 64),
            (5, 17),
            (4, 130),
            (3, 300),
        ] {
            for diagonal in [false, true] {
                let z = data(f * d, (f * 131 + d) as u64);
                let np = PairDots::pairs(f, diagonal);
                let g = data(np, 7);
                let pairs: Vec<(usize, usize)> = (0..f)
                    .flat_map(|i| (0..i + usize::from(diagonal)).map(move |j| (i, j)))
                    .collect();
                assert_eq!(pairs.len(), np);
                let dot = |i: usize, j: usize| -> f64 {
                    (0..d)
                        .map(|e| f64::from(z[i * d + e]) * f64::from(z[j * d + e]))
                        .sum()
                };
                let mut results = Vec::new();
                for isa in isas() {
                    let k = PairDots::with_isa(isa).unwrap();
                    let mut p = vec![f32::NAN; np + 1];
                    k.forward(&z, f, d, diagonal, &mut p).unwrap();
                    assert!(p[np].is_nan(), "past the pairs is untouched");
                    for (q, &(i, j)) in pairs.iter().enumerate() {
                        let want = dot(i, j);
                        let err = (f64::from(p[q]) - want).abs();
                        assert!(err <= 1e-5 * (1.0 + d as f64), "{isa} f {f} d {d} pair {q}");
                    }
                    let mut dz = vec![f32::NAN; f * d];
                    k.backward(&z, f, d, diagonal, &g, &mut dz).unwrap();
                    // Reference: the gradient of sum_p g_p (z_i . z_j).
                    let mut want = vec![0f64; f * d];
                    for (q, &(i, j)) in pairs.iter().enumerate() {
                        for e in 0..d {
                            want[i * d + e] += f64::from(g[q]) * f64::from(z[j * d + e]);
                            want[j * d + e] += f64::from(g[q]) * f64::from(z[i * d + e]);
                        }
                    }
                    for (e, (&got, &w)) in dz.iter().zip(&want).enumerate() {
                        assert!(
                            (f64::from(got) - w).abs() <= 1e-5 * (1.0 + f as f64),
                            "{isa} f {f} d {d} dz[{e}]: {got} vs {w}"
                        );
                    }
                    results.push((isa, p, dz));
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                for (isa, p, dz) in &results[1..] {
                    assert_eq!(bits(p), bits(&results[0].1), "{isa} forward bits");
                    assert_eq!(bits(dz), bits(&results[0].2), "{isa} backward bits");
                }
            }
        }
    }

    #[test]
    fn short_slices_are_errors_and_write_nothing() {
        for isa in isas() {
            let k = PairDots::with_isa(isa).unwrap();
            let z = [1.0f32; 6];
            let mut out = [f32::NAN; 3];
            let err = k.forward(&z[..5], 3, 2, false, &mut out).unwrap_err();
            assert_eq!(
                err.to_string(),
                "z slice too short: needs 6 elements, has 5"
            );
            let err = k.forward(&z, 3, 2, false, &mut out[..2]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "out slice too short: needs 3 elements, has 2"
            );
            assert!(out.iter().all(|x| x.is_nan()));
            let mut dz = [f32::NAN; 6];
            let err = k.backward(&z, 3, 2, false, &[1.0; 2], &mut dz).unwrap_err();
            assert_eq!(
                err.to_string(),
                "grad slice too short: needs 3 elements, has 2"
            );
            let err = k
                .backward(&z, 3, 2, false, &[1.0; 3], &mut dz[..5])
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "dz slice too short: needs 6 elements, has 5"
            );
            assert!(dz.iter().all(|x| x.is_nan()));
            // No vectors, or vectors of length 0: nothing to do.
            k.forward(&[], 0, 4, false, &mut []).unwrap();
            k.backward(&[], 3, 0, true, &[0.0; 6], &mut []).unwrap();
        }
    }
}
