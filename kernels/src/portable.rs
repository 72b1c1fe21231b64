//! Portable kernels: plain safe Rust, any CPU. The reference every SIMD path is tested
//! against besides the f64 oracle, and the fallback where AVX-512 is missing.

use half::bf16;

use crate::brgemm::{BLayout, Batch, BatchKind, Epilogue, Params};
use crate::{DType, Element};

/// Columns of C accumulated at once (stack buffers, so no allocation per call).
const COLS: usize = 64;
/// Rows of C accumulated at once for bf16: each B row, widened once, serves this many rows.
/// (f32 uses one row, whose 64 accumulators fit the SSE registers of a baseline x86-64.)
const ROWS: usize = 8;

/// Portable BRGEMM. Accumulates in f32, in the same order as the SIMD bodies (batch position,
/// then k), so results differ from them only by FMA rounding (and not at all for bf16, whose
/// products are exact in f32).
pub(crate) fn brgemm<I: Element, O: Element>(
    p: &Params,
    batch: &Batch<'_, I>,
    kind: BatchKind,
    layout: BLayout,
    c: &mut [O],
    epilogue: &Epilogue<'_, O>,
) {
    let active = epilogue.is_active(p.m, p.n);
    let mut acc = [[0f32; COLS]; ROWS];
    let mut b_row = [0f32; COLS];
    let row_block = if I::DTYPE == DType::F32 { 1 } else { ROWS };
    for row0 in (0..p.m).step_by(row_block) {
        let rows = (p.m - row0).min(row_block);
        for col0 in (0..p.n).step_by(COLS) {
            let cols = (p.n - col0).min(COLS);
            for (r, acc_r) in acc[..rows].iter_mut().enumerate() {
                let c_row = &c[(row0 + r) * p.ldc + col0..][..cols];
                for (x, y) in acc_r.iter_mut().zip(c_row) {
                    *x = if p.accumulate { y.to_f32() } else { 0.0 };
                }
            }
            for i in 0..p.count {
                let (a, b) = batch.pair(i, kind);
                for kk in 0..p.k {
                    if layout == BLayout::RowMajor && rows == 1 {
                        // f32: straight from B, no widening copy.
                        let src = &b[kk * p.ldb + col0..][..cols];
                        let av = a[row0 * p.a_row + kk * p.a_k].to_f32();
                        for (x, bv) in acc[0][..cols].iter_mut().zip(src) {
                            *x += av * bv.to_f32();
                        }
                        continue;
                    }
                    match layout {
                        BLayout::RowMajor => {
                            let src = &b[kk * p.ldb + col0..][..cols];
                            for (x, y) in b_row.iter_mut().zip(src) {
                                *x = y.to_f32();
                            }
                        }
                        BLayout::Vnni2 => {
                            let base = (kk / 2) * 2 * p.ldb + 2 * col0 + kk % 2;
                            let src = &b[base..base + 2 * cols - 1];
                            for (x, y) in b_row.iter_mut().zip(src.iter().step_by(2)) {
                                *x = y.to_f32();
                            }
                        }
                    }
                    for (r, acc_r) in acc[..rows].iter_mut().enumerate() {
                        let av = a[(row0 + r) * p.a_row + kk * p.a_k].to_f32();
                        for (x, bv) in acc_r[..cols].iter_mut().zip(&b_row[..cols]) {
                            *x += av * *bv;
                        }
                    }
                }
            }
            for (r, acc_r) in acc[..rows].iter().enumerate() {
                let c_row = &mut c[(row0 + r) * p.ldc + col0..][..cols];
                for (j, (y, x)) in c_row.iter_mut().zip(acc_r).enumerate() {
                    let v = if active {
                        epilogue.apply(*x, row0 + r, col0 + j, p.ldc)
                    } else {
                        *x
                    };
                    *y = O::from_f32(v);
                }
            }
        }
    }
}

/// f32 -> bf16, round to nearest even (the same bits as `half::bf16::from_f32`).
pub(crate) fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16::from_f32(*s);
    }
}

/// bf16 -> f32 (exact).
pub(crate) fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = Element::to_f32(*s);
    }
}

/// f32 -> (upper 16 bits as bf16, lower 16 bits): truncation, so the pair is lossless.
pub(crate) fn split_f32(src: &[f32], hi: &mut [bf16], lo: &mut [u16]) {
    for ((h, l), s) in hi.iter_mut().zip(lo.iter_mut()).zip(src) {
        let bits = s.to_bits();
        *h = bf16::from_bits((bits >> 16) as u16);
        *l = bits as u16;
    }
}

/// (bf16 upper half, u16 lower half) -> f32, the exact inverse of [`split_f32`].
pub(crate) fn join_f32(hi: &[bf16], lo: &[u16], dst: &mut [f32]) {
    for ((d, h), l) in dst.iter_mut().zip(hi).zip(lo) {
        *d = f32::from_bits((u32::from(h.to_bits()) << 16) | u32::from(*l));
    }
}

/// `w -= lr * g`, multiply and subtract rounded separately.
pub(crate) fn sgd(w: &mut [f32], g: &[f32], lr: f32) {
    for (w, g) in w.iter_mut().zip(g) {
        *w -= lr * *g;
    }
}

/// Split-SGD on (hi, lo) halves; the same arithmetic as [`sgd`] on the joined weight.
pub(crate) fn split_sgd(hi: &mut [bf16], lo: &mut [u16], g: &[f32], lr: f32) {
    for ((h, l), g) in hi.iter_mut().zip(lo.iter_mut()).zip(g) {
        let w = f32::from_bits((u32::from(h.to_bits()) << 16) | u32::from(*l)) - lr * *g;
        let bits = w.to_bits();
        *h = bf16::from_bits((bits >> 16) as u16);
        *l = bits as u16;
    }
}

/// Sum of 16 lanes in the order the SIMD paths use: halves added pairwise (lane j + lane
/// j+8, then j + j+4, j + j+2, j + j+1).
#[inline(always)]
pub(crate) fn reduce_halves(mut lanes: [f32; 16]) -> f32 {
    for width in [8, 4, 2, 1] {
        for j in 0..width {
            lanes[j] += lanes[j + width];
        }
    }
    lanes[0]
}
