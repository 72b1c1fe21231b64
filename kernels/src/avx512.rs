//! AVX-512 (F, BW, VL, DQ) kernels: fp32 FMA, bf16 widened to fp32, and the bf16
//! conversions. Thin `#[target_feature]` shims around the generic bodies.

#![cfg(target_arch = "x86_64")]

use core::arch::x86_64::*;

use half::bf16;

use crate::brgemm::{BatchPtrs, Params};
use crate::microkernel::{self, Dot, OutBf16, OutF32, round_to_bf16_bits, widen_bf16};

/// fp32: one FMA per k.
pub(crate) struct F32Fma;

impl Dot for F32Fma {
    type Elem = f32;
    type B = __m512;
    type A = __m512;
    const K_STEP: usize = 1;
    const MAX_ACC: usize = 24;

    #[inline(always)]
    unsafe fn load_b(ptr: *const f32, mask: __mmask16) -> __m512 {
        // SAFETY: lanes on `mask` are inside B (caller); others are not accessed.
        unsafe { _mm512_maskz_loadu_ps(mask, ptr) }
    }
    #[inline(always)]
    unsafe fn load_b_tail(ptr: *const f32, mask: __mmask16) -> __m512 {
        // SAFETY: as `load_b` (never reached: fp32 has no half steps).
        unsafe { Self::load_b(ptr, mask) }
    }
    #[inline(always)]
    unsafe fn bcast_a(ptr: *const f32) -> __m512 {
        // SAFETY: `ptr` points at an element of A (caller).
        unsafe { _mm512_set1_ps(*ptr) }
    }
    #[inline(always)]
    unsafe fn bcast_a_tail(ptr: *const f32) -> __m512 {
        // SAFETY: as `bcast_a`.
        unsafe { Self::bcast_a(ptr) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512, a: __m512, b: __m512) -> __m512 {
        // SAFETY: register-only AVX-512F operation.
        unsafe { _mm512_fmadd_ps(a, b, acc) }
    }
}

/// bf16 on CPUs without `vdpbf16ps`: each VNNI pair is widened to two fp32 vectors (even k
/// and odd k) and multiplied with two FMAs. Products of two bf16 are exact in fp32, so this
/// matches the portable kernel bit for bit.
pub(crate) struct Bf16Widened;

/// The even-k (low half) and odd-k (high half) of 16 VNNI lanes, as fp32.
#[inline(always)]
unsafe fn split_pairs(v: __m512i) -> (__m512, __m512) {
    // SAFETY: register-only AVX-512F operations.
    unsafe {
        let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
        let odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(!0xffff)));
        (even, odd)
    }
}

impl Dot for Bf16Widened {
    type Elem = bf16;
    type B = (__m512, __m512);
    type A = (__m512, __m512);
    const K_STEP: usize = 2;
    const MAX_ACC: usize = 20;

    #[inline(always)]
    unsafe fn load_b(ptr: *const bf16, mask: __mmask16) -> Self::B {
        // SAFETY: the 32-bit lanes on `mask` (column pairs) are inside B; others not accessed.
        unsafe { split_pairs(_mm512_maskz_loadu_epi32(mask, ptr.cast())) }
    }
    #[inline(always)]
    unsafe fn load_b_tail(ptr: *const bf16, mask: __mmask16) -> Self::B {
        // SAFETY: as `load_b`; the padding half is dropped.
        unsafe {
            let (even, _) = Self::load_b(ptr, mask);
            (even, _mm512_setzero_ps())
        }
    }
    #[inline(always)]
    unsafe fn bcast_a(ptr: *const bf16) -> Self::A {
        // SAFETY: a full step: two consecutive elements of one A row exist at `ptr`.
        unsafe { split_pairs(_mm512_set1_epi32(ptr.cast::<i32>().read_unaligned())) }
    }
    #[inline(always)]
    unsafe fn bcast_a_tail(ptr: *const bf16) -> Self::A {
        // SAFETY: one element exists at `ptr`; the other half is zero.
        unsafe { split_pairs(_mm512_set1_epi32(i32::from((*ptr).to_bits()))) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512, a: Self::A, b: Self::B) -> __m512 {
        // SAFETY: register-only AVX-512F operations.
        unsafe { _mm512_fmadd_ps(a.1, b.1, _mm512_fmadd_ps(a.0, b.0, acc)) }
    }
}

/// fp32 BRGEMM.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ, and `Brgemm::run` validated every access.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn brgemm_f32(p: &Params, batch: &BatchPtrs<'_, f32>, c: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe { microkernel::brgemm::<F32Fma, OutF32>(p, batch, c) }
}

/// bf16 x bf16 -> f32 BRGEMM, widening to fp32.
///
/// # Safety
///
/// As [`brgemm_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn brgemm_bf16_f32(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe { microkernel::brgemm::<Bf16Widened, OutF32>(p, batch, c) }
}

/// bf16 x bf16 -> bf16 BRGEMM, widening to fp32.
///
/// # Safety
///
/// As [`brgemm_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn brgemm_bf16_bf16(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut bf16) {
    // SAFETY: forwarded from the caller.
    unsafe { microkernel::brgemm::<Bf16Widened, OutBf16>(p, batch, c) }
}

/// Mask of the first `len` (< 16) lanes.
#[inline(always)]
fn tail_mask(len: usize) -> __mmask16 {
    ((1u32 << len) - 1) as __mmask16
}

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
            let m = tail_mask(n - i);
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
            let m = tail_mask(n - i);
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
            let m = tail_mask(n - i);
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
            let m = tail_mask(n - i);
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
            let m = tail_mask(n - i);
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
            let m = if i + 16 <= n { !0 } else { tail_mask(n - i) };
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
