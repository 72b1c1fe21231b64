//! The embedding-bag bodies of the x86 SIMD backends, written once against [`Vector`]:
//! pooling with software prefetch, and the fused coalesce-and-update. Each backend calls them
//! from thin `#[target_feature]` shims ([`pool_typed`] and [`apply_order`] instantiated with
//! its register type).
//!
//! The arithmetic matches the portable backend operation for operation (products rounded
//! before they are added, sums of squares in 16 lanes then by halves), so every backend, of
//! whatever register width, gives the same bits.

use super::vector::{OutElem, Vector};
use crate::abi::{ApplyJob, Order};
use crate::embedding::types::{BagIndex, Bags, RowUpdate, RowsMut};
use crate::prefetch;

/// Largest number of accumulators a pooled row block keeps in registers (128 floats in
/// zmm, 64 in ymm).
const MAX_NV: usize = 8;

/// Bytes of each row that one pooling pass over the bags gathers: an adjacent-line pair.
/// Longer rows take several passes, each gathering one span of every row. On Zen 4, fp32
/// rows of 64 (256 bytes) pooled in two passes of 128 bytes ran 10-15% faster than in one
/// pass (a run of four lines seems to set the hardware prefetchers fetching lines past the
/// row, which no one reads), and passes of 64 bytes slower. (The update keeps whole rows:
/// there, a second pass walks the chains and reads the gradients again, and measured
/// slower.)
const SPAN_BYTES: usize = 128;

/// Pool every bag of `bags` in column blocks of up to `LANES * NV` floats kept in registers.
///
/// # Safety
///
/// As [`pool_typed`]. Each pass over a bag covers `LANES * NV` columns of its rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pool_nv<
    V: Vector,
    T: OutElem,
    I: BagIndex,
    O: OutElem,
    const NV: usize,
    const W: bool,
>(
    table: &[T],
    dim: usize,
    bags: &Bags<'_, I>,
    mean: bool,
    prefetch: usize,
    out: &mut [O],
    stride: usize,
) {
    let lanes = V::LANES;
    // Span by span (the outer loop), so the prefetches run ahead across bag boundaries.
    let mut col0 = 0;
    while col0 < dim {
        let cols = (dim - col0).min(lanes * NV);
        let args = (table, dim, bags, mean, prefetch, col0, cols);
        // SAFETY: forwarded from the caller; the span's columns are inside the rows. A span of
        // whole vectors takes whole loads, two vectors at a time (backends that cannot mask
        // every load then load without a test, and may widen bf16 pairs more cheaply).
        unsafe {
            if cols == lanes * NV {
                pool_span::<V, T, I, O, NV, W, true>(args, [V::all(); NV], out, stride)
            } else {
                let masks = core::array::from_fn(|v| V::first(cols.saturating_sub(lanes * v)));
                pool_span::<V, T, I, O, NV, W, false>(args, masks, out, stride)
            }
        }
        col0 += lanes * NV;
    }
}

/// The span of `cols` columns at `col0` of every bag, `masks` covering them; with `WHOLE`,
/// `cols` is `LANES * NV` and pairs of vectors are loaded with [`OutElem::load_x2`] (their
/// sums put back in element order before the store).
///
/// # Safety
///
/// As [`pool_nv`], for one span inside the rows.
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn pool_span<
    V: Vector,
    T: OutElem,
    I: BagIndex,
    O: OutElem,
    const NV: usize,
    const W: bool,
    const WHOLE: bool,
>(
    (table, dim, bags, mean, prefetch, col0, cols): (
        &[T],
        usize,
        &Bags<'_, I>,
        bool,
        usize,
        usize,
        usize,
    ),
    masks: [V::Mask; NV],
    out: &mut [O],
    stride: usize,
) {
    let lanes = V::LANES;
    let (tp, idx, op) = (table.as_ptr(), bags.indices.as_ptr(), out.as_mut_ptr());
    let wp = bags.weights.map_or(std::ptr::null(), <[f32]>::as_ptr);
    let end = bags.end;
    let esize = size_of::<T>();
    let nb = bags.offsets.len();
    // Vectors loaded in pairs (the rest one at a time).
    let paired = if WHOLE { NV / 2 * 2 } else { 0 };
    for b in 0..nb {
        let s = bags.offsets[b].to_i64() as usize;
        let e = match bags.offsets.get(b + 1) {
            Some(o) => o.to_i64() as usize,
            None => end,
        };
        // SAFETY: register-only operation (this body is only inlined into the backends'
        // `#[target_feature]` shims).
        let mut acc = unsafe { [V::zero(); NV] };
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
                let w = if W { V::splat(*wp.add(j)) } else { V::zero() };
                let add = |a: V::F, x: V::F| {
                    if W {
                        V::add(a, V::mul(w, x))
                    } else {
                        V::add(a, x)
                    }
                };
                for v in (0..paired).step_by(2) {
                    let [x0, x1] = T::load_x2::<V>(p.add(lanes * v));
                    acc[v] = add(acc[v], x0);
                    acc[v + 1] = add(acc[v + 1], x1);
                }
                for v in paired..NV {
                    acc[v] = add(acc[v], T::load::<V>(p.add(lanes * v), masks[v]));
                }
            }
        }
        if mean && e > s {
            // SAFETY: register-only operations, as above.
            unsafe {
                let scale = V::splat(1.0 / (e - s) as f32);
                for a in acc.iter_mut() {
                    *a = V::mul(*a, scale);
                }
            }
        }
        for v in (0..paired).step_by(2) {
            // SAFETY: register-only operations, as above.
            [acc[v], acc[v + 1]] = unsafe { T::unsplit_x2::<V>([acc[v], acc[v + 1]]) };
        }
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: bag b's output row `out[b * stride..][..dim]` lies inside `out`
            // (checked by the caller); masked lanes stay below `dim`.
            unsafe { O::store::<V>(op.add(b * stride + col0 + lanes * v), masks[v], *a) };
        }
    }
}

/// The columns one pooling pass covers for rows of `dim` elements of `T`: [`SPAN_BYTES`],
/// at least one vector of `lanes`.
#[inline(always)]
fn span_cols<T>(dim: usize, lanes: usize) -> usize {
    (SPAN_BYTES / size_of::<T>()).max(lanes).min(dim)
}

/// Pool every bag of `bags` into `out[b * stride..][..dim]`.
///
/// # Safety
///
/// The CPU has what `V` needs (callers are `#[target_feature]` shims); `bags` passed
/// `check_offsets` and `check_indices` for `table.len() / dim` rows;
/// `(bags.len() - 1) * stride + dim <= out.len()` and `dim > 0`.
#[inline(always)]
pub(crate) unsafe fn pool_typed<V: Vector, T: OutElem, I: BagIndex, O: OutElem>(
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
                // SAFETY: forwarded from the caller; $nv vectors cover the span.
                unsafe {
                    pool_nv::<V, T, I, O, $nv, true>(table, dim, bags, mean, prefetch, out, stride)
                }
            } else {
                // SAFETY: as above.
                unsafe {
                    pool_nv::<V, T, I, O, $nv, false>(table, dim, bags, mean, prefetch, out, stride)
                }
            }
        };
    }
    match span_cols::<T>(dim, V::LANES).div_ceil(V::LANES).min(MAX_NV) {
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
trait MasterRows<V: Vector>: Copy {
    /// Vectors of `V::LANES` elements per [`SPAN_BYTES`] span of the arrays the rows live in.
    const SPAN_VECS: usize;
    /// The f32 master weights of the lanes on `mask` at element offset `off`.
    unsafe fn load(self, off: usize, mask: V::Mask) -> V::F;
    /// Store the lanes on `mask` at element offset `off`.
    unsafe fn store(self, off: usize, mask: V::Mask, v: V::F);
    /// Prefetch the `dim` elements at element offset `off`.
    unsafe fn prefetch(self, off: usize, dim: usize);
}

#[derive(Clone, Copy)]
struct F32Rows(*mut f32);

impl<V: Vector> MasterRows<V> for F32Rows {
    const SPAN_VECS: usize = SPAN_BYTES / (4 * V::LANES);
    #[inline(always)]
    unsafe fn load(self, off: usize, mask: V::Mask) -> V::F {
        // SAFETY: the lanes on `mask` at `off` are inside the block (caller).
        unsafe { V::load(self.0.add(off), mask) }
    }
    #[inline(always)]
    unsafe fn store(self, off: usize, mask: V::Mask, v: V::F) {
        // SAFETY: as for `load`.
        unsafe { V::store(self.0.add(off), mask, v) }
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

impl<V: Vector> MasterRows<V> for SplitRows {
    const SPAN_VECS: usize = SPAN_BYTES / (2 * V::LANES);
    #[inline(always)]
    unsafe fn load(self, off: usize, mask: V::Mask) -> V::F {
        // SAFETY: the lanes on `mask` at `off` are inside both halves (caller).
        unsafe { V::load_split(self.hi.add(off), self.lo.add(off), mask) }
    }
    #[inline(always)]
    unsafe fn store(self, off: usize, mask: V::Mask, v: V::F) {
        // SAFETY: as for `load`; only the lanes on `mask` are written.
        unsafe { V::store_split(self.hi.add(off), self.lo.add(off), mask, v) }
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
/// vector `v`; the CPU has what `V` needs (inlined into the `#[target_feature]` shims only).
#[inline(always)]
unsafe fn update_vec<V: Vector, R: MasterRows<V>>(
    rows: R,
    off: usize,
    v: usize,
    dim: usize,
    sc: *const f32,
    lrv: V::F,
    denom: Option<V::F>,
) {
    let lanes = V::LANES;
    let m = V::first(dim - lanes * v);
    // SAFETY: as the caller promises.
    unsafe {
        let g = V::loadu(sc.add(lanes * v));
        let step = match denom {
            Some(d) => V::mul(lrv, V::div(g, d)),
            None => V::mul(lrv, g),
        };
        let w = rows.load(off + lanes * v, m);
        rows.store(off + lanes * v, m, V::sub(w, step));
    }
}

/// Coalesce the lookups of each row (in `job.order`) and update each row once.
///
/// # Safety
///
/// As [`apply_order`]; `state` is null for SGD (`ADAGRAD == false`), else covers every block
/// row.
#[inline(always)]
unsafe fn apply_body<V: Vector, O: Order, R: MasterRows<V>, const ADAGRAD: bool>(
    job: &ApplyJob<'_>,
    order: O,
    rows: R,
    lr: f32,
    eps: f32,
    state: *mut f32,
) {
    let lanes = V::LANES;
    let (dim, lookups) = (job.dim, job.lookups);
    let units = order.units();
    let nvec = dim.div_ceil(lanes);
    // SAFETY: register-only operation (this body is only inlined into the backends'
    // `#[target_feature]` shims).
    let lrv = unsafe { V::splat(lr) };
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
            // SAFETY: register-only operation, as above.
            let s = unsafe { V::splat(l.scale) };
            // SAFETY: the gradient row of `l.bag` holds `dim` floats (caller); lanes past
            // `dim` are masked off; the scratch holds `nvec` whole vectors.
            unsafe {
                let g = job.grad.add(l.bag as usize * job.grad_stride);
                for v in 0..nvec {
                    let m = V::first(dim - lanes * v);
                    let a = if j == i {
                        V::zero()
                    } else {
                        V::loadu(sc.add(lanes * v))
                    };
                    let x = V::load(g.add(lanes * v), m);
                    V::storeu(sc.add(lanes * v), V::add(a, V::mul(s, x)));
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
            // rest is register-only work, as above. The squares are summed in 16 lanes (one
            // accumulator per `LANES` of them), then by halves, as the portable code does.
            Some(unsafe {
                let mut p = [V::zero(); 2];
                for v in 0..nvec {
                    let a = V::loadu(sc.add(lanes * v));
                    let q = v % V::PARTS16;
                    p[q] = V::add(p[q], V::keep(V::first(dim - lanes * v), V::mul(a, a)));
                }
                let h = *state.add(r) + V::reduce16(p) / dim as f32;
                *state.add(r) = h;
                V::splat(h.sqrt() + eps)
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

/// The fused update of one block of rows in one visiting order.
///
/// # Safety
///
/// The CPU has what `V` needs (callers are `#[target_feature]` shims); `BagKernel::apply`
/// checked that every lookup's row is in `[first_row, first_row + block rows)` and its bag's
/// gradient row inside the gradient, that `hi` and `lo` have equal lengths, and that the
/// Adagrad state covers the block's rows; the scratch holds `dim.next_multiple_of(16)`
/// floats; `dim > 0`. (`job.order` needs no promise: it is indexed with bounds checks.)
#[inline(always)]
pub(crate) unsafe fn apply_order<V: Vector, O: Order>(
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
                apply_body::<V, _, _, false>(job, order, F32Rows(w.as_mut_ptr()), lr, eps, state)
            }
            (RowsMut::F32(w), true) => {
                apply_body::<V, _, _, true>(job, order, F32Rows(w.as_mut_ptr()), lr, eps, state)
            }
            (RowsMut::Split { hi, lo }, ada) => {
                let split = SplitRows {
                    hi: hi.as_mut_ptr().cast(),
                    lo: lo.as_mut_ptr(),
                };
                if ada {
                    apply_body::<V, _, _, true>(job, order, split, lr, eps, state)
                } else {
                    apply_body::<V, _, _, false>(job, order, split, lr, eps, state)
                }
            }
        }
    }
}

/// A backend's embedding entries: `shims!("its,features", Register)` expands, in the
/// invoking module, to the table entries `pool` and `apply` (with `#[target_feature]` shims
/// per element and index type, and per visiting order) over the bodies above, instantiated
/// with the backend's [`Vector`] type.
macro_rules! shims {
    ($features:literal, $v:ty) => {
        use $crate::abi::{ApplyJob, Order, Orders, PoolJob};
        use $crate::backend::x86::vector::OutElem;
        use $crate::embedding::types::{BagIndex, Bags, RowUpdate, RowsMut};

        /// Pool every bag of `bags` into `out[b * stride..][..dim]`.
        ///
        /// # Safety
        ///
        /// The CPU has this backend's features; otherwise as the body
        /// `backend::x86::embedding::pool_typed`.
        #[target_feature(enable = $features)]
        unsafe fn pool_typed<T: OutElem, I: BagIndex, O: OutElem>(
            table: &[T],
            bags: &Bags<'_, I>,
            out: &mut [O],
            dim: usize,
            mean: bool,
            prefetch: usize,
            stride: usize,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe {
                $crate::backend::x86::embedding::pool_typed::<$v, T, I, O>(
                    table, bags, out, dim, mean, prefetch, stride,
                )
            }
        }

        /// The pooling entry: `pool_typed` with the job's element and index types.
        ///
        /// # Safety
        ///
        /// As `crate::abi::PoolFn`.
        pub(crate) unsafe fn pool(job: PoolJob<'_>) {
            let (dim, mean, prefetch, stride) = (job.dim, job.mean, job.prefetch, job.out_stride);
            // SAFETY: the job was validated as `PoolJob` says, which is what `pool_typed`
            // needs; the table holding this entry is only handed out on CPUs with the
            // backend's features.
            unsafe {
                $crate::backend::portable::with_pool_types!(
                    job,
                    pool_typed,
                    (dim, mean, prefetch, stride)
                )
            }
        }

        /// The fused update of one block of rows.
        ///
        /// # Safety
        ///
        /// As `crate::abi::ApplyFn`; the scratch holds `dim.next_multiple_of(16)` floats.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn apply(job: &ApplyJob<'_>, rows: RowsMut<'_>, update: RowUpdate<'_>) {
            // SAFETY: forwarded from the caller.
            unsafe {
                match job.order {
                    Orders::Runs(o) => apply_order(job, o, rows, update),
                    Orders::Chains(o) => apply_order(job, o, rows, update),
                }
            }
        }

        /// `apply` in one visiting order.
        ///
        /// # Safety
        ///
        /// As `apply`.
        #[target_feature(enable = $features)]
        unsafe fn apply_order<O: Order>(
            job: &ApplyJob<'_>,
            order: O,
            rows: RowsMut<'_>,
            update: RowUpdate<'_>,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe {
                $crate::backend::x86::embedding::apply_order::<$v, O>(job, order, rows, update)
            }
        }
    };
}
pub(crate) use shims;
