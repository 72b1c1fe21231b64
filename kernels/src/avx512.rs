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

/// Transpose 16 rows of 16 32-bit lanes in registers: afterwards `r[i]` holds column `i`.
///
/// # Safety
///
/// The CPU has AVX-512F.
#[inline(always)]
unsafe fn transpose_16x16(r: &mut [__m512i; 16]) {
    // SAFETY: register-only AVX-512F operations.
    unsafe {
        // Pairs of rows interleaved by 32-bit lane, then by 64-bit lane: afterwards
        // u[4i + j], 128-bit lane L, holds column 4L + j of rows 4i..4i + 4.
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        // Gather lane L of u[j], u[4 + j], u[8 + j], u[12 + j] into column 4L + j.
        for j in 0..4 {
            let (a, b, c, d) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
            let v0 = _mm512_shuffle_i32x4::<0x88>(a, b);
            let v1 = _mm512_shuffle_i32x4::<0xDD>(a, b);
            let w0 = _mm512_shuffle_i32x4::<0x88>(c, d);
            let w1 = _mm512_shuffle_i32x4::<0xDD>(c, d);
            r[j] = _mm512_shuffle_i32x4::<0x88>(v0, w0);
            r[4 + j] = _mm512_shuffle_i32x4::<0x88>(v1, w1);
            r[8 + j] = _mm512_shuffle_i32x4::<0xDD>(v0, w0);
            r[12 + j] = _mm512_shuffle_i32x4::<0xDD>(v1, w1);
        }
    }
}

/// Mask of the first `len` (<= 32) 16-bit lanes.
#[inline(always)]
fn lanes32(len: usize) -> __mmask32 {
    if len >= 32 {
        !0
    } else {
        ((1u64 << len) - 1) as __mmask32
    }
}

/// `dst[c][r] = src[r][c]` for a `rows x cols` matrix of 32-bit values, in 16 x 16 tiles
/// (edge tiles masked).
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `src` and `dst` hold `rows * cols` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn transpose32(src: *const u32, rows: usize, cols: usize, dst: *mut u32) {
    for r0 in (0..rows).step_by(16) {
        let nr = (rows - r0).min(16);
        for c0 in (0..cols).step_by(16) {
            let nc = (cols - c0).min(16);
            let cm = lanes(nc);
            let mut t = [_mm512_setzero_si512(); 16];
            // SAFETY: rows r0..r0 + nr and columns c0..c0 + nc are inside src (caller); lanes
            // past nc are masked; the stores write columns r0..r0 + nr of dst rows
            // c0..c0 + nc, inside dst.
            unsafe {
                for (i, ti) in t.iter_mut().enumerate().take(nr) {
                    *ti = _mm512_maskz_loadu_epi32(cm, src.add((r0 + i) * cols + c0).cast());
                }
                transpose_16x16(&mut t);
                let rm = lanes(nr);
                for (j, tj) in t.iter().enumerate().take(nc) {
                    _mm512_mask_storeu_epi32(dst.add((c0 + j) * rows + r0).cast(), rm, *tj);
                }
            }
        }
    }
}

/// Rows `2p` and `2p + 1` (if below `rows`) of 16 16-bit columns from `at`, as 32-bit
/// pairs (even row in the low half).
///
/// # Safety
///
/// The CPU has AVX-512 F/BW; the masked lanes of both rows lie inside the source.
#[inline(always)]
unsafe fn pair_of_rows(at: *const u16, stride: usize, second: bool, m: __mmask16) -> __m512i {
    // SAFETY: masked loads of lanes inside the source (caller).
    unsafe {
        let even = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, at.cast()));
        if second {
            let odd = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, at.add(stride).cast()));
            _mm512_or_si512(even, _mm512_slli_epi32::<16>(odd))
        } else {
            even
        }
    }
}

/// `dst[c][r] = src[r][c]` for a `rows x cols` matrix of 16-bit values: pairs of rows are
/// joined into 32-bit lanes, which a 32-bit transpose then puts in place.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `src` and `dst` hold `rows * cols` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn transpose16(src: *const u16, rows: usize, cols: usize, dst: *mut u16) {
    for r0 in (0..rows).step_by(32) {
        let nr = (rows - r0).min(32);
        for c0 in (0..cols).step_by(16) {
            let nc = (cols - c0).min(16);
            let cm = lanes(nc);
            let mut t = [_mm512_setzero_si512(); 16];
            // SAFETY: the rows read are below rows, the lanes below nc (masked); each store
            // writes nr 16-bit values of dst row c0 + j at column r0, inside dst.
            unsafe {
                for (p, tp) in t.iter_mut().enumerate().take(nr.div_ceil(2)) {
                    let at = src.add((r0 + 2 * p) * cols + c0);
                    *tp = pair_of_rows(at, cols, 2 * p + 1 < nr, cm);
                }
                transpose_16x16(&mut t);
                let rm = lanes32(nr);
                for (j, tj) in t.iter().enumerate().take(nc) {
                    _mm512_mask_storeu_epi16(dst.add((c0 + j) * rows + r0).cast(), rm, *tj);
                }
            }
        }
    }
}

/// VNNI-2 pack of a `k x n` matrix of 16-bit values: `dst[p][j] = (src[2p][j], src[2p+1][j])`
/// as one 32-bit lane, the second half zero past `k`.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `src` holds `k * n` values, `dst` `ceil(k/2) * n` pairs.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn pack_pairs16(src: *const u16, k: usize, n: usize, dst: *mut u16) {
    let dst = dst.cast::<u32>();
    for p in 0..k.div_ceil(2) {
        for j0 in (0..n).step_by(16) {
            let m = lanes(n - j0);
            // SAFETY: rows 2p (and 2p + 1 when below k), lanes below n, inside src; the
            // store writes pairs p * n + j0.. below ceil(k/2) * n.
            unsafe {
                let v = pair_of_rows(src.add(2 * p * n + j0), n, 2 * p + 1 < k, m);
                _mm512_mask_storeu_epi32(dst.add(p * n + j0).cast(), m, v);
            }
        }
    }
}

/// The inverse of [`pack_pairs16`]: rows `2p` and `2p + 1` (below `k`) from the pairs.
///
/// # Safety
///
/// As [`pack_pairs16`], with the roles of `src` and `dst` exchanged.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn unpack_pairs16(src: *const u16, k: usize, n: usize, dst: *mut u16) {
    let src = src.cast::<u32>();
    for p in 0..k.div_ceil(2) {
        for j0 in (0..n).step_by(16) {
            let m = lanes(n - j0);
            // SAFETY: pairs p * n + j0.. (masked) inside src; rows 2p and 2p + 1 < k of dst.
            unsafe {
                let v = _mm512_maskz_loadu_epi32(m, src.add(p * n + j0).cast());
                _mm512_mask_cvtepi32_storeu_epi16(dst.add(2 * p * n + j0).cast(), m, v);
                if 2 * p + 1 < k {
                    let odd = _mm512_srli_epi32::<16>(v);
                    _mm512_mask_cvtepi32_storeu_epi16(dst.add((2 * p + 1) * n + j0).cast(), m, odd);
                }
            }
        }
    }
}

/// VNNI-2 pack of a `k x n` f32 matrix: `dst[p][j][h] = src[2p + h][j]`, zero past `k`.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `src` holds `k * n` values, `dst` `ceil(k/2) * 2 * n`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn pack_pairs32(src: *const u32, k: usize, n: usize, dst: *mut u32) {
    let (src, dst) = (src.cast::<f32>(), dst.cast::<f32>());
    let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for p in 0..k.div_ceil(2) {
        for j0 in (0..n).step_by(16) {
            let nc = (n - j0).min(16);
            let m = lanes(nc);
            // SAFETY: rows 2p (and 2p + 1 when below k), lanes below n, inside src; the
            // stores write 2 * nc values from (p * n + j0) * 2, inside dst.
            unsafe {
                let even = _mm512_maskz_loadu_ps(m, src.add(2 * p * n + j0));
                let odd = if 2 * p + 1 < k {
                    _mm512_maskz_loadu_ps(m, src.add((2 * p + 1) * n + j0))
                } else {
                    _mm512_setzero_ps()
                };
                let out = dst.add((p * n + j0) * 2);
                let lo = _mm512_permutex2var_ps(even, lo_idx, odd);
                let hi = _mm512_permutex2var_ps(even, hi_idx, odd);
                _mm512_mask_storeu_ps(out, lanes(2 * nc), lo);
                if nc > 8 {
                    _mm512_mask_storeu_ps(out.add(16), lanes(2 * nc - 16), hi);
                }
            }
        }
    }
}
