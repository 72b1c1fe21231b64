//! DLRM as a library type: bottom MLP, embedding bags, interaction, top MLP, loss, and the
//! SGD / row-wise Adagrad step, in f32 or bf16 (Split-SGD), trained in a few lines.
//!
//! One training step ([`Dlrm::train_step`]):
//!
//! 1. the batch is checked, every table's bags once (the passes below take the checked
//!    bags and never read the indices to validate them again);
//! 2. bottom MLP forward on the dense features, every table's bags pooled, both into the
//!    interaction's stacked input `[B][T + 1][d]`;
//! 3. the interaction writes the top MLP's blocked input; top MLP forward gives logits;
//! 4. the loss (BCE with the sigmoid fused, or MSE) and its gradient; a NaN or infinite loss
//!    is an error *before* anything is updated;
//! 5. top MLP backward with its update fused in, interaction backward, the fused embedding
//!    backward + update, bottom MLP backward with its update fused in. The updates are the
//!    configuration's optimizers ([`crate::optim::Optimizers`]) at the step's learning rate.
//!
//! Everything the step reads is validated before any parameter changes, so an error leaves
//! the model as it was. Every part is deterministic, so the step gives the same bits for any
//! number of threads.
//!
//! The code: the configuration and presets in `config.rs`, the passes in `step.rs`, the
//! time split in `timings.rs`; tensor names are [`crate::checkpoint::TensorName`]'s.
//!
//! ```
//! use dlrm_kernels::data::MiniBatch;
//! use dlrm_kernels::model::{Dlrm, DlrmConfig};
//!
//! let mut cfg = DlrmConfig::tiny();
//! cfg.batch_size = 4;
//! let mut model = Dlrm::new(cfg.clone(), 42)?;
//! let batch = MiniBatch {
//!     dense: vec![0.5; 4 * cfg.dense_features()],
//!     indices: vec![vec![1, 2, 3, 4]; cfg.table_rows.len()],
//!     offsets: vec![vec![0, 1, 2, 3]; cfg.table_rows.len()],
//!     targets: vec![1.0, 0.0, 1.0, 0.0],
//! };
//! let loss = model.train_step(&batch)?;
//! assert!(loss.is_finite());
//! let mut p = Vec::new();
//! model.predict(&batch, &mut p)?;
//! assert_eq!(p.len(), 4);
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

mod config;
mod step;
mod timings;

pub use config::{DlrmConfig, Precision, Preset};
pub use timings::StepTimings;

use crate::checkpoint::{TensorName, Which};
use crate::data::MiniBatch;
use crate::embedding::{
    EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, PooledLayout, TableConfig,
};
use crate::error::{Error, Result, check_len};
use crate::interaction::Interaction;
use crate::kernels::Element;
use crate::linear::Activation;
use crate::loss::sigmoid;
use crate::memory;
use crate::mlp::{Mlp, MlpConfig};
use step::{Buffers, Mlps, Stack};
use timings::timed;

/// A DLRM model. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Dlrm {
    cfg: DlrmConfig,
    stack: Stack,
    emb: EmbeddingBags,
    inter: Interaction,
    step: u64,
    bufs: Buffers,
    timings: StepTimings,
}

impl Dlrm {
    /// A model initialised as the DLRM reference does, from `seed` (bottom MLP layer `l`
    /// from `seed + l`, top from `seed + 1000 + l`, table `t` from `seed + 2000 + t`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a configuration that cannot work (see
    /// [`DlrmConfig::validate`]); [`Error::TooLarge`] naming the setting when the model's
    /// sizes overflow or it would not fit in the memory available (see
    /// [`crate::memory::check`]: checked before anything is allocated); kernel errors.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut cfg = DlrmConfig::tiny();
    /// cfg.top_mlp = vec![8, 2];
    /// assert!(Dlrm::new(cfg, 0).is_err());
    /// let huge = DlrmConfig { batch_size: 1 << 60, ..DlrmConfig::tiny() };
    /// let err = Dlrm::new(huge, 0).unwrap_err();
    /// assert!(err.to_string().starts_with("batch size 1152921504606846976: "));
    /// ```
    pub fn new(cfg: DlrmConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        memory::check(&cfg)?;
        let tables = cfg.table_rows.len();
        let inter = Interaction::new(
            cfg.interaction,
            cfg.interaction_itself,
            tables,
            cfg.embedding_dim,
        )?;
        let bottom_cfg = MlpConfig::new(cfg.bottom_mlp.clone(), cfg.batch_size);
        let mut top_sizes = vec![inter.output_dim()];
        top_sizes.extend(&cfg.top_mlp);
        let mut top_cfg = MlpConfig::new(top_sizes, cfg.batch_size);
        top_cfg.output_activation = Activation::None; // logits; the loss applies the sigmoid
        let stack = match cfg.precision {
            Precision::F32 => Stack::F32(Mlps {
                bottom: Mlp::new(bottom_cfg, seed)?,
                top: Mlp::new(top_cfg, seed.wrapping_add(1000))?,
            }),
            Precision::Bf16 => Stack::Bf16(Mlps {
                bottom: Mlp::new(bottom_cfg, seed)?,
                top: Mlp::new(top_cfg, seed.wrapping_add(1000))?,
            }),
        };
        let emb_tables = cfg
            .table_rows
            .iter()
            .enumerate()
            .map(|(t, &rows)| {
                let tc = match cfg.precision {
                    Precision::F32 => TableConfig::f32(rows, cfg.embedding_dim),
                    Precision::Bf16 => TableConfig::bf16_split(rows, cfg.embedding_dim),
                };
                EmbeddingTable::new(tc, seed.wrapping_add(2000 + t as u64))
            })
            .collect::<Result<Vec<_>>>()?;
        // The tables pool into slots 1.. of the interaction's stacked input (see step.rs).
        let layout = PooledLayout::Strided {
            row_len: inter.stacked_width(),
            first_column: cfg.embedding_dim,
        };
        let emb_config = EmbeddingBagConfig {
            layout,
            ..EmbeddingBagConfig::default()
        };
        let emb = EmbeddingBags::new(emb_tables, emb_config)?;
        Ok(Dlrm {
            cfg,
            stack,
            emb,
            inter,
            step: 0,
            bufs: Buffers::default(),
            timings: StepTimings::default(),
        })
    }

    /// The configuration.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.config().embedding_dim, 4);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn config(&self) -> &DlrmConfig {
        &self.cfg
    }

    /// Training steps taken so far.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.steps(), 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The learning rate the next step will use.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.learning_rate(), 0.1);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn learning_rate(&self) -> f32 {
        self.cfg.lr.lr(self.step + 1)
    }

    /// Time per part of the steps since the last [`Dlrm::reset_timings`].
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.timings().steps, 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn timings(&self) -> StepTimings {
        self.timings
    }

    /// Zero the timings.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// m.reset_timings();
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn reset_timings(&mut self) {
        self.timings = StepTimings::default();
    }

    /// The embedding tables.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert_eq!(Dlrm::new(DlrmConfig::tiny(), 0)?.embeddings().tables().len(), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn embeddings(&self) -> &EmbeddingBags {
        &self.emb
    }

    /// One training step on `batch`; returns its mean loss.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if the batch does not match the model (dense width, number of tables,
    /// bags per table), [`Error::Offsets`] / [`Error::IndexOutOfRange`] naming table, bag
    /// and position, [`Error::Config`] for a target outside `[0, 1]`, [`Error::NonFinite`] for
    /// a NaN or infinite dense feature or loss. On any error the model is unchanged.
    ///
    /// ```
    /// use dlrm_kernels::data::MiniBatch;
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let cfg = DlrmConfig::tiny();
    /// let mut m = Dlrm::new(cfg.clone(), 0)?;
    /// let bad = MiniBatch {
    ///     dense: vec![0.0; 5],
    ///     indices: vec![vec![0], vec![0], vec![100]],
    ///     offsets: vec![vec![0]; 3],
    ///     targets: vec![1.0],
    /// };
    /// let err = m.train_step(&bad).unwrap_err();
    /// assert_eq!(err.to_string(), "table 2, bag 0, position 0: index 100 >= rows 100");
    /// assert_eq!(m.steps(), 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn train_step(&mut self, batch: &MiniBatch) -> Result<f64> {
        let bags = self.forward(batch)?;
        let updates = self.cfg.optimizers.at(self.learning_rate());
        let bufs = &mut self.bufs;
        bufs.d_logits.resize(batch.len(), 0.0);
        let loss = timed(&mut self.timings.other, || {
            self.cfg
                .loss
                .forward_backward(&bufs.logits, &batch.targets, &mut bufs.d_logits)
        })
        .map_err(|e| match e {
            Error::NonFinite { what } => Error::NonFinite {
                what: format!("{what} at step {}", self.step + 1),
            },
            e => e,
        })?;
        self.backward(&bags, updates)?;
        self.step += 1;
        self.timings.steps += 1;
        Ok(loss)
    }

    /// Click probabilities for `batch` (its targets are ignored), into `probs` (resized).
    ///
    /// # Errors
    ///
    /// As [`Dlrm::train_step`], except for the loss; nothing changes in the model.
    ///
    /// ```
    /// use dlrm_kernels::data::MiniBatch;
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// let batch = MiniBatch {
    ///     dense: vec![0.0; 5],
    ///     indices: vec![vec![0]; 3],
    ///     offsets: vec![vec![0]; 3],
    ///     targets: vec![0.0],
    /// };
    /// let mut p = Vec::new();
    /// m.predict(&batch, &mut p)?;
    /// assert!(p[0] > 0.0 && p[0] < 1.0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn predict(&mut self, batch: &MiniBatch, probs: &mut Vec<f32>) -> Result<()> {
        let saved = self.timings;
        let res = self.forward(batch).map(drop);
        self.timings = saved; // evaluation does not count as training time
        res?;
        probs.clear();
        probs.extend(self.bufs.logits.iter().map(|&z| sigmoid(z)));
        Ok(())
    }

    /// The parameter tensors, named and shaped as the DLRM reference's PyTorch state dict
    /// has them ([`TensorName`]), in that order: bottom MLP layers (weight, bias), top MLP
    /// layers, tables.
    fn parameters(&self) -> Vec<(TensorName, Vec<usize>)> {
        let mut list = Vec::new();
        let mut top = vec![self.inter.output_dim()];
        top.extend(&self.cfg.top_mlp);
        for (mlp, sizes) in [(Which::Bottom, &self.cfg.bottom_mlp), (Which::Top, &top)] {
            for (layer, w) in sizes.windows(2).enumerate() {
                list.push((TensorName::MlpWeight { mlp, layer }, vec![w[1], w[0]]));
                list.push((TensorName::MlpBias { mlp, layer }, vec![w[1]]));
            }
        }
        for (table, &rows) in self.cfg.table_rows.iter().enumerate() {
            list.push((
                TensorName::Table { table },
                vec![rows, self.cfg.embedding_dim],
            ));
        }
        list
    }

    /// Visit every parameter tensor as `(name, shape, values)`, row-major f32, named as the
    /// DLRM reference's PyTorch state dict names them ([`TensorName`]): `bot_l.<2i>.weight`
    /// (`[out][in]`), `bot_l.<2i>.bias`, `top_l.<2i>.*`, `emb_l.<t>.weight` (`[rows][dim]`).
    /// bf16 models give their exact fp32 master weights (upper and lower halves joined).
    ///
    /// # Errors
    ///
    /// Whatever `f` returns.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// let mut names = Vec::new();
    /// m.visit_tensors(|name, shape, data| {
    ///     assert_eq!(shape.iter().product::<usize>(), data.len());
    ///     names.push(name.to_string());
    ///     Ok(())
    /// })?;
    /// assert_eq!(names[0], "bot_l.0.weight");
    /// assert_eq!(names.last().unwrap(), "emb_l.2.weight");
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn visit_tensors(
        &self,
        mut f: impl FnMut(&str, &[usize], &[f32]) -> Result<()>,
    ) -> Result<()> {
        for (name, shape) in self.parameters() {
            let key = name.to_string();
            // fp32 tables are handed over where they lie; the rest is copied out.
            match name {
                TensorName::Table { table } => {
                    let table = &self.emb.tables()[table];
                    match table.as_f32() {
                        Some(w) => f(&key, &shape, w)?,
                        None => f(&key, &shape, &table.master_weights())?,
                    }
                }
                _ => f(&key, &shape, &self.values(name).expect("a parameter"))?,
            }
        }
        Ok(())
    }

    /// Names and shapes of every parameter tensor, in [`Dlrm::visit_tensors`] order.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let list = Dlrm::new(DlrmConfig::tiny(), 0)?.tensor_list();
    /// assert_eq!(list[0], ("bot_l.0.weight".to_string(), vec![8, 5]));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn tensor_list(&self) -> Vec<(String, Vec<usize>)> {
        self.parameters()
            .into_iter()
            .map(|(name, shape)| (name.to_string(), shape))
            .collect()
    }

    /// The values of one tensor by its [`TensorName`] (row-major f32; masters for bf16): a
    /// parameter, or a table's row-wise Adagrad state once an Adagrad update has run; `None`
    /// for a name the model does not have.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// assert_eq!(m.tensor("emb_l.1.weight").unwrap().len(), 100 * 4);
    /// assert!(m.tensor("emb_l.9.weight").is_none());
    /// assert!(m.tensor("emb_l.1.adagrad_state").is_none()); // SGD keeps no state
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn tensor(&self, name: &str) -> Option<Vec<f32>> {
        self.values(name.parse().ok()?)
    }

    /// [`Dlrm::tensor`] by name.
    fn values(&self, name: TensorName) -> Option<Vec<f32>> {
        match name {
            TensorName::Table { table } => self
                .emb
                .tables()
                .get(table)
                .map(EmbeddingTable::master_weights),
            TensorName::AdagradState { table } => self
                .emb
                .tables()
                .get(table)?
                .adagrad_state()
                .map(<[f32]>::to_vec),
            TensorName::MlpWeight { mlp, layer } | TensorName::MlpBias { mlp, layer } => {
                let weight = matches!(name, TensorName::MlpWeight { .. });
                match &self.stack {
                    Stack::F32(m) => m.values(mlp, layer, weight),
                    Stack::Bf16(m) => m.values(mlp, layer, weight),
                }
            }
        }
    }

    /// Set the step counter (the learning-rate schedule's position), e.g. when resuming.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// m.set_steps(10);
    /// assert_eq!(m.steps(), 10);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn set_steps(&mut self, steps: u64) {
        self.step = steps;
    }

    /// The embedding tables, mutable (e.g. to restore optimizer state).
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// m.embeddings_mut().table_mut(0).unwrap().set_adagrad_state(&[0.0; 100])?;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn embeddings_mut(&mut self) -> &mut EmbeddingBags {
        &mut self.emb
    }

    /// Set one tensor by its [`TensorName`] (see [`Dlrm::tensor`]; f32 masters for bf16
    /// models, stored exactly; setting a table's Adagrad state starts it if it had none).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a name the model does not have, [`Error::Shape`] for a wrong
    /// length; nothing is changed then.
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// let mut m = Dlrm::new(DlrmConfig::tiny(), 0)?;
    /// m.set_tensor("top_l.2.bias", &[0.5])?;
    /// assert!(m.set_tensor("top_l.1.bias", &[0.5]).is_err());
    /// m.set_tensor("emb_l.0.adagrad_state", &[0.0; 100])?;
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn set_tensor(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let unknown = || Error::Config(format!("no parameter tensor named {name:?}"));
        let parsed: TensorName = name.parse()?;
        match parsed {
            TensorName::Table { table } => self
                .emb
                .table_mut(table)
                .ok_or_else(unknown)?
                .set_weights(data),
            TensorName::AdagradState { table } => self
                .emb
                .table_mut(table)
                .ok_or_else(unknown)?
                .set_adagrad_state(data),
            TensorName::MlpWeight { mlp, layer } | TensorName::MlpBias { mlp, layer } => {
                let weight = matches!(parsed, TensorName::MlpWeight { .. });
                let done = match &mut self.stack {
                    Stack::F32(m) => m.set(mlp, layer, weight, name, data)?,
                    Stack::Bf16(m) => m.set(mlp, layer, weight, name, data)?,
                };
                if done { Ok(()) } else { Err(unknown()) }
            }
        }
    }

    /// The logits of the last forward pass (one per sample).
    ///
    /// ```
    /// use dlrm_kernels::model::{Dlrm, DlrmConfig};
    /// assert!(Dlrm::new(DlrmConfig::tiny(), 0)?.logits().is_empty());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn logits(&self) -> &[f32] {
        &self.bufs.logits
    }
}

impl<T: Element> Mlps<T> {
    fn mlp(&self, which: Which) -> &Mlp<T> {
        match which {
            Which::Bottom => &self.bottom,
            Which::Top => &self.top,
        }
    }

    /// The weights (`weight`) or bias of layer `l` of an MLP.
    fn values(&self, which: Which, l: usize, weight: bool) -> Option<Vec<f32>> {
        let layer = self.mlp(which).layers().get(l)?;
        Some(if weight {
            layer.weights()
        } else {
            layer.bias().to_vec()
        })
    }

    /// Set the weights (`weight`) or bias of layer `l` of an MLP (`name` for errors);
    /// `Ok(false)` if there is no such layer.
    fn set(
        &mut self,
        which: Which,
        l: usize,
        weight: bool,
        name: &str,
        data: &[f32],
    ) -> Result<bool> {
        let mlp = match which {
            Which::Bottom => &mut self.bottom,
            Which::Top => &mut self.top,
        };
        let Some(layer) = mlp.layers_mut().get_mut(l) else {
            return Ok(false);
        };
        if weight {
            let b = layer.bias().to_vec();
            layer.set_parameters(data, &b)?;
        } else {
            let w = layer.weights();
            check_len(
                format!("{name} length"),
                layer.config().out_features,
                data.len(),
            )?;
            layer.set_parameters(&w, data)?;
        }
        Ok(true)
    }
}
