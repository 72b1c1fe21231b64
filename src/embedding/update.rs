//! The fused, race-free backward + update of one table (see the [module docs](super)).

use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use super::table::{EmbeddingTable, Weights};
use super::{BagIndex, Pooling};
use crate::error::{Error, Result};
use crate::kernels::embedding::{
    BagKernel, CheckedBags, GradRows, GroupBuffers, Lookup, RowUpdate, RowsMut,
};
use crate::optim::TableUpdate;

/// Row groups per thread in the fused update (each a power-of-two range of rows owned by one
/// task; several per thread so work-stealing can even out the load).
const GROUPS_PER_THREAD: usize = 16;

/// Row groups have at most `2^MAX_GROUP_SHIFT` rows (large tables get more groups than
/// [`GROUPS_PER_THREAD`] per thread): a group's row-indexed buffers for chaining lookups by row
/// (a `u32` per row and a bit per row, 264 KiB for 64K rows) then stay in L2; larger groups
/// were measured slower (BENCHMARKS.md, "Measurements behind choices in the code").
const MAX_GROUP_SHIFT: u32 = 16;

/// Reusable buffers of the fused update (kept between calls so large batches do not pay for
/// fresh pages every step).
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Every lookup of a table, group by group.
    lookups: Vec<Lookup>,
    /// Lookups per (chunk of bags, group).
    counts: Vec<u32>,
    /// Buffers for chaining lookups by row: a task takes a set and puts it back, so there
    /// are as many sets as tasks ever ran at once (at most the number of threads).
    groups: Mutex<Vec<GroupBuffers>>,
}

impl Clone for Scratch {
    /// Fresh (empty) buffers: nothing in them outlives a call.
    fn clone(&self) -> Self {
        Scratch::default()
    }
}

/// The fused update of one table.
pub(super) struct UpdateJob<'g> {
    /// The table's update kernel.
    pub kernel: BagKernel,
    /// The table's number, for errors.
    pub table: usize,
    /// The gradient of the table's pooled vectors.
    pub grad: GradRows<'g>,
    /// How the bags were pooled.
    pub pooling: Pooling,
    /// What to apply.
    pub update: TableUpdate,
}

impl UpdateJob<'_> {
    /// Update `table` from its `bags`' gradient, with `scratch`'s buffers.
    pub fn run<I: BagIndex>(
        &self,
        table: &mut EmbeddingTable,
        bags: &CheckedBags<'_, I>,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let (batch, n) = (bags.len(), bags.start(bags.len()));
        if n == 0 {
            return Ok(());
        }
        let kb = bags.bags();
        let (rows, dim) = (table.rows(), table.dim());
        let threads = rayon::current_num_threads();
        // Row groups of 2^gshift rows, about GROUPS_PER_THREAD per thread. The grouping only
        // decides who does the work: a row's lookups are applied in position order whatever
        // it is, so the bits do not depend on it (or on the thread count).
        let target_groups = GROUPS_PER_THREAD * threads;
        let mut gshift = 0;
        while ((rows - 1) >> gshift) + 1 > target_groups && gshift < MAX_GROUP_SHIFT {
            gshift += 1;
        }
        let ngroups = ((rows - 1) >> gshift) + 1;
        let group_rows = 1usize << gshift;
        let Scratch {
            lookups,
            counts,
            groups: pool,
        } = scratch;

        // 1. Per chunk of bags (in parallel): how many of the chunk's lookups fall in each
        //    group.
        let nchunks = batch.clamp(1, 4 * threads);
        let bag_bounds: Vec<usize> = (0..=nchunks).map(|c| c * batch / nchunks).collect();
        let start = |b: usize| bags.start(b);
        counts.clear();
        counts.resize(nchunks * ngroups, 0);
        counts
            .par_chunks_mut(ngroups)
            .enumerate()
            .for_each(|(c, counts)| {
                let shift = gshift; // a local: the closure holds a reference
                for &i in &kb.indices[start(bag_bounds[c])..start(bag_bounds[c + 1])] {
                    counts[(i.to_i64() as usize) >> shift] += 1;
                }
            });

        // 2. Lay the lookups out group by group, and within a group chunk by chunk: every
        //    (group, chunk) pair gets its own piece of the scratch, which the chunk fills in
        //    position order (in parallel over chunks). So each group's lookups end up
        //    contiguous and in position order.
        if lookups.len() < n {
            lookups.resize(
                n,
                Lookup {
                    row: 0,
                    bag: 0,
                    scale: 0.0,
                },
            );
        }
        // Each piece as a cursor over its slots.
        let mut pieces: Vec<Vec<std::slice::IterMut<'_, Lookup>>> =
            (0..nchunks).map(|_| Vec::with_capacity(ngroups)).collect();
        let mut group_ends = Vec::with_capacity(ngroups);
        let mut rest = &mut lookups[..n];
        let mut at = 0;
        for g in 0..ngroups {
            for (c, chunk_pieces) in pieces.iter_mut().enumerate() {
                let len = counts[c * ngroups + g] as usize;
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(len);
                chunk_pieces.push(piece.iter_mut());
                rest = tail;
                at += len;
            }
            group_ends.push(at);
        }
        let pooling = self.pooling;
        pieces.par_iter_mut().enumerate().for_each(|(c, pieces)| {
            let shift = gshift; // a local: the closure holds a reference
            let mut put = |row: usize, bag: usize, scale: f32| {
                *pieces[row >> shift]
                    .next()
                    .expect("the pieces were sized by counting") = Lookup {
                    row: row as u32,
                    bag: bag as u32,
                    scale,
                };
            };
            for b in bag_bounds[c]..bag_bounds[c + 1] {
                let (s, e) = (start(b), start(b + 1));
                let rows = kb.indices[s..e].iter().map(|i| i.to_i64() as usize);
                match kb.weights {
                    Some(w) => rows.zip(&w[s..e]).for_each(|(row, &w)| put(row, b, w)),
                    None => {
                        let scale = match pooling {
                            Pooling::Mean if e > s => 1.0 / (e - s) as f32,
                            _ => 1.0,
                        };
                        rows.for_each(|row| put(row, b, scale));
                    }
                }
            }
        });
        drop(pieces);

        // 3. Per group (in parallel, each owning its rows): group its lookups by row (a row's
        //    lookups staying in position order) and apply the coalesced updates.
        let lookups = &lookups[..n];
        let pool = &*pool; // shared by the tasks
        let run_group = |g: usize, block: RowsMut<'_>, update: RowUpdate<'_>| -> Result<()> {
            let from = if g == 0 { 0 } else { group_ends[g - 1] };
            let first_row = g << gshift;
            let mut buffers = pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
                .unwrap_or_default();
            let applied = self
                .kernel
                .apply_grouped(
                    block,
                    first_row,
                    &lookups[from..group_ends[g]],
                    self.grad,
                    update,
                    &mut buffers,
                )
                .map_err(|e| super::bags::bag_error(e, self.table));
            pool.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(buffers);
            applied
        };
        let block = group_rows * dim;
        match (&mut table.weights, self.update, &mut table.adagrad) {
            (Weights::F32(w), TableUpdate::Sgd { lr }, _) => w
                .par_chunks_mut(block)
                .enumerate()
                .try_for_each(|(g, b)| run_group(g, RowsMut::F32(b), RowUpdate::Sgd { lr })),
            (Weights::Split { hi, lo }, TableUpdate::Sgd { lr }, _) => hi
                .par_chunks_mut(block)
                .zip(lo.par_chunks_mut(block))
                .enumerate()
                .try_for_each(|(g, (hi, lo))| {
                    run_group(g, RowsMut::Split { hi, lo }, RowUpdate::Sgd { lr })
                }),
            (Weights::F32(w), TableUpdate::RowwiseAdagrad { lr, eps }, Some(h)) => w
                .par_chunks_mut(block)
                .zip(h.par_chunks_mut(group_rows))
                .enumerate()
                .try_for_each(|(g, (b, state))| {
                    run_group(
                        g,
                        RowsMut::F32(b),
                        RowUpdate::RowwiseAdagrad { lr, eps, state },
                    )
                }),
            (Weights::Split { hi, lo }, TableUpdate::RowwiseAdagrad { lr, eps }, Some(h)) => hi
                .par_chunks_mut(block)
                .zip(lo.par_chunks_mut(block))
                .zip(h.par_chunks_mut(group_rows))
                .enumerate()
                .try_for_each(|(g, ((hi, lo), state))| {
                    run_group(
                        g,
                        RowsMut::Split { hi, lo },
                        RowUpdate::RowwiseAdagrad { lr, eps, state },
                    )
                }),
            (_, TableUpdate::RowwiseAdagrad { .. }, None) => Err(Error::Config(format!(
                "table {}: Adagrad state missing",
                self.table
            ))),
        }
    }
}
