//! The configuration and step count a checkpoint carries as safetensors metadata, written
//! in a fixed order and read back by the same names.

use std::collections::HashMap;
use std::str::FromStr;

use super::FORMAT;
use crate::error::Error;
use crate::interaction::InteractionOp;
use crate::loss::Loss;
use crate::model::{DlrmConfig, Precision};
use crate::optim::{LrPolicy, Optimizers, TableOptimizer};

pub(super) fn list(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join("-")
}

/// The configuration and step as safetensors metadata, in a fixed order.
pub(super) fn to_metadata(cfg: &DlrmConfig, step: u64) -> Vec<(&'static str, String)> {
    vec![
        ("format", FORMAT.to_string()),
        ("arch_mlp_bot", list(&cfg.bottom_mlp)),
        ("arch_mlp_top", list(&cfg.top_mlp)),
        ("arch_embedding_size", list(&cfg.table_rows)),
        ("arch_sparse_feature_size", cfg.embedding_dim.to_string()),
        ("arch_interaction_op", cfg.interaction.name().to_string()),
        (
            "arch_interaction_itself",
            cfg.interaction_itself.to_string(),
        ),
        ("precision", cfg.precision.name().to_string()),
        ("mini_batch_size", cfg.batch_size.to_string()),
        ("loss_function", cfg.loss.name().to_string()),
        ("optimizer", cfg.optimizers.tables.name().to_string()),
        ("learning_rate", cfg.lr.base_lr.to_string()),
        ("lr_num_warmup_steps", cfg.lr.warmup_steps.to_string()),
        ("lr_decay_start_step", cfg.lr.decay_start_step.to_string()),
        ("lr_num_decay_steps", cfg.lr.decay_steps.to_string()),
        ("step", step.to_string()),
    ]
}

/// The configuration and step back from metadata.
pub(super) fn from_metadata(
    meta: &HashMap<String, String>,
) -> std::result::Result<(DlrmConfig, u64), String> {
    let get = |k: &str| {
        meta.get(k)
            .map(String::as_str)
            .ok_or(format!("metadata lacks {k:?}"))
    };
    let num = |k: &str| -> std::result::Result<u64, String> {
        get(k)?
            .parse()
            .map_err(|_| format!("metadata {k:?} is not a number"))
    };
    let size = |k: &str| -> std::result::Result<usize, String> {
        let n = num(k)?;
        usize::try_from(n)
            .map_err(|_| format!("metadata {k:?} = {n} is too large for this machine"))
    };
    let sizes = |k: &str| -> std::result::Result<Vec<usize>, String> {
        get(k)?
            .split('-')
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("metadata {k:?} is not a size list"))
            })
            .collect()
    };
    if get("format")? != FORMAT {
        return Err(format!("format {:?}, expected {FORMAT:?}", get("format")?));
    }
    // Each choice is written by its `name()`; read it back by the same names.
    fn named<T: FromStr<Err = Error>>(key: &str, value: &str) -> std::result::Result<T, String> {
        value.parse().map_err(|e| match e {
            Error::UnknownName { expected, .. } => {
                format!("metadata {key:?} is {value:?}, expected one of {expected:?}")
            }
            e => e.to_string(),
        })
    }
    let interaction: InteractionOp = named("arch_interaction_op", get("arch_interaction_op")?)?;
    let precision: Precision = named("precision", get("precision")?)?;
    let loss: Loss = named("loss_function", get("loss_function")?)?;
    let tables: TableOptimizer = named("optimizer", get("optimizer")?)?;
    let interaction_itself = match get("arch_interaction_itself")? {
        "true" => true,
        "false" => false,
        other => {
            return Err(format!(
                "metadata \"arch_interaction_itself\" is {other:?}, expected one of [\"false\", \"true\"]"
            ));
        }
    };
    let cfg = DlrmConfig {
        bottom_mlp: sizes("arch_mlp_bot")?,
        top_mlp: sizes("arch_mlp_top")?,
        table_rows: sizes("arch_embedding_size")?,
        embedding_dim: size("arch_sparse_feature_size")?,
        interaction,
        interaction_itself,
        precision,
        batch_size: size("mini_batch_size")?,
        loss,
        optimizers: Optimizers {
            tables,
            ..Optimizers::default()
        },
        lr: LrPolicy {
            base_lr: get("learning_rate")?
                .parse()
                .map_err(|_| "metadata \"learning_rate\" is not a number".to_string())?,
            warmup_steps: num("lr_num_warmup_steps")?,
            decay_start_step: num("lr_decay_start_step")?,
            decay_steps: num("lr_num_decay_steps")?,
        },
    };
    Ok((cfg, num("step")?))
}

/// The architecture fields that differ between two configurations, described.
pub(super) fn differences(a: &DlrmConfig, b: &DlrmConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |what: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{what}: checkpoint {x}, model {y}"));
        }
    };
    cmp("arch-mlp-bot", list(&a.bottom_mlp), list(&b.bottom_mlp));
    cmp("arch-mlp-top", list(&a.top_mlp), list(&b.top_mlp));
    cmp(
        "arch-embedding-size",
        list(&a.table_rows),
        list(&b.table_rows),
    );
    cmp(
        "arch-sparse-feature-size",
        a.embedding_dim.to_string(),
        b.embedding_dim.to_string(),
    );
    cmp(
        "arch-interaction-op",
        a.interaction.name().into(),
        b.interaction.name().into(),
    );
    cmp(
        "arch-interaction-itself",
        a.interaction_itself.to_string(),
        b.interaction_itself.to_string(),
    );
    out
}
