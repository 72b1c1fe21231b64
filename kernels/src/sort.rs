//! Sorting a short list of `u32` and dropping its repeats, in place: what the DLRM
//! reference's random generator does to every bag (`np.unique` of a few tens of indices),
//! hundreds of thousands of times per batch.
//!
//! On AVX-512 a list of up to [`SIMD_MAX`] values is padded with `u32::MAX` to 16, 32, 64 or
//! 128 lanes, held in registers, sorted by a bitonic network (a fixed sequence of lane
//! shuffles, minimums and maximums: no branches on the data), and written back without its
//! repeats, each register compressed by a mask of the lanes that differ from the lane before.
//! AVX2 runs the same network on 8 to 128 lanes of ymm registers and drops the repeats in one
//! branch-free pass afterwards. Longer lists, and other CPUs, use the standard library's sort
//! and a dedup pass. The result is the same on every path: the sorted distinct values.
//!
//! ```
//! use dlrm_microkernels::sort::sort_unique;
//!
//! let mut bag = [7u32, 3, 7, 1, 3];
//! let n = sort_unique(&mut bag);
//! assert_eq!(&bag[..n], &[1, 3, 7]);
//! ```

use crate::backend;
use crate::{Isa, KernelError};

/// The longest list the SIMD networks sort (eight zmm or sixteen ymm registers); longer lists
/// take the standard library's sort on every ISA.
///
/// ```
/// assert_eq!(dlrm_microkernels::sort::SIMD_MAX, 128);
/// ```
pub const SIMD_MAX: usize = 128;

/// Sort `values` ascending and move its distinct values to the front: afterwards
/// `values[..n]` holds them, strictly increasing, where `n` is the returned count. What
/// `values[n..]` holds is unspecified. Runs on the active ISA ([`Isa::active`]; the portable
/// path when detection fails).
///
/// ```
/// let mut v: Vec<u32> = (0..100).rev().map(|i| i / 2).collect(); // 49, 49, 48, 48, ..
/// let n = dlrm_microkernels::sort::sort_unique(&mut v);
/// assert_eq!(v[..n], (0..50).collect::<Vec<u32>>()[..]);
/// ```
pub fn sort_unique(values: &mut [u32]) -> usize {
    run(Isa::active().unwrap_or(Isa::Portable), values)
}

/// [`sort_unique`] on a given ISA, for tests and comparisons.
///
/// # Errors
///
/// [`KernelError::IsaUnavailable`] if this CPU lacks `isa` (nothing is changed).
///
/// ```
/// use dlrm_microkernels::{Isa, sort::sort_unique_on};
/// let mut v = [2u32, 1, 2];
/// assert_eq!(sort_unique_on(Isa::Portable, &mut v)?, 2);
/// assert_eq!(v[..2], [1, 2]);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
pub fn sort_unique_on(isa: Isa, values: &mut [u32]) -> Result<usize, KernelError> {
    Ok(run(isa.require()?, values))
}

fn run(isa: Isa, values: &mut [u32]) -> usize {
    let table = backend::get(isa).unwrap_or(&backend::portable::BACKEND);
    // SAFETY: the table is of a backend this CPU runs.
    unsafe { (table.sort_unique)(values) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every path must give: the sorted distinct values.
    fn expected(v: &[u32]) -> Vec<u32> {
        let mut w = v.to_vec();
        w.sort_unstable();
        w.dedup();
        w
    }

    #[test]
    fn every_isa_gives_the_sorted_distinct_values() {
        let mut state = 3u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 32) as u32
        };
        for isa in Isa::available() {
            // Every length through the network sizes and past them, with values from a
            // wide range (few repeats), a narrow one (many), and the padding value itself.
            for len in 0..=2 * SIMD_MAX + 3 {
                for range in [u32::MAX, 7, 1000] {
                    let mut v: Vec<u32> = (0..len).map(|_| next() % range).collect();
                    if len % 5 == 1 {
                        v[len / 2] = u32::MAX;
                    }
                    let want = expected(&v);
                    // A sentinel past the end must survive.
                    v.push(12345);
                    let n = sort_unique_on(isa, &mut v[..len]).unwrap();
                    assert_eq!(v[..n], want[..], "{isa:?}, {len} values below {range}");
                    assert_eq!(v[len], 12345, "{isa:?}, {len} values: wrote past the end");
                }
            }
            // Already sorted, reversed, all equal.
            for v in [
                (0..100).collect::<Vec<u32>>(),
                (0..100).rev().collect(),
                vec![9; 77],
            ] {
                let mut w = v.clone();
                let n = sort_unique_on(isa, &mut w).unwrap();
                assert_eq!(w[..n], expected(&v)[..], "{isa:?}");
            }
        }
    }
}
