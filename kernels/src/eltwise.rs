//! Elementwise pieces of the blocked MLP: the forward epilogue (bias, activation, rounding to
//! the output type), the activation derivative, column sums for the bias gradient, and the
//! row dot products of a layer with one output.
//! Memory-bound; each works on one cache-resident block at a time. Block transposes and VNNI
//! packing are in [`crate::reorder`].

use crate::convert::Converter;
use crate::{Element, Isa, SliceMut, SliceRef};

/// Run `f` compiled for AVX-512 where the active ISA has it, so its loops auto-vectorise to
/// 512-bit registers; else as it is. The results are the same bits either way: the bodies
/// here are element-wise, or sum down columns in row order.
#[inline(always)]
fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if matches!(Isa::active(), Ok(isa) if isa >= Isa::Avx512) {
        /// `f`, inlined into an AVX-512 function.
        ///
        /// # Safety
        ///
        /// The CPU has AVX-512 F/BW/VL/DQ.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the active ISA is AVX-512 or better, which `Isa::active` checked this CPU
        // has.
        return unsafe { avx512(f) };
    }
    f()
}

/// The nonlinearity applied after a linear layer.
///
/// ```
/// use dlrm_microkernels::eltwise::Activation;
/// assert_eq!(Activation::Relu.apply(-1.0), 0.0);
/// assert_eq!(Activation::Sigmoid.apply(0.0), 0.5);
/// // The derivative is computed from the *output* y = f(x).
/// assert_eq!(Activation::Relu.derivative_from_output(2.0), 1.0);
/// assert_eq!(Activation::Sigmoid.derivative_from_output(0.5), 0.25);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)` (NaN stays NaN). Its mask for backward is the output's sign: `y > 0` exactly where
    /// `x > 0`, so no separate mask is stored.
    #[default]
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
}

impl Activation {
    /// `f(x)`.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::eltwise::Activation::None.apply(-3.0), -3.0);
    /// ```
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            // NaN propagates, as in PyTorch (f32::max would drop it).
            Activation::Relu => {
                if x <= 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }

    /// `f'(x)` expressed through `y = f(x)`.
    ///
    /// ```
    /// assert_eq!(dlrm_microkernels::eltwise::Activation::Relu.derivative_from_output(0.0), 0.0);
    /// ```
    #[inline(always)]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::None => 1.0,
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
        }
    }
}

/// The forward epilogue of one output block.
///
/// `acc` is a `rows x cols` f32 block (row-major, leading dimension `cols`). Rows below
/// `valid_rows` and columns below `valid_cols` get `act(acc + bias[j])`; the rest (padding) is
/// set to zero. The result is written to `out` (same shape) rounded to its element type; `acc`
/// is used as scratch.
///
/// # Panics
///
/// If a slice is shorter than the block (an internal-use function: callers size blocks).
///
/// ```
/// use dlrm_microkernels::eltwise::{Activation, bias_act};
/// use dlrm_microkernels::convert::Converter;
/// let mut acc = [1.0f32, -2.0, 3.0, 4.0];
/// let mut out = [0f32; 4];
/// let cvt = Converter::new()?;
/// bias_act(&cvt, &mut acc, 2, 2, 1, 2, &[0.5, 0.5], Activation::Relu, &mut out);
/// assert_eq!(out, [1.5, 0.0, 0.0, 0.0]); // row 1 is padding
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn bias_act<T: Element>(
    cvt: &Converter,
    acc: &mut [f32],
    rows: usize,
    cols: usize,
    valid_rows: usize,
    valid_cols: usize,
    bias: &[f32],
    act: Activation,
    out: &mut [T],
) {
    let acc = &mut acc[..rows * cols];
    vectorised(|| bias_act_rows(acc, cols, valid_rows, valid_cols, bias, act));
    store(cvt, acc, out);
}

/// The bias and activation part of [`bias_act`].
#[inline(always)]
fn bias_act_rows(
    acc: &mut [f32],
    cols: usize,
    valid_rows: usize,
    valid_cols: usize,
    bias: &[f32],
    act: Activation,
) {
    for (r, row) in acc.chunks_exact_mut(cols).enumerate() {
        if r >= valid_rows {
            row.fill(0.0);
            continue;
        }
        let (valid, pad) = row.split_at_mut(valid_cols);
        match act {
            Activation::None => valid.iter_mut().zip(bias).for_each(|(x, b)| *x += b),
            Activation::Relu => valid
                .iter_mut()
                .zip(bias)
                .for_each(|(x, b)| *x = Activation::Relu.apply(*x + b)),
            Activation::Sigmoid => valid
                .iter_mut()
                .zip(bias)
                .for_each(|(x, b)| *x = Activation::Sigmoid.apply(*x + b)),
        }
        pad.fill(0.0);
    }
}

/// Copy f32 values into `out`, rounding to its element type (nearest even for bf16).
///
/// # Panics
///
/// If `out` is shorter than `src`.
///
/// ```
/// use dlrm_microkernels::{eltwise::store, convert::Converter, bf16};
/// let mut out = [bf16::ZERO; 2];
/// store(&Converter::new()?, &[1.0, 2.0], &mut out);
/// assert_eq!(out[1].to_f32(), 2.0);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
pub fn store<T: Element>(cvt: &Converter, src: &[f32], out: &mut [T]) {
    match T::view_mut(&mut out[..src.len()]) {
        SliceMut::F32(out) => out.copy_from_slice(src),
        SliceMut::Bf16(out) => cvt.f32_to_bf16(src, out).expect("equal lengths"),
    }
}

/// Load values of any element type into f32.
///
/// # Panics
///
/// If `out` is shorter than `src`.
///
/// ```
/// use dlrm_microkernels::{eltwise::load, convert::Converter, bf16};
/// let mut out = [0f32; 1];
/// load(&Converter::new()?, &[bf16::ONE], &mut out);
/// assert_eq!(out, [1.0]);
/// # Ok::<(), dlrm_microkernels::KernelError>(())
/// ```
pub fn load<T: Element>(cvt: &Converter, src: &[T], out: &mut [f32]) {
    let out = &mut out[..src.len()];
    match T::view(src) {
        SliceRef::F32(src) => out.copy_from_slice(src),
        SliceRef::Bf16(src) => cvt.bf16_to_f32(src, out).expect("equal lengths"),
    }
}

/// `dy[i] *= f'(y[i])`, the activation's derivative taken from its output.
///
/// # Panics
///
/// If `y` is shorter than `dy`.
///
/// ```
/// use dlrm_microkernels::eltwise::{Activation, act_backward};
/// let mut dy = [1.0f32, 1.0];
/// act_backward(&mut dy, &[0.0f32, 3.0], Activation::Relu);
/// assert_eq!(dy, [0.0, 1.0]);
/// ```
pub fn act_backward<T: Element>(dy: &mut [T], y: &[T], act: Activation) {
    let y = &y[..dy.len()];
    vectorised(|| act_backward_body(dy, y, act));
}

/// [`act_backward`] on slices of equal length.
#[inline(always)]
fn act_backward_body<T: Element>(dy: &mut [T], y: &[T], act: Activation) {
    match (act, T::view_mut(dy), T::view(y)) {
        (Activation::None, ..) => {}
        // Branch-free selects, so the loops vectorise (a ReLU mask is a coin flip per element).
        (Activation::Relu, SliceMut::F32(d), SliceRef::F32(y)) => {
            for (d, y) in d.iter_mut().zip(y) {
                *d = if *y > 0.0 { *d } else { 0.0 };
            }
        }
        (Activation::Relu, SliceMut::Bf16(d), SliceRef::Bf16(y)) => {
            for (d, y) in d.iter_mut().zip(y) {
                // y > 0: sign clear, not zero, not NaN (0x7f81..=0x7fff).
                let b = y.to_bits();
                let positive = b.wrapping_sub(1) < 0x7f80;
                *d = half::bf16::from_bits(if positive { d.to_bits() } else { 0 });
            }
        }
        (Activation::Sigmoid, SliceMut::F32(d), SliceRef::F32(y)) => {
            for (d, y) in d.iter_mut().zip(y) {
                *d *= y * (1.0 - y);
            }
        }
        (Activation::Sigmoid, ..) => {
            for (d, y) in dy.iter_mut().zip(y) {
                let y = y.to_f32();
                *d = T::from_f32(d.to_f32() * (y * (1.0 - y)));
            }
        }
        _ => unreachable!("dy and y have the same element type"),
    }
}

/// `sums[j] += sum_r block[r * cols + j]` for a `rows x cols` row-major block.
///
/// # Panics
///
/// If `block` holds fewer than `rows * cols` or `sums` fewer than `cols` values.
///
/// ```
/// let mut s = [0f32; 2];
/// dlrm_microkernels::eltwise::column_sums(&[1.0f32, 2.0, 3.0, 4.0], 2, 2, &mut s);
/// assert_eq!(s, [4.0, 6.0]);
/// ```
pub fn column_sums<T: Element>(block: &[T], rows: usize, cols: usize, sums: &mut [f32]) {
    let sums = &mut sums[..cols];
    let block = &block[..rows * cols];
    vectorised(|| {
        for row in block.chunks_exact(cols) {
            for (s, x) in sums.iter_mut().zip(row) {
                *s += x.to_f32();
            }
        }
    });
}

/// [`column_sums`] of a block stored in VNNI-2 order (see [`crate::vnni`]): `rows x cols`
/// values laid out as `ceil(rows / 2)` row pairs of `cols` interleaved pairs, as
/// [`crate::reorder::Reorder::pack_pairs`] writes them. The rows are added in the same
/// order as [`column_sums`] adds them (row 0, 1, 2, ...) and the padding of an odd last pair
/// is skipped, so both give the same bits for the same matrix.
///
/// # Panics
///
/// If `packed` holds fewer than [`crate::vnni::packed_len`]`(rows, cols)` or `sums` fewer
/// than `cols` values.
///
/// ```
/// use dlrm_microkernels::eltwise::{column_sums, column_sums_vnni};
/// let m = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // 3 x 2, row-major
/// let packed = [1.0f32, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]; // rows (0, 1), then (2, pad)
/// let (mut a, mut b) = ([0f32; 2], [0f32; 2]);
/// column_sums(&m, 3, 2, &mut a);
/// column_sums_vnni(&packed, 3, 2, &mut b);
/// assert_eq!(a, b);
/// assert_eq!(b, [9.0, 12.0]);
/// ```
pub fn column_sums_vnni<T: Element>(packed: &[T], rows: usize, cols: usize, sums: &mut [f32]) {
    let sums = &mut sums[..cols];
    let packed = &packed[..crate::vnni::packed_len(rows, cols)];
    vectorised(|| {
        for (p, pair) in packed.chunks_exact(2 * cols.max(1)).enumerate() {
            let pairs = sums.iter_mut().zip(pair.chunks_exact(2));
            if 2 * p + 1 < rows {
                pairs.for_each(|(s, x)| *s = *s + x[0].to_f32() + x[1].to_f32());
            } else {
                pairs.for_each(|(s, x)| *s += x[0].to_f32());
            }
        }
    });
}

/// `acc[r] += sum_j block[r * cols + j] * w[j]` for each of `rows` rows: the forward of a
/// layer with one output (a matrix-vector product, where a BRGEMM would use one lane of
/// each register). Each row is summed in 16 lanes, then the lanes pairwise, in a fixed order,
/// so the result does not depend on the thread count.
///
/// # Panics
///
/// If `block` holds fewer than `rows * cols` values, `w` fewer than `cols` or `acc` fewer
/// than `rows`.
///
/// ```
/// let mut acc = [1.0f32, 0.0];
/// dlrm_microkernels::eltwise::row_dots(&[1.0f32, 2.0, 3.0, 4.0], 2, 2, &[10.0, 1.0], &mut acc);
/// assert_eq!(acc, [13.0, 34.0]);
/// ```
pub fn row_dots<T: Element>(block: &[T], rows: usize, cols: usize, w: &[T], acc: &mut [f32]) {
    let (block, w, acc) = (&block[..rows * cols], &w[..cols], &mut acc[..rows]);
    vectorised(|| {
        for (a, row) in acc.iter_mut().zip(block.chunks_exact(cols.max(1))) {
            let mut lanes = [0f32; 16];
            let (body, tail) = row.split_at(cols - cols % 16);
            let (w_body, w_tail) = w.split_at(cols - cols % 16);
            for (xs, ws) in body.chunks_exact(16).zip(w_body.chunks_exact(16)) {
                for ((l, x), w) in lanes.iter_mut().zip(xs).zip(ws) {
                    *l += x.to_f32() * w.to_f32();
                }
            }
            for ((l, x), w) in lanes.iter_mut().zip(tail).zip(w_tail) {
                *l += x.to_f32() * w.to_f32();
            }
            *a += crate::portable::reduce_halves(lanes);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn check_row_dots<T: Element>() {
        for rows in [1, 2, 7, 64] {
            for cols in [1, 15, 16, 17, 33, 64, 100] {
                let x: Vec<T> = (0..rows * cols)
                    .map(|i| T::from_f32(((i * 7919) % 97) as f32 / 97.0 - 0.5))
                    .collect();
                let w: Vec<T> = (0..cols)
                    .map(|j| T::from_f32(((j * 31) % 13) as f32 / 13.0 - 0.5))
                    .collect();
                let mut acc = vec![0.25f32; rows + 1];
                row_dots(&x, rows, cols, &w, &mut acc);
                for r in 0..rows {
                    let want: f64 = 0.25
                        + (0..cols)
                            .map(|j| x[r * cols + j].to_f32() as f64 * w[j].to_f32() as f64)
                            .sum::<f64>();
                    let err = (acc[r] as f64 - want).abs();
                    assert!(err <= 1e-5 * (1.0 + cols as f64), "{rows}x{cols} row {r}");
                }
                assert_eq!(acc[rows], 0.25, "nothing past the rows is touched");
            }
        }
    }

    #[test]
    fn row_dots_match_f64() {
        check_row_dots::<f32>();
        check_row_dots::<bf16>();
    }

    /// The VNNI-2 copy of a block (as `Reorder::pack_pairs` makes it, on every ISA) sums to
    /// the same bits as the block: same values, same order, odd last rows and signed zeros
    /// included (adding the zero padding would turn a -0.0 sum into +0.0).
    fn check_column_sums_vnni<T: Element>() {
        for rows in [1, 2, 3, 7, 64] {
            for cols in [1, 15, 16, 17, 64] {
                let m: Vec<T> = (0..rows * cols)
                    .map(|i| match i % 11 {
                        0 => T::from_f32(-0.0),
                        r => T::from_f32(((i * 7919) % 97) as f32 / 7.0 - 6.0 + r as f32 * 1e-3),
                    })
                    .collect();
                let mut want = vec![0f32; cols];
                want[0] = -0.0;
                column_sums(&m, rows, cols, &mut want);
                for isa in crate::Isa::available() {
                    let mut packed = vec![T::from_f32(0.0); crate::vnni::packed_len(rows, cols)];
                    crate::reorder::Reorder::with_isa(isa)
                        .unwrap()
                        .pack_pairs(&m, rows, cols, &mut packed)
                        .unwrap();
                    let mut got = vec![0f32; cols + 1];
                    got[0] = -0.0;
                    column_sums_vnni(&packed, rows, cols, &mut got);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got[..cols]), bits(&want), "{rows}x{cols} on {isa:?}");
                    assert_eq!(got[cols], 0.0, "nothing past the columns is touched");
                }
            }
        }
    }

    #[test]
    fn column_sums_vnni_give_the_bits_of_column_sums() {
        check_column_sums_vnni::<f32>();
        check_column_sums_vnni::<bf16>();
    }
}
