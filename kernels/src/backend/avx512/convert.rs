//! AVX-512 conversions between f32 and bf16, the Split-SGD split and join, and the SGD
//! updates.

use core::arch::x86_64::*;

use half::bf16;

use super::{lanes, round_to_bf16_bits, widen_bf16};

/// f32 -> bf16, round to nearest even (same bits as `half::bf16::from_f32`).
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `dst` is at least as long as `src`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    let n = src.len();
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr().cast::<i16>());
    let mut i = 0;
    // SAFETY: i + 16 <= n for full vectors, masked lanes below n for the tail; dst.len() >= n.
    unsafe {
        while i + 16 <= n {
            let v = round_to_bf16_bits(_mm512_loadu_ps(s.add(i)));
            _mm256_storeu_si256(d.add(i).cast(), _mm512_cvtepi32_epi16(v));
            i += 16;
        }
        if i < n {
            let m = lanes(n - i);
            let v = round_to_bf16_bits(_mm512_maskz_loadu_ps(m, s.add(i)));
            _mm512_mask_cvtepi32_storeu_epi16(d.add(i).cast(), m, v);
        }
    }
}

/// bf16 -> f32 (exact).
///
/// # Safety
///
/// As [`f32_to_bf16`], with `dst` at least as long as `src`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    let n = src.len();
    let (s, d) = (src.as_ptr().cast::<i16>(), dst.as_mut_ptr());
    let mut i = 0;
    // SAFETY: full vectors end at or before n; the tail is masked.
    unsafe {
        while i + 16 <= n {
            let v = widen_bf16(_mm256_loadu_si256(s.add(i).cast()));
            _mm512_storeu_ps(d.add(i), v);
            i += 16;
        }
        if i < n {
            let m = lanes(n - i);
            let v = widen_bf16(_mm256_maskz_loadu_epi16(m, s.add(i)));
            _mm512_mask_storeu_ps(d.add(i), m, v);
        }
    }
}

/// f32 -> (bf16 upper half, u16 lower half), by truncation.
///
/// # Safety
///
/// As [`f32_to_bf16`], with `hi` and `lo` at least as long as `src`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn split_f32(src: &[f32], hi: &mut [bf16], lo: &mut [u16]) {
    let n = src.len();
    let (s, h, l) = (
        src.as_ptr().cast::<i32>(),
        hi.as_mut_ptr().cast::<i16>(),
        lo.as_mut_ptr().cast::<i16>(),
    );
    let mut i = 0;
    // SAFETY: full vectors end at or before n; the tail is masked.
    unsafe {
        while i + 16 <= n {
            let bits = _mm512_loadu_si512(s.add(i).cast());
            _mm256_storeu_si256(
                h.add(i).cast(),
                _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(bits)),
            );
            _mm256_storeu_si256(l.add(i).cast(), _mm512_cvtepi32_epi16(bits));
            i += 16;
        }
        if i < n {
            let m = lanes(n - i);
            let bits = _mm512_maskz_loadu_epi32(m, s.add(i));
            _mm512_mask_cvtepi32_storeu_epi16(h.add(i).cast(), m, _mm512_srli_epi32::<16>(bits));
            _mm512_mask_cvtepi32_storeu_epi16(l.add(i).cast(), m, bits);
        }
    }
}

/// (bf16 upper half, u16 lower half) -> f32, exactly.
///
/// # Safety
///
/// As [`f32_to_bf16`], with `hi`, `lo` and `dst` of at least `dst.len()` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn join_f32(hi: &[bf16], lo: &[u16], dst: &mut [f32]) {
    let n = dst.len();
    let (h, l, d) = (
        hi.as_ptr().cast::<i16>(),
        lo.as_ptr().cast::<i16>(),
        dst.as_mut_ptr().cast::<i32>(),
    );
    let mut i = 0;
    // SAFETY: full vectors end at or before n; the tail is masked.
    unsafe {
        while i + 16 <= n {
            let hv = _mm512_cvtepu16_epi32(_mm256_loadu_si256(h.add(i).cast()));
            let lv = _mm512_cvtepu16_epi32(_mm256_loadu_si256(l.add(i).cast()));
            let v = _mm512_or_si512(_mm512_slli_epi32::<16>(hv), lv);
            _mm512_storeu_si512(d.add(i).cast(), v);
            i += 16;
        }
        if i < n {
            let m = lanes(n - i);
            let hv = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, h.add(i)));
            let lv = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, l.add(i)));
            let v = _mm512_or_si512(_mm512_slli_epi32::<16>(hv), lv);
            _mm512_mask_storeu_epi32(d.add(i), m, v);
        }
    }
}

/// `w -= lr * g` (multiply, then subtract: the same rounding as the portable path).
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `g` is at least as long as `w`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn sgd(w: &mut [f32], g: &[f32], lr: f32) {
    let n = w.len();
    let (wp, gp) = (w.as_mut_ptr(), g.as_ptr());
    let lrv = _mm512_set1_ps(lr);
    let mut i = 0;
    // SAFETY: full vectors end at or before n; the tail is masked.
    unsafe {
        while i + 16 <= n {
            let v = _mm512_sub_ps(
                _mm512_loadu_ps(wp.add(i)),
                _mm512_mul_ps(lrv, _mm512_loadu_ps(gp.add(i))),
            );
            _mm512_storeu_ps(wp.add(i), v);
            i += 16;
        }
        if i < n {
            let m = lanes(n - i);
            let v = _mm512_sub_ps(
                _mm512_maskz_loadu_ps(m, wp.add(i)),
                _mm512_mul_ps(lrv, _mm512_maskz_loadu_ps(m, gp.add(i))),
            );
            _mm512_mask_storeu_ps(wp.add(i), m, v);
        }
    }
}

/// Split-SGD on (hi, lo) halves, the same arithmetic as [`sgd`] on the joined weight.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `lo` and `g` are at least as long as `hi`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn split_sgd(hi: &mut [bf16], lo: &mut [u16], g: &[f32], lr: f32) {
    let n = hi.len();
    let (h, l, gp) = (
        hi.as_mut_ptr().cast::<i16>(),
        lo.as_mut_ptr().cast::<i16>(),
        g.as_ptr(),
    );
    let lrv = _mm512_set1_ps(lr);
    let mut i = 0;
    // SAFETY: full vectors end at or before n; the tail is masked (16-bit masked loads and
    // narrowing stores touch only lanes below n).
    unsafe {
        while i < n {
            let m = lanes(n - i);
            let hv = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, h.add(i)));
            let lv = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, l.add(i)));
            let w = _mm512_castsi512_ps(_mm512_or_si512(_mm512_slli_epi32::<16>(hv), lv));
            let w = _mm512_sub_ps(w, _mm512_mul_ps(lrv, _mm512_maskz_loadu_ps(m, gp.add(i))));
            let bits = _mm512_castps_si512(w);
            _mm512_mask_cvtepi32_storeu_epi16(h.add(i).cast(), m, _mm512_srli_epi32::<16>(bits));
            _mm512_mask_cvtepi32_storeu_epi16(l.add(i).cast(), m, bits);
            i += 16;
        }
    }
}
