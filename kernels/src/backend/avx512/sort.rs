//! AVX-512 sort of a short list with its repeats dropped: a bitonic network in registers.

use core::arch::x86_64::*;

use super::lanes;

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
                        let (lo, hi) = (_mm512_min_epu32(v[a], v[b]), _mm512_max_epu32(v[a], v[b]));
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
unsafe fn sort_network(values: &mut [u32]) -> usize {
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

/// The sort entry: the network for lists of up to `SIMD_MAX` values, the portable sort for
/// longer ones.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ.
pub(crate) unsafe fn sort_unique(values: &mut [u32]) -> usize {
    if values.len() <= crate::sort::SIMD_MAX {
        // SAFETY: the CPU has AVX-512 (caller) and the list fits the network.
        unsafe { sort_network(values) }
    } else {
        // SAFETY: the portable sort needs nothing.
        unsafe { crate::backend::portable::sort_unique(values) }
    }
}
