//! What a model needs in memory, estimated from its configuration before anything is
//! allocated, and checked against what the machine has.
//!
//! [`MemoryEstimate::of`] counts, with checked arithmetic, the embedding tables (4 bytes a
//! weight: fp32, or bf16 upper and lower halves), the row-wise Adagrad state, each MLP's
//! weights (with the transposed copy backward-data reads, the bf16 lower halves and the
//! biases), and the activations, gradients and work buffers of one batch. [`check`] compares
//! the total with the memory available (at most 90% of it may be taken) and names the
//! setting that makes a model too large: the batch size when one sample fits, else the
//! largest part of the architecture. [`crate::model::Dlrm::new`] and
//! [`crate::checkpoint::load`] check before they allocate, so an absurd size is an error
//! that names it, not an allocation failure that aborts the process.
//!
//! ```
//! use dlrm_kernels::memory::{self, MemoryEstimate, Setting};
//! use dlrm_kernels::model::DlrmConfig;
//!
//! let small = MemoryEstimate::of(&DlrmConfig::small())?;
//! assert_eq!(small.tables, 8 * 1_000_000 * 64 * 4);
//! assert!(small.total() > small.tables);
//!
//! // A batch of 10^12 samples does not fit in 1 GiB: the error names the batch size.
//! let huge = DlrmConfig { batch_size: 1_000_000_000_000, ..DlrmConfig::tiny() };
//! let err = memory::check_against(&huge, Some(1 << 30), 0).unwrap_err();
//! assert!(matches!(err, dlrm_kernels::Error::TooLarge { setting: Setting::BatchSize, .. }));
//! assert!(err.to_string().starts_with("batch size 1000000000000: the model needs"));
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```

use std::fmt;

use crate::error::{Error, Result};
use crate::interaction::checked_output_dim;
use crate::linear::LinearConfig;
use crate::mlp::MlpConfig;
use crate::model::{DlrmConfig, Precision};
use crate::optim::TableOptimizer;

/// A setting of a [`DlrmConfig`] that makes a model too large (see [`Error::TooLarge`]).
///
/// ```
/// use dlrm_kernels::memory::Setting;
/// assert_eq!(Setting::BatchSize.flag(), "--mini-batch-size");
/// assert_eq!(Setting::BatchSize.key(), "mini_batch_size");
/// assert_eq!(Setting::BatchSize.to_string(), "batch size");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// [`DlrmConfig::batch_size`].
    BatchSize,
    /// [`DlrmConfig::table_rows`].
    TableRows,
    /// [`DlrmConfig::embedding_dim`].
    EmbeddingDim,
    /// [`DlrmConfig::bottom_mlp`].
    BottomMlp,
    /// [`DlrmConfig::top_mlp`].
    TopMlp,
}

impl Setting {
    /// The trainer's flag for this setting (`--mini-batch-size`).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::memory::Setting::TopMlp.flag(), "--arch-mlp-top");
    /// ```
    pub fn flag(self) -> &'static str {
        match self {
            Setting::BatchSize => "--mini-batch-size",
            Setting::TableRows => "--arch-embedding-size",
            Setting::EmbeddingDim => "--arch-sparse-feature-size",
            Setting::BottomMlp => "--arch-mlp-bot",
            Setting::TopMlp => "--arch-mlp-top",
        }
    }

    /// The checkpoint metadata entry for this setting (`mini_batch_size`).
    ///
    /// ```
    /// assert_eq!(dlrm_kernels::memory::Setting::TableRows.key(), "arch_embedding_size");
    /// ```
    pub fn key(self) -> &'static str {
        match self {
            Setting::BatchSize => "mini_batch_size",
            Setting::TableRows => "arch_embedding_size",
            Setting::EmbeddingDim => "arch_sparse_feature_size",
            Setting::BottomMlp => "arch_mlp_bot",
            Setting::TopMlp => "arch_mlp_top",
        }
    }

    /// The setting's value in `cfg`, written as the flag takes it (`13-512-256`).
    ///
    /// ```
    /// use dlrm_kernels::memory::Setting;
    /// let cfg = dlrm_kernels::model::DlrmConfig::tiny();
    /// assert_eq!(Setting::BottomMlp.value(&cfg), "5-8-4");
    /// ```
    pub fn value(self, cfg: &DlrmConfig) -> String {
        let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join("-");
        match self {
            Setting::BatchSize => cfg.batch_size.to_string(),
            Setting::TableRows => list(&cfg.table_rows),
            Setting::EmbeddingDim => cfg.embedding_dim.to_string(),
            Setting::BottomMlp => list(&cfg.bottom_mlp),
            Setting::TopMlp => list(&cfg.top_mlp),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Setting::BatchSize => "batch size",
            Setting::TableRows => "table rows",
            Setting::EmbeddingDim => "embedding dim",
            Setting::BottomMlp => "bottom MLP",
            Setting::TopMlp => "top MLP",
        })
    }
}

/// Bytes a model of a configuration needs, by part. See the [module docs](self).
///
/// ```
/// use dlrm_kernels::memory::MemoryEstimate;
/// use dlrm_kernels::model::DlrmConfig;
/// use dlrm_kernels::optim::{Optimizers, TableOptimizer};
/// let optimizers = Optimizers { tables: TableOptimizer::RowwiseAdagrad, ..Optimizers::default() };
/// let cfg = DlrmConfig { optimizers, ..DlrmConfig::tiny() };
/// let e = MemoryEstimate::of(&cfg)?;
/// assert_eq!((e.tables, e.table_optimizer), (3 * 100 * 4 * 4, 3 * 100 * 4));
/// assert_eq!(e.per_sample * cfg.batch_size as u64, e.batch);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEstimate {
    /// Embedding table weights: 4 bytes a weight (fp32, or bf16 upper and lower halves).
    pub tables: u64,
    /// Row-wise Adagrad state, 4 bytes a table row (0 with SGD).
    pub table_optimizer: u64,
    /// Bottom MLP parameters: weights, their transposed copy, bf16 lower halves, biases.
    pub bottom_mlp: u64,
    /// Top MLP parameters, as for the bottom MLP.
    pub top_mlp: u64,
    /// Activations, gradients and work buffers of one batch of
    /// [`DlrmConfig::batch_size`] samples (MLPs, pooled embeddings, interaction, logits).
    pub batch: u64,
    /// Of `batch`, the bytes per sample (rounded up).
    pub per_sample: u64,
}

impl MemoryEstimate {
    /// The estimate for `cfg` (which should pass [`DlrmConfig::validate`]).
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] naming the setting whose sizes overflow a 64-bit byte count; a
    /// configuration that does not validate may give [`Error::Config`]; kernel errors (the
    /// block sizes come from the active backend, see [`MlpConfig::layer_configs`]).
    ///
    /// ```
    /// use dlrm_kernels::memory::{MemoryEstimate, Setting};
    /// use dlrm_kernels::model::DlrmConfig;
    /// let cfg = DlrmConfig { batch_size: usize::MAX, ..DlrmConfig::tiny() };
    /// let err = MemoryEstimate::of(&cfg).unwrap_err();
    /// assert!(matches!(err, dlrm_kernels::Error::TooLarge { setting: Setting::BatchSize, .. }));
    /// ```
    pub fn of(cfg: &DlrmConfig) -> Result<Self> {
        let overflow = |setting: Setting| Error::TooLarge {
            setting,
            value: setting.value(cfg),
            message: "the model's sizes overflow a 64-bit byte count".into(),
        };
        let elem: u64 = match cfg.precision {
            Precision::F32 => 4,
            Precision::Bf16 => 2,
        };
        let dim = cfg.embedding_dim as u64;
        let mut tables = 0u64;
        for &rows in &cfg.table_rows {
            tables = (rows as u64)
                .checked_mul(dim)
                .and_then(|w| w.checked_mul(4))
                .and_then(|b| tables.checked_add(b))
                .ok_or(overflow(Setting::TableRows))?;
        }
        let table_optimizer = match cfg.optimizers.tables {
            TableOptimizer::Sgd => 0,
            TableOptimizer::RowwiseAdagrad => cfg
                .table_rows
                .iter()
                .try_fold(0u64, |acc, &r| acc.checked_add((r as u64).checked_mul(4)?))
                .ok_or(overflow(Setting::TableRows))?,
        };
        let inter = checked_output_dim(
            cfg.interaction,
            cfg.interaction_itself,
            cfg.table_rows.len(),
            cfg.embedding_dim,
        )
        .ok_or(overflow(Setting::EmbeddingDim))?;
        let batch = cfg.batch_size;
        let bottom = MlpConfig::new(cfg.bottom_mlp.clone(), batch);
        let mut top_sizes = vec![inter];
        top_sizes.extend(&cfg.top_mlp);
        let top = MlpConfig::new(top_sizes, batch);
        let (bottom_layers, top_layers) = (bottom.layer_configs()?, top.layer_configs()?);
        let (bottom_mlp, bottom_rows) =
            mlp_bytes(&bottom_layers, elem).ok_or(overflow(Setting::BottomMlp))?;
        let (top_mlp, top_rows) = mlp_bytes(&top_layers, elem).ok_or(overflow(Setting::TopMlp))?;
        // The model's row-major buffers: bottom output and its gradient (d), pooled
        // embeddings and their gradient (T d), logits and their gradient.
        let t = cfg.table_rows.len() as u64;
        let model_row = t
            .checked_add(1)
            .and_then(|f| f.checked_mul(dim))
            .and_then(|x| x.checked_add(1))
            .and_then(|x| x.checked_mul(2 * 4))
            .ok_or(overflow(Setting::EmbeddingDim))?;
        let b = batch as u64;
        let batch_bytes = (|| {
            let rows = |layers: &[LinearConfig], per_row: u64| {
                let bn = layers.first().map_or(1, |l| l.blocking.bn) as u64;
                b.div_ceil(bn)
                    .checked_mul(bn.next_multiple_of(2))?
                    .checked_mul(per_row)
            };
            rows(&bottom_layers, bottom_rows)?
                .checked_add(rows(&top_layers, top_rows)?)?
                .checked_add(b.checked_mul(model_row)?)
        })()
        .ok_or(overflow(Setting::BatchSize))?;
        let est = MemoryEstimate {
            tables,
            table_optimizer,
            bottom_mlp,
            top_mlp,
            batch: batch_bytes,
            per_sample: batch_bytes.div_ceil(b.max(1)),
        };
        // The parts' sum must be a byte count too.
        est.fixed()
            .checked_add(est.batch)
            .ok_or(overflow(Setting::BatchSize))?;
        Ok(est)
    }

    /// Everything but the batch: tables, their optimizer state, the MLPs' parameters.
    fn fixed(&self) -> u64 {
        self.tables
            .saturating_add(self.table_optimizer)
            .saturating_add(self.bottom_mlp)
            .saturating_add(self.top_mlp)
    }

    /// The whole estimate, in bytes.
    ///
    /// ```
    /// let e = dlrm_kernels::memory::MemoryEstimate::of(&dlrm_kernels::model::DlrmConfig::tiny())?;
    /// assert_eq!(e.total(), e.tables + e.table_optimizer + e.bottom_mlp + e.top_mlp + e.batch);
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn total(&self) -> u64 {
        self.fixed().saturating_add(self.batch)
    }

    /// The parts, for a message: `"tables 1.9 GiB, bottom MLP 1.1 MiB, ..."` (parts of 0
    /// bytes left out).
    ///
    /// ```
    /// let e = dlrm_kernels::memory::MemoryEstimate::of(&dlrm_kernels::model::DlrmConfig::small())?;
    /// assert!(e.describe().starts_with("embedding tables 1.91 GiB, bottom MLP "));
    /// # Ok::<(), dlrm_kernels::Error>(())
    /// ```
    pub fn describe(&self) -> String {
        [
            ("embedding tables", self.tables),
            ("their Adagrad state", self.table_optimizer),
            ("bottom MLP", self.bottom_mlp),
            ("top MLP", self.top_mlp),
            ("the batch's activations and gradients", self.batch),
        ]
        .iter()
        .filter(|(_, bytes)| *bytes > 0)
        .map(|(what, bytes)| format!("{what} {}", human_bytes(*bytes)))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// Parameter bytes of an MLP, and the bytes its activations, gradients and bf16 operand
/// copies take per padded batch row; `None` on overflow.
fn mlp_bytes(layers: &[LinearConfig], elem: u64) -> Option<(u64, u64)> {
    let bf16 = elem == 2;
    let (mut params, mut per_row) = (0u64, 0u64);
    // Activations and their gradients: the input, then each layer's output.
    let mut widths = Vec::with_capacity(layers.len() + 1);
    if let Some(first) = layers.first() {
        widths.push((first.in_features, first.blocking.bc));
    }
    for l in layers {
        widths.push((l.out_features, l.blocking.bk));
    }
    for (width, block) in widths {
        let padded = (width as u64)
            .div_ceil(block as u64)
            .checked_mul(block as u64)?;
        per_row = per_row.checked_add(padded.checked_mul(2 * elem)?)?;
    }
    for l in layers {
        let (p, r) = layer_bytes(l, bf16, elem)?;
        params = params.checked_add(p)?;
        per_row = per_row.checked_add(r)?;
    }
    Some((params, per_row))
}

/// Parameter bytes of a layer (weights, `W^T`, bf16 lower halves, bias and its gradient),
/// and per batch row the bf16 copies of its input and output gradient the weight gradient
/// reads.
fn layer_bytes(l: &LinearConfig, bf16: bool, elem: u64) -> Option<(u64, u64)> {
    let b = l.blocking;
    let cb = l.in_features.div_ceil(b.bc) as u64;
    let kb = l.out_features.div_ceil(b.bk) as u64;
    let (w_block, wt_block) = if bf16 {
        let packed = |k: usize, n: usize| (k.div_ceil(2) as u64).checked_mul(2 * n as u64);
        (packed(b.bc, b.bk)?, packed(b.bk, b.bc)?)
    } else {
        let blk = (b.bc as u64).checked_mul(b.bk as u64)?;
        (blk, blk)
    };
    let blocks = kb.checked_mul(cb)?;
    let mut params = blocks
        .checked_mul(w_block.checked_add(wt_block)?)?
        .checked_mul(elem)?;
    if bf16 {
        params = params.checked_add(blocks.checked_mul(w_block)?.checked_mul(2)?)?;
    }
    let bias = kb.checked_mul(b.bk as u64)?.checked_mul(2 * 4)?;
    params = params.checked_add(bias)?;
    let per_row = if bf16 {
        let x = cb.checked_mul(b.bc as u64)?;
        let dy = kb.checked_mul(b.bk as u64)?;
        x.checked_add(dy)?.checked_mul(elem)?
    } else {
        0
    };
    Some((params, per_row))
}

/// `bytes` for people: `"1.91 GiB"`, `"512 B"`.
///
/// ```
/// assert_eq!(dlrm_kernels::memory::human_bytes(3 << 29), "1.50 GiB");
/// assert_eq!(dlrm_kernels::memory::human_bytes(100), "100 B");
/// ```
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

/// Bytes of memory available to this process, where the system says: Linux's
/// `MemAvailable`, lowered to what the process's cgroup (v2) still allows when it has a
/// limit. `None` elsewhere.
///
/// ```
/// if let Some(bytes) = dlrm_kernels::memory::available() {
///     assert!(bytes > 0);
/// }
/// ```
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())?
        .saturating_mul(1024);
    Some(cgroup_left().map_or(mem, |left| left.min(mem)))
}

/// What the process's cgroup v2 memory limit leaves: `memory.max - memory.current`.
fn cgroup_left() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    // "max" (no limit) does not parse: no limit to apply.
    let max = read("memory.max")?;
    Some(max.saturating_sub(read("memory.current").unwrap_or(0)))
}

/// [`check_against`] with the memory [`available`] now.
///
/// # Errors
///
/// As [`check_against`].
///
/// ```
/// let e = dlrm_kernels::memory::check(&dlrm_kernels::model::DlrmConfig::tiny())?;
/// assert!(e.total() < 1 << 20);
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub fn check(cfg: &DlrmConfig) -> Result<MemoryEstimate> {
    check_against(cfg, available(), 0)
}

/// The estimate for `cfg`, if it fits in 90% of `available` bytes (`None`: unknown, then
/// only what a 64-bit address space can hold is refused), with `extra_per_sample` bytes a
/// sample that the caller keeps beside the model (e.g. its data batches).
///
/// # Errors
///
/// [`Error::TooLarge`] naming the setting: [`Setting::BatchSize`] when one sample fits (the
/// message says how many do), else the largest part of the architecture (tables, bottom or
/// top MLP); also when sizes overflow (see [`MemoryEstimate::of`]).
///
/// ```
/// use dlrm_kernels::memory::{check_against, Setting};
/// use dlrm_kernels::model::DlrmConfig;
/// let cfg = DlrmConfig { table_rows: vec![4_294_967_295, 100, 100], ..DlrmConfig::tiny() };
/// let err = check_against(&cfg, Some(1 << 30), 0).unwrap_err();
/// assert!(err.to_string().starts_with("table rows 4294967295-100-100: the model needs 64.00 GiB"));
/// assert!(matches!(err, dlrm_kernels::Error::TooLarge { setting: Setting::TableRows, .. }));
/// ```
pub fn check_against(
    cfg: &DlrmConfig,
    available: Option<u64>,
    extra_per_sample: u64,
) -> Result<MemoryEstimate> {
    let mut est = MemoryEstimate::of(cfg)?;
    let extra = (cfg.batch_size as u64)
        .checked_mul(extra_per_sample)
        .and_then(|x| x.checked_add(est.batch))
        .filter(|&b| est.fixed().checked_add(b).is_some())
        .ok_or_else(|| Error::TooLarge {
            setting: Setting::BatchSize,
            value: Setting::BatchSize.value(cfg),
            message: "the model's sizes overflow a 64-bit byte count".into(),
        })?;
    est.batch = extra;
    est.per_sample = est.per_sample.saturating_add(extra_per_sample);
    let limit = match available {
        Some(bytes) => bytes / 10 * 9,
        None => isize::MAX as u64,
    };
    if est.total() <= limit {
        return Ok(est);
    }
    let what = match available {
        Some(bytes) => format!("the {} of memory available", human_bytes(bytes)),
        None => "what this machine can address".into(),
    };
    let setting = if est.fixed().saturating_add(est.per_sample) <= limit {
        Setting::BatchSize
    } else {
        let tables = est.tables.saturating_add(est.table_optimizer);
        let parts = [
            (tables, Setting::TableRows),
            (est.bottom_mlp, Setting::BottomMlp),
            (est.top_mlp, Setting::TopMlp),
        ];
        let largest = parts.iter().max_by_key(|(bytes, _)| *bytes).expect("three");
        // One sample's activations larger than every parameter: the widest MLP's width.
        if est.per_sample > largest.0 {
            if est.bottom_mlp >= est.top_mlp {
                Setting::BottomMlp
            } else {
                Setting::TopMlp
            }
        } else {
            largest.1
        }
    };
    let mut message = format!(
        "the model needs {} ({}), more than 90% of {what}",
        human_bytes(est.total()),
        est.describe()
    );
    if setting == Setting::BatchSize {
        // Whole batch blocks (64 rows), so that the padding of that many fits too.
        let mut fit = (limit - est.fixed()) / est.per_sample.max(1);
        if fit >= 64 {
            fit -= fit % 64;
        }
        message.push_str(&format!("; at most about {fit} samples a batch fit"));
    }
    Err(Error::TooLarge {
        setting,
        value: setting.value(cfg),
        message,
    })
}

/// Bytes per sample of the batches a trainer keeps in flight beside the model: `in_flight`
/// batches of, per sample, the dense features and the target (f32) and, per table,
/// `lookups` indices and an offset (i64); `None` if that overflows. Pass it to
/// [`check_against`] as `extra_per_sample`.
///
/// ```
/// // 26 tables of one lookup, 13 dense features, 6 batches in flight.
/// assert_eq!(dlrm_kernels::memory::batch_bytes_per_sample(26, 1, 13, 6), Some(6 * (26 * 16 + 14 * 4)));
/// assert_eq!(dlrm_kernels::memory::batch_bytes_per_sample(1, usize::MAX, 13, 6), None);
/// ```
pub fn batch_bytes_per_sample(
    tables: usize,
    lookups: usize,
    dense: usize,
    in_flight: usize,
) -> Option<u64> {
    (tables as u64)
        .checked_mul((lookups as u64).checked_add(1)?.checked_mul(8)?)?
        .checked_add((dense as u64).checked_add(1)?.checked_mul(4)?)?
        .checked_mul(in_flight as u64)
}

/// `what` if the product of `factors` does not fit a `usize`, else the product.
pub(crate) fn checked_product(factors: &[usize], what: impl FnOnce() -> String) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| Error::Config(format!("{}: its size overflows", what())))
}

/// A vector of `len` copies of `value`, or an error naming `what` when its bytes exceed what
/// can be allocated (instead of aborting the process).
pub(crate) fn try_filled<T: Clone>(
    len: usize,
    value: T,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>> {
    let mut v = Vec::new();
    if v.try_reserve_exact(len).is_err() {
        let bytes = (len as u128) * (size_of::<T>() as u128);
        return Err(Error::Config(format!(
            "{}: cannot allocate {}",
            what(),
            if bytes <= u64::MAX as u128 {
                human_bytes(bytes as u64)
            } else {
                format!("{bytes} bytes")
            }
        )));
    }
    v.resize(len, value);
    Ok(v)
}
