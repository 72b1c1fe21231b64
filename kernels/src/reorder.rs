//! Block layout changes the blocked MLP needs between its GEMMs: the transpose of a block,
//! and the VNNI-2 pairing of rows (see [`crate::vnni`]) and its inverse, for f32 and bf16
//! blocks. AVX-512 does them a 16 x 16 tile of 32-bit lanes at a time (a bf16 transpose
//! joins two rows into 32-bit pairs first), AVX2 an 8 x 8 tile (16-bit edges through a tile
//! on the stack); other CPUs run plain loops with the same result.
//!
//! ```
//! use dlrm_microkernels::reorder::Reorder;
//! use half::bf16;
//!
//! let r = Reorder::new()?;
//! // A 2 x 3 block and its transpose.
//! let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
//! let mut t = [0f32; 6];
//! r.transpose(&x, 2, 3, &mut t)?;
//! assert_eq!(t, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
//!
//! // VNNI-2: rows 0 and 1 interleaved; an odd last row is paired with zero.
//! let b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].map(bf16::from_f32);
//! let mut v = [bf16::ONE; 8];
//! r.pack_pairs(&b, 3, 2, &mut v)?;
//! assert_eq!(v.map(|x| x.to_f32()), [1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]);
//! let mut back = [bf16::ZERO; 6];
//! r.unpack_pairs(&v, 3, 2, &mut back)?;
//! assert_eq!(back, b);
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

use crate::backend::{self, Backend};
use crate::error::fits;
use crate::vnni::packed_len;
use crate::{Element, Isa, KernelError};

/// A backend's reorder on raw lanes of width `L`: `(src, a, b, dst)`.
type LaneKernel<L> = unsafe fn(*const L, usize, usize, *mut L);

/// Block transposes and VNNI-2 packing for the ISA chosen at construction.
///
/// ```
/// let r = dlrm_microkernels::reorder::Reorder::new()?;
/// let mut t = [0f32; 2];
/// r.transpose(&[1.0f32, 2.0], 1, 2, &mut t)?;
/// assert_eq!(t, [1.0, 2.0]);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reorder {
    table: &'static Backend,
}

impl Reorder {
    /// For the active ISA ([`Isa::active`]: the best this CPU has, or `DLRM_ISA`).
    ///
    /// # Errors
    ///
    /// As [`Isa::active`].
    ///
    /// ```
    /// assert!(dlrm_microkernels::reorder::Reorder::new().is_ok());
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
    /// use dlrm_microkernels::{Isa, reorder::Reorder};
    /// assert!(Reorder::with_isa(Isa::Portable).is_ok());
    /// ```
    pub fn with_isa(isa: Isa) -> Result<Self, KernelError> {
        Ok(Reorder {
            table: backend::get(isa)?,
        })
    }

    /// Run the table's kernel for `T`'s lane width on `(src, a, b, dst)`.
    ///
    /// # Safety
    ///
    /// `src` and `dst` hold what the kernel reads and writes for `a` and `b`.
    unsafe fn run<T: Element>(
        &self,
        (src, a, b, dst): (&[T], usize, usize, &mut [T]),
        wide: LaneKernel<u32>,
        narrow: LaneKernel<u16>,
    ) {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        // The table is of a backend this CPU runs; `T` is f32 or bf16 (sealed), whose bits
        // the kernels move as lanes of `T`'s width.
        match T::DTYPE.size_bytes() {
            // SAFETY: as said above, with 32-bit lanes, and the caller's extents.
            4 => unsafe { wide(s.cast(), a, b, d.cast()) },
            // SAFETY: as said above, with 16-bit lanes.
            _ => unsafe { narrow(s.cast(), a, b, d.cast()) },
        }
    }

    /// `dst[c * rows + r] = src[r * cols + c]`: the `cols x rows` transpose of a row-major
    /// `rows x cols` block. Values past `rows * cols` are not touched.
    ///
    /// # Errors
    ///
    /// [`KernelError::SliceTooShort`] if `src` or `dst` holds fewer than `rows * cols`
    /// values (nothing is written).
    ///
    /// ```
    /// use dlrm_microkernels::reorder::Reorder;
    /// use half::bf16;
    /// let r = Reorder::new()?;
    /// let x = [1.0, 2.0, 3.0, 4.0].map(bf16::from_f32);
    /// let mut t = [bf16::ZERO; 4];
    /// r.transpose(&x, 2, 2, &mut t)?;
    /// assert_eq!(t.map(|v| v.to_f32()), [1.0, 3.0, 2.0, 4.0]);
    /// assert!(r.transpose(&x, 2, 3, &mut t).is_err());
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn transpose<T: Element>(
        &self,
        src: &[T],
        rows: usize,
        cols: usize,
        dst: &mut [T],
    ) -> Result<(), KernelError> {
        let len = rows.saturating_mul(cols);
        fits("src", len, src.len())?;
        fits("dst", len, dst.len())?;
        let t = self.table;
        // SAFETY: both slices hold rows * cols values (checked above).
        unsafe { self.run((src, rows, cols, dst), t.transpose32, t.transpose16) };
        Ok(())
    }

    /// VNNI-2 pack of a row-major `k x n` block: `dst[(kk / 2) * 2n + 2j + kk % 2] =
    /// src[kk * n + j]`, the second half of the last pair zero when `k` is odd
    /// ([`crate::vnni::packed_len`] values written).
    ///
    /// # Errors
    ///
    /// [`KernelError::SliceTooShort`] if `src` holds fewer than `k * n` values or `dst`
    /// fewer than `packed_len(k, n)` (nothing is written).
    ///
    /// ```
    /// let r = dlrm_microkernels::reorder::Reorder::new()?;
    /// let mut v = [9f32; 4];
    /// r.pack_pairs(&[1.0f32, 2.0, 3.0, 4.0], 2, 2, &mut v)?;
    /// assert_eq!(v, [1.0, 3.0, 2.0, 4.0]);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn pack_pairs<T: Element>(
        &self,
        src: &[T],
        k: usize,
        n: usize,
        dst: &mut [T],
    ) -> Result<(), KernelError> {
        fits("src", k.saturating_mul(n), src.len())?;
        fits("dst", packed_len(k, n), dst.len())?;
        let t = self.table;
        // SAFETY: `src` holds k * n values and `dst` packed_len(k, n) (checked above).
        unsafe { self.run((src, k, n, dst), t.pack_pairs32, t.pack_pairs16) };
        Ok(())
    }

    /// The inverse of [`Reorder::pack_pairs`]: the row-major `k x n` block (`k * n` values
    /// written) from its VNNI-2 form; the padding of an odd `k` is ignored.
    ///
    /// # Errors
    ///
    /// As [`Reorder::pack_pairs`], with the roles of `src` and `dst` exchanged.
    ///
    /// ```
    /// let r = dlrm_microkernels::reorder::Reorder::new()?;
    /// let mut x = [0f32; 4];
    /// r.unpack_pairs(&[1.0f32, 3.0, 2.0, 4.0], 2, 2, &mut x)?;
    /// assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), dlrm_microkernels::KernelError>(())
    /// ```
    pub fn unpack_pairs<T: Element>(
        &self,
        src: &[T],
        k: usize,
        n: usize,
        dst: &mut [T],
    ) -> Result<(), KernelError> {
        fits("src", packed_len(k, n), src.len())?;
        fits("dst", k.saturating_mul(n), dst.len())?;
        let t = self.table;
        // SAFETY: `src` holds packed_len(k, n) values and `dst` k * n (checked above).
        unsafe { self.run((src, k, n, dst), t.unpack_pairs32, t.unpack_pairs16) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// Distinct, recognisable values (exact in bf16 up to 256).
    fn values<T: Element>(len: usize) -> Vec<T> {
        (0..len)
            .map(|i| T::from_f32((i % 251) as f32 + 1.0))
            .collect()
    }

    fn check_all<T: Element>() {
        for isa in Isa::available() {
            let r = Reorder::with_isa(isa).unwrap();
            for rows in [1, 2, 3, 15, 16, 17, 31, 32, 33, 64, 65] {
                for cols in [1, 2, 15, 16, 17, 33, 64, 100] {
                    let x = values::<T>(rows * cols);
                    // Transpose, with a sentinel past the end.
                    let mut t = vec![T::from_f32(-7.0); rows * cols + 1];
                    r.transpose(&x, rows, cols, &mut t).unwrap();
                    for i in 0..rows {
                        for j in 0..cols {
                            assert_eq!(t[j * rows + i], x[i * cols + j], "{isa:?} {rows}x{cols}");
                        }
                    }
                    assert_eq!(t[rows * cols], T::from_f32(-7.0));
                    // Pack (padding must be zero even over garbage) and unpack.
                    let len = packed_len(rows, cols);
                    let mut v = vec![T::from_f32(-7.0); len + 1];
                    r.pack_pairs(&x, rows, cols, &mut v).unwrap();
                    for kk in 0..rows.div_ceil(2) * 2 {
                        for j in 0..cols {
                            let want = if kk < rows {
                                x[kk * cols + j]
                            } else {
                                T::default()
                            };
                            assert_eq!(v[crate::vnni::index(kk, j, cols)], want);
                        }
                    }
                    assert_eq!(v[len], T::from_f32(-7.0));
                    let mut back = vec![T::from_f32(-7.0); rows * cols + 1];
                    r.unpack_pairs(&v, rows, cols, &mut back).unwrap();
                    assert_eq!(back[..rows * cols], x[..]);
                    assert_eq!(back[rows * cols], T::from_f32(-7.0));
                }
            }
        }
    }

    #[test]
    fn f32_blocks_on_every_isa() {
        check_all::<f32>();
    }

    #[test]
    fn bf16_blocks_on_every_isa() {
        check_all::<bf16>();
    }

    #[test]
    fn short_slices_are_reported_and_nothing_is_written() {
        let r = Reorder::new().unwrap();
        let mut dst = [0f32; 4];
        assert!(matches!(
            r.transpose(&[1.0f32; 3], 2, 2, &mut dst),
            Err(KernelError::SliceTooShort { operand: "src", .. })
        ));
        assert!(matches!(
            r.pack_pairs(&[1.0f32; 3], 3, 1, &mut dst[..3]),
            Err(KernelError::SliceTooShort {
                operand: "dst",
                needed: 4,
                ..
            })
        ));
        assert!(r.unpack_pairs(&[1.0f32; 3], 3, 1, &mut dst).is_err());
        assert_eq!(dst, [0.0; 4]);
    }
}
