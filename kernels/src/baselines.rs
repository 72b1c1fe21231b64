//! Other crates' GEMMs behind safe, checked wrappers, for comparison benchmarks only
//! (feature `baselines`; not part of the library's API promise).
//!
//! Both compute `C[m x n] = A[m x k] * B[k x n]` on dense row-major slices, on one thread.
//!
//! ```
//! use dlrm_microkernels::baselines;
//! let a = [1.0f32, 2.0, 3.0, 4.0];
//! let mut c = [0.0f32; 4];
//! baselines::gemm_crate(2, 2, 2, &a, &a, &mut c)?;
//! assert_eq!(c, [7.0, 10.0, 15.0, 22.0]);
//! baselines::matrixmultiply(2, 2, 2, &a, &a, &mut c)?;
//! assert_eq!(c, [7.0, 10.0, 15.0, 22.0]);
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

use crate::KernelError;

fn check(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &[f32]) -> Result<(), KernelError> {
    for (operand, needed, len) in [
        ("A", m * k, a.len()),
        ("B", k * n, b.len()),
        ("C", m * n, c.len()),
    ] {
        if len < needed {
            return Err(KernelError::SliceTooShort {
                operand,
                batch_index: None,
                needed,
                len,
            });
        }
    }
    Ok(())
}

/// `C = A B` with the `gemm` crate (its AVX-512 path on where the CPU has it), one thread.
///
/// # Errors
///
/// [`KernelError::SliceTooShort`] if a slice is shorter than its matrix.
///
/// ```
/// let mut c = [0.0f32; 1];
/// dlrm_microkernels::baselines::gemm_crate(1, 1, 1, &[2.0], &[3.0], &mut c)?;
/// assert_eq!(c, [6.0]);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
pub fn gemm_crate(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> Result<(), KernelError> {
    check(m, n, k, a, b, c)?;
    // SAFETY: the slices hold m*k, k*n and m*n elements (checked), the strides describe dense
    // row-major matrices inside them, and C does not alias A or B (&mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
    Ok(())
}

/// `C = A B` with `matrixmultiply::sgemm`, one thread.
///
/// # Errors
///
/// [`KernelError::SliceTooShort`] if a slice is shorter than its matrix.
///
/// ```
/// let mut c = [0.0f32; 1];
/// dlrm_microkernels::baselines::matrixmultiply(1, 1, 1, &[2.0], &[3.0], &mut c)?;
/// assert_eq!(c, [6.0]);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
pub fn matrixmultiply(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> Result<(), KernelError> {
    check(m, n, k, a, b, c)?;
    // SAFETY: as in `gemm_crate`: dense row-major matrices inside checked slices, no aliasing.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    };
    Ok(())
}
