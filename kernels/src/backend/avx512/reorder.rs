//! AVX-512 block reorders: transposes of 32- and 16-bit values, and VNNI-2 pair packing.

use core::arch::x86_64::*;

use super::lanes;

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
