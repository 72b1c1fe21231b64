//! Split-SGD's bit tricks, in one place: an fp32 master weight stored as its upper 16 bits
//! (a bf16, truncated, which the passes read) and its lower 16 bits (a `u16`), 4 bytes in
//! all, so an update is exact fp32 and a bf16 model follows its fp32 twin bit for bit.
//!
//! ```
//! use dlrm_kernels::split_sgd::{join, split};
//! let (hi, lo) = split(0.1);
//! assert_eq!(hi.to_bits(), (0.1f32.to_bits() >> 16) as u16);
//! assert_eq!(join(hi, lo), 0.1);
//! ```

use crate::bf16;

/// The (upper, lower) halves of `x`'s bits: `x` truncated to bf16, and the rest.
///
/// ```
/// let (hi, lo) = dlrm_kernels::split_sgd::split(1.0);
/// assert_eq!((hi.to_f32(), lo), (1.0, 0));
/// ```
#[inline]
pub fn split(x: f32) -> (bf16, u16) {
    let bits = x.to_bits();
    (bf16::from_bits((bits >> 16) as u16), bits as u16)
}

/// The fp32 value whose halves are `hi` and `lo`.
///
/// ```
/// use dlrm_kernels::bf16;
/// assert_eq!(dlrm_kernels::split_sgd::join(bf16::from_bits(0x3f80), 0), 1.0);
/// ```
#[inline]
pub fn join(hi: bf16, lo: u16) -> f32 {
    f32::from_bits((u32::from(hi.to_bits()) << 16) | u32::from(lo))
}

/// Store `values` as halves: `hi[i], lo[i] = split(values[i])` (the shortest length wins).
///
/// ```
/// use dlrm_kernels::split_sgd::{join, split_into};
/// let (mut hi, mut lo) = (vec![Default::default(); 2], vec![0u16; 2]);
/// split_into(&[0.3, -7.1], &mut hi, &mut lo);
/// assert_eq!(join(hi[1], lo[1]), -7.1);
/// ```
pub fn split_into(values: &[f32], hi: &mut [bf16], lo: &mut [u16]) {
    for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(values) {
        (*h, *l) = split(x);
    }
}

/// The fp32 values of halves: `join(hi[i], lo[i])` (the shorter length wins).
///
/// ```
/// use dlrm_kernels::split_sgd::{joined, split};
/// let (hi, lo) = split(2.5);
/// assert_eq!(joined(&[hi], &[lo]), vec![2.5]);
/// ```
pub fn joined(hi: &[bf16], lo: &[u16]) -> Vec<f32> {
    hi.iter().zip(lo).map(|(&h, &l)| join(h, l)).collect()
}

/// `x` with its lower half cleared: the bf16 upper half, widened back to f32 (exact).
///
/// ```
/// assert_eq!(dlrm_kernels::split_sgd::upper(f32::from_bits(0x3f80_1234)), 1.0);
/// ```
#[inline]
pub fn upper(x: f32) -> f32 {
    f32::from_bits(x.to_bits() & 0xffff_0000)
}

/// [`join`] with the upper half given widened to f32 (as [`upper`] makes it).
///
/// ```
/// use dlrm_kernels::split_sgd::{join_widened, split, upper};
/// let (_, lo) = split(0.1);
/// assert_eq!(join_widened(upper(0.1), lo), 0.1);
/// ```
#[inline]
pub fn join_widened(upper: f32, lo: u16) -> f32 {
    f32::from_bits(upper.to_bits() | u32::from(lo))
}
