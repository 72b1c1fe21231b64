//! The DLRM reference's random data generator (`--data-generation random`), seeded.
//!
//! Per batch: dense features `U[0, 1)`; per table and sample a bag of length `K`
//! (`--num-indices-per-lookup-fixed`) or `round(max(1, r * min(rows, K)))` with `r ~ U[0, 1)`;
//! the bag's indices are `unique(round(r_j * (rows - 1)))` (sorted, duplicates removed, so a
//! bag can come out shorter); targets `U[0, 1)`, rounded to 0/1 on request. Batch `i` is drawn
//! from its own stream (`Rng::new(seed).fork(i)`), so any batch can be regenerated alone.
//!
//! ```
//! use dlrm_kernels::data::random::{RandomData, RandomDataConfig};
//! let cfg = RandomDataConfig { table_rows: vec![1000, 10], ..RandomDataConfig::default() };
//! let data = RandomData::new(cfg)?;
//! let b = data.batch(0);
//! assert_eq!(b.len(), 128);
//! assert!(b.indices[1].iter().all(|&i| (0..10).contains(&i)));
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use rayon::prelude::*;

use crate::data::{BatchSource, MiniBatch, Split, SplitSizes, check_batch_number};
use crate::error::{Error, Result};
use crate::kernels::sort::sort_unique;
use crate::rng::Rng;

/// Parameters of the random generator.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomDataConfig {
    /// Dense features per sample.
    pub dense_features: usize,
    /// Rows of each table.
    pub table_rows: Vec<usize>,
    /// Samples per batch.
    pub batch_size: usize,
    /// `K`: lookups per bag (fixed) or its upper bound (random).
    pub indices_per_lookup: usize,
    /// Whether every bag has exactly `K` draws.
    pub indices_per_lookup_fixed: bool,
    /// Round targets to 0 or 1.
    pub round_targets: bool,
    /// Seed.
    pub seed: u64,
}

impl Default for RandomDataConfig {
    fn default() -> Self {
        RandomDataConfig {
            dense_features: 13,
            table_rows: vec![1000; 3],
            batch_size: 128,
            indices_per_lookup: 10,
            indices_per_lookup_fixed: false,
            round_targets: true,
            seed: 123,
        }
    }
}

/// A seeded source of random batches.
#[derive(Debug, Clone)]
pub struct RandomData {
    cfg: RandomDataConfig,
}

impl RandomData {
    /// A generator.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a zero batch size, no tables, a table with no rows or more than
    /// `u32::MAX` (as many as an embedding table can have), `K = 0`, or a batch whose size
    /// overflows.
    ///
    /// ```
    /// use dlrm_kernels::data::random::{RandomData, RandomDataConfig};
    /// let bad = RandomDataConfig { indices_per_lookup: 0, ..RandomDataConfig::default() };
    /// assert!(RandomData::new(bad).is_err());
    /// ```
    pub fn new(cfg: RandomDataConfig) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.table_rows.is_empty() || cfg.indices_per_lookup == 0 {
            return Err(Error::Config(format!(
                "random data needs a positive batch size, at least one table and K >= 1 \
                 (got batch {}, {} tables, K {})",
                cfg.batch_size,
                cfg.table_rows.len(),
                cfg.indices_per_lookup
            )));
        }
        if let Some(t) = cfg.table_rows.iter().position(|&r| r == 0) {
            return Err(Error::Config(format!(
                "random data: table {t} has zero rows"
            )));
        }
        let b = cfg.batch_size;
        if b.checked_mul(cfg.indices_per_lookup).is_none()
            || b.checked_mul(cfg.dense_features).is_none()
        {
            return Err(Error::Config(format!(
                "random data: a batch of {b} samples with K {} and {} dense features: its size \
                 overflows",
                cfg.indices_per_lookup, cfg.dense_features
            )));
        }
        if let Some(t) = cfg.table_rows.iter().position(|&r| r > u32::MAX as usize) {
            return Err(Error::Config(format!(
                "random data: table {t} has {} rows, more than an embedding table can have ({})",
                cfg.table_rows[t],
                u32::MAX
            )));
        }
        Ok(RandomData { cfg })
    }

    /// The configuration.
    ///
    /// ```
    /// use dlrm_kernels::data::random::{RandomData, RandomDataConfig};
    /// assert_eq!(RandomData::new(RandomDataConfig::default())?.config().batch_size, 128);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn config(&self) -> &RandomDataConfig {
        &self.cfg
    }

    /// Batch number `i` (the same batch for the same seed and `i`, in any order).
    ///
    /// ```
    /// use dlrm_kernels::data::random::{RandomData, RandomDataConfig};
    /// let d = RandomData::new(RandomDataConfig::default())?;
    /// assert_eq!(d.batch(5), d.batch(5));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn batch(&self, i: u64) -> MiniBatch {
        let c = &self.cfg;
        let base = Rng::new(c.seed).fork(i);
        // The dense features and targets beside the tables (in parallel), each table from its
        // own stream.
        let ((dense, targets), (indices, offsets)) =
            rayon::join(|| self.dense_and_targets(&base), || self.tables(&base));
        MiniBatch {
            dense,
            indices,
            offsets,
            targets,
        }
    }

    /// Dense features `U[0, 1)` and targets, from stream 0 of the batch.
    fn dense_and_targets(&self, base: &Rng) -> (Vec<f32>, Vec<f32>) {
        let c = &self.cfg;
        let mut rng = base.fork(0);
        let n = c.batch_size * c.dense_features;
        let mut dense = Vec::with_capacity(n);
        while dense.len() + 2 <= n {
            dense.extend(rng.uniform_pair());
        }
        if dense.len() < n {
            dense.push(rng.uniform());
        }
        let targets = (0..c.batch_size)
            .map(|_| {
                let t = rng.uniform();
                if c.round_targets { t.round() } else { t }
            })
            .collect();
        (dense, targets)
    }

    /// Indices and offsets of every table (tables in parallel), table `t` from stream `1 + t`.
    fn tables(&self, base: &Rng) -> TableBags {
        let c = &self.cfg;
        c.table_rows
            .par_iter()
            .enumerate()
            .map(|(t, &rows)| {
                let mut rng = base.fork(1 + t as u64);
                // About K/2 draws per bag when lengths are random (dedup removes few).
                let per_bag = c.indices_per_lookup.min(rows);
                let expected = if c.indices_per_lookup_fixed {
                    per_bag
                } else {
                    per_bag / 2 + 1
                };
                let mut idx = Vec::with_capacity(c.batch_size * expected);
                let mut off = Vec::with_capacity(c.batch_size);
                let mut bag = Vec::with_capacity(per_bag);
                let scale = (rows - 1) as f64;
                for _ in 0..c.batch_size {
                    off.push(idx.len() as i64);
                    let len = if c.indices_per_lookup_fixed {
                        c.indices_per_lookup
                    } else {
                        let r = rng.uniform_f64();
                        (r * rows.min(c.indices_per_lookup) as f64).max(1.0).round() as usize
                    };
                    bag.clear();
                    // Below `rows`, which fits u32 (checked in `new`).
                    bag.extend((0..len).map(|_| round_nonneg(rng.uniform_f64() * scale) as u32));
                    let distinct = sort_unique(&mut bag);
                    idx.extend(bag[..distinct].iter().map(|&r| i64::from(r)));
                }
                (idx, off)
            })
            .unzip()
    }
}

/// Every table's indices, and every table's offsets.
type TableBags = (Vec<Vec<i64>>, Vec<Vec<i64>>);

/// The reference's random data as a [`BatchSource`]: training batches from a
/// [`RandomData`] of the configuration (fresh batches every epoch: batch `i` of epoch `e`
/// is generator batch `e * train_batches + i`), test batches from a second generator seeded
/// `seed + 1` with the test batch size.
///
/// ```
/// use dlrm_kernels::data::{BatchSource, Split, SplitSizes};
/// use dlrm_kernels::data::random::{RandomDataConfig, RandomSource};
/// let sizes = SplitSizes { train_batches: 5, test_batches: 1, test_batch_size: 32 };
/// let data = RandomSource::new(RandomDataConfig::default(), sizes)?;
/// assert_eq!(data.batch(Split::Train, 1, 0)?, data.generator(Split::Train).batch(5));
/// assert_eq!(data.batch(Split::Test, 0, 0)?.len(), 32);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RandomSource {
    train: RandomData,
    test: RandomData,
    sizes: SplitSizes,
}

impl RandomSource {
    /// Training and test generators for `cfg` and `sizes`.
    ///
    /// # Errors
    ///
    /// Those of [`RandomData::new`], for either generator (a zero test batch size too).
    ///
    /// ```
    /// use dlrm_kernels::data::SplitSizes;
    /// use dlrm_kernels::data::random::{RandomDataConfig, RandomSource};
    /// let sizes = SplitSizes { train_batches: 5, test_batches: 1, test_batch_size: 0 };
    /// assert!(RandomSource::new(RandomDataConfig::default(), sizes).is_err());
    /// ```
    pub fn new(cfg: RandomDataConfig, sizes: SplitSizes) -> Result<Self> {
        let test = RandomDataConfig {
            batch_size: sizes.test_batch_size,
            seed: cfg.seed.wrapping_add(1),
            ..cfg.clone()
        };
        Ok(RandomSource {
            train: RandomData::new(cfg)?,
            test: RandomData::new(test)?,
            sizes,
        })
    }

    /// The generator of a split (the training one for [`Split::Validation`], which this
    /// source does not have).
    ///
    /// ```
    /// use dlrm_kernels::data::{Split, SplitSizes};
    /// use dlrm_kernels::data::random::{RandomDataConfig, RandomSource};
    /// let sizes = SplitSizes { train_batches: 5, test_batches: 1, test_batch_size: 32 };
    /// let data = RandomSource::new(RandomDataConfig::default(), sizes)?;
    /// assert_eq!(data.generator(Split::Test).config().seed, 124);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn generator(&self, split: Split) -> &RandomData {
        match split {
            Split::Test => &self.test,
            Split::Train | Split::Validation => &self.train,
        }
    }
}

impl BatchSource for RandomSource {
    fn dense_features(&self) -> usize {
        self.train.cfg.dense_features
    }

    fn table_rows(&self) -> Vec<usize> {
        self.train.cfg.table_rows.clone()
    }

    fn batches(&self, split: Split) -> usize {
        match split {
            Split::Train => self.sizes.train_batches,
            Split::Test => self.sizes.test_batches,
            Split::Validation => 0,
        }
    }

    fn batch(&self, split: Split, epoch: usize, i: usize) -> Result<MiniBatch> {
        check_batch_number(split, i, self.batches(split))?;
        Ok(match split {
            Split::Test => self.test.batch(i as u64),
            _ => {
                let n = self.sizes.train_batches as u64;
                self.train
                    .batch((epoch as u64).wrapping_mul(n).wrapping_add(i as u64))
            }
        })
    }
}

/// `x.round() as i64` for `x >= 0` (ties away from zero), without the library call `round`
/// becomes on x86-64 without SSE4.1: truncate, then add one if the dropped fraction (exact
/// below 2^52) is at least a half.
fn round_nonneg(x: f64) -> i64 {
    debug_assert!(x >= 0.0);
    if x < (1u64 << 52) as f64 {
        let t = x as i64;
        t + i64::from(x - t as f64 >= 0.5)
    } else {
        x as i64 // already an integer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_rounding_matches_round() {
        let mut rng = Rng::new(5);
        let specials = [
            0.0,
            0.5,
            1.5,
            2.5,
            0.49999999999999994,
            1e6 - 0.5,
            4503599627370495.5,
        ];
        let draws = (0..100_000).map(|_| rng.uniform_f64() * 1e6);
        for x in specials.into_iter().chain(draws) {
            assert_eq!(round_nonneg(x), x.round() as i64, "{x}");
        }
        assert_eq!(round_nonneg(1e300), 1e300 as i64);
    }
}
