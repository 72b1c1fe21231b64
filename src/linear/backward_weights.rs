//! Backward-weights: `dW = dy'^T x` and the bias gradient, kept for a later update or with
//! the update fused in (each weight block updated the moment its gradient is computed).

use rayon::prelude::*;

use super::{Blocking, Linear, PreActGrad, scratch};
use crate::blocked::Blocked;
use crate::error::{Error, Result};
use crate::kernels::eltwise::{column_sums, column_sums_vnni};
use crate::kernels::{Batch, BatchKind, DType, Element, SliceMut, prefetch, vnni};
use crate::optim::DenseUpdate;

/// Bytes of each operand one weight-gradient BRGEMM call reduces over: 128 KiB of A and of
/// B (8 blocks of 64 x 64 f32, 16 of bf16) stay in L2 while the register tiles sweep them.
const WGRAD_CHUNK_BYTES: usize = 128 << 10;

/// Per-task buffers of a weight-gradient pass: the gradient block (`bc x bk`), the transposed
/// block when it is computed that way, and its VNNI-2 form (bf16).
struct WgradScratch {
    acc: Vec<f32>,
    transposed: Vec<f32>,
    packed: Vec<f32>,
}

/// What the fused update's task for one weight block writes besides the block itself.
struct BlockJob<'a, T> {
    /// The block's lower halves (bf16).
    lo: Option<&'a mut [u16]>,
    /// The block's place in `W^T`, when kept.
    wt: Option<&'a mut [T]>,
    /// The bias gradient of the block's output features (one task per output block).
    db: Option<&'a mut [f32]>,
}

impl<T> Default for BlockJob<'_, T> {
    fn default() -> Self {
        BlockJob {
            lo: None,
            wt: None,
            db: None,
        }
    }
}

impl<T: Element> Linear<T> {
    /// Check the shapes of a weight-gradient pass and prepare its operands.
    fn start_weight_grad(&mut self, x: &Blocked<T>, dy: &Blocked<T>) -> Result<()> {
        let n = x.rows();
        self.check_x(x, n)?;
        self.check_y("output gradient", dy, n)?;
        self.prepare_weight_grad(x, dy);
        Ok(())
    }

    /// Prepare the operands of the bf16 weight-gradient BRGEMMs (see `wg_x`, `wg_dy`); f32
    /// reads `x` and `dy'` as they are.
    fn prepare_weight_grad(&mut self, x: &Blocked<T>, dy: &Blocked<T>) {
        if T::DTYPE != DType::Bf16 {
            return;
        }
        let Blocking { bn, bc, bk } = self.cfg.blocking;
        let (reorder, swap) = (self.reorder, self.wgrad_transposed);
        // One operand is transposed ([cols][bn]), the other paired over bn.
        let prepare = |src: &Blocked<T>, cols: usize, transpose: bool, dst: &mut Vec<T>| {
            let nb = src.row_blocks();
            let len = if transpose {
                cols * bn
            } else {
                vnni::packed_len(bn, cols)
            };
            dst.resize(src.col_blocks() * nb * len, T::default());
            dst.par_chunks_mut(len).enumerate().for_each(|(t, out)| {
                let blk = src.block(t % nb, t / nb);
                // Sizes are the layer's own: the reorders cannot fail.
                if transpose {
                    reorder.transpose(blk, bn, cols, out).expect("block size");
                } else {
                    reorder.pack_pairs(blk, bn, cols, out).expect("block size");
                }
            });
        };
        prepare(x, bc, !swap, &mut self.wg_x);
        prepare(dy, bk, swap, &mut self.wg_dy);
    }

    /// Per-task scratch for [`Linear::weight_grad_block`].
    fn wgrad_scratch(&self) -> WgradScratch {
        let Blocking { bc, bk, .. } = self.cfg.blocking;
        let bf = T::DTYPE == DType::Bf16;
        WgradScratch {
            acc: scratch(bc * bk),
            transposed: scratch(if self.wgrad_transposed { bc * bk } else { 0 }),
            packed: scratch(if bf { self.w_block } else { 0 }),
        }
    }

    /// The A and B panels (from their first batch block on) of weight block (kb = `i`,
    /// cb = `j`)'s gradient: `x` panel `j` and `dy'` panel `i`, as the BRGEMM reads them (the
    /// bf16 copies, and swapped when the gradient is computed transposed).
    fn wgrad_panels<'p>(
        &'p self,
        x: &'p Blocked<T>,
        dy: &'p Blocked<T>,
        (i, j): (usize, usize),
    ) -> (&'p [T], &'p [T]) {
        let Blocking { bn, bc, bk } = self.cfg.blocking;
        let nb = dy.row_blocks();
        let BatchKind::Strided { stride_a, stride_b } = self.bwd_weights.desc().batch else {
            unreachable!("built strided");
        };
        let (x_panel, dy_panel) = if T::DTYPE == DType::Bf16 {
            let (x_len, dy_len) = if self.wgrad_transposed {
                (stride_b, stride_a)
            } else {
                (stride_a, stride_b)
            };
            (&self.wg_x[j * nb * x_len..], &self.wg_dy[i * nb * dy_len..])
        } else {
            // A batch of no rows has no blocks: its panels are empty.
            let panel = |t: &'p Blocked<T>, at: usize| t.as_slice().get(at..).unwrap_or_default();
            (panel(x, j * bn * bc), panel(dy, i * bn * bk))
        };
        if self.wgrad_transposed {
            (dy_panel, x_panel)
        } else {
            (x_panel, dy_panel)
        }
    }

    /// The gradient of weight block (kb = `i`, cb = `j`), in the layout of the block in `w`
    /// (f32 `bc x bk`, or bf16's VNNI-2 order), computed in `ws`.
    ///
    /// The reduction over the batch blocks runs in chunks of [`WGRAD_CHUNK_BYTES`] per
    /// operand (the first replacing the output, the rest adding to it), so each call's
    /// operands stay in L2.
    fn weight_grad_block<'s>(
        &self,
        x: &Blocked<T>,
        dy: &Blocked<T>,
        (i, j): (usize, usize),
        ws: &'s mut WgradScratch,
    ) -> Result<&'s [f32]> {
        let Blocking { bn, bc, bk } = self.cfg.blocking;
        let nb = dy.row_blocks();
        let desc = self.bwd_weights.desc();
        let BatchKind::Strided { stride_a, stride_b } = desc.batch else {
            unreachable!("built strided");
        };
        let (a, b) = self.wgrad_panels(x, dy, (i, j));
        let out = if self.wgrad_transposed {
            &mut ws.transposed
        } else {
            &mut ws.acc
        };
        // The B panel serves this row's `cb` tasks in a row and stays in L2; the A panel
        // changes with every task. So before each chunk, the A blocks of the next chunk
        // (of this task, or the first of the next task) are prefetched into L2.
        let next_task = if j + 1 < self.cb {
            Some((i, j + 1))
        } else if i + 1 < self.kb {
            Some((i + 1, 0))
        } else {
            None
        };
        let a_block = desc.m * desc.k;
        let prefetch_a = |a: &[T], first: usize, count: usize| {
            for blk in first..(first + count).min(nb) {
                if let Some(blk) = a.get(blk * stride_a..).and_then(|p| p.get(..a_block)) {
                    prefetch::l2(blk);
                }
            }
        };
        let block_bytes = bn * bc.max(bk) * T::DTYPE.size_bytes();
        let per_call = (WGRAD_CHUNK_BYTES / block_bytes).max(1);
        for chunk in 0..nb.div_ceil(per_call).max(1) {
            let first = chunk * per_call;
            let count = nb.saturating_sub(first).min(per_call);
            let kernel = if chunk == 0 {
                &self.bwd_weights
            } else {
                &self.bwd_weights_acc
            };
            if first + count < nb {
                prefetch_a(a, first + count, per_call);
            } else if let Some(next) = next_task {
                prefetch_a(self.wgrad_panels(x, dy, next).0, 0, per_call);
            }
            let batch = Batch::strided(&a[first * stride_a..], &b[first * stride_b..], count);
            kernel.run(batch, out)?;
        }
        if self.wgrad_transposed {
            self.reorder
                .transpose(&ws.transposed, bk, bc, &mut ws.acc)?;
        }
        if T::DTYPE == DType::Bf16 {
            self.reorder.pack_pairs(&ws.acc, bc, bk, &mut ws.packed)?;
            Ok(&ws.packed)
        } else {
            Ok(&ws.acc)
        }
    }

    /// Bias gradient: column sums of `dy'`.
    fn bias_grad_from(&mut self, dy: &Blocked<T>) {
        let bk = self.cfg.blocking.bk;
        let mut grad_b = std::mem::take(&mut self.grad_b);
        let this = &*self;
        grad_b
            .par_chunks_mut(bk)
            .enumerate()
            .for_each(|(j, db)| this.bias_grad_block(dy, j, db));
        self.grad_b = grad_b;
    }

    /// Bias gradient of output block `j`: column sums of `dy'` blocks (nb, `j`), in nb order.
    /// bf16 (not transposed) sums the VNNI copy of `dy'` the weight gradient reads instead:
    /// the same values added in the same order, from the panel the gradient has just brought
    /// into cache.
    fn bias_grad_block(&self, dy: &Blocked<T>, j: usize, db: &mut [f32]) {
        let Blocking { bn, bk, .. } = self.cfg.blocking;
        let nb = dy.row_blocks();
        db.fill(0.0);
        if T::DTYPE == DType::Bf16 && !self.wgrad_transposed {
            let len = vnni::packed_len(bn, bk);
            for blk in self.wg_dy[j * nb * len..][..nb * len].chunks_exact(len) {
                column_sums_vnni(blk, bn, bk, db);
            }
            return;
        }
        for i in 0..nb {
            column_sums(dy.block(i, j), bn, bk, db);
        }
    }

    /// Backward-weights: `dW = dy'^T x` and `db = column sums of dy'`, kept in the layer for
    /// [`Linear::update`] (see [`Linear::weight_grad`], [`Linear::gradients_mut`]).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] on a shape or blocking mismatch (nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(2, 1, Activation::None, Blocking { bn: 1, bc: 2, bk: 1 });
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// let x = Blocked::from_row_major(&[1.0, 2.0], 1, 2, 1, 2)?;
    /// let (y, mut dy) = (layer.output_zeros(1)?, Blocked::from_row_major(&[3.0], 1, 1, 1, 1)?);
    /// let dy = layer.activation_backward(&y, &mut dy)?;
    /// layer.backward_weights(&x, &dy)?;
    /// assert_eq!(layer.weight_grad(), vec![3.0, 6.0]);
    /// assert_eq!(layer.bias_grad(), &[3.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_weights(&mut self, x: &Blocked<T>, dy: &PreActGrad<'_, T>) -> Result<()> {
        let dy = dy.grad();
        self.start_weight_grad(x, dy)?;
        self.bias_grad_from(dy);
        let (cb, wbl) = (self.cb, self.w_block);
        let mut grad_w = std::mem::take(&mut self.grad_w);
        grad_w.resize(self.w.len(), 0.0);
        let this = &*self;
        let res = grad_w.par_chunks_mut(wbl).enumerate().try_for_each_init(
            || this.wgrad_scratch(),
            |ws, (t, g_blk)| -> Result<()> {
                g_blk.copy_from_slice(this.weight_grad_block(x, dy, (t / cb, t % cb), ws)?);
                Ok(())
            },
        );
        self.grad_w = grad_w;
        res
    }

    /// The gradients of the last [`Linear::backward_weights`], to change before
    /// [`Linear::update`] applies them (e.g. summed across the replicas of a data-parallel
    /// run): the weight gradient in the layer's own blocked layout (padding included, and
    /// zero), the same on every replica, and the bias gradient; `None` before a gradient was
    /// computed.
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// use dlrm_kernels::optim::DenseUpdate;
    /// let cfg = LinearConfig::new(1, 1, Activation::None, Blocking { bn: 1, bc: 1, bk: 1 });
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// assert!(layer.gradients_mut().is_none());
    /// layer.set_parameters(&[1.0], &[0.0])?;
    /// let x = Blocked::from_row_major(&[2.0], 1, 1, 1, 1)?;
    /// let (y, mut dy) = (layer.output_zeros(1)?, Blocked::from_row_major(&[1.0], 1, 1, 1, 1)?);
    /// layer.backward_weights(&x, &layer.activation_backward(&y, &mut dy)?)?;
    /// let (dw, db) = layer.gradients_mut().unwrap();
    /// (dw[0], db[0]) = (dw[0] * 2.0, db[0] * 2.0); // as if a second replica had the same
    /// layer.update(DenseUpdate::Sgd { lr: 0.25 })?;
    /// assert_eq!((layer.weights(), layer.bias()), (vec![0.0], &[-0.5][..]));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn gradients_mut(&mut self) -> Option<(&mut [f32], &mut [f32])> {
        if self.grad_w.len() != self.w.len() {
            return None;
        }
        let k = self.cfg.out_features;
        Some((&mut self.grad_w, &mut self.grad_b[..k]))
    }

    /// Apply `update` with the gradients of the last [`Linear::backward_weights`]: SGD is
    /// `W -= lr * dW`, `b -= lr * db` (Split-SGD in bf16: exact fp32 master update).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if no gradient has been computed yet, or if the update cannot be
    /// applied ([`DenseUpdate::validate`]; nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// use dlrm_kernels::optim::DenseUpdate;
    /// let cfg = LinearConfig::new(1, 1, Activation::None, Blocking { bn: 1, bc: 1, bk: 1 });
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// layer.set_parameters(&[1.0], &[0.0])?;
    /// let x = Blocked::from_row_major(&[2.0], 1, 1, 1, 1)?;
    /// let (y, mut dy) = (layer.output_zeros(1)?, Blocked::from_row_major(&[1.0], 1, 1, 1, 1)?);
    /// layer.backward_weights(&x, &layer.activation_backward(&y, &mut dy)?)?;
    /// layer.update(DenseUpdate::Sgd { lr: 0.25 })?;
    /// assert_eq!((layer.weights(), layer.bias()), (vec![0.5], &[-0.25][..]));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn update(&mut self, update: DenseUpdate) -> Result<()> {
        update.validate()?;
        let DenseUpdate::Sgd { lr } = update;
        if self.grad_w.len() != self.w.len() {
            return Err(Error::Config(
                "update called before backward_weights computed a gradient".into(),
            ));
        }
        let wbl = self.w_block;
        let sgd = self.sgd;
        match T::view_mut(&mut self.w) {
            SliceMut::F32(w) => w
                .par_chunks_mut(wbl)
                .zip(self.grad_w.par_chunks(wbl))
                .try_for_each(|(w, g)| sgd.sgd(w, g, lr))?,
            SliceMut::Bf16(hi) => hi
                .par_chunks_mut(wbl)
                .zip(self.w_lo.par_chunks_mut(wbl))
                .zip(self.grad_w.par_chunks(wbl))
                .try_for_each(|((hi, lo), g)| sgd.split_sgd(hi, lo, g, lr))?,
        }
        self.wt_fresh = false;
        sgd.sgd(&mut self.bias, &self.grad_b, lr)?;
        Ok(())
    }

    /// Backward-weights with the update fused in: each weight block's gradient is applied
    /// the moment it is computed, so no weight-gradient buffer exists. Same result, bit for
    /// bit, as [`Linear::backward_weights`] followed by [`Linear::update`].
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] on a shape or blocking mismatch, [`Error::Config`] for an update
    /// that cannot be applied (nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// use dlrm_kernels::optim::DenseUpdate;
    /// let cfg = LinearConfig::new(1, 1, Activation::None, Blocking { bn: 1, bc: 1, bk: 1 });
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// layer.set_parameters(&[1.0], &[0.0])?;
    /// let x = Blocked::from_row_major(&[2.0], 1, 1, 1, 1)?;
    /// let (y, mut dy) = (layer.output_zeros(1)?, Blocked::from_row_major(&[1.0], 1, 1, 1, 1)?);
    /// let dy = layer.activation_backward(&y, &mut dy)?;
    /// assert!(layer.backward_weights_update(&x, &dy, DenseUpdate::Sgd { lr: f32::NAN }).is_err());
    /// layer.backward_weights_update(&x, &dy, DenseUpdate::Sgd { lr: 0.25 })?;
    /// assert_eq!(layer.weights(), vec![0.5]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_weights_update(
        &mut self,
        x: &Blocked<T>,
        dy: &PreActGrad<'_, T>,
        update: DenseUpdate,
    ) -> Result<()> {
        update.validate()?;
        let DenseUpdate::Sgd { lr } = update;
        let dy = dy.grad();
        self.start_weight_grad(x, dy)?;
        // A gradient stored by an earlier `backward_weights` is stale now: drop it, so a
        // stray `update` reports an error instead of applying it again.
        self.grad_w.clear();
        let (cb, kb, wbl, wtbl, sgd) = (self.cb, self.kb, self.w_block, self.wt_block, self.sgd);
        let bk = self.cfg.blocking.bk;
        let mut w = std::mem::take(&mut self.w);
        let mut w_lo = std::mem::take(&mut self.w_lo);
        let mut wt = std::mem::take(&mut self.wt);
        let mut grad_b = std::mem::take(&mut self.grad_b);
        // What each weight block's task updates besides the block: its lower halves (bf16);
        // once backward-data has built W^T, its block of W^T, refreshed right after the
        // update while the block is in cache; for the first block of each output block, that
        // output block's bias gradient.
        let mut jobs: Vec<BlockJob<'_, T>> = (0..kb * cb).map(|_| BlockJob::default()).collect();
        for (job, lo) in jobs.iter_mut().zip(w_lo.chunks_mut(wbl)) {
            job.lo = Some(lo);
        }
        let keep_wt = wt.len() == kb * cb * wtbl;
        if keep_wt {
            for (u, blk) in wt.chunks_mut(wtbl).enumerate() {
                jobs[(u % kb) * cb + u / kb].wt = Some(blk);
            }
        }
        for (i, db) in grad_b.chunks_mut(bk).enumerate() {
            jobs[i * cb].db = Some(db);
        }
        let this = &*self;
        let res = w
            .par_chunks_mut(wbl)
            .zip(jobs)
            .enumerate()
            .try_for_each_init(
                || (this.wgrad_scratch(), this.transpose_scratch()),
                |(ws, tmp), (t, (w_blk, job))| -> Result<()> {
                    let (i, j) = (t / cb, t % cb);
                    // What the update after the gradient reads and writes, into L2 while
                    // the gradient computes (it would otherwise wait on each miss).
                    prefetch::l2(w_blk);
                    if let Some(lo) = &job.lo {
                        prefetch::l2(lo);
                    }
                    if let Some(wt) = &job.wt {
                        prefetch::l2(wt);
                    }
                    let g = this.weight_grad_block(x, dy, (i, j), ws)?;
                    match (T::view_mut(&mut *w_blk), job.lo) {
                        (SliceMut::F32(w), _) => sgd.sgd(w, g, lr)?,
                        (SliceMut::Bf16(hi), Some(lo)) => sgd.split_sgd(hi, lo, g, lr)?,
                        (SliceMut::Bf16(_), None) => unreachable!("bf16 layers keep lower halves"),
                    }
                    if let Some(wt_blk) = job.wt {
                        this.transpose_block(w_blk, wt_blk, tmp);
                    }
                    if let Some(db) = job.db {
                        this.bias_grad_block(dy, i, db);
                    }
                    Ok(())
                },
            );
        self.w = w;
        self.w_lo = w_lo;
        self.wt = wt;
        self.grad_b = grad_b;
        self.wt_fresh = keep_wt && res.is_ok();
        res?;
        sgd.sgd(&mut self.bias, &self.grad_b, lr)?;
        Ok(())
    }
}
