//! AVX-512 BRGEMM k steps: fp32 FMA, and bf16 widened to fp32.

use core::arch::x86_64::*;

use half::bf16;

use super::Zmm;
use crate::abi::{BatchPtrs, Params};
use crate::backend::x86::tile::{self, Dot};

/// fp32: one FMA per k.
pub(crate) struct F32Fma;

impl Dot<Zmm> for F32Fma {
    type Elem = f32;
    type B = __m512;
    type A = __m512;
    const K_STEP: usize = 1;

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

impl Dot<Zmm> for Bf16Widened {
    type Elem = bf16;
    type B = (__m512, __m512);
    type A = (__m512, __m512);
    const K_STEP: usize = 2;

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
/// As [`crate::abi::BrgemmFn`], with AVX-512 F/BW/VL/DQ.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn f32_f32(p: &Params, batch: &BatchPtrs<'_, f32>, c: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::brgemm::<Zmm, F32Fma, f32>(p, batch, c) }
}

/// bf16 x bf16 -> f32 BRGEMM, widening to fp32.
///
/// # Safety
///
/// As [`f32_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn bf16_widen_f32(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::brgemm::<Zmm, Bf16Widened, f32>(p, batch, c) }
}

/// bf16 x bf16 -> bf16 BRGEMM, widening to fp32.
///
/// # Safety
///
/// As [`f32_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn bf16_widen_bf16(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut bf16) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::brgemm::<Zmm, Bf16Widened, bf16>(p, batch, c) }
}
