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
//! * [`Optimizer::Sgd`]: `row -= lr * G[r]` (what `W -= lr * dense_grad` gives);
//! * [`Optimizer::RowwiseAdagrad`] (DLRM's `RowWiseSparseAdagrad`):
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
//! Every call checks everything first (indices in `[0, rows)`, offsets starting at 0, never
//! decreasing, the last at most the number of indices, weights as many as indices, output or
//! gradient of `B * row_len` floats, one bag list per table, the same `B` for every table)
//! and on error writes nothing: tables stay bit-identical and the output is untouched. Errors
//! name the table, bag and position.
//!
//! # Example
//!
//! ```
//! use dlrm_kernels::embedding::{
//!     Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, Optimizer, TableConfig,
//! };
//!
//! let tables = vec![
//!     EmbeddingTable::new(TableConfig::f32(1000, 16), 1)?,
//!     EmbeddingTable::new(TableConfig::bf16_split(500, 16), 2)?,
//! ];
//! let mut emb = EmbeddingBags::new(tables, EmbeddingBagConfig::default())?;
//! // Two samples; table 0 has bags [3, 7] and [], table 1 has [1] and [1, 1, 499].
//! let (i0, o0) = ([3i64, 7], [0i64, 2]);
//! let (i1, o1) = ([1i64, 1, 1, 499], [0i64, 1]);
//! let bags = [Bags::new(&i0, &o0), Bags::new(&i1, &o1)];
//! let mut pooled = vec![f32::NAN; 2 * emb.pooled_row_len()]; // [B = 2][T = 2][dim = 16]
//! emb.forward(&bags, &mut pooled)?;
//! assert!(pooled[32..48].iter().all(|&x| x == 0.0)); // sample 1, table 0: empty bag
//! assert!(pooled.iter().all(|x| x.is_finite()));
//! let grad = vec![0.01f32; pooled.len()]; // d(loss) / d(pooled), same layout
//! emb.backward_update(&bags, &grad, Optimizer::Sgd { lr: 0.1 })?;
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use std::sync::{Mutex, PoisonError};

use half::bf16;
use rayon::prelude::*;

pub use crate::kernels::embedding::{BagIndex, HugePageBuf, Pooling};

use crate::error::{Error, Result, check_len};
use crate::kernels::embedding::{
    self as k, BagError, BagKernel, BagKernelDesc, GradRows, GroupBuffers, Lookup, RowUpdate,
    RowsMut,
};
use crate::kernels::{Element, Isa};
use crate::rng::Rng;

/// Rows per initialisation block: block `k` draws from `Rng::new(seed).fork(k)`.
///
/// ```
/// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig, INIT_BLOCK_ROWS};
/// use dlrm_kernels::rng::Rng;
/// let t = EmbeddingTable::new(TableConfig::f32(2 * INIT_BLOCK_ROWS, 1), 5)?;
/// // Row INIT_BLOCK_ROWS is the first value of block 1's stream.
/// let bound = (1.0 / (2 * INIT_BLOCK_ROWS) as f64).sqrt() as f32;
/// let first = Rng::new(5).fork(1).uniform_in(-bound, bound);
/// assert_eq!(t.master_weights()[INIT_BLOCK_ROWS], first);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub const INIT_BLOCK_ROWS: usize = 4096;

/// Row groups per thread in the fused update (each a power-of-two range of rows owned by one
/// task; several per thread so work-stealing can even out the load).
const GROUPS_PER_THREAD: usize = 16;

/// Row groups have at most `2^MAX_GROUP_SHIFT` rows (large tables get more groups than
/// [`GROUPS_PER_THREAD`] per thread): a group's row-indexed buffers for chaining lookups by row
/// (a `u32` per row and a bit per row, 264 KiB for 64K rows) then stay in L2. Larger groups
/// (8M rows on one thread: 512K rows each) measured about 15% slower for the whole update.
const MAX_GROUP_SHIFT: u32 = 16;

/// Storage type of a table.
///
/// ```
/// use dlrm_kernels::embedding::TableType;
/// assert_eq!(TableType::Bf16Split.bytes_per_weight(), 4);
/// assert_eq!(TableType::Bf16Split.bytes_read_per_weight(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableType {
    /// fp32 weights.
    F32,
    /// bf16 weights (the upper halves of fp32 master weights) plus the lower halves, for
    /// Split-SGD.
    Bf16Split,
}

impl TableType {
    /// Bytes stored per weight (4 for both: Split-SGD keeps the exact fp32 master weight).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::embedding::TableType::F32.bytes_per_weight(), 4);
    /// ```
    pub fn bytes_per_weight(self) -> usize {
        4
    }

    /// Bytes the forward reads per weight (4 for fp32, 2 for bf16).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::embedding::TableType::F32.bytes_read_per_weight(), 4);
    /// ```
    pub fn bytes_read_per_weight(self) -> usize {
        match self {
            TableType::F32 => 4,
            TableType::Bf16Split => 2,
        }
    }
}

/// Shape and storage type of a table.
///
/// ```
/// use dlrm_kernels::embedding::{TableConfig, TableType};
/// let c = TableConfig::bf16_split(1_000_000, 64);
/// assert_eq!((c.rows, c.dim, c.table_type), (1_000_000, 64, TableType::Bf16Split));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableConfig {
    /// Number of rows (at most `u32::MAX`).
    pub rows: usize,
    /// Elements per row (at least 1).
    pub dim: usize,
    /// Storage type.
    pub table_type: TableType,
}

impl TableConfig {
    /// An fp32 table.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::embedding::TableConfig::f32(10, 3).rows, 10);
    /// ```
    pub fn f32(rows: usize, dim: usize) -> Self {
        TableConfig {
            rows,
            dim,
            table_type: TableType::F32,
        }
    }

    /// A bf16 Split-SGD table.
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::embedding::TableConfig::bf16_split(10, 3).dim, 3);
    /// ```
    pub fn bf16_split(rows: usize, dim: usize) -> Self {
        TableConfig {
            rows,
            dim,
            table_type: TableType::Bf16Split,
        }
    }

    /// `rows * dim`, checked.
    fn elements(&self) -> Result<usize> {
        if self.rows == 0 || self.dim == 0 {
            return Err(Error::Config(format!(
                "embedding table of {} x {}: rows and dim must be at least 1",
                self.rows, self.dim
            )));
        }
        if self.rows > u32::MAX as usize {
            return Err(Error::Config(format!(
                "embedding table of {} rows: at most {} rows are supported",
                self.rows,
                u32::MAX
            )));
        }
        self.rows
            .checked_mul(self.dim)
            .ok_or_else(|| Error::Config(format!("{} x {} overflows", self.rows, self.dim)))
    }
}

/// The weights of a table.
#[derive(Debug, Clone)]
enum Weights {
    F32(HugePageBuf<f32>),
    Split {
        hi: HugePageBuf<bf16>,
        lo: HugePageBuf<u16>,
    },
}

/// One embedding table (`rows x dim`, fp32 or bf16 Split-SGD), with its row-wise Adagrad state
/// once an Adagrad update has run.
///
/// ```
/// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
/// let t = EmbeddingTable::new(TableConfig::f32(100, 8), 7)?;
/// let bound = (1.0f32 / 100.0).sqrt();
/// assert!(t.master_weights().iter().all(|w| w.abs() <= bound));
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EmbeddingTable {
    config: TableConfig,
    weights: Weights,
    adagrad: Option<HugePageBuf<f32>>,
}

impl EmbeddingTable {
    /// A table initialised like the DLRM reference: `U(-sqrt(1/rows), +sqrt(1/rows))`,
    /// deterministically from `seed` (see the module docs), in parallel.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for zero rows or dim, more than `u32::MAX` rows, or a size overflow.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let a = EmbeddingTable::new(TableConfig::bf16_split(50, 5), 3)?;
    /// let b = EmbeddingTable::new(TableConfig::f32(50, 5), 3)?;
    /// assert_eq!(a.master_weights(), b.master_weights()); // same seed, same values
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn new(config: TableConfig, seed: u64) -> Result<Self> {
        let mut table = Self::zeros(config)?;
        let bound = (1.0 / config.rows as f64).sqrt() as f32;
        let root = Rng::new(seed);
        let block = INIT_BLOCK_ROWS * config.dim;
        match &mut table.weights {
            Weights::F32(w) => w.par_chunks_mut(block).enumerate().for_each(|(k, c)| {
                let mut rng = root.fork(k as u64);
                for x in c {
                    *x = rng.uniform_in(-bound, bound);
                }
            }),
            Weights::Split { hi, lo } => hi
                .par_chunks_mut(block)
                .zip(lo.par_chunks_mut(block))
                .enumerate()
                .for_each(|(k, (hi, lo))| {
                    let mut rng = root.fork(k as u64);
                    for (h, l) in hi.iter_mut().zip(lo.iter_mut()) {
                        let bits = rng.uniform_in(-bound, bound).to_bits();
                        *h = bf16::from_bits((bits >> 16) as u16);
                        *l = bits as u16;
                    }
                }),
        }
        Ok(table)
    }

    /// A table of zeros.
    ///
    /// # Errors
    ///
    /// As [`EmbeddingTable::new`].
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let t = EmbeddingTable::zeros(TableConfig::f32(4, 4))?;
    /// assert!(t.master_weights().iter().all(|&w| w == 0.0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn zeros(config: TableConfig) -> Result<Self> {
        let n = config.elements()?;
        let weights = match config.table_type {
            TableType::F32 => Weights::F32(HugePageBuf::zeroed(n)?),
            TableType::Bf16Split => Weights::Split {
                hi: HugePageBuf::zeroed(n)?,
                lo: HugePageBuf::zeroed(n)?,
            },
        };
        Ok(EmbeddingTable {
            config,
            weights,
            adagrad: None,
        })
    }

    /// A table holding `weights` (`rows * dim` fp32 values, row-major); a bf16 Split-SGD table
    /// stores them exactly as (upper, lower) halves.
    ///
    /// # Errors
    ///
    /// As [`EmbeddingTable::new`], and [`Error::Shape`] if `weights` is not `rows * dim` long.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let w = [0.1f32, -0.2, 0.3, 1e-9];
    /// let t = EmbeddingTable::from_f32(TableConfig::bf16_split(2, 2), &w)?;
    /// assert_eq!(t.master_weights(), w);
    /// assert_eq!(t.split_halves().unwrap().0[0].to_bits(), (0.1f32.to_bits() >> 16) as u16);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn from_f32(config: TableConfig, weights: &[f32]) -> Result<Self> {
        let n = config.elements()?;
        check_len("embedding table weights (rows * dim)", n, weights.len())?;
        let mut table = Self::zeros(config)?;
        match &mut table.weights {
            Weights::F32(w) => w.copy_from_slice(weights),
            Weights::Split { hi, lo } => {
                for ((h, l), x) in hi.iter_mut().zip(lo.iter_mut()).zip(weights) {
                    let bits = x.to_bits();
                    *h = bf16::from_bits((bits >> 16) as u16);
                    *l = bits as u16;
                }
            }
        }
        Ok(table)
    }

    /// The table's shape and type.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let c = TableConfig::f32(3, 2);
    /// assert_eq!(EmbeddingTable::zeros(c)?.config(), c);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn config(&self) -> TableConfig {
        self.config
    }

    /// Number of rows.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// assert_eq!(EmbeddingTable::zeros(TableConfig::f32(3, 2))?.rows(), 3);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn rows(&self) -> usize {
        self.config.rows
    }

    /// Elements per row.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// assert_eq!(EmbeddingTable::zeros(TableConfig::f32(3, 2))?.dim(), 2);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn dim(&self) -> usize {
        self.config.dim
    }

    /// Storage type.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig, TableType};
    /// let t = EmbeddingTable::zeros(TableConfig::bf16_split(3, 2))?;
    /// assert_eq!(t.table_type(), TableType::Bf16Split);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn table_type(&self) -> TableType {
        self.config.table_type
    }

    /// The fp32 weights (`rows * dim`, row-major), for an fp32 table.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let t = EmbeddingTable::from_f32(TableConfig::f32(1, 2), &[1.0, 2.0])?;
    /// assert_eq!(t.as_f32(), Some(&[1.0f32, 2.0][..]));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.weights {
            Weights::F32(w) => Some(w),
            Weights::Split { .. } => None,
        }
    }

    /// The (bf16 upper, u16 lower) halves of a Split-SGD table.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let t = EmbeddingTable::from_f32(TableConfig::bf16_split(1, 1), &[1.0])?;
    /// let (hi, lo) = t.split_halves().unwrap();
    /// assert_eq!((hi[0].to_f32(), lo[0]), (1.0, 0));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn split_halves(&self) -> Option<(&[bf16], &[u16])> {
        match &self.weights {
            Weights::F32(_) => None,
            Weights::Split { hi, lo } => Some((hi, lo)),
        }
    }

    /// The fp32 master weights (`rows * dim`, row-major): a copy, exact for both types.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let t = EmbeddingTable::from_f32(TableConfig::bf16_split(1, 2), &[0.3, -7.1])?;
    /// assert_eq!(t.master_weights(), vec![0.3, -7.1]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn master_weights(&self) -> Vec<f32> {
        match &self.weights {
            Weights::F32(w) => w.to_vec(),
            Weights::Split { hi, lo } => hi
                .iter()
                .zip(lo.iter())
                .map(|(h, l)| f32::from_bits((u32::from(h.to_bits()) << 16) | u32::from(*l)))
                .collect(),
        }
    }

    /// The row-wise Adagrad accumulators (one per row), once an Adagrad update has run.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// assert!(EmbeddingTable::zeros(TableConfig::f32(2, 2))?.adagrad_state().is_none());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn adagrad_state(&self) -> Option<&[f32]> {
        self.adagrad.as_deref()
    }

    /// Whether the weights sit in memory advised as transparent huge pages (tables of at
    /// least 2 MiB on Linux; see [`HugePageBuf::huge_pages`]).
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let small = EmbeddingTable::zeros(TableConfig::f32(10, 4))?;
    /// assert!(!small.huge_pages());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn huge_pages(&self) -> bool {
        match &self.weights {
            Weights::F32(w) => w.huge_pages(),
            Weights::Split { hi, lo } => hi.huge_pages() && lo.huge_pages(),
        }
    }
}

/// Whether `offsets` holds `B` bag starts or `B + 1` values ending with the number of
/// indices used (PyTorch's `include_last_offset`).
///
/// ```
/// use dlrm_kernels::embedding::{Bags, OffsetsKind};
/// let b = Bags::with_last_offset(&[1i64, 2], &[0i64, 1, 2]);
/// assert_eq!(b.offsets_kind, OffsetsKind::StartsAndEnd);
/// assert_eq!(b.len(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetsKind {
    /// `B` offsets: bag `b` starts at `offsets[b]`, the last bag runs to the end of the
    /// indices (PyTorch's default).
    Starts,
    /// `B + 1` offsets: bag `b` is `offsets[b]..offsets[b + 1]`; indices after the last
    /// offset are not used.
    StartsAndEnd,
}

/// One table's bags for a batch (see the module docs).
///
/// ```
/// use dlrm_kernels::embedding::Bags;
/// let (indices, offsets, w) = ([5i32, 6, 7], [0i32, 0, 2], [1.0f32, 0.5, 2.0]);
/// let bags = Bags::new(&indices, &offsets).weighted(&w); // bags [], [5, 6], [7]
/// assert_eq!(bags.len(), 3);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Bags<'a, I> {
    /// Row numbers of all bags, back to back.
    pub indices: &'a [I],
    /// Bag starts (and the end, for [`OffsetsKind::StartsAndEnd`]).
    pub offsets: &'a [I],
    /// How to read `offsets`.
    pub offsets_kind: OffsetsKind,
    /// One weight per index (requires [`Pooling::Sum`]).
    pub per_sample_weights: Option<&'a [f32]>,
}

impl<'a, I: BagIndex> Bags<'a, I> {
    /// Bags from `B` start offsets, without weights.
    ///
    /// ```
    /// let b = dlrm_kernels::embedding::Bags::new(&[1i64], &[0i64]);
    /// assert_eq!(b.len(), 1);
    /// ```
    pub fn new(indices: &'a [I], offsets: &'a [I]) -> Self {
        Bags {
            indices,
            offsets,
            offsets_kind: OffsetsKind::Starts,
            per_sample_weights: None,
        }
    }

    /// Bags from `B + 1` offsets (the last is where the last bag ends), without weights.
    ///
    /// ```
    /// let b = dlrm_kernels::embedding::Bags::with_last_offset(&[1i32, 2], &[0i32, 2]);
    /// assert_eq!(b.len(), 1);
    /// ```
    pub fn with_last_offset(indices: &'a [I], offsets: &'a [I]) -> Self {
        Bags {
            offsets_kind: OffsetsKind::StartsAndEnd,
            ..Self::new(indices, offsets)
        }
    }

    /// The same bags with per-sample weights.
    ///
    /// ```
    /// let b = dlrm_kernels::embedding::Bags::new(&[1i32], &[0i32]).weighted(&[0.5]);
    /// assert_eq!(b.per_sample_weights, Some(&[0.5f32][..]));
    /// ```
    pub fn weighted(self, weights: &'a [f32]) -> Self {
        Bags {
            per_sample_weights: Some(weights),
            ..self
        }
    }

    /// Number of bags `B` (0 for [`OffsetsKind::StartsAndEnd`] without offsets).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::embedding::Bags::<i32>::new(&[], &[]).len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        match self.offsets_kind {
            OffsetsKind::Starts => self.offsets.len(),
            OffsetsKind::StartsAndEnd => self.offsets.len().saturating_sub(1),
        }
    }

    /// Whether there are no bags.
    ///
    /// ```
    /// assert!(dlrm_kernels::embedding::Bags::<i64>::with_last_offset(&[], &[0]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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

/// The sparse optimizer step of [`EmbeddingBags::backward_update`].
///
/// ```
/// use dlrm_kernels::embedding::Optimizer;
/// let o = Optimizer::rowwise_adagrad(0.01);
/// assert_eq!(o, Optimizer::RowwiseAdagrad { lr: 0.01, eps: 1e-10 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// `row -= lr * G[row]`.
    Sgd {
        /// Learning rate.
        lr: f32,
    },
    /// `h[row] += mean(G[row]^2); row -= lr * G[row] / (sqrt(h[row]) + eps)`.
    RowwiseAdagrad {
        /// Learning rate.
        lr: f32,
        /// Added to `sqrt(h)` (the DLRM reference uses 1e-10).
        eps: f32,
    },
}

impl Optimizer {
    /// Row-wise Adagrad with the DLRM reference's `eps = 1e-10`.
    ///
    /// ```
    /// assert!(matches!(
    ///     dlrm_kernels::embedding::Optimizer::rowwise_adagrad(0.1),
    ///     dlrm_kernels::embedding::Optimizer::RowwiseAdagrad { .. }
    /// ));
    /// ```
    pub fn rowwise_adagrad(lr: f32) -> Self {
        Optimizer::RowwiseAdagrad { lr, eps: 1e-10 }
    }

    fn validate(self) -> Result<()> {
        let (lr, eps) = match self {
            Optimizer::Sgd { lr } => (lr, 0.0),
            Optimizer::RowwiseAdagrad { lr, eps } => (lr, eps),
        };
        if !lr.is_finite() {
            return Err(Error::Config(format!(
                "embedding update: learning rate {lr} is not finite"
            )));
        }
        if !eps.is_finite() || eps < 0.0 {
            return Err(Error::Config(format!(
                "row-wise Adagrad: eps {eps} must be finite and not negative"
            )));
        }
        Ok(())
    }
}

/// One table's kernels: pooling and update differ in their prefetch distance.
#[derive(Debug, Clone, Copy)]
struct Kernels {
    pool: BagKernel,
    update: BagKernel,
}

/// What one table's validated bags look like.
#[derive(Debug, Clone, Copy)]
struct Checked {
    /// Number of bags.
    batch: usize,
    /// Positions `0..end` of the indices are used.
    end: usize,
}

/// Reusable buffers of the fused update (kept between calls so large batches do not pay for
/// fresh pages every step).
#[derive(Debug, Default)]
struct Scratch {
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

/// Several embedding tables pooled and updated together.
///
/// ```
/// use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
///
/// let t = EmbeddingTable::from_f32(TableConfig::f32(3, 2), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// let emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default())?;
/// let mut out = [0.0f32; 4];
/// emb.forward(&[Bags::new(&[0i32, 2, 1], &[0, 2])], &mut out)?; // bags [0, 2] and [1]
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
            BagKernel::with_isa(desc, isa).map_err(|e| bag_error(e, 0, 0))
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
    /// Nothing is written when any of these is returned: [`Error::Shape`] for a bag list
    /// count other than the number of tables, tables with different numbers of bags, weights
    /// not one per index, or `out` not `B * row_len` long; [`Error::Offsets`] and
    /// [`Error::IndexOutOfRange`] naming table, bag and position; [`Error::Config`] for
    /// weights with [`Pooling::Mean`].
    ///
    /// ```
    /// use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// use dlrm_kernels::Error;
    ///
    /// let t = EmbeddingTable::zeros(TableConfig::f32(10, 4))?;
    /// let emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default())?;
    /// let mut out = [f32::NAN; 8];
    /// let err = emb.forward(&[Bags::new(&[1i64, 10], &[0, 1])], &mut out).unwrap_err();
    /// assert_eq!(err.to_string(), "table 0, bag 1, position 1: index 10 >= rows 10");
    /// assert!(out.iter().all(|x| x.is_nan())); // untouched
    /// # Ok::<(), Error>(())
    /// ```
    pub fn forward<I: BagIndex, O: Element>(
        &self,
        bags: &[Bags<'_, I>],
        out: &mut [O],
    ) -> Result<()> {
        let checked = self.check(bags)?;
        let batch = checked.first().map_or(0, |c| c.batch);
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
                    let kb = kernel_bags(&bags[t], checked[t], b0, b1);
                    let col = self.columns[t];
                    let kernel = &self.kernels[t].pool;
                    match &table.weights {
                        Weights::F32(w) => {
                            kernel.pool(w, &kb, pooling, &mut out_c[col..], self.row_len)
                        }
                        Weights::Split { hi, .. } => {
                            kernel.pool(hi, &kb, pooling, &mut out_c[col..], self.row_len)
                        }
                    }
                    .map_err(|e| bag_error(e, t, b0))?;
                }
                Ok(())
            })
    }

    /// The fused backward + update: from `grad` = d(pooled) (`[B][row_len]`, the forward's
    /// layout), update every looked-up row of every table in place with `optimizer` (see the
    /// module docs: duplicates coalesced, race-free, the same bits for any thread count).
    ///
    /// # Errors
    ///
    /// Nothing is written when any of these is returned: those of
    /// [`EmbeddingBags::forward`] (with `grad` in place of `out`), [`Error::Config`] for a
    /// non-finite learning rate or a negative or non-finite `eps`, and for more than
    /// `u32::MAX` lookups or bags in one table.
    ///
    /// ```
    /// use dlrm_kernels::embedding::{
    ///     Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, Optimizer, TableConfig,
    /// };
    ///
    /// let t = EmbeddingTable::from_f32(TableConfig::f32(3, 1), &[1.0, 1.0, 1.0])?;
    /// let mut emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default())?;
    /// // Bag 0 = rows [2, 2], bag 1 = row [0]; gradients 0.5 and 1.0.
    /// let bags = [Bags::new(&[2i32, 2, 0], &[0, 2])];
    /// emb.backward_update(&bags, &[0.5, 1.0], Optimizer::Sgd { lr: 0.1 })?;
    /// // Row 2 got 0.5 + 0.5 (coalesced), row 0 got 1.0, row 1 nothing.
    /// assert_eq!(emb.tables()[0].master_weights(), [1.0 - 0.1, 1.0, 1.0 - 0.1 * 1.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn backward_update<I: BagIndex>(
        &mut self,
        bags: &[Bags<'_, I>],
        grad: &[f32],
        optimizer: Optimizer,
    ) -> Result<()> {
        optimizer.validate()?;
        let checked = self.check(bags)?;
        let batch = checked.first().map_or(0, |c| c.batch);
        let total = batch
            .checked_mul(self.row_len)
            .ok_or_else(|| Error::Config("gradient size overflows".into()))?;
        check_len(
            "gradient of the pooled output ([B][row_len])",
            total,
            grad.len(),
        )?;
        for (t, c) in checked.iter().enumerate() {
            if c.end > u32::MAX as usize || c.batch > u32::MAX as usize {
                return Err(Error::Config(format!(
                    "table {t}: {} lookups in {} bags; at most {} of each per call",
                    c.end,
                    c.batch,
                    u32::MAX
                )));
            }
        }
        if let Optimizer::RowwiseAdagrad { .. } = optimizer {
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
                checked: checked[t],
                grad: GradRows {
                    data: &grad[self.columns[t]..],
                    stride: self.row_len,
                },
                pooling,
                optimizer,
            };
            job.run(table, &bags[t], &mut self.scratch)?;
        }
        Ok(())
    }

    /// Validate every table's bags; nothing is written.
    fn check<I: BagIndex>(&self, bags: &[Bags<'_, I>]) -> Result<Vec<Checked>> {
        check_len("bag lists (one per table)", self.tables.len(), bags.len())?;
        let mut checked = Vec::with_capacity(bags.len());
        for (t, (table, b)) in self.tables.iter().zip(bags).enumerate() {
            let c = check_bags(t, table.rows(), b, self.config.pooling)?;
            if let Some(first) = checked.first().map(|c: &Checked| c.batch) {
                check_len(
                    format!("table {t}: bags (as many as table 0 has)"),
                    first,
                    c.batch,
                )?;
            }
            checked.push(c);
        }
        Ok(checked)
    }
}

/// Validate one table's bags.
fn check_bags<I: BagIndex>(
    t: usize,
    rows: usize,
    bags: &Bags<'_, I>,
    pooling: Pooling,
) -> Result<Checked> {
    let n = bags.indices.len();
    if let Some(w) = bags.per_sample_weights {
        if pooling != Pooling::Sum {
            return Err(Error::Config(format!(
                "table {t}: per-sample weights need Pooling::Sum (as in PyTorch)"
            )));
        }
        check_len(
            format!("table {t}: per-sample weights (one per index)"),
            n,
            w.len(),
        )?;
    }
    let batch = bags.len();
    let offsets_err = |bag: usize, detail: String| Error::Offsets {
        table: t,
        bag,
        detail,
    };
    if bags.offsets_kind == OffsetsKind::StartsAndEnd && bags.offsets.is_empty() {
        return Err(offsets_err(
            0,
            "B + 1 offsets expected (OffsetsKind::StartsAndEnd), got none".into(),
        ));
    }
    let mut prev = 0i64;
    for (i, o) in bags.offsets.iter().enumerate() {
        let o = o.to_i64();
        // The end marker of StartsAndEnd closes bag B - 1.
        let (bag, what) = if i < batch {
            (i, "offset")
        } else {
            (batch.saturating_sub(1), "end offset")
        };
        let detail = if i == 0 && o != 0 {
            format!("the first {what} is {o}, must be 0")
        } else if o < prev {
            format!("{what} {o} is smaller than the previous offset {prev}")
        } else if o as u64 > n as u64 {
            format!("{what} {o} is past the number of indices {n}")
        } else {
            prev = o;
            continue;
        };
        return Err(offsets_err(bag, detail));
    }
    let end = match bags.offsets_kind {
        OffsetsKind::Starts if batch > 0 => n,
        OffsetsKind::Starts => 0,
        OffsetsKind::StartsAndEnd => prev as usize,
    };
    let used = &bags.indices[..end];
    // `x` is in `[0, rows)` exactly when the sign bits of `x` and of `!(x - rows)` are both
    // clear (`rows <= u32::MAX`, so `x - rows` cannot overflow for `x >= 0`). OR-ing them over
    // all indices uses plain 64-bit integer operations, which vectorise on every x86-64 (a
    // 64-bit unsigned maximum needs a compare that SSE2 lacks).
    let bad_bits = used
        .par_chunks(1 << 16)
        .map(|c| {
            c.iter().fold(0i64, |acc, &i| {
                let x = i.to_i64();
                acc | x | !x.wrapping_sub(rows as i64)
            })
        })
        .reduce(|| 0, |a, b| a | b);
    if bad_bits < 0 {
        let position = used
            .iter()
            .position(|&i| i.to_i64() as u64 >= rows as u64)
            .expect("some index is out of range");
        let starts = &bags.offsets[..batch];
        let bag = starts.partition_point(|o| o.to_i64() as usize <= position) - 1;
        return Err(Error::IndexOutOfRange {
            table: t,
            bag,
            position,
            index: used[position].to_i64(),
            rows,
        });
    }
    Ok(Checked { batch, end })
}

/// Bags `b0..b1` of a validated table, for the kernels.
fn kernel_bags<'a, I: BagIndex>(
    bags: &Bags<'a, I>,
    c: Checked,
    b0: usize,
    b1: usize,
) -> k::Bags<'a, I> {
    let end = if b1 < c.batch {
        bags.offsets[b1].to_i64() as usize
    } else {
        c.end
    };
    k::Bags {
        indices: bags.indices,
        offsets: &bags.offsets[b0..b1],
        end,
        weights: bags.per_sample_weights,
    }
}

/// Start position of bag `b` (`b == batch`: the end) of a validated table.
fn bag_start<I: BagIndex>(bags: &Bags<'_, I>, c: Checked, b: usize) -> usize {
    if b < c.batch {
        bags.offsets[b].to_i64() as usize
    } else {
        c.end
    }
}

/// A kernel error as a crate error, naming the table and counting bags from `first_bag`.
fn bag_error(e: BagError, table: usize, first_bag: usize) -> Error {
    match e {
        BagError::Kernel(k) => Error::Kernel(k),
        BagError::IndexOutOfRange {
            bag,
            position,
            index,
            rows,
        } => Error::IndexOutOfRange {
            table,
            bag: first_bag + bag,
            position,
            index,
            rows,
        },
        BagError::Offsets { bag, detail } => Error::Offsets {
            table,
            bag: first_bag + bag,
            detail,
        },
        other => Error::Config(format!("table {table}: {other}")),
    }
}

/// The fused update of one table.
struct UpdateJob<'g> {
    kernel: BagKernel,
    table: usize,
    checked: Checked,
    grad: GradRows<'g>,
    pooling: Pooling,
    optimizer: Optimizer,
}

impl UpdateJob<'_> {
    fn run<I: BagIndex>(
        &self,
        table: &mut EmbeddingTable,
        bags: &Bags<'_, I>,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let Checked { batch, end: n } = self.checked;
        if n == 0 {
            return Ok(());
        }
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
        let start = |b: usize| bag_start(bags, self.checked, b);
        counts.clear();
        counts.resize(nchunks * ngroups, 0);
        counts
            .par_chunks_mut(ngroups)
            .enumerate()
            .for_each(|(c, counts)| {
                let shift = gshift; // a local: the closure holds a reference
                for &i in &bags.indices[start(bag_bounds[c])..start(bag_bounds[c + 1])] {
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
                let rows = bags.indices[s..e].iter().map(|i| i.to_i64() as usize);
                match bags.per_sample_weights {
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
                .map_err(|e| bag_error(e, self.table, 0));
            pool.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(buffers);
            applied
        };
        let block = group_rows * dim;
        match (&mut table.weights, self.optimizer, &mut table.adagrad) {
            (Weights::F32(w), Optimizer::Sgd { lr }, _) => w
                .par_chunks_mut(block)
                .enumerate()
                .try_for_each(|(g, b)| run_group(g, RowsMut::F32(b), RowUpdate::Sgd { lr })),
            (Weights::Split { hi, lo }, Optimizer::Sgd { lr }, _) => hi
                .par_chunks_mut(block)
                .zip(lo.par_chunks_mut(block))
                .enumerate()
                .try_for_each(|(g, (hi, lo))| {
                    run_group(g, RowsMut::Split { hi, lo }, RowUpdate::Sgd { lr })
                }),
            (Weights::F32(w), Optimizer::RowwiseAdagrad { lr, eps }, Some(h)) => w
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
            (Weights::Split { hi, lo }, Optimizer::RowwiseAdagrad { lr, eps }, Some(h)) => hi
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
            (_, Optimizer::RowwiseAdagrad { .. }, None) => Err(Error::Config(format!(
                "table {}: Adagrad state missing",
                self.table
            ))),
        }
    }
}

/// Restoring state (checkpoints).
impl EmbeddingTable {
    /// Overwrite the weights with `weights` (`rows * dim` fp32 values, row-major); a bf16
    /// Split-SGD table stores them exactly as (upper, lower) halves.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `weights` is not `rows * dim` long (nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let mut t = EmbeddingTable::zeros(TableConfig::bf16_split(1, 2))?;
    /// t.set_weights(&[0.1, -3.0])?;
    /// assert_eq!(t.master_weights(), [0.1, -3.0]);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn set_weights(&mut self, weights: &[f32]) -> Result<()> {
        check_len(
            "table weights (rows x dim)",
            self.rows() * self.dim(),
            weights.len(),
        )?;
        match &mut self.weights {
            Weights::F32(w) => w.copy_from_slice(weights),
            Weights::Split { hi, lo } => {
                for ((h, l), w) in hi.iter_mut().zip(lo.iter_mut()).zip(weights) {
                    let bits = w.to_bits();
                    *h = bf16::from_bits((bits >> 16) as u16);
                    *l = bits as u16;
                }
            }
        }
        Ok(())
    }

    /// Replace the row-wise Adagrad accumulators (one per row), e.g. from a checkpoint.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `state` does not hold one value per row (nothing is changed).
    ///
    /// ```
    /// use dlrm_kernels::embedding::{EmbeddingTable, TableConfig};
    /// let mut t = EmbeddingTable::zeros(TableConfig::f32(2, 3))?;
    /// t.set_adagrad_state(&[0.5, 0.25])?;
    /// assert_eq!(t.adagrad_state(), Some(&[0.5, 0.25][..]));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn set_adagrad_state(&mut self, state: &[f32]) -> Result<()> {
        check_len("Adagrad state (one per row)", self.rows(), state.len())?;
        let mut buf = HugePageBuf::zeroed(self.rows())?;
        buf.copy_from_slice(state);
        self.adagrad = Some(buf);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_check_takes_exactly_zero_to_rows() {
        for rows in [1usize, 10, 1 << 20, u32::MAX as usize] {
            let r = rows as i64;
            for (x, ok) in [
                (0, true),
                (r - 1, true),
                (r, false),
                (r + 1, false),
                (-1, false),
                (-r, false),
                (i64::MIN, false),
                (i64::MAX, false),
            ] {
                // The bad index in the middle of good ones, as one bag.
                let indices = [0, x, r - 1];
                let got = check_bags(0, rows, &Bags::new(&indices, &[0]), Pooling::Sum);
                assert_eq!(got.is_ok(), ok, "index {x}, rows {rows}");
                if let Err(Error::IndexOutOfRange {
                    position, index, ..
                }) = got
                {
                    assert_eq!((position, index), (1, x));
                }
            }
        }
    }
}
