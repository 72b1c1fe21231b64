//! The AVX512-BF16 backend: the `avx512` backend's entries, plus bf16 BRGEMM on
//! `vdpbf16ps`, which multiplies one VNNI-2 pair of A by one pair of B per 32-bit lane and
//! adds both products to an fp32 accumulator, and its peak loop.
//!
//! Whether a bf16 GEMM uses `vdpbf16ps` or `avx512`'s widen-then-FMA body is the tuning
//! table's choice per CPU ([`crate::tuning`]): on some cores `vdpbf16ps` runs at half the
//! fp32 FMA rate, and widening is faster there.

use core::arch::x86_64::*;

use half::bf16;

use super::Backend;
use super::avx512::{self, Zmm};
use super::x86::tile::{self, Dot};
use crate::abi::{BatchPtrs, Bf16Brgemm, Params, PeakLoop};
use crate::{Isa, RegisterTile};

/// The AVX512-BF16 table: `avx512`'s entries, named one by one, with the bf16 dot-product
/// BRGEMM and peak loop added.
pub(crate) static BACKEND: Backend = Backend {
    isa: Isa::Avx512Bf16,
    lanes: 16,
    max_tile_f32: avx512::MAX_TILE_F32,
    max_tile_bf16: RegisterTile { rows: 14, cols: 4 },
    max_accumulators: 28,
    block: 64,
    whole_input_max: 128,
    brgemm_f32: avx512::brgemm::f32_f32,
    brgemm_bf16_widen: Bf16Brgemm {
        to_f32: avx512::brgemm::bf16_widen_f32,
        to_bf16: avx512::brgemm::bf16_widen_bf16,
    },
    brgemm_bf16_dot: Some(DOT),
    brgemm_bf16_tiles: None,
    brgemm_bf16_tiles_model: super::amx::model::MODEL,
    f32_to_bf16: avx512::convert::f32_to_bf16,
    bf16_to_f32: avx512::convert::bf16_to_f32,
    split_f32: avx512::convert::split_f32,
    join_f32: avx512::convert::join_f32,
    sgd: avx512::convert::sgd,
    split_sgd: avx512::convert::split_sgd,
    transpose32: avx512::reorder::transpose32,
    transpose16: avx512::reorder::transpose16,
    pack_pairs32: avx512::reorder::pack_pairs32,
    pack_pairs16: avx512::reorder::pack_pairs16,
    unpack_pairs32: super::portable::unpack_pairs::<u32>,
    unpack_pairs16: avx512::reorder::unpack_pairs16,
    pool: avx512::embedding::pool,
    apply: avx512::embedding::apply,
    pair_dots_forward: avx512::pair_dots::forward,
    pair_dots_backward: avx512::pair_dots::backward,
    sort_unique: avx512::sort::sort_unique,
    eltwise: avx512::ELTWISE,
    fma_peak: Some(avx512::FMA_PEAK),
    bf16_dot_peak: Some(DOT_PEAK),
    tile_peak: None,
};

/// The bf16 BRGEMM on `vdpbf16ps`.
pub(crate) const DOT: Bf16Brgemm = Bf16Brgemm {
    to_f32: bf16_dot_f32,
    to_bf16: bf16_dot_bf16,
};

/// The `vdpbf16ps` peak loop.
pub(crate) const DOT_PEAK: PeakLoop = PeakLoop {
    flops_per_iteration: avx512::PEAK_CHAINS as u64 * 64,
    run: bf16_dot_peak,
};

/// bf16 with `vdpbf16ps`: one instruction per k pair.
pub(crate) struct Bf16Dp;

/// Reinterpret 32 packed bf16 as the operand type of `vdpbf16ps`.
#[inline(always)]
fn as_bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte plain-bits SIMD types; every bit pattern is valid.
    unsafe { core::mem::transmute::<__m512i, __m512bh>(v) }
}

impl Dot<Zmm> for Bf16Dp {
    type Elem = bf16;
    type B = __m512bh;
    type A = __m512bh;
    const K_STEP: usize = 2;

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
/// As [`crate::abi::BrgemmFn`], with AVX-512 F/BW/VL/DQ and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
unsafe fn bf16_dot_f32(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::brgemm::<Zmm, Bf16Dp, f32>(p, batch, c) }
}

/// bf16 x bf16 -> bf16 BRGEMM on `vdpbf16ps`, rounded to nearest even on store.
///
/// # Safety
///
/// As [`bf16_dot_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
unsafe fn bf16_dot_bf16(p: &Params, batch: &BatchPtrs<'_, bf16>, c: *mut bf16) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::brgemm::<Zmm, Bf16Dp, bf16>(p, batch, c) }
}

/// `iterations` rounds of independent `vdpbf16ps` chains.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn bf16_dot_peak(iterations: u64) -> f32 {
    let x = std::hint::black_box(_mm512_cvtne2ps_pbh(
        _mm512_set1_ps(1e-3),
        _mm512_set1_ps(1e-3),
    ));
    let mut acc = [_mm512_setzero_ps(); avx512::PEAK_CHAINS];
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm512_dpbf16_ps(*a, x, x);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}
