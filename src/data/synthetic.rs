//! A learnable synthetic dataset: labels drawn from a fixed hidden model of the dense and
//! sparse features, with skewed (power-law) index popularity, so training visibly raises AUC.
//! It is the trainer's default.
//!
//! Hidden model: every table row `r` of table `t` has a hidden score `s_t(r) ~ N(0, 1)`
//! (derived from a hash, so no memory is used), every dense feature `j` a weight `w_j`; a
//! sample's logit is `sum_j w_j (x_j - 1/2) * 2 + sum_t s_t(i_t) + b` and its label is drawn
//! from `Bernoulli(sigmoid(logit))`. Row `i_t = floor(rows * u^skew)` with `u ~ U[0, 1)`, so
//! low rows are popular (as in real click logs). Bags hold `lookups` indices each; the
//! hidden score of a bag is the mean of its rows' scores.
//!
//! ```
//! use dlrm_kernels::data::synthetic::{SyntheticData, SyntheticConfig};
//! let data = SyntheticData::new(SyntheticConfig::default())?;
//! let b = data.batch(0);
//! let clicks = b.targets.iter().filter(|&&y| y == 1.0).count();
//! assert!(clicks > 0 && clicks < b.len());
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use rayon::prelude::*;

use crate::data::{BatchSource, MiniBatch, Split, SplitSizes, check_batch_number};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Parameters of the synthetic dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Dense features per sample.
    pub dense_features: usize,
    /// Rows of each table.
    pub table_rows: Vec<usize>,
    /// Samples per batch.
    pub batch_size: usize,
    /// Lookups per bag.
    pub lookups: usize,
    /// Popularity skew (1: uniform; larger: more mass on low rows).
    pub skew: f64,
    /// Strength of the hidden signal (scales the hidden logit).
    pub signal: f32,
    /// Seed of both the hidden model and the samples.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            dense_features: 13,
            table_rows: vec![10_000; 8],
            batch_size: 128,
            lookups: 1,
            skew: 3.0,
            signal: 1.0,
            seed: 123,
        }
    }
}

/// A seeded source of learnable synthetic batches.
#[derive(Debug, Clone)]
pub struct SyntheticData {
    cfg: SyntheticConfig,
    dense_w: Vec<f32>,
    bias: f32,
}

/// A hash of (seed, table, row) to a standard normal value.
fn hidden_score(seed: u64, table: usize, row: i64) -> f32 {
    let mut r = Rng::new(
        seed ^ (table as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (row as u64).rotate_left(29),
    );
    r.normal(0.0, 1.0)
}

impl SyntheticData {
    /// A dataset.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the field: a zero batch size, no tables, an empty table,
    /// zero lookups, a skew below 1, or a batch whose size overflows.
    ///
    /// ```
    /// use dlrm_kernels::data::synthetic::{SyntheticData, SyntheticConfig};
    /// let bad = SyntheticConfig { lookups: 0, ..SyntheticConfig::default() };
    /// assert_eq!(
    ///     SyntheticData::new(bad).unwrap_err().to_string(),
    ///     "invalid configuration: synthetic data: lookups per bag must be at least 1, got 0"
    /// );
    /// ```
    pub fn new(cfg: SyntheticConfig) -> Result<Self> {
        let bad = |msg: String| Err(Error::Config(format!("synthetic data: {msg}")));
        if cfg.batch_size == 0 {
            return bad("the batch size must be at least 1, got 0".into());
        }
        if cfg.table_rows.is_empty() {
            return bad("at least one table is needed".into());
        }
        if let Some(t) = cfg.table_rows.iter().position(|&r| r == 0) {
            return bad(format!("table {t} has zero rows"));
        }
        if cfg.lookups == 0 {
            return bad("lookups per bag must be at least 1, got 0".into());
        }
        if cfg.skew.is_nan() || cfg.skew < 1.0 {
            return bad(format!("the skew must be at least 1, got {}", cfg.skew));
        }
        let b = cfg.batch_size;
        if b.checked_mul(cfg.lookups).is_none() || b.checked_mul(cfg.dense_features).is_none() {
            return bad(format!(
                "a batch of {b} samples with {} lookups per bag and {} dense features: its size \
                 overflows",
                cfg.lookups, cfg.dense_features
            ));
        }
        let mut rng = Rng::new(cfg.seed).fork(u64::MAX);
        let dense_w = (0..cfg.dense_features)
            .map(|_| rng.normal(0.0, 1.5))
            .collect();
        let bias = -0.5;
        Ok(SyntheticData { cfg, dense_w, bias })
    }

    /// The configuration.
    ///
    /// ```
    /// use dlrm_kernels::data::synthetic::{SyntheticData, SyntheticConfig};
    /// assert_eq!(SyntheticData::new(SyntheticConfig::default())?.config().lookups, 1);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn config(&self) -> &SyntheticConfig {
        &self.cfg
    }

    /// Batch number `i` (deterministic for the seed and `i`).
    ///
    /// ```
    /// use dlrm_kernels::data::synthetic::{SyntheticData, SyntheticConfig};
    /// let d = SyntheticData::new(SyntheticConfig::default())?;
    /// assert_eq!(d.batch(3), d.batch(3));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn batch(&self, i: u64) -> MiniBatch {
        let c = &self.cfg;
        let base = Rng::new(c.seed).fork(i);
        let (indices, offsets): (Vec<Vec<i64>>, Vec<Vec<i64>>) = c
            .table_rows
            .par_iter()
            .enumerate()
            .map(|(t, &rows)| {
                let mut rng = base.fork(1 + t as u64);
                let idx: Vec<i64> = (0..c.batch_size * c.lookups)
                    .map(|_| {
                        let u = rng.uniform_f64().powf(c.skew);
                        ((u * rows as f64) as i64).min(rows as i64 - 1)
                    })
                    .collect();
                let off = (0..c.batch_size).map(|b| (b * c.lookups) as i64).collect();
                (idx, off)
            })
            .unzip();
        let mut rng = base.fork(0);
        let mut dense = Vec::with_capacity(c.batch_size * c.dense_features);
        let mut targets = Vec::with_capacity(c.batch_size);
        let scale = c.signal / (c.table_rows.len() as f32).sqrt();
        for b in 0..c.batch_size {
            let mut logit = self.bias;
            for w in &self.dense_w {
                let x = rng.uniform();
                dense.push(x);
                logit += c.signal * w * (x - 0.5) * 2.0;
            }
            for (t, idx) in indices.iter().enumerate() {
                let bag = &idx[b * c.lookups..(b + 1) * c.lookups];
                let s: f32 =
                    bag.iter().map(|&r| hidden_score(c.seed, t, r)).sum::<f32>() / c.lookups as f32;
                logit += 2.0 * scale * s;
            }
            let p = 1.0 / (1.0 + (-logit).exp());
            targets.push((rng.uniform() < p) as u8 as f32);
        }
        MiniBatch {
            dense,
            indices,
            offsets,
            targets,
        }
    }
}

/// Where the test samples are drawn in the generator's stream: far from the training
/// batches, which count up from 0.
const TEST_STREAM: u64 = 1 << 40;

/// The synthetic data as a [`BatchSource`]: training batch `i` of epoch `e` is generator
/// batch `e * train_batches + i` (fresh samples every epoch); the test batches come from the
/// same hidden model, drawn far from the training stream, at the test batch size.
///
/// ```
/// use dlrm_kernels::data::{BatchSource, Split, SplitSizes};
/// use dlrm_kernels::data::synthetic::{SyntheticConfig, SyntheticSource};
/// let sizes = SplitSizes { train_batches: 5, test_batches: 1, test_batch_size: 32 };
/// let data = SyntheticSource::new(SyntheticConfig::default(), sizes)?;
/// assert_eq!(data.batch(Split::Train, 1, 0)?, data.generator(Split::Train).batch(5));
/// assert_eq!(data.batch(Split::Test, 0, 0)?.len(), 32);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    train: SyntheticData,
    test: SyntheticData,
    sizes: SplitSizes,
}

impl SyntheticSource {
    /// Training and test generators for `cfg` and `sizes`.
    ///
    /// # Errors
    ///
    /// Those of [`SyntheticData::new`], for either generator (a zero test batch size too).
    ///
    /// ```
    /// use dlrm_kernels::data::SplitSizes;
    /// use dlrm_kernels::data::synthetic::{SyntheticConfig, SyntheticSource};
    /// let sizes = SplitSizes { train_batches: 5, test_batches: 1, test_batch_size: 0 };
    /// assert!(SyntheticSource::new(SyntheticConfig::default(), sizes).is_err());
    /// ```
    pub fn new(cfg: SyntheticConfig, sizes: SplitSizes) -> Result<Self> {
        let test = SyntheticConfig {
            batch_size: sizes.test_batch_size,
            ..cfg.clone()
        };
        Ok(SyntheticSource {
            train: SyntheticData::new(cfg)?,
            test: SyntheticData::new(test)?,
            sizes,
        })
    }

    /// The generator of a split (the training one for [`Split::Validation`], which this
    /// source does not have).
    ///
    /// ```
    /// use dlrm_kernels::data::{Split, SplitSizes};
    /// use dlrm_kernels::data::synthetic::{SyntheticConfig, SyntheticSource};
    /// let sizes = SplitSizes { train_batches: 5, test_batches: 1, test_batch_size: 32 };
    /// let data = SyntheticSource::new(SyntheticConfig::default(), sizes)?;
    /// assert_eq!(data.generator(Split::Test).config().batch_size, 32);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn generator(&self, split: Split) -> &SyntheticData {
        match split {
            Split::Test => &self.test,
            Split::Train | Split::Validation => &self.train,
        }
    }
}

impl BatchSource for SyntheticSource {
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
            Split::Test => self.test.batch(TEST_STREAM + i as u64),
            _ => {
                let n = self.sizes.train_batches as u64;
                self.train
                    .batch((epoch as u64).wrapping_mul(n).wrapping_add(i as u64))
            }
        })
    }
}
