//! AVX512-BF16 kernels: bf16 BRGEMM on `vdpbf16ps`, which multiplies one VNNI-2 pair of A by
//! one pair of B per 32-bit lane and adds both products to an fp32 accumulator.

#![cfg(target_arch = "x86_64")]

use core::arch::x86_64::*;

use half::bf16;

use crate::brgemm::{BatchPtrs, Params};
use crate::microkernel::{self, Dot, OutBf16, OutF32};

/// bf16 with `vdpbf16ps`: one instruction per k pair.
pub(crate) struct Bf16Dp;

/// Reinterpret 32 packed bf16 as the operand type of `vdpbf16ps`.
#[inline(always)]
fn as_bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte plain-bits SIMD types; every bit pattern is valid.
    unsafe { core::mem::transmute::<__m512i, __m512bh>(v) }
}

impl Dot for Bf16Dp {
    type Elem = bf16;
    type B = __m512bh;
    type A = __m512bh;
    const K_STEP: usize = 2;
    const MAX_ACC: usize = 24;

    #[inline(always)]
    unsafe fn load_b(ptr: *const bf16, mask: __mmask16) -> __m512bh {
        // SAFETY: the 32-bit lanes on `mask` (column pairs) are inside B; others not accessed.
        as_bh(unsafe { _mm512_maskz_loadu_epi32(mask, ptr.cast()) })
    }
    #[inline(always)]
    unsafe fn load_b_tail(ptr: *const bf16, mask: __mmask16) -> __m512bh {
        // SAFETY: as `load_b`; the padding half (high 16 bits) is cleared.
        as_bh(unsafe {
            _mm512_and_si512(
                _mm512_maskz_loadu_epi32(mask, ptr.cast()),
                _mm512_set1_epi32(0xffff),
            )
        })
    }
    #[inline(always)]
    unsafe fn bcast_a(ptr: *const bf16) -> __m512bh {
        // SAFETY: a full step: two consecutive elements of one A row exist at `ptr`.
        as_bh(unsafe { _mm512_set1_epi32(ptr.cast::<i32>().read_unaligned()) })
    }
    #[inline(always)]
    unsafe fn bcast_a_tail(ptr: *const bf16) -> __m512bh {
        // SAFETY: one element exists at `ptr`; the other half is zero.
        as_bh(unsafe { _mm512_set1_epi32(i32::from((*ptr).to_bits())) })
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512, a: __m512bh, b: __m512bh) -> __m512 {
        // SAFETY: register-only AVX512-BF16 operation; the CPU has it (caller).
        unsafe { _mm512_dpbf16_ps(acc, a, b) }
    }
}

/// bf16 x bf16 -> f32 BRGEMM on `vdpbf16ps`.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ and AVX512-BF16, and `Brgemm::run` validated every access.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
pub(crate) unsafe fn brgemm_bf16_f32(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe { microkernel::brgemm::<Bf16Dp, OutF32>(p, batch, c) }
}

/// bf16 x bf16 -> bf16 BRGEMM on `vdpbf16ps`, rounded to nearest even on store.
///
/// # Safety
///
/// As [`brgemm_bf16_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
pub(crate) unsafe fn brgemm_bf16_bf16(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut bf16) {
    // SAFETY: forwarded from the caller.
    unsafe { microkernel::brgemm::<Bf16Dp, OutBf16>(p, batch, c) }
}
