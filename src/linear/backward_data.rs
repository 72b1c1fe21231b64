//! Backward-data: the gradient w.r.t. the layer's input, from `W^T`, which is kept beside `W`.

use rayon::prelude::*;

use super::{Activation, Blocking, Linear, PreActGrad, fused};
use crate::blocked::{Blocked, ForEachBlock};
use crate::error::Result;
use crate::kernels::eltwise;
use crate::kernels::{DType, Element, Epilogue};

impl<T: Element> Linear<T> {
    /// Backward-data: `dx = dy' W`, from `dy'`, the gradient before the activation (see
    /// [`PreActGrad`]). `dx` is the gradient after the activation of the layer below (or of
    /// the network's input); [`Linear::backward_data_through`] applies that derivative too.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`](crate::Error::Shape) on a shape or blocking mismatch (nothing is written).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(2, 1, Activation::None, Blocking { bn: 1, bc: 2, bk: 1 });
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// layer.set_parameters(&[3.0, 4.0], &[0.0])?;
    /// let (y, mut dy) = (layer.output_zeros(1)?, Blocked::from_row_major(&[2.0], 1, 1, 1, 1)?);
    /// let dy = layer.activation_backward(&y, &mut dy)?; // nothing to do without activation
    /// let mut dx = layer.input_zeros(1)?;
    /// layer.backward_data(&dy, &mut dx)?;
    /// assert_eq!((dx.get(0, 0), dx.get(0, 1)), (6.0, 8.0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_data(&mut self, dy: &PreActGrad<'_, T>, dx: &mut Blocked<T>) -> Result<()> {
        let dy = dy.grad();
        let n = dy.rows();
        self.check_y("output gradient", dy, n)?;
        self.check_x(dx, n)?;
        self.backward_data_impl(dy, dx, None)
    }

    /// Backward-data through the layer below as well: `dx = (dy' W) * f'(y_below)`, where
    /// `y_below` is this layer's input, the output of a layer with activation `act_below`.
    /// The result is the gradient before that activation, the [`PreActGrad`] the layer
    /// below needs (what [`Linear::backward_data`] then [`Linear::activation_backward`] of
    /// the layer below give, bit for bit, in one pass).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`](crate::Error::Shape) on a shape or blocking mismatch of `dy`, `y_below` or `dx` (nothing
    /// is written).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(2, 1, Activation::None, Blocking { bn: 1, bc: 2, bk: 1 });
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// layer.set_parameters(&[3.0, 4.0], &[0.0])?;
    /// let (y, mut dy) = (layer.output_zeros(1)?, Blocked::from_row_major(&[2.0], 1, 1, 1, 1)?);
    /// let dy = layer.activation_backward(&y, &mut dy)?;
    /// // The layer below is a ReLU whose second output was 0: no gradient flows there.
    /// let y_below = Blocked::from_row_major(&[1.5, 0.0], 1, 2, 1, 2)?;
    /// let mut dx = layer.input_zeros(1)?;
    /// let dx = layer.backward_data_through(&dy, &y_below, Activation::Relu, &mut dx)?;
    /// assert_eq!((dx.grad().get(0, 0), dx.grad().get(0, 1)), (6.0, 0.0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_data_through<'g>(
        &mut self,
        dy: &PreActGrad<'_, T>,
        y_below: &Blocked<T>,
        act_below: Activation,
        dx: &'g mut Blocked<T>,
    ) -> Result<PreActGrad<'g, T>> {
        let dy = dy.grad();
        let n = dy.rows();
        self.check_y("output gradient", dy, n)?;
        self.check_x(dx, n)?;
        y_below.check_shape(
            "output of the layer below",
            n,
            self.cfg.in_features,
            self.cfg.blocking.bn,
            self.cfg.blocking.bc,
        )?;
        self.backward_data_impl(dy, dx, Some((y_below, act_below)))?;
        Ok(PreActGrad::assume(dx))
    }

    /// Backward-data on checked shapes, with the derivative of the layer below applied to
    /// each block of `dx` while it is in cache.
    fn backward_data_impl(
        &mut self,
        dy: &Blocked<T>,
        dx: &mut Blocked<T>,
        below: Option<(&Blocked<T>, Activation)>,
    ) -> Result<()> {
        if !self.wt_fresh {
            self.transpose_weights();
        }
        let Blocking { bn, bc, bk } = self.cfg.blocking;
        let (cb, kb) = (self.cb, self.kb);
        let blocks = ForEachBlock {
            out: dx.as_mut_slice(),
            block: bn * bc,
            cols: cb,
            a: dy.as_slice(),
            a_panel: kb * bn * bk,
            b: &self.wt,
            b_panel: kb * self.wt_block,
            count: kb,
            scratch_len: 0,
        };
        blocks.run(|i, j, batch, dx_blk, _| {
            let below = below.map(|(y, act)| (y.block(i, j), act));
            let relu_mask = match below {
                Some((y, Activation::Relu)) => Some(y),
                _ => None,
            };
            let epilogue = Epilogue {
                relu_mask,
                ..Epilogue::none()
            };
            self.bwd_data.run_with(batch, dx_blk, epilogue)?;
            if let Some((y, act)) = below.filter(|&(_, act)| !fused(act)) {
                eltwise::act_backward(dx_blk, y, act);
            }
            Ok(())
        })
    }

    /// `wt(cb, kb) = W(kb, cb)^T` for every block (bf16: re-paired along `bk`).
    fn transpose_weights(&mut self) {
        let (cb, kb, wbl, wtbl) = (self.cb, self.kb, self.w_block, self.wt_block);
        let mut wt = std::mem::take(&mut self.wt);
        wt.resize(cb * kb * wtbl, T::default());
        let (w, this) = (&self.w, &*self);
        wt.par_chunks_mut(wtbl).enumerate().for_each_init(
            || this.transpose_scratch(),
            |tmp, (t, wt_blk)| {
                let (j, i) = (t / kb, t % kb);
                this.transpose_block(&w[(i * cb + j) * wbl..][..wbl], wt_blk, tmp);
            },
        );
        self.wt = wt;
        self.wt_fresh = true;
    }

    /// Scratch for [`Linear::transpose_block`].
    pub(super) fn transpose_scratch(&self) -> (Vec<T>, Vec<T>) {
        let Blocking { bc, bk, .. } = self.cfg.blocking;
        let len = if T::DTYPE == DType::Bf16 { bc * bk } else { 0 };
        (vec![T::default(); len], vec![T::default(); len])
    }

    /// One block of `W^T` from its block of `W`: a transpose (bf16: VNNI pairs over `bc`
    /// undone, transposed, paired again over `bk`).
    pub(super) fn transpose_block(
        &self,
        w_blk: &[T],
        wt_blk: &mut [T],
        (plain, plain_t): &mut (Vec<T>, Vec<T>),
    ) {
        let Blocking { bc, bk, .. } = self.cfg.blocking;
        let r = &self.reorder;
        // Sizes are the layer's own: the reorders cannot fail.
        if T::DTYPE == DType::Bf16 {
            r.unpack_pairs(w_blk, bc, bk, plain)
                .expect("weight block size");
            r.transpose(plain, bc, bk, plain_t)
                .expect("weight block size");
            r.pack_pairs(plain_t, bk, bc, wt_blk)
                .expect("weight block size");
        } else {
            r.transpose(w_blk, bc, bk, wt_blk)
                .expect("weight block size");
        }
    }
}
