//! A fully connected layer on blocked tensors: forward with fused bias and activation,
//! backward-data, backward-weights with the bias gradient, and SGD (optionally fused into the
//! weight-gradient pass), in f32 or in bf16 with Split-SGD.
//!
//! Layouts (see [`crate::blocked`]): input `x` is `[Nb][Cb][bn][bc]`, output `y` is
//! `[Nb][Kb][bn][bk]`, weights are `[Kb][Cb][bc][bk]` (bf16: each block in VNNI-2,
//! `[ceil(bc/2)][bk][2]`). Every pass is one BRGEMM per output block:
//!
//! * forward: `y(nb,kb) = f(sum_cb x(nb,cb) W(kb,cb) + b(kb))`, tasks over (nb, kb);
//! * backward-data: `dx(nb,cb) = sum_kb dy'(nb,kb) W(kb,cb)^T`, tasks over (nb, cb), where
//!   `dy' = dy * f'(y)`; the transposed weights `W^T` are kept beside `W` (built on the
//!   first call, then refreshed block by block inside the fused update);
//! * backward-weights: `dW(kb,cb) = sum_nb x(nb,cb)^T dy'(nb,kb)`, tasks over (kb, cb)
//!   (layers with few outputs compute the transpose, `dy'^T x`, and transpose the block);
//!   `db = column sums of dy'`;
//! * a layer with one output runs its forward as a dot product per row.
//!
//! In the forward and backward-data passes the BRGEMM applies the bias, a ReLU and a ReLU's
//! backward (the derivative of the layer below) to its registers before it stores a block
//! (an [`Epilogue`](crate::kernels::Epilogue)), so each output is written once, straight into its place; a sigmoid
//! takes a separate pass over the block.
//!
//! Each output block is computed by one task in a fixed order, so results are bit-identical for
//! any number of threads. Threads come from the current rayon pool.
//!
//! In bf16 the weights are Split-SGD pairs: the bf16 the matmuls read is the upper half of the
//! fp32 master weight (truncated) and a `u16` array keeps the lower half, so the update is
//! exact fp32 at 4 bytes per weight. Activations and gradients are bf16, accumulation f32, the
//! bias and its gradient f32.
//!
//! The backward passes take the output gradient as a [`PreActGrad`]: the gradient with the
//! layer's activation derivative applied, which only [`Linear::activation_backward`] (from
//! the gradient after the activation) and the backward-data pass of the layer above
//! ([`Linear::backward_data_through`], which applies this layer's derivative) make, so the
//! derivative cannot be skipped by accident.
//!
//! The code: the shape and block sizes in `config.rs`, the forward and the activation's
//! backward in `forward.rs`, backward-data in `backward_data.rs`, backward-weights and the
//! updates in `backward_weights.rs`; the block scheduler they share is
//! `blocked::ForEachBlock`.
//!
//! ```
//! use dlrm_kernels::blocked::Blocked;
//! use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
//!
//! let cfg = LinearConfig::new(3, 2, Activation::Relu, Blocking { bn: 4, bc: 3, bk: 2 });
//! let mut layer = Linear::<f32>::new(cfg, 7)?;
//! // y = relu(x W^T + b) with PyTorch's [out][in] weight layout.
//! layer.set_parameters(&[1.0, 0.0, 0.0, 0.0, 1.0, -1.0], &[0.5, 0.0])?;
//! let x = Blocked::from_row_major(&[1.0, 2.0, 3.0], 1, 3, 4, 3)?;
//! let mut y = Blocked::zeros(1, 2, 4, 2)?;
//! layer.forward(&x, &mut y)?;
//! assert_eq!((y.get(0, 0), y.get(0, 1)), (1.5, 0.0));
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

mod backward_data;
mod backward_weights;
mod config;
mod forward;

pub use crate::kernels::eltwise::Activation;
pub use config::{Blocking, LinearConfig, active_tuning, default_block, input_block};

use crate::blocked::Blocked;
use crate::error::{Error, Result, check_len};
use crate::kernels::convert::Converter;
use crate::kernels::reorder::Reorder;
use crate::kernels::sgd::Sgd;
use crate::kernels::{ALayout, Accum, BatchKind, Brgemm, BrgemmDesc, DType, Element, vnni};
use crate::memory::{checked_product, try_filled};
use crate::rng::Rng;
use crate::split_sgd;

/// A layer's output gradient with the derivative of the layer's activation applied
/// (`dy' = dy * f'(y)`, the gradient before the activation): what backward-data and
/// backward-weights take. Made only by [`Linear::activation_backward`] (from the gradient
/// after the activation, in place) and by the layer above's
/// [`Linear::backward_data_through`] (which applies this layer's derivative as it writes the
/// gradient), so a pass cannot be handed a gradient whose derivative was skipped.
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
#[derive(Debug, Clone, Copy)]
pub struct PreActGrad<'a, T> {
    grad: &'a Blocked<T>,
}

impl<'a, T> PreActGrad<'a, T> {
    /// `grad`, which holds the gradient before the activation: for the crate's own passes,
    /// which keep that promise themselves (the MLP, whose layer above applied the
    /// derivative).
    pub(crate) fn assume(grad: &'a Blocked<T>) -> Self {
        PreActGrad { grad }
    }

    /// The gradient.
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(1, 1, Activation::None, Blocking { bn: 1, bc: 1, bk: 1 });
    /// let layer = Linear::<f32>::new(cfg, 0)?;
    /// let (y, mut dy) = (layer.output_zeros(1)?, layer.output_zeros(1)?);
    /// assert_eq!(layer.activation_backward(&y, &mut dy)?.grad().rows(), 1);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn grad(&self) -> &'a Blocked<T> {
        self.grad
    }
}

/// A fully connected layer `y = f(x W^T + b)` on blocked tensors, f32 (`T = f32`) or bf16 with
/// Split-SGD (`T = bf16`). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Linear<T: Element> {
    cfg: LinearConfig,
    /// Input / output feature blocks.
    cb: usize,
    kb: usize,
    /// Elements per weight block (f32: `bc * bk`; bf16: VNNI-2 `ceil(bc/2) * 2 * bk`).
    w_block: usize,
    /// Elements per transposed weight block.
    wt_block: usize,
    /// Weights, `[Kb][Cb]` blocks; for bf16 the upper halves of the master weights.
    w: Vec<T>,
    /// bf16 only: lower halves of the master weights, same layout as `w`.
    w_lo: Vec<u16>,
    /// Bias, padded to `Kb * bk`.
    bias: Vec<f32>,
    /// Weight gradient in the layout of `w` (f32), filled by [`Linear::backward_weights`].
    grad_w: Vec<f32>,
    /// Bias gradient, padded to `Kb * bk`.
    grad_b: Vec<f32>,
    /// `W^T` blocks `[Cb][Kb]` (bf16: VNNI-2 over `bk`), for backward-data; empty until
    /// its first call.
    wt: Vec<T>,
    /// Whether `wt` holds the transpose of the current `w`.
    wt_fresh: bool,
    /// Whether the weight gradient is computed transposed, `dW^T = dy'^T x` (layers with
    /// few outputs, such as the last layer of a network: the BRGEMM's columns are then the
    /// many inputs rather than the few outputs).
    wgrad_transposed: bool,
    /// Scratch (bf16 only): the weight-gradient operand made from `x`, blocks `[Cb][Nb]`:
    /// `x^T` (`[bc][bn]`), or when the gradient is transposed `x` in VNNI-2 over `bn`.
    wg_x: Vec<T>,
    /// Scratch (bf16 only): the operand made from `dy'`, blocks `[Kb][Nb]`: `dy'` in VNNI-2
    /// over `bn`, or when the gradient is transposed `dy'^T` (`[bk][bn]`).
    wg_dy: Vec<T>,
    fwd: Brgemm,
    bwd_data: Brgemm,
    bwd_weights: Brgemm,
    /// The same, adding to C (for the later chunks of the batch reduction).
    bwd_weights_acc: Brgemm,
    cvt: Converter,
    reorder: Reorder,
    sgd: Sgd,
}

impl<T: Element> Linear<T> {
    /// A layer initialised as the DLRM reference does: `W ~ N(0, sqrt(2 / (C + K)))`,
    /// `b ~ N(0, sqrt(1 / K))`, from `seed`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a size or block size is zero, or if the sizes overflow or the
    /// weights cannot be allocated (named; nothing is allocated); kernel errors (e.g. a bad
    /// `DLRM_ISA`).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(13, 512, Activation::Relu, Blocking::auto(128, 13, 512)?);
    /// let layer = Linear::<half::bf16>::new(cfg, 1)?;
    /// assert_eq!(layer.weights().len(), 512 * 13);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn new(cfg: LinearConfig, seed: u64) -> Result<Self> {
        let (c, k) = (cfg.in_features, cfg.out_features);
        // The zero layer first: it checks every size before anything large is allocated.
        let mut layer = Self::zeroed(cfg)?;
        let mut rng = Rng::new(seed);
        let w_std = (2.0 / (c as f64 + k as f64)).sqrt() as f32;
        let b_std = (1.0 / k as f64).sqrt() as f32;
        let mut w = try_filled(c * k, 0f32, || format!("the weights of a {c} -> {k} layer"))?;
        w.iter_mut().for_each(|x| *x = rng.normal(0.0, w_std));
        let b: Vec<f32> = (0..k).map(|_| rng.normal(0.0, b_std)).collect();
        layer.set_parameters(&w, &b)?;
        Ok(layer)
    }

    /// A layer with all parameters zero.
    fn zeroed(cfg: LinearConfig) -> Result<Self> {
        let Blocking { bn, bc, bk } = cfg.blocking;
        let (c, k) = (cfg.in_features, cfg.out_features);
        if c == 0 || k == 0 {
            return Err(Error::Config(format!(
                "a linear layer needs positive sizes, got {c} -> {k}"
            )));
        }
        if bn == 0 || bc == 0 || bk == 0 {
            return Err(Error::Config(format!(
                "block sizes must be positive, got bn {bn}, bc {bc}, bk {bk}"
            )));
        }
        let (cb, kb) = (c.div_ceil(bc), k.div_ceil(bk));
        // Every size below is at most one of these products (blocks padded to an even size
        // for bf16's pairs); checked here, the rest cannot overflow.
        let what = || format!("a {c} -> {k} layer in blocks bn {bn}, bc {bc}, bk {bk}");
        let even = |x: usize| x.checked_next_multiple_of(2).unwrap_or(usize::MAX);
        let (c_pad, k_pad) = (
            checked_product(&[cb, even(bc)], what)?,
            checked_product(&[kb, even(bk)], what)?,
        );
        let bytes = T::DTYPE.size_bytes().max(4);
        checked_product(&[c_pad, k_pad, bytes], what)?;
        checked_product(&[even(bn), c_pad.max(k_pad), bytes], what)?;
        let bf = T::DTYPE == DType::Bf16;
        let (w_block, wt_block) = if bf {
            (vnni::packed_len(bc, bk), vnni::packed_len(bk, bc))
        } else {
            (bc * bk, bk * bc)
        };
        let desc = |m, n, kk, stride_a, stride_b| {
            let mut d = if bf {
                BrgemmDesc::bf16(m, n, kk)
            } else {
                BrgemmDesc::f32(m, n, kk)
            };
            d.batch = BatchKind::Strided { stride_a, stride_b };
            d
        };
        // Forward and backward-data store straight into the output (of the layer's type),
        // except a sigmoid forward, whose epilogue runs on an f32 block.
        let into_output = |d: BrgemmDesc| BrgemmDesc {
            output: T::DTYPE,
            ..d
        };
        let fwd = desc(bn, bk, bc, bn * bc, w_block);
        // backward-weights reduces over the batch blocks nb: x(nb, cb) and dy'(nb, kb), in
        // place for f32 (x or dy' read as a transposed A), from copies laid out [Cb][Nb] and
        // [Kb][Nb] for bf16 (see `wg_x`, `wg_dy`: a k pair must be adjacent).
        let wgrad_transposed = bk < 16 && bk < bc;
        let (x_stride, dy_stride) = match (bf, wgrad_transposed) {
            (false, _) => (cb * bn * bc, kb * bn * bk),
            (true, false) => (bc * bn, vnni::packed_len(bn, bk)),
            (true, true) => (vnni::packed_len(bn, bc), bk * bn),
        };
        let mut bwd_weights = if wgrad_transposed {
            desc(bk, bc, bn, dy_stride, x_stride)
        } else {
            desc(bc, bk, bn, x_stride, dy_stride)
        };
        if !bf {
            bwd_weights.a_layout = ALayout::Transposed;
            bwd_weights.lda = bwd_weights.m;
        }
        Ok(Linear {
            cfg,
            cb,
            kb,
            w_block,
            wt_block,
            w: try_filled(kb * cb * w_block, T::default(), what)?,
            w_lo: if bf {
                try_filled(kb * cb * w_block, 0, what)?
            } else {
                Vec::new()
            },
            bias: vec![0.0; kb * bk],
            grad_w: Vec::new(),
            grad_b: vec![0.0; kb * bk],
            wt: Vec::new(),
            wt_fresh: false,
            wgrad_transposed,
            wg_x: Vec::new(),
            wg_dy: Vec::new(),
            fwd: Brgemm::new(if fused(cfg.activation) {
                into_output(fwd)
            } else {
                fwd
            })?,
            bwd_data: Brgemm::new(into_output(desc(bn, bc, bk, bn * bk, wt_block)))?,
            bwd_weights: Brgemm::new(bwd_weights)?,
            bwd_weights_acc: Brgemm::new(BrgemmDesc {
                accum: Accum::Accumulate,
                ..bwd_weights
            })?,
            cvt: Converter::new()?,
            reorder: Reorder::new()?,
            sgd: Sgd::new()?,
        })
    }

    /// The layer's configuration.
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(2, 2, Activation::None, Blocking::auto(1, 2, 2)?);
    /// assert_eq!(*Linear::<f32>::new(cfg, 0)?.config(), cfg);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn config(&self) -> &LinearConfig {
        &self.cfg
    }

    /// Position of weight (input feature `c`, output feature `k`) in `w`.
    fn w_index(&self, c: usize, k: usize) -> usize {
        let Blocking { bc, bk, .. } = self.cfg.blocking;
        let base = ((k / bk) * self.cb + c / bc) * self.w_block;
        base + if T::DTYPE == DType::Bf16 {
            vnni::index(c % bc, k % bk, bk)
        } else {
            (c % bc) * bk + k % bk
        }
    }

    /// Set weights (PyTorch layout `[out_features][in_features]`, row-major) and bias.
    /// In bf16 the f32 values become the Split-SGD master weights exactly.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if a length is wrong (nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(2, 1, Activation::None, Blocking::auto(1, 2, 1)?);
    /// let mut l = Linear::<half::bf16>::new(cfg, 0)?;
    /// l.set_parameters(&[0.1, -0.2], &[0.3])?;
    /// assert_eq!(l.weights(), vec![0.1, -0.2]); // exact: hi + lo halves
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn set_parameters(&mut self, weights: &[f32], bias: &[f32]) -> Result<()> {
        let (c, k) = (self.cfg.in_features, self.cfg.out_features);
        check_len("weights length (out x in)", c * k, weights.len())?;
        check_len("bias length", k, bias.len())?;
        for kk in 0..k {
            for cc in 0..c {
                let at = self.w_index(cc, kk);
                let x = weights[kk * c + cc];
                if T::DTYPE == DType::Bf16 {
                    self.w[at] = T::from_f32(split_sgd::upper(x));
                    self.w_lo[at] = split_sgd::split(x).1;
                } else {
                    self.w[at] = T::from_f32(x);
                }
            }
        }
        self.bias[..k].copy_from_slice(bias);
        self.wt_fresh = false;
        Ok(())
    }

    /// The (master) weights in PyTorch layout `[out_features][in_features]`.
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(1, 3, 2)?);
    /// assert_eq!(Linear::<f32>::new(cfg, 0)?.weights().len(), 6);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn weights(&self) -> Vec<f32> {
        let (c, k) = (self.cfg.in_features, self.cfg.out_features);
        let mut out = vec![0f32; c * k];
        for kk in 0..k {
            for cc in 0..c {
                let at = self.w_index(cc, kk);
                out[kk * c + cc] = self.master(at);
            }
        }
        out
    }

    /// The fp32 master weight stored at `at`.
    fn master(&self, at: usize) -> f32 {
        let hi = self.w[at].to_f32();
        if T::DTYPE == DType::Bf16 {
            split_sgd::join_widened(hi, self.w_lo[at])
        } else {
            hi
        }
    }

    /// The bias (`out_features` values).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(1, 3, 2)?);
    /// assert_eq!(Linear::<f32>::new(cfg, 0)?.bias().len(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn bias(&self) -> &[f32] {
        &self.bias[..self.cfg.out_features]
    }

    /// The weight gradient of the last [`Linear::backward_weights`], PyTorch layout
    /// `[out_features][in_features]` (empty before the first call).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(1, 3, 2)?);
    /// assert!(Linear::<f32>::new(cfg, 0)?.weight_grad().is_empty());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn weight_grad(&self) -> Vec<f32> {
        if self.grad_w.is_empty() {
            return Vec::new();
        }
        let (c, k) = (self.cfg.in_features, self.cfg.out_features);
        let mut out = vec![0f32; c * k];
        for kk in 0..k {
            for cc in 0..c {
                out[kk * c + cc] = self.grad_w[self.w_index(cc, kk)];
            }
        }
        out
    }

    /// The bias gradient of the last [`Linear::backward_weights`] (`out_features` values).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(1, 3, 2)?);
    /// assert_eq!(Linear::<f32>::new(cfg, 0)?.bias_grad(), &[0.0, 0.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn bias_grad(&self) -> &[f32] {
        &self.grad_b[..self.cfg.out_features]
    }

    /// A zero input tensor for `batch` rows, blocked as this layer reads it.
    ///
    /// # Errors
    ///
    /// Never for a valid layer (block sizes are positive).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(5, 3, 2)?);
    /// assert_eq!(Linear::<f32>::new(cfg, 0)?.input_zeros(5)?.cols(), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn input_zeros(&self, batch: usize) -> Result<Blocked<T>> {
        let b = self.cfg.blocking;
        Blocked::zeros(batch, self.cfg.in_features, b.bn, b.bc)
    }

    /// A zero output tensor for `batch` rows, blocked as this layer writes it.
    ///
    /// # Errors
    ///
    /// Never for a valid layer (block sizes are positive).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(5, 3, 2)?);
    /// assert_eq!(Linear::<f32>::new(cfg, 0)?.output_zeros(5)?.cols(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn output_zeros(&self, batch: usize) -> Result<Blocked<T>> {
        let b = self.cfg.blocking;
        Blocked::zeros(batch, self.cfg.out_features, b.bn, b.bk)
    }

    fn check_x(&self, x: &Blocked<T>, rows: usize) -> Result<()> {
        let b = self.cfg.blocking;
        x.check_shape("layer input", rows, self.cfg.in_features, b.bn, b.bc)
    }

    fn check_y(&self, what: &str, y: &Blocked<T>, rows: usize) -> Result<()> {
        let b = self.cfg.blocking;
        y.check_shape(what, rows, self.cfg.out_features, b.bn, b.bk)
    }
}

/// Whether the BRGEMM applies `act` (or its backward) itself, in its [`Epilogue`](crate::kernels::Epilogue).
fn fused(act: Activation) -> bool {
    matches!(act, Activation::None | Activation::Relu)
}

/// A zero-filled f32 vector of `len` values, for per-task scratch.
fn scratch(len: usize) -> Vec<f32> {
    vec![0f32; len]
}
