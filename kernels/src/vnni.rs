//! The VNNI-2 layout of bf16 B operands, and packing to and from row-major.
//!
//! A `k x n` matrix with leading dimension `ld` (in columns) is stored as `[ceil(k/2)][ld][2]`:
//! element `(kk, j)` at `(kk / 2) * 2 * ld + 2 * j + kk % 2`. Each 32-bit lane holds rows
//! `2p` and `2p + 1` of one column, the operand shape `vdpbf16ps` multiplies. For odd `k` the
//! second half of the last pair is padding; [`pack`] writes zero there.
//!
//! ```
//! use dlrm_microkernels::vnni;
//! use half::bf16;
//!
//! // 3 x 2 row-major -> VNNI-2 (k odd: the last pair is padded with zero).
//! let rows: Vec<bf16> = (1..=6).map(|x| bf16::from_f32(x as f32)).collect();
//! let mut packed = vec![bf16::ONE; vnni::packed_len(3, 2)];
//! vnni::pack(&rows, 3, 2, 2, &mut packed, 2)?;
//! let as_f32: Vec<f32> = packed.iter().map(|x| x.to_f32()).collect();
//! assert_eq!(as_f32, [1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]);
//!
//! let mut back = vec![bf16::ZERO; 6];
//! vnni::unpack(&packed, 3, 2, 2, &mut back, 2)?;
//! assert_eq!(back, rows);
//! # Ok::<(), dlrm_microkernels::KernelError>(())
//! ```

use half::bf16;

use crate::KernelError;

/// Elements a tightly packed (`ld = n`) VNNI-2 `k x n` matrix occupies: `ceil(k/2) * 2 * n`.
///
/// ```
/// assert_eq!(dlrm_microkernels::vnni::packed_len(5, 4), 24);
/// ```
pub fn packed_len(k: usize, n: usize) -> usize {
    k.div_ceil(2) * 2 * n
}

/// Index of element (`kk`, `j`) in a VNNI-2 matrix with leading dimension `ld`.
///
/// ```
/// assert_eq!(dlrm_microkernels::vnni::index(3, 1, 4), 8 + 2 + 1);
/// ```
#[inline]
pub fn index(kk: usize, j: usize, ld: usize) -> usize {
    (kk / 2) * 2 * ld + 2 * j + kk % 2
}

/// One side of a pack/unpack: its name (for errors), slice length and leading dimension.
struct Side {
    name: &'static str,
    len: usize,
    ld: usize,
}

fn check(k: usize, n: usize, row_major: Side, packed: Side) -> Result<(), KernelError> {
    for side in [&row_major, &packed] {
        if side.ld < n {
            return Err(KernelError::LeadingDimension {
                name: side.name,
                value: side.ld,
                min_name: "n",
                min: n,
            });
        }
    }
    if k == 0 || n == 0 {
        return Ok(());
    }
    let ovf = KernelError::Overflow {
        what: "a VNNI-2 extent",
    };
    let rm_need = (k - 1)
        .checked_mul(row_major.ld)
        .and_then(|x| x.checked_add(n))
        .ok_or(ovf.clone())?;
    let vnni_need = (k.div_ceil(2) - 1)
        .checked_mul(2 * packed.ld)
        .and_then(|x| x.checked_add(2 * n))
        .ok_or(ovf)?;
    for (side, needed) in [(row_major, rm_need), (packed, vnni_need)] {
        if side.len < needed {
            return Err(KernelError::SliceTooShort {
                operand: side.name,
                batch_index: None,
                needed,
                len: side.len,
            });
        }
    }
    Ok(())
}

/// Pack a row-major `k x n` matrix (leading dimension `ld_src`) into VNNI-2 (leading
/// dimension `ld_dst`). For odd `k` the padding half of the last pair is set to zero;
/// columns `n..ld_dst` are not touched.
///
/// # Errors
///
/// [`KernelError::LeadingDimension`] if `ld_src` or `ld_dst` is below `n`,
/// [`KernelError::SliceTooShort`] if a slice is too short; nothing is written then.
///
/// ```
/// use dlrm_microkernels::vnni;
/// use half::bf16;
/// let src = [bf16::ONE; 4];
/// let mut dst = [bf16::ZERO; 3];
/// assert!(vnni::pack(&src, 2, 2, 2, &mut dst, 2).is_err()); // needs 4
/// ```
pub fn pack(
    src: &[bf16],
    k: usize,
    n: usize,
    ld_src: usize,
    dst: &mut [bf16],
    ld_dst: usize,
) -> Result<(), KernelError> {
    let row_major = Side {
        name: "src",
        len: src.len(),
        ld: ld_src,
    };
    check(
        k,
        n,
        row_major,
        Side {
            name: "dst",
            len: dst.len(),
            ld: ld_dst,
        },
    )?;
    for kk in 0..k.div_ceil(2) * 2 {
        for j in 0..n {
            dst[index(kk, j, ld_dst)] = if kk < k {
                src[kk * ld_src + j]
            } else {
                bf16::ZERO
            };
        }
    }
    Ok(())
}

/// Unpack a VNNI-2 `k x n` matrix (leading dimension `ld_src`) into row-major (leading
/// dimension `ld_dst`); the padding of odd `k` is ignored.
///
/// # Errors
///
/// As [`pack`].
///
/// ```
/// use dlrm_microkernels::vnni;
/// use half::bf16;
/// let packed = [1.0, 3.0, 2.0, 4.0].map(bf16::from_f32);
/// let mut rows = [bf16::ZERO; 4];
/// vnni::unpack(&packed, 2, 2, 2, &mut rows, 2)?;
/// assert_eq!(rows.map(|x| x.to_f32()), [1.0, 2.0, 3.0, 4.0]);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
pub fn unpack(
    src: &[bf16],
    k: usize,
    n: usize,
    ld_src: usize,
    dst: &mut [bf16],
    ld_dst: usize,
) -> Result<(), KernelError> {
    let row_major = Side {
        name: "dst",
        len: dst.len(),
        ld: ld_dst,
    };
    check(
        k,
        n,
        row_major,
        Side {
            name: "src",
            len: src.len(),
            ld: ld_src,
        },
    )?;
    for kk in 0..k {
        for j in 0..n {
            dst[kk * ld_dst + j] = src[index(kk, j, ld_src)];
        }
    }
    Ok(())
}
