//! Elementwise pieces of the blocked MLP: the forward epilogue (bias, activation, rounding to
//! the output type), the activation derivative, column sums for the bias gradient, and the
//! row dot products of a layer with one output.
//! Memory-bound; each works on one cache-resident block at a time. Block transposes and VNNI
//! packing are in [`crate::reorder`].

pub use crate::activation::Activation;
use crate::backend::{self, Backend};
use crate::convert::Converter;
use crate::{Element, SliceMut, SliceRef};

/// The active backend's table (the portable one if the active backend cannot be resolved,
/// which `Isa::active` reports elsewhere): its element-wise bodies are the same code
/// compiled for its registers, so the bits do not depend on which one runs.
fn table() -> &'static Backend {
    backend::active().unwrap_or(&backend::portable::BACKEND)
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
    // SAFETY: the table is of a backend this CPU runs; the body is safe code.
    unsafe { (table().eltwise.bias_act)(acc, cols, valid_rows, valid_cols, bias, act) };
    store(cvt, acc, out);
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
    // SAFETY: the table is of a backend this CPU runs; the body is safe code.
    unsafe { (table().eltwise.act_backward)(T::view_mut(dy), T::view(y), act) };
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
    let block = &block[..rows * cols];
    let sums = &mut sums[..cols];
    // SAFETY: the table is of a backend this CPU runs; the body is safe code.
    unsafe { (table().eltwise.column_sums)(T::view(block), rows, cols, sums) };
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
    let packed = &packed[..crate::vnni::packed_len(rows, cols)];
    let sums = &mut sums[..cols];
    // SAFETY: the table is of a backend this CPU runs; the body is safe code.
    unsafe { (table().eltwise.column_sums_vnni)(T::view(packed), rows, cols, sums) };
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
    // SAFETY: the table is of a backend this CPU runs; the body is safe code.
    unsafe { (table().eltwise.row_dots)(T::view(block), rows, cols, T::view(w), acc) };
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
