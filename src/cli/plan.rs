//! From the flags to what runs: everything the flags alone decide is checked first (their
//! values, the files to read and write, the memory the model needs), then the model's
//! configuration and the data source are made.

use std::path::Path;

use super::flags::{Args, DataGeneration, DataRandomize};
use crate::data::criteo::{self, CriteoData, CriteoFiles, CriteoOptions, OnMalformed};
use crate::data::random::{RandomDataConfig, RandomSource};
use crate::data::synthetic::{SyntheticConfig, SyntheticSource};
use crate::data::{BatchSource, SplitSizes};
use crate::error::{Error, Result};
use crate::memory::{self, Setting};
use crate::model::{DlrmConfig, Preset};
use crate::optim::{LrPolicy, Optimizers};
use crate::train::{Output, check_writable};

/// An error naming a flag.
fn usage(message: String) -> Error {
    Error::Usage(message)
}

/// What the flags decide before any data is read.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// The model (for a dataset, its tables are `--max-ind-range` rows each).
    pub cfg: DlrmConfig,
    /// Lookups per bag of generated data.
    pub lookups: usize,
    /// Training batches per epoch of generated data.
    pub batches: usize,
}

/// The trainer's model without a preset: one that learns the synthetic data in a short run
/// (how long on the development machine: BENCHMARKS.md).
fn default_config() -> DlrmConfig {
    DlrmConfig {
        bottom_mlp: vec![13, 512, 256, 64],
        top_mlp: vec![512, 256, 1],
        table_rows: vec![100_000; 8],
        embedding_dim: 64,
        batch_size: 512,
        ..DlrmConfig::small()
    }
}

/// Sizes from a flag such as `13-512-256`, each at least 1.
fn sizes(flag: &str, s: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split('-')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| usage(format!("--{flag} {s:?}: expected sizes like 13-512-256")))
        })
        .collect::<Result<_>>()?;
    if v.contains(&0) {
        return Err(usage(format!(
            "--{flag} {s:?}: every size must be at least 1"
        )));
    }
    Ok(v)
}

impl Plan {
    /// The model and data shape the flags give (a preset's, or the default model's, with
    /// the explicit flags over it).
    pub fn from_args(a: &Args) -> Result<Plan> {
        let (mut cfg, mut lookups, batches) = match a.preset {
            None => (default_config(), 1, 3500),
            // The reference benchmark's small configuration looks up 100 rows a bag.
            Some(p) => (p.config(), if p == Preset::Small { 100 } else { 1 }, 100),
        };
        if let Some(v) = &a.arch_mlp_bot {
            cfg.bottom_mlp = sizes("arch-mlp-bot", v)?;
        }
        if let Some(v) = &a.arch_mlp_top {
            cfg.top_mlp = sizes("arch-mlp-top", v)?;
        }
        if let Some(v) = &a.arch_embedding_size {
            cfg.table_rows = sizes("arch-embedding-size", v)?;
        }
        if let Some(v) = a.arch_sparse_feature_size {
            cfg.embedding_dim = v;
        }
        if let Some(v) = a.mini_batch_size {
            cfg.batch_size = v;
        }
        if let Some(v) = a.num_indices_per_lookup {
            lookups = v;
        }
        if a.max_ind_range > 0 {
            for r in &mut cfg.table_rows {
                *r = (*r).min(a.max_ind_range as usize);
            }
        }
        if a.data_generation == DataGeneration::Dataset {
            // The tables are the data's: one per categorical feature, hashed into
            // --max-ind-range rows.
            cfg.table_rows = vec![a.max_ind_range as usize; criteo::SPARSE];
            lookups = 1;
            if cfg.dense_features() != criteo::DENSE {
                return Err(usage(format!(
                    "--arch-mlp-bot starts with {} inputs but the data has {} dense features",
                    cfg.dense_features(),
                    criteo::DENSE
                )));
            }
        }
        cfg.interaction = a.arch_interaction_op;
        cfg.interaction_itself = a.arch_interaction_itself;
        cfg.precision = a.precision;
        cfg.loss = a.loss_function;
        cfg.optimizers = Optimizers {
            tables: a.optimizer,
            ..Optimizers::default()
        };
        cfg.lr = LrPolicy {
            base_lr: a.learning_rate.unwrap_or(0.1),
            warmup_steps: a.lr_num_warmup_steps,
            decay_start_step: a.lr_decay_start_step,
            decay_steps: a.lr_num_decay_steps,
        };
        let batches = a.num_batches.filter(|&n| n > 0).unwrap_or(batches);
        Ok(Plan {
            cfg,
            lookups,
            batches,
        })
    }

    /// The test batch size.
    pub fn test_batch(&self, a: &Args) -> usize {
        a.test_mini_batch_size.unwrap_or(self.cfg.batch_size)
    }

    /// Refuse, before the data is prepared and anything allocated, a model that would not
    /// fit in the memory available: tables, MLPs, the batch's activations and gradients (at
    /// the larger of the training and test batch), and the data batches in flight.
    pub fn check_memory(&self, a: &Args) -> Result<()> {
        let mut cfg = self.cfg.clone();
        cfg.batch_size = cfg.batch_size.max(self.test_batch(a));
        // Up to 6 batches at once: 4 queued, one being made, one training.
        let data = memory::batch_bytes_per_sample(
            cfg.table_rows.len(),
            self.lookups,
            cfg.dense_features(),
            6,
        )
        .ok_or_else(|| {
            usage(format!(
                "--num-indices-per-lookup {}: too large",
                self.lookups
            ))
        })?;
        memory::check_against(&cfg, memory::available(), data)
            .map_err(|e| flag_error(a, self.cfg.batch_size, e))?;
        Ok(())
    }

    /// The data source the flags name, its files prepared (Criteo raw text converted once,
    /// telling `out`).
    pub fn open_data(&self, a: &Args, out: &Output) -> Result<Box<dyn BatchSource>> {
        let seed = a.numpy_rand_seed;
        let (cfg, test_batch) = (&self.cfg, self.test_batch(a));
        let sizes = SplitSizes {
            train_batches: self.batches,
            test_batches: a
                .test_num_batches
                .unwrap_or((self.batches / 10).clamp(1, 50)),
            test_batch_size: test_batch,
        };
        Ok(match a.data_generation {
            DataGeneration::Random => Box::new(RandomSource::new(
                RandomDataConfig {
                    dense_features: cfg.dense_features(),
                    table_rows: cfg.table_rows.clone(),
                    batch_size: cfg.batch_size,
                    indices_per_lookup: self.lookups,
                    indices_per_lookup_fixed: a.num_indices_per_lookup_fixed,
                    round_targets: a.round_targets,
                    seed,
                },
                sizes,
            )?),
            DataGeneration::Synthetic => Box::new(SyntheticSource::new(
                SyntheticConfig {
                    dense_features: cfg.dense_features(),
                    table_rows: cfg.table_rows.clone(),
                    batch_size: cfg.batch_size,
                    lookups: self.lookups,
                    seed,
                    ..SyntheticConfig::default()
                },
                sizes,
            )?),
            DataGeneration::Dataset => {
                let files = CriteoFiles {
                    kind: a.data_set,
                    raw: a.raw_data_file.clone(),
                    processed: a.processed_data_file.clone(),
                };
                let options = CriteoOptions {
                    batch_size: cfg.batch_size,
                    test_batch_size: test_batch,
                    max_ind_range: a.max_ind_range as u32,
                    on_malformed: if a.skip_malformed {
                        OnMalformed::Skip
                    } else {
                        OnMalformed::Fail
                    },
                };
                let data = CriteoData::open(&files, options, &mut |line| out.line(&line))?;
                Box::new(data.map_binary(|b| {
                    let b = b.with_train_batches(a.num_batches);
                    match a.data_randomize {
                        DataRandomize::Total => b.shuffled(seed),
                        DataRandomize::None => b,
                    }
                }))
            }
        })
    }
}

/// Flag values that cannot work, and flags that would be ignored, as errors naming the
/// flag and its value, before anything runs.
pub(super) fn check_flags(a: &Args) -> Result<()> {
    let positive = [
        ("--mini-batch-size", a.mini_batch_size),
        ("--test-mini-batch-size", a.test_mini_batch_size),
        ("--test-num-batches", a.test_num_batches),
        ("--threads", a.threads),
        ("--num-indices-per-lookup", a.num_indices_per_lookup),
        ("--arch-sparse-feature-size", a.arch_sparse_feature_size),
        ("--nepochs", Some(a.nepochs)),
    ];
    for (flag, value) in positive {
        if value == Some(0) {
            return Err(usage(format!("{flag} must be at least 1, got 0")));
        }
    }
    if let Some(lr) = a.learning_rate.filter(|lr| !lr.is_finite()) {
        return Err(usage(format!(
            "--learning-rate must be a finite number, got {lr}"
        )));
    }
    let generated = match a.data_generation {
        DataGeneration::Random => Some("random"),
        DataGeneration::Synthetic => Some("synthetic"),
        DataGeneration::Dataset => None,
    };
    if let Some(kind) = generated {
        for (flag, given) in [
            ("--raw-data-file", a.raw_data_file.is_some()),
            ("--processed-data-file", a.processed_data_file.is_some()),
        ] {
            if given {
                return Err(usage(format!(
                    "{flag} is only read with --data-generation dataset (this run would \
                     train on {kind} data)"
                )));
            }
        }
    } else if a.max_ind_range <= 0 || a.max_ind_range > u32::MAX as i64 {
        return Err(usage(format!(
            "--max-ind-range is required with --data-generation dataset, between 1 and {} \
             (got {}): categorical values are hashed into that many rows per table \
             (e.g. 1000000)",
            u32::MAX,
            a.max_ind_range
        )));
    } else if a.raw_data_file.is_none() && a.processed_data_file.is_none() {
        return Err(usage(
            "--data-generation dataset needs --raw-data-file or --processed-data-file".into(),
        ));
    }
    if a.inference_only && a.load_model.is_none() {
        return Err(usage(
            "--inference-only true needs --load-model: without it there is no trained \
             model to evaluate"
                .into(),
        ));
    }
    Ok(())
}

/// The files the run reads or writes, checked before anything runs: the checkpoint to load
/// can be read; a checkpoint or CSV to write can be created ([`check_writable`]).
pub(super) fn check_paths(a: &Args) -> Result<()> {
    if let Some(p) = &a.load_model {
        let why = match std::fs::File::open(p).and_then(|f| f.metadata()) {
            Err(e) => Some(e.to_string()),
            Ok(m) if m.is_dir() => Some("is a directory".into()),
            Ok(_) => None,
        };
        if let Some(why) = why {
            return Err(usage(format!("--load-model {}: {why}", p.display())));
        }
    }
    for (flag, path) in [
        ("--save-model", &a.save_model),
        ("--metrics-csv", &a.metrics_csv),
    ] {
        if let Some(path) = path {
            check_output(flag, path)?;
        }
    }
    Ok(())
}

/// [`check_writable`], said with the flag.
fn check_output(flag: &str, path: &Path) -> Result<()> {
    check_writable(path).map_err(|e| usage(format!("{flag} {e}")))
}

/// A library error about a setting (too large for memory) said with the flag that sets it;
/// other errors as they are.
pub(super) fn flag_error(a: &Args, train_batch: usize, e: Error) -> Error {
    let Error::TooLarge {
        setting,
        value,
        message,
    } = e
    else {
        return e;
    };
    usage(match setting {
        Setting::BatchSize
            if a.test_mini_batch_size
                .is_some_and(|t| t > train_batch && t.to_string() == value) =>
        {
            format!("--test-mini-batch-size {value}: {message}")
        }
        Setting::TableRows if a.data_generation == DataGeneration::Dataset => {
            format!("--max-ind-range {}: {message}", a.max_ind_range)
        }
        Setting::TableRows => format!(
            "--arch-embedding-size {value}: {message}; cap the tables' rows with --max-ind-range"
        ),
        _ => format!("{} {value}: {message}", setting.flag()),
    })
}
