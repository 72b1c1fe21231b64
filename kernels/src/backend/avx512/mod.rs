//! The AVX-512 backend (F, BW, VL, DQ): zmm registers with 16-lane `k` masks for every
//! operation; bf16 GEMMs widen each VNNI pair to fp32 and use two FMAs.
//!
//! Thin `#[target_feature]` shims around generic bodies: the shared x86 bodies
//! ([`crate::backend::x86`]: BRGEMM tiles, embedding bags, conversions, pair dots)
//! instantiated with [`Zmm`], the portable element-wise bodies compiled again for zmm, and
//! this backend's own register networks (reorders, sort) in the submodules.

use core::arch::x86_64::*;

use half::bf16;

use super::Backend;
use super::portable;
use super::x86::Vector;
use crate::abi::{Bf16Brgemm, PeakLoop};
use crate::{Isa, RegisterTile};

pub(crate) mod brgemm;
pub(crate) mod convert;
pub(crate) mod embedding;
pub(crate) mod pair_dots;
pub(crate) mod reorder;
pub(crate) mod sort;

/// The AVX-512 table.
pub(crate) static BACKEND: Backend = Backend {
    isa: Isa::Avx512,
    lanes: 16,
    max_tile_f32: MAX_TILE_F32,
    max_tile_bf16: RegisterTile { rows: 12, cols: 4 },
    max_accumulators: 28,
    block: 64,
    whole_input_max: 128,
    brgemm_f32: brgemm::f32_f32,
    brgemm_bf16_widen: Bf16Brgemm {
        to_f32: brgemm::bf16_widen_f32,
        to_bf16: brgemm::bf16_widen_bf16,
    },
    brgemm_bf16_dot: None,
    brgemm_bf16_tiles: None,
    brgemm_bf16_tiles_model: super::amx::model::MODEL,
    f32_to_bf16: convert::f32_to_bf16,
    bf16_to_f32: convert::bf16_to_f32,
    split_f32: convert::split_f32,
    join_f32: convert::join_f32,
    sgd: convert::sgd,
    split_sgd: convert::split_sgd,
    transpose32: reorder::transpose32,
    transpose16: reorder::transpose16,
    pack_pairs32: reorder::pack_pairs32,
    pack_pairs16: reorder::pack_pairs16,
    unpack_pairs32: portable::unpack_pairs::<u32>,
    unpack_pairs16: reorder::unpack_pairs16,
    pool: embedding::pool,
    apply: embedding::apply,
    pair_dots_forward: pair_dots::forward,
    pair_dots_backward: pair_dots::backward,
    sort_unique: sort::sort_unique,
    eltwise: ELTWISE,
    fma_peak: Some(FMA_PEAK),
    bf16_dot_peak: None,
    tile_peak: None,
};

/// The largest fp32 register tile (accumulators plus B vectors and a broadcast fit the 32
/// zmm registers for every shape up to it).
pub(crate) const MAX_TILE_F32: RegisterTile = RegisterTile { rows: 14, cols: 4 };

/// The zmm FMA peak loop.
pub(crate) const FMA_PEAK: PeakLoop = PeakLoop {
    flops_per_iteration: PEAK_CHAINS as u64 * 32,
    run: fma_peak,
};

/// A zmm register of 16 f32 lanes with a 16-bit lane mask.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Zmm;

impl Vector for Zmm {
    const LANES: usize = 16;
    const REGISTERS: usize = 32;
    type F = __m512;
    type Mask = __mmask16;

    #[inline(always)]
    fn first(n: usize) -> __mmask16 {
        lanes(n)
    }
    #[inline(always)]
    fn all() -> __mmask16 {
        !0
    }
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: register-only AVX-512F operation (the caller's CPU has it).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: as `zero`.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as `zero`.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as `zero`.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as `zero`.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as `zero`.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn loadu(ptr: *const f32) -> __m512 {
        // SAFETY: 16 values at `ptr` are in bounds (caller).
        unsafe { _mm512_loadu_ps(ptr) }
    }
    #[inline(always)]
    unsafe fn storeu(ptr: *mut f32, v: __m512) {
        // SAFETY: as for `loadu`.
        unsafe { _mm512_storeu_ps(ptr, v) }
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: lanes on `m` are in bounds (caller); masked-off lanes are not accessed.
        unsafe { _mm512_maskz_loadu_ps(m, ptr) }
    }
    #[inline(always)]
    unsafe fn store(ptr: *mut f32, m: __mmask16, v: __m512) {
        // SAFETY: as for `load`.
        unsafe { _mm512_mask_storeu_ps(ptr, m, v) }
    }
    #[inline(always)]
    unsafe fn loadu_bf16(ptr: *const bf16) -> __m512 {
        // SAFETY: bf16 is a transparent u16; 16 values at `ptr` are in bounds (caller).
        unsafe { widen_bf16(_mm256_loadu_si256(ptr.cast())) }
    }
    #[inline(always)]
    unsafe fn storeu_bf16(ptr: *mut bf16, v: __m512) {
        // SAFETY: as for `loadu_bf16`.
        unsafe { _mm256_storeu_si256(ptr.cast(), _mm512_cvtepi32_epi16(round_to_bf16_bits(v))) }
    }
    #[inline(always)]
    unsafe fn load_bf16(ptr: *const bf16, m: __mmask16) -> __m512 {
        // SAFETY: bf16 is a transparent u16; lanes on `m` are in bounds.
        unsafe { widen_bf16(_mm256_maskz_loadu_epi16(m, ptr.cast())) }
    }
    #[inline(always)]
    unsafe fn store_bf16(ptr: *mut bf16, m: __mmask16, v: __m512) {
        // SAFETY: as for `load_bf16`.
        unsafe { _mm512_mask_cvtepi32_storeu_epi16(ptr.cast(), m, round_to_bf16_bits(v)) }
    }
    #[inline(always)]
    unsafe fn loadu_split(hi: *const u16, lo: *const u16) -> __m512 {
        // SAFETY: 16 values of each half are in bounds (caller).
        unsafe {
            let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(hi.cast()));
            let l = _mm512_cvtepu16_epi32(_mm256_loadu_si256(lo.cast()));
            _mm512_castsi512_ps(_mm512_or_si512(_mm512_slli_epi32::<16>(h), l))
        }
    }
    #[inline(always)]
    unsafe fn storeu_split(hi: *mut u16, lo: *mut u16, v: __m512) {
        // SAFETY: as for `loadu_split`.
        unsafe {
            let bits = _mm512_castps_si512(v);
            let h = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(bits));
            _mm256_storeu_si256(hi.cast(), h);
            _mm256_storeu_si256(lo.cast(), _mm512_cvtepi32_epi16(bits));
        }
    }
    #[inline(always)]
    unsafe fn load_split(hi: *const u16, lo: *const u16, m: __mmask16) -> __m512 {
        // SAFETY: the lanes on `m` are inside both halves (caller); others are not read.
        unsafe {
            let h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, hi.cast()));
            let l = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, lo.cast()));
            _mm512_castsi512_ps(_mm512_or_si512(_mm512_slli_epi32::<16>(h), l))
        }
    }
    #[inline(always)]
    unsafe fn store_split(hi: *mut u16, lo: *mut u16, m: __mmask16, v: __m512) {
        // SAFETY: as for `load_split`; the narrowing stores write only the lanes on `m`.
        unsafe {
            let bits = _mm512_castps_si512(v);
            _mm512_mask_cvtepi32_storeu_epi16(hi.cast(), m, _mm512_srli_epi32::<16>(bits));
            _mm512_mask_cvtepi32_storeu_epi16(lo.cast(), m, bits);
        }
    }
    #[inline(always)]
    unsafe fn relu(v: __m512) -> __m512 {
        // SAFETY: register-only AVX-512F operations.
        unsafe {
            let zero = _mm512_setzero_ps();
            let not_positive = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, zero);
            _mm512_mask_mov_ps(v, not_positive, zero)
        }
    }
    #[inline(always)]
    unsafe fn where_positive(y: __m512, v: __m512) -> __m512 {
        // SAFETY: register-only AVX-512F operations.
        unsafe { _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, _mm512_setzero_ps()), v) }
    }
    #[inline(always)]
    unsafe fn keep(m: __mmask16, v: __m512) -> __m512 {
        // SAFETY: register-only AVX-512F operation.
        unsafe { _mm512_maskz_mov_ps(m, v) }
    }
    #[inline(always)]
    unsafe fn reduce16(parts: [__m512; 2]) -> f32 {
        // SAFETY: register-only AVX-512 operations.
        unsafe { reduce_halves(parts[0]) }
    }
    #[inline(always)]
    unsafe fn out_of_line<R>(f: impl FnOnce() -> R) -> R {
        #[inline(never)]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the caller's CPU has the features (this is only reached from its shims).
        unsafe { run(f) }
    }
}

/// Mask of the first `n` lanes (all 16 for `n >= 16`).
#[inline(always)]
pub(crate) fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        !0
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Sum of the 16 lanes in the portable order: halves added pairwise (8, 4, 2, 1).
///
/// # Safety
///
/// The CPU has AVX-512 F and DQ.
#[inline(always)]
pub(crate) unsafe fn reduce_halves(v: __m512) -> f32 {
    // SAFETY: register-only AVX-512F/DQ and SSE operations (the caller's CPU has them).
    unsafe {
        let s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v));
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<0b01>(s2, s2));
        _mm_cvtss_f32(s1)
    }
}

/// 16 bf16 (as u16 lanes of a ymm) widened to fp32.
#[inline(always)]
pub(crate) unsafe fn widen_bf16(v: __m256i) -> __m512 {
    // SAFETY: register-only AVX-512F operations; the caller's CPU has AVX-512F.
    unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v))) }
}

/// fp32 rounded to the nearest bf16 (ties to even), as 32-bit lanes holding the 16 bits.
///
/// NaN stays NaN (quiet bit set), infinities stay infinite, values that round past the
/// largest bf16 become infinity: the same bits as `half::bf16::from_f32`.
#[inline(always)]
pub(crate) unsafe fn round_to_bf16_bits(v: __m512) -> __m512i {
    // SAFETY: register-only AVX-512F operations; the caller's CPU has AVX-512F.
    unsafe {
        let bits = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(0x40));
        _mm512_mask_blend_epi32(nan, rounded, quiet)
    }
}

/// The element-wise entries: the portable bodies compiled for zmm.
pub(crate) mod eltwise {
    crate::backend::x86::eltwise::shims!("avx512f,avx512bw,avx512vl,avx512dq");
}
pub(crate) use eltwise::ELTWISE;

/// Independent accumulator chains of the peak loops: more than FMA latency times
/// throughput needs on any core (4 cycles x 2 ports).
pub(crate) const PEAK_CHAINS: usize = 12;

/// `iterations` rounds of [`PEAK_CHAINS`] independent zmm FMAs.
#[target_feature(enable = "avx512f")]
unsafe fn fma_peak(iterations: u64) -> f32 {
    let x = std::hint::black_box(_mm512_set1_ps(1e-3));
    let mut acc = [_mm512_setzero_ps(); PEAK_CHAINS];
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(x, x, *a);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}
