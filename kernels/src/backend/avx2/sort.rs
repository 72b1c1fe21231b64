//! AVX2 sort of a short list with its repeats dropped: a bitonic network in ymm registers,
//! then one branch-free pass that keeps each value unlike the one before.

use core::arch::x86_64::*;

use super::Ymm;
use crate::backend::x86::Vector;

/// A bitonic sorting network over the `8 * NV` lanes of `v` (lane `i` of `v[a]` is element
/// `8 a + i`), ascending. At stage `(k, j)` element `e` is compared with `e ^ j` and keeps
/// the smaller one when `e & j == 0`, inside runs of `k` that alternate ascending
/// (`e & k == 0`) and descending, so each stage `k` leaves sorted runs of `k`.
///
/// # Safety
///
/// The CPU has AVX2.
#[inline(always)]
unsafe fn network<const NV: usize>(v: &mut [__m256i; NV]) {
    // SAFETY: register-only AVX2 operations, which the caller guarantees.
    unsafe {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        // Lanes whose index has `bit` set, as a blend mask.
        let with_bit = |bit: usize| {
            let b = _mm256_set1_epi32(bit as i32);
            _mm256_cmpeq_epi32(_mm256_and_si256(lane, b), b)
        };
        let mut k = 2;
        while k <= 8 * NV {
            let mut j = k / 2;
            while j > 0 {
                if j >= 8 {
                    // Partners sit in other registers, whole registers in one direction.
                    let step = j / 8;
                    for a in (0..NV).filter(|a| a & step == 0) {
                        let b = a + step;
                        let (lo, hi) = (_mm256_min_epu32(v[a], v[b]), _mm256_max_epu32(v[a], v[b]));
                        (v[a], v[b]) = if (8 * a) & k == 0 { (lo, hi) } else { (hi, lo) };
                    }
                } else {
                    let partner = _mm256_xor_si256(lane, _mm256_set1_epi32(j as i32));
                    let upper = with_bit(j);
                    for (a, va) in v.iter_mut().enumerate() {
                        // Lanes in descending runs: by lane below 8, by register above.
                        let descending = if k < 8 {
                            with_bit(k)
                        } else if (8 * a) & k != 0 {
                            _mm256_set1_epi32(-1)
                        } else {
                            _mm256_setzero_si256()
                        };
                        let p = _mm256_permutevar8x32_epi32(*va, partner);
                        let (lo, hi) = (_mm256_min_epu32(*va, p), _mm256_max_epu32(*va, p));
                        // The larger value where the lane is the upper partner of an
                        // ascending run or the lower one of a descending run.
                        *va = _mm256_blendv_epi8(lo, hi, _mm256_xor_si256(upper, descending));
                    }
                }
                j /= 2;
            }
            k *= 2;
        }
    }
}

/// Sort a list of at most `8 * NV` values in `NV` registers, in place (padded with
/// `u32::MAX`, which sorts last, so the first `len` lanes are the sorted list).
///
/// # Safety
///
/// The CPU has AVX2, and `values.len() <= 8 * NV`.
#[inline(always)]
unsafe fn sort_nv<const NV: usize>(values: &mut [u32]) {
    let (len, p) = (values.len(), values.as_mut_ptr().cast::<f32>());
    debug_assert!(len <= 8 * NV);
    // SAFETY: AVX2 is available (caller); register `a` covers elements `8 a ..`, and every
    // load and store is masked to the lanes below `len` (the bits are moved, never used as
    // floats).
    unsafe {
        let pad = _mm256_set1_epi32(-1);
        let mut v = [pad; NV];
        for (a, va) in v.iter_mut().enumerate() {
            let m = Ymm::first(len.saturating_sub(8 * a));
            let loaded = _mm256_castps_si256(Ymm::load(p.add(8 * a), m));
            // Lanes off the mask are read as zero: make them the padding.
            *va = _mm256_blendv_epi8(pad, loaded, m.bits());
        }
        network(&mut v);
        for (a, va) in v.iter().enumerate().take(len.div_ceil(8)) {
            Ymm::store(
                p.add(8 * a),
                Ymm::first(len - 8 * a),
                _mm256_castsi256_ps(*va),
            );
        }
    }
}

/// Move the distinct values of a sorted list to its front; returns how many.
#[inline(always)]
fn dedup_sorted(values: &mut [u32]) -> usize {
    if values.is_empty() {
        return 0;
    }
    let mut n = 1;
    for i in 1..values.len() {
        let x = values[i];
        values[n] = x;
        n += usize::from(x != values[n - 1]);
    }
    n
}

/// Sort and deduplicate up to [`crate::sort::SIMD_MAX`] values.
///
/// # Safety
///
/// The CPU has AVX2, and `values.len() <= SIMD_MAX`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sort_network(values: &mut [u32]) -> usize {
    // SAFETY: the ISA is the caller's guarantee; each arm's list fits its registers.
    unsafe {
        match values.len() {
            0 => return 0,
            1..=8 => sort_nv::<1>(values),
            9..=16 => sort_nv::<2>(values),
            17..=32 => sort_nv::<4>(values),
            33..=64 => sort_nv::<8>(values),
            _ => sort_nv::<16>(values),
        }
    }
    dedup_sorted(values)
}

/// The sort entry: the network for lists of up to `SIMD_MAX` values, the portable sort for
/// longer ones.
///
/// # Safety
///
/// The CPU has AVX2.
pub(crate) unsafe fn sort_unique(values: &mut [u32]) -> usize {
    if values.len() <= crate::sort::SIMD_MAX {
        // SAFETY: the CPU has AVX2 (caller) and the list fits the network.
        unsafe { sort_network(values) }
    } else {
        // SAFETY: the portable sort needs nothing.
        unsafe { crate::backend::portable::sort_unique(values) }
    }
}
