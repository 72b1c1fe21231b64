//! A table's bags as PyTorch's `EmbeddingBag` takes them ([`Bags`]), and every table's bags
//! of a batch checked once ([`CheckedBatch`], made by [`EmbeddingBags::check`]).

use rayon::prelude::*;

use super::{BagIndex, EmbeddingBags, Pooling};
use crate::error::{Error, Result, check_len};
use crate::kernels::embedding::{self as k, BagError, CheckedBags};

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

/// Every table's bags of one batch, checked once against the tables of an
/// [`EmbeddingBags`] by [`EmbeddingBags::check`] (the only way to make one): what
/// [`EmbeddingBags::forward`] and [`EmbeddingBags::backward_update`] take. Each table's bags
/// are a [`CheckedBags`] of the kernel crate, which records the row count its indices were
/// checked against, so the passes only compare row counts and never read the indices to
/// validate them again.
///
/// ```
/// use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
/// let emb = EmbeddingBags::new(
///     vec![EmbeddingTable::zeros(TableConfig::f32(10, 2))?],
///     EmbeddingBagConfig::default(),
/// )?;
/// let checked = emb.check(&[Bags::new(&[1i64, 2, 9], &[0, 2])])?;
/// assert_eq!((checked.len(), checked.tables()), (2, 1));
/// assert_eq!(checked.table(0).unwrap().rows(), 10);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CheckedBatch<'a, I> {
    tables: Vec<CheckedBags<'a, I>>,
    batch: usize,
    /// The first table with per-sample weights.
    weighted: Option<usize>,
}

impl<'a, I: BagIndex> CheckedBatch<'a, I> {
    /// Number of bags per table, `B`.
    ///
    /// ```
    /// # use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// # let emb = EmbeddingBags::new(vec![EmbeddingTable::zeros(TableConfig::f32(10, 2))?], EmbeddingBagConfig::default())?;
    /// assert_eq!(emb.check(&[Bags::<i64>::new(&[], &[])])?.len(), 0);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.batch
    }

    /// Whether there are no bags.
    ///
    /// ```
    /// # use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// # let emb = EmbeddingBags::new(vec![EmbeddingTable::zeros(TableConfig::f32(10, 2))?], EmbeddingBagConfig::default())?;
    /// assert!(emb.check(&[Bags::<i64>::new(&[], &[])])?.is_empty());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.batch == 0
    }

    /// Number of tables.
    ///
    /// ```
    /// # use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// # let emb = EmbeddingBags::new(vec![EmbeddingTable::zeros(TableConfig::f32(10, 2))?], EmbeddingBagConfig::default())?;
    /// assert_eq!(emb.check(&[Bags::new(&[1i32], &[0])])?.tables(), 1);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn tables(&self) -> usize {
        self.tables.len()
    }

    /// Table `t`'s checked bags (`None` past the last table).
    ///
    /// ```
    /// # use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// # let emb = EmbeddingBags::new(vec![EmbeddingTable::zeros(TableConfig::f32(10, 2))?], EmbeddingBagConfig::default())?;
    /// let c = emb.check(&[Bags::new(&[1i32, 3], &[0])])?;
    /// assert_eq!(c.table(0).unwrap().bags().indices, &[1, 3]);
    /// assert!(c.table(1).is_none());
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn table(&self, t: usize) -> Option<&CheckedBags<'a, I>> {
        self.tables.get(t)
    }

    /// The checks a pass makes on a batch checked before: one bag list per table of
    /// `emb`, checked against each table's row count, weights only with sum pooling
    /// (O(tables)).
    pub(super) fn matches(&self, emb: &EmbeddingBags) -> Result<()> {
        check_len(
            "checked bag lists (one per table)",
            emb.tables().len(),
            self.tables.len(),
        )?;
        for (t, (table, bags)) in emb.tables().iter().zip(&self.tables).enumerate() {
            if table.rows() != bags.rows() {
                return Err(Error::Config(format!(
                    "table {t}: bags checked against {} rows, the table has {}",
                    bags.rows(),
                    table.rows()
                )));
            }
        }
        if let Some(t) = self.weighted
            && emb.config().pooling != Pooling::Sum
        {
            return Err(weights_need_sum(t));
        }
        Ok(())
    }
}

fn weights_need_sum(t: usize) -> Error {
    Error::Config(format!(
        "table {t}: per-sample weights need Pooling::Sum (as in PyTorch)"
    ))
}

impl EmbeddingBags {
    /// Check every table's bags of a batch, once: one bag list per table, offsets as
    /// PyTorch takes them (starting at 0, never decreasing, within the indices), weights one
    /// per index and only with [`Pooling::Sum`], every index used in `[0, rows)` of its
    /// table, the same `B` for every table. The tables' indices are checked in parallel;
    /// the error reported is the first in table order.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] for a bag list count other than the number of tables, tables with
    /// different numbers of bags, or weights not one per index; [`Error::Offsets`] and
    /// [`Error::IndexOutOfRange`] naming table, bag and position; [`Error::Config`] for
    /// weights with [`Pooling::Mean`].
    ///
    /// ```
    /// use dlrm_kernels::embedding::{Bags, EmbeddingBagConfig, EmbeddingBags, EmbeddingTable, TableConfig};
    /// let t = EmbeddingTable::zeros(TableConfig::f32(10, 4))?;
    /// let emb = EmbeddingBags::new(vec![t], EmbeddingBagConfig::default())?;
    /// let err = emb.check(&[Bags::new(&[1i64, 10], &[0, 1])]).unwrap_err();
    /// assert_eq!(err.to_string(), "table 0, bag 1, position 1: index 10 >= rows 10");
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn check<'a, I: BagIndex>(&self, bags: &[Bags<'a, I>]) -> Result<CheckedBatch<'a, I>> {
        check_len("bag lists (one per table)", self.tables().len(), bags.len())?;
        let pooling = self.config().pooling;
        let checked: Vec<Result<CheckedBags<'a, I>>> = self
            .tables()
            .par_iter()
            .zip(bags)
            .enumerate()
            .map(|(t, (table, b))| check_table(t, table.rows(), b, pooling))
            .collect();
        let mut tables = Vec::with_capacity(bags.len());
        for (t, c) in checked.into_iter().enumerate() {
            let c = c?;
            if let Some(first) = tables.first().map(CheckedBags::len) {
                check_len(
                    format!("table {t}: bags (as many as table 0 has)"),
                    first,
                    c.len(),
                )?;
            }
            tables.push(c);
        }
        Ok(CheckedBatch {
            batch: tables.first().map_or(0, CheckedBags::len),
            weighted: bags.iter().position(|b| b.per_sample_weights.is_some()),
            tables,
        })
    }
}

/// Check one table's bags (see [`EmbeddingBags::check`]): its weights and offsets as
/// PyTorch takes them here, its indices by the kernel crate's [`CheckedBags::new`].
fn check_table<'a, I: BagIndex>(
    t: usize,
    rows: usize,
    bags: &Bags<'a, I>,
    pooling: Pooling,
) -> Result<CheckedBags<'a, I>> {
    let n = bags.indices.len();
    if let Some(w) = bags.per_sample_weights {
        if pooling != Pooling::Sum {
            return Err(weights_need_sum(t));
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
    let run = k::Bags {
        indices: bags.indices,
        offsets: &bags.offsets[..batch],
        end,
        weights: bags.per_sample_weights,
    };
    CheckedBags::new(run, rows).map_err(|e| bag_error(e, t))
}

/// A kernel error as a crate error, naming the table.
pub(super) fn bag_error(e: BagError, table: usize) -> Error {
    match e {
        BagError::Kernel(k) => Error::Kernel(k),
        BagError::IndexOutOfRange {
            bag,
            position,
            index,
            rows,
        } => Error::IndexOutOfRange {
            table,
            bag,
            position,
            index,
            rows,
        },
        BagError::Offsets { bag, detail } => Error::Offsets { table, bag, detail },
        other => Error::Config(format!("table {table}: {other}")),
    }
}
