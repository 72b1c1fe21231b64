//! Checkpoints as safetensors files that PyTorch and numpy users can load.
//!
//! Tensors are row-major f32, named as the DLRM reference's PyTorch state dict names them:
//! `bot_l.<2i>.weight` (`[out][in]`), `bot_l.<2i>.bias`, `top_l.<2i>.weight`, `top_l.<2i>.bias`,
//! `emb_l.<t>.weight` (`[rows][dim]`). A bf16 model saves its fp32 master weights, which hold
//! the bf16 upper halves and the Split-SGD lower halves exactly. Optimizer state travels too:
//! `emb_l.<t>.adagrad_state` (`[rows]`) once row-wise Adagrad has run, and the step count (the
//! learning-rate schedule's position) in the metadata, so a resumed run continues exactly.
//! The metadata also holds the whole [`DlrmConfig`].
//!
//! Saving writes a temporary file in the same directory (`<name>.tmp-<pid>`), syncs it and
//! renames it over the target, so the target is always a whole checkpoint (the new one or
//! the one before), and removes the temporary file on any error. The file is created with
//! the user's umask, and its bytes depend only on the model: the metadata is written in a
//! fixed order (`format`, `arch_mlp_bot`, `arch_mlp_top`, `arch_embedding_size`,
//! `arch_sparse_feature_size`, `arch_interaction_op`, `arch_interaction_itself`,
//! `precision`, `mini_batch_size`, `loss_function`, `optimizer`, `learning_rate`,
//! `lr_num_warmup_steps`, `lr_decay_start_step`, `lr_num_decay_steps`, `step`), the tensors
//! sorted by name. Loading checks the format, the
//! architecture and every tensor's presence, type and shape before it changes anything, and
//! says what differs.
//!
//! ```
//! use dlrm_kernels::checkpoint;
//! use dlrm_kernels::model::{Dlrm, DlrmConfig};
//!
//! let model = Dlrm::new(DlrmConfig::tiny(), 1)?;
//! let path = std::env::temp_dir().join(format!("doc-{}.safetensors", std::process::id()));
//! checkpoint::save(&model, &path)?;
//! let restored = checkpoint::load(&path)?;
//! assert_eq!(restored.tensor("emb_l.0.weight"), model.tensor("emb_l.0.weight"));
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), dlrm_kernels::Error>(())
//! ```
//!
//! In Python: `safetensors.torch.load_file(path)` gives the state dict; the metadata
//! (`safe_open(path, "pt").metadata()`) holds the configuration.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::interaction::InteractionOp;
use crate::loss::Loss;
use crate::memory;
use crate::model::{Dlrm, DlrmConfig, EmbeddingOptimizer, Precision};
use crate::optim::LrPolicy;

/// The `format` metadata value of files written by this version.
pub const FORMAT: &str = "dlrm-kernels/1";

fn list(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join("-")
}

/// The configuration and step as safetensors metadata, in a fixed order.
fn to_metadata(cfg: &DlrmConfig, step: u64) -> Vec<(&'static str, String)> {
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
        ("optimizer", cfg.embedding_optimizer.name().to_string()),
        ("learning_rate", cfg.lr.base_lr.to_string()),
        ("lr_num_warmup_steps", cfg.lr.warmup_steps.to_string()),
        ("lr_decay_start_step", cfg.lr.decay_start_step.to_string()),
        ("lr_num_decay_steps", cfg.lr.decay_steps.to_string()),
        ("step", step.to_string()),
    ]
}

/// The configuration and step back from metadata.
fn from_metadata(meta: &HashMap<String, String>) -> std::result::Result<(DlrmConfig, u64), String> {
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
    // Each enum is written by its `name()`; read it back by the same names.
    fn named<T: Copy>(
        key: &str,
        value: &str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> std::result::Result<T, String> {
        let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
        all.iter()
            .copied()
            .find(|&v| name(v) == value)
            .ok_or_else(|| format!("metadata {key:?} is {value:?}, expected one of {names:?}"))
    }
    let interaction = named(
        "arch_interaction_op",
        get("arch_interaction_op")?,
        &[InteractionOp::Dot, InteractionOp::Cat],
        InteractionOp::name,
    )?;
    let precision = named(
        "precision",
        get("precision")?,
        &[Precision::F32, Precision::Bf16],
        Precision::name,
    )?;
    let loss = named(
        "loss_function",
        get("loss_function")?,
        &[Loss::Bce, Loss::Mse],
        Loss::name,
    )?;
    let embedding_optimizer = named(
        "optimizer",
        get("optimizer")?,
        &[EmbeddingOptimizer::Sgd, EmbeddingOptimizer::RowwiseAdagrad],
        EmbeddingOptimizer::name,
    )?;
    let interaction_itself = named(
        "arch_interaction_itself",
        get("arch_interaction_itself")?,
        &[false, true],
        |b| {
            if b { "true" } else { "false" }
        },
    )?;
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
        embedding_optimizer,
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

/// The values of tensor `name` of a checkpoint of `model` (see [`tensors`]).
fn values(model: &Dlrm, name: &str) -> Vec<f32> {
    match name.strip_suffix(".adagrad_state") {
        Some(table) => {
            let t: usize = table["emb_l.".len()..].parse().expect("name built by save");
            model.embeddings().tables()[t]
                .adagrad_state()
                .expect("listed only when present")
                .to_vec()
        }
        None => model.tensor(name).expect("name built by save"),
    }
}

/// Every tensor a checkpoint of `model` holds, by name: parameters and optimizer state.
fn tensors(model: &Dlrm) -> Vec<(String, Vec<usize>)> {
    let mut all = model.tensor_list();
    for (t, table) in model.embeddings().tables().iter().enumerate() {
        if table.adagrad_state().is_some() {
            all.push((format!("emb_l.{t}.adagrad_state"), vec![table.rows()]));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The safetensors header (JSON, padded with spaces to a multiple of 8 bytes): the metadata
/// in the order given, then each f32 tensor in order, back to back.
fn header(meta: &[(&str, String)], tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
    let entries: Vec<String> = meta
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    let mut json = format!("{{\"__metadata__\":{{{}}}", entries.join(","));
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let end = offset + 4 * shape.iter().product::<usize>();
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        json.push_str(&format!(
            ",{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json_string(name),
            dims.join(",")
        ));
        offset = end;
    }
    json.push('}');
    let mut bytes = json.into_bytes();
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    bytes
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Write the whole checkpoint to `tmp` (created with the user's umask) and sync it.
fn write_file(tmp: &Path, model: &Dlrm, tensors: &[(String, Vec<usize>)]) -> Result<()> {
    let header = header(&to_metadata(model.config(), model.steps()), tensors);
    let io = |e| Error::io(tmp, e);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    let mut bytes = Vec::with_capacity(4 << 12);
    for (name, _) in tensors {
        // One tensor at a time is copied out of the model, in chunks of 16 KiB of bytes.
        for chunk in values(model, name).chunks(1 << 12) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
            out.write_all(&bytes).map_err(io)?;
        }
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

/// Save `model` to `path`: written whole to a temporary file beside it (`<name>.tmp-<pid>`),
/// synced, then renamed over `path`, so `path` holds either the complete new checkpoint or
/// what it held before, never a partial file; the temporary file is removed on any error.
/// The file is created with the user's umask, like any other file the process creates, and
/// its bytes depend only on the model: the metadata comes in a fixed order (see the module
/// docs), the tensors sorted by name.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be written (naming the file); the target is then
/// untouched.
///
/// ```
/// use dlrm_kernels::{checkpoint, model::{Dlrm, DlrmConfig}};
/// let m = Dlrm::new(DlrmConfig::tiny(), 0)?;
/// assert!(checkpoint::save(&m, std::path::Path::new("/no/such/dir/x.safetensors")).is_err());
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub fn save(model: &Dlrm, path: &Path) -> Result<()> {
    let tensors = tensors(model);
    let tmp = temp_path(path);
    let written = write_file(&tmp, model, &tensors)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
        return written;
    }
    // Make the rename itself durable (where a directory can be synced).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(())
}

fn ckpt_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<(SafeTensors<'a>, DlrmConfig, u64)> {
    let bad =
        |e: safetensors::SafeTensorError| ckpt_err(path, format!("not a safetensors file: {e}"));
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let meta = header
        .metadata()
        .as_ref()
        .ok_or_else(|| ckpt_err(path, "no metadata (not written by dlrm-kernels)"))?;
    let (cfg, step) = from_metadata(meta).map_err(|m| ckpt_err(path, m))?;
    Ok((st, cfg, step))
}

/// The configuration stored in a checkpoint.
///
/// # Errors
///
/// [`Error::Io`] if unreadable, [`Error::Checkpoint`] if not a checkpoint of this format.
///
/// ```
/// assert!(dlrm_kernels::checkpoint::read_config(std::path::Path::new("/nonexistent")).is_err());
/// ```
pub fn read_config(path: &Path) -> Result<DlrmConfig> {
    let bytes = read(path)?;
    Ok(parse(path, &bytes)?.1)
}

/// A model built from the checkpoint's configuration, with its parameters, optimizer state
/// and step.
///
/// # Errors
///
/// As [`load_into`]; also [`Error::Checkpoint`] naming the metadata entry (e.g.
/// `mini_batch_size`) when the configuration's sizes overflow or the model would not fit in
/// the memory available, checked before the model is built (see [`crate::memory`]).
///
/// ```
/// assert!(dlrm_kernels::checkpoint::load(std::path::Path::new("/nonexistent")).is_err());
/// ```
pub fn load(path: &Path) -> Result<Dlrm> {
    let bytes = read(path)?;
    let (st, cfg, step) = parse(path, &bytes)?;
    let named = |e: Error| match e {
        Error::TooLarge {
            setting,
            value,
            message,
        } => ckpt_err(
            path,
            format!("metadata {} = {value}: {message}", setting.key()),
        ),
        Error::Config(message) => ckpt_err(path, format!("its configuration: {message}")),
        e => e,
    };
    cfg.validate().map_err(named)?;
    memory::check(&cfg).map_err(named)?;
    let mut model = Dlrm::new(cfg, 0).map_err(named)?;
    restore(path, &st, step, &mut model)?;
    Ok(model)
}

/// The architecture fields that differ between two configurations, described.
fn differences(a: &DlrmConfig, b: &DlrmConfig) -> Vec<String> {
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

/// Load a checkpoint into an existing model of the same architecture (precision, learning
/// rate and batch size may differ: tensors are f32 masters).
///
/// # Errors
///
/// [`Error::Io`] if unreadable; [`Error::Checkpoint`] if not a checkpoint of this format, if
/// the architecture differs (every differing field is listed), or if a tensor is missing or
/// has another type or shape (named). Nothing in `model` changes on error.
///
/// ```
/// use dlrm_kernels::{checkpoint, model::{Dlrm, DlrmConfig}};
/// let path = std::env::temp_dir().join(format!("doc-into-{}.safetensors", std::process::id()));
/// checkpoint::save(&Dlrm::new(DlrmConfig::tiny(), 0)?, &path)?;
/// let mut other = DlrmConfig::tiny();
/// other.table_rows = vec![100, 100, 99];
/// let err = checkpoint::load_into(&mut Dlrm::new(other, 0)?, &path).unwrap_err();
/// assert!(err.to_string().contains("arch-embedding-size: checkpoint 100-100-100, model 100-100-99"));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), dlrm_kernels::Error>(())
/// ```
pub fn load_into(model: &mut Dlrm, path: &Path) -> Result<()> {
    let bytes = read(path)?;
    let (st, cfg, step) = parse(path, &bytes)?;
    let diff = differences(&cfg, model.config());
    if !diff.is_empty() {
        return Err(ckpt_err(
            path,
            format!("architecture differs: {}", diff.join("; ")),
        ));
    }
    restore(path, &st, step, model)
}

/// Check every tensor, then copy them all in.
fn restore(path: &Path, st: &SafeTensors<'_>, step: u64, model: &mut Dlrm) -> Result<()> {
    let mut wanted = model.tensor_list();
    let tables = model.embeddings().tables().len();
    let mut adagrad = Vec::new();
    for t in 0..tables {
        let name = format!("emb_l.{t}.adagrad_state");
        if st.tensor(&name).is_ok() {
            adagrad.push(t);
            wanted.push((name, vec![model.embeddings().tables()[t].rows()]));
        }
    }
    let mut values = Vec::with_capacity(wanted.len());
    for (name, shape) in &wanted {
        let view = st
            .tensor(name)
            .map_err(|_| ckpt_err(path, format!("tensor {name} is missing")))?;
        if view.dtype() != Dtype::F32 {
            return Err(ckpt_err(
                path,
                format!("tensor {name} is {:?}, expected F32", view.dtype()),
            ));
        }
        if view.shape() != shape.as_slice() {
            return Err(ckpt_err(
                path,
                format!(
                    "tensor {name} has shape {:?}, the model needs {shape:?}",
                    view.shape()
                ),
            ));
        }
        values.push(
            view.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<f32>>(),
        );
    }
    // Everything checked: now change the model.
    for ((name, _), v) in wanted.iter().zip(&values) {
        match name.strip_suffix(".adagrad_state") {
            Some(table) => {
                let t: usize = table["emb_l.".len()..].parse().expect("built above");
                model
                    .embeddings_mut()
                    .table_mut(t)
                    .expect("t < tables")
                    .set_adagrad_state(v)?;
            }
            None => model.set_tensor(name, v)?,
        }
    }
    model.set_steps(step);
    Ok(())
}
