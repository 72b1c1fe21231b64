//! Embedding tables: `rows x dim`, fp32 or bf16 Split-SGD, initialised as the DLRM reference
//! does, with the row-wise Adagrad state once an Adagrad update has run.

use half::bf16;
use rayon::prelude::*;

use super::HugePageBuf;
use crate::error::{Error, Result, check_len};
use crate::rng::Rng;
use crate::split_sgd::{self, split, split_into};

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
pub(super) enum Weights {
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
    pub(super) weights: Weights,
    pub(super) adagrad: Option<HugePageBuf<f32>>,
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
                        (*h, *l) = split(rng.uniform_in(-bound, bound));
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
        table.set_weights(weights)?;
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
            Weights::Split { hi, lo } => split_sgd::joined(hi, lo),
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
            Weights::Split { hi, lo } => split_into(weights, hi, lo),
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
