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

use crate::backend::{self, Backend};
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
    table: &'static Backend,
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
            table: backend::get(isa)?,
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
        self.table.isa
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
        // SAFETY: the table is of a backend this CPU runs; `z` holds `f * d` elements and
        // `out` the pairs (checked above).
        unsafe { (self.table.pair_dots_forward)(z.as_ptr(), f, d, diagonal, out.as_mut_ptr()) };
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
        // SAFETY: the table is of a backend this CPU runs; `z` and `dz` hold `f * d`
        // elements (checked above) and `grad` every pair.
        unsafe {
            (self.table.pair_dots_backward)(z.as_ptr(), f, d, diagonal, grad, dz.as_mut_ptr())
        };
        Ok(())
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
