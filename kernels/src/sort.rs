//! Sorting a short list of `u32` and dropping its repeats, in place: what the DLRM
//! reference's random generator does to every bag (`np.unique` of a few tens of indices),
//! hundreds of thousands of times per batch.
//!
//! On AVX-512 a list of up to [`SIMD_MAX`] values is padded with `u32::MAX` to 16, 32, 64 or
//! 128 lanes, held in registers, sorted by a bitonic network (a fixed sequence of lane
//! shuffles, minimums and maximums: no branches on the data), and written back without its
//! repeats, each register compressed by a mask of the lanes that differ from the lane before.
//! Longer lists, and other CPUs, use the standard library's sort and a dedup pass. The result
//! is the same on every path: the sorted distinct values.
//!
//! ```
//! use dlrm_microkernels::sort::sort_unique;
//!
//! let mut bag = [7u32, 3, 7, 1, 3];
//! let n = sort_unique(&mut bag);
//! assert_eq!(&bag[..n], &[1, 3, 7]);
//! ```

use crate::{Isa, KernelError};

/// The longest list the AVX-512 network sorts (eight registers); longer lists take the
/// standard library's sort on every ISA.
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

/// [`sort_unique`] on `isa`, which the caller checked is available.
fn run(isa: Isa, values: &mut [u32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 && values.len() <= SIMD_MAX {
        // SAFETY: AVX-512 is available (`isa` was checked by the callers) and the list fits
        // the network.
        return unsafe { avx512::sort_unique(values) };
    }
    let _ = isa;
    values.sort_unstable();
    let mut n = 0;
    for i in 0..values.len() {
        if n == 0 || values[i] != values[n - 1] {
            values[n] = values[i];
            n += 1;
        }
    }
    n
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    use crate::avx512::lanes;

    /// Lanes whose index has bit `bit` set (`bit` = 1, 2, 4 or 8).
    #[inline(always)]
    fn with_bit(bit: usize) -> __mmask16 {
        match bit {
            1 => 0xAAAA,
            2 => 0xCCCC,
            4 => 0xF0F0,
            _ => 0xFF00,
        }
    }

    /// A bitonic sorting network over the `16 * NV` lanes of `v` (lane `i` of `v[a]` is
    /// element `16 a + i`), ascending. At stage `(k, j)` element `e` is compared with
    /// `e ^ j` and keeps the smaller one when `e & j == 0`, inside runs of `k` that alternate
    /// ascending (`e & k == 0`) and descending, so each stage `k` leaves sorted runs of `k`.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F.
    #[inline(always)]
    unsafe fn network<const NV: usize>(v: &mut [__m512i; NV]) {
        // SAFETY: register-only AVX-512F operations, which the caller guarantees.
        unsafe {
            let lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
            let mut k = 2;
            while k <= 16 * NV {
                let mut j = k / 2;
                while j > 0 {
                    if j >= 16 {
                        // Partners sit in other registers, whole registers in one direction.
                        let step = j / 16;
                        for a in (0..NV).filter(|a| a & step == 0) {
                            let b = a + step;
                            let (lo, hi) =
                                (_mm512_min_epu32(v[a], v[b]), _mm512_max_epu32(v[a], v[b]));
                            (v[a], v[b]) = if (16 * a) & k == 0 {
                                (lo, hi)
                            } else {
                                (hi, lo)
                            };
                        }
                    } else {
                        let partner = _mm512_xor_si512(lane, _mm512_set1_epi32(j as i32));
                        for (a, va) in v.iter_mut().enumerate() {
                            // Lanes in descending runs: by lane below 16, by register above.
                            let descending = if k < 16 {
                                with_bit(k)
                            } else if (16 * a) & k != 0 {
                                !0
                            } else {
                                0
                            };
                            let p = _mm512_permutexvar_epi32(partner, *va);
                            let lo = _mm512_min_epu32(*va, p);
                            // The larger value where the lane is the upper partner of an
                            // ascending run or the lower one of a descending run.
                            *va = _mm512_mask_max_epu32(lo, with_bit(j) ^ descending, *va, p);
                        }
                    }
                    j /= 2;
                }
                k *= 2;
            }
        }
    }

    /// Sort and deduplicate a list of at most `16 * NV` values in `NV` registers.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512F, and `values.len() <= 16 * NV`.
    #[inline(always)]
    unsafe fn sort_unique_nv<const NV: usize>(values: &mut [u32]) -> usize {
        let (len, p) = (values.len(), values.as_mut_ptr());
        debug_assert!(len <= 16 * NV);
        let mut out = 0;
        // SAFETY: AVX-512F is available (caller); every load and store is masked to lanes
        // below `len` (register `a` covers elements `16 a ..`), and the compressed stores
        // write `out + n <= 16 a + 16` elements, at most as many as have been read.
        unsafe {
            let pad = _mm512_set1_epi32(-1);
            let mut v = [pad; NV];
            for (a, va) in v.iter_mut().enumerate() {
                *va = _mm512_mask_loadu_epi32(
                    pad,
                    lanes(len.saturating_sub(16 * a)),
                    p.add(16 * a).cast(),
                );
            }
            network(&mut v);
            // Lane 15 of `prev` is the element before the register's first.
            let mut prev = _mm512_set1_epi32(-1);
            for (a, va) in v.iter().enumerate() {
                if 16 * a >= len {
                    break;
                }
                let before = _mm512_alignr_epi32(*va, prev, 15);
                let mut keep = _mm512_cmpneq_epu32_mask(*va, before) & lanes(len - 16 * a);
                if a == 0 {
                    keep |= 1; // the first element has nothing before it
                }
                let n = keep.count_ones() as usize;
                _mm512_mask_storeu_epi32(
                    p.add(out).cast(),
                    lanes(n),
                    _mm512_maskz_compress_epi32(keep, *va),
                );
                out += n;
                prev = *va;
            }
        }
        out
    }

    /// [`super::sort_unique`] for up to [`super::SIMD_MAX`] values.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512 F, BW, VL and DQ, and `values.len() <= SIMD_MAX`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn sort_unique(values: &mut [u32]) -> usize {
        // SAFETY: the ISA is the caller's guarantee; each arm's list fits its registers.
        unsafe {
            match values.len() {
                0 => 0,
                1..=16 => sort_unique_nv::<1>(values),
                17..=32 => sort_unique_nv::<2>(values),
                33..=64 => sort_unique_nv::<4>(values),
                _ => sort_unique_nv::<8>(values),
            }
        }
    }
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
