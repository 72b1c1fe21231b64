//! AVX2 BRGEMM k steps: fp32 FMA, and bf16 widened to fp32, on the shared tile body.

use core::arch::x86_64::*;

use half::bf16;

use super::{Lanes, Ymm};
use crate::abi::{BatchPtrs, Params};
use crate::backend::x86::Vector;
use crate::backend::x86::tile::{self, Dot};

/// fp32: one FMA per k.
pub(crate) struct F32Fma;

impl Dot<Ymm> for F32Fma {
    type Elem = f32;
    type B = __m256;
    type A = __m256;
    const K_STEP: usize = 1;

    #[inline(always)]
    unsafe fn load_b(ptr: *const f32, mask: Lanes) -> __m256 {
        // SAFETY: lanes on `mask` are inside B (caller); others are not accessed. (A whole
        // vector is a plain load: the mask is the same on every k step, so the compiler
        // moves the test out of the loop and `vmaskmovps`, which takes a port the FMAs
        // need, stays on the last vector of partial tiles.)
        unsafe { Ymm::load(ptr, mask) }
    }
    #[inline(always)]
    unsafe fn load_b_tail(ptr: *const f32, mask: Lanes) -> __m256 {
        // SAFETY: as `load_b` (never reached: fp32 has no half steps).
        unsafe { Self::load_b(ptr, mask) }
    }
    #[inline(always)]
    unsafe fn bcast_a(ptr: *const f32) -> __m256 {
        // SAFETY: `ptr` points at an element of A (caller).
        unsafe { _mm256_broadcast_ss(&*ptr) }
    }
    #[inline(always)]
    unsafe fn bcast_a_tail(ptr: *const f32) -> __m256 {
        // SAFETY: as `bcast_a`.
        unsafe { Self::bcast_a(ptr) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: register-only FMA operation.
        unsafe { _mm256_fmadd_ps(a, b, acc) }
    }
}

/// bf16: each VNNI pair widened to two fp32 vectors (even k and odd k) and multiplied with
/// two FMAs. Products of two bf16 are exact in fp32, so this matches the portable kernel bit
/// for bit.
pub(crate) struct Bf16Widened;

/// The even-k (low half) and odd-k (high half) of 8 VNNI lanes, as fp32.
///
/// # Safety
///
/// The CPU has AVX2.
#[inline(always)]
unsafe fn split_pairs(v: __m256i) -> (__m256, __m256) {
    // SAFETY: register-only AVX2 operations.
    unsafe {
        let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
        let odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(!0xffff)));
        (even, odd)
    }
}

impl Dot<Ymm> for Bf16Widened {
    type Elem = bf16;
    type B = (__m256, __m256);
    type A = (__m256, __m256);
    const K_STEP: usize = 2;

    #[inline(always)]
    unsafe fn load_b(ptr: *const bf16, mask: Lanes) -> Self::B {
        // SAFETY: the 32-bit lanes on `mask` (column pairs) are inside B; others not
        // accessed (a whole vector is a plain load, as for fp32).
        unsafe { split_pairs(_mm256_castps_si256(Ymm::load(ptr.cast(), mask))) }
    }
    #[inline(always)]
    unsafe fn load_b_tail(ptr: *const bf16, mask: Lanes) -> Self::B {
        // SAFETY: as `load_b`; the padding half is dropped.
        unsafe {
            let (even, _) = Self::load_b(ptr, mask);
            (even, _mm256_setzero_ps())
        }
    }
    #[inline(always)]
    unsafe fn bcast_a(ptr: *const bf16) -> Self::A {
        // SAFETY: a full step: two consecutive elements of one A row exist at `ptr`.
        unsafe { split_pairs(_mm256_set1_epi32(ptr.cast::<i32>().read_unaligned())) }
    }
    #[inline(always)]
    unsafe fn bcast_a_tail(ptr: *const bf16) -> Self::A {
        // SAFETY: one element exists at `ptr`; the other half is zero.
        unsafe { split_pairs(_mm256_set1_epi32(i32::from((*ptr).to_bits()))) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256, a: Self::A, b: Self::B) -> __m256 {
        // SAFETY: register-only FMA operations.
        unsafe { _mm256_fmadd_ps(a.1, b.1, _mm256_fmadd_ps(a.0, b.0, acc)) }
    }
}

/// fp32 BRGEMM.
///
/// # Safety
///
/// As [`crate::abi::BrgemmFn`], with AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f32_f32(p: &Params, batch: &BatchPtrs<'_, f32>, c: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::brgemm::<Ymm, F32Fma, f32>(p, batch, c) }
}

/// bf16 x bf16 -> f32 BRGEMM, widening to fp32.
///
/// # Safety
///
/// As [`f32_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bf16_widen_f32(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::brgemm::<Ymm, Bf16Widened, f32>(p, batch, c) }
}

/// bf16 x bf16 -> bf16 BRGEMM, widening to fp32; C goes through a stack row where a tile's
/// last vector is not whole (AVX2 has no masked 16-bit loads).
///
/// # Safety
///
/// As [`f32_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bf16_widen_bf16(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut bf16) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::brgemm::<Ymm, Bf16Widened, bf16>(p, batch, c) }
}
