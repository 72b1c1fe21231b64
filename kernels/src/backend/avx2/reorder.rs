//! AVX2 block reorders: transposes of 32- and 16-bit values in 8 x 8 tiles of 32-bit lanes,
//! and VNNI-2 pair packing. 32-bit edges use masked loads and stores (`vpmaskmovd`); 16-bit
//! edges, which AVX2 cannot mask, go through a small tile or row on the stack.

use core::arch::x86_64::*;

use super::{Lanes, Ymm, load_u16, narrow, store_u16};
use crate::backend::x86::Vector;

/// Transpose 8 rows of 8 32-bit lanes in registers: afterwards `r[i]` holds column `i`.
///
/// # Safety
///
/// The CPU has AVX2.
#[inline(always)]
unsafe fn transpose_8x8(r: &mut [__m256; 8]) {
    // SAFETY: register-only AVX operations (they move bits, whatever the lanes hold).
    unsafe {
        // Rows interleaved by pairs, then by 64-bit pairs: u[4h + j] holds column j (128-bit
        // lane 0) and column 4 + j (lane 1) of rows 4h..4h + 4.
        let mut u = [_mm256_setzero_ps(); 8];
        for h in 0..2 {
            let (a, b, c, d) = (r[4 * h], r[4 * h + 1], r[4 * h + 2], r[4 * h + 3]);
            let (t0, t1) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
            let (t2, t3) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
            u[4 * h] = _mm256_shuffle_ps::<0x44>(t0, t2);
            u[4 * h + 1] = _mm256_shuffle_ps::<0xEE>(t0, t2);
            u[4 * h + 2] = _mm256_shuffle_ps::<0x44>(t1, t3);
            u[4 * h + 3] = _mm256_shuffle_ps::<0xEE>(t1, t3);
        }
        for j in 0..4 {
            r[j] = _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j]);
            r[4 + j] = _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j]);
        }
    }
}

/// `dst[c][r] = src[r][c]` for a `rows x cols` matrix of 32-bit values, in 8 x 8 tiles
/// (edge tiles masked).
///
/// # Safety
///
/// The CPU has AVX2; `src` and `dst` hold `rows * cols` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn transpose32(src: *const u32, rows: usize, cols: usize, dst: *mut u32) {
    let (src, dst) = (src.cast::<f32>(), dst.cast::<f32>());
    for r0 in (0..rows).step_by(8) {
        let nr = (rows - r0).min(8);
        for c0 in (0..cols).step_by(8) {
            let nc = (cols - c0).min(8);
            let (cm, rm) = (Ymm::first(nc), Ymm::first(nr));
            let mut t = [_mm256_setzero_ps(); 8];
            // SAFETY: rows r0..r0 + nr and columns c0..c0 + nc are inside src (caller); lanes
            // past nc are masked; the stores write columns r0..r0 + nr of dst rows
            // c0..c0 + nc, inside dst.
            unsafe {
                for (i, ti) in t.iter_mut().enumerate().take(nr) {
                    *ti = Ymm::load(src.add((r0 + i) * cols + c0), cm);
                }
                transpose_8x8(&mut t);
                for (j, tj) in t.iter().enumerate().take(nc) {
                    Ymm::store(dst.add((c0 + j) * rows + r0), rm, *tj);
                }
            }
        }
    }
}

/// Rows `2p` and `2p + 1` (the second if `second`) of 8 16-bit columns at `at`, as 32-bit
/// pairs (even row in the low half); columns off `m` are zero.
///
/// # Safety
///
/// The CPU has AVX2; the columns on `m` of both rows lie inside the source.
#[inline(always)]
unsafe fn pair_of_rows(at: *const u16, stride: usize, second: bool, m: Lanes) -> __m256i {
    // SAFETY: loads of the lanes on `m` inside the source (caller).
    unsafe {
        let load = |p: *const u16| {
            if m.is_all() {
                _mm_loadu_si128(p.cast())
            } else {
                load_u16(p, m)
            }
        };
        let even = _mm256_cvtepu16_epi32(load(at));
        if second {
            let odd = _mm256_cvtepu16_epi32(load(at.add(stride)));
            _mm256_or_si256(even, _mm256_slli_epi32::<16>(odd))
        } else {
            even
        }
    }
}

/// Transpose a tile of `nr <= 16` rows by `nc <= 8` columns of 16-bit values at `src` (rows
/// `src_stride` apart) into `nc` rows of `nr` at `dst` (`dst_stride` apart): pairs of rows
/// are joined into 32-bit lanes, which an 8 x 8 transpose puts in place.
///
/// # Safety
///
/// The CPU has AVX2; the tile lies inside `src` and its transpose inside `dst`; when
/// `nr < 16` or `nc < 8`, `dst` has room for 8 rows of 16 (a stack tile).
#[inline(always)]
unsafe fn transpose16_tile(
    src: *const u16,
    src_stride: usize,
    nr: usize,
    nc: usize,
    dst: *mut u16,
    dst_stride: usize,
) {
    let cm = Ymm::first(nc);
    // SAFETY: the rows read are below nr, the columns on `cm` below nc (caller); each store
    // writes 16 values of dst row j < 8 (whole tiles: nr = 16, j < nc = 8; else the stack
    // tile's 8 rows of 16).
    unsafe {
        let mut t = [_mm256_setzero_ps(); 8];
        for (p, tp) in t.iter_mut().enumerate().take(nr.div_ceil(2)) {
            let at = src.add(2 * p * src_stride);
            *tp = _mm256_castsi256_ps(pair_of_rows(at, src_stride, 2 * p + 1 < nr, cm));
        }
        transpose_8x8(&mut t);
        let stored = if nr == 16 { nc } else { 8 };
        for (j, tj) in t.iter().enumerate().take(stored) {
            _mm256_storeu_ps(dst.add(j * dst_stride).cast(), *tj);
        }
    }
}

/// `dst[c][r] = src[r][c]` for a `rows x cols` matrix of 16-bit values, in tiles of 16 rows
/// by 8 columns; a tile of fewer rows is transposed into a stack tile and copied out.
///
/// # Safety
///
/// The CPU has AVX2; `src` and `dst` hold `rows * cols` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn transpose16(src: *const u16, rows: usize, cols: usize, dst: *mut u16) {
    for r0 in (0..rows).step_by(16) {
        let nr = (rows - r0).min(16);
        for c0 in (0..cols).step_by(8) {
            let nc = (cols - c0).min(8);
            let at = src.wrapping_add(r0 * cols + c0);
            let to = dst.wrapping_add(c0 * rows + r0);
            // SAFETY: the tile (rows r0..r0 + nr, columns c0..c0 + nc) lies inside src, its
            // transpose (rows c0..c0 + nc of dst, columns r0..r0 + nr) inside dst (caller).
            unsafe {
                if nr == 16 {
                    transpose16_tile(at, cols, nr, nc, to, rows);
                } else {
                    let mut tile = [0u16; 8 * 16];
                    transpose16_tile(at, cols, nr, nc, tile.as_mut_ptr(), 16);
                    for j in 0..nc {
                        core::ptr::copy_nonoverlapping(
                            tile.as_ptr().add(16 * j),
                            to.add(j * rows),
                            nr,
                        );
                    }
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
/// The CPU has AVX2; `src` holds `k * n` values, `dst` `ceil(k/2) * n` pairs.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn pack_pairs16(src: *const u16, k: usize, n: usize, dst: *mut u16) {
    let dst = dst.cast::<f32>();
    for p in 0..k.div_ceil(2) {
        for j0 in (0..n).step_by(8) {
            let m = Ymm::first(n - j0);
            // SAFETY: rows 2p (and 2p + 1 when below k), columns on `m` below n, inside src;
            // the store writes the pairs p * n + j0.. on `m`, below ceil(k/2) * n.
            unsafe {
                let v = pair_of_rows(src.add(2 * p * n + j0), n, 2 * p + 1 < k, m);
                Ymm::store(dst.add(p * n + j0), m, _mm256_castsi256_ps(v));
            }
        }
    }
}

/// The inverse of [`pack_pairs16`]: rows `2p` and `2p + 1` (below `k`) from the pairs.
///
/// # Safety
///
/// As [`pack_pairs16`], with the roles of `src` and `dst` exchanged.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn unpack_pairs16(src: *const u16, k: usize, n: usize, dst: *mut u16) {
    let src = src.cast::<f32>();
    for p in 0..k.div_ceil(2) {
        for j0 in (0..n).step_by(8) {
            let m = Ymm::first(n - j0);
            // SAFETY: pairs p * n + j0.. on `m` inside src; rows 2p and 2p + 1 < k of dst,
            // columns on `m`.
            unsafe {
                let v = _mm256_castps_si256(Ymm::load(src.add(p * n + j0), m));
                let rows = [
                    narrow(_mm256_and_si256(v, _mm256_set1_epi32(0xffff))),
                    narrow(_mm256_srli_epi32::<16>(v)),
                ];
                for (h, row) in rows.into_iter().enumerate().take(k - 2 * p) {
                    let at = dst.add((2 * p + h) * n + j0);
                    if m.is_all() {
                        _mm_storeu_si128(at.cast(), row);
                    } else {
                        store_u16(at, m, row);
                    }
                }
            }
        }
    }
}

/// VNNI-2 pack of a `k x n` f32 matrix: `dst[p][j][h] = src[2p + h][j]`, zero past `k`.
///
/// # Safety
///
/// The CPU has AVX2; `src` holds `k * n` values, `dst` `ceil(k/2) * 2 * n`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn pack_pairs32(src: *const u32, k: usize, n: usize, dst: *mut u32) {
    let (src, dst) = (src.cast::<f32>(), dst.cast::<f32>());
    for p in 0..k.div_ceil(2) {
        for j0 in (0..n).step_by(8) {
            let nc = (n - j0).min(8);
            let m = Ymm::first(nc);
            // SAFETY: rows 2p (and 2p + 1 when below k), lanes below n, inside src; the
            // stores write 2 * nc values from (p * n + j0) * 2, inside dst.
            unsafe {
                let even = Ymm::load(src.add(2 * p * n + j0), m);
                let odd = if 2 * p + 1 < k {
                    Ymm::load(src.add((2 * p + 1) * n + j0), m)
                } else {
                    _mm256_setzero_ps()
                };
                let (lo, hi) = (_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd));
                let out = dst.add((p * n + j0) * 2);
                Ymm::store(
                    out,
                    Ymm::first(2 * nc),
                    _mm256_permute2f128_ps::<0x20>(lo, hi),
                );
                if nc > 4 {
                    let second = _mm256_permute2f128_ps::<0x31>(lo, hi);
                    Ymm::store(out.add(8), Ymm::first(2 * nc - 8), second);
                }
            }
        }
    }
}

/// The inverse of [`pack_pairs32`].
///
/// # Safety
///
/// As [`pack_pairs32`], with the roles of `src` and `dst` exchanged.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn unpack_pairs32(src: *const u32, k: usize, n: usize, dst: *mut u32) {
    let (src, dst) = (src.cast::<f32>(), dst.cast::<f32>());
    for p in 0..k.div_ceil(2) {
        for j0 in (0..n).step_by(8) {
            let nc = (n - j0).min(8);
            let m = Ymm::first(nc);
            // SAFETY: the 2 * nc values from (p * n + j0) * 2 lie inside src; the stores write
            // columns j0.. on `m` of rows 2p and 2p + 1 < k of dst.
            unsafe {
                let at = src.add((p * n + j0) * 2);
                let a = Ymm::load(at, Ymm::first(2 * nc));
                let b = if nc > 4 {
                    Ymm::load(at.add(8), Ymm::first(2 * nc - 8))
                } else {
                    _mm256_setzero_ps()
                };
                // Pairs 0, 1, 4, 5 and 2, 3, 6, 7; then the even and the odd of each.
                let (lo, hi) = (
                    _mm256_permute2f128_ps::<0x20>(a, b),
                    _mm256_permute2f128_ps::<0x31>(a, b),
                );
                let rows = [
                    _mm256_shuffle_ps::<0x88>(lo, hi),
                    _mm256_shuffle_ps::<0xDD>(lo, hi),
                ];
                for (h, row) in rows.into_iter().enumerate().take(k - 2 * p) {
                    Ymm::store(dst.add((2 * p + h) * n + j0), m, row);
                }
            }
        }
    }
}
