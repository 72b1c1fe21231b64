//! Checkpoints as safetensors files that PyTorch and numpy users can load.
//!
//! Tensors are row-major f32, named as the DLRM reference's PyTorch state dict names them
//! ([`TensorName`], the one place those names are built and read):
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

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::memory;
use crate::model::{Dlrm, DlrmConfig};

mod metadata;
mod names;

pub use names::{TensorName, Which};

use metadata::{differences, from_metadata, to_metadata};

/// The `format` metadata value of files written by this version.
pub const FORMAT: &str = "dlrm-kernels/1";

/// Every tensor a checkpoint of `model` holds, by name: parameters and optimizer state,
/// sorted by name.
fn tensors(model: &Dlrm) -> Vec<(String, Vec<usize>)> {
    let mut all = model.tensor_list();
    for (table, t) in model.embeddings().tables().iter().enumerate() {
        if t.adagrad_state().is_some() {
            all.push((
                TensorName::AdagradState { table }.to_string(),
                vec![t.rows()],
            ));
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
        let values = model.tensor(name).expect("listed by `tensors`");
        for chunk in values.chunks(1 << 12) {
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
    for (table, t) in model.embeddings().tables().iter().enumerate() {
        let name = TensorName::AdagradState { table }.to_string();
        if st.tensor(&name).is_ok() {
            wanted.push((name, vec![t.rows()]));
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
        model.set_tensor(name, v)?;
    }
    model.set_steps(step);
    Ok(())
}
