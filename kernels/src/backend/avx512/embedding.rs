//! AVX-512 (F, BW, VL, DQ) embedding-bag kernels: pooling with software prefetch, and the
//! fused coalesce-and-update. Generic bodies, thin `#[target_feature]` shims.
//!
//! The arithmetic matches the portable backend operation for operation (products rounded
//! before they are added, the same lane order for sums of squares), so every backend gives
//! the same bits.

use core::arch::x86_64::*;

use super::{Zmm, lanes, reduce_halves};
use crate::abi::{ApplyJob, Order, Orders, PoolJob};
use crate::backend::portable::with_pool_types;
use crate::backend::x86::vector::OutElem;
use crate::embedding::types::{BagIndex, Bags, RowUpdate, RowsMut};
use crate::prefetch;

/// Largest number of zmm accumulators a pooled row block keeps in registers (128 floats).
const MAX_NV: usize = 8;

/// Bytes of each row that one pooling pass over the bags gathers: an adjacent-line pair.
/// Longer rows take several passes, each gathering one span of every row. On Zen 4, fp32
/// rows of 64 (256 bytes) pooled in two passes of 128 bytes ran 10-15% faster than in one
/// pass (a run of four lines seems to set the hardware prefetchers fetching lines past the
/// row, which no one reads), and passes of 64 bytes slower. (The update keeps whole rows:
/// there, a second pass walks the chains and reads the gradients again, and measured
/// slower.)
const SPAN_BYTES: usize = 128;

/// Pool every bag of `bags` in column blocks of up to `16 * NV` floats kept in registers.
///
/// # Safety
///
/// As [`pool`]. Each pass over a bag covers `16 * NV` columns of its rows.
#[inline(always)]
unsafe fn pool_nv<T: OutElem, I: BagIndex, O: OutElem, const NV: usize, const W: bool>(
    table: &[T],
    dim: usize,
    bags: &Bags<'_, I>,
    mean: bool,
    prefetch: usize,
    out: &mut [O],
    stride: usize,
) {
    let (tp, idx, op) = (table.as_ptr(), bags.indices.as_ptr(), out.as_mut_ptr());
    let wp = bags.weights.map_or(std::ptr::null(), <[f32]>::as_ptr);
    let end = bags.end;
    let esize = size_of::<T>();
    let nb = bags.offsets.len();
    // Span by span (the outer loop), so the prefetches run ahead across bag boundaries.
    let mut col0 = 0;
    while col0 < dim {
        let cols = (dim - col0).min(16 * NV);
        let masks: [__mmask16; NV] = core::array::from_fn(|v| lanes(cols.saturating_sub(16 * v)));
        for b in 0..nb {
            let s = bags.offsets[b].to_i64() as usize;
            let e = match bags.offsets.get(b + 1) {
                Some(o) => o.to_i64() as usize,
                None => end,
            };
            // SAFETY: register-only AVX-512F operation (this body is only inlined into the
            // `#[target_feature]` shim `pool`).
            let mut acc = unsafe { [_mm512_setzero_ps(); NV] };
            for j in s..e {
                // SAFETY: s <= j < e <= end <= indices.len() (offsets validated), so
                // `idx.add(j)` is an index of this bag; it was checked to be a row of the
                // table, so the row block starting at `r * dim + col0` with `cols` elements
                // lies inside `table`; with weights, `weights.len() == indices.len()`. The
                // prefetched index is at a position below `end`, likewise checked.
                unsafe {
                    if prefetch > 0 && j + prefetch < end {
                        let r = (*idx.add(j + prefetch)).to_i64() as usize;
                        prefetch::span(tp.add(r * dim + col0) as usize, cols * esize);
                    }
                    let r = (*idx.add(j)).to_i64() as usize;
                    let p = tp.add(r * dim + col0);
                    if W {
                        let w = _mm512_set1_ps(*wp.add(j));
                        for (v, a) in acc.iter_mut().enumerate() {
                            let x = T::load::<Zmm>(p.add(16 * v), masks[v]);
                            *a = _mm512_add_ps(*a, _mm512_mul_ps(w, x));
                        }
                    } else {
                        for (v, a) in acc.iter_mut().enumerate() {
                            *a = _mm512_add_ps(*a, T::load::<Zmm>(p.add(16 * v), masks[v]));
                        }
                    }
                }
            }
            if mean && e > s {
                // SAFETY: register-only AVX-512F operations, as above.
                unsafe {
                    let scale = _mm512_set1_ps(1.0 / (e - s) as f32);
                    for a in acc.iter_mut() {
                        *a = _mm512_mul_ps(*a, scale);
                    }
                }
            }
            for (v, a) in acc.iter().enumerate() {
                // SAFETY: bag b's output row `out[b * stride..][..dim]` lies inside `out`
                // (checked by the caller); masked lanes stay below `dim`.
                unsafe { O::store::<Zmm>(op.add(b * stride + col0 + 16 * v), masks[v], *a) };
            }
        }
        col0 += 16 * NV;
    }
}

/// The columns one pooling pass covers for rows of `dim` elements of `T`: [`SPAN_BYTES`],
/// at least 16 (one vector).
#[inline(always)]
fn span_cols<T>(dim: usize) -> usize {
    (SPAN_BYTES / size_of::<T>()).max(16).min(dim)
}

/// Pool every bag of `bags` into `out[b * stride..][..dim]`.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `bags` passed `check_offsets` and `check_indices` for
/// `table.len() / dim` rows; `(bags.len() - 1) * stride + dim <= out.len()` and `dim > 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn pool_typed<T: OutElem, I: BagIndex, O: OutElem>(
    table: &[T],
    bags: &Bags<'_, I>,
    out: &mut [O],
    dim: usize,
    mean: bool,
    prefetch: usize,
    stride: usize,
) {
    macro_rules! go {
        ($nv:literal) => {
            if bags.weights.is_some() {
                // SAFETY: forwarded from the caller; $nv vectors cover min(dim, 128).
                unsafe {
                    pool_nv::<T, I, O, $nv, true>(table, dim, bags, mean, prefetch, out, stride)
                }
            } else {
                // SAFETY: as above.
                unsafe {
                    pool_nv::<T, I, O, $nv, false>(table, dim, bags, mean, prefetch, out, stride)
                }
            }
        };
    }
    match span_cols::<T>(dim).div_ceil(16).min(MAX_NV) {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        5 => go!(5),
        6 => go!(6),
        7 => go!(7),
        _ => go!(8),
    }
}

/// The pooling entry: [`pool_typed`] with the job's element and index types.
///
/// # Safety
///
/// As [`crate::abi::PoolFn`].
pub(crate) unsafe fn pool(job: PoolJob<'_>) {
    let (dim, mean, prefetch, stride) = (job.dim, job.mean, job.prefetch, job.out_stride);
    // SAFETY: the job was validated as `PoolJob` says, which is what `pool_typed` needs.
    unsafe { with_pool_types!(job, pool_typed, (dim, mean, prefetch, stride)) }
}

/// The `i`-th vector the update visits of a row of `nvec`: the row's [`SPAN_BYTES`] spans
/// (of `span` vectors) from the last to the first, each span's vectors in ascending order. A
/// row read front to back as one run of four or more lines (fp32 x 64 is four) sets the
/// hardware prefetchers fetching the lines after it, which belong to no row the update
/// touches; fp32 x 64 updated in the order 2, 3, 0, 1 measured 7-15% faster than 0, 1, 2, 3
/// on Zen 4 (fully descending gained less). Rows of one span (bf16 x 64) keep a straight
/// loop, which measured faster for them than going through this mapping.
#[inline(always)]
fn span_vec(i: usize, nvec: usize, span: usize) -> usize {
    let last = (nvec - 1) / span;
    let last_len = nvec - last * span;
    if i < last_len {
        last * span + i
    } else {
        let j = i - last_len;
        (last - 1 - j / span) * span + j % span
    }
}

#[cfg(test)]
#[test]
fn span_vec_visits_every_vector_once_spans_last_first() {
    let order = |nvec, span| {
        (0..nvec)
            .map(|i| span_vec(i, nvec, span))
            .collect::<Vec<_>>()
    };
    assert_eq!(order(4, 2), [2, 3, 0, 1]);
    assert_eq!(order(5, 2), [4, 2, 3, 0, 1]);
    assert_eq!(order(4, 4), [0, 1, 2, 3]);
    assert_eq!(order(3, 4), [0, 1, 2]);
    assert_eq!(order(9, 4), [8, 4, 5, 6, 7, 0, 1, 2, 3]);
    assert_eq!(order(1, 2), [0]);
}

/// Master-weight rows: loaded as f32, stored back.
trait MasterRows: Copy {
    /// Vectors of 16 elements per [`SPAN_BYTES`] span of the arrays the rows live in.
    const SPAN_VECS: usize;
    /// The f32 master weights of the lanes on `mask` at element offset `off`.
    unsafe fn load(self, off: usize, mask: __mmask16) -> __m512;
    /// Store the lanes on `mask` at element offset `off`.
    unsafe fn store(self, off: usize, mask: __mmask16, v: __m512);
    /// Prefetch the `dim` elements at element offset `off`.
    unsafe fn prefetch(self, off: usize, dim: usize);
}

#[derive(Clone, Copy)]
struct F32Rows(*mut f32);

impl MasterRows for F32Rows {
    const SPAN_VECS: usize = SPAN_BYTES / 64;
    #[inline(always)]
    unsafe fn load(self, off: usize, mask: __mmask16) -> __m512 {
        // SAFETY: the lanes on `mask` at `off` are inside the block (caller).
        unsafe { _mm512_maskz_loadu_ps(mask, self.0.add(off)) }
    }
    #[inline(always)]
    unsafe fn store(self, off: usize, mask: __mmask16, v: __m512) {
        // SAFETY: as for `load`.
        unsafe { _mm512_mask_storeu_ps(self.0.add(off), mask, v) }
    }
    #[inline(always)]
    unsafe fn prefetch(self, off: usize, dim: usize) {
        // SAFETY: `off` is the start of a row inside the block (caller).
        prefetch::span(unsafe { self.0.add(off) } as usize, dim * 4);
    }
}

/// Split-SGD halves: `hi` (bf16 bits) and `lo`, joined to the exact f32 on load.
#[derive(Clone, Copy)]
struct SplitRows {
    hi: *mut u16,
    lo: *mut u16,
}

impl MasterRows for SplitRows {
    const SPAN_VECS: usize = SPAN_BYTES / 32;
    #[inline(always)]
    unsafe fn load(self, off: usize, mask: __mmask16) -> __m512 {
        // SAFETY: the lanes on `mask` at `off` are inside both halves (caller).
        unsafe {
            let h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, self.hi.add(off).cast()));
            let l = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, self.lo.add(off).cast()));
            _mm512_castsi512_ps(_mm512_or_si512(_mm512_slli_epi32::<16>(h), l))
        }
    }
    #[inline(always)]
    unsafe fn store(self, off: usize, mask: __mmask16, v: __m512) {
        // SAFETY: as for `load`; the narrowing stores write only the lanes on `mask`.
        unsafe {
            let bits = _mm512_castps_si512(v);
            _mm512_mask_cvtepi32_storeu_epi16(
                self.hi.add(off).cast(),
                mask,
                _mm512_srli_epi32::<16>(bits),
            );
            _mm512_mask_cvtepi32_storeu_epi16(self.lo.add(off).cast(), mask, bits);
        }
    }
    #[inline(always)]
    unsafe fn prefetch(self, off: usize, dim: usize) {
        // SAFETY: `off` is the start of a row inside both halves (caller).
        unsafe {
            prefetch::span(self.hi.add(off) as usize, dim * 2);
            prefetch::span(self.lo.add(off) as usize, dim * 2);
        }
    }
}

/// `row[v] -= lr * g[v]`, divided by `denom` when given (Adagrad), for vector `v` of the
/// row at `off`, `g` being the coalesced gradient in the scratch.
///
/// # Safety
///
/// The row's vector `v` lies inside the rows (lanes past `dim` are masked), the scratch holds
/// vector `v`; the CPU has AVX-512F (inlined into the `#[target_feature]` shim only).
#[inline(always)]
unsafe fn update_vec<R: MasterRows>(
    rows: R,
    off: usize,
    v: usize,
    dim: usize,
    sc: *const f32,
    lrv: __m512,
    denom: Option<__m512>,
) {
    let m = lanes(dim - 16 * v);
    // SAFETY: as the caller promises.
    unsafe {
        let g = _mm512_loadu_ps(sc.add(16 * v));
        let step = match denom {
            Some(d) => _mm512_mul_ps(lrv, _mm512_div_ps(g, d)),
            None => _mm512_mul_ps(lrv, g),
        };
        let w = rows.load(off + 16 * v, m);
        rows.store(off + 16 * v, m, _mm512_sub_ps(w, step));
    }
}

/// Coalesce the lookups of each row (in `job.order`) and update each row once.
///
/// # Safety
///
/// As [`apply`]; `state` is null for SGD (`ADAGRAD == false`), else covers every block row.
#[inline(always)]
unsafe fn apply_body<O: Order, R: MasterRows, const ADAGRAD: bool>(
    job: &ApplyJob<'_>,
    order: O,
    rows: R,
    lr: f32,
    eps: f32,
    state: *mut f32,
) {
    let (dim, lookups) = (job.dim, job.lookups);
    let units = order.units();
    let nvec = dim.div_ceil(16);
    // SAFETY: register-only AVX-512F operation (this body is only inlined into the
    // `#[target_feature]` shim `apply`).
    let lrv = unsafe { _mm512_set1_ps(lr) };
    let sc = job.scratch;
    let mut u = 0;
    while u < units {
        let i = order.first(u);
        let row = lookups[i].row;
        if job.prefetch > 0 && u + job.prefetch < units {
            let mut a = order.first(u + job.prefetch);
            let r = lookups[a].row as usize - job.first_row;
            // SAFETY: every lookup's row is inside the block and its bag's gradient row
            // inside the gradient (caller); prefetches are hints.
            unsafe {
                rows.prefetch(r * dim, dim);
                if ADAGRAD {
                    prefetch::span(state.add(r) as usize, 4);
                }
            }
            // The gradient rows of all the unit's lookups (with chains, the loads of a
            // repeat's gradient row would otherwise wait on the chain walk).
            loop {
                let bag = lookups[a].bag as usize;
                // SAFETY: as above.
                unsafe { prefetch::span(job.grad.add(bag * job.grad_stride) as usize, dim * 4) };
                match order.after(lookups, a) {
                    Some(next) => a = next,
                    None => break,
                }
            }
        }
        let mut j = i;
        loop {
            let l = lookups[j];
            // SAFETY: register-only AVX-512F operation, as above.
            let s = unsafe { _mm512_set1_ps(l.scale) };
            // SAFETY: the gradient row of `l.bag` holds `dim` floats (caller); lanes past
            // `dim` are masked off; the scratch holds `nvec` whole vectors.
            unsafe {
                let g = job.grad.add(l.bag as usize * job.grad_stride);
                for v in 0..nvec {
                    let m = lanes(dim - 16 * v);
                    let a = if j == i {
                        _mm512_setzero_ps()
                    } else {
                        _mm512_loadu_ps(sc.add(16 * v))
                    };
                    let x = _mm512_maskz_loadu_ps(m, g.add(16 * v));
                    _mm512_storeu_ps(sc.add(16 * v), _mm512_add_ps(a, _mm512_mul_ps(s, x)));
                }
            }
            match order.after(lookups, j) {
                Some(next) => j = next,
                None => break,
            }
        }
        let r = row as usize - job.first_row;
        let off = r * dim;
        // Adagrad divides the step by the row's root mean square; SGD takes it as it is.
        let denom = if ADAGRAD {
            // SAFETY: scratch vector v exists for v < nvec; lanes past `dim` are zeroed by
            // the mask; `r` is a row of the block and `state` covers every row (caller); the
            // rest is register-only AVX-512F work, as above.
            Some(unsafe {
                let mut p = _mm512_setzero_ps();
                for v in 0..nvec {
                    let a = _mm512_loadu_ps(sc.add(16 * v));
                    p = _mm512_add_ps(p, _mm512_maskz_mul_ps(lanes(dim - 16 * v), a, a));
                }
                let h = *state.add(r) + reduce_halves(p) / dim as f32;
                *state.add(r) = h;
                _mm512_set1_ps(h.sqrt() + eps)
            })
        } else {
            None
        };
        // SAFETY: scratch vectors v < nvec exist; row `r` lies inside the block (caller).
        unsafe {
            if nvec <= R::SPAN_VECS {
                for v in 0..nvec {
                    update_vec(rows, off, v, dim, sc, lrv, denom);
                }
            } else {
                for i in 0..nvec {
                    update_vec(
                        rows,
                        off,
                        span_vec(i, nvec, R::SPAN_VECS),
                        dim,
                        sc,
                        lrv,
                        denom,
                    );
                }
            }
        }
        u = order.advance(u, j);
    }
}

/// The fused update of one block of rows.
///
/// # Safety
///
/// The CPU has AVX-512 F/BW/VL/DQ; `BagKernel::apply` checked that every lookup's row is in
/// `[first_row, first_row + block rows)` and its bag's gradient row inside the gradient, that
/// `hi` and `lo` have equal lengths, and that the Adagrad state covers the block's rows; the
/// scratch holds `dim.next_multiple_of(16)` floats; `dim > 0`. (`job.order` needs no
/// promise: it is indexed with bounds checks.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn apply(job: &ApplyJob<'_>, rows: RowsMut<'_>, update: RowUpdate<'_>) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match job.order {
            Orders::Runs(o) => apply_order(job, o, rows, update),
            Orders::Chains(o) => apply_order(job, o, rows, update),
        }
    }
}

/// [`apply`] in one visiting order.
///
/// # Safety
///
/// As [`apply`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn apply_order<O: Order>(
    job: &ApplyJob<'_>,
    order: O,
    rows: RowsMut<'_>,
    update: RowUpdate<'_>,
) {
    let (lr, eps, state) = match update {
        RowUpdate::Sgd { lr } => (lr, 0.0, std::ptr::null_mut()),
        RowUpdate::RowwiseAdagrad { lr, eps, state } => (lr, eps, state.as_mut_ptr()),
    };
    let adagrad = !state.is_null();
    // SAFETY: forwarded from the caller; the pointers come from the exclusive borrows in
    // `rows` and `update`, which live for the whole call.
    unsafe {
        match (rows, adagrad) {
            (RowsMut::F32(w), false) => {
                apply_body::<_, _, false>(job, order, F32Rows(w.as_mut_ptr()), lr, eps, state)
            }
            (RowsMut::F32(w), true) => {
                apply_body::<_, _, true>(job, order, F32Rows(w.as_mut_ptr()), lr, eps, state)
            }
            (RowsMut::Split { hi, lo }, ada) => {
                let split = SplitRows {
                    hi: hi.as_mut_ptr().cast(),
                    lo: lo.as_mut_ptr(),
                };
                if ada {
                    apply_body::<_, _, true>(job, order, split, lr, eps, state)
                } else {
                    apply_body::<_, _, false>(job, order, split, lr, eps, state)
                }
            }
        }
    }
}
