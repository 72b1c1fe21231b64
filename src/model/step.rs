//! The passes of a training step (see the [module docs](super)): the batch checked once,
//! the forward to the logits, and the backward with every update fused in.
//!
//! Per sample the model keeps the interaction's input stacked, `Z = [x, e_1, .., e_T]`
//! (`[B][T + 1][d]`, row-major): the bottom MLP writes `x` into slot 0, the embedding
//! forward pools into slots 1.. ([`PooledLayout::Strided`](crate::embedding::PooledLayout)),
//! and the interaction reads each sample's `Z` where it lies. The backward mirrors it: the
//! interaction writes `dZ` in the same layout, the embedding update reads slots 1.. and the
//! bottom MLP slot 0. So activations change layout only at the MLPs' edges (blocked inside,
//! rows outside), and the logits (one value a sample) where the loss reads them.

use crate::bf16;
use crate::data::MiniBatch;
use crate::embedding::{Bags, CheckedBatch};
use crate::error::{Error, Result, check_len};
use crate::interaction::Interaction;
use crate::kernels::Element;
use crate::mlp::{InputGrad, Mlp};
use crate::optim::StepUpdates;

use super::Dlrm;
use super::timings::{StepTimings, timed};

/// The bottom and top MLPs of one precision.
#[derive(Debug, Clone)]
pub(super) struct Mlps<T: Element> {
    pub bottom: Mlp<T>,
    pub top: Mlp<T>,
}

/// The MLPs, in the model's precision.
#[derive(Debug, Clone)]
pub(super) enum Stack {
    F32(Mlps<f32>),
    Bf16(Mlps<bf16>),
}

/// Work buffers of a step, kept between steps.
#[derive(Debug, Clone, Default)]
pub(super) struct Buffers {
    /// The interaction's input, `[B][T + 1][d]`.
    pub z: Vec<f32>,
    /// Its gradient, same layout.
    pub dz: Vec<f32>,
    /// One logit a sample.
    pub logits: Vec<f32>,
    /// The loss's gradient w.r.t. the logits.
    pub d_logits: Vec<f32>,
}

/// Every table's bags of a batch.
fn bags(batch: &MiniBatch) -> Vec<Bags<'_, i64>> {
    batch
        .indices
        .iter()
        .zip(&batch.offsets)
        .map(|(i, o)| Bags::new(i, o))
        .collect()
}

impl Dlrm {
    /// The checks of a batch that do not concern the bags' contents: its size, the dense
    /// features (a whole row per sample, finite), one bag list of `B` bags per table, targets
    /// in `[0, 1]`; returns `B`.
    fn check_batch(&self, batch: &MiniBatch) -> Result<usize> {
        let b = batch.len();
        if b == 0 {
            return Err(Error::Shape {
                what: "mini-batch samples".into(),
                expected: self.cfg.batch_size,
                got: 0,
            });
        }
        check_len(
            "dense features length ([B][dense_features])",
            b * self.cfg.dense_features(),
            batch.dense.len(),
        )?;
        let t = self.cfg.table_rows.len();
        check_len("tables in the batch's indices", t, batch.indices.len())?;
        check_len("tables in the batch's offsets", t, batch.offsets.len())?;
        for (i, o) in batch.offsets.iter().enumerate() {
            check_len(format!("bags of table {i}"), b, o.len())?;
        }
        if let Some(i) = batch.dense.iter().position(|x| !x.is_finite()) {
            let nd = self.cfg.dense_features();
            return Err(Error::NonFinite {
                what: format!("dense feature {} of sample {}", i % nd, i / nd),
            });
        }
        if let Some(i) = batch.targets.iter().position(|y| !(0.0..=1.0).contains(y)) {
            return Err(Error::Config(format!(
                "target of sample {i} is {}, outside [0, 1]",
                batch.targets[i]
            )));
        }
        Ok(b)
    }

    /// Check `batch` (its bags once, for every pass of the step), then run the forward to
    /// the logits (in `self.bufs.logits`); the checked bags are for the backward.
    pub(super) fn forward<'a>(&mut self, batch: &'a MiniBatch) -> Result<CheckedBatch<'a, i64>> {
        let b = self.check_batch(batch)?;
        let tm = &mut self.timings;
        let bags = timed(&mut tm.embedding, || self.emb.check(&bags(batch)))?;
        let width = self.inter.stacked_width();
        let bufs = &mut self.bufs;
        bufs.z.resize(b * width, 0.0);
        bufs.logits.resize(b, 0.0);
        timed(&mut tm.embedding, || self.emb.forward(&bags, &mut bufs.z))?;
        match &mut self.stack {
            Stack::F32(m) => forward_mlps(m, &self.inter, batch, bufs, tm),
            Stack::Bf16(m) => forward_mlps(m, &self.inter, batch, bufs, tm),
        }?;
        Ok(bags)
    }

    /// The backward of the last forward, from the loss gradient in `self.bufs.d_logits`,
    /// with `updates` applied to every parameter group.
    pub(super) fn backward(
        &mut self,
        bags: &CheckedBatch<'_, i64>,
        updates: StepUpdates,
    ) -> Result<()> {
        let b = bags.len();
        let bufs = &mut self.bufs;
        bufs.dz.resize(b * self.inter.stacked_width(), 0.0);
        let tm = &mut self.timings;
        let emb = &mut self.emb;
        let mut update_tables = |bufs: &mut Buffers, tm: &mut StepTimings| {
            timed(&mut tm.embedding, || {
                emb.backward_update(bags, &bufs.dz, updates.tables)
            })
        };
        let step = BackwardStep {
            inter: &self.inter,
            bufs,
            tm,
            updates,
            update_tables: &mut update_tables,
        };
        match &mut self.stack {
            Stack::F32(m) => step.run(m),
            Stack::Bf16(m) => step.run(m),
        }
    }
}

fn forward_mlps<T: Element>(
    m: &mut Mlps<T>,
    inter: &Interaction,
    batch: &MiniBatch,
    bufs: &mut Buffers,
    tm: &mut StepTimings,
) -> Result<()> {
    let b = batch.len();
    let width = inter.stacked_width();
    timed(&mut tm.mlp, || m.bottom.forward(&batch.dense))?;
    timed(&mut tm.other, || {
        m.bottom.output().to_strided(&mut bufs.z, width)
    })?;
    timed(&mut tm.interaction, || {
        inter.forward(&bufs.z, m.top.input_mut(b))
    })?;
    timed(&mut tm.mlp, || m.top.forward_from_input())?;
    timed(&mut tm.other, || m.top.output_row_major(&mut bufs.logits))
}

/// What the backward of one step works with, besides the MLPs.
struct BackwardStep<'s> {
    inter: &'s Interaction,
    bufs: &'s mut Buffers,
    tm: &'s mut StepTimings,
    updates: StepUpdates,
    /// The fused embedding backward + update, from `bufs.dz`.
    update_tables: &'s mut dyn FnMut(&mut Buffers, &mut StepTimings) -> Result<()>,
}

impl BackwardStep<'_> {
    /// Top MLP (update fused), interaction, tables (update fused), bottom MLP (update
    /// fused).
    fn run<T: Element>(self, m: &mut Mlps<T>) -> Result<()> {
        let BackwardStep {
            inter,
            bufs,
            tm,
            updates,
            update_tables,
        } = self;
        let width = inter.stacked_width();
        timed(&mut tm.other, || m.top.set_output_grad(&bufs.d_logits))?;
        timed(&mut tm.mlp, || {
            m.top.backward(InputGrad::Compute, updates.mlp)
        })?;
        timed(&mut tm.interaction, || {
            inter.backward(&bufs.z, m.top.input_grad(), &mut bufs.dz)
        })?;
        update_tables(bufs, tm)?;
        timed(&mut tm.other, || {
            m.bottom
                .output_grad_mut()
                .copy_from_strided(&bufs.dz, width)
        })?;
        timed(&mut tm.mlp, || {
            m.bottom.backward(InputGrad::Skip, updates.mlp)
        })
    }
}
