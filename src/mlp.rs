//! A stack of [`Linear`] layers that keeps the blocked layout between layers, with
//! row-major (or strided) f32 at its edges.
//!
//! The backward pass comes in two forms. [`Mlp::backward`] applies the output activation's
//! derivative itself and fuses each layer's update into its weight-gradient pass (no
//! gradient buffers): what one process training alone wants. [`Mlp::backward_deferred`]
//! keeps each layer's gradients, tells the caller the moment each layer's are ready (the
//! last layer first, while the layers below are still to run), and leaves the update to
//! [`Mlp::update`]: for a caller that must combine gradients first, such as data-parallel
//! replicas summing theirs.
//!
//! ```
//! use dlrm_kernels::mlp::{InputGrad, Mlp, MlpConfig};
//! use dlrm_kernels::optim::DenseUpdate;
//!
//! // 13 -> 64 -> 16 -> 1 (ReLU inside, sigmoid at the end), batch 8.
//! let cfg = MlpConfig::new(vec![13, 64, 16, 1], 8);
//! let mut mlp = Mlp::<f32>::new(cfg.with_sigmoid_output(), 42)?;
//! let input = vec![0.5f32; 8 * 13];
//! mlp.forward(&input)?;
//! let mut out = vec![0f32; 8];
//! mlp.output_row_major(&mut out)?;
//! assert!(out.iter().all(|&p| p > 0.0 && p < 1.0));
//! // Gradient of the loss w.r.t. the output, then one fused backward + SGD step.
//! mlp.set_output_grad(&vec![0.1f32; 8])?;
//! mlp.backward(InputGrad::Skip, DenseUpdate::Sgd { lr: 0.01 })?;
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use crate::blocked::Blocked;
use crate::error::{Error, Result};
use crate::kernels::Element;
use crate::linear::{
    Activation, Blocking, Linear, LinearConfig, PreActGrad, active_tuning, default_block,
    input_block,
};
use crate::optim::DenseUpdate;

/// Whether a backward pass computes the gradient w.r.t. the MLP's input (the bottom MLP of
/// DLRM has no use for it; the top MLP's feeds the interaction).
///
/// ```
/// assert_ne!(dlrm_kernels::mlp::InputGrad::Compute, dlrm_kernels::mlp::InputGrad::Skip);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputGrad {
    /// Compute it (see [`Mlp::input_grad`]).
    Compute,
    /// Do not.
    Skip,
}

/// One layer's gradients, handed to the caller of [`Mlp::backward_deferred`] as soon as
/// they are computed (see [`Linear::gradients_mut`] for their layout).
///
/// ```
/// use dlrm_kernels::mlp::{InputGrad, Mlp, MlpConfig};
/// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
/// m.forward(&[1.0; 12])?;
/// m.set_output_grad(&[0.5; 8])?;
/// m.backward_deferred(InputGrad::Skip, |g| {
///     assert_eq!((g.layer, g.bias.len()), (0, 2));
///     Ok(())
/// })?;
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug)]
pub struct LayerGrads<'a> {
    /// The layer (0 is the first).
    pub layer: usize,
    /// The weight gradient, in the layer's blocked layout.
    pub weights: &'a mut [f32],
    /// The bias gradient.
    pub bias: &'a mut [f32],
}

/// The shape of an [`Mlp`].
///
/// ```
/// use dlrm_kernels::mlp::MlpConfig;
/// let cfg = MlpConfig::new(vec![512, 512, 64], 2048);
/// assert_eq!(cfg.layer_configs()?.len(), 2);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MlpConfig {
    /// Feature sizes, input first: `[13, 512, 256, 64]` is three layers.
    pub sizes: Vec<usize>,
    /// Activation of every layer but the last.
    pub hidden_activation: Activation,
    /// Activation of the last layer.
    pub output_activation: Activation,
    /// Rows per batch (the last batch of an epoch may have fewer; see [`Mlp::forward`]).
    pub batch: usize,
    /// Override of the batch block `bn` (default: the batch up to the backend's block, see
    /// [`default_block`]).
    pub batch_block: Option<usize>,
    /// Override of the feature block size (default: per layer, the size up to the backend's
    /// block; the network's input whole up to the backend's limit, see [`input_block`]).
    pub feature_block: Option<usize>,
}

impl MlpConfig {
    /// ReLU everywhere (the DLRM bottom MLP), default blocking.
    ///
    /// ```
    /// let c = dlrm_kernels::mlp::MlpConfig::new(vec![4, 2], 1);
    /// assert_eq!(c.output_activation, dlrm_kernels::linear::Activation::Relu);
    /// ```
    pub fn new(sizes: Vec<usize>, batch: usize) -> Self {
        MlpConfig {
            sizes,
            hidden_activation: Activation::Relu,
            output_activation: Activation::Relu,
            batch,
            batch_block: None,
            feature_block: None,
        }
    }

    /// The same with a sigmoid on the last layer (the DLRM top MLP).
    ///
    /// ```
    /// let c = dlrm_kernels::mlp::MlpConfig::new(vec![4, 1], 1).with_sigmoid_output();
    /// assert_eq!(c.output_activation, dlrm_kernels::linear::Activation::Sigmoid);
    /// ```
    pub fn with_sigmoid_output(mut self) -> Self {
        self.output_activation = Activation::Sigmoid;
        self
    }

    /// The config of each layer, blocked for the active kernel backend
    /// ([`crate::linear::active_tuning`]) unless the blocks are given.
    ///
    /// # Errors
    ///
    /// Those of [`crate::linear::active_tuning`] (a bad `DLRM_ISA`).
    ///
    /// ```
    /// let c = dlrm_kernels::mlp::MlpConfig::new(vec![13, 512, 1], 100);
    /// let l = c.layer_configs()?;
    /// assert_eq!((l[0].blocking.bc, l[0].blocking.bk, l[1].blocking.bk), (13, 64, 1));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn layer_configs(&self) -> Result<Vec<LinearConfig>> {
        let tuning = active_tuning()?;
        let feature_block = |dim: usize| match self.feature_block {
            Some(b) => b.clamp(1, dim.max(1)),
            None => default_block(dim, &tuning),
        };
        let bn = self
            .batch_block
            .unwrap_or(default_block(self.batch, &tuning));
        let last = self.sizes.len().saturating_sub(2);
        Ok(self
            .sizes
            .windows(2)
            .enumerate()
            .map(|(l, w)| {
                let act = if l == last {
                    self.output_activation
                } else {
                    self.hidden_activation
                };
                // Layer l's input blocks are layer l - 1's output blocks; only the network's
                // input may use a wider block.
                let bc = match (l, self.feature_block) {
                    (0, None) => input_block(w[0], &tuning),
                    _ => feature_block(w[0]),
                };
                let blocking = Blocking {
                    bn,
                    bc,
                    bk: feature_block(w[1]),
                };
                LinearConfig::new(w[0], w[1], act, blocking)
            })
            .collect())
    }

    /// FLOP of one forward + backward + weight-gradient pass over `batch` rows
    /// (`3 * 2 * batch * sum of in x out`).
    ///
    /// ```
    /// let c = dlrm_kernels::mlp::MlpConfig::new(vec![2, 3, 4], 1);
    /// assert_eq!(c.flops(10), 3 * 2 * 10 * (2 * 3 + 3 * 4));
    /// ```
    pub fn flops(&self, batch: usize) -> u64 {
        self.sizes
            .windows(2)
            .map(|w| 3 * 2 * batch as u64 * w[0] as u64 * w[1] as u64)
            .sum()
    }
}

/// A multi-layer perceptron of [`Linear`] layers, f32 or bf16 (Split-SGD). See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Mlp<T: Element> {
    cfg: MlpConfig,
    layers: Vec<Linear<T>>,
    /// `acts[0]` is the input, `acts[l + 1]` the output of layer `l`.
    acts: Vec<Blocked<T>>,
    /// `grads[l]` is the gradient w.r.t. `acts[l]`.
    grads: Vec<Blocked<T>>,
}

impl<T: Element> Mlp<T> {
    /// An MLP initialised as the DLRM reference does, layer `l` from seed `seed + l`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for fewer than two sizes, a zero size or a zero batch; kernel errors
    /// (a bad `DLRM_ISA`).
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// assert!(Mlp::<f32>::new(MlpConfig::new(vec![4], 8), 0).is_err());
    /// ```
    pub fn new(cfg: MlpConfig, seed: u64) -> Result<Self> {
        if cfg.sizes.len() < 2 {
            return Err(Error::Config(format!(
                "an MLP needs at least an input and an output size, got {:?}",
                cfg.sizes
            )));
        }
        if cfg.batch == 0 {
            return Err(Error::Config("MLP batch size must be positive".into()));
        }
        if let Some(pos) = cfg.sizes.iter().position(|&s| s == 0) {
            return Err(Error::Config(format!(
                "MLP size {pos} is zero in {:?}",
                cfg.sizes
            )));
        }
        let layers = cfg
            .layer_configs()?
            .into_iter()
            .enumerate()
            .map(|(l, lc)| Linear::new(lc, seed.wrapping_add(l as u64)))
            .collect::<Result<Vec<_>>>()?;
        let mut acts = vec![layers[0].input_zeros(cfg.batch)?];
        for layer in &layers {
            acts.push(layer.output_zeros(cfg.batch)?);
        }
        let grads = acts.clone();
        Ok(Mlp {
            cfg,
            layers,
            acts,
            grads,
        })
    }

    /// The configuration.
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let m = Mlp::<f32>::new(MlpConfig::new(vec![4, 2], 8), 0)?;
    /// assert_eq!(m.config().sizes, vec![4, 2]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }

    /// The layers.
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let m = Mlp::<f32>::new(MlpConfig::new(vec![4, 3, 2], 8), 0)?;
    /// assert_eq!(m.layers().len(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn layers(&self) -> &[Linear<T>] {
        &self.layers
    }

    /// The layers, mutable (e.g. to load parameters).
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![1, 1], 1), 0)?;
    /// m.layers_mut()[0].set_parameters(&[2.0], &[0.0])?;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn layers_mut(&mut self) -> &mut [Linear<T>] {
        &mut self.layers
    }

    /// Rows of the current batch.
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// assert_eq!(Mlp::<f32>::new(MlpConfig::new(vec![1, 1], 5), 0)?.batch(), 5);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn batch(&self) -> usize {
        self.acts[0].rows()
    }

    /// Resize every activation and gradient to `rows` (no-op if unchanged).
    fn set_batch(&mut self, rows: usize) {
        if rows != self.batch() {
            for t in self.acts.iter_mut().chain(self.grads.iter_mut()) {
                t.reshape_rows(rows);
            }
        }
    }

    /// The blocked input tensor for a batch of `rows`, to be filled in place (e.g. by the
    /// interaction) before [`Mlp::forward_from_input`].
    ///
    /// # Panics
    ///
    /// If a tensor of `rows` rows would not fit a `usize` (see [`Blocked::reshape_rows`]).
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
    /// assert_eq!(m.input_mut(4).cols(), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn input_mut(&mut self, rows: usize) -> &mut Blocked<T> {
        self.set_batch(rows);
        &mut self.acts[0]
    }

    /// Forward pass from a row-major `rows x sizes[0]` f32 input; any number of rows
    /// (buffers are resized when it changes).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if the input length is not a multiple of the input size.
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
    /// m.forward(&[0.0; 6])?; // 2 rows
    /// assert_eq!(m.batch(), 2);
    /// assert!(m.forward(&[0.0; 7]).is_err());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn forward(&mut self, input: &[f32]) -> Result<()> {
        let c = self.cfg.sizes[0];
        if !input.len().is_multiple_of(c) {
            return Err(Error::Shape {
                what: format!("MLP input length (a multiple of {c})"),
                expected: input.len().div_ceil(c) * c,
                got: input.len(),
            });
        }
        self.input_mut(input.len() / c).copy_from_row_major(input)?;
        self.forward_from_input()
    }

    /// Forward pass from the blocked input already in place (see [`Mlp::input_mut`]).
    ///
    /// # Errors
    ///
    /// Kernel errors only (shapes are kept consistent by the MLP).
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![1, 1], 1), 0)?;
    /// m.input_mut(1).copy_from_row_major(&[1.0])?;
    /// m.forward_from_input()?;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn forward_from_input(&mut self) -> Result<()> {
        for (l, layer) in self.layers.iter().enumerate() {
            let (done, rest) = self.acts.split_at_mut(l + 1);
            layer.forward(&done[l], &mut rest[0])?;
        }
        Ok(())
    }

    /// The output of the last forward pass, blocked.
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let m = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
    /// assert_eq!(m.output().cols(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn output(&self) -> &Blocked<T> {
        self.acts.last().expect("at least one layer")
    }

    /// The output of the last forward pass as row-major f32 (`batch x sizes.last()`).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `out` has another length.
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
    /// m.forward(&[1.0; 12])?;
    /// let mut out = [0f32; 8];
    /// m.output_row_major(&mut out)?;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn output_row_major(&self, out: &mut [f32]) -> Result<()> {
        self.output().to_row_major(out)
    }

    /// The gradient w.r.t. the input from the last backward pass that asked for it
    /// ([`InputGrad::Compute`]).
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let m = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
    /// assert_eq!(m.input_grad().cols(), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn input_grad(&self) -> &Blocked<T> {
        &self.grads[0]
    }

    /// The blocked gradient w.r.t. the output (after the output activation), to be filled
    /// before a backward pass (or see [`Mlp::set_output_grad`]).
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
    /// assert_eq!(m.output_grad_mut().cols(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn output_grad_mut(&mut self) -> &mut Blocked<T> {
        self.grads.last_mut().expect("at least one layer")
    }

    /// Set the gradient w.r.t. the output (after the output activation) from row-major f32,
    /// `batch x sizes.last()`.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `d_output` has another length (nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
    /// m.forward(&[1.0; 12])?;
    /// assert!(m.set_output_grad(&[0.5; 7]).is_err());
    /// m.set_output_grad(&[0.5; 8])?;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn set_output_grad(&mut self, d_output: &[f32]) -> Result<()> {
        self.output_grad_mut().copy_from_row_major(d_output)
    }

    /// The backward pass from the output gradient in place (see [`Mlp::output_grad_mut`]):
    /// the output activation's derivative is applied here, every layer's `update` is fused
    /// into its weight-gradient pass (no gradient buffers), and the input gradient is
    /// computed if asked for. The same result, bit for bit, as [`Mlp::backward_deferred`]
    /// then [`Mlp::update`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an update that cannot be applied (a NaN or infinite learning
    /// rate; nothing is changed); kernel errors.
    ///
    /// ```
    /// use dlrm_kernels::mlp::{InputGrad, Mlp, MlpConfig};
    /// use dlrm_kernels::optim::DenseUpdate;
    /// let mut m = Mlp::<half::bf16>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
    /// m.forward(&[1.0; 12])?;
    /// m.set_output_grad(&[0.5; 8])?;
    /// assert!(m.backward(InputGrad::Skip, DenseUpdate::Sgd { lr: f32::NAN }).is_err());
    /// m.backward(InputGrad::Compute, DenseUpdate::Sgd { lr: 0.1 })?;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward(&mut self, input_grad: InputGrad, update: DenseUpdate) -> Result<()> {
        update.validate()?;
        self.backward_layers(input_grad, |layer, x, dy| {
            layer.backward_weights_update(x, dy, update)
        })
    }

    /// The backward pass from the output gradient in place, keeping each layer's gradients
    /// for [`Mlp::update`] instead of applying them: `ready` receives each layer's
    /// gradients as soon as they are computed, the last layer first, before the layers
    /// below run (so a caller can start combining them while the rest of the pass runs).
    /// The output activation's derivative is applied here, as in [`Mlp::backward`].
    ///
    /// # Errors
    ///
    /// Whatever `ready` returns (the pass stops there); kernel errors.
    ///
    /// ```
    /// use dlrm_kernels::mlp::{InputGrad, Mlp, MlpConfig};
    /// use dlrm_kernels::optim::DenseUpdate;
    /// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![3, 4, 2], 4), 0)?;
    /// m.forward(&[1.0; 12])?;
    /// m.set_output_grad(&[0.5; 8])?;
    /// let mut order = Vec::new();
    /// m.backward_deferred(InputGrad::Skip, |g| {
    ///     order.push(g.layer);
    ///     g.bias.iter_mut().for_each(|x| *x *= 0.5); // e.g. averaged with another replica
    ///     Ok(())
    /// })?;
    /// assert_eq!(order, [1, 0]);
    /// m.update(DenseUpdate::Sgd { lr: 0.1 })?;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_deferred(
        &mut self,
        input_grad: InputGrad,
        mut ready: impl FnMut(LayerGrads<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut l = self.layers.len();
        self.backward_layers(input_grad, |layer, x, dy| {
            layer.backward_weights(x, dy)?;
            l -= 1;
            let (weights, bias) = layer.gradients_mut().expect("just computed");
            ready(LayerGrads {
                layer: l,
                weights,
                bias,
            })
        })
    }

    /// Apply `update` to every layer with the gradients of the last
    /// [`Mlp::backward_deferred`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if no deferred backward pass has run, or for an update that cannot
    /// be applied (nothing is changed then).
    ///
    /// ```
    /// use dlrm_kernels::mlp::{Mlp, MlpConfig};
    /// use dlrm_kernels::optim::DenseUpdate;
    /// let mut m = Mlp::<f32>::new(MlpConfig::new(vec![3, 2], 4), 0)?;
    /// assert!(m.update(DenseUpdate::Sgd { lr: 0.1 }).is_err());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn update(&mut self, update: DenseUpdate) -> Result<()> {
        update.validate()?;
        if self.layers.iter_mut().any(|l| l.gradients_mut().is_none()) {
            return Err(Error::Config(
                "update called before backward_deferred computed the gradients".into(),
            ));
        }
        self.layers.iter_mut().try_for_each(|l| l.update(update))
    }

    /// The backward pass, layer by layer from the last: the output layer's activation
    /// derivative, then for each layer its backward-data (through the activation of the
    /// layer below) and `weights(layer, x, dy')`.
    fn backward_layers(
        &mut self,
        input_grad: InputGrad,
        mut weights: impl FnMut(&mut Linear<T>, &Blocked<T>, &PreActGrad<'_, T>) -> Result<()>,
    ) -> Result<()> {
        let last = self.layers.len() - 1;
        for l in (0..self.layers.len()).rev() {
            let act_below = (l > 0).then(|| self.layers[l - 1].config().activation);
            let layer = &mut self.layers[l];
            let (below, above) = self.grads.split_at_mut(l + 1);
            // The output layer's gradient arrives after its activation; every other layer's
            // had the derivative applied by the backward-data of the layer above.
            let dy = if l == last {
                layer.activation_backward(&self.acts[l + 1], &mut above[0])?
            } else {
                PreActGrad::assume(&above[0])
            };
            match act_below {
                Some(act) => {
                    layer.backward_data_through(&dy, &self.acts[l], act, &mut below[l])?;
                }
                None if input_grad == InputGrad::Compute => {
                    layer.backward_data(&dy, &mut below[l])?;
                }
                None => {}
            }
            weights(layer, &self.acts[l], &dy)?;
        }
        Ok(())
    }
}
