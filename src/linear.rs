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
//! (an [`Epilogue`]), so each output is written once, straight into its place; a sigmoid
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

use rayon::prelude::*;

use crate::blocked::Blocked;
use crate::error::{Error, Result, check_len};
use crate::kernels::convert::Converter;
pub use crate::kernels::eltwise::Activation;
use crate::kernels::eltwise::{self, bias_act, column_sums, column_sums_vnni};
use crate::kernels::prefetch;
use crate::kernels::reorder::Reorder;
use crate::kernels::sgd::Sgd;
use crate::kernels::{
    ALayout, Accum, Batch, BatchKind, Brgemm, BrgemmDesc, DType, Element, Epilogue, SliceMut, vnni,
};
use crate::memory::{checked_product, try_filled};
use crate::rng::Rng;

/// Block sizes of a layer: `bn` rows of the batch, `bc` input features, `bk` output features.
///
/// ```
/// use dlrm_kernels::linear::Blocking;
/// let b = Blocking::auto(2048, 13, 512);
/// assert_eq!((b.bn, b.bc, b.bk), (64, 13, 64));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blocking {
    /// Batch rows per block.
    pub bn: usize,
    /// Input features per block.
    pub bc: usize,
    /// Output features per block.
    pub bk: usize,
}

/// The default block for a dimension: the dimension itself up to 64, else 64 (padded).
///
/// ```
/// assert_eq!(dlrm_kernels::linear::default_block(1000), 64);
/// assert_eq!(dlrm_kernels::linear::default_block(13), 13);
/// ```
pub fn default_block(dim: usize) -> usize {
    dim.clamp(1, 64)
}

/// The default block for the input features of a network: the whole width up to 128 (it is
/// the BRGEMM's reduced dimension, which any length serves well, and a width such as 100 would
/// waste 28% on padding to 128 in 64-blocks), else 64.
///
/// ```
/// assert_eq!(dlrm_kernels::linear::input_block(100), 100);
/// assert_eq!(dlrm_kernels::linear::input_block(1024), 64);
/// ```
pub fn input_block(dim: usize) -> usize {
    if dim <= 128 { dim.max(1) } else { 64 }
}

impl Blocking {
    /// Blocks that suit this machine's kernels: 64 where a dimension is larger (a 64x64x64
    /// BRGEMM runs at the FMA peak), the whole dimension where it is smaller.
    ///
    /// ```
    /// let b = dlrm_kernels::linear::Blocking::auto(100, 1024, 1);
    /// assert_eq!((b.bn, b.bc, b.bk), (64, 64, 1));
    /// ```
    pub fn auto(batch: usize, in_features: usize, out_features: usize) -> Self {
        Blocking {
            bn: default_block(batch),
            bc: input_block(in_features),
            bk: default_block(out_features),
        }
    }
}

/// The shape of a [`Linear`] layer.
///
/// ```
/// use dlrm_kernels::linear::{Activation, Blocking, LinearConfig};
/// let cfg = LinearConfig::new(1024, 1024, Activation::Relu, Blocking::auto(2048, 1024, 1024));
/// assert_eq!(cfg.flops(2048), 3 * 2 * 2048 * 1024 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinearConfig {
    /// Input features `C`.
    pub in_features: usize,
    /// Output features `K`.
    pub out_features: usize,
    /// Nonlinearity after the affine map.
    pub activation: Activation,
    /// Block sizes.
    pub blocking: Blocking,
}

impl LinearConfig {
    /// A config from its fields.
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, LinearConfig};
    /// let c = LinearConfig::new(4, 2, Activation::None, Blocking::auto(8, 4, 2));
    /// assert_eq!(c.out_features, 2);
    /// ```
    pub fn new(
        in_features: usize,
        out_features: usize,
        activation: Activation,
        blocking: Blocking,
    ) -> Self {
        LinearConfig {
            in_features,
            out_features,
            activation,
            blocking,
        }
    }

    /// FLOP of one forward + backward-data + backward-weights pass over `batch` rows
    /// (`3 * 2 * N * C * K`, the count the benchmarks report against).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, LinearConfig};
    /// assert_eq!(LinearConfig::new(2, 3, Activation::None, Blocking::auto(4, 2, 3)).flops(4), 144);
    /// ```
    pub fn flops(&self, batch: usize) -> u64 {
        3 * 2 * batch as u64 * self.in_features as u64 * self.out_features as u64
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

/// A zero-filled f32 vector of `len` values, for per-task scratch.
fn scratch(len: usize) -> Vec<f32> {
    vec![0f32; len]
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
    /// let cfg = LinearConfig::new(13, 512, Activation::Relu, Blocking::auto(128, 13, 512));
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
    /// let cfg = LinearConfig::new(2, 2, Activation::None, Blocking::auto(1, 2, 2));
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
    /// let cfg = LinearConfig::new(2, 1, Activation::None, Blocking::auto(1, 2, 1));
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
                let bits = weights[kk * c + cc].to_bits();
                if T::DTYPE == DType::Bf16 {
                    self.w[at] = T::from_f32(f32::from_bits(bits & 0xffff_0000));
                    self.w_lo[at] = bits as u16;
                } else {
                    self.w[at] = T::from_f32(f32::from_bits(bits));
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
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(1, 3, 2));
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
            f32::from_bits(hi.to_bits() | u32::from(self.w_lo[at]))
        } else {
            hi
        }
    }

    /// The bias (`out_features` values).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(1, 3, 2));
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
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(1, 3, 2));
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
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(1, 3, 2));
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
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(5, 3, 2));
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
    /// let cfg = LinearConfig::new(3, 2, Activation::None, Blocking::auto(5, 3, 2));
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

    /// Forward: `y = f(x W^T + b)`; padding of `y` is written as zero.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `x` or `y` has another shape or blocking than the layer's
    /// (nothing is written).
    ///
    /// ```
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(3, 2, Activation::Sigmoid, Blocking::auto(2, 3, 2));
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
        let a = (x.as_slice(), cb * bn * bc);
        let b = (&self.w[..], cb * self.w_block);
        let act = self.cfg.activation;
        let scratch_len = if fused(act) { 0 } else { bn * bk };
        per_block(
            y.as_mut_slice(),
            bn * bk,
            kb,
            a,
            b,
            cb,
            scratch_len,
            |nb, j, batch, y_blk, acc| {
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
            },
        )
    }

    /// `dy <- dy * f'(y)`: the gradient before the activation, from the one after it. The
    /// derivative is taken from the output `y` (for ReLU: `y > 0`, the mask).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `y` and `dy` are not both this layer's output shape.
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(1, 2, Activation::Relu, Blocking::auto(1, 1, 2));
    /// let layer = Linear::<f32>::new(cfg, 0)?;
    /// let y = Blocked::from_row_major(&[0.0, 2.0], 1, 2, 1, 2)?;
    /// let mut dy = Blocked::from_row_major(&[1.0, 1.0], 1, 2, 1, 2)?;
    /// layer.activation_backward(&y, &mut dy)?;
    /// assert_eq!((dy.get(0, 0), dy.get(0, 1)), (0.0, 1.0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn activation_backward(&self, y: &Blocked<T>, dy: &mut Blocked<T>) -> Result<()> {
        let n = y.rows();
        self.check_y("layer output", y, n)?;
        self.check_y("output gradient", dy, n)?;
        let act = self.cfg.activation;
        let chunk = 4096;
        dy.as_mut_slice()
            .par_chunks_mut(chunk)
            .zip(y.as_slice().par_chunks(chunk))
            .for_each(|(d, y)| eltwise::act_backward(d, y, act));
        Ok(())
    }

    /// Backward-data: `dx = dy' W`, where `dy'` is the gradient before the activation (see
    /// [`Linear::activation_backward`]).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] on a shape or blocking mismatch (nothing is written).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(2, 1, Activation::None, Blocking::auto(1, 2, 1));
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// layer.set_parameters(&[3.0, 4.0], &[0.0])?;
    /// let dy = Blocked::from_row_major(&[2.0], 1, 1, 1, 1)?;
    /// let mut dx = layer.input_zeros(1)?;
    /// layer.backward_data(&dy, &mut dx)?;
    /// assert_eq!((dx.get(0, 0), dx.get(0, 1)), (6.0, 8.0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_data(&mut self, dy: &Blocked<T>, dx: &mut Blocked<T>) -> Result<()> {
        let n = dy.rows();
        self.check_y("output gradient", dy, n)?;
        self.check_x(dx, n)?;
        self.backward_data_impl(dy, dx, None)
    }

    /// Backward-data through the layer below as well: `dx = (dy' W) * f'(y_below)`, where
    /// `y_below` is this layer's input, the output of a layer with activation `act_below`.
    /// The result is the gradient before that activation, the `dy'` the layer below needs
    /// (what [`Linear::backward_data`] then [`Linear::activation_backward`] of the layer
    /// below give, bit for bit, in one pass).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] on a shape or blocking mismatch of `dy`, `y_below` or `dx` (nothing
    /// is written).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(2, 1, Activation::None, Blocking::auto(1, 2, 1));
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// layer.set_parameters(&[3.0, 4.0], &[0.0])?;
    /// let dy = Blocked::from_row_major(&[2.0], 1, 1, 1, 1)?;
    /// // The layer below is a ReLU whose second output was 0: no gradient flows there.
    /// let y_below = Blocked::from_row_major(&[1.5, 0.0], 1, 2, 1, 2)?;
    /// let mut dx = layer.input_zeros(1)?;
    /// layer.backward_data_through(&dy, &y_below, Activation::Relu, &mut dx)?;
    /// assert_eq!((dx.get(0, 0), dx.get(0, 1)), (6.0, 0.0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_data_through(
        &mut self,
        dy: &Blocked<T>,
        y_below: &Blocked<T>,
        act_below: Activation,
        dx: &mut Blocked<T>,
    ) -> Result<()> {
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
        self.backward_data_impl(dy, dx, Some((y_below, act_below)))
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
        let a = (dy.as_slice(), kb * bn * bk);
        let b = (&self.wt[..], kb * self.wt_block);
        per_block(
            dx.as_mut_slice(),
            bn * bc,
            cb,
            a,
            b,
            kb,
            0,
            |i, j, batch, dx_blk, _| {
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
            },
        )
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
    fn transpose_scratch(&self) -> (Vec<T>, Vec<T>) {
        let Blocking { bc, bk, .. } = self.cfg.blocking;
        let len = if T::DTYPE == DType::Bf16 { bc * bk } else { 0 };
        (vec![T::default(); len], vec![T::default(); len])
    }

    /// One block of `W^T` from its block of `W`: a transpose (bf16: VNNI pairs over `bc`
    /// undone, transposed, paired again over `bk`).
    fn transpose_block(
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
    /// [`Linear::update`] (see [`Linear::weight_grad`]).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] on a shape or blocking mismatch (nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(2, 1, Activation::None, Blocking::auto(1, 2, 1));
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// let x = Blocked::from_row_major(&[1.0, 2.0], 1, 2, 1, 2)?;
    /// let dy = Blocked::from_row_major(&[3.0], 1, 1, 1, 1)?;
    /// layer.backward_weights(&x, &dy)?;
    /// assert_eq!(layer.weight_grad(), vec![3.0, 6.0]);
    /// assert_eq!(layer.bias_grad(), &[3.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_weights(&mut self, x: &Blocked<T>, dy: &Blocked<T>) -> Result<()> {
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

    /// SGD with the gradients of the last [`Linear::backward_weights`]:
    /// `W -= lr * dW`, `b -= lr * db` (Split-SGD in bf16: exact fp32 master update).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if no gradient has been computed yet, or if `lr` is NaN or infinite
    /// (nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(1, 1, Activation::None, Blocking::auto(1, 1, 1));
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// layer.set_parameters(&[1.0], &[0.0])?;
    /// let x = Blocked::from_row_major(&[2.0], 1, 1, 1, 1)?;
    /// let dy = Blocked::from_row_major(&[1.0], 1, 1, 1, 1)?;
    /// layer.backward_weights(&x, &dy)?;
    /// layer.update(0.25)?;
    /// assert_eq!((layer.weights(), layer.bias()), (vec![0.5], &[-0.25][..]));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn update(&mut self, lr: f32) -> Result<()> {
        check_lr(lr)?;
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

    /// Backward-weights with SGD fused in: each weight block's gradient is applied the moment
    /// it is computed, so no weight-gradient buffer exists. Same result, bit for bit, as
    /// [`Linear::backward_weights`] followed by [`Linear::update`].
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] on a shape or blocking mismatch, [`Error::Config`] if `lr` is NaN or
    /// infinite (nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::blocked::Blocked;
    /// use dlrm_kernels::linear::{Activation, Blocking, Linear, LinearConfig};
    /// let cfg = LinearConfig::new(1, 1, Activation::None, Blocking::auto(1, 1, 1));
    /// let mut layer = Linear::<f32>::new(cfg, 0)?;
    /// layer.set_parameters(&[1.0], &[0.0])?;
    /// let x = Blocked::from_row_major(&[2.0], 1, 1, 1, 1)?;
    /// let dy = Blocked::from_row_major(&[1.0], 1, 1, 1, 1)?;
    /// assert!(layer.backward_weights_update(&x, &dy, f32::NAN).is_err());
    /// layer.backward_weights_update(&x, &dy, 0.25)?;
    /// assert_eq!(layer.weights(), vec![0.5]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_weights_update(
        &mut self,
        x: &Blocked<T>,
        dy: &Blocked<T>,
        lr: f32,
    ) -> Result<()> {
        check_lr(lr)?;
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

/// `Err(Error::Config)` for a NaN or infinite learning rate, which would write NaN into
/// every weight.
pub(crate) fn check_lr(lr: f32) -> Result<()> {
    if lr.is_finite() {
        Ok(())
    } else {
        Err(Error::Config(format!("learning rate {lr} is not finite")))
    }
}

/// Whether the BRGEMM applies `act` (or its backward) itself, in its [`Epilogue`].
fn fused(act: Activation) -> bool {
    matches!(act, Activation::None | Activation::Relu)
}

/// One BRGEMM per output block, in parallel: block `t` of `out` (blocks of `block` elements)
/// is (`i`, `j`) = (`t / cols`, `t % cols`) and reduces panel `i` of `a` with panel `j` of `b`
/// (panels of the given lengths, `count` pairs each): `task(i, j, batch, out_block,
/// scratch)` runs it (`scratch`: `scratch_len` f32 per task). Each block is one task,
/// computed the same way whatever the thread count.
///
/// Tasks run in `t` order on each thread, so the `cols` tasks of row `i` share A's panel `i`
/// and the first task of row `i + 1` would find its panel cold (on this machine that alone
/// cost about 3% of a 1024 x 1024 layer). So each task first prefetches its share (1 /
/// `cols`) of panel `i + 1` into L2. (Prefetching the next B panel instead, a whole panel
/// per task, was slower: it evicts the running task's operands.)
#[allow(clippy::too_many_arguments)]
fn per_block<T: Element>(
    out: &mut [T],
    block: usize,
    cols: usize,
    (a, a_panel): (&[T], usize),
    (b, b_panel): (&[T], usize),
    count: usize,
    scratch_len: usize,
    task: impl Fn(usize, usize, Batch<'_, T>, &mut [T], &mut [f32]) -> Result<()> + Sync,
) -> Result<()> {
    out.par_chunks_mut(block).enumerate().try_for_each_init(
        || scratch(scratch_len),
        |acc, (t, out_blk)| {
            let (i, j) = (t / cols, t % cols);
            let share = a_panel.div_ceil(cols);
            let next = (i + 1) * a_panel;
            let from = (next + j * share).min(a.len());
            let to = (next + (j + 1) * share).min(next + a_panel).min(a.len());
            prefetch::l2(&a[from..to.max(from)]);
            let batch = Batch::strided(
                &a[i * a_panel..][..a_panel],
                &b[j * b_panel..][..b_panel],
                count,
            );
            task(i, j, batch, out_blk, acc)
        },
    )
}
