//! Checkpoints: bit-exact round trips, resuming equals training straight through, and
//! mismatched or broken files rejected with the model unchanged.

use std::path::{Path, PathBuf};

use dlrm_kernels::Error;
use dlrm_kernels::checkpoint;
use dlrm_kernels::data::MiniBatch;
use dlrm_kernels::model::{Dlrm, DlrmConfig, Precision};
use dlrm_kernels::optim::LrPolicy;
use dlrm_kernels::optim::TableOptimizer;
use dlrm_kernels::rng::Rng;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "dlrm-ckpt-{}-{name}.safetensors",
        std::process::id()
    ))
}

fn cfg(precision: Precision, opt: TableOptimizer) -> DlrmConfig {
    DlrmConfig {
        bottom_mlp: vec![3, 8, 4],
        top_mlp: vec![8, 1],
        table_rows: vec![40, 25],
        embedding_dim: 4,
        precision,
        batch_size: 16,
        optimizers: dlrm_kernels::optim::Optimizers {
            tables: opt,
            ..Default::default()
        },
        lr: LrPolicy {
            base_lr: 0.1,
            warmup_steps: 3,
            decay_start_step: 5,
            decay_steps: 10,
        },
        ..DlrmConfig::tiny()
    }
}

fn batch(cfg: &DlrmConfig, rng: &mut Rng) -> MiniBatch {
    let b = cfg.batch_size;
    MiniBatch {
        dense: (0..b * cfg.dense_features())
            .map(|_| rng.uniform())
            .collect(),
        indices: cfg
            .table_rows
            .iter()
            .map(|&r| (0..2 * b).map(|_| rng.below(r as u64) as i64).collect())
            .collect(),
        offsets: cfg
            .table_rows
            .iter()
            .map(|_| (0..b).map(|i| 2 * i as i64).collect())
            .collect(),
        targets: (0..b).map(|_| (rng.uniform() < 0.5) as u8 as f32).collect(),
    }
}

fn state_bits(m: &Dlrm) -> Vec<u32> {
    let mut bits = Vec::new();
    m.visit_tensors(|_, _, d| {
        bits.extend(d.iter().map(|x| x.to_bits()));
        Ok(())
    })
    .unwrap();
    for t in m.embeddings().tables() {
        if let Some(h) = t.adagrad_state() {
            bits.extend(h.iter().map(|x| x.to_bits()));
        }
    }
    bits.push(m.steps() as u32);
    bits
}

#[test]
fn round_trip_is_bit_exact_and_resuming_equals_training_straight_through() {
    for precision in [Precision::F32, Precision::Bf16] {
        for opt in [TableOptimizer::Sgd, TableOptimizer::RowwiseAdagrad] {
            let c = cfg(precision, opt);
            let data: Vec<MiniBatch> = {
                let mut rng = Rng::new(7);
                (0..8).map(|_| batch(&c, &mut rng)).collect()
            };
            let mut straight = Dlrm::new(c.clone(), 11).unwrap();
            for b in &data {
                straight.train_step(b).unwrap();
            }
            let mut first = Dlrm::new(c.clone(), 11).unwrap();
            for b in &data[..4] {
                first.train_step(b).unwrap();
            }
            let path = tmp(&format!("{}-{opt:?}", precision.name()));
            checkpoint::save(&first, &path).unwrap();
            let mut resumed = checkpoint::load(&path).unwrap();
            assert_eq!(
                state_bits(&resumed),
                state_bits(&first),
                "{precision:?} {opt:?}"
            );
            assert_eq!(resumed.config(), first.config());
            for b in &data[4..] {
                resumed.train_step(b).unwrap();
            }
            assert_eq!(
                state_bits(&resumed),
                state_bits(&straight),
                "{precision:?} {opt:?}"
            );
            // No temporary file of this checkpoint is left behind (other tests of this binary
            // write their own checkpoints meanwhile: only this one's name counts).
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let dir: Vec<_> = std::fs::read_dir(std::env::temp_dir())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
                .filter(|e| e.file_name().to_string_lossy().contains(name.as_str()))
                .collect();
            assert!(dir.is_empty());
            std::fs::remove_file(&path).unwrap();
        }
    }
}

#[test]
fn a_bf16_model_loads_an_f32_checkpoint_exactly() {
    let c = cfg(Precision::F32, TableOptimizer::Sgd);
    let m = Dlrm::new(c.clone(), 3).unwrap();
    let path = tmp("cross");
    checkpoint::save(&m, &path).unwrap();
    let mut bf = Dlrm::new(
        DlrmConfig {
            precision: Precision::Bf16,
            ..c
        },
        4,
    )
    .unwrap();
    checkpoint::load_into(&mut bf, &path).unwrap();
    assert_eq!(bf.tensor("bot_l.2.weight"), m.tensor("bot_l.2.weight"));
    assert_eq!(bf.tensor("emb_l.1.weight"), m.tensor("emb_l.1.weight"));
    std::fs::remove_file(&path).unwrap();
}

/// Write a safetensors file with the given tensors and the metadata of `like`.
fn write_raw(path: &Path, like: &Path, drop: &str, reshape: Option<(&str, Vec<usize>)>) {
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    let bytes = std::fs::read(like).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        if name == drop {
            continue;
        }
        let mut shape = view.shape().to_vec();
        let mut data = view.data().to_vec();
        if let Some((n, s)) = &reshape
            && *n == name
        {
            shape = s.clone();
            data.resize(4 * s.iter().product::<usize>(), 0);
        }
        owned.push((name, shape, data));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, meta, path).unwrap();
}

#[test]
fn mismatched_and_broken_checkpoints_are_refused_and_change_nothing() {
    let c = cfg(Precision::F32, TableOptimizer::Sgd);
    let saved = Dlrm::new(c.clone(), 1).unwrap();
    let good = tmp("good");
    checkpoint::save(&saved, &good).unwrap();
    let mut target = Dlrm::new(c.clone(), 2).unwrap();
    let before = state_bits(&target);

    // Another architecture: every differing field named.
    let other = DlrmConfig {
        bottom_mlp: vec![3, 6, 4],
        table_rows: vec![40, 26],
        ..c.clone()
    };
    let mut wrong = Dlrm::new(other, 2).unwrap();
    let err = checkpoint::load_into(&mut wrong, &good)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("arch-mlp-bot: checkpoint 3-8-4, model 3-6-4"),
        "{err}"
    );
    assert!(
        err.contains("arch-embedding-size: checkpoint 40-25, model 40-26"),
        "{err}"
    );

    // A missing tensor.
    let missing = tmp("missing");
    write_raw(&missing, &good, "top_l.0.bias", None);
    let err = checkpoint::load_into(&mut target, &missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "checkpoint {}: tensor top_l.0.bias is missing",
            missing.display()
        )
    );

    // A wrong shape.
    let reshaped = tmp("reshaped");
    write_raw(&reshaped, &good, "", Some(("emb_l.1.weight", vec![24, 4])));
    let err = checkpoint::load_into(&mut target, &reshaped)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor emb_l.1.weight has shape [24, 4], the model needs [25, 4]"),
        "{err}"
    );

    // Not a safetensors file; a truncated one; one without our metadata; a missing file.
    let garbage = tmp("garbage");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    assert!(matches!(
        checkpoint::load_into(&mut target, &garbage),
        Err(Error::Checkpoint { .. })
    ));
    let truncated = tmp("truncated");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(
        checkpoint::load_into(&mut target, &truncated),
        Err(Error::Checkpoint { .. })
    ));
    // Metadata naming a precision this crate does not know.
    let foreign = tmp("foreign");
    {
        use safetensors::tensor::{Dtype, TensorView};
        let bytes = std::fs::read(&good).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        meta.insert("precision".into(), "fp16".into());
        let d = vec![0u8; 4];
        let v = vec![(
            "x".to_string(),
            TensorView::new(Dtype::F32, vec![1], &d).unwrap(),
        )];
        safetensors::serialize_to_file(v, Some(meta), &foreign).unwrap();
    }
    let err = checkpoint::load_into(&mut target, &foreign)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metadata \"precision\" is \"fp16\", expected one of [\"fp32\", \"bf16\"]"),
        "{err}"
    );
    std::fs::remove_file(&foreign).unwrap();
    let bare = tmp("bare");
    {
        use safetensors::tensor::{Dtype, TensorView};
        let d = vec![0u8; 4];
        let v = vec![(
            "x".to_string(),
            TensorView::new(Dtype::F32, vec![1], &d).unwrap(),
        )];
        safetensors::serialize_to_file(v, None, &bare).unwrap();
    }
    let err = checkpoint::load_into(&mut target, &bare)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no metadata"), "{err}");
    assert!(matches!(
        checkpoint::load_into(&mut target, &tmp("nonexistent")),
        Err(Error::Io { .. })
    ));

    assert_eq!(state_bits(&target), before);
    for p in [good, missing, reshaped, garbage, truncated, bare] {
        std::fs::remove_file(p).unwrap();
    }
}

/// A copy of the checkpoint `like` with metadata `key` set to `value`.
fn with_metadata(path: &Path, like: &Path, key: &str, value: &str) {
    use safetensors::tensor::TensorView;
    let bytes = std::fs::read(like).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    meta.insert(key.into(), value.into());
    let views: Vec<(String, TensorView<'_>)> = st.tensors();
    safetensors::serialize_to_file(views, Some(meta), path).unwrap();
}

/// Sizes in a crafted file's metadata are checked before anything is allocated: a model too
/// large for memory, or whose sizes overflow, is an error naming the metadata entry (not an
/// allocation failure that aborts the process, nor a model built from wrapped sizes).
#[test]
fn absurd_sizes_in_a_checkpoint_are_errors_naming_the_entry() {
    let c = cfg(Precision::F32, TableOptimizer::Sgd);
    let good = tmp("sizes-good");
    checkpoint::save(&Dlrm::new(c, 1).unwrap(), &good).unwrap();
    let many_huge_tables = vec!["4294967295"; 64].join("-");
    let cases = [
        ("mini_batch_size", "1000000000000".to_string()),
        ("mini_batch_size", u64::MAX.to_string()),
        ("arch_mlp_top", "100000000000-1".to_string()),
        ("arch_mlp_bot", "3-10000000000-4".to_string()),
        ("arch_embedding_size", many_huge_tables),
    ];
    for (i, (key, value)) in cases.iter().enumerate() {
        let crafted = tmp(&format!("sizes-{i}"));
        with_metadata(&crafted, &good, key, value);
        for err in [
            checkpoint::load(&crafted).unwrap_err(),
            checkpoint::read_config(&crafted)
                .and_then(|c| Dlrm::new(c, 0).map(|_| ()))
                .unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(msg.contains(value.as_str()), "{key}: {msg}");
            if let Error::Checkpoint { .. } = err {
                assert!(msg.contains(key), "{key}: {msg}");
            }
        }
        std::fs::remove_file(crafted).unwrap();
    }
    std::fs::remove_file(good).unwrap();
}

/// The bytes of a file's header: its JSON.
fn header_json(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    String::from_utf8(bytes[8..8 + n].to_vec()).unwrap()
}

/// The same model gives the same bytes, with the metadata in a fixed order; a checkpoint is
/// created as any new file is (with the user's umask), and nothing else is left beside it.
#[test]
fn the_same_model_gives_the_same_bytes_with_the_users_file_mode() {
    let dir = std::env::temp_dir().join(format!("dlrm-ckpt-{}-bytes", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = Dlrm::new(cfg(Precision::Bf16, TableOptimizer::RowwiseAdagrad), 4).unwrap();
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    checkpoint::save(&model, &a).unwrap();
    checkpoint::save(&model, &b).unwrap();
    let same = |a: &Path, b: &Path| std::fs::read(a).unwrap() == std::fs::read(b).unwrap();
    assert!(same(&a, &b), "{}\n{}", header_json(&a), header_json(&b));
    let header = header_json(&a);
    let keys = [
        "format",
        "arch_mlp_bot",
        "arch_mlp_top",
        "arch_embedding_size",
        "arch_sparse_feature_size",
        "arch_interaction_op",
        "arch_interaction_itself",
        "precision",
        "mini_batch_size",
        "loss_function",
        "optimizer",
        "learning_rate",
        "lr_num_warmup_steps",
        "lr_decay_start_step",
        "lr_num_decay_steps",
        "step",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| header.find(&format!("\"{k}\":")).expect(k))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{header}");
    // Overwriting keeps the bytes the same too.
    checkpoint::save(&model, &a).unwrap();
    assert!(same(&a, &b), "{}\n{}", header_json(&a), header_json(&b));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&a),
            mode(&plain),
            "the checkpoint's mode is the umask's"
        );
        std::fs::remove_file(plain).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.safetensors", "b.safetensors"]);
    // A save that fails leaves nothing behind: here the target is a directory.
    let taken = dir.join("taken");
    std::fs::create_dir(&taken).unwrap();
    let err = checkpoint::save(&model, &taken).unwrap_err();
    assert!(err.to_string().contains("taken"), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}
