//! The whole DLRM model: finite-difference gradients, learning a signal, determinism across
//! thread counts, and errors that leave the model unchanged.

use dlrm_kernels::Error;
use dlrm_kernels::data::MiniBatch;
use dlrm_kernels::interaction::InteractionOp;
use dlrm_kernels::loss::Loss;
use dlrm_kernels::metrics::roc_auc;
use dlrm_kernels::model::{Dlrm, DlrmConfig, Precision};
use dlrm_kernels::optim::LrPolicy;
use dlrm_kernels::optim::TableOptimizer;
use dlrm_kernels::rng::Rng;

/// A batch whose label depends on the dense features and on which rows are looked up.
fn signal_batch(cfg: &DlrmConfig, rng: &mut Rng, b: usize) -> MiniBatch {
    let nd = cfg.dense_features();
    let mut batch = MiniBatch::default();
    let mut score = vec![0f32; b];
    for (i, s) in score.iter_mut().enumerate() {
        for j in 0..nd {
            let x = rng.uniform();
            batch.dense.push(x);
            if j == 0 {
                *s += 3.0 * (x - 0.5);
            }
            let _ = i;
        }
    }
    for &rows in &cfg.table_rows {
        let (mut idx, mut off) = (Vec::new(), Vec::new());
        for s in score.iter_mut() {
            off.push(idx.len() as i64);
            for _ in 0..2 {
                let r = rng.below(rows as u64) as i64;
                idx.push(r);
                // Even rows push towards a click.
                *s += if r % 2 == 0 { 0.8 } else { -0.8 };
            }
        }
        batch.indices.push(idx);
        batch.offsets.push(off);
    }
    batch.targets = score
        .iter()
        .map(|&s| (rng.uniform() < 1.0 / (1.0 + (-s).exp())) as u8 as f32)
        .collect();
    batch
}

fn small_cfg(precision: Precision) -> DlrmConfig {
    DlrmConfig {
        bottom_mlp: vec![4, 16, 8],
        top_mlp: vec![16, 1],
        table_rows: vec![50, 30, 70],
        embedding_dim: 8,
        precision,
        batch_size: 64,
        lr: LrPolicy::constant(0.5),
        ..DlrmConfig::tiny()
    }
}

#[test]
fn training_on_a_learnable_signal_raises_auc() {
    for precision in [Precision::F32, Precision::Bf16] {
        for opt in [TableOptimizer::Sgd, TableOptimizer::RowwiseAdagrad] {
            let mut cfg = small_cfg(precision);
            cfg.optimizers.tables = opt;
            if opt == TableOptimizer::RowwiseAdagrad {
                cfg.lr = LrPolicy::constant(0.05);
            }
            let mut model = Dlrm::new(cfg.clone(), 1).unwrap();
            let mut rng = Rng::new(2);
            let test = signal_batch(&cfg, &mut Rng::new(99), 4000);
            let mut p = Vec::new();
            model.predict(&test, &mut p).unwrap();
            let before = roc_auc(&p, &test.targets).unwrap();
            for _ in 0..300 {
                let b = signal_batch(&cfg, &mut rng, 64);
                model.train_step(&b).unwrap();
            }
            model.predict(&test, &mut p).unwrap();
            let after = roc_auc(&p, &test.targets).unwrap();
            assert!(
                after > 0.75 && after > before + 0.1,
                "{precision:?} {opt:?}: AUC {before} -> {after}"
            );
        }
    }
}

/// Mean BCE of the model on `batch`, from its logits.
fn loss_on(model: &mut Dlrm, batch: &MiniBatch) -> f64 {
    let mut p = Vec::new();
    model.predict(batch, &mut p).unwrap();
    Loss::Bce.mean(model.logits(), &batch.targets).unwrap()
}

#[test]
fn finite_difference_gradient_of_a_tiny_model() {
    // With SGD at lr = 1, one step moves each parameter by exactly -gradient (up to f32
    // rounding of w - g), so the step reveals the analytic gradient.
    for op in [InteractionOp::Dot, InteractionOp::Cat] {
        let mut cfg = small_cfg(Precision::F32);
        cfg.interaction = op;
        cfg.batch_size = 6;
        cfg.lr = LrPolicy::constant(1.0);
        let model0 = Dlrm::new(cfg.clone(), 5).unwrap();
        let batch = signal_batch(&cfg, &mut Rng::new(8), 6);
        let mut before = Vec::new();
        model0
            .visit_tensors(|n, _, d| {
                before.push((n.to_string(), d.to_vec()));
                Ok(())
            })
            .unwrap();
        let mut stepped = model0.clone();
        stepped.train_step(&batch).unwrap();
        let mut after = Vec::new();
        stepped
            .visit_tensors(|_, _, d| {
                after.push(d.to_vec());
                Ok(())
            })
            .unwrap();
        let h = 1e-3f32;
        let (mut checked, mut kinks) = (0, 0);
        for ((name, w0), w1) in before.iter().zip(&after) {
            // A handful of entries per tensor; for tables, rows the batch used.
            let picks: Vec<usize> = if name.starts_with("emb_l") {
                let t: usize = name[6..].split('.').next().unwrap().parse().unwrap();
                let dim = cfg.embedding_dim;
                batch.indices[t]
                    .iter()
                    .take(2)
                    .map(|&r| r as usize * dim + 1)
                    .collect()
            } else {
                (0..w0.len()).step_by((w0.len() / 4).max(1)).collect()
            };
            for &i in &picks {
                let analytic = (w0[i] - w1[i]) as f64;
                let mut m = model0.clone();
                let l0 = loss_on(&mut m, &batch);
                let mut w = w0.clone();
                w[i] = w0[i] + h;
                m.set_tensor(name, &w).unwrap();
                let lp = loss_on(&mut m, &batch);
                w[i] = w0[i] - h;
                m.set_tensor(name, &w).unwrap();
                let lm = loss_on(&mut m, &batch);
                // ReLU kinks: where the left and right slopes disagree the loss is not
                // differentiable within h; such points are skipped (and counted).
                let (left, right) = ((l0 - lm) / h as f64, (lp - l0) / h as f64);
                if (left - right).abs() > 1e-3 + 0.05 * left.abs().max(right.abs()) {
                    kinks += 1;
                    continue;
                }
                let numeric = (lp - lm) / (2.0 * h as f64);
                assert!(
                    (numeric - analytic).abs() <= 1e-3 + 2e-2 * analytic.abs(),
                    "{op:?} {name}[{i}]: numeric {numeric} vs analytic {analytic}"
                );
                checked += 1;
            }
        }
        assert!(kinks * 10 <= checked, "{kinks} kinks for {checked} checked");
        assert!(checked > 20);
    }
}

fn run_steps(threads: usize, precision: Precision) -> Vec<u32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let cfg = small_cfg(precision);
        let mut model = Dlrm::new(cfg.clone(), 3).unwrap();
        let mut rng = Rng::new(4);
        for _ in 0..5 {
            model
                .train_step(&signal_batch(&cfg, &mut rng, 100))
                .unwrap();
        }
        let mut bits = Vec::new();
        model
            .visit_tensors(|_, _, d| {
                bits.extend(d.iter().map(|x| x.to_bits()));
                Ok(())
            })
            .unwrap();
        bits
    })
}

#[test]
fn whole_step_gives_the_same_bits_for_1_2_and_3_threads() {
    for precision in [Precision::F32, Precision::Bf16] {
        let one = run_steps(1, precision);
        assert_eq!(one, run_steps(2, precision), "{precision:?}");
        assert_eq!(one, run_steps(3, precision), "{precision:?}");
    }
}

fn snapshot(m: &Dlrm) -> Vec<u32> {
    let mut bits = Vec::new();
    m.visit_tensors(|_, _, d| {
        bits.extend(d.iter().map(|x| x.to_bits()));
        Ok(())
    })
    .unwrap();
    bits
}

#[test]
fn bad_batches_are_errors_and_change_nothing() {
    let cfg = small_cfg(Precision::F32);
    let mut model = Dlrm::new(cfg.clone(), 3).unwrap();
    let good = signal_batch(&cfg, &mut Rng::new(1), 8);
    let before = snapshot(&model);

    let mut b = good.clone();
    b.indices[1][5] = 30;
    let err = model.train_step(&b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "table 1, bag 2, position 5: index 30 >= rows 30"
    );

    let mut b = good.clone();
    b.offsets[0][3] = 1;
    assert!(matches!(
        model.train_step(&b),
        Err(Error::Offsets { table: 0, .. })
    ));

    let mut b = good.clone();
    b.dense.pop();
    assert!(matches!(model.train_step(&b), Err(Error::Shape { .. })));

    let mut b = good.clone();
    b.indices.pop();
    assert!(matches!(model.train_step(&b), Err(Error::Shape { .. })));

    let mut b = good.clone();
    b.targets[0] = 2.0;
    assert!(matches!(model.train_step(&b), Err(Error::Config(_))));

    let mut b = good.clone();
    b.dense[9] = f32::INFINITY;
    let err = model.train_step(&b).unwrap_err();
    assert_eq!(err.to_string(), "dense feature 1 of sample 2 is not finite");

    assert_eq!(snapshot(&model), before);
    // A NaN parameter makes the loss NaN: reported with the step, nothing updated.
    let mut poisoned = model.clone();
    poisoned.set_tensor("top_l.2.bias", &[f32::NAN]).unwrap();
    let poisoned_before = snapshot(&poisoned);
    let err = poisoned.train_step(&good).unwrap_err();
    assert_eq!(err.to_string(), "bce loss at step 1 is not finite");
    assert_eq!(snapshot(&poisoned), poisoned_before);
    assert_eq!(model.steps(), 0);
    model.train_step(&good).unwrap();
    assert_ne!(snapshot(&model), before);
}

#[test]
fn bad_configs_are_refused() {
    let base = small_cfg(Precision::F32);
    let cases: Vec<(DlrmConfig, &str)> = vec![
        (
            DlrmConfig {
                embedding_dim: 4,
                ..base.clone()
            },
            "must equal the embedding dim",
        ),
        (
            DlrmConfig {
                bottom_mlp: vec![4],
                ..base.clone()
            },
            "bottom MLP needs",
        ),
        (
            DlrmConfig {
                top_mlp: vec![],
                ..base.clone()
            },
            "top MLP is empty",
        ),
        (
            DlrmConfig {
                top_mlp: vec![16, 2],
                ..base.clone()
            },
            "must end in one output",
        ),
        (
            DlrmConfig {
                table_rows: vec![],
                ..base.clone()
            },
            "at least one embedding table",
        ),
        (
            DlrmConfig {
                table_rows: vec![5, 0],
                ..base.clone()
            },
            "table 1 has zero rows",
        ),
        (
            DlrmConfig {
                bottom_mlp: vec![4, 0, 8],
                ..base.clone()
            },
            "must be positive",
        ),
        (
            DlrmConfig {
                batch_size: 0,
                ..base.clone()
            },
            "batch size",
        ),
        (
            DlrmConfig {
                lr: LrPolicy::constant(f32::NAN),
                ..base.clone()
            },
            "learning rate NaN is not finite",
        ),
        (
            DlrmConfig {
                lr: LrPolicy::constant(f32::INFINITY),
                ..base.clone()
            },
            "learning rate inf is not finite",
        ),
    ];
    for (cfg, want) in cases {
        let err = Dlrm::new(cfg, 0).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
}
