//! Interaction, loss, metrics and LR policy against plain f64 references.

use dlrm_kernels::blocked::Blocked;
use dlrm_kernels::interaction::{Interaction, InteractionOp};
use dlrm_kernels::kernels::Element;
use dlrm_kernels::loss::Loss;
use dlrm_kernels::metrics::{accuracy, roc_auc};
use dlrm_kernels::optim::{LrPolicy, MIN_LR};
use dlrm_kernels::rng::Rng;
use dlrm_kernels::{Error, bf16};
use proptest::prelude::*;

/// Reference output rows: [x, Z_i . Z_j for i, j<i (or j<=i)] or [x, e_1..e_T].
fn reference_rows(
    op: InteractionOp,
    itself: bool,
    t: usize,
    d: usize,
    dense: &[f32],
    emb: &[f32],
) -> Vec<Vec<f64>> {
    let batch = dense.len() / d;
    (0..batch)
        .map(|b| {
            let z: Vec<Vec<f64>> = std::iter::once(&dense[b * d..(b + 1) * d])
                .chain(emb[b * t * d..(b + 1) * t * d].chunks(d))
                .map(|v| v.iter().map(|&x| x as f64).collect())
                .collect();
            let mut row: Vec<f64> = z[0].clone();
            match op {
                InteractionOp::Cat => z[1..].iter().for_each(|e| row.extend(e)),
                InteractionOp::Dot => {
                    for i in 0..=t {
                        for j in 0..i + usize::from(itself) {
                            row.push(z[i].iter().zip(&z[j]).map(|(a, b)| a * b).sum());
                        }
                    }
                }
            }
            row
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn check_interaction<T: Element>(
    op: InteractionOp,
    itself: bool,
    t: usize,
    d: usize,
    batch: usize,
    bn: usize,
    bc: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let dense: Vec<f32> = (0..batch * d).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    let emb: Vec<f32> = (0..batch * t * d)
        .map(|_| rng.uniform_in(-1.0, 1.0))
        .collect();
    let it = Interaction::new(op, itself, t, d).unwrap();
    let width = it.output_dim();
    // The stacked input Z, [B][T + 1][d]: each sample's dense vector, then its embeddings.
    let f = t + 1;
    assert_eq!(it.stacked_width(), f * d);
    let z: Vec<f32> = (0..batch)
        .flat_map(|b| {
            dense[b * d..(b + 1) * d]
                .iter()
                .chain(&emb[b * t * d..(b + 1) * t * d])
                .copied()
        })
        .collect();
    let mut out = Blocked::<T>::zeros(batch, width, bn, bc.min(width)).unwrap();
    it.forward(&z, &mut out).unwrap();
    let want = reference_rows(op, itself, t, d, &dense, &emb);
    let u = if T::DTYPE == dlrm_kernels::DType::Bf16 {
        2f64.powi(-8)
    } else {
        0.0
    };
    for (b, row) in want.iter().enumerate() {
        prop_assert_eq!(row.len(), width);
        for (c, &w) in row.iter().enumerate() {
            let got = out.get(b, c).to_f32() as f64;
            prop_assert!(
                (got - w).abs() <= (d as f64) * 1e-6 + u * w.abs(),
                "out({},{}) {} vs {}",
                b,
                c,
                got,
                w
            );
        }
    }
    // Backward against the analytic reference of sum(out * g).
    let g: Vec<f32> = (0..batch * width)
        .map(|_| rng.uniform_in(-1.0, 1.0))
        .collect();
    let d_out = Blocked::<T>::from_row_major(&g, batch, width, bn, bc.min(width)).unwrap();
    let mut dz_all = vec![f32::NAN; batch * f * d];
    it.backward(&z, &d_out, &mut dz_all).unwrap();
    // dZ in the layout of Z: the dense gradient in slot 0, the embeddings' after it.
    let d_dense: Vec<f32> = dz_all.chunks(f * d).flat_map(|r| r[..d].to_vec()).collect();
    let d_emb: Vec<f32> = dz_all.chunks(f * d).flat_map(|r| r[d..].to_vec()).collect();
    for b in 0..batch {
        let gr: Vec<f64> = (0..width)
            .map(|c| d_out.get(b, c).to_f32() as f64)
            .collect();
        let z: Vec<&[f32]> = std::iter::once(&dense[b * d..(b + 1) * d])
            .chain(emb[b * t * d..(b + 1) * t * d].chunks(d))
            .collect();
        let mut dz = vec![vec![0f64; d]; t + 1];
        dz[0].iter_mut().zip(&gr[..d]).for_each(|(a, g)| *a += g);
        let mut at = d;
        match op {
            InteractionOp::Cat => {
                for tt in 0..t {
                    for kk in 0..d {
                        dz[tt + 1][kk] += gr[d + tt * d + kk];
                    }
                }
            }
            InteractionOp::Dot => {
                for i in 0..=t {
                    for j in 0..i + usize::from(itself) {
                        for kk in 0..d {
                            dz[i][kk] += gr[at] * z[j][kk] as f64;
                            dz[j][kk] += gr[at] * z[i][kk] as f64;
                        }
                        at += 1;
                    }
                }
            }
        }
        for kk in 0..d {
            prop_assert!(
                (d_dense[b * d + kk] as f64 - dz[0][kk]).abs() <= 1e-5 * (t + 2) as f64,
                "d_dense({},{})",
                b,
                kk
            );
            for tt in 0..t {
                let got = d_emb[(b * t + tt) * d + kk] as f64;
                prop_assert!(
                    (got - dz[tt + 1][kk]).abs() <= 1e-5 * (t + 2) as f64,
                    "d_emb({},{},{}) {} vs {}",
                    b,
                    tt,
                    kk,
                    got,
                    dz[tt + 1][kk]
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn interaction_matches_reference(
        dot in prop::bool::ANY, itself in prop::bool::ANY, t in 1usize..30, d in 1usize..70,
        batch in 1usize..40, bn in 1usize..20, bc in 1usize..80, seed in any::<u64>(), half in prop::bool::ANY,
    ) {
        let op = if dot { InteractionOp::Dot } else { InteractionOp::Cat };
        if half {
            check_interaction::<bf16>(op, itself, t, d, batch, bn, bc, seed)?;
        } else {
            check_interaction::<f32>(op, itself, t, d, batch, bn, bc, seed)?;
        }
    }
}

#[test]
fn interaction_shape_errors() {
    let it = Interaction::new(InteractionOp::Dot, false, 2, 4).unwrap();
    let mut out = Blocked::<f32>::zeros(3, it.output_dim(), 2, 7).unwrap();
    let err = it.forward(&[0.0; 35], &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "interaction input length ([B][tables + 1][dim]): expected 36, got 35"
    );
    let mut wrong = Blocked::<f32>::zeros(3, 9, 2, 7).unwrap();
    assert!(it.forward(&[0.0; 36], &mut wrong).is_err());
    let d_out = Blocked::<f32>::zeros(3, it.output_dim(), 2, 7).unwrap();
    let mut dz = [f32::NAN; 35];
    assert!(matches!(
        it.backward(&[0.0; 36], &d_out, &mut dz),
        Err(Error::Shape { .. })
    ));
    assert!(dz.iter().all(|x| x.is_nan()));
}

fn bce64(z: f64, y: f64) -> f64 {
    let p = 1.0 / (1.0 + (-z).exp());
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

#[test]
fn losses_match_reference_and_are_stable() {
    let mut rng = Rng::new(5);
    let z: Vec<f32> = (0..100).map(|_| rng.uniform_in(-8.0, 8.0)).collect();
    let y: Vec<f32> = (0..100)
        .map(|_| (rng.uniform() > 0.5) as u8 as f32)
        .collect();
    let mut g = vec![0f32; 100];
    let l = Loss::Bce.forward_backward(&z, &y, &mut g).unwrap();
    let want: f64 = z
        .iter()
        .zip(&y)
        .map(|(&z, &y)| bce64(z as f64, y as f64))
        .sum::<f64>()
        / 100.0;
    assert!((l - want).abs() < 1e-9, "{l} vs {want}");
    for i in 0..100 {
        let p = 1.0 / (1.0 + (-(z[i] as f64)).exp());
        assert!((g[i] as f64 - (p - y[i] as f64) / 100.0).abs() < 1e-8);
    }
    let l = Loss::Mse.forward_backward(&z, &y, &mut g).unwrap();
    let want: f64 = z
        .iter()
        .zip(&y)
        .map(|(&z, &y)| {
            let p = 1.0 / (1.0 + (-(z as f64)).exp());
            (p - y as f64).powi(2)
        })
        .sum::<f64>()
        / 100.0;
    assert!((l - want).abs() < 1e-9);
    // Finite-difference check of the MSE gradient.
    let h = 1e-3f32;
    let mut zp = z.clone();
    zp[7] += h;
    let mut zm = z.clone();
    zm[7] -= h;
    let num =
        (Loss::Mse.mean(&zp, &y).unwrap() - Loss::Mse.mean(&zm, &y).unwrap()) / (2.0 * h as f64);
    assert!((num - g[7] as f64).abs() < 1e-5, "{num} vs {}", g[7]);

    // Huge logits: finite loss, exact limits, no NaN gradient.
    let mut g2 = [0f32; 4];
    let l = Loss::Bce
        .forward_backward(&[1e4, -1e4, 1e4, -1e4], &[1.0, 0.0, 0.0, 1.0], &mut g2)
        .unwrap();
    assert!((l - 1e4 / 2.0).abs() < 1e-6, "{l}");
    assert_eq!(g2, [0.0, 0.0, 0.25, -0.25]);
    // NaN is reported, and the gradient is left alone.
    let mut g3 = [9f32; 2];
    let err = Loss::Bce
        .forward_backward(&[0.0, f32::NAN], &[0.0, 1.0], &mut g3)
        .unwrap_err();
    assert_eq!(err.to_string(), "bce loss is not finite");
    assert_eq!(g3, [9.0, 9.0]);
    assert!(matches!(
        Loss::Bce.forward_backward(&[0.0], &[0.0, 1.0], &mut g3),
        Err(Error::Shape { .. })
    ));
}

/// O(P N) AUC: the probability a random positive outscores a random negative (ties 1/2).
fn brute_auc(p: &[f32], y: &[f32]) -> f64 {
    let (mut wins, mut total) = (0f64, 0f64);
    for (pi, yi) in p.iter().zip(y) {
        if *yi < 0.5 {
            continue;
        }
        for (pj, yj) in p.iter().zip(y) {
            if *yj >= 0.5 {
                continue;
            }
            total += 1.0;
            wins += if pi > pj {
                1.0
            } else if pi == pj {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / total
}

proptest! {
    #[test]
    fn auc_matches_pairwise_definition(
        scores in prop::collection::vec(0u8..20, 2..300),
        labels in prop::collection::vec(prop::bool::ANY, 300),
    ) {
        // Few distinct scores, so ties are common.
        let p: Vec<f32> = scores.iter().map(|&s| s as f32 / 20.0).collect();
        let y: Vec<f32> = labels[..p.len()].iter().map(|&l| l as u8 as f32).collect();
        let pos = y.iter().filter(|&&v| v > 0.5).count();
        match roc_auc(&p, &y) {
            None => prop_assert!(pos == 0 || pos == p.len()),
            Some(a) => prop_assert!((a - brute_auc(&p, &y)).abs() < 1e-12),
        }
    }
}

#[test]
fn accuracy_and_auc_edge_cases() {
    assert_eq!(accuracy(&[0.7, 0.3, 0.5], &[1.0, 1.0, 0.0]), 1.0 / 3.0);
    assert_eq!(roc_auc(&[0.1, 0.9], &[0.0, 1.0]), Some(1.0));
    assert_eq!(roc_auc(&[0.9, 0.1], &[0.0, 1.0]), Some(0.0));
    // A million samples: exact and quick (sort-based).
    let mut rng = Rng::new(1);
    let y: Vec<f32> = (0..1_000_000)
        .map(|_| (rng.uniform() < 0.3) as u8 as f32)
        .collect();
    let p: Vec<f32> = y
        .iter()
        .map(|&l| (l * 0.2 + rng.uniform() * 0.8).clamp(0.0, 1.0))
        .collect();
    let auc = roc_auc(&p, &y).unwrap();
    assert!(auc > 0.6 && auc < 0.8, "{auc}");
}

#[test]
fn lr_policy_follows_the_reference() {
    let p = LrPolicy {
        base_lr: 0.1,
        warmup_steps: 100,
        decay_start_step: 200,
        decay_steps: 100,
    };
    assert!((p.lr(1) - 0.001).abs() < 1e-9);
    assert!((p.lr(50) - 0.05).abs() < 1e-9);
    assert_eq!(p.lr(100), 0.1);
    assert_eq!(p.lr(199), 0.1);
    assert_eq!(p.lr(200), 0.1);
    assert!((p.lr(250) - 0.1 * 0.25).abs() < 1e-9);
    assert_eq!(p.lr(299), (0.1f64 * 0.0001) as f32);
    assert_eq!(p.lr(300), MIN_LR);
    assert_eq!(p.lr(10_000), MIN_LR);
    assert_eq!(LrPolicy::constant(0.5).lr(7), 0.5);
}
