//! The AVX2 backend (AVX2, FMA, F16C): ymm registers of 8 f32 lanes for every operation, for
//! the CPUs without AVX-512 (AMD Zen 2 and Zen 3, most Intel client parts); bf16 GEMMs widen
//! each VNNI pair to fp32 and use two FMAs.
//!
//! The shared x86 bodies ([`crate::backend::x86`]: BRGEMM tiles, embedding bags,
//! conversions, pair dots) instantiated with [`Ymm`] in thin `#[target_feature]` shims, the
//! portable element-wise bodies compiled again for ymm, and this backend's own register
//! networks (reorders, sort) in the submodules.
//!
//! AVX2 masks f32 loads and stores (`vmaskmovps`) but not 16-bit ones: a bf16 or Split-SGD
//! vector that is not whole goes through an 8-lane row on the stack. Sums that the portable
//! code defines in 16 lanes (Adagrad's sum of squares, pair dots) keep two ymm accumulators,
//! lanes 0-7 and 8-15, and add them by the same halves, so every result but the BRGEMM's
//! has the bits of the other backends (the BRGEMM's stays within the same rounding bound).

use core::arch::x86_64::*;

use half::bf16;

use super::Backend;
use super::x86::Vector;
use crate::abi::{Bf16Brgemm, PeakLoop};
use crate::{Isa, RegisterTile};

pub(crate) mod brgemm;
pub(crate) mod convert;
pub(crate) mod embedding;
pub(crate) mod pair_dots;
pub(crate) mod reorder;
pub(crate) mod sort;

/// The AVX2 table.
pub(crate) static BACKEND: Backend = Backend {
    isa: Isa::Avx2,
    lanes: 8,
    max_tile_f32: MAX_TILE_F32,
    max_tile_bf16: MAX_TILE_BF16,
    max_accumulators: 12,
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
    unpack_pairs32: reorder::unpack_pairs32,
    unpack_pairs16: reorder::unpack_pairs16,
    pool: embedding::pool,
    apply: embedding::apply,
    pair_dots_forward: pair_dots::forward,
    pair_dots_backward: pair_dots::backward,
    sort_unique: sort::sort_unique,
    eltwise: eltwise::ELTWISE,
    fma_peak: Some(FMA_PEAK),
    bf16_dot_peak: None,
    tile_peak: None,
};

/// The largest fp32 register tile: 12 accumulators, with the B vectors, a broadcast and a
/// lane mask, fill the 16 ymm registers (the tile body caps the rows of wider tiles: 6 rows
/// of 2 vectors, 3 of 3, 2 of 4).
pub(crate) const MAX_TILE_F32: RegisterTile = RegisterTile { rows: 12, cols: 4 };
/// The largest bf16 (widened) register tile: each B vector takes two registers (even and
/// odd k) and each broadcast two, so 4 rows of 2 vectors.
pub(crate) const MAX_TILE_BF16: RegisterTile = RegisterTile { rows: 4, cols: 2 };

/// The element-wise entries: the portable bodies compiled for ymm.
pub(crate) mod eltwise {
    crate::backend::x86::eltwise::shims!("avx2,fma,f16c");
}

/// Independent accumulator chains of the peak loop: more than FMA latency times throughput
/// needs on any AVX2 core (4-5 cycles x 2 ports).
pub(crate) const PEAK_CHAINS: usize = 12;

/// The ymm FMA peak loop.
pub(crate) const FMA_PEAK: PeakLoop = PeakLoop {
    flops_per_iteration: PEAK_CHAINS as u64 * 16,
    run: fma_peak,
};

/// The first `n` of the 8 lanes of a ymm register (a prefix, as every mask the shared bodies
/// use is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lanes(usize);

/// Sign masks of 8 lanes: the 8 at `8 - n` are the first `n` lanes set.
static SIGNS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

impl Lanes {
    /// How many lanes (0 to 8).
    #[inline(always)]
    pub(crate) fn count(self) -> usize {
        self.0
    }

    /// Whether every lane is on.
    #[inline(always)]
    pub(crate) fn is_all(self) -> bool {
        self.0 == 8
    }

    /// The mask as a vector: the lanes on have every bit set, the others none (the form
    /// `vmaskmovps` and the logical operations take).
    #[inline(always)]
    pub(crate) fn bits(self) -> __m256i {
        // SAFETY: `8 - self.0` is at most 8 (`self.0` is at most 8 by construction), so the
        // 8 values read lie inside `SIGNS`; an unaligned read of plain integers is valid for
        // any bit pattern, and needs no CPU feature.
        unsafe {
            SIGNS
                .as_ptr()
                .add(8 - self.0)
                .cast::<__m256i>()
                .read_unaligned()
        }
    }
}

/// A ymm register of 8 f32 lanes; lane masks are prefixes ([`Lanes`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ymm;

impl Vector for Ymm {
    const LANES: usize = 8;
    const REGISTERS: usize = 16;
    type F = __m256;
    type Mask = Lanes;

    #[inline(always)]
    fn first(n: usize) -> Lanes {
        Lanes(n.min(8))
    }
    #[inline(always)]
    fn all() -> Lanes {
        Lanes(8)
    }
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: register-only AVX operation (the caller's CPU has AVX2).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: as `zero`.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as `zero`.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as `zero`.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as `zero`.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as `zero`.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn loadu(ptr: *const f32) -> __m256 {
        // SAFETY: 8 values at `ptr` are in bounds (caller).
        unsafe { _mm256_loadu_ps(ptr) }
    }
    #[inline(always)]
    unsafe fn storeu(ptr: *mut f32, v: __m256) {
        // SAFETY: as for `loadu`.
        unsafe { _mm256_storeu_ps(ptr, v) }
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32, m: Lanes) -> __m256 {
        // SAFETY: the lanes on `m` are in bounds (caller); `vmaskmovps` does not touch the
        // others (nor fault on them).
        unsafe {
            if m.is_all() {
                _mm256_loadu_ps(ptr)
            } else {
                _mm256_maskload_ps(ptr, m.bits())
            }
        }
    }
    #[inline(always)]
    unsafe fn store(ptr: *mut f32, m: Lanes, v: __m256) {
        // SAFETY: as for `load`. (A whole vector takes a plain store: masked stores are slow
        // on some AMD cores.)
        unsafe {
            if m.is_all() {
                _mm256_storeu_ps(ptr, v)
            } else {
                _mm256_maskstore_ps(ptr, m.bits(), v)
            }
        }
    }
    #[inline(always)]
    unsafe fn loadu_bf16(ptr: *const bf16) -> __m256 {
        // SAFETY: bf16 is a transparent u16; 8 values at `ptr` are in bounds (caller).
        unsafe { widen_bf16(_mm_loadu_si128(ptr.cast())) }
    }
    #[inline(always)]
    unsafe fn storeu_bf16(ptr: *mut bf16, v: __m256) {
        // SAFETY: as for `loadu_bf16`.
        unsafe { _mm_storeu_si128(ptr.cast(), narrow(round_to_bf16_bits(v))) }
    }
    #[inline(always)]
    unsafe fn load_bf16x2(ptr: *const bf16) -> [__m256; 2] {
        // SAFETY: 16 values at `ptr` are in bounds (caller). Each 32-bit lane holds an even
        // element (low half) and the odd one after it: shifted up, and masked, they are the
        // exact f32 of each; the first register holds the even elements, the second the odd.
        unsafe {
            let v = _mm256_loadu_si256(ptr.cast());
            let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
            let odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(!0xffff)));
            [even, odd]
        }
    }
    #[inline(always)]
    unsafe fn unsplit_bf16x2(v: [__m256; 2]) -> [__m256; 2] {
        // SAFETY: register-only AVX operations. Interleaving the even and odd elements gives
        // elements 0-3 and 8-11, then 4-7 and 12-15; the 128-bit halves are then put in order.
        unsafe {
            let lo = _mm256_unpacklo_ps(v[0], v[1]);
            let hi = _mm256_unpackhi_ps(v[0], v[1]);
            [
                _mm256_permute2f128_ps::<0x20>(lo, hi),
                _mm256_permute2f128_ps::<0x31>(lo, hi),
            ]
        }
    }
    #[inline(always)]
    unsafe fn load_bf16(ptr: *const bf16, m: Lanes) -> __m256 {
        // SAFETY: the lanes on `m` are in bounds (caller); a partial vector reads only them.
        unsafe {
            if m.is_all() {
                Self::loadu_bf16(ptr)
            } else {
                widen_bf16(load_u16(ptr.cast(), m))
            }
        }
    }
    #[inline(always)]
    unsafe fn store_bf16(ptr: *mut bf16, m: Lanes, v: __m256) {
        // SAFETY: as for `load_bf16`; a partial vector writes only the lanes on `m`.
        unsafe {
            if m.is_all() {
                Self::storeu_bf16(ptr, v)
            } else {
                store_u16(ptr.cast(), m, narrow(round_to_bf16_bits(v)))
            }
        }
    }
    #[inline(always)]
    unsafe fn loadu_split(hi: *const u16, lo: *const u16) -> __m256 {
        // SAFETY: 8 values of each half are in bounds (caller).
        unsafe { join(_mm_loadu_si128(hi.cast()), _mm_loadu_si128(lo.cast())) }
    }
    #[inline(always)]
    unsafe fn storeu_split(hi: *mut u16, lo: *mut u16, v: __m256) {
        // SAFETY: as for `loadu_split`.
        unsafe {
            let (h, l) = split(v);
            _mm_storeu_si128(hi.cast(), h);
            _mm_storeu_si128(lo.cast(), l);
        }
    }
    #[inline(always)]
    unsafe fn load_split(hi: *const u16, lo: *const u16, m: Lanes) -> __m256 {
        // SAFETY: the lanes on `m` are inside both halves (caller); a partial vector reads
        // only them.
        unsafe {
            if m.is_all() {
                Self::loadu_split(hi, lo)
            } else {
                join(load_u16(hi, m), load_u16(lo, m))
            }
        }
    }
    #[inline(always)]
    unsafe fn store_split(hi: *mut u16, lo: *mut u16, m: Lanes, v: __m256) {
        // SAFETY: as for `load_split`; a partial vector writes only the lanes on `m`.
        unsafe {
            if m.is_all() {
                Self::storeu_split(hi, lo, v)
            } else {
                let (h, l) = split(v);
                store_u16(hi, m, h);
                store_u16(lo, m, l);
            }
        }
    }
    #[inline(always)]
    unsafe fn relu(v: __m256) -> __m256 {
        // SAFETY: register-only AVX operations. NaN compares false, so it is kept.
        unsafe { _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(v, _mm256_setzero_ps()), v) }
    }
    #[inline(always)]
    unsafe fn where_positive(y: __m256, v: __m256) -> __m256 {
        // SAFETY: register-only AVX operations.
        unsafe { _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(y, _mm256_setzero_ps()), v) }
    }
    #[inline(always)]
    unsafe fn keep(m: Lanes, v: __m256) -> __m256 {
        // SAFETY: register-only AVX operation.
        unsafe { _mm256_and_ps(_mm256_castsi256_ps(m.bits()), v) }
    }
    #[inline(always)]
    unsafe fn reduce16(parts: [__m256; 2]) -> f32 {
        // SAFETY: register-only AVX and SSE operations. Lane j of the first sum is lane j
        // plus lane j + 8 of the 16, as the portable order's first halving.
        unsafe {
            let s8 = _mm256_add_ps(parts[0], parts[1]);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<0b01>(s2, s2));
            _mm_cvtss_f32(s1)
        }
    }
    #[inline(always)]
    unsafe fn out_of_line<R>(f: impl FnOnce() -> R) -> R {
        #[inline(never)]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the caller's CPU has the features (this is only reached from its shims).
        unsafe { run(f) }
    }
}

/// 8 bf16 (as u16 lanes of an xmm) widened to fp32.
///
/// # Safety
///
/// The CPU has AVX2.
#[inline(always)]
pub(crate) unsafe fn widen_bf16(v: __m128i) -> __m256 {
    // SAFETY: register-only AVX2 operations (caller).
    unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(v))) }
}

/// fp32 rounded to the nearest bf16 (ties to even), as 32-bit lanes holding the 16 bits.
///
/// NaN stays NaN (quiet bit set), infinities stay infinite, values that round past the
/// largest bf16 become infinity: the same bits as `half::bf16::from_f32`.
///
/// # Safety
///
/// The CPU has AVX2.
#[inline(always)]
pub(crate) unsafe fn round_to_bf16_bits(v: __m256) -> __m256i {
    // SAFETY: register-only AVX2 operations (caller).
    unsafe {
        let bits = _mm256_castps_si256(v);
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
        let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(bits, bias));
        let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(0x40));
        _mm256_blendv_epi8(rounded, quiet, nan)
    }
}

/// 8 32-bit lanes holding values below 2^16, as 8 u16 in order.
///
/// # Safety
///
/// The CPU has AVX2.
#[inline(always)]
pub(crate) unsafe fn narrow(v: __m256i) -> __m128i {
    // SAFETY: register-only AVX2 operations (caller); no lane saturates (each is below
    // 2^16), and packing the two halves of one register keeps the lane order.
    unsafe { _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)) }
}

/// The f32 whose upper and lower 16 bits are the lanes of `hi` and `lo`.
///
/// # Safety
///
/// The CPU has AVX2.
#[inline(always)]
unsafe fn join(hi: __m128i, lo: __m128i) -> __m256 {
    // SAFETY: register-only AVX2 operations (caller).
    unsafe {
        let h = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(hi));
        _mm256_castsi256_ps(_mm256_or_si256(h, _mm256_cvtepu16_epi32(lo)))
    }
}

/// The upper and lower 16 bits of each lane, as 8 u16 each.
///
/// # Safety
///
/// The CPU has AVX2.
#[inline(always)]
unsafe fn split(v: __m256) -> (__m128i, __m128i) {
    // SAFETY: register-only AVX2 operations (caller).
    unsafe {
        let bits = _mm256_castps_si256(v);
        let lo = _mm256_and_si256(bits, _mm256_set1_epi32(0xffff));
        (narrow(_mm256_srli_epi32::<16>(bits)), narrow(lo))
    }
}

/// The 16-bit lanes on `m` from memory through a row on the stack, zero elsewhere (AVX2 has
/// no masked 16-bit load).
///
/// # Safety
///
/// The lanes on `m` are in bounds; the CPU has AVX2.
#[inline(always)]
unsafe fn load_u16(ptr: *const u16, m: Lanes) -> __m128i {
    let mut row = [0u16; 8];
    // SAFETY: the first `m.count()` values at `ptr` are in bounds (caller) and `row` holds 8.
    unsafe {
        core::ptr::copy_nonoverlapping(ptr, row.as_mut_ptr(), m.count());
        _mm_loadu_si128(row.as_ptr().cast())
    }
}

/// The 16-bit lanes of `v` on `m` to memory through a row on the stack (AVX2 has no masked
/// 16-bit store).
///
/// # Safety
///
/// The lanes on `m` are in bounds; the CPU has AVX2.
#[inline(always)]
unsafe fn store_u16(ptr: *mut u16, m: Lanes, v: __m128i) {
    let mut row = [0u16; 8];
    // SAFETY: `row` holds 8 values; the first `m.count()` at `ptr` are in bounds (caller).
    unsafe {
        _mm_storeu_si128(row.as_mut_ptr().cast(), v);
        core::ptr::copy_nonoverlapping(row.as_ptr(), ptr, m.count());
    }
}

/// `iterations` rounds of [`PEAK_CHAINS`] independent ymm FMAs.
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_peak(iterations: u64) -> f32 {
    let x = std::hint::black_box(_mm256_set1_ps(1e-3));
    let mut acc = [_mm256_setzero_ps(); PEAK_CHAINS];
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(x, x, *a);
        }
    }
    let total = acc
        .iter()
        .fold(_mm256_setzero_ps(), |t, &a| _mm256_add_ps(t, a));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
    lanes.iter().sum()
}
