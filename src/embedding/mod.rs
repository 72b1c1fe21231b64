//! Embedding bags: tables, a multi-table forward, and a fused, race-free backward + update.
//!
//! # Tables
//!
//! An [`EmbeddingTable`] is `rows x dim`, row-major, either fp32 ([`TableType::F32`]) or bf16
//! with Split-SGD ([`TableType::Bf16Split`]: the upper 16 bits of each fp32 master weight as
//! a bf16 array, which the forward reads, plus the lower 16 bits as a `u16` array; 4 bytes per
//! weight and an exact fp32 update). Any `dim >= 1`. Tables of 2 MiB or more are mapped with
//! transparent huge pages where the OS allows it. [`EmbeddingTable::new`] initialises as the
//! DLRM reference does, `U(-sqrt(1/rows), +sqrt(1/rows))`, from a seed: row block `k` (of
//! [`INIT_BLOCK_ROWS`] rows) draws from `Rng::new(seed).fork(k)`, so the blocks are filled in
//! parallel and the result does not depend on the number of threads.
//!
//! # Bags
//!
//! [`Bags`] follows PyTorch's `EmbeddingBag`: a flat list of indices (`i32` or `i64`) and the
//! offsets where bags start, either `B` offsets ([`OffsetsKind::Starts`], the last bag runs to
//! the end of the indices) or `B + 1` with the last one the end ([`OffsetsKind::StartsAndEnd`],
//! PyTorch's `include_last_offset=True`). Empty bags pool to zeros. Optional per-sample
//! weights (one per index) require [`Pooling::Sum`], as in PyTorch.
//!
//! # Forward
//!
//! For table `t` and bag `b` with positions `s..e`:
//! `pooled[b][t] = scale * sum_{j in s..e} w_j * table_t[indices[j]]`, `scale = 1` (sum) or
//! `1 / (e - s)` (mean), accumulated in f32 (bf16 rows widened). [`EmbeddingBags::forward`]
//! pools all tables in one call, in parallel over blocks of bags (each task does every table
//! for its bags, so the threads are shared across tables), writing the layout the interaction
//! reads: row `b` of the output holds the tables' pooled vectors side by side
//! ([`PooledLayout`]); for `T` tables of equal `dim` that is `[B][T][dim]`.
//! Rows are prefetched into L2 a configurable number of lookups ahead
//! ([`EmbeddingBagConfig::prefetch_distance`], by default about 8 KiB of rows), across bag
//! boundaries.
//!
//! # Fused backward + update
//!
//! [`EmbeddingBags::backward_update`] takes `d(pooled)` in the same layout and updates the rows
//! in place, without a gradient row per lookup and without a table-sized buffer. The gradient
//! of row `r` is the dense reference's: `G[r] = sum over lookups (b, j) of r of w_j * scale *
//! dpooled[b]`. Duplicates are **coalesced first**: `G[r]` is summed in f32 over the row's
//! lookups in position order, then the row is updated once:
//!
//! * [`TableUpdate::Sgd`]: `row -= lr * G[r]` (what `W -= lr * dense_grad` gives);
//! * [`TableUpdate::RowwiseAdagrad`] (DLRM's `RowWiseSparseAdagrad`):
//!   `h[r] += mean(G[r]^2); row -= lr * G[r] / (sqrt(h[r]) + eps)`, `h` starting at zero;
//! * bf16 tables apply either in fp32 on the joined master weight (Split-SGD), so a bf16 table
//!   follows its fp32 twin bit for bit.
//!
//! How it is race-free and deterministic: lookups are bucketed by row group (power-of-two
//! ranges of rows) with a counting sort: each block of bags counts its lookups per group,
//! then writes them (in parallel over blocks) to its own piece of one buffer, laid out so
//! that each group's lookups are contiguous and in position order. Each task then owns one
//! group's contiguous range of rows and hands its lookups to
//! [`BagKernel::apply_grouped`](dlrm_microkernels::embedding::BagKernel::apply_grouped),
//! which links them into one chain per row in a single pass that also validates them (a
//! bitmap of seen rows and the last lookup of each row, both the group's size and reused
//! between calls, so no sort, no table-sized buffer and no allocation per call), and applies
//! the coalesced updates row by row, rows in the order of their first lookup (not
//! ascending: that would wake the hardware stream prefetchers). No two tasks touch the same
//! row and no atomics are used. Each row's gradient is summed in position order whatever the
//! grouping, so the bits are the same for any number of threads.
//!
//! # Validation
//!
//! A batch's bags are checked once, by [`EmbeddingBags::check`] (indices in `[0, rows)`,
//! offsets starting at 0, never decreasing, the last at most the number of indices, weights
//! as many as indices, one bag list per table, the same `B` for every table), which gives a
//! [`CheckedBatch`]: the only thing the forward and the fused update take, so no pass reads
//! the indices to validate them again. Every pass checks the rest first (output or gradient
//! of `B * row_len` floats, the checked batch made for these tables) and on error writes
//! nothing: tables stay bit-identical and the output is untouched. Errors name the table,
//! bag and position.
//!
//! The code: tables in [`table`](self::EmbeddingTable) (`table.rs`), bags and their check in
//! `bags.rs`, the fused update in `update.rs`.
//!
//! # Example
//!
//! ```
//! use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
//! use dlrm_kernels::optim::TableUpdate;
//!
//! let tables = vec![
//!     EmbeddingTable::new(TableConfig::f32(1000, 16), 1)?,
//!     EmbeddingTable::new(TableConfig::bf16_split(500, 16), 2)?,
//! ];
//! let mut emb = EmbeddingBags::new(tables, EmbeddingBagConfig::default())?;
//! // Two samples; table 0 has bags [3, 7] and [], table 1 has [1] and [1, 1, 499].
//! let (i0, o0) = ([3i64, 7], [0i64, 2]);
//! let (i1, o1) = ([1i64, 1, 1, 499], [0i64, 1]);
//! let bags = emb.check(&[Bags::new(&i0, &o0), Bags::new(&i1, &o1)])?; // once per batch
//! let mut pooled = vec![f32::NAN; 2 * emb.pooled_row_len()]; // [B = 2][T = 2][dim = 16]
//! emb.forward(&bags, &mut pooled)?;
//! assert!(pooled[32..48].iter().all(|&x| x == 0.0)); // sample 1, table 0: empty bag
//! assert!(pooled.iter().all(|x| x.is_finite()));
//! let grad = vec![0.01f32; pooled.len()]; // d(loss) / d(pooled), same layout
//! emb.backward_update(&bags, &grad, TableUpdate::Sgd { lr: 0.1 })?;
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

mod bags;
mod table;
mod update;

use rayon::prelude::*;

pub use crate::kernels::embedding::{BagIndex, CheckedBags, HugePageBuf, Pooling};
pub use bags::{Bags, CheckedBatch, OffsetsKind};
pub use table::{EmbeddingTable, INIT_BLOCK_ROWS, TableConfig, TableType};

use crate::error::{Error, Result, check_len};
use crate::kernels::embedding::{BagKernel, BagKernelDesc, GradRows};
use crate::kernels::{Element, Isa};
use crate::optim::TableUpdate;
use bags::bag_error;
use table::Weights;
use update::{Scratch, UpdateJob};

/// Where each table's pooled vector goes in a row of the forward output (and where its
/// gradient is read in the backward).
///
/// ```
/// use dlrm_kernels::embedding::PooledLayout;
/// // [B][T + 1][d] with the bottom-MLP output in slot 0, for T = 26 tables of d = 64:
/// let l = PooledLayout::Strided { row_len: 27 * 64, first_column: 64 };
/// assert_ne!(l, PooledLayout::Packed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PooledLayout {
    /// Rows of `sum(dim_t)` floats, table `t` at columns `sum_{u<t} dim_u..` (for equal
    /// dims: `[B][T][dim]`).
    #[default]
    Packed,
    /// Rows of `row_len` floats, the tables side by side from `first_column` on; the other
    /// columns are neither written by the forward nor read by the backward.
    Strided {
        /// Floats per sample.
        row_len: usize,
        /// Column of table 0's first element.
        first_column: usize,
    },
}

/// How the bags are pooled and laid out, and how far ahead rows are prefetched.
///
/// ```
/// use dlrm_kernels::embedding::{EmbeddingBagConfig, Pooling};
/// let c = EmbeddingBagConfig { pooling: Pooling::Mean, ..EmbeddingBagConfig::default() };
/// assert_eq!(c.prefetch_distance, None); // per table, from its row size
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EmbeddingBagConfig {
    /// Sum or mean (the DLRM reference sums).
    pub pooling: Pooling,
    /// Output / gradient layout.
    pub layout: PooledLayout,
    /// Lookups ahead whose rows are prefetched (`Some(0)`: no software prefetch). `None`
    /// picks it per table and pass from the bytes per row (about 8 KiB of rows ahead, see
    /// [`BagKernelDesc::prefetch_for_row_bytes`]): the forward reads `dim * 4` bytes per
    /// lookup of an fp32 table and `dim * 2` of a bf16 one, the update `dim * 4` for both.
    pub prefetch_distance: Option<usize>,
}

impl Default for EmbeddingBagConfig {
    fn default() -> Self {
        EmbeddingBagConfig {
            pooling: Pooling::Sum,
            layout: PooledLayout::Packed,
            prefetch_distance: None,
        }
    }
}

/// One table's kernels: pooling and update differ in their prefetch distance.
#[derive(Debug, Clone, Copy)]
struct Kernels {
    pool: BagKernel,
    update: BagKernel,
}

/// Several embedding tables pooled and updated together.
///
/// ```
/// use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
///
/// let t = EmbeddingTable::from_f32(TableConfig::f32(3, 2), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// let emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default())?;
/// let mut out = [0.0f32; 4];
/// let bags = emb.check(&[Bags::new(&[0i32, 2, 1], &[0, 2])])?; // bags [0, 2] and [1]
/// emb.forward(&bags, &mut out)?;
/// assert_eq!(out, [6.0, 8.0, 3.0, 4.0]);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EmbeddingBags {
    tables: Vec<EmbeddingTable>,
    kernels: Vec<Kernels>,
    columns: Vec<usize>,
    row_len: usize,
    config: EmbeddingBagConfig,
    isa: Isa,
    scratch: Scratch,
}

impl EmbeddingBags {
    /// Tables pooled with `config`, on the active ISA ([`Isa::active`]).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for no tables, or a [`PooledLayout::Strided`] row too short for the
    /// tables; [`Error::Kernel`] for a bad `DLRM_ISA`.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// let tables = vec![EmbeddingTable::zeros(TableConfig::f32(4, 3))?];
    /// assert_eq!(EmbeddingBags::new(tables, EmbeddingBagConfig::default())?.pooled_row_len(), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn new(tables: Vec<EmbeddingTable>, config: EmbeddingBagConfig) -> Result<Self> {
        Self::with_isa(tables, config, Isa::active()?)
    }

    /// As [`EmbeddingBags::new`] on a chosen ISA.
    ///
    /// # Errors
    ///
    /// As [`EmbeddingBags::new`], and [`Error::Kernel`] if this CPU lacks `isa`.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// use dlrm_kernels::Isa;
    /// let tables = vec![EmbeddingTable::zeros(TableConfig::f32(4, 3))?];
    /// let emb = EmbeddingBags::with_isa(tables, EmbeddingBagConfig::default(), Isa::Portable)?;
    /// assert_eq!(emb.isa(), Isa::Portable);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn with_isa(
        tables: Vec<EmbeddingTable>,
        config: EmbeddingBagConfig,
        isa: Isa,
    ) -> Result<Self> {
        if tables.is_empty() {
            return Err(Error::Config(
                "EmbeddingBags needs at least one table".into(),
            ));
        }
        let isa = isa.require()?;
        let total: usize = tables.iter().map(EmbeddingTable::dim).sum();
        let (row_len, first) = match config.layout {
            PooledLayout::Packed => (total, 0),
            PooledLayout::Strided {
                row_len,
                first_column,
            } => {
                if first_column
                    .checked_add(total)
                    .is_none_or(|end| end > row_len)
                {
                    return Err(Error::Config(format!(
                        "pooled layout: {} tables of {total} columns in all from column \
                         {first_column} do not fit rows of {row_len}",
                        tables.len()
                    )));
                }
                (row_len, first_column)
            }
        };
        let mut columns = Vec::with_capacity(tables.len());
        let mut col = first;
        for t in &tables {
            columns.push(col);
            col += t.dim();
        }
        let kernel = |dim: usize, row_bytes: usize| {
            let desc = BagKernelDesc {
                dim,
                prefetch_distance: config
                    .prefetch_distance
                    .unwrap_or_else(|| BagKernelDesc::prefetch_for_row_bytes(row_bytes)),
            };
            BagKernel::with_isa(desc, isa).map_err(|e| bag_error(e, 0))
        };
        let kernels = tables
            .iter()
            .map(|t| {
                let (dim, ty) = (t.dim(), t.table_type());
                Ok(Kernels {
                    pool: kernel(dim, dim * ty.bytes_read_per_weight())?,
                    update: kernel(dim, dim * ty.bytes_per_weight())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EmbeddingBags {
            tables,
            kernels,
            columns,
            row_len,
            config,
            isa,
            scratch: Scratch::default(),
        })
    }

    /// The tables.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// let emb = EmbeddingBags::new(
    ///     vec![EmbeddingTable::zeros(TableConfig::f32(4, 3))?],
    ///     EmbeddingBagConfig::default(),
    /// )?;
    /// assert_eq!(emb.tables()[0].rows(), 4);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn tables(&self) -> &[EmbeddingTable] {
        &self.tables
    }

    /// Give the tables back.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// let t = EmbeddingTable::zeros(TableConfig::f32(4, 3))?;
    /// let emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default())?;
    /// assert_eq!(emb.into_tables().len(), 1);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn into_tables(self) -> Vec<EmbeddingTable> {
        self.tables
    }

    /// The configuration.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// let emb = EmbeddingBags::new(
    ///     vec![EmbeddingTable::zeros(TableConfig::f32(4, 3))?],
    ///     EmbeddingBagConfig::default(),
    /// )?;
    /// assert_eq!(emb.config(), EmbeddingBagConfig::default());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn config(&self) -> EmbeddingBagConfig {
        self.config
    }

    /// The ISA the kernels run on.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// let emb = EmbeddingBags::new(
    ///     vec![EmbeddingTable::zeros(TableConfig::f32(4, 3))?],
    ///     EmbeddingBagConfig::default(),
    /// )?;
    /// assert!(emb.isa().is_available());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Floats per sample in the forward output and the gradient (`row_len`).
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// let tables = vec![
    ///     EmbeddingTable::zeros(TableConfig::f32(4, 3))?,
    ///     EmbeddingTable::zeros(TableConfig::f32(4, 5))?,
    /// ];
    /// assert_eq!(EmbeddingBags::new(tables, EmbeddingBagConfig::default())?.pooled_row_len(), 8);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn pooled_row_len(&self) -> usize {
        self.row_len
    }

    /// The column where table `t`'s pooled vector starts in an output row (`None` past the
    /// last table).
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// let tables = vec![
    ///     EmbeddingTable::zeros(TableConfig::f32(4, 3))?,
    ///     EmbeddingTable::zeros(TableConfig::f32(4, 5))?,
    /// ];
    /// let emb = EmbeddingBags::new(tables, EmbeddingBagConfig::default())?;
    /// assert_eq!((emb.column(0), emb.column(1), emb.column(2)), (Some(0), Some(3), None));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn column(&self, t: usize) -> Option<usize> {
        self.columns.get(t).copied()
    }

    /// Pool every table's bags into `out` (`[B][row_len]`, see [`PooledLayout`]); `O` is
    /// `f32` or `bf16` (rounded to nearest even).
    ///
    /// # Errors
    ///
    /// Nothing is written when any of these is returned: [`Error::Shape`] for `out` not
    /// `B * row_len` long or `bags` not checked for as many tables; [`Error::Config`] for
    /// `bags` checked against tables of other sizes, or weights with [`Pooling::Mean`].
    /// (The bags themselves were checked by [`EmbeddingBags::check`].)
    ///
    /// ```
    /// use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// use dlrm_kernels::Error;
    ///
    /// let t = EmbeddingTable::zeros(TableConfig::f32(10, 4))?;
    /// let emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default())?;
    /// let bags = emb.check(&[Bags::new(&[1i64, 9], &[0, 1])])?;
    /// let mut out = [f32::NAN; 7];
    /// let err = emb.forward(&bags, &mut out).unwrap_err();
    /// assert_eq!(err.to_string(), "pooled output ([B][row_len]): expected 8, got 7");
    /// assert!(out.iter().all(|x| x.is_nan())); // untouched
    /// # Ok::<(), Error>(())
    /// ```
    pub fn forward<I: BagIndex, O: Element>(
        &self,
        bags: &CheckedBatch<'_, I>,
        out: &mut [O],
    ) -> Result<()> {
        bags.matches(self)?;
        let batch = bags.len();
        let total = batch
            .checked_mul(self.row_len)
            .ok_or_else(|| Error::Config("pooled output size overflows".into()))?;
        check_len("pooled output ([B][row_len])", total, out.len())?;
        if total == 0 {
            return Ok(());
        }
        let tasks = 4 * rayon::current_num_threads();
        let chunk = batch.div_ceil(tasks).max(1);
        let pooling = self.config.pooling;
        out.par_chunks_mut(chunk * self.row_len)
            .enumerate()
            .try_for_each(|(c, out_c)| {
                let (b0, b1) = (c * chunk, ((c + 1) * chunk).min(batch));
                for (t, table) in self.tables.iter().enumerate() {
                    let run = bags.table(t).expect("one per table").range(b0..b1);
                    let col = self.columns[t];
                    let kernel = &self.kernels[t].pool;
                    match &table.weights {
                        Weights::F32(w) => {
                            kernel.pool(w, &run, pooling, &mut out_c[col..], self.row_len)
                        }
                        Weights::Split { hi, .. } => {
                            kernel.pool(hi, &run, pooling, &mut out_c[col..], self.row_len)
                        }
                    }
                    .map_err(|e| bag_error(e, t))?;
                }
                Ok(())
            })
    }

    /// The fused backward + update: from `grad` = d(pooled) (`[B][row_len]`, the forward's
    /// layout), update every looked-up row of every table in place with `update` (see the
    /// module docs: duplicates coalesced, race-free, the same bits for any thread count).
    ///
    /// # Errors
    ///
    /// Nothing is written when any of these is returned: those of
    /// [`EmbeddingBags::forward`] (with `grad` in place of `out`), [`Error::Config`] for an
    /// update that cannot be applied ([`TableUpdate::validate`]), and for more than
    /// `u32::MAX` lookups or bags in one table.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// use dlrm_kernels::optim::TableUpdate;
    ///
    /// let t = EmbeddingTable::from_f32(TableConfig::f32(3, 1), &[1.0, 1.0, 1.0])?;
    /// let mut emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default())?;
    /// // Bag 0 = rows [2, 2], bag 1 = row [0]; gradients 0.5 and 1.0.
    /// let bags = emb.check(&[Bags::new(&[2i32, 2, 0], &[0, 2])])?;
    /// emb.backward_update(&bags, &[0.5, 1.0], TableUpdate::Sgd { lr: 0.1 })?;
    /// // Row 2 got 0.5 + 0.5 (coalesced), row 0 got 1.0, row 1 nothing.
    /// assert_eq!(emb.tables()[0].master_weights(), [1.0 - 0.1, 1.0, 1.0 - 0.1 * 1.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_update<I: BagIndex>(
        &mut self,
        bags: &CheckedBatch<'_, I>,
        grad: &[f32],
        update: TableUpdate,
    ) -> Result<()> {
        update.validate()?;
        bags.matches(self)?;
        let batch = bags.len();
        let total = batch
            .checked_mul(self.row_len)
            .ok_or_else(|| Error::Config("gradient size overflows".into()))?;
        check_len(
            "gradient of the pooled output ([B][row_len])",
            total,
            grad.len(),
        )?;
        for t in 0..bags.tables() {
            let c = bags.table(t).expect("one per table");
            let end = c.start(c.len());
            if end > u32::MAX as usize || c.len() > u32::MAX as usize {
                return Err(Error::Config(format!(
                    "table {t}: {end} lookups in {} bags; at most {} of each per call",
                    c.len(),
                    u32::MAX
                )));
            }
        }
        if let TableUpdate::RowwiseAdagrad { .. } = update {
            for table in &mut self.tables {
                if table.adagrad.is_none() {
                    table.adagrad = Some(HugePageBuf::zeroed(table.rows())?);
                }
            }
        }
        if total == 0 {
            return Ok(());
        }
        let pooling = self.config.pooling;
        for (t, table) in self.tables.iter_mut().enumerate() {
            let job = UpdateJob {
                kernel: self.kernels[t].update,
                table: t,
                grad: GradRows {
                    data: &grad[self.columns[t]..],
                    stride: self.row_len,
                },
                pooling,
                update,
            };
            job.run(
                table,
                bags.table(t).expect("one per table"),
                &mut self.scratch,
            )?;
        }
        Ok(())
    }
}

impl EmbeddingBags {
    /// Table `t`, mutable (its shape cannot change through it), or `None` past the end.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// let t = EmbeddingTable::zeros(TableConfig::f32(2, 1))?;
    /// let mut emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default())?;
    /// emb.table_mut(0).unwrap().set_weights(&[1.0, 2.0])?;
    /// assert_eq!(emb.tables()[0].master_weights(), [1.0, 2.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn table_mut(&mut self, t: usize) -> Option<&mut EmbeddingTable> {
        self.tables.get_mut(t)
    }
}
