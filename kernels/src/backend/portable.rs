//! The portable backend: plain Rust, any CPU. Its arithmetic is the definition the SIMD
//! backends match (bit for bit, except the BRGEMM, whose summation order is each backend's
//! own), and its element-wise bodies are generic code that the SIMD backends compile again
//! under their target features (`#[inline(always)]` here, thin shims there).

use half::bf16;

use super::Backend;
use crate::abi::{ApplyJob, BatchPtrs, Bf16Brgemm, EltwiseFns, Order, Orders, Params, PoolJob};
use crate::activation::Activation;
use crate::dtype::{Element, SliceMut, SliceRef};
use crate::embedding::types::{BagIndex, Bags, Lookup, RowUpdate, RowsMut};
use crate::{Isa, RegisterTile};

/// The portable table.
pub(crate) static BACKEND: Backend = Backend {
    isa: Isa::Portable,
    lanes: 1,
    max_tile_f32: RegisterTile { rows: 8, cols: 64 },
    max_tile_bf16: RegisterTile { rows: 8, cols: 64 },
    max_accumulators: 512,
    block: 64,
    whole_input_max: 128,
    brgemm_f32: brgemm::<f32, f32>,
    brgemm_bf16_widen: Bf16Brgemm {
        to_f32: brgemm::<bf16, f32>,
        to_bf16: brgemm::<bf16, bf16>,
    },
    brgemm_bf16_dot: None,
    brgemm_bf16_tiles: None,
    brgemm_bf16_tiles_model: super::amx::model::MODEL,
    f32_to_bf16,
    bf16_to_f32,
    split_f32,
    join_f32,
    sgd,
    split_sgd,
    transpose32: transpose::<u32>,
    transpose16: transpose::<u16>,
    pack_pairs32: pack_pairs::<u32>,
    pack_pairs16: pack_pairs::<u16>,
    unpack_pairs32: unpack_pairs::<u32>,
    unpack_pairs16: unpack_pairs::<u16>,
    pool,
    apply,
    pair_dots_forward,
    pair_dots_backward,
    sort_unique,
    eltwise: EltwiseFns {
        bias_act: eltwise::bias_act,
        act_backward: eltwise::act_backward,
        column_sums: eltwise::column_sums,
        column_sums_vnni: eltwise::column_sums_vnni,
        row_dots: eltwise::row_dots,
    },
    fma_peak: None,
    bf16_dot_peak: None,
    tile_peak: None,
};

/// Rows and columns of C held in the accumulator block.
const COLS: usize = 64;
const ROWS: usize = 8;

/// BRGEMM in plain loops: f32 rows one at a time straight from B; bf16 `ROWS` rows at a time
/// over one widened row of B. Every C element sums its products in (pair, k) order.
///
/// # Safety
///
/// As [`crate::abi::BrgemmFn`].
unsafe fn brgemm<I: Element, O: Element>(p: &Params, batch: &BatchPtrs<'_, I>, c: *mut O) {
    // SAFETY: the API checked that C spans `c_extent` elements and each pair `a_extent` and
    // `b_extent`; the mask (when present) is laid out as C, the bias holds `n` values.
    let (c, bias, mask) = unsafe {
        (
            std::slice::from_raw_parts_mut(c, p.c_extent),
            (!p.epi.bias.is_null()).then(|| std::slice::from_raw_parts(p.epi.bias, p.n)),
            (!p.epi.mask.is_null())
                .then(|| std::slice::from_raw_parts(p.epi.mask.cast::<O>(), p.c_extent)),
        )
    };
    let vnni = I::DTYPE == crate::DType::Bf16;
    let mut acc = [[0f32; COLS]; ROWS];
    let mut b_row = [0f32; COLS];
    let row_block = if vnni { ROWS } else { 1 };
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
                // SAFETY: i < count; the pair's extents were checked.
                let (a, b) = unsafe {
                    let (a, b) = batch.get(i);
                    (
                        std::slice::from_raw_parts(a, p.a_extent),
                        std::slice::from_raw_parts(b, p.b_extent),
                    )
                };
                for kk in 0..p.k {
                    if !vnni {
                        // f32: straight from B, no widening copy.
                        let src = &b[kk * p.ldb + col0..][..cols];
                        let av = a[row0 * p.a_row + kk * p.a_k].to_f32();
                        for (x, bv) in acc[0][..cols].iter_mut().zip(src) {
                            *x += av * bv.to_f32();
                        }
                        continue;
                    }
                    let base = (kk / 2) * 2 * p.ldb + 2 * col0 + kk % 2;
                    let src = &b[base..base + 2 * cols - 1];
                    for (x, y) in b_row.iter_mut().zip(src.iter().step_by(2)) {
                        *x = y.to_f32();
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
                let row = row0 + r;
                let c_row = &mut c[row * p.ldc + col0..][..cols];
                for (j, (y, x)) in c_row.iter_mut().zip(acc_r).enumerate() {
                    let col = col0 + j;
                    let v = if p.epi.active {
                        epilogue(p, *x, row, col, bias, mask)
                    } else {
                        *x
                    };
                    *y = O::from_f32(v);
                }
            }
        }
    }
}

/// The epilogue steps on one value (the definition the SIMD tiles match): bias, ReLU, the
/// ReLU-backward mask, padding.
#[inline(always)]
pub(crate) fn epilogue<O: Element>(
    p: &Params,
    mut v: f32,
    r: usize,
    j: usize,
    bias: Option<&[f32]>,
    mask: Option<&[O]>,
) -> f32 {
    if let Some(b) = bias {
        v += b[j];
    }
    if p.epi.relu && v <= 0.0 {
        v = 0.0;
    }
    if let Some(m) = mask {
        // NaN and zero count as not positive.
        let positive = m[r * p.ldc + j].to_f32() > 0.0;
        if !positive {
            v = 0.0;
        }
    }
    if r >= p.epi.valid_rows || j >= p.epi.valid_cols {
        v = 0.0;
    }
    v
}

unsafe fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16::from_f32(*s);
    }
}

unsafe fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = Element::to_f32(*s);
    }
}

/// The fp32 weight `(hi << 16) | lo`.
#[inline(always)]
pub(crate) fn join(hi: bf16, lo: u16) -> f32 {
    f32::from_bits((u32::from(hi.to_bits()) << 16) | u32::from(lo))
}

/// The upper (truncated bf16) and lower halves of an fp32 weight.
#[inline(always)]
pub(crate) fn split(w: f32) -> (bf16, u16) {
    let bits = w.to_bits();
    (bf16::from_bits((bits >> 16) as u16), bits as u16)
}

unsafe fn split_f32(src: &[f32], hi: &mut [bf16], lo: &mut [u16]) {
    for ((h, l), s) in hi.iter_mut().zip(lo.iter_mut()).zip(src) {
        (*h, *l) = split(*s);
    }
}

unsafe fn join_f32(hi: &[bf16], lo: &[u16], dst: &mut [f32]) {
    for ((d, h), l) in dst.iter_mut().zip(hi).zip(lo) {
        *d = join(*h, *l);
    }
}

unsafe fn sgd(w: &mut [f32], g: &[f32], lr: f32) {
    for (w, g) in w.iter_mut().zip(g) {
        *w -= lr * *g;
    }
}

unsafe fn split_sgd(hi: &mut [bf16], lo: &mut [u16], g: &[f32], lr: f32) {
    for ((h, l), g) in hi.iter_mut().zip(lo.iter_mut()).zip(g) {
        (*h, *l) = split(join(*h, *l) - lr * *g);
    }
}

/// Sum of 16 lanes by halves (8, 4, 2, 1): the order every backend's reductions use.
#[inline(always)]
pub(crate) fn reduce_halves(mut lanes: [f32; 16]) -> f32 {
    for width in [8, 4, 2, 1] {
        for j in 0..width {
            lanes[j] += lanes[j + width];
        }
    }
    lanes[0]
}

/// `dst[c][r] = src[r][c]`.
///
/// # Safety
///
/// `src` and `dst` hold `rows * cols` values.
pub(crate) unsafe fn transpose<L: Copy>(src: *const L, rows: usize, cols: usize, dst: *mut L) {
    let len = rows * cols;
    // SAFETY: both hold `len` values (caller) and do not overlap (one is borrowed shared,
    // the other exclusively, by the API).
    let (src, dst) = unsafe {
        (
            std::slice::from_raw_parts(src, len),
            std::slice::from_raw_parts_mut(dst, len),
        )
    };
    for (c, out) in dst.chunks_exact_mut(rows.max(1)).enumerate() {
        for (d, row) in out.iter_mut().zip(src.chunks_exact(cols)) {
            *d = row[c];
        }
    }
}

/// VNNI-2 pack: `dst[p][j] = (src[2p][j], src[2p + 1][j])`, the second half zero past `k`.
///
/// # Safety
///
/// `src` holds `k * n` values, `dst` `ceil(k / 2) * 2 * n`.
pub(crate) unsafe fn pack_pairs<L: Copy + Default>(src: *const L, k: usize, n: usize, dst: *mut L) {
    let packed = k.div_ceil(2) * 2 * n;
    // SAFETY: as the caller promises.
    let (src, dst) = unsafe {
        (
            std::slice::from_raw_parts(src, k * n),
            std::slice::from_raw_parts_mut(dst, packed),
        )
    };
    for (p, out) in dst.chunks_exact_mut(2 * n.max(1)).enumerate() {
        for (j, pair) in out.chunks_exact_mut(2).enumerate() {
            pair[0] = src[2 * p * n + j];
            pair[1] = if 2 * p + 1 < k {
                src[(2 * p + 1) * n + j]
            } else {
                L::default()
            };
        }
    }
}

/// The inverse of [`pack_pairs`].
///
/// # Safety
///
/// As [`pack_pairs`], with the roles of `src` and `dst` exchanged.
pub(crate) unsafe fn unpack_pairs<L: Copy>(src: *const L, k: usize, n: usize, dst: *mut L) {
    let packed = k.div_ceil(2) * 2 * n;
    // SAFETY: as the caller promises.
    let (src, dst) = unsafe {
        (
            std::slice::from_raw_parts(src, packed),
            std::slice::from_raw_parts_mut(dst, k * n),
        )
    };
    for (kk, row) in dst.chunks_exact_mut(n.max(1)).enumerate() {
        for (j, d) in row.iter_mut().enumerate() {
            *d = src[(kk / 2) * 2 * n + 2 * j + kk % 2];
        }
    }
}

/// Calls `$f::<T, I, O>($table, $bags, $out)` with the element and index types of a
/// [`PoolJob`] restored (the job was built from slices of exactly these types).
macro_rules! with_pool_types {
    ($job:expr, $f:ident, ($($arg:expr),*)) => {{
        let job = $job;
        match (job.table, job.bags, job.out) {
            ($crate::dtype::SliceRef::F32(t), $crate::abi::AnyBags::I32(b), $crate::dtype::SliceMut::F32(o)) => $f(t, &b, o, $($arg),*),
            ($crate::dtype::SliceRef::F32(t), $crate::abi::AnyBags::I32(b), $crate::dtype::SliceMut::Bf16(o)) => $f(t, &b, o, $($arg),*),
            ($crate::dtype::SliceRef::F32(t), $crate::abi::AnyBags::I64(b), $crate::dtype::SliceMut::F32(o)) => $f(t, &b, o, $($arg),*),
            ($crate::dtype::SliceRef::F32(t), $crate::abi::AnyBags::I64(b), $crate::dtype::SliceMut::Bf16(o)) => $f(t, &b, o, $($arg),*),
            ($crate::dtype::SliceRef::Bf16(t), $crate::abi::AnyBags::I32(b), $crate::dtype::SliceMut::F32(o)) => $f(t, &b, o, $($arg),*),
            ($crate::dtype::SliceRef::Bf16(t), $crate::abi::AnyBags::I32(b), $crate::dtype::SliceMut::Bf16(o)) => $f(t, &b, o, $($arg),*),
            ($crate::dtype::SliceRef::Bf16(t), $crate::abi::AnyBags::I64(b), $crate::dtype::SliceMut::F32(o)) => $f(t, &b, o, $($arg),*),
            ($crate::dtype::SliceRef::Bf16(t), $crate::abi::AnyBags::I64(b), $crate::dtype::SliceMut::Bf16(o)) => $f(t, &b, o, $($arg),*),
        }
    }};
}
pub(crate) use with_pool_types;

unsafe fn pool(job: PoolJob<'_>) {
    let (dim, mean, stride) = (job.dim, job.mean, job.out_stride);
    with_pool_types!(job, pool_typed, (dim, mean, stride))
}

fn pool_typed<T: Element, I: BagIndex, O: Element>(
    table: &[T],
    bags: &Bags<'_, I>,
    out: &mut [O],
    dim: usize,
    mean: bool,
    stride: usize,
) {
    let mut acc = vec![0f32; dim];
    for b in 0..bags.offsets.len() {
        let range = bags.bag(b).expect("offsets were validated");
        acc.fill(0.0);
        for j in range.clone() {
            let r = bags.indices[j].to_i64() as usize;
            let row = &table[r * dim..][..dim];
            match bags.weights {
                Some(w) => {
                    let w = w[j];
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a += w * x.to_f32();
                    }
                }
                None => {
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a += x.to_f32();
                    }
                }
            }
        }
        if mean && !range.is_empty() {
            let scale = 1.0 / range.len() as f32;
            for a in acc.iter_mut() {
                *a *= scale;
            }
        }
        for (o, a) in out[b * stride..][..dim].iter_mut().zip(&acc) {
            *o = O::from_f32(*a);
        }
    }
}

/// `sum(x^2)` in 16 lanes, then by halves.
pub(crate) fn sum_squares(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for chunk in x.chunks(16) {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += *v * *v;
        }
    }
    reduce_halves(lanes)
}

unsafe fn apply(job: &ApplyJob<'_>, rows: RowsMut<'_>, update: RowUpdate<'_>) {
    // SAFETY: the scratch holds `dim` rounded up to whole vectors (the API allocates it);
    // the gradient rows were checked by the API, and `apply_order` reads them through a
    // slice of the extent the largest bag needs.
    let scratch = unsafe { std::slice::from_raw_parts_mut(job.scratch, job.dim) };
    match job.order {
        Orders::Runs(o) => apply_order(job, o, rows, update, scratch),
        Orders::Chains(o) => apply_order(job, o, rows, update, scratch),
    }
}

fn apply_order<O: Order>(
    job: &ApplyJob<'_>,
    order: O,
    mut rows: RowsMut<'_>,
    mut update: RowUpdate<'_>,
    acc: &mut [f32],
) {
    let (dim, lookups) = (job.dim, job.lookups);
    let grad_row = |l: &Lookup| {
        // SAFETY: the API checked that every lookup's bag row (`dim` floats from
        // `bag * grad_stride`) lies inside the gradient.
        unsafe { std::slice::from_raw_parts(job.grad.add(l.bag as usize * job.grad_stride), dim) }
    };
    let mut u = 0;
    while u < order.units() {
        let i = order.first(u);
        let row = lookups[i].row;
        acc.fill(0.0);
        let mut j = i;
        loop {
            let l = lookups[j];
            for (a, g) in acc.iter_mut().zip(grad_row(&l)) {
                *a += l.scale * *g;
            }
            match order.after(lookups, j) {
                Some(next) => j = next,
                None => break,
            }
        }
        let r = row as usize - job.first_row;
        let (lr, denom) = match &mut update {
            RowUpdate::Sgd { lr } => (*lr, None),
            RowUpdate::RowwiseAdagrad { lr, eps, state } => {
                let h = state[r] + sum_squares(acc) / dim as f32;
                state[r] = h;
                (*lr, Some(h.sqrt() + *eps))
            }
        };
        let step = |g: f32| match denom {
            None => lr * g,
            Some(d) => lr * (g / d),
        };
        match &mut rows {
            RowsMut::F32(w) => {
                for (w, g) in w[r * dim..][..dim].iter_mut().zip(acc.iter()) {
                    *w -= step(*g);
                }
            }
            RowsMut::Split { hi, lo } => {
                let (hi, lo) = (&mut hi[r * dim..][..dim], &mut lo[r * dim..][..dim]);
                for ((h, l), g) in hi.iter_mut().zip(lo.iter_mut()).zip(acc.iter()) {
                    (*h, *l) = split(join(*h, *l) - step(*g));
                }
            }
        }
        u = order.advance(u, j);
    }
}

/// Index of pair `(i, j)`, `j < i` (`j <= i` with the diagonal), in the interaction's order.
#[inline(always)]
pub(crate) fn pair_index(i: usize, j: usize, diagonal: bool) -> usize {
    if diagonal {
        i * (i + 1) / 2 + j
    } else {
        i * (i - 1) / 2 + j
    }
}

/// `s_ij` of the pair-dots backward: the pair's gradient, symmetric, the diagonal doubled.
#[inline(always)]
pub(crate) fn coefficient(grad: &[f32], i: usize, j: usize, diagonal: bool) -> f32 {
    match (i.cmp(&j), diagonal) {
        (std::cmp::Ordering::Greater, _) => grad[pair_index(i, j, diagonal)],
        (std::cmp::Ordering::Less, _) => grad[pair_index(j, i, diagonal)],
        (std::cmp::Ordering::Equal, true) => 2.0 * grad[pair_index(i, i, true)],
        (std::cmp::Ordering::Equal, false) => 0.0,
    }
}

/// `a . b` in 16 lanes over chunks of 16, then by halves; a short last chunk adds zero
/// products in its missing lanes, as masked SIMD loads do (which matters for the sign of a
/// zero).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for (ca, cb) in a.chunks(16).zip(b.chunks(16)) {
        for (l, lane) in lanes.iter_mut().enumerate() {
            let (x, y) = (ca.get(l).copied(), cb.get(l).copied());
            *lane += x.unwrap_or(0.0) * y.unwrap_or(0.0);
        }
    }
    reduce_halves(lanes)
}

/// # Safety
///
/// `z` holds `f * d` values and `out` the pairs.
unsafe fn pair_dots_forward(z: *const f32, f: usize, d: usize, diagonal: bool, out: *mut f32) {
    let pairs = crate::pair_dots::PairDots::pairs(f, diagonal);
    // SAFETY: as the caller promises.
    let (z, out) = unsafe {
        (
            std::slice::from_raw_parts(z, f * d),
            std::slice::from_raw_parts_mut(out, pairs),
        )
    };
    let mut p = 0;
    for i in 0..f {
        for j in 0..i + usize::from(diagonal) {
            out[p] = dot(&z[i * d..][..d], &z[j * d..][..d]);
            p += 1;
        }
    }
}

/// # Safety
///
/// `z` and `dz` hold `f * d` values; `grad` holds the pairs.
unsafe fn pair_dots_backward(
    z: *const f32,
    f: usize,
    d: usize,
    diagonal: bool,
    grad: &[f32],
    dz: *mut f32,
) {
    // SAFETY: as the caller promises.
    let (z, dz) = unsafe {
        (
            std::slice::from_raw_parts(z, f * d),
            std::slice::from_raw_parts_mut(dz, f * d),
        )
    };
    for i in 0..f {
        let out = &mut dz[i * d..][..d];
        out.fill(0.0);
        for j in 0..f {
            let s = coefficient(grad, i, j, diagonal);
            for (o, x) in out.iter_mut().zip(&z[j * d..][..d]) {
                *o += s * x;
            }
        }
    }
}

pub(crate) unsafe fn sort_unique(values: &mut [u32]) -> usize {
    values.sort_unstable();
    let mut n = 0;
    for i in 0..values.len() {
        if n == 0 || values[i] != values[n - 1] {
            values[n] = values[i];
            n += 1;
        }
    }
    n
}

/// The element-wise bodies, generic over the element type and written so they
/// auto-vectorise; `#[inline(always)]` so a SIMD backend's shims compile them for its
/// registers. Each sums in the same order on every backend.
pub(crate) mod eltwise {
    use super::*;

    #[inline(always)]
    pub(crate) unsafe fn bias_act(
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

    #[inline(always)]
    pub(crate) unsafe fn act_backward(dy: SliceMut<'_>, y: SliceRef<'_>, act: Activation) {
        match (act, dy, y) {
            (Activation::None, ..) => {}
            // Branch-free selects, so the loops vectorise (a ReLU mask is a coin flip).
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
                    *d = bf16::from_bits(if positive { d.to_bits() } else { 0 });
                }
            }
            (Activation::Sigmoid, SliceMut::F32(d), SliceRef::F32(y)) => {
                for (d, y) in d.iter_mut().zip(y) {
                    *d *= y * (1.0 - y);
                }
            }
            (Activation::Sigmoid, SliceMut::Bf16(d), SliceRef::Bf16(y)) => {
                for (d, y) in d.iter_mut().zip(y) {
                    let y = y.to_f32();
                    *d = bf16::from_f32(d.to_f32() * (y * (1.0 - y)));
                }
            }
            (_, SliceMut::F32(_), SliceRef::Bf16(_)) | (_, SliceMut::Bf16(_), SliceRef::F32(_)) => {
                unreachable!("dy and y have the same element type")
            }
        }
    }

    #[inline(always)]
    fn column_sums_t<T: Element>(block: &[T], cols: usize, sums: &mut [f32]) {
        for row in block.chunks_exact(cols) {
            for (s, x) in sums.iter_mut().zip(row) {
                *s += x.to_f32();
            }
        }
    }

    #[inline(always)]
    pub(crate) unsafe fn column_sums(
        block: SliceRef<'_>,
        rows: usize,
        cols: usize,
        sums: &mut [f32],
    ) {
        let sums = &mut sums[..cols];
        match block {
            SliceRef::F32(b) => column_sums_t(&b[..rows * cols], cols, sums),
            SliceRef::Bf16(b) => column_sums_t(&b[..rows * cols], cols, sums),
        }
    }

    #[inline(always)]
    fn column_sums_vnni_t<T: Element>(packed: &[T], rows: usize, cols: usize, sums: &mut [f32]) {
        for (p, pair) in packed.chunks_exact(2 * cols.max(1)).enumerate() {
            let pairs = sums.iter_mut().zip(pair.chunks_exact(2));
            if 2 * p + 1 < rows {
                pairs.for_each(|(s, x)| *s = *s + x[0].to_f32() + x[1].to_f32());
            } else {
                pairs.for_each(|(s, x)| *s += x[0].to_f32());
            }
        }
    }

    #[inline(always)]
    pub(crate) unsafe fn column_sums_vnni(
        packed: SliceRef<'_>,
        rows: usize,
        cols: usize,
        sums: &mut [f32],
    ) {
        let (sums, len) = (&mut sums[..cols], crate::vnni::packed_len(rows, cols));
        match packed {
            SliceRef::F32(p) => column_sums_vnni_t(&p[..len], rows, cols, sums),
            SliceRef::Bf16(p) => column_sums_vnni_t(&p[..len], rows, cols, sums),
        }
    }

    #[inline(always)]
    fn row_dots_t<T: Element>(block: &[T], cols: usize, w: &[T], acc: &mut [f32]) {
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
            *a += reduce_halves(lanes);
        }
    }

    #[inline(always)]
    pub(crate) unsafe fn row_dots(
        block: SliceRef<'_>,
        rows: usize,
        cols: usize,
        w: SliceRef<'_>,
        acc: &mut [f32],
    ) {
        let acc = &mut acc[..rows];
        match (block, w) {
            (SliceRef::F32(b), SliceRef::F32(w)) => {
                row_dots_t(&b[..rows * cols], cols, &w[..cols], acc)
            }
            (SliceRef::Bf16(b), SliceRef::Bf16(w)) => {
                row_dots_t(&b[..rows * cols], cols, &w[..cols], acc)
            }
            (SliceRef::F32(_), SliceRef::Bf16(_)) | (SliceRef::Bf16(_), SliceRef::F32(_)) => {
                unreachable!("block and w have the same element type")
            }
        }
    }
}
