//! The forward pass, and the backward of the layer's activation.

use rayon::prelude::*;

use super::{Activation, Blocking, Linear, PreActGrad, fused, scratch};
use crate::blocked::{Blocked, ForEachBlock};
use crate::error::Result;
use crate::kernels::eltwise::{self, bias_act};
use crate::kernels::{Element, Epilogue};

impl<T: Element> Linear<T> {
    /// Forward: `y = f(x W^T + b)`; padding of `y` is written as zero.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`](crate::Error::Shape) if `x` or `y` has another shape or blocking than the layer's
    /// (nothing is written).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(3, 2, Activation::Sigmoid, Blocking { bn: 2, bc: 3, bk: 2 });
    /// let layer = Linear::<f32>::new(cfg, 0)?;
    /// let x = layer.input_zeros(2)?;
    /// let mut y = layer.output_zeros(2)?;
    /// layer.forward(&x, &mut y)?;
    /// assert!(y.get(1, 1) > 0.0 && y.get(1, 1) < 1.0);
    /// let mut wrong = layer.output_zeros(3)?;
    /// assert!(layer.forward(&x, &mut wrong).is_err());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn forward(&self, x: &Blocked<T>, y: &mut Blocked<T>) -> Result<()> {
        let n = x.rows();
        self.check_x(x, n)?;
        self.check_y("layer output", y, n)?;
        let Blocking { bn, bc, bk } = self.cfg.blocking;
        let (cb, kb, k) = (self.cb, self.kb, self.cfg.out_features);
        if kb == 1 && bk == 1 {
            // One output: a dot product per row (in both layouts, W's single block column
            // is the `bc` weights in order).
            let wbl = self.w_block;
            y.as_mut_slice()
                .par_chunks_mut(bn)
                .enumerate()
                .for_each_init(
                    || scratch(bn),
                    |acc, (nb, y_blk)| {
                        acc.fill(0.0);
                        for j in 0..cb {
                            let w = &self.w[j * wbl..][..bc];
                            eltwise::row_dots(x.block(nb, j), bn, bc, w, acc);
                        }
                        let rows = (n - nb * bn).min(bn);
                        let act = self.cfg.activation;
                        bias_act(&self.cvt, acc, bn, 1, rows, 1, &self.bias, act, y_blk);
                    },
                );
            return Ok(());
        }
        let act = self.cfg.activation;
        let blocks = ForEachBlock {
            out: y.as_mut_slice(),
            block: bn * bk,
            cols: kb,
            a: x.as_slice(),
            a_panel: cb * bn * bc,
            b: &self.w,
            b_panel: cb * self.w_block,
            count: cb,
            scratch_len: if fused(act) { 0 } else { bn * bk },
        };
        blocks.run(|nb, j, batch, y_blk, acc| {
            let (rows, cols) = ((n - nb * bn).min(bn), (k - j * bk).min(bk));
            let bias = &self.bias[j * bk..][..bk];
            if fused(act) {
                let epilogue = Epilogue {
                    bias: Some(bias),
                    relu: act == Activation::Relu,
                    relu_mask: None,
                    valid_rows: rows,
                    valid_cols: cols,
                };
                self.fwd.run_with(batch, y_blk, epilogue)?;
            } else {
                self.fwd.run(batch, acc)?;
                bias_act(&self.cvt, acc, bn, bk, rows, cols, bias, act, y_blk);
            }
            Ok(())
        })
    }

    /// `dy <- dy * f'(y)`: the gradient before the activation, from the one after it, in
    /// place; the result is the [`PreActGrad`] the backward passes take. The derivative is
    /// taken from the output `y` (for ReLU: `y > 0`, the mask; nothing to do for
    /// [`Activation::None`]).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`](crate::Error::Shape) if `y` and `dy` are not both this layer's output shape (nothing is
    /// written).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(1, 2, Activation::Relu, Blocking { bn: 1, bc: 1, bk: 2 });
    /// let layer = Linear::<f32>::new(cfg, 0)?;
    /// let y = Blocked::from_row_major(&[0.0, 2.0], 1, 2, 1, 2)?;
    /// let mut dy = Blocked::from_row_major(&[1.0, 1.0], 1, 2, 1, 2)?;
    /// let dy = layer.activation_backward(&y, &mut dy)?;
    /// assert_eq!((dy.grad().get(0, 0), dy.grad().get(0, 1)), (0.0, 1.0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn activation_backward<'g>(
        &self,
        y: &Blocked<T>,
        dy: &'g mut Blocked<T>,
    ) -> Result<PreActGrad<'g, T>> {
        let n = y.rows();
        self.check_y("layer output", y, n)?;
        self.check_y("output gradient", dy, n)?;
        let act = self.cfg.activation;
        let chunk = 4096;
        dy.as_mut_slice()
            .par_chunks_mut(chunk)
            .zip(y.as_slice().par_chunks(chunk))
            .for_each(|(d, y)| eltwise::act_backward(d, y, act));
        Ok(PreActGrad::assume(dy))
    }
}
